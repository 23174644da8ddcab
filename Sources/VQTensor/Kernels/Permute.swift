import CVQKernels

/// Permutation copies. A permutation is first reduced to its essential form — axes of extent 1 dropped,
/// output axes that stay adjacent and in order in the input merged — so that, e.g., `[b, c, h, w] → [b, h, w, c]`
/// is recognised as a batch of `c × (h·w)` transposes. Those run as blocked transposes (tiles that fit in the
/// first-level cache, so reads and writes both walk cache lines) over the threads; anything else walks the
/// output with per-axis input strides. A copy either way: every element is moved, none computed.
enum Permute {
    /// `perm` reduced: the input's shape after merging, and the output's axes as indices into it.
    static func reduced(shape: [Int], perm: [Int]) -> (shape: [Int], perm: [Int]) {
        // Output axes (as input axes), extent-1 axes dropped; runs of consecutive input axes merged.
        var groups: [[Int]] = []
        for a in perm where shape[a] != 1 {
            if let last = groups.last?.last, a == nextKept(after: last, shape) {
                groups[groups.count - 1].append(a)
            } else {
                groups.append([a])
            }
        }
        let order = groups.indices.sorted { groups[$0][0] < groups[$1][0] }
        var rank = [Int](repeating: 0, count: groups.count)
        for (r, g) in order.enumerated() { rank[g] = r }
        let merged = order.map { groups[$0].reduce(1) { $0 * shape[$1] } }
        return (merged, groups.indices.map { rank[$0] })
    }

    /// The next input axis after `a` whose extent is not 1 (or `a + 1` past the end).
    private static func nextKept(after a: Int, _ shape: [Int]) -> Int {
        var b = a + 1
        while b < shape.count && shape[b] == 1 { b += 1 }
        return b
    }

    /// `out[b][j][i] = src[b][i][j]` for `batch` matrices of `rows × cols`: blocks of 16 rows over the threads,
    /// each transposed in 16 × 16 tiles by `vq_transpose_rows` (4 × 4 blocks in SSE registers on x86-64).
    ///
    /// - Complexity: O(batch · rows · cols).
    static func transposeBatch(_ src: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, batch: Int, rows: Int, cols: Int) {
        let block = 16
        let rowBlocks = (rows + block - 1) / block
        nonisolated(unsafe) let (x, y) = (src, out)
        let work = batch * rows * cols
        let tasks = batch * rowBlocks
        Threads.forRanges(tasks, minChunk: work < Elementwise.parallelThreshold ? Int.max : Swift.max(1, tasks / 64)) { range in
            for t in range {
                let (b, i0) = (t / rowBlocks, (t % rowBlocks) * block)
                vq_transpose_rows(x + b * rows * cols, Int64(rows), Int64(cols), Int64(i0), Int64(Swift.min(rows, i0 + block)),
                                  y + b * rows * cols)
            }
        }
    }
}
