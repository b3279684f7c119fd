/* model: SimpleConvNet forward, backward, init and SGD; see model.h.
 *
 * From conv1 to pool2 (and back) the n images of a sub-batch go in chunks of
 * c = S_CHUNK (the last one smaller); a chunk's activations lie together, in
 * the layouts below with n = c, chunk after chunk. Layouts for n images:
 *   x      [n][28][28]          normalised input
 *   win1   [n][169][32] bytes   which of each conv1 pooling window's 4 outputs won (conv1.h)
 *   p1     [13][13][c][32]      relu(maxpool(conv1) + b1) (later: its gradient), in
 *                                the layout conv2's Winograd transforms read
 *   V, U, UT, dU                conv2 in the Winograd domain (winograd.h);
 *   M                            one chunk's products (later: their gradient)
 *   a2     [10][10][c][64]      conv2 output without bias (later: its gradient);
 *                                only 10x10: pool2 (11x11 -> 5x5) drops row and
 *                                column 10, whose gradient is zero
 *   pt     [25][c][64]          one chunk's pool2 output before the flatten
 *                                (later: its gradient)
 *   f, df  [n][1600]            flatten of pool2 output, its gradient (apart:
 *                                another thread may read f while df is made)
 *   h      [n][128], logits [n][10], and their gradients dh, dlogits.
 * Because max and relu commute with adding a per-channel constant, the conv
 * bias is added after pooling, on a quarter of the values. Ties in a pooling
 * window go to the first element in scan order, as in PyTorch. */
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "conv1.h"
#include "dispatch.h"
#include "idx.h"
#include "rng.h"
#include "winograd.h"

/* The helpers below pass 32- and 64-byte vectors by value; they are always
 * inlined, so the ABI note GCC gives for the baseline clone does not apply. */
#pragma GCC diagnostic ignored "-Wpsabi"

/* Images that go together from conv1 to pool2 and back: their conv2 data in
 * the Winograd domain (~1 MB) stays in the second-level cache between the
 * transforms and the products (at 64 images a step it did not: conv2's weight
 * gradient took 1.6x the time per image). */
#define S_CHUNK 8

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

const char *const model_prof_names[MODEL_PROF_N] = {
    "input",         "conv1+pool1",  "conv2 in",     "conv2 mul",        "conv2 out",
    "pool2+relu",    "fc1+fc2",      "loss",         "fc2+fc1 back",     "pool2+relu back",
    "conv2 dW",      "conv2 dX mul", "conv2 dX out", "conv1+pool1 back", "barrier wait",
    "thread reduce", "sgd update",
};

struct model_ws {
    int cap, n;
    double *prof, t_last; /* profile: where stage times go, the last tick */
    uint8_t *win1;
    float *UT; /* conv2's transformed weights, transposed (winograd.h) */
    float *x, *p1, *V, *M, *U, *dU, *wscratch, *a2, *pt, *f, *df, *h, *logits, *dh, *dlogits;
    void *block;
};

void model_init(float *params, uint64_t seed)
{
    model_init_tensors(model_tensors, MODEL_NTENSORS, params, seed);
}

void model_init_tensors(const model_tensor_t *tensors, int ntensors, float *params, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    for (int t = 0; t < ntensors; t++) {
        const model_tensor_t *mt = &tensors[t];
        float bound = 1.0f / sqrtf((float)mt->fan_in);
        for (size_t i = 0; i < mt->numel; i++)
            params[mt->offset + i] = rng_uniform(&r, -bound, bound);
    }
}

void model_ws_profile(model_ws_t *ws, double *seconds)
{
    ws->prof = seconds;
}

