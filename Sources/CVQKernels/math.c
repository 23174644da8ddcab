// Transcendental element-wise kernels (tanh, GELU) with AVX2 and portable versions that round alike, so a
// value does not depend on its position in the buffer (or on the thread that computed it).
#include "vq_kernels.h"
#include "vq_simd.h"
#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define VQ_X86 1
#include <immintrin.h>
#endif

/* tanh in single precision (Cephes tanhf, Moshier): |x| < 0.625: x + x·x²·P(x²); otherwise
   sign(x)·(1 − 2 / (e^{2|x|} + 1)) with a Cephes-style expf. The scalar and AVX2 versions perform the
   same operations (FMA where the formula has one), so a value does not depend on its position. Max
   error about 2 ULP; tanh(±∞) = ±1, NaN stays NaN. */
#define VQ_EXP_HI 88.3762626647949f
#define VQ_EXP_LO -88.3762626647949f
#define VQ_LOG2E 1.44269504088896341f
#define VQ_C1 0.693359375f
#define VQ_C2 -2.12194440e-4f

static inline float exp_scalar(float x, float (*fma_fn)(float, float, float)) {
    x = x > VQ_EXP_HI ? VQ_EXP_HI : (x < VQ_EXP_LO ? VQ_EXP_LO : x);
    float fx = fma_fn(x, VQ_LOG2E, 0.5f);
    fx = floorf(fx);
    x = fma_fn(fx, -VQ_C1, x);
    x = fma_fn(fx, -VQ_C2, x);
    float z = x * x;
    float y = 1.9875691500E-4f;
    y = fma_fn(y, x, 1.3981999507E-3f);
    y = fma_fn(y, x, 8.3334519073E-3f);
    y = fma_fn(y, x, 4.1665795894E-2f);
    y = fma_fn(y, x, 1.6666665459E-1f);
    y = fma_fn(y, x, 5.0000001201E-1f);
    y = fma_fn(y, z, x);
    y = y + 1.0f;
    int n = (int)fx;
    union { float f; int32_t i; } u = { .i = (n + 127) << 23 };
    return y * u.f;
}

static inline float tanh_scalar(float x, float (*fma_fn)(float, float, float)) {
    if (x != x) return x;
    float a = fabsf(x);
    if (a < 0.625f) {
        float z = x * x;
        float p = -5.70498872745E-3f;
        p = fma_fn(p, z, 2.06390887954E-2f);
        p = fma_fn(p, z, -5.37397155531E-2f);
        p = fma_fn(p, z, 1.33314422036E-1f);
        p = fma_fn(p, z, -3.33332819422E-1f);
        return fma_fn(p * z, x, x);
    }
    if (a > 9.0f) return x > 0 ? 1.0f : -1.0f;
    float e = exp_scalar(a + a, fma_fn);
    float r = 1.0f - 2.0f / (e + 1.0f);
    return x > 0 ? r : -r;
}

static float fma_libm(float a, float b, float c) { return fmaf(a, b, c); }

#if VQ_X86
__attribute__((target("avx2,fma"))) static float fma_hw(float a, float b, float c) { return __builtin_fmaf(a, b, c); }

__attribute__((target("avx2,fma")))
static inline __m256 exp_avx2(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(VQ_EXP_LO)), _mm256_set1_ps(VQ_EXP_HI));
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(VQ_LOG2E), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fmadd_ps(fx, _mm256_set1_ps(-VQ_C1), x);
    x = _mm256_fmadd_ps(fx, _mm256_set1_ps(-VQ_C2), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, z, x);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i n = _mm256_cvttps_epi32(fx);
    __m256 pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(y, pow2);
}

__attribute__((target("avx2,fma")))
static void tanh_avx2(const float *in, float *out, int64_t n) {
    int64_t i = 0;
    const __m256 signmask = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(in + i);
        __m256 a = _mm256_andnot_ps(signmask, x);
        __m256 z = _mm256_mul_ps(x, x);
        __m256 p = _mm256_set1_ps(-5.70498872745E-3f);
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.06390887954E-2f));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.37397155531E-2f));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.33314422036E-1f));
        p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.33332819422E-1f));
        __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
        __m256 e = exp_avx2(_mm256_add_ps(a, a));
        __m256 r = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
        r = _mm256_blendv_ps(r, one, _mm256_cmp_ps(a, _mm256_set1_ps(9.0f), _CMP_GT_OQ));
        r = _mm256_or_ps(r, _mm256_and_ps(x, signmask));                 /* sign of x */
        __m256 res = _mm256_blendv_ps(r, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
        res = _mm256_blendv_ps(res, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); /* NaN stays NaN */
        _mm256_storeu_ps(out + i, res);
    }
    for (; i < n; i++) out[i] = tanh_scalar(in[i], fma_hw);
}
#endif

