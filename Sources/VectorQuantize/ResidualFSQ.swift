import VQNN
import VQTensor

/// Residual FSQ (Mentzer et al., 2023, §4; the reference's `ResidualFSQ`): layer `i` quantizes the
/// residual scaled by `L^i` with a symmetry-preserving FSQ, so each layer refines the previous one by a
/// factor of the level count. The input is soft-clamped to each layer's range first.
public final class ResidualFSQ: Module {
    public let levels: [Int]
    public let dim: Int
    public let projectIn: Linear?
    public let projectOut: Linear?
    public let layers: [FSQ]
    /// `[q, d]`: layer `i` works at scale `L^-i`.
    public let scales: Tensor
    let softClamp: Tensor?
    /// `is_channel_first`: inputs `[b, dim, n…]`, outputs likewise, indices `[b, q, n…]` (as the reference).
    public let channelFirst: Bool
    public let quantizeDropout: Bool
    public let quantizeDropoutCutoffIndex: Int
    public let quantizeDropoutMultipleOf: Int
    var rng: SeededGenerator

    static let ownKeywords: Set<String> = ["levels", "num_quantizers", "dim", "is_channel_first", "quantize_dropout",
                                           "quantize_dropout_cutoff_index", "quantize_dropout_multiple_of",
                                           "soft_clamp_input_value", "bound_hard_clamp", "seed"]

    public init(referenceKwargs kw: [String: Any], module: String = "ResidualFSQ") throws {
        let k = Keywords(kw, module: module)
        guard let levels = try k.ints("levels"), let q = try k.int("num_quantizers"), q > 0 else {
            throw ConfigurationError.invalid(module: module, reason: "levels and num_quantizers are required")
        }
        channelFirst = try k.bool("is_channel_first") ?? false
        let softValue = try k.double("soft_clamp_input_value")
        self.levels = levels
        let cd = levels.count
        dim = try k.int("dim") ?? cd
        let seed = UInt64(truncatingIfNeeded: try k.int("seed") ?? 0)
        var rng = SeededGenerator(seed: seed ^ 0x4F5C)
        if dim != cd {
            projectIn = Linear(dim, cd, rng: &rng)
            projectOut = Linear(cd, dim, rng: &rng)
        } else {
            projectIn = nil
            projectOut = nil
        }
        let hardClamp = try k.bool("bound_hard_clamp") ?? true
        if hardClamp && softValue != nil {
            // The reference asserts this too: the hard clamp brings its own per-level soft clamp.
            throw ConfigurationError.badValue(module: module, keyword: "soft_clamp_input_value", reason: "needs bound_hard_clamp false")
        }
        var layerKw = kw.filter { !Self.ownKeywords.contains($0.key) }
        layerKw["levels"] = levels
        layerKw["dim"] = cd
        layerKw["preserve_symmetry"] = true
        layerKw["bound_hard_clamp"] = hardClamp
        let layerConfig = try FSQ.Configuration(referenceKwargs: layerKw, module: module)
        layers = (0..<q).map { _ in FSQ(layerConfig) }
        scales = Tensor((0..<q).flatMap { i in levels.map { powFloat(Float($0), -Float(i)) } }, shape: [q, cd])
        softClamp = hardClamp ? Tensor(levels.map { 1 + 1 / Float($0 - 1) }) : softValue.map { Tensor(repeating: Float($0), shape: [cd]) }
        (quantizeDropout, quantizeDropoutCutoffIndex, quantizeDropoutMultipleOf) = try ResidualStack.dropoutSettings(k, layers: q)
        self.rng = rng
        super.init()
    }

    public var numQuantizers: Int { layers.count }

    /// `[q, C, d]`: every layer's implicit codebook (unscaled).
    public var codebooks: Tensor { Tensor.stack(layers.map(\.implicitCodebook), axis: 0) }

    /// Quantizes `x [b, n, dim]` (`[b, dim, n]` with ``channelFirst``): the projected output in the input's
    /// layout, indices `[b, n, q]` (`[b, q, n]` with ``channelFirst``, as the reference moves them too; -1 for
    /// dropped layers), and each layer's input `[q, b, n, d]`.
    public func callAsFunction(_ x: Tensor, quantizeDropoutSeed: UInt64? = nil)
        -> (quantized: Tensor, indices: IndexTensor, layerInputs: Tensor)
    {
        guard channelFirst else { return channelLast(x, quantizeDropoutSeed: quantizeDropoutSeed) }
        precondition(x.rank == 3, "ResidualFSQ(channel first): input \(x.shape) must be [b, dim, n]")
        let out = channelLast(x.transposed(1, 2), quantizeDropoutSeed: quantizeDropoutSeed)
        let (b, n, q) = (out.indices.shape[0], out.indices.shape[1], out.indices.shape[2])
        var moved = [Int](repeating: 0, count: b * n * q)
        for bi in 0..<b { for t in 0..<n { for i in 0..<q { moved[(bi * q + i) * n + t] = out.indices.scalars[(bi * n + t) * q + i] } } }
        return (out.quantized.transposed(1, 2), IndexTensor(moved, shape: [b, q, n]), out.layerInputs)
    }

