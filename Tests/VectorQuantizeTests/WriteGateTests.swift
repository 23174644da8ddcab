import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Every path that writes a codebook goes through its one write gate (`Codebook+WriteGate.swift`): each writer of
/// `Codebook.Writer` is driven here on a codebook with frozen codes, frozen components and a frozen subspace, and must
/// (1) be counted by the gate, (2) leave every frozen part as it was, (3) move something free. A new writer is a new
/// case of the enumeration, which this suite iterates: without a scenario for it the suite fails.
@Suite("The write gate: every writer of a codebook")
struct WriteGateTests {
    static let (dim, size) = (8, 16)
    /// The frozen subspace: one direction in dimensions 4–7.
    static let basis = Tensor([0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5], shape: [1, 8])

    /// A quantizer with codes 0 and 1 frozen, components 0 and 1 of every code frozen and a subspace frozen.
    static func frozenQuantizer(_ edit: (inout VectorQuantizerConfiguration) -> Void = { _ in }) throws -> VectorQuantizer {
        var c = VectorQuantizerConfiguration(dim: dim, codebookSize: size)
        c.decay = 0.5
        edit(&c)
        let vq = try VectorQuantizer(c)
        try vq.codebook.freeze(codes: [0, 1])
        try vq.codebook.freeze(dimensions: [0, 1])
        try vq.codebook.freeze(subspace: basis)
        return vq
    }

    static func batch(_ seed: UInt64) -> Tensor { TestSupport.random([2, 32, dim], seed: seed, std: 2) }

    /// Drives `writer` once on `vq` (built by ``frozenQuantizer(_:)`` with ``configuration(for:)``).
    static func drive(_ writer: Codebook.Writer, _ vq: VectorQuantizer) throws {
        switch writer {
        case .emaStep, .recompute:
            _ = vq(batch(1))
        case .expiry:
            _ = vq(batch(2))  // threshold 2 > every count after one step of decay 0.5 from 1: every free code expires
        case .kmeans:
            // Growth's path (`expanded(…fittingNewCodesTo:)`) on this codebook: every code asked, the frozen ones refused.
            try vq.codebook.fitCodes(0..<size, to: batch(3).reshaped([1, 64, dim]), countsPerBatch: 64)
        case .setCodes:
            try vq.setCodes(TestSupport.random([size, dim], seed: 4))
        case .optimizer:
            let opt = Adam(parameters: vq.trainableParameters(), learningRate: 0.05)
            for s in 0..<3 {
                opt.zeroGradients()
                vq(batch(10 + UInt64(s)).requiringGradient()).loss.backward()
                opt.step()
            }
        case .load:
            var c = vq.configuration
            c.seed = 99
            let other = try VectorQuantizer(c)
            var state = vq.stateDict()
            state["_codebook.embed"] = other.codebook.embed.value
            try vq.load(stateDict: state)
        }
    }

    static func configuration(for writer: Codebook.Writer) -> (inout VectorQuantizerConfiguration) -> Void {
        switch writer {
        case .expiry: return { $0.thresholdEMADeadCode = 2 }
        case .optimizer: return { c in (c.learnableCodebook, c.emaUpdate) = (true, false) }
        default: return { _ in }
        }
    }

