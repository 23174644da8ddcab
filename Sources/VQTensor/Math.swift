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
