// Structured fuzzing of the tool: random `vq` command lines — every option of every command, read from the tool's
// own description (`vq --experimental-dump-help`), with values at and past every edge and paths that name the
// command's inputs, its other outputs, folders, links, a named pipe, a device, missing folders — over checkpoints of
// every quantizer. Each run is a separate process in a scratch workspace. The properties, each a `fatalError` naming
// the command line:
// - the run ends by exiting (no signal, no trap message), with 0, or with exactly one `vq: error: ` line (never empty);
// - a refused run leaves the workspace bit-identical (every file, link and folder; nothing added or removed);
// - a run that succeeds changes only files it was asked to write (an output, its config sidecar, the state file
//   `--checkpoint-every` names, a report, a demo's or example's report in its folder) — never an input;
// - a checkpoint it writes loads, and indices it writes decode: never exit 0 with a wrong result.
// A run past its time limit is stopped (a long run the options asked for) and counted; it must still not have
// touched an input.
import Foundation
import VQTensor
import VectorQuantize

/// One argument of one command, as the tool describes it.
struct ToolArgument {
    enum Kind: String { case option, flag, positional }
    let kind: Kind
    let name: String        // the long name (options, flags) or the value's name (positionals)
    let optional: Bool
    var spelling: String { "--" + name }
}

/// A command path (`["example", "autoencoder"]`) and its arguments.
struct ToolCommand {
    let path: [String]
    let arguments: [ToolArgument]
}

/// The commands and their arguments, from `vq --experimental-dump-help` (so a new option is fuzzed the day it
/// exists). `help` and `--version`/`--help` flags are left out.
func toolCommands(_ vq: URL) -> [ToolCommand] {
    let run = runTool(vq, ["--experimental-dump-help"], in: Fixtures.dir, limit: 60)
    guard run.status == 0, let json = try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any],
          let root = json["command"] as? [String: Any] else {
        fatalError("vq-fuzz: `\(vq.path) --experimental-dump-help` gave no description: \(run.stderr.prefix(300))")
    }
    var commands: [ToolCommand] = []
    func walk(_ c: [String: Any], _ path: [String]) {
        let subs = (c["subcommands"] as? [[String: Any]]) ?? []
        if subs.isEmpty, !path.isEmpty {
            let arguments: [ToolArgument] = ((c["arguments"] as? [[String: Any]]) ?? []).compactMap { a in
                guard let kind = (a["kind"] as? String).flatMap(ToolArgument.Kind.init(rawValue:)) else { return nil }
                let names = (a["names"] as? [[String: Any]]) ?? []
                let long = names.first { ($0["kind"] as? String) == "long" }?["name"] as? String
                guard let name = kind == .positional ? a["valueName"] as? String : long,
                      !["help", "version", "experimental-dump-help"].contains(name) else { return nil }
                return ToolArgument(kind: kind, name: name, optional: (a["isOptional"] as? Bool) ?? true)
            }
            commands.append(ToolCommand(path: path, arguments: arguments))
        }
        for s in subs {
            guard let name = s["commandName"] as? String, name != "help" else { continue }
            walk(s, path + [name])
        }
    }
    walk(root, [])
    return commands
}

/// How one run of the tool ended.
struct ToolRun {
    var status: Int32 = 0
    var signalled = false
    var timedOut = false
    var interrupted = false   // ended by the SIGTERM it was sent
    var stdout = ""
    var stderr = ""
}

