import VQNN
import VQTensor

/// Finite scalar quantization (Mentzer et al., *Finite Scalar Quantization: VQ-VAE Made Simple*, 2023):
/// each of `levels.count` channels is bounded and rounded to one of `levels[i]` values; the implicit
/// codebook has `Π levels` codes and nothing to learn or freeze. The symmetry-preserving variant is from
/// Chen et al., 2024 (§3.2).
public final class FSQ: Module {
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
        /// `orthogonal_rotation`: codes are quantized in a random orthogonal basis (`orthogonal_rot`, a buffer)
        /// and rotated back (Huh et al., *Straightening Out the Straight-Through Estimator*, 2023).
        public var orthogonalRotation = false
        /// `return_indices`: with `false` the forward computes no indices (its `indices` are empty, `[0]`; the reference
        /// returns `None`). ``Quantizer/encode(_:)`` still returns them.
        public var returnIndices = true
        public init(levels: [Int]) { self.levels = levels }

        static let keywords: Set<String> = ["levels", "dim", "num_codebooks", "keep_num_codebooks_dim", "channel_first",
                                            "projection_has_bias", "preserve_symmetry", "noise_dropout", "bound_hard_clamp",
                                            "return_indices", "force_quantization_f32", "seed", "orthogonal_rotation", "scale"]

        public init(referenceKwargs kw: [String: Any]) throws {
            try self.init(referenceKwargs: kw, module: "FSQ")
        }

        init(referenceKwargs kw: [String: Any], module: String) throws {
            for k in kw.keys where !Self.keywords.contains(k) { throw ConfigurationError.unknownKeyword(module: module, keyword: k) }
            let k = Keywords(kw, module: module)
            guard let levels = try k.ints("levels") else { throw ConfigurationError.invalid(module: module, reason: "levels is required") }
            self.init(levels: levels)
            dim = try k.int("dim")
            numCodebooks = try k.int("num_codebooks") ?? 1
            keepNumCodebooksDim = try k.bool("keep_num_codebooks_dim")
            channelFirst = try k.bool("channel_first") ?? false
            projectionHasBias = try k.bool("projection_has_bias") ?? true
            preserveSymmetry = try k.bool("preserve_symmetry") ?? false
            noiseDropout = Float(try k.double("noise_dropout") ?? 0)
            boundHardClamp = try k.bool("bound_hard_clamp") ?? false
            orthogonalRotation = try k.bool("orthogonal_rotation") ?? false
            returnIndices = try k.bool("return_indices") ?? true
            // `scale`: the reference (1.32.0) stores it and never reads it; a number (or null) is accepted so that
            // its configurations load, and has no effect here either.
            _ = try k.double("scale")
            if let s = try k.int("seed") { seed = UInt64(truncatingIfNeeded: s) }
            try validate(module: module)
        }

        /// The checks of both paths (typed and keyword).
        public func validate() throws { try validate(module: "FSQ") }

