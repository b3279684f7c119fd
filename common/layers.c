/* layers: the layer engine (see layers.h): the plan of a model's layers,
 * their forward and backward passes, and dropout's masks. */
#include "layers.h"

#include <assert.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "idx.h"
#include "model.h"

#define S_MAX_LAYERS 32

/* One layer as planned for a 1x28x28 input, with its buffers. */
typedef struct {
    layer_def_t d;
    int index;                /* in the model's layer table (dropout's masks use it) */
    int c, h, w;              /* input: channels, height, width (flattened: c features, 1, 1) */
    int oc, oh, ow;           /* output, likewise */
    size_t in_size, out_size; /* floats per image */
    size_t woff, boff;        /* conv, linear: where weight and bias start in the array */
    int need_dx;              /* backward computes the input gradient (a layer with parameters
                                 comes before this one) */
    float *out;               /* n x out_size; relu, dropout and flatten work in place */
    float *mask;              /* dropout: n x out_size multipliers, 0 or 1/(1-p) */
    int32_t *arg;             /* maxpool: n x out_size, where in the input plane the max was */
} s_layer_t;

struct layers_ws {
    const model_def_t *m;
    int cap, nl;
    int first_param; /* index of the first layer with parameters */
    int dropout_on;  /* the last forward pass applied dropout's masks */
    s_layer_t l[S_MAX_LAYERS];
    float *x;          /* cap x 784: the normalised input */
    float *g0, *g1;    /* cap x the largest activation: gradients, ping-pong */
    float *col, *dcol; /* one image's im2col matrix and its gradient */
    float *logits;     /* cap x 10 */
};

static uint64_t s_mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The per-image part of dropout's hash: the same for every element. */
static uint64_t s_drop_base(uint64_t seed, uint64_t step, int pos, int layer)
{
    return s_mix(s_mix(s_mix(seed) ^ step) ^ (((uint64_t)(uint32_t)pos << 8) | (uint32_t)layer));
}

/* p as a threshold on 24 random bits: an element is kept when its bits are >= it. */
static uint64_t s_drop_threshold(float p)
{
    return (uint64_t)((double)p * 16777216.0);
}

int layers_dropout_keep(uint64_t seed, uint64_t step, int pos, int layer, size_t elem, float p)
{
    return (s_mix(s_drop_base(seed, step, pos, layer) ^ elem) >> 40) >= s_drop_threshold(p);
}

/* Checks that tensor ti of m is the `what` of a layer, with the given shape
 * and fan-in, at offset *off (advanced past it). 0, or -1 + err. */
static int s_tensor(const model_def_t *m, int ti, const char *what, int ndim, const int *shape,
                    int fan_in, size_t *off, char *err, size_t errlen)
{
    if (ti >= m->ntensors) {
        errmsg_set(err, errlen, "model %s: its layers need a %s tensor #%d; the table has %d",
                   m->name, what, ti, m->ntensors);
        return -1;
    }
    const model_tensor_t *t = &m->tensors[ti];
    size_t numel = 1;
    int ok = t->ndim == ndim && t->offset == *off && t->fan_in == fan_in;
    for (int d = 0; d < ndim; d++) {
        ok = ok && t->shape[d] == shape[d];
        numel *= (size_t)shape[d];
    }
    if (!ok || t->numel != numel) {
        errmsg_set(err, errlen,
                   "model %s: tensor %s (#%d) disagrees with its layer (a %s of %d dims, shape "
                   "[%d,%d,...], %zu values at offset %zu, fan-in %d): fix the tables in models.c",
                   m->name, t->name, ti, what, ndim, shape[0], ndim > 1 ? shape[1] : 0, numel, *off,
                   fan_in);
        return -1;
    }
    *off += numel;
    return 0;
}

