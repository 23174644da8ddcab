// Shape manipulation: reshape, permute/transpose, expand, squeeze, concat, split and slice.

extension Tensor {
    /// The same elements with another shape; one extent may be `-1`.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        let s = Shape.resolve(newShape, count: count)
        return Tensor.record(reshapedRaw(s), .reshape(input: shape), [self])
    }
    public func reshaped(_ newShape: Int...) -> Tensor { reshaped(newShape) }

    /// Flattens axes `start...end` into one.
    public func flattened(from start: Int = 0, to end: Int = -1) -> Tensor {
        if rank == 0 { return reshaped([1]) }
        let s = Shape.axis(start, rank: rank, "flattened"), e = Shape.axis(end, rank: rank, "flattened")
        precondition(s <= e, "flattened: start \(start) after end \(end) for shape \(shape)")
        return reshaped(Array(shape[..<s]) + [Shape.count(Array(shape[s...e]))] + Array(shape[(e + 1)...]))
    }

    /// Inserts an axis of extent 1.
    public func unsqueezed(axis: Int) -> Tensor {
        let a = axis < 0 ? axis + rank + 1 : axis
        precondition(a >= 0 && a <= rank, "unsqueezed: axis \(axis) for shape \(shape)")
        var s = shape
        s.insert(1, at: a)
        return reshaped(s)
    }

    /// Removes axes of extent 1 (`axis` alone, or all).
    public func squeezed(axis: Int? = nil) -> Tensor {
        if let axis {
            let a = Shape.axis(axis, rank: rank, "squeezed")
            guard shape[a] == 1 else { return self }
            var s = shape
            s.remove(at: a)
            return reshaped(s)
        }
        return reshaped(shape.filter { $0 != 1 })
    }

    /// Reorders the axes: result axis `i` is input axis `permutation[i]`.
    public func permuted(_ permutation: [Int]) -> Tensor {
        precondition(
            permutation.sorted() == Array(0..<rank), "permuted: \(permutation) is not a permutation for shape \(shape)")
        if permutation == Array(0..<rank) { return self }
        let outShape = permutation.map { shape[$0] }
        let (core, corePerm) = Permute.reduced(shape: shape, perm: permutation)
        if count == 0 || corePerm == Array(0..<core.count) {
            // Only extent-1 axes move: the same elements in the same order.
            return Tensor.record(reshapedRaw(outShape), .permute(permutation), [self])
        }
        let m = core.count
        if m >= 2 && corePerm == Array(0..<(m - 2)) + [m - 1, m - 2] {
            // A batch of transposes of the last two (merged) axes.
            let out = Tensor.uninitialized(outShape) { o in
                scalars.withUnsafeBufferPointer { p in
                    Permute.transposeBatch(p.baseAddress!, o.baseAddress!, batch: core[..<(m - 2)].reduce(1, *), rows: core[m - 2],
                                           cols: core[m - 1])
                }
            }
            return Tensor.record(out, .permute(permutation), [self])
        }
        let inStrides = Shape.strides(shape)
        let st = permutation.map { inStrides[$0] }
        let out = Tensor.uninitialized(outShape) { o in
            scalars.withUnsafeBufferPointer { p in
                Elementwise.walk(outShape, st, st) { off, ia, _, n, da, _ in
                    var ia = ia
                    for j in 0..<n {
                        o[off + j] = p[ia]
                        ia += da
                    }
                }
            }
        }
        return Tensor.record(out, .permute(permutation), [self])
    }
    public func permuted(_ permutation: Int...) -> Tensor { permuted(permutation) }

    /// Swaps two axes (the last two by default).
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        var p = Array(0..<rank)
        p.swapAt(Shape.axis(a, rank: rank, "transposed"), Shape.axis(b, rank: rank, "transposed"))
        return permuted(p)
    }

    /// Materialises a broadcast to `newShape` (NumPy rules); the gradient sums back.
    public func expanded(to newShape: [Int]) -> Tensor {
        precondition(
            Shape.broadcast(shape, newShape) == newShape, "expanded: shape \(shape) does not broadcast to \(newShape)")
        if newShape == shape { return self }
        return Tensor.record(Elementwise.broadcast(self, to: newShape), .expand(input: shape), [self])
    }

    /// Concatenates tensors along `axis`; all other extents must agree.
    public static func concat(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
        precondition(!tensors.isEmpty, "concat: no tensors")
        let first = tensors[0]
        let a = Shape.axis(axis, rank: first.rank, "concat")
        if tensors.count == 1 { return first }  // nothing to join: no copy
        for t in tensors {
            var s1 = t.shape, s0 = first.shape
            precondition(s1.count == s0.count, "concat: shapes \(tensors.map(\.shape)) along axis \(axis)")
            s1[a] = 0
            s0[a] = 0
            precondition(s1 == s0, "concat: shapes \(tensors.map(\.shape)) along axis \(axis)")
        }
        let sizes = tensors.map { $0.shape[a] }
        var outShape = first.shape
        outShape[a] = sizes.reduce(0, +)
        let (outer, _, inner) = Shape.split(outShape, at: a)
        let total = outShape[a]
        let out = Tensor.uninitialized(outShape) { o in
            var offset = 0
            for (t, n) in zip(tensors, sizes) {
                t.scalars.withUnsafeBufferPointer { p in
                    for ob in 0..<outer {
                        let dst = o.baseAddress! + (ob * total + offset) * inner
                        let src = p.baseAddress! + ob * n * inner
                        dst.update(from: src, count: n * inner)
                    }
                }
                offset += n
            }
        }
        return record(out, .concat(axis: a, sizes: sizes), tensors)
    }

    /// Stacks equally shaped tensors along a new axis.
    public static func stack(_ tensors: [Tensor], axis: Int = 0) -> Tensor {
        precondition(!tensors.isEmpty, "stack: no tensors")
        return concat(tensors.map { $0.unsqueezed(axis: axis) }, axis: axis)
    }

    /// The elements `range` along `axis`.
    public func slice(axis: Int, _ range: Range<Int>) -> Tensor {
        let a = Shape.axis(axis, rank: rank, "slice")
        precondition(
            range.lowerBound >= 0 && range.upperBound <= shape[a],
            "slice: range \(range) out of bounds for axis \(axis) of shape \(shape)")
        if range.count == shape[a] { return self }  // the whole axis: no copy
        var outShape = shape
        outShape[a] = range.count
        let (outer, n, inner) = Shape.split(shape, at: a)
        let out = Tensor.uninitialized(outShape) { o in
            scalars.withUnsafeBufferPointer { p in
                for ob in 0..<outer where range.count > 0 {
                    let src = p.baseAddress! + (ob * n + range.lowerBound) * inner
                    (o.baseAddress! + ob * range.count * inner).update(from: src, count: range.count * inner)
                }
            }
        }
        return Tensor.record(out, .slice(input: shape, axis: a, start: range.lowerBound), [self])
    }

    /// Splits along `axis` into pieces of the given sizes.
    public func split(sizes: [Int], axis: Int = 0) -> [Tensor] {
        let a = Shape.axis(axis, rank: rank, "split")
        precondition(sizes.reduce(0, +) == shape[a], "split: sizes \(sizes) do not sum to \(shape[a]) in shape \(shape)")
        var start = 0
        return sizes.map { n in
            defer { start += n }
            return slice(axis: a, start..<(start + n))
        }
    }

    /// Splits along `axis` into `parts` equal pieces.
    public func split(parts: Int, axis: Int = 0) -> [Tensor] {
        let a = Shape.axis(axis, rank: rank, "split")
        precondition(parts > 0 && shape[a] % parts == 0, "split: \(shape[a]) not divisible into \(parts) parts")
        return split(sizes: Array(repeating: shape[a] / parts, count: parts), axis: a)
    }
}
