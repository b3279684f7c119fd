/* winograd: F(m x m, 3 x 3) convolution for conv2; see winograd.h.
 *
 * The transform matrices come from the Cook-Toom construction with the
 * points named below (and infinity), in exact arithmetic (the script that
 * wrote them checked y = A^T [(G g) . (B^T d)] against direct correlation
 * with rationals). Every transform is applied to 16 lanes at once (images x
 * channels are the innermost dimensions of every layout), as a generic
 * two-sided matrix product whose coefficients are compile-time constants:
 * after unrolling, products by 0 vanish and by +-1 become additions. */
#include "winograd.h"

#include <cblas.h>
#include <string.h>

#include "dispatch.h"
#include "kgemm.h"

/* The helpers below pass 64-byte vectors by value; they are always inlined,
 * so the ABI note GCC gives for the baseline clone does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

#if WINO_M == 2 /* points 0, 1, -1 and infinity */
static const float s_AT[WINO_M * WINO_A] = {1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.0f, -1.0f, 1.0f};
static const float s_A[WINO_A * WINO_M] = {1.0f, 0.0f, 1.0f, 1.0f, 1.0f, -1.0f, 0.0f, 1.0f};
static const float s_G[WINO_A * 3] = {-1.0f, 0.0f,  0.0f, 0.5f, 0.5f, 0.5f,
                                      0.5f,  -0.5f, 0.5f, 0.0f, 0.0f, 1.0f};
static const float s_GT[3 * WINO_A] = {-1.0f, 0.5f, 0.5f, 0.0f, 0.0f, 0.5f,
                                       -0.5f, 0.0f, 0.0f, 0.5f, 0.5f, 1.0f};
static const float s_BT[WINO_A * WINO_A] = {-1.0f, 0.0f,  1.0f, 0.0f, 0.0f, 1.0f,  1.0f, 0.0f,
                                            0.0f,  -1.0f, 1.0f, 0.0f, 0.0f, -1.0f, 0.0f, 1.0f};
static const float s_B[WINO_A * WINO_A] = {-1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f, -1.0f, -1.0f,
                                           1.0f,  1.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f,  1.0f};
#elif WINO_M == 3 /* points 0, 1, -1, 2 and infinity */
static const float s_AT[WINO_M * WINO_A] = {1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 1.0f, -1.0f,
                                            2.0f, 0.0f, 0.0f, 1.0f, 1.0f, 4.0f, 1.0f};
static const float s_A[WINO_A * WINO_M] = {1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f, 1.0f, -1.0f,
                                           1.0f, 1.0f, 2.0f, 4.0f, 0.0f, 0.0f, 1.0f};
static const float s_G[WINO_A * 3] = {0.5f,          0.0f,         0.0f,          -0.5f,
                                      -0.5f,         -0.5f,        -0.166666667f, 0.166666667f,
                                      -0.166666667f, 0.166666667f, 0.333333333f,  0.666666667f,
                                      0.0f,          0.0f,         1.0f};
static const float s_GT[3 * WINO_A] = {0.5f, -0.5f, -0.166666667f, 0.166666667f, 0.0f,
                                       0.0f, -0.5f, 0.166666667f,  0.333333333f, 0.0f,
                                       0.0f, -0.5f, -0.166666667f, 0.666666667f, 1.0f};
static const float s_BT[WINO_A * WINO_A] = {
    2.0f, -1.0f, -2.0f, 1.0f,  0.0f, 0.0f, -2.0f, -1.0f, 1.0f, 0.0f,  0.0f,  2.0f, -3.0f,
    1.0f, 0.0f,  0.0f,  -1.0f, 0.0f, 1.0f, 0.0f,  0.0f,  2.0f, -1.0f, -2.0f, 1.0f};
static const float s_B[WINO_A * WINO_A] = {
    2.0f, 0.0f,  0.0f, 0.0f, 0.0f, -1.0f, -2.0f, 2.0f, -1.0f, 2.0f, -2.0f, -1.0f, -3.0f,
    0.0f, -1.0f, 1.0f, 1.0f, 1.0f, 1.0f,  -2.0f, 0.0f, 0.0f,  0.0f, 0.0f,  1.0f};
