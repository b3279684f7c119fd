/* model: SimpleConvNet forward, backward, init and SGD; see model.h.
 *
 * Layout of activations for a sub-batch of n images (channel-major over the
 * batch, so a convolution is one GEMM with PyTorch's weight as is):
 *   x      [n][28][28]          normalised input
 *   col1   [9][n*676]           im2col of x, row k = ky*3+kx
 *   a1     [32][n*676]          conv1 output without bias (later: its gradient)
 *   p1     [32][n][13][13]      relu(maxpool(a1) + b1) (later: its gradient)
 *   col2   [288][n*121]         im2col of p1, row k = c*9+ky*3+kx (later: its gradient)
 *   a2     [64][n*121]          conv2 output without bias (later: its gradient);
 *                                pool2 (11x11 -> 5x5) drops row and column 10
 *   f      [n][1600]            flatten of pool2 output (later: its gradient)
 *   h      [n][128], logits [n][10], and their gradients dh, dlogits.
 * Because max and relu commute with adding a per-channel constant, the conv
 * bias is added after pooling, on a quarter of the values. Ties in a pooling
 * window go to the first element in scan order, as in PyTorch. */
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "idx.h"
#include "rng.h"

const model_tensor_t model_tensors[MODEL_NTENSORS] = {
    {"conv1.weight", 4, {32, 1, 3, 3}, MODEL_CONV1_W, 32 * 9, 9},
    {"conv1.bias", 1, {32}, MODEL_CONV1_B, 32, 9},
    {"conv2.weight", 4, {64, 32, 3, 3}, MODEL_CONV2_W, 64 * 288, 288},
    {"conv2.bias", 1, {64}, MODEL_CONV2_B, 64, 288},
    {"fc1.weight", 2, {128, 1600}, MODEL_FC1_W, 128 * 1600, 1600},
    {"fc1.bias", 1, {128}, MODEL_FC1_B, 128, 1600},
    {"fc2.weight", 2, {10, 128}, MODEL_FC2_W, 10 * 128, 128},
    {"fc2.bias", 1, {10}, MODEL_FC2_B, 10, 128},
};

struct model_ws {
    int cap, n;
    float *x, *col1, *a1, *p1, *col2, *a2, *p2, *f, *h, *logits, *dh, *dlogits;
    void *block;
};

void model_init(float *params, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    for (int t = 0; t < MODEL_NTENSORS; t++) {
        const model_tensor_t *mt = &model_tensors[t];
        float bound = 1.0f / sqrtf((float)mt->fan_in);
        for (size_t i = 0; i < mt->numel; i++)
            params[mt->offset + i] = rng_uniform(&r, -bound, bound);
    }
}

static size_t s_align(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

model_ws_t *model_ws_new(int max_n)
{
    if (max_n <= 0)
        return NULL;
    size_t n = (size_t)max_n;
    size_t floats[] = {n * 784,       9 * n * 676,  32 * n * 676, 32 * n * 169,
                       288 * n * 121, 64 * n * 121, 64 * n * 25,  n * 1600,
                       n * 128,       n * 10,       n * 128,      n * 10};
    size_t total = 0;
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++)
        total += s_align(floats[i] * sizeof(float));

    model_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->block = aligned_alloc(64, total);
    if (!ws->block) {
        free(ws);
        return NULL;
    }
    memset(ws->block, 0, total);
    char *p = ws->block;
    float **dst[] = {&ws->x,  &ws->col1, &ws->a1, &ws->p1,     &ws->col2, &ws->a2,
                     &ws->p2, &ws->f,    &ws->h,  &ws->logits, &ws->dh,   &ws->dlogits};
    for (size_t i = 0; i < sizeof dst / sizeof *dst; i++) {
        *dst[i] = (float *)p;
        p += s_align(floats[i] * sizeof(float));
    }
    ws->cap = max_n;
    return ws;
}

void model_ws_destroy(model_ws_t **pws)
{
    if (!pws || !*pws)
        return;
    free((*pws)->block);
    free(*pws);
    *pws = NULL;
}

int model_ws_capacity(const model_ws_t *ws)
{
    return ws->cap;
}

const float *model_ws_logits(const model_ws_t *ws)
{
    return ws->logits;
}

