/* Skinny products — projections to and from a few channels (FSQ's and LFQ's `dim → 4 → dim`) and their
   gradients — on the vector units. Every product is rounded, then added (no fused multiply-add), in the same order
   for every element at every level (the Swift loops these replaced), so results are bit-identical across levels,
   machines and thread counts; the portable and AVX2 versions of a kernel are one body at two vector widths. */
#include "vq_kernels.h"
#include "vq_simd.h"

/* Products and sums stay separate roundings, as in Swift: no contraction into fused multiply-adds. */
#pragma STDC FP_CONTRACT OFF

/* AVX2's vector of the kernels written once for either width. */
typedef float vq_f8 __attribute__((vector_size(32)));

/* Calls BODY(rows, N, k, a, ars, bcols, c, crs, ccs, accumulate) with N = n as a constant (1…8), so that each width
   compiles with its partial sums in registers; nothing for another n. */
#define SKINNY_DOTS_FOR_N(BODY)                                                                                          \
    switch (n) {                                                                                                       \
    case 1: BODY(rows, 1, k, a, ars, bcols, c, crs, ccs, accumulate); break;                                           \
    case 2: BODY(rows, 2, k, a, ars, bcols, c, crs, ccs, accumulate); break;                                           \
    case 3: BODY(rows, 3, k, a, ars, bcols, c, crs, ccs, accumulate); break;                                           \
    case 4: BODY(rows, 4, k, a, ars, bcols, c, crs, ccs, accumulate); break;                                           \
    case 5: BODY(rows, 5, k, a, ars, bcols, c, crs, ccs, accumulate); break;                                           \
    case 6: BODY(rows, 6, k, a, ars, bcols, c, crs, ccs, accumulate); break;                                           \
    case 7: BODY(rows, 7, k, a, ars, bcols, c, crs, ccs, accumulate); break;                                           \
    case 8: BODY(rows, 8, k, a, ars, bcols, c, crs, ccs, accumulate); break;                                           \
    default: break;                                                                                                    \
    }

/* Rows of B per pass of the few-rows kernels: few enough that a pass over a block of columns moves on to the next
   cache line of the same rows soon, so the hardware prefetcher (which follows a stream within a 4 KB page) keeps
   up when B's rows are a page or more apart — with 64, a weight gradient over rows of 1024 floats ran at a quarter of
   the speed (Zen 2, AVX2: 8.1 → 2.4 ms for 4 × 1024 over 8192 rows; 0.375 → 0.341 ms for rows of 256). */
#define FEW_KB 16

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>

static inline __mmask16 tail16(int64_t r) { return r >= 16 ? (__mmask16)0xFFFF : (r <= 0 ? 0 : (__mmask16)((1u << r) - 1)); }

static void skinny_dots_avx2(int64_t rows, int64_t n, int64_t k, const float *a, int64_t ars, const float *bcols,
                             float *c, int64_t crs, int64_t ccs, int accumulate);

/* few_rows_avx512 for m ≤ 4 rows, 64 columns at a time in registers (the same sums, element by element). Unlike the
   portable kernel it streams all of B once per block of 64 columns: measured faster here than passes of FEW_KB rows
   (FSQ k at level 3: 3.25 against 3.4 ms), B's blocks being read again from the last-level cache. */
__attribute__((target("avx512f")))
static void few_rows4_avx512(int64_t m, int64_t w, int64_t k, const float *a, int64_t ars, int64_t acs,
                             const float *b, int64_t brs, float *acc) {
    for (int64_t j = 0; j < w; j += 64) {
        __mmask16 t[4];
        for (int v = 0; v < 4; v++) t[v] = tail16(w - j - 16 * v);
        __m512 c[4][4];
        for (int i = 0; i < 4; i++)
            for (int v = 0; v < 4; v++) c[i][v] = i < m ? _mm512_maskz_loadu_ps(t[v], acc + i * w + j + 16 * v) : _mm512_setzero_ps();
        for (int64_t p = 0; p < k; p++) {
            const float *row = b + p * brs + j;
            if (p + 8 < k) _mm_prefetch((const char *)(row + 8 * brs), _MM_HINT_T0);
            __m512 bv[4];
            for (int v = 0; v < 4; v++) bv[v] = _mm512_maskz_loadu_ps(t[v], row + 16 * v);
            for (int i = 0; i < 4; i++) {
                if (i >= m) break;
                const __m512 s = _mm512_set1_ps(a[i * ars + p * acs]);
                for (int v = 0; v < 4; v++) c[i][v] = _mm512_add_ps(c[i][v], _mm512_mul_ps(s, bv[v]));
            }
        }
        for (int i = 0; i < m; i++)
            for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(acc + i * w + j + 16 * v, t[v], c[i][v]);
    }
}

