// Reductions with `keepDims`, arg-reductions, log-sum-exp and (log-)softmax.

extension Tensor {
    private func normalizedAxes(_ axes: [Int]?, _ op: StaticString) -> [Int] {
        guard let axes else { return Array(0..<rank) }
        let a = axes.map { Shape.axis($0, rank: rank, op) }
        precondition(Set(a).count == a.count, "\(op): repeated axis in \(axes) for shape \(shape)")
        return a.sorted()
    }

    private func reducedShape(_ axes: [Int], keepDims: Bool) -> (kept: [Int], out: [Int]) {
        var kept = shape
        for a in axes where a < kept.count { kept[a] = 1 }
        let out = keepDims ? kept : shape.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
        return (kept, out)
    }

    private func rawReduce(_ axes: [Int], _ kind: Reduce.Kind) -> Tensor {
        var r = detached()
        if rank == 0 { return r }
        if axes.count == rank && kind == .sum {
            r = r.reshapedRaw([count])
            return Reduce.along(r, axis: 0, .sum)
        }
        for a in axes.reversed() { r = Reduce.along(r, axis: a, kind) }
        return r
    }

    /// Sum over `axes` (all axes when `nil`).
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = normalizedAxes(axes, "sum")
        let (kept, out) = reducedShape(ax, keepDims: keepDims)
        let r = rawReduce(ax, .sum).reshapedRaw(out)
        return Tensor.record(r, .sum(input: shape, keptShape: kept), [self])
    }
    public func sum(axis: Int, keepDims: Bool = false) -> Tensor { sum(axes: [axis], keepDims: keepDims) }

    /// Mean over `axes` (all axes when `nil`): the sum divided by the number of reduced elements.
    public func mean(axes: [Int]? = nil, keepDims: Bool = false) -> Tensor {
        let ax = normalizedAxes(axes, "mean")
        let (kept, out) = reducedShape(ax, keepDims: keepDims)
        let n = ax.reduce(1) { $0 * shape[$1] }
        let r = Elementwise.map(rawReduce(ax, .sum).reshapedRaw(out)) { $0 / Float(n) }
        return Tensor.record(r, .mean(input: shape, keptShape: kept, count: n), [self])
    }
    public func mean(axis: Int, keepDims: Bool = false) -> Tensor { mean(axes: [axis], keepDims: keepDims) }

    private func extremum(axis: Int?, keepDims: Bool, largest: Bool) -> Tensor {
        let flatSelf = axis == nil ? reshapedRaw([count]) : detached()
        let a = axis.map { Shape.axis($0, rank: rank, largest ? "max" : "min") } ?? 0
        let (idx, positions) = Reduce.argExtremum(flatSelf, axis: a, largest: largest)
        let values = positions.map { scalars[$0] }
        var outShape = idx.shape
        if keepDims {
            outShape = axis == nil ? [Int](repeating: 1, count: rank) : { var s = shape; s[a] = 1; return s }()
        }
        return Tensor.record(Tensor(values, shape: outShape), .extremum(input: shape, positions: positions), [self])
    }

    /// Maximum along `axis` (over all elements when `nil`); the gradient flows to the first maximum.
    public func max(axis: Int? = nil, keepDims: Bool = false) -> Tensor { extremum(axis: axis, keepDims: keepDims, largest: true) }
    /// Minimum along `axis` (over all elements when `nil`); the gradient flows to the first minimum.
    public func min(axis: Int? = nil, keepDims: Bool = false) -> Tensor { extremum(axis: axis, keepDims: keepDims, largest: false) }

    /// Index of the largest element along `axis` (first on ties).
    public func argmax(axis: Int) -> IndexTensor {
        Reduce.argExtremum(self, axis: Shape.axis(axis, rank: rank, "argmax"), largest: true).0
    }
    /// Index of the smallest element along `axis` (first on ties).
    public func argmin(axis: Int) -> IndexTensor {
        Reduce.argExtremum(self, axis: Shape.axis(axis, rank: rank, "argmin"), largest: false).0
    }

    /// `log Σ exp(x)` along `axis`, computed stably around the maximum.
    public func logSumExp(axis: Int, keepDims: Bool = false) -> Tensor {
        let a = Shape.axis(axis, rank: rank, "logSumExp")
        let m = Elementwise.map(Reduce.along(detached(), axis: a, .max)) { $0.isFinite ? $0 : 0 }
        let e = Elementwise.zip(detached(), m, "logSumExp") { expf_($0 - $1) }
        let y = Elementwise.zip(Reduce.along(e, axis: a, .sum), m, "logSumExp") { logf_($0) + $1 }
        let out = keepDims ? y : y.reshapedRaw(shape.enumerated().filter { $0.offset != a }.map(\.element))
        return Tensor.record(out, .logSumExp(x: detached(), y: y), [self])
    }

    /// Softmax along `axis`.
    public func softmax(axis: Int = -1) -> Tensor {
        let a = Shape.axis(axis, rank: rank, "softmax")
        let m = Elementwise.map(Reduce.along(detached(), axis: a, .max)) { $0.isFinite ? $0 : 0 }
        let e = Elementwise.zip(detached(), m, "softmax") { expf_($0 - $1) }
        let y = Elementwise.zip(e, Reduce.along(e, axis: a, .sum), "softmax") { $0 / $1 }
        return Tensor.record(y, .softmax(y: y, axis: a), [self])
    }

    /// Log-softmax along `axis`: `x - logSumExp(x)`.
    public func logSoftmax(axis: Int = -1) -> Tensor {
        let a = Shape.axis(axis, rank: rank, "logSoftmax")
        let m = Elementwise.map(Reduce.along(detached(), axis: a, .max)) { $0.isFinite ? $0 : 0 }
        let shifted = Elementwise.zip(detached(), m, "logSoftmax") { $0 - $1 }
        let lse = Elementwise.map(Reduce.along(Elementwise.map(shifted) { expf_($0) }, axis: a, .sum)) { logf_($0) }
        let y = Elementwise.zip(shifted, lse, "logSoftmax") { $0 - $1 }
        return Tensor.record(y, .logSoftmax(y: y, axis: a), [self])
    }
}

