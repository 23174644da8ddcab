import VQNN
import VQTensor

/// What the library knows about each quantizer, in one table: its name (the reference's class), how it is
/// built from the reference's keywords, a small configuration that builds, and how `vq train` trains it.
/// ``ModuleConfig``, the `vq` commands and the tests that walk every quantizer iterate this table; adding a
/// quantizer is one entry here and its file.
///
/// ```swift
/// for kind in QuantizerRegistry.kinds {
///     let q = try kind.build(kind.example)          // any Quantizer
///     print(kind.name, q.codebookSizes, kind.training)
/// }
/// ```
///
/// What a quantizer can tell about itself once built (its ``Quantizer/forwardLayout``, index layout,
/// ``Quantizer/sequenceShape``, ``Quantizer/learnedCodebooks``) stays with its type; the table holds what is
/// known before one exists.
public struct QuantizerKind: @unchecked Sendable {
    // @unchecked: `example` holds JSON-like values (numbers, strings, arrays), immutable once built.

    /// The reference's class name: the `module` of a ``ModuleConfig``.
    public let name: String
    /// A small configuration (reference keywords) that builds: for documentation, the tool and the tests.
    public let example: [String: Any]
    /// How `vq train` trains this kind of quantizer.
    public let training: TrainingMethod
    /// Every keyword the kind accepts (the reference's constructor arguments; a stack's include its layers').
    public let keywords: Set<String>
    /// The keywords of ``keywords`` that are this library's, not the reference's (`seed` everywhere; the random
    /// projection's `reference_layout`, LatentQuantize's `values_receive_gradients`): what
    /// ``QuantizerCheckpoint/export(_:config:to:)`` leaves out of a configuration for PyTorch.
    public var ownKeywords: Set<String> { Self.libraryKeywords.union(own) }
    /// The keyword every kind takes here and none in the reference.
    public static let libraryKeywords: Set<String> = ["seed"]
    private let own: Set<String>
    /// The keywords of ``keywords`` that this kind sets itself for the modules it builds (ResidualLFQ's layers'
    /// `codebook_scale`, …): refused unless at a value earlier versions wrote, never written, left out of exports —
    /// the reference raises `TypeError` for them.
    public let setForLayers: Set<String>
    /// The Swift type of this kind's quantizers.
    public let type: any Quantizer.Type
    private let make: ([String: Any]) throws -> Module

    init(_ name: String, _ type: any Quantizer.Type, keywords: Set<String>, own: Set<String> = [], setForLayers: [String] = [],
         example: [String: Any], training: TrainingMethod = .fromVectors, make: @escaping ([String: Any]) throws -> Module) {
        self.name = name
        self.type = type
        self.keywords = keywords
        self.own = own
        self.setForLayers = Set(setForLayers)
        self.example = example
        self.training = training
        self.make = make
    }

    /// Builds the quantizer from reference keywords; every keyword is validated before anything is allocated, and
    /// an error names this kind (not the inner configuration that found it: a ResidualVQ's layer's `decay`).
    public func build(_ kwargs: [String: Any]) throws -> any Quantizer {
        do {
            try ModuleConfig(module: name, kwargs: kwargs).checkSizeCaps()
            guard let q = try make(kwargs) as? any Quantizer else { throw ConfigurationError.unknownModule(name) }
            return q
        } catch let e as ConfigurationError {
            throw e.named(name)
        }
    }
}

/// How `vq train` trains a quantizer.
public enum TrainingMethod: Sendable, Equatable {
    /// From vectors alone: EMA codebooks by their EMA updates, and any parameter learned by gradient
    /// (projections, learnable codebooks, code transforms) by Adam on the reconstruction through the
    /// quantizer plus the quantizer's own loss — the objective of the reference's examples.
    case fromVectors
    /// Nothing is learned from data (the quantizer is fixed by its configuration and seed).
    case nothingToLearn(String)
    /// Not by `vq train`; the text says what to use instead.
    case elsewhere(String)

