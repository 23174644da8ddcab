import VQNN
import VQTensor

/// What every quantizer offers to tools: vectors to code indices and back, in evaluation mode.
///
/// Inputs are `[n, dim]` or `[b, n, dim]`; indices have the quantizer's layout with the same leading axes
/// (`[n]`, `[n, q]`, `[groups, n, q]`, …).
public protocol Quantizer: Module {
    /// The feature dimension of the vectors.
    var inputDim: Int { get }
    /// The number of codes behind each index column, in the order of the index's trailing axes (one per
    /// layer of a stack, group-major for grouped stacks; one entry when every column has the same size).
    var codebookSizes: [Int] { get }
    /// The axis of the vectors in an index tensor of `[n, dim]` input: 0, or 1 for grouped quantizers
    /// (`[groups, n, q]`).
    var indexBatchAxis: Int { get }
    /// Whether -1 is a valid index (a layer dropped by quantize dropout, decoded as zero).
    var allowsDroppedIndices: Bool { get }
    /// Code indices of `x`, computed in evaluation mode (the module's own mode is restored afterwards).
    func encode(_ x: Tensor) -> IndexTensor
    /// Vectors for indices (the inverse of `encode(_:)` up to quantization error).
    func decode(_ indices: IndexTensor) throws -> Tensor
    /// One forward pass in the module's current mode (training updates codebooks), with every quantizer's
    /// result in one type: ``QuantizerOutput``.
    func forward(_ x: Tensor) -> QuantizerOutput
    /// The codebooks whose codes are learned and stored (EMA or gradient), in layer order (group-major for
    /// grouped stacks), each once: what `vq freeze` and `vq inspect` act on. Empty for implicit codebooks.
    var learnedCodebooks: [Codebook] { get }
    /// The learned codebooks its configuration freezes for every call (`freeze_codebook=True`; in a stack, a codebook
    /// every layer using it is so configured): no EMA step, expiry, affine update or gradient writes them unless a
    /// call overrides the configuration. Empty by default.
    var codebooksFrozenByConfiguration: [Codebook] { get }
    /// The layout ``Quantizer/forward(_:)`` takes its input in (image and video maps, channel-first sequences);
    /// ``Quantizer/encode(_:)``, ``Quantizer/decode(_:)`` and ``Quantizer/forward(vectors:)`` always speak vectors `[b, n, dim]`.
    var forwardLayout: InputLayout { get }
    /// The last axis of ``Quantizer/decode(_:)``'s vectors: ``Quantizer/inputDim``, or the one-hot width of ``BinaryMapper``.
    var decodedDim: Int { get }
    /// ``Quantizer/forward(_:)`` of vectors `[b, n, dim]`, whatever ``Quantizer/forwardLayout`` is: quantized vectors `[b, n, dim]`,
    /// indices in the ``Quantizer/encode(_:)`` layout (a default implementation arranges the input and the result).
    func forward(vectors x: Tensor) -> QuantizerOutput
    /// nil when every vector is encoded on its own; otherwise the quantizer encodes whole sequences (or
    /// maps) of this shape into one row of indices (``HierarchicalVQ``: its finest level's shape): its
    /// unit of ``Quantizer/encode(_:)`` is `[b] + sequenceShape + [dim]`, giving `[b, Σ positions]`.
    var sequenceShape: [Int]? { get }
    /// The reference's class name and keywords that rebuild this quantizer — what ``QuantizerCheckpoint/save(_:to:)``
    /// writes. Throws a ``ConfigurationError`` when keywords cannot describe it (``EvoLFQ``'s encoder and decoder).
    func referenceConfiguration() throws -> ModuleConfig
}

