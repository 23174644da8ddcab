import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Empty batches on every quantizer of the registry, and variants with heads, projections, image maps, masks and a
/// freeze policy: `[0, n, dim]` (no sequence), `[b, 0, dim]` (empty sequences) and `[0, dim]` encode to indices
/// of the shape a batch of one gives with that axis 0, decode back to `[…, dim]`, and a training forward returns
/// the output's shape, a loss of exactly 0 (no token: no loss — the reference's means over nothing are NaN) whose
/// backward runs, and writes nothing (the whole state bit-identical: no EMA decay, no expiry, no policy step).
@Suite("Empty batches")
struct EmptyBatchTests {
    static var configurations: [ModuleConfig] { QuantizerRegistry.kinds.map { ModuleConfig(module: $0.name, kwargs: $0.example) } + [
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "heads": 2, "separate_codebook_per_head": true,
                                                        "use_cosine_sim": true, "codebook_dim": 4, "threshold_ema_dead_code": 2]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "learnable_codebook": true, "ema_update": false]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "affine_param": true, "kmeans_init": true]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "accept_image_fmap": true]),
        ModuleConfig(module: "ResidualVQ", kwargs: ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "quantize_dropout": true]),
        ModuleConfig(module: "FSQ", kwargs: ["levels": [8, 5, 5], "dim": 8, "num_codebooks": 2, "channel_first": true]),
        ModuleConfig(module: "LFQ", kwargs: ["dim": 8, "codebook_size": 64, "num_codebooks": 2, "entropy_loss_weight": 0.1]),
        ModuleConfig(module: "LFQ", kwargs: ["dim": 8, "codebook_size": 64, "channel_first": true]),
        // Every auxiliary loss and update rule of VectorQuantize that reads the batch.
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "codebook_diversity_loss_weight": 0.1,
                                                        "stochastic_sample_codes": true]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "orthogonal_reg_weight": 0.1,
                                                        "orthogonal_reg_active_codes_only": true]),
        // (the orthogonal regulariser of every code is the codebook's own term: an empty batch keeps it, finite)
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "orthogonal_reg_weight": 0.1]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "learnable_codebook": true, "ema_update": false,
                                                        "commitment_use_cross_entropy_loss": true]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "learnable_codebook": true, "ema_update": false,
                                                        "in_place_codebook_optimizer": "partial(torch.optim.Adam, lr=0.01)"]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "directional_reparam": true, "sync_update_v": 0.5,
                                                        "threshold_ema_dead_code": 2]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "rotation_trick": false, "straight_through": true]),
        ModuleConfig(module: "ResidualVQ", kwargs: ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "implicit_neural_codebook": true]),
        ModuleConfig(module: "ResidualVQ", kwargs: ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "diveq": true]),
        ModuleConfig(module: "SimVQ", kwargs: ["dim": 8, "codebook_size": 16, "rotation_trick": false]),
        ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "accept_3d_fmap": true]),
        ModuleConfig(module: "ResidualVQ", kwargs: ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "beam_size": 2]),
        ModuleConfig(module: "ResidualVQ", kwargs: ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "accept_image_fmap": true]),
        ModuleConfig(module: "GroupedResidualVQ", kwargs: ["dim": 8, "groups": 2, "num_quantizers": 2, "codebook_size": 16, "accept_image_fmap": true]),
        ModuleConfig(module: "ResidualFSQ", kwargs: ["dim": 8, "levels": [8, 5, 5], "num_quantizers": 2, "is_channel_first": true]),
        ModuleConfig(module: "GroupedResidualFSQ", kwargs: ["dim": 8, "levels": [8, 5, 5], "groups": 2, "num_quantizers": 2, "accept_image_fmap": true]),
    ] }

    /// `shape` with `axis` set to 0.
    static func emptied(_ shape: [Int], axis: Int) -> [Int] {
        var s = shape
        s[axis] = 0
        return s
    }

    @Test("an empty batch encodes, decodes and trains to the right shapes, a loss of 0, and writes nothing", arguments: configurations.indices)
    func emptyBatch(_ i: Int) throws {
        let config = Self.configurations[i]
        let q = try #require(try config.build() as? any Quantizer)
        let unit = q.sequenceShape ?? [5]
        let positions = unit.reduce(1, *)
        // A first batch initialises what initialises lazily (k-means, affine statistics); a policy is then set.
        q.train()
        _ = q.forward(vectors: TestSupport.random([2, positions, q.inputDim], seed: 1))
        for book in q.learnedCodebooks where book.configuration.emaUpdate && book.embed.kind != .trainable {
            try book.setFreezePolicy(.afterStep(1))
        }
        let before = q.stateDict()
        // Encode and decode: [0, n, dim], [b, 0, dim] (not for fixed-length sequences) and [0, dim].
        var cases: [(input: [Int], oneBatch: [Int], axis: Int)] = [([0] + unit + [q.inputDim], [1] + unit + [q.inputDim], 0)]
        if q.sequenceShape == nil {
            cases.append(([2, 0, q.inputDim], [2, 1, q.inputDim], 1))
            cases.append(([0, q.inputDim], [1, q.inputDim], 0))
        }
        q.eval()
        for (input, oneBatch, axis) in cases {
            let reference = q.encode(TestSupport.random(oneBatch, seed: 2)).shape
            let indices = q.encode(Tensor.zeros(input))
            // The batch (or sequence) axis of the indices is the input's, after any leading group axis.
            #expect(indices.shape == Self.emptied(reference, axis: axis + q.indexBatchAxis), "\(config.module) \(input)")
            guard !(q is RandomProjectionQuantizer) else { continue }  // a random projection has no way back
            let decoded = try q.decode(indices)
            #expect(decoded.count == 0 && decoded.shape.last == q.decodedDim, "\(config.module) \(input) → \(decoded.shape)")
        }
        // A training forward on [0, n, dim] and [b, 0, dim]: the output's shape, loss 0, nothing written.
        q.train()
        for shape in [[0, positions, q.inputDim]] + (q.sequenceShape == nil ? [[2, 0, q.inputDim]] : []) {
            let out = q.forward(vectors: Tensor.zeros(shape))
            #expect(out.quantized.shape == Array(shape.dropLast()) + [q.decodedDim], "\(config.module) \(shape)")
            let codebookTerm = config.kwargs["orthogonal_reg_weight"] != nil && config.kwargs["orthogonal_reg_active_codes_only"] == nil
            #expect(out.loss.scalars.allSatisfy { codebookTerm ? $0.isFinite : $0 == 0 }, "\(config.module) \(shape): loss \(out.loss.scalars)")
            if out.loss.requiresGradient { (out.loss.sum() + out.quantized.sum() * 0).backward() }
        }
        Self.expectNothingWritten(before, q.stateDict(), config.module)
    }

    /// Every tensor of `after` bit-identical to `before`'s.
    static func expectNothingWritten(_ before: [String: Tensor], _ after: [String: Tensor], _ label: String) {
        #expect(after.keys.sorted() == before.keys.sorted(), "\(label)")
        for (key, value) in before { #expect(after[key]?.scalars.map(\.bitPattern) == value.scalars.map(\.bitPattern), "\(label): \(key) changed") }
    }

    @Test("a loss over no element is 0: mse, the row-wise commitment and the moment-matching loss")
    func lossOfNothing() {
        let none = Tensor.zeros([0, 4])
        #expect(Loss.mse(none, none).item == 0)
        #expect(none.meanSquaredDifference(none).item == 0)
        #expect(none.meanSquaredRowDifference(none).item == 0)
        #expect(VectorNorm(.varTanh)(none).loss.item == 0)
        // and over some, the mean it always was (so the tests above cannot pass with a loss that is always 0).
        let a = Tensor([1, 2, 3, 4], shape: [1, 4]), b = Tensor.zeros([1, 4])
        #expect(Loss.mse(a, b).item == 7.5)
        #expect(a.meanSquaredRowDifference(b).item == 7.5)
    }
}

