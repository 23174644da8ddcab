import VQTensor
import VectorQuantize

/// Workloads of the quantizers and options the reference cases test that `bench_peer.py` does not time, each
/// built from the reference's own keyword arguments at a realistic size. `Benchmarks/sweep_peer.py` times the
/// same modules, kwargs and shapes in the reference and prints the ratios.
extension Workloads {
    static let sweep: [Workload] = [
        // The layout change of an image quantizer ([b, c, h·w] ↔ [b, h·w, c], `accept_image_fmap`), both ways.
        Workload(name: "p_fmap_layout", vectors: 8 * 4096, flops: 0,
                 setup: { () -> Any in seeded([8, 256, 4096], 24) },
                 run: { let x = $0 as! Tensor; _ = x.transposed(1, 2).transposed(1, 2) }),
        Workload(name: "s_vq_fmap_train", vectors: 8 * 1024, flops: 0,
                 setup: { () -> Any in
                     let m = try! VectorQuantizer(VectorQuantizerConfiguration(referenceKwargs: [
                         "dim": 256, "codebook_size": 1024, "accept_image_fmap": true]))
                     m.train()
                     return (m, seeded([8, 256, 32, 32], 25))
                 },
                 run: { let (m, x) = $0 as! (VectorQuantizer, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "s_grvq_train", vectors: 8 * 1024, flops: 0,
                 setup: { () -> Any in
                     let m = try! GroupedResidualVQ(referenceKwargs: ["dim": 256, "groups": 2, "num_quantizers": 4, "codebook_size": 1024])
                     m.train()
                     return (m, seeded([8, 1024, 256], 26))
                 },
                 run: { let (m, x) = $0 as! (GroupedResidualVQ, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "s_rfsq_grad", vectors: 8 * 1024, flops: 0,
                 setup: { () -> Any in
                     let m = try! ResidualFSQ(referenceKwargs: ["dim": 256, "levels": [8, 5, 5, 5], "num_quantizers": 4])
                     m.train()
                     return (m, seeded([8, 1024, 256], 27))
                 },
                 run: {
                     let (m, x) = $0 as! (ResidualFSQ, Tensor)
                     m(x.requiringGradient()).quantized.sum().backward()
                 }),
        Workload(name: "s_rlfq_grad", vectors: 8 * 1024, flops: 0,
                 setup: { () -> Any in
                     let m = try! ResidualLFQ(referenceKwargs: ["dim": 256, "codebook_size": 1024, "num_quantizers": 4])
                     m.train()
                     return (m, seeded([8, 1024, 256], 28))
                 },
                 run: {
                     let (m, x) = $0 as! (ResidualLFQ, Tensor)
                     let out = m(x.requiringGradient())
                     (out.quantized.sum() + out.losses.sum()).backward()
                 }),
        Workload(name: "s_lq_grad", vectors: 8 * 1024, flops: 0,
                 setup: { () -> Any in
                     let m = try! LatentQuantize(LatentQuantize.Configuration(referenceKwargs: ["levels": [5, 5, 5, 5], "dim": 256]))
                     m.train()
                     return (m, seeded([8, 256, 1024], 29))  // channel first
                 },
                 run: {
                     let (m, x) = $0 as! (LatentQuantize, Tensor)
                     let out = m(x.requiringGradient())
                     (out.quantized.sum() + out.loss).backward()
                 }),
        Workload(name: "s_rsimvq_grad", vectors: 8 * 1024, flops: 0,
                 setup: { () -> Any in
                     let m = try! ResidualSimVQ(referenceKwargs: ["dim": 256, "num_quantizers": 4, "codebook_size": 1024])
                     m.train()
                     return (m, seeded([8, 1024, 256], 30))
                 },
                 run: {
                     let (m, x) = $0 as! (ResidualSimVQ, Tensor)
                     let out = m(x.requiringGradient())
                     (out.quantized.sum() + out.losses.sum()).backward()
                 }),
    ]
}
