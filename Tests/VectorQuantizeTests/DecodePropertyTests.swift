import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// `decode` of an evaluation forward's indices is that forward's output — the promise `vq decode` makes (README,
/// "Differences from vector-quantize-pytorch": an affine or bridged codebook decodes to the codes its forward used) —
/// on every kind, for every pair of keywords changed from the registry's example (values drawn from a fixed pool,
/// seeded). Found by the PyTorch cross-check (seed 21, draw 99): a residual stack with implicit neural codebooks
/// decoded its stored codes without their affine map, 3.8 away from the forward's output.
@Suite("decode(the forward's indices) is the forward's output, for every kind and pair of keywords")
struct DecodePropertyTests {
    /// RandomProjectionQuantizer has no way back (its codes live in a random projection's space).
    static let kinds = QuantizerRegistry.kinds.filter { $0.name != "RandomProjectionQuantizer" }

    nonisolated(unsafe) static let pool: [Any] = ReferenceKeywordsTests.candidates + ["nn.Linear(4, 4)", "nn.Linear(8, 8)", "nn.Linear(8, 8, bias = False)"]

    /// The values of each keyword (from the pool) that build with the example and change its configuration, at most four.
    static func alternatives(_ kind: QuantizerKind) -> [(String, [Any])] {
        let base = (try? kind.build(kind.example).referenceConfiguration().kwargs).map { NSDictionary(dictionary: $0) }
        return kind.keywords.sorted().compactMap { key in
            var values: [Any] = []
            for value in pool where values.count < 4 {
                var kw = kind.example
                kw[key] = value
                guard let q = try? kind.build(kw) else { continue }
                if let base, let c = try? q.referenceConfiguration(), base.isEqual(to: c.kwargs) { continue }
                values.append(value)
            }
            return values.isEmpty ? nil : (key, values)
        }
    }

    /// Two training forwards (statistics, k-means, affine maps set), then one in evaluation: its indices decoded.
    /// Returns nil when the configuration does not apply (not initialised, no decoding), else the largest difference
    /// relative to the output's scale.
    static func check(_ q: any Quantizer, seed: UInt64) throws -> Float? {
        let unit = q.sequenceShape ?? [12]
        let x = TestSupport.random([2, unit.reduce(1, *), q.inputDim], seed: seed, std: 1.5)
        q.train()
        for _ in 0..<2 { _ = withoutGradient { q.forward(vectors: x) } }
        q.eval()
        guard q.isInitialised else { return nil }
        let out = withoutGradient { q.forward(vectors: x) }
        // FSQ with return_indices false returns none: nothing to decode.
        guard out.indices.count > 0 else { return nil }
        // Decoding speaks the quantizer's layout (an image HierarchicalVQ's channel-last map [b, h, w, dim]), the
        // forward vectors [b, n, dim]: the same values in the same order.
        let decoded = try q.decode(out.indices)
        guard decoded.count == out.quantized.count else { return .infinity }
        let scale = Swift.max(1, out.quantized.scalars.map(abs).max() ?? 0)
        return TestSupport.maxAbsDiff(decoded.reshaped(out.quantized.shape), out.quantized) / scale
    }

    @Test("every pair of keywords", arguments: kinds.indices)
    func pairs(_ i: Int) throws {
        let kind = Self.kinds[i]
        let alternatives = Self.alternatives(kind)
        var rng = SeededGenerator(seed: 0xDEC0DE &+ UInt64(i))
        var checked = 0, built = 0
        var failures: [String] = []
        for a in alternatives.indices {
            for b in a..<alternatives.count {
                var kw = kind.example
                for (key, values) in [alternatives[a], alternatives[b]] { kw[key] = values[rng.nextInt(below: values.count)] }
                guard let q = try? kind.build(kw) else { continue }
                built += 1
                guard let diff = try Self.check(q, seed: UInt64(a * 1000 + b)) else { continue }
                checked += 1
                if !(diff <= 1e-4) {
                    failures.append("\(kind.name) \(kw.filter { kind.example[$0.key] == nil || alternatives[a].0 == $0.key || alternatives[b].0 == $0.key }): \(diff)")
                }
            }
        }
        #expect(failures.isEmpty, "\(failures.count) of \(checked): \(failures.prefix(8).joined(separator: "\n"))")
        // The pairs reached many configurations (it cannot pass by checking none).
        #expect(checked > alternatives.count && checked * 2 > built, "\(kind.name): \(checked) checked of \(built) built")
    }
}
