import Foundation
import Testing
import VQTensor
import VQTestSupport
import VectorQuantize

/// The snippets of the DocC article *The Three Uses of Partial Freezing*, compiled and run, with what they
/// claim checked; and a check that the article quotes them verbatim.
@Suite("Article: the three uses of partial freezing")
struct ThreeUsesTests {
    let oldData = (0..<10).map { TestSupport.random([4, 32, 8], seed: 100 + UInt64($0)) }
    let newData = (0..<10).map { TestSupport.random([4, 32, 8], seed: 200 + UInt64($0), std: 0.5) + 3 }
    let basis = Tensor([0.6, 0.8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], shape: [2, 8])

    @Test("use 1, then use 2 on the grown codebook")
    func usesOneAndTwo() throws {
        // snippet 1
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 32))
        for batch in oldData { _ = vq(batch) }                       // stage 1
        let grown = try vq.expanded(toCodebookSize: 64, fittingNewCodesTo: newData[0])
        for batch in newData { _ = grown(batch) }                    // stage 2: codes 0..<32 never change
        // end
        #expect(grown.codes.slice(axis: 0, 0..<32) == vq.codes)
        #expect(grown.codes.slice(axis: 0, 32..<64) != Tensor.zeros([32, 8]))
        let before = grown.codes
        // snippet 2
        try grown.codebook.freeze(dimensions: 0..<4)                     // components 0–3 of every code
        try grown.codebook.freeze(subspace: basis)                   // basis [k, 8], orthonormal rows
        for batch in newData { _ = grown(batch) }
        // end
        let after = grown.codes
        for code in 0..<64 {
            for j in 0..<4 { #expect(after.scalars[code * 8 + j].bitPattern == before.scalars[code * 8 + j].bitPattern) }
            let coordinate = { (t: Tensor) in (0..<8).reduce(Float(0)) { $0 + self.basis.scalars[8 + $1] * t.scalars[code * 8 + $1] } }
            #expect(abs(coordinate(after) - coordinate(before)) <= 1e-6 * max(1, abs(coordinate(before))))
        }
        #expect(after != before, "the free part learns")
    }

    // snippet 3
    struct HoldTheBusiest: FreezePolicy {
        mutating func decide(_ c: FreezeContext) -> FreezeDecision {
            let busiest = c.counts.indices.max { c.counts[$0] < c.counts[$1] }!
            var weights = [Float](repeating: 1, count: c.counts.count)
            weights[busiest] = 0                                 // hold it for this update only
            return FreezeDecision(weights: weights)
        }
    }
    // end

    @Test("use 3: a custom policy composed with a built-in one")
    func useThree() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 32))
        try vq.codebook.setFreezePolicy(HoldTheBusiest().or(.converged(tolerance: 0.005, patience: 20)))
        let x = oldData[0]
        let before = vq.codebook.clusterSize.value.scalars
        _ = vq(x)
        let after = vq.codebook.clusterSize.value.scalars
        #expect(zip(before, after).filter { $0 == $1 }.count >= 1, "the busiest code was held")
        #expect(zip(before, after).contains { $0 != $1 }, "the others learned")
    }

    @Test("the article quotes the snippets verbatim")
    func articleMatches() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let article = try String(contentsOf: root.appendingPathComponent("Sources/VectorQuantize/VectorQuantize.docc/ThreeUsesOfFreezing.md"), encoding: .utf8)
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let blocks = article.components(separatedBy: "```swift\n").dropFirst().map { $0.components(separatedBy: "```")[0] }
        #expect(blocks.count == 3)
        let normalized = { (s: String) in s.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
        let testLines = normalized(source)
        for block in blocks {
            for line in normalized(block) where !line.hasPrefix("try vq.codebook.setFreezePolicy") {
                #expect(testLines.contains(line), "the article's line is not in the tests: \(line)")
            }
        }
        #expect(testLines.contains("try vq.codebook.setFreezePolicy(HoldTheBusiest().or(.converged(tolerance: 0.005, patience: 20)))"))
    }
}
