// Structured mutation fuzzing: configurations of every quantizer of the registry (every keyword, values and
// types mutated), resumable training states (tensors, shapes and metadata mutated, the digest recomputed so
// the checks behind it are reached) and checkpoints of every quantizer (values of every tensor set to extremes).
// Each case must build and run, or be refused with a typed error — never trap, hang or allocate without bound. Deterministic for a seed: a crash names its case index and seed.
import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// Values a keyword may take after mutation: sizes small and absurd, fractions, non-finite numbers, every
/// JSON type, layer texts (some huge), optimizer texts, nested lists and objects.
enum MutationValues {
    nonisolated(unsafe) static let pool: [Any] = [
        -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 64, 255, 256, 1024, 65536, 1 << 20, 1 << 31, 1 << 40, 1 << 62, Int.max, Int.min,
        0.0, -0.0, 0.5, 1.5, -1.0, 1e-30, 1e30, 1e300, Double.nan, Double.infinity, -Double.infinity,
        true, false, NSNull(),
        "", "x", "nn.Linear(8, 8)", "nn.Linear(6, 8)", "nn.Linear(8, 6)", "nn.Linear(65536, 65536)", "nn.Linear(8, 8, bias = False)",
        "nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))", "nn.Sequential(" + String(repeating: "nn.Sequential(", count: 20),
        "partial(torch.optim.Adam, lr=0.01)", "partial(torch.optim.SGD, lr=1e9, momentum=0.9)", "tanh", "relu",
        [Int](), [8, 5, 5], [2], [1, 4, 16], [[2, 3], [4, 6]], [0], [-1, 3], [1 << 20, 1 << 20], [1.5, 2], ["a"], [1.4, 1.3, 1.6],
        [1, 2, 3, 4, 5, 6, 7, 8], [String: Any](), ["dim_hidden": 8, "depth": 2], ["dim_hidden": 1 << 30, "depth": 64],
    ]
}

/// What `vq-fuzz` mutates: configurations, resumable states or checkpoints.
enum FuzzMode: String {
    case configs = "configurations", states = "states", checkpoints = "checkpoints", calls = "calls"
}

/// One seeded generator of configurations.
struct ConfigMutator {
    var rng: SeededGenerator
    let allKeywords: [String] = Array(Set(QuantizerRegistry.kinds.flatMap(\.keywords))).sorted()

    init(seed: UInt64) { rng = SeededGenerator(seed: seed) }

    mutating func pick<T>(_ a: [T]) -> T { a[rng.nextInt(below: a.count)] }

    /// A registry kind's example with one to four mutations: a keyword of the kind (mostly), of another kind,
    /// or unknown, set to a pool value or a small integer; or a keyword removed.
    mutating func next() -> ModuleConfig {
        let kind = pick(QuantizerRegistry.kinds)
        var kw = kind.example
        let own = kind.keywords.sorted()
        for _ in 0...rng.nextInt(below: 4) {
            let r = rng.nextInt(below: 20)
            let key = r < 16 ? pick(own) : (r < 19 ? pick(allKeywords) : "no_such_keyword")
            if rng.nextInt(below: 8) == 0 {
                kw[key] = nil
            } else {
                kw[key] = rng.nextInt(below: 3) == 0 ? rng.nextInt(below: 12) : pick(MutationValues.pool)
            }
        }
        return ModuleConfig(module: kind.name, kwargs: kw)
    }
}

