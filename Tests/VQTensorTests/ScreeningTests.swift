import Testing
@testable import VQTensor
import VQTestSupport

/// The screened nearest-code search (BF16 pairs or 8-bit quads) must return exactly what the float search
/// returns: the same index and the same score bits, for every row — near-ties, exact ties, data far from the
/// origin, denormals, huge and non-finite rows included. Each case runs the portable emulation of every screening
/// tile and every tile this machine runs natively (x86-64: the SSE2 16-bit pairs everywhere, the 7-bit tile at levels
/// ≥ 1, VDPBF16PS and VPDPBUSD at level 3), at whatever kernel level the tests run — level 0 included.
@Suite("Kernels: screened nearest-code search")
struct ScreeningTests {
    static let modes: [NearestCodeKernel.Screening] =
        NearestCodeKernel.ScreenFormat.allCases.map { .screen($0, native: false) }
        + NearestCodeKernel.ScreenFormat.allCases.filter { $0.runsNatively }.map { .screen($0, native: true) }

    static func expectSame(_ x: Tensor, _ c: Tensor, _ comment: Comment) {
        for metric in [CodeMetric.euclidean, .dot] {
            let plain = x.nearestCodes(c, metric: metric, screening: .off)
            for mode in modes {
                let screened = x.nearestCodes(c, metric: metric, screening: mode)
                let differ = (0..<x.shape[0]).filter {
                    screened.indices.scalars[$0] != plain.indices.scalars[$0]
                        || screened.scores.scalars[$0].bitPattern != plain.scores.scalars[$0].bitPattern
                }
                #expect(differ.isEmpty, "\(comment) \(metric) \(mode): rows \(differ.prefix(5)) differ, e.g. \(differ.first.map { "index \(screened.indices.scalars[$0]) vs \(plain.indices.scalars[$0]), score \(screened.scores.scalars[$0]) vs \(plain.scores.scalars[$0])" } ?? "")")
            }
        }
    }

    /// The rows the screen hands to the float search (to show which cases exercise which path).
    static func leftOver(_ x: Tensor, _ c: Tensor, cosine: Bool = false, format: NearestCodeKernel.ScreenFormat = .bf16,
                         native: Bool = false) -> [Int]? {
        let n = x.shape[0], k = c.shape[0], d = x.shape[1]
        var best = [Float](repeating: .infinity, count: n), index = [Int64](repeating: 0, count: n)
        return x.scalars.withUnsafeBufferPointer { px in
            c.scalars.withUnsafeBufferPointer { pc in
                NearestCodeKernel.screenedArgmin(x: px.baseAddress!, n: n, codes: pc.baseAddress!, k: k, d: d,
                                                 cosine: cosine ? 1 : 0, format: format, native: native,
                                                 best: &best, index: &index)
            }
        }
    }

    @Test("random data: same indices and score bits as the float search, partial tiles and odd depths included",
          arguments: [(1, 64, 16), (13, 65, 17), (100, 300, 64), (257, 1024, 32), (40, 97, 255), (30, 64, 256), (3000, 1024, 16)])
    func randomData(shape: (Int, Int, Int)) {
        let (n, k, d) = shape
        let x = TestSupport.random([n, d], seed: 31), c = TestSupport.random([k, d], seed: 32)
        Self.expectSame(x, c, "\(shape)")
        // Not vacuous: the screen served every row (none fell back to the float search), every format at every depth
        // (deep random codes crowd within the 7-bit codes' wider bound: a few dozen a row, within ``capacity``).
        for format in NearestCodeKernel.ScreenFormat.allCases {
            #expect(Self.leftOver(x, c, format: format) == [])
            #expect(Self.leftOver(x, c, cosine: true, format: format) == [])
            if format.runsNatively {
                #expect(Self.leftOver(x, c, format: format, native: true) == [])
                #expect(Self.leftOver(x, c, cosine: true, format: format, native: true) == [])
            }
        }
    }

