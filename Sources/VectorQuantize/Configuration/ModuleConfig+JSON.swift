import Foundation

/// The JSON text of a configuration, keeping each number's kind: a floating-point value is written with its decimal
/// point (`5.0`, not `5`, as `JSONSerialization` writes it), an integer without. Python reads the two as `float` and
/// `int`, and the reference tells them apart where it checks a type — `ResidualFSQ(soft_clamp_input_value = 5)`
/// raises (`cannot assign 'int' object to buffer`) where `5.0` runs (found by the PyTorch cross-check, seed 25).
enum ConfigurationJSON {
    struct NotRepresentable: Error, CustomStringConvertible {
        let value: String
        var description: String { "a configuration value JSON cannot hold: \(value)" }
    }

    /// Pretty-printed with sorted keys (two spaces a level), as the sidecars have always been written.
    static func text(_ value: Any, indent: Int = 0) throws -> String {
        let pad = String(repeating: "  ", count: indent + 1), end = String(repeating: "  ", count: indent)
        switch value {
        case is NSNull:
            return "null"
        case let s as String:
            return String(decoding: try JSONSerialization.data(withJSONObject: s, options: .fragmentsAllowed), as: UTF8.self)
        case let d as [String: Any]:
            guard !d.isEmpty else { return "{}" }
            let items = try d.keys.sorted().map { "\(pad)\(try text($0)) : \(try text(d[$0]!, indent: indent + 1))" }
            return "{\n" + items.joined(separator: ",\n") + "\n\(end)}"
        case let a as [Any]:
            guard !a.isEmpty else { return "[]" }
            return "[\n" + (try a.map { pad + (try text($0, indent: indent + 1)) }).joined(separator: ",\n") + "\n\(end)]"
        default:
            return try number(value)
        }
    }

    private static func number(_ v: Any) throws -> String {
        if let b = Keywords.boolean(v) { return b ? "true" : "false" }
        // JSON numbers arrive as NSNumber, Swift's as themselves; both bridge with their kind (`d`/`f` floating).
        guard let n = v as? NSNumber else { throw NotRepresentable(value: "\(v)") }
        let type = String(cString: n.objCType)
        guard type == "d" || type == "f" else { return "\(n.int64Value)" }
        let d = n.doubleValue
        guard d.isFinite else { throw NotRepresentable(value: "\(v)") }
        return "\(d)"   // Swift's shortest round-trip form: 5.0, 0.1, 1e-05, 1e+30 — JSON numbers with their point or exponent
    }
}
