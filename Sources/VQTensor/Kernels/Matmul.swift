import CVQKernels

/// Blocked, packed, multi-threaded single-precision GEMM around the C micro-kernels
/// (Goto & van de Geijn, *Anatomy of High-Performance Matrix Multiplication*, ACM TOMS 2008).
///
/// Loop order: column blocks of `nc`, depth blocks of `kc` (B packed once per block and shared),
/// row blocks of `mc` (A packed per task), then NR×MR micro-tiles. Every element of C is computed by
/// one task with the same depth order, so results are bit-identical for any thread count.
enum GEMM {
    static let level: Int32 = vq_cpu_level()
    static let mr = Int(vq_gemm_mr(level))
    static let nr = Int(vq_gemm_nr(level))
    /// Depth of a packed block: the B micro-panel (kc × NR) stays in L1.
    static let kc = 256
    /// Rows of a packed A block (L2-resident); measured best on this machine kind (AVX2: 144 rows).
    static let mc = mr * (level >= 2 ? 8 : 24)
    static let nc = 4096

    /// Whether a product takes one of the narrow paths (few columns, a tiny depth, few rows) rather than the
    /// packed tiles.
    static func narrow(m: Int, n: Int, k: Int) -> Bool { (k >= 16 && n <= 8) || (k <= 8 && n >= 16) || (k >= 16 && m <= 8 && n >= 16) }

