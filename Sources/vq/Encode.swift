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

    func run() throws {
        let (q, _) = try loadQuantizer(checkpoint, config: config)
        let x = try DataFiles.vectors(input, dim: q.inputDim)
        let indices = q.encode(x)
        try DataFiles.write(.integer(indices), to: output)
        print("encoded \(x.shape) → indices \(indices.shape) in \(output)")
    }
}

struct Decode: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Turn code indices back into vectors.")

    @Option(help: "Checkpoint (.safetensors).") var checkpoint: String
    @Option(help: "Config JSON (default: sidecar or metadata).") var config: String?
    @Option(help: "Indices (.npy, .ivecs or FILE.safetensors:NAME).") var input: String
    @Option(help: "Vectors (.npy, .fvecs or .safetensors).") var output: String

    func run() throws {
        let (q, cfg) = try loadQuantizer(checkpoint, config: config)
        guard let indices = try DataFiles.read(input).asIndices else { throw CLIError("\(input): indices must be integers") }
        let sizes = codebookSizes(q)
        let limit = sizes.max() ?? Int.max
        if let bad = indices.scalars.first(where: { $0 < -1 || $0 >= limit }) {
            throw CLIError("\(input): index \(bad) out of range for \(cfg.module) with codebook size \(sizes.max() ?? 0)")
        }
        let vectors: Tensor
        do { vectors = try q.decode(indices) } catch let e as DecodeError { throw CLIError(e.description) }
        try DataFiles.write(.float(vectors), to: output)
        print("decoded indices \(indices.shape) → \(vectors.shape) in \(output)")
    }
}

/// Codebook sizes of a quantizer's layers (for range checks and reports).
func codebookSizes(_ q: any Quantizer) -> [Int] {
    switch q {
    case let v as VectorQuantizer: return [v.codebookSize]
    case let r as ResidualVQ: return r.layers.map(\.codebookSize)
    case let g as GroupedResidualVQ: return g.rvqs.flatMap { $0.layers.map(\.codebookSize) }
    case let f as FSQ: return [f.codebookSize]
    case let r as ResidualFSQ: return r.layers.map(\.codebookSize)
    case let g as GroupedResidualFSQ: return g.rvqs.flatMap { $0.layers.map(\.codebookSize) }
    case let l as LFQ: return [l.codebookSize]
    case let r as ResidualLFQ: return r.layers.map(\.codebookSize)
    case let s as SimVQ: return [s.codebookSize]
    case let p as RandomProjectionQuantizer: return [p.vq.codebookSize]
    default: return []
    }
}
