import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// The demo's self-contained HTML report: inline SVG figures, no scripts, no external files.
enum Report {
    static func page(summary: DemoSummary, detail: DemoSeed, images data: DigitsData, testA: Tensor, testB: Tensor,
                      setting: String, subspace: (rank: Int, dim: Int), policy: (policy: ConvergedPolicy, steps: Int)) -> String {
        let stage1Codes = summary.stage1Codes, seed = detail.seed
        func mean(_ v: DemoRun.Variant, _ f: (DemoRun) -> Float) -> String {
            String(format: "%.4f", summary.seeds.map { Double(f($0.run(v))) }.reduce(0, +) / Double(summary.seeds.count))
        }
        let meanStage1 = String(format: "%.4f", summary.seeds.map { Double($0.stage1.mseA) }.reduce(0, +) / Double(summary.seeds.count))
        var html = """
        <!doctype html><html><head><meta charset="utf-8"><title>vq demo: staged training with frozen codes</title>
        <style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
        h2{margin-top:1.6em}figure{margin:0 0 1em 0}figcaption{color:#555;font-size:.9em}.legend span{margin-right:1.2em}
        .setting{color:#555;font-size:.85em;font-family:ui-monospace,monospace}</style>
        </head><body>
        <h1>Staged training with frozen codes</h1>
        <p class="setting">\(esc(setting))</p>
        <p>A small VQ-VAE learns digits 0–4 (stage 1, \(stage1Codes) codes), then its codebook grows to \(summary.stage2Codes) codes
        and it learns digits 5–9 (stage 2) from the same stage-1 state four ways: with every stage-1 code frozen, without freezing
        (baseline), with the principal subspace of the stage-1 codes frozen, and with codes frozen by a converged-code policy.
        Data: UCI optical handwritten digits (Alpaydin &amp; Kaynak, 1998, CC BY 4.0).</p>
        <h2>Summary over \(summary.seeds.count) seeds</h2>
        """
        html += summary.html
        html += "<p>The figures below are seed \(seed)'s.</p>"
        html += "<h2>Forgetting: held-out error on digits 0–4 during stage 2</h2>"
        html += seriesChart(detail.runs.map { r in (r.variant.rawValue, colors["stage 2 \(r.variant.rawValue)"] ?? "black", r.forgetting.map { (Double($0.step), Double($0.mse)) }) },
                            reference: Double(detail.stage1.mseA), xLabel: "stage-2 step", yLabel: "recon MSE, digits 0–4", yFromZero: true)
        html += "<p>The dashed line is the error after stage 1 (the y-axis starts at 0). A run that stays near it has not forgotten the old digits.</p>"
        html += "<h2>Use 1: codes that are already learned stay fixed</h2><p>Every stage-1 code frozen: they come out of stage 2 bit-identical "
        html += "on every seed. Mean error on 0–4: \(mean(.codes) { $0.mseA }) against \(mean(.baseline) { $0.mseA }) for the baseline (\(meanStage1) "
        html += "after stage 1); on 5–9: \(mean(.codes) { $0.mseB }) against \(mean(.baseline) { $0.mseB }).</p>"
        html += "<h2>Use 2: freezing a subspace of every code</h2><p>The codes live in \(subspace.dim) dimensions. The subspace run freezes the "
        html += "\(subspace.rank)-dimensional principal subspace of the stage-1 codes (the top eigenvectors of ΣeeT): every code keeps its "
        html += "coordinates there and learns only in the \(subspace.dim - subspace.rank)-dimensional complement — the new codes too. Mean error on "
        html += "0–4: \(mean(.subspace) { $0.mseA }); on 5–9: \(mean(.subspace) { $0.mseB }).</p>"
        let p = policy.policy
        html += "<h2>Use 3: a freezing policy decides</h2><p>With <code>.converged(tolerance: \(p.tolerance), patience: \(p.patience))</code> during stage 1 "
        html += "of seed \(seed), \(detail.policyFrozen.count) of \(stage1Codes) codes froze as they settled (held-out 0–4 error after stage 1: "
        html += String(format: "%.4f with the policy, %.4f without). ", detail.policyStage1, detail.stage1.mseA)
        html += "Stage 2 then starts from that state with nothing frozen by hand: mean error on 0–4 \(mean(.policy) { $0.mseA }), on 5–9 \(mean(.policy) { $0.mseB }).</p>"
        html += policySteps(detail.policyFrozen, updates: policy.steps, codes: stage1Codes)
        html += "<h2>Training loss</h2>"
        html += lossChart(["stage 1": detail.curves["stage 1"] ?? []], xLabel: "stage-1 step")
        html += lossChart(detail.curves.filter { $0.key != "stage 1" }, xLabel: "stage-2 step")
        html += "<h2>Code usage on all \(data.images.shape[0]) digits, each stage-2 run</h2><figure>"
        for r in detail.runs { html += histogram(r.model.usage(of: data.images), frozenBelow: stage1Codes, title: r.variant.rawValue) }
        html += "<figcaption class=\"legend\"><span style=\"color:#1f77b4\">■ stage-1 codes (frozen in the codes-frozen run)</span>"
        html += "<span style=\"color:#ff7f0e\">■ codes added in stage 2</span> — bar height: times used</figcaption></figure>"
        html += "<h2>Originals and reconstructions: two held-out digits of every class</h2>"
        let sample = everyClass(data, perClass: 2)
        for r in detail.runs {
            let recon = r.model.withMode(training: false) { withoutGradient { r.model(sample).recon } }
            html += "<p><b>\(r.variant.rawValue)</b> — top: original, bottom: reconstruction (digits 0 to 9)</p>" + grid(sample, recon)
        }
        html += "</body></html>\n"
        return html
    }

