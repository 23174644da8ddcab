import VQTensor

/// Masks as `[b, n]` tensors (nonzero = a real token, zero = padding), beside the flat row-major `[Bool]`
/// of length `b · n` the forwards store. One conversion, checked once, for every quantizer.
///
/// ```swift
/// var options = VectorQuantizerOptions()
/// options.maskTensor = Tensor([1, 1, 0, 1, 0, 0], shape: [2, 3])   // the second sequence has one token
/// let out = vq(x, options: options)                               // x [2, 3, dim]
/// ```
public enum TokenMask {
    /// The flags of a `[b, n]` mask, row-major. Traps (printing the shape) unless the mask is `[b, n]`.
    public static func flags(_ mask: Tensor, tokens expected: [Int]? = nil) -> [Bool] {
        precondition(mask.rank == 2, "mask \(mask.shape) must be [b, n]")
        if let expected { precondition(mask.shape == expected, "mask \(mask.shape) for tokens \(expected)") }
        return mask.scalars.map { $0 != 0 }
    }

    /// `flags` as a `[b, n]` tensor of 0 and 1.
    public static func tensor(_ flags: [Bool], shape: [Int]) -> Tensor {
        precondition(shape.count == 2 && shape[0] * shape[1] == flags.count, "mask of \(flags.count) flags for shape \(shape)")
        return Tensor(flags.map { $0 ? 1 : 0 }, shape: shape)
    }
}

/// Forward options that carry a token mask (flat flags and the shape they were given with).
public protocol MaskedOptions {
    var mask: [Bool]? { get set }
    var maskShape: [Int]? { get set }
}

extension MaskedOptions {
    /// The mask as a `[b, n]` tensor (nonzero = real token); setting it fills `mask` and `maskShape`.
    public var maskTensor: Tensor? {
        get { mask.map { TokenMask.tensor($0, shape: maskShape ?? [1, $0.count]) } }
        set {
            mask = newValue.map { TokenMask.flags($0) }
            maskShape = newValue?.shape
        }
    }
}

extension VectorQuantizerOptions: MaskedOptions {}
extension ResidualVQOptions: MaskedOptions {}

extension LFQ {
    /// ``callAsFunction(_:inverseTemperature:mask:)`` with a `[b, n]` mask tensor.
    public func callAsFunction(_ input: Tensor, inverseTemperature: Float = 100, mask: Tensor)
        -> Output
    {
        self(input, inverseTemperature: inverseTemperature, mask: TokenMask.flags(mask))
    }
}

extension ResidualLFQ {
    /// The forward with a `[b, n]` mask tensor.
    public func callAsFunction(_ x: Tensor, mask: Tensor, quantizeDropoutSeed: UInt64? = nil)
        -> Output
    {
        self(x, mask: TokenMask.flags(mask, tokens: Array(x.shape.prefix(2))), quantizeDropoutSeed: quantizeDropoutSeed)
    }
}

extension GroupedResidualLFQ {
    /// The forward with a `[b, n]` mask tensor.
    public func callAsFunction(_ x: Tensor, mask: Tensor, quantizeDropoutSeed: UInt64? = nil)
        -> Output
    {
        self(x, mask: TokenMask.flags(mask, tokens: Array(x.shape.prefix(2))), quantizeDropoutSeed: quantizeDropoutSeed)
    }
}

extension HierarchicalVQ {
    /// The forward with a `[b, n]` mask tensor.
    public func callAsFunction(_ input: Tensor, mask: Tensor, sampleCodebookTemperature: Float? = nil) -> Output {
        let n = configuration.channelFirst ? input.shape[2] : input.shape[1]
        return self(input, mask: TokenMask.flags(mask, tokens: [input.shape[0], n]), sampleCodebookTemperature: sampleCodebookTemperature)
    }
}

extension EvoLFQ {
    /// The forward with a `[b, n]` mask tensor.
    public func callAsFunction(_ x: Tensor, inverseTemperature: Float = 100, mask: Tensor) -> Output {
        self(x, inverseTemperature: inverseTemperature, mask: TokenMask.flags(mask))
    }
}
