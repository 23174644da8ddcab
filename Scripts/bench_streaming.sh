#!/usr/bin/env bash
# Streaming benchmark (issue: memory that does not grow with the input): encode, decode and inspect of
# ROWS × 64 vectors (default 4,000,000 = 1 GB) with a 1,024-code checkpoint, reporting wall time and peak RSS.
# Usage: Scripts/bench_streaming.sh [VQ_BINARY] [OTHER_VQ_BINARY_TO_COMPARE] [ROWS]
# Needs python3 with numpy (to write the input) and GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
vq=${1:-.build/release/vq}
other=${2:-}
rows=${3:-4000000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" "$rows" <<'PY'
import sys, numpy as np
d, n = sys.argv[1], int(sys.argv[2])
r = np.random.default_rng(0)
x = np.lib.format.open_memmap(d + "/x.npy", mode="w+", dtype=np.float32, shape=(n, 64))
for i in range(0, n, 500_000):
    x[i:i + 500_000] = r.standard_normal((min(500_000, n - i), 64), dtype=np.float32)
x.flush()
np.save(d + "/small.npy", r.standard_normal((20000, 64)).astype(np.float32))
PY
"$vq" train --input "$tmp/small.npy" --codebook-size 1024 --steps 20 --batch-size 4096 --output "$tmp/m.safetensors" >/dev/null
measure() {  # label binary args...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$tmp/t" "$@" >/dev/null
  read -r secs kb <"$tmp/t"
  printf "%-28s %7.2f s  peak RSS %6d MB\n" "$label" "$secs" $((kb / 1024))
}
for bin in "$vq" ${other:+"$other"}; do
  name=$(basename "$(dirname "$(dirname "$(dirname "$bin")")")")/$(basename "$bin")
  measure "encode  ($name)" "$bin" encode --checkpoint "$tmp/m.safetensors" --input "$tmp/x.npy" --output "$tmp/i.npy"
  measure "decode  ($name)" "$bin" decode --checkpoint "$tmp/m.safetensors" --input "$tmp/i.npy" --output "$tmp/v.npy"
  measure "inspect ($name)" "$bin" inspect "$tmp/m.safetensors" --input "$tmp/x.npy"
done
