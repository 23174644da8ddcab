import VQNN
import VQTensor

/// The forward of ``VectorQuantizer``, as the steps a reader follows: arrange the input, project and split it into
/// codebook rows, look the codes up (the codebook trains in training mode), the in-place optimizer's step, the
/// gradient estimator, the losses, and the output in the input's layout.
extension VectorQuantizer {
    /// The result of a forward (``VectorQuantizerOutput``), named as every quantizer names its own.
    public typealias Output = VectorQuantizerOutput

    /// Quantizes `x` (`[b, n, dim]`, `[b, dim]`, `[b, dim, n]` with `channelLast = false`, or
    /// `[b, dim, h, w]` with `acceptImageFmap`, `[b, dim, t, h, w]` with `accept3dFmap`). In training mode the codebook is updated (unless frozen).
    public func callAsFunction(_ input: Tensor, options: VectorQuantizerOptions = .init()) -> VectorQuantizerOutput {
        let call = arrange(input, options)
        let (flat, valid) = codebookRows(call)
        let cbo = codebookOptions(call)
        var out = codebook.forward(flat, valid: valid, options: cbo)
        let inplaceLoss = inPlaceStep(call, flat: flat, valid: valid, options: cbo, output: &out)
        let xq = call.options.topK.map { k in flat.unsqueezed(axis: 2).expanded(to: [flat.shape[0], flat.shape[1], k, flat.shape[2]]) } ?? flat
        let (quantize, commitQuantize) = estimateGradient(call, xq: xq, quantized: out.quantized)
        if let targets = call.options.targetIndices {
            let ce = crossEntropy(out.distances!, flatTargets(targets, b: call.b, n: call.n))
            return VectorQuantizerOutput(quantized: mergeHeads(quantize, b: call.b, n: call.n), indices: IndexTensor([], shape: [0]),
                                         loss: ce, breakdown: LossBreakdown())
        }
        var (loss, breakdown) = losses(call, out: out, flat: flat, xq: xq, quantize: quantize, commitQuantize: commitQuantize)
        if let inplaceLoss { breakdown.inplaceOptimize = inplaceLoss }
        return output(call, out: out, quantize: quantize, loss: loss, breakdown: breakdown)
    }

    /// One call's input in the sequence layout `[b, n, dim]` and what the later steps need to know about it.
    struct ForwardCall {
        var options: VectorQuantizerOptions
        let freeze: Bool
        let inputRequiresGradient: Bool
        let onlyOne: Bool
        let x: Tensor
        let spatial: [Int]?
        let transposed: Bool
        let b: Int, n: Int
        let mask: [Bool]?
    }

    /// Step 1: the options checked, the input as `[b, n, dim]`, the mask (from `mask` or `lens`).
    func arrange(_ input: Tensor, _ options: VectorQuantizerOptions) -> ForwardCall {
        let c = configuration
        var opts = options
        precondition(opts.mask == nil || opts.lens == nil, "VectorQuantizer: pass mask or lens, not both")
        if let topK = opts.topK {
            precondition(c.heads == 1 && topK > 0 && !(c.commitmentUseCrossEntropyLoss && isTraining),
                         "VectorQuantizer: top-k needs a single head and no cross-entropy commitment in training")
            opts.topK = Swift.min(topK, c.codebookSize)
        }
        let onlyOne = input.rank == 2
        if onlyOne { precondition(opts.mask == nil && opts.lens == nil, "VectorQuantizer: no mask for single tokens [b, d]") }
        if c.acceptImageFmap || c.accept3dFmap {
            precondition(opts.mask == nil, "VectorQuantizer: feature maps take no mask, got input \(input.shape)")
        }
        let layout = sequenceLayout(input)
        let x = layout.x
        let (b, n) = (x.shape[0], x.shape[1])
        var mask = opts.mask?.flags(for: [b, n], "VectorQuantizer (input \(input.shape))")
        if let lens = opts.lens {
            precondition(lens.count == b, "VectorQuantizer: \(lens.count) lens for batch \(b)")
            mask = (0..<(b * n)).map { $0 % n < lens[$0 / n] }
        }
        return ForwardCall(options: opts, freeze: opts.freezeCodebook ?? c.freezeCodebook, inputRequiresGradient: input.requiresGradient,
                           onlyOne: onlyOne, x: x, spatial: layout.spatial, transposed: layout.transposed, b: b, n: n, mask: mask)
    }

