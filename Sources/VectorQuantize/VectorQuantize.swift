import VQNN
