import VQNN
import VQTensor

/// Multi-scale residual quantization of sequences (the reference's `HierarchicalVQ`, after the VAR tokenizer
/// of Tian et al., *Visual Autoregressive Modeling*, 2024): level `l` average-pools the residual to
/// `scales[l]` positions, quantizes them with a ``VectorQuantizer`` (one shared, or one per level),
/// interpolates back to full length, refines with a residual convolution `φ`, and subtracts.
///
/// ```swift
/// let hvq = try HierarchicalVQ(referenceKwargs: ["dim": 16, "codebook_size": 32, "scales": [1, 3, 8, 24]])
/// let out = hvq(x)              // x [b, 16, 24] (channel first) → out.indices: [b, 1], [b, 3], [b, 8], [b, 24]
/// hvq.quantizer(level: 0).codebook.freezeAllCodes()   // the coarse codes stay, finer levels learn
/// ```
///
/// One spatial axis (sequences); `accept_image_fmap` / `accept_3d_fmap` are refused for now.
///
/// - Complexity: per level, the VQ's cost on `scales[l]` positions plus O(b · n · dim² · 3) for `φ`.
public final class HierarchicalVQ: Module {
    public struct Configuration: Sendable, Equatable {
        public var dim: Int
        /// Codebook size per level (one entry for all levels).
        public var codebookSizes: [Int]
        /// Positions per level, non-decreasing.
        public var scales: [Int]
        public var sharedCodebook = true
        public var channelFirst = true
        /// `quant_resi`: φ(q) = lerp(q, conv(q), |quantResidual|); 0 disables φ.
        public var quantResidual: Float = 0.5
        /// `share_quant_resi`: 1 = one φ for all levels; k > 1 = k φ spread over the levels; ≤ 0 = one per level.
        public var shareQuantResidual = 1
        public var nestedDropout: Float = 0
        public var nestedDropoutMinLevels = 1
        /// The levels' quantizer (its `dim` and `codebookSize` are set per level). The reference's defaults
        /// here: decay 0.99, k-means init, dead-code threshold 2, no rotation trick, sampling temperature 0.1.
        public var layer: VectorQuantizerConfiguration
        public var seed: UInt64 = 0

        public init(dim: Int, codebookSize: Int, scales: [Int]) {
            self.dim = dim
            codebookSizes = [codebookSize]
            self.scales = scales
            var l = VectorQuantizerConfiguration(dim: dim, codebookSize: codebookSize)
            l.decay = 0.99
            l.kmeansInit = true
            l.thresholdEMADeadCode = 2
            l.rotationTrick = false
            l.sampleCodebookTemperature = 0.1
            l.orthogonalRegMaxCodes = 128
            layer = l
        }

        static let own: Set<String> = ["dim", "codebook_size", "scales", "shared_codebook", "channel_first", "quant_resi", "share_quant_resi",
                                       "nested_dropout", "nested_dropout_min_levels", "accept_image_fmap", "accept_3d_fmap", "sync_codebook", "seed"]
        static let layerKeywords: Set<String> = ["decay", "commitment_weight", "rotation_trick", "kmeans_init", "kmeans_iters", "threshold_ema_dead_code",
                                                 "stochastic_sample_codes", "sample_codebook_temp", "orthogonal_reg_weight", "orthogonal_reg_max_codes",
                                                 "orthogonal_reg_active_codes_only"]

