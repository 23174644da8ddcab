#!/usr/bin/env python3
"""Throughput of the kernels' inner loops on paper: llvm-mca's steady-state cycles per iteration for the cores a
Swift user has (Apple M1, Neoverse N1/V1 — Graviton 2/3) and for this machine's x86 levels, so the expected arm64
speed sits beside the x86 rates measured here (Benchmarks/README.md).

    python3 Scripts/arm64/mca.py            # needs clang and llvm-mca (Debian: llvm-14); prints a Markdown table

Each kernel's innermost loop is cut from clang's assembly (-O2, as SwiftPM builds C targets) and handed to llvm-mca;
floating-point work per iteration is counted from the loop's own instructions (an FMA lane = 2, a multiply or add
lane = 1), so an unrolled loop is counted as what it is.
"""
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "Sources/CVQKernels"

# (label, clang target flags, llvm-mca triple, cpu, nominal GHz)
ARM = [("Apple M1 (P-core)", "apple-m1", 3.2), ("Neoverse N1 (Graviton2)", "neoverse-n1", 2.5),
       ("Neoverse V1 (Graviton3)", "neoverse-v1", 2.6)]
X86 = [("Sapphire Rapids (this machine)", "sapphirerapids", None)]



def tool(*names):
    for n in names:
        if shutil.which(n):
            return n
    sys.exit(f"mca.py: none of {', '.join(names)} found (Debian: apt-get install llvm-14)")


