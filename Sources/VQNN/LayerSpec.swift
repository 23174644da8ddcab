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
///
/// The text comes from outside (a configuration file): sizes are checked before anything is allocated — each
/// `Linear` within 1…65536 per side, and all of a text's layers within ``maxValues`` parameters.
public enum LayerSpec {
    /// The most parameters one layer text may ask for (2²⁶, 256 MiB of Float32).
    public static let maxValues = 1 << 26

    public static func parse(_ text: String, rng: inout SeededGenerator) throws -> Layer {
        var p = Parser(Array(text.unicodeScalars), build: true)
        let layer = try p.layer(&rng)
        p.skipSpaces()
        guard p.atEnd else { throw LayerSpecError(description: "unexpected text after the module in '\(text)'") }
        return layer.layer!
    }

    /// The features a layer text takes and gives (nil where the text does not fix them: activations only),
    /// checked without building anything: consecutive `Linear`s must chain (`Linear(8, 16), Linear(16, 8)`).
    ///
    /// ```swift
    /// try LayerSpec.features("nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))")  // (inputs: 8, outputs: 4)
    /// ```
    public static func features(_ text: String) throws -> (inputs: Int?, outputs: Int?) {
        var p = Parser(Array(text.unicodeScalars), build: false)
        var rng = SeededGenerator(seed: 0)
        let parsed = try p.layer(&rng)
        p.skipSpaces()
        guard p.atEnd else { throw LayerSpecError(description: "unexpected text after the module in '\(text)'") }
        return (parsed.inputs, parsed.outputs)
    }

    /// Checks that a layer text maps `inputs` features to `outputs` (where the text fixes them; `nil`: any),
    /// naming `what`.
    public static func check(_ text: String, inputs: Int?, outputs: Int?, what: String) throws {
        let f = try features(text)
        if let i = f.inputs, let want = inputs, i != want { throw LayerSpecError(description: "\(what) takes \(i) features, \(want) are given to it") }
        if let o = f.outputs, let want = outputs, o != want { throw LayerSpecError(description: "\(what) gives \(o) features, \(want) are needed") }
    }

    /// A parsed layer (built, or only checked) and the features it takes and gives.
    struct Parsed {
        var layer: Layer?
        var inputs: Int?
        var outputs: Int?
    }

    struct Parser {
        let s: [Unicode.Scalar]
        var i = 0
        var depth = 0
        /// Parameters asked for so far (checked against ``LayerSpec/maxValues`` before each allocation).
        var values = 0
        /// Whether layers are built (else only their sizes are checked).
        let build: Bool
        init(_ s: [Unicode.Scalar], build: Bool) { (self.s, self.build) = (s, build) }
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

        mutating func layer(_ rng: inout SeededGenerator) throws -> Parsed {
            depth += 1
            defer { depth -= 1 }
            guard depth <= 16 else { throw LayerSpecError(description: "modules nested deeper than 16") }
            let n = name()
            let bare = n.hasPrefix("nn.") ? String(n.dropFirst(3)) : n
            try expect("(")
            switch bare {
            case "Sequential":
                var layers: [Layer] = []
                var chain = Parsed(layer: nil, inputs: nil, outputs: nil)
                while !peek(")") {
                    let next = try layer(&rng)
                    if let o = chain.outputs, let i = next.inputs, o != i {
                        throw LayerSpecError(description: "a layer giving \(o) features is followed by one taking \(i)")
                    }
                    // The chain takes what its first sized layer takes, and gives what its last one gives.
                    if chain.inputs == nil { chain.inputs = next.inputs }
                    chain.outputs = next.outputs ?? chain.outputs
                    if let l = next.layer { layers.append(l) }
                    if peek(",") { try expect(",") }
                }
                try expect(")")
                chain.layer = build ? Sequential(layers) : nil
                return chain
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
                values += a * b + (bias ? b : 0)
                guard values <= LayerSpec.maxValues else {
                    throw LayerSpecError(description: "Linear(\(a), \(b)): the layers ask for \(values) parameters, more than \(LayerSpec.maxValues)")
                }
                return Parsed(layer: build ? Linear(a, b, bias: bias, rng: &rng) : nil, inputs: a, outputs: b)
            case "ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "Identity":
                try expect(")")
                let kinds: [String: Activation.Kind] = ["ReLU": .relu, "GELU": .gelu, "SiLU": .silu, "Tanh": .tanh,
                                                        "Sigmoid": .sigmoid, "Identity": .identity]
                return Parsed(layer: build ? Activation(kinds[bare]!) : nil, inputs: nil, outputs: nil)
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
