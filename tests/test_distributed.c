/* test_distributed: the paramserver and its workers as real processes on
 * loopback, each test with its own ephemeral port, database and output
 * directory, and a deadline instead of sleeps:
 *   - sync with 2 workers equals single-process training with batch 128 on
 *     the same data order (to float tolerance);
 *   - async and ssp runs with 2 workers learn (>= 95% on a subset);
 *   - shards with unequal batch counts finish in sync mode (no hang);
 *   - the database holds rows for every worker;
 *   - a client speaking another protocol version is refused with an Error,
 *     and a worker that gets a reply in another version exits with a message.
 * Needs MNIST in $MNIST_DIR (default data) and the programs in $BUILD
 * (default build). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "engine.h"
#include "fs.h"
#include "idx.h"
#include "model.h"
#include "modelfile.h"
#include "proc.h"
#include "shard.h"
#include "wire.h"

#define DEADLINE 120.0 /* seconds any one run may take, times proc_time_scale() */

typedef struct {
    const char *name, *mode, *compress; /* compress: NULL for none */
    const char *push_every;             /* NULL for 1 */
    int workers, epochs, batch, train_limit, test_limit, staleness;
    char dir[300], db[320], ep[256];
    int codes[9];
} run_t;

/* Runs a server and its workers to the end. 0 if everyone exited 0. */
static int s_run(run_t *r)
{
    snprintf(r->dir, sizeof r->dir, "%s/%s", proc_env.tmp, r->name);
    fs_mkdirs(r->dir);
    snprintf(r->db, sizeof r->db, "%s/m.db", r->dir);
    char workers[16], epochs[16], batch[16], train[16], test[16], stale[16], log[400];
    snprintf(workers, sizeof workers, "%d", r->workers);
    snprintf(epochs, sizeof epochs, "%d", r->epochs);
    snprintf(batch, sizeof batch, "%d", r->batch);
    snprintf(train, sizeof train, "%d", r->train_limit);
    snprintf(test, sizeof test, "%d", r->test_limit);
    snprintf(stale, sizeof stale, "%d", r->staleness);
    snprintf(log, sizeof log, "%s/server.log", r->dir);
    const char *sargv[] = {proc_env.server,
                           "--bind",
                           "tcp://127.0.0.1:*",
                           "--workers",
                           workers,
                           "--mode",
                           r->mode,
                           "--staleness",
                           stale,
                           "--epochs",
                           epochs,
                           "--batch-size",
                           batch,
                           "--train-limit",
                           train,
                           "--test-limit",
                           test,
                           "--data-dir",
                           proc_env.data,
                           "--db",
                           r->db,
                           "--out",
                           r->dir,
                           "--threads",
                           "1",
                           "--register-timeout",
                           "60",
                           NULL};
    pid_t pids[9];
    pids[0] = proc_spawn(log, sargv);
    if (proc_endpoint(pids[0], log, 0, r->ep, sizeof r->ep, 30) != 0) {
        kill(pids[0], SIGKILL);
        proc_cat(log);
        return -1;
    }
    for (int k = 0; k < r->workers; k++) {
        char wlog[400], name[16];
        snprintf(wlog, sizeof wlog, "%s/worker%d.log", r->dir, k);
        snprintf(name, sizeof name, "w%d", k);
        const char *wargv[] = {proc_env.worker,
                               "--server",
                               r->ep,
                               "--name",
                               name,
                               "--data-dir",
                               proc_env.data,
                               "--threads",
                               "1",
                               "--timeout",
                               "60",
                               "--compress",
                               r->compress ? r->compress : "none",
                               "--push-every",
                               r->push_every ? r->push_every : "1",
                               NULL};
        pids[k + 1] = proc_spawn(wlog, wargv);
    }
    int rc = proc_wait_all(pids, r->workers + 1, r->codes, DEADLINE * proc_time_scale());
    int ok = rc == 0;
    for (int i = 0; i <= r->workers; i++)
        ok = ok && r->codes[i] == 0;
    if (!ok) {
        fprintf(stderr, "run %s: %s; exit codes:", r->name, rc ? "DEADLINE PASSED" : "failed");
        for (int i = 0; i <= r->workers; i++)
            fprintf(stderr, " %d", r->codes[i]);
        fprintf(stderr, "\n");
        proc_cat(log);
        for (int k = 0; k < r->workers; k++) {
            char wlog[400];
            snprintf(wlog, sizeof wlog, "%s/worker%d.log", r->dir, k);
            proc_cat(wlog);
        }
    }
    return ok ? 0 : -1;
}

