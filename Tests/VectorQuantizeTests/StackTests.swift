import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Freezing across stacks of quantizers, and invariants from the reference's own tests.
@Suite("Residual, grouped and scalar quantizers")
struct StackTests {
    struct Stack: CustomTestStringConvertible, Sendable {
        let seed: UInt64
        var layers = 3, shared = false, cosine = false, deadCodes = false, perLayerWeights = false
        var testDescription: String {
            "seed \(seed): \(layers) layers\(shared ? " shared" : "")\(cosine ? " cosine" : "")\(deadCodes ? " dead-codes" : "")\(perLayerWeights ? " per-layer weights" : "")"
        }
        static func random(_ seed: UInt64) -> Stack {
            var g = SeededGenerator(seed: seed)
            var s = Stack(seed: seed)
            s.layers = 2 + g.nextInt(below: 3)
            s.shared = g.nextInt(below: 3) == 0
            s.cosine = g.nextInt(below: 2) == 0
            s.deadCodes = g.nextInt(below: 2) == 0
            s.perLayerWeights = g.nextInt(below: 2) == 0
            return s
        }
    }

    static let stacks: [Stack] = (1...16).map { Stack.random($0) }

    @Test("a frozen layer and frozen codes of another layer stay bit-identical; the rest learns", arguments: stacks)
    func frozenLayers(_ s: Stack) throws {
        var c = ResidualVQConfiguration(dim: 8, numQuantizers: s.layers, codebookSize: 16)
        c.sharedCodebook = s.shared
        c.layer.useCosineSimilarity = s.cosine
        c.layer.thresholdEMADeadCode = s.deadCodes ? 1.5 : 0
        c.layer.seed = s.seed
        let rvq = try ResidualVQ(c)
        var g = SeededGenerator(seed: s.seed &* 7)
        let frozenLayer = g.nextInt(below: s.layers)
        let partial = (frozenLayer + 1) % s.layers
        let frozenCodes = Array(g.permutation(16).prefix(6)).sorted()
        try rvq.layers[partial].codebook.freeze(codes: frozenCodes)
        var options = ResidualVQOptions()
        if s.shared {
            // One codebook serves every layer: freezing codes there freezes them for all layers.
        } else {
            options.frozenLayers = [frozenLayer]
        }
        if s.perLayerWeights {
            options.emaUpdateWeights = .function { layer in layer == frozenLayer && !s.shared ? .scalar(0) : nil }
        }
        let before = rvq.layers.map { ($0.codebook.embed.value, $0.codebook.embedAverage.value, $0.codebook.clusterSize.value) }
        rvq.train()
        for step in 0..<6 {
            _ = rvq(TestSupport.random([2, 16, 8], seed: s.seed * 100 + UInt64(step), std: 1.5) + Float(step) * 0.2, options: options)
        }
        for (i, layer) in rvq.layers.enumerated() {
            let cb = layer.codebook
            let (e0, a0, n0) = before[i]
            func rowSame(_ code: Int) -> Bool {
                let r = (code * 8)..<(code * 8 + 8)
                return cb.embed.value.scalars[r].map(\.bitPattern) == e0.scalars[r].map(\.bitPattern)
                    && cb.embedAverage.value.scalars[r].map(\.bitPattern) == a0.scalars[r].map(\.bitPattern)
                    && cb.clusterSize.value.scalars[code].bitPattern == n0.scalars[code].bitPattern
            }
            if i == frozenLayer && !s.shared {
                #expect((0..<16).allSatisfy(rowSame), "\(s.testDescription): frozen layer \(i) changed")
            } else {
                let codes = s.shared || i == partial ? frozenCodes : []
                for code in codes { #expect(rowSame(code), "\(s.testDescription): frozen code \(code) of layer \(i) changed") }
                #expect((0..<16).contains { !codes.contains($0) && !rowSame($0) }, "\(s.testDescription): layer \(i) learned nothing")
            }
        }
    }

    @Test("freezing one group of a grouped residual VQ leaves it bit-identical")
    func groupFreeze() throws {
        let g = try GroupedResidualVQ(.init(dim: 8, groups: 2, residual: ResidualVQConfiguration(dim: 4, numQuantizers: 2, codebookSize: 8)))
        let before = g.stateDict()
        var frozen = ResidualVQOptions()
        frozen.freezeCodebook = true
        g.train()
        _ = g(TestSupport.random([2, 10, 8], seed: 3), perGroup: [1: frozen])
        let after = g.stateDict()
        for (k, v) in before where k.hasPrefix("rvqs.1.") { #expect(after[k] == v, "\(k) changed") }
        #expect(before.filter { $0.key.hasPrefix("rvqs.0.") && $0.key.hasSuffix("embed") }.contains { after[$0.key] != $0.value })
    }

    @Test("implicit neural codebooks train with the diversity and cross-entropy losses (once a trap, then refused; reference case rvq_inc_ce_q2_train_grad)")
    func implicitCodebookLosses() throws {
        let extras: [[String: Any]] = [["codebook_diversity_loss_weight": 64], ["commitment_use_cross_entropy_loss": true],
                                       ["commitment_use_cross_entropy_loss": true, "codebook_diversity_loss_weight": 0.1]]
        for extra in extras {
            var kwargs: [String: Any] = ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "codebook_dim": 4, "implicit_neural_codebook": true]
            kwargs.merge(extra) { _, new in new }
            let q = try ModuleConfig(module: "ResidualVQ", kwargs: kwargs).build() as! ResidualVQ
            q.train()
            let x = TestSupport.random([2, 10, 8], seed: 4).requiringGradient()
            let out = q.forward(x)
            #expect(out.loss.allFinite && out.loss.sum().item != 0, "\(extra)")
            out.loss.sum().backward()
            let g = try #require(x.grad, "\(extra)")
            #expect(g.allFinite && g.scalars.contains { $0 != 0 }, "\(extra)")
            // The code transforms learn from these losses too.
            let mlp = q.trainableParameters().filter { $0.value.grad != nil }
            #expect(!mlp.isEmpty, "\(extra)")
        }
    }

    @Test("eval output equals the lookup of the returned indices")
    func evalLookup() throws {
        var c = ResidualVQConfiguration(dim: 16, numQuantizers: 3, codebookSize: 32)
        c.codebookDim = 8
        let rvq = try ResidualVQ(c)
        rvq.eval()
        let x = TestSupport.random([2, 20, 16], seed: 4)
        let out = rvq(x)
        #expect(TestSupport.maxAbsDiff(out.quantized, rvq.getOutput(from: out.indices)) < 1e-5)
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))
        vq.eval()
        let o = vq(TestSupport.random([2, 5, 8], seed: 5))
        #expect(o.quantized == vq.getOutput(from: o.indices))
    }

    @Test("masked tokens do not change the unmasked prefix")
    func maskedPrefix() throws {
        let rvq = try ResidualVQ(ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16))
        rvq.eval()
        let x = TestSupport.random([1, 12, 8], seed: 6)
        var o = ResidualVQOptions()
        o.mask = TokenMask((0..<12).map { $0 < 7 })
        let masked = rvq(x, options: o)
        let prefix = rvq(x.slice(axis: 1, 0..<7))
        #expect(masked.quantized.slice(axis: 1, 0..<7) == prefix.quantized)
        #expect(Array(masked.indices.scalars.prefix(14)) == prefix.indices.scalars)
        #expect(masked.indices.scalars.suffix(10).allSatisfy { $0 == -1 })
        #expect(masked.quantized.slice(axis: 1, 7..<12) == Tensor.zeros([1, 5, 8]))
    }

    @Test("FSQ indices round-trip through codes", arguments: [[8, 5, 5, 5], [7, 5, 3], [2, 2, 4]])
    func fsqRoundTrip(_ levels: [Int]) throws {
        var c = FSQ.Configuration(levels: levels)
        c.preserveSymmetry = levels.contains(2)
        let fsq = try FSQ(c)
        let all = IndexTensor(Array(0..<fsq.codebookSize))
        #expect(fsq.codesToIndices(fsq.rawCodes(all)) == all)
        let fsqOut = fsq(TestSupport.random([2, 30, levels.count], seed: 7, std: 2))
        let (idx, codes) = (fsqOut.indices, fsqOut.codes)
        #expect(fsq.codesToIndices(codes.reshaped([2, 30, levels.count])) == idx)
    }

    @Test("quantize dropout returns -1 for dropped layers and is reproducible for a seed")
    func dropout() throws {
        var c = ResidualVQConfiguration(dim: 8, numQuantizers: 4, codebookSize: 16)
        c.quantizeDropout = true
        c.quantizeDropoutCutoffIndex = 1
        let rvq = try ResidualVQ(c)
        rvq.train()
        var sawDrop = false
        for seed in UInt64(0)..<12 {
            var o = ResidualVQOptions()
            o.quantizeDropoutSeed = seed
            let out = rvq(TestSupport.random([1, 6, 8], seed: 8), options: o)
            let q = 4
            let used = (0..<q).filter { l in out.indices.scalars[l] != -1 }
            #expect(used.first == 0 && used == Array(0..<used.count), "layers used must be a prefix: \(used)")
            #expect(used.count >= 2)  // cutoff index 1: at least layers 0 and 1
            for l in used.count..<q {
                #expect((0..<6).allSatisfy { out.indices.scalars[$0 * q + l] == -1 })
                #expect(out.losses.scalars[l] == 0)
            }
            sawDrop = sawDrop || used.count < q
            let again = rvq(TestSupport.random([1, 6, 8], seed: 8), options: o)
            #expect((0..<q).map { again.indices.scalars[$0] == -1 } == (0..<q).map { out.indices.scalars[$0] == -1 })
        }
        #expect(sawDrop)
        rvq.eval()
        #expect(!rvq(TestSupport.random([1, 6, 8], seed: 9)).indices.scalars.contains(-1))
    }
}

