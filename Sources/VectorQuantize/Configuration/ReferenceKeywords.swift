import Foundation

/// A typed configuration that is also the reference's keyword arguments, both ways:
/// `C(referenceKwargs: c.referenceKwargs) == c` for every configuration the keywords can express (the typed
/// fields a keyword cannot reach — a stack's layer options that the stack sets itself — are checked by
/// ``QuantizerCheckpoint/save(_:to:)``, which refuses rather than writing a configuration that rebuilds
/// something else).
public protocol ReferenceKeywordConfiguration: Sendable, Equatable {
    /// Parses and validates the reference's keywords.
    init(referenceKwargs: [String: Any]) throws
    /// The reference's keywords for this configuration.
    var referenceKwargs: [String: Any] { get }
}

/// Writes typed values as the reference's keywords, in one way for every configuration: a nil value is left out
/// (the reference's default), `Float` becomes a `Double` (exactly), a `UInt64` seed an `Int` (its bits), `[Float]`
/// `[Double]`, a `String`-backed enum its raw value.
enum ReferenceKeywords {
    static func make(_ pairs: KeyValuePairs<String, Any?>) -> [String: Any] {
        var out: [String: Any] = [:]
        for (key, value) in pairs {
            if let value { out[key] = plain(value) }
        }
        return out
    }

    static func plain(_ v: Any) -> Any {
        switch v {
        case let f as Float: return Double(f)
        case let fs as [Float]: return fs.map(Double.init)
        case let u as UInt64: return Int(truncatingIfNeeded: u)
        case let e as any RawRepresentable<String>: return e.rawValue
        default: return v
        }
    }

    /// A stack's keywords: its layer's keywords without those the stack owns (the parser drops them from the
    /// layer's), then the stack's own.
    static func stack(layer: [String: Any], own: Set<String>, _ pairs: KeyValuePairs<String, Any?>) -> [String: Any] {
        layer.filter { !own.contains($0.key) }.merging(make(pairs)) { _, stack in stack }
    }
}

extension VectorQuantizerConfiguration: ReferenceKeywordConfiguration {}

/// Canonical forms: a stack's configuration with the layer fields the stack sets itself set as its keyword parser
/// sets them, so that a typed configuration and its keyword twin are equal (each stack stores its configuration in
/// this form; no value a layer uses changes).
extension ResidualVQConfiguration {
    var canonical: Self {
        var c = self
        c.layer.dim = codebookDim ?? dim
        c.layer.codebookSize = codebookSizes.first ?? c.layer.codebookSize
        if diveq || implicitNeuralCodebook {   // the reference's override, as the keyword parser sets it (and `effectiveLayer` uses)
            c.layer.learnableCodebook = true
            c.layer.emaUpdate = false
        }
        return c
    }
}
extension ResidualFSQ.Configuration {
    var canonical: Self {
        var c = self
        c.layer.levels = levels
        c.layer.preserveSymmetry = true
        return c
    }
}
extension ResidualLFQ.Configuration {
    var canonical: Self {
        var c = self
        c.layer.codebookSize = codebookSize
        c.layer.codebookScale = 1   // set per layer (2^-i) by the stack
        return c
    }
}
extension RandomProjectionQuantizer.Configuration {
    var canonical: Self {
        var c = self
        c.layer.dim = codebookDim * numCodebooks
        c.layer.codebookSize = codebookSize
        // Set by the quantizer for its codebooks (`layerConfiguration`), as the keyword parser leaves them.
        c.layer.heads = 1
        c.layer.useCosineSimilarity = false
        c.layer.separateCodebookPerHead = false
        return c
    }
}

/// The three grouped stacks' configurations: `dim`, `groups` and one group's residual configuration (whose `dim` the
/// keyword parser sets to `dim / groups`). One canonical form and one keyword writer for all three.
protocol GroupedStackConfiguration {
    associatedtype Residual: ReferenceKeywordConfiguration & GroupResidual
    var dim: Int { get }
    var groups: Int { get }
    var residual: Residual { get set }
}

