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

    @Test("sync_codebook false: each rank learns from its own shard alone; sync_kmeans false: k-means and dead-code draws from it")
    func unsynchronised() throws {
        let data = batches()
        @Sendable func shard(_ b: Tensor, _ r: Int) -> Tensor { b.slice(axis: 1, (r * 32)..<(r * 32 + 32)) }
        for (syncCodebook, syncKmeans) in [(false, true), (true, false)] {
            var c = try VectorQuantizerConfiguration(referenceKwargs: ["dim": 8, "codebook_size": 16, "kmeans_init": true,
                                                                       "seed": 3,
                                                                       "sync_codebook": syncCodebook, "sync_kmeans": syncKmeans])
            #expect(try VectorQuantizerConfiguration(referenceKwargs: c.referenceKwargs) == c)
            c.seed = 3
            let world = LoopbackWorld(size: 2)
            nonisolated(unsafe) let ranks = try (0..<2).map { r -> VectorQuantizer in
                let m = try VectorQuantizer(c)
                m.codebook.collective = world.collective(rank: r)
                return m
            }
            // After each step, what the step added to the counts: (1 − decay) × the batch counts — summed over the
            // ranks while the codebook is synchronised, each rank's own when not.
            nonisolated(unsafe) var added: [[[Float]]] = [[], []]
            runRanks(2) { r in
                for b in data {
                    let before = ranks[r].codebook.isInitialized ? ranks[r].codebook.clusterSize.value.scalars : nil
                    _ = ranks[r](shard(b, r))
                    if let before {
                        added[r].append(zip(ranks[r].codebook.clusterSize.value.scalars, before).map { $0 - 0.8 * $1 })
                    }
                }
            }
            #expect(ranks[0].codes != ranks[1].codes, "the ranks' codebooks should differ (\(syncCodebook), \(syncKmeans))")
            #expect(added[0].count == data.count - 1)
            let sameCounts = zip(added[0], added[1]).allSatisfy { a, b in zip(a, b).allSatisfy { abs($0 - $1) <= 1e-4 } }
            if !syncCodebook {
                #expect(!sameCounts)
                // Nothing crosses between ranks: each is one process on its shard, bit for bit.
                for r in 0..<2 {
                    let alone = try VectorQuantizer(c)
                    for b in data { _ = alone(shard(b, r)) }
                    #expect(alone.stateDict() == ranks[r].stateDict())
                }
            } else {
                // The EMA statistics are still summed over the ranks; the codes k-means drew locally differ.
                #expect(sameCounts)
            }
        }
    }
}
