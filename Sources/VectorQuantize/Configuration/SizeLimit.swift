/// The largest tensor a configuration may ask for, checked before anything is allocated, so a size read
/// from a file or a command line (`codebook_size: 1e12`, `--fsq-levels 1048576,1048576,…`) is one clear
/// error instead of an overflow trap or a 500 GB allocation.
public enum SizeLimit {
    /// 2³¹ − 1 values per tensor (8 GiB of Float32).
    public static let maxElements = Int(Int32.max)

    /// The product of positive `factors` when it is at most ``maxElements``; `nil` when a factor is not
    /// positive or the product is larger (no overflow).
    public static func product(_ factors: [Int]) -> Int? {
        var p = 1
        for f in factors {
            guard f > 0 else { return nil }
            let (r, o) = p.multipliedReportingOverflow(by: f)
            guard !o, r <= maxElements else { return nil }
            p = r
        }
        return p
    }
}

/// The mixed-radix place values of an implicit grid codebook (FSQ, FSP, LatentQuantize): code index
/// `Σ digitᵢ · basisᵢ` with `basis = [1, L₀, L₀L₁, …]`.
func mixedRadixBasis(_ levels: [Int]) -> [Int] {
    var b = [1]
    for l in levels.dropLast() { b.append(b.last! &* l) }
    return b
}
