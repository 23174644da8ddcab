import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

@Suite("Checkpoints of every quantizer")
struct CheckpointTests {
    /// Every quantizer of the registry, with its example configuration.
    nonisolated(unsafe) static let configs: [(String, [String: Any])] = QuantizerRegistry.kinds.map { ($0.name, $0.example) }

    @Test("the registry has the reference's 17 quantizers, each once, and every example builds")
    func everyModule() throws {
        let names = QuantizerRegistry.kinds.map(\.name)
        #expect(names.count == 17 && Set(names).count == 17)
        for kind in QuantizerRegistry.kinds { _ = try kind.build(kind.example) }
    }

    @Test("a checkpoint saved with files alongside is one atomic set: all are written, or none (an old pair stays)")
    func savedAlongside() throws {
        let dir = try TestSupport.scratchDirectory("vq-alongside")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 4, "codebook_size": 8])
        let q = try config.build()
        let ckpt = dir.appendingPathComponent("m.safetensors"), report = dir.appendingPathComponent("r.html")
        try QuantizerCheckpoint.save(q, config: config, to: ckpt, alongside: [(Data("one".utf8), report)])
        #expect(FileManager.default.contents(atPath: report.path) == Data("one".utf8))
        let before = try [ckpt, ModuleConfig.sidecar(of: ckpt), report].map { try Data(contentsOf: $0) }
        // A file of the set that cannot be written (its folder is missing; a name too long): nothing of the set is.
        let other = try ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 4, "codebook_size": 16]).build()
        for bad in [dir.appendingPathComponent("missing/r.html"), dir.appendingPathComponent(String(repeating: "r", count: 300))] {
            #expect(throws: (any Error).self) {
                try QuantizerCheckpoint.save(other, config: ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 4, "codebook_size": 16]),
                                             to: ckpt, alongside: [(Data("two".utf8), report), (Data("three".utf8), bad)])
            }
            #expect(try [ckpt, ModuleConfig.sidecar(of: ckpt), report].map { try Data(contentsOf: $0) } == before)
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["m.json", "m.safetensors", "r.html"])
        }
    }

    @Test("decode(encode(x)) has x's shape, and encoding is deterministic", arguments: configs.indices)
    func encodeDecode(_ i: Int) throws {
        let (name, kwargs) = Self.configs[i]
        let q = try ModuleConfig(module: name, kwargs: kwargs).build() as! any Quantizer
        let x = TestSupport.random([20, q.inputDim], seed: 5)
        let indices = q.encode(x)
        #expect(indices == q.encode(x), "\(name)")
        try q.validate(indices: indices)
        guard name != "RandomProjectionQuantizer" else { return }
        let y = try q.decode(indices)
        let expected = name == "BinaryMapper" ? [20, 256] : [20, q.inputDim]
        #expect(y.shape == expected, "\(name): decode(encode([20, \(q.inputDim)])) is \(y.shape)")
        #expect(y.allFinite)
    }

    @Test("every module of every quantizer that keeps a random generator saves it for resumption", arguments: configs.indices)
    func generatorsAreSaved(_ i: Int) throws {
        let (name, kwargs) = Self.configs[i]
        let q = try ModuleConfig(module: name, kwargs: kwargs).build()
        func visit(_ m: Module, _ path: String) {
            // A stored generator (found by reflection) that randomStates() would not save breaks exact resumption.
            let keeps = Mirror(reflecting: m).children.contains { $0.value is SeededGenerator }
            if keeps { #expect(m is RandomStateOwner, "\(name): \(path.isEmpty ? "the quantizer" : path) (\(type(of: m))) keeps a generator it does not save") }
            for (key, child) in m.children() { visit(child, path.isEmpty ? key : "\(path).\(key)") }
        }
        visit(q, "")
    }

    @Test("decode throws, never traps, on indices out of range or of the wrong shape", arguments: configs.indices)
    func decodeThrows(_ i: Int) throws {
        let (name, kwargs) = Self.configs[i]
        let q = try ModuleConfig(module: name, kwargs: kwargs).build() as! any Quantizer
        let unit = q.sequenceShape ?? []
        let x = TestSupport.random([2] + (unit.isEmpty ? [6] : unit) + [q.inputDim], seed: 5)
        let good = q.encode(x)
        for bad in [q.codebookSizes.max()! + 5, -2, Int(Int32.max)] {
            var scalars = good.scalars
            scalars[scalars.count / 2] = bad
            #expect(throws: DecodeError.self, "\(name): index \(bad)") { try q.decode(IndexTensor(scalars, shape: good.shape)) }
        }
        #expect(throws: DecodeError.self, "\(name): a shape of the wrong rank") { try q.decode(good.reshaped([1, 1] + good.shape)) }
    }

    @Test("save → load gives the same state and the same codes", arguments: configs.indices)
    func roundTrip(_ i: Int) throws {
        let (name, kwargs) = Self.configs[i]
        let config = ModuleConfig(module: name, kwargs: kwargs)
        let module = try config.build() as! any Quantizer
        module.train()
        if let vq = module as? VectorQuantizer { try vq.codebook.freeze(codes: [1, 3], head: 1) }
        if let rvq = module as? ResidualVQ { _ = rvq(TestSupport.random([2, 10, 8], seed: 1)); try rvq.layers[1].codebook.freeze(codes: [0]) }
        let dir = try TestSupport.scratchDirectory("vq-ckpt")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("model.safetensors")
        try QuantizerCheckpoint.save(module, config: config, to: url)
        let (loaded, cfg) = try QuantizerCheckpoint.load(url)
        #expect(cfg.module == name)
        #expect(loaded.stateDict() == module.stateDict())
        let x = TestSupport.random([20, 8], seed: 2)
        #expect((loaded as! any Quantizer).encode(x) == module.encode(x))
        if let vq = loaded as? VectorQuantizer { #expect(vq.codebook.frozenCodeIndices(head: 1) == [1, 3]) }
        if let rvq = loaded as? ResidualVQ { #expect(rvq.layers[1].codebook.frozenCodeIndices() == [0]) }
        // The config also travels in the checkpoint's metadata.
        try FileManager.default.removeItem(at: ModuleConfig.sidecar(of: url))
        #expect(try QuantizerCheckpoint.load(url).1.module == name)
    }

    @Test("loading into a different configuration lists every bad key and changes nothing")
    func mismatch() throws {
        let dir = try TestSupport.scratchDirectory("vq-ckpt")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("a.safetensors")
        try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16)).save(to: url)
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 32)
        c.codebookDim = 4
        let other = try VectorQuantizer(c)
        let before = other.stateDict()
        do {
            try other.load(from: url)
            Issue.record("a mismatched checkpoint loaded")
        } catch let e as CheckpointError {
            #expect(e.description.contains(url.path))
            guard case .stateMismatch(let missing, _, let mismatched) = e.reason else { Issue.record("\(e)"); return }
            #expect(missing.contains("project_in.weight"))
            #expect(mismatched.map(\.key).contains("_codebook.embed"))
        }
        #expect(other.stateDict() == before)
        #expect(throws: ConfigurationError.unknownModule("Nope")) { try ModuleConfig(module: "Nope", kwargs: [:]).build() }
    }
}

