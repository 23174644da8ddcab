/* The nearest-code screen at kernel level 0 on x86-64 (SSE2, which every x86-64 CPU has): 8-bit values (±127)
   held in 16-bit pairs, multiplied and pair-summed by PMADDWD — eight products per instruction, twice the float
   SSE2 tile's — into exact 32-bit sums (≤ 256 × 127 × 127 < 2³¹). Scores as the emulation forms them; the bounds with
   separate multiplies and adds (SSE2 has no fused multiply-add: their own rounding is within the bound's slack). */
#include "screen_impl.h"
#include <math.h>

#if VQ_X86

/* One row's epilogue for 16 codes (four vectors of four). */
static inline void row_epilogue_sse2(const __m128i t[4], int cols, const float *rt, int64_t rstride, const float *ct,
                                     int64_t cstride, int cosine, int64_t code_base, float *lows, float *minup) {
    const __m128 inf = _mm_set1_ps(INFINITY), sx = _mm_set1_ps(ROW_TERM(1)), x2 = _mm_set1_ps(ROW_TERM(0));
    const __m128 h = _mm_set1_ps(ROW_TERM(2)), l = _mm_set1_ps(ROW_TERM(3)), a = _mm_set1_ps(ROW_TERM(4));
    const __m128 r = _mm_set1_ps(ROW_TERM(5));
    __m128 up = inf;
    for (int q = 0; q < 4; q++) {
        const int o = 4 * q;
        const __m128 dq = _mm_mul_ps(_mm_sub_ps(_mm_cvtepi32_ps(t[q]), _mm_loadu_ps(CODE_TERM(5) + o)),
                                     _mm_mul_ps(sx, _mm_loadu_ps(CODE_TERM(1) + o)));
        __m128 s;
        if (cosine) {
            s = _mm_xor_ps(dq, _mm_set1_ps(-0.0f));
        } else {
            const __m128 v = _mm_add_ps(_mm_add_ps(x2, _mm_loadu_ps(CODE_TERM(0) + o)), _mm_mul_ps(dq, _mm_set1_ps(-2.0f)));
            s = _mm_max_ps(_mm_set1_ps(1e-8f), v);   /* clamp(min=1e-8); MAXPS returns its second operand for a NaN */
        }
        const __m128 b = _mm_add_ps(_mm_mul_ps(h, _mm_loadu_ps(CODE_TERM(2) + o)),
                         _mm_add_ps(_mm_mul_ps(l, _mm_loadu_ps(CODE_TERM(1) + o)),
                         _mm_add_ps(_mm_mul_ps(a, _mm_loadu_ps(CODE_TERM(3) + o)), _mm_add_ps(r, _mm_loadu_ps(CODE_TERM(4) + o)))));
        const __m128 live = _mm_castsi128_ps(_mm_cmplt_epi32(_mm_setr_epi32(o, o + 1, o + 2, o + 3), _mm_set1_epi32(cols)));
        up = _mm_min_ps(up, _mm_or_ps(_mm_and_ps(live, _mm_add_ps(s, b)), _mm_andnot_ps(live, inf)));
        _mm_storeu_ps(lows + code_base + o, _mm_sub_ps(s, b));   /* past `cols`: inside the row's panel, never read */
    }
    _mm_storeu_ps(minup, _mm_min_ps(_mm_loadu_ps(minup), up));
}

/* Two rows × 16 codes per pass over the panel's steps: eight accumulators, the step's four code vectors and the two
   rows' broadcast pairs (14 of the 16 registers); six row pairs × two code halves make the 12 × 32 tile. */
void vq_screen_tile_i16_sse2(int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols, const float *rt,
                             int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                             float *lows, int64_t ldlow, float *minup, const int32_t *count) {
    for (int i = 0; i < rows; i += 2) {
        const int second = i + 1 < rows && count[i + 1] >= 0;
        if (count[i] < 0 && !second) continue;
        for (int half = 0; half < 2 && 16 * half < cols; half++) {
            __m128i t0[4], t1[4];
            for (int q = 0; q < 4; q++) t0[q] = t1[q] = _mm_setzero_si128();
            const uint32_t *bk = b + 16 * half;
            for (int64_t k = 0; k < steps; k++, bk += 32) {
                const __m128i a0 = _mm_set1_epi32((int32_t)a[k * 12 + i]), a1 = _mm_set1_epi32((int32_t)a[k * 12 + i + 1]);
                for (int q = 0; q < 4; q++) {
                    const __m128i bq = _mm_load_si128((const __m128i *)(bk + 4 * q));
                    t0[q] = _mm_add_epi32(t0[q], _mm_madd_epi16(a0, bq));
                    t1[q] = _mm_add_epi32(t1[q], _mm_madd_epi16(a1, bq));
                }
            }
            const int c = cols - 16 * half;
            if (count[i] >= 0)
                row_epilogue_sse2(t0, c, rt + i, rstride, ct + 16 * half, cstride, cosine, code_base + 16 * half,
                                  lows + i * ldlow, minup + 16 * i);
            if (second)
                row_epilogue_sse2(t1, c, rt + i + 1, rstride, ct + 16 * half, cstride, cosine, code_base + 16 * half,
                                  lows + (i + 1) * ldlow, minup + 16 * (i + 1));
        }
    }
}

#endif