#elif WINO_M == 4 /* points 0, 1, -1, 2, -2 and infinity */
static const float s_AT[WINO_M * WINO_A] = {1.0f,  1.0f, 1.0f,  1.0f, 1.0f,  0.0f, 0.0f,  1.0f,
                                            -1.0f, 2.0f, -2.0f, 0.0f, 0.0f,  1.0f, 1.0f,  4.0f,
                                            4.0f,  0.0f, 0.0f,  1.0f, -1.0f, 8.0f, -8.0f, 1.0f};
static const float s_A[WINO_A * WINO_M] = {1.0f, 0.0f,  0.0f, 0.0f,  1.0f, 1.0f, 1.0f, 1.0f,
                                           1.0f, -1.0f, 1.0f, -1.0f, 1.0f, 2.0f, 4.0f, 8.0f,
                                           1.0f, -2.0f, 4.0f, -8.0f, 0.0f, 0.0f, 0.0f, 1.0f};
static const float s_G[WINO_A * 3] = {
    0.25f,         0.0f,           0.0f,          -0.166666667f, -0.166666667f, -0.166666667f,
    -0.166666667f, 0.166666667f,   -0.166666667f, 0.0416666667f, 0.0833333333f, 0.166666667f,
    0.0416666667f, -0.0833333333f, 0.166666667f,  0.0f,          0.0f,          1.0f};
static const float s_GT[3 * WINO_A] = {
    0.25f, -0.166666667f, -0.166666667f, 0.0416666667f, 0.0416666667f,  0.0f,
    0.0f,  -0.166666667f, 0.166666667f,  0.0833333333f, -0.0833333333f, 0.0f,
    0.0f,  -0.166666667f, -0.166666667f, 0.166666667f,  0.166666667f,   1.0f};
static const float s_BT[WINO_A * WINO_A] = {
    4.0f, 0.0f, -5.0f, 0.0f,  1.0f, 0.0f, 0.0f, -4.0f, -4.0f, 1.0f,  1.0f, 0.0f,
    0.0f, 4.0f, -4.0f, -1.0f, 1.0f, 0.0f, 0.0f, -2.0f, -1.0f, 2.0f,  1.0f, 0.0f,
    0.0f, 2.0f, -1.0f, -2.0f, 1.0f, 0.0f, 0.0f, 4.0f,  0.0f,  -5.0f, 0.0f, 1.0f};
static const float s_B[WINO_A * WINO_A] = {
    4.0f,  0.0f,  0.0f,  0.0f,  0.0f,  0.0f, 0.0f, -4.0f, 4.0f,  -2.0f, 2.0f,  4.0f,
    -5.0f, -4.0f, -4.0f, -1.0f, -1.0f, 0.0f, 0.0f, 1.0f,  -1.0f, 2.0f,  -2.0f, -5.0f,
    1.0f,  1.0f,  1.0f,  1.0f,  1.0f,  0.0f, 0.0f, 0.0f,  0.0f,  0.0f,  0.0f,  1.0f};
#elif WINO_M == 5 /* points 0, 1, -1, 2, -2, 1/2 and infinity */
static const float s_AT[WINO_M * WINO_A] = {
    1.0f, 1.0f,  1.0f,   1.0f, 1.0f, 1.0f, 0.0f, 0.0f,  1.0f,  -1.0f,   2.0f, -2.0f,
    0.5f, 0.0f,  0.0f,   1.0f, 1.0f, 4.0f, 4.0f, 0.25f, 0.0f,  0.0f,    1.0f, -1.0f,
    8.0f, -8.0f, 0.125f, 0.0f, 0.0f, 1.0f, 1.0f, 16.0f, 16.0f, 0.0625f, 1.0f};
static const float s_A[WINO_A * WINO_M] = {
    1.0f,  0.0f,  0.0f, 0.0f,  0.0f,   1.0f,    1.0f, 1.0f,  1.0f, 1.0f,  1.0f, -1.0f,
    1.0f,  -1.0f, 1.0f, 1.0f,  2.0f,   4.0f,    8.0f, 16.0f, 1.0f, -2.0f, 4.0f, -8.0f,
    16.0f, 1.0f,  0.5f, 0.25f, 0.125f, 0.0625f, 0.0f, 0.0f,  0.0f, 0.0f,  1.0f};
static const float s_G[WINO_A * 3] = {
    -0.5f,         0.0f,         0.0f,           -0.333333333f, -0.333333333f,
    -0.333333333f, 0.111111111f, -0.111111111f,  0.111111111f,  0.0277777778f,
    0.0555555556f, 0.111111111f, -0.0166666667f, 0.0333333333f, -0.0666666667f,
    0.711111111f,  0.355555556f, 0.177777778f,   0.0f,          0.0f,
    1.0f};
