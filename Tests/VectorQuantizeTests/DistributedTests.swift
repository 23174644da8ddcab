import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Data-parallel codebook training with an in-process two-rank world (the MPI test in `.ci/run` runs the
/// same over Open MPI): both ranks end bit-identical and match one process on the concatenated batches.
@Suite("Distributed codebook synchronisation (in-process ranks)")
struct DistributedTests {
    func config() -> VectorQuantizerConfiguration {
        var c = VectorQuantizerConfiguration(dim: 8, codebookSize: 16)
        c.kmeansInit = true
        c.thresholdEMADeadCode = 2
        c.seed = 3
        return c
    }

    func batches() -> [Tensor] { (0..<6).map { TestSupport.random([1, 64, 8], seed: 50 + UInt64($0), std: 1 + Float($0) * 0.3) } }

    @Test("two ranks on two shards = one process on the whole batches")
    func equivalence() throws {
        let single = try VectorQuantizer(config())
        try single.codebook.freeze(codes: [2, 5])
        for b in batches() { _ = single(b) }

        let world = LoopbackWorld(size: 2)
        // Each rank's thread touches only its own model (modules are not Sendable).
        nonisolated(unsafe) let ranks = try (0..<2).map { r -> VectorQuantizer in
            let m = try VectorQuantizer(config())
            try m.codebook.freeze(codes: [2, 5])
            m.codebook.collective = world.collective(rank: r)
            return m
        }
        let data = batches()
        runRanks(2) { r in
            for b in data { _ = ranks[r](b.slice(axis: 1, (r * 32)..<(r * 32 + 32))) }
        }
        #expect(ranks[0].stateDict() == ranks[1].stateDict())
        #expect(TestSupport.maxAbsDiff(ranks[0].codebook.embed.value, single.codebook.embed.value) <= 1e-6)
        #expect(ranks[0].codebook.clusterSize.value == single.codebook.clusterSize.value)
        #expect(ranks[0].codes.slice(axis: 0, 2..<3) == single.codes.slice(axis: 0, 2..<3))
    }

    @Test("averaged gradients make data-parallel SGD on a learnable codebook match one process")
    func gradients() throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.learnableCodebook = true
        c.emaUpdate = false
        let x = TestSupport.random([1, 40, 4], seed: 9)
        let single = try VectorQuantizer(c)
        let opt = SGD(parameters: single.trainableParameters(), learningRate: 0.1)
        // One process: the mean loss over the whole batch = the average of the two halves' mean losses.
        let l0 = single(x.slice(axis: 1, 0..<20)).loss, l1 = single(x.slice(axis: 1, 20..<40)).loss
        ((l0 + l1) / 2).backward()
        opt.step()

        let world = LoopbackWorld(size: 2)
        nonisolated(unsafe) let models = try (0..<2).map { _ in try VectorQuantizer(c) }  // one per rank thread
        runRanks(2) { r in
            let m = models[r]
            m(x.slice(axis: 1, (r * 20)..<(r * 20 + 20))).loss.backward()
            world.collective(rank: r).averageGradients(m.trainableParameters())
            SGD(parameters: m.trainableParameters(), learningRate: 0.1).step()
        }
        #expect(models[0].codes == models[1].codes)
        #expect(TestSupport.maxAbsDiff(models[0].codes, single.codes) <= 1e-6)
    }
}