/* A conv or linear layer's weight and bias tensors. */
static int s_params(const model_def_t *m, s_layer_t *L, int *ti, size_t *off, char *err,
                    size_t errlen)
{
    int conv = L->d.kind == LAYER_CONV;
    int fan_in = conv ? L->c * L->d.k * L->d.k : L->c;
    int wshape[4] = {L->oc, L->c, L->d.k, L->d.k}, bshape[1] = {L->oc};
    L->woff = *off;
    if (s_tensor(m, (*ti)++, "weight", conv ? 4 : 2, wshape, fan_in, off, err, errlen) != 0)
        return -1;
    L->boff = *off;
    return s_tensor(m, (*ti)++, "bias", 1, bshape, fan_in, off, err, errlen);
}

/* One layer's output shape from its input shape (in L); flat says whether
 * the input is flattened. 0, or -1 + err. */
static int s_shape(const model_def_t *m, s_layer_t *L, int *flat, char *err, size_t errlen)
{
    const layer_def_t *d = &L->d;
    L->oc = L->c, L->oh = L->h, L->ow = L->w;
    const char *bad = NULL;
    switch (d->kind) {
    case LAYER_CONV:
        L->oc = d->out;
        L->oh = L->h + 2 * d->pad - d->k + 1;
        L->ow = L->w + 2 * d->pad - d->k + 1;
        if (*flat || d->out < 1 || d->k < 1 || d->pad < 0 || L->oh < 1 || L->ow < 1)
            bad = "a conv needs an unflattened input, out >= 1, k >= 1, pad >= 0, and an output";
        break;
    case LAYER_MAXPOOL:
        L->oh = L->h / 2, L->ow = L->w / 2;
        if (*flat || L->oh < 1 || L->ow < 1)
            bad = "a maxpool needs an unflattened input of at least 2x2";
        break;
    case LAYER_LINEAR:
        L->oc = d->out;
        if (!*flat || d->out < 1)
            bad = "a linear layer needs a flattened input and out >= 1";
        break;
    case LAYER_FLATTEN:
        L->oc = L->c * L->h * L->w, L->oh = L->ow = 1;
        *flat = 1;
        break;
    case LAYER_RELU: break;
    case LAYER_DROPOUT:
        if (!(d->p >= 0.0f && d->p < 1.0f))
            bad = "dropout needs 0 <= p < 1";
        break;
    default: bad = "unknown layer kind";
    }
    if (bad) {
        errmsg_set(err, errlen, "model %s: layer %d: %s (input %dx%dx%d)", m->name, L->index, bad,
                   L->c, L->h, L->w);
        return -1;
    }
    L->in_size = (size_t)L->c * L->h * L->w;
    L->out_size = (size_t)L->oc * L->oh * L->ow;
    return 0;
}

/* The model's edges: descending tensor boundaries from nparams to 0. */
static int s_check_edges(const model_def_t *m, char *err, size_t errlen)
{
    int ok = m->nedges >= 2 && m->nedges <= MODELS_MAX_EDGES && m->edges[0] == m->nparams &&
             m->edges[m->nedges - 1] == 0;
    for (int i = 1; ok && i < m->nedges; i++) {
        int boundary = 0;
        for (int t = 0; t < m->ntensors; t++)
            boundary |= m->tensors[t].offset == m->edges[i];
        ok = m->edges[i] < m->edges[i - 1] && boundary;
    }
    if (!ok)
        errmsg_set(err, errlen,
                   "model %s: its edges must descend from nparams to 0 along tensor boundaries",
                   m->name);
    return ok ? 0 : -1;
}

/* Plans m's layers into l[] (no buffers). Returns the layer count, or -1 + err. */
static int s_plan(const model_def_t *m, s_layer_t *l, char *err, size_t errlen)
{
    if (m->nlayers < 1 || m->nlayers > S_MAX_LAYERS || !m->layers) {
        errmsg_set(err, errlen, "model %s: %d layers; 1 to %d are supported", m->name, m->nlayers,
                   S_MAX_LAYERS);
        return -1;
    }
    int c = 1, h = 28, w = 28, flat = 0, ti = 0, seen_params = 0;
    size_t off = 0;
    for (int i = 0; i < m->nlayers; i++) {
        s_layer_t *L = &l[i];
        memset(L, 0, sizeof *L);
        L->d = m->layers[i];
        L->index = i;
        L->c = c, L->h = h, L->w = w;
        if (s_shape(m, L, &flat, err, errlen) != 0)
            return -1;
        L->need_dx = seen_params;
        if (L->d.kind == LAYER_CONV || L->d.kind == LAYER_LINEAR) {
            if (s_params(m, L, &ti, &off, err, errlen) != 0)
                return -1;
            seen_params = 1;
        }
        c = L->oc, h = L->oh, w = L->ow;
    }
    if (!flat || c != MODEL_CLASSES || ti != m->ntensors || off != m->nparams) {
        errmsg_set(err, errlen,
                   "model %s: the layers end in %d %s outputs and use %d tensors, %zu values; "
                   "%d flat outputs, %d tensors and %zu values were expected",
                   m->name, c, flat ? "flat" : "unflattened", ti, off, MODEL_CLASSES, m->ntensors,
                   m->nparams);
        return -1;
    }
    if (s_check_edges(m, err, errlen) != 0)
        return -1;
    return m->nlayers;
}

