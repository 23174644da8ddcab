// Matrix products, normalisation and distances.

import CVQKernels

extension Tensor {
    /// Matrix product with NumPy/PyTorch semantics: `[..., M, K] · [..., K, N] → [..., M, N]` with
    /// broadcast batch axes; a 1-D operand is a row (left) or column (right) vector.
    ///
    /// - Complexity: O(batch · M · N · K), on the packed GEMM kernels.
    public func matmul(_ other: Tensor) -> Tensor {
        precondition(rank >= 1 && other.rank >= 1, "matmul: shapes \(shape) and \(other.shape)")
        if rank == 1 { return unsqueezed(axis: 0).matmul(other).squeezed(axis: -2) }
        if other.rank == 1 { return matmul(other.unsqueezed(axis: 1)).squeezed(axis: -1) }
        let out = Tensor.matmulRaw(detached(), other.detached(), transposeA: false, transposeB: false)
        return Tensor.record(out, .matmul(detached(), other.detached()), [self, other])
    }

    /// `self · otherᵀ` (the last two axes of `other` swapped) for `self` `[..., M, K]` and `other` `[N, K]` — or
    /// `[..., N, K]` with the same batch axes as `self` — → `[..., M, N]`, reading `other` transposed in place (a
    /// linear layer's `x · Wᵀ`, the scores of rows against codes, without copying `W` or the codes). The values of
    /// `matmul(other.transposed())`, bit for bit. Differentiable in both.
    ///
    /// ```swift
    /// let scores = rows.matmul(transposed: codes)   // [h, n, d] · [h, c, d]ᵀ → [h, n, c]
    /// ```
    ///
    /// - Complexity: O(batch · M · N · K), no copy of `other`.
    public func matmul(transposed other: Tensor) -> Tensor {
        precondition(rank >= 2 && shape[rank - 1] == other.shape[other.rank - 1]
                     && (other.rank == 2 || (other.rank == rank && Array(other.shape.dropLast(2)) == Array(shape.dropLast(2)))),
                     "matmul(transposed:): shapes \(shape) and \(other.shape)ᵀ")
        let out = Tensor.matmulRaw(detached(), other.detached(), transposeA: false, transposeB: true)
        return Tensor.record(out, .matmulTransposedB(detached(), other.detached()), [self, other])
    }

    /// `self · weightᵀ + bias` (a linear layer, `weight [N, K]`, `bias [N]`) in one pass: each output row
    /// starts from the bias and the product accumulates into it (no broadcast add, no second buffer).
    /// Differentiable in all three.
    ///
    /// - Complexity: O(rows · N · K).
    public func linear(weight: Tensor, bias: Tensor?) -> Tensor {
        precondition(rank >= 2 && weight.rank == 2 && shape[rank - 1] == weight.shape[1] && (bias == nil || bias!.shape == [weight.shape[0]]),
                     "linear: input \(shape), weight \(weight.shape), bias \(bias?.shape ?? [])")
        guard let bias else { return matmul(transposed: weight) }
        let (n, k) = (weight.shape[0], weight.shape[1])
        let rows = count / Swift.max(k, 1)
        let x = detached(), w = weight.detached(), b = bias.detached()
        let out = Tensor.uninitialized(Array(shape.dropLast()) + [n]) { o in
            // Each row starts from the bias inside the kernel (no fill pass, no broadcast add).
            x.scalars.withUnsafeBufferPointer { px in
                w.scalars.withUnsafeBufferPointer { pw in
                    b.scalars.withUnsafeBufferPointer { pb in
                        GEMM.gemm(m: rows, n: n, k: k, a: px.baseAddress!, ars: k, acs: 1, b: pw.baseAddress!, brs: 1, bcs: k,
                                  c: o.baseAddress!, ldc: n, accumulate: false, bias: pb.baseAddress!)
                    }
                }
            }
        }
        return Tensor.record(out, .linear(x, w), [self, weight, bias])
    }

