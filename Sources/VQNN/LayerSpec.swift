import VQTensor

/// Errors of ``LayerSpec``.
public struct LayerSpecError: Error, CustomStringConvertible {
    public let description: String
}

/// Builds layers from the text a reference configuration stores for a module argument (its PyTorch repr,
/// e.g. SimVQ's `codebook_transform`): `nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))`.
///
/// Understood: `nn.Sequential(…)`, `nn.Linear(in, out[, bias = True|False])`, and the activations `nn.ReLU()`,
/// `nn.GELU()`, `nn.SiLU()`, `nn.Tanh()`, `nn.Sigmoid()`, `nn.Identity()`. Parameter keys follow PyTorch's
/// (`0.weight`, `2.bias` inside a `Sequential`), so the module's state dict loads.
public enum LayerSpec {
    public static func parse(_ text: String, rng: inout SeededGenerator) throws -> Layer {
        var p = Parser(Array(text.unicodeScalars))
        let layer = try p.layer(&rng)
        p.skipSpaces()
        guard p.atEnd else { throw LayerSpecError(description: "unexpected text after the module in '\(text)'") }
        return layer
    }

    struct Parser {
        let s: [Unicode.Scalar]
        var i = 0
        var depth = 0
        init(_ s: [Unicode.Scalar]) { self.s = s }
        var atEnd: Bool { i >= s.count }

        mutating func skipSpaces() { while i < s.count && (s[i] == " " || s[i] == "\n") { i += 1 } }

        mutating func name() -> String {
            skipSpaces()
            var out = ""
            while i < s.count, s[i].properties.isAlphabetic || s[i] == "." || s[i] == "_" || ("0"..."9").contains(s[i]) {
                out.unicodeScalars.append(s[i])
                i += 1
            }
            return out
        }

        mutating func expect(_ c: Unicode.Scalar) throws {
            skipSpaces()
            guard i < s.count, s[i] == c else { throw LayerSpecError(description: "expected '\(c)' at position \(i)") }
            i += 1
        }

        mutating func peek(_ c: Unicode.Scalar) -> Bool {
            skipSpaces()
            return i < s.count && s[i] == c
        }

        mutating func layer(_ rng: inout SeededGenerator) throws -> Layer {
            depth += 1
            defer { depth -= 1 }
            guard depth <= 16 else { throw LayerSpecError(description: "modules nested deeper than 16") }
            let n = name()
            let bare = n.hasPrefix("nn.") ? String(n.dropFirst(3)) : n
            try expect("(")
            switch bare {
            case "Sequential":
                var layers: [Layer] = []
                while !peek(")") {
                    layers.append(try layer(&rng))
                    if peek(",") { try expect(",") }
                }
                try expect(")")
                return Sequential(layers)
            case "Linear":
                let a = try integer(), _ = try expect(","), b = try integer()
                var bias = true
                if peek(",") {
                    try expect(",")
                    guard name() == "bias" else { throw LayerSpecError(description: "Linear takes in, out and bias") }
                    try expect("=")
                    let v = name()
                    guard v == "True" || v == "False" else { throw LayerSpecError(description: "bias = True or False, got \(v)") }
                    bias = v == "True"
                }
                try expect(")")
                guard a > 0, b > 0, a <= 1 << 16, b <= 1 << 16 else { throw LayerSpecError(description: "Linear(\(a), \(b)): sizes in 1…65536") }
                return Linear(a, b, bias: bias, rng: &rng)
            case "ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Identity":
                try expect(")")
                let kinds: [String: Activation.Kind] = ["ReLU": .relu, "GELU": .gelu, "SiLU": .silu, "Tanh": .tanh,
                                                        "Sigmoid": .sigmoid, "Identity": .identity]
                return Activation(kinds[bare]!)
            default:
                throw LayerSpecError(description: "unsupported module '\(n)' (Sequential, Linear, ReLU, GELU, SiLU, Tanh, Sigmoid, Identity)")
            }
        }

        mutating func integer() throws -> Int {
            let t = name()
            guard let v = Int(t) else { throw LayerSpecError(description: "expected an integer, got '\(t)'") }
            return v
        }
    }
}
