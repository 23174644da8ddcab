import Testing
import VQTensor
import VQTestSupport

@Suite("Tensor values: creation, arithmetic, broadcasting, reductions, shapes, indexing")
struct OpsTests {
    @Test("creation helpers")
    func creation() {
        #expect(Tensor.arange(0, 5).scalars == [0, 1, 2, 3, 4])
        #expect(Tensor.arange(1, 2, step: 0.25).scalars == [1, 1.25, 1.5, 1.75])
        #expect(Tensor.zeros([2, 3]).shape == [2, 3])
        #expect(Tensor.full([2], 7).scalars == [7, 7])
        #expect(Tensor(rows: [[1, 2], [3, 4]])[1, 0] == 3)
        #expect(Tensor(5).shape == [])
    }

    @Test("seeded generator is reproducible and documented-stream stable")
    func random() {
        var g1 = SeededGenerator(seed: 7), g2 = SeededGenerator(seed: 7), g3 = SeededGenerator(seed: 8)
        let a = Tensor.randomNormal([1000], using: &g1), b = Tensor.randomNormal([1000], using: &g2)
        #expect(a == b)
        #expect(a != Tensor.randomNormal([1000], using: &g3))
        let mean = a.mean().item, variance = (a - mean).squared().mean().item
        #expect(abs(mean) < 0.1 && abs(variance - 1) < 0.15)
        var g4 = SeededGenerator(seed: 1)
        let u = Tensor.randomUniform([1000], low: -2, high: 3, using: &g4)
        #expect(u.min().item >= -2 && u.max().item < 3)
        var g5 = SeededGenerator(seed: 3)
        #expect(g5.permutation(10).sorted() == Array(0..<10))
    }

    @Test("broadcasting: trailing axes, leading ones, scalars, and both sides expanding")
    func broadcasting() {
        let a = Tensor([1, 2, 3], shape: [3, 1]), b = Tensor([10, 20], shape: [1, 2])
        #expect((a + b).shape == [3, 2])
        #expect((a + b).scalars == [11, 21, 12, 22, 13, 23])
        let m = Tensor.arange(0, 6).reshaped([2, 3])
        #expect((m * Tensor([1, 0, -1])).scalars == [0, 0, -2, 3, 0, -5])
        #expect((m - 1).scalars == [-1, 0, 1, 2, 3, 4])
        #expect((2 / Tensor([1, 4])).scalars == [2, 0.5])
        #expect((Tensor.ones([2, 1, 3]) + Tensor.ones([4, 1])).shape == [2, 4, 3])
        #expect((Tensor(3) * Tensor(4)).shape == [])
        #expect((Tensor.zeros([0, 3]) + Tensor([1, 2, 3])).shape == [0, 3])
    }

    @Test("comparisons and select")
    func comparisons() {
        let x = Tensor([-1, 0, 2])
        #expect((x .> 0).scalars == [0, 0, 1])
        #expect((x .<= 0).scalars == [1, 1, 0])
        #expect((x .== Tensor([-1, 1, 2])).scalars == [1, 0, 1])
        #expect(Tensor.select(x .> 0, x, Tensor(9)).scalars == [9, 9, 2])
        #expect(Tensor([1, .nan, .infinity]).isFiniteMask.scalars == [1, 0, 0])
    }

    @Test("unary math values")
    func unaryValues() {
        let x = Tensor([-2, -0.5, 0, 0.5, 2])
        #expect(x.relu().scalars == [0, 0, 0, 0.5, 2])
        #expect(x.abs().scalars == [2, 0.5, 0, 0.5, 2])
        #expect(x.sign().scalars == [-1, -1, 0, 1, 1])
        #expect(Tensor([0.5, 1.5, 2.5, -0.5]).rounded().scalars == [0, 2, 2, -0])
        #expect(x.clamped(min: -1, max: 1).scalars == [-1, -0.5, 0, 0.5, 1])
        #expect(TestSupport.isClose(x.sigmoid(), Tensor([0.11920292, 0.37754067, 0.5, 0.62245933, 0.88079708])))
        // GELU(1) = Φ(1) = 0.8413447; SiLU(1) = σ(1) = 0.7310586
        #expect(abs(Tensor([1]).gelu().item - 0.8413447) < 1e-6)
        #expect(abs(Tensor([1]).silu().item - 0.7310586) < 1e-6)
        #expect(TestSupport.isClose(Tensor([1, 4]).sqrt(), Tensor([1, 2])))
        #expect(TestSupport.isClose(Tensor([0, 1]).exp().log(), Tensor([0, 1])))
    }

