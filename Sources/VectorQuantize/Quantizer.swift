import VQNN
import VQTensor

/// What every quantizer offers to tools: vectors to code indices and back, in evaluation mode.
///
/// Inputs are `[n, dim]` or `[b, n, dim]`; indices have the quantizer's layout with the same leading axes
/// (`[n]`, `[n, q]`, `[groups, n, q]`, …).
public protocol Quantizer: Module {
    /// The feature dimension of the vectors.
    var inputDim: Int { get }
    /// Code indices of `x`.
    func encode(_ x: Tensor) -> IndexTensor
    /// Vectors for indices (the inverse of ``encode(_:)`` up to quantization error).
    func decode(_ indices: IndexTensor) throws -> Tensor
}

/// Runs `body` on a `[b, n, d]` view of `[n, d]` or `[b, n, d]` input, and strips the added batch axis
/// from the indices (at `axis`, the position of the batch axis in the result).
func withBatch(_ x: Tensor, axis: Int = 0, _ body: (Tensor) -> IndexTensor) -> IndexTensor {
    precondition(x.rank == 2 || x.rank == 3, "encode: input \(x.shape) must be [n, dim] or [b, n, dim]")
    if x.rank == 3 { return body(x) }
    let out = body(x.unsqueezed(axis: 0))
    var shape = out.shape
    shape.remove(at: axis)
    return out.reshaped(shape)
}

/// Adds the batch axis (at `axis`) to indices that lack it, runs `body`, and strips it from the result.
func decodingWithBatch(_ indices: IndexTensor, rank: Int, axis: Int = 0, _ body: (IndexTensor) -> Tensor) -> Tensor {
    if indices.rank == rank { return body(indices) }
    var shape = indices.shape
    shape.insert(1, at: axis)
    let out = body(indices.reshaped(shape))
    return out.squeezed(axis: out.rank == rank ? axis : 0)
}

public struct DecodeError: Error, CustomStringConvertible {
    public let description: String
}

extension VectorQuantizer: Quantizer {
    public var inputDim: Int { configuration.dim }
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { self(x).indices } }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor { withoutGradient { getOutput(from: indices) } }
}

/// Quantizers whose forward takes `[b, n, dim]`: encode and decode add and strip the batch axis of
/// `[n, dim]` input (at `indexBatchAxis` in the indices: 0, or 1 for grouped quantizers).
protocol SequenceQuantizer: Quantizer {
    var indexBatchAxis: Int { get }
    func sequenceIndices(_ x: Tensor) -> IndexTensor
    func sequenceOutput(_ indices: IndexTensor) -> Tensor
}

extension SequenceQuantizer {
    var indexBatchAxis: Int { 0 }

    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { withBatch(x, axis: indexBatchAxis) { sequenceIndices($0) } } }
    }

    public func decode(_ indices: IndexTensor) throws -> Tensor {
        withoutGradient { decodingWithBatch(indices, rank: 3 + indexBatchAxis, axis: indexBatchAxis) { sequenceOutput($0) } }
    }
}

extension ResidualVQ: SequenceQuantizer {
    public var inputDim: Int { configuration.dim }
    func sequenceIndices(_ x: Tensor) -> IndexTensor { self(x).indices }
    func sequenceOutput(_ indices: IndexTensor) -> Tensor { getOutput(from: indices) }
}

extension GroupedResidualVQ: SequenceQuantizer {
    public var inputDim: Int { dim }
    var indexBatchAxis: Int { 1 }
    func sequenceIndices(_ x: Tensor) -> IndexTensor { self(x).indices }
    func sequenceOutput(_ indices: IndexTensor) -> Tensor { getOutput(from: indices) }
}

extension FSQ: Quantizer {
    public var inputDim: Int { dim }
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { withBatch(x) { self($0).indices } } }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor { withoutGradient { indicesToCodes(indices) } }
}

extension ResidualFSQ: SequenceQuantizer {
    public var inputDim: Int { dim }
    func sequenceIndices(_ x: Tensor) -> IndexTensor { self(x).indices }
    func sequenceOutput(_ indices: IndexTensor) -> Tensor { getOutput(from: indices) }
}

extension GroupedResidualFSQ: SequenceQuantizer {
    public var inputDim: Int { dim }
    var indexBatchAxis: Int { 1 }
    func sequenceIndices(_ x: Tensor) -> IndexTensor { self(x).indices }
    func sequenceOutput(_ indices: IndexTensor) -> Tensor { getOutput(from: indices) }
}

extension LFQ: Quantizer {
    public var inputDim: Int { dim }
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { withBatch(x) { self($0).indices } } }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor { withoutGradient { indicesToCodes(indices) } }
}

extension ResidualLFQ: SequenceQuantizer {
    public var inputDim: Int { dim }
    func sequenceIndices(_ x: Tensor) -> IndexTensor { self(x).indices }
    func sequenceOutput(_ indices: IndexTensor) -> Tensor { getOutput(from: indices) }
}

extension SimVQ: Quantizer {
    public var inputDim: Int { dim }
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { self(x).indices } }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor { withoutGradient { indicesToCodes(indices) } }
}

extension RandomProjectionQuantizer: Quantizer {
    public var inputDim: Int { randomProjections.shape[1] }
    public func encode(_ x: Tensor) -> IndexTensor { withBatch(x) { self($0) } }
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        throw DecodeError(description: "RandomProjectionQuantizer: a random projection cannot be decoded back to vectors")
    }
}
