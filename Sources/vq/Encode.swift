import ArgumentParser
import Foundation
import VQTensor
import VectorQuantize

struct Encode: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Turn vectors into code indices with a checkpoint (ours, or a PyTorch state dict + JSON config).")

    @Option(help: "Checkpoint (.safetensors).") var checkpoint: String
    @Option(help: "Config JSON {\"module\", \"kwargs\"} (default: the checkpoint's sidecar .json or metadata).") var config: String?
    @Option(help: "Vectors: .npy, .fvecs, .bvecs or FILE.safetensors:NAME.") var input: String
    @Option(help: "Indices (.npy).") var output: String

    func validate() throws { try checkFiles(checkpoint: checkpoint, config: config, input: input, output: output) }

    func run() throws {
        let (q, _) = try loadQuantizer(checkpoint, config: config)
        try requireInitialised(q, checkpoint)
        let input = try VectorStream(self.input, dim: q.inputDim)
        let layout = IndexLayout(q)
        let indexAxes = try layout.indexAxes(ofVectors: input.leading, spec: self.input)
        let shape = layout.shape(vectorAxes: indexAxes)
        let writer = try TensorFileWriter(path: output, shape: shape, isFloat: false)
        let (n, tail, unit) = (indexAxes.reduce(1, *), layout.tail, layout.unit)
        // Chunk by chunk: the input is read, encoded and written piece by piece (a group's indices go to
        // their own block of the output; a sequence quantizer's chunks hold whole sequences).
        try input.forEachChunk(unit: unit) { range, x in
            let idx = q.encode(layout.encodable(x)).scalars
            let (first, count) = (range.lowerBound / unit, range.count / unit)
            let per = count * tail
            for g in 0..<layout.groups {
                let piece = IndexTensor(Array(idx[(g * per)..<((g + 1) * per)]), shape: [per])
                try writer.write(.integer(piece), atElement: g * n * tail + first * tail)
            }
        }
        try writer.commit()
        print("encoded \(input.leading + [input.dim]) → indices \(shape) in \(output)")
    }
}

struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Turn code indices back into vectors.")

    @Option(help: "Checkpoint (.safetensors).") var checkpoint: String
    @Option(help: "Config JSON (default: sidecar or metadata).") var config: String?
    @Option(help: "Indices (.npy, .ivecs or FILE.safetensors:NAME).") var input: String
    @Option(help: "Vectors (.npy, .fvecs or .safetensors).") var output: String

    func validate() throws { try checkFiles(checkpoint: checkpoint, config: config, input: input, output: output) }

    func run() throws {
        let (q, _) = try loadQuantizer(checkpoint, config: config)
        let (url, name) = DataFiles.split(input)
        guard FileManager.default.fileExists(atPath: url.path) else { throw CLIError("\(url.path): no such file") }
        let reader = try TensorFileReader(path: url.path, name: name)
        let layout = IndexLayout(q)
        var shape = reader.shape
        if VecsFile.kind(of: url) != nil && layout.trailing.isEmpty && layout.leading.isEmpty && shape.count == 2 && shape[1] == 1 {
            shape = [shape[0]]  // one index per vector, stored as .ivecs/.bvecs vectors of dimension 1
        }
        if layout.unit > 1 && shape == layout.trailing { shape = [1] + shape }  // one sequence's row of indices
        // [lead…, vectors…, trail…] with one or two vector axes (one for sequences).
        let vectorRank = shape.count - layout.leading.count - layout.trailing.count
        guard (1...(layout.unit > 1 ? 1 : 2)).contains(vectorRank), Array(shape.prefix(layout.leading.count)) == layout.leading,
              Array(shape.suffix(layout.trailing.count)) == layout.trailing else {
            let expected = (layout.leading.map(String.init) + ["n"] + layout.trailing.map(String.init)).joined(separator: ", ")
            throw CLIError("\(input): indices of shape \(shape) do not fit \(q.kindName): expected [\(expected)] (or with a batch axis before n)")
        }
        let vectorAxes = Array(shape[layout.leading.count..<(layout.leading.count + vectorRank)])
        let n = vectorAxes.reduce(1, *), tail = layout.tail, dim = q.decodedDim, unit = layout.unit
        // A sequence quantizer's rows of indices decode to whole sequences: [sequences, unit, dim].
        let outputShape = unit > 1 ? [n, unit, dim] : vectorAxes + [dim]
        let writer = try TensorFileWriter(path: output, shape: outputShape, isFloat: true)
        let chunk = Swift.max(1, Swift.min(65_536, (8 << 20) / Swift.max(dim * unit, tail)))
        var r0 = 0
        while r0 < n {
            let r1 = Swift.min(n, r0 + chunk)
            var scalars: [Int] = []
            for g in 0..<layout.groups {
                let piece = try reader.elements(((g * n + r0) * tail)..<((g * n + r1) * tail))
                guard let ints = piece.asIndices else { throw CLIError("\(input): indices must be integers (found fractions or values beyond ±2^31)") }
                scalars += ints.scalars
            }
            let indices = IndexTensor(scalars, shape: layout.shape(vectorAxes: [r1 - r0]))
            do {
                try q.validate(indices: indices)
                try writer.write(.float(try q.decode(indices)), atElement: r0 * unit * dim)
            } catch let e as DecodeError {
                throw CLIError("\(input): \(e.description)")
            }
            r0 = r1
        }
        try writer.commit()
        print("decoded indices \(shape) → \(outputShape) in \(output)")
    }
}

/// `vq encode` and `vq decode`: the output is none of the files read.
func checkFiles(checkpoint: String, config: String?, input: String, output: String) throws {
    try checkFiles(checkpoints: [(checkpoint, "--checkpoint")], config: config, input: input, output: (output, "--output"))
}

/// The files of a command that reads checkpoints (each with its sidecar), a config and an input and writes one output
/// (``CommandFiles``): the output's folder and what is in its place first, then every file against every other.
func checkFiles(checkpoints: [(path: String, role: String)], config: String?, input: String, output: (path: String, role: String)?) throws {
    var files = CommandFiles()
    for c in checkpoints { files.checkpointInput(c.path, c.role) }
    files.input(config, "--config")
    files.input(input, "--input")
    files.output(output?.path, output?.role ?? "")
    try files.check()
}

/// Refuses a checkpoint whose k-means codebook was never initialised: its codes are placeholders until a
/// first training batch, so encoding with it would give indices no later decoding agrees with.
func requireInitialised(_ q: any Quantizer, _ checkpoint: String) throws {
    guard q.isInitialised else {
        throw CLIError("\(checkpoint): the codebook is not initialised yet (k-means runs on the first training batch): train it first, e.g. vq train --init \(checkpoint)")
    }
}
