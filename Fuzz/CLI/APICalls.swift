// Structured fuzzing of the library's throwing API: every quantizer of the registry (and the checkpoint fixtures'
// variants), trained a step with frozen codes, components and a subspace, then one to six calls with arguments drawn
// from pools of edge values — codes, heads and dimensions out of range, bases, codes and data of wrong shapes or with
// NaN, ±∞ and huge values, index tensors with -2, Int.max, masks and weights of the wrong size, state dictionaries
// with keys dropped, added or reshaped. Each call must succeed or throw; a call that throws must change nothing (the
// whole state, bit for bit); a call that succeeds must keep every frozen element bit-identical (except the calls that
// unfreeze or replace the state); the quantizer must still train, encode and decode afterwards.
import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// Everything a call may change: every tensor of the state (bit patterns), which parameters are frozen, the mode.
struct ModuleSnapshot: Equatable {
    let state: [String: [UInt32]]
    let frozen: [String: Bool]
    let training: Bool

    init(_ m: Module) {
        state = m.stateDict().mapValues { $0.scalars.map(\.bitPattern) }
        frozen = Dictionary(m.namedParameters().map { ($0.0, $0.1.isFrozen) }, uniquingKeysWith: { a, _ in a })
        training = m.isTraining
    }

    /// The keys whose values differ from `other`'s (for the failure message).
    func changed(from other: ModuleSnapshot) -> [String] {
        Set(state.keys).union(other.state.keys).filter { state[$0] != other.state[$0] }.sorted()
            + Set(frozen.keys).union(other.frozen.keys).filter { frozen[$0] != other.frozen[$0] }.map { "frozen flag of \($0)" }.sorted()
            + (training == other.training ? [] : ["the training mode"])
    }
}

/// The frozen elements of every learned codebook (`embed`'s element mask and those elements' bits).
func frozenElements(_ q: any Quantizer) -> [[UInt32?]] {
    q.learnedCodebooks.map { book in
        let v = book.embed.value.scalars
        guard let mask = book.embed.frozenElementMask else { return [] }
        return zip(v, mask).map { $1 ? $0.bitPattern : nil }
    }
}

/// The fuzzer's own checks: `fatalError` keeps the message in a release build (a `precondition`'s is dropped).
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() { fatalError(message()) }
}

/// One seeded generator of API calls and their arguments.
struct CallMaker {
    var rng: SeededGenerator
    mutating func pick<T>(_ a: [T]) -> T { a[rng.nextInt(below: a.count)] }
    mutating func chance(_ n: Int) -> Bool { rng.nextInt(below: n) == 0 }

    /// A code (or dimension) index: mostly valid, often at or past either end.
    mutating func index(below n: Int) -> Int {
        chance(2) ? rng.nextInt(below: max(n, 1)) : pick([0, max(n - 1, 0), n, n + 1, -1, -2, Int.max, Int.min, Int(Int32.max)])
    }
    mutating func indices(below n: Int) -> [Int] { (0..<rng.nextInt(below: 4)).map { _ in index(below: n) } }
    mutating func head(of h: Int) -> Int? { pick([nil, 0, h - 1, h, -1, Int.max]) }
    mutating func count() -> Int? { pick([nil, 1, 2, 3, 0, -1, Int.min]) }

    /// A shape near `shape`: itself (mostly), an axis off by one or zero, an axis dropped or added.
    mutating func near(_ shape: [Int]) -> [Int] {
        var s = shape
        switch rng.nextInt(below: 8) {
        case 0 where !s.isEmpty: s[rng.nextInt(below: s.count)] += 1
        case 1 where !s.isEmpty: s[rng.nextInt(below: s.count)] = 0
        case 2 where s.count > 1: s.removeLast()
        case 3: s.insert(1, at: 0)
        default: break
        }
        return s
    }

    /// Values of `shape`: normal, sometimes with extremes or all zero.
    mutating func tensor(_ shape: [Int]) -> Tensor {
        var t = Tensor.randomNormal(shape, using: &rng)
        if chance(3) { t = withExtremes(t, rng: &rng) }
        if chance(12) { t = Tensor.zeros(shape) }
        return t
    }

