import Foundation
import VQNN
import VQTensor
@testable import VectorQuantize

/// Runs the cases of BinaryMapper, LatentQuantize, FSP, EvoLFQ and HierarchicalVQ.
enum NewQuantizerFixtureDriver {
    static func run(_ f: ReferenceFixture) throws -> FixtureComparison {
        var cmp = FixtureComparison(f)
        switch f.module {
        case "BinaryMapper": try binaryMapper(f, &cmp)
        case "LatentQuantize": try latentQuantize(f, &cmp)
        case "FSP": try fsp(f, &cmp)
        case "EvoLFQ": try EvoLFQFixtureDriver.run(f, &cmp)
        case "HierarchicalVQ": try HierarchicalVQFixtureDriver.run(f, &cmp)
        default: throw FixtureError.unsupported("module \(f.module)")
        }
        return cmp
    }

    /// `x.grad` of `y` (after clearing the module's and the leaf's gradients).
    static func gradient(of y: Tensor, at x: Tensor, _ m: Module) -> Tensor? {
        x.grad = nil
        m.zeroGradients()
        y.backward()
        return x.grad
    }

    static func binaryMapper(_ f: ReferenceFixture, _ cmp: inout FixtureComparison) throws {
        try ScalarFixtureDriver.checkForwardKeywords(f, ["return_indices", "temperature"])
        let m = try BinaryMapper(try BinaryMapper.Configuration(referenceKwargs: f.ctorKwargs))
        if f.mode == "eval" { m.eval() } else { m.train() }
        let x = f.float("input.x")!
        let leaf = f.xRequiresGrad ? x.requiringGradient() : x
        let temperature = Float(f.forwardKwargs["temperature"] as? Double ?? 1)
        // The bits the reference drew (torch's Bernoulli) replace ours.
        let bits = f.float("aux.sampled_bits")
        cmp.skip("aux.sampled_bits", "the recorded Bernoulli draw, used as the sampled bits")
        let out = m(leaf, temperature: temperature, sampledBits: bits)
        cmp.compare("out.one_hot", .float(out.oneHot.detached()))
        cmp.compare("out.indices", .integer(out.indices))
        cmp.compare("out.aux_kl_loss", .float(out.auxLoss.detached()))
        cmp.compare("out.log_prob", .float(m.logProbability(x, indices: out.indices)))
        if f.xRequiresGrad, let g = f.float("input.grad_output") {
            cmp.compare("grad.loss.x", gradient(of: out.auxLoss, at: leaf, m).map { .float($0) })
            let objective = out.auxLoss + (out.oneHot * g).sum()
            cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
            cmp.compare("grad.objective.x", gradient(of: objective, at: leaf, m).map { .float($0) })
        }
    }

    static func latentQuantize(_ f: ReferenceFixture, _ cmp: inout FixtureComparison) throws {
        try ScalarFixtureDriver.checkForwardKeywords(f, [])
        let m = try LatentQuantize(try LatentQuantize.Configuration(referenceKwargs: f.ctorKwargs))
        try ScalarFixtureDriver.prepare(m, f)
        let x = f.float("input.x")!
        let leaf = f.xRequiresGrad || f.float("input.grad_output") != nil ? x.requiringGradient() : x
        let out = m(leaf)
        cmp.compare("out.quantized", .float(out.quantized.detached()))
        cmp.compare("out.indices", .integer(out.indices))
        cmp.compare("out.loss", .float(out.loss.detached()))
        cmp.compare("aux.codes_from_indices", .float(m.indicesToCodes(out.indices).detached()))
        if let g = f.float("input.grad_output") {
            cmp.compare("grad.loss.x", gradient(of: out.loss, at: leaf, m).map { .float($0) })
            cmp.compareParameterGradients("grad.loss.", of: m, relative: true, zeroWhenAbsent: true)
            let objective = out.loss + (out.quantized * g).sum()
            cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
            cmp.compare("grad.objective.x", gradient(of: objective, at: leaf, m).map { .float($0) })
            cmp.compareParameterGradients("grad.objective.", of: m, relative: true, zeroWhenAbsent: true)
        }
        ResidualFixtureDriver.compareState(&cmp, m)
    }

