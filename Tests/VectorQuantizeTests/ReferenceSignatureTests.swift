import Foundation
import Testing
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
        return Signatures(kinds: kinds, passesOn: passesOn)
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

    @Test("each keyword spelt out at the reference's default builds, as a configuration PyTorch wrote")
    func everyDefaultBuilds() throws {
        let sig = try Self.signatures()
        var tried = 0
        for kind in QuantizerRegistry.kinds {
            for (keyword, entry) in sig.keywords(of: kind.name).sorted(by: { $0.key < $1.key })
            where kind.example[keyword] == nil && !Self.notInFiles.contains(keyword) {
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
}
