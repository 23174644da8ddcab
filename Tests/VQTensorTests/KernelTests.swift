import Testing
import VQTensor
import VQTestSupport

@Suite("Kernels: GEMM and nearest-code search")
struct KernelTests {
    @Test("matmul matches a double-precision triple loop", arguments: [
        (1, 1, 1), (3, 5, 7), (13, 33, 17), (50, 70, 300), (97, 129, 65), (12, 32, 256), (1, 100, 3),
    ])
    func matmulMatchesNaive(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        let a = TestSupport.random([m, k], seed: 1), b = TestSupport.random([k, n], seed: 2)
        let c = a.matmul(b)
        #expect(c.shape == [m, n])
        #expect(TestSupport.maxAbsDiff(c, TestSupport.naiveMatmul(a, b)) < 1e-4 * Float(k).squareRoot())
    }

    /// The skinny paths: few output columns (dot products), a tiny depth (row updates), few output rows
    /// (streamed outer products) — with transposed operands, as the backward of a projection uses them.
    @Test("skinny products match a double-precision triple loop and are bit-identical on 1 and 2 threads", arguments: [
        (8192, 4, 256), (300, 1, 17), (4, 256, 8192), (3, 100, 40), (8192, 256, 4), (50, 17, 1), (2, 2, 1000),
    ])
    func skinnyMatmul(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        let a = TestSupport.random([m, k], seed: 7), b = TestSupport.random([k, n], seed: 8)
        let at = TestSupport.random([k, m], seed: 9), bt = TestSupport.random([n, k], seed: 10)
        for (lhs, rhs) in [(a, b), (at.transposed(), b), (a, bt.transposed()), (at.transposed(), bt.transposed())] {
            let c1 = Threads.with(1) { lhs.matmul(rhs) }, c2 = Threads.with(2) { lhs.matmul(rhs) }
            #expect(c1.scalars.map(\.bitPattern) == c2.scalars.map(\.bitPattern))
            #expect(TestSupport.maxAbsDiff(c1, TestSupport.naiveMatmul(lhs, rhs)) < 1e-4 * Float(k).squareRoot())
        }
        // The backward of y = x·Wᵀ with 4 output channels (FSQ's projection) reaches every path.
        let x = a.requiringGradient(), w = TestSupport.random([n, k], seed: 11).requiringGradient()
        x.matmul(w.transposed()).sum().backward()
        let ones = Tensor(repeating: 1, shape: [m, n])
        #expect(TestSupport.maxAbsDiff(x.grad!, TestSupport.naiveMatmul(ones, w.detached())) < 1e-4 * Float(n).squareRoot())
    }

    @Test("matmul broadcasts batch axes and reads 1-D operands as vectors")
    func batchedMatmul() {
        let a = TestSupport.random([2, 3, 4, 5], seed: 3), b = TestSupport.random([3, 5, 6], seed: 4)
        let c = a.matmul(b)
        #expect(c.shape == [2, 3, 4, 6])
        for i in 0..<2 {
            for j in 0..<3 {
                let ai = a.slice(axis: 0, i..<(i + 1)).slice(axis: 1, j..<(j + 1)).reshaped([4, 5])
                let bj = b.slice(axis: 0, j..<(j + 1)).reshaped([5, 6])
                let ci = c.slice(axis: 0, i..<(i + 1)).slice(axis: 1, j..<(j + 1)).reshaped([4, 6])
                #expect(TestSupport.maxAbsDiff(ci, TestSupport.naiveMatmul(ai, bj)) < 1e-5)
            }
        }
        let v = Tensor([1, 2, 3, 4, 5])
        #expect(a.slice(axis: 0, 0..<1).reshaped([3, 4, 5]).matmul(v).shape == [3, 4])
        #expect(v.matmul(b).shape == [3, 6])
    }

