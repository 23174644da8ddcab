import Testing
import VQTensor
import VectorQuantize

/// The README's partial-freezing example, with its claim checked.
@Test("README: partial freezing in ten lines")
func readmePartialFreezing() throws {
    let vq = try VectorQuantizer(VectorQuantizerConfiguration(dim: 32, codebookSize: 512))
    vq.codebook.freeze(codes: 0..<256)                 // half the codes are now fixed, exactly
    var rng = SeededGenerator(seed: 1)
    let before = vq.codes
    for _ in 0..<100 {
        let x = Tensor.randomNormal([8, 64, 32], using: &rng)
        let out = vq(x)                                 // EMA training step: codes 256..<512 learn
        _ = (out.quantized, out.indices, out.loss)
    }
    #expect(vq.codes.slice(axis: 0, 0..<256) == before.slice(axis: 0, 0..<256))
    #expect(vq.codes.slice(axis: 0, 256..<512) != before.slice(axis: 0, 256..<512))
}

@Test("README: a residual stack with its first layer frozen")
func readmeResidual() throws {
    var rng = SeededGenerator(seed: 2)
    let rvq = try ResidualVQ(ResidualVQConfiguration(dim: 32, numQuantizers: 4, codebookSize: 256))
    rvq.layers[0].codebook.freezeAllCodes()            // layer 0 never changes again; layers 1–3 learn
    let x = Tensor.randomNormal([8, 64, 32], using: &rng)
    let before = rvq.layers.map(\.codes)
    let out = rvq(x)                                    // out.indices: [8, 64, 4], out.losses: [4]
    #expect(out.indices.shape == [8, 64, 4] && out.losses.shape == [4])
    #expect(rvq.layers[0].codes == before[0])
    #expect((1..<4).allSatisfy { rvq.layers[$0].codes != before[$0] })
}
