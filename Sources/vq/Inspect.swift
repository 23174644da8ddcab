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

    /// Prints the report whole once it is complete: an input refused half-way (a NaN in its last chunk) prints only
    /// the error line, not the checkpoint's description before it.
    func run() throws {
        var lines: [String] = []
        try report { lines.append($0) }
        Swift.print(lines.joined(separator: "\n"))
    }

    func report(_ print: (String) -> Void) throws {
        let (q, cfg) = try loadQuantizer(checkpoint, config: config)
        let kw = cfg.kwargs.keys.sorted().map { "\($0)=\(cfg.kwargs[$0]!)" }.joined(separator: ", ")
        print("\(checkpoint): \(cfg.module)(\(kw))")
        print("parameters: " + q.namedParameters().map { "\($0.0) \($0.1.shape)" }.joined(separator: ", "))
        let learned = q.namedTrainableParameters()
        if !learned.isEmpty {
            let frozen = learned.filter { $0.1.isFrozen }.map(\.0)
            print("learned by gradient: \(learned.count) parameters, frozen \(frozen.count)\(frozen.isEmpty ? "" : " (\(frozen.joined(separator: ", ")))")")
        }
        let books = (try? selectCodebooks(q, layer: nil, head: nil)) ?? []
        for (i, (book, _)) in books.enumerated() {
            for h in 0..<book.numCodebooks {
                let frozen = book.frozenCodeIndices(head: h)
                print("codebook \(i)\(book.numCodebooks > 1 ? " head \(h)" : ""): \(book.codebookSize) codes × \(book.dim), frozen \(frozen.count)\(frozen.isEmpty ? "" : " (\(ranges(frozen)))")")
                let dims = book.frozenDimensions(head: h)
                if !dims.isEmpty { print("  frozen components: dimensions \(ranges(dims)) of every code") }
                let perCode = book.frozenComponents.value.scalars[(h * book.codebookSize * book.dim)..<((h + 1) * book.codebookSize * book.dim)]
                    .filter { $0 != 0 }.count - dims.count * book.codebookSize
                if perCode > 0 { print("  frozen components of single codes: \(perCode)") }
                let rank = book.frozenSubspaceRank(head: h)
                if rank > 0 { print("  frozen subspace: rank \(rank) of \(book.dim) (each code keeps its coordinates there)") }
                let byPolicy = book.policyFrozenCodes(head: h)
                if !byPolicy.isEmpty {
                    let steps = byPolicy.map(\.step)
                    print("  frozen by a policy: \(byPolicy.count) codes (\(ranges(byPolicy.map(\.code)))) at updates \(steps.min()!)–\(steps.max()!)")
                }
            }
        }
        if books.isEmpty { print("implicit codebook of \(q.codebookSizes.max() ?? 0) codes (nothing learned to freeze)") }
        guard let input else { return }
        try requireInitialised(q, checkpoint)
        // Streamed: usage counts and the squared error accumulate chunk by chunk.
        let stream = try VectorStream(input, dim: q.inputDim)
        guard stream.rows > 0 else {
            print("\(input): no vectors to measure usage or error on")
            return
        }
        let size = q.codebookSizes.max() ?? 1
        var counts: [[Int]] = []
        var squaredError = 0.0
        var decodable = true
        let layout = IndexLayout(q)
        _ = try layout.indexAxes(ofVectors: stream.leading, spec: input)
        try stream.forEachChunk(unit: layout.unit) { _, x in
            let idx = q.encode(layout.encodable(x))
            let columns = idx.rank >= 2 ? idx.shape[idx.rank - 1] : 1
            if counts.isEmpty { counts = Array(repeating: [Int](repeating: 0, count: size), count: columns) }
            for (i, v) in idx.scalars.enumerated() where v >= 0 && v < size { counts[i % columns][v] += 1 }
            if decodable, let recon = try? q.decode(idx), recon.count == x.count, recon.shape.last == x.shape.last {
                squaredError += Double((recon.reshaped(x.shape) - x).squared().sum().item)
            } else {
                decodable = false
            }
        }
        for (col, c) in counts.enumerated() {
            let used = c.filter { $0 > 0 }.count
            let top = c.enumerated().sorted { $0.element > $1.element }.prefix(5).map { "\($0.offset)×\($0.element)" }
            print(String(format: "%@: used %d/%d, dead %d, perplexity %.1f, most used %@", counts.count > 1 ? "column \(col)" : "usage",
                         used, size, size - used, perplexity(c), top.joined(separator: " ")))
            print("  usage histogram (codes by times used): " + histogram(c))
        }
        if decodable {
            print(String(format: "reconstruction MSE on %d vectors: %.6f", stream.rows, squaredError / Double(stream.rows * stream.dim)))
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
