import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

@Suite("VectorQuantize options: update_indices, sync_update_v, vq_bridge, manual in-place updates")
struct VectorQuantizeOptionTests {
    /// A training forward's EMA step equals an evaluation forward followed by `updateIndices` with its
    /// indices — for several heads and every input layout.
    nonisolated(unsafe) static let layouts: [(String, [String: Any], [Int])] = [
        ("heads 2 separate", ["dim": 8, "codebook_size": 16, "heads": 2, "separate_codebook_per_head": true], [2, 5, 8]),
        ("heads 2 shared", ["dim": 8, "codebook_size": 16, "heads": 2], [2, 5, 8]),
        ("channel first", ["dim": 8, "codebook_size": 16, "channel_last": false], [2, 8, 5]),
        ("image map, 2 heads", ["dim": 8, "codebook_size": 16, "accept_image_fmap": true, "heads": 2, "separate_codebook_per_head": true], [2, 8, 3, 4]),
        ("video map", ["dim": 8, "codebook_size": 16, "accept_3d_fmap": true], [2, 8, 2, 3, 2]),
        ("single tokens", ["dim": 8, "codebook_size": 16], [6, 8]),
    ]

    @Test("updateIndices reproduces the forward's EMA step", arguments: layouts.indices)
    func updateIndices(_ i: Int) throws {
        let (name, kw, shape) = Self.layouts[i]
        let a = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: kw))
        let b = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: kw))
        try a.codebook.freeze(codes: [3])
        try b.codebook.freeze(codes: [3])
        let x = TestSupport.random(shape, seed: 4)
        a.train()
        _ = a(x)
        b.eval()
        let indices = b(x).indices
        b.train()
        try b.updateIndices(x, indices)
        #expect(a.stateDict() == b.stateDict(), "\(name)")
        let fresh = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: kw))
        #expect(a.codebook.embed.value != fresh.codebook.embed.value, "\(name): nothing moved")
    }

    @Test("sync_update_v sends v · G to the chosen codes")
    func syncUpdate() throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.learnableCodebook = true
        c.emaUpdate = false
        c.rotationTrick = false
        c.commitmentWeight = 0
        c.syncUpdateV = 0.5
        let vq = try VectorQuantizer(c)
        vq.train()
        let x = TestSupport.random([1, 6, 4], seed: 2).requiringGradient()
        let out = vq(x)
        out.quantized.sum().backward()
        let g = try #require(vq.codebook.embed.grad).reshaped([8, 4])
        var counts = [Float](repeating: 0, count: 8)
        for k in out.indices.scalars { counts[k] += 1 }
        for k in 0..<8 { #expect(g.slice(axis: 0, k..<(k + 1)).scalars.allSatisfy { abs($0 - 0.5 * counts[k]) < 1e-6 }, "code \(k)") }
        #expect(throws: ConfigurationError.self) { try VectorQuantizerConfiguration(referenceKwargs: ["dim": 4, "codebook_size": 8, "sync_update_v": 0.5]) }
    }

    @Test("vq_bridge: the codes pass through a learned module; decoding gives the forward's output")
    func bridge() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: ["dim": 4, "codebook_size": 8, "vq_bridge": "nn.Linear(4, 4)"]))
        #expect(vq.stateDict().keys.contains("_codebook.vq_bridge.weight"))
        #expect(vq.configuration.learnableCodebook && !vq.configuration.emaUpdate)
        vq.eval()
        let x = TestSupport.random([1, 6, 4], seed: 3)
        let out = vq(x)
        #expect(TestSupport.isClose(vq.getOutput(from: out.indices), out.quantized, atol: 1e-6, rtol: 1e-6))
        vq.train()
        let y = vq(x.requiringGradient())
        (y.loss + y.quantized.sum()).backward()
        #expect(vq.codebook.vqBridge!.namedParameters().allSatisfy { ($0.1.grad?.abs().sum().item ?? 0) > 0 })
    }

    @Test("manual in-place optimizer update: codes move only in updateInPlaceOptimizer, frozen codes never")
    func manualInPlace() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: [
            "dim": 4, "codebook_size": 8, "learnable_codebook": true, "ema_update": false,
            "in_place_codebook_optimizer": "partial(torch.optim.SGD, lr=0.5)", "manual_in_place_optimizer_update": true]))
        try vq.codebook.freeze(codes: [0, 1, 2, 3])
        vq.train()
        let before = vq.codes
        for s in 0..<2 { _ = vq(TestSupport.random([2, 16, 4], seed: UInt64(s))) }
        #expect(vq.codes == before)
        vq.updateInPlaceOptimizer()
        let after = vq.codes
        #expect(after.slice(axis: 0, 0..<4).scalars.map(\.bitPattern) == before.slice(axis: 0, 0..<4).scalars.map(\.bitPattern))
        #expect(after.slice(axis: 0, 4..<8) != before.slice(axis: 0, 4..<8), "the free codes did not move")
        #expect(vq.pendingInPlaceGradient == nil)
    }
}

