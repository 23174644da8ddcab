#!/usr/bin/env bash
# Checks the README's demo claims (the lines between "<!-- claims" and "<!-- end of claims -->") against what
# `vq demo` prints at every kernel level this machine has: each claim line must be printed verbatim, at each level.
#   Scripts/check_demo_claims.sh [path/to/vq]      (default: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
vq=${1:-$(swift build -c release --show-bin-path)/vq}
claims=$(awk '/<!-- claims/{on=1; next} /<!-- end of claims -->/{on=0} on && /^✓/' README.md)
[ -n "$claims" ] || { echo "check_demo_claims: no claims found in README.md"; exit 1; }
levels="0 1 2 3"
status=0
for level in $levels; do
  out=$(mktemp -d)
  log=$(VQ_KERNEL_LEVEL=$level "$vq" demo --output "$out")
  ran=$(grep -m1 '^kernels:' <<<"$log")
  # VQ_KERNEL_LEVEL only lowers the level: a level the machine lacks runs the highest it has, already checked.
  if ! grep -q "(level $level)" <<<"$ran"; then rm -rf "$out"; continue; fi
  while IFS= read -r claim; do
    if ! grep -qxF "$claim" <<<"$log"; then
      echo "check_demo_claims: level $level does not print: $claim"
      grep -E '^[✓✗]' <<<"$log" | sed 's/^/  printed: /'
      status=1
    fi
  done <<<"$claims"
  echo "check_demo_claims: $ran — every README claim holds"
  rm -rf "$out"
done
exit $status
