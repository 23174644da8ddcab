import VQTensor

/// Errors of module state handling (checkpoints, key-level freezing).
public enum ModuleError: Error, CustomStringConvertible, Equatable {
    /// Keys that name no parameter or module.
    case unknownKeys([String])
    /// A state dictionary that does not fit the module: every missing, unexpected and mismatched key.
    case stateMismatch(missing: [String], unexpected: [String], mismatched: [ShapeMismatch])
    /// A state whose values are NaN or infinite where the module admits none: each key with its count.
    case nonFinite([NonFiniteValues])
    /// A state whose values are outside a parameter's ``ValueDomain``: each key with its count and first value.
    case outOfDomain([DomainViolation])
    /// A state giving different values under the keys of one shared parameter (a stack's shared codebook, its one
    /// `vq_bridge`): which one is meant cannot be told. Each group of keys, sorted.
    case sharedValuesDiffer([[String]])

    public struct DomainViolation: Equatable, Sendable, CustomStringConvertible {
        public let key: String
        public let count: Int
        public let first: Float
        public let requirement: String
        public init(key: String, count: Int, first: Float, requirement: String) {
            self.key = key
            self.count = count
            self.first = first
            self.requirement = requirement
        }
        public var description: String { "\(key) (\(count == 1 ? "the value" : "\(count) values such as") \(first); must be \(requirement))" }
    }

    public struct NonFiniteValues: Equatable, Sendable, CustomStringConvertible {
        public let key: String
        public let count: Int
        public let total: Int
        public init(key: String, count: Int, total: Int) {
            self.key = key
            self.count = count
            self.total = total
        }
        public var description: String { "\(key) (\(count) of \(total) values)" }
    }

    public struct ShapeMismatch: Equatable, Sendable, CustomStringConvertible {
        public let key: String
        public let expected: [Int]
        public let found: [Int]
        public init(key: String, expected: [Int], found: [Int]) {
            self.key = key
            self.expected = expected
            self.found = found
        }
        public var description: String { "\(key): expected \(expected), found \(found)" }
    }

    public var description: String {
        switch self {
        case .unknownKeys(let keys): return "unknown keys: \(keys.joined(separator: ", "))"
        case .stateMismatch(let missing, let unexpected, let mismatched):
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing keys: \(missing.joined(separator: ", "))") }
            if !unexpected.isEmpty { parts.append("unexpected keys: \(unexpected.joined(separator: ", "))") }
            if !mismatched.isEmpty { parts.append("shape mismatches: \(mismatched.map(\.description).joined(separator: "; "))") }
            return "state does not fit the module — " + parts.joined(separator: " — ")
        case .nonFinite(let keys):
            return "state holds NaN or infinite values in \(keys.map(\.description).joined(separator: ", ")): the model diverged or the file is damaged"
        case .outOfDomain(let keys):
            return "state holds values no run writes in \(keys.map(\.description).joined(separator: ", ")): the file is damaged or not this module's"
        case .sharedValuesDiffer(let groups):
            return "state holds different values under keys of one shared parameter (\(groups.map { $0.joined(separator: " ≠ ") }.joined(separator: "; "))): the file was written for a module that does not share them"
        }
    }
}

/// The base class of layers and quantizers: parameters, buffers and sub-modules are discovered from
/// stored properties by reflection, under dotted keys that match PyTorch's `state_dict()` names.
///
/// A stored property of type ``Parameter``, ``Module``, an optional of either, or an array of either
/// is found automatically. Its key is the property name in snake_case (`projectIn` → `project_in`),
/// array elements are numbered (`layers.0`), and ``keyOverrides`` renames where PyTorch differs
/// (`codebook` → `_codebook`, `embedAverage` → `embed_avg`).
///
/// ```swift
/// final class MLP: Module {
///     let fc1 = Linear(8, 16), fc2 = Linear(16, 8)
/// }
/// MLP().stateDict().keys   // fc1.weight, fc1.bias, fc2.weight, fc2.bias
/// ```
open class Module {
    /// Training mode (`true`) or evaluation mode; set recursively by ``train(_:)``.
    public private(set) var isTraining = true