int layers_check(const model_def_t *m, char *err, size_t errlen)
{
    s_layer_t l[S_MAX_LAYERS];
    return s_plan(m, l, err, errlen) < 0 ? -1 : 0;
}

double layers_train_flop(const model_def_t *m)
{
    s_layer_t l[S_MAX_LAYERS];
    char err[256];
    int nl = s_plan(m, l, err, sizeof err);
    double flop = 0.0;
    for (int i = 0; i < nl; i++) {
        double mac = 0.0;
        if (l[i].d.kind == LAYER_CONV)
            mac = (double)l[i].out_size * l[i].c * l[i].d.k * l[i].d.k;
        else if (l[i].d.kind == LAYER_LINEAR)
            mac = (double)l[i].in_size * l[i].oc;
        flop += 2.0 * mac * (l[i].need_dx ? 3 : 2); /* forward, weight grad, input grad */
    }
    return flop;
}

layers_ws_t *layers_ws_new(const model_def_t *m, int max_n, char *err, size_t errlen)
{
    layers_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws) {
        errmsg_set(err, errlen, "layers: out of memory");
        return NULL;
    }
    ws->nl = s_plan(m, ws->l, err, errlen);
    if (ws->nl < 0 || max_n < 1) {
        if (max_n < 1)
            errmsg_set(err, errlen, "layers: bad sub-batch capacity %d", max_n);
        free(ws);
        return NULL;
    }
    ws->m = m;
    ws->cap = max_n;
    size_t n = (size_t)max_n, biggest = MODEL_IMAGE_PIXELS, col = 1;
    ws->first_param = ws->nl;
    int ok = (ws->x = malloc(n * MODEL_IMAGE_PIXELS * sizeof(float))) != NULL;
    float *prev = ws->x;
    for (int i = 0; i < ws->nl; i++) {
        s_layer_t *L = &ws->l[i];
        if ((L->d.kind == LAYER_CONV || L->d.kind == LAYER_LINEAR) && ws->first_param == ws->nl)
            ws->first_param = i;
        biggest = L->out_size > biggest ? L->out_size : biggest;
        if (L->d.kind == LAYER_CONV) {
            size_t c = (size_t)L->c * L->d.k * L->d.k * L->oh * L->ow;
            col = c > col ? c : col;
        }
        int in_place =
            L->d.kind == LAYER_RELU || L->d.kind == LAYER_DROPOUT || L->d.kind == LAYER_FLATTEN;
        L->out = in_place ? prev : malloc(n * L->out_size * sizeof(float));
        if (L->d.kind == LAYER_DROPOUT)
            L->mask = malloc(n * L->out_size * sizeof(float));
        if (L->d.kind == LAYER_MAXPOOL)
            L->arg = malloc(n * L->out_size * sizeof(int32_t));
        ok = ok && L->out && (L->d.kind != LAYER_DROPOUT || L->mask) &&
             (L->d.kind != LAYER_MAXPOOL || L->arg);
        prev = L->out;
    }
    ws->logits = prev;
    ws->g0 = malloc(n * biggest * sizeof(float));
    ws->g1 = malloc(n * biggest * sizeof(float));
    ws->col = malloc(col * sizeof(float));
    ws->dcol = malloc(col * sizeof(float));
    if (!ok || !ws->g0 || !ws->g1 || !ws->col || !ws->dcol) {
        errmsg_set(err, errlen, "layers: out of memory for model %s's workspace of %d images",
                   m->name, max_n);
        layers_ws_destroy(&ws);
        return NULL;
    }
    return ws;
}