/// What a configuration from a file goes through: JSON (when it can be written as JSON), the build, then a
/// training forward with gradients, encoding, decoding (of its own and of damaged indices) and a checkpoint's
/// save and load.
func runConfiguration(_ original: ModuleConfig, rng: inout SeededGenerator, scratch: URL) {
    var config = original
    if let data = try? JSONSerialization.data(withJSONObject: ["module": config.module, "kwargs": config.kwargs]),
       let parsed = try? ModuleConfig.parse(data) {
        config = parsed
    }
    guard let module = try? config.build(), let q = module as? any Quantizer else { return }
    let unit = q.sequenceShape ?? [5]
    let batch = rng.nextInt(below: 8) == 0 ? 0 : 2   // an empty batch one time in eight
    var x = Tensor.randomNormal([batch] + unit + [q.inputDim], using: &rng)
    let extremes = rng.nextInt(below: 4) == 0
    if extremes { x = withExtremes(x, rng: &rng) }
    let vectors = x.reshaped([batch, unit.reduce(1, *), q.inputDim])
    q.train()
    let out = q.forward(vectors: vectors)
    if out.loss.count == 1, q.trainableParameters().contains(where: { _ in true }), out.quantized.requiresGradient || out.loss.requiresGradient {
        (out.loss + out.quantized.sum() * 0).backward()
    }
    q.eval()
    guard q.isInitialised else { return }
    if !extremes { requireDecodesForward(q, vectors, config) }
    if !extremes && rng.nextInt(below: 16) == 0 { requireThreadIndependent(config, rng: &rng) }
    let indices = q.encode(x)
    _ = try? q.decode(indices)
    if indices.count > 0 {
        var damaged = indices.scalars
        damaged[rng.nextInt(below: damaged.count)] = [-2, -1, Int(Int32.max), q.codebookSizes.max() ?? 0][rng.nextInt(below: 4)]
        _ = try? q.decode(IndexTensor(damaged, shape: indices.shape))
    }
    if rng.nextInt(below: 32) == 0 {
        let url = scratch.appendingPathComponent("fuzz.safetensors")
        if (try? QuantizerCheckpoint.save(q, config: config, to: url)) != nil { _ = try? QuantizerCheckpoint.load(url) }
    }
}

/// `decode` of an evaluation forward's indices is that forward's output (within 1e-4 of its scale), on ordinary inputs
/// whose output is finite — the promise `vq decode` makes (DecodePropertyTests checks it on keyword pairs; here on the
/// mutated configurations).
func requireDecodesForward(_ q: any Quantizer, _ vectors: Tensor, _ config: ModuleConfig) {
    guard !(q is RandomProjectionQuantizer) else { return }   // no way back
    let out = withoutGradient { q.forward(vectors: vectors) }
    guard out.indices.count > 0, out.quantized.scalars.allSatisfy(\.isFinite), let decoded = try? q.decode(out.indices) else { return }
    let scale = Swift.max(1, out.quantized.scalars.map(abs).max() ?? 0)
    let worst = zip(decoded.scalars, out.quantized.scalars).map { abs($0 - $1) }.max() ?? 0
    require(decoded.count == out.quantized.count && worst <= 1e-4 * scale,
            "vq-fuzz: \(config.module) \(config.kwargs): decoding the forward's indices gives other vectors (\(worst) of \(scale), shapes \(decoded.shape) / \(out.quantized.shape))")
}

/// How many configurations ``requireThreadIndependent(_:rng:)`` compared (printed at the end of a run).
nonisolated(unsafe) var threadChecks = 0

