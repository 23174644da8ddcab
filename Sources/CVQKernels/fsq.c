// FSQ's grid (Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple", 2023) for bounded values,
// with the arithmetic of FSQ.quantizeWithoutGradient: per channel j, with b = t·halfL_j − offset_j,
// q = (b + (rint(b) − b)) / hw_j (the reference's straight-through rounding, which gives +0 where rint gives −0)
// and the index rint(Σ_j ((q·hw_j + hw_j)·basis_j)), summed in channel order. Each product and sum is rounded
// separately (no fused multiply-add), so the vector and scalar positions agree with each other and with the
// Swift formulas.
#include "vq_kernels.h"
#include "vq_simd.h"
#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>
#endif

/* One row: codes in place, its index (−1 when the row holds NaN). */
static inline int64_t fsq_row(float *t, int64_t d, const float *halfL, const float *offset, const float *hw,
                              const float *basis, float (*rint_fn)(float)) {
    float acc = 0;
    for (int64_t j = 0; j < d; j++) {
        float bounded = t[j] * halfL[j];
        bounded = bounded - offset[j];
        float step = rint_fn(bounded) - bounded;  /* the straight-through form b + (rint(b) − b): +0 where rint gives −0 */
        float q = (bounded + step) / hw[j];
        t[j] = q;
        float shifted = q * hw[j];
        shifted = shifted + hw[j];
        float term = shifted * basis[j];
        acc = acc + term;
    }
    return acc != acc ? -1 : (int64_t)rint_fn(acc);
}

static float rint_libm(float x) { return rintf(x); }

#if VQ_X86
__attribute__((target("avx2,fma"))) static float rint_hw(float x) {
    return _mm_cvtss_f32(_mm_round_ss(_mm_setzero_ps(), _mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* Eight rows at a time: their 8·d values as d vectors, the per-channel constants as tapes of period d. */
__attribute__((target("avx2,fma")))
static int64_t fsq_grid_avx2(float *t, int64_t rows, int64_t d, const float *halfL, const float *offset,
                             const float *hw, const float *basis, int64_t *indices) {
    if (d > 64) return 0;
    float tape[4][8 * 64], terms[8 * 64];
    for (int64_t i = 0; i < 8 * d; i++) {
        int64_t j = i % d;
        tape[0][i] = halfL[j]; tape[1][i] = offset[j]; tape[2][i] = hw[j]; tape[3][i] = basis[j];
    }
    int64_t r = 0;
    for (; r + 8 <= rows; r += 8) {
        float *block = t + r * d;
        for (int64_t v = 0; v < d; v++) {
            __m256 x = _mm256_loadu_ps(block + 8 * v);
            __m256 h = _mm256_loadu_ps(tape[2] + 8 * v);
            __m256 bounded = _mm256_sub_ps(_mm256_mul_ps(x, _mm256_loadu_ps(tape[0] + 8 * v)), _mm256_loadu_ps(tape[1] + 8 * v));
            __m256 step = _mm256_sub_ps(_mm256_round_ps(bounded, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), bounded);
            __m256 q = _mm256_div_ps(_mm256_add_ps(bounded, step), h);
            _mm256_storeu_ps(block + 8 * v, q);
            __m256 shifted = _mm256_add_ps(_mm256_mul_ps(q, h), h);
            _mm256_storeu_ps(terms + 8 * v, _mm256_mul_ps(shifted, _mm256_loadu_ps(tape[3] + 8 * v)));
        }
        for (int64_t i = 0; i < 8; i++) {
            float acc = 0;
            for (int64_t j = 0; j < d; j++) acc = acc + terms[i * d + j];
            indices[r + i] = acc != acc ? -1 : (int64_t)rint_hw(acc);
        }
    }
    return r;
}
#endif

/* fsq_grid_avx2 with the portable vectors: four rows at a time, each product, quotient and sum rounded on its own
   (separate statements: nothing to contract into a fused multiply-add on AArch64). */
static int64_t fsq_grid_vec(float *t, int64_t rows, int64_t d, const float *halfL, const float *offset, const float *hw,
                            const float *basis, int64_t *indices) {
    if (d > 64) return 0;
    float tape[4][4 * 64], terms[4 * 64];
    for (int64_t i = 0; i < 4 * d; i++) {
        int64_t j = i % d;
        tape[0][i] = halfL[j]; tape[1][i] = offset[j]; tape[2][i] = hw[j]; tape[3][i] = basis[j];
    }
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
        float *block = t + r * d;
        for (int64_t v = 0; v < d; v++) {
            const vq_f4 h = vq_f4_load(tape[2] + 4 * v);
            const vq_f4 scaled = vq_f4_load(block + 4 * v) * vq_f4_load(tape[0] + 4 * v);
            const vq_f4 bounded = scaled - vq_f4_load(tape[1] + 4 * v);
            const vq_f4 step = vq_f4_rint(bounded) - bounded;
            const vq_f4 q = (bounded + step) / h;
            vq_f4_store(block + 4 * v, q);
            const vq_f4 qh = q * h;
            const vq_f4 shifted = qh + h;
            vq_f4_store(terms + 4 * v, shifted * vq_f4_load(tape[3] + 4 * v));
        }
        for (int64_t i = 0; i < 4; i++) {
            float acc = 0;
            for (int64_t j = 0; j < d; j++) acc = acc + terms[i * d + j];
            indices[r + i] = acc != acc ? -1 : (int64_t)rintf(acc);
        }
    }
    return r;
}

void vq_fsq_grid(int level, float *t, int64_t rows, int64_t d, const float *halfL, const float *offset,
                 const float *hw, const float *basis, int64_t *indices) {
    int64_t r = 0;
#if VQ_X86
    if (level >= 1) {
        r = fsq_grid_avx2(t, rows, d, halfL, offset, hw, basis, indices);
        for (; r < rows; r++) indices[r] = fsq_row(t + r * d, d, halfL, offset, hw, basis, rint_hw);
        return;
    }
#endif
    (void)level;
    r = fsq_grid_vec(t, rows, d, halfL, offset, hw, basis, indices);
    for (; r < rows; r++) indices[r] = fsq_row(t + r * d, d, halfL, offset, hw, basis, rint_libm);
}
