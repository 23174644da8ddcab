import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// ``QuantizerCheckpoint/export(_:config:to:)``: a checkpoint as the reference's `state_dict()` holds it, for
/// PyTorch's strict `load_state_dict` (`Scripts/crosscheck_pytorch.py` loads every kind's export strictly in PyTorch).
@Suite("Exporting a checkpoint for PyTorch")
struct ExportTests {
    /// Every kind's example with this library's `seed` spelt out (it must not reach the export's keywords); the
    /// random-projection quantizer in the reference's layout (its own has no PyTorch module).
    nonisolated(unsafe) static let configs: [(String, [String: Any])] = QuantizerRegistry.kinds.map { kind in
        var kwargs = kind.example
        kwargs["seed"] = 7
        if kind.name == "RandomProjectionQuantizer" { kwargs["reference_layout"] = true }
        return (kind.name, kwargs)
    }

    @Test("every kind: no key of this library's state, no keyword of its own; loads back with the same codes and nothing frozen",
          arguments: configs.indices)
    func everyKind(_ i: Int) throws {
        let (name, kwargs) = Self.configs[i]
        let config = ModuleConfig(module: name, kwargs: kwargs)
        let q = try config.build() as! any Quantizer
        q.train()
        let x = TestSupport.random([40, q.inputDim], seed: 8)
        if !q.isInitialised { _ = q.forward(q.sequenceShape.map { x.reshaped([-1] + $0 + [q.inputDim]) } ?? x) }
        // Freeze state that the export must leave out (where there are learned codes).
        for book in q.learnedCodebooks {
            try book.freeze(codes: [0, 1])
            try book.freeze(dimensions: [0], codes: [2])
        }
        // This library's state, and batch statistics still at their "no batch yet" NaN (the reference has no buffer then).
        let ours = Set(q.namedParameters().filter { key, p in
            p.isLibraryState || ((key.hasSuffix("batch_mean") || key.hasSuffix("batch_variance")) && p.value.scalars.allSatisfy(\.isNaN))
        }.map(\.0)).intersection(q.stateDict().keys)
        let dir = try TestSupport.scratchDirectory("vq-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("torch.safetensors")
        let left = try QuantizerCheckpoint.export(q, config: config, to: url)
        #expect(left == ours.sorted(), "\(name)")
        if !q.learnedCodebooks.isEmpty { #expect(left.contains { $0.hasSuffix("frozen_codes") }, "\(name): \(left)") }

        let file = try SafeTensorsFile.read(contentsOf: url)
        #expect(Set(file.tensors.keys) == Set(q.stateDict().keys).subtracting(ours), "\(name)")
        #expect(file.metadata["frozen_keys"] == nil)
        let kind = try #require(QuantizerRegistry.kind(named: name))
        let sidecar = try ModuleConfig.parse(Data(contentsOf: ModuleConfig.sidecar(of: url)), path: "sidecar")
        #expect(Set(sidecar.kwargs.keys) == Set(kwargs.keys).subtracting(kind.ownKeywords), "\(name): \(sidecar.kwargs.keys.sorted())")
        #expect(sidecar.kwargs["seed"] == nil && sidecar.module == name)

        // Back here: the reference's state as it was, this library's at its defaults (nothing frozen), the same codes.
        let (back, _) = try QuantizerCheckpoint.load(url)
        let b = back as! any Quantizer
        for (key, t) in q.stateDict() where !ours.contains(key) { #expect(back.stateDict()[key] == t, "\(name): \(key)") }
        for book in b.learnedCodebooks { #expect(!book.frozenMask.contains(true) && book.frozenComponentCount == 0, "\(name)") }
        b.eval()
        q.eval()
        let batch = q.sequenceShape.map { x.reshaped([-1] + $0 + [q.inputDim]) } ?? x
        #expect(b.encode(batch) == q.encode(batch), "\(name)")
    }

    @Test("an affine codebook's batch statistics: left out before its first batch (no buffer in the reference yet), exported after")
    func affineStatistics() throws {
        let config = ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "affine_param": true])
        let q = try config.build() as! VectorQuantizer
        let dir = try TestSupport.scratchDirectory("vq-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("affine.safetensors")
        var left = try QuantizerCheckpoint.export(q, config: config, to: url)
        #expect(left.contains("_codebook.batch_mean") && left.contains("_codebook.batch_variance"))
        #expect(try SafeTensorsFile.read(contentsOf: url).tensors["_codebook.batch_mean"] == nil)
        q.train()
        _ = q.forward(TestSupport.random([2, 20, 8], seed: 9))
        left = try QuantizerCheckpoint.export(q, config: config, to: url)
        #expect(!left.contains { $0.contains("batch_") } && left.contains("_codebook.frozen_codes"))
        let file = try SafeTensorsFile.read(contentsOf: url)
        #expect(file.tensors["_codebook.batch_mean"] != nil && file.tensors["_codebook.batch_variance"] != nil)
        let (back, _) = try QuantizerCheckpoint.load(url)
        #expect(back.stateDict()["_codebook.batch_variance"] == q.stateDict()["_codebook.batch_variance"])
    }

    /// Cross-check seed 25, draw 45: `ResidualFSQ(soft_clamp_input_value = 5.0)` trained by the tool came back as
    /// `5` in its sidecar (JSONSerialization drops the point), and PyTorch's ResidualFSQ raises for an int there.
    @Test("a configuration's numbers keep their kind through a sidecar: 5.0 stays 5.0, 16 stays 16, flags stay flags")
    func numberKinds() throws {
        let parsed = try ModuleConfig.parse(Data(#"{"module": "ResidualFSQ", "kwargs": {"levels": [8, 5, 5], "num_quantizers": 3, "dim": 16, "soft_clamp_input_value": 5.0, "bound_hard_clamp": false, "quantize_dropout_cutoff_index": 0, "seed": 3}}"#.utf8))
        let text = String(decoding: try parsed.serialized(), as: UTF8.self)
        #expect(text.contains(#""soft_clamp_input_value" : 5.0"#) && text.contains(#""dim" : 16,"#) && text.contains(#""bound_hard_clamp" : false"#), "\(text)")
        let again = try ModuleConfig.parse(try parsed.serialized())
        #expect(try again.serialized() == parsed.serialized())
        // Typed configurations write their Float keywords as floats and their integers as integers.
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.decay = 1
        let written = String(decoding: try ModuleConfig(module: "VectorQuantize", kwargs: c.referenceKwargs).serialized(), as: UTF8.self)
        #expect(written.contains(#""decay" : 1.0"#) && written.contains(#""codebook_size" : 16,"#), "\(written)")
        #expect(throws: (any Error).self) { try ModuleConfig(module: "VectorQuantize", kwargs: ["decay": Double.nan]).serialized() }
    }

    @Test("a random-projection quantizer in this library's layout with several codebooks is refused, nothing written; with one it exports")
    func randomProjectionOwnLayout() throws {
        let kind = try #require(QuantizerRegistry.kind(named: "RandomProjectionQuantizer"))
        let config = ModuleConfig(module: kind.name, kwargs: kind.example)
        let q = try config.build()
        let dir = try TestSupport.scratchDirectory("vq-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("rpq.safetensors")
        #expect(throws: ConfigurationError.self) { try QuantizerCheckpoint.export(q, config: config, to: url) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
        // One codebook: the two layouts are the same module (h·e = e); exported, and loaded back it encodes the same
        // (the cross-check loads it in PyTorch strictly; it was refused, seed 22 draw 282).
        let one = ModuleConfig(module: kind.name, kwargs: kind.example.merging(["num_codebooks": 1]) { $1 })
        let single = try one.build() as! any Quantizer
        try QuantizerCheckpoint.export(single, config: one, to: url)
        let (back, _) = try QuantizerCheckpoint.load(url)
        let x = TestSupport.random([10, single.inputDim], seed: 2)
        #expect((back as! any Quantizer).encode(x) == single.encode(x))
        #expect(try ModuleConfig.read(contentsOf: dir.appendingPathComponent("rpq.json")).kwargs["reference_layout"] == nil)
    }
}