    /// `a · b` with either operand read transposed in its last two axes (no copy), batch axes
    /// broadcast. No gradient is recorded.
    static func matmulRaw(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool) -> Tensor {
        let (ar, ac) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
        let (br, bc) = (b.shape[b.rank - 2], b.shape[b.rank - 1])
        let (m, k) = transposeA ? (ac, ar) : (ar, ac)
        let (k2, n) = transposeB ? (bc, br) : (br, bc)
        precondition(k == k2, "matmul: inner extents differ: \(a.shape)\(transposeA ? "ᵀ" : "") · \(b.shape)\(transposeB ? "ᵀ" : "")")
        let batchA = Array(a.shape.dropLast(2)), batchB = Array(b.shape.dropLast(2))
        guard let batch = Shape.broadcast(batchA, batchB) else {
            preconditionFailure("matmul: batch shapes \(batchA) and \(batchB) do not broadcast (\(a.shape) · \(b.shape))")
        }
        let nb = Shape.count(batch)
        let sa = Shape.broadcastStrides(batchA, to: batch), sb = Shape.broadcastStrides(batchB, to: batch)
        // Fold a 2-D right operand's shared batch into M when A is not transposed: one big GEMM.
        let fold = batchB.isEmpty && !transposeA
        let (ars, acs) = transposeA ? (1, ac) : (ac, 1)
        let (brs, bcs) = transposeB ? (1, bc) : (bc, 1)
        return Tensor.uninitialized(batch + [m, n]) { out in
            a.scalars.withUnsafeBufferPointer { pa in
                b.scalars.withUnsafeBufferPointer { pb in
                    if fold {
                        GEMM.gemm(m: nb * m, n: n, k: k, a: pa.baseAddress!, ars: ars, acs: acs,
                                  b: pb.baseAddress!, brs: brs, bcs: bcs, c: out.baseAddress!, ldc: n, accumulate: false)
                        return
                    }
                    var offA = [Int](repeating: 0, count: nb), offB = [Int](repeating: 0, count: nb)
                    if !batch.isEmpty {
                        var i = 0
                        Elementwise.walk(batch, sa, sb) { _, ia, ib, cnt, da, db in
                            for j in 0..<cnt {
                                offA[i] = (ia + j * da) * ar * ac
                                offB[i] = (ib + j * db) * br * bc
                                i += 1
                            }
                        }
                    }
                    for t in 0..<nb {
                        GEMM.gemm(m: m, n: n, k: k, a: pa.baseAddress! + offA[t], ars: ars, acs: acs,
                                  b: pb.baseAddress! + offB[t], brs: brs, bcs: bcs,
                                  c: out.baseAddress! + t * m * n, ldc: n, accumulate: false)
                    }
                }
            }
        }
    }

    /// ``l2Normalized(axis:eps:)`` of the last axis in place, for a tensor without a gradient graph (no new
    /// buffer when this one is not shared).
    public mutating func l2NormalizeLastAxis(eps: Float = 1e-12) {
        precondition(!requiresGradient, "l2NormalizeLastAxis: a tensor in a gradient graph must use l2Normalized (shape \(shape))")
        let d = shape.last ?? 1, rows = d == 0 ? 0 : count / d
        withUnsafeMutableScalars { p in Self.normalizeRows(UnsafePointer(p.baseAddress!), into: p.baseAddress!, rows: rows, d: d, eps: eps) }
    }

    /// `dst` row `r` = `src` row `r` / max(‖row‖₂, eps), rows of `d` over the threads; `src` may be `dst`. The
    /// squared norm is summed in the order of `squared().sum(axis: -1)` (eight partial sums, then pairs), so the
    /// rows equal the differentiable composition's bit for bit (a C kernel, four rows' sums at a time).
    /// `finite` (one flag per row): cleared for a row whose output holds a NaN or ±∞.
    static func normalizeRows(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, rows: Int, d: Int, eps: Float,
                              threaded: Bool = true, finite: UnsafeMutablePointer<Bool>? = nil) {
        nonisolated(unsafe) let (x, y, f) = (src, dst, finite)
        Threads.forRanges(rows, minChunk: threaded ? 256 : Int.max) { range in
            vq_normalize_rows(GEMM.level, x + range.lowerBound * d, y + range.lowerBound * d, Int64(range.count), Int64(d), eps,
                              f.map { $0 + range.lowerBound })
        }
    }

    /// Divides each of `rows` contiguous rows of `d` by `max(‖row‖₂, eps)` in place, on the calling thread — the
    /// values of ``l2NormalizeLastAxis(eps:)``, bit for bit (`F.normalize` of the reference).
    ///
    /// - Complexity: O(rows · d).
    public static func l2NormalizeRows(_ p: UnsafeMutablePointer<Float>, rows: Int, d: Int, eps: Float) {
        normalizeRows(UnsafePointer(p), into: p, rows: rows, d: d, eps: eps, threaded: false)
    }

