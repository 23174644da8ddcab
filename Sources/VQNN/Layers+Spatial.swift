import VQTensor

/// Max pooling over 1–3 spatial axes (PyTorch's `nn.MaxPool1d/2d/3d`, `ceil_mode` off): the largest value of
/// each window (padding counts as −∞); the gradient goes to the first largest element of a window.
///
/// ```swift
/// let pool = MaxPool(kernelSize: [2, 2])      // nn.MaxPool2d(2)
/// pool(Tensor.zeros([4, 16, 28, 28])).shape   // [4, 16, 14, 14]
/// ```
public final class MaxPool: Layer {
    public let kernelSize: [Int], stride: [Int], padding: [Int], dilation: [Int]
    /// A max pooling layer; each value is per spatial axis (one value for every axis, or one per axis).
    /// - Parameters:
    ///   - kernelSize: the window, one extent per spatial axis (1–3 axes).
    ///   - stride: the step between windows; default: the kernel size.
    ///   - padding: implicit padding on both sides, skipped by the maximum (as −∞).
    ///   - dilation: the spacing between a window's elements.
    public init(kernelSize: [Int], stride: [Int]? = nil, padding: [Int] = [0], dilation: [Int] = [1]) {
        precondition((1...3).contains(kernelSize.count) && kernelSize.allSatisfy { $0 > 0 }, "MaxPool: kernel \(kernelSize)")
        let d = kernelSize.count
        func full(_ v: [Int]) -> [Int] { v.count == 1 ? Array(repeating: v[0], count: d) : v }
        (self.kernelSize, self.stride, self.padding, self.dilation) = (kernelSize, full(stride ?? kernelSize), full(padding), full(dilation))
        precondition(zip(self.padding, kernelSize).allSatisfy { $0 * 2 <= $1 }, "MaxPool: padding \(padding) must be at most half the kernel \(kernelSize)")
    }
    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2 + kernelSize.count, "MaxPool(kernel \(kernelSize)): input \(x.shape) must be [b, c, \(kernelSize.count) spatial axes]")
        return x.maxPool(plan: ConvolutionPlan(input: x.shape, kernel: kernelSize, stride: stride, padding: padding, dilation: dilation))
    }
}

/// Average pooling over 1–3 spatial axes (PyTorch's `nn.AvgPool1d/2d/3d` with its defaults
/// `count_include_pad = true`, `ceil_mode` off): zero padding counts in the average.
public final class AvgPool: Layer {
    public let kernelSize: [Int], stride: [Int], padding: [Int]
    /// An average pooling layer; each value is per spatial axis (one value for every axis, or one per axis).
    /// - Parameters:
    ///   - kernelSize: the window, one extent per spatial axis (1–3 axes).
    ///   - stride: the step between windows; default: the kernel size.
    ///   - padding: implicit zero padding on both sides, counted in the average.
    public init(kernelSize: [Int], stride: [Int]? = nil, padding: [Int] = [0]) {
        precondition((1...3).contains(kernelSize.count) && kernelSize.allSatisfy { $0 > 0 }, "AvgPool: kernel \(kernelSize)")
        let d = kernelSize.count
        func full(_ v: [Int]) -> [Int] { v.count == 1 ? Array(repeating: v[0], count: d) : v }
        (self.kernelSize, self.stride, self.padding) = (kernelSize, full(stride ?? kernelSize), full(padding))
        precondition(zip(self.padding, kernelSize).allSatisfy { $0 * 2 <= $1 }, "AvgPool: padding \(padding) must be at most half the kernel \(kernelSize)")
    }
    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2 + kernelSize.count, "AvgPool(kernel \(kernelSize)): input \(x.shape) must be [b, c, \(kernelSize.count) spatial axes]")
        let (cols, out) = x.unfolded(kernel: kernelSize, stride: stride, padding: padding, dilation: [Int](repeating: 1, count: kernelSize.count))
        return cols.mean(axis: 3).reshaped(Array(x.shape.prefix(2)) + out)
    }
}

/// Nearest-neighbour upsampling by an integer factor on every spatial axis of `[b, c, s…]` (PyTorch's
/// `nn.Upsample(scale_factor: s, mode: "nearest")`): output position `o` reads input `⌊o / s⌋`.
public final class Upsample: Layer {
    public let scaleFactor: Int
    public init(scaleFactor: Int) {
        precondition(scaleFactor >= 1, "Upsample: scale factor \(scaleFactor)")
        self.scaleFactor = scaleFactor
    }
    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 3, "Upsample: input \(x.shape) must be [b, c, s…]")
        return x.upsampledNearest(scale: scaleFactor)
    }
}


/// Transposed convolution over 1–3 spatial axes with PyTorch's layout (`weight [in, out / groups, k…]`,
/// `bias [out]`, keys `weight`, `bias`) and initialisation (U(±1/√(out/groups · Πk))): the decoder's
/// upsampling layer. ``ConvTranspose1d`` and ``ConvTranspose2d`` are this class.
public class ConvolutionTransposed: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: [Int], padding: [Int], outputPadding: [Int], dilation: [Int]
    public let groups: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: [Int], stride: [Int] = [1], padding: [Int] = [0], outputPadding: [Int] = [0],
                dilation: [Int] = [1], groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator) {
        precondition(inChannels > 0 && outChannels > 0 && groups > 0 && inChannels % groups == 0 && outChannels % groups == 0
                     && (1...3).contains(kernelSize.count) && kernelSize.allSatisfy { $0 > 0 },
                     "ConvolutionTransposed(\(inChannels), \(outChannels), kernel \(kernelSize), groups \(groups))")
        // PyTorch computes the fan-in of the [in, out/g, k…] weight from its second axis.
        let fanIn = outChannels / groups * kernelSize.reduce(1, *)
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Parameter(Tensor.randomUniform([inChannels, outChannels / groups] + kernelSize, low: -bound, high: bound, using: &rng))
        self.bias = bias ? Parameter(Tensor.randomUniform([outChannels], low: -bound, high: bound, using: &rng)) : nil
        (self.stride, self.padding, self.outputPadding, self.dilation, self.groups) = (stride, padding, outputPadding, dilation, groups)
    }

    public var inChannels: Int { weight.shape[0] }
    public var outChannels: Int { weight.shape[1] * groups }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == weight.shape.count && x.shape[1] == inChannels,
                     "\(type(of: self))(\(inChannels) → \(outChannels)): input \(x.shape) must be [b, \(inChannels), \(weight.shape.count - 2) spatial axes]")
        return x.convolutionTransposed(weight: weight.value, bias: bias?.value, stride: stride, padding: padding, outputPadding: outputPadding,
                                       dilation: dilation, groups: groups)
    }
}

/// `nn.ConvTranspose1d`.
public final class ConvTranspose1d: ConvolutionTransposed {
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, outputPadding: Int = 0,
                dilation: Int = 1, groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator) {
        super.init(inChannels, outChannels, kernelSize: [kernelSize], stride: [stride], padding: [padding], outputPadding: [outputPadding],
                   dilation: [dilation], groups: groups, bias: bias, rng: &rng)
    }
}

/// `nn.ConvTranspose2d`.
public final class ConvTranspose2d: ConvolutionTransposed {
    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, outputPadding: Int = 0,
                dilation: Int = 1, groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator) {
        super.init(inChannels, outChannels, kernelSize: [kernelSize, kernelSize], stride: [stride], padding: [padding], outputPadding: [outputPadding],
                   dilation: [dilation], groups: groups, bias: bias, rng: &rng)
    }
}
