/* test_hostile: a paramserver attacked by hostile or faulty peers (issue 9).
 * Each test starts a real server on an ephemeral loopback port and plays the
 * worker(s) itself with raw DEALER sockets and hand-built messages, then
 * checks what the server did: its replies, its exit status, its database,
 * its model and checkpoint files. Every wait has a deadline.
 * Needs MNIST in $MNIST_DIR (default data) and the programs in $BUILD
 * (default build). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "clock.h"
#include "fs.h"
#include "model.h"
#include "modelfile.h"
#include "proc.h"
#include "safetensors.h"
#include "wire.h"

/* A server under test: its directory, files and endpoint. */
typedef struct {
    char dir[300], log[400], db[400], out[400], ckpt[400], ep[256];
    pid_t pid;
} srv_t;

/* Starts a paramserver in proc_env.tmp/NAME on a free loopback port with the given
 * extra flags (NULL-terminated), and waits for its endpoint (left empty if
 * it exited first). With `again` the same directory is reused and the
 * server binds the endpoint it had. */
static void s_start(srv_t *v, const char *name, int again, const char *flag, ...)
{
    if (!again) {
        memset(v, 0, sizeof *v);
        snprintf(v->dir, sizeof v->dir, "%s/%s", proc_env.tmp, name);
        fs_mkdirs(v->dir);
        snprintf(v->log, sizeof v->log, "%s/server.log", v->dir);
        snprintf(v->db, sizeof v->db, "%s/m.db", v->dir);
        snprintf(v->out, sizeof v->out, "%s/out", v->dir);
        snprintf(v->ckpt, sizeof v->ckpt, "%s/out/checkpoint.safetensors", v->dir);
    }
    static char ep[256];
    snprintf(ep, sizeof ep, "%s", again && v->ep[0] ? v->ep : "tcp://127.0.0.1:*");
    const char *argv[64] = {
        proc_env.server, "--bind", ep,          "--data-dir", proc_env.data,        "--db", v->db,
        "--out",         v->out,   "--threads", "1",          "--register-timeout", "30"};
    int n = 13;
    va_list ap;
    va_start(ap, flag);
    for (const char *a = flag; a && n < 62; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    size_t mark = 0;
    struct stat st;
    if (stat(v->log, &st) == 0)
        mark = (size_t)st.st_size;
    v->pid = proc_spawn(v->log, argv);
    /* The endpoint line of this start (the log may hold an earlier one); an
     * empty endpoint when it exited without listening (proc_wait has its status). */
    if (proc_endpoint(v->pid, v->log, (long)mark, v->ep, sizeof v->ep, 30) >= 0)
        return;
    proc_cat(v->log);
    fail_msg("the server %s did not start listening", name);
}

static void s_stop(srv_t *v)
{
    if (v->pid > 0) {
        kill(v->pid, SIGKILL);
        waitpid(v->pid, NULL, 0);
        v->pid = 0;
    }
}

/* Waits up to `ms` for a reply into *m; its kind, or -1 when none came. */
static int s_reply(void *sock, wire_msg_t *m, long ms)
{
    char err[256];
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, ms) != 1)
        return -1;
    int rc = wire_recv(sock, NULL, m, MODEL_NPARAMS, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "  the client refused the reply: %s\n", err);
        return -1;
    }
    return m->env->body_case;
}

/* Sends env (+ a ready tensor frame, whose ownership passes) and returns the
 * reply's kind, filling *m (closed by the caller), or -1. */
static int s_ask_msg(void *sock, Ps__Envelope *env, zmq_msg_t *tensor, wire_msg_t *m)
{
    static uint64_t request = 1;
    if (env->request_id == 0)
        env->request_id = ++request;
    if (wire_send_msg(sock, NULL, env, tensor, 0) < 0)
        return -1;
    /* As a worker does, drop what answers no request of ours. */
    for (double end = clock_now() + 20; clock_now() < end;) {
        int kind = s_reply(sock, m, 20000);
        if (kind < 0 || m->env->request_id == env->request_id ||
            (kind == PS__ENVELOPE__BODY_ERROR && m->env->request_id == 0))
            return kind;
        wire_msg_close(m);
    }
    return -1;
}

/* Prints the Error reply's message when there is one. */
static void s_show(const char *what, const wire_msg_t *m)
{
    if (m->env && m->env->body_case == PS__ENVELOPE__BODY_ERROR)
        printf("  %s: Error %d: %s\n", what, m->env->error->code, m->env->error->message);
}

/* Sends a Register under name asking for compression. */
static void s_register_send(void *sock, const char *name, int compress)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = (char *)name;
    reg.host = "test";
    reg.threads = 1;
    reg.compress = (Ps__Compression)compress;
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    env.request_id = 1;
    assert_true(wire_send_msg(sock, NULL, &env, NULL, 0) > 0);
}

/* The incarnation the last Welcome gave, which pushes then carry (tests
 * with two clients have both at 0). */
static uint32_t s_incarnation;

/* Waits for the answer to a Register: the worker id, or -1. */
static int s_welcome(void *sock)
{
    wire_msg_t m;
    int kind = s_reply(sock, &m, 20000);
    if (kind < 0)
        return -1;
    s_show("register", &m);
    int id = kind == PS__ENVELOPE__BODY_WELCOME ? (int)m.env->welcome->worker_id : -1;
    if (id >= 0)
        s_incarnation = m.env->welcome->incarnation;
    wire_msg_close(&m);
    return id;
}

/* Registers under name asking for compression; the worker id, or -1. */
static int s_register(void *sock, const char *name, int compress)
{
    s_register_send(sock, name, compress);
    return s_welcome(sock);
}

/* Registers two clients (the Welcomes come when both did); their ids. */
static void s_register2(void *a, const char *na, int ca, void *b, const char *nb, int cb, int *ia,
                        int *ib)
{
    s_register_send(a, na, ca);
    s_register_send(b, nb, cb);
    *ia = s_welcome(a);
    *ib = s_welcome(b);
    assert_true(*ia >= 0 && *ib >= 0);
}

/* Pushes the tensor frame (ownership passes) as step `step` in `encoding`;
 * the reply's kind, with the reply in *m. */
static int s_push(void *sock, int id, uint64_t step, uint64_t version, int encoding, zmq_msg_t *t,
                  wire_msg_t *m)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = (uint32_t)id;
    p.step = step;
    p.version = version;
    p.epoch = 1;
    p.loss = 1.0f;
    p.encoding = (Ps__Encoding)encoding;
    p.incarnation = s_incarnation;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    int kind = s_ask_msg(sock, &env, t, m);
    if (kind >= 0)
        s_show("push", m);
    return kind;
}

/* A float32 tensor frame with every value x. */
static void s_f32(zmq_msg_t *t, float x)
{
    assert_int_equal(wire_tensor_init(t, MODEL_NPARAMS), 0);
    float *f = zmq_msg_data(t);
    for (int i = 0; i < MODEL_NPARAMS; i++)
        f[i] = x;
}

/* Pushes a float32 tensor of x; the reply's kind (the reply is closed). */
static int s_push_f32(void *sock, int id, uint64_t step, float x)
{
    zmq_msg_t t;
    wire_msg_t m;
    s_f32(&t, x);
    int kind = s_push(sock, id, step, 0, PS__ENCODING__ENCODING_F32, &t, &m);
    if (kind >= 0)
        wire_msg_close(&m);
    return kind;
}

