import Foundation
import Testing
import VQNN
import VQTensor
import VectorQuantize
import VQTestSupport

/// The README's partial-freezing example, with its claim checked.
@Test("README: partial freezing in ten lines")
func readmePartialFreezing() throws {
    let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 32, codebookSize: 512))
    try vq.codebook.freeze(codes: 0..<256)                 // half the codes are now fixed, exactly
    var rng = SeededGenerator(seed: 1)
    let before = vq.codes
    for _ in 0..<100 {
        let x = Tensor.randomNormal([8, 64, 32], using: &rng)
        let out = vq(x)                                 // EMA training step: codes 256..<512 learn
        _ = (out.quantized, out.indices, out.loss)
    }
    // codes 0..<256: embed, embed_avg and cluster_size are bit-identical to before the loop
    #expect(vq.codes.slice(axis: 0, 0..<256) == before.slice(axis: 0, 0..<256))
    #expect(vq.codes.slice(axis: 0, 256..<512) != before.slice(axis: 0, 256..<512))
}

@Test("README: a residual stack with its first layer frozen")
func readmeResidual() throws {
    var rng = SeededGenerator(seed: 2)
    let rvq = try ResidualVQ(ResidualVQConfiguration(dim: 32, numQuantizers: 4, codebookSize: 256))
    rvq.layers[0].codebook.freezeAllCodes()            // layer 0 never changes again; layers 1–3 learn
    let x = Tensor.randomNormal([8, 64, 32], using: &rng)
    let before = rvq.layers.map(\.codes)
    let out = rvq(x)                                    // out.indices: [8, 64, 4], out.losses: [4]
    #expect(out.indices.shape == [8, 64, 4] && out.losses.shape == [4])
    #expect(rvq.layers[0].codes == before[0])
    #expect((1..<4).allSatisfy { rvq.layers[$0].codes != before[$0] })
}

/// The README's "every quantizer, in one line": the lines as written, each run once.
@Test("README: every quantizer in one line")
func readmeEveryQuantizer() throws {
    var rng = SeededGenerator(seed: 0)
    let vq   = try VectorQuantizer(VectorQuantizerConfiguration(dim: 64, codebookSize: 512))           // x [b, n, 64] → indices [b, n]
    let rvq  = try ResidualVQ(ResidualVQConfiguration(dim: 64, numQuantizers: 8, codebookSize: 1024))  // indices [b, n, 8]
    let grvq = try GroupedResidualVQ(.init(dim: 64, groups: 2, residual: ResidualVQConfiguration(dim: 32, numQuantizers: 4, codebookSize: 256)))
    let fsq  = try FSQ(.init(levels: [8, 5, 5, 5]))                                                    // x [b, n, 4], 1000 codes
    let rfsq = try ResidualFSQ(.init(levels: [8, 5, 5, 5], numQuantizers: 4))                          // indices [b, n, 4]
    let gfsq = try GroupedResidualFSQ(.init(dim: 8, groups: 2, residual: .init(levels: [8, 5, 5, 5], numQuantizers: 2)))
    let lfq  = try LFQ(.init(dim: 16, codebookSize: 65536))                                            // entropy loss without a 2^16 softmax
    let rlfq = try ResidualLFQ(.init(dim: 64, numQuantizers: 4, codebookSize: 1024))
    let glfq = try GroupedResidualLFQ(.init(dim: 64, groups: 2, residual: .init(dim: 32, numQuantizers: 2, codebookSize: 256)))
    let sim  = try SimVQ(.init(dim: 64, codebookSize: 1024))                                           // frozen codes through a learned map
    let rsim = try ResidualSimVQ(.init(dim: 64, numQuantizers: 4, codebookSize: 1024))
    let rpq  = try RandomProjectionQuantizer(dim: 512, codebookSize: 1024, codebookDim: 256, numCodebooks: 16)  // BEST-RQ targets
    let lq   = try LatentQuantize(.init(levels: [5, 5, 8], dim: 16))                                   // channel first: x [b, 16, n]
    let fsp  = try FSP(.init(levels: [8, 5, 5, 5], dim: 64))                                           // finite scalar perturbation
    let bm   = try BinaryMapper(.init(bits: 8))                                                        // logits [b, n, 8] → one-hot [b, n, 256]
    let hvq  = try HierarchicalVQ(.init(dim: 64, codebookSize: 1024, scales: [1, 4, 16, 64]))           // x [b, 64, 64], 4 scales
    let evo  = try EvoLFQ(encoder: Linear(784, 16, rng: &rng), decoder: Linear(16, 784, rng: &rng), lfq: LFQ(.init(dim: 16)))

    let all: [(any Quantizer, [Int])] = [(vq, [2, 8, 64]), (rvq, [2, 8, 64]), (grvq, [2, 8, 64]), (fsq, [2, 8, 4]), (rfsq, [2, 8, 4]),
                                         (gfsq, [2, 8, 8]), (lfq, [2, 8, 16]), (rlfq, [2, 8, 64]), (glfq, [2, 8, 64]), (sim, [2, 8, 64]),
                                         (rsim, [2, 8, 64]), (rpq, [1, 8, 512]), (lq, [2, 16, 8]), (fsp, [2, 8, 64]), (bm, [2, 8, 8]),
                                         (hvq, [2, 64, 64]), (evo, [2, 8, 784])]
    #expect(all.count == ModuleConfig.modules.count)
    for (q, shape) in all {
        let out = q.forward(Tensor.randomNormal(shape, using: &rng))
        #expect(out.indices.shape.first == shape[0] && out.loss.allFinite, "\(type(of: q))")
    }
}

