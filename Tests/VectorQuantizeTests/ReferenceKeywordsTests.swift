import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Typed configurations as the reference's keywords, both ways, and `QuantizerCheckpoint.save(_:to:)` for every
/// quantizer of the registry (the quantizer describes itself: no keywords by hand).
@Suite("Configurations ↔ the reference's keywords; save(to:) for every quantizer")
struct ReferenceKeywordsTests {
    static let kinds = QuantizerRegistry.kinds.filter { $0.name != "EvoLFQ" }

    @Test("every kind's type is in the registry once, and every kind but EvoLFQ describes itself")
    func registryTypes() throws {
        let types = QuantizerRegistry.kinds.map { ObjectIdentifier($0.type) }
        #expect(Set(types).count == QuantizerRegistry.kinds.count)
        for kind in QuantizerRegistry.kinds {
            let q = try kind.build(kind.example)
            #expect(QuantizerRegistry.kind(of: type(of: q))?.name == kind.name)
            if kind.name == "EvoLFQ" {
                #expect(throws: ConfigurationError.self) { try q.referenceConfiguration() }
            } else {
                let config = try q.referenceConfiguration()
                #expect(config.module == kind.name)
                // Only keywords the kind accepts (the reference's, and the port's documented extras such as `seed`).
                #expect(Set(config.kwargs.keys).isSubset(of: kind.keywords), "\(kind.name): \(Set(config.kwargs.keys).subtracting(kind.keywords))")
            }
        }
    }

    /// Candidate values for a keyword: booleans, small integers, fractions, lists; whatever builds is kept.
    nonisolated(unsafe) static let candidates: [Any] = [true, false, 0, 1, 2, 3, 4, 0.5, 0.25, 1.5, [2, 3], [4, 4], [5, 5, 8], "tanh", "sigmoid"]

    /// A fuzz over every keyword of every kind: the example with one keyword changed, for each candidate value;
    /// every configuration that builds reads back from its own keywords (``ConfiguredQuantizer/referenceConfiguration()``
    /// checks `C(referenceKwargs: c.referenceKwargs) == c`), so a keyword the inverse forgot or wrote wrong fails.
    @Test("every keyword that builds round-trips through referenceKwargs", arguments: kinds.indices)
    func everyKeywordRoundTrips(_ i: Int) throws {
        let kind = Self.kinds[i]
        var built = 0, changedFromDefault = 0
        for key in kind.keywords.sorted() {
            for value in Self.candidates {
                var kw = kind.example
                kw[key] = value
                guard let q = try? kind.build(kw) else { continue }
                built += 1
                let config = try q.referenceConfiguration()
                let again = try kind.build(config.kwargs)
                #expect(try again.referenceConfiguration().kwargs.keys.sorted() == config.kwargs.keys.sorted(), "\(kind.name) \(key)=\(value)")
                if let base = try? kind.build(kind.example).referenceConfiguration(),
                   !NSDictionary(dictionary: base.kwargs).isEqual(to: config.kwargs) { changedFromDefault += 1 }
            }
        }
        // The fuzz reached configurations other than the example (it cannot pass by building nothing).
        #expect(built > 10 && changedFromDefault > 5, "\(kind.name): \(built) built, \(changedFromDefault) differed from the example")
    }

    /// Values a keyword may refuse: wrong types, out-of-range numbers, empty and negative lists.
    nonisolated(unsafe) static let refusable: [Any] = ["x", -1, 3.0, -0.5, 1e30, Double.nan, [-1], [Int](), true]

    /// A fuzz over every keyword of every kind (EvoLFQ too): a configuration error names the module the configuration
    /// names — a stack's layer is a VectorQuantize configuration inside, but the user wrote ResidualVQ.
    @Test("every refused keyword of every kind is said of that kind, not of an inner configuration", arguments: QuantizerRegistry.kinds.indices)
    func refusalsNameTheirKind(_ i: Int) throws {
        let kind = QuantizerRegistry.kinds[i]
        var refused = 0
        for key in kind.keywords.sorted() {
            for value in Self.refusable {
                var kw = kind.example
                kw[key] = value
                do { _ = try kind.build(kw) } catch let e as ConfigurationError {
                    refused += 1
                    #expect(e.description.hasPrefix("\(kind.name): "), "\(kind.name) \(key)=\(value): \(e)")
                } catch {}
            }
        }
        #expect(refused > 10, "\(kind.name): \(refused) refused")
    }

    @Test("messages name a quantizer as its configuration does (VectorQuantize, not the Swift type VectorQuantizer): a decode refused for its indices' shape")
    func messagesUseKindNames() throws {
        for kind in QuantizerRegistry.kinds {
            let q = try kind.build(kind.example)
            #expect(q.kindName == kind.name)
            let indices = IndexTensor(Array(repeating: 0, count: 64), shape: [2, 2, 2, 2, 2, 2])
            do { _ = try q.decode(indices); Issue.record("\(kind.name): decoded indices of six axes") } catch {
                #expect("\(error)".contains(kind.name + ":"), "\(kind.name): \(error)")
            }
        }
    }

    @Test("a stack's layer keyword out of range is said of the stack")
    func layerErrorNamesTheStack() throws {
        for name in ["ResidualVQ", "GroupedResidualVQ", "RandomProjectionQuantizer"] {
            let kind = try #require(QuantizerRegistry.kind(named: name))
            var kw = kind.example
            kw["decay"] = 3.0
            #expect(throws: ConfigurationError.invalid(module: name, reason: "decay 3.0 outside [0, 1]")) { try kind.build(kw) }
        }
    }

