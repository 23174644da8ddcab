#include "vq_kernels.h"
#include "vq_simd.h"
#include <math.h>
#include <string.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>
#endif

static int detected_level(void) {
#if VQ_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni") ? 3 : 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

/* The detected level, lowered by the environment variable VQ_KERNEL_LEVEL (0, 1, 2 or 3) when set, so
   that the portable, AVX2 and plain AVX-512 paths can be tested on any machine. */
int vq_cpu_level(void) {
    int level = detected_level();
    const char *env = getenv("VQ_KERNEL_LEVEL");
    if (env && env[0] >= '0' && env[0] <= '3' && env[1] == 0 && env[0] - '0' < level) level = env[0] - '0';
    return level;
}

int vq_cpu_has_vnni(void) {
#if VQ_X86 && (defined(__GNUC__) || defined(__clang__))
    const int level = vq_cpu_level();
    /* Level 3 has VNNI; a detected level 2 may (Cascade Lake, Ice Lake); a level lowered to 2 is plain AVX-512. */
    return level == 3 || (level == 2 && detected_level() == 2 && __builtin_cpu_supports("avx512vnni")
                          && __builtin_cpu_supports("avx512bw"));
#else
    return 0;
#endif
}

int vq_gemm_mr(int level) { return level >= 2 ? 12 : (level == 1 ? 6 : VQ_PMR); }
int vq_gemm_nr(int level) { return level >= 2 ? 32 : (level == 1 ? 16 : VQ_PNR); }

void vq_gemm_pack_a(const float *a, int64_t ars, int64_t rows, int64_t kb, int64_t mr, float *dst) {
    /* Depth outer, rows inner: the panel is written contiguously and each row is read as one stream. */
    const float *src[32];
    for (int64_t i = 0; i < mr && i < 32; i++) src[i] = i < rows ? a + i * ars : NULL;
    if (mr > 32) {  /* panels are at most 32 wide (B's, packed by the same function); any other: element by element */
        for (int64_t p = 0; p < kb; p++)
            for (int64_t i = 0; i < mr; i++) dst[p * mr + i] = i < rows ? a[i * ars + p] : 0.0f;
        return;
    }
    if (rows == mr) {
        int64_t p = 0;
#if VQ_X86
        if (mr % 4 == 0)  /* 4 × 4 blocks transposed in SSE registers (baseline x86-64) */
            for (; p + 4 <= kb; p += 4, dst += 4 * mr)
                for (int64_t i = 0; i < mr; i += 4) {
                    __m128 r0 = _mm_loadu_ps(src[i] + p), r1 = _mm_loadu_ps(src[i + 1] + p);
                    __m128 r2 = _mm_loadu_ps(src[i + 2] + p), r3 = _mm_loadu_ps(src[i + 3] + p);
                    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                    _mm_storeu_ps(dst + i, r0);
                    _mm_storeu_ps(dst + mr + i, r1);
                    _mm_storeu_ps(dst + 2 * mr + i, r2);
                    _mm_storeu_ps(dst + 3 * mr + i, r3);
                }
#endif
        for (; p < kb; p++, dst += mr)
            for (int64_t i = 0; i < mr; i++) dst[i] = src[i][p];
    } else {
        for (int64_t p = 0; p < kb; p++, dst += mr)
            for (int64_t i = 0; i < mr; i++) dst[i] = i < rows ? src[i][p] : 0.0f;
    }
}

/* ---------- portable: 4 x 12 (16 vector registers, SSE2 / baseline x86-64), 8 x 12 on AArch64 (32) ---------- */
/* Written with the compiler's vector extension (vq_simd.h): clang lowers it to SSE2 on baseline x86-64 and to
   Advanced SIMD on AArch64 (where `t + a * b` contracts to FMLA). Per element the same arithmetic as a scalar loop:
   the products accumulated over k in order, then the source added. */
__attribute__((always_inline))
static inline void ukr_generic_body(int64_t kc, const float *a, const float *b, const int64_t *off, const float *src,
                                    int64_t lds, float *c, int64_t ldc, int acc, vq_f4 t[VQ_PMR][VQ_PNV]) {
    for (int i = 0; i < VQ_PMR; i++)
        for (int j = 0; j < VQ_PNV; j++) t[i][j] = vq_f4_splat(0.0f);
    for (int64_t k = 0; k < kc; k++) {
        const float *bk = off ? b + off[k] : b + k * VQ_PNR;
        vq_f4 bv[VQ_PNV];
        for (int j = 0; j < VQ_PNV; j++) bv[j] = vq_f4_load(bk + 4 * j);
        for (int i = 0; i < VQ_PMR; i++) {
            const vq_f4 av = vq_f4_splat(a[i]);
            for (int j = 0; j < VQ_PNV; j++) t[i][j] = t[i][j] + av * bv[j];
        }
        a += VQ_PMR;
    }
    if (!c) return;
    for (int i = 0; i < VQ_PMR; i++)
        for (int j = 0; j < VQ_PNV; j++)
            vq_f4_store(c + i * ldc + 4 * j, acc ? vq_f4_load(src + i * lds + 4 * j) + t[i][j] : t[i][j]);
}

static void ukr_generic(int64_t kc, const float *a, const float *b, const int64_t *off, const float *src, int64_t lds,
                        float *c, int64_t ldc, int acc) {
    vq_f4 t[VQ_PMR][VQ_PNV];
    if (off) ukr_generic_body(kc, a, b, off, src, lds, c, ldc, acc, t);
    else ukr_generic_body(kc, a, b, 0, src, lds, c, ldc, acc, t);
}

#if VQ_X86
/* ---------- AVX2 + FMA 6x16 ---------- */
/* `off == NULL`: B is packed (row k at b + 16k); else row k is read in place at b + off[k]. Inlined into two
   entry points, so each loop is compiled for its constant case. */
__attribute__((target("avx2,fma"), always_inline))
static inline void ukr_avx2_body(int64_t kc, const float *a, const float *b, const int64_t *off, const float *src,
                                 int64_t lds, float *c, int64_t ldc, int acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    if (acc)  /* the C tile is read at the end: start fetching its 12 cache lines now */
        for (int i = 0; i < 6; i++) {
            _mm_prefetch((const char *)(src + i * lds), _MM_HINT_T0);
            _mm_prefetch((const char *)(src + i * lds + 15), _MM_HINT_T0);
        }
    #pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        const float *bk = off ? b + off[k] : b + k * 16;
        __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
        __m256 av;
#define ROW(i, x0, x1) av = _mm256_broadcast_ss(a + i); x0 = _mm256_fmadd_ps(av, b0, x0); x1 = _mm256_fmadd_ps(av, b1, x1);
        ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21) ROW(3, c30, c31) ROW(4, c40, c41) ROW(5, c50, c51)
#undef ROW
        a += 6;
    }
