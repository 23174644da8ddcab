import VQNN
import VQTensor

/// The constructor arguments of ``ResidualVQ`` (the reference's `ResidualVQ(...)` keywords); the
/// per-layer ``VectorQuantizerConfiguration`` carries every keyword passed on to the layers.
public struct ResidualVQConfiguration: Sendable, Equatable {
    public var dim: Int
    public var codebookSizes: [Int]                      // codebook_size (int or list) × num_quantizers
    public var codebookDim: Int? = nil                   // codebook_dim
    public var sharedCodebook = false                    // shared_codebook
    public var quantizeDropout = false                   // quantize_dropout
    public var quantizeDropoutCutoffIndex = 0            // quantize_dropout_cutoff_index
    public var quantizeDropoutMultipleOf = 1             // quantize_dropout_multiple_of
    public var quantGradFrac: Float = 0                  // quant_grad_frac
    public var acceptImageFmap = false                   // accept_image_fmap
    public var beamSize: Int? = nil                      // beam_size
    public var evalBeamSize: Int? = nil                  // eval_beam_size (default: beam_size)
    public var beamScoreQuantizerWeights: [Float]? = nil // beam_score_quantizer_weights
    /// `diveq`: the layers learn their codes by gradient (no EMA, no commitment loss, raw code rows), the
    /// residual chain passes full gradients, and the sum of the codes goes through the directional
    /// reparameterisation (``GradientEstimator/directional(_:to:noise:variance:)``) against the input.
    public var diveq = false                             // diveq
    /// `implicit_neural_codebook` (QINCo): layers after the first search per-token codebooks made by an
    /// ``ImplicitCodebookMLP`` from the codes chosen so far; every layer learns by gradient (no EMA).
    public var implicitNeuralCodebook = false            // implicit_neural_codebook
    public var mlpHiddenDim: Int? = nil                  // mlp_kwargs.dim_hidden
    public var mlpDepth = 4                              // mlp_kwargs.depth
    /// The template of every layer (`dim` and `codebook_size` are set per layer).
    public var layer: VectorQuantizerConfiguration

    public init(dim: Int, numQuantizers: Int, codebookSize: Int) {
        self.dim = dim
        codebookSizes = Array(repeating: codebookSize, count: numQuantizers)
        layer = VectorQuantizerConfiguration(dim: dim, codebookSize: codebookSize)
    }

    public var numQuantizers: Int { codebookSizes.count }
    public var resolvedCodebookDim: Int { codebookDim ?? dim }
    /// The widest beam (each token keeps `beam` paths of `dim` values per layer).
    public static let maxBeamSize = 4096

