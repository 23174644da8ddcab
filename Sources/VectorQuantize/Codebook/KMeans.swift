import VQNN
import VQTensor

/// Lloyd's k-means (Lloyd, *Least squares quantization in PCM*, 1982) as the reference's `kmeans()`,
/// with frozen centroids as FAISS's `frozen_centroids`: frozen means take part in the assignment but
/// never move.
public enum KMeans {
    /// Runs `iterations` Lloyd steps from `initial` means.
    ///
    /// - Parameters:
    ///   - samples: `[n, d]` vectors.
    ///   - initial: `[k, d]` starting means.
    ///   - frozen: `k` flags; frozen means never move.
    ///   - iterations: the number of Lloyd steps.
    ///   - metric: Euclidean (nearest) or dot product (cosine; updated means are l2-normalised).
    ///   - constrain: applied to the means after every update (partial freezes of a codebook).
    /// - Returns: the means and the counts of the last assignment (as the reference's `bins`).
    /// - Complexity: O(iterations · n · k · d), no n×k buffer.
    public static func fit(
        samples: Tensor, initial: Tensor, frozen: [Bool]? = nil, iterations: Int, metric: CodeMetric = .euclidean,
        constrain: ((inout [Float]) -> Void)? = nil
    ) -> (means: Tensor, counts: Tensor) {
        precondition(samples.rank == 2 && initial.rank == 2 && samples.shape[1] == initial.shape[1],
                     "KMeans.fit: samples \(samples.shape) and means \(initial.shape)")
        let (k, d) = (initial.shape[0], initial.shape[1])
        let frozen = frozen ?? Array(repeating: false, count: k)
        var means = initial
        var counts = Tensor.zeros([k])
        for _ in 0..<iterations {
            let (assign, _) = samples.nearestCodes(means, metric: metric)
            counts = Tensor.zeros([k]).indexAdd(axis: 0, assign, Tensor.ones([samples.shape[0]]))
            var newMeans = Tensor.zeros([k, d]).indexAdd(axis: 0, assign, samples) / counts.maximum(1).unsqueezed(axis: 1)
            if metric == .dot { newMeans = newMeans.l2Normalized(axis: -1, eps: 1e-6) }
            var m = means.scalars
            for c in 0..<k where counts.scalars[c] != 0 && !frozen[c] {
                for j in 0..<d { m[c * d + j] = newMeans.scalars[c * d + j] }
            }
            constrain?(&m)
            means = Tensor(m, shape: [k, d])
        }
        return (means, counts)
    }
}

extension Codebook {
    /// Initialises the codes by k-means on a batch `flatten [h, n, d]` (rows where `valid`): frozen codes
    /// stay; the others start from sampled rows, are fitted around the frozen ones, and get
    /// `embed_avg = mean · count`, `cluster_size = count` before the recompute of `embed`.
    /// A codebook with no usable row stays uninitialised until a batch has one.
    func kmeansInitialize(_ flatten: Tensor, valid: [Bool]) {
        let fitted = kmeansFit(flatten, valid: valid, fitting: frozenMask.map { !$0 }, iterations: configuration.kmeansIters, countScale: nil)
        if fitted { initted.value = Tensor(1) }
    }

    /// The most Lloyd steps of ``fitCodes(_:to:iterations:countsPerBatch:)`` (it stops earlier when the objective stops falling).
    public static let growthIterations = 100
    /// The k-means runs of ``fitCodes(_:to:iterations:countsPerBatch:)`` (from different seedings; the lowest objective is kept).
    public static let growthRestarts = 8