/// Runs `vq args` with `dir` as its working folder, its output in files of the scratch folder (no pipe to fill), stopped after
/// `limit` seconds.
func runTool(_ vq: URL, _ args: [String], in dir: URL, limit: Double, interruptAfter: Double? = nil) -> ToolRun {
    let out = Fixtures.dir.appendingPathComponent("stdout.txt"), err = Fixtures.dir.appendingPathComponent("stderr.txt")
    defer { try? FileManager.default.removeItem(at: out); try? FileManager.default.removeItem(at: err) }
    guard FileManager.default.createFile(atPath: out.path, contents: nil), FileManager.default.createFile(atPath: err.path, contents: nil),
          let o = FileHandle(forWritingAtPath: out.path), let e = FileHandle(forWritingAtPath: err.path) else {
        fatalError("vq-fuzz: cannot make the output files in \(Fixtures.dir.path)")
    }
    let p = Process()
    p.executableURL = vq
    p.arguments = args
    p.currentDirectoryURL = dir
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = o
    p.standardError = e
    do { try p.run() } catch { fatalError("vq-fuzz: cannot start \(vq.path): \(error)") }
    var run = ToolRun()
    let deadline = Date().addingTimeInterval(limit)
    let interrupt = interruptAfter.map { Date().addingTimeInterval($0) }
    while p.isRunning {
        if let interrupt, !run.interrupted, Date() > interrupt {
            run.interrupted = true
            kill(p.processIdentifier, SIGTERM)   // a scheduler's stop (SIGINT, Ctrl-C, is ignored in a background job)
        }
        if Date() > deadline {
            run.timedOut = true
            kill(p.processIdentifier, SIGKILL)   // a kill anywhere: what is left must still be consistent
            p.waitUntilExit()
            break
        }
        usleep(5_000)
    }
    p.waitUntilExit()
    try? o.close()
    try? e.close()
    run.status = p.terminationStatus
    run.signalled = p.terminationReason == .uncaughtSignal && !run.timedOut
    if run.signalled && run.interrupted && run.status == SIGTERM { run.signalled = false } else { run.interrupted = false }
    run.stdout = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
    run.stderr = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
    return run
}

/// What a folder holds, recursively: each entry's kind and bytes (a link's target, a pipe's or device's mode).
func folderSnapshot(_ dir: URL) -> [String: Data] {
    var result: [String: Data] = [:]
    func walk(_ rel: String) {
        let full = rel.isEmpty ? dir.path : dir.path + "/" + rel
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: full) else { return }
        for name in names {
            let r = rel.isEmpty ? name : rel + "/" + name
            let p = dir.path + "/" + r
            var st = stat()
            guard lstat(p, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: result[r + "/"] = Data("folder".utf8); walk(r)
            case S_IFLNK: result[r] = Data(("link → " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: p)) ?? "?")).utf8)
            case S_IFREG: result[r] = FileManager.default.contents(atPath: p) ?? Data("unreadable".utf8)
            default: result[r] = Data("special \(st.st_mode) \(st.st_rdev)".utf8)
            }
        }
    }
    walk("")
    return result
}

/// The scratch workspace: a checkpoint of every quantizer given (trained two steps, a code, a component and a subspace
/// frozen), vectors of every input dimension in each format the tool reads, indices the tool wrote, subspace bases,
/// a user's notes, a folder, links, a named pipe and a character device.
struct CommandWorkspace {
    struct Checkpoint { let file: String; let later: String; let learned: Bool; let dim: Int; let data: String; let indices: String }
    let dir: URL
    var checkpoints: [Checkpoint] = []
    var readables: [String] = []   // every file a path option may name to read

