import VQTensor

/// Ways to pass gradients through the non-differentiable nearest-code choice.
public enum GradientEstimator {
    /// The straight-through estimator (Bengio et al., 2013; van den Oord et al., 2017):
    /// the value of `target`, the gradient of `source`: `source + (target − source).detached()`.
    public static func straightThrough(_ source: Tensor, _ target: Tensor) -> Tensor {
        source + (target - source).detached()
    }

    /// The rotation trick (Fifty et al., *Restructuring Vector Quantization with the Rotation Trick*,
    /// 2024, §4.2): the value of `target`, obtained from `source` by a rotation and scaling that are
    /// treated as constants, so the gradient reaching `source` is rotated like the vector.
    ///
    /// With `u = s/‖s‖`, `q = t/‖t‖`, `w = (u + q)/‖u + q‖` (all detached):
    /// `out = (s − 2(s·w)w + 2(s·u)q) · ‖t‖/‖s‖`, norms clamped at 1e-6 as the reference's `safe_div`.
    ///
    /// One pass per row forward; the backward is the transposed map on the gradient,
    /// `(g − 2(g·w)w + 2(g·q)u) · ‖t‖/‖s‖`, recomputing `u`, `q`, `w` from the saved rows (no temporaries of
    /// the input's size beyond the output).
    ///
    /// - Complexity: O(N · d) forward and backward; rows split over the threads (each row alone, so the
    ///   result does not depend on the thread count).
    public static func rotate(_ source: Tensor, to target: Tensor) -> Tensor {
        precondition(source.shape == target.shape, "rotate(_:to:): shapes \(source.shape) and \(target.shape)")
        let d = source.shape.last ?? 1
        let rows = d == 0 ? 0 : source.count / d
        let s = source.detached(), t = target.detached()
        let value = Tensor.rowwise(s, t, rows: rows, d: d) { src, tgt, dst, d in
            rotateRow(src, tgt, vector: src, into: dst, d: d)
        }
        guard source.requiresGradient && GradMode.isEnabled else { return value }
        return Tensor.custom(value, input: source) { g in
            // R is applied as its transpose: Rᵀg = g − 2w(w·g) + 2u(q·g), i.e. the same row map with u and q swapped.
            Tensor.rowwise(s, t, rows: rows, d: d, extra: g) { src, tgt, grad, dst, d in
                rotateRow(src, tgt, vector: grad, into: dst, d: d, transposed: true)
            }
        }
    }

    /// One row of the rotation trick applied to `vector` (the source row forward, a gradient row backward):
    /// `(v − 2(v·w)w + 2(v·u)q) · ‖t‖/‖s‖`, or with `u` and `q` swapped when `transposed`.
    @inline(__always)
    static func rotateRow(_ s: UnsafePointer<Float>, _ t: UnsafePointer<Float>, vector v: UnsafePointer<Float>,
                          into out: UnsafeMutablePointer<Float>, d: Int, transposed: Bool = false) {
        var ss: Float = 0, tt: Float = 0
        for j in 0..<d { ss += s[j] * s[j]; tt += t[j] * t[j] }
        let normS = Swift.max(ss.squareRoot(), 1e-6), normT = Swift.max(tt.squareRoot(), 1e-6)
        // ‖u + q‖ with u = s/‖s‖, q = t/‖t‖; then v·w and v·u (or v·q).
        var ww: Float = 0
        for j in 0..<d { let x = s[j] / normS + t[j] / normT; ww += x * x }
        let normW = Swift.max(ww.squareRoot(), 1e-6)
        var vw: Float = 0, vu: Float = 0
        for j in 0..<d {
            let (u, q) = (s[j] / normS, t[j] / normT)
            vw += v[j] * ((u + q) / normW)
            vu += v[j] * (transposed ? q : u)
        }
        let scale = tt.squareRoot() / normS
        for j in 0..<d {
            let (u, q) = (s[j] / normS, t[j] / normT)
            let w = (u + q) / normW
            out[j] = (v[j] - 2 * (vw * w) + 2 * (vu * (transposed ? u : q))) * scale
        }
    }

    /// The directional reparameterisation (DiVeQ: Vali et al., *DiVeQ: Differentiable Vector Quantization
    /// Using the Reparameterization Trick*, 2025, Fig. 1): with `e = target − source`,
    /// `source + unit(e + √variance · noise).detached() · ‖e‖` — close to `target` in value, with gradients to
    /// `source` and, through `‖e‖`, to `target` (the codes). `unit` divides by `max(‖·‖, 1e-6)`.
    public static func directional(_ source: Tensor, to target: Tensor, noise: Tensor, variance: Float) -> Tensor {
        precondition(source.shape == target.shape && noise.shape == target.shape,
                     "directional(_:to:noise:variance:): shapes \(source.shape), \(target.shape), noise \(noise.shape)")
        let e = target - source
        let length = e.squared().sum(axis: -1, keepDims: true).sqrt()
        let direction = withoutGradient { (e + Float(Double(variance).squareRoot()) * noise).l2Normalized(axis: -1, eps: 1e-6) }
        return source + direction * length
    }
}

extension Tensor {
    /// `[rows, d]`-shaped output (the shape of `a`) computed row by row from the rows of `a` and `b` (and of
    /// `extra`), rows split over the threads.
    static func rowwise(_ a: Tensor, _ b: Tensor, rows: Int, d: Int,
                        _ body: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
        rowwise(a, b, rows: rows, d: d, extra: a) { x, y, _, out, d in body(x, y, out, d) }
    }

    static func rowwise(_ a: Tensor, _ b: Tensor, rows: Int, d: Int, extra: Tensor,
                        _ body: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> Tensor {
        precondition(a.count == rows * d && b.count == rows * d && extra.count == rows * d,
                     "rowwise: \(a.shape), \(b.shape), \(extra.shape) for \(rows) rows of \(d)")
        return Tensor(Array(unsafeUninitializedCapacity: rows * d) { out, n in
            a.withUnsafeScalars { pa in
                b.withUnsafeScalars { pb in
                    extra.withUnsafeScalars { pe in
                        nonisolated(unsafe) let (x, y, e, o) = (pa.baseAddress, pb.baseAddress, pe.baseAddress, out.baseAddress)
                        withoutActuallyEscaping(body) { body in
                            nonisolated(unsafe) let body = body
                            Threads.forRanges(rows, minChunk: 256) { range in
                                for r in range { body(x! + r * d, y! + r * d, e! + r * d, o! + r * d, d) }
                            }
                        }
                    }
                }
            }
            n = rows * d
        }, shape: a.shape)
    }
}