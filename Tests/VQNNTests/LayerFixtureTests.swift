import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport

/// Every layer against PyTorch on fixed weights and inputs (`Scripts/make_layer_fixtures.py`): the output,
/// the gradient of `Σ y ⊙ g` in the input and every parameter, and the buffers after the forward.
@Suite("Layers against PyTorch")
struct LayerFixtureTests {
    static let file: SafeTensorsFile = {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("layers.safetensors")
        return try! SafeTensorsFile.read(contentsOf: url)
    }()
    nonisolated(unsafe) static let meta: [String: [String: Any]] = {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("layers.json")
        let json = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return json["cases"] as! [String: [String: Any]]
    }()

    static func t(_ key: String) -> Tensor { file.tensors[key]!.asFloat }

    /// The layer of a case, built with the case's arguments and loaded with its state.
    static func build(_ name: String) throws -> Module {
        let m = meta[name]!, kw = m["kwargs"] as! [String: Any]
        func i(_ k: String, _ d: Int) -> Int { kw[k] as? Int ?? d }
        var rng = SeededGenerator(seed: 0)
        let layer: Module
        switch m["layer"] as! String {
        case "Conv2d": layer = Conv2d(i("in", 0), i("out", 0), kernelSize: i("kernel", 1), stride: i("stride", 1), padding: i("padding", 0),
                                      dilation: i("dilation", 1), groups: i("groups", 1), bias: kw["bias"] as? Bool ?? true, rng: &rng)
        case "Conv1d": layer = Conv1d(i("in", 0), i("out", 0), kernelSize: i("kernel", 1), stride: i("stride", 1), padding: i("padding", 0), rng: &rng)
        case "ConvTranspose2d": layer = ConvTranspose2d(i("in", 0), i("out", 0), kernelSize: i("kernel", 1), stride: i("stride", 1), padding: i("padding", 0),
                                                        outputPadding: i("output_padding", 0), groups: i("groups", 1), rng: &rng)
        case "ConvTranspose1d": layer = ConvTranspose1d(i("in", 0), i("out", 0), kernelSize: i("kernel", 1), stride: i("stride", 1), padding: i("padding", 0), rng: &rng)
        case "MaxPool2d": layer = MaxPool(kernelSize: [i("kernel", 1), i("kernel", 1)], stride: kw["stride"].map { [$0 as! Int] }, padding: [i("padding", 0)])
        case "AvgPool2d": layer = AvgPool(kernelSize: [i("kernel", 1), i("kernel", 1)], stride: kw["stride"].map { [$0 as! Int] }, padding: [i("padding", 0)])
        case "Upsample": layer = Upsample(scaleFactor: i("scale", 1))
        case "GroupNorm": layer = GroupNorm(groups: i("groups", 1), channels: i("channels", 1))
        case "BatchNorm2d", "BatchNorm1d": layer = BatchNorm(features: i("features", 1))
        case "Embedding": layer = Embedding(i("num", 1), i("dim", 1), rng: &rng)
        case "GELU": layer = Activation(.gelu)
        case "SiLU": layer = Activation(.silu)
        default: throw FixtureMissing(name: m["layer"] as! String)
        }
        let prefix = name + "."
        let state = Dictionary(uniqueKeysWithValues: layer.stateDict().keys.map { ($0, t(prefix + $0)) })
        try layer.load(stateDict: state)
        layer.train(m["train"] as? Bool ?? true)
        return layer
    }

    struct FixtureMissing: Error { let name: String }

    @Test("output, gradients and buffers match PyTorch", arguments: meta.keys.sorted())
    func layer(_ name: String) throws {
        let layer = try Self.build(name)
        let prefix = name + "."
        let g = Self.t(prefix + "g")
        let y: Tensor, x: Tensor?
        if let e = layer as? Embedding {
            x = nil
            y = e(Self.file.tensors[prefix + "x"]!.asIndices!)
        } else {
            let leaf = Self.t(prefix + "x").requiringGradient()
            x = leaf
            y = (layer as! Layer)(leaf)
        }
        let atol: Float = 2e-5
        #expect(y.shape == Self.t(prefix + "y").shape, "\(name): y \(y.shape)")
        #expect(TestSupport.isClose(y.detached(), Self.t(prefix + "y"), atol: atol, rtol: 1e-4), "\(name): y differs by \(TestSupport.maxAbsDiff(y.detached(), Self.t(prefix + "y")))")
        (y * g).sum().backward()
        if let x {
            #expect(TestSupport.isClose(x.grad ?? Tensor.zeros(x.shape), Self.t(prefix + "grad.x"), atol: atol, rtol: 1e-4), "\(name): grad x")
        }
        for (key, p) in layer.namedParameters() where p.kind == .trainable {
            let expected = Self.t(prefix + "grad." + key)
            #expect(TestSupport.isClose(p.grad ?? Tensor.zeros(p.shape), expected, atol: 1e-4, rtol: 1e-4),
                    "\(name): grad \(key) differs by \(TestSupport.maxAbsDiff(p.grad ?? Tensor.zeros(p.shape), expected))")
        }
        for (key, p) in layer.namedParameters() where p.kind == .buffer {
            #expect(TestSupport.isClose(p.value, Self.t(prefix + "after." + key), atol: 1e-5, rtol: 1e-5), "\(name): buffer \(key) after the forward")
        }
    }

    @Test("every case of the file is checked, and every layer kind has one")
    func coverage() {
        #expect(Self.meta.count >= 18)
        let kinds = Set(Self.meta.values.map { $0["layer"] as! String })
        #expect(kinds.isSuperset(of: ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "Upsample", "GroupNorm",
                                      "BatchNorm2d", "BatchNorm1d", "Embedding", "GELU", "SiLU"]))
    }
}

