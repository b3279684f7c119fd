/* test_model: SimpleConvNet against PyTorch itself and against finite
 * differences, plus the engine's determinism and thread-count independence.
 *
 * The PyTorch oracle (fixtures/simpleconvnet_pytorch_ref.safetensors, made by
 * fixtures/make_pytorch_reference.py) holds initial weights, 8 MNIST images,
 * PyTorch's logits, loss and gradients on images 0..3 and the weights after
 * two SGD-momentum steps. Matching them checks layout, flatten order, pooling,
 * loss and optimizer semantics all at once. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine.h"
#include "idx.h"
#include "model.h"
#include "modelfile.h"
#include "relerr.h"
#include "rng.h"
#include "safetensors.h"

#define FIXTURE FIXTURE_DIR "/simpleconvnet_pytorch_ref.safetensors"

/* How close to PyTorch every comparison with the oracle must be: relative
 * error (largest |ours - pytorch| over the tensor's largest |pytorch|). float
 * has 24 bits (6e-8 per rounding); the sums here differ from PyTorch's in
 * order, so a few roundings add up. Measured on x86-64 with OpenBLAS: logits
 * 2.8e-7, loss 1.0e-7, gradients up to 6.9e-7 (conv1.weight), weights after
 * two steps up to 1.5e-7. README.md quotes this figure. */
#define PYTORCH_TOL 2e-6

typedef struct {
    st_file_t *f;
    float params[MODEL_NPARAMS];
    const uint8_t *images[8];
    uint8_t labels[8];
} fixture_t;

static int s_setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    char err[256];
    fx->f = st_open(FIXTURE, err, sizeof err);
    if (!fx->f) {
        fprintf(stderr, "cannot open fixture: %s\n", err);
        free(fx);
        return -1;
    }
    if (modelfile_load(FIXTURE, models_find(MODELS_DEFAULT), "", fx->params, err, sizeof err) !=
        0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    const st_tensor_t *im = st_find(fx->f, "images"), *lb = st_find(fx->f, "labels");
    if (!im || !lb || im->dtype != ST_U8 || st_numel(im) != 8 * 784)
        return -1;
    for (int i = 0; i < 8; i++) {
        fx->images[i] = (const uint8_t *)im->data + i * 784;
        fx->labels[i] = ((const uint8_t *)lb->data)[i];
    }
    *state = fx;
    return 0;
}

static int s_teardown(void **state)
{
    fixture_t *fx = *state;
    st_close(&fx->f);
    free(fx);
    return 0;
}

static const float *s_tensor(fixture_t *fx, const char *name, size_t numel)
{
    const st_tensor_t *t = st_find(fx->f, name);
    assert_non_null(t);
    assert_int_equal(st_numel(t), numel);
    return t->data;
}

/* The fixture's 8 images as a data set. */
static idx_dataset_t s_fixture_ds(fixture_t *fx)
{
    return (idx_dataset_t){.pixels = (uint8_t *)fx->images[0],
                           .labels = fx->labels,
                           .count = 8,
                           .rows = 28,
                           .cols = 28};
}

static void test_forward_matches_pytorch(void **state)
{
    fixture_t *fx = *state;
    model_ws_t *ws = model_ws_new(4);
    model_forward(fx->params, fx->images, 4, ws);
    assert_true(relerr("logits", model_ws_logits(ws), s_tensor(fx, "logits", 40), 40) <
                PYTORCH_TOL);
    model_ws_destroy(&ws);
}

static void test_gradients_match_pytorch(void **state)
{
    fixture_t *fx = *state;
    model_ws_t *ws = model_ws_new(4);
    static float grad[MODEL_NPARAMS];
    double loss = model_forward_backward(fx->params, fx->images, fx->labels, 4, 0.25f, grad, ws);
    float ours = (float)(loss / 4);
    const float *ref = s_tensor(fx, "loss", 1);
    printf("  loss ours %.8f pytorch %.8f\n", ours, ref[0]);
    assert_true(fabs(ours - ref[0]) <= PYTORCH_TOL * fabs(ref[0]));
    for (int t = 0; t < MODEL_NTENSORS; t++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", model_tensors[t].name);
        const float *g = s_tensor(fx, name, model_tensors[t].numel);
        assert_true(relerr(name, grad + model_tensors[t].offset, g, model_tensors[t].numel) <
                    PYTORCH_TOL);
    }
    model_ws_destroy(&ws);
}

