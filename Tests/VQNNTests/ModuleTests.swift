import Testing
import VQNN
import VQTensor
import VQTestSupport

final class Block: Module, @unchecked Sendable {
    let projectIn: Linear
    let norm = LayerNorm(4)
    let layers: [Linear]
    let embedAverage = Parameter(Tensor.zeros([2, 3]), kind: .buffer)
    let maybe: Linear? = nil
    override var keyOverrides: [String: String] { ["embedAverage": "embed_avg"] }

    override init() {
        var rng = SeededGenerator(seed: 1)
        projectIn = Linear(3, 4, rng: &rng)
        layers = [Linear(4, 4, rng: &rng), Linear(4, 2, bias: false, rng: &rng)]
    }
}

@Suite("Modules: discovery, keys, state, freezing")
struct ModuleTests {
    @Test("parameters are discovered with PyTorch-style keys")
    func keys() {
        let keys = Block().namedParameters().map(\.0)
        #expect(keys == ["project_in.weight", "project_in.bias", "norm.weight", "norm.bias", "layers.0.weight",
                         "layers.0.bias", "layers.1.weight", "embed_avg"])
        var rng = SeededGenerator(seed: 2)
        let seq = Sequential(Linear(2, 3, rng: &rng), Activation(.relu), Linear(3, 1, rng: &rng))
        #expect(seq.namedParameters().map(\.0) == ["0.weight", "0.bias", "2.weight", "2.bias"])
        #expect(Block().trainableParameters().count == 7)
        // Learned by gradient, by name: every key but the buffer's, in the same order.
        #expect(Block().namedTrainableParameters().map(\.0) == keys.filter { $0 != "embed_avg" })
    }

    @Test("train / eval propagate to children")
    func modes() {
        let b = Block()
        b.eval()
        #expect(!b.isTraining && !b.projectIn.isTraining && !b.layers[1].isTraining)
        b.train()
        #expect(b.layers[0].isTraining)
    }

    @Test("state dict round-trips; strict load lists every missing, unexpected and mismatched key")
    func stateDict() throws {
        let a = Block(), b = Block()
        var state = a.stateDict()
        state["project_in.weight"] = Tensor.ones([4, 3])
        try b.load(stateDict: state)
        #expect(b.projectIn.weight.value == Tensor.ones([4, 3]))
        var bad = state
        bad["norm.weight"] = nil
        bad["extra"] = Tensor(1)
        bad["layers.0.bias"] = Tensor.zeros([5])
        let before = b.stateDict()
        #expect(throws: ModuleError.stateMismatch(
            missing: ["norm.weight"], unexpected: ["extra"],
            mismatched: [.init(key: "layers.0.bias", expected: [4], found: [5])])) {
            try b.load(stateDict: bad)
        }
        #expect(b.stateDict() == before)  // nothing was written
        bad["layers.0.bias"] = nil
        try b.load(stateDict: bad, strict: false)
    }

    /// `t` with the elements at these flat indices replaced.
    func poisoned(_ t: Tensor, _ values: [Int: Float]) -> Tensor {
        var scalars = t.scalars
        for (i, v) in values { scalars[i] = v }
        return Tensor(scalars, shape: t.shape)
    }

    @Test("a state with NaN or ±∞ is refused at load, naming each key and count, strict or not, and nothing is written")
    func nonFiniteState() throws {
        let b = Block()
        let before = b.stateDict()
        for (bad, strict) in [(Float.nan, true), (.infinity, true), (-.infinity, false)] {
            var state = Block().stateDict()
            state["project_in.weight"] = poisoned(state["project_in.weight"]!, [5: bad])
            state["layers.0.bias"] = poisoned(state["layers.0.bias"]!, [0: bad, 3: .nan])
            #expect(throws: ModuleError.nonFinite([.init(key: "layers.0.bias", count: 2, total: 4),
                                                   .init(key: "project_in.weight", count: 1, total: 12)])) {
                try b.load(stateDict: state, strict: strict)
            }
            #expect(b.stateDict() == before)
        }
        // A sentinel that holds NaN by design loads (the reference's "not measured yet").
        b.projectIn.weight.mayHoldNonFinite = true
        var state = Block().stateDict()
        state["project_in.weight"] = poisoned(state["project_in.weight"]!, [0: .nan])
        try b.load(stateDict: state)
        #expect(b.projectIn.weight.value[0, 0].isNaN)
    }

    @Test("key-level freeze: strict throws on unknown keys, non-throwing ignores them")
    func freezing() throws {
        let b = Block()
        #expect(throws: ModuleError.unknownKeys(["nope"])) { try b.freeze(keys: ["project_in", "nope"], strict: true) }
        #expect(!b.projectIn.weight.isFrozen)  // a failed strict call changes nothing
        b.freeze(keys: ["project_in", "nope"])
        #expect(b.projectIn.weight.isFrozen && b.projectIn.bias!.isFrozen && !b.norm.weight!.isFrozen)
        try b.unfreeze(keys: ["project_in.bias"], strict: true)
        #expect(!b.projectIn.bias!.isFrozen)
        b.unfreeze()
        #expect(b.embedAverage.isFrozen)  // buffers are never trainable
        b.freeze()
        #expect(b.trainableParameters().allSatisfy { $0.isFrozen })
    }

    @Test("row freezing yields the writable ranges between frozen rows")
    func rows() {
        let p = Parameter(Tensor.zeros([5, 2]))
        p.freezeRows([1, 2, 4])
        #expect(p.frozenRows == [1, 2, 4])
        #expect(p.writableRanges == [0..<2, 6..<8])
        p.unfreezeRows([1, 2, 4])
        #expect(p.frozenRowMask == nil && p.writableRanges == [0..<10])
    }
}

