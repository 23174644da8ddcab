/* Nearest-code screening with low-precision dot products (BF16 pairs or 8-bit integer quads): a cheap pass that
   keeps, for each query row, every code that could be its exact (float) nearest, and a rescoring of those few
   codes with the float arithmetic of the AVX2 / AVX-512 nearest-code tiles. The bounds that make the screen
   exact are derived in NearestCode+Screening.swift; the constants below are their terms. */
#include "vq_kernels.h"
#include <math.h>
#include <string.h>
#include "screen_impl.h"
#include "vq_simd.h"

#if VQ_X86
static inline __mmask16 tail16(int64_t r) { return r >= 16 ? (__mmask16)0xFFFF : (r <= 0 ? 0 : (__mmask16)((1u << r) - 1)); }
#endif

/* BF16 bits of a float, rounded to nearest even; NaN stays NaN. */
static inline uint32_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

static inline float bf16_float(uint32_t h) {
    uint32_t u = (h & 0xffffu) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#if VQ_X86
/* The same layout with the BF16 unit's conversion (VCVTNE2PS2BF16: nearest even; it may flush denormals, which
   the bound allows for). A row's BF16 values in order are its pairs. */
__attribute__((target("avx512f,avx512bf16")))
static void bf16_pack_avx512(const float *x, int64_t ld, int64_t rows, int64_t d, int64_t width, uint32_t *dst) {
    const int64_t pairs = (d + 1) / 2;
    uint32_t row[256];
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = x + i * ld;
        for (int64_t p = 0; p < d; p += 32) {
            const int64_t r = d - p;
            const __mmask16 m0 = r >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << r) - 1);
            const __mmask16 m1 = r >= 32 ? (__mmask16)0xFFFF : (r <= 16 ? 0 : (__mmask16)((1u << (r - 16)) - 1));
            const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, xi + p + 16), _mm512_maskz_loadu_ps(m0, xi + p));
            _mm512_storeu_si512((void *)(row + p / 2), (__m512i)v);
        }
        for (int64_t p = 0; p < pairs; p++) dst[p * width + i] = row[p];
    }
    for (int64_t p = 0; p < pairs; p++)
        for (int64_t i = rows; i < width; i++) dst[p * width + i] = 0;
}
#endif

static void vq_bf16_pack(int native, const float *x, int64_t ld, int64_t rows, int64_t d, int64_t width, uint32_t *dst) {
#if VQ_X86
    if (native && d <= 512) { bf16_pack_avx512(x, ld, rows, d, width, dst); return; }
#endif
    (void)native;
    const int64_t pairs = (d + 1) / 2;
    for (int64_t p = 0; p < pairs; p++) {
        uint32_t *out = dst + p * width;
        for (int64_t i = 0; i < rows; i++) {
            const float *xi = x + i * ld + 2 * p;
            const uint32_t hi = 2 * p + 1 < d ? bf16_bits(xi[1]) : 0;
            out[i] = bf16_bits(xi[0]) | (hi << 16);
        }
        for (int64_t i = rows; i < width; i++) out[i] = 0;
    }
}

int64_t vq_screen_steps(int format, int64_t d) { return SCREEN_PAIRS(format) ? (d + 1) / 2 : (d + 3) / 4; }
int vq_screen_row_planes(int format) { return format == VQ_SCREEN_BF16 ? 3 : 6; }
int vq_screen_code_planes(int format) { return format == VQ_SCREEN_BF16 ? 3 : 6; }

/* A row's largest magnitude (NaN if it has one) and L1 norm on the portable vectors (`padded`: a multiple of 4, zeros
   past the row): the L1 norm summed lane-wise, within the bound's slack as the AVX packs'. */
static void magnitudes_vec(const float *buf, int64_t padded, float *max, float *l1) {
    vq_f4 mx = vq_f4_splat(0.0f), sm = vq_f4_splat(0.0f);
    vq_i4 nan = {0, 0, 0, 0};
    for (int64_t p = 0; p < padded; p += 4) {
        const vq_f4 v = vq_f4_abs(vq_f4_load(buf + p));
        nan |= v != v;
        mx = vq_f4_select(v > mx, v, mx);
        sm = sm + v;
    }
    float m = mx[0] > mx[1] ? mx[0] : mx[1];
    m = mx[2] > m ? mx[2] : m;
    m = mx[3] > m ? mx[3] : m;
    *max = vq_i4_any(nan) ? NAN : m;
    *l1 = (sm[0] + sm[1]) + (sm[2] + sm[3]);
}

