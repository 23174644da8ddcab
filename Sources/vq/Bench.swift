import ArgumentParser
import Foundation
import VQDistributed
import VQNN
import VQTensor
import VectorQuantize

/// `vq bench`: times the library's workloads in this process and prints one JSON object per line,
/// with the workload names that the reference-side scripts use, so any script can pair both sides.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time the library's workloads; one JSON line per workload.")

    @Flag(help: "Print JSON lines (the default output is a table).") var json = false
    @Option(parsing: .unconditional, help: "Thread count (default: active cores).") var threads: Int?
    @Option(help: "Comma-separated workload names (default: all).") var only: String?
    @Option(parsing: .unconditional, help: "Time budget per workload in seconds.") var budget: Double = 3

    func validate() throws {
        try DataFiles.checkThreads(threads)
        // (a negative or NaN budget ran every workload at its minimum of calls without a word)
        if !(budget.isFinite && budget >= 0) { throw ValidationError("--budget \(budget): a time budget is a finite number of seconds ≥ 0") }
        if let only {
            let unknown = only.split(separator: ",").map(String.init).filter { name in
                !Workloads.all.contains { $0.name == name } && Workloads.scaling(name) == nil && Workloads.allReduce(name) == nil
            }
            if !unknown.isEmpty {
                throw ValidationError("unknown workloads: \(unknown.joined(separator: ", ")); known: \(Workloads.all.map(\.name).joined(separator: ", "))")
            }
        }
    }

    func run() throws {
        if let threads { Threads.count = threads }
        let names = only.map { Set($0.split(separator: ",").map(String.init)) }
        let dynamic = names.map { $0.sorted().compactMap { Workloads.scaling($0) ?? Workloads.allReduce($0) } } ?? []
        for w in Workloads.all.filter({ names?.contains($0.name) ?? true }) + dynamic {
            Memory.releaseFreedMemory()  // memory kept by earlier workloads must not count in this one's peak
            Timing.resetPeakRSS()  // each workload's own peak, not the largest so far in this process
            let state = w.setup()
            let times = Timing.measure(budget: budget) { w.run(state) }
            let median = times.sorted()[times.count / 2]
            let record: [String: Any] = [
                "workload": w.name, "threads": Threads.count, "median_s": median, "kernel_level": KernelLevel.current,
                "min_s": times.min()!, "repeats": times.count,
                "vectors_per_s": Double(w.vectors) / median, "peak_rss_mb": Timing.peakRSSMegabytes(),
            ].merging(w.flops > 0 ? ["gflops": w.flops / median / 1e9] : [:]) { a, _ in a }
            if json {
                let data = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                let extra = w.flops > 0 ? String(format: "  %.1f GFLOP/s", w.flops / median / 1e9) : ""
                print(String(format: "%-28@ %10.4f s  %12.0f vectors/s%@", w.name as NSString, median, Double(w.vectors) / median, extra as NSString))
            }
        }
    }
}

/// One benchmark workload: a setup that builds its inputs and a body that is timed.
struct Workload: Sendable {
    let name: String
    let vectors: Int
    let flops: Double
    let setup: @Sendable () -> Any
    let run: @Sendable (Any) -> Void
}

enum Timing {
    /// One warm-up call, then at least 3 and at most 50 timed calls within the budget.
    static func measure(budget: Double, _ body: () -> Void) -> [Double] {
        body()
        var out: [Double] = []
        let start = DispatchTime.now().uptimeNanoseconds
        while out.count < 3 || (out.count < 50 && Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < budget) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            out.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return out
    }

    /// Resets the peak resident set size (Linux: `5` to `/proc/self/clear_refs`) to the current one.
    static func resetPeakRSS() {
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        guard fd >= 0 else { return }
        _ = "5".withCString { write(fd, $0, 1) }
        close(fd)
    }

    /// Peak resident set size of this process since the last reset (VmHWM), in MB.
    static func peakRSSMegabytes() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
            return kb / 1024
        }
        return 0
    }
}

nonisolated(unsafe) var benchRNG = SeededGenerator(seed: 17)

func seeded(_ shape: [Int], _ seed: UInt64) -> Tensor {
    var rng = SeededGenerator(seed: seed)
    return Tensor.randomNormal(shape, using: &rng)
}

enum Workloads {
    static let all: [Workload] = reference + sweep + kernels

