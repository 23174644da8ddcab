import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Growing a codebook: new codes fitted to new data never end up empty and zero.
@Suite("Codebook growth")
struct GrowthTests {
    @Test("a new code that k-means leaves empty keeps its row through training (it used to become the zero vector)")
    func emptyNewCodesSurvive() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 4))
        let old = vq.codebook.embed.value.scalars
        // 1,000 copies of old code 0 and a few vectors near it: most new codes find no vector of their own.
        var rows: [Float] = []
        for _ in 0..<1000 { rows += Array(old[0..<4]) }
        var g = SeededGenerator(seed: 3)
        for _ in 0..<6 { rows += old[0..<4].map { $0 + 0.01 * Float(g.nextInt(below: 100)) / 100 } }
        let data = Tensor(rows, shape: [rows.count / 4, 4])
        let grown = try vq.expanded(toCodebookSize: 8, freezeExisting: true, seed: 2, fittingNewCodesTo: data, countsPerBatch: 256)
        grown.train()
        for s in 0..<20 {
            let batch = data.indexSelect(axis: 0, IndexTensor((0..<256).map { (s * 256 + $0 * 7) % data.shape[0] }))
            _ = grown(batch.unsqueezed(axis: 0))
        }
        let e = grown.codebook.embed.value.scalars
        for code in 4..<8 {
            let row = Array(e[(code * 4)..<(code * 4 + 4)])
            #expect(row.contains { $0 != 0 } && row.allSatisfy(\.isFinite), "new code \(code) is \(row)")
        }
        #expect(grown.codebook.clusterSize.value.scalars[4..<8].allSatisfy { $0 > 0 })
        #expect(Array(e[0..<16]) == Array(old[0..<16]), "the old codes are frozen")
    }
}
