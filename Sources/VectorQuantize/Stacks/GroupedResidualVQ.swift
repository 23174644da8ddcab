import VQNN
import VQTensor

/// Grouped residual VQ (Yang et al., *HiFi-Codec*, 2023): the features are split into `groups` equal
/// chunks, each quantized by its own ``ResidualVQ`` (keys `rvqs.<g>.…`). A whole group, a layer of a
/// group or codes of one layer can be frozen independently.
public final class GroupedResidualVQ: Module {
    /// `dim` split into `groups`, each quantized by a ``ResidualVQ`` of `residual` (its `dim` is `dim / groups`).
    public struct Configuration: Sendable, Equatable {
        public var dim: Int
        public var groups: Int
        public var residual: ResidualVQConfiguration
        public init(dim: Int, groups: Int, residual: ResidualVQConfiguration) {
            self.dim = dim
            self.groups = groups
            self.residual = residual
        }

        /// The reference's keywords: `dim`, `groups`, and every `ResidualVQ` keyword.
        public init(referenceKwargs kw: [String: Any]) throws {
            let (dim, groups, inner) = try ResidualStack.groupedKeywords(kw, module: "GroupedResidualVQ")
            self.init(dim: dim, groups: groups, residual: try ResidualVQConfiguration(referenceKwargs: inner, module: "GroupedResidualVQ"))
        }
    }

    public let configuration: Configuration
    public var dim: Int { configuration.dim }
    public var groups: Int { configuration.groups }
    public let rvqs: [ResidualVQ]

    /// - Parameter configuration: the feature dimension (split evenly into the groups), the number of groups, and one
    ///   group's ``ResidualVQ`` configuration (its `dim` is `dim / groups`).
    public init(_ configuration: Configuration) throws {
        let (dim, groups) = (configuration.dim, configuration.groups)
        guard groups > 0, dim % groups == 0 else {
            throw ConfigurationError.invalid(module: "GroupedResidualVQ", reason: "dim \(dim) is not divisible into \(groups) groups")
        }
        self.configuration = configuration.canonical
        var rvqs: [ResidualVQ] = []
        for g in 0..<groups {
            var c = configuration.residual
            c.dim = dim / groups
            c.layer.seed = configuration.residual.layer.seed &+ UInt64(g) &* 0x51ED
            rvqs.append(try ResidualVQ(c, bridge: rvqs.first?.layers.first?.codebook.vqBridge))   // one vq_bridge, as the reference
        }
        self.rvqs = rvqs
        super.init()
    }

    /// The result of a forward: the output, every group's indices and losses, and the cross-entropy commitment terms when configured.
    public struct Output {
        public var quantized: Tensor
        public var indices: IndexTensor
        public var losses: Tensor
        public var crossEntropy: Tensor?
    }

    /// Options per call; `perGroup` overrides them for single groups (e.g. to freeze one group; a group outside the
    /// stack traps, naming it).
    public func callAsFunction(_ x: Tensor, options: ResidualVQOptions = .init(), perGroup: [Int: ResidualVQOptions] = [:])
        -> Output
    {
        let axis = splitAxis
        precondition(x.rank >= 2 && x.shape[axis < 0 ? x.rank - 1 : axis] == dim, "GroupedResidualVQ(dim \(dim)): input shape \(x.shape)")
        precondition(perGroup.keys.allSatisfy { (0..<groups).contains($0) },
                     "GroupedResidualVQ: perGroup options for groups \(perGroup.keys.sorted()) outside the \(groups) groups 0..<\(groups)")
        let chunks = x.split(parts: groups, axis: axis)
        var seedGen = SeededGenerator(seed: options.quantizeDropoutSeed ?? rvqs[0].rng.next())
        let sharedSeed = seedGen.next()
        var outs: [ResidualVQOutput] = []
        for (g, rvq) in rvqs.enumerated() {
            var o = perGroup[g] ?? options
            if o.quantizeDropoutSeed == nil { o.quantizeDropoutSeed = sharedSeed }
            if let t = options.targetIndices { o.targetIndices = ResidualStack.group(t, g, of: groups) }
            outs.append(rvq(chunks[g], options: o))
        }
        let indices = IndexTensor(outs.flatMap(\.indices.scalars), shape: [groups] + outs[0].indices.shape)
        let ces = outs.compactMap(\.crossEntropy)
        let ce: Tensor? = ces.isEmpty ? nil : ces.dropFirst().reduce(ces[0], +)
        return Output(quantized: Tensor.concat(outs.map(\.quantized), axis: axis), indices: indices,
                      losses: Tensor.stack(outs.map(\.losses), axis: 0), crossEntropy: ce)
    }

    /// The feature axis the groups split: 1 for image maps `[b, dim, h, w]`, else the last.
    var splitAxis: Int { configuration.residual.acceptImageFmap ? 1 : -1 }

    /// `[groups, q, b, …, d / groups]` codes for indices `[groups, b, …, q]`.
    public func getCodes(from indices: IndexTensor) -> Tensor {
        Tensor.stack((0..<groups).map { rvqs[$0].getCodes(from: ResidualStack.group(indices, $0, of: groups)) }, axis: 0)
    }

    /// The groups' outputs concatenated along the features.
    public func getOutput(from indices: IndexTensor) -> Tensor {
        Tensor.concat((0..<groups).map { rvqs[$0].getOutput(from: ResidualStack.group(indices, $0, of: groups)) }, axis: splitAxis)
    }
}
