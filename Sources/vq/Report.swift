import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// The demo's self-contained HTML report: inline SVG figures, no scripts, no external files.
enum Report {
    static func write(to url: URL, curves: [String: [Float]], runs: [DemoRun], table: DemoTable, stage1Codes: Int, images: Tensor,
                      testA: Tensor, testB: Tensor, subspace: (rank: Int, dim: Int),
                      policy: (tolerance: Float, patience: Int, frozen: [(code: Int, step: Int)], mseWith: Float, mseWithout: Float, steps: Int)) throws {
        let frozen = runs.first { $0.variant == .codes }!, baseline = runs.first { $0.variant == .baseline }!
        let sampleA = testA.slice(axis: 0, 0..<min(12, testA.shape[0]))
        let sampleB = testB.slice(axis: 0, 0..<min(12, testB.shape[0]))
        func run(_ v: DemoRun.Variant) -> DemoRun { runs.first { $0.variant == v }! }
        let f = { (x: Float) in String(format: "%.4f", x) }
        var html = """
        <!doctype html><html><head><meta charset="utf-8"><title>vq demo: staged training with frozen codes</title>
        <style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
        h2{margin-top:1.6em}figure{margin:0}figcaption{color:#555;font-size:.9em}.legend span{margin-right:1.2em}</style>
        </head><body>
        <h1>Staged training with frozen codes</h1>
        <p>A small VQ-VAE learns digits 0–4 (stage 1, \(stage1Codes) codes), then its codebook grows to \(frozen.model.vq.codebookSize) codes
        and it learns digits 5–9 (stage 2) from the same stage-1 state four ways: with every stage-1 code frozen, without freezing
        (baseline), with the principal subspace of the stage-1 codes frozen, and with codes frozen by a converged-code policy.
        Data: UCI optical handwritten digits (Alpaydin &amp; Kaynak, 1998, CC BY 4.0).</p>
        <h2>Summary</h2>
        """
        html += table.html
        html += "<h2>Forgetting: held-out error on digits 0–4 during stage 2</h2>"
        html += seriesChart(runs.map { r in (r.variant.rawValue, colors["stage 2 \(r.variant.rawValue)"] ?? "black", r.forgetting.map { (Double($0.step), Double($0.mse)) }) },
                            reference: Double(table.stage1.mseA), xLabel: "stage-2 step", yLabel: "recon MSE 0–4")
        html += "<p>The dashed line is the error after stage 1. A run that stays near it has not forgotten the old digits.</p>"
        html += "<h2>Use 1: codes that are already learned stay fixed</h2><p>Every stage-1 code frozen: they come out of stage 2 "
        html += "bit-identical (\(frozen.changed) of \(stage1Codes) changed; the baseline changed \(baseline.changed)). Error on 0–4: \(f(frozen.mseA)) "
        html += "against \(f(baseline.mseA)) for the baseline; on 5–9: \(f(frozen.mseB)) against \(f(baseline.mseB)).</p>"
        html += "<h2>Use 2: freezing a subspace of every code</h2><p>The codes live in \(subspace.dim) dimensions. The subspace run freezes the "
        html += "\(subspace.rank)-dimensional principal subspace of the stage-1 codes (the top eigenvectors of ΣeeT): every code keeps its "
        html += "coordinates there, and learns only in the \(subspace.dim - subspace.rank)-dimensional complement — the new codes too. "
        html += "Error on 0–4: \(f(run(.subspace).mseA)) (baseline \(f(baseline.mseA)), codes frozen \(f(frozen.mseA))); on 5–9: "
        html += "\(f(run(.subspace).mseB)) (baseline \(f(baseline.mseB))).</p>"
        html += "<h2>Use 3: a freezing policy decides</h2><p>With <code>.converged(tolerance: \(policy.tolerance), patience: \(policy.patience))</code> during stage 1, "
        html += "\(policy.frozen.count) of \(stage1Codes) codes froze as they settled (held-out 0–4 error after stage 1: \(f(policy.mseWith)) with "
        html += "the policy, \(f(policy.mseWithout)) without). Stage 2 then starts from that state with nothing frozen by hand: error on "
        html += "0–4 \(f(run(.policy).mseA)), on 5–9 \(f(run(.policy).mseB)).</p>"
        var cumulative: [(Double, Double)] = [(0, 0)]
        for (i, step) in policy.frozen.map(\.step).sorted().enumerated() { cumulative.append((Double(step), Double(i + 1))) }
        cumulative.append((Double(policy.steps), Double(policy.frozen.count)))
        html += seriesChart([("codes frozen by the policy", "#2ca02c", cumulative)], reference: nil, xLabel: "stage-1 update", yLabel: "codes")
        html += "<h2>Training loss</h2>" + lineChart(curves)
        html += "<h2>Code usage on all 1,797 digits</h2>"
        html += "<figure>" + histogram(codeUsage(frozen.model, images), frozenBelow: stage1Codes, title: "codes frozen")
        html += histogram(codeUsage(baseline.model, images), frozenBelow: stage1Codes, title: "baseline") +
            "<figcaption>Bars left of the line are the stage-1 codes (frozen in the first run).</figcaption></figure>"
        html += "<h2>Originals and reconstructions (held-out digits)</h2>"
        for (name, m) in [("codes frozen", frozen.model), ("baseline", baseline.model)] {
            for (label, x) in [("0–4", sampleA), ("5–9", sampleB)] {
                let r = m.withMode(training: false) { withoutGradient { m(x).recon } }
                html += "<p><b>\(name), digits \(label)</b> — top: original, bottom: reconstruction</p>" + grid(x, r)
            }
        }
        html += "</body></html>\n"
        try AtomicFile.write(Data(html.utf8), to: url)
    }

