/* The nearest-code screen on AArch64 with the dot-product extension (SDOT: four signed 8-bit products summed into
   each 32-bit lane; Apple M1 and later, Neoverse N1 / Graviton 2 and later): the 7-bit format of the AVX2 tile.
   Its query rows (±63 offset by 64, so 1 … 127) and codes (±127) are both valid signed bytes, the integer sums exact
   (≤ 256 × 127 × 127 < 2³¹); the portable epilogue (screen_impl.h) forms the scores and bounds. Without the extension
   (plain ARMv8.0) the search is the float one. */
#include "screen_impl.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#endif

int vq_screen_has_dotprod(void) {
#if defined(__APPLE__)
    return 1;                                        /* every arm64 Mac */
#elif defined(__linux__)
    return (getauxval(AT_HWCAP) & (1UL << 20)) != 0; /* HWCAP_ASIMDDP */
#else
    return 0;
#endif
}

/* Four rows × 16 codes per pass over the panel's steps (16 accumulators, the step's four code vectors and the four
   rows' quads in one vector: 21 of the 32 registers); three row quarters × two code halves make the 12 × 32 tile. */
__attribute__((target("dotprod")))
void vq_screen_tile_i7_neon(int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols, const float *rt,
                            int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                            float *lows, int64_t ldlow, float *minup, const int32_t *count) {
    for (int i0 = 0; i0 < rows; i0 += 4) {
        int any = 0;
        for (int r = 0; r < 4 && i0 + r < rows; r++) any |= count[i0 + r] >= 0;
        if (!any) continue;
        for (int half = 0; half < 2 && 16 * half < cols; half++) {
            int32x4_t t[4][4];
            for (int r = 0; r < 4; r++)
                for (int q = 0; q < 4; q++) t[r][q] = vdupq_n_s32(0);
            for (int64_t k = 0; k < steps; k++) {
                const int8x16_t av = vreinterpretq_s8_u32(vld1q_u32(a + k * 12 + i0));
                const uint32_t *bk = b + k * 32 + 16 * half;
                int8x16_t bq[4];
                for (int q = 0; q < 4; q++) bq[q] = vreinterpretq_s8_u32(vld1q_u32(bk + 4 * q));
                for (int q = 0; q < 4; q++) {
                    t[0][q] = vdotq_laneq_s32(t[0][q], bq[q], av, 0);
                    t[1][q] = vdotq_laneq_s32(t[1][q], bq[q], av, 1);
                    t[2][q] = vdotq_laneq_s32(t[2][q], bq[q], av, 2);
                    t[3][q] = vdotq_laneq_s32(t[3][q], bq[q], av, 3);
                }
            }
            for (int r = 0; r < 4; r++) {
                const int i = i0 + r;
                if (i >= rows || count[i] < 0) continue;
                const vq_i4 sums[4] = {(vq_i4)t[r][0], (vq_i4)t[r][1], (vq_i4)t[r][2], (vq_i4)t[r][3]};
                screen_row_epilogue4(sums, cols - 16 * half, rt + i, rstride, ct + 16 * half, cstride, cosine,
                                     code_base + 16 * half, lows + i * ldlow, minup + 16 * i);
            }
        }
    }
}
#endif
