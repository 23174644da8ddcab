import CVQKernels

/// Exact nearest-code search screened with BF16 dot products (kernel level 3, AVX-512 BF16).
///
/// A screening pass computes every row's scores from dot products of BF16-rounded factors — twice the products
/// per instruction of the float tile — together with a bound `B` on how far each can be from the float score
/// the plain search computes. Per row it keeps the least upper bound `U = min (s̃ + B)` and every code whose
/// lower bound `s̃ − B` is ≤ `U`: the float nearest code is always among them, since its float score is at most
/// `U` and at least its own lower bound. Those few codes are rescored with the float tile's own arithmetic
/// (one fused multiply-add chain per dot product), in code order with strict improvement, so indices and
/// scores are **bit-identical to the plain search**, ties included — the screen only decides which codes need
/// the float dot product.
///
/// The bound, for depth `d ≤ 256` and `S = Σ|xᵢcᵢ| ≤ ‖x‖‖c‖`: rounding a factor to BF16 moves it by at most
/// 2⁻⁸ of itself, so the BF16 products differ from the exact ones by ≤ (2⁻⁷ + 2⁻¹⁶)·S; each float sum of `d`
/// terms is within γ_d·S ≤ 2⁻¹⁶·S of its exact value (Higham, *Accuracy and Stability of Numerical
/// Algorithms*, §3.1). A score `(‖x‖² + ‖c‖²) − 2x·c` doubles the dot product's error, so
/// `|s̃ − s| ≤ (2⁻⁶ + 2⁻¹³)·‖x‖‖c‖` plus the scores' own roundings (≤ 2⁻²² (‖x‖² + ‖c‖²)) and the denormals the
/// BF16 unit flushes (≤ 2⁻¹²¹(1 + ‖x‖ + ‖c‖)). The kernel uses `(2⁻⁶ + 2⁻¹²)‖x‖‖c‖ + 2⁻²¹(‖x‖² + ‖c‖²) +
/// 2⁻¹¹⁰(1 + ‖x‖ + ‖c‖)`, which also covers the rounding of the norms and of the bounds themselves. A cosine
/// score `−x·c` has the same bound without the squared norms.
///
/// Rows the screen cannot serve — a non-finite or huge row, or more than ``capacity`` codes within the bound
/// (data far from the origin relative to its spread) — are searched by the plain kernel.
extension NearestCodeKernel {
    /// How the search is carried out; `.automatic` screens at level 3 when the search is large enough to gain.
    enum Screening: Sendable {
        case automatic, off, emulated, native
    }

    /// Candidate codes kept per row before it is handed to the plain search.
    static let capacity = 64

    /// Whether `.automatic` screens a search of `k` codes of depth `d`.
    static func screens(k: Int, d: Int) -> Bool {
        GEMM.level >= 3 && k >= 64 && d >= 16 && d <= GEMM.kc
    }

