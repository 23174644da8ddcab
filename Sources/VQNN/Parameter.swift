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
public final class Parameter {
    public enum Kind: Sendable { case trainable, buffer }

    public let kind: Kind
    private var _value: Tensor
    /// Whole-parameter freeze: optimizers skip it entirely.
    public var isFrozen: Bool
    /// Whether a state dictionary may omit this tensor (it then keeps its value): for this library's
    /// own extra state, so that PyTorch state dicts load.
    public var isOptionalInState = false
    /// For a buffer kept empty until first needed (a `[d, d]` projector per codebook costs 4·d² bytes whether
    /// used or not): the shape it stands for; an empty value means zeros of that shape. A state dictionary may
    /// hold either the empty tensor or one of this shape.
    public var logicalShape: [Int]?
    private var rowMask: [Bool]?
    private var derivedMask: (() -> [Bool]?)?
    private var updateConstraint: ((UnsafeMutableBufferPointer<Float>) -> Void)?
    /// Counts the writes to the value (assignments and in-place writes; as PyTorch's `tensor._version`): a
    /// summary derived from the value stays valid while the version is unchanged.
    public private(set) var version = 0

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
            version &+= 1
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
        version &+= 1
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

    // MARK: Row and element freezing

    /// A row is a slice along the last axis (rank ≥ 2), or one element (rank ≤ 1).
    public var rowLength: Int { shape.count >= 2 ? shape[shape.count - 1] : 1 }
    public var rowCount: Int { rowLength == 0 ? 0 : _value.count / rowLength }

    /// Whether the frozen elements are derived from an owner's state (``deriveFrozenElements(from:)``)
    /// instead of set on the parameter.
    public var hasDerivedFreezeMask: Bool { derivedMask != nil }

    /// The frozen rows, ascending (for a derived mask: the rows whose every element is frozen).
    public var frozenRows: [Int] {
        guard let m = frozenRowMask else { return [] }
        return m.indices.filter { m[$0] }
    }

    public func isRowFrozen(_ row: Int) -> Bool { isFrozen || (frozenRowMask?[row] ?? false) }

    /// The per-row freeze mask (`true` = frozen), `nil` when no row is frozen. For a derived mask, a row
    /// counts as frozen when every element of it is.
    public var frozenRowMask: [Bool]? {
        guard let derivedMask else { return rowMask }
        guard let e = derivedMask() else { return nil }
        let len = rowLength
        let rows = (0..<rowCount).map { r in e[(r * len)..<(r * len + len)].allSatisfy { $0 } }
        return rows.contains(true) ? rows : nil
    }

    /// The per-element freeze mask (`true` = frozen, row-major over ``shape``), `nil` when nothing is
    /// frozen element-wise. The whole-parameter ``isFrozen`` is not included.
    public var frozenElementMask: [Bool]? {
        if let derivedMask { return derivedMask() }
        guard let rowMask else { return nil }
        return rowMask.flatMap { Array(repeating: $0, count: rowLength) }
    }

    public func freezeRows(_ rows: some Sequence<Int>) {
        precondition(derivedMask == nil, Self.derivedMessage)
        var m = rowMask ?? [Bool](repeating: false, count: rowCount)
        for r in rows {
            precondition(r >= 0 && r < rowCount, "freezeRows: row \(r) out of range 0..<\(rowCount) for shape \(shape)")
            m[r] = true
        }
        rowMask = m
    }

    public func unfreezeRows(_ rows: some Sequence<Int>) {
        precondition(derivedMask == nil, Self.derivedMessage)
        guard var m = rowMask else { return }
        for r in rows {
            precondition(r >= 0 && r < rowCount, "unfreezeRows: row \(r) out of range 0..<\(rowCount) for shape \(shape)")
            m[r] = false
        }
        rowMask = m.contains(true) ? m : nil
    }

    /// Replaces the whole row mask (`nil` or all-false unfreezes every row).
    public func setFrozenRowMask(_ mask: [Bool]?) {
        precondition(derivedMask == nil, Self.derivedMessage)
        if let mask {
            precondition(mask.count == rowCount, "setFrozenRowMask: \(mask.count) entries for \(rowCount) rows (shape \(shape))")
            rowMask = mask.contains(true) ? mask : nil
        } else {
            rowMask = nil
        }
    }

    /// Makes the frozen elements a function of the owner's state: `provider` returns an element mask
    /// (row-major over ``shape``, `true` = frozen) or `nil`, and is read whenever an optimizer asks which
    /// elements it may write. There is then one source of truth (the owner's mask, e.g. a codebook's
    /// `frozen_codes`), and the row-mask setters of this parameter trap instead of creating a second one.
    public func deriveFrozenElements(from provider: @escaping () -> [Bool]?) {
        rowMask = nil
        derivedMask = provider
    }

    /// Registers a constraint that every optimizer applies to the values right after its update (and
    /// that owners apply after their own writes): e.g. a codebook re-projecting its codes onto a frozen
    /// subspace, so that no optimizer can move what is frozen there.
    public func setUpdateConstraint(_ constraint: @escaping (UnsafeMutableBufferPointer<Float>) -> Void) {
        updateConstraint = constraint
    }

    /// Applies the registered constraint (``setUpdateConstraint(_:)``), if any.
    public func applyUpdateConstraint() {
        guard let updateConstraint else { return }
        withUnsafeMutableScalars { updateConstraint($0) }
    }

    private static let derivedMessage =
        "this parameter's freeze mask is derived from its owner (e.g. a codebook's frozen codes): freeze through the owner"

    /// Element ranges that may be written: everything outside frozen rows and elements, merged into
    /// maximal runs. Empty when the parameter is frozen as a whole.
    public var writableRanges: [Range<Int>] {
        if isFrozen { return [] }
        if derivedMask != nil {
            guard let e = frozenElementMask else { return _value.count > 0 ? [0..<_value.count] : [] }
            precondition(e.count == _value.count, "derived freeze mask of \(e.count) elements for shape \(shape)")
            return Self.runs(of: e, unit: 1)
        }
        guard let rowMask else { return _value.count > 0 ? [0..<_value.count] : [] }
        return Self.runs(of: rowMask, unit: rowLength)
    }

    /// Maximal runs of `false` entries of `mask`, each entry standing for `unit` elements.
    private static func runs(of mask: [Bool], unit: Int) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start: Int? = nil
        for r in 0...mask.count {
            let live = r < mask.count && !mask[r]
            if live, start == nil { start = r }
            if !live, let s = start {
                out.append((s * unit)..<(r * unit))
                start = nil
            }
        }
        return out
    }
}
