import VQNN
import VQTensor

/// Dead-code expiry (Dhariwal et al., *Jukebox*, 2020; the reference's `expire_codes_`): a code whose
/// EMA count fell below `threshold_ema_dead_code` is replaced by a random vector of the batch, with
/// `cluster_size = reset` and `embed_avg = vector · reset`. Frozen codes — by the mask, by
/// `freeze_codebook`, or by a weight of 0 for this step — are never replaced.
extension Codebook {
    /// Codes due for replacement: `cluster_size < threshold` and not frozen, flattened `[h · c]`.
    public func expiredCodes(frozenForStep: [Bool]? = nil) -> [Bool] {
        let threshold = Float(configuration.thresholdEMADeadCode)
        let frozen = frozenMask
        return clusterSize.value.scalars.enumerated().map { i, n in
            n < threshold && !frozen[i] && !(frozenForStep?[i] ?? false)
        }
    }

    /// Replaces expired codes with vectors of `flatten [h, n, d]` (rows where `valid`). Only in training
    /// mode and with a positive threshold, as the reference.
    public func expireCodes(_ flatten: Tensor, valid: [Bool]? = nil, frozenForStep: [Bool]? = nil) {
        guard configuration.thresholdEMADeadCode > 0, isTraining else { return }
        let expired = expiredCodes(frozenForStep: frozenForStep)
        guard expired.contains(true) else { return }
        let (h, n, d, c) = (flatten.shape[0], flatten.shape[1], flatten.shape[2], codebookSize)
        precondition(h == numCodebooks && d == dim, "expireCodes: batch \(flatten.shape) for codebooks [\(h), \(c), \(dim)]")
        let samplesAll = configuration.useCosineSimilarity ? flatten.l2Normalized(axis: -1, eps: 1e-6) : flatten
        let reset = Float(configuration.resetClusterSize ?? configuration.thresholdEMADeadCode)
        // Each dead code and the batch row that replaces it.
        var source = [Int: Int]()
        for hh in 0..<h {
            let rows = (0..<n).filter { valid?[hh * n + $0] ?? samplesAll.scalars[((hh * n + $0) * d)..<((hh * n + $0) * d + d)].allSatisfy(\.isFinite) }
            if rows.isEmpty { continue }
            var dead = (0..<c).filter { expired[hh * c + $0] }
            if dead.isEmpty { continue }
            if dead.count > rows.count {
                // More dead codes than vectors: replace a random subset now, the rest on later steps.
                dead = sampler(dead.count, rows.count, &rng).map { dead[$0] }.sorted()
            }
            let picks = sampler(rows.count, dead.count, &rng)
            for (k, code) in dead.enumerated() { source[hh * c + code] = (hh * n + rows[picks[k]]) * d }
        }
        // A replaced code keeps its frozen components and subspace coordinates (the gate); the sample gives the rest.
        samplesAll.withUnsafeScalars { ps in
            write(.expiry, rows: source.keys.sorted(), holding: frozenForStep, .all, touch: .codes) { w in
                let src = ps.baseAddress! + source[w.row]!
                for j in 0..<d {
                    w.code![j] = src[j]
                    w.average![j] = src[j] * reset
                }
                w.size![0] = reset
            }
        }
    }
}
