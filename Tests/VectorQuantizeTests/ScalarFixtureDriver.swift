import Foundation
import VQNN
import VQTensor
@testable import VectorQuantize

/// Runs the scalar-quantizer cases: FSQ, ResidualFSQ, GroupedResidualFSQ (and LFQ, ResidualLFQ).
enum ScalarFixtureDriver {
    static func checkForwardKeywords(_ f: ReferenceFixture, _ known: Set<String>) throws {
        for k in f.forwardKwargs.keys where !known.contains(k) { throw FixtureError.unsupported("unknown forward keyword '\(k)'") }
    }

    static func prepare(_ m: Module, _ f: ReferenceFixture) throws {
        try m.load(stateDict: VectorQuantizerFixtureDriver.stateDict(f, prefix: "before."))
        if f.mode == "eval" { m.eval() } else { m.train() }
    }

    static func run(_ f: ReferenceFixture) throws -> FixtureComparison {
        var cmp = FixtureComparison(f)
        let x = f.float("input.x")!
        switch f.module {
        case "FSQ":
            try checkForwardKeywords(f, [])
            let fsq = try FSQ(FSQ.Configuration(referenceKwargs: f.ctorKwargs))
            try prepare(fsq, f)
            let leaf = f.float("input.grad_output") != nil ? x.requiringGradient() : x
            let out = fsq(leaf)
            if let g = f.float("input.grad_output") {
                // FSQ has no loss: objective = Σ codes ⊙ G, through the rounding's straight-through estimator.
                let objective = (out.quantized * g).sum()
                objective.backward()
                cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
                cmp.compare("grad.objective.x", leaf.grad.map { .float($0) })
                cmp.compareParameterGradients("grad.objective.", of: fsq, relative: true)
                cmp.compare("aux.quantizer_input", .float(withoutGradient {
                    fsq.quantizerInput(x, b: x.shape[0], n: x.shape[1]).reshaped([x.shape[0], x.shape[1], -1])
                }))
            }
            cmp.compare("out.codes", .float(out.quantized.detached()))
            cmp.compare("out.indices", .integer(out.indices))
            cmp.compare("aux.zhat", .float(out.codes.detached()))
            cmp.compare("aux.implicit_codebook", .float(fsq.implicitCodebook))
            cmp.compare("aux.codes_from_indices", .float(fsq.indicesToCodes(out.indices).detached()))
            ResidualFixtureDriver.compareState(&cmp, fsq)
        case "ResidualFSQ":
            try checkForwardKeywords(f, ["return_all_codes"])
            let r = try ResidualFSQ(referenceKwargs: f.ctorKwargs)
            try prepare(r, f)
            let out = r(x)
            compareResidualFSQ(&cmp, out, codes: r.getCodes(from: out.indices), output: r.getOutput(from: out.indices),
                               codebooks: r.codebooks, scales: r.scales)
            ResidualFixtureDriver.compareState(&cmp, r)
        case "GroupedResidualFSQ":
            try checkForwardKeywords(f, ["return_all_codes"])
            let g = try GroupedResidualFSQ(referenceKwargs: f.ctorKwargs)
            try prepare(g, f)
            let out = g(x)
            compareResidualFSQ(&cmp, out, codes: g.getCodes(from: out.indices), output: g.getOutput(from: out.indices),
                               codebooks: Tensor.stack(g.rvqs.map(\.codebooks), axis: 0),
                               scales: Tensor.stack(g.rvqs.map(\.scales), axis: 0))
            ResidualFixtureDriver.compareState(&cmp, g)
        case "LFQ":
            try checkForwardKeywords(f, ["inv_temperature", "return_loss_breakdown", "mask"])
            let lfq = try LFQ(LFQ.Configuration(referenceKwargs: f.ctorKwargs))
            try prepare(lfq, f)
            let invT = Float(f.forwardKwargs["inv_temperature"] as? Double ?? 100)
            let mask = ((f.forwardKwargs["mask"] as? String).flatMap { f.ints(String($0.dropFirst(7))) }?.scalars.map { $0 != 0 }).map { TokenMask($0) }
            let leaf = f.float("grad.loss.x") != nil ? x.requiringGradient() : x
            let out = lfq(leaf, inverseTemperature: invT, mask: mask)
            if f.float("grad.loss.x") != nil {
                // The gradient of the entropy aux loss alone, then of loss + Σ quantized · G.
                out.auxLoss.backward()
                cmp.compare("grad.loss.x", leaf.grad.map { .float($0) })
                cmp.compareParameterGradients("grad.loss.", of: lfq, relative: true)
                lfq.zeroGradients()
                let leaf2 = x.requiringGradient()
                let again = lfq(leaf2, inverseTemperature: invT, mask: mask)
                let objective = again.auxLoss + (again.quantized * f.float("input.grad_output")!).sum()
                objective.backward()
                // Σ quantized · G over every element: float32 sums in another order differ by ~1e-6 relative.
                cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
                cmp.compare("grad.objective.x", leaf2.grad.map { .float($0) })
                cmp.compareParameterGradients("grad.objective.", of: lfq, relative: true)
            }
            cmp.compare("aux.quantizer_input", .float(withoutGradient {
                var z = lfq.projectIn.map { $0(x) } ?? x
                if let v = lfq.configuration.softClampInputValue { z = (z / v).tanh() * v }
                return lfq.quantizerInput(z, b: x.shape[0], n: x.shape[1]).reshaped([x.shape[0], x.shape[1], -1])
            }))
            cmp.compare("out.quantized", .float(out.quantized.detached()))
            cmp.compare("out.indices", .integer(out.indices))
            cmp.compare("out.entropy_aux_loss", .float(out.auxLoss.detached()))
            cmp.compare("out.per_sample_entropy", .float(out.losses.perSampleEntropy.detached()))
            cmp.compare("out.batch_entropy", .float(out.losses.batchEntropy.detached()))
            cmp.compare("out.commitment", .float(out.losses.commitment.detached()))
            cmp.compare("aux.codebook", .float(lfq.codebook))
            ResidualFixtureDriver.compareState(&cmp, lfq)
        case "ResidualLFQ":
            try checkForwardKeywords(f, ["return_all_codes"])
            let r = try ResidualLFQ(referenceKwargs: f.ctorKwargs)
            try prepare(r, f)
            let out = r(x)
            compareResidualLFQ(&cmp, out, codes: r.getCodes(from: out.indices), output: r.getOutput(from: out.indices), codebooks: r.codebooks)
            ResidualFixtureDriver.compareState(&cmp, r)
        case "GroupedResidualLFQ":
            try checkForwardKeywords(f, ["return_all_codes"])
            let g = try GroupedResidualLFQ(referenceKwargs: f.ctorKwargs)
            try prepare(g, f)
            let out = g(x)
            compareResidualLFQ(&cmp, out, codes: g.getCodes(from: out.indices), output: g.getOutput(from: out.indices), codebooks: g.codebooks)
            cmp.skip("aux.dropout_seed_draw", "the reference's quantize-dropout seed draw (random; unused without quantize_dropout)")
            ResidualFixtureDriver.compareState(&cmp, g)
        default:
            throw FixtureError.unsupported("module \(f.module)")
        }
        return cmp
    }

