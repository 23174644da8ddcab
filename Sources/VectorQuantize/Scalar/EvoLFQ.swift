import Foundation
import VQNN
import VQTensor

/// An autoencoder around lookup-free quantization whose binary latents can also be searched by a genetic
/// algorithm (the reference's `EvoLFQ`): `encoder → LFQ → decoder` for gradient training, and
/// population / tournament / crossover / mutation steps over bit strings scored by any fitness function.
///
/// ```swift
/// var rng = SeededGenerator(seed: 0)
/// let evo = try EvoLFQ(encoder: Linear(16, 8, rng: &rng), decoder: Linear(8, 16, rng: &rng),
///                      lfq: LFQ(.init(dim: 8)))
/// let out = evo(x)                                   // out.reconstructed, out.indices, out.auxLoss
/// var population = evo.initialPopulation(from: x)    // bits of the encoded data, mutated
/// for _ in 0..<10 { population = evo.step(population) { decoded, _ in -(decoded - target).squared().mean(axis: -1) }.population }
/// ```
///
/// Differences from the reference: ``evolve(population:generations:signs:fitness:)`` reports the best individual
/// of the population that was scored (the reference reads it from the *next* population, by the old
/// population's index); ties in the elite sort keep the lower index (torch's `argsort` is not stable).
///
/// - Complexity: one ``step(_:draws:signs:fitness:)`` decodes the whole population once: O(pop · cost of the decoder).
public final class EvoLFQ: Module {
    public struct Genetics: Sendable, Equatable {
        public var populationSize = 64
        public var mutationRate: Float = 0.02
        public var tournamentSize = 2
        public var elitismCount = 1
        public var generations = 50
        public init() {}

        public func validate() throws {
            let m = "EvoLFQ"
            guard populationSize > elitismCount, elitismCount >= 0 else {
                throw ConfigurationError.badValue(module: m, keyword: "pop_size", reason: "pop_size \(populationSize) must be greater than elitism_count \(elitismCount) ≥ 0")
            }
            guard populationSize <= 1 << 24 else { throw ConfigurationError.badValue(module: m, keyword: "pop_size", reason: "\(populationSize) exceeds 2^24") }
            guard tournamentSize >= 1 && tournamentSize <= 1 << 16 else {
                throw ConfigurationError.badValue(module: m, keyword: "tournament_size", reason: "must be in 1…65536, got \(tournamentSize)")
            }
            guard (0...1).contains(mutationRate) else { throw ConfigurationError.badValue(module: m, keyword: "mutation_rate", reason: "must be in [0, 1]") }
            guard generations >= 0 else { throw ConfigurationError.badValue(module: m, keyword: "generations", reason: "must be ≥ 0") }
        }
    }

    /// The random draws of one ``EvoLFQ/step(_:draws:signs:fitness:)``, to replay a recorded run: `contenders`
    /// `[pop − elites, 2, tournament]`, uniforms `[pop − elites, bits…]` for crossover and mutation.
    public struct StepDraws {
        public var contenders: IndexTensor
        public var crossover: Tensor
        public var mutation: Tensor
        public init(contenders: IndexTensor, crossover: Tensor, mutation: Tensor) {
            self.contenders = contenders
            self.crossover = crossover
            self.mutation = mutation
        }
    }

    public let encoder: Layer
    public let decoder: Layer
    public let lfq: LFQ
    public let genetics: Genetics
    /// The feature size `encoder` takes (for tools; from its first weight matrix unless given).
    public let inputDim: Int
    var rng: SeededGenerator

    public init(encoder: Layer, decoder: Layer, lfq: LFQ, genetics: Genetics = .init(), inputDim: Int? = nil, seed: UInt64 = 0) throws {
        try genetics.validate()
        self.encoder = encoder
        self.decoder = decoder
        self.lfq = lfq
        self.genetics = genetics
        self.inputDim = inputDim ?? encoder.namedParameters().first { $0.1.shape.count == 2 }?.1.shape[1] ?? lfq.dim
        rng = SeededGenerator(seed: seed ^ 0xE70)
        super.init()
    }

