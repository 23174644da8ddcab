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