/* col1[ky*3+kx][b*676 + y*26 + x] = x[b][y+ky][x+kx] */
static void s_im2col1(const float *x, float *col1, int n)
{
    size_t N = (size_t)n * 676;
    for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++) {
            float *row = col1 + (size_t)(ky * 3 + kx) * N;
            for (int b = 0; b < n; b++) {
                const float *img = x + (size_t)b * 784;
                for (int y = 0; y < 26; y++)
                    memcpy(row + (size_t)b * 676 + y * 26, img + (y + ky) * 28 + kx,
                           26 * sizeof(float));
            }
        }
}

/* Fused bias + ReLU + 2x2 max-pool, stride 2, floor: in [C][n][H][W] to out
 * [C][n][H/2][W/2]. The winners are not stored: backward finds them again in
 * `in`, which is cheaper than writing and reading them. */
static void s_pool_relu(const float *in, const float *bias, float *out, int C, int n, int H, int W)
{
    const int PH = H / 2, PW = W / 2;
    for (int c = 0; c < C; c++) {
        const float bc = bias[c];
        for (int b = 0; b < n; b++) {
            size_t img = (size_t)c * n + b;
            for (int py = 0; py < PH; py++) {
                const float *r0 = in + (img * H + 2 * py) * W;
                const float *r1 = r0 + W;
                float *o = out + (img * PH + py) * PW;
                for (int px = 0; px < PW; px++) {
                    float m0 = r0[2 * px] > r0[2 * px + 1] ? r0[2 * px] : r0[2 * px + 1];
                    float m1 = r1[2 * px] > r1[2 * px + 1] ? r1[2 * px] : r1[2 * px + 1];
                    float m = (m0 > m1 ? m0 : m1) + bc;
                    o[px] = m > 0.0f ? m : 0.0f;
                }
            }
        }
    }
}

/* Backward of s_pool_relu, in place: `a` holds the layer's pre-pooling
 * output on entry and its gradient on return. Each window's gradient goes to
 * its winner (the first of the 4 in scan order with the maximum value, as
 * PyTorch picks) when ReLU passed it, 0 elsewhere, also in the row and column
 * that floor pooling drops; dbias[c] = sum of the gradients that pass. */
static void s_pool_relu_backward(const float *dout, float *a, const float *bias, float *dbias,
                                 int C, int n, int H, int W)
{
    const int PH = H / 2, PW = W / 2;
    for (int c = 0; c < C; c++) {
        const float bc = bias[c];
        float sum = 0.0f;
        for (int b = 0; b < n; b++) {
            size_t img = (size_t)c * n + b;
            for (int py = 0; py < PH; py++) {
                float *restrict r0 = a + (img * H + 2 * py) * W;
                float *restrict r1 = r0 + W;
                const float *restrict d = dout + (img * PH + py) * PW;
                for (int px = 0; px < PW; px++) {
                    float v0 = r0[2 * px], v1 = r0[2 * px + 1];
                    float v2 = r1[2 * px], v3 = r1[2 * px + 1];
                    float m0 = v0 > v1 ? v0 : v1, m1 = v2 > v3 ? v2 : v3;
                    float m = m0 > m1 ? m0 : m1;
                    float g = m + bc > 0.0f ? d[px] : 0.0f;
                    sum += g;
                    /* Hand the gradient down the scan order to the first max. */
                    float g0 = v0 == m ? g : 0.0f, rest0 = g - g0;
                    float g1 = v1 == m ? rest0 : 0.0f, rest1 = rest0 - g1;
                    float g2 = v2 == m ? rest1 : 0.0f;
                    r0[2 * px] = g0;
                    r0[2 * px + 1] = g1;
                    r1[2 * px] = g2;
                    r1[2 * px + 1] = rest1 - g2;
                }
                if (W & 1)
                    r0[W - 1] = r1[W - 1] = 0.0f;
            }
            if (H & 1)
                memset(a + (img * H + H - 1) * W, 0, (size_t)W * sizeof(float));
        }
        dbias[c] = sum;
    }
}

/* col2[c*9+ky*3+kx][b*121 + y*11 + x] = p1[c][b][y+ky][x+kx] */
static void s_im2col2(const float *p1, float *col2, int n)
{
    size_t N = (size_t)n * 121;
    for (int c = 0; c < 32; c++)
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                float *row = col2 + (size_t)(c * 9 + ky * 3 + kx) * N;
                for (int b = 0; b < n; b++) {
                    const float *img = p1 + ((size_t)c * n + b) * 169;
                    float *dst = row + (size_t)b * 121;
                    for (int y = 0; y < 11; y++)
                        for (int x = 0; x < 11; x++)
                            dst[y * 11 + x] = img[(y + ky) * 13 + kx + x];
                }
            }
}