/* Every worker has its registration, all its epochs and its steps. */
static void s_check_db(run_t *r, int steps_each_min)
{
    char sql[256];
    assert_int_equal((int)proc_query(r->db, "select count(*) from runs where status = 'done'"), 1);
    for (int k = 0; k < r->workers; k++) {
        snprintf(sql, sizeof sql, "select count(*) from workers where worker_id = %d", k);
        assert_int_equal((int)proc_query(r->db, sql), 1);
        snprintf(sql, sizeof sql, "select count(*) from epochs where worker_id = %d", k);
        assert_int_equal((int)proc_query(r->db, sql), r->epochs);
        snprintf(sql, sizeof sql, "select count(*) from steps where worker_id = %d", k);
        assert_true((int)proc_query(r->db, sql) >= steps_each_min);
    }
    assert_true(proc_query(r->db, "select count(*) from server_stats") >= 1);
}

static double s_final_accuracy(run_t *r)
{
    return proc_query(r->db, "select final_accuracy from runs");
}

/* Sync with 2 workers, 64 images each per step, must be single-process
 * training on batches of 128 = worker 0's batch b followed by worker 1's:
 * 2 epochs of 3 steps (with the reshuffle between them) agree to ~1e-8.
 * Runs much longer than this drift apart by more than rounding suggests:
 * the mean of two 64-image means is not bit-equal to one 128-image mean,
 * and once such a difference flips a max-pool winner or a ReLU the two runs
 * follow slightly different (equally valid) paths. */
static void test_sync_equals_batch_128(void **state)
{
    (void)state;
    run_t r = {.name = "sync_equiv",
               .mode = "sync",
               .workers = 2,
               .epochs = 2,
               .batch = 64,
               .train_limit = 384,
               .test_limit = 100};
    const int half = r.train_limit / 2, steps = half / 64;
    assert_int_equal(s_run(&r), 0);
    s_check_db(&r, steps * r.epochs);

    static float dist[MODEL_NPARAMS], w[MODEL_NPARAMS], v[MODEL_NPARAMS], g[MODEL_NPARAMS];
    char path[400], err[512];
    snprintf(path, sizeof path, "%s/model_distributed.safetensors", r.dir);
    assert_int_equal(modelfile_load(path, models_find(MODELS_DEFAULT), "", dist, err, sizeof err),
                     0);

    idx_dataset_t train;
    assert_int_equal(idx_load(proc_env.data, "train", &train, err, sizeof err), 0);
    engine_t *e = engine_new(models_find(MODELS_DEFAULT), 1, 128, err, sizeof err);
    assert_non_null(e);
    model_init(w, 1);
    memset(v, 0, sizeof v);
    int shard[2][192], batch[128];
    rng_t rng[2];
    for (int k = 0; k < 2; k++) {
        assert_int_equal(shard_size(r.train_limit, 2, k), half);
        shard_indices(1, r.train_limit, 2, k, shard[k]);
        shard_epoch_rng(&rng[k], 1, k);
    }
    for (int epoch = 0; epoch < r.epochs; epoch++) {
        for (int k = 0; k < 2; k++)
            rng_shuffle(&rng[k], shard[k], half);
        for (int b = 0; b < steps; b++) {
            memcpy(batch, shard[0] + b * 64, 64 * sizeof(int));
            memcpy(batch + 64, shard[1] + b * 64, 64 * sizeof(int));
            engine_gradient(e, w, &train, batch, 128, g);
            model_sgd_step(w, v, g, MODEL_NPARAMS, 0.01f, 0.9f);
        }
    }
    double num = 0, den = 0, moved = 0;
    model_init(g, 1);
    for (int i = 0; i < MODEL_NPARAMS; i++) {
        num = fmax(num, fabs((double)dist[i] - w[i]));
        den = fmax(den, fabs((double)w[i]));
        moved = fmax(moved, fabs((double)w[i] - g[i]));
    }
    printf("  6 sync steps of 2 workers vs batch 128: max |diff| %.3g, max |w| %.3g, max "
           "|w - w0| %.3g\n",
           num, den, moved);
    assert_true(moved > 1e-3);      /* training changed the weights... */
    assert_true(num <= 1e-6 * den); /* ...and both ways agree to float tolerance */
    engine_destroy(&e);
    idx_free(&train);
}