    /// The checks of both construction paths (typed and reference keywords); the layers' own
    /// configuration is validated when each layer is built.
    public func validate() throws {
        guard layer.heads == 1 else {
            // The reference refuses it too: each layer quantizes the whole residual with one code.
            throw ConfigurationError.badValue(module: "ResidualVQ", keyword: "heads", reason: "residual VQ is not compatible with multi-headed codes (layer heads \(layer.heads))")
        }
        guard !codebookSizes.isEmpty else { throw ConfigurationError.invalid(module: "ResidualVQ", reason: "num_quantizers must be ≥ 1") }
        // The stack quantizes [b, n, dim] (image maps flattened by itself): its layers' layout keywords would
        // make them read the residual in another layout.
        if let key = layer.layoutKeyword {
            throw ConfigurationError.badValue(module: "ResidualVQ", keyword: key, reason: "a single VectorQuantize's layout; the stack takes [b, n, dim] (or image maps with its own accept_image_fmap)")
        }
        try ResidualStack.validate(numQuantizers: numQuantizers, cutoff: quantizeDropoutCutoffIndex, multipleOf: quantizeDropoutMultipleOf,
                                   softClamp: nil, module: "ResidualVQ", dropout: quantizeDropout)
        for (key, beam) in [("beam_size", beamSize), ("eval_beam_size", evalBeamSize)] {
            if let beam, !(1...ResidualVQConfiguration.maxBeamSize).contains(beam) {
                throw ConfigurationError.badValue(module: "ResidualVQ", keyword: key, reason: "\(beam) is outside 1…\(ResidualVQConfiguration.maxBeamSize)")
            }
        }
        if ((beamSize ?? 1) > 1 || (evalBeamSize ?? 1) > 1) && !layer.hasCommitmentLoss {
            // The beam scores every candidate code by its commitment loss.
            throw ConfigurationError.badValue(module: "ResidualVQ", keyword: "beam_size",
                                              reason: "beam search scores candidates by their commitment loss: it needs commitment_weight > 0 (and no directional_reparam)")
        }
        if (beamSize ?? 1) > 1, layer.commitmentUseCrossEntropyLoss || layer.inPlaceCodebookOptimizer != nil || layer.affineParam {
            // Training searches each layer's top-k codes, which the reference asserts against with these (its
            // first training call raises; affine_param's batch statistics fail to broadcast against the beam's, and
            // here the search's frozen calls would leave them unset); a beam in evaluation only is beam_size 1 with
            // eval_beam_size.
            let keyword = layer.commitmentUseCrossEntropyLoss ? "commitment_use_cross_entropy_loss" : layer.affineParam ? "affine_param" : "in_place_codebook_optimizer"
            throw ConfigurationError.badValue(module: "ResidualVQ", keyword: "beam_size",
                                              reason: "a beam in training takes each layer's top-k codes, which \(keyword) does not support (the reference raises at its first training call); for a beam in evaluation only, pass beam_size 1 and eval_beam_size")
        }
        if (diveq || implicitNeuralCodebook) && ((beamSize ?? 1) > 1 || (evalBeamSize ?? 1) > 1) {
            throw ConfigurationError.badValue(module: "ResidualVQ", keyword: diveq ? "diveq" : "implicit_neural_codebook", reason: "not supported with beam search yet")
        }
    }

    static let ownKeywords: Set<String> = [
        "dim", "num_quantizers", "codebook_size", "codebook_dim", "shared_codebook", "quantize_dropout",
        "quantize_dropout_cutoff_index", "quantize_dropout_multiple_of", "quant_grad_frac", "accept_image_fmap", "heads",
        "beam_size", "eval_beam_size", "beam_score_quantizer_weights", "diveq",
        "implicit_neural_codebook", "mlp_kwargs",
    ]

    /// Builds a configuration from the reference's keywords; the rest go to the layers.
    public init(referenceKwargs kw: [String: Any]) throws {
        try self.init(referenceKwargs: kw, module: "ResidualVQ")
    }