void layers_ws_destroy(layers_ws_t **pws)
{
    if (!pws || !*pws)
        return;
    layers_ws_t *ws = *pws;
    for (int i = 0; i < ws->nl; i++) {
        s_layer_t *L = &ws->l[i];
        if (L->d.kind != LAYER_RELU && L->d.kind != LAYER_DROPOUT && L->d.kind != LAYER_FLATTEN)
            free(L->out);
        free(L->mask);
        free(L->arg);
    }
    free(ws->x);
    free(ws->g0);
    free(ws->g1);
    free(ws->col);
    free(ws->dcol);
    free(ws);
    *pws = NULL;
}

int layers_ws_capacity(const layers_ws_t *ws)
{
    return ws->cap;
}

const float *layers_ws_logits(const layers_ws_t *ws)
{
    return ws->logits;
}

/* The outputs ox in [*lo, *hi) whose input column ox + kx - pad is inside
 * the image (stride 1): the rest read the zero padding. */
static void s_valid(const s_layer_t *L, int kx, int *lo, int *hi)
{
    *lo = L->d.pad - kx > 0 ? L->d.pad - kx : 0;
    *hi = L->w + L->d.pad - kx < L->ow ? L->w + L->d.pad - kx : L->ow;
    if (*hi < *lo)
        *hi = *lo;
}

/* col[(ci*k + ky)*k + kx][oy*ow + ox] = x[ci][oy + ky - pad][ox + kx - pad], 0 outside. */
static void s_im2col(const s_layer_t *L, const float *x, float *col)
{
    int k = L->d.k, pad = L->d.pad;
    for (int ci = 0; ci < L->c; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *row = col + ((size_t)(ci * k + ky) * k + kx) * L->oh * L->ow;
                int lo, hi;
                s_valid(L, kx, &lo, &hi);
                for (int oy = 0; oy < L->oh; oy++) {
                    int iy = oy + ky - pad;
                    float *r = row + (size_t)oy * L->ow;
                    if (iy < 0 || iy >= L->h) {
                        memset(r, 0, (size_t)L->ow * sizeof(float));
                        continue;
                    }
                    const float *xr = x + ((size_t)ci * L->h + iy) * L->w;
                    memset(r, 0, (size_t)lo * sizeof(float));
                    memcpy(r + lo, xr + (lo + kx - pad), (size_t)(hi - lo) * sizeof(float));
                    memset(r + hi, 0, (size_t)(L->ow - hi) * sizeof(float));
                }
            }
}

/* The reverse of s_im2col: adds each column entry into dx (zeroed first). */
static void s_col2im(const s_layer_t *L, const float *dcol, float *dx)
{
    int k = L->d.k, pad = L->d.pad;
    memset(dx, 0, L->in_size * sizeof(float));
    for (int ci = 0; ci < L->c; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *row = dcol + ((size_t)(ci * k + ky) * k + kx) * L->oh * L->ow;
                int lo, hi;
                s_valid(L, kx, &lo, &hi);
                for (int oy = 0; oy < L->oh; oy++) {
                    int iy = oy + ky - pad;
                    if (iy < 0 || iy >= L->h)
                        continue;
                    const float *r = row + (size_t)oy * L->ow;
                    float *xr = dx + ((size_t)ci * L->h + iy) * L->w;
                    for (int ox = lo; ox < hi; ox++)
                        xr[ox + kx - pad] += r[ox];
                }
            }
}

/* out = W . im2col(x) + bias, one image at a time. */
static void s_conv_forward(const float *params, const s_layer_t *L, const float *x, int n,
                           float *col)
{
    int ckk = L->c * L->d.k * L->d.k, ohw = L->oh * L->ow;
    for (int b = 0; b < n; b++) {
        float *y = L->out + (size_t)b * L->out_size;
        for (int o = 0; o < L->oc; o++)
            for (int i = 0; i < ohw; i++)
                y[(size_t)o * ohw + i] = params[L->boff + o];
        s_im2col(L, x + (size_t)b * L->in_size, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L->oc, ohw, ckk, 1.0f,
                    params + L->woff, ckk, col, ohw, 1.0f, y, ohw);
    }
}

