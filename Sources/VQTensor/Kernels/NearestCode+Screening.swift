import CVQKernels

/// Exact nearest-code search screened with low-precision dot products, on every machine with an integer dot
/// product: VNNI / BF16 at level 3, AVX2 (or AVX-512BW) byte products at levels 1–2, SSE2 16-bit pairs at level 0
/// on x86-64, SDOT on arm64 with the dot-product extension.
///
/// A screening pass computes every row's scores from cheap dot products — 8-bit integer quads (VPDPBUSD, four
/// times the products per instruction of the float tile), BF16 pairs (VDPBF16PS, twice), or on AVX2 7-bit rows
/// against 8-bit codes (VPMADDUBSW + VPMADDWD, twice the products per cycle of the FMA tile) — together with a
/// bound `B` on how far each can be from the float score the plain search computes. Per row it keeps the least
/// upper bound `U = min (s̃ + B)` and every code whose lower bound `s̃ − B` is ≤ `U`: the float nearest code is
/// always among them, since its float score is at most `U` and at least its own lower bound. Those few codes
/// (one to twenty a row on the benchmarks) go through a second filter of the same form when a row has several:
/// float dot products summed lane-wise, within `d·2⁻²³‖x‖‖c‖` of the chains' (Higham §3.1, any order), leave about
/// one; those are rescored with the float tile's own arithmetic (one fused multiply-add chain per dot product,
/// which needs transposes to run eight at a time), in code order with strict improvement, so indices and scores are
/// **bit-identical to the plain search**, ties included — the screens only decide which codes need the float
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
/// - **7-bit rows** (AVX2): the same with `sₓ = max|xᵢ| / 63` (`x̂ᵢ ∈ [−63, 63]`, offset by 64 to the unsigned
///   operand): VPMADDUBSW's 16-bit pair sums stay ≤ 2 · 127 · 127 < 2¹⁵, so it never saturates and the integer
///   sums are exact as VPDPBUSD's; the bound above holds with this scale, about 1.5 times as wide. With 7-bit codes
///   too (`s_c = max|cᵢ| / 63`, the pairs ≤ 2 · 127 · 63, so two depth steps add in 16 bits) about twice as wide.
/// - **16-bit pairs** (SSE2 PMADDWD): 8-bit values (±127, no offset) held in 16 bits — the 8-bit bound as it is.
/// - **BF16**: rounding a factor moves it by at most 2⁻⁸ of itself, so the products differ by ≤ (2⁻⁷ + 2⁻¹⁶)·S and
///   `|s̃ − s| ≤ (2⁻⁶ + 2⁻¹³)‖x‖‖c‖` plus the roundings and the denormals the BF16 unit flushes
///   (≤ 2⁻¹²¹(1 + ‖x‖ + ‖c‖)); the kernel uses `(2⁻⁶ + 2⁻¹²)‖x‖‖c‖ + 2⁻²¹(‖x‖² + ‖c‖²) + 2⁻¹¹⁰(1 + ‖x‖ + ‖c‖)`.
/// A cosine score `−x·c` has the same bounds without the squared norms.
///
/// The automatic search screens with the machine's integer format (``automaticFormats(k:d:)``), with BF16 pairs when
/// the codes rule the integer scales out (level 3), and
/// hands the plain kernel any row a screen cannot serve: a non-finite or out-of-range row, or more than
/// ``capacity`` codes within the bound (data far from the origin relative to its spread).
extension NearestCodeKernel {
    /// The low-precision format of a screen: BF16 pairs, 8-bit quads (VPDPBUSD), 7-bit query rows against 8-bit
    /// codes (VPMADDUBSW + VPMADDWD, the AVX2 form: 7 bits keep its 16-bit pair sums from saturating; SDOT on
    /// AArch64), 8-bit values in 16-bit pairs (PMADDWD, baseline x86-64), or 7-bit rows against 7-bit codes (AVX2:
    /// two depth steps summed in 16 bits, a third fewer multiply-unit instructions, a bound about 1.3 times as
    /// wide — the automatic choice at level 1: the second filter makes the wider lists cheap).
    enum ScreenFormat: Sendable, CaseIterable {
        case bf16, int8, int7, int16, int7x7
        var code: Int32 {
            switch self {
            case .bf16: Int32(VQ_SCREEN_BF16)
            case .int8: Int32(VQ_SCREEN_I8)
            case .int7: Int32(VQ_SCREEN_I7)
            case .int16: Int32(VQ_SCREEN_I16)
            case .int7x7: Int32(VQ_SCREEN_I7X7)
            }
        }
        /// Whether this machine's instructions run the format (else only the emulation runs): BF16 at level 3, 8-bit
        /// quads wherever VNNI is (level 3, some level-2 CPUs), 7-bit rows at x86 levels ≥ 1 and on AArch64 with SDOT,
        /// 16-bit pairs on every x86-64 (SSE2).
        var runsNatively: Bool { vq_screen_native(code) != 0 }
    }

