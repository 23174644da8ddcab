import Testing
import VQNN
import VQTensor
import VQTestSupport

@Suite("Conv1d")
struct ConvolutionTests {
    /// `y[b, o, t] = bias[o] + Σ_{c in o's group, j} w[o, c, j] · x[b, c, t·stride + j·dilation − padding]`,
    /// summed in Double with zero outside the input.
    static func direct(_ x: Tensor, _ conv: Conv1d) -> Tensor {
        let (b, cin, n) = (x.shape[0], x.shape[1], x.shape[2])
        let (cout, k, g) = (conv.outChannels, conv.kernelSize, conv.groups)
        let nOut = conv.outputLength(n), cg = cin / g, og = cout / g
        let w = conv.weight.value.scalars, bias = conv.bias?.value.scalars, xs = x.scalars
        var out = [Float](repeating: 0, count: b * cout * nOut)
        for bi in 0..<b {
            for o in 0..<cout {
                for t in 0..<nOut {
                    var acc = Double(bias?[o] ?? 0)
                    for c in 0..<cg {
                        for j in 0..<k {
                            let p = t * conv.stride + j * conv.dilation - conv.padding
                            guard p >= 0 && p < n else { continue }
                            acc += Double(w[(o * cg + c) * k + j]) * Double(xs[(bi * cin + (o / og) * cg + c) * n + p])
                        }
                    }
                    out[(bi * cout + o) * nOut + t] = Float(acc)
                }
            }
        }
        return Tensor(out, shape: [b, cout, nOut])
    }

    static let shapes: [(cin: Int, cout: Int, k: Int, stride: Int, padding: Int, dilation: Int, groups: Int, n: Int)] = [
        (4, 6, 3, 1, 1, 1, 1, 9), (4, 6, 3, 2, 1, 2, 2, 11), (3, 3, 1, 1, 0, 1, 3, 5), (2, 5, 4, 3, 2, 1, 1, 7),
    ]

    @Test("matches the direct sum (stride, padding, dilation, groups) and keeps PyTorch's keys", arguments: shapes.indices)
    func values(_ i: Int) {
        let s = Self.shapes[i]
        var rng = SeededGenerator(seed: UInt64(i))
        let conv = Conv1d(s.cin, s.cout, kernelSize: s.k, stride: s.stride, padding: s.padding, dilation: s.dilation, groups: s.groups, rng: &rng)
        #expect(Set(conv.stateDict().keys) == ["weight", "bias"])
        #expect(conv.weight.shape == [s.cout, s.cin / s.groups, s.k])
        let x = TestSupport.random([2, s.cin, s.n], seed: 9)
        let y = conv(x)
        #expect(y.shape == [2, s.cout, conv.outputLength(s.n)])
        #expect(TestSupport.isClose(y, Self.direct(x, conv), atol: 1e-5, rtol: 1e-5))
    }

    @Test("finite-difference gradients in the input, weight and bias", arguments: shapes.indices)
    func gradients(_ i: Int) {
        let s = Self.shapes[i]
        var rng = SeededGenerator(seed: UInt64(i))
        let conv = Conv1d(s.cin, s.cout, kernelSize: s.k, stride: s.stride, padding: s.padding, dilation: s.dilation, groups: s.groups, rng: &rng)
        let x = TestSupport.random([2, s.cin, s.n], seed: 9)
        let (w0, b0) = (conv.weight.value, conv.bias!.value)
        let ratio = TestSupport.gradientCheck([x, w0, b0]) { xs in
            let y = xs[0].conv1d(weight: xs[1], bias: xs[2], stride: s.stride, padding: s.padding, dilation: s.dilation, groups: s.groups)
            return (y * Tensor((0..<y.count).map { Float($0 % 5) - 1.7 }, shape: y.shape)).sum()
        }
        #expect(ratio <= 1, "worst ratio \(ratio)")
    }

    @Test("a frozen weight row (output channel) keeps its values through an optimizer step")
    func frozenRows() {
        var rng = SeededGenerator(seed: 3)
        let conv = Conv1d(4, 6, kernelSize: 3, padding: 1, rng: &rng)
        conv.freezeOutputChannels([1, 4])
        let before = conv.weight.value
        let opt = Adam(parameters: conv.trainableParameters(), learningRate: 0.1)
        for _ in 0..<3 {
            conv.zeroGradients()
            conv(TestSupport.random([2, 4, 8], seed: 4)).squared().sum().backward()
            opt.step()
        }
        let after = conv.weight.value.reshaped([6, 12]), old = before.reshaped([6, 12])
        for r in 0..<6 {
            let same = after.slice(axis: 0, r..<(r + 1)).scalars.map(\.bitPattern) == old.slice(axis: 0, r..<(r + 1)).scalars.map(\.bitPattern)
            #expect(same == [1, 4].contains(r), "row \(r)")
        }
    }
}