@Suite("One output type")
struct QuantizerOutputTests {
    static let stacks: Set<String> = ["ResidualVQ", "GroupedResidualVQ", "ResidualFSQ", "GroupedResidualFSQ", "ResidualLFQ", "GroupedResidualLFQ", "ResidualSimVQ"]

    @Test("forward(_:) of every quantizer in training: scalar finite loss, indices, and every layer's codes for stacks", arguments: CheckpointTests.configs.indices)
    func forward(_ i: Int) throws {
        let (name, kwargs) = CheckpointTests.configs[i]
        let q = try ModuleConfig(module: name, kwargs: kwargs).build() as! any Quantizer
        q.train()
        let channelFirst = ["LatentQuantize", "HierarchicalVQ"].contains(name)
        let x = TestSupport.random(channelFirst ? [2, q.inputDim, 20] : [2, 20, q.inputDim], seed: 8).requiringGradient()
        let out = q.forward(x)
        #expect(out.loss.count == 1 && out.loss.allFinite, "\(name): loss \(out.loss.shape)")
        #expect(out.quantized.allFinite)
        #expect(out.indices.shape.first == 2, "\(name): indices \(out.indices.shape)")
        if Self.stacks.contains(name) {
            let codes = try #require(out.allCodes, "\(name): no per-layer codes")
            // Each layer's codes are those of its indices: decoding them again gives the same values.
            #expect(codes.allFinite && codes.shape.dropLast().contains(2))
        } else {
            #expect(out.allCodes == nil)
        }
        (out.loss + out.quantized.sum()).backward()
        #expect(q.trainableParameters().allSatisfy { $0.grad?.allFinite ?? true })
    }
}