@Suite("Masks as [b, n] tensors")
struct TensorMaskTests {
    static let flags = [true, true, false, true, false, false, true, true]
    static let mask = Tensor(flags.map { $0 ? 1 : 0 }, shape: [2, 4])

    @Test("a [b, n] mask gives what the flat mask gives, for every quantizer that takes masks")
    func sameAsFlat() throws {
        let x = TestSupport.random([2, 4, 8], seed: 6)
        func vq() throws -> VectorQuantizer { try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16)) }
        var flat = VectorQuantizerOptions(), tensor = VectorQuantizerOptions()
        flat.mask = TokenMask(Self.flags)
        tensor.mask = TokenMask(Self.mask)
        #expect(tensor.mask?.tensor == Self.mask && tensor.mask?.flags == Self.flags && flat.mask?.shape == nil)
        let (a, b) = (try vq(), try vq())
        #expect(a(x, options: flat).indices == b(x, options: tensor).indices)
        #expect(a.stateDict() == b.stateDict())

        func rvq() throws -> ResidualVQ { try ResidualVQ(ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16)) }
        var rf = ResidualVQOptions(), rt = ResidualVQOptions()
        rf.mask = TokenMask(Self.flags)
        rt.mask = TokenMask(Self.mask)
        #expect(try rvq()(x, options: rf).quantized == rvq()(x, options: rt).quantized)

        let lfq = try LFQ(.init(referenceKwargs: ["dim": 8, "codebook_size": 16]))
        #expect(lfq(x, mask: TokenMask(Self.flags)).auxLoss == lfq(x, mask: TokenMask(Self.mask)).auxLoss)
        #expect(lfq(x, mask: [true, true, false, true, false, false, true, true]).auxLoss == lfq(x, mask: TokenMask(Self.mask)).auxLoss)
        let rl = try ResidualLFQ(.init(dim: 8, numQuantizers: 2, codebookSize: 16))
        #expect(rl(x, mask: TokenMask(Self.flags), quantizeDropoutSeed: 1).losses == rl(x, mask: TokenMask(Self.mask), quantizeDropoutSeed: 1).losses)
        let hvq = try HierarchicalVQ(referenceKwargs: ["dim": 8, "codebook_size": 16, "scales": [2, 4], "kmeans_init": false, "channel_first": false])
        hvq.eval()
        #expect(hvq(x, mask: TokenMask(Self.flags)).quantized == hvq(x, mask: TokenMask(Self.mask)).quantized)
    }

    @Test("a mask of another shape than the tokens traps with both shapes in the message")
    func wrongShape() async {
        await #expect(processExitsWith: .failure) {
            var o = VectorQuantizerOptions()
            o.mask = TokenMask(Tensor.ones([4, 2]))
            _ = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))(Tensor.zeros([2, 4, 8]), options: o)
        }
    }
}

@Test("several codebooks into the output projection without gradients equal the concatenated path")
func mergedHeadsProjection() throws {
    var c = VectorQuantizerConfiguration(dim: 16, codebookSize: 32)
    (c.heads, c.separateCodebookPerHead) = (4, true)
    let vq = try VectorQuantizer(c)
    vq.eval()
    let x = TestSupport.random([2, 7, 16], seed: 3)
    let graph = vq(x), fast = withoutGradient { vq(x) }
    #expect(fast.indices == graph.indices)
    #expect(TestSupport.isClose(fast.quantized, graph.quantized.detached(), atol: 1e-5, rtol: 1e-5))
    #expect(graph.quantized.requiresGradient)   // the graph path really ran the other code
}

@Test("the projection into separate heads without gradients equals projecting then splitting, bit for bit",
      arguments: [(300, 16, 4, 8), (37, 256, 8, 256), (5, 3, 2, 1), (6, 20, 3, 16), (70, 300, 2, 24), (1000, 64, 4, 64)])
