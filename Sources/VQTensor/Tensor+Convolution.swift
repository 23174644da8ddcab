import CVQKernels

// Convolution as one differentiable operation: an unfold (im2col) written straight into the GEMM's layout,
// one product per batch element that writes the output in its final `[out, positions]` layout, and a
// backward that folds the column gradients back (col2im) without any generic gather or scatter.

/// The geometry of a convolution: which input position (or padding, -1) each (output position, kernel
/// offset) pair reads.
public struct ConvolutionPlan: Sendable {
    public let batch: Int, channels: Int
    public let inputShape: [Int], outputShape: [Int], kernel: [Int]
    /// `[Πo · Πk]`: the flat input position read by output position `o` and kernel offset `q`, or -1.
    let positions: [Int]
    /// Whether the windows tile the input without overlap, gaps or padding (stride = kernel, no padding or
    /// dilation): window `o` then reads a block starting at its origin.
    let tiles: Bool
    var inputCount: Int { inputShape.reduce(1, *) }
    var outputCount: Int { outputShape.reduce(1, *) }
    var kernelCount: Int { kernel.reduce(1, *) }

    public init(input: [Int], kernel: [Int], stride: [Int], padding: [Int], dilation: [Int]) {
        let d = kernel.count
        precondition(input.count == 2 + d && stride.count == d && padding.count == d && dilation.count == d,
                     "ConvolutionPlan: input \(input), kernel \(kernel), stride \(stride), padding \(padding), dilation \(dilation)")
        (batch, channels) = (input[0], input[1])
        let spatial = Array(input.dropFirst(2))
        inputShape = spatial
        self.kernel = kernel
        var out = [Int](repeating: 0, count: d)
        for i in 0..<d {
            let reach: Int = dilation[i] * (kernel[i] - 1) + 1
            out[i] = (spatial[i] + 2 * padding[i] - reach) / stride[i] + 1
        }
        precondition(out.allSatisfy { $0 > 0 }, "convolution: input \(input) is smaller than the kernel's reach \(kernel) (padding \(padding), dilation \(dilation))")
        outputShape = out
        var strides = [Int](repeating: 1, count: d)
        for i in Swift.stride(from: d - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * spatial[i + 1] }
        let oCount = out.reduce(1, *), kCount = kernel.reduce(1, *)
        var pos = [Int](repeating: -1, count: oCount * kCount)
        var oIdx = [Int](repeating: 0, count: d), qIdx = [Int](repeating: 0, count: d)
        for o in 0..<oCount {
            var r = o
            for i in Swift.stride(from: d - 1, through: 0, by: -1) { oIdx[i] = r % out[i]; r /= out[i] }
            for q in 0..<kCount {
                var rq = q
                for i in Swift.stride(from: d - 1, through: 0, by: -1) { qIdx[i] = rq % kernel[i]; rq /= kernel[i] }
                var flat = 0, inside = true
                for i in 0..<d {
                    let p = oIdx[i] * stride[i] + qIdx[i] * dilation[i] - padding[i]
                    if p < 0 || p >= spatial[i] { inside = false; break }
                    flat += p * strides[i]
                }
                pos[o * kCount + q] = inside ? flat : -1
            }
        }
        positions = pos
        tiles = zip(stride, kernel).allSatisfy { $0 == $1 } && padding.allSatisfy { $0 == 0 } && dilation.allSatisfy { $0 == 1 }
    }

