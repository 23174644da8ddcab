import Foundation
import VQNN
import VQTensor
@testable import VectorQuantize

/// Runs `ResidualVQ` and `GroupedResidualVQ` cases.
enum ResidualFixtureDriver {
    static let knownForwardKeywords: Set<String> = ["return_all_codes", "mask", "freeze_codebook", "sample_codebook_temp", "indices"]

    static func options(_ f: ReferenceFixture) throws -> ResidualVQOptions {
        var o = ResidualVQOptions()
        for (k, v) in f.forwardKwargs {
            guard knownForwardKeywords.contains(k) else { throw FixtureError.unsupported("unknown forward keyword '\(k)'") }
            let ref = (v as? String).flatMap { $0.hasPrefix("tensor:") ? String($0.dropFirst(7)) : nil }
            switch k {
            case "mask": o.mask = (f.ints(ref ?? "")?.scalars.map { $0 != 0 }).map { TokenMask($0) }
            case "freeze_codebook": o.freezeCodebook = v as? Bool ?? false
            case "sample_codebook_temp": o.sampleCodebookTemperature = (v as? Double).map(Float.init)
            case "indices": o.targetIndices = f.ints(ref ?? "")
            default: break
            }
        }
        return o
    }

    /// Compares every `after.<key>` of the case with the module's state.
    static func compareState(_ cmp: inout FixtureComparison, _ m: Module, prefix: String = "after.") {
        let state = m.stateDict()
        for key in cmp.fixture.tensors.keys.sorted() where key.hasPrefix(prefix) {
            cmp.compare(key, state[String(key.dropFirst(prefix.count))].map { .float($0) })
        }
    }

    static func run(_ f: ReferenceFixture) throws -> FixtureComparison {
        var cmp = FixtureComparison(f)
        let x = f.float("input.x")!
        let before = VectorQuantizerFixtureDriver.stateDict(f, prefix: "before.")
        var opts = try options(f)
        switch f.module {
        case "ResidualVQ":
            let rvq = try ResidualVQ(ResidualVQConfiguration(referenceKwargs: f.ctorKwargs))
            try rvq.load(stateDict: before)
            if f.mode == "eval" { rvq.eval() } else { rvq.train() }
            if let noise = f.float("aux.directional_noise") {
                opts.directionalNoise = noise
                cmp.skip("aux.directional_noise", "the recorded normal draw, replayed")
            }
            let leaf = f.xRequiresGrad ? x.requiringGradient() : x
            let out = rvq(leaf, options: opts)
            if f.xRequiresGrad, let g = f.float("input.grad_output") {
                // loss = Σ losses; objective = loss + Σ quantized ⊙ G; zero where a gradient does not reach.
                let loss = out.losses.sum()
                cmp.compare("grad.loss.x", NewQuantizerFixtureDriver.gradient(of: loss, at: leaf, rvq).map { .float($0) } ?? .float(Tensor.zeros(x.shape)))
                cmp.compareParameterGradients("grad.loss.", of: rvq, relative: true, zeroWhenAbsent: true)
                let objective = loss + (out.quantized * g).sum()
                cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
                cmp.compare("grad.objective.x", NewQuantizerFixtureDriver.gradient(of: objective, at: leaf, rvq).map { .float($0) })
                cmp.compareParameterGradients("grad.objective.", of: rvq, relative: true, zeroWhenAbsent: true)
            }
            cmp.compare("out.quantized", .float(out.quantized.detached()))
            cmp.compare("out.indices", .integer(out.indices))
            cmp.compare("out.losses", .float(out.losses.detached()))
            cmp.compare("out.all_codes", .float(rvq.getCodes(from: out.indices)))
            cmp.compare("aux.codes_from_indices", .float(rvq.getCodes(from: out.indices)))
            cmp.compare("aux.output_from_indices", .float(rvq.getOutput(from: out.indices).detached()))
            compareState(&cmp, rvq)
        case "GroupedResidualVQ":
            let g = try GroupedResidualVQ(referenceKwargs: f.ctorKwargs)
            try g.load(stateDict: before)
            if f.mode == "eval" { g.eval() } else { g.train() }
            let out = g(x, options: opts)
            cmp.compare("out.quantized", .float(out.quantized.detached()))
            cmp.compare("out.indices", .integer(out.indices))
            cmp.compare("out.losses", .float(out.losses.detached()))
            cmp.compare("out.all_codes", .float(g.getCodes(from: out.indices)))
            cmp.compare("aux.codes_from_indices", .float(g.getCodes(from: out.indices)))
            cmp.compare("aux.output_from_indices", .float(g.getOutput(from: out.indices).detached()))
            compareState(&cmp, g)
        default:
            throw FixtureError.unsupported("module \(f.module)")
        }
        return cmp
    }
}