    /// A `[r, d]` basis: orthonormal unit rows (mostly), or random, repeated, zero, non-finite or of another width.
    mutating func basis(dim d: Int) -> Tensor {
        let r = pick([1, 1, 2, d, d + 1, 0])
        let width = chance(6) ? pick([d + 1, max(d - 1, 0)]) : d
        var s = [Float](repeating: 0, count: r * width)
        let axes = rng.permutation(width)
        for i in 0..<r where width > 0 { s[i * width + axes[i % width]] = 1 }
        switch rng.nextInt(below: 6) {
        case 0: return tensor([r, width])
        case 1 where !s.isEmpty: s[rng.nextInt(below: s.count)] = extremeValues[rng.nextInt(below: extremeValues.count)]
        case 2 where !s.isEmpty: s = s.map { $0 * 2 }
        default: break
        }
        return Tensor(s, shape: [r, width])
    }

    /// Indices of `shape` for codebooks of `size` codes: valid, with one to three edge values set.
    mutating func indexTensor(_ shape: [Int], size: Int) -> IndexTensor {
        let n = shape.reduce(1, *)
        var s = (0..<n).map { _ in rng.nextInt(below: max(size, 1)) }
        if n > 0 && !chance(3) { for _ in 0...rng.nextInt(below: 3) { s[rng.nextInt(below: n)] = index(below: size) } }
        return IndexTensor(s, shape: shape)
    }
}

/// How many calls of each kind succeeded and threw (printed at the end: a fuzzer whose calls all throw, or never
/// do, tests less than it seems).
nonisolated(unsafe) var callTally: [String: (ok: Int, threw: Int)] = [:]

/// Which calls may unfreeze or replace frozen elements when they succeed (the rest must keep them).
enum CallEffect { case keepsFrozen, mayRelease, newModule }

/// Runs one case: a quantizer of `configs` prepared as the checkpoint fixtures are, one to six random calls, and a
/// last training step, encode and decode. Traps (preconditions) are the failures the fuzzer looks for; the two state
/// properties are checked with `precondition` too, so they stop the run with the call named.
/// `VQ_FUZZ_TRACE=N` prints the quantizer and every call of case N (to replay a failure).
nonisolated(unsafe) var traceCase = false

func runCalls(_ configs: [ModuleConfig], rng: inout SeededGenerator, scratch: URL) {
    var maker = CallMaker(rng: SeededGenerator(seed: rng.next()))
    let config = configs[rng.nextInt(below: configs.count)]
    if traceCase { FileHandle.standardError.write(Data("case: \(config.module) \(config.kwargs)\n".utf8)) }
    guard let q = CheckpointFixture.prepared(config, rng: &rng) else { return }
    let other = CheckpointFixture.prepared(configs[rng.nextInt(below: configs.count)], rng: &rng)
    for _ in 0...rng.nextInt(below: 6) {
        let before = ModuleSnapshot(q), frozenBefore = frozenElements(q)
        var (name, effect, call) = randomCall(q, other: other, maker: &maker, scratch: scratch)
        for _ in 0..<8 where name == "nothing" { (name, effect, call) = randomCall(q, other: other, maker: &maker, scratch: scratch) }
        let kind = String(name.prefix { $0 != "(" && $0 != " " })
        if traceCase { FileHandle.standardError.write(Data("call: \(name)\n".utf8)) }
        do {
            try call()
            callTally[kind, default: (0, 0)].ok += 1
            // No call that succeeds may leave NaN or ±∞ in the state (a checkpoint of it could not be saved or loaded).
            let poisoned = (q as Module).nonFiniteValues()
            require(poisoned.isEmpty, "vq-fuzz: \(config.module): \(name) succeeded and left non-finite values in \(poisoned)")
            if effect == .keepsFrozen {
                let after = frozenElements(q)
                require(after.count == frozenBefore.count && zip(after, frozenBefore).allSatisfy { a, b in
                    b.isEmpty || (a.count == b.count && zip(a, b).allSatisfy { $1 == nil || $0 == $1 })
                }, "vq-fuzz: \(config.module): \(name) succeeded and moved a frozen element")
            }
        } catch {
            callTally[kind, default: (0, 0)].threw += 1
            if ProcessInfo.processInfo.environment["VQ_FUZZ_SHOW"] == kind { print("\(name): \(error)") }
            let after = ModuleSnapshot(q)
            require(after == before, "vq-fuzz: \(config.module): \(name) threw (\(error)) but changed \(after.changed(from: before))")
        }
    }
    // Still usable: a training step, then encoding and decoding (what the calls left must be a working quantizer).
    let unit = q.sequenceShape ?? [5]
    let x = Tensor.randomNormal([2] + unit + [q.inputDim], using: &rng)
    q.train()
    _ = q.forward(vectors: x.reshaped([2, unit.reduce(1, *), q.inputDim]))
    q.eval()
    if q.isInitialised { _ = try? q.decode(q.encode(x)) }
}

