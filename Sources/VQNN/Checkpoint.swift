import Foundation
import VQTensor

/// A checkpoint that does not fit the module it is loaded into.
public struct CheckpointError: Error, CustomStringConvertible {
    public let path: String
    public let reason: ModuleError
    public var description: String { "\(path): \(reason)" }
}

extension Module {
    /// Saves every parameter and buffer under its PyTorch key as F32 safetensors, atomically
    /// (temporary file, fsync, rename): a crash mid-save leaves the previous file intact. A state with NaN or
    /// ±∞ (a diverged model) throws a ``CheckpointError`` and writes nothing: it could not be loaded back.
    public func save(to url: URL, metadata: [String: String] = [:]) throws {
        try checkFiniteForSaving(to: url.path)
        var file = SafeTensorsFile(metadata: metadata)
        for (key, t) in stateDict() { file.tensors[key] = .float(t) }
        try file.write(to: url)
    }

    /// Throws a ``CheckpointError`` naming `path` when the state holds NaN or ±∞ where none is admitted.
    public func checkFiniteForSaving(to path: String) throws {
        let nonFinite = nonFiniteValues()
        if !nonFinite.isEmpty { throw CheckpointError(path: path, reason: .nonFinite(nonFinite)) }
    }

    /// Loads a safetensors checkpoint (ours, or a PyTorch `state_dict()` saved with
    /// `safetensors.torch.save_file`; integer and boolean buffers are converted). With `strict`, any
    /// missing, unexpected or mis-shaped key throws a ``CheckpointError`` listing all of them, and the
    /// module is not changed.
    public func load(from url: URL, strict: Bool = true) throws {
        try load(file: try SafeTensorsFile.read(contentsOf: url), path: url.path, strict: strict)
    }

    /// Loads an already-read safetensors file; errors name `path`.
    ///
    /// A file written by `safetensors.torch.save_model` — what safetensors asks for when tensors share memory, as a
    /// residual stack's shared codebook does — holds each shared tensor once and names the others in its metadata
    /// (`{"layers.1._codebook.embed": "layers.0._codebook.embed", …}`); such a name of this module's state reads
    /// the tensor it names.
    public func load(file: SafeTensorsFile, path: String, strict: Bool = true) throws {
        var state: [String: Tensor] = [:]
        for (k, v) in file.tensors { state[k] = v.asFloat }
        let aliases = file.metadata.filter { state[$0.key] == nil && state[$0.value] != nil }
        if !aliases.isEmpty {
            let keys = Set(namedParameters().map(\.0))
            for (alias, target) in aliases where keys.contains(alias) { state[alias] = state[target] }
        }
        do {
            try load(stateDict: state, strict: strict)
        } catch let e as ModuleError {
            throw CheckpointError(path: path, reason: e)
        }
    }
}

extension SafeTensorsFile {
    /// The tensors named under `prefix` (e.g. `"quantizer."`), without it — a module's state inside a larger model's
    /// state dict — with the metadata's shared-tensor names under it (see ``Module/load(file:path:strict:)``).
    public func embedded(under prefix: String) -> SafeTensorsFile {
        var out = SafeTensorsFile(metadata: [:])
        for (name, t) in tensors where name.hasPrefix(prefix) { out.tensors[String(name.dropFirst(prefix.count))] = t }
        for (alias, target) in metadata where alias.hasPrefix(prefix) && target.hasPrefix(prefix) {
            out.metadata[String(alias.dropFirst(prefix.count))] = String(target.dropFirst(prefix.count))
        }
        return out
    }
}

extension Module {
    /// The prefixes under which `file` holds this module's state when its own keys are not at the top — a quantizer
    /// saved as part of a model (`quantizer.`, `model.vq.`, DDP's `module.`): every prefix `P` such that some
    /// `P + key` names a tensor, among those holding the most of the module's keys. One prefix is unambiguous; none
    /// means the state is not there; several, that the file holds more than one candidate.
    public func statePrefixes(in file: SafeTensorsFile) -> [String] {
        let keys = Array(stateDict().keys)
        var held: [String: Int] = [:]
        for name in Set(file.tensors.keys).union(file.metadata.keys) {
            for key in keys where name.count > key.count + 1 && name.hasSuffix("." + key) {
                held[String(name.dropLast(key.count)), default: 0] += 1
            }
        }
        guard let most = held.values.max() else { return [] }
        return held.filter { $0.value == most }.keys.sorted()
    }
}