/// Two builds of `config` trained two steps — the forward, then Adam on the reconstruction and the loss — on the same
/// batch of at least 2¹⁷ values (so the kernels split their work), one on one thread and one on two, must hold the same
/// bits in every tensor of their state and give the same outputs: the library's promise of results that do not depend
/// on the thread count. `vq-fuzz --configs` asks it of one built configuration in 16 with ordinary input.
func requireThreadIndependent(_ config: ModuleConfig, rng: inout SeededGenerator) {
    guard let probe = try? config.build() as? any Quantizer else { return }
    let unit = probe.sequenceShape ?? [4096 / Swift.max(1, probe.inputDim) + 1]
    let perItem = unit.reduce(1, *) * probe.inputDim
    let batch = Swift.max(2, (1 << 17) / Swift.max(1, perItem) + 1)
    guard perItem > 0, batch * perItem <= 1 << 21 else { return }
    let x = Tensor.randomNormal([batch, unit.reduce(1, *), probe.inputDim], using: &rng)
    func run(_ threads: Int) -> [String: [UInt32]]? {
        Threads.with(threads) {
            guard let q = try? config.build() as? any Quantizer else { return nil }
            q.train()
            let optimizer = Adam(parameters: q.trainableParameters())
            var outputs: [String: [UInt32]] = [:]
            for step in 0..<2 {
                let o = q.forward(vectors: x)
                guard o.quantized.shape == x.shape else { return nil }
                q.zeroGradients()
                (Loss.mse(o.quantized, x) + o.loss).backward()
                optimizer.step()
                outputs["step \(step) quantized"] = o.quantized.scalars.map(\.bitPattern)
                outputs["step \(step) loss"] = o.loss.scalars.map(\.bitPattern)
                outputs["step \(step) indices"] = o.indices.scalars.map { UInt32(truncatingIfNeeded: $0) }
            }
            for (key, t) in (q as Module).stateDict() { outputs[key] = t.scalars.map(\.bitPattern) }
            return outputs
        }
    }
    guard let one = run(1), let two = run(2) else { return }
    threadChecks += 1
    let differing = one.keys.sorted().filter { one[$0] != two[$0] }
    require(differing.isEmpty && one.keys.sorted() == two.keys.sorted(),
            "vq-fuzz: \(config.module) \(config.kwargs): one thread and two give other bits in \(differing.prefix(6)) (batch \(x.shape))")
}

/// A valid resumable state to mutate: a small VQ trained a few steps, written once.
enum StateFixture {
    /// A state with every kind of entry: a model with parameters learned by gradient (projections) beside an EMA
    /// codebook, so Adam's moments and step counts (`optim/…`) are in it too.
    static func make(in dir: URL) -> (SafeTensorsFile, URL) {
        let config = ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 4, "codebook_size": 8, "codebook_dim": 2, "kmeans_init": true])
        let q = try! config.build() as! any Quantizer
        var rng = SeededGenerator(seed: 1)
        q.train()
        let optimizer = Adam(parameters: q.trainableParameters())
        for _ in 0..<3 { gradientStep(q, optimizer, Tensor.randomNormal([1, 16, 4], using: &rng)) }
        let state = TrainingState(step: 3, cursor: 5, order: Array(0..<16), dataRNG: SeededGenerator(seed: 2), losses: [1, 2, 3],
                                  signature: "fuzz", options: ["--codebook-size": "8"])
        let url = dir.appendingPathComponent("state.safetensors")
        try! state.write(module: q, config: config, optimizer: optimizer, to: url)
        return (try! SafeTensorsFile.read(contentsOf: url), url)
    }

    /// One step as `vq train` takes it for such a model: the forward, then Adam on the reconstruction and the loss.
    static func gradientStep(_ q: any Quantizer, _ optimizer: Adam, _ x: Tensor) {
        let o = q.forward(vectors: x)
        q.zeroGradients()
        (Loss.mse(o.quantized, x) + o.loss).backward()
        optimizer.step()
    }
}

