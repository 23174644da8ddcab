import CVQKernels

// Stride-1 convolutions without im2col: the input is copied once into a zero-padded, channel-major buffer
// `[c][b · Πpadded]`, and output position `o` of kernel offset `q` reads that buffer at `anchor(o) + shift(q)`.
// The forward, the input gradient (the same product over the padded output gradient, kernel flipped) and
// the weight gradient (a GEMM whose columns are shifted views of the buffer) all read views of one buffer.

/// The geometry of a stride-1 convolution over a padded, channel-major copy of its input (any padding and
/// dilation, 1–3 spatial axes). Positions are flat indices of the padded grid; output position `t` is
/// anchored at the padded position of its window's first element, and kernel offset `q` adds `shifts[q]`.
struct ShiftedConvolutionPlan: Sendable {
    let batch: Int, channels: Int
    let inputShape: [Int], outputShape: [Int], kernel: [Int]
    /// Positions of one padded plane (`Π (sᵢ + 2·paddingᵢ)`).
    let planeSize: Int
    /// `[Πk]`: the padded-grid offset of each kernel offset, increasing; the last is the window's reach.
    let shifts: [Int]
    /// `[Πpadded]`: the output position anchored at each padded position, or -1.
    let outputAt: [Int32]
    /// `[Πpadded]`: the input position at each padded position, or -1 (padding).
    let inputAt: [Int32]

    var inputCount: Int { inputShape.reduce(1, *) }
    var outputCount: Int { outputShape.reduce(1, *) }
    var kernelCount: Int { kernel.reduce(1, *) }
    /// Columns of the products: every padded position of every batch element.
    var columns: Int { batch * planeSize }
    var reach: Int { shifts.last! }

    init(input: [Int], kernel: [Int], padding: [Int], dilation: [Int]) {
        let d = kernel.count
        (batch, channels) = (input[0], input[1])
        inputShape = Array(input.dropFirst(2))
        self.kernel = kernel
        let padded = zip(inputShape, padding).map { $0 + 2 * $1 }
        outputShape = (0..<d).map { padded[$0] - dilation[$0] * (kernel[$0] - 1) }
        precondition(outputShape.allSatisfy { $0 > 0 }, "convolution: input \(input) is smaller than the kernel's reach \(kernel) (padding \(padding), dilation \(dilation))")
        var strides = [Int](repeating: 1, count: d)
        for i in Swift.stride(from: d - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * padded[i + 1] }
        planeSize = padded.reduce(1, *)
        /// The padded-grid flat index of a multi-index over `extent`, each coordinate scaled and moved.
        func flat(_ index: Int, extent: [Int], scale: [Int], shift: [Int]) -> Int {
            var r = index, f = 0
            for i in Swift.stride(from: d - 1, through: 0, by: -1) {
                f += (r % extent[i] * scale[i] + shift[i]) * strides[i]
                r /= extent[i]
            }
            return f
        }
        let ones = [Int](repeating: 1, count: d), zeros = [Int](repeating: 0, count: d)
        shifts = (0..<kernel.reduce(1, *)).map { flat($0, extent: kernel, scale: dilation, shift: zeros) }
        var outputAt = [Int32](repeating: -1, count: planeSize), inputAt = [Int32](repeating: -1, count: planeSize)
        for t in 0..<outputShape.reduce(1, *) { outputAt[flat(t, extent: outputShape, scale: ones, shift: zeros)] = Int32(t) }
        for n in 0..<inputShape.reduce(1, *) { inputAt[flat(n, extent: inputShape, scale: ones, shift: padding)] = Int32(n) }
        (self.outputAt, self.inputAt) = (outputAt, inputAt)
    }

    /// `[c · b · Πpadded + tail]` floats: channel `ci` of batch element `bi` at `ci·columns + bi·planeSize`,
    /// zero padding, and a zero tail for the reads of the last tiles.
    func paddedChannelMajor(_ x: Tensor) -> Tensor {
        let (b, c, n, pp, cols) = (batch, channels, inputCount, planeSize, columns)
        var out = Tensor.zeros([c * cols + reach + ShiftedProduct.padding])
        out.withUnsafeMutableScalars { po in
            x.withUnsafeScalars { px in
                inputAt.withUnsafeBufferPointer { pi in
                    nonisolated(unsafe) let (dst, src, at) = (po.baseAddress!, px.baseAddress!, pi.baseAddress!)
                    Threads.forRanges(b * c, minChunk: 8) { planes in
                        for plane in planes {
                            let (bi, ci) = (plane / c, plane % c)
                            let s = src + plane * n, p = dst + ci * cols + bi * pp
                            for r in 0..<pp { let i = at[r]; if i >= 0 { p[r] = s[Int(i)] } }
                        }
                    }
                }
            }
        }
        return out
    }

