import Foundation
import VQNN
import VQTensor

/// What one training stage changed: two checkpoints of the same quantizer (the second possibly grown), measured on
/// a probe set.
///
/// Per learned codebook (layer, group, head): whether every frozen code and frozen component came out bit-identical
/// (and which moved, if any), the drift of every other old code, the **token churn** — the share of probe vectors
/// whose code changed, and among the vectors whose old code was frozen, the share that moved (a new code can take
/// inputs from a frozen one even though the frozen code itself never moved) — codes used, usage perplexity
/// normalised by the codebook size, and dead codes. Over the whole quantizer: each model's reconstruction error on
/// the probe set and the share of vectors whose code tuple changed.
///
/// ```swift
/// let report = try StageComparison(old: stage1, new: stage2, probe: probe)   // probe [n, dim]
/// report.books[0].frozenMoved        // [] — the frozen codes held
/// report.books[0].frozenChurn        // share of inputs of frozen codes that went elsewhere
/// ```
public struct StageComparison: Sendable, Equatable, Codable {
    /// One codebook (one head of it) of both models.
    public struct Book: Sendable, Equatable, Codable {
        /// `codebook`, `layer 2`, `group 1 layer 0`, with ` head h` for separate codebooks per head.
        public var name: String
        public var oldSize: Int, newSize: Int
        /// Old codes frozen in either model (the stage's guarantee covers them), and those whose value changed.
        public var frozenCodes: Int
        public var frozenMoved: [Int]
        /// Frozen components of the old codes (in either model), and how many changed.
        public var frozenComponents: Int
        public var frozenComponentsMoved: Int
        /// With a frozen subspace: the largest change of an old code's coordinates there (`‖P(e_new − e_old)‖∞`).
        public var subspaceDrift: Double?
        /// The other old codes' movement `‖e_new − e_old‖`: mean and largest, and relative to the old codes' RMS norm.
        public var meanDrift: Double, maxDrift: Double, relativeMeanDrift: Double
        /// Share of probe vectors whose code changed; among vectors whose old code was frozen: share that changed,
        /// and share now taken by a new code (nil when the old model froze nothing or no probe vector went there).
        public var churn: Double?
        public var frozenChurn: Double?
        public var frozenToNew: Double?
        public var usedOld: Int?, usedNew: Int?
        public var deadOld: Int?, deadNew: Int?
        /// `exp(entropy) / codebook size` of the codes' usage on the probe set.
        public var perplexityOld: Double?, perplexityNew: Double?

        /// Every frozen code and component came out bit-identical.
        public var frozenHeld: Bool { frozenMoved.isEmpty && frozenComponentsMoved == 0 }
    }

    public var probeVectors: Int
    public var books: [Book]
    /// Share of probe vectors whose whole code (every layer and head) changed.
    public var churn: Double
    /// Mean squared error per component of `decode(encode(probe))` (nil when a model does not decode).
    public var mseOld: Double?, mseNew: Double?

    /// Parameters learned by gradient that either model froze whole (`freeze(keys:)`:
    /// projections, learnable codebooks, code transforms), and those whose value changed.
    public var frozenParameters: [String] = []
    public var frozenParametersMoved: [String] = []

    /// Whether every codebook's frozen codes and components, and every parameter frozen whole, held.
    public var frozenHeld: Bool { books.allSatisfy(\.frozenHeld) && frozenParametersMoved.isEmpty }
}

/// Why two quantizers cannot be compared.
public enum StageComparisonError: Error, Equatable, CustomStringConvertible {
    case structureDiffers(String)
    case probe(String)
    /// `"old"` or `"new"`: a k-means codebook that has not seen a training batch (encoding the probe would initialise
    /// it from the probe — a comparison of something that was never trained, and a change to the quantizer).
    case notInitialised(String)

    public var description: String {
        switch self {
        case .structureDiffers(let why): return "the checkpoints are not two stages of one quantizer: \(why)"
        case .probe(let why): return "probe: \(why)"
        case .notInitialised(let which): return "the \(which) quantizer's k-means codebook is not initialised yet (its codes are placeholders until a first training batch)"
        }
    }
}

