import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// The state of one codebook as bit patterns, so "unchanged" means bit-identical.
struct CodebookBits: Equatable, CustomStringConvertible {
    let embed: [UInt32], embedAverage: [UInt32], clusterSize: [UInt32]

    init(_ cb: Codebook) {
        embed = cb.embed.value.scalars.map(\.bitPattern)
        embedAverage = cb.embedAverage.value.scalars.map(\.bitPattern)
        clusterSize = cb.clusterSize.value.scalars.map(\.bitPattern)
    }

    var description: String { "codebook state (\(clusterSize.count) codes, cluster_size sum \(clusterSize.map { Float(bitPattern: $0) }.reduce(0, +)))" }

    /// Codes `(head · c + code)` whose `embed`, `embed_avg` or `cluster_size` differ from `other`.
    func changedCodes(_ other: CodebookBits, dim d: Int) -> Set<Int> {
        var out = Set<Int>()
        for r in clusterSize.indices {
            let rows = (r * d)..<(r * d + d)
            if clusterSize[r] != other.clusterSize[r] || embed[rows] != other.embed[rows] || embedAverage[rows] != other.embedAverage[rows] {
                out.insert(r)
            }
        }
        return out
    }
}

/// Each per-call freeze of a stack, on every path: each test failed before the freeze was routed through
/// one decision (`ResidualVQ.layerStep`) and the shared codebook's deferred expiry learned the held codes.
@Suite("Per-call freezes on every residual path")
struct PerCallFreezeTests {
    static func rvq(beam: Int? = nil, shared: Bool = false, threshold: Double = 0, learnable: Bool = false) throws -> ResidualVQ {
        var c = ResidualVQConfiguration(dim: 8, numQuantizers: 3, codebookSize: 16)
        c.beamSize = beam
        c.sharedCodebook = shared
        c.layer.thresholdEMADeadCode = threshold
        c.layer.seed = 3
        if learnable {
            c.layer.learnableCodebook = true
            c.layer.emaUpdate = false
        }
        return try ResidualVQ(c)
    }

    static let x = TestSupport.random([2, 24, 8], seed: 11, std: 2)

    @Test("beam search honours frozenLayers, freezeCodebook and per-layer zero weights")
    func beamSearch() throws {
        for variant in 0..<3 {
            let r = try Self.rvq(beam: 3)
            let before = r.layers.map { CodebookBits($0.codebook) }
            var o = ResidualVQOptions()
            let held: Set<Int>
            switch variant {
            case 0: o.frozenLayers = [1]; held = [1]
            case 1: o.freezeCodebook = true; held = [0, 1, 2]
            default: o.emaUpdateWeights = .perLayer([.scalar(0), nil, nil]); held = [0]
            }
            _ = r(Self.x, options: o)
            for (i, layer) in r.layers.enumerated() {
                let same = CodebookBits(layer.codebook) == before[i]
                #expect(same == held.contains(i), "variant \(variant): layer \(i) \(same ? "held" : "moved")")
            }
        }
    }

    @Test("grouped beam search honours a group's freezeCodebook")
    func groupedBeamSearch() throws {
        var c = ResidualVQConfiguration(dim: 4, numQuantizers: 2, codebookSize: 16)
        c.beamSize = 2
        let g = try GroupedResidualVQ(.init(dim: 8, groups: 2, residual: c))
        let before = g.rvqs.map { $0.layers.map { CodebookBits($0.codebook) } }
        var frozen = ResidualVQOptions()
        frozen.freezeCodebook = true
        _ = g(Self.x, perGroup: [1: frozen])
        #expect(g.rvqs[1].layers.map { CodebookBits($0.codebook) } == before[1])
        #expect(g.rvqs[0].layers.map { CodebookBits($0.codebook) } != before[0])
    }

