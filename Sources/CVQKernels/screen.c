/* Nearest-code screening with BF16 dot products: a cheap pass that keeps, for each query row, every code that
   could be its exact (float) nearest, and a rescoring of those few codes with the float arithmetic of the
   AVX2 / AVX-512 nearest-code tiles. The bound that makes the screen exact is derived in
   NearestCode+Screening.swift; the constants below are its terms. */
#include "vq_kernels.h"
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>
#endif

#define SCREEN_ALPHA (0x1p-6f + 0x1p-12f) /* × ‖x‖‖c‖: BF16 rounding of both factors, both sums' rounding */
#define SCREEN_BETA 0x1p-21f              /* × (‖x‖² + ‖c‖²): rounding of the scores and of the bounds */
#define SCREEN_TAU 0x1p-110f              /* × (1 + ‖x‖ + ‖c‖): denormals flushed by the BF16 unit */

/* BF16 bits of a float, rounded to nearest even; NaN stays NaN. */
static inline uint32_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

static inline float bf16_float(uint32_t h) {
    uint32_t u = (h & 0xffffu) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#if VQ_X86
/* The same layout with the BF16 unit's conversion (VCVTNE2PS2BF16: nearest even; it may flush denormals, which
   the bound allows for). A row's BF16 values in order are its pairs. */
__attribute__((target("avx512f,avx512bf16")))
static void bf16_pack_avx512(const float *x, int64_t ld, int64_t rows, int64_t d, int64_t width, uint32_t *dst) {
    const int64_t pairs = (d + 1) / 2;
    uint32_t row[256];
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = x + i * ld;
        for (int64_t p = 0; p < d; p += 32) {
            const int64_t r = d - p;
            const __mmask16 m0 = r >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << r) - 1);
            const __mmask16 m1 = r >= 32 ? (__mmask16)0xFFFF : (r <= 16 ? 0 : (__mmask16)((1u << (r - 16)) - 1));
            const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, xi + p + 16), _mm512_maskz_loadu_ps(m0, xi + p));
            _mm512_storeu_si512((void *)(row + p / 2), (__m512i)v);
        }
        for (int64_t p = 0; p < pairs; p++) dst[p * width + i] = row[p];
    }
    for (int64_t p = 0; p < pairs; p++)
        for (int64_t i = rows; i < width; i++) dst[p * width + i] = 0;
}
#endif

void vq_bf16_pack(int native, const float *x, int64_t ld, int64_t rows, int64_t d, int64_t width, uint32_t *dst) {
#if VQ_X86
    if (native && d <= 512) { bf16_pack_avx512(x, ld, rows, d, width, dst); return; }
#endif
    (void)native;
    const int64_t pairs = (d + 1) / 2;
    for (int64_t p = 0; p < pairs; p++) {
        uint32_t *out = dst + p * width;
        for (int64_t i = 0; i < rows; i++) {
            const float *xi = x + i * ld + 2 * p;
            const uint32_t hi = 2 * p + 1 < d ? bf16_bits(xi[1]) : 0;
            out[i] = bf16_bits(xi[0]) | (hi << 16);
        }
        for (int64_t i = rows; i < width; i++) out[i] = 0;
    }
}

void vq_screen_terms(const float *sq, int64_t n, int cosine, float *norm, float *term) {
    for (int64_t i = 0; i < n; i++) {
        const float r = sqrtf(sq[i]);
        norm[i] = r;
        term[i] = (cosine ? 0.0f : SCREEN_BETA * sq[i]) + SCREEN_TAU * (1.0f + r);
    }
}

/* Appends a candidate; a full list first drops what the current bound excludes, and a list still full marks
   the row for the plain search (count −1). */
static inline void push(int32_t *count, int32_t *cand, float *low, int cap, float bound, int32_t code, float lo) {
    int32_t n = *count;
    if (n < 0) return;
    if (n == cap) {
        int32_t m = 0;
        for (int32_t t = 0; t < n; t++)
            if (low[t] <= bound) { cand[m] = cand[t]; low[m] = low[t]; m++; }
        n = m;
        if (n == cap) { *count = -1; return; }
    }
    cand[n] = code;
    low[n] = lo;
    *count = n + 1;
}

