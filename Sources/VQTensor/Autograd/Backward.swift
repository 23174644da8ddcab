// Reverse-mode differentiation: a topological walk from the output, and one exhaustive switch that
// turns the gradient of an operation's output into gradients of its inputs.

extension Tensor {
    /// Back-propagates from this tensor, accumulating into the ``grad`` of every leaf it depends on.
    ///
    /// - Parameter gradient: the gradient of the objective with respect to `self`; omit it for a
    ///   one-element tensor (then it is 1).
    public func backward(_ gradient: Tensor? = nil) {
        guard let root = node else { return }
        let seed: Tensor
        if let gradient {
            precondition(gradient.shape == shape, "backward: gradient \(gradient.shape) for a tensor of shape \(shape)")
            seed = gradient.detached()
        } else {
            precondition(count == 1, "backward: a tensor of shape \(shape) needs an explicit gradient")
            seed = Tensor(repeating: 1, shape: shape)
        }
        withoutGradient {
            // Topological order by iterative depth-first search.
            var order: [GradNode] = []
            var visited = Set<ObjectIdentifier>()
            var stack: [(GradNode, Bool)] = [(root, false)]
            while let (n, expanded) = stack.popLast() {
                if expanded { order.append(n); continue }
                if !visited.insert(ObjectIdentifier(n)).inserted { continue }
                stack.append((n, true))
                for case let i? in n.inputs where !visited.contains(ObjectIdentifier(i)) { stack.append((i, false)) }
            }
            var grads: [ObjectIdentifier: Tensor] = [ObjectIdentifier(root): seed]
            for n in order.reversed() {
                guard let g = grads.removeValue(forKey: ObjectIdentifier(n)) else { continue }
                if n.isLeaf {
                    var g = g
                    for hook in n.hooks {
                        g = hook(g).detached()
                        precondition(g.shape == n.shape, "gradient hook returned shape \(g.shape) for a leaf of shape \(n.shape)")
                    }
                    n.grad = n.grad.map { $0 + g } ?? g
                    continue
                }
                let inputGrads = Backward.inputGradients(n.op, gradient: g, inputShapes: n.inputs.map { $0?.shape })
                for (input, ig) in zip(n.inputs, inputGrads) {
                    guard let input, let ig else { continue }
                    let key = ObjectIdentifier(input)
                    grads[key] = grads[key].map { $0 + ig } ?? ig
                }
            }
        }
    }

    /// Sums a broadcast gradient back to `target` (the adjoint of broadcasting).
    func summed(to target: [Int]) -> Tensor {
        if shape == target { return self }
        let extra = rank - target.count
        var axes = Array(0..<extra)
        for (i, t) in target.enumerated() where t == 1 && shape[extra + i] != 1 { axes.append(extra + i) }
        return sum(axes: axes, keepDims: true).reshaped(target)
    }
}