    public init() {}

    /// Property names whose PyTorch key is not their snake_case form.
    open var keyOverrides: [String: String] { [:] }

    /// Children and parameters in declaration order, with their keys.
    open func namedMembers() -> [(String, Any)] {
        var out: [(String, Any)] = []
        var mirror: Mirror? = Mirror(reflecting: self)
        var chain: [Mirror] = []
        while let m = mirror, m.subjectType != Module.self {
            chain.append(m)
            mirror = m.superclassMirror
        }
        for m in chain.reversed() {
            for child in m.children {
                guard let label = child.label else { continue }
                let key = keyOverrides[label] ?? Module.snakeCase(label)
                out.append((key, child.value))
            }
        }
        return out
    }

    /// Immediate sub-modules with their keys.
    public func children() -> [(String, Module)] {
        var out: [(String, Module)] = []
        for (key, value) in namedMembers() { Module.collect(value, key) { k, v in if let m = v as? Module { out.append((k, m)) } } }
        return out
    }

    /// Every parameter and buffer under its dotted key, depth first. A parameter shared by several
    /// modules appears under each key (as in PyTorch).
    public func namedParameters() -> [(String, Parameter)] {
        var out: [(String, Parameter)] = []
        for (key, value) in namedMembers() {
            Module.collect(value, key) { k, v in
                if let p = v as? Parameter { out.append((k, p)) }
                if let m = v as? Module { out += m.namedParameters().map { ("\(k).\($0.0)", $0.1) } }
            }
        }
        return out
    }

    /// Distinct trainable parameters (shared ones once), in key order.
    public func trainableParameters() -> [Parameter] {
        var seen = Set<ObjectIdentifier>()
        return namedTrainableParameters().map(\.1).filter { seen.insert(ObjectIdentifier($0)).inserted }
    }

    /// The parameters learned by gradient (``Parameter/Kind-swift.enum/trainable``) under their dotted keys, depth first; a
    /// shared one appears under each key, as in ``namedParameters()``. Buffers (EMA state, masks) are left out.
    public func namedTrainableParameters() -> [(String, Parameter)] {
        namedParameters().filter { $0.1.kind == .trainable }
    }

    private static func collect(_ value: Any, _ key: String, _ body: (String, Any) -> Void) {
        switch value {
        case let p as Parameter: body(key, p)
        case let m as Module: body(key, m)
        case let ms as [Module]: for (i, m) in ms.enumerated() { body("\(key).\(i)", m) }
        case let ps as [Parameter]: for (i, p) in ps.enumerated() { body("\(key).\(i)", p) }
        default:
            let mirror = Mirror(reflecting: value)
            if mirror.displayStyle == .optional, let inner = mirror.children.first?.value { collect(inner, key, body) }
        }
    }

    static func snakeCase(_ name: String) -> String {
        var out = ""
        for ch in name {
            if ch.isUppercase {
                if !out.isEmpty { out.append("_") }
                out.append(contentsOf: ch.lowercased())
            } else {
                out.append(ch)
            }
        }
        return out
    }

    // MARK: Modes

    /// Sets training (`true`) or evaluation mode on this module and every sub-module.
    public func train(_ on: Bool = true) {
        isTraining = on
        for (_, c) in children() { c.train(on) }
    }
    /// Evaluation mode (`train(false)`).
    public func eval() { train(false) }

    /// Runs `body` with this module and every sub-module in training (`true`) or evaluation mode, then
    /// restores each module's own mode (also when `body` throws), so a training loop can encode a batch
    /// for logging without silently switching itself to evaluation.
    ///
    /// ```swift
    /// let codes = vq.withMode(training: false) { vq(x).indices }   // vq.isTraining is unchanged
    /// ```
    public func withMode<R>(training: Bool, _ body: () throws -> R) rethrows -> R {
        var saved: [(Module, Bool)] = []
        func visit(_ m: Module) {
            saved.append((m, m.isTraining))
            for (_, c) in m.children() { visit(c) }
        }
        visit(self)
        train(training)
        defer { for (m, mode) in saved { m.isTraining = mode } }
        return try body()
    }