extension Quantizer {
    /// The name a configuration gives this quantizer (the reference's class: `VectorQuantize`), for messages.
    public var kindName: String { QuantizerRegistry.kind(of: type(of: self))?.name ?? "\(type(of: self))" }
    public var indexBatchAxis: Int { 0 }
    public var allowsDroppedIndices: Bool { false }
    public var codebooksFrozenByConfiguration: [Codebook] { [] }
    public var forwardLayout: InputLayout { .vectorsLast }
    public var decodedDim: Int { inputDim }
    public var sequenceShape: [Int]? { nil }
    public func referenceConfiguration() throws -> ModuleConfig {
        throw ConfigurationError.invalid(module: kindName, reason: "built from modules the reference's keywords cannot describe: save it with save(_:config:to:) and its keywords")
    }

    /// The default ``Quantizer/forward(vectors:)``: the vectors are
    /// arranged as the forward takes them (a map of `n × 1` positions, or channel-first), and the result's
    /// quantized vectors and indices come back as `[b, n, dim]` and `[…, b, n, …]` (the ``Quantizer/encode(_:)`` layout).
    ///
    /// A channel-first forward whose indices keep a trailing layer axis after the sequence (`[b, q, n]`)
    /// implements its own.
    public func forward(vectors x: Tensor) -> QuantizerOutput {
        let layout = forwardLayout
        guard layout != .vectorsLast else { return forward(x) }
        precondition(x.rank == 3, "forward(vectors:): \(x.shape) must be [b, n, dim]")
        var out = forward(layout.arrange(x))
        out.quantized = layout.vectors(out.quantized)
        out.indices = layout.vectorIndices(out.indices, batchAxis: indexBatchAxis)
        return out
    }

    /// The index shape of one vector: the shape `encode(_:)` gives for a `[1, dim]` input — of one sequence,
    /// `[1] + sequenceShape + [dim]`, for sequence quantizers (an uninitialised k-means codebook would be
    /// initialised by it: ``validate(indices:)`` checks first).
    public var indexShapeOfOneVector: [Int] {
        // Encoding initialises an uninitialised k-means codebook from its input (as the reference's forward
        // does): the probe's zeros must not, so the whole state (and every generator) is put back afterwards.
        let probe = Tensor.zeros([1] + (sequenceShape ?? []) + [inputDim])
        guard learnedCodebooks.contains(where: { $0.initted.value.item == 0 }) else { return encode(probe).shape }
        let (state, generators) = (stateDict(), randomStates())
        defer {
            try? load(stateDict: state)
            try? setRandomStates(generators)
        }
        return encode(probe).shape
    }

    /// Whether every k-means-initialised codebook has been initialised (by a first training batch); the codes
    /// of one that has not are placeholders, so neither its indices nor its decoding mean anything yet.
    public var isInitialised: Bool {
        !namedParameters().contains(where: { $0.0.hasSuffix("initted") && $0.1.value.count == 1 && $0.1.value.item == 0 })
    }

    /// Checks indices from outside before `decode(_:)`: the shape must be what `encode(_:)` gives for
    /// `[n, dim]` or `[b, n, dim]` input, and every value within its column's codebook (or -1 where
    /// `allowsDroppedIndices`). Throws a ``DecodeError`` that names the offending shape or value.
    public func validate(indices: IndexTensor) throws {
        if !isInitialised {
            throw DecodeError(description: "\(kindName): the codebook is not initialised yet (k-means runs on the first batch)")
        }
        let one = indexShapeOfOneVector
        let a = indexBatchAxis
        let trailing = Array(one[(a + 1)...]), leading = Array(one[..<a])
        // One vector's (or one sequence's) indices may come without their batch axis: `[Σ positions]` for a sequence.
        let okShape = indices.rank >= one.count - (sequenceShape == nil ? 0 : 1) && indices.rank <= one.count + 1
            && Array(indices.shape.prefix(a)) == leading && Array(indices.shape.suffix(trailing.count)) == trailing
        guard okShape else {
            let n = "n"
            let expected = (leading.map(String.init) + [n] + trailing.map(String.init)).joined(separator: ", ")
            throw DecodeError(description: "indices of shape \(indices.shape) do not fit \(kindName): expected [\(expected)] (or with a batch axis before n)")
        }
        let columns = Swift.max(1, trailing.reduce(1, *))
        let perGroup = columns
        let sizes = codebookSizes
        let groups = Swift.max(1, leading.reduce(1, *))
        let perGroupCount = indices.count / groups
        for (i, v) in indices.scalars.enumerated() {
            let column = i % perGroup, group = i / Swift.max(1, perGroupCount)
            let position = group * columns + column
            let size = sizes.count == groups * columns ? sizes[position] : (sizes.count == columns ? sizes[column] : sizes.max() ?? 0)
            if v >= 0 && v < size { continue }
            if v == -1 && allowsDroppedIndices { continue }
            // -1 is what encoding gives a vector without a code (a masked token, a NaN row of FSQ or FSP): say so.
            let why = v == -1 && !allowsDroppedIndices ? " (-1 marks a vector encoded without a code — masked, or NaN — and has no vector to decode to)" : ""
            throw DecodeError(description: "index \(v) at position \(i) is out of range 0..<\(size)\(allowsDroppedIndices ? " (or -1 for a dropped layer)" : why)")
        }
    }
}

