import CVQKernels

/// How nearest-code search scores a code.
public enum CodeMetric: Sendable {
    /// Smallest Euclidean distance, scored exactly as vector-quantize-pytorch does:
    /// `sqrt(max((‖x‖² + ‖c‖²) − 2 x·c, 1e-8))`.
    case euclidean
    /// Largest dot product (cosine similarity for l2-normalised inputs).
    case dot
}

/// Fused nearest-code search: dot-product tiles from the GEMM micro-kernel feed a running
/// arg-min, so the N×K distance matrix is never materialised.
///
/// Codes are packed once into NR-wide panels; query rows are processed in blocks of MR rows by
/// independent tasks. Each row visits codes in increasing order and keeps strictly better scores,
/// so exact ties resolve to the lowest index (as `argmax` of the reference's negated distance), and the
/// result is bit-identical for any thread count. Dot products use the same depth blocking as
/// ``Tensor/matmul(_:)``, so they equal the GEMM's bit for bit.
enum NearestCodeKernel {
    /// Calls `visit(rowStart, rows, codeStart, cols, dots, ld, xx, cc)` for every MR×NR tile, in
    /// increasing code order per row block. `xx`/`cc` point at the squared norms of those rows/codes.
    /// The running arg-min a fused kernel may keep instead of visiting tiles (``Tensor/nearestCodes(_:metric:)``).
    struct Argmin {
        let cosine: Int32
        let best: UnsafeMutablePointer<Float>, index: UnsafeMutablePointer<Int64>
    }

    static func tiles(
        x: UnsafePointer<Float>, n: Int, codes: UnsafePointer<Float>, k: Int, d: Int,
        rowsPerTask: Int, argmin: Argmin? = nil,
        _ visit: (_ task: Int, _ rowStart: Int, _ rows: Int, _ codeStart: Int, _ cols: Int,
                  _ dots: UnsafePointer<Float>, _ ld: Int, _ xx: UnsafePointer<Float>, _ cc: UnsafePointer<Float>) -> Void
    ) {
        let mr = GEMM.mr, nr = GEMM.nr, kc = GEMM.kc, level = GEMM.level
        let panels = (k + nr - 1) / nr
        let packed = alignedFloats(Swift.max(1, panels * nr * d))
        let cc = alignedFloats(panels * nr + 1)
        defer { packed.deallocate(); cc.deallocate() }
        nonisolated(unsafe) let (px, pcodes, ppacked, pcc) = (x, codes, packed, cc)
        Threads.forRanges(panels, minChunk: 4) { range in
            for jp in range {
                let cols = Swift.min(nr, k - jp * nr)
                let dst = ppacked + jp * d * nr
                for p in 0..<d {
                    let dd = dst + p * nr
                    for j in 0..<cols { dd[j] = pcodes[(jp * nr + j) * d + p] }
                    for j in cols..<nr { dd[j] = 0 }
                }
                sumOfSquares(rows: pcodes + jp * nr * d, count: cols, d: d, into: pcc + jp * nr)
                for j in cols..<nr { pcc[jp * nr + j] = 0 }
            }
        }
        let tasks = (n + rowsPerTask - 1) / rowsPerTask
        Threads.forEach(tasks) { task in
            let r0 = task * rowsPerTask
            let rowsT = Swift.min(rowsPerTask, n - r0)
            let groups = (rowsT + mr - 1) / mr
            let aPack = alignedFloats(groups * mr * d + mr * nr + groups * mr)
            defer { aPack.deallocate() }
            let tile = aPack + groups * mr * d
            let xx = tile + mr * nr
            for g in 0..<groups {
                let rows = Swift.min(mr, rowsT - g * mr)
                let dst = aPack + g * d * mr
                vq_gemm_pack_a(px + (r0 + g * mr) * d, Int64(d), Int64(rows), Int64(d), Int64(mr), dst)
                sumOfSquares(rows: px + (r0 + g * mr) * d, count: rows, d: d, into: xx + g * mr)
                for i in rows..<mr { xx[g * mr + i] = 0 }
            }
            // Code blocks sized to stay in cache while every row group of the task passes over them.
            let blockPanels = Swift.max(1, (256 * 1024 / 4) / Swift.max(1, d * nr))
            var b0 = 0
            while b0 < panels {
                let b1 = Swift.min(panels, b0 + blockPanels)
                // Each NR-wide code panel stays in L1 while every row group of the task passes over it.
                for jp in b0..<b1 {
                    let bp = ppacked + jp * d * nr
                    for g in 0..<groups {
                        let rows = Swift.min(mr, rowsT - g * mr)
                        let ap = aPack + g * d * mr
                        // One depth block: dot products and arg-min in one kernel call where available.
                        if let argmin, d <= kc, d > 0,
                           vq_gemm_argmin(level, Int64(d), ap, bp, Int32(rows), Int32(Swift.min(nr, k - jp * nr)), xx + g * mr, pcc + jp * nr,
                                          argmin.cosine, Int64(jp * nr), argmin.best + r0 + g * mr, argmin.index + r0 + g * mr) != 0 {
                            continue
                        }
                        var p0 = 0
                        repeat {
                            let kb = Swift.min(kc, d - p0)
                            vq_gemm_ukr(level, Int64(kb), ap + p0 * mr, bp + p0 * nr, tile, Int64(nr), p0 == 0 ? 0 : 1)
                            p0 += kb
                        } while p0 < d
                        visit(task, r0 + g * mr, rows, jp * nr, Swift.min(nr, k - jp * nr), tile, nr,
                              xx + g * mr, pcc + jp * nr)
                    }
                }
                b0 = b1
            }
        }
    }

