import Foundation
import Testing
import VQNN
import VQTensor
import VQTestSupport

/// The snippets of `VQNN.docc/GettingStarted.md`, as written, with their claims checked.
@Suite("VQNN documentation")
struct VQNNDocumentationTests {
    @Test("getting started: every snippet runs and says what it does")
    func gettingStarted() throws {
        var rng = SeededGenerator(seed: 0)
        let mlp = Sequential(Linear(16, 64, rng: &rng), Activation(.gelu), Linear(64, 16, rng: &rng))
        let keys = mlp.stateDict().keys.sorted()                      // ["0.bias", "0.weight", "2.bias", "2.weight"]
        #expect(keys == ["0.bias", "0.weight", "2.bias", "2.weight"])

        let first = mlp.layers[0] as! Linear
        let before = first.weight.value
        first.weight.freezeRows(0..<8)                                // output features 0–7 never change
        let optimizer = Adam(parameters: mlp.trainableParameters(), learningRate: 1e-3)
        for _ in 0..<10 {
            let x = Tensor.randomNormal([32, 16], using: &rng)
            let loss = Loss.mse(mlp(x), x)
            mlp.zeroGradients()
            loss.backward()
            optimizer.step()
        }
        #expect(first.weight.value.slice(axis: 0, 0..<8) == before.slice(axis: 0, 0..<8))
        #expect(first.weight.value.slice(axis: 0, 8..<64) != before.slice(axis: 0, 8..<64))

        mlp.freeze(keys: ["2.weight", "2.bias"])
        try mlp.unfreeze(keys: ["2.weight"], strict: true)
        #expect(!(mlp.layers[2] as! Linear).weight.isFrozen && (mlp.layers[2] as! Linear).bias!.isFrozen)
    }

    @Test("the article's code is this test's code")
    func noDrift() throws {
        let root = DocSnippets.root()
        let blocks = try DocSnippets.blocks(root.appendingPathComponent("Sources/VQNN/VQNN.docc/GettingStarted.md"))
        #expect(blocks.count >= 3)
        for block in blocks {
            #expect(try DocSnippets.missing(block, in: URL(fileURLWithPath: #filePath)).isEmpty, "\(block)")
        }
    }
}