extension StageComparison {
    /// Compares two stages of one quantizer on `probe` (`[n, dim]` or `[b, n, dim]` vectors — or what ``Quantizer/encode(_:)``
    /// takes, e.g. whole sequences `[b, L, dim]` or maps `[b, h, w, dim]` for a hierarchical quantizer).
    ///
    /// - Throws: ``StageComparisonError`` when the quantizers differ in type, input dimension, number, dimension or heads of
    ///   their codebooks, or the new one has fewer codes; when the probe has the wrong shape or is not finite; or when
    ///   either has a k-means codebook not yet initialised — changing neither quantizer.
    public init(old: any Quantizer, new: any Quantizer, probe: Tensor) throws {
        guard type(of: old) == type(of: new) else {
            throw StageComparisonError.structureDiffers("a \(old.kindName) and a \(new.kindName)")
        }
        guard old.inputDim == new.inputDim else { throw StageComparisonError.structureDiffers("input dimension \(old.inputDim) and \(new.inputDim)") }
        let (a, b) = (old.learnedCodebooks, new.learnedCodebooks)
        guard a.count == b.count else { throw StageComparisonError.structureDiffers("\(a.count) and \(b.count) learned codebooks") }
        for (i, (x, y)) in zip(a, b).enumerated() where x.dim != y.dim || x.numCodebooks != y.numCodebooks || y.codebookSize < x.codebookSize {
            throw StageComparisonError.structureDiffers("codebook \(i): \(x.numCodebooks)×\(x.codebookSize)×\(x.dim) and \(y.numCodebooks)×\(y.codebookSize)×\(y.dim)")
        }
        guard probe.rank >= 2 && probe.shape.last == old.inputDim && probe.count > 0 else {
            throw StageComparisonError.probe("\(probe.shape): expected [n, \(old.inputDim)], [b, n, \(old.inputDim)] or whole sequences or maps ending in \(old.inputDim)")
        }
        guard probe.withUnsafeScalars({ $0.allSatisfy(\.isFinite) }) else { throw StageComparisonError.probe("holds NaN or infinite values") }
        for (which, q) in [("old", old), ("new", new)] where !q.isInitialised { throw StageComparisonError.notInitialised(which) }
        let x = probe.rank == 2 ? probe.unsqueezed(axis: 0) : probe
        let (oldIdx, newIdx) = (old.encode(x), new.encode(x))
        let (oldColumns, newColumns) = (Self.columns(old, oldIdx), Self.columns(new, newIdx))
        probeVectors = x.count / old.inputDim
        churn = Self.tupleChurn(oldIdx, newIdx, vectors: probeVectors, groups: old.indexBatchAxis == 1 ? oldIdx.shape[0] : 1)
        mseOld = Self.mse(old, oldIdx, x)
        mseNew = Self.mse(new, newIdx, x)
        let names = Self.bookNames(old)
        books = []
        for (i, (x, y)) in zip(a, b).enumerated() {
            for h in 0..<x.numCodebooks {
                let name = names[i] + (x.numCodebooks > 1 ? " head \(h)" : "")
                let codes = (oldColumns?[i]?[h], newColumns?[i]?[h])
                books.append(Self.book(name, x, y, head: h, oldCodes: codes.0, newCodes: codes.1))
            }
        }
        (frozenParameters, frozenParametersMoved) = Self.frozenParameters(old, new)
    }

    /// The parameters learned by gradient frozen whole in either model, and those of them not bit-identical in the other.
    static func frozenParameters(_ old: any Quantizer, _ new: any Quantizer) -> (frozen: [String], moved: [String]) {
        let after = Dictionary(new.namedParameters().map { ($0.0, $0.1) }, uniquingKeysWith: { first, _ in first })
        var frozen: [String] = [], moved: [String] = []
        for (key, p) in old.namedTrainableParameters() {
            guard let q = after[key], p.isFrozen || q.isFrozen else { continue }
            frozen.append(key)
            let same = p.value.shape == q.value.shape
                && p.value.scalars.elementsEqual(q.value.scalars) { $0.bitPattern == $1.bitPattern }
            if !same { moved.append(key) }
        }
        return (frozen, moved)
    }

