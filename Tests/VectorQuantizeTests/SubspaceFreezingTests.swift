import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// Freezing inside codes: components (bit-identical) and general subspaces (coordinates held to rounding),
/// across every write path — EMA and recompute, dead-code expiry, k-means, setCodes, SGD with momentum,
/// Adam, AdamW — and checkpoints. Every case also checks that the free part moved.
@Suite("Freezing components and subspaces")
struct SubspaceFreezingTests {
    struct Case: CustomStringConvertible {
        let seed: UInt64
        var heads = 1, separate = false, cosine = false, threshold = 0.0, kmeans = false, optimizer: String? = nil
        var subspace = false, codeBlock = false, setCodes = false
        var description: String {
            "case \(seed): heads \(heads)\(separate ? " separate" : "")\(cosine ? " cosine" : "") dead \(threshold)\(kmeans ? " kmeans" : "")"
                + "\(optimizer.map { " learnable/\($0)" } ?? " ema")\(subspace ? " subspace" : " components")\(codeBlock ? " block" : "")\(setCodes ? " setCodes" : "")"
        }
        static func random(_ seed: UInt64) -> Case {
            var g = SeededGenerator(seed: seed &* 7919)
            var c = Case(seed: seed)
            c.heads = 1 + g.nextInt(below: 2)
            c.separate = c.heads > 1 && g.nextInt(below: 2) == 0
            c.threshold = [0, 0, 1.5, 1e6][g.nextInt(below: 4)]
            c.kmeans = g.nextInt(below: 4) == 0
            if g.nextInt(below: 3) == 0 {
                c.optimizer = TestOptimizers.names[g.nextInt(below: 3)]
            } else {
                c.cosine = g.nextInt(below: 4) == 0
            }
            c.subspace = g.nextInt(below: 2) == 0
            c.codeBlock = !c.subspace && g.nextInt(below: 2) == 0
            c.setCodes = g.nextInt(below: 4) == 0
            return c
        }
    }

    /// A random `[k, d]` basis with orthonormal rows: the first k rows of a random orthogonal matrix.
    static func basis(k: Int, d: Int, seed: UInt64) -> Tensor {
        var g = SeededGenerator(seed: seed)
        return Tensor.randomOrthogonal(d, using: &g).slice(axis: 0, 0..<k)
    }

    /// `B·e` for every code of `head`: `[c, k]` in double precision.
    static func coordinates(_ cb: Codebook, _ basis: Tensor, head: Int) -> [Double] {
        let (c, d, k) = (cb.codebookSize, cb.dim, basis.shape[0])
        let e = cb.embed.value.scalars, b = basis.scalars
        var out = [Double](repeating: 0, count: c * k)
        for code in 0..<c {
            for i in 0..<k {
                var v = 0.0
                for j in 0..<d { v += Double(b[i * d + j]) * Double(e[(head * c + code) * d + j]) }
                out[code * k + i] = v
            }
        }
        return out
    }

    static let batches = Array(0..<25)

    @Test("frozen components stay bit-identical, frozen subspace coordinates within 1e-6, the rest learns", arguments: batches)
    func randomCases(_ batch: Int) throws {
        for k in 0..<44 { try run(Case.random(UInt64(batch * 44 + k + 1))) }
    }

