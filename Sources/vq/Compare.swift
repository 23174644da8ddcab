import ArgumentParser
import Foundation
import VQTensor
import VectorQuantize

/// `vq compare OLD NEW --input probe.npy`: what a training stage changed (``StageComparison``).
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "What a stage changed: frozen codes verified bit-identical, drift, token churn, usage, error on a probe set.",
        discussion: """
        OLD and NEW are checkpoints of the same quantizer (NEW possibly grown with vq train --expand-to). Per codebook \
        (layer, group, head): frozen codes and components checked bit for bit (those that moved are named), drift of the \
        other codes, token churn (share of probe vectors whose code changed; among those whose old code was frozen, the \
        share that moved and the share a new code took), codes used, usage perplexity / codebook size, dead codes; and each \
        model's reconstruction error. Exits 1 when a frozen code or component moved.
        """)

    @Argument(help: "The earlier checkpoint (.safetensors).") var old: String
    @Argument(help: "The later checkpoint (.safetensors).") var new: String
    @Option(help: "Probe vectors: .npy, .fvecs, .bvecs or FILE.safetensors:NAME.") var input: String
    @Flag(help: "Print the comparison as JSON.") var json = false
    @Option(help: "Also write an HTML report.") var report: String?

    func validate() throws {
        try checkFiles(checkpoints: [(old, "OLD"), (new, "NEW")], config: nil, input: input, output: report.map { ($0, "--report") })
    }

    func run() throws {
        let (a, _) = try loadQuantizer(old, config: nil)
        let (b, _) = try loadQuantizer(new, config: nil)
        try requireInitialised(a, old)
        try requireInitialised(b, new)
        var probe = try DataFiles.vectors(input, dim: a.inputDim)
        // As the quantizer encodes them: vectors, or whole sequences for a sequence quantizer.
        let layout = IndexLayout(a)
        _ = try layout.indexAxes(ofVectors: [probe.count / a.inputDim], spec: input)
        probe = layout.encodable(probe.reshaped([-1, a.inputDim]))
        let result: StageComparison
        do { result = try StageComparison(old: a, new: b, probe: probe) } catch let e as StageComparisonError { throw CLIError("\(old) → \(new): \(e)") }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        } else {
            print(Self.text(result, old: old, new: new))
        }
        if let report {
            try AtomicFile.write(Data(Self.html(result, old: old, new: new, probe: input).utf8), to: URL(fileURLWithPath: report))
            if !json { print("report: \(report)") }
        }
        if !result.frozenHeld {
            // The comparison and the report are written; the status says the check failed, and one line says why.
            let moved = result.books.filter { !$0.frozenHeld }.map { b in
                "\(b.name): " + (b.frozenMoved.isEmpty ? "" : "codes \(b.frozenMoved.map(String.init).joined(separator: ","))")
                    + (b.frozenComponentsMoved > 0 ? "\(b.frozenMoved.isEmpty ? "" : ", ")\(b.frozenComponentsMoved) frozen components" : "")
            } + (result.frozenParametersMoved.isEmpty ? [] : ["frozen parameters \(result.frozenParametersMoved.joined(separator: ", "))"])
            throw CLIError("frozen elements moved from \(old) to \(new): \(moved.joined(separator: "; "))")
        }
    }

    static func pct(_ v: Double?) -> String { v.map { String(format: "%.1f %%", 100 * $0) } ?? "—" }
    static func num(_ v: Double?, _ f: String = "%.4g") -> String { v.map { String(format: f, $0) } ?? "—" }

    static func text(_ r: StageComparison, old: String, new: String) -> String {
        var lines = ["\(old) → \(new) on \(r.probeVectors) probe vectors"]
        lines.append("reconstruction MSE: \(num(r.mseOld, "%.6f")) → \(num(r.mseNew, "%.6f")); vectors whose code changed: \(pct(r.churn))")
        for b in r.books {
            lines.append("\(b.name): \(b.oldSize) → \(b.newSize) codes")
            var frozen = "  frozen: \(b.frozenCodes) codes"
            if b.frozenComponents > 0 { frozen += ", \(b.frozenComponents) components" }
            frozen += b.frozenHeld ? " — bit-identical" : " — MOVED: codes \(b.frozenMoved.map(String.init).joined(separator: ","))" +
                (b.frozenComponentsMoved > 0 ? ", \(b.frozenComponentsMoved) components" : "")
            if b.frozenCodes + b.frozenComponents > 0 { lines.append(frozen) }
            if let s = b.subspaceDrift { lines.append("  frozen subspace: coordinates moved by at most \(num(s))") }
            if b.oldSize > b.frozenCodes {
                lines.append("  other old codes: drift mean \(num(b.meanDrift)) (\(pct(b.relativeMeanDrift)) of their RMS norm), max \(num(b.maxDrift))")
            }
            if b.churn != nil {
                var churn = "  token churn \(pct(b.churn))"
                if let f = b.frozenChurn { churn += "; of vectors on frozen codes: \(pct(f)) moved, \(pct(b.frozenToNew)) to new codes" }
                lines.append(churn)
                lines.append("  used \(b.usedOld!)/\(b.oldSize) → \(b.usedNew!)/\(b.newSize), dead \(b.deadOld!) → \(b.deadNew!), perplexity/size \(num(b.perplexityOld, "%.3f")) → \(num(b.perplexityNew, "%.3f"))")
            }
        }
        if !r.frozenParameters.isEmpty {
            lines.append("frozen parameters (whole): \(r.frozenParameters.count)" + (r.frozenParametersMoved.isEmpty ? " — bit-identical"
                : " — MOVED: \(r.frozenParametersMoved.joined(separator: ", "))"))
        }
        if r.books.isEmpty {
            lines.append("no learned codebook (implicit codes): only the churn, the error\(r.frozenParameters.isEmpty ? "" : " and the frozen parameters") compare")
        }
        return lines.joined(separator: "\n")
    }

    static func html(_ r: StageComparison, old: String, new: String, probe: String) -> String {
        let esc = Report.esc
        var html = """
        <!doctype html><html><head><meta charset="utf-8"><title>vq compare</title>
        <style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
        table{border-collapse:collapse}td,th{padding:.3em .7em;border-bottom:1px solid #ddd;text-align:right}
        th:first-child,td:first-child{text-align:left}.ok{color:#2ca02c}.bad{color:#d62728;font-weight:bold}</style>
        </head><body><h1>What the stage changed</h1>
        <p><code>\(esc(old))</code> → <code>\(esc(new))</code>, on \(r.probeVectors) vectors of <code>\(esc(probe))</code>.
        Reconstruction MSE \(num(r.mseOld, "%.6f")) → \(num(r.mseNew, "%.6f")); vectors whose code changed: \(pct(r.churn)).</p>
        <table><tr><th>codebook</th><th>codes</th><th>frozen</th><th>held</th><th>drift (rel.)</th><th>churn</th>
        <th>frozen-code churn / to new</th><th>used</th><th>dead</th><th>perplexity / size</th></tr>
        """
        for b in r.books {
            let held = b.frozenCodes + b.frozenComponents == 0 ? "—"
                : b.frozenHeld ? "<span class=ok>bit-identical</span>" : "<span class=bad>moved: \(b.frozenMoved.count) codes, \(b.frozenComponentsMoved) components</span>"
            let used = b.usedOld.map { "\($0) → \(b.usedNew!)" } ?? "—", dead = b.deadOld.map { "\($0) → \(b.deadNew!)" } ?? "—"
            html += "<tr><td>\(esc(b.name))</td><td>\(b.oldSize) → \(b.newSize)</td><td>\(b.frozenCodes)\(b.frozenComponents > 0 ? " + \(b.frozenComponents) comp." : "")</td>"
            html += "<td>\(held)</td><td>\(num(b.meanDrift)) (\(pct(b.relativeMeanDrift)))</td><td>\(pct(b.churn))</td>"
            html += "<td>\(pct(b.frozenChurn)) / \(pct(b.frozenToNew))</td><td>\(used)</td><td>\(dead)</td>"
            html += "<td>\(num(b.perplexityOld, "%.3f")) → \(num(b.perplexityNew, "%.3f"))</td></tr>"
        }
        html += "</table>"
        if !r.frozenParameters.isEmpty {
            html += "<p>Parameters frozen whole: \(r.frozenParameters.count) — " + (r.frozenParametersMoved.isEmpty ? "<span class=ok>bit-identical</span>"
                : "<span class=bad>moved: \(esc(r.frozenParametersMoved.joined(separator: ", ")))</span>") + "</p>"
        }
        html += "<p>Drift: mean distance an unfrozen old code moved, and relative to the old codes' RMS norm. Churn: share of probe "
        html += "vectors whose code changed; frozen-code churn: of the vectors whose old code was frozen, the share that moved, and the "
        html += "share a new code took (a frozen code never moves, but a new code can take its inputs).</p></body></html>\n"
        return html
    }
}