    /// The method for one built quantizer: `.fromVectors` kinds with nothing to learn say so — no parameter learned
    /// by gradient that is not frozen, and no EMA codebook with a code not held (``Codebook/holdsEveryCode``; an
    /// `affine_param` codebook's batch statistics move even then, so it still learns) and not frozen by the
    /// configuration (``Quantizer/codebooksFrozenByConfiguration``, once initialised: k-means still fits a new one).
    public static func of(_ q: any Quantizer, kind: QuantizerKind) -> TrainingMethod {
        guard kind.training == .fromVectors else { return kind.training }
        let books = q.learnedCodebooks
        let configured = q.codebooksFrozenByConfiguration.filter { $0.initted.value.item != 0 }
        let held = books.filter { b in !configured.contains { $0 === b } && (b.embed.kind == .trainable || b.configuration.emaUpdate)
                                       && b.holdsEveryCode && !b.configuration.affineParam }
        let still = held + configured
        let learnsByEMA = books.contains { b in b.embed.kind != .trainable && b.configuration.emaUpdate && !still.contains { $0 === b } }
        // A learnable codebook whose every code is held, or that its configuration freezes, is as still as a parameter
        // frozen whole.
        let learned = q.trainableParameters().filter { p in !still.contains { $0.embed === p } }
        guard !learnsByEMA && learned.allSatisfy(\.isFrozen) else { return .fromVectors }
        var why: [String] = []
        if !configured.isEmpty {
            let which = books.count == 1 ? "its codebook is" : configured.count == books.count ? "its \(books.count) codebooks are"
                : "\(configured.count) of its \(books.count) codebooks are"
            why.append("\(which) frozen by its configuration (freeze_codebook)")
        }
        if !held.isEmpty { why.append("every code of \(books.count == 1 ? "its codebook" : "the \(held.count) codebooks that learn") is frozen (vq unfreeze --codes frees them)") }
        if !learned.isEmpty { why.append("every parameter it learns by gradient is frozen (\(learned.count))") }
        return .nothingToLearn(why.isEmpty ? "\(kind.name) has no learned parameters in this configuration (no projection, no learned codebook)"
                               : "\(kind.name): " + why.joined(separator: ", and "))
    }
}

