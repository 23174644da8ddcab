import Foundation
import VQNN
import VQTensor

/// SimVQ (Zhu et al., *Addressing Representation Collapse in Vector Quantized Models with One Linear
/// Layer*, 2024): a frozen random codebook `[c, d₀]` seen through a learned linear map
/// (`code_transform`); only the map learns. The frozen codebook is a buffer — frozen by the same
/// mechanism as every other frozen tensor, so no optimizer can move it.
public final class SimVQ: Module {
    /// The constructor arguments (the reference's `SimVQ(...)` keywords).
    ///
    /// ```swift
    /// var c = SimVQ.Configuration(dim: 256, codebookSize: 1024)
    /// c.codebookTransform = "nn.Sequential(nn.Linear(256, 512), nn.SiLU(), nn.Linear(512, 256))"
    /// let sim = try SimVQ(c)
    /// ```
    public struct Configuration: Sendable, Equatable {
        public var dim: Int                                      // dim
        public var codebookSize: Int                             // codebook_size
        public var frozenCodebookDim: Int? = nil                 // frozen_codebook_dim (default: dim)
        public var channelFirst = false                          // channel_first
        public var rotationTrick = true                          // rotation_trick
        public var inputToQuantizeCommitLossWeight: Float = 0.25 // input_to_quantize_commit_loss_weight
        public var commitmentWeight: Float = 1                   // commitment_weight
        /// `codebook_transform` as module text (`LayerSpec`, in VQNN), e.g. an MLP; default `Linear(d₀, dim, bias: false)`.
        public var codebookTransform: String? = nil              // codebook_transform
        public var seed: UInt64 = 0
        public init(dim: Int, codebookSize: Int) {
            self.dim = dim
            self.codebookSize = codebookSize
        }

        static let keywords: Set<String> = ["dim", "codebook_size", "channel_first", "rotation_trick",
                                            "input_to_quantize_commit_loss_weight", "commitment_weight", "frozen_codebook_dim", "seed",
                                            "codebook_transform"]

        public init(referenceKwargs kw: [String: Any]) throws {
            try self.init(referenceKwargs: kw, module: "SimVQ")
        }

        init(referenceKwargs kw: [String: Any], module: String) throws {
            if kw["init_fn"] != nil {
                throw ConfigurationError.badValue(module: module, keyword: "init_fn", reason: "a Python callable cannot be read from a configuration: pass initFunction to SimVQ.init (a checkpoint's frozen_codebook already holds its result)")
            }
            for key in kw.keys where !Self.keywords.contains(key) { throw ConfigurationError.unknownKeyword(module: module, keyword: key) }
            let k = Keywords(kw, module: module)
            guard let dim = try k.int("dim"), let size = try k.int("codebook_size") else {
                throw ConfigurationError.invalid(module: module, reason: "dim and codebook_size are required")
            }
            self.init(dim: dim, codebookSize: size)
            frozenCodebookDim = try k.int("frozen_codebook_dim")
            channelFirst = try k.bool("channel_first") ?? false
            rotationTrick = try k.bool("rotation_trick") ?? true
            inputToQuantizeCommitLossWeight = Float(try k.double("input_to_quantize_commit_loss_weight") ?? 0.25)
            commitmentWeight = Float(try k.double("commitment_weight") ?? 1)
            if let spec = kw["codebook_transform"], !(spec is NSNull) {
                guard let text = spec as? String else {
                    throw ConfigurationError.badValue(module: module, keyword: "codebook_transform", reason: "expected a module's text, e.g. nn.Linear(16, 16, bias = False)")
                }
                codebookTransform = text
            }
            seed = UInt64(truncatingIfNeeded: try k.int("seed") ?? 0)
            try validate(module: module)
        }

        /// The checks of both paths.
        public func validate() throws { try validate(module: "SimVQ") }

        func validate(module: String) throws {
            if SizeLimit.product([codebookSize, frozenCodebookDim ?? dim]) == nil || SizeLimit.product([dim, frozenCodebookDim ?? dim]) == nil {
                throw ConfigurationError.invalid(module: module, reason: "codebook_size \(codebookSize) × dim \(dim) exceeds \(SizeLimit.maxElements) values (or is not positive)")
            }
            guard inputToQuantizeCommitLossWeight.isFinite && commitmentWeight.isFinite else {
                throw ConfigurationError.badValue(module: module, keyword: "commitment_weight", reason: "loss weights must be finite")
            }
            if let text = codebookTransform {
                // The transform maps the frozen codes (d₀ features) to codes of the input's dimension.
                do { try LayerSpec.check(text, inputs: frozenCodebookDim ?? dim, outputs: dim, what: "the code transform") } catch let e as LayerSpecError {
                    throw ConfigurationError.badValue(module: module, keyword: "codebook_transform", reason: e.description)
                }
            }
        }
    }

