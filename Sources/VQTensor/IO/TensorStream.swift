import Foundation

/// A tensor in a file, read in pieces: the header is validated when the reader opens, and elements are
/// read (`pread`) only when asked for, so memory does not grow with the file.
///
/// Reads `.npy`, `.fvecs`/`.bvecs`/`.ivecs` and one tensor of a `.safetensors` file, with the same
/// checks as the whole-file readers; a `.vecs` row whose dimension differs is an error when it is read.
///
/// ```swift
/// let r = try TensorFileReader(path: "x.npy")
/// let first = try r.elements(0..<(1000 * r.shape[1]))   // the first 1,000 rows, flat
/// ```
public final class TensorFileReader {
    public let path: String
    public let dtype: SafeTensorsFile.DType
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }
    /// Whether the elements are floating point (else integers or booleans).
    public var isFloat: Bool { [.F32, .F64, .F16, .BF16].contains(dtype) }
    private let fd: Int32
    private let dataStart: Int
    private let vecs: VecsFile.Kind?
    /// A Fortran-order `.npy` is read whole once and kept in row-major order (its rows are not contiguous).
    private var fortranOrder = false
    private var wholeRowMajor: StoredTensor?

    /// Opens `path`; for a safetensors file `name` picks the tensor (needed when it holds several).
    public init(path: String, name: String? = nil) throws {
        self.path = path
        // Non-blocking, so that a named pipe is refused (below) instead of waiting for a writer.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw TensorFileError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw TensorFileError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        if let kind = TensorFileError.specialFileKind(st.st_mode) {
            close(fd)
            throw TensorFileError.unreadable(path: path, reason: "not a regular file (\(kind))")
        }
        let size = Int(st.st_size)
        func read(_ offset: Int, _ n: Int) -> Data {
            var buf = [UInt8](repeating: 0, count: Swift.max(0, n))
            let got = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(offset)) }
            return Data(buf.prefix(Swift.max(0, got)))
        }
        do {
            switch URL(fileURLWithPath: path).pathExtension.lowercased() {
            case "npy":
                let h = try NumPyFile.Header(prefix: read(0, Swift.min(size, 12 + NumPyFile.maxHeader)), fileSize: size, path: path)
                (dtype, shape, dataStart, vecs) = (h.dtype, h.shape, h.dataStart, nil)
                fortranOrder = h.fortranOrder
            case "safetensors":
                guard size >= 8 else { throw TensorFileError.malformed(path: path, reason: "\(size) bytes, shorter than the 8-byte header length") }
                let first8 = [UInt8](read(0, 8))
                var n: UInt64 = 0
                for i in 0..<8 { n |= UInt64(first8[i]) << (8 * UInt64(i)) }
                let length = Int(Swift.min(n, UInt64(Swift.min(size - 8, SafeTensorsFile.maxHeader + 1))))
                let h = try SafeTensorsFile.Header(length: n, bytes: read(8, length), fileSize: size, path: path)
                let names = h.entries.keys.sorted()
                let key: String
                if let name {
                    guard h.entries[name] != nil else {
                        throw TensorFileError.badTensor(path: path, name: name, reason: "no such tensor (has: \(names.joined(separator: ", ")))")
                    }
                    key = name
                } else {
                    guard names.count == 1 else {
                        throw TensorFileError.malformed(path: path, reason: "holds \(names.count) tensors: name one as \(URL(fileURLWithPath: path).lastPathComponent):NAME (\(names.joined(separator: ", ")))")
                    }
                    key = names[0]
                }
                let e = h.entries[key]!
                (dtype, shape, dataStart, vecs) = (e.dtype, e.shape, h.dataStart + e.begin, nil)
            case "fvecs", "bvecs", "ivecs":
                let kind = VecsFile.kind(of: URL(fileURLWithPath: path))!
                if size == 0 {
                    (dtype, shape, dataStart, vecs) = (kind == .fvecs ? .F32 : .I32, [0, 0], 0, kind)
                } else {
                    guard size >= 4 else { throw TensorFileError.malformed(path: path, reason: "truncated dimension") }
                    let d = read(0, 4).withUnsafeBytes { Int(Int32(littleEndian: $0.loadUnaligned(as: Int32.self))) }
                    guard d > 0, d <= 1 << 20 else { throw TensorFileError.malformed(path: path, reason: "dimension \(d) out of range") }
                    let record = 4 + d * kind.size
                    guard size % record == 0 else {
                        throw TensorFileError.malformed(path: path, reason: "\(size) bytes are not a whole number of \(record)-byte vectors of dimension \(d)")
                    }
                    let n = size / record
                    guard SizeGuard.fits([n, d]) else { throw TensorFileError.malformed(path: path, reason: "\(n) × \(d) values are too many") }
                    (dtype, shape, dataStart, vecs) = (kind == .fvecs ? .F32 : kind == .bvecs ? .U8 : .I32, [n, d], 0, kind)
                }
            default:
                throw TensorFileError.malformed(path: path, reason: "unsupported extension (use .npy, .fvecs, .bvecs, .ivecs or .safetensors)")
            }
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Elements `range` of the row-major data, flat (`[range.count]`). For a `.vecs` file the range must
    /// cover whole vectors.
    public func elements(_ range: Range<Int>) throws -> StoredTensor {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "TensorFileReader: elements \(range) of \(count)")
        if range.isEmpty { return isFloat ? .float(Tensor.zeros([0])) : .integer(IndexTensor([], shape: [0])) }
        let size = dtype.size
        if let vecs {
            let d = shape[1], record = 4 + d * vecs.size
            precondition(range.lowerBound % d == 0 && range.upperBound % d == 0, "TensorFileReader: \(range) is not whole vectors of \(d)")
            let (r0, r1) = (range.lowerBound / d, range.upperBound / d)
            let raw = try readBytes(r0 * record, (r1 - r0) * record)
            var packed = [UInt8](repeating: 0, count: (r1 - r0) * d * size)
            try raw.withUnsafeBytes { src in
                for r in 0..<(r1 - r0) {
                    let dv = Int(Int32(littleEndian: src.loadUnaligned(fromByteOffset: r * record, as: Int32.self)))
                    guard dv == d else { throw TensorFileError.malformed(path: path, reason: "vector \(r0 + r) has dimension \(dv), expected \(d)") }
                    packed.withUnsafeMutableBytes { dst in
                        dst.baseAddress!.advanced(by: r * d * size).copyMemory(from: src.baseAddress!.advanced(by: r * record + 4), byteCount: d * size)
                    }
                }
            }
            return try packed.withUnsafeBytes {
                try SafeTensorsFile.decode($0, dtype: dtype, shape: [range.count], count: range.count, path: path, name: "vectors")
            }
        }
        if fortranOrder {
            if wholeRowMajor == nil {
                let raw = try readBytes(dataStart, count * size)
                let fileOrder = try raw.withUnsafeBytes {
                    try SafeTensorsFile.decode($0, dtype: dtype, shape: shape, count: count, path: path, name: "data")
                }
                wholeRowMajor = NumPyFile.rowMajor(fromFortranOrder: fileOrder)
            }
            switch wholeRowMajor! {
            case .float(let f): return .float(Tensor(Array(f.scalars[range]), shape: [range.count]))
            case .integer(let i): return .integer(IndexTensor(Array(i.scalars[range]), shape: [range.count]))
            }
        }
        let raw = try readBytes(dataStart + range.lowerBound * size, range.count * size)
        return try raw.withUnsafeBytes {
            try SafeTensorsFile.decode($0, dtype: dtype, shape: [range.count], count: range.count, path: path, name: "data",
                                       first: range.lowerBound)
        }
    }

    private func readBytes(_ offset: Int, _ n: Int) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: n)
        var done = 0
        while done < n {
            let got = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, n - done, off_t(offset + done)) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { throw TensorFileError.unreadable(path: path, reason: got < 0 ? String(cString: strerror(errno)) : "the file became shorter") }
            done += got
        }
        return buf
    }
}

