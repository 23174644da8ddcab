import VQNN
import VQTensor

/// The EMA codebook update, with the reference's arithmetic for every code that is not frozen and
/// no write at all to a frozen one.
///
/// Per step, for code `c` of codebook `h` with lerp weight `w = float(1 − decay) · weight_c`
/// (torch's CPU `lerp`, bit-exact): `cluster_size ← lerp(cluster_size, count, w)`,
/// `embed_avg ← lerp(embed_avg, sum, w)`; then `embed = embed_avg / s` with the Laplace-smoothed
/// `s_c = (n_c + ε) / (Σn + C·ε) · Σn` — written only for the codes that changed and are not frozen
/// (the reference rewrites every row, so its "frozen" rows drift by ~1e-6 relative per step).
extension Codebook {
    /// The reference's `l2norm` epsilon for cosine codebooks and the vectors they see.
    static let cosineEps: Float = 1e-6

    /// Counts `[h, c]` and sums `[h, c, d]` of the rows of `flatten [h, n, d]` assigned by `indices [h, n]`,
    /// over rows where `valid` (flattened `[h · n]`) is true. Sums accumulate in double precision and are
    /// rounded once, so they hardly depend on the order of the rows (or on how a batch is sharded).
    ///
    /// Rows whose values are so large that the statistics built from them would overflow single precision
    /// downstream (a sum beyond 2⁶⁰, or not finite) are left out, as non-finite rows are, and logged: such rows
    /// (any value beyond 2⁵⁰) would otherwise turn codes non-finite and, through the subspace re-projection,
    /// reach frozen coordinates. The check reads the sums, not the batch, so ordinary batches pay one pass over
    /// `[h, c, d]`.
    func batchStatistics(_ flatten: Tensor, _ indices: IndexTensor, valid: [Bool]) -> (counts: Tensor, sums: Tensor) {
        let first = rawBatchStatistics(flatten, indices, valid: valid)
        let limit: Float = 0x1p60
        // The largest magnitude as bits (NaN and ±∞ above every finite value): an integer max that vectorises.
        let worst = first.sums.withUnsafeScalars { p in p.reduce(UInt32(0)) { Swift.max($0, $1.bitPattern & 0x7FFF_FFFF) } }
        let overflowing = worst > limit.bitPattern
        guard overflowing else { return first }
        return rawBatchStatistics(flatten, indices, valid: leavingOutHugeRows(flatten, valid: valid, in: "codebook update"))
    }

    /// `valid` without the rows of `flatten [h, n, d]` that hold a value beyond 2⁵⁰ (logged, naming `what`): statistics
    /// built from them would overflow single precision — the one rule of the EMA update and of k-means.
    func leavingOutHugeRows(_ flatten: Tensor, valid: [Bool], in what: String) -> [Bool] {
        let rowLimit: Float = 0x1p50, d = flatten.shape[2]
        var kept = valid
        flatten.withUnsafeScalars { p in
            for r in kept.indices where kept[r] && !(0..<d).allSatisfy({ abs(p[r * d + $0]) <= rowLimit }) { kept[r] = false }
        }
        let dropped = zip(valid, kept).filter { $0 && !$1 }.count
        if dropped > 0 { logger.warning("\(what): \(dropped) vectors with values beyond 2^50 left out (their sums would overflow)") }
        return kept
    }

    private func rawBatchStatistics(_ flatten: Tensor, _ indices: IndexTensor, valid: [Bool]) -> (counts: Tensor, sums: Tensor) {
        let (h, n, d, c) = (flatten.shape[0], flatten.shape[1], flatten.shape[2], codebookSize)
        var counts = [Float](repeating: 0, count: h * c)
        for i in 0..<(h * n) where valid[i] { counts[(i / n) * c + indices.scalars[i]] += 1 }
        let sums = [Float](unsafeUninitializedCapacity: h * c * d) { out, initialized in
            flatten.withUnsafeScalars { px in
                indices.scalars.withUnsafeBufferPointer { pk in
                    valid.withUnsafeBufferPointer { pv in
                        nonisolated(unsafe) let (x, k, v, dst) = (px.baseAddress!, pk.baseAddress!, pv.baseAddress!, out.baseAddress!)
                        // Each codebook's valid rows sorted by code (each code's rows in order): the rows of one code are
                        // added one after the other into one accumulator row, which stays in cache.
                        let order = (0..<h).map { hh in Tensor.rowsByCode(k + hh * n, valid: v + hh * n, n: n, codes: c) }
                        // Tasks are (codebook, 64 features): each sum still accumulates its rows in order, and a
                        // task's accumulators (codes × 64 doubles, 512 KB for 1,024 codes) stay in L2.
                        let chunk = 64, chunks = (d + chunk - 1) / chunk
                        let tasks = h * chunks
                        let body = { (t: Int) in
                            let (hh, j0) = (t / chunks, (t % chunks) * chunk)
                            let width = Swift.min(chunk, d - j0)
                            let acc = UnsafeMutablePointer<Double>.allocate(capacity: c * width)
                            defer { acc.deallocate() }
                            acc.initialize(repeating: 0, count: c * width)
                            if !order[hh].isEmpty {
                                order[hh].withUnsafeBufferPointer { po in
                                    Tensor.scatterAddRows(x + hh * n * d + j0, rowStride: d, codes: k + hh * n, order: po.baseAddress!,
                                                          count: po.count, width: width, into: acc)
                                }
                            }
                            for code in 0..<c {
                                let o = dst + (hh * c + code) * d + j0, a = acc + code * width
                                for j in 0..<width { o[j] = Float(a[j]) }
                            }
                        }
                        if h * n * d < 1 << 16 { for t in 0..<tasks { body(t) } } else { Threads.forEach(tasks, body) }
                    }
                }
            }
            initialized = h * c * d
        }
        return (Tensor(counts, shape: [h, c]), Tensor(sums, shape: [h, c, d]))
    }

