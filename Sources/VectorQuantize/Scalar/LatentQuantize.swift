import Foundation
import VQNN
import VQTensor

/// Latent quantization (Hsu et al., *Disentanglement via Latent Quantization*, NeurIPS 2023,
/// arXiv:2305.18378), the Swift counterpart of the reference's `LatentQuantize`: each latent channel `i`
/// snaps to the nearest of its own `levels[i]` values (`values_per_latent.<i>`, initialised on an even grid
/// in [−0.5, 0.5]); the implicit codebook has `Π levels` codes per codebook.
///
/// Input and output are **channel-first**, `[b, dim, …]`, as in the reference.
///
/// ```swift
/// let lq = try LatentQuantize(.init(levels: [5, 5, 8], dim: 16))
/// let out = lq(x)                    // x [b, 16, n] → out.quantized [b, 16, n], out.indices [b, n]
/// lq.freeze(keys: ["values_per_latent.0"])   // latent 0's values never move
/// ```
///
/// As in the reference, the value tables receive no gradient through the straight-through output (they
/// are parameters, but `z + (ẑ − z).detach()` routes every gradient to `z`); set
/// ``Configuration/valuesReceiveGradients`` to train them (`ẑ + z − z.detach()`).
///
/// - Complexity: O(N · Σ levels) per forward for `N` vectors.
public final class LatentQuantize: Module {
    public struct Configuration: Sendable, Equatable {
        /// Levels per latent channel (`codebookDim` entries).
        public var levels: [Int]
        public var dim: Int
        public var commitmentLossWeight: Float = 0.1
        public var quantizationLossWeight: Float = 0.1
        public var numCodebooks = 1
        public var keepNumCodebooksDim: Bool? = nil
        /// The value tables are parameters (`true`, in the state dict) or fixed.
        public var optimizeValues = true
        /// Our addition: gradients reach the value tables (`ẑ + z − z.detach()`); the reference's output
        /// (`z + (ẑ − z).detach()`) gives them none.
        public var valuesReceiveGradients = false
        public var seed: UInt64 = 0
        public init(levels: [Int], dim: Int) {
            self.levels = levels
            self.dim = dim
        }

        static let keywords: Set<String> = ["levels", "dim", "commitment_loss_weight", "quantization_loss_weight", "num_codebooks",
                                            "codebook_dim", "keep_num_codebooks_dim", "optimize_values", "in_place_codebook_optimizer",
                                            "values_receive_gradients", "seed"]

        public init(referenceKwargs kw: [String: Any]) throws {
            let m = "LatentQuantize"
            for k in kw.keys where !Self.keywords.contains(k) { throw ConfigurationError.unknownKeyword(module: m, keyword: k) }
            let k = Keywords(kw, module: m)
            let codebookDim = try k.int("codebook_dim") ?? -1
            let levels: [Int]
            if let one = try? k.int("levels") {
                guard codebookDim > 0 else {
                    throw ConfigurationError.badValue(module: m, keyword: "codebook_dim", reason: "levels given as one integer need codebook_dim > 0")
                }
                guard codebookDim <= 1 << 16 else { throw ConfigurationError.badValue(module: m, keyword: "codebook_dim", reason: "\(codebookDim) exceeds 65536") }
                levels = Array(repeating: one, count: codebookDim)
            } else if let list = try k.ints("levels") {
                if codebookDim > 0 && codebookDim != list.count {
                    // The reference keeps both and fails at its first forward (its grid has one entry per level).
                    throw ConfigurationError.badValue(module: m, keyword: "codebook_dim", reason: "\(codebookDim) for \(list.count) levels: a list of levels gives one latent per level")
                }
                levels = list
            } else {
                throw ConfigurationError.invalid(module: m, reason: "levels is required")
            }
            self.init(levels: levels, dim: try k.required("dim"))
            if let w = try k.double("commitment_loss_weight") { commitmentLossWeight = Float(w) }
            if let w = try k.double("quantization_loss_weight") { quantizationLossWeight = Float(w) }
            numCodebooks = try k.int("num_codebooks") ?? 1
            keepNumCodebooksDim = try k.bool("keep_num_codebooks_dim")
            optimizeValues = try k.bool("optimize_values") ?? true
            valuesReceiveGradients = try k.bool("values_receive_gradients") ?? false
            if let s = try k.int("seed") { seed = UInt64(truncatingIfNeeded: s) }
            if let v = kw["in_place_codebook_optimizer"], !(v is NSNull) {
                // The reference raises on its first training forward (`optimize_values` is never stored).
                throw ConfigurationError.badValue(module: m, keyword: "in_place_codebook_optimizer",
                                                  reason: "not supported (the reference's own path raises); train the value tables with valuesReceiveGradients and any optimizer")
            }
            try validate()
        }

