import Testing
import VQNN
import VQTensor
import VQTestSupport

@Suite("Convolutions (1-D, 2-D, 3-D)")
struct ConvolutionTests {
    /// `y[b, o, t…] = bias[o] + Σ_{c in o's group, q…} w[o, c, q…] · x[b, c, t·stride + q·dilation − padding]`,
    /// summed in Double with zero outside the input, for any number of spatial axes.
    static func direct(_ x: Tensor, _ w: Tensor, _ bias: Tensor?, stride: [Int], padding: [Int], dilation: [Int], groups: Int) -> Tensor {
        let d = x.rank - 2
        let (b, cin) = (x.shape[0], x.shape[1])
        let (cout, cg) = (w.shape[0], w.shape[1])
        let kernel = Array(w.shape.dropFirst(2)), spatial = Array(x.shape.dropFirst(2))
        let outShape = (0..<d).map { i -> Int in (spatial[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) / stride[i] + 1 }
        let og = cout / groups
        func unflat(_ f: Int, _ dims: [Int]) -> [Int] {
            var r = f, out = [Int](repeating: 0, count: dims.count)
            for i in Swift.stride(from: dims.count - 1, through: 0, by: -1) { out[i] = r % dims[i]; r /= dims[i] }
            return out
        }
        func flat(_ idx: [Int], _ dims: [Int]) -> Int { zip(idx, dims).reduce(0) { $0 * $1.1 + $1.0 } }
        let xs = x.scalars, ws = w.scalars
        let oCount = outShape.reduce(1, *), kCount = kernel.reduce(1, *), sCount = spatial.reduce(1, *)
        var out = [Float](repeating: 0, count: b * cout * oCount)
        for bi in 0..<b {
            for o in 0..<cout {
                for t in 0..<oCount {
                    let tp = unflat(t, outShape)
                    var acc = Double(bias?.scalars[o] ?? 0)
                    for c in 0..<cg {
                        for q in 0..<kCount {
                            let qp = unflat(q, kernel)
                            let pos = (0..<d).map { tp[$0] * stride[$0] + qp[$0] * dilation[$0] - padding[$0] }
                            guard (0..<d).allSatisfy({ pos[$0] >= 0 && pos[$0] < spatial[$0] }) else { continue }
                            let xi = (bi * cin + (o / og) * cg + c) * sCount + flat(pos, spatial)
                            acc += Double(ws[(o * cg + c) * kCount + q]) * Double(xs[xi])
                        }
                    }
                    out[(bi * cout + o) * oCount + t] = Float(acc)
                }
            }
        }
        return Tensor(out, shape: [b, cout] + outShape)
    }

    /// (input shape, out channels, kernel, stride, padding, dilation, groups)
    static let cases: [([Int], Int, [Int], [Int], [Int], [Int], Int)] = [
        ([2, 4, 9], 6, [3], [1], [1], [1], 1), ([2, 4, 11], 6, [3], [2], [1], [2], 2), ([2, 3, 5], 3, [1], [1], [0], [1], 3),
        ([1, 2, 7], 5, [4], [3], [2], [1], 1),
        ([2, 3, 6, 5], 4, [3, 3], [1], [1], [1], 1), ([1, 4, 7, 6], 6, [3, 2], [2, 1], [1, 0], [1, 2], 2),
        ([1, 2, 4, 5, 3], 3, [3, 3, 3], [1], [1], [1], 1), ([1, 2, 5, 4, 4], 2, [2, 3, 1], [2, 1, 1], [0, 1, 0], [1], 1),
        // Stride 1 with dilation, uneven and wide padding (the shifted-view path), 1-D and 2-D.
        ([2, 3, 7, 6], 5, [3, 2], [1], [0, 2], [2, 1], 1), ([1, 3, 8], 2, [2], [1], [3], [3], 1),
        // An empty input with padding: the output reads padding only (the bias).
        ([2, 2, 0], 3, [1], [1], [1], [1], 1),
    ]

    /// Stride-1 shapes that reach every branch of the shifted-view path: output rows ≤ 4 (one-row kernel), one
    /// and several 12-row panels, a depth over one 512 block, and more padded positions than one
    /// weight-gradient chunk (4,096).
    static let shiftedCases: [([Int], Int, [Int], Int, Int)] = [  // (input, out channels, kernel, padding, dilation)
        ([3, 60, 9, 10], 14, [3, 3], 1, 1), ([2, 5, 40, 60], 3, [3, 3], 1, 1), ([2, 6, 50, 41], 7, [3, 3], 2, 2),
        ([1, 4, 300], 25, [5], 2, 1),
    ]

    @Test("stride-1 convolutions on shifted views equal the unfolded product, gradients too, bit-identical on 1 and 2 threads",
          arguments: shiftedCases.indices)
    func shiftedMatchesUnfolded(_ i: Int) {
        let (shape, cout, k, pad, dil) = Self.shiftedCases[i]
        let d = shape.count - 2
        let values = [TestSupport.random(shape, seed: 30), TestSupport.random([cout, shape[1]] + k, seed: 31), TestSupport.random([cout], seed: 32)]
        func run(_ threads: Int, shifted: Bool) -> [[Float]] {
            Threads.with(threads) {
                let (x, w, b) = (values[0].requiringGradient(), values[1].requiringGradient(), values[2].requiringGradient())
                let plan = ConvolutionPlan(input: shape, kernel: k, stride: [Int](repeating: 1, count: d),
                                           padding: [Int](repeating: pad, count: d), dilation: [Int](repeating: dil, count: d))
                let y = shifted ? x.convolution(weight: w, bias: b, padding: [pad], dilation: [dil]) : x.convolution(plan: plan, weight: w, bias: b)
                (y * Tensor((0..<y.count).map { Float($0 % 7) - 2.9 }, shape: y.shape)).sum().backward()
                return [y.scalars, x.grad!.scalars, w.grad!.scalars, b.grad!.scalars]
            }
        }
        let (one, two, unfolded) = (run(1, shifted: true), run(2, shifted: true), run(2, shifted: false))
        #expect(one.map { $0.map(\.bitPattern) } == two.map { $0.map(\.bitPattern) })
        for (name, (got, want)) in zip(["output", "input gradient", "weight gradient", "bias gradient"], zip(one, unfolded)) {
            let scale = want.map(abs).max()! + 1
            let worst = zip(got, want).map { abs($0 - $1) }.max()!
            #expect(worst <= 2e-5 * scale, "\(name): worst difference \(worst) for values up to \(scale)")
        }
    }

    @Test("matches the direct sum (stride, padding, dilation, groups; 1–3 spatial axes)", arguments: cases.indices)
    func values(_ i: Int) {
        let (shape, cout, k, st, pad, dil, g) = Self.cases[i]
        let x = TestSupport.random(shape, seed: 9)
        let w = TestSupport.random([cout, shape[1] / g] + k, seed: 10), b = TestSupport.random([cout], seed: 11)
        let y = x.convolution(weight: w, bias: b, stride: st, padding: pad, dilation: dil, groups: g)
        let d = shape.count - 2
        func full(_ v: [Int]) -> [Int] { v.count == 1 ? Array(repeating: v[0], count: d) : v }
        let expected = Self.direct(x, w, b, stride: full(st), padding: full(pad), dilation: full(dil), groups: g)
        #expect(y.shape == expected.shape)
        #expect(TestSupport.isClose(y, expected, atol: 1e-5, rtol: 1e-5))
    }

    @Test("finite-difference gradients in the input, weight and bias", arguments: cases.indices)
    func gradients(_ i: Int) {
        let (shape, cout, k, st, pad, dil, g) = Self.cases[i]
        let x = TestSupport.random(shape, seed: 9)
        let w = TestSupport.random([cout, shape[1] / g] + k, seed: 10), b = TestSupport.random([cout], seed: 11)
        let ratio = TestSupport.gradientCheck([x, w, b]) { xs in
            let y = xs[0].convolution(weight: xs[1], bias: xs[2], stride: st, padding: pad, dilation: dil, groups: g)
            return (y * Tensor((0..<y.count).map { Float($0 % 5) - 1.7 }, shape: y.shape)).sum()
        }
        #expect(ratio <= 1, "worst ratio \(ratio)")
    }

    @Test("layers keep PyTorch's keys and layouts")
    func layers() {
        var rng = SeededGenerator(seed: 1)
        let c1 = Conv1d(4, 6, kernelSize: 3, padding: 1, rng: &rng)
        let c2 = Conv2d(3, 8, kernelSize: 3, stride: 2, padding: 1, rng: &rng)
        let c3 = Conv3d(2, 4, kernelSize: 3, padding: 1, rng: &rng)
        #expect(Set(c2.stateDict().keys) == ["weight", "bias"])
        #expect(c1.weight.shape == [6, 4, 3] && c2.weight.shape == [8, 3, 3, 3] && c3.weight.shape == [4, 2, 3, 3, 3])
        #expect(c1(Tensor.zeros([2, 4, 10])).shape == [2, 6, 10])
        #expect(c2(Tensor.zeros([2, 3, 28, 28])).shape == [2, 8, 14, 14])
        #expect(c3(Tensor.zeros([1, 2, 4, 5, 6])).shape == [1, 4, 4, 5, 6])
    }

    @Test("frozen output channels keep their weights through optimizer steps; the others move")
    func frozenRows() {
        var rng = SeededGenerator(seed: 3)
        let conv = Conv2d(4, 6, kernelSize: 3, padding: 1, rng: &rng)
        conv.freezeOutputChannels([1, 4])
        let before = conv.weight.value.reshaped([6, 36])
        let opt = Adam(parameters: conv.trainableParameters(), learningRate: 0.1)
        for _ in 0..<3 {
            conv.zeroGradients()
            conv(TestSupport.random([2, 4, 5, 5], seed: 4)).squared().sum().backward()
            opt.step()
        }
        let after = conv.weight.value.reshaped([6, 36])
        for r in 0..<6 {
            let same = after.slice(axis: 0, r..<(r + 1)).scalars.map(\.bitPattern) == before.slice(axis: 0, r..<(r + 1)).scalars.map(\.bitPattern)
            #expect(same == [1, 4].contains(r), "channel \(r)")
        }
    }

    /// Max pooling over windows that tile the plane (the kernels' block path: 16 windows per vector and a
    /// masked rest for 2 × 2, scalar otherwise): each window's value is its first largest element in row-major
    /// order, NaN counting as largest (the first NaN wins), and the gradient goes to that element only.
    @Test("max pooling: first largest element, NaN wins, gradient to the chosen element", arguments: [([2, 3, 6, 40], 2), ([1, 2, 9, 12], 3), ([1, 1, 4, 6], 2)])
    func maxPoolTiles(_ shape: [Int], _ k: Int) {
        var rng = SeededGenerator(seed: 41)
        let n = shape.reduce(1, *)
        let values: [Float] = (0..<n).map { _ in Int.random(in: 0..<12, using: &rng) == 0 ? .nan : Float(Int.random(in: 0..<4, using: &rng)) }
        let x = Tensor(values, shape: shape).requiringGradient()
        let y = MaxPool(kernelSize: [k, k])(x)
        let (h, w) = (shape[2], shape[3]), (oh, ow) = (shape[2] / k, shape[3] / k)
        #expect(y.shape == [shape[0], shape[1], oh, ow])
        let scale = Tensor((0..<y.count).map { Float($0 % 5) + 1 }, shape: y.shape)
        (y * scale).sum().backward()
        var expectedGradient = [Float](repeating: 0, count: n)
        for plane in 0..<(shape[0] * shape[1]) {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    var at = -1
                    for dy in 0..<k {
                        for dx in 0..<k {
                            let p = plane * h * w + (oy * k + dy) * w + ox * k + dx
                            if at < 0 || (values[p].isNaN && !values[at].isNaN) || values[p] > values[at] { at = p }
                        }
                    }
                    let o = (plane * oh + oy) * ow + ox
                    #expect(y.scalars[o].bitPattern == values[at].bitPattern, "window \(o)")
                    expectedGradient[at] += scale.scalars[o]
                }
            }
        }
        #expect(x.grad!.scalars == expectedGradient)
    }

    @Test("nearest upsampling reads ⌊o / scale⌋ on every axis and sums each block in the gradient (1-D, 2-D, 3-D)",
          arguments: [([2, 3, 5], 3), ([2, 2, 3, 4], 2), ([1, 2, 2, 3, 2], 2), ([1, 1, 3, 2], 3)])
    func upsampling(_ shape: [Int], _ scale: Int) {
        let x = TestSupport.random(shape, seed: 50).requiringGradient()
        let y = x.upsampledNearest(scale: scale)
        let spatial = Array(shape.dropFirst(2)), up = spatial.map { $0 * scale }
        #expect(y.shape == Array(shape.prefix(2)) + up)
        let weights = Tensor((0..<y.count).map { Float($0 % 9) - 3.5 }, shape: y.shape)
        (y * weights).sum().backward()
        var expectedGradient = [Float](repeating: 0, count: x.count)
        let (n, m) = (spatial.reduce(1, *), up.reduce(1, *))
        for plane in 0..<(shape[0] * shape[1]) {
            for o in 0..<m {
                var rest = o, source = 0, step = 1
                for i in stride(from: up.count - 1, through: 0, by: -1) {
                    source += (rest % up[i]) / scale * step
                    step *= spatial[i]
                    rest /= up[i]
                }
                #expect(y.scalars[plane * m + o] == x.scalars[plane * n + source])
                expectedGradient[plane * n + source] += weights.scalars[plane * m + o]
            }
        }
        #expect(x.grad!.scalars == expectedGradient)
    }
}