#define STORE(i, x0, x1)                                                                   \
    if (acc) {                                                                             \
        x0 = _mm256_add_ps(_mm256_loadu_ps(src + i * lds), x0);                            \
        x1 = _mm256_add_ps(_mm256_loadu_ps(src + i * lds + 8), x1);                        \
    }                                                                                      \
    _mm256_storeu_ps(c + i * ldc, x0);                                                     \
    _mm256_storeu_ps(c + i * ldc + 8, x1);
    STORE(0, c00, c01) STORE(1, c10, c11) STORE(2, c20, c21) STORE(3, c30, c31) STORE(4, c40, c41)
    STORE(5, c50, c51)
#undef STORE
}

__attribute__((target("avx2,fma")))
static void ukr_avx2(int64_t kc, const float *a, const float *b, const float *src, int64_t lds, float *c, int64_t ldc,
                     int acc) {
    ukr_avx2_body(kc, a, b, 0, src, lds, c, ldc, acc);
}

__attribute__((target("avx2,fma")))
static void ukr_avx2_offsets(int64_t kc, const float *a, const float *b, const int64_t *off, float *c, int64_t ldc,
                             int acc) {
    ukr_avx2_body(kc, a, b, off, c, ldc, c, ldc, acc);
}

/* ---------- AVX-512F 12x32 ---------- */
__attribute__((target("avx512f"), always_inline))
static inline void ukr_avx512_body(int64_t kc, const float *a, const float *b, const int64_t *off, const float *src,
                                   int64_t lds, float *c, int64_t ldc, int acc) {
#define DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
    DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6) DECL(7) DECL(8) DECL(9) DECL(10) DECL(11)
