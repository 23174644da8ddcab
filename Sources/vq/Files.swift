import ArgumentParser
import Foundation
import VQTensor
import VectorQuantize

/// One line for the user: what went wrong, naming the file or option.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Reading and writing the data files the commands take: `.npy`, `.fvecs`/`.bvecs`/`.ivecs`, and
/// `.safetensors` with `FILE:tensor_name`.
enum DataFiles {
    /// Splits `path:name` for safetensors inputs.
    static func split(_ spec: String) -> (URL, String?) {
        if let r = spec.range(of: ".safetensors:", options: .backwards) {
            return (URL(fileURLWithPath: String(spec[..<spec.index(r.upperBound, offsetBy: -1)])), String(spec[r.upperBound...]))
        }
        return (URL(fileURLWithPath: spec), nil)
    }

    static func read(_ spec: String) throws -> StoredTensor {
        let (url, name) = split(spec)
        guard FileManager.default.fileExists(atPath: url.path) else { throw CLIError("\(url.path): no such file") }
        switch url.pathExtension.lowercased() {
        case "npy": return try NumPyFile.read(contentsOf: url)
        case "fvecs", "bvecs", "ivecs": return try VecsFile.read(contentsOf: url)
        case "safetensors":
            let file = try SafeTensorsFile.read(contentsOf: url)
            if let name {
                guard let t = file.tensors[name] else {
                    throw CLIError("\(url.path): no tensor '\(name)' (has: \(file.tensors.keys.sorted().joined(separator: ", ")))")
                }
                return t
            }
            guard file.tensors.count == 1, let only = file.tensors.first else {
                throw CLIError("\(url.path) holds \(file.tensors.count) tensors: name one as \(url.lastPathComponent):NAME (\(file.tensors.keys.sorted().joined(separator: ", ")))")
            }
            return only.value
        default:
            throw CLIError("\(url.path): unsupported extension (use .npy, .fvecs, .bvecs, .ivecs or .safetensors)")
        }
    }

    /// Vectors `[n, d]` or `[b, n, d]` as floats.
    static func vectors(_ spec: String, dim: Int? = nil) throws -> Tensor {
        let t = try read(spec).asFloat
        guard t.rank == 2 || t.rank == 3 else { throw CLIError("\(spec): expected vectors [n, d] or [b, n, d], found shape \(t.shape)") }
        if let dim, t.shape.last != dim { throw CLIError("\(spec): vectors of dimension \(t.shape.last ?? 0), the model expects \(dim)") }
        if let problem = firstUnusableRow(t.reshaped([t.shape.dropLast().reduce(1, *), t.shape.last ?? 0])) {
            throw CLIError("\(spec): vector \(problem.row) \(problem.reason)")
        }
        return t
    }

    /// The largest squared norm a vector may have: distances `|x|² − 2x·c + |c|²` to codes of the data's scale
    /// (`|c| ≤ max |x|`, as averages of the data are) stay below `4·max|x|²`, which must be a finite float. So the
    /// components stay below about 9·10¹⁸; larger vectors would give every code an infinite distance, and every vector
    /// code 0 (as float32 PyTorch would).
    static let maxSquaredNorm = Float.greatestFiniteMagnitude / 4

    /// The first row of `x` (`[n, d]`) that cannot be quantized — a NaN or ±∞, or a squared norm over
    /// ``maxSquaredNorm`` — and why, or `nil`.
    static func firstUnusableRow(_ x: Tensor) -> (row: Int, reason: String)? {
        let d = x.shape.last ?? 0
        guard d > 0 else { return nil }
        return x.scalars.withUnsafeBufferPointer { p -> (Int, String)? in
            for r in 0..<(p.count / d) {
                let norm = Tensor.sumOfSquaresContiguous(p.baseAddress! + r * d, d)
                if norm <= maxSquaredNorm { continue }   // false for NaN
                if !p[(r * d)..<(r * d + d)].allSatisfy(\.isFinite) { return (r, "contains NaN or infinite values") }
                return (r, "is too large to quantize (squared norm \(norm), above \(maxSquaredNorm): distances to codes of its scale would overflow float32); scale the data")
            }
            return nil
        }
    }