/* The adjoint of s_im2col2: dp1 (zeroed here) += scattered dcol2. */
static void s_col2im2(const float *dcol2, float *dp1, int n)
{
    size_t N = (size_t)n * 121;
    memset(dp1, 0, (size_t)32 * n * 169 * sizeof(float));
    for (int c = 0; c < 32; c++)
        for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
                const float *row = dcol2 + (size_t)(c * 9 + ky * 3 + kx) * N;
                for (int b = 0; b < n; b++) {
                    float *img = dp1 + ((size_t)c * n + b) * 169;
                    const float *src = row + (size_t)b * 121;
                    for (int y = 0; y < 11; y++) {
                        float *d = img + (y + ky) * 13 + kx;
                        const float *s = src + y * 11;
                        for (int x = 0; x < 11; x++)
                            d[x] += s[x];
                    }
                }
            }
}

void model_forward(const float *params, const uint8_t *const *images, int n, model_ws_t *ws)
{
    const int N1 = n * 676, N2 = n * 121;
    ws->n = n;
    for (int b = 0; b < n; b++)
        idx_normalize(images[b], ws->x + (size_t)b * 784, 784);

    s_im2col1(ws->x, ws->col1, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 32, N1, 9, 1.0f,
                params + MODEL_CONV1_W, 9, ws->col1, N1, 0.0f, ws->a1, N1);
    s_pool_relu(ws->a1, params + MODEL_CONV1_B, ws->p1, 32, n, 26, 26);

    s_im2col2(ws->p1, ws->col2, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 64, N2, 288, 1.0f,
                params + MODEL_CONV2_W, 288, ws->col2, N2, 0.0f, ws->a2, N2);
    s_pool_relu(ws->a2, params + MODEL_CONV2_B, ws->p2, 64, n, 11, 11);

    /* flatten [64][n][25] -> [n][64*25] */
    for (int c = 0; c < 64; c++)
        for (int b = 0; b < n; b++)
            memcpy(ws->f + (size_t)b * 1600 + c * 25, ws->p2 + ((size_t)c * n + b) * 25,
                   25 * sizeof(float));

    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, 128, 1600, 1.0f, ws->f, 1600,
                params + MODEL_FC1_W, 1600, 0.0f, ws->h, 128);
    const float *b1 = params + MODEL_FC1_B;
    for (int b = 0; b < n; b++) {
        float *hb = ws->h + (size_t)b * 128;
        for (int j = 0; j < 128; j++) {
            float v = hb[j] + b1[j];
            hb[j] = v > 0.0f ? v : 0.0f;
        }
    }

    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, 10, 128, 1.0f, ws->h, 128,
                params + MODEL_FC2_W, 128, 0.0f, ws->logits, 10);
    const float *b2 = params + MODEL_FC2_B;
    for (int b = 0; b < n; b++)
        for (int j = 0; j < 10; j++)
            ws->logits[b * 10 + j] += b2[j];
}

/* log(sum_j exp(l[j])) of 10 logits, computed without overflow. */
static double s_logsumexp(const float *l)
{
    float mx = l[0];
    for (int j = 1; j < MODEL_CLASSES; j++)
        mx = l[j] > mx ? l[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < MODEL_CLASSES; j++)
        sum += exp((double)(l[j] - mx));
    return (double)mx + log(sum);
}

double model_loss_sum(const model_ws_t *ws, const uint8_t *labels, int n)
{
    double loss = 0.0;
    for (int b = 0; b < n; b++) {
        const float *l = ws->logits + (size_t)b * MODEL_CLASSES;
        loss += s_logsumexp(l) - (double)l[labels[b]];
    }
    return loss;
}

int model_count_correct(const model_ws_t *ws, const uint8_t *labels, int n)
{
    int correct = 0;
    for (int b = 0; b < n; b++) {
        const float *l = ws->logits + (size_t)b * 10;
        int best = 0;
        for (int j = 1; j < 10; j++)
            if (l[j] > l[best])
                best = j;
        correct += best == labels[b];
    }
    return correct;
}

