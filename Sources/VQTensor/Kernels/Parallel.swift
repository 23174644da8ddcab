import CVQKernels
import Dispatch
import Foundation
import Synchronization

/// The number of threads the kernels use. Defaults to the number of active cores.
///
/// Work is split so that every output element is computed by exactly one thread in a fixed order,
/// so results are bit-identical for any thread count.
public enum Threads {
    private static let storage = Atomic<Int>(0)

    /// A thread count for the current task only (``with(_:_:)``); takes precedence over the process-wide one.
    @TaskLocal static var scoped: Int? = nil

    /// The current thread count (≥ 1): the task's own (``with(_:_:)``), else the process-wide setting,
    /// else the active cores.
    public static var count: Int {
        get {
            if let s = scoped { return s }
            let v = storage.load(ordering: .relaxed)
            return v > 0 ? v : defaultCount
        }
        set {
            precondition(newValue >= 1, "Threads.count must be ≥ 1, got \(newValue)")
            storage.store(newValue, ordering: .relaxed)
        }
    }

    /// Active processors at start-up.
    public static let defaultCount: Int = max(1, activeProcessorCount())

    /// Runs `body` with `n` threads. The setting is task-local: concurrent tasks (tests running in
    /// parallel) each see their own, and nesting restores the outer value.
    public static func with<R>(_ n: Int, _ body: () throws -> R) rethrows -> R {
        precondition(n >= 1, "Threads.with: thread count must be ≥ 1, got \(n)")
        return try $scoped.withValue(n) { try body() }
    }

    /// Calls `body(task)` for `task` in `0..<tasks`, spread over up to `count` threads.
    /// Each task must write only its own outputs.
    public static func forEach(_ tasks: Int, _ body: (Int) -> Void) {
        let threads = min(count, tasks)
        if threads <= 1 {
            for t in 0..<tasks { body(t) }
            return
        }
        // Hand tasks out dynamically: uneven tasks balance, and results do not depend on who ran what.
        let next = Atomic<Int>(0)
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let work = body
            DispatchQueue.concurrentPerform(iterations: threads) { _ in
                while true {
                    let t = next.add(1, ordering: .relaxed).oldValue

                    if t >= tasks { break }
                    work(t)
                }
            }
        }
    }

    /// Splits `0..<n` into contiguous chunks of at least `minChunk` items and runs them in parallel.
    /// Chunk boundaries do not depend on the thread count only when `body` computes independent outputs.
    public static func forRanges(_ n: Int, minChunk: Int, _ body: (Range<Int>) -> Void) {
        guard n > 0 else { return }
        let threads = count
        let chunks = max(1, min(threads, n / max(minChunk, 1)))
        if chunks == 1 {
            body(0..<n)
            return
        }
        let per = (n + chunks - 1) / chunks
        forEach(chunks) { c in
            let lo = c * per
            let hi = min(n, lo + per)
            if lo < hi { body(lo..<hi) }
        }
    }
}

/// The processors this process may use: the online ones, fewer when the CPU affinity mask allows fewer (`taskset`,
/// container cpusets) or a cgroup CPU quota caps the time (`docker --cpus 2`: cgroup v2 `cpu.max`, v1
/// `cpu.cfs_quota_us / cpu.cfs_period_us`, rounded up).
func activeProcessorCount() -> Int {
    var count = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    let allowed = Int(vq_affinity_cpu_count())
    if allowed > 0 { count = min(count, allowed) }
    #if os(Linux)
    if let quota = ProcessorQuota.cgroupLimit(v2: ProcessorQuota.read("/sys/fs/cgroup/cpu.max"),
                                              v1Quota: ProcessorQuota.read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                                              v1Period: ProcessorQuota.read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")) {
        count = min(count, quota)
    }
    #endif
    return max(1, count)
}

/// Parsing of cgroup CPU quotas (separate from the file reads, so that tests give it any text).
enum ProcessorQuota {
    /// The whole CPUs a quota allows (rounded up), or nil for no limit: v2 `cpu.max` is `"max 100000"` or
    /// `"QUOTA PERIOD"`; v1 gives the quota (-1: none) and the period in two files.
    static func cgroupLimit(v2: String?, v1Quota: String?, v1Period: String?) -> Int? {
        func limit(_ quota: String?, _ period: String?) -> Int? {
            guard let q = quota.flatMap({ Int($0) }), let p = period.flatMap({ Int($0) }), q > 0, p > 0 else { return nil }
            return max(1, (q + p - 1) / p)
        }
        if let v2 {
            let parts = v2.split(separator: " ").map(String.init)
            if parts.count == 2, let l = limit(parts[0], parts[1]) { return l }
        }
        return limit(v1Quota, v1Period)
    }

    /// A small text file's first line, trimmed, or nil.
    static func read(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var buffer = [CChar](repeating: 0, count: 128)
        guard fgets(&buffer, Int32(buffer.count), f) != nil else { return nil }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
