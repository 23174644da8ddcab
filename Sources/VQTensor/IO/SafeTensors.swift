import Foundation
import Synchronization

/// Errors reading or writing tensor files. Each names the file (and tensor) it concerns.
public enum TensorFileError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    case badTensor(path: String, name: String, reason: String)
    case missingTensor(path: String, name: String)
    case unwritable(path: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let p, let r): return "\(p): cannot read: \(r)"
        case .malformed(let p, let r): return "\(p): not a valid file: \(r)"
        case .badTensor(let p, let n, let r): return "\(p): tensor '\(n)': \(r)"
        case .missingTensor(let p, let n): return "\(p): no tensor named '\(n)'"
        case .unwritable(let p, let r): return "\(p): cannot write: \(r)"
        }
    }
}

extension TensorFileError {
    /// The bytes of a file, memory-mapped; a read failure becomes ``unreadable(path:reason:)``, and so does anything
    /// but a regular file (`/dev/zero` or `/dev/urandom` would be read forever, a named pipe block) or a file over
    /// `limit` bytes.
    public static func mappedContents(of url: URL, limit: Int = .max) throws -> Data {
        var st = stat()
        if stat(url.path, &st) == 0 {   // stat, not open: opening a named pipe would wait for a writer
            if let kind = specialFileKind(st.st_mode) { throw unreadable(path: url.path, reason: "not a regular file (\(kind))") }
            if st.st_size > limit { throw unreadable(path: url.path, reason: "\(st.st_size) bytes, more than this kind of file may have (\(limit))") }
        }
        do {
            return try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw TensorFileError.unreadable(path: url.path, reason: error.localizedDescription)
        }
    }

    /// What a node that is not a regular file is, in words (`nil` for a regular file): a file read or written
    /// must be a regular one.
    public static func specialFileKind(_ mode: mode_t) -> String? {
        let kinds: [mode_t: String] = [S_IFDIR: "a folder", S_IFCHR: "a character device", S_IFBLK: "a block device",
                                       S_IFIFO: "a named pipe", S_IFSOCK: "a socket", S_IFLNK: "a loop of symbolic links"]
        let kind = mode & S_IFMT
        return kind == S_IFREG ? nil : kinds[kind] ?? "a special file"
    }
}

/// A tensor read from a file: floating-point data as ``Tensor``, integer and boolean data as
/// ``IndexTensor``.
public enum StoredTensor: Sendable, Equatable {
    case float(Tensor)
    case integer(IndexTensor)

    public var shape: [Int] {
        switch self {
        case .float(let t): return t.shape
        case .integer(let t): return t.shape
        }
    }
    /// The values as floats (integers converted).
    public var asFloat: Tensor {
        switch self {
        case .float(let t): return t
        case .integer(let t): return t.asFloat
        }
    }
    /// The values as integers, `nil` for floats that are not integers within ±2³¹.
    public var asIndices: IndexTensor? {
        switch self {
        case .integer(let t): return t
        case .float(let t):
            guard t.scalars.allSatisfy({ $0.isFinite && $0.rounded(.towardZero) == $0 && abs($0) < 2_147_483_648 }) else { return nil }
            return IndexTensor(t.scalars.map { Int($0) }, shape: t.shape)
        }
    }
}

/// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
/// length, a JSON header `{name: {dtype, shape, data_offsets}, "__metadata__": {…}}`, then raw
/// little-endian data.
///
/// Reading validates everything before trusting it: the header length against the file size and a
/// 100 MB cap, UTF-8 and JSON, every dtype, shape and offset pair (in bounds, ordered, consistent with
/// dtype × shape, non-overlapping). Any problem is a ``TensorFileError`` naming the file and tensor;
/// a bad file never traps.
public struct SafeTensorsFile: Sendable {
    public var tensors: [String: StoredTensor]
    public var metadata: [String: String]