    static func book(_ name: String, _ x: Codebook, _ y: Codebook, head h: Int, oldCodes: [Int]?, newCodes: [Int]?) -> Book {
        let (c0, c1, d) = (x.codebookSize, y.codebookSize, x.dim)
        let e0 = Array(x.embed.value.scalars[(h * c0 * d)..<((h + 1) * c0 * d)])
        let e1 = Array(y.embed.value.scalars[(h * c1 * d)..<((h * c1 + c0) * d)])
        let frozen = Set(x.frozenCodeIndices(head: h) + y.frozenCodeIndices(head: h).filter { $0 < c0 })
        let moved = frozen.sorted().filter { c in (0..<d).contains { e0[c * d + $0].bitPattern != e1[c * d + $0].bitPattern } }
        let m0 = x.frozenComponents.value.scalars, m1 = y.frozenComponents.value.scalars
        var components = 0, componentsMoved = 0
        for c in 0..<c0 where !frozen.contains(c) {
            for j in 0..<d where m0[(h * c0 + c) * d + j] != 0 || m1[(h * c1 + c) * d + j] != 0 {
                components += 1
                if e0[c * d + j].bitPattern != e1[c * d + j].bitPattern { componentsMoved += 1 }
            }
        }
        var subspace: Double?
        if y.frozenSubspaceRank(head: h) > 0 {
            let p = Array(y.frozenSubspaceProjector.value.scalars[(h * d * d)..<((h + 1) * d * d)])
            var worst = 0.0
            for c in 0..<c0 {
                for i in 0..<d {
                    var v = 0.0
                    for j in 0..<d { v += Double(p[i * d + j]) * Double(e1[c * d + j] - e0[c * d + j]) }
                    worst = Swift.max(worst, abs(v))
                }
            }
            subspace = worst
        }
        let others = (0..<c0).filter { !frozen.contains($0) }
        let drifts = others.map { c in (0..<d).reduce(0.0) { $0 + pow(Double(e1[c * d + $1] - e0[c * d + $1]), 2) }.squareRoot() }
        let rms = ((0..<c0).reduce(0.0) { s, c in s + (0..<d).reduce(0.0) { $0 + pow(Double(e0[c * d + $1]), 2) } } / Double(Swift.max(c0, 1))).squareRoot()
        let meanDrift = drifts.isEmpty ? 0 : drifts.reduce(0, +) / Double(drifts.count)
        var out = Book(name: name, oldSize: c0, newSize: c1, frozenCodes: frozen.count, frozenMoved: moved, frozenComponents: components,
                       frozenComponentsMoved: componentsMoved, subspaceDrift: subspace, meanDrift: meanDrift, maxDrift: drifts.max() ?? 0,
                       relativeMeanDrift: rms > 0 ? meanDrift / rms : 0)
        if let oldCodes, let newCodes, oldCodes.count == newCodes.count, !oldCodes.isEmpty {
            let n = Double(oldCodes.count)
            out.churn = Double(zip(oldCodes, newCodes).filter { $0 != $1 }.count) / n
            let fromFrozen = zip(oldCodes, newCodes).filter { frozen.contains($0.0) }
            if !fromFrozen.isEmpty {
                out.frozenChurn = Double(fromFrozen.filter { $0.0 != $0.1 }.count) / Double(fromFrozen.count)
                out.frozenToNew = Double(fromFrozen.filter { $0.1 >= c0 }.count) / Double(fromFrozen.count)
            }
            (out.usedOld, out.deadOld, out.perplexityOld) = usage(oldCodes, size: c0)
            (out.usedNew, out.deadNew, out.perplexityNew) = usage(newCodes, size: c1)
        }
        return out
    }

    static func usage(_ codes: [Int], size: Int) -> (Int, Int, Double) {
        var counts = [Int](repeating: 0, count: size)
        for c in codes where c >= 0 && c < size { counts[c] += 1 }
        let total = Double(counts.reduce(0, +))
        let entropy = counts.filter { $0 > 0 }.reduce(0.0) { s, n in let p = Double(n) / total; return s - p * log(p) }
        let used = counts.filter { $0 > 0 }.count
        return (used, size - used, total > 0 ? exp(entropy) / Double(size) : 0)
    }