    init(referenceKwargs kw: [String: Any], module: String) throws {
        let k = Keywords(kw, module: module)
        let dim = try k.required("dim")
        var sizes: [Int]
        let q = try k.int("num_quantizers")
        if let q, q < 1 || q > 1 << 12 {
            throw ConfigurationError.badValue(module: module, keyword: "num_quantizers", reason: "\(q) is outside 1…4096")
        }
        if kw["codebook_size"] is [Any], let list = try k.ints("codebook_size") {
            sizes = list
            if let q, q != list.count { throw ConfigurationError.badValue(module: module, keyword: "codebook_size", reason: "\(list.count) sizes for \(q) quantizers") }
        } else if let c = try k.int("codebook_size"), let q {
            sizes = Array(repeating: c, count: q)
        } else {
            throw ConfigurationError.invalid(module: module, reason: "codebook_size and num_quantizers are required")
        }
        guard !sizes.isEmpty else { throw ConfigurationError.badValue(module: module, keyword: "codebook_size", reason: "an empty list") }
        if let h = try k.int("heads"), h != 1 { throw ConfigurationError.badValue(module: module, keyword: "heads", reason: "residual VQ is not compatible with multi-headed codes") }
        self.init(dim: dim, numQuantizers: sizes.count, codebookSize: sizes[0])
        codebookSizes = sizes
        codebookDim = try k.int("codebook_dim")
        sharedCodebook = try k.bool("shared_codebook") ?? false
        quantizeDropout = try k.bool("quantize_dropout") ?? false
        quantizeDropoutCutoffIndex = try k.int("quantize_dropout_cutoff_index") ?? 0
        quantizeDropoutMultipleOf = try k.int("quantize_dropout_multiple_of") ?? 1
        quantGradFrac = Float(try k.double("quant_grad_frac") ?? 0)
        acceptImageFmap = try k.bool("accept_image_fmap") ?? false
        beamSize = try k.int("beam_size")
        evalBeamSize = try k.int("eval_beam_size")
        beamScoreQuantizerWeights = try k.doubles("beam_score_quantizer_weights")?.map(Float.init)
        diveq = try k.bool("diveq") ?? false
        implicitNeuralCodebook = try k.bool("implicit_neural_codebook") ?? false
        if let mk = kw["mlp_kwargs"] {
            guard let m = mk as? [String: Any] else { throw ConfigurationError.badValue(module: module, keyword: "mlp_kwargs", reason: "expected an object") }
            for key in m.keys where !["dim_hidden", "depth"].contains(key) {
                throw ConfigurationError.badValue(module: module, keyword: "mlp_kwargs", reason: "unknown key '\(key)' (dim_hidden, depth)")
            }
            let mkw = Keywords(m, module: module)
            mlpHiddenDim = try mkw.int("dim_hidden")
            mlpDepth = try mkw.int("depth") ?? 4
            guard mlpDepth >= 0 && mlpDepth <= 64, (mlpHiddenDim ?? 1) > 0 && (mlpHiddenDim ?? 1) <= 1 << 16 else {
                throw ConfigurationError.badValue(module: module, keyword: "mlp_kwargs", reason: "depth must be in 0…64 and dim_hidden in 1…65536")
            }
        }
        if evalBeamSize != nil && beamSize == nil {
            throw ConfigurationError.invalid(module: module, reason: "eval_beam_size needs beam_size")
        }
        if let w = beamScoreQuantizerWeights, w.count != sizes.count {
            throw ConfigurationError.badValue(module: module, keyword: "beam_score_quantizer_weights", reason: "\(w.count) weights for \(sizes.count) quantizers")
        }
        var layerKw = kw.filter { !Self.ownKeywords.contains($0.key) }
        layerKw["dim"] = codebookDim ?? dim
        layerKw["codebook_size"] = sizes[0]
        if diveq || implicitNeuralCodebook {
            // The reference sets these for its layers (learnable codes, no EMA: `effectiveLayer`) whatever was passed,
            // so the layers are checked as they will be — a keyword that needs a learnable codebook (sync_update_v,
            // in_place_codebook_optimizer) is valid here; ema_update true with diveq is refused below, as the
            // contradiction it is.
            layerKw["learnable_codebook"] = true
            layerKw["ema_update"] = false
        }
        do {
            layer = try VectorQuantizerConfiguration(referenceKwargs: layerKw)
        } catch ConfigurationError.unknownKeyword(_, let k) {
            throw ConfigurationError.unknownKeyword(module: module, keyword: k)
        }
        if sharedCodebook && Set(sizes).count > 1 {
            throw ConfigurationError.invalid(module: module, reason: "a shared codebook needs one codebook size")
        }
        if diveq && kw["ema_update"] as? Bool == true {
            throw ConfigurationError.badValue(module: module, keyword: "diveq", reason: "only one of ema_update and diveq may update the codebook")
        }
    }

    /// The layers' configuration with what `diveq` implies (one place for the typed and keyword paths): the
    /// canonical layer (learnable codes without EMA under `diveq` and `implicit_neural_codebook`), and under `diveq`
    /// no gradient routed to the input and no commitment loss.
    var effectiveLayer: VectorQuantizerConfiguration {
        var l = canonical.layer
        if diveq {
            l.routeGradientsToInput = false
            l.commitmentWeight = 0
        }
        return l
    }

    /// `quant_grad_frac`, forced to 1 by `diveq`.
    var effectiveQuantGradFrac: Float { diveq ? 1 : quantGradFrac }
}