    public init(tensors: [String: StoredTensor] = [:], metadata: [String: String] = [:]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    static let maxHeader = 100_000_000

    /// Reads a file (memory-mapped when possible).
    public static func read(contentsOf url: URL) throws -> SafeTensorsFile {
        try parse(try TensorFileError.mappedContents(of: url), path: url.path)
    }

    /// The validated header of a file (its tensors' names, types, shapes and the metadata), without decoding
    /// any tensor: the file is memory-mapped, so only the header's pages are read.
    public static func readHeader(contentsOf url: URL) throws -> Header {
        try header(of: try TensorFileError.mappedContents(of: url), path: url.path)
    }

    static func header(of data: Data, path: String) throws -> Header {
        do {
            return try validHeader(of: data, path: path)
        } catch TensorFileError.malformed(let p, let reason) {
            throw TensorFileError.malformed(path: p, reason: otherFormat(data) ?? reason)
        }
    }

    private static func validHeader(of data: Data, path: String) throws -> Header {
        guard data.count >= 8 else { throw TensorFileError.malformed(path: path, reason: "\(data.count) bytes, shorter than the 8-byte header length") }
        let n = data.withUnsafeBytes { raw -> UInt64 in
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(raw[i]) << (8 * UInt64(i)) }
            return v
        }
        let headerEnd = data.startIndex + 8 + Int(Swift.min(n, UInt64(data.count - 8)))
        return try Header(length: n, bytes: data.subdata(in: (data.startIndex + 8)..<headerEnd), fileSize: data.count, path: path)
    }

