import Testing
@testable import VQTensor
import VQTestSupport

/// The GEMM's bias start and column blocks change where C is written and when the bias enters, never an
/// element's arithmetic: each must equal the plain product computed the old way, bit for bit.
@Suite("Kernels: GEMM bias start and column blocks")
struct GEMMEpilogueTests {
    /// The first element whose bits differ (nil if none): a whole-array `==` prints a quadratic diff on failure.
    static func firstDifference(_ a: [Float], _ b: [Float]) -> Int? {
        a.count != b.count ? -1 : a.indices.first { a[$0].bitPattern != b[$0].bitPattern }
    }

    /// Every path (`m ≤ 8`, `n ≤ 8`, `k ≤ 8`, the packed tiles with row and column edges, depth beyond one block).
    static let shapes = [(300, 256, 64), (37, 100, 300), (5, 64, 40), (200, 6, 50), (90, 48, 5), (13, 33, 17), (1, 1, 1), (64, 64, 0)]

    @Test("C = bias + A·B equals filling C with the bias and accumulating, bit for bit, on 1 and 2 threads", arguments: shapes)
    func biasStart(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        let a = TestSupport.random([m, max(k, 1)], seed: 61).scalars, b = TestSupport.random([max(k, 1), n], seed: 62).scalars
        let bias = TestSupport.random([n], seed: 63).scalars
        var filled = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { filled[i * n + j] = bias[j] } }
        Threads.with(1) {
            GEMM.gemm(m: m, n: n, k: k, a: a, ars: k, acs: 1, b: b, brs: n, bcs: 1, c: &filled, ldc: n, accumulate: true)
        }
        for threads in [1, 2] {
            var c = [Float](repeating: .nan, count: m * n)
            Threads.with(threads) {
                GEMM.gemm(m: m, n: n, k: k, a: a, ars: k, acs: 1, b: b, brs: n, bcs: 1, c: &c, ldc: n, accumulate: false, bias: bias)
            }
            #expect(Self.firstDifference(c, filled) == nil, "\(threads) threads")
        }
        // The bias really entered (a product without it differs wherever the bias is not 0).
        var plain = [Float](repeating: 0, count: m * n)
        GEMM.gemm(m: m, n: n, k: k, a: a, ars: k, acs: 1, b: b, brs: n, bcs: 1, c: &plain, ldc: n, accumulate: false)
        #expect(Self.firstDifference(plain, filled) != nil)
    }

    @Test("column blocks write each block's columns to its own slab, as one product per block would",
          arguments: [(300, 4, 256, 64), (37, 3, 64, 40), (50, 2, 24, 30), (9, 8, 32, 16)])
    func columnBlocks(shape: (Int, Int, Int, Int)) {
        let (m, blocks, width, k) = shape
        let n = blocks * width
        let a = TestSupport.random([m, k], seed: 64).scalars, w = TestSupport.random([n, k], seed: 65).scalars
        let bias = TestSupport.random([n], seed: 66).scalars
        for withBias in [true, false] {
            var expected = [Float](repeating: 0, count: n * m)
            expected.withUnsafeMutableBufferPointer { pe in
                w.withUnsafeBufferPointer { pw in
                    bias.withUnsafeBufferPointer { pb in
                        for q in 0..<blocks {
                            GEMM.gemm(m: m, n: width, k: k, a: a, ars: k, acs: 1, b: pw.baseAddress! + q * width * k, brs: 1, bcs: k,
                                      c: pe.baseAddress! + q * m * width, ldc: width, accumulate: false,
                                      bias: withBias ? pb.baseAddress! + q * width : nil)
                        }
                    }
                }
            }
            for threads in [1, 2] {
                var c = [Float](repeating: .nan, count: n * m)
                Threads.with(threads) {
                    bias.withUnsafeBufferPointer { pb in
                        GEMM.gemm(m: m, n: n, k: k, a: a, ars: k, acs: 1, b: w, brs: 1, bcs: k, c: &c, ldc: width, accumulate: false,
                                  bias: withBias ? pb.baseAddress! : nil, columnBlocks: (width: width, stride: m * width))
                    }
                }
                #expect(Self.firstDifference(c, expected) == nil, "bias \(withBias), \(threads) threads")
            }
        }
    }
}