    init(dir: URL, vq: URL, configurations: [ModuleConfig]) {
        self.dir = dir
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var rng = SeededGenerator(seed: 17)
        var dims = Set<String>()
        for (i, config) in configurations.enumerated() {
            guard let q = CheckpointFixture.prepared(config, rng: &rng) else { continue }
            let file = "c\(i)-\(config.module).safetensors"
            guard (try? QuantizerCheckpoint.save(q, config: config, to: dir.appendingPathComponent(file))) != nil else { continue }
            // a later stage of it, for `compare`: trained one step more
            let unit = q.sequenceShape?.reduce(1, *) ?? 1
            let later = "s\(i)-\(config.module).safetensors"
            q.train()
            _ = q.forward(vectors: Tensor.randomNormal([2, q.sequenceShape?.reduce(1, *) ?? 8, q.inputDim], using: &rng))
            q.eval()
            guard (try? QuantizerCheckpoint.save(q, config: config, to: dir.appendingPathComponent(later))) != nil else { continue }
            let data = "x\(q.inputDim)-\(unit).npy"
            if !dims.contains(data) {
                dims.insert(data)
                let x = Tensor.randomNormal([unit * 24, q.inputDim], using: &rng)
                try! NumPyFile.write(.float(x), to: dir.appendingPathComponent(data))
                readables.append(data)
                try! NumPyFile.write(.float(Tensor(Array(repeating: 0, count: q.inputDim - 1) + [1], shape: [1, q.inputDim])),
                                     to: dir.appendingPathComponent("basis\(q.inputDim).npy"))
                readables.append("basis\(q.inputDim).npy")
            }
            let indices = "i\(i).npy"
            let r = runTool(vq, ["encode", "--checkpoint", file, "--input", data, "--output", indices], in: dir, limit: 120)
            checkpoints.append(Checkpoint(file: file, later: later, learned: !q.learnedCodebooks.isEmpty, dim: q.inputDim, data: data,
                                          indices: r.status == 0 ? indices : data))
            readables += [file, later, ModuleConfig.sidecar(of: URL(fileURLWithPath: file)).lastPathComponent] + (r.status == 0 ? [indices] : [])
        }
        // The same vectors in the other formats the tool reads; a user's files the tool must never touch.
        let x = Tensor.randomNormal([24, 8], using: &rng)
        var fvecs = Data()
        for row in 0..<24 {
            withUnsafeBytes(of: Int32(8).littleEndian) { fvecs.append(contentsOf: $0) }
            for v in x.scalars[(row * 8)..<(row * 8 + 8)] { withUnsafeBytes(of: v.bitPattern.littleEndian) { fvecs.append(contentsOf: $0) } }
        }
        try! fvecs.write(to: dir.appendingPathComponent("x8.fvecs"))
        var file = SafeTensorsFile(metadata: [:])
        file.tensors["x"] = .float(x)
        try! file.write(to: dir.appendingPathComponent("data.safetensors"))
        try! Data("my notes\n".utf8).write(to: dir.appendingPathComponent("notes.txt"))
        try! Data("{\"not\": \"a config\"}".utf8).write(to: dir.appendingPathComponent("settings.json"))
        try! FileManager.default.createDirectory(at: dir.appendingPathComponent("sub"), withIntermediateDirectories: true)
        try! Data("kept".utf8).write(to: dir.appendingPathComponent("sub/kept.txt"))
        try! FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("link.safetensors").path, withDestinationPath: checkpoints[0].file)
        try! FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("dangling.npy").path, withDestinationPath: "nowhere/x.npy")
        _ = link(dir.appendingPathComponent(checkpoints[1].file).path, dir.appendingPathComponent("hard.safetensors").path)
        _ = mknod(dir.appendingPathComponent("null.npy").path, S_IFCHR | 0o666, makedev(1, 3))   // as /dev/null (root only)
        _ = mkfifo(dir.appendingPathComponent("pipe.npy").path, 0o644)   // no writer: an open for reading would wait
        readables += ["x8.fvecs", "data.safetensors:x", "data.safetensors:nope", "notes.txt", "settings.json", "sub", "sub/kept.txt",
                      "link.safetensors", "dangling.npy", "hard.safetensors", "null.npy", "pipe.npy", "missing.npy", ""]
    }
}

private func makedev(_ major: UInt32, _ minor: UInt32) -> dev_t { dev_t((major << 8) | minor) }

