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
