#!/usr/bin/env python3
"""Checkpoints across the two implementations, both directions.

    PY=$(Scripts/setup_reference.sh) && swift build -c release && $PY Scripts/crosscheck_pytorch.py

For each module configuration: build it in PyTorch (seeded), train it a few steps so that its state is
not the initial one, save `state_dict()` with `safetensors.torch.save_file` plus the JSON config, then
1. PyTorch → Swift: `vq encode` / `vq decode` must give PyTorch's indices exactly and its decoded vectors
   within 1e-5 (relative to their size);
2. Swift → PyTorch: `vq train --init` continues the checkpoint a few steps in Swift (`vq freeze` re-saves it for
   HierarchicalVQ, which `vq train` does not train; kinds with nothing the tool learns are one-way); PyTorch
   loads the result with `load_state_dict(strict=False)` — the only unexpected keys may be ours (the freeze
   state), nothing may be missing — and `vq encode` gives PyTorch's indices of it;
3. `vq export` of that checkpoint: its sidecar's keywords build the reference's module, whose `load_state_dict`
   takes the file with `strict=True`, and `vq encode` of the export gives that module's indices.
Every quantizer of the registry has a case; `--random N [--seed S]` adds N configurations with one to five of
the reference's keywords drawn from POOLS (each kind in turn). The deliberate differences of the README are
honoured: an affine codebook's statistics do not move in evaluation, and it decodes to the codes its forward used.
Prints one line per case and `N passed, M failed`; exits 1 on any failure.
"""
import argparse, contextlib, functools, io, json, os, random, subprocess, sys, tempfile
import numpy as np
import torch
from safetensors.torch import save_file, save_model, load_file
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
    ("grfsq", "GroupedResidualFSQ", dict(dim=16, levels=[8, 5, 5], num_quantizers=2, groups=2)),
    ("grlfq", "GroupedResidualLFQ", dict(dim=16, codebook_size=64, num_quantizers=2, groups=2)),
    ("simvq", "SimVQ", dict(dim=16, codebook_size=64)),
    ("rsimvq", "ResidualSimVQ", dict(dim=16, codebook_size=64, num_quantizers=2)),
    ("rpq", "RandomProjectionQuantizer", dict(dim=16, codebook_size=32, codebook_dim=8, num_codebooks=2)),
    ("latent", "LatentQuantize", dict(levels=[5, 5, 8], dim=16)),
    ("fsp", "FSP", dict(levels=[8, 5, 5], dim=16)),
    ("fsp_normal", "FSP", dict(levels=[7, 5, 5], dim=16, act_name="normal", need_inv_act=True)),
    ("binary", "BinaryMapper", dict(bits=6, deterministic_on_eval=True)),
    ("hvq", "HierarchicalVQ", dict(dim=16, codebook_size=32, scales=[1, 4, 20], kmeans_init=False)),
    ("evolfq", "EvoLFQ", dict(encoder="nn.Linear(12, 6)", decoder="nn.Linear(6, 12)", dim=6)),
]
# Every quantizer of the registry (Sources/VectorQuantize/Configuration/QuantizerRegistry.swift) has a case.
# Cases the tool writes no checkpoint of: nothing learned (FSQ and LFQ without projection, the random projections, the binary
# mapper) or learned elsewhere (EvoLFQ's evolution).
NO_SWIFT_WRITE = {"fsq", "lfq", "rpq", "binary", "evolfq"}
# The keys this library adds to a state dict (the freeze state, the policy's step counter): unexpected to PyTorch.
OUR_KEYS = {"frozen_codes", "frozen_components", "frozen_subspace_values", "policy_frozen_at", "steps"}


def ours(name, key):
    """a key this library writes that the reference's state dict does not hold: the freeze state, and
    LatentQuantize's value tables with `optimize_values` false (a plain list there, optional when loading here)."""
    return key.rsplit(".", 1)[-1] in OUR_KEYS or (name == "LatentQuantize" and key.startswith("values_per_latent."))
HVQ_LENGTH = 20   # the last scale: `vq encode` reads an HVQ's rows as sequences of this length