/// The README's "your own training loop", as written, with its claims checked.
@Test("README: your own training loop with part of the codebook frozen")
func readmeOwnLoop() throws {
    var rng = SeededGenerator(seed: 0)
    let encoder = Sequential(Conv2d(1, 16, kernelSize: 4, stride: 2, padding: 1, rng: &rng), Activation(.gelu),
                             Conv2d(16, 8, kernelSize: 3, padding: 1, rng: &rng))
    var config = VectorQuantizerConfiguration(dim: 8, codebookSize: 64)
    config.acceptImageFmap = true                          // [b, 8, h, w] feature maps
    let vq = try VectorQuantizer(config)
    let decoder = Sequential(ConvTranspose2d(8, 16, kernelSize: 4, stride: 2, padding: 1, rng: &rng), Activation(.gelu),
                             Conv2d(16, 1, kernelSize: 3, padding: 1, rng: &rng))
    try vq.codebook.freeze(codes: 0..<32)                      // these 32 codes stay exactly as they are
    let optimizer = Adam(parameters: encoder.trainableParameters() + decoder.trainableParameters(), learningRate: 3e-3)
    let codesBefore = vq.codes, decoderBefore = decoder.stateDict()
    for _ in 0..<5 {
        let images = Tensor.randomNormal([16, 1, 8, 8], using: &rng)   // your data here
        let out = vq(encoder(images))                      // the EMA moves codes 32..<64 only
        let loss = Loss.mse(decoder(out.quantized), images) + out.loss
        encoder.zeroGradients(); decoder.zeroGradients()
        loss.backward()
        optimizer.step()
    }
    #expect(vq.codes.slice(axis: 0, 0..<32).scalars.map(\.bitPattern) == codesBefore.slice(axis: 0, 0..<32).scalars.map(\.bitPattern))
    #expect(vq.codes.slice(axis: 0, 32..<64) != codesBefore.slice(axis: 0, 32..<64))
    #expect(decoder.stateDict() != decoderBefore)
}

