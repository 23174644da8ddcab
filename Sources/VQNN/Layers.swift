import VQTensor

/// A module with a single tensor input and output.
open class Layer: Module {
    open func callAsFunction(_ x: Tensor) -> Tensor {
        preconditionFailure("\(type(of: self)) does not implement callAsFunction(_:)")
    }
}

/// `y = x · Wᵀ + b`, with PyTorch's `nn.Linear` layout (`weight [out, in]`, `bias [out]`) and
/// initialisation (kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in) for weight and bias).
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, rng: inout SeededGenerator) {
        let bound = inFeatures > 0 ? 1 / Float(inFeatures).squareRoot() : 0
        weight = Parameter(Tensor.randomUniform([outFeatures, inFeatures], low: -bound, high: bound, using: &rng))
        self.bias = bias ? Parameter(Tensor.randomUniform([outFeatures], low: -bound, high: bound, using: &rng)) : nil
    }

    /// A layer with given weights (`weight [out, in]`, `bias [out]`).
    public init(weight: Tensor, bias: Tensor?) {
        precondition(weight.rank == 2, "Linear: weight must be [out, in], got \(weight.shape)")
        if let bias { precondition(bias.shape == [weight.shape[0]], "Linear: bias \(bias.shape) for weight \(weight.shape)") }
        self.weight = Parameter(weight)
        self.bias = bias.map { Parameter($0) }
    }

    /// The projections into and out of an inner width (`project_in`, `project_out` of the quantizers), drawn
    /// in that order; both nil when the widths agree.
    public static func projections(_ outer: Int, _ inner: Int, bias: Bool = true, rng: inout SeededGenerator) -> (in: Linear?, out: Linear?) {
        guard outer != inner else { return (nil, nil) }
        let a = Linear(outer, inner, bias: bias, rng: &rng)
        return (a, Linear(inner, outer, bias: bias, rng: &rng))
    }

    public var inFeatures: Int { weight.shape[1] }
    public var outFeatures: Int { weight.shape[0] }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == inFeatures, "Linear(\(inFeatures) → \(outFeatures)): input shape \(x.shape)")
        if x.rank == 1 { return callAsFunction(x.unsqueezed(axis: 0)).squeezed(axis: 0) }
        return x.linear(weight: weight.value, bias: bias?.value)
    }

    /// The layer applied along axis 1 of a channel-first `x [b, in, …]` → `[b, out, …]`: `W · x_b + bias` for each
    /// batch item, the values of moving the channels last, applying the layer and moving them back (to rounding:
    /// the bias is added after the product), without those two copies of `x` and of the output, nor the two
    /// transposes of their gradients. Differentiable in `x`, the weight and the bias.
    ///
    /// ```swift
    /// let y = projectIn.channelFirst(image)   // [b, 256, h, w] → [b, 4, h, w]
    /// ```
    ///
    /// - Complexity: O(b · n · in · out) for `n` positions, no copy of `x`.
    public func channelFirst(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 2 && x.shape[1] == inFeatures,
                     "Linear(\(inFeatures) → \(outFeatures)).channelFirst: input \(x.shape) must be [b, \(inFeatures), …]")
        let b = x.shape[0], positions = x.shape.dropFirst(2)
        var y = weight.value.matmul(x.reshaped([b, inFeatures, positions.reduce(1, *)]))
        if let bias { y = y + bias.value.reshaped([outFeatures, 1]) }
        return y.reshaped([b, outFeatures] + positions)
    }
}

/// `normalize(x) · normalize_columns(W) · scale`: a linear map of cosine similarities (the reference's
/// `CosineSimLinear`, LFQ's `cosine_sim_project_in`), with its layout: `weight [in, out]`, standard-normal
/// initialisation, no bias. `F.normalize` with eps 1e-12 on the rows of `x` and the columns of `W`.
public final class CosineSimLinear: Layer {
    public let weight: Parameter
    public let scale: Float

