#!/usr/bin/env bash
# Rebuilds reference cases from the project alone: runs the real vector-quantize-pytorch 1.32.0 (a local
# virtualenv made by Scripts/setup_reference.sh) on the cases of Scripts/fixtures/make_fixtures.py and
# make_fixtures_v2.py, and writes NAME.safetensors + NAME.json per case.
#   Scripts/make_fixtures.sh OUT_DIR [--only NAME,...]          # the first set (VectorQuantize, ResidualVQ, FSQ, LFQ, …)
#   Scripts/make_fixtures.sh --v2 OUT_DIR [--only NAME,...]     # the newer cases (LatentQuantize, FSP, gradients, …)
# Then: VQ_REFERENCE_FIXTURES=OUT_DIR swift test --filter ReferenceFixtureTests
# Scripts/fixtures/compare_fixture.py EXPECTED ACTUAL compares two cases; verify_fixtures.py re-derives the
# reference's arithmetic independently in NumPy.
set -euo pipefail
cd "$(dirname "$0")/.."
script=Scripts/fixtures/make_fixtures.py
if [ "${1:-}" = "--v2" ]; then script=Scripts/fixtures/make_fixtures_v2.py; shift; fi
out=${1:?usage: Scripts/make_fixtures.sh [--v2] OUT_DIR [--only NAME,...]}
shift
py=$(Scripts/setup_reference.sh | tail -1)
mkdir -p "$out"
"$py" "$script" --out "$out" "$@"
