import VQNN
import VQTensor

/// Options of one codebook forward pass (the reference's `Codebook.forward` keywords).
public struct CodebookForwardOptions {
    public var sampleCodebookTemperature: Float? = nil
    public var freezeCodebook = false
    public var emaUpdateWeight: EMAUpdateWeight? = nil
    public var accumulateEMAUpdate = false
    public var emaUpdate: Bool? = nil
    public var topK: Int? = nil
    public var updateUsage = true
    /// Return the full score matrix `[h, n, c]` (needed by cross-entropy and diversity losses).
    public var needsDistances = false
    /// Per-token codebooks (the reference's `codebook_transform_fn`): codes `[h, c, d]` → `[h, N, c, d]` for the
    /// `N` rows of the input; the nearest code of each row is searched in its own codebook.
    public var codebookTransform: ((Tensor) -> Tensor)? = nil
    /// `false`: leave the quantized rows ungathered — ``CodebookOutput/quantized`` is empty and
    /// ``CodebookOutput/codes`` holds the codes the indices select from (a caller that only projects or
    /// compares them saves the `[h, n, d]` buffer). Ignored with top-k, a codebook transform or straight-through
    /// Gumbel sampling, which need the rows.
    public var gatherQuantized = true
    /// Also return each row's squared distance to its code (``CodebookOutput/squaredErrors``), formed by the search
    /// (the commitment loss without another pass). Honoured by the plain nearest-code search only (no top-k, score
    /// matrix, sampling or codebook transform).
    public var squaredErrors = false
    public init() {}
}

/// The result of a codebook forward pass.
public struct CodebookOutput {
    /// `[h, n, d]` (`[h, n, k, d]` with top-k): rows of the codebook as it was before the update.
    public var quantized: Tensor
    /// `[h, n]` (`[h, n, k]` with top-k).
    public var indices: IndexTensor
    /// `[h, n, c]` scores (negated Euclidean distance or dot product), when requested.
    public var distances: Tensor?
    /// The codes `[h, c, d]` the indices select from (as they were before the update), when the quantized rows
    /// were not gathered (``CodebookForwardOptions/gatherQuantized``).
    public var codes: Tensor? = nil
    /// `[h · n]`: each row's `Σ (x − code)²` to its code in the row order of `Tensor.meanSquaredRowDifference(_:)`,
    /// when requested (``CodebookForwardOptions/squaredErrors``) and the search formed them.
    public var squaredErrors: [Double]? = nil
}

extension Codebook {
    /// Quantizes `flatten [h, n, d]` (already l2-normalised for cosine codebooks) and, in training, updates
    /// the codebook. `valid` (`[h · n]`) marks the rows that may update it (mask and finite values).
    public func forward(_ flatten: Tensor, valid: [Bool], options: CodebookForwardOptions) -> CodebookOutput {
        let (h, d, c) = (flatten.shape[0], flatten.shape[2], codebookSize)
        precondition(h == numCodebooks && d == dim, "Codebook.forward: input \(flatten.shape) for codebooks [\(numCodebooks), \(c), \(dim)]")
        if !isInitialized {
            // k-means sees the union of the ranks' batches, so every rank initialises identically (unless
            // `sync_codebook` or `sync_kmeans` is false: each rank's own).
            let (all, allValid) = drawsFromEveryRank ? gatherBatch(flatten.detached(), valid: valid) : (flatten.detached(), valid)
            kmeansInitialize(all, valid: allValid)
        }
        // A call with `freezeCodebook` writes nothing: no EMA step, no expiry, and — for a learnable
        // codebook — no gradient from any loss (cross-entropy commitment, diversity, straight-through Gumbel).
        if configuration.affineParam && !options.freezeCodebook { updateAffine(flatten.detached(), valid: valid) }
        let codes = lookupCodes(configuration.learnable && !options.freezeCodebook ? embed.value : embed.value.detached())
        if options.freezeCodebook && isTraining && options.topK == nil { recordHeld(nil) }
        if let transform = options.codebookTransform {
            precondition(options.topK == nil, "Codebook: a codebook transform takes no top-k")
            let perToken = transform(codes)
            let (quantized, indices) = nearestPerToken(flatten.detached(), perToken)
            if isTraining && options.updateUsage && !options.freezeCodebook {
                withoutGradient {
                    updateCodebook(flatten: affineInputs(flatten.detached()), indices: indices, valid: valid,
                                   weight: options.emaUpdateWeight, accumulate: options.accumulateEMAUpdate, emaUpdate: options.emaUpdate)
                }
            }
            // The scores of a cross-entropy commitment or a diversity loss: each token against its own codes.
            let distances = options.needsDistances ? perTokenScores(flatten, perToken) : nil
            return CodebookOutput(quantized: quantized, indices: indices, distances: distances)
        }
        let temperature = options.sampleCodebookTemperature ?? configuration.sampleCodebookTemperature
        let gumbelST = configuration.straightThrough && isTraining && temperature > 0
        let (indices, distances, squaredErrors) = select(flatten, codes, options: options, temperature: temperature)

        // Quantized rows: an exact copy of the selected codes (a gather, differentiable in the codes). Several
        // codebooks: one gather over the flattened [h·c, d] table (no per-head parts and stack).
        var quantized: Tensor
        let gathers = options.gatherQuantized || options.topK != nil || gumbelST
        if !gathers {
            quantized = Tensor([], shape: [0])
        } else {
            quantized = codes.rowsPerHead(indices)
        }
        if gumbelST, options.topK == nil, let dist = distances {
            // Straight-through Gumbel: the value stays the hard code, the gradient follows softmax(dist/τ).
            let soft = (dist / temperature).softmax(axis: -1)
            quantized = quantized + (soft - soft.detached()).matmul(codes)
        }

        if isTraining && options.updateUsage && !options.freezeCodebook && options.topK == nil {
            withoutGradient {
                updateCodebook(flatten: affineInputs(flatten.detached()), indices: indices, valid: valid,
                               weight: options.emaUpdateWeight, accumulate: options.accumulateEMAUpdate,
                               emaUpdate: options.emaUpdate)
            }
        }
        return CodebookOutput(quantized: quantized, indices: indices, distances: distances, codes: gathers ? nil : codes.detached(),
                              squaredErrors: squaredErrors)
    }