    @Test("reductions with and without keepDims")
    func reductions() {
        let m = Tensor.arange(0, 24).reshaped([2, 3, 4])
        #expect(m.sum().item == 276)
        #expect(m.sum(axis: 1).shape == [2, 4])
        #expect(m.sum(axis: 1).scalars == [12, 15, 18, 21, 48, 51, 54, 57])
        #expect(m.sum(axes: [0, 2], keepDims: true).shape == [1, 3, 1])
        #expect(m.sum(axes: [0, 2]).scalars == [60, 92, 124])
        #expect(m.mean(axis: -1).scalars == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5])
        #expect(m.max(axis: 2).scalars == [3, 7, 11, 15, 19, 23])
        #expect(m.min(axis: 0, keepDims: true).shape == [1, 3, 4])
        #expect(m.max().item == 23)
        let t = Tensor(rows: [[1, 5, 5], [7, 2, 7]])
        #expect(t.argmax(axis: 1).scalars == [1, 0])  // first on ties
        #expect(t.argmin(axis: 0).scalars == [0, 1, 0])
        #expect(Tensor([1, .nan, 3]).max().item.isNaN)
    }

    @Test("softmax, log-softmax and log-sum-exp are stable and consistent")
    func softmax() {
        let x = Tensor(rows: [[1000, 1001, 1002], [-5, 0, 5]])
        let s = x.softmax(axis: 1)
        #expect(TestSupport.isClose(s.sum(axis: 1), Tensor([1, 1])))
        #expect(TestSupport.isClose(s.slice(axis: 0, 0..<1).reshaped([3]), Tensor([0.09003057, 0.24472847, 0.66524096])))
        #expect(TestSupport.isClose(x.logSoftmax(axis: 1).exp(), s))
        #expect(TestSupport.isClose(x.logSumExp(axis: 1), Tensor([1002.40761, 5.00676])))
        #expect(Tensor([-Float.infinity, -.infinity]).logSumExp(axis: 0).item == -.infinity)
    }

    @Test("shape ops")
    func shapes() {
        let m = Tensor.arange(0, 6).reshaped([2, 3])
        #expect(m.transposed().scalars == [0, 3, 1, 4, 2, 5])
        #expect(m.reshaped([-1]).shape == [6])
        #expect(m.reshaped(3, -1).shape == [3, 2])
        #expect(m.unsqueezed(axis: 0).shape == [1, 2, 3])
        #expect(m.unsqueezed(axis: -1).shape == [2, 3, 1])
        #expect(Tensor.zeros([1, 2, 1]).squeezed().shape == [2])
        #expect(m.expanded(to: [2, 2, 3]).scalars == m.scalars + m.scalars)
        #expect(Tensor.concat([m, m * 10], axis: 1).scalars == [0, 1, 2, 0, 10, 20, 3, 4, 5, 30, 40, 50])
        #expect(Tensor.stack([m, m], axis: 0).shape == [2, 2, 3])
        #expect(m.slice(axis: 1, 1..<3).scalars == [1, 2, 4, 5])
        #expect(m.split(sizes: [1, 2], axis: 1).map(\.shape) == [[2, 1], [2, 2]])
        #expect(m.split(parts: 2, axis: 0)[1].scalars == [3, 4, 5])
        let p = Tensor.arange(0, 24).reshaped([2, 3, 4]).permuted(2, 0, 1)
        #expect(p.shape == [4, 2, 3])
        #expect(p[1, 1, 2] == Tensor.arange(0, 24).reshaped([2, 3, 4])[1, 2, 1])
        #expect(m.flattened().shape == [6])
    }