/// Saving needs no hand-written keywords, and a configuration that does not describe the module is refused at save time.
@Suite("Saving with the module's own configuration")
struct SaveConfigurationTests {
    @Test("a VectorQuantizer saves itself; the typed configuration works too; both load with the same codes")
    func savesItself() throws {
        let dir = try TestSupport.scratchDirectory("save")
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 32)
        (c.heads, c.separateCodebookPerHead, c.useCosineSimilarity) = (2, true, true)
        let vq = try VectorQuantizer(c)
        try vq.codebook.freeze(codes: [3])
        let a = dir.appendingPathComponent("a.safetensors"), b = dir.appendingPathComponent("b.safetensors")
        try QuantizerCheckpoint.save(vq, to: a)
        try QuantizerCheckpoint.save(vq, config: c, to: b)
        for url in [a, b] {
            let (q, _) = try QuantizerCheckpoint.loadQuantizer(url)
            let loaded = try #require(q as? VectorQuantizer)
            #expect(loaded.codes == vq.codes && loaded.configuration.heads == 2 && loaded.codebook.frozenCodeIndices() == [3])
        }
    }

    @Test("a configuration that does not fit the tensors is refused before anything is written")
    func refusesMismatch() throws {
        let dir = try TestSupport.scratchDirectory("save")
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 64))
        let url = dir.appendingPathComponent("m.safetensors")
        for wrong in [ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 32]),
                      ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 64, "codebook_dim": 4]),
                      ModuleConfig(module: "FSQ", kwargs: ["levels": [8, 8], "dim": 8])] {
            #expect(throws: ConfigurationError.self) { try QuantizerCheckpoint.save(vq, config: wrong, to: url) }
            #expect(!FileManager.default.fileExists(atPath: url.path))
        }
        try QuantizerCheckpoint.save(vq, config: ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 64]), to: url)
        #expect(FileManager.default.fileExists(atPath: url.path))
    }

    @Test("a shared codebook saved by safetensors' save_model (each shared tensor once, the others named in the metadata) loads")
    func sharedTensorsNamedInMetadata() throws {
        let kw: [String: Any] = ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "shared_codebook": true]
        let trained = try ResidualVQ(ResidualVQConfiguration(referenceKwargs: kw))
        _ = trained(TestSupport.random([2, 20, 8], seed: 4))
        trained.eval()
        // What save_model writes: layer 0's tensors, and for every other layer's the name it shares.
        var file = SafeTensorsFile(metadata: ["format": "pt"])
        let state = trained.stateDict()
        for (key, t) in state {
            if key.hasPrefix("layers.0.") || !key.hasPrefix("layers.") {
                file.tensors[key] = .float(t)
            } else {
                let parts = key.split(separator: ".", maxSplits: 2)
                let own = "layers.0." + parts[2]
                if state[own] != nil && key.contains("_codebook.") && !key.contains("frozen") { file.metadata[key] = own } else { file.tensors[key] = .float(t) }
            }
        }
        #expect(file.metadata.count > 4, "no shared tensor named: \(file.metadata)")
        let loaded = try ResidualVQ(ResidualVQConfiguration(referenceKwargs: kw))
        try loaded.load(file: file, path: "shared.safetensors")
        #expect(loaded.stateDict() == state)
        let x = TestSupport.random([1, 30, 8], seed: 5)
        loaded.eval()
        #expect(loaded(x).indices == trained(x).indices)
        // A name whose tensor is absent stays missing; a metadata entry that names no key of the module is not a key.
        var broken = file
        broken.tensors["layers.0._codebook.embed"] = nil
        broken.metadata["note"] = "layers.0._codebook.cluster_size"
        #expect(throws: CheckpointError.self) { try ResidualVQ(ResidualVQConfiguration(referenceKwargs: kw)).load(file: broken, path: "b.safetensors") }
        var noted = file
        noted.metadata["note"] = "layers.0._codebook.cluster_size"
        try ResidualVQ(ResidualVQConfiguration(referenceKwargs: kw)).load(file: noted, path: "n.safetensors")
    }
}
