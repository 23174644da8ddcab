import Testing
import VQTensor
import VQTestSupport

/// Finite-difference checks: every differentiable op's autograd gradient agrees with central
/// differences of the forward function (worst violation ratio ≤ 1).
@Suite("Autograd: finite-difference gradients of every differentiable op")
struct GradientTests {
    static let a = TestSupport.random([3, 4], seed: 21)
    static let b = TestSupport.random([3, 4], seed: 22)
    static let row = TestSupport.random([1, 4], seed: 23)
    static let positive = TestSupport.random([3, 4], seed: 24).abs() + 0.5

    static let unaryCases: [(String, @Sendable (Tensor) -> Tensor)] = [
        ("neg", { -$0 }), ("exp", { $0.exp() }), ("tanh", { $0.tanh() }), ("sigmoid", { $0.sigmoid() }),
        ("relu", { $0.relu() }), ("gelu", { $0.gelu() }), ("silu", { $0.silu() }), ("abs", { $0.abs() }),
        ("clamp", { $0.clamped(min: -0.5, max: 0.5) }), ("squared", { $0.squared() }), ("pow3", { $0.pow(3) }),
        ("sin", { $0.sin() }), ("cos", { $0.cos() }), ("logSigmoid", { $0.logSigmoid() }), ("softplus", { $0.softplus() }), ("erf", { $0.erf() }), ("atan", { $0.atan() }),
        ("softmax", { $0.softmax(axis: 1) }),
        ("logSoftmax", { $0.logSoftmax(axis: 0) }), ("logSumExp", { $0.logSumExp(axis: 1) }),
        ("sum axes", { $0.sum(axes: [0]) }), ("mean keepDims", { $0.mean(axis: 1, keepDims: true) }),
        ("max axis", { $0.max(axis: 1) }), ("min all", { $0.min() }), ("reshape", { $0.reshaped([2, 6]) }),
        ("transpose", { $0.transposed() }), ("expand", { $0.reshaped([3, 1, 4]).expanded(to: [3, 2, 4]) }),
        ("slice", { $0.slice(axis: 1, 1..<3) }), ("split", { $0.split(sizes: [1, 2], axis: 0)[1] }),
        ("l2Normalized", { $0.l2Normalized(axis: 1) }),
        ("gather", { $0.gather(axis: 1, index: IndexTensor([3, 0, 1, 1, 2, 2], shape: [3, 2])) }),
        ("indexSelect", { $0.indexSelect(axis: 0, IndexTensor([2, 0, 2])) }),
        ("permute3", { $0.reshaped([3, 2, 2]).permuted(2, 0, 1) }),
    ]

    @Test("unary, reduction, shape and indexing ops", arguments: unaryCases.indices)
    func unary(_ i: Int) {
        let (name, f) = Self.unaryCases[i]
        // Weight the output so every element's gradient differs: d(Σ w·f) / dx.
        let ratio = TestSupport.gradientCheck([Self.a]) { xs in
            let y = f(xs[0])
            let w = Tensor((0..<y.count).map { Float($0 % 5) - 1.7 }, shape: y.shape)
            return (y * w).sum()
        }
        #expect(ratio <= 1, "\(name): worst ratio \(ratio)")
    }

    @Test("sqrt and log on positive inputs")
    func positiveOnly() {
        #expect(TestSupport.gradientCheck([Self.positive], eps: 1e-3) { ($0[0].sqrt() * 1.3).sum() } <= 1)
        #expect(TestSupport.gradientCheck([Self.positive], eps: 1e-3) { ($0[0].log() * 0.7).sum() } <= 1)
    }

    static let binaryCases: [(String, @Sendable (Tensor, Tensor) -> Tensor)] = [
        ("add", { $0 + $1 }), ("sub", { $0 - $1 }), ("mul", { $0 * $1 }), ("div", { $0 / ($1.abs() + 1) }),
        ("maximum", { $0.maximum($1) }), ("minimum", { $0.minimum($1) }),
        ("select", { Tensor.select($0 .> 0, $0 * 2, $1) }),
        ("concat", { Tensor.concat([$0, $1 * 3], axis: 1) }),
        ("stack", { Tensor.stack([$0, $1], axis: 1) }),
        ("matmul", { $0.matmul($1.transposed()) }),
        ("pairwise", { $0.pairwiseSquaredDistance($1) }),
        ("scatterAdd", { $0.scatterAdd(axis: 0, index: IndexTensor([2, 0, 1, 1, 0, 2, 2, 2, 0, 1, 0, 0], shape: [3, 4]), source: $1) }),
        ("indexAdd", { $0.indexAdd(axis: 0, IndexTensor([1, 1, 0]), $1) }),
        ("meanSquaredDifference", { $0.meanSquaredDifference($1) * 3 }),
    ]

    @Test("binary ops, same shape", arguments: binaryCases.indices)
    func binary(_ i: Int) {
        let (name, f) = Self.binaryCases[i]
        let ratio = TestSupport.gradientCheck([Self.a, Self.b]) { xs in
            let y = f(xs[0], xs[1])
            let w = Tensor((0..<y.count).map { Float($0 % 7) * 0.3 - 0.8 }, shape: y.shape)
            return (y * w).sum()
        }
        #expect(ratio <= 1, "\(name): worst ratio \(ratio)")
    }

