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