#if VQ_NATIVE_FMA
/* exp_scalar and tanh_scalar four lanes at a time with the portable vectors where fma is an instruction (AArch64):
   the same operations (vq_f4_fma is correctly rounded, as fmaf), so the values equal the scalar and AVX2 versions'. */
static inline vq_f4 exp_vec(vq_f4 x) {
    x = vq_f4_select(x > vq_f4_splat(VQ_EXP_HI), vq_f4_splat(VQ_EXP_HI), x);
    x = vq_f4_select(x < vq_f4_splat(VQ_EXP_LO), vq_f4_splat(VQ_EXP_LO), x);
    vq_f4 fx = vq_f4_floor(vq_f4_fma(x, vq_f4_splat(VQ_LOG2E), vq_f4_splat(0.5f)));
    x = vq_f4_fma(fx, vq_f4_splat(-VQ_C1), x);
    x = vq_f4_fma(fx, vq_f4_splat(-VQ_C2), x);
    const vq_f4 z = x * x;
    vq_f4 y = vq_f4_splat(1.9875691500E-4f);
    y = vq_f4_fma(y, x, vq_f4_splat(1.3981999507E-3f));
    y = vq_f4_fma(y, x, vq_f4_splat(8.3334519073E-3f));
    y = vq_f4_fma(y, x, vq_f4_splat(4.1665795894E-2f));
    y = vq_f4_fma(y, x, vq_f4_splat(1.6666665459E-1f));
    y = vq_f4_fma(y, x, vq_f4_splat(5.0000001201E-1f));
    y = vq_f4_fma(y, z, x);
    y = y + vq_f4_splat(1.0f);
    const vq_i4 n = __builtin_convertvector(fx, vq_i4);
    const vq_f4 pow2 = (vq_f4)((n + 127) << 23);
    return y * pow2;
}

static void tanh_vec(const float *in, float *out, int64_t n) {
    int64_t i = 0;
    const vq_f4 one = vq_f4_splat(1.0f), two = vq_f4_splat(2.0f);
    for (; i + 4 <= n; i += 4) {
        const vq_f4 x = vq_f4_load(in + i), a = vq_f4_abs(x), z = x * x;
        vq_f4 p = vq_f4_splat(-5.70498872745E-3f);
        p = vq_f4_fma(p, z, vq_f4_splat(2.06390887954E-2f));
        p = vq_f4_fma(p, z, vq_f4_splat(-5.37397155531E-2f));
        p = vq_f4_fma(p, z, vq_f4_splat(1.33314422036E-1f));
        p = vq_f4_fma(p, z, vq_f4_splat(-3.33332819422E-1f));
        const vq_f4 pz = p * z;
        const vq_f4 small = vq_f4_fma(pz, x, x);
        const vq_f4 e = exp_vec(a + a);
        const vq_f4 e1 = e + one;
        const vq_f4 q = two / e1;
        vq_f4 r = one - q;
        r = vq_f4_select(a > vq_f4_splat(9.0f), one, r);
        r = (vq_f4)((vq_i4)r | (vq_i4)vq_f4_sign(x));
        vq_f4 res = vq_f4_select(a < vq_f4_splat(0.625f), small, r);
        vq_f4_store(out + i, vq_f4_select(x != x, x, res));
    }
    for (; i < n; i++) out[i] = tanh_scalar(in[i], fma_libm);
}
#endif

void vq_tanh(const float *in, float *out, int64_t n) {
#if VQ_X86
    static int level = -1;
    if (level < 0) level = vq_cpu_level();
    if (level >= 1) { tanh_avx2(in, out, n); return; }
#endif
#if VQ_NATIVE_FMA
    tanh_vec(in, out, n);
#else
    for (int64_t i = 0; i < n; i++) out[i] = tanh_scalar(in[i], fma_libm);
#endif
}

/* GELU with the error function, x·Φ(x), Φ(x) = ½(1 + erf(x/√2)), and its derivative Φ(x) + x·φ(x),
   φ(x) = e^{−x²/2}/√(2π). erf by Abramowitz & Stegun, *Handbook of Mathematical Functions* (1964), 7.1.26:
   erf(z) = 1 − t·(a₁ + t(a₂ + t(a₃ + t(a₄ + t·a₅))))·e^{−z²}, t = 1/(1 + p·z), z ≥ 0, absolute error ≤ 1.5e-7.
   Φ is formed without cancellation on either side (½·t·P·e for x < 0, 1 − ½·t·P·e otherwise), and the one
   exponential serves φ as well. Scalar and AVX2 perform the same operations: a value does not depend on its
   position. */
