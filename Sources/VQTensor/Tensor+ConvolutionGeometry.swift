// Convolutions with any stride, padding, dilation and groups over 1–3 spatial axes, the sliding windows
// (im2col) behind pooling, and transposed convolutions.

extension Tensor {
    /// Convolution over 1, 2 or 3 spatial axes (PyTorch's `conv1d/2d/3d`): input `[b, in, s₁, …]`, `weight
    /// [out, in / groups, k₁, …]`, optional `bias [out]`, zero padding; per-axis `stride`, `padding`,
    /// `dilation` (one value each, or one per axis). Output `[b, out, o₁, …]` with
    /// `oᵢ = (sᵢ + 2·paddingᵢ − dilationᵢ·(kᵢ − 1) − 1) / strideᵢ + 1`.
    ///
    /// Stride-1 convolutions with one group (the common 3×3 "same" layers, and transposed convolutions, which
    /// become stride-1 ones) run without unfolding: the input is copied once into a zero-padded,
    /// channel-major buffer and the micro-kernels read its shifted views in place
    /// (`ShiftedConvolutionPlan`). Other strides unfold the input (im2col) into the GEMM's layout
    /// (``ConvolutionPlan``); grouped ones unfold per group. Differentiable in the input, the weight and the bias.
    ///
    /// - Complexity: O(b · Πoᵢ · out · in/groups · Πkᵢ); the stride-1 path keeps about the padded input
    ///   (`b · in · Π(sᵢ + 2·paddingᵢ)` floats) for the backward, the unfolded paths `b · Πoᵢ · in · Πkᵢ`.
    public func convolution(weight: Tensor, bias: Tensor? = nil, stride: [Int] = [1], padding: [Int] = [0], dilation: [Int] = [1],
                            groups: Int = 1) -> Tensor {
        let d = rank - 2
        precondition((1...3).contains(d) && weight.rank == rank, "convolution: input \(shape) must be [b, c, s…] with 1–3 spatial axes, weight \(weight.shape) of the same rank")
        func perAxis(_ v: [Int], _ name: String) -> [Int] {
            precondition(v.count == 1 || v.count == d, "convolution: \(name) \(v) for \(d) spatial axes")
            return v.count == 1 ? Array(repeating: v[0], count: d) : v
        }
        let (st, pad, dil) = (perAxis(stride, "stride"), perAxis(padding, "padding"), perAxis(dilation, "dilation"))
        let (outChannels, cg) = (weight.shape[0], weight.shape[1])
        let kernel = Array(weight.shape.dropFirst(2))
        let (b, inChannels) = (shape[0], shape[1])
        precondition(groups > 0 && inChannels == cg * groups && outChannels % groups == 0 && st.allSatisfy { $0 > 0 }
                     && pad.allSatisfy { $0 >= 0 } && dil.allSatisfy { $0 > 0 } && (bias == nil || bias!.shape == [outChannels]),
                     "convolution: input \(shape), weight \(weight.shape), bias \(bias?.shape ?? []), groups \(groups), stride \(st), padding \(pad), dilation \(dil)")
        if groups == 1 && st.allSatisfy({ $0 == 1 }) {
            return convolution(shifted: ShiftedConvolutionPlan(input: shape, kernel: kernel, padding: pad, dilation: dil), weight: weight, bias: bias)
        }
        if groups == 1 {
            return convolution(plan: ConvolutionPlan(input: shape, kernel: kernel, stride: st, padding: pad, dilation: dil), weight: weight, bias: bias)
        }
        let (unfoldedInput, outShape) = unfolded(kernel: kernel, stride: st, padding: pad, dilation: dil)  // [b, in, O, K]
        let outCount = outShape.reduce(1, *), kCount = kernel.reduce(1, *)
        let og = outChannels / groups
        var outs: [Tensor] = []
        for g in 0..<groups {
            let xg = groups == 1 ? unfoldedInput : unfoldedInput.slice(axis: 1, (g * cg)..<((g + 1) * cg))
            let cols = xg.permuted([0, 2, 1, 3]).reshaped([b * outCount, cg * kCount])
            let wg = (groups == 1 ? weight : weight.slice(axis: 0, (g * og)..<((g + 1) * og))).reshaped([og, cg * kCount])
            outs.append(groups == 1 ? cols.linear(weight: wg, bias: bias) : cols.matmul(transposed: wg))
        }
        var y = groups == 1 ? outs[0] : Tensor.concat(outs, axis: 1)
        if groups > 1, let bias { y = y + bias }
        return y.reshaped([b, outCount, outChannels]).permuted([0, 2, 1]).reshaped([b, outChannels] + outShape)
    }

