import Foundation
import Testing
@testable import VectorQuantize

/// Every reference case in the package's fixtures (and in `VQ_REFERENCE_FIXTURES` when set) runs here,
/// and passes only with every output tensor compared (or skipped with a reason: a replayed random draw).
@Suite("Reference parity (vector-quantize-pytorch 1.32.0 fixtures)")
struct ReferenceFixtureTests {
    static let implemented: Set<String> = ["VectorQuantize", "ResidualVQ", "GroupedResidualVQ", "FSQ", "ResidualFSQ", "GroupedResidualFSQ",
                                             "LFQ", "ResidualLFQ", "GroupedResidualLFQ", "SimVQ", "ResidualSimVQ", "RandomProjectionQuantizer",
                                             "BinaryMapper", "LatentQuantize", "FSP", "EvoLFQ", "HierarchicalVQ"]
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
