import VQNN
import VQTensor

/// Looking codes up by index, and setting codes from outside.
extension VectorQuantizer {
    /// The stored codes: `[c, d]`, or `[heads, c, d]` with separate codebooks per head.
    public var codes: Tensor {
        let e = codebook.embed.value.detached()
        return configuration.separateCodebookPerHead ? e : e.reshaped([codebookSize, configuration.resolvedCodebookDim])
    }

    /// The codes as the forward looks them up (through `vq_bridge` and the affine map; the stored codes
    /// without them), in ``codes``'s shape. Decoding uses these, so `decode(encode(x))` is the forward's
    /// output (the reference's `get_codes_from_indices` reads the stored codes).
    public var lookupCodes: Tensor {
        guard codebook.vqBridge != nil || codebook.affineReady else { return codes }
        let e = withoutGradient { codebook.lookupCodes(codebook.embed.value) }
        return configuration.separateCodebookPerHead ? e : e.reshaped([codebookSize, configuration.resolvedCodebookDim])
    }

    /// Replaces codes, keeping `embed_avg` consistent (`embed_avg = code · s`, with `s` the current
    /// Laplace-smoothed count) so that the next EMA step does not snap them back (the reference's setter
    /// writes only `embed`). Frozen codes are not written.
    ///
    /// - Throws: ``CodebookError/shapeMismatch(expected:found:)`` or ``CodebookError/notFinite(what:)``, changing nothing.
    public func setCodes(_ newCodes: Tensor) throws {
        let expected = codes.shape
        guard newCodes.shape == expected else { throw CodebookError.shapeMismatch(expected: expected, found: newCodes.shape) }
        try codebook.setCodes(newCodes.reshaped([codebook.numCodebooks, codebookSize, configuration.resolvedCodebookDim]))
    }

    /// Codebook rows for output-layout indices (`[b, …]`, or `[b, …, heads]` with separate codebooks):
    /// `indices.shape + [d]` (heads merged into `heads · d` with separate codebooks), channel-first when the
    /// quantizer is (the reference's `get_codes_from_indices`).
    public func getCodes(from indices: IndexTensor) -> Tensor {
        var out = vectorCodes(from: indices)
        if !configuration.channelLast || configuration.acceptImageFmap || configuration.accept3dFmap {
            var p = Array(0..<out.rank)
            p.insert(p.removeLast(), at: 1)
            out = out.permuted(p)
        }
        return out
    }

    /// Codebook rows for indices, channel-last whatever the layout: `indices.shape + [d]` (with several heads,
    /// separate codebooks or one shared, indices `[…, heads]` give `[…, heads · d]`).
    func vectorCodes(from indices: IndexTensor) -> Tensor {
        let d = configuration.resolvedCodebookDim
        let lookup = lookupCodes
        if configuration.separateCodebookPerHead && heads > 1 {
            precondition(indices.shape.last == heads, "getCodes: indices \(indices.shape) must end with heads = \(heads)")
            let tokens = indices.count / heads
            var parts: [Tensor] = []
            for hh in 0..<heads {
                let idx = IndexTensor((0..<tokens).map { indices.scalars[$0 * heads + hh] })
                parts.append(lookup.slice(axis: 0, hh..<(hh + 1)).reshaped([codebookSize, d]).indexSelect(axis: 0, idx))
            }
            return Tensor.stack(parts, axis: 1).reshaped(Array(indices.shape.dropLast()) + [heads * d])
        }
        // One codebook (a separate codebook for a single head is stored as [1, c, d]).
        let codes = lookup.reshaped([codebookSize, d]).indexSelect(axis: 0, indices)
        guard heads > 1 else { return codes }
        // Several heads sharing it: indices [… , heads] give each head's code side by side, [… , heads · d].
        precondition(indices.shape.last == heads, "getCodes: indices \(indices.shape) must end with heads = \(heads)")
        return codes.reshaped(Array(indices.shape.dropLast()) + [heads * d])
    }

    /// `project_out(getCodes(from:))`.
    public func getOutput(from indices: IndexTensor) -> Tensor {
        let codes = getCodes(from: indices)
        return projectOut.map { $0(codes) } ?? codes
    }