/* x · inv rounded to nearest even and saturated to ±levels, four lanes at a time, as integers: rintf's values. */
static void quantize_vec(const float *buf, int64_t padded, float inv, int levels, int32_t *q) {
    const vq_f4 iv = vq_f4_splat(inv), hi = vq_f4_splat((float)levels), lo = vq_f4_splat(-(float)levels);
    for (int64_t p = 0; p < padded; p += 4) {
        vq_f4 r = vq_f4_rint(vq_f4_load(buf + p) * iv);
        r = vq_f4_select(r > hi, hi, vq_f4_select(r < lo, lo, r));
        const vq_i4 qi = __builtin_convertvector(r, vq_i4);
        memcpy(q + p, &qi, sizeof qi);
    }
}

/* Integer quads: `dst[q·width + i]` holds row i's elements 4q … 4q + 3 scaled by `levels` / max|x| and rounded
   (in ±levels), as unsigned bytes offset by `offset` (the left operand of VPDPBUSD / VPMADDUBSW) or, with
   `offset` 0, as signed bytes; 0 past `d`. With `pairs`, words of two signed 16-bit values (elements 2q, 2q + 1). */
static void i8_pack(const float *x, int64_t ld, int64_t rows, int64_t d, int64_t width, int levels, int offset,
                    int pairs, uint32_t *dst, float *scale, float *l1, int32_t *colsum, int32_t *ok) {
    const float fl = (float)levels;
    const int per = pairs ? 2 : 4, bits = pairs ? 16 : 8;
    const uint32_t lane = pairs ? 0xffffu : 0xffu;
    const int64_t quads = (d + per - 1) / per, padded = (d + 3) / 4 * 4;
    /* Up to 512 values a row goes through the portable vectors (SSE2 / NEON): the same values and scale. */
    const int vec = d <= 512;
    float buf[512 + 4];
    int32_t qv[512 + 4];
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = x + i * ld;
        float m = 0, a1 = 0;
        if (vec) {
            memcpy(buf, xi, sizeof(float) * (size_t)d);
            for (int64_t p = d; p < padded; p++) buf[p] = 0.0f;
            magnitudes_vec(buf, padded, &m, &a1);
        } else {
            for (int64_t p = 0; p < d; p++) {
                const float v = fabsf(xi[p]);
                m = v > m || v != v ? v : m;
                a1 += v;
            }
        }
        ok[i] = m == m && (m == 0 || (m >= SCREEN_I8_LOW && m <= SCREEN_I8_HIGH));
        const float inv = ok[i] && m > 0 ? fl / m : 0.0f;
        scale[i] = ok[i] ? m / fl : 0.0f;
        l1[i] = a1;
        if (vec) quantize_vec(buf, padded, inv, levels, qv);
        int32_t cs = 0;
        for (int64_t q = 0; q < quads; q++) {
            uint32_t word = 0;
            for (int b = 0; b < per; b++) {
                int32_t v = 0;
                if (per * q + b < d && vec) {
                    v = qv[per * q + b];
                } else if (per * q + b < d) {
                    const float r = rintf(xi[per * q + b] * inv);
                    v = r > fl ? levels : (r < -fl ? -levels : (int32_t)r);
                }
                cs += v;
                word |= ((uint32_t)(v + offset) & lane) << (bits * b);
            }
            dst[q * width + i] = word;
        }
        if (colsum) colsum[i] = cs;
    }
    for (int64_t q = 0; q < quads; q++)
        for (int64_t i = rows; i < width; i++) dst[q * width + i] = (uint32_t)offset * 0x01010101u;
}

#if VQ_X86
/* i8_pack with 127 levels on the vector units (d ≤ 512): the same bytes (nearest-even rounding of x · 127/max|x|,
   saturated to ±127) and scale; the L1 norm summed lane-wise (its rounding is within the bound's slack). */
