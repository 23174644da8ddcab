import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Defined behaviour for bad batches: non-finite values, empty or fully masked batches, and k-means
/// with fewer vectors than codes. A bad batch must never poison the codebook state.
@Suite("Bad batches")
struct RobustnessTests {
    func quantizer(_ edit: (inout VectorQuantizerConfiguration) -> Void = { _ in }) throws -> VectorQuantizer {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        edit(&c)
        return try VectorQuantizer(c)
    }

    @Test("NaN and ±∞ vectors are left out of the codebook statistics; the state stays finite")
    func nonFinite() throws {
        let vq = try quantizer { $0.thresholdEMADeadCode = 2 }
        var x = TestSupport.random([2, 10, 4], seed: 1)
        x.withUnsafeMutableScalars { p in p[0] = .nan; p[5] = .infinity; p[42] = -.infinity }
        let clean = try quantizer { $0.thresholdEMADeadCode = 2 }
        // The same batch without the three bad rows gives the same statistics.
        let keep = (0..<20).filter { ![0, 1, 10].contains($0) }
        let xClean = x.reshaped([20, 4]).indexSelect(axis: 0, IndexTensor(keep)).reshaped([1, 17, 4])
        let out = vq(x)
        _ = clean(xClean)
        for t in vq.stateDict().values { #expect(t.allFinite) }
        #expect(vq.codebook.clusterSize.value == clean.codebook.clusterSize.value)
        #expect(TestSupport.maxAbsDiff(vq.codebook.embedAverage.value, clean.codebook.embedAverage.value) < 1e-6)
        #expect(out.indices.count == 20)
    }

    @Test("a batch that uses only frozen codes, on counts that are all zero, leaves the free codes as they were (0/0 made them NaN)",
          arguments: [false, true])
    func onlyFrozenCodesUsed(_ loaded: Bool) throws {
        let vq = try quantizer()
        // Code 0 set where the data is and frozen; the free codes elsewhere. The counts are all zero: a fresh codebook,
        // or a state loaded with them so.
        var codes = vq.codebook.embed.value.scalars
        for j in 0..<4 { codes[j] = 10 }
        try vq.codebook.setCodes(Tensor(codes, shape: [1, 8, 4]))
        try vq.codebook.freeze(codes: [0])
        if loaded {
            var state = vq.stateDict()
            state["_codebook.cluster_size"] = Tensor.zeros([1, 8])
            try vq.load(stateDict: state)
        }
        let before = vq.codebook.embed.value.scalars
        vq.train()
        _ = vq(TestSupport.random([1, 6, 4], seed: 2) * 0.1 + 10)   // every vector's nearest code is 0
        for t in vq.stateDict().values { #expect(t.allFinite) }
        // No vector reached a free code: with no count anywhere they keep their values; on a fresh codebook the EMA
        // decays their statistics alike, so they stay within rounding.
        let held = vq.codebook.embed.value.scalars
        #expect(loaded ? held == before : zip(held, before).allSatisfy { abs($0 - $1) <= 1e-5 * max(abs($1), 1) }, "no code has news")
        // A batch at a free code moves it (so the check above is not vacuous), and code 0 holds.
        let target = Array(before[4..<8])
        _ = vq(Tensor((0..<6).flatMap { _ in target.map { $0 + 0.05 } }, shape: [1, 6, 4]))
        let after = vq.codebook.embed.value.scalars
        for t in vq.stateDict().values { #expect(t.allFinite) }
        #expect(Array(after[4..<8]) != target && Array(after[0..<4]) == Array(before[0..<4]))
    }

    /// FSQ has no state to protect, but a NaN row must not trap when its index is formed: its index is −1
    /// (its codes stay NaN), in evaluation (the grid kernel) and with gradients, symmetric or not, while the
    /// other rows are quantized as without it.
    @Test("FSQ: a row with NaN gets index −1, the others are unaffected", arguments: [false, true])
    func fsqNaN(_ symmetric: Bool) throws {
        var c = FSQ.Configuration(levels: [8, 5, 5, 5])
        c.preserveSymmetry = symmetric
        let fsq = try FSQ(c)
        var x = TestSupport.random([1, 40, 4], seed: 5)
        let clean = fsq(x).indices
        x.withUnsafeMutableScalars { p in p[4 * 7 + 2] = .nan }
        for withGradient in [false, true] {
            let out = withGradient ? fsq(x.requiringGradient()) : withoutGradient { fsq(x) }
            #expect(out.indices.scalars[7] == -1)
            #expect(out.indices.scalars.enumerated().filter { $0.offset != 7 } .map(\.element)
                    == clean.scalars.enumerated().filter { $0.offset != 7 }.map(\.element))
            #expect(clean.scalars.allSatisfy { $0 >= 0 && $0 < 1000 })
        }
    }

    @Test("the grid quantizers on NaN and huge inputs: FSP and FSQ give −1 to a NaN row, every other row a code of the grid; no trap")
    func gridExtremes() throws {
        let fsp = try FSP(.init(levels: [8, 5, 5], dim: 3))
        let fsq = try FSQ(.init(levels: [8, 5, 5]))
        for (name, q) in [("FSP", fsp as any Quantizer), ("FSQ", fsq as any Quantizer)] {
            var x = TestSupport.random([1, 6, 3], seed: 7)
            let clean = q.encode(x)
            x.withUnsafeMutableScalars { p in
                (p[0], p[4], p[6], p[9], p[10]) = (.nan, 1e30, -3e38, .infinity, -.infinity)
            }
            let indices = q.encode(x).scalars
            #expect(indices[0] == -1, "\(name): \(indices)")
            #expect(indices.dropFirst().allSatisfy { $0 >= 0 && $0 < 200 }, "\(name): \(indices)")
            #expect(Array(indices[4...]) == Array(clean.scalars[4...]), "\(name): rows without extremes keep their codes")
        }
    }

    @Test("a fully masked or empty batch leaves the state untouched")
    func emptyBatches() throws {
        let vq = try quantizer { $0.thresholdEMADeadCode = 2 }
        let state = vq.stateDict()
        var o = VectorQuantizerOptions()
        o.mask = TokenMask(Array(repeating: false, count: 20))
        let out = vq(TestSupport.random([2, 10, 4], seed: 2), options: o)
        #expect(vq.stateDict() == state)
        #expect(out.indices.scalars.allSatisfy { $0 == -1 })
        #expect(out.quantized == Tensor.zeros([2, 10, 4]))
        #expect(out.loss.item == 0)
        let empty = vq(Tensor.zeros([0, 5, 4]))
        #expect(empty.indices.shape == [0, 5])
        #expect(vq.stateDict() == state)
        // Separate cosine codebooks behind projections, without gradients (the fused projection, search and
        // commitment path): an empty batch and a fully masked one write nothing either.
        var c = VectorQuantizerConfiguration(dim: 24, codebookSize: 64)
        (c.heads, c.separateCodebookPerHead, c.useCosineSimilarity, c.codebookDim) = (2, true, true, 16)
        let heads = try VectorQuantizer(c)
        heads.train()
        let headState = heads.stateDict()
        let none = withoutGradient { heads(Tensor.zeros([0, 5, 24])) }
        #expect(none.quantized.shape == [0, 5, 24] && none.indices.count == 0)
        #expect(heads.stateDict() == headState)
        var masked = VectorQuantizerOptions()
        masked.mask = TokenMask(Array(repeating: false, count: 6))
        let before = heads.stateDict()
        let m = withoutGradient { heads(TestSupport.random([2, 3, 24], seed: 4), options: masked) }
        #expect(heads.stateDict() == before)
        #expect(m.indices.scalars.allSatisfy { $0 == -1 })
    }

    @Test("k-means with fewer vectors than codes uses every vector, then duplicates")
    func fewVectors() throws {
        let vq = try quantizer { $0.kmeansInit = true }
        let x = TestSupport.random([1, 5, 4], seed: 3)
        _ = vq(x)
        #expect(vq.codebook.isInitialized)
        let codes = vq.codes
        // Every input vector is (close to) some code.
        for r in 0..<5 {
            let row = x.reshaped([5, 4]).slice(axis: 0, r..<(r + 1))
            #expect(row.nearestCodes(codes).scores.item < 1e-3)
        }
        for t in vq.stateDict().values { #expect(t.allFinite) }
    }

    @Test("k-means init waits for a batch with usable vectors")
    func kmeansWaits() throws {
        let vq = try quantizer { $0.kmeansInit = true }
        var o = VectorQuantizerOptions()
        o.mask = TokenMask(Array(repeating: false, count: 6))
        _ = vq(TestSupport.random([2, 3, 4], seed: 4), options: o)
        #expect(!vq.codebook.isInitialized)
        _ = vq(TestSupport.random([2, 3, 4], seed: 5))
        #expect(vq.codebook.isInitialized)
    }

    @Test("bad configurations throw with the keyword's name")
    func configurations() {
        #expect(throws: ConfigurationError.unknownKeyword(module: "VectorQuantize", keyword: "codebook_sise")) {
            try VectorQuantizerConfiguration(referenceKwargs: ["dim": 4, "codebook_size": 8, "codebook_sise": 3])
        }
        #expect(throws: ConfigurationError.self) {
            try VectorQuantizerConfiguration(referenceKwargs: ["dim": 4, "codebook_size": 8, "learnable_codebook": true])
        }
        #expect(throws: ConfigurationError.badValue(module: "VectorQuantize", keyword: "heads", reason: "expected an integer, got x")) {
            try VectorQuantizerConfiguration(referenceKwargs: ["dim": 4, "codebook_size": 8, "heads": "x"])
        }
    }

