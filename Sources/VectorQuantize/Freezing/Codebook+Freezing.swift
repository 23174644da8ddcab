import VQNN
import VQTensor

/// Errors of codebook editing.
public enum CodebookError: Error, Equatable, CustomStringConvertible {
    case codeOutOfRange(code: Int, codebookSize: Int)
    case headOutOfRange(head: Int, numCodebooks: Int)
    case shapeMismatch(expected: [Int], found: [Int])
    case dimensionOutOfRange(dimension: Int, dim: Int)
    case notOrthonormal(deviation: Float)
    case notFinite(what: String)
    case policyNeedsEMA
    case notPositive(value: Int)
    case notInitialised

    public var description: String {
        switch self {
        case .codeOutOfRange(let c, let n): return "code \(c) out of range 0..<\(n)"
        case .headOutOfRange(let h, let n): return "head \(h) out of range 0..<\(n)"
        case .shapeMismatch(let e, let f): return "expected shape \(e), found \(f)"
        case .dimensionOutOfRange(let j, let d): return "dimension \(j) out of range 0..<\(d)"
        case .notOrthonormal(let dev): return "the basis rows are not orthonormal (largest deviation of B·Bᵀ from I: \(dev))"
        case .notFinite(let what): return "\(what) holds NaN or infinite values"
        case .notPositive(let v): return "\(v): iterations and counts must be positive"
        case .notInitialised: return "the codebook is not initialised yet (k-means runs on the first training batch): its codes are placeholders"
        case .policyNeedsEMA: return "a freeze policy judges EMA updates; this codebook learns by gradient (learnable_codebook), so none would be consulted"
        }
    }
}

extension Codebook {
    /// The persistent freeze mask, flattened `[h · c]` (`true` = frozen).
    public var frozenMask: [Bool] {
        precondition(frozenCodes.shape == [numCodebooks, codebookSize],
                     "frozen_codes has shape \(frozenCodes.shape), expected [\(numCodebooks), \(codebookSize)]")
        return frozenCodes.value.scalars.map { $0 != 0 }
    }

    /// Frozen code indices of codebook `head` (ascending).
    public func frozenCodeIndices(head: Int = 0) -> [Int] {
        precondition(head >= 0 && head < numCodebooks, "frozenCodeIndices: head \(head) of \(numCodebooks)")
        let m = frozenMask
        return (0..<codebookSize).filter { m[head * codebookSize + $0] }
    }

    public func isFrozen(code: Int, head: Int = 0) -> Bool { frozenMask[head * codebookSize + code] }

    /// Whether every code of every head is held whole — frozen, or frozen in each of its components — so that no write
    /// path can change any code. (A frozen subspace is not counted: it holds a part of each code.)
    public var holdsEveryCode: Bool {
        let codes = frozenCodes.value.scalars, components = frozenComponents.value.scalars
        return codes.indices.allSatisfy { i in codes[i] != 0 || (0..<dim).allSatisfy { components[i * dim + $0] != 0 } }
    }

    /// Freezes codes of one codebook (`head`), or of every codebook when `head` is `nil`: from now on no
    /// write path changes them (EMA, expiry, k-means, any optimizer, checkpoints keep the mask).
    ///
    /// ```swift
    /// try vq.codebook.freeze(codes: 0..<32)            // codes 0–31 of every head
    /// ```
    ///
    /// - Throws: ``CodebookError/codeOutOfRange(code:codebookSize:)`` or ``CodebookError/headOutOfRange(head:numCodebooks:)``,
    ///   changing nothing: a code or head out of range is an error, never clamped or ignored.
    public func freeze(codes: some Sequence<Int>, head: Int? = nil) throws {
        try setFrozen(Array(codes), head: head, to: true)
    }

    /// Unfreezes codes (the same contract as ``freeze(codes:head:)``); a policy's record of having frozen
    /// them (``policyFrozenCodes(head:)``) is cleared with them.
    public func unfreeze(codes: some Sequence<Int>, head: Int? = nil) throws {
        try setFrozen(Array(codes), head: head, to: false)
    }

    /// Freezes (or unfreezes) every code of every codebook.
    public func freezeAllCodes(_ frozen: Bool = true) {
        frozenCodes.value = Tensor(repeating: frozen ? 1 : 0, shape: [numCodebooks, codebookSize])
    }

    private func setFrozen(_ codes: [Int], head: Int?, to value: Bool) throws {
        if let head, head < 0 || head >= numCodebooks { throw CodebookError.headOutOfRange(head: head, numCodebooks: numCodebooks) }
        if let bad = codes.first(where: { $0 < 0 || $0 >= codebookSize }) {
            throw CodebookError.codeOutOfRange(code: bad, codebookSize: codebookSize)
        }
        var m = frozenCodes.value.scalars, at = policyFrozenAt.value.scalars
        for h in head.map({ [$0] }) ?? Array(0..<numCodebooks) {
            for c in codes {
                m[h * codebookSize + c] = value ? 1 : 0
                if !value { at[h * codebookSize + c] = -1 }
            }
        }
        frozenCodes.value = Tensor(m, shape: [numCodebooks, codebookSize])
        if !value { policyFrozenAt.value = Tensor(at, shape: policyFrozenAt.shape) }
    }

    /// The elements of `embed` that no optimizer may write, derived from ``frozenCodes`` each time it
    /// is asked (the one source of truth: setting `frozenCodes.value` directly is honoured too).
    func embedFrozenElements() -> [Bool]? {
        let m = frozenMask
        let comps = frozenComponents.value.scalars
        let anyComponent = partialFreezeFlags().anyComponent
        guard m.contains(true) || anyComponent else { return nil }
        var out = [Bool](repeating: false, count: codeCount * dim)
        for r in 0..<codeCount {
            for j in 0..<dim { out[r * dim + j] = m[r] || comps[r * dim + j] != 0 }
        }
        return out
    }
}
