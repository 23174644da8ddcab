import VQNN
import VQTensor

/// Finite scalar quantization (Mentzer et al., *Finite Scalar Quantization: VQ-VAE Made Simple*, 2023):
/// each of `levels.count` channels is bounded and rounded to one of `levels[i]` values; the implicit
/// codebook has `Π levels` codes and nothing to learn or freeze. The symmetry-preserving variant is from
/// Chen et al., 2024 (§3.2).
public final class FSQ: Module, @unchecked Sendable {
    public struct Configuration: Sendable, Equatable {
        public var levels: [Int]
        public var dim: Int? = nil
        public var numCodebooks = 1
        public var keepNumCodebooksDim: Bool? = nil
        public var channelFirst = false
        public var projectionHasBias = true
        public var preserveSymmetry = false
        public var noiseDropout: Float = 0
        public var boundHardClamp = false
        public var seed: UInt64 = 0
        public init(levels: [Int]) { self.levels = levels }

        static let keywords: Set<String> = ["levels", "dim", "num_codebooks", "keep_num_codebooks_dim", "channel_first",
                                            "projection_has_bias", "preserve_symmetry", "noise_dropout", "bound_hard_clamp",
                                            "return_indices", "force_quantization_f32", "seed"]

        public init(referenceKwargs kw: [String: Any], module: String = "FSQ") throws {
            for k in kw.keys where !Self.keywords.contains(k) { throw ConfigurationError.unknownKeyword(module: module, keyword: k) }
            guard let levels = kw["levels"] as? [Int] else { throw ConfigurationError.invalid(module: module, reason: "levels is required") }
            self.init(levels: levels)
            dim = kw["dim"] as? Int
            numCodebooks = kw["num_codebooks"] as? Int ?? 1
            keepNumCodebooksDim = kw["keep_num_codebooks_dim"] as? Bool
            channelFirst = kw["channel_first"] as? Bool ?? false
            projectionHasBias = kw["projection_has_bias"] as? Bool ?? true
            preserveSymmetry = kw["preserve_symmetry"] as? Bool ?? false
            noiseDropout = Float(kw["noise_dropout"] as? Double ?? 0)
            boundHardClamp = kw["bound_hard_clamp"] as? Bool ?? false
            if let s = kw["seed"] as? Int { seed = UInt64(truncatingIfNeeded: s) }
            if levels.contains(where: { $0 < 2 }) { throw ConfigurationError.badValue(module: module, keyword: "levels", reason: "every level must be ≥ 2") }
            if levels.contains(2) && !preserveSymmetry {
                throw ConfigurationError.badValue(module: module, keyword: "levels", reason: "levels of 2 need preserve_symmetry")
            }
            if noiseDropout > 0 && !preserveSymmetry {
                throw ConfigurationError.badValue(module: module, keyword: "noise_dropout", reason: "needs preserve_symmetry")
            }
        }
    }

    public let configuration: Configuration
    public let projectIn: Linear?
    public let projectOut: Linear?
    public let levels: [Int]
    public let basis: [Int]
    public let codebookSize: Int
    public let dim: Int
    var rng: SeededGenerator

    public init(_ configuration: Configuration) {
        let c = configuration
        self.configuration = c
        levels = c.levels
        var b = [1]
        for l in c.levels.dropLast() { b.append(b.last! * l) }
        basis = b
        codebookSize = c.levels.reduce(1, *)
        let effective = c.levels.count * c.numCodebooks
        dim = c.dim ?? effective
        var rng = SeededGenerator(seed: c.seed ^ 0xF5C)
        if dim != effective {
            projectIn = Linear(dim, effective, bias: c.projectionHasBias, rng: &rng)
            projectOut = Linear(effective, dim, bias: c.projectionHasBias, rng: &rng)
        } else {
            projectIn = nil
            projectOut = nil
        }
        self.rng = rng
        super.init()
    }

    public var codebookDim: Int { levels.count }
    var keepCodebooksDim: Bool { configuration.keepNumCodebooksDim ?? (configuration.numCodebooks > 1) }
    private func perLevel(_ f: (Int) -> Float) -> Tensor { Tensor(levels.map(f)) }

    /// Bounds and rounds `z [..., d]` to the grid, with straight-through gradients.
    public func quantize(_ z: Tensor) -> Tensor {
        let hard = configuration.boundHardClamp
        if configuration.preserveSymmetry {
            let lm1 = perLevel { Float($0 - 1) }
            let scale = perLevel { 2 / Float($0 - 1) }
            let t = hard ? z.clamped(min: -1, max: 1) : z.tanh()
            let bracket = (lm1 * (t + 1)) / 2 + 0.5
            let floored = bracket + (bracket.floor() - bracket).detached()
            return scale * floored - 1
        }
        let halfL = perLevel { Float($0 - 1) * Float(1 + 1e-3 as Double) / 2 }
        let offset = perLevel { $0 % 2 == 0 ? 0.5 : 0 }
        let ratio = Elementwise_div(offset, halfL)
        let shift = hard ? ratio : Tensor(ratio.scalars.map { atanhFloat($0) })
        let inner = z + shift
        let bounded = (hard ? inner.clamped(min: -1, max: 1) : inner.tanh()) * halfL - offset
        let rounded = bounded + (bounded.rounded() - bounded).detached()
        return rounded / perLevel { Float($0 / 2) }
    }