#undef DECL
    if (acc)
        for (int i = 0; i < 12; i++) {
            _mm_prefetch((const char *)(src + i * lds), _MM_HINT_T0);
            _mm_prefetch((const char *)(src + i * lds + 31), _MM_HINT_T0);
        }
    #pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        const float *bk = off ? b + off[k] : b + k * 32;
        __m512 b0 = _mm512_loadu_ps(bk), b1 = _mm512_loadu_ps(bk + 16);
        __m512 av;
#define ROW(i) av = _mm512_set1_ps(a[i]); c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0); c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7) ROW(8) ROW(9) ROW(10) ROW(11)
#undef ROW
        a += 12;
    }
#define STORE(i)                                                                           \
    if (acc) {                                                                             \
        c##i##0 = _mm512_add_ps(_mm512_loadu_ps(src + i * lds), c##i##0);                  \
        c##i##1 = _mm512_add_ps(_mm512_loadu_ps(src + i * lds + 16), c##i##1);             \
    }                                                                                      \
    _mm512_storeu_ps(c + i * ldc, c##i##0);                                                \
    _mm512_storeu_ps(c + i * ldc + 16, c##i##1);
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7) STORE(8) STORE(9) STORE(10)
    STORE(11)
#undef STORE
}

__attribute__((target("avx512f")))
static void ukr_avx512(int64_t kc, const float *a, const float *b, const float *src, int64_t lds, float *c,
                       int64_t ldc, int acc) {
    ukr_avx512_body(kc, a, b, 0, src, lds, c, ldc, acc);
}

__attribute__((target("avx512f")))
static void ukr_avx512_offsets(int64_t kc, const float *a, const float *b, const int64_t *off, float *c,
                               int64_t ldc, int acc) {
    ukr_avx512_body(kc, a, b, off, c, ldc, c, ldc, acc);
}
#endif

void vq_gemm_ukr(int level, int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                 int accumulate) {
#if VQ_X86
    if (level >= 2) { ukr_avx512(kc, a, b, c, ldc, c, ldc, accumulate); return; }
    if (level == 1) { ukr_avx2(kc, a, b, c, ldc, c, ldc, accumulate); return; }
#endif
    ukr_generic(kc, a, b, 0, c, ldc, c, ldc, accumulate);
}

void vq_gemm_ukr_bias(int level, int64_t kc, const float *a, const float *b, const float *bias, float *c, int64_t ldc) {
#if VQ_X86
    if (level >= 2) { ukr_avx512(kc, a, b, bias, 0, c, ldc, 1); return; }
    if (level == 1) { ukr_avx2(kc, a, b, bias, 0, c, ldc, 1); return; }
#endif
    ukr_generic(kc, a, b, 0, bias, 0, c, ldc, 1);
}

void vq_gemm_ukr_offsets(int level, int64_t kc, const float *a, const float *b, const int64_t *offsets, float *c,
                         int64_t ldc, int accumulate) {
#if VQ_X86
    if (level >= 2) { ukr_avx512_offsets(kc, a, b, offsets, c, ldc, accumulate); return; }
    if (level == 1) { ukr_avx2_offsets(kc, a, b, offsets, c, ldc, accumulate); return; }
#endif
    ukr_generic(kc, a, b, offsets, c, ldc, c, ldc, accumulate);
}

static void argmin_generic(const float *dots, int64_t ld, int64_t rows, int64_t cols, const float *xx,
                           const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index) {
    for (int64_t r = 0; r < rows; r++) {
        const float *d = dots + r * ld;
        float b = best[r];
        int64_t bi = best_index[r];
        const float x2 = xx[r];
        for (int64_t j = 0; j < cols; j++) {
            float s;
            if (cosine) {
                s = -d[j];
            } else {
                float t = (x2 + cc[j]) + d[j] * -2.0f;
                s = (t > 1e-8f || t != t) ? t : 1e-8f; /* clamp(min=1e-8), NaN stays NaN */
            }
            if (s < b) { b = s; bi = code_base + j; }
        }
        best[r] = b;
        best_index[r] = bi;
    }
}

#if VQ_X86
/* Same arithmetic as argmin_generic, 8 codes at a time; lanes that beat the running best are
   resolved in code order, so the result is bit-identical to the scalar version. */
