// swift-tools-version: 6.1
// swift-vector-quantize — vector quantization (VQ-VAE codebooks, residual VQ, FSQ, LFQ) in Swift,
// with exact partial freezing. No `unsafeFlags`: the package stays usable as a dependency.
import PackageDescription

let package = Package(
    name: "swift-vector-quantize",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "VQTensor", targets: ["VQTensor"]),
        .library(name: "VQNN", targets: ["VQNN"]),
        .library(name: "VectorQuantize", targets: ["VectorQuantize"]),
        .executable(name: "vq", targets: ["vq"]),
    ],
    traits: [
        .trait(name: "MPI", description: "Data-parallel training over Open MPI (needs Debian's libopenmpi-dev)."),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // C micro-kernels only (GEMM tile, distance tile), chosen at run time by CPU features.
        .target(name: "CVQKernels"),
        .target(
            name: "VQTensor",
            dependencies: ["CVQKernels", .product(name: "Logging", package: "swift-log")]),
        .target(name: "VQNN", dependencies: ["VQTensor", .product(name: "Logging", package: "swift-log")]),
        .target(name: "VectorQuantize", dependencies: ["VQNN"]),
        // Open MPI, only with the MPI trait: a system library, a C shim for the handle macros, and the
        // Collective implementation.
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPIShim", dependencies: ["CMPI"]),
        .target(
            name: "VQDistributed",
            dependencies: ["VQNN", .target(name: "CMPIShim", condition: .when(traits: ["MPI"]))]),
        .executableTarget(
            name: "vq",
            dependencies: [
                "VectorQuantize", "VQDistributed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            resources: [.copy("Resources/digits")]),
        .target(name: "VQTestSupport", dependencies: ["VQTensor", "VQNN"], path: "Tests/VQTestSupport"),
        .testTarget(name: "VQTensorTests", dependencies: ["VQTensor", "VQTestSupport"]),
        .testTarget(name: "VQNNTests", dependencies: ["VQNN", "VQTestSupport"]),
        .testTarget(
            name: "VectorQuantizeTests", dependencies: ["VectorQuantize", "VQTestSupport"],
            resources: [.copy("Fixtures")]),
        .testTarget(name: "vqTests", dependencies: ["vq", "VQTensor", "VQTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