static double s_clock(void)
{
    struct timespec ts;
    /* This thread's CPU time: on a shared machine, other processes' time
     * slices do not land in whichever stage they interrupt. */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Profile: the time since the last tick goes to `stage`. */
static inline void s_tick(model_ws_t *ws, int stage)
{
    if (ws->prof) {
        double now = s_clock();
        if (stage >= 0)
            ws->prof[stage] += now - ws->t_last;
        ws->t_last = now;
    }
}

void model_ws_tick(model_ws_t *ws, model_prof_stage_t stage)
{
    s_tick(ws, stage == MODEL_PROF_N ? -1 : (int)stage);
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
    size_t floats[] = {n * 784,       32 * n * 169,   WINO_V_FLOATS(n), WINO_M_FLOATS(S_CHUNK),
                       WINO_U_FLOATS, WINO_U_FLOATS,  WINO_U_FLOATS,    WINO_SCRATCH_FLOATS,
                       64 * n * 100,  S_CHUNK * 1600, n * 1600,         n * 1600,
                       n * 128,       n * 10,         n * 128,          n * 10};
    size_t total = s_align(n * 169 * 32); /* win1, bytes, after the floats */
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
    float **dst[] = {&ws->x,  &ws->p1, &ws->V, &ws->M,  &ws->U, &ws->UT,     &ws->dU, &ws->wscratch,
                     &ws->a2, &ws->pt, &ws->f, &ws->df, &ws->h, &ws->logits, &ws->dh, &ws->dlogits};
    for (size_t i = 0; i < sizeof dst / sizeof *dst; i++) {
        *dst[i] = (float *)p;
        p += s_align(floats[i] * sizeof(float));
    }
    ws->win1 = (uint8_t *)p;
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

/* 16 floats, for the loops over conv2's 64 output channels. */
typedef float s_v16f __attribute__((vector_size(64)));
typedef int s_v16i __attribute__((vector_size(64)));
typedef float s_v16fu __attribute__((vector_size(64), aligned(4), may_alias));
#define S_LD16(p) ((s_v16f)(*(const s_v16fu *)(p)))
#define S_ST16(p, v) (*(s_v16fu *)(p) = (v))

HOT_INLINE s_v16f s_sel16(s_v16i c, s_v16f a, s_v16f b)
{
    return (s_v16f)(((s_v16i)a & c) | ((s_v16i)b & ~c));
}

/* conv2's bias + ReLU + 2x2 max-pool on its 10x10 outputs a2 [10][10][n][64]
 * into pt [25][n][64], then flattened as PyTorch's view does into
 * f[b][o*25 + q] (q = py*5 + px). */
HOT_INLINE void s_pool2_relu(const float *a2, const float *bias, float *pt, float *f, int n)
{
    const size_t L = (size_t)n * 64;
    for (int q = 0; q < 25; q++) {
        const float *r0 = a2 + (size_t)(2 * (q / 5) * 10 + 2 * (q % 5)) * L, *r1 = r0 + 10 * L;
        float *o = pt + q * L;
        for (size_t i = 0; i < L; i += 16) {
            s_v16f v0 = S_LD16(r0 + i), v1 = S_LD16(r0 + L + i);
            s_v16f v2 = S_LD16(r1 + i), v3 = S_LD16(r1 + L + i);
            s_v16f m0 = s_sel16(v0 > v1, v0, v1), m1 = s_sel16(v2 > v3, v2, v3);
            s_v16f m = s_sel16(m0 > m1, m0, m1) + S_LD16(bias + i % 64);
            S_ST16(o + i, s_sel16(m > 0.0f, m, (s_v16f){0}));
        }
    }
    for (int b = 0; b < n; b++)
        for (int c = 0; c < 64; c++)
            for (int q = 0; q < 25; q++)
                f[(size_t)b * 1600 + c * 25 + q] = pt[((size_t)q * n + b) * 64 + c];
}

/* Backward of s_pool2_relu, in place: df [n][1600] is first put into pt's
 * layout; a2 holds conv2's outputs on entry and their gradient on return (to
 * each window's first winner in scan order, as PyTorch picks, when ReLU passed
 * it); dbias[o] = sum of what passed (when `first`; else added to it). */
HOT_INLINE void s_pool2_relu_backward(const float *df, float *pt, float *a2, const float *bias,
                                      int first, float *dbias, int n)
{
    const size_t L = (size_t)n * 64;
    for (int b = 0; b < n; b++)
        for (int c = 0; c < 64; c++)
            for (int q = 0; q < 25; q++)
                pt[((size_t)q * n + b) * 64 + c] = df[(size_t)b * 1600 + c * 25 + q];
    s_v16f sum[4] = {{0}};
    for (int o = 0; o < 64 && !first; o++)
        sum[o / 16][o % 16] = dbias[o];
    for (int q = 0; q < 25; q++) {
        float *r0 = a2 + (size_t)(2 * (q / 5) * 10 + 2 * (q % 5)) * L, *r1 = r0 + 10 * L;
        const float *d = pt + q * L;
        for (size_t i = 0; i < L; i += 16) {
            s_v16f v0 = S_LD16(r0 + i), v1 = S_LD16(r0 + L + i);
            s_v16f v2 = S_LD16(r1 + i), v3 = S_LD16(r1 + L + i);
            s_v16f m0 = s_sel16(v0 > v1, v0, v1), m1 = s_sel16(v2 > v3, v2, v3);
            s_v16f m = s_sel16(m0 > m1, m0, m1), zero = {0};
            s_v16f g = s_sel16(m + S_LD16(bias + i % 64) > 0.0f, S_LD16(d + i), zero);
            sum[i % 64 / 16] += g;
            s_v16f g0 = s_sel16(v0 == m, g, zero), rest0 = g - g0;
            s_v16f g1 = s_sel16(v1 == m, rest0, zero), rest1 = rest0 - g1;
            s_v16f g2 = s_sel16(v2 == m, rest1, zero);
            S_ST16(r0 + i, g0);
            S_ST16(r0 + L + i, g1);
            S_ST16(r1 + i, g2);
            S_ST16(r1 + L + i, rest1 - g2);
        }
    }
    for (int o = 0; o < 64; o++)
        dbias[o] = sum[o / 16][o % 16];
}

HOT_KERNEL
void model_forward(const float *params, const uint8_t *const *images, int n, model_ws_t *ws)
{
    ws->n = n;
    s_tick(ws, -1);
    for (int b = 0; b < n; b++)
        idx_normalize(images[b], ws->x + (size_t)b * 784, 784);
    s_tick(ws, MODEL_PROF_INPUT);

    wino_weights(params + MODEL_CONV2_W, ws->U, ws->UT, ws->wscratch);
    s_tick(ws, MODEL_PROF_CONV2_IN);
    for (int b0 = 0; b0 < n; b0 += S_CHUNK) {
        int c = n - b0 < S_CHUNK ? n - b0 : S_CHUNK;
        float *p1 = ws->p1 + (size_t)b0 * 169 * 32, *V = ws->V + WINO_V_FLOATS(b0);
        float *a2 = ws->a2 + (size_t)b0 * 100 * 64;
        conv1_pool(ws->x + (size_t)b0 * 784, params + MODEL_CONV1_W, params + MODEL_CONV1_B,
                   ws->win1 + (size_t)b0 * 169 * 32, p1, c);
        s_tick(ws, MODEL_PROF_CONV1);
        wino_input(p1, c, V);
        s_tick(ws, MODEL_PROF_CONV2_IN);
        wino_multiply(ws->U, V, c, ws->M);
        s_tick(ws, MODEL_PROF_CONV2_MUL);
        wino_output(ws->M, c, a2);
        s_tick(ws, MODEL_PROF_CONV2_OUT);
        s_pool2_relu(a2, params + MODEL_CONV2_B, ws->pt, ws->f + (size_t)b0 * 1600, c);
        s_tick(ws, MODEL_PROF_POOL2);
    }

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
    s_tick(ws, MODEL_PROF_FC);
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

double model_ce(const float *logits, const uint8_t *labels, int n, float scale, float *dlogits)
{
    double loss = 0.0;
    for (int b = 0; b < n; b++) {
        const float *l = logits + (size_t)b * MODEL_CLASSES;
        double lse = s_logsumexp(l);
        loss += lse - (double)l[labels[b]];
        if (!dlogits)
            continue;
        float *d = dlogits + (size_t)b * MODEL_CLASSES;
        for (int j = 0; j < MODEL_CLASSES; j++)
            d[j] = scale * (float)exp((double)l[j] - lse);
        d[labels[b]] -= scale;
    }
    return loss;
}

int model_argmax_correct(const float *logits, const uint8_t *labels, int n)
{
    int correct = 0;
    for (int b = 0; b < n; b++) {
        const float *l = logits + (size_t)b * MODEL_CLASSES;
        int best = 0;
        for (int j = 1; j < MODEL_CLASSES; j++)
            if (l[j] > l[best])
                best = j;
        correct += best == labels[b];
    }
    return correct;
}

double model_loss_sum(const model_ws_t *ws, const uint8_t *labels, int n)
{
    return model_ce(ws->logits, labels, n, 0.0f, NULL);
}

int model_count_correct(const model_ws_t *ws, const uint8_t *labels, int n)
{
    return model_argmax_correct(ws->logits, labels, n);
}

HOT_KERNEL
double model_forward_loss(const float *params, const uint8_t *const *images, const uint8_t *labels,
                          int n, float scale, model_ws_t *ws)
{
    model_forward(params, images, n, ws);

    /* Cross-entropy of softmax, summed; dlogits = scale * (softmax - onehot). */
    double loss = model_ce(ws->logits, labels, n, scale, ws->dlogits);
    s_tick(ws, MODEL_PROF_LOSS);

    /* dh = dlogits . W2, zero where fc1's ReLU blocked (h > 0 where it passed) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, 128, 10, 1.0f, ws->dlogits, 10,
                params + MODEL_FC2_W, 128, 0.0f, ws->dh, 128);
    for (size_t i = 0; i < (size_t)n * 128; i++)
        if (ws->h[i] <= 0.0f)
            ws->dh[i] = 0.0f;
    s_tick(ws, MODEL_PROF_FC_B);
    return loss;
}

/* Part `part` of `nparts` of one fully connected layer's weight gradient
 * dW = dY^T . X [out x in] (a range of its columns, on 16-float boundaries:
 * each thread then reads only its columns of X, and no two write one cache
 * line) and bias gradient db = column sums of dY (a range of its rows),
 * summed over the sub-batches in order; dy(k) and x(k) give sub-batch k's
 * output gradient [n x out] and input [n x in]. */
static void s_fc_part(const model_ws_t *const *ws, int nws, int part, int nparts, int out, int in,
                      const float *(*dy)(const model_ws_t *), const float *(*x)(const model_ws_t *),
                      float *dw, float *db)
{
    int c0 = in * part / nparts / 16 * 16, c1 = in * (part + 1) / nparts / 16 * 16;
    int r0 = out * part / nparts, r1 = out * (part + 1) / nparts;
    if (part == nparts - 1)
        c1 = in;
    for (int k = 0; k < nws; k++) {
        const float *d = dy(ws[k]);
        int n = ws[k]->n;
        if (c1 > c0)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, c1 - c0, n, 1.0f, d, out,
                        x(ws[k]) + c0, in, k == 0 ? 0.0f : 1.0f, dw + c0, in);
        for (int j = r0; j < r1; j++) {
            float s = 0.0f;
            for (int b = 0; b < n; b++)
                s += d[(size_t)b * out + j];
            db[j] = k == 0 ? s : db[j] + s;
        }
    }
}

static const float *s_dlogits(const model_ws_t *ws)
{
    return ws->dlogits;
}
static const float *s_h(const model_ws_t *ws)
{
    return ws->h;
}
static const float *s_dh(const model_ws_t *ws)
{
    return ws->dh;
}
static const float *s_f(const model_ws_t *ws)
{
    return ws->f;
}

void model_fc_grad(const model_ws_t *const *ws, int nws, int part, int nparts, float *grad)
{
    s_fc_part(ws, nws, part, nparts, 10, 128, s_dlogits, s_h, grad + MODEL_FC2_W,
              grad + MODEL_FC2_B);
    s_fc_part(ws, nws, part, nparts, 128, 1600, s_dh, s_f, grad + MODEL_FC1_W, grad + MODEL_FC1_B);
}

HOT_KERNEL
void model_conv_backward(const float *params, model_ws_t *ws, float *grad)
{
    int n = ws->n;
    float *df = ws->df;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, 1600, 128, 1.0f, ws->dh, 128,
                params + MODEL_FC1_W, 1600, 0.0f, df, 1600);
    s_tick(ws, MODEL_PROF_FC_B);

    /* Chunk by chunk, as forward: pool2 + relu backward (da2 into a2's
     * memory), conv2 in the Winograd domain (dM; dU summed over the chunks;
     * dV into V's memory, dp1 into p1's), conv1 + pool1 backward. */
    for (int b0 = 0; b0 < n; b0 += S_CHUNK) {
        int c = n - b0 < S_CHUNK ? n - b0 : S_CHUNK, first = b0 == 0;
        float *dp1 = ws->p1 + (size_t)b0 * 169 * 32, *V = ws->V + WINO_V_FLOATS(b0);
        float *da2 = ws->a2 + (size_t)b0 * 100 * 64, *dM = ws->M;
        s_pool2_relu_backward(df + (size_t)b0 * 1600, ws->pt, da2, params + MODEL_CONV2_B, first,
                              grad + MODEL_CONV2_B, c);
        s_tick(ws, MODEL_PROF_POOL2_B);
        wino_output_grad(da2, c, dM);
        wino_weight_grad_add(V, dM, c, first, ws->dU);
        s_tick(ws, MODEL_PROF_CONV2_DW);
        wino_input_grad_multiply(ws->UT, dM, c, V);
        s_tick(ws, MODEL_PROF_CONV2_DX);
        wino_input_grad(V, c, dp1);
        s_tick(ws, MODEL_PROF_CONV2_DXT);
        conv1_pool_backward(ws->x + (size_t)b0 * 784, dp1, ws->win1 + (size_t)b0 * 169 * 32, first,
                            grad + MODEL_CONV1_W, grad + MODEL_CONV1_B, c);
        s_tick(ws, MODEL_PROF_CONV1_B);
    }
    wino_weight_grad(ws->dU, ws->wscratch, grad + MODEL_CONV2_W);
    s_tick(ws, MODEL_PROF_CONV2_DW);
}

double model_forward_backward(const float *params, const uint8_t *const *images,
                              const uint8_t *labels, int n, float scale, float *grad,
                              model_ws_t *ws)
{
    double loss = model_forward_loss(params, images, labels, n, scale, ws);
    const model_ws_t *one = ws;
    model_fc_grad(&one, 1, 0, 1, grad);
    model_conv_backward(params, ws, grad);
    return loss;
}

HOT_KERNEL
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
HOT_INLINE uint32_t s_not_finite(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

HOT_KERNEL
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

HOT_KERNEL
int model_all_finite(const float *x, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad |= s_not_finite(x[i]);
    return bad == 0;
}