    /// Clears the gradients of all trainable parameters.
    public func zeroGradients() {
        for p in trainableParameters() { p.grad = nil }
    }

    // MARK: State

    /// Every parameter and buffer by key (aliases included), as PyTorch's `state_dict()`.
    open func stateDict() -> [String: Tensor] {
        // A buffer still empty (``Parameter/logicalShape``) is left out: loading keeps it empty.
        Dictionary(namedParameters().filter { $0.1.logicalShape == nil || $0.1.value.count > 0 }.map { ($0.0, $0.1.value) },
                   uniquingKeysWith: { a, _ in a })
    }

    /// Loads values by key. With `strict`, any missing, unexpected or mis-shaped key throws a
    /// ``ModuleError/stateMismatch(missing:unexpected:mismatched:)`` listing all of them, and
    /// nothing is written. Without it, matching keys are loaded and the rest ignored; shape
    /// mismatches always throw, and so do NaN or infinite values (``ModuleError/nonFinite(_:)``) except in
    /// the sentinels that hold them by design (``Parameter/mayHoldNonFinite``), and values outside a parameter's
    /// ``Parameter/domain`` (``ModuleError/outOfDomain(_:)``).
    open func load(stateDict: [String: Tensor], strict: Bool = true) throws {
        let params = namedParameters()
        let known = Set(params.map(\.0))
        let missing = params.filter { stateDict[$0.0] == nil && !$0.1.isOptionalInState }.map(\.0).sorted()
        let unexpected = stateDict.keys.filter { !known.contains($0) }.sorted()
        let mismatched = params.compactMap { key, p -> ModuleError.ShapeMismatch? in
            guard let t = stateDict[key], t.shape != p.shape else { return nil }
            if let logical = p.logicalShape, t.shape == logical || t.count == 0 { return nil }
            return .init(key: key, expected: p.shape, found: t.shape)
        }.sorted { $0.key < $1.key }
        if !mismatched.isEmpty || (strict && (!missing.isEmpty || !unexpected.isEmpty)) {
            throw ModuleError.stateMismatch(missing: strict ? missing : [], unexpected: strict ? unexpected : [],
                                            mismatched: mismatched)
        }
        let nonFinite = Self.nonFiniteValues(params, in: stateDict)
        if !nonFinite.isEmpty { throw ModuleError.nonFinite(nonFinite) }
        let outside = params.compactMap { key, p -> ModuleError.DomainViolation? in
            guard p.domain != .finite, let t = stateDict[key], t.count > 0,
                  let (count, first) = p.domain.violations(of: t, built: p.value, nanAllowed: p.mayHoldNonFinite) else { return nil }
            return .init(key: key, count: count, first: first, requirement: p.domain.requirement)
        }.sorted { $0.key < $1.key }
        if !outside.isEmpty { throw ModuleError.outOfDomain(outside) }
        // One parameter under several keys (shared): the state must give it one value, bit for bit.
        var keysOf: [ObjectIdentifier: [String]] = [:]
        for (key, p) in params { keysOf[ObjectIdentifier(p), default: []].append(key) }
        let differing = keysOf.values.compactMap { keys -> [String]? in
            let given = keys.filter { stateDict[$0] != nil }.sorted()
            guard let first = given.first.flatMap({ stateDict[$0] }) else { return nil }
            let bits = first.scalars.map(\.bitPattern)
            return given.dropFirst().contains { stateDict[$0]!.scalars.map(\.bitPattern) != bits } ? given : nil
        }.sorted { $0[0] < $1[0] }
        if !differing.isEmpty { throw ModuleError.sharedValuesDiffer(differing) }
        for (key, p) in params {
            if let t = stateDict[key] {
                p.restore(t)
            } else if p.logicalShape != nil, p.value.count > 0 {
                p.restore(Tensor.zeros([0]))  // a state without a lazy buffer had it empty: so does the module now
            }
        }
        notifyLoaded()
    }

