/// A small, fast, seedable pseudo-random generator: xoshiro256** seeded through SplitMix64.
///
/// Every random draw in the library goes through a `SeededGenerator` passed by the caller, so a
/// computation is reproducible for a seed on every platform and thread count. The stream is fixed
/// by this documentation:
/// - seeding: the four state words are four successive outputs of SplitMix64 started at `seed`;
/// - `next()`: xoshiro256** (Blackman & Vigna, *Scrambled linear pseudorandom number generators*, 2018);
/// - uniform `Float` in [0, 1): the top 24 bits of `next()` times 2⁻²⁴;
/// - normal: Box–Muller in `Double` from two uniforms in (0, 1], one sample per pair, rounded to `Float`.
///
/// ```swift
/// var rng = SeededGenerator(seed: 42)
/// let w = Tensor.randomNormal([4, 8], using: &rng)
/// ```
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    /// The generator's whole state (four words), to save and later restore with ``init(state:)``.
    public var state: [UInt64] { [s.0, s.1, s.2, s.3] }

    /// A generator that continues exactly where the one whose ``state`` this is stopped.
    public init(state: [UInt64]) {
        precondition(state.count == 4 && state.contains { $0 != 0 }, "SeededGenerator(state:): four words, not all zero, got \(state)")
        s = (state[0], state[1], state[2], state[3])
    }

    @inline(__always) static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = Self.rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = Self.rotl(s.3, 45)
        return result
    }

    /// A uniform `Float` in [0, 1).
    public mutating func nextUniform() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// A standard normal sample (Box–Muller).
    public mutating func nextNormal() -> Float {
        let u1 = 1 - Double(next() >> 11) * 0x1p-53  // (0, 1]
        let u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * logDouble(u1)).squareRoot() * cosDouble(2 * Double.pi * u2))
    }

    /// A uniform integer in `0..<n`.
    public mutating func nextInt(below n: Int) -> Int {
        precondition(n > 0, "nextInt(below:): n = \(n)")
        return Int(truncatingIfNeeded: next(upperBound: UInt64(n)))
    }

    /// A random permutation of `0..<n` (Fisher–Yates).
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n > 1 {
            for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, nextInt(below: i + 1)) }
        }
        return p
    }
}


extension Tensor {
    /// Samples from N(mean, std²).
    public static func randomNormal(
        _ shape: [Int], mean: Float = 0, std: Float = 1, using rng: inout SeededGenerator
    ) -> Tensor {
        var s = [Float](repeating: 0, count: Shape.count(shape))
        for i in s.indices { s[i] = mean + std * rng.nextNormal() }
        return Tensor(s, shape: shape)
    }

    /// Samples from U[low, high).
    public static func randomUniform(
        _ shape: [Int], low: Float = 0, high: Float = 1, using rng: inout SeededGenerator
    ) -> Tensor {
        var s = [Float](repeating: 0, count: Shape.count(shape))
        for i in s.indices { s[i] = low + (high - low) * rng.nextUniform() }
        return Tensor(s, shape: shape)
    }
}

extension Tensor {
    /// A random `[n, n]` orthogonal matrix (as `torch.nn.init.orthogonal_`: the Q of a QR decomposition of a
    /// standard normal matrix, signs fixed so R has a positive diagonal), by Gram–Schmidt in double precision.
    public static func randomOrthogonal(_ n: Int, using rng: inout SeededGenerator) -> Tensor {
        precondition(n >= 1, "randomOrthogonal: n = \(n)")
        var rows: [[Double]] = []
        while rows.count < n {
            var v = (0..<n).map { _ in Double(rng.nextNormal()) }
            for r in rows {
                let dot = zip(v, r).reduce(0) { $0 + $1.0 * $1.1 }
                for j in 0..<n { v[j] -= dot * r[j] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm > 1e-6 { rows.append(v.map { $0 / norm }) }
        }
        return Tensor(rows.flatMap { $0.map(Float.init) }, shape: [n, n])
    }
}
