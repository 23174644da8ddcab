import Foundation
import Testing
@testable import VectorQuantize

/// Every reference case in the package's fixtures (and in `VQ_REFERENCE_FIXTURES` when set) runs here.
/// Cases of modules that are not implemented yet are run as known issues, so they are reported and the
/// test notices when they start to pass.
@Suite("Reference parity (vector-quantize-pytorch 1.32.0 fixtures)")
struct ReferenceFixtureTests {
    static let implemented: Set<String> = ["VectorQuantize", "ResidualVQ", "GroupedResidualVQ", "FSQ", "ResidualFSQ", "GroupedResidualFSQ",
                                             "LFQ", "ResidualLFQ", "SimVQ", "RandomProjectionQuantizer"]
    static let pending: Set<String> = []

    static let fixtures: [ReferenceFixture] = {
        ReferenceFixture.folders().flatMap { (try? ReferenceFixture.loadAll(from: $0)) ?? [] }
    }()

    @Test("fixtures are present")
    func present() {
        #expect(Self.fixtures.count >= 60)
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
        guard Self.implemented.contains(f.module) else {
            print("case \(name): FAILED unknown module \(f.module)")
            Issue.record("case \(name): unknown module \(f.module)")
            return
        }
        do {
            let result: FixtureComparison
            switch f.module {
            case "VectorQuantize": result = try VectorQuantizerFixtureDriver.run(f)
            case "ResidualVQ", "GroupedResidualVQ": result = try ResidualFixtureDriver.run(f)
            case "SimVQ", "RandomProjectionQuantizer": result = try ImplicitFixtureDriver.run(f)
            default: result = try ScalarFixtureDriver.run(f)
            }
            print(result.line)
            #expect(result.failures.isEmpty, "\(result.line)")
            #expect(result.uncompared.isEmpty, "case \(name): output tensors neither compared nor skipped with a reason: \(result.uncompared)")
            #expect(result.compared > 0)
        } catch {
            print("case \(name): FAILED \(error)")
            Issue.record("case \(name): FAILED \(error)")
        }
    }
}
