import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// Everything `vq train` needs to continue a run exactly where it stopped: the model (parameters, buffers,
/// every random generator), the position in the data (the shuffled order, the cursor and the shuffling
/// generator), the step and the losses so far. Written atomically every `--checkpoint-every` steps; a run
/// resumed from it with `--resume` ends with a checkpoint bit-identical to an uninterrupted run.
///
/// One safetensors file: `model/<key>` (the state dict), `rng/<module path>` (four words each, as Int64
/// bit patterns), `train/order`, `train/losses`, `train/data_rng`; metadata `config_json`, `step`,
/// `cursor`, `signature` (the options that must not change between the run and its resumption).
struct TrainingState {
    var step: Int
    var cursor: Int
    var order: [Int]
    var dataRNG: SeededGenerator
    var losses: [Float]
    var signature: String

    static let format = "vq-train-state-1"

    static func words(_ g: SeededGenerator) -> StoredTensor { .integer(IndexTensor(g.state.map { Int(Int64(bitPattern: $0)) })) }

    static func generator(_ t: StoredTensor?, _ key: String, path: String) throws -> SeededGenerator {
        guard let w = t?.asIndices, w.count == 4, w.scalars.contains(where: { $0 != 0 }) else {
            throw CLIError("\(path): \(key) is not a generator state")
        }
        return SeededGenerator(state: w.scalars.map { UInt64(bitPattern: Int64($0)) })
    }

    func write(module: Module, config: ModuleConfig, to url: URL) throws {
        var file = SafeTensorsFile(metadata: [
            "format": Self.format, "config_json": String(decoding: try config.serialized(), as: UTF8.self),
            "step": String(step), "cursor": String(cursor), "signature": signature,
        ])
        for (key, t) in module.stateDict() { file.tensors["model/" + key] = .float(t) }
        for (path, g) in module.randomStates() { file.tensors["rng/" + path] = Self.words(g) }
        file.tensors["train/order"] = .integer(IndexTensor(order))
        file.tensors["train/losses"] = .float(Tensor(losses))
        file.tensors["train/data_rng"] = Self.words(dataRNG)
        try file.write(to: url)
    }

    /// Reads a state file; the model is rebuilt from its own configuration.
    static func read(_ url: URL) throws -> (any Quantizer, ModuleConfig, TrainingState) {
        guard FileManager.default.fileExists(atPath: url.path) else { throw CLIError("--resume \(url.path): no such file") }
        let file = try SafeTensorsFile.read(contentsOf: url)
        let m = file.metadata
        guard m["format"] == format, let json = m["config_json"], let step = m["step"].flatMap({ Int($0) }),
              let cursor = m["cursor"].flatMap({ Int($0) }), let signature = m["signature"] else {
            throw CLIError("--resume \(url.path): not a vq train state (write one with --checkpoint-every)")
        }
        let config = try ModuleConfig.parse(Data(json.utf8), path: url.path + " (metadata)")
        guard let module = try config.build() as? any Quantizer else { throw CLIError("\(url.path): \(config.module) is not a quantizer") }
        var model: [String: Tensor] = [:], rngs: [String: SeededGenerator] = [:]
        for (key, t) in file.tensors {
            if key.hasPrefix("model/") { model[String(key.dropFirst(6))] = t.asFloat }
            if key.hasPrefix("rng/") { rngs[String(key.dropFirst(4))] = try generator(t, key, path: url.path) }
        }
        do {
            try module.load(stateDict: model)
            try module.setRandomStates(rngs)
        } catch let e as ModuleError {
            throw CLIError("--resume \(url.path): \(e)")
        }
        guard let order = file.tensors["train/order"]?.asIndices?.scalars, let losses = file.tensors["train/losses"]?.asFloat.scalars,
              losses.count == step, cursor >= 0, cursor <= order.count, Set(order).count == order.count,
              order.allSatisfy({ $0 >= 0 && $0 < order.count })
        else { throw CLIError("--resume \(url.path): the data position is damaged") }
        let state = TrainingState(step: step, cursor: cursor, order: order, dataRNG: try generator(file.tensors["train/data_rng"], "train/data_rng", path: url.path),
                                  losses: losses, signature: signature)
        return (module, config, state)
    }
}
