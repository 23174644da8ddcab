import VQNN
import VQTensor
import VectorQuantize

var rng = SeededGenerator(seed: 0)
let encoder = Sequential(Conv2d(1, 16, kernelSize: 3, padding: 1, rng: &rng), MaxPool(kernelSize: [2, 2]), Activation(.gelu),
                         Conv2d(16, 32, kernelSize: 3, padding: 1, rng: &rng), MaxPool(kernelSize: [2, 2]))
