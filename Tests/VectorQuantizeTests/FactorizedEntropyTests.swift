import Testing
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// LFQ's entropy terms computed factorised over the bits equal the reference's dense softmax over all
/// codes — values and gradients — for plain and spherical codes and several codebooks.
@Suite("LFQ entropy factorised over the bits")
struct FactorizedEntropyTests {
    /// The reference's arithmetic in double precision: softmax over every code, clamped entropies.
    func dense(_ rows: Tensor, scale: Float, tau: Float, spherical: Bool) -> (Tensor, Tensor) {
        let k = rows.shape[2]
        let bits = Tensor((0..<(1 << k)).flatMap { c in (0..<k).map { c & (1 << (k - 1 - $0)) != 0 ? Float(1) : 0 } }, shape: [1 << k, k])
        var codes = bits * scale * 2 - scale
        if spherical { codes = codes.l2Normalized(axis: -1) * scale }
        let prob = (rows.matmul(codes.transposed()) * (2 * tau)).softmax(axis: -1)
        return (LFQ.entropy(prob).mean(), LFQ.entropy(prob.mean(axis: 0)).mean())
    }

    @Test("values and gradients match the dense computation", arguments: [(6, 1, false), (8, 2, false), (7, 1, true)])
    func matchesDense(_ setup: (bits: Int, groups: Int, spherical: Bool)) {
        let (k, g) = (setup.bits, setup.groups)
        let tau: Float = 100, scale: Float = 1
        let x = TestSupport.random([40, g, k], seed: UInt64(k * 10 + g), std: 0.02)  // soft enough that every code matters
        let xd = x.requiringGradient(), xf = x.requiringGradient()
        let (ds, db) = dense(xd, scale: scale, tau: tau, spherical: setup.spherical)
        let slope = 4 * tau * (setup.spherical ? scale / Float(k).squareRoot() : scale)
        let (fs, fb) = FactorizedEntropy.losses(xf, slope: slope)
        #expect(abs(ds.item - fs.item) <= 1e-5 * max(1, abs(ds.item)), "per-sample \(ds.item) vs \(fs.item)")
        #expect(abs(db.item - fb.item) <= 1e-5 * max(1, abs(db.item)), "batch \(db.item) vs \(fb.item)")
        (ds - 0.7 * db).backward()
        (fs - 0.7 * fb).backward()
        let gd = xd.grad!, gf = xf.grad!
        let scaleOfGrad = gd.scalars.map(abs).max()!
        #expect(scaleOfGrad > 0)
        #expect(TestSupport.maxAbsDiff(gd, gf) <= 1e-4 * scaleOfGrad, "gradients differ by \(TestSupport.maxAbsDiff(gd, gf)) (largest \(scaleOfGrad))")
    }

    @Test("bit-identical on 1 and 2 threads")
    func threads() {
        let x = TestSupport.random([300, 1, 10], seed: 4, std: 0.05)
        let one = Threads.with(1) { () -> [Float] in
            let l = x.requiringGradient()
            let (s, b) = FactorizedEntropy.losses(l, slope: 400)
            (s + b).backward()
            return [s.item, b.item] + l.grad!.scalars
        }
        let two = Threads.with(2) { () -> [Float] in
            let l = x.requiringGradient()
            let (s, b) = FactorizedEntropy.losses(l, slope: 400)
            (s + b).backward()
            return [s.item, b.item] + l.grad!.scalars
        }
        #expect(one.map(\.bitPattern) == two.map(\.bitPattern))
    }

    @Test("LFQ with 65,536 codes trains through the factorised path")
    func largeCodebook() throws {
        var c = LFQ.Configuration()
        c.dim = 16
        c.codebookSize = 65536
        let lfq = try LFQ(c)
        let x = TestSupport.random([1, 300, 16], seed: 5).requiringGradient()
        let out = lfq(x)
        #expect(300 * 65536 > LFQ.denseEntropyLimit)
        #expect(out.losses.perSampleEntropy.item.isFinite && out.losses.batchEntropy.item > 0)
        (out.auxLoss + out.quantized.sum()).backward()
        #expect(x.grad!.scalars.allSatisfy { $0.isFinite })
    }
}
