import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Property tests of the central guarantee: a frozen code keeps `embed`, `embed_avg` and `cluster_size`
/// bit-identical through every write path, while the other codes keep learning.
@Suite("Exact partial freezing")
struct FreezingPropertyTests {
    struct Scenario: CustomTestStringConvertible, Sendable {
        let seed: UInt64
        var heads = 1, separate = false, cosine = false, decay = 0.8, threshold = 0.0, kmeans = false
        var learnable: String? = nil  // optimizer name
        var weighted = false
        var testDescription: String {
            "seed \(seed): heads \(heads)\(separate ? " separate" : "") \(cosine ? "cosine" : "euclid") decay \(decay) dead \(threshold)\(kmeans ? " kmeans" : "")\(learnable.map { " learnable/\($0)" } ?? "")\(weighted ? " weighted" : "")"
        }

        /// A random configuration drawn from the seed.
        static func random(_ seed: UInt64) -> Scenario {
            var g = SeededGenerator(seed: seed)
            var s = Scenario(seed: seed)
            s.heads = g.nextInt(below: 2) + 1
            s.separate = s.heads > 1 && g.nextInt(below: 2) == 0
            s.decay = [0.5, 0.8, 0.99][g.nextInt(below: 3)]
            s.threshold = g.nextInt(below: 2) == 0 ? 0 : 2
            s.kmeans = g.nextInt(below: 3) == 0
            s.weighted = g.nextInt(below: 2) == 0
            if g.nextInt(below: 3) == 0 {
                s.learnable = ["sgd-momentum", "adam", "adamw"][g.nextInt(below: 3)]
            } else {
                s.cosine = g.nextInt(below: 2) == 0
            }
            return s
        }
    }

    static let scenarios: [Scenario] = (1...24).map { Scenario.random($0) } + [
        Scenario(seed: 100, threshold: 2),
        Scenario(seed: 101, heads: 2, separate: true, cosine: true, threshold: 2),
        Scenario(seed: 102, kmeans: true),
        Scenario(seed: 103, learnable: "adamw"),
        Scenario(seed: 104, learnable: "sgd-momentum"),
    ]

