import Testing
import CVQKernels
@testable import VQTensor
import VQTestSupport

/// The skinny products (projections to and from a few channels) run on C vector kernels at every level (AVX-512,
/// AVX2, the portable vectors); each must compute every element in the documented order — each product rounded,
/// then added — so these tests rebuild that order in scalar Swift and compare bit for bit (CI runs them per level).
@Suite("Kernels: skinny products keep their documented order")
struct SkinnyKernelTests {
    static func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

    /// The block sums behind `meanSquaredDifference` (a loss's value is a float, which would hide the order of its
    /// double sums): compared as doubles, and the loss and its gradient as floats.
    @Test("meanSquaredDifference: blocks of 2¹⁶, four double lanes each in order, then the tail, on 1 and 2 threads")
    func squaredDifferenceBlocks() {
        let n = 7 * (1 << 16) + 4 * 1001 + 3   // seven whole blocks (a group of four interleaved, then three), a tail
        let a = TestSupport.wideRandom([n], seed: 19).scalars, b = TestSupport.random([n], seed: 20).scalars
        var expected: [Double] = []
        var lo = 0
        while lo < n {
            let hi = min(n, lo + (1 << 16))
            var lanes = SIMD4<Double>()
            var i = lo
            while i + 4 <= hi {
                for l in 0..<4 { let e = Double(a[i + l] - b[i + l]); lanes[l] += e * e }
                i += 4
            }
            var acc = lanes.sum()
            while i < hi { let e = Double(a[i] - b[i]); acc += e * e; i += 1 }
            expected.append(acc)
            lo = hi
        }
        for threads in [1, 2] {
            var diff = [Float](repeating: 0, count: n)
            let sums = a.withUnsafeBufferPointer { pa in
                nonisolated(unsafe) let base = pa.baseAddress!
                return Threads.with(threads) {
                    Tensor.squaredDifferenceBlocks(count: n, rowLength: n, row: { _ in base }, other: b, difference: &diff)
                }
            }
            #expect(sums.map(\.bitPattern) == expected.map(\.bitPattern), "\(threads) threads")
            #expect(diff.map(\.bitPattern) == zip(a, b).map { ($0 - $1).bitPattern })
            let leaf = Tensor(a).requiringGradient()
            let loss = Threads.with(threads) { leaf.meanSquaredDifference(Tensor(b)) }
            #expect(loss.item.bitPattern == Float(expected.reduce(0, +) / Double(n)).bitPattern)
            loss.backward()
            #expect(leaf.grad!.scalars.map(\.bitPattern) == zip(a, b).map { (($0 - $1) * (2 / Float(n))).bitPattern })
        }
    }

    @Test("tiny depth (k ≤ 8): each row starts from the bias, then adds a[i,p]·b[p,j] for p in order",
          arguments: [(100, 256, 4), (37, 19, 1), (64, 33, 8), (5, 16, 3)])
    func tinyDepth(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        let a = TestSupport.random([m, k], seed: 41).scalars, b = TestSupport.random([k, n], seed: 42).scalars
        let bias = TestSupport.random([n], seed: 43).scalars
        for accumulate in [false, true] {
            var c = TestSupport.random([m, n], seed: 44).scalars
            var expected = c
            for i in 0..<m {
                for j in 0..<n {
                    var s = accumulate ? expected[i * n + j] : bias[j]
                    for p in 0..<k { s += a[i * k + p] * b[p * n + j] }
                    expected[i * n + j] = s
                }
            }
            Threads.with(2) {
                GEMM.tinyDepth(m: m, n: n, k: k, a: a, ars: k, acs: 1, b: b, brs: n, bcs: 1, c: &c, ldc: n,
                               accumulate: accumulate, bias: bias)
            }
            #expect(Self.bits(c) == Self.bits(expected), "accumulate \(accumulate)")
        }
    }

    /// Σ_p x(p) over `0..<k` as the long reductions define it: in order within chunks of `GEMM.depthChunk(k)` rows
    /// (each from 0), the chunks' sums then added in order.
    static func chunkedSum(_ k: Int, _ x: (Int) -> Float) -> Float {
        let chunk = GEMM.depthChunk(k)
        var total: Float? = nil
        var lo = 0
        while lo < k {
            var s: Float = 0
            for p in lo..<min(k, lo + chunk) { s += x(p) }
            total = total.map { $0 + s } ?? s
            lo += chunk
        }
        return total ?? 0
    }

