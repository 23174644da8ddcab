import Foundation
import Testing
import VQNN
import VQTensor
@testable import VectorQuantize

/// Configuration keywords from files are read with one set of rules: wrong types are errors naming the
/// keyword, never silent defaults.
@Suite("Configuration keywords")
struct KeywordTests {
    func build(_ json: String) throws -> Any { try ModuleConfig.parse(Data(json.utf8)).build() }

    @Test("wrong types are errors that name the keyword")
    func wrongTypes() throws {
        let cases: [(String, String)] = [
            (#"{"module": "ResidualVQ", "kwargs": {"dim": 8, "num_quantizers": 2, "codebook_size": 16, "quantize_dropout": 1}}"#, "quantize_dropout"),
            (#"{"module": "ResidualVQ", "kwargs": {"dim": 8, "num_quantizers": 2, "codebook_size": 16, "shared_codebook": "yes"}}"#, "shared_codebook"),
            (#"{"module": "ResidualVQ", "kwargs": {"dim": 8, "num_quantizers": true, "codebook_size": 16}}"#, "num_quantizers"),
            (#"{"module": "ResidualFSQ", "kwargs": {"levels": [8, 5], "num_quantizers": 2, "quantize_dropout": 1}}"#, "quantize_dropout"),
            (#"{"module": "ResidualFSQ", "kwargs": {"levels": [8, 5.5], "num_quantizers": 2}}"#, "levels"),
            (#"{"module": "ResidualLFQ", "kwargs": {"dim": 8, "num_quantizers": 2, "codebook_size": 256, "quantize_dropout_cutoff_index": 0.5}}"#, "quantize_dropout_cutoff_index"),
            (#"{"module": "GroupedResidualVQ", "kwargs": {"dim": 8, "groups": "2", "num_quantizers": 2, "codebook_size": 16}}"#, "groups"),
            (#"{"module": "VectorQuantize", "kwargs": {"dim": 8, "codebook_size": 16, "decay": true}}"#, "decay"),
            // Found by the fuzzer: no layers at all was an index-out-of-range trap.
            (#"{"module": "ResidualVQ", "kwargs": {"dim": 4, "num_quantizers": 0.0, "codebook_size": 8}}"#, "num_quantizers"),
            (#"{"module": "ResidualVQ", "kwargs": {"dim": 4, "num_quantizers": -2, "codebook_size": 8}}"#, "num_quantizers"),
            (#"{"module": "ResidualVQ", "kwargs": {"dim": 4, "codebook_size": []}}"#, "codebook_size"),
        ]
        for (json, keyword) in cases {
            do {
                _ = try build(json)
                Issue.record("accepted: \(json)")
            } catch let e as ConfigurationError {
                #expect(e.description.contains(keyword), "\(e) does not name \(keyword)")
            }
        }
    }

    @Test("k-means initialisation without an iteration is refused in every kind that has it (the reference raises at its first batch; the fit zeroed every code)")
    func kmeansWithoutIterations() throws {
        let kinds: [(String, String)] = [("VectorQuantize", #""dim": 8, "codebook_size": 16"#),
                                         ("ResidualVQ", #""dim": 8, "num_quantizers": 2, "codebook_size": 16"#),
                                         ("GroupedResidualVQ", #""dim": 8, "groups": 2, "num_quantizers": 2, "codebook_size": 16"#),
                                         ("HierarchicalVQ", #""dim": 8, "codebook_size": 16, "scales": [1, 4, 20]"#)]
        for (module, base) in kinds {
            #expect(throws: ConfigurationError.self, "\(module)") {
                _ = try build(#"{"module": "\#(module)", "kwargs": {\#(base), "kmeans_init": true, "kmeans_iters": 0}}"#)
            }
            // Without k-means initialisation the count is never used (the reference builds and runs it too).
            _ = try build(#"{"module": "\#(module)", "kwargs": {\#(base), "kmeans_init": false, "kmeans_iters": 0}}"#)
        }
        var typed = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        typed.kmeansIters = -1
        #expect(throws: ConfigurationError.self) { try VectorQuantizer(typed) }
        // One iteration fits codes where the data is (not the zero vectors the empty fit left).
        typed.kmeansInit = true
        typed.kmeansIters = 1
        let vq = try VectorQuantizer(typed)
        vq.train()
        var rng = SeededGenerator(seed: 7)
        _ = vq.forward(vectors: Tensor.randomNormal([1, 64, 8], using: &rng))
        let codes = vq.codebook.embed.value.scalars
        #expect(codes.contains { $0 != 0 } && codes.allSatisfy { $0.isFinite })
    }

    @Test("what the sweep of every flag beside every keyword found: refused exactly where the reference cannot run (a training beam with affine_param), built where it can (a random projection's inert orthogonal flag)")
    func flagPairs() throws {
        for module in ["ResidualVQ", "GroupedResidualVQ"] {
            let base = #""dim": 8, "num_quantizers": 2, "codebook_size": 16\#(module == "GroupedResidualVQ" ? #", "groups": 2"# : "")"#
            do {
                _ = try build(#"{"module": "\#(module)", "kwargs": {\#(base), "affine_param": true, "beam_size": 2}}"#)
                Issue.record("\(module): a training beam with affine_param was built")
            } catch let e as ConfigurationError {
                #expect(e.description.contains("affine_param") && e.description.contains("beam_size"), "\(e)")
            }
            // In evaluation only, the statistics do not move: the reference runs it, and so does this library.
            _ = try build(#"{"module": "\#(module)", "kwargs": {\#(base), "affine_param": true, "beam_size": 1, "eval_beam_size": 2}}"#)
        }
        // The random projection's codebooks only run in evaluation: the orthogonal regulariser's flags are inert there.
        let rpq = try build(#"{"module": "RandomProjectionQuantizer", "kwargs": {"dim": 8, "codebook_size": 16, "codebook_dim": 4, "num_codebooks": 2, "orthogonal_reg_weight": 1, "orthogonal_reg_active_codes_only": true}}"#) as! RandomProjectionQuantizer
        rpq.train()
        var rng = SeededGenerator(seed: 3)
        #expect(rpq(Tensor.randomNormal([1, 10, 8], using: &rng)).indices.shape == [1, 10, 2])
        // A plain VectorQuantize with separate heads still refuses it, where the loss runs (the reference asserts there).
        #expect(throws: ConfigurationError.self) {
            _ = try build(#"{"module": "VectorQuantize", "kwargs": {"dim": 8, "codebook_size": 16, "heads": 2, "separate_codebook_per_head": true, "orthogonal_reg_weight": 1, "orthogonal_reg_active_codes_only": true}}"#)
        }
        // diveq with ema_update true: the reference's diveq overrides it silently; here it is a contradiction, refused.
        #expect(throws: ConfigurationError.self) {
            _ = try build(#"{"module": "ResidualVQ", "kwargs": {"dim": 8, "num_quantizers": 2, "codebook_size": 16, "diveq": true, "ema_update": true}}"#)
        }
    }

    @Test("numbers are read as numbers: quant_grad_frac 1 is 1.0, 2.0 is the integer 2")
    func numbers() throws {
        let r = try build(#"{"module": "ResidualVQ", "kwargs": {"dim": 8, "num_quantizers": 2.0, "codebook_size": 16, "quant_grad_frac": 1, "quantize_dropout": true}}"#) as! ResidualVQ
        #expect(r.configuration.quantGradFrac == 1 && r.numQuantizers == 2 && r.configuration.quantizeDropout)
        let f = try build(#"{"module": "ResidualFSQ", "kwargs": {"levels": [8, 5], "num_quantizers": 2, "quantize_dropout": true}}"#) as! ResidualFSQ
        #expect(f.quantizeDropout)
    }

    @Test("a residual layer with several heads is refused, typed or by keyword")
    func headsInResidual() {
        var c = ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16)
        c.layer.heads = 2
        #expect(throws: ConfigurationError.self) { try ResidualVQ(c) }
        #expect(throws: ConfigurationError.self) { try build(#"{"module": "ResidualVQ", "kwargs": {"dim": 8, "num_quantizers": 2, "codebook_size": 16, "heads": 2}}"#) }
    }
}

@Suite("Module text of configuration arguments")
struct LayerSpecTests {
    @Test("an MLP's text builds layers with PyTorch's keys; bad text is an error, not a crash")
    func parse() throws {
        var rng = SeededGenerator(seed: 1)
        let mlp = try LayerSpec.parse("nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16, bias = False))", rng: &rng)
        #expect(Set(mlp.stateDict().keys) == ["0.weight", "0.bias", "2.weight"])
        #expect(mlp(Tensor.zeros([3, 16])).shape == [3, 16])
        for bad in ["nn.Conv2d(3, 4)", "nn.Linear(16)", "nn.Linear(16, 0)", "nn.Sequential(nn.ReLU()", "nn.Linear(2, 2, bias = maybe)",
                    String(repeating: "nn.Sequential(", count: 40) + String(repeating: ")", count: 40), "", "nn.ReLU() extra"] {
            #expect(throws: LayerSpecError.self, "\(bad)") { try LayerSpec.parse(bad, rng: &rng) }
        }
        let sim = try ModuleConfig.parse(Data(#"{"module": "SimVQ", "kwargs": {"dim": 8, "codebook_size": 4, "codebook_transform": "nn.Linear(8, 8)"}}"#.utf8)).build()
        #expect(sim.stateDict().keys.contains("code_transform.bias"))
        #expect(throws: ConfigurationError.self) {
            try ModuleConfig.parse(Data(#"{"module": "SimVQ", "kwargs": {"dim": 8, "codebook_size": 4, "codebook_transform": "nn.Conv1d(8, 8)"}}"#.utf8)).build()
        }
    }
}

/// `in_place_codebook_optimizer`: every keyword of SGD and Adam that the optimizers implement is read (they used to be
/// ignored: SGD with momentum diverged from the reference at the first step); anything else is refused.
@Suite("in_place_codebook_optimizer keywords")
struct InPlaceOptimizerKeywordTests {
    typealias Spec = VectorQuantizerConfiguration.InPlaceOptimizer

    @Test("each spelling reads back to itself, with every keyword")
    func roundTrip() throws {
        let specs: [Spec] = [.sgd(learningRate: 2), .sgd(learningRate: 0.5, momentum: 0.9), .sgd(learningRate: 0.5, momentum: 0.9, dampening: 0.1),
                             .sgd(learningRate: 0.5, momentum: 0.9, weightDecay: 0.01, nesterov: true), .adam(learningRate: 0.01),
                             .adam(learningRate: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.01)]
        for spec in specs { #expect(Spec(text: spec.text) == spec, "\(spec.text)") }
        #expect(Spec(text: "partial(torch.optim.SGD, lr=0.5, momentum=0.9)") == .sgd(learningRate: 0.5, momentum: 0.9))
        #expect(Spec(text: "partial(torch.optim.Adam, lr = 0.01, betas = (0.8, 0.99))") == .adam(learningRate: 0.01, beta1: 0.8, beta2: 0.99))
    }

    @Test("unknown or bad keywords are refused, naming the keyword", arguments: [
        "partial(torch.optim.Adam, lr=0.01, amsgrad=True)", "partial(torch.optim.SGD, lr=0.1, foreach=True)",
        "partial(torch.optim.SGD, lr=0.1, nesterov=True)", "partial(torch.optim.SGD, lr=-1)", "partial(torch.optim.SGD, lr=0.1, lr=0.2)",
        "partial(torch.optim.Adam, betas=(0.9, 1.5))", "partial(torch.optim.RMSprop, lr=0.1)", "partial(torch.optim.SGD, momentum=nan)"])
    func refused(_ text: String) throws {
        #expect(Spec(text: text) == nil)
        let kw: [String: Any] = ["dim": 8, "codebook_size": 16, "learnable_codebook": true, "ema_update": false, "in_place_codebook_optimizer": text]
        #expect(throws: ConfigurationError.self) { try VectorQuantizerConfiguration(referenceKwargs: kw) }
    }
}
