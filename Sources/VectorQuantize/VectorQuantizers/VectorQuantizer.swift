import VQNN
import VQTensor

/// Options of one ``VectorQuantizer`` forward pass (the reference's `forward` keywords).
public struct VectorQuantizerOptions {
    /// Target indices: return the cross-entropy of the scores against them (the reference's `indices=`).
    public var targetIndices: IndexTensor? = nil
    /// The real tokens of `[b, n]` (the reference's `mask=`).
    public var mask: TokenMask? = nil
    /// Per-sequence lengths (`lens=`), converted to a mask.
    public var lens: [Int]? = nil
    public var topK: Int? = nil
    public var sampleCodebookTemperature: Float? = nil
    /// `true`: the codebook does not learn in this call; `false`: it learns even if the configuration's
    /// `freezeCodebook` is set; nil: the configuration decides (the reference's `freeze_codebook=None`). Frozen codes
    /// (the freeze masks) are held whatever this says.
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
    public internal(set) var lastInPlaceGradient: Tensor?
    /// The indices of the first lookup of the last training forward with an in-place optimizer.
    public internal(set) var lastFirstPassIndices: IndexTensor?
    /// In-place gradients waiting for ``updateInPlaceOptimizer()`` (`manual_in_place_optimizer_update`).
    public internal(set) var pendingInPlaceGradient: Tensor?

    public override var keyOverrides: [String: String] { ["codebook": "_codebook"] }

    public convenience init(_ configuration: VectorQuantizerConfiguration) throws {
        try self.init(configuration, sharing: nil)
    }

    /// A quantizer that uses `shared`'s codebook object instead of its own (ResidualVQ's
    /// `shared_codebook`): a code frozen there is frozen for every layer that uses it; and `sharedBridge` as its
    /// `vq_bridge` when given (a stack's one bridge, see ``ResidualVQ/init(_:bridge:)``).
    init(_ configuration: VectorQuantizerConfiguration, sharing shared: Codebook?, bridge sharedBridge: Layer? = nil) throws {
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
        cb.syncCodebook = c.syncCodebook ?? true
        cb.syncKmeans = c.syncKmeans
        cb.affineBatchDecay = c.affineParamBatchDecay
        cb.affineCodebookDecay = c.affineParamCodebookDecay
        var bridge: Layer? = c.vqBridge == nil ? nil : sharedBridge
        if bridge == nil, let text = c.vqBridge {
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
