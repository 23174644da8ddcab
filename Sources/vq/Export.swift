import ArgumentParser
import Foundation
import VQNN
import VectorQuantize

/// `vq export`: a checkpoint as PyTorch's reference holds it (``QuantizerCheckpoint/export(_:config:to:)``) — the
/// reference's keys only, and a sidecar of the reference's keywords only — so that
/// `module.load_state_dict(load_file(path))` takes it strictly. This library's freeze state is left out (PyTorch
/// has none); the command says what it leaves.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a checkpoint for PyTorch: the reference's keys and keywords only (load_state_dict strict).",
        discussion: "The freeze masks and step counters of this library are left out (PyTorch has no such state); "
            + "loading the export here gives nothing frozen. The sidecar .json holds the reference's keywords.")
    @Argument(help: "Checkpoint (.safetensors).") var checkpoint: String
    @Option(help: "Config JSON (default: sidecar or metadata).") var config: String?
    @Option(help: "The exported checkpoint (.safetensors; its .json sidecar is written beside it).") var output: String

    func validate() throws {
        var files = CommandFiles()
        files.checkpointInput(checkpoint, "checkpoint")
        files.input(config, "--config")
        files.checkpoint(output, "--output")
        try files.check()
    }

    func run() throws {
        let (q, cfg) = try loadQuantizer(checkpoint, config: config)
        var frozenCodes = 0, frozenComponents = 0
        for book in q.learnedCodebooks {
            frozenCodes += book.frozenMask.filter { $0 }.count
            frozenComponents += book.frozenComponentCount
        }
        let out = URL(fileURLWithPath: output)
        let left = try QuantizerCheckpoint.export(q, config: cfg, to: out)
        let kept = q.stateDict().count - left.count
        var note = ""
        if frozenCodes > 0 || frozenComponents > 0 {
            note = "; not exported: the freezing of \(frozenCodes) codes and \(frozenComponents) components (PyTorch has no such state)"
        }
        print("exported \(kept) tensors (the reference's keys; left out \(left.count) of this library's) → \(out.path)\(note)")
    }
}
