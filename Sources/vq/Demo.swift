import ArgumentParser
import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// A small VQ-VAE: an MLP encoder to `tokens` latent vectors, a ``VectorQuantizer``, an MLP decoder.
final class DigitVQVAE: Module {
    let encoder: Sequential
    let decoder: Sequential
    var vq: VectorQuantizer
    let tokens: Int, latent: Int

    init(tokens: Int = 4, latent: Int = 8, hidden: Int = 128, codebookSize: Int, seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        self.tokens = tokens
        self.latent = latent
        encoder = Sequential(Linear(64, hidden, rng: &rng), Activation(.gelu), Linear(hidden, tokens * latent, rng: &rng))
        decoder = Sequential(Linear(tokens * latent, hidden, rng: &rng), Activation(.gelu), Linear(hidden, 64, rng: &rng),
                             Activation(.sigmoid))
        var c = VectorQuantizerConfiguration(dim: latent, codebookSize: codebookSize)
        c.decay = 0.9
        c.commitmentWeight = 0.25
        c.kmeansInit = true
        c.thresholdEMADeadCode = 1
        c.seed = seed
        vq = try VectorQuantizer(c)
        super.init()
    }

    /// Reconstruction, indices `[b, tokens]` and the VQ loss.
    func callAsFunction(_ x: Tensor) -> (recon: Tensor, indices: IndexTensor, vqLoss: Tensor) {
        let b = x.shape[0]
        let z = encoder(x).reshaped([b, tokens, latent])
        let q = vq(z)
        return (decoder(q.quantized.reshaped([b, tokens * latent])), q.indices, q.loss)
    }

    /// The codes of `x`'s tokens, in evaluation mode (`[b · tokens]`).
    func codes(of x: Tensor) -> [Int] {
        withMode(training: false) { withoutGradient { self(x).indices.scalars } }
    }

    /// How often each code is used by `x`'s tokens.
    func usage(of x: Tensor) -> [Int] {
        var counts = [Int](repeating: 0, count: vq.codebookSize)
        for i in codes(of: x) where i >= 0 { counts[i] += 1 }
        return counts
    }
}

struct DigitsData {
    let images: Tensor   // [n, 64] in [0, 1]
    let labels: [Int]

    /// The data set compiled into the tool (`Digits+Data.swift`), so `vq` runs wherever it is copied.
    static func load() throws -> DigitsData {
        var pixels: [Float] = [], labels: [Int] = []
        pixels.reserveCapacity(1797 * 64)
        for line in embedded.split(separator: "\n") {
            let bytes = Array(line.utf8)
            guard bytes.count == 65, (48...57).contains(bytes[0]), bytes.dropFirst().allSatisfy({ (97...113).contains($0) }) else {
                throw CLIError("the embedded digits data is damaged (rebuild vq)")
            }
            labels.append(Int(bytes[0]) - 48)
            for b in bytes.dropFirst() { pixels.append(Float(Int(b) - 97)) }
        }
        return DigitsData(images: Tensor(pixels, shape: [labels.count, 64]) / 16, labels: labels)
    }

