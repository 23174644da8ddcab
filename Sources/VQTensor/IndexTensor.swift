/// A dense, row-major tensor of integer indices (code indices, gather/scatter positions).
///
/// Indices are never stored as floats. `-1` is used by the quantizers for masked positions.
public struct IndexTensor: Sendable, Equatable {
    public internal(set) var shape: [Int]
    public internal(set) var scalars: [Int]

    public init(_ scalars: [Int], shape: [Int]) {
        precondition(
            scalars.count == Shape.count(shape), "IndexTensor: \(scalars.count) scalars do not fill shape \(shape)")
        self.shape = shape
        self.scalars = scalars
    }

    public init(_ scalars: [Int]) { self.init(scalars, shape: [scalars.count]) }

    public init(repeating value: Int, shape: [Int]) {
        self.init(Array(repeating: value, count: Shape.count(shape)), shape: shape)
    }

    public var count: Int { scalars.count }
    public var rank: Int { shape.count }

    public subscript(index: Int...) -> Int {
        precondition(index.count == rank, "IndexTensor subscript: \(index.count) indices for shape \(shape)")
        var flat = 0
        for (axis, i) in index.enumerated() {
            precondition(i >= 0 && i < shape[axis], "IndexTensor subscript: \(index) out of range for \(shape)")
            flat = flat * shape[axis] + i
        }
        return scalars[flat]
    }

    /// The same indices with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> IndexTensor {
        IndexTensor(scalars, shape: Shape.resolve(newShape, count: count))
    }

    /// The indices as floats (for arithmetic such as loss weights; not for storage).
    public var asFloat: Tensor { Tensor(scalars.map { Float($0) }, shape: shape) }
}

extension IndexTensor: CustomStringConvertible {
    public var description: String {
        "IndexTensor(shape: \(shape), \(Array(scalars.prefix(16)))\(scalars.count > 16 ? "…" : ""))"
    }
}

extension Shape {
    /// Resolves one `-1` extent in a reshape target; traps with both shapes on a mismatch.
    static func resolve(_ shape: [Int], count: Int) -> [Int] {
        var s = shape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.reduce(1) { $0 * $1.element }
            precondition(known > 0 && count % known == 0, "reshape: \(count) elements cannot fill \(shape)")
            s[i] = count / known
        }
        precondition(
            s.allSatisfy { $0 >= 0 } && Shape.count(s) == count, "reshape: \(count) elements cannot fill \(shape)")
        return s
    }
}
