import Foundation
import Testing
import VQTensor
import VQTestSupport

/// Staged training through the command line: growing a codebook for new data, and continuing a checkpoint
/// with new hyper-parameters.
@Suite("vq train: staged training", .serialized)
struct StagedTrainingTests {
    let dir = VQProcess.temporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func run(_ args: String...) throws -> VQProcess.Result { try VQProcess.run(args) }

    func tensor(_ file: String, _ key: String) throws -> Tensor {
        try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path(file))).tensors[key]!.asFloat
    }

    /// `a`: 3,000 × 16 standard normal; `b`: 3,000 × 16 from N(4, 0.5²) — far from every stage-1 code.
    func writeData() throws {
        try NumPyFile.write(.float(TestSupport.random([3000, 16], seed: 1)), to: URL(fileURLWithPath: path("a.npy")))
        try NumPyFile.write(.float(TestSupport.random([3000, 16], seed: 2, std: 0.5) + 4), to: URL(fileURLWithPath: path("b.npy")))
    }

    /// Codes used by `b` under `checkpoint`, and the reconstruction MSE of `b`.
    func usageAndError(_ checkpoint: String) throws -> (codes: Set<Int>, mse: Float) {
        var r = try run("encode", "--checkpoint", path(checkpoint), "--input", path("b.npy"), "--output", path("i.npy"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("decode", "--checkpoint", path(checkpoint), "--input", path("i.npy"), "--output", path("r.npy"))
        #expect(r.status == 0, "\(r.stderr)")
        let idx = try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("i.npy"))).asIndices!
        let recon = try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("r.npy"))).asFloat
        let b = try NumPyFile.read(contentsOf: URL(fileURLWithPath: path("b.npy"))).asFloat
        return (Set(idx.scalars), (recon - b).squared().mean().item)
    }

    @Test("--expand-to fits the new codes to the new data; the old codes stay bit-identical")
    func expandLearnsNewData() throws {
        try writeData()
        var r = try run("train", "--input", path("a.npy"), "--codebook-size", "64", "--steps", "40", "--batch-size", "256",
                        "--seed", "1", "--output", path("s1.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("train", "--input", path("b.npy"), "--init", path("s1.safetensors"), "--expand-to", "96", "--steps", "40",
                    "--batch-size", "256", "--seed", "3", "--output", path("s3.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("train", "--input", path("b.npy"), "--codebook-size", "32", "--kmeans-init", "--steps", "40", "--batch-size", "256",
                    "--seed", "3", "--output", path("b32.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")

        // Growth trains with a dead-code threshold (saved) unless one is given: --dead-code-threshold 0 keeps it off.
        let kwargs = { (name: String) throws -> [String: Any] in
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: self.path(name)))) as! [String: Any]
            return json["kwargs"] as! [String: Any]
        }
        #expect(try kwargs("s3.json")["threshold_ema_dead_code"] as? Double == 0.5)
        let off = try run("train", "--input", path("b.npy"), "--init", path("s1.safetensors"), "--expand-to", "96", "--steps", "2",
                          "--dead-code-threshold", "0", "--batch-size", "256", "--output", path("s0.safetensors"))
        #expect(off.status == 0 && !off.stdout.contains("dead-code threshold 0.5"), "\(off.stderr)")
        #expect(try kwargs("s0.json")["threshold_ema_dead_code"] as? Double ?? 0 == 0)
        // A growth that is refused says only why (no note about a threshold it never used).
        let smaller = try run("train", "--input", path("b.npy"), "--init", path("s1.safetensors"), "--expand-to", "2", "--steps", "2",
                              "--output", path("s9.safetensors"))
        #expect(smaller.status != 0 && smaller.stdout.isEmpty && smaller.stderr.contains("must exceed"), "\(smaller.stdout) \(smaller.stderr)")
        let old = try tensor("s1.safetensors", "_codebook.embed"), grown = try tensor("s3.safetensors", "_codebook.embed")
        #expect(grown.shape == [1, 96, 16])
        #expect(Array(grown.scalars[0..<(64 * 16)]).map(\.bitPattern) == old.scalars.map(\.bitPattern), "old codes moved")
        #expect(Array(try tensor("s3.safetensors", "_codebook.frozen_codes").scalars[0..<64]).allSatisfy { $0 == 1 })

        let staged = try usageAndError("s3.safetensors"), alone = try usageAndError("b32.safetensors")
        let newUsed = staged.codes.filter { $0 >= 64 }.count
        #expect(newUsed >= 28, "only \(newUsed) of the 32 new codes are used")
        #expect(staged.mse <= 1.5 * alone.mse, "MSE on b \(staged.mse) vs \(alone.mse) for 32 codes trained on b alone")
    }

    @Test("vq compare: a grown stage held its frozen codes (exit 0, JSON); a stage that moved them is named (exit 1); a residual stack with a frozen layer")
    func compareStages() throws {
        try writeData()
        for args in [["--input", "a.npy", "--codebook-size", "32", "--seed", "1", "--output", "c1.safetensors"],
                     ["--input", "b.npy", "--init", "c1.safetensors", "--expand-to", "48", "--seed", "3", "--output", "c2.safetensors"]] {
            let r = try VQProcess.run(["train", "--steps", "20", "--batch-size", "256"] + args.map { $0.contains(".") ? path($0) : $0 })
            #expect(r.status == 0, "\(r.stderr)")
        }
        var r = try run("compare", path("c1.safetensors"), path("c2.safetensors"), "--input", path("b.npy"), "--json", "--report", path("c.html"))
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let book = (json["books"] as! [[String: Any]])[0]
        #expect(book["frozenCodes"] as? Int == 32 && (book["frozenMoved"] as? [Int])?.isEmpty == true)
        #expect((book["frozenToNew"] as? Double ?? 0) > 0.5, "the new codes took b from the frozen ones: \(book)")
        #expect(book["newSize"] as? Int == 48 && json["probeVectors"] as? Int == 3000)
        #expect(try String(contentsOf: URL(fileURLWithPath: path("c.html")), encoding: .utf8).contains("bit-identical"))
        // Unfreeze and train on: comparing the frozen stage with the next names the codes that moved, and exits 1.
        r = try run("unfreeze", path("c2.safetensors"), "--codes", "0-31", "--output", path("c3.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("train", "--input", path("a.npy"), "--init", path("c3.safetensors"), "--steps", "10", "--batch-size", "256",
                    "--output", path("c4.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("compare", path("c2.safetensors"), path("c4.safetensors"), "--input", path("a.npy"), "--report", path("moved.html"))
        #expect(r.status == 1 && r.stdout.contains("MOVED: codes 0,"), "\(r.stdout) \(r.stderr)")
        // One line says why the status is 1 (it was an empty `vq: error: `), and the report is written.
        #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.hasPrefix("vq: error: frozen elements moved from ")
                && r.stderr.contains("codes 0,"), "\(r.stderr)")
        #expect(FileManager.default.fileExists(atPath: path("moved.html")))
        // A residual stack whose first layer is frozen.
        r = try run("train", "--input", path("a.npy"), "--codebook-size", "16", "--residual", "2", "--steps", "10", "--batch-size", "256",
                    "--output", path("r1.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("train", "--input", path("b.npy"), "--init", path("r1.safetensors"), "--freeze", "0-15", "--layer", "0", "--steps", "10",
                    "--batch-size", "256", "--output", path("r2.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("compare", path("r1.safetensors"), path("r2.safetensors"), "--input", path("b.npy"))
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("layer 0: 16 → 16 codes\n  frozen: 16 codes — bit-identical") && r.stdout.contains("layer 1:"), "\(r.stdout)")
        // A frozen subspace: the coordinates there hold to one rounding while the codes move.
        var basis = [Float](repeating: 0, count: 2 * 16)
        (basis[0], basis[1], basis[16 + 5]) = (0.6, 0.8, 1)
        try NumPyFile.write(.float(Tensor(basis, shape: [2, 16])), to: URL(fileURLWithPath: path("basis.npy")))
        r = try run("train", "--input", path("b.npy"), "--init", path("c1.safetensors"), "--freeze-subspace", path("basis.npy"), "--steps", "10",
                    "--batch-size", "256", "--output", path("s.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("compare", path("c1.safetensors"), path("s.safetensors"), "--input", path("b.npy"), "--json")
        #expect(r.status == 0, "\(r.stderr)")
        let sub = ((try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any])["books"] as! [[String: Any]])[0]
        #expect((sub["subspaceDrift"] as? Double ?? 1) < 1e-5 && (sub["meanDrift"] as? Double ?? 0) > 1e-3, "\(sub)")
        // Two different quantizers, or the report over an input: one line, nothing written.
        r = try run("compare", path("c1.safetensors"), path("r1.safetensors"), "--input", path("b.npy"))
        #expect(r.status != 0 && r.stderr.contains("not two stages of one quantizer: a VectorQuantize and a ResidualVQ"), "\(r.stderr)")
        r = try run("compare", path("c1.safetensors"), path("c2.safetensors"), "--input", path("b.npy"), "--report", path("c1.safetensors"))
        #expect(r.status != 0 && FileManager.default.fileExists(atPath: path("c1.safetensors")))
        #expect(try tensor("c1.safetensors", "_codebook.embed").shape == [1, 32, 16])
    }

    @Test("--init applies and saves new training hyper-parameters; structural options are refused")
    func initKeepsFlags() throws {
        try writeData()
        var r = try run("train", "--input", path("a.npy"), "--codebook-size", "16", "--steps", "5", "--batch-size", "256",
                        "--output", path("m.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("train", "--input", path("b.npy"), "--init", path("m.safetensors"), "--decay", "0.5", "--dead-code-threshold", "2",
                    "--commitment-weight", "0.25", "--steps", "5", "--batch-size", "256", "--output", path("m2.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path("m2.json")))) as! [String: Any]
        let kw = config["kwargs"] as! [String: Any]
        #expect(kw["decay"] as? Double == 0.5)
        #expect(kw["threshold_ema_dead_code"] as? Double == 2)
        #expect(kw["commitment_weight"] as? Double == 0.25)
        // The dead-code threshold took effect: data far from every code revives them (all 16 used on b).
        r = try run("inspect", path("m2.safetensors"), "--input", path("b.npy"))
        #expect(r.status == 0 && r.stdout.contains("used 16/16"), "\(r.stdout)")

        for bad in [["--cosine"], ["--kmeans-init"], ["--heads", "2"], ["--residual", "2"], ["--fsq-levels", "5,5"], ["--codebook-size", "32"]] {
            r = try VQProcess.run(["train", "--input", path("b.npy"), "--init", path("m.safetensors"), "--steps", "1",
                                   "--output", path("bad.safetensors")] + bad)
            #expect(r.status != 0, "\(bad) was accepted")
            #expect(r.stderr.contains(bad[0]), "\(bad): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: path("bad.safetensors")))
        }
    }

    @Test("--freeze-dims, --freeze-subspace, --freeze-converged and vq freeze --dims: applied, held, saved and shown")
    func partialFreezes() throws {
        try writeData()
        var r = try run("train", "--input", path("a.npy"), "--codebook-size", "16", "--steps", "10", "--batch-size", "256",
                        "--freeze-dims", "0-3", "--output", path("d.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        let before = try tensor("d.safetensors", "_codebook.embed")
        r = try run("train", "--input", path("b.npy"), "--init", path("d.safetensors"), "--steps", "10", "--batch-size", "256",
                    "--output", path("d2.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        let after = try tensor("d2.safetensors", "_codebook.embed")
        var heldSame = true, freeMoved = false
        for code in 0..<16 {
            for j in 0..<16 {
                let i = code * 16 + j
                if j < 4 { heldSame = heldSame && before.scalars[i].bitPattern == after.scalars[i].bitPattern } else if before.scalars[i] != after.scalars[i] { freeMoved = true }
            }
        }
        #expect(heldSame && freeMoved)
        r = try run("inspect", path("d2.safetensors"))
        #expect(r.stdout.contains("frozen components: dimensions 0-3 of every code"), "\(r.stdout)")

        // A rank-2 subspace along the first two axes.
        var basis = [Float](repeating: 0, count: 32)
        basis[0] = 1
        basis[17] = 1
        try NumPyFile.write(.float(Tensor(basis, shape: [2, 16])), to: URL(fileURLWithPath: path("basis.npy")))
        r = try run("train", "--input", path("a.npy"), "--codebook-size", "16", "--steps", "10", "--batch-size", "256",
                    "--freeze-subspace", path("basis.npy"), "--output", path("s.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("inspect", path("s.safetensors"))
        #expect(r.stdout.contains("frozen subspace: rank 2 of 16"), "\(r.stdout)")
        try NumPyFile.write(.float(Tensor([1, 1] + [Float](repeating: 0, count: 14), shape: [1, 16])), to: URL(fileURLWithPath: path("bad.npy")))
        r = try run("train", "--input", path("a.npy"), "--codebook-size", "16", "--steps", "1", "--freeze-subspace", path("bad.npy"),
                    "--output", path("x.safetensors"))
        #expect(r.status != 0 && r.stderr.contains("orthonormal"), "\(r.stderr)")

        // Converged codes on a repeated batch (batch = the whole input).
        r = try run("train", "--input", path("b.npy"), "--codebook-size", "8", "--kmeans-init", "--steps", "30", "--batch-size", "3000",
                    "--freeze-converged", "0.01,3", "--output", path("c.safetensors"))
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("inspect", path("c.safetensors"))
        #expect(r.stdout.contains("frozen by a policy"), "\(r.stdout)")
        r = try run("train", "--input", path("b.npy"), "--codebook-size", "8", "--freeze-converged", "abc", "--output", path("x.safetensors"))
        #expect(r.status != 0 && r.stderr.contains("--freeze-converged"))

        // vq freeze --dims --codes: a block of codes × dimensions.
        r = try run("freeze", path("c.safetensors"), "--dims", "0-1", "--codes", "2-3")
        #expect(r.status == 0, "\(r.stderr)")
        r = try run("inspect", path("c.safetensors"))
        #expect(r.stdout.contains("frozen components of single codes: 4"), "\(r.stdout)")
        r = try run("freeze", path("c.safetensors"), "--dims", "0-99")
        #expect(r.status != 0 && r.stderr.contains("--dims"), "\(r.stderr)")
    }
}
