import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// One contract for every freeze call: strict (a code, head, dimension or basis out of range or not finite
/// throws and changes nothing), the subspace guarantee for every basis accepted, policies only where they are
/// consulted, their records cleared with the codes, and growth that keeps what was frozen on every code.
@Suite("The freeze contract")
struct FreezeContractTests {
    /// The first `k` rows of the `d × d` identity.
    static func unitRows(_ k: Int, _ d: Int) -> Tensor {
        Tensor((0..<(k * d)).map { $0 / d == $0 % d ? 1 : 0 }, shape: [k, d])
    }

    /// Every freezing buffer of a codebook, to check that a refused call changed nothing.
    static func freezeState(_ cb: Codebook) -> [Tensor] {
        [cb.frozenCodes.value, cb.frozenComponents.value, cb.frozenSubspaceProjector.value, cb.frozenSubspaceValues.value,
         cb.policyFrozenAt.value, cb.embed.value]
    }

    func twoHeads() throws -> VectorQuantizer {
        try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: ["dim": 8, "codebook_size": 16, "heads": 2,
                                                                          "separate_codebook_per_head": true, "codebook_dim": 4]))
    }

    @Test("a code, head or dimension out of range throws and changes nothing, for every freeze and unfreeze")
    func outOfRange() throws {
        let vq = try twoHeads()
        let cb = vq.codebook
        try cb.freeze(codes: [1], head: 0)
        try cb.freeze(dimensions: [0, 1], head: 1)
        let before = Self.freezeState(cb)
        let calls: [(String, () throws -> Void)] = [
            ("unfreeze dims head 7", { try cb.unfreeze(dimensions: [0, 1, 2], head: 7) }),
            ("freeze dims head 7", { try cb.freeze(dimensions: [0], head: 7) }),
            ("freeze dims -1", { try cb.freeze(dimensions: [-1]) }),
            ("freeze dims 4", { try cb.freeze(dimensions: [4]) }),
            ("freeze dims codes 16", { try cb.freeze(dimensions: [0], codes: [16]) }),
            ("freeze codes 0..<100", { try cb.freeze(codes: 0..<100) }),
            ("freeze codes -1", { try cb.freeze(codes: [-1]) }),
            ("freeze codes head 2", { try cb.freeze(codes: [0], head: 2) }),
            ("unfreeze codes head -1", { try cb.unfreeze(codes: [1], head: -1) }),
            ("unfreeze codes 16", { try cb.unfreeze(codes: [1, 16]) }),
            ("subspace head 2", { try cb.freeze(subspace: Self.unitRows(1, 4), head: 2) }),
        ]
        for (name, call) in calls {
            #expect(throws: CodebookError.self, "\(name)") { try call() }
            #expect(Self.freezeState(cb) == before, "\(name) changed the codebook")
        }
        // In range, the same calls act on the named head only.
        try cb.unfreeze(dimensions: [0, 1], head: 1)
        #expect(cb.frozenComponentCount == 0)
        try cb.freeze(dimensions: [0], head: 1)
        #expect(cb.frozenDimensions(head: 0).isEmpty && cb.frozenDimensions(head: 1) == [0])
    }

    @Test("a basis with NaN or ±∞ is refused and changes nothing (the deviation test no longer drops NaN)",
          arguments: [Float.nan, .infinity, -.infinity])
    func nonFiniteBasis(_ bad: Float) throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))
        var b = Self.unitRows(2, 8).scalars
        b[3] = bad
        let before = Self.freezeState(vq.codebook)
        #expect(throws: CodebookError.notFinite(what: "the subspace basis")) { try vq.codebook.freeze(subspace: Tensor(b, shape: [2, 8])) }
        #expect(Self.freezeState(vq.codebook) == before)
        #expect(vq.codebook.frozenSubspaceRank() == 0)
    }

    /// `B·e` in double for each code, with `B` orthonormalised exactly (double Gram–Schmidt).
    static func exactCoordinates(_ cb: Codebook, _ basis: Tensor) -> [Double] {
        let (k, d, c) = (basis.shape[0], cb.dim, cb.codebookSize)
        var b = basis.scalars.map(Double.init)
        for i in 0..<k {
            for j in 0..<i {
                let dot = (0..<d).reduce(0.0) { $0 + b[i * d + $1] * b[j * d + $1] }
                for t in 0..<d { b[i * d + t] -= dot * b[j * d + t] }
            }
            let norm = (0..<d).reduce(0.0) { $0 + b[i * d + $1] * b[i * d + $1] }.squareRoot()
            for t in 0..<d { b[i * d + t] /= norm }
        }
        let e = cb.embed.value.scalars
        return (0..<(c * k)).map { idx in (0..<d).reduce(0.0) { $0 + b[(idx % k) * d + $1] * Double(e[(idx / k) * d + $1]) } }
    }

    @Test("a basis within the tolerance (rows scaled by 1 + 4e-5) still holds the coordinates to 1e-6, under EMA and Adam",
          arguments: ["ema", "adam"])
    func nearlyOrthonormal(_ path: String) throws {
        var g = SeededGenerator(seed: 5)
        let exact = Tensor.randomOrthogonal(8, using: &g).slice(axis: 0, 0..<3)
        let scaled = Tensor(exact.scalars.map { $0 * (1 + 4e-5) }, shape: exact.shape)
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        if path == "adam" { (c.learnableCodebook, c.emaUpdate) = (true, false) }
        let vq = try VectorQuantizer(c)
        try vq.codebook.freeze(subspace: scaled)
        let held = Self.exactCoordinates(vq.codebook, exact)
        let start = vq.codebook.embed.value.scalars
        let optimizer = path == "adam" ? Adam(parameters: vq.trainableParameters(), learningRate: 0.05) : nil
        vq.train()
        for step in 0..<30 {
            let x = TestSupport.random([2, 32, 8], seed: UInt64(100 + step), std: 2)
            let out = vq(x)
            if let optimizer {
                vq.zeroGradients()
                (out.loss + (out.quantized - x).squared().mean()).backward()
                optimizer.step()
            }
        }
        let now = Self.exactCoordinates(vq.codebook, exact)
        let scale = held.map(abs).max()!
        let drift = zip(held, now).map { abs($0 - $1) }.max()!
        #expect(drift <= 1e-6 * scale, "\(path): coordinates drifted by \(drift / scale) relative")
        #expect(zip(start, vq.codebook.embed.value.scalars).contains { $0 != $1 }, "\(path): the complement learned")
    }

    @Test("unfreeze(codes:) clears the policy's record of those codes")
    func unfreezeClearsPolicyRecord() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        try vq.codebook.setFreezePolicy(.afterStep(0, codes: [1, 2, 5]))
        vq.train()
        _ = vq(TestSupport.random([1, 64, 4], seed: 3))
        #expect(vq.codebook.policyFrozenCodes().map(\.code) == [1, 2, 5])
        try vq.codebook.unfreeze(codes: [2, 5])
        #expect(vq.codebook.policyFrozenCodes().map(\.code) == [1])
        #expect(vq.codebook.frozenCodeIndices() == [1])
    }

    @Test("a policy whose arguments do not fit the codebook is refused and nothing is set; a fitting one freezes")
    func policyArguments() throws {
        let vq = try twoHeads()   // 2 heads × 16 codes: flat codes 0..<32
        let cb = vq.codebook
        #expect(throws: CodebookError.codeOutOfRange(code: 32, codebookSize: 32)) { try cb.setFreezePolicy(.afterStep(0, codes: [1, 32])) }
        #expect(throws: CodebookError.codeOutOfRange(code: -1, codebookSize: 32)) { try cb.setFreezePolicy(.afterStep(0, codes: [-1])) }
        #expect(throws: CodebookError.notFinite(what: "the usage threshold")) { try cb.setFreezePolicy(.usage(atLeast: .nan)) }
        #expect(throws: CodebookError.self) { try cb.setFreezePolicy(FreezeContractTests.Custom().or(.afterStep(0, codes: [99]))) }
        #expect(cb.freezePolicy == nil)
        try cb.setFreezePolicy(FreezeContractTests.Custom().or(.afterStep(0, codes: [31])))
        vq.train()
        _ = vq(TestSupport.random([2, 6, 8], seed: 3))
        #expect(cb.frozenCodeIndices(head: 1) == [15])
    }

    /// A policy of a program's own that decides nothing.
    struct Custom: FreezePolicy {
        mutating func decide(_ c: FreezeContext) -> FreezeDecision { FreezeDecision() }
    }

    @Test("a custom policy deciding a code out of range, or a weight outside the lerp's range, traps naming it")
    func policyDecisionTraps() async {
        struct Freezes999: FreezePolicy {
            mutating func decide(_ c: FreezeContext) -> FreezeDecision { FreezeDecision(freeze: [999]) }
        }
        struct WeighsNaN: FreezePolicy {
            mutating func decide(_ c: FreezeContext) -> FreezeDecision { FreezeDecision(weights: Array(repeating: .nan, count: c.frozen.count)) }
        }
        await #expect(processExitsWith: .failure) {
            let vq = try! VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
            try! vq.codebook.setFreezePolicy(Freezes999())
            _ = vq(Tensor.ones([1, 4, 4]))
        }
        await #expect(processExitsWith: .failure) {
            let vq = try! VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
            try! vq.codebook.setFreezePolicy(WeighsNaN())
            _ = vq(Tensor.ones([1, 4, 4]))
        }
    }

    @Test("a policy on a codebook learned by gradient is refused (it would never be consulted)")
    func policyOnLearnable() throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        (c.learnableCodebook, c.emaUpdate) = (true, false)
        let vq = try VectorQuantizer(c)
        #expect(throws: CodebookError.policyNeedsEMA) { try vq.codebook.setFreezePolicy(.converged(tolerance: 0.01, patience: 3)) }
        #expect(vq.codebook.freezePolicy == nil)
        let ema = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        try ema.codebook.setFreezePolicy(.converged(tolerance: 0.01, patience: 3))   // the README's spelling compiles
        #expect(ema.codebook.freezePolicy is ConvergedPolicy)
        ema.codebook.removeFreezePolicy()
        #expect(ema.codebook.freezePolicy == nil)
    }

    @Test("growth keeps the policy and extends a dimension frozen in every code to the new codes")
    func growthKeepsFreezes() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        try vq.codebook.freeze(dimensions: [1, 3])
        try vq.codebook.freeze(dimensions: [0], codes: [2])       // one code only: not extended
        try vq.codebook.setFreezePolicy(.usage(atLeast: 1e9))
        let grown = try vq.expanded(toCodebookSize: 12, freezeExisting: true, seed: 1)
        #expect(grown.codebook.frozenDimensions() == [1, 3])
        #expect(grown.codebook.freezePolicy is UsagePolicy)
        #expect(grown.codebook.frozenCodeIndices() == Array(0..<8))
        // The new codes learn in dimensions 0 and 2 only.
        let before = grown.codebook.embed.value.scalars
        grown.train()
        for s in 0..<10 { _ = grown(TestSupport.random([1, 64, 4], seed: UInt64(s), std: 3)) }
        let after = grown.codebook.embed.value.scalars
        for code in 8..<12 { for j in [1, 3] { #expect(after[code * 4 + j] == before[code * 4 + j], "code \(code) dim \(j)") } }
        #expect((8..<12).contains { code in [0, 2].contains { after[code * 4 + $0] != before[code * 4 + $0] } }, "the new codes learned")
    }

    @Test("expireCodes takes the input's space on a quantizer with a projection")
    func expireWithProjection() throws {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        (c.codebookDim, c.thresholdEMADeadCode) = (4, 1e9)
        let vq = try VectorQuantizer(c)
        try vq.codebook.freeze(codes: [0, 1])
        let before = vq.codebook.embed.value.scalars
        try vq.expireCodes(TestSupport.random([2, 40, 8], seed: 9))
        #expect(throws: ConfigurationError.self) { try vq.expireCodes(TestSupport.random([2, 40, 7], seed: 9)) }
        let after = vq.codebook.embed.value.scalars
        #expect(Array(after[0..<8]) == Array(before[0..<8]), "frozen codes are not replaced")
        #expect(after != before, "expired codes were replaced")
    }

    @Test("tokens of 3e38 (their sums overflow) are left out: codes stay finite and frozen subspace coordinates hold")
    func overflowingTokens() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        let basis = Self.unitRows(2, 4)
        try vq.codebook.freeze(subspace: basis)
        let held = Self.exactCoordinates(vq.codebook, basis)
        let start = vq.codebook.embed.value.scalars
        vq.train()
        for s in 0..<5 {
            var x = TestSupport.random([1, 64, 4], seed: UInt64(s)).scalars
            for j in 0..<8 { x[j] = 3e38 }   // two tokens of 3e38
            _ = vq(Tensor(x, shape: [1, 64, 4]))
        }
        let e = vq.codebook.embed.value.scalars
        #expect(e.allSatisfy(\.isFinite) && vq.codebook.embedAverage.value.allFinite, "a code became non-finite")
        #expect(Self.exactCoordinates(vq.codebook, basis) == held, "frozen subspace coordinates moved")
        #expect(e != start, "the free part learned from the ordinary tokens")
    }

    @Test("parameters frozen by key stay frozen through a checkpoint")
    func keyFreezesSaved() throws {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.codebookDim = 4
        let vq = try VectorQuantizer(c)
        try vq.freeze(keys: ["project_in.weight"], strict: true)
        let dir = try TestSupport.scratchDirectory("vq-keys")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("m.safetensors")
        try QuantizerCheckpoint.save(vq, config: ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16, "codebook_dim": 4]), to: url)
        let (loaded, _) = try QuantizerCheckpoint.load(url)
        let frozen = loaded.namedParameters().filter { $0.1.kind == .trainable && $0.1.isFrozen }.map(\.0)
        #expect(frozen == ["project_in.weight"])
    }
}
