import Foundation
import VQNN
import VQTensor
@testable import VectorQuantize

/// Runs SimVQ and RandomProjectionQuantizer cases.
enum ImplicitFixtureDriver {
    static func run(_ f: ReferenceFixture) throws -> FixtureComparison {
        var cmp = FixtureComparison(f)
        let xIn = f.float("input.x")!
        let before = VectorQuantizerFixtureDriver.stateDict(f, prefix: "before.")
        for k in f.forwardKwargs.keys where !(f.module == "ResidualSimVQ" && k == "return_all_codes") {
            throw FixtureError.unsupported("unknown forward keyword '\(k)'")
        }
        switch f.module {
        case "SimVQ":
            let sim = try SimVQ(referenceKwargs: f.ctorKwargs)
            try sim.load(stateDict: before)
            if f.mode == "eval" { sim.eval() } else { sim.train() }
            let implicit = sim.codebook.detached()
            cmp.compare("aux.implicit_codebook", .float(implicit))
            let flat = xIn.reshaped([-1, sim.dim])
            cmp.compare("aux.dist", .float(flat.pairwiseSquaredDistance(implicit).clamped(min: 0).sqrt().reshaped(Array(xIn.shape.dropLast()) + [-1])))
            let x = f.xRequiresGrad ? xIn.requiringGradient() : xIn
            let out = sim(x)
            cmp.compare("out.quantized", .float(out.quantized.detached()))
            cmp.compare("out.indices", .integer(out.indices))
            cmp.compare("out.loss", .float(out.loss.detached()))
            cmp.compare("aux.codes_at_indices", .float(sim.indicesToCodes(out.indices).detached()))
            if f.xRequiresGrad {
                func grads(_ y: Tensor) -> Tensor? {
                    x.grad = nil
                    sim.zeroGradients()
                    y.backward()
                    return x.grad
                }
                cmp.compare("grad.loss.x", grads(out.loss).map { .float($0) })
                cmp.compareParameterGradients("grad.loss.", of: sim)
                if let g = f.float("input.grad_output") {
                    let objective = out.loss + (out.quantized * g).sum()
                    // A sum over every output element: relative tolerance, as for ResidualSimVQ below.
                    cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
                    cmp.compare("grad.objective.x", grads(objective).map { .float($0) })
                    cmp.compareParameterGradients("grad.objective.", of: sim)
                    if let opt = f.json["optimizer"] as? [String: Any], let lr = opt["lr"] as? Double {
                        // The recorded step: SGD on the transform's parameters with the objective's gradient.
                        SGD(parameters: sim.trainableParameters(), learningRate: Float(lr)).step()
                    }
                }
            }
            // Recorded after the optimizer step (when there is one).
            cmp.compare("aux.codes_from_indices", .float(sim.indicesToCodes(out.indices).detached()))
            ResidualFixtureDriver.compareState(&cmp, sim)
        case "ResidualSimVQ":
            for k in f.forwardKwargs.keys where k != "return_all_codes" { throw FixtureError.unsupported("unknown forward keyword '\(k)'") }
            let rsv = try ResidualSimVQ(referenceKwargs: f.ctorKwargs)
            try rsv.load(stateDict: before)
            if f.mode == "eval" { rsv.eval() } else { rsv.train() }
            cmp.compare("aux.codebooks", .float(rsv.codebooks.detached()))
            let x = f.xRequiresGrad ? xIn.requiringGradient() : xIn
            let out = rsv(x)
            cmp.compare("out.quantized", .float(out.quantized.detached()))
            cmp.compare("out.indices", .integer(out.indices))
            cmp.compare("out.losses", .float(out.losses.detached()))
            cmp.compare("out.all_codes", .float(rsv.getCodes(from: out.indices).detached()))
            cmp.compare("aux.output_from_indices", .float(rsv.getOutput(from: out.indices).detached()))
            if f.xRequiresGrad {
                func grads(_ y: Tensor) -> Tensor? {
                    x.grad = nil
                    rsv.zeroGradients()
                    y.backward()
                    return x.grad
                }
                cmp.compare("grad.loss.x", grads(out.losses.sum()).map { .float($0) })
                cmp.compareParameterGradients("grad.loss.", of: rsv)
                if let g = f.float("input.grad_output") {
                    let objective = out.losses.sum() + (out.quantized * g).sum()
                    cmp.compare("out.objective", .float(objective.detached()), atol: 2e-6 * max(1, abs(objective.item)))
                    cmp.compare("grad.objective.x", grads(objective).map { .float($0) })
                    cmp.compareParameterGradients("grad.objective.", of: rsv)
                    if let opt = f.json["optimizer"] as? [String: Any], let lr = opt["lr"] as? Double {
                        SGD(parameters: rsv.trainableParameters(), learningRate: Float(lr)).step()
                    }
                }
            }
            ResidualFixtureDriver.compareState(&cmp, rsv)
        case "RandomProjectionQuantizer":
            // The reference's inner projection is in the case's state when it has several codebooks.
            var kw = f.ctorKwargs
            if before["vq.project_in.weight"] != nil { kw["reference_layout"] = true }
            let rpq = try RandomProjectionQuantizer(referenceKwargs: kw)
            try rpq.load(stateDict: before)
            let (normed, projected) = rpq.project(xIn)
            cmp.compare("aux.normed_x", .float(normed))
            cmp.compare("aux.projected", .float(projected))
            cmp.compare("aux.neg_dist", .float(VectorQuantizerFixtureDriver.referenceScores(rpq.vq, projected, .init())))
            cmp.compare("out.indices", .integer(rpq(xIn).indices))
            ResidualFixtureDriver.compareState(&cmp, rpq)
        default:
            throw FixtureError.unsupported("module \(f.module)")
        }
        return cmp
    }
}