    @Test("a shared codebook's deferred expiry skips codes any layer held", arguments: [2.0, 1e6])
    func sharedExpiry(_ threshold: Double) throws {
        for variant in 0..<3 {
            let r = try Self.rvq(shared: true, threshold: threshold)
            let cb = r.layers[0].codebook
            let before = CodebookBits(cb)
            var o = ResidualVQOptions()
            var held = Set(0..<16)
            switch variant {
            case 0: o.freezeCodebook = true
            case 1: o.frozenLayers = [0, 1, 2]
            default:
                let w = (0..<16).map { $0 < 6 ? Float(0) : 1 }
                o.emaUpdateWeights = .all(.perCode(Tensor(w)))
                held = Set(0..<6)
            }
            _ = r(Self.x, options: o)
            let changed = CodebookBits(cb).changedCodes(before, dim: 8)
            #expect(changed.isDisjoint(with: held), "variant \(variant), threshold \(threshold): held codes \(changed.intersection(held).sorted()) changed")
            if variant == 2 { #expect(!changed.isEmpty, "the free codes of the shared codebook must learn") }
        }
    }

    @Test("a layer configuration's freezeCodebook is honoured inside ResidualVQ")
    func layerConfigurationFreeze() throws {
        var c = ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16)
        c.layer.freezeCodebook = true
        c.layer.thresholdEMADeadCode = 2
        let r = try ResidualVQ(c)
        let before = r.layers.map { CodebookBits($0.codebook) }
        _ = r(Self.x)
        #expect(r.layers.map { CodebookBits($0.codebook) } == before)
        // The same stack without the layer freeze learns (so the check above can fail).
        c.layer.freezeCodebook = false
        let free = try ResidualVQ(c)
        let freeBefore = free.layers.map { CodebookBits($0.codebook) }
        _ = free(Self.x)
        #expect(free.layers.map { CodebookBits($0.codebook) } != freeBefore)
    }