/* Sends a request without a tensor; the reply's kind (reply closed). */
static int s_tell(void *sock, Ps__Envelope *env)
{
    wire_msg_t m;
    int kind = s_ask_msg(sock, env, NULL, &m);
    if (kind >= 0) {
        s_show(wire_kind_name(env->body_case), &m);
        wire_msg_close(&m);
    }
    return kind;
}

static int s_done(void *sock, int id)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Done d = PS__DONE__INIT;
    d.worker_id = (uint32_t)id;
    d.train_seconds = 1.0;
    d.test_accuracy = 50.0;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &d;
    return s_tell(sock, &env);
}

static int s_pull(void *sock, int id, wire_msg_t *m)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Pull p = PS__PULL__INIT;
    p.worker_id = (uint32_t)id;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &p;
    return s_ask_msg(sock, &env, NULL, m);
}

/* The server's model file holds only finite values (0), or is unreadable or
 * not finite (-1). */
static int s_model_finite(const srv_t *v)
{
    static float w[MODEL_NPARAMS];
    char path[500], err[512];
    snprintf(path, sizeof path, "%s/model_distributed.safetensors", v->out);
    if (modelfile_load(path, models_find(MODELS_DEFAULT), "", w, err, sizeof err) != 0)
        return -1;
    return model_all_finite(w, MODEL_NPARAMS) ? 0 : -1;
}

/* D1: an int8 push whose block scale is finite but whose values overflow
 * when decoded (3e38 x 127) is refused, and so is an encoding the worker
 * was not granted at registration; the server's weights stay finite. */
static void test_int8_overflow_and_ungranted_encoding_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "int8", 0, "--workers", "2", "--mode", "async", "--test-limit", "10", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep), *b = proc_dealer(ctx, v.ep);
    int ia, ib;
    s_register2(a, "int8", PS__COMPRESSION__COMPRESSION_INT8, b, "plain",
                PS__COMPRESSION__COMPRESSION_NONE, &ia, &ib);

    size_t size = wire_encoded_size_n(PS__ENCODING__ENCODING_I8, MODEL_NPARAMS);
    zmq_msg_t t;
    wire_msg_t m;
    assert_int_equal(zmq_msg_init_size(&t, size), 0);
    unsigned char *p = zmq_msg_data(&t);
    for (size_t blk = 0; blk < size; blk += 4 + WIRE_I8_BLOCK) {
        float scale = 3e38f;
        memcpy(p + blk, &scale, 4);
        memset(p + blk + 4, 127, size - blk - 4 < WIRE_I8_BLOCK ? size - blk - 4 : WIRE_I8_BLOCK);
    }
    assert_int_equal(s_push(a, ia, 1, 0, PS__ENCODING__ENCODING_I8, &t, &m),
                     PS__ENVELOPE__BODY_ERROR);
    wire_msg_close(&m);
    /* A well-formed small int8 frame: refused from a worker that registered
     * for float32, applied from the int8 worker; the weights stay finite. */
    assert_int_equal(zmq_msg_init_size(&t, size), 0);
    p = zmq_msg_data(&t);
    memset(p, 0, size);
    for (size_t blk = 0; blk < size; blk += 4 + WIRE_I8_BLOCK) {
        float scale = 1e-4f;
        memcpy(p + blk, &scale, 4);
        p[blk + 4] = 100;
    }
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, &t);
    assert_int_equal(s_push(b, ib, 1, 0, PS__ENCODING__ENCODING_I8, &copy, &m),
                     PS__ENVELOPE__BODY_ERROR);
    wire_msg_close(&m);
    assert_int_equal(s_push(a, ia, 1, 0, PS__ENCODING__ENCODING_I8, &t, &m),
                     PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(m.env->weights->version, 1);
    static float w[MODEL_NPARAMS];
    const float *wf = wire_tensor(&m, w);
    assert_true(model_all_finite(wf, MODEL_NPARAMS));
    wire_msg_close(&m);
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
    s_stop(&v);
}

/* D5: pushes of finite but huge gradients (3e38) whose application would
 * overflow the momentum are refused (async: the second one; sync: the
 * round's average), so the weights stay finite and the saved model too. */
