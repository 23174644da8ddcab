#!/usr/bin/env bash
# The C kernels on arm64, on an x86-64 machine: cross-built with clang for aarch64-linux-gnu (Debian's arm64 libc),
# run under qemu-user. The harness checks the GEMM micro-kernel, packing and the arg-min against plain C, and prints a
# hash of every kernel whose contract is "the same values at every level"; those must equal this machine's at every
# level it has (portable C, AVX2, AVX-512, BF16) — the bits a model computes do not depend on the CPU.
#   Scripts/arm64/check.sh        (installs clang's arm64 sysroot and qemu-user-static with apt-get when missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
[ -e /usr/aarch64-linux-gnu/lib/libc.a ] || need+=(libc6-dev-arm64-cross)
ls /usr/lib/gcc-cross/aarch64-linux-gnu/*/libgcc.a >/dev/null 2>&1 || need+=(libgcc-12-dev-arm64-cross)
command -v aarch64-linux-gnu-ld >/dev/null || need+=(binutils-aarch64-linux-gnu)
if [ ${#need[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
    || { echo "arm64 check: could not install ${need[*]}"; exit 1; }
fi
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
sources=(Scripts/arm64/kernel_harness.c Scripts/arm64/screen_check.c Sources/CVQKernels/*.c)
clang -O2 -std=c11 -ISources/CVQKernels/include -ISources/CVQKernels "${sources[@]}" -lm -o "$out/native"
clang --target=aarch64-linux-gnu -O2 -std=c11 -static -ISources/CVQKernels/include -ISources/CVQKernels "${sources[@]}" -lm -o "$out/arm64"
timeout 120 qemu-aarch64-static "$out/arm64" > "$out/arm64.txt" || { cat "$out/arm64.txt"; echo "arm64 check: the harness failed under qemu"; exit 1; }
hashes() { grep -v -e '^level' -e 'max_error' -e '^note' "$1"; }
status=0
for level in 0 1 2 3; do
  VQ_KERNEL_LEVEL=$level "$out/native" > "$out/x86-$level.txt" || { cat "$out/x86-$level.txt"; status=1; continue; }
  ran=$(head -1 "$out/x86-$level.txt")
  [ "$ran" = "level $level" ] || continue   # the machine lacks this level
  if ! diff <(hashes "$out/arm64.txt") <(hashes "$out/x86-$level.txt") >/dev/null; then
    echo "arm64 check: arm64 and x86 level $level differ:"; diff <(hashes "$out/arm64.txt") <(hashes "$out/x86-$level.txt") || true
    status=1
  fi
done
grep -e max_error -e '^note' "$out/arm64.txt" | sed 's/^/arm64 /'
[ $status -eq 0 ] && echo "arm64 check: every kernel checked, and arm64 computes the same bits as every x86 level here"
exit $status
