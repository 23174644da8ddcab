import VQTensor

/// A module that draws random numbers during training (dead-code sampling, quantize dropout, stochastic
/// codes): its generator's state is part of what a resumable training run must save, beside the
/// parameters and buffers of ``Module/stateDict()``.
public protocol RandomStateOwner: AnyObject {
    var randomState: SeededGenerator { get set }
}

extension Module {
    /// The random generators of this module and its sub-modules, keyed by module path (`""` for this
    /// module, `layers.0._codebook`, …). A module shared under several paths appears under each.
    public func randomStates() -> [String: SeededGenerator] {
        var out: [String: SeededGenerator] = [:]
        func visit(_ m: Module, _ path: String) {
            if let owner = m as? RandomStateOwner { out[path] = owner.randomState }
            for (key, child) in m.children() { visit(child, path.isEmpty ? key : "\(path).\(key)") }
        }
        visit(self, "")
        return out
    }

    /// Restores generators saved by ``randomStates()``; throws when the paths differ (another model).
    public func setRandomStates(_ states: [String: SeededGenerator]) throws {
        var owners: [String: RandomStateOwner] = [:]
        func visit(_ m: Module, _ path: String) {
            if let owner = m as? RandomStateOwner { owners[path] = owner }
            for (key, child) in m.children() { visit(child, path.isEmpty ? key : "\(path).\(key)") }
        }
        visit(self, "")
        guard Set(owners.keys) == Set(states.keys) else {
            throw ModuleError.stateMismatch(missing: owners.keys.filter { states[$0] == nil }.sorted().map { "rng:" + $0 },
                                            unexpected: states.keys.filter { owners[$0] == nil }.sorted().map { "rng:" + $0 }, mismatched: [])
        }
        for (path, owner) in owners { owner.randomState = states[path]! }
    }
}
