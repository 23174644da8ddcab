import Foundation
import VQTensor

/// The values a parameter's state may hold (``Parameter/domain``), checked when a state is loaded.
public enum ValueDomain: Sendable, Equatable {
    /// Any finite value (weights, codes, statistics of either sign).
    case finite
    /// Exactly the values the module was built with (a buffer the configuration determines, as LFQ's bit weights).
    case constant
    /// 0 or 1 (a mask, a done-flag).
    case flag
    /// Finite and ≥ 0 (counts, variances).
    case nonNegative
    /// Whole numbers in the range (step counters, -1 for "never").
    case wholeNumbers(ClosedRange<Int>)
    /// `[…, d, d]` blocks, each an orthogonal projector (symmetric, `P² = P`, entries within ±1, a whole trace) to
    /// float rounding — or all zeros.
    case orthogonalProjectors

    /// Whether `v` belongs to an element-wise domain; `built` is the value the module holds (for ``constant``).
    func admits(_ v: Float, built: Float) -> Bool {
        switch self {
        case .finite, .orthogonalProjectors: return true
        case .constant: return v == built
        case .flag: return v == 0 || v == 1
        case .nonNegative: return v >= 0
        case .wholeNumbers(let r): return v.rounded() == v && v >= Float(r.lowerBound) && v <= Float(r.upperBound)
        }
    }

    /// The elements (or, for projectors, the blocks) of `t` outside the domain: how many, and the first one's value (a
    /// block's trace). `built` is the module's own value (for ``constant``); NaN passes where `nanAllowed`.
    public func violations(of t: Tensor, built: Tensor, nanAllowed: Bool = false) -> (count: Int, first: Float)? {
        if case .orthogonalProjectors = self { return Self.projectorViolations(t) }
        let values = t.scalars, own = built.scalars
        var count = 0, first: Float = 0
        for i in values.indices where !(values[i].isNaN && nanAllowed) && !admits(values[i], built: own.count == values.count ? own[i] : .nan) {
            if count == 0 { first = values[i] }
            count += 1
        }
        return count == 0 ? nil : (count, first)
    }

    /// The `[d, d]` blocks of `t` that are not orthogonal projectors: symmetry and the entries' bound exactly to a
    /// tolerance, idempotence through a fixed probe (`P(Pv) = Pv`, O(d²) a block), the trace near a whole number.
    static func projectorViolations(_ t: Tensor) -> (count: Int, first: Float)? {
        guard t.rank >= 2, t.count > 0, let d = t.shape.last, t.shape[t.rank - 2] == d else { return t.count == 0 ? nil : (1, .nan) }
        let p = t.scalars, blocks = t.count / (d * d)
        let tol = 1e-4 * Double(max(d, 1))
        var count = 0, first: Float = 0
        let probe = (0..<d).map { sin(Double($0) + 1) }
        for b in 0..<blocks {
            let o = b * d * d
            var ok = true, trace = 0.0
            for r in 0..<d where ok {
                trace += Double(p[o + r * d + r])
                for c in 0..<d where !(abs(p[o + r * d + c]) <= 1 + 1e-4 && abs(Double(p[o + r * d + c]) - Double(p[o + c * d + r])) <= 1e-5) { ok = false }
            }
            if ok {
                func apply(_ v: [Double]) -> [Double] { (0..<d).map { r in (0..<d).reduce(0.0) { $0 + Double(p[o + r * d + $1]) * v[$1] } } }
                let w = apply(probe), u = apply(w)
                let err = zip(u, w).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
                let norm = probe.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
                ok = err <= tol * norm && abs(trace - trace.rounded()) <= tol
            }
            if !ok {
                if count == 0 { first = Float(trace) }
                count += 1
            }
        }
        return count == 0 ? nil : (count, first)
    }

    /// What the domain asks, for an error message.
    public var requirement: String {
        switch self {
        case .finite: return "finite"
        case .constant: return "the values its configuration determines"
        case .flag: return "0 or 1"
        case .nonNegative: return "≥ 0"
        case .wholeNumbers(let r): return "whole numbers in \(r.lowerBound)…\(r.upperBound)"
        case .orthogonalProjectors: return "orthogonal projectors (symmetric, P² = P; the value shown is a block's trace)"
        }
    }
}
