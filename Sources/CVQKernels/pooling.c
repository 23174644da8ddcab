// Max pooling over windows that tile a 2-D plane (stride = kernel, no padding): the value and the flat
// position of each window's first largest element, NaN counting as largest (the first NaN wins) — the rule
// of Tensor.maxPool(plan:). Branch-free: on real data every comparison would otherwise mispredict.
#include "vq_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>
#endif

static inline void pool_window(const float *src, int64_t width, int64_t origin, int64_t kh, int64_t kw,
                               float *dst, int32_t *arg) {
    float best = src[origin];
    int64_t at = origin;
    for (int64_t dy = 0; dy < kh; dy++)
        for (int64_t dx = 0; dx < kw; dx++) {
            int64_t p = origin + dy * width + dx;
            float v = src[p];
            int take = (v > best) | ((v != v) & (best == best));
            best = take ? v : best;
            at = take ? p : at;
        }
    *dst = best;
    *arg = (int32_t)at;
}

#if VQ_X86
/* 2×2 windows, 16 at a time (the last group masked): the even and odd lanes of two rows are each window's
   four candidates, compared in row-major window order. */
__attribute__((target("avx512f")))
static void pool2x2_avx512(const float *src, int64_t width, int64_t oy, int64_t ow, float *dst, int32_t *arg) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t ox = 0; ox < ow; ox += 16) {
        int64_t n = ow - ox < 16 ? ow - ox : 16;
        __mmask16 out = (__mmask16)((1u << n) - 1);
        __mmask16 lo = (__mmask16)(2 * n >= 16 ? 0xFFFF : (1u << (2 * n)) - 1);
        __mmask16 hi = (__mmask16)(2 * n <= 16 ? 0 : (1u << (2 * n - 16)) - 1);
        int64_t origin = 2 * oy * width + 2 * ox;
        const float *r0 = src + origin, *r1 = r0 + width;
        __m512 a0 = _mm512_maskz_loadu_ps(lo, r0), a1 = _mm512_maskz_loadu_ps(hi, r0 + 16);
        __m512 b0 = _mm512_maskz_loadu_ps(lo, r1), b1 = _mm512_maskz_loadu_ps(hi, r1 + 16);
        __m512i base = _mm512_add_epi32(_mm512_set1_epi32((int32_t)origin), even);
        __m512 best = _mm512_permutex2var_ps(a0, even, a1);
        __m512i at = base;
        __m512 cand[3] = {_mm512_permutex2var_ps(a0, odd, a1), _mm512_permutex2var_ps(b0, even, b1),
                          _mm512_permutex2var_ps(b0, odd, b1)};
        __m512i pos[3] = {_mm512_add_epi32(base, _mm512_set1_epi32(1)),
                          _mm512_add_epi32(base, _mm512_set1_epi32((int32_t)width)),
                          _mm512_add_epi32(base, _mm512_set1_epi32((int32_t)width + 1))};
        for (int c = 0; c < 3; c++) {
            __mmask16 take = _mm512_cmp_ps_mask(cand[c], best, _CMP_GT_OQ) |
                             (_mm512_cmp_ps_mask(cand[c], cand[c], _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
            best = _mm512_mask_blend_ps(take, best, cand[c]);
            at = _mm512_mask_blend_epi32(take, at, pos[c]);
        }
        _mm512_mask_storeu_ps(dst + ox, out, best);
        _mm512_mask_storeu_epi32(arg + ox, out, at);
    }
}
#endif

void vq_max_pool_tiles(int level, const float *src, int64_t width, int64_t oh, int64_t ow, int64_t kh, int64_t kw,
                       float *dst, int32_t *arg) {
    for (int64_t oy = 0; oy < oh; oy++) {
#if VQ_X86
        if (level >= 2 && kh == 2 && kw == 2) { pool2x2_avx512(src, width, oy, ow, dst + oy * ow, arg + oy * ow); continue; }
#else
        (void)level;
#endif
        for (int64_t ox = 0; ox < ow; ox++) pool_window(src, width, oy * kh * width + ox * kw, kh, kw, dst + oy * ow + ox, arg + oy * ow + ox);
    }
}
