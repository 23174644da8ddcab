import Foundation
import VQNN
import VQTensor

/// k-means for growing a codebook: new means fitted around fixed ones (FAISS's `frozen_centroids`), seeded and run
/// so that the grown codebook represents the new data at least as well as FAISS's.
///
/// Against FAISS's `Clustering` (random seeds, 25 Lloyd steps, an empty cluster re-seeded by splitting a large one):
/// - **Seeding by k-means++ against the fixed means** (Arthur & Vassilvitskii, *k-means++: The Advantages of Careful
///   Seeding*, 2007): each new mean starts at a row drawn with probability ∝ its squared distance to the nearest mean
///   chosen so far — the fixed ones included — so new means go where the old codes represent the data worst.
/// - **Lloyd steps until the objective stops falling** (relative gain below 1e-5, at most `maxIterations`).
/// - **An empty new mean is re-seeded at the worst-represented row** (the largest squared error), which takes that
///   row's error out of the objective at once.
///
/// The counts returned are those of an assignment to the final means, so a caller's `cluster_size` and
/// `embed_avg = mean · count` describe the means it writes.
extension KMeans {
    /// Fits the means where `fitting`; the others stay fixed and take part in every assignment. Of `restarts` runs
    /// from different seedings, the one with the lowest objective on `samples` is kept.
    ///
    /// - Parameters:
    ///   - samples: `[n, d]` vectors (l2-normalised for `.dot`).
    ///   - initial: `[k, d]` means; the fixed ones are used as they are, the fitted ones are seeded.
    ///   - fitting: `k` flags (`true`: fit this mean).
    ///   - maxIterations: the most Lloyd steps of each run.
    ///   - restarts: the runs (at least 1).
    ///   - metric: Euclidean, or dot product (updated means are l2-normalised).
    ///   - constrain: applied to the means after every update (partial freezes of a codebook).
    ///   - rng: the seedings' random source.
    /// - Returns: the means and the counts of the final assignment.
    /// - Complexity: O(restarts · (maxIterations + 1) · n · k · d) for the Lloyd steps, O(restarts · n · k_fit · d · log k_fit)
    ///   for the seeding.
    public static func fitGrowing(
        samples: Tensor, initial: Tensor, fitting: [Bool], maxIterations: Int, restarts: Int = 1, metric: CodeMetric = .euclidean,
        constrain: ((inout [Float]) -> Void)? = nil, rng: inout SeededGenerator
    ) -> (means: Tensor, counts: Tensor) {
        precondition(samples.rank == 2 && initial.rank == 2 && samples.shape[1] == initial.shape[1] && fitting.count == initial.shape[0],
                     "KMeans.fitGrowing: samples \(samples.shape), means \(initial.shape), \(fitting.count) flags")
        precondition(restarts >= 1, "KMeans.fitGrowing: restarts \(restarts)")
        let (n, k, d) = (samples.shape[0], initial.shape[0], initial.shape[1])
        let free = (0..<k).filter { fitting[$0] }
        guard n > 0, !free.isEmpty else { return (initial, Tensor(assign(samples, initial, metric: metric).counts.map(Float.init), shape: [k])) }
        let fixed = (0..<k).filter { !fitting[$0] }
        // Each row's squared distance to the nearest fixed mean (the fast search), where k-means++ starts.
        var nearest = [Double](repeating: .infinity, count: n)
        if !fixed.isEmpty {
            let kept = fixed.flatMap { initial.scalars[($0 * d)..<($0 * d + d)] }
            nearest = assign(samples, Tensor(kept, shape: [fixed.count, d]), metric: .euclidean).errors
        }
        let norms = samples.scalars.withUnsafeBufferPointer { p in
            (0..<n).map { i in (0..<d).reduce(Float(0)) { $0 + p[i * d + $1] * p[i * d + $1] } }
        }
        var best: (objective: Double, means: [Float], counts: [Int])?
        for _ in 0..<restarts {
            var means = initial.scalars
            seed(free, into: &means, samples: samples, norms: norms, nearest: nearest, rng: &rng)
            constrain?(&means)
            let run = lloyd(samples, means: means, fitting: fitting, free: free, maxIterations: maxIterations, metric: metric, constrain: constrain)
            if best == nil || run.objective < best!.objective { best = run }
        }
        return (Tensor(best!.means, shape: [k, d]), Tensor(best!.counts.map(Float.init), shape: [k]))
    }

