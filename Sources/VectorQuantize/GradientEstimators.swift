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
    public static func rotate(_ source: Tensor, to target: Tensor) -> Tensor {
        precondition(source.shape == target.shape, "rotate(_:to:): shapes \(source.shape) and \(target.shape)")
        let d = source.shape.last ?? 1
        let s = source.reshaped([-1, d]), t = target.reshaped([-1, d]).detached()
        let normS = s.detached().squared().sum(axis: -1, keepDims: true).sqrt()
        let normT = t.squared().sum(axis: -1, keepDims: true).sqrt()
        let u = s.detached() / normS.maximum(1e-6)
        let q = t / normT.maximum(1e-6)
        let w = (u + q).l2Normalized(axis: 1, eps: 1e-6)
        let rotated = s - 2 * ((s * w).sum(axis: -1, keepDims: true) * w) + 2 * ((s * u).sum(axis: -1, keepDims: true) * q)
        return (rotated * (normT / normS.maximum(1e-6))).reshaped(source.shape)
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
