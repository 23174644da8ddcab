#!/usr/bin/env python3
"""Codebook growth against FAISS's `frozen_centroids`, as an outside user runs it.

For each data set: stage 1 learns K1 codes on A (`vq train`); stage 2 grows them to K2 on new data B
(`vq train --input B --init stage1 --expand-to K2`), against FAISS's `Clustering` with `frozen_centroids` started
from the same stage-1 codes (the same operation: the old codes take part in every assignment and never move).
Reported: held-out MSE on B (ours / FAISS) per set and growth seed, whether the old codes stayed bit-identical,
and whether any new code ended empty or zero.

    $PY Scripts/growth_vs_faiss.py .build/release/vq [--seeds 8] [--json out.json]

$PY is the reference venv (`../shared/peer/setup.sh`), which has FAISS.
"""
import argparse, json, os, struct, subprocess, sys, tempfile
import numpy as np
import faiss


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dtype = {"F32": np.float32, "U8": np.uint8}[v["dtype"]]
        out[k] = np.frombuffer(data[a:b], dtype=dtype).reshape(v["shape"])
    return out


def mixture(rng, centres, n, spread, weights=None):
    k, d = centres.shape
    w = np.ones(k) / k if weights is None else weights / weights.sum()
    which = rng.choice(k, size=n, p=w)
    scale = spread if np.ndim(spread) == 0 else spread[which][:, None]
    return (centres[which] + rng.standard_normal((n, d)) * scale).astype(np.float32)


def datasets(seed=0):
    """Ten sets: (name, d, K1, K2, A, B, B_test)."""
    rng = np.random.default_rng(seed)
    out = []

    def make(name, d, k1, k2, a_centres, b_centres, spread=1.0, n=16384, weights_b=None):
        a = mixture(rng, a_centres, n, spread)
        b_all = mixture(rng, b_centres, n + 4096, spread, weights_b)
        out.append((name, d, k1, k2, a, b_all[:n], b_all[n:]))

    # new clusters far from the old ones
    c = rng.standard_normal((24, 16)) * 6
    make("far d16 32→64", 16, 32, 64, c, rng.standard_normal((24, 16)) * 6 + 25)
    # mixed: half of B from A's clusters, half new
    c = rng.standard_normal((48, 32)) * 5
    make("mixed d32 64→128", 32, 64, 128, c, np.concatenate([c[:24], rng.standard_normal((48, 32)) * 5]))
    # drifted: A's clusters moved a little
    c = rng.standard_normal((64, 32)) * 5
    make("drifted d32 64→128", 32, 64, 128, c, c + rng.standard_normal((64, 32)) * 1.5)
    # many clusters, larger codebooks
    c = rng.standard_normal((192, 64)) * 4
    make("many d64 256→512", 64, 256, 512, c, np.concatenate([c[:96], rng.standard_normal((192, 64)) * 4]), n=32768)
    # unbalanced new clusters
    c = rng.standard_normal((32, 24)) * 5
    make("zipf d24 32→64", 24, 32, 64, c, rng.standard_normal((48, 24)) * 5, weights_b=1 / np.arange(1, 49) ** 1.1)
    # anisotropic spread
    c = rng.standard_normal((40, 16)) * 5
    make("wide d16 64→128", 16, 64, 128, c, np.concatenate([c, rng.standard_normal((40, 16)) * 5 + 8]), spread=1.8)
    # far and high-dimensional
    c = rng.standard_normal((96, 64)) * 4
    make("far d64 128→256", 64, 128, 256, c, rng.standard_normal((96, 64)) * 4 + 12)
    # overlapping clusters (centres about as far apart as the spread): hardly clustered at all
    c = rng.standard_normal((64, 32)) * 0.6
    make("overlapping d32 64→128", 32, 64, 128, c, c + 0.5 + rng.standard_normal((64, 32)) * 0.6)
    # no clusters: a uniform cube, then a shifted one
    a = rng.uniform(-1, 1, (16384, 16)).astype(np.float32)
    b_all = (rng.uniform(-1, 1, (16384 + 4096, 16)) + 0.5).astype(np.float32)
    out.append(("uniform d16 64→128", 16, 64, 128, a, b_all[:16384], b_all[16384:]))
    # real data: the digits 0–4, then 5–9 (../shared/data/digits, CC BY 4.0, Alpaydin & Kaynak 1998)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "digits", "digits.safetensors")
    if os.path.exists(path):
        t = read_safetensors(path)
        x, y = t["images"].astype(np.float32), t["labels"]
        old, new = x[y < 5], x[y >= 5]
        new = new[rng.permutation(len(new))]
        cut = len(new) * 3 // 4
        out.append(("digits 0-4→5-9 d64 32→64", 64, 32, 64, old, new[:cut], new[cut:]))
    return out


