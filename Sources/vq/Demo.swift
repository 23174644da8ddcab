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
}

struct DigitsData {
    let images: Tensor   // [n, 64] in [0, 1]
    let labels: [Int]

    static func load() throws -> DigitsData {
        guard let url = Bundle.module.url(forResource: "digits", withExtension: nil)?.appendingPathComponent("digits.safetensors") else {
            throw CLIError("the digits data set is missing from the vq bundle")
        }
        let file = try SafeTensorsFile.read(contentsOf: url)
        guard let images = file.tensors["images"]?.asFloat, let labels = file.tensors["labels"]?.asIndices else {
            throw CLIError("\(url.path): needs tensors 'images' and 'labels'")
        }
        return DigitsData(images: images / 16, labels: labels.scalars)
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
    @Option(parsing: .unconditional, help: "Random seed.") var seed: UInt64 = 0
    @Option(parsing: .unconditional, help: "Thread count (default: active cores).") var threads: Int?
    @Option(help: "What stage 2 trains besides the codebook: none (the network stays as stage 1 left it), encoder, or all.")
    var stage2Trains: Stage2 = .encoder

    enum Stage2: String, ExpressibleByArgument, CaseIterable { case none, encoder, all }

    func validate() throws {
        guard steps > 0, batchSize > 0 else { throw ValidationError("--steps and --batch-size must be positive") }
        if let threads, threads < 1 { throw ValidationError("--threads must be ≥ 1") }
    }

    func run() throws {
        if let threads { Threads.count = threads }
        let data = try DigitsData.load()
        let (a, b) = (data.split(0...4), data.split(5...9))
        print("digits: \(a.train.shape[0] + b.train.shape[0]) training and \(a.test.shape[0] + b.test.shape[0]) held-out images (UCI, CC BY 4.0)")
        let stage1Codes = 32, stage2Codes = 64

        // Stage 1: digits 0–4.
        let model = try DigitVQVAE(codebookSize: stage1Codes, seed: seed)
        var curves: [String: [Float]] = [:]
        curves["stage 1"] = train(model, on: a.train, steps: steps, label: "stage 1 (0–4)", seed: seed &+ 1)
        let afterStage1 = (evaluate(model, a.test), evaluate(model, b.test))
        let codesAfterStage1 = model.vq.codes

        // Stage 2, twice from the same stage-1 state: frozen old codes vs. the baseline.
        var runs: [(name: String, model: DigitVQVAE)] = []
        for freeze in [true, false] {
            let m = try DigitVQVAE(codebookSize: stage1Codes, seed: seed)
            try m.load(stateDict: model.stateDict())
            m.vq = try model.vq.expanded(toCodebookSize: stage2Codes, freezeExisting: freeze, seed: seed &+ 7)
            let name = freeze ? "frozen" : "baseline"
            switch stage2Trains {
            case .none: m.freeze(keys: ["encoder", "decoder"])
            case .encoder: m.freeze(keys: ["decoder"])
            case .all: break
            }
            curves["stage 2 \(name)"] = train(m, on: b.train, steps: steps, label: "stage 2 (5–9, \(name))", seed: seed &+ 2)
            runs.append((name, m))
        }

        // The table.
        print("")
        print("                         recon MSE 0–4   recon MSE 5–9   codes used (0–9)   stage-1 codes changed")
        print(String(format: "after stage 1            %13.4f   %13.4f   %9d/%-3d", afterStage1.0.mse, afterStage1.1.mse,
                     usage(model, data.images).used, stage1Codes))
        var frozenIdentical = false
        for (name, m) in runs {
            let (ea, eb) = (evaluate(m, a.test), evaluate(m, b.test))
            let old = m.vq.codes.slice(axis: 0, 0..<stage1Codes)
            let changed = (0..<stage1Codes).filter { c in
                old.slice(axis: 0, c..<(c + 1)) != codesAfterStage1.slice(axis: 0, c..<(c + 1))
            }.count
            if name == "frozen" { frozenIdentical = old == codesAfterStage1 }
            print(String(format: "after stage 2 (%@)%@ %13.4f   %13.4f   %9d/%-3d   %d of %d", name,
                         String(repeating: " ", count: max(0, 9 - name.count)), ea.mse, eb.mse, usage(m, data.images).used, stage2Codes,
                         changed, stage1Codes))
        }
        print(frozenIdentical ? "check: every frozen stage-1 code is bit-identical to the end of stage 1 ✓"
              : "check FAILED: a frozen stage-1 code changed")

        let report = URL(fileURLWithPath: output).appendingPathComponent("report.html")
        try FileManager.default.createDirectory(at: report.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Report.write(to: report, curves: curves, frozen: runs[0].model, baseline: runs[1].model, stage1Codes: stage1Codes,
                         images: data.images, testA: a.test, testB: b.test)
        print("report: \(report.path)")
        if !frozenIdentical { throw ExitCode.failure }
    }

    /// Adam on the encoder and decoder; EMA on the codebook. Returns the loss per step.
    func train(_ m: DigitVQVAE, on x: Tensor, steps: Int, label: String, seed: UInt64) -> [Float] {
        m.train()
        // Parameters frozen by key are skipped by the optimizer (the same mechanism that freezes code rows).
        let opt = Adam(parameters: m.encoder.trainableParameters() + m.decoder.trainableParameters(), learningRate: 2e-3)
        var rng = SeededGenerator(seed: seed)
        var progress = Progress(label, total: steps)
        var losses: [Float] = []
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
            if step % 20 == 0 || step == steps {
                progress.update(step, loss: loss.item, usage: counts.filter { $0 > 0 }.count, codes: counts.count,
                                perplexity: perplexity(counts))
                counts = [Int](repeating: 0, count: counts.count)
            }
        }
        return losses
    }

    func evaluate(_ m: DigitVQVAE, _ x: Tensor) -> (mse: Float, recon: Tensor) {
        m.eval()
        let r = withoutGradient { m(x).recon }
        return (Loss.mse(r, x).item, r)
    }

    func usage(_ m: DigitVQVAE, _ x: Tensor) -> (used: Int, counts: [Int]) {
        m.eval()
        let idx = withoutGradient { m(x).indices }
        var counts = [Int](repeating: 0, count: m.vq.codebookSize)
        for i in idx.scalars where i >= 0 { counts[i] += 1 }
        return (counts.filter { $0 > 0 }.count, counts)
    }
}
