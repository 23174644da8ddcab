/* Throughput of the screen's and the float tile's instructions on this CPU, alone and in the SSE2 tile's mix.
   Benchmarks/README.md ("The AVX2 floor, measured", "A second AVX-512 machine").
     gcc -O2 Scripts/port_rates.c -o /tmp/port_rates && /tmp/port_rates
   Each loop is written in assembly on registers only — 12 independent chains of one instruction (more than any
   latency × pipes here), or the tile's load / multiply / add pattern — so no compiler can spill a chain to the stack
   (an earlier C version did at -O2 for the 128-bit loop and measured store forwarding, not the multiplier: "pmaddwd
   1.07 per cycle" on Zen 4, where the instruction runs two a cycle). Without hardware counters in a VM the clock is a
   chain of dependent adds (one a cycle), and every loop is timed in turn, several rounds, the best kept: a shared
   machine's load and clock changes move single runs by ±30 %. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

#define ITERS 20000000L
#define CLOBBER "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", \
                "xmm12", "xmm13", "xmm14", "xmm15", "rax", "cc", "memory"
/* Twelve chains: OP src, dst (two-operand SSE) or OP src, dst, dst (VEX / EVEX three-operand, accumulating). */
#define C2(OP, R, i) OP " %%" R "15, %%" R #i "\n\t"
#define C3(OP, R, i) OP " %%" R "15, %%" R "14, %%" R #i "\n\t"
#define X12(M, OP, R) M(OP, R, 0) M(OP, R, 1) M(OP, R, 2) M(OP, R, 3) M(OP, R, 4) M(OP, R, 5) M(OP, R, 6) M(OP, R, 7) \
                      M(OP, R, 8) M(OP, R, 9) M(OP, R, 10) M(OP, R, 11)
/* The level-0 screen's step for one row and 32 codes: the row's pair broadcast, then per 4 codes a load of the codes'
   pairs, PMADDWD by the row, PADDD into the accumulator. */
#define TILE(q, acc) "movdqa " #q "(%1), %%xmm8\n\tpmaddwd %%xmm15, %%xmm8\n\tpaddd %%xmm8, %%xmm" #acc "\n\t"
#define SSE2_TILE "movd 512(%1), %%xmm15\n\tpshufd $0, %%xmm15, %%xmm15\n\t" TILE(0, 0) TILE(16, 1) TILE(32, 2) \
                  TILE(48, 3) TILE(64, 4) TILE(80, 5) TILE(96, 6) TILE(112, 7)

#define LOOP(NAME, BODY, TARGET)                                                                                  \
    TARGET static double NAME(const char *buf) {                                                                  \
        long n = ITERS;                                                                                           \
        double t = now();                                                                                         \
        __asm__ volatile("1:\n\t" BODY "dec %0\n\tjnz 1b" : "+r"(n) : "r"(buf) : CLOBBER);                        \
        return now() - t;                                                                                         \
    }
LOOP(clock_adds, "add $1, %%rax\n\tadd $1, %%rax\n\tadd $1, %%rax\n\tadd $1, %%rax\n\t", )
LOOP(pmaddwd_alone, X12(C2, "pmaddwd", "xmm"), )
LOOP(paddd_alone, X12(C2, "paddd", "xmm"), )
LOOP(sse2_tile, SSE2_TILE, )
LOOP(vpmaddubsw_ymm, X12(C3, "vpmaddubsw", "ymm"), __attribute__((target("avx2"))))
LOOP(vpmaddwd_ymm, X12(C3, "vpmaddwd", "ymm"), __attribute__((target("avx2"))))
LOOP(vfmadd_ymm, X12(C3, "vfmadd231ps", "ymm"), __attribute__((target("avx2,fma"))))
LOOP(vpdpbusd_zmm, X12(C3, "vpdpbusd", "zmm"), __attribute__((target("avx512f,avx512vnni"))))
LOOP(vpmaddubsw_zmm, X12(C3, "vpmaddubsw", "zmm"), __attribute__((target("avx512f,avx512bw"))))
LOOP(vfmadd_zmm, X12(C3, "vfmadd231ps", "zmm"), __attribute__((target("avx512f"))))

struct rate { const char *name; double (*loop)(const char *); double per_iter; int needs; double best; };

int main(void) {
    char *buf = aligned_alloc(64, 4096);
    for (int i = 0; i < 4096; i++) buf[i] = (char)(i * 7);
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const int avx512 = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
    struct rate r[] = {
        {"clock (GHz)", clock_adds, 4, 0, 1e9},
        {"pmaddwd xmm (SSE2, 8 products)", pmaddwd_alone, 12, 0, 1e9},
        {"paddd xmm", paddd_alone, 12, 0, 1e9},
        {"SSE2 screen step: pmaddwd in the mix", sse2_tile, 8, 0, 1e9},
        {"vpmaddubsw ymm (32 products)", vpmaddubsw_ymm, 12, 1, 1e9},
        {"vpmaddwd ymm", vpmaddwd_ymm, 12, 1, 1e9},
        {"vfmadd231ps ymm (8 lanes)", vfmadd_ymm, 12, 1, 1e9},
        {"vpdpbusd zmm (64 products)", vpdpbusd_zmm, 12, 2, 1e9},
        {"vpmaddubsw zmm", vpmaddubsw_zmm, 12, 2, 1e9},
        {"vfmadd231ps zmm (16 lanes)", vfmadd_zmm, 12, 2, 1e9},
    };
    const int count = sizeof r / sizeof r[0];
    for (int round = 0; round < 7; round++)
        for (int i = 0; i < count; i++) {
            if ((r[i].needs == 1 && !avx2) || (r[i].needs == 2 && !avx512)) continue;
            const double t = r[i].loop(buf);
            if (t < r[i].best) r[i].best = t;
        }
    const double ghz = r[0].per_iter * ITERS / r[0].best / 1e9;
    printf("%-40s %.2f\n", r[0].name, ghz);
    for (int i = 1; i < count; i++) {
        if (r[i].best == 1e9) continue;
        printf("%-40s %.2f per cycle\n", r[i].name, r[i].per_iter * ITERS / r[i].best / (ghz * 1e9));
    }
    free(buf);
    return 0;
}