    @Test("freezeCodebook per call means the same for a VectorQuantizer and a ResidualVQ: nil = configuration, true, false")
    func perCallFreezeCodebookAlike() throws {
        var c = ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16)
        c.layer.freezeCodebook = true                 // frozen by configuration
        var vc = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        vc.freezeCodebook = true
        for setting in [nil, true, false] as [Bool?] {
            let r = try ResidualVQ(c), vq = try VectorQuantizer(vc)
            try vq.codebook.freeze(codes: 0..<4)
            try r.layers[0].codebook.freeze(codes: 0..<4)
            let (rBefore, vBefore) = (r.layers.map { CodebookBits($0.codebook) }, CodebookBits(vq.codebook))
            var ro = ResidualVQOptions(), vo = VectorQuantizerOptions()
            ro.freezeCodebook = setting
            vo.freezeCodebook = setting
            _ = r(Self.x, options: ro)
            _ = vq(Self.x, options: vo)
            let learned = setting == false
            #expect((r.layers.map { CodebookBits($0.codebook) } != rBefore) == learned, "ResidualVQ, freezeCodebook \(String(describing: setting))")
            #expect((CodebookBits(vq.codebook) != vBefore) == learned, "VectorQuantizer, freezeCodebook \(String(describing: setting))")
            // Frozen codes hold whatever the call says.
            #expect(CodebookBits(vq.codebook).changedCodes(vBefore, dim: 8).isDisjoint(with: 0..<4))
            #expect(CodebookBits(r.layers[0].codebook).changedCodes(rBefore[0], dim: 8).isDisjoint(with: 0..<4))
        }
    }

    @Test("the codebook's mask is the optimizer's only source: a direct buffer write is honoured")
    func oneMask() throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.learnableCodebook = true
        c.emaUpdate = false
        let vq = try VectorQuantizer(c)
        let cb = vq.codebook
        cb.frozenCodes.value = Tensor([1, 1, 1, 0, 0, 0, 0, 0], shape: [1, 8])  // raw write, no freeze(codes:)
        #expect(cb.isFrozen(code: 0) && cb.embed.frozenRows == [0, 1, 2])
        let before = cb.embed.value
        let opt = Adam(parameters: vq.trainableParameters(), learningRate: 0.1)
        for s in 0..<3 {
            opt.zeroGradients()
            vq(TestSupport.random([2, 16, 4], seed: 40 + UInt64(s)).requiringGradient()).loss.backward()
            opt.step()
        }
        let after = cb.embed.value
        #expect(Array(after.scalars[0..<12]).map(\.bitPattern) == Array(before.scalars[0..<12]).map(\.bitPattern))
        #expect(Array(after.scalars[12...]) != Array(before.scalars[12...]))
        try cb.unfreeze(codes: 0..<8)
        #expect(cb.embed.frozenRowMask == nil)
        #expect(cb.embed.hasDerivedFreezeMask)
    }

    @Test("the embed parameter's row mask cannot be set apart from the codebook's")
    func rowMaskSetterTraps() async {
        await #expect(processExitsWith: .failure) {
            let cb = Codebook(Codebook.Configuration(dim: 4, codebookSize: 8))
            try cb.freeze(codes: [0])
            cb.embed.setFrozenRowMask(nil)
        }
    }

    @Test("a layer or group outside the stack, or a per-layer weight list of another length, traps (it would freeze nothing)")
    func perCallOutOfRangeTraps() async throws {
        // Layers count from 0: frozenLayers = [3] on three layers would hold nothing while the caller believes the last held.
        await #expect(processExitsWith: .failure) {
            let rvq = try! ResidualVQ(referenceKwargs: ["dim": 4, "num_quantizers": 3, "codebook_size": 8])
            var o = ResidualVQOptions()
            o.frozenLayers = [3]
            _ = rvq(Tensor.ones([1, 2, 4]), options: o)
        }
        await #expect(processExitsWith: .failure) {
            let rvq = try! ResidualVQ(referenceKwargs: ["dim": 4, "num_quantizers": 3, "codebook_size": 8])
            var o = ResidualVQOptions()
            o.emaUpdateWeights = .perLayer([.scalar(0)])
            _ = rvq(Tensor.ones([1, 2, 4]), options: o)
        }
        await #expect(processExitsWith: .failure) {
            let grvq = try! GroupedResidualVQ(referenceKwargs: ["dim": 4, "groups": 2, "num_quantizers": 2, "codebook_size": 8])
            var o = ResidualVQOptions()
            o.freezeCodebook = true
            _ = grvq(Tensor.ones([1, 2, 4]), perGroup: [2: o])
        }
        // In range, each is what it says (the last layer held, every weight given, the second group frozen).
        let rvq = try ResidualVQ(referenceKwargs: ["dim": 4, "num_quantizers": 3, "codebook_size": 8])
        rvq.train()
        let before = rvq.layers[2].codebook.embed.value
        var o = ResidualVQOptions()
        o.frozenLayers = [2]
        o.emaUpdateWeights = .perLayer([nil, .scalar(0.5), nil])
        _ = rvq(TestSupport.random([2, 6, 4], seed: 9), options: o)
        #expect(rvq.layers[2].codebook.embed.value == before)
        let fresh = try ResidualVQ(referenceKwargs: ["dim": 4, "num_quantizers": 3, "codebook_size": 8])
        #expect(rvq.layers[0].codebook.embed.value != fresh.layers[0].codebook.embed.value)   // the free layers learned
    }

    @Test("a per-call freeze gives a learnable codebook no gradient from any loss", arguments: ["ce", "diversity", "orthogonal"])
    func learnableNoGradient(_ loss: String) throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.learnableCodebook = true
        c.emaUpdate = false
        switch loss {
        case "ce": c.commitmentUseCrossEntropyLoss = true
        case "diversity": c.codebookDiversityLossWeight = 1
        default: c.orthogonalRegWeight = 1
        }
        for frozen in [false, true] {
            let vq = try VectorQuantizer(c)
            var o = VectorQuantizerOptions()
            o.freezeCodebook = frozen
            vq(TestSupport.random([2, 16, 4], seed: 50).requiringGradient(), options: o).loss.backward()
            let g = vq.codebook.embed.grad?.scalars ?? []
            let nonzero = g.contains { $0 != 0 }
            #expect(nonzero == !frozen, "\(loss): frozen \(frozen), gradient \(nonzero ? "non-zero" : "zero")")
        }
    }

    @Test("shared codebook + beam search recomputes embed from the statistics")
    func sharedBeam() throws {
        let r = try Self.rvq(beam: 2, shared: true)
        let cb = r.layers[0].codebook
        let before = CodebookBits(cb)
        _ = r(Self.x)
        let after = CodebookBits(cb)
        #expect(after.embedAverage != before.embedAverage)
        #expect(after.embed != before.embed)
        // embed is the smoothed recompute of the new statistics (nothing left pending).
        #expect(cb.touched.allSatisfy { !$0 })
    }

    @Test("encode keeps the module's mode")
    func encodeKeepsMode() throws {
        var fsq = FSQ.Configuration(levels: [5, 5])
        fsq.dim = 8
        let quantizers: [any Quantizer] = [
            try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16)), try Self.rvq(), try FSQ(fsq),
        ]
        for q in quantizers {
            q.train()
            _ = q.encode(TestSupport.random([5, 8], seed: 60))
            #expect(q.isTraining, "\(type(of: q)) left training mode")
            #expect(q.children().allSatisfy { $0.1.isTraining })
            q.eval()
            _ = q.encode(TestSupport.random([5, 8], seed: 60))
            #expect(!q.isTraining)
        }
        // encode never updates the codebook, even when called in training mode.
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))
        let before = CodebookBits(vq.codebook)
        _ = vq.encode(TestSupport.random([5, 8], seed: 61))
        #expect(CodebookBits(vq.codebook) == before)
    }

    /// k-means initialisation is initialisation, not training: as the reference, it runs on the first
    /// forward that sees data — in evaluation mode and under a per-call freeze too — the same way for every
    /// quantizer with a codebook, and it never writes a persistently frozen code.
    @Test("k-means initialisation: first forward in any mode, never a frozen code", arguments: ["train", "eval", "frozen-call"])
    func kmeansConsistent(_ mode: String) throws {
        var layer = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        layer.kmeansInit = true
        var rc = ResidualVQConfiguration(dim: 4, numQuantizers: 2, codebookSize: 8)
        rc.layer = layer
        let vq = try VectorQuantizer(layer)
        let rvq = try ResidualVQ(rc)
        let grvq = try GroupedResidualVQ(.init(dim: 8, groups: 2, residual: rc))
        let codebooks = [vq.codebook] + rvq.layers.map(\.codebook) + grvq.rvqs.flatMap { $0.layers.map(\.codebook) }
        for cb in codebooks { try cb.freeze(codes: [7]) }
        let x4 = TestSupport.random([2, 20, 4], seed: 70), x8 = TestSupport.random([2, 20, 8], seed: 71)
        for m in [vq, rvq, grvq] as [Module] { mode == "eval" ? m.eval() : m.train() }
        var vo = VectorQuantizerOptions(), ro = ResidualVQOptions()
        if mode == "frozen-call" {
            vo.freezeCodebook = true
            ro.freezeCodebook = true
        }
        _ = vq(x4, options: vo)
        _ = rvq(x4, options: ro)
        _ = grvq(x8, options: ro)
        for cb in codebooks {
            #expect(cb.isInitialized)
            let e = cb.embed.value.scalars
            #expect(e[0..<28].contains { $0 != 0 }, "free codes fitted")
            #expect(e[28..<32].allSatisfy { $0 == 0 }, "frozen code 7 kept its (zero) value")
        }
    }
}

