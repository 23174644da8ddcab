import VQNN
import VQTensor

/// Finite scalar perturbation (arXiv:2602.17133), the Swift counterpart of the reference's `FSP`: each
/// channel is mapped to [0, 1] by a CDF, cut into `levels[i]` equal bins and replaced by its bin's centre;
/// in training a fraction `1 − quantizeRate` of the values is instead perturbed within half a bin, and a
/// moment-matching loss (``VectorNorm``) keeps the pre-activation statistics near a target.
///
/// ```swift
/// let fsp = try FSP(.init(levels: [8, 5, 5, 5], dim: 16))
/// let out = fsp(x)          // x [b, n, 16] → out.quantized [b, n, 16], out.indices [b, n], out.loss
/// ```
///
/// - Complexity: O(N · dim · levels.count) per forward.
public final class FSP: Module {
    /// The CDF that maps a channel to [0, 1] (`act_name`), with its inverse.
    public enum Activation: String, Sendable, CaseIterable {
        case tanh, sigmoid, normal, laplace, cauchy

        /// The CDF `(−∞, ∞) → [0, 1]`, differentiable (the reference's `tanh_act`, `normal_act`, …).
        ///
        /// ```swift
        /// FSP.Activation.normal.cdf(Tensor([0]))          // 0.5
        /// ```
        public func cdf(_ z: Tensor) -> Tensor { self(z) }

        /// The inverse CDF `(0, 1) → (−∞, ∞)` of every element, without gradient (the reference's `tanh_inv_act`, …).
        public func inverseCDF(_ p: Tensor) -> Tensor {
            Tensor(p.withUnsafeScalars { $0.map { inverse($0) } }, shape: p.shape)
        }

        /// The CDF, differentiable.
        func callAsFunction(_ z: Tensor) -> Tensor {
            switch self {
            case .tanh: return (z.tanh() + 1) / 2
            case .sigmoid: return z.sigmoid()
            case .normal: return (1 + (z / Float(2.0.squareRoot())).erf()) / 2
            case .laplace: return 0.5 * (1 + z.sign() * (1 - (-z.abs()).exp()))
            case .cauchy: return z.atan() / Float.pi + 0.5
            }
        }

        /// The inverse CDF of one value in (0, 1) (no gradient).
        func inverse(_ p: Float) -> Float {
            switch self {
            case .tanh: return ScalarMath.atanh(p * 2 - 1)
            case .sigmoid: return ScalarMath.log(p / (1 - p))
            case .normal: return ScalarMath.erfinv(2 * p - 1) * Float(2.0.squareRoot())
            case .laplace:
                let s: Float = p - 0.5 > 0 ? 1 : (p - 0.5 < 0 ? -1 : 0)
                return -s * ScalarMath.log(1 - 2 * Swift.abs(p - 0.5))
            case .cauchy: return ScalarMath.tan((p - 0.5) * Float.pi)
            }
        }
    }

    public struct Configuration: Sendable, Equatable {
        public var levels: [Int]
        public var dim: Int? = nil
        public var channelFirst = false
        public var projectionHasBias = true
        public var activation: Activation = .tanh
        /// The share of values quantized in training (the rest are perturbed); 1 in evaluation.
        public var quantizeRate: Float = 0
        /// Output `inverse_CDF(bin centre)` straight-through (`true`), or the standardised bin centre.
        public var needInverseActivation = false
        public var vectorNorm: VectorNorm.Preset = .varTanh
        public var seed: UInt64 = 0
        public init(levels: [Int], dim: Int? = nil) {
            self.levels = levels
            self.dim = dim
        }

        static let keywords: Set<String> = ["levels", "dim", "channel_first", "projection_has_bias", "act_name", "quantize_rate",
                                            "need_inv_act", "vector_norm", "seed"]

        public init(referenceKwargs kw: [String: Any]) throws {
            let m = "FSP"
            for k in kw.keys where !Self.keywords.contains(k) { throw ConfigurationError.unknownKeyword(module: m, keyword: k) }
            let k = Keywords(kw, module: m)
            guard let levels = try k.ints("levels") else { throw ConfigurationError.invalid(module: m, reason: "levels is required") }
            self.init(levels: levels, dim: try k.int("dim"))
            channelFirst = try k.bool("channel_first") ?? false
            projectionHasBias = try k.bool("projection_has_bias") ?? true
            if let a = kw["act_name"] {
                guard let s = a as? String, let act = Activation(rawValue: s) else {
                    throw ConfigurationError.badValue(module: m, keyword: "act_name", reason: "expected one of \(Activation.allCases.map(\.rawValue)), got \(a)")
                }
                activation = act
            }
            if let r = try k.double("quantize_rate") { quantizeRate = Float(r) }
            needInverseActivation = try k.bool("need_inv_act") ?? false
            if let v = kw["vector_norm"] {
                guard let s = v as? String, let preset = VectorNorm.Preset(rawValue: s) else {
                    throw ConfigurationError.badValue(module: m, keyword: "vector_norm", reason: "expected one of \(VectorNorm.Preset.allCases.map(\.rawValue)), got \(v)")
                }
                vectorNorm = preset
            }
            if let s = try k.int("seed") { seed = UInt64(truncatingIfNeeded: s) }
            try validate()
        }

