import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Every keyword of the reference's constructors, read from the reference itself
/// (`Fixtures/reference_signatures.json`, written by `Scripts/fixtures/reference_signatures.py` from
/// vector-quantize-pytorch 1.32.0): a configuration PyTorch wrote — with any keyword spelt out at its default —
/// must build here, so that its checkpoint loads. (The `scale` keyword of FSQ, stored and never read by the
/// reference, made `vq encode` refuse such a checkpoint as "unknown keyword"; found by
/// `Scripts/crosscheck_pytorch.py --random`.)
@Suite("The reference's keywords")
struct ReferenceSignatureTests {
    struct Signatures {
        /// kind → keyword → its entry (`default`, `required` or `unrepresentable`).
        let kinds: [String: [String: [String: Any]]]
        /// kind → the classes whose keywords it passes on through `**kwargs`.
        let passesOn: [String: [String]]
        /// kind → the keywords it passes explicitly beside `**kwargs` to the classes it builds.
        let sets: [String: [String]]

        /// The passed-on keywords `kind` cannot take: set by it (or a class it builds) for the modules it builds, and not
        /// one of its own — the reference raises `TypeError: got multiple values for keyword argument` for them.
        func setForLayers(_ kind: String) -> Set<String> {
            let own = Set((kinds[kind] ?? [:]).keys)
            var out = Set(sets[kind] ?? [])
            for inner in passesOn[kind] ?? [] { out.formUnion(setForLayers(inner)) }
            return out.subtracting(own)
        }

        /// Every keyword a configuration of `kind` may hold in the reference, its layers' included.
        func keywords(of kind: String) -> [String: [String: Any]] {
            var all = kinds[kind] ?? [:]
            for inner in passesOn[kind] ?? [] { all.merge(kinds[inner] ?? [:]) { own, _ in own } }
            return all
        }
    }

    static func signatures() throws -> Signatures {
        let url = try #require(ReferenceFixture.folders().first).appendingPathComponent("reference_signatures.json")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let kinds = try #require(json["kinds"] as? [String: [String: [String: Any]]])
        let passesOn = try #require(json["passes_on"] as? [String: [String]])
        let sets = try #require(json["sets"] as? [String: [String]])
        return Signatures(kinds: kinds, passesOn: passesOn, sets: sets)
    }

    /// Keywords whose reference value JSON cannot hold — a module, a function, torch dtypes — so no configuration
    /// file carries them; the typed configurations take their Swift counterparts.
    static let notInFiles: Set<String> = ["allowed_dtypes", "straight_through_activation", "init_fn"]

    @Test("the registry knows every kind of the reference and every keyword of each")
    func everyKeywordIsKnown() throws {
        let sig = try Self.signatures()
        #expect(Set(sig.kinds.keys) == Set(QuantizerRegistry.kinds.map(\.name)))
        for kind in QuantizerRegistry.kinds {
            let reference = sig.keywords(of: kind.name)
            #expect(reference.count >= 3, "\(kind.name): no reference keywords read")
            let missing = Set(reference.keys).subtracting(kind.keywords).subtracting(Self.notInFiles)
            #expect(missing.isEmpty, "\(kind.name) refuses the reference's keywords \(missing.sorted())")
        }
    }

    @Test("the keywords a kind takes beyond the reference's are exactly its ownKeywords (what an export leaves out)")
    func ownKeywordsAreTheRest() throws {
        let sig = try Self.signatures()
        for kind in QuantizerRegistry.kinds {
            let beyond = kind.keywords.subtracting(sig.keywords(of: kind.name).keys)
            #expect(beyond == kind.ownKeywords, "\(kind.name): beyond the reference \(beyond.sorted()), declared own \(kind.ownKeywords.sorted())")
        }
    }