static void test_async_learns(void **state)
{
    (void)state;
    run_t r = {.name = "async",
               .mode = "async",
               .workers = 2,
               .epochs = 2,
               .batch = 64,
               .train_limit = 20000,
               .test_limit = 10000};
    assert_int_equal(s_run(&r), 0);
    s_check_db(&r, 300);
    printf("  async, 2 workers, 20,000 images, 2 epochs: %.2f%%\n", s_final_accuracy(&r));
    assert_true(s_final_accuracy(&r) >= 95.0);
    /* Both workers pushed; every push was applied exactly once. */
    assert_int_equal((int)proc_query(r.db, "select max(updates_applied) from server_stats"),
                     (int)proc_query(r.db, "select count(*) from steps"));
}

static void test_ssp_learns(void **state)
{
    (void)state;
    run_t r = {.name = "ssp",
               .mode = "ssp",
               .workers = 2,
               .epochs = 2,
               .batch = 64,
               .train_limit = 20000,
               .test_limit = 10000,
               .staleness = 2};
    assert_int_equal(s_run(&r), 0);
    s_check_db(&r, 300);
    printf("  ssp (s=2), 2 workers, 20,000 images, 2 epochs: %.2f%%\n", s_final_accuracy(&r));
    assert_true(s_final_accuracy(&r) >= 95.0);
    /* While one worker computes a step on the weights it got, the other,
     * which may be from s behind to s ahead of it, can push at most 2s + 1
     * gradients: the staleness bound SSP guarantees for 2 workers. */
    double stale = proc_query(r.db, "select max(max_staleness) from server_stats");
    printf("  largest staleness applied: %.0f (bound 2s+1 = 5)\n", stale);
    assert_true(stale <= 2 * 2 + 1);
}

/* 129 images split between 2 workers in batches of 64: shards of 64 and 65
 * images, so 1 and 2 batches per epoch. In sync mode worker 0 finishes first
 * and must leave the barrier, or worker 1 would wait for it forever. */
static void test_unequal_shards_finish(void **state)
{
    (void)state;
    run_t r = {.name = "unequal",
               .mode = "sync",
               .workers = 2,
               .epochs = 3,
               .batch = 64,
               .train_limit = 129,
               .test_limit = 100};
    assert_int_equal(shard_size(129, 2, 0), 64);
    assert_int_equal(shard_size(129, 2, 1), 65);
    assert_int_equal(s_run(&r), 0);
    s_check_db(&r, 3);
    assert_int_equal((int)proc_query(r.db, "select count(*) from steps where worker_id = 0"), 3);
    assert_int_equal((int)proc_query(r.db, "select count(*) from steps where worker_id = 1"), 6);
}

/* A one-worker server of its own for a test that plays the worker itself:
 * in proc_env.tmp/NAME, mode MODE, listening on a free port written to ep. Its
 * database path goes to db. Returns the pid. */
static pid_t s_one_worker_server(const char *name, const char *mode, char *ep, size_t eplen,
                                 char *db, size_t dblen)
{
    char dir[300], log[400];
    snprintf(dir, sizeof dir, "%s/%s", proc_env.tmp, name);
    fs_mkdirs(dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    snprintf(db, dblen, "%s/m.db", dir);
    const char *sargv[] = {proc_env.server,
                           "--bind",
                           "tcp://127.0.0.1:*",
                           "--workers",
                           "1",
                           "--mode",
                           mode,
                           "--test-limit",
                           "10",
                           "--data-dir",
                           proc_env.data,
                           "--db",
                           db,
                           "--out",
                           dir,
                           "--register-timeout",
                           "20",
                           NULL};
    pid_t pid = proc_spawn(log, sargv);
    assert_int_equal(proc_endpoint(pid, log, 0, ep, eplen, 30), 0);
    return pid;
}

/* A client of another protocol version is refused with Error{VERSION}, and
 * the server goes on serving. */
static void test_version_mismatch_refused_by_server(void **state)
{
    (void)state;
    char ep[256], db[400];
    pid_t pid = s_one_worker_server("version", "sync", ep, sizeof ep, db, sizeof db);

    void *ctx = zmq_ctx_new(), *sock = proc_dealer(ctx, ep);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = "from-the-future";
    env.protocol = WIRE_PROTOCOL + 1;
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    uint8_t buf[256];
    size_t n = ps__envelope__pack(&env, buf);
    assert_int_equal(zmq_send(sock, buf, n, 0), (int)n);
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 10000), 1);
    wire_msg_t m;
    char err[256];
    assert_int_equal(wire_recv(sock, NULL, &m, MODEL_NPARAMS, err, sizeof err), 0);
    assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_ERROR);
    assert_int_equal(m.env->error->code, PS__ERROR_CODE__ERROR_VERSION);
    printf("  server answered: %s\n", m.env->error->message);
    assert_non_null(strstr(m.env->error->message, "protocol version mismatch"));
    wire_msg_close(&m);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    kill(pid, SIGTERM);
    assert_int_equal(proc_wait(pid, 20), 1); /* interrupted: the run is marked failed */
}

