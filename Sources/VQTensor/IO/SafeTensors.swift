import Foundation

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
    /// The bytes of a file, memory-mapped; a read failure becomes ``unreadable(path:reason:)``.
    static func mappedContents(of url: URL) throws -> Data {
        do {
            return try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw TensorFileError.unreadable(path: url.path, reason: error.localizedDescription)
        }
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
    /// The values as integers (floats truncated toward zero), `nil` for non-integral floats.
    public var asIndices: IndexTensor? {
        switch self {
        case .integer(let t): return t
        case .float(let t):
            guard t.scalars.allSatisfy({ $0.isFinite && $0.rounded(.towardZero) == $0 }) else { return nil }
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

    /// Parses the bytes of a safetensors file; `path` names it in errors.
    public static func parse(_ data: Data, path: String = "<memory>") throws -> SafeTensorsFile {
        func bad(_ r: String) -> TensorFileError { .malformed(path: path, reason: r) }
        guard data.count >= 8 else { throw bad("\(data.count) bytes, shorter than the 8-byte header length") }
        let n = data.withUnsafeBytes { raw -> UInt64 in
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(raw[i]) << (8 * UInt64(i)) }
            return v
        }
        guard n <= UInt64(maxHeader), n <= UInt64(data.count - 8) else {
            throw bad("header length \(n) exceeds the file (\(data.count) bytes) or the \(maxHeader)-byte cap")
        }
        let headerBytes = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + 8 + Int(n)))
        guard String(data: headerBytes, encoding: .utf8) != nil else { throw bad("header is not UTF-8") }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            throw bad("header is not JSON: \(error.localizedDescription)")
        }
        guard let header = json as? [String: Any] else { throw bad("header is not a JSON object") }
        let body = data.startIndex + 8 + Int(n)
        let bodyCount = data.count - 8 - Int(n)
        var out = SafeTensorsFile()
        if let meta = header["__metadata__"] {
            guard let m = meta as? [String: Any] else { throw bad("__metadata__ is not an object") }
            for (k, v) in m {
                guard let s = v as? String else { throw bad("__metadata__ value of '\(k)' is not a string") }
                out.metadata[k] = s
            }
        }
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
                guard let v = (s as? NSNumber)?.intValue, v >= 0, v <= Int(Int32.max) else { throw badT("bad shape \(shapeAny)") }
                let (p, o) = count.multipliedReportingOverflow(by: v)
                guard !o, p <= Int(Int32.max) else { throw badT("shape \(shapeAny) is too large") }
                count = p
                shape.append(v)
            }
            guard let b = (offsAny[0] as? NSNumber)?.intValue, let en = (offsAny[1] as? NSNumber)?.intValue,
                  b >= 0, en >= b, en <= bodyCount
            else { throw badT("data_offsets \(offsAny) out of bounds for \(bodyCount) data bytes") }
            guard en - b == count * dtype.size else {
                throw badT("\(en - b) bytes for \(dtype.rawValue) \(shape) (needs \(count * dtype.size))")
            }
            spans.append((b, en, name))
            out.tensors[name] = try data.withUnsafeBytes { raw in
                try decode(UnsafeRawBufferPointer(rebasing: raw[(body - data.startIndex + b)..<(body - data.startIndex + en)]),
                           dtype: dtype, shape: shape, count: count, path: path, name: name)
            }
        }
        spans.sort { $0.0 < $1.0 }
        for i in spans.indices.dropFirst() where spans[i].0 < spans[i - 1].1 {
            throw TensorFileError.badTensor(path: path, name: spans[i].2, reason: "data overlaps tensor '\(spans[i - 1].2)'")
        }
        return out
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

    static func decode(_ raw: UnsafeRawBufferPointer, dtype: DType, shape: [Int], count: Int, path: String, name: String) throws -> StoredTensor {
        func le<T: FixedWidthInteger>(_ i: Int, _: T.Type) -> T { T(littleEndian: raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
        switch dtype {
        case .F32: return .float(Tensor((0..<count).map { Float(bitPattern: le($0, UInt32.self)) }, shape: shape))
        case .F64: return .float(Tensor((0..<count).map { Float(Double(bitPattern: le($0, UInt64.self))) }, shape: shape))
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
public enum AtomicFile {
    public static func write(_ data: Data, to url: URL) throws {
        let dir = url.deletingLastPathComponent()
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(UInt32.random(in: 0...UInt32.max))")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw TensorFileError.unwritable(path: url.path, reason: "cannot create a temporary file in \(dir.path)")
        }
        do {
            let h = try FileHandle(forWritingTo: tmp)
            try h.write(contentsOf: data)
            try h.synchronize()
            try h.close()
            if rename(tmp.path, url.path) != 0 {
                throw TensorFileError.unwritable(path: url.path, reason: String(cString: strerror(errno)))
            }
        } catch let e as TensorFileError {
            try? FileManager.default.removeItem(at: tmp)
            throw e
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw TensorFileError.unwritable(path: url.path, reason: error.localizedDescription)
        }
    }
}