    func run(_ s: Case) throws {
        let d = 6, size = 10
        var config = VectorQuantizerConfiguration(dim: d * s.heads, codebookSize: size)
        config.codebookDim = d
        config.heads = s.heads
        config.separateCodebookPerHead = s.separate
        config.useCosineSimilarity = s.cosine
        config.thresholdEMADeadCode = s.threshold
        config.kmeansInit = s.kmeans
        config.decay = 0.6
        config.seed = s.seed
        if s.optimizer != nil {
            config.learnableCodebook = true
            config.emaUpdate = false
        }
        let vq = try VectorQuantizer(config)
        let cb = vq.codebook
        var g = SeededGenerator(seed: s.seed &+ 99)
        if s.kmeans { _ = vq(TestSupport.random([2, 20, config.dim], seed: s.seed)) }  // initialise, then freeze
        // What is frozen: components (all codes, or a block of codes), or a subspace of rank 1…d−1.
        let dims = Array(g.permutation(d).prefix(1 + g.nextInt(below: d - 1))).sorted()
        let block: [Int]? = s.codeBlock ? Array(g.permutation(size).prefix(1 + g.nextInt(below: size - 1))) : nil
        let basis = Self.basis(k: 1 + g.nextInt(below: d - 1), d: d, seed: s.seed &+ 5)
        if s.subspace { try cb.freeze(subspace: basis) } else { try cb.freeze(dimensions: dims, codes: block) }
        let heldComponent: (Int, Int) -> Bool = { row, j in !s.subspace && dims.contains(j) && (block?.contains(row % size) ?? true) }
        let coordinatesBefore = (0..<cb.numCodebooks).map { Self.coordinates(cb, basis, head: $0) }
        let optimizer: Optimizer? = s.optimizer.map { TestOptimizers.make($0, vq.trainableParameters()) }
        let embed0 = cb.embed.value.scalars, avg0 = cb.embedAverage.value.scalars
        for step in 0..<4 {
            let x = TestSupport.random([2, 16, config.dim], seed: s.seed &* 100 &+ UInt64(step), std: 1 + Float(step) * 0.4) + Float(step) * 0.2
            let out = vq(s.optimizer != nil ? x.requiringGradient() : x)
            if let optimizer {
                optimizer.zeroGradients()
                (out.loss + out.quantized.sum() * 0.01).backward()
                optimizer.step()
            }
            if s.setCodes && step == 1 { try vq.setCodes(TestSupport.random(vq.codes.shape, seed: s.seed &+ 7)) }
        }
        let e = cb.embed.value.scalars, avg = cb.embedAverage.value.scalars
        var freeMoved = false
        for r in 0..<cb.numCodebooks * size {
            for j in 0..<d {
                let i = r * d + j
                if heldComponent(r, j) {
                    #expect(e[i].bitPattern == embed0[i].bitPattern && avg[i].bitPattern == avg0[i].bitPattern,
                            "\(s): frozen component \(j) of code \(r) moved")
                } else if e[i] != embed0[i] {
                    freeMoved = true
                }
            }
        }
        if s.subspace {
            for h in 0..<cb.numCodebooks {
                let now = Self.coordinates(cb, basis, head: h), before = coordinatesBefore[h]
                for code in 0..<size {
                    let norm = (0..<d).reduce(0.0) { $0 + Double(e[(h * size + code) * d + $1] * e[(h * size + code) * d + $1]) }.squareRoot()
                    let k = basis.shape[0]
                    let drift = (0..<k).map { abs(now[code * k + $0] - before[code * k + $0]) }.max()!
                    #expect(drift <= 1e-6 * Swift.max(norm, 1), "\(s): code \(code) of head \(h) drifted \(drift) in the frozen subspace")
                }
            }
        }
        #expect(freeMoved, "\(s): nothing free moved (the held check would be vacuous)")
        // The optimizer never wrote the state of a frozen component (momentum / moments stay at zero).
        let state = TestOptimizers.state(optimizer, cb.embed)
        if let state {
            let n = cb.embed.value.count
            for offset in stride(from: 0, to: state.count, by: n) {
                for r in 0..<cb.numCodebooks * size {
                    for j in 0..<d where heldComponent(r, j) { #expect(state[offset + r * d + j] == 0, "\(s): optimizer state of a frozen component") }
                }
            }
            #expect(state.contains { $0 != 0 }, "\(s): the optimizer did work")
        }
        // Checkpoints keep the partial freezes.
        let copy = try VectorQuantizer(config)
        try copy.load(stateDict: vq.stateDict())
        #expect(copy.codebook.frozenComponents.value == cb.frozenComponents.value)
        #expect(copy.codebook.frozenSubspaceProjector.value == cb.frozenSubspaceProjector.value)
    }