/* Two steps of SGD (lr 0.01, momentum 0.9), through the engine as training
 * uses it, with 1 and with 2 threads. */
static void test_two_sgd_steps_match_pytorch(void **state)
{
    fixture_t *fx = *state;
    idx_dataset_t ds = s_fixture_ds(fx);
    for (int threads = 1; threads <= 2; threads++) {
        char err[256];
        engine_t *e = engine_new(models_find(MODELS_DEFAULT), threads, 4, err, sizeof err);
        assert_non_null(e);
        static float w[MODEL_NPARAMS], v[MODEL_NPARAMS], g[MODEL_NPARAMS];
        memcpy(w, fx->params, sizeof w);
        memset(v, 0, sizeof v);
        int idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        for (int step = 0; step < 2; step++) {
            engine_gradient(e, w, &ds, idx + 4 * step, 4, g);
            model_sgd_step(w, v, g, MODEL_NPARAMS, 0.01f, 0.9f);
        }
        printf(" %d thread(s):\n", threads);
        for (int t = 0; t < MODEL_NTENSORS; t++) {
            char name[64];
            snprintf(name, sizeof name, "after2.%s", model_tensors[t].name);
            const float *ref = s_tensor(fx, name, model_tensors[t].numel);
            assert_true(relerr(name, w + model_tensors[t].offset, ref, model_tensors[t].numel) <
                        PYTORCH_TOL);
        }
        engine_destroy(&e);
    }
}

/* A plain double-precision SimpleConvNet forward pass with direct loops, as
 * the definitions read: the function that finite differences differentiate. */
static double s_ref_loss(const double *w, const uint8_t *const *images, const uint8_t *labels,
                         int n)
{
    static double x[28 * 28], c1[32][26][26], p1[32][13][13], c2[64][11][11], f[1600], h[128];
    const double *w1 = w + MODEL_CONV1_W, *b1 = w + MODEL_CONV1_B, *w2 = w + MODEL_CONV2_W,
                 *b2 = w + MODEL_CONV2_B, *f1 = w + MODEL_FC1_W, *fb1 = w + MODEL_FC1_B,
                 *f2 = w + MODEL_FC2_W, *fb2 = w + MODEL_FC2_B;
    double loss = 0.0;
    for (int b = 0; b < n; b++) {
        for (int i = 0; i < 784; i++)
            x[i] = (images[b][i] / 255.0 - 0.1307) / 0.3081;
        for (int o = 0; o < 32; o++)
            for (int y = 0; y < 26; y++)
                for (int z = 0; z < 26; z++) {
                    double s = b1[o];
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++)
                            s += w1[o * 9 + ky * 3 + kx] * x[(y + ky) * 28 + z + kx];
                    c1[o][y][z] = s > 0 ? s : 0; /* relu, then pool */
                }
        for (int o = 0; o < 32; o++)
            for (int y = 0; y < 13; y++)
                for (int z = 0; z < 13; z++)
                    p1[o][y][z] = fmax(fmax(c1[o][2 * y][2 * z], c1[o][2 * y][2 * z + 1]),
                                       fmax(c1[o][2 * y + 1][2 * z], c1[o][2 * y + 1][2 * z + 1]));
        for (int o = 0; o < 64; o++)
            for (int y = 0; y < 11; y++)
                for (int z = 0; z < 11; z++) {
                    double s = b2[o];
                    for (int c = 0; c < 32; c++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++)
                                s += w2[(o * 32 + c) * 9 + ky * 3 + kx] * p1[c][y + ky][z + kx];
                    c2[o][y][z] = s > 0 ? s : 0;
                }
        for (int o = 0; o < 64; o++)
            for (int y = 0; y < 5; y++)
                for (int z = 0; z < 5; z++)
                    f[o * 25 + y * 5 + z] =
                        fmax(fmax(c2[o][2 * y][2 * z], c2[o][2 * y][2 * z + 1]),
                             fmax(c2[o][2 * y + 1][2 * z], c2[o][2 * y + 1][2 * z + 1]));
        for (int j = 0; j < 128; j++) {
            double s = fb1[j];
            for (int i = 0; i < 1600; i++)
                s += f1[j * 1600 + i] * f[i];
            h[j] = s > 0 ? s : 0;
        }
        double logit[10], mx = -INFINITY, sum = 0.0;
        for (int k = 0; k < 10; k++) {
            double s = fb2[k];
            for (int j = 0; j < 128; j++)
                s += f2[k * 128 + j] * h[j];
            logit[k] = s;
            mx = fmax(mx, s);
        }
        for (int k = 0; k < 10; k++)
            sum += exp(logit[k] - mx);
        loss += mx + log(sum) - logit[labels[b]];
    }
    return loss;
}