enum Backward {
    /// Gradients of `op`'s inputs given the gradient `g` of its output (nil = no gradient).
    static func inputGradients(_ op: Op, gradient g: Tensor, inputShapes: [[Int]?]) -> [Tensor?] {
        func needs(_ i: Int) -> Bool { i < inputShapes.count && inputShapes[i] != nil }
        switch op {
        case .leaf:
            return []
        // Only the gradients that are needed (`inputShapes[i] == nil`: input i takes none), so a constant
        // operand (FSQ's per-level scales, a detached shift) costs no pass over the gradient.
        case .add(let l, let r):
            return [needs(0) ? g.summed(to: l) : nil, needs(1) ? g.summed(to: r) : nil]  // d(a+b) = da + db
        case .sub(let l, let r):
            return [needs(0) ? g.summed(to: l) : nil, needs(1) ? (-g).summed(to: r) : nil]
        case .mul(let a, let b):
            // d(ab) = b da + a db
            return [needs(0) ? (g * b).summed(to: a.shape) : nil, needs(1) ? (g * a).summed(to: b.shape) : nil]
        case .div(let a, let b):
            // d(a/b) = da / b − a db / b²
            return [needs(0) ? (g / b).summed(to: a.shape) : nil, needs(1) ? (-(g * a) / (b * b)).summed(to: b.shape) : nil]
        case .maximum(let a, let b):
            return extremumOfTwoGradients(g, a: a, b: b, maximum: true)
        case .minimum(let a, let b):
            return extremumOfTwoGradients(g, a: a, b: b, maximum: false)
        case .select(let c, let l, let r):
            return [(g * c).summed(to: l), (g * (1 - c)).summed(to: r)]
        case .unary(.gelu, let x, _) where g.shape == x.shape:
            return [Tensor.geluGradient(g, x: x)]
        case .unary(let u, let x, let y):
            return [g * unaryDerivative(u, x: x, y: y)]
        case .sum(_, let kept):
            return [g.reshaped(kept).expanded(to: inputShapes[0]!)]
        case .meanSquaredDifference(let diff):
            // d/da mean((a − b)²) = 2(a − b)/N, d/db = −2(a − b)/N; only the gradients that are needed.
            // One product per needed side, in the arithmetic kernel (−(s·d) = (−s)·d exactly).
            let scale = 2 * g.item / Float(Swift.max(diff.count, 1))
            return [needs(0) ? diff * scale : nil, needs(1) ? diff * -scale : nil]
        case .mean(_, let kept, let n):
            return [(g.reshaped(kept) / Float(n)).expanded(to: inputShapes[0]!)]
        case .extremum(let input, let positions):
            return [extremumGradient(g, input: input, positions: positions)]
        case .logSumExp(let x, let y):
            // d lse / dx = exp(x − lse)
            return [g.reshaped(y.shape) * Elementwise.zip(x, y, "logSumExp") { expf_($0 - $1) }]
        case .softmax(let y, let axis):
            // dx = y ⊙ (g − Σ g⊙y)
            return [y * (g - (g * y).sum(axis: axis, keepDims: true))]
        case .logSoftmax(let y, let axis):
            // dx = g − softmax · Σ g
            return [g - y.exp() * g.sum(axis: axis, keepDims: true)]
        case .reshape(let input):
            return [g.reshaped(input)]
        case .permute(let p):
            var inverse = [Int](repeating: 0, count: p.count)
            for (i, a) in p.enumerated() { inverse[a] = i }     // the inverse permutation
            return [g.permuted(inverse)]
        case .expand(let input):
            return [g.summed(to: input)]
        case .concat(let axis, let sizes):
            return g.split(sizes: sizes, axis: axis).map { $0 }
        case .slice(let input, let axis, let start):
            return [sliceGradient(g, input: input, axis: axis, start: start)]
        case .gather(let input, let axis, let index):
            return [Tensor.zeros(input).scatterAdd(axis: axis, index: index, source: g)]
        case .indexSelect(let input, let axis, let index):
            return [Tensor.zeros(input).indexAdd(axis: axis, index, g)]
        case .scatterAdd(let axis, let index):
            return [g, g.gather(axis: axis, index: index)]
        case .indexAdd(let axis, let index):
            return [g, g.indexSelect(axis: axis, index)]
        case .matmulTransposedB(let a, let b):
            return matmulTransposedBGradients(g, a: a, b: b, needs: needs)
        case .linear(let x, let w):
            return linearGradients(g, x: x, w: w, needs: needs)
        case .convolution(let plan, let cols, let weight, let hasBias):
            return Tensor.convolutionBackward(g, plan: plan, cols: cols, weight: weight, hasBias: hasBias,
                                              needs: inputShapes.map { $0 != nil })
        case .shiftedConvolution(let plan, let padded, let weight, let hasBias):
            return Tensor.shiftedConvolutionBackward(g, plan: plan, padded: padded, weight: weight, hasBias: hasBias,
                                                     needs: inputShapes.map { $0 != nil })
        case .custom(let backward):
            return [backward(g)]
        case .matmul(let a, let b):
            return matmulGradients(g, a: a, b: b)
        }
    }

    /// d max(a, b): to the larger (`maximum`) or smaller operand, half to each where they tie.
    static func extremumOfTwoGradients(_ g: Tensor, a: Tensor, b: Tensor, maximum: Bool) -> [Tensor?] {
        let wa = Elementwise.zip(a, b, "maximum") { x, y in x == y ? 0.5 : ((maximum ? x > y : x < y) ? 1 : 0) }
        return [(g * wa).summed(to: a.shape), (g * (1 - wa)).summed(to: b.shape)]
    }