/// How a quantizer's forward pass takes its input, against the vectors `[b, n, dim]` of ``Quantizer``'s
/// `encode`/`decode`: sequences (vectors last), channel-first sequences `[b, dim, n]`, image maps
/// `[b, dim, h, w]` or video maps `[b, dim, t, h, w]` (vectors become a map of `n × 1 (× 1)` positions).
public enum InputLayout: Sendable, Equatable {
    case vectorsLast, channelFirst, imageMap, videoMap

    /// The spatial axes of the layout (1 for sequences).
    public var spatialAxes: Int { self == .imageMap ? 2 : (self == .videoMap ? 3 : 1) }

    /// Vectors `[b, n, dim]` in this layout.
    public func arrange(_ x: Tensor) -> Tensor {
        guard self != .vectorsLast else { return x }
        let t = x.transposed(1, 2)
        return spatialAxes == 1 ? t : t.reshaped([x.shape[0], x.shape[2], x.shape[1]] + Array(repeating: 1, count: spatialAxes - 1))
    }

    /// A forward output in this layout (`[b, d, s…]`) as vectors `[b, n, d]`.
    public func vectors(_ y: Tensor) -> Tensor {
        guard self != .vectorsLast, y.rank == 2 + spatialAxes else { return y }
        return y.flattened(from: 2).transposed(1, 2)
    }

    /// Indices `[lead…, b, s…, trail…]` (the spatial axes after the batch axis) as `[lead…, b, n, trail…]`.
    public func vectorIndices(_ i: IndexTensor, batchAxis a: Int) -> IndexTensor {
        guard spatialAxes > 1, i.rank >= a + 1 + spatialAxes else { return i }
        let s = i.shape
        let n = s[(a + 1)...(a + spatialAxes)].reduce(1, *)
        return i.reshaped(Array(s[...a]) + [n] + Array(s[(a + 1 + spatialAxes)...]))
    }
}

extension Quantizer {
    /// ``encode(_:)`` through ``forward(vectors:)`` in evaluation mode, for `[n, dim]` or `[b, n, dim]`.
    func encodeVectors(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { withBatch(x, axis: indexBatchAxis) { forward(vectors: $0).indices } } }
    }
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
    public var learnedCodebooks: [Codebook] { [codebook] }
    public var codebooksFrozenByConfiguration: [Codebook] { configuration.freezeCodebook ? [codebook] : [] }
    public var inputDim: Int { configuration.dim }
    public var codebookSizes: [Int] { [codebookSize] }
    public var forwardLayout: InputLayout {
        let c = configuration
        return c.accept3dFmap ? .videoMap : (c.acceptImageFmap ? .imageMap : (c.channelLast ? .vectorsLast : .channelFirst))
    }
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) {
            withoutGradient { forwardLayout == .vectorsLast ? self(x).indices : withBatch(x) { forward(vectors: $0).indices } }
        }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return withoutGradient {
            let codes = vectorCodes(from: indices)
            return projectOut.map { $0(codes) } ?? codes
        }
    }
}

