import VQNN
import VQTensor

/// Residual LFQ: layer `i` is an ``LFQ`` with `codebook_scale = 2^-i` on the residual of the previous
/// layers (the reference's `ResidualLFQ`; keys `layers.<i>.mask`).
public final class ResidualLFQ: Module {
    /// The constructor arguments (the reference's `ResidualLFQ(...)` keywords).
    ///
    /// ```swift
    /// let rlfq = try ResidualLFQ(.init(dim: 64, numQuantizers: 4, codebookSize: 1024))
    /// ```
    public struct Configuration: Sendable, Equatable {
        public var dim: Int                               // dim
        public var numQuantizers: Int                     // num_quantizers
        public var codebookSize: Int                      // codebook_size (a power of 2)
        /// Layer `i` soft-clamps its input to `value · 2^-i`.
        public var softClampInputValue: Float? = nil      // soft_clamp_input_value
        public var quantizeDropout = false                // quantize_dropout
        public var quantizeDropoutCutoffIndex = 0         // quantize_dropout_cutoff_index
        public var quantizeDropoutMultipleOf = 1          // quantize_dropout_multiple_of
        /// Every other LFQ option of the layers (their dim, scale and clamp are set by the stack).
        public var layer: LFQ.Configuration
        public var seed: UInt64 = 0

        public init(dim: Int, numQuantizers: Int, codebookSize: Int) {
            self.dim = dim
            self.numQuantizers = numQuantizers
            self.codebookSize = codebookSize
            layer = LFQ.Configuration()
        }

        static let ownKeywords: Set<String> = ["dim", "num_quantizers", "codebook_size", "soft_clamp_input_value", "quantize_dropout",
                                               "quantize_dropout_cutoff_index", "quantize_dropout_multiple_of", "seed"]

        public init(referenceKwargs kw: [String: Any]) throws {
            try self.init(referenceKwargs: kw, module: "ResidualLFQ")
        }

        init(referenceKwargs kw: [String: Any], module: String) throws {
            let k = Keywords(kw, module: module)
            guard let dim = try k.int("dim"), let q = try k.int("num_quantizers"), let size = try k.int("codebook_size") else {
                throw ConfigurationError.invalid(module: module, reason: "dim, num_quantizers and codebook_size are required")
            }
            self.init(dim: dim, numQuantizers: q, codebookSize: size)
            // 2^-i for layer i; earlier versions wrote the layers' default 1.
            try k.refuseSetBy("ResidualLFQ", tolerating: ["codebook_scale": [1]])
            softClampInputValue = try k.double("soft_clamp_input_value").map(Float.init)
            (quantizeDropout, quantizeDropoutCutoffIndex, quantizeDropoutMultipleOf) = try ResidualStack.dropoutSettings(k, layers: q)
            seed = UInt64(truncatingIfNeeded: try k.int("seed") ?? 0)
            var lk = kw.filter { !Self.ownKeywords.contains($0.key) && !Self.setForLayers.contains($0.key) }
            lk["codebook_size"] = size
            layer = try LFQ.Configuration(referenceKwargs: lk, module: module)
            try validate(module: module)
        }

        /// The keyword of its layers it sets itself (the reference's `LFQ(codebook_scale = 2 ** -i, **kwargs)`): never
        /// written, left out of exports.
        public static let setForLayers = ["codebook_scale"]

        /// The checks of both paths.
        public func validate() throws { try validate(module: "ResidualLFQ") }

        func validate(module: String) throws {
            try ResidualStack.validate(numQuantizers: numQuantizers, cutoff: quantizeDropoutCutoffIndex, multipleOf: quantizeDropoutMultipleOf,
                                       softClamp: softClampInputValue, module: module, dropout: quantizeDropout)
            guard codebookSize > 0, codebookSize & (codebookSize - 1) == 0, codebookSize <= 1 << 30 else {
                throw ConfigurationError.badValue(module: module, keyword: "codebook_size", reason: "\(codebookSize) is not a power of 2 in 2…2^30")
            }
            if SizeLimit.product([dim, codebookSize.trailingZeroBitCount]) == nil {
                throw ConfigurationError.badValue(module: module, keyword: "dim", reason: "dim \(dim) must be positive and its projection within \(SizeLimit.maxElements) values")
            }
            let first = layerConfiguration(0), bits = codebookSize.trailingZeroBitCount
            try first.validate(module: module)
            if first.hasProjections ?? (first.numCodebooks > 1) {
                // The reference asserts its layers have none: each quantizes the stack's log2(codebook_size) bits directly.
                throw ConfigurationError.badValue(module: module, keyword: first.numCodebooks > 1 ? "num_codebooks" : "has_projections",
                                                  reason: "the layers quantize the stack's \(bits) bits directly: a layer with its own projection (num_codebooks \(first.numCodebooks), has_projections \(first.hasProjections.map { "\($0)" } ?? "default")) is not a residual layer")
            }
            if layer.channelFirst == true {
                // The reference hands it to every layer, which then reads the stack's [b, n, d] residual as channel-first and fails.
                throw ConfigurationError.badValue(module: module, keyword: "channel_first",
                                                  reason: "a keyword of a single LFQ: the stack quantizes [b, n, dim] (move the channel axis before it)")
            }
        }

