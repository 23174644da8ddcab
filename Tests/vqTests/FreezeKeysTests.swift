import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
import VectorQuantize

/// `vq freeze --keys`: parameters learned by gradient (projections, learnable codebooks, code transforms, latents)
/// frozen whole from the tool, on every quantizer and variant — held bit for bit by `vq train --init` while the rest
/// learns, checked by `vq compare`, undone by `vq unfreeze --keys`.
@Suite("vq freeze --keys: whole parameters on every quantizer", .serialized)
struct FreezeKeysTests {
    let dir = VQProcess.temporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func run(_ args: [String], _ label: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> VQProcess.Result {
        let r = try VQProcess.run(args)
        #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("crashed"), "\(label): a trap: \(r.stderr.prefix(400))", sourceLocation: sourceLocation)
        return r
    }

    @Test("a drawn half of the learned parameters frozen by key: held bit for bit through vq train --init, the rest moved",
          arguments: EveryQuantizerTests.cases.indices)
    func heldThroughTraining(_ i: Int) throws {
        let (name, kwargs) = EveryQuantizerTests.cases[i]
        let label = "\(name) \(kwargs)"
        let config = ModuleConfig(module: name, kwargs: kwargs)
        let q = try config.build() as! any Quantizer
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: path("q.safetensors")))
        try NumPyFile.write(.float(TestSupport.random([(q.sequenceShape?.reduce(1, *) ?? 16) * 4, q.inputDim], seed: 3)),
                            to: URL(fileURLWithPath: path("x.npy")))
        let learned = q.namedParameters().filter { $0.1.kind == .trainable }.map(\.0)
        guard !learned.isEmpty else {
            // Nothing learned by gradient: any key is refused, the checkpoint unchanged.
            let key = q.namedParameters().first?.0 ?? "weight"
            let before = try Data(contentsOf: URL(fileURLWithPath: path("q.safetensors")))
            let r = try run(["freeze", path("q.safetensors"), "--keys", key], label)
            #expect(r.status != 0 && r.stderr.hasPrefix("vq: error: --keys \(key)"), "\(label): \(r.stderr)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path("q.safetensors"))) == before, "\(label): a refused freeze wrote")
            return
        }
        // Every other parameter learned by gradient, from a drawn start: at least one frozen, one left to learn if there are two.
        var rng = SeededGenerator(seed: UInt64(i))
        let start = rng.nextInt(below: 2)
        var frozen = learned.enumerated().filter { $0.offset % 2 == start }.map(\.element)
        if frozen.isEmpty { frozen = [learned[0]] }
        var r = try run(["freeze", path("q.safetensors"), "--keys", frozen.joined(separator: ","), "--output", path("f.safetensors")], label)
        #expect(r.status == 0, "\(label): \(r.stderr)")
        r = try run(["inspect", path("f.safetensors")], label)
        #expect(r.stdout.contains("learned by gradient: \(learned.count) parameters, frozen \(frozen.count)"), "\(label): \(r.stdout)")

        let (f, _) = try QuantizerCheckpoint.load(URL(fileURLWithPath: path("f.safetensors")))
        let method = TrainingMethod.of(f as! any Quantizer, kind: QuantizerRegistry.kind(named: name)!)
        r = try run(["train", "--input", path("x.npy"), "--init", path("f.safetensors"), "--steps", "3", "--batch-size", "32",
                     "--output", path("t.safetensors")], label)
        guard method == .fromVectors else {
            let why = if case .elsewhere = method { "cannot train \(name)" } else { "nothing for vq train to do" }
            #expect(r.status != 0 && r.stderr.contains(why), "\(label): \(r.stderr)")
            return
        }
        #expect(r.status == 0, "\(label): \(r.stderr)")
        let (t, _) = try QuantizerCheckpoint.load(URL(fileURLWithPath: path("t.safetensors")))
        let (before, after) = (f.stateDict(), t.stateDict())
        for key in frozen { #expect(before[key]?.scalars.map(\.bitPattern) == after[key]?.scalars.map(\.bitPattern), "\(label): \(key) moved") }
        // The rest learned: something outside the frozen parameters changed (so "held" is not vacuous).
        let free = Set(before.keys).subtracting(frozen)
        #expect(free.contains { before[$0]?.scalars.map(\.bitPattern) != after[$0]?.scalars.map(\.bitPattern) }, "\(label): nothing else learned")
        // The freeze is kept in the trained checkpoint, and vq compare checks it.
        r = try run(["compare", path("f.safetensors"), path("t.safetensors"), "--input", path("x.npy")], label)
        if name != "RandomProjectionQuantizer" {
            #expect(r.status == 0 && r.stdout.contains("frozen parameters (whole): \(frozen.count) — bit-identical"), "\(label): \(r.stdout) \(r.stderr)")
        }
        r = try run(["unfreeze", path("t.safetensors"), "--keys", frozen.joined(separator: ",")], label)
        #expect(r.status == 0, "\(label): \(r.stderr)")
        r = try run(["inspect", path("t.safetensors")], label)
        #expect(r.stdout.contains("learned by gradient: \(learned.count) parameters, frozen 0"), "\(label): \(r.stdout)")
    }

    @Test("vq compare exits 1 naming a parameter frozen whole that moved")
    func compareCatchesMovedParameter() throws {
        let config = ModuleConfig(module: "LFQ", kwargs: ["dim": 8, "codebook_size": 16])
        let q = try config.build() as! any Quantizer
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: path("a.safetensors")))
        try NumPyFile.write(.float(TestSupport.random([64, 8], seed: 3)), to: URL(fileURLWithPath: path("x.npy")))
        _ = try run(["freeze", path("a.safetensors"), "--keys", "project_in", "--output", path("af.safetensors")], "freeze")
        // Trained from the unfrozen checkpoint: project_in moves.
        var r = try run(["train", "--input", path("x.npy"), "--init", path("a.safetensors"), "--steps", "3", "--output", path("b.safetensors")], "train")
        #expect(r.status == 0, "\(r.stderr)")
        r = try run(["compare", path("af.safetensors"), path("b.safetensors"), "--input", path("x.npy")], "compare")
        #expect(r.status == 1 && r.stderr.contains("frozen parameters project_in.weight, project_in.bias"), "\(r.stdout) \(r.stderr)")
    }

    @Test("vq freeze --keys refuses keys that name nothing, only EMA state, an empty entry, or come with a code selection — nothing written")
    func refusals() throws {
        let vq = ModuleConfig(module: "ResidualVQ", kwargs: ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "codebook_dim": 4])
        try QuantizerCheckpoint.save(try vq.build(), config: vq, to: URL(fileURLWithPath: path("r.safetensors")))
        let before = try Data(contentsOf: URL(fileURLWithPath: path("r.safetensors")))
        for (extra, mention) in [(["--keys", "nope"], "no parameter"), (["--keys", "layers.0._codebook"], "not learned by gradient"),
                                 (["--keys", "project_in,"], "comma-separated"), (["--keys", "project_in", "--codes", "0"], "--codes"),
                                 (["--keys", "project_in", "--layer", "0"], "--layer"), (["--keys", "project_in", "--head", "0"], "--head")] {
            let r = try run(["freeze", path("r.safetensors")] + extra, "\(extra)")
            #expect(r.status != 0 && r.stderr.contains(mention) && r.stderr.split(separator: "\n").count == 1, "\(extra): \(r.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path("r.safetensors"))) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["r.json", "r.safetensors"])
    }
}
