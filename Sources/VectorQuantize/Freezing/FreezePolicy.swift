import VQTensor

/// What a ``FreezePolicy`` sees at one EMA update of a codebook (flattened `[h · c]` per code).
public struct FreezeContext {
    /// The update's number: updates with a policy set, counted in the codebook's `steps` buffer (saved).
    public let step: Int
    public let numCodebooks: Int
    public let codebookSize: Int
    /// This batch's count of vectors per code.
    public let counts: [Float]
    /// This batch's sum of vectors per code, `[h, c, d]`.
    public let sums: Tensor
    /// How far each code would move if updated with full weight now: `‖e′ − e‖ / max(‖e‖, 1e-12)`.
    public let movement: [Float]
    /// The EMA usage (`cluster_size`) before the update.
    public let usage: [Float]
    /// Codes frozen before this update (mask, or an earlier decision of a policy).
    public let frozen: [Bool]
}

/// What a policy decides for one update: codes to freeze from now on (persistently: they are added to
/// the freeze mask before this update, and the step is recorded in `policy_frozen_at`), and optional
/// per-code weights for this update only (multiplied into `ema_update_weight`; 0 holds a code). Codes are flat
/// indices `h · c` of the codebook, and each weight must keep the step's lerp fraction `(1 − decay) · weight` within
/// [0, 1]: a decision outside either is the policy's error and traps, naming the code.
public struct FreezeDecision: Sendable, Equatable {
    public var freeze: [Int]
    public var weights: [Float]?
    public init(freeze: [Int] = [], weights: [Float]? = nil) {
        self.freeze = freeze
        self.weights = weights
    }
}

/// Custom freezing logic, consulted by a codebook at every EMA update with what it knows (step, the
/// batch's counts and sums, how far each code would move, usage) — the third use of partial freezing:
/// write a type, set it with ``Codebook/setFreezePolicy(_:)``; no subclass of the quantizer, no fork.
/// Whatever a policy freezes is frozen exactly, like any frozen code.
///
/// ```swift
/// struct FreezeBusyCodes: FreezePolicy {
///     mutating func decide(_ c: FreezeContext) -> FreezeDecision {
///         FreezeDecision(freeze: c.usage.indices.filter { c.usage[$0] > 50 && !c.frozen[$0] })
///     }
/// }
/// try vq.codebook.setFreezePolicy(FreezeBusyCodes().or(.afterStep(10_000)))
/// ```
public protocol FreezePolicy {
    mutating func decide(_ context: FreezeContext) -> FreezeDecision
    /// Checks the policy's own arguments against the codebook it is being set on: ``Codebook/setFreezePolicy(_:)``
    /// calls it first and, when it throws, sets nothing. The default checks nothing.
    func validate(numCodebooks: Int, codebookSize: Int) throws
}

extension FreezePolicy {
    public func validate(numCodebooks: Int, codebookSize: Int) throws {}
}

/// Freezes a code once it has moved less than `tolerance` (relative) in each of `patience` consecutive
/// updates in which it was used — codes that are already learned, found automatically. Updates in
/// which a code gets no vector neither count nor reset its streak.
public struct ConvergedPolicy: FreezePolicy, Sendable {
    public let tolerance: Float
    public let patience: Int
    /// Consecutive quiet updates per code.
    public private(set) var streaks: [Int] = []

    public init(tolerance: Float, patience: Int) {
        precondition(tolerance >= 0 && patience >= 1, "ConvergedPolicy: tolerance \(tolerance) ≥ 0, patience \(patience) ≥ 1")
        self.tolerance = tolerance
        self.patience = patience
    }

    public mutating func decide(_ c: FreezeContext) -> FreezeDecision {
        if streaks.count != c.counts.count { streaks = Array(repeating: 0, count: c.counts.count) }
        var freeze: [Int] = []
        for i in c.counts.indices where !c.frozen[i] && c.counts[i] > 0 {
            streaks[i] = c.movement[i] < tolerance ? streaks[i] + 1 : 0
            if streaks[i] >= patience { freeze.append(i) }
        }
        return FreezeDecision(freeze: freeze)
    }
}

