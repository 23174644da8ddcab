import ArgumentParser
import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// The reference's `examples/autoencoder_lfq_masked.py`: `Linear → LFQ (32 codebooks of 256 codes) → Linear` on
/// flattened images, trained with AdamW on the L1 error of the unmasked tokens plus LFQ's auxiliary loss —
/// once as a baseline, once with a second, masked-out token of random noise beside every image. Masked tokens
/// take no part in the loss or in LFQ's entropy and commitment terms, so both runs see the same images in the
/// same order and learn the same model up to the rounding of sums over differently laid-out batches.
struct LFQMaskedExample: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lfq-masked",
        abstract: "Train the reference's masked LFQ autoencoder on the digits, without and with masked noise tokens; prints the held-out error last.")

    @Option(help: "Training steps of each run.") var steps: Int = 500
    @Option(name: .customLong("batch-size"), help: "Images per step.") var batchSize: Int = 64
    @Option(help: "AdamW's learning rate.") var lr: Double = 5e-4
    @Option(help: "Folder for report.html (loss curves, code usage, originals and reconstructions).") var output: String?
    @Option(help: "Seed of the weights, the noise and the batch order.") var seed: UInt64 = 0

    func validate() throws {
        try AutoencoderExample.validate(steps: steps, batchSize: batchSize, lr: lr, output: output)
    }

    static let codebookSize = 256, numCodebooks = 32

    /// One run's model: encoder, LFQ, decoder (the reference's `LFQAutoEncoder`).
    struct Model {
        let encode: Linear, lfq: LFQ, decode: Linear
        var parameters: [Parameter] { encode.trainableParameters() + lfq.trainableParameters() + decode.trainableParameters() }

        init(inputs: Int, seed: UInt64) throws {
            var rng = SeededGenerator(seed: seed)
            var c = LFQ.Configuration(dim: codebookSize, codebookSize: codebookSize)
            (c.entropyLossWeight, c.diversityGamma, c.commitmentLossWeight, c.numCodebooks, c.seed) = (0.01, 1, 0.25, numCodebooks, seed)
            (encode, lfq, decode) = (Linear(inputs, codebookSize, rng: &rng), try LFQ(c), Linear(codebookSize, inputs, rng: &rng))
        }

        /// `x [b, n, inputs]` with a token mask `[b·n]` → output, codes `[b, n, numCodebooks]`, auxiliary loss.
        func callAsFunction(_ x: Tensor, mask: [Bool]?) -> (Tensor, IndexTensor, Tensor) {
            let q = lfq(encode(x), mask: mask.map { TokenMask($0) })
            return (decode(q.quantized), q.indices, q.auxLoss)
        }
    }

    /// Trains one model; with `masking`, each image gets a second token of N(0, 1) noise that is masked out.
    func train(_ images: Tensor, masking: Bool, label: String) throws -> (model: Model, losses: [Float]) {
        let (count, inputs) = (images.shape[0], images.shape[1])
        let model = try Model(inputs: inputs, seed: seed)
        model.lfq.train()
        let optimizer = AdamW(parameters: model.parameters, learningRate: Float(lr))
        // The batch order does not depend on the noise: both runs see the same images in the same order.
        var batches = EpochBatches(count: count, seed: seed ^ 0xDA7A), noise = SeededGenerator(seed: seed ^ 0x401CE)
        var progress = Progress(label, total: steps)
        var losses: [Float] = []
        let tokens = masking ? 2 : 1
        // The first token of every image is real, the second (noise) is masked out.
        let mask = (0..<(batchSize * tokens)).map { $0 % tokens == 0 }
        let realRows = IndexTensor(mask.indices.filter { mask[$0] })
        for step in 1...steps {
            var x = images.indexSelect(axis: 0, IndexTensor(batches.next(batchSize))).reshaped([batchSize, 1, inputs])
            if masking { x = Tensor.concat([x, Tensor.randomNormal([batchSize, 1, inputs], using: &noise)], axis: 1) }
            let (out, indices, aux) = model(x, mask: mask)
            let flatOut = out.reshaped([-1, inputs]).indexSelect(axis: 0, realRows)
            let flatX = x.reshaped([-1, inputs]).indexSelect(axis: 0, realRows)
            let reconstruction = (flatOut - flatX).abs().mean()
            let loss = reconstruction + aux
            optimizer.zeroGradients()
            loss.backward()
            optimizer.step()
            losses.append(reconstruction.item)
            guard loss.item.isFinite else { throw CLIError("training diverged at step \(step) (loss \(loss.item)); try a smaller --lr") }
            if step == steps || step % max(1, steps / 20) == 0 {
                let counts = Self.usage(indices, mask: mask)
                progress.update(step, loss: reconstruction.item, usage: counts.filter { $0 > 0 }.count, codes: Self.codebookSize, perplexity: perplexity(counts))
            }
        }
        return (model, losses)
    }

    /// How often each of the 256 codes is used by the unmasked tokens, over all 32 codebooks.
    static func usage(_ indices: IndexTensor, mask: [Bool]) -> [Int] {
        var counts = [Int](repeating: 0, count: codebookSize)
        for (token, keep) in mask.enumerated() where keep {
            for k in indices.scalars[(token * numCodebooks)..<((token + 1) * numCodebooks)] where k >= 0 && k < codebookSize { counts[k] += 1 }
        }
        return counts
    }

    func run() throws {
        let data = try DigitsData.load()
        let (train, test) = data.split(0...9)
        print("masked LFQ autoencoder: \(train.shape[0]) training and \(test.shape[0]) held-out digits (UCI, CC BY 4.0)")
        var results: [(label: String, losses: [Float], l1: Float, usage: [Int], recon: Tensor)] = []
        for (label, masking) in [("baseline", false), ("with masking", true)] {
            let (model, losses) = try self.train(train, masking: masking, label: label)
            model.lfq.eval()
            let held = test.reshaped([test.shape[0], 1, test.shape[1]])
            let (recon, indices, _) = withoutGradient { model(held, mask: nil) }
            let l1 = (recon - held).abs().mean().item
            results.append((label, losses, l1, Self.usage(indices, mask: Array(repeating: true, count: test.shape[0])), recon.reshaped(test.shape)))
            print(String(format: "%@: held-out reconstruction L1 %.5f", label, l1))
        }
        if let output {
            var html = "<!doctype html><html><head><meta charset=\"utf-8\"><title>vq example lfq-masked</title></head><body>"
            html += "<h1>Masked LFQ autoencoder, \(steps) steps per run</h1>"
            html += "<p>The reference's <code>examples/autoencoder_lfq_masked.py</code> on the UCI optical handwritten digits (Alpaydin &amp; Kaynak, 1998, CC BY 4.0): "
            html += "the second run adds a masked-out noise token beside every image. "
            html += results.map { String(format: "%@: held-out L1 <b>%.5f</b>, codes used %d/%d", $0.label, $0.l1, $0.usage.filter { $0 > 0 }.count, Self.codebookSize) }
                .joined(separator: "; ") + ".</p>"
            let colors = ["#1f77b4", "#d62728"]
            html += "<h2>Training loss (L1 of the unmasked tokens)</h2>" + Report.seriesChart(
                results.enumerated().map { (name: $0.element.label, color: colors[$0.offset], points: $0.element.losses.enumerated().map { (Double($0.offset + 1), Double($0.element)) }) },
                reference: nil, xLabel: "step", yLabel: "L1")
            for r in results { html += "<h2>Code usage (held-out), \(r.label)</h2>" + Report.histogram(r.usage, frozenBelow: 0, title: r.label) }
            let n = min(16, test.shape[0])
            html += "<h2>Originals (top) and reconstructions (bottom), with masking</h2>"
                + Report.grid(test.slice(axis: 0, 0..<n), results.last!.recon.slice(axis: 0, 0..<n))
            html += "</body></html>\n"
            try AutoencoderExample.writeReport(html, to: output)
        }
        print(String(format: "held-out reconstruction L1 (with masking): %.5f", results.last!.l1))
    }
}
