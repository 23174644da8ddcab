#!/usr/bin/env python3
"""The reference (vector-quantize-pytorch), FAISS and this library on the same workloads, in one run.

    PY=$(Scripts/setup_reference.sh) && swift build -c release && $PY Scripts/bench_reference.py [--threads 2,1]
    $PY Scripts/bench_reference.py --scaling            # time and memory vs N, K and D (ours)

Both sides time the workloads of `Scripts/bench_peer.py` (the reference side) and `vq bench --json` (ours),
with the same shapes and work; each workload runs in its own process so that peak memory is its own.
Prints one markdown table: workload, reference, FAISS, ours, speed-ups, peak memory.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAIRS = [  # ours, reference workload, FAISS workload
    ("a_vq_train_1024", "a_vq_train_1024", None),
    ("b_vq_train_8192", "b_vq_train_8192", None),
    ("c_vq_eval_1024", "c_vq_eval_1024", "faiss_flatl2_1024"),
    ("c_vq_eval_8192", "c_vq_eval_8192", "faiss_flatl2_8192"),
    ("d_rvq8_eval", "d_rvq8_eval", None),
    ("e_fsq_8555", "e_fsq_8555", None),
    ("f_kmeans_lib", "f_kmeans_lib", "faiss_kmeans"),
    ("g_vqvae_step", "g_vqvae_step", None),
]

TORCH_VQVAE = r'''
import json, sys, time, resource, torch
from torch import nn
from vector_quantize_pytorch import VectorQuantize
torch.set_num_threads(int(sys.argv[1])); torch.manual_seed(0)
enc = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32))
dec = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 64), nn.Sigmoid())
vq = VectorQuantize(dim=8, codebook_size=32, decay=0.9, commitment_weight=0.25, kmeans_init=True, threshold_ema_dead_code=1)
opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=2e-3)
x = torch.rand(64, 64)
def step():
    q, idx, l = vq(enc(x).reshape(64, 4, 8))
    loss = nn.functional.mse_loss(dec(q.reshape(64, 32)), x) + l
    opt.zero_grad(); loss.backward(); opt.step()
step(); ts = []; t0 = time.perf_counter()
while len(ts) < 7 or (time.perf_counter() - t0 < 3 and len(ts) < 200):
    s = time.perf_counter(); step(); ts.append(time.perf_counter() - s)
ts.sort()
print(json.dumps({"workload": "g_vqvae_step", "median_s": ts[len(ts)//2], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def run_json(cmd, env=None, timeout=1800):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return [json.loads(l) for l in r.stdout.splitlines() if l.strip().startswith("{")]


def reference(name, threads):
    if name == "g_vqvae_step":
        out = run_json([sys.executable, "-c", TORCH_VQVAE, str(threads)])
    else:
        out = run_json([sys.executable, str(HERE / "bench_peer.py"), "--threads", str(threads), "--only", name, "--max-wait-idle", "60"])
    return next((r for r in out if r.get("workload") == name and "median_s" in r), None)


def ours(vq, name, threads):
    out = run_json([vq, "bench", "--json", "--threads", str(threads), "--only", name])
    return out[0] if out else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vq", default=".build/release/vq")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--scaling", action="store_true")
    args = ap.parse_args()
    if args.scaling:
        print("| N | K | D | seconds | N·K·D / s (G) | peak MB |\n|---|---|---|---|---|---|")
        base = (8192, 1024, 64)
        for axis in range(3):
            for f in (1, 3, 10):
                nkd = list(base)
                nkd[axis] = base[axis] * f
                r = ours(args.vq, "scale:%d:%d:%d" % tuple(nkd), 2)
                print(f"| {nkd[0]} | {nkd[1]} | {nkd[2]} | {r['median_s']:.4f} | {nkd[0]*nkd[1]*nkd[2]/r['median_s']/1e9:.1f} | {r['peak_rss_mb']:.0f} |")
        return
    print("| workload | threads | reference s | FAISS s | ours s | × reference | × FAISS | our peak MB | reference peak MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for threads in [int(t) for t in args.threads.split(",")]:
        for mine, ref_name, faiss_name in PAIRS:
            r = reference(ref_name, threads)
            f = reference(faiss_name, threads) if faiss_name else None
            o = ours(args.vq, mine, threads)
            if not o or not r:
                print(f"| {mine} | {threads} | missing |")
                continue
            fx = f"{f['median_s'] / o['median_s']:.2f}" if f else ""
            print(f"| {mine} | {threads} | {r['median_s']:.4f} | {f['median_s'] if f else '':{'.4f' if f else ''}} | {o['median_s']:.4f} | "
                  f"{r['median_s'] / o['median_s']:.2f} | {fx} | {o['peak_rss_mb']:.0f} | {r.get('peak_rss_mb', 0):.0f} |", flush=True)


if __name__ == "__main__":
    main()