extension Tensor {
    /// `mean((self − other)²)` over every element (same shapes): one pass accumulating in double precision (four
    /// lanes) in blocks of a fixed size (the same value on any thread count). With a gradient graph, the difference is
    /// kept and the backward is `2(a − b)/N` for `self` and its negation for `other` (one pass each).
    public func meanSquaredDifference(_ other: Tensor) -> Tensor {
        precondition(shape == other.shape, "meanSquaredDifference: shapes \(shape) and \(other.shape)")
        let n = count
        let differentiable = (requiresGradient || other.requiresGradient) && GradMode.isEnabled
        // No elements: no loss, and no gradient to give (PyTorch's mse_loss gives NaN; an empty batch must not
        // turn a training loop's loss into NaN).
        guard n > 0 else { return Tensor(0) }
        var partial = [Double]()
        /// Block sums of squared differences; with `diff`, the same pass also stores the differences.
        func sumBlocks(_ diff: UnsafeMutablePointer<Float>?) {
            withUnsafeScalars { pa in
                other.withUnsafeScalars { pb in
                    nonisolated(unsafe) let a = pa.baseAddress!
                    partial = Tensor.squaredDifferenceBlocks(count: n, rowLength: n, row: { _ in a }, other: pb.baseAddress!, difference: diff)
                }
            }
        }
        // With a graph, the difference the backward needs comes from the same pass.
        let difference: Tensor? = differentiable ? Tensor.uninitialized(shape) { sumBlocks($0.baseAddress!) } : nil
        if difference == nil { sumBlocks(nil) }
        let value = Tensor(Float(partial.reduce(0, +) / Double(n)))
        guard let difference else { return value }
        return Tensor.record(value, .meanSquaredDifference(difference: difference), [self, other])
    }

    /// Sums of `(a − b)²` over blocks of 2¹⁶ elements in double precision (four lanes, then the lanes, then the
    /// tail), `a` given by rows of `rowLength` elements (`row(r)`; one row for a contiguous tensor, a multiple
    /// of four otherwise, so the lanes run on across rows exactly as over one buffer). With `difference`, the
    /// pass also stores `a − b`.
    static func squaredDifferenceBlocks(count n: Int, rowLength: Int, row: @escaping (Int) -> UnsafePointer<Float>,
                                        other b: UnsafePointer<Float>, difference: UnsafeMutablePointer<Float>?) -> [Double] {
        let block = 1 << 16, blocks = (n + block - 1) / block
        var partial = [Double](repeating: 0, count: blocks)
        partial.withUnsafeMutableBufferPointer { pp in
            nonisolated(unsafe) let (out, diff, row, b) = (pp.baseAddress!, difference, row, b)
            Threads.forRanges(blocks, minChunk: 4) { range in
                for blk in range {
                    let (lo, hi) = (blk * block, Swift.min(n, (blk + 1) * block))
                    var lanes = SIMD4<Double>()
                    var i = lo
                    // `a[i]` for i in the current row, which ends at `rowEnd`.
                    var a = row(lo / rowLength) - (lo / rowLength) * rowLength
                    var rowEnd = (lo / rowLength + 1) * rowLength
                    while i + 4 <= hi {
                        if i == rowEnd {
                            a = row(i / rowLength) - i
                            rowEnd += rowLength
                        }
                        let e = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD4<Float>.self)
                            - UnsafeRawPointer(b + i).loadUnaligned(as: SIMD4<Float>.self)
                        if let diff { UnsafeMutableRawPointer(diff + i).storeBytes(of: e, as: SIMD4<Float>.self) }
                        let d = SIMD4<Double>(e)
                        lanes += d * d
                        i += 4
                    }
                    var acc = lanes.sum()
                    while i < hi {
                        let e = a[i] - b[i]
                        diff?[i] = e
                        acc += Double(e) * Double(e)
                        i += 1
                    }
                    out[blk] = acc
                }
            }
        }
        return partial
    }
}
