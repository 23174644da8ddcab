// C micro-kernels for VQTensor. Only the innermost tiles live here; packing, blocking, tiling and
// threading are written in Swift. Each kernel has an AVX-512, an AVX2+FMA and a portable version,
// chosen at run time (no compiler flags needed, so the package stays usable as a dependency).
#ifndef VQ_KERNELS_H
#define VQ_KERNELS_H

#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Instruction-set levels: 0 = portable C, 1 = AVX2 + FMA, 2 = AVX-512F, 3 = AVX-512F with BF16 and VNNI dot
/// products (used only to screen nearest-code candidates; every other kernel treats 3 as 2).
int vq_cpu_level(void);
/// Whether the 8-bit dot-product instruction VPDPBUSD (AVX-512 VNNI) runs here: at level 3, and at a detected level 2
/// whose CPU has it (not at a level lowered to 2, which stands for plain AVX-512).
int vq_cpu_has_vnni(void);
/* CPUs in this process's affinity mask (0 when unknown). */
int vq_affinity_cpu_count(void);

/// Rows (MR) and columns (NR) of the GEMM micro-tile for a level.
int vq_gemm_mr(int level);
int vq_gemm_nr(int level);

/// C[MR×NR] (row stride ldc) = (accumulate ? C : 0) + A·B over kc, where `a` is packed as kc groups of
/// MR floats (column k of the A panel) and `b` as kc groups of NR floats (row k of the B panel).
void vq_gemm_ukr(int level, int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                 int accumulate);

/// Packs `rows` (≤ `mr`) rows of A, row i at `a + i·ars` (`kb` contiguous floats), into one MR-high panel:
/// `dst[p·mr + i] = a[i·ars + p]`, rows `rows..<mr` zero (the layout `vq_gemm_ukr` reads). A copy: no arithmetic.
/// Also packs a transposed B (columns of B contiguous in memory, e.g. a `Linear` weight) into NR-wide panels.
void vq_gemm_pack_a(const float *a, int64_t ars, int64_t rows, int64_t kb, int64_t mr, float *dst);

/// Rows `i0..<i1` of the `rows × cols` matrix `src` transposed into `dst` (`cols × rows`):
/// `dst[j·rows + i] = src[i·cols + j]`. A copy: no arithmetic. Callers split `0..<rows` over threads.
void vq_transpose_rows(const float *src, int64_t rows, int64_t cols, int64_t i0, int64_t i1, float *dst);

/// `vq_gemm_ukr` starting every row of the tile from `bias` (NR floats): `C = bias + A·B`, the sum of the product
/// formed first and the bias added once, as accumulating into a tile filled with the bias.
void vq_gemm_ukr_bias(int level, int64_t kc, const float *a, const float *b, const float *bias, float *c, int64_t ldc);

/// `vq_gemm_ukr` with B read in place: row k of the B tile is the NR floats at `b + offsets[k]` (a product over
/// shifted views of one buffer, e.g. a stride-1 convolution over a padded input: no im2col, no packing).
void vq_gemm_ukr_offsets(int level, int64_t kc, const float *a, const float *b, const int64_t *offsets, float *c,
                         int64_t ldc, int accumulate);

/// `vq_gemm_ukr_offsets` with an 8 × 32 tile (AVX-512 only: returns 0 and does nothing at other levels), for
/// products with a multiple of 8 rows that the 12-row tile would pad.
int vq_gemm_ukr8_offsets(int level, int64_t kc, const float *a, const float *b, const int64_t *offsets, float *c,
                         int64_t ldc, int accumulate);

/// One output row over shifted rows: `c[j] = (accumulate ? c[j] : 0) + Σ_k a[k]·b[offsets[k] + j]` for
/// `j < width`, each element accumulated over k in order with fused multiply-adds (the vector and scalar
/// positions round alike).
void vq_offset_row(int level, int64_t kc, const float *a, const float *b, const int64_t *offsets, float *c,
                   int64_t width, int accumulate);

