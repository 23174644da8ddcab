import VQTensor

/// A tensor owned by a module: a trainable parameter (a gradient leaf) or a buffer (state that is
/// saved but never trained, such as EMA statistics).
///
/// A parameter can be frozen as a whole (``isFrozen``) or row by row (``frozenRows``). Optimizers
/// never write a frozen parameter or a frozen row, nor its optimizer state: the freeze is enforced
/// once, in ``Optimizer``, not by zeroing gradients.
///
/// ```swift
/// let w = Parameter(Tensor.zeros([4, 3]))
/// w.freezeRows([0, 2])          // rows 0 and 2 keep their values through every optimizer step
/// ```
public final class Parameter: @unchecked Sendable {
    public enum Kind: Sendable { case trainable, buffer }

    public let kind: Kind
    private var _value: Tensor
    /// Whole-parameter freeze: optimizers skip it entirely.
    public var isFrozen: Bool
    /// Whether a state dictionary may omit this tensor (it then keeps its value): for this library's
    /// own extra state, so that PyTorch state dicts load.
    public var isOptionalInState = false
    private var rowMask: [Bool]?

    public init(_ value: Tensor, kind: Kind = .trainable, frozen: Bool = false) {
        self.kind = kind
        self._value = kind == .trainable ? value.detached().requiringGradient() : value.detached()
        self.isFrozen = frozen || kind == .buffer
    }

    /// The current value. For a trainable parameter it is a gradient leaf; assigning a new value keeps
    /// the leaf (and its hooks and accumulated gradient).
    public var value: Tensor {
        get { _value }
        set {
            precondition(newValue.shape == _value.shape || kind == .buffer,
                         "Parameter: assigning shape \(newValue.shape) to a parameter of shape \(_value.shape)")
            if kind == .trainable {
                _value = newValue.detached().attachingNode(of: _value)
            } else {
                if newValue.shape != _value.shape { rowMask = nil }
                _value = newValue.detached()
            }
        }
    }

    public var shape: [Int] { _value.shape }

    /// Writes the elements in place (no gradient recorded), keeping the leaf.
    public func withUnsafeMutableScalars<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        var v = _value
        _value = Tensor.zeros([0])  // release the only other reference so the write does not copy
        defer { _value = v }
        return try v.withUnsafeMutableScalars(body)
    }

    /// The accumulated gradient (trainable parameters), readable and writable between backward and
    /// the optimizer step.
    public var grad: Tensor? {
        get { kind == .trainable ? _value.grad : nil }
        set {
            precondition(kind == .trainable, "grad: a buffer has no gradient")
            _value.grad = newValue
        }
    }

    /// Registers a closure that sees, and may replace, every gradient flowing into this parameter
    /// before any optimizer reads it. It always fires, whatever view of the parameter the forward used.
    public func registerGradientHook(_ hook: @escaping @Sendable (Tensor) -> Tensor) {
        precondition(kind == .trainable, "registerGradientHook: a buffer has no gradient")
        _value.registerGradientHook(hook)
    }

    // MARK: Row freezing

    /// A row is a slice along the last axis (rank ≥ 2), or one element (rank ≤ 1).
    public var rowLength: Int { shape.count >= 2 ? shape[shape.count - 1] : 1 }
    public var rowCount: Int { rowLength == 0 ? 0 : _value.count / rowLength }

    /// The frozen rows, ascending.
    public var frozenRows: [Int] {
        guard let rowMask else { return [] }
        return rowMask.indices.filter { rowMask[$0] }
    }

    public func isRowFrozen(_ row: Int) -> Bool { isFrozen || (rowMask?[row] ?? false) }

    /// The per-row freeze mask (`true` = frozen), `nil` when no row is frozen.
    public var frozenRowMask: [Bool]? { rowMask }

    public func freezeRows(_ rows: some Sequence<Int>) {
        var m = rowMask ?? [Bool](repeating: false, count: rowCount)
        for r in rows {
            precondition(r >= 0 && r < rowCount, "freezeRows: row \(r) out of range 0..<\(rowCount) for shape \(shape)")
            m[r] = true
        }
        rowMask = m
    }

    public func unfreezeRows(_ rows: some Sequence<Int>) {
        guard var m = rowMask else { return }
        for r in rows {
            precondition(r >= 0 && r < rowCount, "unfreezeRows: row \(r) out of range 0..<\(rowCount) for shape \(shape)")
            m[r] = false
        }
        rowMask = m.contains(true) ? m : nil
    }

    /// Replaces the whole row mask (`nil` or all-false unfreezes every row).
    public func setFrozenRowMask(_ mask: [Bool]?) {
        if let mask {
            precondition(mask.count == rowCount, "setFrozenRowMask: \(mask.count) entries for \(rowCount) rows (shape \(shape))")
            rowMask = mask.contains(true) ? mask : nil
        } else {
            rowMask = nil
        }
    }

    /// Element ranges that may be written: everything outside frozen rows, merged into maximal runs.
    /// Empty when the parameter is frozen as a whole.
    public var writableRanges: [Range<Int>] {
        if isFrozen { return [] }
        guard let rowMask else { return _value.count > 0 ? [0..<_value.count] : [] }
        var out: [Range<Int>] = []
        var start: Int? = nil
        for r in 0...rowMask.count {
            let live = r < rowMask.count && !rowMask[r]
            if live, start == nil { start = r }
            if !live, let s = start {
                out.append((s * rowLength)..<(r * rowLength))
                start = nil
            }
        }
        return out
    }
}
