import Foundation
import Testing
@testable import VectorQuantize

/// Every reference case in the package's fixtures (and in `VQ_REFERENCE_FIXTURES` when set) runs here.
/// Cases of modules that are not implemented yet are run as known issues, so they are reported and the
/// test notices when they start to pass.
@Suite("Reference parity (vector-quantize-pytorch 1.32.0 fixtures)")
struct ReferenceFixtureTests {
    static let implemented: Set<String> = ["VectorQuantize", "ResidualVQ", "GroupedResidualVQ", "FSQ", "ResidualFSQ", "GroupedResidualFSQ",
                                             "LFQ", "ResidualLFQ", "GroupedResidualLFQ", "SimVQ", "ResidualSimVQ", "RandomProjectionQuantizer",
                                             "BinaryMapper", "LatentQuantize", "FSP", "EvoLFQ", "HierarchicalVQ"]
    /// Quantizers of the reference not implemented yet (issue #14): their cases run as known issues.
    static let pending: Set<String> = []
    /// Cases of implemented quantizers that use an option not implemented yet (issue #14), as known issues.
    static let pendingCases: [String: String] = [
        "rvq_inc_q2_train_grad": "ResidualVQ implicit_neural_codebook",
        "rvq_inc_q3_eval": "ResidualVQ implicit_neural_codebook",
    ]

    static let fixtures: [ReferenceFixture] = {
        ReferenceFixture.folders().flatMap { (try? ReferenceFixture.loadAll(from: $0)) ?? [] }
    }()

    @Test("fixtures are present")
    func present() {
        #expect(Self.fixtures.count >= 99)
        #expect(Self.fixtures.contains { $0.name == "vq_euclid_train_step" })
    }

    @Test("reference case", arguments: fixtures.map(\.name))
    func referenceCase(_ name: String) throws {
        let f = Self.fixtures.first { $0.name == name }!
        if Self.pending.contains(f.module) {
            withKnownIssue("module \(f.module) is not implemented yet") {
                Issue.record("case \(name): FAILED module \(f.module) is not implemented")
            }
            print("case \(name): FAILED module \(f.module) is not implemented")
            return
        }
        if let option = Self.pendingCases[name] {
            // Run it anyway: the known issue is recorded while it fails, and the test notices when it passes.
            withKnownIssue("\(option) is not implemented yet") {
                let result = try Self.run(f)
                #expect(result.failures.isEmpty && result.uncompared.isEmpty, "\(result.line)")
            }
            print("case \(name): FAILED (pending: \(option))")
            return
        }
        guard Self.implemented.contains(f.module) else {
            print("case \(name): FAILED unknown module \(f.module)")
            Issue.record("case \(name): unknown module \(f.module)")
            return
        }
        do {
            let result = try Self.run(f)
            print(result.line)
            #expect(result.failures.isEmpty, "\(result.line)")
            #expect(result.uncompared.isEmpty, "case \(name): output tensors neither compared nor skipped with a reason: \(result.uncompared)")
            #expect(result.compared > 0)
        } catch {
            print("case \(name): FAILED \(error)")
            Issue.record("case \(name): FAILED \(error)")
        }
    }

    static func run(_ f: ReferenceFixture) throws -> FixtureComparison {
        switch f.module {
        case "VectorQuantize": return try VectorQuantizerFixtureDriver.run(f)
        case "ResidualVQ", "GroupedResidualVQ": return try ResidualFixtureDriver.run(f)
        case "SimVQ", "ResidualSimVQ", "RandomProjectionQuantizer": return try ImplicitFixtureDriver.run(f)
        case "BinaryMapper", "LatentQuantize", "FSP", "EvoLFQ", "HierarchicalVQ": return try NewQuantizerFixtureDriver.run(f)
        default: return try ScalarFixtureDriver.run(f)
        }
    }
}
