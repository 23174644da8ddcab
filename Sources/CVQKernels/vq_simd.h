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

/* The portable GEMM micro-tile: VQ_PMR rows × VQ_PNV vectors (VQ_PNR floats). AArch64 has 32 vector registers. */
#if defined(__aarch64__)
#define VQ_PMR 8
#define VQ_PNV 3
#else
#define VQ_PMR 6
#define VQ_PNV 2
#endif
#define VQ_PNR (4 * VQ_PNV)
#endif
