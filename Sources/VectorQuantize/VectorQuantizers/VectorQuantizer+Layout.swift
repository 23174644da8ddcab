import VQNN
import VQTensor

/// Moving between the user's layout `[b, n, heads · d]` and the codebook's flat layout `[H, N, d]`:
/// one codebook: `[1, b·n, d]`; separate codebooks per head: `[heads, b·n, d]`; a shared codebook for
/// several heads: `[1, b·heads·n, d]` (rows ordered b, head, n — as the reference's `1 (b h) n d`).
extension VectorQuantizer {
    /// `input` as `[b, n, dim]`: single tokens `[b, dim]` get `n = 1`, feature maps `[b, c, h, w]` /
    /// `[b, c, t, h, w]` are flattened (their spatial shape returned), channel-first `[b, dim, n]` is transposed.
    func sequenceLayout(_ input: Tensor) -> (x: Tensor, spatial: [Int]?, transposed: Bool) {
        if let problem = inputProblem(input) { preconditionFailure("VectorQuantizer: \(problem)") }
        let c = configuration
        var x = input
        if x.rank == 2 { x = x.unsqueezed(axis: 1) }
        var spatial: [Int]? = nil
        if c.acceptImageFmap || c.accept3dFmap {
            spatial = Array(x.shape.dropFirst(2))
            x = x.reshaped([x.shape[0], x.shape[1], spatial!.reduce(1, *)]).transposed(1, 2)
        }
        let transpose = !c.channelLast && spatial == nil && input.rank != 2
        if transpose { x = x.transposed(1, 2) }
        return (x, spatial, transpose)
    }

    /// Why `input` is not an input of the forward's layout (``sequenceLayout(_:)``), or nil: the one statement of
    /// the rule, which throwing entry points check before anything is written.
    func inputProblem(_ input: Tensor) -> String? {
        let c = configuration
        if c.acceptImageFmap || c.accept3dFmap {
            let rank = c.accept3dFmap ? 5 : 4
            guard input.rank == rank else { return "\(rank == 5 ? "video maps are [b, c, t, h, w]" : "image maps are [b, c, h, w]"), got \(input.shape)" }
            return input.shape[1] == c.dim ? nil : "maps of \(input.shape[1]) channels for dim \(c.dim)"
        }
        guard input.rank == 2 || input.rank == 3 else { return "input \(input.shape): expected [b, n, d] or [b, d]" }
        let channels = input.rank == 2 || c.channelLast ? input.shape[input.rank - 1] : input.shape[1]
        return channels == c.dim ? nil : "input \(input.shape) for dim \(c.dim)\(c.channelLast ? "" : " (channel-first)")"
    }

    func splitHeads(_ x: Tensor, b: Int, n: Int) -> Tensor {
        let h = heads, d = configuration.resolvedCodebookDim
        var flat: Tensor
        if h == 1 {
            flat = x.reshaped([1, b * n, d])
        } else if configuration.separateCodebookPerHead {
            flat = x.reshaped([b, n, h, d]).permuted(2, 0, 1, 3).reshaped([h, b * n, d])
        } else {
            flat = x.reshaped([b, n, h, d]).permuted(0, 2, 1, 3).reshaped([1, b * h * n, d])
        }
        return normalizedForCodebook(consume flat)
    }

    /// `flat [H, N, d]` as the codebook sees it: l2-normalised rows for cosine codebooks (in place when no
    /// gradient is recorded).
    func normalizedForCodebook(_ flat: consuming Tensor) -> Tensor {
        // Consumed: a temporary or a last use normalises in place (no second reference forces a copy).
        var flat = flat
        if configuration.useCosineSimilarity {
            if flat.requiresGradient && GradMode.isEnabled {
                flat = flat.l2Normalized(axis: -1, eps: Codebook.cosineEps)
            } else {
                flat = flat.detached()
                flat.l2NormalizeLastAxis(eps: Codebook.cosineEps)
            }
        }
        return flat
    }

    /// The inverse of ``splitHeads(_:b:n:)`` for `[H, N, d]` → `[b, n, heads · d]`.
    func mergeHeads(_ q: Tensor, b: Int, n: Int) -> Tensor {
        let h = heads, d = q.shape[q.rank - 1]
        if h == 1 { return q.reshaped([b, n, d]) }
        if configuration.separateCodebookPerHead {
            return q.reshaped([h, b, n, d]).permuted(1, 2, 0, 3).reshaped([b, n, h * d])
        }
        return q.reshaped([b, h, n, d]).permuted(0, 2, 1, 3).reshaped([b, n, h * d])
    }

