/* kgemm: small-k matrix products for conv2's Winograd domain; see kgemm.h.
 *
 * The block kernels hold R x 16 outputs (R <= 6) in 2R vectors of 8 floats:
 * 12 accumulators, 2 vectors of B and a broadcast of A fit the 16 vector
 * registers of AVX2 (AVX-512 has 32). Each step of k loads 2 vectors of B and
 * R scalars of A for 2R fused multiply-adds. The Makefile compiles this file
 * with -ffp-contract=fast so that `acc += a * b` is one FMA where the CPU
 * level has it (the baseline clone multiplies and adds). */
#include "kgemm.h"

#include "dispatch.h"

/* The helpers below pass 32-byte vectors by value; they are always inlined,
 * so the ABI note GCC gives for the baseline clone does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float s_v8 __attribute__((vector_size(32)));
typedef float s_v8u __attribute__((vector_size(32), aligned(4), may_alias));
#define S_LD(p) ((s_v8)(*(const s_v8u *)(p)))
#define S_ST(p, v) (*(s_v8u *)(p) = (v))
#define S_R 6 /* rows per block */

/* C[0..R)[0..16) = A[0..R)[0..k) . B[0..k)[0..16). */
HOT_INLINE void s_block(const int R, int k, const float *A, int lda, const float *B, int ldb,
                        float *C, int ldc)
{
    s_v8 acc[S_R][2];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = (s_v8){0};
    for (int kk = 0; kk < k; kk++) {
        s_v8 b0 = S_LD(B + (long)kk * ldb), b1 = S_LD(B + (long)kk * ldb + 8);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            float a = A[(long)r * lda + kk];
            acc[r][0] += a * b0;
            acc[r][1] += a * b1;
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
        S_ST(C + (long)r * ldc, acc[r][0]);
        S_ST(C + (long)r * ldc + 8, acc[r][1]);
    }
}

HOT_KERNEL
void kgemm_nn(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *C,
              int ldc)
{
    for (int i = 0; i < m; i += S_R) {
        const float *a = A + (long)i * lda;
        float *c = C + (long)i * ldc;
        for (int j = 0; j < n; j += 16) {
            switch (m - i < S_R ? m - i : S_R) {
            case 6: s_block(6, k, a, lda, B + j, ldb, c + j, ldc); break;
            case 5: s_block(5, k, a, lda, B + j, ldb, c + j, ldc); break;
            case 4: s_block(4, k, a, lda, B + j, ldb, c + j, ldc); break;
            case 3: s_block(3, k, a, lda, B + j, ldb, c + j, ldc); break;
            case 2: s_block(2, k, a, lda, B + j, ldb, c + j, ldc); break;
            default: s_block(1, k, a, lda, B + j, ldb, c + j, ldc); break;
            }
        }
    }
}
