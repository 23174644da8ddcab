/* What the screening kernels share (screen.c: formats, packing, the AVX-512 tiles, the portable emulation;
   screen_avx2.c: the AVX2 tiles): the bound's constants, the term-plane accessors and the AVX2 entry points. */
#ifndef VQ_SCREEN_IMPL_H
#define VQ_SCREEN_IMPL_H
#include <math.h>
#include <stdint.h>
#include "vq_kernels.h"
#include "vq_simd.h"

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>
#endif

#define SCREEN_ALPHA (0x1p-6f + 0x1p-12f) /* × ‖x‖‖c‖: BF16 rounding of both factors, both sums' rounding */
#define SCREEN_BETA 0x1p-21f              /* × (‖x‖² + ‖c‖²): rounding of the scores and of the bounds */
#define SCREEN_TAU 0x1p-110f              /* × (1 + ‖x‖ + ‖c‖): denormals flushed by the BF16 unit */
#define SCREEN_I8_FLOAT 0x1p-14f           /* × ‖x‖‖c‖ (8-bit): the float sums' and the rescaling's rounding */
#define SCREEN_I8_HALF 1.0012f             /* 2 × (1 + 2⁻¹⁰) × 0.5001 / 2: half a quantisation step, with slack */
#define SCREEN_I8_LOW 1e-15f               /* a row's or code's largest magnitude must be 0 or in [LOW, HIGH] */
#define SCREEN_I8_HIGH 1e15f

/* Integer levels and the unsigned offset of a format's packed query rows (the left operand of VPDPBUSD /
   VPMADDUBSW): 8-bit rows ±127 offset by 128; 7-bit rows ±63 offset by 64, so that a VPMADDUBSW pair
   (≤ 2 × 127 × 127 = 32,258) never saturates its 16-bit sum; with 7-bit codes too (±63, VQ_SCREEN_I7X7) a pair is
   ≤ 16,002 and two depth steps add in 16 bits before one VPMADDWD. Codes are ±127 in the other formats. */
#define SCREEN_ROW_LEVELS(format) ((format) == VQ_SCREEN_I7 || (format) == VQ_SCREEN_I7X7 ? 63 : 127)
#define SCREEN_CODE_LEVELS(format) ((format) == VQ_SCREEN_I7X7 ? 63 : 127)
#define SCREEN_ROW_OFFSET(format) \
    ((format) == VQ_SCREEN_I7 || (format) == VQ_SCREEN_I7X7 ? 64 : (format) == VQ_SCREEN_I16 ? 0 : 128)
/* Values per packed word: two (BF16 pairs, 16-bit pairs) or four (byte quads). */
#define SCREEN_PAIRS(format) ((format) == VQ_SCREEN_BF16 || (format) == VQ_SCREEN_I16)

#define ROW_TERM(k) (rt[(k) * rstride])
#define CODE_TERM(k) (ct + (k) * cstride)

/* One row's epilogue for 16 codes on the portable four-lane vectors (the SSE2 and SDOT tiles): the exact integer sums
   `t` to scores — the emulation's arithmetic — and bounds (fused multiply-adds where the target has them, else a
   product and a sum: either rounding is within the bound's slack); the lower bounds stored (past `cols` inside the
   row's panel, never read), the upper ones of the first `cols` codes folded into the row's first four minima. */
