import ArgumentParser
import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// The codebooks a layer/head selection names in a checkpoint's quantizer.
func selectCodebooks(_ q: any Quantizer, layer: Int?, head: Int?) throws -> [(Codebook, Int?)] {
    let all = q.learnedCodebooks
    guard !all.isEmpty else { throw ValidationError("this quantizer has no learned codebook to freeze") }
    var books = all
    if let layer {
        guard all.indices.contains(layer) else {
            throw ValidationError("--layer \(layer) out of range 0..<\(all.count)\(all.count > 1 ? " (layers, group-major)" : ": one codebook")")
        }
        books = [all[layer]]
    }
    if let head {
        for b in books where head >= b.numCodebooks {
            throw ValidationError("--head \(head) out of range 0..<\(b.numCodebooks)")
        }
    }
    return books.map { ($0, head) }
}

/// The arguments `vq freeze` and `vq unfreeze` share.
struct CodeSelection: ParsableArguments {
    @Argument(help: "Checkpoint (.safetensors); its sidecar .json is kept beside the output.") var checkpoint: String
    @Option(help: "Codes, e.g. 0-255,300 (with --dims: the codes whose components are frozen; default all).") var codes: String?
    @Option(help: "Components (dimensions), e.g. 0-15: freeze these components of every code (or of --codes).") var dims: String?
    @Option(parsing: .unconditional, help: "Layer of a residual stack (default: all layers).") var layer: Int?
    @Option(parsing: .unconditional, help: "Head of a multi-codebook quantizer (default: all).") var head: Int?
    @Option(help: "Parameters learned by gradient, whole: keys or prefixes, comma-separated, e.g. project_in,project_out.weight (vq inspect lists them). Instead of --codes/--dims.")
    var keys: String?
    @Option(help: "Config JSON (default: sidecar or metadata).") var config: String?
    @Option(help: "Write here instead of replacing the checkpoint.") var output: String?

    func validate() throws {
        guard codes != nil || dims != nil || keys != nil else { throw ValidationError("give --codes, --dims (or both), or --keys") }
        if keys != nil, let (other, _) = [("--codes", codes != nil), ("--dims", dims != nil), ("--layer", layer != nil), ("--head", head != nil)].first(where: { $0.1 }) {
            throw ValidationError("--keys selects whole parameters and \(other) codes of a codebook: give one or the other")
        }
        if let keys { _ = try Self.keyList(keys) }
        if let codes { _ = try CodeSpec(codes) }
        if let dims { _ = try CodeSpec(dims, option: "--dims") }
        if let layer, layer < 0 { throw ValidationError("--layer must be ≥ 0") }
        if let head, head < 0 { throw ValidationError("--head must be ≥ 0") }
        var files = CommandFiles()
        files.checkpointInput(checkpoint, "checkpoint")
        files.input(config, "--config")
        // Without --output the checkpoint (and its sidecar) is rewritten in place, as asked.
        files.checkpoint(output ?? checkpoint, output == nil ? "the checkpoint" : "--output", inPlaceOf: checkpoint)
        try files.check()
    }
}

extension CodeSelection {
    /// `--keys a,b.c`: the keys, each non-empty (spaces around each allowed).
    static func keyList(_ text: String) throws -> [String] {
        let keys = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !keys.contains(where: \.isEmpty) else {
            throw ValidationError("--keys '\(text)': comma-separated parameter keys or prefixes, e.g. project_in,project_out.weight")
        }
        return keys
    }

    /// The parameters learned by gradient that `keys` name in `q` (a key names a parameter or every parameter under a
    /// prefix): refused, naming the key, when one names none, or only state that is not learned by gradient (an EMA
    /// codebook's codes and counts, fixed buffers), so that a mistyped key never passes for a freeze.
    static func learnedParameterKeys(_ keys: [String], in q: any Quantizer, module: String) throws -> [String] {
        let learned = q.namedTrainableParameters().map(\.0)
        var chosen: [String] = []
        for key in keys {
            let hits = q.namedParameters(selectedBy: key)
            guard !hits.isEmpty else {
                let known = learned.isEmpty ? "it learns none by gradient" : "its parameters learned by gradient: \(learned.prefix(12).joined(separator: ", "))\(learned.count > 12 ? ", …" : "")"
                throw ValidationError("--keys \(key): no parameter of this \(module) is named so or lies under it (\(known))")
            }
            let mine = hits.filter { $0.1.kind == .trainable }.map(\.0)
            guard !mine.isEmpty else {
                let codes = q.learnedCodebooks.isEmpty ? "" : "; freeze codes with --codes or --dims"
                throw ValidationError("--keys \(key): \(hits.prefix(4).map(\.0).joined(separator: ", ")) \(hits.count == 1 ? "is" : "are") not learned by gradient (EMA state or fixed)\(codes)")
            }
            chosen += mine.filter { !chosen.contains($0) }
        }
        return chosen
    }
}

