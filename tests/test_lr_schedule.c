/* test_lr_schedule: the learning-rate schedule (server/consistency.c,
 * cons_lr and cons_updates_per_epoch): --lr-scaling none keeps --lr at every
 * update; linear in sync mode ramps from --lr to --lr x workers over
 * --warmup-epochs x updates per epoch, per update, then stays there; the
 * other modes average nothing and keep --lr. The schedule depends only on
 * the recipe and the version, so a resumed server (whose version comes back
 * from the checkpoint: test_checkpoint) continues it where it was. And a
 * sync server (in-process, no data, its state set through state.h as
 * test_checkpoint does) applies it: its weights after four rounds equal four
 * SGD steps at the schedule's lrs, bit for bit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "consistency.h"
#include "model.h"
#include "state.h"
#include "tmpdir.h"

static server_opts_t s_opts(server_mode_t mode, lr_scaling_t scaling, int workers, double warmup)
{
    return (server_opts_t){.mode = mode,
                           .workers = workers,
                           .batch_size = 64,
                           .lr = 0.01,
                           .lr_scaling = scaling,
                           .warmup_epochs = warmup};
}

static void test_none_keeps_lr(void **state)
{
    (void)state;
    server_opts_t o = s_opts(MODE_SYNC, LR_SCALING_NONE, 4, 1);
    const uint64_t versions[] = {0, 1, 469, 100000, UINT64_MAX};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++)
        assert_true(cons_lr(&o, versions[i], 4, 469) == 0.01);
}

static void test_linear_ramp(void **state)
{
    (void)state;
    server_opts_t o = s_opts(MODE_SYNC, LR_SCALING_LINEAR, 4, 2);
    /* 2 epochs of 100 updates: 0.01 at update 0, 0.025 half way, 0.04 from 200 on */
    assert_float_equal(cons_lr(&o, 0, 4, 100), 0.01, 1e-15);
    assert_float_equal(cons_lr(&o, 50, 4, 100), 0.0175, 1e-15);
    assert_float_equal(cons_lr(&o, 100, 4, 100), 0.025, 1e-15);
    assert_float_equal(cons_lr(&o, 199, 4, 100), 0.01 + 0.03 * 199 / 200, 1e-15);
    assert_true(cons_lr(&o, 200, 4, 100) == 0.04);
    assert_true(cons_lr(&o, 1000000, 4, 100) == 0.04);
    double prev = 0;
    for (uint64_t v = 0; v <= 300; v++) { /* never decreases, never overshoots */
        double lr = cons_lr(&o, v, 4, 100);
        assert_true(lr >= prev && lr <= 0.04);
        prev = lr;
    }
    o.warmup_epochs = 0; /* no warm-up: the scaled lr at once */
    assert_true(cons_lr(&o, 0, 4, 100) == 0.04);
    o.warmup_epochs = 0.5; /* a fraction of an epoch */
    assert_float_equal(cons_lr(&o, 25, 4, 100), 0.025, 1e-15);
    assert_true(cons_lr(&o, 50, 4, 100) == 0.04);
    assert_true(cons_lr(&o, 7, 1, 100) == 0.01); /* one worker: nothing to scale */
}

static void test_linear_only_in_sync(void **state)
{
    (void)state;
    const server_mode_t modes[] = {MODE_ASYNC, MODE_SSP, MODE_INDEPENDENT};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        server_opts_t o = s_opts(modes[i], LR_SCALING_LINEAR, 4, 1);
        assert_true(cons_lr(&o, 0, 4, 100) == 0.01);
        assert_true(cons_lr(&o, 5000, 4, 100) == 0.01);
    }
}

static void test_updates_per_epoch(void **state)
{
    (void)state;
    /* 60,000 images, 2 workers, batch 64: 30,000 each, 469 rounds (a sync
     * run of 5 epochs applies 2,345 updates) */
    server_opts_t o = s_opts(MODE_SYNC, LR_SCALING_LINEAR, 2, 1);
    assert_int_equal(cons_updates_per_epoch(&o, 60000), 469);
    /* 1,000 images, 3 workers: shards of 334, 333, 333: 6 batches each */
    o.workers = 3;
    assert_int_equal(cons_updates_per_epoch(&o, 1000), 6);
    o.mode = MODE_ASYNC; /* one update per batch of every shard */
    assert_int_equal(cons_updates_per_epoch(&o, 1000), 18);
    /* 130 images, 2 workers: 65 each, 2 batches of 64 */
    o.mode = MODE_SYNC;
    o.workers = 2;
    assert_int_equal(cons_updates_per_epoch(&o, 130), 2);
    assert_int_equal(cons_updates_per_epoch(&o, 128), 1);
}

static server_t *s_srv;   /* destroyed by the teardown also when an assertion failed */
static server_opts_t s_o; /* must outlive it */

static int s_setup(void **state)
{
    return tmpdir_setup(state, "test_lr_schedule", "m.db");
}

static int s_teardown(void **state)
{
    server_destroy(&s_srv);
    return tmpdir_teardown(state);
}

static void test_sync_server_applies_it(void **state)
{
    tmpdir_t *t = *state;
    s_o = s_opts(MODE_SYNC, LR_SCALING_LINEAR, 2, 1);
    s_o.bind = "inproc://test-lr-schedule";
    s_o.dataset = "mnist";
    s_o.db = t->path;
    s_o.out_dir = t->dir;
    s_o.checkpoint = "/dev/null";
    s_o.epochs = 1;
    s_o.train_limit = 256; /* 2 workers x 128 images: 2 rounds per epoch */
    s_o.threads = 1;
    s_o.momentum = 0.9;
    s_o.seed = 1;
    s_o.register_timeout = s_o.worker_timeout = 1e9;
    server_t *s = s_srv = server_new(&s_o);
    assert_non_null(s);
    s->started = 1;
    s->registered = s->active = 2;
    s->slots[0].active = s->slots[1].active = 1;
    static float g[MODEL_NPARAMS], w[MODEL_NPARAMS], v[MODEL_NPARAMS];
    model_init(g, 2); /* a gradient of the model's shape and scale */
    memcpy(w, s->w, sizeof w);
    const double want[] = {0.01, 0.015, 0.02, 0.02}; /* a ramp over 2 updates */
    for (int round = 0; round < 4; round++) {
        assert_float_equal(cons_lr(&s_o, s->version, 2, 2), want[round], 1e-15);
        for (int k = 0; k < 2; k++) {
            /* the round keeps g itself; the replies find no worker ("cannot
             * send weights" warnings) */
            cons_policy(MODE_SYNC)->on_push(s, &s->slots[k], g, s->version);
        }
        /* the round's average of g and g is g, exactly */
        model_sgd_step(w, v, g, MODEL_NPARAMS, (float)want[round], 0.9f);
    }
    assert_int_equal(s->version, 4);
    assert_memory_equal(s->w, w, sizeof w);
    assert_memory_equal(s->v, v, sizeof v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_none_keeps_lr),
        cmocka_unit_test(test_linear_ramp),
        cmocka_unit_test(test_linear_only_in_sync),
        cmocka_unit_test(test_updates_per_epoch),
        cmocka_unit_test_setup_teardown(test_sync_server_applies_it, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