/* dW = sum_b dY_b . col_b^T, db = sum of dY, dX_b = col2im(W^T . dY_b). */
static void s_conv_backward(const float *params, const s_layer_t *L, const float *x, int n,
                            const float *dy, float *dx, float *grad, float *col, float *dcol)
{
    int ckk = L->c * L->d.k * L->d.k, ohw = L->oh * L->ow;
    float *gw = grad + L->woff, *gb = grad + L->boff;
    memset(gb, 0, (size_t)L->oc * sizeof(float));
    for (int b = 0; b < n; b++) {
        const float *d = dy + (size_t)b * L->out_size;
        s_im2col(L, x + (size_t)b * L->in_size, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L->oc, ckk, ohw, 1.0f, d, ohw, col,
                    ohw, b ? 1.0f : 0.0f, gw, ckk);
        for (int o = 0; o < L->oc; o++) {
            float s = 0.0f;
            for (int i = 0; i < ohw; i++)
                s += d[(size_t)o * ohw + i];
            gb[o] += s;
        }
        if (L->need_dx) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ckk, ohw, L->oc, 1.0f,
                        params + L->woff, ckk, d, ohw, 0.0f, dcol, ohw);
            s_col2im(L, dcol, dx + (size_t)b * L->in_size);
        }
    }
}

/* 2x2 max, stride 2; the first maximum in scan order wins, as in PyTorch. */
static void s_pool_forward(const s_layer_t *L, const float *x, int n)
{
    for (int b = 0; b < n; b++)
        for (int c = 0; c < L->c; c++) {
            const float *p = x + (size_t)b * L->in_size + (size_t)c * L->h * L->w;
            size_t o = (size_t)b * L->out_size + (size_t)c * L->oh * L->ow;
            float *out = L->out;
            int32_t *arg = L->arg;
            for (int oy = 0; oy < L->oh; oy++)
                for (int ox = 0; ox < L->ow; ox++, o++) {
                    int i = (2 * oy) * L->w + 2 * ox, best = i;
                    best = p[i + 1] > p[best] ? i + 1 : best;
                    best = p[i + L->w] > p[best] ? i + L->w : best;
                    best = p[i + L->w + 1] > p[best] ? i + L->w + 1 : best;
                    out[o] = p[best];
                    arg[o] = c * L->h * L->w + best;
                }
        }
}

static void s_linear_forward(const float *params, const s_layer_t *L, const float *x, int n)
{
    int in = L->c, out = L->oc;
    for (int b = 0; b < n; b++)
        memcpy(L->out + (size_t)b * out, params + L->boff, (size_t)out * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, params + L->woff,
                in, 1.0f, L->out, out);
}

/* dW = dY^T . X, db = column sums of dY, dX = dY . W. */
static void s_linear_backward(const float *params, const s_layer_t *L, const float *x, int n,
                              const float *dy, float *dx, float *grad)
{
    int in = L->c, out = L->oc;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f,
                grad + L->woff, in);
    for (int j = 0; j < out; j++) {
        float s = 0.0f;
        for (int b = 0; b < n; b++)
            s += dy[(size_t)b * out + j];
        grad[L->boff + j] = s;
    }
    if (L->need_dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out,
                    params + L->woff, in, 0.0f, dx, in);
}

/* Dropout in place: draws the masks of the n images (multipliers 0 or
 * 1/(1-p), PyTorch's float division) and applies them. */
static void s_dropout_forward(const s_layer_t *L, int n, const layers_dropout_t *drop)
{
    uint64_t thr = s_drop_threshold(L->d.p);
    float keep = 1.0f / (1.0f - L->d.p);
    for (int b = 0; b < n; b++) {
        uint64_t base = s_drop_base(drop->seed, drop->step, drop->first + b, L->index);
        float *mk = L->mask + (size_t)b * L->out_size, *y = L->out + (size_t)b * L->out_size;
        for (size_t j = 0; j < L->out_size; j++) {
            mk[j] = (s_mix(base ^ j) >> 40) >= thr ? keep : 0.0f;
            y[j] *= mk[j];
        }
    }
}