/* A fake server for a worker to talk to: a ROUTER on a free port, a worker
 * started against it (its log at log), and the worker's Register in *m. */
typedef struct {
    void *ctx, *sock;
    wire_peer_t peer;
    pid_t pid;
    char log[400];
} fake_t;

static void s_fake_start(fake_t *f, const char *name, wire_msg_t *m)
{
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    assert_int_equal(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
    char ep[256];
    size_t len = sizeof ep;
    zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, ep, &len);
    snprintf(f->log, sizeof f->log, "%s/worker_%s.log", proc_env.tmp, name);
    const char *wargv[] = {
        proc_env.worker,     "--server", ep,  "--data-dir", proc_env.data, "--timeout", "10",
        "--connect-timeout", "10",       NULL};
    f->pid = proc_spawn(f->log, wargv);
    zmq_pollitem_t item = {f->sock, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 10000), 1);
    char err[256];
    assert_int_equal(wire_recv(f->sock, &f->peer, m, MODEL_NPARAMS, err, sizeof err), 0);
    assert_int_equal(m->env->body_case, PS__ENVELOPE__BODY_REGISTER);
}

/* Waits for the fake's worker to exit; its status, its log in text. */
static int s_fake_end(fake_t *f, char *text, size_t textlen)
{
    int status = proc_wait(f->pid, 30);
    FILE *fp = fopen(f->log, "r");
    size_t got = fp ? fread(text, 1, textlen - 1, fp) : 0;
    text[got] = '\0';
    if (fp)
        fclose(fp);
    printf("  worker said: %s", strstr(text, "error") ? strstr(text, "error") : text);
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
    return status;
}

/* A worker whose server answers in another protocol version says so and
 * exits non-zero (a fake server that answers with protocol + 1). */
static void test_version_mismatch_refused_by_worker(void **state)
{
    (void)state;
    fake_t f;
    wire_msg_t m;
    s_fake_start(&f, "version", &m);
    wire_msg_close(&m);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Ack ack = PS__ACK__INIT;
    env.protocol = WIRE_PROTOCOL + 1;
    env.body_case = PS__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    uint8_t buf[64];
    size_t n = ps__envelope__pack(&env, buf);
    zmq_send(f.sock, f.peer.id, f.peer.len, ZMQ_SNDMORE);
    zmq_send(f.sock, buf, n, 0);
    char text[2048];
    assert_int_equal(s_fake_end(&f, text, sizeof text), 1);
    assert_non_null(strstr(text, "protocol version mismatch"));
}

/* A fake server answers a worker's Register with a Welcome of model
 * `model` and length `params`; the worker's exit status, its log in text. */
static int s_welcome_model(const char *name, const char *model, uint32_t params, char *text,
                           size_t textlen)
{
    fake_t f;
    wire_msg_t m;
    s_fake_start(&f, name, &m);
    assert_string_equal(m.env->register_->model, ""); /* no --model: the server's */
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Welcome w = PS__WELCOME__INIT;
    Ps__ShardRange r = PS__SHARD_RANGE__INIT, *rp = &r;
    r.endpoint = "";
    r.hi = params;
    w.workers = 1;
    w.epochs = 1;
    w.batch_size = 64;
    w.train_limit = 100;
    w.mode = "sync";
    w.dataset = "mnist";
    w.model = (char *)model;
    w.params = params;
    w.n_shards = 1;
    w.shards = &rp;
    env.body_case = PS__ENVELOPE__BODY_WELCOME;
    env.welcome = &w;
    env.request_id = m.env->request_id;
    wire_msg_close(&m);
    assert_true(wire_send(f.sock, &f.peer, &env, NULL, 0) > 0);
    return s_fake_end(&f, text, textlen);
}

