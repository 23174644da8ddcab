import Logging
import VQTensor

/// The base of every optimizer. It is the one place where freezing is enforced for training by
/// gradient: a parameter that is frozen as a whole is skipped, and a subclass's ``update(slot:value:grad:ranges:)``
/// is handed only the element ranges outside frozen rows, so neither a frozen row nor its optimizer
/// state (momentum, moments) can change — whatever the gradient, weight decay or momentum says.
///
/// A parameter whose gradient holds NaN or ±∞ in a writable element is left unchanged for that step
/// (and counted in ``skippedUpdates``) when ``skipsNonFiniteGradients`` is on (the default), so one bad
/// batch cannot poison the weights or the optimizer state.
open class Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public var skipsNonFiniteGradients = true
    public private(set) var skippedUpdates = 0
    let logger = Logger(label: "VQNN.Optimizer")

    public init(parameters: [Parameter], learningRate: Float) {
        var seen = Set<ObjectIdentifier>()
        self.parameters = parameters.filter { $0.kind == .trainable && seen.insert(ObjectIdentifier($0)).inserted }
        self.learningRate = learningRate
    }

    /// Applies one update to every trainable, unfrozen parameter that has a gradient.
    public func step() {
        for (slot, p) in parameters.enumerated() {
            guard !p.isFrozen, let g = p.grad else { continue }
            precondition(g.shape == p.shape, "Optimizer: gradient \(g.shape) for a parameter of shape \(p.shape)")
            let ranges = p.writableRanges
            if ranges.isEmpty { continue }
            if skipsNonFiniteGradients, ranges.contains(where: { r in g.scalars[r].contains { !$0.isFinite } }) {
                skippedUpdates += 1
                logger.warning("skipping the update of a parameter of shape \(p.shape): non-finite gradient")
                continue
            }
            g.withUnsafeScalars { gp in
                p.optimizerWrite { v in update(slot: slot, value: v, grad: gp, ranges: ranges) }
            }
        }
    }

    /// Clears the gradients of the optimized parameters.
    public func zeroGradients() {
        for p in parameters { p.grad = nil }
    }

    /// Updates elements of `value` inside `ranges` only (and only the same elements of any state).
    open func update(slot: Int, value: UnsafeMutableBufferPointer<Float>, grad: UnsafeBufferPointer<Float>, ranges: [Range<Int>]) {
        preconditionFailure("\(type(of: self)) does not implement update(slot:value:grad:ranges:)")
    }

    /// Per-parameter state buffers, allocated on first use with zeros.
    final class StateBuffers {
        var buffers: [[Float]?]
        init(_ n: Int) { buffers = Array(repeating: nil, count: n) }
        func ensure(_ slot: Int, count: Int) {
            if buffers[slot] == nil { buffers[slot] = [Float](repeating: 0, count: count) }
        }
    }
}

/// Stochastic gradient descent with PyTorch's `torch.optim.SGD` update:
/// `g ← g + λθ`; with momentum `b ← μb + (1 − τ)g` (`b ← g` on the first step), then `g ← g + μb`
/// (Nesterov) or `g ← b`; `θ ← θ − ηg`.
public final class SGD: Optimizer {
    public var momentum: Float
    public var dampening: Float
    public var weightDecay: Float
    public var nesterov: Bool
    private let state: StateBuffers
    private var started: [Bool]

    public init(parameters: [Parameter], learningRate: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) {
        precondition(!nesterov || (momentum > 0 && dampening == 0), "SGD: Nesterov needs momentum > 0 and no dampening")
        self.momentum = momentum
        self.dampening = dampening
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        let n = Set(parameters.map(ObjectIdentifier.init)).count
        state = StateBuffers(n)
        started = Array(repeating: false, count: n)
        super.init(parameters: parameters, learningRate: learningRate)
    }

    public override func update(slot: Int, value: UnsafeMutableBufferPointer<Float>, grad: UnsafeBufferPointer<Float>, ranges: [Range<Int>]) {
        let lr = learningRate, wd = weightDecay, mu = momentum, damp = 1 - dampening
        if mu != 0 { state.ensure(slot, count: value.count) }
        let first = !started[slot]
        started[slot] = true
        var buffer = state.buffers[slot] ?? []
        state.buffers[slot] = nil  // unique while updated in place below
        defer { if mu != 0 { state.buffers[slot] = buffer } }
        let nesterov = self.nesterov
        buffer.withUnsafeMutableBufferPointer { buf in
            for r in ranges {
                for i in r {
                    var g = grad[i]
                    if wd != 0 { g = g + wd * value[i] }
                    if mu != 0 {
                        let b = first ? g : mu * buf[i] + damp * g
                        buf[i] = b
                        g = nesterov ? g + mu * b : b
                    }
                    value[i] = value[i] - lr * g
                }
            }
        }
    }

    /// The momentum buffer of a parameter (nil before the first step or without momentum).
    public func momentumBuffer(of p: Parameter) -> [Float]? {
        parameters.firstIndex { $0 === p }.flatMap { state.buffers[$0] }
    }
}

/// Adam (Kingma & Ba, 2015) with PyTorch's `torch.optim.Adam` arithmetic; with `decoupled` it is
/// AdamW (Loshchilov & Hutter, 2019): `θ ← θ(1 − ηλ)` before the Adam step instead of `g ← g + λθ`.
///
/// `m ← lerp(m, g, 1 − β₁)`, `v ← β₂v + (1 − β₂)g²`, `θ ← θ − (η / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)`,
/// the bias corrections computed in double precision as PyTorch does.
public class Adam: Optimizer {
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public var weightDecay: Float
    let decoupled: Bool
    private let m: StateBuffers
    private let v: StateBuffers
    private var steps: [Int]