/* One row of a screened tile, scalar: `dots[j]` are the BF16 dot products of the row with codes j < cols. */
static void screen_row_scalar(const float *dots, int cols, float x2, float xn, float rowterm, const float *cc,
                              const float *cn, const float *cterm, int cosine, int64_t code_base, float *bound,
                              int32_t *count, int32_t *cand, float *low, int cap) {
    if (*count < 0) return;
    const float a = SCREEN_ALPHA * xn;
    float lo[32];
    float u = *bound;
    for (int j = 0; j < cols; j++) {
        float s;
        if (cosine) {
            s = -dots[j];
        } else {
            const float t = (x2 + cc[j]) + dots[j] * -2.0f;
            s = 1e-8f > t ? 1e-8f : t;
        }
        const float b = fmaf(a, cn[j], rowterm + cterm[j]);
        const float up = s + b;
        lo[j] = s - b;
        if (up < u) u = up;
    }
    *bound = u;
    for (int j = 0; j < cols; j++)
        if (lo[j] <= u) push(count, cand, low, cap, u, (int32_t)(code_base + j), lo[j]);
}

/* Portable emulation of the BF16 tile (the same rounded factors, exact products, float sums), so the screen's
   bookkeeping is tested on machines without BF16 units. */
static void screen_tile_emulated(int64_t pairs, const uint32_t *a, const uint32_t *b, int rows, int cols,
                                 const float *xx, const float *xn, const float *rowterm, const float *cc,
                                 const float *cn, const float *cterm, int cosine, int64_t code_base, float *bound,
                                 int32_t *count, int32_t *cand, float *low, int cap) {
    float t[12][32];
    memset(t, 0, sizeof t);
    for (int64_t k = 0; k < pairs; k++)
        for (int i = 0; i < rows; i++) {
            const uint32_t ap = a[k * 12 + i];
            const float alo = bf16_float(ap), ahi = bf16_float(ap >> 16);
            for (int j = 0; j < cols; j++) {
                const uint32_t bp = b[k * 32 + j];
                const float plo = alo * bf16_float(bp), phi = ahi * bf16_float(bp >> 16);
                t[i][j] += phi;
                t[i][j] += plo;
            }
        }
    for (int i = 0; i < rows; i++)
        screen_row_scalar(t[i], cols, xx[i], xn[i], rowterm[i], cc, cn, cterm, cosine, code_base, bound + i,
                          count + i, cand + (int64_t)i * cap, low + (int64_t)i * cap, cap);
}

#if VQ_X86
/* The 12 × 32 tile with VDPBF16PS (two BF16 products per lane and step, float sums): twice the products
   per instruction of the float tile. The epilogue keeps the running bound and the candidates per row. */
__attribute__((target("avx512f,avx512bf16")))
static void screen_tile_bf16(int64_t pairs, const uint32_t *a, const uint32_t *b, int rows, int cols,
                             const float *xx, const float *xn, const float *rowterm, const float *cc,
                             const float *cn, const float *cterm, int cosine, int64_t code_base, float *bound,
                             int32_t *count, int32_t *cand, float *low, int cap) {
    __m512 t[12][2];
    for (int i = 0; i < 12; i++) t[i][0] = t[i][1] = _mm512_setzero_ps();
    #pragma GCC unroll 4
    for (int64_t k = 0; k < pairs; k++) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(b + k * 32));
        const __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(b + k * 32 + 16));
        for (int i = 0; i < 12; i++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int32_t)a[k * 12 + i]);
            t[i][0] = _mm512_dpbf16_ps(t[i][0], av, b0);
            t[i][1] = _mm512_dpbf16_ps(t[i][1], av, b1);
        }
    }
    const __mmask16 l0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
    const __mmask16 l1 = cols >= 32 ? (__mmask16)0xFFFF : (cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1));
    const __m512 eps = _mm512_set1_ps(1e-8f), m2 = _mm512_set1_ps(-2.0f), inf = _mm512_set1_ps(INFINITY);
    const __m512 cc0 = _mm512_loadu_ps(cc), cc1 = _mm512_loadu_ps(cc + 16);
    const __m512 cn0 = _mm512_loadu_ps(cn), cn1 = _mm512_loadu_ps(cn + 16);
    const __m512 ct0 = _mm512_loadu_ps(cterm), ct1 = _mm512_loadu_ps(cterm + 16);
    float lanes[32];
    for (int i = 0; i < rows; i++) {
        if (count[i] < 0) continue;
        __m512 s0, s1;
        if (cosine) {
            s0 = _mm512_sub_ps(_mm512_setzero_ps(), t[i][0]);
            s1 = _mm512_sub_ps(_mm512_setzero_ps(), t[i][1]);
        } else {
            const __m512 x2 = _mm512_set1_ps(xx[i]);
            s0 = _mm512_max_ps(eps, _mm512_add_ps(_mm512_add_ps(x2, cc0), _mm512_mul_ps(t[i][0], m2)));
            s1 = _mm512_max_ps(eps, _mm512_add_ps(_mm512_add_ps(x2, cc1), _mm512_mul_ps(t[i][1], m2)));
        }
        const __m512 av = _mm512_set1_ps(SCREEN_ALPHA * xn[i]), rt = _mm512_set1_ps(rowterm[i]);
        const __m512 b0 = _mm512_fmadd_ps(av, cn0, _mm512_add_ps(rt, ct0));
        const __m512 b1 = _mm512_fmadd_ps(av, cn1, _mm512_add_ps(rt, ct1));
        const __m512 up = _mm512_min_ps(_mm512_mask_blend_ps(l0, inf, _mm512_add_ps(s0, b0)),
                                        _mm512_mask_blend_ps(l1, inf, _mm512_add_ps(s1, b1)));
        float u = bound[i];
        if (_mm512_cmp_ps_mask(up, _mm512_set1_ps(u), _CMP_LT_OQ)) {
            const float m = _mm512_reduce_min_ps(up);
            if (m < u) u = m;
            bound[i] = u;
        }
        const __m512 lo0 = _mm512_sub_ps(s0, b0), lo1 = _mm512_sub_ps(s1, b1), uv = _mm512_set1_ps(u);
        const __mmask16 h0 = _mm512_mask_cmp_ps_mask(l0, lo0, uv, _CMP_LE_OQ);
        const __mmask16 h1 = _mm512_mask_cmp_ps_mask(l1, lo1, uv, _CMP_LE_OQ);
        if (h0 | h1) {
            _mm512_storeu_ps(lanes, lo0);
            _mm512_storeu_ps(lanes + 16, lo1);
            uint32_t h = (uint32_t)h0 | ((uint32_t)h1 << 16);
            while (h) {
                const int j = __builtin_ctz(h);
                h &= h - 1;
                push(count + i, cand + (int64_t)i * cap, low + (int64_t)i * cap, cap, u, (int32_t)(code_base + j),
                     lanes[j]);
            }
        }
    }
}
#endif

