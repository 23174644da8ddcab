import VQNN
import VQTensor

/// Beam search over residual layers (the reference's `beam_size`): each layer proposes its `beam` best
/// codes for every surviving path; paths are scored by the weighted sum of their per-layer losses
/// (higher = better, i.e. `−loss`), and the `beam` best survive (one after the last layer). In training,
/// each layer's EMA is then updated with the chosen path's inputs and indices.
extension ResidualVQ {
    /// The surviving paths of every token after some layers: per token up to `beam` entries, each with its residual,
    /// accumulated output, score, indices and per-layer losses.
    struct BeamPaths {
        var residual: Tensor            // [t, paths, d]
        var accumulated: Tensor         // [t, paths, d]
        var scores: [Float]             // [t · paths]
        var paths = 1
        var indices: [[Int]]            // per token: [path · layers]
        var losses: [[Float]]
    }

    func beamSearch(_ x: Tensor, origInput: Tensor, beam: Int, options: ResidualVQOptions) -> ResidualVQOutput {
        let c = configuration
        let tokenShape = Array(x.shape.dropLast())
        let t = Shape.count(tokenShape), d = x.shape.last!, q = numQuantizers
        var state = BeamPaths(residual: x.reshaped([t, 1, d]), accumulated: Tensor.zeros([t, 1, d]), scores: [Float](repeating: 0, count: t),
                              indices: Array(repeating: [], count: t), losses: Array(repeating: [], count: t))
        var inputs: [Tensor] = []                                    // per layer: [t, paths, d] before selection
        var inputChoice: [[Int]] = []                                // per layer: path index per (t, final path)
        for i in layers.indices {
            inputs.append(state.residual.detached())
            inputChoice.append(beamStep(i, &state, beam: beam, options: options))
        }
        let layerInputs = chosenInputs(inputs, choices: inputChoice, tokenShape: tokenShape)
        let finalIndices = IndexTensor(state.indices.flatMap { $0 }, shape: tokenShape + [q])
        var perLayer = [Float](repeating: 0, count: q)
        let mask = options.mask?.flags
        let count = Float(mask?.filter { $0 }.count ?? t)
        for tok in 0..<t where mask?[tok] ?? true {
            for l in 0..<q { perLayer[l] += state.losses[tok][l] }
        }
        let denominator = mask == nil ? Swift.max(Float(t), 1) : Swift.max(count, 1e-4)  // no token: losses 0, not 0/0
        if isTraining { updateAlongChosenPath(layerInputs, finalIndices, tokenShape: tokenShape, options: options) }
        var out = projectOut.map { $0(state.accumulated.reshaped(tokenShape + [d])) } ?? state.accumulated.reshaped(tokenShape + [d])
        if let mask {
            let keepMask = Tensor(mask.map { $0 ? 1 : 0 }, shape: tokenShape + [1])
            out = Tensor.select(keepMask, out, c.layer.returnZerosForMaskedPadding ? Tensor.zeros(out.shape) : origInput)
        }
        return ResidualVQOutput(quantized: out, indices: finalIndices, losses: Tensor(perLayer.map { $0 / denominator }), crossEntropy: nil)
    }