static void test_momentum_overflow_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "overflow_async", 0, "--workers", "1", "--mode", "async", "--test-limit", "10",
            NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    int id = s_register(a, "big", 0);
    assert_true(id >= 0);
    assert_int_equal(s_push_f32(a, id, 1, 3e38f), PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(s_push_f32(a, id, 2, 3e38f), PS__ENVELOPE__BODY_ERROR);
    wire_msg_t m;
    assert_int_equal(s_pull(a, id, &m), PS__ENVELOPE__BODY_WEIGHTS);
    assert_true(model_all_finite(m.tensor, MODEL_NPARAMS));
    wire_msg_close(&m);
    assert_int_equal(s_done(a, id), PS__ENVELOPE__BODY_ACK);
    assert_int_equal(proc_wait(v.pid, 60), 0);
    assert_int_equal(s_model_finite(&v), 0);
    zmq_close(a);

    /* sync: each gradient alone is fine, their sum overflows. */
    s_start(&v, "overflow_sync", 0, "--workers", "2", "--mode", "sync", "--test-limit", "10", NULL);
    void *b = proc_dealer(ctx, v.ep);
    a = proc_dealer(ctx, v.ep);
    int ia, ib;
    s_register2(a, "a", 0, b, "b", 0, &ia, &ib);
    zmq_msg_t t;
    s_f32(&t, 3e38f);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = (uint32_t)ia;
    p.step = 1;
    p.epoch = 1;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = 77;
    assert_true(wire_send_msg(a, NULL, &env, &t, 0) > 0); /* held for the round */
    assert_int_equal(s_push_f32(b, ib, 1, 3e38f), PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(s_reply(a, &m, 10000), PS__ENVELOPE__BODY_WEIGHTS);
    assert_true(model_all_finite(m.tensor, MODEL_NPARAMS));
    wire_msg_close(&m);
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
    s_stop(&v);
}

/* D2: the server is killed with SIGKILL right after acknowledging the last
 * worker's Done (during the final evaluation) and restarted with --resume:
 * it must finish the run at once (evaluate, save, mark done, exit 0) with
 * the weights the worker ended with, not wait for it, evict it and fail. */
static void test_crash_after_done_resumes_to_done(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "after_done", 0, "--workers", "1", "--mode", "async", "--worker-timeout", "3",
            "--checkpoint-every", "1000", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    int id = s_register(a, "w", 0);
    assert_true(id >= 0);
    static float last[MODEL_NPARAMS], saved[MODEL_NPARAMS];
    wire_msg_t m;
    for (uint64_t step = 1; step <= 3; step++) {
        zmq_msg_t t;
        s_f32(&t, 1e-3f * (float)step);
        assert_int_equal(s_push(a, id, step, step - 1, PS__ENCODING__ENCODING_F32, &t, &m),
                         PS__ENVELOPE__BODY_WEIGHTS);
        memcpy(last, m.tensor, sizeof last);
        wire_msg_close(&m);
    }
    assert_int_equal(s_done(a, id), PS__ENVELOPE__BODY_ACK);
    kill(v.pid, SIGKILL); /* it is evaluating 10,000 test images now */
    waitpid(v.pid, NULL, 0);
    zmq_close(a);
    zmq_ctx_term(ctx);
    char model[500], err[512];
    snprintf(model, sizeof model, "%s/model_distributed.safetensors", v.out);
    assert_int_not_equal(access(model, F_OK), 0); /* killed before it saved */

    s_start(&v, "after_done", 1, "--workers", "1", "--mode", "async", "--worker-timeout", "3",
            "--checkpoint-every", "1000", "--resume", NULL);
    int code = proc_wait(v.pid, 60);
    if (code != 0)
        proc_cat(v.log);
    assert_int_equal(code, 0);
    assert_int_equal(modelfile_load(model, models_find(MODELS_DEFAULT), "", saved, err, sizeof err),
                     0);
    assert_memory_equal(saved, last, sizeof last);
    assert_int_equal((int)proc_query(v.db, "select count(*) from runs where status = 'done'"), 1);
    assert_int_equal((int)proc_query(v.db, "select count(*) from events where kind = 'evicted'"),
                     0);
    assert_int_not_equal(access(v.ckpt, F_OK), 0); /* the completed run's checkpoint is gone */
}

/* D4: after the start, a registration under a live worker's name from
 * another connection is refused (it used to take the slot over, and its
 * Done with 0 steps ended the run); the worker goes on. Once that worker's
 * connection is gone, its name may rejoin (a restarted worker). */
static void test_name_takeover_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "takeover", 0, "--workers", "1", "--mode", "async", "--test-limit", "10", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep), *b = proc_dealer(ctx, v.ep);
    int id = s_register(a, "victim", 0);
    assert_true(id >= 0);
    assert_int_equal(s_push_f32(a, id, 1, 1e-3f), PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(s_register(b, "victim", 0), -1);
    assert_int_equal(s_done(b, id), PS__ENVELOPE__BODY_ERROR);
    assert_int_equal(s_push_f32(a, id, 2, 1e-3f), PS__ENVELOPE__BODY_WEIGHTS);
    zmq_close(a);
    /* The victim's process is gone: a new one under its name rejoins. */
    void *c = proc_dealer(ctx, v.ep);
    int again = -1;
    for (double end = clock_now() + 10; again < 0 && clock_now() < end;)
        if ((again = s_register(c, "victim", 0)) < 0)
            usleep(100000);
    assert_int_equal(again, id);
    assert_int_equal(s_push_f32(c, id, 3, 1e-3f), PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(s_done(c, id), PS__ENVELOPE__BODY_ACK);
    assert_int_equal(proc_wait(v.pid, 60), 0);
    assert_int_equal((int)proc_query(v.db, "select max(updates_applied) from server_stats"), 3);
    zmq_close(b);
    zmq_close(c);
    zmq_ctx_term(ctx);
}

/* D6: worker names that are not valid UTF-8, hold control characters or
 * are too long are refused at registration with a message saying so (one
 * used to disable checkpointing for the whole run). */
static void test_bad_names_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "names", 0, "--workers", "1", "--mode", "async", "--test-limit", "10",
            "--checkpoint-every", "1", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    const char *bad[] = {"\xff\xfe",    "w\xc0\xafx",   "fake\n[  1.00] worker 0 done",
                         "\x1b[31mred", "\xed\xa0\x80", longname};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(s_register(a, bad[i], 0), -1);
    int id = s_register(a, "caf\xc3\xa9-w\xe2\x82\xac", 0); /* UTF-8 is fine */
    assert_true(id >= 0);
    assert_int_equal(s_push_f32(a, id, 1, 1e-3f), PS__ENVELOPE__BODY_WEIGHTS);
    /* Checkpointing works (it is written just after the reply). */
    for (double end = clock_now() + 10; access(v.ckpt, F_OK) != 0 && clock_now() < end;)
        usleep(20000);
    assert_int_equal(access(v.ckpt, F_OK), 0);
    assert_int_equal(s_done(a, id), PS__ENVELOPE__BODY_ACK);
    assert_int_equal(proc_wait(v.pid, 60), 0);
    zmq_close(a);
    zmq_ctx_term(ctx);
}

/* D7: in sync mode a worker that registers and pulls but never pushes is
 * evicted after --worker-timeout (pulls are not progress), so the other
 * worker's held push is answered. */
static void test_puller_without_pushes_evicted(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "puller", 0, "--workers", "2", "--mode", "sync", "--test-limit", "10",
            "--worker-timeout", "2", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep), *b = proc_dealer(ctx, v.ep);
    int ia, ib;
    s_register2(a, "pusher", 0, b, "puller", 0, &ia, &ib);
    zmq_msg_t t;
    s_f32(&t, 1e-3f);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = (uint32_t)ia;
    p.step = 1;
    p.epoch = 1;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = 5;
    assert_true(wire_send_msg(a, NULL, &env, &t, 0) > 0);
    double t0 = clock_now();
    wire_msg_t m;
    int kind = -1;
    while (kind < 0 && clock_now() - t0 < 12) {
        wire_msg_t w;
        if (s_pull(b, ib, &w) >= 0)
            wire_msg_close(&w);
        kind = s_reply(a, &m, 300);
    }
    printf("  held push answered after %.1f s (--worker-timeout 2)\n", clock_now() - t0);
    assert_int_equal(kind, PS__ENVELOPE__BODY_WEIGHTS);
    wire_msg_close(&m);
    char line[64];
    snprintf(line, sizeof line, "evicting worker %d", ib);
    assert_true(proc_contains(v.log, line));
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
    s_stop(&v);
}

/* D8: a run in which every worker was evicted (here: the only one, which
 * never pushed) saves no model, so a good model already there is kept, and
 * exits non-zero with the run marked failed. */
static void test_all_evicted_keeps_model(void **state)
{
    (void)state;
    srv_t v;
    char model[500];
    s_start(&v, "evicted", 0, "--workers", "1", "--mode", "async", "--test-limit", "10",
            "--worker-timeout", "1", NULL);
    snprintf(model, sizeof model, "%s/model_distributed.safetensors", v.out);
    FILE *f = fopen(model, "w");
    assert_non_null(f);
    fputs("the model of an earlier, good run", f);
    fclose(f);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    assert_true(s_register(a, "idle", 0) >= 0);
    int code = proc_wait(v.pid, 30);
    assert_int_equal(code, 1);
    char text[64] = "";
    f = fopen(model, "r");
    assert_non_null(f);
    assert_non_null(fgets(text, sizeof text, f));
    fclose(f);
    assert_string_equal(text, "the model of an earlier, good run");
    assert_int_equal((int)proc_query(v.db, "select count(*) from runs where status = 'failed'"), 1);
    zmq_close(a);
    zmq_ctx_term(ctx);
}

/* The server's resident memory in MB (VmRSS), or -1. */
static double s_rss_mb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    double kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lf kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

/* A TCP connection to a tcp://127.0.0.1:PORT endpoint, speaking ZMTP 3.0 by
 * hand: greeting and READY as a DEALER. Sends time out after 5 s. */
