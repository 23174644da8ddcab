import VQTensor
