/* test_layers: the layer engine (layers.h) and the models of the catalogue.
 *
 * - Every model's tables agree with its layer table (layers_check), with the
 *   sizes the README quotes, and its FLOPs with layers_train_flop; a table
 *   that disagrees is refused by engine_new.
 * - lenet5, mlp and widecnn against PyTorch: fixtures made by
 *   tests/fixtures/make_model_fixtures.py (lenet5's committed; mlp's and
 *   widecnn's made by `make check` into build/fixtures when PyTorch is there,
 *   else skipped with a message): training-mode logits, loss and every
 *   gradient of images 0..3, and the weights after two SGD steps through the
 *   engine with 1 and 2 threads. widecnn's dropout uses the C engine's masks,
 *   which the script feeds PyTorch (seed DROPOUT_SEED).
 * - SimpleConvNet on the layer engine against its optimised engine and
 *   against its PyTorch fixture: a cross-check of both engines.
 * - Finite differences through every layer type (conv with and without
 *   padding, pooling with an odd input, ReLU, dropout with its fixed mask,
 *   linear) on two small models.
 * - Dropout: the masks' keep rate and their independence of the thread count
 *   and of how a batch is sliced. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine.h"
#include "idx.h"
#include "layers.h"
#include "model.h"
#include "modelfile.h"
#include "relerr.h"
#include "rng.h"
#include "safetensors.h"

/* The fixtures' dropout seed (make_model_fixtures.py's DROPOUT_SEED). */
#define DROPOUT_SEED 1234

/* How close to PyTorch every comparison with a fixture must be (relative
 * error as relerr.h computes it). The layer engine sums in other orders than
 * PyTorch (im2col + sgemm); measured on x86-64 with OpenBLAS: up to 1.5e-6
 * (widecnn's gradients), weights after two steps 2e-7. README.md quotes this. */
#define LAYERS_TOL 5e-6

/* SimpleConvNet's two engines against each other (relative error). */
#define CROSS_TOL 1e-5

#ifndef GEN_FIXTURE_DIR
#define GEN_FIXTURE_DIR "build/fixtures"
#endif

typedef struct {
    const model_def_t *m;
    st_file_t *f;
    float *params;
    const uint8_t *images[8];
    uint8_t labels[8];
    idx_dataset_t ds;
} fixture_t;

/* Opens model m's fixture from dir; NULL (after saying why) when it is not there. */
static fixture_t *s_fixture(const model_def_t *m, const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/%s_pytorch_ref.safetensors", dir, m->name);
    if (access(path, R_OK) != 0) {
        printf("  %s: not there (made by make check when /usr/bin/python3 has torch: "
               "tests/fixtures/make_model_fixtures.py); skipped\n",
               path);
        return NULL;
    }
    fixture_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fx->m = m;
    fx->params = malloc(m->nparams * sizeof(float));
    fx->f = st_open(path, err, sizeof err);
    if (!fx->f)
        fail_msg("%s", err);
    if (modelfile_load(path, m, "", fx->params, err, sizeof err) != 0)
        fail_msg("%s", err);
    const st_tensor_t *im = st_find(fx->f, "images"), *lb = st_find(fx->f, "labels");
    assert_true(im && lb && im->dtype == ST_U8 && st_numel(im) == 8 * 784);
    for (int i = 0; i < 8; i++) {
        fx->images[i] = (const uint8_t *)im->data + i * 784;
        fx->labels[i] = ((const uint8_t *)lb->data)[i];
    }
    fx->ds = (idx_dataset_t){.pixels = (uint8_t *)fx->images[0],
                             .labels = fx->labels,
                             .count = 8,
                             .rows = 28,
                             .cols = 28};
    return fx;
}

static void s_fixture_free(fixture_t *fx)
{
    st_close(&fx->f);
    free(fx->params);
    free(fx);
}

static const float *s_tensor(const fixture_t *fx, const char *name, size_t numel)
{
    const st_tensor_t *t = st_find(fx->f, name);
    if (!t)
        fail_msg("fixture has no tensor %s", name);
    assert_int_equal(st_numel(t), numel);
    return t->data;
}

/* Each tensor of `have` (the model's layout) against the fixture's
 * PREFIX<name>, within tol. */