/* The forward pass; drop NULL: dropout is identity. */
static void s_forward(const float *params, const uint8_t *const *images, int n,
                      const layers_dropout_t *drop, layers_ws_t *ws)
{
    assert(n >= 1 && n <= ws->cap);
    for (int b = 0; b < n; b++)
        idx_normalize(images[b], ws->x + (size_t)b * MODEL_IMAGE_PIXELS, MODEL_IMAGE_PIXELS);
    ws->dropout_on = drop != NULL;
    const float *x = ws->x;
    for (int i = 0; i < ws->nl; i++) {
        const s_layer_t *L = &ws->l[i];
        size_t all = (size_t)n * L->out_size;
        switch (L->d.kind) {
        case LAYER_CONV: s_conv_forward(params, L, x, n, ws->col); break;
        case LAYER_MAXPOOL: s_pool_forward(L, x, n); break;
        case LAYER_LINEAR: s_linear_forward(params, L, x, n); break;
        case LAYER_RELU: {
            float *y = L->out;
            for (size_t j = 0; j < all; j++)
                y[j] = y[j] > 0.0f ? y[j] : 0.0f;
            break;
        }
        case LAYER_DROPOUT:
            if (drop)
                s_dropout_forward(L, n, drop);
            break;
        case LAYER_FLATTEN: break;
        }
        x = L->out;
    }
}

void layers_forward(const float *params, const uint8_t *const *images, int n, layers_ws_t *ws)
{
    s_forward(params, images, n, NULL, ws);
}

/* Layer i's backward: dy (n x out_size) -> dx (n x in_size) and its
 * parameters' gradient. Returns where the input gradient is: dx, or dy for
 * the layers that work in place. */
static float *s_backward(const float *params, layers_ws_t *ws, int i, int n, float *dy, float *dx,
                         float *grad)
{
    const s_layer_t *L = &ws->l[i];
    const float *x = i ? ws->l[i - 1].out : ws->x;
    size_t all = (size_t)n * L->out_size;
    switch (L->d.kind) {
    case LAYER_CONV: s_conv_backward(params, L, x, n, dy, dx, grad, ws->col, ws->dcol); return dx;
    case LAYER_LINEAR: s_linear_backward(params, L, x, n, dy, dx, grad); return dx;
    case LAYER_MAXPOOL:
        memset(dx, 0, (size_t)n * L->in_size * sizeof(float));
        for (int b = 0; b < n; b++)
            for (size_t j = 0; j < L->out_size; j++)
                dx[(size_t)b * L->in_size + L->arg[(size_t)b * L->out_size + j]] =
                    dy[(size_t)b * L->out_size + j];
        return dx;
    case LAYER_RELU: {
        /* out > 0 where relu passed (a dropout after it in place keeps the sign) */
        const float *y = L->out;
        for (size_t j = 0; j < all; j++)
            dy[j] = y[j] > 0.0f ? dy[j] : 0.0f;
        return dy;
    }
    case LAYER_DROPOUT: {
        const float *mask = L->mask;
        for (size_t j = 0; ws->dropout_on && j < all; j++)
            dy[j] *= mask[j];
        return dy;
    }
    case LAYER_FLATTEN: return dy;
    }
    return dy;
}

double layers_forward_backward(const float *params, const uint8_t *const *images,
                               const uint8_t *labels, int n, float scale,
                               const layers_dropout_t *drop, float *grad, layers_ws_t *ws)
{
    s_forward(params, images, n, drop, ws);
    float *dy = ws->g0;
    double loss = model_ce(ws->logits, labels, n, scale, dy);
    for (int i = ws->nl - 1; i >= ws->first_param; i--) {
        float *other = dy == ws->g0 ? ws->g1 : ws->g0;
        dy = s_backward(params, ws, i, n, dy, other, grad);
    }
    return loss;
}