def linear(spec):
    """`nn.Linear(a, b)` or `nn.Linear(a, b, bias = False)` as a configuration spells a module (EvoLFQ's encoder and
    decoder, SimVQ's codebook_transform, a vq_bridge)."""
    parts = [v.strip() for v in spec[len("nn.Linear("):-1].split(",")]
    bias = not any(p.replace(" ", "") == "bias=False" for p in parts[2:])
    return torch.nn.Linear(int(parts[0]), int(parts[1]), bias=bias)


def optimizer(spec):
    """`partial(torch.optim.SGD, lr=0.01)` as a configuration spells an in-place optimizer."""
    name, *args = [v.strip() for v in spec[len("partial("):-1].split(",")]
    return functools.partial(getattr(torch.optim, name.split(".")[-1]), **{k: float(v) for k, v in (a.split("=") for a in args)})


def build(name, kwargs):
    """the reference's module for a configuration: module texts become modules, as the tool reads them."""
    kw = dict(kwargs)
    for key in ("encoder", "decoder", "codebook_transform", "vq_bridge"):
        if isinstance(kw.get(key), str):
            kw[key] = linear(kw[key])
    if isinstance(kw.get("in_place_codebook_optimizer"), str):
        kw["in_place_codebook_optimizer"] = optimizer(kw["in_place_codebook_optimizer"])
    return getattr(vqp, name)(**kw)


def input_dim(name, kwargs):
    if name == "BinaryMapper":
        return kwargs["bits"]
    if name == "EvoLFQ":
        return linear(kwargs["encoder"]).in_features
    return kwargs.get("dim") or len(kwargs["levels"])


def channels_first(name, kwargs):
    """whether the reference's module takes [b, d, n] (`vq encode` always reads rows of vectors)."""
    if name in ("LatentQuantize",):
        return True
    if name == "HierarchicalVQ":
        return kwargs.get("channel_first", True)
    return bool(kwargs.get("channel_first") or kwargs.get("is_channel_first") or kwargs.get("channel_last") is False)


def batch(name, kwargs, xb):
    """A batch [b, n, d] as the module takes it."""
    if name == "HierarchicalVQ":   # sequences of the last scale's length
        xb = xb.reshape(-1, HVQ_LENGTH, xb.shape[-1])
    return xb.transpose(1, 2) if channels_first(name, kwargs) else xb


@contextlib.contextmanager
def pure_eval(module):
    """The reference's evaluation without its one side effect this library decided against (README, "Where this
    library decides"): an `affine_param` codebook's batch statistics move in evaluation there, in training only
    here — so the reference's own eval indices would depend on the batches it saw before."""
    patched = [m for m in module.modules() if getattr(m, "affine_param", False) and hasattr(m, "update_affine")]
    for m in patched:
        m.update_affine = lambda *args, **kwargs: None
    noisy = [m for m in module.modules() if getattr(m, "diveq", False) is True]   # DiVeQ's noise in eval, ditto
    for m in noisy:
        m.diveq = False
    try:
        yield
    finally:
        for m in patched:
            del m.update_affine
        for m in noisy:
            m.diveq = True


def forward_indices(name, kwargs, module, x):
    """indices for x [n, d] in the layout `vq encode` writes."""
    with torch.no_grad(), pure_eval(module):
        if name == "VectorQuantize" and not channels_first(name, kwargs):
            return module(x)[1]
        if name == "BinaryMapper":
            return module(x, return_indices=True)[1]
        if name == "RandomProjectionQuantizer":
            return module(x[None])[0]
        if name == "HierarchicalVQ":   # per sequence: every level's indices, coarse to fine, concatenated
            return torch.cat([i.reshape(i.shape[0], -1) for i in module(batch(name, kwargs, x))[1]], dim=-1)
        out = module(batch(name, kwargs, x[None]))
        idx = out[1]
        if name.startswith("Grouped"):
            return idx[:, 0]
        return idx[0]