/// Mutates a state file's tensors or metadata, recomputes the digest (or, one time in eight, leaves it or
/// flips a raw byte), and reads it as `vq train --resume` does.
func runState(_ base: SafeTensorsFile, rng: inout SeededGenerator, url: URL) {
    var file = base
    for _ in 0...rng.nextInt(below: 3) {
        let keys = file.tensors.keys.sorted(), metaKeys = file.metadata.keys.sorted()
        guard !keys.isEmpty, !metaKeys.isEmpty else { break }
        switch rng.nextInt(below: 6) {
        case 0:  // a value
            let k = keys[rng.nextInt(below: keys.count)]
            switch file.tensors[k]! {
            case .float(let t) where t.count > 0:
                var s = t.scalars
                s[rng.nextInt(below: s.count)] = [Float.nan, .infinity, -1, 0, 1e30, 7][rng.nextInt(below: 6)]
                file.tensors[k] = .float(Tensor(s, shape: t.shape))
            case .integer(let t) where t.count > 0:
                var s = t.scalars
                s[rng.nextInt(below: s.count)] = [-1, 0, 1, 16, 1 << 40, Int.min, Int.max, 4][rng.nextInt(below: 8)]
                file.tensors[k] = .integer(IndexTensor(s, shape: t.shape))
            default: break
            }
        case 1:  // a shape
            let k = keys[rng.nextInt(below: keys.count)]
            let t = file.tensors[k]!.asFloat
            file.tensors[k] = .float(rng.nextInt(below: 2) == 0 ? t.reshaped([t.count]) : Tensor.zeros([t.count + 1]))
        case 2: file.tensors[keys[rng.nextInt(below: keys.count)]] = nil
        case 3:  // a metadata entry
            let k = metaKeys[rng.nextInt(below: metaKeys.count)]
            file.metadata[k] = ["", "-1", "0", "99999999999999999999", "{}", "{\"module\": \"ResidualVQ\", \"kwargs\": {\"dim\": 4}}",
                                "{\"module\": \"VectorQuantize\", \"kwargs\": {\"dim\": 4, \"codebook_size\": 1073741824}}", "x"][rng.nextInt(below: 8)]
        case 4: file.metadata[metaKeys[rng.nextInt(below: metaKeys.count)]] = nil
        default: file.tensors["model/extra"] = .float(Tensor.zeros([3]))
        }
    }
    file.metadata["digest"] = TrainingState.digest(file)
    guard var bytes = try? file.serialized() else { return }
    switch rng.nextInt(below: 8) {
    case 0: bytes[rng.nextInt(below: bytes.count)] ^= UInt8(1 << rng.nextInt(below: 8))
    case 1: bytes = bytes.prefix(rng.nextInt(below: bytes.count))
    default: break
    }
    guard (try? bytes.write(to: url)) != nil else { return }
    guard let (q, _, state) = try? TrainingState.read(url) else { return }
    // A state that reads must also train on, as `--resume` does: Adam's state restored (or refused, restoring
    // nothing), then steps of its model with gradients.
    q.train()
    let optimizer = Adam(parameters: q.trainableParameters())
    let restored = (try? state.restore(optimizer, of: q, path: url.path)) != nil
    if !restored {
        for p in q.trainableParameters() { precondition(optimizer.stepCount(of: p) == 0, "a refused restore changed the optimizer") }
    }
    for _ in 0..<2 { StateFixture.gradientStep(q, optimizer, Tensor.randomNormal([1, 4, q.inputDim], using: &rng)) }
    _ = state.order.count
}

/// Extreme values a tensor from outside may hold: non-finite, huge, negative, fractional, past Int32 or float's whole
/// numbers, denormal.
let extremeValues: [Float] = [.nan, .infinity, -.infinity, -1, 0, -0.0, 0.5, 1, 2, 7, 1e30, -1e30, 2147483648, 16777218,
                              .leastNormalMagnitude / 1024, 65536]

/// `x` (input vectors) with one to five values set to extremes, a quarter of the time scaled far from the codes first.
func withExtremes(_ x: Tensor, rng: inout SeededGenerator) -> Tensor {
    var s = x.scalars
    guard !s.isEmpty else { return x }
    if rng.nextInt(below: 4) == 0 {
        let scale = [Float(1e-30), 1e15, 1e30, 3e38][rng.nextInt(below: 4)]
        s = s.map { $0 * scale }
    }
    for _ in 0...rng.nextInt(below: 4) { s[rng.nextInt(below: s.count)] = extremeValues[rng.nextInt(below: extremeValues.count)] }
    return Tensor(s, shape: x.shape)
}

