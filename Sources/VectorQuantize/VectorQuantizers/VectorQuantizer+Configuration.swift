import VQNN
import Foundation
import VQTensor

/// Errors in a quantizer's configuration (from code or from a `{"module", "kwargs"}` JSON).
public enum ConfigurationError: Error, Equatable, CustomStringConvertible {
    case unknownKeyword(module: String, keyword: String)
    case badValue(module: String, keyword: String, reason: String)
    case invalid(module: String, reason: String)
    case unknownModule(String)

    public var description: String {
        switch self {
        case .unknownKeyword(let m, let k): return "\(m): unknown keyword '\(k)'"
        case .badValue(let m, let k, let r): return "\(m): keyword '\(k)': \(r)"
        case .invalid(let m, let r): return "\(m): \(r)"
        case .unknownModule(let m): return "unknown module '\(m)'"
        }
    }

    /// The same error said of `module`, the one a configuration names: a stack's or wrapper's inner configurations
    /// (a ResidualVQ's layers are VectorQuantize configurations) would otherwise name a module the user never wrote.
    func named(_ module: String) -> ConfigurationError {
        switch self {
        case .unknownKeyword(_, let k): return .unknownKeyword(module: module, keyword: k)
        case .badValue(_, let k, let r): return .badValue(module: module, keyword: k, reason: r)
        case .invalid(_, let r): return .invalid(module: module, reason: r)
        case .unknownModule: return self
        }
    }
}

