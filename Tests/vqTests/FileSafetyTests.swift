import Foundation
import Testing
import VQTensor
import VQTestSupport
import VectorQuantize

/// No command overwrites or deletes a file it was not asked to write: every output is checked against every
/// input and every other output (a checkpoint's config sidecar counts), however the path is spelled, and the
/// end-of-run cleanup removes only what the run itself created.
@Suite("vq: no file is ever lost", .serialized)
struct FileSafetyTests {
    let dir = VQProcess.temporaryDirectory()
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// The bytes of every regular file in the folder (recursively, links not followed), and the kind of every other
    /// node (a pipe is never opened: that would wait for a writer).
    func snapshot() -> [String: Data] {
        var files: [String: Data] = [:]
        for name in (FileManager.default.subpaths(atPath: dir.path) ?? []) {
            var st = stat()
            guard lstat(path(name), &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFLNK, S_IFDIR: continue
            case S_IFREG: files[name] = FileManager.default.contents(atPath: path(name))
            default: files[name] = Data("\(st.st_mode) \(st.st_rdev)".utf8)
            }
        }
        return files
    }

    func setUp() throws {
        try NumPyFile.write(.float(TestSupport.random([200, 8], seed: 1)), to: URL(fileURLWithPath: path("x.npy")))
        try NumPyFile.write(.float(TestSupport.random([2, 8], seed: 2) * 0), to: URL(fileURLWithPath: path("basis.npy")))
        try FileManager.default.createDirectory(atPath: path("sub"), withIntermediateDirectories: true)
        let r = try VQProcess.run(["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "2", "--output", path("m.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
    }

    /// Runs `args`; expects one `vq: error:` line mentioning `mention`, and every file in the folder unchanged.
    func expectRefused(_ args: [String], mentions mention: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let before = snapshot()
        let r = try VQProcess.run(args)
        #expect(r.status != 0, "exit 0 for \(args)", sourceLocation: sourceLocation)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && r.stderr.hasPrefix("vq: error: ") && r.stderr.contains(mention),
                "\(args): \(r.stderr)", sourceLocation: sourceLocation)
        let after = snapshot()
        #expect(after == before, "\(args) changed \(Set(after.keys).symmetricDifference(before.keys)) or a file's bytes", sourceLocation: sourceLocation)
    }

    /// The spellings of one file: plain, with `./` and `..`, through a symbolic link, and a hard link.
    func spellings(of name: String) throws -> [String] {
        let link = path("link-\(name)"), hard = path("hard-\(name)")
        if !FileManager.default.fileExists(atPath: link) { try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: name) }
        var result = [path(name), dir.path + "/./" + name, path("sub") + "/../" + name, link]
        if FileManager.default.fileExists(atPath: path(name)) {
            if !FileManager.default.fileExists(atPath: hard) { try FileManager.default.linkItem(atPath: path(name), toPath: hard) }
            result.append(hard)
        }
        return result
    }

