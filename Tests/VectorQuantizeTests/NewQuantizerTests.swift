import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

@Suite("LatentQuantize, FSP, BinaryMapper, EvoLFQ, HierarchicalVQ")
struct NewQuantizerTests {
    @Test("HierarchicalVQ: frozen codes of a per-level codebook hold bit-identically through training, free codes move")
    func hierarchicalFreezing() throws {
        let hvq = try HierarchicalVQ(referenceKwargs: ["dim": 8, "codebook_size": 16, "scales": [2, 6, 12], "kmeans_init": false,
                                                       "shared_codebook": false, "share_quant_resi": 0])
        hvq.train()
        hvq.quantizer(level: 0).codebook.freezeAllCodes()
        try hvq.quantizer(level: 2).codebook.freeze(codes: 0..<8)
        let level0 = hvq.quantizer(level: 0).codes, level2 = hvq.quantizer(level: 2).codes
        let opt = Adam(parameters: hvq.trainableParameters(), learningRate: 0.01)
        for step in 0..<4 {
            hvq.zeroGradients()
            let x = TestSupport.random([3, 8, 12], seed: UInt64(step))
            let out = hvq(x)
            ((out.quantized - x).squared().mean() + out.loss).backward()
            opt.step()
        }
        #expect(hvq.quantizer(level: 0).codes.scalars.map(\.bitPattern) == level0.scalars.map(\.bitPattern))
        let now2 = hvq.quantizer(level: 2).codes
        #expect(now2.slice(axis: 0, 0..<8).scalars.map(\.bitPattern) == level2.slice(axis: 0, 0..<8).scalars.map(\.bitPattern))
        #expect(now2.slice(axis: 0, 8..<16).scalars != level2.slice(axis: 0, 8..<16).scalars, "the free codes did not move")
    }

    @Test("HierarchicalVQ: channel-last input and masks; masked positions come back as zeros and do not feed the pools")
    func hierarchicalMask() throws {
        let hvq = try HierarchicalVQ(referenceKwargs: ["dim": 4, "codebook_size": 8, "scales": [1, 5], "kmeans_init": false, "channel_first": false])
        hvq.eval()
        let x = TestSupport.random([2, 5, 4], seed: 1)
        let mask: TokenMask = [true, true, true, false, false, true, true, true, true, true]
        let out = hvq(x, mask: mask)
        #expect(out.quantized.shape == [2, 5, 4])
        #expect(out.quantized.slice(axis: 1, 3..<5).slice(axis: 0, 0..<1).scalars.allSatisfy { $0 == 0 })
        // Changing a masked position changes nothing.
        var changed = x.scalars
        for i in 12..<20 { changed[i] = 100 }
        #expect(hvq(Tensor(changed, shape: x.shape), mask: mask).quantized.scalars == out.quantized.scalars)
    }

    @Test("LatentQuantize: value tables learn with valuesReceiveGradients; a frozen table holds")
    func latentValues() throws {
        var c = LatentQuantize.Configuration(levels: [5, 5, 8], dim: 8)
        c.valuesReceiveGradients = true
        let lq = try LatentQuantize(c)
        lq.train()
        lq.freeze(keys: ["values_per_latent.1"])
        let before = lq.valuesPerLatent.map(\.value)
        let opt = SGD(parameters: lq.trainableParameters(), learningRate: 0.1)
        for step in 0..<3 {
            lq.zeroGradients()
            let x = TestSupport.random([2, 8, 10], seed: UInt64(step))
            let out = lq(x)
            (out.loss + (out.quantized - x).squared().mean()).backward()
            opt.step()
        }
        #expect(lq.valuesPerLatent[1].value.scalars.map(\.bitPattern) == before[1].scalars.map(\.bitPattern))
        #expect(lq.valuesPerLatent[0].value.scalars != before[0].scalars, "a free table did not move")
        // The reference's output: no gradient reaches the tables.
        let plain = try LatentQuantize(.init(levels: [5, 5, 8], dim: 8))
        plain.train()
        let out = plain(TestSupport.random([2, 8, 10], seed: 1).requiringGradient())
        (out.quantized.sum() + out.loss).backward()
        #expect(plain.valuesPerLatent.allSatisfy { $0.grad == nil || $0.grad!.scalars.allSatisfy { $0 == 0 } })
    }

