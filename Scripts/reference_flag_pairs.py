#!/usr/bin/env python3
"""Every flag of every kind switched on beside every other keyword at 0, 1, 2 and 0.5, each run by
vector-quantize-pytorch 1.32.0 as `reference_acceptance.py` runs its cases (built, trained three steps, evaluated):
~36,000 configurations, the pairs the acceptance fixture's random draws reach only by chance. Not part of CI (about 40
minutes on two cores); run it after changing what a configuration accepts:

    PY=$(Scripts/setup_reference.sh | tail -1)
    $PY Scripts/reference_flag_pairs.py 0 2 > /tmp/p0.json & $PY Scripts/reference_flag_pairs.py 1 2 > /tmp/p1.json; wait
    $PY Scripts/reference_flag_pairs.py --merge /tmp/p0.json /tmp/p1.json > /tmp/pairs.json
    VQ_REFERENCE_ACCEPTANCE=/tmp/pairs.json swift test --filter AcceptanceParityTests

Found with it (session 22): a training beam with `affine_param` (the reference cannot run it; it was built here) and
a random projection's inert `orthogonal_reg_active_codes_only` (refused here).
"""
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_acceptance as ra   # EXAMPLES, keywords(), fits(), runs()

VALUES = [0, 1, 2, 0.5]


def jobs(sig):
    for name, example in ra.EXAMPLES.items():
        keys = ra.keywords(sig, name)
        for flag in (k for k in keys if k not in example and ra.fits(k, True)):
            for key in keys:
                if key == flag:
                    continue
                for value in VALUES:
                    if ra.fits(key, value):
                        yield name, flag, key, value


def main():
    if sys.argv[1] == "--merge":
        cases = [c for path in sys.argv[2:] for c in json.load(open(path))]
        head = {"library": "vector-quantize-pytorch 1.32.0", "examples": ra.EXAMPLES, "pool": VALUES}
        sys.stdout.write(json.dumps(head)[:-1] + ', "cases": [\n' + ",\n".join(json.dumps(c, separators=(",", ":")) for c in cases) + "\n]}\n")
        return
    part, parts = int(sys.argv[1]), int(sys.argv[2])
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "VectorQuantizeTests", "Fixtures", "reference_signatures.json")
    with open(path) as f:
        sig = json.load(f)
    flag_runs, cases = {}, []
    for name, flag, key, value in list(jobs(sig))[part::parts]:
        if (name, flag) not in flag_runs:   # a flag the reference cannot run alone says nothing about pairs
            flag_runs[(name, flag)] = ra.runs(name, {**ra.EXAMPLES[name], flag: True}) is None
        if not flag_runs[(name, flag)]:
            continue
        kwargs = {**ra.EXAMPLES[name], flag: True, key: value}
        error = ra.runs(name, kwargs)
        cases.append({"module": name, "kwargs": kwargs, "accepted": error is None, **({"error": error} if error else {})})
    json.dump(cases, sys.stdout)


if __name__ == "__main__":
    main()
