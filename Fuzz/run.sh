#!/usr/bin/env bash
# Builds the libFuzzer binary of the `vq-fuzz` target (Fuzz/CLI/FuzzTarget.swift: the file readers, the
# streamed reader, index files through validate/decode, configuration JSON through load) and runs it.
#   Fuzz/run.sh [RUNS]            # default 1000000 inputs; extra arguments go to libFuzzer
# Needs only the Swift toolchain (-sanitize=fuzzer,address). SwiftPM compiles the objects; the binary is
# linked here without SwiftPM's `main=vq_fuzz_main` alias, so libFuzzer's own main drives the target.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
shift || true
scratch=.build-fuzz
swift build -c release --product vq-fuzz --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
  >/dev/null 2>&1 || true   # the objects are what we need; SwiftPM's own link of this product fails by design
bin=$(swift build -c release --scratch-path "$scratch" --show-bin-path)
swiftc -L "$bin" -o "$bin/vq-fuzz-libfuzzer" -module-name vq_fuzz -emit-executable -Xlinker --gc-sections \
  @"$bin/vq-fuzz.product/Objects.LinkFileList" -sanitize=fuzzer,address 2>&1 | grep -v "Cannot export local symbol" || true
corpus="$scratch/corpus"
mkdir -p "$corpus"
# Seed corpus: one valid input per path (first byte = path selector, see fuzzOne).
python3 - "$corpus" Tests/VectorQuantizeTests/Fixtures/fsq_8555.safetensors <<'PY'
import struct, sys
d, st = sys.argv[1], open(sys.argv[2], "rb").read()
def npy(descr, shape, body):
    hdr = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode() + body
seeds = {
    "safetensors": bytes([0]) + st,
    "npy": bytes([1]) + npy("<f4", "(2, 3)", bytes(24)),
    "fvecs": bytes([2]) + (struct.pack("<i", 2) + bytes(8)) * 3,
    "stream-npy": bytes([3]) + npy("<f4", "(4, 4)", bytes(64)),
    "stream-st": bytes([9]) + st,
    "indices-vq": bytes([4]) + npy("<i8", "(3,)", struct.pack("<3q", 0, 7, 3)),
    "indices-rvq": bytes([10]) + npy("<i8", "(2, 2)", struct.pack("<4q", 0, 7, -1, 3)),
    "indices-grvq": bytes([16]) + npy("<i8", "(2, 1, 2)", struct.pack("<4q", 0, 3, 1, 2)),
    "config-vq": bytes([5]) + b'{"module": "VectorQuantize", "kwargs": {"dim": 4, "codebook_size": 8}}',
    "config-fsq": bytes([11]) + b'{"module": "FSQ", "kwargs": {"levels": [8, 5], "dim": 4}}',
    "config-simvq-mlp": bytes([17]) + b'{"module": "SimVQ", "kwargs": {"dim": 4, "codebook_size": 8, "codebook_transform": "nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))"}}',
    "config-vq-inplace": bytes([23]) + b'{"module": "VectorQuantize", "kwargs": {"dim": 4, "codebook_size": 8, "learnable_codebook": true, "ema_update": false, "in_place_codebook_optimizer": "partial(torch.optim.Adam, lr=0.01)"}}',
    "config-rvq-kw": bytes([29]) + b'{"module": "ResidualVQ", "kwargs": {"dim": 4, "num_quantizers": 2.0, "codebook_size": 8, "quantize_dropout": true}}',
}
for name, data in seeds.items():
    open(d + "/seed-" + name, "wb").write(data)
PY
# Leaks are not failures here (Foundation's Data(contentsOf:) is reported on some error paths).
ASAN_OPTIONS=detect_leaks=0 "$bin/vq-fuzz-libfuzzer" -artifact_prefix="$scratch/" -runs="$runs" -max_len=4096 \
  -rss_limit_mb=4096 -timeout=10 "$@" "$corpus"