    @Test("vq train: every output against every input and every other output, however spelled")
    func trainPairs() throws {
        try setUp()
        let base = ["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "2", "--checkpoint-every", "1"]
        // Each output role, spelled to name an existing input or another output.
        for spelled in try spellings(of: "x.npy") {
            try expectRefused(base + ["--output", path("o.safetensors"), "--report", spelled], mentions: "--report")
            try expectRefused(base + ["--output", path("o.safetensors"), "--state", spelled], mentions: "--state")
        }
        for spelled in try spellings(of: "m.safetensors") {
            try expectRefused(["train", "--input", path("x.npy"), "--init", path("m.safetensors"), "--steps", "1", "--output", spelled], mentions: "--init")
            try expectRefused(base + ["--output", path("o.safetensors"), "--state", path("o.state.safetensors"), "--report", spelled,
                                      "--resume", path("m.safetensors")], mentions: "--report")
        }
        for spelled in try spellings(of: "basis.npy") {
            try expectRefused(base + ["--output", path("o.safetensors"), "--freeze-subspace", path("basis.npy"), "--report", spelled], mentions: "--report")
        }
        // The sidecar of a checkpoint read is a user's file too.
        try expectRefused(["train", "--input", path("x.npy"), "--init", path("m.safetensors"), "--steps", "1", "--output", path("o.safetensors"),
                           "--report", path("m.json")], mentions: "sidecar")
        // Outputs against each other, the sidecar included.
        try expectRefused(base + ["--output", path("o.json")], mentions: "sidecar")
        try expectRefused(base + ["--output", path("o.safetensors"), "--report", path("o.safetensors")], mentions: "same file")
        try expectRefused(base + ["--output", path("o.safetensors"), "--report", path("o.json")], mentions: "same file")
        try expectRefused(base + ["--output", path("o.safetensors"), "--state", path("o.safetensors")], mentions: "same file")
        try expectRefused(base + ["--output", path("o.safetensors"), "--state", path("r.safetensors"), "--report", path("sub/../r.safetensors")], mentions: "same file")
        try expectRefused(base + ["--output", path("o.safetensors"), "--state", path("keep.npy")], mentions: "--state")
        #expect(!FileManager.default.fileExists(atPath: path("o.safetensors")))
    }

    @Test("outputs and inputs that are not regular files — a device, a named pipe, a folder — are refused at once, left as they were")
    func specialFiles() throws {
        try setUp()
        #expect(mkfifo(path("pipe.npy"), 0o644) == 0)
        try FileManager.default.createDirectory(atPath: path("folder.npy"), withIntermediateDirectories: true)
        // As root, a rename over a device node replaces the node: /dev/null would have become the file written.
        var outputs = [(path("pipe.npy"), "a named pipe"), (path("folder.npy"), "a folder")]
        if mknod(path("null.npy"), S_IFCHR | 0o666, dev_t((1 << 8) | 3)) == 0 { outputs.append((path("null.npy"), "a character device")) }
        let m = path("m.safetensors")
        #expect(try VQProcess.run(["encode", "--checkpoint", m, "--input", path("x.npy"), "--output", path("i.npy")]).status == 0)
        for (out, kind) in outputs {
            let html = out.replacingOccurrences(of: ".npy", with: ".html")
            if !FileManager.default.fileExists(atPath: html) { try FileManager.default.createSymbolicLink(atPath: html, withDestinationPath: out) }
            for args in [["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "1", "--output", out],
                         ["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "1", "--output", path("n.safetensors"), "--report", html],
                         ["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "1", "--output", path("n.safetensors"),
                          "--checkpoint-every", "1", "--state", out],
                         ["encode", "--checkpoint", m, "--input", path("x.npy"), "--output", out],
                         ["decode", "--checkpoint", m, "--input", path("i.npy"), "--output", out],
                         ["freeze", m, "--codes", "0", "--output", out],
                         ["export", m, "--output", out],
                         ["compare", m, m, "--input", path("x.npy"), "--report", html]] {
                try expectRefused(args, mentions: kind)
            }
        }
        // Inputs: a pipe without a writer would block the open; /dev/zero would be read forever (here through a link
        // with a data file's name, so that the name does not refuse it first).
        try FileManager.default.createSymbolicLink(atPath: path("zero.npy"), withDestinationPath: "/dev/zero")
        for (input, kind) in [(path("pipe.npy"), "a named pipe"), (path("zero.npy"), "a character device"), (path("folder.npy"), "a folder")] {
            for args in [["train", "--input", input, "--codebook-size", "8", "--output", path("n.safetensors")],
                         ["encode", "--checkpoint", m, "--input", input, "--output", path("j.npy")],
                         ["decode", "--checkpoint", m, "--input", input, "--output", path("y.npy")],
                         ["inspect", m, "--input", input], ["inspect", input], ["inspect", m, "--config", input],
                         ["compare", m, m, "--input", input], ["freeze", m, "--codes", "0", "--config", input, "--output", path("f.safetensors")],
                         ["export", input, "--output", path("p.safetensors")], ["export", m, "--config", input, "--output", path("p.safetensors")],
                         ["train", "--input", path("x.npy"), "--codebook-size", "8", "--output", path("n.safetensors"), "--freeze-subspace", input]] {
                let r = try VQProcess.run(args, timeout: 60)
                #expect(r.status == 1 && r.stderr.hasPrefix("vq: error: ") && r.stderr.contains(kind), "\(args): \(r.status) \(r.stderr)")
            }
        }
        var st = stat()
        #expect(lstat(path("pipe.npy"), &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO)
    }

    @Test("an output named with 240 bytes is written like any other; one named past 255 bytes is refused at once, nothing written")
    func longNames() throws {
        try setUp()
        let m = path("m.safetensors")
        #expect(try VQProcess.run(["encode", "--checkpoint", m, "--input", path("x.npy"), "--output", path("i.npy")]).status == 0)
        func commands(_ name: (String) -> String) -> [[String]] {
            [["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "1", "--output", path(name(".safetensors"))],
             ["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "1", "--output", path("n.safetensors"), "--report", path(name(".html"))],
             ["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "1", "--output", path("n.safetensors"),
              "--checkpoint-every", "1", "--state", path(name(".state.safetensors"))],
             ["encode", "--checkpoint", m, "--input", path("x.npy"), "--output", path(name(".npy"))],
             ["decode", "--checkpoint", m, "--input", path("i.npy"), "--output", path(name(".npy"))],
             ["freeze", m, "--codes", "0", "--output", path(name(".safetensors"))],
             ["export", m, "--output", path(name(".safetensors"))],
             ["compare", m, m, "--input", path("x.npy"), "--report", path(name(".html"))]]
        }
        // Past 255 bytes: the name cannot exist; refused before any work (a report used to fail after the checkpoint).
        for args in commands({ String(repeating: "L", count: 256 - $0.count + 1) + $0 }) {
            try expectRefused(args, mentions: "too long")
        }
        // 240 bytes: written (its temporary's name is cut to fit), and nothing else left behind.
        for args in commands({ String(repeating: "l", count: 240 - $0.count) + $0 }) {
            let r = try VQProcess.run(args)
            #expect(r.status == 0, "\(args): \(r.stderr)")
            #expect(!snapshot().keys.contains { $0.contains(".tmp-") }, "\(args) left a temporary")
        }
    }

    @Test("a report folder with a name past 255 bytes, or a path past PATH_MAX, is refused before any work and no folder is made")
    func longReportFolders() throws {
        try setUp()
        let long = String(repeating: "d", count: 300)
        let deep = (0..<20).map { _ in String(repeating: "e", count: 250) }.joined(separator: "/")
        for (folder, mention) in [(path("new/\(long)/x"), "255"), (path("new/\(deep)"), "PATH_MAX")] {
            for command in [["demo", "--steps", "1", "--seeds", "1"], ["example", "autoencoder", "--steps", "1"], ["example", "lfq-masked", "--steps", "1"]] {
                try expectRefused(command + ["--output", folder], mentions: mention == "PATH_MAX" ? "\(PATH_MAX) bytes" : mention)
            }
        }
        #expect(!FileManager.default.fileExists(atPath: path("new")))
    }

    @Test("the state file: a user's file at its path is never overwritten, and cleanup removes only this run's state")
    func stateFiles() throws {
        try setUp()
        let base = ["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "4", "--batch-size", "50"]
        // A file of the user's where the default state would go, and one named by --state.
        let mine = Data("my notes".utf8)
        try mine.write(to: URL(fileURLWithPath: path("o.state.safetensors")))
        try expectRefused(base + ["--output", path("o.safetensors"), "--checkpoint-every", "1"], mentions: "o.state.safetensors")
        try NumPyFile.write(.float(Tensor([1, 2])), to: URL(fileURLWithPath: path("keep.safetensors")))
        try expectRefused(base + ["--output", path("o.safetensors"), "--checkpoint-every", "1", "--state", path("keep.safetensors")], mentions: "keep.safetensors")
        var r = try VQProcess.run(base + ["--output", path("p.safetensors"), "--checkpoint-every", "2", "--state", path("p.run.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path("p.run.safetensors")), "a finished run removes the state it wrote")
        r = try VQProcess.run(base + ["--output", path("q.safetensors"), "--checkpoint-every", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.contents(atPath: path("o.state.safetensors")) == mine)
        #expect(!FileManager.default.fileExists(atPath: path("q.state.safetensors")))
    }

    @Test("a resumed run removes only its own state, never a file at the default state path it did not write")
    func resumeCleanup() throws {
        try setUp()
        let args = ["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "6", "--batch-size", "50", "--seed", "3"]
        // Make a state at step 2 of 6 by stopping a run with a failure drill, then resume it elsewhere.
        var r = try VQProcess.run(args + ["--output", path("a.safetensors"), "--checkpoint-every", "2", "--state", path("s.safetensors"),
                                          "--failure-drill", "0:3:exit"])
        #expect(r.status != 0 && FileManager.default.fileExists(atPath: path("s.safetensors")), "\(r.stderr)")
        let mine = Data("not a state".utf8)
        try mine.write(to: URL(fileURLWithPath: path("b.state.safetensors")))
        r = try VQProcess.run(args + ["--output", path("b.safetensors"), "--resume", path("s.safetensors")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(FileManager.default.contents(atPath: path("b.state.safetensors")) == mine, "a file the run did not write is kept")
        #expect(!FileManager.default.fileExists(atPath: path("s.safetensors")), "the run's own state is removed once it is complete")
    }

    @Test("a file at a checkpoint's sidecar path is replaced only when it is a configuration (an earlier checkpoint's)")
    func sidecarOfAUser() throws {
        try setUp()
        let train = ["train", "--input", path("x.npy"), "--codebook-size", "8", "--steps", "2"]
        // Not configurations: notes, another JSON object, a JSON array, an empty file, a folder, a dangling link.
        let notes: [(String, Data)] = [("notes", Data("my notes".utf8)), ("other", Data(#"{"my": "data"}"#.utf8)),
                                       ("array", Data("[1, 2]".utf8)), ("empty", Data())]
        for (name, bytes) in notes {
            try bytes.write(to: URL(fileURLWithPath: path("\(name).json")))
            try expectRefused(train + ["--output", path("\(name).safetensors")], mentions: "\(name).json")
            try expectRefused(["freeze", path("m.safetensors"), "--codes", "0", "--output", path("\(name).safetensors")], mentions: "\(name).json")
            #expect(!FileManager.default.fileExists(atPath: path("\(name).safetensors")))
        }
        try FileManager.default.createDirectory(atPath: path("folder.json"), withIntermediateDirectories: true)
        try expectRefused(train + ["--output", path("folder.safetensors")], mentions: "folder.json")
        try FileManager.default.createSymbolicLink(atPath: path("dangling.json"), withDestinationPath: "nowhere/x.json")
        try expectRefused(train + ["--output", path("dangling.safetensors")], mentions: "dangling.json")
        // A link to another checkpoint's configuration would overwrite it.
        try FileManager.default.createSymbolicLink(atPath: path("linked.json"), withDestinationPath: "m.json")
        try expectRefused(train + ["--output", path("linked.safetensors")], mentions: "linked.json")
        // An earlier checkpoint's sidecar is replaced (training again to the same path) …
        try FileManager.default.copyItem(atPath: path("m.json"), toPath: path("again.json"))
        var r = try VQProcess.run(train + ["--output", path("again.safetensors"), "--codebook-size", "16"])
        #expect(r.status == 0, "\(r.stderr)")
        let written = try ModuleConfig.read(contentsOf: URL(fileURLWithPath: path("again.json")))
        #expect(written.kwargs["codebook_size"] as? Int == 16, "the sidecar was rewritten with the new configuration")
        // … also through links, when the sidecar's link leads where the checkpoint's does (versioned files).
        try FileManager.default.createDirectory(atPath: path("v1"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: path("m.safetensors"), toPath: path("v1/model.safetensors"))
        try FileManager.default.copyItem(atPath: path("m.json"), toPath: path("v1/model.json"))
        try FileManager.default.createSymbolicLink(atPath: path("current.safetensors"), withDestinationPath: "v1/model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: path("current.json"), withDestinationPath: "v1/model.json")
        r = try VQProcess.run(train + ["--output", path("current.safetensors"), "--codebook-size", "16"])
        #expect(r.status == 0, "\(r.stderr)")
        let linked = try ModuleConfig.read(contentsOf: URL(fileURLWithPath: path("v1/model.json")))
        #expect(linked.kwargs["codebook_size"] as? Int == 16)
    }

    @Test("vq freeze, encode and decode: outputs checked against inputs and the sidecar")
    func otherCommands() throws {
        try setUp()
        try expectRefused(["freeze", path("m.safetensors"), "--codes", "0", "--output", path("f.json")], mentions: "sidecar")
        try FileManager.default.copyItem(atPath: path("m.json"), toPath: path("n.json"))
        try expectRefused(["freeze", path("m.safetensors"), "--codes", "0", "--config", path("n.json"), "--output", path("n.safetensors")],
                          mentions: "n.json")
        for spelled in try spellings(of: "x.npy") {
            try expectRefused(["encode", "--checkpoint", path("m.safetensors"), "--input", path("x.npy"), "--output", spelled], mentions: "--input")
        }
        for spelled in try spellings(of: "m.safetensors") {
            try expectRefused(["encode", "--checkpoint", path("m.safetensors"), "--input", path("x.npy"), "--output", spelled], mentions: "--checkpoint")
            try expectRefused(["decode", "--checkpoint", path("m.safetensors"), "--input", path("x.npy"), "--output", spelled], mentions: "--checkpoint")
        }
        try expectRefused(["decode", "--checkpoint", path("m.safetensors"), "--config", path("m.json"), "--input", path("x.npy"),
                           "--output", path("sub/../m.json")], mentions: "destroy the input")
        // In place is what freeze is for: the checkpoint and its sidecar are rewritten, and both still agree.
        let r = try VQProcess.run(["freeze", path("m.safetensors"), "--codes", "1", "--config", path("m.json")])
        #expect(r.status == 0, "\(r.stderr)")
        let i = try VQProcess.run(["inspect", path("m.safetensors")])
        #expect(i.status == 0 && i.stdout.contains("frozen 1") && !i.stderr.contains("does not match"), "\(i.stdout) \(i.stderr)")
    }
}