    @Test("few rows (m ≤ 8): C[i, j] adds a[i,p]·b[p,j] in order — past 1024 rows in chunks, then the chunks in order — on 1 and 2 threads",
          arguments: [(4, 256, 2000), (3, 70, 17), (8, 16, 64), (2, 40, 5000), (1, 33, 1024), (5, 24, 70_000)])
    func fewRows(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        // A read transposed (a weight gradient Xᵀ·dY): element (i, p) at a[p·m + i].
        let a = TestSupport.random([k, m], seed: 45).scalars, b = TestSupport.random([k, n], seed: 46).scalars
        let start = TestSupport.random([m, n], seed: 47).scalars
        for accumulate in [false, true] {
            var expected = [Float](repeating: 0, count: m * n)
            for i in 0..<m {
                for j in 0..<n {
                    if k <= GEMM.depthChunk(k) {
                        // One chunk: the products added to C (or to 0) in order.
                        var s: Float = accumulate ? start[i * n + j] : 0
                        for p in 0..<k { s += a[p * m + i] * b[p * n + j] }
                        expected[i * n + j] = s
                    } else {
                        let s = Self.chunkedSum(k) { p in a[p * m + i] * b[p * n + j] }
                        expected[i * n + j] = accumulate ? start[i * n + j] + s : s
                    }
                }
            }
            for threads in [1, 2] {
                var c = start
                Threads.with(threads) {
                    GEMM.fewRows(m: m, n: n, k: k, a: a, ars: 1, acs: m, b: b, brs: n, bcs: 1, c: &c, ldc: n, accumulate: accumulate)
                }
                #expect(Self.bits(c) == Self.bits(expected), "accumulate \(accumulate), \(threads) threads")
            }
        }
    }

    @Test("a narrow linear layer's gradients in one pass: dx as the skinny product, dW and db as chunked sums, on 1 and 2 threads",
          arguments: [(8192, 256, 4), (300, 16, 1), (5000, 40, 8), (2048, 1000, 3)])
    func narrowLinearGradients(shape: (Int, Int, Int)) {
        let (rows, n, k) = shape
        let dy = TestSupport.random([rows, n], seed: 51).scalars, w = TestSupport.random([n, k], seed: 52).scalars
        let x = TestSupport.random([rows, k], seed: 53).scalars
        // dx: the skinny kernel's product dy·W (its own order, tested above).
        var dxExpected = [Float](repeating: 0, count: rows * k)
        GEMM.skinny(m: rows, n: k, k: n, a: dy, ars: n, acs: 1, b: w, brs: k, bcs: 1, c: &dxExpected, crs: k, ccs: 1, accumulate: false)
        var dwExpected = [Float](repeating: 0, count: n * k), dbExpected = [Float](repeating: 0, count: n)
        for i in 0..<n {
            for j in 0..<k { dwExpected[i * k + j] = Self.chunkedSum(rows) { p in x[p * k + j] * dy[p * n + i] } }
            dbExpected[i] = Self.chunkedSum(rows) { p in dy[p * n + i] }
        }
        for threads in [1, 2] {
            var dx = [Float](repeating: .nan, count: rows * k), dw = [Float](repeating: .nan, count: n * k)
            var db = [Float](repeating: .nan, count: n)
            Threads.with(threads) {
                GEMM.narrowLinearGradients(rows: rows, n: n, k: k, dy: dy, weight: w, x: x, dx: &dx, dw: &dw, db: &db)
            }
            #expect(Self.bits(dx) == Self.bits(dxExpected), "\(threads) threads")
            #expect(Self.bits(dw) == Self.bits(dwExpected), "\(threads) threads")
            #expect(Self.bits(db) == Self.bits(dbExpected), "\(threads) threads")
            // Only the bias gradient, and only the weight's: the same values.
            var dbOnly = [Float](repeating: .nan, count: n), dwOnly = [Float](repeating: .nan, count: n * k)
            Threads.with(threads) {
                GEMM.narrowLinearGradients(rows: rows, n: n, k: k, dy: dy, weight: w, x: nil, dx: nil, dw: nil, db: &dbOnly)
                GEMM.narrowLinearGradients(rows: rows, n: n, k: k, dy: dy, weight: w, x: x, dx: nil, dw: &dwOnly, db: nil)
            }
            #expect(Self.bits(dbOnly) == Self.bits(dbExpected))
            #expect(Self.bits(dwOnly) == Self.bits(dwExpected))
        }
        // Through autograd: Linear's gradients are these.
        let xt = Tensor(x, shape: [rows, k]).requiringGradient(), wt = Tensor(w, shape: [n, k]).requiringGradient()
        let bt = Tensor.zeros([n]).requiringGradient()
        xt.linear(weight: wt, bias: bt).backward(Tensor(dy, shape: [rows, n]))
        #expect(Self.bits(xt.grad!.scalars) == Self.bits(dxExpected))
        #expect(Self.bits(wt.grad!.scalars) == Self.bits(dwExpected))
        #expect(Self.bits(bt.grad!.scalars) == Self.bits(dbExpected))
    }