#define VQ_GELU_P 0.3275911f
#define VQ_GELU_A1 0.254829592f
#define VQ_GELU_A2 -0.284496736f
#define VQ_GELU_A3 1.421413741f
#define VQ_GELU_A4 -1.453152027f
#define VQ_GELU_A5 1.061405429f
#define VQ_SQRT1_2 0.70710678118654752f
#define VQ_INV_SQRT_2PI 0.3989422804014327f

/* Φ(x) and e^{−x²/2}. */
static inline float gelu_phi(float x, float *e_out, float (*fma_fn)(float, float, float)) {
    float z = fabsf(x) * VQ_SQRT1_2;
    float t = 1.0f / fma_fn(VQ_GELU_P, z, 1.0f);
    float p = fma_fn(VQ_GELU_A5, t, VQ_GELU_A4);
    p = fma_fn(p, t, VQ_GELU_A3);
    p = fma_fn(p, t, VQ_GELU_A2);
    p = fma_fn(p, t, VQ_GELU_A1);
    float e = exp_scalar(-0.5f * (x * x), fma_fn);
    float tail = 0.5f * (t * p) * e;
    *e_out = e;
    return x < 0 ? tail : 1.0f - tail;
}

/* The factors x of x·Φ(x) and x·φ(x) are clamped to ±20 (Φ(−20) and φ(±20) vanish in single precision),
   so that ±∞ give the limits GELU(−∞) = 0, GELU′(+∞) = 1, GELU′(−∞) = 0 instead of ∞·0. */
static inline float gelu_scalar(float x, float (*fma_fn)(float, float, float)) {
    if (x != x) return x;
    float e;
    float phi = gelu_phi(x, &e, fma_fn);
    return (x < -20.0f ? -20.0f : x) * phi;
}

static inline float gelu_grad_scalar(float x, float g, float (*fma_fn)(float, float, float)) {
    if (x != x) return x;
    float e;
    float phi = gelu_phi(x, &e, fma_fn);
    float xc = x < -20.0f ? -20.0f : (x > 20.0f ? 20.0f : x);
    return g * fma_fn(xc * VQ_INV_SQRT_2PI, e, phi);
}

#if VQ_X86
/* Φ(x) for 8 lanes; e^{−x²/2} in *e. */
__attribute__((target("avx2,fma")))
static inline __m256 gelu_phi_avx2(__m256 x, __m256 *e_out) {
    const __m256 signmask = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
    __m256 z = _mm256_mul_ps(_mm256_andnot_ps(signmask, x), _mm256_set1_ps(VQ_SQRT1_2));
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(VQ_GELU_P), z, one));
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(VQ_GELU_A5), t, _mm256_set1_ps(VQ_GELU_A4));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(VQ_GELU_A3));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(VQ_GELU_A2));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(VQ_GELU_A1));
    __m256 e = exp_avx2(_mm256_mul_ps(_mm256_set1_ps(-0.5f), _mm256_mul_ps(x, x)));
    __m256 tail = _mm256_mul_ps(_mm256_mul_ps(half, _mm256_mul_ps(t, p)), e);
    *e_out = e;
    return _mm256_blendv_ps(_mm256_sub_ps(one, tail), tail, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
}

__attribute__((target("avx2,fma")))
static void gelu_avx2(const float *in, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(in + i), e;
        __m256 y = _mm256_mul_ps(_mm256_max_ps(x, _mm256_set1_ps(-20.0f)), gelu_phi_avx2(x, &e));
        _mm256_storeu_ps(out + i, _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
    }
    for (; i < n; i++) out[i] = gelu_scalar(in[i], fma_hw);
}

__attribute__((target("avx2,fma")))
static void gelu_grad_avx2(const float *in, const float *g, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(in + i), e;
        __m256 phi = gelu_phi_avx2(x, &e);
        __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-20.0f)), _mm256_set1_ps(20.0f));
        __m256 d = _mm256_fmadd_ps(_mm256_mul_ps(xc, _mm256_set1_ps(VQ_INV_SQRT_2PI)), e, phi);
        __m256 r = _mm256_mul_ps(_mm256_loadu_ps(g + i), d);
        _mm256_storeu_ps(out + i, _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
    }
    for (; i < n; i++) out[i] = gelu_grad_scalar(in[i], g[i], fma_hw);
}
#endif

void vq_gelu(int level, const float *in, float *out, int64_t n) {
#if VQ_X86
    if (level >= 1) { gelu_avx2(in, out, n); return; }
#endif
    (void)level;
    for (int64_t i = 0; i < n; i++) out[i] = gelu_scalar(in[i], fma_libm);
}

void vq_gelu_backward(int level, const float *in, const float *g, float *out, int64_t n) {
#if VQ_X86
    if (level >= 1) { gelu_grad_avx2(in, g, out, n); return; }
#endif
    (void)level;
    for (int64_t i = 0; i < n; i++) out[i] = gelu_grad_scalar(in[i], g[i], fma_libm);
}
