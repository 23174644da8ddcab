/* The screened nearest-code search in C, as NearestCode+Screening.swift runs it (one task): codes packed per panel,
   rows per group of 12, the tiles over every panel, the candidate lists, the exact rescoring — for every format,
   emulated and (where this machine runs it: SDOT on arm64, AVX2 / AVX-512 / VNNI / BF16 on x86) native. Each must
   give the bits of the rescoring over every code, and that rescoring the bits of the float tile + arg-min. */
#include "vq_kernels.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

float *harness_random_floats(int64_t n);
void harness_check(int ok, const char *what);

/* Every code rescored for every row, one code at a time in code order (a single listed code: no second filter), into
   the same strict improvements: the exact float search as the rescoring's chains form it. */
static void rescore_all(int64_t n, int64_t k, int64_t d, const float *x, const float *xx, const float *codes,
                        const float *cc, int cosine, float *best, int64_t *index) {
    int32_t *count = malloc(sizeof(int32_t) * (size_t)n), *cand = malloc(sizeof(int32_t) * (size_t)n);
    int32_t *pr = malloc(sizeof(int32_t) * (size_t)(2 * n));
    float *ps = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) { count[i] = 1; best[i] = INFINITY; index[i] = 0; }
    for (int64_t j = 0; j < k; j++) {
        for (int64_t i = 0; i < n; i++) cand[i] = (int32_t)j;
        vq_screen_finish(d, n, x, xx, codes, cc, cosine, count, cand, 1, best, index, pr, pr + n, ps);
    }
    free(count); free(cand); free(pr); free(ps);
}

/* The screened search; returns the number of rows it left to the float search (−1: the codes rule it out). */
static int64_t screened(int format, int native, int64_t n, int64_t k, int64_t d, const float *x, const float *codes,
                        int cosine, float *best, int64_t *index) {
    const int level = vq_cpu_level(), mr = 12, nr = 32, cap = 64;
    const int64_t steps = vq_screen_steps(format, d), panels = (k + nr - 1) / nr, cstride = panels * nr;
    const int rp = vq_screen_row_planes(format), cp = vq_screen_code_planes(format);
    float *ct = calloc((size_t)(cp * cstride), sizeof(float));
    uint32_t *pb = aligned_alloc(64, (size_t)((panels * steps * nr * 4 + 63) / 64 * 64));
    int32_t *cok = malloc(sizeof(int32_t) * (size_t)cstride);
    int64_t bad = 0;
    for (int64_t jp = 0; jp < panels; jp++) {
        const int64_t cols = k - jp * nr < nr ? k - jp * nr : nr;
        vq_sumsq_rows(level, codes + jp * nr * d, cols, d, d, ct + jp * nr);
        bad += vq_screen_pack(format, native, 1, cosine, codes + jp * nr * d, d, cols, d, nr, ct + jp * nr,
                              pb + jp * steps * nr, ct + jp * nr, cstride, cok + jp * nr);
    }
    int64_t left = bad ? -1 : 0;
    const int64_t slots = (n + mr - 1) / mr * mr;
    float *rt = calloc((size_t)(rp * slots), sizeof(float)), *lows = aligned_alloc(64, (size_t)(mr * cstride * 4 + 64));
    float *minup = malloc(sizeof(float) * (size_t)(mr * 16));
    uint32_t *pa = aligned_alloc(64, (size_t)((steps * mr * 4 + 63) / 64 * 64));
    int32_t *count = malloc(sizeof(int32_t) * (size_t)slots), *cand = malloc(sizeof(int32_t) * (size_t)(slots * cap));
    int32_t *pr = malloc(sizeof(int32_t) * (size_t)(2 * mr * cap));
    float *ps = malloc(sizeof(float) * (size_t)(mr * cap));
    for (int64_t o = 0; o < n && !bad; o += mr) {
        const int rows = n - o < mr ? (int)(n - o) : mr;
        vq_sumsq_rows(level, x + o * d, rows, d, d, rt + o);
        vq_screen_pack(format, native, 0, cosine, x + o * d, d, rows, d, mr, rt + o, pa, rt + o, slots, count + o);
        for (int i = 0; i < mr; i++) count[o + i] = i < rows && count[o + i] != 0 ? 0 : -1;
        for (int q = 0; q < mr * 16; q++) minup[q] = INFINITY;
        for (int64_t jp = 0; jp < panels; jp++)
            vq_screen_tile(format, native, steps, pa, pb + jp * steps * nr, rows, (int)(k - jp * nr < nr ? k - jp * nr : nr),
                           rt + o, slots, ct + jp * nr, cstride, cosine, jp * nr, lows, cstride, minup, count + o);
        vq_screen_collect(native, rows, k, lows, cstride, minup, count + o, cand + o * cap, cap);
        for (int i = 0; i < rows; i++) { best[o + i] = INFINITY; index[o + i] = 0; left += count[o + i] < 0; }
        vq_screen_finish(d, rows, x + o * d, rt + o, codes, ct, cosine, count + o, cand + o * cap, cap, best + o, index + o,
                         pr, pr + mr * cap, ps);
        for (int i = 0; i < rows; i++) if (count[o + i] < 0) index[o + i] = -1;   /* left: not compared */
    }
    free(ct); free(pb); free(cok); free(rt); free(lows); free(minup); free(pa); free(count); free(cand); free(pr); free(ps);
    return left;
}

void screen_checks(void) {
    const int level = vq_cpu_level();
    static const char *names[3] = {"bf16", "int8", "int7"};
    int64_t shapes[3][3] = {{100, 200, 40}, {37, 97, 37}, {30, 64, 256}};
    for (int sh = 0; sh < 3; sh++) {
        const int64_t n = shapes[sh][0], k = shapes[sh][1], d = shapes[sh][2];
        float *x = harness_random_floats(n * d), *codes = harness_random_floats(k * d);
        float *xx = malloc(sizeof(float) * (size_t)n), *cc = malloc(sizeof(float) * (size_t)k);
        vq_sumsq_rows(level, x, n, d, d, xx);
        vq_sumsq_rows(level, codes, k, d, d, cc);
        for (int cosine = 0; cosine < 2; cosine++) {
            float *rb = malloc(sizeof(float) * (size_t)n), *sb = malloc(sizeof(float) * (size_t)n);
            int64_t *ri = malloc(8 * (size_t)n), *si = malloc(8 * (size_t)n);
            rescore_all(n, k, d, x, xx, codes, cc, cosine, rb, ri);
            for (int format = 0; format < 3; format++)
                for (int native = 0; native < 2; native++) {
                    if (native && !vq_screen_native(format)) continue;
                    const int64_t left = screened(format, native, n, k, d, x, codes, cosine, sb, si);
                    int same = left == 0;
                    for (int64_t i = 0; i < n && same; i++) same = si[i] == ri[i] && memcmp(sb + i, rb + i, 4) == 0;
                    char what[96];
                    snprintf(what, sizeof what, "screen %s %s %lldx%lldx%lld %s", names[format], native ? "native" : "emulated",
                             (long long)n, (long long)k, (long long)d, cosine ? "cosine" : "euclidean");
                    harness_check(same, what);
                }
            free(rb); free(sb); free(ri); free(si);
        }
        free(x); free(codes); free(xx); free(cc);
    }
    printf("note screen native formats:%s%s%s\n", vq_screen_native(0) ? " bf16" : "", vq_screen_native(1) ? " int8" : "",
           vq_screen_native(2) ? " int7" : "");
}