    /// How the search is carried out; `.automatic` screens when the search is large enough to gain — 8-bit quads
    /// (then BF16 pairs) at level 3, 8-bit quads on a level-2 CPU with VNNI, 7-bit rows and codes at level 1, 7-bit
    /// rows at level 2 without VNNI and on arm64 with SDOT, 16-bit pairs at level 0 on x86-64.
    /// `native: false` runs the portable emulation of a screen (tests).
    enum Screening: Sendable {
        case automatic, off
        case screen(ScreenFormat, native: Bool)
    }

    /// Candidate codes kept per row before it is handed to the plain search.
    static let capacity = 256

    /// The formats `.automatic` tries, in order, for a search of `k` codes of depth `d` (none: the float search).
    static func automaticFormats(k: Int, d: Int) -> [ScreenFormat] {
        guard k >= 64 && d >= 16 && d <= GEMM.kc else { return [] }
        if GEMM.level >= 3 { return [.int8, .bf16] }
        if GEMM.level == 1 { return [.int7x7] }
        return [ScreenFormat.int8, .int7, .int16].first { $0.runsNatively }.map { [$0] } ?? []
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
        let plan = ScreenPlan(n: n, k: k, d: d, heads: heads, cosine: cosine, format: format, native: native)
        let packed = ScreenCodes(plan, codes: codes)
        defer { packed.deallocate() }
        guard packed.allCodesBounded else { return nil }
        var plain = [UInt8](repeating: 0, count: heads * n)
        let rowsPerTask = rowsPerTask(n, mr: plan.mr), tasksPerHead = (n + rowsPerTask - 1) / rowsPerTask
        plain.withUnsafeMutableBufferPointer { pp in
            nonisolated(unsafe) let (px, pcodes, pbest, pindex, pplain, psq) = (x, codes, best, index, pp.baseAddress!, squaredErrors)
            Threads.forEach(heads * tasksPerHead) { task in
                let hh = task / tasksPerHead
                let r0 = (task % tasksPerHead) * rowsPerTask, rows = Swift.min(rowsPerTask, n - r0)
                // This head's rows, codes, packed codes and outputs, from row r0 on.
                let t = ScreenTask(plan, rows: rows, x: px + (hh * n + r0) * d, codes: pcodes + hh * k * d, packed: packed, head: hh,
                                   best: pbest + hh * n + r0, index: pindex + hh * n + r0, plain: pplain + hh * n + r0,
                                   squaredErrors: psq.map { $0 + hh * n + r0 })
                defer { t.deallocate() }
                // One row group at a time, from its float rows to its nearest codes: the rows are read while they are
                // in cache (the next group's are fetched during this group's tiles), and the listed codes' float rows
                // are fetched after its tiles and rescored after the next group's.
                for g in 0..<t.groups {
                    t.screen(group: g)
                    if g > 0 { t.finish(group: g - 1) }
                }
                if t.groups > 0 { t.finish(group: t.groups - 1) }
            }
        }
        return plain.indices.filter { plain[$0] != 0 }
    }

    /// The geometry of one screened search: the tile (12 rows × 32 codes), the packed layouts and the formats.
    struct ScreenPlan {
        let n: Int, k: Int, d: Int, heads: Int
        let cosine: Int32, fmt: Int32, nat: Int32
        let mr = 12, nr = 32, cap = NearestCodeKernel.capacity
        let steps: Int, rowPlanes: Int, codePlanes: Int, panels: Int, cstride: Int, headTerms: Int, headPacked: Int

        init(n: Int, k: Int, d: Int, heads: Int, cosine: Int32, format: ScreenFormat, native: Bool) {
            (self.n, self.k, self.d, self.heads, self.cosine) = (n, k, d, heads, cosine)
            (fmt, nat) = (format.code, native ? 1 : 0)
            steps = Int(vq_screen_steps(fmt, Int64(d)))
            rowPlanes = Int(vq_screen_row_planes(fmt))
            codePlanes = Int(vq_screen_code_planes(fmt))
            panels = (k + nr - 1) / nr
            // The stride of the code term planes and of a group's rows of lower bounds (``ldlow``), one cache line past
            // the codes: at a multiple of 4 KiB (1,024 or 8,192 codes) the epilogue's six planes and twelve rows would
            // share an L1 set (4K aliasing; a depth-64 level-0 tile ran 1.39× slower).
            cstride = panels * nr + 16
            headTerms = codePlanes * cstride
            headPacked = panels * steps * nr
        }

