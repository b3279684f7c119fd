/* test_winograd: conv2's Winograd path (common/winograd.c) against a direct
 * convolution in double precision, on random inputs: forward outputs, weight
 * gradient and input gradient, each as max |error| / max |reference|. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "rng.h"
#include "winograd.h"

#define N 3 /* images */

/* What the fixture test needs the path to keep: PyTorch's logits to 1e-5. */
#define TOLERANCE 1e-5

static double s_rel(const char *what, const float *a, const double *ref, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - ref[i]));
        den = fmax(den, fabs(ref[i]));
    }
    printf("  F(%dx%d,3x3) %-12s max rel err %.2e\n", WINO_M, WINO_M, what, num / den);
    return num / den;
}

static void test_winograd_matches_direct(void **state)
{
    (void)state;
    float *p1 = malloc(169 * N * 32 * sizeof(float)), *w = malloc(64 * 288 * sizeof(float));
    float *V = malloc(WINO_V_FLOATS(N) * sizeof(float)),
          *M = malloc(WINO_M_FLOATS(N) * sizeof(float));
    float *U = malloc(WINO_U_FLOATS * sizeof(float)), *dU = malloc(WINO_U_FLOATS * sizeof(float));
    float *UT = malloc(WINO_U_FLOATS * sizeof(float));
    float *scratch = malloc(WINO_SCRATCH_FLOATS * sizeof(float));
    float *a2 = malloc(100 * N * 64 * sizeof(float)), *da2 = malloc(100 * N * 64 * sizeof(float));
    float *dw = malloc(64 * 288 * sizeof(float)), *dp1 = malloc(169 * N * 32 * sizeof(float));
    double *ra2 = calloc(100 * N * 64, sizeof(double)), *rdw = calloc(64 * 288, sizeof(double)),
           *rdp1 = calloc(169 * N * 32, sizeof(double));
    assert_true(p1 && w && V && M && U && dU && UT && scratch && a2 && da2 && dw && dp1 && ra2 &&
                rdw && rdp1);
    rng_t r;
    rng_seed(&r, 13);
    /* Activations as after ReLU (>= 0), weights as PyTorch's init draws them. */
    for (size_t i = 0; i < 169 * N * 32; i++)
        p1[i] = rng_uniform(&r, 0.0f, 3.0f);
    for (size_t i = 0; i < 64 * 288; i++)
        w[i] = rng_uniform(&r, -0.059f, 0.059f);
    for (size_t i = 0; i < 100 * N * 64; i++)
        da2[i] = rng_uniform(&r, -1.0f, 1.0f);

    /* Direct, in double. p1 [13][13][N][32], a2 [10][10][N][64], w [64][32][3][3]. */
    for (int y = 0; y < 10; y++)
        for (int x = 0; x < 10; x++)
            for (int b = 0; b < N; b++)
                for (int o = 0; o < 64; o++) {
                    double s = 0.0, g = da2[((y * 10 + x) * N + b) * 64 + o];
                    for (int c = 0; c < 32; c++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                size_t pi = ((size_t)((y + ky) * 13 + x + kx) * N + b) * 32 + c;
                                size_t wi = (size_t)(o * 32 + c) * 9 + ky * 3 + kx;
                                s += (double)w[wi] * p1[pi];
                                rdw[wi] += g * p1[pi];
                                rdp1[pi] += g * w[wi];
                            }
                    ra2[((y * 10 + x) * N + b) * 64 + o] = s;
                }

    /* For scale: the same sums in float, as im2col + GEMM rounds them. */
    {
        float *fa2 = malloc(100 * N * 64 * sizeof(float));
        assert_non_null(fa2);
        for (int y = 0; y < 10; y++)
            for (int x = 0; x < 10; x++)
                for (int b = 0; b < N; b++)
                    for (int o = 0; o < 64; o++) {
                        float s = 0.0f;
                        for (int c = 0; c < 32; c++)
                            for (int k = 0; k < 9; k++)
                                s += w[(o * 32 + c) * 9 + k] *
                                     p1[((size_t)((y + k / 3) * 13 + x + k % 3) * N + b) * 32 + c];
                        fa2[((y * 10 + x) * N + b) * 64 + o] = s;
                    }
        printf("  (direct sums in float, for scale:)\n");
        s_rel("forward", fa2, ra2, 100 * N * 64);
        free(fa2);
    }
    wino_weights(w, U, UT, scratch);
    wino_input(p1, N, V);
    wino_multiply(U, V, N, M);
    wino_output(M, N, a2);
    assert_true(s_rel("forward", a2, ra2, 100 * N * 64) < TOLERANCE);
    wino_output_grad(da2, N, M);
    wino_weight_grad_add(V, M, N, 1, dU);
    wino_weight_grad(dU, scratch, dw);
    assert_true(s_rel("weight grad", dw, rdw, 64 * 288) < TOLERANCE);
    wino_input_grad_multiply(UT, M, N, V);
    wino_input_grad(V, N, dp1);
    assert_true(s_rel("input grad", dp1, rdp1, 169 * N * 32) < TOLERANCE);

    free(p1), free(w), free(V), free(M), free(U), free(dU), free(UT), free(scratch), free(a2);
    free(da2);
    free(dw), free(dp1), free(ra2), free(rdw), free(rdp1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_winograd_matches_direct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
