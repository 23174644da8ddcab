import Foundation
import Logging
import VQNN
import VQTensor

private let logger = Logger(label: "VectorQuantize.Checkpoint")

/// Saving and loading a quantizer together with its configuration.
public enum QuantizerCheckpoint {
    /// Writes `checkpoint` (safetensors; the config also in its metadata as `config_json`, the parameters frozen
    /// by key as `frozen_keys`) and the sidecar
    /// JSON as one atomic set (`AtomicFile.write(_:)`): both are staged, then renamed under a
    /// lock of their folder, so concurrent writers never leave one's checkpoint beside the other's sidecar.
    ///
    /// - Throws: ``ConfigurationError`` when `config` does not describe `module` (another module type, or tensors of other
    ///   keys or shapes: a `codebook_size` of 32 for a 64-code model would only fail when loading), and `CheckpointError`
    ///   when the state holds NaN or ±∞ (a diverged model, which no load would accept), before anything is written.
    public static func save(_ module: Module, config: ModuleConfig, to checkpoint: URL) throws {
        try write(module, config: config, to: checkpoint)
    }

    /// ``save(_:config:to:)-(Module,ModuleConfig,_)`` with more files in the same atomic set — a command's report beside
    /// the checkpoint it describes: all are staged first, and none replaces its target unless all can.
    ///
    /// ```swift
    /// try QuantizerCheckpoint.save(vq, config: config, to: URL(fileURLWithPath: "model.safetensors"),
    ///                              alongside: [(Data(html.utf8), URL(fileURLWithPath: "report.html"))])
    /// ```
    public static func save(_ module: Module, config: ModuleConfig, to checkpoint: URL, alongside files: [(data: Data, url: URL)]) throws {
        try write(module, config: config, to: checkpoint, alongside: files)
    }

    /// Writes `module` as the reference's `state_dict()` holds it, for PyTorch: ``save(_:config:to:)-(Module,ModuleConfig,_)``
    /// without this library's own state — the freeze masks, the freezing policy's step counter, the keys frozen by
    /// name, the value tables the reference keeps as plain lists (every `Parameter.isLibraryState` tensor) — and
    /// its configuration without this library's keywords (``QuantizerKind/ownKeywords``: `seed`, …), so that
    /// `load_state_dict(load_file(path))` takes the file strictly and the sidecar's `kwargs` build the reference's
    /// module. Loading the file here gives that state its defaults: nothing frozen. (Keywords naming a module — a code
    /// transform, a bridge — stay the spec strings the configurations spell them with, `"nn.Linear(8, 8)"`. An affine
    /// codebook's batch statistics are the reference's state, written once a batch has set them; PyTorch registers
    /// those buffers at its first batch, so a fresh module needs them registered before a strict load.)
    ///
    /// ```swift
    /// try QuantizerCheckpoint.export(vq, config: config, to: URL(fileURLWithPath: "for-pytorch.safetensors"))
    /// ```
    ///
    /// ```python
    /// vq = VectorQuantize(**json.load(open("for-pytorch.json"))["kwargs"])
    /// vq.load_state_dict(load_file("for-pytorch.safetensors"))   # strict
    /// ```
    ///
    /// - Returns: the tensors left out, sorted.
    /// - Throws: as ``save(_:config:to:)-(Module,ModuleConfig,_)``; ``ConfigurationError`` for a random-projection
    ///   quantizer in this library's layout with several heads (one `e`-dimensional codebook per head), which the reference has no module
    ///   for — nothing is written.
    @discardableResult
    public static func export(_ module: Module, config: ModuleConfig, to checkpoint: URL) throws -> [String] {
        // With one codebook the two layouts are one (h·e = e, no inner projection); with several, PyTorch has none of ours.
        if let rpq = module as? RandomProjectionQuantizer, !rpq.configuration.referenceLayout, rpq.numCodebooks > 1 {
            throw ConfigurationError.invalid(module: config.module, reason: "this random-projection quantizer has this library's layout (each head's codes in its own e dimensions); the reference's has h·e, so PyTorch has no module for it — build it with reference_layout: true to export it")
        }
        var reference = config
        // Without this library's keywords, and without those the reference's wrapper sets itself (a file of an earlier
        // version may hold them at the value the wrapper uses; the reference raises for them).
        if let kind = QuantizerRegistry.kind(named: config.module) {
            for key in kind.ownKeywords.union(kind.setForLayers) { reference.kwargs[key] = nil }
        }
        return try write(module, config: config, to: checkpoint, exportingAs: reference)
    }