    static func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// `perClass` held-out images of each digit (the split's held-out rows: every fifth of each class), in class order.
    static func everyClass(_ data: DigitsData, perClass: Int) -> Tensor {
        var rows: [Int] = []
        for digit in 0...9 {
            let held = data.labels.indices.filter { data.labels[$0] == digit }.enumerated().filter { $0.offset % 5 == 0 }.map(\.element)
            rows += held.prefix(perClass)
        }
        return data.images.indexSelect(axis: 0, IndexTensor(rows))
    }

    /// "Nice" tick values covering `lo…hi` (about five).
    static func ticks(_ lo: Double, _ hi: Double) -> [Double] {
        let span = max(hi - lo, 1e-12)
        let raw = span / 5, mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? raw
        var out: [Double] = []
        var v = (lo / step).rounded(.up) * step
        while v <= hi + step * 1e-9 { out.append(v); v += step }
        return out
    }

    /// The frame of a chart: axes with ticks and labels; returns the SVG and the two maps to pixels.
    static func frame(width w: Double, height h: Double, x: (Double, Double), y: (Double, Double), xLabel: String, yLabel: String, cut: Bool = false)
        -> (svg: String, px: (Double) -> Double, py: (Double) -> Double) {
        let (left, right, top, bottom) = (64.0, 16.0, 16.0, 44.0)
        let px = { (v: Double) in left + (v - x.0) / max(x.1 - x.0, 1e-12) * (w - left - right) }
        let py = { (v: Double) in h - bottom - (v - y.0) / max(y.1 - y.0, 1e-12) * (h - top - bottom) }
        var svg = "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
        svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\"/>", left, h - bottom, w - right, h - bottom)
        svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\"/>", left, top, left, h - bottom)
        for t in ticks(x.0, x.1) {
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">%@</text>",
                          px(t), h - bottom, px(t), h - bottom + 4, px(t), h - bottom + 16, label(t))
        }
        for t in ticks(y.0, y.1) {
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/><text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%@</text>",
                          left, py(t), w - right, py(t), left - 6, py(t) + 4, label(t))
        }
        if cut { svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#d62728\">axis cut</text>", left + 4, h - bottom - 4) }
        svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%@</text>", (left + w - right) / 2, h - 8, esc(xLabel))
        svg += String(format: "<text transform=\"translate(14 %.1f) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\">%@</text>", (top + h - bottom) / 2, esc(yLabel))
        return (svg, px, py)
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e6 { return String(Int(v)) }
        return String(format: "%.4g", v)
    }

    /// Lines of (x, y) points with a legend; an optional dashed horizontal reference.
    static func seriesChart(_ series: [(name: String, color: String, points: [(Double, Double)])], reference: Double?, xLabel: String,
                            yLabel: String, yFromZero: Bool = false) -> String {
        let xs = series.flatMap { $0.points.map(\.0) }, ys = series.flatMap { $0.points.map(\.1) } + (reference.map { [$0] } ?? [])
        let minY = yFromZero ? 0 : (ys.min() ?? 0), maxY = (ys.max() ?? 1) * 1.05
        let f = frame(width: 900, height: 280, x: (xs.min() ?? 0, xs.max() ?? 1), y: (minY, maxY), xLabel: xLabel, yLabel: yLabel, cut: !yFromZero && minY > 0)
        var svg = f.svg
        if let reference {
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\" stroke-dasharray=\"5 4\"/>", f.px(xs.min() ?? 0), f.py(reference), f.px(xs.max() ?? 1), f.py(reference))
        }
        for s in series {
            let pts = s.points.map { String(format: "%.1f,%.1f", f.px($0.0), f.py($0.1)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.8\" points=\"\(pts)\"/>"
        }
        svg += "</svg>"
        let legend = series.map { "<span style=\"color:\($0.color)\">■ \(esc($0.name))</span>" }.joined()
        return "<figure>\(svg)<figcaption class=\"legend\">\(legend)</figcaption></figure>"
    }

    /// The policy's freezes over stage 1 as a step plot; each step names the codes that froze there.
    static func policySteps(_ frozen: [(code: Int, step: Int)], updates: Int, codes: Int) -> String {
        let byStep = Dictionary(grouping: frozen, by: \.step).sorted { $0.key < $1.key }
        var points: [(Double, Double)] = [(0, 0)]
        var total = 0
        for (step, group) in byStep {
            points.append((Double(step), Double(total)))
            total += group.count
            points.append((Double(step), Double(total)))
        }
        points.append((Double(updates), Double(total)))
        let f = frame(width: 900, height: 260, x: (0, Double(updates)), y: (0, Double(max(total, 1)) * 1.15), xLabel: "stage-1 update",
                      yLabel: "codes frozen by the policy")
        var svg = f.svg
        svg += "<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"1.8\" points=\"" + points.map { String(format: "%.1f,%.1f", f.px($0.0), f.py($0.1)) }.joined(separator: " ") + "\"/>"
        var running = 0
        for (step, group) in byStep {
            running += group.count
            let names = group.map { String($0.code) }.joined(separator: ",")
            svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#2ca02c\"><title>update %d: code%@ %@</title></circle>", f.px(Double(step)), f.py(Double(running)),
                          step, group.count > 1 ? "s" : "", names)
            svg += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"9\" fill=\"#2ca02c\">%@</text>", f.px(Double(step)) + 3, f.py(Double(running)) - 4, names)
        }
        svg += "</svg>"
        let list = byStep.map { "update \($0.key): code\($0.value.count > 1 ? "s" : "") \($0.value.map { String($0.code) }.joined(separator: ", "))" }.joined(separator: "; ")
        return "<figure>\(svg)<figcaption>\(total) of \(codes) codes frozen — \(list.isEmpty ? "none" : list)</figcaption></figure>"
    }

    /// Loss curves (moving average of 10 steps) against the step.
    static func lossChart(_ curves: [String: [Float]], xLabel: String) -> String {
        func smooth(_ v: [Float]) -> [Float] {
            v.indices.map { i in let lo = max(0, i - 10); return v[lo...i].reduce(0, +) / Float(i - lo + 1) }
        }
        let series = curves.sorted { $0.key < $1.key }.map { name, values in
            (name, colors[name] ?? "black", smooth(values).enumerated().map { (Double($0.offset + 1), Double($0.element)) })
        }
        return seriesChart(series, reference: nil, xLabel: xLabel, yLabel: "loss (moving average of 10 steps)")
    }

    static let colors = ["stage 1": "#555555", "stage 2 codes frozen": "#1f77b4", "stage 2 baseline": "#d62728",
                         "stage 2 subspace frozen": "#9467bd", "stage 2 converged policy": "#2ca02c"]

    /// Times each code was used, with axes (code index, times used); codes below `frozenBelow` in blue, the others orange.
    static func histogram(_ counts: [Int], frozenBelow: Int, title: String) -> String {
        let maxC = Double(max(counts.max() ?? 1, 1))
        let f = frame(width: 900, height: 190, x: (0, Double(max(counts.count, 1))), y: (0, maxC * 1.1), xLabel: "code", yLabel: "times used")
        var svg = f.svg
        svg += String(format: "<text x=\"%.1f\" y=\"14\" font-size=\"12\">%@: codes used %d/%d</text>", f.px(0), esc(title), counts.filter { $0 > 0 }.count, counts.count)
        let bw = f.px(1) - f.px(0)
        for (i, c) in counts.enumerated() {
            let color = i < frozenBelow ? "#1f77b4" : "#ff7f0e"
            svg += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"><title>code %d: %d</title></rect>",
                          f.px(Double(i)), f.py(Double(c)), max(bw - 1, 1), f.py(0) - f.py(Double(c)), color, i, c)
        }
        if frozenBelow > 0 && frozenBelow < counts.count {
            let lx = f.px(Double(frozenBelow))
            svg += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>", lx, f.py(maxC * 1.1), lx, f.py(0))
            svg += String(format: "<text x=\"%.1f\" y=\"30\" font-size=\"11\" text-anchor=\"end\">stage-1 codes</text><text x=\"%.1f\" y=\"30\" font-size=\"11\">new codes</text>", lx - 4, lx + 4)
        }
        return svg + "</svg>"
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
