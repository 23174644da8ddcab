import VQNN
import VQTensor

/// The result of ``Quantizer/forward(_:)``: one type for every quantizer's forward pass (training or
/// evaluation, in the module's current mode).
///
/// ```swift
/// func step(_ q: any Quantizer, _ x: Tensor) -> Tensor {
///     let out = q.forward(x)
///     return reconstructionLoss(decoder(out.quantized), x) + out.loss
/// }
/// ```
public struct QuantizerOutput {
    /// The quantized output in the input's layout (the decoded data for ``EvoLFQ``, the one-hot codes for
    /// ``BinaryMapper``, the projected query for ``RandomProjectionQuantizer``).
    public var quantized: Tensor
    /// The indices in the quantizer's layout (``HierarchicalVQ``: every level side by side, coarse to fine).
    public var indices: IndexTensor
    /// The weighted loss to add to a model's loss: a scalar (per-layer losses summed for stacks), 0 when the
    /// quantizer has none.
    public var loss: Tensor
    /// The terms behind `loss`, unweighted where the reference's breakdown is (`commitment`, `codebook_diversity`,
    /// `orthogonal_reg`, `inplace_optimize`, `per_sample_entropy`, `batch_entropy`, …; `layers` = per-layer
    /// losses `[q]` of a stack, `[groups, q]` of a grouped stack).
    public var lossBreakdown: [String: Tensor]
    /// Every layer's codes for stacks (`return_all_codes`): `[q, b, n, d]`, `[groups, q, b, n, d]` for
    /// grouped stacks; nil for single quantizers. Computed from the indices when read (a forward that only
    /// wants indices pays nothing for it).
    public var allCodes: Tensor? { allCodesFromIndices?() }
    private let allCodesFromIndices: (() -> Tensor?)?

    public init(quantized: Tensor, indices: IndexTensor, loss: Tensor = Tensor(0), lossBreakdown: [String: Tensor] = [:],
                allCodes: (() -> Tensor?)? = nil) {
        self.quantized = quantized
        self.indices = indices
        self.loss = loss
        self.lossBreakdown = lossBreakdown
        self.allCodesFromIndices = allCodes
    }
}

extension VectorQuantizer {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.loss, lossBreakdown: [
            "commitment": o.breakdown.commitment, "codebook_diversity": o.breakdown.codebookDiversity,
            "orthogonal_reg": o.breakdown.orthogonalRegularization, "inplace_optimize": o.breakdown.inplaceOptimize,
        ])
    }
}

extension ResidualVQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.losses.sum(), lossBreakdown: ["layers": o.losses],
                               allCodes: { withoutGradient { self.getCodes(from: o.indices) } })
    }
    /// `[q, c, d]`: every layer's codes (the reference's `codebooks`; layers must share a size).
    public var codebooks: Tensor { Tensor.stack(layers.map(\.codes), axis: 0) }
    /// The first layer's codebook size (the reference's `codebook_size`).
    public var codebookSize: Int { layers[0].codebookSize }
}

extension GroupedResidualVQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.losses.sum(), lossBreakdown: ["layers": o.losses],
                               allCodes: { withoutGradient { self.getCodes(from: o.indices) } })
    }
    /// `[groups, q, c, d / groups]`.
    public var codebooks: Tensor { Tensor.stack(rvqs.map(\.codebooks), axis: 0) }
    public var codebookSize: Int { rvqs[0].codebookSize }
}

extension FSQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices)
    }
}

extension ResidualFSQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, allCodes: { self.getCodes(from: o.indices) })
    }
    /// Vectors `[b, n, dim]` through the channel-last forward whatever ``channelFirst`` says: indices `[b, n, q]`.
    public func forward(vectors x: Tensor) -> QuantizerOutput {
        let o = channelLast(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, allCodes: { self.getCodes(from: o.indices) })
    }
    public var codebookSize: Int { layers[0].codebookSize }
}

extension GroupedResidualFSQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, allCodes: { self.getCodes(from: o.indices) })
    }
    /// Vectors `[b, n, dim]` split into the groups along the features, each group channel-last whatever the
    /// layout: quantized `[b, n, dim]`, indices `[groups, b, n, q]`.
    public func forward(vectors x: Tensor) -> QuantizerOutput {
        let outs = zip(rvqs, x.split(parts: groups, axis: -1)).map { $0.forward(vectors: $1) }
        let indices = IndexTensor(outs.flatMap(\.indices.scalars), shape: [groups] + outs[0].indices.shape)
        return QuantizerOutput(quantized: Tensor.concat(outs.map(\.quantized), axis: -1), indices: indices,
                               allCodes: { self.getCodes(from: indices) })
    }
    /// `[groups, q, C, d]`: every group's implicit codebooks.
    public var codebooks: Tensor { Tensor.stack(rvqs.map(\.codebooks), axis: 0) }
    public var codebookSize: Int { rvqs[0].codebookSize }
}

