/* The screen's last step: the exact float scores of the codes a screen listed, with the float tiles' own arithmetic
   (one fused multiply-add chain per dot product), so the screened search returns the plain search's bits. */
#include "screen_impl.h"
#include "vq_simd.h"
#include <string.h>

/* Dot products of m (row, code) pairs as the float tile forms them: each one multiply-add chain over the depth
   from 0. Portable: eight chains interleaved, one element of each per step, with the portable tile's multiply-add
   (ukr_generic's `t + a·b`): fused where the target has the instruction (AArch64, which contracts it to FMLA),
   a product and a sum at baseline x86-64 (SSE2) — so the level-0 screen returns the level-0 search's bits. */
#if VQ_NATIVE_FMA
#define MADD(t, x, c) __builtin_fmaf((x), (c), (t))
#else
#define MADD(t, x, c) ((t) + (x) * (c))
#endif
static void pair_dots_scalar(int64_t d, int64_t m, const float *x, const float *codes, const int32_t *pair_row,
                             const int32_t *pair_code, float *dots) {
    for (int64_t q0 = 0; q0 < m; q0 += 8) {
        const int w = m - q0 < 8 ? (int)(m - q0) : 8;
        const float *xr[8], *cr[8];
        float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int q = 0; q < 8; q++) {
            const int64_t e = q0 + (q < w ? q : 0);
            xr[q] = x + (int64_t)pair_row[e] * d;
            cr[q] = codes + (int64_t)pair_code[e] * d;
        }
        for (int64_t p = 0; p < d; p++)
            for (int q = 0; q < 8; q++) t[q] = MADD(t[q], xr[q][p], cr[q][p]);
        for (int q = 0; q < w; q++) dots[q0 + q] = t[q];
    }
}

#if VQ_X86
/* Eight rows of eight floats to eight columns: r[j] lane q = input row q's element j. */
__attribute__((target("avx2"), always_inline))
static inline void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20); r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20); r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31); r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31); r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* The same chains, sixteen pairs at a time (two vectors of eight): blocks of eight depth steps are loaded as rows
   and transposed so that one vector FMA advances eight chains by one step (a gather per element before). */
__attribute__((target("avx2,fma")))
static void pair_dots_avx2(int64_t d, int64_t m, const float *x, const float *codes, const int32_t *pair_row,
                           const int32_t *pair_code, float *dots) {
    for (int64_t q0 = 0; q0 < m; q0 += 16) {
        const int w = m - q0 < 16 ? (int)(m - q0) : 16;
        const float *xr[16], *cr[16];
        for (int q = 0; q < 16; q++) {
            const int64_t e = q0 + (q < w ? q : 0);
            xr[q] = x + (int64_t)pair_row[e] * d;
            cr[q] = codes + (int64_t)pair_code[e] * d;
        }
        __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
        int64_t p = 0;
        for (; p + 8 <= d; p += 8) {
            __m256 a0[8], b0[8], a1[8], b1[8];
            for (int q = 0; q < 8; q++) {
                a0[q] = _mm256_loadu_ps(xr[q] + p); b0[q] = _mm256_loadu_ps(cr[q] + p);
                a1[q] = _mm256_loadu_ps(xr[q + 8] + p); b1[q] = _mm256_loadu_ps(cr[q + 8] + p);
            }
            transpose8(a0); transpose8(b0); transpose8(a1); transpose8(b1);
            for (int j = 0; j < 8; j++) {
                t0 = _mm256_fmadd_ps(a0[j], b0[j], t0);
                t1 = _mm256_fmadd_ps(a1[j], b1[j], t1);
            }
        }
        float t[16];
        _mm256_storeu_ps(t, t0);
        _mm256_storeu_ps(t + 8, t1);
        for (; p < d; p++)
            for (int q = 0; q < 16; q++) t[q] = __builtin_fmaf(xr[q][p], cr[q][p], t[q]);
        for (int q = 0; q < w; q++) dots[q0 + q] = t[q];
    }
}
#endif

/* The second filter's dot products: each pair's summed lane-wise — four vectors of partial sums, their lanes, then
   a scalar tail — another order than the chains, but no transposes: several times cheaper per pair than
   pair_dots_avx2. One body for the portable vectors and AVX2's (whose products the compiler may fuse: any order and
   either rounding is within the filter's bound). */
#define PAIR_DOTS_LANES(NAME, ATTR, VT, LANES)                                                                          \
ATTR static void NAME(int64_t d, int64_t m, const float *x, const float *codes, const int32_t *pair_row,               \
                      const int32_t *pair_code, float *dots) {                                                         \
    for (int64_t e = 0; e < m; e++) {                                                                                  \
        const float *xr = x + (int64_t)pair_row[e] * d, *cr = codes + (int64_t)pair_code[e] * d;                       \
        VT t[4] = {{0}, {0}, {0}, {0}}, xv, cv;                                                                        \
        int64_t p = 0;                                                                                                 \
        for (; p + 4 * LANES <= d; p += 4 * LANES)                                                                     \
            for (int v = 0; v < 4; v++) {                                                                              \
                memcpy(&xv, xr + p + v * LANES, sizeof xv);                                                            \
                memcpy(&cv, cr + p + v * LANES, sizeof cv);                                                            \
                t[v] += xv * cv;                                                                                       \
            }                                                                                                          \
        const VT all = (t[0] + t[1]) + (t[2] + t[3]);                                                                  \
        float sum = 0.0f;                                                                                              \
        for (int q = 0; q < LANES; q++) sum += all[q];                                                                 \
        for (; p < d; p++) sum += xr[p] * cr[p];                                                                       \
        dots[e] = sum;                                                                                                 \
    }                                                                                                                  \
}
PAIR_DOTS_LANES(pair_dots_lanes_vec, , vq_f4, 4)
#if VQ_X86
typedef float vq_f8 __attribute__((vector_size(32)));
PAIR_DOTS_LANES(pair_dots_lanes_avx2, __attribute__((target("avx2,fma"))), vq_f8, 8)
#endif