    public let configuration: Configuration
    public var dim: Int { configuration.dim }
    public var codebookSize: Int { configuration.codebookSize }
    /// `[c, d₀]`, N(0, 1/d₀), key `frozen_codebook`.
    public let frozenCodebook: Parameter
    /// `Linear(d₀, dim, bias: false)` by default, or any layer (`codebook_transform`, e.g. an MLP);
    /// key `code_transform`.
    public let codeTransform: Layer
    public var channelFirst: Bool { configuration.channelFirst }
    public var rotationTrick: Bool { configuration.rotationTrick }
    public var inputToQuantizeCommitLossWeight: Float { configuration.inputToQuantizeCommitLossWeight }
    public var commitmentWeight: Float { configuration.commitmentWeight }

    /// A SimVQ whose code transform is any layer `codebookTransform` builds (default: the configuration's).
    /// - Parameters:
    ///   - configuration: the sizes and options.
    ///   - codebookTransform: builds the code transform from the module's generator (default: the
    ///     configuration's text, or `Linear(d₀, dim, bias: false)`).
    ///   - initFunction: the reference's `init_fn`: maps the initial frozen codebook `[c, d₀]`
    ///     (N(0, 1/d₀)) to the one kept (same shape). A checkpoint's `frozen_codebook` replaces it on load.
    public convenience init(_ configuration: Configuration, codebookTransform: ((inout SeededGenerator) throws -> Layer)? = nil,
                            initFunction: ((Tensor) -> Tensor)? = nil) throws {
        try self.init(configuration, module: "SimVQ", codebookTransform: codebookTransform, initFunction: initFunction)
    }

    /// A SimVQ of `configuration` (its code transform from the configuration's text, or the default linear map).
    public convenience init(_ configuration: Configuration) throws {
        try self.init(configuration, module: "SimVQ")
    }

    /// ``init(_:codebookTransform:initFunction:)`` naming `module` in its errors (a stack's layers name the stack).
    init(_ configuration: Configuration, module: String, codebookTransform: ((inout SeededGenerator) throws -> Layer)? = nil,
         initFunction: ((Tensor) -> Tensor)? = nil) throws {
        try configuration.validate(module: module)
        self.configuration = configuration
        let d0 = configuration.frozenCodebookDim ?? configuration.dim
        var rng = SeededGenerator(seed: configuration.seed ^ 0x519)
        var initial = Tensor.randomNormal([configuration.codebookSize, d0], std: 1 / Float(d0).squareRoot(), using: &rng)
        if let initFunction {
            let shape = initial.shape
            initial = withoutGradient { initFunction(initial) }
            guard initial.shape == shape else {
                throw ConfigurationError.badValue(module: module, keyword: "init_fn", reason: "returned \(initial.shape) for a codebook of \(shape)")
            }
        }
        frozenCodebook = Parameter(initial, kind: .buffer)
        if let codebookTransform {
            codeTransform = try codebookTransform(&rng)
        } else if let text = configuration.codebookTransform {
            do { codeTransform = try LayerSpec.parse(text, rng: &rng) } catch let e as LayerSpecError {
                throw ConfigurationError.badValue(module: module, keyword: "codebook_transform", reason: e.description)
            }
        } else {
            codeTransform = Linear(d0, configuration.dim, bias: false, rng: &rng)
        }
        super.init()
    }

    public convenience init(dim: Int, codebookSize: Int, frozenCodebookDim: Int? = nil, channelFirst: Bool = false, rotationTrick: Bool = true,
                            inputToQuantizeCommitLossWeight: Float = 0.25, commitmentWeight: Float = 1, seed: UInt64 = 0,
                            codebookTransform: ((inout SeededGenerator) throws -> Layer)? = nil) throws {
        var c = Configuration(dim: dim, codebookSize: codebookSize)
        c.frozenCodebookDim = frozenCodebookDim
        c.channelFirst = channelFirst
        c.rotationTrick = rotationTrick
        c.inputToQuantizeCommitLossWeight = inputToQuantizeCommitLossWeight
        c.commitmentWeight = commitmentWeight
        c.seed = seed
        try self.init(c, codebookTransform: codebookTransform)
    }

    /// The implicit codebook `code_transform(frozen_codebook)`, `[c, dim]` (differentiable in the map).
    public var codebook: Tensor { codeTransform(frozenCodebook.value) }

    /// Codes for indices (`[b, …] → [b, …, dim]`, channel-first when the module is).
    public func indicesToCodes(_ indices: IndexTensor) -> Tensor {
        let q = channelLastCodes(indices)
        return channelFirst ? moveLastToFirstFeature(q) : q
    }

    /// Codes for indices, channel-last whatever the layout: `[b, …, dim]`.
    func channelLastCodes(_ indices: IndexTensor) -> Tensor { codeTransform(frozenCodebook.value.indexSelect(axis: 0, indices)) }

    /// The result of a forward: the output, the indices and the commitment loss.
    public struct Output {
        public var quantized: Tensor
        public var indices: IndexTensor
        public var loss: Tensor
    }

    /// Quantizes `x [b, …, dim]`: output, indices, and the commitment loss
    /// `mse(sg(x), q) + w · mse(x, sg(q))`, times `commitment_weight`.
    public func callAsFunction(_ input: Tensor) -> Output {
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
        return Output(quantized: quantized, indices: indices.reshaped(outer), loss: loss)
    }
}
