import VQNN
import VQTensor

extension VectorQuantizer {
    /// Updates the codebook from given inputs and their indices (the reference's `update_indices`), in any
    /// input layout the forward takes (`[b, n, dim]`, `[b, dim]`, channel-first, image and video maps) and
    /// with several heads (indices `[b, n, heads]`, or the maps' `[b, h, w, heads]`), honouring the freeze
    /// mask. Indices of -1 (masked tokens) update nothing.
    ///
    /// - Throws: ``ConfigurationError/invalid(module:reason:)`` for an input of the wrong layout or dimension, an
    ///   index tensor or mask of the wrong size, or an index outside `-1..<codebookSize` — before anything is written.
    public func updateIndices(_ input: Tensor, _ indices: IndexTensor, mask: TokenMask? = nil, emaUpdateWeight: EMAUpdateWeight? = nil) throws {
        func refuse(_ reason: String) -> ConfigurationError { .invalid(module: "VectorQuantize", reason: "updateIndices: \(reason)") }
        if let problem = inputProblem(input) { throw refuse(problem) }
        let (x, _, _) = sequenceLayout(input.detached())
        let (b, n, h) = (x.shape[0], x.shape[1], heads)
        guard indices.count == b * n * h else { throw refuse("indices \(indices.shape) for \(b) × \(n) tokens × \(h) heads (input \(input.shape))") }
        if let mask, mask.shape.map({ $0 != [b, n] }) ?? (mask.count != b * n) {
            throw refuse("a mask of \(mask.shape.map { "\($0)" } ?? "\(mask.count)") for \(b) × \(n) tokens")
        }
        if let bad = indices.scalars.first(where: { $0 < -1 || $0 >= codebookSize }) { throw refuse("index \(bad) outside -1..<\(codebookSize)") }
        if let emaUpdateWeight, let problem = codebook.weightProblem(emaUpdateWeight) { throw refuse(problem) }
        applyIndices(x, indices, mask: mask?.flags, emaUpdateWeight: emaUpdateWeight)
    }

    /// ``updateIndices(_:_:mask:emaUpdateWeight:)`` on checked arguments, `x` in the sequence layout `[b, n, dim]`.
    func applyIndices(_ x: Tensor, _ indices: IndexTensor, mask: [Bool]?, emaUpdateWeight: EMAUpdateWeight?) {
        let (b, n, h) = (x.shape[0], x.shape[1], heads)
        let projected = projectIn.map { $0(x) } ?? x
        let flat = splitHeads(projected, b: b, n: n).detached()
        var valid = validRows(flat, mask: mask, b: b, n: n)
        let rowsPer = flat.shape[1]
        var idx = [Int](repeating: 0, count: flat.shape[0] * rowsPer)
        for bi in 0..<b {
            for ni in 0..<n {
                for hh in 0..<h {
                    let k = indices.scalars[(bi * n + ni) * h + hh]
                    let (cb, r) = flatRow(bi, ni, hh, b: b, n: n)
                    idx[cb * rowsPer + r] = Swift.max(k, 0)
                    if k == -1 { valid[cb * rowsPer + r] = false }
                }
            }
        }
        codebook.updateCodebook(flatten: codebook.affineInputs(flat), indices: IndexTensor(idx, shape: [flat.shape[0], rowsPer]), valid: valid,
                                weight: emaUpdateWeight, accumulate: false, emaUpdate: nil)
    }
}