    /// Replaces expired codes with vectors of `x` (`[b, n, dim]`, the input's space: projected in as the
    /// forward does; the reference's `expire_codes_`).
    ///
    /// - Throws: ``ConfigurationError/invalid(module:reason:)`` unless `x` is `[b, n, dim]`, changing nothing.
    public func expireCodes(_ x: Tensor) throws {
        guard x.rank == 3 && x.shape[2] == configuration.dim else {
            throw ConfigurationError.invalid(module: "VectorQuantize", reason: "expireCodes: \(x.shape) must be [b, n, \(configuration.dim)]")
        }
        let (b, n) = (x.shape[0], x.shape[1])
        let projected = withoutGradient { projectIn.map { $0(x.detached()) } ?? x.detached() }
        codebook.expireCodes(splitHeads(projected, b: b, n: n))
    }
}

extension Codebook {
    /// Writes codes `[h, c, d]` and `embed_avg = code · s_c` for every code that is not frozen (frozen
    /// components and subspace coordinates of partially frozen codes are kept), through the write gate. On a k-means
    /// codebook not initialised yet, the first batch still fits every code that is not frozen: freeze the codes set to
    /// keep them through it (FAISS's `frozen_centroids`).
    ///
    /// - Throws: ``CodebookError/shapeMismatch(expected:found:)`` unless `codes` is `[h, c, d]`, or
    ///   ``CodebookError/notFinite(what:)`` — for the codes, or for `embed_avg` when a code times its count overflows
    ///   float (a code of 10³⁰ where a file's count is 10¹⁰) — changing nothing.
    public func setCodes(_ codes: Tensor) throws {
        guard codes.shape == embed.shape else { throw CodebookError.shapeMismatch(expected: embed.shape, found: codes.shape) }
        guard codes.withUnsafeScalars({ $0.allSatisfy(\.isFinite) }) else { throw CodebookError.notFinite(what: "the codes") }
        let d = dim, smoothed = smoothedCounts()
        let frozen = frozenMask   // rows the gate does not write
        let overflows = codes.withUnsafeScalars { pc in (0..<pc.count).contains { !frozen[$0 / d] && !(pc[$0] * smoothed[$0 / d]).isFinite } }
        if overflows { throw CodebookError.notFinite(what: "embed_avg (the codes times their EMA counts)") }
        codes.withUnsafeScalars { pc in
            write(.setCodes, rows: 0..<codeCount, [.codes, .average], touch: .codes) { w in
                let r = w.row, s = smoothed[r]
                for j in 0..<d {
                    w.code![j] = pc[r * d + j]
                    w.average![j] = pc[r * d + j] * s
                }
            }
        }
    }
}

