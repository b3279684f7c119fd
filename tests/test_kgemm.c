/* test_kgemm: the small-k matrix product (common/kgemm.c) against a plain
 * triple loop in double, for every row count of a partial block (1..6 rows
 * left over), the column counts conv2 uses, padded leading dimensions, and
 * k = 0. Each output must be within a few float roundings of the exact sum.
 * On CPUs with AVX-512, n = 32 and 64 run the 16-float version and n = 16 and
 * 48 the 8-float one; both must give the same bits. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "kgemm.h"
#include "rng.h"

/* Checks kgemm_nn on one shape; lda, ldb, ldc are padded by 3, 16 and 5. */
static void s_check(rng_t *r, int m, int n, int k)
{
    int lda = k + 3, ldb = n + 16, ldc = n + 5;
    float *A = malloc(((size_t)m * lda + 1) * sizeof(float));
    float *B = malloc(((size_t)k * ldb + 1) * sizeof(float));
    float *C = malloc((size_t)m * ldc * sizeof(float));
    assert_true(A && B && C);
    for (int i = 0; i < m * lda; i++)
        A[i] = rng_uniform(r, -1.0f, 1.0f);
    for (int i = 0; i < k * ldb; i++)
        B[i] = rng_uniform(r, -1.0f, 1.0f);
    for (int i = 0; i < m * ldc; i++)
        C[i] = NAN; /* every output must be written */
    kgemm_nn(m, n, k, A, lda, B, ldb, C, ldc);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < ldc; j++) {
            if (j >= n) { /* the padding stays untouched */
                assert_true(isnan(C[i * ldc + j]));
                continue;
            }
            double ref = 0.0, mag = 0.0;
            for (int q = 0; q < k; q++) {
                ref += (double)A[i * lda + q] * B[q * ldb + j];
                mag += fabs((double)A[i * lda + q] * B[q * ldb + j]);
            }
            double err = fabs(C[i * ldc + j] - ref), tol = 1e-6 * (mag + 1e-30) * (k + 1);
            if (!(err <= tol)) {
                printf("m=%d n=%d k=%d C[%d][%d] = %.9g, exact %.9g (error %.3g > %.3g)\n", m, n, k,
                       i, j, C[i * ldc + j], ref, err, tol);
                fail();
            }
        }
    free(A);
    free(B);
    free(C);
}

static void test_kgemm_matches_exact(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 7);
    for (int m = 1; m <= 13; m++)
        for (int n = 16; n <= 64; n += 16) {
            s_check(&r, m, n, 32);
            s_check(&r, m, n, 64);
            s_check(&r, m, n, 1);
        }
    s_check(&r, 1600, 64, 32); /* conv2's forward at 64 images */
    s_check(&r, 800, 32, 64);  /* its input gradient at 32 */
    s_check(&r, 5, 16, 0);     /* k = 0: zeros */
}

/* 64 columns at once (the AVX-512 version where the CPU has it) and 16 at a
 * time (the AVX2 version): the same bits. */
static void test_kgemm_versions_agree(void **state)
{
    (void)state;
    enum { M = 37, K = 32, N = 64 };
    static float A[M * K], B[K * N], C[M * N], C16[M * N];
    rng_t r;
    rng_seed(&r, 8);
    for (int i = 0; i < M * K; i++)
        A[i] = rng_uniform(&r, -1.0f, 1.0f);
    for (int i = 0; i < K * N; i++)
        B[i] = rng_uniform(&r, -1.0f, 1.0f);
    kgemm_nn(M, N, K, A, K, B, N, C, N);
    for (int j = 0; j < N; j += 16)
        kgemm_nn(M, 16, K, A, K, B + j, N, C16 + j, N);
    for (int i = 0; i < M * N; i++)
        if (C[i] != C16[i]) {
            printf("C[%d]: %.9g with 64 columns, %.9g 16 at a time\n", i, C[i], C16[i]);
            fail();
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_kgemm_matches_exact),
                                       cmocka_unit_test(test_kgemm_versions_agree)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