@Suite("ResidualVQ beam search")
struct BeamSearchTests {
    @Test("an exhaustive beam finds the path with the least summed layer loss; the output is its lookup")
    func exhaustive() throws {
        var c = ResidualVQConfiguration(dim: 4, numQuantizers: 2, codebookSize: 4)
        c.beamSize = 16
        let rvq = try ResidualVQ(c)
        rvq.eval()
        let x = TestSupport.random([1, 6, 4], seed: 11)
        let out = rvq(x)
        #expect(TestSupport.maxAbsDiff(out.quantized, rvq.getOutput(from: out.indices)) < 1e-5)
        let e1 = rvq.layers[0].codes, e2 = rvq.layers[1].codes
        func mse(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) / Float(a.count) }
        for t in 0..<6 {
            let xt = Array(x.scalars[(t * 4)..<(t * 4 + 4)])
            func cost(_ a: Int, _ b: Int) -> Float {
                let c1 = Array(e1.scalars[(a * 4)..<(a * 4 + 4)]), c2 = Array(e2.scalars[(b * 4)..<(b * 4 + 4)])
                return mse(c1, xt) + mse(c2, zip(xt, c1).map { $0 - $1 })
            }
            let best = (0..<4).flatMap { a in (0..<4).map { cost(a, $0) } }.min()!
            let chosen = cost(out.indices.scalars[t * 2], out.indices.scalars[t * 2 + 1])
            #expect(abs(chosen - best) < 1e-6, "token \(t): chose \(chosen), best \(best)")
        }
    }

    @Test("beam search in training updates every layer's codebook and respects frozen layers")
    func training() throws {
        var c = ResidualVQConfiguration(dim: 4, numQuantizers: 3, codebookSize: 8)
        c.beamSize = 3
        let rvq = try ResidualVQ(c)
        rvq.layers[1].codebook.freezeAllCodes()
        let before = rvq.layers.map(\.codes)
        rvq.train()
        let out = rvq(TestSupport.random([2, 5, 4], seed: 12))
        #expect(out.indices.shape == [2, 5, 3] && out.losses.shape == [3])
        #expect(rvq.layers[1].codes == before[1])
        #expect(rvq.layers[0].codes != before[0] && rvq.layers[2].codes != before[2])
    }
}