    /// Fits some codes to data by k-means while every other code stays where it is and takes part in the
    /// assignment (FAISS's `frozen_centroids`): the codes to fit are seeded by k-means++ against the others and get
    /// `embed_avg = mean · count`, `cluster_size = count` (counts rescaled to `countsPerBatch` rows when
    /// given, so they match the EMA statistics of training batches of that size). Frozen codes are never
    /// fitted, even when listed. Used to give the new codes of a grown codebook the new data
    /// (``VectorQuantizer/expanded(toCodebookSize:freezeExisting:seed:fittingNewCodesTo:countsPerBatch:)``).
    ///
    /// - Parameters:
    ///   - codes: the code indices to fit, in every codebook (head).
    ///   - flatten: `[h, n, d]` vectors in codebook space (l2-normalised for a cosine codebook).
    ///   - iterations: the most Lloyd steps (default ``growthIterations``; they stop when the objective stops
    ///     falling). The fit is ``KMeans/fitGrowing(samples:initial:fitting:maxIterations:restarts:metric:constrain:rng:)``:
    ///     k-means++ seeds against the fixed codes, empty codes re-seeded at the worst-represented rows.
    ///   - countsPerBatch: the batch size the counts are expressed in (default: the rows given).
    /// - Throws: a ``CodebookError`` for data not `[h, n, d]`, a code out of range, a non-positive
    ///   `iterations` or `countsPerBatch`, or a k-means codebook not initialised yet unless every code that is not
    ///   frozen is fitted (its placeholders cannot be the fixed codes; such a fit is the initialisation) — changing nothing.
    /// - Complexity: O(iterations · n · c · d) per codebook.
    public func fitCodes(_ codes: some Sequence<Int>, to flatten: Tensor, iterations: Int? = nil, countsPerBatch: Int? = nil) throws {
        guard flatten.rank == 3 && flatten.shape[0] == numCodebooks && flatten.shape[2] == dim else {
            throw CodebookError.shapeMismatch(expected: [numCodebooks, flatten.rank == 3 ? flatten.shape[1] : -1, dim], found: flatten.shape)
        }
        let codes = Array(codes)
        if let bad = codes.first(where: { $0 < 0 || $0 >= codebookSize }) { throw CodebookError.codeOutOfRange(code: bad, codebookSize: codebookSize) }
        if let bad = [iterations, countsPerBatch].compactMap({ $0 }).first(where: { $0 <= 0 }) {
            throw CodebookError.notPositive(value: bad)
        }
        // A k-means codebook that never saw a batch holds placeholders: they may not serve as the fixed codes of a fit.
        // Fitting every code that is not frozen is what its first batch would do — the initialisation, and it counts as one.
        let wanted = Set(codes)
        let frozen = frozenMask
        if !isInitialized && (0..<codeCount).contains(where: { !wanted.contains($0 % codebookSize) && !frozen[$0] }) {
            throw CodebookError.notInitialised
        }
        let fitting = (0..<codeCount).map { wanted.contains($0 % codebookSize) && !frozen[$0] }
        let valid: [Bool] = flatten.withUnsafeScalars { p in
            (0..<(flatten.shape[0] * flatten.shape[1])).map { r in (0..<dim).allSatisfy { p[r * dim + $0].isFinite } }
        }
        // Codes fitted from outside are the codebook's: a k-means initialisation still pending would re-fit them.
        if kmeansFit(flatten, valid: valid, fitting: fitting, iterations: iterations ?? Self.growthIterations,
                     countScale: countsPerBatch ?? flatten.shape[1]) {
            initted.value = Tensor(1)
        }
    }

