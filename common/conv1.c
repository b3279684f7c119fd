/* conv1: SimpleConvNet's first layer (1 -> 32 channels, 3x3) fused with its
 * bias, ReLU and 2x2 max-pool, forward and backward; see conv1.h.
 *
 * The Makefile compiles this file with -ffp-contract=fast: `acc += w * v` is
 * one FMA where the CPU level has it. In the forward pass that changes no
 * bit: the product of two floats is exact in double, so rounding it first
 * (multiply, then add) gives what one rounding (FMA) gives. The backward
 * pass's float sums do round differently with FMA (as OpenBLAS's kernels
 * differ between CPUs): the same on one machine, run after run. */
#include "conv1.h"

#include <stddef.h>

#include "dispatch.h"

/* The helpers below pass 32-byte vectors by value; they are always
 * inlined, so the ABI note GCC gives for the baseline clone does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef double s_v8d __attribute__((vector_size(64)));
typedef float s_v8f __attribute__((vector_size(32)));
typedef int s_v8i __attribute__((vector_size(32)));
typedef uint8_t s_v8b __attribute__((vector_size(8)));
typedef float s_v8fu __attribute__((vector_size(32), aligned(4), may_alias));
typedef uint8_t s_v8bu __attribute__((vector_size(8), aligned(1), may_alias));
#define S_LD8(p) ((s_v8f)(*(const s_v8fu *)(p)))
#define S_ST8(p, v) (*(s_v8fu *)(p) = (v))

/* Lane-wise c ? a : b for a comparison mask c. */
HOT_INLINE s_v8f s_sel(s_v8i c, s_v8f a, s_v8f b)
{
    return (s_v8f)(((s_v8i)a & c) | ((s_v8i)b & ~c));
}

HOT_KERNEL
void conv1_pool(const float *x, const float *w1, const float *bias, uint8_t *win1, float *p1, int n)
{
    s_v8d wt[9][4];
    for (int c = 0; c < 32; c++)
        for (int k = 0; k < 9; k++)
            wt[k][c / 8][c % 8] = w1[c * 9 + k];
    s_v8f bv[4];
    for (int j = 0; j < 4; j++)
        bv[j] = S_LD8(bias + 8 * j);
    for (int b = 0; b < n; b++) {
        const float *img = x + (size_t)b * 784;
        for (int pos = 0; pos < 169; pos++) {
            int py = pos / 13, px = pos % 13;
            s_v8f m[4] = {{0}};
            s_v8i win[4] = {{0}};
            for (int q = 0; q < 4; q++) { /* the window's 4 outputs, in scan order */
                const float *src = img + (2 * py + (q >> 1)) * 28 + 2 * px + (q & 1);
                s_v8d acc[4] = {{0}};
                for (int k = 0; k < 9; k++) {
                    double v = src[(k / 3) * 28 + k % 3];
                    for (int j = 0; j < 4; j++)
                        acc[j] += wt[k][j] * v;
                }
                for (int j = 0; j < 4; j++) {
                    s_v8f a = __builtin_convertvector(acc[j], s_v8f);
                    s_v8i gt = a > m[j];
                    m[j] = q == 0 ? a : s_sel(gt, a, m[j]);
                    win[j] = q == 0 ? win[j] : (win[j] & ~gt) | (gt & q);
                }
            }
            float *o = p1 + ((size_t)pos * n + b) * 32;
            uint8_t *wb = win1 + ((size_t)b * 169 + pos) * 32;
            for (int j = 0; j < 4; j++) {
                s_v8f v = m[j] + bv[j];
                s_v8i pass = v > 0.0f;
                S_ST8(o + 8 * j, s_sel(pass, v, (s_v8f){0}));
                win[j] = (win[j] & pass) | (CONV1_BLOCKED & ~pass);
                *(s_v8bu *)(wb + 8 * j) = __builtin_convertvector(win[j], s_v8b);
            }
        }
    }
}

/* Fused the same way as forward: each window's gradient goes straight into
 * the weight gradient (dw1 += g * input patch), without writing the conv
 * output's gradient anywhere. Each lane adds its terms in image, window, tap
 * order; the windows' losers add g * 0, which changes no sum. */
HOT_KERNEL
void conv1_pool_backward(const float *x, const float *dp1, const uint8_t *win1, int first,
                         float *dw1, float *db1, int n)
{
    s_v8f dwt[9][4] = {{{0}}}, db[4] = {{0}};
    for (int c = 0; c < 32 && !first; c++) { /* go on with the earlier images' sums */
        db[c / 8][c % 8] = db1[c];
        for (int k = 0; k < 9; k++)
            dwt[k][c / 8][c % 8] = dw1[c * 9 + k];
    }
    for (int b = 0; b < n; b++) {
        const float *img = x + (size_t)b * 784;
        for (int pos = 0; pos < 169; pos++) {
            int py = pos / 13, px = pos % 13;
            const float *d = dp1 + ((size_t)pos * n + b) * 32;
            const uint8_t *wb = win1 + ((size_t)b * 169 + pos) * 32;
            s_v8i win[4];
            s_v8f g[4];
            for (int j = 0; j < 4; j++) {
                win[j] = __builtin_convertvector(*(const s_v8bu *)(wb + 8 * j), s_v8i);
                g[j] = s_sel(win[j] != CONV1_BLOCKED, S_LD8(d + 8 * j), (s_v8f){0});
                db[j] += g[j];
            }
            for (int q = 0; q < 4; q++) {
                const float *src = img + (2 * py + (q >> 1)) * 28 + 2 * px + (q & 1);
                s_v8f gq[4];
                for (int j = 0; j < 4; j++)
                    gq[j] = s_sel(win[j] == q, g[j], (s_v8f){0});
                for (int k = 0; k < 9; k++) {
                    float sv = src[(k / 3) * 28 + k % 3];
                    for (int j = 0; j < 4; j++)
                        dwt[k][j] += gq[j] * sv;
                }
            }
        }
    }
    for (int c = 0; c < 32; c++) {
        db1[c] = db[c / 8][c % 8];
        for (int k = 0; k < 9; k++)
            dw1[c * 9 + k] = dwt[k][c / 8][c % 8];
    }
}