/// Checkpoints of every quantizer of the registry to damage: each example trained one step, and where it has learned
/// codebooks, with a frozen code, a frozen component, a frozen subspace and a converged-code policy that has run —
/// so every buffer a file can hold is non-trivial.
enum CheckpointFixture {
    /// Every kind's example, and variants with more buffers: affine statistics, heads, cosine codes, a learnable
    /// codebook, an implicit neural codebook, a codebook smaller than its dimension.
    nonisolated(unsafe) static let configurations: [ModuleConfig] = {
        let variants: [(String, [String: Any])] = [
            ("VectorQuantize", ["dim": 8, "codebook_size": 16, "affine_param": true]),
            ("VectorQuantize", ["dim": 8, "codebook_size": 16, "heads": 2, "separate_codebook_per_head": true, "use_cosine_sim": true]),
            ("VectorQuantize", ["dim": 8, "codebook_size": 16, "learnable_codebook": true, "ema_update": false]),
            ("VectorQuantize", ["dim": 8, "codebook_size": 16, "codebook_dim": 4, "kmeans_init": true]),
            ("ResidualVQ", ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "codebook_dim": 4, "implicit_neural_codebook": true]),
            ("ResidualVQ", ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "affine_param": true, "shared_codebook": true]),
            ("FSQ", ["levels": [8, 5, 5], "dim": 8, "orthogonal_rotation": true]),
            ("LFQ", ["dim": 8, "codebook_size": 64, "orthogonal_rotation": true]),
        ]
        return (QuantizerRegistry.kinds.map { ($0.name, $0.example) } + variants).map { ModuleConfig(module: $0.0, kwargs: $0.1) }
    }()

    /// ``configurations`` and `count` more drawn from `seed`: configurations the reference runs (the accepted cases
    /// of `reference_acceptance.json`, every keyword of every kind at pool values, and pairs and triples of them) — or,
    /// when this build has no package tree beside it, as the configuration fuzzer draws them — kept when they build
    /// through JSON, hold at most 50 000 values and are prepared (``prepared(_:rng:)``) — deterministically, so a seed's
    /// cases replay on any machine. Each seed damages, and calls into, quantizers no fixed list names.
    static func configurations(seed: UInt64, drawn count: Int) -> [ModuleConfig] {
        var rng = SeededGenerator(seed: seed ^ 0xF1C)
        var mutator = ConfigMutator(seed: seed ^ 0xC0DE)
        let accepted = referenceAccepted()
        var extra: [ModuleConfig] = []
        for _ in 0..<count * 20 where extra.count < count {
            let c = accepted.isEmpty ? mutator.next() : accepted[rng.nextInt(below: accepted.count)]
            guard let data = try? JSONSerialization.data(withJSONObject: ["module": c.module, "kwargs": c.kwargs]),
                  let parsed = try? ModuleConfig.parse(data), let built = try? parsed.build(),
                  built.stateDict().values.reduce(0, { $0 + $1.count }) <= 50_000 else { continue }
            guard prepared(parsed, rng: &rng) != nil else { continue }
            extra.append(parsed)
        }
        return configurations + extra
    }

    /// The configurations vector-quantize-pytorch runs, from the package's `reference_acceptance.json` (empty when the
    /// file is not where this source file's package keeps it).
    static func referenceAccepted() -> [ModuleConfig] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Tests/VectorQuantizeTests/Fixtures/reference_acceptance.json")
        guard let data = try? Data(contentsOf: url), let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let cases = json["cases"] as? [[String: Any]] else { return [] }
        return cases.compactMap { c in
            guard c["accepted"] as? Bool == true, let module = c["module"] as? String, let kwargs = c["kwargs"] as? [String: Any] else { return nil }
            return ModuleConfig(module: module, kwargs: kwargs)
        }
    }

    /// `config` built and trained two steps, with a frozen code, a frozen component, a frozen subspace and a
    /// converged-code policy on every learned codebook (so every buffer is non-trivial).
    static func prepared(_ config: ModuleConfig, rng: inout SeededGenerator) -> (any Quantizer)? {
        guard let q = try? config.build() as? any Quantizer else { return nil }
        let unit = q.sequenceShape ?? [8]
        let x = Tensor.randomNormal([2, unit.reduce(1, *), q.inputDim], using: &rng)
        for book in q.learnedCodebooks {
            try? book.freeze(codes: [0])
            try? book.freeze(dimensions: [0])
            var basis = [Float](repeating: 0, count: book.dim)
            basis[book.dim - 1] = 1
            try? book.freeze(subspace: Tensor(basis, shape: [1, book.dim]), head: 0)
            try? book.setFreezePolicy(.converged(tolerance: 0.5, patience: 1))
        }
        q.train()
        for _ in 0..<2 { _ = q.forward(vectors: x) }
        q.eval()
        return q
    }

    static func make(_ configurations: [ModuleConfig]) -> [SafeTensorsFile] {
        var rng = SeededGenerator(seed: 3)
        let fixtures: [SafeTensorsFile] = configurations.compactMap { config in
            guard let q = prepared(config, rng: &rng) else { return nil }
            var file = SafeTensorsFile(metadata: ["config_json": String(decoding: (try? config.serialized()) ?? Data(), as: UTF8.self)])
            for (key, t) in (q as Module).stateDict() { file.tensors[key] = .float(t) }
            return file   // the configuration travels in the metadata, as in the tool's checkpoints
        }
        precondition(fixtures.count == configurations.count, "vq-fuzz: a checkpoint fixture does not build")
        return fixtures
    }
}

