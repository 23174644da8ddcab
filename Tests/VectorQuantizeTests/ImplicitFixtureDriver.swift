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
        for k in f.forwardKwargs.keys { throw FixtureError.unsupported("unknown forward keyword '\(k)'") }
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
                let w = sim.codeTransform.weight
                func grads(_ y: Tensor) -> (Tensor?, Tensor?) {
                    x.grad = nil
                    w.grad = nil
                    y.backward()
                    return (x.grad, w.grad)
                }
                let (gx, gw) = grads(out.loss)
                cmp.compare("grad.loss.x", gx.map { .float($0) })
                cmp.compare("grad.loss.code_transform.weight", gw.map { .float($0) })
                if let g = f.float("input.grad_output") {
                    let objective = out.loss + (out.quantized * g).sum()
                    cmp.compare("out.objective", .float(objective.detached()))
                    let (ox, ow) = grads(objective)
                    cmp.compare("grad.objective.x", ox.map { .float($0) })
                    cmp.compare("grad.objective.code_transform.weight", ow.map { .float($0) })
                    if let opt = f.json["optimizer"] as? [String: Any], let lr = opt["lr"] as? Double {
                        // The recorded step: SGD on code_transform.weight with the objective's gradient.
                        SGD(parameters: [w], learningRate: Float(lr)).step()
                    }
                }
            }
            // Recorded after the optimizer step (when there is one).
            cmp.compare("aux.codes_from_indices", .float(sim.indicesToCodes(out.indices).detached()))
            ResidualFixtureDriver.compareState(&cmp, sim)
        case "RandomProjectionQuantizer":
            let rpq = try RandomProjectionQuantizer(referenceKwargs: f.ctorKwargs)
            try rpq.load(stateDict: before)
            let (normed, projected) = rpq.project(xIn)
            cmp.compare("aux.normed_x", .float(normed))
            cmp.compare("aux.projected", .float(projected))
            cmp.compare("aux.neg_dist", .float(VectorQuantizerFixtureDriver.referenceScores(rpq.vq, projected, .init())))
            cmp.compare("out.indices", .integer(rpq(xIn)))
            ResidualFixtureDriver.compareState(&cmp, rpq)
        default:
            throw FixtureError.unsupported("module \(f.module)")
        }
        return cmp
    }
}
