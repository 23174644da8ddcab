import Foundation
import Logging
import VQNN
import VQTensor

private let logger = Logger(label: "VectorQuantize.Checkpoint")

/// `{"module": "<reference class name>", "kwargs": {<constructor arguments in the reference's names>}}`:
/// enough to rebuild a quantizer, from our checkpoints or from PyTorch's.
///
/// ```json
/// {"module": "ResidualVQ", "kwargs": {"dim": 64, "num_quantizers": 4, "codebook_size": 256}}
/// ```
public struct ModuleConfig {
    public var module: String
    public var kwargs: [String: Any]

    public init(module: String, kwargs: [String: Any]) {
        self.module = module
        self.kwargs = kwargs
    }

    /// Every module a configuration can name (``QuantizerRegistry``'s kinds).
    public static var modules: [String] { QuantizerRegistry.kinds.map(\.name) }

    /// Parses the JSON; errors name the path.
    public static func read(contentsOf url: URL) throws -> ModuleConfig {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TensorFileError.unreadable(path: url.path, reason: error.localizedDescription)
        }
        return try parse(data, path: url.path)
    }

    public static func parse(_ data: Data, path: String = "<memory>") throws -> ModuleConfig {
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TensorFileError.malformed(path: path, reason: "not a JSON object")
        }
        guard let module = obj["module"] as? String else { throw TensorFileError.malformed(path: path, reason: "no \"module\" string") }
        guard let kwargs = (obj["kwargs"] ?? [String: Any]()) as? [String: Any] else {
            throw TensorFileError.malformed(path: path, reason: "\"kwargs\" is not an object")
        }
        return ModuleConfig(module: module, kwargs: kwargs)
    }

    public func serialized() throws -> Data {
        try JSONSerialization.data(withJSONObject: ["module": module, "kwargs": kwargs], options: [.prettyPrinted, .sortedKeys])
    }

    public func write(to url: URL) throws { try AtomicFile.write(try serialized(), to: url) }

    /// The largest value each size keyword may take in a configuration from outside (a file), so that no
    /// combination of them can ask for an absurd allocation before a module's own checks run.
    static let sizeCaps: [String: Int] = [
        "dim": 1 << 16, "codebook_dim": 1 << 16, "frozen_codebook_dim": 1 << 16, "heads": 1 << 12, "num_codebooks": 1 << 12,
        "num_quantizers": 1 << 12, "groups": 1 << 12, "bits": 24, "pop_size": 1 << 24, "scales": 1 << 20, "codebook_size": 1 << 30, "levels": 1 << 20, "kmeans_iters": 1 << 16,
    ]
    /// The smallest value of each size keyword: 1 (a size of 0 makes empty tensors no quantizer can use), or 0.
    static let sizeFloors: [String: Int] = ["kmeans_iters": 0]

    /// Checks the size keywords against ``sizeCaps`` (integers, or lists of integers).
    func checkSizeCaps() throws {
        for (key, cap) in Self.sizeCaps {
            guard let v = kwargs[key] else { continue }
            let values = (v as? [Any]) ?? [v]
            for item in values {
                // Any number, exact or not, integer or beyond Int's range, is held to the cap (non-numbers are
                // the keyword parser's to refuse).
                guard !Keywords.isBoolean(item), let d = (item as? NSNumber)?.doubleValue ?? (item as? Int).map(Double.init) else { continue }
                let floor = Self.sizeFloors[key] ?? 1
                if !(d >= Double(floor) && d <= Double(cap)) {
                    throw ConfigurationError.badValue(module: module, keyword: key, reason: "\(item) is outside \(floor)…\(cap)")
                }
            }
        }
    }

    /// Builds the module the configuration names (through ``QuantizerRegistry``).
    public func build() throws -> Module {
        guard let kind = QuantizerRegistry.kind(named: module) else { throw ConfigurationError.unknownModule(module) }
        return try kind.build(kwargs)
    }

    /// The sidecar path of a checkpoint: `model.safetensors` → `model.json`.
    public static func sidecar(of checkpoint: URL) -> URL { checkpoint.deletingPathExtension().appendingPathExtension("json") }
}