        /// The stride of a group's rows of lower bounds: the term planes' (`cstride`), for the same reason.
        var ldlow: Int { cstride }
    }

    /// Every head's codes packed for the screening tiles, with their term planes (plane 0: the squared norms, as the
    /// plain search computes them; the rest from the packing) and whether the screen can bound each code.
    struct ScreenCodes: @unchecked Sendable {
        // @unchecked: buffers written once by the packing pass, then only read by the tasks.
        let terms: UnsafeMutablePointer<Float>
        let packed: UnsafeMutablePointer<UInt32>
        let bounded: UnsafeMutablePointer<Int32>
        private let packedRaw: UnsafeMutableRawPointer
        let allCodesBounded: Bool

        init(_ p: ScreenPlan, codes: UnsafePointer<Float>) {
            terms = alignedFloats(p.heads * p.headTerms)
            terms.initialize(repeating: 0, count: p.heads * p.headTerms)
            packedRaw = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, p.heads * p.headPacked) * 4, alignment: 64)
            packed = packedRaw.bindMemory(to: UInt32.self, capacity: p.heads * p.headPacked)
            bounded = UnsafeMutablePointer<Int32>.allocate(capacity: p.heads * p.cstride)
            nonisolated(unsafe) let (pcodes, ppacked, pterms, pok) = (codes, packed, terms, bounded)
            Threads.forRanges(p.heads * p.panels, minChunk: 8) { range in
                for t in range {
                    let (hh, jp) = (t / p.panels, t % p.panels), cols = Swift.min(p.nr, p.k - jp * p.nr)
                    let src = pcodes + (hh * p.k + jp * p.nr) * p.d, planes = pterms + hh * p.headTerms + jp * p.nr
                    sumOfSquares(rows: src, count: cols, d: p.d, into: planes)
                    vq_screen_pack(p.fmt, p.nat, 1, p.cosine, src, Int64(p.d), Int64(cols), Int64(p.d), Int64(p.nr), planes,
                                   ppacked + hh * p.headPacked + jp * p.steps * p.nr, planes, Int64(p.cstride),
                                   pok + hh * p.cstride + jp * p.nr)
                }
            }
            allCodesBounded = (0..<p.heads).allSatisfy { hh in (0..<p.k).allSatisfy { pok[hh * p.cstride + $0] != 0 } }
        }

        func deallocate() {
            terms.deallocate()
            packedRaw.deallocate()
            bounded.deallocate()
        }
    }

    /// One task of the screened search: `rows` rows of one head (from row r0), its scratch, and the two steps of a
    /// row group — the screening tiles over every code panel, then the rescoring of the codes they listed.
    struct ScreenTask {
        let p: ScreenPlan, rows: Int, groups: Int, slots: Int
        let x: UnsafePointer<Float>, codes: UnsafePointer<Float>
        let packed: UnsafeMutablePointer<UInt32>, terms: UnsafeMutablePointer<Float>
        let best: UnsafeMutablePointer<Float>, index: UnsafeMutablePointer<Int64>, plain: UnsafeMutablePointer<UInt8>
        let squaredErrors: UnsafeMutablePointer<Double>?
        // Scratch: the packed row group, the rows' term planes, each row's candidate list, the (row, code) pairs to
        // rescore (at most every listed entry of a group), and a group's lower bounds (12 × k), which stay in cache
        // until one compare-and-compress pass per row keeps the candidates.
        let aRaw: UnsafeMutableRawPointer, aPack: UnsafeMutablePointer<UInt32>, rt: UnsafeMutablePointer<Float>
        let count: UnsafeMutablePointer<Int32>, cand: UnsafeMutablePointer<Int32>
        let pairRow: UnsafeMutablePointer<Int32>, pairScore: UnsafeMutablePointer<Float>
        let lows: UnsafeMutablePointer<Float>, minup: UnsafeMutablePointer<Float>
        /// Bytes of a row group, and the slice of the next group's rows fetched with each code panel.
        let rowBytes: Int, perPanel: Int

        init(_ p: ScreenPlan, rows: Int, x: UnsafePointer<Float>, codes: UnsafePointer<Float>, packed: ScreenCodes, head: Int,
             best: UnsafeMutablePointer<Float>, index: UnsafeMutablePointer<Int64>, plain: UnsafeMutablePointer<UInt8>,
             squaredErrors: UnsafeMutablePointer<Double>?) {
            (self.p, self.rows, self.x, self.codes) = (p, rows, x, codes)
            (self.packed, terms) = (packed.packed + head * p.headPacked, packed.terms + head * p.headTerms)
            (self.best, self.index, self.plain, self.squaredErrors) = (best, index, plain, squaredErrors)
            groups = (rows + p.mr - 1) / p.mr
            slots = groups * p.mr
            aRaw = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, p.steps * p.mr) * 4, alignment: 64)
            aPack = aRaw.bindMemory(to: UInt32.self, capacity: p.steps * p.mr)
            rt = alignedFloats(slots * p.rowPlanes)
            rt.initialize(repeating: 0, count: slots * p.rowPlanes)
            count = UnsafeMutablePointer<Int32>.allocate(capacity: slots)
            cand = UnsafeMutablePointer<Int32>.allocate(capacity: slots * p.cap)
            pairRow = UnsafeMutablePointer<Int32>.allocate(capacity: p.mr * p.cap * 2)
            pairScore = UnsafeMutablePointer<Float>.allocate(capacity: p.mr * p.cap)
            lows = alignedFloats(p.mr * p.ldlow + p.mr * 16)
            minup = lows + p.mr * p.ldlow
            rowBytes = p.mr * p.d * 4
            perPanel = (rowBytes / p.panels + 63) & ~63
        }

        func deallocate() {
            aRaw.deallocate(); rt.deallocate(); count.deallocate(); cand.deallocate()
            pairRow.deallocate(); pairScore.deallocate(); lows.deallocate()
        }

        /// Group `g`'s screening tiles over every code panel, and its candidate lists; rows the screen cannot serve
        /// are marked for the plain search.
        func screen(group g: Int) {
            let o = g * p.mr, rowsG = Swift.min(p.mr, rows - o)
            let xg = x + o * p.d
            sumOfSquares(rows: xg, count: rowsG, d: p.d, into: rt + o)
            vq_screen_pack(p.fmt, p.nat, 0, p.cosine, xg, Int64(p.d), Int64(rowsG), Int64(p.d), Int64(p.mr), rt + o, aPack, rt + o,
                           Int64(slots), count + o)
            // `ok` 1 → an empty list (0); a row the screen cannot bound goes to the plain search (−1).
            for i in o..<(o + p.mr) { count[i] = i - o < rowsG && count[i] != 0 ? 0 : -1 }
            let next = g + 1 < groups ? xg + p.mr * p.d : nil
            minup.initialize(repeating: .infinity, count: p.mr * 16)
            for jp in 0..<p.panels {
                // The next group's rows, a slice every eighth panel (fetched while the tiles run).
                if let next, jp % 8 == 0, jp * perPanel < rowBytes {
                    vq_prefetch_l2(UnsafeRawPointer(next) + jp * perPanel, Int64(Swift.min(8 * perPanel, rowBytes - jp * perPanel)))
                }
                vq_screen_tile(p.fmt, p.nat, Int64(p.steps), aPack, packed + jp * p.steps * p.nr,
                               Int32(rowsG), Int32(Swift.min(p.nr, p.k - jp * p.nr)), rt + o, Int64(slots),
                               terms + jp * p.nr, Int64(p.cstride), p.cosine, Int64(jp * p.nr), lows, Int64(p.ldlow),
                               minup, count + o)
            }
            vq_screen_collect(p.nat, Int32(rowsG), Int64(p.k), lows, Int64(p.ldlow), minup, count + o, cand + o * p.cap, Int32(p.cap))
            for i in 0..<rowsG {
                best[o + i] = .infinity
                index[o + i] = 0
                if count[o + i] < 0 { plain[o + i] = 1 }
            }
            // The listed codes' float rows are fetched now and rescored after the next group's tiles.
            vq_screen_prefetch_candidates(codes, Int64(p.d), Int32(rowsG), count + o, cand + o * p.cap, Int32(p.cap))
        }

        /// Rescores group `g`'s listed codes (its rows' state stays in the task's slots), and each row's squared
        /// distance to its code while both are in cache (rows left to the plain search are done after it).
        func finish(group g: Int) {
            let o = g * p.mr, rowsG = Swift.min(p.mr, rows - o)
            vq_screen_finish(Int64(p.d), Int64(rowsG), x + o * p.d, rt + o, codes, terms, p.cosine, count + o, cand + o * p.cap,
                             Int32(p.cap), best + o, index + o, pairRow, pairRow + p.mr * p.cap, pairScore)
            if let squaredErrors {
                vq_squared_differences_rows(GEMM.level, x + o * p.d, Int64(p.d), codes, index + o, Int64(p.d),
                                            Int64(rowsG), Int64(p.d), squaredErrors + o)
            }
        }
    }
}