/// `VQNN.docc/ConvolutionalAutoencoder.md` (the tutorial), as written, with its claims checked; and the
/// VectorQuantize getting-started article.
@Test("tutorial: the convolutional autoencoder, with frozen codes")
func tutorialAutoencoder() throws {
    var rng = SeededGenerator(seed: 0)
    let encoder = Sequential(Conv2d(1, 16, kernelSize: 3, padding: 1, rng: &rng), MaxPool(kernelSize: [2, 2]), Activation(.gelu),
                             Conv2d(16, 32, kernelSize: 3, padding: 1, rng: &rng), MaxPool(kernelSize: [2, 2]))
    var config = VectorQuantizerConfiguration(dim: 32, codebookSize: 256)
    config.acceptImageFmap = true
    config.decay = 0.8
    let vq = try VectorQuantizer(config)
    try vq.codebook.freeze(codes: 0..<64)
    let codesAtStart = vq.codes
    let decoder = Sequential(Upsample(scaleFactor: 2), Conv2d(32, 16, kernelSize: 3, padding: 1, rng: &rng), Activation(.gelu),
                             Upsample(scaleFactor: 2), Conv2d(16, 1, kernelSize: 3, padding: 1, rng: &rng))
    let held = vq.codes.slice(axis: 0, 0..<64)
    let optimizer = Adam(parameters: encoder.trainableParameters() + decoder.trainableParameters(), learningRate: 3e-3)
    for _ in 0..<3 {
        let images = Tensor.randomUniform([16, 1, 8, 8], using: &rng)   // your images here
        let out = vq(encoder(images))
        let loss = Loss.mse(decoder(out.quantized), images) + out.loss
        encoder.zeroGradients(); decoder.zeroGradients()
        loss.backward()
        optimizer.step()
    }
    let frozenHeld = vq.codes.slice(axis: 0, 0..<64).scalars.map(\.bitPattern) == held.scalars.map(\.bitPattern)
    print("the 64 frozen codes held, bit for bit:", frozenHeld)   // true
    #expect(frozenHeld)
    // The free codes moved (the check above is not vacuous).
    #expect(vq.codes.slice(axis: 0, 64..<256) != Tensor.zeros([192, 32]) && vq.codes.slice(axis: 0, 64..<256) != codesAtStart.slice(axis: 0, 64..<256))
}

@Test("the tutorial's and the getting-started article's code is tested code")
func documentationNoDrift() throws {
    let root = DocSnippets.root()
    let here = URL(fileURLWithPath: #filePath)
    for block in try DocSnippets.blocks(root.appendingPathComponent("Sources/VQNN/VQNN.docc/ConvolutionalAutoencoder.md")) {
        #expect(try DocSnippets.missing(block, in: here).isEmpty, "\(block)")
    }
    // The DocC tutorial's code files (each step's whole file).
    let resources = root.appendingPathComponent("Sources/VQNN/VQNN.docc/Resources")
    let steps = try FileManager.default.contentsOfDirectory(atPath: resources.path).filter { $0.hasPrefix("autoencoder-") && $0.hasSuffix(".swift") }
    #expect(steps.count == 5)
    for file in steps {
        let lines = try DocSnippets.lines(resources.appendingPathComponent(file))
        #expect(!lines.isEmpty)
        #expect(try DocSnippets.missing(lines, in: here).isEmpty, "\(file)")
    }
    let gettingStarted = try DocSnippets.blocks(root.appendingPathComponent("Sources/VectorQuantize/VectorQuantize.docc/GettingStarted.md"))
    for block in gettingStarted {
        #expect(try DocSnippets.missing(block, in: here).isEmpty, "\(block)")
    }
}

@Test("VectorQuantize getting started")
func vectorQuantizeGettingStarted() throws {
    var config = VectorQuantizerConfiguration(dim: 64, codebookSize: 512)
    config.decay = 0.9
    config.kmeansInit = true
    let vq = try VectorQuantizer(config)

    var rng = SeededGenerator(seed: 0)
    let x = Tensor.randomNormal([8, 100, 64], using: &rng)
    let out = vq(x)              // training mode: EMA update of the codebook
    let indices = out.indices    // [8, 100]
    let loss = out.loss          // commitment loss (scalar)

    vq.eval()
    let codes = vq.getOutput(from: out.indices)   // [8, 100, 64]
    #expect(indices.shape == [8, 100] && loss.count == 1 && codes.shape == [8, 100, 64])

    let rvq = try ResidualVQ(ResidualVQConfiguration(dim: 64, numQuantizers: 4, codebookSize: 256))
    let r = rvq(x)               // r.indices: [8, 100, 4], r.losses: [4]
    #expect(r.indices.shape == [8, 100, 4] && r.losses.shape == [4])

    let fsq = try FSQ(FSQ.Configuration(levels: [8, 5, 5, 5]))
    #expect(fsq.codebookSize == 1000)
}

/// The README's "using it from your package", its Swift lines as written (the README is checked to hold them).
@Test("README: using it from your package")
func readmeUsingIt() throws {
    let dir = try TestSupport.scratchDirectory("vq-readme")
    defer { try? FileManager.default.removeItem(at: dir) }
    let config = ModuleConfig(module: "VectorQuantize", kwargs: ["dim": 8, "codebook_size": 16])
    try QuantizerCheckpoint.save(try config.build(), config: config, to: dir.appendingPathComponent("model.safetensors"))
    let vectors = TestSupport.random([10, 8], seed: 1)
    let url = dir.appendingPathComponent("model.safetensors")
    let (q, _) = try QuantizerCheckpoint.loadQuantizer(url)   // url: a checkpoint; any Quantizer, no cast
    let indices = q.encode(vectors)                  // vectors [n, dim] → indices
    let decoded = try q.decode(indices)              // throws (never traps) on indices that do not fit
    #expect(decoded.shape == [10, 8])
    #expect(throws: DecodeError.self) { try q.decode(IndexTensor([99])) }
    let readme = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("README.md"), encoding: .utf8)
    for line in ["let (q, _) = try QuantizerCheckpoint.loadQuantizer(url)   // url: a checkpoint; any Quantizer, no cast",
                 "let indices = q.encode(vectors)                  // vectors [n, dim] → indices",
                 "let decoded = try q.decode(indices)              // throws (never traps) on indices that do not fit"] {
        #expect(readme.contains(line), "the README no longer says: \(line)")
    }
}