def as_layout(ref, ours):
    """the reference's tensor in the tool's layout: a channels-first module puts the layer axis of its indices
    (`[q, n]`, `[g, q, n]`) and the features of its outputs (`[d, n]`) before the rows; `vq` after them. A residual
    FSQ or LFQ whose layers keep their codebook axis (`keep_num_codebooks_dim`) has a singleton axis there that the
    tool's rows do not."""
    if tuple(ref.shape) != ours.shape and ref.numel() == ours.size:
        squeezed = ref.reshape([n for n in ref.shape if n != 1] or [1])
        if tuple(squeezed.shape) == tuple(n for n in ours.shape if n != 1):
            ref = squeezed.reshape(ours.shape)
    if tuple(ref.shape) != ours.shape and ref.ndim >= 2 and tuple(ref.transpose(-1, -2).shape) == ours.shape:
        return ref.transpose(-1, -2)
    return ref


def decodes_forward(module):
    """whether the tool decodes to the codes the forward used where the reference returns stored rows (README,
    "Differences from vector-quantize-pytorch"): an affine codebook's, a vq_bridge's, and a residual stack's spherical
    or rotated LFQ / FSQ layers' (the reference's stacks read the unnormalised, unrotated grid there)."""
    stacked = isinstance(module, (vqp.ResidualLFQ, vqp.GroupedResidualLFQ, vqp.ResidualFSQ, vqp.GroupedResidualFSQ))
    return any(getattr(m, "affine_param", False) or getattr(m, "vq_bridge", None) is not None
               or (stacked and (getattr(m, "spherical", False) is True or getattr(m, "orthogonal_rotation", False) is True))
               for m in module.modules())


def forward_output(name, kwargs, module, x):
    """the forward's quantized vectors for x [n, d], rows first."""
    with torch.no_grad(), pure_eval(module):
        if name == "VectorQuantize" and not channels_first(name, kwargs):
            return module(x)[0]
        return module(batch(name, kwargs, x[None]))[0][0]


def decode(name, kwargs, module, idx):
    """what `vq decode` gives for those indices, or None where the reference has no way back."""
    with torch.no_grad():
        if name == "VectorQuantize":   # heads sharing one codebook come back [n, h, d] there: `vq decode` joins them
            return module.get_output_from_indices(idx).reshape(idx.shape[0], -1)
        if name in ("FSQ", "LFQ", "SimVQ", "FSP", "LatentQuantize"):
            return module.indices_to_codes(idx[None])[0]
        if name == "BinaryMapper":   # the one-hot code, as the forward gives it
            return torch.nn.functional.one_hot(idx, module.num_codes).float()
        if name == "EvoLFQ":
            return module.decoder(module.lfq.indices_to_codes(idx[None])[0])
        if name == "HierarchicalVQ":
            sizes = [s for s in module.level_shapes]
            parts, o = [], 0
            for shape in sizes:
                n = int(np.prod(shape))
                parts.append(idx[:, o:o + n].reshape(idx.shape[0], *shape))
                o += n
            return module.get_output_from_indices(tuple(parts))
        if name == "RandomProjectionQuantizer":
            return None
        if name.startswith("Grouped"):
            return module.get_output_from_indices(idx[:, None])[0]
        return module.get_output_from_indices(idx[None])[0]


def run(vq, *args):
    r = subprocess.run([vq, *args], capture_output=True, text=True)
    return r.returncode, (r.stderr or r.stdout).strip()


def reference_unstable_rows(name, kwargs, module, x, ref, ours):
    """How many of the differing indices the reference itself gives either way, or None if some it does not: rows
    whose indices it changes when encoded alone (its GEMM sums in another order for one row than for 200), or when the
    row moves by at most 16e-6 of its norm (8 seeded directions, three sizes) — and then agrees with the tool's. A value
    at a rounding boundary after a deep residual layer flips with the last bit of a projection (a residual FSQ's third
    layer divides by 1/16 a residual that cancelled to 1e-7, whose sign picks the code: PyTorch's float32 and float64
    disagree by more than that); no order of sums is "the" reference's. None where rows are not the first axis."""
    if name in ("HierarchicalVQ",) or name.startswith("Grouped") or ref.shape[0] != x.shape[0]:
        return None
    gen = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(8, x.shape[-1], generator=gen), dim=-1)
    count = 0
    for r in np.unique(np.argwhere(ref != ours)[:, 0]):
        row = x[r:r + 1]
        candidates = [row] + [row + k * 1e-6 * row.norm() * u for k in (1, 4, 16) for u in directions]
        if not any(np.array_equal(as_layout(forward_indices(name, kwargs, module, c), ours[r:r + 1]).numpy().reshape(ours[r].shape), ours[r])
                   for c in candidates):
            return None
        count += int((ref[r] != ours[r]).sum())
    return count