/// `c[i·ldc + j] = Σ_{p<len} a[i·lda + p] · b[offsets[j] + p]` for `i < rows ≤ 6`, `j < cols ≤ 4`: dot products
/// of rows against shifted views of one buffer (a convolution's weight gradient over its padded input), each
/// in a fixed order (lane-wise partial sums, then the lanes).
void vq_shifted_dots(int level, int64_t len, const float *a, int64_t lda, int rows, const float *b,
                     const int64_t *offsets, int cols, float *c, int64_t ldc);

/// Max pooling of one `[oh·kh, width]` plane over `kh × kw` windows that tile it (stride = kernel, no padding):
/// `dst[oy·ow + ox]` = the window's largest value (NaN counts as largest; ties and NaNs: the first in row-major
/// window order), `arg` = its flat position in the plane.
void vq_max_pool_tiles(int level, const float *src, int64_t width, int64_t oh, int64_t ow, int64_t kh, int64_t kw,
                       float *dst, int32_t *arg);

/// Running nearest-code update for `rows` query rows against a tile of `cols` codes.
/// `dots` holds x·c (row stride `ld`). Euclidean (cosine == 0): score =
/// max((xx[r] + cc[j]) + dots*(-2), 1e-8) (the squared distance; its square root is monotone), smaller
/// is closer; cosine: score = -dot.
/// Strictly smaller scores replace `best`, so exact ties keep the lowest code index.
void vq_argmin_update(const float *dots, int64_t ld, int64_t rows, int64_t cols, const float *xx,
                      const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index);

/// `vq_gemm_ukr` (one depth block, not accumulating) and `vq_argmin_update` of its first `rows` rows and
/// `cols` columns in one call, the scores formed in registers; bit-identical to that pair. AVX-512 and the portable
/// tile; returns 0 and does nothing at level 1 (AVX2). `b` must be 64-byte aligned (a packed panel).
int vq_gemm_argmin(int level, int64_t kc, const float *a, const float *b, int rows, int cols, const float *xx,
                   const float *cc, int cosine, int64_t code_base, float *best, int64_t *best_index);

/// Skinny products on the vector units at every level: each product rounded, then added, in the same order per
/// element at every level (the order SkinnyKernelTests rebuild in scalar Swift).
/// `c[i, j] = (accumulate ? c[i, j] : start[j]) + Σ_{p<k} a[i, p]·b[p·n + j]` for `i < rows`, `k ≤ 8` (every level; 0
/// for a deeper `k`).
int vq_tiny_depth_rows(int level, int64_t rows, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs,
                       const float *b, const float *start, float *c, int64_t ldc, int accumulate);
/// `acc[i·w + j] += a[i, p]·b[p·brs + j]` for `p < k` in order, `i < m`, `j < w` (every level).
void vq_few_rows(int level, int64_t m, int64_t w, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b,
                 int64_t brs, float *acc);
/// `acc[j·width + i] += a[p·acs + i]·b[p·brs + j·bcs]` for `p < k` in order, `i < width`, `j < n` (every level).
void vq_transposed_a(int level, int64_t width, int64_t n, int64_t k, const float *a, int64_t acs, const float *b,
                     int64_t brs, int64_t bcs, float *acc);
/// `c[i·crs + j·ccs] (+)= GEMM.dot(a + i·ars, bcols + j·k, k)` for `i < rows`, `j < n ≤ 8` (every level).
int vq_skinny_dots(int level, int64_t rows, int64_t n, int64_t k, const float *a, int64_t ars, const float *bcols,
                   float *c, int64_t crs, int64_t ccs, int accumulate);

/// Low-precision formats of the nearest-code screen: BF16 pairs (VDPBF16PS), 8-bit integer quads (VPDPBUSD),
/// 7-bit query rows against 8-bit codes (VPMADDUBSW + VPMADDWD on AVX2, whose 16-bit pair sums 7 bits keep exact;
/// SDOT on AArch64), 8-bit values in 16-bit pairs (PMADDWD: SSE2, baseline x86-64), or 7-bit rows against 7-bit
/// codes (AVX2: two depth steps of VPMADDUBSW summed in 16 bits before one VPMADDWD).
#define VQ_SCREEN_BF16 0
#define VQ_SCREEN_I8 1
#define VQ_SCREEN_I7 2
#define VQ_SCREEN_I16 3
#define VQ_SCREEN_I7X7 4

