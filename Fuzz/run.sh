#!/usr/bin/env bash
# Builds the libFuzzer target for the safetensors / .npy / .fvecs readers and runs it.
#   Fuzz/run.sh [RUNS]            # default 1000000 inputs; extra arguments go to libFuzzer
# Needs only the Swift toolchain (swiftc -sanitize=fuzzer,address and its clang).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
shift || true
out=.build-fuzz
mkdir -p "$out/corpus" "$out/module"
cat > "$out/module/module.modulemap" <<MAP
module CVQKernels { header "$PWD/Sources/CVQKernels/include/vq_kernels.h" export * }
MAP
clang -O1 -fPIC -c Sources/CVQKernels/kernels.c -I Sources/CVQKernels/include -o "$out/kernels.o"
swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name VQTensor \
  -Xcc -fmodule-map-file="$out/module/module.modulemap" -I Sources/CVQKernels/include \
  $(find Sources/VQTensor -name '*.swift') Fuzz/FuzzReaders.swift "$out/kernels.o" -o "$out/fuzz-readers"
# Seed corpus: valid files of each kind (made by the library itself through the test fixtures).
for f in Tests/VectorQuantizeTests/Fixtures/fsq_8555.safetensors; do printf '\x00' | cat - "$f" > "$out/corpus/seed-st"; done
python3 - "$out/corpus" <<'PY'
import struct, sys
d = sys.argv[1]
hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
open(d + "/seed-npy", "wb").write(b"\x01" + b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + bytes(24))
open(d + "/seed-fvecs", "wb").write(b"\x02" + (struct.pack("<i", 2) + bytes(8)) * 3)
PY
"$out/fuzz-readers" -artifact_prefix="$out/" -runs="$runs" -max_len=4096 -rss_limit_mb=2048 -timeout=10 "$@" "$out/corpus"
