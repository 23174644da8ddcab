import VQNN
import VQTensor

/// Partial freezing inside codes: components (coordinate subspaces, or blocks of codes × dimensions) and
/// general subspaces given by an orthonormal basis.
///
/// - **Components** (``freeze(dimensions:codes:head:)``) stay **bit-identical** in `embed` and `embed_avg`
///   through every write path — the EMA step and recompute, dead-code expiry (a replaced code keeps its
///   frozen components and takes the sample's free ones), k-means (only free components are fitted),
///   ``setCodes(_:)``, every optimizer (the element mask of `embed`), checkpoints.
/// - **A subspace** (``freeze(subspace:head:)``, basis `B [k, d]` with orthonormal rows): each code keeps
///   its coordinates `B·e` while the orthogonal complement learns. Every write of `embed` is followed by
///   `e ← e − BᵀB·e + BᵀB·e₀` with `e₀` the code at freezing time — re-projected from the stored values,
///   so the drift of `B·e` stays at one rounding (≈1e-7 relative) and does not grow with the steps. The
///   optimizers apply it through the parameter's update constraint.
///
/// Nearest-code assignment still compares whole vectors. A code frozen whole (``freeze(codes:head:)``)
/// is never touched by either mechanism; where a component freeze and a subspace overlap, the component
/// wins (it is restored last).
///
/// ```swift
/// try cb.freeze(dimensions: 0..<16)                   // components 0–15 of every code
/// try cb.freeze(subspace: basis)                      // basis [k, d], orthonormal rows
/// ```
extension Codebook {
    // MARK: Components

    /// Freezes components `dimensions` of `codes` (default: every code) of codebook `head` (default:
    /// every head).
    ///
    /// - Throws: a ``CodebookError`` naming the dimension, code or head out of range, changing nothing.
    public func freeze(dimensions: some Sequence<Int>, codes: [Int]? = nil, head: Int? = nil) throws {
        try setComponents(Array(dimensions), codes: codes, head: head, to: true)
    }

    /// Unfreezes components (the same contract as ``freeze(dimensions:codes:head:)``).
    public func unfreeze(dimensions: some Sequence<Int>, codes: [Int]? = nil, head: Int? = nil) throws {
        try setComponents(Array(dimensions), codes: codes, head: head, to: false)
    }

    /// Dimensions frozen in every code of `head` (by a component freeze; whole-code freezes aside).
    public func frozenDimensions(head: Int = 0) -> [Int] {
        precondition(head >= 0 && head < numCodebooks, "frozenDimensions: head \(head) of \(numCodebooks)")
        let m = frozenComponents.value.scalars
        return (0..<dim).filter { j in (0..<codebookSize).allSatisfy { m[((head * codebookSize) + $0) * dim + j] != 0 } }
    }

    /// The number of frozen components over all codes and heads.
    public var frozenComponentCount: Int { frozenComponents.value.scalars.filter { $0 != 0 }.count }

    private func setComponents(_ dims: [Int], codes: [Int]?, head: Int?, to value: Bool) throws {
        if let bad = dims.first(where: { $0 < 0 || $0 >= dim }) { throw CodebookError.dimensionOutOfRange(dimension: bad, dim: dim) }
        if let bad = codes?.first(where: { $0 < 0 || $0 >= codebookSize }) { throw CodebookError.codeOutOfRange(code: bad, codebookSize: codebookSize) }
        if let head, head < 0 || head >= numCodebooks { throw CodebookError.headOutOfRange(head: head, numCodebooks: numCodebooks) }
        var m = frozenComponents.value.scalars
        for h in head.map({ [$0] }) ?? Array(0..<numCodebooks) {
            for c in codes ?? Array(0..<codebookSize) {
                for j in dims { m[(h * codebookSize + c) * dim + j] = value ? 1 : 0 }
            }
        }
        frozenComponents.value = Tensor(m, shape: frozenComponents.shape)
    }

    // MARK: Subspaces

