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
        a.codebook.freeze(codes: [3])
        b.codebook.freeze(codes: [3])
        let x = TestSupport.random(shape, seed: 4)
        a.train()
        _ = a(x)
        b.eval()
        let indices = b(x).indices
        b.train()
        b.updateIndices(x, indices)
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
        vq.codebook.freeze(codes: [0, 1, 2, 3])
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