    @Test("gather, index-select, scatter-add, index-add, one-hot")
    func indexing() {
        let m = Tensor(rows: [[1, 2, 3], [4, 5, 6]])
        #expect(m.gather(axis: 1, index: IndexTensor([2, 0, 1, 1], shape: [2, 2])).scalars == [3, 1, 5, 5])
        #expect(m.indexSelect(axis: 0, IndexTensor([1, 1, 0])).scalars == [4, 5, 6, 4, 5, 6, 1, 2, 3])
        #expect(m.indexSelect(axis: 0, IndexTensor([1, 0, 1, 1], shape: [2, 2])).shape == [2, 2, 3])
        #expect(m.indexSelect(axis: 1, IndexTensor([2])).scalars == [3, 6])
        let s = Tensor.zeros([3]).scatterAdd(axis: 0, index: IndexTensor([0, 2, 0]), source: Tensor([1, 2, 3]))
        #expect(s.scalars == [4, 0, 2])
        let ia = Tensor.zeros([3, 2]).indexAdd(axis: 0, IndexTensor([2, 2, 0]), Tensor(rows: [[1, 1], [2, 2], [3, 3]]))
        #expect(ia.scalars == [3, 3, 0, 0, 3, 3])
        #expect(Tensor.oneHot(IndexTensor([1, -1, 0]), classes: 2).scalars == [0, 1, 0, 0, 1, 0])
    }

    @Test("l2 normalisation and pairwise distances")
    func linalg() {
        let x = Tensor(rows: [[3, 4], [0, 0]])
        #expect(TestSupport.isClose(x.l2Normalized(), Tensor(rows: [[0.6, 0.8], [0, 0]])))
        let d = Tensor(rows: [[0, 0], [1, 1]]).pairwiseSquaredDistance(Tensor(rows: [[1, 0], [2, 2], [0, 0]]))
        #expect(TestSupport.isClose(d, Tensor(rows: [[1, 8, 0], [1, 2, 2]])))
    }

    @Test("copy-on-write: a copy does not see later writes")
    func copyOnWrite() {
        var a = Tensor([1, 2, 3])
        let b = a
        a.withUnsafeMutableScalars { $0[0] = 9 }
        #expect(b.scalars == [1, 2, 3])
        #expect(a.scalars == [9, 2, 3])
    }

    @Test("torch lerp is bit-exact on both branches")
    func lerp() {
        // w < 0.5: fma(w, b − a, a); w ≥ 0.5: fma(w − 1, b − a, b)
        #expect(torchLerp(1, 3, 0.25) == 1.5)
        #expect(torchLerp(1, 3, 0.75) == 2.5)
        let a: Float = 0.1, b: Float = 0.7, w: Float = 0.2
        #expect(torchLerp(a, b, w) == a.addingProduct(w, b - a))  // one rounding
        #expect(torchLerp(a, b, 1 - w) == b.addingProduct(-w, b - a))
    }
}

@Suite("Vectorised math kernels")
struct MathKernelTests {
    @Test("tanh is within 3 ULP of the exact value, and position-independent (vector lanes = scalar tail)")
    func tanh() {
        var xs: [Float] = (0..<20_000).map { Float($0 - 10_000) / 1000 }  // [-10, 10)
        xs += [0, -0, 1e-30, -1e-30, 0.625, -0.625, 0.62499994, 9, 9.000001, 88, -88, .infinity, -.infinity]
        let t = Tensor(xs)
        let y = t.tanh()
        for (x, v) in zip(xs, y.scalars) {
            let exact = Float(Foundation_tanh(Double(x)))
            let ulp = max(exact.ulp, Float.leastNormalMagnitude)
            #expect(abs(v - exact) <= 3 * ulp, "tanh(\(x)) = \(v), exact \(exact)")
        }
        // Each element alone goes through the scalar path: the same bits.
        for i in stride(from: 0, to: xs.count, by: 97) {
            #expect(Tensor([xs[i]]).tanh().scalars[0].bitPattern == y.scalars[i].bitPattern)
        }
        #expect(Tensor([.nan]).tanh().scalars[0].isNaN)
        // In place (FSQ's bound): the same bits, including blocks that baseline x86-64 redoes with fmaf from their
        // inputs (0x1.62ac96p+1 is one: a step's double lands on a float midpoint).
        var inPlace = xs + [0x1.62ac96p+1, -0x1.62ac96p+1]
        let expected = Tensor(inPlace).tanh().scalars
        inPlace.withUnsafeMutableBufferPointer { tanhInPlace($0.baseAddress!, count: $0.count) }
        #expect(inPlace.map(\.bitPattern) == expected.map(\.bitPattern))
        #expect(expected.last!.bitPattern == Tensor([-0x1.62ac96p+1]).tanh().scalars[0].bitPattern)
    }