/* acc[i, j] += a[i, p]·b[p, j] for p in order (i < m, j < w). */
__attribute__((target("avx512f")))
static void few_rows_avx512(int64_t m, int64_t w, int64_t k, const float *a, int64_t ars, int64_t acs,
                            const float *b, int64_t brs, float *acc) {
    for (int64_t p = 0; p < k; p++) {
        const float *row = b + p * brs;
        if (p + 8 < k) /* rows of B are strided: fetch the segment eight rows ahead */
            for (int64_t j = 0; j < w; j += 16) _mm_prefetch((const char *)(row + 8 * brs + j), _MM_HINT_T0);
        for (int64_t i = 0; i < m; i++) {
            const __m512 s = _mm512_set1_ps(a[i * ars + p * acs]);
            float *ai = acc + i * w;
            int64_t j = 0;
            for (; j + 16 <= w; j += 16)
                _mm512_storeu_ps(ai + j, _mm512_add_ps(_mm512_loadu_ps(ai + j), _mm512_mul_ps(s, _mm512_loadu_ps(row + j))));
            if (j < w) {
                const __mmask16 t = tail16(w - j);
                _mm512_mask_storeu_ps(ai + j, t, _mm512_add_ps(_mm512_maskz_loadu_ps(t, ai + j),
                                                               _mm512_mul_ps(s, _mm512_maskz_loadu_ps(t, row + j))));
            }
        }
    }
}

/* GEMM.dot's order: two eight-lane partial sums over blocks of 16, one block of 8 into the first, the two
   added lane-wise, the lanes summed in order, then the tail in order. */
__attribute__((target("avx2")))
static inline float lanes_sum(__m256 v) {
    float l[8];
    _mm256_storeu_ps(l, v);
    float s = -0.0f;
    for (int q = 0; q < 8; q++) s += l[q];
    return s;
}

/* skinny_dots_avx2 for 4 columns, four rows at a time on 16-lane registers: lane q < 8 is the first eight-lane
   partial sum's lane q, lane 8 + q the second's (the same sums, element by element). */
__attribute__((target("avx512f,avx512dq")))
static void skinny_dots4_avx512(int64_t rows, int64_t k, const float *a, int64_t ars, const float *bcols, float *c,
                                int64_t crs, int64_t ccs, int accumulate) {
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
        __m512 acc[4][4];
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();
        int64_t p = 0;
        for (; p + 16 <= k; p += 16) {
            __m512 col[4], row[4];
            for (int j = 0; j < 4; j++) col[j] = _mm512_loadu_ps(bcols + j * k + p);
            for (int r = 0; r < 4; r++) row[r] = _mm512_loadu_ps(a + (i + r) * ars + p);
            for (int r = 0; r < 4; r++)
                for (int j = 0; j < 4; j++) acc[r][j] = _mm512_add_ps(acc[r][j], _mm512_mul_ps(row[r], col[j]));
        }
        const int block8 = p + 8 <= k;
        for (int r = 0; r < 4; r++) {
            const float *ar = a + (i + r) * ars;
            for (int j = 0; j < 4; j++) {
                const float *cj = bcols + j * k;
                __m256 lo = _mm512_castps512_ps256(acc[r][j]), hi = _mm512_extractf32x8_ps(acc[r][j], 1);
                if (block8) lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(ar + p), _mm256_loadu_ps(cj + p)));
                float l[8];
                _mm256_storeu_ps(l, _mm256_add_ps(lo, hi));
                float s = -0.0f;
                for (int q = 0; q < 8; q++) s += l[q];
                for (int64_t q = p + (block8 ? 8 : 0); q < k; q++) s += ar[q] * cj[q];
                float *out = c + (i + r) * crs + j * ccs;
                *out = accumulate ? *out + s : s;
            }
        }
    }
    if (i < rows) skinny_dots_avx2(rows - i, 4, k, a + i * ars, ars, bcols, c + i * crs, crs, ccs, accumulate);
}