    @Test("each writer passes the gate, holds every frozen part and moves a free one", arguments: Codebook.Writer.allCases)
    func writer(_ writer: Codebook.Writer) throws {
        let vq = try Self.frozenQuantizer(Self.configuration(for: writer))
        let cb = vq.codebook
        let before = cb.embed.value.scalars, beforeAverage = cb.embedAverage.value.scalars
        let coordinates = SubspaceFreezingTests.coordinates(cb, Self.basis, head: 0)
        try Self.drive(writer, vq)
        #expect(cb.gateWrites[writer, default: 0] > 0, "\(writer) did not pass the gate")
        let after = cb.embed.value.scalars, afterAverage = cb.embedAverage.value.scalars
        let d = Self.dim
        if writer == .load {
            // A load is a restore: it replaces frozen codes too (documented); the masks it did not carry are kept.
            #expect(Array(after[0..<(2 * d)]) != Array(before[0..<(2 * d)]))
            #expect(cb.frozenCodeIndices() == [0, 1] && cb.frozenDimensions() == [0, 1])
            return
        }
        // Frozen codes: every value of embed and embed_avg, bit for bit.
        #expect(after[0..<(2 * d)].map(\.bitPattern) == before[0..<(2 * d)].map(\.bitPattern), "\(writer) moved a frozen code")
        #expect(afterAverage[0..<(2 * d)].map(\.bitPattern) == beforeAverage[0..<(2 * d)].map(\.bitPattern))
        // Frozen components of every code.
        for code in 0..<Self.size {
            for j in 0..<2 {
                #expect(after[code * d + j].bitPattern == before[code * d + j].bitPattern, "\(writer): code \(code) component \(j)")
                #expect(afterAverage[code * d + j].bitPattern == beforeAverage[code * d + j].bitPattern || writer == .optimizer)
            }
        }
        // The subspace coordinates of every code, to one rounding.
        let now = SubspaceFreezingTests.coordinates(cb, Self.basis, head: 0)
        for (a, b) in zip(now, coordinates) { #expect(abs(a - b) <= 1e-6 * Swift.max(1, abs(b)), "\(writer): B·e \(b) → \(a)") }
        // And something free moved (so that "held" cannot pass vacuously).
        let freeMoved = (2..<Self.size).contains { code in (2..<d).contains { after[code * d + $0] != before[code * d + $0] } }
        #expect(freeMoved, "\(writer) wrote nothing free")
    }

    @Test("the gate's writers are the enumeration: in-place optimizers and stacks are counted as theirs")
    func inPlaceAndStacks() throws {
        let vq = try Self.frozenQuantizer { c in
            (c.learnableCodebook, c.emaUpdate, c.inPlaceCodebookOptimizer) = (true, false, .sgd(learningRate: 0.1))
        }
        _ = vq(Self.batch(20).requiringGradient())
        #expect(vq.codebook.gateWrites[.optimizer, default: 0] > 0)
        let kmeans = try Self.frozenQuantizer { $0.kmeansInit = true }
        _ = kmeans(Self.batch(22))
        #expect(kmeans.codebook.gateWrites[.kmeans, default: 0] > 0 && kmeans.codebook.isInitialized)
        var r = ResidualVQConfiguration(dim: Self.dim, numQuantizers: 2, codebookSize: Self.size)
        r.sharedCodebook = true
        r.layer.thresholdEMADeadCode = 2
        let rvq = try ResidualVQ(r)
        try rvq.layers[0].codebook.freeze(codes: [0])
        let frozen = rvq.layers[0].codebook.embed.value.scalars[0..<Self.dim]
        _ = rvq(Self.batch(21))
        let counts = rvq.layers[0].codebook.gateWrites
        #expect(counts[.emaStep, default: 0] > 0 && counts[.recompute, default: 0] > 0 && counts[.expiry, default: 0] > 0)
        #expect(rvq.layers[0].codebook.embed.value.scalars[0..<Self.dim] == frozen)
    }

    @Test("no library source writes a codebook outside the gate: the raw escape hatch is used nowhere in Sources")
    func noRawWrites() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sources = root.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!.compactMap { $0 as? URL }
            .filter { $0.pathExtension == "swift" }
        #expect(files.count > 20)
        for file in files where file.lastPathComponent != "Parameter.swift" {
            // Code, not documentation.
            let text = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
                .filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("//") }.joined(separator: "\n")
            #expect(!text.contains("overwriteBypassingGate("), "\(file.lastPathComponent) uses the escape hatch")
            #expect(!text.contains("codebookWriteKey") || file.lastPathComponent == "Codebook+WriteGate.swift",
                    "\(file.lastPathComponent) names the codebook's write key")
        }
    }

    @Test("assigning a gated tensor, or writing it in place, is a programmer error")
    func rawWriteTraps() async {
        await #expect(processExitsWith: .failure) {
            Codebook(Codebook.Configuration(dim: 4, codebookSize: 8)).embed.value = Tensor.zeros([1, 8, 4])
        }
        await #expect(processExitsWith: .failure) {
            Codebook(Codebook.Configuration(dim: 4, codebookSize: 8)).embedAverage.value = Tensor.zeros([1, 8, 4])
        }
        await #expect(processExitsWith: .failure) {
            Codebook(Codebook.Configuration(dim: 4, codebookSize: 8)).clusterSize.value = Tensor.zeros([1, 8])
        }
        await #expect(processExitsWith: .failure) {
            Codebook(Codebook.Configuration(dim: 4, codebookSize: 8)).embed.withUnsafeMutableScalars { $0[0] = 1 }
        }
    }

    @Test("the escape hatch writes what it is given, frozen codes included; setCodes refuses bad codes, changing nothing")
    func escapeHatch() throws {
        let vq = try Self.frozenQuantizer()
        let target = TestSupport.random([1, Self.size, Self.dim], seed: 30)
        vq.codebook.embed.overwriteBypassingGate(target)
        #expect(vq.codebook.embed.value == target)
        let before = vq.codebook.embed.value
        var bad = TestSupport.random([Self.size, Self.dim], seed: 31)
        bad.withUnsafeMutableScalars { $0[40] = Float.nan }
        #expect(throws: CodebookError.notFinite(what: "the codes")) { try vq.setCodes(bad) }
        #expect(vq.codebook.embed.value == before)
    }

    @Test("updateIndices refuses bad indices, masks, weights and inputs before writing")
    func updateIndicesRefuses() throws {
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8))
        let x = TestSupport.random([2, 3, 4], seed: 5)
        let before = vq.stateDict()
        let cases: [(Tensor, IndexTensor, TokenMask?, EMAUpdateWeight?)] = [
            (x, IndexTensor([0, 1, 2, 3, 4, 8], shape: [2, 3]), nil, nil),
            (x, IndexTensor([0, 1, 2, 3, 4, -2], shape: [2, 3]), nil, nil),
            (x, IndexTensor([0, 1, 2, 3], shape: [2, 2]), nil, nil),
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), [true], nil),
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), TokenMask(Tensor.ones([3, 2])), nil),   // six flags, the wrong shape
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, .perCode(Tensor.ones([7]))),
            // Weights must keep the lerp fraction (1 − decay) · w within [0, 1] (decay 0.8: w in 0…5): NaN, ±∞,
            // negative or larger weights would turn counts negative or non-finite, and the codes with them.
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, .scalar(.nan)),
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, .scalar(-0.5)),
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, .scalar(5.01)),
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, .scalar(.infinity)),
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, .perCode(Tensor([1, 1, 1, .nan, 1, 1, 1, 1]))),
            (x, IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, .perCode(Tensor([1, 1, 1, 1, 1, 1, 1, 1e30]))),
            (TestSupport.random([2, 3, 5], seed: 6), IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, nil),
            (TestSupport.random([2, 3, 4, 4], seed: 6), IndexTensor([0, 1, 2, 3, 4, 5], shape: [2, 3]), nil, nil),
        ]
        vq.train()
        for (input, indices, mask, weight) in cases {
            #expect(throws: ConfigurationError.self) { try vq.updateIndices(input, indices, mask: mask, emaUpdateWeight: weight) }
        }
        #expect(vq.stateDict() == before)
        // The largest weight (fraction 1: the statistics become the batch's) is accepted and moves the codes.
        try vq.updateIndices(x, IndexTensor([0, 1, 2, 3, -1, 5], shape: [2, 3]), emaUpdateWeight: .scalar(5))
        #expect(vq.stateDict() != before)
        #expect(vq.nonFiniteValues().isEmpty && vq.codebook.clusterSize.value.scalars.allSatisfy { $0 >= 0 })
    }

    @Test("fitCodes on a k-means codebook before its first batch: of some codes refused (the batch would re-fit them), of every code the initialisation")
    func fitCodesBeforeKMeans() throws {
        func untrained() throws -> VectorQuantizer {
            var c = VectorQuantizerConfiguration(dim: Self.dim, codebookSize: Self.size)
            c.kmeansInit = true
            return try VectorQuantizer(c)
        }
        // fitCodes of some codes would fit them around placeholders: refused, changing nothing; of every code, it is the
        // initialisation.
        let fit = try untrained()
        let state = fit.stateDict()
        let data = Self.batch(14).reshaped([1, 64, Self.dim])
        #expect(throws: CodebookError.notInitialised) { try fit.codebook.fitCodes(0..<4, to: data) }
        #expect(fit.stateDict() == state && !fit.isInitialised)
        try fit.codebook.fitCodes(0..<Self.size, to: data)
        #expect(fit.isInitialised && fit.codes != state["_codebook.embed"]!.reshaped([Self.size, Self.dim]))
        // Codes set and frozen first, then every other code fitted around them: the explicit k-means initialisation.
        let around = try untrained()
        let given = TestSupport.random([Self.size, Self.dim], seed: 12)
        try around.setCodes(given)
        try around.codebook.freeze(codes: [0, 1])
        try around.codebook.fitCodes(2..<Self.size, to: data)
        #expect(around.isInitialised && around.codes.slice(axis: 0, 0..<2) == given.slice(axis: 0, 0..<2))
        #expect(around.codes.slice(axis: 0, 2..<Self.size) != given.slice(axis: 0, 2..<Self.size))
    }

    @Test("fitCodes refuses data of the wrong shape, codes out of range and non-positive counts, changing nothing")
    func fitCodesRefuses() throws {
        let vq = try Self.frozenQuantizer()
        let before = vq.stateDict()
        let data = Self.batch(40).reshaped([1, 64, Self.dim])
        #expect(throws: CodebookError.self) { try vq.codebook.fitCodes(0..<4, to: Self.batch(40)) }
        #expect(throws: CodebookError.codeOutOfRange(code: 16, codebookSize: 16)) { try vq.codebook.fitCodes([2, 16], to: data) }
        #expect(throws: CodebookError.notPositive(value: 0)) { try vq.codebook.fitCodes(2..<4, to: data, iterations: 0) }
        #expect(throws: CodebookError.notPositive(value: -1)) { try vq.codebook.fitCodes(2..<4, to: data, countsPerBatch: -1) }
        #expect(vq.stateDict() == before)
    }

    @Test("the gate's threaded writes are the same bits on 1 and 2 threads, with frozen codes, components and a subspace")
    func threads() throws {
        // 2,048 codes of 64: the EMA step and the recompute split their rows over threads (≥ 512 rows per chunk).
        func run(_ threads: Int) throws -> [UInt32] {
            try Threads.with(threads) {
                var c = VectorQuantizerConfiguration(dim: 64, codebookSize: 2048)
                (c.decay, c.thresholdEMADeadCode) = (0.5, 0.5)
                let vq = try VectorQuantizer(c)
                try vq.codebook.freeze(codes: Array(stride(from: 0, to: 2048, by: 3)))
                try vq.codebook.freeze(dimensions: [1, 5], codes: Array(0..<1024))
                var basis = [Float](repeating: 0, count: 64)
                (basis[10], basis[11]) = (0.6, 0.8)
                try vq.codebook.freeze(subspace: Tensor(basis, shape: [1, 64]))
                for step in 0..<3 { _ = vq(TestSupport.random([4, 256, 64], seed: 90 + UInt64(step), std: 1.5)) }
                #expect(vq.codebook.gateWrites[.emaStep, default: 0] == 3 && vq.codebook.gateWrites[.expiry, default: 0] > 0)
                return (vq.codebook.embed.value.scalars + vq.codebook.embedAverage.value.scalars + vq.codebook.clusterSize.value.scalars).map(\.bitPattern)
            }
        }
        let one = try run(1), two = try run(2)
        #expect(one == two)
    }
}