/* A worker whose catalogue lacks the server's model, or whose model of that
 * name has another length, refuses clearly (naming the model and what it
 * has) and exits 1. */
static void test_unknown_model_refused_by_worker(void **state)
{
    (void)state;
    char text[4096];
    assert_int_equal(s_welcome_model("unknown_model", "nosuchnet", 1000, text, sizeof text), 1);
    assert_non_null(strstr(text, "the server trains model 'nosuchnet', which this worker does "
                                 "not have (it has simpleconvnet"));
    assert_int_equal(s_welcome_model("other_length", "simpleconvnet", 1000, text, sizeof text), 1);
    assert_non_null(strstr(text, "simpleconvnet has 1000 parameters, this worker's 225034"));
}

/* Sends env (+ tensor: the whole vector, a header count of 0). */
static long s_send(void *sock, Ps__Envelope *env, const float *tensor)
{
    zmq_msg_t frame;
    if (tensor &&
        wire_tensor_encode_n(&frame, tensor, MODEL_NPARAMS, PS__ENCODING__ENCODING_F32, NULL) != 0)
        return -1;
    return wire_send_msg(sock, NULL, env, tensor ? &frame : NULL, 0);
}

/* Sends env (+ tensor) and returns the reply's kind, filling *m. */
static int s_ask(void *sock, Ps__Envelope *env, const float *tensor, wire_msg_t *m)
{
    char err[256];
    if (s_send(sock, env, tensor) < 0)
        return -1;
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 20000) != 1 ||
        wire_recv(sock, NULL, m, MODEL_NPARAMS, err, sizeof err) != 0)
        return -1;
    return m->env->body_case;
}

static int s_push_step(void *sock, uint32_t id, uint64_t step, uint64_t version, const float *g,
                       uint64_t *new_version)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = id;
    p.step = step;
    p.version = version;
    p.epoch = 1;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = 100 + step;
    wire_msg_t m;
    int kind = s_ask(sock, &env, g, &m);
    if (kind != PS__ENVELOPE__BODY_WEIGHTS)
        return -1;
    *new_version = m.env->weights->version;
    wire_msg_close(&m);
    return 0;
}

/* Oversized and malformed input: a 2 MB frame (over ZMQ_MAXMSGSIZE) makes
 * ZeroMQ drop that connection; a header over the limit gets an Error; the
 * server then still registers a good worker. */
static void test_oversized_refused_server_goes_on(void **state)
{
    (void)state;
    char ep[256], db[400];
    pid_t pid = s_one_worker_server("oversized", "sync", ep, sizeof ep, db, sizeof db);
    void *ctx = zmq_ctx_new(), *big = proc_dealer(ctx, ep), *bad = proc_dealer(ctx, ep);
    void *good = proc_dealer(ctx, ep);
    size_t n = 2 << 20;
    char *junk = calloc(1, n);
    assert_int_equal(zmq_send(big, junk, n, 0), (int)n);
    assert_int_equal(zmq_send(bad, junk, WIRE_MAX_HEADER + 1, 0), WIRE_MAX_HEADER + 1);
    free(junk);
    zmq_pollitem_t item = {bad, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 10000), 1);
    wire_msg_t m;
    char err[256];
    assert_int_equal(wire_recv(bad, NULL, &m, MODEL_NPARAMS, err, sizeof err), 0);
    assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_ERROR);
    assert_int_equal(m.env->error->code, PS__ERROR_CODE__ERROR_MALFORMED);
    printf("  oversized header answered: %s\n", m.env->error->message);
    wire_msg_close(&m);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = "good";
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    env.request_id = 1;
    assert_int_equal(s_ask(good, &env, NULL, &m), PS__ENVELOPE__BODY_WELCOME);
    wire_msg_close(&m);
    item.socket = big;
    assert_int_equal(zmq_poll(&item, 1, 200), 0); /* the 2 MB message got no answer */
    zmq_close(big);
    zmq_close(bad);
    zmq_close(good);
    zmq_ctx_term(ctx);
    kill(pid, SIGTERM);
    proc_wait(pid, 20);
}

/* Exactly once: a push sent again (as after a lost reply) is answered with
 * the weights but not applied a second time; the count of applied updates
 * is the count of distinct steps. A raw client plays the worker. */
