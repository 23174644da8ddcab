import Testing
import VQTensor

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
