import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// The typed path (`X.Configuration` in Swift) and the keyword path (`{"module", "kwargs"}` from a file) of
/// every quantizer build the same module and refuse the same mistakes.
@Suite("Typed and keyword configurations agree")
struct TypedConfigurationTests {
    /// One case per quantizer: the module built from a typed configuration, and the reference's keywords
    /// that should mean the same.
    nonisolated(unsafe) static let agreeing: [(String, () throws -> Module, [String: Any])] = [
        ("VectorQuantize", {
            var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
            c.decay = 0.9
            c.heads = 2
            c.separateCodebookPerHead = true
            return try VectorQuantizer(c)
        }, ["dim": 8, "codebook_size": 16, "decay": 0.9, "heads": 2, "separate_codebook_per_head": true]),
        ("ResidualVQ", { try ResidualVQ(ResidualVQConfiguration(dim: 8, numQuantizers: 3, codebookSize: 16)) },
         ["dim": 8, "num_quantizers": 3, "codebook_size": 16]),
        ("GroupedResidualVQ", { try GroupedResidualVQ(.init(dim: 8, groups: 2, residual: ResidualVQConfiguration(dim: 4, numQuantizers: 2, codebookSize: 16))) },
         ["dim": 8, "groups": 2, "num_quantizers": 2, "codebook_size": 16]),
        ("FSQ", {
            var c = FSQ.Configuration(levels: [8, 5, 5])
            c.dim = 8
            return try FSQ(c)
        }, ["levels": [8, 5, 5], "dim": 8]),
        ("ResidualFSQ", {
            var c = ResidualFSQ.Configuration(levels: [8, 5], numQuantizers: 3)
            c.dim = 8
            c.quantizeDropout = true
            return try ResidualFSQ(c)
        }, ["levels": [8, 5], "num_quantizers": 3, "dim": 8, "quantize_dropout": true]),
        ("GroupedResidualFSQ", {
            var r = ResidualFSQ.Configuration(levels: [5, 5], numQuantizers: 2)
            r.dim = 4
            return try GroupedResidualFSQ(.init(dim: 8, groups: 2, residual: r))
        }, ["levels": [5, 5], "num_quantizers": 2, "dim": 8, "groups": 2]),
        ("LFQ", {
            var c = LFQ.Configuration()
            c.dim = 8
            c.codebookSize = 64
            return try LFQ(c)
        }, ["dim": 8, "codebook_size": 64]),
        ("ResidualLFQ", { try ResidualLFQ(.init(dim: 8, numQuantizers: 2, codebookSize: 64)) }, ["dim": 8, "num_quantizers": 2, "codebook_size": 64]),
        ("GroupedResidualLFQ", { try GroupedResidualLFQ(.init(dim: 8, groups: 2, residual: .init(dim: 4, numQuantizers: 2, codebookSize: 16))) },
         ["dim": 8, "groups": 2, "num_quantizers": 2, "codebook_size": 16]),
        ("SimVQ", { try SimVQ(.init(dim: 8, codebookSize: 16)) }, ["dim": 8, "codebook_size": 16]),
        ("ResidualSimVQ", { try ResidualSimVQ(.init(dim: 8, numQuantizers: 2, codebookSize: 16)) }, ["dim": 8, "num_quantizers": 2, "codebook_size": 16]),
        ("RandomProjectionQuantizer", { try RandomProjectionQuantizer(dim: 8, codebookSize: 16, codebookDim: 4, numCodebooks: 2) },
         ["dim": 8, "codebook_size": 16, "codebook_dim": 4, "num_codebooks": 2]),
        ("LatentQuantize", { try LatentQuantize(.init(levels: [5, 5, 8], dim: 8)) }, ["levels": [5, 5, 8], "dim": 8]),
        ("FSP", { try FSP(.init(levels: [8, 5, 5], dim: 8)) }, ["levels": [8, 5, 5], "dim": 8]),
        ("BinaryMapper", { try BinaryMapper(.init(bits: 6)) }, ["bits": 6]),
        ("HierarchicalVQ", { try HierarchicalVQ(.init(dim: 8, codebookSize: 16, scales: [1, 4, 20])) }, ["dim": 8, "codebook_size": 16, "scales": [1, 4, 20]]),
        ("EvoLFQ", {
            var rng = SeededGenerator(seed: 0 ^ 0xE71)
            let enc = Linear(8, 6, rng: &rng), dec = Linear(6, 8, rng: &rng)
            var c = LFQ.Configuration()
            c.dim = 6
            return try EvoLFQ(encoder: enc, decoder: dec, lfq: try LFQ(c))
        }, ["encoder": "nn.Linear(8, 6)", "decoder": "nn.Linear(6, 8)", "dim": 6]),
    ]

    @Test("every quantizer is covered")
    func everyQuantizer() {
        #expect(Set(Self.agreeing.map(\.0)) == Set(ModuleConfig.modules))
    }