    /// The codes chosen for every row: from the materialised scores (needed for distances, stochastic sampling and
    /// straight-through Gumbel; argmax or top-k of the logits), top-k by the search, or the fused nearest-code search
    /// (every head's rows in place, with each row's squared error when the commitment wants it).
    func select(_ flatten: Tensor, _ codes: Tensor, options: CodebookForwardOptions, temperature: Float)
        -> (indices: IndexTensor, distances: Tensor?, squaredErrors: [Double]?) {
        let (h, n, d, c) = (flatten.shape[0], flatten.shape[1], flatten.shape[2], codebookSize)
        let metric: CodeMetric = configuration.useCosineSimilarity ? .dot : .euclidean
        let stochastic = isTraining && configuration.stochasticSampleCodes && temperature > 0
        let gumbelST = configuration.straightThrough && isTraining && temperature > 0
        if options.needsDistances || stochastic || gumbelST {
            let dist = scores(flatten, codes)
            var logits = dist.detached()
            if stochastic {
                let u = Tensor.randomUniform(logits.shape, using: &rng)
                logits = logits / temperature + gumbelNoise(u)
            }
            return (options.topK.map { topK(logits, $0) } ?? logits.argmax(axis: -1), dist, nil)
        }
        if let k = options.topK {
            var idx: [Int] = []
            idx.reserveCapacity(h * n * k)
            for hh in 0..<h {
                let xh = flatten.slice(axis: 0, hh..<(hh + 1)).reshaped([n, d]).detached()
                let ch = codes.slice(axis: 0, hh..<(hh + 1)).reshaped([c, d]).detached()
                idx += xh.topKCodes(ch, k: k, metric: metric).indices.scalars
            }
            return (IndexTensor(idx, shape: [h, n, k]), nil, nil)
        }
        if options.squaredErrors {
            let (indices, errors) = flatten.detached().nearestCodesAndSquaredErrorsPerHead(codes.detached(), metric: metric)
            return (indices, nil, errors)
        }
        return (flatten.detached().nearestCodesPerHead(codes.detached(), metric: metric), nil, nil)
    }

    /// The codes as lookups see them: through `vq_bridge`, then the affine map (`[h, c, d]`).
    func lookupCodes(_ stored: Tensor) -> Tensor {
        affineCodes(vqBridge.map { $0(stored) } ?? stored)
    }

    /// The reference's scores `[h, n, c]`: `-sqrt(max((‖x‖² + ‖e‖²) + (x·e)·(−2), 1e-8))` (Euclidean) or
    /// `x·e` (cosine), differentiable in `x` and (when learnable) the codes.
    func scores(_ x: Tensor, _ codes: Tensor) -> Tensor {
        let dots = x.matmul(transposed: codes)
        if configuration.useCosineSimilarity { return dots }
        let x2 = x.squared().sum(axis: -1, keepDims: true)
        let e2 = codes.squared().sum(axis: -1).unsqueezed(axis: 1)
        return -((x2 + e2) + dots * -2).clamped(min: 1e-8).sqrt()
    }

    private func gumbelNoise(_ u: Tensor) -> Tensor {
        // −log(−log(u)) with the reference's log clamp at 1e-20
        -((-(u.clamped(min: 1e-20).log())).clamped(min: 1e-20).log())
    }

    private func topK(_ logits: Tensor, _ k: Int) -> IndexTensor {
        let c = logits.shape[logits.rank - 1]
        let rows = logits.count / c
        var out: [Int] = []
        out.reserveCapacity(rows * k)
        for r in 0..<rows {
            let row = Array(logits.scalars[(r * c)..<(r * c + c)])
            out += row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(k)
        }
        return IndexTensor(out, shape: Array(logits.shape.dropLast()) + [k])
    }
}
