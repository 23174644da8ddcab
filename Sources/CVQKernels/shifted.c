// Kernels over shifted views of one buffer: a stride-1 convolution over a zero-padded, channel-major input
// reads row `(channel, kernel offset)` of its product at `buffer + offset` (see ShiftedProduct.swift).
// `vq_gemm_ukr_offsets` (the GEMM tile reading B in place) lives beside the packed tile in kernels.c.
#include "vq_kernels.h"
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>
#endif

/* ---------- one output row over shifted rows (a convolution to few channels) ---------- */
static void offset_row_generic(int64_t kc, const float *a, const float *b, const int64_t *off, float *c,
                               int64_t width, int acc) {
    if (!acc) memset(c, 0, (size_t)width * sizeof(float));
    for (int64_t k = 0; k < kc; k++) {
        const float *bk = b + off[k];
        float ak = a[k];
        for (int64_t j = 0; j < width; j++) c[j] += ak * bk[j];
    }
}

#if VQ_X86
__attribute__((target("avx2,fma")))
static void offset_row_avx2(int64_t kc, const float *a, const float *b, const int64_t *off, float *c,
                            int64_t width, int acc) {
    int64_t j = 0;
    for (; j + 64 <= width; j += 64) {
        __m256 t[8];
        for (int u = 0; u < 8; u++) t[u] = acc ? _mm256_loadu_ps(c + j + 8 * u) : _mm256_setzero_ps();
        for (int64_t k = 0; k < kc; k++) {
            const float *bk = b + off[k] + j;
            __m256 ak = _mm256_broadcast_ss(a + k);
            for (int u = 0; u < 8; u++) t[u] = _mm256_fmadd_ps(ak, _mm256_loadu_ps(bk + 8 * u), t[u]);
        }
        for (int u = 0; u < 8; u++) _mm256_storeu_ps(c + j + 8 * u, t[u]);
    }
    for (; j < width; j++) {
        float t = acc ? c[j] : 0;
        for (int64_t k = 0; k < kc; k++) t = __builtin_fmaf(a[k], b[off[k] + j], t);
        c[j] = t;
    }
}

__attribute__((target("avx512f")))
static void offset_row_avx512(int64_t kc, const float *a, const float *b, const int64_t *off, float *c,
                              int64_t width, int acc) {
    int64_t j = 0;
    for (; j + 128 <= width; j += 128) {
        __m512 t[8];
        for (int u = 0; u < 8; u++) t[u] = acc ? _mm512_loadu_ps(c + j + 16 * u) : _mm512_setzero_ps();
        for (int64_t k = 0; k < kc; k++) {
            const float *bk = b + off[k] + j;
            __m512 ak = _mm512_set1_ps(a[k]);
            for (int u = 0; u < 8; u++) t[u] = _mm512_fmadd_ps(ak, _mm512_loadu_ps(bk + 16 * u), t[u]);
        }
        for (int u = 0; u < 8; u++) _mm512_storeu_ps(c + j + 16 * u, t[u]);
    }
    for (; j < width; j++) {
        float t = acc ? c[j] : 0;
        for (int64_t k = 0; k < kc; k++) t = __builtin_fmaf(a[k], b[off[k] + j], t);
        c[j] = t;
    }
}
#endif

void vq_offset_row(int level, int64_t kc, const float *a, const float *b, const int64_t *offsets, float *c,
                   int64_t width, int accumulate) {
#if VQ_X86
    if (level >= 2) { offset_row_avx512(kc, a, b, offsets, c, width, accumulate); return; }
    if (level == 1) { offset_row_avx2(kc, a, b, offsets, c, width, accumulate); return; }
#endif
    offset_row_generic(kc, a, b, offsets, c, width, accumulate);
}

/* ---------- dot products of rows against shifted views (a convolution's weight gradient) ---------- */
static void shifted_dots_generic(int64_t len, const float *a, int64_t lda, int rows, const float *b,
                                 const int64_t *off, int cols, float *c, int64_t ldc) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float t = 0;
            for (int64_t p = 0; p < len; p++) t += a[i * lda + p] * b[off[j] + p];
            c[i * ldc + j] = t;
        }
}

