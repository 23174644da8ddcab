import Foundation
import Testing
import VQTensor
import VQTestSupport

@Suite("File formats: safetensors, .npy, .fvecs — strict and crash-proof")
struct FileFormatTests {
    func tmp(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("vq-tests-\(UInt32.random(in: 0...UInt32.max))-\(name)")
    }

    @Test("safetensors round-trip with metadata, floats and integers")
    func safetensorsRoundTrip() throws {
        let url = tmp("a.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        let f = SafeTensorsFile(tensors: ["w": .float(TestSupport.random([3, 4], seed: 1)), "i": .integer(IndexTensor([1, -2, 3])),
                                          "s": .float(Tensor(2.5))], metadata: ["k": "v"])
        try f.write(to: url)
        let g = try SafeTensorsFile.read(contentsOf: url)
        #expect(g.tensors == f.tensors)
        #expect(g.metadata == ["k": "v"])
    }

    @Test("safetensors writes and reads every element type")
    func dtypes() throws {
        let f = SafeTensorsFile(tensors: [
            "f16": .float(Tensor([0.5, -2, 65504])), "bf16": .float(Tensor([1, -3.5, 256])), "f64": .float(Tensor([0.1])),
            "i32": .integer(IndexTensor([-7, 2_000_000])), "i16": .integer(IndexTensor([-300])), "i8": .integer(IndexTensor([-5])),
            "u8": .integer(IndexTensor([0, 255])), "b": .integer(IndexTensor([1, 0])),
        ])
        let types: [String: SafeTensorsFile.DType] = ["f16": .F16, "bf16": .BF16, "f64": .F64, "i32": .I32, "i16": .I16, "i8": .I8, "u8": .U8, "b": .BOOL]
        let back = try SafeTensorsFile.parse(try f.serialized(dtypes: types))
        #expect(back.tensors == f.tensors.mapValues { $0 }.merging(["f64": .float(Tensor([Float(Double(Float(0.1)))]))]) { _, b in b })
        #expect(throws: TensorFileError.self) { try SafeTensorsFile(tensors: ["u": .integer(IndexTensor([256]))]).serialized(dtypes: ["u": .U8]) }
        #expect(throws: TensorFileError.self) { try SafeTensorsFile(tensors: ["x": .float(Tensor([0.5]))]).serialized(dtypes: ["x": .I32]) }
    }

    @Test("safetensors: every kind of damage is a typed error naming the file")
    func safetensorsErrors() throws {
        let good = try SafeTensorsFile(tensors: ["a": .float(Tensor([1, 2, 3, 4]))]).serialized()
        func header(_ json: String, body: Int = 16) -> Data {
            var d = Data()
            var n = UInt64(json.utf8.count).littleEndian
            withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
            d.append(contentsOf: Array(json.utf8))
            d.append(Data(count: body))
            return d
        }
        let cases: [(String, Data)] = [
            ("short", Data([1, 2, 3])),
            ("huge header", Data([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0]) + Data(count: 8)),
            ("not json", header("{nope")),
            ("not an object", header("[1, 2]")),
            ("bad dtype", header(#"{"a": {"dtype": "Q9", "shape": [4], "data_offsets": [0, 16]}}"#)),
            ("out of bounds", header(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 160]}}"#)),
            ("size mismatch", header(#"{"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}"#)),
            ("negative shape", header(#"{"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}"#)),
            ("overlap", header(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#)),
            ("bad bool", header(#"{"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}"#, body: 0) + Data([1, 7])),
            ("truncated", good.prefix(good.count - 3)),
            // Offsets and shapes must be exact integers: no wrap-around past 2^64, no truncated fractions.
            ("offset beyond 2^64", header(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [18446744073709551616, 18446744073709551632]}}"#)),
            ("offset 2^64 + 16", header(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 18446744073709551632]}}"#)),
            ("fractional offset", header(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16.7]}}"#)),
            ("fractional shape", header(#"{"a": {"dtype": "F32", "shape": [4.5], "data_offsets": [0, 16]}}"#)),
            ("exponent", header(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1.6e1]}}"#)),
            ("boolean offset", header(#"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [false, 16]}}"#)),
        ]
        for (what, data) in cases {
            #expect(throws: TensorFileError.self, "\(what)") { try SafeTensorsFile.parse(data, path: "x.safetensors") }
            do { _ = try SafeTensorsFile.parse(data, path: "x.safetensors") } catch let e as TensorFileError {
                #expect(e.description.hasPrefix("x.safetensors"), "\(what): \(e)")
            }
        }
    }

    @Test("a file another program wrote in its own format is named, not taken for a damaged header")
    func otherFormats() throws {
        // The first bytes each format starts with, then bytes a header length cannot explain.
        let tail = Data((0..<64).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) })
        let cases: [(String, [UInt8], String)] = [
            ("torch.save (zip)", [0x50, 0x4B, 0x03, 0x04, 0x14, 0x00, 0x08, 0x08], "torch.save"),
            ("legacy torch.save", [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46], "pickle"),
            ("pickle protocol 4", [0x80, 0x04, 0x95, 0x2C, 0x01, 0x00, 0x00, 0x00], "pickle"),
            (".npy", [0x93] + Array("NUMPY".utf8) + [1, 0], ".npy"),
            ("HDF5", [0x89] + Array("HDF\r\n".utf8) + [0x1A, 0x0A], "HDF5"),
            ("GGUF", Array("GGUF".utf8) + [3, 0, 0, 0], "GGUF"),
            ("a JSON configuration", Array(" {\"modu".utf8), "JSON"),
        ]
        for (what, magic, word) in cases {
            do {
                _ = try SafeTensorsFile.parse(Data(magic) + tail, path: "model.safetensors")
                Issue.record("\(what): accepted")
            } catch let e as TensorFileError {
                #expect(e.description.hasPrefix("model.safetensors") && e.description.contains(word), "\(what): \(e)")
            }
        }
        // A valid file whose header length starts with such bytes (a 640-byte header: 0x80 0x02 0 …) still reads.
        let files = (500..<700).map { SafeTensorsFile(tensors: [String(repeating: "w", count: $0): .float(Tensor([1, 2]))]) }
        let f = try #require(try files.first { try $0.serialized().prefix(3) == Data([0x80, 0x02, 0]) })
        let data = try f.serialized()
        #expect(try SafeTensorsFile.parse(data).tensors == f.tensors)
    }

    @Test(".npy round-trip; big-endian is rejected with a clear error")
    func npy() throws {
        let url = tmp("a.npy")
        defer { try? FileManager.default.removeItem(at: url) }
        let t = TestSupport.random([2, 3, 4], seed: 2)
        try NumPyFile.write(.float(t), to: url)
        #expect(try NumPyFile.read(contentsOf: url) == .float(t))
        try NumPyFile.write(.integer(IndexTensor([5, -1], shape: [2])), to: url)
        #expect(try NumPyFile.read(contentsOf: url) == .integer(IndexTensor([5, -1])))
        func npy(_ header: String, _ body: [UInt8]) -> Data {
            var h = header
            while (10 + h.utf8.count + 1) % 64 != 0 { h += " " }
            h += "\n"
            return Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.utf8.count), 0] + Array(h.utf8) + body)
        }
        let f8 = npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", Array(repeating: 0, count: 16))
        #expect(try NumPyFile.parse(f8) == .float(Tensor([0, 0])))
        let odd = npy("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 2), }", Array(repeating: 0, count: 16))
        #expect(throws: TensorFileError.self) { try NumPyFile.parse(odd, path: "f.npy") }
        let bigEndian = npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", Array(repeating: 0, count: 8))
        do { _ = try NumPyFile.parse(bigEndian, path: "b.npy"); Issue.record("big-endian accepted") } catch let e as TensorFileError {
            #expect(e.description.contains("big-endian"))
        }
        // Found by the fuzzer: an empty descr once trapped on a force-unwrap.
        let empty = npy("{'descr': '', 'fortran_order': False, 'shape': (1, 3), }", Array(repeating: 0, count: 12))
        #expect(throws: TensorFileError.self) { try NumPyFile.parse(empty) }
        let short = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", Array(repeating: 0, count: 8))
        #expect(throws: TensorFileError.self) { try NumPyFile.parse(short) }
        // A structured array (np.zeros(4, dtype=[('a', '<f4'), ('b', '<i4')])) is named as such, not as a missing descr.
        let structured = npy("{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (4,), }", Array(repeating: 0, count: 32))
        do { _ = try NumPyFile.parse(structured, path: "s.npy"); Issue.record("a structured array accepted") } catch let e as TensorFileError {
            #expect(e.description.contains("structured dtype") && e.description.contains("s.npy"), "\(e)")
        }
    }

    @Test("a float64 value beyond float32's range is refused naming its element (whole, streamed, safetensors); a stored ±∞ or NaN is read as it is")
    func float64BeyondFloat32() throws {
        func npy(_ values: [Double]) -> Data {
            var h = "{'descr': '<f8', 'fortran_order': False, 'shape': (\(values.count / 2), 2), }"
            while (10 + h.utf8.count + 1) % 64 != 0 { h += " " }
            h += "\n"
            let body = values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
            return Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.utf8.count), 0] + Array(h.utf8) + body)
        }
        let largest = Double(Float.greatestFiniteMagnitude)
        // The largest float32 and values that round to it are read; ±∞ and NaN stored as such pass through (the
        // commands refuse them as non-finite later); 1e39 and −1e300 would round to ±∞ and are refused.
        let fine = try NumPyFile.parse(npy([largest, -largest, .infinity, .nan, 1, 2]), path: "f.npy").asFloat.scalars
        #expect(fine[0] == .greatestFiniteMagnitude && fine[1] == -.greatestFiniteMagnitude && fine[2] == .infinity && fine[3].isNaN)
        for (values, element) in [([1, 2, 3, 1e39], 3), ([.infinity, -1e300, 0, 0], 1), ([.nan, 0, 2 * largest, .infinity], 2)] as [([Double], Int)] {
            do {
                _ = try NumPyFile.parse(npy(values), path: "big.npy")
                Issue.record("\(values): accepted")
            } catch let e as TensorFileError {
                #expect(e.description.hasPrefix("big.npy") && e.description.contains("element \(element) is") && e.description.contains("beyond the range of float32"), "\(e)")
            }
        }
        // Streamed: the element is named by its place in the file, not in the chunk read.
        let url = tmp("big64.npy")
        defer { try? FileManager.default.removeItem(at: url) }
        try npy([0, 1, 2, 3, 4, 5, 6, 7, 8, 1e300]).write(to: url)
        let reader = try TensorFileReader(path: url.path)
        #expect(try reader.elements(0..<8).asFloat.scalars == (0..<8).map(Float.init))
        do {
            _ = try reader.elements(8..<10)
            Issue.record("a streamed 1e300 accepted")
        } catch let e as TensorFileError {
            #expect(e.description.contains("element 9 is 1e+300"), "\(e)")
        }
        // The same rule in a safetensors file (a checkpoint saved in float64).
        var header = #"{"embed":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#
        while (8 + header.utf8.count) % 8 != 0 { header += " " }
        var file = Data(withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) } + Array(header.utf8))
        for v in [0.5, -3e40] { file.append(contentsOf: withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) }) }
        do {
            _ = try SafeTensorsFile.parse(file, path: "m.safetensors")
            Issue.record("a float64 -3e40 accepted")
        } catch let e as TensorFileError {
            #expect(e.description.hasPrefix("m.safetensors: tensor 'embed': element 1 is -3e+40"), "\(e)")
        }
    }

    @Test("a Fortran-order .npy (np.save(a.T)) reads as its row-major array, whole and streamed, floats and integers")
    func fortranOrder() throws {
        func npy(_ header: String, _ body: [UInt8]) -> Data {
            var h = header
            while (10 + h.utf8.count + 1) % 64 != 0 { h += " " }
            h += "\n"
            return Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.utf8.count), 0] + Array(h.utf8) + body)
        }
        // a[i, j, k] = 100 i + 10 j + k for shape (2, 3, 4), stored column-major (i fastest, then j, then k).
        let shape = [2, 3, 4]
        var columnMajor: [Float] = [], columnMajorInts: [Int64] = []
        for k in 0..<4 { for j in 0..<3 { for i in 0..<2 { columnMajor.append(Float(100 * i + 10 * j + k)); columnMajorInts.append(Int64(100 * i + 10 * j + k)) } } }
        var expected: [Float] = []
        for i in 0..<2 { for j in 0..<3 { for k in 0..<4 { expected.append(Float(100 * i + 10 * j + k)) } } }
        let floats = npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 4), }", columnMajor.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } })
        let ints = npy("{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3, 4), }", columnMajorInts.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } })
        #expect(try NumPyFile.parse(floats) == .float(Tensor(expected, shape: shape)))
        #expect(try NumPyFile.parse(ints) == .integer(IndexTensor(expected.map { Int($0) }, shape: shape)))
        let url = tmp("fortran.npy")
        defer { try? FileManager.default.removeItem(at: url) }
        try floats.write(to: url)
        let reader = try TensorFileReader(path: url.path)
        #expect(reader.shape == shape)
        #expect(try reader.elements(4..<17).asFloat.scalars == Array(expected[4..<17]))
        #expect(try reader.elements(0..<24).asFloat.scalars == expected)
    }

    @Test(".fvecs, .ivecs and .bvecs round-trip; ragged files are rejected")
    func vecs() throws {
        let t = TestSupport.random([5, 3], seed: 3)
        let data = try VecsFile.serialized(.float(t), kind: .fvecs)
        #expect(try VecsFile.parse(data, kind: .fvecs) == .float(t))
        let i = IndexTensor([1, 2, 300, -4], shape: [2, 2])
        #expect(try VecsFile.parse(try VecsFile.serialized(.integer(i), kind: .ivecs), kind: .ivecs) == .integer(i))
        let b = IndexTensor([1, 2, 255, 0], shape: [2, 2])
        #expect(try VecsFile.parse(try VecsFile.serialized(.integer(b), kind: .bvecs), kind: .bvecs) == .integer(b))
        #expect(throws: TensorFileError.self) { try VecsFile.parse(data.dropLast(), kind: .fvecs) }
    }

    @Test("an atomic write never leaves a half-written file; a failed write keeps the old one")
    func atomic() throws {
        let url = tmp("keep.safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensorsFile(tensors: ["a": .float(Tensor([1]))]).write(to: url)
        let before = try Data(contentsOf: url)
        let missingDir = url.deletingLastPathComponent().appendingPathComponent("no-such-dir-\(UInt32.random(in: 0...UInt32.max))/x.safetensors")
        #expect(throws: TensorFileError.self) { try SafeTensorsFile(tensors: [:]).write(to: missingDir) }
        #expect(try Data(contentsOf: url) == before)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path).filter { $0.contains("keep.safetensors.tmp") }
        #expect(leftovers.isEmpty)
    }

    /// Deterministic mutation fuzzing of the readers: flips, truncations and splices of valid files
    /// must give a value or a typed error — never a trap. (The libFuzzer target in `Fuzz/` runs far more.)
    @Test("mutated files never crash the readers")
    func mutations() throws {
        let st = try SafeTensorsFile(tensors: ["a": .float(TestSupport.random([3, 5], seed: 4)), "b": .integer(IndexTensor([1, 2]))],
                                     metadata: ["m": "x"]).serialized()
        let np = NumPyFile.serialized(.float(TestSupport.random([4, 3], seed: 5)))
        var rng = SeededGenerator(seed: 99)
        var parsed = 0, rejected = 0
        for i in 0..<20_000 {
            var d = [UInt8](i % 2 == 0 ? st : np)
            switch rng.nextInt(below: 4) {
            case 0: for _ in 0...rng.nextInt(below: 4) { d[rng.nextInt(below: d.count)] ^= UInt8(1 << rng.nextInt(below: 8)) }
            case 1: d = Array(d.prefix(rng.nextInt(below: d.count)))
            case 2: d[rng.nextInt(below: d.count)] = UInt8(rng.nextInt(below: 256))
            default:
                let at = rng.nextInt(below: d.count)
                d.insert(contentsOf: (0..<rng.nextInt(below: 9)).map { _ in UInt8(rng.nextInt(below: 256)) }, at: at)
            }
            do {
                if i % 2 == 0 { _ = try SafeTensorsFile.parse(Data(d)) } else { _ = try NumPyFile.parse(Data(d)) }
                parsed += 1
            } catch is TensorFileError {
                rejected += 1
            }
        }
        #expect(parsed + rejected == 20_000 && rejected > 1000)
    }
}
