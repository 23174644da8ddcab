import VQNN
import VQTensor

/// BEST-RQ's random-projection quantizer (Chiu et al., *Self-supervised Learning with Random-projection
/// Quantizer for Speech Recognition*, 2022): layer-normalised inputs go through a frozen random
/// projection into a frozen cosine codebook per head. The projection is a buffer (key `rand_projs`),
/// frozen by the same mechanism as every frozen tensor; the quantizer always runs in evaluation mode.
public final class RandomProjectionQuantizer: Module {
    /// The constructor arguments (the reference's keywords); `layer` carries every `VectorQuantize` keyword
    /// passed on (its dim, heads, cosine similarity and separate codebooks are set by the quantizer).
    public struct Configuration: Sendable, Equatable {
        public var dim: Int                 // dim
        public var codebookSize: Int        // codebook_size
        public var codebookDim: Int         // codebook_dim
        public var numCodebooks = 1         // num_codebooks
        public var norm = true              // norm
        /// `reference_layout` (ours): the reference's inner quantizer, whose codes have `h·e` dimensions per
        /// head behind a random `Linear(h·e, h·h·e)` (its `codebook_dim` defaults to its `dim`) — 268 M extra
        /// weights for the README's example. Off: each head's `e`-dim projection is quantized directly (the
        /// paper's design). PyTorch checkpoints that hold `vq.project_in` load in this layout automatically.
        public var referenceLayout = false
        public var layer: VectorQuantizerConfiguration
        public var seed: UInt64 = 0
        public init(dim: Int, codebookSize: Int, codebookDim: Int) {
            self.dim = dim
            self.codebookSize = codebookSize
            self.codebookDim = codebookDim
            layer = VectorQuantizerConfiguration(dim: codebookDim, codebookSize: codebookSize)
        }

        public init(referenceKwargs kw: [String: Any]) throws {
            let m = "RandomProjectionQuantizer"
            let k = Keywords(kw, module: m)
            guard let dim = try k.int("dim"), let size = try k.int("codebook_size"), let e = try k.int("codebook_dim") else {
                throw ConfigurationError.invalid(module: m, reason: "dim, codebook_size and codebook_dim are required")
            }
            self.init(dim: dim, codebookSize: size, codebookDim: e)
            numCodebooks = try k.int("num_codebooks") ?? 1
            // Its codebooks' heads, cosine similarity and separate codebooks are its own; earlier versions wrote the
            // inner configuration's defaults for them.
            try k.refuseSetBy(m, tolerating: ["heads": [1, numCodebooks], "use_cosine_sim": [false, true], "separate_codebook_per_head": [false, true]])
            norm = try k.bool("norm") ?? true
            referenceLayout = try k.bool("reference_layout") ?? false
            seed = UInt64(truncatingIfNeeded: try k.int("seed") ?? 0)
            try validate()
            var rest = kw
            for key in ["dim", "codebook_size", "codebook_dim", "num_codebooks", "norm", "seed", "reference_layout"] + Self.setForLayers { rest[key] = nil }
            rest["dim"] = e * numCodebooks
            rest["codebook_size"] = size
            do {
                layer = try VectorQuantizerConfiguration(referenceKwargs: rest)
            } catch ConfigurationError.unknownKeyword(_, let key) {
                throw ConfigurationError.unknownKeyword(module: m, keyword: key)
            }
        }

        /// The keywords of its codebooks it sets itself (the reference's `VectorQuantize(heads = num_codebooks,
        /// use_cosine_sim = True, separate_codebook_per_head = True, **kwargs)`): never written, left out of exports.
        public static let setForLayers = ["heads", "use_cosine_sim", "separate_codebook_per_head"]

        public func validate() throws {
            if SizeLimit.product([numCodebooks, dim, codebookDim]) == nil || SizeLimit.product([numCodebooks, codebookSize, codebookDim]) == nil {
                throw ConfigurationError.invalid(module: "RandomProjectionQuantizer", reason: "num_codebooks \(numCodebooks) × dim \(dim) × codebook_dim \(codebookDim) (or × codebook_size \(codebookSize)) exceeds \(SizeLimit.maxElements) values (or is not positive)")
            }
            try layerConfiguration.validate()
            if let key = layer.layoutKeyword {
                throw ConfigurationError.badValue(module: "RandomProjectionQuantizer", keyword: key,
                                                  reason: "the codebooks quantize the projected [b, n, d] query: no other layout")
            }
        }

