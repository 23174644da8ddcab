import VQNN
import VQTensor

/// Binary latents (Fleuret, *Binary Latent Variables as a Stable Alternative to the VAE*, 2025,
/// arXiv:2510.17558), the Swift counterpart of the reference's `BinaryMapper`: `bits` logits become `bits`
/// sampled bits, returned as a one-hot over the `2^bits` codes, with a straight-through gradient through the
/// joint probability of every code and a KL aux loss that keeps the bits from collapsing.
///
/// Bit `k` of code `j` is `(j >> k) & 1` — the **first** bit is the least significant, as in the reference
/// (LFQ orders its bits the other way); kept so that indices agree with PyTorch-trained models.
///
/// ```swift
/// let mapper = try BinaryMapper(.init(bits: 8))
/// let out = mapper(logits)             // logits [b, n, 8] → out.oneHot [b, n, 256], out.indices [b, n]
/// ```
///
/// Nothing is learned, so nothing can be frozen.
///
/// - Complexity: O(N · 2^bits · bits) with the straight-through estimator (the joint probability of every
///   code), O(N · bits) without.
public final class BinaryMapper: Module {
    public struct Configuration: Sendable, Equatable {
        public var bits: Int
        /// The aux loss is `relu(KL − klLossThreshold)`; default one bit (`ln 2`).
        public var klLossThreshold: Float = Float(0.6931471805599453)
        /// In evaluation, take `p > 0.5` instead of sampling.
        public var deterministicOnEval = false
        public var seed: UInt64 = 0
        public init(bits: Int) { self.bits = bits }

        static let keywords: Set<String> = ["bits", "kl_loss_threshold", "deterministic_on_eval", "seed"]

        public init(referenceKwargs kw: [String: Any]) throws {
            let m = "BinaryMapper"
            for k in kw.keys where !Self.keywords.contains(k) { throw ConfigurationError.unknownKeyword(module: m, keyword: k) }
            let k = Keywords(kw, module: m)
            self.init(bits: try k.int("bits") ?? 1)
            if let t = try k.double("kl_loss_threshold") { klLossThreshold = Float(t) }
            deterministicOnEval = try k.bool("deterministic_on_eval") ?? false
            if let s = try k.int("seed") { seed = UInt64(truncatingIfNeeded: s) }
            try validate()
        }

        /// The largest `bits`: the one-hot output has `2^bits` columns.
        public static let maxBits = 24

        public func validate() throws {
            guard (1...Self.maxBits).contains(bits) else {
                throw ConfigurationError.badValue(module: "BinaryMapper", keyword: "bits", reason: "\(bits) is outside 1…\(Self.maxBits) (the output has 2^bits columns)")
            }
            guard klLossThreshold.isFinite else {
                throw ConfigurationError.badValue(module: "BinaryMapper", keyword: "kl_loss_threshold", reason: "must be finite")
            }
        }
    }

    /// The result of a forward pass.
    public struct Output {
        /// `[..., 2^bits]`, one-hot (plus the straight-through term's gradient when training).
        public var oneHot: Tensor
        /// `[...]`: `Σ_k bit_k · 2^k`.
        public var indices: IndexTensor
        /// The KL aux loss: a scalar, per vector `[...]` without reduction, 0 when not computed.
        public var auxLoss: Tensor
    }