/* The screen's second filter, for rows with several listed codes: their scores from dot products summed in another
   order (pair_dots_lanes_*), which differ from the chains' by at most 2γ_d·Σ|xᵢcᵢ| ≤ d·2⁻²³·(1 + 2⁻¹⁵)‖x‖‖c‖
   (Higham, §3.1: any order, products rounded or fused) plus d·2⁻¹⁵⁰ for products that underflow. With
   E = (d + 8)·2⁻²²·‖x‖‖c‖ + 2⁻¹²⁰ (twice that, with room for the roundings of the norms' product) a score is within
   B = 2E + 2⁻²⁰(‖x‖² + ‖c‖²) of the chain's (cosine: E) — the sum with the squared norms and the bounds' own
   roundings being ≤ 2⁻²²(‖x‖² + ‖c‖²) — and a row keeps, in code order, the codes whose score − B is ≤ its least
   score + B: the chain's nearest and every code tied with it are among them. Returns the pairs kept, compacted (the
   chains then run on those alone: ~1 a row instead of the screen's several). */
static int64_t second_filter(int avx2, int64_t d, int64_t m, const float *x, const float *xx, const float *codes,
                             const float *cc, int cosine, int32_t *pair_row, int32_t *pair_code, float *score) {
#if VQ_X86
    if (avx2) pair_dots_lanes_avx2(d, m, x, codes, pair_row, pair_code, score);
    else
#endif
        pair_dots_lanes_vec(d, m, x, codes, pair_row, pair_code, score);
    (void)avx2;
    int64_t kept = 0;
    for (int64_t e0 = 0; e0 < m;) {
        const int32_t i = pair_row[e0];
        int64_t e1 = e0;
        float least = INFINITY;
        for (; e1 < m && pair_row[e1] == i; e1++) {
            const float t = score[e1], sq = xx[i] + cc[pair_code[e1]];
            const float err = (float)(d + 8) * 0x1p-22f * (sqrtf(xx[i]) * sqrtf(cc[pair_code[e1]])) + 0x1p-120f;
            float sc, b;
            if (cosine) {
                sc = -t;
                b = err;
            } else {
                const float v = sq + t * -2.0f;
                sc = 1e-8f > v ? 1e-8f : v;
                b = 2.0f * err + 0x1p-20f * sq;
            }
            score[e1] = sc - b;   /* the lower bound; the upper one folded into the row's least */
            least = sc + b < least ? sc + b : least;
        }
        for (int64_t e = e0; e < e1; e++)
            if (score[e] <= least) { pair_row[kept] = pair_row[e]; pair_code[kept] = pair_code[e]; kept++; }
        e0 = e1;
    }
    return kept;
}

/* The exact float scores of the listed codes of `rows` rows (row i at x + i·d, its list at cand + i·cap, count[i]
   entries, −1 = left to the plain search), as gemm_argmin_avx512 / vq_gemm_ukr + argmin form them at levels ≥ 1:
   each dot product one fused multiply-add chain over the depth (d ≤ the GEMM's depth block). Each row then takes
   its scores in list order (code order) with strict improvement. */
void vq_prefetch_l2(const void *p, int64_t bytes) {
#if VQ_X86
    const char *c = (const char *)p;
    for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(c + o, _MM_HINT_T1);
#else
    (void)p; (void)bytes;
#endif
}

void vq_screen_prefetch_candidates(const float *codes, int64_t d, int rows, const int32_t *count, const int32_t *cand, int cap) {
    for (int i = 0; i < rows; i++)
        for (int32_t t = 0; t < count[i]; t++) vq_prefetch_l2(codes + (int64_t)cand[i * cap + t] * d, d * 4);
}

void vq_screen_finish(int64_t d, int64_t rows, const float *x, const float *xx, const float *codes, const float *cc,
                      int cosine, const int32_t *count, const int32_t *cand, int cap, float *best, int64_t *best_index,
                      int32_t *pair_row, int32_t *pair_code, float *pair_score) {
    int64_t m = 0, listed = 0;
    for (int64_t i = 0; i < rows; i++) listed += count[i] >= 0;
    for (int64_t i = 0; i < rows; i++)
        for (int32_t t = 0; t < count[i]; t++) { pair_row[m] = (int32_t)i; pair_code[m] = cand[i * cap + t]; m++; }
    int avx2 = 0;
#if VQ_X86
    static int level = -1;
    if (level < 0) level = vq_cpu_level();
    avx2 = level >= 1;
#endif
    if (m > listed) m = second_filter(avx2, d, m, x, xx, codes, cc, cosine, pair_row, pair_code, pair_score);
#if VQ_X86
    if (avx2) pair_dots_avx2(d, m, x, codes, pair_row, pair_code, pair_score);
    else
#endif
        pair_dots_scalar(d, m, x, codes, pair_row, pair_code, pair_score);
    for (int64_t e = 0; e < m; e++) {
        const float t = pair_score[e];
        float sc;
        if (cosine) {
            sc = -t;
        } else {
            const float v = (xx[pair_row[e]] + cc[pair_code[e]]) + t * -2.0f;
            sc = 1e-8f > v ? 1e-8f : v;
        }
        pair_score[e] = sc;
    }
    for (int64_t e = 0; e < m; e++) {
        const int32_t i = pair_row[e];
        if (pair_score[e] < best[i]) { best[i] = pair_score[e]; best_index[i] = pair_code[e]; }
    }
}