/// How `ema_update_weight` is given to a stack of quantizers: the same for every layer, one per layer
/// (`nil` = the default weight; exactly one entry per layer, or the forward traps), or a function of the layer index
/// (a `nil` result = default).
public enum LayerEMAWeights: Sendable {
    case all(EMAUpdateWeight)
    case perLayer([EMAUpdateWeight?])
    case function(@Sendable (_ layer: Int) -> EMAUpdateWeight?)

    func weight(_ layer: Int) -> EMAUpdateWeight? {
        switch self {
        case .all(let w): return w
        case .perLayer(let ws): return layer < ws.count ? ws[layer] : nil
        case .function(let f): return f(layer)
        }
    }
}

/// Options of one residual forward pass.
public struct ResidualVQOptions: Sendable {
    /// The real tokens of `[b, n]` (the reference's `mask=`).
    public var mask: TokenMask? = nil
    /// Per-layer target indices `[b, n, q]`: return the summed cross-entropy (the reference's `indices=`).
    public var targetIndices: IndexTensor? = nil
    public var sampleCodebookTemperature: Float? = nil
    /// `true`: freeze every layer for this call; `false`: no layer frozen by its configuration's `freezeCodebook` for
    /// this call; nil: each layer's configuration decides — as ``VectorQuantizerOptions/freezeCodebook``. Frozen codes
    /// (the codebooks' freeze masks) are held whatever this says.
    public var freezeCodebook: Bool? = nil
    /// Freeze only these layers for this call (0-based; a layer outside the stack traps, naming it).
    public var frozenLayers: Set<Int> = []
    public var emaUpdateWeights: LayerEMAWeights? = nil
    /// Seed of the quantize-dropout draw (the reference's `rand_quantize_dropout_fixed_seed`).
    public var quantizeDropoutSeed: UInt64? = nil
    /// Beam width for this call (default: the configuration's beam size for the mode).
    public var beamSize: Int? = nil
    /// With `diveq`: the standard normal draw of the directional reparameterisation (default: drawn from the
    /// module's generator), to replay a recorded one.
    public var directionalNoise: Tensor? = nil
    public init() {}
}

/// The result of a residual forward pass.
public struct ResidualVQOutput {
    public var quantized: Tensor
    /// `[b, n, q]`; -1 for layers dropped by quantize dropout or masked tokens.
    public var indices: IndexTensor
    /// Per-layer losses `[q]` (0 for dropped layers).
    public var losses: Tensor
    /// Cross-entropy against `targetIndices`, when given.
    public var crossEntropy: Tensor?
}

/// Residual vector quantization (Zeghidour et al., *SoundStream*, 2021, Algorithm 1): each layer
/// quantizes what the previous layers left over. Every layer is a ``VectorQuantizer`` with its own
/// codebook (or one shared codebook), so one layer, or some codes of one layer, can be frozen while
/// every other layer keeps learning.
///
/// ```swift
/// let rvq = try ResidualVQ(ResidualVQConfiguration(dim: 64, numQuantizers: 4, codebookSize: 256))
/// rvq.layers[0].codebook.freezeAllCodes()   // layer 0 is fixed, layers 1–3 keep learning
/// let out = rvq(x)                          // out.indices: [b, n, 4]
/// ```
public final class ResidualVQ: Module {
    public let configuration: ResidualVQConfiguration
    public let projectIn: Linear?
    public let projectOut: Linear?
    public let layers: [VectorQuantizer]
    /// The code transforms of layers 1… with `implicitNeuralCodebook` (keys `mlps.<i>`), else nil.
    public let mlps: [ImplicitCodebookMLP]?
    var rng: SeededGenerator

    public convenience init(_ configuration: ResidualVQConfiguration) throws {
        try self.init(configuration, bridge: nil)
    }