    /// C[m×n] (row stride ldc) = A·B, or C += A·B when `accumulate`, or C = bias + A·B with a `bias` of `n`
    /// (each element starts from its column's bias and the product accumulates into it — the same values as
    /// filling C with the bias and accumulating, without a pass over C).
    /// Element (i, p) of A is `a[i*ars + p*acs]`; element (p, j) of B is `b[p*brs + j*bcs]`.
    /// With `columnBlocks`, C's columns come in blocks of `width`, block `q` starting at `c + q·stride`
    /// (a projection written straight into a per-head layout); A is packed once for all blocks, and every
    /// element equals what one product per block computes.
    /// `rowsDone` is called once for each range of rows whose every column is final — by the thread that
    /// computed them while they are in its cache when each task owns whole rows, else once for all rows at
    /// the end — so that a per-row pass (a normalisation) needs no trip through memory.
    static func gemm(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, ars: Int, acs: Int,
        b: UnsafePointer<Float>, brs: Int, bcs: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool,
        bias: UnsafePointer<Float>? = nil, columnBlocks: (width: Int, stride: Int)? = nil,
        rowsDone: ((Range<Int>) -> Void)? = nil
    ) {
        let packedTiles = k > 0 && !Self.narrow(m: m, n: n, k: k)
        if let rowsDone, !(n <= nc && packedTiles && (columnBlocks == nil || columnBlocks!.width % Self.nr == 0)) {
            // Rows are not owned by one task on these paths: the pass runs once, after the product.
            gemm(m: m, n: n, k: k, a: a, ars: ars, acs: acs, b: b, brs: brs, bcs: bcs, c: c, ldc: ldc, accumulate: accumulate,
                 bias: bias, columnBlocks: columnBlocks)
            if m > 0 { rowsDone(0..<m) }
            return
        }
        precondition(!(accumulate && bias != nil), "gemm: a bias starts C; it cannot accumulate (m \(m), n \(n), k \(k))")
        guard m > 0, n > 0 else { return }
        if let blocks = columnBlocks, !(packedTiles && blocks.width % Self.nr == 0) {
            // One product per block (the blocks' own paths and edge tiles).
            precondition(blocks.width > 0 && n % blocks.width == 0, "gemm: column blocks of \(blocks.width) for n \(n)")
            for q in 0..<(n / blocks.width) {
                gemm(m: m, n: blocks.width, k: k, a: a, ars: ars, acs: acs, b: b + q * blocks.width * bcs, brs: brs, bcs: bcs,
                     c: c + q * blocks.stride, ldc: ldc, accumulate: accumulate, bias: bias.map { $0 + q * blocks.width })
            }
            return
        }
        if let bias, !packedTiles, !(k <= 8 && n >= 16 && k > 0) {
            // The narrow paths accumulate into C: start it from the bias.
            for i in 0..<m { (c + i * ldc).update(from: bias, count: n) }
            if k == 0 { return }
            gemm(m: m, n: n, k: k, a: a, ars: ars, acs: acs, b: b, brs: brs, bcs: bcs, c: c, ldc: ldc, accumulate: true)
            return
        }
        if k == 0 {
            if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        // Skinny products (a projection to or from a few channels, e.g. FSQ's 4): the NR-wide micro-tiles
        // would compute mostly padding, so each output is one vectorised dot product instead.
        if k >= 16 && n <= 8 {
            skinny(m: m, n: n, k: k, a: a, ars: ars, acs: acs, b: b, brs: brs, bcs: bcs, c: c, crs: ldc, ccs: 1, accumulate: accumulate)
            return
        }
        if k <= 8 && n >= 16 {
            tinyDepth(m: m, n: n, k: k, a: a, ars: ars, acs: acs, b: b, brs: brs, bcs: bcs, c: c, ldc: ldc, accumulate: accumulate, bias: bias)
            return
        }
        if k >= 16 && m <= 8 && n >= 16 && acs == 1 && brs == 1 && bcs != 1 {
            // A few rows against a transposed B (a weight gradient `dY·Xᵀ` over long rows): Cᵀ = Bᵀ·Aᵀ is rows of
            // Bᵀ against the few rows of A, each a contiguous dot product (fewRows would gather B's strided rows).
            skinny(m: n, n: m, k: k, a: b, ars: bcs, acs: 1, b: a, brs: 1, bcs: ars, c: c, crs: 1, ccs: ldc, accumulate: accumulate)
            return
        }
        if k >= 16 && m <= 8 && n >= 16 {
            fewRows(m: m, n: n, k: k, a: a, ars: ars, acs: acs, b: b, brs: brs, bcs: bcs, c: c, ldc: ldc, accumulate: accumulate)
            return
        }
        packed(m: m, n: n, k: k, a: a, ars: ars, acs: acs, b: b, brs: brs, bcs: bcs, c: c, ldc: ldc, accumulate: accumulate,
               bias: bias, columnBlocks: columnBlocks, rowsDone: rowsDone)
    }

    /// The packed path of ``gemm(m:n:k:a:ars:acs:b:brs:bcs:c:ldc:accumulate:bias:columnBlocks:rowsDone:)``: for each
    /// column block of `nc` and depth block of `kc`, B is packed once into NR-wide panels (shared by every task), then
    /// tasks — row blocks of `mc`, times groups of panels when there are few row blocks — pack their rows of A into
    /// MR-high panels and run the micro-kernel over their tiles.
    private static func packed(
        m: Int, n: Int, k: Int, a: UnsafePointer<Float>, ars: Int, acs: Int, b: UnsafePointer<Float>, brs: Int, bcs: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, bias: UnsafePointer<Float>?,
        columnBlocks: (width: Int, stride: Int)?, rowsDone: ((Range<Int>) -> Void)?
    ) {
        let nr = Self.nr, kc = Self.kc, mc = Self.mc
        let bPack = alignedFloats(kc * (Swift.min(n, nc) + nr))
        defer { bPack.deallocate() }
        var jc = 0
        while jc < n {
            let nb = Swift.min(nc, n - jc)
            let panels = (nb + nr - 1) / nr
            var p0 = 0
            while p0 < k {
                let kb = Swift.min(kc, k - p0)
                let first = p0 == 0 && !accumulate
                packB(b + p0 * brs + jc * bcs, brs: brs, bcs: bcs, kb: kb, nb: nb, into: bPack)
                let mBlocks = (m + mc - 1) / mc
                // Small products run on the calling thread: dispatch would cost more than it saves.
                let threads = Double(m) * Double(nb) * Double(kb) < 1.5e6 ? 1 : Threads.count
                // A task owns whole rows (every panel) when there are row blocks enough, or when a row pass follows.
                let groups = threads > 1 && rowsDone == nil ? Swift.max(1, Swift.min(panels, (2 * threads + mBlocks - 1) / mBlocks)) : 1
                let perGroup = (panels + groups - 1) / groups
                let tasks = mBlocks * groups
                nonisolated(unsafe) let (pa, pc, pbPack, pBias) = (a, c, UnsafePointer(bPack), bias)
                let (jc0, pp0) = (jc, p0)
                let body = { (task: Int) in
                    let (ib, g) = (task / groups, task % groups)
                    let i0 = ib * mc, mb = Swift.min(mc, m - i0)
                    let block = RowBlock(rows: i0..<(i0 + mb), panels: (g * perGroup)..<Swift.min(panels, (g + 1) * perGroup),
                                         column0: jc0, depth: kb, first: first)
                    tiles(block, a: pa + i0 * ars + pp0 * acs, ars: ars, acs: acs, bPack: pbPack, nb: nb, c: pc, ldc: ldc,
                          bias: first ? pBias : nil, columnBlocks: columnBlocks)
                    if let rowsDone, pp0 + kb == k { rowsDone(block.rows) }
                }
                if threads == 1 { for t in 0..<tasks { body(t) } } else { Threads.forEach(tasks, body) }
                p0 += kb
            }
            jc += nb
        }
    }

    /// Packs B's `kb × nb` block (element (p, j) at `b[p·brs + j·bcs]`) into NR-wide panels, zero-padded.
    private static func packB(_ b: UnsafePointer<Float>, brs: Int, bcs: Int, kb: Int, nb: Int, into bPack: UnsafeMutablePointer<Float>) {
        let nr = Self.nr, panels = (nb + nr - 1) / nr
        nonisolated(unsafe) let (pb, dst0) = (b, bPack)
        Threads.forRanges(panels, minChunk: Swift.max(8, 2048 / Swift.max(kb, 1))) { range in
            for jp in range {
                let dst = dst0 + jp * kb * nr
                let cols = Swift.min(nr, nb - jp * nr)
                if brs == 1 && bcs != 1 {
                    // Bᵀ stored row-major (a weight): each column of the panel is read contiguously.
                    vq_gemm_pack_a(pb + jp * nr * bcs, Int64(bcs), Int64(cols), Int64(kb), Int64(nr), dst)
                    continue
                }
                for p in 0..<kb {
                    let row = pb + p * brs + jp * nr * bcs
                    let d = dst + p * nr
                    if bcs == 1 {
                        d.update(from: row, count: cols)
                    } else {
                        for j in 0..<cols { d[j] = row[j * bcs] }
                    }
                    if cols < nr { (d + cols).update(repeating: 0, count: nr - cols) }
                }
            }
        }
    }

    /// One task of the packed path: rows `rows` of C against B panels `panels` of the current column block.
    struct RowBlock {
        let rows: Range<Int>
        let panels: Range<Int>
        let column0: Int
        let depth: Int
        /// The first depth block of a product that does not accumulate: tiles are written (or start from the bias).
        let first: Bool
    }

    /// Packs the block's rows of A (`a` at its first row and depth) into MR-high panels, then runs the micro-kernel
    /// over every tile; edge tiles go through a scratch tile.
    private static func tiles(_ blk: RowBlock, a: UnsafePointer<Float>, ars: Int, acs: Int, bPack: UnsafePointer<Float>, nb: Int,
                              c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, columnBlocks: (width: Int, stride: Int)?) {
        let mr = Self.mr, nr = Self.nr, kb = blk.depth, mb = blk.rows.count
        let rowPanels = (mb + mr - 1) / mr
        let aPack = alignedFloats(rowPanels * mr * kb + mr * nr)
        defer { aPack.deallocate() }
        let tile = aPack + rowPanels * mr * kb
        for ip in 0..<rowPanels {
            let dst = aPack + ip * kb * mr
            let rows = Swift.min(mr, mb - ip * mr)
            if acs == 1 {
                // Rows read contiguously (a strided gather per depth step touched a line per element).
                vq_gemm_pack_a(a + ip * mr * ars, Int64(ars), Int64(rows), Int64(kb), Int64(mr), dst)
            } else {
                for p in 0..<kb {
                    let d = dst + p * mr
                    let col = a + ip * mr * ars + p * acs
                    for i in 0..<rows { d[i] = col[i * ars] }
                    for i in rows..<mr { d[i] = 0 }
                }
            }
        }
        for jp in blk.panels {
            let cols = Swift.min(nr, nb - jp * nr)
            let bp = bPack + jp * kb * nr
            let col0 = blk.column0 + jp * nr
            let cBase = columnBlocks.map { c + (col0 / $0.width) * $0.stride + col0 % $0.width } ?? c + col0
            let biasRow = bias.map { $0 + col0 }
            for ip in 0..<rowPanels {
                let rows = Swift.min(mr, mb - ip * mr)
                let cptr = cBase + (blk.rows.lowerBound + ip * mr) * ldc
                let ap = aPack + ip * kb * mr
                if rows == mr && cols == nr {
                    if let biasRow {
                        vq_gemm_ukr_bias(level, Int64(kb), ap, bp, biasRow, cptr, Int64(ldc))
                    } else {
                        vq_gemm_ukr(level, Int64(kb), ap, bp, cptr, Int64(ldc), blk.first ? 0 : 1)
                    }
                    continue
                }
                vq_gemm_ukr(level, Int64(kb), ap, bp, tile, Int64(nr), 0)
                for i in 0..<rows {
                    let crow = cptr + i * ldc, trow = tile + i * nr
                    if let biasRow {
                        for j in 0..<cols { crow[j] = biasRow[j] + trow[j] }
                    } else if blk.first {
                        for j in 0..<cols { crow[j] = trow[j] }
                    } else {
                        for j in 0..<cols { crow[j] = crow[j] + trow[j] }
                    }
                }
            }
        }
    }
}

extension GEMM {
    /// C = A·B (or C += A·B) for `n ≤ 8` columns: the B columns are packed contiguously, every output
    /// element is one dot product over `k` in a fixed order (eight-lane partial sums, then the lanes, then
    /// the tail), computed by one thread — bit-identical for any thread count.
    static func skinny(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, ars: Int, acs: Int,
        b: UnsafePointer<Float>, brs: Int, bcs: Int,
        c: UnsafeMutablePointer<Float>, crs: Int, ccs: Int, accumulate: Bool
    ) {
        if acs != 1 && ars == 1 && m >= 32 {
            // A read across its rows (a weight gradient `dYᵀ·X`): stream A's rows instead of gathering a
            // strided column per output row.
            skinnyTransposedA(m: m, n: n, k: k, a: a, acs: acs, b: b, brs: brs, bcs: bcs, c: c, crs: crs, ccs: ccs, accumulate: accumulate)
            return
        }
        let bCols = alignedFloats(n * k)
        defer { bCols.deallocate() }
        for j in 0..<n {
            for p in 0..<k { bCols[j * k + p] = b[p * brs + j * bcs] }
        }
        nonisolated(unsafe) let (pa, pc, pb) = (a, c, UnsafePointer(bCols))
        let threads = Double(m) * Double(n) * Double(k) < 1.5e6 ? 1 : Threads.count
        let body = { (rows: Range<Int>) in
            let rowBuffer = acs == 1 ? nil : alignedFloats(k)
            defer { rowBuffer?.deallocate() }
            if rowBuffer == nil, vq_skinny_dots(level, Int64(rows.count), Int64(n), Int64(k), pa + rows.lowerBound * ars, Int64(ars), pb,
                                                pc + rows.lowerBound * crs, Int64(crs), Int64(ccs), accumulate ? 1 : 0) != 0 {
                return
            }
            for i in rows {
                let row: UnsafePointer<Float>
                if let rowBuffer {
                    for p in 0..<k { rowBuffer[p] = pa[i * ars + p * acs] }
                    row = UnsafePointer(rowBuffer)
                } else {
                    row = pa + i * ars
                }
                for j in 0..<n {
                    let v = dot(row, pb + j * k, k)
                    let out = pc + i * crs + j * ccs
                    out.pointee = accumulate ? out.pointee + v : v
                }
            }
        }
        if threads == 1 { body(0..<m) } else { Threads.forRanges(m, minChunk: 64, body) }
    }