    /// The screened arg-min: fills `best`/`index` for every row it serves and returns the rows left to the plain
    /// search, or `nil` when the codes themselves rule the screen out (a non-finite or huge code).
    static func screenedArgmin(
        x: UnsafePointer<Float>, n: Int, codes: UnsafePointer<Float>, k: Int, d: Int, cosine: Int32, native: Bool,
        best: UnsafeMutablePointer<Float>, index: UnsafeMutablePointer<Int64>
    ) -> [Int]? {
        precondition(d <= GEMM.kc && d > 0 && k > 0, "screenedArgmin: d = \(d), k = \(k)")
        let mr = 12, nr = 32, pairs = (d + 1) / 2, cap = capacity
        let huge: Float = 1e36
        let panels = (k + nr - 1) / nr
        let cc = alignedFloats(panels * nr * 3)
        let cn = cc + panels * nr, cterm = cn + panels * nr
        defer { cc.deallocate() }
        cc.initialize(repeating: 0, count: panels * nr * 3)
        for j in 0..<k { cc[j] = sumOfSquares(codes + j * d, d) }
        guard (0..<k).allSatisfy({ cc[$0] <= huge }) else { return nil }
        vq_screen_terms(cc, Int64(k), cosine, cn, cterm)
        let packedRaw = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, panels * pairs * nr) * 4, alignment: 64)
        let packed = packedRaw.bindMemory(to: UInt32.self, capacity: panels * pairs * nr)
        defer { packedRaw.deallocate() }
        nonisolated(unsafe) let (px, pcodes, ppacked, pcc, pcn, pct, pbest, pindex) = (x, codes, packed, cc, cn, cterm, best, index)
        Threads.forRanges(panels, minChunk: 8) { range in
            for jp in range {
                vq_bf16_pack(native ? 1 : 0, pcodes + jp * nr * d, Int64(d), Int64(Swift.min(nr, k - jp * nr)), Int64(d), Int64(nr),
                             ppacked + jp * pairs * nr)
            }
        }
        var plain = [UInt8](repeating: 0, count: n)
        let rowsPerTask = rowsPerTask(n, mr: mr)
        plain.withUnsafeMutableBufferPointer { pp in
            nonisolated(unsafe) let pplain = pp.baseAddress!
            Threads.forEach((n + rowsPerTask - 1) / rowsPerTask) { task in
                let r0 = task * rowsPerTask, rowsT = Swift.min(rowsPerTask, n - r0)
                let groups = (rowsT + mr - 1) / mr, slots = groups * mr
                let aRaw = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, groups * pairs * mr) * 4, alignment: 64)
                let aPack = aRaw.bindMemory(to: UInt32.self, capacity: groups * pairs * mr)
                let rowState = alignedFloats(slots * 4)
                let (xx, xn, rowterm, bound) = (rowState, rowState + slots, rowState + 2 * slots, rowState + 3 * slots)
                let count = UnsafeMutablePointer<Int32>.allocate(capacity: slots)
                let cand = UnsafeMutablePointer<Int32>.allocate(capacity: slots * cap)
                let low = UnsafeMutablePointer<Float>.allocate(capacity: slots * cap)
                defer { aRaw.deallocate(); rowState.deallocate(); count.deallocate(); cand.deallocate(); low.deallocate() }
                for g in 0..<groups {
                    let rows = Swift.min(mr, rowsT - g * mr)
                    vq_bf16_pack(native ? 1 : 0, px + (r0 + g * mr) * d, Int64(d), Int64(rows), Int64(d), Int64(mr), aPack + g * pairs * mr)
                }
                for i in 0..<slots {
                    xx[i] = i < rowsT ? sumOfSquares(px + (r0 + i) * d, d) : 0
                    bound[i] = .infinity
                    // A non-finite or huge row goes to the plain search (its bounds would not be finite).
                    count[i] = i < rowsT && !(xx[i] <= huge) ? -1 : 0
                }
                vq_screen_terms(xx, Int64(slots), cosine, xn, rowterm)
                let blockPanels = Swift.max(1, (256 * 1024 / 4) / Swift.max(1, pairs * nr))
                var b0 = 0
                while b0 < panels {
                    let b1 = Swift.min(panels, b0 + blockPanels)
                    for jp in b0..<b1 {
                        let cols = Int32(Swift.min(nr, k - jp * nr))
                        for g in 0..<groups {
                            let o = g * mr
                            vq_screen_tile(native ? 1 : 0, Int64(pairs), aPack + g * pairs * mr, ppacked + jp * pairs * nr,
                                           Int32(Swift.min(mr, rowsT - o)), cols, xx + o, xn + o, rowterm + o,
                                           pcc + jp * nr, pcn + jp * nr, pct + jp * nr, cosine, Int64(jp * nr),
                                           bound + o, count + o, cand + o * cap, low + o * cap, Int32(cap))
                        }
                    }
                    b0 = b1
                }
                for i in 0..<rowsT {
                    pbest[r0 + i] = .infinity
                    pindex[r0 + i] = 0
                    if count[i] < 0 { pplain[r0 + i] = 1 }
                }
                // Scratch for the (row, code) pairs to rescore: at most every listed entry.
                let pairRow = UnsafeMutablePointer<Int32>.allocate(capacity: slots * cap * 2)
                let pairScore = UnsafeMutablePointer<Float>.allocate(capacity: slots * cap)
                defer { pairRow.deallocate(); pairScore.deallocate() }
                vq_screen_finish(Int64(d), Int64(rowsT), px + r0 * d, xx, pcodes, pcc, cosine, count, cand, low, Int32(cap),
                                 bound, pbest + r0, pindex + r0, pairRow, pairRow + slots * cap, pairScore)
            }
        }
        return plain.indices.filter { plain[$0] != 0 }
    }
}