    /// Freezes each code's coordinates in the subspace spanned by the rows of `basis` `[k, d]`
    /// (orthonormal within 1e-4), for codebook `head` (default: every head), from the codes as they are
    /// now. A second call replaces the subspace of those heads.
    ///
    /// The rows are orthonormalised again in double precision before use, so the guarantee (each code's
    /// coordinates `B·e` within one rounding of their frozen values) holds for every basis accepted.
    ///
    /// - Throws: ``CodebookError/shapeMismatch(expected:found:)``, ``CodebookError/notFinite(what:)``,
    ///   ``CodebookError/headOutOfRange(head:numCodebooks:)`` or ``CodebookError/notOrthonormal(deviation:)``,
    ///   changing nothing.
    /// - Complexity: O(c · d²) now, and for every later write of all codes (an optimizer step).
    public func freeze(subspace basis: Tensor, head: Int? = nil) throws {
        guard basis.rank == 2, basis.shape[1] == dim, basis.shape[0] >= 1, basis.shape[0] <= dim else {
            throw CodebookError.shapeMismatch(expected: [-1, dim], found: basis.shape)
        }
        if let head, head < 0 || head >= numCodebooks { throw CodebookError.headOutOfRange(head: head, numCodebooks: numCodebooks) }
        guard basis.allFinite else { throw CodebookError.notFinite(what: "the subspace basis") }
        let k = basis.shape[0]
        var b = basis.scalars.map(Double.init)
        var deviation = 0.0
        for i in 0..<k {
            for j in 0..<k {
                var dot = 0.0
                for t in 0..<dim { dot += b[i * dim + t] * b[j * dim + t] }
                let dev = abs(dot - (i == j ? 1 : 0))
                if !(dev <= deviation) { deviation = dev }  // a NaN is kept, not dropped
            }
        }
        guard deviation <= 1e-4 else { throw CodebookError.notOrthonormal(deviation: Float(deviation)) }
        // Orthonormalised in double precision (modified Gram–Schmidt, twice), so that P = BᵀB is a projection
        // to the last bit of a Float even for a basis that is orthonormal only within the tolerance.
        for _ in 0..<2 {
            for i in 0..<k {
                for j in 0..<i {
                    var dot = 0.0
                    for t in 0..<dim { dot += b[i * dim + t] * b[j * dim + t] }
                    for t in 0..<dim { b[i * dim + t] -= dot * b[j * dim + t] }
                }
                var norm = 0.0
                for t in 0..<dim { norm += b[i * dim + t] * b[i * dim + t] }
                norm = norm.squareRoot()
                for t in 0..<dim { b[i * dim + t] /= norm }
            }
        }
        var p = [Float](repeating: 0, count: dim * dim)
        for r in 0..<dim {
            for s in 0..<dim {
                var v = 0.0
                for i in 0..<k { v += b[i * dim + r] * b[i * dim + s] }
                p[r * dim + s] = Float(v)
            }
        }
        guard SizeLimit.product([numCodebooks, dim, dim]) != nil else {
            throw CodebookError.shapeMismatch(expected: [numCodebooks, dim, dim], found: [numCodebooks, dim, dim])
        }
        var projector = projectorScalars ?? [Float](repeating: 0, count: numCodebooks * dim * dim)
        var values = frozenSubspaceValues.value.scalars
        let e = embed.value.scalars
        for h in head.map({ [$0] }) ?? Array(0..<numCodebooks) {
            projector.replaceSubrange((h * dim * dim)..<((h + 1) * dim * dim), with: p)
            for c in 0..<codebookSize {
                let row = (h * codebookSize + c) * dim
                for r in 0..<dim {
                    var v = 0.0
                    for s in 0..<dim { v += Double(p[r * dim + s]) * Double(e[row + s]) }
                    values[row + r] = Float(v)
                }
            }
        }
        frozenSubspaceProjector.value = Tensor(projector, shape: [numCodebooks, dim, dim])
        frozenSubspaceValues.value = Tensor(values, shape: frozenSubspaceValues.shape)
    }

    /// The subspace projectors `[h, d, d]`, or nil while no subspace was ever frozen (the buffer is kept empty).
    var projectorScalars: [Float]? {
        let v = frozenSubspaceProjector.value
        return v.count == 0 ? nil : v.scalars
    }

    /// Stores `BᵀB·e` of `codes` (every head with a frozen subspace) as their frozen values.
    func recordSubspaceValues(codes: Range<Int>) {
        let heads = subspaceHeads
        guard heads.contains(true) else { return }
        let p = frozenSubspaceProjector.value.scalars, e = embed.value.scalars
        var values = frozenSubspaceValues.value.scalars
        for h in 0..<numCodebooks where heads[h] {
            for c in codes {
                let row = (h * codebookSize + c) * dim
                for r in 0..<dim {
                    var v = 0.0
                    for s in 0..<dim { v += Double(p[h * dim * dim + r * dim + s]) * Double(e[row + s]) }
                    values[row + r] = Float(v)
                }
            }
        }
        frozenSubspaceValues.value = Tensor(values, shape: frozenSubspaceValues.shape)
    }

    /// Lets the frozen subspace of `head` (default: every head) learn again.
    public func unfreezeSubspace(head: Int? = nil) {
        guard var projector = projectorScalars else { return }
        for h in head.map({ [$0] }) ?? Array(0..<numCodebooks) where h >= 0 && h < numCodebooks {
            for i in (h * dim * dim)..<((h + 1) * dim * dim) { projector[i] = 0 }
        }
        // No subspace left: the buffer goes back to empty.
        frozenSubspaceProjector.value = projector.contains { $0 != 0 } ? Tensor(projector, shape: [numCodebooks, dim, dim]) : Tensor.zeros([0])
    }

