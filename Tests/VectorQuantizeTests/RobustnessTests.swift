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

    @Test("a fully masked or empty batch leaves the state untouched")
    func emptyBatches() throws {
        let vq = try quantizer { $0.thresholdEMADeadCode = 2 }
        let state = vq.stateDict()
        var o = VectorQuantizerOptions()
        o.mask = Array(repeating: false, count: 20)
        let out = vq(TestSupport.random([2, 10, 4], seed: 2), options: o)
        #expect(vq.stateDict() == state)
        #expect(out.indices.scalars.allSatisfy { $0 == -1 })
        #expect(out.quantized == Tensor.zeros([2, 10, 4]))
        #expect(out.loss.item == 0)
        let empty = vq(Tensor.zeros([0, 5, 4]))
        #expect(empty.indices.shape == [0, 5])
        #expect(vq.stateDict() == state)
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
        o.mask = Array(repeating: false, count: 6)
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
