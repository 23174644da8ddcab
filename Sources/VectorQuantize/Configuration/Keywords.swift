import Foundation

/// The reference's keyword arguments (JSON values from a config file, or values built in Swift), read with
/// one set of rules by every quantizer's `init(referenceKwargs:)`: a value of the wrong type is an error
/// naming the keyword — never silently a default (`quantize_dropout: 1` is not `false`, and
/// `quant_grad_frac: 1` is 1.0, not 0).
///
/// - Integers: an integer, or a number with an exact integer value (`2.0`); not a boolean.
/// - Numbers: any integer or floating-point number; not a boolean.
/// - Booleans: `true` or `false` only.
struct Keywords {
    let values: [String: Any]
    let module: String

    init(_ values: [String: Any], module: String) {
        self.values = values
        self.module = module
    }

    private func bad(_ key: String, _ expected: String, _ v: Any) -> ConfigurationError {
        // A JSON boolean prints as its word (an NSNumber would print 1 or 0, the number it is not).
        let shown = Self.boolean(v).map { String($0) } ?? "\(v)"
        return .badValue(module: module, keyword: key, reason: "expected \(expected), got \(shown)")
    }

    /// Refuses the keywords a wrapper sets itself for the modules it builds (the reference passes them explicitly
    /// beside `**kwargs`, so giving one raises `TypeError: got multiple values for keyword argument`): one error
    /// naming the first present, instead of a value silently replaced — but for the `tolerated` values, which
    /// configurations written by earlier versions of this library hold (and which change nothing).
    func refuseSetBy(_ owner: String, tolerating tolerated: [String: [Any]]) throws {
        for (key, values) in tolerated.sorted(by: { $0.key < $1.key }) {
            guard let v = present(key) else { continue }
            if values.contains(where: { Self.sameJSON($0, v) }) { continue }
            throw ConfigurationError.badValue(module: module, keyword: key, reason: "set by \(owner) itself for its layers; leave it out")
        }
    }

    /// Equal as JSON values (a boolean is not a number).
    static func sameJSON(_ a: Any, _ b: Any) -> Bool {
        if isBoolean(a) || isBoolean(b) { return boolean(a) != nil && boolean(a) == boolean(b) }
        if let x = number(a), let y = number(b) { return x == y }
        return false
    }

    /// Whether a value is a JSON boolean (or a Swift `Bool`), as opposed to a number.
    static func isBoolean(_ v: Any) -> Bool {
        if let n = v as? NSNumber { return String(cString: n.objCType) == "c" }
        return v is Bool
    }

    /// The value of a JSON boolean (or a Swift `Bool`); nil for anything else, a number included.
    static func boolean(_ v: Any) -> Bool? {
        guard isBoolean(v) else { return nil }
        return (v as? Bool) ?? (v as? NSNumber)?.boolValue
    }

    static func integer(_ v: Any) -> Int? {
        guard !isBoolean(v) else { return nil }
        if let i = v as? Int { return i }
        if let n = v as? NSNumber {
            let d = n.doubleValue
            return d.rounded() == d ? Int(exactly: d) : nil
        }
        return nil
    }

    static func number(_ v: Any) -> Double? {
        guard !isBoolean(v) else { return nil }
        if let d = v as? Double { return d }
        if let i = v as? Int { return Double(i) }
        return (v as? NSNumber)?.doubleValue
    }

    private func present(_ key: String) -> Any? {
        guard let v = values[key], !(v is NSNull) else { return nil }
        return v
    }

    func int(_ key: String) throws -> Int? {
        guard let v = present(key) else { return nil }
        guard let i = Self.integer(v) else { throw bad(key, "an integer", v) }
        return i
    }

    func double(_ key: String) throws -> Double? {
        guard let v = present(key) else { return nil }
        guard let d = Self.number(v) else { throw bad(key, "a number", v) }
        return d
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = present(key) else { return nil }
        guard let b = Self.boolean(v) else { throw bad(key, "true or false", v) }
        return b
    }

    func ints(_ key: String) throws -> [Int]? {
        guard let v = present(key) else { return nil }
        guard let list = v as? [Any] else { throw bad(key, "a list of integers", v) }
        return try list.map { item in
            guard let i = Self.integer(item) else { throw bad(key, "a list of integers", v) }
            return i
        }
    }

    func doubles(_ key: String) throws -> [Double]? {
        guard let v = present(key) else { return nil }
        guard let list = v as? [Any] else { throw bad(key, "a list of numbers", v) }
        return try list.map { item in
            guard let d = Self.number(item) else { throw bad(key, "a list of numbers", v) }
            return d
        }
    }

    /// `int(key)` that must be present.
    func required(_ key: String) throws -> Int {
        guard let i = try int(key) else { throw ConfigurationError.invalid(module: module, reason: "\(key) is required") }
        return i
    }
}