    /// The stack with its layers' `vq_bridge` one module, `bridge` when given (a grouped stack's, shared by its groups)
    /// or the first layer's: the reference passes the one module it is given to every layer (and every group), so
    /// they share it — its key appears under each layer, as in PyTorch, and it is one parameter to an optimizer.
    init(_ configuration: ResidualVQConfiguration, bridge: Layer?) throws {
        let c = configuration
        try c.validate()
        self.configuration = c.canonical
        var rng = SeededGenerator(seed: c.layer.seed ^ 0xE51D_0A1)
        let cd = c.resolvedCodebookDim
        (projectIn, projectOut) = Linear.projections(c.dim, cd, rng: &rng)
        var layers: [VectorQuantizer] = []
        for (i, size) in c.codebookSizes.enumerated() {
            var lc = c.effectiveLayer
            lc.dim = cd
            lc.codebookDim = cd
            lc.codebookSize = size
            lc.acceptImageFmap = false  // the stack flattens image maps itself
            lc.seed = c.layer.seed &+ UInt64(i) &* 0x9E37
            if c.sharedCodebook { lc.manualEMAUpdate = true }
            layers.append(try VectorQuantizer(lc, sharing: c.sharedCodebook ? layers.first?.codebook : nil,
                                              bridge: bridge ?? layers.first?.codebook.vqBridge))
        }
        self.layers = layers
        mlps = c.implicitNeuralCodebook
            ? (1..<Swift.max(c.codebookSizes.count, 1)).map { _ in
                ImplicitCodebookMLP(dim: cd, hiddenDim: c.mlpHiddenDim, depth: c.mlpDepth, l2normOutput: c.layer.useCosineSimilarity, rng: &rng)
            }
            : nil
        self.rng = rng
        super.init()
    }

    public var numQuantizers: Int { layers.count }

    /// The result of a forward (``ResidualVQOutput``), named as every quantizer names its own.
    public typealias Output = ResidualVQOutput