    /// The arg-min of `n` rows against `k` codes into `best`/`index` (`best` starting at +∞): screened where
    /// `screening` allows (8-bit quads, then BF16 pairs for codebooks the 8-bit scales cannot reach), the rows
    /// a screen leaves (or all of them) by the float search. With `heads` > 1, `heads` independent searches — head
    /// `h`'s rows at `x + h·n·d`, its codes at `codes + h·k·d`, its results at `h·n` — screened in one pass.
    /// With `squaredErrors` (`heads · n`), each row's `Σ (x − code)²` to its code (``Tensor/meanSquaredRowDifference(_:)``'s
    /// row order), formed by the screen while the row and the code are in cache.
    static func argmin(x: UnsafePointer<Float>, n: Int, codes: UnsafePointer<Float>, k: Int, d: Int, heads: Int = 1, metric: CodeMetric,
                       screening: Screening, best ob: UnsafeMutablePointer<Float>, index oi: UnsafeMutablePointer<Int64>,
                       squaredErrors: UnsafeMutablePointer<Double>? = nil) {
        let cosine: Int32 = metric == .dot ? 1 : 0
        let screens: [(format: ScreenFormat, native: Bool)]
        switch screening {
        case .automatic: screens = Self.automaticFormats(k: k, d: d).map { ($0, true) }
        case .off: screens = []
        case .screen(let format, let native): screens = native && !format.runsNatively ? [] : [(format, native)]
        }
        var served: [Int]? = nil
        for screen in screens where served == nil && d <= GEMM.kc {
            served = screenedArgmin(x: x, n: n, codes: codes, k: k, d: d, heads: heads, cosine: cosine, format: screen.format,
                                    native: screen.native, best: ob, index: oi, squaredErrors: squaredErrors)
        }
        guard let rest = served else {
            for hh in 0..<heads {
                plainArgmin(x: x + hh * n * d, n: n, codes: codes + hh * k * d, k: k, d: d, cosine: cosine, best: ob + hh * n,
                            index: oi + hh * n)
                if let sq = squaredErrors {
                    Tensor.rowSquaredDifferences(x + hh * n * d, codes + hh * k * d, index: oi + hh * n, rows: n, d: d, into: sq + hh * n)
                }
            }
            return
        }
        // The rows left to the float search, head by head (`rest` is in increasing order).
        var start = 0
        while start < rest.count {
            let hh = rest[start] / n
            var end = start
            while end < rest.count && rest[end] / n == hh { end += 1 }
            let rows = rest[start..<end]
            var xs = [Float](repeating: 0, count: rows.count * d)
            for (i, r) in rows.enumerated() { for p in 0..<d { xs[i * d + p] = x[r * d + p] } }
            var b = [Float](repeating: .infinity, count: rows.count), bi = [Int64](repeating: 0, count: rows.count)
            plainArgmin(x: xs, n: rows.count, codes: codes + hh * k * d, k: k, d: d, cosine: cosine, best: &b, index: &bi)
            for (i, r) in rows.enumerated() { ob[r] = b[i]; oi[r] = bi[i] }
            if let sq = squaredErrors {
                for r in rows { Tensor.rowSquaredDifferences(x + r * d, codes + hh * k * d, index: oi + r, rows: 1, d: d, into: sq + r) }
            }
            start = end
        }
    }

    /// The float search: running arg-min over every tile (fused where the level allows).
    static func plainArgmin(x: UnsafePointer<Float>, n: Int, codes: UnsafePointer<Float>, k: Int, d: Int, cosine: Int32,
                            best: UnsafeMutablePointer<Float>, index: UnsafeMutablePointer<Int64>) {
        nonisolated(unsafe) let (ob, oi) = (best, index)
        tiles(x: x, n: n, codes: codes, k: k, d: d, rowsPerTask: rowsPerTask(n),
              argmin: .init(cosine: cosine, best: ob, index: oi)) { _, r0, rows, c0, cols, dots, ld, xx, cc in
            vq_argmin_update(dots, Int64(ld), Int64(rows), Int64(cols), xx, cc, cosine, Int64(c0), ob + r0, oi + r0)
        }
    }