    /// The gradient of a reduction to extrema (max/min along an axis): each output's gradient at the position it
    /// was taken from.
    static func extremumGradient(_ g: Tensor, input: [Int], positions: [Int]) -> Tensor {
        var out = [Float](repeating: 0, count: Shape.count(input))
        for (j, p) in positions.enumerated() { out[p] += g.scalars[j] }
        return Tensor(out, shape: input)
    }

    /// The gradient of a slice: `g` placed at `start` along `axis` of zeros of the input's shape.
    static func sliceGradient(_ g: Tensor, input: [Int], axis: Int, start: Int) -> Tensor {
        var out = Tensor.zeros(input)
        let (outer, n, inner) = Shape.split(input, at: axis)
        let m = g.shape[axis]
        out.scalars.withUnsafeMutableBufferPointer { o in
            g.scalars.withUnsafeBufferPointer { s in
                for ob in 0..<outer where m > 0 {
                    (o.baseAddress! + (ob * n + start) * inner).update(from: s.baseAddress! + ob * m * inner, count: m * inner)
                }
            }
        }
        return out
    }

    /// C = A·B: dA = dC·Bᵀ, dB = Aᵀ·dC (summed over broadcast batch axes). A matrix B shared by every batch of A:
    /// dB is one product of the flattened [rows, K]ᵀ·[rows, N] (as torch folds it), not a [batch, K, N] stack of
    /// partial products summed afterwards.
    static func matmulGradients(_ g: Tensor, a: Tensor, b: Tensor) -> [Tensor?] {
        let ga = Tensor.matmulRaw(g, b, transposeA: false, transposeB: true).summed(to: a.shape)
        if b.rank == 2 && a.rank > 2 {
            let (k, n) = (b.shape[0], b.shape[1])
            return [ga, Tensor.matmulRaw(a.reshaped([-1, k]), g.reshaped([-1, n]), transposeA: true, transposeB: false)]
        }
        let gb = Tensor.matmulRaw(a, g, transposeA: true, transposeB: false).summed(to: b.shape)
        return [ga, gb]
    }

    /// C = A·Bᵀ: dA = dC·B; dB = dCᵀ·A — for a 2-D B [N, K] over every batch row, as one product of the flattened
    /// [rows, N]ᵀ·[rows, K] (no per-batch partial products); for a batched B, batch by batch. Only the gradients that
    /// are needed (a constant B — a fixed codebook — takes none).
    static func matmulTransposedBGradients(_ g: Tensor, a: Tensor, b: Tensor, needs: (Int) -> Bool) -> [Tensor?] {
        let ga = needs(0) ? Tensor.matmulRaw(g, b, transposeA: false, transposeB: false) : nil
        guard needs(1) else { return [ga, nil] }
        guard b.rank == 2 else { return [ga, Tensor.matmulRaw(g, a, transposeA: true, transposeB: false)] }
        let (n, k) = (b.shape[0], b.shape[1])
        let gb = Tensor.matmulRaw(g.reshaped([-1, n]), a.reshaped([-1, k]), transposeA: true, transposeB: false)
        return [ga, gb]
    }

    /// y = x·Wᵀ + b: dx = dy·W, dW = dyᵀ·x (rows flattened), db = Σ_rows dy; only those needed.
    /// A narrow input (`k ≤ 8` features to `n ≥ 16`: the projection out of FSQ's or LFQ's few channels) takes the
    /// three in one pass over `dy` (``GEMM/narrowLinearGradients(rows:n:k:dy:weight:x:dx:dw:db:)``).
    static func linearGradients(_ g: Tensor, x: Tensor, w: Tensor, needs: (Int) -> Bool) -> [Tensor?] {
        let (n, k) = (w.shape[0], w.shape[1])
        if k >= 1 && k <= 8 && n >= 16 && (needs(1) || needs(2)) {
            return narrowLinearGradients(g, x: x, w: w, needs: needs)
        }
        let gx = needs(0) ? Tensor.matmulRaw(g, w, transposeA: false, transposeB: false) : nil
        let flat = g.reshaped([-1, n])
        let gw = needs(1) ? Tensor.matmulRaw(flat, x.reshaped([-1, k]), transposeA: true, transposeB: false) : nil
        return [gx, gw, needs(2) ? flat.sum(axis: 0) : nil]
    }