    @Test("the drift of a frozen subspace does not grow over 1,000 steps")
    func driftOverSteps() throws {
        var config = VectorQuantizerConfiguration(dim: 16, codebookSize: 32)
        config.learnableCodebook = true
        config.emaUpdate = false
        let vq = try VectorQuantizer(config)
        let basis = Self.basis(k: 5, d: 16, seed: 3)
        try vq.codebook.freeze(subspace: basis)
        let before = Self.coordinates(vq.codebook, basis, head: 0)
        let opt = Adam(parameters: vq.trainableParameters(), learningRate: 0.02)
        var drifts: [Double] = []
        let start = vq.codebook.embed.value
        for step in 0..<1000 {
            opt.zeroGradients()
            let out = vq(TestSupport.random([1, 32, 16], seed: UInt64(step), std: 2).requiringGradient())
            (out.loss + out.quantized.sum() * 0.01).backward()
            opt.step()
            if step % 100 == 99 {
                let now = Self.coordinates(vq.codebook, basis, head: 0)
                let e = vq.codebook.embed.value.scalars
                drifts.append((0..<32).map { c -> Double in
                    let norm = (0..<16).reduce(0.0) { $0 + Double(e[c * 16 + $1] * e[c * 16 + $1]) }.squareRoot()
                    return (0..<5).map { abs(now[c * 5 + $0] - before[c * 5 + $0]) }.max()! / Swift.max(norm, 1e-12)
                }.max()!)
            }
        }
        #expect(drifts.allSatisfy { $0 <= 1e-6 }, "relative drift per 100 steps: \(drifts)")
        // Not growing: the last is no worse than a few roundings above the first.
        #expect(drifts.last! <= Swift.max(drifts.first! * 4, 2e-7), "drift grows: \(drifts)")
        #expect(TestSupport.maxAbsDiff(vq.codebook.embed.value, start) > 0.1, "the complement must learn")
    }

    @Test("components frozen in one layer of one group of a grouped residual stack")
    func groupedLayer() throws {
        var c = ResidualVQConfiguration(dim: 4, numQuantizers: 2, codebookSize: 8)
        c.layer.thresholdEMADeadCode = 2
        let g = try GroupedResidualVQ(.init(dim: 8, groups: 2, residual: c))
        let target = g.rvqs[1].layers[0].codebook
        try target.freeze(dimensions: [0, 2])
        let before = target.embed.value.scalars, otherBefore = g.rvqs[0].layers[0].codebook.embed.value
        for s in 0..<5 { _ = g(TestSupport.random([2, 20, 8], seed: 300 + UInt64(s), std: 2)) }
        let after = target.embed.value.scalars
        for code in 0..<8 {
            for j in [0, 2] { #expect(after[code * 4 + j].bitPattern == before[code * 4 + j].bitPattern) }
        }
        #expect((0..<8).contains { after[$0 * 4 + 1] != before[$0 * 4 + 1] }, "free components of the same layer learn")
        #expect(g.rvqs[0].layers[0].codebook.embed.value != otherBefore, "the other group learns")
    }

    @Test("staged: components and a subspace frozen after training steps (and through the buffer) hold from the next step")
    func frozenBetweenSteps() throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.decay = 0.5
        let vq = try VectorQuantizer(c)
        let cb = vq.codebook
        func step(_ s: Int) { _ = vq(TestSupport.random([2, 32, 4], seed: 700 + UInt64(s), std: 2)) }
        for s in 0..<3 { step(s) }      // the partial-freeze summary is computed (nothing frozen) and kept
        try cb.freeze(dimensions: [1])
        var before = cb.embed.value.scalars
        for s in 3..<6 { step(s) }
        var after = cb.embed.value.scalars
        #expect((0..<8).allSatisfy { after[$0 * 4 + 1].bitPattern == before[$0 * 4 + 1].bitPattern })
        #expect((0..<8).contains { after[$0 * 4] != before[$0 * 4] }, "the free components learn")
        // Written straight into the buffer (as a checkpoint load does): dimension 3 of code 5 only.
        var m = [Float](repeating: 0, count: 32)
        m[5 * 4 + 3] = 1
        cb.frozenComponents.value = Tensor(m, shape: cb.frozenComponents.shape)
        before = cb.embed.value.scalars
        for s in 6..<9 { step(s) }
        after = cb.embed.value.scalars
        #expect(after[5 * 4 + 3].bitPattern == before[5 * 4 + 3].bitPattern)
        #expect((0..<8).contains { after[$0 * 4 + 1] != before[$0 * 4 + 1] }, "dimension 1 is free again")
        // A subspace frozen after training (components thawed through the buffer: a held component would move the
        // coordinates): its coordinates hold (to rounding), the codes still move.
        cb.frozenComponents.value = Tensor.zeros(cb.frozenComponents.shape)
        let b = Self.basis(k: 1, d: 4, seed: 9)
        try cb.freeze(subspace: b)
        let coords = Self.coordinates(cb, b, head: 0)
        before = cb.embed.value.scalars
        for s in 9..<12 { step(s) }
        let held = zip(Self.coordinates(cb, b, head: 0), coords).map { abs($0 - $1) }.max() ?? 0
        #expect(held < 1e-6)
        #expect(cb.embed.value.scalars != before)
    }

