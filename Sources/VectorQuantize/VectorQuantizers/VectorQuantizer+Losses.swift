import VQNN
import VQTensor

/// The auxiliary losses, with the reference's definitions.
extension VectorQuantizer {
    /// Cross-entropy of the scores `[H, N, C]` against flat targets `[H, N]` (-1 ignored), averaged over
    /// the targets that are not ignored (0 when every target is ignored).
    func crossEntropy(_ distances: Tensor, _ targets: IndexTensor) -> Tensor {
        let cN = distances.shape[2]
        return Loss.crossEntropy(distances.reshaped([-1, cN]), targets.reshaped([-1]), ignoreIndex: -1)
    }

    /// The reference's codebook diversity loss: `−mean_t H(p̄_t)` where `p̄_t` averages
    /// `softmax(τ · scores)` over codebooks and batch for each sequence position `t` (its
    /// `reduce(prob, '... n l -> n l', 'mean')` on `[h, b, n, c]`); entropy with `log(max(p, 1e-5))`.
    func diversityLoss(_ distances: Tensor, seqLength n: Int) -> Tensor {
        let (h, rows, c) = (distances.shape[0], distances.shape[1], distances.shape[2])
        guard rows > 0 && n > 0 else { return Tensor(0) }  // no token: no loss
        let prob = (distances * configuration.codebookDiversityTemperature).softmax(axis: -1)
        let avg = prob.reshaped([h, rows / n, n, c]).mean(axes: [0, 1])
        let entropy = (-avg * avg.clamped(min: 1e-5).log()).sum(axis: -1)
        return -entropy.mean()
    }

    /// Mean squared error over unmasked tokens. As the reference, the target is the original input when
    /// its shape matches the codebook space (one head, no projection), otherwise the codebook-space input.
    func maskedCommitment(_ q: Tensor, flat: Tensor, origInput: Tensor, mask: [Bool], b: Int, n: Int) -> Tensor {
        let target = heads == 1 && projectIn == nil ? origInput.reshaped(flat.shape) : flat
        let valid = validMaskRows(mask, b: b, n: n, rowsPer: flat.shape[1])
        let keep = Tensor(valid.map { $0 ? 1 : 0 }, shape: [flat.shape[0], flat.shape[1], 1])
        let count = Float(valid.filter { $0 }.count * flat.shape[2])
        guard count > 0 else { return Tensor(0) }
        return ((q - target).squared() * keep).sum() / count
    }

    private func validMaskRows(_ mask: [Bool], b: Int, n: Int, rowsPer: Int) -> [Bool] {
        var v = [Bool](repeating: false, count: configuration.numCodebooks * rowsPer)
        for bi in 0..<b {
            for ni in 0..<n where mask[bi * n + ni] {
                for hh in 0..<heads {
                    let (cb, r) = flatRow(bi, ni, hh, b: b, n: n)
                    v[cb * rowsPer + r] = true
                }
            }
        }
        return v
    }

    /// Orthogonal regularisation of the codes (Shin et al., 2021, eq. 2): `Σ cos² / (h·n²) − 1/n`, over
    /// the active codes only or a random subset when configured.
    func orthogonalLoss(indices: IndexTensor, frozen: Bool) -> Tensor {
        // [h, c, d], differentiable when trainable and not frozen for this call
        var codes = frozen ? codebook.embed.value.detached() : codebook.embed.value
        if configuration.orthogonalRegActiveCodesOnly {
            let unique = Array(Set(indices.scalars.filter { $0 >= 0 })).sorted()
            codes = codes.indexSelect(axis: 1, IndexTensor(unique))
        }
        let count = codes.shape[1]
        if let maxCodes = configuration.orthogonalRegMaxCodes, count > maxCodes {
            let pick = Array(rng.permutation(count).prefix(maxCodes))
            codes = codes.indexSelect(axis: 1, IndexTensor(pick))
        }
        let (h, m) = (codes.shape[0], codes.shape[1])
        guard m > 0 else { return Tensor(0) }  // no active code (an empty or fully masked batch): nothing to regularise
        let normed = codes.l2Normalized(axis: -1, eps: 1e-6)
        let cosine = normed.matmul(transposed: normed)
        return cosine.squared().sum() / Float(h * m * m) - 1 / Float(m)
    }
}