    static func narrowLinearGradients(_ g: Tensor, x: Tensor, w: Tensor, needs: (Int) -> Bool) -> [Tensor?] {
        let (n, k) = (w.shape[0], w.shape[1])
        let rows = g.count / n
        guard rows > 0 else {   // an empty batch: no storage to point at, and every sum is 0
            return [needs(0) ? Tensor.zeros(x.shape) : nil, needs(1) ? Tensor.zeros([n, k]) : nil, needs(2) ? Tensor.zeros([n]) : nil]
        }
        var dw = needs(1) ? [Float](repeating: 0, count: n * k) : nil
        var db = needs(2) ? [Float](repeating: 0, count: n) : nil
        func run(_ dx: UnsafeMutablePointer<Float>?) {
            g.scalars.withUnsafeBufferPointer { pg in
                w.scalars.withUnsafeBufferPointer { pw in
                    x.scalars.withUnsafeBufferPointer { px in
                        withOptionalStorage(&dw) { pdw in
                            withOptionalStorage(&db) { pdb in
                                GEMM.narrowLinearGradients(rows: rows, n: n, k: k, dy: pg.baseAddress!, weight: pw.baseAddress!,
                                                           x: px.baseAddress, dx: dx, dw: pdw, db: pdb)
                            }
                        }
                    }
                }
            }
        }
        var dx: Tensor? = nil
        if needs(0) { dx = Tensor.uninitialized(x.shape) { run($0.baseAddress) } } else { run(nil) }
        return [dx, dw.map { Tensor($0, shape: [n, k]) }, db.map { Tensor($0, shape: [n]) }]
    }

    /// `body` with the array's storage, or nil for no array.
    private static func withOptionalStorage(_ a: inout [Float]?, _ body: (UnsafeMutablePointer<Float>?) -> Void) {
        guard a != nil else { return body(nil) }
        a!.withUnsafeMutableBufferPointer { body($0.baseAddress) }
    }

    static func unaryDerivative(_ u: UnaryOp, x: Tensor, y: Tensor) -> Tensor {
        switch u {
        case .neg: return Tensor(repeating: -1, shape: x.shape)
        case .sqrt: return Elementwise.map(y) { 0.5 / $0 }  // d√x = 1 / (2√x)
        case .exp: return y
        case .log: return Elementwise.map(x) { 1 / $0 }
        case .tanh: return Elementwise.map(y) { 1 - $0 * $0 }
        case .sigmoid: return Elementwise.map(y) { $0 * (1 - $0) }
        case .relu: return Elementwise.map(x) { $0 > 0 ? 1 : 0 }
        case .gelu:
            // d/dx x·Φ(x) = Φ(x) + x·φ(x), with the forward's Φ
            return Tensor.geluGradient(Tensor(repeating: 1, shape: x.shape), x: x)
        case .silu:
            return Elementwise.map(x) { v in let s = sigmoidScalar(v); return s * (1 + v * (1 - s)) }
        case .abs: return x.sign()
        case .clamp(let lo, let hi): return Elementwise.map(x) { $0 >= lo && $0 <= hi ? 1 : 0 }
        case .pow(let p): return p == 2 ? Elementwise.map(x) { 2 * $0 } : Elementwise.map(x) { p * powf_($0, p - 1) }
        case .sin: return Elementwise.map(x) { cosf_($0) }
        case .cos: return Elementwise.map(x) { -sinf_($0) }
        case .logSigmoid: return Elementwise.map(x) { sigmoidScalar(-$0) }  // d log σ(x) = 1 − σ(x) = σ(−x)
        case .softplus: return Elementwise.map(x) { $0 > 20 ? 1 : sigmoidScalar($0) }
        case .erf: return Elementwise.map(x) { 1.1283791670955126 * expf_(-$0 * $0) }  // 2/√π · e^{−x²}
        case .atan: return Elementwise.map(x) { 1 / (1 + $0 * $0) }
        }
    }
}
