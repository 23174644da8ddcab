import ArgumentParser
import Foundation
import VQDistributed
import VQNN
import VQTensor
import VectorQuantize

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Learn a codebook from vectors (EMA), optionally continuing, growing or freezing an existing one.")

    @Option(help: "Vectors: .npy, .fvecs, .bvecs or FILE.safetensors:NAME ([n, d] or [b, n, d]).") var input: String
    @Option(parsing: .unconditional, help: "Codebook size (per layer).") var codebookSize: Int?
    @Option(help: "Output checkpoint (.safetensors); its config goes beside it as .json.") var output: String
    @Option(parsing: .unconditional, help: "Heads (separate codebooks per head; default 1).") var heads: Int?
    @Flag(help: "Cosine-similarity codebook.") var cosine = false
    @Option(parsing: .unconditional, help: "EMA decay (default 0.8; with --init or --config: the checkpoint's or configuration's, or this).") var decay: Double?
    @Flag(help: "Initialise codes by k-means on the first batch.") var kmeansInit = false
    @Option(parsing: .unconditional, help: "Replace codes whose EMA count falls below this (0 = off, the default; with --init or --config: the checkpoint's or configuration's, or this).")
    var deadCodeThreshold: Double?
    @Option(parsing: .unconditional, help: "Commitment loss weight (default 1; with --init or --config: the checkpoint's or configuration's, or this).") var commitmentWeight: Double?
    @Option(parsing: .unconditional, help: "Vectors per step.") var batchSize = 1024
    @Option(parsing: .unconditional, help: "Adam's learning rate, for quantizers with parameters learned by gradient (projections, learnable codebooks).")
    var lr: Double = 1e-3
    @Option(parsing: .unconditional, help: "Training steps (default: one epoch).") var steps: Int?
    @Option(parsing: .unconditional, help: "Epochs (instead of --steps).") var epochs: Int?
    @Option(parsing: .unconditional, help: "Residual VQ with this many layers.") var residual: Int?
    @Option(help: "FSQ levels, e.g. 8,5,5,5: an FSQ whose projections (when the dimension differs from the number of levels) are trained by Adam; with as many levels as dimensions there is nothing to learn and the quantizer is written as is.") var fsqLevels: String?
    @Option(name: .customLong("init"), help: "Continue from this checkpoint (its config is used).") var initFrom: String?
    @Option(name: .customLong("config"), help: "A new quantizer of any kind from a configuration {\"module\", \"kwargs\"} in the reference's names, e.g. {\"module\": \"ResidualLFQ\", \"kwargs\": {\"codebook_size\": 256, \"num_quantizers\": 4}} (dim: the input's, seed: --seed, unless given).")
    var configFile: String?
    @Option(parsing: .unconditional, help: "Grow the codebook to this size; the old codes are frozen unless --no-freeze-old, the new ones fitted to the input, and codes left unused re-seeded (dead-code threshold 0.5 unless --dead-code-threshold is given).") var expandTo: Int?
    @Flag(help: "With --expand-to: leave the old codes trainable.") var noFreezeOld = false
    @Option(help: "Freeze these codes before training, e.g. 0-255,300.") var freeze: String?
    @Option(help: "Freeze these components of every code before training, e.g. 0-15.") var freezeDims: String?
    @Option(help: "Freeze each code's coordinates in the subspace spanned by the rows of this [k, d] basis (orthonormal, .npy).")
    var freezeSubspace: String?
    @Option(help: "Freeze codes that moved less than TOL (relative) in PATIENCE consecutive updates where they were used: TOL[,PATIENCE] (default patience 5).")
    var freezeConverged: String?
    @Option(parsing: .unconditional, help: "Layer for --freeze, --freeze-dims, --freeze-subspace and --freeze-converged (residual stacks; default all).") var layer: Int?
    @Option(parsing: .unconditional, help: "Head for --freeze, --freeze-dims, --freeze-subspace and --freeze-converged (default all).") var head: Int?
    @Option(parsing: .unconditional, help: "Random seed.") var seed: UInt64 = 0
    @Option(parsing: .unconditional, help: "Thread count (default: active cores).") var threads: Int?
    @Option(help: "Write an HTML report (loss curve, code usage).") var report: String?
    @Option(parsing: .unconditional, help: "Write a resumable state every N steps (to --state).") var checkpointEvery: Int?
    @Option(help: "Resumable state file (default: OUTPUT with .state.safetensors).") var state: String?
    @Option(help: "Continue a run from its state file (same --input, --batch-size, --steps/--epochs, --seed).") var resume: String?
    @Flag(help: "Data-parallel training under mpirun: each step's batch is split across the ranks; rank 0 writes.")
    var distributed = false
    @Option(parsing: .unconditional, help: "With --distributed: seconds before a stalled collective aborts every rank.") var collectiveTimeout: Double = 120
    @Flag(help: ArgumentHelp("With --distributed: every rank writes OUTPUT.rankN.safetensors (for tests).", visibility: .hidden))
    var rankOutputs = false
    @Option(help: ArgumentHelp("Failure drill: RANK:STEP:exit|hang makes that rank fail at that step (for tests).", visibility: .hidden))
    var failureDrill: String?

    func validate() throws {
        if let configFile {
            // The configuration fixes the quantizer; only training hyper-parameters may be given beside it.
            let structural = [("--init", initFrom != nil), ("--resume", resume != nil), ("--codebook-size", codebookSize != nil)] + structureOptions
            if let (name, _) = structural.first(where: { $0.1 }) {
                throw ValidationError("\(name) contradicts --config: the configuration fixes the quantizer (write it there; only --decay, --dead-code-threshold, --commitment-weight and --expand-to change it)")
            }
            _ = try configuration(configFile)
        }
        if initFrom == nil && fsqLevels == nil && codebookSize == nil && resume == nil && configFile == nil {
            throw ValidationError("--codebook-size is required (or --config / --init / --fsq-levels / --resume)")
        }
        if let k = codebookSize, k < 1 { throw ValidationError("--codebook-size must be ≥ 1") }
        if batchSize < 1 { throw ValidationError("--batch-size must be ≥ 1") }
        if !(lr.isFinite && lr > 0) { throw ValidationError("--lr must be a positive number") }
        if steps != nil && epochs != nil { throw ValidationError("pass --steps or --epochs, not both") }
        if let s = steps, s < 1 { throw ValidationError("--steps must be ≥ 1") }
        if let e = epochs, e < 1 { throw ValidationError("--epochs must be ≥ 1") }
        if let r = residual, r < 1 { throw ValidationError("--residual must be ≥ 1") }
        if let heads, heads < 1 { throw ValidationError("--heads must be ≥ 1") }
        if let decay, !(0...1).contains(decay) { throw ValidationError("--decay must be in [0, 1]") }
        if let t = deadCodeThreshold, !(t.isFinite && t >= 0) { throw ValidationError("--dead-code-threshold must be a finite number ≥ 0") }
        if let w = commitmentWeight, !(w.isFinite && w >= 0) { throw ValidationError("--commitment-weight must be a finite number ≥ 0") }
        if initFrom != nil {
            // The checkpoint fixes the structure; only training hyper-parameters may change between stages.
            if let (name, _) = structureOptions.first(where: { $0.1 }) {
                throw ValidationError("\(name) contradicts --init: the checkpoint fixes the structure (only --decay, --dead-code-threshold, --commitment-weight and --expand-to change it)")
            }
        }
        if fsqLevels != nil, let (name, _) = codebookOptions.first(where: { $0.1 }) {
            // An FSQ's codes are its levels' grid: what shapes or trains a learned codebook would change nothing.
            throw ValidationError("\(name) belongs to a learned codebook; --fsq-levels makes an FSQ, whose codes are the grid of its levels (for a residual or grouped FSQ, use --config)")
        }
        try DataFiles.checkThreads(threads)
        if let f = freeze { _ = try CodeSpec(f, option: "--freeze") }
        _ = try fsqLevelValues()
        if let layer, layer < 0 { throw ValidationError("--layer must be ≥ 0") }
        if let head, head < 0 { throw ValidationError("--head must be ≥ 0") }
        // An option that would change nothing is a mistake worth one line (a misspelt or forgotten companion).
        if layer != nil || head != nil, freeze == nil && freezeDims == nil && freezeSubspace == nil && freezeConverged == nil {
            throw ValidationError("\(layer != nil ? "--layer" : "--head") selects the codebooks of --freeze, --freeze-dims, --freeze-subspace or --freeze-converged; without one of them it changes nothing")
        }
        if noFreezeOld && expandTo == nil { throw ValidationError("--no-freeze-old belongs to --expand-to (the old codes of a grown codebook); without it, it changes nothing") }
        if state != nil && checkpointEvery == nil { throw ValidationError("--state names where --checkpoint-every writes; without --checkpoint-every nothing is written there") }
        if let d = freezeDims { _ = try CodeSpec(d, option: "--freeze-dims") }
        if freezeConverged != nil { _ = try convergedPolicy() }
        if resume != nil && (freezeDims != nil || freezeSubspace != nil || freezeConverged != nil) {
            throw ValidationError("--resume continues a run as it was: --freeze-dims, --freeze-subspace and --freeze-converged belong to its first start")
        }
        if checkpointEvery != nil && freezeConverged != nil {
            throw ValidationError("--checkpoint-every cannot yet save the state of --freeze-converged (its per-code counters); run without one of them")
        }
        if let e = expandTo, e < 1 { throw ValidationError("--expand-to must be ≥ 1") }
        if !(collectiveTimeout.isFinite && collectiveTimeout > 0) { throw ValidationError("--collective-timeout must be a positive number of seconds") }
        try DataFiles.checkOutput(output, option: "--output")
        if let report { try DataFiles.checkOutput(report, option: "--report") }
        if let c = checkpointEvery, c < 1 { throw ValidationError("--checkpoint-every must be ≥ 1") }
        if let state { try DataFiles.checkOutput(state, option: "--state") }
        if let state, !state.lowercased().hasSuffix(".safetensors") {
            throw ValidationError("--state \(state): a training state is a safetensors file; name it NAME.safetensors")
        }
        try files.check()
        if resume != nil && (initFrom != nil || expandTo != nil || freeze != nil) {
            throw ValidationError("--resume continues a run as it was: --init, --expand-to and --freeze belong to its first start")
        }
        if expandTo != nil && residual != nil { throw ValidationError("--expand-to works on a single codebook, not with --residual") }
    }

    /// The options that shape a new quantizer, and whether each is given: a checkpoint (`--init`) or a configuration
    /// (`--config`) fixes them instead.
    var structureOptions: [(String, Bool)] {
        [("--fsq-levels", fsqLevels != nil), ("--residual", residual != nil), ("--heads", heads != nil), ("--cosine", cosine), ("--kmeans-init", kmeansInit)]
    }

    /// The options of a learned codebook (VectorQuantize, ResidualVQ), and whether each is given: an FSQ has none.
    var codebookOptions: [(String, Bool)] {
        [("--codebook-size", codebookSize != nil)] + structureOptions.filter { $0.0 != "--fsq-levels" }
            + [("--decay", decay != nil), ("--dead-code-threshold", deadCodeThreshold != nil), ("--commitment-weight", commitmentWeight != nil)]
    }

    /// Rank `r`'s checkpoint under `--rank-outputs`: OUTPUT with `.rankN.safetensors`.
    func rankOutput(_ r: Int) -> URL {
        URL(fileURLWithPath: output).deletingPathExtension().appendingPathExtension("rank\(r).safetensors")
    }

    /// How messages name the state file: `--state`, or the default beside the output.
    var stateRole: String { state == nil ? "the state file (OUTPUT.state.safetensors)" : "--state" }

    /// The state file this run writes with `--checkpoint-every` (`--state`, or OUTPUT with `.state.safetensors`).
    var statePath: String {
        state ?? URL(fileURLWithPath: output).deletingPathExtension().appendingPathExtension("state.safetensors").path
    }

    /// The model options given on this command line, by option name (saved in the state; a resumption may
    /// repeat them but not change them).
    var modelOptions: [String: String] {
        var o: [String: String] = [:]
        if let codebookSize { o["--codebook-size"] = String(codebookSize) }
        if let heads { o["--heads"] = String(heads) }
        if cosine { o["--cosine"] = "true" }
        if let decay { o["--decay"] = String(decay) }
        if kmeansInit { o["--kmeans-init"] = "true" }
        if let deadCodeThreshold { o["--dead-code-threshold"] = String(deadCodeThreshold) }
        if let commitmentWeight { o["--commitment-weight"] = String(commitmentWeight) }
        if let residual { o["--residual"] = String(residual) }
        if let fsqLevels { o["--fsq-levels"] = fsqLevels }
        if let layer { o["--layer"] = String(layer) }
        if let head { o["--head"] = String(head) }
        return o
    }

    /// Every file this run reads and writes (checked against each other in ``validate()``).
    var files: CommandFiles { files(checkpoint: output, role: "--output") }

    /// Every file this run reads and writes, the checkpoint written to `path` (rank N's own file under
    /// `--rank-outputs`, known once the ranks are).
    func files(checkpoint path: String, role: String) -> CommandFiles {
        var files = CommandFiles()
        files.input(input, "--input")
        files.checkpointInput(initFrom, "--init")
        files.input(configFile, "--config")
        files.input(freezeSubspace, "--freeze-subspace")
        files.input(resume, "--resume")
        files.checkpoint(path, role)
        files.output(report, "--report")
        // A resumed run goes on writing its own state (the usual case: --resume names the default state file).
        if checkpointEvery != nil { files.output(statePath, stateRole, replacing: [resume]) }
        return files
    }

    func run() throws {
        if let threads { Threads.count = threads }
        var collective: any Collective = SingleProcess()
        if distributed {
            do { collective = try Distributed.world(timeout: collectiveTimeout) } catch let e as DistributedError { throw CLIError(e.description) }
        }
        if rankOutputs && collective.worldSize > 1 {
            // Each rank writes its own checkpoint and sidecar: every rank checks every rank's (the same answer on
            // all of them, so they refuse together) before anything is read or written.
            for r in 0..<collective.worldSize {
                do { try files(checkpoint: rankOutput(r).path, role: "--rank-outputs (rank \(r))").check() } catch let e as ValidationError {
                    Distributed.finalize(collective)
                    throw CLIError(e.message)
                }
            }
        }
        let x = try trainingVectors()
        let stateURL = URL(fileURLWithPath: statePath)
        if checkpointEvery != nil { try TrainingState.checkReplaceable(stateURL, resuming: resume) }
        let (module, config, resumed) = try preparedModule(x)
        for (book, _) in (try? selectCodebooks(module, layer: nil, head: nil)) ?? [] { book.collective = collective }
        let run = try trainingPlan(module, config: config, rows: x.shape[0], world: collective.worldSize, resumed: resumed)
        if collective.worldSize == 1 { try checkFreeSpace(module, rows: x.shape[0], optimizer: run.optimizer) }
        let (losses, wroteState) = try train(module, config: config, x: x, plan: run, collective: collective, resumed: resumed, stateURL: stateURL)
        module.eval()
        var url = URL(fileURLWithPath: output)
        if rankOutputs && collective.worldSize > 1 {
            url = rankOutput(collective.rank)
        } else if collective.rank != 0 {
            Distributed.finalize(collective)
            return  // rank 0 writes the checkpoint
        }
        defer { Distributed.finalize(collective) }
        // The checkpoint, its sidecar and the report are one atomic set: none is written unless all are.
        let summary = try summarise(module, config: config, x: x, losses: losses, written: url)
        try QuantizerCheckpoint.save(module, config: config, to: url, alongside: summary.report)
        // The run is complete: its recovery state is no longer needed. Only this run's own states are removed:
        // the one it wrote, and the one it resumed from (a state of this very run: its signature was checked).
        var stale: [URL] = []
        if wroteState { stale.append(stateURL) }
        if let resume, resumed != nil { stale.append(URL(fileURLWithPath: resume)) }
        for url in stale { try? FileManager.default.removeItem(at: url) }
        print(summary.line)
        if let report { print("report: \(report)") }
    }

    /// The input's vectors as `[n, d]`, refused when empty or when the codes asked for would not fit in memory.
    func trainingVectors() throws -> Tensor {
        var x = try DataFiles.vectors(input)
        if x.rank == 3 { x = x.reshaped([x.shape[0] * x.shape[1], x.shape[2]]) }
        let (n, d) = (x.shape[0], x.shape[1])
        guard n > 0 && d > 0 else { throw CLIError("\(input): no vectors to train on (shape \(x.shape))") }
        if let k = expandTo ?? codebookSize {
            // Codes are [k, d] floats in embed and embed_avg: refuse what cannot fit in memory before allocating.
            let bytes = Double(k) * Double(d) * Double(residual ?? 1) * 8
            if bytes > Double(ProcessInfo.processInfo.physicalMemory) / 2 {
                throw ValidationError("--\(expandTo != nil ? "expand-to" : "codebook-size") \(k): \(k) codes of dimension \(d) need \(Int(bytes / 1e9)) GB, more than half of this machine's memory")
            }
        }
        return x
    }

    /// The model to train: a resumed run's (its options checked), or a new / `--init` one grown (`--expand-to`) and
    /// frozen (`--freeze`, `--freeze-dims`, …) as asked.
    func preparedModule(_ x: Tensor) throws -> (any Quantizer, ModuleConfig, TrainingState?) {
        let (n, d) = (x.shape[0], x.shape[1])
        if let resume {
            let r: (any Quantizer, ModuleConfig, TrainingState)
            do { r = try TrainingState.read(URL(fileURLWithPath: resume)) } catch let e as TrainingStateError { throw CLIError("--resume \(e)") }
            for (option, value) in modelOptions.sorted(by: { $0.key < $1.key }) where r.2.options[option] != value {
                let was = r.2.options[option].map { "\(option) \($0)" } ?? "without \(option)"
                throw ValidationError("\(option) \(value): --resume \(resume) continues a run started \(was); a resumed run keeps its model options (omit them)")
            }
            guard r.0.inputDim == d else { throw CLIError("\(input): vectors of dimension \(d), the model expects \(r.0.inputDim)") }
            return r
        }
        var (module, config) = try makeModule(dim: d)
        if let expandTo {
            guard let vq = module as? VectorQuantizer else { throw CLIError("--expand-to: \(config.module) has no single codebook to grow") }
            guard expandTo > vq.codebookSize else { throw ValidationError("--expand-to \(expandTo) must exceed the current \(vq.codebookSize) codes") }
            // The new codes are fitted to the new data (k-means around the old codes, which stay fixed), so
            // they start where the data is instead of at a uniform init that the data may never reach.
            let newCodes = expandTo - vq.codebookSize
            var sampler = SeededGenerator(seed: seed &+ 2)
            let limit = max(batchSize, 256 * newCodes)
            let sample = n <= limit ? x : x.indexSelect(axis: 0, IndexTensor(Array(sampler.permutation(n).prefix(limit)).sorted()))
            module = try vq.expanded(toCodebookSize: expandTo, freezeExisting: !noFreezeOld, seed: seed &+ 1,
                                     fittingNewCodesTo: sample, countsPerBatch: min(batchSize, n))
            config.kwargs["codebook_size"] = expandTo
            if deadCodeThreshold == nil, (config.kwargs["threshold_ema_dead_code"] as? Double) == Self.growthDeadCodeThreshold {
                print("--expand-to: dead-code threshold \(Self.growthDeadCodeThreshold) (codes left unused are re-seeded from the data; --dead-code-threshold 0 turns it off)")
            }
        }
        // The codes of a k-means codebook before its first batch are placeholders (zeros): freezing codes, components or a
        // subspace of them would keep zeros for good (the batch fits the rest around them).
        if let option = [("--freeze", freeze), ("--freeze-dims", freezeDims), ("--freeze-subspace", freezeSubspace)].first(where: { $0.1 != nil })?.0,
           !module.isInitialised {
            throw ValidationError("\(option): the codes of \(initFrom ?? configFile.map { "the new k-means codebook of --config \($0)" } ?? "a new --kmeans-init codebook") are placeholders until its first training batch (k-means); freezing them would keep placeholders — train first, then freeze (vq freeze, or vq train --init CHECKPOINT \(option) …)")
        }
        if let freeze {
            let spec = try CodeSpec(freeze, option: "--freeze")
            for (book, h) in try selectCodebooks(module, layer: layer, head: head) {
                let codes = try spec.codes(below: book.codebookSize)
                do { try book.freeze(codes: codes, head: h) } catch let e as CodebookError { throw ValidationError("--freeze: \(e)") }
            }
        }
        guard module.inputDim == d else { throw CLIError("\(input): vectors of dimension \(d), the model expects \(module.inputDim)") }
        try applyPartialFreezes(module)
        return (module, config, nil)
    }

    /// Refuses a run whose checkpoint (and state file) cannot fit where they go before it trains, rather than after
    /// (the bytes of their tensors in float32: less than they take, so a run that fits is never refused).
    func checkFreeSpace(_ module: any Quantizer, rows: Int, optimizer: Adam?) throws {
        let model = module.stateDict().values.reduce(0) { $0 + 4 * $1.count }
        let moments = optimizer == nil ? 0 : module.trainableParameters().reduce(0) { $0 + 8 * $1.value.count }
        var needs = [(path: output, bytes: model, option: "--output")]
        if checkpointEvery != nil { needs.append((statePath, model + moments + 4 * rows, stateRole)) }
        try DataFiles.checkFreeSpace(needs)
    }

    /// What the training loop runs: how (the registry's word), how many steps, with which optimizer, under which
    /// signature (what a resumed run must match) — decided, and refused, before anything is written.
    struct TrainingPlan {
        let method: TrainingMethod
        let totalSteps: Int
        let signature: String
        let optimizer: Adam?
    }

    func trainingPlan(_ module: any Quantizer, config: ModuleConfig, rows n: Int, world: Int, resumed: TrainingState?) throws -> TrainingPlan {
        if world > 1 && batchSize % world != 0 {
            throw ValidationError("--batch-size \(batchSize) must be a multiple of the \(world) ranks")
        }
        let perEpoch = max(1, n / batchSize + (n % batchSize == 0 ? 0 : 1))
        let (epochSteps, overflow) = (epochs ?? 1).multipliedReportingOverflow(by: perEpoch)
        if steps == nil && overflow { throw ValidationError("--epochs \(epochs ?? 1): too many steps") }
        let totalSteps = steps ?? epochSteps
        let (inputURL, inputTensor) = DataFiles.split(input)
        let size = (try? FileManager.default.attributesOfItem(atPath: inputURL.path)[.size] as? Int) ?? 0
        let signature = "input=\(FileIdentity(inputURL.path).resolved)\(inputTensor.map { ":" + $0 } ?? "");bytes=\(size);rows=\(n);batch=\(batchSize);steps=\(totalSteps);seed=\(seed);ranks=\(world);lr=\(lr)"
        let method = TrainingMethod.of(module, kind: QuantizerRegistry.kind(named: config.module)!)
        switch method {
        case .elsewhere(let why): throw CLIError("vq train cannot train \(config.module): \(why)")
        case .nothingToLearn(let why) where initFrom != nil || resume != nil:
            throw CLIError("\(initFrom.map { "--init \($0)" } ?? "--resume \(resume!)"): \(why); there is nothing for vq train to do")
        case .nothingToLearn, .fromVectors: break
        }
        // Parameters learned by gradient (projections, learnable codebooks, code transforms): Adam on the
        // reconstruction through the quantizer plus its own loss. EMA codebooks learn in the forward itself.
        let learned = module.trainableParameters()
        let optimizer = learned.isEmpty ? nil : Adam(parameters: learned, learningRate: Float(lr))
        if optimizer != nil && world > 1 {
            throw CLIError("--distributed trains EMA codebooks; \(config.module) here also learns parameters by gradient (\(learned.count) tensors), which it does not average yet")
        }
        if let optimizer, let resumed {
            do { try resumed.restore(optimizer, of: module, path: resume!) } catch let e as TrainingStateError { throw CLIError("--resume \(e)") }
        }
        if let resumed, method == .fromVectors {
            guard resumed.signature == signature else {
                throw CLIError("--resume \(resume!): written by another run (\(resumed.signature)); resume with the same --input, --batch-size, --steps/--epochs and --seed")
            }
            guard resumed.order.count == n else { throw CLIError("--resume \(resume!): the data position does not fit \(input)") }
        }
        return TrainingPlan(method: method, totalSteps: totalSteps, signature: signature, optimizer: optimizer)
    }

    /// The training loop (nothing when there is nothing to learn): the losses, and whether a state was written.
    func train(_ module: any Quantizer, config: ModuleConfig, x: Tensor, plan: TrainingPlan, collective: any Collective,
               resumed: TrainingState?, stateURL: URL) throws -> (losses: [Float], wroteState: Bool) {
        guard plan.method == .fromVectors else { return ([], false) }
        let (n, rank, world, totalSteps) = (x.shape[0], collective.rank, collective.worldSize, plan.totalSteps)
        var rng = SeededGenerator(seed: seed)
        var order = rng.permutation(n)
        var (cursor, first, losses, wroteState) = (0, 1, [Float](), false)
        if let resumed { (rng, order, cursor, losses, first) = (resumed.dataRNG, resumed.order, resumed.cursor, resumed.losses, resumed.step + 1) }
        var progress = Progress(world > 1 ? "train (\(world) ranks)" : "train", total: totalSteps)
        var counts = [Int](repeating: 0, count: module.codebookSizes.max() ?? 1)
        module.train()
        for step in stride(from: first, through: totalSteps, by: 1) {
            var rows: [Int] = []
            while rows.count < min(batchSize, n) {
                if cursor == n { order = rng.permutation(n); cursor = 0 }
                rows.append(order[cursor])
                cursor += 1
            }
            if let drill = failureDrill?.split(separator: ":"), drill.count == 3, Int(drill[0]) == rank, Int(drill[1]) == step {
                if drill[2] == "exit" { FileHandle.standardError.write(Data("vq: rank \(rank): failure drill, exiting\n".utf8)); Foundation.exit(7) }
                while true { sleep(1000) }  // hang
            }
            // Every rank draws the same global batch and keeps its contiguous share of it.
            let share = rows.count / world
            let mine = world > 1 ? Array(rows[(rank * share)..<((rank + 1) * share)]) : rows
            let batch = x.indexSelect(axis: 0, IndexTensor(mine)).unsqueezed(axis: 0)
            var (loss, indices) = try plan.optimizer.map { try gradientStep(module, batch, $0) } ?? withoutGradient { trainStep(module, batch) }
            if world > 1 {
                var l = [loss]
                collective.allReduceSum(&l)
                loss = l[0] / Float(world)  // the loss is averaged over ranks
            }
            losses.append(loss)
            for i in indices where i >= 0 && i < counts.count { counts[i] += 1 }
            if rank == 0 && (step % 10 == 0 || step == totalSteps) {
                progress.update(step, loss: loss, usage: counts.filter { $0 > 0 }.count, codes: counts.count, perplexity: perplexity(counts))
                counts = [Int](repeating: 0, count: counts.count)
            }
            if let every = checkpointEvery, step % every == 0, step < totalSteps, rank == 0 {
                let snapshot = TrainingState(step: step, cursor: cursor, order: order, dataRNG: rng, losses: losses, signature: plan.signature,
                                             options: resumed?.options ?? modelOptions)
                try snapshot.write(module: module, config: config, optimizer: plan.optimizer, to: stateURL)
                wroteState = true
            }
        }
        return (losses, wroteState)
    }

    /// The last line (what was written, its reconstruction error) and the `--report` file to write beside the
    /// checkpoint (none when not asked for).
    func summarise(_ module: any Quantizer, config: ModuleConfig, x: Tensor, losses: [Float], written url: URL) throws
        -> (line: String, report: [(data: Data, url: URL)]) {
        let (n, d) = (x.shape[0], x.shape[1])
        // A quantizer that cannot decode (a random projection) or whose outputs are not vectors like its inputs
        // (BinaryMapper's one-hot codes) has no reconstruction error.
        let error: String
        do {
            let recon = try module.decode(module.encode(x))
            error = recon.shape == x.shape ? String(format: "reconstruction MSE %.6f", Loss.mse(recon, x).item)
                : "outputs of shape \(recon.shape) (no reconstruction error)"
        } catch let e as DecodeError {
            error = "no reconstruction error (\(e.description))"
        }
        let line = String(format: "wrote %@ (+ %@): %@, %d vectors × %d, %d steps, ", url.path,
                          ModuleConfig.sidecar(of: url).lastPathComponent, config.module, n, d, losses.count) + error
        guard let report else { return (line, []) }
        let counts = usageCounts(module, x)
        var html = "<!doctype html><html><head><meta charset=\"utf-8\"><title>vq train</title></head><body style=\"font-family:system-ui\">"
        html += "<h1>vq train: \(config.module)</h1><p>\(n) vectors × \(d), \(losses.count) steps, \(error)</p>"
        if !losses.isEmpty { html += "<h2>Loss</h2>" + Report.lossChart(["loss": losses], xLabel: "step") }
        let frozen = (try? selectCodebooks(module, layer: 0, head: nil).first?.0.frozenCodeIndices().count) ?? 0
        html += "<h2>Code usage</h2>" + Report.histogram(counts, frozenBelow: frozen, title: "codes") + "</body></html>\n"
        return (line, [(Data(html.utf8), URL(fileURLWithPath: report))])
    }

    /// `--fsq-levels` read once, for `validate()` and the module alike: comma-separated integers ≥ 2 (spaces around
    /// each allowed) whose product is a codebook size the library takes; nil without the option.
    func fsqLevelValues() throws -> [Int]? {
        guard let levels = fsqLevels else { return nil }
        let parts = levels.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) >= 2 }) else {
            throw ValidationError("--fsq-levels '\(levels)': comma-separated integers ≥ 2, e.g. 8,5,5,5")
        }
        let values = parts.compactMap { $0 }
        guard SizeLimit.product(values) != nil else {
            throw ValidationError("--fsq-levels '\(levels)': the codebook size (their product) exceeds \(SizeLimit.maxElements) codes")
        }
        return values
    }

    /// `--freeze-converged TOL[,PATIENCE]` as a policy.
    func convergedPolicy() throws -> ConvergedPolicy {
        let parts = (freezeConverged ?? "").split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard (1...2).contains(parts.count), let tol = Float(parts[0]), tol.isFinite, tol >= 0 else {
            throw ValidationError("--freeze-converged '\(freezeConverged ?? "")': TOL[,PATIENCE], e.g. 0.001,5")
        }
        let patience = parts.count == 2 ? Int(parts[1]) : 5
        guard let patience, patience >= 1 else { throw ValidationError("--freeze-converged '\(freezeConverged ?? "")': PATIENCE must be an integer ≥ 1") }
        return .converged(tolerance: tol, patience: patience)
    }

    /// Applies --freeze-dims, --freeze-subspace and --freeze-converged to the selected codebooks.
    func applyPartialFreezes(_ module: any Quantizer) throws {
        guard freezeDims != nil || freezeSubspace != nil || freezeConverged != nil else { return }
        let books = try selectCodebooks(module, layer: layer, head: head)
        if let freezeDims {
            let spec = try CodeSpec(freezeDims, option: "--freeze-dims")
            for (book, h) in books {
                let dims = try spec.codes(below: book.dim)
                do { try book.freeze(dimensions: dims, head: h) } catch let e as CodebookError { throw ValidationError("--freeze-dims: \(e)") }
            }
        }
        if let freezeSubspace {
            let basis = try DataFiles.read(freezeSubspace).asFloat
            for (book, h) in books {
                do { try book.freeze(subspace: basis, head: h) } catch let e as CodebookError { throw CLIError("--freeze-subspace \(freezeSubspace): \(e)") }
            }
        }
        if freezeConverged != nil {
            let policy = try convergedPolicy()
            for (book, _) in books { try book.setFreezePolicy(policy) }
        }
    }

    /// One training step on `[1, b, d]` through ``Quantizer/forward(vectors:)`` (EMA codebooks learn in the
    /// forward): the loss and the first layer's indices.
    func trainStep(_ m: any Quantizer, _ batch: Tensor) -> (Float, [Int]) {
        let o = m.forward(vectors: batch)
        return (o.loss.item, firstLayer(o.indices, of: m, batch: batch))
    }

    /// One step for a quantizer with parameters learned by gradient: the forward (EMA codebooks learn in it),
    /// then Adam on `mse(quantized, batch) + loss` — the reference examples' objective without a network.
    func gradientStep(_ m: any Quantizer, _ batch: Tensor, _ optimizer: Adam) throws -> (Float, [Int]) {
        let o = m.forward(vectors: batch)
        guard o.quantized.shape == batch.shape else {
            throw CLIError("vq train: \(m.kindName)'s output \(o.quantized.shape) is not in the input's space \(batch.shape): nothing to reconstruct")
        }
        let loss = Loss.mse(o.quantized, batch) + o.loss
        m.zeroGradients()
        loss.backward()
        optimizer.step()
        guard loss.item.isFinite else { throw CLIError("vq train: the loss is \(loss.item) (diverged): try a smaller --lr") }
        return (loss.item, firstLayer(o.indices, of: m, batch: batch))
    }

    /// The first layer's indices of a step (the first group's for grouped stacks).
    func firstLayer(_ idx: IndexTensor, of m: any Quantizer, batch: Tensor) -> [Int] {
        guard idx.rank > batch.rank - 1 + m.indexBatchAxis else { return idx.scalars }
        // Trailing layer axis: every q-th index of the first group.
        let q = idx.shape.last!, rows = batch.count / batch.shape.last!
        return (0..<rows).map { idx.scalars[$0 * q] }
    }

    func usageCounts(_ m: any Quantizer, _ x: Tensor) -> [Int] {
        let idx = m.encode(x)
        let per = idx.rank == 2 ? idx.shape[1] : 1
        var counts = [Int](repeating: 0, count: m.codebookSizes.max() ?? 1)
        for (i, v) in idx.scalars.enumerated() where i % per == 0 && v >= 0 && v < counts.count { counts[v] += 1 }
        return counts
    }
}
