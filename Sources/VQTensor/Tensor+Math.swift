import CVQKernels
// Element-wise unary math. Differentiable functions go through `unary(_:)`, which saves the input
// and output for the backward rule; `sign` and `round` are piecewise constant (no gradient).

extension Tensor {
    func unary(_ op: UnaryOp) -> Tensor {
        let y: Tensor
        switch op {
        case .neg: y = Elementwise.map(self) { -$0 }
        case .sqrt: y = Elementwise.map(self) { $0.squareRoot() }
        case .exp: y = Elementwise.map(self) { expf_($0) }
        case .log: y = Elementwise.map(self) { logf_($0) }
        case .tanh: y = Tensor.tanhValues(self)
        case .sigmoid: y = Elementwise.map(self) { sigmoidScalar($0) }
        case .relu: y = Elementwise.map(self) { $0 > 0 ? $0 : 0 }
        case .gelu: y = Tensor.geluValues(self)
        case .silu: y = Elementwise.map(self) { $0 * sigmoidScalar($0) }
        case .abs: y = Elementwise.map(self) { Swift.abs($0) }
        case .clamp(let lo, let hi): y = Elementwise.map(self) { Swift.min(Swift.max($0, lo), hi) }
        case .pow(let p):
            y = p == 2 ? Elementwise.map(self) { $0 * $0 } : Elementwise.map(self) { powf_($0, p) }
        case .sin: y = Elementwise.map(self) { sinf_($0) }
        case .cos: y = Elementwise.map(self) { cosf_($0) }
        case .logSigmoid: y = Elementwise.map(self) { Swift.min($0, 0) - log1pf_(expf_(-Swift.abs($0))) }
        case .softplus: y = Elementwise.map(self) { $0 > 20 ? $0 : log1pf_(expf_($0)) }
        case .erf: y = Elementwise.map(self) { erff_($0) }
        case .atan: y = Elementwise.map(self) { atanf_($0) }
        }
        guard node != nil, GradMode.isEnabled else { return y }
        return Tensor.record(y, .unary(op, x: detached(), y: y), [self])
    }

    public func sqrt() -> Tensor { unary(.sqrt) }
    public func exp() -> Tensor { unary(.exp) }
    public func log() -> Tensor { unary(.log) }
    public func tanh() -> Tensor { unary(.tanh) }
    public func sigmoid() -> Tensor { unary(.sigmoid) }
    public func relu() -> Tensor { unary(.relu) }
    /// GELU with the error function (PyTorch's default `approximate='none'`): `x·Φ(x)`, Φ the standard normal
    /// CDF (Hendrycks & Gimpel, *Gaussian Error Linear Units*, 2016), computed with Abramowitz & Stegun's
    /// 7.1.26 error function (Hastings' approximation; absolute error ≤ 1.5e-7 in Φ) on the vector units.
    public func gelu() -> Tensor { unary(.gelu) }
    /// SiLU / swish: `x · σ(x)`.
    public func silu() -> Tensor { unary(.silu) }
    public func abs() -> Tensor { unary(.abs) }
    public func sin() -> Tensor { unary(.sin) }
    public func cos() -> Tensor { unary(.cos) }
    /// `log σ(x) = min(x, 0) − log1p(e^{−|x|})`, stable for large |x| (as `F.logsigmoid`).
    public func logSigmoid() -> Tensor { unary(.logSigmoid) }
    /// `log(1 + eˣ)`, linear above 20 (as `F.softplus` with its default threshold).
    public func softplus() -> Tensor { unary(.softplus) }
    /// The error function `erf(x) = 2/√π ∫₀ˣ e^{−t²} dt`.
    public func erf() -> Tensor { unary(.erf) }
    /// `arctan(x)`.
    public func atan() -> Tensor { unary(.atan) }
    /// `x^p` for a constant exponent.
    public func pow(_ p: Float) -> Tensor { unary(.pow(p)) }
    /// `x²`.
    public func squared() -> Tensor { unary(.pow(2)) }
    /// Clamps into `[min, max]`; the gradient passes where `min ≤ x ≤ max` (as in PyTorch).
    public func clamped(min lo: Float = -.infinity, max hi: Float = .infinity) -> Tensor {
        precondition(!(lo > hi), "clamped: min \(lo) > max \(hi)")
        return unary(.clamp(min: lo, max: hi))
    }
    /// -1, 0 or 1 (NaN stays NaN). Not differentiable.
    public func sign() -> Tensor { Elementwise.map(self) { $0 > 0 ? 1 : ($0 < 0 ? -1 : ($0 == 0 ? 0 : $0)) } }
    /// Rounds half to even, as `torch.round`. Not differentiable.
    public func rounded() -> Tensor { Elementwise.map(self) { $0.rounded(.toNearestOrEven) } }
    public func floor() -> Tensor { Elementwise.map(self) { $0.rounded(.down) } }
}

