import VQNN
import VQTensor

/// Residual LFQ: layer `i` is an ``LFQ`` with `codebook_scale = 2^-i` on the residual of the previous
/// layers (the reference's `ResidualLFQ`; keys `layers.<i>.mask`).
public final class ResidualLFQ: Module {
    public let dim: Int
    public let projectIn: Linear?
    public let projectOut: Linear?
    public let layers: [LFQ]
    public let quantizeDropout: Bool
    public let quantizeDropoutCutoffIndex: Int
    public let quantizeDropoutMultipleOf: Int
    var rng: SeededGenerator

    static let ownKeywords: Set<String> = ["dim", "num_quantizers", "codebook_size", "soft_clamp_input_value", "quantize_dropout",
                                           "quantize_dropout_cutoff_index", "quantize_dropout_multiple_of", "seed"]

    public init(referenceKwargs kw: [String: Any], module: String = "ResidualLFQ") throws {
        let k = Keywords(kw, module: module)
        guard let dim = try k.int("dim"), let q = try k.int("num_quantizers"), let size = try k.int("codebook_size"), q > 0 else {
            throw ConfigurationError.invalid(module: module, reason: "dim, num_quantizers and codebook_size are required")
        }
        guard size > 0, size & (size - 1) == 0 else {
            throw ConfigurationError.badValue(module: module, keyword: "codebook_size", reason: "\(size) is not a power of 2")
        }
        self.dim = dim
        let cd = size.trailingZeroBitCount
        var rng = SeededGenerator(seed: UInt64(truncatingIfNeeded: try k.int("seed") ?? 0) ^ 0x21F0)
        if cd != dim {
            projectIn = Linear(dim, cd, rng: &rng)
            projectOut = Linear(cd, dim, rng: &rng)
        } else {
            projectIn = nil
            projectOut = nil
        }
        var clamp = try k.double("soft_clamp_input_value").map(Float.init)
        var layers: [LFQ] = []
        for i in 0..<q {
            var lk = kw.filter { !Self.ownKeywords.contains($0.key) }
            lk["dim"] = cd
            var lc = try LFQ.Configuration(referenceKwargs: lk, module: module)
            lc.codebookScale = Float(1) / Float(1 << i)
            lc.softClampInputValue = clamp
            layers.append(LFQ(lc))
            clamp = clamp.map { $0 * 0.5 }
        }
        self.layers = layers
        (quantizeDropout, quantizeDropoutCutoffIndex, quantizeDropoutMultipleOf) = try ResidualStack.dropoutSettings(k, layers: q)
        self.rng = rng
        super.init()
    }

    public var numQuantizers: Int { layers.count }
    /// `[q, C, d]`: every layer's (scaled) codes.
    public var codebooks: Tensor { Tensor.stack(layers.map(\.codebook), axis: 0) }

    public func callAsFunction(_ x: Tensor, mask: [Bool]? = nil, quantizeDropoutSeed: UInt64? = nil)
        -> (quantized: Tensor, indices: IndexTensor, losses: Tensor, layerInputs: Tensor)
    {
        precondition(x.rank == 3 && x.shape[2] == dim, "ResidualLFQ(dim \(dim)): input shape \(x.shape)")
        let z = projectIn.map { $0(x) } ?? x
        let (b, n, q) = (x.shape[0], x.shape[1], numQuantizers)
        var residual = z
        var out = Tensor.zeros(z.shape)
        var indices = [Int](repeating: -1, count: b * n * q)
        var losses = [Tensor](repeating: Tensor(0), count: q)
        var inputs: [Tensor] = []
        let dropout = isTraining && quantizeDropout
        let last = ResidualStack.lastLayer(layers: q, dropout: dropout, cutoff: quantizeDropoutCutoffIndex,
                                           multipleOf: quantizeDropoutMultipleOf, seed: dropout ? quantizeDropoutSeed ?? rng.next() : 0)
        for (i, layer) in layers.enumerated() {
            inputs.append(residual.detached())
            if i > last { continue }
            let r = layer(residual, mask: mask)
            residual = residual - r.quantized.detached()
            out = out + r.quantized
            for t in 0..<(b * n) { indices[t * q + i] = r.indices.scalars[t] }
            losses[i] = r.auxLoss
        }
        return (projectOut.map { $0(out) } ?? out, IndexTensor(indices, shape: [b, n, q]),
                Tensor.stack(losses.map { $0.reshaped([]) }, axis: 0), Tensor.stack(inputs, axis: 0))
    }

    /// Per-layer codes `[q, b, n, d]` (zero where -1).
    public func getCodes(from indices: IndexTensor) -> Tensor {
        Tensor.stack(layers.enumerated().map { i, layer in
            let (idx, keep) = ResidualStack.column(indices, layer: i)
            return layer.codebook.indexSelect(axis: 0, idx) * keep
        }, axis: 0)
    }

    public func getOutput(from indices: IndexTensor) -> Tensor {
        let summed = getCodes(from: indices).sum(axis: 0)
        return projectOut.map { $0(summed) } ?? summed
    }
}