    /// The flat position of token `(bi, ni)` of head `hh`.
    func flatRow(_ bi: Int, _ ni: Int, _ hh: Int, b: Int, n: Int) -> (codebook: Int, row: Int) {
        if heads == 1 { return (0, bi * n + ni) }
        if configuration.separateCodebookPerHead { return (hh, bi * n + ni) }
        return (0, (bi * heads + hh) * n + ni)
    }

    /// Rows that may update the codebook, `[H · N]`: unmasked and finite. `finite`: the rows' finiteness when
    /// it is already known (a projection that checked its rows while writing them); `nil` scans `flat`.
    func validRows(_ flat: Tensor, mask: [Bool]?, b: Int, n: Int, finite: [Bool]? = nil) -> [Bool] {
        let (hN, rowsPer, d) = (flat.shape[0], flat.shape[1], flat.shape[2])
        precondition(finite == nil || finite!.count == hN * rowsPer, "validRows: \(finite?.count ?? 0) flags for rows \(flat.shape)")
        var valid = [Bool](repeating: true, count: hN * rowsPer)
        if let mask {
            for bi in 0..<b {
                for ni in 0..<n where !mask[bi * n + ni] {
                    for hh in 0..<heads {
                        let (cb, r) = flatRow(bi, ni, hh, b: b, n: n)
                        valid[cb * rowsPer + r] = false
                    }
                }
            }
        }
        let unmasked = valid.reduce(0) { $0 + ($1 ? 1 : 0) }
        if let finite {
            for i in valid.indices where !finite[i] { valid[i] = false }
        } else {
            flat.withUnsafeScalars { p in
                valid.withUnsafeMutableBufferPointer { pv in
                    nonisolated(unsafe) let (x, flags) = (p.baseAddress!, pv.baseAddress!)
                    Threads.forRanges(hN * rowsPer, minChunk: Swift.max(1, (1 << 16) / Swift.max(d, 1))) { rows in
                        Tensor.clearNonFiniteRows(x + rows.lowerBound * d, rows: rows.count, d: d, flags: flags + rows.lowerBound)
                    }
                }
            }
        }
        let nonFinite = unmasked - valid.reduce(0) { $0 + ($1 ? 1 : 0) }
        if nonFinite > 0 {
            codebook.logger.warning("\(nonFinite) input vectors with NaN or ±∞ are left out of the codebook update")
        }
        return valid
    }

    /// Flat indices `[H, N]` (or `[1, N, k]`) to the output layout.
    func outputIndices(_ idx: IndexTensor, b: Int, n: Int, topK: Int?) -> IndexTensor {
        if let k = topK { return idx.reshaped([b, n, k]) }
        if heads == 1 { return idx.reshaped([b, n]) }
        var out = [Int](repeating: 0, count: b * n * heads)
        let rowsPer = idx.shape[1]
        for bi in 0..<b {
            for ni in 0..<n {
                for hh in 0..<heads {
                    let (cb, r) = flatRow(bi, ni, hh, b: b, n: n)
                    out[(bi * n + ni) * heads + hh] = idx.scalars[cb * rowsPer + r]
                }
            }
        }
        return IndexTensor(out, shape: [b, n, heads])
    }

    /// Output-layout indices (`[b, n]` or `[b, n, heads]`) to the flat layout `[H, N]`.
    func flatTargets(_ targets: IndexTensor, b: Int, n: Int) -> IndexTensor {
        let numCb = configuration.numCodebooks
        let rowsPer = heads == 1 || configuration.separateCodebookPerHead ? b * n : b * heads * n
        precondition(targets.count == b * n * heads, "VectorQuantizer: target indices \(targets.shape) for [\(b), \(n), \(heads)] tokens")
        var out = [Int](repeating: -1, count: numCb * rowsPer)
        for bi in 0..<b {
            for ni in 0..<n {
                for hh in 0..<heads {
                    let (cb, r) = flatRow(bi, ni, hh, b: b, n: n)
                    out[cb * rowsPer + r] = targets.scalars[(bi * n + ni) * heads + hh]
                }
            }
        }
        return IndexTensor(out, shape: [numCb, rowsPer])
    }

    /// Sets masked tokens of flat indices to -1.
    func maskIndices(_ idx: IndexTensor, mask: [Bool], b: Int, n: Int) -> IndexTensor {
        var s = idx.scalars
        let rowsPer = idx.shape[1]
        for bi in 0..<b {
            for ni in 0..<n where !mask[bi * n + ni] {
                for hh in 0..<heads {
                    let (cb, r) = flatRow(bi, ni, hh, b: b, n: n)
                    s[cb * rowsPer + r] = -1
                }
            }
        }
        return IndexTensor(s, shape: idx.shape)
    }
}
