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
/// Sequences by default; image maps (`acceptImageFmap`, `[b, dim, h, w]`) and video maps (`accept3dFmap`,
/// `[b, dim, t, h, w]`) pool, interpolate (bi-/trilinear, separably per axis) and refine with a 2-D / 3-D `φ`.
///
/// - Complexity: per level, the VQ's cost on its positions plus O(b · N · dim² · 3^axes) for `φ`.
public final class HierarchicalVQ: Module {
    public struct Configuration: Sendable, Equatable {
        public var dim: Int
        /// Codebook size per level (one entry for all levels).
        public var codebookSizes: [Int]
        /// Positions per level and axis, non-decreasing (a side length applied to every spatial axis).
        public var scales: [Int]
        /// Per-level shapes when the axes differ (`[[2, 3], [4, 6]]`); overrides `scales`.
        public var levelShapes: [[Int]]? = nil
        /// `accept_image_fmap`: `[b, dim, h, w]` maps.
        public var acceptImageFmap = false
        /// `accept_3d_fmap`: `[b, dim, t, h, w]` maps.
        public var accept3dFmap = false
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
            var scales: [Int] = [], shapes: [[Int]]? = nil
            if let list = kw["scales"] as? [Any], list.contains(where: { $0 is [Any] }) {
                shapes = try list.map { item in
                    guard let inner = item as? [Any] else { return [try Self.scaleInt(item)] }
                    return try inner.map(Self.scaleInt)
                }
                scales = shapes!.map { $0.first ?? 0 }
            } else if let list = try k.ints("scales") {
                scales = list
            } else {
                throw ConfigurationError.badValue(module: m, keyword: "scales", reason: "a list of sizes (or of per-axis shapes) is required")
            }
            self.init(dim: try k.required("dim"), codebookSize: sizes.first ?? 0, scales: scales)
            levelShapes = shapes
            codebookSizes = sizes
            sharedCodebook = try k.bool("shared_codebook") ?? true
            channelFirst = try k.bool("channel_first") ?? true
            quantResidual = Float(try k.double("quant_resi") ?? 0.5)
            shareQuantResidual = try k.int("share_quant_resi") ?? 1
            nestedDropout = Float(try k.double("nested_dropout") ?? 0)
            nestedDropoutMinLevels = try k.int("nested_dropout_min_levels") ?? 1
            acceptImageFmap = try k.bool("accept_image_fmap") ?? false
            accept3dFmap = try k.bool("accept_3d_fmap") ?? false
            if let s = try k.int("seed") { seed = UInt64(truncatingIfNeeded: s) }
            var lk: [String: Any] = ["dim": dim, "codebook_size": sizes.first ?? 0, "decay": 0.99, "kmeans_init": true, "threshold_ema_dead_code": 2,
                                     "rotation_trick": false, "sample_codebook_temp": 0.1, "orthogonal_reg_max_codes": 128]
            for key in Self.layerKeywords { if let v = kw[key] { lk[key] = v } }
            layer = try VectorQuantizerConfiguration(referenceKwargs: lk)
            try validate()
        }

        static func scaleInt(_ v: Any) throws -> Int {
            guard let i = Keywords.integer(v) else { throw ConfigurationError.badValue(module: "HierarchicalVQ", keyword: "scales", reason: "expected integers, got \(v)") }
            return i
        }

        /// 1, 2 (image maps) or 3 (video maps).
        public var spatialAxes: Int { accept3dFmap ? 3 : (acceptImageFmap ? 2 : 1) }
        /// Every level's shape, `spatialAxes` sizes each.
        public var shapes: [[Int]] { levelShapes ?? scales.map { Array(repeating: $0, count: spatialAxes) } }
        /// Positions per level (the product of its shape).
        public var positions: [Int] { shapes.map { $0.reduce(1, *) } }