    static func fsp(_ f: ReferenceFixture, _ cmp: inout FixtureComparison) throws {
        try ScalarFixtureDriver.checkForwardKeywords(f, [])
        let m = try FSP(try FSP.Configuration(referenceKwargs: f.ctorKwargs))
        try ScalarFixtureDriver.prepare(m, f)
        let x = f.float("input.x")!
        let leaf = f.float("input.grad_output") != nil ? x.requiringGradient() : x
        var draws: FSP.Draws? = nil
        if let u1 = f.float("aux.rand_perturbation"), let u2 = f.float("aux.rand_quantize_mask") {
            draws = FSP.Draws(perturbation: u1, mask: u2)
            cmp.skip("aux.rand_perturbation", "the recorded uniforms, used as the perturbation draw")
            cmp.skip("aux.rand_quantize_mask", "the recorded uniforms, used as the mask draw")
        }
        let out = m(leaf, draws: draws)
        cmp.compare("out.quantized", .float(out.quantized.detached()))
        cmp.compare("out.indices", .integer(out.indices))
        cmp.compare("out.loss", .float(out.loss.detached()))
        cmp.compare("out.level_indices", .float(out.levelIndices))
        cmp.compare("out.norm_info.mean", .float(out.statistics.mean.detached()))
        cmp.compare("out.norm_info.variance", .float(out.statistics.variance.detached()))
        cmp.compare("out.norm_info.skewness", .float(out.statistics.skewness.detached()), atol: 2e-5)
        cmp.compare("out.norm_info.kurtosis", .float(out.statistics.kurtosis.detached()), atol: 2e-5)
        cmp.compare("out.p_accept_prob", out.acceptProbability.map { .float($0) })
        cmp.compare("aux.codes_from_indices", .float(m.indicesToCodes(out.indices).detached()))
        if let g = f.float("input.grad_output") {
            cmp.compare("grad.loss.x", gradient(of: out.loss, at: leaf, m).map { .float($0) })
            cmp.compareParameterGradients("grad.loss.", of: m, relative: true)
            let objective = out.loss + (out.quantized * g).sum()
            cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
            cmp.compare("grad.objective.x", gradient(of: objective, at: leaf, m).map { .float($0) })
            cmp.compareParameterGradients("grad.objective.", of: m, relative: true)
        }
        ResidualFixtureDriver.compareState(&cmp, m)
    }
}

enum EvoLFQFixtureDriver {
    static func run(_ f: ReferenceFixture, _ cmp: inout FixtureComparison) throws {
        let m = try EvoLFQ(referenceKwargs: f.ctorKwargs)
        try ScalarFixtureDriver.prepare(m, f)
        let x = f.float("input.x")!
        cmp.compare("aux.latents", .float(withoutGradient { m.encoder(x) }))
        if f.forwardKwargs["method"] == nil {
            try ScalarFixtureDriver.checkForwardKeywords(f, [])
            let out = m(x)
            cmp.compare("out.reconstructed", .float(out.reconstructed.detached()))
            cmp.compare("out.indices", .integer(out.indices))
            cmp.compare("out.entropy_aux_loss", .float(out.auxLoss.detached()))
        } else {
            // init_population_from_data(x) then step(population, fitness) with every draw replayed.
            let target = f.float("input.target")!
            cmp.compare("aux.encoded_bits", .float(m.encodeBits(x)))
            let initial = m.initialPopulation(from: x, uniforms: f.float("aux.init_mutation_uniform"))
            cmp.skip("aux.init_mutation_uniform", "the recorded uniforms, used as the mutation draw")
            cmp.compare("out.initial_population", .float(initial))
            cmp.compare("aux.decoded_initial_population", .float(m.decodeBits(initial)))
            let draws = EvoLFQ.StepDraws(contenders: f.ints("aux.contenders")!, crossover: f.float("aux.crossover_uniform")!,
                                         mutation: f.float("aux.mutation_uniform")!)
            for k in ["aux.contenders", "aux.crossover_uniform", "aux.mutation_uniform"] { cmp.skip(k, "a recorded draw, replayed") }
            let (next, fitness) = m.step(initial, draws: draws) { decoded, _ in -(decoded - target).squared().mean(axis: -1) }
            cmp.compare("out.fitnesses", .float(fitness))
            cmp.compare("out.next_population", .float(next))
        }
        ResidualFixtureDriver.compareState(&cmp, m)
    }
}

enum HierarchicalVQFixtureDriver {
    static func run(_ f: ReferenceFixture, _ cmp: inout FixtureComparison) throws {
        try ScalarFixtureDriver.checkForwardKeywords(f, [])
        let m = try HierarchicalVQ(referenceKwargs: f.ctorKwargs)
        try ScalarFixtureDriver.prepare(m, f)
        let x = f.float("input.x")!
        let out = m(x)
        cmp.compare("out.quantized", .float(out.quantized.detached()))
        cmp.compare("out.loss", .float(out.loss.detached()))
        for (l, idx) in out.indices.enumerated() {
            cmp.compare("out.indices.\(l)", .integer(idx))
            cmp.compare("aux.level_inputs.\(l)", .float(out.levelInputs[l]))
        }
        let n = m.configuration.channelFirst ? x.shape[2] : x.shape[1]
        cmp.compare("aux.output_from_indices", .float(withoutGradient { m.getOutput(from: out.indices, length: n) }))
        ResidualFixtureDriver.compareState(&cmp, m)
    }
}
