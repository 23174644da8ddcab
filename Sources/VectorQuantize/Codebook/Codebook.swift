import Logging
import VQNN
import VQTensor

/// Draws `count` row indices out of `population` rows (for k-means initial means and dead-code
/// replacement). The default draws without replacement when `count ≤ population` (a random
/// permutation prefix) and otherwise takes every row once, then the rest with replacement.
public typealias IndexSampler = @Sendable (_ population: Int, _ count: Int, _ rng: inout SeededGenerator) -> [Int]

/// Per-code weights of one EMA step, with the meaning of the reference's `ema_update_weight`:
/// the lerp weight of code `c` becomes `(1 − decay) · w_c`; a weight of exactly 0 freezes the code for
/// that step (bit-identical state, and no dead-code replacement).
public enum EMAUpdateWeight: Sendable {
    /// One weight for every code (the reference's python float: the product is taken in double).
    case scalar(Double)
    /// `[codebook_size]` (single codebook) or `[num_codebooks, codebook_size]`.
    case perCode(Tensor)
    /// A function of this batch's statistics `(embed_sum [h, c, d], cluster_size [h, c])` returning a
    /// per-code tensor as ``perCode(_:)``.
    case function(@Sendable (_ embedSum: Tensor, _ clusterSize: Tensor) -> Tensor)
}

/// A codebook of `numCodebooks × codebookSize` codes of dimension `dim`, learned by exponential moving
/// averages (van den Oord et al., *Neural Discrete Representation Learning*, 2017, appendix; Razavi et
/// al., *VQ-VAE-2*, 2019) or by gradient (``Configuration/learnable``).
///
/// State, with the reference's keys: `embed [h, c, d]`, `embed_avg [h, c, d]`, `cluster_size [h, c]`,
/// `initted []`, plus `frozen_codes [h, c]` (this library's per-code freeze mask, optional when loading
/// a PyTorch state dict).
///
/// A frozen code keeps `embed`, `embed_avg` and `cluster_size` **bit-identical** through EMA steps, the
/// smoothed recompute, dead-code expiry, k-means initialisation, optimizer steps and checkpoints.
public final class Codebook: Module {
    public struct Configuration: Sendable, Equatable {
        public var dim: Int
        public var codebookSize: Int
        public var numCodebooks = 1
        public var kmeansInit = false
        public var kmeansIters = 10
        public var decay: Double = 0.8
        public var eps: Double = 1e-5
        public var thresholdEMADeadCode: Double = 0
        public var resetClusterSize: Double? = nil
        public var learnable = false
        public var emaUpdate = true
        public var manualEMAUpdate = false
        public var useCosineSimilarity = false
        public var sampleCodebookTemperature: Float = 1
        public var stochasticSampleCodes = false
        public var straightThrough = false
        /// `affine_param` and its options (see `Codebook+Affine.swift`).
        public var affineParam = false
        public var syncAffineParam = false
        /// `sync_codebook`, `sync_kmeans` (see ``VectorQuantizerConfiguration``): with several processes, the EMA
        /// statistics are summed over the ranks when `syncCodebook`; k-means initialisation and dead-code
        /// replacement draw from every rank's batch when both are set (`drawsFromEveryRank`).
        public var syncCodebook = true
        public var syncKmeans = true
        public var affineBatchDecay: Double = 0.99
        public var affineCodebookDecay: Double = 0.9

        public init(dim: Int, codebookSize: Int) {
            self.dim = dim
            self.codebookSize = codebookSize
        }
    }

