/* conv1: SimpleConvNet's first layer (1 -> 32 channels, 3x3, K = 9: too small
 * for a GEMM to shine) as a direct kernel fused with its bias, ReLU and 2x2
 * max-pool, forward and backward, for model.c.
 *
 * Forward: for each pooling window, the max of its 4 conv outputs + bias,
 * ReLU'd, goes to p1 [13][13][n][32], and which of the 4 won (the first in
 * scan order, as PyTorch picks) to win1 [n][169][32] as 0..3, or
 * CONV1_BLOCKED where ReLU blocked the window: all that backward needs (the
 * conv outputs themselves, 86 KB an image, are not kept). The bias is added
 * after the max: max and ReLU commute with adding a per-channel constant. The
 * 9 products are summed in double: the rounded result is then the exact sum
 * rounded once, so which pixel wins a pooling window is decided as exact
 * arithmetic (and PyTorch, except for ties closer than its own rounding)
 * decides it, with the same bits in every clone of the kernel.
 *
 * x is [n][28][28] (normalised), w1 [32][1][3][3] and bias [32] as PyTorch
 * lays them out. Callers own every buffer; nothing is allocated here. */
#ifndef CONV1_H
#define CONV1_H

#include <stdint.h>

#define CONV1_BLOCKED 4 /* win1: ReLU blocked this window */

/* p1 and win1 of n images. */
void conv1_pool(const float *x, const float *w1, const float *bias, uint8_t *win1, float *p1,
                int n);

/* dw1 [32][9] and db1 [32] from dp1 (p1's gradient, p1's layout): each
 * window's gradient goes to its winner (none where ReLU blocked it), then into
 * the weight gradient, image after image. Overwritten when `first`, else
 * added to: calls on consecutive batches of images give the bits of one call
 * on them all. */
void conv1_pool_backward(const float *x, const float *dp1, const uint8_t *win1, int first,
                         float *dw1, float *db1, int n);

#endif
