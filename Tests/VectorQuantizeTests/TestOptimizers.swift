import VQNN

/// The optimizers the property tests train learnable codebooks with, by name, and their per-element state.
enum TestOptimizers {
    static let names = ["sgd-momentum", "adam", "adamw"]

    /// SGD with momentum and weight decay, Adam, or AdamW with weight decay.
    static func make(_ name: String, _ parameters: [Parameter]) -> Optimizer {
        switch name {
        case "sgd-momentum": return SGD(parameters: parameters, learningRate: 0.1, momentum: 0.9, weightDecay: 0.01)
        case "adam": return Adam(parameters: parameters, learningRate: 0.05)
        default: return AdamW(parameters: parameters, learningRate: 0.05, weightDecay: 0.1)
        }
    }

    /// The optimizer's per-element state of `p`: momentum, or Adam's first and second moments back to back.
    static func state(_ optimizer: Optimizer?, _ p: Parameter) -> [Float]? {
        if let sgd = optimizer as? SGD { return sgd.momentumBuffer(of: p) }
        if let adam = optimizer as? Adam, let m = adam.moments(of: p) { return m.m + m.v }
        return nil
    }
}