        /// The codebooks' configuration: cosine, one separate codebook per projection.
        var layerConfiguration: VectorQuantizerConfiguration {
            var c = layer
            c.dim = codebookDim * numCodebooks
            c.codebookSize = codebookSize
            c.heads = numCodebooks
            c.useCosineSimilarity = true
            c.separateCodebookPerHead = true
            if !referenceLayout { c.codebookDim = codebookDim }
            c.seed = seed
            // The codebooks only ever run in evaluation (as the reference's `self.vq.eval()`): the orthogonal regulariser
            // never runs, so its active-codes flag is inert — and the check the reference makes only where it runs
            // (separate codebooks per head) must not refuse it here.
            c.orthogonalRegActiveCodesOnly = false
            return c
        }
    }

    public let configuration: Configuration
    public var numCodebooks: Int { configuration.numCodebooks }
    /// `[h, dim, e]`, Xavier-normal (key `rand_projs`).
    public let randomProjections: Parameter
    public let norm: LayerNorm?
    public let vq: VectorQuantizer

    public override var keyOverrides: [String: String] { ["randomProjections": "rand_projs"] }

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        let c = configuration.canonical
        self.configuration = c
        var rng = SeededGenerator(seed: c.seed ^ 0xB357)
        // xavier_normal_ of [h, dim, e]: fan_in = dim · e, fan_out = h · e, std = sqrt(2 / (fan_in + fan_out))
        let std = (2 / Float(c.dim * c.codebookDim + c.numCodebooks * c.codebookDim)).squareRoot()
        randomProjections = Parameter(Tensor.randomNormal([c.numCodebooks, c.dim, c.codebookDim], std: std, using: &rng), kind: .buffer)
        self.norm = c.norm ? LayerNorm(c.dim, elementwiseAffine: false) : nil
        vq = try VectorQuantizer(c.layerConfiguration)
        super.init()
    }

    /// ```swift
    /// let rpq = try RandomProjectionQuantizer(dim: 512, codebookSize: 1024, codebookDim: 256, numCodebooks: 16)
    /// let indices = rpq(x).indices     // x [1, 1024, 512] → [1, 1024, 16]
    /// ```
    public convenience init(dim: Int, codebookSize: Int, codebookDim: Int, numCodebooks: Int = 1, norm: Bool = true, seed: UInt64 = 0) throws {
        var c = Configuration(dim: dim, codebookSize: codebookSize, codebookDim: codebookDim)
        c.numCodebooks = numCodebooks
        c.norm = norm
        c.seed = seed
        try self.init(c)
    }

    /// The normalised input and its projection `[b, n, h·e]`.
    public func project(_ x: Tensor) -> (normed: Tensor, projected: Tensor) {
        let normed = norm.map { $0(x) } ?? x
        let (b, n, d) = (x.shape[0], x.shape[1], x.shape[2])
        let e = randomProjections.shape[2]
        // einsum('b n d, h d e -> b n h e')
        let p = normed.reshaped([1, b * n, d]).matmul(randomProjections.value)  // [h, b·n, e]
        return (normed, p.permuted(1, 0, 2).reshaped([b, n, numCodebooks * e]))
    }

    /// The result of a forward: the indices of the projected input (`[b, n, numCodebooks]`), as the reference returns.
    public struct Output {
        public var indices: IndexTensor
    }

    /// Code indices `[b, n]` (one codebook) or `[b, n, h]`.
    public func callAsFunction(_ x: Tensor) -> Output {
        precondition(x.rank == 3, "RandomProjectionQuantizer: input \(x.shape) must be [b, n, dim]")
        vq.eval()
        return Output(indices: withoutGradient { vq(project(x).projected).indices })
    }

    /// Cross-entropy of the codebook scores against target indices (the reference's `indices=` path).
    public func crossEntropy(_ x: Tensor, targets: IndexTensor) -> Tensor {
        vq.eval()
        var o = VectorQuantizerOptions()
        o.targetIndices = targets
        return vq(project(x).projected, options: o).loss
    }
}