    /// What a file that is not safetensors is, when its first bytes say so — the files a user most often hands a
    /// tool that reads checkpoints — or nil. Asked only of a file whose header failed, so a valid file is never
    /// taken for one of these.
    static func otherFormat(_ data: Data) -> String? {
        let head = [UInt8](data.prefix(8))
        func starts(_ magic: [UInt8]) -> Bool { head.count >= magic.count && Array(head.prefix(magic.count)) == magic }
        let save = "save the state dict with safetensors.torch.save_file(module.state_dict(), PATH)"
        if starts([0x50, 0x4B, 0x03, 0x04]) { return "a zip archive (what torch.save writes), not safetensors: \(save)" }
        if head.count >= 2 && head[0] == 0x80 && (2...5).contains(head[1]) {
            return "a Python pickle (torch.save's legacy format, pickle.dump), not safetensors: \(save)"
        }
        if starts([0x93] + Array("NUMPY".utf8)) { return "a NumPy .npy array, not a safetensors checkpoint" }
        if starts([0x89] + Array("HDF".utf8)) { return "an HDF5 file (Keras .h5), not safetensors" }
        if starts(Array("GGUF".utf8)) { return "a GGUF file, not safetensors" }
        if head.first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "{") {
            return "JSON text, not safetensors (a configuration goes beside the checkpoint as NAME.json)"
        }
        return nil
    }

    /// Parses the bytes of a safetensors file; `path` names it in errors.
    public static func parse(_ data: Data, path: String = "<memory>") throws -> SafeTensorsFile {
        let header = try header(of: data, path: path)
        var out = SafeTensorsFile(metadata: header.metadata)
        for (name, e) in header.entries {
            out.tensors[name] = try data.withUnsafeBytes { raw in
                try decode(UnsafeRawBufferPointer(rebasing: raw[(header.dataStart + e.begin)..<(header.dataStart + e.end)]),
                           dtype: e.dtype, shape: e.shape, count: e.count, path: path, name: name)
            }
        }
        return out
    }

    /// A validated header: every tensor's dtype, shape and byte range, and the metadata. Nothing is trusted
    /// before it is checked: the length against the file size and a cap, UTF-8 and JSON, dtypes, integer
    /// shapes and offsets (exact integers — no fractions, no wrap-around), in bounds, consistent with dtype
    /// × shape, non-overlapping.
    public struct Header: Sendable {
        public struct Entry: Sendable {
            public let dtype: DType
            public let shape: [Int]
            public let count: Int
            /// Byte range relative to ``Header/dataStart``.
            public let begin: Int, end: Int
        }
        public let entries: [String: Entry]
        public let metadata: [String: String]
        /// The file offset of the data section.
        public let dataStart: Int

        /// - Parameters:
        ///   - n: the header length from the file's first 8 bytes.
        ///   - headerBytes: the header's bytes (the `n` bytes after the first 8, or fewer when the file is short).
        ///   - fileSize: the file's size in bytes.
        ///   - path: the file's name in errors.
        public init(length n: UInt64, bytes headerBytes: Data, fileSize: Int, path: String) throws {
            func bad(_ r: String) -> TensorFileError { .malformed(path: path, reason: r) }
            guard n <= UInt64(maxHeader), fileSize >= 8, n <= UInt64(fileSize - 8), headerBytes.count == Int(n) else {
                throw bad("header length \(n) exceeds the file (\(fileSize) bytes) or the \(maxHeader)-byte cap")
            }
            guard String(data: headerBytes, encoding: .utf8) != nil else { throw bad("header is not UTF-8") }
            let json: Any
            do {
                json = try JSONSerialization.jsonObject(with: headerBytes)
            } catch {
                throw bad("header is not JSON: \(error.localizedDescription)")
            }
            guard let header = json as? [String: Any] else { throw bad("header is not a JSON object") }
            dataStart = 8 + Int(n)
            let bodyCount = fileSize - 8 - Int(n)
            var metadata: [String: String] = [:]
            if let meta = header["__metadata__"] {
                guard let m = meta as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("__metadata__ value of '\(k)' is not a string") }
                    metadata[k] = s
                }
            }
            self.metadata = metadata
            var entries: [String: Entry] = [:]
            var spans: [(Int, Int, String)] = []
            for (name, entry) in header where name != "__metadata__" {
                func badT(_ r: String) -> TensorFileError { .badTensor(path: path, name: name, reason: r) }
                guard let e = entry as? [String: Any], let dtypeName = e["dtype"] as? String,
                      let shapeAny = e["shape"] as? [Any], let offsAny = e["data_offsets"] as? [Any], offsAny.count == 2
                else { throw badT("entry needs dtype, shape and two data_offsets") }
                guard let dtype = DType(rawValue: dtypeName) else { throw badT("unsupported dtype \(dtypeName)") }
                var shape: [Int] = []
                var count = 1
                for s in shapeAny {
                    guard let v = exactInteger(s), v >= 0, v <= Int(Int32.max) else { throw badT("bad shape \(shapeAny)") }
                    let (p, o) = count.multipliedReportingOverflow(by: v)
                    guard !o, p <= Int(Int32.max) else { throw badT("shape \(shapeAny) is too large") }
                    count = p
                    shape.append(v)
                }
                guard let b = exactInteger(offsAny[0]), let en = exactInteger(offsAny[1]), b >= 0, en >= b, en <= bodyCount
                else { throw badT("data_offsets \(offsAny) out of bounds for \(bodyCount) data bytes") }
                guard en - b == count * dtype.size else {
                    throw badT("\(en - b) bytes for \(dtype.rawValue) \(shape) (needs \(count * dtype.size))")
                }
                if en > b { spans.append((b, en, name)) }  // an empty tensor occupies no bytes: it overlaps nothing
                entries[name] = Entry(dtype: dtype, shape: shape, count: count, begin: b, end: en)
            }
            spans.sort { $0.0 < $1.0 }
            for i in spans.indices.dropFirst() where spans[i].0 < spans[i - 1].1 {
                throw TensorFileError.badTensor(path: path, name: spans[i].2, reason: "data overlaps tensor '\(spans[i - 1].2)'")
            }
            self.entries = entries
        }
    }

    /// A JSON number that is exactly an integer in `Int`'s range (no fraction, exponent or wrap-around);
    /// `nil` otherwise.
    static func exactInteger(_ value: Any) -> Int? {
        // JSONSerialization gives integer literals an integer type code; fractions, exponents, numbers
        // beyond 64 bits (double or decimal) and booleans ("c") are refused.
        guard let n = value as? NSNumber, !(n is NSDecimalNumber),
              let code = String(validatingCString: n.objCType), ["q", "Q", "i", "l", "s", "I", "L", "S"].contains(code)
        else { return nil }
        let text = n.stringValue
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-") }) else { return nil }
        return Int(text)
    }

    /// The element types of the format.
    public enum DType: String, Sendable {
        case F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL
        public var size: Int {
            switch self {
            case .F64, .I64: return 8
            case .F32, .I32: return 4
            case .F16, .BF16, .I16: return 2
            case .U8, .I8, .BOOL: return 1
            }
        }
    }

    /// The elements of `raw` as floats or integers. `first` is the index of `raw`'s first element in its tensor (a
    /// streamed chunk's offset), for messages. A finite F64 value beyond float32's range is refused, naming it: it
    /// would become ±∞ and then pass for a non-finite value of the file.
    static func decode(_ raw: UnsafeRawBufferPointer, dtype: DType, shape: [Int], count: Int, path: String, name: String,
                       first: Int = 0) throws -> StoredTensor {
        func le<T: FixedWidthInteger>(_ i: Int, _: T.Type) -> T { T(littleEndian: raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
        switch dtype {
        case .F32: return .float(Tensor((0..<count).map { Float(bitPattern: le($0, UInt32.self)) }, shape: shape))
        case .F64:
            let stored = { (i: Int) in Double(bitPattern: le(i, UInt64.self)) }
            let values = (0..<count).map { Float(stored($0)) }
            if let i = values.indices.first(where: { values[$0].isInfinite && stored($0).isFinite }) {
                let d = stored(i)
                throw TensorFileError.badTensor(path: path, name: name, reason: "element \(first + i) is \(d), beyond the range of float32 (±\(Float.greatestFiniteMagnitude)), in which this library computes; scale the data")
            }
            return .float(Tensor(values, shape: shape))
        case .F16: return .float(Tensor((0..<count).map { Float(Float16(bitPattern: le($0, UInt16.self))) }, shape: shape))
        case .BF16: return .float(Tensor((0..<count).map { Float(bitPattern: UInt32(le($0, UInt16.self)) << 16) }, shape: shape))
        case .I64: return .integer(IndexTensor((0..<count).map { Int(le($0, Int64.self)) }, shape: shape))
        case .I32: return .integer(IndexTensor((0..<count).map { Int(le($0, Int32.self)) }, shape: shape))
        case .I16: return .integer(IndexTensor((0..<count).map { Int(le($0, Int16.self)) }, shape: shape))
        case .I8: return .integer(IndexTensor((0..<count).map { Int(Int8(bitPattern: raw[$0])) }, shape: shape))
        case .U8: return .integer(IndexTensor((0..<count).map { Int(raw[$0]) }, shape: shape))
        case .BOOL:
            for i in 0..<count where raw[i] > 1 { throw TensorFileError.badTensor(path: path, name: name, reason: "BOOL byte \(raw[i]) at \(i)") }
            return .integer(IndexTensor((0..<count).map { Int(raw[$0]) }, shape: shape))
        }
    }

    /// A float tensor by name; integers are converted.
    public func float(_ name: String, path: String = "<file>") throws -> Tensor {
        guard let t = tensors[name] else { throw TensorFileError.missingTensor(path: path, name: name) }
        return t.asFloat
    }

    /// The serialised bytes: F32 for float tensors and I64 for integer tensors unless `dtypes` names another
    /// element type for a tensor (F16, BF16 and F64 round floats to nearest; integer types require integral
    /// values in range). Keys are sorted; the data is 8-byte aligned.
    public func serialized(dtypes: [String: DType] = [:]) throws -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var body = Data()
        func append<T>(_ v: T) { var v = v; withUnsafeBytes(of: &v) { body.append(contentsOf: $0) } }
        for name in tensors.keys.sorted() {
            let t = tensors[name]!
            let dtype: DType
            if let d = dtypes[name] { dtype = d } else if case .float = t { dtype = .F32 } else { dtype = .I64 }
            let start = body.count
            switch dtype {
            case .F32: for v in t.asFloat.scalars { append(v.bitPattern.littleEndian) }
            case .F64: for v in t.asFloat.scalars { append(Double(v).bitPattern.littleEndian) }
            case .F16: for v in t.asFloat.scalars { append(Float16(v).bitPattern.littleEndian) }
            case .BF16:
                for v in t.asFloat.scalars {
                    let bits = v.bitPattern
                    let rounded = v.isNaN ? (bits >> 16) | 0x40 : (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
                    append(UInt16(truncatingIfNeeded: rounded).littleEndian)
                }
            case .I64, .I32, .I16, .I8, .U8, .BOOL:
                guard let ints = t.asIndices else {
                    throw TensorFileError.badTensor(path: "<memory>", name: name, reason: "non-integral values cannot be stored as \(dtype.rawValue)")
                }
                let range: ClosedRange<Int> = switch dtype {
                case .I32: Int(Int32.min)...Int(Int32.max)
                case .I16: Int(Int16.min)...Int(Int16.max)
                case .I8: Int(Int8.min)...Int(Int8.max)
                case .U8: 0...255
                case .BOOL: 0...1
                default: Int.min...Int.max
                }
                if let bad = ints.scalars.first(where: { !range.contains($0) }) {
                    throw TensorFileError.badTensor(path: "<memory>", name: name, reason: "value \(bad) does not fit \(dtype.rawValue)")
                }
                for v in ints.scalars {
                    switch dtype {
                    case .I64: append(Int64(v).littleEndian)
                    case .I32: append(Int32(v).littleEndian)
                    case .I16: append(Int16(v).littleEndian)
                    case .I8: append(Int8(v))
                    default: append(UInt8(v))
                    }
                }
            }
            header[name] = ["dtype": dtype.rawValue, "shape": t.shape, "data_offsets": [start, body.count]]
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out = Data()
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(body)
        return out
    }

    /// Writes atomically: a temporary file in the same folder, flushed, then renamed over `url`, so a
    /// crash never leaves a half-written file where the old one was.
    public func write(to url: URL, dtypes: [String: DType] = [:]) throws {
        try AtomicFile.write(try serialized(dtypes: dtypes), to: url)
    }
}

/// Atomic file replacement: write a temporary sibling, fsync it, rename it over the target.
///
/// - Through a symbolic link, the file the link points to is replaced (the link stays a link).
/// - A replaced file keeps its permission bits; a new file gets `0644` less the umask.
/// - Temporary files are named `.NAME.tmp-PID-RANDOM`; one left behind by a process that was killed
///   (its PID no longer runs) is removed by the next write to the same target.
public enum AtomicFile {
    public static func write(_ data: Data, to url: URL) throws {
        let staged = try StagedFile(replacing: url)
        do {
            try staged.write(data, at: 0)
            try staged.commit()
        } catch {
            staged.abandon()
            throw error
        }
    }

    /// Replaces several files as one set (a checkpoint and its sidecar): each is written and synced to a
    /// temporary sibling first, then all are renamed while an exclusive lock is held on their folders, so
    /// two processes writing the same set never interleave their renames (no mix of one's checkpoint with
    /// the other's sidecar). A failure before the renames leaves every target untouched; so does a set that names one
    /// file twice — however spelt, through a symbolic link or a hard link (it is refused).
    public static func write(_ files: [(data: Data, url: URL)]) throws {
        // One file twice in a set (however spelt, through links) would be replaced by whichever is renamed last.
        var targets: [String: String] = [:]
        for (_, url) in files {
            let target = StagedFile.resolvedTarget(url).path
            var st = stat()
            // An existing file by its device and inode, so that a hard link is the file it links to.
            let key = stat(target, &st) == 0 ? "\(st.st_dev):\(st.st_ino)" : target
            if let first = targets[key] {
                throw TensorFileError.unwritable(path: url.path, reason: "the same file as \(first) in one set of writes; give each its own path")
            }
            targets[key] = url.path
        }
        var staged: [StagedFile] = []
        do {
            for (data, url) in files {
                let s = try StagedFile(replacing: url)
                staged.append(s)
                try s.write(data, at: 0)
            }
            try StagedFile.commit(staged)
        } catch {
            for s in staged { s.abandon() }
            throw error
        }
    }
}

/// The temporary file behind an atomic write (see ``AtomicFile``): written at any offset, then
/// ``commit()`` (fsync, rename, fsync of the folder) or ``abandon()`` (removed).
public final class StagedFile {
    public let target: URL
    let requested: URL
    let tmp: URL
    let fd: Int32
    let mode: mode_t
    private var done = false

    public init(replacing url: URL) throws {
        requested = url
        target = StagedFile.resolvedTarget(url)
        if let reason = StagedFile.targetProblem(url) { throw TensorFileError.unwritable(path: url.path, reason: reason) }
        let dir = target.deletingLastPathComponent()
        StagedFile.removeStaleTemporaries(of: target)
        tmp = dir.appendingPathComponent("\(StagedFile.temporaryPrefix(of: target))\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        var st = stat()
        if stat(target.path, &st) == 0 {
            mode = st.st_mode & 0o7777
        } else {
            let mask = umask(0)
            umask(mask)
            mode = 0o644 & ~mask
        }
        let path = tmp.path
        fd = try StagedFile.live.withLock { live in
            guard !live.interrupted else { throw TensorFileError.unwritable(path: url.path, reason: "interrupted") }
            let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw TensorFileError.unwritable(path: url.path, reason: "cannot create a temporary file in \(dir.path): \(String(cString: strerror(errno)))")
            }
            live.paths.insert(path)
            return fd
        }
    }

    /// The temporary files of this process's writes in progress, so that an interrupted command can remove them;
    /// renames happen under the same lock, so an interruption never falls between the renames of one set.
    private static let live = Mutex(LiveTemporaries())
    private struct LiveTemporaries: ~Copyable {
        var paths: Set<String> = []
        var interrupted = false
    }

    /// Removes the temporary file of every write of this process in progress, and refuses new ones: for a command
    /// that is being interrupted (the `vq` tool calls it on SIGINT, SIGTERM and SIGHUP, then exits by the signal), so
    /// that no half-written temporary stays behind. A set of renames in progress finishes first; every target is
    /// left as it was before its write, or whole. Returns how many temporaries it removed.
    @discardableResult
    public static func abandonAll() -> Int {
        live.withLock { live in
            live.interrupted = true
            for path in live.paths { unlink(path) }
            defer { live.paths.removeAll() }
            return live.paths.count
        }
    }

    deinit { if !done { abandon() } }

    /// The temporary file's name (`.NAME.tmp-PID-RANDOM`, `NAME` cut to fit 255 bytes).
    public var temporaryName: String { tmp.lastPathComponent }

    /// Writes `data` at byte `offset`.
    public func write(_ data: Data, at offset: Int) throws {
        var written = 0
        try data.withUnsafeBytes { raw in
            while written < raw.count {
                let n = pwrite(fd, raw.baseAddress! + written, raw.count - written, off_t(offset + written))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw TensorFileError.unwritable(path: requested.path, reason: String(cString: strerror(errno))) }
                written += n
            }
        }
    }

    /// Makes the file appear under its name: permission bits, fsync, rename, fsync of the folder.
    public func commit() throws { try StagedFile.commit([self]) }

    /// Commits several staged files: all are synced, then renamed in order under an exclusive `flock` of
    /// each distinct folder (taken in path order), then the folders are synced.
    public static func commit(_ files: [StagedFile]) throws {
        for f in files { try f.sync() }
        let folders = Array(Set(files.map { $0.target.deletingLastPathComponent().path })).sorted()
        let locks = folders.map { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        for l in locks where l >= 0 { while flock(l, LOCK_EX) != 0 && errno == EINTR {} }
        defer {
            for l in locks where l >= 0 {
                fsync(l)
                flock(l, LOCK_UN)
                close(l)
            }
        }
        try live.withLock { live in
            guard !live.interrupted else { throw TensorFileError.unwritable(path: files.first?.requested.path ?? "", reason: "interrupted") }
            for f in files {
                live.paths.remove(f.tmp.path)
                try f.moveIntoPlace()
            }
        }
    }

    /// Permission bits and fsync of the temporary file.
    func sync() throws {
        precondition(!done, "StagedFile: committed or abandoned twice")
        fchmod(fd, mode)
        guard fsync(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            abandon()
            throw TensorFileError.unwritable(path: requested.path, reason: reason)
        }
    }

    /// Renames the synced temporary file over the target.
    func moveIntoPlace() throws {
        close(fd)
        done = true
        if rename(tmp.path, target.path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(tmp.path)
            throw TensorFileError.unwritable(path: requested.path, reason: reason)
        }
    }

    /// Removes the temporary file; the target is untouched.
    public func abandon() {
        guard !done else { return }
        done = true
        close(fd)
        StagedFile.live.withLock { _ = $0.paths.remove(tmp.path) }
        unlink(tmp.path)
    }

    /// Why `url` cannot be replaced by a file, or `nil`: its folder must exist, and what it names (through links),
    /// if anything, must be a regular file — a rename over a device (`/dev/null`), a named pipe, a socket or a folder
    /// would replace that node itself (as root, `/dev/null` would become a file). Commands ask this for every output
    /// before they read anything; every atomic write asks it again.
    ///
    /// ```swift
    /// StagedFile.targetProblem(URL(fileURLWithPath: "/dev/null"))   // "not a regular file (a character device) …"
    /// ```
    public static func targetProblem(_ url: URL) -> String? {
        let target = resolvedTarget(url)
        let dir = target.deletingLastPathComponent()
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            return "no such folder \(dir.path)"
        }
        var st = stat()
        guard lstat(target.path, &st) == 0 else {
            // A new file — or a name no file can have (longer than 255 bytes), or a path through something not a folder.
            return errno == ENOENT ? nil : "cannot be created: \(String(cString: strerror(errno)))"
        }
        return TensorFileError.specialFileKind(st.st_mode).map { "not a regular file (\($0)): the file written would replace it; name a file" }
    }

    /// The file a path finally names: symbolic links followed (relative links against their folder).
    static func resolvedTarget(_ url: URL) -> URL {
        var current = url.standardizedFileURL
        for _ in 0..<40 {
            guard let dest = try? FileManager.default.destinationOfSymbolicLink(atPath: current.path) else { return current }
            current = dest.hasPrefix("/") ? URL(fileURLWithPath: dest)
                : current.deletingLastPathComponent().appendingPathComponent(dest).standardizedFileURL
        }
        return current
    }

    /// `.NAME.tmp-`, the start of the name of every temporary sibling of `target` (then `PID-RANDOM`, at most 21 bytes):
    /// `NAME` cut, on a character boundary, so the whole name stays within a file name's 255 bytes — a target named
    /// with 240 bytes is as writable as any other.
    static func temporaryPrefix(of target: URL) -> String {
        var name = Substring(target.lastPathComponent)
        while name.utf8.count > 255 - 1 - 5 - 21 { name = name.dropLast() }
        return ".\(name).tmp-"
    }

    /// Removes `.NAME.tmp-PID-*` siblings of `target` whose process no longer runs.
    static func removeStaleTemporaries(of target: URL) {
        let dir = target.deletingLastPathComponent()
        let prefix = temporaryPrefix(of: target)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return }
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                unlink(dir.appendingPathComponent(name).path)
            }
        }
    }
}