    /// Step 2: projected, split into heads and normalised: the codebook rows `[H, N, d]` (the projection is a
    /// temporary, not kept alive) and which rows are valid (unmasked, finite).
    func codebookRows(_ call: ForwardCall) -> (flat: Tensor, valid: [Bool]) {
        let c = configuration
        let (b, n) = (call.b, call.n)
        if heads > 1, c.separateCodebookPerHead, !GradMode.isEnabled, let lin = projectIn as? Linear {
            // Without gradients: the projection writes each head's rows straight into the codebook layout (no
            // [b·n, heads·d] buffer and no permutation), normalises them for a cosine codebook and checks that they
            // are finite while they are in cache (the same values bit for bit).
            var flags = [Bool](repeating: true, count: heads * b * n)
            let flat = flags.withUnsafeMutableBufferPointer { pf in
                Tensor.splitHeadsProjection(call.x.reshaped([b * n, c.dim]), weight: lin.weight.value, bias: lin.bias?.value, heads: heads,
                                            l2NormalizeEps: c.useCosineSimilarity ? Codebook.cosineEps : nil, finiteRows: pf)
            }
            return (flat, validRows(flat, mask: call.mask, b: b, n: n, finite: flags))
        }
        let flat = splitHeads(projectIn.map { $0(call.x) } ?? call.x, b: b, n: n)
        return (flat, validRows(flat, mask: call.mask, b: b, n: n, finite: nil))
    }

    /// Step 3: what the codebook's forward is asked for.
    func codebookOptions(_ call: ForwardCall) -> CodebookForwardOptions {
        let c = configuration, opts = call.options
        var cbo = CodebookForwardOptions()
        cbo.sampleCodebookTemperature = opts.sampleCodebookTemperature
        cbo.freezeCodebook = call.freeze
        cbo.emaUpdateWeight = opts.emaUpdateWeight
        cbo.accumulateEMAUpdate = opts.accumulateEMAUpdate
        cbo.emaUpdate = (opts.emaUpdate ?? c.emaUpdate) && opts.topK == nil
        cbo.topK = opts.topK
        cbo.codebookTransform = opts.codebookTransform
        cbo.needsDistances = (isTraining && (c.commitmentUseCrossEntropyLoss || c.codebookDiversityLossWeight > 0))
            || opts.targetIndices != nil
        // Without gradients, several codebooks into the output projection: the codebook returns indices and codes,
        // the output and the commitment come from them (no [heads, b·n, d] quantized buffer; the same values).
        cbo.gatherQuantized = !(!GradMode.isEnabled && heads > 1 && c.separateCodebookPerHead && projectOut != nil
                                && opts.topK == nil && call.mask == nil && inPlaceOptimizer == nil && opts.targetIndices == nil
                                && !cbo.needsDistances && !c.commitmentUseCrossEntropyLoss)
        // The commitment from the search's own row sums (no pass over the rows and codes after it).
        cbo.squaredErrors = !cbo.gatherQuantized && isTraining && c.hasCommitmentLoss
        return cbo
    }