static void s_compare_tensors(const fixture_t *fx, const char *prefix, const float *have,
                              double tol)
{
    for (int t = 0; t < fx->m->ntensors; t++) {
        const model_tensor_t *mt = &fx->m->tensors[t];
        char name[96];
        snprintf(name, sizeof name, "%s%s", prefix, mt->name);
        assert_true(relerr(name, have + mt->offset, s_tensor(fx, name, mt->numel), mt->numel) <
                    tol);
    }
}

/* The layer engine on images 0..3 (dropout: step 0, positions 0..3) against
 * the fixture's logits, loss and gradients. */
static void s_check_gradients(const fixture_t *fx)
{
    char err[256];
    layers_ws_t *ws = layers_ws_new(fx->m, 4, err, sizeof err);
    assert_non_null(ws);
    float *grad = malloc(fx->m->nparams * sizeof(float));
    layers_dropout_t drop = {.seed = DROPOUT_SEED, .step = 0, .first = 0};
    double loss =
        layers_forward_backward(fx->params, fx->images, fx->labels, 4, 0.25f, &drop, grad, ws);
    assert_true(relerr("logits", layers_ws_logits(ws), s_tensor(fx, "logits", 40), 40) <
                LAYERS_TOL);
    float ours = (float)(loss / 4);
    assert_true(relerr("loss", &ours, s_tensor(fx, "loss", 1), 1) < LAYERS_TOL);
    s_compare_tensors(fx, "grad.", grad, LAYERS_TOL);
    free(grad);
    layers_ws_destroy(&ws);
}

/* Two SGD steps through the engine (1 and 2 threads) against after2.*. */
static void s_check_two_steps(const fixture_t *fx)
{
    size_t n = fx->m->nparams;
    float *w = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    float *g = malloc(n * sizeof(float));
    for (int threads = 1; threads <= 2; threads++) {
        char err[256];
        engine_t *e = engine_new(fx->m, threads, 4, err, sizeof err);
        assert_non_null(e);
        engine_dropout_seed(e, DROPOUT_SEED, 0);
        memcpy(w, fx->params, n * sizeof(float));
        memset(v, 0, n * sizeof(float));
        int idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        for (int step = 0; step < 2; step++)
            engine_step(e, w, v, &fx->ds, idx + 4 * step, 4, 0.01f, 0.9f, g);
        printf("  %d thread(s):\n", threads);
        s_compare_tensors(fx, "after2.", w, LAYERS_TOL);
        engine_destroy(&e);
    }
    free(w);
    free(v);
    free(g);
}

static void s_check_model(const char *name, const char *dir)
{
    fixture_t *fx = s_fixture(models_find(name), dir);
    if (!fx)
        skip();
    s_check_gradients(fx);
    s_check_two_steps(fx);
    s_fixture_free(fx);
}

static void test_lenet5_matches_pytorch(void **state)
{
    s_check_model("lenet5", FIXTURE_DIR);
}

static void test_mlp_matches_pytorch(void **state)
{
    s_check_model("mlp", GEN_FIXTURE_DIR);
}

static void test_widecnn_matches_pytorch(void **state)
{
    s_check_model("widecnn", GEN_FIXTURE_DIR);
}

/* The catalogue: valid tables, the sizes the issue and the README give,
 * FLOPs that agree with the layer tables, and each model found by name. */
