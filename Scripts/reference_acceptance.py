#!/usr/bin/env python3
"""Which configurations the reference accepts: every keyword of every kind set to each value of a fixed pool on the
registry's example, and seeded random pairs and triples, each built, trained three steps and evaluated by
vector-quantize-pytorch 1.32.0 — accepted when all of that runs, refused (with the error) when any of it raises.

    PY=$(Scripts/setup_reference.sh | tail -1) && $PY Scripts/reference_acceptance.py > Tests/VectorQuantizeTests/Fixtures/reference_acceptance.json

`AcceptanceParityTests` builds each configuration here: this library must build exactly what the reference runs
(validation at construction; a configuration the reference builds but cannot train or evaluate is refused here), but
for the documented exceptions it lists.
"""
import io, json, os, random, sys, warnings, contextlib
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crosscheck_pytorch as cc   # build(), batch(), input_dim(): the modules as the tool reads their configurations

# The registry's examples (Sources/VectorQuantize/Configuration/QuantizerRegistry.swift); the test checks they agree.
EXAMPLES = {
    "VectorQuantize": dict(dim=8, codebook_size=16, heads=2, separate_codebook_per_head=True, codebook_dim=4),
    "ResidualVQ": dict(dim=8, num_quantizers=3, codebook_size=16, codebook_dim=4),
    "GroupedResidualVQ": dict(dim=8, groups=2, num_quantizers=2, codebook_size=16),
    "FSQ": dict(levels=[8, 5, 5], dim=8),
    "ResidualFSQ": dict(levels=[8, 5, 5], num_quantizers=2, dim=8),
    "GroupedResidualFSQ": dict(levels=[5, 5], num_quantizers=2, dim=8, groups=2),
    "LFQ": dict(dim=8, codebook_size=64),
    "ResidualLFQ": dict(dim=8, codebook_size=64, num_quantizers=2),
    "GroupedResidualLFQ": dict(dim=8, codebook_size=16, num_quantizers=2, groups=2),
    "SimVQ": dict(dim=8, codebook_size=16),
    "ResidualSimVQ": dict(dim=8, codebook_size=16, num_quantizers=2),
    "RandomProjectionQuantizer": dict(dim=8, codebook_size=16, codebook_dim=4, num_codebooks=2),
    "LatentQuantize": dict(levels=[5, 5, 8], dim=8),
    "FSP": dict(levels=[8, 5, 5], dim=8),
    "BinaryMapper": dict(bits=8),
    "HierarchicalVQ": dict(dim=8, codebook_size=16, scales=[1, 4, 20], kmeans_init=False),
}
# Values each keyword is set to (ReferenceKeywordsTests.candidates and module texts a configuration can hold).
POOL = [True, False, 0, 1, 2, 3, 4, 0.5, 0.25, 1.5, [2, 3], [4, 4], [5, 5, 8], "tanh", "sigmoid",
        "nn.Linear(4, 4)", "nn.Linear(8, 8)", "partial(torch.optim.SGD, lr=0.01)"]
# Keywords no configuration file holds (torch dtypes, module instances, functions; EvoLFQ is built from modules), and
# the image and video layouts (the batches here are sequences: the tool's image layouts are checked by vqTests).
SKIP = {"allowed_dtypes", "straight_through_activation", "init_fn", "encoder", "decoder", "lfq", "accept_image_fmap",
        "accept_3d_fmap"}
TEXT_KEYWORDS = {"vq_bridge", "codebook_transform", "in_place_codebook_optimizer"}


def keywords(sig, kind):
    keys = set(sig["kinds"][kind])
    for inner in sig["passes_on"].get(kind, []):
        keys |= set(sig["kinds"][inner])
    return sorted(keys - SKIP)


def fits(key, value):
    """module texts only for the keywords that hold them, and nothing else there."""
    return (key in TEXT_KEYWORDS) == isinstance(value, str) and not (key in TEXT_KEYWORDS and value in ("tanh", "sigmoid")) \
        or (key in ("act_name", "straight_through_activation") and value in ("tanh", "sigmoid"))


def runs(name, kwargs):
    """None when the reference builds, trains three steps and evaluates the configuration; else its error."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.manual_seed(0)
            module = cc.build(name, kwargs)
            dim = cc.input_dim(name, kwargs)
            g = torch.Generator().manual_seed(1)
            module.train()
            for _ in range(3):
                module(cc.batch(name, kwargs, torch.randn(2, 20, dim, generator=g)))
            module.eval()
            with torch.no_grad():
                module(cc.batch(name, kwargs, torch.randn(2, 20, dim, generator=g)))
        return None
    except Exception as e:   # noqa: BLE001 — any failure of the reference is a refusal
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "VectorQuantizeTests", "Fixtures",
                        "reference_signatures.json")
    with open(path) as f:
        sig = json.load(f)
    rng = random.Random(2026)
    cases = []
    for name, example in EXAMPLES.items():
        keys = keywords(sig, name)
        singles = [(k, v) for k in keys for v in POOL if fits(k, v)]
        draws = [[s] for s in singles]
        for _ in range(len(singles)):   # as many random pairs and triples
            draws.append(rng.sample(singles, rng.choice([2, 3])))
        for draw in draws:
            kwargs = dict(example)
            for k, v in draw:
                kwargs[k] = v
            if len({k for k, _ in draw}) < len(draw):
                continue
            error = runs(name, kwargs)
            cases.append({"module": name, "kwargs": kwargs, "accepted": error is None, **({"error": error} if error else {})})
        print(f"{name}: {sum(c['module'] == name for c in cases)} configurations", file=sys.stderr)
    head = {"library": "vector-quantize-pytorch 1.32.0", "examples": EXAMPLES, "pool": POOL}
    out = sys.stdout   # one case a line
    out.write(json.dumps(head)[:-1] + ', "cases": [\n')
    out.write(",\n".join(json.dumps(c, separators=(",", ":")) for c in cases))
    out.write("\n]}\n")


if __name__ == "__main__":
    main()
