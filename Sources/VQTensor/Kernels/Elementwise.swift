import CVQKernels

/// Broadcasting element-wise loops. Fast paths for equal shapes and scalar operands; the general
/// path walks the output with per-operand strides (0 on broadcast axes).
enum Elementwise {
    /// Element counts from which a loop is split over the threads (each element is computed alone, so the
    /// split does not change any result).
    static let parallelThreshold = 1 << 16

    /// `body(range)` over `0..<count`, split into contiguous ranges over the threads when `count` is large.
    /// `body` runs concurrently on disjoint ranges: it must only write its own range of outputs.
    @inline(__always)
    static func ranges(_ count: Int, _ body: (Range<Int>) -> Void) {
        if count < parallelThreshold { body(0..<count); return }
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let body = body
            Threads.forRanges(count, minChunk: parallelThreshold / 2) { body($0) }
        }
    }

    @inline(__always)
    static func map(_ x: Tensor, _ f: (Float) -> Float) -> Tensor {
        Tensor.uninitialized(x.shape) { out in
            x.scalars.withUnsafeBufferPointer { a in
                for i in 0..<a.count { out[i] = f(a[i]) }
            }
        }
    }

    @inline(__always)
    static func zip(_ a: Tensor, _ b: Tensor, _ op: StaticString, _ f: (Float, Float) -> Float) -> Tensor {
        if a.shape == b.shape {
            return Tensor.uninitialized(a.shape) { out in
                a.scalars.withUnsafeBufferPointer { pa in
                    b.scalars.withUnsafeBufferPointer { pb in
                        for i in 0..<out.count { out[i] = f(pa[i], pb[i]) }
                    }
                }
            }
        }
        guard let shape = Shape.broadcast(a.shape, b.shape) else {
            preconditionFailure("\(op): shapes \(a.shape) and \(b.shape) do not broadcast")
        }
        if b.count == 1 {
            let s = b.scalars[0]
            let r = Tensor.uninitialized(a.shape) { out in
                a.scalars.withUnsafeBufferPointer { pa in for i in 0..<out.count { out[i] = f(pa[i], s) } }
            }
            return r.shape == shape ? r : r.reshapedRaw(shape)
        }
        if a.count == 1 {
            let s = a.scalars[0]
            let r = Tensor.uninitialized(b.shape) { out in
                b.scalars.withUnsafeBufferPointer { pb in for i in 0..<out.count { out[i] = f(s, pb[i]) } }
            }
            return r.shape == shape ? r : r.reshapedRaw(shape)
        }
        let sa = Shape.broadcastStrides(a.shape, to: shape)
        let sb = Shape.broadcastStrides(b.shape, to: shape)
        return Tensor.uninitialized(shape) { out in
            a.scalars.withUnsafeBufferPointer { pa in
                b.scalars.withUnsafeBufferPointer { pb in
                    walk(shape, sa, sb) { o, ia, ib, n, da, db in
                        // Rows with unit or zero steps get loops the compiler can vectorise.
                        let (d, x, y) = (out.baseAddress! + o, pa.baseAddress! + ia, pb.baseAddress! + ib)
                        switch (da, db) {
                        case (1, 1): for j in 0..<n { d[j] = f(x[j], y[j]) }
                        case (1, 0): let v = y[0]; for j in 0..<n { d[j] = f(x[j], v) }
                        case (0, 1): let v = x[0]; for j in 0..<n { d[j] = f(v, y[j]) }
                        default:
                            var ia = 0, ib = 0
                            for j in 0..<n {
                                d[j] = f(x[ia], y[ib])
                                ia += da
                                ib += db
                            }
                        }
                    }
                }
            }
        }
    }

    /// The four arithmetic operations (`op` 0 +, 1 −, 2 ×, 3 ÷; `f` the same operation): large operands of one
    /// shape, or with a scalar, run in C over the threads (a closure split over threads loses its inlining); an
    /// operand that is one row broadcast along the other's last axis (a per-channel scale) runs in C against
    /// the row repeated; anything else takes ``zip(_:_:_:_:)``. One IEEE operation per element every way: the
    /// same values.
    static func arithmetic(_ a: Tensor, _ b: Tensor, op: Int32, _ name: StaticString, _ f: (Float, Float) -> Float) -> Tensor {
        let (sa, sb): (Int64, Int64)
        if a.shape == b.shape { (sa, sb) = (1, 1) }
        else if b.count == 1 && b.rank <= a.rank { (sa, sb) = (1, 0) }
        else if a.count == 1 && a.rank <= b.rank { (sa, sb) = (0, 1) }
        else if isRow(b, of: a) { return rowBroadcast(full: a, row: b, fullFirst: true, op: op) }
        else if isRow(a, of: b) { return rowBroadcast(full: b, row: a, fullFirst: false, op: op) }
        else { return zip(a, b, name, f) }
        let shape = sa == 1 ? a.shape : b.shape
        let n = sa == 1 ? a.count : b.count
        if n < parallelThreshold { return zip(a, b, name, f) }
        return Tensor.uninitialized(shape) { out in
            a.scalars.withUnsafeBufferPointer { pa in
                b.scalars.withUnsafeBufferPointer { pb in
                    nonisolated(unsafe) let (x, y, o) = (pa.baseAddress!, pb.baseAddress!, out.baseAddress!)
                    Threads.forRanges(n, minChunk: parallelThreshold / 2) { r in
                        let lo = r.lowerBound
                        vq_arith(GEMM.level, op, x + Int(sa) * lo, sa, y + Int(sb) * lo, sb, o + lo, Int64(r.count))
                    }
                }
            }
        }
    }

    /// `row` is `[…1, d]` with `d` the last extent of `full`, of no higher rank (so it broadcasts to `full`'s shape).
    private static func isRow(_ row: Tensor, of full: Tensor) -> Bool {
        guard let d = full.shape.last, d > 1, row.rank <= full.rank, row.shape.last == d, full.count > d else { return false }
        return row.shape.dropLast().allSatisfy { $0 == 1 }
    }

    /// `full ∘ row` (or `row ∘ full`) with the row repeated over a block of rows, so that each block is one
    /// `vq_arith` call with unit steps; blocks over the threads when large.
    private static func rowBroadcast(full: Tensor, row: Tensor, fullFirst: Bool, op: Int32) -> Tensor {
        let d = row.count, rows = full.count / d
        let blockRows = Swift.max(1, 1024 / d), blockCount = blockRows * d
        var repeated = [Float](repeating: 0, count: blockCount)
        row.scalars.withUnsafeBufferPointer { r in
            for i in 0..<blockRows { for j in 0..<d { repeated[i * d + j] = r[j] } }
        }
        let blocks = (rows + blockRows - 1) / blockRows
        return Tensor.uninitialized(full.shape) { out in
            full.scalars.withUnsafeBufferPointer { pf in
                repeated.withUnsafeBufferPointer { pr in
                    nonisolated(unsafe) let (x, y, o) = (pf.baseAddress!, pr.baseAddress!, out.baseAddress!)
                    let minChunk = full.count < parallelThreshold ? Int.max : Swift.max(1, parallelThreshold / 2 / blockCount)
                    Threads.forRanges(blocks, minChunk: minChunk) { range in
                        for blk in range {
                            let lo = blk * blockCount, n = Int64(Swift.min(blockCount, full.count - lo))
                            if fullFirst { vq_arith(GEMM.level, op, x + lo, 1, y, 1, o + lo, n) }
                            else { vq_arith(GEMM.level, op, y, 1, x + lo, 1, o + lo, n) }
                        }
                    }
                }
            }
        }
    }

    /// Visits the output in rows of its last axis: `body(outOffset, aOffset, bOffset, n, aStep, bStep)`.
    @inline(__always)
    static func walk(
        _ shape: [Int], _ sa: [Int], _ sb: [Int], _ body: (Int, Int, Int, Int, Int, Int) -> Void
    ) {
        let r = shape.count
        if r == 0 {
            body(0, 0, 0, 1, 0, 0)
            return
        }
        let n = shape[r - 1]
        let rows = n == 0 ? 0 : Shape.count(shape) / n
        var idx = [Int](repeating: 0, count: r)
        var ia = 0, ib = 0
        for row in 0..<rows {
            body(row * n, ia, ib, n, sa[r - 1], sb[r - 1])
            var d = r - 2
            while d >= 0 {
                idx[d] += 1
                ia += sa[d]
                ib += sb[d]
                if idx[d] < shape[d] { break }
                ia -= sa[d] * shape[d]
                ib -= sb[d] * shape[d]
                idx[d] = 0
                d -= 1
            }
        }
    }

    /// Materialises `x` broadcast to `shape`.
    static func broadcast(_ x: Tensor, to shape: [Int]) -> Tensor {
        if x.shape == shape { return x.detached() }
        // One value everywhere (the gradient of a sum): a fill, split over the threads when large.
        if x.count == 1 {
            let v = x.scalars[0]
            return Tensor.uninitialized(shape) { out in
                nonisolated(unsafe) let d = out.baseAddress!
                ranges(out.count) { r in (d + r.lowerBound).update(repeating: v, count: r.count) }
            }
        }
        let sx = Shape.broadcastStrides(x.shape, to: shape)
        return Tensor.uninitialized(shape) { out in
            x.scalars.withUnsafeBufferPointer { px in
                walk(shape, sx, sx) { o, ia, _, n, da, _ in
                    let (d, src) = (out.baseAddress! + o, px.baseAddress! + ia)
                    if da == 0 {
                        d.update(repeating: src[0], count: n)
                    } else if da == 1 {
                        d.update(from: src, count: n)
                    } else {
                        for j in 0..<n { d[j] = src[j * da] }
                    }
                }
            }
        }
    }
}

extension Tensor {
    /// The same scalars with another shape, without recording a gradient.
    func reshapedRaw(_ newShape: [Int]) -> Tensor { Tensor(shape: newShape, node: nil, scalars: scalars) }
}
