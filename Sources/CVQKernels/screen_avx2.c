/* The nearest-code screen on AVX2 (kernel levels 1 and 2, which have no VNNI or BF16 unit): 7-bit query rows
   against 8-bit codes with VPMADDUBSW (unsigned × signed byte pairs summed to 16 bits) and VPMADDWD (16-bit pairs
   summed to 32 bits). 7-bit rows (offset to 1 … 127) keep every 16-bit pair sum ≤ 2 × 127 × 127 = 32,258 against
   8-bit codes, so nothing saturates and the integer sums are exact, as VPDPBUSD's: the bound of
   NearestCode+Screening.swift holds with each side's own scale (max|x| / 63 for the rows). With 7-bit codes too
   (VQ_SCREEN_I7X7: a wider bound; level 1's choice) two steps add in 16 bits. Two to 2.7 times the products per
   cycle of the float FMA tile, and the same scores and bounds as the portable emulation of the format. */
#include "screen_impl.h"
#include <math.h>

#if VQ_X86

/* Lane masks of a panel's `cols` codes, eight per vector. */
__attribute__((target("avx2")))
static inline __m256i lane_mask(int cols, int o) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - o), idx);
}

/* One row's epilogue: the exact integer sums `t[4]` of 32 codes to scores and bounds (the emulation's arithmetic,
   lane-wise); lower bounds stored for all 32 (the row's panel has room; lanes past the panel's codes are never
   read), upper ones of the panel's codes folded into the row's first 8 minima (a `full` panel needs no lane masks). */
__attribute__((target("avx2,fma"), always_inline))
static inline void row_epilogue(const __m256i t[4], const __m256i live[4], int full, const float *rt, int64_t rstride,
                                const float *ct, int64_t cstride, int cosine, int64_t code_base, float *lows, float *minup) {
    const __m256 inf = _mm256_set1_ps(INFINITY), sx = _mm256_set1_ps(ROW_TERM(1));
    const __m256 h = _mm256_set1_ps(ROW_TERM(2)), l = _mm256_set1_ps(ROW_TERM(3)), a = _mm256_set1_ps(ROW_TERM(4));
    const __m256 r = _mm256_set1_ps(ROW_TERM(5)), x2 = _mm256_set1_ps(ROW_TERM(0));
    __m256 up = inf;
    for (int q = 0; q < 4; q++) {
        const int o = 8 * q;
        const __m256 dq = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(t[q]), _mm256_loadu_ps(CODE_TERM(5) + o)),
                                        _mm256_mul_ps(sx, _mm256_loadu_ps(CODE_TERM(1) + o)));
        __m256 s;
        if (cosine) {
            s = _mm256_sub_ps(_mm256_setzero_ps(), dq);
        } else {
            const __m256 v = _mm256_add_ps(_mm256_add_ps(x2, _mm256_loadu_ps(CODE_TERM(0) + o)), _mm256_mul_ps(dq, _mm256_set1_ps(-2.0f)));
            s = _mm256_max_ps(_mm256_set1_ps(1e-8f), v);
        }
        const __m256 b = _mm256_fmadd_ps(h, _mm256_loadu_ps(CODE_TERM(2) + o),
                         _mm256_fmadd_ps(l, _mm256_loadu_ps(CODE_TERM(1) + o),
                         _mm256_fmadd_ps(a, _mm256_loadu_ps(CODE_TERM(3) + o), _mm256_add_ps(r, _mm256_loadu_ps(CODE_TERM(4) + o)))));
        const __m256 u = _mm256_add_ps(s, b);
        up = _mm256_min_ps(up, full ? u : _mm256_blendv_ps(inf, u, _mm256_castsi256_ps(live[q])));
        _mm256_storeu_ps(lows + code_base + o, _mm256_sub_ps(s, b));
    }
    _mm256_storeu_ps(minup, _mm256_min_ps(_mm256_loadu_ps(minup), up));
}

/* Two rows × 32 codes per pass over the panel's steps; with 7-bit codes (`paired`) two steps at a time: the two
   VPMADDUBSW results of a row and code vector are added in 16 bits (≤ 2 × 16,002 < 2¹⁵) before one VPMADDWD —
   three multiply-unit instructions for two steps instead of four. Eight accumulators, the broadcast row quads and
   the 16-bit ones in registers; the codes read from the panel (L1). */