/// Whether this machine runs a format's tile natively (else only its portable emulation): 7-bit rows at x86 levels
/// ≥ 1 (AVX2, AVX-512BW) and on AArch64 with the dot-product extension (SDOT); 8-bit quads with AVX-512 VNNI; BF16
/// pairs at level 3; 16-bit pairs on every x86-64 (SSE2); 7-bit rows and codes at x86 levels ≥ 1.
int vq_screen_native(int format);

/// Depth steps of a packed row (pairs or quads) and the number of per-row and per-code term planes.
int64_t vq_screen_steps(int format, int64_t d);
int vq_screen_row_planes(int format);
int vq_screen_code_planes(int format);

/// Packs `rows` rows of depth `d` for the screening tiles — `side` 0: query rows (`width` 12), 1: codes (`width` 32)
/// — as `dst[step·width + i]`, zero past the rows, and fills the term planes (`terms + plane·tstride`) from the
/// squared norms `sq`; `ok[i]` = 0 for a row the screen cannot bound (non-finite or out of range). Returns the
/// number of such rows. `native` converts BF16 on the BF16 unit.
int64_t vq_screen_pack(int format, int native, int side, int cosine, const float *x, int64_t ld, int64_t rows,
                       int64_t d, int64_t width, const float *sq, uint32_t *dst, float *terms, int64_t tstride,
                       int32_t *ok);

/// One 12 × 32 screening tile: low-precision dot products of up to 12 packed rows (`a`) with 32 packed codes (`b`,
/// 64-byte aligned), their scores and error bounds, without branches: row i's lower bounds are stored at
/// `lows[i·ldlow + code_base + j]` and its upper bounds folded into its 16 lane-wise minima `minup[16·i …]`.
/// Rows with `count` −1 are skipped. `rt`/`ct` are the rows' and codes' term planes. `native` runs the
/// instructions where `vq_screen_native(format)`, else a portable emulation.
void vq_screen_tile(int format, int native, int64_t steps, const uint32_t *a, const uint32_t *b, int rows, int cols,
                    const float *rt, int64_t rstride, const float *ct, int64_t cstride, int cosine, int64_t code_base,
                    float *lows, int64_t ldlow, float *minup, const int32_t *count);

/// Asks for the cache lines of `bytes` bytes at `p` to be brought into the second-level cache (a hint: no effect on
/// any value; nothing on machines without a prefetch instruction).
void vq_prefetch_l2(const void *p, int64_t bytes);

/// `vq_prefetch_l2` of the float rows (`d` floats each) of every code listed for `rows` rows (count −1: none).
void vq_screen_prefetch_candidates(const float *codes, int64_t d, int rows, const int32_t *count, const int32_t *cand, int cap);

/// After a row group's tiles over all `k` codes: each row's least upper bound, and in code order every code whose
/// lower bound is ≤ it (`cand`, `cap` entries per row, `count` of them; −1 when more, and for rows already at −1).
void vq_screen_collect(int native, int rows, int64_t k, const float *lows, int64_t ldlow, const float *minup,
                       int32_t *count, int32_t *cand, int cap);

/// The exact float scores of the listed codes of `rows` screened rows (rows with `count` −1 are skipped), as the
/// float nearest-code tiles at levels ≥ 1 compute them; each row takes strict improvements in code order into
/// `best`/`best_index` — rows with several listed codes after a second filter (float sums in another order, within
/// a proven bound of the chains'). `pair_*` are scratch of `rows · cap` entries.
void vq_screen_finish(int64_t d, int64_t rows, const float *x, const float *xx, const float *codes, const float *cc,
                      int cosine, const int32_t *count, const int32_t *cand, int cap, float *best, int64_t *best_index,
                      int32_t *pair_row, int32_t *pair_code, float *pair_score);