        func validate(module: String) throws {
            if levels.isEmpty || numCodebooks < 1 {
                throw ConfigurationError.badValue(module: module, keyword: levels.isEmpty ? "levels" : "num_codebooks", reason: levels.isEmpty ? "an empty list" : "must be ≥ 1")
            }
            if levels.contains(where: { $0 < 2 }) { throw ConfigurationError.badValue(module: module, keyword: "levels", reason: "every level must be ≥ 2") }
            if numCodebooks > 1 && keepNumCodebooksDim == false {
                throw ConfigurationError.badValue(module: module, keyword: "keep_num_codebooks_dim", reason: "false needs num_codebooks 1 (got \(numCodebooks))")
            }
            if let d = dim, SizeLimit.product([d, levels.count, numCodebooks]) == nil {
                throw ConfigurationError.badValue(module: module, keyword: "dim", reason: "dim \(d) × \(levels.count * numCodebooks) projection values exceed \(SizeLimit.maxElements) (or a size is not positive)")
            }
            if SizeLimit.product(levels) == nil {
                throw ConfigurationError.badValue(module: module, keyword: "levels", reason: "the codebook size Π levels of \(levels) exceeds \(SizeLimit.maxElements) codes")
            }
            if levels.contains(2) && !preserveSymmetry {
                throw ConfigurationError.badValue(module: module, keyword: "levels", reason: "levels of 2 need preserve_symmetry")
            }
            if !(noiseDropout >= 0 && noiseDropout <= 1) {
                throw ConfigurationError.badValue(module: module, keyword: "noise_dropout", reason: "must be in [0, 1]")
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
    /// `[d, d]` (key `orthogonal_rot`) with `orthogonalRotation`.
    public let orthogonalRot: Parameter?
    var rng: SeededGenerator

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        levels = c.levels
        basis = mixedRadixBasis(c.levels)
        guard let size = SizeLimit.product(c.levels) else {
            preconditionFailure("FSQ: the codebook size Π levels of \(c.levels) exceeds \(SizeLimit.maxElements) codes")
        }
        codebookSize = size
        let effective = c.levels.count * c.numCodebooks
        dim = c.dim ?? effective
        var rng = SeededGenerator(seed: c.seed ^ 0xF5C)
        (projectIn, projectOut) = Linear.projections(dim, effective, bias: c.projectionHasBias, rng: &rng)
        orthogonalRot = c.orthogonalRotation ? Parameter(Tensor.randomOrthogonal(c.levels.count, using: &rng), kind: .buffer) : nil
        self.rng = rng
        super.init()
    }

    public var codebookDim: Int { levels.count }

    /// What the rounding sees: `project_in(z)` per codebook `[b, n, c, d]`, rotated with `orthogonalRotation`.
    func quantizerInput(_ z: Tensor, b: Int, n: Int) -> Tensor {
        let split = (projectIn.map { $0(z) } ?? z).reshaped([b, n, configuration.numCodebooks, codebookDim])
        return orthogonalRot.map { split.matmul($0.value) } ?? split
    }
    var keepCodebooksDim: Bool { configuration.keepNumCodebooksDim ?? (configuration.numCodebooks > 1) }
    private func perLevel(_ f: (Int) -> Float) -> Tensor { Tensor(levels.map(f)) }

    /// The bound's per-level constants, shared by the composed, the one-operation and the fused paths:
    /// `halfL = (L − 1)(1 + 10⁻³)/2`, `offset` (½ for an even L), `shift = atanh(offset / halfL)` (the ratio itself
    /// with the hard clamp) and the half width `hw = ⌊L/2⌋`.
    private var boundConstants: (halfL: [Float], offset: [Float], shift: [Float], hw: [Float]) {
        let halfL = levels.map { Float($0 - 1) * Float(1 + 1e-3 as Double) / 2 }
        let offset: [Float] = levels.map { $0 % 2 == 0 ? 0.5 : 0 }
        let hard = configuration.boundHardClamp
        let shift = zip(offset, halfL).map { hard ? $0 / $1 : atanhFloat($0 / $1) }
        return (halfL, offset, shift, levels.map { Float($0 / 2) })
    }

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
        let k = boundConstants
        let (halfL, offset) = (Tensor(k.halfL), Tensor(k.offset))
        let inner = z + Tensor(k.shift)
        let bounded = (hard ? inner.clamped(min: -1, max: 1) : inner.tanh()) * halfL - offset
        let rounded = bounded + (bounded.rounded() - bounded).detached()
        return rounded / Tensor(k.hw)
    }

    /// ``quantize(_:)`` and ``codesToIndices(_:)`` for an input with gradients and the default bound (tanh, no
    /// symmetry): the values from the fused grid pass, the gradient as one operation — the composed chain's
    /// `((g / hw) · halfL) · (1 − y²)` with `y = tanh(z + shift)`, in the same order per element, so values and
    /// gradients are bit-identical to ``quantize(_:)`` (straight-through rounding: Mentzer et al., 2023, §3).
    func quantizeWithGradient(_ z: Tensor) -> (codes: Tensor, indices: IndexTensor) {
        precondition(!configuration.preserveSymmetry && !configuration.boundHardClamp, "FSQ.quantizeWithGradient: default bound only")
        let (values, indices) = quantizeWithoutGradient(z.detached())
        let k = boundConstants
        let (halfL, hw) = (Tensor(k.halfL), Tensor(k.hw))
        let y = withoutGradient { (z.detached() + Tensor(k.shift)).tanh() }
        let codes = Tensor.custom(values, input: z) { g in ((g / hw) * halfL) * (1 - y * y) }
        return (codes, indices)
    }