    /// ``skinny(m:n:k:a:ars:acs:b:brs:bcs:c:crs:ccs:accumulate:)`` for an A whose rows are contiguous along
    /// `i` (`ars == 1`): `C[i, j] = Σ_p A[p·acs + i] · B[p, j]`, each product added over `p` in order (the
    /// few-rows kernel with the operands' roles swapped), each thread owning a range of `i` — bit-identical for any
    /// thread count.
    static func skinnyTransposedA(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, acs: Int,
        b: UnsafePointer<Float>, brs: Int, bcs: Int,
        c: UnsafeMutablePointer<Float>, crs: Int, ccs: Int, accumulate: Bool
    ) {
        nonisolated(unsafe) let (pa, pb, pc) = (a, b, c)
        let threads = Double(m) * Double(n) * Double(k) < 1.5e6 ? 1 : Threads.count
        let body = { (rows: Range<Int>) in
            let width = rows.count
            // acc[j][i - rows.lowerBound]: one contiguous strip per output column.
            let acc = alignedFloats(n * width)
            defer { acc.deallocate() }
            acc.update(repeating: 0, count: n * width)
            vq_transposed_a(level, Int64(width), Int64(n), Int64(k), pa + rows.lowerBound, Int64(acs), pb, Int64(brs), Int64(bcs), acc)
            for j in 0..<n {
                for i in 0..<width {
                    let out = pc + (rows.lowerBound + i) * crs + j * ccs
                    out.pointee = accumulate ? out.pointee + acc[j * width + i] : acc[j * width + i]
                }
            }
        }
        if threads == 1 { body(0..<m) } else { Threads.forRanges(m, minChunk: 64, body) }
    }

