import VQNN
import VQTensor
import VectorQuantize

var rng = SeededGenerator(seed: 0)
let encoder = Sequential(Conv2d(1, 16, kernelSize: 3, padding: 1, rng: &rng), MaxPool(kernelSize: [2, 2]), Activation(.gelu),
                         Conv2d(16, 32, kernelSize: 3, padding: 1, rng: &rng), MaxPool(kernelSize: [2, 2]))
var config = VectorQuantizerConfiguration(dim: 32, codebookSize: 256)
config.acceptImageFmap = true
config.decay = 0.8
let vq = try VectorQuantizer(config)
try vq.codebook.freeze(codes: 0..<64)
let decoder = Sequential(Upsample(scaleFactor: 2), Conv2d(32, 16, kernelSize: 3, padding: 1, rng: &rng), Activation(.gelu),
                         Upsample(scaleFactor: 2), Conv2d(16, 1, kernelSize: 3, padding: 1, rng: &rng))
let held = vq.codes.slice(axis: 0, 0..<64)
let optimizer = Adam(parameters: encoder.trainableParameters() + decoder.trainableParameters(), learningRate: 3e-3)
for _ in 0..<3 {
    let images = Tensor.randomUniform([16, 1, 8, 8], using: &rng)   // your images here
    let out = vq(encoder(images))
    let loss = Loss.mse(decoder(out.quantized), images) + out.loss
    encoder.zeroGradients(); decoder.zeroGradients()
    loss.backward()
    optimizer.step()
}