/// A residual stack's configuration as one group of a grouped stack.
protocol GroupResidual {
    var canonical: Self { get }
    mutating func setGroupDim(_ dim: Int)
}

extension ResidualVQConfiguration: GroupResidual { mutating func setGroupDim(_ d: Int) { dim = d } }
extension ResidualFSQ.Configuration: GroupResidual { mutating func setGroupDim(_ d: Int) { dim = d } }
extension ResidualLFQ.Configuration: GroupResidual { mutating func setGroupDim(_ d: Int) { dim = d } }

extension GroupedStackConfiguration {
    var canonical: Self {
        var c = self
        c.residual.setGroupDim(dim / Swift.max(groups, 1))
        c.residual = c.residual.canonical
        return c
    }

    /// The residual's keywords with the stack's `dim`, `groups` and `extra` over them.
    func groupedKwargs(_ extra: [String: Any] = [:]) -> [String: Any] {
        residual.referenceKwargs.merging(extra) { $1 }.merging(["dim": dim, "groups": groups]) { $1 }
    }

    public var referenceKwargs: [String: Any] { groupedKwargs() }
}

extension ResidualVQConfiguration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        var mlp: [String: Any]? = nil
        if implicitNeuralCodebook || mlpHiddenDim != nil || mlpDepth != 4 {
            mlp = ReferenceKeywords.make(["dim_hidden": mlpHiddenDim, "depth": mlpDepth])
        }
        let sizes: Any = Set(codebookSizes).count == 1 ? codebookSizes[0] : codebookSizes
        var layerKw = layer.referenceKwargs
        if diveq { layerKw["ema_update"] = nil }  // diveq turns EMA off itself; the keywords may not ask for both
        return ReferenceKeywords.stack(layer: layerKw, own: Self.ownKeywords, [
            "dim": dim, "num_quantizers": numQuantizers, "codebook_size": sizes, "codebook_dim": codebookDim,
            "shared_codebook": sharedCodebook, "quantize_dropout": quantizeDropout,
            "quantize_dropout_cutoff_index": quantizeDropoutCutoffIndex, "quantize_dropout_multiple_of": quantizeDropoutMultipleOf,
            "quant_grad_frac": quantGradFrac, "accept_image_fmap": acceptImageFmap, "beam_size": beamSize,
            "eval_beam_size": evalBeamSize, "beam_score_quantizer_weights": beamScoreQuantizerWeights, "diveq": diveq,
            "implicit_neural_codebook": implicitNeuralCodebook, "mlp_kwargs": mlp,
        ])
    }
}

extension GroupedResidualVQ.Configuration: ReferenceKeywordConfiguration, GroupedStackConfiguration {}

extension FSQ.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.make([
            "levels": levels, "dim": dim, "num_codebooks": numCodebooks, "keep_num_codebooks_dim": keepNumCodebooksDim,
            "channel_first": channelFirst, "projection_has_bias": projectionHasBias, "preserve_symmetry": preserveSymmetry,
            "noise_dropout": noiseDropout, "bound_hard_clamp": boundHardClamp, "return_indices": returnIndices, "seed": seed,
            "orthogonal_rotation": orthogonalRotation,
        ])
    }
}

extension ResidualFSQ.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        let clamp: Any? = softClampInputValue.map { $0.count == 1 ? Double($0[0]) as Any : $0.map(Double.init) as Any }
        return ReferenceKeywords.stack(layer: layer.referenceKwargs, own: Self.ownKeywords.union(Self.setForLayers), [
            "levels": levels, "num_quantizers": numQuantizers, "dim": dim, "is_channel_first": channelFirst,
            "quantize_dropout": quantizeDropout, "quantize_dropout_cutoff_index": quantizeDropoutCutoffIndex,
            "quantize_dropout_multiple_of": quantizeDropoutMultipleOf, "soft_clamp_input_value": clamp,
            "bound_hard_clamp": boundHardClamp, "seed": seed,
        ])
    }
}

