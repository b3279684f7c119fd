/* test_checkpoint: the server's checkpoint (server/checkpoint.c) written by
 * one server and read back by a new one with --resume: every counter, every
 * slot, the weights and the momentum come back exactly (a seed above 2^53,
 * a 100-byte UTF-8 name, a gradient held in an open sync round not counted
 * as applied), and a resume with other flags, or of another model, is
 * refused. The servers have
 * no data (as the fuzzer's) and listen in-process; the test sets their
 * state through server/state.h. Damaged files are test_hostile's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "checkpoint.h"
#include "clock.h"
#include "models.h"
#include "state.h"
#include "tmpdir.h"

/* The servers of a test, destroyed by the teardown also when an assertion
 * failed (a socket left open would hang the exit: czmq waits for it), and
 * their options, which must outlive them. */
static server_t *s_a, *s_b;
static server_opts_t s_oa, s_ob;
static char s_ckpt[200];

static int s_setup(void **state)
{
    return tmpdir_setup(state, "test_checkpoint", "m.db");
}

static int s_teardown(void **state)
{
    server_destroy(&s_a);
    server_destroy(&s_b);
    return tmpdir_teardown(state);
}

/* 100 bytes of printable UTF-8: past the 47 bytes a resume used to allow. */
static const char S_LONG_NAME[] = "w\xc3\xb6rker-0123456789012345678901234567890123456789"
                                  "0123456789012345678901234567890123456789012345678";

static server_opts_t s_opts(const tmpdir_t *t, const char *ep)
{
    snprintf(s_ckpt, sizeof s_ckpt, "%s/ckpt.safetensors", t->dir);
    return (server_opts_t){.bind = ep,
                           .data_dir = NULL,
                           .dataset = "mnist",
                           .db = t->path,
                           .out_dir = t->dir,
                           .checkpoint = s_ckpt,
                           .mode = MODE_SYNC,
                           .workers = 2,
                           .staleness = 3,
                           .epochs = 2,
                           .batch_size = 64,
                           .train_limit = 1000,
                           .threads = 1,
                           .lr = 0.01,
                           .momentum = 0.9,
                           .seed = UINT64_C(18446744073709551557),
                           .register_timeout = 1e9,
                           .worker_timeout = 1e9,
                           .checkpoint_every = 1};
}

/* A server in the middle of a run (s_a): counters, two slots (one done,
 * one with a gradient held in the open round), weights and momentum
 * changed. */
static server_t *s_running_server(const server_opts_t *o)
{
    server_t *s = s_a = server_new(o);
    assert_non_null(s);
    metrics_run_info_t info = {.mode = "sync", .workers = 2, .epochs = 2, .batch_size = 64};
    s->run = metrics_run_begin(s->db, &info);
    assert_true(s->run > 0);
    s->started = 1;
    s->t0 = clock_now() - 12.5;
    s->version = 12345;
    s->updates = 12000;
    s->stale_sum = 1.0 / 3.0;
    s->stale_max = 3;
    s->worker_train_max = 2.75;
    s->registered = 2;
    snprintf(s->slots[0].name, sizeof s->slots[0].name, "%s", S_LONG_NAME);
    snprintf(s->slots[0].host, sizeof s->slots[0].host, "host-a");
    s->slots[0].steps = 100;
    s->slots[0].done = 1;
    s->slots[0].incarnation = 2;
    s->slots[0].threads = 4;
    snprintf(s->slots[1].name, sizeof s->slots[1].name, "b");
    snprintf(s->slots[1].key, sizeof s->slots[1].key, "%040d", 7);
    s->slots[1].steps = 101;
    s->slots[1].round_g = s->w; /* step 101 waits in the open round */
    s->round_arrived = 1;
    s->slots[1].active = 1;
    s->active = 1;
    for (int i = 0; i < MODEL_NPARAMS; i += 997) {
        s->w[i] = (float)i * 1e-6f;
        s->v[i] = -(float)i * 3e-7f;
    }
    return s;
}