    /// Squared norms in the order of `squared().sum(axis: -1)`, so fused and materialised distances agree.
    @inline(__always)
    static func sumOfSquares(_ p: UnsafePointer<Float>, _ n: Int) -> Float { Reduce.contiguousSumOfSquares(p, n) }

    /// ``sumOfSquares(_:_:)`` of `count` contiguous rows of `d` (a C kernel, four rows at a time; the same values).
    @inline(__always)
    static func sumOfSquares(rows p: UnsafePointer<Float>, count: Int, d: Int, into out: UnsafeMutablePointer<Float>) {
        vq_sumsq_rows(GEMM.level, p, Int64(count), Int64(d), Int64(d), out)
    }
}

/// Rows per task: large enough that each pass over the codebook serves many rows, small enough that
/// every thread gets several tasks.
func rowsPerTask(_ n: Int, mr: Int = GEMM.mr) -> Int {
    let target = Swift.max(mr, Swift.min(mr * 32, (n / Swift.max(1, Threads.count * 4) + mr - 1) / mr * mr))
    return target
}

extension Tensor {
    /// The nearest code for each row of `self` `[N, D]` among `codes` `[K, D]`, and its score
    /// (the Euclidean distance, or the dot product for ``CodeMetric/dot``).
    ///
    /// ```swift
    /// let (index, distance) = x.nearestCodes(codebook)        // index: [N]
    /// ```
    /// Ties resolve to the lowest index. No N×K buffer is allocated.
    ///
    /// - Complexity: O(N · K · D) time, O(N + K·D) extra memory.
    public func nearestCodes(_ codes: Tensor, metric: CodeMetric = .euclidean) -> (indices: IndexTensor, scores: Tensor) {
        nearestCodes(codes, metric: metric, screening: .automatic)
    }

    /// ``nearestCodes(_:metric:)`` with the screening chosen (tests compare the paths bit for bit).
    func nearestCodes(_ codes: Tensor, metric: CodeMetric, screening: NearestCodeKernel.Screening) -> (indices: IndexTensor, scores: Tensor) {
        precondition(rank == 2 && codes.rank == 2 && shape[1] == codes.shape[1],
                     "nearestCodes: x \(shape) and codes \(codes.shape) must be [N, D] and [K, D]")
        let n = shape[0], k = codes.shape[0], d = shape[1]
        precondition(k > 0 || n == 0, "nearestCodes: empty codebook \(codes.shape)")
        var best = [Float](repeating: .infinity, count: n)
        var bestIndex = [Int64](repeating: 0, count: n)
        best.withUnsafeMutableBufferPointer { pbest in
            bestIndex.withUnsafeMutableBufferPointer { pidx in
                scalars.withUnsafeBufferPointer { px in
                    codes.scalars.withUnsafeBufferPointer { pc in
                        guard n > 0 else { return }
                        NearestCodeKernel.argmin(x: px.baseAddress!, n: n, codes: pc.baseAddress!, k: k, d: d, metric: metric,
                                                 screening: screening, best: pbest.baseAddress!, index: pidx.baseAddress!)
                    }
                }
            }
        }
        // Rows whose every score was NaN (non-finite input) never improve on +∞: report index 0, NaN score.
        let scores = metric == .dot ? best.map { $0 == .infinity ? .nan : -$0 } : best.map { $0 == .infinity ? .nan : $0.squareRoot() }
        return (IndexTensor(bestIndex.map { Int($0) }, shape: [n]), Tensor(scores, shape: [n]))
    }

    /// The nearest code of each row of every head: `self [h, N, D]` against `codes [h, K, D]` (head `j`'s rows
    /// searched in head `j`'s codebook) → indices `[h, N]`, as ``nearestCodes(_:metric:)`` per head, without
    /// copying the heads out.
    ///
    /// - Complexity: O(h · N · K · D) time, O(h · N) extra memory.
    public func nearestCodesPerHead(_ codes: Tensor, metric: CodeMetric = .euclidean) -> IndexTensor {
        nearestCodesAndSquaredErrorsPerHead(codes, metric: metric, squaredErrors: false).indices
    }

    /// ``nearestCodesPerHead(_:metric:)`` that also returns each row's `Σ (x − code)²` to its code (`[h · N]`, in
    /// ``meanSquaredRowDifference(_:)``'s row order — its rows' sums, bit for bit), formed while the row and the code
    /// are in cache: the commitment loss without another pass over the rows.
    ///
    /// - Complexity: O(h · N · K · D) time, O(h · N) memory.
    public func nearestCodesAndSquaredErrorsPerHead(_ codes: Tensor, metric: CodeMetric = .euclidean) -> (indices: IndexTensor, squaredErrors: [Double]) {
        let out = nearestCodesAndSquaredErrorsPerHead(codes, metric: metric, squaredErrors: true)
        return (out.indices, out.squaredErrors!)
    }