    /// GELU's Φ comes from Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7 in erf, so ≤ 7.5e-8 in Φ); with
    /// single-precision rounding the bound used here is 3e-7 · max(1, |x|) for the value and 4e-7 · max(1, x²)
    /// for the derivative Φ(x) + x·φ(x), against double precision.
    @Test("GELU and its derivative are within the error function's bound, with the limits at ±∞, position-independent, NaN stays NaN")
    func gelu() {
        var xs: [Float] = (0..<20_000).map { Float($0 - 10_000) / 1000 }  // [-10, 10)
        xs += [0, -0, 1e-30, -1e-30, 40, -40, .infinity, -.infinity]
        let x = Tensor(xs).requiringGradient()
        let y = x.gelu()
        y.sum().backward()
        let dy = x.grad!.scalars
        for (i, v) in xs.enumerated() {
            let d = Double(v)
            let phi = 0.5 * Foundation.erfc(-d / 2.0.squareRoot())
            let exactValue = d.isInfinite ? max(d, 0) : d * phi
            let exactGradient = d.isInfinite ? (d > 0 ? 1 : 0) : phi + d * Foundation.exp(-0.5 * d * d) / (2 * Double.pi).squareRoot()
            #expect(abs(Double(y.scalars[i]) - exactValue) <= 3e-7 * max(1, abs(d)) || y.scalars[i] == Float(exactValue), "gelu(\(v)) = \(y.scalars[i]), exact \(exactValue)")
            #expect(abs(Double(dy[i]) - exactGradient) <= 4e-7 * max(1, d * d), "gelu′(\(v)) = \(dy[i]), exact \(exactGradient)")
        }
        for i in stride(from: 0, to: xs.count, by: 97) {
            #expect(Tensor([xs[i]]).gelu().scalars[0].bitPattern == y.scalars[i].bitPattern)
        }
        #expect(Tensor([.nan]).gelu().scalars[0].isNaN)
    }
}

import Foundation
func Foundation_tanh(_ x: Double) -> Double { Foundation.tanh(x) }

/// Permutations take three paths (extent-1 moves as a reshape, batched blocked transposes, the strided walk):
/// each must equal the definition `out[i₀, …] = x[i_{p⁻¹(0)}, …]`, element by element.
@Suite("Permutation copies")
struct PermutationTests {
    static func definition(_ x: Tensor, _ perm: [Int]) -> [Float] {
        let outShape = perm.map { x.shape[$0] }
        let inStrides = Shape.strides(x.shape)
        var out = [Float](repeating: 0, count: x.count)
        var index = [Int](repeating: 0, count: perm.count)
        for flat in 0..<x.count {
            var rest = flat
            for a in stride(from: perm.count - 1, through: 0, by: -1) { index[a] = rest % outShape[a]; rest /= outShape[a] }
            var source = 0
            for a in 0..<perm.count { source += index[a] * inStrides[perm[a]] }
            out[flat] = x.scalars[source]
        }
        return out
    }

    @Test("every path equals the definition", arguments: [
        ([2, 3, 4], [2, 0, 1]), ([5, 70, 33], [0, 2, 1]), ([70, 33], [1, 0]), ([2, 8, 5, 7], [0, 2, 3, 1]),
        ([3, 1, 40, 1, 37], [0, 4, 2, 1, 3]), ([1, 6, 1], [2, 0, 1]), ([4, 5, 6, 7], [3, 1, 2, 0]), ([2, 0, 3], [2, 1, 0]),
        ([2, 300, 129], [0, 2, 1]), ([3, 4, 5, 6], [1, 0, 3, 2]),
        // whole 16 × 16 tiles, and whole tiles with a remainder of rows or columns (the SSE and element paths)
        ([2, 64, 48], [0, 2, 1]), ([3, 1, 32, 16], [0, 3, 1, 2]), ([33, 80], [1, 0]), ([64, 17], [1, 0]),
    ])
    func paths(case c: ([Int], [Int])) {
        let (shape, perm) = c
        let x = Tensor((0..<shape.reduce(1, *)).map { Float($0) }, shape: shape)
        let y = x.permuted(perm)
        #expect(y.shape == perm.map { shape[$0] })
        #expect(y.scalars == Self.definition(x, perm))
        #expect(Threads.with(1) { x.permuted(perm) }.scalars == y.scalars)
    }
}