static void test_checkpoint_round_trip(void **state)
{
    tmpdir_t *t = *state;
    s_oa = s_opts(t, "inproc://test-ckpt-a");
    server_t *a = s_running_server(&s_oa);
    assert_int_equal(ckpt_write(a), 0);
    static float w[MODEL_NPARAMS], v[MODEL_NPARAMS];
    memcpy(w, a->w, sizeof w);
    memcpy(v, a->v, sizeof v);
    int64_t run = a->run;
    a->slots[1].round_g = NULL;
    a->round_arrived = 0;
    server_destroy(&s_a);

    s_ob = s_opts(t, "inproc://test-ckpt-b");
    s_ob.resume = 1;
    server_t *b = s_b = server_new(&s_ob);
    assert_non_null(b);
    assert_int_equal(b->run, run);
    assert_true(b->version == 12345);
    assert_int_equal(b->updates, 12000);
    assert_true(b->stale_sum == 1.0 / 3.0); /* exactly: %.17g */
    assert_int_equal(b->stale_max, 3);
    assert_true(b->worker_train_max == 2.75);
    assert_true(b->started && b->registered == 2);
    assert_true(srv_elapsed(b) >= 12.5 && srv_elapsed(b) < 60);
    assert_string_equal(b->slots[0].name, S_LONG_NAME);
    assert_string_equal(b->slots[0].host, "host-a");
    assert_true(b->slots[0].steps == 100 && b->slots[0].done && !b->slots[0].active);
    assert_int_equal(b->slots[0].incarnation, 2);
    assert_int_equal(b->slots[0].threads, 4);
    assert_string_equal(b->slots[1].name, "b");
    assert_string_equal(b->slots[1].key, "0000000000000000000000000000000000000007");
    assert_true(b->slots[1].steps == 100); /* the held step 101 was not applied */
    assert_true(b->slots[1].active && b->active == 1);
    assert_int_equal(b->slots[1].shard, 500);
    assert_memory_equal(b->w, w, sizeof w);
    assert_memory_equal(b->v, v, sizeof v);
    assert_null(server_invariant_problem(b));
}

/* A running server on ep writes its checkpoint (nothing held in the open
 * round) and goes. */
static void s_checkpoint_written(const tmpdir_t *t, const char *ep)
{
    s_oa = s_opts(t, ep);
    server_t *a = s_running_server(&s_oa);
    a->slots[1].round_g = NULL;
    a->round_arrived = 0;
    assert_int_equal(ckpt_write(a), 0);
    server_destroy(&s_a);
}

/* A resume whose flags differ from the checkpoint's recipe in one value
 * (the seed by one, beyond a double's precision; the learning rate) is
 * refused; the same flags resume. */
static void test_resume_needs_the_same_flags(void **state)
{
    tmpdir_t *t = *state;
    s_checkpoint_written(t, "inproc://test-ckpt-c");
    for (int k = 0; k < 6; k++) {
        static const char *const ep[] = {"inproc://test-ckpt-d0", "inproc://test-ckpt-d1",
                                         "inproc://test-ckpt-d2", "inproc://test-ckpt-d3",
                                         "inproc://test-ckpt-d4", "inproc://test-ckpt-d5"};
        s_ob = s_opts(t, ep[k]);
        s_ob.resume = 1;
        if (k == 0)
            s_ob.seed -= 1;
        else if (k == 1)
            s_ob.lr = 0.02;
        else if (k == 2) /* the lr schedule and the data set are part of the recipe */
            s_ob.lr_scaling = LR_SCALING_LINEAR;
        else if (k == 3)
            s_ob.warmup_epochs = 3;
        else if (k == 4)
            s_ob.dataset = "fashion-mnist";
        s_b = server_new(&s_ob);
        if (k < 5)
            assert_null(s_b);
        else
            assert_non_null(s_b);
        server_destroy(&s_b);
    }
}

/* A checkpoint of one model (SimpleConvNet) is refused by a server of
 * another (lenet5), before its tensors are read, naming both models and the
 * flag to give. */
static void test_resume_with_another_model_refused(void **state)
{
    tmpdir_t *t = *state;
    s_checkpoint_written(t, "inproc://test-ckpt-e");

    s_ob = s_opts(t, "inproc://test-ckpt-f");
    s_ob.model = "lenet5";
    s_ob.resume = 1;
    assert_null(s_b = server_new(&s_ob)); /* what --resume --model lenet5 does */
    s_ob.resume = 0;
    server_t *b = s_b = server_new(&s_ob);
    assert_non_null(b);
    assert_int_equal(b->n, models_find("lenet5")->nparams);
    char err[600];
    assert_int_equal(ckpt_resume(b, err, sizeof err), -1);
    printf("  %s\n", err);
    assert_non_null(strstr(err, "it holds model simpleconvnet, and this server was started with "
                                "--model lenet5: give --model simpleconvnet with --resume"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_checkpoint_round_trip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_resume_needs_the_same_flags, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_resume_with_another_model_refused, s_setup,
                                        s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
