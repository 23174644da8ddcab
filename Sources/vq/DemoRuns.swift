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
    /// Share of the held-out 0–4 tokens whose code changed in stage 2.
    let churnA: Double
}

/// Both stages of the demo for one seed.
struct DemoSeed {
    let seed: UInt64
    let stage1: (mseA: Float, mseB: Float, used: Int)
    let stage1Model: DigitVQVAE
    let runs: [DemoRun]
    let curves: [String: [Float]]
    let policyFrozen: [(code: Int, step: Int)]
    let policyStage1: Float

    func run(_ v: DemoRun.Variant) -> DemoRun { runs.first { $0.variant == v }! }
}

/// The demo over several seeds: mean ± standard deviation per run, and which claims hold on every seed.
struct DemoSummary {
    let seeds: [DemoSeed]
    let stage1Codes: Int, stage2Codes: Int

    /// A claim about the runs and on how many seeds it held.
    struct Claim {
        let text: String
        let held: Int, of: Int
        var holds: Bool { held == of }
        /// `✓ claim (5/5 seeds)` or `✗ claim (3/5 seeds)`: the README quotes only lines that hold.
        var line: String { "\(holds ? "✓" : "✗") \(text) (\(held)/\(of) seeds)" }
    }

    var frozenIdentical: Bool { seeds.allSatisfy { $0.run(.codes).changed == 0 } }

    var claims: [Claim] {
        func claim(_ text: String, _ test: (DemoSeed) -> Bool) -> Claim { Claim(text: text, held: seeds.filter(test).count, of: seeds.count) }
        return [
            claim("every frozen stage-1 code is bit-identical after stage 2") { $0.run(.codes).changed == 0 },
            claim("codes frozen: fewer held-out 0–4 tokens change code than in the baseline") { $0.run(.codes).churnA < $0.run(.baseline).churnA },
            claim("codes frozen: digits 0–4 forget less than the baseline") { $0.run(.codes).mseA < $0.run(.baseline).mseA },
            claim("subspace frozen: digits 0–4 forget less than the baseline") { $0.run(.subspace).mseA < $0.run(.baseline).mseA },
            claim("converged policy: digits 0–4 forget less than the baseline") { $0.run(.policy).mseA < $0.run(.baseline).mseA },
            claim("baseline: digits 5–9 learned better than with the codes frozen") { $0.run(.baseline).mseB < $0.run(.codes).mseB },
            claim("subspace frozen: digits 5–9 learned worse than the baseline") { $0.run(.subspace).mseB > $0.run(.baseline).mseB },
            claim("every run ends with digits 5–9 better represented than after stage 1") { s in s.runs.allSatisfy { $0.mseB < s.stage1.mseB } },
        ]
    }

    static func stat(_ v: [Double], _ format: String) -> String {
        let mean = v.reduce(0, +) / Double(v.count)
        guard v.count > 1 else { return String(format: format, mean) }
        let sd = (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(v.count - 1)).squareRoot()
        return String(format: "\(format) ± \(format)", mean, sd)
    }

    var header: [String] { ["", "recon MSE 0–4", "recon MSE 5–9", "codes used (0–9)", "stage-1 codes changed", "0–4 tokens recoded"] }

    var cells: [[String]] {
        let s1 = seeds.map(\.stage1)
        var out = [["after stage 1", Self.stat(s1.map { Double($0.mseA) }, "%.4f"), Self.stat(s1.map { Double($0.mseB) }, "%.4f"),
                    Self.stat(s1.map { Double($0.used) }, "%.1f") + "/\(stage1Codes)", "", ""]]
        for v in DemoRun.Variant.allCases {
            let r = seeds.map { $0.run(v) }
            out.append(["after stage 2 (\(v.rawValue))", Self.stat(r.map { Double($0.mseA) }, "%.4f"), Self.stat(r.map { Double($0.mseB) }, "%.4f"),
                        Self.stat(r.map { Double($0.used) }, "%.1f") + "/\(stage2Codes)", Self.stat(r.map { Double($0.changed) }, "%.1f") + " of \(stage1Codes)",
                        Self.stat(r.map { 100 * $0.churnA }, "%.1f") + " %"])
        }
        return out
    }

    /// Fixed-width text lines: the title, then the table.
    var lines: [String] {
        let rows = [header] + cells
        let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        return ["mean ± standard deviation over \(seeds.count) seed\(seeds.count == 1 ? "" : "s") (\(seeds.map { String($0.seed) }.joined(separator: ", ")))"] + rows.map { row in
            String(row.enumerated().map { c, text in c == 0 ? text.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                : String(repeating: " ", count: widths[c] - text.count) + text }.joined(separator: "   ").reversed().drop { $0 == " " }.reversed())
        }
    }

    var html: String {
        var t = "<table style=\"border-collapse:collapse\"><tr>" + header.map { "<th style=\"padding:2px 10px;text-align:right\">\($0)</th>" }.joined() + "</tr>"
        for row in cells {
            t += "<tr>" + row.enumerated().map { c, v in "<td style=\"padding:2px 10px;white-space:nowrap;text-align:\(c == 0 ? "left" : "right")\">\(v)</td>" }.joined() + "</tr>"
        }
        t += "</table><p>Mean ± standard deviation over \(seeds.count) seeds. Claims, each checked on every seed:</p><ul>"
        t += claims.map { "<li style=\"color:\($0.holds ? "#2ca02c" : "#d62728")\">\($0.line)</li>" }.joined()
        return t + "</ul>"
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