__attribute__((target("avx2,fma"), always_inline))
static inline void tile_i7(int paired, int full, int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols,
                           const float *rt, int64_t rstride, const float *ct, int64_t cstride, int cosine,
                           int64_t code_base, float *lows, int64_t ldlow, float *minup, const int32_t *count) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i live[4] = {lane_mask(cols, 0), lane_mask(cols, 8), lane_mask(cols, 16), lane_mask(cols, 24)};
    for (int i = 0; i < rows; i += 2) {
        const int second = i + 1 < rows && count[i + 1] >= 0;
        if (count[i] < 0 && !second) continue;
        __m256i t0[4], t1[4];
        for (int q = 0; q < 4; q++) t0[q] = t1[q] = _mm256_setzero_si256();
        int64_t k = 0;
        for (; paired && k + 2 <= steps; k += 2) {
            const __m256i a0 = _mm256_set1_epi32((int32_t)a[k * 12 + i]), a1 = _mm256_set1_epi32((int32_t)a[k * 12 + i + 1]);
            const __m256i n0 = _mm256_set1_epi32((int32_t)a[k * 12 + 12 + i]), n1 = _mm256_set1_epi32((int32_t)a[k * 12 + 13 + i]);
            for (int q = 0; q < 4; q++) {
                const __m256i bq = _mm256_load_si256((const __m256i *)(b + k * 32 + 8 * q));
                const __m256i bn = _mm256_load_si256((const __m256i *)(b + k * 32 + 32 + 8 * q));
                t0[q] = _mm256_add_epi32(t0[q], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(a0, bq),
                                                                                    _mm256_maddubs_epi16(n0, bn)), ones));
                t1[q] = _mm256_add_epi32(t1[q], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(a1, bq),
                                                                                    _mm256_maddubs_epi16(n1, bn)), ones));
            }
        }
        for (; k < steps; k++) {   /* unpaired (8-bit codes), or an odd last step */
            const __m256i a0 = _mm256_set1_epi32((int32_t)a[k * 12 + i]), a1 = _mm256_set1_epi32((int32_t)a[k * 12 + i + 1]);
            for (int q = 0; q < 4; q++) {
                const __m256i bq = _mm256_load_si256((const __m256i *)(b + k * 32 + 8 * q));
                t0[q] = _mm256_add_epi32(t0[q], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, bq), ones));
                t1[q] = _mm256_add_epi32(t1[q], _mm256_madd_epi16(_mm256_maddubs_epi16(a1, bq), ones));
            }
        }
        if (count[i] >= 0)
            row_epilogue(t0, live, full, rt + i, rstride, ct, cstride, cosine, code_base, lows + i * ldlow, minup + 16 * i);
        if (second)
            row_epilogue(t1, live, full, rt + i + 1, rstride, ct, cstride, cosine, code_base, lows + (i + 1) * ldlow,
                         minup + 16 * (i + 1));
    }
}

__attribute__((target("avx2,fma")))
void vq_screen_tile_i7_avx2(int paired, int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols, const float *rt,
                            int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                            float *lows, int64_t ldlow, float *minup, const int32_t *count) {
    if (cols == 32)
        tile_i7(paired, 1, steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
    else
        tile_i7(paired, 0, steps, a, b, rows, cols, rt, rstride, ct, cstride, cosine, code_base, lows, ldlow, minup, count);
}

__attribute__((target("avx2")))
void vq_screen_collect_avx2(int64_t k, const float *lows, const float *minup, int32_t *count, int32_t *cand, int cap) {
    float u = minup[0];
    for (int q = 1; q < 16; q++) u = minup[q] < u ? minup[q] : u;
    const __m256 uv = _mm256_set1_ps(u);
    int32_t n = 0;
    int64_t j = 0;
    /* Lists are short: four vectors' compares merged, one branch per 32 codes. */
    for (; j + 32 <= k; j += 32) {
        const unsigned h = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(lows + j), uv, _CMP_LE_OQ))
                         | (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(lows + j + 8), uv, _CMP_LE_OQ)) << 8
                         | (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(lows + j + 16), uv, _CMP_LE_OQ)) << 16
                         | (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(lows + j + 24), uv, _CMP_LE_OQ)) << 24;
        for (unsigned m = h; m; m &= m - 1) {
            if (n == cap) { *count = -1; return; }
            cand[n++] = (int32_t)(j + __builtin_ctz(m));
        }
    }
    for (; j < k; j++) {
        if (!(lows[j] <= u)) continue;
        if (n == cap) { *count = -1; return; }
        cand[n++] = (int32_t)j;
    }
    *count = n;
}