    /// The channel-last forward: `x [b, n, dim]`, indices `[b, n, q]`.
    func channelLast(_ x: Tensor, quantizeDropoutSeed: UInt64? = nil) -> (quantized: Tensor, indices: IndexTensor, layerInputs: Tensor) {
        precondition(x.rank == 3 && x.shape[2] == dim, "ResidualFSQ(dim \(dim)): input shape \(x.shape)")
        var z = projectIn.map { $0(x) } ?? x
        if let softClamp { z = (z / softClamp).tanh() * softClamp }
        let (b, n, q) = (x.shape[0], x.shape[1], numQuantizers)
        var residual = z
        var out = Tensor.zeros(z.shape)
        var indices = [Int](repeating: -1, count: b * n * q)
        var inputs: [Tensor] = []
        let dropout = isTraining && quantizeDropout
        let last = ResidualStack.lastLayer(layers: q, dropout: dropout, cutoff: quantizeDropoutCutoffIndex,
                                           multipleOf: quantizeDropoutMultipleOf, seed: dropout ? quantizeDropoutSeed ?? rng.next() : 0)
        for (i, layer) in layers.enumerated() {
            let scale = scales.slice(axis: 0, i..<(i + 1)).reshaped([-1])
            let input = residual / scale
            inputs.append(input.detached())
            if i > last { continue }
            let (qz, idx, _) = layer(input)
            let scaled = qz * scale
            residual = residual - scaled.detached()
            out = out + scaled
            for t in 0..<(b * n) { indices[t * q + i] = idx.scalars[t] }
        }
        let quantized = projectOut.map { $0(out) } ?? out
        return (quantized, IndexTensor(indices, shape: [b, n, q]), Tensor.stack(inputs, axis: 0))
    }

    /// Scaled per-layer codes `[q, b, n, d]` for indices `[b, n, q]` (zero where -1). With ``channelFirst``
    /// the forward's `[b, q, n]` indices are read too (the reference fails on them).
    public func getCodes(from indices: IndexTensor) -> Tensor {
        if channelFirst && indices.rank == 3 && indices.shape[1] == numQuantizers && indices.shape[2] != numQuantizers {
            let (b, q, n) = (indices.shape[0], indices.shape[1], indices.shape[2])
            var back = [Int](repeating: 0, count: b * n * q)
            for bi in 0..<b { for i in 0..<q { for t in 0..<n { back[(bi * n + t) * q + i] = indices.scalars[(bi * q + i) * n + t] } } }
            return getCodes(from: IndexTensor(back, shape: [b, n, q]))
        }
        return Tensor.stack(layers.enumerated().map { i, layer in
            let (idx, keep) = ResidualStack.column(indices, layer: i)
            return layer.rawCodes(idx) * keep * scales.slice(axis: 0, i..<(i + 1)).reshaped([-1])
        }, axis: 0)
    }

    public func getOutput(from indices: IndexTensor) -> Tensor {
        let summed = getCodes(from: indices).sum(axis: 0)
        return projectOut.map { $0(summed) } ?? summed
    }
}

/// Grouped residual FSQ: the features split into `groups`, each with its own ``ResidualFSQ`` (`rvqs.<g>`).
public final class GroupedResidualFSQ: Module {
    public let dim: Int
    public let groups: Int
    public let rvqs: [ResidualFSQ]

    public init(referenceKwargs kw: [String: Any]) throws {
        let k = Keywords(kw, module: "GroupedResidualFSQ")
        let dim = try k.required("dim")
        let groups = try k.int("groups") ?? 1
        guard groups > 0, dim % groups == 0 else {
            throw ConfigurationError.invalid(module: "GroupedResidualFSQ", reason: "dim \(dim) is not divisible into \(groups) groups")
        }
        self.dim = dim
        self.groups = groups
        var inner = kw
        inner["groups"] = nil
        inner["accept_image_fmap"] = nil
        inner["dim"] = dim / groups
        rvqs = try (0..<groups).map { _ in try ResidualFSQ(referenceKwargs: inner, module: "GroupedResidualFSQ") }
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> (quantized: Tensor, indices: IndexTensor, layerInputs: Tensor) {
        let outs = zip(rvqs, x.split(parts: groups, axis: -1)).map { $0($1) }
        return (Tensor.concat(outs.map(\.quantized), axis: -1),
                IndexTensor(outs.flatMap(\.indices.scalars), shape: [groups] + outs[0].indices.shape),
                Tensor.stack(outs.map(\.layerInputs), axis: 0))
    }

    public func getCodes(from indices: IndexTensor) -> Tensor {
        Tensor.stack((0..<groups).map { rvqs[$0].getCodes(from: ResidualStack.group(indices, $0, of: groups)) }, axis: 0)
    }

    public func getOutput(from indices: IndexTensor) -> Tensor {
        Tensor.concat((0..<groups).map { rvqs[$0].getOutput(from: ResidualStack.group(indices, $0, of: groups)) }, axis: -1)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
func powFloat(_ x: Float, _ y: Float) -> Float { powf(x, y) }
