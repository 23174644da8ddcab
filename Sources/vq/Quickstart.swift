import ArgumentParser
import VQTensor
import VectorQuantize

/// A small, real end-to-end run: Lloyd iterations of a codebook on clustered synthetic vectors,
/// printing the mean squared quantization error after each iteration.
struct Quickstart: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit a codebook to clustered synthetic data with nearest-code search and print the error.")

    @Option(parsing: .unconditional, help: "Number of vectors.") var vectors = 20_000
    @Option(parsing: .unconditional, help: "Vector dimension.") var dim = 32
    @Option(parsing: .unconditional, help: "Number of codes.") var codes = 64
    @Option(parsing: .unconditional, help: "Lloyd iterations.") var iterations = 8
    @Option(parsing: .unconditional, help: "Random seed.") var seed: UInt64 = 0

    func validate() throws {
        guard vectors > 0, dim > 0, codes > 0, iterations >= 0 else {
            throw ValidationError("--vectors, --dim and --codes must be positive, --iterations non-negative")
        }
        guard codes <= vectors else { throw ValidationError("--codes (\(codes)) must not exceed --vectors (\(vectors))") }
        guard let values = SizeLimit.product([vectors, dim]), values <= 1 << 28 else {
            throw ValidationError("--vectors \(vectors) × --dim \(dim) is more than 2^28 values (1 GiB)")
        }
    }

    func run() throws {
        var rng = SeededGenerator(seed: seed)
        // Data: `codes` Gaussian clusters around random centres.
        let centres = Tensor.randomNormal([codes, dim], std: 3, using: &rng)
        let labels = IndexTensor((0..<vectors).map { _ in rng.nextInt(below: codes) })
        let x = centres.indexSelect(axis: 0, labels) + Tensor.randomNormal([vectors, dim], using: &rng)
        // Initial codebook: random data rows.
        var codebook = x.indexSelect(axis: 0, IndexTensor(Array(rng.permutation(vectors).prefix(codes))))
        print("quickstart: \(vectors) vectors × \(dim) dims → \(codes) codes")
        for it in 0...iterations {
            let (index, distance) = x.nearestCodes(codebook)
            let mse = distance.squared().mean().item / Float(dim)
            let used = Set(index.scalars).count
            print("iteration \(it): mean squared error per dim \(String(format3: mse)), codes used \(used)/\(codes)")
            if it == iterations { break }
            let sums = Tensor.zeros([codes, dim]).indexAdd(axis: 0, index, x)
            let counts = Tensor.zeros([codes]).indexAdd(axis: 0, index, Tensor.ones([vectors]))
            let safe = counts.maximum(1).unsqueezed(axis: 1)
            codebook = Tensor.select(counts.unsqueezed(axis: 1) .> 0, sums / safe, codebook)
        }
        print("noise floor (unit Gaussian clusters): 1.000")
    }
}

extension String {
    init(format3 value: Float) {
        let scaled = (Double(value) * 1000).rounded() / 1000
        self = "\(scaled)"
    }
}
