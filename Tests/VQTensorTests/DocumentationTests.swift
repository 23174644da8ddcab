import Foundation
import Testing
import VQTensor
import VQTestSupport

/// The snippets of `VQTensor.docc/GettingStarted.md`, as written, with their claims checked.
@Suite("VQTensor documentation")
struct VQTensorDocumentationTests {
    @Test("getting started: every snippet runs and says what it returns")
    func gettingStarted() {
        var rng = SeededGenerator(seed: 0)
        let x = Tensor.randomNormal([1000, 16], using: &rng)        // 1000 vectors of dimension 16
        let w = Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3])
        let y = (w * 2 + 1).sum(axis: 1)                              // [2]: [15, 33]
        #expect(y.scalars == [15, 33])

        let a = Tensor([1, 2, 3, 4], shape: [2, 2]).requiringGradient()
        let loss = (a * a + 5 * a).sum()
        loss.backward()
        let grad = a.grad!                                            // 2a + 5: [7, 9, 11, 13]
        #expect(grad.scalars == [7, 9, 11, 13])

        let codebook = Tensor.randomNormal([64, 16], using: &rng)
        let (indices, distances) = x.nearestCodes(codebook)          // [1000] each
        let reconstruction = codebook.indexSelect(axis: 0, indices)   // [1000, 16]
        #expect(indices.shape == [1000] && distances.shape == [1000] && reconstruction.shape == [1000, 16])

        let images = Tensor.randomNormal([8, 3, 28, 28], using: &rng)
        let kernel = Tensor.randomNormal([16, 3, 3, 3], using: &rng)
        let features = images.convolution(weight: kernel, padding: [1])   // [8, 16, 28, 28]
        #expect(features.shape == [8, 16, 28, 28])
    }

    @Test("the article's code is this test's code")
    func noDrift() throws {
        let root = DocSnippets.root()
        let blocks = try DocSnippets.blocks(root.appendingPathComponent("Sources/VQTensor/VQTensor.docc/GettingStarted.md"))
        #expect(blocks.count >= 4)
        for block in blocks {
            #expect(try DocSnippets.missing(block, in: URL(fileURLWithPath: #filePath)).isEmpty, "\(block)")
        }
    }
}
