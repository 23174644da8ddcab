import Foundation
import Testing
import VQTestSupport
@testable import VectorQuantize

/// This library builds exactly the configurations the reference runs: `Fixtures/reference_acceptance.json` holds
/// ~9,500 configurations — every keyword of every kind set to each value of a pool on the registry's example, and as
/// many random pairs and triples — each built, trained three steps and evaluated by vector-quantize-pytorch 1.32.0
/// (`Scripts/reference_acceptance.py`). A configuration the reference cannot run is refused here at construction (one
/// error, nothing built), and one it runs is built — but for the documented differences below, each with its reason.
/// Found by it: ResidualLFQ took `num_codebooks`, `has_projections` and `codebook_scale` (the reference's layers may
/// have no projection, and the stack sets each layer's scale) and decoded other codes than its forward's.
@Suite("The reference's configurations: built here exactly when the reference runs them")
struct AcceptanceParityTests {
    struct Case {
        let module: String
        let kwargs: [String: Any]
        let accepted: Bool
        let error: String?
    }

    /// Another file of cases to check instead (`Scripts/reference_flag_pairs.py`'s sweep), from `VQ_REFERENCE_ACCEPTANCE`.
    static let override = ProcessInfo.processInfo.environment["VQ_REFERENCE_ACCEPTANCE"].flatMap { $0.isEmpty ? nil : $0 }

    nonisolated(unsafe) static let file: [String: Any] = {
        guard let url = override.map({ URL(fileURLWithPath: $0) }) ?? ReferenceFixture.folders().first?.appendingPathComponent("reference_acceptance.json")
        else { return [:] }
        return (try? JSONSerialization.jsonObject(with: Data(contentsOf: url))) as? [String: Any] ?? [:]
    }()

    nonisolated(unsafe) static let cases: [Case] = ((file["cases"] as? [[String: Any]]) ?? []).map {
        Case(module: $0["module"] as! String, kwargs: $0["kwargs"] as! [String: Any], accepted: $0["accepted"] as! Bool,
             error: $0["error"] as? String)
    }

    /// Where this library decides otherwise, by design (README, "Differences from vector-quantize-pytorch"): the reason,
    /// or nil when the configuration is not one of them.
    static func deliberate(_ c: Case, ours: Error?) -> String? {
        let kw = c.kwargs
        func number(_ key: String) -> Double? { kw[key].flatMap { Keywords.isBoolean($0) ? nil : Keywords.number($0) } }
        if ours != nil {
            // Types: a keyword takes its JSON type only (Keywords: `quantize_dropout: 1` is not true, `codebook_size: true`
            // is not 1, `kmeans_iters: 0.5` is not an integer); Python takes any truthy value for a flag, a bool for an int,
            // and a float where it is never used.
            if case .badValue(_, let key, let reason)? = ours as? ConfigurationError, reason.hasPrefix("expected "), let v = kw[key],
               jsonKind(v) != expectedKind(reason) || (reason.hasPrefix("expected an integer") && Keywords.integer(v) == nil) {
                return "types"
            }
            // Ranges: values no run should take, which the reference takes and then diverges, never uses, or reads as
            // something else (an EMA decay above 1, an LFQ codebook of 3 codes made of 1 bit, a dropout multiple of 0).
            for key in ["decay", "affine_param_batch_decay", "affine_param_codebook_decay", "noise_dropout"] {
                if let v = number(key), !(0...1).contains(v) { return "ranges: \(key) in [0, 1]" }
            }
            for key in ["orthogonal_reg_max_codes", "beam_size", "eval_beam_size", "quantize_dropout_multiple_of"] {
                if let v = number(key), v < 1 { return "ranges: \(key) ≥ 1" }
            }
            if c.module.hasSuffix("LFQ"), let v = number("codebook_size"), !(v >= 2 && Int(exactly: v).map { $0 & ($0 - 1) == 0 } == true) {
                return "ranges: an LFQ codebook of a power of 2 codes"
            }
            if c.module == "LatentQuantize", number("codebook_dim") == 0 { return "ranges: codebook_dim 0" }
            // diveq with ema_update true: the reference's diveq overrides the layers' ema_update; here a contradiction.
            if case .badValue(_, "diveq", let reason)? = ours as? ConfigurationError, reason.hasPrefix("only one of ema_update") {
                return "diveq with ema_update"
            }
            // A list of levels with another codebook_dim: the reference keeps both and fails at its first forward —
            // but for codebook_dim 1, which it broadcasts against every level (a projection to one latent, read as all).
            if c.module == "LatentQuantize", let levels = kw["levels"] as? [Any], let d = number("codebook_dim"), d > 0, Int(d) != levels.count {
                return "one latent per level"
            }
        } else {
            // One process: `sync_codebook` / `sync_kmeans` need torch.distributed's process group there; here they are
            // the identity in one process (VQDistributed makes them real across processes).
            if c.error?.contains("process group") == true { return "one process" }
            // A list of per-layer codebook sizes spells the reference's tuple (JSON has no tuples; a list fails there).
            if c.error?.contains("unhashable type: 'list'") == true, kw["codebook_size"] is [Any] { return "tuples" }
            // The reference's k-means initialisation fails to broadcast inside a training beam's top-k call; here the
            // layers initialise from the first batch's residuals, as without a beam.
            if c.error?.contains("broadcast") == true, kw["kmeans_init"] as? Bool == true { return "k-means under a beam" }
            // Channel-first groups: the reference's GroupedResidualFSQ splits the last axis, so its is_channel_first groups
            // fail; here the groups split the channel axis (ResidualFSQ's own keyword, honoured).
            if c.module == "GroupedResidualFSQ", kw["is_channel_first"] as? Bool == true { return "channel-first groups" }
            // directional_reparam without dead-code expiry: the reference asserts it; the reparametrisation does not
            // need expiry (README).
            if c.error?.contains("periodic dead code replacement") == true { return "directional_reparam alone" }
            // A keyword the wrapper sets for its layers, at a value configurations of earlier versions of this library
            // hold (`preserve_symmetry: true`, …): they still load; any other value is refused (ReferenceSignatureTests).
            if let kind = QuantizerRegistry.kind(named: c.module), c.error?.contains("multiple values for keyword argument") == true,
               kind.setForLayers.contains(where: { kw[$0] != nil }) {
                return "earlier files"
            }
        }
        return nil
    }

