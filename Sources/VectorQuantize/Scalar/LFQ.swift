import VQNN
import VQTensor

/// Lookup-free quantization (Yu et al., *Language Model Beats Diffusion — Tokenizer is Key to Visual
/// Generation* (MAGVIT-v2), 2023): each of `log2(codebook_size)` channels is quantized to its sign
/// (times `codebook_scale`); the index is the bit pattern. Training adds the entropy loss (per-sample
/// entropy minus `diversity_gamma` × codebook entropy) and an optional commitment loss. `spherical`
/// l2-normalises inputs and codes (Zhao et al., 2024, BSQ).
public final class LFQ: Module {
    public struct Configuration: Sendable, Equatable {
        public var dim: Int? = nil
        public var codebookSize: Int? = nil
        public var entropyLossWeight: Float = 0.1
        public var commitmentLossWeight: Float = 0
        public var diversityGamma: Float = 1
        public var numCodebooks = 1
        public var keepNumCodebooksDim: Bool? = nil
        public var codebookScale: Float = 1
        public var fracPerSampleEntropy: Float = 1
        public var hasProjections: Bool? = nil
        public var projectionHasBias = true
        public var softClampInputValue: Float? = nil
        public var channelFirst: Bool? = nil
        public var spherical = false
        public var seed: UInt64 = 0
        /// `straight_through_activation`: applied to the quantizer input before the straight-through
        /// estimator in training (`act(x) + (q − act(x)).detach()`).
        public var straightThroughActivation: StraightThroughActivation = .identity
        /// `experimental_softplus_entropy_loss`: the entropy aux loss becomes `softplus(loss + entropy_loss_offset)`.
        public var experimentalSoftplusEntropyLoss = false
        public var entropyLossOffset: Float = 5
        /// `cosine_sim_project_in` (+ `cosine_sim_project_in_scale`, default `codebook_scale`).
        public var cosineSimProjectIn = false
        public var cosineSimProjectInScale: Float? = nil
        /// `orthogonal_rotation`: bits are taken in a random orthogonal basis (`orthogonal_rot`, a buffer).
        public var orthogonalRotation = false
        /// `dim` bits (2^dim codes), or `codebookSize` codes (log2 bits, projected from `dim` when they differ).
        public init(dim: Int? = nil, codebookSize: Int? = nil) {
            self.dim = dim
            self.codebookSize = codebookSize
        }

        /// The activations the reference's `straight_through_activation` takes (a module; named here).
        public enum StraightThroughActivation: String, Sendable, Equatable {
            case identity, tanh, sigmoid
        }

        static let keywords: Set<String> = [
            "dim", "codebook_size", "entropy_loss_weight", "commitment_loss_weight", "diversity_gamma", "num_codebooks",
            "keep_num_codebooks_dim", "codebook_scale", "frac_per_sample_entropy", "has_projections", "projection_has_bias",
            "soft_clamp_input_value", "channel_first", "spherical", "force_quantization_f32", "seed",
            "straight_through_activation", "experimental_softplus_entropy_loss", "entropy_loss_offset",
            "cosine_sim_project_in", "cosine_sim_project_in_scale", "orthogonal_rotation",
        ]

        public init(referenceKwargs kw: [String: Any]) throws {
            try self.init(referenceKwargs: kw, module: "LFQ")
        }

