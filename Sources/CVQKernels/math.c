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
/* The polynomials' coefficients, highest degree first (every version evaluates them by Horner's rule with fmas):
   e^r ≈ 1 + r + r²·P(r) and tanh(x) ≈ x + x·x²·Q(x²). */
static const float vq_exp_poly[6] = {1.9875691500E-4f, 1.3981999507E-3f, 8.3334519073E-3f, 4.1665795894E-2f,
                                     1.6666665459E-1f, 5.0000001201E-1f};
static const float vq_tanh_poly[5] = {-5.70498872745E-3f, 2.06390887954E-2f, -5.37397155531E-2f, 1.33314422036E-1f,
                                      -3.33332819422E-1f};

static inline float exp_scalar(float x, float (*fma_fn)(float, float, float)) {
    x = x > VQ_EXP_HI ? VQ_EXP_HI : (x < VQ_EXP_LO ? VQ_EXP_LO : x);
    float fx = fma_fn(x, VQ_LOG2E, 0.5f);
    fx = floorf(fx);
    x = fma_fn(fx, -VQ_C1, x);
    x = fma_fn(fx, -VQ_C2, x);
    float z = x * x;
    float y = vq_exp_poly[0];
    _Pragma("unroll") for (int j = 1; j < 6; j++) y = fma_fn(y, x, vq_exp_poly[j]);
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
        float p = vq_tanh_poly[0];
        _Pragma("unroll") for (int j = 1; j < 5; j++) p = fma_fn(p, z, vq_tanh_poly[j]);
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
    __m256 y = _mm256_set1_ps(vq_exp_poly[0]);
    _Pragma("unroll") for (int j = 1; j < 6; j++) y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(vq_exp_poly[j]));
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
        __m256 p = _mm256_set1_ps(vq_tanh_poly[0]);
        _Pragma("unroll") for (int j = 1; j < 5; j++) p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(vq_tanh_poly[j]));
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

#if VQ_NATIVE_FMA || VQ_CHECKED_FMA
/* exp_scalar and tanh_scalar (and GELU below) on MATH_V vectors of four lanes at a time: the same operations, each fma
   correctly rounded as fmaf (the instruction on AArch64; at baseline x86-64 in double, see vq_f4_fma_checked, with the
   rare blocks it cannot vouch for redone by tanh_scalar), so the values equal the scalar and AVX2 versions'. Each step
   runs on all the vectors before the next (`EACH`), so their chains of dependent operations overlap: one chain
   is latency-bound (about 19 cycles per checked fma at baseline x86-64). */
#define MATH_V 4
#define EACH(k) for (int k = 0; k < MATH_V; k++)
static inline void exp_vecs(vq_f4 x[MATH_V], vq_f4 out[MATH_V], vq_i4 risk[MATH_V]) {
    vq_f4 fx[MATH_V], z[MATH_V], y[MATH_V];
    EACH(k) x[k] = vq_f4_select(x[k] > vq_f4_splat(VQ_EXP_HI), vq_f4_splat(VQ_EXP_HI), x[k]);
    EACH(k) x[k] = vq_f4_select(x[k] < vq_f4_splat(VQ_EXP_LO), vq_f4_splat(VQ_EXP_LO), x[k]);
    EACH(k) fx[k] = vq_f4_floor(vq_f4_fma_checked(x[k], vq_f4_splat(VQ_LOG2E), vq_f4_splat(0.5f), &risk[k]));
    EACH(k) x[k] = vq_f4_fma_checked(fx[k], vq_f4_splat(-VQ_C1), x[k], &risk[k]);
    EACH(k) x[k] = vq_f4_fma_checked(fx[k], vq_f4_splat(-VQ_C2), x[k], &risk[k]);
    EACH(k) z[k] = x[k] * x[k];
    EACH(k) y[k] = vq_f4_splat(vq_exp_poly[0]);
    _Pragma("unroll") for (int j = 1; j < 6; j++)
        EACH(k) y[k] = vq_f4_fma_checked(y[k], x[k], vq_f4_splat(vq_exp_poly[j]), &risk[k]);
    EACH(k) y[k] = vq_f4_fma_checked(y[k], z[k], x[k], &risk[k]) + vq_f4_splat(1.0f);
    EACH(k) out[k] = y[k] * (vq_f4)((__builtin_convertvector(fx[k], vq_i4) + 127) << 23);
}

