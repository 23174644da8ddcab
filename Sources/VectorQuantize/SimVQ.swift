import VQNN
import VQTensor

/// SimVQ (Zhu et al., *Addressing Representation Collapse in Vector Quantized Models with One Linear
/// Layer*, 2024): a frozen random codebook `[c, d₀]` seen through a learned linear map
/// (`code_transform`); only the map learns. The frozen codebook is a buffer — frozen by the same
/// mechanism as every other frozen tensor, so no optimizer can move it.
public final class SimVQ: Module {
    public let dim: Int
    public let codebookSize: Int
    /// `[c, d₀]`, N(0, 1/d₀), key `frozen_codebook`.
    public let frozenCodebook: Parameter
    /// `Linear(d₀, dim, bias: false)` by default, or any layer (`codebook_transform`, e.g. an MLP);
    /// key `code_transform`.
    public let codeTransform: Layer
    public let channelFirst: Bool
    public let rotationTrick: Bool
    public let inputToQuantizeCommitLossWeight: Float
    public let commitmentWeight: Float

    static let keywords: Set<String> = ["dim", "codebook_size", "channel_first", "rotation_trick",
                                        "input_to_quantize_commit_loss_weight", "commitment_weight", "frozen_codebook_dim", "seed",
                                        "codebook_transform"]

    public init(dim: Int, codebookSize: Int, frozenCodebookDim: Int? = nil, channelFirst: Bool = false, rotationTrick: Bool = true,
                inputToQuantizeCommitLossWeight: Float = 0.25, commitmentWeight: Float = 1, seed: UInt64 = 0,
                codebookTransform: ((inout SeededGenerator) throws -> Layer)? = nil) rethrows {
        precondition(dim > 0 && codebookSize > 0, "SimVQ: dim \(dim), codebookSize \(codebookSize)")
        self.dim = dim
        self.codebookSize = codebookSize
        let d0 = frozenCodebookDim ?? dim
        var rng = SeededGenerator(seed: seed ^ 0x519)
        frozenCodebook = Parameter(Tensor.randomNormal([codebookSize, d0], std: 1 / Float(d0).squareRoot(), using: &rng), kind: .buffer)
        codeTransform = try codebookTransform?(&rng) ?? Linear(d0, dim, bias: false, rng: &rng)
        self.channelFirst = channelFirst
        self.rotationTrick = rotationTrick
        self.inputToQuantizeCommitLossWeight = inputToQuantizeCommitLossWeight
        self.commitmentWeight = commitmentWeight
        super.init()
    }

    public convenience init(referenceKwargs kw: [String: Any]) throws {
        for k in kw.keys where !Self.keywords.contains(k) { throw ConfigurationError.unknownKeyword(module: "SimVQ", keyword: k) }
        guard let dim = kw["dim"] as? Int, let size = kw["codebook_size"] as? Int else {
            throw ConfigurationError.invalid(module: "SimVQ", reason: "dim and codebook_size are required")
        }
        if SizeLimit.product([size, kw["frozen_codebook_dim"] as? Int ?? dim]) == nil || SizeLimit.product([dim, dim]) == nil {
            throw ConfigurationError.invalid(module: "SimVQ", reason: "codebook_size \(size) × dim \(dim) exceeds \(SizeLimit.maxElements) values (or is not positive)")
        }
        func f(_ k: String, _ d: Float) -> Float { (kw[k] as? Double).map(Float.init) ?? (kw[k] as? Int).map(Float.init) ?? d }
        var transform: ((inout SeededGenerator) throws -> Layer)? = nil
        if let spec = kw["codebook_transform"] {
            guard let text = spec as? String else {
                throw ConfigurationError.badValue(module: "SimVQ", keyword: "codebook_transform", reason: "expected a module's text, e.g. nn.Linear(16, 16, bias = False)")
            }
            transform = { rng in
                do { return try LayerSpec.parse(text, rng: &rng) } catch let e as LayerSpecError {
                    throw ConfigurationError.badValue(module: "SimVQ", keyword: "codebook_transform", reason: e.description)
                }
            }
        }
        try self.init(dim: dim, codebookSize: size, frozenCodebookDim: kw["frozen_codebook_dim"] as? Int,
                      channelFirst: kw["channel_first"] as? Bool ?? false, rotationTrick: kw["rotation_trick"] as? Bool ?? true,
                      inputToQuantizeCommitLossWeight: f("input_to_quantize_commit_loss_weight", 0.25),
                      commitmentWeight: f("commitment_weight", 1), seed: UInt64(truncatingIfNeeded: kw["seed"] as? Int ?? 0),
                      codebookTransform: transform)
    }

    /// The implicit codebook `code_transform(frozen_codebook)`, `[c, dim]` (differentiable in the map).
    public var codebook: Tensor { codeTransform(frozenCodebook.value) }

    /// Codes for indices (`[b, …] → [b, …, dim]`, channel-first when the module is).
    public func indicesToCodes(_ indices: IndexTensor) -> Tensor {
        let q = codeTransform(frozenCodebook.value.indexSelect(axis: 0, indices))
        return channelFirst ? moveLastToFirstFeature(q) : q
    }

    /// Quantizes `x [b, …, dim]`: output, indices, and the commitment loss
    /// `mse(sg(x), q) + w · mse(x, sg(q))`, times `commitment_weight`.
    public func callAsFunction(_ input: Tensor) -> (quantized: Tensor, indices: IndexTensor, loss: Tensor) {
        var x = channelFirst ? moveFirstFeatureToLast(input) : input
        let outer = Array(x.shape.dropLast())
        precondition(x.shape.last == dim, "SimVQ(dim \(dim)): input shape \(input.shape)")
        x = x.reshaped([-1, dim])
        let implicit = codebook
        let indices = x.detached().nearestCodes(implicit.detached()).indices
        let q = implicit.indexSelect(axis: 0, indices)
        let loss = (Loss.mse(q, x.detached()) + Loss.mse(x, q.detached()) * inputToQuantizeCommitLossWeight) * commitmentWeight
        let out = rotationTrick ? GradientEstimator.rotate(x, to: q) : GradientEstimator.straightThrough(x, q)
        var quantized = out.reshaped(outer + [dim])
        if channelFirst { quantized = moveLastToFirstFeature(quantized) }
        return (quantized, indices.reshaped(outer), loss)
    }
}