    /// The sliding windows of `[b, c, s…]` (im2col): `[b, c, Πo, Πk]` — window `o`, offset `q` reads the
    /// position `o·stride + q·dilation` of the input padded by `padding` (filled with `padValue`) — and the
    /// output shape `o…`. An index gather, so differentiable.
    public func unfolded(kernel: [Int], stride st: [Int], padding pad: [Int], dilation dil: [Int], padValue: Float = 0) -> (Tensor, [Int]) {
        let d = rank - 2
        let (b, c) = (shape[0], shape[1])
        let spatial = Array(shape.dropFirst(2))
        let padded = zip(spatial, pad).map { $0 + 2 * $1 }
        var outShape = [Int](repeating: 0, count: d)
        for i in 0..<d {
            let reach: Int = dil[i] * (kernel[i] - 1) + 1
            outShape[i] = (padded[i] - reach) / st[i] + 1
        }
        precondition(outShape.allSatisfy { $0 > 0 }, "unfolded: input \(shape) is smaller than the kernel's reach \(kernel) (padding \(pad), dilation \(dil))")
        var xp = self
        for i in 0..<d where pad[i] > 0 {
            var zs = xp.shape
            zs[2 + i] = pad[i]
            let fill = Tensor(repeating: padValue, shape: zs)
            xp = Tensor.concat([fill, xp, fill], axis: 2 + i)
        }
        let outCount = outShape.reduce(1, *), kCount = kernel.reduce(1, *)
        var strides = [Int](repeating: 1, count: d)
        for i in Swift.stride(from: d - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * padded[i + 1] }
        var positions = [Int](repeating: 0, count: outCount * kCount)
        for o in 0..<outCount {
            var rem = o, base = 0
            for i in Swift.stride(from: d - 1, through: 0, by: -1) {
                base += (rem % outShape[i]) * st[i] * strides[i]
                rem /= outShape[i]
            }
            for q in 0..<kCount {
                var r = q, off = 0
                for i in Swift.stride(from: d - 1, through: 0, by: -1) {
                    off += (r % kernel[i]) * dil[i] * strides[i]
                    r /= kernel[i]
                }
                positions[o * kCount + q] = base + off
            }
        }
        let cols = xp.reshaped([b, c, padded.reduce(1, *)]).indexSelect(axis: 2, IndexTensor(positions))
        return (cols.reshaped([b, c, outCount, kCount]), outShape)
    }

    /// 1-D convolution: ``convolution(weight:bias:stride:padding:dilation:groups:)`` over `[b, in, n]`.
    public func conv1d(weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1) -> Tensor {
        convolution(weight: weight, bias: bias, stride: [stride], padding: [padding], dilation: [dilation], groups: groups)
    }
}

extension Tensor {
    /// Transposed convolution (PyTorch's `conv_transpose1d/2d/3d`; the gradient of a convolution with respect
    /// to its input): `weight [in, out / groups, k…]`, output `oᵢ = (sᵢ − 1)·strideᵢ − 2·paddingᵢ +
    /// dilationᵢ·(kᵢ − 1) + outputPaddingᵢ + 1`. Computed as a stride-1 convolution of the zero-stuffed, padded
    /// input with the flipped, transposed kernel; differentiable in the input, weight and bias.
    public func convolutionTransposed(weight: Tensor, bias: Tensor? = nil, stride: [Int] = [1], padding: [Int] = [0], outputPadding: [Int] = [0],
                                      dilation: [Int] = [1], groups: Int = 1) -> Tensor {
        let d = rank - 2
        precondition((1...3).contains(d) && weight.rank == rank && shape[1] == weight.shape[0] && weight.shape[0] % groups == 0,
                     "convolutionTransposed: input \(shape), weight \(weight.shape) ([in, out / groups, k…]), groups \(groups)")
        func full(_ v: [Int]) -> [Int] { v.count == 1 ? Array(repeating: v[0], count: d) : v }
        let (st, pad, outPad, dil) = (full(stride), full(padding), full(outputPadding), full(dilation))
        precondition(zip(outPad, zip(st, dil)).allSatisfy { $0 < Swift.max($1.0, $1.1) }, "convolutionTransposed: output padding \(outPad) must be below the stride or dilation")
        let kernel = Array(weight.shape.dropFirst(2))
        var x = self
        for i in 0..<d {
            let axis = 2 + i, n = x.shape[axis]
            if st[i] > 1 {
                var s = x.shape
                s[axis] = (n - 1) * st[i] + 1
                x = Tensor.zeros(s).indexAdd(axis: axis, IndexTensor((0..<n).map { $0 * st[i] }), x)
            }
            let left = dil[i] * (kernel[i] - 1) - pad[i], right = left + outPad[i]
            let len = x.shape[axis]
            if left < 0 || right < 0 {
                x = x.slice(axis: axis, Swift.max(0, -left)..<(len - Swift.max(0, -right)))
            }
            let (l, r) = (Swift.max(0, left), Swift.max(0, right))
            if l > 0 || r > 0 {
                var zl = x.shape, zr = x.shape
                zl[axis] = l
                zr[axis] = r
                x = Tensor.concat([Tensor.zeros(zl), x, Tensor.zeros(zr)], axis: axis)
            }
        }
        // [in, out/g, k…] → per group [out/g, in/g, k…], spatially flipped.
        let (inC, og) = (weight.shape[0], weight.shape[1])
        let ig = inC / groups
        var w = weight
        for i in 0..<d {
            let k = kernel[i]
            w = w.indexSelect(axis: 2 + i, IndexTensor((0..<k).map { k - 1 - $0 }))
        }
        let perm = [1, 0] + Array(2..<weight.rank)
        let wt = groups == 1 ? w.permuted(perm)
            : Tensor.concat((0..<groups).map { g in w.slice(axis: 0, (g * ig)..<((g + 1) * ig)).permuted(perm) }, axis: 0)
        precondition(wt.shape[0] == og * groups)
        return x.convolution(weight: wt, bias: bias, stride: [1], padding: [0], dilation: dil, groups: groups)
    }
}