/// Residual and grouped stacks: their forward takes `[b, n, dim]`, their indices end in the layer axis
/// (`[b, n, q]`, grouped `[groups, b, n, q]`) and may hold -1 for layers dropped by quantize dropout.
/// One conformance: encode and decode add and strip the batch axis of `[n, dim]` input (at
/// `indexBatchAxis` in the indices), the indices come from ``Quantizer/forward(_:)``, the vectors from
/// `getOutput(from:)`.
protocol SequenceQuantizer: Quantizer {
    func getOutput(from indices: IndexTensor) -> Tensor
    /// The vectors `[…, b, n, dim]` of vector-layout indices (default: `getOutput(from:)`).
    func vectorOutput(from indices: IndexTensor) -> Tensor
    /// The indices of `[b, n, dim]` vectors (default: the forward's).
    func sequenceIndices(_ x: Tensor) -> IndexTensor
}

extension SequenceQuantizer {
    public var allowsDroppedIndices: Bool { true }
    func sequenceIndices(_ x: Tensor) -> IndexTensor { forward(vectors: x).indices }
    func vectorOutput(from indices: IndexTensor) -> Tensor { forwardLayout.vectors(getOutput(from: indices)) }

    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { withBatch(x, axis: indexBatchAxis) { sequenceIndices($0) } } }
    }

    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return withoutGradient { decodingWithBatch(indices, rank: 3 + indexBatchAxis, axis: indexBatchAxis) { vectorOutput(from: $0) } }
    }
}

extension ResidualVQ: SequenceQuantizer {
    public var forwardLayout: InputLayout { configuration.acceptImageFmap ? .imageMap : .vectorsLast }
    public var learnedCodebooks: [Codebook] { uniqueCodebooks(layers.map(\.codebook)) }
    public var codebooksFrozenByConfiguration: [Codebook] {
        learnedCodebooks.filter { book in layers.allSatisfy { $0.codebook !== book || $0.configuration.freezeCodebook } }
    }
    public var inputDim: Int { configuration.dim }
    public var codebookSizes: [Int] { layers.map(\.codebookSize) }
}

extension GroupedResidualVQ: SequenceQuantizer {
    public var forwardLayout: InputLayout { configuration.residual.acceptImageFmap ? .imageMap : .vectorsLast }
    /// The groups' vectors side by side along the features (image-map stacks too: the vectors are channel-last).
    func vectorOutput(from indices: IndexTensor) -> Tensor {
        Tensor.concat((0..<groups).map { rvqs[$0].getOutput(from: ResidualStack.group(indices, $0, of: groups)) }, axis: -1)
    }
    public var learnedCodebooks: [Codebook] { uniqueCodebooks(rvqs.flatMap { $0.layers.map(\.codebook) }) }
    public var codebooksFrozenByConfiguration: [Codebook] { uniqueCodebooks(rvqs.flatMap(\.codebooksFrozenByConfiguration)) }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { rvqs.flatMap { $0.layers.map(\.codebookSize) } }
    public var indexBatchAxis: Int { 1 }
}

extension FSQ: Quantizer {
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { [codebookSize] }
    public var forwardLayout: InputLayout { configuration.channelFirst ? .channelFirst : .vectorsLast }
    /// The indices whatever `return_indices` says (it only spares the forward their computation).
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { withBatch(x) { v in
            forwardLayout.vectorIndices(quantized(forwardLayout.arrange(v), indices: true).indices, batchAxis: 0)
        } } }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return withoutGradient { forwardLayout.vectors(indicesToCodes(indices)) }
    }
}