static int s_zmtp_connect(const char *ep)
{
    int port = atoi(strrchr(ep, ':') + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    unsigned char greeting[64] = {0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0, 'N', 'U', 'L', 'L'};
    static const unsigned char ready[] = {4,   28,  5,   'R', 'E', 'A', 'D', 'Y', 11,  'S',
                                          'o', 'c', 'k', 'e', 't', '-', 'T', 'y', 'p', 'e',
                                          0,   0,   0,   6,   'D', 'E', 'A', 'L', 'E', 'R'};
    assert_int_equal(send(fd, greeting, sizeof greeting, MSG_NOSIGNAL), (ssize_t)sizeof greeting);
    assert_int_equal(send(fd, ready, sizeof ready, MSG_NOSIGNAL), (ssize_t)sizeof ready);
    return fd;
}

/* D3: one raw ZMTP client sends frames of 512 KB (each under the size cap)
 * with the MORE flag and never a last frame. A ROUTER socket kept them all
 * (the server grew by what was sent); now the connection is closed once the
 * message passes WIRE_MAX_MESSAGE, the server's memory stays bounded, and it
 * goes on serving. */
static void test_endless_multipart_bounded(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "multipart", 0, "--workers", "1", "--mode", "async", "--test-limit", "10", NULL);
    double rss0 = s_rss_mb(v.pid);
    int fd = s_zmtp_connect(v.ep);
    enum { FRAME = 512 << 10, TOTAL_MB = 600 };
    unsigned char *frame = calloc(1, 9 + FRAME);
    frame[0] = 3; /* MORE | LONG */
    for (int i = 0; i < 8; i++)
        frame[1 + i] = (unsigned char)((uint64_t)FRAME >> (56 - 8 * i));
    double sent = 0;
    while (sent < TOTAL_MB * 1048576.0) {
        ssize_t n = send(fd, frame, 9 + FRAME, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        sent += (double)n;
    }
    double rss1 = s_rss_mb(v.pid);
    printf("  the client sent %.0f MB of one unfinished message before the server closed it; "
           "server memory %.0f -> %.0f MB\n",
           sent / 1048576, rss0, rss1);
    free(frame);
    close(fd);
    assert_true(rss1 - rss0 < 100);
    assert_true(sent < TOTAL_MB * 1048576.0);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    assert_true(s_register(a, "after", 0) >= 0);
    zmq_close(a);
    zmq_ctx_term(ctx);
    s_stop(&v);
}

/* A client of another model than the server's (a SimpleConvNet server):
 * its Register naming the model is refused naming both; registered, the
 * Welcome names the server's model and length; a push one value longer
 * than the server's model is refused; and a whole widecnn-sized push
 * (9.5 M values, 38 MB) passes the server's message bound, so the gate
 * closes its connection before holding it; the server goes on serving. */
static void test_bigger_model_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "bigger", 0, "--workers", "1", "--mode", "async", "--test-limit", "10", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = "other-model";
    reg.model = "lenet5";
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    wire_msg_t m;
    assert_int_equal(s_ask_msg(a, &env, NULL, &m), PS__ENVELOPE__BODY_ERROR);
    s_show("register --model lenet5", &m);
    assert_non_null(strstr(m.env->error->message, "--model lenet5"));
    assert_non_null(strstr(m.env->error->message, "trains simpleconvnet"));
    wire_msg_close(&m);

    s_register_send(a, "w", 0);
    assert_int_equal(s_reply(a, &m, 20000), PS__ENVELOPE__BODY_WELCOME);
    assert_string_equal(m.env->welcome->model, "simpleconvnet");
    assert_int_equal(m.env->welcome->params, MODEL_NPARAMS);
    int id = (int)m.env->welcome->worker_id;
    s_incarnation = m.env->welcome->incarnation;
    wire_msg_close(&m);

    static float big[9500000];
    zmq_msg_t t;
    assert_int_equal(wire_tensor_encode_n(&t, big, MODEL_NPARAMS + 1, 0, NULL), 0);
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = (uint32_t)id;
    p.step = 1;
    p.epoch = 1;
    p.count = MODEL_NPARAMS + 1;
    p.incarnation = s_incarnation;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    assert_int_equal(s_ask_msg(a, &env, &t, &m), PS__ENVELOPE__BODY_ERROR);
    s_show("push of 225035 values", &m);
    assert_non_null(strstr(m.env->error->message, "model has 225034 parameters"));
    wire_msg_close(&m);

    void *b = proc_dealer(ctx, v.ep);
    assert_int_equal(wire_tensor_encode_n(&t, big, 9500000, 0, NULL), 0);
    p.count = 9500000;
    env.request_id = 99;
    assert_true(wire_send_msg(b, NULL, &env, &t, 0) > 0);
    assert_int_equal(s_reply(b, &m, 3000), -1); /* closed, not answered */
    printf("  a push of 9.5 M values (38 MB): its connection closed, no reply\n");
    zmq_close(b);
    assert_int_equal(s_pull(a, id, &m), PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(m.count, MODEL_NPARAMS);
    wire_msg_close(&m);
    zmq_close(a);
    zmq_ctx_term(ctx);
    s_stop(&v);
}

/* D9: a registered client that never reads its replies and keeps asking
 * for the weights (900 KB each): ZeroMQ's default send queue of 1,000
 * messages let it pin ~900 MB of the server; now a few replies queue, then
 * its connection is closed, and the server's memory stays bounded. */
static void test_client_not_reading_bounded(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "notreading", 0, "--workers", "1", "--mode", "async", "--test-limit", "10", NULL);
    double rss0 = s_rss_mb(v.pid);
    /* A client whose ZeroMQ takes one message off the network, then no
     * more: the server's replies back up to it. */
    void *ctx = zmq_ctx_new(), *a = zmq_socket(ctx, ZMQ_DEALER);
    int one = 1, zero = 0;
    zmq_setsockopt(a, ZMQ_RCVHWM, &one, sizeof one);
    zmq_setsockopt(a, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(a, v.ep), 0);
    int id = s_register(a, "deaf", 0);
    assert_true(id >= 0);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Pull pull = PS__PULL__INIT;
    pull.worker_id = (uint32_t)id;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &pull;
    int sent = 0;
    for (; sent < 400; sent++) {
        env.request_id = 2 + (uint64_t)sent;
        if (wire_send(a, NULL, &env, NULL, ZMQ_DONTWAIT) < 0)
            break;
        usleep(2000);
    }
    double rss1 = s_rss_mb(v.pid);
    printf("  %d pulls sent without reading a reply; server memory %.0f -> %.0f MB\n", sent, rss0,
           rss1);
    zmq_close(a);
    zmq_ctx_term(ctx);
    assert_true(rss1 - rss0 < 100);
    s_stop(&v);
}

/* Trains a one-worker async run in NAME for `steps` steps with checkpoints
 * after every update, then kills the server with SIGKILL: its checkpoint
 * is left. Extra server flags (NULL-terminated, at most 4) follow. */
static void s_checkpointed_run(srv_t *v, const char *name, int steps, const char *f1,
                               const char *f2)
{
    s_start(v, name, 0, "--workers", "1", "--mode", "async", "--test-limit", "10",
            "--checkpoint-every", "1", "--worker-timeout", "2", f1, f2, NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v->ep);
    int id = s_register(a, "w", 0);
    assert_true(id >= 0);
    for (int step = 1; step <= steps; step++)
        assert_int_equal(s_push_f32(a, id, (uint64_t)step, 1e-3f), PS__ENVELOPE__BODY_WEIGHTS);
    /* The checkpoint of the last step is written just after its reply. */
    char line[64];
    snprintf(line, sizeof line, "\"version\":\"%d\"", steps);
    for (double end = clock_now() + 10; clock_now() < end; usleep(20000)) {
        FILE *f = fopen(v->ckpt, "rb");
        char head[4096] = "";
        if (f) {
            size_t n = fread(head, 1, sizeof head - 1, f);
            head[n] = '\0';
            fclose(f);
        }
        if (strstr(head + 8, line))
            break;
    }
    s_stop(v);
    zmq_close(a);
    zmq_ctx_term(ctx);
}

/* Flips one bit of the file at offset `at` from its end. */
static void s_flip(const char *path, long at)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, -at, SEEK_END), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, -at, SEEK_END), 0);
    fputc(c ^ 0x04, f);
    fclose(f);
}