        init(referenceKwargs kw: [String: Any], module: String) throws {
            for k in kw.keys where !Self.keywords.contains(k) { throw ConfigurationError.unknownKeyword(module: module, keyword: k) }
            let k = Keywords(kw, module: module)
            func f(_ key: String) throws -> Float? { try k.double(key).map(Float.init) }
            dim = try k.int("dim")
            codebookSize = try k.int("codebook_size")
            entropyLossWeight = try f("entropy_loss_weight") ?? entropyLossWeight
            commitmentLossWeight = try f("commitment_loss_weight") ?? commitmentLossWeight
            diversityGamma = try f("diversity_gamma") ?? diversityGamma
            numCodebooks = try k.int("num_codebooks") ?? 1
            keepNumCodebooksDim = try k.bool("keep_num_codebooks_dim")
            codebookScale = try f("codebook_scale") ?? codebookScale
            fracPerSampleEntropy = try f("frac_per_sample_entropy") ?? 1
            hasProjections = try k.bool("has_projections")
            projectionHasBias = try k.bool("projection_has_bias") ?? true
            softClampInputValue = try f("soft_clamp_input_value")
            channelFirst = try k.bool("channel_first")
            spherical = try k.bool("spherical") ?? false
            experimentalSoftplusEntropyLoss = try k.bool("experimental_softplus_entropy_loss") ?? false
            entropyLossOffset = Float(try k.double("entropy_loss_offset") ?? 5)
            cosineSimProjectIn = try k.bool("cosine_sim_project_in") ?? false
            orthogonalRotation = try k.bool("orthogonal_rotation") ?? false
            cosineSimProjectInScale = try k.double("cosine_sim_project_in_scale").map(Float.init)
            if let a = kw["straight_through_activation"] {
                // A module in the reference; its name here ("tanh", or the module's repr "nn.Tanh()").
                let name = "\(a)".lowercased().replacingOccurrences(of: "nn.", with: "").replacingOccurrences(of: "()", with: "")
                guard let act = StraightThroughActivation(rawValue: name) else {
                    throw ConfigurationError.badValue(module: module, keyword: "straight_through_activation", reason: "\(a): one of identity, tanh, sigmoid")
                }
                straightThroughActivation = act
            }
            if let s = try k.int("seed") { seed = UInt64(truncatingIfNeeded: s) }
            try validate(module: module)
        }

        /// The checks of both paths (typed and keyword): sizes, a power-of-2 codebook, the entropy fraction.
        public func validate() throws { try validate(module: "LFQ") }

        func validate(module: String) throws {
            guard dim != nil || codebookSize != nil else { throw ConfigurationError.invalid(module: module, reason: "dim or codebook_size is required") }
            if numCodebooks < 1 || numCodebooks > 1 << 12 { throw ConfigurationError.badValue(module: module, keyword: "num_codebooks", reason: "must be in 1…4096") }
            if numCodebooks > 1 && keepNumCodebooksDim == false {
                // The reference asserts it too: several codebooks' indices need their own axis.
                throw ConfigurationError.badValue(module: module, keyword: "keep_num_codebooks_dim", reason: "false needs num_codebooks 1 (got \(numCodebooks))")
            }
            let bits = codebookSize.map { $0 > 0 ? $0.trailingZeroBitCount : 0 } ?? Swift.min(dim ?? 1, 30)
            if let d = dim, SizeLimit.product([d, Swift.max(bits, 1), numCodebooks]) == nil {
                throw ConfigurationError.badValue(module: module, keyword: "dim", reason: "dim \(d) × \(bits * numCodebooks) projection values exceed \(SizeLimit.maxElements) (or a size is not positive)")
            }
            if codebookSize == nil, let d = dim, d > 30 {
                throw ConfigurationError.badValue(module: module, keyword: "dim", reason: "\(d) bits would make 2^\(d) codes (at most 2^30)")
            }
            if let c = codebookSize, c > 1 << 30 {
                throw ConfigurationError.badValue(module: module, keyword: "codebook_size", reason: "\(c) exceeds 2^30 codes")
            }
            if let c = codebookSize, c <= 1 || c & (c - 1) != 0 {
                throw ConfigurationError.badValue(module: module, keyword: "codebook_size", reason: "\(c) is not a power of 2 of at least one bit (2, 4, 8, …)")
            }
            if hasProjections == false, let d = dim {
                let bits = codebookSize.map { $0.trailingZeroBitCount } ?? d
                if d != bits * numCodebooks {
                    throw ConfigurationError.badValue(module: module, keyword: "has_projections",
                                                      reason: "false needs dim \(d) = \(bits) bits × \(numCodebooks) codebooks (nothing would map one to the other)")
                }
            }
            if let v = softClampInputValue, !(v >= codebookScale && v.isFinite) {
                // The reference asserts it: a clamp below the codes' own scale would never reach a code.
                throw ConfigurationError.badValue(module: module, keyword: "soft_clamp_input_value",
                                                  reason: "\(v) must be a finite number ≥ codebook_scale (\(codebookScale))")
            }
            if !(fracPerSampleEntropy > 0 && fracPerSampleEntropy <= 1) {
                throw ConfigurationError.badValue(module: module, keyword: "frac_per_sample_entropy", reason: "must be in (0, 1]")
            }
        }
    }