@Suite("The in-place codebook optimizer and freezing")
struct InPlaceOptimizerFreezeTests {
    /// `sgd+ema`: the codes are learnable through the orthogonal loss and keep their EMA update (the reference's
    /// default beside `orthogonal_reg_weight`), so the EMA and the optimizer both write them in every call.
    @Test("in_place_codebook_optimizer never moves a frozen code (or a code frozen in part), and moves the others", arguments: ["sgd", "adam", "sgd+ema"])
    func inPlace(_ name: String) throws {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        if name == "sgd+ema" {
            c.orthogonalRegWeight = 0.1
        } else {
            c.learnableCodebook = true
            c.emaUpdate = false
        }
        c.inPlaceCodebookOptimizer = name == "adam" ? .adam(learningRate: 0.05) : .sgd(learningRate: 2)
        let vq = try VectorQuantizer(c)
        try vq.codebook.freeze(codes: 0..<6)
        try vq.codebook.freeze(dimensions: [0, 1], codes: [6, 7])
        let before = vq.codebook.embed.value.scalars
        for s in 0..<4 { _ = vq(TestSupport.random([2, 32, 8], seed: 900 + UInt64(s), std: 2)) }
        let after = vq.codebook.embed.value.scalars
        #expect(Array(after[0..<48]).map(\.bitPattern) == Array(before[0..<48]).map(\.bitPattern))
        for code in 6..<8 { for j in 0..<2 { #expect(after[code * 8 + j].bitPattern == before[code * 8 + j].bitPattern) } }
        #expect(Array(after[64...]) != Array(before[64...]), "free codes learn")
        #expect(vq.lastInPlaceGradient != nil)
    }
}

/// The write paths this session added — affine statistics, per-token (implicit) codebooks, the manual in-place
/// optimizer, `updateIndices` with several heads — under a persistent freeze (some codes) and a per-call
/// freeze (the whole call): held codes bit-identical, free codes moved.
@Suite("Freezing on the newer write paths")
struct NewPathFreezeTests {
    static func bits(_ t: Tensor) -> [UInt32] { t.scalars.map(\.bitPattern) }

    @Test("affine_param: persistent and per-call freezes hold")
    func affine() throws {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.affineParam = true
        let vq = try VectorQuantizer(c)
        try vq.codebook.freeze(codes: 0..<8)
        vq.train()
        let before = vq.codes
        for s in 0..<3 { _ = vq(TestSupport.random([2, 20, 8], seed: UInt64(s)) * 3 + 1) }
        #expect(Self.bits(vq.codes.slice(axis: 0, 0..<8)) == Self.bits(before.slice(axis: 0, 0..<8)))
        #expect(vq.codes.slice(axis: 0, 8..<16) != before.slice(axis: 0, 8..<16))
        let state = vq.stateDict()
        var o = VectorQuantizerOptions()
        o.freezeCodebook = true
        _ = vq(TestSupport.random([2, 20, 8], seed: 9), options: o)
        #expect(vq.stateDict() == state, "a frozen call wrote state (codes or affine statistics)")
    }

    @Test("implicit neural codebook (with the mse, or the cross-entropy and diversity losses) and manual in-place updates: held codes keep their bits through optimizer steps")
    func gradientPaths() throws {
        for crossEntropy in [false, true] {
            var c = ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16)
            c.implicitNeuralCodebook = true
            // The per-token scores of these losses are a gradient path to the codes of their own.
            c.layer.commitmentUseCrossEntropyLoss = crossEntropy
            c.layer.codebookDiversityLossWeight = crossEntropy ? 0.1 : 0
            let rvq = try ResidualVQ(c)
            try rvq.layers[1].codebook.freeze(codes: 0..<8)
            rvq.train()
            let before = rvq.layers[1].codes, layer0 = rvq.layers[0].codes
            let opt = Adam(parameters: rvq.trainableParameters(), learningRate: 0.05)
            for s in 0..<3 {
                rvq.zeroGradients()
                let x = TestSupport.random([2, 10, 8], seed: UInt64(s)).requiringGradient()
                var o = ResidualVQOptions()
                o.frozenLayers = s == 1 ? [0] : []
                let out = rvq(x, options: o)
                (out.losses.sum() + out.quantized.squared().mean()).backward()
                opt.step()
            }
            #expect(Self.bits(rvq.layers[1].codes.slice(axis: 0, 0..<8)) == Self.bits(before.slice(axis: 0, 0..<8)), "cross-entropy \(crossEntropy)")
            #expect(rvq.layers[1].codes.slice(axis: 0, 8..<16) != before.slice(axis: 0, 8..<16), "cross-entropy \(crossEntropy)")
            #expect(rvq.layers[0].codes != layer0, "cross-entropy \(crossEntropy)")
        }

        let vq = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: [
            "dim": 4, "codebook_size": 8, "learnable_codebook": true, "ema_update": false,
            "in_place_codebook_optimizer": "partial(torch.optim.Adam, lr=0.1)", "manual_in_place_optimizer_update": true]))
        try vq.codebook.freeze(codes: [1, 5])
        vq.train()
        let start = vq.codes
        var frozenCall = VectorQuantizerOptions()
        frozenCall.freezeCodebook = true
        _ = vq(TestSupport.random([2, 8, 4], seed: 1), options: frozenCall)
        #expect(vq.pendingInPlaceGradient == nil, "a frozen call queued an in-place step")
        _ = vq(TestSupport.random([2, 8, 4], seed: 2))
        vq.updateInPlaceOptimizer()
        for k in 0..<8 {
            let same = Self.bits(vq.codes.slice(axis: 0, k..<(k + 1))) == Self.bits(start.slice(axis: 0, k..<(k + 1)))
            if [1, 5].contains(k) { #expect(same, "code \(k)") }
        }
        #expect(vq.codes != start)
    }

    @Test("updateIndices with several heads honours a frozen head's codes")
    func updateIndicesHeads() throws {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        (c.heads, c.separateCodebookPerHead) = (2, true)
        let vq = try VectorQuantizer(c)
        try vq.codebook.freeze(codes: 0..<16, head: 1)
        let before = vq.codes
        let x = TestSupport.random([2, 6, 8], seed: 4)
        let idx = withMode(vq, training: false) { vq(x).indices }
        vq.train()
        try vq.updateIndices(x, idx)
        #expect(Self.bits(vq.codes.slice(axis: 0, 1..<2)) == Self.bits(before.slice(axis: 0, 1..<2)))
        #expect(vq.codes.slice(axis: 0, 0..<1) != before.slice(axis: 0, 0..<1))
    }

    func withMode<R>(_ m: Module, training: Bool, _ body: () -> R) -> R { m.withMode(training: training, body) }
}
