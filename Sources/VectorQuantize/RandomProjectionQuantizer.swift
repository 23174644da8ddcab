import VQNN
import VQTensor

/// BEST-RQ's random-projection quantizer (Chiu et al., *Self-supervised Learning with Random-projection
/// Quantizer for Speech Recognition*, 2022): layer-normalised inputs go through a frozen random
/// projection into a frozen cosine codebook per head. The projection is a buffer (key `rand_projs`),
/// frozen by the same mechanism as every frozen tensor; the quantizer always runs in evaluation mode.
public final class RandomProjectionQuantizer: Module {
    public let numCodebooks: Int
    /// `[h, dim, e]`, Xavier-normal (key `rand_projs`).
    public let randomProjections: Parameter
    public let norm: LayerNorm?
    public let vq: VectorQuantizer

    public override var keyOverrides: [String: String] { ["randomProjections": "rand_projs"] }

    public init(dim: Int, codebookSize: Int, codebookDim: Int, numCodebooks: Int = 1, norm: Bool = true,
                layer: (inout VectorQuantizerConfiguration) -> Void = { _ in }, seed: UInt64 = 0) throws {
        self.numCodebooks = numCodebooks
        var rng = SeededGenerator(seed: seed ^ 0xB357)
        // xavier_normal_ of [h, dim, e]: fan_in = dim · e, fan_out = h · e, std = sqrt(2 / (fan_in + fan_out))
        let std = (2 / Float(dim * codebookDim + numCodebooks * codebookDim)).squareRoot()
        randomProjections = Parameter(Tensor.randomNormal([numCodebooks, dim, codebookDim], std: std, using: &rng), kind: .buffer)
        self.norm = norm ? LayerNorm(dim, elementwiseAffine: false) : nil
        var c = VectorQuantizerConfiguration(dim: codebookDim * numCodebooks, codebookSize: codebookSize)
        c.heads = numCodebooks
        c.useCosineSimilarity = true
        c.separateCodebookPerHead = true
        c.seed = seed
        layer(&c)
        vq = try VectorQuantizer(c)
        super.init()
    }

    public convenience init(referenceKwargs kw: [String: Any]) throws {
        guard let dim = kw["dim"] as? Int, let size = kw["codebook_size"] as? Int, let e = kw["codebook_dim"] as? Int else {
            throw ConfigurationError.invalid(module: "RandomProjectionQuantizer", reason: "dim, codebook_size and codebook_dim are required")
        }
        let heads = kw["num_codebooks"] as? Int ?? 1
        if SizeLimit.product([heads, dim, e]) == nil || SizeLimit.product([heads, size, e]) == nil {
            throw ConfigurationError.invalid(module: "RandomProjectionQuantizer", reason: "num_codebooks \(heads) × dim \(dim) × codebook_dim \(e) (or × codebook_size \(size)) exceeds \(SizeLimit.maxElements) values (or is not positive)")
        }
        var rest = kw
        for k in ["dim", "codebook_size", "codebook_dim", "num_codebooks", "norm", "seed"] { rest[k] = nil }
        rest["dim"] = e * (kw["num_codebooks"] as? Int ?? 1)
        rest["codebook_size"] = size
        let layerConfig: VectorQuantizerConfiguration
        do {
            layerConfig = try VectorQuantizerConfiguration(referenceKwargs: rest)
        } catch ConfigurationError.unknownKeyword(_, let k) {
            throw ConfigurationError.unknownKeyword(module: "RandomProjectionQuantizer", keyword: k)
        }
        try self.init(dim: dim, codebookSize: size, codebookDim: e, numCodebooks: kw["num_codebooks"] as? Int ?? 1,
                      norm: kw["norm"] as? Bool ?? true, layer: { c in
                          let (d, h) = (c.dim, c.heads)
                          c = layerConfig
                          c.dim = d
                          c.heads = h
                          c.useCosineSimilarity = true
                          c.separateCodebookPerHead = true
                      }, seed: UInt64(truncatingIfNeeded: kw["seed"] as? Int ?? 0))
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

    /// Code indices `[b, n]` (one codebook) or `[b, n, h]`.
    public func callAsFunction(_ x: Tensor) -> IndexTensor {
        precondition(x.rank == 3, "RandomProjectionQuantizer: input \(x.shape) must be [b, n, dim]")
        vq.eval()
        return withoutGradient { vq(project(x).projected).indices }
    }

    /// Cross-entropy of the codebook scores against target indices (the reference's `indices=` path).
    public func crossEntropy(_ x: Tensor, targets: IndexTensor) -> Tensor {
        vq.eval()
        var o = VectorQuantizerOptions()
        o.targetIndices = targets
        return vq(project(x).projected, options: o).loss
    }
}