    @Test("bad subspaces and components are refused")
    func refused() throws {
        let cb = Codebook(Codebook.Configuration(dim: 4, codebookSize: 8))
        #expect(throws: CodebookError.self) { try cb.freeze(subspace: Tensor([1, 1, 0, 0], shape: [1, 4])) }
        #expect(throws: CodebookError.self) { try cb.freeze(subspace: Tensor.zeros([2, 3])) }
        #expect(throws: CodebookError.dimensionOutOfRange(dimension: 4, dim: 4)) { try cb.freeze(dimensions: [4]) }
        #expect(cb.frozenComponentCount == 0)
        try cb.freeze(dimensions: 0..<2)
        #expect(cb.frozenDimensions() == [0, 1] && cb.frozenComponentCount == 16)
        try cb.freeze(subspace: Tensor([0, 0, 1, 0], shape: [1, 4]))
        #expect(cb.frozenSubspaceRank() == 1)
        cb.unfreezeSubspace()
        #expect(cb.frozenSubspaceRank() == 0)
    }
}

/// Freezing policies: the built-ins and one written here, as a user would.
@Suite("Freezing policies")
struct FreezePolicyTests {
    /// Training that cycles through `cycle` fixed batches (1: the same batch, so the codes settle).
    func trained(_ policy: some FreezePolicy, steps: Int = 30, seed: UInt64 = 1, cycle: Int = 5) throws -> VectorQuantizer {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.decay = 0.5
        let vq = try VectorQuantizer(c)
        try vq.codebook.setFreezePolicy(policy)
        for s in 0..<steps { _ = vq(TestSupport.random([2, 32, 4], seed: seed * 1000 + UInt64(s % cycle))) }
        return vq
    }