    /// C = A·B (or C += A·B) for a depth `k ≤ 8`: each row of C is `Σ_p A[i, p] · B[p, :]`, each product added in
    /// the order of `p` (the level's vectors across the columns), threads splitting the rows.
    static func tinyDepth(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, ars: Int, acs: Int,
        b: UnsafePointer<Float>, brs: Int, bcs: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, bias: UnsafePointer<Float>? = nil
    ) {
        precondition(k <= 8, "tinyDepth: depth \(k) > 8")
        let bRows = alignedFloats(k * n + n)
        defer { bRows.deallocate() }
        for p in 0..<k {
            for j in 0..<n { bRows[p * n + j] = b[p * brs + j * bcs] }
        }
        // The starting row: the bias (C = bias + A·B), or zeros.
        let start = bRows + k * n
        for j in 0..<n { start[j] = bias?[j] ?? 0 }
        nonisolated(unsafe) let (pa, pc, pb) = (a, c, UnsafePointer(bRows))
        let threads = Double(m) * Double(n) * Double(k) < 1.5e6 ? 1 : Threads.count
        let body = { (rows: Range<Int>) in
            let done = vq_tiny_depth_rows(level, Int64(rows.count), Int64(n), Int64(k), pa + rows.lowerBound * ars, Int64(ars),
                                          Int64(acs), pb, pb + k * n, pc + rows.lowerBound * ldc, Int64(ldc), accumulate ? 1 : 0)
            assert(done != 0, "tinyDepth: the kernel runs at every level for a depth ≤ 8")
        }
        if threads == 1 { body(0..<m) } else { Threads.forRanges(m, minChunk: 64, body) }
    }

