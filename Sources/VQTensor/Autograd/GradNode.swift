import Synchronization
/// A node of the autograd graph: the operation that produced a tensor and the nodes of its inputs.
///
/// Leaves (tensors created with ``Tensor/requiringGradient()``) accumulate their gradient in
/// ``Tensor/grad`` and run their hooks first. Nodes are classes so that copies of a tensor share one node.
///
/// A node is `Sendable`: its only mutable state, a leaf's gradient and hooks, is behind a lock.
public final class GradNode: Sendable {
    let op: Op
    let inputs: [GradNode?]
    let shape: [Int]
    private struct LeafState {
        var grad: Tensor?
        var hooks: [@Sendable (Tensor) -> Tensor] = []
    }
    private let leafState = Mutex(LeafState())
    /// The accumulated gradient of a leaf.
    var grad: Tensor? {
        get { leafState.withLock { $0.grad } }
        set { leafState.withLock { $0.grad = newValue } }
    }
    /// Hooks of a leaf, in registration order; each sees and may replace the incoming gradient.
    var hooks: [@Sendable (Tensor) -> Tensor] {
        get { leafState.withLock { $0.hooks } }
        set { leafState.withLock { $0.hooks = newValue } }
    }

    init(op: Op, inputs: [GradNode?], shape: [Int]) {
        self.op = op
        self.inputs = inputs
        self.shape = shape
    }

    var isLeaf: Bool {
        if case .leaf = op { return true }
        return false
    }
}

/// Whether operations record the autograd graph on this task (see ``withoutGradient(_:)``).
public enum GradMode {
    @TaskLocal public static var isEnabled = true
}

/// Runs `body` without recording the autograd graph: results do not require gradients.
public func withoutGradient<R>(_ body: () throws -> R) rethrows -> R {
    try GradMode.$isEnabled.withValue(false) { try body() }
}

extension Tensor {
    /// Whether this tensor is part of the autograd graph.
    public var requiresGradient: Bool { node != nil }

    /// A leaf that accumulates its gradient in ``grad``. Calling it on a tensor that already
    /// requires gradients starts a new leaf (the old graph is cut).
    public func requiringGradient() -> Tensor {
        Tensor(shape: shape, node: GradNode(op: .leaf, inputs: [], shape: shape), scalars: scalars)
    }

    /// The same values, cut from the graph (stop-gradient).
    public func detached() -> Tensor { Tensor(shape: shape, node: nil, scalars: scalars) }

    /// The accumulated gradient of a leaf, readable and writable between ``backward(_:)`` and an
    /// optimizer step. `nil` for non-leaves and before any backward pass.
    public var grad: Tensor? {
        get { node?.isLeaf == true ? node?.grad : nil }
        nonmutating set {
            guard let node, node.isLeaf else {
                preconditionFailure("grad: only a leaf tensor (requiringGradient()) stores a gradient")
            }
            if let newValue {
                precondition(newValue.shape == shape, "grad: shape \(newValue.shape) for a leaf of shape \(shape)")
            }
            node.grad = newValue?.detached()
        }
    }

    /// Registers a hook on a leaf: it receives every gradient flowing into the leaf and returns the
    /// gradient to accumulate (return its argument to only observe).
    public func registerGradientHook(_ hook: @escaping @Sendable (Tensor) -> Tensor) {
        guard let node, node.isLeaf else {
            preconditionFailure("registerGradientHook: only a leaf tensor (requiringGradient()) takes hooks")
        }
        node.hooks.append(hook)
    }

    /// Re-attaches this tensor's values to the leaf node of `leaf` (used by parameters whose values
    /// are replaced in place by an optimizer).
    public func attachingNode(of leaf: Tensor) -> Tensor {
        precondition(leaf.shape == shape, "attachingNode: shape \(shape) vs leaf \(leaf.shape)")
        return Tensor(shape: shape, node: leaf.node, scalars: scalars)
    }

    /// A differentiable function computed outside the graph: `value` is its result for `input`, and
    /// `backward` turns the gradient of the result into the gradient of `input` (same shape as `input`).
    /// For fused kernels whose intermediate values would not fit in memory (e.g. LFQ's entropy over 2¹⁶
    /// codes, recomputed in the backward instead of saved).
    ///
    /// ```swift
    /// let y = Tensor.custom(x.squared().detached(), input: x) { g in g * 2 * x.detached() }   // y = x², dy/dx = 2x
    /// ```
    public static func custom(_ value: Tensor, input: Tensor, backward: @escaping @Sendable (Tensor) -> Tensor) -> Tensor {
        let shape = input.shape
        return record(value.detached(), .custom({ g in
            let r = backward(g)
            precondition(r.shape == shape, "Tensor.custom: backward returned \(r.shape) for an input of shape \(shape)")
            return r
        }), [input])
    }

    /// Records `op` for a result computed from `inputs` (a no-op when none requires gradients or the
    /// graph is off).
    static func record(_ result: Tensor, _ op: @autoclosure () -> Op, _ inputs: [Tensor]) -> Tensor {
        guard inputs.contains(where: { $0.node != nil }), GradMode.isEnabled else { return result }
        var r = result
        r.node = GradNode(op: op(), inputs: inputs.map(\.node), shape: result.shape)
        return r
    }
}
