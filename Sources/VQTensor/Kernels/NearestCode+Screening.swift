import CVQKernels

/// Exact nearest-code search screened with low-precision dot products (kernel level 3: AVX-512 BF16 and VNNI).
///
/// A screening pass computes every row's scores from cheap dot products — 8-bit integer quads (VPDPBUSD, four
/// times the products per instruction of the float tile) or BF16 pairs (VDPBF16PS, twice) — together with a
/// bound `B` on how far each can be from the float score the plain search computes. Per row it keeps the least
/// upper bound `U = min (s̃ + B)` and every code whose lower bound `s̃ − B` is ≤ `U`: the float nearest code is
/// always among them, since its float score is at most `U` and at least its own lower bound. Those few codes
/// (about one per row on the benchmarks) are rescored with the float tile's own arithmetic (one fused
/// multiply-add chain per dot product), in code order with strict improvement, so indices and scores are
/// **bit-identical to the plain search**, ties included — the screen only decides which codes need the float
/// dot product.
///
/// The bounds, for depth `d ≤ 256`, `S = Σ|xᵢcᵢ| ≤ ‖x‖‖c‖`, and the float sums within γ_d·S ≤ 2⁻¹⁶·S of their
/// exact values (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1); a score
/// `(‖x‖² + ‖c‖²) − 2x·c` doubles a dot product's error and adds its own roundings (≤ 2⁻²² (‖x‖² + ‖c‖²)):
/// - **8-bit**: a row is scaled by `sₓ = max|xᵢ| / 127` and rounded (`x̂ᵢ ∈ [−127, 127]`, error ≤ 0.5001 sₓ per
///   component, the code likewise with `s_c`); the integer sums are exact, so
///   `|x·c − sₓs_c Σx̂ᵢĉᵢ| ≤ 0.5001 (sₓ‖c‖₁ + s_c(‖x‖₁ + 0.5001 d sₓ))`. The kernel doubles that with a 2⁻¹⁰ slack and
///   adds `2⁻¹⁴‖x‖‖c‖` (the float sums and the rescaling) and `2⁻²¹(‖x‖² + ‖c‖²)`. Rows and codes whose largest
///   magnitude is not 0 or within [10⁻¹⁵, 10¹⁵] are not scaled.
/// - **BF16**: rounding a factor moves it by at most 2⁻⁸ of itself, so the products differ by ≤ (2⁻⁷ + 2⁻¹⁶)·S and
///   `|s̃ − s| ≤ (2⁻⁶ + 2⁻¹³)‖x‖‖c‖` plus the roundings and the denormals the BF16 unit flushes
///   (≤ 2⁻¹²¹(1 + ‖x‖ + ‖c‖)); the kernel uses `(2⁻⁶ + 2⁻¹²)‖x‖‖c‖ + 2⁻²¹(‖x‖² + ‖c‖²) + 2⁻¹¹⁰(1 + ‖x‖ + ‖c‖)`.
/// A cosine score `−x·c` has the same bounds without the squared norms.
///
/// The automatic search screens with 8-bit quads, with BF16 pairs when the codes rule the 8-bit scales out, and
/// hands the plain kernel any row a screen cannot serve: a non-finite or out-of-range row, or more than
/// ``capacity`` codes within the bound (data far from the origin relative to its spread).
extension NearestCodeKernel {
    /// The low-precision format of a screen.
    enum ScreenFormat: Sendable {
        case bf16, int8
        var code: Int32 { self == .int8 ? Int32(VQ_SCREEN_I8) : Int32(VQ_SCREEN_BF16) }
    }

    /// How the search is carried out; `.automatic` screens with 8-bit quads at level 3 when the search is large
    /// enough to gain. `native: false` runs the portable emulation of a screen (tests).
    enum Screening: Sendable {
        case automatic, off
        case screen(ScreenFormat, native: Bool)
    }

    /// Candidate codes kept per row before it is handed to the plain search.
    static let capacity = 64

    /// Whether `.automatic` screens a search of `k` codes of depth `d`.
    static func screens(k: Int, d: Int) -> Bool {
        GEMM.level >= 3 && k >= 64 && d >= 16 && d <= GEMM.kc
    }

