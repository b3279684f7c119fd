/* test_group_attack: the server group (issue 11) met by an unlucky crash
 * or restart. The test plays the head itself (a ROUTER socket and
 * hand-built ShardWelcome / Membership messages) against a real
 * `paramserver --shard 1` process, and a worker against that shard:
 *   - a shard (re)started after the group once returned to an older version
 *     (Membership.rollbacks > 0) serves, instead of trying to reload that
 *     old version from its checkpoint and stopping;
 *   - after the head restarted (it answers a ping with ERROR_UNKNOWN_WORKER
 *     and numbers its tables from 1 again), the shard takes the new head's
 *     tables and serves the workers it names;
 *   - a recipe (ShardWelcome) with --staleness out of range is refused;
 *   - the head's table arriving between two parts of a push: the worker
 *     is told to retry, not refused;
 *   - a shard resumed from a checkpoint of another run is refused;
 *   - the head's Ack to the first sending of the final weights, coming
 *     after a resend, ends the shard's run.
 * and, in-process (the server's units linked in, server/state.h):
 *   - a group server's checkpoint write that fails leaves the checkpoint
 *     it had in place (--resume reads it), not only its .prev.
 * Every wait has a deadline. Needs the programs in $BUILD (default build). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "checkpoint.h"
#include "clock.h"
#include "fs.h"
#include "model.h"
#include "proc.h"
#include "state.h"
#include "tmpdir.h"
#include "wire.h"

/* A fake head and the real shard connected to it. */
typedef struct {
    void *ctx, *head;
    char ep[256], log[400], shard_ep[256], ckpt[400];
    wire_peer_t peer; /* the shard's connection */
    pid_t pid;
    /* what the fake head says: its run, its version, its --checkpoint-every */
    int64_t run_id;
    uint64_t version;
    uint32_t checkpoint_every;
    int over; /* its tables say the run is over */
} fake_t;

/* Waits up to `seconds` for a message of `kind` from the shard (others,
 * such as its pings, are dropped). 0 with *m filled, else -1. */
static int s_expect(fake_t *f, int kind, double seconds, wire_msg_t *m)
{
    for (double end = clock_now() + seconds; clock_now() < end;) {
        zmq_pollitem_t item = {f->head, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 100) != 1)
            continue;
        char err[256];
        if (wire_recv(f->head, &f->peer, m, MODEL_NPARAMS, err, sizeof err) != 0)
            continue;
        if ((int)m->env->body_case == kind)
            return 0;
        wire_msg_close(m);
    }
    return -1;
}

static void s_send(fake_t *f, Ps__Envelope *env)
{
    assert_true(wire_send(f->head, &f->peer, env, NULL, 0) > 0);
}

/* Sends the head's recipe (its run and version from f) as the answer to
 * `request`, with the given --staleness. */
static void s_send_welcome(fake_t *f, uint64_t request, uint32_t staleness)
{
    Ps__ShardWelcome w = PS__SHARD_WELCOME__INIT;
    w.shard = 1;
    w.shards = 2;
    w.lo = MODEL_NPARAMS / 2;
    w.hi = MODEL_NPARAMS;
    w.model = "simpleconvnet";
    w.params = MODEL_NPARAMS;
    w.run_id = f->run_id;
    w.version = f->version;
    w.checkpoint_every = f->checkpoint_every;
    w.mode = "ssp";
    w.staleness = staleness;
    w.workers = 1;
    w.epochs = 1;
    w.batch_size = 64;
    w.lr = 0.01;
    w.momentum = 0.9;
    w.train_limit = 1000;
    w.dataset = "mnist";
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_WELCOME;
    env.shard_welcome = &w;
    env.request_id = request;
    s_send(f, &env);
}

/* Answers the shard's first ShardJoin with a recipe, then its ready join
 * with an Ack; the shard's endpoint into f. */
static void s_welcome_shard(fake_t *f)
{
    wire_msg_t m;
    assert_int_equal(s_expect(f, PS__ENVELOPE__BODY_SHARD_JOIN, 30 * proc_time_scale(), &m), 0);
    assert_string_equal(m.env->shard_join->endpoint, "");
    s_send_welcome(f, m.env->request_id, 2);
    wire_msg_close(&m);
    assert_int_equal(s_expect(f, PS__ENVELOPE__BODY_SHARD_JOIN, 30, &m), 0);
    snprintf(f->shard_ep, sizeof f->shard_ep, "%s", m.env->shard_join->endpoint);
    assert_true(f->shard_ep[0] != '\0');
    Ps__Ack ack = PS__ACK__INIT;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    env.request_id = m.env->request_id;
    wire_msg_close(&m);
    s_send(f, &env);
}

