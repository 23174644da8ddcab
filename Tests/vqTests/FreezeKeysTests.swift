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

    /// Case `i` of EveryQuantizerTests built: its kind's name, a label, its configuration and the quantizer.
    func built(_ i: Int) throws -> (name: String, label: String, config: ModuleConfig, q: any Quantizer) {
        let (name, kwargs) = EveryQuantizerTests.cases[i]
        let config = ModuleConfig(module: name, kwargs: kwargs)
        return (name, "\(name) \(kwargs)", config, try config.build() as! any Quantizer)
    }

    @Test("a drawn half of the learned parameters frozen by key: held bit for bit through vq train --init, the rest moved",
          arguments: EveryQuantizerTests.cases.indices)
    func heldThroughTraining(_ i: Int) throws {
        let (name, label, config, q) = try built(i)
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: path("q.safetensors")))
        try NumPyFile.write(.float(TestSupport.random([(q.sequenceShape?.reduce(1, *) ?? 16) * 4, q.inputDim], seed: 3)),
                            to: URL(fileURLWithPath: path("x.npy")))
        let learned = q.namedTrainableParameters().map(\.0)
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

    @Test("every code held (whole, or in every component) and every other learned parameter frozen: vq train --init refuses, nothing written; half the codes freed: some move, the rest hold",
          arguments: EveryQuantizerTests.cases.indices)
    func everyCodeHeld(_ i: Int) throws {
        let (name, label, config, q) = try built(i)
        let books = q.learnedCodebooks
        guard !books.isEmpty, QuantizerRegistry.kind(named: name)!.training == .fromVectors,
              books.allSatisfy({ $0.initted.value.item != 0 }) else { return }   // no stored codes, or placeholders (never frozen)
        try NumPyFile.write(.float(TestSupport.random([64, q.inputDim], seed: 3)), to: URL(fileURLWithPath: path("x.npy")))
        // Codes held whole in even cases, by every component in odd ones; the other learned parameters frozen whole.
        for book in books {
            if i % 2 == 0 { book.freezeAllCodes() } else { try book.freeze(dimensions: 0..<book.dim) }
        }
        let embeds = Set(books.map { ObjectIdentifier($0.embed) })
        let others = q.namedTrainableParameters().filter { !embeds.contains(ObjectIdentifier($0.1)) }.map(\.0)
        if !others.isEmpty { try q.freeze(keys: others, strict: true) }
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: path("h.safetensors")))
        let before = try Data(contentsOf: URL(fileURLWithPath: path("h.safetensors")))
        let train = ["train", "--input", path("x.npy"), "--init", path("h.safetensors"), "--steps", "3", "--batch-size", "32", "--output", path("t.safetensors")]
        var r = try run(train, label)
        #expect(r.status == 1 && r.stderr.contains("every code of") && r.stderr.contains("nothing for vq train to do"), "\(label): \(r.stderr)")
        let unchanged = try Data(contentsOf: URL(fileURLWithPath: path("h.safetensors"))) == before
        #expect(!FileManager.default.fileExists(atPath: path("t.safetensors")) && unchanged, "\(label): a refused run wrote")
        // The even codes of the first codebook freed (every head; whole and in every component): the run trains, some
        // freed code moves, and every other code holds its bits.
        let freed = Array(stride(from: 0, to: books[0].codebookSize, by: 2))
        try books[0].unfreeze(codes: freed)
        try books[0].unfreeze(dimensions: 0..<books[0].dim, codes: freed)
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: path("h.safetensors")))
        r = try run(train, label)
        #expect(r.status == 0, "\(label): \(r.stderr)")
        let (t, _) = try QuantizerCheckpoint.load(URL(fileURLWithPath: path("t.safetensors")))
        var freedMoved = false
        for (b, (old, new)) in zip(books, (t as! any Quantizer).learnedCodebooks).enumerated() {
            let (o, n, d, c) = (old.embed.value.scalars, new.embed.value.scalars, old.dim, old.codebookSize)
            for row in 0..<(old.numCodebooks * c) {
                let same = o[(row * d)..<(row * d + d)].map(\.bitPattern) == n[(row * d)..<(row * d + d)].map(\.bitPattern)
                if b == 0 && row % c % 2 == 0 { freedMoved = freedMoved || !same; continue }
                #expect(same, "\(label): held code \(row % c) (head \(row / c)) of codebook \(b) moved")
            }
        }
        #expect(freedMoved, "\(label): no freed code moved")
    }

    @Test("freeze_codebook: true in the configuration and every other learned parameter frozen: vq train --init refuses, nothing written; with the other parameters free it trains and every code holds; with false the codes move",
          arguments: EveryQuantizerTests.cases.indices)
    func frozenByConfiguration(_ i: Int) throws {
        let (name, kwargs) = EveryQuantizerTests.cases[i]
        let kind = QuantizerRegistry.kind(named: name)!
        guard kind.keywords.contains("freeze_codebook"), kind.training == .fromVectors else { return }
        var frozenKwargs = kwargs
        frozenKwargs["freeze_codebook"] = true
        let (config, label) = (ModuleConfig(module: name, kwargs: frozenKwargs), "\(name) \(frozenKwargs)")
        let q = try config.build() as! any Quantizer
        let books = q.learnedCodebooks
        guard !books.isEmpty, books.allSatisfy({ $0.initted.value.item != 0 }) else { return }   // k-means still to fit them
        #expect(q.codebooksFrozenByConfiguration.count == books.count, "\(label)")
        try NumPyFile.write(.float(TestSupport.random([64, q.inputDim], seed: 3)), to: URL(fileURLWithPath: path("x.npy")))
        let train = ["train", "--input", path("x.npy"), "--init", path("c.safetensors"), "--steps", "3", "--batch-size", "32", "--output", path("t.safetensors")]
        let codes = { (q: any Quantizer) in q.learnedCodebooks.map { $0.embed.value.scalars.map(\.bitPattern) } }

        // The other parameters learned by gradient free (projections): it trains, every code holds, something moved.
        let embeds = Set(books.map { ObjectIdentifier($0.embed) })
        let others = q.namedTrainableParameters().filter { !embeds.contains(ObjectIdentifier($0.1)) }.map(\.0)
        if !others.isEmpty {
            try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: path("c.safetensors")))
            let r = try run(train, label)
            #expect(r.status == 0, "\(label): \(r.stderr)")
            let t = try QuantizerCheckpoint.load(URL(fileURLWithPath: path("t.safetensors"))).0 as! any Quantizer
            #expect(codes(t) == codes(q), "\(label): a code of a codebook its configuration freezes moved")
            let (a, b) = (q.stateDict(), t.stateDict())
            #expect(others.contains { a[$0]?.scalars.map(\.bitPattern) != b[$0]?.scalars.map(\.bitPattern) }, "\(label): nothing learned")
            try FileManager.default.removeItem(atPath: path("t.safetensors"))
            try q.freeze(keys: others, strict: true)
        }
        // Nothing else to learn: refused, the checkpoint byte for byte, no output.
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: path("c.safetensors")))
        let before = try Data(contentsOf: URL(fileURLWithPath: path("c.safetensors")))
        var r = try run(train, label)
        #expect(r.status == 1 && r.stderr.contains("frozen by its configuration (freeze_codebook)") && r.stderr.contains("nothing for vq train to do"),
                "\(label): \(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path("c.safetensors"))) == before, "\(label): a refused run wrote")
        #expect(!FileManager.default.fileExists(atPath: path("t.safetensors")), "\(label): a refused run wrote its output")
        // The same state under freeze_codebook: false trains its codes (so the refusal is the configuration's).
        try QuantizerCheckpoint.save(q, config: ModuleConfig(module: name, kwargs: kwargs), to: URL(fileURLWithPath: path("c.safetensors")))
        r = try run(train, label)
        #expect(r.status == 0, "\(label): \(r.stderr)")
        if r.status == 0 {
            let t = try QuantizerCheckpoint.load(URL(fileURLWithPath: path("t.safetensors"))).0 as! any Quantizer
            #expect(codes(t) != codes(q), "\(label): no code moved with freeze_codebook false")
            try FileManager.default.removeItem(atPath: path("t.safetensors"))
        }
    }

    @Test("an affine_param codebook with every code frozen still trains: its batch statistics move, its codes hold")
    func affineStillLearns() throws {
        let config = ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "affine_param": true])
        let q = try config.build() as! any Quantizer
        q.learnedCodebooks[0].freezeAllCodes()
        try QuantizerCheckpoint.save(q, config: config, to: URL(fileURLWithPath: path("a.safetensors")))
        try NumPyFile.write(.float(TestSupport.random([64, 8], seed: 3)), to: URL(fileURLWithPath: path("x.npy")))
        let r = try run(["train", "--input", path("x.npy"), "--init", path("a.safetensors"), "--steps", "3", "--output", path("b.safetensors")], "affine")
        #expect(r.status == 0, "\(r.stderr)")
        let (a, b) = (q.stateDict(), try QuantizerCheckpoint.load(URL(fileURLWithPath: path("b.safetensors"))).0.stateDict())
        let moved = a.keys.filter { a[$0]?.scalars.map(\.bitPattern) != b[$0]?.scalars.map(\.bitPattern) }
        #expect(moved.contains { $0.contains("batch_mean") } && !moved.contains("_codebook.embed"), "\(moved)")
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
