import Foundation
import Testing
import VQTensor
import VQTestSupport
import VectorQuantize

/// Kills at random moments: a resumed run must end bit-identical to an uninterrupted one, and a
/// checkpoint must always load with the configuration it was written with.
@Suite("vq: kills, resumption and atomic checkpoints", .serialized)
struct DurabilityTests {
    let dir = VQProcess.temporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Starts `vq args`, sends SIGKILL after `seconds`, waits for it.
    func runKilled(_ args: [String], after seconds: Double) throws {
        let p = Process()
        p.executableURL = VQProcess.binary
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        usleep(useconds_t(seconds * 1e6))
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// Whether this process may mount a small file system in a private mount namespace (root, as CI runs).
    static let canMountSmallFileSystem: Bool = {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["unshare", "--mount", "--propagation", "private", "bash", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs \"$d\" && umount \"$d\" && rmdir \"$d\""]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }()

    /// Runs `vq args` with a 128 KiB file system mounted on `small` (in a private mount namespace, gone with it); the
    /// last line of standard output lists what was left on it.
    func runWithSmallFileSystem(at small: String, _ args: [String]) throws -> VQProcess.Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["unshare", "--mount", "--propagation", "private", "bash", "-c",
                       #"mount -t tmpfs -o size=128k tmpfs "$1" || exit 99; d=$1; shift; "$@"; s=$?; echo "left: $(ls -A "$d" | tr '\n' ' ')"; exit $s"#,
                       "_", small, VQProcess.binary.path] + args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return .init(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    @Test("a run whose checkpoint or state file cannot fit on its file system is refused before it trains; one that fits is written there",
          .enabled(if: canMountSmallFileSystem, "needs a private mount namespace (root)"))
    func fileSystemTooSmall() throws {
        try NumPyFile.write(.float(TestSupport.random([300, 8], seed: 4)), to: URL(fileURLWithPath: path("x.npy")))
        let small = path("small")
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        // 4,096 codes of 8 floats: codes, sums and counts are 278 KB at least, past the 128 KiB mounted.
        let big = ["train", "--input", path("x.npy"), "--codebook-size", "4096", "--steps", "2", "--batch-size", "100"]
        for (args, named) in [(big + ["--output", "\(small)/m.safetensors"], "--output \(small)/m.safetensors"),
                              (big + ["--output", path("m.safetensors"), "--checkpoint-every", "1", "--state", "\(small)/m.state.safetensors"], "--state \(small)/m.state.safetensors")] {
            let r = try runWithSmallFileSystem(at: small, args)
            #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1, "\(args): \(r.status) \(r.stderr)")
            #expect(r.stderr.hasPrefix("vq: error: \(named): needs at least ") && r.stderr.contains("free; nothing was done"), "\(r.stderr)")
            #expect(!r.stdout.contains("train step") && r.stdout.hasSuffix("left: \n"), "trained or left a file: \(r.stdout)")
            #expect(!FileManager.default.fileExists(atPath: path("m.safetensors")))
        }
        // 16 codes fit: trained and written on the small file system.
        let r = try runWithSmallFileSystem(at: small, ["train", "--input", path("x.npy"), "--codebook-size", "16", "--steps", "2",
                                                       "--output", "\(small)/m.safetensors"])
        #expect(r.status == 0 && r.stdout.contains("left: m.json m.safetensors"), "\(r.stdout) \(r.stderr)")
    }

    @Test("an interrupted command (Ctrl-C's SIGINT, a scheduler's SIGTERM, SIGHUP) removes its temporary and leaves the output as it was",
          arguments: [SIGINT, SIGTERM, SIGHUP])
    func interrupted(_ sig: Int32) throws {
        // A streamed encode keeps its output's temporary open for the whole run: wait until it exists, then signal.
        try NumPyFile.write(.float(TestSupport.random([120_000, 16], seed: 3)), to: URL(fileURLWithPath: path("x.npy")))
        let train = try VQProcess.run(["train", "--input", path("x.npy"), "--codebook-size", "512", "--steps", "1", "--batch-size", "1024",
                                       "--output", path("m.safetensors")])
        #expect(train.status == 0, "\(train.stderr)")
        try Data("earlier indices".utf8).write(to: URL(fileURLWithPath: path("i.npy")))
        let p = Process()
        p.executableURL = VQProcess.binary
        p.arguments = ["encode", "--checkpoint", path("m.safetensors"), "--input", path("x.npy"), "--output", path("i.npy")]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        func temporaries() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.contains(".tmp-") } }
        let deadline = Date().addingTimeInterval(120)
        while temporaries().isEmpty && p.isRunning && Date() < deadline { usleep(500) }
        let seen = !temporaries().isEmpty
        kill(p.processIdentifier, sig)
        p.waitUntilExit()
        try #require(seen, "the encode ended before its temporary was seen: the input is too small for this machine")
        #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == sig, "it ends by the signal (\(p.terminationStatus))")
        #expect(temporaries().isEmpty, "left \(temporaries())")
        #expect(FileManager.default.contents(atPath: path("i.npy")) == Data("earlier indices".utf8), "the output is as it was")
    }