    /// ``quantize(_:)`` and ``codesToIndices(_:)`` fused into one pass for inputs without gradients: the
    /// same operations in the same order per element, so the results are bit-identical.
    func quantizeWithoutGradient(_ z: Tensor) -> (codes: Tensor, indices: IndexTensor) {
        let d = codebookDim, rows = z.count / d
        let sym = configuration.preserveSymmetry, hard = configuration.boundHardClamp
        let (halfL, offset, shift, hw) = boundConstants
        let lm1 = levels.map { Float($0 - 1) }, scale = levels.map { 2 / Float($0 - 1) }
        let basisF = basis.map(Float.init)
        // Per-channel constants, packed: halfL, offset, shift, hw, lm1, scale, basis.
        var k = [Float](repeating: 0, count: 7 * d)
        for j in 0..<d {
            (k[j], k[d + j], k[2 * d + j], k[3 * d + j]) = (halfL[j], offset[j], shift[j], hw[j])
            (k[4 * d + j], k[5 * d + j], k[6 * d + j]) = (lm1[j], scale[j], basisF[j])
        }
        // Both buffers are written in full below (codes: the shifted input, then the grid).
        var codes = [Float](unsafeUninitializedCapacity: z.count) { _, n in n = z.count }
        var indices = [Int](unsafeUninitializedCapacity: rows) { _, n in n = rows }
        z.withUnsafeScalars { pz in
            codes.withUnsafeMutableBufferPointer { pc in
                indices.withUnsafeMutableBufferPointer { pi in
                    // The kernel writes 64-bit indices (Int is 64-bit on every supported platform).
                    pi.withMemoryRebound(to: Int64.self) { pi64 in
                    k.withUnsafeBufferPointer { pk in
                        nonisolated(unsafe) let (zs, cs, ix64, kk) = (pz.baseAddress!, pc.baseAddress!, pi64.baseAddress!, pk.baseAddress!)
                        Threads.forRanges(rows, minChunk: 4096) { range in
                            let (hl, off, sh, h, l1, sc, bs) = (kk, kk + d, kk + 2 * d, kk + 3 * d, kk + 4 * d, kk + 5 * d, kk + 6 * d)
                            // The bounded input of the whole chunk first (vectorised tanh), then the grid.
                            if sym {
                                (cs + range.lowerBound * d).update(from: zs + range.lowerBound * d, count: range.count * d)
                            } else {
                                Self.addShift(zs + range.lowerBound * d, sh, into: cs + range.lowerBound * d, count: range.count * d, d: d)
                            }
                            let chunk = cs + range.lowerBound * d, count = range.count * d
                            if hard {
                                for i in 0..<count { chunk[i] = Swift.min(Swift.max(chunk[i], -1), 1) }
                            } else {
                                tanhInPlace(chunk, count: count)
                            }
                            if !sym {
                                fsqGridInPlace(chunk, rows: range.count, d: d, halfL: hl, offset: off, halfWidth: h, basis: bs, indices: ix64 + range.lowerBound)
                                return
                            }
                            for r in range {
                                var acc: Float = 0
                                let cr = cs + r * d
                                for j in 0..<d {
                                    let t = cr[j]
                                    let q: Float, shifted: Float
                                    if sym {
                                        let bracket = (l1[j] * (t + 1)) / 2 + 0.5
                                        let floored = bracket + (bracket.rounded(.down) - bracket)
                                        q = sc[j] * floored - 1
                                        shifted = (q + 1) / sc[j]
                                    } else {
                                        let bounded = t * hl[j] - off[j]
                                        let rounded = bounded + (bounded.rounded(.toNearestOrEven) - bounded)
                                        q = rounded / h[j]
                                        shifted = q * h[j] + h[j]
                                    }
                                    cr[j] = q
                                    acc += shifted * bs[j]
                                }
                                ix64[r] = acc.isNaN ? -1 : Int64(acc.rounded(.toNearestOrEven))
                            }
                        }
                    }
                    }
                }
            }
        }
        return (Tensor(codes, shape: z.shape), IndexTensor(indices, shape: Array(z.shape.dropLast())))
    }

    /// `dst[i] = src[i] + shift[i mod d]` over contiguous rows of `d`: sixteen values a step when `d` divides 16 (the
    /// shifts repeated across the vector), the same additions as row by row.
    static func addShift(_ src: UnsafePointer<Float>, _ shift: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>,
                         count: Int, d: Int) {
        var i = 0
        if d <= 16 && 16 % d == 0 {
            var pattern = SIMD16<Float>()
            for q in 0..<16 { pattern[q] = shift[q % d] }
            let (rs, rd) = (UnsafeRawPointer(src), UnsafeMutableRawPointer(dst))
            while i + 16 <= count {
                rd.storeBytes(of: rs.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) + pattern, toByteOffset: i * 4,
                              as: SIMD16<Float>.self)
                i += 16
            }
        }
        while i < count { dst[i] = src[i] + shift[i % d]; i += 1 }
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
        return IndexTensor(s.scalars.map { gridIndex($0, nonFinite: -1) }, shape: s.shape)   // a row with NaN gets -1
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