/// The values an argument draws: paths for the path arguments (read or written), values at and past every edge for
/// the others, with a few of each argument's own valid words.
enum CommandValues {
    static let reads: Set<String> = ["input", "init", "resume", "config", "checkpoint", "old", "new", "freeze-subspace"]
    static let writes: Set<String> = ["output", "report", "state"]
    static let numbers = ["0", "1", "2", "3", "4", "-1", "7", "16", "64", "9223372036854775807", "-9223372036854775808",
                          "18446744073709551615", "0.5", "-0.5", "nan", "inf", "-inf", "1e30", "1e-30", "-0", "0x10", "+3", " 4",
                          "", "x", "1,2", "0-3", "1e309"]
    static let own: [String: [String]] = [
        "fsq-levels": ["8,5,5", "8,5,5,5", "2", "1,1", "3,0", "65536,65536", "8,,5", "-8,5"],
        "codes": ["0-3", "1,2", "0-1000", "3-1", "0,0", "0-", "-3-2", "5"],
        "dims": ["0-3", "0", "7", "0-1000", "3-1"],
        "keys": ["project_in", "project_in,project_out.weight", "layers.0", "layers.1.project_in.weight", "_codebook", "_codebook.embed",
                 "nope", ",", "project_in,,x", " project_out ", "codebook_transform", "values_per_latent.0"],
        "freeze": ["0-3", "1,2", "0-1000", "3-1"], "freeze-dims": ["0-1", "7", "0-1000"],
        "freeze-converged": ["0.005,20", "0.1", "nan,1", "0.1,0", "1,-1", "-1,2", "x,y"],
        "policy": ["0.005,20", "nan,1", "0.1,0", "1,-1", "x"],
        "quantizer": ["vq", "fsq", "lfq", "simvq", "rvq", "fsp", "hvq", "VQ", "x"],
        "stage2-trains": ["none", "encoder", "all", "x"],
        "only": ["e_fsq_8555", "k_fsq_grad", "l_lfq_grad", "x", "e_fsq_8555,e_fsq_8555", "scaling_x", ""],
        "fail-at": ["0:1:exit", "1:0:exit", "x"],
    ]
    static let freshExtensions = ["safetensors", "npy", "fvecs", "ivecs", "html", "json", "state.safetensors", "txt", ""]

    static func fresh(_ rng: inout SeededGenerator, _ ext: String) -> String {
        "o\(rng.nextInt(below: 1_000_000))" + (ext.isEmpty ? "" : "." + ext)
    }

    /// A path spelt one of the ways a user might: as it is, with `./`, through `sub/..`, absolute.
    static func spelt(_ path: String, _ dir: URL, _ rng: inout SeededGenerator) -> String {
        guard !path.isEmpty else { return path }
        switch rng.nextInt(below: 8) {
        case 0: return "./" + path
        case 1: return "sub/../" + path
        case 2: return dir.path + "/" + path
        default: return path
        }
    }

    static func value(for argument: String, _ ws: CommandWorkspace, _ rng: inout SeededGenerator) -> String {
        func pick<T>(_ a: [T]) -> T { a[rng.nextInt(below: a.count)] }
        if reads.contains(argument) || writes.contains(argument) {
            let roll = rng.nextInt(below: 10)
            let path: String
            if writes.contains(argument) && roll < 5 {
                path = pick(["", "sub/", "missing/"]) + fresh(&rng, pick(freshExtensions))
            } else if roll < 8 {
                path = pick(ws.readables)
            } else {
                // names past 255 bytes, of exactly 255 and of 240 (writable: a temporary's name must still fit), a folder
                // name past 255 bytes, a path past PATH_MAX
                path = pick([".", "sub", "/", "missing/x.npy", "o.safetensors:x", "sub/kept.txt/x.npy", String(repeating: "a", count: 300) + ".npy",
                             String(repeating: "b", count: 251) + ".npy", String(repeating: "c", count: 228) + ".safetensors",
                             "new/" + String(repeating: "d", count: 300) + "/x.npy",
                             (0..<17).map { _ in String(repeating: "e", count: 250) }.joined(separator: "/") + "/x.npy"])
            }
            return spelt(path, ws.dir, &rng)
        }
        return rng.nextInt(below: 3) == 0 || own[argument] == nil ? pick(numbers) : pick(own[argument]!)
    }
}