static const float s_GT[3 * WINO_A] = {
    -0.5f, -0.333333333f, 0.111111111f,  0.0277777778f, -0.0166666667f, 0.711111111f, 0.0f,
    0.0f,  -0.333333333f, -0.111111111f, 0.0555555556f, 0.0333333333f,  0.355555556f, 0.0f,
    0.0f,  -0.333333333f, 0.111111111f,  0.111111111f,  -0.0666666667f, 0.177777778f, 1.0f};
static const float s_BT[WINO_A * WINO_A] = {
    -2.0f, 4.0f, 2.5f,  -5.0f, -0.5f, 1.0f,  0.0f,  0.0f,  2.0f,  -2.0f, -4.5f, 0.5f,  1.0f,
    0.0f,  0.0f, -2.0f, 6.0f,  -3.5f, -1.5f, 1.0f,  0.0f,  0.0f,  1.0f,  -1.5f, -2.0f, 1.5f,
    1.0f,  0.0f, 0.0f,  -1.0f, 2.5f,  0.0f,  -2.5f, 1.0f,  0.0f,  0.0f,  4.0f,  0.0f,  -5.0f,
    0.0f,  1.0f, 0.0f,  0.0f,  -2.0f, 4.0f,  2.5f,  -5.0f, -0.5f, 1.0f};
static const float s_B[WINO_A * WINO_A] = {
    -2.0f, 0.0f, 0.0f,  0.0f, 0.0f,  0.0f, 0.0f,  4.0f, 2.0f,  -2.0f, 1.0f,  -1.0f, 4.0f,
    -2.0f, 2.5f, -2.0f, 6.0f, -1.5f, 2.5f, 0.0f,  4.0f, -5.0f, -4.5f, -3.5f, -2.0f, 0.0f,
    -5.0f, 2.5f, -0.5f, 0.5f, -1.5f, 1.5f, -2.5f, 0.0f, -5.0f, 1.0f,  1.0f,  1.0f,  1.0f,
    1.0f,  1.0f, -0.5f, 0.0f, 0.0f,  0.0f, 0.0f,  0.0f, 0.0f,  1.0f};
#else
#error "WINO_M must be 2, 3, 4 or 5"
#endif

/* 16 floats; the unaligned, aliasing variant is how memory is read/written. */
typedef float s_vec __attribute__((vector_size(64)));
typedef float s_uvec __attribute__((vector_size(64), aligned(4), may_alias));
#define S_LANES 16
#define S_LD(p) (*(const s_uvec *)(p))
#define S_ST(p, v) (*(s_uvec *)(p) = (v))

/* acc (+)= c * x for a constant c; `first` (a constant after unrolling)
 * says whether acc holds anything yet. */
HOT_INLINE s_vec s_madd(s_vec acc, int first, float c, s_vec x)
{
    if (c == 1.0f)
        return first ? x : acc + x;
    if (c == -1.0f)
        return first ? -x : acc - x;
    return first ? c * x : acc + c * x;
}

/* out[r][s] = sum_{k,l} L[r][k] in[k][l] L[s][l], L an R x C constant table,
 * in C x C, out R x R (row-major, vectors of 16 lanes). */
HOT_INLINE void s_transform(const float *L, const int R, const int C, const s_vec *in, s_vec *out)
{
    s_vec tmp[WINO_A * WINO_A]; /* tmp[k][s] = sum_l in[k][l] L[s][l], C x R */
#pragma GCC unroll 8
    for (int k = 0; k < C; k++)
#pragma GCC unroll 8
        for (int s = 0; s < R; s++) {
            s_vec acc = {0};
            int first = 1;
#pragma GCC unroll 8
            for (int l = 0; l < C; l++)
                if (L[s * C + l] != 0.0f) {
                    acc = s_madd(acc, first, L[s * C + l], in[k * C + l]);
                    first = 0;
                }
            tmp[k * R + s] = acc;
        }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int s = 0; s < R; s++) {
            s_vec acc = {0};
            int first = 1;
#pragma GCC unroll 8
            for (int k = 0; k < C; k++)
                if (L[r * C + k] != 0.0f) {
                    acc = s_madd(acc, first, L[r * C + k], tmp[k * R + s]);
                    first = 0;
                }
            out[r * R + s] = acc;
        }
}