    public init(_ inFeatures: Int, _ outFeatures: Int, scale: Float = 1, rng: inout SeededGenerator) {
        weight = Parameter(Tensor.randomNormal([inFeatures, outFeatures], using: &rng))
        self.scale = scale
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == weight.shape[0], "CosineSimLinear(\(weight.shape[0]) → \(weight.shape[1])): input shape \(x.shape)")
        return x.l2Normalized(axis: -1).matmul(weight.value.l2Normalized(axis: 0)) * scale
    }
}

/// Layer normalisation over the last axis (Ba et al., 2016), as `nn.LayerNorm(dim)`:
/// `(x − mean) / sqrt(var + eps) · weight + bias` with the biased variance.
public final class LayerNorm: Layer {
    public let weight: Parameter?
    public let bias: Parameter?
    public let eps: Float
    public let dim: Int

    public init(_ dim: Int, eps: Float = 1e-5, elementwiseAffine: Bool = true, bias: Bool = true) {
        self.dim = dim
        self.eps = eps
        weight = elementwiseAffine ? Parameter(Tensor.ones([dim])) : nil
        self.bias = elementwiseAffine && bias ? Parameter(Tensor.zeros([dim])) : nil
    }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == dim, "LayerNorm(\(dim)): input shape \(x.shape)")
        let mean = x.mean(axis: -1, keepDims: true)
        let centered = x - mean
        let variance = centered.squared().mean(axis: -1, keepDims: true)
        var y = centered / (variance + eps).sqrt()
        if let weight { y = y * weight.value }
        if let bias { y = y + bias.value }
        return y
    }
}

/// Layers applied in order; keys are the positions (`0.weight`, `2.bias`), as `nn.Sequential`.
public final class Sequential: Layer {
    public let layers: [Layer]

    public init(_ layers: [Layer]) { self.layers = layers }
    public convenience init(_ layers: Layer...) { self.init(layers) }

    public override func namedMembers() -> [(String, Any)] { layers.enumerated().map { ("\($0.offset)", $0.element) } }

    public override func callAsFunction(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }
}

/// Element-wise activation layers (no parameters).
public final class Activation: Layer {
    public enum Kind: Sendable { case relu, gelu, silu, tanh, sigmoid, identity }
    public let kind: Kind
    public init(_ kind: Kind) { self.kind = kind }

    public override func callAsFunction(_ x: Tensor) -> Tensor {
        switch kind {
        case .relu: return x.relu()
        case .gelu: return x.gelu()
        case .silu: return x.silu()
        case .tanh: return x.tanh()
        case .sigmoid: return x.sigmoid()
        case .identity: return x
        }
    }
}

/// Loss functions with PyTorch's default `mean` reduction.
public enum Loss {
    /// Mean squared error over all elements; 0 over none (an empty batch has no loss — PyTorch gives NaN).
    public static func mse(_ prediction: Tensor, _ target: Tensor) -> Tensor {
        precondition(prediction.shape == target.shape, "mse: prediction \(prediction.shape) vs target \(target.shape)")
        guard prediction.count > 0 else { return Tensor(0) }
        return prediction.meanSquaredDifference(target)
    }

    /// Cross-entropy of `logits [N, C]` against class indices `[N]`, averaged over targets that are
    /// not `ignoreIndex` (0 when all are ignored).
    public static func crossEntropy(_ logits: Tensor, _ targets: IndexTensor, ignoreIndex: Int = -100) -> Tensor {
        precondition(logits.rank == 2 && targets.shape == [logits.shape[0]],
                     "crossEntropy: logits \(logits.shape) and targets \(targets.shape) must be [N, C] and [N]")
        let keep = targets.scalars.map { $0 == ignoreIndex ? Float(0) : 1 }
        let safe = IndexTensor(targets.scalars.map { $0 == ignoreIndex ? 0 : $0 }, shape: [targets.count, 1])
        let picked = logits.logSoftmax(axis: 1).gather(axis: 1, index: safe).reshaped([-1])
        let weight = Tensor(keep)
        let n = Swift.max(1, keep.reduce(0, +))
        return -(picked * weight).sum() / Float(n)
    }
}