/// A command line that reaches the command's work (the right files for the checkpoint, few steps), for `command`.
func baseCommandLine(_ command: ToolCommand, _ ws: CommandWorkspace, _ rng: inout SeededGenerator) -> [String] {
    func pick<T>(_ a: [T]) -> T { a[rng.nextInt(below: a.count)] }
    let ck = pick(ws.checkpoints)
    let out = CommandValues.fresh(&rng, "safetensors")
    switch command.path.joined(separator: " ") {
    case "train":
        // continued, new from the options, or new from a configuration (the checkpoint's own sidecar)
        let start = pick([["--init", ck.file], ["--codebook-size", "8"], ["--config", ModuleConfig.sidecar(of: URL(fileURLWithPath: ck.file)).lastPathComponent]])
        return ["train", "--input", ck.data] + start + ["--steps", "2", "--batch-size", "16", "--output", out]
    case "encode": return ["encode", "--checkpoint", ck.file, "--input", ck.data, "--output", CommandValues.fresh(&rng, "npy")]
    case "decode": return ["decode", "--checkpoint", ck.file, "--input", ck.indices, "--output", CommandValues.fresh(&rng, "npy")]
    case "inspect": return ["inspect", ck.file] + (rng.nextInt(below: 2) == 0 ? ["--input", ck.data] : [])
    case "compare":
        let other = rng.nextInt(below: 8) == 0 ? pick(ws.checkpoints.filter { $0.dim == ck.dim }).file : ck.later
        return ["compare", ck.file, other, "--input", ck.data]
    case "freeze", "unfreeze":
        let learned = pick(ws.checkpoints.filter(\.learned))
        return [command.path[0], learned.file, "--codes", "0"] + (rng.nextInt(below: 3) == 0 ? [] : ["--output", out])
    case "export": return ["export", ck.file, "--output", out]
    case "quickstart": return ["quickstart", "--vectors", "200", "--dim", "8", "--codes", "4", "--iterations", "2"]
    case "bench": return ["bench", "--only", pick(["e_fsq_8555", "k_fsq_grad", "l_lfq_grad"]), "--budget", "0"]
    case "demo": return ["demo", "--steps", "2", "--seeds", "1", "--output", "d\(rng.nextInt(below: 1_000_000))"]
    default: return command.path + ["--steps", "2", "--batch-size", "8"]
    }
}

/// One to three changes to a command line: an argument added (any of the command's, with a drawn value), a value
/// replaced, an argument removed, a stray token.
func mutateCommandLine(_ args: inout [String], _ command: ToolCommand, _ ws: CommandWorkspace, _ rng: inout SeededGenerator) {
    let options = command.arguments.filter { $0.kind != .positional }
    for _ in 0..<(1 + rng.nextInt(below: 3) / 2) {
        let start = command.path.count
        switch rng.nextInt(below: 10) {
        case 0..<4 where !options.isEmpty:
            let a = options[rng.nextInt(below: options.count)]
            args += a.kind == .flag ? [a.spelling] : [a.spelling, CommandValues.value(for: a.name, ws, &rng)]
        case 4..<7:
            // a value replaced: of an option, or a positional (a path)
            let slots = (start..<args.count).filter { i in !args[i].hasPrefix("--") }
            guard let i = slots.isEmpty ? nil : slots[rng.nextInt(below: slots.count)] else { continue }
            let name = i > start && args[i - 1].hasPrefix("--") ? String(args[i - 1].dropFirst(2)) : "checkpoint"
            args[i] = CommandValues.value(for: name, ws, &rng)
        case 7, 8:
            guard args.count > start else { continue }
            let i = start + rng.nextInt(below: args.count - start)
            let isOption = args[i].hasPrefix("--")
            let takesValue = isOption && options.first { $0.spelling == args[i] }?.kind == .option
            args.removeSubrange(i..<min(args.count, i + (takesValue ? 2 : 1)))
        default:
            args.insert(["--", "-x", "--nope", "extra", "--output=o.npy", "-"][rng.nextInt(below: 6)], at: start + rng.nextInt(below: args.count - start + 1))
        }
    }
}