/// Sets one to three values of a checkpoint (every tensor of every quantizer) to extremes — non-finite, huge, negative,
/// fractional, past Int32 or float's whole numbers — or a whole tensor to one of them, and reads it as every `vq`
/// command does; when it loads, uses it as they do: what `vq inspect` reports per codebook, encoding, decoding, a
/// training forward with a policy, and a save — half the time on input vectors with extremes too.
func runCheckpoint(_ base: [SafeTensorsFile], rng: inout SeededGenerator, url: URL) {
    var file = base[rng.nextInt(below: base.count)]
    for _ in 0...rng.nextInt(below: 3) {
        let keys = file.tensors.keys.sorted()
        guard !keys.isEmpty else { return }
        let k = keys[rng.nextInt(below: keys.count)]
        let t = file.tensors[k]!.asFloat
        guard t.count > 0 else { continue }
        var s = t.scalars
        let v = extremeValues[rng.nextInt(below: extremeValues.count)]
        if rng.nextInt(below: 4) == 0 { s = [Float](repeating: v, count: s.count) } else { s[rng.nextInt(below: s.count)] = v }
        file.tensors[k] = .float(Tensor(s, shape: t.shape))
    }
    guard (try? file.write(to: url)) != nil, let (q, _) = try? QuantizerCheckpoint.loadQuantizer(url) else { return }
    for book in q.learnedCodebooks {
        for h in 0..<book.numCodebooks {
            _ = (book.frozenCodeIndices(head: h), book.frozenDimensions(head: h), book.frozenSubspaceRank(head: h), book.policyFrozenCodes(head: h))
        }
        try? book.setFreezePolicy(.converged(tolerance: 0.5, patience: 1))
    }
    let unit = q.sequenceShape ?? [5]
    var x = Tensor.randomNormal([2] + unit + [q.inputDim], using: &rng)
    if rng.nextInt(below: 2) == 0 { x = withExtremes(x, rng: &rng) }
    if q.isInitialised {
        let indices = q.encode(x)
        _ = try? q.decode(indices)
    }
    q.train()
    _ = q.forward(vectors: x.reshaped([2, unit.reduce(1, *), q.inputDim]))
    q.eval()
    _ = try? QuantizerCheckpoint.save(q, to: url.deletingLastPathComponent().appendingPathComponent("resaved.safetensors"))
}

