/* Throughput of the screen's and the float tile's instructions on this CPU: 14 independent chains of each (more
   than any latency × pipes here), so the rate is the pipes'. Benchmarks/README.md ("The AVX2 floor, measured").
     gcc -O2 Scripts/port_rates.c -o /tmp/port_rates && /tmp/port_rates [GHz]
   GHz (default 3.36) converts per-nanosecond rates to per-cycle; without hardware counters in a VM, measure it with
   a one-add-per-cycle loop. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
#define R14(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11) OP(12) OP(13)

__attribute__((target("avx2,fma"))) int main(int argc, char **argv) {
    const double ghz = argc > 1 ? atof(argv[1]) : 3.36;
    const long n = 100000000;
    const __m256i b = _mm256_set1_epi8(5), ones = _mm256_set1_epi16(1);
    const __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
    __m256i s[14];
    __m256 f[14];
    for (int i = 0; i < 14; i++) { s[i] = _mm256_set1_epi8((char)i); f[i] = _mm256_set1_ps((float)i); }
    double t;
#define MU(i) s[i] = _mm256_maddubs_epi16(s[i], b);
    t = now(); for (long i = 0; i < n; i++) { R14(MU) } t = now() - t;
    printf("vpmaddubsw  %.2f per cycle\n", 14.0 * n / t / (ghz * 1e9));
#define MW(i) s[i] = _mm256_madd_epi16(s[i], ones);
    t = now(); for (long i = 0; i < n; i++) { R14(MW) } t = now() - t;
    printf("vpmaddwd    %.2f per cycle\n", 14.0 * n / t / (ghz * 1e9));
    __m128i x[14];
    for (int i = 0; i < 14; i++) x[i] = _mm_set1_epi16((short)i);
    const __m128i ones4 = _mm_set1_epi16(1);
#define PW(i) x[i] = _mm_madd_epi16(x[i], ones4);
    t = now(); for (long i = 0; i < n; i++) { R14(PW) } t = now() - t;
    printf("pmaddwd (SSE2, 8 products) %.2f per cycle\n", 14.0 * n / t / (ghz * 1e9));
    for (int i = 1; i < 14; i++) x[0] = _mm_add_epi32(x[0], x[i]);
    s[0] = _mm256_add_epi32(s[0], _mm256_castsi128_si256(x[0]));
#define FM(i) f[i] = _mm256_fmadd_ps(f[i], m, c);
    t = now(); for (long i = 0; i < n; i++) { R14(FM) } t = now() - t;
    printf("vfmadd231ps %.2f per cycle\n", 14.0 * n / t / (ghz * 1e9));
    __m256i acc = _mm256_setzero_si256();
    __m256 fa = _mm256_setzero_ps();
    for (int i = 0; i < 14; i++) { acc = _mm256_add_epi32(acc, s[i]); fa = _mm256_add_ps(fa, f[i]); }
    int o[8]; float p[8];
    _mm256_storeu_si256((__m256i *)o, acc); _mm256_storeu_ps(p, fa);
    return o[0] == 42 && p[0] == 42.0f;   /* keeps the chains live */
}