/// Saving and loading a quantizer together with its configuration.
public enum QuantizerCheckpoint {
    /// Writes `checkpoint` (safetensors; the config also in its metadata as `config_json`, the parameters frozen
    /// by key as `frozen_keys`) and the sidecar
    /// JSON as one atomic set (`AtomicFile.write(_:)`): both are staged, then renamed under a
    /// lock of their folder, so concurrent writers never leave one's checkpoint beside the other's sidecar.
    ///
    /// - Throws: ``ConfigurationError`` when `config` does not describe `module` (another module type, or tensors of other
    ///   keys or shapes: a `codebook_size` of 32 for a 64-code model would only fail when loading), before anything is written.
    public static func save(_ module: Module, config: ModuleConfig, to checkpoint: URL) throws {
        try config.check(describes: module)
        let sidecar = ModuleConfig.sidecar(of: checkpoint)
        guard sidecar.standardizedFileURL != checkpoint.standardizedFileURL else {
            throw TensorFileError.unwritable(path: checkpoint.path, reason: "a checkpoint named .json would be its own config sidecar; name it .safetensors")
        }
        let serialized = try config.serialized()
        var file = SafeTensorsFile(metadata: ["config_json": String(decoding: serialized, as: UTF8.self)])
        // Parameters frozen by key (`freeze(keys:)`) stay frozen when the checkpoint is loaded.
        let frozenKeys = module.namedParameters().filter { $0.1.kind == .trainable && $0.1.isFrozen }.map(\.0).sorted()
        if !frozenKeys.isEmpty {
            file.metadata["frozen_keys"] = String(decoding: try JSONSerialization.data(withJSONObject: frozenKeys), as: UTF8.self)
        }
        for (key, t) in module.stateDict() { file.tensors[key] = .float(t) }
        try AtomicFile.write([(try file.serialized(), checkpoint), (serialized, sidecar)])
    }

    /// Writes a vector quantizer with the configuration it was built from (no keywords to write by hand).
    ///
    /// ```swift
    /// let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 64, codebookSize: 512))
    /// try QuantizerCheckpoint.save(vq, to: URL(fileURLWithPath: "model.safetensors"))
    /// ```
    public static func save(_ vq: VectorQuantizer, to checkpoint: URL) throws {
        try save(vq, config: vq.configuration, to: checkpoint)
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
        if cfg.module == "RandomProjectionQuantizer", cfg.kwargs["reference_layout"] == nil, file.tensors["vq.project_in.weight"] != nil {
            // A PyTorch checkpoint: its inner quantizer has the reference's projection.
            cfg.kwargs["reference_layout"] = true
        }
        try cfg.checkSizes(against: file, path: checkpoint.path)
        let module = try cfg.build()
        try module.load(file: file, path: checkpoint.path)
        if let text = file.metadata["frozen_keys"] {
            guard let keys = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String] else {
                throw TensorFileError.malformed(path: checkpoint.path, reason: "frozen_keys is not a list of parameter names")
            }
            do { try module.freeze(keys: keys, strict: true) } catch let e as ModuleError {
                throw TensorFileError.malformed(path: checkpoint.path, reason: "frozen_keys: \(e)")
            }
        }
        module.eval()
        return (module, cfg)
    }
}

extension ModuleConfig {
    /// Throws unless building this configuration gives a module of `module`'s type with the same tensors (keys and
    /// shapes): what a checkpoint saved with it must satisfy to load.
    func check(describes module: Module) throws {
        let built = try build()
        guard type(of: built) == type(of: module) else {
            throw ConfigurationError.invalid(module: self.module, reason: "the configuration builds a \(type(of: built)), not the \(type(of: module)) being saved")
        }
        let mine = Dictionary(module.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        let theirs = Dictionary(built.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        func shape(_ p: Parameter) -> [Int] { p.logicalShape ?? p.shape }
        let missing = Set(mine.keys).symmetricDifference(theirs.keys).sorted()
        let differing = mine.keys.sorted().filter { k in theirs[k].map { shape($0) != shape(mine[k]!) } ?? false }
        guard missing.isEmpty && differing.isEmpty else {
            let detail = (differing.prefix(3).map { "\($0) \(shape(mine[$0]!)) but the configuration gives \(shape(theirs[$0]!))" }
                + missing.prefix(3).map { "\($0) only in \(mine[$0] == nil ? "the configuration" : "the module")" }).joined(separator: "; ")
            throw ConfigurationError.invalid(module: self.module, reason: "the configuration does not describe the module being saved: \(detail)")
        }
    }

    /// Rejects a configuration whose declared codebook is larger than anything the checkpoint holds (every
    /// learned codebook is stored, so a `codebook_size` of 1e12 beside a 64-code file is an error, not a
    /// 1e12-code allocation).
    func checkSizes(against file: SafeTensorsFile, path: String) throws {
        let stored: Set<String> = ["VectorQuantize", "ResidualVQ", "GroupedResidualVQ", "SimVQ", "ResidualSimVQ", "RandomProjectionQuantizer", "HierarchicalVQ"]
        guard stored.contains(module) else { return }
        let declared = (kwargs["codebook_size"] as? [Int])?.max() ?? (kwargs["codebook_size"] as? Int)
        guard let declared else { return }
        let largest = file.tensors.values.map { $0.shape.reduce(1, *) }.max() ?? 0
        if declared > largest {
            throw ConfigurationError.badValue(module: module, keyword: "codebook_size",
                                              reason: "\(declared) codes declared, but the largest tensor in \(path) holds \(largest) values")
        }
    }
}