/* c[i, j] (+)= dot(a row i, column j of B) for j < n ≤ 8, the columns stored contiguously (`bcols + j·k`); `n` a
   constant where inlined, so that the partial sums stay in registers (with a variable n they lived in memory:
   FSQ's dim → 4 projections 0.42 → 0.2 ms for 8192 × 256 on Zen 2). */
__attribute__((target("avx2")))
static inline __attribute__((always_inline)) void skinny_dots_avx2_n(int64_t rows, const int n, int64_t k, const float *a,
        int64_t ars, const float *bcols, float *c, int64_t crs, int64_t ccs, int accumulate) {
    for (int64_t i = 0; i < rows; i++) {
        const float *row = a + i * ars;
        __m256 acc0[8], acc1[8];
        for (int j = 0; j < n; j++) acc0[j] = acc1[j] = _mm256_setzero_ps();
        int64_t p = 0;
        for (; p + 16 <= k; p += 16) {
            const __m256 r0 = _mm256_loadu_ps(row + p), r1 = _mm256_loadu_ps(row + p + 8);
            for (int j = 0; j < n; j++) {
                const float *col = bcols + j * k + p;
                acc0[j] = _mm256_add_ps(acc0[j], _mm256_mul_ps(r0, _mm256_loadu_ps(col)));
                acc1[j] = _mm256_add_ps(acc1[j], _mm256_mul_ps(r1, _mm256_loadu_ps(col + 8)));
            }
        }
        if (p + 8 <= k) {
            const __m256 r0 = _mm256_loadu_ps(row + p);
            for (int j = 0; j < n; j++) acc0[j] = _mm256_add_ps(acc0[j], _mm256_mul_ps(r0, _mm256_loadu_ps(bcols + j * k + p)));
            p += 8;
        }
        float sums[8];
        if (n == 4) {
            /* The four columns' lanes transposed, so that one four-lane addition per lane index q does each column's
               q-th addition of lanes_sum (the same additions in the same order, four columns at once). */
            const __m256 t0 = _mm256_add_ps(acc0[0], acc1[0]), t1 = _mm256_add_ps(acc0[1], acc1[1]);
            const __m256 t2 = _mm256_add_ps(acc0[2], acc1[2]), t3 = _mm256_add_ps(acc0[3], acc1[3]);
            const __m256 lo01 = _mm256_unpacklo_ps(t0, t1), hi01 = _mm256_unpackhi_ps(t0, t1);
            const __m256 lo23 = _mm256_unpacklo_ps(t2, t3), hi23 = _mm256_unpackhi_ps(t2, t3);
            const __m256 q04 = _mm256_shuffle_ps(lo01, lo23, 0x44), q15 = _mm256_shuffle_ps(lo01, lo23, 0xEE);
            const __m256 q26 = _mm256_shuffle_ps(hi01, hi23, 0x44), q37 = _mm256_shuffle_ps(hi01, hi23, 0xEE);
            __m128 v = _mm_set1_ps(-0.0f);
            v = _mm_add_ps(v, _mm256_castps256_ps128(q04));
            v = _mm_add_ps(v, _mm256_castps256_ps128(q15));
            v = _mm_add_ps(v, _mm256_castps256_ps128(q26));
            v = _mm_add_ps(v, _mm256_castps256_ps128(q37));
            v = _mm_add_ps(v, _mm256_extractf128_ps(q04, 1));
            v = _mm_add_ps(v, _mm256_extractf128_ps(q15, 1));
            v = _mm_add_ps(v, _mm256_extractf128_ps(q26, 1));
            v = _mm_add_ps(v, _mm256_extractf128_ps(q37, 1));
            _mm_storeu_ps(sums, v);
        } else {
            for (int j = 0; j < n; j++) sums[j] = lanes_sum(_mm256_add_ps(acc0[j], acc1[j]));
        }
        for (int j = 0; j < n; j++) {
            float s = sums[j];
            const float *col = bcols + j * k;
            for (int64_t q = p; q < k; q++) s += row[q] * col[q];
            float *out = c + i * crs + j * ccs;
            *out = accumulate ? *out + s : s;
        }
    }
}

