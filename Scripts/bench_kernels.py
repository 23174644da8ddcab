#!/usr/bin/env python3
"""Pairs the Swift kernels (`vq bench --json`) with numpy/OpenBLAS measured in the same run.

Usage (from the package root, after `swift build -c release`):
    python3 Scripts/bench_kernels.py [--vq .build/release/vq] [--threads 1,2] [--rounds 3]

For each thread count and round it runs the numpy workload and then the Swift one, and prints the
best-of-rounds median for each side, so that both sides see the same machine load. numpy is
taken from the running interpreter (`python3 -m pip install numpy` in a venv if it is missing).
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for the numpy side (they slow a current OpenBLAS).
"""
import argparse, json, os, subprocess, sys

NUMPY_CODE = r'''
import json, sys, time
import numpy as np
name = sys.argv[1]
rng = np.random.default_rng(0)
def med(fn, budget=3.0):
    fn(); ts = []; t0 = time.perf_counter()
    while len(ts) < 3 or (len(ts) < 50 and time.perf_counter() - t0 < budget):
        s = time.perf_counter(); fn(); ts.append(time.perf_counter() - s)
    ts.sort(); return ts[len(ts) // 2]
if name.startswith("gemm"):
    m, k, n = {"gemm_1024": (1024, 1024, 1024), "gemm_8192x64x1024": (8192, 64, 1024)}[name]
    a = rng.standard_normal((m, k), dtype=np.float32); b = rng.standard_normal((k, n), dtype=np.float32)
    t = med(lambda: a @ b); print(json.dumps({"median_s": t, "gflops": 2 * m * n * k / t / 1e9, "vectors_per_s": m / t}))
else:
    n, d, k = {"nearest_8192x64_1024": (8192, 64, 1024), "nearest_16384x256_8192": (16384, 256, 8192)}[name]
    x = rng.standard_normal((n, d), dtype=np.float32); c = rng.standard_normal((k, d), dtype=np.float32)
    cc = (c * c).sum(1)
    def search():  # GEMM then argmin of ||c||^2 - 2 x.c (the ||x||^2 term does not change the argmin)
        return np.argmin(cc[None, :] - 2 * (x @ c.T), axis=1)
    t = med(search); print(json.dumps({"median_s": t, "vectors_per_s": n / t}))
'''

WORKLOADS = ["gemm_1024", "gemm_8192x64x1024", "nearest_8192x64_1024", "nearest_16384x256_8192"]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vq", default=".build/release/vq")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    args = ap.parse_args()
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for w in args.only.split(","):
            best_np = best_sw = None
            for _ in range(args.rounds):
                env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
                env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
                npr = json.loads(subprocess.run([sys.executable, "-c", NUMPY_CODE, w], env=env, capture_output=True, text=True, check=True).stdout)
                sw = json.loads(subprocess.run([args.vq, "bench", "--json", "--threads", str(threads), "--only", w], capture_output=True, text=True, check=True).stdout.splitlines()[0])
                best_np = npr if best_np is None or npr["median_s"] < best_np["median_s"] else best_np
                best_sw = sw if best_sw is None or sw["median_s"] < best_sw["median_s"] else best_sw
            rows.append((w, threads, best_np, best_sw))
    print(f"| workload | threads | numpy/OpenBLAS | Swift | Swift / numpy |")
    print(f"|---|---|---|---|---|")
    for w, t, a, b in rows:
        unit = (lambda r: f"{r['gflops']:.1f} GFLOP/s") if w.startswith("gemm") else (lambda r: f"{r['vectors_per_s']:.3g} vectors/s")
        print(f"| {w} | {t} | {unit(a)} | {unit(b)} | {a['median_s'] / b['median_s']:.2f} |")

if __name__ == "__main__":
    main()
