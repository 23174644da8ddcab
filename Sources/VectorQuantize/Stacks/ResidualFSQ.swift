import VQNN
import VQTensor

/// Residual FSQ (Mentzer et al., 2023, §4; the reference's `ResidualFSQ`): layer `i` quantizes the
/// residual scaled by `L^i` with a symmetry-preserving FSQ, so each layer refines the previous one by a
/// factor of the level count. The input is soft-clamped to each layer's range first.
public final class ResidualFSQ: Module {
    /// The constructor arguments (the reference's `ResidualFSQ(...)` keywords).
    ///
    /// ```swift
    /// var c = ResidualFSQ.Configuration(levels: [8, 5, 5, 5], numQuantizers: 4)
    /// c.dim = 64
    /// let rfsq = try ResidualFSQ(c)
    /// ```
    public struct Configuration: Sendable, Equatable {
        public var levels: [Int]                          // levels
        public var numQuantizers: Int                     // num_quantizers
        public var dim: Int? = nil                        // dim (default: levels.count, no projection)
        public var channelFirst = false                   // is_channel_first
        public var quantizeDropout = false                // quantize_dropout
        public var quantizeDropoutCutoffIndex = 0         // quantize_dropout_cutoff_index
        public var quantizeDropoutMultipleOf = 1          // quantize_dropout_multiple_of
        /// `soft_clamp_input_value` (needs `boundHardClamp` off): one value for every level, or one per level, as the reference
        /// takes a float or a list: `x ← tanh(x / v) · v` per channel before the first layer.
        public var softClampInputValue: [Float]? = nil
        public var boundHardClamp = true                  // bound_hard_clamp
        /// Every other FSQ option of the layers (their levels, dim, symmetry and clamp are set by the stack).
        public var layer: FSQ.Configuration
        public var seed: UInt64 = 0

        public init(levels: [Int], numQuantizers: Int) {
            self.levels = levels
            self.numQuantizers = numQuantizers
            layer = FSQ.Configuration(levels: levels)
        }

        static let ownKeywords: Set<String> = ["levels", "num_quantizers", "dim", "is_channel_first", "quantize_dropout",
                                               "quantize_dropout_cutoff_index", "quantize_dropout_multiple_of",
                                               "soft_clamp_input_value", "bound_hard_clamp", "seed"]

        public init(referenceKwargs kw: [String: Any]) throws {
            try self.init(referenceKwargs: kw, module: "ResidualFSQ")
        }

        init(referenceKwargs kw: [String: Any], module: String) throws {
            let k = Keywords(kw, module: module)
            guard let levels = try k.ints("levels"), let q = try k.int("num_quantizers") else {
                throw ConfigurationError.invalid(module: module, reason: "levels and num_quantizers are required")
            }
            self.init(levels: levels, numQuantizers: q)
            try k.refuseSetBy("ResidualFSQ", tolerating: ["preserve_symmetry": [true]])   // on in its layers, as earlier versions wrote
            dim = try k.int("dim")
            channelFirst = try k.bool("is_channel_first") ?? false
            if kw["soft_clamp_input_value"] is [Any] {
                softClampInputValue = try k.doubles("soft_clamp_input_value")?.map(Float.init)
            } else {
                softClampInputValue = try k.double("soft_clamp_input_value").map { [Float($0)] }
            }
            boundHardClamp = try k.bool("bound_hard_clamp") ?? true
            (quantizeDropout, quantizeDropoutCutoffIndex, quantizeDropoutMultipleOf) = try ResidualStack.dropoutSettings(k, layers: q)
            seed = UInt64(truncatingIfNeeded: try k.int("seed") ?? 0)
            var layerKw = kw.filter { !Self.ownKeywords.contains($0.key) }
            layerKw["levels"] = levels
            layerKw["preserve_symmetry"] = true
            layer = try FSQ.Configuration(referenceKwargs: layerKw, module: module)
            try validate(module: module)
        }

        /// The keyword of its layers it sets itself (the reference's `FSQ(preserve_symmetry = True, **kwargs)`): never
        /// written, left out of exports.
        public static let setForLayers = ["preserve_symmetry"]

        /// The checks of both paths.
        public func validate() throws { try validate(module: "ResidualFSQ") }

