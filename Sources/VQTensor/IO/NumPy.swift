import Foundation

/// The `.npy` format (NumPy's `numpy.lib.format`, versions 1–3): magic `\x93NUMPY`, version, header length,
/// a Python-dict header (`descr`, `fortran_order`, `shape`), then the data.
///
/// Reads little-endian (or byte-order-free) `f4 f8 f2 i8 i4 i2 i1 u1 b1` in C order; Fortran order and
/// big-endian data are rejected with a ``TensorFileError`` naming the file. Writes `<f4` and `<i8`.
public enum NumPyFile {
    public static let maxHeader = 1 << 20

    public static func read(contentsOf url: URL) throws -> StoredTensor {
        try parse(try TensorFileError.mappedContents(of: url), path: url.path)
    }

    public static func parse(_ data: Data, path: String = "<memory>") throws -> StoredTensor {
        let h = try Header(prefix: data.prefix(12 + maxHeader), fileSize: data.count, path: path)
        let stored = try data.withUnsafeBytes { raw in
            try SafeTensorsFile.decode(UnsafeRawBufferPointer(rebasing: raw[h.dataStart..<(h.dataStart + h.count * h.dtype.size)]),
                                       dtype: h.dtype, shape: h.shape, count: h.count, path: path, name: "array")
        }
        return h.fortranOrder ? rowMajor(fromFortranOrder: stored) : stored
    }

    /// A Fortran-order (column-major) array's elements, as read in file order under its shape, put in
    /// row-major order (what `np.save(a.T)` and many `np.linalg` results write; values unchanged).
    public static func rowMajor(fromFortranOrder t: StoredTensor) -> StoredTensor {
        let shape = t.shape
        guard shape.count > 1 else { return t }
        func reorder<T>(_ v: [T]) -> [T] {
            // Column-major strides; walk the row-major positions in order with an odometer.
            var strides = [Int](repeating: 1, count: shape.count)
            for a in 1..<shape.count { strides[a] = strides[a - 1] * shape[a - 1] }
            var out: [T] = []
            out.reserveCapacity(v.count)
            var index = [Int](repeating: 0, count: shape.count)
            var offset = 0
            for _ in 0..<v.count {
                out.append(v[offset])
                var a = shape.count - 1
                while a >= 0 {
                    index[a] += 1
                    offset += strides[a]
                    if index[a] < shape[a] { break }
                    offset -= strides[a] * shape[a]
                    index[a] = 0
                    a -= 1
                }
            }
            return out
        }
        switch t {
        case .float(let f): return .float(Tensor(reorder(f.scalars), shape: shape))
        case .integer(let i): return .integer(IndexTensor(reorder(i.scalars), shape: shape))
        }
    }

    /// A validated `.npy` header: element type, shape and where the data starts; the file is long enough.
    public struct Header: Sendable {
        public let dtype: SafeTensorsFile.DType
        public let shape: [Int]
        public let count: Int
        public let dataStart: Int
        /// The data is in Fortran (column-major) order (`fortran_order: True`).
        public let fortranOrder: Bool