__attribute__((target("avx2,fma")))
static void argmin_avx2(const float *dots, int64_t ld, int64_t rows, int64_t cols, const float *xx,
                        const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index) {
    const __m256 eps = _mm256_set1_ps(1e-8f), m2 = _mm256_set1_ps(-2.0f);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    float tmp[8];
    for (int64_t r = 0; r < rows; r++) {
        const float *d = dots + r * ld;
        float b = best[r];
        int64_t bi = best_index[r];
        const __m256 x2 = _mm256_set1_ps(xx[r]);
        int64_t j = 0;
        for (; j + 8 <= cols; j += 8) {
            __m256 dv = _mm256_loadu_ps(d + j), s;
            if (cosine) {
                s = _mm256_xor_ps(dv, sign);
            } else {
                __m256 t = _mm256_add_ps(_mm256_add_ps(x2, _mm256_loadu_ps(cc + j)), _mm256_mul_ps(dv, m2));
                s = _mm256_max_ps(eps, t); /* max_ps(eps, NaN) = NaN */
            }
            if (_mm256_movemask_ps(_mm256_cmp_ps(s, _mm256_set1_ps(b), _CMP_LT_OQ))) {
                _mm256_storeu_ps(tmp, s);
                for (int k = 0; k < 8; k++)
                    if (tmp[k] < b) { b = tmp[k]; bi = code_base + j + k; }
            }
        }
        best[r] = b;
        best_index[r] = bi;
        if (j < cols)
            argmin_generic(dots + r * ld + j, ld, 1, cols - j, xx + r, cc + j, cosine, code_base + j, best + r,
                           best_index + r);
    }
}

/* The 12 × 32 GEMM tile of dot products (one depth block) and the running arg-min of its rows in one call:
   the scores are formed from the accumulators in registers (no tile store and reload). The same dot
   products and the same score arithmetic as vq_gemm_ukr + argmin_generic, in code order with strict
   improvement, so the result is bit-identical to that pair. Padding lanes (j ≥ cols) never win. */
__attribute__((target("avx512f")))
static void gemm_argmin_avx512(int64_t kc, const float *a, const float *b, int rows, int cols, const float *xx,
                               const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index) {
    __m512 t[12][2];
    for (int i = 0; i < 12; i++) t[i][0] = t[i][1] = _mm512_setzero_ps();
    #pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b + k * 32), b1 = _mm512_load_ps(b + k * 32 + 16);
        for (int i = 0; i < 12; i++) {
            __m512 av = _mm512_set1_ps(a[k * 12 + i]);
            t[i][0] = _mm512_fmadd_ps(av, b0, t[i][0]);
            t[i][1] = _mm512_fmadd_ps(av, b1, t[i][1]);
        }
    }
    const __m512 eps = _mm512_set1_ps(1e-8f), m2 = _mm512_set1_ps(-2.0f), inf = _mm512_set1_ps(INFINITY);
    const __m512i sign = _mm512_set1_epi32((int32_t)0x80000000u);
    const __mmask16 l0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
    const __mmask16 l1 = cols >= 32 ? (__mmask16)0xFFFF : (cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1));
    const __m512 c0 = _mm512_loadu_ps(cc), c1 = _mm512_loadu_ps(cc + 16);
    float lanes[32];
    for (int i = 0; i < rows; i++) {
        __m512 s0, s1;
        if (cosine) {
            s0 = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(t[i][0]), sign));
            s1 = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(t[i][1]), sign));
        } else {
            const __m512 x2 = _mm512_set1_ps(xx[i]);
            s0 = _mm512_max_ps(eps, _mm512_add_ps(_mm512_add_ps(x2, c0), _mm512_mul_ps(t[i][0], m2)));
            s1 = _mm512_max_ps(eps, _mm512_add_ps(_mm512_add_ps(x2, c1), _mm512_mul_ps(t[i][1], m2)));
        }
        /* NaN scores never win: min(s, mn) keeps mn where s is NaN. */
        __m512 mn = _mm512_mask_min_ps(inf, l0, s0, inf);
        mn = _mm512_mask_min_ps(mn, l1, s1, mn);
        float m = _mm512_reduce_min_ps(mn);
        if (m < best[i]) {
            __mmask16 h0 = _mm512_mask_cmp_ps_mask(l0, s0, _mm512_set1_ps(m), _CMP_EQ_OQ);
            __mmask16 h1 = _mm512_mask_cmp_ps_mask(l1, s1, _mm512_set1_ps(m), _CMP_EQ_OQ);
            int lane = h0 ? __builtin_ctz(h0) : 16 + __builtin_ctz(h1);
            _mm512_storeu_ps(lanes, s0);
            _mm512_storeu_ps(lanes + 16, s1);
            best[i] = lanes[lane];  /* the lane's own value (-0 and +0 compare equal) */
            best_index[i] = code_base + lane;
        }
    }
}
#endif

