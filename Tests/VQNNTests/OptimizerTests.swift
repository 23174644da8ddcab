import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport

@Suite("Optimizers: PyTorch update formulas and exact freezing")
struct OptimizerTests {
    func param(_ values: [Float], grad: [Float]) -> Parameter {
        let p = Parameter(Tensor(values))
        p.grad = Tensor(grad)
        return p
    }

    @Test("SGD: plain, weight decay, momentum and Nesterov, computed by hand")
    func sgd() {
        let p = param([1, -2], grad: [0.5, 1])
        SGD(parameters: [p], learningRate: 0.1).step()
        let expected: [Float] = [1 - 0.1 * 0.5, -2 - 0.1 * 1]
        #expect(p.value.scalars == expected)

        // weight decay 0.1: g = 0.5 + 0.1·1 = 0.6
        let q = param([1], grad: [0.5])
        SGD(parameters: [q], learningRate: 0.1, weightDecay: 0.1).step()
        let g: Float = 0.5 + 0.1 * 1
        #expect(q.value.scalars == [1 - 0.1 * g])

        // momentum 0.9: step 1 b = g = 1 → θ = 1 − 0.1; step 2 b = 0.9·1 + 1 = 1.9 → θ −= 0.19
        let r = param([1], grad: [1])
        let opt = SGD(parameters: [r], learningRate: 0.1, momentum: 0.9)
        opt.step()
        opt.step()
        let b2: Float = 0.9 * 1 + 1, theta1: Float = 1 - 0.1 * 1
        #expect(r.value.scalars == [theta1 - 0.1 * b2])
        #expect(opt.momentumBuffer(of: r) == [b2])

        // Nesterov: step 1 b = 1, g = 1 + 0.9·1 = 1.9
        let s = param([0], grad: [1])
        SGD(parameters: [s], learningRate: 1, momentum: 0.9, nesterov: true).step()
        #expect(s.value.scalars == [-1.9])
    }

    @Test("Adam: two steps by hand with PyTorch's bias corrections")
    func adam() {
        let p = param([1], grad: [0.5])
        let opt = Adam(parameters: [p], learningRate: 0.01)
        var theta: Float = 1, m: Float = 0, v: Float = 0
        for t in 1...2 {
            opt.step()
            let g: Float = 0.5
            m = m + Float(1 - 0.9 as Double) * (g - m)            // lerp, w < 0.5
            v = v * 0.999 + Float(1 - 0.999 as Double) * g * g
            let bc1 = 1 - Foundation.pow(0.9, Double(t)), bc2 = 1 - Foundation.pow(0.999, Double(t))
            let denom: Float = v.squareRoot() / Float(bc2.squareRoot()) + 1e-8
            let stepSize = Float(0.01 / bc1)
            theta = theta - stepSize * (m / denom)
            #expect(abs(p.value.item - theta) <= 1e-7, "step \(t)")
        }
        #expect(opt.stepCount(of: p) == 2)
    }

    @Test("AdamW decays the weights before the Adam step; Adam's L2 goes through the gradient")
    func adamW() {
        let p = param([2], grad: [0])
        AdamW(parameters: [p], learningRate: 0.1, weightDecay: 0.5).step()
        // θ(1 − ηλ) = 2·0.95, then the Adam step of g = 0 is 0
        let decay = Float(1 - 0.1 * 0.5 as Double)
        #expect(p.value.scalars == [2 * decay])
        let q = param([2], grad: [0])
        Adam(parameters: [q], learningRate: 0.1, weightDecay: 0.5).step()
        #expect(abs(q.value.item - (2 - 0.1)) < 1e-6)  // g = 0 + 0.5·2 = 1 → first step −η
    }

    static let optimizers: [String] = ["sgd", "sgd-momentum-wd", "nesterov", "adam", "adam-l2", "adamw"]

    func make(_ name: String, _ ps: [Parameter]) -> Optimizer {
        switch name {
        case "sgd": return SGD(parameters: ps, learningRate: 0.1)
        case "sgd-momentum-wd": return SGD(parameters: ps, learningRate: 0.1, momentum: 0.9, weightDecay: 0.1)
        case "nesterov": return SGD(parameters: ps, learningRate: 0.1, momentum: 0.9, nesterov: true)
        case "adam": return Adam(parameters: ps, learningRate: 0.05)
        case "adam-l2": return Adam(parameters: ps, learningRate: 0.05, weightDecay: 0.1)
        default: return AdamW(parameters: ps, learningRate: 0.05, weightDecay: 0.1)
        }
    }

    @Test("frozen rows and their optimizer state never change; the other rows keep training", arguments: optimizers)
    func frozenRowsExact(_ name: String) {
        let p = Parameter(TestSupport.random([6, 4], seed: 30))
        let frozen = [0, 3, 5]
        let opt = make(name, [p])
        // Warm up with every row live, so momentum / moments are non-zero when the freeze starts.
        for s in 0..<3 {
            p.grad = TestSupport.random([6, 4], seed: 40 + UInt64(s))
            opt.step()
        }
        p.freezeRows(frozen)
        let before = p.value
        let stateBefore = (opt as? SGD)?.momentumBuffer(of: p) ?? (opt as? Adam)?.moments(of: p).map { $0.m + $0.v }
        for s in 0..<10 {
            p.grad = TestSupport.random([6, 4], seed: 50 + UInt64(s))
            opt.step()
        }
        let stateAfter = (opt as? SGD)?.momentumBuffer(of: p) ?? (opt as? Adam)?.moments(of: p).map { $0.m + $0.v }
        for r in 0..<6 {
            let rowBefore = Array(before.scalars[(r * 4)..<(r * 4 + 4)]), rowAfter = Array(p.value.scalars[(r * 4)..<(r * 4 + 4)])
            if frozen.contains(r) {
                #expect(rowBefore.map(\.bitPattern) == rowAfter.map(\.bitPattern), "\(name): frozen row \(r) moved")
            } else {
                #expect(rowBefore != rowAfter, "\(name): live row \(r) did not train")
            }
        }
        if let stateBefore, let stateAfter {
            let n = stateBefore.count == 24 ? 24 : 48
            for r in frozen {
                for off in stride(from: 0, to: n, by: 24) {
                    let a = stateBefore[(off + r * 4)..<(off + r * 4 + 4)], b = stateAfter[(off + r * 4)..<(off + r * 4 + 4)]
                    #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(name): optimizer state of frozen row \(r) moved")
                }
            }
        }
    }