        /// Layer `i`'s LFQ: `codebook_scale = 2^-i`, the clamp halved per layer, no projection.
        func layerConfiguration(_ i: Int) -> LFQ.Configuration {
            var l = layer
            l.dim = codebookSize.trailingZeroBitCount
            l.codebookSize = codebookSize
            l.codebookScale = Float(1) / Float(1 << Swift.min(i, 62))
            l.softClampInputValue = softClampInputValue.map { $0 * powFloat(0.5, Float(i)) }
            return l
        }
    }

    public let configuration: Configuration
    public let dim: Int
    public let projectIn: Linear?
    public let projectOut: Linear?
    public let layers: [LFQ]
    var rng: SeededGenerator

    public var quantizeDropout: Bool { configuration.quantizeDropout && configuration.numQuantizers > 1 }
    public var quantizeDropoutCutoffIndex: Int { configuration.quantizeDropoutCutoffIndex }
    public var quantizeDropoutMultipleOf: Int { configuration.quantizeDropoutMultipleOf }

    public convenience init(_ configuration: Configuration) throws {
        try self.init(configuration, module: "ResidualLFQ")
    }

    init(_ configuration: Configuration, module: String) throws {
        try configuration.validate(module: module)
        let c = configuration
        self.configuration = c.canonical
        dim = c.dim
        let cd = c.codebookSize.trailingZeroBitCount
        var rng = SeededGenerator(seed: c.seed ^ 0x21F0)
        (projectIn, projectOut) = Linear.projections(dim, cd, rng: &rng)
        layers = try (0..<c.numQuantizers).map { try LFQ(c.layerConfiguration($0)) }
        self.rng = rng
        super.init()
    }

    public var numQuantizers: Int { layers.count }
    /// `[q, C, d]`: every layer's (scaled) codes.
    public var codebooks: Tensor { Tensor.stack(layers.map(\.codebook), axis: 0) }

    /// The result of a forward: the summed output, every layer's indices, auxiliary losses and input.
    public struct Output {
        public var quantized: Tensor
        public var indices: IndexTensor
        public var losses: Tensor
        public var layerInputs: Tensor
    }

    public func callAsFunction(_ x: Tensor, mask: TokenMask? = nil, quantizeDropoutSeed: UInt64? = nil)
        -> Output
    {
        precondition(x.rank == 3 && x.shape[2] == dim, "ResidualLFQ(dim \(dim)): input shape \(x.shape)")
        let z = projectIn.map { $0(x) } ?? x
        let (b, n, q) = (x.shape[0], x.shape[1], numQuantizers)
        var residual = z
        var out = Tensor.zeros(z.shape)
        var indices = [Int](repeating: -1, count: b * n * q)
        var losses = [Tensor](repeating: Tensor(0), count: q)
        var inputs: [Tensor] = []
        let dropout = isTraining && quantizeDropout
        let last = ResidualStack.lastLayer(layers: q, dropout: dropout, cutoff: quantizeDropoutCutoffIndex,
                                           multipleOf: quantizeDropoutMultipleOf, seed: dropout ? quantizeDropoutSeed ?? rng.next() : 0)
        for (i, layer) in layers.enumerated() {
            inputs.append(residual.detached())
            if i > last { continue }
            let r = layer(residual, mask: mask)
            residual = residual - r.quantized.detached()
            out = out + r.quantized
            for t in 0..<(b * n) { indices[t * q + i] = r.indices.scalars[t] }
            losses[i] = r.auxLoss
        }
        return Output(quantized: projectOut.map { $0(out) } ?? out, indices: IndexTensor(indices, shape: [b, n, q]),
                      losses: Tensor.stack(losses.map { $0.reshaped([]) }, axis: 0), layerInputs: Tensor.stack(inputs, axis: 0))
    }

    /// Per-layer codes `[q, b, n, d]` (zero where -1): the codes each layer's forward output — spherical layers'
    /// normalised, rotated layers' rotated back (the reference's `get_codes_from_indices` reads the unnormalised,
    /// unrotated grid there, so its decoding is not its forward's output; README, "Differences").
    public func getCodes(from indices: IndexTensor) -> Tensor {
        Tensor.stack(layers.enumerated().map { i, layer in
            let (idx, keep) = ResidualStack.column(indices, layer: i)
            return layer.forwardCodes(idx.reshaped(idx.shape + [1])).flattened(from: -2) * keep
        }, axis: 0)
    }

    public func getOutput(from indices: IndexTensor) -> Tensor {
        let summed = getCodes(from: indices).sum(axis: 0)
        return projectOut.map { $0(summed) } ?? summed
    }
}