    /// C = A·B (or C += A·B) for `m ≤ 8` rows and a long depth (a weight gradient `Xᵀ·dY` of a projection
    /// to a few channels): B is streamed row by row and each row of C accumulates `A[i, p] · B[p, :]` in
    /// the order of `p` (added to C's value when `accumulate`), the threads splitting the columns — up to
    /// ``depthChunk(_:)`` rows of B. Past it the depth is cut into chunks of that many rows, each summed in order from 0,
    /// the chunks' sums then added in order (to C when `accumulate`), threads splitting the rows
    /// (``depthChunked(m:n:k:c:ldc:accumulate:partial:)``).
    static func fewRows(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, ars: Int, acs: Int,
        b: UnsafePointer<Float>, brs: Int, bcs: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool
    ) {
        nonisolated(unsafe) let (pa, pb, pc) = (a, b, c)
        if bcs == 1 && k > depthChunk(k) {
            depthChunked(m: m, n: n, k: k, c: c, ldc: ldc, accumulate: accumulate) { rows, acc in
                vq_few_rows(level, Int64(m), Int64(n), Int64(rows.count), pa + rows.lowerBound * acs, Int64(ars), Int64(acs),
                            pb + rows.lowerBound * brs, Int64(brs), acc)
            }
            return
        }
        let threads = Double(m) * Double(n) * Double(k) < 1.5e6 ? 1 : Threads.count
        let body = { (cols: Range<Int>) in
            let w = cols.count
            let acc = alignedFloats(m * w)
            defer { acc.deallocate() }
            for i in 0..<m {
                for j in 0..<w { acc[i * w + j] = accumulate ? pc[i * ldc + cols.lowerBound + j] : 0 }
            }
            let row = bcs == 1 ? nil : alignedFloats(w)
            defer { row?.deallocate() }
            // B's rows read in place, or gathered one at a time when its columns are strided (the same sums).
            if let row {
                for p in 0..<k {
                    for j in 0..<w { row[j] = pb[p * brs + (cols.lowerBound + j) * bcs] }
                    vq_few_rows(level, Int64(m), Int64(w), 1, pa + p * acs, Int64(ars), Int64(acs), row, 0, acc)
                }
            } else {
                vq_few_rows(level, Int64(m), Int64(w), Int64(k), pa, Int64(ars), Int64(acs), pb + cols.lowerBound, Int64(brs), acc)
            }
            for i in 0..<m {
                for j in 0..<w { pc[i * ldc + cols.lowerBound + j] = acc[i * w + j] }
            }
        }
        // Column chunks of at least 64 (a multiple of 8): fixed by n, so the result does not depend on threads.
        if threads == 1 { body(0..<n) } else { Threads.forRanges(n, minChunk: 64, body) }
    }

    /// `Σ a[p]·b[p]` in a fixed order: two eight-lane accumulators over blocks of 16, one over a block of 8,
    /// the lanes summed, then the tail.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ k: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var p = 0
        while p + 16 <= k {
            acc0 += ra.loadUnaligned(fromByteOffset: p * 4, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: p * 4, as: SIMD8<Float>.self)
            acc1 += ra.loadUnaligned(fromByteOffset: p * 4 + 32, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: p * 4 + 32, as: SIMD8<Float>.self)
            p += 16
        }
        if p + 8 <= k {
            acc0 += ra.loadUnaligned(fromByteOffset: p * 4, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: p * 4, as: SIMD8<Float>.self)
            p += 8
        }
        var s = (acc0 + acc1).sum()
        while p < k {
            s += a[p] * b[p]
            p += 1
        }
        return s
    }
}

/// A 64-byte aligned float buffer (cache-line aligned packed panels: no load splits a line).
@inline(__always) func alignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, count) * 4, alignment: 64).bindMemory(to: Float.self, capacity: count)
}
