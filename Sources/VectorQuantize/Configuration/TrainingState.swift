import Foundation
import VQNN
import VQTensor

/// A resumable training state that does not fit, or is damaged; the description names the file.
public struct TrainingStateError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// Everything `vq train` needs to continue a run exactly where it stopped: the model (parameters, buffers,
/// every random generator), the position in the data (the shuffled order, the cursor and the shuffling
/// generator), the step and the losses so far. Written atomically every `--checkpoint-every` steps; a run
/// resumed from it with `--resume` ends with a checkpoint bit-identical to an uninterrupted run.
///
/// One safetensors file: `model/<key>` (the state dict), `rng/<module path>` (four words each, as Int64
/// bit patterns), `train/order`, `train/losses`, `train/data_rng`; metadata `config_json`, `step`,
/// `cursor`, `signature` (the data options that must not change between the run and its resumption),
/// `options` (the model options the run was started with, as JSON) and `digest` (of every tensor and every
/// other metadata entry, so a damaged file is refused instead of resumed).
public struct TrainingState {
    public var step: Int
    public var cursor: Int
    public var order: [Int]
    public var dataRNG: SeededGenerator
    public var losses: [Float]
    public var signature: String
    /// The model options of the run's first start (`--codebook-size`, `--residual`, …), by option name.
    public var options: [String: String] = [:]
    /// Adam's moments and step counts (`optim/<parameter>/m`, `/v`, `/steps`) for parameters learned by gradient.
    public var optimizerTensors: [String: StoredTensor] = [:]

    public static let format = "vq-train-state-2"

    public init(step: Int, cursor: Int, order: [Int], dataRNG: SeededGenerator, losses: [Float], signature: String,
                options: [String: String] = [:]) {
        (self.step, self.cursor, self.order, self.dataRNG, self.losses, self.signature, self.options) =
            (step, cursor, order, dataRNG, losses, signature, options)
    }

    static func words(_ g: SeededGenerator) -> StoredTensor { .integer(IndexTensor(g.state.map { Int(Int64(bitPattern: $0)) })) }

    static func generator(_ t: StoredTensor?, _ key: String, path: String) throws -> SeededGenerator {
        guard let w = t?.asIndices, w.count == 4, w.scalars.contains(where: { $0 != 0 }) else {
            throw TrainingStateError("\(path): \(key) is not a generator state")
        }
        return SeededGenerator(state: w.scalars.map { UInt64(bitPattern: Int64($0)) })
    }

    public func write(module: Module, config: ModuleConfig, optimizer: Adam? = nil, to url: URL) throws {
        var file = SafeTensorsFile(metadata: [
            "format": Self.format, "config_json": String(decoding: try config.serialized(), as: UTF8.self),
            "step": String(step), "cursor": String(cursor), "signature": signature,
            "options": String(decoding: try JSONSerialization.data(withJSONObject: options, options: [.sortedKeys]), as: UTF8.self),
        ])
        for (key, t) in module.stateDict() { file.tensors["model/" + key] = .float(t) }
        for (path, g) in module.randomStates() { file.tensors["rng/" + path] = Self.words(g) }
        file.tensors["train/order"] = .integer(IndexTensor(order))
        file.tensors["train/losses"] = .float(Tensor(losses))
        file.tensors["train/data_rng"] = Self.words(dataRNG)
        if let optimizer {
            for (name, p) in module.namedTrainableParameters() {
                guard let (m, v) = optimizer.moments(of: p) else { continue }
                file.tensors["optim/\(name)/m"] = .float(Tensor(m, shape: p.shape))
                file.tensors["optim/\(name)/v"] = .float(Tensor(v, shape: p.shape))
                file.tensors["optim/\(name)/steps"] = .integer(IndexTensor([optimizer.stepCount(of: p)]))
            }
        }
        file.metadata["digest"] = Self.digest(file)
        try file.write(to: url)
    }

    /// A 64-bit digest of every tensor (name, shape, values) and every metadata entry but the digest itself,
    /// in sorted order: any flipped bit of a value changes it.
    public static func digest(_ file: SafeTensorsFile) -> String {
        var h = StateDigest()
        for (k, v) in file.metadata.sorted(by: { $0.key < $1.key }) where k != "digest" { h.add(k); h.add(v) }
        for (k, t) in file.tensors.sorted(by: { $0.key < $1.key }) {
            h.add(k)
            switch t {
            case .float(let f):
                h.add(f.shape.map(UInt64.init))
                h.add(f.scalars.map { UInt64($0.bitPattern) })
            case .integer(let i):
                h.add([1] + i.shape.map(UInt64.init))
                h.add(i.scalars.map { UInt64(bitPattern: Int64($0)) })
            }
        }
        return String(h.value, radix: 16)
    }