    /// The codes the forward outputs for indices (before the projection out): the grid's codes, rotated back
    /// with `orthogonalRotation` — `[…, d]`. One place for ``indicesToCodes(_:)`` and the residual stacks' decoding.
    func forwardCodes(_ indices: IndexTensor) -> Tensor {
        let codes = rawCodes(indices)
        return orthogonalRot.map { codes.matmul(transposed: $0.value) } ?? codes
    }

    /// All `Π levels` codes, `[codebookSize, d]`.
    public var implicitCodebook: Tensor { rawCodes(IndexTensor(Array(0..<codebookSize))) }

    /// The inverse of the forward's indices: codes (codebooks merged), projected out, channel-first when
    /// the module is (the reference's `indices_to_codes`).
    public func indicesToCodes(_ indices: IndexTensor) -> Tensor {
        let isImage = indices.rank >= 3 + (keepCodebooksDim ? 1 : 0)
        var codes = forwardCodes(indices)
        if keepCodebooksDim { codes = codes.flattened(from: -2) }
        if let projectOut { codes = projectOut(codes) }
        if isImage || configuration.channelFirst { codes = moveLastToFirstFeature(codes) }
        return codes
    }

    /// The result of a forward: the projected output, the indices and the codes on the grid.
    public struct Output {
        public var quantized: Tensor
        public var indices: IndexTensor
        public var codes: Tensor
    }

    /// Quantizes `z` (`[b, n, dim]`, or channel-first / image `[b, dim, …]`). Returns the projected output,
    /// the indices (`[b, n]`, or `[b, n, c]` with several codebooks) and the codes on the grid `[b, n, c·d]`
    /// (before the rotation back of `orthogonalRotation` and the projection out).
    public func callAsFunction(_ input: Tensor) -> Output {
        quantized(input, indices: configuration.returnIndices)
    }

    /// The forward, with indices or without (`return_indices`; ``Quantizer/encode(_:)`` always asks for them).
    func quantized(_ input: Tensor, indices wantIndices: Bool) -> Output {
        var z = input
        let moveChannel = input.rank >= 4 || configuration.channelFirst
        var spatial: [Int] = []
        if moveChannel {
            spatial = Array(input.shape.dropFirst(2))
            z = moveFirstFeatureToLast(z).flattened(from: 1, to: -2)
        }
        precondition(z.rank == 3 && z.shape[2] == dim, "FSQ(dim \(dim)): input shape \(input.shape)")
        let (b, n) = (z.shape[0], z.shape[1])
        z = quantizerInput(z, b: b, n: n)
        var codes: Tensor, indices: IndexTensor
        if z.requiresGradient && GradMode.isEnabled && !configuration.preserveSymmetry && !configuration.boundHardClamp {
            (codes, indices) = quantizeWithGradient(z)
        } else if z.requiresGradient && GradMode.isEnabled {
            codes = quantize(z)
            indices = wantIndices ? codesToIndices(codes) : IndexTensor([], shape: [0])
        } else {
            (codes, indices) = quantizeWithoutGradient(z)
        }
        if isTraining && configuration.noiseDropout > 0 {
            let shape = codes.shape
            let mask = Tensor((0..<codes.count).map { _ in rng.nextUniform() < configuration.noiseDropout ? 1 : 0 }, shape: shape)
            let offset = Tensor.randomUniform(shape, low: -0.5, high: 0.5, using: &rng)
            codes = Tensor.select(mask, codes + offset, codes).clamped(min: -1, max: 1)
        }
        let grid = codes.flattened(from: 2)
        if let orthogonalRot { codes = codes.matmul(transposed: orthogonalRot.value) }
        codes = codes.flattened(from: 2)
        var out = projectOut.map { $0(codes) } ?? codes
        guard wantIndices else {
            if moveChannel { out = moveLastToFirstFeature(out.reshaped([b] + spatial + [dim])) }
            return Output(quantized: out, indices: IndexTensor([], shape: [0]), codes: grid)
        }
        if moveChannel {
            out = moveLastToFirstFeature(out.reshaped([b] + spatial + [dim]))
            indices = indices.reshaped([b] + spatial + [configuration.numCodebooks])
        }
        if !keepCodebooksDim { indices = indices.reshaped(Array(indices.shape.dropLast())) }
        return Output(quantized: out, indices: indices, codes: grid)
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


#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
func atanhFloat(_ x: Float) -> Float { atanhf(x) }
