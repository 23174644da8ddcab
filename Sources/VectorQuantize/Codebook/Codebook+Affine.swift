import VQNN
import VQTensor

/// `affine_param` (Huh et al., *Straightening Out the Straight-Through Estimator: Overcoming Optimization
/// Challenges in Vector Quantized Networks*, ICML 2023, §4.2): the codes are matched to the batch through
/// running statistics — distances use `(e − μ_c) · σ_b/σ_c + μ_b`, and the EMA sees the batch mapped the
/// other way, `(x − μ_b) · σ_c/σ_b + μ_c`.
///
/// Running means and biased variances per codebook and dimension (`[h, 1, d]`): the codes' with decay
/// `affineCodebookDecay` (0.9), the batch's with `affineBatchDecay` (0.99); the first update sets them.
/// Deliberate differences from the reference: the statistics move in training only (the reference also
/// moves the batch statistics in evaluation), and before the first training call the map is the identity
/// (the reference reads uninitialised memory). Frozen codes stay bit-identical in `embed`; their *mapped*
/// position follows the statistics like every code's. Dead codes are replaced by mapped samples, so a new
/// code maps back onto its sample (the reference stores the raw sample). Statistics beyond float's range (finite
/// rows near 1e30 square past it) saturate at ±`Float.greatestFiniteMagnitude` instead of becoming ∞.
extension Codebook {
    /// Whether both running statistics have been set (the map is the identity until then).
    var affineReady: Bool {
        guard configuration.affineParam, let bm = batchMean, let cm = codebookMeanNeedsInit else { return false }
        return cm.value.item == 0 && !(bm.value.scalars.first?.isNaN ?? true)
    }

    /// Per-codebook mean and biased variance over the rows of `[h, n, d]` where `valid` (double sums; with
    /// `collective` the rows of every rank): `[h, 1, d]` each.
    private func moments(_ x: Tensor, valid: [Bool]?, collective: (any Collective)?) -> (Tensor, Tensor) {
        let (h, n, d) = (x.shape[0], x.shape[1], x.shape[2])
        var sum = [Double](repeating: 0, count: h * d), count = [Double](repeating: 0, count: h)
        let xs = x.scalars
        for hh in 0..<h {
            for r in 0..<n where valid?[hh * n + r] ?? true {
                count[hh] += 1
                for j in 0..<d { sum[hh * d + j] += Double(xs[(hh * n + r) * d + j]) }
            }
        }
        // Across ranks the per-rank double sums are rounded to float once and summed by the collective.
        func allReduce(_ a: inout [Double]) {
            guard let collective, collective.isDistributed else { return }
            var f = a.map { Float($0) }
            collective.allReduceSum(&f)
            a = f.map(Double.init)
        }
        allReduce(&sum)
        allReduce(&count)
        let mean = (0..<(h * d)).map { sum[$0] / Swift.max(count[$0 / d], 1) }
        var sq = [Double](repeating: 0, count: h * d)
        for hh in 0..<h {
            for r in 0..<n where valid?[hh * n + r] ?? true {
                for j in 0..<d { let v = Double(xs[(hh * n + r) * d + j]) - mean[hh * d + j]; sq[hh * d + j] += v * v }
            }
        }
        allReduce(&sq)
        let variance = (0..<(h * d)).map { sq[$0] / Swift.max(count[$0 / d], 1) }
        // Finite rows can have moments beyond float (a variance of values near 1e30): stored saturated.
        return (Tensor(mean.map { Float($0) }, shape: [h, 1, d]).saturated, Tensor(variance.map { Float($0) }, shape: [h, 1, d]).saturated)
    }

    /// `old · decay + new · (1 − decay)` in float32, or `new` when `needsInit` (then cleared).
    private func updateWithDecay(_ p: Parameter, _ new: Tensor, decay: Double, needsInit: Parameter?) {
        let unset = needsInit.map { $0.value.item != 0 } ?? (p.value.scalars.first?.isNaN ?? true)
        if unset {
            p.value = new
            needsInit?.value = Tensor(0)
        } else {
            p.value = (p.value * Float(decay) + new * Float(1 - decay)).saturated
        }
    }

    /// The reference's `update_affine` for a training call: the codes' statistics from `embed`, the batch's
    /// from the valid rows of `flatten` (all ranks' with `syncAffineParam`).
    func updateAffine(_ flatten: Tensor, valid: [Bool]) {
        guard configuration.affineParam, isTraining, valid.contains(true) else { return }
        let (cm, cv) = moments(embed.value.detached(), valid: nil, collective: nil)
        updateWithDecay(codebookMean!, cm, decay: configuration.affineCodebookDecay, needsInit: codebookMeanNeedsInit)
        updateWithDecay(codebookVariance!, cv, decay: configuration.affineCodebookDecay, needsInit: codebookVarianceNeedsInit)
        let (bm, bv) = moments(flatten, valid: valid, collective: configuration.syncAffineParam ? collective : nil)
        updateWithDecay(batchMean!, bm, decay: configuration.affineBatchDecay, needsInit: nil)
        updateWithDecay(batchVariance!, bv, decay: configuration.affineBatchDecay, needsInit: nil)
    }

    private var stds: (codebook: Tensor, batch: Tensor) {
        (codebookVariance!.value.clamped(min: 1e-5).sqrt(), batchVariance!.value.clamped(min: 1e-5).sqrt())
    }

    /// Codes `[h, c, d]` mapped to the batch's statistics (the identity until they are set).
    func affineCodes(_ codes: Tensor) -> Tensor {
        guard affineReady else { return codes }
        let (cs, bs) = stds
        return (codes - codebookMean!.value) * (bs / cs) + batchMean!.value
    }

    /// Batch rows `[h, n, d]` mapped to the codes' statistics (the identity until they are set).
    func affineInputs(_ flatten: Tensor) -> Tensor {
        guard affineReady else { return flatten }
        let (cs, bs) = stds
        return (flatten - batchMean!.value) * (cs / bs) + codebookMean!.value
    }
}

private extension Tensor {
    /// ±∞ replaced by ±`Float.greatestFiniteMagnitude` (the running statistics stay finite, so a checkpoint of them
    /// saves and loads; no row that reaches them is NaN).
    var saturated: Tensor { clamped(min: -.greatestFiniteMagnitude, max: .greatestFiniteMagnitude) }
}