def check_encode(vq, name, kwargs, module, ckpt, x, xin, tmp, tag):
    """`vq encode` (and `vq decode`) of the checkpoint against the module: a list of problems."""
    idx = forward_indices(name, kwargs, module, x)
    try:
        # An affine or bridged codebook decodes to the codes its forward used here, to the stored rows there:
        # compared with the reference's forward output.
        ref_out = forward_output(name, kwargs, module, x) if decodes_forward(module) else decode(name, kwargs, module, idx)
    except Exception:   # the reference's own decoding fails for some configurations (multi-axis layouts): not compared
        ref_out = NotImplemented
    iout, vout = os.path.join(tmp, tag + "_idx.npy"), os.path.join(tmp, tag + "_vec.npy")
    problems = []
    same = None
    rc, err = run(vq, "encode", "--checkpoint", ckpt, "--input", xin, "--output", iout)
    if rc != 0:
        return idx, [f"{tag} encode: {err}"]
    ours = np.load(iout)
    idx = as_layout(idx, ours)
    if ours.shape != tuple(idx.shape):
        problems.append(f"{tag} indices differ: shape {ours.shape} vs {tuple(idx.shape)}")
    elif not np.array_equal(ours, idx.numpy()):
        unstable = reference_unstable_rows(name, kwargs, module, x, idx.numpy(), ours)
        differing = int((ours != idx.numpy()).sum())
        if unstable is None or differing > unstable:
            problems.append(f"{tag} indices differ: {differing}")
        else:   # decoded vectors are compared on the rows whose indices agree
            same = (ours == idx.numpy()).reshape(ours.shape[0], -1).all(axis=1)
    rc, err = run(vq, "decode", "--checkpoint", ckpt, "--input", iout, "--output", vout)
    if ref_out is NotImplemented:
        pass
    elif ref_out is None:
        if rc == 0:
            problems.append(f"{tag} decode succeeded where the reference has no decoding")
    elif rc != 0:
        problems.append(f"{tag} decode: {err}")
    else:
        dec = np.load(vout)
        want = as_layout(ref_out, dec).numpy()   # channels-first modules decode to [d, n]
        if same is not None and dec.shape == want.shape and dec.shape[0] == same.shape[0]:
            dec, want = dec[same], want[same]
        if dec.shape != want.shape or np.abs(dec - want).max() > 1e-5 * max(1.0, float(np.abs(want).max())):
            problems.append(f"{tag} decoded vectors differ (shape {dec.shape} vs {want.shape}"
                            + (f", max {np.abs(dec - want).max():.3g})" if dec.shape == want.shape else ")"))
    return idx, problems


# Random configurations (`--random N`): each case is one kind's base configuration above with one to five keywords of
# the reference's constructor drawn from these pools (a configuration PyTorch refuses, or cannot run, is drawn again).
# Layout keywords are included: `vq encode` reads rows of vectors whatever the module's axes.
BOOL = [True, False]
VQ_POOL = dict(codebook_size=[16, 33, 64], codebook_dim=[4, 8, 16], heads=[1, 2, 4], separate_codebook_per_head=BOOL,
               decay=[0.5, 0.8, 0.99], eps=[1e-5, 1e-3], freeze_codebook=BOOL, kmeans_init=BOOL, kmeans_iters=[1, 3],
               use_cosine_sim=BOOL, layernorm_after_project_in=BOOL, threshold_ema_dead_code=[0, 0.5, 2],
               channel_last=BOOL, commitment_weight=[0.0, 0.25, 1.0], commitment_use_cross_entropy_loss=BOOL,
               orthogonal_reg_weight=[0.0, 0.1], orthogonal_reg_active_codes_only=BOOL, orthogonal_reg_max_codes=[None, 8],
               codebook_diversity_loss_weight=[0.0, 0.1], codebook_diversity_temperature=[1.0, 100.0],
               stochastic_sample_codes=BOOL, sample_codebook_temp=[0.1, 1.0], straight_through=BOOL,
               rotation_trick=[None, True, False], directional_reparam=BOOL, ema_update=[None, True, False],
               learnable_codebook=[None, True, False], affine_param=BOOL, affine_param_batch_decay=[0.5, 0.99],
               affine_param_codebook_decay=[0.5, 0.9], sync_update_v=[0.0, 0.5], return_zeros_for_masked_padding=BOOL,
               directional_reparam_variance=[0.005, 0.05], manual_ema_update=BOOL, manual_in_place_optimizer_update=BOOL,
               route_gradients_to_input=BOOL, sync_affine_param=BOOL, sync_codebook=[None, True, False], sync_kmeans=BOOL,
               vq_bridge=[None, "nn.Linear(16, 16)", "nn.Linear(8, 8, bias = False)"],
               in_place_codebook_optimizer=[None, "partial(torch.optim.SGD, lr=0.01)", "partial(torch.optim.Adam, lr=0.001)"])
