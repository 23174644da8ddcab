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
    public func load(file: SafeTensorsFile, path: String, strict: Bool = true) throws {
        var state: [String: Tensor] = [:]
        for (k, v) in file.tensors { state[k] = v.asFloat }
        do {
            try load(stateDict: state, strict: strict)
        } catch let e as ModuleError {
            throw CheckpointError(path: path, reason: e)
        }
    }
}