        func validate(module: String) throws {
            try ResidualStack.validate(numQuantizers: numQuantizers, cutoff: quantizeDropoutCutoffIndex, multipleOf: quantizeDropoutMultipleOf,
                                       softClamp: nil, module: module, dropout: quantizeDropout)
            if let v = softClampInputValue {
                guard v.count == 1 || v.count == levels.count, v.allSatisfy({ $0 > 0 && $0.isFinite }) else {
                    throw ConfigurationError.badValue(module: module, keyword: "soft_clamp_input_value",
                                                      reason: "one positive number, or one per level (\(levels.count)); got \(v)")
                }
            }
            if boundHardClamp && softClampInputValue != nil {
                // The reference asserts this too: the hard clamp brings its own per-level soft clamp.
                throw ConfigurationError.badValue(module: module, keyword: "soft_clamp_input_value", reason: "needs bound_hard_clamp false")
            }
            try layerConfiguration.validate(module: module)
            if layer.numCodebooks != 1 {
                // The reference asserts its layers have no projection; several codebooks would give them one.
                throw ConfigurationError.badValue(module: module, keyword: "num_codebooks",
                                                  reason: "the layers quantize the stack's \(levels.count) levels directly: \(layer.numCodebooks) codebooks would need a projection")
            }
            if !layer.returnIndices {
                // The stack builds its indices from its layers' (the reference's layers would return None and fail).
                throw ConfigurationError.badValue(module: module, keyword: "return_indices", reason: "a stack needs its layers' indices: only a single FSQ takes false")
            }
            if layer.channelFirst {
                // The stack's own keyword is is_channel_first; the layers quantize the stack's [b, n, d] residual.
                throw ConfigurationError.badValue(module: module, keyword: "channel_first", reason: "a keyword of a single FSQ: the stack's is is_channel_first")
            }
            if let d = dim, SizeLimit.product([d, levels.count]) == nil {
                throw ConfigurationError.badValue(module: module, keyword: "dim", reason: "dim \(d) × \(levels.count) projection values exceed \(SizeLimit.maxElements) (or a size is not positive)")
            }
        }

        /// One layer's FSQ: the stack's levels, no projection, symmetry preserved, the stack's clamp.
        var layerConfiguration: FSQ.Configuration {
            var l = layer
            l.levels = levels
            l.dim = levels.count
            l.numCodebooks = 1
            l.preserveSymmetry = true
            l.boundHardClamp = boundHardClamp
            return l
        }
    }

    public let configuration: Configuration
    public let levels: [Int]
    public let dim: Int
    public let projectIn: Linear?
    public let projectOut: Linear?
    public let layers: [FSQ]
    /// `[q, d]`: layer `i` works at scale `L^-i`.
    public let scales: Tensor
    let softClamp: Tensor?
    var rng: SeededGenerator

    /// `is_channel_first`: inputs `[b, dim, n…]`, outputs likewise, indices `[b, q, n…]` (as the reference).
    public var channelFirst: Bool { configuration.channelFirst }
    public var quantizeDropout: Bool { configuration.quantizeDropout && configuration.numQuantizers > 1 }
    public var quantizeDropoutCutoffIndex: Int { configuration.quantizeDropoutCutoffIndex }
    public var quantizeDropoutMultipleOf: Int { configuration.quantizeDropoutMultipleOf }

    public convenience init(_ configuration: Configuration) throws {
        try self.init(configuration, module: "ResidualFSQ")
    }

    init(_ configuration: Configuration, module: String) throws {
        try configuration.validate(module: module)
        let c = configuration.canonical
        self.configuration = c
        levels = c.levels
        let cd = c.levels.count
        dim = c.dim ?? cd
        var rng = SeededGenerator(seed: c.seed ^ 0x4F5C)
        (projectIn, projectOut) = Linear.projections(dim, cd, rng: &rng)
        let layerConfig = c.layerConfiguration
        layers = try (0..<c.numQuantizers).map { _ in try FSQ(layerConfig) }
        scales = Tensor((0..<c.numQuantizers).flatMap { i in c.levels.map { powFloat(Float($0), -Float(i)) } }, shape: [c.numQuantizers, cd])
        softClamp = c.boundHardClamp ? Tensor(c.levels.map { 1 + 1 / Float($0 - 1) }) : c.softClampInputValue.map { $0.count == 1 ? Tensor(repeating: $0[0], shape: [cd]) : Tensor($0) }
        self.rng = rng
        super.init()
    }