/// The README's three uses in four lines, as written, each checked to hold after a training step (and the free part
/// to have moved).
@Test("README: the three uses in four lines")
func readmeThreeUsesInFourLines() throws {
    struct MyPolicy: FreezePolicy {      // use 3: hold the busiest code of every update
        mutating func decide(_ c: FreezeContext) -> FreezeDecision {
            var weights = [Float](repeating: 1, count: c.counts.count)
            weights[c.counts.indices.max { c.counts[$0] < c.counts[$1] }!] = 0
            return FreezeDecision(weights: weights)
        }
    }
    var rng = SeededGenerator(seed: 4)
    let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 32, codebookSize: 512))
    let basis = Tensor((0..<4).flatMap { r in (0..<32).map { $0 == 28 + r ? Float(1) : 0 } }, shape: [4, 32])   // coordinates 28–31
    try vq.codebook.freeze(codes: 0..<256)                         // 1. learned codes stay fixed (bit-identical)
    try vq.codebook.freeze(dimensions: 0..<16)                     // 2. components 0–15 of every code (bit-identical)
    try vq.codebook.freeze(subspace: basis)                    //    or a subspace [k, d] (coordinates held to rounding)
    try vq.codebook.setFreezePolicy(MyPolicy().or(.converged(tolerance: 0.005, patience: 20)))   // 3. custom logic
    let before = vq.codes
    _ = vq(Tensor.randomNormal([4, 64, 32], using: &rng))
    let after = vq.codes
    #expect(after.slice(axis: 0, 0..<256) == before.slice(axis: 0, 0..<256))
    #expect(after.slice(axis: 1, 0..<16) == before.slice(axis: 1, 0..<16))
    #expect(TestSupport.maxAbsDiff(after.slice(axis: 1, 28..<32), before.slice(axis: 1, 28..<32)) < 1e-5)
    #expect(after.slice(axis: 0, 256..<512).slice(axis: 1, 16..<28) != before.slice(axis: 0, 256..<512).slice(axis: 1, 16..<28))
}

