#!/usr/bin/env bash
# One perf_check.py run per kernel level, as Benchmarks/README.md reports them (2 threads, the reference in the same
# run). Level 1 runs against a reference held to AVX2 as well — torch's own kernels, MKL, oneDNN, FAISS and
# OpenBLAS on their AVX2 paths — which is what an AVX2-only machine would measure; level 2 (forced) against the
# reference as it is. Needs the reference venv (../shared/peer/setup.sh) and a release build.
#   Scripts/perf_levels.sh [levels...]        (default: 3 1 0; each run ~5–7 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PY:-/root/.cache/swift-vector-quantize/reference-venv/bin/python}
check=${PERF_CHECK:-../shared/peer/perf_check.py}
vq=$(swift build -c release --show-bin-path)/vq
for level in "${@:-3 1 0}"; do
  for l in $level; do
    case $l in
      0) VQ_KERNEL_LEVEL=0 "$py" "$check" "$vq" --goals 0 | sed "s/^/level 0: /" || true ;;
      1) VQ_KERNEL_LEVEL=1 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
           FAISS_SIMD_LEVEL=AVX2 OPENBLAS_CORETYPE=Haswell "$py" "$check" "$vq" --goals 3 | sed "s/^/level 1: /" || true ;;
      *) VQ_KERNEL_LEVEL=$l "$py" "$check" "$vq" --goals 3 | sed "s/^/level $l: /" || true ;;
    esac
  done
done