    private func scaleAndShift(_ zhat: Tensor) -> Tensor {
        if configuration.preserveSymmetry { return (zhat + 1) / perLevel { 2 / Float($0 - 1) } }
        let hw = perLevel { Float($0 / 2) }
        return zhat * hw + hw
    }

    /// Codes `[..., d]` on the grid to indices `[...]`.
    public func codesToIndices(_ zhat: Tensor) -> IndexTensor {
        precondition(zhat.shape.last == codebookDim, "FSQ.codesToIndices: codes \(zhat.shape) for \(codebookDim) levels")
        let s = (scaleAndShift(zhat.detached()) * Tensor(basis.map(Float.init))).sum(axis: -1).rounded()
        return IndexTensor(s.scalars.map { Int($0) }, shape: s.shape)
    }

    /// Per-channel level indices of code indices: `[..., d]`.
    public func levelIndices(_ indices: IndexTensor) -> IndexTensor {
        let d = codebookDim
        var out = [Int](repeating: 0, count: indices.count * d)
        for (i, idx) in indices.scalars.enumerated() {
            for j in 0..<d { out[i * d + j] = (idx / basis[j]) % levels[j] }
        }
        return IndexTensor(out, shape: indices.shape + [d])
    }

    /// Codes on the grid (unprojected) for indices: `[..., d]`.
    public func rawCodes(_ indices: IndexTensor) -> Tensor {
        let level = levelIndices(indices).asFloat
        if configuration.preserveSymmetry { return level * perLevel { 2 / Float($0 - 1) } - 1 }
        let hw = perLevel { Float($0 / 2) }
        return (level - hw) / hw
    }

    /// All `Π levels` codes, `[codebookSize, d]`.
    public var implicitCodebook: Tensor { rawCodes(IndexTensor(Array(0..<codebookSize))) }

    /// The inverse of the forward's indices: codes (codebooks merged), projected out, channel-first when
    /// the module is (the reference's `indices_to_codes`).
    public func indicesToCodes(_ indices: IndexTensor) -> Tensor {
        let isImage = indices.rank >= 3 + (keepCodebooksDim ? 1 : 0)
        var codes = rawCodes(indices)
        if keepCodebooksDim { codes = codes.flattened(from: -2) }
        if let projectOut { codes = projectOut(codes) }
        if isImage || configuration.channelFirst { codes = moveLastToFirstFeature(codes) }
        return codes
    }

    /// Quantizes `z` (`[b, n, dim]`, or channel-first / image `[b, dim, …]`). Returns the projected output,
    /// the indices (`[b, n]`, or `[b, n, c]` with several codebooks) and the unprojected codes `[b, n, c·d]`.
    public func callAsFunction(_ input: Tensor) -> (quantized: Tensor, indices: IndexTensor, codes: Tensor) {
        var z = input
        let moveChannel = input.rank >= 4 || configuration.channelFirst
        var spatial: [Int] = []
        if moveChannel {
            spatial = Array(input.shape.dropFirst(2))
            z = moveFirstFeatureToLast(z).reshaped([input.shape[0], -1, input.shape[1]])
        }
        precondition(z.rank == 3 && z.shape[2] == dim, "FSQ(dim \(dim)): input shape \(input.shape)")
        let (b, n) = (z.shape[0], z.shape[1])
        z = projectIn.map { $0(z) } ?? z
        z = z.reshaped([b, n, configuration.numCodebooks, codebookDim])
        var codes = quantize(z)
        var indices = codesToIndices(codes)
        if isTraining && configuration.noiseDropout > 0 {
            let shape = codes.shape
            let mask = Tensor((0..<codes.count).map { _ in rng.nextUniform() < configuration.noiseDropout ? 1 : 0 }, shape: shape)
            let offset = Tensor.randomUniform(shape, low: -0.5, high: 0.5, using: &rng)
            codes = Tensor.select(mask, codes + offset, codes).clamped(min: -1, max: 1)
        }
        codes = codes.reshaped([b, n, -1])
        var out = projectOut.map { $0(codes) } ?? codes
        if moveChannel {
            out = moveLastToFirstFeature(out.reshaped([b] + spatial + [dim]))
            indices = indices.reshaped([b] + spatial + [configuration.numCodebooks])
        }
        if !keepCodebooksDim { indices = indices.reshaped(Array(indices.shape.dropLast())) }
        return (out, indices, codes)
    }
}

/// `[b, d, …] → [b, …, d]`.
func moveFirstFeatureToLast(_ t: Tensor) -> Tensor {
    var p = Array(0..<t.rank)
    p.append(p.remove(at: 1))
    return t.permuted(p)
}

/// `[b, …, d] → [b, d, …]`.
func moveLastToFirstFeature(_ t: Tensor) -> Tensor {
    var p = Array(0..<t.rank)
    p.insert(p.removeLast(), at: 1)
    return t.permuted(p)
}

func Elementwise_div(_ a: Tensor, _ b: Tensor) -> Tensor { withoutGradient { a / b } }

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
func atanhFloat(_ x: Float) -> Float { atanhf(x) }
