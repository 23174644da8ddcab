import VQNN
import VQTensor

/// The moment-matching regulariser of ``FSP`` (the reference's `VectorNorm`): over the batch axis,
/// `w₁·mean((μ − t₁)²) + w₂·mean((σ² − t₂)²) + w₃·mean((skew − t₃)²) + w₄·mean((kurt − t₄)²)` with the
/// unbiased variance and excess kurtosis.
public final class VectorNorm: Module {
    public enum Preset: String, Sendable, CaseIterable {
        case none, `var`, kurt, varTanh = "var_tanh", varSigmoid = "var_sigmoid", varLaplace = "var_laplace"

        /// `(target, weight)` of mean, variance, skewness, kurtosis.
        var terms: [(Float, Float)] {
            switch self {
            case .none: return [(0, 0), (1, 0), (0, 0), (0, 0)]
            case .var: return [(0, 0.1), (1, 0.07), (0, 0), (0, 0)]
            case .kurt: return [(0, 0.1), (1, 0.07), (0, 0.06), (0, 0.05)]
            case .varTanh: return [(0, 0.1), (0.8225, 0.07), (0, 0), (0, 0)]
            case .varSigmoid: return [(0, 0.1), (3.29, 0.07), (0, 0), (0, 0)]
            case .varLaplace: return [(0, 0.1), (2, 0.07), (0, 0), (0, 0)]
            }
        }
    }

    /// Per-channel batch statistics.
    public struct Statistics {
        public var mean: Tensor
        public var variance: Tensor
        public var skewness: Tensor
        public var kurtosis: Tensor
    }

    public let preset: Preset
    public let eps: Float
    public init(_ preset: Preset, eps: Float = 1e-8) {
        self.preset = preset
        self.eps = eps
    }

    /// The loss and statistics of `z [N, d]`.
    public func callAsFunction(_ z: Tensor) -> (loss: Tensor, statistics: Statistics) {
        let n = z.shape[0]
        let mean = z.mean(axis: 0)
        let centred = z - mean
        let variance = centred.squared().sum(axis: 0) / Float(n - 1)
        let std = variance.sqrt().clamped(min: eps)
        let scores = centred / std
        let skewness = scores.pow(3).mean(axis: 0)
        let kurtosis = scores.pow(4).mean(axis: 0) - 3
        let t = preset.terms
        // No vector: no loss (the statistics stay NaN: there are none).
        let loss = n == 0 ? Tensor(0) : (mean - t[0].0).squared().mean() * t[0].1 + (variance - t[1].0).squared().mean() * t[1].1
            + (skewness - t[2].0).squared().mean() * t[2].1 + (kurtosis - t[3].0).squared().mean() * t[3].1
        return (loss, Statistics(mean: mean, variance: variance, skewness: skewness, kurtosis: kurtosis))
    }
}