__attribute__((target("avx512f,avx512bw")))
static void i8_pack_avx512(const float *x, int64_t ld, int64_t rows, int64_t d, int64_t width, int offset,
                           uint32_t *dst, float *scale, float *l1, int32_t *colsum, int32_t *ok) {
    const int64_t quads = (d + 3) / 4;
    uint8_t bytes[512 + 64];
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = x + i * ld;
        __m512 mx = _mm512_setzero_ps(), sm = _mm512_setzero_ps();
        int nan = 0;
        for (int64_t p = 0; p < d; p += 16) {
            const __mmask16 t = tail16(d - p);
            const __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(t, xi + p));
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) != 0;
            mx = _mm512_max_ps(mx, v);
            sm = _mm512_add_ps(sm, v);
        }
        const float m = nan ? NAN : _mm512_reduce_max_ps(mx);
        ok[i] = m == m && (m == 0 || (m >= SCREEN_I8_LOW && m <= SCREEN_I8_HIGH));
        const float inv = ok[i] && m > 0 ? 127.0f / m : 0.0f;
        scale[i] = ok[i] ? m / 127.0f : 0.0f;
        l1[i] = _mm512_reduce_add_ps(sm);
        const __m512 iv = _mm512_set1_ps(inv);
        __m512i cs = _mm512_setzero_si512();
        for (int64_t p = 0; p < 4 * quads; p += 16) {
            const __mmask16 t = tail16(d - p);
            /* cvtps_epi32 rounds to nearest even (the default MXCSR mode), as rintf; saturate to ±127 */
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(t, xi + p), iv));
            q = _mm512_max_epi32(_mm512_min_epi32(q, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127));
            cs = _mm512_add_epi32(cs, q);
            if (offset) q = _mm512_add_epi32(q, _mm512_set1_epi32(128));
            _mm_storeu_si128((__m128i *)(bytes + p), _mm512_cvtepi32_epi8(q));
        }
        if (colsum) colsum[i] = _mm512_reduce_add_epi32(cs);
        const uint32_t *words = (const uint32_t *)bytes;
        for (int64_t q = 0; q < quads; q++) dst[q * width + i] = words[q];
    }
    for (int64_t q = 0; q < quads; q++)
        for (int64_t i = rows; i < width; i++) dst[q * width + i] = offset ? 0x80808080u : 0;
}
#endif

int64_t vq_screen_pack(int format, int native, int side, int cosine, const float *x, int64_t ld, int64_t rows,
                       int64_t d, int64_t width, const float *sq, uint32_t *dst, float *terms, int64_t tstride,
                       int32_t *ok) {
    const float huge = 1e36f;
    int64_t bad = 0;
    if (format != VQ_SCREEN_BF16) {
        /* rows: sq, s_x, h_x, l1h_x, a2·‖x‖, rowterm; codes: sq, s_c, l1_c, ‖c‖, codeterm, offset·Σĉ */
        const int levels = side == 0 ? SCREEN_ROW_LEVELS(format) : SCREEN_CODE_LEVELS(format);
        const int offset = side == 0 ? SCREEN_ROW_OFFSET(format) : 0;
        float *p0 = terms, *p1 = terms + tstride, *p2 = terms + 2 * tstride, *p3 = terms + 3 * tstride;
        float *p4 = terms + 4 * tstride, *p5 = terms + 5 * tstride;
        int32_t cs[32];
        for (int64_t i0 = 0; i0 < rows; i0 += 32) {
            const int64_t n = rows - i0 < 32 ? rows - i0 : 32;
#if VQ_X86
            if (native && d <= 512 && format == VQ_SCREEN_I8)   /* 127 levels on both sides */
                i8_pack_avx512(x + i0 * ld, ld, n, d, width, side == 0, dst + i0, p1 + i0, p2 + i0, cs, ok + i0);
            else if (native && d <= 512 && (format == VQ_SCREEN_I7 || format == VQ_SCREEN_I7X7))
                vq_screen_i8_pack_avx2(x + i0 * ld, ld, n, d, width, levels, offset, dst + i0, p1 + i0, p2 + i0, cs, ok + i0);
            else
#endif
                i8_pack(x + i0 * ld, ld, n, d, width, levels, offset, SCREEN_PAIRS(format), dst + i0, p1 + i0, p2 + i0, cs,
                        ok + i0);
            for (int64_t i = i0; i < i0 + n; i++) {
                const float r = sqrtf(sq[i]);
                ok[i] = ok[i] && sq[i] <= huge;
                bad += !ok[i];
                p0[i] = sq[i];
                if (side == 0) {
                    const float sx = p1[i], l1 = p2[i];
                    p2[i] = SCREEN_I8_HALF * sx;
                    p3[i] = SCREEN_I8_HALF * (l1 + 0.5f * (float)d * sx);
                    p4[i] = SCREEN_I8_FLOAT * r;
                    p5[i] = (cosine ? 0.0f : SCREEN_BETA * sq[i]) + SCREEN_TAU * r;
                } else {
                    p3[i] = r;
                    p4[i] = (cosine ? 0.0f : SCREEN_BETA * sq[i]) + SCREEN_TAU * (1.0f + r);
                    p5[i] = (float)SCREEN_ROW_OFFSET(format) * (float)cs[i - i0];
                }
            }
        }
        return bad;
    }
    /* BF16 — rows: sq, α·‖x‖, rowterm; codes: sq, ‖c‖, codeterm */
    vq_bf16_pack(native, x, ld, rows, d, width, dst);
    for (int64_t i = 0; i < rows; i++) {
        const float r = sqrtf(sq[i]);
        ok[i] = sq[i] <= huge;
        bad += !ok[i];
        terms[i] = sq[i];
        terms[tstride + i] = side == 0 ? SCREEN_ALPHA * r : r;
        terms[2 * tstride + i] = (cosine ? 0.0f : SCREEN_BETA * sq[i]) + SCREEN_TAU * (side == 0 ? r : 1.0f + r);
    }
    return bad;
}

