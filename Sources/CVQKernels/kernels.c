#include "vq_kernels.h"
#include <math.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>
#endif

int vq_cpu_level(void) {
#if VQ_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

int vq_gemm_mr(int level) { return level == 2 ? 12 : (level == 1 ? 6 : 4); }
int vq_gemm_nr(int level) { return level == 2 ? 32 : (level == 1 ? 16 : 8); }

/* ---------- portable 4x8 ---------- */
static void ukr_generic(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int acc) {
    float t[4][8];
    memset(t, 0, sizeof t);
    for (int64_t k = 0; k < kc; k++) {
        const float *ak = a + k * 4, *bk = b + k * 8;
        for (int i = 0; i < 4; i++) {
            float ai = ak[i];
            for (int j = 0; j < 8; j++) t[i][j] += ai * bk[j];
        }
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++) c[i * ldc + j] = acc ? c[i * ldc + j] + t[i][j] : t[i][j];
}

#if VQ_X86
/* ---------- AVX2 + FMA 6x16 ---------- */
__attribute__((target("avx2,fma")))
static void ukr_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        __m256 av;
#define ROW(i, x0, x1) av = _mm256_broadcast_ss(a + i); x0 = _mm256_fmadd_ps(av, b0, x0); x1 = _mm256_fmadd_ps(av, b1, x1);
        ROW(0, c00, c01) ROW(1, c10, c11) ROW(2, c20, c21) ROW(3, c30, c31) ROW(4, c40, c41) ROW(5, c50, c51)
#undef ROW
        a += 6;
        b += 16;
    }
#define STORE(i, x0, x1)                                                                   \
    if (acc) {                                                                             \
        x0 = _mm256_add_ps(_mm256_loadu_ps(c + i * ldc), x0);                              \
        x1 = _mm256_add_ps(_mm256_loadu_ps(c + i * ldc + 8), x1);                          \
    }                                                                                      \
    _mm256_storeu_ps(c + i * ldc, x0);                                                     \
    _mm256_storeu_ps(c + i * ldc + 8, x1);
    STORE(0, c00, c01) STORE(1, c10, c11) STORE(2, c20, c21) STORE(3, c30, c31) STORE(4, c40, c41)
    STORE(5, c50, c51)
#undef STORE
}

/* ---------- AVX-512F 12x32 ---------- */
__attribute__((target("avx512f")))
static void ukr_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int acc) {
#define DECL(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
    DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6) DECL(7) DECL(8) DECL(9) DECL(10) DECL(11)
#undef DECL
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        __m512 av;
#define ROW(i) av = _mm512_set1_ps(a[i]); c##i##0 = _mm512_fmadd_ps(av, b0, c##i##0); c##i##1 = _mm512_fmadd_ps(av, b1, c##i##1);
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5) ROW(6) ROW(7) ROW(8) ROW(9) ROW(10) ROW(11)
#undef ROW
        a += 12;
        b += 32;
    }
#define STORE(i)                                                                           \
    if (acc) {                                                                             \
        c##i##0 = _mm512_add_ps(_mm512_loadu_ps(c + i * ldc), c##i##0);                    \
        c##i##1 = _mm512_add_ps(_mm512_loadu_ps(c + i * ldc + 16), c##i##1);               \
    }                                                                                      \
    _mm512_storeu_ps(c + i * ldc, c##i##0);                                                \
    _mm512_storeu_ps(c + i * ldc + 16, c##i##1);
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7) STORE(8) STORE(9) STORE(10)
    STORE(11)
#undef STORE
}
#endif

void vq_gemm_ukr(int level, int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                 int accumulate) {
#if VQ_X86
    if (level == 2) { ukr_avx512(kc, a, b, c, ldc, accumulate); return; }
    if (level == 1) { ukr_avx2(kc, a, b, c, ldc, accumulate); return; }
#endif
    ukr_generic(kc, a, b, c, ldc, accumulate);
}

void vq_argmin_update(const float *dots, int64_t ld, int64_t rows, int64_t cols, const float *xx,
                      const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index) {
    for (int64_t r = 0; r < rows; r++) {
        const float *d = dots + r * ld;
        float b = best[r];
        int64_t bi = best_index[r];
        if (cosine) {
            for (int64_t j = 0; j < cols; j++) {
                float s = -d[j];
                if (s < b) { b = s; bi = code_base + j; }
            }
        } else {
            const float x2 = xx[r];
            for (int64_t j = 0; j < cols; j++) {
                float t = (x2 + cc[j]) + d[j] * -2.0f;
                t = (t > 1e-8f || t != t) ? t : 1e-8f; /* clamp(min=1e-8), NaN stays NaN */
                float s = sqrtf(t);
                if (s < b) { b = s; bi = code_base + j; }
            }
        }
        best[r] = b;
        best_index[r] = bi;
    }
}