    /// Lloyd steps from `means` until the objective's relative gain falls below 1e-5 (or `maxIterations`).
    private static func lloyd(_ samples: Tensor, means start: [Float], fitting: [Bool], free: [Int], maxIterations: Int, metric: CodeMetric,
                              constrain: ((inout [Float]) -> Void)?) -> (objective: Double, means: [Float], counts: [Int]) {
        let (n, k, d) = (samples.shape[0], fitting.count, samples.shape[1])
        let x = samples.scalars
        var means = start
        var previous = Double.infinity
        var result = assign(samples, Tensor(means, shape: [k, d]), metric: metric)
        for _ in 0..<maxIterations {
            let objective = result.errors.reduce(0, +)
            if previous.isFinite && previous - objective <= 1e-5 * previous { break }
            previous = objective
            // New means of the fitted codes: the average of their rows (accumulated in double, in row order).
            var sums = [Double](repeating: 0, count: k * d)
            for i in 0..<n {
                let c = result.indices[i]
                guard fitting[c] else { continue }
                for j in 0..<d { sums[c * d + j] += Double(x[i * d + j]) }
            }
            for c in free where result.counts[c] > 0 {
                for j in 0..<d { means[c * d + j] = Float(sums[c * d + j] / Double(result.counts[c])) }
                if metric == .dot { means.withUnsafeMutableBufferPointer { Tensor.l2NormalizeRows($0.baseAddress! + c * d, rows: 1, d: d, eps: 1e-6) } }
            }
            // An empty fitted mean moves to the worst-represented row (each empty to a different one).
            let empty = free.filter { result.counts[$0] == 0 }
            if !empty.isEmpty {
                let worst = (0..<n).sorted { (result.errors[$0], $1) > (result.errors[$1], $0) }.prefix(empty.count)
                for (c, row) in zip(empty, worst) { for j in 0..<d { means[c * d + j] = x[row * d + j] } }
                previous = .infinity
            }
            constrain?(&means)
            result = assign(samples, Tensor(means, shape: [k, d]), metric: metric)
        }
        return (result.errors.reduce(0, +), means, result.counts)
    }

    /// Greedy k-means++ seeding of the means `free` (each step draws `2 + ⌊ln k⌋` candidate rows ∝ `nearest`, the squared
    /// distance to the nearest mean so far, and keeps the one that lowers the total most), the candidates' distances to
    /// every row by one matrix product.
    private static func seed(_ free: [Int], into means: inout [Float], samples: Tensor, norms: [Float], nearest start: [Double],
                             rng: inout SeededGenerator) {
        let (n, d) = (samples.shape[0], samples.shape[1])
        let x = samples.scalars
        var nearest = start
        let tries = 2 + Int(log(Double(free.count)))
        for c in free {
            let finite = nearest.allSatisfy(\.isFinite)
            let total = finite ? nearest.reduce(0, +) : 0
            let candidates: [Int] = (0..<tries).map { _ in
                guard total > 0 else { return rng.nextInt(below: n) }
                var target = Double.random(in: 0..<total, using: &rng), i = 0
                while i < n - 1 && target >= nearest[i] { target -= nearest[i]; i += 1 }
                return i
            }
            // ‖x − y‖² = ‖x‖² + ‖y‖² − 2 x·y for every row x and candidate y: [n, tries].
            let picked = Tensor(candidates.flatMap { x[($0 * d)..<($0 * d + d)] }, shape: [tries, d])
            let dots = samples.matmul(transposed: picked).scalars
            var bestTotal = Double.infinity, bestCandidate = 0
            var bestRow = [Double]()
            for (t, row) in candidates.enumerated() {
                var sum = 0.0
                var lowered = nearest
                for i in 0..<n {
                    let dist = Double(Swift.max(0, norms[i] + norms[row] - 2 * dots[i * tries + t]))
                    lowered[i] = Swift.min(lowered[i], dist)
                    sum += lowered[i]
                }
                if sum < bestTotal { (bestTotal, bestCandidate, bestRow) = (sum, t, lowered) }
            }
            let row = candidates[bestCandidate]
            for j in 0..<d { means[c * d + j] = x[row * d + j] }
            nearest = bestRow
        }
    }

    /// The nearest mean of every row, its squared error and the counts.
    private static func assign(_ samples: Tensor, _ means: Tensor, metric: CodeMetric) -> (indices: [Int], errors: [Double], counts: [Int]) {
        let (n, k) = (samples.shape[0], means.shape[0])
        let (idx, errors) = samples.unsqueezed(axis: 0).nearestCodesAndSquaredErrorsPerHead(means.unsqueezed(axis: 0), metric: metric)
        var counts = [Int](repeating: 0, count: k)
        for i in 0..<n { counts[idx.scalars[i]] += 1 }
        return (idx.scalars, errors, counts)
    }
}