@Suite("Residual stacks on image maps")
struct ImageStackTests {
    @Test("ResidualVQ and GroupedResidualVQ take [b, dim, h, w] of any width; decoding gives the forward's output")
    func images() throws {
        var c = ResidualVQConfiguration(dim: 8, numQuantizers: 3, codebookSize: 16)
        c.acceptImageFmap = true
        let rvq = try ResidualVQ(c)
        rvq.eval()
        let x = TestSupport.random([2, 8, 4, 8], seed: 1)  // width 8 = dim: the old code read the last axis as features
        let out = rvq(x)
        #expect(out.quantized.shape == [2, 8, 4, 8])
        #expect(out.indices.shape == [2, 4, 8, 3])
        #expect(TestSupport.isClose(rvq.getOutput(from: out.indices), out.quantized, atol: 1e-5, rtol: 1e-5))
        // The same as quantizing the pixels as a sequence with the same codes.
        let plain = try ResidualVQ(ResidualVQConfiguration(dim: 8, numQuantizers: 3, codebookSize: 16))
        try plain.load(stateDict: rvq.stateDict())
        plain.eval()
        let seq = plain(x.reshaped([2, 8, 32]).transposed(1, 2))
        #expect(seq.indices.reshaped([2, 4, 8, 3]) == out.indices)
        let odd = rvq(TestSupport.random([1, 8, 3, 5], seed: 2))
        #expect(odd.quantized.shape == [1, 8, 3, 5] && odd.indices.shape == [1, 3, 5, 3])

        let g = try GroupedResidualVQ(referenceKwargs: ["dim": 8, "groups": 2, "num_quantizers": 2, "codebook_size": 16, "accept_image_fmap": true])
        g.eval()
        let go = g(x)
        #expect(go.quantized.shape == [2, 8, 4, 8] && go.indices.shape == [2, 2, 4, 8, 2])
        #expect(TestSupport.isClose(g.getOutput(from: go.indices), go.quantized, atol: 1e-5, rtol: 1e-5))
    }
}