    @Test("LatentQuantize refuses the reference's broken in-place optimizer and int levels without codebook_dim")
    func latentRefusals() {
        for kw: [String: Any] in [["levels": [5, 5], "dim": 4, "in_place_codebook_optimizer": "partial(torch.optim.SGD, lr=0.1)"], ["levels": 5, "dim": 4],
                                  ["levels": [1, 5], "dim": 4], ["levels": [], "dim": 4]] {
            #expect(throws: ConfigurationError.self, "\(kw)") { try LatentQuantize.Configuration(referenceKwargs: kw) }
        }
    }

    @Test("BinaryMapper: least-significant-first indices, deterministic eval, log-probability of the chosen bits")
    func binaryMapper() throws {
        let m = try BinaryMapper(.init(bits: 3))
        let logits = Tensor([5, -5, 5, -5, 5, 5], shape: [2, 3])
        let out = m(logits, deterministic: true)
        #expect(out.indices.scalars == [0b101, 0b110])
        #expect(out.oneHot.shape == [2, 8])
        let lp = m.logProbability(logits, indices: out.indices)
        #expect(lp.scalars.allSatisfy { $0 > -0.03 && $0 < 0 })
        #expect(throws: ConfigurationError.self) { try BinaryMapper.Configuration(referenceKwargs: ["bits": 30]) }
    }

    @Test("FSP: every CDF's inverse undoes it on the bin centres")
    func fspInverse() {
        for act in FSP.Activation.allCases {
            let p = Tensor([0.1, 0.3, 0.5, 0.7, 0.9])
            let z = Tensor(p.scalars.map { act.inverse($0) })
            #expect(TestSupport.isClose(act(z), p, atol: 2e-6, rtol: 2e-6), "\(act)")
        }
        #expect(ScalarMath.erfinv(0) == 0 && ScalarMath.erfinv(1) == .infinity && ScalarMath.erfinv(1.5).isNaN)
    }

    @Test("EvoLFQ: evolve reports the best individual of the scored population, and it improves")
    func evolve() throws {
        let evo = try EvoLFQ(referenceKwargs: ["encoder": "nn.Linear(8, 6)", "decoder": "nn.Linear(6, 8)", "dim": 6, "pop_size": 24, "mutation_rate": 0.1])
        let target = TestSupport.random([8], seed: 3)
        func fitness(_ decoded: Tensor, _ bits: Tensor) -> Tensor { -(decoded - target).squared().mean(axis: -1) }
        let start = evo.randomPopulation(shape: [6])
        let history = evo.evolve(population: start, generations: 8, fitness: fitness)
        #expect(history.count == 8)
        for h in history {
            // The reported fitness is the fitness of the reported individual.
            let f = fitness(evo.decodeBits(h.best.unsqueezed(axis: 0)), h.best).item
            #expect(f == h.bestFitness)
        }
        #expect(history.last!.bestFitness >= history.first!.bestFitness)
    }
}

@Suite("QuantizerSequential")
struct QuantizerSequentialTests {
    @Test("layers around one quantizer, with the reference's keys; gradients reach the layers; one quantizer only")
    func sequential() throws {
        var rng = SeededGenerator(seed: 0)
        let model = try QuantizerSequential(Linear(16, 4, rng: &rng), FSQ(.init(levels: [8, 5, 5, 5])), Linear(4, 16, rng: &rng))
        #expect(Set(model.stateDict().keys) == ["fns.0.weight", "fns.0.bias", "fns.2.weight", "fns.2.bias"])
        let x = TestSupport.random([2, 6, 16], seed: 1)
        let out = model(x)
        #expect(out.quantized.shape == [2, 6, 16] && out.indices.shape == [2, 6])
        out.quantized.sum().backward()
        #expect(model.trainableParameters().allSatisfy { $0.grad != nil })
        #expect(throws: ConfigurationError.self) { try QuantizerSequential(Linear(4, 4, rng: &rng)) }
        #expect(throws: ConfigurationError.self) { try QuantizerSequential(FSQ(.init(levels: [5, 5])), FSQ(.init(levels: [5, 5]))) }
    }
}

@Test("SimVQ init_fn: the initial frozen codebook passes through it; a wrong shape is refused")
func simVQInitFunction() throws {
    let plain = try SimVQ(.init(dim: 8, codebookSize: 16))
    let doubled = try SimVQ(.init(dim: 8, codebookSize: 16), initFunction: { $0 * 2 })
    #expect(doubled.frozenCodebook.value == plain.frozenCodebook.value * 2)
    #expect(throws: ConfigurationError.self) { try SimVQ(.init(dim: 8, codebookSize: 16), initFunction: { $0.slice(axis: 0, 0..<4) }) }
    #expect(throws: ConfigurationError.self) { try SimVQ(referenceKwargs: ["dim": 8, "codebook_size": 16, "init_fn": "torch.nn.init.uniform_"]) }
}