HOT_KERNEL
void wino_weights(const float *w, float *U, float *UT, float *scratch)
{
    /* scratch[ky*3+kx][c][o] = w[o][c][ky][kx]: lanes (c, o). Written in
     * order, read across: the 64 rows of w that one c reads stay in the
     * first-level cache for its 9 k. (Looping o, c, k, the writes spread over
     * 72 KB and missed that cache: the whole function took 102 us, now ~30,
     * and every thread runs it every step.) */
    for (int c = 0; c < 32; c++)
        for (int k = 0; k < 9; k++)
            for (int o = 0; o < 64; o++)
                scratch[(size_t)k * 2048 + c * 64 + o] = w[(o * 32 + c) * 9 + k];
    for (int l = 0; l < 2048; l += S_LANES) {
        s_vec g[9], u[WINO_P];
        for (int k = 0; k < 9; k++)
            g[k] = S_LD(scratch + (size_t)k * 2048 + l);
        s_transform(s_G, WINO_A, 3, g, u);
        for (int p = 0; p < WINO_P; p++)
            S_ST(U + (size_t)p * 2048 + l, u[p]);
    }
    /* UT [P][64][32] = U_p^T, so that the input gradient's kernel reads rows */
    for (int p = 0; p < WINO_P; p++)
        for (int c = 0; c < 32; c++)
            for (int o = 0; o < 64; o++)
                UT[(size_t)p * 2048 + o * 32 + c] = U[(size_t)p * 2048 + c * 64 + o];
}

HOT_KERNEL
void wino_input(const float *p1, int n, float *V)
{
    const size_t L = (size_t)n * 32, TT = WINO_T * WINO_T;
    for (int ty = 0; ty < WINO_T; ty++)
        for (int tx = 0; tx < WINO_T; tx++) {
            const float *src[WINO_P];
            for (int k = 0; k < WINO_A; k++)
                for (int q = 0; q < WINO_A; q++) {
                    int y = WINO_M * ty + k, x = WINO_M * tx + q;
                    src[k * WINO_A + q] = y < 13 && x < 13 ? p1 + (size_t)(y * 13 + x) * L : NULL;
                }
            float *dst = V + (size_t)(ty * WINO_T + tx) * L;
            for (size_t l = 0; l < L; l += S_LANES) {
                s_vec d[WINO_P], v[WINO_P];
                for (int p = 0; p < WINO_P; p++)
                    d[p] = src[p] ? (s_vec)S_LD(src[p] + l) : (s_vec){0};
                s_transform(s_BT, WINO_A, WINO_A, d, v);
                for (int p = 0; p < WINO_P; p++)
                    S_ST(dst + (size_t)p * TT * L + l, v[p]);
            }
        }
}

void wino_multiply(const float *U, const float *V, int n, float *M)
{
    const int rows = WINO_T * WINO_T * n;
    for (int p = 0; p < WINO_P; p++)
        kgemm_nn(rows, 64, 32, V + (size_t)p * rows * 32, 32, U + (size_t)p * 2048, 64,
                 M + (size_t)p * rows * 64, 64);
}

HOT_KERNEL
void wino_output(const float *M, int n, float *a2)
{
    const size_t L = (size_t)n * 64, TT = WINO_T * WINO_T;
    for (int ty = 0; ty < WINO_T; ty++)
        for (int tx = 0; tx < WINO_T; tx++) {
            float *dst[WINO_M * WINO_M];
            for (int k = 0; k < WINO_M; k++)
                for (int q = 0; q < WINO_M; q++) {
                    int y = WINO_M * ty + k, x = WINO_M * tx + q;
                    dst[k * WINO_M + q] = y < 10 && x < 10 ? a2 + (size_t)(y * 10 + x) * L : NULL;
                }
            const float *src = M + (size_t)(ty * WINO_T + tx) * L;
            for (size_t l = 0; l < L; l += S_LANES) {
                s_vec m[WINO_P], y[WINO_M * WINO_M];
                for (int p = 0; p < WINO_P; p++)
                    m[p] = S_LD(src + (size_t)p * TT * L + l);
                s_transform(s_AT, WINO_M, WINO_A, m, y);
                for (int q = 0; q < WINO_M * WINO_M; q++)
                    if (dst[q])
                        S_ST(dst[q] + l, y[q]);
            }
        }
}