    /// The keys of `module`'s state that the reference's `state_dict()` would not hold: this library's own state
    /// (`Parameter.isLibraryState`), and a buffer the reference makes late still at its "not yet" value (an affine
    /// codebook's batch statistics before its first batch: NaN here, no buffer there).
    static func notInReferenceState(_ module: Module) -> Set<String> {
        Set(module.namedParameters().filter { _, p in
            p.isLibraryState || (p.isOptionalInState && p.mayHoldNonFinite && p.value.count > 0 && p.value.scalars.allSatisfy(\.isNaN))
        }.map(\.0))
    }

    /// The one writer behind ``save(_:config:to:)-(Module,ModuleConfig,_)`` and ``export(_:config:to:)``: checks that
    /// `config` describes the module and writes it with the whole state — or, exporting, writes `reference` (the
    /// reference's part of `config`) with the reference's state only; returns the keys left out.
    @discardableResult
    private static func write(_ module: Module, config: ModuleConfig, to checkpoint: URL,
                              exportingAs reference: ModuleConfig? = nil, alongside files: [(data: Data, url: URL)] = []) throws -> [String] {
        try config.check(describes: module)
        try module.checkFiniteForSaving(to: checkpoint.path)
        let sidecar = ModuleConfig.sidecar(of: checkpoint)
        guard sidecar.standardizedFileURL != checkpoint.standardizedFileURL else {
            throw TensorFileError.unwritable(path: checkpoint.path, reason: "a checkpoint named .json would be its own config sidecar; name it .safetensors")
        }
        let serialized = try (reference ?? config).serialized()
        var file = SafeTensorsFile(metadata: ["config_json": String(decoding: serialized, as: UTF8.self)])
        // Parameters frozen by key (`freeze(keys:)`) stay frozen when the checkpoint is loaded.
        let frozenKeys = module.namedTrainableParameters().filter { $0.1.isFrozen }.map(\.0).sorted()
        if reference == nil && !frozenKeys.isEmpty {
            file.metadata["frozen_keys"] = String(decoding: try JSONSerialization.data(withJSONObject: frozenKeys), as: UTF8.self)
        }
        let ours = reference == nil ? [] : Self.notInReferenceState(module)
        var left: [String] = []
        for (key, t) in module.stateDict() {
            if ours.contains(key) { left.append(key) } else { file.tensors[key] = .float(t) }
        }
        try AtomicFile.write([(try file.serialized(), checkpoint), (serialized, sidecar)] + files)
        return left.sorted()
    }

    /// Writes a quantizer with the configuration it was built from (no keywords to write by hand): any quantizer of
    /// the registry built from its typed configuration or the reference's keywords.
    ///
    /// ```swift
    /// let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 64, codebookSize: 512))
    /// try QuantizerCheckpoint.save(vq, to: URL(fileURLWithPath: "model.safetensors"))
    /// let fsq = try FSQ(.init(levels: [8, 5, 5, 5]))
    /// try QuantizerCheckpoint.save(fsq, to: URL(fileURLWithPath: "fsq.safetensors"))
    /// ```
    ///
    /// - Throws: ``ConfigurationError`` when keywords cannot describe the quantizer (``EvoLFQ``'s modules, a custom code
    ///   transform, a stack's layer option the stack sets itself) — nothing is written.
    public static func save(_ quantizer: any Quantizer, to checkpoint: URL) throws {
        try save(quantizer, config: quantizer.referenceConfiguration(), to: checkpoint)
    }

    /// Writes `module` with a typed vector-quantizer configuration (the reference's keywords are derived from it).
    public static func save(_ module: Module, config: VectorQuantizerConfiguration, to checkpoint: URL) throws {
        try save(module, config: ModuleConfig(module: "VectorQuantize", kwargs: config.referenceKwargs), to: checkpoint)
    }

    /// Rebuilds a module from a checkpoint. The configuration is `config` when given; otherwise the one
    /// stored in the checkpoint's own metadata, which is authoritative — the checkpoint and its metadata are
    /// one file, written by one atomic rename, so they always agree even after a kill between the writes
    /// of a checkpoint and its sidecar (a sidecar that disagrees is ignored with a warning). A checkpoint
    /// without metadata (a PyTorch state dict) uses its sidecar JSON. The sizes the configuration declares
    /// are checked against the tensors in the file before anything is allocated.
    /// ``load(_:config:)`` for a quantizer: the module typed as ``Quantizer`` (no cast), or a
    /// ``ConfigurationError`` when the checkpoint holds another kind of module.
    ///
    /// ```swift
    /// let (q, config) = try QuantizerCheckpoint.loadQuantizer(URL(fileURLWithPath: "model.safetensors"))
    /// let indices = q.encode(vectors)
    /// ```
    public static func loadQuantizer(_ checkpoint: URL, config: URL? = nil) throws -> (any Quantizer, ModuleConfig) {
        let (module, cfg) = try load(checkpoint, config: config)
        guard let q = module as? any Quantizer else { throw ConfigurationError.invalid(module: cfg.module, reason: "not a quantizer") }
        return (q, cfg)
    }