    /// Per-code lerp weights for one step, `[h · c]`; 0 means the code is frozen for this step.
    func lerpWeights(_ weight: EMAUpdateWeight?, counts: Tensor, sums: Tensor) -> [Float] {
        var w: [Float]
        switch weight {
        case nil: w = Array(repeating: Float(1 - configuration.decay), count: codeCount)
        case let weight?:
            // A weight computed from this step's statistics is checked as a given one is (the program's error: a trap).
            let given: EMAUpdateWeight = if case .function(let f) = weight { .perCode(f(sums, counts)) } else { weight }
            if let problem = weightProblem(given) { preconditionFailure(problem) }
            w = lerpFractions(given)
        }
        let frozen = frozenMask
        for i in w.indices where frozen[i] { w[i] = 0 }
        return w
    }

    /// `(1 − decay) · weight` per code, `[h · c]` (a scalar in double precision, as the reference's python float).
    private func lerpFractions(_ weight: EMAUpdateWeight) -> [Float] {
        let base = 1 - configuration.decay
        switch weight {
        case .scalar(let s): return Array(repeating: Float(base * s), count: codeCount)
        case .perCode(let t): return t.scalars.map { Float(base) * $0 }
        case .function: preconditionFailure("lerpFractions: a function's weights are computed first")
        }
    }

    /// Why an `ema_update_weight` cannot be applied to this codebook, or nil — the one statement of the rule (throwing
    /// entry points check it first; the update traps on it): a per-code tensor is `[codebook_size]` (one codebook) or
    /// `[num_codebooks, codebook_size]`, and every weight keeps the step's lerp fraction `(1 − decay) · weight` within
    /// [0, 1] — 0 holds a code, 1 replaces its statistics by the batch's; outside, an EMA count could turn negative or
    /// non-finite and take the codes with it. A function's weights are checked when it has computed them.
    func weightProblem(_ weight: EMAUpdateWeight) -> String? {
        let what: String
        switch weight {
        case .function: return nil
        case .scalar(let s):
            guard Self.firstOutsideLerpRange(lerpFractions(weight)) != nil else { return nil }
            what = "\(s)"
        case .perCode(let t):
            if t.shape == [codebookSize] {
                if numCodebooks != 1 {
                    return "ema_update_weight of shape \(t.shape) needs [num_codebooks, codebook_size] = [\(numCodebooks), \(codebookSize)] with separate codebooks"
                }
            } else if t.shape != [numCodebooks, codebookSize] {
                return "ema_update_weight of shape \(t.shape): expected [\(codebookSize)] or [\(numCodebooks), \(codebookSize)]"
            }
            guard let i = Self.firstOutsideLerpRange(lerpFractions(weight)) else { return nil }
            what = "\(Double(t.scalars[i])) (code \(i))"
        }
        let most = configuration.decay < 1 ? "0…\(1 / (1 - configuration.decay))" : "any finite value"
        return "ema_update_weight \(what) with decay \(configuration.decay): (1 − decay) · weight must lie in [0, 1] (weights \(most))"
    }

    /// The first lerp fraction outside [0, 1] (NaN included), or nil: the range every step's fractions must keep.
    static func firstOutsideLerpRange(_ fractions: [Float]) -> Int? { fractions.firstIndex { !($0 >= 0 && $0 <= 1) } }

    /// Starts (`true`) or ends (`false`) collecting the codes held by the layers of one stacked call, for a
    /// shared codebook whose dead-code expiry runs once after every layer.
    func trackHeldCodes(_ on: Bool) {
        heldInCall = on ? [Bool](repeating: false, count: codeCount) : nil
    }

