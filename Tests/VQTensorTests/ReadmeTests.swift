import Testing
import VQTensor

/// The README's quick start, verbatim, so that it keeps compiling and meaning what it says.
@Test("README quick start")
func readmeQuickStart() {
    var rng = SeededGenerator(seed: 0)
    let x = Tensor.randomNormal([1000, 16], using: &rng)      // 1000 vectors of dimension 16
    let codebook = Tensor.randomNormal([64, 16], using: &rng)  // 64 codes

    // Nearest code per vector, without materialising the 1000 × 64 distance matrix.
    let (indices, distances) = x.nearestCodes(codebook)
    let reconstruction = codebook.indexSelect(axis: 0, indices)  // [1000, 16]

    // Reverse-mode autograd: y = Σ x² + 5x has dy/dx = 2x + 5.
    let w = Tensor([1, 2, 3, 4], shape: [2, 2]).requiringGradient()
    (w * w + 5 * w).sum().backward()
    print(w.grad!.scalars)  // [7.0, 9.0, 11.0, 13.0]

    #expect(reconstruction.shape == [1000, 16])
    let recomputed = (reconstruction - x).squared().sum(axis: 1).sqrt()
    #expect(zip(recomputed.scalars, distances.scalars).allSatisfy { abs($0 - $1) < 1e-3 })
    #expect(w.grad!.scalars == [7, 9, 11, 13])
}
