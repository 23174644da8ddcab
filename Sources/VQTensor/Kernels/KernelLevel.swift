import CVQKernels
import Foundation

/// Which micro-kernels run on this machine: detected at start, lowered by the environment variable
/// `VQ_KERNEL_LEVEL` (0, 1, 2 or 3) when set, so that every path can be tested (and reported) on one machine.
public enum KernelLevel {
    /// 0 portable C, 1 AVX2 + FMA, 2 AVX-512, 3 AVX-512 with the BF16 nearest-code screen (VNNI, BF16).
    public static var current: Int { Int(GEMM.level) }

    /// Why `VQ_KERNEL_LEVEL` cannot be used, or `nil` when it is unset or one of `0`, `1`, `2`, `3`. The kernels ignore
    /// any other value (they run at this CPU's level); a tool should refuse it rather than run a level it was not asked for.
    ///
    /// ```swift
    /// // VQ_KERNEL_LEVEL=portable
    /// KernelLevel.environmentProblem   // "VQ_KERNEL_LEVEL 'portable': expected 0, 1, 2 or 3 …"
    /// ```
    public static var environmentProblem: String? {
        guard let value = ProcessInfo.processInfo.environment["VQ_KERNEL_LEVEL"], !["0", "1", "2", "3"].contains(value) else { return nil }
        return "VQ_KERNEL_LEVEL '\(value)': expected 0, 1, 2 or 3 (a level to lower the kernels to: 0 portable C, 1 AVX2 + FMA, "
            + "2 AVX-512, 3 AVX-512 + BF16/VNNI); unset it to run this CPU's own (\(name))"
    }

    /// A readable name of ``current``, e.g. `"AVX-512 (level 2)"`; a level-2 CPU with VNNI (which screens the
    /// nearest-code search with 8-bit quads) is `"AVX-512 + VNNI (level 2)"`.
    public static var name: String {
        let names = ["portable C", "AVX2 + FMA", "AVX-512", "AVX-512 + BF16/VNNI"]
        let vnni = current == 2 && NearestCodeKernel.ScreenFormat.int8.runsNatively ? " + VNNI" : ""
        return "\(names[min(max(current, 0), names.count - 1)])\(vnni) (level \(current))"
    }
}
