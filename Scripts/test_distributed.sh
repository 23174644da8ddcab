#!/usr/bin/env bash
# Distributed training test over Open MPI on loopback (run by .ci/run when mpirun is installed):
# two ranks train on two shards of each batch; (a) both ranks must end with bit-identical codebooks and
# (b) they must match one process trained on the concatenated batches within 1e-6.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --traits MPI --scratch-path .build-mpi >/dev/null
vq=.build-mpi/debug/vq
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/x.npy" <<'PY'
import random, struct, sys
random.seed(3)
n, d, k = 4096, 16, 64
centres = [[random.gauss(0, 3) for _ in range(d)] for _ in range(k)]
rows = [[c + random.gauss(0, 1) for c in centres[i % k]] for i in range(n)]
hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (n, d)
hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
with open(sys.argv[1], "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode())
    f.write(b"".join(struct.pack("<%df" % d, *r) for r in rows))
PY
# compare.py SINGLE RANK0 RANK1 …: the ranks' checkpoints are bit-identical and within 1e-6 of one process's.
cat >"$tmp/compare.py" <<'PY'
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    return {k: struct.unpack("<%df" % ((v["data_offsets"][1] - v["data_offsets"][0]) // 4), b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
            for k, v in h.items() if k != "__metadata__"}
single, ranks = load(sys.argv[1]), [load(p) for p in sys.argv[2:]]
assert all(r == ranks[0] for r in ranks), "ranks differ"
worst = max(abs(a - b) for k in single if k.endswith("embed") for a, b in zip(ranks[0][k], single[k]))
assert worst <= 1e-6, f"{len(ranks)} ranks vs single process: max |Δ| {worst}"
print(f"{len(ranks)} ranks bit-identical; max |Δ| vs single process {worst:.2e}")
PY
passed=0; failed=0
for flags in "--codebook-size 32 --kmeans-init --dead-code-threshold 2" "--codebook-size 16 --heads 2 --decay 0.9" "--codebook-size 16 --residual 2"; do
  common="--input $tmp/x.npy $flags --batch-size 512 --steps 12 --seed 5"
  mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl self,vader,tcp --mca btl_tcp_if_include lo \
    $vq train --distributed --rank-outputs $common --output "$tmp/dist.safetensors" >/dev/null
  $vq train $common --output "$tmp/single.safetensors" >/dev/null
  if python3 "$tmp/compare.py" "$tmp/single.safetensors" "$tmp/dist.rank0.safetensors" "$tmp/dist.rank1.safetensors"
  then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $flags"; fi
done
# Four ranks on the same data (the binomial-tree all-reduce over more than one level): bit-identical
# ranks, and the single-process codebook within 1e-6.
common="--input $tmp/x.npy --codebook-size 32 --kmeans-init --dead-code-threshold 2 --batch-size 512 --steps 12 --seed 5"
mpirun --allow-run-as-root --oversubscribe -np 4 --mca btl self,vader,tcp --mca btl_tcp_if_include lo \
  $vq train --distributed --rank-outputs $common --output "$tmp/d4.safetensors" >/dev/null
$vq train $common --output "$tmp/single.safetensors" >/dev/null
if python3 "$tmp/compare.py" "$tmp/single.safetensors" "$tmp"/d4.rank{0,1,2,3}.safetensors
then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: 4 ranks"; fi

# --rank-outputs writes OUTPUT.rankN.safetensors and its sidecar OUTPUT.rankN.json: a user's file at one of them
# is refused by every rank before anything is written (the ranks are known only at run time).
echo "my notes" >"$tmp/n.rank1.json"
common="--input $tmp/x.npy --codebook-size 16 --batch-size 512 --steps 2 --seed 5"
if ! mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl self,vader,tcp --mca btl_tcp_if_include lo \
     $vq train --distributed --rank-outputs $common --output "$tmp/n.safetensors" >"$tmp/n.log" 2>&1 \
   && grep -q "rank 1" "$tmp/n.log" && [ "$(cat "$tmp/n.rank1.json")" = "my notes" ] && ! ls "$tmp"/n.rank0.* >/dev/null 2>&1; then
  passed=$((passed + 1)); echo "rank outputs: a user's file at rank 1's sidecar refused by every rank, nothing written"
else
  failed=$((failed + 1)); echo "FAILED: rank outputs over a user's file"; cat "$tmp/n.log"
fi

# Resumption under mpirun: every rank of a job is killed (SIGKILL) mid-run; the job resumed from rank 0's
# state file ends with a checkpoint bit-identical to an uninterrupted job.
mpi="mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl self,vader,tcp --mca btl_tcp_if_include lo"
common="--input $tmp/x.npy --codebook-size 32 --kmeans-init --dead-code-threshold 2 --batch-size 512 --steps 300 --seed 5"
$mpi $vq train --distributed $common --output "$tmp/u.safetensors" >/dev/null
$mpi $vq train --distributed $common --output "$tmp/k.safetensors" --checkpoint-every 1 >/dev/null 2>&1 &
job=$!
for _ in $(seq 1 100); do [ -f "$tmp/k.state.safetensors" ] && break; sleep 0.1; done
sleep 0.$((RANDOM % 9 + 1))
pkill -KILL -f -- "--output $tmp/k.safetensors" || true
wait $job 2>/dev/null || true
if [ ! -f "$tmp/k.safetensors" ] && [ -f "$tmp/k.state.safetensors" ] \
   && $mpi $vq train --distributed $common --output "$tmp/k.safetensors" --checkpoint-every 1 --resume "$tmp/k.state.safetensors" >/dev/null \
   && cmp -s "$tmp/u.safetensors" "$tmp/k.safetensors"; then
  passed=$((passed + 1)); echo "distributed resume: killed and resumed, checkpoint bit-identical to the uninterrupted job"
else
  failed=$((failed + 1)); echo "FAILED: distributed resume"
fi

# Failure drills: a rank that dies, and a rank that hangs, must end the job with an error quickly, and the
# checkpoint already on disk must stay valid.
mpi="mpirun --allow-run-as-root --oversubscribe -np 2 --mca btl self,vader,tcp --mca btl_tcp_if_include lo"
$vq train --input "$tmp/x.npy" --codebook-size 16 --steps 3 --output "$tmp/keep.safetensors" >/dev/null
cp "$tmp/keep.safetensors" "$tmp/before.safetensors"
for drill in exit hang; do
  start=$(date +%s)
  if timeout 60 $mpi $vq train --distributed --collective-timeout 5 --input "$tmp/x.npy" --codebook-size 16 --batch-size 512 \
       --steps 20 --output "$tmp/keep.safetensors" --failure-drill "1:4:$drill" >"$tmp/drill.log" 2>&1; then
    failed=$((failed + 1)); echo "FAILED: the $drill drill exited 0"
  elif [ $(( $(date +%s) - start )) -ge 55 ]; then
    failed=$((failed + 1)); echo "FAILED: the $drill drill did not end within the timeout"
  elif ! cmp -s "$tmp/keep.safetensors" "$tmp/before.safetensors" || ! $vq inspect "$tmp/keep.safetensors" >/dev/null; then
    failed=$((failed + 1)); echo "FAILED: the $drill drill damaged the checkpoint on disk"
  else
    passed=$((passed + 1)); echo "$drill drill: the job ended with an error in $(( $(date +%s) - start )) s, checkpoint intact"
  fi
done
echo "distributed: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