    public var numQuantizers: Int { layers.count }

    /// `[q, C, d]`: every layer's implicit codebook (unscaled).
    public var codebooks: Tensor { Tensor.stack(layers.map(\.implicitCodebook), axis: 0) }

    /// The result of a forward: the summed output, every layer's indices and every layer's input.
    public struct Output {
        public var quantized: Tensor
        public var indices: IndexTensor
        public var layerInputs: Tensor
    }

    /// Quantizes `x [b, n, dim]` (`[b, dim, n]` with ``channelFirst``): the projected output in the input's
    /// layout, indices `[b, n, q]` (`[b, q, n]` with ``channelFirst``, as the reference moves them too; -1 for
    /// dropped layers), and each layer's input `[q, b, n, d]`.
    public func callAsFunction(_ x: Tensor, quantizeDropoutSeed: UInt64? = nil)
        -> Output
    {
        guard channelFirst else { return channelLast(x, quantizeDropoutSeed: quantizeDropoutSeed) }
        precondition(x.rank >= 3 && x.shape[1] == dim, "ResidualFSQ(channel first, dim \(dim)): input \(x.shape) must be [b, \(dim), n…]")
        let spatial = Array(x.shape.dropFirst(2))
        let out = channelLast(x.reshaped([x.shape[0], dim, spatial.reduce(1, *)]).transposed(1, 2), quantizeDropoutSeed: quantizeDropoutSeed)
        let (b, n, q) = (out.indices.shape[0], out.indices.shape[1], out.indices.shape[2])
        var moved = [Int](repeating: 0, count: b * n * q)
        for bi in 0..<b { for t in 0..<n { for i in 0..<q { moved[(bi * q + i) * n + t] = out.indices.scalars[(bi * n + t) * q + i] } } }
        return Output(quantized: out.quantized.transposed(1, 2).reshaped(x.shape), indices: IndexTensor(moved, shape: [b, q] + spatial),
                      layerInputs: out.layerInputs)
    }

    /// The channel-last forward: `x [b, n, dim]`, indices `[b, n, q]`.
    func channelLast(_ x: Tensor, quantizeDropoutSeed: UInt64? = nil) -> Output {
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
            let layerOut = layer(input)
            let (qz, idx) = (layerOut.quantized, layerOut.indices)
            let scaled = qz * scale
            residual = residual - scaled.detached()
            out = out + scaled
            for t in 0..<(b * n) { indices[t * q + i] = idx.scalars[t] }
        }
        let quantized = projectOut.map { $0(out) } ?? out
        return Output(quantized: quantized, indices: IndexTensor(indices, shape: [b, n, q]), layerInputs: Tensor.stack(inputs, axis: 0))
    }

    /// Scaled per-layer codes `[q, b, n, d]` for indices `[b, n, q]` (zero where -1). With ``channelFirst``
    /// the forward's `[b, q, n…]` indices are read too (the reference fails on them): codes `[q, b, n…, d]`.
    public func getCodes(from indices: IndexTensor) -> Tensor {
        if channelFirst && indices.rank >= 3 && indices.shape[1] == numQuantizers && indices.shape.last != numQuantizers {
            let (b, q) = (indices.shape[0], indices.shape[1])
            let spatial = Array(indices.shape.dropFirst(2)), n = spatial.reduce(1, *)
            var back = [Int](repeating: 0, count: b * n * q)
            for bi in 0..<b { for i in 0..<q { for t in 0..<n { back[(bi * n + t) * q + i] = indices.scalars[(bi * q + i) * n + t] } } }
            return getCodes(from: IndexTensor(back, shape: [b] + spatial + [q]))
        }
        return Tensor.stack(layers.enumerated().map { i, layer in
            let (idx, keep) = ResidualStack.column(indices, layer: i)
            // The codes the layer's forward output (rotated back with orthogonal_rotation: the reference reads the
            // unrotated grid there, so its decoding is not its forward's output; README, "Differences").
            return layer.forwardCodes(idx) * keep * scales.slice(axis: 0, i..<(i + 1)).reshaped([-1])
        }, axis: 0)
    }

    public func getOutput(from indices: IndexTensor) -> Tensor {
        let summed = getCodes(from: indices).sum(axis: 0)
        return projectOut.map { $0(summed) } ?? summed
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
func powFloat(_ x: Float, _ y: Float) -> Float { powf(x, y) }
