#!/usr/bin/env python3
"""
The reference side of `vq bench`'s sweep workloads (p_fmap_layout, s_*): the quantizers and options the
reference cases test that ../shared/peer/bench_peer.py does not time, built from the same keyword arguments
and shapes as Sources/vq/Bench+Sweep.swift. Times both in one run and prints one line per workload:

    PY=$(../shared/peer/setup.sh) && $PY Benchmarks/sweep_peer.py .build/release/vq

Ratio = reference median / ours (2 threads). Exit status 1 if any workload is slower than the reference.
"""
import json
import subprocess
import sys
import time

import torch
import vector_quantize_pytorch as vqp


def seeded(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)


def train_forward(module, x):
    module.train()
    def run():
        with torch.no_grad():
            module(x)
    return run


def grad_step(module, x, loss):
    module.train()
    def run():
        leaf = x.clone().requires_grad_()
        loss(module(leaf)).backward()
    return run


def workloads():
    x = seeded([8, 1024, 256], 26)
    yield "p_fmap_layout", (lambda t: lambda: t.transpose(1, 2).contiguous().transpose(1, 2).contiguous())(seeded([8, 256, 4096], 24))
    yield "s_vq_fmap_train", train_forward(vqp.VectorQuantize(dim=256, codebook_size=1024, accept_image_fmap=True), seeded([8, 256, 32, 32], 25))
    yield "s_grvq_train", train_forward(vqp.GroupedResidualVQ(dim=256, groups=2, num_quantizers=4, codebook_size=1024), x)
    yield "s_rfsq_grad", grad_step(vqp.ResidualFSQ(dim=256, levels=[8, 5, 5, 5], num_quantizers=4), x, lambda o: o[0].sum())
    yield "s_rlfq_grad", grad_step(vqp.ResidualLFQ(dim=256, codebook_size=1024, num_quantizers=4), x, lambda o: o[0].sum() + o[2].sum())
    yield "s_lq_grad", grad_step(vqp.LatentQuantize(levels=[5, 5, 5, 5], dim=256), seeded([8, 256, 1024], 29),  # channel first
                                 lambda o: o[0].sum() + o[2].sum())
    yield "s_rsimvq_grad", grad_step(vqp.ResidualSimVQ(dim=256, num_quantizers=4, codebook_size=1024), x, lambda o: o[0].sum() + o[2].sum())


def measure(run, budget=3.0):
    run()
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 30):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    vq = sys.argv[1] if len(sys.argv) > 1 else ".build/release/vq"
    torch.set_num_threads(2)
    reference = {name: measure(run) for name, run in workloads()}
    out = subprocess.run([vq, "bench", "--json", "--threads", "2", "--only", ",".join(reference)],
                         check=True, capture_output=True, text=True).stdout
    ours = {r["workload"]: r for r in map(json.loads, out.splitlines())}
    slower = 0
    for name, ref in reference.items():
        o = ours[name]
        ratio = ref / o["median_s"]
        slower += ratio < 1
        print(f"{name}: {ratio:.2f}x (reference {ref * 1e3:.1f} ms, ours {o['median_s'] * 1e3:.1f} ms, peak {o['peak_rss_mb']:.0f} MB)"
              + ("  << slower" if ratio < 1 else ""))
    print(f"sweep: {len(reference) - slower}/{len(reference)} not slower than the reference")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