    public let configuration: Configuration
    public var bits: Int { configuration.bits }
    public var codebookSize: Int { 1 << configuration.bits }
    var rng: SeededGenerator

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        self.configuration = configuration
        rng = SeededGenerator(seed: configuration.seed ^ 0xB17)
        super.init()
    }

    /// `[2^bits, bits]` of 0/1: row `j` holds the bits of code `j`, least significant first.
    public var codes: Tensor {
        let b = bits
        return Tensor((0..<(codebookSize * b)).map { Float((($0 / b) >> ($0 % b)) & 1) }, shape: [codebookSize, b])
    }

    /// `Σ_k log p(bit_k)` of codes under the logits (`log_prob`): `[...]`, or `[..., bits]` with `sumBits: false`.
    public func logProbability(_ logits: Tensor, indices: IndexTensor, sumBits: Bool = true) -> Tensor {
        precondition(logits.shape.last == bits && Array(logits.shape.dropLast()) == indices.shape,
                     "BinaryMapper.logProbability: logits \(logits.shape) and indices \(indices.shape) for \(bits) bits")
        let chosen = Tensor(indices.scalars.flatMap { j in (0..<bits).map { Float((j >> $0) & 1) } }, shape: logits.shape)
        let perBit = Tensor.select(chosen, logits.logSigmoid(), (-logits).logSigmoid())
        return sumBits ? perBit.sum(axis: -1) : perBit
    }

    /// `relu(bits · ln 2 − H(logits) − threshold)`, the mean (or per vector `[...]`), on untempered logits.
    public func auxLoss(_ logits: Tensor, reduce: Bool = true) -> Tensor {
        let p = logits.sigmoid()
        let entropy = -(p * logits.logSigmoid() + (1 - p) * (-logits).logSigmoid()).sum(axis: -1)
        let kl = Float(bits) * Float(0.6931471805599453) - entropy
        let loss = (kl - configuration.klLossThreshold).relu()
        guard reduce else { return loss }
        return loss.count == 0 ? Tensor(0) : loss.mean()  // no vector, no loss
    }

    /// Maps logits `[..., bits]` to sampled bits.
    /// - Parameters:
    ///   - logits: `[..., bits]`, one logit per bit.
    ///   - temperature: the bits are drawn with `p = σ(logits / temperature)`.
    ///   - straightThrough: add `G − G.detached()` (G the joint probability of each code); default: training.
    ///   - computeAuxLoss: default: training.
    ///   - deterministic: `p > 0.5` instead of sampling; default: `deterministicOnEval` in evaluation.
    ///   - reduceAuxLoss: the mean, or the loss per vector.
    ///   - sampledBits: bits to use instead of drawing them (`[..., bits]` of 0/1, e.g. to replay a draw).
    public func callAsFunction(_ logits: Tensor, temperature: Float = 1, straightThrough: Bool? = nil, computeAuxLoss: Bool? = nil,
                               deterministic: Bool? = nil, reduceAuxLoss: Bool = true, sampledBits: Tensor? = nil) -> Output {
        precondition(logits.shape.last == bits, "BinaryMapper(bits \(bits)): logits \(logits.shape) must end in \(bits)")
        precondition(sampledBits == nil || sampledBits!.shape == logits.shape, "BinaryMapper: sampled bits \(sampledBits!.shape) for logits \(logits.shape)")
        let lead = Array(logits.shape.dropLast())
        let deterministic = deterministic ?? (configuration.deterministicOnEval && !isTraining)
        let p = withoutGradient { (logits / temperature).sigmoid() }
        let drawn: Tensor
        if let sampledBits {
            drawn = sampledBits
        } else if deterministic {
            drawn = p .> 0.5
        } else {
            drawn = Tensor.randomUniform(p.shape, using: &rng) .< p
        }
        let b = bits
        let bitValues = drawn.scalars
        let flat = (0..<(bitValues.count / b)).map { r in (0..<b).reduce(0) { $0 + (bitValues[r * b + $1] != 0 ? 1 << $1 : 0) } }
        let indices = IndexTensor(flat, shape: lead)
        var oneHot = Tensor.oneHot(IndexTensor(flat), classes: codebookSize)
        let aux = (computeAuxLoss ?? isTraining) ? auxLoss(logits, reduce: reduceAuxLoss) : Tensor(0)
        if straightThrough ?? isTraining {
            let l = logits.reshaped([-1, b])
            let c = codes
            let joint = (l.logSigmoid().matmul(transposed: c) + (-l).logSigmoid().matmul(transposed: 1 - c)).exp()
            oneHot = oneHot + joint - joint.detached()
        }
        return Output(oneHot: oneHot.reshaped(lead + [codebookSize]), indices: indices, auxLoss: aux)
    }
}

extension BinaryMapper: SeededModule {}
