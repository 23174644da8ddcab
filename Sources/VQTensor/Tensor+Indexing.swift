// Gather / index-select and their adjoints scatter-add / index-add, and one-hot encoding.

extension Tensor {
    /// `torch.gather`: `out[o, j, i] = self[o, index[o, j, i], i]` viewing both as `[outer, ·, inner]`
    /// around `axis`. `index` has the shape of `self` except along `axis`.
    public func gather(axis: Int, index: IndexTensor) -> Tensor {
        let a = Shape.axis(axis, rank: rank, "gather")
        checkSameExceptAxis(index.shape, a, "gather")
        let (outer, n, inner) = Shape.split(shape, at: a)
        let m = index.shape[a]
        let out = Tensor.uninitialized(index.shape) { o in
            for ob in 0..<outer {
                for j in 0..<m {
                    for i in 0..<inner {
                        let pos = (ob * m + j) * inner + i
                        let k = index.scalars[pos]
                        precondition(k >= 0 && k < n, "gather: index \(k) out of range 0..<\(n) (shape \(shape))")
                        o[pos] = scalars[(ob * n + k) * inner + i]
                    }
                }
            }
        }
        return Tensor.record(out, .gather(input: shape, axis: a, index: index), [self])
    }

    /// Rows of per-head tables: `self [h, c, d]` (head `j`'s table is `self[j]`), `indices [h, …]` with values in
    /// `0..<c` → `[h, …, d]`, row `indices[j, …]` of table `j`. Differentiable in `self` (an index select of the
    /// flattened `[h·c, d]` table).
    ///
    /// - Complexity: O(indices.count · d).
    package func rowsPerHead(_ indices: IndexTensor) -> Tensor {
        precondition(rank == 3 && indices.rank >= 1 && indices.shape[0] == shape[0],
                     "rowsPerHead: tables \(shape) and indices \(indices.shape) must be [h, c, d] and [h, …]")
        let (h, c, d) = (shape[0], shape[1], shape[2])
        if h == 1 { return reshaped([c, d]).indexSelect(axis: 0, indices).reshaped(indices.shape + [d]) }
        let perHead = indices.count / h
        let flat = IndexTensor(indices.scalars.enumerated().map { $0.offset / perHead * c + $0.element }, shape: indices.shape)
        return reshaped([h * c, d]).indexSelect(axis: 0, flat).reshaped(indices.shape + [d])
    }

    /// Selects slices along `axis`: the result's shape is `shape[..<axis] + index.shape + shape[(axis+1)...]`.
    /// With `axis: 0` and a `[K, D]` codebook this is an embedding lookup.
    public func indexSelect(axis: Int = 0, _ index: IndexTensor) -> Tensor {
        let a = Shape.axis(axis, rank: rank, "indexSelect")
        let (outer, n, inner) = Shape.split(shape, at: a)
        let m = index.count
        for k in index.scalars {
            precondition(k >= 0 && k < n, "indexSelect: index \(k) out of range 0..<\(n) for axis \(a) of shape \(shape)")
        }
        let outShape = Array(shape[..<a]) + index.shape + Array(shape[(a + 1)...])
        let out = Tensor.uninitialized(outShape) { o in
            scalars.withUnsafeBufferPointer { p in
                for ob in 0..<outer {
                    for j in 0..<m {
                        let src = p.baseAddress! + (ob * n + index.scalars[j]) * inner
                        (o.baseAddress! + (ob * m + j) * inner).update(from: src, count: inner)
                    }
                }
            }
        }
        return Tensor.record(out, .indexSelect(input: shape, axis: a, index: index), [self])
    }

    /// `torch.scatter_add`: a copy of `self` with `self[o, index[o, j, i], i] += source[o, j, i]`.
    /// Additions into one element happen in increasing source order.
    public func scatterAdd(axis: Int, index: IndexTensor, source: Tensor) -> Tensor {
        let a = Shape.axis(axis, rank: rank, "scatterAdd")
        precondition(index.shape == source.shape, "scatterAdd: index \(index.shape) vs source \(source.shape)")
        checkSameExceptAxis(index.shape, a, "scatterAdd")
        let (outer, n, inner) = Shape.split(shape, at: a)
        let m = index.shape[a]
        var out = detached()
        out.scalars.withUnsafeMutableBufferPointer { o in
            for ob in 0..<outer {
                for j in 0..<m {
                    for i in 0..<inner {
                        let pos = (ob * m + j) * inner + i
                        let k = index.scalars[pos]
                        precondition(k >= 0 && k < n, "scatterAdd: index \(k) out of range 0..<\(n) (shape \(shape))")
                        o[(ob * n + k) * inner + i] += source.scalars[pos]
                    }
                }
            }
        }
        return Tensor.record(out, .scatterAdd(axis: a, index: index), [self, source])
    }

    /// `torch.index_add`: a copy of `self` with slice `index[j]` along `axis` increased by slice `j` of
    /// `source` (whose shape is `shape[..<axis] + index.shape + shape[(axis+1)...]`). Additions into one
    /// slice happen in increasing `j`, so the result is deterministic.
    public func indexAdd(axis: Int = 0, _ index: IndexTensor, _ source: Tensor) -> Tensor {
        let a = Shape.axis(axis, rank: rank, "indexAdd")
        let (outer, n, inner) = Shape.split(shape, at: a)
        let m = index.count
        let expected = Array(shape[..<a]) + index.shape + Array(shape[(a + 1)...])
        precondition(
            Shape.count(expected) == source.count && source.count == outer * m * inner,
            "indexAdd: source \(source.shape) for index \(index.shape) into \(shape) along axis \(a)")
        var out = detached()
        out.scalars.withUnsafeMutableBufferPointer { o in
            source.scalars.withUnsafeBufferPointer { s in
                for ob in 0..<outer {
                    for j in 0..<m {
                        let k = index.scalars[j]
                        precondition(k >= 0 && k < n, "indexAdd: index \(k) out of range 0..<\(n) (shape \(shape))")
                        let dst = o.baseAddress! + (ob * n + k) * inner
                        let src = s.baseAddress! + (ob * m + j) * inner
                        for i in 0..<inner { dst[i] += src[i] }
                    }
                }
            }
        }
        return Tensor.record(out, .indexAdd(axis: a, index: index), [self, source])
    }

    /// One-hot rows: shape `indices.shape + [classes]`; an index of -1 gives a row of zeros.
    public static func oneHot(_ indices: IndexTensor, classes: Int) -> Tensor {
        var out = [Float](repeating: 0, count: indices.count * classes)
        for (r, k) in indices.scalars.enumerated() where k != -1 {
            precondition(k >= 0 && k < classes, "oneHot: index \(k) out of range 0..<\(classes)")
            out[r * classes + k] = 1
        }
        return Tensor(out, shape: indices.shape + [classes])
    }

    private func checkSameExceptAxis(_ other: [Int], _ a: Int, _ op: StaticString) {
        var s0 = shape, s1 = other
        precondition(s0.count == s1.count, "\(op): index shape \(other) vs tensor \(shape)")
        s0[a] = 0
        s1[a] = 0
        precondition(s0 == s1, "\(op): index shape \(other) vs tensor \(shape) (must agree except on axis \(a))")
    }
}
