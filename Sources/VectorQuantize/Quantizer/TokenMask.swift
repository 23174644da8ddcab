import VQTensor

/// Which tokens of a `[b, n]` batch are real and which are padding (the reference's `mask=`): one type for every
/// quantizer's forward and options, made from flags (row-major, `true` = a real token), a `[b, n]` tensor
/// (nonzero = real) or an array literal.
///
/// ```swift
/// var options = VectorQuantizerOptions()
/// options.mask = TokenMask(Tensor([1, 1, 0, 1, 0, 0], shape: [2, 3]))   // the second sequence has one token
/// let out = vq(x, options: options)                                     // x [2, 3, dim]
/// let lfqOut = lfq(x, mask: [true, true, false, true, false, false])     // the same mask as a literal
/// ```
///
/// A mask given with its shape (a tensor, or ``init(_:shape:)``) must match the input's `[b, n]`; bare flags must
/// number `b · n`. A mask that does not fit its input is a programmer error and traps, naming both shapes.
public struct TokenMask: Sendable, Equatable, ExpressibleByArrayLiteral {
    /// `b · n` flags, row-major.
    public let flags: [Bool]
    /// `[b, n]` when the mask was given with its shape; nil for bare flags.
    public let shape: [Int]?

    /// Bare flags, row-major over `[b, n]`.
    public init(_ flags: [Bool]) {
        self.flags = flags
        shape = nil
    }

    /// Flags with their `[b, n]` shape.
    public init(_ flags: [Bool], shape: [Int]) {
        precondition(shape.count == 2 && shape[0] * shape[1] == flags.count, "TokenMask: \(flags.count) flags for shape \(shape)")
        self.flags = flags
        self.shape = shape
    }

    /// A `[b, n]` tensor, nonzero = a real token.
    public init(_ mask: Tensor) {
        precondition(mask.rank == 2, "TokenMask: a mask tensor \(mask.shape) must be [b, n]")
        self.init(mask.scalars.map { $0 != 0 }, shape: mask.shape)
    }

    public init(arrayLiteral flags: Bool...) { self.init(flags) }

    /// The mask as a `[b, n]` tensor of 0 and 1 (`[1, count]` for bare flags).
    public var tensor: Tensor { Tensor(flags.map { $0 ? 1 : 0 }, shape: shape ?? [1, flags.count]) }

    /// The number of tokens.
    public var count: Int { flags.count }

    /// The flags, checked to fit `tokens` (`[b, n]`): its shape when it has one, else its count. Traps otherwise.
    public func flags(for tokens: [Int], _ who: String) -> [Bool] {
        if let shape { precondition(shape == tokens, "\(who): mask \(shape) for tokens \(tokens)") }
        precondition(flags.count == tokens.reduce(1, *), "\(who): mask of \(flags.count) for tokens \(tokens)")
        return flags
    }
}