/* Replaces the first `from` in the file by `to` (same length). */
static void s_patch(const char *path, const char *from, const char *to)
{
    static char buf[4 << 20];
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf, f);
    char *p = memmem(buf, n, from, strlen(from));
    assert_non_null(p);
    assert_int_equal(strlen(from), strlen(to));
    assert_int_equal(fseek(f, p - buf, SEEK_SET), 0);
    fwrite(to, 1, strlen(to), f);
    fclose(f);
}

/* D10: a checkpoint with a flipped bit in its momentum or a changed digit
 * in its metadata is refused by --resume with a message naming the
 * checksum (it used to load silently); a good one resumes. */
static void test_damaged_checkpoint_refused(void **state)
{
    (void)state;
    srv_t v;
    s_checkpointed_run(&v, "damaged", 3, NULL, NULL);
    char good[500], cmd[1200];
    snprintf(good, sizeof good, "%s/good.safetensors", v.dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", v.ckpt, good);
    assert_int_equal(system(cmd), 0);
    const char *what[] = {"a bit of the momentum", "a step count"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", good, v.ckpt);
        assert_int_equal(system(cmd), 0);
        if (k == 0)
            s_flip(v.ckpt, 1000);
        else
            s_patch(v.ckpt, "\"slot.0.steps\":\"3\"", "\"slot.0.steps\":\"1\"");
        s_start(&v, "damaged", 1, "--workers", "1", "--mode", "async", "--test-limit", "10",
                "--checkpoint-every", "1", "--worker-timeout", "2", "--resume", NULL);
        int code = proc_wait(v.pid, 30);
        printf("  %s changed: --resume exits %d\n", what[k], code);
        if (code != 1 || !proc_contains(v.log, "checksum"))
            proc_cat(v.log);
        assert_int_equal(code, 1);
        assert_true(proc_contains(v.log, "the file is damaged"));
        unlink(v.log);
    }
}

/* The seed item: a --seed above 2^53 resumes from its own checkpoint (its
 * metadata used to be read back through a double, and the seed no longer
 * matched). */
static void test_large_seed_resumes(void **state)
{
    (void)state;
    srv_t v;
    const char *seed = "18446744073709551557";
    s_checkpointed_run(&v, "seed", 2, "--seed", seed);
    s_start(&v, "seed", 1, "--workers", "1", "--mode", "async", "--test-limit", "10",
            "--checkpoint-every", "1", "--worker-timeout", "2", "--seed", seed, "--resume", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    int id = s_register(a, "w", 0);
    if (id < 0)
        proc_cat(v.log);
    assert_true(id >= 0);
    assert_int_equal(s_push_f32(a, id, 3, 1e-3f), PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(s_done(a, id), PS__ENVELOPE__BODY_ACK);
    assert_int_equal(proc_wait(v.pid, 60), 0);
    assert_int_equal((int)proc_query(v.db, "select max(updates_applied) from server_stats"), 3);
    zmq_close(a);
    zmq_ctx_term(ctx);
}

/* D11: worker-reported figures out of range (loss 1e308, accuracy 500%,
 * negative seconds, NaN) are refused with an Error and not stored. */
static void test_bad_figures_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "figures", 0, "--workers", "1", "--mode", "async", "--test-limit", "10", "--epochs",
            "2", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    int id = s_register(a, "liar", 0);
    assert_true(id >= 0);
    Ps__EpochReport good = PS__EPOCH_REPORT__INIT;
    good.worker_id = (uint32_t)id;
    good.epoch = 1;
    good.train_loss = 0.5;
    good.test_accuracy = 90;
    good.epoch_seconds = 10;
    Ps__EpochReport bad[5];
    for (int k = 0; k < 5; k++)
        bad[k] = good;
    bad[0].train_loss = 1e308;
    bad[1].test_accuracy = 500;
    bad[2].epoch_seconds = -3;
    bad[3].wait_seconds = NAN;
    bad[4].epoch = 99;
    for (int k = 0; k < 5; k++) {
        Ps__Envelope env = PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_EPOCH;
        env.epoch = &bad[k];
        assert_int_equal(s_tell(a, &env), PS__ENVELOPE__BODY_ERROR);
    }
    /* A push whose loss is NaN, a Done with negative seconds. */
    zmq_msg_t t;
    wire_msg_t m;
    s_f32(&t, 1e-3f);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = (uint32_t)id;
    p.step = 1;
    p.epoch = 1;
    p.loss = NAN;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    assert_int_equal(s_ask_msg(a, &env, &t, &m), PS__ENVELOPE__BODY_ERROR);
    s_show("push", &m);
    wire_msg_close(&m);
    Ps__Done d = PS__DONE__INIT;
    d.worker_id = (uint32_t)id;
    d.train_seconds = -5;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &d;
    assert_int_equal(s_tell(a, &env), PS__ENVELOPE__BODY_ERROR);
    /* The good report is stored; none of the bad ones. */
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_EPOCH;
    env.epoch = &good;
    assert_int_equal(s_tell(a, &env), PS__ENVELOPE__BODY_ACK);
    s_stop(&v);
    assert_int_equal((int)proc_query(v.db, "select count(*) from epochs"), 1);
    assert_int_equal((int)proc_query(v.db, "select count(*) from steps"), 0);
    zmq_close(a);
    zmq_ctx_term(ctx);
}

/* D15: a flood of refused messages adds a bounded number of log lines (one
 * per refusal used to); the server still answers each one. */
static void test_refusal_flood_rate_limited(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "flood", 0, "--workers", "1", "--mode", "async", "--test-limit", "10", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    int answered = 0;
    for (int k = 0; k < 500; k++) {
        Ps__Envelope env = PS__ENVELOPE__INIT;
        Ps__Pull pull = PS__PULL__INIT;
        pull.worker_id = 7; /* before the run started: refused */
        env.body_case = PS__ENVELOPE__BODY_PULL;
        env.pull = &pull;
        answered += s_tell(a, &env) == PS__ENVELOPE__BODY_ERROR;
    }
    s_stop(&v);
    FILE *f = fopen(v.log, "r");
    char line[512];
    int lines = 0;
    while (f && fgets(line, sizeof line, f))
        lines++;
    if (f)
        fclose(f);
    printf("  500 refused messages, %d answered, %d log lines\n", answered, lines);
    assert_int_equal(answered, 500);
    assert_true(lines < 50);
    zmq_close(a);
    zmq_ctx_term(ctx);
}

/* D12: SIGTERM (what systemd sends) makes the server write a final
 * checkpoint, so that --resume continues from the last update rather than
 * from the last periodic checkpoint (here: none). */
static void test_sigterm_writes_checkpoint(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "sigterm", 0, "--workers", "1", "--mode", "async", "--test-limit", "10",
            "--checkpoint-every", "1000", "--checkpoint-seconds", "1000000", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep);
    int id = s_register(a, "w", 0);
    assert_true(id >= 0);
    for (int step = 1; step <= 2; step++)
        assert_int_equal(s_push_f32(a, id, (uint64_t)step, 1e-3f), PS__ENVELOPE__BODY_WEIGHTS);
    kill(v.pid, SIGTERM);
    assert_int_equal(proc_wait(v.pid, 30), 1);
    char err[256];
    st_file_t *f = st_open(v.ckpt, err, sizeof err);
    if (!f)
        proc_cat(v.log);
    assert_non_null(f);
    assert_string_equal(st_metadata(f, "version"), "2");
    st_close(&f);
    assert_true(proc_contains(v.log, "continue with --resume"));
    zmq_close(a);
    zmq_ctx_term(ctx);
}

/* D12: a worker stopped with SIGINT (mid-shard: 300 batches each, and the
 * step rows reach the database every 2 s) tells the server it leaves, so in a
 * sync run the other worker goes on at once instead of waiting out
 * --worker-timeout (60 s here), and the run finishes. */
static void test_worker_sigint_leaves(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "leave", 0, "--workers", "2", "--mode", "sync", "--test-limit", "100", "--epochs",
            "1", "--train-limit", "38400", "--worker-timeout", "60", NULL);
    pid_t w[2];
    for (int k = 0; k < 2; k++) {
        char log[500], name[16];
        snprintf(log, sizeof log, "%s/worker%d.log", v.dir, k);
        snprintf(name, sizeof name, "w%d", k);
        const char *argv[] = {proc_env.worker, "--server",  v.ep, "--name",    name, "--data-dir",
                              proc_env.data,   "--threads", "1",  "--timeout", "60", NULL};
        w[k] = proc_spawn(log, argv);
    }
    double end = clock_now() + 60, steps = 0;
    while (clock_now() < end && !(steps >= 10))
        if (!((steps = proc_query(v.db, "select count(*) from steps")) >= 10))
            usleep(50000);
    assert_true(steps >= 10);
    double t0 = clock_now();
    kill(w[0], SIGINT);
    int code = proc_wait(v.pid, 40 * proc_time_scale()); /* ASan: ~55 s for the epoch */
    printf("  worker w0 stopped with SIGINT: the server finished %.1f s later (exit %d)\n",
           clock_now() - t0, code);
    proc_wait(w[0], 10);
    proc_wait(w[1], 10);
    if (code != 0)
        proc_cat(v.log);
    assert_int_equal(code, 0);
    assert_true(proc_contains(v.log, "left: stopped after"));
    assert_int_equal((int)proc_query(v.db, "select count(*) from events where kind = 'left'"), 1);
}