    @Test("the same state and the same codes from both paths", arguments: agreeing.indices)
    func agree(_ i: Int) throws {
        let (name, typed, kwargs) = Self.agreeing[i]
        let a = try typed(), b = try ModuleConfig(module: name, kwargs: kwargs).build()
        #expect(Set(a.stateDict().keys) == Set(b.stateDict().keys), "\(name)")
        for (k, v) in a.stateDict() {
            let w = b.stateDict()[k]
            #expect(w.map { $0.scalars.map(\.bitPattern) == v.scalars.map(\.bitPattern) || ($0.scalars.allSatisfy(\.isNaN) && v.scalars.allSatisfy(\.isNaN)) } == true,
                    "\(name): \(k) differs")
        }
        let qa = a as! any Quantizer, qb = b as! any Quantizer
        let x = TestSupport.random([12, qa.inputDim], seed: 3)
        #expect(qa.encode(x) == qb.encode(x), "\(name)")
    }

    @Test("the same mistakes are refused by both paths")
    func refusals() {
        let cases: [(String, () throws -> Void, String, [String: Any])] = [
            ("FSQ levels of 2 without symmetry", { _ = try FSQ(FSQ.Configuration(levels: [2, 2])) }, "FSQ", ["levels": [2, 2]]),
            ("LFQ codebook of 100", {
                var c = LFQ.Configuration()
                c.codebookSize = 100
                _ = try LFQ(c)
            }, "LFQ", ["codebook_size": 100]),
            ("ResidualVQ with two heads per layer", {
                var c = ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16)
                c.layer.heads = 2
                _ = try ResidualVQ(c)
            }, "ResidualVQ", ["dim": 8, "num_quantizers": 2, "codebook_size": 16, "heads": 2]),
            ("ResidualFSQ soft clamp with the hard clamp", {
                var c = ResidualFSQ.Configuration(levels: [5, 5], numQuantizers: 2)
                c.softClampInputValue = [1]
                _ = try ResidualFSQ(c)
            }, "ResidualFSQ", ["levels": [5, 5], "num_quantizers": 2, "soft_clamp_input_value": 1.0]),
            ("ResidualLFQ no layers", { _ = try ResidualLFQ(.init(dim: 8, numQuantizers: 0, codebookSize: 64)) },
             "ResidualLFQ", ["dim": 8, "num_quantizers": 0, "codebook_size": 64]),
            ("GroupedResidualLFQ indivisible", { _ = try GroupedResidualLFQ(.init(dim: 9, groups: 2, residual: .init(dim: 4, numQuantizers: 1, codebookSize: 16))) },
             "GroupedResidualLFQ", ["dim": 9, "groups": 2, "num_quantizers": 1, "codebook_size": 16]),
            ("SimVQ empty codebook", { _ = try SimVQ(.init(dim: 8, codebookSize: 0)) }, "SimVQ", ["dim": 8, "codebook_size": 0]),
            ("VectorQuantize affine with cosine", {
                var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
                c.affineParam = true
                c.useCosineSimilarity = true
                _ = try VectorQuantizer(c)
            }, "VectorQuantize", ["dim": 8, "codebook_size": 16, "affine_param": true, "use_cosine_sim": true]),
            ("HierarchicalVQ decreasing scales", { _ = try HierarchicalVQ(.init(dim: 8, codebookSize: 16, scales: [4, 2])) },
             "HierarchicalVQ", ["dim": 8, "codebook_size": 16, "scales": [4, 2]]),
            ("BinaryMapper 0 bits", { _ = try BinaryMapper(.init(bits: 0)) }, "BinaryMapper", ["bits": 0]),
        ]
        for (what, typed, module, kwargs) in cases {
            #expect(throws: ConfigurationError.self, "typed: \(what)") { try typed() }
            #expect(throws: ConfigurationError.self, "keywords: \(what)") { try ModuleConfig(module: module, kwargs: kwargs).build() }
        }
    }

    @Test("VectorQuantizerConfiguration.referenceKwargs round-trips every field")
    func vectorQuantizerRoundTrip() throws {
        var c = VectorQuantizerConfiguration(dim: 12, codebookSize: 40)
        c.codebookDim = 6
        c.heads = 2
        c.decay = 0.95
        c.kmeansInit = true
        c.kmeansIters = 3
        c.thresholdEMADeadCode = 1.5
        c.commitmentWeight = 0.25
        c.orthogonalRegWeight = 0.1
        c.orthogonalRegMaxCodes = 8
        c.codebookDiversityLossWeight = 0.2
        c.codebookDiversityTemperature = 50
        c.stochasticSampleCodes = true
        c.sampleCodebookTemperature = 0.5
        c.rotationTrick = false
        c.returnZerosForMaskedPadding = false
        c.affineParam = true
        c.affineParamBatchDecay = 0.9
        c.seed = 7
        #expect(try VectorQuantizerConfiguration(referenceKwargs: c.referenceKwargs) == c)
        var d = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        d.learnableCodebook = true
        d.emaUpdate = false
        d.inPlaceCodebookOptimizer = .adam(learningRate: 0.01)
        d.directionalReparam = false
        d.routeGradientsToInput = false
        #expect(try VectorQuantizerConfiguration(referenceKwargs: d.referenceKwargs) == d)
        // Through JSON, as a configuration file stores it.
        let data = try JSONSerialization.data(withJSONObject: c.referenceKwargs)
        let back = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        #expect(try VectorQuantizerConfiguration(referenceKwargs: back) == c)
    }
}
