import Foundation
import Testing
import VQTensor
import VQTestSupport
import VectorQuantize

/// End-to-end tests of the built `vq` binary.
@Suite("vq command line", .serialized)
struct CommandLineTests {
    typealias Result = VQProcess.Result
    func vq(_ args: String...) throws -> Result { try VQProcess.run(args) }
    func vq(_ args: [String]) throws -> Result { try VQProcess.run(args) }
    let dir = VQProcess.temporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func writeVectors() throws -> String {
        let x = TestSupport.random([600, 8], seed: 1) + TestSupport.random([600, 1], seed: 2) * 3
        try NumPyFile.write(.float(x), to: URL(fileURLWithPath: path("x.npy")))
        return path("x.npy")
    }

    @Test("train → inspect → encode → decode, then freeze and unfreeze")
    func pipeline() throws {
        let x = try writeVectors()
        let ckpt = path("m.safetensors")
        var r = try vq("train", "--input", x, "--codebook-size", "16", "--output", ckpt, "--steps", "20", "--batch-size", "128", "--seed", "3")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: path("m.json")))
        r = try vq("inspect", ckpt, "--input", x)
        #expect(r.status == 0 && r.stdout.contains("16 codes × 8") && r.stdout.contains("perplexity"))
        #expect(r.stdout.contains("usage histogram") && r.stdout.contains("reconstruction MSE"))
        r = try vq("encode", "--checkpoint", ckpt, "--input", x, "--output", path("i.npy"))
        #expect(r.status == 0, "\(r.stderr)")
        let idx = try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("i.npy"))).asIndices!
        #expect(idx.shape == [600] && idx.scalars.allSatisfy { (0..<16).contains($0) })
        r = try vq("decode", "--checkpoint", ckpt, "--input", path("i.npy"), "--output", path("v.npy"))
        #expect(r.status == 0)
        #expect(try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("v.npy"))).shape == [600, 8])
        r = try vq("freeze", ckpt, "--codes", "0-3,7")
        #expect(r.status == 0 && r.stdout.hasPrefix("froze 5 codes → "), "\(r.stdout)")
        // Asked again (or a free code freed): it says that nothing changed.
        r = try vq("freeze", ckpt, "--codes", "3,7")
        #expect(r.status == 0 && r.stdout.contains("froze 2 codes (all of them frozen already: nothing changed)"), "\(r.stdout)")
        r = try vq("unfreeze", ckpt, "--codes", "9", "--output", path("same.safetensors"))
        #expect(r.status == 0 && r.stdout.contains("(all of them free already: nothing changed)"), "\(r.stdout)")
        r = try vq("inspect", ckpt)
        #expect(r.stdout.contains("frozen 5 (0-3,7)"))
        // Frozen codes survive more training bit for bit.
        let before = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: ckpt)).float("_codebook.embed")
        r = try vq("train", "--input", x, "--init", ckpt, "--output", path("m2.safetensors"), "--steps", "10")
        #expect(r.status == 0, "\(r.stderr)")
        let after = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path("m2.safetensors"))).float("_codebook.embed")
        for c in [0, 1, 2, 3, 7] { #expect(after.slice(axis: 1, c..<(c + 1)) == before.slice(axis: 1, c..<(c + 1))) }
        #expect(after != before)
        r = try vq("unfreeze", ckpt, "--codes", "0-3")
        #expect(try vq("inspect", ckpt).stdout.contains("frozen 1 (7)"))
        // Grow the codebook; the old codes are frozen.
        r = try vq("train", "--input", x, "--init", ckpt, "--expand-to", "24", "--output", path("m3.safetensors"), "--steps", "5")
        #expect(r.status == 0)
        #expect(try vq("inspect", path("m3.safetensors")).stdout.contains("24 codes × 8, frozen 16 (0-15)"))
    }

    @Test("--config beside a checkpoint with its own configuration: the same quantizer in other words (keywords at their defaults left out) is used silently, for every kind; a contradicting one is used with one warning")
    func configBesideOwn() throws {
        for kind in QuantizerRegistry.kinds where kind.name != "EvoLFQ" {   // EvoLFQ cannot describe itself in keywords
            let q = try kind.build(kind.example)
            try QuantizerCheckpoint.save(q, to: URL(fileURLWithPath: path("own.safetensors")))
            try ModuleConfig(module: kind.name, kwargs: kind.example).write(to: URL(fileURLWithPath: path("same.json")))
            let r = try vq("inspect", path("own.safetensors"), "--config", path("same.json"))
            #expect(r.status == 0 && !r.stderr.contains("differs"), "\(kind.name): \(r.stderr)")
        }
        for (module, kwargs) in [("VectorQuantize", ["dim": 8, "codebook_size": 16] as [String: Any]), ("ResidualVQ", ["dim": 8, "codebook_size": 16, "num_quantizers": 2])] {
            let q = try ModuleConfig(module: module, kwargs: kwargs).build() as! any Quantizer
            try QuantizerCheckpoint.save(q, to: URL(fileURLWithPath: path("own.safetensors")))
            try ModuleConfig(module: module, kwargs: kwargs.merging(["use_cosine_sim": true]) { a, _ in a }).write(to: URL(fileURLWithPath: path("cos.json")))
            let r = try vq("inspect", path("own.safetensors"), "--config", path("cos.json"))
            #expect(r.status == 0 && r.stderr.contains("cos.json differs from the configuration inside own.safetensors: cos.json is used"), "\(module): \(r.stderr)")
        }
    }

    @Test("residual and FSQ training write loadable quantizers")
    func otherQuantizers() throws {
        let x = try writeVectors()
        var r = try vq("train", "--input", x, "--codebook-size", "8", "--residual", "3", "--output", path("r.safetensors"), "--steps", "5")
        #expect(r.status == 0, "\(r.stderr)")
        r = try vq("encode", "--checkpoint", path("r.safetensors"), "--input", x, "--output", path("ri.npy"))
        #expect(try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("ri.npy"))).shape == [600, 3])
        r = try vq("freeze", path("r.safetensors"), "--codes", "1", "--layer", "2")
        #expect(try vq("inspect", path("r.safetensors")).stdout.contains("codebook 2: 8 codes × 8, frozen 1 (1)"))
        r = try vq("train", "--input", x, "--fsq-levels", "5,5,5", "--output", path("f.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try vq("encode", "--checkpoint", path("f.safetensors"), "--input", x, "--output", path("fi.npy")).status == 0)
    }

    @Test("the demo is deterministic for a seed, summarises its seeds and writes its report")
    func demo() throws {
        let a = try vq("demo", "--steps", "40", "--seeds", "2", "--output", path("d1"), "--seed", "4")
        let b = try vq("demo", "--steps", "40", "--seeds", "2", "--output", path("d2"), "--seed", "4")
        #expect(a.status == 0 && b.status == 0, "\(a.stderr)")
        let table = { (s: String) in s.split(separator: "\n").filter { $0.hasPrefix("after stage") || $0.hasPrefix("✓") || $0.hasPrefix("✗") } }
        #expect(table(a.stdout).count == 5 + 8)  // stage 1, four stage-2 runs; eight claims
        #expect(table(a.stdout) == table(b.stdout))
        #expect(a.stdout.contains("✓ every frozen stage-1 code is bit-identical after stage 2 (2/2 seeds)"), "\(a.stdout)")
        #expect(a.stdout.contains("mean ± standard deviation over 2 seeds (4, 5)") && a.stdout.contains("kernels: "))
        let html = try String(contentsOfFile: path("d1/report.html"), encoding: .utf8)
        // forgetting curves, policy freezes, two loss charts, four histograms, four grids
        #expect(html.components(separatedBy: "<svg").count - 1 == 12)
        #expect(html.contains("<table") && html.contains("after stage 2 (subspace frozen)") && html.contains("Forgetting"))
        #expect(html.contains("--seeds 2") && html.contains("(level ") && html.contains("two held-out digits of every class"))
    }

    @Test("vq copied away from its build folder runs the demo and the examples (the digits are compiled in)")
    func installedElsewhere() throws {
        let bin = dir.appendingPathComponent("installed/bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: VQProcess.binary, to: bin.appendingPathComponent("vq"))
        for args in [["demo", "--steps", "5", "--output", path("installed")], ["example", "autoencoder", "--steps", "2"]] {
            let p = Process()
            p.executableURL = bin.appendingPathComponent("vq")
            p.arguments = args
            let err = Pipe()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = err
            try p.run()
            let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            #expect(p.terminationStatus == 0 && !e.contains("Fatal error"), "\(args): \(e.prefix(300))")
        }
    }

    @Test("bad input: one clear line, non-zero exit, nothing written")
    func badInput() throws {
        let x = try writeVectors()
        _ = try vq("train", "--input", x, "--codebook-size", "8", "--output", path("ok.safetensors"), "--steps", "2")
        try NumPyFile.write(.float(Tensor.zeros([5, 3])), to: URL(fileURLWithPath: path("wrongdim.npy")))
        try NumPyFile.write(.float(Tensor([0.5, 1.5])), to: URL(fileURLWithPath: path("fractional.npy")))
        try Data("not a tensor file".utf8).write(to: URL(fileURLWithPath: path("garbage.npy")))
        let cases: [([String], String)] = [
            (["encode", "--checkpoint", path("missing.safetensors"), "--input", x, "--output", path("o.npy")], "missing.safetensors"),
            (["encode", "--checkpoint", path("ok.safetensors"), "--input", path("nope.npy"), "--output", path("o.npy")], "nope.npy"),
            (["encode", "--checkpoint", path("ok.safetensors"), "--input", path("wrongdim.npy"), "--output", path("o.npy")], "dimension 3"),
            (["encode", "--checkpoint", path("ok.safetensors"), "--input", path("garbage.npy"), "--output", path("o.npy")], "garbage.npy"),
            (["decode", "--checkpoint", path("ok.safetensors"), "--input", path("fractional.npy"), "--output", path("o.npy")], "integers"),
            (["train", "--input", x, "--output", path("t.safetensors"), "--codebook-size", "4", "--codebook-sise", "4"], "codebook-sise"),
            (["train", "--input", x, "--output", path("t.safetensors")], "--codebook-size"),
            (["freeze", path("ok.safetensors"), "--codes", "99"], "99"),
            (["freeze", path("ok.safetensors"), "--codes", "5-x"], "5-x"),
        ]
        for (args, mention) in cases {
            let r = try vq(args)
            #expect(r.status != 0, "\(args): succeeded")
            #expect(r.stderr.contains(mention), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Stack dump"), "\(args): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: path("o.npy")))
    }
}
