import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// The rotation trick runs as one fused operation per row (value and transposed-map gradient). Here it is
/// checked against the formula written with the library's differentiable operations, which is how the
/// reference writes it: `(s − 2(s·w)w + 2(s·u)q) · ‖t‖/‖s‖` with `u`, `q`, `w` and the scale detached.
@Suite("Gradient estimators")
struct GradientEstimatorTests {
    static func composed(_ source: Tensor, _ target: Tensor) -> Tensor {
        let d = source.shape.last!
        let s = source.reshaped([-1, d]), t = target.reshaped([-1, d]).detached()
        let normS = s.detached().squared().sum(axis: -1, keepDims: true).sqrt()
        let normT = t.squared().sum(axis: -1, keepDims: true).sqrt()
        let u = s.detached() / normS.maximum(1e-6)
        let q = t / normT.maximum(1e-6)
        let w = (u + q).l2Normalized(axis: 1, eps: 1e-6)
        let rotated = s - 2 * ((s * w).sum(axis: -1, keepDims: true) * w) + 2 * ((s * u).sum(axis: -1, keepDims: true) * q)
        return (rotated * (normT / normS.maximum(1e-6))).reshaped(source.shape)
    }

    /// One row of the trick written out plainly, one rounding per operation in the kernel's order.
    static func plainRow(_ s: UnsafePointer<Float>, _ t: UnsafePointer<Float>, vector v: UnsafePointer<Float>, d: Int,
                         transposed: Bool) -> [Float] {
        let normS = max(dotProduct(s, s, count: d).squareRoot(), 1e-6)
        let normTRaw = dotProduct(t, t, count: d).squareRoot(), normT = max(normTRaw, 1e-6)
        let u = (0..<d).map { s[$0] / normS }, q = (0..<d).map { t[$0] / normT }
        var w = (0..<d).map { u[$0] + q[$0] }
        let normW = max(dotProduct(w, w, count: d).squareRoot(), 1e-6)
        w = w.map { $0 / normW }
        let vw = dotProduct(v, w, count: d), vu = dotProduct(v, transposed ? q : u, count: d)
        let other = transposed ? u : q, scale = normTRaw / normS
        return (0..<d).map { j in (v[j] - 2 * (vw * w[j]) + 2 * (vu * other[j])) * scale }
    }

    @Test("the fused rotation trick equals the composed formula in value and gradient; zero rows stay finite",
          arguments: [[3, 5, 8], [700, 32], [2, 1, 300]])
    func rotationTrick(_ shape: [Int]) {
        var s = TestSupport.random(shape, seed: 80)
        let t = TestSupport.random(shape, seed: 81)
        let d = shape.last!
        s.withUnsafeMutableScalars { p in for j in 0..<d { p[j] = 0 } }  // a zero source row (norms clamp)
        let weights = TestSupport.random(shape, seed: 82)
        var results: [([Float], [Float])] = []
        for fused in [true, false] {
            let leaf = s.requiringGradient()
            let y = fused ? GradientEstimator.rotate(leaf, to: t) : Self.composed(leaf, t)
            (y * weights).sum().backward()
            results.append((y.scalars, leaf.grad!.scalars))
        }
        for (name, (got, want)) in [("value", (results[0].0, results[1].0)), ("gradient", (results[0].1, results[1].1))] {
            let finite = got.allSatisfy { $0.isFinite }
            #expect(finite, "\(name)")
            let worst = zip(got, want).map { abs($0 - $1) / (1 + abs($1)) }.max()!
            // Both round differently (sums in another order, then cancellation between terms of size ~√d):
            // agreement to 1e-4 relative; a wrong term would be off by O(1).
            #expect(worst < 1e-4, "\(name): worst relative difference \(worst)")
        }
        // The value and the gradient are the plain row formula's bits (each operation rounded alone, dot products in
        // dotProduct's order), whatever the kernel level's vector width.
        let g = weights.scalars
        s.withUnsafeScalars { ps in
            t.withUnsafeScalars { pt in
                g.withUnsafeBufferPointer { pg in
                    for r in 0..<(results[0].0.count / d) {
                        let (sr, tr, gr) = (ps.baseAddress! + r * d, pt.baseAddress! + r * d, pg.baseAddress! + r * d)
                        let value = Self.plainRow(sr, tr, vector: sr, d: d, transposed: false)
                        let gradient = Self.plainRow(sr, tr, vector: gr, d: d, transposed: true)
                        #expect(value.map(\.bitPattern) == results[0].0[(r * d)..<(r * d + d)].map(\.bitPattern), "row \(r) value")
                        #expect(gradient.map(\.bitPattern) == results[0].1[(r * d)..<(r * d + d)].map(\.bitPattern), "row \(r) gradient")
                    }
                }
            }
        }
        // The value is the target (up to rounding) for non-zero rows: the trick changes gradients, not values.
        let rows = results[0].0.count / d
        for r in 1..<rows {
            for j in 0..<d { #expect(abs(results[0].0[r * d + j] - t.scalars[r * d + j]) < 1e-4 * (1 + abs(t.scalars[r * d + j]))) }
        }
    }
}