void vq_screen_tile(int native, int64_t pairs, const uint32_t *a, const uint32_t *b, int rows, int cols,
                    const float *xx, const float *xn, const float *rowterm, const float *cc, const float *cn,
                    const float *cterm, int cosine, int64_t code_base, float *bound, int32_t *count, int32_t *cand,
                    float *low, int cap) {
#if VQ_X86
    if (native) {
        screen_tile_bf16(pairs, a, b, rows, cols, xx, xn, rowterm, cc, cn, cterm, cosine, code_base, bound, count,
                         cand, low, cap);
        return;
    }
#endif
    (void)native;
    screen_tile_emulated(pairs, a, b, rows, cols, xx, xn, rowterm, cc, cn, cterm, cosine, code_base, bound, count,
                         cand, low, cap);
}

/* The exact float scores of the listed codes of `rows` rows (row i at x + i·d, its list at cand + i·cap, low + i·cap,
   count[i] entries, −1 = left to the plain search), as gemm_argmin_avx512 / vq_gemm_ukr + argmin form them at
   levels ≥ 1: each dot product one fused multiply-add chain over the depth (d ≤ the GEMM's depth block). The
   chains of eight (row, code) pairs run interleaved; each row then takes its scores in list order (code order)
   with strict improvement. */
#if VQ_X86
__attribute__((target("avx2,fma")))
#endif
void vq_screen_finish(int64_t d, int64_t rows, const float *x, const float *xx, const float *codes, const float *cc,
                      int cosine, const int32_t *count, const int32_t *cand, const float *low, int cap,
                      const float *bound, float *best, int64_t *best_index, int32_t *pair_row, int32_t *pair_code,
                      float *pair_score) {
    int64_t m = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int32_t t = 0; t < count[i]; t++)
            if (low[i * cap + t] <= bound[i]) { pair_row[m] = (int32_t)i; pair_code[m] = cand[i * cap + t]; m++; }
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
            for (int q = 0; q < 8; q++) t[q] = __builtin_fmaf(xr[q][p], cr[q][p], t[q]);
        for (int q = 0; q < w; q++) {
            const int64_t e = q0 + q;
            float sc;
            if (cosine) {
                sc = -t[q];
            } else {
                const float v = (xx[pair_row[e]] + cc[pair_code[e]]) + t[q] * -2.0f;
                sc = 1e-8f > v ? 1e-8f : v;
            }
            pair_score[e] = sc;
        }
    }
    for (int64_t e = 0; e < m; e++) {
        const int32_t i = pair_row[e];
        if (pair_score[e] < best[i]) { best[i] = pair_score[e]; best_index[i] = pair_code[e]; }
    }
}