/* The portable GEMM tile (one depth block) and the running arg-min of its rows in one call, the scores formed
   from the accumulators: the same dot products and score arithmetic as ukr_generic + argmin_generic, rows scanned
   in code order with strict improvement only where some lane beats the row's best, so bit-identical to that pair. */
static void gemm_argmin_generic(int64_t kc, const float *a, const float *b, int rows, int cols, const float *xx,
                                const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index) {
    vq_f4 t[VQ_PMR][VQ_PNV];
    ukr_generic_body(kc, a, b, 0, 0, 0, 0, 0, 0, t);
    const vq_f4 eps = vq_f4_splat(1e-8f), m2 = vq_f4_splat(-2.0f);
    vq_f4 c4[VQ_PNV];
    for (int j = 0; j < VQ_PNV; j++) c4[j] = vq_f4_load(cc + 4 * j);
    for (int i = 0; i < rows; i++) {
        const vq_f4 x2 = vq_f4_splat(xx[i]), bv = vq_f4_splat(best[i]);
        vq_f4 s[VQ_PNV];
        vq_i4 beats = {0, 0, 0, 0};
        for (int j = 0; j < VQ_PNV; j++) {
            if (cosine) {
                s[j] = -t[i][j];
            } else {
                const vq_f4 u = (x2 + c4[j]) + t[i][j] * m2;
                s[j] = vq_f4_select((u > eps) | (u != u), u, eps); /* clamp(min=1e-8), NaN stays NaN */
            }
            beats |= s[j] < bv;
        }
        if (!vq_i4_any(beats)) continue;
        float lanes[VQ_PNR], bb = best[i];
        int64_t bi = best_index[i];
        for (int j = 0; j < VQ_PNV; j++) vq_f4_store(lanes + 4 * j, s[j]);
        for (int j = 0; j < cols; j++)
            if (lanes[j] < bb) { bb = lanes[j]; bi = code_base + j; }
        best[i] = bb;
        best_index[i] = bi;
    }
}

int vq_gemm_argmin(int level, int64_t kc, const float *a, const float *b, int rows, int cols, const float *xx,
                   const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index) {
#if VQ_X86
    if (level >= 2) { gemm_argmin_avx512(kc, a, b, rows, cols, xx, cc, cosine, code_base, best, best_index); return 1; }
    if (level == 1) return 0;  /* AVX2: the tile, then argmin_avx2 */
#endif
    gemm_argmin_generic(kc, a, b, rows, cols, xx, cc, cosine, code_base, best, best_index);
    return 1;
}

void vq_argmin_update(const float *dots, int64_t ld, int64_t rows, int64_t cols, const float *xx,
                      const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index) {
#if VQ_X86
    static int level = -1;
    if (level < 0) level = vq_cpu_level();
    if (level >= 1) { argmin_avx2(dots, ld, rows, cols, xx, cc, cosine, code_base, best, best_index); return; }
#endif
    argmin_generic(dots, ld, rows, cols, xx, cc, cosine, code_base, best, best_index);
}

#if defined(__linux__)
#include <sys/mman.h>
#include <stdint.h>
#endif

/* Ask for transparent huge pages on the 2 MiB-aligned interior of a large, not yet touched buffer
   (as numpy does): one fault per 2 MiB instead of per 4 KiB when the buffer is first written. */
void vq_advise_hugepages(void *p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)1 << 21;
    if (bytes < (int64_t)(4 * huge)) return;
    uintptr_t start = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t end = ((uintptr_t)p + (uintptr_t)bytes) & ~(huge - 1);
    if (end > start) madvise((void *)start, end - start, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

/* torch's CPU lerp, element-wise with one weight: |w| < 0.5 ? fma(w, b - a, a) : fma(w - 1, b - a, b). */
static void lerp_generic(float *a, const float *b, float w, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float d = b[i] - a[i];
        a[i] = fabsf(w) < 0.5f ? fmaf(w, d, a[i]) : fmaf(w - 1.0f, d, b[i]);
    }
}