    /// Layer `i` proposes its best codes for every surviving path (a frozen top-k call); the `beam` best extensions of
    /// each token survive (one after the last layer), scored by `score − weightᵢ · loss`. Returns, per token and new
    /// path, the path it extends.
    func beamStep(_ i: Int, _ s: inout BeamPaths, beam: Int, options: ResidualVQOptions) -> [Int] {
        let vq = layers[i]
        let (t, d) = (s.residual.shape[0], s.residual.shape[2])
        let weight = configuration.beamScoreQuantizerWeights?[i] ?? 1
        let k = Swift.min(beam, vq.codebookSize)
        var o = VectorQuantizerOptions()
        o.topK = k
        o.sampleCodebookTemperature = options.sampleCodebookTemperature
        o.freezeCodebook = true
        let out = vq(s.residual.reshaped([1, t * s.paths, d]), options: o)
        let layerLoss = out.loss.detached().scalars  // [t · paths · k]
        let next = Swift.min(i == numQuantizers - 1 ? 1 : beam, s.paths * k)
        let resid = s.residual.detached().scalars, acc = s.accumulated.detached().scalars
        let qs = out.quantized.reshaped([t, s.paths, k, d]).detached().scalars
        var newResidual = [Float](), newAccumulated = [Float](), newScores = [Float](), choice = [Int]()
        var newIndices = [[Int]](), newLosses = [[Float]]()
        for tok in 0..<t {
            var cand: [(score: Float, path: Int, code: Int)] = []
            for p in 0..<s.paths {
                for kk in 0..<k { cand.append((s.scores[tok * s.paths + p] + -layerLoss[(tok * s.paths + p) * k + kk] * weight, p, kk)) }
            }
            let best = cand.enumerated().sorted { a, b in a.element.score > b.element.score || (a.element.score == b.element.score && a.offset < b.offset) }.prefix(next)
            var ti: [Int] = [], tl: [Float] = []
            for (_, cnd) in best {
                let (p, kk) = (cnd.path, cnd.code), row = (tok * s.paths + p) * k + kk
                for j in 0..<d {
                    let qv = qs[row * d + j]
                    newResidual.append(resid[(tok * s.paths + p) * d + j] - qv)
                    newAccumulated.append(acc[(tok * s.paths + p) * d + j] + qv)
                }
                newScores.append(cnd.score)
                ti += Array(s.indices[tok][(p * i)..<(p * i + i)]) + [out.indices.scalars[row]]
                tl += Array(s.losses[tok][(p * i)..<(p * i + i)]) + [layerLoss[row]]
                choice.append(p)
            }
            newIndices.append(ti)
            newLosses.append(tl)
        }
        s.paths = next
        s.residual = Tensor(newResidual, shape: [t, next, d])
        s.accumulated = Tensor(newAccumulated, shape: [t, next, d])
        (s.scores, s.indices, s.losses) = (newScores, newIndices, newLosses)
        return choice
    }

    /// Each layer's input along the chosen path (traced back from the last layer's survivor), `tokenShape + [d]`.
    func chosenInputs(_ inputs: [Tensor], choices: [[Int]], tokenShape: [Int]) -> [Tensor] {
        let q = inputs.count, t = Shape.count(tokenShape), d = inputs[0].shape[2]
        var pathAt = [Int](repeating: 0, count: t)
        var layerInputs = [Tensor](repeating: Tensor.zeros([0]), count: q)
        for i in stride(from: q - 1, through: 0, by: -1) {
            let width = inputs[i].shape[1]
            var rows = [Float]()
            var parent = [Int](repeating: 0, count: t)
            for tok in 0..<t {
                let p = choices[i][tok * (choices[i].count / t) + pathAt[tok]]
                parent[tok] = p
                rows += inputs[i].scalars[((tok * width + p) * d)..<((tok * width + p) * d + d)]
            }
            layerInputs[i] = Tensor(rows, shape: tokenShape + [d])
            pathAt = parent
        }
        return layerInputs
    }

    /// In training: each layer's EMA update with the chosen path's inputs and indices (honouring the call's freezes
    /// and weights), then a shared codebook's deferred expiry.
    func updateAlongChosenPath(_ layerInputs: [Tensor], _ finalIndices: IndexTensor, tokenShape: [Int], options: ResidualVQOptions) {
        let (t, q) = (Shape.count(tokenShape), numQuantizers)
        withoutGradient {
            for (i, vq) in layers.enumerated() {
                let step = layerStep(i, options)
                if step.frozen {
                    vq.codebook.recordHeld(nil)
                    continue
                }
                vq.applyIndices(vq.sequenceLayout(layerInputs[i]).x, IndexTensor((0..<t).map { finalIndices.scalars[$0 * q + i] }, shape: tokenShape),
                                mask: options.mask?.flags, emaUpdateWeight: step.weight)
            }
        }
        finishSharedCodebook(layerInputs: layerInputs, mask: options.mask?.flags)
    }
}
