import VQNN
import VQTensor

/// Options of one ``VectorQuantizer`` forward pass (the reference's `forward` keywords).
public struct VectorQuantizerOptions {
    /// Target indices: return the cross-entropy of the scores against them (the reference's `indices=`).
    public var targetIndices: IndexTensor? = nil
    /// `[b · n]` row-major, `true` = real token (the reference's `mask=`); or set ``maskTensor`` `[b, n]`.
    public var mask: [Bool]? = nil
    /// The shape ``maskTensor`` was given with, checked against the input's tokens.
    public var maskShape: [Int]? = nil
    /// Per-sequence lengths (`lens=`), converted to a mask.
    public var lens: [Int]? = nil
    public var topK: Int? = nil
    public var sampleCodebookTemperature: Float? = nil
    public var freezeCodebook: Bool? = nil
    public var emaUpdateWeight: EMAUpdateWeight? = nil
    public var accumulateEMAUpdate = false
    public var emaUpdate: Bool? = nil
    /// Standard normal noise for the directional reparameterisation, `[b, n, d]` (default: drawn from the
    /// module's generator); to replay a recorded draw.
    public var directionalNoise: Tensor? = nil
    /// Per-token codebooks (`codebook_transform_fn`): codes `[h, c, d]` → `[h, b·n, c, d]`; see
    /// ``CodebookForwardOptions/codebookTransform``.
    public var codebookTransform: ((Tensor) -> Tensor)? = nil
    public init() {}
}

/// The unweighted loss terms (0 when unused), as the reference's `LossBreakdown`.
public struct LossBreakdown {
    public var commitment = Tensor(0)
    public var codebookDiversity = Tensor(0)
    public var orthogonalRegularization = Tensor(0)
    public var inplaceOptimize = Tensor(0)
}

/// The result of ``VectorQuantizer/callAsFunction(_:options:)``.
public struct VectorQuantizerOutput {
    /// Quantized vectors in the input's layout (differentiable in the input through the straight-through
    /// estimator or the rotation trick).
    public var quantized: Tensor
    /// Code indices: `[b, n]`, `[b, n, heads]`, `[b, n, k]` (top-k), `[b, h, w]` (image maps), `[b]`
    /// (single tokens); -1 where masked. Empty for the cross-entropy (`targetIndices`) path.
    public var indices: IndexTensor
    /// The weighted total loss (a scalar; per token for top-k in evaluation), or the cross-entropy for
    /// the `targetIndices` path.
    public var loss: Tensor
    public var breakdown: LossBreakdown
}

/// Vector quantization with an EMA (or learnable) codebook, the Swift counterpart of
/// vector-quantize-pytorch's `VectorQuantize`, with exact partial freezing.
///
/// ```swift
/// var config = VectorQuantizerConfiguration(dim: 64, codebookSize: 512)
/// config.decay = 0.9
/// let vq = try VectorQuantizer(config)
/// let out = vq(x)                          // x: [batch, seq, 64]
/// out.quantized; out.indices; out.loss
/// try vq.codebook.freeze(codes: 0..<256)       // these codes never change again
/// ```
public final class VectorQuantizer: Module {
    public let configuration: VectorQuantizerConfiguration
    public let projectIn: Layer?
    public let projectOut: Linear?
    /// The codebook (key `_codebook`).
    public let codebook: Codebook
    var rng: SeededGenerator
    /// The in-place optimizer of the codes (`in_place_codebook_optimizer`), over `_codebook.embed`; it honours
    /// frozen codes like every optimizer.
    public private(set) var inPlaceOptimizer: Optimizer?
    /// The gradient of the codes in the last in-place step (for inspection and tests).
    public private(set) var lastInPlaceGradient: Tensor?
    /// The indices of the first lookup of the last training forward with an in-place optimizer.
    public private(set) var lastFirstPassIndices: IndexTensor?
    /// In-place gradients waiting for ``updateInPlaceOptimizer()`` (`manual_in_place_optimizer_update`).
    public internal(set) var pendingInPlaceGradient: Tensor?