extension GroupedResidualFSQ.Configuration: ReferenceKeywordConfiguration, GroupedStackConfiguration {
    public var referenceKwargs: [String: Any] { groupedKwargs(["accept_image_fmap": acceptImageFmap]) }
}

extension LFQ.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.make([
            "dim": dim, "codebook_size": codebookSize, "entropy_loss_weight": entropyLossWeight,
            "commitment_loss_weight": commitmentLossWeight, "diversity_gamma": diversityGamma, "num_codebooks": numCodebooks,
            "keep_num_codebooks_dim": keepNumCodebooksDim, "codebook_scale": codebookScale,
            "frac_per_sample_entropy": fracPerSampleEntropy, "has_projections": hasProjections,
            "projection_has_bias": projectionHasBias, "soft_clamp_input_value": softClampInputValue, "channel_first": channelFirst,
            "spherical": spherical, "seed": seed, "straight_through_activation": straightThroughActivation,
            "experimental_softplus_entropy_loss": experimentalSoftplusEntropyLoss, "entropy_loss_offset": entropyLossOffset,
            "cosine_sim_project_in": cosineSimProjectIn, "cosine_sim_project_in_scale": cosineSimProjectInScale,
            "orthogonal_rotation": orthogonalRotation,
        ])
    }
}

extension ResidualLFQ.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.stack(layer: layer.referenceKwargs, own: Self.ownKeywords.union(Self.setForLayers), [
            "dim": dim, "num_quantizers": numQuantizers, "codebook_size": codebookSize, "soft_clamp_input_value": softClampInputValue,
            "quantize_dropout": quantizeDropout, "quantize_dropout_cutoff_index": quantizeDropoutCutoffIndex,
            "quantize_dropout_multiple_of": quantizeDropoutMultipleOf, "seed": seed,
        ])
    }
}

extension GroupedResidualLFQ.Configuration: ReferenceKeywordConfiguration, GroupedStackConfiguration {}

extension SimVQ.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.make([
            "dim": dim, "codebook_size": codebookSize, "frozen_codebook_dim": frozenCodebookDim, "channel_first": channelFirst,
            "rotation_trick": rotationTrick, "input_to_quantize_commit_loss_weight": inputToQuantizeCommitLossWeight,
            "commitment_weight": commitmentWeight, "codebook_transform": codebookTransform, "seed": seed,
        ])
    }
}

extension ResidualSimVQ.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.stack(layer: layer.referenceKwargs, own: Self.ownKeywords, [
            "num_quantizers": numQuantizers, "quantize_dropout": quantizeDropout,
            "quantize_dropout_cutoff_index": quantizeDropoutCutoffIndex, "quantize_dropout_multiple_of": quantizeDropoutMultipleOf,
        ])
    }
}

extension RandomProjectionQuantizer.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.stack(layer: layer.referenceKwargs, own: Set(["dim", "codebook_size"] + Self.setForLayers), [
            "dim": dim, "codebook_size": codebookSize, "codebook_dim": codebookDim, "num_codebooks": numCodebooks, "norm": norm,
            "reference_layout": referenceLayout, "seed": seed,
        ])
    }
}

extension LatentQuantize.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.make([
            "levels": levels, "dim": dim, "commitment_loss_weight": commitmentLossWeight,
            "quantization_loss_weight": quantizationLossWeight, "num_codebooks": numCodebooks,
            "keep_num_codebooks_dim": keepNumCodebooksDim, "optimize_values": optimizeValues,
            "values_receive_gradients": valuesReceiveGradients, "seed": seed,
        ])
    }
}

extension FSP.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.make([
            "levels": levels, "dim": dim, "channel_first": channelFirst, "projection_has_bias": projectionHasBias,
            "act_name": activation, "quantize_rate": quantizeRate, "need_inv_act": needInverseActivation,
            "vector_norm": vectorNorm, "seed": seed,
        ])
    }
}

