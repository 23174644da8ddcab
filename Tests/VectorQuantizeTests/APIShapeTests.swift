import Foundation
import Testing
import VQTestSupport
@testable import VectorQuantize

/// One shape for the same idea across the 17 quantizers: a nested `Configuration` built by `init(_:)`, a forward that
/// returns the type's own `Output` (never a tuple or a bare tensor), and ``QuantizerOutput`` through ``Quantizer``.
@Suite("One API shape across the quantizers")
struct APIShapeTests {
    @Test("every quantizer names its forward's result Output and its configuration Configuration")
    func nestedTypes() {
        // Compiles only while each type has both (EvoLFQ is built from modules: no Configuration).
        let outputs: [Any.Type] = [
            VectorQuantizer.Output.self, ResidualVQ.Output.self, GroupedResidualVQ.Output.self, FSQ.Output.self,
            ResidualFSQ.Output.self, GroupedResidualFSQ.Output.self, LFQ.Output.self, ResidualLFQ.Output.self,
            GroupedResidualLFQ.Output.self, SimVQ.Output.self, ResidualSimVQ.Output.self, RandomProjectionQuantizer.Output.self,
            LatentQuantize.Output.self, FSP.Output.self, BinaryMapper.Output.self, EvoLFQ.Output.self, HierarchicalVQ.Output.self,
        ]
        let configurations: [Any.Type] = [
            VectorQuantizer.Configuration.self, ResidualVQ.Configuration.self, GroupedResidualVQ.Configuration.self,
            FSQ.Configuration.self, ResidualFSQ.Configuration.self, GroupedResidualFSQ.Configuration.self, LFQ.Configuration.self,
            ResidualLFQ.Configuration.self, GroupedResidualLFQ.Configuration.self, SimVQ.Configuration.self,
            ResidualSimVQ.Configuration.self, RandomProjectionQuantizer.Configuration.self, LatentQuantize.Configuration.self,
            FSP.Configuration.self, BinaryMapper.Configuration.self, HierarchicalVQ.Configuration.self,
        ]
        #expect(outputs.count == QuantizerRegistry.kinds.count && configurations.count == QuantizerRegistry.kinds.count - 1)
    }

    @Test("every quantizer with a configuration is built by init(_:) from it and by init(referenceKwargs:)")
    func initialisers() throws {
        // Compiles only while each type has both initialisers with these signatures.
        func both<Q: ConfiguredQuantizer>(_: Q.Type, _ typed: (Q.Configuration) throws -> Q, _ keywords: ([String: Any]) throws -> Q) -> String {
            QuantizerRegistry.kind(of: Q.self)!.name
        }
        let names = [
            both(VectorQuantizer.self, VectorQuantizer.init, VectorQuantizer.init(referenceKwargs:)),
            both(ResidualVQ.self, ResidualVQ.init, ResidualVQ.init(referenceKwargs:)),
            both(GroupedResidualVQ.self, GroupedResidualVQ.init, GroupedResidualVQ.init(referenceKwargs:)),
            both(FSQ.self, FSQ.init, FSQ.init(referenceKwargs:)),
            both(ResidualFSQ.self, ResidualFSQ.init, ResidualFSQ.init(referenceKwargs:)),
            both(GroupedResidualFSQ.self, GroupedResidualFSQ.init, GroupedResidualFSQ.init(referenceKwargs:)),
            both(LFQ.self, LFQ.init, LFQ.init(referenceKwargs:)),
            both(ResidualLFQ.self, ResidualLFQ.init, ResidualLFQ.init(referenceKwargs:)),
            both(GroupedResidualLFQ.self, GroupedResidualLFQ.init, GroupedResidualLFQ.init(referenceKwargs:)),
            both(SimVQ.self, { try SimVQ($0) }, SimVQ.init(referenceKwargs:)),
            both(ResidualSimVQ.self, ResidualSimVQ.init, ResidualSimVQ.init(referenceKwargs:)),
            both(RandomProjectionQuantizer.self, RandomProjectionQuantizer.init, RandomProjectionQuantizer.init(referenceKwargs:)),
            both(LatentQuantize.self, LatentQuantize.init, LatentQuantize.init(referenceKwargs:)),
            both(FSP.self, FSP.init, FSP.init(referenceKwargs:)),
            both(BinaryMapper.self, BinaryMapper.init, BinaryMapper.init(referenceKwargs:)),
            both(HierarchicalVQ.self, HierarchicalVQ.init, HierarchicalVQ.init(referenceKwargs:)),
        ]
        #expect(Set(names).count == QuantizerRegistry.kinds.count - 1)
    }

    @Test("no public forward of the library returns a tuple (the one helper module that does is named)")
    func noTupleForwards() throws {
        let root = DocSnippets.root().appendingPathComponent("Sources/VectorQuantize")
        let files = FileManager.default.enumerator(atPath: root.path)!.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }
        var tuples: [String] = [], forwards = 0
        for file in files {
            let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
            // `public func callAsFunction(…) -> T {`, the signature possibly over several lines.
            let regex = try NSRegularExpression(pattern: #"public func callAsFunction\([^{]*?\)\s*->\s*([^{]+?)\s*\{"#, options: [.dotMatchesLineSeparators])
            for m in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                forwards += 1
                let result = String(text[Range(m.range(at: 1), in: text)!])
                if result.hasPrefix("(") && !file.hasSuffix("VectorNorm.swift") { tuples.append("\(file): -> \(result)") }
            }
        }
        #expect(forwards >= 20)
        #expect(tuples.isEmpty, "\(tuples)")
    }
}