        /// - Parameters:
        ///   - data: the file's first bytes (at least the whole header when the file has one).
        ///   - fileSize: the file's size in bytes.
        ///   - path: the file's name in errors.
        public init(prefix data: Data, fileSize: Int, path: String) throws {
            func bad(_ r: String) -> TensorFileError { .malformed(path: path, reason: r) }
            let bytes = [UInt8](data.prefix(12))
            guard bytes.count >= 10, bytes[0] == 0x93, Array(bytes[1...5]) == Array("NUMPY".utf8) else { throw bad("no .npy magic") }
            let major = bytes[6]
            let headerLength: Int
            let start: Int
            switch major {
            case 1:
                headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
                start = 10
            case 2, 3:
                guard bytes.count >= 12 else { throw bad("truncated header length") }
                headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
                start = 12
            default:
                throw bad("unsupported .npy version \(major)")
            }
            guard headerLength <= maxHeader, start + headerLength <= data.count, start + headerLength <= fileSize else {
                throw bad("header length \(headerLength) exceeds the file (\(fileSize) bytes)")
            }
            let headerData = data.subdata(in: (data.startIndex + start)..<(data.startIndex + start + headerLength))
            guard let header = String(data: headerData, encoding: major == 3 ? .utf8 : .isoLatin1) else { throw bad("header is not text") }
            let excerpt = String(header.prefix(80)).replacingOccurrences(of: "\n", with: " ").trimmingCharacters(in: .whitespaces)
            guard let raw = NumPyFile.field(header, "descr") else { throw bad("header has no descr: \(excerpt)") }
            guard let descr = NumPyFile.quoted(raw) else {
                throw bad("a structured dtype (fields) is not supported; save a plain float or integer array: \(excerpt)")
            }
            guard let fortran = NumPyFile.field(header, "fortran_order") else { throw bad("header has no fortran_order") }
            guard fortran.hasPrefix("True") || fortran.hasPrefix("False") else { throw bad("fortran_order is neither True nor False") }
            guard let shapeText = NumPyFile.field(header, "shape"), let shape = NumPyFile.parseShape(shapeText) else { throw bad("header has no valid shape") }
            var count = 1
            for s in shape {
                let (p, o) = count.multipliedReportingOverflow(by: s)
                guard !o, p <= Int(Int32.max) else { throw bad("shape \(shape) is too large") }
                count = p
            }
            guard let order = descr.first else { throw bad("empty descr") }
            if order == ">" { throw bad("big-endian data (\(descr)) is not supported; convert with arr.astype('<\(descr.dropFirst())')") }
            let kind = order == "<" || order == "|" || order == "=" ? String(descr.dropFirst()) : descr
            let dtype: SafeTensorsFile.DType
            switch kind {
            case "f4": dtype = .F32
            case "f8": dtype = .F64
            case "f2": dtype = .F16
            case "i8": dtype = .I64
            case "i4": dtype = .I32
            case "i2": dtype = .I16
            case "i1": dtype = .I8
            case "u1": dtype = .U8
            case "b1": dtype = .BOOL
            default: throw bad("unsupported dtype \(descr)")
            }
            let body = start + headerLength
            guard fileSize - body >= count * dtype.size else {
                throw bad("\(fileSize - body) data bytes for \(descr) \(shape) (needs \(count * dtype.size))")
            }
            self.dtype = dtype
            self.shape = shape
            self.count = count
            self.dataStart = body
            self.fortranOrder = fortran.hasPrefix("True")
        }
    }

    /// The value text of `'key': value` in a Python dict literal.
    static func field(_ header: String, _ key: String) -> String? {
        guard let r = header.range(of: "'\(key)'") ?? header.range(of: "\"\(key)\"") else { return nil }
        var rest = header[r.upperBound...].drop { $0 == " " }
        guard rest.first == ":" else { return nil }
        rest = rest.dropFirst().drop { $0 == " " }
        return String(rest)
    }

    static func quoted(_ s: String) -> String? {
        guard let q = s.first, q == "'" || q == "\"" else { return nil }
        let body = s.dropFirst()
        guard let end = body.firstIndex(of: q) else { return nil }
        return String(body[..<end])
    }

    static func parseShape(_ s: String) -> [Int]? {
        guard s.first == "(", let end = s.firstIndex(of: ")") else { return nil }
        let inner = s[s.index(after: s.startIndex)..<end]
        let parts = inner.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var out: [Int] = []
        for p in parts {
            guard let v = Int(p.hasSuffix("L") ? String(p.dropLast()) : p), v >= 0 else { return nil }
            out.append(v)
        }
        return out
    }

    /// The bytes of a version-1 `.npy` file: `<f4` for float tensors, `<i8` for integer tensors.
    public static func serialized(_ t: StoredTensor) -> Data {
        var body = Data()
        let descr: String
        switch t {
        case .float(let f):
            descr = "<f4"
            for v in f.scalars { var le = v.bitPattern.littleEndian; withUnsafeBytes(of: &le) { body.append(contentsOf: $0) } }
        case .integer(let i):
            descr = "<i8"
            for v in i.scalars { var le = Int64(v).littleEndian; withUnsafeBytes(of: &le) { body.append(contentsOf: $0) } }
        }
        var out = header(shape: t.shape, descr: descr)
        out.append(body)
        return out
    }

