import VQNN
import VQTensor

/// The code-transform network of an implicit neural codebook (QINCo: Huijben et al., *Residual Quantization
/// with Implicit Neural Codebooks*, ICML 2024, arXiv:2401.14732; the reference's residual `MLP`): each code
/// of layer `i` is rewritten per token from the sum of the codes chosen by the layers before it, so every
/// token searches its own codebook.
///
/// `x = proj_in(cat(condition, code))`, then `depth` residual blocks `x + Linear(SiLU(Linear(x)))`
/// (keys `proj_in.*`, `layers.<j>.0.*`, `layers.<j>.2.*`), l2-normalised for cosine codebooks.
///
/// - Complexity: O(N · c · d · (2d + 2·depth·hidden)) for `N` tokens and `c` codes.
public final class ImplicitCodebookMLP: Module {
    public let projIn: Linear
    public let layers: [Sequential]
    public let l2normOutput: Bool

    public init(dim: Int, hiddenDim: Int? = nil, depth: Int = 4, l2normOutput: Bool = false, rng: inout SeededGenerator) {
        projIn = Linear(2 * dim, dim, rng: &rng)
        let h = hiddenDim ?? dim
        layers = (0..<depth).map { _ in Sequential(Linear(dim, h, rng: &rng), Activation(.silu), Linear(h, dim, rng: &rng)) }
        self.l2normOutput = l2normOutput
    }

    /// Per-token codebooks `[h, N, c, d]` from codes `[h, c, d]` and the condition `[N, d]`.
    public func callAsFunction(_ codes: Tensor, condition: Tensor) -> Tensor {
        let (h, c, d) = (codes.shape[0], codes.shape[1], codes.shape[2])
        let n = condition.shape[0]
        precondition(condition.rank == 2 && condition.shape[1] == d, "ImplicitCodebookMLP: condition \(condition.shape) for codes \(codes.shape)")
        let cond = condition.reshaped([1, n, 1, d]).expanded(to: [h, n, c, d])
        let code = codes.reshaped([h, 1, c, d]).expanded(to: [h, n, c, d])
        var x = projIn(Tensor.concat([cond, code], axis: -1).reshaped([-1, 2 * d]))
        for block in layers { x = block(x) + x }
        if l2normOutput { x = x.l2Normalized(axis: -1, eps: 1e-6) }
        return x.reshaped([h, n, c, d])
    }
}

extension Codebook {
    /// The reference's scores of every token against its own codes (`dist` of its `EuclideanCodebook` with a
    /// `codebook_transform_fn`), `[h, n, c]`, differentiable in `flatten [h, n, d]` and `perToken [h, n, c, d]`:
    /// `−‖x_t − C[t, k] + 1e-6‖` (`-F.pairwise_distance`), or the dot product for cosine codebooks — the logits of
    /// a cross-entropy commitment and of the diversity loss.
    func perTokenScores(_ flatten: Tensor, _ perToken: Tensor) -> Tensor {
        let (h, n, d) = (flatten.shape[0], flatten.shape[1], flatten.shape[2])
        let x = flatten.reshaped([h, n, 1, d])
        if configuration.useCosineSimilarity { return (x * perToken).sum(axis: -1) }
        return -((x - perToken + 1e-6).squared().sum(axis: -1).sqrt())
    }

    /// Nearest per-token code: for each row `t` of `flatten [h, n, d]`, the index of the smallest
    /// `‖x_t − C[t, k] + 1e-6‖` (`F.pairwise_distance`, first on ties) among `perToken [h, n, c, d]`, or the
    /// largest dot product for cosine codebooks; and the chosen rows `[h, n, d]`, differentiable in `perToken`.
    func nearestPerToken(_ flatten: Tensor, _ perToken: Tensor) -> (quantized: Tensor, indices: IndexTensor) {
        let (h, n, d) = (flatten.shape[0], flatten.shape[1], flatten.shape[2])
        let c = perToken.shape[2]
        precondition(perToken.shape == [h, n, c, d], "codebook transform returned \(perToken.shape), expected [\(h), \(n), codes, \(d)]")
        let cosine = configuration.useCosineSimilarity
        let xs = flatten.scalars, cs = perToken.scalars
        var idx = [Int](repeating: 0, count: h * n)
        for t in 0..<(h * n) {
            var best = 0, bestScore = -Float.infinity
            for k in 0..<c {
                var acc: Float = 0
                let base = (t * c + k) * d
                for j in 0..<d {
                    if cosine { acc += xs[t * d + j] * cs[base + j] } else { let v = xs[t * d + j] - cs[base + j] + 1e-6; acc += v * v }
                }
                let score = cosine ? acc : -acc.squareRoot()
                if k == 0 || score > bestScore { best = k; bestScore = score }
            }
            idx[t] = best
        }
        let index = IndexTensor(idx.flatMap { Array(repeating: $0, count: d) }, shape: [h, n, 1, d])
        return (perToken.gather(axis: 2, index: index).reshaped([h, n, d]), IndexTensor(idx, shape: [h, n]))
    }
}