    /// The loss terms (unweighted), as the reference's `LossBreakdown`.
    public struct Losses {
        public var perSampleEntropy = Tensor(0)
        public var batchEntropy = Tensor(0)
        public var commitment = Tensor(0)
    }

    public let configuration: Configuration
    /// `Linear`, or `CosineSimLinear` with `cosine_sim_project_in`.
    public let projectIn: Layer?
    public let projectOut: Linear?
    /// `2^(d−1) … 1`, the bit weights of an index (key `mask`, as the reference's buffer).
    public let mask: Parameter
    /// `[K, K]` (key `orthogonal_rot`) with `orthogonalRotation`.
    public let orthogonalRot: Parameter?
    public let codebookSize: Int
    public let codebookDim: Int
    public let dim: Int
    var rng: SeededGenerator

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        codebookSize = c.codebookSize ?? (1 << c.dim!)
        codebookDim = codebookSize.trailingZeroBitCount
        let dims = codebookDim * c.numCodebooks
        dim = c.dim ?? dims
        var rng = SeededGenerator(seed: c.seed ^ 0x1F0)
        if c.hasProjections ?? (dim != dims) {
            projectIn = c.cosineSimProjectIn
                ? CosineSimLinear(dim, dims, scale: c.cosineSimProjectInScale ?? c.codebookScale, rng: &rng)
                : Linear(dim, dims, bias: c.projectionHasBias, rng: &rng)
            projectOut = Linear(dims, dim, bias: c.projectionHasBias, rng: &rng)
        } else {
            projectIn = nil
            projectOut = nil
        }
        let cdim = codebookDim
        mask = Parameter(Tensor((0..<cdim).map { Float(1 << (cdim - 1 - $0)) }), kind: .buffer)
        mask.domain = .constant
        orthogonalRot = c.orthogonalRotation ? Parameter(Tensor.randomOrthogonal(cdim, using: &rng), kind: .buffer) : nil
        self.rng = rng
        super.init()
    }

    var keepCodebooksDim: Bool { configuration.keepNumCodebooksDim ?? (configuration.numCodebooks > 1) }
    var scale: Float { configuration.codebookScale }

    private func maybeL2Norm(_ t: Tensor) -> Tensor {
        configuration.spherical ? t.l2Normalized(axis: -1) * scale : t
    }

    /// What the sign is taken of: the projected (and soft-clamped) input per codebook `[b, n, c, K]`,
    /// rotated with `orthogonalRotation`, l2-normalised when spherical.
    func quantizerInput(_ projected: Tensor, b: Int, n: Int) -> Tensor {
        var x = projected.reshaped([b, n, configuration.numCodebooks, codebookDim])
        if let orthogonalRot { x = x.matmul(orthogonalRot.value) }
        return maybeL2Norm(x)
    }

    /// Codes for bit patterns `[..., d]` of 0/1.
    func bitsToCodes(_ bits: Tensor) -> Tensor { bits * scale * 2 - scale }

    func bits(_ indices: IndexTensor) -> Tensor {
        let d = codebookDim
        return Tensor(indices.scalars.flatMap { idx in (0..<d).map { idx & (1 << (d - 1 - $0)) != 0 ? Float(1) : 0 } },
                      shape: indices.shape + [d])
    }

    /// All codes `[codebookSize, d]` (scaled, not normalised).
    public var codebook: Tensor { bitsToCodes(bits(IndexTensor(Array(0..<codebookSize)))) }

    /// The codes the forward outputs for indices `[…, c]` (before the projection out): the scaled bits,
    /// l2-normalised when spherical, rotated back with `orthogonalRotation` — `[…, c, d]`. One place for
    /// ``indicesToCodes(_:projectOut:)`` and the residual stacks' decoding.
    func forwardCodes(_ indices: IndexTensor) -> Tensor {
        let codes = maybeL2Norm(bitsToCodes(bits(indices)))
        return orthogonalRot.map { codes.matmul(transposed: $0.value) } ?? codes
    }

    /// Codes for indices (codebooks merged), optionally projected out; channel-first as the forward.
    public func indicesToCodes(_ indices: IndexTensor, projectOut project: Bool = true) -> Tensor {
        let isImage = indices.rank >= 3 + (keepCodebooksDim ? 1 : 0)
        let idx = keepCodebooksDim ? indices : indices.reshaped(indices.shape + [1])
        var codes = forwardCodes(idx).flattened(from: -2)
        if project, let projectOut { codes = projectOut(codes) }
        if configuration.channelFirst ?? isImage { codes = moveLastToFirstFeature(codes) }
        return codes
    }

    /// The result of a forward: the output, the indices, the weighted auxiliary loss and its terms.
    public struct Output {
        public var quantized: Tensor
        public var indices: IndexTensor
        public var auxLoss: Tensor
        public var losses: Losses
    }

    /// Quantizes `x [b, n, dim]` (or channel-first / image). Returns the output, indices, the weighted
    /// auxiliary loss (0 in evaluation) and its unweighted terms.
    public func callAsFunction(_ input: Tensor, inverseTemperature: Float = 100, mask tokens: TokenMask? = nil)
        -> Output
    {
        let c = configuration
        var x = input
        let transpose = c.channelFirst ?? (input.rank >= 4)
        var spatial: [Int] = []
        if transpose {
            spatial = Array(input.shape.dropFirst(2))
            x = moveFirstFeatureToLast(x).flattened(from: 1, to: -2)
        }
        precondition(x.rank == 3 && x.shape[2] == dim, "LFQ(dim \(dim)): input shape \(input.shape)")
        let (b, n) = (x.shape[0], x.shape[1])
        let tokenMask = tokens?.flags(for: [b, n], "LFQ (input \(input.shape))")
        x = projectIn.map { $0(x) } ?? x
        if let v = c.softClampInputValue { x = (x / v).tanh() * v }
        x = quantizerInput(x, b: b, n: n)
        let original = x
        let signs = (x .> 0).detached()
        var quantized = bitsToCodes(signs)
        let bitWeights = mask.value
        let idxF = (signs * bitWeights).sum(axis: -1)
        var indices = IndexTensor(idxF.scalars.map { Int($0) }, shape: idxF.shape)
        quantized = maybeL2Norm(quantized)
        if isTraining {
            switch c.straightThroughActivation {
            case .identity: break
            case .tanh: x = x.tanh()
            case .sigmoid: x = x.sigmoid()
            }
            x = x + (quantized - x).detached()
        } else {
            x = quantized
        }

        let (aux, losses) = isTraining ? trainingLosses(original, quantized, b: b, n: n, tokenMask: tokenMask,
                                                        inverseTemperature: inverseTemperature) : (Tensor(0), Losses())
        if let orthogonalRot { x = x.matmul(transposed: orthogonalRot.value) }
        x = x.flattened(from: 2)
        var out = projectOut.map { $0(x) } ?? x
        if transpose {
            out = moveLastToFirstFeature(out.reshaped([b] + spatial + [out.shape[2]]))
            indices = indices.reshaped([b] + spatial + [c.numCodebooks])
        }
        if !keepCodebooksDim { indices = indices.reshaped(Array(indices.shape.dropLast())) }
        return Output(quantized: out, indices: indices, auxLoss: aux, losses: losses)
    }

    /// The auxiliary loss of a training forward and its terms: the entropies (dense as the reference, or factorised over
    /// the bits for large codebooks) over the real tokens (a sampled fraction with `fracPerSampleEntropy`), and the
    /// commitment.
    func trainingLosses(_ original: Tensor, _ quantized: Tensor, b: Int, n: Int, tokenMask: [Bool]?, inverseTemperature: Float)
        -> (aux: Tensor, losses: Losses)
    {
        let c = configuration
        var losses = Losses()
        var rows = original.reshaped([b * n, c.numCodebooks, codebookDim])
        if let tokenMask {
            precondition(tokenMask.count == b * n, "LFQ: mask of \(tokenMask.count) for \(b * n) tokens")
            rows = rows.indexSelect(axis: 0, IndexTensor(tokenMask.indices.filter { tokenMask[$0] }))
        }
        // An empty or fully masked batch: no token, no loss (the reference's means over nothing are NaN).
        guard rows.shape[0] > 0 else { return (Tensor(0), losses) }
        if c.fracPerSampleEntropy < 1 {
            let keep = Int(Float(rows.shape[0]) * c.fracPerSampleEntropy)
            rows = rows.indexSelect(axis: 0, IndexTensor(Array(rng.permutation(rows.shape[0]).prefix(keep)).sorted()))
        }
        if rows.shape[0] * c.numCodebooks * codebookSize <= Self.denseEntropyLimit {
            // The reference's arithmetic: a softmax over all 2^K codes of `-2·x·c` (float32).
            let distance = rows.matmul(transposed: maybeL2Norm(codebook)) * -2
            let prob = (-distance * inverseTemperature).softmax(axis: -1)
            losses.perSampleEntropy = Self.entropy(prob).mean()
            losses.batchEntropy = Self.entropy(prob.mean(axis: 0)).mean()
        } else {
            // The same entropies factorised over the bits, in double precision: no [n, 2^K] matrix
            // (see FactorizedEntropy), so 65,536 codes need megabytes, not gigabytes.
            let bitScale = c.spherical ? scale / Float(codebookDim).squareRoot() : scale
            (losses.perSampleEntropy, losses.batchEntropy) = FactorizedEntropy.losses(rows, slope: 4 * inverseTemperature * bitScale)
        }
        var entropyAux = losses.perSampleEntropy - c.diversityGamma * losses.batchEntropy
        if c.experimentalSoftplusEntropyLoss {
            // softplus(z) = max(z, 0) + log(1 + e^−|z|), stable for any z
            let z = entropyAux + c.entropyLossOffset
            entropyAux = z.relu() + ((-z.abs()).exp() + 1).log()
        }
        if c.commitmentLossWeight > 0 {
            var diff = (original - quantized.detached()).squared()
            if let tokenMask {
                diff = diff.flattened(from: 0, to: 1).flattened(from: 1).indexSelect(axis: 0, IndexTensor(tokenMask.indices.filter { tokenMask[$0] }))
            }
            losses.commitment = diff.mean()
        }
        return (entropyAux * c.entropyLossWeight + losses.commitment * c.commitmentLossWeight, losses)
    }

    /// Above this many probabilities (`rows · codebooks · 2^K`, 64 MB of float32) the entropy loss is
    /// computed factorised over the bits instead of through the full probability matrix.
    static let denseEntropyLimit = 1 << 24

    /// `Σ −p · log(max(p, 1e-5))` over the last axis.
    static func entropy(_ p: Tensor) -> Tensor { (-p * p.clamped(min: 1e-5).log()).sum(axis: -1) }
}