/* One row of a screened tile, scalar: `dots[j]` are the low-precision dot products of the row with codes
   j < cols; stores their lower bounds at `lows[code_base + j]` and keeps the least upper bound in `minup[0]`.
   `rt` points at the row's terms, `ct` at the 32 codes' terms. */
static void screen_row_scalar(int format, const float *dots, int cols, const float *rt, int64_t rstride,
                              const float *ct, int64_t cstride, int cosine, int64_t code_base, float *lows,
                              float *minup) {
    float u = minup[0];
    const float x2 = ROW_TERM(0);
    for (int j = 0; j < cols; j++) {
        float s;
        if (cosine) {
            s = -dots[j];
        } else {
            const float t = (x2 + CODE_TERM(0)[j]) + dots[j] * -2.0f;
            s = 1e-8f > t ? 1e-8f : t;
        }
        float b;
        if (format != VQ_SCREEN_BF16)
            b = fmaf(ROW_TERM(2), CODE_TERM(2)[j],
                     fmaf(ROW_TERM(3), CODE_TERM(1)[j], fmaf(ROW_TERM(4), CODE_TERM(3)[j], ROW_TERM(5) + CODE_TERM(4)[j])));
        else
            b = fmaf(ROW_TERM(1), CODE_TERM(1)[j], ROW_TERM(2) + CODE_TERM(2)[j]);
        const float up = s + b;
        lows[code_base + j] = s - b;
        if (up < u) u = up;
    }
    minup[0] = u;
}

/* Portable emulation of the low-precision tiles (BF16: the same rounded factors, exact products, float sums;
   7- and 8-bit: exact integer sums), so the screen's bookkeeping is tested on machines without those units. */
