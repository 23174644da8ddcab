import VQNN
import VQTensor

/// Layers around exactly one quantizer (the reference's `utils.Sequential`; keys `fns.<i>.…`): the layers
/// before it transform the input, the quantizer's ``Quantizer/forward(_:)`` runs, the layers after it
/// transform the quantized output. The result is the quantizer's output with `quantized` replaced by the
/// last layer's output.
///
/// ```swift
/// var rng = SeededGenerator(seed: 0)
/// let model = try QuantizerSequential(Linear(64, 4, rng: &rng), FSQ(.init(levels: [8, 5, 5, 5])), Linear(4, 64, rng: &rng))
/// let out = model(x)          // x [b, n, 64] → out.quantized [b, n, 64], out.indices [b, n]
/// ```
public final class QuantizerSequential: Module {
    public let fns: [Module]
    let quantizerIndex: Int

    /// - Throws: ``ConfigurationError`` unless exactly one of `modules` is a ``Quantizer`` and every other one a `Layer`.
    public init(_ modules: [Module]) throws {
        let quantizers = modules.indices.filter { modules[$0] is any Quantizer }
        guard quantizers.count == 1 else {
            throw ConfigurationError.invalid(module: "Sequential", reason: "must contain exactly one quantizer, found \(quantizers.count)")
        }
        if let bad = modules.enumerated().first(where: { !($0.element is any Quantizer) && !($0.element is Layer) }) {
            throw ConfigurationError.invalid(module: "Sequential", reason: "module \(bad.offset) (\(type(of: bad.element))) is neither a layer nor a quantizer")
        }
        fns = modules
        quantizerIndex = quantizers[0]
        super.init()
    }

    public convenience init(_ modules: Module...) throws { try self.init(modules) }

    /// The quantizer inside.
    public var quantizer: any Quantizer { fns[quantizerIndex] as! any Quantizer }

    public func callAsFunction(_ x: Tensor) -> QuantizerOutput {
        var h = x
        for fn in fns[..<quantizerIndex] { h = (fn as! Layer)(h) }
        var out = quantizer.forward(h)
        for fn in fns[(quantizerIndex + 1)...] { out.quantized = (fn as! Layer)(out.quantized) }
        return out
    }
}