/// Freezes every code (or the given flat code indices) from update `step` on.
public struct AfterStepPolicy: FreezePolicy, Sendable {
    public let step: Int
    public let codes: [Int]?
    public init(step: Int, codes: [Int]? = nil) {
        self.step = step
        self.codes = codes
    }
    /// The codes (flat indices `h · c`) must be codes of the codebook: one out of range is an error, never ignored.
    public func validate(numCodebooks: Int, codebookSize: Int) throws {
        let count = numCodebooks * codebookSize
        if let bad = codes?.first(where: { $0 < 0 || $0 >= count }) { throw CodebookError.codeOutOfRange(code: bad, codebookSize: count) }
    }
    public mutating func decide(_ c: FreezeContext) -> FreezeDecision {
        guard c.step >= step else { return FreezeDecision() }
        return FreezeDecision(freeze: (codes ?? Array(c.frozen.indices)).filter { $0 >= 0 && $0 < c.frozen.count && !c.frozen[$0] })
    }
}

/// Freezes codes whose EMA usage (`cluster_size`) has reached `threshold`.
public struct UsagePolicy: FreezePolicy, Sendable {
    public let threshold: Float
    public init(atLeast threshold: Float) { self.threshold = threshold }
    /// A NaN threshold would never freeze anything.
    public func validate(numCodebooks: Int, codebookSize: Int) throws {
        if threshold.isNaN { throw CodebookError.notFinite(what: "the usage threshold") }
    }
    public mutating func decide(_ c: FreezeContext) -> FreezeDecision {
        FreezeDecision(freeze: c.usage.indices.filter { !c.frozen[$0] && c.usage[$0] >= threshold })
    }
}

/// Two policies together: codes either freezes, and the product of their weights.
public struct EitherPolicy<A: FreezePolicy, B: FreezePolicy>: FreezePolicy {
    public var first: A
    public var second: B
    public func validate(numCodebooks: Int, codebookSize: Int) throws {
        try first.validate(numCodebooks: numCodebooks, codebookSize: codebookSize)
        try second.validate(numCodebooks: numCodebooks, codebookSize: codebookSize)
    }
    public mutating func decide(_ c: FreezeContext) -> FreezeDecision {
        let a = first.decide(c), b = second.decide(c)
        let weights: [Float]? = switch (a.weights, b.weights) {
        case (nil, nil): nil
        case (let w?, nil), (nil, let w?): w
        case (let x?, let y?): zip(x, y).map { $0 * $1 }
        }
        return FreezeDecision(freeze: Array(Set(a.freeze + b.freeze)).sorted(), weights: weights)
    }
}

extension FreezePolicy {
    /// This policy and `other` together (see ``EitherPolicy``).
    public func or<P: FreezePolicy>(_ other: P) -> EitherPolicy<Self, P> { EitherPolicy(first: self, second: other) }
}

extension FreezePolicy where Self == ConvergedPolicy {
    /// ``ConvergedPolicy``: freeze codes that stopped moving.
    public static func converged(tolerance: Float, patience: Int = 5) -> ConvergedPolicy {
        ConvergedPolicy(tolerance: tolerance, patience: patience)
    }
}

extension FreezePolicy where Self == AfterStepPolicy {
    /// ``AfterStepPolicy``: freeze every code (or `codes`) from update `step` on.
    public static func afterStep(_ step: Int, codes: [Int]? = nil) -> AfterStepPolicy { AfterStepPolicy(step: step, codes: codes) }
}

extension FreezePolicy where Self == UsagePolicy {
    /// ``UsagePolicy``: freeze codes used at least `threshold` times (EMA count).
    public static func usage(atLeast threshold: Float) -> UsagePolicy { UsagePolicy(atLeast: threshold) }
}

extension Codebook {
    /// Sets the policy consulted at every EMA update (replacing any earlier one).
    ///
    /// ```swift
    /// try vq.codebook.setFreezePolicy(.converged(tolerance: 0.005, patience: 20))
    /// ```
    ///
    /// - Throws: ``CodebookError/policyNeedsEMA`` on a codebook learned by gradient (`learnable_codebook`):
    ///   a policy judges the moves of the EMA update, which such a codebook does not make; or what the policy's
    ///   ``FreezePolicy/validate(numCodebooks:codebookSize:)`` throws (a code out of range, a NaN threshold) —
    ///   setting nothing either way.
    public func setFreezePolicy(_ policy: some FreezePolicy) throws {
        guard embed.kind != .trainable && configuration.emaUpdate else { throw CodebookError.policyNeedsEMA }
        try policy.validate(numCodebooks: numCodebooks, codebookSize: codebookSize)
        freezePolicy = policy
    }

