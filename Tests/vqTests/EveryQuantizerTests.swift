import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
import VectorQuantize

/// Every quantizer through every command, as a new user would meet them: a checkpoint built from a
/// configuration, then `inspect`, `encode`, `decode`, `freeze` and `train --init`. Each works and
/// round-trips, or is refused in one line with every file unchanged — never a trap.
@Suite("vq: every quantizer through every command", .serialized)
struct EveryQuantizerTests {
    /// Every registry quantizer's example (the README table's rows), then layout and option variants.
    nonisolated(unsafe) static let cases: [(String, [String: Any])] = QuantizerRegistry.kinds.map { ($0.name, $0.example) } + [
        ("VectorQuantize", ["dim": 8, "codebook_size": 16]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "heads": 1, "separate_codebook_per_head": true]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "heads": 9, "codebook_dim": 4]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "accept_image_fmap": true]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "accept_3d_fmap": true]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "channel_last": false]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "codebook_dim": 4]),
        ("ResidualVQ", ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "accept_image_fmap": true]),
        ("GroupedResidualVQ", ["dim": 8, "groups": 2, "num_quantizers": 2, "codebook_size": 16, "accept_image_fmap": true]),
        ("FSQ", ["levels": [8, 5, 5]]),
        ("HierarchicalVQ", ["dim": 8, "codebook_size": 16, "scales": [1, 4, 16], "kmeans_init": false, "channel_first": false]),
        ("HierarchicalVQ", ["dim": 8, "codebook_size": 16, "scales": [1, 2, 4], "kmeans_init": false, "accept_image_fmap": true]),
        ("SimVQ", ["dim": 8, "codebook_size": 16, "channel_first": true]),
        ("ResidualSimVQ", ["dim": 8, "codebook_size": 16, "num_quantizers": 2, "channel_first": true]),
        ("FSQ", ["levels": [8, 5, 5], "dim": 8, "channel_first": true]),
        ("LFQ", ["dim": 8, "codebook_size": 64, "channel_first": true]),
        ("ResidualFSQ", ["levels": [8, 5, 5], "num_quantizers": 2, "dim": 8, "is_channel_first": true]),
        ("FSP", ["levels": [8, 5, 5], "dim": 8, "channel_first": true]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "learnable_codebook": true, "ema_update": false]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "learnable_codebook": true, "ema_update": false,
                            "in_place_codebook_optimizer": "partial(torch.optim.Adam, lr=0.01)"]),
        ("ResidualVQ", ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "quantize_dropout": true, "quantize_dropout_cutoff_index": 2]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "kmeans_init": true]),
    ]

    let dir = VQProcess.temporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Runs `args`: either it succeeds, or it fails with one `vq: error:` line, no trap, and no file written.
    @discardableResult
    func run(_ args: [String], mustSucceed: Bool?, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> VQProcess.Result {
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
        let r = try VQProcess.run(args)
        #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Precondition failed") && !r.stderr.contains("crashed"),
                "\(label): a trap: \(r.stderr.prefix(400))", sourceLocation: sourceLocation)
        if r.status != 0 {
            let lines = r.stderr.split(separator: "\n").filter { !$0.contains(" warning ") }
            #expect(lines.count == 1 && lines[0].hasPrefix("vq: error: "), "\(label): not one error line: \(r.stderr.prefix(400))", sourceLocation: sourceLocation)
            let after = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
            #expect(after == before, "\(label): a refused command wrote \(after.subtracting(before))", sourceLocation: sourceLocation)
        }
        if let mustSucceed { #expect((r.status == 0) == mustSucceed, "\(label): exit \(r.status): \(r.stderr.prefix(400))", sourceLocation: sourceLocation) }
        return r
    }

    @Test("build → inspect → encode → decode → freeze → train --init: works and round-trips, or one line and nothing written", arguments: cases.indices)
    func matrix(_ i: Int) throws {
        let (name, kwargs) = Self.cases[i]
        let label = "\(name) \(kwargs)"
        let config = ModuleConfig(module: name, kwargs: kwargs)
        let q = try config.build() as! any Quantizer
        var ckpt = path("q.safetensors")
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: ckpt))
        let x = TestSupport.random([(q.sequenceShape?.reduce(1, *) ?? 16) * 4, q.inputDim], seed: 3)
        try NumPyFile.write(.float(x), to: URL(fileURLWithPath: path("x.npy")))
        if !q.isInitialised {
            // k-means has not run: codes are placeholders, so nothing is encoded with them until training.
            try run(["inspect", ckpt, "--input", path("x.npy")], mustSucceed: false, label + " inspect uninitialised")
            try run(["encode", "--checkpoint", ckpt, "--input", path("x.npy"), "--output", path("i.npy")], mustSucceed: false, label + " encode uninitialised")
            try run(["compare", ckpt, ckpt, "--input", path("x.npy")], mustSucceed: false, label + " compare uninitialised")
            try run(["freeze", ckpt, "--codes", "0", "--output", path("f.safetensors")], mustSucceed: false, label + " freeze uninitialised")
            try run(["train", "--input", path("x.npy"), "--init", ckpt, "--steps", "1", "--output", path("k.safetensors")], mustSucceed: true, label + " k-means")
            ckpt = path("k.safetensors")
        }
        try run(["inspect", ckpt, "--input", path("x.npy")], mustSucceed: true, label + " inspect")
        try run(["encode", "--checkpoint", ckpt, "--input", path("x.npy"), "--output", path("i.npy")], mustSucceed: true, label + " encode")
        // No vectors: encoded to no indices, decoded to no vectors, inspected as such — exit 0 every time.
        try NumPyFile.write(.float(Tensor.zeros([0, q.inputDim])), to: URL(fileURLWithPath: path("e.npy")))
        try run(["encode", "--checkpoint", ckpt, "--input", path("e.npy"), "--output", path("ei.npy")], mustSucceed: true, label + " encode nothing")
        #expect(try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("ei.npy"))).shape.contains(0), "\(label): indices of no vectors")
        try run(["inspect", ckpt, "--input", path("e.npy")], mustSucceed: true, label + " inspect nothing")
        if name != "RandomProjectionQuantizer" {
            try run(["decode", "--checkpoint", ckpt, "--input", path("ei.npy"), "--output", path("ey.npy")], mustSucceed: true, label + " decode nothing")
            #expect(try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("ey.npy"))).shape.contains(0), "\(label): vectors of no indices")
        }

        // Decoding gives what the library gives for the same checkpoint (the forward's codes), bit for bit.
        let (loaded, _) = try QuantizerCheckpoint.load(URL(fileURLWithPath: ckpt))
        let lq = loaded as! any Quantizer
        let decodable = name != "RandomProjectionQuantizer"
        try run(["decode", "--checkpoint", ckpt, "--input", path("i.npy"), "--output", path("y.npy")], mustSucceed: decodable, label + " decode")
        if decodable {
            let indices = try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("i.npy"))).asIndices!
            let unit = q.sequenceShape?.reduce(1, *) ?? 1
            let batch = unit > 1 ? x.reshaped([x.shape[0] / unit] + q.sequenceShape! + [q.inputDim]) : x
            #expect(indices == lq.encode(batch), "\(label): the tool's indices differ from the library's")
            let y = try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("y.npy"))).asFloat
            let expected = try lq.decode(lq.encode(batch))
            #expect(y.scalars == expected.scalars && y.count == x.count / q.inputDim * q.decodedDim, "\(label): decode differs from the library's")
        }

        // Freezing: where there are learned codes; refused where there are none.
        let hasCodes = !q.learnedCodebooks.isEmpty
        try run(["freeze", ckpt, "--codes", "0", "--output", path("f.safetensors")], mustSucceed: hasCodes, label + " freeze")
        if hasCodes {
            let r = try run(["inspect", path("f.safetensors")], mustSucceed: true, label + " inspect frozen")
            #expect(r.stdout.contains("frozen 1"), "\(label): \(r.stdout)")
        }

        // Exporting for PyTorch: every kind but a random projection in this library's layout; the export holds none of
        // this library's state (the frozen code above included) and encodes as the checkpoint does.
        let source = hasCodes ? path("f.safetensors") : ckpt
        let ownLayout = (lq as? RandomProjectionQuantizer).map { !$0.configuration.referenceLayout } ?? false
        try run(["export", source, "--output", path("p.safetensors")], mustSucceed: !ownLayout, label + " export")
        if !ownLayout {
            let exported = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path("p.safetensors")))
            let ours = Set(lq.namedParameters().filter { $0.1.isLibraryState }.map(\.0))
            #expect(ours.isDisjoint(with: exported.tensors.keys), "\(label): \(exported.tensors.keys.sorted())")
            try run(["encode", "--checkpoint", path("p.safetensors"), "--input", path("x.npy"), "--output", path("pi.npy")], mustSucceed: true, label + " encode export")
            #expect(try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("pi.npy"))).asIndices
                    == NumPyFile.read(contentsOf: URL(fileURLWithPath: path("i.npy"))).asIndices, "\(label): the export encodes otherwise")
            if hasCodes {
                let r = try run(["inspect", path("p.safetensors")], mustSucceed: true, label + " inspect export")
                #expect(r.stdout.contains("frozen 0") && !r.stdout.contains("frozen 1"), "\(label): \(r.stdout)")
            }
        }

        // Training: what the registry says — trained (something learned changed), or refused before writing.
        let method = TrainingMethod.of(q, kind: QuantizerRegistry.kind(named: name)!)
        try run(["train", "--input", path("x.npy"), "--init", ckpt, "--steps", "3", "--batch-size", "32", "--output", path("t.safetensors")],
                mustSucceed: method == .fromVectors, label + " train")
        if method == .fromVectors {
            let (trained, _) = try QuantizerCheckpoint.load(URL(fileURLWithPath: path("t.safetensors")))
            #expect(trained.stateDict() != loaded.stateDict(), "\(label): vq train exited 0 with nothing trained")
        }

        // Comparing two stages: the checkpoint with itself (nothing changed), and with the trained one (frozen codes held).
        if decodable {
            var r = try run(["compare", ckpt, ckpt, "--input", path("x.npy"), "--json"], mustSucceed: true, label + " compare")
            let same = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            #expect(same?["churn"] as? Double == 0 && same?["mseOld"] as? Double == same?["mseNew"] as? Double, "\(label): \(r.stdout)")
            #expect((same?["books"] as? [Any])?.count ?? -1 >= q.learnedCodebooks.count, "\(label): \(r.stdout)")
            if method == .fromVectors && hasCodes {
                try run(["train", "--input", path("x.npy"), "--init", path("f.safetensors"), "--steps", "3", "--batch-size", "32",
                         "--output", path("t2.safetensors")], mustSucceed: true, label + " train frozen")
                r = try run(["compare", path("f.safetensors"), path("t2.safetensors"), "--input", path("x.npy")], mustSucceed: true, label + " compare frozen")
                #expect(r.stdout.contains("bit-identical"), "\(label): \(r.stdout)")
            }
        }
    }

    @Test("vq train --config: every quantizer from its configuration alone — trained, written as is, or refused in one line",
          arguments: cases.indices)
    func trainFromConfiguration(_ i: Int) throws {
        let (name, example) = Self.cases[i]
        let kind = QuantizerRegistry.kind(named: name)!
        let q = try kind.build(example)
        var kwargs = example
        if kind.keywords.contains("dim") { kwargs["dim"] = nil }   // the input's dimension, by default
        let label = "\(name) \(kwargs)"
        try ModuleConfig(module: name, kwargs: kwargs).write(to: URL(fileURLWithPath: path("c.json")))
        try NumPyFile.write(.float(TestSupport.random([(q.sequenceShape?.reduce(1, *) ?? 16) * 4, q.inputDim], seed: 3)),
                            to: URL(fileURLWithPath: path("x.npy")))
        let args = ["train", "--config", path("c.json"), "--input", path("x.npy"), "--steps", "3", "--batch-size", "32", "--seed", "5"]
        let method = TrainingMethod.of(q, kind: kind)
        let elsewhere = if case .elsewhere = method { true } else { false }
        let r = try run(args + ["--output", path("t.safetensors")], mustSucceed: !elsewhere, label)
        if elsewhere {
            #expect(r.stderr.contains("cannot train \(name)"), "\(label): \(r.stderr)")
            return
        }
        // The sidecar is the configuration given, with the dimension and the seed it was built with.
        let (trained, saved) = try QuantizerCheckpoint.load(URL(fileURLWithPath: path("t.safetensors")))
        var expected = kwargs
        if kind.keywords.contains("dim") { expected["dim"] = example["dim"] ?? q.inputDim }
        expected["seed"] = 5
        #expect(try saved.serialized() == ModuleConfig(module: name, kwargs: expected).serialized(), "\(label): saved \(saved.kwargs)")
        let fresh = try ModuleConfig(module: name, kwargs: expected).build()
        if method == .fromVectors {
            // Something learned moved (a run that wrote the untrained quantizer would pass the rest).
            #expect(trained.stateDict() != fresh.stateDict(), "\(label): vq train --config exited 0 with nothing trained")
        } else {
            #expect(trained.stateDict() == fresh.stateDict(), "\(label): nothing to learn, yet the state changed")
        }
        // The same command gives the same bits; the checkpoint encodes as the library does.
        try run(args + ["--output", path("t2.safetensors")], mustSucceed: true, label + " again")
        #expect(try QuantizerCheckpoint.load(URL(fileURLWithPath: path("t2.safetensors"))).0.stateDict() == trained.stateDict(), "\(label): not deterministic")
        try run(["encode", "--checkpoint", path("t.safetensors"), "--input", path("x.npy"), "--output", path("i.npy")], mustSucceed: true, label + " encode")
    }

    @Test("vq train --config refuses the options the configuration fixes, a configuration that does not build or fit, in one line naming --config")
    func configurationContradictions() throws {
        try ModuleConfig(module: "LFQ", kwargs: ["codebook_size": 16]).write(to: URL(fileURLWithPath: path("lfq.json")))
        try ModuleConfig(module: "LFQ", kwargs: ["codebook_size": 16, "dim": 5]).write(to: URL(fileURLWithPath: path("five.json")))
        try ModuleConfig(module: "LFQ", kwargs: ["codebook_size": 16, "bogus": 1]).write(to: URL(fileURLWithPath: path("bogus.json")))
        try Data("[1, 2]".utf8).write(to: URL(fileURLWithPath: path("list.json")))
        // As Python's json.dump writes a float('nan'): not JSON.
        try Data(#"{"module": "LFQ", "kwargs": {"codebook_size": 16, "entropy_loss_weight": NaN}}"#.utf8).write(to: URL(fileURLWithPath: path("nan.json")))
        try NumPyFile.write(.float(TestSupport.random([64, 8], seed: 3)), to: URL(fileURLWithPath: path("x.npy")))
        let base = ["train", "--input", path("x.npy"), "--output", path("t.safetensors")]
        for (extra, mention) in [(["--codebook-size", "16"], "--codebook-size contradicts --config"), (["--fsq-levels", "8,5"], "--fsq-levels contradicts"),
                                 (["--residual", "2"], "--residual contradicts"), (["--heads", "2"], "--heads contradicts"), (["--cosine"], "--cosine contradicts"),
                                 (["--kmeans-init"], "--kmeans-init contradicts"), (["--init", path("x.npy")], "--init contradicts"),
                                 (["--resume", path("x.npy")], "--resume contradicts"), (["--decay", "0.9"], "has no EMA codebook")] {
            let r = try run(base + ["--config", path("lfq.json")] + extra, mustSucceed: false, "\(extra)")
            #expect(r.stderr.contains(mention), "\(extra): \(r.stderr)")
        }
        for (file, mention) in [("five.json", "dimension 5"), ("bogus.json", "'bogus'"), ("list.json", "not a JSON object"), ("nan.json", "not valid JSON"), ("none.json", "no such file")] {
            let r = try run(base + ["--config", path(file)], mustSucceed: false, file)
            #expect(r.stderr.contains(path(file)) && r.stderr.contains(mention), "\(file): \(r.stderr)")
        }
        // Its sidecar would replace the configuration read.
        let r = try run(["train", "--input", path("x.npy"), "--config", path("lfq.json"), "--output", path("lfq.safetensors")], mustSucceed: false, "sidecar")
        #expect(r.stderr.contains("is the --config file"), "\(r.stderr)")
    }

    @Test("vq train --fsq-levels refuses every option of a learned codebook (it changed nothing, exit 0), nothing written; --seed seeds its projections")
    func fsqLevelsContradictions() throws {
        try NumPyFile.write(.float(TestSupport.random([64, 8], seed: 3)), to: URL(fileURLWithPath: path("x.npy")))
        let base = ["train", "--input", path("x.npy"), "--fsq-levels", "5,5", "--output", path("f.safetensors")]
        for extra in [["--codebook-size", "16"], ["--residual", "2"], ["--heads", "2"], ["--cosine"], ["--kmeans-init"], ["--decay", "0.5"],
                      ["--dead-code-threshold", "1"], ["--commitment-weight", "2"]] {
            let r = try run(base + extra, mustSucceed: false, "\(extra)")
            #expect(r.status == 64 && r.stderr.contains("\(extra[0]) belongs to a learned codebook"), "\(extra): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: path("f.safetensors")), "\(extra): a refused run wrote")
        }
        // Two seeds, two initialisations of the projections (dimension 8, two levels); the same seed, the same bits.
        var codes: [[UInt32]] = []
        for seed in ["1", "2", "1"] {
            _ = try run(base + ["--seed", seed, "--steps", "2", "--batch-size", "32"], mustSucceed: true, "seed \(seed)")
            let (q, _) = try QuantizerCheckpoint.load(URL(fileURLWithPath: path("f.safetensors")))
            codes.append(q.stateDict().sorted { $0.key < $1.key }.flatMap { $0.value.scalars.map(\.bitPattern) })
            try FileManager.default.removeItem(atPath: path("f.safetensors"))
        }
        #expect(codes[0] != codes[1] && codes[0] == codes[2])
    }

    @Test("a checkpoint with a NaN or ±∞ in a tensor is refused by every command, naming the tensor", arguments: QuantizerRegistry.kinds.indices)
    func nonFiniteCheckpoint(_ i: Int) throws {
        // The largest tensor (the codes, where there are any), one value in its middle.
        try expectEveryCommandRefuses(QuantizerRegistry.kinds[i], mentioning: "NaN or infinite") { file, _ in
            guard let (key, stored) = file.tensors.max(by: { ($0.value.asFloat.count, $1.key) < ($1.value.asFloat.count, $0.key) }),
                  stored.asFloat.count > 0 else { return nil }   // BinaryMapper stores nothing
            return (key, stored.asFloat.count / 2, [Float.nan, .infinity, -.infinity][i % 3])
        }
    }

    @Test("a checkpoint with a value no run writes (a count below 0, a mask of 0.5, a step of 1e30, other bit weights) is refused by every command",
          arguments: QuantizerRegistry.kinds.indices)
    func impossibleValueCheckpoint(_ i: Int) throws {
        // The first constrained buffer (counters, masks, LFQ's bit weights), its last value set outside its domain.
        try expectEveryCommandRefuses(QuantizerRegistry.kinds[i], mentioning: "no run writes") { file, module in
            guard let (key, p) = module.namedParameters().first(where: { $0.1.domain != .finite && (file.tensors[$0.0]?.asFloat.count ?? 0) > 0 })
            else { return nil }
            let value: Float = switch p.domain {
            case .flag: 0.5
            case .nonNegative: -1
            default: 1e30
            }
            return (key, file.tensors[key]!.asFloat.count - 1, value)
        }
    }

    /// Saves the kind's example, sets one value of the tensor `choose` picks (nil: nothing to damage), and runs every
    /// command on the damaged checkpoint: each refuses in one line naming the tensor and `mention`, writing nothing.
    func expectEveryCommandRefuses(_ kind: QuantizerKind, mentioning mention: String,
                                   _ choose: (SafeTensorsFile, Module) -> (key: String, index: Int, value: Float)?) throws {
        let config = ModuleConfig(module: kind.name, kwargs: kind.example)
        let q = try config.build() as! any Quantizer
        let good = path("good.safetensors"), ckpt = path("bad.safetensors")
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: good))
        var file = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: good))
        guard let (key, index, value) = choose(file, q) else { return }
        var scalars = file.tensors[key]!.asFloat.scalars
        scalars[index] = value
        file.tensors[key] = .float(Tensor(scalars, shape: file.tensors[key]!.asFloat.shape))
        try file.write(to: URL(fileURLWithPath: ckpt))
        try NumPyFile.write(.float(TestSupport.random([(q.sequenceShape?.reduce(1, *) ?? 16) * 4, q.inputDim], seed: 3)),
                            to: URL(fileURLWithPath: path("x.npy")))
        try run(["encode", "--checkpoint", good, "--input", path("x.npy"), "--output", path("i.npy")], mustSucceed: true, "\(kind.name) encode")
        for args in [["inspect", ckpt], ["inspect", ckpt, "--input", path("x.npy")],
                     ["encode", "--checkpoint", ckpt, "--input", path("x.npy"), "--output", path("j.npy")],
                     ["decode", "--checkpoint", ckpt, "--input", path("i.npy"), "--output", path("y.npy")],
                     ["freeze", ckpt, "--codes", "0", "--output", path("f.safetensors")],
                     ["train", "--input", path("x.npy"), "--init", ckpt, "--steps", "1", "--output", path("t.safetensors")],
                     ["compare", good, ckpt, "--input", path("x.npy")]] {
            let r = try run(args, mustSucceed: false, "\(kind.name) \(args[0]) with \(value) in \(key)")
            #expect(r.stderr.contains(key) && r.stderr.contains(mention), "\(kind.name) \(args[0]): \(r.stderr)")
        }
    }

    /// Configurations no quantizer can be built from, in a checkpoint's metadata: every command refuses them in one line.
    nonisolated(unsafe) static let invalid: [(String, [String: Any], String)] = [
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "in_place_codebook_optimizer": "partial(torch.optim.Adam, lr=0.01)"], "in_place_codebook_optimizer"),
        ("ResidualVQ", ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "quantize_dropout": true, "quantize_dropout_cutoff_index": 5], "quantize_dropout_cutoff_index"),
        ("ResidualLFQ", ["dim": 8, "codebook_size": 64, "num_quantizers": 2, "channel_first": true], "channel_first"),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "accept_image_fmap": true, "accept_3d_fmap": true], "accept_3d_fmap"),
        // Found by the structured fuzzer (Fuzz/README.md): each built, then trapped in its first forward.
        ("LFQ", ["dim": 8, "codebook_size": 16, "num_codebooks": 2, "keep_num_codebooks_dim": false], "keep_num_codebooks_dim"),
        ("FSQ", ["levels": [5, 5], "num_codebooks": 2, "keep_num_codebooks_dim": false], "keep_num_codebooks_dim"),
        ("ResidualVQ", ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "beam_size": 3, "commitment_weight": 0], "beam_size"),
        ("ResidualVQ", ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "beam_size": 4611686018427387904], "beam_size"),
        ("SimVQ", ["dim": 8, "codebook_size": 16, "codebook_transform": "nn.Linear(8, 6)"], "codebook_transform"),
        ("SimVQ", ["dim": 8, "codebook_size": 16, "codebook_transform": "nn.Sequential(nn.Linear(8, 16), nn.Linear(8, 8))"], "codebook_transform"),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "learnable_codebook": true, "ema_update": false, "vq_bridge": "nn.Linear(65536, 65536)"], "vq_bridge"),
        ("EvoLFQ", ["encoder": "nn.Linear(8, 6)", "decoder": "nn.Linear(6, 8)", "dim": 5], "encoder"),
        ("ResidualFSQ", ["levels": [8, 5, 5], "dim": 8, "num_quantizers": 2, "channel_first": true], "channel_first"),
        ("LFQ", ["dim": 8, "codebook_size": 64, "has_projections": false], "has_projections"),
        ("LFQ", ["dim": 8, "codebook_size": 1], "codebook_size"),
        ("ResidualVQ", ["dim": 0, "num_quantizers": 3, "codebook_size": 16], "dim"),
        ("LFQ", ["dim": 8, "codebook_size": 64, "num_codebooks": 9223372036854775807], "num_codebooks"),
        ("HierarchicalVQ", ["dim": 8, "codebook_size": 16, "scales": [1, 4, 20], "orthogonal_reg_max_codes": -1], "orthogonal_reg_max_codes"),
        // Found by the mutation fuzzer after FSQ's return_indices was honoured: the stacks' layers need their indices.
        ("ResidualFSQ", ["levels": [8, 5, 5], "dim": 8, "num_quantizers": 2, "return_indices": false], "return_indices"),
        ("GroupedResidualFSQ", ["levels": [8, 5, 5], "dim": 16, "num_quantizers": 2, "groups": 2, "return_indices": false], "return_indices"),
    ]

    @Test("an invalid configuration is refused by every command, naming the keyword", arguments: invalid.indices)
    func invalidConfiguration(_ i: Int) throws {
        let (name, kwargs, keyword) = Self.invalid[i]
        // A valid module's tensors, saved beside the invalid configuration.
        let valid = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))
        let ckpt = path("bad.safetensors")
        // Written as another program would (QuantizerCheckpoint.save refuses a configuration that does not build).
        let config = try ModuleConfig(module: name, kwargs: kwargs).serialized()
        var file = SafeTensorsFile(metadata: ["config_json": String(decoding: config, as: UTF8.self)])
        for (key, t) in valid.stateDict() { file.tensors[key] = .float(t) }
        try AtomicFile.write([(try file.serialized(), URL(fileURLWithPath: ckpt)), (config, URL(fileURLWithPath: path("bad.json")))])
        try NumPyFile.write(.float(TestSupport.random([32, 8], seed: 3)), to: URL(fileURLWithPath: path("x.npy")))
        for args in [["inspect", ckpt], ["encode", "--checkpoint", ckpt, "--input", path("x.npy"), "--output", path("i.npy")],
                     ["decode", "--checkpoint", ckpt, "--input", path("x.npy"), "--output", path("y.npy")],
                     ["freeze", ckpt, "--codes", "0", "--output", path("f.safetensors")],
                     ["train", "--input", path("x.npy"), "--init", ckpt, "--steps", "1", "--output", path("t.safetensors")],
                     ["train", "--input", path("x.npy"), "--config", path("bad.json"), "--steps", "1", "--output", path("t.safetensors")],
                     ["encode", "--checkpoint", ckpt, "--config", path("bad.json"), "--input", path("x.npy"), "--output", path("i.npy")]] {
            let r = try run(args, mustSucceed: false, "\(name) \(args[0])")
            // vq train refuses a kind it does not train before building it.
            let trainedElsewhere = if args[0] == "train", args.contains("--config"), case .elsewhere = QuantizerRegistry.kind(named: name)!.training { true } else { false }
            #expect(r.stderr.contains(trainedElsewhere ? "cannot train \(name)" : keyword), "\(args[0]): \(r.stderr)")
            // The file the configuration came from is named: the checkpoint (its metadata) or --config.
            #expect(r.stderr.contains(args.contains("--config") ? "--config " + path("bad.json") : "bad."), "\(args[0]): \(r.stderr)")
        }
    }
}

