import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// A checkpoint with NaN or ±∞ in any tensor (a diverged run, a damaged file, another program's output) is refused
/// at load, naming the tensor — it would otherwise encode every vector to one code without a word — and a state
/// that holds them is never saved. The one exception is a sentinel the reference itself stores as NaN (the affine
/// codebook's batch statistics before their first batch), which loads and saves. Values no run writes — a count
/// below 0, a mask of 0.5, a step counter of 1e30 (which trapped when it became an `Int`), bit weights other than
/// LFQ's — are refused the same way (``ValueDomain``).
@Suite("Checkpoints with non-finite or impossible values")
struct StateValueTests {
    /// Every quantizer of the registry, and the affine codebook whose batch statistics start as NaN.
    nonisolated(unsafe) static let configs: [(String, [String: Any])] = QuantizerRegistry.kinds.map { ($0.name, $0.example) } + [
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "affine_param": true]),
        ("ResidualVQ", ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "affine_param": true]),
    ]

    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vq-nonfinite-\(UUID().uuidString)")

    /// `t` with one element replaced.
    func poisoned(_ t: Tensor, at i: Int, _ value: Float) -> Tensor {
        var scalars = t.scalars
        scalars[i] = value
        return Tensor(scalars, shape: t.shape)
    }

    /// A fresh module of the configuration, saved to `clean.safetensors` in ``dir``, and the file as read back.
    func savedFresh(_ name: String, _ kwargs: [String: Any]) throws -> (Module, SafeTensorsFile) {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = ModuleConfig(module: name, kwargs: kwargs)
        let module = try config.build()
        let clean = dir.appendingPathComponent("clean.safetensors")
        try QuantizerCheckpoint.save(module, config: config, to: clean)
        return (module, try SafeTensorsFile.read(contentsOf: clean))
    }

    @Test("every tensor of every quantizer: one NaN or ±∞ in a file is refused at load, naming the key; sentinels load",
          arguments: configs.indices)
    func everyTensor(_ c: Int) throws {
        let (name, kwargs) = Self.configs[c]
        defer { try? FileManager.default.removeItem(at: dir) }
        let (module, file) = try savedFresh(name, kwargs)   // a fresh state saves (sentinels included)
        let sentinels = Set(module.namedParameters().filter(\.1.mayHoldNonFinite).map(\.0))
        #expect(sentinels.isEmpty == (kwargs["affine_param"] == nil), "\(name): the affine codebook's batch statistics are its sentinels")
        var refused = 0
        for (n, key) in file.tensors.keys.sorted().enumerated() {
            let t = file.tensors[key]!.asFloat
            guard t.count > 0 else { continue }
            var bad = file
            let value: Float = [.nan, .infinity, -.infinity][n % 3]
            bad.tensors[key] = .float(poisoned(t, at: t.count / 2, value))
            let url = dir.appendingPathComponent("bad.safetensors")
            try bad.write(to: url)
            if sentinels.contains(key) {
                let (loaded, _) = try QuantizerCheckpoint.load(url)
                #expect(loaded.stateDict()[key]!.scalars[t.count / 2].isNaN || !loaded.stateDict()[key]!.scalars[t.count / 2].isFinite)
                continue
            }
            do {
                _ = try QuantizerCheckpoint.load(url)
                Issue.record("\(name): \(value) in \(key) was loaded")
            } catch let e as CheckpointError {
                #expect(e.reason == .nonFinite([.init(key: key, count: 1, total: t.count)]), "\(name) \(key): \(e)")
                #expect(e.description.contains(key) && e.description.contains(url.path), "\(e)")
                refused += 1
            }
        }
        let stored = file.tensors.values.filter { $0.asFloat.count > 0 }.count - sentinels.count
        #expect(refused == stored && (refused > 0 || name == "BinaryMapper"), "\(name): \(refused) of \(stored) tensors refused (BinaryMapper alone stores none)")
    }

    @Test("a state with NaN or ±∞ is never saved (it could not be loaded back), and nothing is written")
    func saveRefuses() throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let q = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))
        var state = q.stateDict()
        state["_codebook.embed"] = poisoned(state["_codebook.embed"]!, at: 5, .infinity)
        q.codebook.embed.overwriteBypassingGate(state["_codebook.embed"]!)
        let url = dir.appendingPathComponent("q.safetensors")
        #expect(throws: CheckpointError.self) { try QuantizerCheckpoint.save(q, to: url) }
        #expect(throws: CheckpointError.self) { try q.save(to: url) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty, "a refused save wrote a file")
    }

    @Test("an affine codebook round-trips its NaN batch statistics before the first batch, and finite ones after")
    func affineSentinels() throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.affineParam = true
        let q = try VectorQuantizer(c)
        let url = dir.appendingPathComponent("q.safetensors")
        try QuantizerCheckpoint.save(q, to: url)
        var (loaded, _) = try QuantizerCheckpoint.load(url)
        let before = loaded.stateDict()["_codebook.batch_mean"]!.scalars
        #expect(before.allSatisfy { $0.isNaN })
        _ = q(TestSupport.random([32, 8], seed: 1))
        try QuantizerCheckpoint.save(q, to: url)
        (loaded, _) = try QuantizerCheckpoint.load(url)
        let after = loaded.stateDict()["_codebook.batch_mean"]!.scalars
        #expect(after.allSatisfy { $0.isFinite })
        #expect(loaded.stateDict() == q.stateDict())
    }

    /// vq-fuzz --calls (seed 2004, case 24347): codes set near ±3e38 (finite, allowed) gave their affine variance
    /// 9e76 → ∞ in float, a state that could not be saved. Statistics beyond float saturate; ordinary ones are unchanged.
    @Test("an affine codebook's statistics of codes or batches beyond float's range saturate: the state stays finite and saves")
    func affineSaturation() throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.affineParam = true
        let q = try VectorQuantizer(c)
        var codes = TestSupport.random([8, 4], seed: 3).scalars
        codes[0] = 3e38
        codes[4] = -3e38
        try q.setCodes(Tensor(codes, shape: [8, 4]))
        var x = TestSupport.random([2, 6, 4], seed: 4).scalars
        x[1] = 1e30   // a finite row far past the others: its batch variance (1e59) is past float too
        _ = q(Tensor(x, shape: [2, 6, 4]))
        _ = q(TestSupport.random([2, 6, 4], seed: 5))
        let state = q.stateDict()
        #expect(q.nonFiniteValues().isEmpty, "\(q.nonFiniteValues())")
        #expect(state["_codebook.codebook_variance"]!.scalars[0] > 1e38)   // dimension 0 of the codes
        #expect(state["_codebook.batch_variance"]!.scalars[1] > 1e38)      // dimension 1 of the batch
        for key in ["_codebook.codebook_variance", "_codebook.batch_variance"] {
            #expect(state[key]!.scalars[2...].allSatisfy { $0 > 0 && $0 < 100 }, "\(key): the other dimensions' statistics are ordinary")
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try QuantizerCheckpoint.save(q, to: dir.appendingPathComponent("saturated.safetensors"))
    }

    /// Values outside a domain, each to be refused.
    static func outside(_ domain: ValueDomain, built: Float) -> [Float] {
        switch domain {
        case .finite: return []
        case .constant: return [built + 1, -built, 1e30]
        case .flag: return [0.5, 2, -1]
        case .nonNegative: return [-1, -1e-30]
        case .wholeNumbers(let r): return [0.5, Float(r.lowerBound) - 1, Float(r.upperBound) * 2, 1e30, -1e30]
        case .orthogonalProjectors: return [1e30, 0.5]
        }
    }

    @Test("LatentQuantize: learned values far past the grid (finite, from a file) give saturated Int32 indices, not a trap")
    func latentSaturation() throws {
        let lq = try LatentQuantize(LatentQuantize.Configuration(referenceKwargs: ["levels": [5, 5], "dim": 2]))
        let codes = Tensor([1e30, 0, -1e30, 0, 0.5, 0.5, 3e9, 0], shape: [4, 2])
        let indices = lq.codesToIndices(codes)
        #expect(indices.scalars[0] == Int(Int32.max) && indices.scalars[1] == Int(Int32.min))
        #expect(indices.scalars[2] == 24 && indices.scalars[3] == Int(Int32.max), "\(indices.scalars)")
    }

    @Test("a frozen subspace's projector loads when it is an orthogonal projector (any), and is refused when it is not")
    func projectors() throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var c = VectorQuantizerConfiguration(dim: 6, codebookSize: 8)
        c.heads = 2
        c.separateCodebookPerHead = true
        let q = try VectorQuantizer(c)
        try q.codebook.freeze(subspace: Tensor([0.6, 0.8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], shape: [2, 6]), head: 1)
        let url = dir.appendingPathComponent("q.safetensors")
        try QuantizerCheckpoint.save(q, to: url)
        let (loaded, _) = try QuantizerCheckpoint.load(url)
        #expect((loaded as! VectorQuantizer).codebook.frozenSubspaceRank(head: 1) == 2)
        let file = try SafeTensorsFile.read(contentsOf: url)
        let key = "_codebook.frozen_subspace_projector"
        let p = file.tensors[key]!.asFloat
        let d = q.codebook.dim, block = d * d
        #expect(p.shape == [2, d, d])
        // Another orthogonal projector (the first axis, in head 0) loads too: the domain is projectors, not these values.
        var other = p.scalars
        other[0] = 1
        var good = file
        good.tensors[key] = .float(Tensor(other, shape: p.shape))
        try good.write(to: url)
        _ = try QuantizerCheckpoint.load(url)
        // Not projectors: a huge entry (its trace trapped vq inspect as an Int), an asymmetric one, a scaled
        // projector (symmetric, P² ≠ P, trace not whole), a diagonal of 0.5 (P² ≠ P, trace whole).
        var scaled = p.scalars
        for i in block..<(2 * block) { scaled[i] *= 0.9 }
        var asymmetric = p.scalars
        asymmetric[block + 1] += 0.01
        var half = [Float](repeating: 0, count: 2 * block)
        (half[0], half[d + 1]) = (0.5, 0.5)
        for (name, values) in [("huge", poisoned(p, at: block, 1e30).scalars), ("asymmetric", asymmetric), ("scaled", scaled), ("half", half)] {
            var bad = file
            bad.tensors[key] = .float(Tensor(values, shape: p.shape))
            try bad.write(to: url)
            do {
                _ = try QuantizerCheckpoint.load(url)
                Issue.record("\(name): loaded")
            } catch let e as CheckpointError {
                guard case .outOfDomain(let v) = e.reason else { Issue.record("\(name): \(e)"); continue }
                #expect(v.map(\.key) == [key] && v[0].count == 1, "\(name): \(e)")
            }
        }
    }

    @Test("every constrained buffer of every quantizer: a value no run writes is refused at load, naming the key; the built values load",
          arguments: configs.indices)
    func everyDomain(_ c: Int) throws {
        let (name, kwargs) = Self.configs[c]
        defer { try? FileManager.default.removeItem(at: dir) }
        let (module, file) = try savedFresh(name, kwargs)
        _ = try QuantizerCheckpoint.load(dir.appendingPathComponent("clean.safetensors"))   // the built values are in their domains
        let constrained = module.namedParameters().filter { $0.1.domain != .finite && file.tensors[$0.0].map { $0.asFloat.count > 0 } == true }
        let codebooks = !(module as! any Quantizer).learnedCodebooks.isEmpty
        #expect(!constrained.isEmpty || !(codebooks || name.contains("LFQ")), "\(name): its counters, masks or bit weights have no domain")
        var refused = 0
        for (key, p) in constrained {
            let t = file.tensors[key]!.asFloat
            let i = t.count - 1
            for value in Self.outside(p.domain, built: t.scalars[i]) {
                var bad = file
                bad.tensors[key] = .float(poisoned(t, at: i, value))
                let url = dir.appendingPathComponent("bad.safetensors")
                try bad.write(to: url)
                do {
                    _ = try QuantizerCheckpoint.load(url)
                    Issue.record("\(name): \(value) in \(key) (\(p.domain.requirement)) was loaded")
                } catch let e as CheckpointError {
                    guard case .outOfDomain(let v) = e.reason else { Issue.record("\(name) \(key) \(value): \(e)"); continue }
                    #expect(v.map(\.key) == [key] && v[0].count == 1 && v[0].first == value, "\(name) \(key): \(e)")
                    refused += 1
                }
            }
        }
        #expect(refused == constrained.reduce(0) { $0 + Self.outside($1.1.domain, built: 0).count })
    }
    @Test("a training state's optimizer steps beyond the run's steps are refused, and a refused restore restores nothing")
    func optimizerStateBounds() throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 4, "codebook_size": 8, "codebook_dim": 2])
        let q = try config.build() as! any Quantizer
        q.train()
        let optimizer = Adam(parameters: q.trainableParameters())
        for seed in 0..<3 {
            let x = TestSupport.random([1, 16, 4], seed: UInt64(seed))
            let o = q.forward(vectors: x)
            q.zeroGradients()
            (Loss.mse(o.quantized, x) + o.loss).backward()
            optimizer.step()
        }
        let url = dir.appendingPathComponent("s.safetensors")
        let state = TrainingState(step: 3, cursor: 0, order: [0], dataRNG: SeededGenerator(seed: 1), losses: [1, 2, 3], signature: "t")
        try state.write(module: q, config: config, optimizer: optimizer, to: url)
        let written = try SafeTensorsFile.read(contentsOf: url)
        let stepKeys = written.tensors.keys.filter { $0.hasSuffix("/steps") }.sorted()
        #expect(stepKeys.count == 4, "\(stepKeys)")   // project_in/out weight and bias
        // The state as written restores every parameter: the control.
        let (q1, _, s1) = try TrainingState.read(url)
        let a1 = Adam(parameters: q1.trainableParameters())
        try s1.restore(a1, of: q1, path: url.path)
        #expect(q1.trainableParameters().allSatisfy { a1.stepCount(of: $0) == 3 })
        // Any one parameter's count past the run's steps — or one that overflowed when incremented — is refused,
        // and no parameter is restored (not even those checked before it).
        for key in stepKeys {
            for bad in [4, Int.max] {
                var file = written
                file.tensors[key] = .integer(IndexTensor([bad]))
                file.metadata["digest"] = TrainingState.digest(file)
                try file.write(to: url)
                let (q2, _, s2) = try TrainingState.read(url)
                let a2 = Adam(parameters: q2.trainableParameters())
                #expect(throws: TrainingStateError.self) { try s2.restore(a2, of: q2, path: url.path) }
                #expect(q2.trainableParameters().allSatisfy { a2.stepCount(of: $0) == 0 && a2.moments(of: $0) == nil }, "\(key) = \(bad): some restored")
            }
        }
    }
    @Test("counts near float's largest (finite, from a file): the smoothed counts stay finite, setCodes keeps embed_avg finite or refuses changing nothing, training stays finite")
    func hugeCounts() throws {
        let config = ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 4, "codebook_size": 8])
        let q = try config.build() as! VectorQuantizer
        var state = (q as Module).stateDict()
        state["_codebook.cluster_size"] = Tensor([Float](repeating: 3e38, count: 8), shape: [1, 8])   // Σ = 2.4e39: overflows float
        try q.load(stateDict: state)
        // (3e38 + ε) / (2.4e39 + 8ε) · 2.4e39 = 3e38 each (the reference's float formula: ∞/∞ = NaN).
        let smoothed = q.codebook.smoothedCounts()
        #expect(smoothed.allSatisfy { $0.isFinite && abs($0 - 3e38) <= 3e38 * 1e-6 }, "\(smoothed)")
        let codes = TestSupport.random([8, 4], seed: 3) * 1e-3
        try q.setCodes(codes)
        #expect(q.codes.scalars == codes.scalars)
        #expect((q as Module).stateDict()["_codebook.embed_avg"]!.scalars.allSatisfy { $0.isFinite })
        // Codes whose product with their count overflows float: refused, nothing changed.
        let before = (q as Module).stateDict()
        #expect(throws: CodebookError.self) { try q.setCodes(codes * 1e10) }
        #expect((q as Module).stateDict() == before)
        // Training on with such counts: the codes move and stay finite.
        q.train()
        _ = q.forward(vectors: TestSupport.random([1, 64, 4], seed: 4))
        #expect((q as Module).nonFiniteValues().isEmpty)
        #expect(q.codes.scalars != codes.scalars, "the EMA step moved no code")
    }
}


