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
    static let mc = mr * (level == 2 ? 8 : 24)
    static let nc = 4096

    /// C[m×n] (row stride ldc) = A·B, or C += A·B when `accumulate`.
    /// Element (i, p) of A is `a[i*ars + p*acs]`; element (p, j) of B is `b[p*brs + j*bcs]`.
    static func gemm(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, ars: Int, acs: Int,
        b: UnsafePointer<Float>, brs: Int, bcs: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool
    ) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        let mr = Self.mr, nr = Self.nr, kc = Self.kc, mc = Self.mc
        let bPack = alignedFloats(kc * (Swift.min(n, nc) + nr))
        defer { bPack.deallocate() }
        nonisolated(unsafe) let (pa, pb, pc, pbPack) = (a, b, c, bPack)
        var jc = 0
        while jc < n {
            let nb = Swift.min(nc, n - jc)
            let panels = (nb + nr - 1) / nr
            var p0 = 0
            while p0 < k {
                let kb = Swift.min(kc, k - p0)
                let first = p0 == 0 && !accumulate
                // Pack B[p0..<p0+kb, jc..<jc+nb] into NR-wide panels, zero-padded.
                let (jc0, pp0) = (jc, p0)
                Threads.forRanges(panels, minChunk: Swift.max(8, 2048 / Swift.max(kb, 1))) { range in
                    for jp in range {
                        let dst = pbPack + jp * kb * nr
                        let cols = Swift.min(nr, nb - jp * nr)
                        for p in 0..<kb {
                            let row = pb + (pp0 + p) * brs + (jc0 + jp * nr) * bcs
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
                let mBlocks = (m + mc - 1) / mc
                // Small products run on the calling thread: dispatch would cost more than it saves.
                let threads = Double(m) * Double(nb) * Double(kb) < 1.5e6 ? 1 : Threads.count
                let groups = threads > 1 ? Swift.max(1, Swift.min(panels, (2 * threads + mBlocks - 1) / mBlocks)) : 1
                let perGroup = (panels + groups - 1) / groups
                let tasks = mBlocks * groups
                let run = { (body: (Int) -> Void) in
                    if threads == 1 { for t in 0..<tasks { body(t) } } else { Threads.forEach(tasks, body) }
                }
                run { task in
                    let ib = task / groups, g = task % groups
                    let i0 = ib * mc
                    let mb = Swift.min(mc, m - i0)
                    let rowPanels = (mb + mr - 1) / mr
                    let aPack = alignedFloats(rowPanels * mr * kb + mr * nr)
                    defer { aPack.deallocate() }
                    let tile = aPack + rowPanels * mr * kb
                    // Pack A[i0..<i0+mb, p0..<p0+kb] into MR-high panels, zero-padded.
                    for ip in 0..<rowPanels {
                        let dst = aPack + ip * kb * mr
                        let rows = Swift.min(mr, mb - ip * mr)
                        for p in 0..<kb {
                            let d = dst + p * mr
                            let col = pa + (i0 + ip * mr) * ars + (pp0 + p) * acs
                            for i in 0..<rows { d[i] = col[i * ars] }
                            for i in rows..<mr { d[i] = 0 }
                        }
                    }
                    let jpEnd = Swift.min(panels, (g + 1) * perGroup)
                    var jp = g * perGroup
                    while jp < jpEnd {
                        let cols = Swift.min(nr, nb - jp * nr)
                        let bp = pbPack + jp * kb * nr
                        for ip in 0..<rowPanels {
                            let rows = Swift.min(mr, mb - ip * mr)
                            let cptr = pc + (i0 + ip * mr) * ldc + jc0 + jp * nr
                            let ap = aPack + ip * kb * mr
                            if rows == mr && cols == nr {
                                vq_gemm_ukr(level, Int64(kb), ap, bp, cptr, Int64(ldc), first ? 0 : 1)
                            } else {
                                vq_gemm_ukr(level, Int64(kb), ap, bp, tile, Int64(nr), 0)
                                for i in 0..<rows {
                                    let crow = cptr + i * ldc, trow = tile + i * nr
                                    if first {
                                        for j in 0..<cols { crow[j] = trow[j] }
                                    } else {
                                        for j in 0..<cols { crow[j] = crow[j] + trow[j] }
                                    }
                                }
                            }
                        }
                        jp += 1
                    }
                }
                p0 += kb
            }
            jc += nb
        }
    }
}

/// A 64-byte aligned float buffer (cache-line aligned packed panels: no load splits a line).
@inline(__always) func alignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: Swift.max(1, count) * 4, alignment: 64).bindMemory(to: Float.self, capacity: count)
}
