import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// The freezing guarantee over random residual stacks: plain and grouped, shared codebooks, beam search,
/// quantize dropout, projections, dead-code thresholds 0 / small / huge, k-means, EMA and learnable
/// codebooks under SGD with momentum, Adam and AdamW — crossed with random persistent freezes (codes, whole
/// layers) and per-call freezes (`freezeCodebook`, `frozenLayers`, per-layer and per-group weights with
/// zeros, a group frozen through `perGroup`), changing from call to call.
///
/// After every call (and optimizer step) each held code's `embed`, `embed_avg`, `cluster_size` and, for a
/// learnable codebook, its optimizer state must be bit-identical, and over a case some code that was free
/// must have moved — so "held" cannot pass vacuously. 2,200 cases in 40 batches.
@Suite("Exact freezing over random residual stacks")
struct StackFreezingPropertyTests {
    struct Case: CustomStringConvertible {
        let seed: UInt64
        var groups = 1, layers = 3, codebookSize = 12, dim = 8, codebookDim: Int? = nil
        var shared = false, beam: Int? = nil, dropout = false, threshold = 0.0, kmeans = false, cosine = false
        var optimizer: String? = nil
        var description: String {
            "case \(seed): groups \(groups), \(layers) layers × \(codebookSize)\(shared ? " shared" : "")\(beam.map { " beam \($0)" } ?? "")"
                + "\(dropout ? " dropout" : "")\(codebookDim.map { " codebook_dim \($0)" } ?? "") dead \(threshold)"
                + "\(kmeans ? " kmeans" : "")\(cosine ? " cosine" : "")\(optimizer.map { " learnable/\($0)" } ?? " ema")"
        }

        static func random(_ seed: UInt64) -> Case {
            var g = SeededGenerator(seed: seed &* 0x9E37_79B9)
            var c = Case(seed: seed)
            c.groups = g.nextInt(below: 3) == 0 ? 2 : 1
            c.layers = 1 + g.nextInt(below: 3)
            c.codebookSize = [4, 8, 12][g.nextInt(below: 3)]
            c.codebookDim = g.nextInt(below: 4) == 0 ? 3 : nil
            c.shared = g.nextInt(below: 3) == 0
            c.threshold = [0, 0, 1.5, 1e6][g.nextInt(below: 4)]
            c.kmeans = g.nextInt(below: 5) == 0
            if g.nextInt(below: 4) == 0 {
                c.optimizer = TestOptimizers.names[g.nextInt(below: 3)]
            } else {
                c.cosine = g.nextInt(below: 4) == 0
                if g.nextInt(below: 3) == 0 { c.beam = 2 + g.nextInt(below: 2) }
            }
            c.dropout = c.beam == nil && c.layers > 1 && g.nextInt(below: 3) == 0
            return c
        }
    }

    static let batches = Array(0..<40)
    static let perBatch = 55

    @Test("held codes are bit-identical and free ones move", arguments: batches)
    func randomStacks(_ batch: Int) throws {
        var summary = (cases: 0, heldChecks: 0, freeMoved: 0)
        for k in 0..<Self.perBatch {
            let c = Case.random(UInt64(batch * Self.perBatch + k + 1))
            let r = try run(c)
            summary.cases += 1
            summary.heldChecks += r.held
            summary.freeMoved += r.moved
        }
        #expect(summary.cases == Self.perBatch && summary.heldChecks > 0 && summary.freeMoved > 0)
    }