        public func validate() throws {
            let m = "FSP"
            guard !levels.isEmpty else { throw ConfigurationError.badValue(module: m, keyword: "levels", reason: "an empty list") }
            guard levels.allSatisfy({ $0 >= 1 }) else { throw ConfigurationError.badValue(module: m, keyword: "levels", reason: "every level must be ≥ 1, got \(levels)") }
            guard SizeLimit.product(levels) != nil else {
                throw ConfigurationError.badValue(module: m, keyword: "levels", reason: "the codebook size Π levels of \(levels) exceeds \(SizeLimit.maxElements) codes")
            }
            guard (0...1).contains(quantizeRate) else {
                throw ConfigurationError.badValue(module: m, keyword: "quantize_rate", reason: "must be in [0, 1], got \(quantizeRate)")
            }
            if let d = dim, SizeLimit.product([d, levels.count]) == nil {
                throw ConfigurationError.badValue(module: m, keyword: "dim", reason: "dim \(d) × \(levels.count) projection values exceed \(SizeLimit.maxElements) (or a size is not positive)")
            }
        }
    }

    /// Recorded uniform draws for one training forward (`[N, levels.count]` each), in place of the
    /// module's generator: `perturbation` (u₁) and `mask` (u₂, perturbed where `u₂ > quantizeRate`).
    public struct Draws {
        public var perturbation: Tensor
        public var mask: Tensor
        public init(perturbation: Tensor, mask: Tensor) {
            self.perturbation = perturbation
            self.mask = mask
        }
    }

    /// The result of a forward pass.
    public struct Output {
        public var quantized: Tensor
        /// `[b, n]` (or the input's spatial layout).
        public var indices: IndexTensor
        /// The ``VectorNorm`` loss.
        public var loss: Tensor
        /// Bin per channel, `[..., levels.count]` (as floats, like the reference).
        public var levelIndices: Tensor
        public var statistics: VectorNorm.Statistics
        /// The share of perturbations that stayed inside (0, 1), when values were perturbed.
        public var acceptProbability: Tensor?
    }

