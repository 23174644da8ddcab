import CVQKernels

/// Products whose right-hand rows are shifted views of one buffer:
/// `C[i, j] = Σ_k A[i, k] · b[offsets[k] + j]` for `j < columns`.
///
/// A stride-1 convolution over a zero-padded, channel-major copy of its input is exactly this product
/// (row `k = (channel, kernel offset)` of the right-hand side is the padded input shifted by that offset), so
/// it runs on the GEMM micro-kernels without materialising the unfolded input (im2col) and without packing
/// the right-hand side: each micro-tile reads its rows in place (`vq_gemm_ukr_offsets`). Its input gradient
/// is the same product over the padded output gradient with the kernel flipped.
///
/// Every element of C is computed by one task, accumulated over `k` in order, so results are bit-identical
/// for any thread count.
enum ShiftedProduct {
    /// Tile handed to `store`: rows `row0..<row0+rows`, columns `column0..<column0+count` of C at
    /// `tile[i * stride + j]`.
    typealias Store = (_ row0: Int, _ rows: Int, _ column0: Int, _ count: Int, _ tile: UnsafePointer<Float>, _ stride: Int) -> Void

    /// Depth of one micro-kernel call (the A panel and the touched rows of `b` stay in L1/L2).
    static let depthBlock = 512
    /// Columns per task when C has few rows (one-row kernel).
    static let rowTile = 512

    /// The columns of C to compute: `span` within each of `count` segments `stride` apart (a convolution's
    /// anchors within each batch element's padded plane; the rest of a plane is never read).
    struct Columns {
        let count: Int, stride: Int, span: Range<Int>
    }

    /// Computes the `columns` of C (`m` rows) tile by tile and hands each finished tile to `store` (called
    /// concurrently for disjoint tiles). `b` must be readable at `offsets[k] + j` for every column `j` plus
    /// ``padding``.
    ///
    /// - Parameters:
    ///   - a: A, row-major `[m, depth]`.
    ///   - b: the buffer every right-hand row is a view of.
    ///   - offsets: `depth` offsets into `b`.
    /// - Complexity: O(m · depth · columns) on the micro-kernels; O(m · depth) extra memory per thread.
    static func run(m: Int, depth: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>, offsets: UnsafePointer<Int64>,
                    columns: Columns, store: Store) {
        let span = columns.span.count
        guard m > 0, columns.count > 0, span > 0, depth > 0 else { return }
        /// The first column of tile `t` of width `width` and its column count.
        func tile(_ t: Int, width: Int) -> (Int, Int) {
            let perSegment = (span + width - 1) / width
            let (segment, i) = (t / perSegment, t % perSegment)
            return (segment * columns.stride + columns.span.lowerBound + i * width, Swift.min(width, span - i * width))
        }
        let level = GEMM.level
        nonisolated(unsafe) let (pa, pb, off) = (a, b, offsets)
        withoutActuallyEscaping(store) { store in
            nonisolated(unsafe) let store = store
            if m <= 4 {
                // Few output rows: one row at a time, wide tiles (a 12-row micro-tile would be mostly padding).
                let tiles = columns.count * ((span + rowTile - 1) / rowTile)
                Threads.forRanges(tiles, minChunk: 2) { range in
                    let buffer = alignedFloats(m * rowTile)
                    defer { buffer.deallocate() }
                    for t in range {
                        let (j0, count) = tile(t, width: rowTile)
                        let width = (count + 15) / 16 * 16
                        for i in 0..<m {
                            var p0 = 0
                            while p0 < depth {
                                let kb = Swift.min(depthBlock, depth - p0)
                                vq_offset_row(level, Int64(kb), pa + i * depth + p0, pb + j0, off + p0,
                                              buffer + i * rowTile, Int64(width), p0 == 0 ? 0 : 1)
                                p0 += kb
                            }
                        }
                        store(0, m, j0, count, buffer, rowTile)
                    }
                }
                return
            }
            // Row panels of MR, or of 8 on AVX-512 when that pads less (16 rows: 2 × 8 instead of 2 × 12).
            let nr = GEMM.nr
            let mr = level >= 2 && (m + 7) / 8 * 8 < (m + GEMM.mr - 1) / GEMM.mr * GEMM.mr ? 8 : GEMM.mr
            let panels = (m + mr - 1) / mr
            // A packed once: panel ip holds, for each k, the mr values A[ip·mr + i, k] (zero below m).
            let aPack = alignedFloats(panels * mr * depth)
            defer { aPack.deallocate() }
            for ip in 0..<panels {
                let rows = Swift.min(mr, m - ip * mr), dst = aPack + ip * mr * depth
                for k in 0..<depth {
                    for i in 0..<rows { dst[k * mr + i] = pa[(ip * mr + i) * depth + k] }
                    for i in rows..<mr { dst[k * mr + i] = 0 }
                }
            }
            nonisolated(unsafe) let packed = aPack
            // Each task fills `wide` micro-tiles side by side before handing them to `store` (longer runs to copy).
            let wide = 4, width = wide * nr
            let tiles = columns.count * ((span + width - 1) / width)
            Threads.forRanges(tiles, minChunk: 2) { range in
                let buffer = alignedFloats(panels * mr * width)
                defer { buffer.deallocate() }
                for t in range {
                    let (j0, count) = tile(t, width: width)
                    let micro = (count + nr - 1) / nr
                    for ip in 0..<panels {
                        for u in 0..<micro {
                            var p0 = 0
                            while p0 < depth {
                                let kb = Swift.min(depthBlock, depth - p0)
                                let (ap, bp, op, cp) = (packed + ip * mr * depth + p0 * mr, pb + j0 + u * nr, off + p0, buffer + ip * mr * width + u * nr)
                                if mr == 8 {
                                    _ = vq_gemm_ukr8_offsets(level, Int64(kb), ap, bp, op, cp, Int64(width), p0 == 0 ? 0 : 1)
                                } else {
                                    vq_gemm_ukr_offsets(level, Int64(kb), ap, bp, op, cp, Int64(width), p0 == 0 ? 0 : 1)
                                }
                                p0 += kb
                            }
                        }
                    }
                    store(0, m, j0, count, buffer, width)
                }
            }
        }
    }

    /// Columns past `columns` that `run` may read (its widest tile), for sizing `b`.
    static var padding: Int { Swift.max(rowTile, GEMM.nr) }
}