    @Test("converged codes freeze, with their step recorded, and then stay exactly")
    func converged() throws {
        let vq = try trained(.converged(tolerance: 0.05, patience: 3), steps: 40, cycle: 1)
        let frozen = vq.codebook.policyFrozenCodes()
        #expect(!frozen.isEmpty, "on a repeated batch the used codes settle")
        #expect(frozen.allSatisfy { $0.step >= 3 })
        #expect(Set(frozen.map(\.code)).isSubset(of: Set(vq.codebook.frozenCodeIndices())))
        let held = CodebookBits(vq.codebook)
        for s in 0..<5 { _ = vq(TestSupport.random([2, 32, 4], seed: 9000 + UInt64(s), std: 3)) }
        let moved = CodebookBits(vq.codebook).changedCodes(held, dim: 4)
        #expect(moved.isDisjoint(with: Set(frozen.map(\.code))))
        // A strict tolerance freezes nothing in the same run.
        #expect(try trained(.converged(tolerance: 0, patience: 3), steps: 40, cycle: 1).codebook.policyFrozenCodes().isEmpty)
    }

    @Test("afterStep freezes every code at the step; usage freezes busy codes; either combines")
    func builtins() throws {
        let after = try trained(.afterStep(5), steps: 10)
        #expect(after.codebook.frozenCodeIndices() == Array(0..<8))
        #expect(after.codebook.policyFrozenCodes().allSatisfy { $0.step == 5 })
        let busy = try trained(.usage(atLeast: 12), steps: 10)
        let cs = busy.codebook.clusterSize.value.scalars
        for (code, _) in busy.codebook.policyFrozenCodes() { #expect(cs[code] >= 12 || busy.codebook.isFrozen(code: code)) }
        let either = try trained(UsagePolicy(atLeast: 1e9).or(.afterStep(7)), steps: 8)
        #expect(either.codebook.policyFrozenCodes().allSatisfy { $0.step == 7 } && either.codebook.frozenCodeIndices().count == 8)
    }

    /// A policy written by a user: hold the two codes that moved most in each update (weight 0 for this
    /// update only), and freeze code 0 for good at update 4.
    struct CalmTheRestless: FreezePolicy {
        var seen: [Int] = []
        mutating func decide(_ c: FreezeContext) -> FreezeDecision {
            seen.append(c.step)
            let restless = c.movement.indices.sorted { c.movement[$0] > c.movement[$1] }.prefix(2)
            var w = [Float](repeating: 1, count: c.movement.count)
            for i in restless { w[i] = 0 }
            return FreezeDecision(freeze: c.step == 4 ? [0] : [], weights: w)
        }
    }

    @Test("a custom policy: weights hold codes for one update, freezes persist, and the policy keeps its state")
    func custom() throws {
        var c = VectorQuantizerConfiguration(dim: 4, codebookSize: 8)
        c.decay = 0.5
        let vq = try VectorQuantizer(c)
        try vq.codebook.setFreezePolicy(CalmTheRestless())
        for s in 0..<6 {
            let before = CodebookBits(vq.codebook)
            _ = vq(TestSupport.random([2, 32, 4], seed: 500 + UInt64(s)))
            let changed = CodebookBits(vq.codebook).changedCodes(before, dim: 4)
            #expect(changed.count <= 8 - 2, "update \(s + 1): two codes are held")
        }
        #expect(vq.codebook.policyFrozenCodes().map(\.code) == [0] && vq.codebook.policyFrozenCodes()[0].step == 4)
        #expect((vq.codebook.freezePolicy as? CalmTheRestless)?.seen == [1, 2, 3, 4, 5, 6])
        // Saved and shown: the step survives a checkpoint.
        let copy = try VectorQuantizer(c)
        try copy.load(stateDict: vq.stateDict())
        #expect(copy.codebook.policyFrozenCodes().map(\.step) == [4])
    }

    @Test("policies are deterministic and bit-identical on 1 and 2 threads")
    func threads() throws {
        let one = try Threads.with(1) { try trained(.converged(tolerance: 0.05, patience: 2), steps: 25, seed: 3, cycle: 1) }
        let two = try Threads.with(2) { try trained(.converged(tolerance: 0.05, patience: 2), steps: 25, seed: 3, cycle: 1) }
        #expect(one.stateDict() == two.stateDict())
        #expect(!one.codebook.policyFrozenCodes().isEmpty)
    }
}