static void tanh_vec(const float *in, float *out, int64_t n) {
    int64_t i = 0;
    const vq_f4 one = vq_f4_splat(1.0f), two = vq_f4_splat(2.0f);
    for (; i + 4 * MATH_V <= n; i += 4 * MATH_V) {
        vq_f4 x[MATH_V], a[MATH_V], z[MATH_V], p[MATH_V], small[MATH_V], e[MATH_V];
        vq_i4 small_risk[MATH_V], exp_risk[MATH_V], risk = {0, 0, 0, 0};
        EACH(k) x[k] = vq_f4_load(in + i + 4 * k), a[k] = vq_f4_abs(x[k]), z[k] = x[k] * x[k];
        EACH(k) small_risk[k] = exp_risk[k] = (vq_i4){0, 0, 0, 0};
        EACH(k) p[k] = vq_f4_splat(vq_tanh_poly[0]);
        _Pragma("unroll") for (int j = 1; j < 5; j++)
            EACH(k) p[k] = vq_f4_fma_checked(p[k], z[k], vq_f4_splat(vq_tanh_poly[j]), &small_risk[k]);
        EACH(k) small[k] = vq_f4_fma_checked(p[k] * z[k], x[k], x[k], &small_risk[k]);
        EACH(k) e[k] = a[k] + a[k];
        exp_vecs(e, e, exp_risk);
        vq_f4 res[MATH_V];
        EACH(k) {
            vq_f4 r = one - two / (e[k] + one);
            r = vq_f4_select(a[k] > vq_f4_splat(9.0f), one, r);
            r = (vq_f4)((vq_i4)r | (vq_i4)vq_f4_sign(x[k]));
            const vq_i4 takes_small = a[k] < vq_f4_splat(0.625f);
            res[k] = vq_f4_select(x[k] != x[k], x[k], vq_f4_select(takes_small, small[k], r));
            /* Only the branch a lane takes counts. Its fma results are normal floats or exact: the polynomials'
               constants dominate them, the exp reduction's are multiples of 2⁻⁴⁰ or zero, and the small branch's last,
               x·(1 + p·x²), is x itself where x is below 2⁻⁷⁵ (x² underflows to zero). */
            risk |= (small_risk[k] & takes_small) | (exp_risk[k] & ~takes_small & (a[k] <= vq_f4_splat(9.0f)));
        }
        if (__builtin_expect(vq_i4_any(risk), 0))   /* from the inputs held here: `out` may be `in` */
            EACH(k) for (int q = 0; q < 4; q++) res[k][q] = tanh_scalar(x[k][q], fma_libm);
        EACH(k) vq_f4_store(out + i + 4 * k, res[k]);
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
#if VQ_NATIVE_FMA || VQ_CHECKED_FMA
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

#if VQ_NATIVE_FMA || VQ_CHECKED_FMA
/* gelu_phi, gelu_scalar and gelu_grad_scalar on MATH_V vectors at a time (the same operations, each fma as fmaf; see
   tanh_vec). The checked fma results are normal floats or exact: t's denominator is at least 1, the polynomial's
   terms stay clear of zero (or cancel exactly), the exponential's as in tanh (a subnormal argument gives itself), and
   the gradient's last, x·φ(x)/√(2π)·… + Φ(x), is marked when it is at most 2⁻¹²⁶. A block with a mark is redone by
   the scalar functions from the inputs held in registers (`out` may be `in`). */
static inline void gelu_phi_vecs(const vq_f4 x[MATH_V], vq_f4 phi[MATH_V], vq_f4 e[MATH_V], vq_i4 risk[MATH_V]) {
    vq_f4 t[MATH_V], p[MATH_V], arg[MATH_V];
    static const float c[3] = {VQ_GELU_A3, VQ_GELU_A2, VQ_GELU_A1};
    EACH(k) t[k] = vq_f4_splat(1.0f) / vq_f4_fma_checked(vq_f4_splat(VQ_GELU_P), vq_f4_abs(x[k]) * vq_f4_splat(VQ_SQRT1_2),
                                                         vq_f4_splat(1.0f), &risk[k]);
    EACH(k) p[k] = vq_f4_fma_checked(vq_f4_splat(VQ_GELU_A5), t[k], vq_f4_splat(VQ_GELU_A4), &risk[k]);
    _Pragma("unroll") for (int j = 0; j < 3; j++) EACH(k) p[k] = vq_f4_fma_checked(p[k], t[k], vq_f4_splat(c[j]), &risk[k]);
    EACH(k) arg[k] = vq_f4_splat(-0.5f) * (x[k] * x[k]);
    exp_vecs(arg, e, risk);
    EACH(k) {
        const vq_f4 tail = vq_f4_splat(0.5f) * (t[k] * p[k]) * e[k];
        phi[k] = vq_f4_select(x[k] < vq_f4_splat(0.0f), tail, vq_f4_splat(1.0f) - tail);
    }
}

/* GELU (`g` NULL) or its gradient times `g`. */
static void gelu_vec(const float *in, const float *g, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 4 * MATH_V <= n; i += 4 * MATH_V) {
        vq_f4 x[MATH_V], phi[MATH_V], e[MATH_V], res[MATH_V];
        vq_i4 risk[MATH_V], any = {0, 0, 0, 0};
        EACH(k) x[k] = vq_f4_load(in + i + 4 * k), risk[k] = (vq_i4){0, 0, 0, 0};
        gelu_phi_vecs(x, phi, e, risk);
        EACH(k) {
            vq_f4 xc = vq_f4_select(x[k] < vq_f4_splat(-20.0f), vq_f4_splat(-20.0f), x[k]), r;
            if (g) {
                xc = vq_f4_select(x[k] > vq_f4_splat(20.0f), vq_f4_splat(20.0f), xc);
                const vq_f4 d = vq_f4_fma_checked(xc * vq_f4_splat(VQ_INV_SQRT_2PI), e[k], phi[k], &risk[k]);
                risk[k] |= ((vq_i4)vq_f4_abs(d) < 0x00800001) & (d != vq_f4_splat(0.0f));
                r = vq_f4_load(g + i + 4 * k) * d;
            } else {
                r = xc * phi[k];
            }
            res[k] = vq_f4_select(x[k] != x[k], x[k], r);
            any |= risk[k] & (x[k] == x[k]);
        }
        if (__builtin_expect(vq_i4_any(any), 0))
            EACH(k) for (int q = 0; q < 4; q++)
                res[k][q] = g ? gelu_grad_scalar(x[k][q], g[i + 4 * k + q], fma_libm) : gelu_scalar(x[k][q], fma_libm);
        EACH(k) vq_f4_store(out + i + 4 * k, res[k]);
    }
    for (; i < n; i++) out[i] = g ? gelu_grad_scalar(in[i], g[i], fma_libm) : gelu_scalar(in[i], fma_libm);
}
#endif
#undef EACH

void vq_gelu(int level, const float *in, float *out, int64_t n) {
#if VQ_X86
    if (level >= 1) { gelu_avx2(in, out, n); return; }
#endif
    (void)level;
#if VQ_NATIVE_FMA || VQ_CHECKED_FMA
    gelu_vec(in, NULL, out, n);
#else
    for (int64_t i = 0; i < n; i++) out[i] = gelu_scalar(in[i], fma_libm);
#endif
}

void vq_gelu_backward(int level, const float *in, const float *g, float *out, int64_t n) {
#if VQ_X86
    if (level >= 1) { gelu_grad_avx2(in, g, out, n); return; }
#endif
    (void)level;
#if VQ_NATIVE_FMA || VQ_CHECKED_FMA
    gelu_vec(in, g, out, n);
#else
    for (int64_t i = 0; i < n; i++) out[i] = gelu_grad_scalar(in[i], g[i], fma_libm);
#endif
}
