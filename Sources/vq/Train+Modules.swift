import ArgumentParser
import Foundation
import VQNN
import VQTensor
import VectorQuantize

/// The quantizer `vq train` starts from: a new one from the options (`--codebook-size`, `--fsq-levels`, `--residual`,
/// …) or from a configuration (`--config`: any quantizer of the registry, in the reference's keywords), or the
/// `--init` checkpoint — with the hyper-parameters of the command line (`--decay`, `--dead-code-threshold`,
/// `--commitment-weight`) applied and saved.
extension Train {
    /// A new quantizer from the options or from `--config`, or the `--init` checkpoint.
    func makeModule(dim: Int) throws -> (any Quantizer, ModuleConfig) {
        if let initFrom { return try continuedModule(initFrom) }
        if let configFile { return try configuredModule(configFile, dim: dim) }
        var kw: [String: Any] = ["dim": dim]
        if let levels = try fsqLevelValues() {
            kw["levels"] = levels
            kw["seed"] = Int(truncatingIfNeeded: seed)   // its projections' initialisation, as every new quantizer's
            let cfg = ModuleConfig(module: "FSQ", kwargs: kw)
            return (try cfg.build() as! any Quantizer, cfg)
        }
        kw["codebook_size"] = codebookSize!
        kw["decay"] = decay ?? 0.8
        if cosine { kw["use_cosine_sim"] = true }
        if kmeansInit { kw["kmeans_init"] = true }
        if let t = deadCodeThreshold, t > 0 { kw["threshold_ema_dead_code"] = t }
        if let w = commitmentWeight { kw["commitment_weight"] = w }
        let heads = self.heads ?? 1
        if heads > 1 {
            guard dim % heads == 0 else { throw ValidationError("--heads \(heads) does not divide the dimension \(dim)") }
            kw["heads"] = heads
            kw["separate_codebook_per_head"] = true
            kw["codebook_dim"] = dim / heads
        }
        kw["seed"] = Int(truncatingIfNeeded: seed)
        let cfg: ModuleConfig
        if let residual {
            kw["num_quantizers"] = residual
            cfg = ModuleConfig(module: "ResidualVQ", kwargs: kw)
        } else {
            cfg = ModuleConfig(module: "VectorQuantize", kwargs: kw)
        }
        return (try cfg.build() as! any Quantizer, cfg)
    }

    /// The dead-code threshold `--expand-to` trains with when neither the checkpoint nor the command line sets one.
    static let growthDeadCodeThreshold = 0.5

    /// The `--init` checkpoint, rebuilt with the hyper-parameters given on the command line (decay, dead-code
    /// threshold, commitment weight: applied and saved); a `--codebook-size` that differs needs `--expand-to`.
    func continuedModule(_ path: String) throws -> (any Quantizer, ModuleConfig) {
        var (module, config) = try loadQuantizer(path, config: nil)
        var overrides = try hyperParameterOverrides(of: config, in: "\(path) holds")
        if deadCodeThreshold == nil, expandTo != nil, config.module == "VectorQuantize", ((config.kwargs["threshold_ema_dead_code"] as? Double) ?? 0) == 0 {
            // A grown codebook is meant to use its new codes: EMA training can starve a few of them (two codes sharing a
            // cluster, one wins), so new codes left unused are re-seeded from the data unless the user says otherwise.
            overrides.append(("--expand-to", "threshold_ema_dead_code", Self.growthDeadCodeThreshold))
        }
        if let k = codebookSize, let sizes = Optional(module.codebookSizes), sizes.max() != k {
            throw ValidationError("--codebook-size \(k) differs from \(path)'s \(sizes.max() ?? 0) codes: use --expand-to to grow it")
        }
        guard !overrides.isEmpty else { return (module, config) }
        for (_, key, value) in overrides { config.kwargs[key] = value }
        let rebuilt: Module
        do { rebuilt = try config.build() } catch let e as ConfigurationError { throw ValidationError("\(path): \(e)") }
        try rebuilt.load(stateDict: module.stateDict())
        guard let q = rebuilt as? any Quantizer else { throw CLIError("\(path): \(config.module) is not a quantizer") }
        module = q
        return (module, config)
    }

    /// `--config FILE`: a new quantizer from a configuration, `{"module": NAME, "kwargs": {…}}` in the reference's class
    /// and keyword names (a checkpoint's sidecar has the same form). `dim` defaults to the input's dimension and `seed`
    /// to `--seed` when the configuration gives none; the configuration saved beside the checkpoint says both.
    ///
    /// ```json
    /// {"module": "ResidualLFQ", "kwargs": {"codebook_size": 256, "num_quantizers": 4}}
    /// ```
    func configuredModule(_ path: String, dim: Int) throws -> (any Quantizer, ModuleConfig) {
        var config = try configuration(path)
        if let kind = QuantizerRegistry.kind(named: config.module) {
            if config.kwargs["dim"] == nil, kind.keywords.contains("dim") { config.kwargs["dim"] = dim }
            if config.kwargs["seed"] == nil, kind.keywords.contains("seed") { config.kwargs["seed"] = Int(truncatingIfNeeded: seed) }
        }
        for (_, key, value) in try hyperParameterOverrides(of: config, in: "--config \(path) names") { config.kwargs[key] = value }
        let module: Module
        do { module = try config.build() } catch let e as ConfigurationError { throw CLIError("--config \(path): \(e)") }
        guard let q = module as? any Quantizer else { throw CLIError("--config \(path): \(config.module) is not a quantizer") }
        guard q.inputDim == dim else { throw CLIError("--config \(path): \(config.module) takes vectors of dimension \(q.inputDim), \(input)'s have \(dim)") }
        return (q, config)
    }

    /// The `--config` file, parsed (in ``validate()`` too, so that a file that is no configuration is refused before the
    /// input is read), and refused when it names a quantizer `vq train` does not train.
    func configuration(_ path: String) throws -> ModuleConfig {
        guard FileManager.default.fileExists(atPath: path) else { throw ValidationError("--config \(path): no such file") }
        let config = try ModuleConfig.read(contentsOf: URL(fileURLWithPath: path))
        if case .elsewhere(let why) = QuantizerRegistry.kind(named: config.module)?.training {
            throw ValidationError("--config \(path): vq train cannot train \(config.module): \(why)")
        }
        return config
    }

    /// `--decay`, `--dead-code-threshold` and `--commitment-weight` as the keywords they set — refused, naming the
    /// option, for a quantizer without an EMA codebook (`holder` says where it came from: "model.safetensors holds").
    func hyperParameterOverrides(of config: ModuleConfig, in holder: String) throws -> [(option: String, key: String, value: Any)] {
        var overrides: [(option: String, key: String, value: Any)] = []
        if let decay { overrides.append(("--decay", "decay", decay)) }
        if let t = deadCodeThreshold { overrides.append(("--dead-code-threshold", "threshold_ema_dead_code", t)) }
        if let w = commitmentWeight { overrides.append(("--commitment-weight", "commitment_weight", w)) }
        let codebookModules: Set<String> = ["VectorQuantize", "ResidualVQ", "GroupedResidualVQ"]
        if let first = overrides.first, !codebookModules.contains(config.module) {
            throw ValidationError("\(first.option): \(holder) a \(config.module), which has no EMA codebook to train")
        }
        return overrides
    }
}