    /// The magic, version and 64-byte-aligned header of a version-1 (or, for a header over 64 KiB, 2) file.
    static func header(shape: [Int], descr: String) -> Data {
        let shapeText: String
        switch shape.count {
        case 0: shapeText = "()"
        case 1: shapeText = "(\(shape[0]),)"
        default: shapeText = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let n = UInt16(header.utf8.count)
        out.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        out.append(contentsOf: Array(header.utf8))
        return out
    }

    /// Writes atomically (temporary file, fsync, rename).
    public static func write(_ t: StoredTensor, to url: URL) throws { try AtomicFile.write(serialized(t), to: url) }
}

/// The ANN-benchmark vector formats: each vector is a little-endian `Int32` dimension followed by that
/// many components — `Float32` (`.fvecs`), `UInt8` (`.bvecs`) or `Int32` (`.ivecs`). Every vector must
/// have the same dimension.
public enum VecsFile {
    public enum Kind: String, Sendable { case fvecs, bvecs, ivecs
        var size: Int { self == .bvecs ? 1 : 4 }
    }

    public static func kind(of url: URL) -> Kind? { Kind(rawValue: url.pathExtension.lowercased()) }

    public static func read(contentsOf url: URL) throws -> StoredTensor {
        guard let kind = kind(of: url) else {
            throw TensorFileError.malformed(path: url.path, reason: "extension must be .fvecs, .bvecs or .ivecs")
        }
        return try parse(try TensorFileError.mappedContents(of: url), kind: kind, path: url.path)
    }

    public static func parse(_ data: Data, kind: Kind, path: String = "<memory>") throws -> StoredTensor {
        func bad(_ r: String) -> TensorFileError { .malformed(path: path, reason: r) }
        if data.isEmpty { return kind == .fvecs ? .float(Tensor.zeros([0, 0])) : .integer(IndexTensor([], shape: [0, 0])) }
        return try data.withUnsafeBytes { raw -> StoredTensor in
            guard raw.count >= 4 else { throw bad("truncated dimension") }
            let d = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: Int32.self)))
            guard d > 0, d <= 1 << 20 else { throw bad("dimension \(d) out of range") }
            let record = 4 + d * kind.size
            guard raw.count % record == 0 else { throw bad("\(raw.count) bytes are not a whole number of \(record)-byte vectors of dimension \(d)") }
            let n = raw.count / record
            var floats: [Float] = []
            var ints: [Int] = []
            if kind == .fvecs { floats.reserveCapacity(n * d) } else { ints.reserveCapacity(n * d) }
            for v in 0..<n {
                let off = v * record
                let dv = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: off, as: Int32.self)))
                guard dv == d else { throw bad("vector \(v) has dimension \(dv), expected \(d)") }
                for j in 0..<d {
                    switch kind {
                    case .fvecs: floats.append(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: off + 4 + 4 * j, as: UInt32.self))))
                    case .ivecs: ints.append(Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: off + 4 + 4 * j, as: Int32.self))))
                    case .bvecs: ints.append(Int(raw[off + 4 + j]))
                    }
                }
            }
            return kind == .fvecs ? .float(Tensor(floats, shape: [n, d])) : .integer(IndexTensor(ints, shape: [n, d]))
        }
    }

    public static func serialized(_ t: StoredTensor, kind: Kind) throws -> Data {
        guard t.shape.count == 2 else { throw TensorFileError.badTensor(path: "<memory>", name: "vectors", reason: "must be [n, d], got \(t.shape)") }
        let (n, d) = (t.shape[0], t.shape[1])
        var out = Data()
        for v in 0..<n {
            var dim = Int32(d).littleEndian
            withUnsafeBytes(of: &dim) { out.append(contentsOf: $0) }
            for j in 0..<d {
                switch (kind, t) {
                case (.fvecs, _):
                    var b = t.asFloat.scalars[v * d + j].bitPattern.littleEndian
                    withUnsafeBytes(of: &b) { out.append(contentsOf: $0) }
                case (.ivecs, _):
                    var b = Int32(clamping: t.asIndices?.scalars[v * d + j] ?? 0).littleEndian
                    withUnsafeBytes(of: &b) { out.append(contentsOf: $0) }
                case (.bvecs, _):
                    out.append(UInt8(clamping: t.asIndices?.scalars[v * d + j] ?? 0))
                }
            }
        }
        return out
    }

    public static func write(_ t: StoredTensor, to url: URL) throws {
        guard let kind = kind(of: url) else { throw TensorFileError.unwritable(path: url.path, reason: "extension must be .fvecs, .bvecs or .ivecs") }
        try AtomicFile.write(try serialized(t, kind: kind), to: url)
    }
}
