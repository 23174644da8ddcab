import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Growing a codebook: new codes fitted to new data never end up empty and zero.
@Suite("Codebook growth")
struct GrowthTests {
    /// vq-fuzz --calls seed 2011, case 5239: fitCodes to rows near 1e38 (finite) overflowed their means times counts and
    /// left ∞ and NaN in `embed` and `embed_avg`. Rows beyond 2⁵⁰ are left out of a k-means fit, as out of the EMA.
    @Test("k-means (a fit, or the initialisation) leaves out rows beyond 2^50: the codes stay finite, the others fit them", arguments: [false, true])
    func hugeRows(_ cosine: Bool) throws {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.heads = 2
        c.separateCodebookPerHead = true
        c.useCosineSimilarity = cosine
        let vq = try VectorQuantizer(c)
        let book = vq.codebook
        var x = TestSupport.random([2, 16, 8], seed: 11).scalars
        for r in [0, 5, 17] { for j in 0..<8 { x[r * 8 + j] = j % 2 == 0 ? 3e38 : -3e38 } }
        let before = book.embed.value.scalars
        try book.fitCodes([7, 9], to: Tensor(x, shape: [2, 16, 8]))
        #expect(vq.nonFiniteValues().isEmpty, "\(vq.nonFiniteValues())")
        let after = book.embed.value.scalars
        #expect(after[(7 * 8)..<(8 * 8)] != before[(7 * 8)..<(8 * 8)], "code 7 was fitted to the ordinary rows")
        // The initialisation of a k-means codebook from such a batch, likewise.
        c.kmeansInit = true
        let fresh = try VectorQuantizer(c)
        fresh.train()
        _ = fresh(Tensor(x, shape: [2, 16, 8]))
        #expect(fresh.nonFiniteValues().isEmpty && fresh.codebook.isInitialized, "\(fresh.nonFiniteValues())")
    }

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

/// The growth fit (`KMeans.fitGrowing`): k-means++ against the fixed means, Lloyd to convergence, empties re-seeded.
@Suite("Growth k-means")
struct GrowthKMeansTests {
    /// A mixture of `clusters` well-separated Gaussians in `d` dimensions, `[n, d]`, and its centres.
    static func mixture(clusters: Int, d: Int, n: Int, seed: UInt64, offset: Float = 0) -> (Tensor, [Float]) {
        var g = SeededGenerator(seed: seed)
        let centres = (0..<(clusters * d)).map { _ in Float(g.nextInt(below: 2001) - 1000) / 100 + offset }
        var rows = [Float]()
        let noise = TestSupport.random([n, d], seed: seed &+ 1).scalars
        for i in 0..<n {
            let c = i % clusters
            for j in 0..<d { rows.append(centres[c * d + j] + 0.5 * noise[i * d + j]) }
        }
        return (Tensor(rows, shape: [n, d]), centres)
    }

    static func objective(_ x: Tensor, _ means: Tensor) -> Double {
        x.unsqueezed(axis: 0).nearestCodesAndSquaredErrorsPerHead(means.unsqueezed(axis: 0)).squaredErrors.reduce(0, +)
    }

    @Test("fixed means stay bit-identical; fitted ones reach every new cluster where random starts (FAISS's) do not", arguments: [1, 2, 3, 4])
    func aheadOfRandomStarts(_ seed: Int) throws {
        let (k0, kNew, d) = (8, 16, 8)
        let (old, oldCentres) = Self.mixture(clusters: k0, d: d, n: 800, seed: UInt64(seed))
        _ = old
        let (new, _) = Self.mixture(clusters: kNew, d: d, n: 3200, seed: UInt64(seed) &+ 50, offset: 15)
        var initial = oldCentres + [Float](repeating: 0, count: kNew * d)
        var g = SeededGenerator(seed: UInt64(seed) &+ 9)
        // Random starts (FAISS's): distinct sampled rows.
        let picks = Array(g.permutation(3200).prefix(kNew))
        for (t, r) in picks.enumerated() { for j in 0..<d { initial[(k0 + t) * d + j] = new.scalars[r * d + j] } }
        let start = Tensor(initial, shape: [k0 + kNew, d])
        let fitting = (0..<(k0 + kNew)).map { $0 >= k0 }
        let plain = KMeans.fit(samples: new, initial: start, frozen: fitting.map { !$0 }, iterations: 25)
        var rng = SeededGenerator(seed: UInt64(seed))
        let grown = KMeans.fitGrowing(samples: new, initial: start, fitting: fitting, maxIterations: 100, restarts: 2, rng: &rng)
        #expect(Array(grown.means.scalars[0..<(k0 * d)]).map(\.bitPattern) == Array(oldCentres).map(\.bitPattern))
        let (a, b) = (Self.objective(new, grown.means), Self.objective(new, plain.means))
        #expect(a <= b, "growth fit \(a) against random starts \(b)")
        // Every new cluster has its own mean: the objective is the noise's (0.25 per component), not a merged cluster's.
        #expect(a / Double(new.count) < 0.3, "objective per component \(a / Double(new.count))")
        // The counts are those of the final means' assignment.
        let assigned = new.unsqueezed(axis: 0).nearestCodesPerHead(grown.means.unsqueezed(axis: 0)).scalars
        for c in 0..<(k0 + kNew) { #expect(Int(grown.counts.scalars[c]) == assigned.filter { $0 == c }.count) }
        var again = SeededGenerator(seed: UInt64(seed))
        let repeated = KMeans.fitGrowing(samples: new, initial: start, fitting: fitting, maxIterations: 100, restarts: 2, rng: &again)
        #expect(repeated.means == grown.means, "deterministic for a seed")
    }

    @Test("more codes to fit than distinct rows: no mean ends empty while a row is represented by another's")
    func emptiesReseeded() throws {
        // 6 distinct points, 1 fixed mean far away, 6 to fit: each fitted mean must end on one of the points.
        let pts: [Float] = [0, 0, 1, 0, 0, 1, 1, 1, 2, 2, 3, 3]
        var rows = [Float]()
        for i in 0..<60 { rows += pts[((i % 6) * 2)..<((i % 6) * 2 + 2)] }
        let x = Tensor(rows, shape: [60, 2])
        let start = Tensor([100, 100] + [Float](repeating: 0, count: 12), shape: [7, 2])
        var rng = SeededGenerator(seed: 1)
        let out = KMeans.fitGrowing(samples: x, initial: start, fitting: [false] + Array(repeating: true, count: 6), maxIterations: 50, rng: &rng)
        #expect(Self.objective(x, out.means) == 0)
        #expect(out.counts.scalars[1...].allSatisfy { $0 == 10 })
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
