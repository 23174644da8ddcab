import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport
@testable import VectorQuantize

/// The reference's last gaps (issue 27): options it has that were refused, ignored or not public here.
@Suite("The reference's last gaps")
struct ReferenceGapTests {
    @Test("FSQ return_indices: false computes no indices in the forward (the same codes), and encode still gives them")
    func fsqReturnIndices() throws {
        let with = try FSQ(.init(referenceKwargs: ["levels": [8, 5, 5], "dim": 6]))
        let without = try FSQ(.init(referenceKwargs: ["levels": [8, 5, 5], "dim": 6, "return_indices": false]))
        let x = TestSupport.random([2, 10, 6], seed: 3)
        let (a, b) = (with(x), without(x))
        #expect(b.indices.count == 0 && a.indices.shape == [2, 10])
        #expect(a.quantized == b.quantized && a.codes == b.codes)
        #expect(without.encode(x) == with.encode(x))
        #expect(try without.decode(without.encode(x)) == (try with.decode(with.encode(x))))
    }

    @Test("ResidualFSQ soft_clamp_input_value takes one value per level (x ← tanh(x / v) · v per channel)")
    func residualFSQPerLevelClamp() throws {
        let values: [Float] = [1.4, 1.3, 1.6]
        let clamped = try ResidualFSQ(.init(referenceKwargs: ["levels": [8, 5, 5], "num_quantizers": 2, "bound_hard_clamp": false,
                                                              "soft_clamp_input_value": values.map(Double.init)]))
        let plain = try ResidualFSQ(.init(referenceKwargs: ["levels": [8, 5, 5], "num_quantizers": 2, "bound_hard_clamp": false]))
        let x = TestSupport.random([2, 7, 3], seed: 5, std: 2)
        var manual = x.scalars
        for i in manual.indices { let v = values[i % 3]; manual[i] = Float(tanh(Double(manual[i] / v))) * v }
        let expected = plain(Tensor(manual, shape: x.shape)).quantized
        let got = clamped(x).quantized
        for (g, e) in zip(got.scalars, expected.scalars) { #expect(abs(g - e) <= 1e-6 * max(1, abs(e)), "\(g) vs \(e)") }
        // One value for every level is the list of one; lengths other than 1 or levels.count, and non-positive values, refused.
        let one = try ResidualFSQ(.init(referenceKwargs: ["levels": [8, 5, 5], "num_quantizers": 2, "bound_hard_clamp": false, "soft_clamp_input_value": 1.5]))
        #expect(one.configuration.softClampInputValue == [1.5])
        for bad: Any in [[1.0, 2.0], [1.0, -1.0, 1.0], [Double.nan]] {
            #expect(throws: ConfigurationError.self) {
                try ResidualFSQ(.init(referenceKwargs: ["levels": [8, 5, 5], "num_quantizers": 2, "bound_hard_clamp": false, "soft_clamp_input_value": bad]))
            }
        }
    }

    @Test("FSP's CDF activations and their inverses are public, and level indices map back to indices", arguments: FSP.Activation.allCases)
    func fspActivation(_ act: FSP.Activation) throws {
        #expect(abs(act.cdf(Tensor([0])).scalars[0] - 0.5) < 1e-6)
        let z = Tensor([-1.5, -0.3, 0.2, 1.1])
        let back = act.inverseCDF(act.cdf(z))
        for (a, b) in zip(back.scalars, z.scalars) { #expect(abs(a - b) < 2e-3, "\(act): \(a) vs \(b)") }
        var c = FSP.Configuration(levels: [8, 5, 5], dim: 6)
        c.activation = act
        let fsp = try FSP(c)
        fsp.eval()
        let out = fsp(TestSupport.random([2, 9, 6], seed: 7))
        let level = IndexTensor(out.levelIndices.scalars.map { Int($0) }, shape: out.levelIndices.shape)
        #expect(try fsp.indices(fromLevelIndices: level) == out.indices)
        #expect(try fsp.indices(fromLevelIndices: fsp.levelIndices(out.indices)) == out.indices)
        #expect(throws: ConfigurationError.self) { try fsp.indices(fromLevelIndices: IndexTensor([0, 5, 0], shape: [1, 3])) }
        #expect(throws: ConfigurationError.self) { try fsp.indices(fromLevelIndices: IndexTensor([0, 1], shape: [1, 2])) }
    }
}