/// The README's table of every quantizer through every command is what the tool does: each row is the
/// registry kind's example, and each cell what the matrix above checks for it.
@Suite("README: every quantizer through every command")
struct ReadmeCommandTableTests {
    static func expectedRow(_ kind: QuantizerKind) throws -> String {
        let q = try kind.build(kind.example)
        let decode = kind.name == "RandomProjectionQuantizer" ? "refused (a random projection has no inverse)" : "✓"
        let freeze = q.learnedCodebooks.isEmpty ? "refused (no stored codes)" : "✓"
        let train: String
        switch TrainingMethod.of(q, kind: kind) {
        case .fromVectors:
            let ema = q.learnedCodebooks.contains { $0.embed.kind != .trainable && $0.configuration.emaUpdate }
            let adam = !q.trainableParameters().isEmpty
            train = "✓ " + [ema ? "EMA" : nil, adam ? "Adam" : nil].compactMap { $0 }.joined(separator: " + ")
        case .nothingToLearn: train = "refused (nothing to learn)"
        case .elsewhere: train = "refused (\(kind.name == "HierarchicalVQ" ? "whole sequences: the library" : "evolution: the library"))"
        }
        let encode = q.sequenceShape.map { "✓ ([b, \($0.reduce(1, *)), d] → [b, Σ])" } ?? "✓"
        return "| \(kind.name) | ✓ | \(encode) | \(decode) | \(freeze) | \(train) |"
    }

    @Test("the README's table matches the registry and the tool")
    func table() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let expected = try QuantizerRegistry.kinds.map(Self.expectedRow)
        let rows = readme.split(separator: "\n").map(String.init).filter { line in QuantizerRegistry.kinds.contains { line.hasPrefix("| \($0.name) |") } }
        #expect(rows == expected, "README table differs; expected:\n\(expected.joined(separator: "\n"))")
    }
}
