/* winograd: conv2 (32 -> 64 channels, 3x3, 13x13 -> 11x11) with Winograd's
 * minimal filtering algorithm F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms
 * for Convolutional Neural Networks", 2016), forward, input gradient and
 * weight gradient.
 *
 * Only the 10x10 top-left outputs are computed: 2x2 max-pooling with floor
 * drops row and column 10, so they never reach the loss and their gradient is
 * zero. The outputs are cut into m x m tiles (WINO_T = ceil(10/m) per side);
 * each tile reads an (m+2) x (m+2) input tile. In the transformed domain a
 * convolution is, for each of the (m+2)^2 positions of a tile, one GEMM over
 * the 32 input channels, for all tiles of all images at once:
 *   forward        M_p [T*n x 64] = V_p [T*n x 32] . U_p [32 x 64]
 *   weight grad    dU_p [32 x 64] = V_p^T . dM_p
 *   input grad     dV_p [T*n x 32] = dM_p . U_p^T
 * with U = G g G^T (weights), V = B^T d B (input tiles), Y = A^T M A (output
 * tiles), and the adjoints of these transforms going backward. F(2x2,3x3)
 * needs 16 products per 4 outputs instead of 36 (2.25x fewer), F(4x4,3x3) 36
 * per 16 (4x fewer, less on 10x10) with larger transform coefficients and more
 * rounding error. WINO_M picks m at compile time (2, 3, 4 or 5). F(5x5)
 * fits 10x10 exactly (2x2 tiles, 49 products per 25 outputs: 4.6x fewer than
 * direct) and was ~40% faster here, and it passes the PyTorch fixture test,
 * but its larger rounding (~3e-6 vs ~3e-7) makes test_distributed's
 * sync-equals-batch-128 check drift to 3.6e-6 (tolerance 1e-6 x max|w|); the
 * default stays F(2x2) until that is decided (NOTES-issue13.md).
 *
 * Layouts (n images; "lanes" are the innermost, contiguous dimensions that
 * the transforms vectorise over):
 *   p1, dp1  [13][13][n][32]     conv2's input: spatial position, image, channel
 *   a2, da2  [10][10][n][64]     conv2's output without bias, 10x10 only
 *   V        [P][T*T][n][32]     transformed input tiles, P = (m+2)^2
 *   M        [P][T*T][n][64]     transformed output tiles (backward: their gradient)
 *   U, dU    [P][32][64]         transformed weights and their gradient
 *   w, dw    [64][32][3][3]      PyTorch's conv2.weight layout
 * Callers own every buffer; nothing is allocated here. */
#ifndef WINOGRAD_H
#define WINOGRAD_H

#include <stddef.h>

#ifndef WINO_M
#define WINO_M 2
#endif
#define WINO_A (WINO_M + 2)                 /* input tile side */
#define WINO_P (WINO_A * WINO_A)            /* positions in a tile */
#define WINO_T ((10 + WINO_M - 1) / WINO_M) /* tiles per side */
#define WINO_V_FLOATS(n) ((size_t)WINO_P * WINO_T * WINO_T * (n)*32)
#define WINO_M_FLOATS(n) ((size_t)WINO_P * WINO_T * WINO_T * (n)*64)
#define WINO_U_FLOATS ((size_t)WINO_P * 32 * 64)
#define WINO_SCRATCH_FLOATS ((size_t)9 * 32 * 64) /* wino_weights, wino_weight_grad */

/* U and its transpose UT [P][64][32] from w; scratch: WINO_SCRATCH_FLOATS. */
void wino_weights(const float *w, float *U, float *UT, float *scratch);

/* V from p1 (n images). */
void wino_input(const float *p1, int n, float *V);

/* M = V . U, position by position. */
void wino_multiply(const float *U, const float *V, int n, float *M);

/* a2 (10x10 outputs) from M. */
void wino_output(const float *M, int n, float *a2);

/* dM from da2: the adjoint of wino_output. */
void wino_output_grad(const float *da2, int n, float *dM);

/* dU = V^T . dM (first != 0) or dU += V^T . dM, position by position: the
 * weight gradient in the Winograd domain, summed over calls (batches of
 * images). */
void wino_weight_grad_add(const float *V, const float *dM, int n, int first, float *dU);

/* dw (overwritten) from dU: the adjoint of wino_weights; scratch:
 * WINO_SCRATCH_FLOATS. */
void wino_weight_grad(const float *dU, float *scratch, float *dw);

/* dV = dM . U^T, position by position, from UT (wino_weights); dV may be V's
 * memory once wino_weight_grad_add is done with it. */
void wino_input_grad_multiply(const float *UT, const float *dM, int n, float *dV);

/* dp1 (overwritten) from dV: the adjoint of wino_input. */
void wino_input_grad(const float *dV, int n, float *dp1);

#endif