extension LFQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.auxLoss, lossBreakdown: [
            "per_sample_entropy": o.losses.perSampleEntropy, "batch_entropy": o.losses.batchEntropy, "commitment": o.losses.commitment,
        ])
    }
}

extension ResidualLFQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.losses.sum(), lossBreakdown: ["layers": o.losses],
                               allCodes: { self.getCodes(from: o.indices) })
    }
    public var codebookSize: Int { layers[0].codebookSize }
}

extension GroupedResidualLFQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.losses.sum(), lossBreakdown: ["layers": o.losses],
                               allCodes: { self.getCodes(from: o.indices) })
    }
    public var codebookSize: Int { rvqs[0].codebookSize }
}

extension SimVQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.loss, lossBreakdown: ["commitment": o.loss])
    }
}

extension ResidualSimVQ {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.losses.sum(), lossBreakdown: ["layers": o.losses],
                               allCodes: { withoutGradient { self.getCodes(from: o.indices) } })
    }
    public var codebookSize: Int { layers[0].codebookSize }
}

extension RandomProjectionQuantizer {
    /// The indices, and as `quantized` the chosen codes in the projection space `[b, n, h·e]` (nothing learns).
    public func forward(_ x: Tensor) -> QuantizerOutput {
        precondition(x.rank == 3, "RandomProjectionQuantizer: input \(x.shape) must be [b, n, dim]")
        return vq.withMode(training: false) {
            withoutGradient {
                let o = vq(project(x).projected)
                return QuantizerOutput(quantized: o.quantized, indices: o.indices)
            }
        }
    }
}

extension LatentQuantize {
    /// Channel-first, as the module: `x [b, dim, …]`.
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.loss)
    }
}

extension FSP {
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.quantized, indices: o.indices, loss: o.loss, lossBreakdown: ["vector_norm": o.loss])
    }
}

extension BinaryMapper {
    /// Logits `[..., bits]`: `quantized` is the one-hot `[..., 2^bits]`, `loss` the KL aux loss.
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.oneHot, indices: o.indices, loss: o.auxLoss, lossBreakdown: ["kl": o.auxLoss])
    }
}

extension EvoLFQ {
    /// `quantized` is the decoder's reconstruction; `loss` the LFQ aux loss.
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        return QuantizerOutput(quantized: o.reconstructed, indices: o.indices, loss: o.auxLoss)
    }
}

extension HierarchicalVQ {
    /// Indices of every level side by side, coarse to fine (`[b, Σ positions]`), as ``encode(_:)``.
    public func forward(_ x: Tensor) -> QuantizerOutput {
        let o = self(x)
        let b = o.indices[0].shape[0], positions = configuration.positions, total = positions.reduce(0, +)
        var flat = [Int]()
        flat.reserveCapacity(b * total)
        for r in 0..<b { for (l, s) in positions.enumerated() { flat += o.indices[l].scalars[(r * s)..<((r + 1) * s)] } }
        return QuantizerOutput(quantized: o.quantized, indices: IndexTensor(flat, shape: [b, total]), loss: o.loss,
                               lossBreakdown: ["kept_levels": Tensor(Float(o.cutoff.map { $0 + 1 } ?? numLevels))])
    }

    /// Sequences of vectors `[b, L, dim]` (`L` the finest level's positions, ``Quantizer/sequenceShape``): arranged
    /// as the forward takes them (the finest level's map, channel-first when the module is), the quantized
    /// vectors back as `[b, L, dim]`.
    public func forward(vectors x: Tensor) -> QuantizerOutput {
        let shape = configuration.shapes.last!, c = configuration
        precondition(x.rank == 3 && x.shape[1] == shape.reduce(1, *) && x.shape[2] == dim,
                     "HierarchicalVQ.forward(vectors:): \(x.shape) must be [b, \(shape.reduce(1, *)), \(dim)]")
        let map = x.reshaped([x.shape[0]] + shape + [dim])
        var out = forward(c.channelFirst ? moveLastToFirstFeature(map) : map)
        out.quantized = (c.channelFirst ? moveFirstFeatureToLast(out.quantized) : out.quantized).reshaped(x.shape)
        return out
    }
}
