import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// The promise of this library, over every configuration the keywords reach: codes frozen in a codebook keep their
/// bits through training — EMA, dead-code expiry, k-means, gradients with an optimizer, the in-place optimizer,
/// affine maps, implicit codebooks, beams, shared codebooks — while the free codes move. For every kind whose
/// codebooks learn, every pair of keywords changed from the registry's example (the values DecodePropertyTests
/// draws): half of each learned codebook frozen (and the first dimension of one more code), three training steps
/// with gradients and Adam over every trainable parameter, then every frozen element compared bit for bit.
@Suite("Frozen codes keep their bits through training, for every kind and pair of keywords")
struct FreezePropertyTests {
    static let kinds = QuantizerRegistry.kinds.filter { kind in
        (try? kind.build(kind.example)).map { !$0.learnedCodebooks.isEmpty } ?? false
    }

    static func check(_ q: any Quantizer, seed: UInt64) -> DecodePropertyTests.Outcome {
        let books = q.learnedCodebooks
        var frozen: [(Codebook, [Int], [Int])] = []   // codebook, frozen codes, a code frozen in dimension 0 only
        for book in books {
            let size = book.codebookSize
            guard size >= 4 else { return .skipped }
            let codes = Array(0..<(size / 2))
            do {
                try book.freeze(codes: codes)
                try book.freeze(dimensions: [0], codes: [size - 1])
            } catch { return .skipped }   // a codebook that cannot be frozen so (documented refusals)
            frozen.append((book, codes, [size - 1]))
        }
        let before = books.map { $0.embed.value.scalars.map(\.bitPattern) }
        let unit = q.sequenceShape ?? [16]
        let opt = Adam(parameters: q.trainableParameters(), learningRate: 0.05)
        q.train()
        for s in 0..<3 {
            let x = TestSupport.random([2, unit.reduce(1, *), q.inputDim], seed: seed &+ UInt64(s), std: 1.5).requiringGradient()
            opt.zeroGradients()
            let out = q.forward(vectors: x)
            let loss = out.loss.sum() + out.quantized.squared().mean()
            if loss.requiresGradient { loss.backward() }
            opt.step()
        }
        var moved = false
        for ((book, codes, partial), old) in zip(frozen, before) {
            let now = book.embed.value.scalars.map(\.bitPattern)
            let (h, c, d) = (book.embed.value.shape[0], book.codebookSize, book.embed.value.shape.last!)
            for hh in 0..<h {
                for code in codes {
                    let at = (hh * c + code) * d
                    if now[at..<(at + d)] != old[at..<(at + d)] { return .failed("frozen code \(code) of head \(hh) moved") }
                }
                for code in partial where now[(hh * c + code) * d] != old[(hh * c + code) * d] {
                    return .failed("dimension 0 of code \(code) (frozen in it) moved")
                }
                for code in (c / 2)..<(c - 1) {
                    let at = (hh * c + code) * d
                    if now[at..<(at + d)] != old[at..<(at + d)] { moved = true }
                }
            }
        }
        return .passed(moved: moved)
    }

    @Test("the kinds with learned codebooks are all here")
    func kindsCovered() {
        #expect(Set(["VectorQuantize", "ResidualVQ", "GroupedResidualVQ", "HierarchicalVQ"]).isSubset(of: Self.kinds.map(\.name)),
                "\(Self.kinds.map(\.name))")
    }

    @Test("every pair of keywords", arguments: kinds.indices)
    func pairs(_ i: Int) throws {
        let kind = Self.kinds[i]
        let r = DecodePropertyTests.walkPairs(kind, seed: 0xF4EE2E &+ UInt64(i)) { q, pair in Self.check(q, seed: pair.seed) }
        #expect(r.failures.isEmpty, "\(r.failures.count) of \(r.passed + r.failures.count): \(r.failures.prefix(8).joined(separator: "\n"))")
        // Not vacuous: many configurations were checked, and in most of them the free codes learned.
        #expect(r.passed * 20 > r.pairs && r.moved * 3 > r.passed * 2, "\(kind.name): \(r.moved) moved of \(r.passed) held")
    }
}