#if VQ_X86
/* R rows × 4 shifted views: R·4 accumulators over 16 lanes (the tail masked), then each summed across lanes. */
__attribute__((target("avx512f"), always_inline))
static inline void shifted_dots_avx512_body(int R, int64_t len, const float *a, int64_t lda, const float *b,
                                            const int64_t *off, int cols, float *c, int64_t ldc) {
    __m512 acc[6][4];
    const float *bj[4];
    for (int j = 0; j < 4; j++) bj[j] = b + off[j < cols ? j : 0];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t p = 0;
    for (; p + 16 <= len; p += 16) {
        __m512 bv[4];
        for (int j = 0; j < 4; j++) bv[j] = _mm512_loadu_ps(bj[j] + p);
        for (int i = 0; i < R; i++) {
            __m512 av = _mm512_loadu_ps(a + i * lda + p);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
        }
    }
    if (p < len) {
        __mmask16 m = (__mmask16)((1u << (len - p)) - 1);
        __m512 bv[4];
        for (int j = 0; j < 4; j++) bv[j] = _mm512_maskz_loadu_ps(m, bj[j] + p);
        for (int i = 0; i < R; i++) {
            __m512 av = _mm512_maskz_loadu_ps(m, a + i * lda + p);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < cols; j++) c[i * ldc + j] = _mm512_reduce_add_ps(acc[i][j]);
}

__attribute__((target("avx512f")))
static void shifted_dots_avx512(int64_t len, const float *a, int64_t lda, int rows, const float *b,
                                const int64_t *off, int cols, float *c, int64_t ldc) {
    switch (rows) {
    case 1: shifted_dots_avx512_body(1, len, a, lda, b, off, cols, c, ldc); break;
    case 2: shifted_dots_avx512_body(2, len, a, lda, b, off, cols, c, ldc); break;
    case 3: shifted_dots_avx512_body(3, len, a, lda, b, off, cols, c, ldc); break;
    case 4: shifted_dots_avx512_body(4, len, a, lda, b, off, cols, c, ldc); break;
    case 5: shifted_dots_avx512_body(5, len, a, lda, b, off, cols, c, ldc); break;
    default: shifted_dots_avx512_body(6, len, a, lda, b, off, cols, c, ldc); break;
    }
}

__attribute__((target("avx2,fma"), always_inline))
static inline void shifted_dots_avx2_body(int R, int64_t len, const float *a, int64_t lda, const float *b,
                                          const int64_t *off, int cols, float *c, int64_t ldc) {
    __m256 acc[3][4];
    const float *bj[4];
    for (int j = 0; j < 4; j++) bj[j] = b + off[j < cols ? j : 0];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 8 <= len; p += 8) {
        __m256 bv[4];
        for (int j = 0; j < 4; j++) bv[j] = _mm256_loadu_ps(bj[j] + p);
        for (int i = 0; i < R; i++) {
            __m256 av = _mm256_loadu_ps(a + i * lda + p);
            for (int j = 0; j < 4; j++) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < cols; j++) {
            float lanes[8];
            _mm256_storeu_ps(lanes, acc[i][j]);
            float t = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
            for (int64_t q = p; q < len; q++) t = __builtin_fmaf(a[i * lda + q], bj[j][q], t);
            c[i * ldc + j] = t;
        }
}

__attribute__((target("avx2,fma")))
static void shifted_dots_avx2(int64_t len, const float *a, int64_t lda, int rows, const float *b,
                              const int64_t *off, int cols, float *c, int64_t ldc) {
    while (rows > 0) {
        int r = rows < 3 ? rows : 3;
        if (r == 1) shifted_dots_avx2_body(1, len, a, lda, b, off, cols, c, ldc);
        else if (r == 2) shifted_dots_avx2_body(2, len, a, lda, b, off, cols, c, ldc);
        else shifted_dots_avx2_body(3, len, a, lda, b, off, cols, c, ldc);
        a += r * lda;
        c += r * ldc;
        rows -= r;
    }
}
#endif

void vq_shifted_dots(int level, int64_t len, const float *a, int64_t lda, int rows, const float *b,
                     const int64_t *offsets, int cols, float *c, int64_t ldc) {
#if VQ_X86
    if (level >= 2) { shifted_dots_avx512(len, a, lda, rows, b, offsets, cols, c, ldc); return; }
    if (level == 1) { shifted_dots_avx2(len, a, lda, rows, b, offsets, cols, c, ldc); return; }
#endif
    shifted_dots_generic(len, a, lda, rows, b, offsets, cols, c, ldc);
}

/* ---------- an 8 × 32 tile over shifted rows (AVX-512): for 8·k-row products, which the 12-row tile would pad ---------- */
#if VQ_X86
__attribute__((target("avx512f")))
static void ukr8_avx512_offsets(int64_t kc, const float *a, const float *b, const int64_t *off, float *c, int64_t ldc,
                                int acc) {
    __m512 t[8][2];
    for (int i = 0; i < 8; i++) t[i][0] = t[i][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const float *bk = b + off[k];
        __m512 b0 = _mm512_loadu_ps(bk), b1 = _mm512_loadu_ps(bk + 16);
        for (int i = 0; i < 8; i++) {
            __m512 av = _mm512_set1_ps(a[i]);
            t[i][0] = _mm512_fmadd_ps(av, b0, t[i][0]);
            t[i][1] = _mm512_fmadd_ps(av, b1, t[i][1]);
        }
        a += 8;
    }
    for (int i = 0; i < 8; i++) {
        if (acc) {
            t[i][0] = _mm512_add_ps(_mm512_loadu_ps(c + i * ldc), t[i][0]);
            t[i][1] = _mm512_add_ps(_mm512_loadu_ps(c + i * ldc + 16), t[i][1]);
        }
        _mm512_storeu_ps(c + i * ldc, t[i][0]);
        _mm512_storeu_ps(c + i * ldc + 16, t[i][1]);
    }
}
#endif

int vq_gemm_ukr8_offsets(int level, int64_t kc, const float *a, const float *b, const int64_t *offsets, float *c,
                         int64_t ldc, int accumulate) {
#if VQ_X86
    if (level >= 2) { ukr8_avx512_offsets(kc, a, b, offsets, c, ldc, accumulate); return 1; }
#endif
    (void)level; (void)kc; (void)a; (void)b; (void)offsets; (void)c; (void)ldc; (void)accumulate;
    return 0;
}