    @Test("a narrow linear layer on an empty batch: zero gradients for the weight and bias, an empty one for the input")
    func narrowLinearEmpty() {
        let x = Tensor.zeros([0, 4]).requiringGradient(), w = TestSupport.random([32, 4], seed: 54).requiringGradient()
        let b = Tensor.zeros([32]).requiringGradient()
        x.linear(weight: w, bias: b).backward(Tensor.zeros([0, 32]))
        #expect(x.grad?.shape == [0, 4])
        #expect(w.grad?.scalars == [Float](repeating: 0, count: 128) && b.grad?.scalars == [Float](repeating: 0, count: 32))
    }

    @Test("few rows against a transposed B (dY·Xᵀ): each element one dot product in GEMM.dot's order (Cᵀ = Bᵀ·Aᵀ)",
          arguments: [(4, 256, 1024), (3, 70, 37), (8, 16, 16), (1, 40, 200)])
    func fewRowsTransposedB(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        // A [m, k] rows; B given as Bᵀ [n, k] rows (element (p, j) of B at bt[j·k + p]); C with a wider row stride.
        let a = TestSupport.random([m, k], seed: 49).scalars, bt = TestSupport.random([n, k], seed: 50).scalars
        func dot(_ i: Int, _ j: Int) -> Float {  // GEMM.dot: as in `skinny` below, over row i of A and row j of Bᵀ
            var l0 = [Float](repeating: 0, count: 8), l1 = l0
            var p = 0
            while p + 16 <= k {
                for q in 0..<8 {
                    l0[q] += bt[j * k + p + q] * a[i * k + p + q]
                    l1[q] += bt[j * k + p + 8 + q] * a[i * k + p + 8 + q]
                }
                p += 16
            }
            if p + 8 <= k {
                for q in 0..<8 { l0[q] += bt[j * k + p + q] * a[i * k + p + q] }
                p += 8
            }
            var s: Float = -0.0
            for q in 0..<8 { s += l0[q] + l1[q] }
            while p < k { s += bt[j * k + p] * a[i * k + p]; p += 1 }
            return s
        }
        let ldc = n + 3
        var c = [Float](repeating: .nan, count: m * ldc)
        Threads.with(2) {
            a.withUnsafeBufferPointer { pa in
                bt.withUnsafeBufferPointer { pb in
                    c.withUnsafeMutableBufferPointer { pc in
                        GEMM.gemm(m: m, n: n, k: k, a: pa.baseAddress!, ars: k, acs: 1, b: pb.baseAddress!, brs: 1, bcs: k,
                                  c: pc.baseAddress!, ldc: ldc, accumulate: false)
                    }
                }
            }
        }
        for i in 0..<m {
            #expect(Self.bits(Array(c[(i * ldc)..<(i * ldc + n)])) == Self.bits((0..<n).map { dot(i, $0) }), "row \(i)")
            #expect(c[(i * ldc + n)..<(i * ldc + ldc)].allSatisfy { $0.isNaN }, "row \(i)'s padding untouched")
        }
    }