    /// `[b · Πo, c · Πk]` columns of `x [b, c, s…]` (zero where the window reads padding).
    func unfold(_ x: Tensor) -> Tensor {
        let (b, c, n, o, k) = (batch, channels, inputCount, outputCount, kernelCount)
        return Tensor.uninitialized([b * o, c * k]) { cols in
            x.withUnsafeScalars { px in
                positions.withUnsafeBufferPointer { pp in
                    nonisolated(unsafe) let (xs, dst, pos) = (px.baseAddress!, cols.baseAddress!, pp.baseAddress!)
                    Threads.forRanges(b * o, minChunk: 64) { rows in
                        for row in rows {
                            let (bi, oi) = (row / o, row % o)
                            let out = dst + row * c * k, window = pos + oi * k
                            for ci in 0..<c {
                                let src = xs + (bi * c + ci) * n, line = out + ci * k
                                for q in 0..<k { let p = window[q]; line[q] = p >= 0 ? src[p] : 0 }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The input gradient `[b, c, s…]` of column gradients `[b · Πo, c · Πk]`: every column value added back
    /// to the position it read, in the order of `o`, then `q` (each batch element on one thread: the column
    /// rows are read contiguously and the element's gradient stays in cache).
    func fold(_ g: Tensor) -> Tensor {
        let (b, c, n, o, k) = (batch, channels, inputCount, outputCount, kernelCount)
        var out = Tensor.zeros([b, c] + inputShape)
        out.withUnsafeMutableScalars { pd in
            g.withUnsafeScalars { pg in
                positions.withUnsafeBufferPointer { pp in
                    nonisolated(unsafe) let (dx, gs, pos) = (pd.baseAddress!, pg.baseAddress!, pp.baseAddress!)
                    Threads.forRanges(b, minChunk: 1) { items in
                        for bi in items {
                            let plane = dx + bi * c * n
                            for oi in 0..<o {
                                let row = gs + (bi * o + oi) * c * k, window = pos + oi * k
                                for q in 0..<k {
                                    let p = window[q]
                                    guard p >= 0 else { continue }
                                    var dst = plane + p, src = row + q
                                    for _ in 0..<c { dst.pointee += src.pointee; dst += n; src += k }
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

extension Tensor {
    /// Convolution with one group: `self [b, c, s…]`, `weight [out, c, k…]`, optional `bias [out]` →
    /// `[b, out, o…]`, as one differentiable operation (see ``ConvolutionPlan``).
    ///
    /// - Complexity: O(b · Πo · out · c · Πk) on the GEMM kernels; the columns (`b · Πo · c · Πk` floats)
    ///   are kept for the backward.
    public func convolution(plan: ConvolutionPlan, weight: Tensor, bias: Tensor?) -> Tensor {
        let (b, c, o, k) = (plan.batch, plan.channels, plan.outputCount, plan.kernelCount)
        let outC = weight.shape[0]
        precondition(shape == [b, c] + plan.inputShape && weight.shape == [outC, c] + plan.kernel && (bias == nil || bias!.shape == [outC]),
                     "convolution: input \(shape), weight \(weight.shape), bias \(bias?.shape ?? []) for the plan \([b, c] + plan.inputShape), kernel \(plan.kernel)")
        let cols = plan.unfold(detached())
        let w = weight.detached()
        // One product for the whole batch: rows [b·o, out] = cols · Wᵀ (+ bias), then each batch element's
        // [o, out] block transposed into the output's [out, o].
        var rows = [Float](repeating: 0, count: b * o * outC)
        rows.withUnsafeMutableBufferPointer { pr in
            if let bias {
                bias.withUnsafeScalars { pb in
                    for r in 0..<(b * o) { (pr.baseAddress! + r * outC).update(from: pb.baseAddress!, count: outC) }
                }
            }
            cols.withUnsafeScalars { pc in
                w.withUnsafeScalars { pw in
                    GEMM.gemm(m: b * o, n: outC, k: c * k, a: pc.baseAddress!, ars: c * k, acs: 1, b: pw.baseAddress!, brs: 1, bcs: c * k,
                              c: pr.baseAddress!, ldc: outC, accumulate: bias != nil)
                }
            }
        }
        let out = Tensor.uninitialized([b, outC] + plan.outputShape) { y in
            rows.withUnsafeBufferPointer { pr in
                Self.transposeBlocks(pr.baseAddress!, y.baseAddress!, blocks: b, rows: o, columns: outC)
            }
        }
        var inputs = [self, weight]
        if let bias { inputs.append(bias) }
        return Tensor.record(out, .convolution(plan, cols: cols, weight: w, hasBias: bias != nil), inputs)
    }

    /// The gradients of ``convolution(plan:weight:bias:)``: input (folded columns), weight, bias.
    /// `needs[i]`: whether input `i` (x, W, b) takes a gradient; the others are not computed.
    static func convolutionBackward(_ g: Tensor, plan: ConvolutionPlan, cols: Tensor, weight w: Tensor, hasBias: Bool, needs: [Bool]) -> [Tensor?] {
        let (b, c, o, k) = (plan.batch, plan.channels, plan.outputCount, plan.kernelCount)
        let outC = w.shape[0]
        // g [b, out, o] → rows [b·o, out]; then dW = rowsᵀ · cols and dcols = rows · W, one product each.
        var gRows = [Float](repeating: 0, count: b * o * outC)
        g.withUnsafeScalars { pg in
            gRows.withUnsafeMutableBufferPointer { pr in Self.transposeBlocks(pg.baseAddress!, pr.baseAddress!, blocks: b, rows: outC, columns: o) }
        }
        // Plain (non-optional) buffers: mutating through an optional would copy them first.
        var gwValues = [Float](repeating: 0, count: needs[1] ? w.count : 0)
        var gcolValues = [Float](repeating: 0, count: needs[0] ? b * o * c * k : 0)
        gRows.withUnsafeBufferPointer { pr in
            cols.withUnsafeScalars { pc in
                w.withUnsafeScalars { pw in
                    if needs[1] {
                        gwValues.withUnsafeMutableBufferPointer { pgw in
                            GEMM.gemm(m: outC, n: c * k, k: b * o, a: pr.baseAddress!, ars: 1, acs: outC, b: pc.baseAddress!, brs: c * k, bcs: 1,
                                      c: pgw.baseAddress!, ldc: c * k, accumulate: false)
                        }
                    }
                    if needs[0] {
                        gcolValues.withUnsafeMutableBufferPointer { pgc in
                            GEMM.gemm(m: b * o, n: c * k, k: outC, a: pr.baseAddress!, ars: outC, acs: 1, b: pw.baseAddress!, brs: c * k, bcs: 1,
                                      c: pgc.baseAddress!, ldc: c * k, accumulate: false)
                        }
                    }
                }
            }
        }
        let gw = needs[1] ? Tensor(gwValues, shape: w.shape) : nil
        let gcols = needs[0] ? Tensor(gcolValues, shape: [b * o, c * k]) : nil
        var grads: [Tensor?] = [gcols.map { plan.fold($0) }, gw]
        if hasBias { grads.append(needs[2] ? g.reshaped([b, outC, o]).sum(axes: [0, 2]) : nil) }
        return grads
    }

    /// `dst[blk][j][i] = src[blk][i][j]` for `blocks` matrices of `rows × columns` (threads split the blocks).
    static func transposeBlocks(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, blocks: Int, rows: Int, columns: Int) {
        nonisolated(unsafe) let (s, d) = (src, dst)
        let size = rows * columns
        Threads.forRanges(blocks, minChunk: Swift.max(1, 16_384 / Swift.max(size, 1))) { range in
            for blk in range {
                let a = s + blk * size, t = d + blk * size
                var i0 = 0
                while i0 < rows {
                    let i1 = Swift.min(rows, i0 + 32)
                    var j0 = 0
                    while j0 < columns {
                        let j1 = Swift.min(columns, j0 + 32)
                        for i in i0..<i1 { for j in j0..<j1 { t[j * rows + i] = a[i * columns + j] } }
                        j0 = j1
                    }
                    i0 = i1
                }
            }
        }
    }
}

extension Tensor {
    /// Max pooling of `[b, c, s…]` over the windows of `plan` (its `channels` are pooled one by one; padding is
    /// skipped, as −∞): `[b, c, o…]`. The gradient goes to the first largest element of each window.
    public func maxPool(plan: ConvolutionPlan) -> Tensor {
        let (b, c, n, o, k) = (plan.batch, plan.channels, plan.inputCount, plan.outputCount, plan.kernelCount)
        precondition(shape == [b, c] + plan.inputShape, "maxPool: input \(shape) for the plan \([b, c] + plan.inputShape)")
        var argmax = [Int32](repeating: 0, count: b * c * o)
        // Windows that tile a 2-D input are read as blocks (no position table); the same scan order.
        let blocks = plan.tiles && plan.kernel.count == 2
        let (kh, kw, width, ow) = blocks ? (plan.kernel[0], plan.kernel[1], plan.inputShape[1], plan.outputShape[1]) : (0, 0, 0, 1)
        let out = Tensor.uninitialized([b, c] + plan.outputShape) { y in
            withUnsafeScalars { px in
                plan.positions.withUnsafeBufferPointer { pp in
                    argmax.withUnsafeMutableBufferPointer { pa in
                        nonisolated(unsafe) let (xs, ys, pos, am) = (px.baseAddress!, y.baseAddress!, pp.baseAddress!, pa.baseAddress!)
                        Threads.forRanges(b * c, minChunk: 4) { pairs in
                            for pair in pairs {
                                let src = xs + pair * n
                                if blocks {
                                    vq_max_pool_tiles(GEMM.level, src, Int64(width), Int64(o / ow), Int64(ow), Int64(kh), Int64(kw), ys + pair * o, am + pair * o)
                                    continue
                                }
                                for oi in 0..<o {
                                    var best = -Float.infinity, at = -1
                                    let window = pos + oi * k
                                    for q in 0..<k {
                                        let p = window[q]
                                        guard p >= 0 else { continue }
                                        let v = src[p]
                                        if at < 0 || v > best || (v.isNaN && !best.isNaN) { best = v; at = p }
                                    }
                                    ys[pair * o + oi] = at < 0 ? -.infinity : best
                                    am[pair * o + oi] = Int32(at)
                                }
                            }
                        }
                    }
                }
            }
        }
        guard node != nil, GradMode.isEnabled else { return out }
        let picks = argmax, inputShape = shape
        return Tensor.custom(out, input: self) { g in
            Tensor.uninitialized(inputShape) { pd in
                g.withUnsafeScalars { pg in
                    picks.withUnsafeBufferPointer { pk in
                        nonisolated(unsafe) let (dst, gs, am) = (pd.baseAddress!, pg.baseAddress!, pk.baseAddress!)
                        Threads.forRanges(b * c, minChunk: 4) { pairs in
                            for pair in pairs {
                                let plane = dst + pair * n
                                plane.update(repeating: 0, count: n)
                                for oi in 0..<o where am[pair * o + oi] >= 0 { plane[Int(am[pair * o + oi])] += gs[pair * o + oi] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Nearest-neighbour upsampling of `[b, c, s…]` by an integer factor on every spatial axis: output position
    /// `o` reads `⌊o / scale⌋`. The gradient sums each `scale^axes` block (in the output's order).
    ///
    /// Row by row along the last axis: an output row repeats each element of its source row `scale` times, and
    /// the output rows that share a source row are copies of the first.
    public func upsampledNearest(scale: Int) -> Tensor {
        precondition(rank >= 3 && scale >= 1, "upsampledNearest: input \(shape), scale \(scale)")
        if scale == 1 { return self }
        let spatial = Array(shape.dropFirst(2)), up = spatial.map { $0 * scale }
        let planes = shape[0] * shape[1], n = spatial.reduce(1, *), m = up.reduce(1, *)
        let (w, wUp) = (spatial.last!, up.last!)
        // For every output row (all spatial axes but the last), the input row it reads.
        let rowsUp = m / wUp, leading = Array(up.dropLast()), leadingIn = Array(spatial.dropLast())
        var sourceRow = [Int](repeating: 0, count: rowsUp)
        for r in 0..<rowsUp {
            var rest = r, row = 0, stride = 1
            for i in Swift.stride(from: leading.count - 1, through: 0, by: -1) {
                row += (rest % leading[i]) / scale * stride
                stride *= leadingIn[i]
                rest /= leading[i]
            }
            sourceRow[r] = row
        }
        let out = Tensor.uninitialized(Array(shape.prefix(2)) + up) { y in
            withUnsafeScalars { px in
                sourceRow.withUnsafeBufferPointer { ps in
                    nonisolated(unsafe) let (xs, ys, rows) = (px.baseAddress!, y.baseAddress!, ps.baseAddress!)
                    Threads.forRanges(planes, minChunk: 8) { range in
                        for plane in range {
                            let a = xs + plane * n, z = ys + plane * m
                            for r in 0..<rowsUp {
                                let dst = z + r * wUp
                                if r > 0 && rows[r] == rows[r - 1] { dst.update(from: dst - wUp, count: wUp); continue }
                                let src = a + rows[r] * w
                                for x in 0..<w { for j in 0..<scale { dst[x * scale + j] = src[x] } }
                            }
                        }
                    }
                }
            }
        }
        guard node != nil, GradMode.isEnabled else { return out }
        let inputShape = shape, sources = sourceRow
        return Tensor.custom(out, input: self) { g in
            Tensor.uninitialized(inputShape) { pd in
                g.withUnsafeScalars { pg in
                    sources.withUnsafeBufferPointer { ps in
                        nonisolated(unsafe) let (dst, gs, rows) = (pd.baseAddress!, pg.baseAddress!, ps.baseAddress!)
                        Threads.forRanges(planes, minChunk: 8) { range in
                            for plane in range {
                                (dst + plane * n).update(repeating: 0, count: n)
                                for r in 0..<rowsUp {
                                    let d = dst + plane * n + rows[r] * w, src = gs + plane * m + r * wUp
                                    for x in 0..<w { for j in 0..<scale { d[x] += src[x * scale + j] } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