    static let geneticKeywords: Set<String> = ["encoder", "decoder", "pop_size", "mutation_rate", "tournament_size", "elitism_count", "generations"]

    /// From the reference's keywords: `encoder` / `decoder` as module text (`LayerSpec`, in VQNN), the genetic
    /// options, and every other keyword for the inner `LFQ`.
    public convenience init(referenceKwargs kw: [String: Any]) throws {
        let m = "EvoLFQ"
        let k = Keywords(kw, module: m)
        var g = Genetics()
        g.populationSize = try k.int("pop_size") ?? 64
        g.mutationRate = Float(try k.double("mutation_rate") ?? 0.02)
        g.tournamentSize = try k.int("tournament_size") ?? 2
        g.elitismCount = try k.int("elitism_count") ?? 1
        g.generations = try k.int("generations") ?? 50
        var lfqKwargs = kw.filter { !Self.geneticKeywords.contains($0.key) }
        if lfqKwargs["dim"] == nil && lfqKwargs["codebook_size"] == nil {
            throw ConfigurationError.invalid(module: m, reason: "either dim or codebook_size is required (the inner LFQ)")
        }
        if let lfq = lfqKwargs.removeValue(forKey: "lfq"), !(lfq is NSNull) { throw ConfigurationError.badValue(module: m, keyword: "lfq", reason: "pass the LFQ's keywords instead of an instance") }
        let seed = try k.int("seed").map { UInt64(truncatingIfNeeded: $0) } ?? 0
        lfqKwargs["seed"] = Int(truncatingIfNeeded: seed)
        let lfqConfiguration = try LFQ.Configuration(referenceKwargs: lfqKwargs, module: m)
        if lfqConfiguration.channelFirst == true {
            throw ConfigurationError.badValue(module: m, keyword: "channel_first", reason: "the LFQ quantizes the encoder's [b, n, d] latents (move the channel axis before the encoder)")
        }
        let lfq = try LFQ(lfqConfiguration)
        var rng = SeededGenerator(seed: seed ^ 0xE71)
        // The encoder gives the LFQ's dimension, the decoder takes it, and gives what the encoder takes.
        let latent = lfq.dim
        let encoderFeatures = try (kw["encoder"] as? String).map { text in
            do { return try LayerSpec.features(text) } catch let e as LayerSpecError { throw ConfigurationError.badValue(module: m, keyword: "encoder", reason: e.description) }
        }
        for (key, inputs, outputs) in [("encoder", encoderFeatures?.inputs, latent), ("decoder", latent, encoderFeatures?.inputs)] {
            guard let text = kw[key] as? String else { continue }
            do { try LayerSpec.check(text, inputs: inputs, outputs: outputs, what: "the \(key)") } catch let e as LayerSpecError {
                throw ConfigurationError.badValue(module: m, keyword: key, reason: e.description)
            }
        }
        func layer(_ key: String) throws -> Layer {
            guard let text = kw[key] as? String else { throw ConfigurationError.invalid(module: m, reason: "\(key) is required (module text, e.g. \"nn.Linear(16, 8)\")") }
            do { return try LayerSpec.parse(text, rng: &rng) } catch let e as LayerSpecError {
                throw ConfigurationError.badValue(module: m, keyword: key, reason: e.description)
            }
        }
        try self.init(encoder: try layer("encoder"), decoder: try layer("decoder"), lfq: lfq, genetics: g, seed: seed)
    }

    // MARK: Autoencoder

    /// The result of a forward: the decoded output, the indices and the auxiliary loss.
    public struct Output {
        public var reconstructed: Tensor
        public var indices: IndexTensor
        public var auxLoss: Tensor
    }

    /// `decoder(LFQ(encoder(x)))`; `[b, d]` latents are quantized as `[b, 1, d]`.
    public func callAsFunction(_ x: Tensor, inverseTemperature: Float = 100, mask: TokenMask? = nil)
        -> Output
    {
        let (quantized, indices, aux) = quantizeLatents(encoder(x), inverseTemperature: inverseTemperature, mask: mask)
        return Output(reconstructed: decoder(quantized), indices: indices, auxLoss: aux)
    }