/* A push split into parts (Push.part/parts) must tile the server's range in
 * backward order; parts that do not are refused and apply nothing, and the
 * worker can then push the step properly. */
static void test_parts_that_do_not_tile_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "parts", 0, "--workers", "1", "--mode", "async", "--test-limit", "10", NULL);
    void *ctx = zmq_ctx_new(), *sock = proc_dealer(ctx, v.ep);
    int id = s_register(sock, "parter", 0);
    assert_true(id >= 0);
    static float g[MODEL_NPARAMS];
    for (int i = 0; i < MODEL_NPARAMS; i++)
        g[i] = 1e-3f;
    /* {part, parts, offset, count, expected reply}: -1 = none */
    const struct {
        uint32_t part, parts, offset, count;
        int reply;
        const char *what;
    } cases[] = {
        {0, 2, 0, 100, PS__ENVELOPE__BODY_ERROR, "a first part that does not end at the top"},
        {1, 2, 0, 1000, PS__ENVELOPE__BODY_ERROR, "a second part before the first"},
        {0, 65, 1000, MODEL_NPARAMS - 1000, PS__ENVELOPE__BODY_ERROR, "65 parts"},
        {2, 2, 0, 1000, PS__ENVELOPE__BODY_ERROR, "part 2 of 2"},
        {0, 1, 5, MODEL_NPARAMS - 5, PS__ENVELOPE__BODY_ERROR, "one part that leaves a gap"},
        {0, 2, 1000, MODEL_NPARAMS - 1000, -1, "a good first part (not answered)"},
        {1, 2, 0, 999, PS__ENVELOPE__BODY_ERROR, "a last part that leaves a gap"},
        {0, 2, 1000, MODEL_NPARAMS - 1000, -1, "the step again from its first part"},
        {1, 2, 0, 1000, PS__ENVELOPE__BODY_WEIGHTS, "its good last part"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Ps__Envelope env = PS__ENVELOPE__INIT;
        Ps__Push p = PS__PUSH__INIT;
        p.worker_id = (uint32_t)id;
        p.step = 1;
        p.epoch = 1;
        p.loss = 1.0f;
        p.incarnation = s_incarnation;
        p.part = cases[c].part;
        p.parts = cases[c].parts;
        p.offset = cases[c].offset;
        p.count = cases[c].count;
        env.body_case = PS__ENVELOPE__BODY_PUSH;
        env.push = &p;
        env.request_id = 100 + c;
        zmq_msg_t t;
        assert_int_equal(wire_tensor_encode_n(&t, g + p.offset, p.count, 0, NULL), 0);
        assert_true(wire_send_msg(sock, NULL, &env, &t, 0) > 0);
        wire_msg_t m;
        int kind = s_reply(sock, &m, cases[c].reply < 0 ? 300 : 10000);
        printf("  %s: %s\n", cases[c].what, kind < 0 ? "no reply" : wire_kind_name(kind));
        s_show("   ", &m);
        assert_int_equal(kind, cases[c].reply);
        if (kind == PS__ENVELOPE__BODY_WEIGHTS)
            assert_int_equal(m.env->weights->version, 1); /* applied once */
        if (kind >= 0)
            wire_msg_close(&m);
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    s_stop(&v);
}

/* Sends a server-group message from a raw DEALER; the reply's kind (*m
 * filled) or -1. */
static int s_group_ask(void *sock, Ps__Envelope *env, wire_msg_t *m)
{
    int kind = s_ask_msg(sock, env, NULL, m);
    if (kind >= 0)
        s_show(wire_kind_name(env->body_case), m);
    return kind;
}

static int s_shard_join(void *sock, uint32_t shard, const char *endpoint, wire_msg_t *m)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__ShardJoin j = PS__SHARD_JOIN__INIT;
    j.shard = shard;
    j.endpoint = (char *)endpoint;
    env.body_case = PS__ENVELOPE__BODY_SHARD_JOIN;
    env.shard_join = &j;
    return s_group_ask(sock, &env, m);
}

static int s_shard_ping(void *sock, uint32_t shard, double apply_seconds, wire_msg_t *m)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__ShardPing p = PS__SHARD_PING__INIT;
    p.shard = shard;
    p.apply_seconds = apply_seconds;
    env.body_case = PS__ENVELOPE__BODY_SHARD_PING;
    env.shard_ping = &p;
    return s_group_ask(sock, &env, m);
}

/* Expects an Error of `code` (closing the reply). */
static void s_expect_error(int kind, wire_msg_t *m, int code)
{
    assert_int_equal(kind, PS__ENVELOPE__BODY_ERROR);
    assert_int_equal(m->env->error->code, code);
    wire_msg_close(m);
}

/* A head (--shards 2) refuses what a hostile or broken shard sends: a shard
 * number out of range, a ping or final weights from a connection that never
 * joined, a second process for a joined shard, figures that are not finite,
 * final weights before the run is over, another protocol version. */