/* Starts the shard (again, with --resume), checkpointing into f->ckpt
 * when the head's recipe asks to. */
static void s_spawn(fake_t *f, int resume)
{
    const char *argv[] = {proc_env.server,
                          "--shard",
                          "1",
                          "--head",
                          f->ep,
                          "--bind",
                          "tcp://127.0.0.1:*",
                          "--checkpoint",
                          f->ckpt,
                          "--checkpoint-every",
                          "1",
                          resume ? "--resume" : NULL,
                          NULL};
    f->pid = proc_spawn(f->log, argv);
}

/* Binds the fake head (run 1, version 0, no checkpoints) and starts the
 * shard (not welcomed yet). */
static void s_start(fake_t *f, const char *name)
{
    memset(f, 0, sizeof *f);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/%s", proc_env.tmp, name);
    fs_mkdirs(dir);
    snprintf(f->log, sizeof f->log, "%s/shard1.log", dir);
    snprintf(f->ckpt, sizeof f->ckpt, "%s/checkpoint-shard1.safetensors", dir);
    f->run_id = 1;
    f->ctx = zmq_ctx_new();
    f->head = zmq_socket(f->ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(f->head, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_bind(f->head, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof f->ep;
    assert_int_equal(zmq_getsockopt(f->head, ZMQ_LAST_ENDPOINT, f->ep, &len), 0);
    s_spawn(f, 0);
}

static void s_stop(fake_t *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        proc_wait(f->pid, 10);
    }
    zmq_close(f->head);
    zmq_ctx_term(f->ctx);
}

/* The head's table: worker 0 active with `token` and `incarnation`. */
static void s_membership(fake_t *f, uint64_t seq, uint32_t rollbacks, uint64_t rollback_version,
                         uint64_t token, uint32_t incarnation)
{
    Ps__Member mb = PS__MEMBER__INIT, *ptrs[1] = {&mb};
    mb.id = 0;
    mb.incarnation = incarnation;
    mb.active = 1;
    mb.token = token;
    mb.key = "";
    Ps__Membership ms = PS__MEMBERSHIP__INIT;
    ms.seq = seq;
    ms.started = 1;
    ms.rollbacks = rollbacks;
    ms.rollback_version = rollback_version;
    ms.run_id = f->run_id;
    ms.over = f->over;
    ms.n_members = 1;
    ms.members = ptrs;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_MEMBERSHIP;
    env.membership = &ms;
    s_send(f, &env);
}

/* Worker 0 pulls from the shard with `token`, retrying while the shard
 * says ERROR_RETRY (the head's table on its way), for up to 10 s. The
 * reply's kind, or -1 when none came. */
static int s_pull(fake_t *f, uint64_t token)
{
    void *sock = proc_dealer(f->ctx, f->shard_ep);
    int kind = -1;
    char last[300] = "";
    for (double end = clock_now() + 10; clock_now() < end; usleep(100000)) {
        Ps__Pull pull = PS__PULL__INIT;
        pull.worker_id = 0;
        pull.token = token;
        Ps__Envelope env = PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_PULL;
        env.pull = &pull;
        env.request_id = 1;
        assert_true(wire_send(sock, NULL, &env, NULL, 0) > 0);
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        wire_msg_t m;
        char err[256];
        if (zmq_poll(&item, 1, 2000) != 1 ||
            wire_recv(sock, NULL, &m, MODEL_NPARAMS, err, sizeof err) != 0) {
            kind = -1;
            continue;
        }
        kind = m.env->body_case;
        int retry =
            kind == PS__ENVELOPE__BODY_ERROR && m.env->error->code == PS__ERROR_CODE__ERROR_RETRY;
        if (kind == PS__ENVELOPE__BODY_ERROR)
            snprintf(last, sizeof last, "%s", m.env->error->message);
        wire_msg_close(&m);
        if (!retry)
            break;
    }
    zmq_close(sock);
    if (kind != PS__ENVELOPE__BODY_WEIGHTS)
        printf("    the shard's last answer: %s\n", last[0] ? last : "none");
    return kind;
}

/* Expects worker 0 with `token` to be served by the shard (its log shown
 * if not). */
static void s_served(fake_t *f, uint64_t token, const char *what)
{
    int kind = s_pull(f, token);
    if (kind != PS__ENVELOPE__BODY_WEIGHTS)
        proc_cat(f->log);
    assert_int_equal(kind, PS__ENVELOPE__BODY_WEIGHTS);
    printf("  %s\n", what);
}

/* A shard started while the group has already returned to an older version
 * once (Membership.rollbacks = 1, say at version 7): that return happened
 * before this shard process existed. It serves at the head's version; it
 * must not try to reload version 7 from its checkpoint (it has none, and a
 * shard restarted at the head's version would go back behind the group). */
static void test_shard_started_after_a_rollback_serves(void **state)
{
    (void)state;
    fake_t f;
    s_start(&f, "after_rollback");
    s_welcome_shard(&f);
    s_membership(&f, 5, 1, 7, 0x1234, 1);
    s_served(&f, 0x1234, "a shard joining a group with one return behind it serves");
    s_stop(&f);
}

/* The head restarts (--resume) while the shard runs: the new head does not
 * know the shard's connection (ERROR_UNKNOWN_WORKER), welcomes it again and
 * numbers its membership tables from 1 again. The shard takes them: the
 * worker the new head names (a new token) is served. */
static void test_shard_follows_a_restarted_head(void **state)
{
    (void)state;
    fake_t f;
    s_start(&f, "head_restart");
    s_welcome_shard(&f);
    s_membership(&f, 10, 0, 0, 0x1111, 1);
    s_served(&f, 0x1111, "the shard serves the worker the head names");
    /* the restarted head answers the next ping: who are you? */
    wire_msg_t m;
    assert_int_equal(s_expect(&f, PS__ENVELOPE__BODY_SHARD_PING, 10, &m), 0);
    Ps__Error e = PS__ERROR__INIT;
    e.code = PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
    e.message = "ping from shard 1, which has not joined from this connection";
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_ERROR;
    env.error = &e;
    env.request_id = m.env->request_id;
    wire_msg_close(&m);
    s_send(&f, &env);
    s_welcome_shard(&f);
    s_membership(&f, 1, 0, 0, 0x2222, 2);
    s_served(&f, 0x2222, "the shard serves the worker the restarted head names");
    s_stop(&f);
}

/* Sends part `part` of 2 of step 1's gradient (worker 0, incarnation 1,
 * `token`) to the shard and returns the reply's kind (-1: none within 300
 * ms; the first part is not answered), its Error code into *code. */
static int s_push_part(void *sock, uint64_t token, uint32_t part, int *code)
{
    static float g[MODEL_NPARAMS];
    const uint32_t lo = MODEL_NPARAMS / 2, cut = MODEL_NPARAMS - 1000;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = 0;
    p.token = token;
    p.incarnation = 1;
    p.step = 1;
    p.epoch = 1;
    p.loss = 1.0f;
    p.part = part;
    p.parts = 2;
    p.offset = part == 0 ? cut : lo;
    p.count = part == 0 ? MODEL_NPARAMS - cut : cut - lo;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = 7;
    zmq_msg_t t;
    assert_int_equal(wire_tensor_encode_n(&t, g + p.offset, p.count, 0, NULL), 0);
    assert_true(wire_send_msg(sock, NULL, &env, &t, 0) > 0);
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    wire_msg_t m;
    char err[256];
    *code = -1;
    if (zmq_poll(&item, 1, 300) != 1 ||
        wire_recv(sock, NULL, &m, MODEL_NPARAMS, err, sizeof err) != 0)
        return -1;
    int kind = m.env->body_case;
    if (kind == PS__ENVELOPE__BODY_ERROR) {
        *code = (int)m.env->error->code;
        printf("    part %u: %s\n", part, m.env->error->message);
    }
    wire_msg_close(&m);
    return kind;
}

/* The head's table reaches the shard between two parts of a worker's push:
 * the first part was refused with ERROR_RETRY (the worker unknown yet), so
 * the second arrives without it. It must be answered ERROR_RETRY too (the
 * worker resends the whole step, which is then applied once), not
 * ERROR_STATE, which stops the worker. */
static void test_table_between_parts_retried(void **state)
{
    (void)state;
    fake_t f;
    s_start(&f, "between_parts");
    s_welcome_shard(&f);
    void *sock = proc_dealer(f.ctx, f.shard_ep);
    int code;
    assert_int_equal(s_push_part(sock, 0x77, 0, &code), PS__ENVELOPE__BODY_ERROR);
    assert_int_equal(code, PS__ERROR_CODE__ERROR_RETRY);
    s_membership(&f, 1, 0, 0, 0x77, 1);
    s_served(&f, 0x77, "the table reached the shard");
    assert_int_equal(s_push_part(sock, 0x77, 1, &code), PS__ENVELOPE__BODY_ERROR);
    assert_int_equal(code, PS__ERROR_CODE__ERROR_RETRY);
    assert_int_equal(s_push_part(sock, 0x77, 0, &code), -1);
    assert_int_equal(s_push_part(sock, 0x77, 1, &code), PS__ENVELOPE__BODY_WEIGHTS);
    printf("  the whole step, resent, is applied\n");
    zmq_close(sock);
    s_stop(&f);
}

/* A shard checkpoints in run 5 and is killed; restarted with --resume
 * against a head that runs another run (6) at the same version, it must
 * refuse: its range's weights are another run's. Against the head of run
 * 5 it serves. */
static void test_resume_from_another_run_refused(void **state)
{
    (void)state;
    fake_t f;
    s_start(&f, "other_run");
    f.run_id = 5;
    f.checkpoint_every = 1;
    s_welcome_shard(&f);
    s_membership(&f, 1, 0, 0, 0x55, 1);
    void *sock = proc_dealer(f.ctx, f.shard_ep);
    int code, kind = -1;
    for (double end = clock_now() + 10; clock_now() < end && kind != PS__ENVELOPE__BODY_WEIGHTS;) {
        s_push_part(sock, 0x55, 0, &code); /* retried until the shard knows worker 0 */
        kind = s_push_part(sock, 0x55, 1, &code);
    }
    assert_int_equal(kind, PS__ENVELOPE__BODY_WEIGHTS);
    zmq_close(sock);
    for (double end = clock_now() + 10; clock_now() < end && access(f.ckpt, F_OK) != 0;)
        usleep(20000);
    assert_int_equal(access(f.ckpt, F_OK), 0);
    kill(f.pid, SIGKILL);
    proc_wait(f.pid, 10);
    printf("  shard checkpointed version 1 of run 5 and was killed\n");
    f.run_id = 6;
    f.version = 1;
    s_spawn(&f, 1);
    wire_msg_t m;
    assert_int_equal(s_expect(&f, PS__ENVELOPE__BODY_SHARD_JOIN, 30 * proc_time_scale(), &m), 0);
    s_send_welcome(&f, m.env->request_id, 2);
    wire_msg_close(&m);
    int status = proc_wait(f.pid, 10);
    proc_cat(f.log);
    assert_int_not_equal(status, 0);
    assert_true(proc_contains(f.log, "is of run 5, not the head's run 6"));
    printf("  resumed against run 6: refused\n");
    f.run_id = 5;
    s_spawn(&f, 1);
    s_welcome_shard(&f);
    printf("  resumed against run 5: ready at %s\n", f.shard_ep);
    s_stop(&f);
}

/* The run is over: the shard sends its final weights, resent every second
 * until the head's Ack. The head is slow: its Ack to the first sending
 * comes after the second. The shard takes it (the head has the weights)
 * and exits 0, instead of waiting for an Ack to the latest sending until
 * it gives up. */
static void test_late_final_ack_taken(void **state)
{
    (void)state;
    fake_t f;
    s_start(&f, "late_ack");
    s_welcome_shard(&f);
    f.over = 1;
    s_membership(&f, 1, 0, 0, 0x99, 1);
    wire_msg_t m;
    assert_int_equal(s_expect(&f, PS__ENVELOPE__BODY_SHARD_FINAL, 10, &m), 0);
    uint64_t first = m.env->request_id;
    wire_msg_close(&m);
    assert_int_equal(s_expect(&f, PS__ENVELOPE__BODY_SHARD_FINAL, 10, &m), 0);
    assert_true(m.env->request_id > first);
    wire_msg_close(&m);
    Ps__Ack ack = PS__ACK__INIT;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    env.request_id = first;
    s_send(&f, &env);
    int status = proc_wait(f.pid, 5);
    if (status != 0)
        proc_cat(f.log);
    assert_int_equal(status, 0);
    printf("  the shard took the Ack to its first sending and exited 0\n");
    f.pid = 0;
    s_stop(&f);
}

/* A recipe whose --staleness is out of range (2^32 - 1, which as an int is
 * -1: an ssp bound no worker could ever meet) is refused by the shard,
 * which stops naming it, instead of serving a run that would hang. */
static void test_shard_refuses_a_bad_recipe(void **state)
{
    (void)state;
    fake_t f;
    s_start(&f, "bad_recipe");
    wire_msg_t m;
    assert_int_equal(s_expect(&f, PS__ENVELOPE__BODY_SHARD_JOIN, 30 * proc_time_scale(), &m), 0);
    s_send_welcome(&f, m.env->request_id, UINT32_MAX);
    wire_msg_close(&m);
    int status = proc_wait(f.pid, 10);
    proc_cat(f.log);
    assert_int_not_equal(status, 0);
    assert_true(proc_contains(f.log, "staleness"));
    f.pid = 0;
    s_stop(&f);
}

/* The in-process server of the checkpoint case, destroyed by the teardown
 * also when an assertion failed, and its options (which must outlive it). */
static server_t *s_srv;
static server_opts_t s_o;
static char s_ckpt[200];

static int s_ckpt_setup(void **state)
{
    return tmpdir_setup(state, "test_group_attack", "m.db");
}

static int s_ckpt_teardown(void **state)
{
    server_destroy(&s_srv);
    return tmpdir_teardown(state);
}

/* A server of a group (--shards 2) checkpoints at version 10, then 20
 * (10 kept as .prev); the write at version 30 fails (its temporary file's
 * name is taken by a directory, as a full disk would fail it). The
 * checkpoint of version 20 must still be where --resume reads it. */
static void test_failed_checkpoint_keeps_the_last(void **state)
{
    const tmpdir_t *t = *state;
    snprintf(s_ckpt, sizeof s_ckpt, "%s/ckpt.safetensors", t->dir);
    s_o = (server_opts_t){.bind = "tcp://127.0.0.1:*",
                          .dataset = "mnist",
                          .db = t->path,
                          .out_dir = t->dir,
                          .checkpoint = s_ckpt,
                          .mode = MODE_SYNC,
                          .shards = 2,
                          .workers = 1,
                          .epochs = 1,
                          .batch_size = 64,
                          .train_limit = 1000,
                          .threads = 1,
                          .lr = 0.01,
                          .momentum = 0.9,
                          .register_timeout = 1e9,
                          .worker_timeout = 1e9,
                          .checkpoint_every = 10};
    server_t *s = s_srv = server_new(&s_o);
    assert_non_null(s);
    metrics_run_info_t info = {.mode = "sync", .workers = 1, .epochs = 1, .batch_size = 64};
    s->run = metrics_run_begin(s->db, &info); /* a checkpoint names its run */
    assert_true(s->run > 0);
    s->started = 1;
    s->version = 10;
    assert_int_equal(ckpt_write(s), 0);
    s->version = 20;
    assert_int_equal(ckpt_write(s), 0);
    char blocker[300];
    snprintf(blocker, sizeof blocker, "%s.tmp.%ld", s_ckpt, (long)getpid());
    assert_int_equal(mkdir(blocker, 0700), 0);
    s->version = 30;
    assert_int_not_equal(ckpt_write(s), 0);
    printf("  the write at version 30 failed, as arranged\n");
    assert_int_equal(access(s_ckpt, F_OK), 0);
    char err[900];
    s->version = 30;
    int rc = ckpt_rollback(s, 20, err, sizeof err);
    if (rc != 0)
        printf("  %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(s->version, 20);
    printf("  %s still holds version 20\n", s_ckpt);
}

int main(void)
{
    wire_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_started_after_a_rollback_serves),
        cmocka_unit_test(test_shard_follows_a_restarted_head),
        cmocka_unit_test(test_shard_refuses_a_bad_recipe),
        cmocka_unit_test(test_table_between_parts_retried),
        cmocka_unit_test(test_resume_from_another_run_refused),
        cmocka_unit_test(test_late_final_ack_taken),
        cmocka_unit_test_setup_teardown(test_failed_checkpoint_keeps_the_last, s_ckpt_setup,
                                        s_ckpt_teardown),
    };
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, proc_group_setup, proc_group_teardown);
}