    private func quantizeLatents(_ latents: Tensor, inverseTemperature: Float = 100, mask: TokenMask? = nil) -> (Tensor, IndexTensor, Tensor) {
        if latents.rank == 2 {
            let out = lfq(latents.unsqueezed(axis: 1), inverseTemperature: inverseTemperature, mask: mask)
            var s = out.indices.shape
            s.remove(at: 1)
            return (out.quantized.squeezed(axis: 1), out.indices.reshaped(s), out.auxLoss)
        }
        let out = lfq(latents, inverseTemperature: inverseTemperature, mask: mask)
        return (out.quantized, out.indices, out.auxLoss)
    }

    /// The bits of `x` (the reference's `encode`): `quantized > 0` as 0/1, or ±1 with `signs`, in evaluation.
    public func encodeBits(_ x: Tensor, signs: Bool = false) -> Tensor {
        withMode(training: false) {
            withoutGradient {
                let q = quantizeLatents(encoder(x)).0
                return signs ? Tensor.select(q .> 0, Tensor(1).expanded(to: q.shape), Tensor(-1).expanded(to: q.shape)) : q .> 0
            }
        }
    }

    /// Decodes bit strings `[..., bits]` (0/1 or ±1; the first bit of each codebook most significant) through
    /// the codes and the decoder, in evaluation.
    public func decodeBits(_ bits: Tensor) -> Tensor {
        let cd = lfq.codebookDim, nc = lfq.configuration.numCodebooks
        precondition(bits.shape.last == cd * nc, "EvoLFQ.decodeBits: bits \(bits.shape) for \(nc) × \(cd) bits")
        return withMode(training: false) {
            withoutGradient {
                let lead = Array(bits.shape.dropLast())
                let on = bits.scalars.map { $0 > 0 }
                let indices = (0..<(on.count / cd)).map { r in (0..<cd).reduce(0) { $0 * 2 + (on[r * cd + $1] ? 1 : 0) } }
                let shape = lfq.keepCodebooksDim ? lead + [nc] : lead
                return decoder(lfq.indicesToCodes(IndexTensor(indices, shape: shape)))
            }
        }
    }

    // MARK: Genetic algorithm

    /// `size` random bit strings of `shape` (0/1, or ±1 with `signs`).
    public func randomPopulation(size: Int? = nil, shape: [Int], signs: Bool = false) -> Tensor {
        let n = size ?? genetics.populationSize
        let bits = Tensor((0..<(n * shape.reduce(1, *))).map { _ in Float(rng.next() & 1) }, shape: [n] + shape)
        return signs ? bits * 2 - 1 : bits
    }

    /// The encoded bits of `x`, repeated to `size` rows (or cut), then mutated.
    /// - Parameters:
    ///   - x: the vectors to encode.
    ///   - size: the population size (default: the configured one).
    ///   - mutationRate: the probability of flipping each bit (default: the configured one).
    ///   - signs: ±1 instead of 0/1 bits.
    ///   - uniforms: the mutation's uniforms `[size, bits…]` (default: drawn).
    public func initialPopulation(from x: Tensor, size: Int? = nil, mutationRate: Float? = nil, signs: Bool = false, uniforms: Tensor? = nil) -> Tensor {
        let n = size ?? genetics.populationSize
        let bits = encodeBits(x, signs: signs)
        let rows = bits.shape[0]
        precondition(rows > 0, "EvoLFQ.initialPopulation: no data rows in \(x.shape)")
        let order = IndexTensor((0..<n).map { $0 % rows })
        let population = bits.indexSelect(axis: 0, order)
        let rate = mutationRate ?? genetics.mutationRate
        return rate > 0 ? mutate(population, rate: rate, signs: signs, uniforms: uniforms) : population
    }

    /// Flips each bit where a uniform draw is below `rate`.
    public func mutate(_ population: Tensor, rate: Float? = nil, signs: Bool = false, uniforms: Tensor? = nil) -> Tensor {
        let u = uniforms ?? Tensor.randomUniform(population.shape, using: &rng)
        precondition(u.shape == population.shape, "EvoLFQ.mutate: uniforms \(u.shape) for a population \(population.shape)")
        let flipped = signs ? -population : 1 - population
        return Tensor.select(u .< (rate ?? genetics.mutationRate), flipped, population)
    }