    static func compareResidualLFQ(_ cmp: inout FixtureComparison, _ out: ResidualLFQ.Output,
                                   codes: Tensor, output: Tensor, codebooks: Tensor) {
        cmp.compare("out.quantized", .float(out.quantized.detached()))
        cmp.compare("out.indices", .integer(out.indices))
        cmp.compare("out.losses", .float(out.losses.detached()))
        cmp.compare("out.all_codes", .float(codes))
        cmp.compare("aux.codes_from_indices", .float(codes))
        cmp.compare("aux.output_from_indices", .float(output.detached()))
        cmp.compare("aux.codebooks", .float(codebooks))
        cmp.compare("aux.quantizer_inputs", .float(out.layerInputs))
    }

    static func compareResidualFSQ(_ cmp: inout FixtureComparison, _ out: ResidualFSQ.Output,
                                   codes: Tensor, output: Tensor, codebooks: Tensor, scales: Tensor) {
        cmp.compare("out.quantized", .float(out.quantized.detached()))
        cmp.compare("out.indices", .integer(out.indices))
        cmp.compare("out.all_codes", .float(codes.detached()))
        cmp.compare("aux.codes_from_indices", .float(codes.detached()))
        cmp.compare("aux.output_from_indices", .float(output.detached()))
        cmp.compare("aux.codebooks", .float(codebooks))
        cmp.compare("aux.scales", .float(scales))
        cmp.compare("aux.quantizer_inputs", .float(out.layerInputs))
    }
}
