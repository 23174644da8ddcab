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
    static func validate(numQuantizers: Int, cutoff: Int, multipleOf: Int, softClamp: Float?, module: String) throws {
        guard numQuantizers >= 1 && numQuantizers <= 1 << 12 else {
            throw ConfigurationError.badValue(module: module, keyword: "num_quantizers", reason: "\(numQuantizers) is outside 1…4096")
        }
        if let v = softClamp, !(v > 0 && v.isFinite) {
            throw ConfigurationError.badValue(module: module, keyword: "soft_clamp_input_value", reason: "must be a positive number")
        }
        if cutoff < 0 || multipleOf < 1 {
            throw ConfigurationError.badValue(module: module, keyword: "quantize_dropout_cutoff_index", reason: "cutoff must be ≥ 0 and multiple_of ≥ 1")
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
