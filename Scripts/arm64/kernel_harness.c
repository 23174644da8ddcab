/* The C kernels on any CPU, against plain C and against themselves elsewhere.

   Built for this machine and cross-built for arm64 (Scripts/arm64/check.sh runs the arm64 build under qemu-user):
   every kernel whose contract says "the same values at every level" prints a hash of its output, which must be the
   same on arm64 as on x86-64's portable level (VQ_KERNEL_LEVEL=0) — the bits a model computes do not depend on the
   machine — and the GEMM micro-kernel and the arg-min are checked against plain loops here. Exit status 1 on any
   failed check. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vq_kernels.h"
#include "vq_simd.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float uniform(void) {          /* xorshift64*, in [-1, 1) */
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (float)((double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float *random_floats(int64_t n) {
    float *p = aligned_alloc(64, (size_t)((n * 4 + 63) / 64 * 64));
    for (int64_t i = 0; i < n; i++) p[i] = uniform();
    return p;
}
static uint64_t hash_bytes(const void *p, size_t n) {  /* FNV-1a */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= ((const unsigned char *)p)[i]; h *= 1099511628211ull; }
    return h;
}
static int failures = 0;
static void check(int ok, const char *what) {
    if (!ok) { printf("FAIL %s\n", what); failures++; }
}
/* For screen_check.c. */
float *harness_random_floats(int64_t n) { return random_floats(n); }
void harness_check(int ok, const char *what) { check(ok, what); }
void screen_checks(void);

int main(void) {
    int level = vq_cpu_level();
    printf("level %d\n", level);

    /* GEMM micro-kernel: packed panels against a plain triple loop in double. */
    int mr = vq_gemm_mr(level), nr = vq_gemm_nr(level);
    int64_t kc = 67;
    float *a = random_floats(kc * mr), *b = random_floats(kc * nr);
    float *c = aligned_alloc(64, (size_t)((mr * nr * 4 + 63) / 64 * 64));
    vq_gemm_ukr(level, kc, a, b, c, nr, 0);
    double worst = 0;
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            double s = 0;
            for (int64_t p = 0; p < kc; p++) s += (double)a[p * mr + i] * b[p * nr + j];
            worst = fmax(worst, fabs(s - c[i * nr + j]));
        }
    check(worst < 1e-4, "vq_gemm_ukr against a plain product");
    printf("gemm_ukr max_error %.3g\n", worst);

    /* Packing: a copy, the same bits everywhere. */
    float *rows = random_floats(5 * 40), *packed = aligned_alloc(64, (size_t)(40 * 8 * 4 + 64));
    vq_gemm_pack_a(rows, 40, 5, 40, 8, packed);
    int pack_ok = 1;
    for (int p = 0; p < 40; p++)
        for (int i = 0; i < 8; i++) pack_ok &= packed[p * 8 + i] == (i < 5 ? rows[i * 40 + p] : 0.0f);
    check(pack_ok, "vq_gemm_pack_a");

    /* The running arg-min: against a plain scan (ties to the lowest code). */
    int64_t nrows = 13, ncols = 29;
    float *dots = random_floats(nrows * ncols), *xx = random_floats(nrows), *cc = random_floats(ncols);
    for (int64_t i = 0; i < nrows; i++) xx[i] = fabsf(xx[i]) * 4;
    for (int64_t j = 0; j < ncols; j++) cc[j] = fabsf(cc[j]) * 4;
    float best[13]; int64_t index[13];
    for (int i = 0; i < 13; i++) { best[i] = INFINITY; index[i] = -1; }
    vq_argmin_update(dots, ncols, nrows, ncols, xx, cc, 0, 0, best, index);
    int argmin_ok = 1;
    for (int64_t r = 0; r < nrows; r++) {
        float b0 = INFINITY; int64_t i0 = -1;
        for (int64_t j = 0; j < ncols; j++) {
            float s = fmaxf((xx[r] + cc[j]) + dots[r * ncols + j] * -2.0f, 1e-8f);
            if (s < b0) { b0 = s; i0 = j; }
        }
        argmin_ok &= i0 == index[r] && b0 == best[r];
    }
    check(argmin_ok, "vq_argmin_update against a plain scan");

    /* The fused tile + arg-min (where the level has one) against the tile followed by the arg-min: the same bits,
       ties and a NaN row included (both metrics, a partial tile, a row whose best is already lower). */
    for (int cosine = 0; cosine < 2; cosine++) {
        float *fa = random_floats(kc * mr), *fb = random_floats(kc * nr), *fx = random_floats(mr), *fc = random_floats(nr);
        for (int i = 0; i < mr; i++) fx[i] = fabsf(fx[i]) * 4;
        for (int j = 0; j < nr; j++) fc[j] = fabsf(fc[j]) * 4;
        for (int64_t p = 0; p < kc; p++) fb[p * nr + 2] = fb[p * nr + 1];   /* codes 1 and 2 tie */
        fa[1] = NAN;                                                        /* row 1 scores NaN */
        int cols = nr - 3, rows_used = mr - 1;
        float fbest[32], tbest[32]; int64_t fidx[32], tidx[32];
        for (int i = 0; i < mr; i++) { fbest[i] = tbest[i] = i == 2 ? -INFINITY : INFINITY; fidx[i] = tidx[i] = 7; }
        if (vq_gemm_argmin(level, kc, fa, fb, rows_used, cols, fx, fc, cosine, 64, fbest, fidx)) {
            vq_gemm_ukr(level, kc, fa, fb, c, nr, 0);
            vq_argmin_update(c, nr, rows_used, cols, fx, fc, cosine, 64, tbest, tidx);
            check(memcmp(fbest, tbest, sizeof(float) * (size_t)mr) == 0 && memcmp(fidx, tidx, 8 * (size_t)mr) == 0,
                  "vq_gemm_argmin against vq_gemm_ukr + vq_argmin_update");
        }
        /* The screen's exact rescoring (every code listed) against the tile + arg-min: the same bits — the screened
           search returns the plain search's at every level. */
        for (int i = 0; i < mr; i++) { fbest[i] = tbest[i] = i == 2 ? -INFINITY : INFINITY; fidx[i] = tidx[i] = 7; }
        vq_gemm_ukr(level, kc, fa, fb, c, nr, 0);
        vq_argmin_update(c, nr, rows_used, cols, fx, fc, cosine, 64, tbest, tidx);
        float *xr = malloc(sizeof(float) * (size_t)(mr * kc)), *cr = calloc((size_t)((64 + nr) * kc), sizeof(float));
        float *cc64 = calloc((size_t)(64 + nr), sizeof(float));
        int32_t count[32], cand[32 * 32], pairs[2 * 32 * 32]; float ps[32 * 32];
        for (int i = 0; i < mr; i++) for (int64_t p = 0; p < kc; p++) xr[i * kc + p] = fa[p * mr + i];
        for (int j = 0; j < nr; j++) { for (int64_t p = 0; p < kc; p++) cr[(64 + j) * kc + p] = fb[p * nr + j]; cc64[64 + j] = fc[j]; }
        for (int i = 0; i < rows_used; i++) { count[i] = cols; for (int j = 0; j < cols; j++) cand[i * 32 + j] = 64 + j; }
        vq_screen_finish(kc, rows_used, xr, fx, cr, cc64, cosine, count, cand, 32, fbest, fidx, pairs, pairs + 32 * 32, ps);
        check(memcmp(fbest, tbest, sizeof(float) * (size_t)mr) == 0 && memcmp(fidx, tidx, 8 * (size_t)mr) == 0,
              "vq_screen_finish against vq_gemm_ukr + vq_argmin_update");
        free(xr); free(cr); free(cc64);
        free(fa); free(fb); free(fx); free(fc);
    }

    /* "The same values at every level": hashes that must agree across machines. */
    rng_state = 0x9E3779B97F4A7C15ull;  /* the same data whatever the level's tile sizes drew above */
    int64_t n = 1000, d = 37;
    float *x = random_floats(n * d), *y = random_floats(n * d), *out = malloc((size_t)(n * d * 4));
    float *sums = malloc((size_t)n * 4);
    vq_sumsq_rows(level, x, n, d, d, sums);
    printf("sumsq_rows %016llx\n", (unsigned long long)hash_bytes(sums, (size_t)n * 4));
    vq_normalize_rows(level, x, out, n, d, 1e-6f, NULL);
    printf("normalize_rows %016llx\n", (unsigned long long)hash_bytes(out, (size_t)(n * d * 4)));
    double *sq = malloc((size_t)n * 8);
    vq_squared_differences_rows(level, x, d, y, NULL, d, n, d, sq);
    printf("squared_differences_rows %016llx\n", (unsigned long long)hash_bytes(sq, (size_t)n * 8));
    for (int op = 0; op < 4; op++) {
        vq_arith(level, op, x, 1, y, 1, out, n * d);
        printf("arith_%d %016llx\n", op, (unsigned long long)hash_bytes(out, (size_t)(n * d * 4)));
    }
    memcpy(out, x, (size_t)(n * d * 4));
    const float *srcs[2] = { y, y + d };
    vq_add_rows(level, out, srcs, 2, d);
    printf("add_rows %016llx\n", (unsigned long long)hash_bytes(out, (size_t)d * 4));
    memcpy(out, x, (size_t)(n * d * 4));
    vq_lerp(out, y, 0.2f, n * d);
    printf("lerp %016llx\n", (unsigned long long)hash_bytes(out, (size_t)(n * d * 4)));
    vq_tanh(x, out, n * d);
    printf("tanh %016llx\n", (unsigned long long)hash_bytes(out, (size_t)(n * d * 4)));
    {   /* tanh over every magnitude (2⁻¹⁴⁹ … 2¹²⁷, both signs), its branch points and the special values: the
           hash must equal every level's (fma an instruction, or checked in double at baseline x86-64). */
        enum { count = 1 << 16 };
        float *t = malloc(count * 4), *r = malloc(count * 4);
        for (int i = 0; i < count; i++) {
            const uint32_t bits = (uint32_t)(rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull) >> 1;
            memcpy(t + i, &bits, 4);
            if (i % 3 == 0) t[i] = uniform() * 12;                    /* the range where tanh is not ±1 or x */
        }
        const float edge[] = {0.0f, -0.0f, 0.625f, nextafterf(0.625f, 0), nextafterf(0.625f, 1), 9.0f, nextafterf(9.0f, 10),
                              0x1p-149f, 0x1p-126f, 0x1p-75f, 0x1p-63f, INFINITY, -INFINITY, NAN, 88.0f, -0.3f,
                              /* blocks baseline x86-64 redoes with fmaf (a double on a float midpoint): tanh, GELU */
                              0x1.62ac96p+1f, -0x1.f3dcp+1f};
        memcpy(t, edge, sizeof edge);
        vq_tanh(t, r, count);
        printf("tanh_all_magnitudes %016llx\n", (unsigned long long)hash_bytes(r, (size_t)count * 4));
        /* GELU and its gradient over the same values (the gradient against t reversed), and each in place: the same
           bits as out of place (a block the portable path redoes reads the inputs it holds, not `out`). */
        float *g = malloc(count * 4), *inplace = malloc(count * 4);
        for (int i = 0; i < count; i++) g[i] = isfinite(t[count - 1 - i]) ? t[count - 1 - i] : 1.0f;
        memcpy(inplace, t, count * 4);
        vq_tanh(inplace, inplace, count);
        check(memcmp(inplace, r, count * 4) == 0, "tanh in place");
        vq_gelu(level, t, r, count);
        printf("gelu_all_magnitudes %016llx\n", (unsigned long long)hash_bytes(r, (size_t)count * 4));
        memcpy(inplace, t, count * 4);
        vq_gelu(level, inplace, inplace, count);
        check(memcmp(inplace, r, count * 4) == 0, "gelu in place");
        vq_gelu_backward(level, t, g, r, count);
        printf("gelu_backward_all_magnitudes %016llx\n", (unsigned long long)hash_bytes(r, (size_t)count * 4));
        memcpy(inplace, t, count * 4);
        vq_gelu_backward(level, inplace, g, inplace, count);
        check(memcmp(inplace, r, count * 4) == 0, "gelu_backward in place");
        free(t); free(r); free(g); free(inplace);
    }
    int64_t *codes = malloc((size_t)n * 8), *order = malloc((size_t)n * 8);
    for (int64_t r = 0; r < n; r++) { codes[r] = r % 17; order[r] = r; }
    double *acc = calloc((size_t)(17 * d), 8);
    vq_scatter_add_rows(x, d, codes, order, n, d, acc);
    printf("scatter_add_rows %016llx\n", (unsigned long long)hash_bytes(acc, (size_t)(17 * d * 8)));

    vq_gelu(level, x, out, n * d);
    printf("gelu %016llx\n", (unsigned long long)hash_bytes(out, (size_t)(n * d * 4)));
    vq_gelu_backward(level, x, y, out, n * d);
    printf("gelu_backward %016llx\n", (unsigned long long)hash_bytes(out, (size_t)(n * d * 4)));
    {   /* FSQ's grid: levels [8, 5, 5, 5] (half widths and offsets as FSQ forms them), bounded values in (-1, 1) */
        const float halfL[4] = {3.5f, 2.0f, 2.0f, 2.0f}, offset[4] = {0.5f, 0.0f, 0.0f, 0.0f}, hw[4] = {4, 2, 2, 2};
        const float basis[4] = {1, 8, 40, 200};
        int64_t frows = 1001;
        float *ft = malloc((size_t)frows * 16);
        memcpy(ft, x, (size_t)frows * 16);
        ft[5] = NAN;
        int64_t *fidx = malloc((size_t)frows * 8);
        vq_fsq_grid(level, ft, frows, 4, halfL, offset, hw, basis, fidx);
        printf("fsq_grid %016llx %016llx\n", (unsigned long long)hash_bytes(ft, (size_t)frows * 16),
               (unsigned long long)hash_bytes(fidx, (size_t)frows * 8));
        free(ft); free(fidx);
    }
    {   /* Skinny products (a projection to 4 channels and back): "bit-identical to the Swift loops in GEMM" at every
           level; where a level has no kernel (returns 0) the Swift loop's arithmetic in plain C stands in. */
        int64_t rows = 203, k = 37, cols = 4;
        float *bcols = random_floats(cols * k), *cs = malloc((size_t)(rows * cols * 4));
        if (!vq_skinny_dots(level, rows, cols, k, x, k, bcols, cs, cols, 1, 0)) { printf("FAIL skinny_dots missing\n"); failures++; }
        printf("skinny_dots %016llx\n", (unsigned long long)hash_bytes(cs, (size_t)(rows * cols * 4)));
        /* Few rows against a long depth (weight gradients): one to six rows (the four-row blocks and their rest),
           a width with a partial block, the AVX-512 tiles and the portable one alike. */
        for (int64_t m = 1; m <= 6; m++) {
            const int64_t w = 45, depth = 203;
            float *fa = random_floats(m * depth), *facc = random_floats(m * w);
            vq_few_rows(level, m, w, depth, fa, depth, 1, x, w, facc);
            printf("few_rows_%lld %016llx\n", (long long)m, (unsigned long long)hash_bytes(facc, (size_t)(m * w * 4)));
            free(fa); free(facc);
        }
        float *b4 = random_floats(4 * 37), *start = random_floats(37), *ct = malloc((size_t)(rows * 37 * 4));
        if (!vq_tiny_depth_rows(level, rows, 37, 4, x, 4, 1, b4, start, ct, 37, 0)) {
            for (int64_t i = 0; i < rows; i++)
                for (int64_t j = 0; j < 37; j++) {
                    float acc = start[j];
                    for (int p = 0; p < 4; p++) { float prod = x[i * 4 + p] * b4[p * 37 + j]; acc = acc + prod; }
                    ct[i * 37 + j] = acc;
                }
        }
        printf("tiny_depth_rows %016llx\n", (unsigned long long)hash_bytes(ct, (size_t)(rows * 37 * 4)));
        free(bcols); free(cs); free(b4); free(start); free(ct);
    }
    screen_checks();
    {   /* vq_f4_fma_checked against fmaf: lanes it leaves unmarked equal fmaf, on random triples and near-cancellations
           c ≈ −a·b; and a double rounding by construction, which it must mark: (1 + 2⁻¹²)(1 − 4095·2⁻²⁴) = 1 + 2⁻³⁶,
           and 2²⁴ + 1 + 2⁻³⁶ rounds to the midpoint 2²⁴ + 1 in double, then to 2²⁴ (ties to even), where fmaf gives
           2²⁴ + 2. Scaled and signed variants. Where fma is an instruction nothing is marked and all lanes count. */
        int same = 1, marked = 1;
        for (int t = 0; t < 400000 && same; t++) {
            float av[4], bv[4], cv[4], rv[4];
            for (int q = 0; q < 4; q++) {
                av[q] = uniform() * 8; bv[q] = uniform() * 8;
                cv[q] = t % 2 ? uniform() : -(av[q] * bv[q]) * (1 + uniform() * 0x1p-20f);
            }
            vq_i4 risk = {0, 0, 0, 0};
            vq_f4_store(rv, vq_f4_fma_checked(vq_f4_load(av), vq_f4_load(bv), vq_f4_load(cv), &risk));
            for (int q = 0; q < 4; q++) { const float e = fmaf(av[q], bv[q], cv[q]); same &= risk[q] || memcmp(&e, rv + q, 4) == 0; }
        }
        for (int e = -20; e <= 20; e += 5) {
            const float sc = ldexpf(1.0f, e), av[4] = {(1 + 0x1p-12f) * sc, -(1 + 0x1p-12f) * sc, (1 + 0x1p-12f), 2.0f};
            const float bv[4] = {1 - 4095 * 0x1p-24f, 1 - 4095 * 0x1p-24f, -(1 - 4095 * 0x1p-24f) * sc, 3.0f};
            const float cv[4] = {0x1p24f * sc, -0x1p24f * sc, -0x1p24f * sc, 1.0f};
            float rv[4];
            vq_i4 risk = {0, 0, 0, 0};
            vq_f4_store(rv, vq_f4_fma_checked(vq_f4_load(av), vq_f4_load(bv), vq_f4_load(cv), &risk));
            for (int q = 0; q < 4; q++) {
                const float x = fmaf(av[q], bv[q], cv[q]);
                same &= risk[q] || memcmp(&x, rv + q, 4) == 0;
#if VQ_CHECKED_FMA
                marked &= q == 3 || risk[q] != 0;                      /* the three constructed lanes, not 2·3 + 1 */
#endif
            }
        }
        check(same, "vq_f4_fma_checked: unmarked lanes equal fmaf");
        check(marked, "vq_f4_fma_checked marks the double roundings");
    }
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
