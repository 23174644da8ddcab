import Foundation
import VQTensor

/// One stage-2 run of the demo and what it measured.
struct DemoRun {
    enum Variant: String, CaseIterable {
        case codes = "codes frozen", baseline, subspace = "subspace frozen", policy = "converged policy"
    }
    let variant: Variant
    let model: DigitVQVAE
    let losses: [Float]
    /// Held-out error on digits 0–4 during stage 2.
    let forgetting: [(step: Int, mse: Float)]
    let mseA: Float, mseB: Float
    let used: Int
    /// Stage-1 codes whose bits changed in stage 2.
    let changed: Int
}

/// The demo's summary table, printed and put in the report.
struct DemoTable {
    let stage1: (mseA: Float, mseB: Float, used: Int)
    let stage1Codes: Int, stage2Codes: Int
    let runs: [DemoRun]

    var header: [String] { ["", "recon MSE 0–4", "recon MSE 5–9", "codes used (0–9)", "stage-1 codes changed"] }

    var cells: [[String]] {
        var out = [["after stage 1", String(format: "%.4f", stage1.mseA), String(format: "%.4f", stage1.mseB), "\(stage1.used)/\(stage1Codes)", ""]]
        for r in runs {
            out.append(["after stage 2 (\(r.variant.rawValue))", String(format: "%.4f", r.mseA), String(format: "%.4f", r.mseB),
                        "\(r.used)/\(stage2Codes)", "\(r.changed) of \(stage1Codes)"])
        }
        return out
    }

    /// Fixed-width text lines.
    var lines: [String] {
        let rows = [header] + cells
        let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { c, text in c == 0 ? text.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                : String(repeating: " ", count: widths[c] - text.count) + text }.joined(separator: "   ")
        }
    }

    var html: String {
        var t = "<table style=\"border-collapse:collapse\"><tr>" + header.map { "<th style=\"padding:2px 10px;text-align:right\">\($0)</th>" }.joined() + "</tr>"
        for row in cells {
            t += "<tr>" + row.enumerated().map { c, v in "<td style=\"padding:2px 10px;text-align:\(c == 0 ? "left" : "right")\">\(v)</td>" }.joined() + "</tr>"
        }
        return t + "</table>"
    }
}

/// Small linear algebra for the demo.
enum Analysis {
    /// An orthonormal basis `[rank, d]` of the principal subspace of the rows of `x` `[n, d]`: the top
    /// eigenvectors of `xᵀx` (the subspace the rows span most), by cyclic Jacobi rotations in double precision.
    static func principalSubspace(of x: Tensor, rank: Int) -> Tensor {
        let (n, d) = (x.shape[0], x.shape[1])
        var a = [Double](repeating: 0, count: d * d)
        for r in 0..<n {
            for i in 0..<d {
                for j in 0..<d { a[i * d + j] += Double(x.scalars[r * d + i]) * Double(x.scalars[r * d + j]) }
            }
        }
        var v = [Double](repeating: 0, count: d * d)
        for i in 0..<d { v[i * d + i] = 1 }
        for _ in 0..<60 {
            var off = 0.0
            for p in 0..<d { for q in (p + 1)..<d { off += a[p * d + q] * a[p * d + q] } }
            if off < 1e-24 { break }
            for p in 0..<d {
                for q in (p + 1)..<d where abs(a[p * d + q]) > 1e-300 {
                    let theta = (a[q * d + q] - a[p * d + p]) / (2 * a[p * d + q])
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<d {
                        let akp = a[k * d + p], akq = a[k * d + q]
                        a[k * d + p] = c * akp - s * akq
                        a[k * d + q] = s * akp + c * akq
                    }
                    for k in 0..<d {
                        let apk = a[p * d + k], aqk = a[q * d + k]
                        a[p * d + k] = c * apk - s * aqk
                        a[q * d + k] = s * apk + c * aqk
                    }
                    for k in 0..<d {
                        let vkp = v[k * d + p], vkq = v[k * d + q]
                        v[k * d + p] = c * vkp - s * vkq
                        v[k * d + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<d).sorted { a[$0 * d + $0] > a[$1 * d + $1] }.prefix(rank)
        return Tensor(order.flatMap { col in (0..<d).map { Float(v[$0 * d + col]) } }, shape: [rank, d])
    }
}
