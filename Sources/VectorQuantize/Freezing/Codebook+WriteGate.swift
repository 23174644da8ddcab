import VQNN
import VQTensor

/// The key to every codebook's `embed`, `embed_avg` and `cluster_size`. Only this file holds it, so every
/// write of a codebook's codes or statistics is one of the paths of ``Codebook/Writer`` and passes the gate below.
private let codebookWriteKey = Parameter.WriteKey()

/// The one gate for every write to a codebook's state.
///
/// `embed`, `embed_avg` and `cluster_size` are gated parameters (``Parameter/isGated``): read-only to library code
/// and to users except through ``Codebook/write(_:rows:holding:_:touch:threaded:_:)`` here, the optimizers (which
/// write only the elements this gate leaves free, then call it back) and a restore of the whole state
/// (`load(stateDict:)`). The one raw write left is ``Parameter/overwriteBypassingGate(_:)``, named for what it does.
///
/// A write names its ``Codebook/Writer`` and the rows it wants; the gate
/// 1. drops the rows of frozen codes (the persistent mask ``Codebook/frozenCodes``, which a ``FreezePolicy`` also
///    writes) and of codes held for this call (a per-call freeze, a weight of 0, a layer frozen in a stack);
/// 2. hands the writer each remaining row, threads splitting the rows when asked (the same values on any count);
/// 3. puts back the row's frozen components (`embed` and `embed_avg`) and re-projects `embed` onto its head's
///    frozen subspace (``Codebook/PartialHold``);
/// 4. records which codes wait for a recompute of `embed` (`touched`), bumps the tensors' versions, and counts the
///    write per writer (``Codebook/gateWrites``, which the tests read to prove that every writer came through).
///
/// The collective (several processes) is upstream of the gate: the batch statistics and the rows that replace dead
/// codes are made identical on every rank before they are written, so every rank writes the same values here.
extension Codebook {
    /// Every path that writes a codebook's codes or statistics.
    public enum Writer: String, CaseIterable, Sendable {
        /// One EMA step of `cluster_size` and `embed_avg` (training calls, ``VectorQuantizer/updateIndices(_:_:mask:emaUpdateWeight:)``,
        /// the layers of residual and grouped stacks).
        case emaStep
        /// `embed = embed_avg / s` (``Codebook/updateEMA()``).
        case recompute
        /// Dead-code replacement (``Codebook/expireCodes(_:valid:frozenForStep:)``).
        case expiry
        /// k-means: the initialisation, and ``Codebook/fitCodes(_:to:iterations:countsPerBatch:)`` (growth).
        case kmeans
        /// ``Codebook/setCodes(_:)``.
        case setCodes
        /// Any optimizer on a learnable codebook, in-place optimizers included.
        case optimizer
        /// A restore of the whole state (`load(stateDict:)`, checkpoints, `--resume`).
        case load
    }

    /// The tensors a write changes.
    struct WriteTargets: OptionSet {
        let rawValue: Int
        static let codes = WriteTargets(rawValue: 1)
        static let average = WriteTargets(rawValue: 2)
        static let size = WriteTargets(rawValue: 4)
        static let all: WriteTargets = [.codes, .average, .size]
    }

    /// One row of a write, as the gate hands it to a writer: `d` values of `embed` and of `embed_avg` and one of
    /// `cluster_size` at code `row` (flattened `[h · c]`), each nil when not a target of the write.
    struct RowWrite {
        let row: Int
        let code: UnsafeMutablePointer<Float>?
        let average: UnsafeMutablePointer<Float>?
        let size: UnsafeMutablePointer<Float>?
    }

    /// What a write means for `embed`: its statistics changed (it waits for a recompute), or it is current.
    enum Touch { case statistics, codes }

    /// The gate (see above): writes `rows` (flattened `[h · c]`) of `targets` with `body`, minus frozen codes and
    /// the codes `holding` (flattened `[h · c]`) holds for this call.
    func write(_ writer: Writer, rows: some Sequence<Int>, holding: [Bool]? = nil, _ targets: WriteTargets,
               touch: Touch, threaded: Bool = false, _ body: (RowWrite) -> Void) {
        let frozen = frozenMask
        let open = rows.filter { !frozen[$0] && !(holding?[$0] ?? false) }
        gateWrites[writer, default: 0] += 1
        guard !open.isEmpty else { return }
        let hold = partialHold(), d = dim
        Self.open(embed, targets.contains(.codes)) { code in
            Self.open(embedAverage, targets.contains(.average)) { average in
                Self.open(clusterSize, targets.contains(.size)) { size in
                    nonisolated(unsafe) let (code, average, size) = (code, average, size)
                    func pass(_ range: Range<Int>) {
                        var oldCode = [Float](repeating: 0, count: hold.isEmpty ? 0 : d), oldAverage = oldCode
                        for r in open[range] {
                            let row = RowWrite(row: r, code: code.map { $0 + r * d }, average: average.map { $0 + r * d }, size: size.map { $0 + r })
                            let held = !hold.isEmpty && hold.applies(toRow: r)
                            if held {
                                if let p = row.code { for j in 0..<d { oldCode[j] = p[j] } }
                                if let p = row.average { for j in 0..<d { oldAverage[j] = p[j] } }
                            }
                            body(row)
                            guard held else { continue }
                            if let p = row.code { oldCode.withUnsafeBufferPointer { hold.hold(row: r, p, old: $0.baseAddress!, project: true) } }
                            if let p = row.average { oldAverage.withUnsafeBufferPointer { hold.hold(row: r, p, old: $0.baseAddress!, project: false) } }
                        }
                    }
                    if threaded {
                        Threads.forRanges(open.count, minChunk: Swift.max(1, (1 << 15) / Swift.max(d, 1)), pass)
                    } else {
                        pass(0..<open.count)
                    }
                }
            }
        }
        for r in open { touched[r] = touch == .statistics }
    }

    private static func open(_ p: Parameter, _ on: Bool, _ body: (UnsafeMutablePointer<Float>?) -> Void) {
        if on { p.write(with: codebookWriteKey) { body($0.baseAddress!) } } else { body(nil) }
    }

    /// Gates `embed`, `embed_avg` and `cluster_size` (called once, at construction). The optimizers' part of the
    /// gate: they write only the elements outside frozen codes and components, then every code that is not frozen
    /// whole is re-projected onto its head's frozen subspace.
    func installWriteGate() {
        embed.gate(with: codebookWriteKey, frozenElements: { [weak self] in self?.embedFrozenElements() },
                   afterOptimizerStep: { [weak self] values in self?.optimizerWrote(values) })
        for p in [embedAverage, clusterSize] {
            p.gate(with: codebookWriteKey, frozenElements: { nil }, afterOptimizerStep: { _ in })
        }
    }

    private func optimizerWrote(_ values: UnsafeMutableBufferPointer<Float>) {
        gateWrites[.optimizer, default: 0] += 1
        projectFrozenSubspace(values)
    }

    /// After a restore of the whole state (``Codebook/didLoadState()``): nothing waits for a recompute, nothing is pending.
    func restoredState() {
        gateWrites[.load, default: 0] += 1
        touched = Array(repeating: false, count: codeCount)
        pendingClusterSize = nil
        pendingEmbedSum = nil
    }
}
