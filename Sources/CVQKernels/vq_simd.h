/* The portable kernels' vectors: the compiler's vector extension (clang and GCC), four floats. On baseline x86-64
   they are SSE2 registers, on AArch64 Advanced SIMD ones; element-wise `+ - * /` round as the scalar operations do
   (AArch64 contracts `t + a * b` into a fused multiply-add, as its scalar code does). Not a public header. */
#ifndef VQ_SIMD_H
#define VQ_SIMD_H
#include <stdint.h>
#include <string.h>

typedef float vq_f4 __attribute__((vector_size(16)));
typedef int32_t vq_i4 __attribute__((vector_size(16)));

static inline vq_f4 vq_f4_load(const float *p) { vq_f4 v; memcpy(&v, p, sizeof v); return v; }
static inline void vq_f4_store(float *p, vq_f4 v) { memcpy(p, &v, sizeof v); }
static inline vq_f4 vq_f4_splat(float x) { return (vq_f4){x, x, x, x}; }
/* Lane-wise `m ? a : b` for a comparison mask `m` (all bits set or clear per lane). */
static inline vq_f4 vq_f4_select(vq_i4 m, vq_f4 a, vq_f4 b) { return (vq_f4)(((vq_i4)a & m) | ((vq_i4)b & ~m)); }
static inline int vq_i4_any(vq_i4 m) { return (m[0] | m[1] | m[2] | m[3]) != 0; }
/* Lane-wise `lo > x ? lo : x`: x raised to at least `lo`, a NaN in x kept — one MAXPS on x86 (its first operand where
   greater, else its second, so a NaN second operand passes), a compare and a select elsewhere. */
static inline vq_f4 vq_f4_raise(vq_f4 x, vq_f4 lo) {
#if defined(__SSE__)
    return __builtin_ia32_maxps(lo, x);
#else
    return vq_f4_select(lo > x, lo, x);
#endif
}

static inline vq_f4 vq_f4_abs(vq_f4 x) { return (vq_f4)((vq_i4)x & (vq_i4){0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff}); }
static inline vq_f4 vq_f4_sign(vq_f4 x) { return (vq_f4)((vq_i4)x & (vq_i4){INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN}); }
/* floorf lane-wise for |x| < 2^31 (a truncation, one down where it rounded up). */
static inline vq_f4 vq_f4_floor(vq_f4 x) {
    vq_f4 t = __builtin_convertvector(__builtin_convertvector(x, vq_i4), vq_f4);
    return vq_f4_select(t > x, t - vq_f4_splat(1.0f), t);
}
/* rintf lane-wise (nearest, ties to even; the sign of x kept, so −0.3 gives −0 as rintf does; NaN stays NaN):
   |x| + 2²³ − 2²³ rounds |x| < 2²³ to an integer in the current (nearest-even) mode; larger values are integers. */
static inline vq_f4 vq_f4_rint(vq_f4 x) {
    const vq_f4 big = vq_f4_splat(8388608.0f), a = vq_f4_abs(x);
    vq_f4 r = (vq_f4)((vq_i4)((a + big) - big) | (vq_i4)vq_f4_sign(x));
    return vq_f4_select(a < big, r, x);
}

/* fmaf lane-wise where the target has the instruction (AArch64; x86-64 built for FMA): correctly rounded, as fmaf. */
#if defined(__aarch64__) || defined(__FMA__)
#define VQ_NATIVE_FMA 1
static inline vq_f4 vq_f4_fma(vq_f4 a, vq_f4 b, vq_f4 c) { return __builtin_elementwise_fma(a, b, c); }
/* With the instruction, nothing to check: `risk` is left as it is. */
static inline vq_f4 vq_f4_fma_checked(vq_f4 a, vq_f4 b, vq_f4 c, vq_i4 *risk) { (void)risk; return vq_f4_fma(a, b, c); }
#elif defined(__x86_64__)
/* Baseline x86-64 (SSE2, no fused multiply-add): fmaf four lanes at a time in double, with the lanes where it may
   differ from fmaf marked in `*risk` (all bits set), for the caller to redo those with fmaf. The product of two
   floats is exact in double (48 significant bits), so a·b + c rounds once to double and once more to float. If the
   double is not a float midpoint (its low 29 significand bits 1000…0), the exact value is on the same side of every
   midpoint as the double (the rounding to double is monotone, and midpoints are doubles), so both roundings give
   fmaf's one; lanes landing on a midpoint are marked. That grid is the normal floats': a result of magnitude below
   2⁻¹²⁶ (other than an exact zero) is not covered, and the caller rules it out. The marks accumulate, so a chain
   of operations needs one test at its end. */
#define VQ_CHECKED_FMA 1
typedef double vq_d2 __attribute__((vector_size(16)));
static inline vq_f4 vq_f4_fma_checked(vq_f4 a, vq_f4 b, vq_f4 c, vq_i4 *risk) {
    const vq_d2 lo = __builtin_convertvector(__builtin_shufflevector(a, a, 0, 1), vq_d2)
                         * __builtin_convertvector(__builtin_shufflevector(b, b, 0, 1), vq_d2)
                     + __builtin_convertvector(__builtin_shufflevector(c, c, 0, 1), vq_d2);
    const vq_d2 hi = __builtin_convertvector(__builtin_shufflevector(a, a, 2, 3), vq_d2)
                         * __builtin_convertvector(__builtin_shufflevector(b, b, 2, 3), vq_d2)
                     + __builtin_convertvector(__builtin_shufflevector(c, c, 2, 3), vq_d2);
    const vq_f4 r = __builtin_convertvector(__builtin_shufflevector(lo, hi, 0, 1, 2, 3), vq_f4);
    const vq_i4 low = __builtin_shufflevector((vq_i4)lo, (vq_i4)hi, 0, 2, 4, 6);   /* each double's low 32 bits */
    *risk |= (low & 0x1FFFFFFF) == 0x10000000;
    return r;
}
#endif

/* The portable GEMM micro-tile: VQ_PMR rows × VQ_PNV vectors (VQ_PNR floats). AArch64 has 32 vector registers. */
#if defined(__aarch64__)
#define VQ_PMR 8
#define VQ_PNV 3
#else
#define VQ_PMR 4
#define VQ_PNV 3
#endif
#define VQ_PNR (4 * VQ_PNV)
#endif
