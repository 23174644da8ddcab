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
///
/// An owner that must see every write of a tensor (a codebook's codes and statistics, where freezing is
/// enforced) **gates** it (``gate(with:frozenElements:afterOptimizerStep:)``): from then on the value is
/// read-only except through the owner's ``WriteKey``, the optimizers (which write only the elements the
/// owner leaves free and then call the owner back), ``Module/load(stateDict:strict:)`` (a restore of the
/// whole state) and the one explicitly named escape hatch ``overwriteBypassingGate(_:)``.
public final class Parameter {
    public enum Kind: Sendable { case trainable, buffer }

    /// Opens a gated parameter for writing: only its owner holds it (see ``gate(with:frozenElements:afterOptimizerStep:)``).
    public final class WriteKey: Sendable {
        public init() {}
    }

    public let kind: Kind
    private var _value: Tensor
    /// Whole-parameter freeze: optimizers skip it entirely.
    public var isFrozen: Bool
    /// Whether a state dictionary may omit this tensor (it then keeps its value): for this library's
    /// own extra state, so that PyTorch state dicts load, and for the reference's buffers it makes late (an affine
    /// codebook's batch statistics, registered at its first batch).
    public var isOptionalInState = false
    /// This library's own state, which the reference's `state_dict()` never holds (the freeze masks, the freezing
    /// policy's step counter, a value table the reference keeps as a plain list): optional when loading (setting it
    /// sets ``isOptionalInState``), and left out of a checkpoint exported for PyTorch.
    public var isLibraryState = false {
        didSet { if isLibraryState { isOptionalInState = true } }
    }
    /// For a buffer kept empty until first needed (a `[d, d]` projector per codebook costs 4·d² bytes whether
    /// used or not): the shape it stands for; an empty value means zeros of that shape. A state dictionary may
    /// hold either the empty tensor or one of this shape.
    public var logicalShape: [Int]?
    /// Whether a loaded state may hold NaN or ±∞ here: only for a sentinel the reference itself stores (the
    /// affine codebook's batch statistics are NaN until the first batch). Everywhere else a non-finite value in
    /// a state is refused at load (``ModuleError/nonFinite(_:)``): a codebook with a NaN code would give every
    /// vector the same index without a word.
    public var mayHoldNonFinite = false
    /// The values a loaded state may hold here besides being finite (``ValueDomain``): a counter's whole numbers, a
    /// mask's 0 and 1, a constant's own values. Checked at load (``ModuleError/outOfDomain(_:)``), so that a file
    /// from elsewhere cannot make a counter trap when it becomes an `Int`, or a mask mean something else.
    public var domain: ValueDomain = .finite
    private var rowMask: [Bool]?
    private var derivedMask: (() -> [Bool]?)?
    private var updateConstraint: ((UnsafeMutableBufferPointer<Float>) -> Void)?
    private var writeKey: WriteKey?
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
    ///
    /// Assigning a gated parameter (``isGated``) is a programmer error: write it through its owner.
    public var value: Tensor {
        get { _value }
        set {
            precondition(writeKey == nil, Self.gatedMessage)
            assignValue(newValue)
        }
    }

    private func assignValue(_ newValue: Tensor) {
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

    // MARK: The write gate

    /// Whether writes belong to an owner (``gate(with:frozenElements:afterOptimizerStep:)``).
    public var isGated: Bool { writeKey != nil }

    /// Hands every write of this parameter to an owner: afterwards ``value`` is read-only (assigning it, or
    /// ``withUnsafeMutableScalars(_:)``, is a programmer error) except through ``write(with:_:)`` with `key`. Optimizers keep writing a trainable gated parameter, but only the elements
    /// outside `frozenElements` (row-major over ``shape``, `true` = frozen; `nil`: none), and then call
    /// `afterOptimizerStep` on the values (e.g. a codebook re-projecting its codes onto a frozen subspace).
    /// The frozen elements are then derived from the owner (one source of truth): the row-mask setters trap.
    public func gate(with key: WriteKey, frozenElements: @escaping () -> [Bool]?,
                     afterOptimizerStep: @escaping (UnsafeMutableBufferPointer<Float>) -> Void) {
        precondition(writeKey == nil || writeKey === key, "Parameter.gate: already gated by another owner")
        writeKey = key
        rowMask = nil
        derivedMask = frozenElements
        updateConstraint = afterOptimizerStep
    }

    /// Writes a gated parameter in place with its owner's key.
    public func write<R>(with key: WriteKey, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(writeKey === key, "Parameter.write(with:): not this parameter's key")
        return try writeInPlace(body)
    }

    /// The escape hatch: assigns the value whatever gates it, **bypassing every freeze** its owner enforces
    /// (a codebook's frozen codes, components and subspaces included) and every bookkeeping the owner does on a
    /// write. For tools that must set raw state (tests of the gate itself, replaying another implementation's
    /// state): the owner's own write paths (`Codebook.setCodes(_:)`, `load(stateDict:)`) are what a user wants.
    public func overwriteBypassingGate(_ newValue: Tensor) {
        assignValue(newValue)
    }

    /// A restore of the saved state (``Module/load(stateDict:strict:)``): the owner is told by `didLoadState`.
    func restore(_ newValue: Tensor) {
        assignValue(newValue)
    }

    /// An optimizer's write: `body` gets the values (it writes only ``writableRanges``), then the owner's
    /// constraint runs.
    func optimizerWrite(_ body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        writeInPlace { v in
            body(v)
            updateConstraint?(v)
        }
    }

    private static let gatedMessage =
        "this parameter is gated: its owner (e.g. a codebook, for its codes and statistics) writes it, so that freezing holds; use the owner's API, or overwriteBypassingGate(_:) to bypass every freeze"

    public var shape: [Int] { _value.shape }

    /// Writes the elements in place (no gradient recorded), keeping the leaf. A gated parameter
    /// (``isGated``) is written only through its owner (a programmer error otherwise).
    public func withUnsafeMutableScalars<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(writeKey == nil, Self.gatedMessage)
        return try writeInPlace(body)
    }

    private func writeInPlace<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
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

    /// Whether the frozen elements are derived from an owner's state (``gate(with:frozenElements:afterOptimizerStep:)``)
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