    /// Each learned codebook's codes of every probe vector, per head: `[book: [head: codes]]`, for the quantizers whose
    /// index layout maps onto their codebooks (a single codebook, residual and grouped residual stacks); nil otherwise.
    static func columns(_ q: any Quantizer, _ idx: IndexTensor) -> [Int: [Int: [Int]]]? {
        let books = q.learnedCodebooks
        func index(of book: Codebook) -> Int { books.firstIndex { $0 === book }! }
        func column(_ width: Int, _ k: Int, from start: Int = 0, count: Int? = nil) -> [Int] {
            let rows = count ?? (idx.count / width)
            return (0..<rows).map { idx.scalars[start + $0 * width + k] }
        }
        var out = [Int: [Int: [Int]]]()
        func add(_ book: Int, _ head: Int, _ codes: [Int]) { out[book, default: [:]][head, default: []] += codes }
        switch q {
        case let vq as VectorQuantizer:
            let heads = vq.heads
            if vq.configuration.separateCodebookPerHead && heads > 1 {
                for h in 0..<heads { add(0, h, column(heads, h)) }
            } else {
                add(0, 0, idx.scalars)
            }
        case let rvq as ResidualVQ:
            let q = rvq.layers.count
            for (l, layer) in rvq.layers.enumerated() where layer.heads == 1 { add(index(of: layer.codebook), 0, column(q, l)) }
        case let grvq as GroupedResidualVQ:
            let per = idx.count / grvq.groups
            for (g, stack) in grvq.rvqs.enumerated() {
                let q = stack.layers.count
                for (l, layer) in stack.layers.enumerated() where layer.heads == 1 {
                    add(index(of: layer.codebook), 0, column(q, l, from: g * per, count: per / q))
                }
            }
        default:
            return nil
        }
        return out
    }

    static func bookNames(_ q: any Quantizer) -> [String] {
        let books = q.learnedCodebooks
        var names = [String](repeating: "", count: books.count)
        func name(_ book: Codebook, _ text: String) {
            if let i = books.firstIndex(where: { $0 === book }), names[i].isEmpty { names[i] = text }
        }
        switch q {
        case let rvq as ResidualVQ:
            let shared = rvq.configuration.sharedCodebook
            for (l, layer) in rvq.layers.enumerated() { name(layer.codebook, shared ? "shared codebook" : "layer \(l)") }
        case let grvq as GroupedResidualVQ:
            for (g, stack) in grvq.rvqs.enumerated() {
                for (l, layer) in stack.layers.enumerated() { name(layer.codebook, "group \(g) layer \(l)") }
            }
        default:
            break
        }
        return names.enumerated().map { $1.isEmpty ? (books.count == 1 ? "codebook" : "codebook \($0)") : $1 }
    }

    /// Share of vectors whose index tuple (every column; for grouped stacks, `[g, b, …]`, every group's block) changed.
    static func tupleChurn(_ a: IndexTensor, _ b: IndexTensor, vectors: Int, groups: Int) -> Double {
        guard a.count == b.count, vectors > 0, a.count % (vectors * groups) == 0 else { return a.scalars == b.scalars ? 0 : 1 }
        let width = a.count / (vectors * groups), block = a.count / groups
        let changed = (0..<vectors).filter { v in
            (0..<groups).contains { g in (0..<width).contains { a.scalars[g * block + v * width + $0] != b.scalars[g * block + v * width + $0] } }
        }
        return Double(changed.count) / Double(vectors)
    }

    static func mse(_ q: any Quantizer, _ idx: IndexTensor, _ x: Tensor) -> Double? {
        guard let r = try? q.decode(idx), r.count == x.count else { return nil }
        let diff = r.reshaped(x.shape) - x
        return diff.withUnsafeScalars { p in p.reduce(0.0) { $0 + Double($1) * Double($1) } } / Double(x.count)
    }
}