    @Test("each keyword spelt out at the reference's default builds, as a configuration PyTorch wrote")
    func everyDefaultBuilds() throws {
        let sig = try Self.signatures()
        var tried = 0
        for kind in QuantizerRegistry.kinds {
            for (keyword, entry) in sig.keywords(of: kind.name).sorted(by: { $0.key < $1.key })
            where kind.example[keyword] == nil && !Self.notInFiles.contains(keyword) && !sig.setForLayers(kind.name).contains(keyword) {
                guard entry.keys.contains("default") else { continue }   // required ones are in every example
                let value = entry["default"] ?? NSNull()
                var kwargs = kind.example
                kwargs[keyword] = value is NSNull ? NSNull() : value
                // Through the file format, as a sidecar holds it.
                let data = try JSONSerialization.data(withJSONObject: ["module": kind.name, "kwargs": kwargs])
                do {
                    let config = try ModuleConfig.parse(data)
                    _ = try config.build()
                    tried += 1
                } catch {
                    Issue.record("\(kind.name) with \(keyword) = \(value) (the reference's default) does not build: \(error)")
                }
            }
        }
        #expect(tried > 150, "only \(tried) defaults tried")
    }

    /// ResidualLFQ set its layers' `codebook_scale` (2^-i) over a given one, ResidualFSQ their `preserve_symmetry`, and
    /// RandomProjectionQuantizer its codebooks' `heads`, `use_cosine_sim` and `separate_codebook_per_head`: each was taken
    /// and silently replaced, where the reference raises (found by AcceptanceParityTests). Now: the registry knows them
    /// (exactly the reference's), another value is refused naming the keyword, the values files of earlier versions
    /// hold still load, and neither a saved nor an exported configuration holds them.
    @Test("a keyword the reference's wrapper sets for its layers: refused at another value, tolerated as earlier files hold it, never written")
    func setForLayers() throws {
        let sig = try Self.signatures()
        let earlier: [String: [String: Any]] = ["ResidualFSQ": ["preserve_symmetry": true], "ResidualLFQ": ["codebook_scale": 1.0],
                                                "RandomProjectionQuantizer": ["heads": 1, "use_cosine_sim": false, "separate_codebook_per_head": false]]
        let dir = try TestSupport.scratchDirectory("vq-set-for-layers")
        defer { try? FileManager.default.removeItem(at: dir) }
        var refused = 0
        for kind in QuantizerRegistry.kinds {
            #expect(kind.setForLayers == sig.setForLayers(kind.name), "\(kind.name)")
            for keyword in kind.setForLayers.sorted() {
                var kwargs = kind.example
                kwargs[keyword] = 7
                #expect(throws: ConfigurationError.self, "\(kind.name) \(keyword)") {
                    do { _ = try kind.build(kwargs) } catch let e as ConfigurationError {
                        #expect("\(e)".contains(keyword), "\(kind.name): \(e)")
                        throw e
                    }
                }
                refused += 1
            }
            guard !kind.setForLayers.isEmpty else { continue }
            // A configuration as an earlier version wrote it builds; saved and exported, it holds none of them.
            let old = kind.example.merging(earlier[kind.name.replacingOccurrences(of: "Grouped", with: "")] ?? [:]) { $1 }
            let q = try kind.build(old)
            let config = ModuleConfig(module: kind.name, kwargs: old)
            for exporting in [false, true] where !(exporting && kind.name == "RandomProjectionQuantizer") {   // its own layout: no export
                let url = dir.appendingPathComponent("\(kind.name)-\(exporting).safetensors")
                if exporting { try QuantizerCheckpoint.export(q, config: config, to: url) } else { try QuantizerCheckpoint.save(q, to: url) }
                let written = try ModuleConfig.read(contentsOf: url.deletingPathExtension().appendingPathExtension("json"))
                #expect(kind.setForLayers.isDisjoint(with: written.kwargs.keys), "\(kind.name) \(exporting): \(written.kwargs.keys.sorted())")
            }
        }
        // Seven keyword–kind pairs: codebook_scale and preserve_symmetry (each stack and its grouped form), the random
        // projections' three.
        #expect(refused == 7, "\(refused)")
    }

    // Found by `Scripts/crosscheck_pytorch.py --random` (PyTorch's configurations and checkpoints, both ways).

    @Test("diveq and implicit_neural_codebook decide the layers' learning as there, whatever learnable_codebook or ema_update say")
    func stackOverrides() throws {
        let base: [String: Any] = ["dim": 8, "num_quantizers": 2, "codebook_size": 16]
        let diveq = try ResidualVQ(ResidualVQConfiguration(referenceKwargs: base.merging(["diveq": true, "learnable_codebook": true]) { $1 }))
        #expect(diveq.layers.allSatisfy { $0.configuration.learnableCodebook && !$0.configuration.emaUpdate })
        let implicit = try ResidualVQ(ResidualVQConfiguration(referenceKwargs: base.merging(["implicit_neural_codebook": true, "ema_update": true]) { $1 }))
        #expect(implicit.layers.allSatisfy { $0.configuration.learnableCodebook && !$0.configuration.emaUpdate })
        // A typed diveq stack (its layer configuration as given) saves and loads back the same.
        var typed = ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16)
        typed.diveq = true
        let q = try ResidualVQ(typed)
        let dir = try TestSupport.scratchDirectory("vq-diveq")
        defer { try? FileManager.default.removeItem(at: dir) }
        try QuantizerCheckpoint.save(q, to: dir.appendingPathComponent("d.safetensors"))
        let (back, _) = try QuantizerCheckpoint.load(dir.appendingPathComponent("d.safetensors"))
        #expect((back as! ResidualVQ).stateDict() == q.stateDict())
        // The contradiction stated outright stays refused.
        #expect(throws: ConfigurationError.self) { try ResidualVQConfiguration(referenceKwargs: base.merging(["diveq": true, "ema_update": true]) { $1 }) }
    }

    @Test("orthogonal_reg_active_codes_only with separate codebooks per head is refused only where the loss runs")
    func activeCodesOnly() throws {
        let kw: [String: Any] = ["dim": 8, "codebook_size": 16, "heads": 2, "separate_codebook_per_head": true, "orthogonal_reg_active_codes_only": true]
        _ = try VectorQuantizerConfiguration(referenceKwargs: kw)
        _ = try RandomProjectionQuantizer(referenceKwargs: ["dim": 8, "codebook_size": 16, "codebook_dim": 4, "num_codebooks": 2,
                                                           "orthogonal_reg_active_codes_only": true])
        #expect(throws: ConfigurationError.self) { try VectorQuantizerConfiguration(referenceKwargs: kw.merging(["orthogonal_reg_weight": 0.1]) { $1 }) }
    }

    /// The reference's `VectorQuantize` asserts top-k (what a training beam asks each layer for) against the cross-entropy
    /// commitment and the in-place optimizer in training: a beam in training with either was a trap here (vq-fuzz seed
    /// 2001), and is refused at construction; a beam in evaluation only (beam_size 1, eval_beam_size) trains and searches.
    /// The in-place optimizer takes the codes wherever they are learnable: `orthogonal_reg_weight` makes them so beside
    /// the EMA update (it was refused; cross-check seed 21, draw 286; reference case vq_inplace_orthogonal_ema_train_3steps).
    @Test("a training beam with the cross-entropy commitment or the in-place optimizer is refused; a beam in evaluation and an orthogonal loss's learnable codes are not")
    func trainingBeamAndInPlace() throws {
        let base: [String: Any] = ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "codebook_dim": 4]
        let sgd = "partial(torch.optim.SGD, lr=0.01)"
        for extra: [String: Any] in [["commitment_use_cross_entropy_loss": true],
                                     ["in_place_codebook_optimizer": sgd, "learnable_codebook": true, "ema_update": false]] {
            let kw = base.merging(extra) { $1 }
            #expect(throws: ConfigurationError.self) { try ResidualVQ(ResidualVQConfiguration(referenceKwargs: kw.merging(["beam_size": 3]) { $1 })) }
            #expect(throws: ConfigurationError.self) { try GroupedResidualVQ(referenceKwargs: kw.merging(["beam_size": 2, "groups": 2, "dim": 16]) { $1 }) }
            let rvq = try ResidualVQ(ResidualVQConfiguration(referenceKwargs: kw.merging(["beam_size": 1, "eval_beam_size": 3]) { $1 }))
            let x = TestSupport.random([2, 10, 8], seed: 5)
            rvq.train()
            _ = rvq(x)
            rvq.eval()
            let out = rvq(x)
            #expect(out.indices.shape == [2, 10, 3] && out.quantized.scalars.allSatisfy(\.isFinite))
        }
        let vq = try VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: ["dim": 8, "codebook_size": 16, "orthogonal_reg_weight": 0.1,
                                                                                    "in_place_codebook_optimizer": sgd]))
        #expect(vq.inPlaceOptimizer != nil && vq.configuration.emaUpdate)
        #expect(throws: ConfigurationError.self) {
            try VectorQuantizerConfiguration(referenceKwargs: ["dim": 8, "codebook_size": 16, "in_place_codebook_optimizer": sgd])
        }
    }

    @Test("one module given to a stack is one module: a stack's vq_bridge, ResidualSimVQ's codebook_transform")
    func sharedModules() throws {
        let rvq = try ResidualVQ(ResidualVQConfiguration(referenceKwargs: ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "vq_bridge": "nn.Linear(8, 8)"]))
        func id(_ layer: Layer?) -> ObjectIdentifier? { layer.map { ObjectIdentifier($0 as AnyObject) } }
        let bridges = rvq.layers.map { id($0.codebook.vqBridge) }
        #expect(bridges.count == 3 && bridges[0] != nil && Set(bridges).count == 1)
        let grvq = try GroupedResidualVQ(referenceKwargs: ["dim": 16, "groups": 2, "num_quantizers": 2, "codebook_size": 16, "vq_bridge": "nn.Linear(8, 8)"])
        let all = grvq.rvqs.flatMap { $0.layers.map { id($0.codebook.vqBridge) } }
        #expect(all.count == 4 && all[0] != nil && Set(all).count == 1)
        // One parameter to an optimizer, its key under every layer (as PyTorch's state dict).
        #expect(rvq.stateDict().keys.filter { $0.hasSuffix("vq_bridge.weight") }.count == 3)
        #expect(rvq.trainableParameters().filter { $0.value.shape == [8, 8] }.count == 1)
        // A state giving the one bridge two values (a checkpoint of a module that did not share it) is refused, unchanged.
        var state = rvq.stateDict()
        let before = state
        state["layers.2._codebook.vq_bridge.weight"] = state["layers.2._codebook.vq_bridge.weight"]! + 1
        #expect(throws: ModuleError.sharedValuesDiffer([["layers.0._codebook.vq_bridge.weight", "layers.1._codebook.vq_bridge.weight",
                                                         "layers.2._codebook.vq_bridge.weight"]])) { try rvq.load(stateDict: state) }
        #expect(rvq.stateDict() == before)
        let rsv = try ResidualSimVQ(referenceKwargs: ["dim": 8, "num_quantizers": 3, "codebook_size": 16, "codebook_transform": "nn.Linear(8, 8, bias = False)"])
        #expect(Set(rsv.layers.map { id($0.codeTransform) }).count == 1)
        // Without one, each layer has its own (the reference makes one per layer).
        let own = try ResidualSimVQ(referenceKwargs: ["dim": 8, "num_quantizers": 2, "codebook_size": 16])
        #expect(Set(own.layers.map { id($0.codeTransform) }).count == 2)
    }

    @Test("a RandomProjectionQuantizer checkpoint in the reference's layout with layernorm_after_project_in loads in it")
    func randomProjectionLayerNorm() throws {
        let kw: [String: Any] = ["dim": 16, "codebook_size": 32, "codebook_dim": 8, "num_codebooks": 2, "layernorm_after_project_in": true]
        let reference = try RandomProjectionQuantizer(referenceKwargs: kw.merging(["reference_layout": true]) { $1 })
        #expect(reference.stateDict().keys.contains("vq.project_in.0.weight"))
        let dir = try TestSupport.scratchDirectory("vq-rpq-ln")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("rpq.safetensors")
        try reference.save(to: url)
        try ModuleConfig(module: "RandomProjectionQuantizer", kwargs: kw).write(to: ModuleConfig.sidecar(of: url))
        let (loaded, _) = try QuantizerCheckpoint.load(url)
        let x = TestSupport.random([2, 5, 16], seed: 1)
        #expect((loaded as! RandomProjectionQuantizer)(x).indices == reference(x).indices)
    }
}