@Suite("Layers and losses")
struct LayerTests {
    @Test("Linear computes x·Wᵀ + b and is initialised within ±1/√in")
    func linear() {
        let l = Linear(weight: Tensor(rows: [[1, 2], [3, 4], [5, 6]]), bias: Tensor([1, 0, -1]))
        #expect(l(Tensor(rows: [[1, 1]])).scalars == [4, 7, 10])
        var rng = SeededGenerator(seed: 3)
        let r = Linear(16, 8, rng: &rng)
        #expect(r.weight.value.abs().max().item <= 0.25)
        #expect(r.weight.value.abs().max().item > 0.1)
    }

    @Test("Linear.channelFirst equals moving the channels last, the layer, and back (values and gradients)",
          arguments: [[2, 24, 5, 7], [3, 24, 40], [1, 24, 1]])
    func linearChannelFirst(shape: [Int]) {
        var rng = SeededGenerator(seed: 5)
        let l = Linear(24, 6, rng: &rng)
        let x = TestSupport.random(shape, seed: 6).requiringGradient()
        let weights = TestSupport.random([shape[0], 6] + Array(shape.dropFirst(2)), seed: 7)
        let rank = shape.count
        let last = Array([0] + Array(2..<rank) + [1]), first = Array([0, rank - 1] + Array(1..<(rank - 1)))
        let reference = l(x.permuted(last)).permuted(first)
        let y = l.channelFirst(x)
        #expect(y.shape == reference.shape)
        // The same products; the bias is added after the sum instead of first, so a rounding apart at most.
        #expect(TestSupport.isClose(y, reference, atol: 1e-6, rtol: 1e-6))
        let grads = { (out: Tensor) -> [Tensor] in
            l.zeroGradients(); x.grad = nil
            (out * weights).sum().backward()
            return [x.grad!, l.weight.grad!, l.bias!.grad!]
        }
        let viaPermutes = grads(l(x.permuted(last)).permuted(first)), direct = grads(l.channelFirst(x))
        for (a, b) in zip(direct, viaPermutes) { #expect(TestSupport.isClose(a, b, atol: 1e-5, rtol: 1e-5)) }
        #expect(direct[1].abs().max().item > 0.1)  // the weight did receive a gradient
    }

    @Test("LayerNorm normalises the last axis with the biased variance")
    func layerNorm() {
        let y = LayerNorm(4)(Tensor(rows: [[1, 2, 3, 4]]))
        // mean 2.5, var 1.25: (x − 2.5)/√(1.25 + 1e-5)
        let s = (1.25 as Float + 1e-5).squareRoot()
        #expect(TestSupport.isClose(y, Tensor(rows: [[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s]])))
        let x = TestSupport.random([2, 5], seed: 4)
        let ln = LayerNorm(5)
        #expect(TestSupport.gradientCheck([x]) { (ln($0[0]) * Tensor.arange(0, 10).reshaped([2, 5])).sum() } <= 1)
    }

    @Test("MSE and cross-entropy values")
    func losses() {
        #expect(Loss.mse(Tensor([1, 2]), Tensor([0, 0])).item == 2.5)
        let logits = Tensor(rows: [[0, 0], [1, 3]])
        let ce = Loss.crossEntropy(logits, IndexTensor([1, 0]))
        // −(log ½ + log(e/(e+e³)))/2
        let expected = (Float(2).squareRoot() * 0 + 0.6931472 + 2.126928) / 2
        #expect(abs(ce.item - expected) < 1e-5)
        #expect(abs(Loss.crossEntropy(logits, IndexTensor([1, -100])).item - 0.6931472) < 1e-6)
    }
}
