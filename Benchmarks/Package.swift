// swift-tools-version: 6.1
// Benchmarks for swift-vector-quantize, in a nested package so that building or testing the library
// never resolves benchmark tooling. Run from this folder:
//   swift package --allow-writing-to-package-directory benchmark --filter "matmul.*"
import PackageDescription

let package = Package(
    name: "swift-vector-quantize-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-vector-quantize", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "Kernels",
            dependencies: [
                .product(name: "VQTensor", package: "swift-vector-quantize"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/Kernels",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
    ],
    swiftLanguageModes: [.v6]
)