    /// The dimension of the frozen subspace of `head` (the trace of its projector, rounded).
    public func frozenSubspaceRank(head: Int = 0) -> Int {
        guard let p = projectorScalars else { return 0 }
        return Int((0..<dim).reduce(Float(0)) { $0 + p[head * dim * dim + $1 * dim + $1] }.rounded())
    }

    /// Heads with a frozen subspace.
    var subspaceHeads: [Bool] { partialFreezeFlags().heads }

    /// Whether any component is frozen and which codebooks have a frozen subspace — recomputed only when
    /// ``frozenComponents`` or ``frozenSubspaceProjector`` has been written since the last call.
    func partialFreezeFlags() -> (anyComponent: Bool, heads: [Bool]) {
        let (vc, vp) = (frozenComponents.version, frozenSubspaceProjector.version)
        if let s = partialFreezeSummary, s.components == vc, s.projector == vp { return (s.any, s.heads) }
        let p = projectorScalars
        let heads = (0..<numCodebooks).map { h in p.map { $0[(h * dim * dim)..<((h + 1) * dim * dim)].contains { $0 != 0 } } ?? false }
        let any = Self.anyNonZero(frozenComponents.value.scalars)
        partialFreezeSummary = (vc, any, vp, heads)
        return (any, heads)
    }

    // MARK: The one place that holds partial freezes on a write

    /// Partial-freeze state read once per write pass: component mask, subspace projectors and values.
    struct PartialHold {
        let components: [Float]
        let anyComponent: Bool
        let projector: [Float]
        let values: [Float]
        let subspace: [Bool]
        let c: Int, d: Int

        var isEmpty: Bool { !anyComponent && !subspace.contains(true) }

        func applies(toRow r: Int) -> Bool {
            subspace[r / c] || (anyComponent && components[(r * d)..<(r * d + d)].contains { $0 != 0 })
        }

        /// Holds row `r` of a write: `new` (d values) is re-projected onto the frozen subspace (`embed`
        /// only, `project`) and gets back the frozen components of `old`.
        func hold(row r: Int, _ new: UnsafeMutablePointer<Float>, old: UnsafePointer<Float>, project: Bool) {
            let h = r / c
            if project && subspace[h] {
                let base = h * d * d, row = r * d
                var moved = [Double](repeating: 0, count: d)
                for i in 0..<d {
                    var v = 0.0
                    for j in 0..<d { v += Double(projector[base + i * d + j]) * Double(new[j]) }
                    moved[i] = Double(new[i]) - v + Double(values[row + i])
                }
                for i in 0..<d { new[i] = Float(moved[i]) }
            }
            if anyComponent {
                for j in 0..<d where components[r * d + j] != 0 { new[j] = old[j] }
            }
        }
    }

    func partialHold() -> PartialHold {
        let flags = partialFreezeFlags()
        return PartialHold(components: frozenComponents.value.scalars, anyComponent: flags.anyComponent,
                           projector: frozenSubspaceProjector.value.scalars, values: frozenSubspaceValues.value.scalars,
                           subspace: flags.heads, c: codebookSize, d: dim)
    }

    /// Whether any value is not ±0 (a NaN counts), scanned in blocks that vectorise (a per-element test with
    /// an early exit does not): the component mask is `[h·c, d]` and read on every EMA step.
    static func anyNonZero(_ values: [Float]) -> Bool {
        values.withUnsafeBufferPointer { p in
            var start = 0
            while start < p.count {
                let end = Swift.min(p.count, start + 4096)
                var bits: UInt32 = 0
                for j in start..<end { bits |= p[j].bitPattern & 0x7FFF_FFFF }
                if bits != 0 { return true }
                start = end
            }
            return false
        }
    }

    /// The update constraint of `embed`: after an optimizer step, every code that is not frozen whole is
    /// re-projected onto its head's frozen subspace (frozen components are not written by optimizers).
    func projectFrozenSubspace(_ values: UnsafeMutableBufferPointer<Float>) {
        let hold = partialHold()
        guard hold.subspace.contains(true) else { return }
        let frozen = frozenMask
        var old = [Float](repeating: 0, count: dim)
        for r in 0..<codeCount where !frozen[r] && hold.subspace[r / codebookSize] {
            let p = values.baseAddress! + r * dim
            for j in 0..<dim { old[j] = p[j] }
            old.withUnsafeBufferPointer { hold.hold(row: r, p, old: $0.baseAddress!, project: true) }
        }
    }
}
