import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// `encode`, `decode` and `forward(vectors:)` speak vectors `[b, n, dim]` whatever layout a quantizer's own
/// forward takes (image and video maps, channel-first sequences): a quantizer with a layout keyword gives
/// exactly what its vectors-last twin with the same weights gives.
@Suite("Quantizer layouts")
struct LayoutTests {
    nonisolated(unsafe) static let twins: [(String, [String: Any], [String: Any])] = [
        ("VectorQuantize", ["dim": 8, "codebook_size": 16], ["accept_image_fmap": true]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16], ["accept_3d_fmap": true]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "codebook_dim": 4], ["channel_last": false]),
        ("VectorQuantize", ["dim": 8, "codebook_size": 16, "heads": 2, "separate_codebook_per_head": true], ["accept_image_fmap": true]),
        ("ResidualVQ", ["dim": 8, "num_quantizers": 2, "codebook_size": 16], ["accept_image_fmap": true]),
        ("GroupedResidualVQ", ["dim": 8, "groups": 2, "num_quantizers": 2, "codebook_size": 16], ["accept_image_fmap": true]),
        ("FSQ", ["levels": [8, 5, 5], "dim": 8], ["channel_first": true]),
        ("LFQ", ["dim": 8, "codebook_size": 64], ["channel_first": true]),
        ("SimVQ", ["dim": 8, "codebook_size": 16], ["channel_first": true]),
        ("ResidualSimVQ", ["dim": 8, "codebook_size": 16, "num_quantizers": 2], ["channel_first": true]),
        ("ResidualFSQ", ["levels": [8, 5, 5], "num_quantizers": 2, "dim": 8], ["is_channel_first": true]),
        ("FSP", ["levels": [8, 5, 5], "dim": 8], ["channel_first": true]),
    ]

    @Test("a layout keyword changes nothing the vectors API returns", arguments: twins.indices)
    func twin(_ i: Int) throws {
        let (name, base, layout) = Self.twins[i]
        let plain = try ModuleConfig(module: name, kwargs: base).build() as! any Quantizer
        let laid = try ModuleConfig(module: name, kwargs: base.merging(layout) { $1 }).build() as! any Quantizer
        try laid.load(stateDict: plain.stateDict())
        #expect(laid.forwardLayout != .vectorsLast, "\(name) \(layout): the keyword should change the forward's layout")
        for shape in [[12, 8], [2, 12, 8]] {
            let x = TestSupport.random(shape, seed: 4)
            let indices = plain.encode(x)
            #expect(laid.encode(x) == indices, "\(name) \(layout) \(shape): indices")
            #expect(try laid.decode(indices).scalars == plain.decode(indices).scalars, "\(name) \(layout) \(shape): decoding")
            #expect(try laid.decode(indices).shape == shape, "\(name) \(layout) \(shape): decoded shape")
        }
        let x = TestSupport.random([2, 12, 8], seed: 5)
        let (a, b) = (plain.withMode(training: false) { plain.forward(vectors: x) }, laid.withMode(training: false) { laid.forward(vectors: x) })
        #expect(a.indices == b.indices && a.quantized.scalars == b.quantized.scalars && a.quantized.shape == b.quantized.shape,
                "\(name) \(layout): forward(vectors:)")
    }

    @Test("several heads sharing one codebook decode their indices to the forward's output (found by the long fuzz run)")
    func sharedCodebookHeads() throws {
        for kwargs in [["dim": 8, "codebook_size": 16, "heads": 9, "codebook_dim": 4], ["dim": 8, "codebook_size": 16, "heads": 2]] as [[String: Int]] {
            let q = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: kwargs))
            let x = TestSupport.random([10, 8], seed: 2)
            let y = try q.decode(q.encode(x))
            #expect(y.shape == [10, 8] && y.scalars == q.withMode(training: false) { q(x).quantized.scalars }, "\(kwargs)")
        }
    }

    @Test("a separate codebook for a single head decodes its indices")
    func singleSeparateHead() throws {
        let q = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: ["dim": 8, "codebook_size": 16, "heads": 1, "separate_codebook_per_head": true]))
        let x = TestSupport.random([10, 8], seed: 2)
        let y = try q.decode(q.encode(x))
        #expect(y.shape == [10, 8] && y.scalars == q.withMode(training: false) { q(x).quantized.scalars })
    }

    @Test("LatentQuantize: decoding the forward's indices gives the forward's output bit for bit (one projection path)",
          arguments: [0, 1, 2])
    func latentQuantizeRoundTrip(_ i: Int) throws {
        let kwargs: [String: Any] = [["levels": [5, 5, 8], "dim": 8], ["levels": [4, 4], "dim": 16, "num_codebooks": 2], ["levels": [5, 5, 8], "dim": 3]][i]
        let lq = try LatentQuantize(LatentQuantize.Configuration(referenceKwargs: kwargs))
        let x = TestSupport.random([2, lq.dim, 5, 3], seed: 11)
        let out = lq.withMode(training: false) { lq(x) }
        let decoded = lq.indicesToCodes(out.indices)
        #expect(decoded.shape == out.quantized.shape && decoded.scalars == out.quantized.scalars, "\(kwargs)")
    }
}