/// FSQ's grid for `rows` rows of `d` bounded values `t` (in place: the codes): per channel, with
/// `b = t·halfL − offset`, `q = (b + (rint(b) − b)) / hw`; `indices[r] = rint(Σ_j ((q·hw + hw)·basis))` in channel order, or −1 for a
/// row with NaN. Every product and sum rounded on its own, as the Swift formulas.
void vq_fsq_grid(int level, float *t, int64_t rows, int64_t d, const float *halfL, const float *offset,
                 const float *hw, const float *basis, int64_t *indices);

/// Rows of `d` divided by `max(sqrt(Σ x²), eps)` (`dst` may be `src`), the sum of squares in the library's cascade
/// order (eight lanes, then the tail; halves above 256): the same values at every level. `finite` (nullable, one
/// flag per row): cleared for a row whose output holds a NaN or ±∞, left as it is otherwise.
void vq_normalize_rows(int level, const float *src, float *dst, int64_t rows, int64_t d, float eps, _Bool *finite);

/// `out[r]` = Σ x² of row `r` (`d` floats at `x + r·ld`), in the library's cascade order (as `vq_normalize_rows`
/// and `Reduce.contiguousSumOfSquares`): the same values at every level.
void vq_sumsq_rows(int level, const float *x, int64_t rows, int64_t d, int64_t ld, float *out);

/// `out[r]` = Σ_j (a_j − b_j)² over row r (`d` floats at `a + r·lda` and at `b + (index ? index[r] : r)·ldb`) in
/// double: each difference rounded to float and squared exactly; eight lanes over blocks of eight, combined
/// ((0+4)+(2+6))+((1+5)+(3+7)), then the tail (d mod 8, in order) added. The same values at every level.
void vq_squared_differences_rows(int level, const float *a, int64_t lda, const float *b, const int64_t *index, int64_t ldb,
                                 int64_t rows, int64_t d, double *out);

/// `y[o] = (((y[o] + src[0][o]) + src[1][o]) + …)` for `o < width`: the `count` rows added to `y` in order, one IEEE
/// addition per element and row (the same values at every level).
void vq_add_rows(int level, float *y, const float *const *src, int64_t count, int64_t width);

/// `out[i] = a[i·sa] ∘ b[i·sb]` (steps 0 or 1; one of them 1) for op 0 +, 1 −, 2 ×, 3 ÷: one IEEE operation
/// per element, the same values at every level.
void vq_arith(int level, int op, const float *a, int64_t sa, const float *b, int64_t sb, float *out, int64_t n);

/// EMA statistics: `acc[codes[r]·width + j] += (double)x[r·ldx + j]` for `j < width`, over the `count` rows `order`
/// lists, in its order (one double add per row and element: the same values at every level). With each code's
/// valid rows listed in increasing order, every sum adds its rows in order.
void vq_scatter_add_rows(const float *x, int64_t ldx, const int64_t *codes, const int64_t *order, int64_t count,
                                 int64_t width, double *acc);

/// torch's CPU `lerp_` of `a` toward `b` with weight `w`, bit-exactly:
/// `|w| < 0.5 ? fma(w, b - a, a) : fma(w - 1, b - a, b)` (hardware FMA when available, else `fmaf`).
void vq_lerp(float *a, const float *b, float w, int64_t n);

/// Element-wise tanh (Cephes-style, ≤ ~2 ULP), identical results in vector and scalar positions.
void vq_tanh(const float *in, float *out, int64_t n);

/// GELU with the error function, `x·Φ(x)` (erf by Abramowitz & Stegun 7.1.26, absolute error ≤ 1.5e-7 in Φ);
/// NaN stays NaN.
void vq_gelu(int level, const float *in, float *out, int64_t n);

/// The gradient through GELU: `out = g · (Φ(x) + x·φ(x))`, the same Φ as `vq_gelu`.
void vq_gelu_backward(int level, const float *in, const float *g, float *out, int64_t n);

/// Advises the kernel to back a large, untouched buffer with transparent huge pages (Linux; no-op
/// elsewhere and for buffers under 8 MiB).
void vq_advise_hugepages(void *p, int64_t bytes);
int vq_keep_freed_memory(int64_t mmap_bytes, int64_t trim_bytes);
int vq_release_freed_memory(void);

#ifdef __cplusplus
}
#endif

#endif