RVQ_POOL = dict(VQ_POOL, num_quantizers=[1, 2, 3], shared_codebook=BOOL, diveq=BOOL, quantize_dropout=BOOL,
                quantize_dropout_cutoff_index=[0, 1], implicit_neural_codebook=BOOL, beam_size=[None, 2, 4],
                eval_beam_size=[None, 2, 3], quant_grad_frac=[0.0, 0.5], quantize_dropout_multiple_of=[1, 2],
                beam_score_quantizer_weights=[None, [1.0, 0.5], [1.0, 0.5, 0.25]], mlp_kwargs=[{}, {"dim_hidden": 32}, {"depth": 2}])
FSQ_POOL = dict(levels=[[8, 5, 5, 5], [7, 5], [4, 4, 4], [3, 3, 3, 3, 2]], dim=[None, 8, 16], num_codebooks=[1, 2],
                keep_num_codebooks_dim=[None, True], scale=[None, 0.5], channel_first=BOOL, projection_has_bias=BOOL,
                return_indices=[True], force_quantization_f32=BOOL, preserve_symmetry=BOOL, noise_dropout=[0.0, 0.5],
                bound_hard_clamp=BOOL, orthogonal_rotation=BOOL)
RFSQ_POOL = dict(FSQ_POOL, num_quantizers=[1, 2, 3], is_channel_first=BOOL, quantize_dropout=BOOL,
                 quantize_dropout_cutoff_index=[0, 1], quantize_dropout_multiple_of=[1, 2], soft_clamp_input_value=[None, 1.0, 5.0])
LFQ_POOL = dict(dim=[None, 8, 16], codebook_size=[16, 64, 256], entropy_loss_weight=[0.0, 0.1], commitment_loss_weight=[0.0, 0.25],
                diversity_gamma=[1.0, 2.5], num_codebooks=[1, 2], keep_num_codebooks_dim=[None, True], codebook_scale=[1.0, 0.5],
                frac_per_sample_entropy=[1.0, 0.5], has_projections=[None, True], projection_has_bias=BOOL,
                soft_clamp_input_value=[None, 1.0, 5.0], cosine_sim_project_in=BOOL, cosine_sim_project_in_scale=[None, 2.0],
                channel_first=[None, True, False], experimental_softplus_entropy_loss=BOOL, entropy_loss_offset=[5.0, 1.0],
                spherical=BOOL, force_quantization_f32=BOOL, orthogonal_rotation=BOOL)
RLFQ_POOL = dict(LFQ_POOL, num_quantizers=[1, 2, 3], quantize_dropout=BOOL, quantize_dropout_cutoff_index=[0, 1],
                 quantize_dropout_multiple_of=[1, 2])
RLFQ_POOL.pop("dim")
SIM_POOL = dict(codebook_size=[16, 64], channel_first=BOOL, rotation_trick=BOOL, input_to_quantize_commit_loss_weight=[0.0, 0.25],
                commitment_weight=[0.0, 1.0], frozen_codebook_dim=[None, 8, 24],
                codebook_transform=[None, "nn.Linear(16, 16, bias = False)", "nn.Linear(8, 16)"])
