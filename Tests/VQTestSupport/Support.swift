import Foundation
import VQTensor

/// Helpers shared by the test targets: tolerant comparisons, finite-difference gradient checks and
/// naive reference implementations.
public enum TestSupport {
    /// A fresh, empty temporary folder named `prefix-<random>` (the caller removes it).
    public static func scratchDirectory(_ prefix: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Largest absolute element-wise difference (∞ when shapes differ).
    public static func maxAbsDiff(_ a: Tensor, _ b: Tensor) -> Float {
        guard a.shape == b.shape else { return .infinity }
        var m: Float = 0
        for (x, y) in zip(a.scalars, b.scalars) {
            if x.isNaN != y.isNaN { return .infinity }
            if x.isNaN { continue }
            m = max(m, abs(x - y))
        }
        return m
    }

    /// Whether `|a − b| ≤ atol + rtol·|b|` element-wise with equal shapes.
    public static func isClose(_ a: Tensor, _ b: Tensor, atol: Float = 1e-5, rtol: Float = 1e-5) -> Bool {
        guard a.shape == b.shape else { return false }
        return zip(a.scalars, b.scalars).allSatisfy { x, y in abs(x - y) <= atol + rtol * abs(y) }
    }

    /// Central finite differences of a scalar function of several inputs, compared with the autograd
    /// gradient. Returns the worst violation ratio (≤ 1 passes) so a failing test shows by how much.
    public static func gradientCheck(
        _ inputs: [Tensor], eps: Float = 1e-2, atol: Float = 2e-3, rtol: Float = 2e-2,
        _ f: ([Tensor]) -> Tensor
    ) -> Float {
        let leaves = inputs.map { $0.requiringGradient() }
        let y = f(leaves)
        precondition(y.count == 1, "gradientCheck: f must return one element, got \(y.shape)")
        y.backward()
        var worst: Float = 0
        for (li, leaf) in leaves.enumerated() {
            let analytic = leaf.grad ?? Tensor.zeros(leaf.shape)
            for i in 0..<leaf.count {
                var plus = inputs, minus = inputs
                var sp = plus[li].scalars, sm = minus[li].scalars
                sp[i] += eps
                sm[i] -= eps
                plus[li] = Tensor(sp, shape: leaf.shape)
                minus[li] = Tensor(sm, shape: leaf.shape)
                let numeric = (withoutGradient { f(plus) }.item - withoutGradient { f(minus) }.item) / (2 * eps)
                let a = analytic.scalars[i]
                worst = max(worst, abs(a - numeric) / (atol + rtol * abs(numeric)))
            }
        }
        return worst
    }

    /// Triple-loop matrix product in Double, rounded to Float: `[M, K]·[K, N]`.
    public static func naiveMatmul(_ a: Tensor, _ b: Tensor) -> Tensor {
        let m = a.shape[0], k = a.shape[1], n = b.shape[1]
        var out = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(a.scalars[i * k + p]) * Double(b.scalars[p * n + j]) }
                out[i * n + j] = Float(s)
            }
        }
        return Tensor(out, shape: [m, n])
    }

    /// Random tensor from a seed (normal).
    public static func random(_ shape: [Int], seed: UInt64, std: Float = 1) -> Tensor {
        var rng = SeededGenerator(seed: seed)
        return Tensor.randomNormal(shape, std: std, using: &rng)
    }

    /// Normal values scaled by powers of two over 2⁻²⁰ … 2²⁰ (the exponent a rounded normal draw times 6, clamped):
    /// sums of them round differently in any other order, so a test of an order can fail.
    public static func wideRandom(_ shape: [Int], seed: UInt64) -> Tensor {
        let exponents = random(shape, seed: seed &+ 0x5eed).scalars
        let scales = exponents.map { Float(sign: .plus, exponent: max(-20, min(20, Int(($0 * 6).rounded()))), significand: 1) }
        return random(shape, seed: seed) * Tensor(scales, shape: shape)
    }
}

/// The Swift code blocks of DocC articles, checked against the test sources that compile them: every line of
/// a block (imports aside) must appear, in order, in the test file, so the documentation cannot drift from
/// code that compiles and runs.
public enum DocSnippets {
    /// The repository root, from a test file's `#filePath`.
    public static func root(_ filePath: String = #filePath) -> URL {
        var url = URL(fileURLWithPath: filePath)
        while url.pathComponents.count > 1 && !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            url.deleteLastPathComponent()
        }
        return url
    }

    /// The ```swift blocks of a markdown file, as trimmed non-empty lines without imports.
    public static func blocks(_ markdown: URL) throws -> [[String]] {
        let text = try String(contentsOf: markdown, encoding: .utf8)
        var out: [[String]] = [], current: [String]? = nil
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let t = line.trimmingCharacters(in: .whitespaces)
            if current == nil, t == "```swift" { current = []; continue }
            if current != nil, t == "```" { out.append(current!); current = nil; continue }
            if current != nil, !t.isEmpty, !t.hasPrefix("import ") { current!.append(t) }
        }
        return out
    }

    /// The trimmed non-empty lines of a Swift file without imports (a DocC tutorial step's code file).
    public static func lines(_ file: URL) throws -> [String] {
        try String(contentsOf: file, encoding: .utf8).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("import ") }
    }

    /// The lines of `block` missing (in order) from `source`, or empty.
    public static func missing(_ block: [String], in source: URL) throws -> [String] {
        let lines = try String(contentsOf: source, encoding: .utf8).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        var at = 0, missing: [String] = []
        for l in block {
            if let i = lines[at...].firstIndex(of: l) { at = i + 1 } else { missing.append(l) }
        }
        return missing
    }
}
