import VQTensor

/// Group normalisation (Wu & He, *Group Normalization*, ECCV 2018; PyTorch's `nn.GroupNorm`): the channels of
/// `[b, C, …]` split into `groups`, each normalised over its channels and positions with the biased variance,
/// then scaled and shifted per channel (`weight`, `bias`).
public final class GroupNorm: Layer {
    public let groups: Int, channels: Int
    public let eps: Float
    public let weight: Parameter?
    public let bias: Parameter?

    public init(groups: Int, channels: Int, eps: Float = 1e-5, affine: Bool = true) {
        precondition(groups > 0 && channels % groups == 0, "GroupNorm: \(channels) channels in \(groups) groups")
        (self.groups, self.channels, self.eps) = (groups, channels, eps)
        weight = affine ? Parameter(Tensor.ones([channels])) : nil
        bias = affine ? Parameter(Tensor.zeros([channels])) : nil
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 2 && x.shape[1] == channels, "GroupNorm(\(groups), \(channels)): input \(x.shape) must be [b, \(channels), …]")
        let g = x.reshaped([x.shape[0], groups, -1])
        let mean = g.mean(axis: 2, keepDims: true)
        let centred = g - mean
        let variance = centred.squared().mean(axis: 2, keepDims: true)
        var y = (centred / (variance + eps).sqrt()).reshaped(x.shape)
        let perChannel = [1, channels] + Array(repeating: 1, count: x.rank - 2)
        if let weight { y = y * weight.value.reshaped(perChannel) }
        if let bias { y = y + bias.value.reshaped(perChannel) }
        return y
    }
}

/// Batch normalisation (Ioffe & Szegedy, 2015; PyTorch's `nn.BatchNorm1d/2d/3d`) over the channel axis 1
/// of `[b, C]` or `[b, C, …]`. Training normalises with the batch statistics (biased variance) and moves
/// the running ones (`running_mean`, `running_var` with the unbiased variance, momentum 0.1,
/// `num_batches_tracked`); evaluation uses the running statistics. The running statistics are buffers: no
/// optimizer writes them, and a frozen BatchNorm (``Module/freeze(recursive:keys:)``, or evaluation mode)
/// keeps them.
public final class BatchNorm: Layer {
    public let features: Int
    public let eps: Float, momentum: Float
    public let weight: Parameter?
    public let bias: Parameter?
    public let runningMean: Parameter
    public let runningVar: Parameter
    public let numBatchesTracked: Parameter

    public init(features: Int, eps: Float = 1e-5, momentum: Float = 0.1, affine: Bool = true) {
        precondition(features > 0 && (0...1).contains(momentum), "BatchNorm(\(features), momentum \(momentum))")
        (self.features, self.eps, self.momentum) = (features, eps, momentum)
        weight = affine ? Parameter(Tensor.ones([features])) : nil
        bias = affine ? Parameter(Tensor.zeros([features])) : nil
        runningMean = Parameter(Tensor.zeros([features]), kind: .buffer)
        runningVar = Parameter(Tensor.ones([features]), kind: .buffer)
        numBatchesTracked = Parameter(Tensor(0), kind: .buffer)
        runningVar.domain = .nonNegative
        numBatchesTracked.domain = .wholeNumbers(0...(1 << 53))
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 2 && x.shape[1] == features, "BatchNorm(\(features)): input \(x.shape) must be [b, \(features), …]")
        let perChannel = [1, features] + Array(repeating: 1, count: x.rank - 2)
        let axes = [0] + Array(2..<x.rank)
        var y: Tensor
        if isTraining {
            let mean = x.mean(axes: axes, keepDims: true)
            let centred = x - mean
            let variance = centred.squared().mean(axes: axes, keepDims: true)
            y = centred / (variance + eps).sqrt()
            let n = Float(x.count / features)
            withoutGradient {
                let m = mean.detached().reshaped([features]), v = variance.detached().reshaped([features]) * (n / Swift.max(n - 1, 1))
                runningMean.value = runningMean.value * (1 - momentum) + m * momentum
                runningVar.value = runningVar.value * (1 - momentum) + v * momentum
                numBatchesTracked.value = numBatchesTracked.value + 1
            }
        } else {
            y = (x - runningMean.value.reshaped(perChannel)) / (runningVar.value.reshaped(perChannel) + eps).sqrt()
        }
        if let weight { y = y * weight.value.reshaped(perChannel) }
        if let bias { y = y + bias.value.reshaped(perChannel) }
        return y
    }
}

/// A lookup table of `num` vectors of `dim` (PyTorch's `nn.Embedding`, key `weight`, N(0, 1) initialisation):
/// indices `[…]` → `[…, dim]`, differentiable in the table. Rows can be frozen like a codebook's.
public final class Embedding: Module {
    public let weight: Parameter
    public init(_ num: Int, _ dim: Int, rng: inout SeededGenerator) {
        precondition(num > 0 && dim > 0, "Embedding(\(num), \(dim))")
        weight = Parameter(Tensor.randomNormal([num, dim], using: &rng))
    }
    public func callAsFunction(_ indices: IndexTensor) -> Tensor {
        precondition(indices.scalars.allSatisfy { $0 >= 0 && $0 < weight.shape[0] }, "Embedding(\(weight.shape[0])): index out of range in \(indices.shape)")
        return weight.value.indexSelect(axis: 0, indices)
    }
}

/// Dropout (Srivastava et al., 2014; PyTorch's `nn.Dropout`): in training each element is zeroed with
/// probability `p` and the rest scaled by `1/(1 − p)`; the identity in evaluation. The draws come from its
/// own seeded generator (saved by resumable training).
public final class Dropout: Layer, RandomStateOwner {
    public let p: Float
    var rng: SeededGenerator
    public init(p: Float = 0.5, seed: UInt64 = 0) {
        precondition(p >= 0 && p < 1, "Dropout: p \(p) must be in [0, 1)")
        self.p = p
        rng = SeededGenerator(seed: seed ^ 0xD40)
    }
    public var randomState: SeededGenerator {
        get { rng }
        set { rng = newValue }
    }
    public override func callAsFunction(_ x: Tensor) -> Tensor {
        guard isTraining && p > 0 else { return x }
        let keep = Tensor.randomUniform(x.shape, using: &rng) .>= p
        return x * (keep / (1 - p))
    }
}

/// `x + body(x)` (He et al., *Deep Residual Learning for Image Recognition*, 2016): the composition the
/// decoders of VQ-VAEs are built from. Keys are the body's under `body` (`body.0.weight`, …).
///
/// ```swift
/// var rng = SeededGenerator(seed: 0)
/// let block = ResidualBlock(Sequential(Conv2d(32, 32, kernelSize: 3, padding: 1, rng: &rng), Activation(.gelu),
///                                      Conv2d(32, 32, kernelSize: 1, rng: &rng)))
/// ```
public final class ResidualBlock: Layer {
    public let body: Layer
    public init(_ body: Layer) { self.body = body }
    public override func callAsFunction(_ x: Tensor) -> Tensor {
        let y = body(x)
        precondition(y.shape == x.shape, "ResidualBlock: the body maps \(x.shape) to \(y.shape); a residual needs the same shape")
        return x + y
    }
}
