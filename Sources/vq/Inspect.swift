import ArgumentParser
import Foundation
import VQNN
import VQTensor
import VectorQuantize

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a checkpoint: codebooks, frozen codes per layer/head; with --input, usage, dead codes, perplexity, error.")

    @Argument(help: "Checkpoint (.safetensors).") var checkpoint: String
    @Option(help: "Config JSON (default: sidecar or metadata).") var config: String?
    @Option(help: "Vectors to measure usage and reconstruction on.") var input: String?

    func run() throws {
        let (q, cfg) = try loadQuantizer(checkpoint, config: config)
        let kw = cfg.kwargs.keys.sorted().map { "\($0)=\(cfg.kwargs[$0]!)" }.joined(separator: ", ")
        print("\(checkpoint): \(cfg.module)(\(kw))")
        print("parameters: " + q.namedParameters().map { "\($0.0) \($0.1.shape)" }.joined(separator: ", "))
        let books = (try? selectCodebooks(q, layer: nil, head: nil)) ?? []
        for (i, (book, _)) in books.enumerated() {
            for h in 0..<book.numCodebooks {
                let frozen = book.frozenCodeIndices(head: h)
                print("codebook \(i)\(book.numCodebooks > 1 ? " head \(h)" : ""): \(book.codebookSize) codes × \(book.dim), frozen \(frozen.count)\(frozen.isEmpty ? "" : " (\(ranges(frozen)))")")
            }
        }
        if books.isEmpty { print("implicit codebook of \(codebookSizes(q).max() ?? 0) codes (nothing learned to freeze)") }
        guard let input else { return }
        var x = try DataFiles.vectors(input, dim: q.inputDim)
        if x.rank == 3 { x = x.reshaped([-1, x.shape[2]]) }
        let idx = q.encode(x)
        let size = codebookSizes(q).max() ?? 1
        let columns = idx.rank >= 2 ? idx.shape[idx.rank - 1] : 1
        for col in 0..<columns {
            var counts = [Int](repeating: 0, count: size)
            for (i, v) in idx.scalars.enumerated() where i % columns == col && v >= 0 && v < size { counts[v] += 1 }
            let used = counts.filter { $0 > 0 }.count
            let top = counts.enumerated().sorted { $0.element > $1.element }.prefix(5).map { "\($0.offset)×\($0.element)" }
            print(String(format: "%@: used %d/%d, dead %d, perplexity %.1f, most used %@", columns > 1 ? "column \(col)" : "usage",
                         used, size, size - used, perplexity(counts), top.joined(separator: " ")))
            print("  usage histogram (codes by times used): " + histogram(counts))
        }
        if let recon = try? q.decode(idx), recon.shape == x.shape {
            print(String(format: "reconstruction MSE on %d vectors: %.6f", x.shape[0], Loss.mse(recon, x).item))
        }
    }

    /// Codes per usage bucket: 0, 1–9, 10–99, …, with a bar of `#` scaled to the largest bucket.
    func histogram(_ counts: [Int]) -> String {
        var buckets: [(String, Int)] = [("0", counts.filter { $0 == 0 }.count)]
        var lo = 1
        while lo <= (counts.max() ?? 0) {
            let hi = lo * 10 - 1
            buckets.append(("\(lo)-\(hi)", counts.filter { $0 >= lo && $0 <= hi }.count))
            lo *= 10
        }
        let peak = max(1, buckets.map(\.1).max() ?? 1)
        return buckets.map { "\($0.0): \($0.1) \(String(repeating: "#", count: ($0.1 * 20 + peak - 1) / peak))" }.joined(separator: "  ")
    }

    func ranges(_ s: [Int]) -> String {
        var out: [String] = []
        var i = 0
        while i < s.count {
            var j = i
            while j + 1 < s.count && s[j + 1] == s[j] + 1 { j += 1 }
            out.append(i == j ? "\(s[i])" : "\(s[i])-\(s[j])")
            i = j + 1
        }
        return out.joined(separator: ",")
    }
}