    /// Runs one case; returns how many held codes were checked and how many free codes moved.
    func run(_ c: Case) throws -> (held: Int, moved: Int) {
        var config = ResidualVQConfiguration(dim: c.dim / c.groups, numQuantizers: c.layers, codebookSize: c.codebookSize)
        config.codebookDim = c.codebookDim
        config.sharedCodebook = c.shared
        config.beamSize = c.beam
        config.quantizeDropout = c.dropout
        config.layer.thresholdEMADeadCode = c.threshold
        config.layer.kmeansInit = c.kmeans
        config.layer.useCosineSimilarity = c.cosine
        config.layer.decay = 0.7
        config.layer.seed = c.seed
        if c.optimizer != nil {
            config.layer.learnableCodebook = true
            config.layer.emaUpdate = false
        }
        let stacks: [ResidualVQ]
        let grouped: GroupedResidualVQ?
        if c.groups > 1 {
            grouped = try GroupedResidualVQ(.init(dim: c.dim, groups: c.groups, residual: config))
            stacks = grouped!.rvqs
        } else {
            grouped = nil
            stacks = [try ResidualVQ(config)]
        }
        let model: Module = grouped ?? stacks[0]
        model.train()
        var g = SeededGenerator(seed: c.seed &+ 17)
        let size = c.codebookSize

        // Persistent freezes: random codes of random layers, sometimes a whole layer.
        var persistent: [ObjectIdentifier: Set<Int>] = [:]
        for rvq in stacks {
            for layer in rvq.layers {
                let cb = layer.codebook
                guard persistent[ObjectIdentifier(cb)] == nil else { continue }  // a shared codebook once
                var codes = Set<Int>()
                switch g.nextInt(below: 4) {
                case 0: codes = Set(0..<size)
                case 1, 2: codes = Set(g.permutation(size).prefix(1 + g.nextInt(below: size / 2)))
                default: break
                }
                try cb.freeze(codes: codes)
                persistent[ObjectIdentifier(cb)] = codes
            }
        }
        let optimizer: Optimizer? = c.optimizer.map { TestOptimizers.make($0, model.trainableParameters()) }
        var heldChecked = 0, moved = 0, freeExisted = false
        for step in 0..<3 {
            let x = TestSupport.random([2, 12, c.dim], seed: c.seed &* 1000 &+ UInt64(step), std: 1 + Float(step) * 0.5) + Float(step) * 0.3
            // Per-call freezes for each stack (group).
            var perGroup: [Int: ResidualVQOptions] = [:]
            var held: [ObjectIdentifier: Set<Int>] = [:]
            for (gi, rvq) in stacks.enumerated() {
                var o = ResidualVQOptions()
                o.quantizeDropoutSeed = c.seed &+ UInt64(step)
                if g.nextInt(below: 8) == 0 { o.freezeCodebook = true }
                for i in 0..<c.layers where g.nextInt(below: 4) == 0 { o.frozenLayers.insert(i) }
                var zeroWeights: [Set<Int>] = Array(repeating: [], count: c.layers)
                switch g.nextInt(below: 4) {
                case 0:
                    let ws: [EMAUpdateWeight?] = (0..<c.layers).map { i in
                        switch g.nextInt(below: 3) {
                        case 0: zeroWeights[i] = Set(0..<size); return .scalar(0)
                        case 1:
                            let w = (0..<size).map { _ in [Float(0), 0.5, 1][g.nextInt(below: 3)] }
                            zeroWeights[i] = Set(w.indices.filter { w[$0] == 0 })
                            return .perCode(Tensor(w))
                        default: return nil
                        }
                    }
                    o.emaUpdateWeights = .perLayer(ws)
                case 1:
                    let w = (0..<size).map { _ in [Float(0), 1][g.nextInt(below: 2)] }
                    let zeros = Set(w.indices.filter { w[$0] == 0 })
                    zeroWeights = Array(repeating: zeros, count: c.layers)
                    let t = Tensor(w)
                    o.emaUpdateWeights = .all(.function { _, _ in t })
                default: break
                }
                perGroup[gi] = o
                // Layers past quantize dropout's draw do not run this call: they must not change either.
                let last = ResidualStack.lastLayer(layers: c.layers, dropout: c.dropout, cutoff: 0, multipleOf: 1, seed: o.quantizeDropoutSeed!)
                let layerHeld: [Set<Int>] = (0..<c.layers).map { i in
                    let (frozen, _) = rvq.layerStep(i, o)
                    if frozen || i > last { return Set(0..<size) }
                    return c.optimizer == nil ? zeroWeights[i] : []  // weights steer EMA, not an optimizer
                }
                for (i, layer) in rvq.layers.enumerated() {
                    let id = ObjectIdentifier(layer.codebook)
                    // k-means initialisation writes the free codes of a running layer on its first call,
                    // whatever the call says (initialisation, not training).
                    let initialising = !layer.codebook.isInitialized && (c.shared || i <= last)
                    let callHeld = initialising ? [] : (c.shared ? layerHeld.dropFirst().reduce(layerHeld[0]) { $0.intersection($1) } : layerHeld[i])
                    held[id] = persistent[id]!.union(callHeld)
                }
            }
            // Snapshot, run, step, compare.
            let codebooks = Dictionary(stacks.flatMap { $0.layers.map { (ObjectIdentifier($0.codebook), $0.codebook) } }, uniquingKeysWith: { a, _ in a })
            let before = codebooks.mapValues { CodebookBits($0) }
            let stateBefore = codebooks.mapValues { TestOptimizers.state(optimizer, $0.embed) }
            var loss = Tensor(0)
            if let grouped {
                let out = grouped(x, options: perGroup[0]!, perGroup: perGroup)
                loss = out.losses.sum() + out.quantized.sum() * 0.01
            } else {
                let out = stacks[0](x, options: perGroup[0]!)
                loss = out.losses.sum() + out.quantized.sum() * 0.01
            }
            if let optimizer {
                optimizer.zeroGradients()
                if loss.requiresGradient { loss.backward() }
                optimizer.step()
            }
            for (id, cb) in codebooks {
                let changed = CodebookBits(cb).changedCodes(before[id]!, dim: cb.dim)
                let h = held[id]!
                #expect(changed.isDisjoint(with: h), "\(c), step \(step): held codes \(changed.intersection(h).sorted()) of a codebook changed")
                heldChecked += h.count
                if h.count < size { freeExisted = true }
                moved += changed.subtracting(h).count
                if let sb = stateBefore[id]!, let sa = TestOptimizers.state(optimizer, cb.embed) {
                    // Momentum, or Adam's two moments back to back: the held code's rows in each.
                    for offset in stride(from: 0, to: sb.count, by: cb.embed.value.count) {
                        for code in h {
                            let rows = (offset + code * cb.dim)..<(offset + code * cb.dim + cb.dim)
                            #expect(sb[rows].map(\.bitPattern) == sa[rows].map(\.bitPattern), "\(c), step \(step): optimizer state of held code \(code) changed")
                        }
                    }
                }
            }
        }
        if freeExisted {
            #expect(moved > 0, "\(c): no free code moved in 3 calls (the held check would be vacuous)")
        }
        // The persistent masks survive a checkpoint round trip.
        if c.seed % 10 == 0 {
            let copy: Module = c.groups > 1 ? try GroupedResidualVQ(.init(dim: c.dim, groups: c.groups, residual: config)) : try ResidualVQ(config)
            try copy.load(stateDict: model.stateDict())
            #expect(copy.stateDict() == model.stateDict())
        }
        return (heldChecked, moved)
    }
}