    @Test("few columns: dot products in GEMM.dot's order; A read across rows: sums over p in order",
          arguments: [(300, 4, 256), (301, 4, 45), (70, 3, 37), (40, 8, 16), (33, 1, 200)])
    func skinny(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        let a = TestSupport.random([m, k], seed: 47).scalars, b = TestSupport.random([k, n], seed: 48).scalars
        // GEMM.dot: two eight-lane partial sums over blocks of 16, a block of 8 into the first, lanes in order, tail.
        func dot(_ i: Int, _ j: Int) -> Float {
            var l0 = [Float](repeating: 0, count: 8), l1 = l0
            var p = 0
            while p + 16 <= k {
                for q in 0..<8 {
                    l0[q] += a[i * k + p + q] * b[(p + q) * n + j]
                    l1[q] += a[i * k + p + 8 + q] * b[(p + 8 + q) * n + j]
                }
                p += 16
            }
            if p + 8 <= k {
                for q in 0..<8 { l0[q] += a[i * k + p + q] * b[(p + q) * n + j] }
                p += 8
            }
            var s: Float = -0.0
            for q in 0..<8 { s += l0[q] + l1[q] }
            while p < k { s += a[i * k + p] * b[p * n + j]; p += 1 }
            return s
        }
        var c = [Float](repeating: 0, count: m * n)
        Threads.with(2) {
            GEMM.skinny(m: m, n: n, k: k, a: a, ars: k, acs: 1, b: b, brs: n, bcs: 1, c: &c, crs: n, ccs: 1, accumulate: false)
        }
        #expect(Self.bits(c) == Self.bits((0..<(m * n)).map { dot($0 / n, $0 % n) }))
        // A stored transposed ([k, m], the input gradient's layout): the transposed-A path, sums in order of p.
        let at = (0..<(k * m)).map { a[($0 % m) * k + $0 / m] }
        var ct = [Float](repeating: 0, count: m * n)
        Threads.with(2) {
            GEMM.skinny(m: m, n: n, k: k, a: at, ars: 1, acs: m, b: b, brs: n, bcs: 1, c: &ct, crs: n, ccs: 1, accumulate: false)
        }
        var expected = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s: Float = 0
                for p in 0..<k { s += at[p * m + i] * b[p * n + j] }
                expected[i * n + j] = s
            }
        }
        // Fewer rows gather each row and take GEMM.dot's order.
        #expect(Self.bits(ct) == Self.bits(m >= 32 ? expected : (0..<(m * n)).map { dot($0 / n, $0 % n) }))
    }

    @Test("EMA scatter-add: each accumulator adds Double(x) of its valid rows in row order", arguments: [(500, 64, 7, 70), (33, 3, 5, 3), (40, 16, 1, 16)])
    func scatterAddRows(shape: (Int, Int, Int, Int)) {
        let (n, width, codes, stride) = shape
        let x = TestSupport.random([n, stride], seed: 49).scalars.enumerated().map { $0.element * Float(1 + $0.offset % 5) * 1e3 }
        var rng = SeededGenerator(seed: 50)
        let index = (0..<n).map { _ in Int.random(in: 0..<codes, using: &rng) }
        let valid = (0..<n).map { $0 % 7 != 3 }
        var expected = (0..<(codes * width)).map { Double($0) * 0.25 }
        var acc = expected
        for r in 0..<n where valid[r] { for j in 0..<width { expected[index[r] * width + j] += Double(x[r * stride + j]) } }
        x.withUnsafeBufferPointer { px in
            index.withUnsafeBufferPointer { pi in
                valid.withUnsafeBufferPointer { pv in
                    Tensor.scatterAddRows(px.baseAddress!, rowStride: stride, codes: pi.baseAddress!, valid: pv.baseAddress!, rows: n,
                                          width: width, into: &acc)
                }
            }
        }
        #expect(acc.map(\.bitPattern) == expected.map(\.bitPattern))
        #expect(acc != (0..<(codes * width)).map { Double($0) * 0.25 })  // rows were added
        // Over the valid rows sorted by code (stable): the same sums, bit for bit.
        let order = index.withUnsafeBufferPointer { pi in
            valid.withUnsafeBufferPointer { Tensor.rowsByCode(pi.baseAddress!, valid: $0.baseAddress!, n: n, codes: codes) }
        }
        #expect(order.count == valid.filter { $0 }.count)
        #expect(order == (0..<n).filter { valid[$0] }.sorted { (index[$0], $0) < (index[$1], $1) })
        var sorted = (0..<(codes * width)).map { Double($0) * 0.25 }
        x.withUnsafeBufferPointer { px in
            index.withUnsafeBufferPointer { pi in
                order.withUnsafeBufferPointer { po in
                    Tensor.scatterAddRows(px.baseAddress!, rowStride: stride, codes: pi.baseAddress!, order: po.baseAddress!, count: po.count,
                                          width: width, into: &sorted)
                }
            }
        }
        #expect(sorted.map(\.bitPattern) == expected.map(\.bitPattern))
    }

    @Test("row normalisation (C, four rows' sums at a time) equals the differentiable composition bit for bit",
          arguments: [1, 3, 8, 17, 64, 256, 300, 1000])
    func normalizeRows(d: Int) {
        for rows in [1, 4, 7] {
            var x = TestSupport.random([rows, d], seed: UInt64(51 + d)).scalars
            if rows == 7 {
                for j in 0..<d { x[d + j] = 0 }              // a zero row: divided by eps
                x[2 * d] = .nan                              // a NaN row stays NaN
                for j in 0..<d { x[3 * d + j] *= 3e19 }      // a finite row whose squares overflow: zeros
            }
            let input = Tensor(x, shape: [rows, d])
            let composed = input.requiringGradient().l2Normalized(axis: -1, eps: 1e-6)   // the graph's ops
            var inPlace = input
            inPlace.l2NormalizeLastAxis(eps: 1e-6)
            var single = x
            single.withUnsafeMutableBufferPointer { Tensor.l2NormalizeRows($0.baseAddress!, rows: rows, d: d, eps: 1e-6) }
            #expect(inPlace.scalars.map(\.bitPattern) == composed.scalars.map(\.bitPattern), "rows \(rows)")
            #expect(single.map(\.bitPattern) == composed.scalars.map(\.bitPattern), "rows \(rows)")
            #expect(single != x)
            // The kernel's finiteness flags: cleared exactly for the rows whose output holds a NaN or ±∞.
            var flags = [Bool](repeating: true, count: rows), out = x
            x.withUnsafeBufferPointer { px in
                out.withUnsafeMutableBufferPointer { po in
                    flags.withUnsafeMutableBufferPointer { pf in
                        Tensor.normalizeRows(px.baseAddress!, into: po.baseAddress!, rows: rows, d: d, eps: 1e-6, finite: pf.baseAddress!)
                    }
                }
            }
            #expect(out.map(\.bitPattern) == composed.scalars.map(\.bitPattern))
            let expected = (0..<rows).map { r in composed.scalars[(r * d)..<((r + 1) * d)].allSatisfy(\.isFinite) }
            #expect(flags == expected, "rows \(rows)")
            #expect(rows != 7 || flags == [true, true, false, true, true, true, true])
        }
    }

    @Test("sums of squares of rows (C, four rows at a time) equal the library's cascade, bit for bit",
          arguments: [1, 5, 8, 31, 64, 256, 257, 300, 1000])
    func rowSumsOfSquares(d: Int) {
        for rows in [1, 4, 9] {
            var x = TestSupport.random([rows, d], seed: UInt64(90 + d)).scalars
            for j in stride(from: 0, to: x.count, by: 7) { x[j] *= 1e3 }   // magnitudes that make the order matter
            var out = [Float](repeating: -1, count: rows)
            x.withUnsafeBufferPointer { px in
                out.withUnsafeMutableBufferPointer { NearestCodeKernel.sumOfSquares(rows: px.baseAddress!, count: rows, d: d, into: $0.baseAddress!) }
            }
            let cascade = (0..<rows).map { r in x.withUnsafeBufferPointer { Tensor.sumOfSquaresContiguous($0.baseAddress! + r * d, d) } }
            #expect(out.map(\.bitPattern) == cascade.map(\.bitPattern), "rows \(rows)")
            let sequential = (0..<rows).map { r in x[(r * d)..<((r + 1) * d)].reduce(Float(0)) { $0 + $1 * $1 } }
            #expect(d < 64 || out != sequential)   // the cascade is not the one-by-one order
        }
    }

    @Test("GEMM's A packing: rows × depth into MR-high panels (depth major), zero past the rows",
          arguments: [(12, 12, 256), (12, 5, 7), (6, 6, 19), (4, 3, 4), (4, 4, 9), (32, 32, 40), (32, 7, 9), (16, 16, 3)])
    func packA(shape: (Int, Int, Int)) {
        let (mr, rows, kb) = shape
        let ars = kb + 3
        let a = (0..<(rows * ars)).map { Float($0) + 0.5 }
        var dst = [Float](repeating: .nan, count: mr * kb)
        a.withUnsafeBufferPointer { pa in
            dst.withUnsafeMutableBufferPointer { vq_gemm_pack_a(pa.baseAddress!, Int64(ars), Int64(rows), Int64(kb), Int64(mr), $0.baseAddress!) }
        }
        let expected = (0..<(mr * kb)).map { e -> Float in
            let (p, i) = (e / mr, e % mr)
            return i < rows ? a[i * ars + p] : 0
        }
        #expect(dst.map(\.bitPattern) == expected.map(\.bitPattern))
    }

    @Test("row squared differences: eight double lanes per row, combined in the documented order, then the tail",
          arguments: [1, 7, 8, 24, 33, 256, 300])
    func rowSquaredDifferences(d: Int) {
        let rows = 9
        var a = TestSupport.random([rows, d], seed: 70).scalars, b = TestSupport.random([5, d], seed: 71).scalars
        for j in stride(from: 0, to: a.count, by: 5) { a[j] *= 1e4 }       // magnitudes that make the order matter
        b[3] = 1e-3
        let index: [Int64] = [4, 0, 2, 2, 1, 3, 0, 4, 1]
        var out = [Double](repeating: -1, count: rows)
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                index.withUnsafeBufferPointer { pi in
                    out.withUnsafeMutableBufferPointer {
                        Tensor.rowSquaredDifferences(pa.baseAddress!, pb.baseAddress!, index: pi.baseAddress!, rows: rows, d: d, into: $0.baseAddress!)
                    }
                }
            }
        }
        for r in 0..<rows {
            var lanes = [Double](repeating: 0, count: 8), tail = 0.0
            let full = d / 8 * 8
            for j in 0..<full {
                let e = Double(a[r * d + j] - b[Int(index[r]) * d + j])
                lanes[j % 8] = lanes[j % 8] + e * e
            }
            for j in full..<d {
                let e = Double(a[r * d + j] - b[Int(index[r]) * d + j])
                tail = tail + e * e
            }
            let expected = (((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))) + tail
            #expect(out[r].bitPattern == expected.bitPattern, "row \(r) of d \(d)")
        }
    }

    @Test("rows added to a row in order, one addition per element (C, registers holding blocks of the row)",
          arguments: [1, 31, 32, 100, 256])
    func addRows(width: Int) {
        for count in [0, 1, 3, 8] {
            var rows = TestSupport.random([Swift.max(count, 1), width], seed: UInt64(80 + width)).scalars
            for j in stride(from: 0, to: rows.count, by: 3) { rows[j] *= 1e6 }   // magnitudes that make the order matter
            let start = TestSupport.random([width], seed: 81).scalars
            var y = start
            rows.withUnsafeBufferPointer { pr in
                let src: [UnsafePointer<Float>?] = (0..<count).map { pr.baseAddress! + $0 * width }
                src.withUnsafeBufferPointer { ps in
                    y.withUnsafeMutableBufferPointer { vq_add_rows(GEMM.level, $0.baseAddress!, ps.baseAddress!, Int64(count), Int64(width)) }
                }
            }
            var expected = start
            for r in 0..<count { for o in 0..<width { expected[o] = expected[o] + rows[r * width + o] } }
            #expect(y.map(\.bitPattern) == expected.map(\.bitPattern), "count \(count)")
            #expect(count == 0 || y != start)
        }
    }
}
