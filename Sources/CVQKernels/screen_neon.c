/* The nearest-code screen on AArch64 with the dot-product extension (SDOT: four signed 8-bit products summed into
   each 32-bit lane; Apple M1 and later, Neoverse N1 / Graviton 2 and later): the 7-bit format of the AVX2 tile.
   Its query rows (±63 offset by 64, so 1 … 127) and codes (±127) are both valid signed bytes, the integer sums exact
   (≤ 256 × 127 × 127 < 2³¹), so the scores and bounds are the emulation's, lane for lane. Without the extension
   (plain ARMv8.0) the search is the float one. */
#include "screen_impl.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>
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

/* One row's epilogue for 16 codes (four vectors of four): the emulation's arithmetic, fused multiply-adds as fmaf. */
static inline void row_epilogue_neon(const int32x4_t t[4], int cols, const float *rt, int64_t rstride, const float *ct,
                                     int64_t cstride, int cosine, int64_t code_base, float *lows, float *minup) {
    const float32x4_t inf = vdupq_n_f32(INFINITY), sx = vdupq_n_f32(ROW_TERM(1)), x2 = vdupq_n_f32(ROW_TERM(0));
    const float32x4_t h = vdupq_n_f32(ROW_TERM(2)), l = vdupq_n_f32(ROW_TERM(3)), a = vdupq_n_f32(ROW_TERM(4));
    const float32x4_t r = vdupq_n_f32(ROW_TERM(5));
    const int32x4_t lane = {0, 1, 2, 3};
    float32x4_t up = inf;
    for (int q = 0; q < 4; q++) {
        const int o = 4 * q;
        const float32x4_t dq = vmulq_f32(vsubq_f32(vcvtq_f32_s32(t[q]), vld1q_f32(CODE_TERM(5) + o)),
                                         vmulq_f32(sx, vld1q_f32(CODE_TERM(1) + o)));
        float32x4_t s;
        if (cosine) {
            s = vnegq_f32(dq);
        } else {
            const float32x4_t v = vaddq_f32(vaddq_f32(x2, vld1q_f32(CODE_TERM(0) + o)), vmulq_f32(dq, vdupq_n_f32(-2.0f)));
            const uint32x4_t keep = vorrq_u32(vcgtq_f32(v, vdupq_n_f32(1e-8f)), vmvnq_u32(vceqq_f32(v, v)));
            s = vbslq_f32(keep, v, vdupq_n_f32(1e-8f));   /* clamp(min=1e-8), NaN stays NaN */
        }
        const float32x4_t b = vfmaq_f32(vfmaq_f32(vfmaq_f32(vaddq_f32(r, vld1q_f32(CODE_TERM(4) + o)),
                                                            a, vld1q_f32(CODE_TERM(3) + o)),
                                                  l, vld1q_f32(CODE_TERM(1) + o)),
                                        h, vld1q_f32(CODE_TERM(2) + o));
        const uint32x4_t live = vcltq_s32(vaddq_s32(lane, vdupq_n_s32(o)), vdupq_n_s32(cols));
        up = vminq_f32(up, vbslq_f32(live, vaddq_f32(s, b), inf));
        vst1q_f32(lows + code_base + o, vsubq_f32(s, b));   /* past `cols`: inside the row's panel, never read */
    }
    vst1q_f32(minup, vminq_f32(vld1q_f32(minup), up));
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
                row_epilogue_neon(t[r], cols - 16 * half, rt + i, rstride, ct + 16 * half, cstride, cosine,
                                  code_base + 16 * half, lows + i * ldlow, minup + 16 * i);
            }
        }
    }
}
#endif