extension VectorQuantizer {
    /// A copy of this quantizer with a larger codebook, for staged training: the existing codes, their EMA
    /// statistics, freeze mask and the projections are kept, and with `freezeExisting` the old codes are
    /// frozen, so training on new data can use them but never move them.
    ///
    /// Without data the new codes start as a fresh codebook would (uniform init, `cluster_size = 1`) — far
    /// from new data, they may never be chosen. Given `data`, the new codes are fitted to it by k-means
    /// with the old codes as fixed centroids (new data that the old codes already represent stays with
    /// them), with counts expressed per `countsPerBatch` rows so that EMA training continues smoothly.
    ///
    /// ```swift
    /// let grown = try vq.expanded(toCodebookSize: 96, fittingNewCodesTo: newData, countsPerBatch: 256)
    /// grown.codebook.frozenCodeIndices()   // 0..<64, bit-identical through any training that follows
    /// ```
    ///
    /// - Parameters:
    ///   - newSize: the new codebook size (larger than the current one).
    ///   - freezeExisting: freeze the old codes (default).
    ///   - seed: the seed of the new codes' initialisation and of the grown quantizer.
    ///   - data: vectors `[n, dim]` or `[b, n, dim]` in the quantizer's input space (rows with NaN or ±∞
    ///     are left out).
    ///   - countsPerBatch: the training batch size the new codes' counts are scaled to (default: `n`).
    /// - Throws: ``ConfigurationError`` when `newSize` is not larger than the current size, `data` has the
    ///   wrong dimension, or the codebook (k-means initialised) has not seen a training batch yet — changing nothing.
    /// - Complexity: O(kmeansIters · n · newSize · d) with data.
    public func expanded(toCodebookSize newSize: Int, freezeExisting: Bool = true, seed: UInt64 = 1,
                         fittingNewCodesTo data: Tensor? = nil, countsPerBatch: Int? = nil) throws -> VectorQuantizer {
        let grown = try expandedCopy(toCodebookSize: newSize, freezeExisting: freezeExisting, seed: seed)
        if let data {
            guard (data.rank == 2 || data.rank == 3) && data.shape.last == configuration.dim else {
                throw ConfigurationError.invalid(module: "VectorQuantize", reason: "data \(data.shape) for a quantizer of dim \(configuration.dim)")
            }
            let x = data.rank == 2 ? data.unsqueezed(axis: 0) : data
            let (b, n) = (x.shape[0], x.shape[1])
            let flat = withoutGradient { grown.splitHeads(grown.projectIn.map { $0(x) } ?? x, b: b, n: n) }
            try grown.codebook.fitCodes(codebookSize..<newSize, to: flat, countsPerBatch: countsPerBatch)
        }
        return grown
    }

    private func expandedCopy(toCodebookSize newSize: Int, freezeExisting: Bool, seed: UInt64) throws -> VectorQuantizer {
        guard newSize > codebookSize else {
            throw ConfigurationError.invalid(module: "VectorQuantize", reason: "expand to \(newSize) codes: not larger than \(codebookSize)")
        }
        // The old codes of a k-means codebook that never saw a batch are placeholders: growing would keep (and by default
        // freeze) them as if learned, and mark the codebook initialised.
        guard isInitialised else {
            throw ConfigurationError.invalid(module: "VectorQuantize", reason: "expand to \(newSize) codes: the codebook is not initialised yet (k-means runs on the first training batch); train it first")
        }
        var config = configuration
        config.codebookSize = newSize
        config.seed = seed
        config.kmeansInit = false  // the new codes get a uniform init; the old ones are already trained
        let grown = try VectorQuantizer(config)
        var state = stateDict()
        let (h, old, d) = (codebook.numCodebooks, codebookSize, configuration.resolvedCodebookDim)
        let fresh = grown.stateDict()
        func grow(_ key: String, rowLength: Int) {
            guard let o = state[key], let f = fresh[key] else { return }
            var s = f.scalars
            for hh in 0..<h {
                for i in 0..<(old * rowLength) { s[hh * newSize * rowLength + i] = o.scalars[hh * old * rowLength + i] }
            }
            state[key] = Tensor(s, shape: f.shape)
        }
        grow("_codebook.embed", rowLength: d)
        grow("_codebook.embed_avg", rowLength: d)
        grow("_codebook.cluster_size", rowLength: 1)
        grow("_codebook.frozen_codes", rowLength: 1)
        grow("_codebook.frozen_components", rowLength: d)
        grow("_codebook.frozen_subspace_values", rowLength: d)
        grow("_codebook.policy_frozen_at", rowLength: 1)
        state["_codebook.initted"] = Tensor(1)
        try grown.load(stateDict: state)
        // New codes of a head with a frozen subspace keep their initial coordinates there (they learn in
        // the complement), like every code of that head.
        grown.codebook.recordSubspaceValues(codes: old..<newSize)
        if freezeExisting { try grown.codebook.freeze(codes: 0..<old) }
        // A dimension frozen in every code stays frozen in every code, the new ones included (as a frozen
        // subspace does); the policy carries over (its per-code records restart at the new size).
        for hh in 0..<h {
            let dims = codebook.frozenDimensions(head: hh)
            if !dims.isEmpty { try grown.codebook.freeze(dimensions: dims, codes: Array(old..<newSize), head: hh) }
        }
        grown.codebook.freezePolicy = codebook.freezePolicy
        grown.train(isTraining)
        return grown
    }
}
