import VQTensor

/// 1-D convolution over `[b, in, n]` with PyTorch's `nn.Conv1d` layout (`weight [out, in / groups, k]`,
/// `bias [out]`) and initialisation (U(−1/√(in/groups · k), 1/√(in/groups · k))), zero padding.
///
/// ```swift
/// var rng = SeededGenerator(seed: 0)
/// let conv = Conv1d(16, 16, kernelSize: 3, padding: 1, rng: &rng)
/// conv(Tensor.zeros([4, 16, 24])).shape   // [4, 16, 24]
/// ```
///
/// - Complexity: O(b · n_out · out · in/groups · k): the input is unfolded (im2col) and multiplied with the
///   weight on the library's matrix kernel; differentiable in the input, weight and bias.
public final class Conv1d: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int
    public let padding: Int
    public let dilation: Int
    public let groups: Int

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1,
                groups: Int = 1, bias: Bool = true, rng: inout SeededGenerator) {
        precondition(inChannels > 0 && outChannels > 0 && kernelSize > 0 && stride > 0 && padding >= 0 && dilation > 0 && groups > 0
                     && inChannels % groups == 0 && outChannels % groups == 0,
                     "Conv1d(\(inChannels), \(outChannels), kernel \(kernelSize), stride \(stride), padding \(padding), dilation \(dilation), groups \(groups))")
        let fanIn = inChannels / groups * kernelSize
        let bound = 1 / Float(fanIn).squareRoot()
        weight = Parameter(Tensor.randomUniform([outChannels, inChannels / groups, kernelSize], low: -bound, high: bound, using: &rng))
        self.bias = bias ? Parameter(Tensor.randomUniform([outChannels], low: -bound, high: bound, using: &rng)) : nil
        (self.stride, self.padding, self.dilation, self.groups) = (stride, padding, dilation, groups)
    }

    /// A convolution with given weights (`weight [out, in / groups, k]`, `bias [out]`).
    public init(weight: Tensor, bias: Tensor?, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) {
        precondition(weight.rank == 3 && weight.shape[0] % groups == 0 && stride > 0 && padding >= 0 && dilation > 0 && groups > 0,
                     "Conv1d: weight \(weight.shape) must be [out, in / groups, k] with out divisible by groups \(groups)")
        if let bias { precondition(bias.shape == [weight.shape[0]], "Conv1d: bias \(bias.shape) for weight \(weight.shape)") }
        self.weight = Parameter(weight)
        self.bias = bias.map { Parameter($0) }
        (self.stride, self.padding, self.dilation, self.groups) = (stride, padding, dilation, groups)
    }

    public var inChannels: Int { weight.shape[1] * groups }
    public var outChannels: Int { weight.shape[0] }
    public var kernelSize: Int { weight.shape[2] }

    /// The output length for an input of `n`.
    public func outputLength(_ n: Int) -> Int { (n + 2 * padding - dilation * (kernelSize - 1) - 1) / stride + 1 }

    /// Freezes the weights (and bias) of these output channels: optimizers never write them.
    public func freezeOutputChannels(_ channels: some Sequence<Int>) {
        let perChannel = weight.shape[1]  // rows of length k per output channel
        let list = Array(channels)
        weight.freezeRows(list.flatMap { c in (c * perChannel)..<((c + 1) * perChannel) })
        bias?.freezeRows(list)
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        x.conv1d(weight: weight.value, bias: bias?.value, stride: stride, padding: padding, dilation: dilation, groups: groups)
    }
}

extension Tensor {
    /// 1-D convolution of `[b, in, n]` with `weight [out, in / groups, k]` (+ `bias [out]`), zero padding:
    /// `[b, out, n_out]`, `n_out = (n + 2·padding − dilation·(k − 1) − 1) / stride + 1`. Differentiable in
    /// all three (the input is unfolded and multiplied on the matrix kernel).
    public func conv1d(weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) -> Tensor {
        let (outChannels, cg, k) = (weight.shape[0], weight.shape[1], weight.shape[2])
        let inChannels = cg * groups
        precondition(rank == 3 && shape[1] == inChannels, "conv1d: input \(shape) must be [b, \(inChannels), n] for weight \(weight.shape), groups \(groups)")
        let (b, n) = (shape[0], shape[2])
        let nOut = (n + 2 * padding - dilation * (k - 1) - 1) / stride + 1
        precondition(nOut > 0, "conv1d: input length \(n) is shorter than the kernel's reach (\(dilation * (k - 1) + 1) − 2·\(padding))")
        var xp = self
        if padding > 0 {
            let zeros = Tensor.zeros([b, inChannels, padding])
            xp = Tensor.concat([zeros, self, zeros], axis: 2)
        }
        // Unfold: column (o, j) reads input position o·stride + j·dilation.
        let positions = IndexTensor((0..<(nOut * k)).map { ($0 / k) * stride + ($0 % k) * dilation })
        let og = outChannels / groups
        var outs: [Tensor] = []
        for g in 0..<groups {
            let xg = groups == 1 ? xp : xp.slice(axis: 1, (g * cg)..<((g + 1) * cg))
            let cols = xg.indexSelect(axis: 2, positions).reshaped([b, cg, nOut, k]).permuted([0, 2, 1, 3]).reshaped([b * nOut, cg * k])
            let wg = (groups == 1 ? weight : weight.slice(axis: 0, (g * og)..<((g + 1) * og))).reshaped([og, cg * k])
            outs.append(cols.matmul(transposed: wg))
        }
        var y = (groups == 1 ? outs[0] : Tensor.concat(outs, axis: 1)).reshaped([b, nOut, outChannels])
        if let bias { y = y + bias }
        return y.permuted([0, 2, 1])
    }
}