        public func validate() throws {
            let m = "LatentQuantize"
            guard !levels.isEmpty else { throw ConfigurationError.badValue(module: m, keyword: "levels", reason: "an empty list") }
            guard levels.allSatisfy({ $0 >= 2 }) else { throw ConfigurationError.badValue(module: m, keyword: "levels", reason: "every level must be ≥ 2, got \(levels)") }
            guard numCodebooks >= 1 else { throw ConfigurationError.badValue(module: m, keyword: "num_codebooks", reason: "must be ≥ 1") }
            guard SizeLimit.product(levels) != nil else {
                throw ConfigurationError.badValue(module: m, keyword: "levels", reason: "the codebook size Π levels of \(levels) exceeds \(SizeLimit.maxElements) codes")
            }
            guard SizeLimit.product([dim, levels.count, numCodebooks]) != nil else {
                throw ConfigurationError.badValue(module: m, keyword: "dim", reason: "dim \(dim) × \(levels.count * numCodebooks) projection values exceed \(SizeLimit.maxElements) (or a size is not positive)")
            }
            guard commitmentLossWeight.isFinite && quantizationLossWeight.isFinite else {
                throw ConfigurationError.badValue(module: m, keyword: "commitment_loss_weight", reason: "loss weights must be finite")
            }
        }

        /// The reference's rule: `keep_num_codebooks_dim or num_codebooks > 1` (an explicit `false` with
        /// several codebooks still keeps the axis).
        var keepsCodebooksAxis: Bool { (keepNumCodebooksDim ?? false) || numCodebooks > 1 }
    }