/// The constructor arguments of ``VectorQuantizer``, with the reference's defaults. Each property
/// names its `VectorQuantize(...)` keyword.
public struct VectorQuantizerConfiguration: Sendable, Equatable {
    public var dim: Int                                   // dim
    public var codebookSize: Int                          // codebook_size
    public var codebookDim: Int? = nil                    // codebook_dim
    public var heads = 1                                  // heads
    public var separateCodebookPerHead = false            // separate_codebook_per_head
    public var decay: Double = 0.8                        // decay
    public var eps: Double = 1e-5                         // eps
    public var freezeCodebook = false                     // freeze_codebook
    public var kmeansInit = false                         // kmeans_init
    public var kmeansIters = 10                           // kmeans_iters
    public var useCosineSimilarity = false                // use_cosine_sim
    public var layernormAfterProjectIn = false            // layernorm_after_project_in
    public var thresholdEMADeadCode: Double = 0           // threshold_ema_dead_code
    public var channelLast = true                         // channel_last
    public var acceptImageFmap = false                    // accept_image_fmap
    public var accept3dFmap = false                       // accept_3d_fmap (video [b, c, t, h, w])
    public var commitmentWeight: Float = 1                // commitment_weight
    public var commitmentUseCrossEntropyLoss = false      // commitment_use_cross_entropy_loss
    public var orthogonalRegWeight: Float = 0             // orthogonal_reg_weight
    public var orthogonalRegActiveCodesOnly = false       // orthogonal_reg_active_codes_only
    public var orthogonalRegMaxCodes: Int? = nil          // orthogonal_reg_max_codes
    public var codebookDiversityLossWeight: Float = 0     // codebook_diversity_loss_weight
    public var codebookDiversityTemperature: Float = 100  // codebook_diversity_temperature
    public var stochasticSampleCodes = false              // stochastic_sample_codes
    public var sampleCodebookTemperature: Float = 1       // sample_codebook_temp
    public var straightThrough = false                    // straight_through
    public var rotationTrick: Bool? = nil                 // rotation_trick (default: dim > 1)
    public var learnableCodebook = false                  // learnable_codebook
    public var emaUpdate = true                           // ema_update
    public var manualEMAUpdate = false                    // manual_ema_update
    public var returnZerosForMaskedPadding = true         // return_zeros_for_masked_padding
    public var seed: UInt64 = 0                           // (this library) initialisation and sampling seed
    /// `in_place_codebook_optimizer` (with a learnable codebook): an optimizer of the codes stepped inside
    /// every training forward on `mse(quantize, x.detach())`, before the codes are looked up again.
    public var inPlaceCodebookOptimizer: InPlaceOptimizer? = nil
    /// `directional_reparam` (DiVeQ, Vali et al., *DiVeQ: Differentiable Vector Quantization Using the
    /// Reparameterization Trick*, 2025): the output is `x + unit(e + σ·noise) · ‖e‖` with `e = code − x`, so
    /// gradients reach the input and, through `‖e‖`, the codes. The keyword path makes it imply a learnable
    /// codebook without EMA and no rotation trick (the reference's defaults); no commitment loss.
    public var directionalReparam = false                 // directional_reparam
    public var directionalReparamVariance: Float = 5e-3   // directional_reparam_variance
    /// `route_gradients_to_input`: with `false` the training output is the raw code rows (gradients reach
    /// the codes only).
    public var routeGradientsToInput = true               // route_gradients_to_input
    /// `affine_param`: codes matched to the batch by running statistics (Euclidean only; see `Codebook+Affine`).
    public var affineParam = false                        // affine_param
    public var syncAffineParam = false                    // sync_affine_param
    /// `sync_codebook`: whether a codebook trained in several processes (a ``Codebook/collective``) sums the
    /// ranks' statistics before its EMA step — `nil` (the reference's default) or `true`: yes; `false`: each rank
    /// learns from its own batches. One process has nothing to synchronise either way.
    public var syncCodebook: Bool? = nil                  // sync_codebook
    /// `sync_kmeans`: with a synchronised codebook, k-means initialisation and dead-code replacement draw from
    /// every rank's batch (`true`, the default) or each rank's own.
    public var syncKmeans = true                          // sync_kmeans
    public var affineParamBatchDecay: Double = 0.99       // affine_param_batch_decay
    public var affineParamCodebookDecay: Double = 0.9     // affine_param_codebook_decay
    /// `sync_update_v` (Huh et al., 2023, eq. 21; needs a learnable codebook): in [0, 1].
    public var syncUpdateV: Float = 0                     // sync_update_v
    /// `manual_in_place_optimizer_update`: the in-place optimizer steps only in `updateInPlaceOptimizer()`.
    public var manualInPlaceOptimizerUpdate = false       // manual_in_place_optimizer_update
    /// `vq_bridge`: a module (text, `LayerSpec` in VQNN) the codes pass through before every lookup (key
    /// `_codebook.vq_bridge`); implies a learnable codebook without EMA on the keyword path.
    public var vqBridge: String? = nil                    // vq_bridge

    /// The optimizers `in_place_codebook_optimizer` takes, as the reference's `partial(torch.optim.X, lr=…, …)` with
    /// every keyword of `torch.optim.SGD` (`momentum`, `dampening`, `weight_decay`, `nesterov`) and `torch.optim.Adam`
    /// (`betas`, `eps`, `weight_decay`) that this library's optimizers implement; any other keyword is refused.
    public enum InPlaceOptimizer: Sendable, Equatable {
        case sgd(learningRate: Float, momentum: Float = 0, dampening: Float = 0, weightDecay: Float = 0, nesterov: Bool = false)
        case adam(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0)