static void test_push_applied_exactly_once(void **state)
{
    (void)state;
    char ep[256], db[400];
    pid_t pid = s_one_worker_server("once", "async", ep, sizeof ep, db, sizeof db);
    void *ctx = zmq_ctx_new(), *sock = proc_dealer(ctx, ep);

    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = "once";
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    env.request_id = 1;
    wire_msg_t m;
    assert_int_equal(s_ask(sock, &env, NULL, &m), PS__ENVELOPE__BODY_WELCOME);
    uint32_t id = m.env->welcome->worker_id;
    wire_msg_close(&m);

    static float g[MODEL_NPARAMS];
    for (int i = 0; i < MODEL_NPARAMS; i++)
        g[i] = 1e-3f;
    uint64_t v1, v1again, v2;
    assert_int_equal(s_push_step(sock, id, 1, 0, g, &v1), 0);
    assert_int_equal(s_push_step(sock, id, 1, 0, g, &v1again), 0); /* the "retry" */
    assert_int_equal(s_push_step(sock, id, 2, v1, g, &v2), 0);
    printf("  versions after step 1, its retry, step 2: %llu %llu %llu\n", (unsigned long long)v1,
           (unsigned long long)v1again, (unsigned long long)v2);
    assert_int_equal(v1, 1);
    assert_int_equal(v1again, 1); /* not applied again */
    assert_int_equal(v2, 2);

    Ps__Done done = PS__DONE__INIT;
    done.worker_id = id;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    env.request_id = 999;
    assert_int_equal(s_ask(sock, &env, NULL, &m), PS__ENVELOPE__BODY_ACK);
    wire_msg_close(&m);
    assert_int_equal(proc_wait(pid, 30), 0);
    assert_int_equal((int)proc_query(db, "select max(updates_applied) from server_stats"), 2);
    assert_int_equal((int)proc_query(db, "select count(*) from steps"), 2);
    zmq_close(sock);
    zmq_ctx_term(ctx);
}

/* ssp holds a fast worker back: with --staleness 1 and two raw clients, a
 * worker that pushed step 1 while the other pushed nothing gets no reply to
 * its step 2 (it would be 2 steps ahead of the slowest) until the other
 * pushes its step 1; then the held reply comes. An async server would
 * answer at once, so this fails if ssp stops bounding staleness. */
static void test_ssp_holds_fast_worker(void **state)
{
    (void)state;
    char dir[300], log[400], db[400], ep[256];
    snprintf(dir, sizeof dir, "%s/ssp-hold", proc_env.tmp);
    fs_mkdirs(dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    snprintf(db, sizeof db, "%s/m.db", dir);
    const char *sargv[] = {proc_env.server,
                           "--bind",
                           "tcp://127.0.0.1:*",
                           "--workers",
                           "2",
                           "--mode",
                           "ssp",
                           "--staleness",
                           "1",
                           "--worker-timeout",
                           "60",
                           "--test-limit",
                           "10",
                           "--data-dir",
                           proc_env.data,
                           "--db",
                           db,
                           "--out",
                           dir,
                           "--register-timeout",
                           "20",
                           NULL};
    pid_t pid = proc_spawn(log, sargv);
    assert_int_equal(proc_endpoint(pid, log, 0, ep, sizeof ep, 30), 0);
    void *ctx = zmq_ctx_new(), *fast = proc_dealer(ctx, ep), *slow = proc_dealer(ctx, ep);

    /* Both register; the Welcomes come once both are there. */
    void *socks[2] = {fast, slow};
    const char *names[2] = {"fast", "slow"};
    uint32_t ids[2];
    for (int i = 0; i < 2; i++) {
        Ps__Envelope env = PS__ENVELOPE__INIT;
        Ps__Register reg = PS__REGISTER__INIT;
        reg.name = (char *)names[i];
        env.body_case = PS__ENVELOPE__BODY_REGISTER;
        env.register_ = &reg;
        env.request_id = 1;
        assert_true(wire_send(socks[i], NULL, &env, NULL, 0) >= 0);
    }
    for (int i = 0; i < 2; i++) {
        zmq_pollitem_t item = {socks[i], 0, ZMQ_POLLIN, 0};
        wire_msg_t m;
        char err[256];
        assert_int_equal(zmq_poll(&item, 1, 20000), 1);
        assert_int_equal(wire_recv(socks[i], NULL, &m, MODEL_NPARAMS, err, sizeof err), 0);
        assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_WELCOME);
        ids[i] = m.env->welcome->worker_id;
        wire_msg_close(&m);
    }

    static float g[MODEL_NPARAMS];
    uint64_t v = 0;
    assert_int_equal(s_push_step(fast, ids[0], 1, 0, g, &v), 0); /* 1 <= 0 + 1: answered */

    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = ids[0];
    p.step = 2;
    p.version = v;
    p.epoch = 1;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = 102;
    assert_true(s_send(fast, &env, g) >= 0);
    zmq_pollitem_t item = {fast, 0, ZMQ_POLLIN, 0};
    assert_int_equal(zmq_poll(&item, 1, 1500), 0); /* 2 > 0 + 1: held */
    printf("  fast worker's step 2 held while the slow one is at step 0\n");

    assert_int_equal(s_push_step(slow, ids[1], 1, 0, g, &v), 0);
    assert_int_equal(zmq_poll(&item, 1, 5000), 1); /* released: 2 <= 1 + 1 */
    wire_msg_t m;
    char err[256];
    assert_int_equal(wire_recv(fast, NULL, &m, MODEL_NPARAMS, err, sizeof err), 0);
    assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(m.env->request_id, 102);
    printf("  released after the slow worker's step 1 (held %.2f s)\n",
           m.env->weights->held_seconds);
    assert_true(m.env->weights->held_seconds >= 1.0);
    wire_msg_close(&m);

    zmq_close(fast);
    zmq_close(slow);
    zmq_ctx_term(ctx);
    kill(pid, SIGTERM);
    proc_wait(pid, 20);
}