    /// Checks before any work that an output can be written: its folder exists, and nothing but a regular file is
    /// in its place (``StagedFile/targetProblem(_:)``).
    static func checkOutput(_ path: String, option: String) throws {
        if let problem = StagedFile.targetProblem(URL(fileURLWithPath: path)) { throw ValidationError("\(option) \(path): \(problem)") }
    }
}

extension DataFiles {
    /// `--threads`: 1…1024 (each thread has a stack; more than the machine has only adds contention).
    static func checkThreads(_ threads: Int?) throws {
        if let threads, !(1...1024).contains(threads) { throw ValidationError("--threads \(threads) must be in 1…1024") }
    }

    /// Checks before any work that a report folder can be made or written: every name in it a name a file can have
    /// (at most 255 bytes), not a file, and its nearest existing folder writable by this user.
    static func checkOutputFolder(_ path: String, option: String) throws {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        if let long = url.pathComponents.first(where: { $0.utf8.count > 255 }) {
            throw ValidationError("\(option) \(path): the name \(long.prefix(24))… is \(long.utf8.count) bytes long; a folder's name has at most 255")
        }
        guard url.appendingPathComponent("report.html").path.utf8.count < Int(PATH_MAX) else {
            throw ValidationError("\(option) \(path): the path is longer than the \(PATH_MAX) bytes a file's path may have")
        }
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
            throw ValidationError("\(option) \(path) is a file, not a folder (it names the folder of report.html)")
        }
        let (_, existing, isFolder) = missingFolders(of: url)
        guard isFolder else { throw ValidationError("\(option) \(path): \(existing.path) is a file, not a folder") }
        guard access(existing.path, W_OK | X_OK) == 0 else {
            throw ValidationError("\(option) \(path): the folder \(existing.path) is not writable")
        }
    }

    /// The folders of `folder` (standardised) that do not exist yet, deepest first, and the nearest part of it that
    /// exists — and whether that is a folder (a file may stand in a parent's place).
    static func missingFolders(of folder: URL) -> (missing: [URL], existing: URL, isFolder: Bool) {
        var missing: [URL] = [], probe = folder
        var isDir: ObjCBool = false
        while !FileManager.default.fileExists(atPath: probe.path, isDirectory: &isDir) && probe.path != "/" {
            missing.append(probe)
            probe.deleteLastPathComponent()
        }
        return (missing, probe, isDir.boolValue)
    }

    /// Refuses, before the work that would fill them, outputs that cannot fit: for each file system the outputs go to
    /// (through links, as a write goes), the sum of the bytes they need at least against what `statvfs` says an
    /// unprivileged writer may still use there. A file replaced keeps its space until the rename, so it counts in full.
    /// - Parameter needs: each output's path, the bytes it needs at least, and the option that names it.
    static func checkFreeSpace(_ needs: [(path: String, bytes: Int, option: String)]) throws {
        var byDevice: [UInt64: (bytes: Int, free: Int, names: [String])] = [:]
        for need in needs where need.bytes > 0 {
            let folder = missingFolders(of: URL(fileURLWithPath: need.path).resolvingSymlinksInPath().deletingLastPathComponent()).existing
            var st = stat(), fs = statvfs()
            // Unknown (or a file system that reports no blocks at all, as some FUSE ones do): the write will tell.
            guard stat(folder.path, &st) == 0, statvfs(folder.path, &fs) == 0, fs.f_blocks > 0 else { continue }
            let (bytes, overflow) = UInt64(fs.f_bavail).multipliedReportingOverflow(by: UInt64(fs.f_frsize))
            let free = Int(clamping: overflow ? UInt64.max : bytes)
            var entry = byDevice[UInt64(st.st_dev)] ?? (0, free, [])
            entry.bytes += need.bytes
            entry.names.append("\(need.option) \(need.path)")
            byDevice[UInt64(st.st_dev)] = entry
        }
        for (_, e) in byDevice.sorted(by: { $0.key < $1.key }) where e.bytes > e.free {
            throw CLIError("\(e.names.joined(separator: " and ")): needs at least \(e.bytes) bytes, and its file system has \(e.free) free; nothing was done")
        }
    }

    /// Writes `FOLDER/report.html` atomically, making `FOLDER` and its missing parents first; when the write fails, the
    /// folders this call made are removed again (a failed command leaves nothing it created). Returns the file.
    @discardableResult
    static func writeReport(_ html: String, inFolder output: String) throws -> URL {
        let dir = URL(fileURLWithPath: output).standardizedFileURL
        let missing = missingFolders(of: dir).missing
        let file = dir.appendingPathComponent("report.html")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try AtomicFile.write(Data(html.utf8), to: file)
        } catch {
            for folder in missing { rmdir(folder.path) }   // deepest first; a folder something else filled meanwhile stays
            throw error
        }
        return file
    }
}