static void screen_tile_emulated(int format, int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols,
                                 const float *rt, int64_t rstride, const float *ct, int64_t cstride, int cosine,
                                 int64_t code_base, float *lows, int64_t ldlow, float *minup, const int32_t *count) {
    float t[12][32];
    memset(t, 0, sizeof t);
    for (int i = 0; i < rows; i++) {
        if (format == VQ_SCREEN_I16) {
            int32_t acc[32] = {0};
            for (int64_t k = 0; k < steps; k++) {
                const uint32_t aw = a[k * 12 + i];
                for (int j = 0; j < cols; j++) {
                    const uint32_t bw = b[k * 32 + j];
                    acc[j] += (int32_t)(int16_t)(aw & 0xffff) * (int32_t)(int16_t)(bw & 0xffff)
                            + (int32_t)(int16_t)(aw >> 16) * (int32_t)(int16_t)(bw >> 16);
                }
            }
            const float sx = rt[i + rstride];
            for (int j = 0; j < cols; j++) t[i][j] = ((float)acc[j] - CODE_TERM(5)[j]) * (sx * CODE_TERM(1)[j]);
        } else if (format != VQ_SCREEN_BF16) {
            int32_t acc[32] = {0};
            for (int64_t k = 0; k < steps; k++) {
                const uint32_t aw = a[k * 12 + i];
                for (int j = 0; j < cols; j++) {
                    const uint32_t bw = b[k * 32 + j];
                    for (int q = 0; q < 4; q++)
                        acc[j] += (int32_t)((aw >> (8 * q)) & 0xff) * (int32_t)(int8_t)((bw >> (8 * q)) & 0xff);
                }
            }
            const float sx = rt[i + rstride];
            for (int j = 0; j < cols; j++) t[i][j] = ((float)acc[j] - CODE_TERM(5)[j]) * (sx * CODE_TERM(1)[j]);
        } else {
            for (int64_t k = 0; k < steps; k++) {
                const uint32_t ap = a[k * 12 + i];
                const float alo = bf16_float(ap), ahi = bf16_float(ap >> 16);
                for (int j = 0; j < cols; j++) {
                    const uint32_t bp = b[k * 32 + j];
                    t[i][j] += ahi * bf16_float(bp >> 16);
                    t[i][j] += alo * bf16_float(bp);
                }
            }
        }
    }
    for (int i = 0; i < rows; i++)
        if (count[i] >= 0)
            screen_row_scalar(format, t[i], cols, rt + i, rstride, ct, cstride, cosine, code_base, lows + i * ldlow,
                              minup + 16 * i);
}

#if VQ_X86
/* One row's epilogue on the vector units, without branches: scores and bounds of 32 codes from their dot
   products `d0`, `d1`; the lower bounds stored at `lows + code_base`, the upper ones folded into the row's 16
   lane-wise minima `minup`. */
__attribute__((target("avx512f"), always_inline))
static inline void screen_row_avx512(int format, __m512 d0, __m512 d1, __mmask16 l0, __mmask16 l1, const float *rt,
                                     int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                                     float *lows, float *minup) {
    const __m512 inf = _mm512_set1_ps(INFINITY);
    __m512 s0, s1;
    if (cosine) {
        s0 = _mm512_sub_ps(_mm512_setzero_ps(), d0);
        s1 = _mm512_sub_ps(_mm512_setzero_ps(), d1);
    } else {
        const __m512 eps = _mm512_set1_ps(1e-8f), m2 = _mm512_set1_ps(-2.0f), x2 = _mm512_set1_ps(ROW_TERM(0));
        s0 = _mm512_max_ps(eps, _mm512_add_ps(_mm512_add_ps(x2, _mm512_loadu_ps(CODE_TERM(0))), _mm512_mul_ps(d0, m2)));
        s1 = _mm512_max_ps(eps, _mm512_add_ps(_mm512_add_ps(x2, _mm512_loadu_ps(CODE_TERM(0) + 16)), _mm512_mul_ps(d1, m2)));
    }
    __m512 b0, b1;
    if (format == VQ_SCREEN_I8) {
        const __m512 h = _mm512_set1_ps(ROW_TERM(2)), l = _mm512_set1_ps(ROW_TERM(3)), a = _mm512_set1_ps(ROW_TERM(4));
        const __m512 r = _mm512_set1_ps(ROW_TERM(5));
#define BOUND(o) _mm512_fmadd_ps(h, _mm512_loadu_ps(CODE_TERM(2) + o), _mm512_fmadd_ps(l, _mm512_loadu_ps(CODE_TERM(1) + o), \
                 _mm512_fmadd_ps(a, _mm512_loadu_ps(CODE_TERM(3) + o), _mm512_add_ps(r, _mm512_loadu_ps(CODE_TERM(4) + o)))))
        b0 = BOUND(0);
        b1 = BOUND(16);