/* fp16 and int8 compression: the run learns as well as float32 (within a
 * point on this short run) with half and about 38% of the bytes per step. */
static void test_compression(void **state)
{
    (void)state;
    const char *schemes[] = {"none", "fp16", "int8"};
    double acc[3], bytes[3];
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "compress_%s", schemes[i]);
        run_t r = {.name = name,
                   .mode = "sync",
                   .compress = schemes[i],
                   .workers = 2,
                   .epochs = 1,
                   .batch = 64,
                   .train_limit = 12800,
                   .test_limit = 10000};
        r.name = strdup(name);
        assert_int_equal(s_run(&r), 0);
        acc[i] = s_final_accuracy(&r);
        bytes[i] = proc_query(r.db, "select sum(bytes_sent + bytes_received) * 1.0 / "
                                    "(select count(*) from steps) from epochs");
        printf("  %-4s: %.2f%%, %.0f bytes per step\n", schemes[i], acc[i], bytes[i]);
        free((void *)r.name);
    }
    assert_true(fabs(acc[1] - acc[0]) <= 1.0 && fabs(acc[2] - acc[0]) <= 1.0);
    assert_true(bytes[1] < 0.51 * bytes[0] && bytes[1] > 0.49 * bytes[0]);
    assert_true(bytes[2] < 0.40 * bytes[0]);
}

/* Local SGD, --push-every 4 in sync mode: a quarter of the pushes, and the
 * run still learns (measured: 93.2% against 95.4% pushing every step). */
static void test_local_sgd(void **state)
{
    (void)state;
    run_t r = {.name = "local_sgd",
               .mode = "sync",
               .push_every = "4",
               .workers = 2,
               .epochs = 1,
               .batch = 64,
               .train_limit = 20000,
               .test_limit = 10000};
    assert_int_equal(s_run(&r), 0);
    double steps = proc_query(r.db, "select count(*) from steps");
    printf("  --push-every 4: %.2f%%, %.0f pushes for 2 x 157 batches\n", s_final_accuracy(&r),
           steps);
    assert_int_equal((int)steps, 2 * 40);
    assert_true(s_final_accuracy(&r) >= 90.0);
}

int main(void)
{
    wire_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_mismatch_refused_by_server),
        cmocka_unit_test(test_version_mismatch_refused_by_worker),
        cmocka_unit_test(test_unknown_model_refused_by_worker),
        cmocka_unit_test(test_unequal_shards_finish),
        cmocka_unit_test(test_push_applied_exactly_once),
        cmocka_unit_test(test_oversized_refused_server_goes_on),
        cmocka_unit_test(test_sync_equals_batch_128),
        cmocka_unit_test(test_async_learns),
        cmocka_unit_test(test_ssp_learns),
        cmocka_unit_test(test_ssp_holds_fast_worker),
        cmocka_unit_test(test_compression),
        cmocka_unit_test(test_local_sgd),
    };
    return cmocka_run_group_tests(tests, proc_group_setup, proc_group_teardown);
}