    @Test("several heads screened in one pass: each head's indices as its own float search; rows left over and codes that rule the screen out handled per head")
    func heads() {
        let (h, n, k, d) = (3, 500, 256, 32)
        var xs = TestSupport.random([h, n, d], seed: 60).scalars
        // Head 1: a few rows the screen cannot bound (a NaN, an overflowing norm): the float search serves them only.
        xs[(n + 3) * d] = .nan
        xs[(n + 250) * d + 5] = .infinity
        for p in 0..<d { xs[(n + 499) * d + p] *= 3e19 }
        let x = Tensor(xs, shape: [h, n, d])
        var cs = TestSupport.random([h, k, d], seed: 61).scalars
        for metric in [CodeMetric.euclidean, .dot] {
            for spoil in [false, true] {
                // A code out of the 8-bit range in the last head rules the (automatic) screen out for every head.
                if spoil { cs[(2 * k + 7) * d] = 1e20 }
                let c = Tensor(cs, shape: [h, k, d])
                let all = x.nearestCodesPerHead(c, metric: metric)
                for hh in 0..<h {
                    let xh = Tensor(Array(xs[(hh * n * d)..<((hh + 1) * n * d)]), shape: [n, d])
                    let ch = Tensor(Array(cs[(hh * k * d)..<((hh + 1) * k * d)]), shape: [k, d])
                    let plain = xh.nearestCodes(ch, metric: metric, screening: .off).indices.scalars
                    #expect(Array(all.scalars[(hh * n)..<((hh + 1) * n)]) == plain, "head \(hh) \(metric) spoil \(spoil)")
                }
            }
            cs = TestSupport.random([h, k, d], seed: 61).scalars
        }
        // Not vacuous: head 1's far rows are the rows the screen leaves (as global row numbers).
        if let format = NearestCodeKernel.automaticFormats(k: k, d: d).first {
            let c = TestSupport.random([h, k, d], seed: 61)
            var best = [Float](repeating: .infinity, count: h * n), index = [Int64](repeating: 0, count: h * n)
            let left = xs.withUnsafeBufferPointer { px in
                c.scalars.withUnsafeBufferPointer { pc in
                    NearestCodeKernel.screenedArgmin(x: px.baseAddress!, n: n, codes: pc.baseAddress!, k: k, d: d, heads: h, cosine: 0,
                                                     format: format, native: true, best: &best, index: &index)
                }
            }
            #expect(left == [n + 3, n + 250, n + 499])
        }
    }

    @Test("near-ties and exact ties: codes 1e-6 apart, duplicated codes, integer data")
    func ties() {
        var rng = SeededGenerator(seed: 33)
        let d = 48, base = TestSupport.random([16, d], seed: 34)
        // 16 clusters of 8 codes: each a base code plus a 1e-6 perturbation; every fourth an exact duplicate.
        var codes = [Float]()
        for j in 0..<128 {
            let b = j / 8
            for p in 0..<d {
                let wiggle = j % 4 == 3 ? 0 : Float.random(in: -1e-6...1e-6, using: &rng)
                codes.append(base[b, p] + wiggle)
            }
        }
        let c = Tensor(codes, shape: [128, d])
        let x = Tensor((0..<(200 * d)).map { i in base[i / d % 16, i % d] + Float.random(in: -1e-3...1e-3, using: &rng) },
                       shape: [200, d])
        Self.expectSame(x, c, "near-ties")
        // Ties at the scale of the 8-bit quantisation step (codes 1e-2 apart, steps ≈ 2e-2): the screens' errors are
        // as large as the gaps, so too small a bound drops the nearest code.
        for dd in [16, 48] {
            let b2 = TestSupport.random([32, dd], seed: 50)
            let c2 = Tensor((0..<(256 * dd)).map { i in b2[i / dd / 8, i % dd] + Float.random(in: -1e-2...1e-2, using: &rng) },
                            shape: [256, dd])
            let x2 = Tensor((0..<(2000 * dd)).map { i in b2[i / dd % 32, i % dd] + Float.random(in: -2e-2...2e-2, using: &rng) },
                            shape: [2000, dd])
            Self.expectSame(x2, c2, "step-scale ties d=\(dd)")
        }
        let xi = Tensor((0..<(90 * d)).map { _ in Float(Int.random(in: -2...2, using: &rng)) }, shape: [90, d])
        let ci = Tensor((0..<(70 * d)).map { _ in Float(Int.random(in: -2...2, using: &rng)) }, shape: [70, d])
        Self.expectSame(xi, ci, "integers")
        // A row exactly on a code that appears twice resolves to the first copy, as the float search does.
        let dup = Tensor(ci.scalars + ci.scalars, shape: [140, d])
        for mode in Self.modes {
            #expect(ci.nearestCodes(dup, metric: .euclidean, screening: mode).indices.scalars == Array(0..<70))
        }
    }