    static func jsonKind(_ v: Any) -> String {
        if Keywords.isBoolean(v) { return "bool" }
        if v is NSNumber || v is Int || v is Double { return "number" }
        if v is [Any] { return "list" }
        if v is String { return "string" }
        return "other"
    }

    static func expectedKind(_ reason: String) -> String {
        if reason.hasPrefix("expected true or false") { return "bool" }
        if reason.hasPrefix("expected an integer") || reason.hasPrefix("expected a number") { return "number" }
        if reason.hasPrefix("expected a list") { return "list" }
        if reason.hasPrefix("expected a string") || reason.hasPrefix("expected a module") { return "string" }
        return "?"
    }

    @Test("the file's examples are the registry's, and it holds both outcomes for every kind", .enabled(if: override == nil))
    func examples() throws {
        let examples = try #require(Self.file["examples"] as? [String: [String: Any]])
        for (name, example) in examples {
            let kind = try #require(QuantizerRegistry.kinds.first { $0.name == name }, "\(name)")
            let canonical = { (d: [String: Any]) in String(decoding: try JSONSerialization.data(withJSONObject: d, options: .sortedKeys), as: UTF8.self) }
            #expect(try canonical(kind.example) == canonical(example), "\(name): the registry's example changed: rerun Scripts/reference_acceptance.py")
            #expect(Self.cases.contains { $0.module == name && $0.accepted } && Self.cases.contains { $0.module == name && !$0.accepted }, "\(name)")
        }
        #expect(Self.cases.count > 9000, "\(Self.cases.count) cases")
    }

    @Test("built here exactly when the reference runs it", arguments: QuantizerRegistry.kinds.map(\.name).filter { $0 != "EvoLFQ" })
    func parity(_ name: String) throws {
        let kind = try #require(QuantizerRegistry.kinds.first { $0.name == name })
        var disagreements: [String] = []
        var checked = 0
        for c in Self.cases where c.module == name {
            var ours: Error? = nil
            do { _ = try kind.build(c.kwargs) } catch { ours = error }
            checked += 1
            guard (ours == nil) != c.accepted, Self.deliberate(c, ours: ours) == nil else { continue }
            let kw = c.kwargs.filter { kind.example[$0.key] == nil || !NSDictionary(dictionary: [$0.key: $0.value]).isEqual(to: [$0.key: kind.example[$0.key]!]) }
            disagreements.append(c.accepted ? "\(kw): the reference runs it, refused here: \(ours!)" : "\(kw): built here, the reference fails: \(c.error ?? "")")
        }
        if Self.override == nil { #expect(checked > 50) }
        #expect(disagreements.isEmpty, "\(name): \(disagreements.count) of \(checked)\n\(disagreements.joined(separator: "\n"))")
    }
}