extension ResidualFSQ: SequenceQuantizer {
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { layers.map(\.codebookSize) }
    public var forwardLayout: InputLayout { channelFirst ? .channelFirst : .vectorsLast }
    func sequenceIndices(_ x: Tensor) -> IndexTensor { channelLast(x).indices }
    /// `getOutput(from:)` is channel-last whatever the layout.
    func vectorOutput(from indices: IndexTensor) -> Tensor { getOutput(from: indices) }
}

extension GroupedResidualFSQ: SequenceQuantizer {
    public var forwardLayout: InputLayout {
        configuration.acceptImageFmap ? .imageMap : (configuration.groupConfiguration.channelFirst ? .channelFirst : .vectorsLast)
    }
    /// `getOutput(from:)` is channel-last whatever the layout.
    func vectorOutput(from indices: IndexTensor) -> Tensor { getOutput(from: indices) }
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { rvqs.flatMap { $0.layers.map(\.codebookSize) } }
    public var indexBatchAxis: Int { 1 }
}

extension LFQ: Quantizer {
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { [codebookSize] }
    public var forwardLayout: InputLayout { configuration.channelFirst == true ? .channelFirst : .vectorsLast }
    public func encode(_ x: Tensor) -> IndexTensor { encodeVectors(x) }
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return withoutGradient { forwardLayout.vectors(indicesToCodes(indices)) }
    }
}

extension ResidualLFQ: SequenceQuantizer {
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { layers.map(\.codebookSize) }
}

extension GroupedResidualLFQ: SequenceQuantizer {
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { rvqs.flatMap { $0.layers.map(\.codebookSize) } }
    public var indexBatchAxis: Int { 1 }
}

extension ResidualSimVQ: SequenceQuantizer {
    public var forwardLayout: InputLayout { configuration.layer.channelFirst ? .channelFirst : .vectorsLast }
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { layers.map(\.codebookSize) }
}

extension SimVQ: Quantizer {
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { [codebookSize] }
    public var forwardLayout: InputLayout { channelFirst ? .channelFirst : .vectorsLast }
    public func encode(_ x: Tensor) -> IndexTensor {
        channelFirst ? encodeVectors(x) : withMode(training: false) { withoutGradient { self(x).indices } }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return withoutGradient { forwardLayout.vectors(indicesToCodes(indices)) }
    }
}

extension RandomProjectionQuantizer: Quantizer {
    /// The random codebooks are fixed by design: nothing to freeze.
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { randomProjections.shape[1] }
    public var codebookSizes: [Int] { [vq.codebookSize] }
    public func encode(_ x: Tensor) -> IndexTensor { withBatch(x) { self($0).indices } }
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        throw DecodeError(description: "RandomProjectionQuantizer: a random projection cannot be decoded back to vectors")
    }
}

extension BinaryMapper: Quantizer {
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { bits }
    public var decodedDim: Int { codebookSize }
    public var codebookSizes: [Int] { [codebookSize] }
    /// Deterministic bits (`p > 0.5`) of logits `[n, bits]` or `[b, n, bits]`.
    public func encode(_ x: Tensor) -> IndexTensor {
        withoutGradient { self(x, straightThrough: false, computeAuxLoss: false, deterministic: true).indices }
    }
    /// The one-hot rows of the indices, `[..., 2^bits]` (what the forward returns).
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return Tensor.oneHot(indices, classes: codebookSize)
    }
}

extension LatentQuantize: Quantizer {
    public var forwardLayout: InputLayout { .channelFirst }
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { [codebookSize] }
    /// Indices of channel-last `[n, dim]` or `[b, n, dim]` vectors (the module itself is channel-first).
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { withBatch(x) { self($0.transposed(1, 2)).indices } } }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return withoutGradient {
            let batched = indices.rank == (configuration.keepsCodebooksAxis ? 3 : 2)
            let codes = indicesToCodes(batched ? indices : indices.reshaped([1] + indices.shape)).transposed(1, 2)
            return batched ? codes : codes.squeezed(axis: 0)
        }
    }
}