/// The table of every quantizer (see ``QuantizerKind``).
public enum QuantizerRegistry {
    public static let kinds: [QuantizerKind] = [
        QuantizerKind("VectorQuantize", VectorQuantizer.self, keywords: VectorQuantizerConfiguration.keywords,
                      example: ["dim": 8, "codebook_size": 16, "heads": 2, "separate_codebook_per_head": true, "codebook_dim": 4]) { try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: $0)) },
        QuantizerKind("ResidualVQ", ResidualVQ.self, keywords: ResidualVQConfiguration.ownKeywords.union(VectorQuantizerConfiguration.keywords),
                      example: ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "codebook_dim": 4]) { try ResidualVQ(ResidualVQConfiguration(referenceKwargs: $0)) },
        QuantizerKind("GroupedResidualVQ", GroupedResidualVQ.self, keywords: ResidualVQConfiguration.ownKeywords.union(VectorQuantizerConfiguration.keywords).union(["groups"]),
                      example: ["dim": 8, "groups": 2, "num_quantizers": 2, "codebook_size": 16]) { try GroupedResidualVQ(referenceKwargs: $0) },
        QuantizerKind("FSQ", FSQ.self, keywords: FSQ.Configuration.keywords,
                      example: ["levels": [8, 5, 5], "dim": 8]) { try FSQ(FSQ.Configuration(referenceKwargs: $0)) },
        QuantizerKind("ResidualFSQ", ResidualFSQ.self, keywords: ResidualFSQ.Configuration.ownKeywords.union(FSQ.Configuration.keywords),
                      setForLayers: ResidualFSQ.Configuration.setForLayers, example: ["levels": [8, 5, 5], "num_quantizers": 2, "dim": 8]) { try ResidualFSQ(referenceKwargs: $0) },
        QuantizerKind("GroupedResidualFSQ", GroupedResidualFSQ.self, keywords: ResidualFSQ.Configuration.ownKeywords.union(FSQ.Configuration.keywords).union(["groups", "accept_image_fmap"]),
                      setForLayers: ResidualFSQ.Configuration.setForLayers, example: ["levels": [5, 5], "num_quantizers": 2, "dim": 8, "groups": 2]) { try GroupedResidualFSQ(referenceKwargs: $0) },
        QuantizerKind("LFQ", LFQ.self, keywords: LFQ.Configuration.keywords,
                      example: ["dim": 8, "codebook_size": 64]) { try LFQ(LFQ.Configuration(referenceKwargs: $0)) },
        QuantizerKind("ResidualLFQ", ResidualLFQ.self, keywords: ResidualLFQ.Configuration.ownKeywords.union(LFQ.Configuration.keywords),
                      setForLayers: ResidualLFQ.Configuration.setForLayers, example: ["dim": 8, "codebook_size": 64, "num_quantizers": 2]) { try ResidualLFQ(referenceKwargs: $0) },
        QuantizerKind("GroupedResidualLFQ", GroupedResidualLFQ.self, keywords: ResidualLFQ.Configuration.ownKeywords.union(LFQ.Configuration.keywords).union(["groups", "accept_image_fmap"]),
                      setForLayers: ResidualLFQ.Configuration.setForLayers, example: ["dim": 8, "codebook_size": 16, "num_quantizers": 2, "groups": 2]) { try GroupedResidualLFQ(referenceKwargs: $0) },
        QuantizerKind("SimVQ", SimVQ.self, keywords: SimVQ.Configuration.keywords,
                      example: ["dim": 8, "codebook_size": 16]) { try SimVQ(referenceKwargs: $0) },
        QuantizerKind("ResidualSimVQ", ResidualSimVQ.self, keywords: ResidualSimVQ.Configuration.ownKeywords.union(SimVQ.Configuration.keywords),
                      example: ["dim": 8, "codebook_size": 16, "num_quantizers": 2]) { try ResidualSimVQ(referenceKwargs: $0) },
        QuantizerKind("RandomProjectionQuantizer", RandomProjectionQuantizer.self, keywords: VectorQuantizerConfiguration.keywords.union(["codebook_dim", "num_codebooks", "norm", "reference_layout"]),
                      own: ["reference_layout"], setForLayers: RandomProjectionQuantizer.Configuration.setForLayers,
                      example: ["dim": 8, "codebook_size": 16, "codebook_dim": 4, "num_codebooks": 2],
                      training: .nothingToLearn("RandomProjectionQuantizer is random by design: its projections and codebooks are fixed by its seed")) {
            try RandomProjectionQuantizer(referenceKwargs: $0)
        },
        QuantizerKind("LatentQuantize", LatentQuantize.self, keywords: LatentQuantize.Configuration.keywords,
                      own: ["values_receive_gradients"], example: ["levels": [5, 5, 8], "dim": 8]) { try LatentQuantize(LatentQuantize.Configuration(referenceKwargs: $0)) },
        QuantizerKind("FSP", FSP.self, keywords: FSP.Configuration.keywords,
                      example: ["levels": [8, 5, 5], "dim": 8]) { try FSP(FSP.Configuration(referenceKwargs: $0)) },
        QuantizerKind("BinaryMapper", BinaryMapper.self, keywords: BinaryMapper.Configuration.keywords,
                      example: ["bits": 8]) { try BinaryMapper(BinaryMapper.Configuration(referenceKwargs: $0)) },
        QuantizerKind("EvoLFQ", EvoLFQ.self, keywords: LFQ.Configuration.keywords.union(EvoLFQ.geneticKeywords).union(["encoder", "decoder", "lfq"]),
                      example: ["encoder": "nn.Linear(8, 6)", "decoder": "nn.Linear(6, 8)", "dim": 6],
                      training: .elsewhere("EvoLFQ learns by evolution of its encoder and decoder: train it through the library (EvoLFQ's genetic step)")) {
            try EvoLFQ(referenceKwargs: $0)
        },
        QuantizerKind("HierarchicalVQ", HierarchicalVQ.self, keywords: HierarchicalVQ.Configuration.own.union(HierarchicalVQ.Configuration.layerKeywords),
                      example: ["dim": 8, "codebook_size": 16, "scales": [1, 4, 20], "kmeans_init": false],
                      training: .elsewhere("HierarchicalVQ learns from whole sequences, not single vectors: train it through the library, or see `vq example autoencoder --quantizer hvq`")) {
            try HierarchicalVQ(referenceKwargs: $0)
        },
    ]

    /// The kind named `name` (a reference class name), if the library has it.
    public static func kind(named name: String) -> QuantizerKind? { kinds.first { $0.name == name } }

    /// The kind of a quantizer type, if the registry has it.
    public static func kind(of type: any Quantizer.Type) -> QuantizerKind? { kinds.first { $0.type == type } }
}
