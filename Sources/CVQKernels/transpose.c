// Transposes: a copy, no arithmetic.
#include "vq_kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#define VQ_TRANSPOSE_X86 1
#include <immintrin.h>
#else
#define VQ_TRANSPOSE_X86 0
#endif

/* Rows i0..<i1 of the rows × cols matrix `src` into `dst` (cols × rows): dst[j·rows + i] = src[i·cols + j].
   Tiles of 16 rows × 16 columns: each source row's cache line is read whole by consecutive loads (a power-of-two
   row stride maps the rows of a taller tile to one first-level cache set), and each destination line is written
   whole within the tile. 4 × 4 blocks go through SSE registers (baseline x86-64). */
void vq_transpose_rows(const float *src, int64_t rows, int64_t cols, int64_t i0, int64_t i1, float *dst) {
    int64_t i = i0;
#if VQ_TRANSPOSE_X86
    for (; i + 16 <= i1; i += 16) {
        int64_t j = 0;
        for (; j + 16 <= cols; j += 16)
            for (int64_t r = 0; r < 16; r += 4) {
                const float *s = src + (i + r) * cols + j;
                float *d = dst + j * rows + i + r;
                for (int64_t c = 0; c < 16; c += 4) {
                    __m128 a0 = _mm_loadu_ps(s + c), a1 = _mm_loadu_ps(s + cols + c);
                    __m128 a2 = _mm_loadu_ps(s + 2 * cols + c), a3 = _mm_loadu_ps(s + 3 * cols + c);
                    _MM_TRANSPOSE4_PS(a0, a1, a2, a3);
                    _mm_storeu_ps(d + c * rows, a0);
                    _mm_storeu_ps(d + (c + 1) * rows, a1);
                    _mm_storeu_ps(d + (c + 2) * rows, a2);
                    _mm_storeu_ps(d + (c + 3) * rows, a3);
                }
            }
        for (; j < cols; j++)
            for (int64_t r = 0; r < 16; r++) dst[j * rows + i + r] = src[(i + r) * cols + j];
    }
#endif
    /* The remaining rows (all of them off x86) in tiles of 16 × 16, element by element. */
    for (; i < i1; i += 16) {
        int64_t ie = i + 16 < i1 ? i + 16 : i1;
        for (int64_t j = 0; j < cols; j += 16) {
            int64_t je = j + 16 < cols ? j + 16 : cols;
            for (int64_t r = i; r < ie; r++)
                for (int64_t c = j; c < je; c++) dst[c * rows + r] = src[r * cols + c];
        }
    }
}