@Suite("Layers: gradients and modes")
struct LayerGradientTests {
    @Test("finite-difference gradients of the new layers")
    func gradients() {
        var rng = SeededGenerator(seed: 4)
        let x4 = TestSupport.random([2, 4, 5, 4], seed: 1)
        let cases: [(String, (Tensor) -> Tensor)] = [
            ("maxpool", { MaxPool(kernelSize: [2, 2])($0) }),
            ("avgpool", { AvgPool(kernelSize: [3, 3], stride: [2], padding: [1])($0) }),
            ("upsample", { Upsample(scaleFactor: 2)($0) }),
            ("groupnorm", { GroupNorm(groups: 2, channels: 4)($0) }),
            ("batchnorm", { BatchNorm(features: 4)($0) }),
        ]
        for (name, f) in cases {
            let ratio = TestSupport.gradientCheck([x4], eps: 1e-3) { xs in
                let y = f(xs[0])
                return (y * Tensor((0..<y.count).map { Float($0 % 7) - 2.9 }, shape: y.shape)).sum()
            }
            #expect(ratio <= 1, "\(name): worst ratio \(ratio)")
        }
        let w = TestSupport.random([4, 3, 3, 3], seed: 2), b = TestSupport.random([3], seed: 3)
        let ratio = TestSupport.gradientCheck([x4, w, b]) { xs in
            let y = xs[0].convolutionTransposed(weight: xs[1], bias: xs[2], stride: [2], padding: [1], outputPadding: [1])
            return (y * Tensor((0..<y.count).map { Float($0 % 5) - 1.7 }, shape: y.shape)).sum()
        }
        #expect(ratio <= 1, "conv transpose: worst ratio \(ratio)")
        _ = rng.next()
    }

    @Test("Dropout: zero or scaled in training, deterministic for a seed, identity in evaluation")
    func dropout() {
        let x = Tensor.ones([1000])
        let d = Dropout(p: 0.25, seed: 1)
        let y = d(x)
        #expect(y.scalars.allSatisfy { $0 == 0 || abs($0 - 1 / 0.75) < 1e-6 })
        let kept = y.scalars.filter { $0 != 0 }.count
        #expect(kept > 700 && kept < 800)
        #expect(Dropout(p: 0.25, seed: 1)(x) == y)
        d.eval()
        #expect(d(x) == x)
    }

    @Test("BatchNorm in evaluation and frozen keeps its running statistics")
    func batchNormBuffers() {
        let bn = BatchNorm(features: 3)
        let x = TestSupport.random([8, 3, 4], seed: 5)
        _ = bn(x)
        let after = bn.runningMean.value
        #expect(after != Tensor.zeros([3]))
        bn.eval()
        _ = bn(x * 3)
        #expect(bn.runningMean.value == after)
        #expect(bn.trainableParameters().count == 2)
    }
}

@Test("ResidualBlock: x + body(x), the body's keys under body, gradients through both paths")
func residualBlock() {
    var rng = SeededGenerator(seed: 2)
    let block = ResidualBlock(Sequential(Conv2d(3, 3, kernelSize: 3, padding: 1, rng: &rng), Activation(.gelu),
                                         Conv2d(3, 3, kernelSize: 1, rng: &rng)))
    #expect(Set(block.stateDict().keys) == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"])
    let x = TestSupport.random([2, 3, 5, 5], seed: 1)
    #expect(TestSupport.isClose(block(x), x + block.body(x), atol: 0, rtol: 0))
    let ratio = TestSupport.gradientCheck([x], eps: 1e-3) { xs in (block(xs[0]) * Tensor((0..<150).map { Float($0 % 7) - 3 }, shape: [2, 3, 5, 5])).sum() }
    #expect(ratio <= 1, "worst ratio \(ratio)")
}