static void test_group_messages_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "group", 0, "--workers", "1", "--shards", "2", "--test-limit", "10", NULL);
    void *ctx = zmq_ctx_new(), *a = proc_dealer(ctx, v.ep), *b = proc_dealer(ctx, v.ep);
    wire_msg_t m;
    s_expect_error(s_shard_join(a, 5, "tcp://127.0.0.1:1", &m), &m, PS__ERROR_CODE__ERROR_STATE);
    s_expect_error(s_shard_join(a, 0, "tcp://127.0.0.1:1", &m), &m, PS__ERROR_CODE__ERROR_STATE);
    s_expect_error(s_shard_join(a, 1, "tcp://bad\x01name:1", &m), &m, PS__ERROR_CODE__ERROR_STATE);
    s_expect_error(s_shard_ping(a, 1, 0.0, &m), &m, PS__ERROR_CODE__ERROR_UNKNOWN_WORKER);
    /* final weights from a connection that never joined */
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__ShardFinal f = PS__SHARD_FINAL__INIT;
    f.shard = 1;
    f.offset = MODEL_NPARAMS / 2;
    f.count = 10;
    env.body_case = PS__ENVELOPE__BODY_SHARD_FINAL;
    env.shard_final = &f;
    zmq_msg_t t;
    float ten[10] = {0};
    assert_int_equal(wire_tensor_encode_n(&t, ten, 10, 0, NULL), 0);
    s_expect_error(s_ask_msg(a, &env, &t, &m), &m, PS__ERROR_CODE__ERROR_UNKNOWN_WORKER);
    /* a proper join... */
    assert_int_equal(s_shard_join(a, 1, "", &m), PS__ENVELOPE__BODY_SHARD_WELCOME);
    assert_int_equal(m.env->shard_welcome->lo, MODEL_NPARAMS / 2);
    wire_msg_close(&m);
    /* ...then a second process claiming shard 1 while the first is alive */
    s_expect_error(s_shard_join(b, 1, "tcp://127.0.0.1:2", &m), &m, PS__ERROR_CODE__ERROR_STATE);
    /* figures that are not finite, from the joined shard */
    s_expect_error(s_shard_ping(a, 1, NAN, &m), &m, PS__ERROR_CODE__ERROR_MALFORMED);
    s_expect_error(s_shard_ping(a, 1, -1.0, &m), &m, PS__ERROR_CODE__ERROR_MALFORMED);
    /* final weights before the run is over */
    env.request_id = 0;
    assert_int_equal(wire_tensor_encode_n(&t, ten, 10, 0, NULL), 0);
    s_expect_error(s_ask_msg(a, &env, &t, &m), &m, PS__ERROR_CODE__ERROR_STATE);
    /* another protocol version */
    Ps__Envelope old = PS__ENVELOPE__INIT;
    Ps__ShardJoin j = PS__SHARD_JOIN__INIT;
    j.shard = 1;
    old.protocol = WIRE_PROTOCOL + 1;
    old.body_case = PS__ENVELOPE__BODY_SHARD_JOIN;
    old.shard_join = &j;
    uint8_t buf[256];
    size_t n = ps__envelope__pack(&old, buf);
    assert_int_equal(zmq_send(b, buf, n, 0), (int)n);
    int kind = s_reply(b, &m, 10000);
    s_show("shard join, protocol + 1", &m);
    s_expect_error(kind, &m, PS__ERROR_CODE__ERROR_VERSION);
    /* the head still serves: the joined shard's ping is answered */
    kind = s_shard_ping(a, 1, 0.0, &m);
    assert_true(kind == PS__ENVELOPE__BODY_MEMBERSHIP || kind == PS__ENVELOPE__BODY_ACK);
    wire_msg_close(&m);
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
    s_stop(&v);
}

static int s_term_ask(void *sock, uint32_t shard, uint64_t term, int promote, wire_msg_t *m)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__ShardTerm t = PS__SHARD_TERM__INIT;
    t.shard = shard;
    t.term = term;
    t.promote = promote;
    env.body_case = PS__ENVELOPE__BODY_SHARD_TERM;
    env.shard_term = &t;
    return s_group_ask(sock, &env, m);
}

/* A ReplicaUpdate of kind `kind` for a range of `count` values (a tensor
 * of zeros unless count is 0), at term and version. */
static int s_replica_send(void *sock, int kind, uint64_t term, uint64_t version, uint32_t offset,
                          uint32_t count, wire_msg_t *m)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__ReplicaUpdate u = PS__REPLICA_UPDATE__INIT;
    uint64_t steps[1] = {0};
    uint32_t inc[1] = {0};
    u.kind = (Ps__ReplicaKind)kind;
    u.term = term;
    u.version = version;
    u.lr = 0.01f;
    u.n_steps = u.n_incarnations = 1;
    u.steps = steps;
    u.incarnations = inc;
    u.offset = offset;
    u.count = count;
    env.body_case = PS__ENVELOPE__BODY_REPLICA_UPDATE;
    env.replica_update = &u;
    zmq_msg_t t;
    static float zeros[MODEL_NPARAMS];
    if (count)
        assert_int_equal(wire_tensor_encode_n(&t, zeros, count, 0, NULL), 0);
    int kind_got = s_ask_msg(sock, &env, count ? &t : NULL, m);
    if (kind_got >= 0)
        s_show("replica update", m);
    return kind_got;
}

/* The hot standby's messages from hostile or broken peers (issue 12): term
 * changes from strangers, from an unsynced standby, for a shard out of
 * range; Locate with a wrong token; replica updates to a primary, at an
 * old term, out of order, with a tensor where none belongs or none where
 * one does; a worker's request to a standby. Each is refused and nothing
 * changes: the run then trains to the end. */