    /// The workloads of the reference's `bench_peer.py`, with the same shapes and work.
    static let reference: [Workload] = [
        Workload(name: "a_vq_train_1024", vectors: 8192, flops: 0,
                 setup: { (vq(dim: 64, codes: 1024, train: true), seeded([32, 256, 64], 11)) },
                 run: { let (m, x) = $0 as! (VectorQuantizer, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "b_vq_train_8192", vectors: 16384, flops: 0,
                 setup: { (vq(dim: 256, codes: 8192, train: true), seeded([64, 256, 256], 12)) },
                 run: { let (m, x) = $0 as! (VectorQuantizer, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "c_vq_eval_1024", vectors: 8192, flops: 0,
                 setup: { (vq(dim: 64, codes: 1024, train: false), seeded([32, 256, 64], 11)) },
                 run: { let (m, x) = $0 as! (VectorQuantizer, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "c_vq_eval_8192", vectors: 16384, flops: 0,
                 setup: { (vq(dim: 256, codes: 8192, train: false), seeded([64, 256, 256], 12)) },
                 run: { let (m, x) = $0 as! (VectorQuantizer, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "d_rvq8_eval", vectors: 8192, flops: 0,
                 setup: {
                     let r = try! ResidualVQ(ResidualVQConfiguration(dim: 128, numQuantizers: 8, codebookSize: 1024))
                     let x = seeded([32, 256, 128], 13)
                     r.train()
                     withoutGradient { for _ in 0..<3 { _ = r(x) } }  // data-like codebooks, as the reference's setup
                     r.eval()
                     return (r, x)
                 },
                 run: { let (m, x) = $0 as! (ResidualVQ, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "e_fsq_8555", vectors: 65536, flops: 0,
                 setup: { () -> Any in let f = try! FSQ(FSQ.Configuration(levels: [8, 5, 5, 5])); f.eval(); return (f, seeded([64, 1024, 4], 14)) },
                 run: { let (m, x) = $0 as! (FSQ, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "g_vqvae_step", vectors: 64, flops: 0,
                 setup: { () -> Any in
                     let m = try! DigitVQVAE(codebookSize: 32, seed: 0)
                     m.train()
                     let opt = Adam(parameters: m.encoder.trainableParameters() + m.decoder.trainableParameters(), learningRate: 2e-3)
                     return (m, opt, Tensor.randomUniform([64, 64], using: &benchRNG))
                 },
                 run: {
                     let (m, opt, x) = $0 as! (DigitVQVAE, Adam, Tensor)
                     let out = m(x)
                     let loss = Loss.mse(out.recon, x) + out.vqLoss
                     opt.zeroGradients()
                     loss.backward()
                     opt.step()
                 }),
        Workload(name: "n_conv_vqvae_step", vectors: 64, flops: 0,
                 setup: { () -> Any in
                     let m = try! AutoencoderExample.makeModel(.vq, seed: 0)
                     m.train()
                     return (m, Adam(parameters: m.trainableParameters(), learningRate: 3e-3), seeded([64, 1, 28, 28], 23))
                 },
                 run: {
                     let (m, opt, x) = $0 as! (QuantizerSequential, Adam, Tensor)
                     let out = m(x)
                     let loss = Loss.mse(out.quantized, x) + out.loss
                     opt.zeroGradients()
                     loss.backward()
                     opt.step()
                 }),
        Workload(name: "h_rpq_readme", vectors: 1024, flops: 0,
                 setup: { () -> Any in
                     let q = try! RandomProjectionQuantizer(dim: 512, codebookSize: 1024, codebookDim: 256, numCodebooks: 16)
                     q.train()
                     return (q, seeded([1, 1024, 512], 17))
                 },
                 run: { let (m, x) = $0 as! (RandomProjectionQuantizer, Tensor); _ = m(x) }),
        Workload(name: "i_rvq8_train", vectors: 8192, flops: 0,
                 setup: { () -> Any in
                     let r = try! ResidualVQ(ResidualVQConfiguration(dim: 128, numQuantizers: 8, codebookSize: 1024))
                     r.train()
                     return (r, seeded([32, 256, 128], 18))
                 },
                 run: { let (m, x) = $0 as! (ResidualVQ, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "j_vq_heads8_cosine_train", vectors: 8192, flops: 0,
                 setup: { () -> Any in
                     var c = VectorQuantizerConfiguration(dim: 256, codebookSize: 1024)
                     c.heads = 8
                     c.separateCodebookPerHead = true
                     c.useCosineSimilarity = true
                     let m = try! VectorQuantizer(c)
                     m.train()
                     return (m, seeded([8, 1024, 256], 19))
                 },
                 run: { let (m, x) = $0 as! (VectorQuantizer, Tensor); _ = withoutGradient { m(x) } }),
        Workload(name: "k_fsq_grad", vectors: 8192, flops: 0,
                 setup: { () -> Any in
                     var c = FSQ.Configuration(levels: [8, 5, 5, 5])
                     c.dim = 256
                     let f = try! FSQ(c)
                     f.train()
                     return (f, seeded([8, 1024, 256], 20))
                 },
                 run: {
                     let (m, x) = $0 as! (FSQ, Tensor)
                     let leaf = x.requiringGradient()
                     m(leaf).quantized.sum().backward()
                 }),
        Workload(name: "l_lfq_grad", vectors: 4096, flops: 0,
                 setup: { () -> Any in
                     var c = LFQ.Configuration()
                     c.dim = 16
                     c.codebookSize = 65536
                     c.entropyLossWeight = 0.1
                     let l = try! LFQ(c)
                     l.train()
                     return (l, seeded([4, 1024, 16], 21))
                 },
                 run: {
                     let (m, x) = $0 as! (LFQ, Tensor)
                     let out = m(x.requiringGradient())
                     (out.auxLoss + out.quantized.sum()).backward()
                 }),
        Workload(name: "m_simvq_train_step", vectors: 8192, flops: 0,
                 setup: { () -> Any in
                     let s = try! SimVQ(dim: 256, codebookSize: 1024)
                     s.train()
                     return (s, SGD(parameters: s.trainableParameters(), learningRate: 0.01), seeded([8, 1024, 256], 22))
                 },
                 run: {
                     let (m, opt, x) = $0 as! (SimVQ, SGD, Tensor)
                     let out = m(x.requiringGradient())
                     (out.loss + out.quantized.sum()).backward()
                     opt.step()
                     opt.zeroGradients()
                 }),
        Workload(name: "f_kmeans_lib", vectors: 8192, flops: 0,
                 setup: { seeded([8192, 64], 15) },
                 run: { x in
                     let samples = x as! Tensor
                     var rng = SeededGenerator(seed: 1)
                     let initial = samples.indexSelect(axis: 0, IndexTensor(Array(rng.permutation(8192).prefix(1024))))
                     _ = KMeans.fit(samples: samples, initial: initial, iterations: 10)
                 }),
    ]

    /// `scale:N:K:D`: one VQ training step (forward + EMA) on N vectors of dimension D with K codes, for
    /// the scaling table.
    static func scaling(_ name: String) -> Workload? {
        let parts = name.split(separator: ":")
        guard parts.count == 4, parts[0] == "scale", let n = Int(parts[1]), let k = Int(parts[2]), let d = Int(parts[3]),
              n > 0, k > 0, d > 0 else { return nil }
        return Workload(name: name, vectors: n, flops: 2 * Double(n) * Double(k) * Double(d),
                        setup: { (vq(dim: d, codes: k, train: true), seeded([1, n, d], 16)) },
                        run: { let (m, x) = $0 as! (VectorQuantizer, Tensor); _ = withoutGradient { m(x) } })
    }

    /// `allreduce:FLOATS`: one ordered all-reduce of that many floats over the `mpirun` world (build with
    /// `--traits MPI`; a single process without it).
    static func allReduce(_ name: String) -> Workload? {
        let parts = name.split(separator: ":")
        guard parts.count == 2, parts[0] == "allreduce", let n = Int(parts[1]), n > 0 else { return nil }
        return Workload(name: name, vectors: n, flops: 0,
                        setup: { ((try? Distributed.world()) ?? SingleProcess(), [Float](repeating: 1, count: n)) },
                        run: { state in
                            var (c, buffer) = state as! (any Collective, [Float])
                            c.allReduceSum(&buffer)
                        })
    }

    static func vq(dim: Int, codes: Int, train: Bool) -> VectorQuantizer {
        let m = try! VectorQuantizer(VectorQuantizerConfiguration(dim: dim, codebookSize: codes))
        m.train(train)
        return m
    }

    static let kernels: [Workload] = [
        Workload(name: "gemm_1024", vectors: 1024, flops: 2 * 1024 * 1024 * 1024,
                 setup: { (seeded([1024, 1024], 1), seeded([1024, 1024], 2)) },
                 run: { let (a, b) = $0 as! (Tensor, Tensor); _ = a.matmul(b) }),
        Workload(name: "gemm_8192x64x1024", vectors: 8192, flops: 2 * 8192 * 64 * 1024,
                 setup: { (seeded([8192, 64], 1), seeded([64, 1024], 2)) },
                 run: { let (a, b) = $0 as! (Tensor, Tensor); _ = a.matmul(b) }),
        Workload(name: "nearest_8192x64_1024", vectors: 8192, flops: 2 * 8192 * 64 * 1024,
                 setup: { (seeded([8192, 64], 3), seeded([1024, 64], 4)) },
                 run: { let (x, c) = $0 as! (Tensor, Tensor); _ = x.nearestCodes(c) }),
        Workload(name: "nearest_16384x256_8192", vectors: 16384, flops: 2 * 16384 * 256 * 8192,
                 setup: { (seeded([16384, 256], 3), seeded([8192, 256], 4)) },
                 run: { let (x, c) = $0 as! (Tensor, Tensor); _ = x.nearestCodes(c) }),
    ]
}
