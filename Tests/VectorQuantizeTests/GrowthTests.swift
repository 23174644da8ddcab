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

/// The subspace projector `[h, d, d]` is allocated only when a subspace is frozen.
@Suite("Lazy subspace projector")
struct LazyProjectorTests {
    @Test("a codebook without a frozen subspace holds no projector; freezing makes one; loading a state without it clears it")
    func lazy() throws {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.codebookDim = 4096   // a [4096, 4096] projector would be 64 MB per codebook
        let vq = try VectorQuantizer(c)
        #expect(vq.codebook.frozenSubspaceProjector.value.count == 0)
        #expect(vq.stateDict()["_codebook.frozen_subspace_projector"] == nil)
        let small = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        try small.codebook.freeze(subspace: Tensor([1, 0, 0, 0], shape: [1, 4]))
        #expect(small.codebook.frozenSubspaceProjector.value.shape == [1, 4, 4] && small.codebook.frozenSubspaceRank() == 1)
        let fresh = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        try small.load(stateDict: fresh.stateDict())
        #expect(small.codebook.frozenSubspaceRank() == 0 && small.codebook.frozenSubspaceProjector.value.count == 0)
    }
}