@inline(__always) func sigmoidScalar(_ x: Float) -> Float {
    x >= 0 ? 1 / (1 + expf_(-x)) : { let e = expf_(x); return e / (1 + e) }()
}

extension Tensor {
    /// Element-wise tanh with the library's vectorised kernel (Cephes-style, ≤ ~2 ULP; the same value for
    /// an element wherever it sits in the buffer).
    static func tanhValues(_ x: Tensor) -> Tensor {
        Tensor.uninitialized(x.shape) { out in
            x.scalars.withUnsafeBufferPointer { vq_tanh($0.baseAddress!, out.baseAddress!, Int64(out.count)) }
        }
    }
}

extension Tensor {
    /// Element-wise GELU with the library's kernel (`vq_gelu`), split over the threads for large tensors.
    static func geluValues(_ x: Tensor) -> Tensor {
        Tensor.uninitialized(x.shape) { out in
            x.scalars.withUnsafeBufferPointer { px in
                nonisolated(unsafe) let (src, dst) = (px.baseAddress!, out.baseAddress!)
                Elementwise.ranges(out.count) { r in vq_gelu(GEMM.level, src + r.lowerBound, dst + r.lowerBound, Int64(r.count)) }
            }
        }
    }

    /// `g · GELU′(x)` in one pass (`vq_gelu_backward`).
    static func geluGradient(_ g: Tensor, x: Tensor) -> Tensor {
        precondition(g.shape == x.shape, "gelu backward: gradient \(g.shape) for input \(x.shape)")
        return Tensor.uninitialized(x.shape) { out in
            x.scalars.withUnsafeBufferPointer { px in
                g.scalars.withUnsafeBufferPointer { pg in
                    nonisolated(unsafe) let (src, grad, dst) = (px.baseAddress!, pg.baseAddress!, out.baseAddress!)
                    Elementwise.ranges(out.count) { r in
                        vq_gelu_backward(GEMM.level, src + r.lowerBound, grad + r.lowerBound, dst + r.lowerBound, Int64(r.count))
                    }
                }
            }
        }
    }
}

/// The library's tanh over a buffer (in place allowed).
public func tanhInPlace(_ p: UnsafeMutablePointer<Float>, count: Int) { vq_tanh(p, p, Int64(count)) }

/// FSQ's grid over a buffer of bounded values (in place: the codes), with the library's kernel: per channel
/// `j`, with `b = t·halfL[j] − offset[j]`, `q = (b + (rint(b) − b)) / halfWidth[j]` (the reference's
/// straight-through rounding, +0 where `rint` gives −0), and per row of `d` values the index
/// `rint(Σ_j ((q·halfWidth[j] + halfWidth[j])·basis[j]))`, summed in channel order, or −1 for a row with NaN.
/// Every product and sum is rounded on its own (no fused multiply-add), on the vector units when available.
public func fsqGridInPlace(_ t: UnsafeMutablePointer<Float>, rows: Int, d: Int, halfL: UnsafePointer<Float>, offset: UnsafePointer<Float>,
                           halfWidth: UnsafePointer<Float>, basis: UnsafePointer<Float>, indices: UnsafeMutablePointer<Int64>) {
    vq_fsq_grid(GEMM.level, t, Int64(rows), Int64(d), halfL, offset, halfWidth, basis, indices)
}

/// `Σ a[j]·b[j]` over `count` floats with the library's dot-product kernel (eight-lane partial sums in a fixed
/// order, so the value does not depend on the thread that computes it).
public func dotProduct(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float { GEMM.dot(a, b, count) }
