import Foundation
import Testing
import VQTestSupport

/// `vq example autoencoder` with every quantizer, a few steps each: the held-out error on the last line and
/// a report with its three parts.
@Suite("vq example", .serialized)
struct ExampleTests {
    let dir = VQProcess.temporaryDirectory()

    @Test("autoencoder runs with every quantizer", arguments: ["vq", "fsq", "lfq", "simvq", "rvq", "fsp", "hvq"])
    func autoencoder(_ quantizer: String) throws {
        let out = dir.appendingPathComponent(quantizer).path
        let r = try VQProcess.run(["example", "autoencoder", "--quantizer", quantizer, "--steps", "4", "--batch-size", "16", "--output", out])
        #expect(r.status == 0, "\(r.stderr)")
        let last = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("held-out reconstruction MSE: "), "\(r.stdout)")
        let mse = Double(last.split(separator: " ").last ?? "") ?? .nan
        #expect(mse.isFinite && mse > 0 && mse < 1)
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        #expect(html.contains("Training loss") && html.contains("Code usage") && html.contains("reconstructions") && html.contains("<svg"))
    }

    /// The masked LFQ example trains twice on the same batches, the second time beside masked-out noise tokens:
    /// masked tokens take no part in any loss term, so both runs reach the same held-out error.
    @Test("lfq-masked: the masked noise changes nothing the model learns; the report has both runs")
    func lfqMasked() throws {
        let out = dir.appendingPathComponent("lfq-masked").path
        let r = try VQProcess.run(["example", "lfq-masked", "--steps", "6", "--batch-size", "16", "--output", out])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.last?.hasPrefix("held-out reconstruction L1 (with masking): ") == true, "\(r.stdout)")
        func l1(_ label: String) -> Double? {
            lines.first { $0.hasPrefix(label + ": held-out reconstruction L1 ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        let (baseline, masked) = (l1("baseline"), l1("with masking"))
        #expect(baseline != nil && masked != nil, "\(r.stdout)")
        if let baseline, let masked {
            #expect(baseline > 0 && baseline < 1)
            #expect(abs(baseline - masked) <= 1e-4 * baseline, "baseline \(baseline), with masking \(masked)")
        }
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        #expect(html.contains("baseline") && html.contains("with masking") && html.contains("Code usage") && html.contains("<svg"))
    }

    @Test("bad options are one line and write nothing")
    func refusals() throws {
        let out = dir.appendingPathComponent("bad").path
        for args in [["autoencoder", "--steps", "0"], ["autoencoder", "--quantizer", "pq"], ["autoencoder", "--lr", "-1"],
                     ["autoencoder", "--batch-size", "0"], ["lfq-masked", "--steps", "0"], ["lfq-masked", "--lr", "nan"]] {
            let r = try VQProcess.run(["example"] + args + ["--output", out])
            #expect(r.status != 0)
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out))
        }
        // An --output that is a file, or lies under one: refused up front in words (no NSCocoaErrorDomain dump).
        let file = dir.appendingPathComponent("a-file").path
        try Data("mine".utf8).write(to: URL(fileURLWithPath: file))
        for args in [["demo", "--steps", "2", "--output", file], ["demo", "--steps", "2", "--output", file + "/sub"],
                     ["example", "autoencoder", "--steps", "2", "--output", file], ["example", "lfq-masked", "--steps", "2", "--output", file + "/sub"]] {
            let r = try VQProcess.run(args)
            #expect(r.status != 0 && r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("is a file, not a folder"), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("Domain") && !r.stderr.contains("UserInfo"), "\(args): \(r.stderr)")
            #expect(FileManager.default.contents(atPath: file) == Data("mine".utf8))
        }
    }
}