__attribute__((target("avx2")))
static void skinny_dots_avx2(int64_t rows, int64_t n, int64_t k, const float *a, int64_t ars, const float *bcols,
                             float *c, int64_t crs, int64_t ccs, int accumulate) {
    SKINNY_DOTS_FOR_N(skinny_dots_avx2_n);
}
#endif

/* The portable versions (baseline x86-64, AArch64) on four-lane vectors, and the kernels written once for several
   widths: the same sums in the same order as the vector versions above, each product rounded before it is added (the
   file's FP_CONTRACT OFF keeps AArch64 from fusing them).

   c[i, j] = (accumulate ? c[i, j] : start[j]) + a[i, 0]·b[0, j] + … in order, LANES columns at a time (the columns past
   the last whole vector one at a time): one body for the portable vectors, AVX2's and AVX-512's. */
#define TINY_DEPTH(NAME, ATTR, VT, LANES)                                                                               \
ATTR static void NAME(int64_t rows, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b,     \
                      const float *start, float *c, int64_t ldc, int accumulate) {                                     \
    for (int64_t i = 0; i < rows; i++) {                                                                               \
        float coef[8];                                                                                                 \
        for (int64_t p = 0; p < k; p++) coef[p] = a[i * ars + p * acs];                                                \
        float *out = c + i * ldc;                                                                                      \
        int64_t j = 0;                                                                                                 \
        for (; j + LANES <= n; j += LANES) {                                                                           \
            VT acc, bv;                                                                                                \
            memcpy(&acc, accumulate ? out + j : start + j, sizeof acc);                                                \
            for (int64_t p = 0; p < k; p++) {                                                                          \
                memcpy(&bv, b + p * n + j, sizeof bv);                                                                 \
                const VT prod = coef[p] * bv;                                                                          \
                acc = acc + prod;                                                                                      \
            }                                                                                                          \
            memcpy(out + j, &acc, sizeof acc);                                                                         \
        }                                                                                                              \
        for (; j < n; j++) {                                                                                           \
            float acc = accumulate ? out[j] : start[j];                                                                \
            for (int64_t p = 0; p < k; p++) {                                                                          \
                const float prod = coef[p] * b[p * n + j];                                                             \
                acc = acc + prod;                                                                                      \
            }                                                                                                          \
            out[j] = acc;                                                                                              \
        }                                                                                                              \
    }                                                                                                                  \
}
TINY_DEPTH(tiny_depth_vec, , vq_f4, 4)
#if VQ_X86
TINY_DEPTH(tiny_depth_avx2, __attribute__((target("avx2"))), vq_f8, 8)
typedef float vq_f16 __attribute__((vector_size(64)));
TINY_DEPTH(tiny_depth_avx512, __attribute__((target("avx512f"))), vq_f16, 16)
#endif

/* skinny_dots on the portable vectors: an eight-lane partial sum is two four-lane vectors (`n` a constant where
   inlined, as for AVX2). */