extension FSP: Quantizer {
    public var forwardLayout: InputLayout { configuration.channelFirst ? .channelFirst : .vectorsLast }
    public var learnedCodebooks: [Codebook] { [] }
    public var inputDim: Int { dim }
    public var codebookSizes: [Int] { [codebookSize] }
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { self(configuration.channelFirst ? moveLastToFirstFeature(x) : x).indices } }
    }
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return withoutGradient {
            let codes = indicesToCodes(indices)
            return configuration.channelFirst ? moveFirstFeatureToLast(codes) : codes
        }
    }
}

extension EvoLFQ: Quantizer {
    public var learnedCodebooks: [Codebook] { [] }
    public var codebookSizes: [Int] { [lfq.codebookSize] }
    /// The LFQ indices of the encoded `[n, in]` or `[b, n, in]` data.
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) { withoutGradient { self(x).indices } }
    }
    /// The decoder's reconstruction of indices.
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        return withMode(training: false) { withoutGradient { decoder(lfq.indicesToCodes(indices)) } }
    }
}

extension HierarchicalVQ: Quantizer {
    public var sequenceShape: [Int]? { configuration.shapes.last }
    public var learnedCodebooks: [Codebook] { uniqueCodebooks((0..<numLevels).map { quantizer(level: $0).codebook }) }
    public var inputDim: Int { dim }
    /// One column per position of every level, coarse to fine (`Σ positions` columns).
    public var codebookSizes: [Int] { configuration.positions.indices.flatMap { l in Array(repeating: configuration.size(ofLevel: l), count: configuration.positions[l]) } }
    /// The levels' indices of a sequence `[n, dim]` (or `[b, n, dim]`) side by side, coarse to fine:
    /// `[Σ positions]` (or `[b, Σ positions]`), the token order of a next-scale model. Image and video
    /// quantizers take their channel-last maps `[b, s…, dim]`.
    public func encode(_ x: Tensor) -> IndexTensor {
        withMode(training: false) {
            withoutGradient {
                let unbatched = configuration.spatialAxes == 1 && x.rank == 2
                let batched = unbatched ? x.unsqueezed(axis: 0) : x
                let out = forward(configuration.channelFirst ? moveLastToFirstFeature(batched) : batched)
                return unbatched ? out.indices.reshaped([out.indices.count]) : out.indices
            }
        }
    }
    /// The channel-last sequence or map (at the last level's shape) of `[Σ positions]` or `[b, Σ positions]` indices.
    public func decode(_ indices: IndexTensor) throws -> Tensor {
        try validate(indices: indices)
        let positions = configuration.positions, total = positions.reduce(0, +)
        guard indices.shape.last == total, indices.rank <= 2 else {
            throw DecodeError(description: "HierarchicalVQ: indices \(indices.shape) must be [\(total)] or [b, \(total)] (Σ positions)")
        }
        let b = indices.rank == 2 ? indices.shape[0] : 1
        var offset = 0
        var levels: [IndexTensor] = []
        for (l, s) in positions.enumerated() {
            var part = [Int]()
            for r in 0..<b { part += indices.scalars[(r * total + offset)..<(r * total + offset + s)] }
            levels.append(IndexTensor(part, shape: [b] + configuration.shapes[l]))
            offset += s
        }
        let out = withoutGradient { getOutput(from: levels) }
        let channelLast = configuration.channelFirst ? moveFirstFeatureToLast(out) : out
        return indices.rank == 2 ? channelLast : channelLast.squeezed(axis: 0)
    }
}

/// Codebooks without repeats (a shared codebook appears once), in order.
func uniqueCodebooks(_ books: [Codebook]) -> [Codebook] {
    var seen = Set<ObjectIdentifier>()
    return books.filter { seen.insert(ObjectIdentifier($0)).inserted }
}
