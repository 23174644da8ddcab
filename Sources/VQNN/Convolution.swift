import VQTensor

extension Tensor {
    /// Convolution over 1, 2 or 3 spatial axes (PyTorch's `conv1d/2d/3d`): input `[b, in, s₁, …]`, `weight
    /// [out, in / groups, k₁, …]`, optional `bias [out]`, zero padding; per-axis `stride`, `padding`,
    /// `dilation` (one value each, or one per axis). Output `[b, out, o₁, …]` with
    /// `oᵢ = (sᵢ + 2·paddingᵢ − dilationᵢ·(kᵢ − 1) − 1) / strideᵢ + 1`.
    ///
    /// The input is unfolded (im2col: an index gather, so every step is differentiable) and multiplied with
    /// the weight on the library's GEMM kernels; differentiable in the input, the weight and the bias.
    ///
    /// - Complexity: O(b · Πoᵢ · out · in/groups · Πkᵢ); the unfolded input takes `b · Πoᵢ · in · Πkᵢ` floats.
    public func convolution(weight: Tensor, bias: Tensor? = nil, stride: [Int] = [1], padding: [Int] = [0], dilation: [Int] = [1],
                            groups: Int = 1) -> Tensor {
        let d = rank - 2
        precondition((1...3).contains(d) && weight.rank == rank, "convolution: input \(shape) must be [b, c, s…] with 1–3 spatial axes, weight \(weight.shape) of the same rank")
        func perAxis(_ v: [Int], _ name: String) -> [Int] {
            precondition(v.count == 1 || v.count == d, "convolution: \(name) \(v) for \(d) spatial axes")
            return v.count == 1 ? Array(repeating: v[0], count: d) : v
        }
        let (st, pad, dil) = (perAxis(stride, "stride"), perAxis(padding, "padding"), perAxis(dilation, "dilation"))
        let (outChannels, cg) = (weight.shape[0], weight.shape[1])
        let kernel = Array(weight.shape.dropFirst(2))
        let (b, inChannels) = (shape[0], shape[1])
        precondition(groups > 0 && inChannels == cg * groups && outChannels % groups == 0 && st.allSatisfy { $0 > 0 }
                     && pad.allSatisfy { $0 >= 0 } && dil.allSatisfy { $0 > 0 } && (bias == nil || bias!.shape == [outChannels]),
                     "convolution: input \(shape), weight \(weight.shape), bias \(bias?.shape ?? []), groups \(groups), stride \(st), padding \(pad), dilation \(dil)")
        if groups == 1 {
            return convolution(plan: ConvolutionPlan(input: shape, kernel: kernel, stride: st, padding: pad, dilation: dil), weight: weight, bias: bias)
        }
        let (unfoldedInput, outShape) = unfolded(kernel: kernel, stride: st, padding: pad, dilation: dil)  // [b, in, O, K]
        let outCount = outShape.reduce(1, *), kCount = kernel.reduce(1, *)
        let og = outChannels / groups
        var outs: [Tensor] = []
        for g in 0..<groups {
            let xg = groups == 1 ? unfoldedInput : unfoldedInput.slice(axis: 1, (g * cg)..<((g + 1) * cg))
            let cols = xg.permuted([0, 2, 1, 3]).reshaped([b * outCount, cg * kCount])
            let wg = (groups == 1 ? weight : weight.slice(axis: 0, (g * og)..<((g + 1) * og))).reshaped([og, cg * kCount])
            outs.append(groups == 1 ? cols.linear(weight: wg, bias: bias) : cols.matmul(transposed: wg))
        }
        var y = groups == 1 ? outs[0] : Tensor.concat(outs, axis: 1)
        if groups > 1, let bias { y = y + bias }
        return y.reshaped([b, outCount, outChannels]).permuted([0, 2, 1]).reshaped([b, outChannels] + outShape)
    }

    /// The sliding windows of `[b, c, s…]` (im2col): `[b, c, Πo, Πk]` — window `o`, offset `q` reads the
    /// position `o·stride + q·dilation` of the input padded by `padding` (filled with `padValue`) — and the
    /// output shape `o…`. An index gather, so differentiable.
    public func unfolded(kernel: [Int], stride st: [Int], padding pad: [Int], dilation dil: [Int], padValue: Float = 0) -> (Tensor, [Int]) {
        let d = rank - 2
        let (b, c) = (shape[0], shape[1])
        let spatial = Array(shape.dropFirst(2))
        let padded = zip(spatial, pad).map { $0 + 2 * $1 }
        var outShape = [Int](repeating: 0, count: d)
        for i in 0..<d {
            let reach: Int = dil[i] * (kernel[i] - 1) + 1
            outShape[i] = (padded[i] - reach) / st[i] + 1
        }
        precondition(outShape.allSatisfy { $0 > 0 }, "unfolded: input \(shape) is smaller than the kernel's reach \(kernel) (padding \(pad), dilation \(dil))")
        var xp = self
        for i in 0..<d where pad[i] > 0 {
            var zs = xp.shape
            zs[2 + i] = pad[i]
            let fill = Tensor(repeating: padValue, shape: zs)
            xp = Tensor.concat([fill, xp, fill], axis: 2 + i)
        }
        let outCount = outShape.reduce(1, *), kCount = kernel.reduce(1, *)
        var strides = [Int](repeating: 1, count: d)
        for i in Swift.stride(from: d - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * padded[i + 1] }
        var positions = [Int](repeating: 0, count: outCount * kCount)
        for o in 0..<outCount {
            var rem = o, base = 0
            for i in Swift.stride(from: d - 1, through: 0, by: -1) {
                base += (rem % outShape[i]) * st[i] * strides[i]
                rem /= outShape[i]
            }
            for q in 0..<kCount {
                var r = q, off = 0
                for i in Swift.stride(from: d - 1, through: 0, by: -1) {
                    off += (r % kernel[i]) * dil[i] * strides[i]
                    r /= kernel[i]
                }
                positions[o * kCount + q] = base + off
            }
        }
        let cols = xp.reshaped([b, c, padded.reduce(1, *)]).indexSelect(axis: 2, IndexTensor(positions))
        return (cols.reshaped([b, c, outCount, kCount]), outShape)
    }

    /// 1-D convolution: ``convolution(weight:bias:stride:padding:dilation:groups:)`` over `[b, in, n]`.
    public func conv1d(weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) -> Tensor {
        convolution(weight: weight, bias: bias, stride: [stride], padding: [padding], dilation: [dilation], groups: groups)
    }
}

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
/// - Complexity: see ``Tensor/convolution(weight:bias:stride:padding:dilation:groups:)``.
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