static inline __attribute__((always_inline)) void skinny_dots_vec_n(int64_t rows, const int n, int64_t k, const float *a,
        int64_t ars, const float *bcols, float *c, int64_t crs, int64_t ccs, int accumulate) {
    for (int64_t i = 0; i < rows; i++) {
        const float *row = a + i * ars;
        vq_f4 acc[8][4];  /* column j: the first eight-lane sum as [0], [1], the second as [2], [3] */
        for (int j = 0; j < n; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = vq_f4_splat(0.0f);
        int64_t p = 0;
        for (; p + 16 <= k; p += 16) {
            vq_f4 r[4];
            for (int h = 0; h < 4; h++) r[h] = vq_f4_load(row + p + 4 * h);
            for (int j = 0; j < n; j++) {
                const float *col = bcols + j * k + p;
                for (int h = 0; h < 4; h++) {
                    const vq_f4 prod = r[h] * vq_f4_load(col + 4 * h);
                    acc[j][h] = acc[j][h] + prod;
                }
            }
        }
        if (p + 8 <= k) {
            const vq_f4 r0 = vq_f4_load(row + p), r1 = vq_f4_load(row + p + 4);
            for (int j = 0; j < n; j++) {
                const vq_f4 p0 = r0 * vq_f4_load(bcols + j * k + p), p1 = r1 * vq_f4_load(bcols + j * k + p + 4);
                acc[j][0] = acc[j][0] + p0;
                acc[j][1] = acc[j][1] + p1;
            }
            p += 8;
        }
        for (int j = 0; j < n; j++) {
            float l[8];
            vq_f4_store(l, acc[j][0] + acc[j][2]);
            vq_f4_store(l + 4, acc[j][1] + acc[j][3]);
            float s = -0.0f;
            for (int q = 0; q < 8; q++) s += l[q];
            const float *col = bcols + j * k;
            for (int64_t q = p; q < k; q++) {
                const float prod = row[q] * col[q];
                s = s + prod;
            }
            float *out = c + i * crs + j * ccs;
            *out = accumulate ? *out + s : s;
        }
    }
}

static void skinny_dots_vec(int64_t rows, int64_t n, int64_t k, const float *a, int64_t ars, const float *bcols,
                            float *c, int64_t crs, int64_t ccs, int accumulate) {
    SKINNY_DOTS_FOR_N(skinny_dots_vec_n);
}

/* acc[i, j] += a[i, p]·b[p, j] for p in order: `rows` (≤ 4, a constant where inlined) rows of acc and NV vectors of
   LANES columns in registers while B streams past, FEW_KB rows of B at a time (they stay in cache while every block
   of columns takes them), the columns past the last whole block one at a time. One body for the portable vectors and
   AVX2's (`VT`, a vector type of LANES floats: a scalar operand is splatted). */
#define FEW_ROWS_BLOCK(NAME, ATTR, VT, LANES, NV)                                                                        \
ATTR static inline __attribute__((always_inline)) void NAME(const int rows, int64_t w, int64_t k,                     \
        const float *a, int64_t ars, int64_t acs, const float *b, int64_t brs, float *acc) {                          \
    for (int64_t p0 = 0; p0 < k; p0 += FEW_KB) {                                                                       \
        const int64_t p1 = p0 + FEW_KB < k ? p0 + FEW_KB : k;                                                          \
        int64_t j = 0;                                                                                                 \
        for (; j + LANES * NV <= w; j += LANES * NV) {                                                                 \
            VT c[4][NV];                                                                                               \
            for (int i = 0; i < rows; i++)                                                                             \
                for (int v = 0; v < NV; v++) memcpy(&c[i][v], acc + i * w + j + LANES * v, sizeof(VT));               \
            for (int64_t p = p0; p < p1; p++) {                                                                        \
                VT bv[NV];                                                                                             \
                for (int v = 0; v < NV; v++) memcpy(&bv[v], b + p * brs + j + LANES * v, sizeof(VT));                 \
                for (int i = 0; i < rows; i++) {                                                                       \
                    const float s = a[i * ars + p * acs];                                                              \
                    for (int v = 0; v < NV; v++) {                                                                     \
                        const VT prod = s * bv[v];                                                                     \
                        c[i][v] = c[i][v] + prod;                                                                      \
                    }                                                                                                  \
                }                                                                                                      \
            }                                                                                                          \
            for (int i = 0; i < rows; i++)                                                                             \
                for (int v = 0; v < NV; v++) memcpy(acc + i * w + j + LANES * v, &c[i][v], sizeof(VT));               \
        }                                                                                                              \
        for (; j < w; j++)                                                                                             \
            for (int i = 0; i < rows; i++) {                                                                           \
                float t = acc[i * w + j];                                                                              \
                for (int64_t p = p0; p < p1; p++) {                                                                    \
                    const float prod = a[i * ars + p * acs] * b[p * brs + j];                                          \
                    t = t + prod;                                                                                      \
                }                                                                                                      \
                acc[i * w + j] = t;                                                                                    \
            }                                                                                                          \
    }                                                                                                                  \
}
/* Four rows at a time, NV4 vectors of columns (NV2 for the last two rows, NV1 for a last single row — a column sum —
   whose fewer accumulators leave registers for more columns, so more independent additions are in flight). The
   same sums for any NV: each element adds its products in the order of p. */
#define FEW_ROWS(NAME, ATTR, VT, LANES, NV4, NV2, NV1)                                                                   \
FEW_ROWS_BLOCK(NAME##_block, ATTR, VT, LANES, NV4)                                                                     \
FEW_ROWS_BLOCK(NAME##_two, ATTR, VT, LANES, NV2)                                                                       \
FEW_ROWS_BLOCK(NAME##_one, ATTR, VT, LANES, NV1)                                                                       \
ATTR static void NAME(int64_t m, int64_t w, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b,        \
                      int64_t brs, float *acc) {                                                                       \
    for (int64_t i = 0; i < m; i += 4) {                                                                               \
        const float *ai = a + i * ars;                                                                                 \
        float *ci = acc + i * w;                                                                                       \
        switch (m - i < 4 ? m - i : 4) {                                                                               \
        case 4: NAME##_block(4, w, k, ai, ars, acs, b, brs, ci); break;                                                \
        case 3: NAME##_block(3, w, k, ai, ars, acs, b, brs, ci); break;                                                \
        case 2: NAME##_two(2, w, k, ai, ars, acs, b, brs, ci); break;                                                  \
        default: NAME##_one(1, w, k, ai, ars, acs, b, brs, ci); break;                                                 \
        }                                                                                                              \
    }                                                                                                                  \
}

/* The portable vectors: 8 columns (16 on AArch64, which has 32 registers). */
#if defined(__aarch64__)
FEW_ROWS(few_rows_vec, , vq_f4, 4, 4, 8, 16)
#else
FEW_ROWS(few_rows_vec, , vq_f4, 4, 2, 4, 8)
#endif
#if VQ_X86
/* AVX2 (level 1; 16 columns: 8 accumulators, 2 of B, 1 broadcast of 16 registers). */
FEW_ROWS(few_rows_avx2, __attribute__((target("avx2"))), vq_f8, 8, 2, 4, 8)
#endif

int vq_tiny_depth_rows(int level, int64_t rows, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs,
                       const float *b, const float *start, float *c, int64_t ldc, int accumulate) {
    if (k > 8) return 0;
#if VQ_X86
    if (level >= 2) { tiny_depth_avx512(rows, n, k, a, ars, acs, b, start, c, ldc, accumulate); return 1; }
    if (level == 1) { tiny_depth_avx2(rows, n, k, a, ars, acs, b, start, c, ldc, accumulate); return 1; }
#endif
    (void)level;
    tiny_depth_vec(rows, n, k, a, ars, acs, b, start, c, ldc, accumulate);
    return 1;
}

void vq_few_rows(int level, int64_t m, int64_t w, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b,
                 int64_t brs, float *acc) {
#if VQ_X86
    if (level >= 2 && m <= 4) { few_rows4_avx512(m, w, k, a, ars, acs, b, brs, acc); return; }
    if (level >= 2) { few_rows_avx512(m, w, k, a, ars, acs, b, brs, acc); return; }
    if (level == 1) { few_rows_avx2(m, w, k, a, ars, acs, b, brs, acc); return; }
#endif
    (void)level;
    few_rows_vec(m, w, k, a, ars, acs, b, brs, acc);
}

void vq_transposed_a(int level, int64_t width, int64_t n, int64_t k, const float *a, int64_t acs, const float *b,
                     int64_t brs, int64_t bcs, float *acc) {
    /* The same sums as few rows with the operands' roles swapped — B's n columns as the rows, A's rows as the
       streamed vectors (s·b and b·s are the same product): one kernel serves both. */
    vq_few_rows(level, n, width, k, b, bcs, brs, a, acs, acc);
}

int vq_skinny_dots(int level, int64_t rows, int64_t n, int64_t k, const float *a, int64_t ars, const float *bcols,
                   float *c, int64_t crs, int64_t ccs, int accumulate) {
#if VQ_X86
    if (level >= 2 && n == 4) { skinny_dots4_avx512(rows, k, a, ars, bcols, c, crs, ccs, accumulate); return 1; }
    if (level >= 1 && n <= 8) { skinny_dots_avx2(rows, n, k, a, ars, bcols, c, crs, ccs, accumulate); return 1; }
#endif
    (void)level;
    if (n > 8) return 0;
    skinny_dots_vec(rows, n, k, a, ars, bcols, c, crs, ccs, accumulate);
    return 1;
}
