import VQTensor

/// Convolution over `spatialAxes` (1, 2 or 3) spatial axes with PyTorch's layout (`weight [out, in / groups,
/// k…]`, `bias [out]`, keys `weight`, `bias`) and initialisation (U(±1/√(in/groups · Πk))), zero padding.
/// ``Conv1d``, ``Conv2d`` and ``Conv3d`` are this class.
///
/// ```swift
/// var rng = SeededGenerator(seed: 0)
/// let conv = Conv2d(3, 16, kernelSize: 3, padding: 1, rng: &rng)
/// conv(Tensor.zeros([4, 3, 28, 28])).shape   // [4, 16, 28, 28]
/// ```
///
/// - Complexity: see `Tensor.convolution(weight:bias:stride:padding:dilation:groups:)` in VQTensor.
public class Convolution: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: [Int]
    public let padding: [Int]
    public let dilation: [Int]
    public let groups: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: [Int], stride: [Int] = [1], padding: [Int] = [0], dilation: [Int] = [1],
                groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator) {
        precondition(inChannels > 0 && outChannels > 0 && kernelSize.allSatisfy { $0 > 0 } && (1...3).contains(kernelSize.count) && groups > 0
                     && inChannels % groups == 0 && outChannels % groups == 0,
                     "Convolution(\(inChannels), \(outChannels), kernel \(kernelSize), groups \(groups))")
        let fanIn = inChannels / groups * kernelSize.reduce(1, *)
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Parameter(Tensor.randomUniform([outChannels, inChannels / groups] + kernelSize, low: -bound, high: bound, using: &rng))
        self.bias = bias ? Parameter(Tensor.randomUniform([outChannels], low: -bound, high: bound, using: &rng)) : nil
        (self.stride, self.padding, self.dilation, self.groups) = (stride, padding, dilation, groups)
    }

    /// A convolution with given weights (`weight [out, in / groups, k…]`, `bias [out]`).
    public init(weight: Tensor, bias: Tensor?, stride: [Int] = [1], padding: [Int] = [0], dilation: [Int] = [1], groups: Int = 1) {
        precondition((3...5).contains(weight.rank) && weight.shape[0] % groups == 0, "Convolution: weight \(weight.shape) must be [out, in / groups, k…]")
        if let bias { precondition(bias.shape == [weight.shape[0]], "Convolution: bias \(bias.shape) for weight \(weight.shape)") }
        self.weight = Parameter(weight)
        self.bias = bias.map { Parameter($0) }
        (self.stride, self.padding, self.dilation, self.groups) = (stride, padding, dilation, groups)
    }

    public var inChannels: Int { weight.shape[1] * groups }
    public var outChannels: Int { weight.shape[0] }
    public var kernelShape: [Int] { Array(weight.shape.dropFirst(2)) }
    public var spatialAxes: Int { weight.shape.count - 2 }

    /// Freezes the weights (and bias) of these output channels: optimizers never write them.
    public func freezeOutputChannels(_ channels: some Sequence<Int>) {
        let rowsPerChannel = weight.value.count / weight.shape[0] / weight.shape[weight.shape.count - 1]  // rows of the last axis
        let list = Array(channels)
        weight.freezeRows(list.flatMap { c in (c * rowsPerChannel)..<((c + 1) * rowsPerChannel) })
        bias?.freezeRows(list)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2 + spatialAxes && x.shape[1] == inChannels,
                     "\(type(of: self))(\(inChannels) → \(outChannels)): input \(x.shape) must be [b, \(inChannels), \(spatialAxes) spatial axes]")
        return x.convolution(weight: weight.value, bias: bias?.value, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }
}

/// 1-D convolution over `[b, in, n]` (PyTorch's `nn.Conv1d`).
public final class Conv1d: Convolution {
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator) {
        super.init(inChannels, outChannels, kernelSize: [kernelSize], stride: [stride], padding: [padding], dilation: [dilation],
                   groups: groups, bias: bias, rng: &rng)
    }
    public init(weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) {
        precondition(weight.rank == 3, "Conv1d: weight \(weight.shape) must be [out, in / groups, k]")
        super.init(weight: weight, bias: bias, stride: [stride], padding: [padding], dilation: [dilation], groups: groups)
    }
    public var kernelSize: Int { weight.shape[2] }
    /// The output length for an input of `n`.
    public func outputLength(_ n: Int) -> Int { (n + 2 * padding[0] - dilation[0] * (kernelSize - 1) - 1) / stride[0] + 1 }
}

/// 2-D convolution over `[b, in, h, w]` (PyTorch's `nn.Conv2d`).
public final class Conv2d: Convolution {
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator) {
        super.init(inChannels, outChannels, kernelSize: [kernelSize, kernelSize], stride: [stride], padding: [padding], dilation: [dilation],
                   groups: groups, bias: bias, rng: &rng)
    }
}

/// 3-D convolution over `[b, in, t, h, w]` (PyTorch's `nn.Conv3d`).
public final class Conv3d: Convolution {
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator) {
        super.init(inChannels, outChannels, kernelSize: [kernelSize, kernelSize, kernelSize], stride: [stride], padding: [padding],
                   dilation: [dilation], groups: groups, bias: bias, rng: &rng)
    }
}
