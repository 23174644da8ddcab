import CVQKernels

/// Reductions along one axis of a row-major buffer viewed as `[outer, n, inner]`.
/// Each output element is reduced by one thread in a fixed order, so results do not depend on the
/// thread count. Sums over contiguous runs use 8 interleaved accumulators (as vectorised BLAS-like
/// code does) combined pairwise.
enum Reduce {
    enum Kind { case sum, max, min }

    static func along(_ x: Tensor, axis: Int, _ kind: Kind) -> Tensor {
        let (outer, n, inner) = Shape.split(x.shape, at: axis)
        var outShape = x.shape
        if !outShape.isEmpty { outShape[axis] = 1 }
        if kind != .sum { precondition(n > 0, "\(kind): reduction over an empty axis of shape \(x.shape)") }
        return Tensor.uninitialized(outShape) { out in
            x.scalars.withUnsafeBufferPointer { px in
                nonisolated(unsafe) let o = out.baseAddress!
                nonisolated(unsafe) let p = px.baseAddress!
                // Few outputs over long runs (a whole tensor's sum, a bias gradient's column sums): split each
                // output's run (the cascade's halves) or the columns over the threads instead of the outer blocks —
                // every output is still reduced in the same order, so the bits do not change.
                let long = outer < Threads.count && n * inner >= 1 << 16
                if long && inner == 1 && kind == .sum {
                    for ob in 0..<outer { o[ob] = parallelSum(p + ob * n, n) }
                } else if long && inner > 1 {
                    Threads.forRanges(inner, minChunk: 64) { cols in
                        for ob in 0..<outer { reduceColumns(p + ob * n * inner, n: n, inner: inner, cols, kind, into: o + ob * inner) }
                    }
                } else {
                    Threads.forRanges(outer, minChunk: max(1, 65536 / max(1, n * inner))) { range in
                        for ob in range {
                            let src = p + ob * n * inner
                            let dst = o + ob * inner
                            if inner == 1 {
                                switch kind {
                                case .sum: dst[0] = contiguousSum(src, n)
                                case .max, .min: reduceColumns(src, n: n, inner: 1, 0..<1, kind, into: dst)
                                }
                            } else {
                                reduceColumns(src, n: n, inner: inner, 0..<inner, kind, into: dst)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reduces `n` rows of `inner` floats (`src`) into `dst[i]` for the columns `i` in `cols`: sums row by row in
    /// order; max and min keep the first NaN.
    private static func reduceColumns(_ src: UnsafePointer<Float>, n: Int, inner: Int, _ cols: Range<Int>, _ kind: Kind,
                                      into dst: UnsafeMutablePointer<Float>) {
        switch kind {
        case .sum:
            // dst[i] += 1·row[i] over the rows in order: the few-rows kernel with one row of ones (acs 0), whose
            // products with 1 are exact — the same additions as a loop of dst[i] += row[i].
            for i in cols { dst[i] = 0 }
            var one: Float = 1
            vq_few_rows(GEMM.level, 1, Int64(cols.count), Int64(n), &one, 0, 0, src + cols.lowerBound, Int64(inner),
                        dst + cols.lowerBound)
        case .max, .min:
            for i in cols { dst[i] = src[i] }
            for k in 1..<max(n, 1) {
                let row = src + k * inner
                for i in cols {
                    let v = row[i]
                    if dst[i].isNaN { continue }
                    if v.isNaN || (kind == .max ? v > dst[i] : v < dst[i]) { dst[i] = v }
                }
            }
        }
    }

    /// ``contiguousSum(_:_:)`` with the cascade's top halves on two threads (and theirs on two more, while
    /// threads remain): the same additions in the same tree, so the same bits.
    static func parallelSum(_ p: UnsafePointer<Float>, _ n: Int, threads: Int = Threads.count) -> Float {
        guard threads > 1, n >= 1 << 15 else { return contiguousSum(p, n) }
        let half = ((n / 2) + 7) & ~7
        return withUnsafeTemporaryAllocation(of: Float.self, capacity: 2) { sums in
            nonisolated(unsafe) let (base, out) = (p, sums.baseAddress!)
            Threads.forEach(2) { t in
                out[t] = t == 0 ? parallelSum(base, half, threads: threads / 2)
                                : parallelSum(base + half, n - half, threads: threads - threads / 2)
            }
            return out[0] + out[1]
        }
    }

    /// Sum of `n` contiguous floats: blocks of up to 256 with 8 interleaved accumulators, combined by
    /// pairwise (cascade) summation, so the error grows like log n rather than n.
    @inline(__always)
    static func contiguousSum(_ p: UnsafePointer<Float>, _ n: Int) -> Float { cascade(p, n, Identity.self) }

    /// The element map of a cascade sum (a type, so that the recursion is specialised, not a closure call).
    protocol ElementMap { static func f(_ x: Float) -> Float }
    enum Identity: ElementMap { @inline(__always) static func f(_ x: Float) -> Float { x } }
    enum Square: ElementMap { @inline(__always) static func f(_ x: Float) -> Float { x * x } }

    @inline(never)
    static func cascade<M: ElementMap>(_ p: UnsafePointer<Float>, _ n: Int, _: M.Type) -> Float {
        if n > 256 {
            let half = ((n / 2) + 7) & ~7
            return cascade(p, half, M.self) + cascade(p + half, n - half, M.self)
        }
        let f = M.f
        var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0
        var a4: Float = 0, a5: Float = 0, a6: Float = 0, a7: Float = 0
        var k = 0
        while k + 8 <= n {
            a0 += f(p[k]); a1 += f(p[k + 1]); a2 += f(p[k + 2]); a3 += f(p[k + 3])
            a4 += f(p[k + 4]); a5 += f(p[k + 5]); a6 += f(p[k + 6]); a7 += f(p[k + 7])
            k += 8
        }
        var tail: Float = 0
        while k < n { tail += f(p[k]); k += 1 }
        return (((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))) + tail
    }

    /// Index of the max (`largest`) or min along an axis; first occurrence on ties, NaN wins.
    static func argExtremum(_ x: Tensor, axis: Int, largest: Bool) -> (IndexTensor, [Int]) {
        let (outer, n, inner) = Shape.split(x.shape, at: axis)
        precondition(n > 0, "arg\(largest ? "max" : "min"): empty axis in shape \(x.shape)")
        var idx = [Int](repeating: 0, count: outer * inner)
        var flat = [Int](repeating: 0, count: outer * inner)
        x.scalars.withUnsafeBufferPointer { p in
            for ob in 0..<outer {
                for i in 0..<inner {
                    let base = ob * n * inner + i
                    var best = p[base], bi = 0
                    if !best.isNaN {
                        for k in 1..<n {
                            let v = p[base + k * inner]
                            if v.isNaN { bi = k; break }
                            if largest ? v > best : v < best { best = v; bi = k }
                        }
                    }
                    idx[ob * inner + i] = bi
                    flat[ob * inner + i] = base + bi * inner
                }
            }
        }
        var shape = x.shape
        if !shape.isEmpty { shape.remove(at: axis) }
        return (IndexTensor(idx, shape: shape), flat)
    }
}

extension Tensor {
    /// The library's summation of `n` contiguous floats (the order `sum()` uses).
    public static func sumContiguous(_ p: UnsafePointer<Float>, _ n: Int) -> Float { Reduce.contiguousSum(p, n) }

    /// `Σ p[i]²` in the same order as `squared().sum()` over a contiguous run.
    public static func sumOfSquaresContiguous(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
        Reduce.contiguousSumOfSquares(p, n)
    }
}

extension Reduce {
    /// Σ p[k]² in the order of `contiguousSum` (each square rounded first), so that it equals
    /// `squared().sum()` bit for bit.
    @inline(__always)
    static func contiguousSumOfSquares(_ p: UnsafePointer<Float>, _ n: Int) -> Float { cascade(p, n, Square.self) }
}

extension Tensor {
    /// Adds rows into per-code accumulators in double precision: `acc[codes[r]·width + j] += Double(x[r·rowStride + j])`
    /// for `j < width`, over the rows `r < rows` in order where `valid[r]` — one add per row and element, so
    /// every level of the kernel gives the same sums (the EMA statistics of a codebook).
    ///
    /// - Complexity: O(rows · width).
    package static func scatterAddRows(_ x: UnsafePointer<Float>, rowStride: Int, codes: UnsafePointer<Int>, valid: UnsafePointer<Bool>,
                                      rows: Int, width: Int, into acc: UnsafeMutablePointer<Double>) {
        let order = (0..<rows).filter { valid[$0] }
        guard !order.isEmpty else { return }
        order.withUnsafeBufferPointer { scatterAddRows(x, rowStride: rowStride, codes: codes, order: $0.baseAddress!, count: $0.count, width: width, into: acc) }
    }

    /// ``scatterAddRows(_:rowStride:codes:valid:rows:width:into:)`` over the `count` rows `order` lists — the same sums
    /// when `order` holds each code's valid rows in increasing order (see ``rowsByCode(_:valid:n:codes:)``); consecutive
    /// rows then add into the same accumulator row, which stays in the first-level cache.
    ///
    /// - Complexity: O(count · width).
    package static func scatterAddRows(_ x: UnsafePointer<Float>, rowStride: Int, codes: UnsafePointer<Int>, order: UnsafePointer<Int>,
                                      count: Int, width: Int, into acc: UnsafeMutablePointer<Double>) {
        vq_scatter_add_rows(x, Int64(rowStride), UnsafeRawPointer(codes).assumingMemoryBound(to: Int64.self),
                                    UnsafeRawPointer(order).assumingMemoryBound(to: Int64.self), Int64(count), Int64(width), acc)
    }

    /// The rows `r < n` with `valid[r]`, sorted by `codes[r]` (in `0..<codes`) with each code's rows in increasing order
    /// (a counting sort: stable).
    ///
    /// - Complexity: O(n + codes).
    package static func rowsByCode(_ index: UnsafePointer<Int>, valid: UnsafePointer<Bool>, n: Int, codes c: Int) -> [Int] {
        var start = [Int](repeating: 0, count: c + 1)
        for r in 0..<n where valid[r] { start[index[r] + 1] += 1 }
        for k in 0..<c { start[k + 1] += start[k] }
        return [Int](unsafeUninitializedCapacity: start[c]) { out, initialized in
            for r in 0..<n where valid[r] {
                out[start[index[r]]] = r
                start[index[r]] += 1
            }
            initialized = start[c]
        }
    }
}
