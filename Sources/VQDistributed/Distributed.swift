import Dispatch
import Foundation
import Synchronization
import VQNN
#if MPI && canImport(CMPIShim)
import CMPIShim
#endif

/// Errors of the distributed runtime.
public enum DistributedError: Error, CustomStringConvertible {
    case unavailable
    case initialization(Int32)

    public var description: String {
        switch self {
        case .unavailable:
            return "this build has no MPI support: build with `swift build -c release --traits MPI` (needs Debian's libopenmpi-dev) and start with mpirun"
        case .initialization(let rc): return "MPI_Init failed with code \(rc)"
        }
    }
}

/// Entry points of data-parallel training.
public enum Distributed {
    /// Whether this build links Open MPI (the `MPI` package trait).
    public static var isAvailable: Bool {
        #if MPI && canImport(CMPIShim)
        return true
        #else
        return false
        #endif
    }

    /// Ends MPI on a successful run (a no-op without MPI). A process that exits without it — a crash — makes
    /// `mpirun` terminate the other ranks at once.
    public static func finalize(_ c: any Collective) {
        #if MPI && canImport(CMPIShim)
        (c as? MPICollective)?.finalize()
        #endif
    }

    /// The world communicator of `mpirun` (a single process when started without it). A collective that
    /// does not complete within `timeout` seconds — a peer died or hangs — aborts every rank with a
    /// message naming the operation.
    public static func world(timeout: Double = 120) throws -> any Collective {
        #if MPI && canImport(CMPIShim)
        return try MPICollective(timeout: timeout)
        #else
        throw DistributedError.unavailable
        #endif
    }
}

#if MPI && canImport(CMPIShim)
/// ``Collective`` over Open MPI's `MPI_COMM_WORLD`. Reductions go to rank 0 in rank order and are then
/// broadcast, so every rank holds identical bits.
public final class MPICollective: Collective {
    public let rank: Int
    public let worldSize: Int
    let timeout: Double
    private final class Counter: Sendable { let value = Atomic<Int>(0) }
    private let counter = Counter()

    public init(timeout: Double) throws {
        let rc = vqmpi_init()
        guard rc == 0 else { throw DistributedError.initialization(rc) }
        rank = Int(vqmpi_rank())
        worldSize = Int(vqmpi_size())
        self.timeout = timeout
    }

    /// Ends MPI after a successful run. A rank that exits without it (a crash) makes `mpirun` stop the job.
    public func finalize() { vqmpi_finalize() }

    /// Runs `body`; if it has not returned after the timeout, every rank is aborted with a clear message.
    private func guarded<R>(_ what: String, _ body: () -> R) -> R {
        let counter = self.counter
        let g = counter.value.add(1, ordering: .relaxed).newValue
        let (rank, timeout) = (self.rank, self.timeout)
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
            if counter.value.load(ordering: .relaxed) == g {
                FileHandle.standardError.write(Data("vq: rank \(rank): \(what) did not complete within \(Int(timeout)) s (a peer died or hangs); aborting\n".utf8))
                vqmpi_abort(3)
            }
        }
        defer { counter.value.add(1, ordering: .relaxed) }
        return body()
    }

    public func allReduceSum(_ values: inout [Float]) {
        let n = values.count
        let rc = guarded("all-reduce of \(n) floats") { values.withUnsafeMutableBufferPointer { vqmpi_allreduce_sum_ordered($0.baseAddress, Int64(n)) } }
        check(rc, "all-reduce")
    }

    public func broadcast(_ values: inout [Float], root: Int) {
        let n = values.count
        let rc = guarded("broadcast") { values.withUnsafeMutableBufferPointer { vqmpi_bcast_float($0.baseAddress, Int64(n), Int32(root)) } }
        check(rc, "broadcast")
    }

    public func allGather(_ values: [Float]) -> [[Float]] {
        var counts = [Int64](repeating: 0, count: worldSize)
        check(guarded("all-gather (sizes)") { vqmpi_allgather_count(Int64(values.count), &counts) }, "all-gather")
        var out = [Float](repeating: 0, count: Int(counts.reduce(0, +)))
        let rc = guarded("all-gather of \(out.count) floats") {
            values.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { o in vqmpi_allgatherv_float(s.baseAddress, Int64(values.count), o.baseAddress, counts) } }
        }
        check(rc, "all-gather")
        var parts: [[Float]] = []
        var off = 0
        for c in counts {
            parts.append(Array(out[off..<(off + Int(c))]))
            off += Int(c)
        }
        return parts
    }

    private func check(_ rc: Int32, _ what: String) {
        if rc != 0 {
            FileHandle.standardError.write(Data("vq: rank \(rank): MPI \(what) failed with code \(rc); aborting\n".utf8))
            vqmpi_abort(rc)
        }
    }
}
#endif