/// Empty batches with the forward's options: masks and lengths of no token, top-k, targets, sampling, beam search,
/// dropout, image maps with no image or no pixel — the same contract as without options.
@Suite("Empty batches with options")
struct EmptyBatchOptionTests {
    @Test("VectorQuantize: mask, lens, top-k, target indices, sampling, image maps")
    func vectorQuantizer() throws {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.thresholdEMADeadCode = 2
        let vq = try VectorQuantizer(c)
        vq.train()
        _ = vq(TestSupport.random([2, 5, 8], seed: 1))
        let before = vq.stateDict()
        let empty = Tensor.zeros([0, 5, 8])
        var options: [(String, VectorQuantizerOptions)] = []
        var o = VectorQuantizerOptions(); o.mask = TokenMask([Bool](), shape: [0, 5]); options.append(("mask", o))
        o = VectorQuantizerOptions(); o.lens = []; options.append(("lens", o))
        o = VectorQuantizerOptions(); o.topK = 2; options.append(("topK", o))
        o = VectorQuantizerOptions(); o.sampleCodebookTemperature = 1; options.append(("sampling", o))
        o = VectorQuantizerOptions(); o.emaUpdateWeight = .scalar(0.5); options.append(("weight", o))
        for (label, opts) in options {
            let out = vq(empty, options: opts)
            #expect(out.quantized.count == 0 && out.indices.count == 0 && out.loss.scalars.allSatisfy { $0 == 0 }, "\(label)")
        }
        EmptyBatchTests.expectNothingWritten(before, vq.stateDict(), "VectorQuantize with options")

        var m = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        m.acceptImageFmap = true
        let maps = try VectorQuantizer(m)
        maps.train()
        let mapsBefore = maps.stateDict()
        for shape in [[0, 8, 4, 4], [2, 8, 0, 4]] {
            let out = maps(Tensor.zeros(shape))
            #expect(out.quantized.shape == shape && out.indices.count == 0 && out.loss.scalars.allSatisfy { $0 == 0 }, "maps \(shape)")
        }
        EmptyBatchTests.expectNothingWritten(mapsBefore, maps.stateDict(), "image maps")
    }

