#!/usr/bin/env bash
# Makes (once) a Python venv with the reference: CPU torch, vector-quantize-pytorch 1.32.0, safetensors,
# numpy, faiss-cpu. Prints the venv's python on the last line. VQ_REFERENCE_VENV overrides the location.
set -eu
venv=${VQ_REFERENCE_VENV:-$HOME/.cache/swift-vector-quantize/reference-venv}
py=$venv/bin/python
if ! { [ -x "$py" ] && "$py" -c 'import torch, vector_quantize_pytorch, safetensors, numpy' 2>/dev/null; }; then
  python3 -m venv "$venv"
  "$py" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null || "$py" -m pip install -q torch
  "$py" -m pip install -q vector-quantize-pytorch==1.32.0 safetensors numpy faiss-cpu threadpoolctl
fi
echo "$py"