    /// The part of `file` that is `module`'s state: the whole file when it holds any of the module's keys, else the
    /// tensors under the one prefix that holds them (a PyTorch model's state dict with the quantizer inside it,
    /// `quantizer.…`, or DDP's `module.…`), with that prefix; several such prefixes are refused, naming them.
    static func ownState(of module: Module, in file: SafeTensorsFile, path: String) throws -> (state: SafeTensorsFile, prefix: String?) {
        let keys = module.stateDict().keys
        if keys.contains(where: { file.tensors[$0] != nil }) { return (file, nil) }
        let prefixes = module.statePrefixes(in: file)
        if prefixes.count > 1 {
            throw TensorFileError.malformed(path: path, reason: "holds this quantizer's tensors under \(prefixes.count) prefixes (\(prefixes.prefix(4).map { "'\($0)'" }.joined(separator: ", "))): save the one to use with its keys at the top")
        }
        guard let prefix = prefixes.first else { return (file, nil) }   // the load names the missing keys
        return (file.embedded(under: prefix), prefix)
    }

    public static func load(_ checkpoint: URL, config: URL? = nil) throws -> (Module, ModuleConfig) {
        let file = try SafeTensorsFile.read(contentsOf: checkpoint)
        let sidecar = ModuleConfig.sidecar(of: checkpoint)
        var cfg: ModuleConfig
        if let config {
            cfg = try ModuleConfig.read(contentsOf: config)
        } else if let json = file.metadata["config_json"] {
            cfg = try ModuleConfig.parse(Data(json.utf8), path: checkpoint.path + " (metadata)")
            if FileManager.default.fileExists(atPath: sidecar.path),
               (try? ModuleConfig.read(contentsOf: sidecar).serialized()) != (try? cfg.serialized()) {
                logger.warning("\(sidecar.path) does not match the configuration inside \(checkpoint.lastPathComponent) (an interrupted write?): the checkpoint's own is used")
            }
        } else if FileManager.default.fileExists(atPath: sidecar.path) {
            cfg = try ModuleConfig.read(contentsOf: sidecar)
        } else {
            throw TensorFileError.malformed(path: checkpoint.path, reason: "no config: pass --config or put \(sidecar.lastPathComponent) beside it")
        }
        if cfg.module == "RandomProjectionQuantizer", cfg.kwargs["reference_layout"] == nil,
           file.tensors.keys.contains(where: { $0.hasPrefix("vq.project_in.") }) {
            // A PyTorch checkpoint: its inner quantizer has the reference's projection (a Linear, or a Linear and a
            // LayerNorm with layernorm_after_project_in).
            cfg.kwargs["reference_layout"] = true
        }
        try cfg.checkSizes(against: file, path: checkpoint.path)
        let module = try cfg.build()
        let (state, prefix) = try ownState(of: module, in: file, path: checkpoint.path)
        try module.load(file: state, path: checkpoint.path)
        if let text = file.metadata["frozen_keys"] {
            guard let keys = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String] else {
                throw TensorFileError.malformed(path: checkpoint.path, reason: "frozen_keys is not a list of parameter names")
            }
            do { try module.freeze(keys: keys, strict: true) } catch let e as ModuleError {
                throw TensorFileError.malformed(path: checkpoint.path, reason: "frozen_keys: \(e)")
            }
        }
        module.eval()
        // Said once the load has succeeded: a refused load says only why.
        if let prefix { logger.info("\(checkpoint.path): the quantizer's tensors are read under '\(prefix)'") }
        if let config, let json = file.metadata["config_json"], contradicts(module, configuredBy: cfg, own: json) {
            logger.warning("\(config.path) differs from the configuration inside \(checkpoint.lastPathComponent): \(config.lastPathComponent) is used")
        }
        return (module, cfg)
    }

    /// Whether `module` (built from a configuration given beside the checkpoint) is configured otherwise than the
    /// checkpoint's own configuration `json` says — compared as the quantizers describe themselves, so keywords left at
    /// their defaults (an exported sidecar has no `seed`) do not count. A model trained with cosine distances encodes
    /// differently under a configuration without them: worth a line.
    static func contradicts(_ module: Module, configuredBy cfg: ModuleConfig, own json: String) -> Bool {
        guard let own = try? ModuleConfig.parse(Data(json.utf8)), (try? own.serialized()) != (try? cfg.serialized()),
              let given = (module as? any Quantizer).flatMap({ try? $0.referenceConfiguration() })
        else { return false }
        if own.module != given.module { return true }
        guard let described = (try? own.build()).flatMap({ try? ($0 as? any Quantizer)?.referenceConfiguration() }) else { return false }
        return (try? described.serialized()) != (try? given.serialized())
    }
}