    public let configuration: Configuration
    /// The codes, `[h, c, d]` (key `embed`); trainable when the codebook is learnable.
    public let embed: Parameter
    /// EMA of the per-code sums of assigned vectors (key `embed_avg`).
    public let embedAverage: Parameter
    /// EMA of the per-code counts (key `cluster_size`).
    public let clusterSize: Parameter
    /// 1 once initialised (0 before k-means initialisation), key `initted`.
    public let initted: Parameter
    /// This library's persistent freeze mask, `[h, c]` of 0/1 (key `frozen_codes`).
    public let frozenCodes: Parameter
    /// Frozen components of single codes, `[h, c, d]` of 0/1 (key `frozen_components`): the same
    /// components of every code for a frozen coordinate subspace, or a block of codes × dimensions.
    public let frozenComponents: Parameter
    /// The orthogonal projector `Bᵀ·B` onto each head's frozen subspace, `[h, d, d]` (zero when none; key
    /// `frozen_subspace_projector`).
    public let frozenSubspaceProjector: Parameter
    /// Each code's frozen subspace part `Bᵀ·B·e` at freezing time, `[h, c, d]` (key `frozen_subspace_values`).
    public let frozenSubspaceValues: Parameter
    /// The step at which a ``FreezePolicy`` froze each code, `[h, c]` (-1: not frozen by a policy; key
    /// `policy_frozen_at`).
    public let policyFrozenAt: Parameter
    /// Training steps seen (updates of the statistics), for freezing policies (key `steps`).
    public let steps: Parameter
    /// `affine_param` running statistics `[h, 1, d]` (nil without it); `batch_mean` / `batch_variance` are NaN
    /// until the first training call (absent from the reference's state dict until then).
    public let codebookMeanNeedsInit: Parameter?
    public let codebookMean: Parameter?
    public let codebookVarianceNeedsInit: Parameter?
    public let codebookVariance: Parameter?
    public let batchMean: Parameter?
    public let batchVariance: Parameter?
    /// `vq_bridge`: the module the codes pass through before every lookup (key `vq_bridge`), or nil.
    public let vqBridge: Layer?

    /// Accumulated statistics of `accumulateEMA` calls not yet applied (the reference keeps them in
    /// the buffers' `.grad`): counts `[h, c]` and sums `[h, c, d]`.
    public internal(set) var pendingClusterSize: Tensor?
    public internal(set) var pendingEmbedSum: Tensor?
    /// Codes whose `embed_avg`/`cluster_size` changed since the last recompute of `embed`.
    var touched: [Bool]
    /// The policy consulted at every EMA update (``setFreezePolicy(_:)``).
    public internal(set) var freezePolicy: (any FreezePolicy)?
    /// While a residual stack with a shared codebook runs one call: the codes some layer held (weight 0,
    /// or the layer frozen for the call), which the stack's deferred dead-code expiry must not replace.
    var heldInCall: [Bool]?
    /// Whether any component is frozen / which codebooks have a frozen subspace, with the versions of
    /// ``frozenComponents`` / ``frozenSubspaceProjector`` they were computed from (scanned again only when those
    /// buffers are written: every EMA step asks).
    var partialFreezeSummary: (components: Int, any: Bool, projector: Int, heads: [Bool])?
    /// The writes that passed the write gate, per writer (`Codebook+WriteGate.swift`).
    public internal(set) var gateWrites: [Writer: Int] = [:]

    /// The random source for k-means sampling, dead-code replacement and stochastic sampling.
    public var rng: SeededGenerator
    /// How sample rows are drawn (replaceable, e.g. to replay another implementation's draws).
    public var sampler: IndexSampler = Codebook.defaultSampler
    /// The processes training this codebook together. Batch statistics are summed over them before the
    /// EMA step; k-means and dead-code replacement see the union of their batches, so every rank ends with
    /// the same codebook — the one a single process trained on the concatenated batches gets.
    public var collective: any Collective = SingleProcess()
    let logger = Logger(label: "VectorQuantize.Codebook")

    public override var keyOverrides: [String: String] { ["embedAverage": "embed_avg"] }