/// The workspace entries a successful run of `args` may change: each output named (its config sidecar, the state
/// file of `--checkpoint-every`, a folder's report), a checkpoint `freeze` edits in place — each as spelt and as the
/// file it names through links.
func allowedChanges(_ args: [String], _ command: ToolCommand, in dir: URL) -> Set<String> {
    var named: [String] = []
    var folders: [String] = []
    func values(_ option: String) -> [String] {   // `--option VALUE` and `--option=VALUE`, every occurrence
        args.indices.compactMap { i in
            args[i] == option ? (i + 1 < args.count ? args[i + 1] : nil)
                : args[i].hasPrefix(option + "=") ? String(args[i].dropFirst(option.count + 1)) : nil
        }
    }
    func value(_ option: String) -> String? { values(option).last }
    let name = command.path.joined(separator: " ")
    let isFolder = name == "demo" || name.hasPrefix("example")
    for option in ["--output", "--report", "--state"] {
        for v in values(option) { isFolder && option == "--output" ? folders.append(v) : named.append(v) }
    }
    if name == "demo", value("--output") == nil { folders.append(".") }
    if name == "freeze" || name == "unfreeze", value("--output") == nil {
        // the checkpoint, edited in place: the positional words (not options, not their values)
        var i = 1
        while i < args.count {
            if args[i].hasPrefix("-") && args[i] != "-" {
                i += command.arguments.contains { $0.kind == .option && $0.spelling == args[i] } ? 2 : 1
            } else {
                named.append(args[i])
                i += 1
            }
        }
    }
    if name == "train", args.contains("--checkpoint-every"), let out = value("--output") {
        named.append(URL(fileURLWithPath: out).deletingPathExtension().appendingPathExtension("state.safetensors").path)
    }
    var allowed = Set<String>()
    func add(_ path: String) {
        let url = (path.hasPrefix("/") ? URL(fileURLWithPath: path) : dir.appendingPathComponent(path)).standardizedFileURL
        for u in [url, url.resolvingSymlinksInPath(), url.deletingLastPathComponent().resolvingSymlinksInPath().appendingPathComponent(url.lastPathComponent)] {
            let p = u.path
            let base = dir.resolvingSymlinksInPath().path
            for prefix in [dir.path + "/", base + "/"] where p.hasPrefix(prefix) { allowed.insert(String(p.dropFirst(prefix.count))) }
        }
    }
    for n in named {
        add(n)   // outputs are named literally (`FILE.safetensors:NAME` only selects a tensor of an input)
        add((n.hasPrefix("/") ? URL(fileURLWithPath: n) : dir.appendingPathComponent(n)).deletingPathExtension().appendingPathExtension("json").path)
    }
    for f in folders {   // the folder of report.html, made with its missing parents
        add(f == "." ? "report.html" : f + "/report.html")
        var folder = Substring(f)
        while !folder.isEmpty, folder != "/", folder != "." {
            add(String(folder))
            folder = folder.lastIndex(of: "/").map { folder[..<$0] } ?? ""
        }
    }
    // a folder a run created holds entries of its own: "sub/" for "sub", and the folder itself
    return allowed.union(allowed.map { $0 + "/" })
}

nonisolated(unsafe) var commandTally: [String: (ok: Int, refused: Int, interrupted: Int, stopped: Int)] = [:]

/// A line of the library's log (swift-log's `<time> warning|info <label>: …`), which may precede a refusal's error line:
/// a warning, or what a load that succeeded said before a later check refused the run. Anything else is not one.
func isLogLine(_ line: Substring) -> Bool {
    let parts = line.split(separator: " ", maxSplits: 2)
    return parts.count == 3 && parts[0].first?.isNumber == true && parts[0].contains("T") && (parts[1] == "warning" || parts[1] == "info")
}

