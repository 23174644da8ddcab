import VQTensor

/// Pieces shared by the residual and grouped quantizers (VQ, FSQ, LFQ).
enum ResidualStack {
    /// The last layer used this step under quantize dropout (SoundStream §3.3; EnCodec's structured
    /// variant with `multipleOf`): a seeded draw in `cutoff..<layers`, rounded up to a multiple; all
    /// layers when dropout is off.
    static func lastLayer(layers: Int, dropout: Bool, cutoff: Int, multipleOf: Int, seed: UInt64) -> Int {
        guard dropout, layers > 1 else { return layers - 1 }
        var g = SeededGenerator(seed: seed)
        var last = cutoff + g.nextInt(below: layers - cutoff)
        if multipleOf != 1 { last = Swift.min(layers - 1, ((last + 1 + multipleOf - 1) / multipleOf) * multipleOf - 1) }
        return last
    }

    /// The reference's quantize-dropout keywords: (`quantize_dropout` and more than one layer,
    /// `quantize_dropout_cutoff_index`, `quantize_dropout_multiple_of`).
    static func dropoutSettings(_ kw: Keywords, layers: Int) throws -> (enabled: Bool, cutoff: Int, multipleOf: Int) {
        ((try kw.bool("quantize_dropout") ?? false) && layers > 1, try kw.int("quantize_dropout_cutoff_index") ?? 0,
         try kw.int("quantize_dropout_multiple_of") ?? 1)
    }

    /// The checks every stack's configuration makes of its layer count and quantize-dropout settings.
    static func validate(numQuantizers: Int, cutoff: Int, multipleOf: Int, softClamp: Float?, module: String, dropout: Bool) throws {
        guard numQuantizers >= 1 && numQuantizers <= 1 << 12 else {
            throw ConfigurationError.badValue(module: module, keyword: "num_quantizers", reason: "\(numQuantizers) is outside 1…4096")
        }
        if let v = softClamp, !(v > 0 && v.isFinite) {
            throw ConfigurationError.badValue(module: module, keyword: "soft_clamp_input_value", reason: "must be a positive number")
        }
        if cutoff < 0 || multipleOf < 1 {
            throw ConfigurationError.badValue(module: module, keyword: "quantize_dropout_cutoff_index", reason: "cutoff must be ≥ 0 and multiple_of ≥ 1")
        }
        // The dropout draws the last layer in cutoff..<layers (the reference's randrange fails on an empty range).
        if dropout && numQuantizers > 1 && cutoff >= numQuantizers {
            throw ConfigurationError.badValue(module: module, keyword: "quantize_dropout_cutoff_index",
                                              reason: "\(cutoff) leaves no layer to drop: it must be below num_quantizers \(numQuantizers)")
        }
    }

    /// A grouped stack's keywords: `dim`, `groups` (checked to divide `dim`), and the keywords of one group —
    /// its `dim` is `dim / groups`; `groups` and `dropping` are removed.
    static func groupedKeywords(_ kw: [String: Any], module: String, dropping: [String] = []) throws -> (dim: Int, groups: Int, inner: [String: Any]) {
        let k = Keywords(kw, module: module)
        let dim = try k.required("dim")
        let groups = try k.int("groups") ?? 1
        try validateGroups(dim: dim, groups: groups, module: module)
        var inner = kw
        for key in ["groups"] + dropping { inner[key] = nil }
        inner["dim"] = dim / groups
        return (dim, groups, inner)
    }

    /// `groups` must be positive and divide a positive `dim`.
    static func validateGroups(dim: Int, groups: Int, module: String) throws {
        guard groups > 0, dim > 0, dim % groups == 0 else {
            throw ConfigurationError.badValue(module: module, keyword: "groups", reason: "dim \(dim) is not divisible into \(groups) groups")
        }
    }

    /// Column `layer` of `[…, given]` indices (-1 past the given columns): the indices with -1 replaced by
    /// 0, and a `[…, 1]` mask that is 0 where the index was -1 (dropped layers decode to zero).
    static func column(_ indices: IndexTensor, layer: Int) -> (indices: IndexTensor, keep: Tensor) {
        let tokenShape = Array(indices.shape.dropLast())
        let given = indices.shape.last!, tokens = Shape.count(tokenShape)
        let col = (0..<tokens).map { layer < given ? indices.scalars[$0 * given + layer] : -1 }
        return (IndexTensor(col.map { Swift.max($0, 0) }, shape: tokenShape), Tensor(col.map { $0 == -1 ? 0 : 1 }, shape: tokenShape + [1]))
    }

    /// Group `g` of `[groups, …]` indices.
    static func group(_ indices: IndexTensor, _ g: Int, of groups: Int) -> IndexTensor {
        let per = indices.count / groups
        return IndexTensor(Array(indices.scalars[(g * per)..<((g + 1) * per)]), shape: Array(indices.shape.dropFirst()))
    }
}