    public init(parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                eps: Float = 1e-8, weightDecay: Float = 0) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        self.decoupled = false
        let n = Set(parameters.map(ObjectIdentifier.init)).count
        (m, v, steps) = (StateBuffers(n), StateBuffers(n), Array(repeating: 0, count: n))
        super.init(parameters: parameters, learningRate: learningRate)
    }

    init(decoupled parameters: [Parameter], learningRate: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        self.decoupled = true
        let n = Set(parameters.map(ObjectIdentifier.init)).count
        (m, v, steps) = (StateBuffers(n), StateBuffers(n), Array(repeating: 0, count: n))
        super.init(parameters: parameters, learningRate: learningRate)
    }

    public override func update(slot: Int, value: UnsafeMutableBufferPointer<Float>, grad: UnsafeBufferPointer<Float>, ranges: [Range<Int>]) {
        m.ensure(slot, count: value.count)
        v.ensure(slot, count: value.count)
        // Saturating: a count restored from outside may be as large as `Int.max` (β^t is 0 long before).
        if steps[slot] < Int.max { steps[slot] += 1 }
        let t = Double(steps[slot])
        let bc1 = 1 - Double.pow(Double(beta1), t)
        let bc2 = 1 - Double.pow(Double(beta2), t)
        let stepSize = Float(Double(learningRate) / bc1)
        let bc2Sqrt = Float(bc2.squareRoot())
        let w1 = Float(1 - Double(beta1)), w2 = Float(1 - Double(beta2))
        let (b2, wd, eps, decoupled) = (beta2, weightDecay, eps, self.decoupled)
        let decay = Float(1 - Double(learningRate) * Double(weightDecay))  // PyTorch: 1 - lr·λ in double
        var mBuf = m.buffers[slot]!, vBuf = v.buffers[slot]!
        (m.buffers[slot], v.buffers[slot]) = (nil, nil)  // unique while updated in place below
        defer { (m.buffers[slot], v.buffers[slot]) = (mBuf, vBuf) }
        mBuf.withUnsafeMutableBufferPointer { mp in
            vBuf.withUnsafeMutableBufferPointer { vp in
                for r in ranges {
                    for i in r {
                        var g = grad[i]
                        if wd != 0 {
                            if decoupled { value[i] = value[i] * decay } else { g = g + wd * value[i] }
                        }
                        let mi = torchLerp(mp[i], g, w1)
                        let vi = vp[i] * b2 + w2 * g * g
                        mp[i] = mi
                        vp[i] = vi
                        let denom = vi.squareRoot() / bc2Sqrt + eps
                        value[i] = value[i] - stepSize * (mi / denom)
                    }
                }
            }
        }
    }

    /// First and second moments of a parameter (nil before its first step).
    public func moments(of p: Parameter) -> (m: [Float], v: [Float])? {
        guard let i = parameters.firstIndex(where: { $0 === p }), let a = m.buffers[i], let b = v.buffers[i] else { return nil }
        return (a, b)
    }

    /// Steps taken for a parameter (the `t` of the bias corrections).
    public func stepCount(of p: Parameter) -> Int { parameters.firstIndex { $0 === p }.map { steps[$0] } ?? 0 }

    /// Restores a parameter's moments and step count (as ``moments(of:)`` and ``stepCount(of:)`` gave them),
    /// so a resumed run continues bit-identically. Throws, changing nothing, if `p` is not optimized here or
    /// the moments do not fit it or are not moments (NaN, infinite, a negative second moment).
    public func restore(_ p: Parameter, m first: [Float], v second: [Float], steps count: Int) throws {
        let i = try checkRestorable(p, m: first, v: second, steps: count)
        (m.buffers[i], v.buffers[i], steps[i]) = (first, second, count)
    }

    /// Throws what ``restore(_:m:v:steps:)`` would throw, changing nothing; returns the parameter's slot. Restoring
    /// several parameters as one (`TrainingState` of VectorQuantize) checks them all first.
    @discardableResult
    public func checkRestorable(_ p: Parameter, m first: [Float], v second: [Float], steps count: Int) throws -> Int {
        guard let i = parameters.firstIndex(where: { $0 === p }) else { throw OptimizerStateError("not a parameter of this optimizer") }
        guard first.count == p.value.count, second.count == p.value.count, count >= 0 else {
            throw OptimizerStateError("moments of \(first.count) and \(second.count) values, step \(count), for a parameter of \(p.value.count)")
        }
        // Adam's second moment is a running mean of squares: finite and never negative (a negative one would make
        // √v NaN and every later step of the parameter NaN).
        guard first.allSatisfy(\.isFinite), second.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw OptimizerStateError("moments with NaN, infinite or (second moment) negative values")
        }
        return i
    }
}

/// Optimizer state that does not fit the optimizer it is restored into.
public struct OptimizerStateError: Error, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
}

/// AdamW: Adam with decoupled weight decay (default λ = 0.01, as `torch.optim.AdamW`).
public final class AdamW: Adam {
    public override init(parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                eps: Float = 1e-8, weightDecay: Float = 0.01) {
        super.init(decoupled: parameters, learningRate: learningRate, beta1: beta1, beta2: beta2, eps: eps,
                   weightDecay: weightDecay)
    }
}

extension Double {
    static func pow(_ x: Double, _ y: Double) -> Double { _pow(x, y) }
}