    @Test("matmul is bit-identical on 1 and 2 threads")
    func matmulThreadIdentity() {
        let a = TestSupport.random([257, 300], seed: 5), b = TestSupport.random([300, 129], seed: 6)
        let one = Threads.with(1) { a.matmul(b) }
        let two = Threads.with(2) { a.matmul(b) }
        let three = Threads.with(3) { a.matmul(b) }
        #expect(one == two)
        #expect(one == three)
    }

    @Test("nearest code equals the argmin of the materialised distance", arguments: [
        (1, 1, 1), (5, 3, 2), (37, 70, 9), (100, 33, 64), (40, 100, 100),
    ])
    func nearestMatchesBruteForce(shape: (Int, Int, Int)) {
        let (n, k, d) = shape
        let x = TestSupport.random([n, d], seed: 7), c = TestSupport.random([k, d], seed: 8)
        let (idx, dist) = x.nearestCodes(c)
        // Brute force in Double: exact enough to agree except on near-ties, which random data avoids.
        for r in 0..<n {
            var best = Double.infinity, bi = -1
            for j in 0..<k {
                var s = 0.0
                for p in 0..<d { let t = Double(x[r, p]) - Double(c[j, p]); s += t * t }
                if s < best { best = s; bi = j }
            }
            #expect(idx.scalars[r] == bi)
            #expect(abs(Double(dist.scalars[r]) - best.squareRoot()) < 1e-3 * max(1, best.squareRoot()))
        }
        let (idxDot, _) = x.nearestCodes(c, metric: .dot)
        #expect(idxDot == x.matmul(c.transposed()).argmax(axis: 1))
    }

    /// On AVX-512 the search forms scores in the GEMM tile's registers (`vq_gemm_argmin`); top-k keeps the
    /// tile-then-scan path. Both must agree bit for bit, ties and partial code panels included.
    @Test("nearest code (fused tile and arg-min) equals top-1 of the tile-then-scan path, bit for bit",
          arguments: [(13, 33, 8), (50, 70, 64), (25, 96, 3), (30, 40, 300)])
    func fusedNearestEqualsTopOne(shape: (Int, Int, Int)) {
        let (n, k, d) = shape
        // Integer-valued data: many exact ties.
        var rng = SeededGenerator(seed: 70)
        let x = Tensor((0..<(n * d)).map { _ in Float(Int.random(in: -2...2, using: &rng)) }, shape: [n, d])
        let c = Tensor((0..<(k * d)).map { _ in Float(Int.random(in: -2...2, using: &rng)) }, shape: [k, d])
        for metric in [CodeMetric.euclidean, .dot] {
            let (idx, s) = x.nearestCodes(c, metric: metric)
            let (top, ts) = x.topKCodes(c, k: 1, metric: metric)
            #expect(idx.scalars == top.scalars)
            #expect(s.scalars.map(\.bitPattern) == ts.scalars.map(\.bitPattern))
        }
    }

    @Test("per-head search equals searching each head's rows in its own codebook", arguments: [(3, 100, 70, 16), (2, 5, 300, 64)])
    func perHead(shape: (Int, Int, Int, Int)) {
        let (h, n, k, d) = shape
        let x = TestSupport.random([h, n, d], seed: 60), c = TestSupport.random([h, k, d], seed: 61)
        for metric in [CodeMetric.euclidean, .dot] {
            let all = x.nearestCodesPerHead(c, metric: metric)
            #expect(all.shape == [h, n])
            for hh in 0..<h {
                let one = x.slice(axis: 0, hh..<(hh + 1)).reshaped([n, d]).nearestCodes(c.slice(axis: 0, hh..<(hh + 1)).reshaped([k, d]), metric: metric)
                #expect(Array(all.scalars[(hh * n)..<((hh + 1) * n)]) == one.indices.scalars, "head \(hh) \(metric)")
            }
        }
    }

    @Test("exact ties resolve to the lowest code index")
    func tiesResolveLow() {
        let c = Tensor(rows: [[1, 0], [0, 1], [1, 0], [0, 1]])
        let x = Tensor(rows: [[1, 0], [0, 1], [0.5, 0.5]])
        let (idx, _) = x.nearestCodes(c)
        #expect(idx.scalars == [0, 1, 0])
        #expect(x.nearestCodes(c, metric: .dot).indices.scalars == [0, 1, 0])
    }