#undef BOUND
    } else {
        const __m512 a = _mm512_set1_ps(ROW_TERM(1)), r = _mm512_set1_ps(ROW_TERM(2));
        b0 = _mm512_fmadd_ps(a, _mm512_loadu_ps(CODE_TERM(1)), _mm512_add_ps(r, _mm512_loadu_ps(CODE_TERM(2))));
        b1 = _mm512_fmadd_ps(a, _mm512_loadu_ps(CODE_TERM(1) + 16), _mm512_add_ps(r, _mm512_loadu_ps(CODE_TERM(2) + 16)));
    }
    const __m512 up = _mm512_min_ps(_mm512_mask_blend_ps(l0, inf, _mm512_add_ps(s0, b0)),
                                    _mm512_mask_blend_ps(l1, inf, _mm512_add_ps(s1, b1)));
    _mm512_storeu_ps(minup, _mm512_min_ps(_mm512_loadu_ps(minup), up));
    _mm512_mask_storeu_ps(lows + code_base, l0, _mm512_sub_ps(s0, b0));
    _mm512_mask_storeu_ps(lows + code_base + 16, l1, _mm512_sub_ps(s1, b1));
}

#define LANE_MASKS                                                                                                 \
    const __mmask16 l0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);                          \
    const __mmask16 l1 = cols >= 32 ? (__mmask16)0xFFFF : (cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1));

/* The 12 × 32 tile with VDPBF16PS (two BF16 products per lane and step, float sums): twice the products per
   instruction of the float tile. */
__attribute__((target("avx512f,avx512bf16")))
static void screen_tile_bf16(int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols, const float *rt,
                             int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                             float *lows, int64_t ldlow, float *minup, const int32_t *count) {
    __m512 t[12][2];
    for (int i = 0; i < 12; i++) t[i][0] = t[i][1] = _mm512_setzero_ps();
    #pragma GCC unroll 4
    for (int64_t k = 0; k < steps; k++) {
        const __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(b + k * 32));
        const __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(b + k * 32 + 16));
        for (int i = 0; i < 12; i++) {
            const __m512bh av = (__m512bh)_mm512_set1_epi32((int32_t)a[k * 12 + i]);
            t[i][0] = _mm512_dpbf16_ps(t[i][0], av, b0);
            t[i][1] = _mm512_dpbf16_ps(t[i][1], av, b1);
        }
    }
    LANE_MASKS
    /* A constant trip count, unrolled: the accumulators stay in registers (a loop to `rows` indexes them). */
    #pragma GCC unroll 12
    for (int i = 0; i < 12; i++)
        if (i < rows && count[i] >= 0)
            screen_row_avx512(VQ_SCREEN_BF16, t[i][0], t[i][1], l0, l1, rt + i, rstride, ct, cstride, cosine, code_base,
                              lows + i * ldlow, minup + 16 * i);
}

/* The 12 × 32 integer tiles: `STEP(t, av, b)` adds one step's products of a broadcast row quad `av` with 16 code
   quads `b` to the 32-bit sums `t` — VPDPBUSD (8-bit rows, VNNI: four times the products per instruction of the
   float tile) or VPMADDUBSW + VPMADDWD (7-bit rows, AVX-512BW, the AVX2 form at twice its width) — both exact. */
#define SCREEN_TILE_INT(STEP)                                                                                      \
    __m512i t[12][2];                                                                                              \
    for (int i = 0; i < 12; i++) t[i][0] = t[i][1] = _mm512_setzero_si512();                                       \
    _Pragma("GCC unroll 4")                                                                                        \
    for (int64_t k = 0; k < steps; k++) {                                                                          \
        const __m512i b0 = _mm512_load_si512((const void *)(b + k * 32));                                         \
        const __m512i b1 = _mm512_load_si512((const void *)(b + k * 32 + 16));                                    \
        _Pragma("GCC unroll 12") /* all 24 sums in registers (not unrolled, they live in memory) */              \
        for (int i = 0; i < 12; i++) {                                                                             \
            const __m512i av = _mm512_set1_epi32((int32_t)a[k * 12 + i]);                                          \
            STEP(t[i][0], av, b0);                                                                                 \
            STEP(t[i][1], av, b1);                                                                                 \
        }                                                                                                          \
    }                                                                                                              \
    LANE_MASKS                                                                                                     \
    const __m512 cs0 = _mm512_loadu_ps(CODE_TERM(5)), cs1 = _mm512_loadu_ps(CODE_TERM(5) + 16);                    \
    const __m512 sc0 = _mm512_loadu_ps(CODE_TERM(1)), sc1 = _mm512_loadu_ps(CODE_TERM(1) + 16);                    \
    /* A constant trip count, unrolled: the accumulators stay in registers (a loop to `rows` indexes them). */     \
    _Pragma("GCC unroll 12")                                                                                       \
    for (int i = 0; i < 12; i++) {                                                                                 \
        if (i >= rows || count[i] < 0) continue;                                                                   \
        const __m512 sx = _mm512_set1_ps(rt[i + rstride]);                                                         \
        const __m512 d0 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(t[i][0]), cs0), _mm512_mul_ps(sx, sc0));  \
        const __m512 d1 = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(t[i][1]), cs1), _mm512_mul_ps(sx, sc1));  \
        screen_row_avx512(VQ_SCREEN_I8, d0, d1, l0, l1, rt + i, rstride, ct, cstride, cosine, code_base,           \
                          lows + i * ldlow, minup + 16 * i);                                                       \
    }