HOT_KERNEL
void wino_output_grad(const float *da2, int n, float *dM)
{
    const size_t L = (size_t)n * 64, TT = WINO_T * WINO_T;
    for (int ty = 0; ty < WINO_T; ty++)
        for (int tx = 0; tx < WINO_T; tx++) {
            const float *src[WINO_M * WINO_M];
            for (int k = 0; k < WINO_M; k++)
                for (int q = 0; q < WINO_M; q++) {
                    int y = WINO_M * ty + k, x = WINO_M * tx + q;
                    src[k * WINO_M + q] = y < 10 && x < 10 ? da2 + (size_t)(y * 10 + x) * L : NULL;
                }
            float *dst = dM + (size_t)(ty * WINO_T + tx) * L;
            for (size_t l = 0; l < L; l += S_LANES) {
                s_vec dy[WINO_M * WINO_M], m[WINO_P];
                for (int q = 0; q < WINO_M * WINO_M; q++)
                    dy[q] = src[q] ? (s_vec)S_LD(src[q] + l) : (s_vec){0};
                s_transform(s_A, WINO_A, WINO_M, dy, m);
                for (int p = 0; p < WINO_P; p++)
                    S_ST(dst + (size_t)p * TT * L + l, m[p]);
            }
        }
}

void wino_weight_grad_add(const float *V, const float *dM, int n, int first, float *dU)
{
    const int rows = WINO_T * WINO_T * n;
    for (int p = 0; p < WINO_P; p++)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 32, 64, rows, 1.0f,
                    V + (size_t)p * rows * 32, 32, dM + (size_t)p * rows * 64, 64,
                    first ? 0.0f : 1.0f, dU + (size_t)p * 2048, 64);
}

HOT_KERNEL
void wino_weight_grad(const float *dU, float *scratch, float *dw)
{
    /* dg = G^T dU G, lanes (c, o), into scratch[ky*3+kx][c][o] */
    for (int l = 0; l < 2048; l += S_LANES) {
        s_vec u[WINO_P], g[9];
        for (int p = 0; p < WINO_P; p++)
            u[p] = S_LD(dU + (size_t)p * 2048 + l);
        s_transform(s_GT, 3, WINO_A, u, g);
        for (int k = 0; k < 9; k++)
            S_ST(scratch + (size_t)k * 2048 + l, g[k]);
    }
    for (int o = 0; o < 64; o++)
        for (int c = 0; c < 32; c++)
            for (int k = 0; k < 9; k++)
                dw[(o * 32 + c) * 9 + k] = scratch[(size_t)k * 2048 + c * 64 + o];
}

void wino_input_grad_multiply(const float *UT, const float *dM, int n, float *dV)
{
    const int rows = WINO_T * WINO_T * n;
    for (int p = 0; p < WINO_P; p++)
        kgemm_nn(rows, 32, 64, dM + (size_t)p * rows * 64, 64, UT + (size_t)p * 2048, 32,
                 dV + (size_t)p * rows * 32, 32);
}

HOT_KERNEL
void wino_input_grad(const float *dV, int n, float *dp1)
{
    const size_t L = (size_t)n * 32, TT = WINO_T * WINO_T;
    memset(dp1, 0, 169 * L * sizeof(float));
    /* Tiles overlap by 2 rows and columns: each adds its share, in tile order. */
    for (int ty = 0; ty < WINO_T; ty++)
        for (int tx = 0; tx < WINO_T; tx++) {
            float *dst[WINO_P];
            for (int k = 0; k < WINO_A; k++)
                for (int q = 0; q < WINO_A; q++) {
                    int y = WINO_M * ty + k, x = WINO_M * tx + q;
                    dst[k * WINO_A + q] = y < 13 && x < 13 ? dp1 + (size_t)(y * 13 + x) * L : NULL;
                }
            const float *src = dV + (size_t)(ty * WINO_T + tx) * L;
            for (size_t l = 0; l < L; l += S_LANES) {
                s_vec v[WINO_P], d[WINO_P];
                for (int p = 0; p < WINO_P; p++)
                    v[p] = S_LD(src + (size_t)p * TT * L + l);
                s_transform(s_B, WINO_A, WINO_A, v, d);
                for (int p = 0; p < WINO_P; p++)
                    if (dst[p])
                        S_ST(dst[p] + l, S_LD(dst[p] + l) + d[p]);
            }
        }
}
