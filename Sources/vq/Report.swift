import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// The demo's self-contained HTML report: inline SVG figures, no scripts, no external files.
enum Report {
    static func write(to url: URL, curves: [String: [Float]], frozen: DigitVQVAE, baseline: DigitVQVAE, stage1Codes: Int,
                      images: Tensor, testA: Tensor, testB: Tensor) throws {
        let usage = codeUsage(frozen, images)
        let usageBase = codeUsage(baseline, images)
        let sampleA = testA.slice(axis: 0, 0..<min(12, testA.shape[0]))
        let sampleB = testB.slice(axis: 0, 0..<min(12, testB.shape[0]))
        var html = """
        <!doctype html><html><head><meta charset="utf-8"><title>vq demo: staged training with frozen codes</title>
        <style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
        h2{margin-top:1.6em}figure{margin:0}figcaption{color:#555;font-size:.9em}.legend span{margin-right:1.2em}</style>
        </head><body>
        <h1>Staged training with frozen codes</h1>
        <p>A small VQ-VAE learns digits 0–4 (stage 1, \(stage1Codes) codes), then its codebook grows to \(frozen.vq.codebookSize) codes
        and it learns digits 5–9 (stage 2) — once with every stage-1 code frozen, once without (baseline).
        Data: UCI optical handwritten digits (Alpaydin &amp; Kaynak, 1998, CC BY 4.0).</p>
        """
        html += "<h2>Training loss</h2>" + lineChart(curves)
        html += "<h2>Code usage on all 1,797 digits</h2>"
        html += "<figure>" + histogram(usage, frozenBelow: stage1Codes, title: "frozen run")
        html += histogram(usageBase, frozenBelow: stage1Codes, title: "baseline") +
            "<figcaption>Bars left of the line are the stage-1 codes (frozen in the first run).</figcaption></figure>"
        html += "<h2>Originals and reconstructions (held-out digits)</h2>"
        for (name, m) in [("frozen", frozen), ("baseline", baseline)] {
            for (label, x) in [("0–4", sampleA), ("5–9", sampleB)] {
                m.eval()
                let r = withoutGradient { m(x).recon }
                html += "<p><b>\(name), digits \(label)</b> — top: original, bottom: reconstruction</p>" + grid(x, r)
            }
        }
        html += "</body></html>\n"
        try AtomicFile.write(Data(html.utf8), to: url)
    }

    static func codeUsage(_ m: DigitVQVAE, _ x: Tensor) -> [Int] {
        m.eval()
        let idx = withoutGradient { m(x).indices }
        var counts = [Int](repeating: 0, count: m.vq.codebookSize)
        for i in idx.scalars where i >= 0 { counts[i] += 1 }
        return counts
    }

    static let colors = ["stage 1": "#555555", "stage 2 frozen": "#1f77b4", "stage 2 baseline": "#d62728"]

    static func lineChart(_ curves: [String: [Float]]) -> String {
        let (w, h, pad) = (900.0, 300.0, 40.0)
        let s1 = curves["stage 1"] ?? []
        let total = Double(s1.count + (curves["stage 2 frozen"]?.count ?? 0))
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
