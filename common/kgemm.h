/* kgemm: single-threaded float matrix products of the shapes conv2's Winograd
 * domain has (winograd.c), where OpenBLAS spends much of its time packing:
 *   forward       [rows x 32] . [32 x 64]     (rows = tiles x images, ~1600)
 *   input grad    [rows x 64] . [64 x 32]
 * A register-blocked kernel (6 rows x 16 columns of accumulators in AVX2
 * registers, 6 x 32 in AVX-512's, one FMA per product), compiled per CPU
 * level (dispatch.h), reading the operands where they lie: no packing, no
 * allocation. (The weight gradient, [rows x 32]^T . [rows x 64], stays with
 * OpenBLAS: the same kernel transposed was slower there, 76-83 against
 * 102-113 GFLOP/s at 200 rows.)
 *
 * Row-major, leading dimensions as in BLAS. The number of columns n must be a
 * multiple of 16; m and k are free. Each output is one sum in k order, so the
 * results depend only on the inputs and the CPU level. */
#ifndef KGEMM_H
#define KGEMM_H

/* C [m x n] = A [m x k] . B [k x n]  (n % 16 == 0). */
void kgemm_nn(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *C,
              int ldc);

#endif