/// `vq-fuzz --commands N [--seed S] [--vq PATH]`: N random command lines of the `vq` beside this binary (or PATH),
/// each checked as the file's header says. `limit` bounds one run's seconds.
func runCommands(count: Int, seed: UInt64, vq: URL, limit: Double) {
    let commands = toolCommands(vq)
    // Every kind's example and its variants, and 15 configurations the reference runs drawn from the seed.
    let ws = CommandWorkspace(dir: Fixtures.dir.appendingPathComponent("workspace"), vq: vq,
                              configurations: CheckpointFixture.configurations(seed: seed, drawn: 15))
    let caseFile = Fixtures.dir.appendingPathComponent("case.txt")
    var rng = SeededGenerator(seed: seed ^ 0xC011)
    for i in 0..<count {
        // the commands that train a network or time workloads (seconds a run) a quarter as often as the others
        let slow: Set<String> = ["demo", "bench", "quickstart", "example"]
        var command = commands[rng.nextInt(below: commands.count)]
        while slow.contains(command.path[0]) && rng.nextInt(below: 4) != 0 { command = commands[rng.nextInt(below: commands.count)] }
        var args = baseCommandLine(command, ws, &rng)
        if rng.nextInt(below: 4) != 0 { mutateCommandLine(&args, command, ws, &rng) }
        let line = "vq " + args.map { $0.isEmpty || $0.contains(" ") ? "'\($0)'" : $0 }.joined(separator: " ")
        try? Data("seed \(seed) command case \(i) (in \(ws.dir.path)): \(line)\n".utf8).write(to: caseFile)
        func fail(_ problem: String) -> Never { fatalError("vq-fuzz: seed \(seed) command case \(i): \(line): \(problem)") }

        let before = folderSnapshot(ws.dir)
        // One run in eight gets a SIGTERM at a random moment of its first 80 ms (most runs take 20–100 ms) or second.
        let interrupt = rng.nextInt(below: 8) == 0 ? Double(rng.nextInt(below: 80)) / (rng.nextInt(below: 4) == 0 ? 80 : 1000) : nil
        let run = runTool(vq, args, in: ws.dir, limit: limit, interruptAfter: interrupt)
        let after = folderSnapshot(ws.dir)
        let changed = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }
        let allowed = allowedChanges(args, command, in: ws.dir)
        let text = run.stderr + run.stdout
        if run.signalled || ["Fatal error", "Precondition failed", "runtime failure", "Assertion failed"].contains(where: text.contains) {
            fail("trapped (status \(run.status)): \(run.stderr.suffix(400))")
        }
        var tally = commandTally[command.path.joined(separator: " "), default: (0, 0, 0, 0)]
        defer { commandTally[command.path.joined(separator: " ")] = tally }
        if run.interrupted {
            // Ended by the signal: no temporary left, and only what it was asked to write changed (each whole or as before).
            tally.interrupted += 1
            if let tmp = changed.first(where: { $0.contains(".tmp-") }) { fail("interrupted, it left the temporary \(tmp)") }
            if let touched = changed.sorted().first(where: { !allowed.contains($0) }) {
                fail("interrupted, it had changed \(touched), which it was not asked to write")
            }
        } else if run.timedOut {
            // Stopped by a kill: an input must still be whole; what the run created is cleared for the next case.
            tally.stopped += 1
            if args.contains(where: { $0.hasSuffix("pipe.npy") }) { fail("still running after \(limit) s: it waits on the named pipe") }
            if let touched = changed.first(where: { before[$0] != nil && !allowed.contains($0) }) {
                fail("killed after \(limit) s, it had changed \(touched), which it was not asked to write")
            }
        } else if run.status != 0 && !run.stderr.hasPrefix("vq: error: frozen elements moved from ") {
            tally.refused += 1
            if let show = ProcessInfo.processInfo.environment["VQ_FUZZ_SHOW"], command.path.joined(separator: " ") == show {
                print("\(line)\n    \(run.stderr.prefix(300))")
            }
            let lines = run.stderr.split(separator: "\n").filter { !isLogLine($0) }
            if lines.count != 1 || !lines[0].hasPrefix("vq: error: ") || lines[0].count <= "vq: error: ".count + 1 { fail("refused without one `vq: error:` line: \(run.stderr.prefix(400))") }
            if !changed.isEmpty { fail("refused (\(lines[0])) but changed \(changed.sorted())") }
        } else {
            // Exit 0, or `compare`'s failed check (frozen elements moved: its comparison and report are written).
            tally.ok += 1
            if let touched = changed.sorted().first(where: { !allowed.contains($0) }) {
                fail("exit 0 but changed \(touched), which it was not asked to write (it may write \(allowed.sorted()))")
            }
            checkOutputs(changed.filter { after[$0] != nil }, args: args, in: ws.dir, fail: fail)
        }
        // What the run created goes (so fresh names stay fresh); what it rewrote in place stays.
        for entry in changed.filter({ before[$0] == nil }).sorted(by: >) {
            try? FileManager.default.removeItem(atPath: ws.dir.path + "/" + entry)
        }
    }
    print(commandTally.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.ok) ok / \($0.value.refused) refused / \($0.value.interrupted) interrupted / \($0.value.stopped) stopped" }
        .joined(separator: ", "))
    print("\(count) command cases (seed \(seed)): no trap")
    try? FileManager.default.removeItem(at: Fixtures.dir)
}

