import VQNN
import VQTensor

/// Beam search over residual layers (the reference's `beam_size`): each layer proposes its `beam` best
/// codes for every surviving path; paths are scored by the weighted sum of their per-layer losses
/// (higher = better, i.e. `−loss`), and the `beam` best survive (one after the last layer). In training,
/// each layer's EMA is then updated with the chosen path's inputs and indices.
extension ResidualVQ {
    func beamSearch(_ x: Tensor, origInput: Tensor, beam: Int, options: ResidualVQOptions) -> ResidualVQOutput {
        let c = configuration
        let tokenShape = Array(x.shape.dropLast())
        let t = Shape.count(tokenShape), d = x.shape.last!, q = numQuantizers
        let weights = c.beamScoreQuantizerWeights ?? Array(repeating: 1, count: q)
        // Paths: per token, up to `beam` entries, each with residual, accumulated output, score, indices,
        // per-layer losses and per-layer inputs.
        var residual = x.reshaped([t, 1, d])
        var accumulated = Tensor.zeros([t, 1, d])
        var scores = [Float](repeating: 0, count: t)
        var paths = 1
        var indices: [[Int]] = Array(repeating: [], count: t)      // flattened [t][path * layers]
        var losses: [[Float]] = Array(repeating: [], count: t)
        var inputs: [Tensor] = []                                    // per layer: [t, paths, d] before selection
        var inputChoice: [[Int]] = []                                // per layer: path index per (t, final path)
        for (i, vq) in layers.enumerated() {
            let k = Swift.min(beam, vq.codebookSize)
            var o = VectorQuantizerOptions()
            o.topK = k
            o.sampleCodebookTemperature = options.sampleCodebookTemperature
            o.freezeCodebook = true
            let out = vq(residual.reshaped([1, t * paths, d]), options: o)
            inputs.append(residual.detached())
            let qz = out.quantized.reshaped([t, paths, k, d])
            let layerLoss = out.loss.detached().scalars  // [t · paths · k]
            let isLast = i == q - 1
            let keep = isLast ? 1 : beam
            var newResidual = [Float](), newAccumulated = [Float]()
            var newScores = [Float](), newIndices = [[Int]](), newLosses = [[Float]](), choice = [Int]()
            let next = Swift.min(keep, paths * k)
            let resid = residual.detached().scalars, acc = accumulated.detached().scalars, qs = qz.detached().scalars
            for tok in 0..<t {
                var cand: [(score: Float, path: Int, code: Int)] = []
                for p in 0..<paths {
                    for kk in 0..<k {
                        let l = layerLoss[(tok * paths + p) * k + kk]
                        cand.append((scores[tok * paths + p] + -l * weights[i], p, kk))
                    }
                }
                let best = cand.enumerated().sorted { a, b in a.element.score > b.element.score || (a.element.score == b.element.score && a.offset < b.offset) }.prefix(next)
                var ti: [Int] = [], tl: [Float] = []
                for (_, cnd) in best {
                    let (p, kk) = (cnd.path, cnd.code)
                    for j in 0..<d {
                        let qv = qs[((tok * paths + p) * k + kk) * d + j]
                        newResidual.append(resid[(tok * paths + p) * d + j] - qv)
                        newAccumulated.append(acc[(tok * paths + p) * d + j] + qv)
                    }
                    newScores.append(cnd.score)
                    ti += Array(indices[tok][(p * i)..<(p * i + i)]) + [out.indices.scalars[(tok * paths + p) * k + kk]]
                    tl += Array(losses[tok][(p * i)..<(p * i + i)]) + [layerLoss[(tok * paths + p) * k + kk]]
                    choice.append(p)
                }
                newIndices.append(ti)
                newLosses.append(tl)
            }
            inputChoice.append(choice)
            paths = next
            residual = Tensor(newResidual, shape: [t, paths, d])
            accumulated = Tensor(newAccumulated, shape: [t, paths, d])
            scores = newScores
            indices = newIndices
            losses = newLosses
        }
        // Trace the chosen path back to each layer's input.
        var pathAt = [Int](repeating: 0, count: t)
        var layerInputs = [Tensor](repeating: Tensor.zeros([0]), count: q)
        for i in stride(from: q - 1, through: 0, by: -1) {
            let width = inputs[i].shape[1]
            var rows = [Float]()
            var parent = [Int](repeating: 0, count: t)
            for tok in 0..<t {
                let p = inputChoice[i][tok * (inputChoice[i].count / t) + pathAt[tok]]
                parent[tok] = p
                rows += inputs[i].scalars[((tok * width + p) * d)..<((tok * width + p) * d + d)]
            }
            layerInputs[i] = Tensor(rows, shape: tokenShape + [d])
            pathAt = parent
        }
        let finalIndices = IndexTensor(indices.flatMap { $0 }, shape: tokenShape + [q])
        var perLayer = [Float](repeating: 0, count: q)
        let mask = options.mask
        let count = Float(mask?.filter { $0 }.count ?? t)
        for tok in 0..<t where mask?[tok] ?? true {
            for l in 0..<q { perLayer[l] += losses[tok][l] }
        }
        let denominator = mask == nil ? Float(t) : Swift.max(count, 1e-4)
        if isTraining {
            withoutGradient {
                for (i, vq) in layers.enumerated() {
                    let step = layerStep(i, options)
                    if step.frozen {
                        vq.codebook.recordHeld(nil)
                        continue
                    }
                    vq.applyIndices(vq.sequenceLayout(layerInputs[i]).x, IndexTensor((0..<t).map { finalIndices.scalars[$0 * q + i] }, shape: tokenShape),
                                     mask: mask, emaUpdateWeight: step.weight)
                }
            }
            finishSharedCodebook(layerInputs: layerInputs, mask: mask)
        }
        var out = projectOut.map { $0(accumulated.reshaped(tokenShape + [d])) } ?? accumulated.reshaped(tokenShape + [d])
        if let mask {
            let keepMask = Tensor(mask.map { $0 ? 1 : 0 }, shape: tokenShape + [1])
            out = Tensor.select(keepMask, out, c.layer.returnZerosForMaskedPadding ? Tensor.zeros(out.shape) : origInput)
        }
        return ResidualVQOutput(quantized: out, indices: finalIndices, losses: Tensor(perLayer.map { $0 / denominator }), crossEntropy: nil)
    }
}