/* Finite differences against backward, tensor by tensor, so that each
 * layer's backward is checked: central differences of the double-precision
 * reference loss of 2 images, step 1e-5, against our float backward, for
 * each tensor's 3 largest-gradient entries and 5 random ones. In double the
 * rounding error of a difference is ~1e-10, far below the tolerance; a step
 * across a ReLU or pooling kink is possible but rare, so one disagreeing
 * entry in a tensor is reported and allowed, two fail the test. */
static void test_finite_differences(void **state)
{
    fixture_t *fx = *state;
    model_ws_t *ws = model_ws_new(2);
    static float grad[MODEL_NPARAMS];
    static double wd[MODEL_NPARAMS];
    for (int i = 0; i < MODEL_NPARAMS; i++)
        wd[i] = fx->params[i];
    model_forward_backward(fx->params, fx->images, fx->labels, 2, 1.0f, grad, ws);
    double ref = s_ref_loss(wd, fx->images, fx->labels, 2);
    double ours = 0.0;
    {
        static float scratch[MODEL_NPARAMS];
        ours = model_forward_backward(fx->params, fx->images, fx->labels, 2, 1.0f, scratch, ws);
    }
    printf("  loss of 2 images: float model %.8f, double reference %.8f\n", ours, ref);
    assert_true(fabs(ours - ref) < 1e-5 * fabs(ref));
    rng_t r;
    rng_seed(&r, 42);
    const double eps = 1e-5;
    for (int t = 0; t < MODEL_NTENSORS; t++) {
        const model_tensor_t *mt = &model_tensors[t];
        int bad = 0;
        double worst = 0.0;
        size_t picked[8];
        for (int k = 0; k < 8; k++) {
            size_t i = mt->offset + rng_below(&r, (uint32_t)mt->numel);
            if (k < 3) { /* the largest |gradient| not picked yet */
                float best = -1.0f;
                for (size_t q = mt->offset; q < mt->offset + mt->numel; q++) {
                    int seen = 0;
                    for (int j = 0; j < k; j++)
                        seen |= picked[j] == q;
                    if (!seen && fabsf(grad[q]) > best) {
                        best = fabsf(grad[q]);
                        i = q;
                    }
                }
            }
            picked[k] = i;
            double orig = wd[i];
            wd[i] = orig + eps;
            double lp = s_ref_loss(wd, fx->images, fx->labels, 2);
            wd[i] = orig - eps;
            double lm = s_ref_loss(wd, fx->images, fx->labels, 2);
            wd[i] = orig;
            double fd = (lp - lm) / (2.0 * eps);
            double err = fabs(fd - grad[i]) / (1e-4 + fabs(fd));
            if (err > 1e-3) {
                bad++;
                printf("  %s[%zu]: finite difference %.9f, backward %.9f\n", mt->name,
                       i - mt->offset, fd, grad[i]);
            } else
                worst = fmax(worst, err);
        }
        printf("  %-13s 8 entries, worst rel err of the agreeing ones %.1e\n", mt->name, worst);
        assert_true(bad <= 1);
    }
    model_ws_destroy(&ws);
}

/* Same inputs, same thread count: bit-identical gradients; another thread
 * count: the same to rounding. */
static void test_engine_deterministic(void **state)
{
    fixture_t *fx = *state;
    idx_dataset_t ds = s_fixture_ds(fx);
    int idx[8] = {3, 1, 4, 0, 5, 2, 7, 6};
    static float g1[MODEL_NPARAMS], g2[MODEL_NPARAMS], g3[MODEL_NPARAMS];
    char err[256];
    engine_t *e2 = engine_new(models_find(MODELS_DEFAULT), 2, 8, err, sizeof err);
    engine_t *e1 = engine_new(models_find(MODELS_DEFAULT), 1, 8, err, sizeof err);
    double l1 = engine_gradient(e2, fx->params, &ds, idx, 8, g1);
    double l2 = engine_gradient(e2, fx->params, &ds, idx, 8, g2);
    double l3 = engine_gradient(e1, fx->params, &ds, idx, 8, g3);
    assert_memory_equal(g1, g2, sizeof g1);
    assert_true(l1 == l2);
    assert_true(fabs(l1 - l3) < 1e-6);
    assert_true(relerr("1 vs 2 threads", g1, g3, MODEL_NPARAMS) < 1e-5);
    engine_destroy(&e1);
    engine_destroy(&e2);
}

