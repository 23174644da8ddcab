/// Shape arithmetic shared by the kernels: element counts, strides, broadcasting and axis checks.
public enum Shape {
    /// The number of elements of a shape (1 for a scalar).
    @inlinable public static func count(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    /// Row-major strides of a contiguous tensor.
    public static func strides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            s[i] = acc
            acc *= shape[i]
        }
        return s
    }

    /// The NumPy broadcast of two shapes, or `nil` when they are incompatible.
    public static func broadcast(_ a: [Int], _ b: [Int]) -> [Int]? {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            if da == db || db == 1 { out[i] = da } else if da == 1 { out[i] = db } else { return nil }
        }
        return out
    }

    /// Strides that read a tensor of `shape` as if it had the broadcast shape `target` (0 on
    /// broadcast axes).
    static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        let s = strides(shape)
        let offset = target.count - shape.count
        return (0..<target.count).map { i in
            i < offset ? 0 : (shape[i - offset] == 1 && target[i] != 1 ? 0 : s[i - offset])
        }
    }

    /// Normalises a possibly negative axis; traps with the shape when out of range.
    public static func axis(_ axis: Int, rank: Int, _ op: StaticString = #function) -> Int {
        let a = axis < 0 ? axis + rank : axis
        precondition(a >= 0 && a < max(rank, 1), "\(op): axis \(axis) out of range for rank \(rank)")
        return a
    }

    /// `[outer, n, inner]` of a shape around one axis.
    static func split(_ shape: [Int], at axis: Int) -> (outer: Int, n: Int, inner: Int) {
        (count(Array(shape[..<axis])), shape.isEmpty ? 1 : shape[axis], count(Array(shape[(axis + 1)...])))
    }
}