@Test("RandomProjectionQuantizer: per-head codes of codebook_dim by default; the reference layout on request and for PyTorch checkpoints")
func randomProjectionLayouts() throws {
    let compact = try RandomProjectionQuantizer(dim: 16, codebookSize: 32, codebookDim: 8, numCodebooks: 4)
    #expect(compact.vq.projectIn == nil && compact.vq.codebook.embed.shape == [4, 32, 8])
    let reference = try RandomProjectionQuantizer(referenceKwargs: ["dim": 16, "codebook_size": 32, "codebook_dim": 8, "num_codebooks": 4, "reference_layout": true])
    #expect(reference.stateDict()["vq.project_in.weight"]?.shape == [128, 32] && reference.vq.codebook.embed.shape == [4, 32, 32])
    // A checkpoint written in the reference's layout, with a configuration that does not say so, loads in it.
    let dir = try TestSupport.scratchDirectory("vq-rpq")
    defer { try? FileManager.default.removeItem(at: dir) }
    let url = dir.appendingPathComponent("rpq.safetensors")
    try reference.save(to: url)
    try ModuleConfig(module: "RandomProjectionQuantizer", kwargs: ["dim": 16, "codebook_size": 32, "codebook_dim": 8, "num_codebooks": 4])
        .write(to: ModuleConfig.sidecar(of: url))
    let (loaded, _) = try QuantizerCheckpoint.load(url)
    let x = TestSupport.random([2, 5, 16], seed: 1)
    #expect((loaded as! RandomProjectionQuantizer)(x).indices == reference(x).indices)
}

@Test("HierarchicalVQ on image and video maps: per-level shapes, decoding gives the forward's output, frozen codes hold")
func hierarchicalMaps() throws {
    for (kw, x) in [(["dim": 4, "codebook_size": 8, "scales": [1, 2, 4], "accept_image_fmap": true, "kmeans_init": false] as [String: Any],
                     TestSupport.random([2, 4, 4, 4], seed: 1)),
                    (["dim": 4, "codebook_size": 8, "scales": [[1, 1, 2], [2, 2, 3]], "accept_3d_fmap": true, "kmeans_init": false, "shared_codebook": false],
                     TestSupport.random([2, 4, 2, 2, 3], seed: 2))] {
        let hvq = try HierarchicalVQ(referenceKwargs: kw)
        let shapes = hvq.configuration.shapes
        hvq.eval()
        let out = hvq(x)
        #expect(out.quantized.shape == x.shape)
        #expect(out.indices.map { Array($0.shape.dropFirst()) } == shapes)
        #expect(TestSupport.isClose(hvq.getOutput(from: out.indices, fullShape: Array(x.shape.dropFirst(2))), out.quantized, atol: 1e-5, rtol: 1e-5))
        // Training with level 0's codes frozen: they hold bit-identically, the last level's move.
        hvq.train()
        hvq.quantizer(level: 0).codebook.freezeAllCodes()
        let held = hvq.quantizer(level: 0).codes
        let last = hvq.quantizer(level: shapes.count - 1)
        let before = last.codes
        for s in 0..<3 { _ = hvq(TestSupport.random(x.shape, seed: UInt64(10 + s))) }
        if last !== hvq.quantizer(level: 0) {
            #expect(last.codes != before, "the free level did not learn")
        }
        #expect(hvq.quantizer(level: 0).codes.scalars.map(\.bitPattern) == held.scalars.map(\.bitPattern))
    }
    #expect(throws: ConfigurationError.self) { try HierarchicalVQ(referenceKwargs: ["dim": 4, "codebook_size": 8, "scales": [[1, 2], [2]], "accept_image_fmap": true]) }
}

@Test("HierarchicalVQ lens equal the mask they describe; FSP takes the reference's eps")
func lensAndEps() throws {
    let hvq = try HierarchicalVQ(referenceKwargs: ["dim": 4, "codebook_size": 8, "scales": [1, 5], "kmeans_init": false])
    hvq.eval()
    let x = TestSupport.random([2, 4, 5], seed: 3)
    let byLens = hvq(x, lens: [3, 5]), byMask = hvq(x, mask: TokenMask([true, true, true, false, false] + Array(repeating: true, count: 5)))
    #expect(byLens.quantized == byMask.quantized)
    let fsp = try FSP(.init(levels: [8, 5], dim: 4))
    fsp.eval()
    let y = TestSupport.random([2, 6, 4], seed: 4)
    #expect(fsp(y, eps: 1e-3).indices.shape == [2, 6])
}