/// The README's "add this package as a dependency" lines: they name this package and a product it declares.
@Test("README: the dependency snippet names this package and its library")
func readmeDependencySnippet() throws {
    let snippet = """
        // Package.swift
        dependencies: [.package(url: "https://github.com/<owner>/swift-vector-quantize", branch: "main")],
        targets: [.target(name: "MyApp", dependencies: [.product(name: "VectorQuantize", package: "swift-vector-quantize")])]
        """
    let manifest = try String(contentsOf: DocSnippets.root().appendingPathComponent("Package.swift"), encoding: .utf8)
    #expect(snippet.contains("package: \"swift-vector-quantize\"") && manifest.contains("name: \"swift-vector-quantize\""))
    #expect(snippet.contains(".product(name: \"VectorQuantize\"") && manifest.contains(".library(name: \"VectorQuantize\""))
}

/// The Checkpoints article's snippet: save any quantizer without keywords, load it back as its own type.
@Test("Checkpoints article: save without keywords")
func checkpointsArticle() throws {
    let folder = try TestSupport.scratchDirectory("vq-article")
    defer { try? FileManager.default.removeItem(at: folder) }
    let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 64, codebookSize: 512))
    try QuantizerCheckpoint.save(vq, to: folder.appendingPathComponent("model.safetensors"))
    let fsq = try FSQ(.init(levels: [8, 5, 5, 5]))
    try QuantizerCheckpoint.save(fsq, to: folder.appendingPathComponent("fsq.safetensors"))
    let (loaded, config) = try QuantizerCheckpoint.loadQuantizer(folder.appendingPathComponent("fsq.safetensors"))
    // config: {"module": "FSQ", "kwargs": {"levels": [8, 5, 5, 5], …}}; loaded is an FSQ
    #expect(config.module == "FSQ" && (config.kwargs["levels"] as? [Int]) == [8, 5, 5, 5])
    #expect((loaded as? FSQ)?.configuration == fsq.configuration)
    let (loadedVQ, _) = try QuantizerCheckpoint.loadQuantizer(folder.appendingPathComponent("model.safetensors"))
    #expect((loadedVQ as? VectorQuantizer)?.configuration == vq.configuration)
}

/// The FreezingCodes article's "Reading the freeze state" snippet.
@Test("FreezingCodes article: reading the freeze state")
func freezingCodesArticle() throws {
    let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 8, codebookSize: 16))
    let indices = IndexTensor([0, 3, 15], shape: [3])
    try vq.codebook.freeze(codes: [3, 5])
    let frozen = vq.codebook.frozenCodeIndices()              // [3, 5]: every code held by the mask
    let byPolicy = vq.codebook.policyFrozenCodes()            // the codes a policy froze, with the update it froze them at
    try vq.validate(indices: indices)                         // throws DecodeError on indices that do not fit
    let vectors = try vq.decode(indices)
    #expect(frozen == [3, 5] && byPolicy.isEmpty && vectors.shape == [3, 8])
    #expect(throws: DecodeError.self) { try vq.validate(indices: IndexTensor([16], shape: [1])) }
}

/// Every ```swift block of the README and of the library's articles, line by line in order, in one test file: the documentation quotes code that compiles and runs (a renamed API or a changed spelling fails here).
@Test("every Swift snippet of the README and the articles is tested code, verbatim")
func everySnippetIsTested() throws {
    let root = DocSnippets.root()
    let sources = try ["VectorQuantizeTests", "VQTensorTests", "VQNNTests"].flatMap { target in
        let tests = root.appendingPathComponent("Tests/\(target)")
        return try FileManager.default.contentsOfDirectory(atPath: tests.path).filter { $0.hasSuffix(".swift") }.map { tests.appendingPathComponent($0) }
    }
    let documents = ["README.md"] + ["Checkpoints", "FreezingCodes", "GettingStarted", "ThreeUsesOfFreezing", "VectorQuantize"]
        .map { "Sources/VectorQuantize/VectorQuantize.docc/\($0).md" }
    var blocks = 0
    for document in documents {
        for block in try DocSnippets.blocks(root.appendingPathComponent(document)) {
            blocks += 1
            let best = try sources.map { try DocSnippets.missing(block, in: $0) }.min { $0.count < $1.count } ?? block
            #expect(best.isEmpty, "\(document): not in any test, in order: \(best)")
        }
    }
    #expect(blocks >= 14)
}
