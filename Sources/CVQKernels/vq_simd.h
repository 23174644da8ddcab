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

/* fmaf lane-wise where the target has the instruction (AArch64; x86-64 built for FMA): correctly rounded, as fmaf.
   Elsewhere the kernels that need it stay scalar with fmaf (an emulation in double, round-to-odd, measured slower
   than glibc's fmaf on baseline x86-64). */
#if defined(__aarch64__) || defined(__FMA__)
#define VQ_NATIVE_FMA 1
static inline vq_f4 vq_f4_fma(vq_f4 a, vq_f4 b, vq_f4 c) { return __builtin_elementwise_fma(a, b, c); }
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