    /// The output gradient `g [b, out, o…]` placed at its anchors in `[out][margin + b · Πpadded]` (zeros
    /// elsewhere) with a front margin of `reach` zeros per channel and a zero tail. Channel stride: `reach + columns`.
    func paddedGradient(_ g: Tensor, outChannels: Int) -> Tensor {
        let (b, o, pp, cols, margin) = (batch, outputCount, planeSize, columns, reach)
        let stride = margin + cols
        var out = Tensor.zeros([outChannels * stride + margin + ShiftedProduct.padding])
        out.withUnsafeMutableScalars { po in
            g.withUnsafeScalars { pg in
                outputAt.withUnsafeBufferPointer { pa in
                    nonisolated(unsafe) let (dst, src, at) = (po.baseAddress!, pg.baseAddress!, pa.baseAddress!)
                    Threads.forRanges(b * outChannels, minChunk: 8) { planes in
                        for plane in planes {
                            let (bi, oc) = (plane / outChannels, plane % outChannels)
                            let s = src + plane * o, p = dst + oc * stride + margin + bi * pp
                            for r in 0..<pp { let t = at[r]; if t >= 0 { p[r] = s[Int(t)] } }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Writes a tile of a product (rows = channels, columns = padded positions) into `dst [b, rows, plane…]`
    /// at the positions `map` gives (-1: not written), adding `bias[row]` when given.
    static func scatter(tile: UnsafePointer<Float>, stride: Int, row0: Int, rows: Int, column0: Int, count: Int,
                        map: UnsafePointer<Int32>, planeSize: Int, dst: UnsafeMutablePointer<Float>, channels: Int, plane: Int,
                        bias: UnsafePointer<Float>?) {
        var bi = column0 / planeSize, r = column0 - bi * planeSize
        for j in 0..<count {
            let t = map[r]
            if t >= 0 {
                let base = dst + (bi * channels + row0) * plane + Int(t)
                if let bias {
                    for i in 0..<rows { base[i * plane] = tile[i * stride + j] + bias[row0 + i] }
                } else {
                    for i in 0..<rows { base[i * plane] = tile[i * stride + j] }
                }
            }
            r += 1
            if r == planeSize { r = 0; bi += 1 }
        }
    }
}

extension Tensor {
    /// A stride-1, one-group convolution on ``ShiftedProduct`` (see ``ShiftedConvolutionPlan``); keeps the
    /// padded input (about the input's size) for the backward.
    func convolution(shifted plan: ShiftedConvolutionPlan, weight: Tensor, bias: Tensor?) -> Tensor {
        let (b, c, k, pp) = (plan.batch, plan.channels, plan.kernelCount, plan.planeSize)
        let (outC, o) = (weight.shape[0], plan.outputCount)
        precondition(shape == [b, c] + plan.inputShape && weight.shape == [outC, c] + plan.kernel && (bias == nil || bias!.shape == [outC]),
                     "convolution: input \(shape), weight \(weight.shape), bias \(bias?.shape ?? []) for the plan \([b, c] + plan.inputShape), kernel \(plan.kernel)")
        let padded = plan.paddedChannelMajor(detached())
        let w = weight.detached()
        let cols = plan.columns
        let offsets = (0..<(c * k)).map { Int64(($0 / k) * cols + plan.shifts[$0 % k]) }
        let out = Tensor.uninitialized([b, outC] + plan.outputShape) { y in
            padded.withUnsafeScalars { px in
                w.withUnsafeScalars { pw in
                    offsets.withUnsafeBufferPointer { po in
                        plan.outputAt.withUnsafeBufferPointer { pm in
                            nonisolated(unsafe) let (dst, map) = (y.baseAddress!, pm.baseAddress!)
                            Self.withOptionalScalars(bias?.detached()) { biasPointer in
                                nonisolated(unsafe) let bp = biasPointer
                                ShiftedProduct.run(m: outC, depth: c * k, a: pw.baseAddress!, b: px.baseAddress!, offsets: po.baseAddress!,
                                                   columns: cols) { row0, rows, column0, count, tile, stride in
                                    ShiftedConvolutionPlan.scatter(tile: tile, stride: stride, row0: row0, rows: rows, column0: column0, count: count,
                                                                   map: map, planeSize: pp, dst: dst, channels: outC, plane: o, bias: bp)
                                }
                            }
                        }
                    }
                }
            }
        }
        var inputs = [self, weight]
        if let bias { inputs.append(bias) }
        return Tensor.record(out, .shiftedConvolution(plan, padded: padded, weight: w, hasBias: bias != nil), inputs)
    }

    /// `body` with a pointer to the scalars of `t`, or nil.
    static func withOptionalScalars<R>(_ t: Tensor?, _ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let t else { return body(nil) }
        return t.withUnsafeScalars { body($0.baseAddress!) }
    }

    /// The gradients of ``convolution(shifted:weight:bias:)``: input, weight, bias (`needs[i]`: whether input
    /// `i` takes a gradient).
    static func shiftedConvolutionBackward(_ g: Tensor, plan: ShiftedConvolutionPlan, padded: Tensor, weight w: Tensor, hasBias: Bool,
                                           needs: [Bool]) -> [Tensor?] {
        let (b, c, k, pp, cols, reach) = (plan.batch, plan.channels, plan.kernelCount, plan.planeSize, plan.columns, plan.reach)
        let outC = w.shape[0]
        let gp = plan.paddedGradient(g, outChannels: outC)
        let gStride = reach + cols
        var gx: Tensor? = nil, gw: Tensor? = nil
        if needs[0] {
            // dx[ci, r] = Σ_{o,q} W[o, ci, q] · gp[o, r − shift(q)]: the product with Wᵀ (kernel order kept, shifts negated).
            var wt = [Float](repeating: 0, count: c * outC * k)
            w.withUnsafeScalars { pw in
                for oc in 0..<outC { for ci in 0..<c { for q in 0..<k { wt[(ci * outC + oc) * k + q] = pw[(oc * c + ci) * k + q] } } }
            }
            let offsets = (0..<(outC * k)).map { Int64(($0 / k) * gStride + reach - plan.shifts[$0 % k]) }
            let n = plan.inputCount
            gx = Tensor.uninitialized([b, c] + plan.inputShape) { dx in
                gp.withUnsafeScalars { pg in
                    wt.withUnsafeBufferPointer { pw in
                        offsets.withUnsafeBufferPointer { po in
                            plan.inputAt.withUnsafeBufferPointer { pm in
                                nonisolated(unsafe) let (dst, map) = (dx.baseAddress!, pm.baseAddress!)
                                ShiftedProduct.run(m: c, depth: outC * k, a: pw.baseAddress!, b: pg.baseAddress!, offsets: po.baseAddress!,
                                                   columns: cols) { row0, rows, column0, count, tile, stride in
                                    ShiftedConvolutionPlan.scatter(tile: tile, stride: stride, row0: row0, rows: rows, column0: column0, count: count,
                                                                   map: map, planeSize: pp, dst: dst, channels: c, plane: n, bias: nil)
                                }
                            }
                        }
                    }
                }
            }
        }
        if needs[1] {
            gw = weightGradient(gp: gp, gStride: gStride, padded: padded, plan: plan, outChannels: outC)
        }
        var grads: [Tensor?] = [gx, gw]
        if hasBias { grads.append(needs[2] ? g.reshaped([b, outC, plan.outputCount]).sum(axes: [0, 2]) : nil) }
        return grads
    }

    /// `dW[o, (ci, q)] = Σ_r gp[o, r] · padded[ci·columns + shift(q) + r]` over every padded position `r`:
    /// dot products of the gradient's rows against shifted views of the padded input (`vq_shifted_dots`,
    /// 6 × 4 at a time), over fixed chunks of positions (the same for any thread count) summed in chunk order.
    static func weightGradient(gp: Tensor, gStride: Int, padded: Tensor, plan: ShiftedConvolutionPlan, outChannels outC: Int) -> Tensor {
        let (c, k, cols, reach) = (plan.channels, plan.kernelCount, plan.columns, plan.reach)
        let n = c * k, chunk = 4096
        let chunks = (cols + chunk - 1) / chunk
        let rowBlocks = (outC + 5) / 6, columnBlocks = (n + 3) / 4
        let columnOffsets = (0..<n).map { Int64(($0 / k) * cols + plan.shifts[$0 % k]) }
        var partial = [Float](repeating: 0, count: chunks * outC * n)
        partial.withUnsafeMutableBufferPointer { pp in
            gp.withUnsafeScalars { pg in
                padded.withUnsafeScalars { px in
                    columnOffsets.withUnsafeBufferPointer { pc in
                        nonisolated(unsafe) let (dst, gs, xs, co) = (pp.baseAddress!, pg.baseAddress!, px.baseAddress!, pc.baseAddress!)
                        // Tasks: (chunk, block of 6 gradient rows); each writes its own partial rows.
                        Threads.forEach(chunks * rowBlocks) { task in
                            let (ch, rb) = (task / rowBlocks, task % rowBlocks)
                            let r0 = ch * chunk, len = Swift.min(chunk, cols - r0)
                            let o0 = rb * 6, rows = Swift.min(6, outC - o0)
                            let out = dst + ch * outC * n + o0 * n
                            for cb in 0..<columnBlocks {
                                let j0 = cb * 4
                                vq_shifted_dots(GEMM.level, Int64(len), gs + o0 * gStride + reach + r0, Int64(gStride), Int32(rows),
                                                xs + r0, co + j0, Int32(Swift.min(4, n - j0)), out + j0, Int64(n))
                            }
                        }
                    }
                }
            }
        }
        var sum = [Float](repeating: 0, count: outC * n)
        for ch in 0..<chunks { for i in 0..<(outC * n) { sum[i] += partial[ch * outC * n + i] } }
        return Tensor(sum, shape: [outC, c] + plan.kernel)
    }
}