    /// Removes the policy; what it froze stays frozen (``unfreeze(codes:head:)`` releases codes).
    public func removeFreezePolicy() { freezePolicy = nil }

    /// Codes a policy froze, with the update at which it froze them, for codebook `head`.
    public func policyFrozenCodes(head: Int = 0) -> [(code: Int, step: Int)] {
        let at = policyFrozenAt.value.scalars
        return (0..<codebookSize).compactMap { c in
            let s = at[head * codebookSize + c]
            return s >= 0 ? (c, Int(s)) : nil
        }
    }

    /// Runs the policy for one update: the step counter advances, the decided codes are frozen (and their
    /// step recorded), and the decision's weights are returned to multiply this update's weights.
    func consultPolicy(counts: Tensor, sums: Tensor, baseWeights: [Float]) -> [Float]? {
        guard var policy = freezePolicy else { return nil }
        let step = Int(steps.value.item) + 1
        steps.value = Tensor(Float(step))
        let context = FreezeContext(step: step, numCodebooks: numCodebooks, codebookSize: codebookSize, counts: counts.scalars,
                                    sums: sums, movement: proposedMovement(counts: counts, sums: sums, weights: baseWeights),
                                    usage: clusterSize.value.scalars, frozen: frozenMask)
        let decision = policy.decide(context)
        freezePolicy = policy
        if !decision.freeze.isEmpty {
            var mask = frozenCodes.value.scalars, at = policyFrozenAt.value.scalars
            if let bad = decision.freeze.first(where: { $0 < 0 || $0 >= codeCount }) {
                preconditionFailure("FreezePolicy: decided to freeze code \(bad), outside the \(codeCount) codes (flat indices h · c)")
            }
            for i in decision.freeze where mask[i] == 0 {
                mask[i] = 1
                at[i] = Float(step)
            }
            frozenCodes.value = Tensor(mask, shape: frozenCodes.shape)
            policyFrozenAt.value = Tensor(at, shape: policyFrozenAt.shape)
        }
        if let w = decision.weights {
            precondition(w.count == codeCount, "FreezePolicy: \(w.count) weights for \(codeCount) codes")
        }
        return decision.weights
    }

    /// `‖e′ − e‖ / ‖e‖` per code for an EMA step with `weights` (lerp weights, `[h · c]`): the statistics
    /// after the step and the Laplace-smoothed recompute, without writing anything.
    func proposedMovement(counts: Tensor, sums: Tensor, weights: [Float]) -> [Float] {
        let (h, c, d) = (numCodebooks, codebookSize, dim)
        let eps = Float(configuration.eps), ceps = Float(Double(c) * configuration.eps)
        let cs = clusterSize.value.scalars, avg = embedAverage.value.scalars, e = embed.value.scalars
        let n = counts.scalars, s = sums.scalars
        var out = [Float](repeating: 0, count: h * c)
        for hh in 0..<h {
            var newCs = [Float](repeating: 0, count: c)
            for k in 0..<c { newCs[k] = cs[hh * c + k] + weights[hh * c + k] * (n[hh * c + k] - cs[hh * c + k]) }
            let smoothed = newCs.withUnsafeBufferPointer { Self.laplaceSmoothed($0, total: newCs.reduce(0, +), eps: eps, ceps: ceps) }
            for k in 0..<c {
                let i = hh * c + k
                let scale = smoothed[k]
                var moved: Float = 0, norm: Float = 0
                for j in 0..<d {
                    let a = avg[i * d + j] + weights[i] * (s[i * d + j] - avg[i * d + j])
                    let delta = a / scale - e[i * d + j]
                    moved += delta * delta
                    norm += e[i * d + j] * e[i * d + j]
                }
                out[i] = moved.squareRoot() / Swift.max(norm.squareRoot(), 1e-12)
            }
        }
        return out
    }
}