    /// k-means of the codes where `fitting` (flattened `[h · c]`), the others fixed; `false` when a
    /// codebook had no usable row (nothing is written then). With `countScale` (growth, ``fitCodes(_:to:iterations:countsPerBatch:)``)
    /// the fit is ``KMeans/fitGrowing(samples:initial:fitting:maxIterations:restarts:metric:constrain:rng:)``; without
    /// (initialisation) the reference's Lloyd steps from sampled rows.
    private func kmeansFit(_ flatten: Tensor, valid given: [Bool], fitting: [Bool], iterations: Int, countScale: Int?) -> Bool {
        let growing = countScale != nil
        let (h, n, d, c) = (flatten.shape[0], flatten.shape[1], flatten.shape[2], codebookSize)
        // As the EMA update: their means times their counts would overflow and poison the codes (vq-fuzz --calls seed 2011).
        let valid = leavingOutHugeRows(flatten, valid: given, in: "k-means")
        let e = embed.value.scalars
        // Each fitted code's mean and count (the rows of the assignment), written through the gate at the end.
        var fitted = [Int: (mean: ArraySlice<Float>, bins: Float, empty: Bool)]()
        for hh in 0..<h {
            let rows = (0..<n).filter { valid[hh * n + $0] }
            guard !rows.isEmpty else {
                logger.warning("k-means postponed: no unmasked, finite vector in this batch")
                return false
            }
            let free = (0..<c).filter { fitting[hh * c + $0] }
            if free.isEmpty { continue }
            if rows.count < free.count {
                logger.warning("k-means received \(rows.count) vectors for \(free.count) codes: duplicates are sampled")
            }
            let samples = flatten.slice(axis: 0, hh..<(hh + 1)).reshaped([n, d]).indexSelect(axis: 0, IndexTensor(rows))
            let picks = sampler(rows.count, free.count, &rng)
            var initial = Array(e[(hh * c * d)..<((hh + 1) * c * d)])
            for (k, code) in free.enumerated() {
                for j in 0..<d { initial[code * d + j] = samples.scalars[picks[k] * d + j] }
            }
            // Partially frozen codes fit only their free part: after every Lloyd step their frozen
            // components and subspace coordinates are restored from the codebook (the gate's hold, on the means).
            let hold = partialHold()
            let held = free.filter { !hold.isEmpty && hold.applies(toRow: hh * c + $0) }
            let current = Array(e[(hh * c * d)..<((hh + 1) * c * d)])
            let constrain: ((inout [Float]) -> Void)? = held.isEmpty ? nil : { m in
                m.withUnsafeMutableBufferPointer { p in
                    current.withUnsafeBufferPointer { o in
                        for code in held { hold.hold(row: hh * c + code, p.baseAddress! + code * d, old: o.baseAddress! + code * d, project: true) }
                    }
                }
            }
            constrain?(&initial)
            let metric: CodeMetric = configuration.useCosineSimilarity ? .dot : .euclidean
            let (means, counts) = growing
                ? KMeans.fitGrowing(samples: samples, initial: Tensor(initial, shape: [c, d]), fitting: (0..<c).map { fitting[hh * c + $0] },
                                    maxIterations: iterations, restarts: Self.growthRestarts, metric: metric, constrain: constrain, rng: &rng)
                : KMeans.fit(samples: samples, initial: Tensor(initial, shape: [c, d]), frozen: (0..<c).map { !fitting[hh * c + $0] },
                             iterations: iterations, metric: metric, constrain: constrain)
            let scale = countScale.map { Float($0) / Float(rows.count) } ?? 1
            // (The growing fit seeds its own means: the sampled rows above only start k-means initialisation.)
            for code in free {
                // Fitting new codes: an empty cluster keeps its sampled row as its code, with a pseudo-count of one
                // vector there (cluster_size 1, embed_avg = the row), so the EMA keeps it where it is until data
                // reaches it — with a count of 0 the first step would make it the zero vector, dead for good.
                // (k-means initialisation keeps the reference's zero count.)
                let empty = counts.scalars[code] == 0 && growing
                fitted[hh * c + code] = (means.scalars[(code * d)..<(code * d + d)], empty ? 1 : counts.scalars[code] * scale, empty)
            }
        }
        // `embed_avg = mean · count`, `cluster_size = count`; `embed` follows by the recompute, except for an empty
        // cluster's code, which is its mean.
        for empty in [false, true] {
            let rows = fitted.keys.filter { fitted[$0]!.empty == empty }.sorted()
            write(.kmeans, rows: rows, empty ? .all : [.average, .size], touch: empty ? .codes : .statistics) { w in
                let (mean, bins, _) = fitted[w.row]!
                for (j, v) in mean.enumerated() {
                    w.average![j] = v * bins
                    w.code?[j] = v
                }
                w.size![0] = bins
            }
        }
        updateEMA()
        return true
    }
}
