import CVQKernels

extension GEMM {
    /// Rows per partial sum of a long reduction over rows (a weight gradient's depth, a bias gradient's rows): a
    /// function of the row count only (never of the threads), at most 64 partials — 1024 rows up to 65,536.
    static func depthChunk(_ rows: Int) -> Int {
        let unit = 1024
        return unit * Swift.max(1, (rows + 64 * unit - 1) / (64 * unit))
    }

    /// C = Σ over chunks of the depth (``depthChunk(_:)`` rows each) of `partial(rows, acc)`, a `[m, n]` row-major
    /// sum over those rows that `partial` adds into zeros; the chunks' sums added in order (`C +` them when
    /// `accumulate`). Each thread takes a contiguous run of chunks, as the row-wise kernels split the rows, so it reads
    /// the rows it wrote (on CPUs whose cores have their own caches, lines written on one core and read on the other
    /// cost three times as much: Zen 2, 4 MB, 0.31 against 0.12 ms). With one chunk, C is that chunk's sum.
    static func depthChunked(
        m: Int, n: Int, k: Int, c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
        partial: @escaping (Range<Int>, UnsafeMutablePointer<Float>) -> Void
    ) {
        let chunk = depthChunk(k)
        let chunks = Swift.max(1, (k + chunk - 1) / chunk)
        let partials = alignedFloats(chunks * m * n)
        defer { partials.deallocate() }
        partials.update(repeating: 0, count: chunks * m * n)
        nonisolated(unsafe) let pp = partials
        let run = { (range: Range<Int>) in
            for q in range where q * chunk < k { partial((q * chunk)..<Swift.min(k, (q + 1) * chunk), pp + q * m * n) }
        }
        if Double(m) * Double(n) * Double(k) < 1.5e6 { run(0..<chunks) } else { Threads.forRanges(chunks, minChunk: 1, run) }
        for i in 0..<m {
            for j in 0..<n {
                var s = partials[i * n + j]
                for q in 1..<chunks { s = s + partials[q * m * n + i * n + j] }
                let out = c + i * ldc + j
                out.pointee = accumulate ? out.pointee + s : s
            }
        }
    }

    /// The gradients of `y = x·Wᵀ + b` for a narrow input — `k ≤ 8` input features, `n ≥ 16` outputs (the projection
    /// back out of FSQ's or LFQ's few channels) — in one pass over `dy [rows, n]` instead of three: `dx = dy·W`,
    /// `dW = dyᵀ·x`, `db = Σ_rows dy`, whichever are asked for (`dw` or `db` at least).
    ///
    /// `dy` is read in blocks of rows that stay in cache while the three kernels take them: each `dx` element is the
    /// skinny kernel's dot product (as ``skinny(m:n:k:a:ars:acs:b:brs:bcs:c:crs:ccs:accumulate:)`` computes it), and
    /// `dW`, `db` are sums over the rows in chunks (``depthChunked(m:n:k:c:ldc:accumulate:partial:)``), so the result
    /// does not depend on the thread count; with one chunk (up to 1024 rows) they are sums over the rows in order.
    ///
    /// - Parameters:
    ///   - dy: `[rows, n]`, row-major.
    ///   - weight: `W [n, k]`, row-major (`nn.Linear`'s layout).
    ///   - x: the layer's input `[rows, k]`, needed for `dw`.
    ///   - dx: `[rows, k]` out, or nil. `dw`: `[n, k]` out, or nil. `db`: `[n]` out, or nil.
    static func narrowLinearGradients(
        rows: Int, n: Int, k: Int,
        dy: UnsafePointer<Float>, weight: UnsafePointer<Float>, x: UnsafePointer<Float>?,
        dx: UnsafeMutablePointer<Float>?, dw: UnsafeMutablePointer<Float>?, db: UnsafeMutablePointer<Float>?
    ) {
        precondition(k >= 1 && k <= 8 && n >= 1 && (dw != nil || db != nil), "narrowLinearGradients: \(k) inputs, \(n) outputs")
        precondition(dw == nil || x != nil, "narrowLinearGradients: the weight gradient needs the input")
        // W's columns, each contiguous: the skinny kernel's operand for dx = dy·W.
        let columns = alignedFloats(k * n)
        defer { columns.deallocate() }
        for j in 0..<k {
            for i in 0..<n { columns[j * n + i] = weight[i * k + j] }
        }
        // The sums: dWᵀ [k, n] (when asked), then db [n] (when asked).
        let weightRows = dw == nil ? 0 : k
        let m = weightRows + (db == nil ? 0 : 1)
        let sums = alignedFloats(m * n)
        defer { sums.deallocate() }
        // Rows per block: about 32 KB of dy, so that the second and third kernels read it from cache.
        let block = Swift.max(8, Swift.min(256, 8192 / n))
        nonisolated(unsafe) let (pdy, pcols, px, pdx) = (dy, UnsafePointer(columns), x, dx)
        depthChunked(m: m, n: n, k: rows, c: sums, ldc: n, accumulate: false) { range, acc in
            var one: Float = 1
            var r = range.lowerBound
            while r < range.upperBound {
                let count = Swift.min(block, range.upperBound - r)
                let rowsOfDy = pdy + r * n
                if let pdx {
                    let done = vq_skinny_dots(level, Int64(count), Int64(k), Int64(n), rowsOfDy, Int64(n), pcols, pdx + r * k, Int64(k), 1, 0)
                    assert(done != 0, "narrowLinearGradients: the skinny kernel runs at every level for ≤ 8 columns")
                }
                if weightRows > 0, let px {
                    vq_few_rows(level, Int64(k), Int64(n), Int64(count), px + r * k, 1, Int64(k), rowsOfDy, Int64(n), acc)
                }
                if m > weightRows {
                    vq_few_rows(level, 1, Int64(n), Int64(count), &one, 0, 0, rowsOfDy, Int64(n), acc + weightRows * n)
                }
                r += count
            }
        }
        if let dw {
            for j in 0..<k {
                for i in 0..<n { dw[i * k + j] = sums[j * n + i] }
            }
        }
        if let db { (db).update(from: sums + weightRows * n, count: n) }
    }
}