    @Test("reductions, element-wise ops and scatter/gather are bit-identical on 1, 2 and 3 threads")
    func otherThreadIdentity() {
        let x = TestSupport.random([300, 517], seed: 13)
        // Magnitudes over 2⁻²⁰ … 2²⁰, so that any other order of additions (another split of a long sum over the
        // threads) changes the bits.
        let wide = TestSupport.wideRandom([200_003], seed: 15)
        func run() -> [Tensor] {
            [x.sum(), x.sum(axis: 0), x.sum(axis: 1), x.max(axis: 0), x.softmax(axis: 1), x.tanh(), x.logSumExp(axis: 1),
             x.pairwiseSquaredDistance(x.slice(axis: 0, 0..<40)), wide.sum(), wide.slice(axis: 0, 0..<(400 * 499)).reshaped([400, 499]).sum(axis: 0)]
        }
        let one = Threads.with(1) { run() }
        #expect(Threads.with(2) { run() } == one)
        #expect(Threads.with(3) { run() } == one)
    }

    @Test("a sum over the first axis adds the rows in order, each column by itself (the bias gradient's reduction)")
    func columnSumsInOrder() {
        let x = TestSupport.wideRandom([700, 37], seed: 17)
        var expected = [Float](repeating: 0, count: 37)
        for r in 0..<700 { for j in 0..<37 { expected[j] += x.scalars[r * 37 + j] } }
        for threads in [1, 2] {
            #expect(Threads.with(threads) { x.sum(axis: 0) }.scalars.map(\.bitPattern) == expected.map(\.bitPattern))
        }
        // Three-dimensional, the middle axis: every outer block by itself.
        let y = x.reshaped([7, 100, 37]).sum(axis: 1)
        for b in 0..<7 {
            var e = [Float](repeating: 0, count: 37)
            for r in 0..<100 { for j in 0..<37 { e[j] += x.scalars[(b * 100 + r) * 37 + j] } }
            #expect(Array(y.scalars[(b * 37)..<(b * 37 + 37)]).map(\.bitPattern) == e.map(\.bitPattern))
        }
    }

    @Test("nearest-code search is bit-identical on 1 and 2 threads")
    func nearestThreadIdentity() {
        let x = TestSupport.random([1000, 40], seed: 9), c = TestSupport.random([300, 40], seed: 10)
        let a = Threads.with(1) { x.nearestCodes(c) }, b = Threads.with(2) { x.nearestCodes(c) }
        #expect(a.indices == b.indices)
        #expect(a.scores == b.scores)
    }

    @Test("top-k codes are the k smallest distances, best first")
    func topK() {
        let x = TestSupport.random([20, 8], seed: 11), c = TestSupport.random([50, 8], seed: 12)
        let (idx, scores) = x.topKCodes(c, k: 3)
        let dist = x.pairwiseSquaredDistance(c)
        for r in 0..<20 {
            let row = (0..<50).map { dist[r, $0] }
            let order = row.indices.sorted { row[$0] < row[$1] }
            #expect(Array(idx.scalars[(r * 3)..<(r * 3 + 3)]) == Array(order.prefix(3)))
            #expect(scores[r, 0] <= scores[r, 1] && scores[r, 1] <= scores[r, 2])
        }
        #expect(idx.scalars.enumerated().filter { $0.offset % 3 == 0 }.map(\.element) == x.nearestCodes(c).indices.scalars)
    }

    @Test("a row with NaN gets index 0 and a NaN score; other rows are unaffected")
    func nanRows() {
        let c = Tensor(rows: [[0, 0], [5, 5]])
        let x = Tensor(rows: [[.nan, 1], [5, 4]])
        let (idx, s) = x.nearestCodes(c)
        #expect(idx.scalars == [0, 1])
        #expect(s.scalars[0].isNaN)
    }
}