/* 32 int32 lanes (four vectors, in order) to 32 bytes in order: the packs interleave 128-bit lanes, the final
   permutation undoes it. */
__attribute__((target("avx2")))
static inline __m256i bytes_in_order(__m256i q0, __m256i q1, __m256i q2, __m256i q3) {
    const __m256i w = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    return _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

__attribute__((target("avx2,fma")))
void vq_screen_i8_pack_avx2(const float *x, int64_t ld, int64_t rows, int64_t d, int64_t width, int levels, int offset,
                            uint32_t *dst, float *scale, float *l1, int32_t *colsum, int32_t *ok) {
    const int64_t quads = (d + 3) / 4, padded = (4 * quads + 31) / 32 * 32;
    const float fl = (float)levels;
    float buf[512 + 32];
    uint8_t bytes[512 + 32];
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < rows; i++) {
        const float *xi = x + i * ld;
        int64_t p = 0;
        for (; p < d; p++) buf[p] = xi[p];
        for (; p < padded; p++) buf[p] = 0.0f;
        __m256 mx = _mm256_setzero_ps(), sm = _mm256_setzero_ps();
        int nan = 0;
        for (p = 0; p < padded; p += 8) {
            const __m256 v = _mm256_andnot_ps(sign, _mm256_loadu_ps(buf + p));
            nan |= _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            mx = _mm256_max_ps(mx, v);
            sm = _mm256_add_ps(sm, v);
        }
        float lm[8], ls[8];
        _mm256_storeu_ps(lm, mx);
        _mm256_storeu_ps(ls, sm);
        float m = 0, a1 = 0;
        for (int q = 0; q < 8; q++) { m = lm[q] > m ? lm[q] : m; a1 += ls[q]; }
        if (nan) m = NAN;
        ok[i] = m == m && (m == 0 || (m >= SCREEN_I8_LOW && m <= SCREEN_I8_HIGH));
        const float inv = ok[i] && m > 0 ? fl / m : 0.0f;
        scale[i] = ok[i] ? m / fl : 0.0f;
        l1[i] = a1;
        const __m256 iv = _mm256_set1_ps(inv);
        const __m256i hi = _mm256_set1_epi32(levels), lo = _mm256_set1_epi32(-levels), off = _mm256_set1_epi32(offset);
        __m256i cs = _mm256_setzero_si256();
        for (p = 0; p < padded; p += 32) {
            __m256i q[4];
            for (int e = 0; e < 4; e++) {
                /* cvtps_epi32 rounds to nearest even (the default MXCSR mode), as rintf; saturate to ±levels */
                const __m256i v = _mm256_max_epi32(_mm256_min_epi32(
                    _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(buf + p + 8 * e), iv)), hi), lo);
                cs = _mm256_add_epi32(cs, v);
                q[e] = _mm256_add_epi32(v, off);
            }
            /* the offset keeps values in [0, 255] for the unsigned side; signed bytes use the signed packs */
            if (offset) {
                const __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
                _mm256_storeu_si256((__m256i *)(bytes + p), _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
            } else {
                _mm256_storeu_si256((__m256i *)(bytes + p), bytes_in_order(q[0], q[1], q[2], q[3]));
            }
        }
        if (colsum) {
            int32_t c8[8];
            _mm256_storeu_si256((__m256i *)c8, cs);
            int32_t c = 0;
            for (int e = 0; e < 8; e++) c += c8[e];
            colsum[i] = c;
        }
        for (int64_t qd = 0; qd < quads; qd++) {
            uint32_t word;
            __builtin_memcpy(&word, bytes + 4 * qd, 4);
            dst[qd * width + i] = word;
        }
    }
    for (int64_t q = 0; q < quads; q++)
        for (int64_t i = rows; i < width; i++) dst[q * width + i] = (uint32_t)offset * 0x01010101u;
}

#endif