    public init(_ configuration: Configuration, seed: UInt64 = 0, bridge: Layer? = nil) {
        let c = configuration
        precondition(c.dim > 0 && c.codebookSize > 0 && c.numCodebooks > 0,
                     "Codebook: dim \(c.dim), codebookSize \(c.codebookSize), numCodebooks \(c.numCodebooks) must be positive")
        precondition(c.decay >= 0 && c.decay <= 1, "Codebook: decay \(c.decay) outside [0, 1]")
        self.configuration = c
        var rng = SeededGenerator(seed: seed)
        let shape = [c.numCodebooks, c.codebookSize, c.dim]
        var e: Tensor
        if c.kmeansInit {
            e = Tensor.zeros(shape)
        } else {
            // kaiming_uniform_ of a [h, c, d] tensor: U(±sqrt(6 / (c·d)))
            let bound = (6 / Float(c.codebookSize * c.dim)).squareRoot()
            e = Tensor.randomUniform(shape, low: -bound, high: bound, using: &rng)
            if c.useCosineSimilarity { e = e.l2Normalized(axis: -1, eps: 1e-6) }
        }
        embed = Parameter(e, kind: c.learnable ? .trainable : .buffer)
        embedAverage = Parameter(e, kind: .buffer)
        clusterSize = Parameter(Tensor.ones([c.numCodebooks, c.codebookSize]), kind: .buffer)
        initted = Parameter(Tensor(c.kmeansInit ? 0 : 1), kind: .buffer)
        frozenCodes = Parameter(Tensor.zeros([c.numCodebooks, c.codebookSize]), kind: .buffer)
        frozenCodes.isLibraryState = true
        frozenComponents = Parameter(Tensor.zeros(shape), kind: .buffer)
        // Empty until a subspace is frozen (it stands for zeros of [h, d, d]: 4·d² bytes per codebook otherwise).
        frozenSubspaceProjector = Parameter(Tensor.zeros([0]), kind: .buffer)
        frozenSubspaceProjector.logicalShape = [c.numCodebooks, c.dim, c.dim]
        frozenSubspaceValues = Parameter(Tensor.zeros(shape), kind: .buffer)
        policyFrozenAt = Parameter(Tensor(repeating: -1, shape: [c.numCodebooks, c.codebookSize]), kind: .buffer)
        steps = Parameter(Tensor(0), kind: .buffer)
        for p in [frozenComponents, frozenSubspaceProjector, frozenSubspaceValues, policyFrozenAt, steps] { p.isLibraryState = true }
        // What a state from a file may hold (checked at load): counts ≥ 0, masks and flags 0 or 1, step numbers.
        clusterSize.domain = .nonNegative
        for p in [initted, frozenCodes, frozenComponents] { p.domain = .flag }
        policyFrozenAt.domain = .wholeNumbers(-1...Int(Int32.max))
        steps.domain = .wholeNumbers(0...Int(Int32.max))
        frozenSubspaceProjector.domain = .orthogonalProjectors
        if c.affineParam {
            let stat = [c.numCodebooks, 1, c.dim]
            codebookMeanNeedsInit = Parameter(Tensor(1), kind: .buffer)
            codebookMean = Parameter(Tensor.zeros(stat), kind: .buffer)
            codebookVarianceNeedsInit = Parameter(Tensor(1), kind: .buffer)
            codebookVariance = Parameter(Tensor.zeros(stat), kind: .buffer)
            batchMean = Parameter(Tensor(repeating: .nan, shape: stat), kind: .buffer)
            batchVariance = Parameter(Tensor(repeating: .nan, shape: stat), kind: .buffer)
            for p in [batchMean!, batchVariance!] { (p.isOptionalInState, p.mayHoldNonFinite) = (true, true) }
            for p in [codebookMeanNeedsInit!, codebookVarianceNeedsInit!] { p.domain = .flag }
            for p in [codebookVariance!, batchVariance!] { p.domain = .nonNegative }
        } else {
            (codebookMeanNeedsInit, codebookMean, codebookVarianceNeedsInit, codebookVariance, batchMean, batchVariance) = (nil, nil, nil, nil, nil, nil)
        }
        vqBridge = bridge
        touched = Array(repeating: false, count: c.numCodebooks * c.codebookSize)
        self.rng = rng
        super.init()
        installWriteGate()
    }

    public var numCodebooks: Int { configuration.numCodebooks }
    public var codebookSize: Int { configuration.codebookSize }
    public var dim: Int { configuration.dim }
    public var isInitialized: Bool { initted.value.item != 0 }
    var codeCount: Int { numCodebooks * codebookSize }

    /// The default ``IndexSampler``.
    public static let defaultSampler: IndexSampler = { population, count, rng in
        precondition(population > 0, "sampler: no rows to sample from")
        if count <= population { return Array(rng.permutation(population).prefix(count)) }
        return rng.permutation(population) + (0..<(count - population)).map { _ in rng.nextInt(below: population) }
    }

    /// A load restores the whole state, freeze masks included (a state without them — a PyTorch state dict — keeps
    /// this codebook's masks), and writes frozen codes too: a load is the user replacing the state, not a training
    /// step. See `Codebook+WriteGate.swift`.
    public override func didLoadState() { restoredState() }
}
