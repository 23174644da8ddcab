import ArgumentParser
import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// `vq example …`: the reference's `examples/` folder, in Swift, on the shipped digits.
struct Example: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Runnable versions of the reference's examples on the shipped digits.",
        subcommands: [AutoencoderExample.self, LFQMaskedExample.self])
}

/// The reference's `examples/autoencoder*.py`: a small convolutional autoencoder with a quantizer in the middle
/// (`Conv2d → MaxPool2d → GELU → Conv2d → MaxPool2d → quantizer → Upsample → Conv2d → GELU → Upsample → Conv2d`),
/// trained with Adam on reconstruction + the quantizer's loss.
struct AutoencoderExample: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "autoencoder",
        abstract: "Train the reference's convolutional VQ autoencoder on the digits; prints the held-out error last.")

    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case vq, fsq, lfq, simvq, rvq, fsp, hvq
    }

    @Option(help: "The quantizer: \(Kind.allCases.map(\.rawValue).joined(separator: ", ")).") var quantizer: Kind = .vq
    @Option(help: "Training steps.") var steps: Int = 500
    @Option(name: .customLong("batch-size"), help: "Images per step.") var batchSize: Int = 64
    @Option(help: "Adam's learning rate.") var lr: Double = 3e-3
    @Option(help: "Folder for report.html (loss curve, code usage, originals and reconstructions).") var output: String?
    @Option(help: "Seed of the weights and the batch order.") var seed: UInt64 = 0

    func validate() throws {
        try Self.validate(steps: steps, batchSize: batchSize, lr: lr, output: output)
    }

    /// The options every example shares: one line naming the option.
    static func validate(steps: Int, batchSize: Int, lr: Double, output: String?) throws {
        guard steps >= 1 && steps <= 1_000_000 else { throw ValidationError("--steps \(steps) must be in 1…1000000") }
        guard batchSize >= 1 && batchSize <= 4096 else { throw ValidationError("--batch-size \(batchSize) must be in 1…4096") }
        guard lr > 0 && lr.isFinite else { throw ValidationError("--lr \(lr) must be a positive number") }
        if let output { try DataFiles.checkOutputFolder(output, option: "--output") }
    }

    /// The quantizer of `kind` on `[b, 32, h, w]` maps.
    static func makeQuantizer(_ kind: Kind, seed: UInt64) throws -> Module {
        switch kind {
        case .vq:
            var c = VectorQuantizerConfiguration(dim: 32, codebookSize: 256)
            (c.acceptImageFmap, c.decay, c.commitmentWeight, c.seed) = (true, 0.8, 1, seed)
            return try VectorQuantizer(c)
        case .rvq:
            var c = ResidualVQConfiguration(dim: 32, numQuantizers: 2, codebookSize: 256)
            c.acceptImageFmap = true
            c.layer.decay = 0.8
            c.layer.seed = seed
            return try ResidualVQ(c)
        case .fsq:
            var c = FSQ.Configuration(levels: [8, 6, 5])
            (c.dim, c.seed) = (32, seed)
            return try FSQ(c)
        case .lfq:
            var c = LFQ.Configuration(dim: 32, codebookSize: 256)
            (c.entropyLossWeight, c.diversityGamma, c.seed) = (0.02, 1, seed)
            return try LFQ(c)
        case .simvq:
            var c = SimVQ.Configuration(dim: 32, codebookSize: 256)
            (c.channelFirst, c.seed) = (true, seed)
            return try SimVQ(c)
        case .fsp:
            var c = FSP.Configuration(levels: [8, 6, 5], dim: 32)
            (c.channelFirst, c.quantizeRate, c.seed) = (true, 0.5, seed)
            return try FSP(c)
        case .hvq:
            var c = HierarchicalVQ.Configuration(dim: 32, codebookSize: 256, scales: [1, 2])
            c.acceptImageFmap = true
            c.layer.kmeansInit = false
            c.seed = seed
            return try HierarchicalVQ(c)
        }
    }

    static func makeModel(_ kind: Kind, seed: UInt64) throws -> QuantizerSequential {
        var rng = SeededGenerator(seed: seed)
        return try QuantizerSequential(
            Conv2d(1, 16, kernelSize: 3, padding: 1, rng: &rng), MaxPool(kernelSize: [2, 2]), Activation(.gelu),
            Conv2d(16, 32, kernelSize: 3, padding: 1, rng: &rng), MaxPool(kernelSize: [2, 2]),
            try makeQuantizer(kind, seed: seed),
            Upsample(scaleFactor: 2), Conv2d(32, 16, kernelSize: 3, padding: 1, rng: &rng), Activation(.gelu),
            Upsample(scaleFactor: 2), Conv2d(16, 1, kernelSize: 3, padding: 1, rng: &rng))
    }

    /// The first layer's code of every position of `[b, 1, 8, 8]` images (evaluation mode).
    static func firstLayerCodes(_ model: QuantizerSequential, _ x: Tensor) -> [Int] {
        let idx = model.withMode(training: false) { withoutGradient { model(x).indices } }
        if let h = model.quantizer as? HierarchicalVQ {
            // The finest level's codes (the last positions of each row).
            let total = h.configuration.positions.reduce(0, +), last = h.configuration.positions.last!
            return (0..<(idx.count / total)).flatMap { r in idx.scalars[(r * total + total - last)..<((r + 1) * total)] }
        }
        let layers = model.quantizer is ResidualVQ ? (model.quantizer as! ResidualVQ).numQuantizers : 1
        return stride(from: 0, to: idx.count, by: layers).map { idx.scalars[$0] }
    }

    /// How often each of `codes` codes occurs (indices outside `0..<codes`, such as -1, are not counted).
    static func counts(_ indices: [Int], codes: Int) -> [Int] {
        var counts = [Int](repeating: 0, count: codes)
        for k in indices where k >= 0 && k < codes { counts[k] += 1 }
        return counts
    }

    /// Each residual layer's codes of every position (one list for a single quantizer; the finest level for HVQ).
    static func layerCodes(_ model: QuantizerSequential, _ x: Tensor) -> [[Int]] {
        guard let rvq = model.quantizer as? ResidualVQ else { return [firstLayerCodes(model, x)] }
        let idx = model.withMode(training: false) { withoutGradient { model(x).indices } }
        let layers = rvq.numQuantizers
        return (0..<layers).map { l in stride(from: l, to: idx.count, by: layers).map { idx.scalars[$0] } }
    }

    func run() throws {
        let data = try DigitsData.load()
        let (train, test) = data.split(0...9)
        let images = train.reshaped([-1, 1, 8, 8]), held = test.reshaped([-1, 1, 8, 8])
        let model = try Self.makeModel(quantizer, seed: seed)
        let codes = model.quantizer.codebookSizes.first ?? 1
        print("autoencoder with \(quantizer.rawValue): \(images.shape[0]) training and \(held.shape[0]) held-out digits (UCI, CC BY 4.0)")
        let optimizer = Adam(parameters: model.trainableParameters(), learningRate: Float(lr))
        var batches = EpochBatches(count: images.shape[0], seed: seed ^ 0xDA7A)
        var progress = Progress("train", total: steps)
        var losses: [Float] = []
        model.train()
        for step in 1...steps {
            let x = images.indexSelect(axis: 0, IndexTensor(batches.next(batchSize)))
            let out = model(x)
            let loss = Loss.mse(out.quantized, x) + out.loss
            model.zeroGradients()
            loss.backward()
            optimizer.step()
            losses.append(loss.item)
            guard loss.item.isFinite else { throw CLIError("training diverged at step \(step) (loss \(loss.item)); try a smaller --lr") }
            if step == steps || step % max(1, steps / 20) == 0 {
                let counts = Self.counts(Self.firstLayerCodes(model, x), codes: codes)
                progress.update(step, loss: loss.item, usage: counts.filter { $0 > 0 }.count, codes: codes, perplexity: perplexity(counts))
            }
        }
        let recon = model.withMode(training: false) { withoutGradient { model(held).quantized } }
        let mse = Loss.mse(recon, held).item
        // Each residual layer's codes of the held-out digits (one forward): the first layer's for the summary.
        let perLayer = Self.layerCodes(model, held)
        let counts = Self.counts(perLayer[0], codes: codes)
        let used = counts.filter { $0 > 0 }.count
        let fewCodes = used * 4 < codes
        if fewCodes { print("warning: only \(used) of \(codes) codes are used on the held-out digits (train longer, or use fewer codes)") }
        if let output {
            let curve = losses.enumerated().map { (Double($0.offset + 1), Double($0.element)) }
            let command = (["vq"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
            var html = """
            <!doctype html><html><head><meta charset="utf-8"><title>vq example autoencoder (\(quantizer.rawValue))</title>
            <style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}h2{margin-top:1.6em}
            figure{margin:0 0 1em 0}figcaption{color:#555;font-size:.9em}.setting{color:#555;font-size:.85em;font-family:ui-monospace,monospace}
            .warning{color:#d62728}</style></head><body>
            """
            html += "<h1>Convolutional autoencoder with \(quantizer.rawValue), \(steps) steps</h1>"
            html += "<p class=\"setting\">\(Report.esc(command)) — kernels \(KernelLevel.name), seed \(seed), batch \(batchSize), learning rate \(lr)</p>"
            html += "<p>The reference's <code>examples/autoencoder*.py</code> on the UCI optical handwritten digits (Alpaydin &amp; Kaynak, 1998, CC BY 4.0): "
            html += "\(images.shape[0]) training and \(held.shape[0]) held-out digits. "
            html += String(format: "Held-out reconstruction MSE: <b>%.5f</b>; codes used on held-out digits: %d/%d.</p>", mse, used, codes)
            if fewCodes { html += "<p class=\"warning\">Only \(used) of \(codes) codes are used on the held-out digits: train longer, or use fewer codes.</p>" }
            html += "<h2>Training loss</h2>" + Report.seriesChart([("loss", "#1f77b4", curve)], reference: nil, xLabel: "step", yLabel: "loss")
            html += "<h2>Code usage on the held-out digits\(perLayer.count > 1 ? ", per residual layer" : "")</h2><figure>"
            for (l, layerCodes) in perLayer.enumerated() {
                html += Report.histogram(Self.counts(layerCodes, codes: codes), frozenBelow: 0, title: perLayer.count > 1 ? "layer \(l)" : quantizer.rawValue)
            }
            html += "<figcaption>Times each code was chosen over every position of the held-out digits.</figcaption></figure>"
            let sample = Report.everyClass(data, perClass: 2)
            let sampleRecon = model.withMode(training: false) { withoutGradient { model(sample.reshaped([-1, 1, 8, 8])).quantized } }
            html += "<h2>Originals (top) and reconstructions (bottom): two held-out digits of every class</h2>"
                + Report.grid(sample, sampleRecon.reshaped([-1, 64]))
            html += "</body></html>\n"
            try Self.writeReport(html, to: output)
        }
        print(String(format: "held-out reconstruction MSE: %.5f", mse))
    }

    /// Writes an example's `DIR/report.html` (``DataFiles/writeReport(_:inFolder:)``) and prints its path.
    static func writeReport(_ html: String, to output: String) throws {
        let file = try DataFiles.writeReport(html, inFolder: output)
        print("report: \(file.path)")
    }
}

/// Training batches drawn without replacement: a seeded permutation of the rows, consumed in order and drawn
/// anew each time it runs out (an epoch), as a shuffled PyTorch `DataLoader`.
struct EpochBatches {
    private var rng: SeededGenerator
    private let count: Int
    private var order: [Int], cursor = 0

    init(count: Int, seed: UInt64) {
        (rng, self.count) = (SeededGenerator(seed: seed), count)
        order = rng.permutation(count)
    }

    /// The next `size` rows.
    mutating func next(_ size: Int) -> [Int] {
        var rows: [Int] = []
        while rows.count < size {
            if cursor == order.count { order = rng.permutation(count); cursor = 0 }
            rows.append(order[cursor])
            cursor += 1
        }
        return rows
    }
}