    /// Lines of (x, y) points with a legend; an optional dashed horizontal reference.
    static func seriesChart(_ series: [(name: String, color: String, points: [(Double, Double)])], reference: Double?, xLabel: String,
                            yLabel: String) -> String {
        let (w, h, pad) = (900.0, 260.0, 44.0)
        let xs = series.flatMap { $0.points.map(\.0) }, ys = series.flatMap { $0.points.map(\.1) } + (reference.map { [$0] } ?? [])
        let (minX, maxX) = (xs.min() ?? 0, xs.max() ?? 1), (minY, maxY) = (ys.min() ?? 0, ys.max() ?? 1)
        func px(_ x: Double) -> Double { pad + (x - minX) / max(maxX - minX, 1e-9) * (w - 2 * pad) }
        func py(_ y: Double) -> Double { h - pad - (y - minY) / max(maxY - minY, 1e-9) * (h - 2 * pad) }
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
        svg += "<line x1=\"\(pad)\" y1=\"\(h - pad)\" x2=\"\(w - pad)\" y2=\"\(h - pad)\" stroke=\"#999\"/><line x1=\"\(pad)\" y1=\"\(pad)\" x2=\"\(pad)\" y2=\"\(h - pad)\" stroke=\"#999\"/>"
        svg += String(format: "<text x=\"4\" y=\"%.0f\" font-size=\"11\">%.4g</text><text x=\"4\" y=\"%.0f\" font-size=\"11\">%.4g</text>", pad, maxY, h - pad, minY)
        svg += "<text x=\"\(w / 2)\" y=\"\(h - 8)\" font-size=\"12\" text-anchor=\"middle\">\(xLabel)</text>"
        svg += "<text x=\"12\" y=\"\(pad - 12)\" font-size=\"12\">\(yLabel)</text>"
        if let reference {
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\" stroke-dasharray=\"5 4\"/>", pad, py(reference), w - pad, py(reference))
        }
        for s in series {
            let pts = s.points.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.8\" points=\"\(pts)\"/>"
        }
        svg += "</svg>"
        let legend = series.map { "<span style=\"color:\($0.color)\">■ \($0.name)</span>" }.joined()
        return "<figure>\(svg)<figcaption class=\"legend\">\(legend)</figcaption></figure>"
    }

    static func codeUsage(_ m: DigitVQVAE, _ x: Tensor) -> [Int] {
        let idx = m.withMode(training: false) { withoutGradient { m(x).indices } }
        var counts = [Int](repeating: 0, count: m.vq.codebookSize)
        for i in idx.scalars where i >= 0 { counts[i] += 1 }
        return counts
    }

    static let colors = ["stage 1": "#555555", "stage 2 codes frozen": "#1f77b4", "stage 2 baseline": "#d62728",
                         "stage 2 subspace frozen": "#9467bd", "stage 2 converged policy": "#2ca02c"]

    static func lineChart(_ curves: [String: [Float]]) -> String {
        let (w, h, pad) = (900.0, 300.0, 40.0)
        let s1 = curves["stage 1"] ?? []
        let total = Double(s1.count + (curves["stage 2 codes frozen"]?.count ?? 0))
        func smooth(_ v: [Float]) -> [Float] {
            v.indices.map { i in let lo = max(0, i - 10); return v[lo...i].reduce(0, +) / Float(i - lo + 1) }
        }
        let all = curves.values.flatMap(smooth)
        let maxY = Double(all.max() ?? 1), minY = Double(all.min() ?? 0)
        func pt(_ i: Int, _ v: Float) -> String {
            let x = pad + Double(i) / max(total, 1) * (w - 2 * pad)
            let y = h - pad - (Double(v) - minY) / max(maxY - minY, 1e-9) * (h - 2 * pad)
            return String(format: "%.1f,%.1f", x, y)
        }
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\">"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
        svg += "<line x1=\"\(pad)\" y1=\"\(h - pad)\" x2=\"\(w - pad)\" y2=\"\(h - pad)\" stroke=\"#999\"/>"
        svg += "<line x1=\"\(pad)\" y1=\"\(pad)\" x2=\"\(pad)\" y2=\"\(h - pad)\" stroke=\"#999\"/>"
        svg += String(format: "<text x=\"4\" y=\"%.0f\" font-size=\"11\">%.3f</text><text x=\"4\" y=\"%.0f\" font-size=\"11\">%.3f</text>", pad, maxY, h - pad, minY)
        svg += "<text x=\"\(w / 2)\" y=\"\(h - 8)\" font-size=\"12\" text-anchor=\"middle\">step (stage 1, then stage 2)</text>"
        for (name, values) in curves.sorted(by: { $0.key < $1.key }) {
            let offset = name == "stage 1" ? 0 : s1.count
            let points = smooth(values).enumerated().map { pt($0.offset + offset, $0.element) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(colors[name] ?? "black")\" stroke-width=\"1.5\" points=\"\(points)\"/>"
        }
        svg += "</svg>"
        let legend = curves.keys.sorted().map { "<span style=\"color:\(colors[$0] ?? "black")\">■ \($0)</span>" }.joined()
        return "<figure>\(svg)<figcaption class=\"legend\">\(legend) (moving average of 10 steps)</figcaption></figure>"
    }

    static func histogram(_ counts: [Int], frozenBelow: Int, title: String) -> String {
        let (w, h, pad) = (900.0, 160.0, 30.0)
        let maxC = Double(counts.max() ?? 1)
        let bw = (w - 2 * pad) / Double(max(counts.count, 1))
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
        svg += "<text x=\"\(pad)\" y=\"14\" font-size=\"12\">\(title): codes used \(counts.filter { $0 > 0 }.count)/\(counts.count)</text>"
        for (i, c) in counts.enumerated() {
            let bh = Double(c) / max(maxC, 1) * (h - 2 * pad)
            let color = i < frozenBelow ? "#1f77b4" : "#ff7f0e"
            svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"><title>code %d: %d</title></rect>",
                          pad + Double(i) * bw, h - pad - bh, max(bw - 1, 1), bh, color, i, c)
        }
        let lx = pad + Double(frozenBelow) * bw
        svg += "<line x1=\"\(lx)\" y1=\"\(pad - 6)\" x2=\"\(lx)\" y2=\"\(h - pad)\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>"
        svg += "<text x=\"\(lx - 4)\" y=\"\(h - 10)\" font-size=\"11\" text-anchor=\"end\">stage-1 codes</text>"
        svg += "<text x=\"\(lx + 4)\" y=\"\(h - 10)\" font-size=\"11\">new codes</text></svg>"
        return svg
    }

    /// Two rows of 8×8 images (originals over reconstructions), gray levels as rectangles.
    static func grid(_ a: Tensor, _ b: Tensor) -> String {
        let n = a.shape[0], cell = 4.0, gap = 6.0
        let w = Double(n) * (8 * cell + gap), h = 2 * (8 * cell + gap)
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\">"
        for (row, t) in [a, b].enumerated() {
            for k in 0..<n {
                for p in 0..<64 {
                    let v = max(0, min(1, t.scalars[k * 64 + p]))
                    let g = Int(255 * (1 - v))
                    let x = Double(k) * (8 * cell + gap) + Double(p % 8) * cell
                    let y = Double(row) * (8 * cell + gap) + Double(p / 8) * cell
                    svg += "<rect x=\"\(x)\" y=\"\(y)\" width=\"\(cell)\" height=\"\(cell)\" fill=\"rgb(\(g),\(g),\(g))\"/>"
                }
            }
        }
        return svg + "</svg>"
    }
}