def assembly(source, target):
    out = subprocess.run(["clang", *target, "-O2", "-S", "-o", "-", f"-I{KERNELS}/include", str(KERNELS / source)],
                         check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def inner_loops(lines, function, aarch64, nested=False):
    """Every innermost loop of `function` (assembly for AArch64 or x86-64): from a header label to the branch back.
    `nested`: also loops whose header mark sits under "Parent Loop" notes (loops inside loops; the screens' tiles)."""
    start = next((i for i, l in enumerate(lines) if l.startswith(function + ":")), None)
    if start is None:
        return []
    end = next((i for i in range(start, len(lines)) if ".cfi_endproc" in lines[i]), len(lines))
    loops = []
    for i in range(start, end):
        m = re.match(r"^(\.LBB\w+):", lines[i])
        if not m:
            continue
        # The header mark is on the label's line or on the comment lines under it (below "Parent Loop" notes).
        notes = [lines[i]] + ([l for l in lines[i + 1:i + 4] if l.strip().startswith(("#", "//"))] if nested else [])
        if not any("Inner Loop Header" in l for l in notes):
            continue
        label, body = m.group(1), []
        for j in range(i + 1, end):
            # Comments: `//` on AArch64 (where `#` starts an immediate), `#` in x86's AT&T syntax.
            s = lines[j].split("//")[0]
            s = "" if s.strip().startswith("#") else (s if aarch64 else s.split("#")[0]).strip()
            if not s or s.startswith(".") or re.match(r"^\S+:$", s):
                continue
            body.append(s)
            if re.search(r"(?<![\w.])" + re.escape(label) + r"(?!\w)", s):
                loops.append(body)
                break
    return loops


def flops(body):
    total = 0
    for ins in body:
        op = ins.split()[0]
        width = 16 if "zmm" in ins else 8 if "ymm" in ins else 4
        if op.startswith("vfmadd") or op.startswith("vfnmadd"):
            total += 2 * width
        elif op in ("fmla", "fmls"):
            total += 8 if ".4s" in ins else 4 if ".2s" in ins else 2
        elif re.match(r"v?(mul|add|sub)ps$", op):
            total += width
        elif op in ("fmul", "fadd", "fsub") and ".4s" in ins:
            total += 4
    return total


def mca(body, triple, cpu):
    mc = tool("llvm-mca", "llvm-mca-14", "llvm-mca-15", "llvm-mca-16")
    with tempfile.NamedTemporaryFile("w", suffix=".s", delete=False) as f:
        f.write("\n".join(body) + "\n")
    out = subprocess.run([mc, f"-mtriple={triple}", f"-mcpu={cpu}", "-iterations=200", f.name],
                         capture_output=True, text=True).stdout
    Path(f.name).unlink()
    m = re.search(r"Block RThroughput:\s*([\d.]+)", out)
    cyc = re.search(r"Total Cycles:\s*(\d+)", out)
    return float(m.group(1)) if m else None, int(cyc.group(1)) / 200 if cyc else None


def main():
    tool("clang")
    print("| loop | core | flops / iteration | cycles / iteration (mca) | flops / cycle | GFLOP/s per core at nominal clock |")
    print("|---|---|---|---|---|---|")
    rows = []
    arm = assembly("kernels.c", ["--target=aarch64-linux-gnu"])
    for label, cpu, ghz in ARM:
        rows.append(("ukr_generic (NEON, 8×12)", label, inner_loops(arm, "ukr_generic", True), "aarch64", cpu, ghz))
    x86 = assembly("kernels.c", ["--target=x86_64-linux-gnu"])
    for fn, name in (("ukr_generic", "ukr_generic (SSE2, 4×12)"), ("ukr_avx2", "ukr_avx2 (6×16)"),
                     ("ukr_avx512", "ukr_avx512 (12×32)")):
        # A tile clang inlined into its entry point is read there.
        b = inner_loops(x86, fn, False) or (inner_loops(x86, "vq_gemm_ukr", False) if fn == "ukr_generic" else [])
        for label, cpu, ghz in X86:
            rows.append((name, label, b, "x86_64", cpu, ghz))
    for name, label, loops, triple, cpu, ghz in rows:
        if not loops:
            print(f"| {name} | {label} | loop not found | | | |")
            continue
        # The packed path (B read from its panel) is the fastest loop of the most work; the offsets path reads B in place.
        fl, cycles = max(((flops(b), -mca(b, triple, cpu)[1]) for b in loops))
        cycles = -cycles
        per = fl / cycles if cycles else 0
        rate = f"{per * ghz:.0f}" if ghz else "see the measured rate"
        print(f"| {name} | {label} | {fl} | {cycles:.2f} | {per:.1f} | {rate} |")


# The other hot loops of the portable kernels on arm64: (source, function, what one iteration does, values per iteration).
# (clang inlines the static portable versions into their entry points, where they are read.)
OTHER = [("fsq.c", "vq_fsq_grid", "FSQ's grid, 4 values", 4),
         ("math.c", "vq_tanh", "tanh, 16 values (four NEON vectors a step)", 16),
         ("rows.c", "sumsq_generic", "row sum of squares, 8 values", 8)]


def best_loop(source, fn, triple, work, nested=False):
    """The inner loop of `fn` with the most work (`work(body)`, then length): the main body, not a remainder."""
    loops = inner_loops(assembly(source, [f"--target={triple}-linux-gnu"]), fn, triple == "aarch64", nested)
    return max(loops, key=lambda b: (work(b), len(b))) if loops else None


def others():
    print()
    print("| loop | core | cycles / iteration (mca) | values / cycle | values / ns at nominal clock |")
    print("|---|---|---|---|---|")
    for source, fn, what, per in OTHER:
        body = best_loop(source, fn, "aarch64", flops)
        for label, cpu, ghz in ARM:
            if body is None:
                print(f"| {what} | {label} | loop not found (inlined or scalar) | | |")
                continue
            cycles = mca(body, "aarch64", cpu)[1]
            rate = f"{per / cycles * ghz:.1f}" if ghz and cycles else "—"
            print(f"| {what} | {label} | {cycles:.2f} | {per / cycles:.2f} | {rate} |")


def products(body):
    """8-bit products per iteration of a screening loop (SDOT, VPMADDUBSW, VPDPBUSD; SSE2's PMADDWD on 16-bit pairs)."""
    total = 0
    for ins in body:
        op = ins.split()[0]
        width = 64 if "zmm" in ins else 32 if "ymm" in ins else 16
        if op == "sdot":
            total += 16 if ".4s" in ins else 8
        elif op in ("vpmaddubsw", "vpdpbusd"):
            total += width
        elif op == "pmaddwd":
            total += 8
    return total


# The nearest-code screens' tiles: (source, function, label, triple, cores). Their rate in products per cycle sits
# beside the float tile's (FMA lanes per cycle) of the same core: the screen's gain before its bookkeeping.
SCREENS = [("screen_neon.c", "vq_screen_tile_i7_neon", "7-bit rows, SDOT (4 × 16)", "aarch64", ARM),
           ("screen_sse2.c", "vq_screen_tile_i16_sse2", "16-bit pairs, SSE2 PMADDWD (2 × 16)", "x86_64", X86),
           ("screen_avx2.c", "vq_screen_tile_i7_avx2", "7-bit rows, AVX2 VPMADDUBSW (2 × 32)", "x86_64", X86),
           ("screen.c", "screen_tile_i7_avx512", "7-bit rows, AVX-512BW VPMADDUBSW (12 × 32)", "x86_64", X86),
           ("screen.c", "screen_tile_i8", "8-bit rows, VNNI VPDPBUSD (12 × 32)", "x86_64", X86)]


def screens():
    print()
    print("| screen tile | core | 8-bit products / iteration | cycles / iteration (mca) | products / cycle |")
    print("|---|---|---|---|---|")
    for source, fn, what, triple, cores in SCREENS:
        body = best_loop(source, fn, triple, products, nested=True)
        for label, cpu, ghz in cores:
            if body is None:
                print(f"| {what} | {label} | loop not found | | |")
                continue
            cycles = mca(body, triple, cpu)[1]
            print(f"| {what} | {label} | {products(body)} | {cycles:.2f} | {products(body) / cycles:.1f} |")


if __name__ == "__main__":
    main()
    others()
    screens()