/// What a successful run wrote must be usable: the checkpoint of `train`, `freeze`, `unfreeze`, `export` loads (with its
/// sidecar); the indices of `encode` are codes of the checkpoint or −1, the vectors of `decode` finite (as `.npy`).
func checkOutputs(_ written: Set<String>, args: [String], in dir: URL, fail: (String) -> Never) {
    guard let i = args.lastIndex(of: "--output"), i + 1 < args.count else { return }
    let output = args[i + 1].hasPrefix("/") ? args[i + 1] : dir.path + "/" + args[i + 1]
    let url = URL(fileURLWithPath: output).standardizedFileURL
    guard FileManager.default.fileExists(atPath: url.path) else { return }
    switch args[0] {
    case "train", "freeze", "unfreeze", "export":
        do { _ = try QuantizerCheckpoint.loadQuantizer(url) } catch { fail("wrote \(args[i + 1]), which does not load: \(error)") }
    case "encode" where url.pathExtension == "npy":
        guard case .integer(let indices) = try? NumPyFile.read(contentsOf: url) else { fail("wrote \(args[i + 1]), which holds no indices") }
        // Each index a code of the checkpoint's codebooks, or −1 (a vector without a code).
        func path(_ option: String) -> URL? {
            args.lastIndex(of: option).flatMap { $0 + 1 < args.count ? (args[$0 + 1].hasPrefix("/") ? URL(fileURLWithPath: args[$0 + 1])
                                                                 : dir.appendingPathComponent(args[$0 + 1])) : nil }
        }
        if let checkpoint = path("--checkpoint"), let (q, _) = try? QuantizerCheckpoint.loadQuantizer(checkpoint, config: path("--config")),
           let bad = indices.scalars.first(where: { $0 < -1 || $0 >= (q.codebookSizes.max() ?? 0) }) {
            fail("wrote \(args[i + 1]) with index \(bad), outside −1..<\(q.codebookSizes.max() ?? 0)")
        }
    case "decode" where url.pathExtension == "npy":
        guard case .float(let x) = try? NumPyFile.read(contentsOf: url), x.allFinite else { fail("wrote \(args[i + 1]), which holds no finite vectors") }
    default: break
    }
}
