import VQNN
import VQTensor

/// Grouped residual LFQ (the reference's `GroupedResidualLFQ`): the features split into `groups` equal
/// chunks, each quantized by its own ``ResidualLFQ`` (keys `rvqs.<g>.…`); outputs concatenated, indices
/// `[groups, b, n, q]`, per-layer entropy losses `[groups, q]`.
///
/// ```swift
/// let g = try GroupedResidualLFQ(referenceKwargs: ["dim": 16, "groups": 2, "codebook_size": 64, "num_quantizers": 2])
/// let out = g(x)                                 // out.indices: [2, b, n, 2]
/// ```
public final class GroupedResidualLFQ: Module {
    /// `dim` split into `groups`, each quantized by a ``ResidualLFQ`` of `residual` (its `dim` is
    /// `dim / groups`; group `g` seeded `seed + g`).
    public struct Configuration: Sendable, Equatable {
        public var dim: Int
        public var groups: Int
        public var residual: ResidualLFQ.Configuration
        public init(dim: Int, groups: Int, residual: ResidualLFQ.Configuration) {
            self.dim = dim
            self.groups = groups
            self.residual = residual
        }

        public init(referenceKwargs kw: [String: Any]) throws {
            let m = "GroupedResidualLFQ"
            // `accept_image_fmap`: the reference's own keyword; with true its ResidualLFQ layers are handed
            // `[b, d/groups, h, w]` chunks they cannot take (every input fails there), so only false is accepted.
            if try Keywords(kw, module: m).bool("accept_image_fmap") == true {
                throw ConfigurationError.badValue(module: m, keyword: "accept_image_fmap", reason: "true is not supported: the reference's GroupedResidualLFQ fails on every input with it (its ResidualLFQ layers take [b, n, d] only)")
            }
            let (dim, groups, inner) = try ResidualStack.groupedKeywords(kw, module: m, dropping: ["accept_image_fmap"])
            self.init(dim: dim, groups: groups, residual: try ResidualLFQ.Configuration(referenceKwargs: inner, module: m))
            try validate()
        }

        public func validate() throws {
            try ResidualStack.validateGroups(dim: dim, groups: groups, module: "GroupedResidualLFQ")
            var r = residual
            r.dim = dim / groups
            try r.validate(module: "GroupedResidualLFQ")
        }
    }

    public let configuration: Configuration
    public var dim: Int { configuration.dim }
    public var groups: Int { configuration.groups }
    public let rvqs: [ResidualLFQ]

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        self.configuration = configuration.canonical
        rvqs = try (0..<configuration.groups).map { g in
            var r = configuration.residual
            r.dim = configuration.dim / configuration.groups
            r.seed = configuration.residual.seed &+ UInt64(g)
            return try ResidualLFQ(r, module: "GroupedResidualLFQ")
        }
        super.init()
    }

    /// Quantizes `x [b, n, dim]` group by group (one quantize-dropout draw shared by the groups).
    /// The result of a forward: as a residual stack's, every group's indices, losses and layer inputs stacked first.
    public typealias Output = ResidualLFQ.Output

    public func callAsFunction(_ x: Tensor, mask: TokenMask? = nil, quantizeDropoutSeed: UInt64? = nil) -> Output {
        precondition(x.shape.last == dim, "GroupedResidualLFQ(dim \(dim)): input shape \(x.shape)")
        let seed = quantizeDropoutSeed ?? rvqs[0].rng.next()
        let outs = zip(rvqs, x.split(parts: groups, axis: -1)).map { $0($1, mask: mask, quantizeDropoutSeed: seed) }
        return Output(quantized: Tensor.concat(outs.map(\.quantized), axis: -1),
                      indices: IndexTensor(outs.flatMap(\.indices.scalars), shape: [groups] + outs[0].indices.shape),
                      losses: Tensor.stack(outs.map(\.losses), axis: 0), layerInputs: Tensor.stack(outs.map(\.layerInputs), axis: 0))
    }

    /// `[groups, q, C, bits]`: every group's scaled codebooks.
    public var codebooks: Tensor { Tensor.stack(rvqs.map(\.codebooks), axis: 0) }

    /// `[groups, q, b, n, bits]` codes for indices `[groups, b, n, q]`.
    public func getCodes(from indices: IndexTensor) -> Tensor {
        Tensor.stack((0..<groups).map { rvqs[$0].getCodes(from: ResidualStack.group(indices, $0, of: groups)) }, axis: 0)
    }

    /// The groups' outputs concatenated along the features.
    public func getOutput(from indices: IndexTensor) -> Tensor {
        Tensor.concat((0..<groups).map { rvqs[$0].getOutput(from: ResidualStack.group(indices, $0, of: groups)) }, axis: -1)
    }
}