    @Test("save(to:) then load gives the same quantizer (state and codes) for every kind", arguments: kinds.indices)
    func saveWithoutKeywords(_ i: Int) throws {
        let kind = Self.kinds[i]
        let dir = try TestSupport.scratchDirectory("vq-refkw")
        defer { try? FileManager.default.removeItem(at: dir) }
        let q = try kind.build(kind.example)
        let x = TestSupport.random([2] + (q.sequenceShape ?? [6]) + [q.inputDim], seed: 3)
        if kind.training == .fromVectors { q.train(); _ = q.forward(vectors: x); q.eval() }  // codes moved from their initial values
        let url = dir.appendingPathComponent("q.safetensors")
        try QuantizerCheckpoint.save(q, to: url)
        let (loaded, config) = try QuantizerCheckpoint.loadQuantizer(url)
        #expect(config.module == kind.name)
        #expect(type(of: loaded) == type(of: q))
        let a = q.stateDict(), b = loaded.stateDict()
        #expect(a.keys.sorted() == b.keys.sorted())
        for (k, t) in a { #expect(b[k] == t, "\(kind.name): \(k)") }
        #expect(loaded.encode(x) == q.encode(x), "\(kind.name)")
    }

    @Test("every typed initialiser saves without keywords (per-layer sizes, per-level sizes, a seed above Int.max)")
    func typedConfigurations() throws {
        let dir = try TestSupport.scratchDirectory("vq-refkw")
        defer { try? FileManager.default.removeItem(at: dir) }
        var rvq = ResidualVQConfiguration(dim: 8, numQuantizers: 3, codebookSize: 16)
        rvq.codebookSizes = [16, 8, 4]
        rvq.quantizeDropout = true
        rvq.layer.commitmentWeight = 0.5
        var fsq = FSQ.Configuration(levels: [8, 5, 5, 5])
        fsq.dim = 12
        fsq.seed = UInt64.max - 2      // a seed above Int.max keeps its bits
        var hvq = HierarchicalVQ.Configuration(dim: 8, codebookSize: 16, scales: [1, 2, 4])
        hvq.codebookSizes = [16, 16, 32]
        hvq.sharedCodebook = false
        hvq.layer.kmeansInit = false
        var rpq = RandomProjectionQuantizer.Configuration(dim: 8, codebookSize: 16, codebookDim: 4)
        rpq.numCodebooks = 2
        // Every quantizer with a typed configuration, from its typed initialiser (a stack's layer fields left as the
        // typed initialisers leave them: the stack stores the form its keyword parser gives).
        let quantizers: [any Quantizer] = [
            try FSQ(fsq), try ResidualVQ(rvq),
            try GroupedResidualLFQ(.init(dim: 16, groups: 2, residual: .init(dim: 8, numQuantizers: 2, codebookSize: 16))),
            try HierarchicalVQ(hvq),
            try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16)),
            try GroupedResidualVQ(.init(dim: 16, groups: 2, residual: ResidualVQConfiguration(dim: 8, numQuantizers: 2, codebookSize: 16))),
            try ResidualFSQ(.init(levels: [8, 5, 5], numQuantizers: 2)),
            try GroupedResidualFSQ(.init(dim: 6, groups: 2, residual: .init(levels: [8, 5, 5], numQuantizers: 2))),
            try LFQ(.init(dim: 8)), try ResidualLFQ(.init(dim: 8, numQuantizers: 2, codebookSize: 16)),
            try SimVQ(.init(dim: 8, codebookSize: 16)), try ResidualSimVQ(.init(dim: 8, numQuantizers: 2, codebookSize: 16)),
            try RandomProjectionQuantizer(rpq), try LatentQuantize(.init(levels: [5, 5, 8], dim: 8)),
            try FSP(.init(levels: [8, 5, 5], dim: 8)), try BinaryMapper(.init(bits: 8)),
        ]
        // One of each registry kind that has a typed configuration.
        #expect(Set(quantizers.map { QuantizerRegistry.kind(of: type(of: $0))!.name }).count == QuantizerRegistry.kinds.count - 1)
        for (n, q) in quantizers.enumerated() {
            let url = dir.appendingPathComponent("t\(n).safetensors")
            try QuantizerCheckpoint.save(q, to: url)
            let (loaded, _) = try QuantizerCheckpoint.loadQuantizer(url)
            #expect(type(of: loaded) == type(of: q))
            #expect(loaded.stateDict().keys.sorted() == q.stateDict().keys.sorted())
        }
        let (loadedRVQ, _) = try QuantizerCheckpoint.loadQuantizer(dir.appendingPathComponent("t1.safetensors"))
        #expect((loadedRVQ as? ResidualVQ)?.configuration == rvq)
        let (loadedFSQ, _) = try QuantizerCheckpoint.loadQuantizer(dir.appendingPathComponent("t0.safetensors"))
        #expect((loadedFSQ as? FSQ)?.configuration == fsq)
    }

    @Test("a configuration the keywords cannot express, and EvoLFQ, are refused and nothing is written")
    func refusals() throws {
        let dir = try TestSupport.scratchDirectory("vq-refkw")
        defer { try? FileManager.default.removeItem(at: dir) }
        // A stack's layer option that the stack sets itself: the keywords would rebuild another configuration.
        var rlfq = ResidualLFQ.Configuration(dim: 8, numQuantizers: 2, codebookSize: 16)
        rlfq.layer.dim = 5
        let stack = try ResidualLFQ(rlfq)
        let url = dir.appendingPathComponent("r.safetensors")
        #expect(throws: ConfigurationError.self) { try QuantizerCheckpoint.save(stack, to: url) }
        let evo = try QuantizerRegistry.kind(named: "EvoLFQ")!.build(QuantizerRegistry.kind(named: "EvoLFQ")!.example)
        #expect(throws: ConfigurationError.self) { try QuantizerCheckpoint.save(evo, to: url) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }
}
