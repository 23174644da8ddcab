import Benchmark
import VQTensor

// GEMM and nearest-code search at the sizes of the project's goals. Throughput is reported as a
// custom metric (GFLOP/s for matmul, thousands of vectors/s for search) beside wall-clock time.

let gflops = BenchmarkMetric.custom("GFLOP/s", polarity: .prefersLarger, useScalingFactor: false)
let kvps = BenchmarkMetric.custom("k vectors/s", polarity: .prefersLarger, useScalingFactor: false)

func random(_ shape: [Int], _ seed: UInt64) -> Tensor {
    var rng = SeededGenerator(seed: seed)
    return Tensor.randomNormal(shape, using: &rng)
}

let benchmarks: @Sendable () -> Void = {
    let config = Benchmark.Configuration(
        metrics: [.wallClock, .peakMemoryResident, gflops, kvps], maxDuration: .seconds(5), maxIterations: 50)

    for threads in [1, 2] {
        for (m, n, k) in [(1024, 1024, 1024), (8192, 1024, 64)] {
            Benchmark("matmul \(m)x\(k)·\(k)x\(n) threads=\(threads)", configuration: config) { benchmark in
                let a = random([m, k], 1), b = random([k, n], 2)
                Threads.count = threads
                benchmark.startMeasurement()
                let start = ContinuousClock.now
                let c = a.matmul(b)
                benchmark.stopMeasurement()
                blackHole(c)
                let seconds = (ContinuousClock.now - start).seconds
                benchmark.measurement(gflops, Int(2.0 * Double(m * n * k) / seconds / 1e9))
            }
        }
        for (n, d, k) in [(8192, 64, 1024), (16384, 256, 8192)] {
            Benchmark("nearest N=\(n) D=\(d) K=\(k) threads=\(threads)", configuration: config) { benchmark in
                let x = random([n, d], 3), c = random([k, d], 4)
                Threads.count = threads
                benchmark.startMeasurement()
                let start = ContinuousClock.now
                let r = x.nearestCodes(c)
                benchmark.stopMeasurement()
                blackHole(r)
                let seconds = (ContinuousClock.now - start).seconds
                benchmark.measurement(kvps, Int(Double(n) / seconds / 1e3))
            }
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