/* engine_step (the SGD update split among the threads) gives the bits of
 * engine_gradient + model_sgd_step: loss, gradient, weights and momentum,
 * over 3 steps, with 1, 2 and 3 threads, on 8 images and on 2 (3 threads:
 * one slice empty). */
static void test_engine_step_matches_gradient_and_sgd(void **state)
{
    fixture_t *fx = *state;
    idx_dataset_t ds = s_fixture_ds(fx);
    static float wa[MODEL_NPARAMS], va[MODEL_NPARAMS], ga[MODEL_NPARAMS];
    static float wb[MODEL_NPARAMS], vb[MODEL_NPARAMS], gb[MODEL_NPARAMS];
    int idx[8] = {3, 1, 4, 0, 5, 2, 7, 6};
    for (int threads = 1; threads <= 3; threads++)
        for (int n = 8; n >= 2; n -= 6) {
            char err[256];
            engine_t *e = engine_new(models_find(MODELS_DEFAULT), threads, 8, err, sizeof err);
            assert_non_null(e);
            memcpy(wa, fx->params, sizeof wa);
            memcpy(wb, fx->params, sizeof wb);
            memset(va, 0, sizeof va);
            memset(vb, 0, sizeof vb);
            for (int step = 0; step < 3; step++) {
                double la = engine_gradient(e, wa, &ds, idx, n, ga);
                model_sgd_step(wa, va, ga, MODEL_NPARAMS, 0.01f, 0.9f);
                double lb = engine_step(e, wb, vb, &ds, idx, n, 0.01f, 0.9f, gb);
                assert_true(la == lb);
                assert_memory_equal(ga, gb, sizeof ga);
                assert_memory_equal(wa, wb, sizeof wa);
                assert_memory_equal(va, vb, sizeof va);
            }
            engine_destroy(&e);
        }
}

/* What the ready callback saw: the ranges in order and, for each, whether
 * grad[lo, hi) was already final, whether the conv ranges were still
 * untouched (NaN), and (1 thread, profiling) conv2's backward time so far. */
typedef struct {
    engine_t *e;
    const float *grad, *final; /* the gradient being made, the expected one */
    int calls;
    size_t lo[8], hi[8];
    int final_ok[8], conv_untouched[8];
    double conv2_dw[8], fc_b[8], loss[8];
} s_hook_log_t;

static void s_hook(void *arg, size_t lo, size_t hi, double loss)
{
    s_hook_log_t *log = arg;
    int k = log->calls++;
    if (k >= 8)
        return;
    log->loss[k] = loss;
    log->lo[k] = lo;
    log->hi[k] = hi;
    log->final_ok[k] = memcmp(log->grad + lo, log->final + lo, (hi - lo) * sizeof(float)) == 0;
    int untouched = 1;
    for (size_t i = 0; i < MODEL_FC1_W; i++)
        untouched &= isnan(log->grad[i]);
    log->conv_untouched[k] = untouched;
    double prof[MODEL_PROF_N];
    engine_profile_read(log->e, prof);
    log->conv2_dw[k] = prof[MODEL_PROF_CONV2_DW];
    log->fc_b[k] = prof[MODEL_PROF_FC_B];
}

/* engine_gradient_hooked: the bits of engine_gradient; the callback gets
 * fc2, fc1, conv2, conv1, covering the parameters once, each range final
 * when handed out; fc2's and fc1's before any conv gradient was written
 * (thread 0 writes its conv gradients straight into the output) and, with 1
 * thread, before conv2's backward had run (its profile time still 0). */