        public func validate() throws {
            let m = "HierarchicalVQ"
            if acceptImageFmap && accept3dFmap { throw ConfigurationError.badValue(module: m, keyword: "accept_3d_fmap", reason: "choose at most one of accept_image_fmap and accept_3d_fmap") }
            let shapes = self.shapes
            guard !shapes.isEmpty, shapes.allSatisfy({ $0.count == spatialAxes && $0.allSatisfy { $0 > 0 && $0 <= 1 << 16 } }) else {
                throw ConfigurationError.badValue(module: m, keyword: "scales", reason: "needs positive sizes, \(spatialAxes) per level, got \(shapes)")
            }
            guard zip(shapes, shapes.dropFirst()).allSatisfy({ zip($0, $1).allSatisfy { $0 <= $1 } }) else {
                throw ConfigurationError.badValue(module: m, keyword: "scales", reason: "must be non-decreasing, got \(shapes)")
            }
            guard codebookSizes.count == 1 || codebookSizes.count == shapes.count else {
                throw ConfigurationError.badValue(module: m, keyword: "codebook_size", reason: "\(codebookSizes.count) sizes for \(shapes.count) levels")
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

    /// The residual refinement after upsampling: `lerp(q, conv(q), ratio)` (the reference's `_Phi`), with a
    /// 1-D, 2-D or 3-D convolution of kernel 3.
    public final class Phi: Layer {
        public let conv: Convolution
        public let ratio: Float
        init(dim: Int, spatialAxes: Int, ratio: Float, rng: inout SeededGenerator) {
            conv = Convolution(dim, dim, kernelSize: Array(repeating: 3, count: spatialAxes), padding: [1], rng: &rng)
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
        /// Per level `[b, s…]` (the level's shape).
        public var indices: [IndexTensor]
        /// The mean of the levels' commitment losses (over the kept levels with nested dropout).
        public var loss: Tensor
        /// The last level kept by nested dropout, when it cut.
        public var cutoff: Int?
        /// What each level quantized, `[b, positions, dim]`.
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
            vqs = try (0..<c.shapes.count).map(quantizer)
        }
        let levels = c.shapes.count
        if c.shareQuantResidual == 1 {
            phiShared = Phi(dim: c.dim, spatialAxes: c.spatialAxes, ratio: c.quantResidual, rng: &rng)
            phiLevels = nil
        } else {
            phiShared = nil
            let k = c.shareQuantResidual <= 0 ? levels : Swift.min(levels, c.shareQuantResidual)
            phiLevels = (0..<k).map { _ in Phi(dim: c.dim, spatialAxes: c.spatialAxes, ratio: c.quantResidual, rng: &rng) }
        }
        self.rng = rng
        super.init()
    }

    public var numLevels: Int { configuration.shapes.count }
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

    /// Applies `matrices[i]` (`[out, in]`) along spatial axis `i` of `[b, c, s…]` (skipping `nil`).
    static func alongAxes(_ t: Tensor, _ matrices: [Tensor?]) -> Tensor {
        var x = t
        let last = t.rank - 1
        for (i, m) in matrices.enumerated() {
            guard let m else { continue }
            let axis = 2 + i
            x = axis == last ? x.matmul(transposed: m) : x.transposed(axis, last).matmul(transposed: m).transposed(axis, last)
        }
        return x
    }

    /// `F.adaptive_avg_pool{1,2,3}d` of `[b, c, s…]` to `shape` (separably per axis).
    static func pool(_ t: Tensor, to shape: [Int]) -> Tensor {
        let full = Array(t.shape.dropFirst(2))
        return alongAxes(t, (0..<shape.count).map { full[$0] == shape[$0] ? nil : poolingMatrix(from: full[$0], to: shape[$0]) })
    }

    private func upsample(_ q: Tensor, to full: [Int], level l: Int) -> Tensor {
        let shape = Array(q.shape.dropFirst(2))
        let up = Self.alongAxes(q, (0..<full.count).map { shape[$0] == full[$0] ? nil : Self.interpolationMatrix(from: shape[$0], to: full[$0]) })
        return phi(level: l)(up)
    }

    /// Quantizes `x` (`[b, dim, s…]` channel-first, or `[b, s…, dim]`; `s…` one axis, or `[h, w]` / `[t, h, w]`
    /// for image / video maps).
    /// - Parameters:
    ///   - input: the sequences or maps, in either layout above.
    ///   - mask: `[b · Πs]` row-major, `true` = real position; masked positions are left out of the pooled
    ///     averages and come back as zeros.
    ///   - sampleCodebookTemperature: passed to every level's quantizer.
    ///   - lens: per-sequence lengths (sequences only), turned into the mask.
    public func callAsFunction(_ input: Tensor, mask: TokenMask? = nil, lens: [Int]? = nil, sampleCodebookTemperature: Float? = nil) -> Output {
        let c = configuration
        let axes = c.spatialAxes
        precondition(mask == nil || lens == nil, "HierarchicalVQ: pass either mask or lens")
        if let lens {
            precondition(axes == 1 && lens.count == input.shape[0], "HierarchicalVQ: lens are for sequences, one per batch row (\(lens.count) for input \(input.shape))")
            let n = c.channelFirst ? input.shape[2] : input.shape[1]
            return self(input, mask: TokenMask((0..<(lens.count * n)).map { $0 % n < lens[$0 / n] }),
                        sampleCodebookTemperature: sampleCodebookTemperature)
        }
        precondition(input.rank == 2 + axes, "HierarchicalVQ(dim \(dim)): input \(input.shape) needs \(axes) spatial axes")
        let x = c.channelFirst ? input : moveLastToFirstFeature(input)
        precondition(x.shape[1] == dim,
                     "HierarchicalVQ(dim \(dim)): input \(input.shape) must be \(c.channelFirst ? "[b, \(dim), s…]" : "[b, s…, \(dim)]")")
        let b = x.shape[0], full = Array(x.shape.dropFirst(2)), n = full.reduce(1, *)
        let mask = mask?.flags(for: [b, n], "HierarchicalVQ (\(b) × \(full) positions)")
        let maskTensor = mask.map { m in Tensor(m.map { $0 ? 1 : 0 }, shape: [b, 1] + full) }
        var residual = x
        var reconstruction = Tensor.zeros(x.shape)
        var cumulative: [Tensor] = [], indices: [IndexTensor] = [], losses: [Tensor] = [], inputs: [Tensor] = []
        for (l, shape) in c.shapes.enumerated() {
            var down: Tensor, levelMask: [Bool]? = nil
            if let maskTensor {
                let pooledMask = Self.pool(maskTensor, to: shape)
                down = Self.pool(residual * maskTensor, to: shape) / pooledMask.clamped(min: 1e-6)
                levelMask = pooledMask.scalars.map { $0 > 0 }
            } else {
                down = Self.pool(residual, to: shape)
            }
            let positions = shape.reduce(1, *)
            let levelInput = down.reshaped([b, dim, positions]).transposed(1, 2)
            inputs.append(levelInput.detached())
            var options = VectorQuantizerOptions()
            options.mask = levelMask.map { TokenMask($0) }
            options.sampleCodebookTemperature = sampleCodebookTemperature
            let out = quantizer(level: l)(levelInput, options: options)
            let q = upsample(out.quantized.transposed(1, 2).reshaped([b, dim] + shape), to: full, level: l)
            reconstruction = reconstruction + q
            residual = residual - q
            cumulative.append(reconstruction)
            indices.append(out.indices.reshaped([b] + shape))
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
        return Output(quantized: c.channelFirst ? reconstruction : moveFirstFeatureToLast(reconstruction), indices: indices, loss: loss,
                      cutoff: cutoff, levelInputs: inputs)
    }

    /// The reconstruction from per-level indices (`[b, s…]` of each level's shape; -1 = nothing), at
    /// `fullShape` (default: the last level's shape), in the module's layout.
    public func getOutput(from indices: [IndexTensor], fullShape: [Int]? = nil) -> Tensor {
        precondition(indices.count == numLevels, "HierarchicalVQ.getOutput: \(indices.count) index tensors for \(numLevels) levels")
        let full = fullShape ?? configuration.shapes.last!
        var total: Tensor? = nil
        for (l, idx) in indices.enumerated() {
            let shape = configuration.shapes[l]
            precondition(Array(idx.shape.dropFirst()) == shape, "HierarchicalVQ.getOutput: level \(l) indices \(idx.shape), expected [b] + \(shape)")
            let b = idx.shape[0]
            let flat = IndexTensor(idx.scalars.map { Swift.max($0, 0) }, shape: [b, shape.reduce(1, *)])
            let valid = Tensor(idx.scalars.map { $0 == -1 ? 0 : 1 }, shape: flat.shape + [1])
            let q = quantizer(level: l).getOutput(from: flat) * valid
            let up = upsample(q.transposed(1, 2).reshaped([b, dim] + shape), to: full, level: l)
            total = total.map { $0 + up } ?? up
        }
        return configuration.channelFirst ? total! : moveFirstFeatureToLast(total!)
    }

    /// ``getOutput(from:fullShape:)`` for sequences.
    public func getOutput(from indices: [IndexTensor], length: Int?) -> Tensor { getOutput(from: indices, fullShape: length.map { [$0] }) }
}

extension HierarchicalVQ: SeededModule {}
