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
    /// A stretch of consecutive padded positions holding consecutive positions of a tensor (one row of its
    /// last axis): padded positions `start..<start + length` ↔ flat positions `target..<target + length`.
    struct Run: Sendable { let start: Int, target: Int, length: Int }
    /// The output positions' anchors, row by row, in increasing `start`.
    let outputRuns: [Run]
    /// The input positions inside the padding, row by row, in increasing `start`.
    let inputRuns: [Run]

    var inputCount: Int { inputShape.reduce(1, *) }
    var outputCount: Int { outputShape.reduce(1, *) }
    var kernelCount: Int { kernel.reduce(1, *) }
    /// Columns of the products: every padded position of every batch element.
    var columns: Int { batch * planeSize }
    var reach: Int { shifts.last! }
    /// The padded positions of each plane that `runs` cover, first to last.
    static func span(_ runs: [Run]) -> Range<Int> {
        guard let first = runs.first, let last = runs.last else { return 0..<0 }
        return first.start..<(last.start + last.length)
    }

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
        /// One run per row of the last axis of `extent`, placed at `shift` in the padded grid.
        func runs(_ extent: [Int], shift: [Int]) -> [Run] {
            let length = extent[d - 1]
            guard extent.allSatisfy({ $0 > 0 }) else { return [] }  // an empty input: padding only
            return (0..<(extent.reduce(1, *) / length)).map { row in
                Run(start: flat(row * length, extent: extent, scale: ones, shift: shift), target: row * length, length: length)
            }
        }
        outputRuns = runs(outputShape, shift: zeros)
        inputRuns = runs(inputShape, shift: padding)
    }

    /// `[c · b · Πpadded + tail]` floats: channel `ci` of batch element `bi` at `ci·columns + bi·planeSize`,
    /// zero padding, and a zero tail for the reads of the last tiles.
    func paddedChannelMajor(_ x: Tensor) -> Tensor {
        let (c, pp, cols) = (channels, planeSize, columns)
        let total = c * cols + reach + ShiftedProduct.padding
        return placing(x, channels: c, runs: inputRuns, sourcePlane: inputCount, total: total, zeros: [(c * cols)..<total]) { bi, ci in
            ci * cols + bi * pp
        }
    }

    /// The output gradient `g [b, out, o…]` placed at its anchors in `[out][margin + b · Πpadded]` (zeros
    /// elsewhere) with a front margin of `reach` zeros per channel and a zero tail. Channel stride: `reach + columns`.
    func paddedGradient(_ g: Tensor, outChannels: Int) -> Tensor {
        let (pp, margin) = (planeSize, reach)
        let stride = margin + columns
        let total = outChannels * stride + margin + ShiftedProduct.padding
        let zeros = (0..<outChannels).map { ($0 * stride)..<($0 * stride + margin) } + [(outChannels * stride)..<total]
        return placing(g, channels: outChannels, runs: outputRuns, sourcePlane: outputCount, total: total, zeros: zeros) { bi, oc in
            oc * stride + margin + bi * pp
        }
    }

    /// A `total`-float buffer holding each plane `(bi, ci)` of `x [b, channels, sourcePlane]` at
    /// `planeStart(bi, ci)` in the padded layout (its runs copied, the rest of the padded plane zeroed), and
    /// zeros in `zeros`; every other float is left as is, so planes and `zeros` must cover the buffer.
    /// Each thread zeroes and fills its own planes (no separate pass over the buffer).
    private func placing(_ x: Tensor, channels: Int, runs: [Run], sourcePlane: Int, total: Int, zeros: [Range<Int>],
                         planeStart: @escaping @Sendable (Int, Int) -> Int) -> Tensor {
        let pp = planeSize
        return Tensor.uninitialized([total]) { po in
            for r in zeros { (po.baseAddress! + r.lowerBound).update(repeating: 0, count: r.count) }
            x.withUnsafeScalars { px in
                runs.withUnsafeBufferPointer { pr in
                    nonisolated(unsafe) let (dst, src, runs) = (po.baseAddress!, px.baseAddress!, pr)
                    Threads.forRanges(batch * channels, minChunk: 8) { planes in
                        for plane in planes {
                            let s = src + plane * sourcePlane, p = dst + planeStart(plane / channels, plane % channels)
                            var at = 0
                            for run in runs {
                                (p + at).update(repeating: 0, count: run.start - at)
                                (p + run.start).update(from: s + run.target, count: run.length)
                                at = run.start + run.length
                            }
                            (p + at).update(repeating: 0, count: pp - at)
                        }
                    }
                }
            }
        }
    }

    /// Writes a tile of a product (rows = channels, columns = padded positions `column0..<column0 + count`)
    /// into `dst [b, channels, plane]`: the stretches of each batch element's plane that `runs` cover, adding
    /// `bias[row]` when given.
    static func scatter(tile: UnsafePointer<Float>, stride: Int, row0: Int, rows: Int, column0: Int, count: Int,
                        runs: UnsafeBufferPointer<Run>, planeSize: Int, dst: UnsafeMutablePointer<Float>, channels: Int, plane: Int,
                        bias: UnsafePointer<Float>?) {
        var c = column0
        let end = column0 + count
        while c < end {
            let bi = c / planeSize, planeStart = bi * planeSize
            let (l0, l1) = (c - planeStart, Swift.min(planeSize, end - planeStart))
            // The first run that ends after l0 (runs are sorted and disjoint).
            var lo = 0, hi = runs.count
            while lo < hi { let mid = (lo + hi) / 2; if runs[mid].start + runs[mid].length <= l0 { lo = mid + 1 } else { hi = mid } }
            var r = lo
            while r < runs.count && runs[r].start < l1 {
                let run = runs[r]
                let (s, e) = (Swift.max(run.start, l0), Swift.min(run.start + run.length, l1))
                if s < e {
                    let src = tile + (planeStart + s - column0), target = run.target + s - run.start, n = e - s
                    for i in 0..<rows {
                        let from = src + i * stride, to = dst + (bi * channels + row0 + i) * plane + target
                        if let bias {
                            let v = bias[row0 + i]
                            for j in 0..<n { to[j] = from[j] + v }
                        } else {
                            to.update(from: from, count: n)
                        }
                    }
                }
                r += 1
            }
            c = planeStart + l1
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
                        plan.outputRuns.withUnsafeBufferPointer { pm in
                            nonisolated(unsafe) let (dst, runs) = (y.baseAddress!, pm)
                            Self.withOptionalScalars(bias?.detached()) { biasPointer in
                                nonisolated(unsafe) let bp = biasPointer
                                ShiftedProduct.run(m: outC, depth: c * k, a: pw.baseAddress!, b: px.baseAddress!, offsets: po.baseAddress!,
                                                   columns: .init(count: b, stride: pp, span: ShiftedConvolutionPlan.span(plan.outputRuns))) { row0, rows, column0, count, tile, stride in
                                    ShiftedConvolutionPlan.scatter(tile: tile, stride: stride, row0: row0, rows: rows, column0: column0, count: count,
                                                                   runs: runs, planeSize: pp, dst: dst, channels: outC, plane: o, bias: bp)
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
                            plan.inputRuns.withUnsafeBufferPointer { pm in
                                nonisolated(unsafe) let (dst, runs) = (dx.baseAddress!, pm)
                                ShiftedProduct.run(m: c, depth: outC * k, a: pw.baseAddress!, b: pg.baseAddress!, offsets: po.baseAddress!,
                                                   columns: .init(count: b, stride: pp, span: ShiftedConvolutionPlan.span(plan.inputRuns))) { row0, rows, column0, count, tile, stride in
                                    ShiftedConvolutionPlan.scatter(tile: tile, stride: stride, row0: row0, rows: rows, column0: column0, count: count,
                                                                   runs: runs, planeSize: pp, dst: dst, channels: c, plane: n, bias: nil)
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
