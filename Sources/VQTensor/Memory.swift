import CVQKernels

/// Process-wide memory settings for training loops.
public enum Memory {
    /// Keeps freed tensor memory in the process for reuse (glibc's allocator: tensors up to `largestBlock`
    /// bytes come from the heap rather than fresh mappings, and the heap is returned to the system only
    /// above `trimAbove` bytes free). A loop that frees and reallocates the same large tensors every step
    /// then reuses warm pages instead of faulting in and zeroing new ones — measured 1.3–1.5× faster on the
    /// training benchmarks (Benchmarks/README.md). Process-wide, so opt-in: the `vq` tool calls it at start.
    /// Returns whether it applied (false on other C libraries).
    @discardableResult
    public static func keepFreedMemory(largestBlock: Int = 256 << 20, trimAbove: Int = 1 << 30) -> Bool {
        vq_keep_freed_memory(Int64(largestBlock), Int64(trimAbove)) != 0
    }

    /// Returns the memory ``keepFreedMemory(largestBlock:trimAbove:)`` kept to the system now (between phases
    /// of a program, or before measuring a peak). Returns whether any was released.
    @discardableResult
    public static func releaseFreedMemory() -> Bool { vq_release_freed_memory() != 0 }
}