extension BinaryMapper.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        ReferenceKeywords.make(["bits": bits, "kl_loss_threshold": klLossThreshold, "deterministic_on_eval": deterministicOnEval, "seed": seed])
    }
}

extension HierarchicalVQ.Configuration: ReferenceKeywordConfiguration {
    public var referenceKwargs: [String: Any] {
        let layerKw = layer.referenceKwargs.filter { Self.layerKeywords.contains($0.key) }
        let sizes: Any = codebookSizes.count == 1 ? codebookSizes[0] : codebookSizes
        return layerKw.merging(ReferenceKeywords.make([
            "dim": dim, "codebook_size": sizes, "scales": levelShapes.map { $0 as Any } ?? scales, "shared_codebook": sharedCodebook,
            "channel_first": channelFirst, "quant_resi": quantResidual, "share_quant_resi": shareQuantResidual,
            "nested_dropout": nestedDropout, "nested_dropout_min_levels": nestedDropoutMinLevels,
            "accept_image_fmap": acceptImageFmap, "accept_3d_fmap": accept3dFmap, "seed": seed,
        ])) { _, own in own }
    }
}

/// A quantizer whose whole construction is a typed configuration that the reference's keywords express: it can
/// describe itself for a checkpoint (``Quantizer/referenceConfiguration()``), so
/// ``QuantizerCheckpoint/save(_:to:)`` needs nothing else.
public protocol ConfiguredQuantizer: Quantizer {
    associatedtype Configuration: ReferenceKeywordConfiguration
    /// The configuration the quantizer was built from.
    var configuration: Configuration { get }
    /// Builds the quantizer; the configuration is validated first (a ``ConfigurationError`` names the keyword).
    init(_ configuration: Configuration) throws
}

extension ConfiguredQuantizer {
    /// Builds the quantizer from the reference's keyword arguments (`{"dim": 64, "codebook_size": 512}`), validated
    /// before anything is allocated — one spelling for every quantizer: `FSQ(referenceKwargs: ["levels": [8, 5, 5, 5]])`.
    public init(referenceKwargs kw: [String: Any]) throws {
        try self.init(Configuration(referenceKwargs: kw))
    }

    /// The registry's name for this type and the configuration's keywords, checked to rebuild the same configuration.
    public func referenceConfiguration() throws -> ModuleConfig {
        guard let kind = QuantizerRegistry.kind(of: Self.self) else { throw ConfigurationError.unknownModule("\(Self.self)") }
        let kwargs = configuration.referenceKwargs
        let rebuilt: Configuration
        do { rebuilt = try Configuration(referenceKwargs: kwargs) } catch {
            throw ConfigurationError.invalid(module: kind.name, reason: "its configuration does not read back from the reference's keywords (\(error))")
        }
        guard rebuilt == configuration else {
            throw ConfigurationError.invalid(module: kind.name, reason: "its configuration sets options the reference's keywords cannot express "
                                             + "(a stack's layer option the stack sets itself); save it with save(_:config:to:) and its keywords")
        }
        return ModuleConfig(module: kind.name, kwargs: kwargs)
    }
}

extension VectorQuantizer: ConfiguredQuantizer {}
extension ResidualVQ: ConfiguredQuantizer {}
extension GroupedResidualVQ: ConfiguredQuantizer {}
extension FSQ: ConfiguredQuantizer {}
extension ResidualFSQ: ConfiguredQuantizer {}
extension GroupedResidualFSQ: ConfiguredQuantizer {}
extension LFQ: ConfiguredQuantizer {}
extension ResidualLFQ: ConfiguredQuantizer {}
extension GroupedResidualLFQ: ConfiguredQuantizer {}
extension SimVQ: ConfiguredQuantizer {}
extension ResidualSimVQ: ConfiguredQuantizer {}
extension RandomProjectionQuantizer: ConfiguredQuantizer {}
extension LatentQuantize: ConfiguredQuantizer {}
extension FSP: ConfiguredQuantizer {}
extension BinaryMapper: ConfiguredQuantizer {}
extension HierarchicalVQ: ConfiguredQuantizer {}
