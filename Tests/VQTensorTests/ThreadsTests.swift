import CVQKernels
import Foundation
import Testing
@testable import VQTensor

@Suite("Thread-count overrides")
struct ThreadsTests {
    @Test("Threads.with is task-local: concurrent tasks see their own count, nesting restores the outer one")
    func taskLocal() async {
        let global = Threads.count
        await withTaskGroup(of: (Int, [Int]).self) { group in
            for n in 1...4 {
                group.addTask {
                    Threads.with(n) {
                        var seen: [Int] = []
                        for _ in 0..<200 { seen.append(Threads.count) }
                        Threads.with(n + 10) { seen.append(Threads.count) }
                        seen.append(Threads.count)
                        return (n, seen)
                    }
                }
            }
            for await (n, seen) in group {
                #expect(seen.dropLast(2).allSatisfy { $0 == n }, "task \(n) saw \(Set(seen))")
                #expect(seen[seen.count - 2] == n + 10 && seen.last == n)
            }
        }
        #expect(Threads.count == global)
    }

    @Test("a tensor with a gradient node crosses tasks; the node's gradient is guarded")
    func sendableTensor() async {
        let x = Tensor([1, 2, 3]).requiringGradient()
        let y = (x * x).sum()
        await Task.detached { y.backward() }.value
        #expect(x.grad?.scalars == [2, 4, 6])
    }
}

@Test("Memory.keepFreedMemory applies on glibc (the vq tool's setting)")
func keepFreedMemory() {
    #if os(Linux)
    #expect(Memory.keepFreedMemory())
    #endif
}

/// The default thread count honours the affinity mask and cgroup CPU quotas (containers, `taskset`).
@Suite("Processor count")
struct ProcessorCountTests {
    @Test("cgroup quotas: v2 cpu.max and v1 quota/period, rounded up; no limit when unlimited or unreadable")
    func quotas() {
        #expect(ProcessorQuota.cgroupLimit(v2: "200000 100000", v1Quota: nil, v1Period: nil) == 2)
        #expect(ProcessorQuota.cgroupLimit(v2: "150000 100000", v1Quota: nil, v1Period: nil) == 2)
        #expect(ProcessorQuota.cgroupLimit(v2: "50000 100000", v1Quota: nil, v1Period: nil) == 1)
        #expect(ProcessorQuota.cgroupLimit(v2: "max 100000", v1Quota: nil, v1Period: nil) == nil)
        #expect(ProcessorQuota.cgroupLimit(v2: nil, v1Quota: "-1", v1Period: "100000") == nil)
        #expect(ProcessorQuota.cgroupLimit(v2: nil, v1Quota: "300000", v1Period: "100000") == 3)
        #expect(ProcessorQuota.cgroupLimit(v2: "garbage", v1Quota: "x", v1Period: "0") == nil)
    }

    @Test("the default count is at least 1 and at most the online processors and the affinity mask")
    func defaultCount() {
        let online = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        #expect(Threads.defaultCount >= 1 && Threads.defaultCount <= online)
        let affinity = Int(vq_affinity_cpu_count())
        #if os(Linux)
        #expect(affinity >= 1 && Threads.defaultCount <= affinity)
        #endif
    }
}