        public init(referenceKwargs kw: [String: Any]) throws {
            let m = "HierarchicalVQ"
            for k in kw.keys where !Self.own.contains(k) && !Self.layerKeywords.contains(k) { throw ConfigurationError.unknownKeyword(module: m, keyword: k) }
            let k = Keywords(kw, module: m)
            let sizes: [Int]
            if let one = try? k.int("codebook_size") { sizes = [one] } else if let list = try k.ints("codebook_size") { sizes = list } else {
                throw ConfigurationError.invalid(module: m, reason: "codebook_size is required")
            }
            guard let scales = try k.ints("scales") else {
                throw ConfigurationError.badValue(module: m, keyword: "scales", reason: "a list of integers is required (one spatial axis)")
            }
            self.init(dim: try k.required("dim"), codebookSize: sizes.first ?? 0, scales: scales)
            codebookSizes = sizes
            sharedCodebook = try k.bool("shared_codebook") ?? true
            channelFirst = try k.bool("channel_first") ?? true
            quantResidual = Float(try k.double("quant_resi") ?? 0.5)
            shareQuantResidual = try k.int("share_quant_resi") ?? 1
            nestedDropout = Float(try k.double("nested_dropout") ?? 0)
            nestedDropoutMinLevels = try k.int("nested_dropout_min_levels") ?? 1
            if try k.bool("accept_image_fmap") == true || k.bool("accept_3d_fmap") == true {
                throw ConfigurationError.badValue(module: m, keyword: (try? k.bool("accept_image_fmap")) == true ? "accept_image_fmap" : "accept_3d_fmap",
                                                  reason: "image and video maps are not supported yet (sequences only)")
            }
            if let s = try k.int("seed") { seed = UInt64(truncatingIfNeeded: s) }
            var lk: [String: Any] = ["dim": dim, "codebook_size": sizes.first ?? 0, "decay": 0.99, "kmeans_init": true, "threshold_ema_dead_code": 2,
                                     "rotation_trick": false, "sample_codebook_temp": 0.1, "orthogonal_reg_max_codes": 128]
            for key in Self.layerKeywords { if let v = kw[key] { lk[key] = v } }
            layer = try VectorQuantizerConfiguration(referenceKwargs: lk)
            try validate()
        }

        public func validate() throws {
            let m = "HierarchicalVQ"
            guard !scales.isEmpty, scales.allSatisfy({ $0 > 0 }) else { throw ConfigurationError.badValue(module: m, keyword: "scales", reason: "needs positive entries, got \(scales)") }
            guard zip(scales, scales.dropFirst()).allSatisfy({ $0 <= $1 }) else { throw ConfigurationError.badValue(module: m, keyword: "scales", reason: "must be non-decreasing, got \(scales)") }
            guard codebookSizes.count == 1 || codebookSizes.count == scales.count else {
                throw ConfigurationError.badValue(module: m, keyword: "codebook_size", reason: "\(codebookSizes.count) sizes for \(scales.count) levels")
            }
            guard codebookSizes.allSatisfy({ $0 > 0 && $0 <= 1 << 30 }) else { throw ConfigurationError.badValue(module: m, keyword: "codebook_size", reason: "sizes must be in 1…2^30") }
            if sharedCodebook && Set(codebookSizes).count > 1 {
                throw ConfigurationError.badValue(module: m, keyword: "shared_codebook", reason: "a shared codebook needs one codebook size, got \(codebookSizes)")
            }
            guard (0...1).contains(nestedDropout) else { throw ConfigurationError.badValue(module: m, keyword: "nested_dropout", reason: "must be in [0, 1]") }
            guard nestedDropoutMinLevels >= 1 else { throw ConfigurationError.badValue(module: m, keyword: "nested_dropout_min_levels", reason: "must be ≥ 1") }
            guard dim > 0 && dim <= 1 << 16 else { throw ConfigurationError.badValue(module: m, keyword: "dim", reason: "must be in 1…65536") }
            guard quantResidual.isFinite else { throw ConfigurationError.badValue(module: m, keyword: "quant_resi", reason: "must be finite") }
        }

        func size(ofLevel l: Int) -> Int { codebookSizes.count == 1 ? codebookSizes[0] : codebookSizes[l] }
    }

    /// The residual refinement after upsampling: `lerp(q, conv(q), ratio)` (the reference's `_Phi`).
    public final class Phi: Layer {
        public let conv: Conv1d
        public let ratio: Float
        init(dim: Int, ratio: Float, rng: inout SeededGenerator) {
            conv = Conv1d(dim, dim, kernelSize: 3, padding: 1, rng: &rng)
            self.ratio = Swift.abs(ratio)
        }
        public override func callAsFunction(_ q: Tensor) -> Tensor {
            if ratio <= 1e-8 { return q }
            let c = conv(q)
            // torch.lerp: a + w·(b − a) below w = 0.5, b − (b − a)·(1 − w) from there.
            return ratio < 0.5 ? q + ratio * (c - q) : c - (c - q) * (1 - ratio)
        }
    }

    /// The result of a forward pass.
    public struct Output {
        public var quantized: Tensor
        /// Per level `[b, scales[l]]`.
        public var indices: [IndexTensor]
        /// The mean of the levels' commitment losses (over the kept levels with nested dropout).
        public var loss: Tensor
        /// The last level kept by nested dropout, when it cut.
        public var cutoff: Int?
        /// What each level quantized, `[b, scales[l], dim]`.
        public var levelInputs: [Tensor]
    }