    /// The keys of `state` (this module's own state when nil) holding NaN or ±∞ where the parameter admits
    /// none (``Parameter/mayHoldNonFinite``), in key order: what ``load(stateDict:strict:)`` refuses, and what a
    /// save refuses to write (a checkpoint that could not be loaded back).
    public func nonFiniteValues(in state: [String: Tensor]? = nil) -> [ModuleError.NonFiniteValues] {
        Self.nonFiniteValues(namedParameters(), in: state)
    }

    private static func nonFiniteValues(_ params: [(String, Parameter)], in state: [String: Tensor]?) -> [ModuleError.NonFiniteValues] {
        params.compactMap { key, p -> ModuleError.NonFiniteValues? in
            guard !p.mayHoldNonFinite, let t = state.map({ $0[key] }) ?? p.value else { return nil }
            let count = t.withUnsafeScalars { $0.reduce(0) { $0 + ($1.isFinite ? 0 : 1) } }
            return count == 0 ? nil : .init(key: key, count: count, total: t.count)
        }.sorted { $0.key < $1.key }
    }

    /// Called on every module of a tree after ``load(stateDict:strict:)`` wrote new values, so that
    /// derived state (caches, masks mirrored elsewhere) can be rebuilt.
    open func didLoadState() {}

    private func notifyLoaded() {
        didLoadState()
        for (_, c) in children() { c.notifyLoaded() }
    }

    // MARK: Key-level freezing

    /// Parameters selected by keys: a key names a parameter (`project_in.weight`) or a module prefix
    /// (`project_in` selects all its parameters). `nil` selects every parameter.
    private func select(_ keys: [String]?, recursive: Bool) -> (params: [Parameter], unknown: [String]) {
        guard let keys else { return (namedParameters().filter { recursive || !$0.0.contains(".") }.map(\.1), []) }
        var out: [Parameter] = []
        var unknown: [String] = []
        for k in keys {
            let hit = namedParameters(selectedBy: k, recursive: recursive)
            if hit.isEmpty { unknown.append(k) }
            out += hit.map(\.1)
        }
        return (out, unknown)
    }

    /// The parameters one key of ``freeze(recursive:keys:strict:)`` selects, with their names: the parameter of that
    /// name, or every parameter under that module prefix (`project_in` → `project_in.weight`, `project_in.bias`).
    public func namedParameters(selectedBy key: String, recursive: Bool = true) -> [(String, Parameter)] {
        namedParameters().filter { (recursive || !$0.0.contains(".")) && ($0.0 == key || $0.0.hasPrefix(key + ".")) }
    }

    /// Freezes parameters by key (all when `keys` is `nil`); throws ``ModuleError/unknownKeys(_:)``
    /// and changes nothing when a key matches nothing.
    public func freeze(recursive: Bool = true, keys: [String]? = nil, strict: Bool) throws {
        let (ps, unknown) = select(keys, recursive: recursive)
        if strict && !unknown.isEmpty { throw ModuleError.unknownKeys(unknown) }
        for p in ps { p.isFrozen = true }
    }

    /// Freezes parameters by key, ignoring keys that match nothing.
    public func freeze(recursive: Bool = true, keys: [String]? = nil) {
        try! freeze(recursive: recursive, keys: keys, strict: false)
    }

    /// Unfreezes trainable parameters by key; buffers stay frozen. Strict form throws on unknown keys.
    public func unfreeze(recursive: Bool = true, keys: [String]? = nil, strict: Bool) throws {
        let (ps, unknown) = select(keys, recursive: recursive)
        if strict && !unknown.isEmpty { throw ModuleError.unknownKeys(unknown) }
        for p in ps where p.kind == .trainable { p.isFrozen = false }
    }

    /// Unfreezes trainable parameters by key, ignoring keys that match nothing.
    public func unfreeze(recursive: Bool = true, keys: [String]? = nil) {
        try! unfreeze(recursive: recursive, keys: keys, strict: false)
    }
}