    @Test("frozen codes stay bit-identical, the others change", arguments: scenarios)
    func frozenStaysExact(_ s: Scenario) throws {
        var config = VectorQuantizerConfiguration(dim: 8 * s.heads, codebookSize: 24)
        config.codebookDim = 8
        config.heads = s.heads
        config.separateCodebookPerHead = s.separate
        config.useCosineSimilarity = s.cosine
        config.decay = s.decay
        config.thresholdEMADeadCode = s.threshold
        config.kmeansInit = s.kmeans
        config.seed = s.seed
        if s.learnable != nil {
            config.learnableCodebook = true
            config.emaUpdate = false
        }
        let vq = try VectorQuantizer(config)
        let cb = vq.codebook
        var g = SeededGenerator(seed: s.seed &* 31)
        var frozen: [[Int]] = []
        for h in 0..<cb.numCodebooks {
            let codes = Array(g.permutation(24).prefix(8 + g.nextInt(below: 8)))
            try cb.freeze(codes: codes, head: h)
            frozen.append(codes.sorted())
        }
        let optimizer: Optimizer? = s.learnable.map { TestOptimizers.make($0, vq.trainableParameters()) }
        let before = (cb.embed.value, cb.embedAverage.value, cb.clusterSize.value)
        vq.train()
        for step in 0..<10 {
            // Drifting data so that EMA, dead codes and optimizers all have work to do.
            let x = TestSupport.random([3, 20, config.dim], seed: s.seed * 1000 + UInt64(step), std: 1 + Float(step) * 0.2) + Float(step) * 0.1
            var opts = VectorQuantizerOptions()
            if s.weighted {
                opts.emaUpdateWeight = .perCode(Tensor.randomUniform([cb.numCodebooks, 24], low: 0.2, high: 1, using: &g))
            }
            let out = vq(s.learnable != nil ? x.requiringGradient() : x, options: opts)
            if let optimizer {
                optimizer.zeroGradients()
                out.loss.backward()
                optimizer.step()
            }
        }
        let d = cb.dim
        var changed = 0
        for h in 0..<cb.numCodebooks {
            for code in 0..<24 {
                let r = h * 24 + code
                let rows = (r * d)..<(r * d + d)
                let sameEmbed = cb.embed.value.scalars[rows].map(\.bitPattern) == before.0.scalars[rows].map(\.bitPattern)
                let sameAvg = cb.embedAverage.value.scalars[rows].map(\.bitPattern) == before.1.scalars[rows].map(\.bitPattern)
                let sameCount = cb.clusterSize.value.scalars[r].bitPattern == before.2.scalars[r].bitPattern
                if frozen[h].contains(code) {
                    #expect(sameEmbed && sameAvg && sameCount, "\(s.testDescription): frozen code \(code) of head \(h) changed")
                } else if !sameEmbed {
                    changed += 1
                }
            }
        }
        #expect(changed > 0, "\(s.testDescription): no unfrozen code learned anything")

        // Checkpoint: the mask is state; a reloaded quantizer keeps the same frozen codes and values.
        let copy = try VectorQuantizer(config)
        try copy.load(stateDict: vq.stateDict())
        for h in 0..<cb.numCodebooks { #expect(copy.codebook.frozenCodeIndices(head: h) == frozen[h]) }
        #expect(copy.codebook.embed.value == cb.embed.value)
        if s.learnable != nil { #expect(copy.codebook.embed.frozenRowMask == cb.embed.frozenRowMask) }
    }

    @Test("freeze_codebook and an all-zero weight leave the whole state bit-identical")
    func wholeCodebook() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))
        let x = TestSupport.random([2, 30, 8], seed: 5)
        let state = vq.stateDict()
        var o = VectorQuantizerOptions()
        o.freezeCodebook = true
        _ = vq(x, options: o)
        #expect(vq.stateDict() == state)
        o = VectorQuantizerOptions()
        o.emaUpdateWeight = .scalar(0)
        _ = vq(x, options: o)
        #expect(vq.stateDict() == state)
        vq.codebook.freezeAllCodes()
        _ = vq(x)
        #expect(vq.stateDict()["_codebook.embed"] == state["_codebook.embed"])
    }

    @Test("strict freezing throws on out-of-range codes and heads and changes nothing")
    func strictForms() throws {
        let cb = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16)).codebook
        #expect(throws: CodebookError.codeOutOfRange(code: 16, codebookSize: 16)) { try cb.freeze(codes: [1, 16]) }
        #expect(throws: CodebookError.headOutOfRange(head: 1, numCodebooks: 1)) { try cb.freeze(codes: [1], head: 1) }
        #expect(cb.frozenCodeIndices().isEmpty)
        #expect(throws: CodebookError.codeOutOfRange(code: 16, codebookSize: 16)) { try cb.freeze(codes: [1, 16, 3]) }  // no lenient form
        #expect(cb.frozenCodeIndices().isEmpty)
        try cb.freeze(codes: [1, 3])
        try cb.unfreeze(codes: [1])
        #expect(cb.frozenCodeIndices() == [3])
    }

    @Test("dead-code expiry never replaces a frozen code")
    func deadCodes() throws {
        var config = VectorQuantizerConfiguration(dim: 4, codebookSize: 16)
        config.thresholdEMADeadCode = 5  // every code starts below threshold (cluster_size = 1)
        let vq = try VectorQuantizer(config)
        try vq.codebook.freeze(codes: 0..<8)
        let before = vq.codebook.embed.value
        _ = vq(TestSupport.random([4, 10, 4], seed: 6))
        let after = vq.codebook.embed.value
        #expect(Array(after.scalars[0..<32]) == Array(before.scalars[0..<32]))
        #expect(Array(after.scalars[32...]) != Array(before.scalars[32...]))
        #expect(vq.codebook.clusterSize.value.scalars[0..<8].allSatisfy { $0 == 1 })
    }

    @Test("k-means init fits free codes around frozen ones")
    func kmeansAroundFrozen() throws {
        var config = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        config.kmeansInit = true
        let vq = try VectorQuantizer(config)
        // Freeze codes 0 and 1 at chosen positions before the first forward.
        var codes = Tensor.zeros([8, 4])
        codes.withUnsafeMutableScalars { p in for j in 0..<4 { p[j] = 10; p[4 + j] = -10 } }
        try vq.setCodes(codes)
        try vq.codebook.freeze(codes: [0, 1])
        let x = TestSupport.random([4, 25, 4], seed: 7)
        _ = vq(x)
        let e = vq.codebook.embed.value
        #expect(Array(e.scalars[0..<8]) == [10, 10, 10, 10, -10, -10, -10, -10])
        #expect(vq.codebook.isInitialized)
        #expect(e.scalars[8...].contains { $0 != 0 })
    }

    @Test("setting codes from outside keeps the EMA state consistent")
    func setCodes() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        _ = vq(TestSupport.random([2, 20, 4], seed: 8))  // non-trivial cluster sizes
        let target = TestSupport.random([8, 4], seed: 9)
        try vq.setCodes(target)
        #expect(vq.codes == target)
        vq.codebook.touched = Array(repeating: true, count: 8)
        vq.updateEMA()  // the recompute from embed_avg gives the codes back (to rounding)
        #expect(TestSupport.maxAbsDiff(vq.codes, target) < 1e-5)
        #expect(throws: CodebookError.shapeMismatch(expected: [8, 4], found: [4, 4])) { try vq.setCodes(Tensor.zeros([4, 4])) }
    }

    @Test("expanding a trained codebook keeps and freezes the old codes")
    func expand() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        _ = vq(TestSupport.random([2, 20, 4], seed: 10))
        let old = vq.codes
        let grown = try vq.expanded(toCodebookSize: 12)
        #expect(grown.codes.shape == [12, 4])
        #expect(grown.codes.slice(axis: 0, 0..<8) == old)
        #expect(grown.codebook.frozenCodeIndices() == Array(0..<8))
        for step in 0..<5 { _ = grown(TestSupport.random([2, 20, 4], seed: 20 + UInt64(step)) + 3) }
        #expect(grown.codes.slice(axis: 0, 0..<8) == old)
        #expect(grown.codes.slice(axis: 0, 8..<12) != Tensor.zeros([4, 4]))
        #expect(throws: ConfigurationError.self) { try vq.expanded(toCodebookSize: 8) }
        // A k-means codebook that never saw a batch has placeholder codes: growing it is refused (they would be kept,
        // frozen, as if learned), and it stays uninitialised; after one batch it grows.
        var k = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        k.kmeansInit = true
        let untrained = try VectorQuantizer(k)
        #expect(throws: ConfigurationError.self) { try untrained.expanded(toCodebookSize: 12) }
        #expect(!untrained.isInitialised)
        _ = untrained(TestSupport.random([2, 20, 4], seed: 11))
        #expect(try untrained.expanded(toCodebookSize: 12).codebookSize == 12)
    }
}
