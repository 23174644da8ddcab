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

    @Test("bad options are one line and write nothing")
    func refusals() throws {
        let out = dir.appendingPathComponent("bad").path
        for args in [["--steps", "0"], ["--quantizer", "pq"], ["--lr", "-1"], ["--batch-size", "0"]] {
            let r = try VQProcess.run(["example", "autoencoder", "--output", out] + args)
            #expect(r.status != 0)
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out))
        }
    }
}
