/// An index accumulated in float on a grid (`Σ level·basis`) as an `Int` (FSQ, FSP, LatentQuantize): truncated toward zero as the reference's
/// `.to(int32)`, and saturated to Int32's range where the reference's conversion is undefined — values only a damaged
/// or diverged state, or a non-finite input, produce — instead of trapping; `nonFinite` for NaN or ±∞.
///
/// ```swift
/// gridIndex(37.0, nonFinite: -1)     // 37
/// gridIndex(1e30, nonFinite: -1)     // 2147483647
/// gridIndex(.nan, nonFinite: -1)     // -1
/// ```
@inline(__always)
func gridIndex(_ acc: Float, nonFinite: Int) -> Int {
    guard acc.isFinite else { return nonFinite }
    let t = acc.rounded(.towardZero)
    return t >= 2_147_483_648 ? Int(Int32.max) : t <= -2_147_483_648 ? Int(Int32.min) : Int(t)
}
