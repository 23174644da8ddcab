import CVQKernels

/// The mean squared difference summed row by row — the commitment loss of a quantizer, in one order that every
/// path can reach: the differentiable forward, the forward that never gathers the selected codes, and a nearest-code
/// search that forms each row's sum while the row and its code are in cache
/// (``nearestCodesPerHead(_:metric:squaredErrors:)``).
///
/// Each row's sum `Σⱼ (aⱼ − bⱼ)²` is taken in double precision — every difference rounded to `Float` and squared
/// exactly — over eight lanes (lane `i`: elements `i, i+8, …`), the lanes combined `((0+4)+(2+6))+((1+5)+(3+7))`,
/// then the last `d mod 8` elements added in order; the rows' sums are then added in row order and divided by the
/// element count. (Any fixed order gives the same float almost always; one order makes the paths equal bit for bit.)
extension Tensor {
    /// Row sums `Σⱼ (a[r, j] − b[row(r), j])²` of `rows` rows of `d` in double precision (the order above), over the
    /// threads; row `r` of `b` is `b + (index?[r] ?? r) · d`.
    ///
    /// - Complexity: O(rows · d).
    public static func rowSquaredDifferences(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, index: UnsafePointer<Int64>?,
                                             rows: Int, d: Int, into out: UnsafeMutablePointer<Double>, threaded: Bool = true) {
        nonisolated(unsafe) let (pa, pb, pi, po) = (a, b, index, out)
        Threads.forRanges(rows, minChunk: threaded ? Swift.max(16, (1 << 15) / Swift.max(d, 1)) : Int.max) { range in
            let r0 = range.lowerBound
            vq_squared_differences_rows(GEMM.level, pa + r0 * d, Int64(d), pi == nil ? pb + r0 * d : pb, pi.map { $0 + r0 }, Int64(d),
                                        Int64(range.count), Int64(d), po + r0)
        }
    }

    /// `(Σ rows) / elements` in row order, as a scalar tensor (0 for no elements: an empty batch has no loss).
    package static func meanOfRowSums(_ sums: [Double], elements: Int) -> Tensor {
        guard elements > 0 else { return Tensor(0) }
        var total = 0.0
        for s in sums { total += s }
        return Tensor(Float(total / Double(elements)))
    }

    /// `mean((self − other)²)` over every element (same shapes), summed row by row along the last axis (the order
    /// above): the commitment loss. With a gradient graph, the backward is `2(a − b)/N` for `self` and its negation
    /// for `other`, as ``meanSquaredDifference(_:)``'s.
    ///
    /// - Complexity: O(count).
    public func meanSquaredRowDifference(_ other: Tensor) -> Tensor {
        precondition(shape == other.shape, "meanSquaredRowDifference: shapes \(shape) and \(other.shape)")
        let n = count, d = rank == 0 ? 1 : shape[rank - 1], rows = d == 0 ? 0 : n / d
        let differentiable = (requiresGradient || other.requiresGradient) && GradMode.isEnabled
        guard n > 0 else { return Tensor(0) }  // no elements: no loss (and no gradient to give)
        var sums = [Double](repeating: 0, count: rows)
        withUnsafeScalars { pa in
            other.withUnsafeScalars { pb in
                sums.withUnsafeMutableBufferPointer {
                    Tensor.rowSquaredDifferences(pa.baseAddress!, pb.baseAddress!, index: nil, rows: rows, d: d, into: $0.baseAddress!)
                }
            }
        }
        let value = Tensor.meanOfRowSums(sums, elements: n)
        guard differentiable else { return value }
        return Tensor.record(value, .meanSquaredDifference(difference: detached() - other.detached()), [self, other])
    }

    /// `mean((codes[h][indices[h, r]] − other[h, r])²)` — ``meanSquaredRowDifference(_:)`` of the gathered rows, bit for
    /// bit, without gathering them (the commitment loss of a codebook forward that needs no quantized tensor).
    /// `codes [h, c, d]`, `indices [h, N]`, `other [h, N, d]`; no gradient graph.
    ///
    /// - Complexity: O(h · N · d), no `[h, N, d]` buffer.
    package static func meanSquaredRowDifference(gathering codes: Tensor, indices: IndexTensor, _ other: Tensor) -> Tensor {
        precondition(codes.rank == 3 && other.rank == 3 && indices.shape == [other.shape[0], other.shape[1]]
                     && codes.shape[0] == other.shape[0] && codes.shape[2] == other.shape[2],
                     "meanSquaredRowDifference(gathering:): codes \(codes.shape), indices \(indices.shape), other \(other.shape)")
        precondition(!((codes.requiresGradient || other.requiresGradient) && GradMode.isEnabled),
                     "meanSquaredRowDifference(gathering:): no gradient graph")
        let (h, c, n, d) = (codes.shape[0], codes.shape[1], other.shape[1], other.shape[2])
        precondition(indices.scalars.allSatisfy { $0 >= 0 && $0 < c }, "meanSquaredRowDifference(gathering:): an index outside \(c) codes")
        guard h * n * d > 0 else { return Tensor(0) }
        // Flat row numbers into the [h·c, d] table.
        let flat = indices.scalars.enumerated().map { Int64(($0.offset / n) * c + $0.element) }
        var sums = [Double](repeating: 0, count: h * n)
        other.withUnsafeScalars { po in
            codes.withUnsafeScalars { pc in
                flat.withUnsafeBufferPointer { pi in
                    sums.withUnsafeMutableBufferPointer {
                        // x − code: the same squares as code − x (a rounded difference only changes sign).
                        rowSquaredDifferences(po.baseAddress!, pc.baseAddress!, index: pi.baseAddress!, rows: h * n, d: d,
                                              into: $0.baseAddress!)
                    }
                }
            }
        }
        return meanOfRowSums(sums, elements: h * n * d)
    }
}