    /// Restores Adam's moments of every parameter learned by gradient (a parameter without them had not
    /// been updated yet); moments that do not fit are a damaged state, and then nothing is restored.
    public func restore(_ optimizer: Adam, of module: Module, path: String) throws {
        var found: [(Parameter, m: [Float], v: [Float], steps: Int)] = []
        for (name, p) in module.namedTrainableParameters() {
            guard let m = optimizerTensors["optim/\(name)/m"]?.asFloat, let v = optimizerTensors["optim/\(name)/v"]?.asFloat,
                  let steps = optimizerTensors["optim/\(name)/steps"]?.asIndices?.scalars.first else { continue }
            // A parameter takes at most one of Adam's steps per training step of the run.
            guard steps <= step else {
                throw TrainingStateError("\(path): the optimizer state of \(name) is damaged (\(steps) steps of Adam in a run of \(step) steps)")
            }
            do { try optimizer.checkRestorable(p, m: m.scalars, v: v.scalars, steps: steps) } catch let e as OptimizerStateError {
                throw TrainingStateError("\(path): the optimizer state of \(name) is damaged (\(e))")
            }
            found.append((p, m.scalars, v.scalars, steps))
        }
        for (p, m, v, steps) in found { try optimizer.restore(p, m: m, v: v, steps: steps) }
    }

    /// Reads a state file; the model is rebuilt from its own configuration.
    public static func read(_ url: URL) throws -> (any Quantizer, ModuleConfig, TrainingState) {
        guard FileManager.default.fileExists(atPath: url.path) else { throw TrainingStateError("\(url.path): no such file") }
        let file = try SafeTensorsFile.read(contentsOf: url)
        let m = file.metadata
        guard m["format"] == format, let json = m["config_json"], let step = m["step"].flatMap({ Int($0) }),
              let cursor = m["cursor"].flatMap({ Int($0) }), let signature = m["signature"] else {
            throw TrainingStateError("\(url.path): not a vq train state of this version (write one with --checkpoint-every)")
        }
        guard m["digest"] == digest(file) else {
            throw TrainingStateError("\(url.path): the state is damaged (its contents do not match their digest)")
        }
        let options = (m["options"].flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) } as? [String: String]) ?? [:]
        let config = try ModuleConfig.parse(Data(json.utf8), path: url.path + " (metadata)")
        guard let module = try config.build() as? any Quantizer else { throw TrainingStateError("\(url.path): \(config.module) is not a quantizer") }
        var model: [String: Tensor] = [:], rngs: [String: SeededGenerator] = [:]
        for (key, t) in file.tensors {
            if key.hasPrefix("model/") { model[String(key.dropFirst(6))] = t.asFloat }
            if key.hasPrefix("rng/") { rngs[String(key.dropFirst(4))] = try generator(t, key, path: url.path) }
        }
        do {
            try module.load(stateDict: model)
            try module.setRandomStates(rngs)
        } catch let e as ModuleError {
            throw TrainingStateError("\(url.path): \(e)")
        }
        guard let order = file.tensors["train/order"]?.asIndices?.scalars, let losses = file.tensors["train/losses"]?.asFloat.scalars,
              losses.count == step, cursor >= 0, cursor <= order.count, Set(order).count == order.count,
              order.allSatisfy({ $0 >= 0 && $0 < order.count })
        else { throw TrainingStateError("\(url.path): the data position is damaged") }
        var state = TrainingState(step: step, cursor: cursor, order: order, dataRNG: try generator(file.tensors["train/data_rng"], "train/data_rng", path: url.path),
                                  losses: losses, signature: signature, options: options)
        state.optimizerTensors = file.tensors.filter { $0.key.hasPrefix("optim/") }
        return (module, config, state)
    }
}

/// A 64-bit multiply–xorshift digest (not cryptographic: it detects damage, not tampering).
public struct StateDigest {
    public init() {}
    public private(set) var value: UInt64 = 0x9E37_79B9_7F4A_7C15

    public mutating func mix(_ w: UInt64) {
        value = (value ^ w) &* 0xBF58_476D_1CE4_E5B9
        value ^= value >> 31
        value = value &* 0x94D0_49BB_1331_11EB
        value ^= value >> 29
    }

    public mutating func add(_ words: [UInt64]) {
        mix(UInt64(words.count))
        for w in words { mix(w) }
    }

    public mutating func add(_ s: String) { add(Array(s.utf8).map(UInt64.init)) }
}