POOLS = {
    "VectorQuantize": VQ_POOL,
    "ResidualVQ": RVQ_POOL,
    "GroupedResidualVQ": dict(RVQ_POOL, groups=[1, 2, 4]),
    "FSQ": FSQ_POOL,
    "ResidualFSQ": RFSQ_POOL,
    "GroupedResidualFSQ": dict(RFSQ_POOL, groups=[1, 2, 4]),
    "LFQ": LFQ_POOL,
    "ResidualLFQ": RLFQ_POOL,
    "GroupedResidualLFQ": dict(RLFQ_POOL, groups=[1, 2, 4]),
    "SimVQ": SIM_POOL,
    "ResidualSimVQ": dict(SIM_POOL, num_quantizers=[1, 2, 3], heads=[1, 2], quantize_dropout=BOOL, quantize_dropout_cutoff_index=[0, 1],
                          quantize_dropout_multiple_of=[1, 2]),
    "RandomProjectionQuantizer": dict(VQ_POOL, codebook_size=[16, 33], codebook_dim=[4, 8], num_codebooks=[1, 2, 3], norm=BOOL),
    "LatentQuantize": dict(levels=[[5, 5, 8], [3, 3, 3, 3], [7, 7]], commitment_loss_weight=[0.0, 0.1], quantization_loss_weight=[0.0, 0.1],
                           num_codebooks=[1, 2], codebook_dim=[-1, 2, 4], keep_num_codebooks_dim=[None, True], optimize_values=BOOL),
    "FSP": dict(levels=[[8, 5, 5], [7, 5, 5], [4, 4, 4, 4]], dim=[None, 8, 16], channel_first=BOOL, projection_has_bias=BOOL,
                act_name=["tanh", "sigmoid", "normal", "laplace", "cauchy"], quantize_rate=[0.0, 0.5], need_inv_act=BOOL,
                vector_norm=["var_tanh", None]),
    "BinaryMapper": dict(bits=[1, 3, 6, 8], kl_loss_threshold=[0.1, 0.69]),
    "HierarchicalVQ": dict(codebook_size=[16, 32], scales=[[1, 4, 20], [2, 5, 20], [1, 2, 5, 10, 20]], shared_codebook=BOOL,
                           channel_first=BOOL, decay=[0.8, 0.99], commitment_weight=[0.0, 1.0], rotation_trick=BOOL, kmeans_init=BOOL,
                           kmeans_iters=[1, 3], threshold_ema_dead_code=[0, 2], stochastic_sample_codes=BOOL,
                           sample_codebook_temp=[0.1, 1.0], orthogonal_reg_weight=[0.0, 0.1], quant_resi=[0.0, 0.5],
                           share_quant_resi=[1, 2, 3], nested_dropout=[0.0, 0.5], nested_dropout_min_levels=[1, 2],
                           orthogonal_reg_active_codes_only=BOOL, orthogonal_reg_max_codes=[None, 8], sync_codebook=[None, False]),
    "EvoLFQ": dict({k: v for k, v in LFQ_POOL.items() if k != "dim"}, pop_size=[4, 64], mutation_rate=[0.02, 0.2],
                   tournament_size=[2, 3], elitism_count=[1, 2], generations=[1, 50], lfq=[None]),
}
# Keywords never drawn, and why. Every other keyword of the reference's constructors (Fixtures/reference_signatures.json)
# is in its kind's pool: checked at the start of a --random run.
NOT_DRAWN = {
    "allowed_dtypes": "torch dtypes: no configuration file holds them",
    "straight_through_activation": "a module instance: no configuration file holds it",
    "init_fn": "a function: no configuration file holds it",
    "accept_image_fmap": "image maps: `vq encode` reads rows; the tool's image layouts are checked by vqTests and the fixtures",
    "accept_3d_fmap": "video maps: as accept_image_fmap",
    "LatentQuantize.in_place_codebook_optimizer": "the reference raises at its first training call; refused here (README)",
}
BASES = {}
for _case, _name, _kwargs in CASES:
    BASES.setdefault(_name, _kwargs)