func splitHeadsProjection(shape: (Int, Int, Int, Int)) {
    let (n, k, h, d) = shape
    let x = TestSupport.random([n, k], seed: 4), w = TestSupport.random([h * d, k], seed: 5), b = TestSupport.random([h * d], seed: 6)
    for bias in [b, nil] {
        let split = Tensor.splitHeadsProjection(x, weight: w, bias: bias, heads: h)
        let reference = x.linear(weight: w, bias: bias).reshaped([n, h, d]).permuted(1, 0, 2)
        #expect(split.shape == [h, n, d])
        #expect(split.scalars.map(\.bitPattern) == reference.scalars.map(\.bitPattern))
        // Normalised by the threads that computed the rows (the GEMM's row epilogue) = normalised afterwards.
        let normalized = Tensor.splitHeadsProjection(x, weight: w, bias: bias, heads: h, l2NormalizeEps: 1e-6)
        var after = reference
        after.l2NormalizeLastAxis(eps: 1e-6)
        #expect(normalized.scalars.map(\.bitPattern) == after.scalars.map(\.bitPattern))
        #expect(normalized.scalars != split.scalars)
    }
    // Finiteness of each head's row, checked while the rows are written (normalised or not): a NaN in one input
    // row reaches every head of that row; an input whose projection overflows in some heads only.
    var poisoned = x.scalars
    poisoned[k * (n / 2)] = .nan
    poisoned[k * (n - 1)] = 3e38
    let xp = Tensor(poisoned, shape: [n, k])
    for eps in [nil, Float(1e-6)] {
        var flags = [Bool](repeating: true, count: h * n)
        let out = flags.withUnsafeMutableBufferPointer {
            Tensor.splitHeadsProjection(xp, weight: w, bias: b, heads: h, l2NormalizeEps: eps, finiteRows: $0)
        }
        let expected = (0..<(h * n)).map { r in out.scalars[(r * d)..<((r + 1) * d)].allSatisfy(\.isFinite) }
        #expect(flags == expected, "eps \(String(describing: eps))")
        #expect(!flags[n / 2] && flags.contains(true))
    }
}

@Test("projecting and comparing the selected codes without gathering them equals gathering first, bit for bit",
      arguments: [(4, 32, 16, 50, 24), (3, 20, 12, 3000, 16), (2, 5, 16, 20, 16), (2, 40, 6, 30, 12), (3, 128, 32, 600, 16)])
func gatheredHeads(shape: (Int, Int, Int, Int, Int)) {
    let (h, c, d, n, out) = shape
    var rng = SeededGenerator(seed: 7)
    let codes = TestSupport.random([h, c, d], seed: 8), other = TestSupport.random([h, n, d], seed: 9)
    let w = TestSupport.random([out, h * d], seed: 10), b = TestSupport.random([out], seed: 11)
    let indices = IndexTensor((0..<(h * n)).map { _ in Int.random(in: 0..<c, using: &rng) }, shape: [h, n])
    let flatIndex = IndexTensor(indices.scalars.enumerated().map { $0.offset / n * c + $0.element }, shape: [h * n])
    let gathered = codes.reshaped([h * c, d]).indexSelect(axis: 0, flatIndex).reshaped([h, n, d])
    for bias in [b, nil] {
        let fast = Tensor.gatheredHeadsProjection(codes: codes, indices: indices, weight: w, bias: bias)
        let reference = Tensor.mergedHeadsProjection(gathered, weight: w, bias: bias)
        #expect(fast.scalars.map(\.bitPattern) == reference.scalars.map(\.bitPattern), "\(shape) bias \(bias != nil)")
    }
    let mse = Tensor.meanSquaredRowDifference(gathering: codes, indices: indices, other)
    #expect(mse.item.bitPattern == gathered.meanSquaredRowDifference(other).item.bitPattern, "\(shape)")
    #expect(mse.item.bitPattern == other.meanSquaredRowDifference(gathered).item.bitPattern, "\(shape): the order of the operands")
    #expect(mse.item > 0)
    // The search's own row sums (screened at level 3 when the codebooks are large enough) give the same loss bits.
    let (nearest, errors) = other.nearestCodesAndSquaredErrorsPerHead(codes)
    #expect(nearest == other.nearestCodesPerHead(codes))
    let selected = codes.rowsPerHead(nearest)
    #expect(Tensor.meanOfRowSums(errors, elements: h * n * d).item.bitPattern == selected.meanSquaredRowDifference(other).item.bitPattern)
}

@Test("a cosine multi-head training forward without gradients gives the graph path's indices and loss bits",
      arguments: [32, 128])
func ungatheredTrainingForward(codebookSize: Int) throws {
    // 128 codes of 16: the screened search (level 3) forms the commitment's row sums.
    var c = VectorQuantizerConfiguration(dim: 24, codebookSize: codebookSize)
    (c.heads, c.separateCodebookPerHead, c.useCosineSimilarity, c.codebookDim) = (4, true, true, 16)
    let fast = try VectorQuantizer(c), graph = try VectorQuantizer(c)
    let initial = fast.codebook.embed.value
    fast.train()
    graph.train()
    for step in 0..<3 {
        let x = TestSupport.random([3, 20, 24], seed: UInt64(20 + step))
        let a = withoutGradient { fast(x) }, g = graph(x)
        #expect(a.indices == g.indices, "step \(step)")
        #expect(a.loss.item.bitPattern == g.loss.item.bitPattern, "step \(step)")
        #expect(TestSupport.isClose(a.quantized, g.quantized.detached(), atol: 1e-5, rtol: 1e-5), "step \(step)")
    }
    // The codebooks moved identically (EMA; both paths normalise rows in the same order), and they did move.
    #expect(fast.codebook.embed.value.scalars.map(\.bitPattern) == graph.codebook.embed.value.scalars.map(\.bitPattern))
    #expect(TestSupport.maxAbsDiff(fast.codebook.embed.value, initial) > 1e-3)
}