    @Test("a parameter frozen by key is skipped entirely")
    func frozenParameter() {
        let p = param([1, 2], grad: [1, 1])
        p.isFrozen = true
        AdamW(parameters: [p], learningRate: 0.1).step()
        #expect(p.value.scalars == [1, 2])
    }

    @Test("a non-finite gradient leaves the parameter and state unchanged")
    func nonFinite() {
        let p = param([1, 2], grad: [.nan, 1])
        let opt = Adam(parameters: [p], learningRate: 0.1)
        opt.step()
        #expect(p.value.scalars == [1, 2])
        #expect(opt.skippedUpdates == 1 && opt.moments(of: p) == nil)
        // A NaN only inside a frozen row does not block the others.
        let q = Parameter(Tensor(rows: [[1, 1], [2, 2]]))
        q.freezeRows([0])
        q.grad = Tensor(rows: [[.nan, .nan], [1, 1]])
        SGD(parameters: [q], learningRate: 1).step()
        #expect(q.value.scalars == [1, 1, 1, 1])
    }

    @Test("restoring Adam's moments: they continue the run bit for bit; NaN, ±∞ or a negative second moment are refused, changing nothing")
    func restoreMoments() throws {
        let p = param([1, -2], grad: [0.5, 1]), q = param([1, -2], grad: [0.5, 1])
        let a = Adam(parameters: [p], learningRate: 0.1), b = Adam(parameters: [q], learningRate: 0.1)
        a.step()
        let (m, v) = a.moments(of: p)!
        q.value = p.value
        let bads: [([Float], [Float])] = [(m, [v[0], -1e-30]), ([.nan, m[1]], v), (m, [v[0], .infinity]), ([m[0], -.infinity], v)]
        let before = b.moments(of: q)
        for bad in bads {
            #expect(throws: OptimizerStateError.self) { try b.restore(q, m: bad.0, v: bad.1, steps: 1) }
            #expect(b.stepCount(of: q) == 0 && b.moments(of: q)?.m == before?.m && b.moments(of: q)?.v == before?.v,
                    "a refused restore changed the state")
        }
        try b.restore(q, m: m, v: v, steps: 1)
        p.grad = Tensor([0.25, -1]); q.grad = Tensor([0.25, -1])
        a.step(); b.step()
        #expect(p.value.scalars == q.value.scalars && q.value.scalars != [1, -2])
    }

    @Test("a step count restored at Int.max (a file's value) saturates: the next step runs with β^t = 0, no overflow")
    func restoredStepCountSaturates() throws {
        let p = param([1, -2], grad: [0.5, 1])
        let a = Adam(parameters: [p], learningRate: 0.1)
        try a.restore(p, m: [0.1, 0.1], v: [0.01, 0.01], steps: Int.max)
        a.step()
        #expect(a.stepCount(of: p) == Int.max)
        // Bias corrections of 1: m = 0.9·0.1 + 0.1·0.5 = 0.14, v = 0.999·0.01 + 0.001·0.25 = 0.01024,
        // p₀ = 1 − 0.1·0.14 / (√0.01024 + 1e-8) = 1 − 0.1·0.14 / 0.1011929 ≈ 0.861650.
        #expect(abs(p.value.scalars[0] - 0.861650) < 1e-5, "\(p.value.scalars)")
    }

    @Test("gradient hooks fire before the optimizer reads the gradient")
    func hooksBeforeStep() {
        let w = Parameter(Tensor([1, 1, 1]))
        w.registerGradientHook { $0 * Tensor([0, 1, 2]) }
        let x = Tensor([1, 1, 1])
        (w.value * x).sum().backward()
        #expect(w.grad!.scalars == [0, 1, 2])
        w.grad = w.grad! * 2  // writable between backward and step
        SGD(parameters: [w], learningRate: 1).step()
        #expect(w.value.scalars == [1, -1, -3])
    }

    @Test("training a linear model by gradient descent reduces the loss")
    func trains() {
        var rng = SeededGenerator(seed: 5)
        let model = Sequential(Linear(3, 8, rng: &rng), Activation(.gelu), Linear(8, 1, rng: &rng))
        let x = TestSupport.random([64, 3], seed: 6)
        let y = (x * Tensor([1, -2, 0.5])).sum(axis: 1, keepDims: true)
        let opt = Adam(parameters: model.trainableParameters(), learningRate: 0.02)
        let first = Loss.mse(model(x), y).item
        for _ in 0..<200 {
            opt.zeroGradients()
            Loss.mse(model(x), y).backward()
            opt.step()
        }
        #expect(Loss.mse(model(x), y).item < first * 0.05)
    }
}