@Suite("FSQ fused evaluation path")
struct FSQFusedPathTests {
    @Test("the fused no-gradient pass equals the differentiable one bit for bit (codes and indices)",
          arguments: [([8, 5, 5, 5], false, false), ([7, 6, 3], false, false), ([8, 5, 5, 5], true, false), ([4, 4, 2], true, false),
                      ([8, 5, 5], false, true), ([5, 3, 3, 3, 2], true, true)] as [([Int], Bool, Bool)])
    func fused(_ levels: [Int], _ symmetric: Bool, _ hard: Bool) throws {
        var c = FSQ.Configuration(levels: levels)
        c.preserveSymmetry = symmetric
        c.boundHardClamp = hard
        let fsq = try FSQ(c)
        for rows in [1, 63, 65, 5000] {
            let z = TestSupport.random([rows, levels.count], seed: UInt64(rows), std: 2)
            let (codes, indices) = fsq.quantizeWithoutGradient(z)
            let reference = fsq.quantize(z)
            #expect(codes.scalars.map(\.bitPattern) == reference.scalars.map(\.bitPattern), "\(levels) \(rows) rows")
            #expect(indices == fsq.codesToIndices(reference), "\(levels) \(rows) rows")
        }
    }

    @Test("the one-operation gradient path equals the composed chain bit for bit (codes, indices, input gradient)",
          arguments: [[8, 5, 5, 5], [7, 6, 3], [4, 4, 3]])
    func fusedGradient(_ levels: [Int]) throws {
        let fsq = try FSQ(FSQ.Configuration(levels: levels))
        for rows in [1, 65, 3000] {
            let z = TestSupport.random([rows, levels.count], seed: UInt64(rows), std: 2)
            let weights = TestSupport.random([rows, levels.count], seed: 99)   // an upstream gradient that is not uniform
            let zf = z.requiringGradient(), zc = z.requiringGradient()
            let (codes, indices) = fsq.quantizeWithGradient(zf)
            let composed = fsq.quantize(zc)
            (codes * weights).sum().backward()
            (composed * weights).sum().backward()
            #expect(codes.scalars.map(\.bitPattern) == composed.scalars.map(\.bitPattern), "\(levels) \(rows) rows")
            #expect(indices == fsq.codesToIndices(composed.detached()))
            #expect(zf.grad!.scalars.map(\.bitPattern) == zc.grad!.scalars.map(\.bitPattern), "\(levels) \(rows) rows")
            #expect(zf.grad!.scalars.contains { $0 != 0 })   // the gradient is not vacuous
        }
    }
}
