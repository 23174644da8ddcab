import Foundation
import VQTensor

/// LFQ's entropy terms without the `[n, 2^K]` probability matrix.
///
/// With codes `c ∈ {−s, +s}^K`, the reference's code distribution `softmax_c(2τ·x·c)` factorises over the
/// bits: `p(c) = Π_k q_k(c_k)` with `q_k(+) = σ(4τ·s·x_k)` (Yu et al., *Language Model Beats Diffusion*,
/// MAGVIT-v2, 2023, §3.1). The clamped entropies the reference takes (`−Σ p·log(max(p, 1e-5))`, of each
/// sample's distribution and of the batch average) do not factorise because of the clamp, so they are
/// computed exactly — per sample, `p` and `log p` of all `2^K` codes are built by doubling from the bits
/// (`2^(K+1)` operations, in double precision, no transcendental function per code), used, and dropped.
/// The backward recomputes them, and folds `∂H/∂p · p` over the bits in `2^(K+1)` operations:
/// `∂H/∂x_k = 4τs (Σ_{c: c_k = +} w_c − q_k(+)·Σ_c w_c)` with `w_c = p_c ∂H/∂p_c`.
///
/// - Complexity: O(n · 2^K) time for each of the forward and the backward, O(2^K) memory per thread plus
///   the batch average — instead of O(n · 2^K) memory.
enum FactorizedEntropy {
    /// `log(1e-5)` as the reference's clamp in float32 gives it.
    static let logEps = Double(log(Float(1e-5)))
    static let eps = Double(Float(1e-5))
    /// Samples per chunk of the batch sum: fixed, so results do not depend on the thread count.
    static let chunk = 64

    /// `(per-sample entropy, batch entropy)` of `rows [n, g, K]` (n samples, g codebooks, K bits) with bit
    /// slope `slope = 4τs`: each averaged over samples and codebooks as the reference's `.mean()`.
    static func losses(_ rows: Tensor, slope: Float) -> (perSample: Tensor, batch: Tensor) {
        let (n, g, k) = (rows.shape[0], rows.shape[1], rows.shape[2])
        precondition(k >= 1 && k <= 24, "FactorizedEntropy: \(k) bits")
        let x = rows.detached()
        // Forward: per-sample entropies and the batch average of p, per codebook.
        let (sampleSum, average) = forward(x, n: n, g: g, k: k, slope: Double(slope))
        let perSampleValue = Tensor(Float(sampleSum / Double(max(n * g, 1))))
        let size = 1 << k
        var batchValue = 0.0
        var batchGrad = [Double](repeating: 0, count: g * size)   // ∂(batch)/∂avg, per codebook
        for gg in 0..<g {
            var h = 0.0
            for c in 0..<size {
                let a = average[gg * size + c]
                let la = max(a > 0 ? log(a) : -.infinity, logEps)
                h -= a * la
                batchGrad[gg * size + c] = -(la + (a >= eps ? 1 : 0)) / Double(g)
            }
            batchValue += h / Double(g)
        }
        let perSample = Tensor.custom(perSampleValue, input: rows) { upstream in
            let scale = Double(upstream.item) / Double(max(n * g, 1))
            return backward(x, n: n, g: g, k: k, slope: Double(slope)) { c, logp, p in
                -(max(logp, logEps) + (p >= eps ? 1 : 0)) * scale
            }
        }
        let gradByAverage = batchGrad
        let batch = Tensor.custom(Tensor(Float(batchValue)), input: rows) { upstream in
            let scale = Double(upstream.item) / Double(max(n, 1))
            return backward(x, n: n, g: g, k: k, slope: Double(slope)) { c, _, _ in gradByAverage[c] * scale }
        }
        return (perSample, batch)
    }

    /// `log q_k(+)` and `log q_k(−)` of one sample's bits.
    @inline(__always)
    static func bitLogs(_ x: UnsafePointer<Float>, k: Int, slope: Double, _ plus: inout [Double], _ minus: inout [Double]) {
        for j in 0..<k {
            let z = slope * Double(x[j])
            // log σ(z) = −softplus(−z), log σ(−z) = −softplus(z), stable for any z
            plus[j] = -softplus(-z)
            minus[j] = -softplus(z)
        }
    }

