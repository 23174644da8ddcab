import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
import VectorQuantize

/// Checkpoints other programs write around a quantizer: a whole model's state dict with the quantizer's tensors
/// under a prefix (`model.quantizer.…`, DDP's `module.…`), beside the model's own. Every quantizer of the registry is
/// read from such a file with the codes of its own checkpoint; several copies are refused naming the prefixes; and
/// `vq freeze` never rewrites such a file in place (it would keep only the quantizer's tensors).
@Suite("vq: a quantizer inside a model's checkpoint", .serialized)
struct EmbeddedCheckpointTests {
    let dir = VQProcess.temporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Writes `tensors` as a safetensors file (and the configuration beside it), as another program would.
    func write(_ tensors: [String: Tensor], config: ModuleConfig, to name: String) throws {
        var file = SafeTensorsFile(metadata: ["format": "pt"])
        for (key, t) in tensors { file.tensors[key] = .float(t) }
        try file.write(to: URL(fileURLWithPath: path(name)))
        try config.write(to: ModuleConfig.sidecar(of: URL(fileURLWithPath: path(name))))
    }

    func bytes(_ name: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path(name))) }

    @Test("every quantizer is read under its prefix, with its own codes; two copies are refused; freeze in place is refused",
          arguments: QuantizerRegistry.kinds.indices)
    func embedded(_ i: Int) throws {
        let kind = QuantizerRegistry.kinds[i]
        let config = ModuleConfig(module: kind.name, kwargs: kind.example)
        let q = try kind.build(kind.example)
        let state = q.stateDict()
        try #require(!state.isEmpty || kind.name == "BinaryMapper" || kind.name == "FSQ" || kind.name == "LFQ")
        guard !state.isEmpty else { return }   // nothing stored: nothing to find under a prefix
        let model: [String: Tensor] = ["net.0.weight": TestSupport.random([4, 3], seed: 1), "net.2.bias": TestSupport.random([3], seed: 2)]
        try write(state, config: config, to: "own.safetensors")
        for prefix in ["model.quantizer.", "module."] {
            try write(model.merging(state.map { (prefix + $0.key, $0.value) }) { a, _ in a }, config: config, to: "model.safetensors")
            let dim = kind.name == "BinaryMapper" ? 8 : q.inputDim
            try NumPyFile.write(.float(TestSupport.random(kind.name == "HierarchicalVQ" ? [20, dim] : [12, dim], seed: 3)),
                                to: URL(fileURLWithPath: path("x.npy")))
            let own = try VQProcess.run(["encode", "--checkpoint", path("own.safetensors"), "--input", path("x.npy"), "--output", path("a.npy")])
            let inner = try VQProcess.run(["encode", "--checkpoint", path("model.safetensors"), "--input", path("x.npy"), "--output", path("b.npy")])
            #expect(own.status == 0 && inner.status == 0, "\(kind.name) \(prefix): \(own.stderr) \(inner.stderr)")
            if own.status == 0 && inner.status == 0 { #expect(try bytes("a.npy") == bytes("b.npy"), "\(kind.name) \(prefix)") }
            // In place, the model's other tensors would be lost: refused, the file as it was.
            if !q.learnedCodebooks.isEmpty {
                let before = try bytes("model.safetensors")
                let r = try VQProcess.run(["freeze", path("model.safetensors"), "--codes", "0"])
                #expect(r.status != 0 && r.stderr.contains("besides the quantizer's"), "\(kind.name): \(r.stderr)")
                #expect(try bytes("model.safetensors") == before)
                let out = try VQProcess.run(["freeze", path("model.safetensors"), "--codes", "0", "--output", path("frozen.safetensors")])
                #expect(out.status == 0, "\(kind.name): \(out.stderr)")
            }
        }
        // Two copies (a model and its EMA twin): which one is meant cannot be told.
        try write(model.merging(state.map { ("model.vq." + $0.key, $0.value) } + state.map { ("ema.vq." + $0.key, $0.value) }) { a, _ in a },
                  config: config, to: "two.safetensors")
        let r = try VQProcess.run(["inspect", path("two.safetensors")])
        #expect(r.status != 0 && r.stderr.contains("'ema.vq.'") && r.stderr.contains("'model.vq.'"), "\(kind.name): \(r.stderr)")
    }
}

extension EmbeddedCheckpointTests {
    /// Found by `vq-fuzz --commands` (seed 4005): a HierarchicalVQ's checkpoint read with a VectorQuantize's configuration
    /// holds a VectorQuantize's tensors under `vq.`, whose shapes do not fit; the load said it read them there (a log
    /// line) and then refused — two lines for one refusal. Now the prefix is said only once the load has succeeded.
    @Test("a load refused after finding the tensors under a prefix says only why: one error line, no log line before it")
    func refusedUnderPrefix() throws {
        let hvq = QuantizerRegistry.kind(named: "HierarchicalVQ")!, vq = QuantizerRegistry.kind(named: "VectorQuantize")!
        let config = ModuleConfig(module: hvq.name, kwargs: hvq.example)
        try QuantizerCheckpoint.save(try hvq.build(hvq.example), config: config, to: URL(fileURLWithPath: path("h.safetensors")))
        try ModuleConfig(module: vq.name, kwargs: vq.example).write(to: URL(fileURLWithPath: path("vq.json")))
        let r = try VQProcess.run(["inspect", path("h.safetensors"), "--config", path("vq.json")])
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1 && r.stderr.hasPrefix("vq: error: "), "\(r.stderr)")
    }
}