static inline void screen_row_epilogue4(const vq_i4 t[4], int cols, const float *rt, int64_t rstride, const float *ct,
                                        int64_t cstride, int cosine, int64_t code_base, float *lows, float *minup) {
    const vq_f4 inf = vq_f4_splat(INFINITY), eps = vq_f4_splat(1e-8f), sx = vq_f4_splat(ROW_TERM(1));
    const vq_f4 x2 = vq_f4_splat(ROW_TERM(0)), h = vq_f4_splat(ROW_TERM(2)), l = vq_f4_splat(ROW_TERM(3));
    const vq_f4 a = vq_f4_splat(ROW_TERM(4)), r = vq_f4_splat(ROW_TERM(5));
    vq_f4 up = inf;
    for (int q = 0; q < 4; q++) {
        const int o = 4 * q;
        const vq_f4 dq = (__builtin_convertvector(t[q], vq_f4) - vq_f4_load(CODE_TERM(5) + o))
                       * (sx * vq_f4_load(CODE_TERM(1) + o));
        vq_f4 s;
        if (cosine) {
            s = -dq;
        } else {
            const vq_f4 twice = dq * vq_f4_splat(-2.0f);
            const vq_f4 v = (x2 + vq_f4_load(CODE_TERM(0) + o)) + twice;
            s = vq_f4_raise(v, eps);   /* clamp(min=1e-8), NaN stays NaN */
        }
        const vq_f4 base = r + vq_f4_load(CODE_TERM(4) + o);
#if VQ_NATIVE_FMA
        const vq_f4 b = vq_f4_fma(h, vq_f4_load(CODE_TERM(2) + o),
                        vq_f4_fma(l, vq_f4_load(CODE_TERM(1) + o), vq_f4_fma(a, vq_f4_load(CODE_TERM(3) + o), base)));
#else
        const vq_f4 ha = h * vq_f4_load(CODE_TERM(2) + o), la = l * vq_f4_load(CODE_TERM(1) + o);
        const vq_f4 aa = a * vq_f4_load(CODE_TERM(3) + o);
        const vq_f4 b = ha + (la + (aa + base));
#endif
        /* Codes past `cols` (the last panel's) never give the minimum. */
        const vq_f4 u = cols >= 16 ? s + b : vq_f4_select((vq_i4){o, o + 1, o + 2, o + 3} < (vq_i4){cols, cols, cols, cols}, s + b, inf);
        up = vq_f4_select(u < up, u, up);
        vq_f4_store(lows + code_base + o, s - b);
    }
    const vq_f4 m = vq_f4_load(minup);
    vq_f4_store(minup, vq_f4_select(up < m, up, m));
}

#if VQ_X86
/* The 12 × 32 tile of 16-bit pairs on SSE2 (PMADDWD: baseline x86-64, kernel level 0), with vq_screen_tile's
   arguments and results. */
void vq_screen_tile_i16_sse2(int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols, const float *rt,
                             int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                             float *lows, int64_t ldlow, float *minup, const int32_t *count);
/* The 12 × 32 tile of 7-bit rows × 8-bit codes on AVX2 (VPMADDUBSW, VPMADDWD: exact integer sums), with
   vq_screen_tile's arguments and results; `paired` (7-bit codes) adds two steps in 16 bits. */
void vq_screen_tile_i7_avx2(int paired, int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols, const float *rt,
                            int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                            float *lows, int64_t ldlow, float *minup, const int32_t *count);
/* collect_scalar on AVX2 compares: the same list. */
void vq_screen_collect_avx2(int64_t k, const float *lows, const float *minup, int32_t *count, int32_t *cand, int cap);
/* The integer packing of `rows` rows (≤ 32, d ≤ 512) on AVX2: the same bytes, scales, L1 norms (lane-wise sums),
   column sums and `ok` flags as the portable packing. */
void vq_screen_i8_pack_avx2(const float *x, int64_t ld, int64_t rows, int64_t d, int64_t width, int levels, int offset,
                            uint32_t *dst, float *scale, float *l1, int32_t *colsum, int32_t *ok);
#endif

#if defined(__aarch64__)
/* The 7-bit tile with SDOT (the dot-product extension), with vq_screen_tile's arguments and results. */
void vq_screen_tile_i7_neon(int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols, const float *rt,
                            int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                            float *lows, int64_t ldlow, float *minup, const int32_t *count);
/* Whether this AArch64 CPU has the dot-product extension. */
int vq_screen_has_dotprod(void);
#endif

#endif