    public let configuration: Configuration
    public let projectIn: Linear?
    public let projectOut: Linear?
    public let levels: [Int]
    public let basis: [Int]
    public let codebookSize: Int
    public let dim: Int
    public let vectorNorm: VectorNorm
    var rng: SeededGenerator

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        levels = c.levels
        basis = mixedRadixBasis(c.levels)
        codebookSize = SizeLimit.product(c.levels)!
        dim = c.dim ?? c.levels.count
        var rng = SeededGenerator(seed: c.seed ^ 0xF5B)
        (projectIn, projectOut) = Linear.projections(dim, c.levels.count, bias: c.projectionHasBias, rng: &rng)
        vectorNorm = VectorNorm(c.vectorNorm)
        self.rng = rng
        super.init()
    }

    public var codebookDim: Int { levels.count }
    private var levelsTensor: Tensor { Tensor(levels.map(Float.init)) }

    /// `1 / 0.28867513459481287`: standardises a uniform bin centre in [0, 1] to unit variance.
    private static let uniformStd: Float = 0.28867513459481287

    /// Bin centres in [0, 1] to output values (before the projection out), without gradient.
    private func centresToValues(_ q: Tensor, eps: Float) -> Tensor {
        if configuration.needInverseActivation {
            let act = configuration.activation
            return Tensor(q.clamped(min: eps, max: 1 - eps).scalars.map { act.inverse($0) }, shape: q.shape)
        }
        return (q - 0.5) / Self.uniformStd
    }

    /// The index of each vector's bins per channel (`[..., levels.count]` → `[...]`, the reference's
    /// `level_indices_to_indices`); the inverse of ``levelIndices(_:)``.
    ///
    /// - Throws: ``ConfigurationError/invalid(module:reason:)`` when the last axis is not `levels.count` long or a bin is
    ///   outside `0..<levels[i]`.
    public func indices(fromLevelIndices level: IndexTensor) throws -> IndexTensor {
        let d = codebookDim
        guard level.rank >= 1, level.shape.last == d else {
            throw ConfigurationError.invalid(module: "FSP", reason: "level indices \(level.shape) must end with \(d) (one bin per level)")
        }
        let n = level.count / d
        var out = [Int](repeating: 0, count: n)
        for r in 0..<n {
            for i in 0..<d {
                let bin = level.scalars[r * d + i]
                guard bin >= 0 && bin < levels[i] else {
                    throw ConfigurationError.invalid(module: "FSP", reason: "level index \(bin) outside 0..<\(levels[i]) (channel \(i))")
                }
                out[r] += bin * basis[i]
            }
        }
        return IndexTensor(out, shape: Array(level.shape.dropLast()))
    }

    /// Bins per channel of indices: `[..., levels.count]`.
    public func levelIndices(_ indices: IndexTensor) -> IndexTensor {
        let d = codebookDim
        var out = [Int](repeating: 0, count: indices.count * d)
        for (r, idx) in indices.scalars.enumerated() { for i in 0..<d { out[r * d + i] = (idx / basis[i]) % levels[i] } }
        return IndexTensor(out, shape: indices.shape + [d])
    }

    /// The reference's `indices_to_codes`: bin centres → values (inverse CDF clamped with `eps` = 1e-6, or
    /// standardised) → projection out, channel-first when the module is.
    public func indicesToCodes(_ indices: IndexTensor, eps: Float = 1e-6) -> Tensor {
        let q = (levelIndices(indices).asFloat + 0.5) / levelsTensor
        var codes = centresToValues(q, eps: eps)
        if let projectOut { codes = projectOut(codes) }
        return configuration.channelFirst ? moveLastToFirstFeature(codes) : codes
    }

    /// Quantizes `x [b, n, dim]` (or channel-first `[b, dim, …]`).
    /// - Parameters:
    ///   - input: `[b, n, dim]`, or channel-first `[b, dim, …]`.
    ///   - eps: the bins' upper clamp `1 − eps` and the inverse CDF's clamp (the reference's `eps`; default
    ///     float32's machine epsilon).
    ///   - draws: the uniforms of a training forward with `quantizeRate < 1` (default: drawn from the
    ///     module's generator).
    public func callAsFunction(_ input: Tensor, eps: Float? = nil, draws: Draws? = nil) -> Output {
        let eps = eps ?? Float.ulpOfOne
        precondition(eps > 0 && eps < 0.5, "FSP: eps \(eps) must be in (0, 0.5)")
        let x = configuration.channelFirst ? moveFirstFeatureToLast(input) : input
        precondition(x.shape.last == dim, "FSP(dim \(dim)): input \(input.shape)\(configuration.channelFirst ? " (channel first)" : "")")
        let lead = Array(x.shape.dropLast())
        var z = x.reshaped([-1, dim])
        if let projectIn { z = projectIn(z) }
        let (normLoss, stats) = vectorNorm(z)
        let act = configuration.activation(z)
        let L = levelsTensor
        let level = withoutGradient { (act.clamped(max: 1 - eps) * L).floor() }
        var q = act + ((level + 0.5) / L - act).detached()
        let rate = isTraining ? configuration.quantizeRate : 1
        var accept: Tensor? = nil
        if rate < 1 {
            let u1 = draws?.perturbation ?? Tensor.randomUniform(act.shape, using: &rng)
            let u2 = draws?.mask ?? Tensor.randomUniform(act.shape, using: &rng)
            precondition(u1.shape == act.shape && u2.shape == act.shape, "FSP: draws \(u1.shape), \(u2.shape) for \(act.shape)")
            let pMax = Tensor(levels.map { 1 / Float($0 * 2) })
            let proposal = act + pMax * (u1 * 2 - 1)
            let inside = (proposal .> 0) * (proposal .< 1)
            accept = inside.mean()
            let perturbed = Tensor.select(inside, proposal, act)
            q = Tensor.select(u2 .> rate, perturbed, q)
        }
        var qz: Tensor
        if configuration.needInverseActivation {
            qz = z + (centresToValues(q.detached(), eps: eps) - z).detached()
        } else {
            qz = (q - 0.5) / Self.uniformStd
        }
        let bs = basis.map(Float.init), d = codebookDim
        let lv = level.scalars
        let indices = IndexTensor((0..<(lv.count / d)).map { r in
            var acc: Float = 0
            for i in 0..<d { acc += lv[r * d + i] * bs[i] }
            return gridIndex(acc, nonFinite: -1)   // a row with NaN gets -1, as FSQ's
        }, shape: lead)
        if let projectOut { qz = projectOut(qz) }
        var out = qz.reshaped(x.shape)
        if configuration.channelFirst { out = moveLastToFirstFeature(out) }
        return Output(quantized: out, indices: indices, loss: normLoss, levelIndices: level.reshaped(lead + [d]),
                      statistics: stats, acceptProbability: accept)
    }
}

extension FSP: SeededModule {}