/// One random call on `q` (its name, what it may do to frozen elements, and the call).
func randomCall(_ q: any Quantizer, other: (any Quantizer)?, maker m: inout CallMaker, scratch: URL) -> (String, CallEffect, () throws -> Void) {
    let books = q.learnedCodebooks
    let book = books.isEmpty ? nil : books[m.rng.nextInt(below: books.count)]
    let vq = q as? VectorQuantizer
    switch m.rng.nextInt(below: 20) {
    case 0 where book != nil:
        let (codes, head) = (m.indices(below: book!.codebookSize), m.head(of: book!.numCodebooks))
        return ("freeze(codes: \(codes), head: \(String(describing: head)))", .keepsFrozen, { try book!.freeze(codes: codes, head: head) })
    case 1 where book != nil:
        let (codes, head) = (m.indices(below: book!.codebookSize), m.head(of: book!.numCodebooks))
        return ("unfreeze(codes: \(codes), head: \(String(describing: head)))", .mayRelease, { try book!.unfreeze(codes: codes, head: head) })
    case 2 where book != nil:
        let dims = m.indices(below: book!.dim)
        let codes = m.chance(2) ? nil : m.indices(below: book!.codebookSize)
        let head = m.head(of: book!.numCodebooks)
        if m.chance(3) {
            return ("unfreeze(dimensions: \(dims), codes: \(String(describing: codes)))", .mayRelease, {
                try book!.unfreeze(dimensions: dims, codes: codes, head: head)
            })
        }
        return ("freeze(dimensions: \(dims), codes: \(String(describing: codes)), head: \(String(describing: head)))", .keepsFrozen, {
            try book!.freeze(dimensions: dims, codes: codes, head: head)
        })
    case 3 where book != nil:
        let (basis, head) = (m.basis(dim: book!.dim), m.head(of: book!.numCodebooks))
        return ("freeze(subspace: \(basis.shape) \(basis.scalars.prefix(8)), head: \(String(describing: head)))", .keepsFrozen, {
            try book!.freeze(subspace: basis, head: head)
        })
    case 4 where book != nil:
        let policies: [any FreezePolicy] = [
            // (a negative or NaN tolerance, a patience below 1 are preconditions of the initialiser: Swift code's errors)
            ConvergedPolicy(tolerance: m.pick([0, 0.5, 1e30, .infinity]), patience: m.pick([1, 2, Int.max])),
            AfterStepPolicy(step: m.pick([0, 1, 2, -1, Int.max]), codes: m.chance(2) ? nil : m.indices(below: book!.codebookSize)),
            UsagePolicy(atLeast: m.pick([0, 0.5, 1e30, .nan, -1])),
        ]
        let policy = m.pick(policies)
        return ("setFreezePolicy(\(policy))", .keepsFrozen, { try book!.setFreezePolicy(policy) })
    case 5 where book != nil:
        let t = m.tensor(m.near(book!.embed.shape))
        return ("codebook.setCodes(\(t.shape))", .keepsFrozen, { try book!.setCodes(t) })
    case 6 where vq != nil:
        let t = m.tensor(m.near(vq!.codes.shape))
        return ("setCodes(\(t.shape))", .keepsFrozen, { try vq!.setCodes(t) })
    case 7 where book != nil:
        let codes = m.indices(below: book!.codebookSize)
        let x = m.tensor(m.near([book!.numCodebooks, m.pick([1, 4, 16]), book!.dim]))
        let (iterations, perBatch) = (m.count(), m.count())
        return ("fitCodes(\(codes), to: \(x.shape), iterations: \(String(describing: iterations)), countsPerBatch: \(String(describing: perBatch)))",
                .keepsFrozen, { try book!.fitCodes(codes, to: x, iterations: iterations, countsPerBatch: perBatch) })
    case 8 where vq != nil:
        let x = m.tensor(m.near([2, 4, vq!.inputDim]))
        return ("expireCodes(\(x.shape))", .keepsFrozen, { try vq!.expireCodes(x) })
    case 9 where vq != nil:
        let v = vq!
        let x = m.tensor(m.near([2, 3, v.inputDim]))
        let heads = v.heads
        let indices = m.indexTensor(m.near(heads > 1 ? [2, 3, heads] : [2, 3]), size: v.codebookSize)
        let mask: TokenMask? = m.chance(2) ? nil : TokenMask((0..<m.pick([6, 5, 0])).map { _ in m.chance(2) })
        let weight: EMAUpdateWeight? = m.pick([nil, .scalar(m.pick([0, 0.5, 1, -1, .nan, .infinity])),
                                               .perCode(m.tensor(m.near([v.codebook.numCodebooks, v.codebookSize])))])
        return ("updateIndices(\(x.shape), \(indices.shape) \(indices.scalars.prefix(8)), mask: \(mask?.count ?? -1))", .keepsFrozen, {
            try v.updateIndices(x, indices, mask: mask, emaUpdateWeight: weight)
        })
    case 10 where vq != nil:
        let v = vq!
        let size = m.pick([v.codebookSize + 1, v.codebookSize * 2, v.codebookSize, 0, -1])
        let data: Tensor? = m.chance(3) ? nil : m.tensor(m.near([m.pick([1, 8, 40]), v.inputDim]))
        let perBatch = m.count()
        let probe = Tensor.randomNormal([1, 4, v.inputDim], using: &m.rng)
        // Growing makes a new quantizer: this one must not change at all, whether it throws or not.
        return ("expanded(toCodebookSize: \(size), data: \(data?.shape ?? []), countsPerBatch: \(String(describing: perBatch)))", .keepsFrozen, {
            let before = ModuleSnapshot(v)
            let grown = try? v.expanded(toCodebookSize: size, fittingNewCodesTo: data, countsPerBatch: perBatch)
            require(ModuleSnapshot(v) == before, "vq-fuzz: expanded(toCodebookSize:) changed the quantizer it grows")
            if let grown {
                for c in 0..<v.codebookSize { require(grown.codebook.isFrozen(code: c), "vq-fuzz: a grown codebook's old code \(c) is not frozen") }
                grown.train()
                _ = grown.forward(vectors: probe)
            }
        })
    case 11:
        let names = (q as Module).namedParameters().map(\.0)
        let keys: [String]? = m.chance(4) ? nil : (0..<m.rng.nextInt(below: 3)).map { _ in names.isEmpty || m.chance(4) ? "no.such.key" : m.pick(names) }
        let strict = m.chance(2)
        if m.chance(2) { return ("freeze(keys: \(String(describing: keys)), strict: \(strict))", .keepsFrozen, { try (q as Module).freeze(keys: keys, strict: strict) }) }
        return ("unfreeze(keys: \(String(describing: keys)), strict: \(strict))", .mayRelease, { try (q as Module).unfreeze(keys: keys, strict: strict) })
    case 12, 13:
        // A state dictionary as a program might hand it: this module's or another's, a key dropped, added, reshaped or
        // given extreme values.
        let fromOther = m.chance(4)
        var state = (fromOther ? (other ?? q) : q).stateDict()
        let keys = state.keys.sorted()
        var change = fromOther && other != nil ? "another quantizer's" : "its own"
        if !keys.isEmpty {
            let k = m.pick(keys)
            switch m.rng.nextInt(below: 5) {
            case 0: state[k] = nil; change += ", \(k) dropped"
            case 1: state["extra.weight"] = Tensor.zeros([2]); change += ", a key added"
            case 2: state[k] = Tensor.zeros(m.near(state[k]!.shape)); change += ", \(k) zeros \(state[k]!.shape)"
            case 3:
                state[k] = withExtremes(state[k]!, rng: &m.rng)
                change += ", \(k) with extremes \(state[k]!.scalars.filter { !$0.isFinite || abs($0) > 1e6 }.prefix(4))"
            default: break
            }
        }
        let strict = !m.chance(4)
        return ("load(stateDict: \(state.count) tensors, \(change), strict: \(strict))", .newModule, { try (q as Module).load(stateDict: state, strict: strict) })
    case 14:
        let shape = m.near(q.isInitialised ? q.encode(Tensor.randomNormal([1] + (q.sequenceShape ?? [3]) + [q.inputDim], using: &m.rng)).shape : [1, 3])
        let indices = m.indexTensor(shape, size: q.codebookSizes.max() ?? 1)
        return ("decode(\(indices.shape) \(indices.scalars.prefix(8)))", .keepsFrozen, { _ = try q.decode(indices) })
    case 15 where other != nil || m.chance(2):
        let probe = m.tensor(m.near([m.pick([1, 6]), q.inputDim]))
        let new = m.chance(2) ? q : (other ?? q)
        return ("StageComparison(old: \(type(of: q)), new: \(type(of: new)), probe: \(probe.shape))", .keepsFrozen, {
            _ = try StageComparison(old: q, new: new, probe: probe)
        })
    case 16:
        let url = m.chance(2) ? scratch.appendingPathComponent("no-such-folder/q.safetensors") : scratch.appendingPathComponent("api.safetensors")
        return ("QuantizerCheckpoint.save(to: \(url.lastPathComponent))", .keepsFrozen, {
            try QuantizerCheckpoint.save(q, to: url)
            let (loaded, _) = try QuantizerCheckpoint.loadQuantizer(url)
            require(ModuleSnapshot(loaded).state == ModuleSnapshot(q).state, "vq-fuzz: a saved checkpoint loads with other values")
        })
    case 17:
        var states = (q as Module).randomStates()
        if let k = states.keys.first, m.chance(2) { states[k] = nil } else if m.chance(2) { states["no.such.module"] = SeededGenerator(seed: 1) }
        return ("setRandomStates(\(states.keys.sorted()))", .keepsFrozen, { try (q as Module).setRandomStates(states) })
    case 18 where q is FSP:
        let f = q as! FSP
        let level = m.indexTensor(m.near([3, f.codebookDim]), size: 4)
        return ("indices(fromLevelIndices: \(level.shape) \(level.scalars.prefix(8)))", .keepsFrozen, { _ = try f.indices(fromLevelIndices: level) })
    case 19:
        // Sometimes an empty batch: no sequence, or (where sequences have no fixed length) sequences of no vector.
        let b = m.pick([2, 2, 2, 0]), unit = q.sequenceShape ?? [m.pick([3, 3, 3, 0])]
        let x = m.tensor([b] + unit + [q.inputDim])
        return ("forward + encode + decode on \(x.shape)", .keepsFrozen, {
            q.train()
            _ = q.forward(vectors: x.reshaped([b, unit.reduce(1, *), q.inputDim]))
            q.eval()
            // (not a call that throws: the forward has changed the state before any decoding error — NaN rows of FSQ
            // encode to -1, a random projection has no decoding)
            if q.isInitialised { _ = try? q.decode(q.encode(x)) }
        })
    default: break
    }
    return ("nothing", .keepsFrozen, {})
}