    private func nearestCodesAndSquaredErrorsPerHead(_ codes: Tensor, metric: CodeMetric, squaredErrors: Bool) -> (indices: IndexTensor, squaredErrors: [Double]?) {
        precondition(rank == 3 && codes.rank == 3 && shape[0] == codes.shape[0] && shape[2] == codes.shape[2],
                     "nearestCodesPerHead: x \(shape) and codes \(codes.shape) must be [h, N, D] and [h, K, D]")
        let (h, n, k, d) = (shape[0], shape[1], codes.shape[1], shape[2])
        precondition(k > 0 || n == 0, "nearestCodesPerHead: empty codebooks \(codes.shape)")
        var best = [Float](repeating: .infinity, count: h * n)
        var index = [Int64](repeating: 0, count: h * n)
        var errors = [Double](repeating: 0, count: squaredErrors ? h * n : 0)
        scalars.withUnsafeBufferPointer { px in
            codes.scalars.withUnsafeBufferPointer { pc in
                best.withUnsafeMutableBufferPointer { pb in
                    index.withUnsafeMutableBufferPointer { pi in
                        errors.withUnsafeMutableBufferPointer { pe in
                            // Every head in one search (one parallel pass over all heads' rows where screened).
                            guard n > 0 else { return }
                            NearestCodeKernel.argmin(x: px.baseAddress!, n: n, codes: pc.baseAddress!, k: k, d: d, heads: h, metric: metric,
                                                     screening: .automatic, best: pb.baseAddress!, index: pi.baseAddress!,
                                                     squaredErrors: squaredErrors ? pe.baseAddress! : nil)
                        }
                    }
                }
            }
        }
        return (IndexTensor(index.map { Int($0) }, shape: [h, n]), squaredErrors ? errors : nil)
    }

    /// The `k` best codes per row (best first), with their scores; ties keep the lower index first.
    ///
    /// - Complexity: O(N · K · (D + k)) time, no N×K buffer.
    public func topKCodes(_ codes: Tensor, k kBest: Int, metric: CodeMetric = .euclidean) -> (indices: IndexTensor, scores: Tensor) {
        precondition(rank == 2 && codes.rank == 2 && shape[1] == codes.shape[1],
                     "topKCodes: x \(shape) and codes \(codes.shape) must be [N, D] and [K, D]")
        let n = shape[0], kc = codes.shape[0], d = shape[1]
        precondition(kBest >= 1 && kBest <= kc, "topKCodes: k = \(kBest) for \(kc) codes")
        var best = [Float](repeating: .infinity, count: n * kBest)
        var bestIndex = [Int](repeating: -1, count: n * kBest)
        let isDot = metric == .dot
        best.withUnsafeMutableBufferPointer { pbest in
            bestIndex.withUnsafeMutableBufferPointer { pidx in
                nonisolated(unsafe) let (ob, oi) = (pbest.baseAddress!, pidx.baseAddress!)
                scalars.withUnsafeBufferPointer { px in
                    codes.scalars.withUnsafeBufferPointer { pc in
                        guard n > 0 else { return }
                        NearestCodeKernel.tiles(
                            x: px.baseAddress!, n: n, codes: pc.baseAddress!, k: kc, d: d, rowsPerTask: rowsPerTask(n)
                        ) { _, r0, rows, c0, cols, dots, ld, xx, cc in
                            for r in 0..<rows {
                                let bs = ob + (r0 + r) * kBest, bi = oi + (r0 + r) * kBest
                                for j in 0..<cols {
                                    let s: Float
                                    if isDot {
                                        s = -dots[r * ld + j]
                                    } else {
                                        let t = (xx[r] + cc[j]) + dots[r * ld + j] * -2
                                        s = Swift.max(t, 1e-8).squareRoot()
                                    }
                                    guard s < bs[kBest - 1] else { continue }
                                    var p = kBest - 1
                                    while p > 0 && s < bs[p - 1] {
                                        bs[p] = bs[p - 1]
                                        bi[p] = bi[p - 1]
                                        p -= 1
                                    }
                                    bs[p] = s
                                    bi[p] = c0 + j
                                }
                            }
                        }
                    }
                }
            }
        }
        let scores = isDot ? best.map { -$0 } : best
        return (IndexTensor(bestIndex.map { Swift.max($0, 0) }, shape: [n, kBest]), Tensor(scores, shape: [n, kBest]))
    }
}
