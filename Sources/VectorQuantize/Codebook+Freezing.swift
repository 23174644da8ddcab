import VQNN
import VQTensor

/// Errors of codebook editing.
public enum CodebookError: Error, Equatable, CustomStringConvertible {
    case codeOutOfRange(code: Int, codebookSize: Int)
    case headOutOfRange(head: Int, numCodebooks: Int)
    case shapeMismatch(expected: [Int], found: [Int])
    case dimensionOutOfRange(dimension: Int, dim: Int)
    case notOrthonormal(deviation: Float)

    public var description: String {
        switch self {
        case .codeOutOfRange(let c, let n): return "code \(c) out of range 0..<\(n)"
        case .headOutOfRange(let h, let n): return "head \(h) out of range 0..<\(n)"
        case .shapeMismatch(let e, let f): return "expected shape \(e), found \(f)"
        case .dimensionOutOfRange(let j, let d): return "dimension \(j) out of range 0..<\(d)"
        case .notOrthonormal(let dev): return "the basis rows are not orthonormal (largest deviation of B·Bᵀ from I: \(dev))"
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

    /// Freezes codes of one codebook (`head`), or of every codebook when `head` is `nil`.
    /// Throws and changes nothing when a code or head is out of range.
    public func freeze(codes: some Sequence<Int>, head: Int? = nil, strict: Bool) throws {
        try setFrozen(Array(codes), head: head, to: true, strict: strict)
    }

    /// Freezes codes, ignoring codes or heads that are out of range.
    public func freeze(codes: some Sequence<Int>, head: Int? = nil) {
        try! setFrozen(Array(codes), head: head, to: true, strict: false)
    }

    /// Unfreezes codes (strict form throws on out-of-range codes or heads).
    public func unfreeze(codes: some Sequence<Int>, head: Int? = nil, strict: Bool) throws {
        try setFrozen(Array(codes), head: head, to: false, strict: strict)
    }

    /// Unfreezes codes, ignoring codes or heads that are out of range.
    public func unfreeze(codes: some Sequence<Int>, head: Int? = nil) {
        try! setFrozen(Array(codes), head: head, to: false, strict: false)
    }

    /// Freezes (or unfreezes) every code of every codebook.
    public func freezeAllCodes(_ frozen: Bool = true) {
        frozenCodes.value = Tensor(repeating: frozen ? 1 : 0, shape: [numCodebooks, codebookSize])
    }

    private func setFrozen(_ codes: [Int], head: Int?, to value: Bool, strict: Bool) throws {
        if let head, head < 0 || head >= numCodebooks {
            if strict { throw CodebookError.headOutOfRange(head: head, numCodebooks: numCodebooks) }
            logger.warning("freeze: head \(head) out of range 0..<\(numCodebooks), ignored")
            return
        }
        if strict, let bad = codes.first(where: { $0 < 0 || $0 >= codebookSize }) {
            throw CodebookError.codeOutOfRange(code: bad, codebookSize: codebookSize)
        }
        var m = frozenCodes.value.scalars
        let heads = head.map { [$0] } ?? Array(0..<numCodebooks)
        for h in heads {
            for c in codes where c >= 0 && c < codebookSize { m[h * codebookSize + c] = value ? 1 : 0 }
        }
        frozenCodes.value = Tensor(m, shape: [numCodebooks, codebookSize])
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