def mse(codes, x):
    index = faiss.IndexFlatL2(codes.shape[1])
    index.add(np.ascontiguousarray(codes, dtype=np.float32))
    dist, _ = index.search(np.ascontiguousarray(x), 1)
    return float(dist.mean() / x.shape[1])


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vq")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, help="training steps after growth (instead of --epochs)")
    ap.add_argument("--only", help="only the sets whose name contains this")
    ap.add_argument("--train-args", default="", help="more arguments for stage 2's vq train, e.g. '--dead-code-threshold 0.5'")
    ap.add_argument("--json")
    args = ap.parse_args()
    faiss.omp_set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, d, k1, k2, a, b, test in datasets():
            if args.only and args.only not in name:
                continue
            pa, pb = os.path.join(tmp, "a.npy"), os.path.join(tmp, "b.npy")
            np.save(pa, a)
            np.save(pb, b)
            s1 = os.path.join(tmp, "s1.safetensors")
            run([args.vq, "train", "--input", pa, "--codebook-size", str(k1), "--kmeans-init", "--epochs", "5",
                 "--batch-size", "1024", "--output", s1, "--seed", "1"])
            old = read_safetensors(s1)["_codebook.embed"].reshape(k1, d)
            ratios = []
            for seed in range(args.seeds):
                s2 = os.path.join(tmp, f"s2-{seed}.safetensors")
                length = ["--steps", str(args.steps)] if args.steps else ["--epochs", str(args.epochs)]
                run([args.vq, "train", "--input", pb, "--init", s1, "--expand-to", str(k2), *length,
                     "--batch-size", "1024", "--output", s2, "--seed", str(100 + seed), *args.train_args.split()])
                st = read_safetensors(s2)
                ours = st["_codebook.embed"].reshape(k2, d)
                kept = bool(np.array_equal(ours[:k1].view(np.uint32), old.view(np.uint32)))
                counts = np.bincount(faiss_assign(ours, b), minlength=k2)
                empty_new = int((counts[k1:] == 0).sum())
                zero_new = int((np.abs(ours[k1:]).max(axis=1) == 0).sum())
                cl = faiss.Clustering(d, k2)
                cl.frozen_centroids = True
                cl.niter = 25
                cl.seed = 100 + seed
                faiss.copy_array_to_vector(old.ravel(), cl.centroids)
                index = faiss.IndexFlatL2(d)
                cl.train(b, index)
                theirs = faiss.vector_to_array(cl.centroids).reshape(k2, d)
                m_ours, m_faiss = mse(ours, test), mse(theirs, test)
                ratios.append(m_ours / m_faiss)
                rows.append(dict(set=name, seed=seed, ours=m_ours, faiss=m_faiss, ratio=m_ours / m_faiss,
                                 old_kept=kept, empty_new=empty_new, zero_new=zero_new))
                print(f"{name:22s} seed {seed}: ours {m_ours:.5f} faiss {m_faiss:.5f} ratio {m_ours / m_faiss:.4f}"
                      f" old kept {kept} empty new {empty_new} zero new {zero_new}", flush=True)
            print(f"{name:22s} ratio median {np.median(ratios):.4f} max {max(ratios):.4f}", flush=True)
    r = np.array([x["ratio"] for x in rows])
    per_set = {}
    for x in rows:
        per_set.setdefault(x["set"], []).append(x["ratio"])
    summary = dict(median=float(np.median(r)), max=float(r.max()), min=float(r.min()),
                   set_medians={k: float(np.median(v)) for k, v in per_set.items()},
                   all_old_kept=all(x["old_kept"] for x in rows),
                   empty_new=sum(x["empty_new"] for x in rows), zero_new=sum(x["zero_new"] for x in rows))
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, summary=summary), f, indent=1)


def faiss_assign(codes, x):
    index = faiss.IndexFlatL2(codes.shape[1])
    index.add(np.ascontiguousarray(codes))
    return index.search(np.ascontiguousarray(x), 1)[1].ravel()


if __name__ == "__main__":
    main()