#if VQ_X86
__attribute__((target("avx2,fma")))
static void lerp_fma(float *a, const float *b, float w, int64_t n) {
    if (fabsf(w) < 0.5f) {
        for (int64_t i = 0; i < n; i++) a[i] = __builtin_fmaf(w, b[i] - a[i], a[i]);
    } else {
        const float w1 = w - 1.0f;
        for (int64_t i = 0; i < n; i++) a[i] = __builtin_fmaf(w1, b[i] - a[i], b[i]);
    }
}
#endif

void vq_lerp(float *a, const float *b, float w, int64_t n) {
#if VQ_X86
    static int level = -1;
    if (level < 0) level = vq_cpu_level();
    if (level >= 1) { lerp_fma(a, b, w, n); return; }
#endif
    lerp_generic(a, b, w, n);
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif

/* Keep freed memory in the process (glibc): blocks up to `mmap_bytes` come from the heap instead of fresh
   mappings, and the heap is trimmed only above `trim_bytes`, so a training loop that frees and reallocates
   the same large tensors every step reuses pages instead of faulting in (and zeroing) new ones. Returns 1
   when applied. */
int vq_keep_freed_memory(int64_t mmap_bytes, int64_t trim_bytes) {
#if defined(__GLIBC__)
    int a = mallopt(M_MMAP_THRESHOLD, (int)(mmap_bytes > 0x7fffffff ? 0x7fffffff : mmap_bytes));
    int b = mallopt(M_TRIM_THRESHOLD, (int)(trim_bytes > 0x7fffffff ? 0x7fffffff : trim_bytes));
    return a && b;
#else
    (void)mmap_bytes;
    (void)trim_bytes;
    return 0;
#endif
}

/* Returns freed heap memory to the system (glibc's malloc_trim); 1 when some was released. */
int vq_release_freed_memory(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}

/* EMA statistics: acc[codes[r]·width + j] += (double)x[r·ldx + j] over the rows r that `order` lists, in its order
   (each sum in double, one add per row: the same values at every level). Listing each code's rows in increasing
   order (the valid rows sorted by code, stably) gives the sums of the rows in order, and consecutive rows then add
   into the same accumulator row, which stays in the first-level cache. */
static void scatter_add_generic(const float *x, int64_t ldx, const int64_t *codes, const int64_t *order, int64_t count,
                                        int64_t width, double *acc) {
    for (int64_t t = 0; t < count; t++) {
        const int64_t r = order[t];
        double *a = acc + codes[r] * width;
        const float *s = x + r * ldx;
        for (int64_t j = 0; j < width; j++) a[j] += (double)s[j];
    }
}

#if VQ_X86
__attribute__((target("avx512f")))
static void scatter_add_avx512(const float *x, int64_t ldx, const int64_t *codes, const int64_t *order, int64_t count,
                                       int64_t width, double *acc) {
    for (int64_t t = 0; t < count; t++) {
        const int64_t r = order[t];
        double *a = acc + codes[r] * width;
        const float *s = x + r * ldx;
        if (t + 8 < count) /* rows arrive in code order, not memory order: fetch ahead */
            for (int64_t j = 0; j < width; j += 16) _mm_prefetch((const char *)(x + order[t + 8] * ldx + j), _MM_HINT_T0);
        int64_t j = 0;
        for (; j + 16 <= width; j += 16) {
            __m512d lo = _mm512_add_pd(_mm512_loadu_pd(a + j), _mm512_cvtps_pd(_mm256_loadu_ps(s + j)));
            __m512d hi = _mm512_add_pd(_mm512_loadu_pd(a + j + 8), _mm512_cvtps_pd(_mm256_loadu_ps(s + j + 8)));
            _mm512_storeu_pd(a + j, lo);
            _mm512_storeu_pd(a + j + 8, hi);
        }
        for (; j < width; j++) a[j] += (double)s[j];
    }
}
#endif

void vq_scatter_add_rows(const float *x, int64_t ldx, const int64_t *codes, const int64_t *order, int64_t count,
                                 int64_t width, double *acc) {
#if VQ_X86
    static int level = -1;
    if (level < 0) level = vq_cpu_level();
    if (level >= 2) { scatter_add_avx512(x, ldx, codes, order, count, width, acc); return; }
#endif
    scatter_add_generic(x, ldx, codes, order, count, width, acc);
}

