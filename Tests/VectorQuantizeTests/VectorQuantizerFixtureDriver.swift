import Foundation
import VQNN
import VQTensor
@testable import VectorQuantize

enum FixtureError: Error, CustomStringConvertible {
    case unsupported(String)
    var description: String {
        switch self { case .unsupported(let s): return s }
    }
}

/// Runs a `VectorQuantize` case: builds the module from the reference's keywords, loads `before.*`,
/// applies each step's keywords, and compares everything the case recorded.
enum VectorQuantizerFixtureDriver {
    static let knownForwardKeywords: Set<String> = [
        "mask", "lens", "topk", "sample_codebook_temp", "freeze_codebook", "return_loss_breakdown",
        "ema_update_weight", "accum_ema_update", "ema_update", "indices",
    ]

    static func stateDict(_ f: ReferenceFixture, prefix: String) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, v) in f.tensors where k.hasPrefix(prefix) { out[String(k.dropFirst(prefix.count))] = v.asFloat }
        return out
    }

    static func options(_ f: ReferenceFixture, _ kw: [String: Any]) throws -> VectorQuantizerOptions {
        var o = VectorQuantizerOptions()
        for (k, v) in kw {
            guard knownForwardKeywords.contains(k) else { throw FixtureError.unsupported("unknown forward keyword '\(k)'") }
            func tensorRef() -> String? { (v as? String).flatMap { $0.hasPrefix("tensor:") ? String($0.dropFirst(7)) : nil } }
            switch k {
            case "mask": o.mask = (f.ints(tensorRef() ?? "")?.scalars.map { $0 != 0 }).map { TokenMask($0) }
            case "lens": o.lens = f.ints(tensorRef() ?? "")?.scalars
            case "topk": o.topK = v as? Int
            case "sample_codebook_temp": o.sampleCodebookTemperature = (v as? Double).map(Float.init)
            case "freeze_codebook": o.freezeCodebook = v as? Bool
            case "return_loss_breakdown": break  // the breakdown is always returned
            case "accum_ema_update": o.accumulateEMAUpdate = v as? Bool ?? false
            case "ema_update": o.emaUpdate = v as? Bool
            case "indices": o.targetIndices = f.ints(tensorRef() ?? "")
            case "ema_update_weight":
                if let d = v as? Double {
                    o.emaUpdateWeight = .scalar(d)
                } else if let r = tensorRef(), let t = f.float(r) {
                    o.emaUpdateWeight = .perCode(t)
                } else if let s = v as? String, s.hasPrefix("callable:") {
                    // The case records what the reference's callable returned; replay it through a closure
                    // so the function path is exercised with the batch statistics.
                    guard let info = (f.json["callables"] as? [String: Any])?["ema_update_weight"] as? [String: Any],
                          let key = info["resolved_tensor"] as? String, let t = f.float(key) else {
                        throw FixtureError.unsupported("callable ema_update_weight without a resolved tensor")
                    }
                    o.emaUpdateWeight = .function { sums, counts in
                        precondition(sums.rank == 3 && counts.rank == 2, "callable received \(sums.shape), \(counts.shape)")
                        return t
                    }
                } else {
                    throw FixtureError.unsupported("ema_update_weight \(v)")
                }
            default: break
            }
        }
        // The directional reparameterisation's recorded normal draw.
        if let noise = f.float("aux.directional_noise") { o.directionalNoise = noise }
        return o
    }

    static func run(_ f: ReferenceFixture) throws -> FixtureComparison {
        let config = try VectorQuantizerConfiguration(referenceKwargs: f.ctorKwargs)
        let vq = try VectorQuantizer(config)
        try vq.load(stateDict: stateDict(f, prefix: "before."), strict: true)
        if f.mode == "eval" { vq.eval() } else { vq.train() }
        if let recorded = recordedKMeansDraws(f) {
            vq.codebook.sampler = { population, count, _ in
                precondition(count <= recorded.count, "replayed draws: \(count) requested, \(recorded.count) recorded")
                return Array(recorded.prefix(count))
            }
        }
        var cmp = FixtureComparison(f)
        let xAll = f.float("input.x")!
        let steps = f.steps
        var quantized: [Tensor] = [], indices: [IndexTensor] = [], losses: [Tensor] = []
        var breakdowns: [LossBreakdown] = [], inplaceGrads: [Tensor] = [], firstPass: [IndexTensor] = []
        var trace: [String: [Tensor]] = [:]
        func snapshot() {
            trace["trace.embed", default: []].append(vq.codebook.embed.value)
            trace["trace.cluster_size", default: []].append(vq.codebook.clusterSize.value)
            trace["trace.embed_avg", default: []].append(vq.codebook.embedAverage.value)
            let cs = vq.codebook.pendingClusterSize, es = vq.codebook.pendingEmbedSum
            trace["trace.accum_cluster_size", default: []].append(cs ?? Tensor.zeros(vq.codebook.clusterSize.shape))
            trace["trace.accum_embed_avg", default: []].append(es ?? Tensor.zeros(vq.codebook.embedAverage.shape))
            trace["trace.accum_present", default: []].append(Tensor(cs == nil ? 0 : 1))
        }
        var traceAfter: [String: [Tensor]] = [:]
        func snapshotAffine() {
            guard config.affineParam else { return }
            let cb = vq.codebook
            for (k, p) in [("batch_mean", cb.batchMean), ("batch_variance", cb.batchVariance), ("codebook_mean", cb.codebookMean),
                           ("codebook_variance", cb.codebookVariance)] {
                traceAfter["trace_after.\(k)", default: []].append(p!.value)
            }
        }
        snapshot()
        // Scores on the before state, to compare with aux.neg_dist.
        var negDist: Tensor? = nil
        var last: VectorQuantizerOutput? = nil
        var xLast = xAll
        for s in 0..<(steps ?? 1) {
            var x = steps == nil ? xAll : xAll.slice(axis: 0, s..<(s + 1)).squeezed(axis: 0)
            if f.xRequiresGrad { x = x.requiringGradient() }
            let kw = f.forwardKwargs(step: s)
            let opts = try options(f, kw)
            if s == 0 && f.tensors["aux.neg_dist"] != nil && vq.codebook.isInitialized {
                negDist = referenceScores(vq, x, opts)
            }
            let out = vq(x, options: opts)
            if s == 0 && negDist == nil && f.tensors["aux.neg_dist"] != nil { negDist = nil }
            quantized.append(out.quantized)
            indices.append(out.indices)
            losses.append(out.loss)
            breakdowns.append(out.breakdown)
            if let g = vq.lastInPlaceGradient { inplaceGrads.append(g) }
            if let i = vq.lastFirstPassIndices { firstPass.append(i.reshaped(out.indices.shape)) }
            snapshot()
            snapshotAffine()
            last = out
            xLast = x
        }
        guard let out = last else { return cmp }
        let stack: ([Tensor]) -> Tensor = { steps == nil ? $0[0] : Tensor.stack($0, axis: 0) }
        cmp.compare("out.quantized", .float(stack(quantized).detached()))
        cmp.compare("out.indices", .integer(steps == nil ? indices[0]
            : IndexTensor(indices.flatMap(\.scalars), shape: [indices.count] + indices[0].shape)))
        cmp.compare("out.loss", .float(stack(losses).detached()))
        let terms: [(String, (LossBreakdown) -> Tensor)] = [("commitment", \.commitment), ("codebook_diversity", \.codebookDiversity),
                                                          ("orthogonal_reg", \.orthogonalRegularization), ("inplace_optimize", \.inplaceOptimize)]
        for (name, term) in terms {
            cmp.compare("out.loss_breakdown.\(name)", .float(stack(breakdowns.map { term($0).detached() })))
        }
        if !inplaceGrads.isEmpty { cmp.compare("grad.inplace_optimize.embed", .float(stack(inplaceGrads))) }
        if !firstPass.isEmpty {
            cmp.compare("aux.first_pass_indices", .integer(steps == nil ? firstPass[0]
                : IndexTensor(firstPass.flatMap(\.scalars), shape: [firstPass.count] + firstPass[0].shape)))
        }
        if let adam = vq.inPlaceOptimizer as? Adam, let moments = adam.moments(of: vq.codebook.embed) {
            cmp.compare("aux.optimizer_state.exp_avg", .float(Tensor(moments.m, shape: vq.codebook.embed.shape)))
            cmp.compare("aux.optimizer_state.exp_avg_sq", .float(Tensor(moments.v, shape: vq.codebook.embed.shape)))
        }
        if let sgd = vq.inPlaceOptimizer as? SGD, let buffer = sgd.momentumBuffer(of: vq.codebook.embed) {
            cmp.compare("aux.optimizer_state.momentum_buffer", .float(Tensor(buffer, shape: vq.codebook.embed.shape)))
        }
        cmp.skip("aux.directional_noise", "the recorded normal draw, replayed")
        if let negDist { cmp.compare("aux.neg_dist", .float(negDist)) } else { cmp.skip("aux.neg_dist", "codebook not initialised before the step") }

        // Frozen rows (weight 0): compared bit-exactly with their state before the step.
        let frozenCodes = f.ints("aux.frozen_mask")?.scalars.map { $0 != 0 }
        let after = vq.stateDict()
        for key in ["_codebook.embed", "_codebook.embed_avg", "_codebook.cluster_size", "_codebook.initted",
                    "project_in.weight", "project_in.bias", "project_out.weight", "project_out.bias",
                    "project_in.0.weight", "project_in.0.bias", "project_in.1.weight", "project_in.1.bias",
                    "_codebook.batch_mean", "_codebook.batch_variance", "_codebook.codebook_mean", "_codebook.codebook_variance",
                    "_codebook.codebook_mean_needs_init", "_codebook.codebook_variance_needs_init"] {
            let isCode = key.hasPrefix("_codebook.") && key != "_codebook.initted"
            cmp.compare("after.\(key)", after[key].map { .float($0) }, frozenRows: isCode ? frozenCodes : nil,
                        frozenReference: f.float("before.\(key)"))
        }
        for (key, values) in traceAfter { cmp.compare(key, .float(Tensor.stack(values, axis: 0))) }
        for (key, values) in trace {
            let isCode = !key.hasSuffix("accum_present") && !key.contains("accum")
            cmp.compare(key, .float(Tensor.stack(values, axis: 0)), frozenRows: isCode ? frozenCodes.map { m in Array(repeating: m, count: values.count).flatMap { $0 } } : nil,
                        frozenReference: isCode ? Tensor.stack(Array(repeating: values[0], count: values.count), axis: 0) : nil)
        }

        // Gradients: objective = loss + Σ quantized ⊙ G.
        if f.tensors["grad.loss.x"] != nil || f.tensors["grad.loss.embed"] != nil || f.tensors["grad.objective.x"] != nil {
            let embedParam = vq.codebook.embed
            func grads(_ y: Tensor) -> (Tensor?, Tensor?) {
                if embedParam.kind == .trainable { embedParam.grad = nil }
                if xLast.requiresGradient { xLast.grad = nil }
                y.backward()
                // A gradient the loss does not reach is zero (the reference records zeros).
                return (xLast.requiresGradient ? xLast.grad ?? Tensor.zeros(xLast.shape) : nil,
                        embedParam.kind == .trainable ? embedParam.grad ?? Tensor.zeros(embedParam.shape) : nil)
            }
            let (gx, ge) = grads(out.loss)
            // Documented difference: with the cross-entropy commitment and an EMA step, the reference's
            // backward reads the codebook *after* the step (update_ema overwrites the buffer autograd
            // saved). Ours uses the codebook that produced the scores; replay the reference's to compare.
            let aliasing = config.commitmentUseCrossEntropyLoss && vq.isTraining && config.emaUpdate && gx != nil
            let refLoss = aliasing ? referenceAliasedCEGradient(f, vq, xLast, out) : nil
            cmp.compare("grad.loss.x", (refLoss ?? gx).map { .float($0) })
            cmp.compare("grad.loss.embed", ge.map { .float($0) })
            if let g = f.float("input.grad_output") {
                let objective = out.loss + (out.quantized * g).sum()
                // Σ quantized · G over every element: float32 sums in another order differ by ~1e-6 relative.
                cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
                let (ox, oe) = grads(objective)
                cmp.compare("grad.objective.x", (refLoss.map { $0 + (ox! - gx!) } ?? ox).map { .float($0) })
                cmp.compare("grad.objective.embed", oe.map { .float($0) })
            }
        }
        if f.tensors["aux.codes_from_indices"] != nil {
            cmp.compare("aux.codes_from_indices", .float(vq.getCodes(from: out.indices)))
            cmp.compare("aux.output_from_indices", .float(vq.getOutput(from: out.indices).detached()))
        }
        if f.tensors["aux.codes_at_indices"] != nil {
            // Rows of the codebook as it was before the step.
            let before = try VectorQuantizer(config)
            try before.load(stateDict: stateDict(f, prefix: "before."))
            cmp.compare("aux.codes_at_indices", .float(before.getCodes(from: out.indices)))
        }
        if f.tensors["after_manual_update_ema._codebook.embed"] != nil {
            vq.updateEMA()
            let s = vq.stateDict()
            for key in ["_codebook.embed", "_codebook.embed_avg", "_codebook.cluster_size", "_codebook.initted"] {
                cmp.compare("after_manual_update_ema.\(key)", s[key].map { .float($0) })
            }
        }
        if f.tensors["after_no_replace._codebook.embed"] != nil {
            // The same step without dead-code replacement: a threshold of 0 from the same before-state.
            var noReplace = config
            noReplace.thresholdEMADeadCode = 0
            let plain = try VectorQuantizer(noReplace)
            try plain.load(stateDict: stateDict(f, prefix: "before."), strict: true)
            plain.train()
            _ = plain(xAll, options: try options(f, f.forwardKwargs(step: 0)))
            let s = plain.stateDict()
            for key in ["_codebook.embed", "_codebook.embed_avg", "_codebook.cluster_size", "_codebook.initted"] {
                let isCode = key != "_codebook.initted"
                cmp.compare("after_no_replace.\(key)", s[key].map { .float($0) }, frozenRows: isCode ? frozenCodes : nil,
                            frozenReference: f.float("before.\(key)"))
            }
            // The reference's expired codes: cluster_size below the threshold after the step (frozen codes too;
            // ours never replaces those — a documented difference).
            let threshold = Float(config.thresholdEMADeadCode)
            cmp.compare("aux.expired_mask", .integer(IndexTensor(plain.codebook.clusterSize.value.scalars.map { $0 < threshold ? 1 : 0 },
                                                                 shape: plain.codebook.clusterSize.shape)))
        }
        cmp.skip("aux.frozen_mask", "the case's declaration of its frozen codes, used above to check those rows bit-exactly")
        cmp.skip("aux.kmeans_initial_sample_indices", "input (replayed draws)")
        for key in f.tensors.keys.sorted() where key.hasPrefix("after_init.") {
            cmp.skip(key, "state between k-means and the EMA step is internal; after.* covers it")
        }
        if let initial = f.float("aux.kmeans_initial_means") {
            // Replay the 10 Lloyd iterations from the recorded initial means.
            let d = initial.shape[2]
            let (means, bins) = KMeans.fit(samples: xAll.reshaped([-1, d]), initial: initial.reshaped([-1, d]),
                                           iterations: config.kmeansIters, metric: config.useCosineSimilarity ? .dot : .euclidean)
            cmp.compare("aux.kmeans_means", .float(means.reshaped(initial.shape)))
            cmp.compare("aux.kmeans_bins", .float(bins.reshaped([1, -1])))
            cmp.skip("aux.kmeans_initial_means", "input (replayed draws)")
        }
        if let resolved = f.float("aux.ema_update_weight_resolved") { _ = resolved; cmp.skip("aux.ema_update_weight_resolved", "replayed as the callable's result") }
        return cmp
    }

    /// The reference's x-gradient of the cross-entropy commitment: `∂L/∂u` at the scores' own codebook,
    /// chained through `u = ‖x‖² + ‖e‖² − 2 x·e` with the codebook *after* the EMA step.
    static func referenceAliasedCEGradient(_ f: ReferenceFixture, _ vq: VectorQuantizer, _ x: Tensor, _ out: VectorQuantizerOutput) -> Tensor? {
        guard vq.heads == 1, vq.projectIn == nil, let before = f.float("before._codebook.embed") else { return nil }
        let d = before.shape[2]
        let flat = x.detached().reshaped([1, -1, d])
        let after = vq.codebook.embed.value.detached()
        func u(_ xs: Tensor, _ codes: Tensor) -> Tensor {
            (xs.squared().sum(axis: -1, keepDims: true) + codes.squared().sum(axis: -1).unsqueezed(axis: 1))
                + xs.matmul(codes.transposed()) * -2
        }
        let uLeaf = u(flat, before).requiringGradient()
        let dist = -uLeaf.clamped(min: 1e-8).sqrt()
        let ce = vq.crossEntropy(dist, out.indices.reshaped([1, -1])) * vq.configuration.commitmentWeight
        ce.backward()
        guard let gu = uLeaf.grad else { return nil }
        let xl = flat.requiringGradient()
        (gu * u(xl, after)).sum().backward()
        return xl.grad?.reshaped(x.shape)
    }

    /// The reference's k-means draws: recorded row indices, or the rows of the input equal to the recorded
    /// initial means.
    static func recordedKMeansDraws(_ f: ReferenceFixture) -> [Int]? {
        if let draws = f.ints("aux.kmeans_initial_sample_indices") { return draws.scalars }
        guard let means = f.float("aux.kmeans_initial_means"), let x = f.float("input.x") else { return nil }
        let d = means.shape[means.rank - 1]
        let rows = x.count / d, k = means.count / d
        return (0..<k).map { m in
            (0..<rows).first { r in (0..<d).allSatisfy { x.scalars[r * d + $0].bitPattern == means.scalars[m * d + $0].bitPattern } } ?? 0
        }
    }

    /// The reference's `aux.neg_dist` on the current codebook: `[num_codebooks, N, c]`.
    static func referenceScores(_ vq: VectorQuantizer, _ x: Tensor, _ o: VectorQuantizerOptions) -> Tensor {
        withoutGradient {
            var x = x.detached()
            if x.rank == 2 { x = x.unsqueezed(axis: 1) }
            if vq.configuration.acceptImageFmap || vq.configuration.accept3dFmap { x = x.reshaped([x.shape[0], x.shape[1], -1]).transposed(1, 2) }
            else if !vq.configuration.channelLast { x = x.transposed(1, 2) }
            let proj = vq.projectIn.map { $0(x) } ?? x
            let flat = vq.splitHeads(proj, b: x.shape[0], n: x.shape[1])
            return vq.codebook.scores(flat, vq.codebook.embed.value.detached())
        }
    }
}
