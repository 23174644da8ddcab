import ArgumentParser
import Foundation
import VQTensor
import VectorQuantize

/// Every file one command reads and writes, resolved to the file each finally names and checked against the
/// others before anything is read or written: no output may be an input or another output (a checkpoint's
/// config sidecar counts as an output), so a command never overwrites a file it was not asked to write.
///
/// ```swift
/// var files = CommandFiles()
/// try files.input(input, "--input")
/// try files.checkpoint(output, "--output")      // the checkpoint and its sidecar `.json`
/// try files.output(report, "--report")
/// try files.check()                             // one line naming both options if two are the same file
/// ```
///
/// Two paths name the same file when they resolve to the same path (`..`, `.`, symbolic links in the folder
/// and in the name followed) or, for files that exist, when they are the same inode (hard links).
/// An output may replace an input only where the command says so (`replacing:`): `vq freeze` rewrites the
/// checkpoint it reads, `vq train --resume` its own state.
struct CommandFiles {
    struct File {
        let role: String
        let path: String
        let identity: FileIdentity
        /// The input this output is allowed to replace (an in-place edit), if any.
        let replaces: [FileIdentity]
        /// For a config sidecar, the checkpoint it is written beside: not named by the user, so a file already at
        /// its path may be replaced only when it is a configuration itself (an earlier checkpoint's sidecar).
        var sidecarOf: String? = nil
    }

    private(set) var inputs: [File] = []
    private(set) var outputs: [File] = []

    /// A file the command reads (`FILE.safetensors:NAME` names FILE).
    mutating func input(_ spec: String?, _ option: String) {
        guard let spec else { return }
        let path = DataFiles.split(spec).0.path
        inputs.append(File(role: option, path: path, identity: FileIdentity(path), replaces: []))
    }

    /// A checkpoint the command reads, and its config sidecar when one lies beside it (read when the
    /// checkpoint has no configuration inside; a user's file either way, so no output may take its place).
    mutating func checkpointInput(_ path: String?, _ option: String) {
        guard let path else { return }
        input(path, option)
        let sidecar = ModuleConfig.sidecar(of: URL(fileURLWithPath: path)).path
        if sidecar != path, FileManager.default.fileExists(atPath: sidecar) { input(sidecar, "\(option)'s config sidecar") }
    }

    /// A file the command writes; `replacing` lists inputs it is meant to rewrite in place.
    mutating func output(_ path: String?, _ option: String, replacing: [String?] = []) {
        guard let path else { return }
        let allowed = replacing.compactMap { $0.map { FileIdentity(DataFiles.split($0).0.path) } }
        outputs.append(File(role: option, path: path, identity: FileIdentity(path), replaces: allowed))
    }

    /// A checkpoint the command writes, and the config sidecar written beside it. `inPlaceOf` names a
    /// checkpoint the command rewrites in place: the output may be that file, and its sidecar that file's
    /// sidecar (also when it was read as `--config`).
    mutating func checkpoint(_ path: String?, _ option: String, inPlaceOf edited: String? = nil) {
        guard let path else { return }
        output(path, option, replacing: [edited])
        let sidecar = ModuleConfig.sidecar(of: URL(fileURLWithPath: path)).path
        let editedSidecar = edited.map { ModuleConfig.sidecar(of: URL(fileURLWithPath: DataFiles.split($0).0.path)).path }
        output(sidecar, "\(option)'s config sidecar", replacing: [editedSidecar])
        outputs[outputs.count - 1].sidecarOf = path
    }

    /// Throws one line if an output cannot be written (no folder; a folder, device or pipe in its place), is an input it
    /// may not replace, or is another output.
    func check() throws {
        for (i, out) in outputs.enumerated() {
            if out.sidecarOf == nil, let problem = StagedFile.targetProblem(URL(fileURLWithPath: out.path)) {
                throw ValidationError("\(out.role) \(out.path): \(problem)")
            }
            for other in outputs[..<i] where other.identity == out.identity {
                throw ValidationError("\(other.role) and \(out.role) are the same file (\(out.path)): give each output its own path")
            }
            for input in inputs where input.identity == out.identity && !out.replaces.contains(input.identity) {
                throw ValidationError("\(out.role) \(out.path) is the \(input.role) file: writing it would destroy the input; choose another path")
            }
            if let checkpoint = out.sidecarOf, let problem = Self.sidecarProblem(out.path, of: checkpoint) {
                throw ValidationError("\(out.role) \(out.path) \(problem): writing the checkpoint would overwrite it; move it or choose another path")
            }
        }
    }

    /// Why the file at a sidecar's path may not be replaced, or nil when it may: there is none, or it is a
    /// configuration (a regular file of at most 1 MiB that ``ModuleConfig`` parses), as an earlier checkpoint at the
    /// same path left it. A symbolic link is followed only where the checkpoint's own link leads: to the sidecar of
    /// the checkpoint it names (a link elsewhere would overwrite another checkpoint's configuration).
    static func sidecarProblem(_ path: String, of checkpoint: String) -> String? {
        var st = stat()
        if lstat(path, &st) != 0 { return nil }
        if (st.st_mode & S_IFMT) == S_IFLNK {
            let target = ModuleConfig.sidecar(of: URL(fileURLWithPath: FileIdentity(checkpoint).resolved)).path
            guard FileIdentity.folderResolved(target) != FileIdentity.folderResolved(path), FileIdentity(path) == FileIdentity(target) else {
                return "is a symbolic link, and not to the sidecar of a checkpoint the output's own link leads to"
            }
            guard stat(path, &st) == 0 else { return "is a dangling symbolic link" }
        }
        guard (st.st_mode & S_IFMT) == S_IFREG, st.st_size <= ModuleConfig.maxBytes, let data = FileManager.default.contents(atPath: path),
              (try? ModuleConfig.parse(data, path: path)) != nil else {
            return "exists and is not a checkpoint configuration ({\"module\", \"kwargs\"})"
        }
        return nil
    }
}

/// The file a path finally names: the absolute path with `..` and every symbolic link resolved (of the folders
/// and of the name itself, even a link to a file that does not exist yet), and the inode when the file exists.
struct FileIdentity: Equatable {
    let resolved: String
    let inode: Inode?

    struct Inode: Equatable {
        let device: UInt64
        let number: UInt64
    }

    init(_ path: String) {
        var current = URL(fileURLWithPath: path).standardizedFileURL.path
        // Follow the name's own links (a dangling link names the file it would create).
        for _ in 0..<40 {
            guard let dest = try? FileManager.default.destinationOfSymbolicLink(atPath: current) else { break }
            current = dest.hasPrefix("/") ? URL(fileURLWithPath: dest).standardizedFileURL.path
                : URL(fileURLWithPath: current).deletingLastPathComponent().appendingPathComponent(dest).standardizedFileURL.path
        }
        resolved = Self.folderResolved(current)
        var st = stat()
        inode = stat(current, &st) == 0 ? Inode(device: UInt64(st.st_dev), number: UInt64(st.st_ino)) : nil
    }

    /// The absolute path with its folders' links resolved, the name itself left as it is.
    static func folderResolved(_ path: String) -> String {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        guard let real = realpath(url.deletingLastPathComponent().path, nil) else { return url.path }
        defer { free(real) }
        return URL(fileURLWithPath: String(cString: real)).appendingPathComponent(url.lastPathComponent).path
    }

    static func == (a: FileIdentity, b: FileIdentity) -> Bool {
        if let x = a.inode, let y = b.inode { return x == y }
        return a.resolved == b.resolved
    }
}

