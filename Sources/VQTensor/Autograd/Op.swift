/// The differentiable operations. Each case saves exactly what its backward rule needs
/// (saved tensors are detached). `Backward.swift` differentiates them in one exhaustive switch.
enum Op: Sendable {
    case leaf

    // Broadcasting binary arithmetic: input shapes, and operands where the rule needs them.
    case add(lhs: [Int], rhs: [Int])
    case sub(lhs: [Int], rhs: [Int])
    case mul(Tensor, Tensor)
    case div(Tensor, Tensor)
    case maximum(Tensor, Tensor)
    case minimum(Tensor, Tensor)
    /// `select(condition, a, b)`: the 0/1 condition broadcast to the output shape.
    case select(condition: Tensor, lhs: [Int], rhs: [Int])

    // Unary math on the saved input `x` and output `y`.
    case unary(UnaryOp, x: Tensor, y: Tensor)

    // Reductions.
    case sum(input: [Int], keptShape: [Int])
    case mean(input: [Int], keptShape: [Int], count: Int)
    /// `mean((a − b)²)` (inputs a, b), with the saved difference `a − b`.
    case meanSquaredDifference(difference: Tensor)
    /// max / min along one axis: the flat positions of the chosen elements.
    case extremum(input: [Int], positions: [Int])
    case logSumExp(x: Tensor, y: Tensor)  // y kept-dims
    case softmax(y: Tensor, axis: Int)
    case logSoftmax(y: Tensor, axis: Int)

    // Shape.
    case reshape(input: [Int])
    case permute([Int])
    case expand(input: [Int])
    case concat(axis: Int, sizes: [Int])
    case slice(input: [Int], axis: Int, start: Int)

    // Indexing.
    case gather(input: [Int], axis: Int, index: IndexTensor)
    case indexSelect(input: [Int], axis: Int, index: IndexTensor)
    case scatterAdd(axis: Int, index: IndexTensor)  // inputs: base, source
    case indexAdd(axis: Int, index: IndexTensor)  // inputs: base, source

    // Linear algebra: batched matmul of the saved operands (after broadcasting of batch axes).
    case matmul(Tensor, Tensor)
    /// `A·Bᵀ` with a 2-D `B` read transposed in place.
    case matmulTransposedB(Tensor, Tensor)
    /// `x·Wᵀ + b` (inputs x, W, b): the bias's gradient is the row sum.
    case linear(Tensor, Tensor)
    /// A one-group convolution (inputs x, W, and b when `hasBias`), with its unfolded input.
    case convolution(ConvolutionPlan, cols: Tensor, weight: Tensor, hasBias: Bool)
    /// A stride-1, one-group convolution (inputs x, W, and b when `hasBias`), with its padded channel-major input.
    case shiftedConvolution(ShiftedConvolutionPlan, padded: Tensor, weight: Tensor, hasBias: Bool)

    /// A function whose backward its author gives (``Tensor/custom(_:input:backward:)``): the gradient of
    /// the one input from the gradient of the output.
    case custom(@Sendable (Tensor) -> Tensor)
}

/// Element-wise functions whose derivative depends only on the input `x` and output `y`.
public enum UnaryOp: Sendable {
    case neg, sqrt, exp, log, tanh, sigmoid, relu, gelu, silu, abs
    case clamp(min: Float, max: Float)
    case pow(Float)
    case sin, cos
    case logSigmoid, softplus, erf, atan
}