    @inline(__always)
    static func softplus(_ z: Double) -> Double { z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)) }

    /// `log p` and `p` of every code of one sample, MSB-first (code index = the bit pattern, first bit
    /// highest), by doubling: entry `i` becomes `2i` (bit 0) and `2i + 1` (bit 1).
    @inline(__always)
    static func build(_ plus: [Double], _ minus: [Double], k: Int, logp: UnsafeMutablePointer<Double>, p: UnsafeMutablePointer<Double>) {
        logp[0] = 0
        p[0] = 1
        var width = 1
        for j in 0..<k {
            let (lp, lm) = (plus[j], minus[j])
            let (qp, qm) = (exp(lp), exp(lm))
            for i in stride(from: width - 1, through: 0, by: -1) {
                let l = logp[i], v = p[i]
                logp[2 * i] = l + lm
                logp[2 * i + 1] = l + lp
                p[2 * i] = v * qm
                p[2 * i + 1] = v * qp
            }
            width *= 2
        }
    }

    static func forward(_ x: Tensor, n: Int, g: Int, k: Int, slope: Double) -> (sampleSum: Double, average: [Double]) {
        let size = 1 << k
        let chunks = (n + chunk - 1) / chunk
        var partialAverage = [[Double]](repeating: [], count: chunks)
        var partialEntropy = [Double](repeating: 0, count: chunks)
        x.withUnsafeScalars { px in
            let base = px.baseAddress!
            partialAverage.withUnsafeMutableBufferPointer { pa in
                partialEntropy.withUnsafeMutableBufferPointer { pe in
                    let pa = pa, pe = pe
                    Threads.forEach(chunks) { ci in
                        var acc = [Double](repeating: 0, count: g * size)
                        var entropy = 0.0
                        var logp = [Double](repeating: 0, count: size), prob = [Double](repeating: 0, count: size)
                        var plus = [Double](repeating: 0, count: k), minus = [Double](repeating: 0, count: k)
                        for s in (ci * chunk)..<min(n, (ci + 1) * chunk) {
                            for gg in 0..<g {
                                bitLogs(base + (s * g + gg) * k, k: k, slope: slope, &plus, &minus)
                                logp.withUnsafeMutableBufferPointer { lp in
                                    prob.withUnsafeMutableBufferPointer { pp in
                                        build(plus, minus, k: k, logp: lp.baseAddress!, p: pp.baseAddress!)
                                        acc.withUnsafeMutableBufferPointer { a in
                                            let row = a.baseAddress! + gg * size
                                            for c in 0..<size {
                                                let p = pp[c]
                                                entropy -= p * max(lp[c], logEps)
                                                row[c] += p
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        pa[ci] = acc
                        pe[ci] = entropy
                    }
                }
            }
        }
        var average = [Double](repeating: 0, count: g * size)
        for part in partialAverage { for i in average.indices { average[i] += part[i] } }
        for i in average.indices { average[i] /= Double(max(n, 1)) }
        return (partialEntropy.reduce(0, +), average)
    }

    /// `∂L/∂x` for a loss whose derivative by `p` of code `c` of codebook `g` is `weight(g·2^K + c, log p, p)`.
    static func backward(_ x: Tensor, n: Int, g: Int, k: Int, slope: Double,
                         weight: @escaping (Int, Double, Double) -> Double) -> Tensor {
        let size = 1 << k
        var out = [Float](repeating: 0, count: n * g * k)
        x.withUnsafeScalars { px in
            let base = px.baseAddress!
            out.withUnsafeMutableBufferPointer { po in
                let po = po
                Threads.forEach((n + chunk - 1) / chunk) { ci in
                    var logp = [Double](repeating: 0, count: size), w = [Double](repeating: 0, count: size)
                    var prob = [Double](repeating: 0, count: size)
                    var plus = [Double](repeating: 0, count: k), minus = [Double](repeating: 0, count: k)
                    for s in (ci * chunk)..<min(n, (ci + 1) * chunk) {
                        for gg in 0..<g {
                            let xs = base + (s * g + gg) * k
                            bitLogs(xs, k: k, slope: slope, &plus, &minus)
                            logp.withUnsafeMutableBufferPointer { lp in
                                prob.withUnsafeMutableBufferPointer { pp in
                                    build(plus, minus, k: k, logp: lp.baseAddress!, p: pp.baseAddress!)
                                }
                                var total = 0.0
                                for c in 0..<size {
                                    let l = lp[c], p = prob[c]
                                    let v = p * weight(gg * size + c, l, p)
                                    w[c] = v
                                    total += v
                                }
                                // Fold over the bits, LSB first: A_j = Σ over codes with bit j set.
                                var width = size
                                for j in stride(from: k - 1, through: 0, by: -1) {
                                    var setSum = 0.0
                                    let half = width / 2
                                    for i in 0..<half {
                                        setSum += w[2 * i + 1]
                                        w[i] = w[2 * i] + w[2 * i + 1]
                                    }
                                    width = half
                                    let qPlus = exp(plus[j])
                                    po[(s * g + gg) * k + j] = Float(slope * (setSum - qPlus * total))
                                }
                            }
                        }
                    }
                }
            }
        }
        return Tensor(out, shape: [n, g, k])
    }
}