    /// `x / max(‖x‖₂, eps)` along `axis` (as `torch.nn.functional.normalize`).
    public func l2Normalized(axis: Int = -1, eps: Float = 1e-12) -> Tensor {
        let a = axis < 0 ? axis + rank : axis
        if a == rank - 1 && rank >= 1 && !(requiresGradient && GradMode.isEnabled) {
            // Without a graph: one pass per row, no squared or norm temporaries.
            let d = shape[rank - 1], rows = d == 0 ? 0 : count / d
            return Tensor.uninitialized(shape) { out in
                withUnsafeScalars { px in Self.normalizeRows(px.baseAddress!, into: out.baseAddress!, rows: rows, d: d, eps: eps) }
            }
        }
        let norm = squared().sum(axis: axis, keepDims: true).sqrt()
        return self / norm.maximum(eps)
    }

    /// Squared Euclidean distances between the rows of `self` `[N, D]` and `other` `[K, D]`:
    /// `‖x‖² − 2 x·c + ‖c‖²`, shape `[N, K]`. Materialises the N×K matrix; for nearest-code
    /// search use ``nearestCodes(_:metric:)``, which does not.
    public func pairwiseSquaredDistance(_ other: Tensor) -> Tensor {
        precondition(rank == 2 && other.rank == 2 && shape[1] == other.shape[1],
                     "pairwiseSquaredDistance: shapes \(shape) and \(other.shape)")
        let xx = squared().sum(axis: 1, keepDims: true)
        let cc = other.squared().sum(axis: 1).unsqueezed(axis: 0)
        return (xx + cc) - 2 * matmul(transposed: other)
    }
}

extension Tensor {
    /// `concat_h(heads[h]) · weightᵀ + bias` for `heads [h, N, d]` (head-major rows, as split heads are) and
    /// `weight [out, h·d]`, without building the `[N, h·d]` concatenation: one product per head accumulates
    /// into the output `[N, out]`. No gradient graph (inputs without one, or gradients off).
    ///
    /// - Complexity: O(h · N · d · out), no temporary besides the output.
    package static func mergedHeadsProjection(_ heads: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        precondition(!((heads.requiresGradient || weight.requiresGradient || (bias?.requiresGradient ?? false)) && GradMode.isEnabled),
                     "mergedHeadsProjection: no gradient graph (heads \(heads.shape), weight \(weight.shape))")
        let (h, n, d) = (heads.shape[0], heads.shape[1], heads.shape[2])
        let out = weight.shape[0]
        precondition(heads.rank == 3 && weight.rank == 2 && weight.shape[1] == h * d && (bias == nil || bias!.shape == [out]),
                     "mergedHeadsProjection: heads \(heads.shape), weight \(weight.shape), bias \(bias?.shape ?? [])")
        var y = [Float](repeating: 0, count: n * out)
        y.withUnsafeMutableBufferPointer { py in
            if let bias {
                bias.withUnsafeScalars { pb in for r in 0..<n { (py.baseAddress! + r * out).update(from: pb.baseAddress!, count: out) } }
            }
            heads.withUnsafeScalars { ph in
                weight.withUnsafeScalars { pw in
                    for hh in 0..<h {
                        GEMM.gemm(m: n, n: out, k: d, a: ph.baseAddress! + hh * n * d, ars: d, acs: 1,
                                  b: pw.baseAddress! + hh * d, brs: 1, bcs: h * d,
                                  c: py.baseAddress!, ldc: out, accumulate: bias != nil || hh > 0)
                    }
                }
            }
        }
        return Tensor(y, shape: [n, out])
    }

