// Row-wise and element-wise kernels: l2 normalisation of contiguous rows, the four arithmetic operations.
#include "vq_kernels.h"
#include "vq_simd.h"
#include <math.h>

#if defined(__x86_64__) || defined(_M_X64)
#define VQ_ROWS_X86 1
#include <immintrin.h>
#else
#define VQ_ROWS_X86 0
#endif

// Every square is rounded, then added (the Swift loops' order): no contraction into fused multiply-adds.
#pragma STDC FP_CONTRACT OFF

/* The library's sum of squares of n contiguous floats (Reduce.cascade): eight lanes over blocks of eight, the
   lanes combined ((0+4)+(2+6))+((1+5)+(3+7)), then the tail summed from 0 in order; above 256 elements the two
   halves (the first ((n/2)+7)&~7 long) separately, then added. */
static float sumsq_generic(const float *p, int64_t n) {
    if (n > 256) {
        int64_t half = ((n / 2) + 7) & ~(int64_t)7;
        return sumsq_generic(p, half) + sumsq_generic(p + half, n - half);
    }
    /* The eight lanes as two four-lane vectors (lanes 0–3 and 4–7): the same products and sums per lane. */
    vq_f4 lo = vq_f4_splat(0.0f), hi = vq_f4_splat(0.0f);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const vq_f4 x0 = vq_f4_load(p + k), x1 = vq_f4_load(p + k + 4);
        const vq_f4 s0 = x0 * x0, s1 = x1 * x1;
        lo = lo + s0;
        hi = hi + s1;
    }
    float a[8];
    vq_f4_store(a, lo);
    vq_f4_store(a + 4, hi);
    float tail = 0;
    for (; k < n; k++) {
        float sq = p[k] * p[k];
        tail = tail + sq;
    }
    return (((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))) + tail;
}

/* Swift.max(sqrt(s), eps): eps only when it compares greater or equal (a NaN norm stays NaN). */
static inline float clamp_norm(float s, float eps) {
    float r = sqrtf(s);
    return eps >= r ? eps : r;
}

/* `finite` (nullable): a row's flag is cleared when an output element is NaN or ±∞ (y·0 is NaN exactly then; the
   sum of those products is NaN when one is). */
static void normalize_generic(const float *src, float *dst, int64_t rows, int64_t d, float eps, _Bool *finite) {
    for (int64_t r = 0; r < rows; r++) {
        const float *x = src + r * d;
        float *y = dst + r * d;
        float norm = clamp_norm(sumsq_generic(x, d), eps), bad = 0;
        /* Four lanes at a time: each quotient as the scalar one; `bad` only tells whether some y·0 is NaN, which does
           not depend on the order of the sum. */
        const vq_f4 nv = vq_f4_splat(norm), zero = vq_f4_splat(0.0f);
        vq_f4 badv = zero;
        int64_t j = 0;
        for (; j + 4 <= d; j += 4) {
            const vq_f4 q = vq_f4_load(x + j) / nv;
            vq_f4_store(y + j, q);
            badv = badv + q * zero;
        }
        for (; j < d; j++) {
            y[j] = x[j] / norm;
            bad = bad + y[j] * 0.0f;
        }
        bad = bad + ((badv[0] + badv[1]) + (badv[2] + badv[3]));
        if (finite && bad != bad) finite[r] = 0;
    }
}

static void sumsq_rows_generic(const float *x, int64_t rows, int64_t d, int64_t ld, float *out) {
    for (int64_t r = 0; r < rows; r++) out[r] = sumsq_generic(x + r * ld, d);
}

#if VQ_ROWS_X86
/* The eight lanes as one vector; four rows at a time so that the four dependent add chains overlap. */
__attribute__((target("avx2")))
static void sumsq4_avx2(const float *x, int64_t ld, int64_t n, float out[4]) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 v0 = _mm256_loadu_ps(x + k), v1 = _mm256_loadu_ps(x + ld + k);
        __m256 v2 = _mm256_loadu_ps(x + 2 * ld + k), v3 = _mm256_loadu_ps(x + 3 * ld + k);
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(v0, v0));
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(v1, v1));
        a2 = _mm256_add_ps(a2, _mm256_mul_ps(v2, v2));
        a3 = _mm256_add_ps(a3, _mm256_mul_ps(v3, v3));
    }
    __m256 acc[4] = {a0, a1, a2, a3};
    for (int r = 0; r < 4; r++) {
        float a[8];
        _mm256_storeu_ps(a, acc[r]);
        float tail = 0;
        for (int64_t j = k; j < n; j++) {
            float sq = x[r * ld + j] * x[r * ld + j];
            tail = tail + sq;
        }
        out[r] = (((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))) + tail;
    }
}