    /// Adds codes held for this step (`nil`: every code) to ``heldInCall`` when a stack collects them.
    func recordHeld(_ held: [Bool]?) {
        guard var h = heldInCall else { return }
        if let held {
            for i in h.indices where held[i] { h[i] = true }
        } else {
            h = [Bool](repeating: true, count: codeCount)
        }
        heldInCall = h
    }

    /// Adds a batch's statistics to the pending accumulators (`accum_ema_update`).
    func accumulate(counts: Tensor, sums: Tensor) {
        pendingClusterSize = pendingClusterSize.map { $0 + counts } ?? counts
        pendingEmbedSum = pendingEmbedSum.map { $0 + sums } ?? sums
    }

    /// One EMA step of `cluster_size` and `embed_avg` toward a batch's statistics (plus any pending
    /// accumulated statistics). Codes whose weight is 0 are not written.
    func emaStep(counts: Tensor, sums: Tensor, weights: [Float]) {
        var counts = counts, sums = sums
        if let p = pendingClusterSize { counts = counts + p }
        if let p = pendingEmbedSum { sums = sums + p }
        pendingClusterSize = nil
        pendingEmbedSum = nil
        let count = counts.scalars, d = dim
        sums.withUnsafeScalars { ps in
            nonisolated(unsafe) let batch = ps.baseAddress!
            write(.emaStep, rows: (0..<codeCount).filter { weights[$0] != 0 }, [.average, .size], touch: .statistics, threaded: true) { w in
                let i = w.row
                w.size![0] = torchLerp(w.size![0], count[i], weights[i])
                torchLerp(w.average!, toward: batch + i * d, weight: weights[i], count: d)
            }
        }
    }

    /// Recomputes `embed = embed_avg / s` (Laplace-smoothed counts; l2-normalised for cosine) for the
    /// codes whose statistics changed since the last recompute and that are not frozen (the
    /// reference's `update_ema()`; call it yourself with `manualEMAUpdate`).
    public func updateEMA() {
        let d = dim
        let cosine = configuration.useCosineSimilarity
        let avg = embedAverage.value.scalars, smoothed = smoothedCounts()
        // A smoothed count of 0 means its codebook has no count at all (Σn = 0: every count was 0 and the batch went
        // to frozen codes only): there is no news for the code, and `embed_avg / 0` would make it ±∞ or NaN (as the
        // reference would). Such a code keeps its value.
        let rows = (0..<codeCount).filter { touched[$0] && smoothed[$0] > 0 }
        avg.withUnsafeBufferPointer { pa in
            nonisolated(unsafe) let average = pa.baseAddress!
            write(.recompute, rows: rows, .codes, touch: .codes, threaded: true) { w in
                let r = w.row, row = w.code!, source = average + r * d
                let s = smoothed[r]
                for j in 0..<d { row[j] = source[j] / s }
                if cosine { Tensor.l2NormalizeRows(row, rows: 1, d: d, eps: Self.cosineEps) }
            }
        }
        touched = Array(repeating: false, count: codeCount)
    }

    /// The Laplace-smoothed count of every code, flattened `[h · c]`: `s_c = (n_c + ε) / (Σn + C·ε) · Σn` over its
    /// codebook's current `cluster_size` (the divisor of `embed = embed_avg / s`).
    func smoothedCounts() -> [Float] {
        let c = codebookSize
        let eps = Float(configuration.eps), ceps = Float(Double(c) * configuration.eps)
        let cs = clusterSize.value.scalars
        return cs.withUnsafeBufferPointer { p in
            (0..<numCodebooks).flatMap { h in
                let counts = UnsafeBufferPointer(rebasing: p[(h * c)..<(h * c + c)])
                return Self.laplaceSmoothed(counts, total: Tensor.sumContiguous(p.baseAddress! + h * c, c), eps: eps, ceps: ceps)
            }
        }
    }

    /// One codebook's Laplace-smoothed counts from its counts `n` and their float sum `total` (summed as the caller's
    /// reference path sums): `(n_c + ε) / (Σn + C·ε) · Σn` in float, as the reference computes it. When `Σn` overflows
    /// float — counts near 3·10³⁸, from a file — the reference's formula is ∞/∞ = NaN, which would make every code NaN:
    /// the same formula in double then, rounded to float (each result at most its count, so finite).
    static func laplaceSmoothed(_ n: UnsafeBufferPointer<Float>, total: Float, eps: Float, ceps: Float) -> [Float] {
        if total.isFinite { return n.map { ($0 + eps) / (total + ceps) * total } }
        let exact = n.reduce(0.0) { $0 + Double($1) }
        return n.map { Float((Double($0) + Double(eps)) / (exact + Double(ceps)) * exact) }
    }