    public let configuration: Configuration
    public let projectIn: Linear?
    public let projectOut: Linear?
    /// One table per latent channel (keys `values_per_latent.<i>`); buffers when `optimizeValues` is off
    /// (then optional in a state dict, which the reference's does not hold).
    public let valuesPerLatent: [Parameter]
    public let levels: [Int]
    public let basis: [Int]
    public let codebookSize: Int
    public var dim: Int { configuration.dim }
    public var codebookDim: Int { levels.count }

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        let c = configuration
        self.configuration = c
        levels = c.levels
        basis = mixedRadixBasis(c.levels)
        codebookSize = SizeLimit.product(c.levels)!
        let effective = c.levels.count * c.numCodebooks
        var rng = SeededGenerator(seed: c.seed ^ 0x1A7E)
        (projectIn, projectOut) = Linear.projections(c.dim, effective, rng: &rng)
        valuesPerLatent = c.levels.map { l in
            let v: [Float] = l % 2 == 1 ? Tensor.linspaceValues(-0.5, 0.5, l) : (0..<l).map { Float($0) / Float(l) - 0.5 }
            let p = Parameter(Tensor(v), kind: c.optimizeValues ? .trainable : .buffer)
            p.isLibraryState = !c.optimizeValues  // a plain list in the reference: not in its state dict
            return p
        }
        super.init()
    }

    /// `Π levels` codes (`implicit_codebook`), `[codebookSize, codebookDim]`: the fixed grid, or the learned tables.
    public var implicitCodebook: Tensor { gridCodes(IndexTensor(Array(0..<codebookSize))) }

    /// Snaps `z [..., codebookDim]` per latent to the nearest value (first on ties), straight-through.
    public func quantize(_ z: Tensor) -> Tensor { nearestValues(z).zhat }

    /// ``quantize(_:)`` and each latent's chosen position in its table (`[…, codebookDim]`, row-major).
    func nearestValues(_ z: Tensor) -> (zhat: Tensor, chosen: [Int]) {
        let d = codebookDim
        precondition(z.shape.last == d, "LatentQuantize.quantize: z \(z.shape) for \(d) latents")
        let rows = z.count / d
        let zs = z.scalars
        let tables = valuesPerLatent.map { $0.value.scalars }
        var chosen = [Int](repeating: 0, count: z.count)
        for r in 0..<rows {
            for i in 0..<d {
                let v = zs[r * d + i], t = tables[i]
                var best = 0, bestDistance = Swift.abs(v - t[0])
                for j in 1..<t.count {
                    let dj = Swift.abs(v - t[j])
                    if dj < bestDistance || (bestDistance.isNaN && !dj.isNaN) { best = j; bestDistance = dj }
                }
                chosen[r * d + i] = best
            }
        }
        // ẑ per latent, gathered from the tables (differentiable in the tables when they take gradients).
        let perLatent = (0..<d).map { i in
            valuesPerLatent[i].value.indexSelect(IndexTensor((0..<rows).map { chosen[$0 * d + i] }))
        }
        let zhat = Tensor.stack(perLatent, axis: -1).reshaped(z.shape)
        if configuration.valuesReceiveGradients { return (zhat + z - z.detached(), chosen) }
        return (z + (zhat - z).detached(), chosen)
    }

    /// Indices of codes on the value grid: `Σ_i (ẑ_i · 2 · ⌊L_i/2⌋ + ⌊L_i/2⌋) · basis_i`, truncated to an
    /// integer as the reference's `.to(int32)`.
    public func codesToIndices(_ zhat: Tensor) -> IndexTensor {
        let d = codebookDim
        precondition(zhat.shape.last == d, "LatentQuantize.codesToIndices: codes \(zhat.shape) for \(d) latents")
        let zs = zhat.scalars
        let hw = levels.map { Float($0 / 2) }, bs = basis.map(Float.init)
        let out = (0..<(zs.count / d)).map { r -> Int in
            var acc: Float = 0
            for i in 0..<d { acc += ((zs[r * d + i] * 2 * hw[i]) + hw[i]) * bs[i] }
            return gridIndex(acc, nonFinite: 0)
        }
        return IndexTensor(out, shape: Array(zhat.shape.dropLast()))
    }

    /// Indices of per-latent table positions `[…, codebookDim]`: `Σ_i position_i · basis_i`.
    func positionIndices(_ chosen: [Int], shape: [Int]) -> IndexTensor {
        let d = codebookDim
        return IndexTensor((0..<(chosen.count / d)).map { r in (0..<d).reduce(0) { $0 + chosen[r * d + $1] * basis[$1] } }, shape: shape)
    }

    /// Codes for indices, `[..., codebookDim]`: on the fixed grid `(level − ⌊L/2⌋) / ⌊L/2⌋ / 2` (the reference's, which
    /// its tables hold unless trained), or the tables' values when they learn (``Configuration/valuesReceiveGradients``).
    func gridCodes(_ indices: IndexTensor) -> Tensor {
        let d = codebookDim
        if configuration.valuesReceiveGradients {
            let tables = valuesPerLatent.map { $0.value.scalars }
            return Tensor(indices.scalars.flatMap { idx in (0..<d).map { tables[$0][(idx / basis[$0]) % levels[$0]] } }, shape: indices.shape + [d])
        }
        var out = [Float](repeating: 0, count: indices.count * d)
        for (r, idx) in indices.scalars.enumerated() {
            for i in 0..<d {
                let hw = Float(levels[i] / 2)
                out[r * d + i] = (Float((idx / basis[i]) % levels[i]) - hw) / hw / 2
            }
        }
        return Tensor(out, shape: indices.shape + [d])
    }

    /// The reference's `indices_to_codes`: grid codes, codebooks merged, projected out, channel-first
    /// (`[b, dim, …]`).
    /// The projection out runs on the channel-first layout, as in the forward — one path, so decoding the
    /// forward's indices gives the forward's output bit for bit.
    public func indicesToCodes(_ indices: IndexTensor) -> Tensor {
        var codes = gridCodes(indices)
        if configuration.keepsCodebooksAxis { codes = codes.flattened(from: -2) }
        guard codes.rank >= 3 else {
            // Indices without a batch axis: decoded as a batch of one.
            return indicesToCodes(indices.reshaped([1] + indices.shape)).squeezed(axis: 0)
        }
        return projectOutChannelFirst(moveLastToFirstFeature(codes))
    }

    /// `project_out` of channel-first latents `[b, d', …]` → `[b, dim, …]` (the identity without a projection).
    func projectOutChannelFirst(_ latents: Tensor) -> Tensor {
        guard let projectOut else { return latents }
        let b = latents.shape[0], positions = Array(latents.shape.dropFirst(2))
        // The positions' count spelt out, not -1: a batch or a sequence of none has no count to infer.
        return projectOut.channelFirst(latents.reshaped([b, latents.shape[1], positions.reduce(1, *)])).reshaped([b, dim] + positions)
    }

    /// The result of a forward: the output, the indices and the weighted loss.
    public struct Output {
        public var quantized: Tensor
        public var indices: IndexTensor
        public var loss: Tensor
    }

    /// Quantizes channel-first `x [b, dim, …]`. Returns the output `[b, dim, …]`, the indices `[b, …]`
    /// (`[b, …, numCodebooks]` when the codebook axis is kept) and the loss: in training
    /// `w_c · mse(x.detach(), out) + w_q · mse(out.detach(), x)`, 0 in evaluation.
    public func callAsFunction(_ x: Tensor) -> Output {
        precondition(x.rank >= 2 && x.shape[1] == dim, "LatentQuantize(dim \(dim)): input \(x.shape) must be [b, \(dim), …] (channel first)")
        let b = x.shape[0], spatial = Array(x.shape.dropFirst(2))
        // The projections run on the channel-first layout; only the narrow latents are moved channel-last.
        let flat = x.reshaped([b, dim, spatial.reduce(1, *)])
        let z = moveFirstFeatureToLast(projectIn?.channelFirst(flat) ?? flat)
        let n = z.shape[1]
        let c = configuration.numCodebooks
        let (codes, chosen) = nearestValues(z.reshaped([b, n, c, codebookDim]))
        // The reference reads the indices back from the codes on the fixed grid; learned tables (ours) are not that
        // grid, so their indices are the chosen positions (and decoding reads the tables).
        var indices = configuration.valuesReceiveGradients ? positionIndices(chosen, shape: [b, n, c]) : codesToIndices(codes)
        let latents = moveLastToFirstFeature(codes.reshaped([b, n, c * codebookDim]))
        let out = projectOutChannelFirst(latents).reshaped(x.shape)
        indices = indices.reshaped([b] + spatial + [c])
        if !configuration.keepsCodebooksAxis { indices = indices.reshaped([b] + spatial) }
        var loss = Tensor(0)
        if isTraining {
            // One pass each, keeping the difference for the backward (mean((a − b)²), accumulated in double).
            let w = configuration
            let commitment = w.commitmentLossWeight != 0 ? x.detached().meanSquaredDifference(out) : Tensor(0)
            let quantization = w.quantizationLossWeight != 0 ? out.detached().meanSquaredDifference(x) : Tensor(0)
            loss = w.commitmentLossWeight * commitment + w.quantizationLossWeight * quantization
        }
        return Output(quantized: out, indices: indices, loss: loss)
    }
}

extension Tensor {
    /// `torch.linspace(start, end, steps)` in float32: `start + i · step` for the first half and
    /// `end − (steps − 1 − i) · step` for the second (PyTorch's symmetric evaluation).
    static func linspaceValues(_ start: Float, _ end: Float, _ steps: Int) -> [Float] {
        guard steps > 1 else { return steps == 1 ? [start] : [] }
        let step = (end - start) / Float(steps - 1)
        let half = steps / 2
        return (0..<steps).map { i in i < half ? start + step * Float(i) : end - step * Float(steps - i - 1) }
    }
}