extension VectorQuantizer {
    /// Updates the codebook from given inputs and their indices (the reference's `update_indices`), in any
    /// input layout the forward takes (`[b, n, dim]`, `[b, dim]`, channel-first, image and video maps) and
    /// with several heads (indices `[b, n, heads]`, or the maps' `[b, h, w, heads]`), honouring the freeze
    /// mask. Indices of -1 (masked tokens) update nothing.
    ///
    /// - Throws: ``ConfigurationError/invalid(module:reason:)`` for an input of the wrong layout or dimension, an
    ///   index tensor or mask of the wrong size, or an index outside `-1..<codebookSize` — before anything is written.
    public func updateIndices(_ input: Tensor, _ indices: IndexTensor, mask: [Bool]? = nil, emaUpdateWeight: EMAUpdateWeight? = nil) throws {
        func refuse(_ reason: String) -> ConfigurationError { .invalid(module: "VectorQuantize", reason: "updateIndices: \(reason)") }
        if let problem = inputProblem(input) { throw refuse(problem) }
        let (x, _, _) = sequenceLayout(input.detached())
        let (b, n, h) = (x.shape[0], x.shape[1], heads)
        guard indices.count == b * n * h else { throw refuse("indices \(indices.shape) for \(b) × \(n) tokens × \(h) heads (input \(input.shape))") }
        if let mask, mask.count != b * n { throw refuse("a mask of \(mask.count) for \(b) × \(n) tokens") }
        if let bad = indices.scalars.first(where: { $0 < -1 || $0 >= codebookSize }) { throw refuse("index \(bad) outside -1..<\(codebookSize)") }
        if case .perCode(let t)? = emaUpdateWeight, t.shape != [codebookSize] || codebook.numCodebooks != 1, t.shape != [codebook.numCodebooks, codebookSize] {
            throw refuse("ema_update_weight of shape \(t.shape): expected [\(codebook.numCodebooks), \(codebookSize)]")
        }
        applyIndices(x, indices, mask: mask, emaUpdateWeight: emaUpdateWeight)
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