#define TILE_ARGS int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols, const float *rt,        \
    int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base, float *lows, int64_t ldlow,   \
    float *minup, const int32_t *count

#define STEP_VNNI(t, av, bq) ((t) = _mm512_dpbusd_epi32((t), (av), (bq)))
#define STEP_BW(t, av, bq) ((t) = _mm512_add_epi32((t), _mm512_madd_epi16(_mm512_maddubs_epi16((av), (bq)), _mm512_set1_epi16(1))))

__attribute__((target("avx512f,avx512vnni")))
static void screen_tile_i8(TILE_ARGS) { SCREEN_TILE_INT(STEP_VNNI) }

__attribute__((target("avx512f,avx512bw")))
static void screen_tile_i7_avx512(TILE_ARGS) { SCREEN_TILE_INT(STEP_BW) }
#endif

void vq_screen_tile(int format, int native, int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols,
                    const float *rt, int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                    float *lows, int64_t ldlow, float *minup, const int32_t *count) {
#if VQ_X86
    static int bw = -1;   /* the 512-bit form of the 7-bit tile: AVX-512 with byte/word instructions (level ≥ 2) */
    if (bw < 0) bw = vq_cpu_level() >= 2 && __builtin_cpu_supports("avx512bw");
    if (native && format == VQ_SCREEN_I7 && bw) {
        screen_tile_i7_avx512(steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
        return;
    }
    if (native && format == VQ_SCREEN_I16) {
        vq_screen_tile_i16_sse2(steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
        return;
    }
    if (native && format == VQ_SCREEN_I7X7) {
        vq_screen_tile_i7_avx2(1, steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
        return;
    }
    if (native && format == VQ_SCREEN_I7) {
        vq_screen_tile_i7_avx2(0, steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
        return;
    }
    if (native && format == VQ_SCREEN_I8) {
        screen_tile_i8(steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
        return;
    }
    if (native) {
        screen_tile_bf16(steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
        return;
    }
#elif defined(__aarch64__)
    if (native && format == VQ_SCREEN_I7 && vq_screen_native(VQ_SCREEN_I7)) {
        vq_screen_tile_i7_neon(steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
        return;
    }
#endif
    (void)native;
    screen_tile_emulated(format, steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup,
                         count);
}

int vq_screen_native(int format) {
    static int known[5] = {-1, -1, -1, -1, -1};
    if (format < 0 || format > 4) return 0;
    if (known[format] < 0) {
#if VQ_X86
        known[format] = format == VQ_SCREEN_I16 ? 1 : format == VQ_SCREEN_I7 || format == VQ_SCREEN_I7X7 ? vq_cpu_level() >= 1
                      : format == VQ_SCREEN_I8 ? vq_cpu_has_vnni() : vq_cpu_level() >= 3;
#elif defined(__aarch64__)
        known[format] = format == VQ_SCREEN_I7 && vq_screen_has_dotprod();
#else
        known[format] = 0;
#endif
    }
    return known[format];
}

/* A row's least upper bound (the minimum of its 16 lane-wise minima) and, in code order, every code whose lower
   bound is ≤ it; a row with more than `cap` such codes is left to the plain search (count −1). */
static void collect_scalar(int64_t k, const float *lows, const float *minup, int32_t *count, int32_t *cand, int cap) {
    float u = minup[0];
    for (int q = 1; q < 16; q++) u = minup[q] < u ? minup[q] : u;
    int32_t n = 0;
    /* Lists are short: 16 codes compared on the portable vectors (SSE2 / NEON), scanned only when one is kept
       (a last partial chunk is always scanned). */
    const vq_f4 uv = vq_f4_splat(u);
    for (int64_t j0 = 0; j0 < k; j0 += 16) {
        if (j0 + 16 <= k) {
            const vq_i4 hit = (vq_f4_load(lows + j0) <= uv) | (vq_f4_load(lows + j0 + 4) <= uv)
                            | (vq_f4_load(lows + j0 + 8) <= uv) | (vq_f4_load(lows + j0 + 12) <= uv);
            if (!vq_i4_any(hit)) continue;
        }
        for (int64_t j = j0; j < j0 + 16 && j < k; j++) {
            if (!(lows[j] <= u)) continue;
            if (n == cap) { *count = -1; return; }
            cand[n++] = (int32_t)j;
        }
    }
    *count = n;
}

#if VQ_X86
__attribute__((target("avx512f")))
static void collect_avx512(int64_t k, const float *lows, const float *minup, int32_t *count, int32_t *cand, int cap) {
    const __m512 uv = _mm512_set1_ps(_mm512_reduce_min_ps(_mm512_loadu_ps(minup)));
    int32_t n = 0;
    int64_t j = 0;
    /* Lists are short (a few codes in a thousand): four chunks' compares are merged, one branch per 64 codes. */
    for (; j + 64 <= k; j += 64) {
        const __mmask16 h0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(lows + j), uv, _CMP_LE_OQ);
        const __mmask16 h1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(lows + j + 16), uv, _CMP_LE_OQ);
        const __mmask16 h2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(lows + j + 32), uv, _CMP_LE_OQ);
        const __mmask16 h3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(lows + j + 48), uv, _CMP_LE_OQ);
        if (!(h0 | h1 | h2 | h3)) continue;
        const __mmask16 hs[4] = {h0, h1, h2, h3};
        for (int q = 0; q < 4; q++) {
            const __mmask16 h = hs[q];
            if (!h) continue;
            const int c = __builtin_popcount((unsigned)h);
            if (n + c > cap) { *count = -1; return; }
            _mm512_mask_compressstoreu_epi32(cand + n, h, _mm512_add_epi32(_mm512_set1_epi32((int32_t)(j + 16 * q)),
                                                                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)));
            n += c;
        }
    }
    for (; j < k; j += 16) {
        const __mmask16 t = tail16(k - j);
        const __m512 v = _mm512_maskz_loadu_ps(t, lows + j);
        const __mmask16 h = _mm512_mask_cmp_ps_mask(t, v, uv, _CMP_LE_OQ);
        if (!h) continue;
        const int c = __builtin_popcount((unsigned)h);
        if (n + c > cap) { *count = -1; return; }
        _mm512_mask_compressstoreu_epi32(cand + n, h, _mm512_add_epi32(_mm512_set1_epi32((int32_t)j),
                                                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)));
        n += c;
    }
    *count = n;
}
#endif

void vq_screen_collect(int native, int rows, int64_t k, const float *lows, int64_t ldlow, const float *minup,
                       int32_t *count, int32_t *cand, int cap) {
#if VQ_X86
    static int level = -1;
    if (level < 0) level = vq_cpu_level();
#endif
    for (int i = 0; i < rows; i++) {
        if (count[i] < 0) continue;
#if VQ_X86
        if (native && level >= 2) {
            collect_avx512(k, lows + i * ldlow, minup + 16 * i, count + i, cand + (int64_t)i * cap, cap);
            continue;
        }
        if (native && level >= 1) {
            vq_screen_collect_avx2(k, lows + i * ldlow, minup + 16 * i, count + i, cand + (int64_t)i * cap, cap);
            continue;
        }
#endif
        (void)native;
        collect_scalar(k, lows + i * ldlow, minup + 16 * i, count + i, cand + (int64_t)i * cap, cap);
    }
}