static void test_catalogue(void **state)
{
    static const struct {
        const char *name;
        size_t nparams;
    } want[] = {
        {"simpleconvnet", 225034}, {"lenet5", 61706}, {"mlp", 1863690}, {"widecnn", 9517322}};
    int n = 0;
    for (const model_def_t *m; (m = models_at(n)); n++) {
        char err[512] = "";
        int rc = layers_check(m, err, sizeof err);
        printf("  %-14s %9zu parameters, %.4g training FLOPs per image (layers: %.4g) %s\n",
               m->name, m->nparams, m->train_flop_per_image, layers_train_flop(m), err);
        assert_int_equal(rc, 0);
        assert_true(fabs(layers_train_flop(m) / m->train_flop_per_image - 1.0) < 0.005);
        assert_ptr_equal(models_find(m->name), m);
        assert_non_null(m->pytorch_class);
    }
    assert_int_equal(n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(models_find(want[i].name)->nparams, want[i].nparams);
    assert_null(models_find("lenet"));
}

/* A table that disagrees with its layers is refused, saying which tensor. */
static void test_bad_tables_refused(void **state)
{
    const model_def_t *l5 = models_find("lenet5");
    model_tensor_t t[MODELS_MAX_TENSORS];
    memcpy(t, l5->tensors, (size_t)l5->ntensors * sizeof t[0]);
    t[2].shape[3] = 4; /* conv2.weight [16,6,5,4] */
    model_def_t bad = *l5;
    bad.tensors = t;
    char err[512];
    assert_int_equal(layers_check(&bad, err, sizeof err), -1);
    printf("  %s\n", err);
    assert_non_null(strstr(err, "conv2.weight"));
    assert_null(engine_new(&bad, 1, 4, err, sizeof err));

    layer_def_t layers[16];
    memcpy(layers, l5->layers, (size_t)l5->nlayers * sizeof layers[0]);
    layers[3].k = 30; /* conv2 5x5 -> 30x30 on a 14x14 input: no output */
    bad = *l5;
    bad.layers = layers;
    assert_int_equal(layers_check(&bad, err, sizeof err), -1);
    printf("  %s\n", err);

    bad = *l5;
    size_t edges[] = {l5->nparams, 5, 0}; /* 5 is inside conv1.weight */
    bad.edges = edges;
    bad.nedges = 3;
    assert_int_equal(layers_check(&bad, err, sizeof err), -1);
    printf("  %s\n", err);
}

/* SimpleConvNet on the layer engine against its optimised engine (logits
 * and gradients) and against PyTorch's fixture. */
static void test_simpleconvnet_both_engines(void **state)
{
    const model_def_t *m = models_find("simpleconvnet");
    fixture_t *fx = s_fixture(m, FIXTURE_DIR);
    assert_non_null(fx);
    char err[256];
    layers_ws_t *lws = layers_ws_new(m, 8, err, sizeof err);
    model_ws_t *ws = model_ws_new(8);
    assert_true(lws && ws);
    static float g_layers[MODEL_NPARAMS], g_fast[MODEL_NPARAMS];
    double l1 =
        layers_forward_backward(fx->params, fx->images, fx->labels, 8, 0.125f, NULL, g_layers, lws);
    double l2 = model_forward_backward(fx->params, fx->images, fx->labels, 8, 0.125f, g_fast, ws);
    printf("  summed loss: layer engine %.8f, optimised engine %.8f\n", l1, l2);
    assert_true(fabs(l1 - l2) < CROSS_TOL * fabs(l2));
    assert_true(relerr("logits", layers_ws_logits(lws), model_ws_logits(ws), 80) < CROSS_TOL);
    for (int t = 0; t < m->ntensors; t++) {
        const model_tensor_t *mt = &m->tensors[t];
        assert_true(relerr(mt->name, g_layers + mt->offset, g_fast + mt->offset, mt->numel) <
                    CROSS_TOL);
    }
    printf("  against PyTorch:\n");
    s_check_gradients(fx);
    layers_ws_destroy(&lws);
    model_ws_destroy(&ws);
    s_fixture_free(fx);
}

/* Small models that put every layer type through finite differences. */
static const layer_def_t s_tiny_a_layers[] = {
    {.kind = LAYER_CONV, .out = 2, .k = 3, .pad = 1}, /* 2x28x28 */
    {.kind = LAYER_RELU},
    {.kind = LAYER_CONV, .out = 3, .k = 4}, /* 3x25x25: conv after conv, input gradient */
    {.kind = LAYER_RELU},
    {.kind = LAYER_MAXPOOL}, /* 3x12x12: floor drops row and column 24 */
    {.kind = LAYER_DROPOUT, .p = 0.5f},
    {.kind = LAYER_FLATTEN},
    {.kind = LAYER_LINEAR, .out = 8},
    {.kind = LAYER_RELU},
    {.kind = LAYER_LINEAR, .out = 10},
};
static const model_tensor_t s_tiny_a_tensors[] = {
    {"conv1.weight", 4, {2, 1, 3, 3}, 0, 18, 9},   {"conv1.bias", 1, {2}, 18, 2, 9},
    {"conv2.weight", 4, {3, 2, 4, 4}, 20, 96, 32}, {"conv2.bias", 1, {3}, 116, 3, 32},
    {"fc1.weight", 2, {8, 432}, 119, 3456, 432},   {"fc1.bias", 1, {8}, 3575, 8, 432},
    {"fc2.weight", 2, {10, 8}, 3583, 80, 8},       {"fc2.bias", 1, {10}, 3663, 10, 8},
};
static const size_t s_tiny_a_edges[] = {3673, 0};
static const layer_def_t s_tiny_b_layers[] = {
    {.kind = LAYER_MAXPOOL}, /* 1x14x14 before any parameter */
    {.kind = LAYER_FLATTEN}, {.kind = LAYER_DROPOUT, .p = 0.25f}, {.kind = LAYER_LINEAR, .out = 12},
    {.kind = LAYER_RELU},    {.kind = LAYER_DROPOUT, .p = 0.25f}, {.kind = LAYER_LINEAR, .out = 10},
};
static const model_tensor_t s_tiny_b_tensors[] = {
    {"fc1.weight", 2, {12, 196}, 0, 2352, 196},
    {"fc1.bias", 1, {12}, 2352, 12, 196},
    {"fc2.weight", 2, {10, 12}, 2364, 120, 12},
    {"fc2.bias", 1, {10}, 2484, 10, 12},
};
static const size_t s_tiny_b_edges[] = {2494, 2364, 0};

static const model_def_t s_tiny[2] = {
    {.name = "tiny_a",
     .nparams = 3673,
     .ntensors = 8,
     .tensors = s_tiny_a_tensors,
     .nedges = 2,
     .edges = s_tiny_a_edges,
     .nlayers = 10,
     .layers = s_tiny_a_layers},
    {.name = "tiny_b",
     .nparams = 2494,
     .ntensors = 4,
     .tensors = s_tiny_b_tensors,
     .nedges = 3,
     .edges = s_tiny_b_edges,
     .nlayers = 7,
     .layers = s_tiny_b_layers},
};

/* The entry of tensor mt with the largest |g| not in picked[0..k). */
static size_t s_largest(const float *g, const model_tensor_t *mt, const size_t *picked, int k)
{
    size_t best = mt->offset;
    float big = -1.0f;
    for (size_t q = mt->offset; q < mt->offset + mt->numel; q++) {
        int seen = 0;
        for (int j = 0; j < k; j++)
            seen |= picked[j] == q;
        if (!seen && fabsf(g[q]) > big) {
            big = fabsf(g[q]);
            best = q;
        }
    }
    return best;
}

/* Four images of random pixels and labels: unlike MNIST's, no plateaus of
 * equal values whose ReLU or pooling kinks a finite difference crosses all
 * at once. */
static void s_noise(uint8_t pixels[4 * 784], const uint8_t *images[4], uint8_t labels[4])
{
    rng_t r;
    rng_seed(&r, 5);
    for (int i = 0; i < 4 * 784; i++)
        pixels[i] = (uint8_t)rng_below(&r, 256);
    for (int b = 0; b < 4; b++) {
        images[b] = pixels + b * 784;
        labels[b] = (uint8_t)rng_below(&r, 10);
    }
}

/* Central differences of the summed loss of 4 images (dropout on, the same
 * masks every time: a fixed seed and step) against backward, for up to 8
 * entries of tensor mt: its 3 largest-gradient ones and 5 random ones (all
 * of a small tensor). The model runs in float, so the step is 1e-3 (float's
 * rounding of the loss is then ~5e-3 of the difference); a step that large
 * crosses a few of the thousands of ReLU and pooling kinks downstream of a
 * conv layer, each bending the difference a little (measured: up to 4%), so
 * the tolerance is 8% of |fd| + 0.03: an error in a backward pass (a wrong
 * index, sign, transpose or scale) is far larger. PyTorch's fixtures check
 * the same code to 5e-6. Returns the entries that disagree (printed). */
static int s_fd_tensor(const model_def_t *m, const model_tensor_t *mt, float *w, const float *g,
                       const uint8_t *const *images, const uint8_t *labels, layers_ws_t *ws,
                       rng_t *r)
{
    float *scratch = malloc(m->nparams * sizeof(float));
    layers_dropout_t drop = {.seed = 99, .step = 3, .first = 0};
    size_t picked[8];
    int npick = mt->numel < 8 ? (int)mt->numel : 8, bad = 0;
    double worst = 0.0;
    for (int pick = 0; pick < npick; pick++) {
        size_t i = mt->offset + rng_below(r, (uint32_t)mt->numel);
        int seen = 0;
        for (int j = 0; j < pick; j++)
            seen |= picked[j] == i;
        if (pick < 3 || seen) /* the largest not picked yet */
            i = s_largest(g, mt, picked, pick);
        picked[pick] = i;
        const float eps = 1e-3f, orig = w[i];
        w[i] = orig + eps;
        double lp = layers_forward_backward(w, images, labels, 4, 1.0f, &drop, scratch, ws);
        w[i] = orig - eps;
        double lm = layers_forward_backward(w, images, labels, 4, 1.0f, &drop, scratch, ws);
        w[i] = orig;
        double fd = (lp - lm) / (2.0 * eps), e = fabs(fd - g[i]) / (3e-2 + fabs(fd));
        if (e > 8e-2) {
            bad++;
            printf("  %s %s[%zu]: finite difference %.7f, backward %.7f\n", m->name, mt->name,
                   i - mt->offset, fd, g[i]);
        } else
            worst = fmax(worst, e);
    }
    printf("  %s %-13s %d entries, worst rel err of the agreeing ones %.1e\n", m->name, mt->name,
           npick, worst);
    free(scratch);
    return bad;
}

/* Finite differences through every layer type, tensor by tensor (so each
 * layer's backward is checked); a step across a kink is possible, so one
 * disagreeing entry per tensor is allowed, two fail. */
static void test_finite_differences(void **state)
{
    static uint8_t pixels[4 * 784];
    const uint8_t *images[4];
    uint8_t labels[4];
    s_noise(pixels, images, labels);
    for (int k = 0; k < 2; k++) {
        const model_def_t *m = &s_tiny[k];
        char err[512];
        layers_ws_t *ws = layers_ws_new(m, 4, err, sizeof err);
        if (!ws)
            fail_msg("%s", err);
        float *w = malloc(m->nparams * sizeof(float)), *g = malloc(m->nparams * sizeof(float));
        models_init(m, w, 7);
        layers_dropout_t drop = {.seed = 99, .step = 3, .first = 0};
        layers_forward_backward(w, images, labels, 4, 1.0f, &drop, g, ws);
        rng_t r;
        rng_seed(&r, 42);
        for (int t = 0; t < m->ntensors; t++)
            assert_true(s_fd_tensor(m, &m->tensors[t], w, g, images, labels, ws, &r) <= 1);
        free(w);
        free(g);
        layers_ws_destroy(&ws);
    }
}

/* The keep rate of dropout's masks is 1-p (within 4 standard deviations over
 * 200,000 draws), and a different seed, step, position or layer gives a
 * different mask. */
static void test_dropout_mask_statistics(void **state)
{
    const float ps[] = {0.25f, 0.5f};
    for (int k = 0; k < 2; k++) {
        long kept = 0, n = 200000;
        for (long j = 0; j < n; j++)
            kept += layers_dropout_keep(5, (uint64_t)(j / 20000), (int)(j / 1000 % 20), 3,
                                        (size_t)(j % 1000), ps[k]);
        double rate = (double)kept / n, sd = sqrt(ps[k] * (1 - ps[k]) / n);
        printf("  p %.2f: kept %.4f (want %.4f +- %.4f)\n", ps[k], rate, 1 - ps[k], 4 * sd);
        assert_true(fabs(rate - (1 - ps[k])) < 4 * sd);
    }
    int same[4] = {0, 0, 0, 0};
    for (size_t j = 0; j < 1000; j++) {
        int a = layers_dropout_keep(5, 1, 2, 3, j, 0.5f);
        same[0] += a == layers_dropout_keep(6, 1, 2, 3, j, 0.5f);
        same[1] += a == layers_dropout_keep(5, 2, 2, 3, j, 0.5f);
        same[2] += a == layers_dropout_keep(5, 1, 3, 3, j, 0.5f);
        same[3] += a == layers_dropout_keep(5, 1, 2, 4, j, 0.5f);
    }
    for (int i = 0; i < 4; i++) /* independent masks agree on about half */
        assert_true(same[i] > 400 && same[i] < 600);
}

/* widecnn (dropout) and lenet5 through the engine with 1, 2 and 3 threads:
 * the same seed gives the same masks whatever the slicing (gradients equal
 * to summation-order rounding); the same thread count gives the same bits;
 * another seed gives another gradient. tiny_a stands in for widecnn when
 * its fixture's images are all we have: it has dropout too. */
static void test_dropout_thread_independent(void **state)
{
    fixture_t *fx = s_fixture(models_find("simpleconvnet"), FIXTURE_DIR);
    assert_non_null(fx);
    const model_def_t *m = &s_tiny[0];
    size_t n = m->nparams;
    float *w = malloc(n * sizeof(float)), *g[4];
    for (int i = 0; i < 4; i++)
        g[i] = malloc(n * sizeof(float));
    models_init(m, w, 3);
    int idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int threads = 1; threads <= 3; threads++) {
        char err[256];
        engine_t *e = engine_new(m, threads, 8, err, sizeof err);
        assert_non_null(e);
        engine_dropout_seed(e, 11, 5);
        engine_gradient(e, w, &fx->ds, idx, 8, g[threads]);
        if (threads == 1) {
            engine_dropout_seed(e, 12, 5);
            engine_gradient(e, w, &fx->ds, idx, 8, g[0]);
            assert_true(memcmp(g[0], g[1], n * sizeof(float)) != 0);
        } else {
            char what[32];
            snprintf(what, sizeof what, "%d threads vs 1", threads);
            assert_true(relerr(what, g[threads], g[1], n) < 1e-5);
            engine_dropout_seed(e, 11, 5);
            engine_gradient(e, w, &fx->ds, idx, 8, g[0]);
            assert_memory_equal(g[0], g[threads], n * sizeof(float));
        }
        engine_destroy(&e);
    }
    for (int i = 0; i < 4; i++)
        free(g[i]);
    free(w);
    s_fixture_free(fx);
}