static void test_engine_gradient_hooked(void **state)
{
    fixture_t *fx = *state;
    idx_dataset_t ds = s_fixture_ds(fx);
    static float ref[MODEL_NPARAMS], g[MODEL_NPARAMS];
    int idx[8] = {3, 1, 4, 0, 5, 2, 7, 6};
    const size_t want[4][2] = {{MODEL_FC2_W, MODEL_NPARAMS},
                               {MODEL_FC1_W, MODEL_FC2_W},
                               {MODEL_CONV2_W, MODEL_FC1_W},
                               {0, MODEL_CONV2_W}};
    for (int threads = 1; threads <= 3; threads++) {
        char err[256];
        engine_t *e = engine_new(models_find(MODELS_DEFAULT), threads, 8, err, sizeof err);
        assert_non_null(e);
        double lref = engine_gradient(e, fx->params, &ds, idx, 8, ref);
        for (size_t i = 0; i < MODEL_NPARAMS; i++)
            g[i] = NAN;
        s_hook_log_t log = {.e = e, .grad = g, .final = ref};
        if (threads == 1)
            engine_profile(e, 1);
        double l = engine_gradient_hooked(e, fx->params, &ds, idx, 8, g, s_hook, &log);
        engine_profile(e, 0);
        assert_true(l == lref);
        for (int k = 0; k < 4; k++)
            assert_true(log.loss[k] == lref); /* the loss from the first range on */
        assert_memory_equal(g, ref, sizeof g);
        assert_int_equal(log.calls, 4);
        for (int k = 0; k < 4; k++) {
            assert_int_equal(log.lo[k], want[k][0]);
            assert_int_equal(log.hi[k], want[k][1]);
            assert_true(log.final_ok[k]);
        }
        assert_true(log.conv_untouched[0] && log.conv_untouched[1]);
        assert_false(log.conv_untouched[2]);
        if (threads == 1) {
            assert_true(log.fc_b[0] > 0.0 && log.conv2_dw[0] == 0.0 && log.conv2_dw[1] == 0.0);
            assert_true(log.conv2_dw[2] > 0.0);
        }
        engine_destroy(&e);
    }
}

static void test_init_bounds(void **state)
{
    (void)state;
    static float w[MODEL_NPARAMS], w2[MODEL_NPARAMS];
    model_init(w, 7);
    model_init(w2, 7);
    assert_memory_equal(w, w2, sizeof w);
    for (int t = 0; t < MODEL_NTENSORS; t++) {
        const model_tensor_t *mt = &model_tensors[t];
        float bound = 1.0f / sqrtf((float)mt->fan_in), lo = 1e9f, hi = -1e9f;
        double mean = 0.0;
        for (size_t i = 0; i < mt->numel; i++) {
            float x = w[mt->offset + i];
            lo = fminf(lo, x);
            hi = fmaxf(hi, x);
            mean += x;
        }
        mean /= (double)mt->numel;
        assert_true(lo >= -bound && hi < bound);
        if (mt->numel >= 1000) { /* uniform: spans the range, mean near 0 */
            assert_true(lo < -0.95f * bound && hi > 0.95f * bound);
            assert_true(fabs(mean) < 0.05 * bound);
        }
    }
    assert_int_equal(MODEL_NPARAMS, 225034);
}

static void test_sgd_semantics(void **state)
{
    (void)state;
    float w[2] = {1.0f, -2.0f}, v[2] = {0, 0}, g[2] = {0.5f, 1.0f};
    model_sgd_step(w, v, g, 2, 0.1f, 0.9f); /* v = g; w -= lr v */
    assert_float_equal(v[0], 0.5f, 1e-7);
    assert_float_equal(w[0], 0.95f, 1e-7);
    model_sgd_step(w, v, g, 2, 0.1f, 0.9f); /* v = 0.9*0.5 + 0.5 = 0.95 */
    assert_float_equal(v[0], 0.95f, 1e-7);
    assert_float_equal(w[0], 0.855f, 1e-6);
    assert_float_equal(w[1], -2.0f - 0.1f - 0.19f, 1e-6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_pytorch),
        cmocka_unit_test(test_gradients_match_pytorch),
        cmocka_unit_test(test_two_sgd_steps_match_pytorch),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_engine_deterministic),
        cmocka_unit_test(test_engine_step_matches_gradient_and_sgd),
        cmocka_unit_test(test_engine_gradient_hooked),
        cmocka_unit_test(test_init_bounds),
        cmocka_unit_test(test_sgd_semantics),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