double model_forward_backward(const float *params, const uint8_t *const *images,
                              const uint8_t *labels, int n, float scale, float *grad,
                              model_ws_t *ws)
{
    const int N1 = n * 676, N2 = n * 121;
    model_forward(params, images, n, ws);

    /* Cross-entropy of softmax, summed; dlogits = scale * (softmax - onehot). */
    double loss = 0.0;
    for (int b = 0; b < n; b++) {
        const float *l = ws->logits + (size_t)b * 10;
        float *d = ws->dlogits + (size_t)b * 10;
        double lse = s_logsumexp(l);
        loss += lse - (double)l[labels[b]];
        for (int j = 0; j < 10; j++)
            d[j] = scale * (float)exp((double)l[j] - lse);
        d[labels[b]] -= scale;
    }

    /* fc2 */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 10, 128, n, 1.0f, ws->dlogits, 10, ws->h,
                128, 0.0f, grad + MODEL_FC2_W, 128);
    for (int j = 0; j < 10; j++) {
        float s = 0.0f;
        for (int b = 0; b < n; b++)
            s += ws->dlogits[b * 10 + j];
        grad[MODEL_FC2_B + j] = s;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, 128, 10, 1.0f, ws->dlogits, 10,
                params + MODEL_FC2_W, 128, 0.0f, ws->dh, 128);

    /* fc1 (ReLU: h > 0 where it passed) */
    for (size_t i = 0; i < (size_t)n * 128; i++)
        if (ws->h[i] <= 0.0f)
            ws->dh[i] = 0.0f;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 128, 1600, n, 1.0f, ws->dh, 128, ws->f,
                1600, 0.0f, grad + MODEL_FC1_W, 1600);
    for (int j = 0; j < 128; j++) {
        float s = 0.0f;
        for (int b = 0; b < n; b++)
            s += ws->dh[b * 128 + j];
        grad[MODEL_FC1_B + j] = s;
    }
    float *df = ws->f; /* f is no longer needed */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, 1600, 128, 1.0f, ws->dh, 128,
                params + MODEL_FC1_W, 1600, 0.0f, df, 1600);

    /* unflatten [n][1600] -> [64][n][25], then pool2 + relu backward into a2 */
    float *dp2 = ws->p2;
    for (int c = 0; c < 64; c++)
        for (int b = 0; b < n; b++)
            memcpy(dp2 + ((size_t)c * n + b) * 25, df + (size_t)b * 1600 + c * 25,
                   25 * sizeof(float));
    float *da2 = ws->a2;
    s_pool_relu_backward(dp2, da2, params + MODEL_CONV2_B, grad + MODEL_CONV2_B, 64, n, 11, 11);

    /* conv2: dW2 = da2 . col2^T, then dcol2 = W2^T . da2 (into col2's memory) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 64, 288, N2, 1.0f, da2, N2, ws->col2, N2,
                0.0f, grad + MODEL_CONV2_W, 288);
    float *dcol2 = ws->col2;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 288, N2, 64, 1.0f, params + MODEL_CONV2_W,
                288, da2, N2, 0.0f, dcol2, N2);
    float *dp1 = ws->p1;
    s_col2im2(dcol2, dp1, n);

    /* pool1 + relu backward into a1, then conv1's weight gradient */
    float *da1 = ws->a1;
    s_pool_relu_backward(dp1, da1, params + MODEL_CONV1_B, grad + MODEL_CONV1_B, 32, n, 26, 26);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 32, 9, N1, 1.0f, da1, N1, ws->col1, N1,
                0.0f, grad + MODEL_CONV1_W, 9);
    return loss;
}

void model_sgd_step(float *w, float *v, const float *g, size_t n, float lr, float momentum)
{
    for (size_t i = 0; i < n; i++) {
        float vi = momentum * v[i] + g[i];
        v[i] = vi;
        w[i] -= lr * vi;
    }
}

/* 1 when x is NaN or infinite: its exponent bits are all ones (a test the
 * compiler vectorises, unlike isfinite). */
static inline uint32_t s_not_finite(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

int model_sgd_step_finite(const float *w, const float *v, const float *g, size_t n, float lr,
                          float momentum)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float vi = momentum * v[i] + g[i], wi = w[i] - lr * vi;
        bad |= s_not_finite(vi) | s_not_finite(wi);
    }
    return bad == 0;
}

int model_all_finite(const float *x, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad |= s_not_finite(x[i]);
    return bad == 0;
}