__attribute__((target("avx2")))
static void normalize_avx2(const float *src, float *dst, int64_t rows, int64_t d, float eps, _Bool *finite) {
    int64_t r = 0;
    if (d <= 256) {
        for (; r + 4 <= rows; r += 4) {
            float s[4];
            sumsq4_avx2(src + r * d, d, d, s);
            for (int i = 0; i < 4; i++) {
                const float *x = src + (r + i) * d;
                float *y = dst + (r + i) * d;
                float norm = clamp_norm(s[i], eps), badTail = 0;
                __m256 nv = _mm256_set1_ps(norm), bad = _mm256_setzero_ps(), zero = _mm256_setzero_ps();
                int64_t j = 0;
                for (; j + 8 <= d; j += 8) {
                    __m256 q = _mm256_div_ps(_mm256_loadu_ps(x + j), nv);
                    _mm256_storeu_ps(y + j, q);
                    bad = _mm256_add_ps(bad, _mm256_mul_ps(q, zero));
                }
                for (; j < d; j++) {
                    y[j] = x[j] / norm;
                    badTail = badTail + y[j] * 0.0f;
                }
                if (finite && (_mm256_movemask_ps(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q)) != 0 || badTail != badTail))
                    finite[r + i] = 0;
            }
        }
    }
    normalize_generic(src + r * d, dst + r * d, rows - r, d, eps, finite ? finite + r : NULL);
}

__attribute__((target("avx2")))
static void sumsq_rows_avx2(const float *x, int64_t rows, int64_t d, int64_t ld, float *out) {
    int64_t r = 0;
    if (d <= 256)
        for (; r + 4 <= rows; r += 4) sumsq4_avx2(x + r * ld, ld, d, out + r);
    sumsq_rows_generic(x + r * ld, rows - r, d, ld, out + r);
}
#endif

void vq_normalize_rows(int level, const float *src, float *dst, int64_t rows, int64_t d, float eps, _Bool *finite) {
#if VQ_ROWS_X86
    if (level >= 1) { normalize_avx2(src, dst, rows, d, eps, finite); return; }
#else
    (void)level;
#endif
    normalize_generic(src, dst, rows, d, eps, finite);
}

void vq_sumsq_rows(int level, const float *x, int64_t rows, int64_t d, int64_t ld, float *out) {
#if VQ_ROWS_X86
    if (level >= 1) { sumsq_rows_avx2(x, rows, d, ld, out); return; }
#else
    (void)level;
#endif
    sumsq_rows_generic(x, rows, d, ld, out);
}

/* Row squared differences Σ_j (a_j − b_j)² in double: each difference rounded to float, squared exactly in
   double; eight lanes over blocks of eight (lane i: elements i, i+8, … in order), the lanes combined
   ((0+4)+(2+6))+((1+5)+(3+7)), then the tail (d mod 8 elements, summed from 0 in order) added. Row r of b is at
   b + (index ? index[r] : r)·ldb. */
static double row_sqdiff_generic(const float *a, const float *b, int64_t d) {
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k = 0;
    for (; k + 8 <= d; k += 8)
        for (int i = 0; i < 8; i++) {
            const double e = (double)(a[k + i] - b[k + i]);
            l[i] = l[i] + e * e;
        }
    double tail = 0;
    for (; k < d; k++) {
        const double e = (double)(a[k] - b[k]);
        tail = tail + e * e;
    }
    return (((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))) + tail;
}

static void sqdiff_rows_generic(const float *a, int64_t lda, const float *b, const int64_t *index, int64_t ldb,
                                int64_t rows, int64_t d, double *out) {
    for (int64_t r = 0; r < rows; r++) out[r] = row_sqdiff_generic(a + r * lda, b + (index ? index[r] : r) * ldb, d);
}

#if VQ_ROWS_X86
/* Two rows at a time (four independent add chains: lanes 0–3 and 4–7 of each row). */
__attribute__((target("avx2")))
static void sqdiff_rows_avx2(const float *a, int64_t lda, const float *b, const int64_t *index, int64_t ldb,
                             int64_t rows, int64_t d, double *out) {
    int64_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        const float *a0 = a + r * lda, *a1 = a0 + lda;
        const float *b0 = b + (index ? index[r] : r) * ldb, *b1 = b + (index ? index[r + 1] : r + 1) * ldb;
        __m256d x0 = _mm256_setzero_pd(), y0 = x0, x1 = x0, y1 = x0;
        int64_t k = 0;
        for (; k + 8 <= d; k += 8) {
            const __m256 e0 = _mm256_sub_ps(_mm256_loadu_ps(a0 + k), _mm256_loadu_ps(b0 + k));
            const __m256 e1 = _mm256_sub_ps(_mm256_loadu_ps(a1 + k), _mm256_loadu_ps(b1 + k));
            const __m256d e0l = _mm256_cvtps_pd(_mm256_castps256_ps128(e0)), e0h = _mm256_cvtps_pd(_mm256_extractf128_ps(e0, 1));
            const __m256d e1l = _mm256_cvtps_pd(_mm256_castps256_ps128(e1)), e1h = _mm256_cvtps_pd(_mm256_extractf128_ps(e1, 1));
            x0 = _mm256_add_pd(x0, _mm256_mul_pd(e0l, e0l));
            y0 = _mm256_add_pd(y0, _mm256_mul_pd(e0h, e0h));
            x1 = _mm256_add_pd(x1, _mm256_mul_pd(e1l, e1l));
            y1 = _mm256_add_pd(y1, _mm256_mul_pd(e1h, e1h));
        }
        double l[2][8];
        _mm256_storeu_pd(l[0], x0); _mm256_storeu_pd(l[0] + 4, y0);
        _mm256_storeu_pd(l[1], x1); _mm256_storeu_pd(l[1] + 4, y1);
        const float *as[2] = {a0, a1}, *bs[2] = {b0, b1};
        for (int q = 0; q < 2; q++) {
            double tail = 0;
            for (int64_t j = k; j < d; j++) {
                const double e = (double)(as[q][j] - bs[q][j]);
                tail = tail + e * e;
            }
            const double *v = l[q];
            out[r + q] = (((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))) + tail;
        }
    }
    sqdiff_rows_generic(a + r * lda, lda, index ? b : b + r * ldb, index ? index + r : NULL, ldb, rows - r, d, out + r);
}
#endif