/// A tensor file written in pieces, atomically: the header first (the shape is known up front), then
/// elements at any position, then ``commit()`` makes it appear under its name in one rename. Until then
/// the previous file is untouched; a writer dropped without `commit()` removes its temporary file.
///
/// Formats: `.npy` (`<f4` or `<i8`), `.fvecs` (floats), `.ivecs`/`.bvecs` (integers within Int32 / 0…255;
/// a 1-D tensor is written as vectors of dimension 1, leading axes of a higher one are flattened) and `.safetensors` (one tensor `data`, F32 or I64).
/// A combination that would lose values (floats into `.ivecs`, indices into `.fvecs`) is refused before
/// any file is created.
public final class TensorFileWriter {
    public let path: String
    public let shape: [Int]
    public let isFloat: Bool
    private enum Format { case npy, safetensors, vecs(VecsFile.Kind) }
    private let format: Format
    private let staged: StagedFile
    private let dataStart: Int
    private var committed = false

    public init(path: String, shape: [Int], isFloat: Bool) throws {
        self.path = path
        self.shape = shape
        self.isFloat = isFloat
        let count = shape.reduce(1, *)
        var header = Data()
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "npy":
            format = .npy
            header = NumPyFile.header(shape: shape, descr: isFloat ? "<f4" : "<i8")
        case "safetensors":
            format = .safetensors
            let dtype = isFloat ? "F32" : "I64"
            let entry: [String: Any] = ["dtype": dtype, "shape": shape, "data_offsets": [0, count * (isFloat ? 4 : 8)]]
            var json = try JSONSerialization.data(withJSONObject: ["data": entry], options: [.sortedKeys])
            while (8 + json.count) % 8 != 0 { json.append(0x20) }
            var n = UInt64(json.count).littleEndian
            withUnsafeBytes(of: &n) { header.append(contentsOf: $0) }
            header.append(json)
        case let ext where VecsFile.Kind(rawValue: ext) != nil:
            let kind = VecsFile.Kind(rawValue: ext)!
            if isFloat && kind != .fvecs {
                throw TensorFileError.unwritable(path: path, reason: ".\(ext) holds integers: write vectors to .npy, .fvecs or .safetensors")
            }
            if !isFloat && kind == .fvecs {
                throw TensorFileError.unwritable(path: path, reason: ".fvecs holds floats: write indices to .npy, .ivecs, .bvecs or .safetensors")
            }
            guard shape.count >= 1 else {
                throw TensorFileError.unwritable(path: path, reason: ".\(ext) holds [n, d] vectors, not a scalar")
            }
            format = .vecs(kind)
        default:
            throw TensorFileError.unwritable(path: path, reason: "unsupported extension (use .npy, .fvecs, .ivecs, .bvecs or .safetensors)")
        }
        staged = try StagedFile(replacing: URL(fileURLWithPath: path))
        dataStart = header.count
        try staged.write(header, at: 0)
    }

    deinit { if !committed { staged.abandon() } }

    /// The vector length of a `.vecs` file: the last axis (1 for a 1-D tensor); leading axes are flattened.
    private var rowLength: Int { shape.count >= 2 ? shape[shape.count - 1] : 1 }

    /// Writes `values` (any shape; its elements in order) at flat element `offset` of the tensor. For a
    /// `.vecs` file the piece must cover whole vectors. Values that do not fit the format are an error.
    public func write(_ values: StoredTensor, atElement offset: Int) throws {
        let n = values.shape.reduce(1, *)
        precondition(offset >= 0 && offset + n <= shape.reduce(1, *), "TensorFileWriter: \(n) elements at \(offset) for shape \(shape)")
        var bytes = [UInt8]()
        func append<T>(_ v: T) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
        switch format {
        case .npy, .safetensors:
            bytes.reserveCapacity(n * (isFloat ? 4 : 8))
            if isFloat {
                for v in values.asFloat.scalars { append(v.bitPattern.littleEndian) }
            } else {
                guard let ints = values.asIndices else { throw TensorFileError.unwritable(path: path, reason: "non-integral indices") }
                for v in ints.scalars { append(Int64(v).littleEndian) }
            }
            try staged.write(Data(bytes), at: dataStart + offset * (isFloat ? 4 : 8))
        case .vecs(let kind):
            let d = rowLength
            precondition(offset % d == 0 && n % d == 0, "TensorFileWriter: \(n) elements at \(offset) are not whole vectors of \(d)")
            let floats = isFloat ? values.asFloat.scalars : []
            let ints = isFloat ? [] : (values.asIndices?.scalars ?? [])
            let range: ClosedRange<Int> = kind == .bvecs ? 0...255 : Int(Int32.min)...Int(Int32.max)
            if let bad = ints.first(where: { !range.contains($0) }) {
                throw TensorFileError.unwritable(path: path, reason: "value \(bad) does not fit .\(kind.rawValue) (\(range.lowerBound)…\(range.upperBound)); write .npy instead")
            }
            for r in 0..<(n / d) {
                append(Int32(d).littleEndian)
                for j in 0..<d {
                    switch kind {
                    case .fvecs: append(floats[r * d + j].bitPattern.littleEndian)
                    case .ivecs: append(Int32(ints[r * d + j]).littleEndian)
                    case .bvecs: bytes.append(UInt8(ints[r * d + j]))
                    }
                }
            }
            try staged.write(Data(bytes), at: (offset / d) * (4 + d * kind.size))
        }
    }

    /// Syncs the file and renames it over `path`.
    public func commit() throws {
        try staged.commit()
        committed = true
    }
}

/// Overflow-safe size checks for shapes read from files.
enum SizeGuard {
    static func fits(_ shape: [Int]) -> Bool {
        var p = 1
        for s in shape {
            let (r, o) = p.multipliedReportingOverflow(by: s)
            if o || r > Int(Int32.max) { return false }
            p = r
        }
        return true
    }
}
