/* The nearest-code screen at kernel level 0 on x86-64 (SSE2, which every x86-64 CPU has): 8-bit values (±127)
   held in 16-bit pairs, multiplied and pair-summed by PMADDWD — eight products per instruction, twice the float
   SSE2 tile's — into exact 32-bit sums (≤ 256 × 127 × 127 < 2³¹); the portable epilogue (screen_impl.h) turns them
   into scores and bounds. */
#include "screen_impl.h"

#if VQ_X86

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
            const vq_i4 s0[4] = {(vq_i4)t0[0], (vq_i4)t0[1], (vq_i4)t0[2], (vq_i4)t0[3]};
            const vq_i4 s1[4] = {(vq_i4)t1[0], (vq_i4)t1[1], (vq_i4)t1[2], (vq_i4)t1[3]};
            if (count[i] >= 0)
                screen_row_epilogue4(s0, c, rt + i, rstride, ct + 16 * half, cstride, cosine, code_base + 16 * half,
                                     lows + i * ldlow, minup + 16 * i);
            if (second)
                screen_row_epilogue4(s1, c, rt + i + 1, rstride, ct + 16 * half, cstride, cosine, code_base + 16 * half,
                                     lows + (i + 1) * ldlow, minup + 16 * (i + 1));
        }
    }
}

#endif
