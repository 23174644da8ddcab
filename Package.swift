// swift-tools-version: 6.1
// swift-vector-quantize — vector quantization (VQ-VAE codebooks, residual VQ, FSQ, LFQ) in Swift,
// with exact partial freezing. No `unsafeFlags`: the package stays usable as a dependency.
import PackageDescription

let package = Package(
    name: "swift-vector-quantize",
    // Synchronization (Atomic) needs these; Linux has no minimum.
    platforms: [.macOS(.v15), .iOS(.v18), .tvOS(.v18), .visionOS(.v2), .watchOS(.v11)],
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
        .target(name: "VQTensor", dependencies: ["CVQKernels"]),
        .target(name: "VQNN", dependencies: ["VQTensor", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "VectorQuantize",
            dependencies: ["VQNN", "VQTensor", .product(name: "Logging", package: "swift-log")]),
        // Open MPI, only with the MPI trait: a C shim for the handle macros (stubs without the trait, so the
        // default build needs no Open MPI headers) and the Collective implementation.
        .target(
            name: "CMPIShim",
            cSettings: [.define("VQ_WITH_MPI", .when(traits: ["MPI"]))],
            linkerSettings: [.linkedLibrary("mpi", .when(traits: ["MPI"]))]),
        .target(
            name: "VQDistributed",
            dependencies: ["VQNN", .target(name: "CMPIShim", condition: .when(traits: ["MPI"]))]),
        .executableTarget(
            name: "vq",
            dependencies: [
                "VectorQuantize", "VQDistributed", "VQNN", "VQTensor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            exclude: ["Digits/README.md"]),
        // The fuzz target of every outside input (Fuzz/run.sh builds it for libFuzzer); as a package
        // product it is a replay tool that runs the target on files.
        .executableTarget(name: "vq-fuzz", dependencies: ["VectorQuantize", "VQNN", "VQTensor"], path: "Fuzz/CLI"),
        .target(name: "VQTestSupport", dependencies: ["VQTensor", "VQNN"], path: "Tests/VQTestSupport"),
        .testTarget(name: "VQTensorTests", dependencies: ["VQTensor", "VQTestSupport"]),
        .testTarget(name: "VQNNTests", dependencies: ["VQNN", "VQTensor", "VQTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(
            name: "VectorQuantizeTests", dependencies: ["VectorQuantize", "VQNN", "VQTensor", "VQTestSupport"],
            resources: [.copy("Fixtures")]),
        .testTarget(name: "vqTests", dependencies: ["vq", "vq-fuzz", "VectorQuantize", "VQNN", "VQTensor", "VQTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