/// Large operands of one shape, or with a scalar, run the four operations in C over the threads: each element
/// must be the one IEEE operation Swift computes, special values included, on any thread count.
@Suite("Arithmetic kernels")
struct ArithmeticKernelTests {
    @Test("+ − × ÷ equal Swift's element by element (NaN, ±∞, ±0, subnormals; scalar operands; 1 and 2 threads)")
    func fourOperations() {
        var x = TestSupport.random([300, 257], seed: 61).scalars, y = TestSupport.random([300, 257], seed: 62).scalars
        let specials: [Float] = [.nan, .infinity, -.infinity, 0, -0, .leastNonzeroMagnitude, 1e38, -Float.leastNormalMagnitude / 4]
        for (i, v) in specials.enumerated() { x[i * 97] = v; y[i * 89 + 3] = v; y[i * 97] = specials[(i + 3) % specials.count] }
        let a = Tensor(x, shape: [300, 257]), b = Tensor(y, shape: [300, 257]), s = Tensor(Float(-0.75))
        let ops: [(Tensor, Tensor) -> Tensor] = [{ $0 + $1 }, { $0 - $1 }, { $0 * $1 }, { $0 / $1 }]
        let swiftOps: [(Float, Float) -> Float] = [{ $0 + $1 }, { $0 - $1 }, { $0 * $1 }, { $0 / $1 }]
        for (op, f) in zip(ops, swiftOps) {
            for (l, r) in [(a, b), (a, s), (s, b)] {
                let expected = zip(l.count == 1 ? Array(repeating: l.scalars[0], count: r.count) : l.scalars,
                                   r.count == 1 ? Array(repeating: r.scalars[0], count: l.count) : r.scalars).map(f)
                for threads in [1, 2] {
                    let got = Threads.with(threads) { op(l, r) }
                    #expect(got.shape == [300, 257])
                    // The first differing element (a whole-array comparison's diff is quadratic to print).
                    let bad = got.scalars.indices.first { got.scalars[$0].bitPattern != expected[$0].bitPattern }
                    #expect(bad == nil, "element \(bad ?? -1): \(bad.map { got.scalars[$0] } ?? 0) vs \(bad.map { expected[$0] } ?? 0)")
                }
            }
        }
    }

    @Test("one row broadcast along the last axis (either side): each element Swift's operation on its column's value",
          arguments: [([300, 257], [257]), ([8192, 4], [1, 4]), ([3, 5, 7], [7]), ([70000, 3], [3]), ([2, 2], [1, 2])])
    func rowBroadcast(shapes: ([Int], [Int])) {
        let (fullShape, rowShape) = shapes
        var x = TestSupport.random(fullShape, seed: 63).scalars, y = TestSupport.random(rowShape, seed: 64).scalars
        let specials: [Float] = [.nan, .infinity, -.infinity, 0, -0, .leastNonzeroMagnitude]
        for (i, v) in specials.enumerated() where i < y.count { y[i] = v; x[(i * 31) % x.count] = specials[(i + 2) % specials.count] }
        let full = Tensor(x, shape: fullShape), row = Tensor(y, shape: rowShape), d = y.count
        let ops: [(Tensor, Tensor) -> Tensor] = [{ $0 + $1 }, { $0 - $1 }, { $0 * $1 }, { $0 / $1 }]
        let swiftOps: [(Float, Float) -> Float] = [{ $0 + $1 }, { $0 - $1 }, { $0 * $1 }, { $0 / $1 }]
        for (op, f) in zip(ops, swiftOps) {
            for fullFirst in [true, false] {
                let expected = x.indices.map { fullFirst ? f(x[$0], y[$0 % d]) : f(y[$0 % d], x[$0]) }
                for threads in [1, 2] {
                    let got = Threads.with(threads) { fullFirst ? op(full, row) : op(row, full) }
                    #expect(got.shape == fullShape)
                    let bad = got.scalars.indices.first { got.scalars[$0].bitPattern != expected[$0].bitPattern }
                    #expect(bad == nil, "element \(bad ?? -1) of \(fullShape) with \(rowShape), full first \(fullFirst)")
                }
            }
        }
    }
}
