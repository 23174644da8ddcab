import Foundation
import VQNN
import VQTensor


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

    /// Parses the JSON; errors name the path. A configuration is a regular file of at most ``maxBytes``.
    public static func read(contentsOf url: URL) throws -> ModuleConfig {
        try parse(try TensorFileError.mappedContents(of: url, limit: maxBytes), path: url.path)
    }

    /// The largest configuration file read (1 MiB; a sidecar is a few hundred bytes).
    public static let maxBytes = 1 << 20

    public static func parse(_ data: Data, path: String = "<memory>") throws -> ModuleConfig {
        let parsed: Any
        do { parsed = try JSONSerialization.jsonObject(with: data) } catch {
            // Python's json.dump writes NaN, Infinity and -Infinity, which JSON does not have: say where the text stops parsing.
            let at = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String).map { ": \($0)" } ?? ""
            throw TensorFileError.malformed(path: path, reason: "not valid JSON\(at) (NaN, Infinity and numbers past double's range are not JSON)")
        }
        guard let obj = parsed as? [String: Any] else { throw TensorFileError.malformed(path: path, reason: "not a JSON object") }
        guard let module = obj["module"] as? String else { throw TensorFileError.malformed(path: path, reason: "no \"module\" string") }
        guard let kwargs = (obj["kwargs"] ?? [String: Any]()) as? [String: Any] else {
            throw TensorFileError.malformed(path: path, reason: "\"kwargs\" is not an object")
        }
        return ModuleConfig(module: module, kwargs: kwargs)
    }

    public func serialized() throws -> Data {
        Data(try ConfigurationJSON.text(["module": module, "kwargs": kwargs] as [String: Any]).utf8)
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
    /// A value that means "not given" in the reference's signature, per module and keyword (LatentQuantize's
    /// `codebook_dim = -1`): passed to the module's parser, which knows it.
    static let unsetValues: [String: [String: Int]] = ["LatentQuantize": ["codebook_dim": -1]]

    /// Checks the size keywords against ``sizeCaps`` (integers, or lists of integers).
    func checkSizeCaps() throws {
        for (key, cap) in Self.sizeCaps {
            guard let v = kwargs[key] else { continue }
            let values = (v as? [Any]) ?? [v]
            for item in values {
                // Any number, exact or not, integer or beyond Int's range, is held to the cap (non-numbers are
                // the keyword parser's to refuse).
                guard !Keywords.isBoolean(item), let d = (item as? NSNumber)?.doubleValue ?? (item as? Int).map(Double.init) else { continue }
                if let unset = Self.unsetValues[module]?[key], d == Double(unset) { continue }
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