struct Freeze: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Freeze codes of a checkpoint (they never change in later training).")
    @OptionGroup var selection: CodeSelection
    func run() throws { try editFreeze(selection, freeze: true) }
}

struct Unfreeze: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unfreeze codes of a checkpoint.")
    @OptionGroup var selection: CodeSelection
    func run() throws { try editFreeze(selection, freeze: false) }
}

func editFreeze(_ sel: CodeSelection, freeze: Bool) throws {
    let (checkpoint, layer, head, output) = (sel.checkpoint, sel.layer, sel.head, sel.output)
    let (q, cfg) = try loadQuantizer(checkpoint, config: sel.config)
    if output == nil {
        // A model's state dict with the quantizer inside it (read under its prefix): rewriting it would keep only
        // the quantizer's tensors.
        let names = Set(try SafeTensorsFile.readHeader(contentsOf: URL(fileURLWithPath: checkpoint)).entries.keys)
        let others = names.subtracting(q.stateDict().keys)
        if !others.isEmpty {
            throw CLIError("\(checkpoint) holds \(others.count) tensors besides the quantizer's (\(others.sorted().prefix(3).joined(separator: ", "))…): rewriting it in place would drop them; write the quantizer elsewhere with --output")
        }
    }
    if let keys = sel.keys {
        // Whole parameters learned by gradient (projections, learnable codebooks, code transforms): the optimizer skips them.
        let chosen = try CodeSelection.learnedParameterKeys(try CodeSelection.keyList(keys), in: q, module: cfg.module)
        if freeze { try q.freeze(keys: chosen, strict: true) } else { try q.unfreeze(keys: chosen, strict: true) }
        let out = URL(fileURLWithPath: output ?? checkpoint)
        try QuantizerCheckpoint.save(q, config: cfg, to: out)
        print("\(freeze ? "froze" : "unfroze") \(chosen.count) parameter\(chosen.count == 1 ? "" : "s") (\(chosen.joined(separator: ", "))) → \(out.path)")
        return
    }
    // Placeholder codes of a k-means codebook before its first batch: freezing them would keep placeholders for good.
    if freeze { try requireInitialised(q, checkpoint) }
    let codeSpec = try sel.codes.map { try CodeSpec($0) }
    let dimSpec = try sel.dims.map { try CodeSpec($0, option: "--dims") }
    var count = 0, dimCount = 0
    let books = try selectCodebooks(q, layer: layer, head: head)
    // The selected codebooks' freeze masks (whole codes, components): whether the command changed them, not only what it was asked.
    let held = { books.map { $0.0.frozenCodes.value.scalars + $0.0.frozenComponents.value.scalars } }
    let heldBefore = held()
    for (book, h) in books {
        let list = try codeSpec?.codes(below: book.codebookSize)
        count = list?.count ?? book.codebookSize
        do {
            if let dimSpec {
                let dims = try dimSpec.codes(below: book.dim)
                dimCount = dims.count
                if freeze { try book.freeze(dimensions: dims, codes: list, head: h) } else { try book.unfreeze(dimensions: dims, codes: list, head: h) }
            } else if let list {
                if freeze { try book.freeze(codes: list, head: h) } else { try book.unfreeze(codes: list, head: h) }
            }
        } catch let e as CodebookError {
            throw ValidationError("\(dimSpec != nil ? "--dims" : "--codes"): \(e)")
        }
    }
    let out = URL(fileURLWithPath: output ?? checkpoint)
    try QuantizerCheckpoint.save(q, config: cfg, to: out)
    let what = dimSpec != nil ? "\(dimCount) components of \(count) codes" : "\(count) codes"
    let unchanged = heldBefore == held() ? " (all of them \(freeze ? "frozen" : "free") already: nothing changed)" : ""
    print("\(freeze ? "froze" : "unfroze") \(what)\(layer.map { " of layer \($0)" } ?? "")\(unchanged) → \(out.path)")
}