    @Test("a mis-shaped input traps with the shapes in the message")
    func trapsOnShape() async {
        await #expect(processExitsWith: .failure) {
            let vq = try! VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
            _ = vq(Tensor.zeros([2, 3, 5]))
        }
    }
}

@Suite("Stochastic code sampling")
struct SamplingTests {
    @Test("stochastic sampling is reproducible for a seed, follows the temperature, and is off in evaluation")
    func stochastic() throws {
        func make() throws -> VectorQuantizer {
            var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 16)
            c.stochasticSampleCodes = true
            c.sampleCodebookTemperature = 1
            c.seed = 11
            return try VectorQuantizer(c)
        }
        let x = TestSupport.random([2, 50, 4], seed: 12)
        var frozen = VectorQuantizerOptions()
        frozen.freezeCodebook = true
        let a = try make(), b = try make()
        a.train(); b.train()
        let ia = a(x, options: frozen).indices, ib = b(x, options: frozen).indices
        #expect(ia == ib)  // same seed, same draws
        a.eval()
        let greedy = a(x).indices
        #expect(ia != greedy)  // temperature 1 samples away from the nearest code sometimes
        a.train()
        var cold = frozen
        cold.sampleCodebookTemperature = 1e-6
        #expect(a(x, options: cold).indices == greedy)  // a vanishing temperature is the arg-max
        cold.sampleCodebookTemperature = 0
        #expect(a(x, options: cold).indices == greedy)
    }

    @Test("with straight_through, the value is the hard code and the input gets the identity gradient (as the reference)")
    func gumbelStraightThrough() throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.straightThrough = true
        c.rotationTrick = false
        c.commitmentWeight = 0
        let vq = try VectorQuantizer(c)
        vq.train()
        let x = TestSupport.random([1, 10, 4], seed: 13).requiringGradient()
        var o = VectorQuantizerOptions()
        o.freezeCodebook = true
        let out = vq(x, options: o)
        // The value stays the hard code (up to the rounding of x + (q − x), as in the reference).
        #expect(TestSupport.maxAbsDiff(out.quantized.detached(), vq.getCodes(from: out.indices)) < 1e-6)
        let g = TestSupport.random([1, 10, 4], seed: 14)
        (out.quantized * g).sum().backward()
        // As in the reference, `x + sg(q − x)` is applied after the codebook, so the Gumbel soft assignment
        // does not reach the input: the gradient equals the plain straight-through estimator's.
        c.straightThrough = false
        let plain = try VectorQuantizer(c)
        plain.train()
        let x2 = x.detached().requiringGradient()
        (plain(x2, options: o).quantized * g).sum().backward()
        #expect(x2.grad! == g)  // d(x + sg(q − x))/dx = identity
        #expect(x.grad! == g)
    }
}
