import CVQKernels

/// A dense, row-major tensor of `Float` with value semantics and reverse-mode autograd.
///
/// `Tensor` stores its elements in a copy-on-write buffer, so copies are cheap until one of them is
/// written. A tensor that requires gradients carries a reference to its node in the autograd graph;
/// every operation on such tensors records how to differentiate itself (see ``backward(_:)``).
///
/// ```swift
/// let x = Tensor([1, 2, 3, 4], shape: [2, 2]).requiringGradient()
/// let y = (x * x + 5 * x).sum()      // y = Σ x² + 5x
/// y.backward()
/// x.grad!.scalars                    // dy/dx = 2x + 5 = [7, 9, 11, 13]
/// ```
public struct Tensor: Sendable {
    /// The extent of each axis, outermost first. A scalar has shape `[]`.
    public internal(set) var shape: [Int]
    /// The elements in row-major order.
    public internal(set) var scalars: [Float]
    /// The autograd node, `nil` when the tensor does not require gradients.
    var node: GradNode?

    /// Creates a tensor from row-major scalars.
    ///
    /// - Precondition: `scalars.count` equals the product of `shape`.
    public init(_ scalars: [Float], shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative extent in shape \(shape)")
        precondition(
            scalars.count == Shape.count(shape),
            "Tensor: \(scalars.count) scalars do not fill shape \(shape)")
        self.shape = shape
        self.scalars = scalars
        self.node = nil
    }

    /// Creates a one-dimensional tensor.
    public init(_ scalars: [Float]) { self.init(scalars, shape: [scalars.count]) }

    /// Creates a scalar (0-dimensional) tensor.
    public init(_ value: Float) { self.init([value], shape: []) }

    /// Creates a tensor from nested rows: `Tensor(rows: [[1, 2], [3, 4]])` has shape `[2, 2]`.
    public init(rows: [[Float]]) {
        let cols = rows.first?.count ?? 0
        precondition(rows.allSatisfy { $0.count == cols }, "Tensor(rows:): ragged rows")
        self.init(rows.flatMap { $0 }, shape: [rows.count, cols])
    }

    init(shape: [Int], node: GradNode?, scalars: [Float]) {
        self.shape = shape
        self.scalars = scalars
        self.node = node
    }

    /// The number of elements.
    @inlinable public var count: Int { scalars.count }
    /// The number of axes.
    @inlinable public var rank: Int { shape.count }

    /// The single element of a one-element tensor.
    public var item: Float {
        precondition(scalars.count == 1, "item: tensor of shape \(shape) has \(scalars.count) elements")
        return scalars[0]
    }

    /// The element at a full multi-index.
    public subscript(index: Int...) -> Float {
        precondition(index.count == rank, "subscript: \(index.count) indices for shape \(shape)")
        var flat = 0
        for (axis, i) in index.enumerated() {
            precondition(i >= 0 && i < shape[axis], "subscript: index \(index) out of range for shape \(shape)")
            flat = flat * shape[axis] + i
        }
        return scalars[flat]
    }

    /// Replaces the elements in place, keeping the shape. Does not record a gradient: use it for
    /// parameter updates and buffers, never inside a differentiable computation.
    public mutating func assign(_ other: Tensor) {
        precondition(other.shape == shape, "assign: shape \(other.shape) into \(shape)")
        scalars = other.scalars
    }

    /// Mutable access to the raw elements (no gradient is recorded).
    public mutating func withUnsafeMutableScalars<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeMutableBufferPointer { try body($0) }
    }

    /// Read-only access to the raw elements.
    public func withUnsafeScalars<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeBufferPointer { try body($0) }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let shown = scalars.prefix(16).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(shown)\(scalars.count > 16 ? ", …" : "")])"
    }
}

extension Tensor: Equatable {
    /// Shapes equal and elements bit-identical (NaN equals NaN with the same bits); gradients ignored.
    public static func == (lhs: Tensor, rhs: Tensor) -> Bool {
        lhs.shape == rhs.shape && lhs.scalars.elementsEqual(rhs.scalars) { $0.bitPattern == $1.bitPattern }
    }
}

// MARK: - Creation

extension Tensor {
    /// A tensor filled with `value`.
    public init(repeating value: Float, shape: [Int]) {
        self.init(Array(repeating: value, count: Shape.count(shape)), shape: shape)
    }

    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(repeating: 0, shape: shape) }
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(repeating: 1, shape: shape) }
    public static func full(_ shape: [Int], _ value: Float) -> Tensor { Tensor(repeating: value, shape: shape) }

    /// `[start, start + step, …]` up to but excluding `end`.
    public static func arange(_ start: Float = 0, _ end: Float, step: Float = 1) -> Tensor {
        precondition(step != 0, "arange: step is 0")
        let n = Swift.max(0, Int(((end - start) / step).rounded(.up)))
        return Tensor((0..<n).map { start + Float($0) * step })
    }

    /// A tensor of zeros with the shape of `self`.
    public func zerosLike() -> Tensor { Tensor.zeros(shape) }

    /// Builds a tensor whose elements are computed by `body` into an uninitialised buffer.
    static func uninitialized(
        _ shape: [Int], _ body: (UnsafeMutableBufferPointer<Float>) -> Void
    ) -> Tensor {
        let n = Shape.count(shape)
        let s = [Float](unsafeUninitializedCapacity: n) { buf, count in
            if n >= 1 << 21, let base = buf.baseAddress { vq_advise_hugepages(base, Int64(n * 4)) }
            body(buf)
            count = n
        }
        return Tensor(shape: shape, node: nil, scalars: s)
    }
}