    /// The rescoring's second filter (rows with several listed codes) sums their dot products lane-wise — another
    /// order than the float tile's chain — and must not drop the chain's nearest. Row `[1, s, …, s]` and code A of the
    /// same form (`s² = 2⁻²⁴(1 + 2⁻⁹ + 2⁻²⁰)`, just over half an ulp of 1): the chain adds each `s²` to a sum in
    /// [1, 2) and rounds up every time, `x·A = 1 + (d − 1)·2⁻²³`, while the lane-wise sums round up only in the lane
    /// that holds the 1, ≈ `1 + (d/2)·2⁻²³` — the two orders `d·2⁻²⁴` apart, about the worst case of their bound.
    /// Code B = `[1 + (d − 2)·2⁻²³, 0, …]` sits between them in any order: the chain takes A by one ulp, the lane sums
    /// see B ahead by ~`(d/2)·2⁻²³` — half the orders' worst case. (A filter whose bound is a sixteenth of its size
    /// fails here: the bound is twice that worst case, and a code is kept within twice the bound of the least score.)
    @Test("the second filter keeps the float search's nearest where the lane-wise sums rank another code first",
          arguments: [64, 200, 256])
    func secondFilter(d: Int) {
        let s: Float = 0x1.004p-12
        let a = [Float(1)] + [Float](repeating: s, count: d - 1)
        let b = [1 + Float(d - 2) * 0x1p-23] + [Float](repeating: 0, count: d - 1)
        let others = (TestSupport.random([62, d], seed: 55) * 0.01).scalars
        let c = Tensor(b + a + others, shape: [64, d])
        // Rows scaled by powers of two round alike.
        let x = Tensor((0..<12).flatMap { r in a.map { $0 * Float(sign: .plus, exponent: r - 6, significand: 1) } }, shape: [12, d])
        let plain = x.nearestCodes(c, metric: .dot, screening: .off)
        #expect(plain.indices.scalars == [Int](repeating: 1, count: 12), "the chain ranks A first")
        Self.expectSame(x, c, "lane-wise sums rank B first, d=\(d)")
    }

    /// Coherent rounding: every component of a row sits just below a half step of the 8-bit grid (rounded down),
    /// and its own copy is a code (distance 0) that the 8-bit screen scores ≈ 3,800 too far, while an integer code
    /// (distance² 4) is scored ≈ 1,900 too near. The nearest survives only if the bound covers errors this close
    /// to its worst case (a bound at a fifth of its size fails here, for the 8-bit quads and the 16-bit pairs of 8-bit
    /// values alike; the 7-bit rows' bound, half as wide again on the row side where errors do not separate near
    /// codes, fails at an eighth).
    @Test("coherent rounding errors: the true nearest survives every integer screen")
    func coherentRounding() {
        var rng = SeededGenerator(seed: 51)
        let d = 16, n = 50
        var xs = [Float](), exact = [Float]()
        for _ in 0..<n {
            let k = (0..<d).map { $0 == 0 ? Float(127) : Float(Int.random(in: 60...126, using: &rng)) }
            xs += k.enumerated().map { $0.offset == 0 ? $0.element : $0.element + 0.4999 }
            exact += k
        }
        let x = Tensor(xs, shape: [n, d]), c = Tensor(xs + exact, shape: [2 * n, d])
        Self.expectSame(x, c, "coherent rounding")
        #expect(x.nearestCodes(c, metric: .euclidean, screening: .off).indices.scalars == Array(0..<n))
    }

    @Test("data far from the origin overflows the candidate lists and falls back, with the same results")
    func farFromOrigin() {
        let d = 32
        let x = TestSupport.random([60, d], seed: 35, std: 0.01) + 100
        let c = TestSupport.random([512, d], seed: 36, std: 0.01) + 100
        Self.expectSame(x, c, "offset")
        // Every row's bound admits more codes than a list holds: all of them went to the float search.
        for format in NearestCodeKernel.ScreenFormat.allCases {
            #expect(Self.leftOver(x, c, format: format)?.count == 60)
        }
    }

