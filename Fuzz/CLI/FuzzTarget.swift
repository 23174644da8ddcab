// The fuzz target of every path by which outside bytes reach the library and the `vq` tool: the three
// file readers, the streamed reader, index files on their way to `decode` (shape and range checks), and
// configuration JSON (a sidecar or `--config`) on its way to a built quantizer. Any byte string must be
// accepted or rejected with a typed error — never trap, hang or allocate without bound.
//
// Built two ways from this one file (see Fuzz/run.sh):
// - `swift build` (the package): the `vq-fuzz` replay tool, which runs the target on files given as
//   arguments (a crash input from libFuzzer, or a corpus) — so the target always compiles;
// - with `-sanitize=fuzzer,address -DFUZZING`: the libFuzzer binary.
import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// Fixed small quantizers and their checkpoint, made once.
enum Fixtures {
    static let dir: URL = {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("vq-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }()
    static let checkpoint: URL = {
        let url = dir.appendingPathComponent("vq.safetensors")
        let config = ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 4, "codebook_size": 8])
        try! QuantizerCheckpoint.save(try! config.build(), config: config, to: url)
        return url
    }()
    static let state = StateFixture.make(in: dir)
    nonisolated(unsafe) static let quantizers: [any Quantizer] = {
        var fsq = FSQ.Configuration(levels: [5, 3])
        fsq.dim = 4
        var rvq = ResidualVQConfiguration(dim: 4, numQuantizers: 2, codebookSize: 8)
        rvq.layer.seed = 1
        return [try! VectorQuantizer(VectorQuantizerConfiguration(dim: 4, codebookSize: 8)), try! ResidualVQ(rvq),
                try! GroupedResidualVQ(.init(dim: 4, groups: 2, residual: ResidualVQConfiguration(dim: 2, numQuantizers: 2, codebookSize: 4))),
                try! FSQ(fsq)]
    }()
}

/// Runs one input. The first byte picks the path; the rest is the file's content.
func fuzzOne(_ bytes: Data) {
    guard let selector = bytes.first else { return }
    let body = Data(bytes.dropFirst())
    switch selector % 8 {
    case 6, 7:
        // Structured cases seeded by the input: a mutated configuration of any quantizer, or a mutated state.
        var seed: UInt64 = 0
        for b in body.prefix(8) { seed = seed << 8 | UInt64(b) }
        var rng = SeededGenerator(seed: seed)
        if selector % 8 == 6 {
            var mutator = ConfigMutator(seed: seed)
            runConfiguration(mutator.next(), rng: &rng, scratch: Fixtures.dir)
        } else {
            runState(Fixtures.state.0, rng: &rng, url: Fixtures.dir.appendingPathComponent("mutated.safetensors"))
        }
    case 0: _ = try? SafeTensorsFile.parse(body)
    case 1: _ = try? NumPyFile.parse(body)
    case 2: _ = try? VecsFile.parse(body, kind: [.fvecs, .ivecs, .bvecs][Int(selector / 6) % 3])
    case 3:
        // A file read in pieces, as `vq encode/decode/inspect` read their inputs.
        let ext = ["npy", "safetensors", "fvecs", "ivecs", "bvecs"][Int(selector / 6) % 5]
        let url = Fixtures.dir.appendingPathComponent("stream.\(ext)")
        guard (try? body.write(to: url)) != nil, let r = try? TensorFileReader(path: url.path) else { return }
        let step = Swift.max(1, r.shape.last ?? 1)
        var start = 0
        while start < r.count {
            let end = Swift.min(r.count, start + 64 * step)
            guard (try? r.elements(start..<end)) != nil else { return }
            start = end
        }
    case 4:
        // An index file on its way to decode: read, shape- and range-checked, decoded.
        let url = Fixtures.dir.appendingPathComponent("indices.npy")
        guard (try? body.write(to: url)) != nil, let r = try? TensorFileReader(path: url.path), r.count <= 1 << 16,
              let t = try? r.elements(0..<r.count), let flat = t.asIndices else { return }
        let q = Fixtures.quantizers[Int(selector / 6) % Fixtures.quantizers.count]
        let indices = flat.reshaped(r.shape)
        guard (try? q.validate(indices: indices)) != nil else { return }
        _ = try? q.decode(indices)
    default:
        // Configuration JSON for a checkpoint, as a sidecar or `--config`: parsed, checked against the
        // checkpoint's tensors, built and loaded — or rejected.
        let url = Fixtures.dir.appendingPathComponent("config.json")
        guard (try? body.write(to: url)) != nil else { return }
        _ = try? QuantizerCheckpoint.load(Fixtures.checkpoint, config: url)
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(Data(bytes: data, count: size))
    return 0
}
#else
@main
enum Replay {
    static func main() {
        let args = Array(CommandLine.arguments.dropFirst())
        let modes: [String: FuzzMode] = ["--configs": .configs, "--states": .states, "--checkpoints": .checkpoints, "--calls": .calls]
        if let flag = args.first, let mode = modes[flag] {
            let count = args.count > 1 ? Int(args[1]) ?? 1000 : 1000
            let seed = args.count > 3 && args[2] == "--seed" ? UInt64(args[3]) ?? 0 : 0
            runStructured(mode, count: count, seed: seed)
            return
        }
        if args.first == "--commands" {
            let count = args.count > 1 ? Int(args[1]) ?? 100 : 100
            func value(_ flag: String) -> String? { args.firstIndex(of: flag).flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil } }
            let vq = value("--vq").map { URL(fileURLWithPath: $0) }
                ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("vq")
            runCommands(count: count, seed: value("--seed").flatMap { UInt64($0) } ?? 0, vq: vq.standardizedFileURL,
                        limit: value("--limit").flatMap { Double($0) } ?? 60)
            return
        }
        let files = args
        if files.isEmpty {
            print("usage: vq-fuzz FILE…   (runs the fuzz target on each file; Fuzz/run.sh builds the libFuzzer binary)")
            print("       vq-fuzz --configs N [--seed S]   N mutated configurations of every quantizer")
            print("       vq-fuzz --states N [--seed S]    N mutated resumable training states")
            print("       vq-fuzz --checkpoints N [--seed S]   N checkpoints of every quantizer with values set to extremes")
            print("       vq-fuzz --calls N [--seed S]   N sequences of library calls with edge-value arguments on every quantizer")
            print("       vq-fuzz --commands N [--seed S] [--vq PATH] [--limit SECONDS]   N random `vq` command lines over every quantizer")
            return
        }
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else { print("\(f): unreadable"); continue }
            fuzzOne(data)
            print("\(f): ok")
        }
    }
}
#endif
