import VQNN
import VQTensor

/// Residual SimVQ (the reference's `ResidualSimVQ`): a stack of ``SimVQ`` layers (keys `layers.<i>.…`),
/// each quantizing what the previous ones left over (Zeghidour et al., *SoundStream*, 2021, Algorithm 1),
/// every layer with its own frozen random codebook seen through its own learned map. A layer can be frozen
/// by key (`rsv.freeze(keys: ["layers.0"])`): its map then never changes.
///
/// ```swift
/// let rsv = try ResidualSimVQ(referenceKwargs: ["dim": 16, "num_quantizers": 2, "codebook_size": 32])
/// let out = rsv(x)                                   // out.indices: [b, n, 2], out.losses: [2]
/// ```
public final class ResidualSimVQ: Module {
    /// The constructor arguments: the stack's own and one ``SimVQ/Configuration`` for every layer (layer `i`
    /// is seeded `seed + i · 0x9E37`).
    public struct Configuration: Sendable, Equatable {
        public var numQuantizers: Int                  // num_quantizers
        public var quantizeDropout = false             // quantize_dropout
        public var quantizeDropoutCutoffIndex = 0      // quantize_dropout_cutoff_index
        public var quantizeDropoutMultipleOf = 1       // quantize_dropout_multiple_of
        public var layer: SimVQ.Configuration
        public init(dim: Int, numQuantizers: Int, codebookSize: Int) {
            self.numQuantizers = numQuantizers
            layer = SimVQ.Configuration(dim: dim, codebookSize: codebookSize)
        }

        static let ownKeywords: Set<String> = ["num_quantizers", "heads", "quantize_dropout", "quantize_dropout_cutoff_index",
                                               "quantize_dropout_multiple_of"]

        /// - Parameter kw: `dim`, `num_quantizers`, `codebook_size`, the quantize-dropout keywords, and every
        ///   `SimVQ` keyword (given to each layer).
        public init(referenceKwargs kw: [String: Any]) throws {
            let m = "ResidualSimVQ"
            let k = Keywords(kw, module: m)
            let q = try k.required("num_quantizers")
            if let h = try k.int("heads"), h != 1 {
                throw ConfigurationError.badValue(module: m, keyword: "heads", reason: "residual VQ is not compatible with multi-headed codes")
            }
            let layer = try SimVQ.Configuration(referenceKwargs: kw.filter { !Self.ownKeywords.contains($0.key) }, module: m)
            self.init(dim: layer.dim, numQuantizers: q, codebookSize: layer.codebookSize)
            self.layer = layer
            (quantizeDropout, quantizeDropoutCutoffIndex, quantizeDropoutMultipleOf) = try ResidualStack.dropoutSettings(k, layers: q)
            try validate()
        }

        public func validate() throws {
            try ResidualStack.validate(numQuantizers: numQuantizers, cutoff: quantizeDropoutCutoffIndex, multipleOf: quantizeDropoutMultipleOf,
                                       softClamp: nil, module: "ResidualSimVQ", dropout: quantizeDropout)
            try layer.validate(module: "ResidualSimVQ")
        }
    }

    public let configuration: Configuration
    public let layers: [SimVQ]
    var rng: SeededGenerator
    public var quantizeDropout: Bool { configuration.quantizeDropout && configuration.numQuantizers > 1 }
    public var quantizeDropoutCutoffIndex: Int { configuration.quantizeDropoutCutoffIndex }
    public var quantizeDropoutMultipleOf: Int { configuration.quantizeDropoutMultipleOf }

    public init(_ configuration: Configuration) throws {
        try configuration.validate()
        self.configuration = configuration
        let seed = configuration.layer.seed
        // A `codebook_transform` given as a module is one module in the reference, passed to every layer: shared.
        var layers: [SimVQ] = []
        for i in 0..<configuration.numQuantizers {
            var l = configuration.layer
            l.seed = seed &+ UInt64(i) &* 0x9E37
            let shared = l.codebookTransform == nil ? nil : layers.first?.codeTransform
            layers.append(try SimVQ(l, module: "ResidualSimVQ", codebookTransform: shared.map { t in { _ in t } }))
        }
        self.layers = layers
        rng = SeededGenerator(seed: seed ^ 0x5139)
        super.init()
    }

    public var numQuantizers: Int { layers.count }
    public var dim: Int { layers[0].dim }

    /// `[q, c, dim]`: every layer's implicit codebook.
    public var codebooks: Tensor { Tensor.stack(layers.map(\.codebook), axis: 0) }

    /// The result of a forward: the summed output, every layer's indices and losses.
    public struct Output {
        public var quantized: Tensor
        public var indices: IndexTensor
        public var losses: Tensor
    }

    /// Quantizes `x [b, n, dim]` (`[b, dim, n]` with `channel_first`) layer by layer: the summed (rotated)
    /// outputs in the input's layout, indices `[b, n, q]` (-1 for layers dropped by quantize dropout) and the
    /// per-layer losses `[q]`.
    public func callAsFunction(_ x: Tensor, quantizeDropoutSeed: UInt64? = nil) -> Output {
        // Channel-first stacks keep the residual channel-first: every layer takes it so (as the reference's).
        let channelFirst = configuration.layer.channelFirst
        precondition(x.rank == 3 && x.shape[channelFirst ? 1 : 2] == dim,
                     "ResidualSimVQ(dim \(dim)): input shape \(x.shape) must be \(channelFirst ? "[b, \(dim), n]" : "[b, n, \(dim)]")")
        let (b, n, q) = (x.shape[0], x.shape[channelFirst ? 2 : 1], numQuantizers)
        let dropout = isTraining && quantizeDropout
        let last = ResidualStack.lastLayer(layers: q, dropout: dropout, cutoff: quantizeDropoutCutoffIndex,
                                           multipleOf: quantizeDropoutMultipleOf, seed: dropout ? quantizeDropoutSeed ?? rng.next() : 0)
        var residual = x, out = Tensor.zeros(x.shape)
        var indices = [Int](repeating: -1, count: b * n * q)
        var losses = [Tensor](repeating: Tensor(0), count: q)
        for (i, layer) in layers.enumerated() where i <= last {
            let r = layer(residual)
            residual = residual - r.quantized.detached()
            out = out + r.quantized
            for t in 0..<(b * n) { indices[t * q + i] = r.indices.scalars[t] }
            losses[i] = r.loss
        }
        return Output(quantized: out, indices: IndexTensor(indices, shape: [b, n, q]),
                      losses: Tensor.stack(losses.map { $0.reshaped([]) }, axis: 0))
    }

    /// Per-layer codes `[q, b, n, dim]` for indices `[b, n, q]` (zero where -1); `[q, b, dim, n]` with `channel_first`.
    public func getCodes(from indices: IndexTensor) -> Tensor {
        let codes = Tensor.stack(layers.enumerated().map { i, layer in
            let (idx, keep) = ResidualStack.column(indices, layer: i)
            return layer.channelLastCodes(idx) * keep
        }, axis: 0)
        guard configuration.layer.channelFirst else { return codes }
        var p = Array(0..<codes.rank)
        p.insert(p.removeLast(), at: 2)  // [q, b, …, d] → [q, b, d, …]
        return codes.permuted(p)
    }

    /// `Σ_layers getCodes(from:)`.
    public func getOutput(from indices: IndexTensor) -> Tensor { getCodes(from: indices).sum(axis: 0) }
}