/* The layer engine's ready callback: every edge range once, in backward
 * order, with the returned loss. */
typedef struct {
    int calls;
    size_t lo[MODELS_MAX_EDGES], hi[MODELS_MAX_EDGES];
    double loss;
} s_hooks_t;

static void s_hook(void *arg, size_t lo, size_t hi, double loss)
{
    s_hooks_t *h = arg;
    assert_true(h->calls < MODELS_MAX_EDGES);
    h->lo[h->calls] = lo;
    h->hi[h->calls++] = hi;
    h->loss = loss;
}

static void test_hooked_ranges(void **state)
{
    fixture_t *fx = s_fixture(models_find("simpleconvnet"), FIXTURE_DIR);
    assert_non_null(fx);
    const model_def_t *m = models_find("lenet5");
    float *w = malloc(m->nparams * sizeof(float)), *g = malloc(m->nparams * sizeof(float));
    models_init(m, w, 1);
    int idx[4] = {0, 1, 2, 3};
    char err[256];
    engine_t *e = engine_new(m, 2, 4, err, sizeof err);
    assert_non_null(e);
    s_hooks_t h = {0};
    double loss = engine_gradient_hooked(e, w, &fx->ds, idx, 4, g, s_hook, &h);
    assert_int_equal(h.calls, m->nedges - 1);
    for (int i = 0; i < h.calls; i++) {
        assert_int_equal(h.hi[i], m->edges[i]);
        assert_int_equal(h.lo[i], m->edges[i + 1]);
    }
    assert_true(h.loss == loss);
    engine_destroy(&e);
    free(w);
    free(g);
    s_fixture_free(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalogue),
        cmocka_unit_test(test_bad_tables_refused),
        cmocka_unit_test(test_simpleconvnet_both_engines),
        cmocka_unit_test(test_lenet5_matches_pytorch),
        cmocka_unit_test(test_mlp_matches_pytorch),
        cmocka_unit_test(test_widecnn_matches_pytorch),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_dropout_mask_statistics),
        cmocka_unit_test(test_dropout_thread_independent),
        cmocka_unit_test(test_hooked_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