    @Test("broadcasting gradients sum back to the operand's shape")
    func broadcasting() {
        for f: (Tensor, Tensor) -> Tensor in [{ $0 + $1 }, { $0 * $1 }, { $0 / ($1 * $1 + 1) }, { $0 - $1 }] {
            let ratio = TestSupport.gradientCheck([Self.a, Self.row]) { xs in
                (f(xs[0], xs[1]) * Tensor.arange(0, 12).reshaped([3, 4])).sum()
            }
            #expect(ratio <= 1)
        }
        // A scalar tensor broadcast against a matrix: d/ds Σ (a·s) = Σ a.
        let s = Tensor(2).requiringGradient()
        (Self.a * s).sum().backward()
        #expect(abs(s.grad!.item - Self.a.sum().item) < 1e-5)
        #expect(s.grad!.shape == [])
    }

    @Test("batched matmul with broadcast batch axes")
    func batchedMatmul() {
        let x = TestSupport.random([2, 3, 4], seed: 25), w = TestSupport.random([4, 5], seed: 26)
        #expect(TestSupport.gradientCheck([x, w]) { ($0[0].matmul($0[1]) * 0.5).sum() } <= 1)
        let y = TestSupport.random([2, 4, 3], seed: 27)
        #expect(TestSupport.gradientCheck([x, y]) { ($0[0].matmul($0[1]).squared()).mean() } <= 1)
        // A matrix shared by two batch axes: its gradient is one flattened product.
        let x4 = TestSupport.random([2, 2, 3, 4], seed: 28)
        #expect(TestSupport.gradientCheck([x4, w]) { ($0[0].matmul($0[1]).squared() * 0.25).sum() } <= 1)
    }

    @Test("x·Wᵀ read in place: gradients in x and W (2-D and batched x), and the same values as x·W.transposed()")
    func matmulTransposed() {
        let w = TestSupport.random([5, 4], seed: 28)
        for x in [TestSupport.random([3, 4], seed: 29), TestSupport.random([2, 3, 4], seed: 30)] {
            #expect(TestSupport.gradientCheck([x, w]) { ($0[0].matmul(transposed: $0[1]).squared() * 0.5).sum() } <= 1)
            #expect(x.matmul(transposed: w) == x.matmul(w.transposed()))
        }
        // Batched B (the same batch axes): each batch's rows against its own matrix, read transposed in place.
        let xb = TestSupport.random([3, 6, 4], seed: 36), wb = TestSupport.random([3, 5, 4], seed: 37)
        #expect(TestSupport.gradientCheck([xb, wb]) { ($0[0].matmul(transposed: $0[1]).squared() * 0.5).sum() } <= 1)
        #expect(xb.matmul(transposed: wb).scalars.map(\.bitPattern) == xb.matmul(wb.transposed()).scalars.map(\.bitPattern))
        // The same tensor on both sides (a Gram matrix): both gradients reach it.
        #expect(TestSupport.gradientCheck([wb]) { ($0[0].matmul(transposed: $0[0]).squared() * 0.5).sum() } <= 1)
    }

    @Test("linear x·Wᵀ + b in one pass: gradients in x, W and b; the values of matmul plus bias")
    func linear() {
        let w = TestSupport.random([5, 4], seed: 31), b = TestSupport.random([5], seed: 32)
        for x in [TestSupport.random([3, 4], seed: 33), TestSupport.random([2, 3, 4], seed: 34), TestSupport.random([40, 4], seed: 35)] {
            #expect(TestSupport.gradientCheck([x, w, b]) { ($0[0].linear(weight: $0[1], bias: $0[2]).squared() * 0.5).sum() } <= 1)
            #expect(TestSupport.isClose(x.linear(weight: w, bias: b), x.matmul(transposed: w) + b, atol: 1e-6, rtol: 1e-6))
        }
    }

    @Test("y = Σ x² + 5x has dy/dx = 2x + 5")
    func documentedExample() {
        let x = Tensor([1, 2, 3, 4], shape: [2, 2]).requiringGradient()
        (x * x + 5 * x).sum().backward()
        #expect(x.grad!.scalars == [7, 9, 11, 13])
    }
}

@Suite("Autograd mechanics")
struct AutogradMechanicsTests {
    @Test("gradients accumulate over backward calls until reset")
    func accumulation() {
        let x = Tensor([1, 2]).requiringGradient()
        (x * 3).sum().backward()
        (x * 3).sum().backward()
        #expect(x.grad!.scalars == [6, 6])  // d(3x)/dx = 3, twice
        x.grad = nil
        (x * x).sum().backward()
        #expect(x.grad!.scalars == [2, 4])
    }

    @Test("detached and no-gradient regions record nothing")
    func stopGradient() {
        let x = Tensor([1, 2]).requiringGradient()
        let y = x * x.detached()  // d/dx (x · c) = c
        y.sum().backward()
        #expect(x.grad!.scalars == [1, 2])
        let z = withoutGradient { x * 2 }
        #expect(!z.requiresGradient)
        #expect(!(Tensor([1]) * 2).requiresGradient)
    }

    @Test("a hook sees and may replace a leaf's gradient")
    func hooks() {
        let x = Tensor([1, 2, 3]).requiringGradient()
        x.registerGradientHook { g in g * Tensor([1, 0, 1]) }  // freeze element 1
        (x * 4).sum().backward()
        #expect(x.grad!.scalars == [4, 0, 4])
    }

    @Test("a node used twice receives the sum of both paths")
    func diamond() {
        let x = Tensor([3]).requiringGradient()
        let y = x * 2
        (y * y + y).sum().backward()  // f = 4x² + 2x, f' = 8x + 2 = 26
        #expect(x.grad!.scalars == [26])
    }

    @Test("straight-through estimator: x + (round(x) − x).detached() has gradient 1")
    func straightThrough() {
        let x = Tensor([0.3, 1.7]).requiringGradient()
        let q = x + (x.rounded() - x).detached()
        #expect(q.scalars == [0, 2])
        q.sum().backward()
        #expect(x.grad!.scalars == [1, 1])
    }
}
