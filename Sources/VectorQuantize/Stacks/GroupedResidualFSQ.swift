import VQNN
import VQTensor

/// Grouped residual FSQ: the features split into `groups`, each with its own ``ResidualFSQ`` (`rvqs.<g>`).
public final class GroupedResidualFSQ: Module {
    /// `dim` split into `groups`, each quantized by a ``ResidualFSQ`` of `residual` (its `dim` is `dim / groups`).
    public struct Configuration: Sendable, Equatable {
        public var dim: Int
        public var groups: Int
        /// `accept_image_fmap`: `[b, dim, h, w]` input split along the channels; the groups run channel first.
        public var acceptImageFmap = false
        public var residual: ResidualFSQ.Configuration
        public init(dim: Int, groups: Int, residual: ResidualFSQ.Configuration) {
            self.dim = dim
            self.groups = groups
            self.residual = residual
        }

        public init(referenceKwargs kw: [String: Any]) throws {
            let m = "GroupedResidualFSQ"
            let image = try Keywords(kw, module: m).bool("accept_image_fmap") ?? false
            let (dim, groups, inner) = try ResidualStack.groupedKeywords(kw, module: m, dropping: ["accept_image_fmap"])
            self.init(dim: dim, groups: groups, residual: try ResidualFSQ.Configuration(referenceKwargs: inner, module: m))
            acceptImageFmap = image
            try validate()
        }

        /// One group's configuration.
        var groupConfiguration: ResidualFSQ.Configuration {
            var r = residual
            r.dim = dim / Swift.max(groups, 1)
            if acceptImageFmap { r.channelFirst = true }
            return r
        }

        public func validate() throws {
            try ResidualStack.validateGroups(dim: dim, groups: groups, module: "GroupedResidualFSQ")
            try groupConfiguration.validate(module: "GroupedResidualFSQ")
        }
    }

    public let configuration: Configuration
    public var dim: Int { configuration.dim }
    public var groups: Int { configuration.groups }
    public let rvqs: [ResidualFSQ]

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        self.configuration = configuration.canonical
        let r = configuration.groupConfiguration
        rvqs = try (0..<configuration.groups).map { _ in try ResidualFSQ(r, module: "GroupedResidualFSQ") }
        super.init()
    }

    /// The feature axis the groups split: 1 for image maps and channel-first groups, else the last.
    var splitAxis: Int { configuration.groupConfiguration.channelFirst ? 1 : -1 }

    /// The result of a forward: as a residual stack's, every group's indices and layer inputs stacked first.
    public typealias Output = ResidualFSQ.Output

    public func callAsFunction(_ x: Tensor) -> Output {
        let outs = zip(rvqs, x.split(parts: groups, axis: splitAxis)).map { $0($1) }
        return Output(quantized: Tensor.concat(outs.map(\.quantized), axis: splitAxis),
                      indices: IndexTensor(outs.flatMap(\.indices.scalars), shape: [groups] + outs[0].indices.shape),
                      layerInputs: Tensor.stack(outs.map(\.layerInputs), axis: 0))
    }

    public func getCodes(from indices: IndexTensor) -> Tensor {
        Tensor.stack((0..<groups).map { rvqs[$0].getCodes(from: ResidualStack.group(indices, $0, of: groups)) }, axis: 0)
    }

    public func getOutput(from indices: IndexTensor) -> Tensor {
        Tensor.concat((0..<groups).map { rvqs[$0].getOutput(from: ResidualStack.group(indices, $0, of: groups)) }, axis: -1)
    }
}
