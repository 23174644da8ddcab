import CVQKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Scalar math from the C library, in one place so that the kernels do not import Foundation.
@inline(__always) func logDouble(_ x: Double) -> Double { log(x) }
@inline(__always) func cosDouble(_ x: Double) -> Double { cos(x) }
@inline(__always) func expf_(_ x: Float) -> Float { expf(x) }
@inline(__always) func logf_(_ x: Float) -> Float { logf(x) }
@inline(__always) func tanhf_(_ x: Float) -> Float { tanhf(x) }
@inline(__always) func erff_(_ x: Float) -> Float { erff(x) }
@inline(__always) func powf_(_ x: Float, _ y: Float) -> Float { powf(x, y) }
@inline(__always) func log1pf_(_ x: Float) -> Float { log1pf(x) }
@inline(__always) func atanf_(_ x: Float) -> Float { atanf(x) }

/// Scalar functions with no gradient rule, for inverse maps (`FSP`'s inverse CDFs).
public enum ScalarMath {
    public static func atanh(_ x: Float) -> Float { atanhf(x) }
    public static func tan(_ x: Float) -> Float { tanf(x) }
    public static func log(_ x: Float) -> Float { logf(x) }
    /// The inverse error function: a double-precision Newton refinement of Giles's single-precision
    /// approximation (M. Giles, *Approximating the erfinv function*, GPU Computing Gems, 2011), rounded to
    /// float: ±∞ at ±1, NaN outside [−1, 1].
    public static func erfinv(_ x: Float) -> Float {
        if x.isNaN || x < -1 || x > 1 { return .nan }
        if x == 1 { return .infinity }
        if x == -1 { return -.infinity }
        let xd = Double(x)
        var w = -logD((1 - xd) * (1 + xd)), p: Double
        if w < 5 {
            w -= 2.5
            p = 2.81022636e-08
            for c in [3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941] { p = c + p * w }
        } else {
            w = w.squareRoot() - 3
            p = -0.000200214257
            for c in [0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682] { p = c + p * w }
        }
        var y = p * xd
        for _ in 0..<3 {
            let e = erfD(y) - xd
            y -= e / (1.1283791670955126 * expD(-y * y))
        }
        return Float(y)
    }
}
@inline(__always) private func logD(_ x: Double) -> Double { log(x) }
@inline(__always) private func expD(_ x: Double) -> Double { exp(x) }
@inline(__always) private func erfD(_ x: Double) -> Double { erf(x) }

/// torch's CPU `lerp(a, b, w)`, bit-exactly: `|w| < 0.5 ? fma(w, b - a, a) : fma(w - 1, b - a, b)`.
@inlinable public func torchLerp(_ a: Float, _ b: Float, _ w: Float) -> Float {
    let d = b - a
    return abs(w) < 0.5 ? fmaFloat(w, d, a) : fmaFloat(w - 1, d, b)
}

/// A fused multiply-add `x * y + z` with one rounding.
@inlinable public func fmaFloat(_ x: Float, _ y: Float, _ z: Float) -> Float { z.addingProduct(x, y) }
@inline(__always) func sinf_(_ x: Float) -> Float { sinf(x) }
@inline(__always) func cosf_(_ x: Float) -> Float { cosf(x) }

/// ``torchLerp(_:_:_:)`` over `n` elements in place: `a[i] = lerp(a[i], b[i], w)`, with hardware FMA when
/// the processor has it (bit-identical to the scalar form).
public func torchLerp(_ a: UnsafeMutablePointer<Float>, toward b: UnsafePointer<Float>, weight w: Float, count n: Int) {
    vq_lerp(a, b, w, Int64(n))
}