void vq_squared_differences_rows(int level, const float *a, int64_t lda, const float *b, const int64_t *index, int64_t ldb,
                                 int64_t rows, int64_t d, double *out) {
#if VQ_ROWS_X86
    if (level >= 1) { sqdiff_rows_avx2(a, lda, b, index, ldb, rows, d, out); return; }
#else
    (void)level;
#endif
    sqdiff_rows_generic(a, lda, b, index, ldb, rows, d, out);
}

/* y[o] = (((y[o] + src[0][o]) + src[1][o]) + …) over `count` rows of `width`: one IEEE addition per element and row,
   in row order (registers hold a block of y while every row is added). */
static void add_rows_generic(float *y, const float *const *src, int64_t count, int64_t width) {
    for (int64_t r = 0; r < count; r++)
        for (int64_t o = 0; o < width; o++) y[o] = y[o] + src[r][o];
}

#if VQ_ROWS_X86
__attribute__((target("avx2")))
static void add_rows_avx2(float *y, const float *const *src, int64_t count, int64_t width) {
    int64_t o = 0;
    for (; o + 32 <= width; o += 32) {
        __m256 a0 = _mm256_loadu_ps(y + o), a1 = _mm256_loadu_ps(y + o + 8);
        __m256 a2 = _mm256_loadu_ps(y + o + 16), a3 = _mm256_loadu_ps(y + o + 24);
        for (int64_t r = 0; r < count; r++) {
            const float *s = src[r] + o;
            a0 = _mm256_add_ps(a0, _mm256_loadu_ps(s));
            a1 = _mm256_add_ps(a1, _mm256_loadu_ps(s + 8));
            a2 = _mm256_add_ps(a2, _mm256_loadu_ps(s + 16));
            a3 = _mm256_add_ps(a3, _mm256_loadu_ps(s + 24));
        }
        _mm256_storeu_ps(y + o, a0); _mm256_storeu_ps(y + o + 8, a1);
        _mm256_storeu_ps(y + o + 16, a2); _mm256_storeu_ps(y + o + 24, a3);
    }
    for (; o < width; o++)
        for (int64_t r = 0; r < count; r++) y[o] = y[o] + src[r][o];
}
#endif

void vq_add_rows(int level, float *y, const float *const *src, int64_t count, int64_t width) {
#if VQ_ROWS_X86
    if (level >= 1) { add_rows_avx2(y, src, count, width); return; }
#else
    (void)level;
#endif
    add_rows_generic(y, src, count, width);
}

/* Element-wise a ∘ b for op 0 +, 1 −, 2 ×, 3 ÷; a step of 0 repeats an operand's first element. One IEEE
   operation per element: the same values at every level and vector width. */
#define ARITH_LOOP(EXPR)                                                                                   \
    if (sa == 1 && sb == 1) { for (int64_t i = 0; i < n; i++) { const float x = a[i], y = b[i]; out[i] = EXPR; } } \
    else if (sa == 1) { const float y = b[0]; for (int64_t i = 0; i < n; i++) { const float x = a[i]; out[i] = EXPR; } } \
    else { const float x = a[0]; for (int64_t i = 0; i < n; i++) { const float y = b[i]; out[i] = EXPR; } }

/* One body, compiled twice: portable, and inlined into an AVX2 entry point (vector width only). */
static inline __attribute__((always_inline)) void arith_body(int op, const float *a, int64_t sa, const float *b, int64_t sb,
                                                             float *out, int64_t n) {
    switch (op) {
    case 0: ARITH_LOOP(x + y) break;
    case 1: ARITH_LOOP(x - y) break;
    case 2: ARITH_LOOP(x * y) break;
    default: ARITH_LOOP(x / y) break;
    }
}

static void arith_generic(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out, int64_t n) {
    arith_body(op, a, sa, b, sb, out, n);
}

#if VQ_ROWS_X86
__attribute__((target("avx2")))
static void arith_avx2(int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out, int64_t n) {
    arith_body(op, a, sa, b, sb, out, n);
}
#endif
#undef ARITH_LOOP

void vq_arith(int level, int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out, int64_t n) {
#if VQ_ROWS_X86
    if (level >= 1) { arith_avx2(op, a, sa, b, sb, out, n); return; }
#else
    (void)level;
#endif
    arith_generic(op, a, sa, b, sb, out, n);
}