        /// Parses `partial(torch.optim.SGD, lr=2.0, momentum=0.9)` / `partial(torch.optim.Adam, lr=0.01, betas=(0.9, 0.99))`
        /// (or `SGD` / `Adam` alone, with torch's defaults and a learning rate of 1e-3); nil for anything else, an unknown
        /// keyword included (it would otherwise be ignored, and the training would not be the reference's).
        init?(text: String) {
            let t = text.replacingOccurrences(of: " ", with: "")
            var body = t
            if t.hasPrefix("partial("), t.hasSuffix(")") { body = String(t.dropFirst("partial(".count).dropLast()) }
            // Top-level comma split (a tuple such as betas=(0.9,0.99) stays whole).
            var parts: [String] = [], depth = 0, current = ""
            for ch in body {
                if ch == "(" { depth += 1 } else if ch == ")" { depth -= 1 }
                if ch == "," && depth == 0 { parts.append(current); current = "" } else { current.append(ch) }
            }
            parts.append(current)
            let name = parts.removeFirst()
            var args: [String: String] = [:]
            for p in parts where !p.isEmpty {
                let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
                guard kv.count == 2, args[kv[0]] == nil else { return nil }
                args[kv[0]] = kv[1]
            }
            func number(_ key: String, _ fallback: Float, positive: Bool = false) -> Float? {
                guard let text = args.removeValue(forKey: key) else { return fallback }
                guard let v = Float(text), v.isFinite, positive ? v > 0 : v >= 0 else { return nil }
                return v
            }
            guard let lr = number("lr", 1e-3, positive: true), let weightDecay = number("weight_decay", 0) else { return nil }
            switch name {
            case "SGD", "torch.optim.SGD", "optim.SGD":
                guard let momentum = number("momentum", 0), let dampening = number("dampening", 0) else { return nil }
                var nesterov = false
                if let n = args.removeValue(forKey: "nesterov") {
                    guard n == "True" || n == "False" else { return nil }
                    nesterov = n == "True"
                }
                guard args.isEmpty, !nesterov || (momentum > 0 && dampening == 0) else { return nil }
                self = .sgd(learningRate: lr, momentum: momentum, dampening: dampening, weightDecay: weightDecay, nesterov: nesterov)
            case "Adam", "torch.optim.Adam", "optim.Adam":
                var (beta1, beta2): (Float, Float) = (0.9, 0.999)
                if let b = args.removeValue(forKey: "betas") {
                    let pair = b.trimmingCharacters(in: CharacterSet(charactersIn: "()[]")).split(separator: ",").compactMap { Float($0) }
                    guard pair.count == 2, pair.allSatisfy({ $0 >= 0 && $0 < 1 }) else { return nil }
                    (beta1, beta2) = (pair[0], pair[1])
                }
                guard let eps = number("eps", 1e-8, positive: true), args.isEmpty else { return nil }
                self = .adam(learningRate: lr, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
            default:
                return nil
            }
        }

        /// The reference's spelling (`partial(torch.optim.SGD, lr=2.0, momentum=0.9)`), which `init(text:)` reads back.
        public var text: String {
            switch self {
            case let .sgd(lr, momentum, dampening, weightDecay, nesterov):
                var s = "partial(torch.optim.SGD, lr=\(lr)"
                if momentum != 0 { s += ", momentum=\(momentum)" }
                if dampening != 0 { s += ", dampening=\(dampening)" }
                if weightDecay != 0 { s += ", weight_decay=\(weightDecay)" }
                if nesterov { s += ", nesterov=True" }
                return s + ")"
            case let .adam(lr, beta1, beta2, eps, weightDecay):
                var s = "partial(torch.optim.Adam, lr=\(lr)"
                if beta1 != 0.9 || beta2 != 0.999 { s += ", betas=(\(beta1), \(beta2))" }
                if eps != 1e-8 { s += ", eps=\(eps)" }
                if weightDecay != 0 { s += ", weight_decay=\(weightDecay)" }
                return s + ")"
            }
        }

        /// The optimizer of `parameter`.
        func make(for parameter: Parameter) -> Optimizer {
            switch self {
            case let .sgd(lr, momentum, dampening, weightDecay, nesterov):
                return SGD(parameters: [parameter], learningRate: lr, momentum: momentum, dampening: dampening, weightDecay: weightDecay, nesterov: nesterov)
            case let .adam(lr, beta1, beta2, eps, weightDecay):
                return Adam(parameters: [parameter], learningRate: lr, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
            }
        }
    }

    public init(dim: Int, codebookSize: Int) {
        self.dim = dim
        self.codebookSize = codebookSize
    }

    public var resolvedCodebookDim: Int { codebookDim ?? dim }
    public var usesRotationTrick: Bool { rotationTrick ?? (!directionalReparam && dim > 1) }
    /// The commitment loss is computed (not with the directional reparameterisation).
    public var hasCommitmentLoss: Bool { commitmentWeight > 0 && !directionalReparam }
    public var numCodebooks: Int { separateCodebookPerHead ? heads : 1 }
    public var requiresProjection: Bool { resolvedCodebookDim * heads != dim }
    /// The keyword that gives the forward a layout other than `[b, n, dim]` (`accept_3d_fmap`, `accept_image_fmap`,
    /// `channel_last`), or nil: what a stack or wrapper that hands its layers `[b, n, d]` must refuse.
    var layoutKeyword: String? {
        accept3dFmap ? "accept_3d_fmap" : (acceptImageFmap ? "accept_image_fmap" : (channelLast ? nil : "channel_last"))
    }

    /// Checks the combinations the reference rejects.
    public func validate() throws {
        func bad(_ r: String) -> ConfigurationError { .invalid(module: "VectorQuantize", reason: r) }
        if dim <= 0 || codebookSize <= 0 || heads <= 0 || resolvedCodebookDim <= 0 {
            throw bad("dim \(dim), codebook_size \(codebookSize), heads \(heads), codebook_dim \(resolvedCodebookDim) must be positive")
        }
        if !(0...1).contains(decay) { throw bad("decay \(decay) outside [0, 1]") }
        if SizeLimit.product([numCodebooks, codebookSize, resolvedCodebookDim]) == nil || SizeLimit.product([dim, resolvedCodebookDim, heads]) == nil {
            throw bad("codebook_size \(codebookSize) × codebook_dim \(resolvedCodebookDim) × \(numCodebooks) codebooks (or the projection) exceeds \(SizeLimit.maxElements) values per tensor")
        }
        if acceptImageFmap && accept3dFmap { throw bad("accept_image_fmap and accept_3d_fmap exclude each other") }
        // The reference's kmeans() returns the bins of its last iteration: with none it raises at the first batch. Here
        // the fit would keep sampled means with zero counts, and the recompute would make every code the zero vector.
        if kmeansIters < 0 || (kmeansInit && kmeansIters == 0) {
            throw ConfigurationError.badValue(module: "VectorQuantize", keyword: "kmeans_iters",
                                              reason: "\(kmeansIters)\(kmeansInit ? " with kmeans_init" : ""): k-means needs at least one iteration")
        }
        if !commitmentWeight.isFinite {
            throw ConfigurationError.badValue(module: "VectorQuantize", keyword: "commitment_weight", reason: "\(commitmentWeight) is not a finite number")
        }
        if let m = orthogonalRegMaxCodes, m < 1 {
            throw ConfigurationError.badValue(module: "VectorQuantize", keyword: "orthogonal_reg_max_codes", reason: "\(m) must be ≥ 1")
        }
        if useCosineSimilarity && learnableCodebook { throw bad("cosine sim distance codebook not compatible with learnable codebook") }
        if affineParam && useCosineSimilarity { throw bad("affine param is only compatible with euclidean codebook") }
        if !(0...1).contains(syncUpdateV) { throw ConfigurationError.badValue(module: "VectorQuantize", keyword: "sync_update_v", reason: "must be in [0, 1]") }
        if syncUpdateV > 0 && !learnableCodebook { throw bad("sync_update_v needs a learnable codebook") }
        if vqBridge != nil && (!learnableCodebook || emaUpdate) { throw bad("vq_bridge needs a learnable codebook without EMA update") }
        if let text = vqBridge {
            // The bridge maps each code to a code of the same dimension.
            do { try LayerSpec.check(text, inputs: resolvedCodebookDim, outputs: resolvedCodebookDim, what: "the bridge") } catch let e as LayerSpecError {
                throw ConfigurationError.badValue(module: "VectorQuantize", keyword: "vq_bridge", reason: e.description)
            }
        }
        for (key, decay) in [("affine_param_batch_decay", affineParamBatchDecay), ("affine_param_codebook_decay", affineParamCodebookDecay)]
        where !(0...1).contains(decay) {
            throw ConfigurationError.badValue(module: "VectorQuantize", keyword: key, reason: "\(decay) is outside [0, 1]")
        }
        if [straightThrough, usesRotationTrick, directionalReparam].filter({ $0 }).count > 1 {
            throw bad("at most one of straight_through, rotation_trick and directional_reparam")
        }
        if !(directionalReparamVariance >= 0 && directionalReparamVariance.isFinite) {
            throw ConfigurationError.badValue(module: "VectorQuantize", keyword: "directional_reparam_variance", reason: "must be a finite number ≥ 0")
        }
        if straightThrough && learnableCodebook { throw bad("gumbel straight through not allowed when learning the codebook") }
        if emaUpdate && learnableCodebook { throw bad("learnable codebook not compatible with EMA update (pass ema_update=False)") }
        // The reference gives the optimizer the codebook's parameters: its codes are one when they are learnable —
        // learnable_codebook, or an orthogonal loss (whose codes then learn beside their EMA update).
        if inPlaceCodebookOptimizer != nil && !(learnableCodebook || orthogonalRegWeight > 0) {
            throw ConfigurationError.badValue(module: "VectorQuantize", keyword: "in_place_codebook_optimizer",
                                              reason: "needs a learnable codebook (learnable_codebook=True with ema_update=False, or orthogonal_reg_weight > 0)")
        }
        // The reference asserts this only where the loss runs (a weight above 0); the flag alone is inert there.
        if orthogonalRegActiveCodesOnly && orthogonalRegWeight > 0 && heads > 1 && separateCodebookPerHead {
            throw bad("orthogonal regularization for only active codes not compatible with separate codebooks per head")
        }
    }

    /// Builds a configuration from the reference's keyword arguments (JSON values). Unknown keywords
    /// and values of the wrong type throw, naming the keyword.
    public init(referenceKwargs kw: [String: Any]) throws {
        let m = "VectorQuantize"
        let keywords = Keywords(kw, module: m)
        func int(_ k: String) throws -> Int? { try keywords.int(k) }
        func dbl(_ k: String) throws -> Double? { try keywords.double(k) }
        func bool(_ k: String) throws -> Bool? { try keywords.bool(k) }
        guard let dim = try int("dim"), let size = try int("codebook_size") else {
            throw ConfigurationError.invalid(module: m, reason: "dim and codebook_size are required")
        }
        self.init(dim: dim, codebookSize: size)
        for key in kw.keys where !Self.keywords.contains(key) { throw ConfigurationError.unknownKeyword(module: m, keyword: key) }
        codebookDim = try int("codebook_dim")
        heads = try int("heads") ?? heads
        separateCodebookPerHead = try bool("separate_codebook_per_head") ?? separateCodebookPerHead
        decay = try dbl("decay") ?? decay
        eps = try dbl("eps") ?? eps
        freezeCodebook = try bool("freeze_codebook") ?? freezeCodebook
        kmeansInit = try bool("kmeans_init") ?? kmeansInit
        kmeansIters = try int("kmeans_iters") ?? kmeansIters
        useCosineSimilarity = try bool("use_cosine_sim") ?? useCosineSimilarity
        layernormAfterProjectIn = try bool("layernorm_after_project_in") ?? layernormAfterProjectIn
        thresholdEMADeadCode = try dbl("threshold_ema_dead_code") ?? thresholdEMADeadCode
        channelLast = try bool("channel_last") ?? channelLast
        acceptImageFmap = try bool("accept_image_fmap") ?? acceptImageFmap
        accept3dFmap = try bool("accept_3d_fmap") ?? accept3dFmap
        commitmentWeight = Float(try dbl("commitment_weight") ?? Double(commitmentWeight))
        commitmentUseCrossEntropyLoss = try bool("commitment_use_cross_entropy_loss") ?? commitmentUseCrossEntropyLoss
        orthogonalRegWeight = Float(try dbl("orthogonal_reg_weight") ?? Double(orthogonalRegWeight))
        orthogonalRegActiveCodesOnly = try bool("orthogonal_reg_active_codes_only") ?? orthogonalRegActiveCodesOnly
        orthogonalRegMaxCodes = try int("orthogonal_reg_max_codes")
        codebookDiversityLossWeight = Float(try dbl("codebook_diversity_loss_weight") ?? Double(codebookDiversityLossWeight))
        codebookDiversityTemperature = Float(try dbl("codebook_diversity_temperature") ?? Double(codebookDiversityTemperature))
        stochasticSampleCodes = try bool("stochastic_sample_codes") ?? stochasticSampleCodes
        sampleCodebookTemperature = Float(try dbl("sample_codebook_temp") ?? Double(sampleCodebookTemperature))
        straightThrough = try bool("straight_through") ?? straightThrough
        rotationTrick = try bool("rotation_trick")
        directionalReparam = try bool("directional_reparam") ?? false
        directionalReparamVariance = Float(try dbl("directional_reparam_variance") ?? 5e-3)
        routeGradientsToInput = try bool("route_gradients_to_input") ?? true
        syncUpdateV = Float(try dbl("sync_update_v") ?? 0)
        manualInPlaceOptimizerUpdate = try bool("manual_in_place_optimizer_update") ?? false
        if let bridge = kw["vq_bridge"], !(bridge is NSNull) {
            guard let text = bridge as? String else { throw ConfigurationError.badValue(module: m, keyword: "vq_bridge", reason: "expected a module's text, e.g. nn.Linear(16, 16)") }
            vqBridge = text
        }
        affineParam = try bool("affine_param") ?? false
        syncAffineParam = try bool("sync_affine_param") ?? false
        syncCodebook = try bool("sync_codebook")
        syncKmeans = try bool("sync_kmeans") ?? true
        affineParamBatchDecay = try dbl("affine_param_batch_decay") ?? 0.99
        affineParamCodebookDecay = try dbl("affine_param_codebook_decay") ?? 0.9
        // The reference's defaults under directional_reparam: a learnable codebook, no EMA.
        learnableCodebook = try bool("learnable_codebook") ?? (directionalReparam || vqBridgeGiven(kw))
        if let spec = kw["in_place_codebook_optimizer"], !(spec is NSNull) {
            guard let text = spec as? String, let opt = InPlaceOptimizer(text: text) else {
                throw ConfigurationError.badValue(module: m, keyword: "in_place_codebook_optimizer", reason: "expected partial(torch.optim.SGD, lr=…[, momentum=…, dampening=…, weight_decay=…, nesterov=True]) or partial(torch.optim.Adam, lr=…[, betas=(…, …), eps=…, weight_decay=…]), got \(spec)")
            }
            inPlaceCodebookOptimizer = opt
        }
        emaUpdate = try bool("ema_update") ?? !(directionalReparam || vqBridgeGiven(kw))
        manualEMAUpdate = try bool("manual_ema_update") ?? manualEMAUpdate
        returnZerosForMaskedPadding = try bool("return_zeros_for_masked_padding") ?? returnZerosForMaskedPadding
        if let s = try int("seed") { seed = UInt64(truncatingIfNeeded: s) }
        try validate()
    }

    static let keywords: Set<String> = [
        "dim", "codebook_size", "codebook_dim", "heads", "separate_codebook_per_head", "decay", "eps",
        "freeze_codebook", "kmeans_init", "kmeans_iters", "use_cosine_sim", "layernorm_after_project_in",
        "threshold_ema_dead_code", "channel_last", "accept_image_fmap", "accept_3d_fmap", "commitment_weight",
        "commitment_use_cross_entropy_loss", "orthogonal_reg_weight", "orthogonal_reg_active_codes_only",
        "orthogonal_reg_max_codes", "codebook_diversity_loss_weight", "codebook_diversity_temperature",
        "stochastic_sample_codes", "sample_codebook_temp", "straight_through", "rotation_trick",
        "learnable_codebook", "ema_update", "manual_ema_update", "return_zeros_for_masked_padding", "seed",
        "in_place_codebook_optimizer", "directional_reparam", "directional_reparam_variance", "route_gradients_to_input",
        "affine_param", "sync_affine_param", "affine_param_batch_decay", "affine_param_codebook_decay",
        "sync_update_v", "manual_in_place_optimizer_update", "vq_bridge", "sync_codebook", "sync_kmeans",
    ]

    private func vqBridgeGiven(_ kw: [String: Any]) -> Bool { kw["vq_bridge"].map { !($0 is NSNull) } ?? false }

    /// The reference's keyword arguments for this configuration (for a `{"module", "kwargs"}` JSON): every
    /// field, so that `VectorQuantizerConfiguration(referenceKwargs: c.referenceKwargs) == c` (tested).
    public var referenceKwargs: [String: Any] {
        var kw: [String: Any] = [
            "dim": dim, "codebook_size": codebookSize, "heads": heads, "separate_codebook_per_head": separateCodebookPerHead,
            "decay": decay, "eps": eps, "freeze_codebook": freezeCodebook, "kmeans_init": kmeansInit, "kmeans_iters": kmeansIters,
            "use_cosine_sim": useCosineSimilarity, "layernorm_after_project_in": layernormAfterProjectIn,
            "threshold_ema_dead_code": thresholdEMADeadCode, "channel_last": channelLast, "accept_image_fmap": acceptImageFmap,
            "accept_3d_fmap": accept3dFmap, "commitment_weight": Double(commitmentWeight),
            "commitment_use_cross_entropy_loss": commitmentUseCrossEntropyLoss, "orthogonal_reg_weight": Double(orthogonalRegWeight),
            "orthogonal_reg_active_codes_only": orthogonalRegActiveCodesOnly,
            "codebook_diversity_loss_weight": Double(codebookDiversityLossWeight),
            "codebook_diversity_temperature": Double(codebookDiversityTemperature), "stochastic_sample_codes": stochasticSampleCodes,
            "sample_codebook_temp": Double(sampleCodebookTemperature), "straight_through": straightThrough,
            "learnable_codebook": learnableCodebook, "ema_update": emaUpdate, "manual_ema_update": manualEMAUpdate,
            "return_zeros_for_masked_padding": returnZerosForMaskedPadding, "seed": Int(truncatingIfNeeded: seed),
            "directional_reparam": directionalReparam, "directional_reparam_variance": Double(directionalReparamVariance),
            "route_gradients_to_input": routeGradientsToInput, "affine_param": affineParam, "sync_affine_param": syncAffineParam,
            "affine_param_batch_decay": affineParamBatchDecay, "affine_param_codebook_decay": affineParamCodebookDecay,
            "sync_update_v": Double(syncUpdateV), "manual_in_place_optimizer_update": manualInPlaceOptimizerUpdate,
        ]
        if let vqBridge { kw["vq_bridge"] = vqBridge }
        if let codebookDim { kw["codebook_dim"] = codebookDim }
        if let orthogonalRegMaxCodes { kw["orthogonal_reg_max_codes"] = orthogonalRegMaxCodes }
        if let rotationTrick { kw["rotation_trick"] = rotationTrick }
        if let inPlaceCodebookOptimizer { kw["in_place_codebook_optimizer"] = inPlaceCodebookOptimizer.text }
        if let syncCodebook { kw["sync_codebook"] = syncCodebook }
        if !syncKmeans { kw["sync_kmeans"] = false }
        return kw
    }
}