    /// The reference's per-batch update: EMA of the statistics (or accumulation), the recompute of
    /// `embed`, then dead-code expiry. `stepWeights` are the per-code lerp weights (0 = frozen).
    func updateCodebook(
        flatten: Tensor, indices: IndexTensor, valid: [Bool], weight: EMAUpdateWeight?, accumulate accumulateOnly: Bool,
        emaUpdate: Bool?
    ) {
        let emaOn = emaUpdate ?? configuration.emaUpdate
        let deadCodes = configuration.thresholdEMADeadCode > 0
        if heldInCall != nil {
            // A stack that defers expiry (shared codebook) must know the held codes even when this layer
            // returns early; a weight that does not depend on the batch is known now.
            switch weight {
            case .scalar(let s) where s == 0: recordHeld(nil)
            case .perCode(let t):
                if let problem = weightProblem(.perCode(t)) { preconditionFailure(problem) }
                recordHeld(t.scalars.map { $0 == 0 })
            default: break
            }
        }
        if !emaOn && !deadCodes { return }
        var (counts, sums) = batchStatistics(flatten, indices, valid: valid)
        if collective.isDistributed && configuration.syncCodebook {
            var c = counts.scalars, s = sums.scalars
            collective.allReduceSum(&c)
            collective.allReduceSum(&s)
            counts = Tensor(c, shape: counts.shape)
            sums = Tensor(s, shape: sums.shape)
        }
        guard counts.scalars.contains(where: { $0 > 0 }) else {
            logger.debug("codebook update skipped: the batch has no unmasked, finite vector")
            return
        }
        if accumulateOnly {
            accumulate(counts: counts, sums: sums)
            return
        }
        var w = lerpWeights(weight, counts: counts, sums: sums)
        if freezePolicy != nil {
            // The policy sees the step before it happens; what it freezes is frozen for this step already.
            let policyWeights = consultPolicy(counts: counts, sums: sums, baseWeights: w)
            let frozen = frozenMask
            for i in w.indices {
                if frozen[i] { w[i] = 0 } else if let p = policyWeights { w[i] *= p[i] }
            }
            if let i = Self.firstOutsideLerpRange(w) {
                preconditionFailure("FreezePolicy: weight \(policyWeights?[i] ?? .nan) for code \(i) takes the lerp fraction (1 − decay) · weight to \(w[i]), outside [0, 1]")
            }
        }
        recordHeld(w.map { $0 == 0 })
        emaStep(counts: counts, sums: sums, weights: w)
        if emaOn && !configuration.manualEMAUpdate { updateEMA() }
        let frozenForStep = w.map { $0 == 0 }
        if drawsFromEveryRank {
            // Dead codes are replaced from the union of the ranks' batches, identically on every rank
            // (every rank sees the same counts, so all of them take this branch together).
            guard configuration.thresholdEMADeadCode > 0, isTraining, expiredCodes(frozenForStep: frozenForStep).contains(true) else { return }
            let (all, allValid) = gatherBatch(flatten, valid: valid)
            expireCodes(all, valid: allValid, frozenForStep: frozenForStep)
        } else {
            expireCodes(flatten, valid: valid, frozenForStep: frozenForStep)
        }
    }
}

extension Codebook {
    /// Whether k-means initialisation and dead-code replacement draw from every rank's batch: several processes,
    /// `sync_codebook` and `sync_kmeans` (the reference's `use_ddp and sync_kmeans`).
    var drawsFromEveryRank: Bool {
        collective.isDistributed && configuration.syncCodebook && configuration.syncKmeans
    }

    /// The ranks' batches `[h, n_r, d]` concatenated along the rows in rank order (each codebook's rows
    /// kept together), with their validity. The identity on one process.
    func gatherBatch(_ flatten: Tensor, valid: [Bool]) -> (Tensor, [Bool]) {
        guard collective.isDistributed else { return (flatten, valid) }
        let (h, n, d) = (flatten.shape[0], flatten.shape[1], flatten.shape[2])
        let rows = collective.allGather(flatten.scalars)
        let flags = collective.allGather(valid.map { $0 ? 1 : 0 })
        var out: [Float] = [], ok: [Bool] = []
        var total = 0
        for hh in 0..<h {
            for (r, part) in rows.enumerated() {
                let nr = part.count / (h * d)
                if hh == 0 { total += nr }
                out += part[(hh * nr * d)..<((hh + 1) * nr * d)]
                ok += flags[r][(hh * nr)..<((hh + 1) * nr)].map { $0 != 0 }
            }
        }
        _ = n
        return (Tensor(out, shape: [h, total, d]), ok)
    }
}