    /// Step 4, with `in_place_codebook_optimizer` in training: `mse(quantize, x.detach())` moves the codes (only them),
    /// then the codes are looked up again and the output comes from that second lookup (the reference's order).
    /// Returns the in-place loss, or nil when there was no step.
    func inPlaceStep(_ call: ForwardCall, flat: Tensor, valid: [Bool], options cbo: CodebookForwardOptions, output out: inout CodebookOutput) -> Tensor? {
        guard isTraining, let opt = inPlaceOptimizer, !call.freeze, call.options.topK == nil else { return nil }
        lastFirstPassIndices = out.indices
        let loss = Loss.mse(out.quantized, flat.detached())
        let saved = codebook.embed.grad
        codebook.embed.grad = nil
        loss.backward()
        lastInPlaceGradient = codebook.embed.grad
        if configuration.manualInPlaceOptimizerUpdate {
            // Kept until `updateInPlaceOptimizer()` steps (the reference accumulates into `.grad`).
            if let g = codebook.embed.grad { pendingInPlaceGradient = pendingInPlaceGradient.map { $0 + g } ?? g }
        } else {
            opt.step()
        }
        codebook.embed.grad = saved
        var second = cbo
        second.updateUsage = false
        out = codebook.forward(flat, valid: valid, options: second)
        return loss.detached()
    }

    /// Step 5: the output rows with the gradient estimator in training (straight-through, rotation trick or directional
    /// reparametrisation; then the synchronous update), and the rows the commitment loss compares with the input.
    func estimateGradient(_ call: ForwardCall, xq: Tensor, quantized: Tensor) -> (quantize: Tensor, commitQuantize: Tensor) {
        let c = configuration
        var quantize = quantized
        guard isTraining else { return (quantize, quantize) }
        let commitQuantize = !c.learnableCodebook || call.freeze ? quantize.detached() : quantize
        guard call.inputRequiresGradient && c.routeGradientsToInput else { return (quantize, commitQuantize) }
        let rows = quantize
        if c.directionalReparam {
            let noise = call.options.directionalNoise.map { $0.reshaped(quantize.shape) } ?? Tensor.randomNormal(quantize.shape, using: &rng)
            quantize = GradientEstimator.directional(xq, to: quantize, noise: noise, variance: c.directionalReparamVariance)
        } else {
            quantize = c.usesRotationTrick ? GradientEstimator.rotate(xq, to: quantize) : GradientEstimator.straightThrough(xq, quantize)
        }
        // The synchronous update rule (Huh et al., 2023, eq. 21): the chosen codes also receive v · (the output's
        // gradient). The reference adds v·(q − sg(q)) to the *straight-through* output, whose value no longer depends on
        // the codes (they get nothing, the input (1+v)·G): a documented difference.
        if c.syncUpdateV > 0 { quantize = quantize + c.syncUpdateV * (rows - rows.detached()) }
        return (quantize, commitQuantize)
    }

    /// Step 6: the weighted loss and its breakdown (commitment, diversity, orthogonal regularisation; top-k's
    /// per-candidate error in evaluation).
    func losses(_ call: ForwardCall, out: CodebookOutput, flat: Tensor, xq: Tensor, quantize: Tensor, commitQuantize: Tensor)
        -> (Tensor, LossBreakdown) {
        let c = configuration
        let (b, n, mask, flatN) = (call.b, call.n, call.mask, flat.shape[1])
        var breakdown = LossBreakdown()
        var loss = Tensor(0)
        if let k = call.options.topK, !isTraining {
            var per = (quantize - xq).squared().mean(axis: -1)  // [1, N, k]
            if let mask { per = per * Tensor(mask.map { $0 ? 1 : 0 }, shape: [1, flatN, 1]) }
            loss = (c.commitmentWeight > 0 ? per * c.commitmentWeight : per).reshaped([b, n, k])
            breakdown.commitment = per.reshaped([b, n, k])
        }
        guard isTraining else { return (loss, breakdown) }
        if c.codebookDiversityLossWeight > 0 {
            breakdown.codebookDiversity = diversityLoss(out.distances!, seqLength: n)
            loss = loss + breakdown.codebookDiversity * c.codebookDiversityLossWeight
        }
        if c.hasCommitmentLoss {
            if c.commitmentUseCrossEntropyLoss {
                let indices = mask.map { maskIndices(out.indices, mask: $0, b: b, n: n) } ?? out.indices
                breakdown.commitment = crossEntropy(out.distances!, indices)
            } else if let k = call.options.topK {
                var per = (commitQuantize - xq).squared().mean(axis: -1)
                if let mask { per = per * Tensor(mask.map { $0 ? 1 : 0 }, shape: [1, flatN, 1]) }
                breakdown.commitment = per.reshaped([b, n, k])
            } else if let mask {
                breakdown.commitment = maskedCommitment(commitQuantize, flat: flat, origInput: call.x, mask: mask, b: b, n: n)
            } else if let errors = out.squaredErrors {
                breakdown.commitment = Tensor.meanOfRowSums(errors, elements: flat.count)
            } else if let used = out.codes {
                breakdown.commitment = Tensor.meanSquaredRowDifference(gathering: used, indices: out.indices, flat)
            } else {
                breakdown.commitment = commitQuantize.meanSquaredRowDifference(flat)
            }
            loss = loss + breakdown.commitment * c.commitmentWeight
        }
        if c.orthogonalRegWeight > 0 {
            breakdown.orthogonalRegularization = orthogonalLoss(indices: out.indices, frozen: call.freeze)
            loss = loss + breakdown.orthogonalRegularization * c.orthogonalRegWeight
        }
        return (loss, breakdown)
    }