    /// Quantizes `x [b, n, dim]` layer by layer on the residual (`[b, dim, h, w]` with `acceptImageFmap`:
    /// output in that layout, indices `[b, h, w, q]`).
    public func callAsFunction(_ x: Tensor, options: ResidualVQOptions = .init()) -> Output {
        let c = configuration
        guard c.acceptImageFmap else { return sequenceForward(x, options: options) }
        precondition(x.rank == 4 && x.shape[1] == c.dim && options.mask == nil,
                     "ResidualVQ(dim \(c.dim), image maps): input \(x.shape) must be [b, \(c.dim), h, w], without a mask")
        let (b, d, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var o = options
        o.targetIndices = options.targetIndices.map { $0.reshaped([b, h * w, numQuantizers]) }   // (an empty batch infers nothing)
        var out = sequenceForward(x.reshaped([b, d, h * w]).transposed(1, 2), options: o)
        out.quantized = out.quantized.transposed(1, 2).reshaped([b, d, h, w])
        out.indices = out.indices.reshaped([b, h, w, numQuantizers])
        return out
    }

    /// The forward on `[b, n, dim]` (or `[n, dim]`-like token shapes).
    func sequenceForward(_ x: Tensor, options: ResidualVQOptions) -> ResidualVQOutput {
        let c = configuration
        precondition(x.shape.last == c.dim && x.rank >= 2, "ResidualVQ(dim \(c.dim)): input shape \(x.shape)")
        let maskFlags = options.mask?.flags(for: Array(x.shape.dropLast()), "ResidualVQ (input \(x.shape))")
        // Layers named for this call are this stack's, and a weight is given for each: a layer out of range would freeze
        // nothing (layers count from 0), a short list would leave the last layers unweighted — neither is ignored.
        precondition(options.frozenLayers.allSatisfy { (0..<numQuantizers).contains($0) },
                     "ResidualVQ: frozenLayers \(options.frozenLayers.sorted()) outside the \(numQuantizers) layers 0..<\(numQuantizers)")
        if case .perLayer(let ws)? = options.emaUpdateWeights {
            precondition(ws.count == numQuantizers, "ResidualVQ: \(ws.count) per-layer weights for \(numQuantizers) layers (nil = the default weight)")
        }
        let origInput = x
        let projected = projectIn.map { $0(x) } ?? x
        var residual = projected
        var quantizedOut = Tensor.zeros(projected.shape)
        let tokenShape = Array(x.shape.dropLast())
        let tokens = Shape.count(tokenShape)
        let q = numQuantizers
        var indices = [Int](repeating: -1, count: tokens * q)
        var losses = [Tensor](repeating: Tensor(0), count: q)
        var ce: Tensor? = nil

        let beam = options.beamSize ?? (isTraining ? c.beamSize : (c.evalBeamSize ?? c.beamSize))
        if isTraining && c.sharedCodebook { layers[0].codebook.trackHeldCodes(true) }
        defer { layers[0].codebook.trackHeldCodes(false) }
        if let beam, beam > 1, options.targetIndices == nil {
            return beamSearch(projected, origInput: origInput, beam: beam, options: options)
        }
        let dropout = isTraining && c.quantizeDropout && q > 1 && options.targetIndices == nil
        let lastLayer = ResidualStack.lastLayer(layers: q, dropout: dropout, cutoff: c.quantizeDropoutCutoffIndex,
                                                multipleOf: c.quantizeDropoutMultipleOf,
                                                seed: dropout ? options.quantizeDropoutSeed ?? rng.next() : 0)
        var residualsForShared: [Tensor] = []
        for (i, vq) in layers.enumerated() where i <= lastLayer {
            var o = VectorQuantizerOptions()
            o.mask = options.mask
            o.sampleCodebookTemperature = options.sampleCodebookTemperature
            (o.freezeCodebook, o.emaUpdateWeight) = layerStep(i, options)
            if let t = options.targetIndices {
                o.targetIndices = IndexTensor((0..<tokens).map { t.scalars[$0 * q + i] }, shape: tokenShape)
            }
            if let mlps, i > 0 {
                let condition = quantizedOut.reshaped([-1, quantizedOut.shape.last!])
                let mlp = mlps[i - 1]
                o.codebookTransform = { codes in mlp(codes, condition: condition) }
            }
            residualsForShared.append(residual.detached())
            let out = vq(residual, options: o)
            if options.targetIndices != nil {
                ce = ce.map { $0 + out.loss } ?? out.loss
                // The reference returns before updating the residual for the cross-entropy path.
                let qz = out.quantized
                residual = residual - fracGradient(qz, c.effectiveQuantGradFrac)
                quantizedOut = quantizedOut + qz
                continue
            }
            residual = residual - fracGradient(out.quantized, c.effectiveQuantGradFrac)
            quantizedOut = quantizedOut + out.quantized
            for t in 0..<tokens { indices[t * q + i] = out.indices.scalars[t] }
            losses[i] = out.loss
        }
        finishSharedCodebook(layerInputs: residualsForShared, mask: maskFlags)
        if c.diveq && isTraining {
            let noise = options.directionalNoise ?? Tensor.randomNormal(quantizedOut.shape, using: &rng)
            quantizedOut = GradientEstimator.directional(projected, to: quantizedOut, noise: noise, variance: 5e-3)
        }
        var out = projectOut.map { $0(quantizedOut) } ?? quantizedOut
        if let mask = maskFlags {
            let keep = Tensor(mask.map { $0 ? 1 : 0 }, shape: tokenShape + [1])
            out = Tensor.select(keep, out, configuration.layer.returnZerosForMaskedPadding ? Tensor.zeros(out.shape) : origInput)
        }
        return ResidualVQOutput(quantized: out, indices: IndexTensor(indices, shape: tokenShape + [q]),
                                losses: Tensor.stack(losses.map { $0.reshaped([]) }, axis: 0), crossEntropy: ce)
    }

    /// What one call lets layer `i` write: whether it is frozen for the call (the call's `freezeCodebook`,
    /// `frozenLayers`, or the layer's own configured `freezeCodebook`, which the reference overrides) and
    /// its EMA update weight. Every path of the stack (plain, beam search, shared codebook) asks here.
    func layerStep(_ i: Int, _ options: ResidualVQOptions) -> (frozen: Bool, weight: EMAUpdateWeight?) {
        ((options.freezeCodebook ?? layers[i].configuration.freezeCodebook) || options.frozenLayers.contains(i),
         options.emaUpdateWeights?.weight(i))
    }

    /// The end of a training call with a shared codebook: one recompute of the codes from the layers'
    /// statistics, then dead-code expiry from every layer's input (unmasked rows only), never replacing a
    /// code that is frozen or that any layer of this call held (weight 0, or the layer frozen for the call).
    func finishSharedCodebook(layerInputs: [Tensor], mask: [Bool]?) {
        guard isTraining, configuration.sharedCodebook, let shared = layers.first?.codebook, !layerInputs.isEmpty else { return }
        let held = shared.heldInCall
        if configuration.layer.emaUpdate { shared.updateEMA() }
        let all = Tensor.concat(layerInputs.map { $0.reshaped([-1, $0.shape.last!]) }, axis: 0)
        let d = all.shape[1], rows = all.shape[0]
        let valid: [Bool] = all.withUnsafeScalars { p in
            (0..<rows).map { r in
                (mask?[r % (rows / layerInputs.count)] ?? true) && (0..<d).allSatisfy { p[r * d + $0].isFinite }
            }
        }
        shared.expireCodes(all.unsqueezed(axis: 0), valid: valid, frozenForStep: held)
    }

    func fracGradient(_ t: Tensor, _ frac: Float) -> Tensor {
        frac <= 0 ? t.detached() : frac * t + (1 - frac) * t.detached()
    }

    /// Per-layer codes for indices `[b, …, q]` (fewer than `q` columns are padded with -1): `[q, b, …, d]`,
    /// zero where an index is -1 (the reference's `get_codes_from_indices`).
    public func getCodes(from indices: IndexTensor) -> Tensor {
        precondition(indices.shape.last! <= numQuantizers,
                     "ResidualVQ.getCodes: \(indices.shape.last!) index columns for \(numQuantizers) quantizers")
        guard let mlps else {
            return Tensor.stack(layers.enumerated().map { i, vq in
                let (idx, keep) = ResidualStack.column(indices, layer: i)
                return vq.vectorCodes(from: idx) * keep
            }, axis: 0)
        }
        // Implicit codebooks: rebuilt layer by layer, the condition being the running sum of the chosen
        // codes (dropped layers' dummy code 0 included, as the reference's).
        var all: [Tensor] = []
        var condition: Tensor? = nil
        for (i, vq) in layers.enumerated() {
            let (idx, keep) = ResidualStack.column(indices, layer: i)
            // The codes as the forward looked them up (through vq_bridge and the affine map), then the MLP.
            let codes = vq.lookupCodes
            var chosen: Tensor
            if i == 0 {
                chosen = codes.reshaped([vq.codebookSize, -1]).indexSelect(axis: 0, idx)
            } else {
                let d = codes.shape.last!
                let perToken = mlps[i - 1](codes.reshaped([1, -1, d]), condition: condition!.reshaped([-1, d]))
                let flat = IndexTensor(idx.scalars.flatMap { Array(repeating: $0, count: d) }, shape: [1, idx.count, 1, d])
                chosen = perToken.gather(axis: 2, index: flat).reshaped(idx.shape + [d])
            }
            condition = condition.map { $0 + chosen } ?? chosen
            all.append(chosen * keep)
        }
        return Tensor.stack(all, axis: 0)
    }

    /// `project_out(Σ_layers getCodes(from:))`.
    /// With `acceptImageFmap`, indices `[b, h, w, q]` give `[b, dim, h, w]`, the forward's layout (the
    /// reference returns it channel-last).
    public func getOutput(from indices: IndexTensor) -> Tensor {
        let summed = getCodes(from: indices).sum(axis: 0)
        let out = projectOut.map { $0(summed) } ?? summed
        return configuration.acceptImageFmap && out.rank == 4 ? out.permuted(0, 3, 1, 2) : out
    }
}
