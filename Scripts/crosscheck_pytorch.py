#!/usr/bin/env python3
"""Checkpoints across the two implementations, both directions.

    PY=$(Scripts/setup_reference.sh) && swift build -c release && $PY Scripts/crosscheck_pytorch.py

For each module configuration: build it in PyTorch (seeded), train it a few steps so that its state is
not the initial one, save `state_dict()` with `safetensors.torch.save_file` plus the JSON config, then
1. PyTorch → Swift: `vq encode` / `vq decode` must give PyTorch's indices exactly and its decoded vectors
   within 1e-5;
2. Swift → PyTorch: `vq freeze` re-saves the checkpoint from Swift (with our extra `frozen_codes` key);
   PyTorch loads it with `load_state_dict(strict=False)` — the only unexpected keys may be ours, nothing
   may be missing — and gives the same indices.
Prints one line per case and `N passed, M failed`; exits 1 on any failure.
"""
import argparse, json, os, subprocess, sys, tempfile
import numpy as np
import torch
from safetensors.torch import save_file, load_file
import vector_quantize_pytorch as vqp

CASES = [
    ("vq_euclid", "VectorQuantize", dict(dim=16, codebook_size=64)),
    ("vq_cosine", "VectorQuantize", dict(dim=16, codebook_size=64, use_cosine_sim=True)),
    ("vq_heads_separate", "VectorQuantize", dict(dim=16, codebook_size=32, heads=2, separate_codebook_per_head=True, codebook_dim=8)),
    ("vq_heads_shared", "VectorQuantize", dict(dim=16, codebook_size=32, heads=2, codebook_dim=8)),
    ("vq_projection", "VectorQuantize", dict(dim=16, codebook_size=64, codebook_dim=8)),
    ("vq_projection_layernorm", "VectorQuantize", dict(dim=16, codebook_size=64, codebook_dim=8, layernorm_after_project_in=True)),
    ("rvq", "ResidualVQ", dict(dim=16, num_quantizers=4, codebook_size=32)),
    ("rvq_projection", "ResidualVQ", dict(dim=16, num_quantizers=3, codebook_size=32, codebook_dim=8)),
    ("grvq", "GroupedResidualVQ", dict(dim=16, groups=2, num_quantizers=2, codebook_size=32)),
    ("fsq", "FSQ", dict(levels=[8, 5, 5, 5])),
    ("fsq_projection", "FSQ", dict(levels=[8, 5, 5, 5], dim=16)),
    ("rfsq", "ResidualFSQ", dict(levels=[8, 5, 5], num_quantizers=3, dim=16)),
    ("lfq", "LFQ", dict(dim=8)),
    ("lfq_projection", "LFQ", dict(dim=16, codebook_size=1024)),
    ("rlfq", "ResidualLFQ", dict(dim=16, codebook_size=256, num_quantizers=2)),
]


def forward_indices(name, module, x):
    """indices for x [n, d] in the layout `vq encode` writes."""
    with torch.no_grad():
        if name == "VectorQuantize":
            return module(x)[1]
        out = module(x[None])
        idx = out[1]
        if name.startswith("Grouped"):
            return idx[:, 0]
        return idx[0]


def decode(name, module, idx):
    with torch.no_grad():
        if name == "VectorQuantize":
            return module.get_output_from_indices(idx)
        if name in ("FSQ", "LFQ"):
            return module.indices_to_codes(idx[None])[0]
        if name.startswith("Grouped"):
            return module.get_output_from_indices(idx[:, None])[0]
        return module.get_output_from_indices(idx[None])[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vq", default=".build/release/vq")
    args = ap.parse_args()
    torch.manual_seed(0)
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case, name, kwargs in CASES:
            cls = getattr(vqp, name)
            module = cls(**kwargs)
            dim = kwargs.get("dim") or len(kwargs.get("levels", [])) or kwargs["dim"]
            g = torch.Generator().manual_seed(1)
            module.train()
            for _ in range(3):  # a few training steps so that the state is not the initial one
                xb = torch.randn(4, 32, dim, generator=g)
                module(xb)
            module.eval()
            x = torch.randn(200, dim, generator=g)
            idx = forward_indices(name, module, x)
            ref_out = decode(name, module, idx)
            ckpt = os.path.join(tmp, case + ".safetensors")
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, ckpt)
            with open(os.path.join(tmp, case + ".json"), "w") as f:
                json.dump({"module": name, "kwargs": kwargs}, f)
            xin, iout, vout = (os.path.join(tmp, case + s) for s in ("_x.npy", "_idx.npy", "_vec.npy"))
            np.save(xin, x.numpy())
            problems = []
            r = subprocess.run([args.vq, "encode", "--checkpoint", ckpt, "--input", xin, "--output", iout], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append("encode: " + (r.stderr or r.stdout).strip())
            else:
                ours = np.load(iout)
                if ours.shape != tuple(idx.shape) or not np.array_equal(ours, idx.numpy()):
                    problems.append(f"indices differ: {int((ours != idx.numpy()).sum()) if ours.shape == tuple(idx.shape) else ours.shape}")
                r = subprocess.run([args.vq, "decode", "--checkpoint", ckpt, "--input", iout, "--output", vout], capture_output=True, text=True)
                if r.returncode != 0:
                    problems.append("decode: " + (r.stderr or r.stdout).strip())
                else:
                    dec = np.load(vout)
                    if dec.shape != tuple(ref_out.shape) or np.abs(dec - ref_out.numpy()).max() > 1e-5:
                        problems.append(f"decoded vectors differ (shape {dec.shape} vs {tuple(ref_out.shape)})")
            # Swift -> PyTorch
            if name in ("VectorQuantize", "ResidualVQ", "GroupedResidualVQ"):
                swift_ckpt = os.path.join(tmp, case + "_swift.safetensors")
                r = subprocess.run([args.vq, "freeze", ckpt, "--codes", "0", "--output", swift_ckpt], capture_output=True, text=True)
                if r.returncode != 0:
                    problems.append("freeze: " + (r.stderr or r.stdout).strip())
                else:
                    back = cls(**kwargs)
                    state = load_file(swift_ckpt)
                    res = back.load_state_dict(state, strict=False)
                    extra = [k for k in res.unexpected_keys if not k.endswith("frozen_codes")]
                    if res.missing_keys or extra:
                        problems.append(f"torch load: missing {res.missing_keys}, unexpected {extra}")
                    back.eval()
                    if not torch.equal(forward_indices(name, back, x), idx):
                        problems.append("torch indices from the Swift checkpoint differ")
            if problems:
                failed += 1
                print(f"{case}: FAILED " + "; ".join(problems))
            else:
                passed += 1
                print(f"{case}: ok (indices {tuple(idx.shape)} equal both ways)")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
