import Foundation
import VQNN

/// An in-process ``Collective`` for tests: `worldSize` ranks on as many threads, exchanging through shared
/// memory with a barrier. Reductions add in rank order, as the MPI implementation does.
public final class LoopbackWorld: @unchecked Sendable {
    public let size: Int
    private let condition = NSCondition()
    private var slots: [[Float]]
    private var arrived = 0
    private var generation = 0

    public init(size: Int) {
        self.size = size
        slots = Array(repeating: [], count: size)
    }

    public func collective(rank: Int) -> any Collective { Rank(world: self, rank: rank) }

    /// Deposits `values` for `rank`, waits for every rank, and returns all deposits in rank order.
    func exchange(_ values: [Float], rank: Int) -> [[Float]] {
        condition.lock()
        defer { condition.unlock() }
        let myGeneration = generation
        slots[rank] = values
        arrived += 1
        if arrived == size {
            // Everyone is here: publish this round, then release the waiters.
            published = slots
            arrived = 0
            generation += 1
            condition.broadcast()
        } else {
            while generation == myGeneration { condition.wait() }
        }
        return published
    }
    private var published: [[Float]] = []

    final class Rank: Collective, @unchecked Sendable {
        let world: LoopbackWorld
        let rank: Int
        init(world: LoopbackWorld, rank: Int) { (self.world, self.rank) = (world, rank) }
        var worldSize: Int { world.size }
        func allReduceSum(_ values: inout [Float]) {
            let all = world.exchange(values, rank: rank)
            var sum = all[0]
            for part in all.dropFirst() { for i in sum.indices { sum[i] += part[i] } }
            values = sum
        }
        func broadcast(_ values: inout [Float], root: Int) { values = world.exchange(values, rank: rank)[root] }
        func allGather(_ values: [Float]) -> [[Float]] { world.exchange(values, rank: rank) }
    }
}

/// Runs `body(rank)` for every rank on its own thread (not a shared pool, so ranks that wait for each other
/// cannot starve) and returns when all have finished.
public func runRanks(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let done = DispatchSemaphore(value: 0)
    for r in 0..<count {
        let t = Thread { body(r); done.signal() }
        t.stackSize = 8 << 20
        t.start()
    }
    for _ in 0..<count { done.wait() }
}