/// `vq-fuzz --configs N [--seed S]`, `vq-fuzz --states N [--seed S]` and `vq-fuzz --checkpoints N [--seed S]`: N
/// structured cases; the case about to run is written to `case.txt` in the scratch folder first, so a crash leaves it
/// behind.
func runStructured(_ mode: FuzzMode, count: Int, seed: UInt64) {
    // Bound the address space: an allocation bomb fails (and is reported) instead of exhausting the machine.
    var limit = rlimit(rlim_cur: 16 << 30, rlim_max: 16 << 30)
    setrlimit(Int32(RLIMIT_AS.rawValue), &limit)
    let caseFile = Fixtures.dir.appendingPathComponent("case.txt")
    var mutator = ConfigMutator(seed: seed)
    var rng = SeededGenerator(seed: seed ^ 0xF022)
    let base = mode == .states ? StateFixture.make(in: Fixtures.dir) : nil
    // Quantizers for the checkpoint and call modes: the fixed list and 40 drawn from the seed.
    let fixtureConfigs = mode == .checkpoints || mode == .calls ? CheckpointFixture.configurations(seed: seed, drawn: 40) : []
    let checkpoints = mode == .checkpoints ? CheckpointFixture.make(fixtureConfigs) : []
    if !fixtureConfigs.isEmpty {
        print("\(fixtureConfigs.count) quantizers: \(CheckpointFixture.configurations.count) fixed, \(fixtureConfigs.count - CheckpointFixture.configurations.count) drawn")
        if ProcessInfo.processInfo.environment["VQ_FUZZ_SHOW"] == "quantizers" {
            for c in fixtureConfigs { print("  \(c.module) \(c.kwargs)") }
        }
    }
    let started = Date()
    for i in 0..<count {
        if mode == .calls {
            try? Data("seed \(seed) call case \(i)\n".utf8).write(to: caseFile)
            traceCase = ProcessInfo.processInfo.environment["VQ_FUZZ_TRACE"] == "\(i)"
            runCalls(fixtureConfigs, rng: &rng, scratch: Fixtures.dir)
        } else if mode == .checkpoints {
            try? Data("seed \(seed) checkpoint case \(i)\n".utf8).write(to: caseFile)
            runCheckpoint(checkpoints, rng: &rng, url: Fixtures.dir.appendingPathComponent("damaged.safetensors"))
        } else if mode == .configs {
            let c = mutator.next()
            let text = (try? JSONSerialization.data(withJSONObject: ["module": c.module, "kwargs": c.kwargs.mapValues { v -> Any in
                if let d = v as? Double, !d.isFinite { return "\(d)" }
                return v
            }])).map { String(decoding: $0, as: UTF8.self) } ?? "\(c.module) \(c.kwargs)"
            try? Data("seed \(seed) case \(i): \(text)\n".utf8).write(to: caseFile)
            runConfiguration(c, rng: &rng, scratch: Fixtures.dir)
        } else {
            try? Data("seed \(seed) state case \(i)\n".utf8).write(to: caseFile)
            runState(base!.0, rng: &rng, url: base!.1.deletingLastPathComponent().appendingPathComponent("mutated.safetensors"))
        }
        if (i + 1) % 10_000 == 0 {
            FileHandle.standardOutput.write(Data("\(i + 1) cases, \(Int(Date().timeIntervalSince(started))) s\n".utf8))
        }
    }
    if mode == .calls {
        print(callTally.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.ok) ok / \($0.value.threw) threw" }.joined(separator: ", "))
    }
    if mode == .configs { print("\(threadChecks) configurations trained on one thread and on two: the same bits") }
    print("\(count) \(mode.rawValue.dropLast()) cases (seed \(seed)): no trap")
    try? FileManager.default.removeItem(at: Fixtures.dir)  // a crash leaves it, with case.txt
}