    public override var keyOverrides: [String: String] { ["codebook": "_codebook"] }

    public convenience init(_ configuration: VectorQuantizerConfiguration) throws {
        try self.init(configuration, sharing: nil)
    }

    /// A quantizer that uses `shared`'s codebook object instead of its own (ResidualVQ's
    /// `shared_codebook`): a code frozen there is frozen for every layer that uses it.
    init(_ configuration: VectorQuantizerConfiguration, sharing shared: Codebook?) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        var rng = SeededGenerator(seed: c.seed ^ 0x5EED_F00D)
        let cid = c.resolvedCodebookDim * c.heads
        if c.requiresProjection {
            let lin = Linear(c.dim, cid, rng: &rng)
            projectIn = c.layernormAfterProjectIn ? Sequential(lin, LayerNorm(cid)) : lin
            projectOut = Linear(cid, c.dim, rng: &rng)
        } else {
            projectIn = nil
            projectOut = nil
        }
        var cb = Codebook.Configuration(dim: c.resolvedCodebookDim, codebookSize: c.codebookSize)
        cb.numCodebooks = c.numCodebooks
        cb.kmeansInit = c.kmeansInit
        cb.kmeansIters = c.kmeansIters
        cb.decay = c.decay
        cb.eps = c.eps
        cb.thresholdEMADeadCode = c.thresholdEMADeadCode
        cb.learnable = c.learnableCodebook || c.orthogonalRegWeight > 0
        cb.emaUpdate = c.emaUpdate
        cb.manualEMAUpdate = c.manualEMAUpdate
        cb.useCosineSimilarity = c.useCosineSimilarity
        cb.sampleCodebookTemperature = c.sampleCodebookTemperature
        cb.stochasticSampleCodes = c.stochasticSampleCodes
        cb.straightThrough = c.straightThrough
        cb.affineParam = c.affineParam
        cb.syncAffineParam = c.syncAffineParam
        cb.affineBatchDecay = c.affineParamBatchDecay
        cb.affineCodebookDecay = c.affineParamCodebookDecay
        var bridge: Layer? = nil
        if let text = c.vqBridge {
            var bridgeRNG = SeededGenerator(seed: c.seed ^ 0xB41D)
            do { bridge = try LayerSpec.parse(text, rng: &bridgeRNG) } catch let e as LayerSpecError {
                throw ConfigurationError.badValue(module: "VectorQuantize", keyword: "vq_bridge", reason: e.description)
            }
        }
        codebook = shared ?? Codebook(cb, seed: c.seed, bridge: bridge)
        self.rng = rng
        super.init()
        if let spec = c.inPlaceCodebookOptimizer {
            precondition(codebook.embed.kind == .trainable, "VectorQuantizer: in_place_codebook_optimizer needs a learnable codebook")
            inPlaceOptimizer = spec.make(for: codebook.embed)
        }
    }

    public var heads: Int { configuration.heads }
    public var codebookSize: Int { configuration.codebookSize }

    /// Quantizes `x` (`[b, n, dim]`, `[b, dim]`, `[b, dim, n]` with `channelLast = false`, or
    /// `[b, dim, h, w]` with `acceptImageFmap`, `[b, dim, t, h, w]` with `accept3dFmap`). In training mode the codebook is updated (unless frozen).
    public func callAsFunction(_ input: Tensor, options: VectorQuantizerOptions = .init()) -> VectorQuantizerOutput {
        let c = configuration
        var opts = options
        let inputRequiresGrad = input.requiresGradient
        let onlyOne = input.rank == 2
        precondition(opts.mask == nil || opts.lens == nil, "VectorQuantizer: pass mask or lens, not both")
        if let topK = opts.topK {
            precondition(c.heads == 1 && topK > 0 && !(c.commitmentUseCrossEntropyLoss && isTraining),
                         "VectorQuantizer: top-k needs a single head and no cross-entropy commitment in training")
            opts.topK = Swift.min(topK, c.codebookSize)
        }
        let freeze = opts.freezeCodebook ?? c.freezeCodebook

        // Rearrange to [b, n, d].
        if onlyOne { precondition(opts.mask == nil && opts.lens == nil, "VectorQuantizer: no mask for single tokens [b, d]") }
        if c.acceptImageFmap || c.accept3dFmap {
            precondition(opts.mask == nil, "VectorQuantizer: feature maps take no mask, got input \(input.shape)")
        }
        let layout = sequenceLayout(input)
        let x = layout.x
        let (spatial, needTranspose) = (layout.spatial, layout.transposed)
        precondition(x.rank == 3 && x.shape[2] == c.dim, "VectorQuantizer(dim \(c.dim)): input shape \(input.shape)")
        let (b, n) = (x.shape[0], x.shape[1])
        var mask = opts.mask
        if let lens = opts.lens {
            precondition(lens.count == b, "VectorQuantizer: \(lens.count) lens for batch \(b)")
            mask = (0..<(b * n)).map { $0 % n < lens[$0 / n] }
        }
        if let mask { precondition(mask.count == b * n, "VectorQuantizer: mask of \(mask.count) for [\(b), \(n)] tokens") }
        if let s = opts.maskShape, opts.mask != nil { precondition(s == [b, n], "VectorQuantizer: mask \(s) for tokens [\(b), \(n)] (input \(input.shape))") }
        let origInput = x

        // Project, split heads, normalise: flat [H, N, d] (the projection is a temporary: not kept alive).
        let flat: Tensor
        var finite: [Bool]? = nil
        if heads > 1, c.separateCodebookPerHead, !GradMode.isEnabled, let lin = projectIn as? Linear {
            // Without gradients: the projection writes each head's rows straight into the codebook layout (no
            // [b·n, heads·d] buffer and no permutation), normalises them for a cosine codebook and checks that they
            // are finite while they are in cache (the same values bit for bit).
            var flags = [Bool](repeating: true, count: heads * b * n)
            flat = flags.withUnsafeMutableBufferPointer { pf in
                Tensor.splitHeadsProjection(x.reshaped([b * n, c.dim]), weight: lin.weight.value, bias: lin.bias?.value, heads: heads,
                                            l2NormalizeEps: c.useCosineSimilarity ? Codebook.cosineEps : nil, finiteRows: pf)
            }
            finite = flags
        } else {
            flat = splitHeads(projectIn.map { $0(x) } ?? x, b: b, n: n)
        }
        let flatN = flat.shape[1]
        let valid = validRows(flat, mask: mask, b: b, n: n, finite: finite)

        var cbo = CodebookForwardOptions()
        cbo.sampleCodebookTemperature = opts.sampleCodebookTemperature
        cbo.freezeCodebook = freeze
        cbo.emaUpdateWeight = opts.emaUpdateWeight
        cbo.accumulateEMAUpdate = opts.accumulateEMAUpdate
        cbo.emaUpdate = (opts.emaUpdate ?? c.emaUpdate) && opts.topK == nil
        cbo.topK = opts.topK
        cbo.codebookTransform = opts.codebookTransform
        cbo.needsDistances = (isTraining && (c.commitmentUseCrossEntropyLoss || c.codebookDiversityLossWeight > 0))
            || opts.targetIndices != nil
        // Without gradients, several codebooks into the output projection: the codebook returns indices and codes,
        // the output and the commitment come from them (no [heads, b·n, d] quantized buffer; the same values).
        cbo.gatherQuantized = !(!GradMode.isEnabled && heads > 1 && c.separateCodebookPerHead && projectOut != nil
                                && opts.topK == nil && mask == nil && inPlaceOptimizer == nil && opts.targetIndices == nil
                                && !cbo.needsDistances && !c.commitmentUseCrossEntropyLoss)
        // The commitment from the search's own row sums (no pass over the rows and codes after it).
        cbo.squaredErrors = !cbo.gatherQuantized && isTraining && c.hasCommitmentLoss
        var out = codebook.forward(flat, valid: valid, options: cbo)
        var inplaceLoss: Tensor? = nil
        if isTraining, let opt = inPlaceOptimizer, !freeze, opts.topK == nil {
            // The reference's in-place step: mse(quantize, x.detach()) moves the codes (only them), then the
            // codes are looked up again and the output comes from that second lookup.
            lastFirstPassIndices = out.indices
            let loss = Loss.mse(out.quantized, flat.detached())
            inplaceLoss = loss.detached()
            let saved = codebook.embed.grad
            codebook.embed.grad = nil
            loss.backward()
            lastInPlaceGradient = codebook.embed.grad
            if c.manualInPlaceOptimizerUpdate {
                // Kept until `updateInPlaceOptimizer()` steps (the reference accumulates into `.grad`).
                if let g = codebook.embed.grad { pendingInPlaceGradient = pendingInPlaceGradient.map { $0 + g } ?? g }
            } else {
                opt.step()
            }
            codebook.embed.grad = saved
            var second = cbo
            second.updateUsage = false
            out = codebook.forward(flat, valid: valid, options: second)
        }
        var quantize = out.quantized

        var xq = flat
        if let k = opts.topK { xq = flat.unsqueezed(axis: 2).expanded(to: [flat.shape[0], flatN, k, flat.shape[2]]) }
        var commitQuantize = quantize
        if isTraining {
            if !c.learnableCodebook || freeze { commitQuantize = quantize.detached() }
            if inputRequiresGrad && c.routeGradientsToInput {
                let rows = quantize
                defer {
                    // The synchronous update rule (Huh et al., 2023, eq. 21): the chosen codes also receive
                    // v · (the output's gradient). The reference adds v·(q − sg(q)) to the *straight-through*
                    // output, whose value no longer depends on the codes (they get nothing, the input (1+v)·G):
                    // a documented difference.
                    if c.syncUpdateV > 0 { quantize = quantize + c.syncUpdateV * (rows - rows.detached()) }
                }
                if c.directionalReparam {
                    let noise = opts.directionalNoise.map { $0.reshaped(quantize.shape) } ?? Tensor.randomNormal(quantize.shape, using: &rng)
                    quantize = GradientEstimator.directional(xq, to: quantize, noise: noise, variance: c.directionalReparamVariance)
                } else {
                    quantize = c.usesRotationTrick ? GradientEstimator.rotate(xq, to: quantize)
                        : GradientEstimator.straightThrough(xq, quantize)
                }
            }
        }

        if let targets = opts.targetIndices {
            let ce = crossEntropy(out.distances!, flatTargets(targets, b: b, n: n))
            return VectorQuantizerOutput(quantized: mergeHeads(quantize, b: b, n: n), indices: IndexTensor([], shape: [0]),
                                         loss: ce, breakdown: LossBreakdown())
        }

        // Losses.
        var breakdown = LossBreakdown()
        if let inplaceLoss { breakdown.inplaceOptimize = inplaceLoss }
        var loss = Tensor(0)
        var indicesFlat = out.indices
        if let mask, c.commitmentUseCrossEntropyLoss, isTraining {
            indicesFlat = maskIndices(indicesFlat, mask: mask, b: b, n: n)
        }
        if let k = opts.topK, !isTraining {
            var per = (quantize - xq).squared().mean(axis: -1)  // [1, N, k]
            if let mask { per = per * Tensor(mask.map { $0 ? 1 : 0 }, shape: [1, flatN, 1]) }
            loss = (c.commitmentWeight > 0 ? per * c.commitmentWeight : per).reshaped([b, n, k])
            breakdown.commitment = per.reshaped([b, n, k])
        }
        if isTraining {
            if c.codebookDiversityLossWeight > 0 {
                breakdown.codebookDiversity = diversityLoss(out.distances!, seqLength: n)
                loss = loss + breakdown.codebookDiversity * c.codebookDiversityLossWeight
            }
            if c.hasCommitmentLoss {
                if c.commitmentUseCrossEntropyLoss {
                    breakdown.commitment = crossEntropy(out.distances!, indicesFlat)
                } else if let k = opts.topK {
                    var per = (commitQuantize - xq).squared().mean(axis: -1)
                    if let mask { per = per * Tensor(mask.map { $0 ? 1 : 0 }, shape: [1, flatN, 1]) }
                    breakdown.commitment = per.reshaped([b, n, k])
                } else if let mask {
                    breakdown.commitment = maskedCommitment(commitQuantize, flat: flat, origInput: origInput, mask: mask, b: b, n: n)
                } else if let errors = out.squaredErrors {
                    breakdown.commitment = Tensor.meanOfRowSums(errors, elements: flat.count)
                } else if let used = out.codes {
                    breakdown.commitment = Tensor.meanSquaredRowDifference(gathering: used, indices: out.indices, flat)
                } else {
                    breakdown.commitment = commitQuantize.meanSquaredRowDifference(flat)
                }
                loss = loss + breakdown.commitment * c.commitmentWeight
            }
            if c.orthogonalRegWeight > 0 {
                breakdown.orthogonalRegularization = orthogonalLoss(indices: out.indices, frozen: freeze)
                loss = loss + breakdown.orthogonalRegularization * c.orthogonalRegWeight
            }
        }

        // Merge heads, project out, mask, restore the input's layout.
        var q: Tensor
        if let used = out.codes, let projectOut {
            q = Tensor.gatheredHeadsProjection(codes: used, indices: out.indices, weight: projectOut.weight.value,
                                               bias: projectOut.bias?.value).reshaped([b, n, c.dim])
        } else if opts.topK == nil, heads > 1, c.separateCodebookPerHead, let projectOut, !GradMode.isEnabled {
            // Without gradients: several codebooks into the output projection, no concatenation of the heads.
            q = Tensor.mergedHeadsProjection(quantize, weight: projectOut.weight.value, bias: projectOut.bias?.value).reshaped([b, n, c.dim])
        } else {
            q = opts.topK == nil ? mergeHeads(quantize, b: b, n: n) : quantize.reshaped([b, n, opts.topK!, -1])
            if let projectOut { q = projectOut(q) }
        }
        var indices = outputIndices(out.indices, b: b, n: n, topK: opts.topK)
        if let mask {
            let keep = Tensor(mask.map { $0 ? 1 : 0 }, shape: opts.topK == nil ? [b, n, 1] : [b, n, 1, 1])
            var fill = c.returnZerosForMaskedPadding ? Tensor.zeros(origInput.shape) : origInput
            if let k = opts.topK { fill = fill.unsqueezed(axis: 2).expanded(to: [b, n, k, c.dim]) }
            q = Tensor.select(keep, q, fill)
            let per = indices.count / (b * n)
            indices = IndexTensor(indices.scalars.enumerated().map { mask[$0.offset / per] ? $0.element : -1 }, shape: indices.shape)
        }
        if needTranspose { q = q.transposed(1, 2) }
        if let spatial {
            q = q.transposed(1, 2).reshaped([b, -1] + spatial)
            indices = indices.reshaped([b] + spatial + Array(indices.shape.dropFirst(2)))
        }
        if onlyOne {
            q = q.squeezed(axis: 1)
            indices = indices.reshaped([b] + Array(indices.shape.dropFirst(2)))
        }
        return VectorQuantizerOutput(quantized: q, indices: indices, loss: loss, breakdown: breakdown)
    }

    /// Recomputes the codes from the EMA statistics (for `manualEMAUpdate`).
    public func updateEMA() { codebook.updateEMA() }

    /// Steps the in-place optimizer on the gradients its forwards accumulated (`manual_in_place_optimizer_update`;
    /// the reference's `update_in_place_optimizer`). Frozen codes are not written, as by every optimizer.
    public func updateInPlaceOptimizer() {
        guard let opt = inPlaceOptimizer, let g = pendingInPlaceGradient else { return }
        let saved = codebook.embed.grad
        codebook.embed.grad = g
        opt.step()
        codebook.embed.grad = saved
        pendingInPlaceGradient = nil
    }
}