    func step(ofState file: String) -> Int? {
        (try? SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: file)))?.metadata["step"].flatMap { Int($0) }
    }

    @Test("a run killed at random steps and resumed ends bit-identical to an uninterrupted run")
    func resumeAfterKill() throws {
        try NumPyFile.write(.float(TestSupport.random([2000, 16], seed: 5)), to: URL(fileURLWithPath: path("x.npy")))
        let common = ["train", "--input", path("x.npy"), "--codebook-size", "32", "--kmeans-init", "--dead-code-threshold", "2",
                      "--steps", "2500", "--batch-size", "128", "--seed", "9"]
        var r = try VQProcess.run(common + ["--output", path("full.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
        let full = try Data(contentsOf: URL(fileURLWithPath: path("full.safetensors")))
        var g = SeededGenerator(seed: 77)
        var resumedFrom: [Int] = []
        for attempt in 0..<4 {
            let out = path("r\(attempt).safetensors"), state = path("r\(attempt).state.safetensors")
            // Kill somewhere in the run, once more during the resumed run, then let it finish.
            try runKilled(common + ["--output", out, "--checkpoint-every", "1"], after: 0.25 + Double(g.nextInt(below: 600)) / 1000)
            if let s = step(ofState: state) { resumedFrom.append(s) }
            if FileManager.default.fileExists(atPath: state) {
                try runKilled(common + ["--output", out, "--checkpoint-every", "1", "--resume", state], after: 0.2 + Double(g.nextInt(below: 300)) / 1000)
            }
            if FileManager.default.fileExists(atPath: state) {
                r = try VQProcess.run(common + ["--output", out, "--checkpoint-every", "1", "--resume", state])
                #expect(r.status == 0, "\(r.stderr)")
            }
            #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == full, "attempt \(attempt): the resumed checkpoint differs")
            #expect(!FileManager.default.fileExists(atPath: state), "the state of a finished run is removed")
        }
        #expect(!resumedFrom.isEmpty, "no kill landed inside a run (the test must exercise resumption)")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }
        #expect(leftovers.count <= 1, "temporary files of killed writers pile up: \(leftovers)")
    }

    @Test("resuming with other options is refused")
    func resumeMismatch() throws {
        try NumPyFile.write(.float(TestSupport.random([400, 8], seed: 6)), to: URL(fileURLWithPath: path("y.npy")))
        let common = ["train", "--input", path("y.npy"), "--codebook-size", "8", "--batch-size", "50", "--seed", "1", "--output", path("m.safetensors")]
        try runKilled(common + ["--steps", "100000", "--checkpoint-every", "1"], after: 0.5)
        let state = path("m.state.safetensors")
        #expect(FileManager.default.fileExists(atPath: state))
        let r = try VQProcess.run(common + ["--steps", "99999", "--resume", state])
        #expect(r.status != 0 && r.stderr.contains("--resume"), "\(r.stderr)")
    }

    @Test("a resumption keeps the run's model options, refuses other ones and damaged states, and knows its input by identity")
    func resumeContract() throws {
        try NumPyFile.write(.float(TestSupport.random([400, 8], seed: 6)), to: URL(fileURLWithPath: path("w.npy")))
        let data = ["--batch-size", "50", "--seed", "1", "--steps", "8"]
        let start = ["train", "--input", path("w.npy"), "--codebook-size", "8", "--decay", "0.9"] + data
        var r = try VQProcess.run(start + ["--output", path("full.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
        // A state at step 4 of 8.
        r = try VQProcess.run(start + ["--output", path("o.safetensors"), "--checkpoint-every", "4", "--failure-drill", "0:5:exit"])
        let state = path("o.state.safetensors")
        #expect(FileManager.default.fileExists(atPath: state), "\(r.stderr)")
        let good = try Data(contentsOf: URL(fileURLWithPath: state))
        // Other model options are refused, naming the option.
        for extra in [["--residual", "3"], ["--cosine"], ["--decay", "0.5"], ["--codebook-size", "16"], ["--heads", "2"], ["--kmeans-init"]] {
            r = try VQProcess.run(["train", "--input", path("w.npy")] + data + extra + ["--output", path("o.safetensors"), "--resume", state])
            #expect(r.status != 0 && r.stderr.contains(extra[0]), "\(extra): \(r.stderr)")
            #expect(try !FileManager.default.fileExists(atPath: path("o.safetensors")) && Data(contentsOf: URL(fileURLWithPath: state)) == good)
        }
        // A flipped bit anywhere in a tensor is refused.
        var bytes = [UInt8](good)
        bytes[bytes.count - 9] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: path("bad.state.safetensors")))
        r = try VQProcess.run(["train", "--input", path("w.npy")] + data + ["--output", path("b.safetensors"), "--resume", path("bad.state.safetensors")])
        #expect(r.status != 0 && r.stderr.contains("damaged"), "\(r.stderr)")
        // No model option needed (the state carries the model); the input spelled another way is the same input.
        r = try VQProcess.run(["train", "--input", dir.path + "/./w.npy"] + data + ["--output", path("o.safetensors"), "--resume", state])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path("o.safetensors"))) == Data(contentsOf: URL(fileURLWithPath: path("full.safetensors"))))
    }

    @Test("a quantizer trained by Adam (LFQ's projections) resumes bit-identically: the optimizer's moments are in the state")
    func resumeGradientTraining() throws {
        try NumPyFile.write(.float(TestSupport.random([512, 8], seed: 12)), to: URL(fileURLWithPath: path("g.npy")))
        let lfq = path("lfq.safetensors")
        try Data(#"{"module": "LFQ", "kwargs": {"dim": 8, "codebook_size": 64}}"#.utf8).write(to: URL(fileURLWithPath: path("lfq.json")))
        // An untrained LFQ checkpoint: a PyTorch-style state dict beside its config (the projections are random).
        var r = try VQProcess.run(["train", "--input", path("g.npy"), "--init", path("seed.safetensors"), "--steps", "1", "--output", lfq])
        #expect(r.status != 0, "no such checkpoint yet")
        let q = try LFQ(LFQ.Configuration(referenceKwargs: ["dim": 8, "codebook_size": 64]))
        try QuantizerCheckpoint.save(q, config: ModuleConfig(module: "LFQ", kwargs: ["dim": 8, "codebook_size": 64]), to: URL(fileURLWithPath: lfq))
        let common = ["train", "--input", path("g.npy"), "--init", lfq, "--steps", "12", "--batch-size", "64", "--seed", "4", "--lr", "0.01"]
        r = try VQProcess.run(common + ["--output", path("full.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
        r = try VQProcess.run(common + ["--output", path("cut.safetensors"), "--checkpoint-every", "5", "--failure-drill", "0:8:exit"])
        #expect(r.status != 0 && FileManager.default.fileExists(atPath: path("cut.state.safetensors")))
        let state = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path("cut.state.safetensors")))
        #expect(state.tensors.keys.contains { $0.hasPrefix("optim/") }, "the state holds Adam's moments")
        r = try VQProcess.run(["train", "--input", path("g.npy"), "--steps", "12", "--batch-size", "64", "--seed", "4", "--lr", "0.01",
                               "--output", path("cut.safetensors"), "--resume", path("cut.state.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
        let full = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path("full.safetensors"))).tensors
        let resumed = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path("cut.safetensors"))).tensors
        #expect(full == resumed, "the resumed run's parameters differ from the uninterrupted run's")
        #expect(full != (try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: lfq)).tensors), "Adam trained the projections")
    }

    @Test("a run started from --config (EMA and Adam) resumes bit-identically, without the option", arguments: [
        #"{"module": "SimVQ", "kwargs": {"codebook_size": 32}}"#,
        #"{"module": "ResidualVQ", "kwargs": {"codebook_size": 16, "num_quantizers": 2, "codebook_dim": 4, "kmeans_init": true}}"#])
    func resumeConfiguredRun(_ json: String) throws {
        try NumPyFile.write(.float(TestSupport.random([512, 8], seed: 13)), to: URL(fileURLWithPath: path("g.npy")))
        try Data(json.utf8).write(to: URL(fileURLWithPath: path("model.json")))
        let options = ["--steps", "12", "--batch-size", "64", "--seed", "6"]
        var r = try VQProcess.run(["train", "--input", path("g.npy"), "--config", path("model.json"), "--output", path("full.safetensors")] + options)
        #expect(r.status == 0, "\(r.stderr)")
        r = try VQProcess.run(["train", "--input", path("g.npy"), "--config", path("model.json"), "--output", path("cut.safetensors"),
                               "--checkpoint-every", "5", "--failure-drill", "0:8:exit"] + options)
        #expect(r.status != 0 && FileManager.default.fileExists(atPath: path("cut.state.safetensors")))
        // --config belongs to the run's first start: the state holds the quantizer.
        r = try VQProcess.run(["train", "--input", path("g.npy"), "--config", path("model.json"), "--output", path("cut.safetensors"),
                               "--resume", path("cut.state.safetensors")] + options)
        #expect(r.status != 0 && r.stderr.contains("--resume contradicts --config"), "\(r.stderr)")
        r = try VQProcess.run(["train", "--input", path("g.npy"), "--output", path("cut.safetensors"), "--resume", path("cut.state.safetensors")] + options)
        #expect(r.status == 0, "\(r.stderr)")
        let full = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path("full.safetensors")))
        let resumed = try SafeTensorsFile.read(contentsOf: URL(fileURLWithPath: path("cut.safetensors")))
        #expect(full.tensors == resumed.tensors && full.metadata["config_json"] == resumed.metadata["config_json"], "the resumed run differs")
    }

    @Test("a checkpoint loads with its own configuration after a kill between the checkpoint and its sidecar")
    func checkpointPair() throws {
        try NumPyFile.write(.float(TestSupport.random([300, 8], seed: 7)), to: URL(fileURLWithPath: path("z.npy")))
        var r = try VQProcess.run(["train", "--input", path("z.npy"), "--codebook-size", "8", "--steps", "3", "--output", path("a.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
        r = try VQProcess.run(["train", "--input", path("z.npy"), "--codebook-size", "16", "--steps", "3", "--output", path("b.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
        // The state of a kill after the checkpoint's rename and before the sidecar's: new checkpoint, old sidecar.
        try FileManager.default.removeItem(atPath: path("b.json"))
        try FileManager.default.copyItem(atPath: path("a.json"), toPath: path("b.json"))
        r = try VQProcess.run(["inspect", path("b.safetensors")])
        #expect(r.status == 0 && r.stdout.contains("16 codes"), "\(r.stdout) \(r.stderr)")
        #expect(r.stderr.contains("does not match"), "the disagreeing sidecar is reported")
        r = try VQProcess.run(["encode", "--checkpoint", path("b.safetensors"), "--input", path("z.npy"), "--output", path("i.npy")])
        #expect(r.status == 0, "\(r.stderr)")

        // Real kills while `vq freeze` rewrites the pair: whatever instant, the checkpoint loads.
        var g = SeededGenerator(seed: 3)
        for k in 0..<12 {
            try runKilled(["freeze", path("b.safetensors"), "--codes", "\(k % 16)"], after: Double(g.nextInt(below: 40)) / 1000)
            r = try VQProcess.run(["inspect", path("b.safetensors")])
            #expect(r.status == 0 && r.stdout.contains("16 codes"), "after kill \(k): \(r.stderr)")
        }
        r = try VQProcess.run(["freeze", path("b.safetensors"), "--codes", "0"])
        #expect(r.status == 0)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty, "a completed write removes the temporaries of killed writers: \(leftovers)")
    }
}