    /// Rows whose label is in `classes`, split into training (4 of 5) and held-out (1 of 5) rows.
    func split(_ classes: ClosedRange<Int>) -> (train: Tensor, test: Tensor) {
        let rows = labels.indices.filter { classes.contains(labels[$0]) }
        let train = rows.enumerated().filter { $0.offset % 5 != 0 }.map(\.element)
        let test = rows.enumerated().filter { $0.offset % 5 == 0 }.map(\.element)
        return (images.indexSelect(axis: 0, IndexTensor(train)), images.indexSelect(axis: 0, IndexTensor(test)))
    }
}

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Staged training on handwritten digits: learn 0–4, then 5–9 with the first codes frozen, against a baseline.")

    @Option(help: "Folder for report.html.") var output = "."
    @Option(parsing: .unconditional, help: "Training steps per stage.") var steps = 600
    @Option(parsing: .unconditional, help: "Batch size.") var batchSize = 64
    @Option(parsing: .unconditional, help: "Random seed (the first of --seeds).") var seed: UInt64 = 0
    @Option(parsing: .unconditional, help: "Seeds to run (seed, seed+1, …): the table shows mean ± standard deviation and which claims hold on every seed.")
    var seeds = 5
    @Option(parsing: .unconditional, help: "Thread count (default: active cores).") var threads: Int?
    @Option(help: "What stage 2 trains besides the codebook: none (the network stays as stage 1 left it), encoder, or all.")
    var stage2Trains: Stage2 = .encoder

    @Option(parsing: .unconditional, help: "The converged-code policy of the policy run: TOL,PATIENCE.") var policy = "0.005,20"

    enum Stage2: String, ExpressibleByArgument, CaseIterable { case none, encoder, all }

    func validate() throws {
        guard steps >= 1 && steps <= 1_000_000 else { throw ValidationError("--steps \(steps) must be in 1…1000000") }
        guard batchSize >= 1 && batchSize <= 4096 else { throw ValidationError("--batch-size \(batchSize) must be in 1…4096") }
        guard seeds >= 1 && seeds <= 100 else { throw ValidationError("--seeds \(seeds) must be in 1…100") }
        _ = try convergedPolicy()
        try DataFiles.checkThreads(threads)
        try DataFiles.checkOutputFolder(output, option: "--output")
    }

    func run() throws {
        if let threads { Threads.count = threads }
        let data = try DigitsData.load()
        let (a, b) = (data.split(0...4), data.split(5...9))
        print("digits: \(a.train.shape[0] + b.train.shape[0]) training and \(a.test.shape[0] + b.test.shape[0]) held-out images (UCI, CC BY 4.0)")
        print("kernels: \(KernelLevel.name); \(seeds) seed\(seeds == 1 ? "" : "s") from \(seed), \(steps) steps per stage, batch \(batchSize)")
        var results: [DemoSeed] = []
        for k in 0..<seeds {
            let s = seed &+ UInt64(k)
            let r = try stages(seed: s, data: data, a: a, b: b, showProgress: k == 0)
            results.append(r)
            print("seed \(s): " + r.runs.map { String(format: "%@ %.4f/%.4f", $0.variant.rawValue, $0.mseA, $0.mseB) }.joined(separator: ", ")
                  + " (MSE 0–4/5–9)")
        }
        let summary = DemoSummary(seeds: results, stage1Codes: Self.stage1Codes, stage2Codes: Self.stage2Codes)
        print("")
        for line in summary.lines { print(line) }
        print("")
        for claim in summary.claims { print(claim.line) }
        let first = results[0]
        print("policy: \(first.policyFrozen.count) of \(Self.stage1Codes) codes froze during stage 1 of seed \(seed) (held-out 0–4 error \(String(format: "%.4f", first.policyStage1)) with the policy, \(String(format: "%.4f", first.stage1.mseA)) without)")

        let command = (["vq"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        let html = Report.page(summary: summary, detail: first, images: data, testA: a.test, testB: b.test,
                               setting: "\(command) — kernels \(KernelLevel.name), \(seeds) seeds from \(seed), \(steps) steps per stage, batch \(batchSize), stage 2 trains \(stage2Trains.rawValue)",
                               subspace: (Self.subspaceRank, 8), policy: (try convergedPolicy(), steps))
        let report = try DataFiles.writeReport(html, inFolder: output)
        print("report: \(report.path)")
        if !summary.frozenIdentical { throw CLIError("the frozen codes were not bit-identical in every run (see the table and \(report.path))") }
    }

    static let stage1Codes = 32, stage2Codes = 64

    /// Both stages for one seed: stage 1 on 0–4 (plainly, and with the policy), then the four stage-2 runs on 5–9.
    func stages(seed: UInt64, data: DigitsData, a: (train: Tensor, test: Tensor), b: (train: Tensor, test: Tensor), showProgress: Bool) throws -> DemoSeed {
        let (stage1Codes, stage2Codes) = (Self.stage1Codes, Self.stage2Codes)
        let model = try DigitVQVAE(codebookSize: stage1Codes, seed: seed)
        var curves: [String: [Float]] = [:]
        curves["stage 1"] = train(model, on: a.train, steps: steps, label: "stage 1 (0–4)", seed: seed &+ 1, showProgress: showProgress).losses
        let stage1 = (mseA: evaluate(model, a.test).mse, mseB: evaluate(model, b.test).mse, used: usage(model, data.images).used)
        let codesAfterStage1 = model.vq.codes
        let policyModel = try DigitVQVAE(codebookSize: stage1Codes, seed: seed)
        let policy = try convergedPolicy()
        try policyModel.vq.codebook.setFreezePolicy(policy)
        _ = train(policyModel, on: a.train, steps: steps, label: "stage 1 (0–4, converged policy)", seed: seed &+ 1, showProgress: showProgress)
        let policyFrozen = policyModel.vq.codebook.policyFrozenCodes()
        let policyStage1 = evaluate(policyModel, a.test).mse

        // Stage 2 (digits 5–9, 64 codes) from the stage-1 state, four ways.
        let basis = Analysis.principalSubspace(of: codesAfterStage1, rank: Self.subspaceRank)
        var runs: [DemoRun] = []
        for variant in DemoRun.Variant.allCases {
            let source = variant == .policy ? policyModel : model
            let m = try DigitVQVAE(codebookSize: stage1Codes, seed: seed)
            try m.load(stateDict: source.stateDict())
            m.vq = try source.vq.expanded(toCodebookSize: stage2Codes, freezeExisting: variant == .codes, seed: seed &+ 7)
            if variant == .subspace { try m.vq.codebook.freeze(subspace: basis) }
            if variant == .policy { try m.vq.codebook.setFreezePolicy(policy) }
            switch stage2Trains {
            case .none: m.freeze(keys: ["encoder", "decoder"])
            case .encoder: m.freeze(keys: ["decoder"])
            case .all: break
            }
            let t = train(m, on: b.train, steps: steps, label: "stage 2 (5–9, \(variant.rawValue))", seed: seed &+ 2, monitor: a.test,
                          showProgress: showProgress)
            curves["stage 2 \(variant.rawValue)"] = t.losses
            let old = m.vq.codes.slice(axis: 0, 0..<stage1Codes)
            let reference = variant == .policy ? policyModel.vq.codes : codesAfterStage1
            let changed = (0..<stage1Codes).filter { c in old.slice(axis: 0, c..<(c + 1)) != reference.slice(axis: 0, c..<(c + 1)) }.count
            // Token churn of the held-out 0–4 digits: the share of their tokens whose code is not the one stage 1 gave them.
            let before = source.codes(of: a.test), after = m.codes(of: a.test)
            let churn = Double(zip(before, after).filter { $0 != $1 }.count) / Double(max(before.count, 1))
            runs.append(DemoRun(variant: variant, model: m, losses: t.losses, forgetting: t.monitored, mseA: evaluate(m, a.test).mse,
                                mseB: evaluate(m, b.test).mse, used: usage(m, data.images).used, changed: changed, churnA: churn))
        }
        return DemoSeed(seed: seed, stage1: stage1, stage1Model: model, runs: runs, curves: curves, policyFrozen: policyFrozen,
                        policyStage1: policyStage1)
    }

    /// `--policy TOL,PATIENCE`: a code that moved less than TOL (relative) in PATIENCE consecutive updates in
    /// which it was used is frozen.
    func convergedPolicy() throws -> ConvergedPolicy {
        let parts = policy.split(separator: ",").map { String($0) }
        guard parts.count == 2, let tol = Float(parts[0]), tol.isFinite, tol >= 0, let patience = Int(parts[1]), patience >= 1 else {
            throw ValidationError("--policy '\(policy)': TOL,PATIENCE, e.g. 0.005,20")
        }
        return .converged(tolerance: tol, patience: patience)
    }
    /// The rank of the principal subspace of the stage-1 codes that the subspace run freezes (of 8).
    static let subspaceRank = 4

    /// Adam on the encoder and decoder; EMA on the codebook. Returns the loss per step and, with `monitor`,
    /// the held-out error on it about every twentieth of the run (the forgetting curve).
    func train(_ m: DigitVQVAE, on x: Tensor, steps: Int, label: String, seed: UInt64, monitor: Tensor? = nil, showProgress: Bool = true)
        -> (losses: [Float], monitored: [(step: Int, mse: Float)])
    {
        m.train()
        // Parameters frozen by key are skipped by the optimizer (the same mechanism that freezes code rows).
        let opt = Adam(parameters: m.encoder.trainableParameters() + m.decoder.trainableParameters(), learningRate: 2e-3)
        var rng = SeededGenerator(seed: seed)
        var progress = Progress(label, total: steps)
        var losses: [Float] = []
        var monitored: [(step: Int, mse: Float)] = []
        let every = max(1, steps / 20)
        if let monitor { monitored.append((0, m.withMode(training: false) { evaluate(m, monitor).mse })) }
        let n = x.shape[0]
        var counts = [Int](repeating: 0, count: m.vq.codebookSize)
        for step in 1...steps {
            let batch = x.indexSelect(axis: 0, IndexTensor((0..<batchSize).map { _ in rng.nextInt(below: n) }))
            let out = m(batch)
            let loss = Loss.mse(out.recon, batch) + out.vqLoss
            opt.zeroGradients()
            loss.backward()
            opt.step()
            losses.append(loss.item)
            for i in out.indices.scalars where i >= 0 { counts[i] += 1 }
            if let monitor, step % every == 0 || step == steps {
                monitored.append((step, m.withMode(training: false) { evaluate(m, monitor).mse }))
            }
            if showProgress && (step % 20 == 0 || step == steps) {
                progress.update(step, loss: loss.item, usage: counts.filter { $0 > 0 }.count, codes: counts.count,
                                perplexity: perplexity(counts))
                counts = [Int](repeating: 0, count: counts.count)
            }
        }
        return (losses, monitored)
    }

    func evaluate(_ m: DigitVQVAE, _ x: Tensor) -> (mse: Float, recon: Tensor) {
        let r = m.withMode(training: false) { withoutGradient { m(x).recon } }
        return (Loss.mse(r, x).item, r)
    }

    func usage(_ m: DigitVQVAE, _ x: Tensor) -> (used: Int, counts: [Int]) {
        let counts = m.usage(of: x)
        return (counts.filter { $0 > 0 }.count, counts)
    }
}
