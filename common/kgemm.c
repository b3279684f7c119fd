/* kgemm: small-k matrix products for conv2's Winograd domain; see kgemm.h.
 *
 * The block kernels hold R x 2W outputs (R <= 6) in 2R vectors of W floats:
 * 12 accumulators, 2 vectors of B and a broadcast of A. With W = 8 (AVX2)
 * that fits AVX2's 16 vector registers; CPUs with AVX-512 run the W = 16
 * version (32 registers of 16 floats), measured 1.2-1.3x faster here. Each
 * step of k loads 2 vectors of B and R scalars of A for 2R fused
 * multiply-adds. The Makefile compiles this file with -ffp-contract=fast so
 * that `acc += a * b` is one FMA where the CPU has it (the baseline clone
 * multiplies and adds). Both versions sum each output in k order with one
 * FMA per product: they give the same bits. */
#include "kgemm.h"

#include "dispatch.h"

/* The helpers below pass vectors by value; they are always inlined, so the
 * ABI note GCC gives for the baseline clone does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

#define S_R 6 /* rows per block */

/* Defines NAME(R, k, A, lda, B, ldb, C, ldc): C[0..R)[0..2W) =
 * A[0..R)[0..k) . B[0..k)[0..2W), for vectors VEC of W floats (VECU: the
 * unaligned, aliasing variant that memory is read and written through). */
#define S_DEFINE_BLOCK(NAME, VEC, VECU, W)                                                         \
    HOT_INLINE void NAME(const int R, int k, const float *A, int lda, const float *B, int ldb,     \
                         float *C, int ldc)                                                        \
    {                                                                                              \
        VEC acc[S_R][2];                                                                           \
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = (VEC){0};      \
        for (int kk = 0; kk < k; kk++) {                                                           \
            VEC b0 = *(const VECU *)(B + (long)kk * ldb);                                          \
            VEC b1 = *(const VECU *)(B + (long)kk * ldb + W);                                      \
            _Pragma("GCC unroll 6") for (int r = 0; r < R; r++)                                    \
            {                                                                                      \
                float a = A[(long)r * lda + kk];                                                   \
                acc[r][0] += a * b0;                                                               \
                acc[r][1] += a * b1;                                                               \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++)                                        \
        {                                                                                          \
            *(VECU *)(C + (long)r * ldc) = acc[r][0];                                              \
            *(VECU *)(C + (long)r * ldc + W) = acc[r][1];                                          \
        }                                                                                          \
    }

/* The product over all blocks of rows and columns, with BLOCK for R = 1..6. */
#define S_GEMM_LOOPS(BLOCK, W)                                                                     \
    for (int i = 0; i < m; i += S_R) {                                                             \
        const float *a = A + (long)i * lda;                                                        \
        float *c = C + (long)i * ldc;                                                              \
        for (int j = 0; j < n; j += 2 * (W)) {                                                     \
            switch (m - i < S_R ? m - i : S_R) {                                                   \
            case 6: BLOCK(6, k, a, lda, B + j, ldb, c + j, ldc); break;                            \
            case 5: BLOCK(5, k, a, lda, B + j, ldb, c + j, ldc); break;                            \
            case 4: BLOCK(4, k, a, lda, B + j, ldb, c + j, ldc); break;                            \
            case 3: BLOCK(3, k, a, lda, B + j, ldb, c + j, ldc); break;                            \
            case 2: BLOCK(2, k, a, lda, B + j, ldb, c + j, ldc); break;                            \
            default: BLOCK(1, k, a, lda, B + j, ldb, c + j, ldc); break;                           \
            }                                                                                      \
        }                                                                                          \
    }

typedef float s_v8 __attribute__((vector_size(32)));
typedef float s_v8u __attribute__((vector_size(32), aligned(4), may_alias));
S_DEFINE_BLOCK(s_block8, s_v8, s_v8u, 8)

HOT_KERNEL
static void s_nn8(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *C,
                  int ldc)
{
    S_GEMM_LOOPS(s_block8, 8)
}

#if defined(__x86_64__) && defined(__GNUC__)
#define S_HAVE_NN16 1
typedef float s_v16 __attribute__((vector_size(64)));
typedef float s_v16u __attribute__((vector_size(64), aligned(4), may_alias));
S_DEFINE_BLOCK(s_block16, s_v16, s_v16u, 16)

__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"))) static void
s_nn16(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *C, int ldc)
{
    S_GEMM_LOOPS(s_block16, 16)
}
#endif

void kgemm_nn(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *C,
              int ldc)
{
#ifdef S_HAVE_NN16
    static int avx512 = -1; /* the answer does not change: a race writes the same value */
    if (avx512 < 0)
        avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
    if (avx512 && n % 32 == 0) {
        s_nn16(m, n, k, A, lda, B, ldb, C, ldc);
        return;
    }
#endif
    s_nn8(m, n, k, A, lda, B, ldb, C, ldc);
}