    /// Step 7: heads merged, projected out, masked, in the input's layout.
    func output(_ call: ForwardCall, out: CodebookOutput, quantize: Tensor, loss: Tensor, breakdown: LossBreakdown) -> VectorQuantizerOutput {
        let c = configuration
        let (b, n, mask, topK) = (call.b, call.n, call.mask, call.options.topK)
        var q: Tensor
        if let used = out.codes, let projectOut {
            q = Tensor.gatheredHeadsProjection(codes: used, indices: out.indices, weight: projectOut.weight.value,
                                               bias: projectOut.bias?.value).reshaped([b, n, c.dim])
        } else if topK == nil, heads > 1, c.separateCodebookPerHead, let projectOut, !GradMode.isEnabled {
            // Without gradients: several codebooks into the output projection, no concatenation of the heads.
            q = Tensor.mergedHeadsProjection(quantize, weight: projectOut.weight.value, bias: projectOut.bias?.value).reshaped([b, n, c.dim])
        } else {
            q = topK == nil ? mergeHeads(quantize, b: b, n: n) : quantize.reshaped([b, n, topK!, quantize.shape.last!])
            if let projectOut { q = projectOut(q) }
        }
        var indices = outputIndices(out.indices, b: b, n: n, topK: topK)
        if let mask {
            let keep = Tensor(mask.map { $0 ? 1 : 0 }, shape: topK == nil ? [b, n, 1] : [b, n, 1, 1])
            var fill = c.returnZerosForMaskedPadding ? Tensor.zeros(call.x.shape) : call.x
            if let k = topK { fill = fill.unsqueezed(axis: 2).expanded(to: [b, n, k, c.dim]) }
            q = Tensor.select(keep, q, fill)
            let per = indices.count / Swift.max(b * n, 1)
            indices = IndexTensor(indices.scalars.enumerated().map { mask[$0.offset / per] ? $0.element : -1 }, shape: indices.shape)
        }
        if call.transposed { q = q.transposed(1, 2) }
        if let spatial = call.spatial {
            q = q.transposed(1, 2).reshaped([b, q.shape.dropFirst(2).reduce(1, *)] + spatial)
            indices = indices.reshaped([b] + spatial + Array(indices.shape.dropFirst(2)))
        }
        if call.onlyOne {
            q = q.squeezed(axis: 1)
            indices = indices.reshaped([b] + Array(indices.shape.dropFirst(2)))
        }
        return VectorQuantizerOutput(quantized: q, indices: indices, loss: loss, breakdown: breakdown)
    }
}