/// A code list like `0-255,300` (ranges inclusive), kept as ranges: nothing is expanded until every
/// code is known to be below the codebook size, so `0-9223372036854775807` is an error, not an allocation.
struct CodeSpec {
    let ranges: [ClosedRange<Int>]
    let option: String

    /// What the list of `option` counts: components for `--dims` and `--freeze-dims`, codes otherwise.
    static func noun(of option: String) -> String { option.hasSuffix("dims") ? "dimension" : "code" }

    init(_ spec: String, option: String = "--codes") throws {
        self.option = option
        let noun = Self.noun(of: option)
        func bad(_ why: String) -> ValidationError { ValidationError("\(option) '\(spec)': \(why) (use e.g. 0-255,300)") }
        guard !spec.trimmingCharacters(in: .whitespaces).isEmpty else { throw bad("no \(noun)s") }
        var ranges: [ClosedRange<Int>] = []
        for part in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let p = part.trimmingCharacters(in: .whitespaces)
            guard !p.isEmpty else { throw bad("an empty entry") }
            if let dash = p.firstIndex(of: "-"), dash != p.startIndex {
                guard let a = Int(p[..<dash]), let b = Int(p[p.index(after: dash)...]), a >= 0, a <= b else { throw bad("bad range '\(p)'") }
                ranges.append(a...b)
            } else {
                guard let v = Int(p), v >= 0 else { throw bad("bad \(noun) '\(p)'") }
                ranges.append(v...v)
            }
        }
        self.ranges = ranges
    }

    /// The distinct codes, ascending, after checking each is below `size`.
    func codes(below size: Int) throws -> [Int] {
        if let r = ranges.first(where: { $0.upperBound >= size }) {
            throw ValidationError("\(option): \(Self.noun(of: option)) \(r.upperBound) is out of range 0..<\(size)")
        }
        var seen = [Bool](repeating: false, count: size)
        for r in ranges { for c in r { seen[c] = true } }
        return seen.indices.filter { seen[$0] }
    }
}

/// Loads a quantizer checkpoint with its config (sidecar JSON, --config, or metadata).
func loadQuantizer(_ checkpoint: String, config: String?) throws -> (any Quantizer, ModuleConfig) {
    let url = URL(fileURLWithPath: checkpoint)
    guard FileManager.default.fileExists(atPath: url.path) else { throw CLIError("\(checkpoint): no such checkpoint") }
    do {
        return try QuantizerCheckpoint.loadQuantizer(url, config: config.map { URL(fileURLWithPath: $0) })
    } catch let e as ConfigurationError {
        // A keyword the library refuses: name the file it came from (the configuration inside the checkpoint, or its sidecar).
        throw CLIError("\(config.map { "--config \($0)" } ?? "\(checkpoint)'s configuration"): \(e)")
    }
}