    @Test("huge, non-finite and denormal values: same results as the float search")
    func extremes() {
        let d = 24
        var xs = TestSupport.random([40, d], seed: 37).scalars
        xs[0] = .nan
        xs[d + 3] = .infinity
        for p in 0..<d { xs[2 * d + p] *= 3e19 }   // ‖x‖² overflows: the row goes to the float search
        for p in 0..<d { xs[3 * d + p] = Float.leastNonzeroMagnitude * Float(p % 5) }
        for p in 0..<d { xs[4 * d + p] *= 1e-30 }
        let x = Tensor(xs, shape: [40, d])
        var cs = TestSupport.random([80, d], seed: 38).scalars
        for p in 0..<d { cs[5 * d + p] = Float.leastNormalMagnitude * Float(p % 3) }
        for p in 0..<d { cs[6 * d + p] = 0 }
        let c = Tensor(cs, shape: [80, d])
        Self.expectSame(x, c, "extremes")
        // Non-finite and overflowing rows go to the float search; BF16 bounds denormal and tiny rows, 8-bit
        // scales do not reach them (largest magnitude below 1e-15) and leave them too.
        let rest = Self.leftOver(x, c) ?? []
        #expect(rest == [0, 1, 2])
        // 8-bit scales cannot reach code 5 (largest magnitude 2e-38) either: the whole search is left to the float
        // one; without that code, the tiny rows are.
        var cz = cs
        for p in 0..<d { cz[5 * d + p] = 0 }
        for format in [NearestCodeKernel.ScreenFormat.int8, .int7, .int16, .int7x7] {
            #expect(Self.leftOver(x, c, format: format) == nil)
            #expect(Self.leftOver(x, Tensor(cz, shape: [80, d]), format: format) == [0, 1, 2, 3, 4])
            if format.runsNatively {
                #expect(Self.leftOver(x, Tensor(cz, shape: [80, d]), format: format, native: true) == [0, 1, 2, 3, 4])
            }
        }
        Self.expectSame(x, Tensor(cz, shape: [80, d]), "zero code")
        // The automatic search falls back from 8-bit quads to BF16 pairs for such a codebook: same results.
        let auto = x.nearestCodes(c, metric: .euclidean, screening: .automatic)
        let plain = x.nearestCodes(c, metric: .euclidean, screening: .off)
        #expect(auto.indices == plain.indices && auto.scores.scalars.map(\.bitPattern) == plain.scores.scalars.map(\.bitPattern))
        // A huge code rules the screen out for the whole search.
        var big = cs
        big[7 * d] = 1e20
        #expect(Self.leftOver(x, Tensor(big, shape: [80, d])) == nil)
        #expect(Self.leftOver(x, Tensor(big, shape: [80, d]), format: .int8) == nil)
        #expect(Self.leftOver(x, Tensor(big, shape: [80, d]), format: .int7) == nil)
        #expect(Self.leftOver(x, Tensor(big, shape: [80, d]), format: .int16) == nil)
        #expect(Self.leftOver(x, Tensor(big, shape: [80, d]), format: .int7x7) == nil)
        Self.expectSame(x, Tensor(big, shape: [80, d]), "huge code")
    }

    @Test("the automatic search screens with a format this machine runs natively, chosen by level and depth")
    func automaticFormats() {
        for d in [16, 64, 128, 129, 256] {
            let formats = NearestCodeKernel.automaticFormats(k: 1024, d: d)
            let native = formats.allSatisfy { $0.runsNatively }
            #expect(native, "d \(d): \(formats)")
            #if arch(x86_64)
            #expect(!formats.isEmpty, "every x86-64 level has a native screen")
            if GEMM.level == 0 { #expect(formats == [.int16]) }
            if GEMM.level == 1 { #expect(formats == [.int7x7]) }
            if GEMM.level == 2 { #expect(formats == (NearestCodeKernel.ScreenFormat.int8.runsNatively ? [.int8] : [.int7])) }
            if GEMM.level == 3 { #expect(formats == [.int8, .bf16]) }
            #endif
        }
        #expect(NearestCodeKernel.automaticFormats(k: 32, d: 64).isEmpty, "too few codes to gain")
        #expect(NearestCodeKernel.automaticFormats(k: 1024, d: GEMM.kc + 1).isEmpty, "deeper than one depth block")
    }

    @Test("the screened search is bit-identical on 1 and 2 threads")
    func threads() {
        let x = TestSupport.random([700, 64], seed: 39), c = TestSupport.random([300, 64], seed: 40)
        for mode in Self.modes {
            let one = Threads.with(1) { x.nearestCodes(c, metric: .euclidean, screening: mode) }
            let two = Threads.with(2) { x.nearestCodes(c, metric: .euclidean, screening: mode) }
            #expect(one.indices == two.indices)
            #expect(one.scores == two.scores)
        }
    }
}