    @Test("ResidualVQ: beam search, quantize dropout, image maps; LFQ with a mask")
    func stacks() throws {
        for kwargs: [String: Any] in [["dim": 8, "num_quantizers": 3, "codebook_size": 16, "beam_size": 2],
                                      ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "quantize_dropout": true],
                                      ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "accept_image_fmap": true]] {
            let rvq = try ResidualVQ(referenceKwargs: kwargs)
            rvq.train()
            let before = rvq.stateDict()
            let image = kwargs["accept_image_fmap"] != nil
            for shape in image ? [[0, 8, 4, 4], [2, 8, 0, 4]] : [[0, 5, 8], [2, 0, 8]] {
                let out = rvq(Tensor.zeros(shape))
                #expect(out.quantized.shape == shape && out.indices.count == 0 && out.losses.scalars.allSatisfy { $0 == 0 }, "\(kwargs) \(shape)")
            }
            EmptyBatchTests.expectNothingWritten(before, rvq.stateDict(), "\(kwargs)")
        }
        // Image maps with per-layer target indices [b, h, w, q] (the summed cross-entropy), for no image.
        let maps = try ResidualVQ(referenceKwargs: ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "accept_image_fmap": true])
        var targets = ResidualVQOptions()
        targets.targetIndices = IndexTensor([], shape: [0, 4, 4, 2])
        let none = maps(Tensor.zeros([0, 8, 4, 4]), options: targets)
        #expect(none.quantized.shape == [0, 8, 4, 4] && none.indices.count == 0)
        let lfq = try LFQ(referenceKwargs: ["dim": 8, "codebook_size": 64, "entropy_loss_weight": 0.1])
        lfq.train()
        let out = lfq(Tensor.zeros([0, 5, 8]), mask: TokenMask([Bool](), shape: [0, 5]))
        #expect(out.quantized.shape == [0, 5, 8] && out.auxLoss.scalars.allSatisfy { $0 == 0 })
    }
}

/// A batch whose every token is masked (or of length 0) carries no more than an empty one: indices -1, loss 0, nothing
/// written — for every quantizer that takes a mask.
@Suite("Fully masked batches")
struct FullyMaskedBatchTests {
    @Test("VectorQuantize (mask and lens, one head or two), ResidualVQ (and beam search), LFQ, HierarchicalVQ")
    func fullyMasked() throws {
        let x = TestSupport.random([2, 20, 8], seed: 4)
        let none = TokenMask(Array(repeating: false, count: 40), shape: [2, 20])
        for kwargs: [String: Any] in [["dim": 8, "codebook_size": 16, "threshold_ema_dead_code": 2],
                                      // (the diversity and orthogonal losses read every token's code, masked or not, as the
                                      // reference's do: they are not 0 here)
                                      ["dim": 8, "codebook_size": 16, "heads": 2, "separate_codebook_per_head": true, "use_cosine_sim": true]] {
            let vq = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: kwargs))
            vq.train()
            _ = vq(x)
            let before = vq.stateDict()
            var byMask = VectorQuantizerOptions(), byLens = VectorQuantizerOptions()
            byMask.mask = none
            byLens.lens = [0, 0]
            for o in [byMask, byLens] {
                let out = vq(x, options: o)
                #expect(out.indices.scalars.allSatisfy { $0 == -1 } && out.loss.item == 0, "\(kwargs): loss \(out.loss.item)")
            }
            #expect(vq.stateDict() == before, "\(kwargs)")
        }
        for kwargs: [String: Any] in [["dim": 8, "num_quantizers": 3, "codebook_size": 16],
                                      ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "beam_size": 2]] {
            let rvq = try ResidualVQ(referenceKwargs: kwargs)
            rvq.train()
            _ = rvq(x)
            let before = rvq.stateDict()
            var o = ResidualVQOptions()
            o.mask = none
            let out = rvq(x, options: o)
            // (beam search returns the indices of masked tokens too, as the reference's does)
            #expect(out.losses.scalars.allSatisfy { $0 == 0 } && (kwargs["beam_size"] != nil || out.indices.scalars.allSatisfy { $0 == -1 }),
                    "\(kwargs): \(out.losses.scalars)")
            #expect(rvq.stateDict() == before, "\(kwargs)")
        }
        let lfq = try LFQ(referenceKwargs: ["dim": 8, "codebook_size": 64, "entropy_loss_weight": 0.1, "commitment_loss_weight": 0.25])
        lfq.train()
        let l = lfq(x, mask: none)
        #expect(l.auxLoss.item == 0, "LFQ: \(l.auxLoss.item)")
        let hvq = try HierarchicalVQ(referenceKwargs: ["dim": 8, "codebook_size": 16, "scales": [1, 4, 20], "kmeans_init": false])
        hvq.train()
        let map = x.transposed(1, 2)   // [b, dim, L]
        _ = hvq(map)
        let before = hvq.stateDict()
        let h = hvq(map, lens: [0, 0])
        #expect(h.loss.scalars.allSatisfy { $0 == 0 }, "HierarchicalVQ: \(h.loss.scalars)")
        #expect(hvq.stateDict() == before)
    }
}