static void test_standby_messages_refused(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "standby", 0, "--workers", "1", "--shards", "2", "--test-limit", "10",
            "--train-limit", "640", "--epochs", "1", NULL);
    char slog[500], blog[500], sep[256], bep[256];
    snprintf(slog, sizeof slog, "%s/shard1.log", v.dir);
    snprintf(blog, sizeof blog, "%s/standby1.log", v.dir);
    const char *sargv[] = {
        proc_env.server,      "--shard", "1", "--head", v.ep, "--bind", "tcp://127.0.0.1:*",
        "--checkpoint-every", "0",       NULL};
    pid_t shard = proc_spawn(slog, sargv);
    if (proc_reach_endpoint(slog, sep, sizeof sep, 30 * proc_time_scale()) != 0) {
        proc_cat(slog);
        fail_msg("%s names no endpoint", slog);
    }
    void *ctx = zmq_ctx_new(), *x = proc_dealer(ctx, v.ep), *xs = proc_dealer(ctx, sep);
    wire_msg_t m;
    /* term changes: a shard out of range, from a stranger */
    s_expect_error(s_term_ask(x, 9, 1, 1, &m), &m, PS__ERROR_CODE__ERROR_MALFORMED);
    s_expect_error(s_term_ask(x, 1, 1, 1, &m), &m, PS__ERROR_CODE__ERROR_FENCED);
    s_expect_error(s_term_ask(x, 1, 1, 0, &m), &m, PS__ERROR_CODE__ERROR_FENCED);
    /* a Locate from a stranger's connection, with a made-up token (before
     * the run: no worker is known yet) */
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Locate loc = PS__LOCATE__INIT;
    loc.token = 12345;
    env.body_case = PS__ENVELOPE__BODY_LOCATE;
    env.locate = &loc;
    s_expect_error(s_group_ask(x, &env, &m), &m, PS__ERROR_CODE__ERROR_STATE);
    /* the shard says who it is (what --replica-of asks) */
    env.request_id = 0;
    assert_int_equal(s_group_ask(xs, &env, &m), PS__ENVELOPE__BODY_LOCATED);
    assert_int_equal(m.env->located->shard, 1);
    assert_string_equal(m.env->located->head, v.ep);
    wire_msg_close(&m);
    /* replica updates to a primary: its term is not over */
    s_expect_error(s_replica_send(xs, PS__REPLICA_KIND__REPLICA_UPDATE, 5, 1, MODEL_NPARAMS / 2,
                                  MODEL_NPARAMS - MODEL_NPARAMS / 2, &m),
                   &m, PS__ERROR_CODE__ERROR_FENCED);
    /* a heartbeat with a tensor, an update without one */
    s_expect_error(s_replica_send(xs, PS__REPLICA_KIND__REPLICA_BEAT, 1, 0, 0, 10, &m), &m,
                   PS__ERROR_CODE__ERROR_MALFORMED);
    s_expect_error(s_replica_send(xs, PS__REPLICA_KIND__REPLICA_UPDATE, 1, 0, 0, 0, &m), &m,
                   PS__ERROR_CODE__ERROR_MALFORMED);
    /* a real standby, then a stranger's updates to it */
    const char *bargv[] = {proc_env.server,     "--replica-of", sep,   "--bind",
                           "tcp://127.0.0.1:*", "--out",        v.out, NULL};
    pid_t standby = proc_spawn(blog, bargv);
    if (proc_reach_endpoint(blog, bep, sizeof bep, 30 * proc_time_scale()) != 0) {
        proc_cat(blog);
        fail_msg("%s names no endpoint", blog);
    }
    for (double end = clock_now() + 30; clock_now() < end && !proc_contains(blog, "holds the");)
        usleep(20000);
    assert_true(proc_contains(blog, "holds the primary's state"));
    void *xb = proc_dealer(ctx, bep);
    s_expect_error(s_replica_send(xb, PS__REPLICA_KIND__REPLICA_UPDATE, 0, 1, MODEL_NPARAMS / 2,
                                  MODEL_NPARAMS - MODEL_NPARAMS / 2, &m),
                   &m, PS__ERROR_CODE__ERROR_FENCED);
    s_expect_error(s_replica_send(xb, PS__REPLICA_KIND__REPLICA_UPDATE, 1, 7, MODEL_NPARAMS / 2,
                                  MODEL_NPARAMS - MODEL_NPARAMS / 2, &m),
                   &m, PS__ERROR_CODE__ERROR_STATE);
    s_expect_error(s_replica_send(xb, PS__REPLICA_KIND__REPLICA_UPDATE, 1, 1, 0, 10, &m), &m,
                   PS__ERROR_CODE__ERROR_STATE);
    /* a worker's pull to the standby: not served yet, retry */
    Ps__Pull pull = PS__PULL__INIT;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &pull;
    s_expect_error(s_group_ask(xb, &env, &m), &m, PS__ERROR_CODE__ERROR_RETRY);
    /* the standby's promotion while its primary pings the head: refused */
    assert_false(proc_contains(blog, "promoted"));
    /* nothing changed: a worker trains the run to the end */
    const char *wargv[] = {proc_env.worker, "--server", v.ep,        "--data-dir", proc_env.data,
                           "--threads",     "1",        "--timeout", "60",         NULL};
    char wlog[500];
    snprintf(wlog, sizeof wlog, "%s/worker.log", v.dir);
    assert_int_equal(proc_wait(proc_spawn(wlog, wargv), 120 * proc_time_scale()), 0);
    assert_int_equal(proc_wait(v.pid, 60 * proc_time_scale()), 0);
    assert_int_equal(proc_wait(shard, 60 * proc_time_scale()), 0);
    assert_int_equal(proc_wait(standby, 60 * proc_time_scale()), 0);
    assert_false(proc_contains(blog, "promoted"));
    zmq_close(x);
    zmq_close(xs);
    zmq_close(xb);
    zmq_ctx_term(ctx);
}

/* A shard serves pushes and pulls only to workers the head told it about,
 * with the token of their incarnation; everything else goes to the head. */
static void test_shard_refuses_unknown_token(void **state)
{
    (void)state;
    srv_t v;
    s_start(&v, "shard_token", 0, "--workers", "1", "--shards", "2", "--test-limit", "10", NULL);
    char slog[500];
    snprintf(slog, sizeof slog, "%s/shard1.log", v.dir);
    const char *sargv[] = {
        proc_env.server,      "--shard", "1", "--head", v.ep, "--bind", "tcp://127.0.0.1:*",
        "--checkpoint-every", "0",       NULL};
    pid_t shard = proc_spawn(slog, sargv);
    void *ctx = zmq_ctx_new(), *sock = proc_dealer(ctx, v.ep);
    s_register_send(sock, "tokened", 0);
    wire_msg_t m;
    assert_int_equal(s_reply(sock, &m, 30000), PS__ENVELOPE__BODY_WELCOME);
    const Ps__Welcome *w = m.env->welcome;
    assert_int_equal((int)w->n_shards, 2);
    assert_true(w->token != 0);
    uint64_t token = w->token;
    uint32_t id = w->worker_id, lo = w->shards[1]->lo, hi = w->shards[1]->hi;
    char sep[256];
    snprintf(sep, sizeof sep, "%s", w->shards[1]->endpoint);
    wire_msg_close(&m);
    void *ss = proc_dealer(ctx, sep);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Pull pull = PS__PULL__INIT;
    pull.worker_id = id;
    pull.token = token + 1;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &pull;
    s_expect_error(s_group_ask(ss, &env, &m), &m, PS__ERROR_CODE__ERROR_RETRY);
    pull.token = token;
    env.request_id = 0;
    int kind = -1;
    for (double end = clock_now() + 10; clock_now() < end; usleep(50000)) {
        env.request_id = 0; /* the shard may not know it yet: retry */
        kind = s_group_ask(ss, &env, &m);
        if (kind != PS__ENVELOPE__BODY_ERROR)
            break;
        wire_msg_close(&m);
    }
    assert_int_equal(kind, PS__ENVELOPE__BODY_WEIGHTS);
    assert_int_equal(m.env->weights->offset, lo);
    assert_int_equal(m.count, hi - lo);
    wire_msg_close(&m);
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = "lost";
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    s_expect_error(s_group_ask(ss, &env, &m), &m, PS__ERROR_CODE__ERROR_STATE);
    zmq_close(ss);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    s_stop(&v);
    kill(shard, SIGKILL);
    proc_wait(shard, 10);
}

int main(void)
{
    wire_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8_overflow_and_ungranted_encoding_refused),
        cmocka_unit_test(test_momentum_overflow_refused),
        cmocka_unit_test(test_crash_after_done_resumes_to_done),
        cmocka_unit_test(test_name_takeover_refused),
        cmocka_unit_test(test_bad_names_refused),
        cmocka_unit_test(test_puller_without_pushes_evicted),
        cmocka_unit_test(test_all_evicted_keeps_model),
        cmocka_unit_test(test_endless_multipart_bounded),
        cmocka_unit_test(test_client_not_reading_bounded),
        cmocka_unit_test(test_bigger_model_refused),
        cmocka_unit_test(test_damaged_checkpoint_refused),
        cmocka_unit_test(test_large_seed_resumes),
        cmocka_unit_test(test_bad_figures_refused),
        cmocka_unit_test(test_refusal_flood_rate_limited),
        cmocka_unit_test(test_sigterm_writes_checkpoint),
        cmocka_unit_test(test_worker_sigint_leaves),
        cmocka_unit_test(test_parts_that_do_not_tile_refused),
        cmocka_unit_test(test_group_messages_refused),
        cmocka_unit_test(test_shard_refuses_unknown_token),
        cmocka_unit_test(test_standby_messages_refused),
    };
    if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER='*group*' */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, proc_group_setup, proc_group_teardown);
}
