/// Communication among the processes that train one model together (data parallelism).
///
/// Every reduction is performed in rank order (reduce to rank 0, then broadcast), so all ranks receive
/// bit-identical results whatever the transport. The default, ``SingleProcess``, is a no-op; the
/// Open MPI implementation lives in the `VQDistributed` target behind the `MPI` package trait.
public protocol Collective: AnyObject, Sendable {
    var rank: Int { get }
    var worldSize: Int { get }
    /// Element-wise sum over ranks, in rank order; every rank gets the same bits.
    func allReduceSum(_ values: inout [Float])
    /// Rank `root`'s values on every rank.
    func broadcast(_ values: inout [Float], root: Int)
    /// Every rank's array (sizes may differ), in rank order.
    func allGather(_ values: [Float]) -> [[Float]]
}

extension Collective {
    public var isDistributed: Bool { worldSize > 1 }

    /// Averages the gradients of `parameters` over ranks (before an optimizer step).
    public func averageGradients(_ parameters: [Parameter]) {
        guard isDistributed else { return }
        for p in parameters {
            guard var g = p.grad?.scalars else { continue }
            allReduceSum(&g)
            let n = Float(worldSize)
            p.grad = VQTensorBridge.tensor(g.map { $0 / n }, shape: p.shape)
        }
    }
}

/// One process: every collective is the identity.
public final class SingleProcess: Collective {
    public init() {}
    public var rank: Int { 0 }
    public var worldSize: Int { 1 }
    public func allReduceSum(_ values: inout [Float]) {}
    public func broadcast(_ values: inout [Float], root: Int) {}
    public func allGather(_ values: [Float]) -> [[Float]] { [values] }
}

import VQTensor

enum VQTensorBridge {
    static func tensor(_ s: [Float], shape: [Int]) -> Tensor { Tensor(s, shape: shape) }
}