    /// Takes each bit from `a` where a uniform draw is below 0.5, else from `b`.
    public func crossover(_ a: Tensor, _ b: Tensor, uniforms: Tensor? = nil) -> Tensor {
        let u = uniforms ?? Tensor.randomUniform(a.shape, using: &rng)
        return Tensor.select(u .< 0.5, a, b)
    }

    /// One generation: score the population, keep the `elitismCount` best, fill the rest with mutated
    /// children of tournament winners. Returns the next population and the fitness of the scored one.
    /// - Parameters:
    ///   - population: the bits `[pop, …]` of the individuals.
    ///   - draws: the step's random draws, to replay a recorded run (default: drawn).
    ///   - signs: the population holds ±1 instead of 0/1.
    ///   - fitness: `(decoded [pop, …], bits [pop, …]) → [pop]`, higher is better.
    public func step(_ population: Tensor, draws: StepDraws? = nil, signs: Bool = false,
                     fitness: (Tensor, Tensor) -> Tensor) -> (population: Tensor, fitness: Tensor) {
        let pop = population.shape[0], g = genetics
        let fitnesses = fitness(decodeBits(population), population).detached()
        precondition(fitnesses.shape == [pop], "EvoLFQ.step: fitness \(fitnesses.shape) for a population of \(pop)")
        let f = fitnesses.scalars
        let ranked = (0..<pop).sorted { f[$0] > f[$1] || (f[$0] == f[$1] && $0 < $1) }
        let elites = population.indexSelect(axis: 0, IndexTensor(Array(ranked.prefix(g.elitismCount))))
        let children = pop - g.elitismCount, t = g.tournamentSize
        let contenders = draws?.contenders ?? IndexTensor((0..<(children * 2 * t)).map { _ in Int(rng.next() % UInt64(pop)) }, shape: [children, 2, t])
        precondition(contenders.shape == [children, 2, t], "EvoLFQ.step: contenders \(contenders.shape), expected [\(children), 2, \(t)]")
        let c = contenders.scalars
        var parents = [[Int]](repeating: [], count: 2)
        for i in 0..<children {
            for p in 0..<2 {
                let base = (i * 2 + p) * t
                var best = c[base]
                for j in 1..<t where f[c[base + j]] > f[best] { best = c[base + j] }
                parents[p].append(best)
            }
        }
        let child = crossover(population.indexSelect(axis: 0, IndexTensor(parents[0])), population.indexSelect(axis: 0, IndexTensor(parents[1])),
                              uniforms: draws?.crossover)
        let mutated = mutate(child, signs: signs, uniforms: draws?.mutation)
        return (Tensor.concat([elites, mutated], axis: 0), fitnesses)
    }

    /// Runs `generations` steps and reports, after each, the best individual seen so far among the scored
    /// populations and its fitness.
    public func evolve(population start: Tensor, generations: Int? = nil, signs: Bool = false,
                       fitness: (Tensor, Tensor) -> Tensor) -> [(population: Tensor, best: Tensor, bestFitness: Float)] {
        var population = start
        var best = start.slice(axis: 0, 0..<1).squeezed(axis: 0), bestFitness = -Float.infinity
        var out: [(population: Tensor, best: Tensor, bestFitness: Float)] = []
        for _ in 0..<(generations ?? genetics.generations) {
            let scored = population
            let (next, f) = step(population, signs: signs, fitness: fitness)
            let i = f.scalars.indices.max { f.scalars[$0] < f.scalars[$1] || (f.scalars[$0] == f.scalars[$1] && $0 > $1) } ?? 0
            if f.scalars[i] > bestFitness {
                bestFitness = f.scalars[i]
                best = scored.slice(axis: 0, i..<(i + 1)).squeezed(axis: 0)
            }
            population = next
            out.append((next, best, bestFitness))
        }
        return out
    }
}

extension EvoLFQ: SeededModule {}
