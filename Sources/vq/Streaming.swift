import Foundation
import VQTensor
import VectorQuantize

/// The vectors of an input file, read in chunks of rows so that memory does not grow with the file:
/// `[n, d]` or `[b, n, d]` floats (`.npy`, `.fvecs`, `.bvecs`, `FILE.safetensors:NAME`).
struct VectorStream {
    let spec: String
    let reader: TensorFileReader
    /// The axes before the vector axis (`[n]` or `[b, n]`), and their product.
    let leading: [Int]
    let rows: Int
    let dim: Int

    init(_ spec: String, dim expected: Int?) throws {
        self.spec = spec
        let (url, name) = DataFiles.split(spec)
        guard FileManager.default.fileExists(atPath: url.path) else { throw CLIError("\(url.path): no such file") }
        reader = try TensorFileReader(path: url.path, name: name)
        let shape = reader.shape
        guard shape.count == 2 || shape.count == 3 else { throw CLIError("\(spec): expected vectors [n, d] or [b, n, d], found shape \(shape)") }
        guard reader.isFloat || url.pathExtension.lowercased() == "bvecs" else {
            throw CLIError("\(spec): holds integers (\(reader.dtype.rawValue)); vectors must be floating point")
        }
        dim = shape[shape.count - 1]
        leading = Array(shape.dropLast())
        rows = leading.reduce(1, *)
        if let expected, dim != expected { throw CLIError("\(spec): vectors of dimension \(dim), the model expects \(expected)") }
        if rows > 0 && dim == 0 { throw CLIError("\(spec): vectors of dimension 0") }
    }

    /// Rows per chunk: about 8 M values (32 MB of Float32), at least one row.
    var chunkRows: Int { Swift.max(1, Swift.min(65_536, (8 << 20) / Swift.max(dim, 1))) }

    /// Calls `body` with consecutive row ranges and their vectors `[count, d]` (`count` a multiple of
    /// `unit`: whole sequences); a NaN or ±∞, or a vector too large to quantize (``DataFiles/firstUnusableRow(_:)``), is
    /// an error naming the row.
    func forEachChunk(unit: Int = 1, _ body: (Range<Int>, Tensor) throws -> Void) throws {
        var r0 = 0
        let step = Swift.max(unit, chunkRows / unit * unit)
        while r0 < rows {
            let r1 = Swift.min(rows, r0 + step)
            let x = try reader.elements((r0 * dim)..<(r1 * dim)).asFloat.reshaped([r1 - r0, dim])
            if let problem = DataFiles.firstUnusableRow(x) { throw CLIError("\(spec): vector \(r0 + problem.row) \(problem.reason)") }
            try body(r0..<r1, x)
            r0 = r1
        }
    }
}

/// Where the code indices of `rows` vectors go in a quantizer's index tensor: `leading` axes (groups),
/// the vectors' axes, then `trailing` axes (heads or layers). A sequence quantizer (``Quantizer/sequenceShape``)
/// encodes `unit` consecutive vectors (one sequence, `unitShape`) into one row of indices: its index tensor is
/// `[sequences, Σ positions]`, and its vectors `[sequences, unit, dim]`.
struct IndexLayout {
    let leading: [Int], trailing: [Int]
    /// Shape of the vectors one row of indices stands for (`[]` for a vector, the sequence or map shape).
    let unitShape: [Int]
    var unit: Int { unitShape.reduce(1, *) }
    var groups: Int { leading.reduce(1, *) }
    var tail: Int { trailing.reduce(1, *) }

    init(_ q: any Quantizer) {
        let one = q.indexShapeOfOneVector, a = q.indexBatchAxis
        leading = Array(one[..<a])
        trailing = Array(one[(a + 1)...])
        unitShape = q.sequenceShape ?? []
    }

    func shape(vectorAxes: [Int]) -> [Int] { leading + vectorAxes + trailing }

    /// The index axes of vectors with `leading` axes (`[n]` or `[b, n]`): themselves, or `[sequences]`.
    func indexAxes(ofVectors axes: [Int], spec: String) throws -> [Int] {
        guard unit > 1 else { return axes }
        let rows = axes.reduce(1, *)
        if axes.count == 2 && axes[1] != unit || rows % unit != 0 {
            throw CLIError("\(spec): \(axes) vectors are not whole sequences of \(unit) (\(unitShape)): this quantizer encodes [b, \(unit), d] (or [b·\(unit), d]) into [b, Σ positions]")
        }
        return [rows / unit]
    }

    /// `[rows, d]` vectors as the quantizer's encode takes them: themselves, or `[rows / unit] + unitShape + [d]`.
    func encodable(_ x: Tensor) -> Tensor {
        unit > 1 ? x.reshaped([x.shape[0] / unit] + unitShape + [x.shape[1]]) : x
    }
}
