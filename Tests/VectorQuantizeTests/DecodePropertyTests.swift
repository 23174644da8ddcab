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
@Suite("decode(the forward's indices) is the forward's output, and a checkpoint loads back the same, for every kind and pair of keywords")
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

    /// One configuration per pair of keywords (a keyword with itself included): the registry's example with both set
    /// to values drawn (seeded) from their ``alternatives(_:)`` — the configurations the property tests walk. `changed`
    /// names what differs from the example (for messages); `seed` is the pair's own.
    static func keywordPairs(_ kind: QuantizerKind, seed: UInt64) -> [(kwargs: [String: Any], changed: [String: Any], seed: UInt64)] {
        let alternatives = alternatives(kind)
        var rng = SeededGenerator(seed: seed)
        var out: [(kwargs: [String: Any], changed: [String: Any], seed: UInt64)] = []
        for a in alternatives.indices {
            for b in a..<alternatives.count {
                var kw = kind.example
                for (key, values) in [alternatives[a], alternatives[b]] { kw[key] = values[rng.nextInt(below: values.count)] }
                let changed = kw.filter { kind.example[$0.key] == nil || alternatives[a].0 == $0.key || alternatives[b].0 == $0.key }
                out.append((kw, changed, UInt64(a * 1000 + b)))
            }
        }
        return out
    }

    /// What a property says of one configuration: not applicable, held (and whether anything moved, where that is
    /// the point), or broken.
    enum Outcome { case skipped, passed(moved: Bool), failed(String) }

    /// Builds every ``keywordPairs(_:seed:)`` configuration of `kind` that builds and asks `property` of it.
    static func walkPairs(_ kind: QuantizerKind, seed: UInt64, _ property: (any Quantizer, _ pair: (kwargs: [String: Any], changed: [String: Any], seed: UInt64)) -> Outcome)
        -> (pairs: Int, built: Int, passed: Int, moved: Int, failures: [String]) {
        let pairs = keywordPairs(kind, seed: seed)
        var built = 0, passed = 0, moved = 0
        var failures: [String] = []
        for pair in pairs {
            guard let q = try? kind.build(pair.kwargs) else { continue }
            built += 1
            switch property(q, pair) {
            case .skipped: continue
            case .passed(let m): passed += 1; if m { moved += 1 }
            case .failed(let why): failures.append("\(kind.name) \(pair.changed): \(why)")
            }
        }
        return (pairs.count, built, passed, moved, failures)
    }

    /// Two training forwards (statistics, k-means, affine maps set), then one in evaluation: its indices decoded must
    /// be its output (within 1e-4 of its scale); and the quantizer saved (its own keywords) and loaded back must hold
    /// the same state and encode the same. Skipped when not initialised or without indices.
    static func check(_ q: any Quantizer, config: ModuleConfig, seed: UInt64, scratch: URL) throws -> Outcome {
        let unit = q.sequenceShape ?? [12]
        let x = TestSupport.random([2, unit.reduce(1, *), q.inputDim], seed: seed, std: 1.5)
        q.train()
        for _ in 0..<2 { _ = withoutGradient { q.forward(vectors: x) } }
        q.eval()
        guard q.isInitialised else { return .skipped }
        let out = withoutGradient { q.forward(vectors: x) }
        // FSQ with return_indices false returns none: nothing to decode.
        guard out.indices.count > 0 else { return .skipped }
        // Decoding speaks the quantizer's layout (an image HierarchicalVQ's channel-last map [b, h, w, dim]), the
        // forward vectors [b, n, dim]: the same values in the same order.
        let decoded = try q.decode(out.indices)
        guard decoded.count == out.quantized.count else { return .failed("decoded \(decoded.shape), forward \(out.quantized.shape)") }
        let scale = Swift.max(1, out.quantized.scalars.map(abs).max() ?? 0)
        let diff = TestSupport.maxAbsDiff(decoded.reshaped(out.quantized.shape), out.quantized) / scale
        guard diff <= 1e-4 else { return .failed("decoding is \(diff) (relative) from the forward's output") }
        // Saved and loaded: the same state, the same codes.
        let url = scratch.appendingPathComponent("q.safetensors")
        // Described by itself where it can (EvoLFQ's modules cannot be: its keywords, as the tool saves it).
        if (try? q.referenceConfiguration()) != nil { try QuantizerCheckpoint.save(q, to: url) } else { try QuantizerCheckpoint.save(q, config: config, to: url) }
        let (loaded, _) = try QuantizerCheckpoint.load(url)
        guard let back = loaded as? any Quantizer, back.stateDict() == q.stateDict() else { return .failed("loaded back with another state") }
        let flat = x.reshaped([x.shape[0]] + (q.sequenceShape ?? [x.shape[1]]) + [q.inputDim])
        guard back.encode(flat) == q.encode(flat) else { return .failed("loaded back, it encodes otherwise") }
        return .passed(moved: true)
    }

    @Test("every pair of keywords", arguments: kinds.indices)
    func pairs(_ i: Int) throws {
        let kind = Self.kinds[i]
        let scratch = try TestSupport.scratchDirectory("vq-decode-\(kind.name)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let r = Self.walkPairs(kind, seed: 0xDEC0DE &+ UInt64(i)) { q, pair in
            do { return try Self.check(q, config: ModuleConfig(module: kind.name, kwargs: pair.kwargs), seed: pair.seed, scratch: scratch) } catch { return .failed("\(error)") }
        }
        #expect(r.failures.isEmpty, "\(r.failures.count) of \(r.passed + r.failures.count): \(r.failures.prefix(8).joined(separator: "\n"))")
        // The pairs reached many configurations (it cannot pass by checking none).
        #expect(r.passed * 20 > r.pairs && r.passed * 2 > r.built, "\(kind.name): \(r.passed) checked of \(r.built) built")
    }
}