    /// The screened arg-min of `heads` searches at once — head `h`'s `n` rows at `x + h·n·d` against its `k` codes at
    /// `codes + h·k·d`, into `best`/`index` at `h·n` — in one parallel pass (no barrier between heads): fills every
    /// row it serves and returns the rows (`h·n + r`) left to the plain search, or `nil` when the codes themselves
    /// rule the screen out (a non-finite or out-of-range code in any head).
    static func screenedArgmin(
        x: UnsafePointer<Float>, n: Int, codes: UnsafePointer<Float>, k: Int, d: Int, heads: Int = 1, cosine: Int32,
        format: ScreenFormat, native: Bool, best: UnsafeMutablePointer<Float>, index: UnsafeMutablePointer<Int64>,
        squaredErrors: UnsafeMutablePointer<Double>? = nil
    ) -> [Int]? {
        precondition(d <= GEMM.kc && d > 0 && k > 0 && heads > 0, "screenedArgmin: d = \(d), k = \(k), heads = \(heads)")
        let mr = 12, nr = 32, cap = capacity, fmt = format.code, nat: Int32 = native ? 1 : 0
        let steps = Int(vq_screen_steps(fmt, Int64(d)))
        let rowPlanes = Int(vq_screen_row_planes(fmt)), codePlanes = Int(vq_screen_code_planes(fmt))
        let panels = (k + nr - 1) / nr, cstride = panels * nr
        let headTerms = codePlanes * cstride, headPacked = panels * steps * nr
        // Code terms per head: plane 0 the squared norms (as the plain search computes them), the rest from the packing.
        let ct = alignedFloats(heads * headTerms)
        defer { ct.deallocate() }
        ct.initialize(repeating: 0, count: heads * headTerms)
        let packedRaw = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, heads * headPacked) * 4, alignment: 64)
        let packed = packedRaw.bindMemory(to: UInt32.self, capacity: heads * headPacked)
        let codeOK = UnsafeMutablePointer<Int32>.allocate(capacity: heads * cstride)
        defer { packedRaw.deallocate(); codeOK.deallocate() }
        nonisolated(unsafe) let (px, pcodes, ppacked, pct, pok, pbest, pindex) = (x, codes, packed, ct, codeOK, best, index)
        nonisolated(unsafe) let psq = squaredErrors
        Threads.forRanges(heads * panels, minChunk: 8) { range in
            for t in range {
                let (hh, jp) = (t / panels, t % panels), cols = Swift.min(nr, k - jp * nr)
                let src = pcodes + (hh * k + jp * nr) * d, terms = pct + hh * headTerms + jp * nr
                sumOfSquares(rows: src, count: cols, d: d, into: terms)
                vq_screen_pack(fmt, nat, 1, cosine, src, Int64(d), Int64(cols), Int64(d), Int64(nr), terms,
                               ppacked + hh * headPacked + jp * steps * nr, terms, Int64(cstride), pok + hh * cstride + jp * nr)
            }
        }
        guard (0..<heads).allSatisfy({ hh in (0..<k).allSatisfy { codeOK[hh * cstride + $0] != 0 } }) else { return nil }
        var plain = [UInt8](repeating: 0, count: heads * n)
        let rowsPerTask = rowsPerTask(n, mr: mr), tasksPerHead = (n + rowsPerTask - 1) / rowsPerTask
        plain.withUnsafeMutableBufferPointer { pp in
            nonisolated(unsafe) let pplain = pp.baseAddress!
            Threads.forEach(heads * tasksPerHead) { task in
                let hh = task / tasksPerHead
                let r0 = (task % tasksPerHead) * rowsPerTask, rowsT = Swift.min(rowsPerTask, n - r0)
                // This head's rows, codes, packed codes, terms and outputs.
                let (px, pcodes) = (px + hh * n * d, pcodes + hh * k * d)
                let (ppacked, pct) = (ppacked + hh * headPacked, pct + hh * headTerms)
                let (pbest, pindex, pplain, psq) = (pbest + hh * n, pindex + hh * n, pplain + hh * n, psq.map { $0 + hh * n })
                let groups = (rowsT + mr - 1) / mr, slots = groups * mr
                let aRaw = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, steps * mr) * 4, alignment: 64)
                let aPack = aRaw.bindMemory(to: UInt32.self, capacity: steps * mr)
                let rt = alignedFloats(slots * rowPlanes)
                let count = UnsafeMutablePointer<Int32>.allocate(capacity: slots)
                let cand = UnsafeMutablePointer<Int32>.allocate(capacity: slots * cap)
                // Scratch for the (row, code) pairs to rescore: at most every listed entry of a group.
                let pairRow = UnsafeMutablePointer<Int32>.allocate(capacity: mr * cap * 2)
                let pairScore = UnsafeMutablePointer<Float>.allocate(capacity: mr * cap)
                // Each group's lower bounds (12 × k) stay in cache until one compare-and-compress pass per row keeps
                // the candidates.
                let lows = alignedFloats(mr * panels * nr + mr * 16)
                let minup = lows + mr * panels * nr
                defer {
                    aRaw.deallocate(); rt.deallocate(); count.deallocate(); cand.deallocate()
                    pairRow.deallocate(); pairScore.deallocate(); lows.deallocate()
                }
                rt.initialize(repeating: 0, count: slots * rowPlanes)
                // One row group at a time, from its float rows to its nearest codes: the rows are read while they are
                // in cache (the next group's are fetched during this group's tiles), and every code panel is scored.
                let rowBytes = mr * d * 4, perPanel = (rowBytes / panels + 63) & ~63
                /// Rescores group `g`'s listed codes (its rows' state stays in the task's slots).
                func finish(_ g: Int) {
                    let o = g * mr, rowsG = Swift.min(mr, rowsT - o)
                    vq_screen_finish(Int64(d), Int64(rowsG), px + (r0 + o) * d, rt + o, pcodes, pct, cosine, count + o, cand + o * cap,
                                     Int32(cap), pbest + r0 + o, pindex + r0 + o, pairRow, pairRow + mr * cap, pairScore)
                    // Each row's squared distance to its code, while both are in cache (rows left to the plain search are
                    // done after it).
                    if let psq {
                        vq_squared_differences_rows(GEMM.level, px + (r0 + o) * d, Int64(d), pcodes, pindex + r0 + o, Int64(d),
                                                    Int64(rowsG), Int64(d), psq + r0 + o)
                    }
                }
                for g in 0..<groups {
                    let o = g * mr, rowsG = Swift.min(mr, rowsT - o)
                    let xg = px + (r0 + o) * d
                    sumOfSquares(rows: xg, count: rowsG, d: d, into: rt + o)
                    vq_screen_pack(fmt, nat, 0, cosine, xg, Int64(d), Int64(rowsG), Int64(d), Int64(mr), rt + o, aPack, rt + o,
                                   Int64(slots), count + o)
                    // `ok` 1 → an empty list (0); a row the screen cannot bound goes to the plain search (−1).
                    for i in o..<(o + mr) { count[i] = i - o < rowsG && count[i] != 0 ? 0 : -1 }
                    let next = g + 1 < groups ? xg + mr * d : nil
                    minup.initialize(repeating: .infinity, count: mr * 16)
                    for jp in 0..<panels {
                        // The next group's rows, a slice every eighth panel (fetched while the tiles run).
                        if let next, jp % 8 == 0, jp * perPanel < rowBytes {
                            vq_prefetch_l2(UnsafeRawPointer(next) + jp * perPanel, Int64(Swift.min(8 * perPanel, rowBytes - jp * perPanel)))
                        }
                        vq_screen_tile(fmt, nat, Int64(steps), aPack, ppacked + jp * steps * nr,
                                       Int32(rowsG), Int32(Swift.min(nr, k - jp * nr)), rt + o, Int64(slots),
                                       pct + jp * nr, Int64(cstride), cosine, Int64(jp * nr), lows, Int64(panels * nr),
                                       minup, count + o)
                    }
                    vq_screen_collect(nat, Int32(rowsG), Int64(k), lows, Int64(panels * nr), minup, count + o, cand + o * cap, Int32(cap))
                    for i in 0..<rowsG {
                        pbest[r0 + o + i] = .infinity
                        pindex[r0 + o + i] = 0
                        if count[o + i] < 0 { pplain[r0 + o + i] = 1 }
                    }
                    // The listed codes' float rows are fetched now and rescored after the next group's tiles.
                    vq_screen_prefetch_candidates(pcodes, Int64(d), Int32(rowsG), count + o, cand + o * cap, Int32(cap))
                    if g > 0 { finish(g - 1) }
                }
                if groups > 0 { finish(groups - 1) }
            }
        }
        return plain.indices.filter { plain[$0] != 0 }
    }
}