    /// ``mergedHeadsProjection(_:weight:bias:)`` of the codes `indices` selects, bit for bit, without gathering
    /// them: each head's codebook is projected once (`codes[h] · W_hᵀ`, `[c, out]`) and each output row is the bias
    /// plus the selected rows of those projections, added head by head in order — the same sums the merged
    /// projection forms. `codes [h, c, d]`, `indices [h, N]`; no gradient graph.
    ///
    /// - Complexity: O(h·c·d·out + N·h·out), against O(N·h·d·out) for the gathered rows.
    package static func gatheredHeadsProjection(codes: Tensor, indices: IndexTensor, weight: Tensor, bias: Tensor?) -> Tensor {
        precondition(!((codes.requiresGradient || weight.requiresGradient || (bias?.requiresGradient ?? false)) && GradMode.isEnabled),
                     "gatheredHeadsProjection: no gradient graph (codes \(codes.shape), weight \(weight.shape))")
        precondition(codes.rank == 3 && indices.rank == 2 && indices.shape[0] == codes.shape[0] && weight.rank == 2
                     && weight.shape[1] == codes.shape[0] * codes.shape[2] && (bias == nil || bias!.shape == [weight.shape[0]]),
                     "gatheredHeadsProjection: codes \(codes.shape), indices \(indices.shape), weight \(weight.shape), bias \(bias?.shape ?? [])")
        let (h, c, d, n, out) = (codes.shape[0], codes.shape[1], codes.shape[2], indices.shape[1], weight.shape[0])
        precondition(indices.scalars.allSatisfy { $0 >= 0 && $0 < c }, "gatheredHeadsProjection: an index outside \(c) codes")
        // Both products must take the GEMM's main tiles over one depth block (the same sums); else gather.
        guard c > 8, n > 8, d > 8, d <= GEMM.kc, out > 8 else {
            return mergedHeadsProjection(codes.rowsPerHead(indices), weight: weight, bias: bias)
        }
        let projected = Tensor.uninitialized([h, c, out]) { pp in
            codes.withUnsafeScalars { pc in
                weight.withUnsafeScalars { pw in
                    for hh in 0..<h {
                        GEMM.gemm(m: c, n: out, k: d, a: pc.baseAddress! + hh * c * d, ars: d, acs: 1,
                                  b: pw.baseAddress! + hh * d, brs: 1, bcs: h * d, c: pp.baseAddress! + hh * c * out, ldc: out,
                                  accumulate: false)
                    }
                }
            }
        }
        return Tensor.uninitialized([n, out]) { py in
            projected.withUnsafeScalars { pp in
                indices.scalars.withUnsafeBufferPointer { pi in
                    let biasRow = bias?.scalars
                    nonisolated(unsafe) let (y, p, idx) = (py.baseAddress!, pp.baseAddress!, pi.baseAddress!)
                    Threads.forRanges(n, minChunk: 64) { rows in
                        let src = UnsafeMutablePointer<UnsafePointer<Float>?>.allocate(capacity: h)
                        defer { src.deallocate() }
                        for r in rows {
                            let yr = y + r * out
                            for hh in 0..<h { src[hh] = UnsafePointer(p + (hh * c + idx[hh * n + r]) * out) }
                            // The bias, or the first head's row (as the merged projection's first product stores it), then
                            // the other heads' rows added in order.
                            if let biasRow {
                                biasRow.withUnsafeBufferPointer { yr.update(from: $0.baseAddress!, count: out) }
                                vq_add_rows(GEMM.level, yr, src, Int64(h), Int64(out))
                            } else {
                                yr.update(from: src[0]!, count: out)
                                vq_add_rows(GEMM.level, yr, src + 1, Int64(h - 1), Int64(out))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Clears `flags[i]` for each of `rows` contiguous rows of `d` that holds a NaN or ±∞ (flags already `false`
    /// are left as they are and their rows are not read), on the calling thread.
    ///
    /// A float is NaN or ±∞ when its exponent bits are all ones: an integer maximum over the row, which vectorises
    /// (a per-element test with an early exit does not).
    ///
    /// - Complexity: O(rows · d).
    public static func clearNonFiniteRows(_ p: UnsafePointer<Float>, rows: Int, d: Int, flags: UnsafeMutablePointer<Bool>) {
        for i in 0..<rows where flags[i] {
            var exponent: UInt32 = 0
            let row = p + i * d
            for j in 0..<d { exponent = Swift.max(exponent, row[j].bitPattern & 0x7F80_0000) }
            if exponent == 0x7F80_0000 { flags[i] = false }
        }
    }

    /// `x · weightᵀ + bias` split into heads: `x [N, K]`, `weight [h·d, K]` → `[h, N, d]`, head `j` of row `r`
    /// being columns `j·d ..< (j+1)·d` of the projection — what a projection followed by the head split
    /// (`reshaped([N, h, d]).permuted(1, 0, 2)`) computes, bit for bit, without the `[N, h·d]` buffer or the
    /// permutation's pass. No gradient graph (inference and EMA training forwards).
    /// With `l2NormalizeEps`, each head's rows come out l2-normalised — ``l2NormalizeLastAxis(eps:)`` of the
    /// result, bit for bit — normalised by the thread that computed them while they are in its cache.
    ///
    /// With `finiteRows` (`h · N` flags, row `j · N + r` for head `j` of row `r`), the flag of every output row
    /// that holds a NaN or ±∞ is cleared (``clearNonFiniteRows(_:rows:d:flags:)``, while the rows are in cache).
    ///
    /// - Complexity: O(N · h·d · K), one output buffer.
    package static func splitHeadsProjection(_ x: Tensor, weight: Tensor, bias: Tensor?, heads h: Int,
                                            l2NormalizeEps: Float? = nil, finiteRows: UnsafeMutableBufferPointer<Bool>? = nil) -> Tensor {
        precondition(!((x.requiresGradient || weight.requiresGradient || (bias?.requiresGradient ?? false)) && GradMode.isEnabled),
                     "splitHeadsProjection: no gradient graph (x \(x.shape), weight \(weight.shape))")
        precondition(x.rank == 2 && weight.rank == 2 && weight.shape[1] == x.shape[1] && h > 0 && weight.shape[0] % h == 0
                     && (bias == nil || bias!.shape == [weight.shape[0]]),
                     "splitHeadsProjection: x \(x.shape), weight \(weight.shape), bias \(bias?.shape ?? []), heads \(h)")
        let (n, k, d) = (x.shape[0], x.shape[1], weight.shape[0] / h)
        precondition(finiteRows == nil || finiteRows!.count == h * n,
                     "splitHeadsProjection: \(finiteRows?.count ?? 0) row flags for \(h) heads of x \(x.shape)")
        // Each head's product must take the same GEMM path as the whole projection (the skinny paths for ≤ 8
        // columns or depth sum in another order): small heads or depths project, then split.
        if d < 16 || k < 16 {
            var split = x.linear(weight: weight, bias: bias).reshaped([n, h, d]).permuted(1, 0, 2)
            if let eps = l2NormalizeEps { split.l2NormalizeLastAxis(eps: eps) }
            if let flags = finiteRows, h * n * d > 0 {
                split.withUnsafeScalars { clearNonFiniteRows($0.baseAddress!, rows: h * n, d: d, flags: flags.baseAddress!) }
            }
            return split
        }
        return Tensor.uninitialized([h, n, d]) { py in
            // One product over every head (A packed once), head `j`'s columns written to its slab.
            x.withUnsafeScalars { px in
                weight.withUnsafeScalars { pw in
                    nonisolated(unsafe) let out = py.baseAddress!
                    nonisolated(unsafe) let flags = finiteRows?.baseAddress
                    let eps = l2NormalizeEps
                    let rowPass: ((Range<Int>) -> Void)? = eps == nil && flags == nil ? nil : { rows in
                        for hh in 0..<h {
                            let slab = out + (hh * n + rows.lowerBound) * d
                            let rowFlags = flags.map { $0 + hh * n + rows.lowerBound }
                            if let eps {
                                // The kernel checks the rows it writes.
                                Self.normalizeRows(UnsafePointer(slab), into: slab, rows: rows.count, d: d, eps: eps, threaded: false,
                                                   finite: rowFlags)
                            } else if let rowFlags {
                                Self.clearNonFiniteRows(slab, rows: rows.count, d: d, flags: rowFlags)
                            }
                        }
                    }
                    let gemm = { (pb: UnsafePointer<Float>?) in
                        GEMM.gemm(m: n, n: h * d, k: k, a: px.baseAddress!, ars: k, acs: 1, b: pw.baseAddress!, brs: 1, bcs: k,
                                  c: out, ldc: d, accumulate: false, bias: pb, columnBlocks: (width: d, stride: n * d), rowsDone: rowPass)
                    }
                    if let bias { bias.withUnsafeScalars { gemm($0.baseAddress!) } } else { gemm(nil) }
                }
            }
        }
    }
}