    public let configuration: Configuration
    /// The shared quantizer (key `vq`), or one per level (`vqs.<l>`).
    public let vq: VectorQuantizer?
    public let vqs: [VectorQuantizer]?
    public let phiShared: Phi?
    public let phiLevels: [Phi]?
    var rng: SeededGenerator

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        var rng = SeededGenerator(seed: c.seed ^ 0x4E7)
        func quantizer(_ l: Int) throws -> VectorQuantizer {
            var lc = c.layer
            lc.dim = c.dim
            lc.codebookSize = c.size(ofLevel: l)
            lc.channelLast = true
            lc.seed = c.layer.seed &+ UInt64(l) &* 0x9E37
            return try VectorQuantizer(lc)
        }
        if c.sharedCodebook {
            vq = try quantizer(0)
            vqs = nil
        } else {
            vq = nil
            vqs = try (0..<c.scales.count).map(quantizer)
        }
        let levels = c.scales.count
        if c.shareQuantResidual == 1 {
            phiShared = Phi(dim: c.dim, ratio: c.quantResidual, rng: &rng)
            phiLevels = nil
        } else {
            phiShared = nil
            let k = c.shareQuantResidual <= 0 ? levels : Swift.min(levels, c.shareQuantResidual)
            phiLevels = (0..<k).map { _ in Phi(dim: c.dim, ratio: c.quantResidual, rng: &rng) }
        }
        self.rng = rng
        super.init()
    }

    public convenience init(referenceKwargs kw: [String: Any]) throws { try self.init(Configuration(referenceKwargs: kw)) }

    public var numLevels: Int { configuration.scales.count }
    public var dim: Int { configuration.dim }

    /// The quantizer of level `l` (the shared one for every level with a shared codebook).
    public func quantizer(level l: Int) -> VectorQuantizer { vq ?? vqs![l] }

    func phi(level l: Int) -> Phi {
        if let phiShared { return phiShared }
        let k = phiLevels!.count
        if k == 1 { return phiLevels![0] }
        let position = Double(l) / Double(Swift.max(numLevels - 1, 1)) * Double(k - 1)
        return phiLevels![Int(position.rounded(.toNearestOrEven))]
    }

    /// `[s, n]` weights of `F.adaptive_avg_pool1d` from `n` to `s` positions: row `i` averages
    /// `⌊i·n/s⌋ ..< ⌈(i+1)·n/s⌉`.
    static func poolingMatrix(from n: Int, to s: Int) -> Tensor {
        var w = [Float](repeating: 0, count: s * n)
        for i in 0..<s {
            let start = (i * n) / s, end = ((i + 1) * n + s - 1) / s
            for j in start..<end { w[i * n + j] = 1 / Float(end - start) }
        }
        return Tensor(w, shape: [s, n])
    }

    /// `[n, s]` weights of `F.interpolate(mode: "linear", align_corners: false)` from `s` to `n` positions,
    /// with PyTorch's float32 source index `max(0, (s/n)·(i + 0.5) − 0.5)`.
    static func interpolationMatrix(from s: Int, to n: Int) -> Tensor {
        var w = [Float](repeating: 0, count: n * s)
        let scale = Float(s) / Float(n)
        for i in 0..<n {
            let source = Swift.max(scale * (Float(i) + 0.5) - 0.5, 0)
            let i0 = Swift.min(Int(source.rounded(.down)), s - 1)
            let lambda = Swift.min(Swift.max(source - Float(i0), 0), 1)
            let i1 = i0 + (i0 < s - 1 ? 1 : 0)
            w[i * s + i0] += 1 - lambda
            w[i * s + i1] += lambda
        }
        return Tensor(w, shape: [n, s])
    }

    private func upsample(_ q: Tensor, to n: Int, level l: Int) -> Tensor {
        let s = q.shape[2]
        let full = s == n ? q : q.matmul(transposed: Self.interpolationMatrix(from: s, to: n))
        return phi(level: l)(full)
    }

    /// Quantizes `x` (`[b, dim, n]` channel-first, or `[b, n, dim]`).
    /// - Parameters:
    ///   - mask: `[b · n]` row-major, `true` = real position; masked positions are left out of the pooled
    ///     averages and come back as zeros.
    ///   - sampleCodebookTemperature: passed to every level's quantizer.
    public func callAsFunction(_ input: Tensor, mask: [Bool]? = nil, sampleCodebookTemperature: Float? = nil) -> Output {
        let c = configuration
        let x = c.channelFirst ? input : input.transposed(1, 2)
        precondition(x.rank == 3 && x.shape[1] == dim,
                     "HierarchicalVQ(dim \(dim)): input \(input.shape) must be \(c.channelFirst ? "[b, \(dim), n]" : "[b, n, \(dim)]")")
        let (b, n) = (x.shape[0], x.shape[2])
        precondition(mask == nil || mask!.count == b * n, "HierarchicalVQ: mask of \(mask!.count) for \(b) × \(n) positions")
        let maskTensor = mask.map { m in Tensor(m.map { $0 ? 1 : 0 }, shape: [b, 1, n]) }
        var residual = x
        var reconstruction = Tensor.zeros(x.shape)
        var cumulative: [Tensor] = [], indices: [IndexTensor] = [], losses: [Tensor] = [], inputs: [Tensor] = []
        for (l, s) in c.scales.enumerated() {
            let pool = Self.poolingMatrix(from: n, to: s)
            var down: Tensor, levelMask: [Bool]? = nil
            if let maskTensor {
                let pooledMask = maskTensor.matmul(transposed: pool)
                down = (residual * maskTensor).matmul(transposed: pool) / pooledMask.clamped(min: 1e-6)
                levelMask = pooledMask.scalars.map { $0 > 0 }
            } else {
                down = residual.matmul(transposed: pool)
            }
            let levelInput = down.transposed(1, 2)
            inputs.append(levelInput.detached())
            var options = VectorQuantizerOptions()
            options.mask = levelMask
            options.sampleCodebookTemperature = sampleCodebookTemperature
            let out = quantizer(level: l)(levelInput, options: options)
            let q = upsample(out.quantized.transposed(1, 2), to: n, level: l)
            reconstruction = reconstruction + q
            residual = residual - q
            cumulative.append(reconstruction)
            indices.append(out.indices)
            losses.append(out.loss)
        }
        var kept = numLevels
        var cutoff: Int? = nil
        if isTraining && c.nestedDropout > 0 && numLevels > 1 && c.nestedDropoutMinLevels < numLevels,
           rng.nextUniform() < c.nestedDropout {
            let lo = c.nestedDropoutMinLevels - 1, hi = numLevels - 1
            let cut = lo + Int(rng.next() % UInt64(hi - lo))
            cutoff = cut
            reconstruction = cumulative[cut]
            kept = cut + 1
        }
        let loss = Tensor.stack(Array(losses.prefix(kept)), axis: 0).mean()
        if let maskTensor { reconstruction = reconstruction * maskTensor }
        return Output(quantized: c.channelFirst ? reconstruction : reconstruction.transposed(1, 2), indices: indices, loss: loss,
                      cutoff: cutoff, levelInputs: inputs)
    }

    /// The reconstruction from per-level indices (`[b, scales[l]]`; -1 = nothing), at `length` positions
    /// (default: the last level's), in the module's layout.
    public func getOutput(from indices: [IndexTensor], length: Int? = nil) -> Tensor {
        precondition(indices.count == numLevels, "HierarchicalVQ.getOutput: \(indices.count) index tensors for \(numLevels) levels")
        let n = length ?? configuration.scales.last!
        var total: Tensor? = nil
        for (l, idx) in indices.enumerated() {
            precondition(idx.rank == 2 && idx.shape[1] == configuration.scales[l], "HierarchicalVQ.getOutput: level \(l) indices \(idx.shape), expected [b, \(configuration.scales[l])]")
            let valid = Tensor(idx.scalars.map { $0 == -1 ? 0 : 1 }, shape: idx.shape + [1])
            let q = quantizer(level: l).getOutput(from: IndexTensor(idx.scalars.map { Swift.max($0, 0) }, shape: idx.shape)) * valid
            let up = upsample(q.transposed(1, 2), to: n, level: l)
            total = total.map { $0 + up } ?? up
        }
        return configuration.channelFirst ? total! : total!.transposed(1, 2)
    }
}

extension HierarchicalVQ: SeededModule {}
