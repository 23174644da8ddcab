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
        let value = Tensor.rowwise(s, t, rows: rows, d: d) { src, tgt, dst, d, scratch in
            rotateRow(src, tgt, vector: src, into: dst, d: d, scratch: scratch)
        }
        guard source.requiresGradient && GradMode.isEnabled else { return value }
        return Tensor.custom(value, input: source) { g in
            // R is applied as its transpose: Rᵀg = g − 2w(w·g) + 2u(q·g), i.e. the same row map with u and q swapped.
            Tensor.rowwise(s, t, rows: rows, d: d, extra: g) { src, tgt, grad, dst, d, scratch in
                rotateRow(src, tgt, vector: grad, into: dst, d: d, scratch: scratch, transposed: true)
            }
        }
    }

    /// One row of the rotation trick applied to `vector` (the source row forward, a gradient row backward):
    /// `(v − 2(v·w)w + 2(v·u)q) · ‖t‖/‖s‖`, or with `u` and `q` swapped when `transposed`. `scratch` holds
    /// `2·d` floats (`u` and `q`); `w` is staged in the output row. Sums with the library's dot-product kernel.
    @inline(__always)
    static func rotateRow(_ s: UnsafePointer<Float>, _ t: UnsafePointer<Float>, vector v: UnsafePointer<Float>,
                          into out: UnsafeMutablePointer<Float>, d: Int, scratch: UnsafeMutablePointer<Float>, transposed: Bool = false) {
        let normS = Swift.max(dotProduct(s, s, count: d).squareRoot(), 1e-6)
        let normTRaw = dotProduct(t, t, count: d).squareRoot(), normT = Swift.max(normTRaw, 1e-6)
        let (u, q) = (scratch, scratch + d)
        for j in 0..<d { u[j] = s[j] / normS; q[j] = t[j] / normT }
        let w = out  // u + q, then w, staged in the output row (overwritten last)
        for j in 0..<d { w[j] = u[j] + q[j] }
        let normW = Swift.max(dotProduct(w, w, count: d).squareRoot(), 1e-6)
        for j in 0..<d { w[j] = w[j] / normW }
        let vw = dotProduct(v, w, count: d), vu = dotProduct(v, transposed ? q : u, count: d)
        let scale = normTRaw / normS
        let other = transposed ? u : q
        for j in 0..<d { out[j] = (v[j] - 2 * (vw * w[j]) + 2 * (vu * other[j])) * scale }
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
    /// `extra`), rows split over the threads; `body` also gets `2·d` floats of scratch.
    static func rowwise(_ a: Tensor, _ b: Tensor, rows: Int, d: Int,
                        _ body: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        rowwise(a, b, rows: rows, d: d, extra: a) { x, y, _, out, d, scratch in body(x, y, out, d, scratch) }
    }

    static func rowwise(_ a: Tensor, _ b: Tensor, rows: Int, d: Int, extra: Tensor,
                        _ body: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int,
                                 UnsafeMutablePointer<Float>) -> Void) -> Tensor {
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
                                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 2 * Swift.max(d, 1))
                                defer { scratch.deallocate() }
                                for r in range { body(x! + r * d, y! + r * d, e! + r * d, o! + r * d, d, scratch) }
                            }
                        }
                    }
                }
            }
            n = rows * d
        }, shape: a.shape)
    }
}