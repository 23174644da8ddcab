import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// `StageComparison` (what `vq compare` prints) on staged runs: a grown VQ with frozen old codes, a residual stack with
/// a frozen layer, a frozen subspace; a moved frozen code is named.
@Suite("Stage comparison")
struct StageComparisonTests {
    static func data(_ seed: UInt64, shift: Float = 0) -> Tensor {
        TestSupport.random([4, 64, 8], seed: seed, std: 1) + shift
    }

    static func trained<Q: Module>(_ q: Q, steps: Int, seed: UInt64, shift: Float, _ forward: (Tensor) -> Void) -> Q {
        q.train()
        for s in 0..<steps { forward(data(seed &+ UInt64(s), shift: shift)) }
        return q
    }

    /// A VQ of 16 codes × 8 (decay 0.5) trained `steps` batches on unshifted data.
    static func stage1(steps: Int) throws -> VectorQuantizer {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.decay = 0.5
        let vq = try VectorQuantizer(c)
        return trained(vq, steps: steps, seed: 1, shift: 0) { _ = vq($0) }
    }

    @Test("a grown VQ with its old codes frozen: held bit for bit, churn toward the new codes, usage of both sizes")
    func grownVQ() throws {
        let stage1 = try Self.stage1(steps: 10)
        let probe = Self.data(500, shift: 2).reshaped([256, 8])
        let grown = try stage1.expanded(toCodebookSize: 24, fittingNewCodesTo: probe)
        _ = Self.trained(grown, steps: 10, seed: 100, shift: 2) { _ = grown($0) }
        let r = try StageComparison(old: stage1, new: grown, probe: probe)
        #expect(r.books.count == 1 && r.books[0].name == "codebook")
        let b = r.books[0]
        #expect((b.oldSize, b.newSize, b.frozenCodes) == (16, 24, 16))
        #expect(b.frozenHeld && r.frozenHeld)
        #expect(b.churn! > 0 && b.frozenToNew! > 0 && b.frozenChurn! >= b.frozenToNew!)
        #expect(b.usedOld! + b.deadOld! == 16 && b.usedNew! + b.deadNew! == 24)
        #expect(b.perplexityNew! > 0 && b.perplexityNew! <= 1)
        #expect(r.mseNew! < r.mseOld!, "the grown model represents the shifted data better")
        // The escape hatch moves frozen code 3: the comparison names it.
        var e = grown.codebook.embed.value.scalars
        e[3 * 8 + 5] += 1
        grown.codebook.embed.overwriteBypassingGate(Tensor(e, shape: [1, 24, 8]))
        let moved = try StageComparison(old: stage1, new: grown, probe: probe)
        #expect(moved.books[0].frozenMoved == [3] && !moved.frozenHeld)
    }

    @Test("a residual stack whose first layer is frozen: that layer held with zero drift, the second moved")
    func residualFrozenLayer() throws {
        var c = ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16)
        c.layer.decay = 0.5
        let stage1 = try ResidualVQ(c)
        _ = Self.trained(stage1, steps: 5, seed: 1, shift: 0) { _ = stage1($0) }
        let stage2 = try ResidualVQ(c)
        try stage2.load(stateDict: stage1.stateDict())
        stage2.layers[0].codebook.freezeAllCodes()
        _ = Self.trained(stage2, steps: 5, seed: 200, shift: 1) { _ = stage2($0) }
        let r = try StageComparison(old: stage1, new: stage2, probe: Self.data(600, shift: 1))
        #expect(r.books.map(\.name) == ["layer 0", "layer 1"])
        #expect(r.books[0].frozenCodes == 16 && r.books[0].frozenHeld && r.books[0].maxDrift == 0)
        #expect(r.books[1].frozenCodes == 0 && r.books[1].meanDrift > 0 && r.books[1].relativeMeanDrift > 0)
        #expect(r.books[0].churn == 0, "layer 0's codes and inputs did not change")
        #expect(r.books[1].churn! > 0 && r.churn > 0)
    }

    @Test("a frozen subspace: its coordinates drift by one rounding at most while the codes move")
    func subspace() throws {
        let stage1 = try Self.stage1(steps: 5)
        let stage2 = try VectorQuantizer(stage1.configuration)
        try stage2.load(stateDict: stage1.stateDict())
        try stage2.codebook.freeze(subspace: Tensor([0.6, 0.8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], shape: [2, 8]))
        _ = Self.trained(stage2, steps: 5, seed: 300, shift: 1) { _ = stage2($0) }
        let r = try StageComparison(old: stage1, new: stage2, probe: Self.data(700))
        let b = r.books[0]
        #expect(b.subspaceDrift! <= 1e-5, "\(b.subspaceDrift!)")
        #expect(b.meanDrift > 1e-3 && b.frozenCodes == 0)
    }

    @Test("quantizers of another type, dimension or size, and bad probes are refused")
    func refused() throws {
        let a = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))
        let smaller = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 8))
        let otherDim = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 16))
        let rvq = try ResidualVQ(ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16))
        let probe = Self.data(1)
        for other in [smaller, otherDim] as [any Quantizer] + [rvq] {
            #expect(throws: StageComparisonError.self) { try StageComparison(old: a, new: other, probe: probe) }
        }
        var bad = probe.scalars
        bad[7] = .nan
        #expect(throws: StageComparisonError.self) { try StageComparison(old: a, new: a, probe: Tensor(bad, shape: probe.shape)) }
        #expect(throws: StageComparisonError.self) { try StageComparison(old: a, new: a, probe: TestSupport.random([4, 5], seed: 1)) }
        let same = try StageComparison(old: a, new: a, probe: probe)
        #expect(same.churn == 0 && same.books[0].meanDrift == 0 && same.mseOld == same.mseNew)
        // A k-means codebook never trained: refused, and not initialised from the probe by the attempt.
        var k = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        k.kmeansInit = true
        let untrained = try VectorQuantizer(k)
        let state = untrained.stateDict()
        #expect(throws: StageComparisonError.notInitialised("new")) { try StageComparison(old: a, new: untrained, probe: probe) }
        #expect(throws: StageComparisonError.notInitialised("old")) { try StageComparison(old: untrained, new: a, probe: probe) }
        #expect(untrained.stateDict() == state && !untrained.isInitialised)
    }
}