def undrawn_keywords():
    """the reference's keywords of each kind that neither its pool, its base configuration nor NOT_DRAWN accounts for."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "VectorQuantizeTests", "Fixtures",
                        "reference_signatures.json")
    with open(path) as f:
        sig = json.load(f)
    out = {}
    for kind, own in sig["kinds"].items():
        keys = set(own)
        for inner in sig["passes_on"].get(kind, []):
            keys |= set(sig["kinds"][inner])
        left = sorted(k for k in keys - set(POOLS[kind]) - set(BASES[kind]) if k not in NOT_DRAWN and f"{kind}.{k}" not in NOT_DRAWN)
        if left:
            out[kind] = left
    return out


def random_config(rng, name):
    kwargs = dict(BASES[name])
    pool = POOLS[name]
    for key in rng.sample(sorted(pool), min(len(pool), rng.randint(1, 5))):
        value = rng.choice(pool[key])
        if value is None:
            kwargs.pop(key, None)
        else:
            kwargs[key] = value
    if name == "BinaryMapper":
        kwargs["deterministic_on_eval"] = True   # `vq encode` is deterministic; the reference samples otherwise
    return kwargs


def prepare(name, kwargs, seed):
    """the module built and trained three steps in PyTorch, and the data to encode; raises where PyTorch refuses."""
    torch.manual_seed(seed)
    module = build(name, kwargs)
    dim = input_dim(name, kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    module.train()
    for _ in range(3):  # a few training steps so that the state is not the initial one
        module(batch(name, kwargs, torch.randn(4, 40, dim, generator=g)))
    module.eval()
    x = torch.randn(200, dim, generator=g)
    forward_indices(name, kwargs, module, x)   # PyTorch can encode it
    return module, x, g


def run_case(vq, tmp, case, name, kwargs, module, x, g):
    """the problems found in both directions, and how far it went."""
    dim = x.shape[-1]
    ckpt = os.path.join(tmp, case + ".safetensors")
    try:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, ckpt)
    except RuntimeError:   # tensors that share memory (a shared codebook): safetensors asks for save_model, which
        save_model(module, ckpt)   # keeps each once and names the others in its metadata
    with open(os.path.join(tmp, case + ".json"), "w") as f:
        json.dump({"module": name, "kwargs": kwargs}, f)
    xin = os.path.join(tmp, case + "_x.npy")
    np.save(xin, x.numpy())
    # PyTorch -> Swift
    _, problems = check_encode(vq, name, kwargs, module, ckpt, x, xin, tmp, case)
    # Swift -> PyTorch: a checkpoint Swift wrote (trained a few steps from PyTorch's where the tool trains this kind,
    # else re-saved by `vq freeze`) loads in PyTorch with nothing missing — the only unexpected keys may be ours — and
    # gives `vq encode`'s indices of it.
    swift_ckpt = os.path.join(tmp, case + "_swift.safetensors")
    learned = sum(p.numel() for p in module.parameters() if p.requires_grad) > 0
    if name in ("RandomProjectionQuantizer", "BinaryMapper", "EvoLFQ"):
        return problems + check_export(vq, name, ckpt, set(module.state_dict()), x, xin, tmp, case), \
            "PyTorch → Swift; the tool writes none of these (exported, strict)"
    if name == "HierarchicalVQ":   # trained from sequences, not by `vq train`: re-saved by `vq freeze`
        rc, err = run(vq, "freeze", ckpt, "--codes", "0", "--output", swift_ckpt)
    else:
        train = os.path.join(tmp, case + "_train.npy")
        np.save(train, torch.randn(256, dim, generator=g).numpy())
        rc, err = run(vq, "train", "--init", ckpt, "--input", train, "--output", swift_ckpt,
                      "--steps", "3", "--batch-size", "64", "--lr", "0.01")
        # A codebook its configuration freezes (freeze_codebook=True on the VectorQuantize around it) takes no EMA step.
        held = {id(m) for v in module.modules() if getattr(v, "freeze_codebook", False) is True for m in v.modules()}
        ema = any(getattr(m, "ema_update", False) is True and id(m) not in held for m in module.modules())
        if rc != 0 and "nothing for vq train to do" in err and not learned and not ema:
            return problems + check_export(vq, name, ckpt, set(module.state_dict()), x, xin, tmp, case), \
                "PyTorch → Swift; nothing learned, nothing for the tool to write (exported, strict)"
    if rc != 0:
        return problems + [("freeze: " if name == "HierarchicalVQ" else "train --init: ") + err], ""
    back = build(name, kwargs)
    state = load_file(swift_ckpt)
    res = back.load_state_dict(state, strict=False)
    trained = set(module.state_dict())
    for k in res.unexpected_keys:
        if k in trained:   # a buffer the reference makes at its first batch (affine_param's batch statistics)
            owner, _, buffer = k.rpartition(".")
            back.get_submodule(owner).register_buffer(buffer, state[k])
    extra = [k for k in res.unexpected_keys if not ours(name, k) and k not in trained]
    if res.missing_keys or extra:
        problems.append(f"torch load: missing {res.missing_keys}, unexpected {extra}")
    back.eval()
    _, more = check_encode(vq, name, kwargs, back, swift_ckpt, x, xin, tmp, case + "_swift")
    return problems + more + check_export(vq, name, swift_ckpt, trained, x, xin, tmp, case), \
        "both ways, and exported (strict)"


def check_export(vq, name, source, trained, x, xin, tmp, case):
    """`vq export` of `source`: the reference's keys and keywords only — its sidecar builds the reference's module (no
    keyword of ours) and that module's load_state_dict takes the file strictly; it encodes as `vq encode` does."""
    exported = os.path.join(tmp, case + "_export.safetensors")
    rc, err = run(vq, "export", source, "--output", exported)
    if rc != 0:
        return ["export: " + err]
    with open(os.path.join(tmp, case + "_export.json")) as f:
        export_kwargs = json.load(f)["kwargs"]
    try:
        strict = build(name, export_kwargs)
        state = load_file(exported)
        for k in state:
            if k in trained and k not in strict.state_dict():   # buffers the reference makes at its first batch
                owner, _, buffer = k.rpartition(".")
                strict.get_submodule(owner).register_buffer(buffer, state[k])
        strict.load_state_dict(state, strict=True)
    except Exception as e:
        return [f"export: strict load in PyTorch: {type(e).__name__}: {str(e)[:300]}"]
    strict.eval()
    try:
        _, problems = check_encode(vq, name, export_kwargs, strict, exported, x, xin, tmp, case + "_export")
    except Exception as e:
        missing = sorted(set(trained) - set(strict.state_dict()))
        return [f"export: the strictly loaded module fails: {type(e).__name__}: {str(e)[:200]} (not in it: {missing[:6]})"]
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vq", default=".build/release/vq")
    ap.add_argument("--random", type=int, default=0, help="also this many random configurations (keywords drawn from POOLS)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    passed = failed = 0
    cases = [(case, name, kwargs) for case, name, kwargs in CASES]
    rng = random.Random(args.seed)
    kinds = sorted(POOLS)
    if args.random and undrawn_keywords():
        sys.exit(f"keywords in no pool (add them to POOLS or NOT_DRAWN): {undrawn_keywords()}")
    drawn = refused = 0
    while drawn < args.random:
        name = kinds[drawn % len(kinds)]
        kwargs = random_config(rng, name)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                prepare(name, kwargs, len(cases))   # the seed the case runs with below: the reference may fail by its draw
        except Exception:
            refused += 1
            if refused > 50 * (args.random + 1):
                break
            continue
        cases.append((f"random{drawn}", name, kwargs))
        drawn += 1
    with tempfile.TemporaryDirectory() as tmp:
        for i, (case, name, kwargs) in enumerate(cases):
            with contextlib.redirect_stdout(io.StringIO()):
                module, x, g = prepare(name, kwargs, i)
            problems, way = run_case(args.vq, tmp, case, name, kwargs, module, x, g)
            label = case if not case.startswith("random") else f"{case} {name} {json.dumps(kwargs)}"
            if problems:
                failed += 1
                print(f"{label}: FAILED " + "; ".join(problems))
            else:
                passed += 1
                print(f"{label}: ok (indices equal, {way})")
    print(f"{passed} passed, {failed} failed" + (f" ({refused} random configurations PyTorch refused, drawn again)" if args.random else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
