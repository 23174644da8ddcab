import Foundation
import Testing
import VQTensor
import VQTestSupport
import VectorQuantize

/// Random command lines over every command and every quantizer of the registry: options drawn from each
/// command's own (valid values, edges and garbage), on checkpoints of every kind. Each run ends with exit 0 or
/// one `vq: error:` line — never a trap — and a refused run writes nothing.
@Suite("vq: random command lines over every quantizer", .serialized)
struct CommandFuzzTests {
    let dir = VQProcess.temporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    static let values = ["0", "1", "2", "3", "-1", "7", "16", "64", "9223372036854775807", "0-3", "1,2", "0-1000", "x", "", "0.5", "nan", "1e30"]

    @Test("train, freeze, unfreeze, inspect, encode and decode with random options", arguments: [1, 2, 3])
    func commandLines(_ seed: Int) throws {
        var g = SeededGenerator(seed: UInt64(seed))
        func pick<T>(_ a: [T]) -> T { a[g.nextInt(below: a.count)] }
        // One checkpoint of every kind, and data of each kind's dimension.
        var checkpoints: [(String, Int, Int)] = []   // path, input dim, rows per unit
        for kind in QuantizerRegistry.kinds {
            let q = try kind.build(kind.example)
            let ckpt = path("\(kind.name).safetensors")
            try QuantizerCheckpoint.save(q, config: ModuleConfig(module: kind.name, kwargs: kind.example), to: URL(fileURLWithPath: ckpt))
            let unit = q.sequenceShape?.reduce(1, *) ?? 1
            let data = path("x\(q.inputDim)-\(unit).npy")
            if !FileManager.default.fileExists(atPath: data) {
                try NumPyFile.write(.float(TestSupport.random([unit * 40, q.inputDim], seed: 1)), to: URL(fileURLWithPath: data))
            }
            checkpoints.append((ckpt, q.inputDim, unit))
        }
        let trainOptions = ["--codebook-size", "--heads", "--decay", "--dead-code-threshold", "--commitment-weight", "--batch-size",
                            "--steps", "--residual", "--fsq-levels", "--expand-to", "--freeze", "--freeze-dims", "--freeze-converged",
                            "--layer", "--head", "--seed", "--lr", "--checkpoint-every", "--threads"]
        for i in 0..<60 {
            let (ckpt, dim, unit) = pick(checkpoints)
            let data = path("x\(dim)-\(unit).npy")
            var args: [String]
            switch g.nextInt(below: 6) {
            case 0:  // train from a checkpoint
                args = ["train", "--input", data, "--init", ckpt, "--steps", "2", "--batch-size", "16", "--output", path("t\(i).safetensors")]
            case 1:  // train from options
                args = ["train", "--input", data, "--codebook-size", "8", "--steps", "2", "--batch-size", "16", "--output", path("t\(i).safetensors")]
            case 2: args = [pick(["freeze", "unfreeze"]), ckpt, "--output", path("f\(i).safetensors")]
            case 3: args = ["inspect", ckpt, "--input", data]
            case 4: args = ["encode", "--checkpoint", ckpt, "--input", data, "--output", path("i\(i).npy")]
            default: args = ["decode", "--checkpoint", ckpt, "--input", pick([data, path("i\(Swift.max(0, i - 1)).npy")]), "--output", path("y\(i).npy")]
            }
            let options = args[0] == "train" ? trainOptions : ["--codes", "--dims", "--layer", "--head"]
            for _ in 0..<(1 + g.nextInt(below: 3)) where args[0] != "encode" && args[0] != "decode" && args[0] != "inspect" {
                let option = pick(options)
                if option == "--fsq-levels" { args += [option, pick(["8,5,5", "2", "1,1", "x"])] } else { args += [option, pick(Self.values)] }
            }
            if args[0] == "freeze" || args[0] == "unfreeze", !args.contains("--codes"), !args.contains("--dims") { args += ["--codes", "0"] }
            let before = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
            let r = try VQProcess.run(args)
            let label = args.map { $0.replacingOccurrences(of: dir.path + "/", with: "") }.joined(separator: " ")
            #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Precondition failed") && !r.stderr.contains("crashed"),
                    "seed \(seed) #\(i): \(label): \(r.stderr.prefix(300))")
            if r.status != 0 {
                let lines = r.stderr.split(separator: "\n").filter { !$0.contains(" warning ") }
                #expect(lines.count == 1 && lines[0].hasPrefix("vq: error: "), "seed \(seed) #\(i): \(label): \(r.stderr.prefix(300))")
                let after = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
                #expect(after == before, "seed \(seed) #\(i): \(label) was refused but wrote \(after.subtracting(before))")
            }
        }
    }
}
