/* server: the parameter server's event loop and its consistency modes; see
 * server.h for what each mode means. */
#include "server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "engine.h"
#include "idx.h"
#include "metrics.h"
#include "model.h"
#include "modelfile.h"
#include "wire.h"

volatile sig_atomic_t server_stop = 0;

/* How often the loop wakes up to check deadlines when nothing arrives. */
#define SERVER_TICK_MS 200

/* One worker slot. A slot is taken at registration and keeps its id. */
typedef struct {
    char name[128], host[128];
    wire_peer_t peer;   /* where replies go */
    int threads;
    int active;         /* registered and neither done nor evicted */
    int done, evicted;
    uint64_t steps;     /* gradients accepted from this worker (its clock) */
    int pending;        /* a Push reply is being held (barrier) */
    double held_since;  /* when the held request arrived */
    double last_seen;   /* cli_now() of its last message */
    int64_t shard;      /* images it owns */
    wire_msg_t grad;    /* sync: its gradient of the open round, kept until applied */
} slot_t;

typedef struct {
    const server_opts_t *o;
    void *ctx, *sock;
    metrics_t *db;
    int64_t run;
    double t0;          /* cli_now() when the run started (all registered) */
    double t_listen;    /* cli_now() when the socket was bound */
    float *w, *v;       /* master weights and momentum */
    uint64_t version;   /* number of updates applied to w */
    slot_t *slots;
    int registered, active, started;
    int round_arrived;  /* sync: gradients held for the open round */
    int train_count;    /* images split among workers */
    idx_dataset_t test;
    int64_t updates;
    double stale_sum;
    int64_t stale_max;
    int64_t bytes_in, bytes_out;
    double worker_train_max; /* the longest training time a worker reported */
} srv_t;

const char *server_mode_name(server_mode_t m)
{
    return m == MODE_SYNC ? "sync" : m == MODE_ASYNC ? "async" : "ssp";
}

static void s_log(const srv_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_log(const srv_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("[%7.2f] ", s->started ? cli_now() - s->t0 : 0.0);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static double s_t(const srv_t *s)
{
    return s->started ? cli_now() - s->t0 : 0.0;
}

static void s_send(srv_t *s, slot_t *slot, Ps__Envelope *env, const float *tensor)
{
    long n = wire_send(s->sock, &slot->peer, env, tensor, ZMQ_DONTWAIT);
    if (n < 0)
        s_log(s, "warning: cannot send %s to worker %d (%s): %s", wire_kind_name(env->body_case),
              (int)(slot - s->slots), slot->name, zmq_strerror(errno));
    else
        s->bytes_out += n;
}

/* The current weights as one tensor frame, built on first use and shared by
 * every reply of one release (ZeroMQ counts the references). */
typedef struct {
    zmq_msg_t msg;
    int ready;
} snapshot_t;

static void s_reply_weights(srv_t *s, slot_t *slot, double held, snapshot_t *snap)
{
    if (!snap->ready) {
        if (wire_tensor_init(&snap->msg, s->w) != 0) {
            s_log(s, "warning: out of memory for a reply to worker %d", (int)(slot - s->slots));
            return;
        }
        snap->ready = 1;
    }
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, &snap->msg);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Weights wm = PS__WEIGHTS__INIT;
    wm.version = s->version;
    wm.held_seconds = held;
    env.body_case = PS__ENVELOPE__BODY_WEIGHTS;
    env.weights = &wm;
    long n = wire_send_msg(s->sock, &slot->peer, &env, &copy, ZMQ_DONTWAIT);
    if (n < 0)
        s_log(s, "warning: cannot send weights to worker %d (%s): %s", (int)(slot - s->slots),
              slot->name, zmq_strerror(errno));
    else
        s->bytes_out += n;
}

static void s_snapshot_close(snapshot_t *snap)
{
    if (snap->ready)
        zmq_msg_close(&snap->msg);
    snap->ready = 0;
}

static void s_reply_ack(srv_t *s, slot_t *slot)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Ack ack = PS__ACK__INIT;
    ack.version = s->version;
    env.body_case = PS__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    s_send(s, slot, &env, NULL);
}

static void s_count_update(srv_t *s, uint64_t computed_on)
{
    int64_t stale = (int64_t)(s->version - computed_on);
    s->stale_sum += (double)stale;
    if (stale > s->stale_max)
        s->stale_max = stale;
    s->updates++;
    s->version++;
}

static void s_apply(srv_t *s, const float *g, uint64_t computed_on)
{
    model_sgd_step(s->w, s->v, g, MODEL_NPARAMS, (float)s->o->lr, (float)s->o->momentum);
    s_count_update(s, computed_on);
}

/* sync: one SGD step with the average of the k held gradients, in blocks
 * small enough for L1, in one pass over w and v (no accumulator to clear). */
static void s_apply_average(srv_t *s, const float *const *g, int k)
{
    enum { BLOCK = 2048 };
    float avg[BLOCK];
    const float scale = 1.0f / (float)k, lr = (float)s->o->lr, mom = (float)s->o->momentum;
    for (size_t lo = 0; lo < MODEL_NPARAMS; lo += BLOCK) {
        size_t n = MODEL_NPARAMS - lo < BLOCK ? MODEL_NPARAMS - lo : BLOCK;
        memcpy(avg, g[0] + lo, n * sizeof(float));
        for (int j = 1; j < k; j++)
            for (size_t i = 0; i < n; i++)
                avg[i] += g[j][lo + i];
        for (size_t i = 0; i < n; i++)
            avg[i] *= scale;
        model_sgd_step(s->w + lo, s->v + lo, avg, n, lr, mom);
    }
    /* Every gradient of a round was computed on the current version. */
    s_count_update(s, s->version);
}

static void s_stats(srv_t *s)
{
    metrics_server_stats(s->db, s->run, s_t(s), s->updates, (int64_t)s->version,
                         s->updates ? s->stale_sum / (double)s->updates : 0.0, s->stale_max);
}

/* sync: when every active worker has a gradient in the round, apply their
 * average once and release them all with the new weights. */
static void s_check_round(srv_t *s)
{
    if (s->o->mode != MODE_SYNC || s->round_arrived == 0)
        return;
    for (int i = 0; i < s->o->workers; i++)
        if (s->slots[i].active && !s->slots[i].pending)
            return;
    const float *g[s->o->workers];
    int k = 0;
    for (int i = 0; i < s->o->workers; i++)
        if (s->slots[i].grad.tensor)
            g[k++] = s->slots[i].grad.tensor;
    s_apply_average(s, g, k);
    s->round_arrived = 0;
    double now = cli_now();
    snapshot_t snap = {.ready = 0};
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        wire_msg_close(&sl->grad);
        if (sl->pending) {
            sl->pending = 0;
            if (sl->active)
                s_reply_weights(s, sl, now - sl->held_since, &snap);
        }
    }
    s_snapshot_close(&snap);
}

/* ssp: release each held worker whose clock is within `staleness` steps of
 * the slowest active worker's. */
static void s_check_ssp(srv_t *s)
{
    if (s->o->mode != MODE_SSP)
        return;
    uint64_t min = UINT64_MAX;
    for (int i = 0; i < s->o->workers; i++)
        if (s->slots[i].active && s->slots[i].steps < min)
            min = s->slots[i].steps;
    double now = cli_now();
    snapshot_t snap = {.ready = 0};
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->pending && (min == UINT64_MAX || sl->steps <= min + (uint64_t)s->o->staleness)) {
            sl->pending = 0;
            s_reply_weights(s, sl, now - sl->held_since, &snap);
        }
    }
    s_snapshot_close(&snap);
}

/* A worker leaves every barrier: it finished, or it was evicted. */
static void s_leave(srv_t *s, slot_t *sl)
{
    if (!sl->active)
        return;
    sl->active = 0;
    s->active--;
    s_check_round(s);
    s_check_ssp(s);
}

static void s_welcome_all(srv_t *s)
{
    metrics_run_info_t info = {.mode = server_mode_name(s->o->mode), .dataset = s->o->data_dir,
                               .workers = s->o->workers, .epochs = s->o->epochs,
                               .batch_size = s->o->batch_size, .threads = s->slots[0].threads,
                               .train_limit = s->train_count, .staleness = s->o->staleness,
                               .lr = s->o->lr, .momentum = s->o->momentum, .seed = s->o->seed};
    s->run = metrics_run_begin(s->db, &info);
    if (s->run < 0)
        s_log(s, "warning: %s", metrics_errmsg(s->db));
    s->started = 1;
    s->t0 = cli_now();
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        metrics_worker(s->db, s->run, i, sl->name, sl->host, (int)sl->shard, sl->threads, 0);
        Ps__Envelope env = PS__ENVELOPE__INIT;
        Ps__Welcome wm = PS__WELCOME__INIT;
        wm.worker_id = (uint32_t)i;
        wm.workers = (uint32_t)s->o->workers;
        wm.run_id = s->run;
        wm.mode = (char *)server_mode_name(s->o->mode);
        wm.staleness = (uint32_t)s->o->staleness;
        wm.epochs = (uint32_t)s->o->epochs;
        wm.batch_size = (uint32_t)s->o->batch_size;
        wm.seed = s->o->seed;
        wm.train_limit = (uint32_t)s->train_count;
        wm.test_limit = (uint32_t)s->o->test_limit;
        wm.params = MODEL_NPARAMS;
        env.body_case = PS__ENVELOPE__BODY_WELCOME;
        env.welcome = &wm;
        sl->last_seen = cli_now();
        s_send(s, sl, &env, NULL);
    }
    s_log(s, "all %d workers registered: run %lld, mode %s, training starts", s->o->workers,
          (long long)s->run, server_mode_name(s->o->mode));
}

static void s_on_register(srv_t *s, const wire_peer_t *peer, const Ps__Register *r)
{
    const char *name = r->name && *r->name ? r->name : "unnamed";
    if (s->started) {
        wire_send_error(s->sock, peer, PS__ERROR_CODE__ERROR_FULL,
                        "the run has started and all worker slots are taken");
        s_log(s, "refused registration of %s: the run has started", name);
        return;
    }
    if (strlen(name) >= sizeof s->slots[0].name || (r->host && strlen(r->host) >= 128)) {
        wire_send_error(s->sock, peer, PS__ERROR_CODE__ERROR_MALFORMED,
                        "worker name or host is too long (at most 127 bytes)");
        return;
    }
    for (int i = 0; i < s->registered; i++)
        if (strcmp(s->slots[i].name, name) == 0) {
            wire_send_error(s->sock, peer, PS__ERROR_CODE__ERROR_STATE,
                            "a worker with this name is already registered; give each "
                            "worker its own --name");
            s_log(s, "refused registration: duplicate name %s", name);
            return;
        }
    int id = s->registered++;
    slot_t *sl = &s->slots[id];
    snprintf(sl->name, sizeof sl->name, "%s", name);
    snprintf(sl->host, sizeof sl->host, "%s", r->host ? r->host : "");
    sl->peer = *peer;
    sl->threads = (int)r->threads;
    sl->active = 1;
    sl->last_seen = cli_now();
    sl->shard = (s->train_count * (int64_t)(id + 1)) / s->o->workers -
                (s->train_count * (int64_t)id) / s->o->workers;
    s->active++;
    s_log(s, "worker %d registered: %s on %s, %d thread(s), shard of %lld images (%d/%d)", id,
          sl->name, sl->host, sl->threads, (long long)sl->shard, s->registered, s->o->workers);
    if (s->registered == s->o->workers)
        s_welcome_all(s);
}

/* The slot a request claims to come from, if the claim holds: a known id,
 * from the same connection that registered it, still in the run. */
static slot_t *s_check_worker(srv_t *s, const wire_peer_t *peer, uint32_t id, const char *what)
{
    char why[160];
    Ps__ErrorCode code = PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
    if (!s->started) {
        snprintf(why, sizeof why, "%s before the run started", what);
        code = PS__ERROR_CODE__ERROR_STATE;
    } else if (id >= (uint32_t)s->o->workers) {
        snprintf(why, sizeof why, "%s from unknown worker id %u", what, id);
    } else if (s->slots[id].peer.len != peer->len ||
               memcmp(s->slots[id].peer.id, peer->id, peer->len) != 0) {
        snprintf(why, sizeof why, "%s claims worker id %u from another connection", what, id);
    } else if (!s->slots[id].active) {
        snprintf(why, sizeof why, "%s from worker %u, which has %s", what, id,
                 s->slots[id].done ? "finished" : "been evicted");
        code = PS__ERROR_CODE__ERROR_STATE;
    } else {
        s->slots[id].last_seen = cli_now();
        return &s->slots[id];
    }
    s_log(s, "refused %s", why);
    wire_send_error(s->sock, peer, code, why);
    return NULL;
}

/* A push. In sync mode the gradient's message moves into the slot (and *m is
 * left empty) until the round is applied. */
static void s_on_push(srv_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    const Ps__Push *p = m->env->push;
    const float *g = m->tensor;
    slot_t *sl = s_check_worker(s, peer, p->worker_id, "push");
    if (!sl)
        return;
    char why[160] = "";
    if (sl->pending)
        snprintf(why, sizeof why, "push of step %llu while step %llu is still held",
                 (unsigned long long)p->step, (unsigned long long)sl->steps);
    else if (p->step != sl->steps + 1)
        snprintf(why, sizeof why, "push of step %llu out of order: expected step %llu",
                 (unsigned long long)p->step, (unsigned long long)sl->steps + 1);
    else if (p->version > s->version)
        snprintf(why, sizeof why, "push computed on version %llu, newer than the server's %llu",
                 (unsigned long long)p->version, (unsigned long long)s->version);
    if (*why) {
        s_log(s, "refused worker %d: %s", (int)(sl - s->slots), why);
        wire_send_error(s->sock, peer, PS__ERROR_CODE__ERROR_STATE, why);
        return;
    }
    sl->steps = p->step;
    metrics_step(s->db, s->run, (int)(sl - s->slots), (int64_t)p->step, (int)p->epoch, p->loss,
                 s_t(s));
    switch (s->o->mode) {
    case MODE_SYNC:
        sl->grad = *m; /* the slot owns the message now */
        memset(m, 0, sizeof *m);
        s->round_arrived++;
        sl->pending = 1;
        sl->held_since = cli_now();
        s_check_round(s);
        break;
    case MODE_ASYNC: {
        s_apply(s, g, p->version);
        snapshot_t snap = {.ready = 0};
        s_reply_weights(s, sl, 0.0, &snap);
        s_snapshot_close(&snap);
        break;
    }
    case MODE_SSP:
        s_apply(s, g, p->version);
        sl->pending = 1;
        sl->held_since = cli_now();
        s_check_ssp(s);
        break;
    }
}

static void s_on_epoch(srv_t *s, const wire_peer_t *peer, const Ps__EpochReport *e)
{
    slot_t *sl = s_check_worker(s, peer, e->worker_id, "epoch report");
    if (!sl)
        return;
    metrics_epoch_t me = {.epoch = (int)e->epoch, .train_loss = e->train_loss,
                          .test_accuracy = e->test_accuracy, .epoch_seconds = e->epoch_seconds,
                          .compute_seconds = e->compute_seconds, .push_seconds = e->push_seconds,
                          .pull_seconds = e->pull_seconds, .wait_seconds = e->wait_seconds,
                          .images = (int64_t)e->images, .bytes_sent = (int64_t)e->bytes_sent,
                          .bytes_received = (int64_t)e->bytes_received};
    if (metrics_epoch(s->db, s->run, (int)e->worker_id, &me, s_t(s)) != 0)
        s_log(s, "warning: %s", metrics_errmsg(s->db));
    s_stats(s);
    s_log(s, "worker %u epoch %u: train loss %.4f, test accuracy %.2f%%, %.1f s (compute %.1f, "
             "wait %.1f, comm %.1f)",
          e->worker_id, e->epoch, e->train_loss, e->test_accuracy, e->epoch_seconds,
          e->compute_seconds, e->wait_seconds, e->push_seconds + e->pull_seconds);
    s_reply_ack(s, sl);
}

static void s_on_done(srv_t *s, const wire_peer_t *peer, const Ps__Done *d)
{
    slot_t *sl = s_check_worker(s, peer, d->worker_id, "done");
    if (!sl)
        return;
    sl->done = 1;
    if (d->train_seconds > s->worker_train_max && d->train_seconds < 1e9)
        s->worker_train_max = d->train_seconds;
    char detail[128];
    snprintf(detail, sizeof detail, "steps=%llu train_seconds=%.1f test_accuracy=%.2f",
             (unsigned long long)sl->steps, d->train_seconds, d->test_accuracy);
    metrics_event(s->db, s->run, s_t(s), (int)d->worker_id, "done", detail);
    s_log(s, "worker %u done: %s", d->worker_id, detail);
    s_reply_ack(s, sl);
    s_leave(s, sl);
}

static void s_handle(srv_t *s)
{
    wire_peer_t peer;
    wire_msg_t m;
    char err[256];
    int rc = wire_recv(s->sock, &peer, &m, err, sizeof err);
    if (rc < 0)
        return;
    if (rc > 0) {
        s_log(s, "refused a message: %s", err);
        wire_send_error(s->sock, &peer, (Ps__ErrorCode)rc, err);
        return;
    }
    s->bytes_in += (int64_t)m.bytes;
    Ps__Envelope *env = m.env;
    switch (env->body_case) {
    case PS__ENVELOPE__BODY_REGISTER: s_on_register(s, &peer, env->register_); break;
    case PS__ENVELOPE__BODY_PULL: {
        slot_t *sl = s_check_worker(s, &peer, env->pull->worker_id, "pull");
        snapshot_t snap = {.ready = 0};
        if (sl)
            s_reply_weights(s, sl, 0.0, &snap);
        s_snapshot_close(&snap);
        break;
    }
    case PS__ENVELOPE__BODY_PUSH: s_on_push(s, &peer, &m); break;
    case PS__ENVELOPE__BODY_EPOCH: s_on_epoch(s, &peer, env->epoch); break;
    case PS__ENVELOPE__BODY_DONE: s_on_done(s, &peer, env->done); break;
    default:
        snprintf(err, sizeof err, "a worker may not send a %s message",
                 wire_kind_name(env->body_case));
        s_log(s, "refused: %s", err);
        wire_send_error(s->sock, &peer, PS__ERROR_CODE__ERROR_STATE, err);
        break;
    }
    wire_msg_close(&m);
}

/* Evicts active workers that have been silent for longer than the timeout. */
static void s_check_deadlines(srv_t *s)
{
    double now = cli_now();
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        if (!sl->active || sl->pending || now - sl->last_seen <= s->o->worker_timeout)
            continue;
        char detail[128];
        snprintf(detail, sizeof detail, "silent for %.1f s (--worker-timeout %.1f) after %llu steps",
                 now - sl->last_seen, s->o->worker_timeout, (unsigned long long)sl->steps);
        s_log(s, "evicting worker %d (%s): %s", i, sl->name, detail);
        metrics_event(s->db, s->run, s_t(s), i, "evicted", detail);
        sl->evicted = 1;
        s_leave(s, sl);
    }
}

/* Opens the socket with a message naming the address and the fix. */
static int s_listen(srv_t *s)
{
    s->ctx = zmq_ctx_new();
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    int64_t maxmsg = WIRE_MAX_MESSAGE;
    int linger = 2000, mandatory = 1;
    zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    if (zmq_bind(s->sock, s->o->bind) != 0) {
        int e = errno;
        fprintf(stderr, "error: cannot listen on %s: %s\n", s->o->bind, zmq_strerror(e));
        if (e == EADDRINUSE)
            fprintf(stderr, "(another program, perhaps another paramserver, uses this port: stop "
                            "it or choose another port with --bind tcp://*:PORT)\n");
        else if (e == EADDRNOTAVAIL || e == ENODEV)
            fprintf(stderr, "(this machine has no such address or interface: use tcp://*:PORT "
                            "for all interfaces, or one of `ip -brief addr`)\n");
        else
            fprintf(stderr, "(--bind takes a ZeroMQ endpoint such as tcp://*:5555 or "
                            "tcp://192.168.1.10:5555)\n");
        return -1;
    }
    char last[256];
    size_t len = sizeof last;
    if (zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, last, &len) == 0)
        s_log(s, "listening on %s for %d workers (mode %s)", last, s->o->workers,
              server_mode_name(s->o->mode));
    return 0;
}

/* After the last worker: evaluate, save, close the run. */
static int s_finish(srv_t *s)
{
    /* Like basic mode's: training time without the workers' evaluations,
     * i.e. the slowest worker's; the wall time is in the log. */
    double wall = cli_now() - s->t0;
    double train_seconds = s->worker_train_max > 0 ? s->worker_train_max : wall;
    int done = 0;
    for (int i = 0; i < s->o->workers; i++)
        done += s->slots[i].done;
    char err[512];
    engine_t *e = engine_new(s->o->threads, 1, err, sizeof err);
    double accuracy = e ? engine_evaluate(e, s->w, &s->test, s->o->test_limit, NULL) : 0.0;
    engine_destroy(&e);
    s_stats(s);
    int status = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/model_distributed.safetensors", s->o->out_dir);
    char acc_s[32], ver_s[32];
    snprintf(acc_s, sizeof acc_s, "%.2f", accuracy);
    snprintf(ver_s, sizeof ver_s, "%llu", (unsigned long long)s->version);
    const char *meta[] = {"format", "pt", "mode", server_mode_name(s->o->mode), "version", ver_s,
                          "test_accuracy", acc_s, NULL};
    if (cli_mkdirs(s->o->out_dir) != 0) {
        fprintf(stderr, "error: cannot create %s: %s\n", s->o->out_dir, strerror(errno));
        status = 1;
    } else if (modelfile_save(path, s->w, meta, err, sizeof err) != 0) {
        fprintf(stderr, "error: cannot save the model: %s\n", err);
        status = 1;
    } else
        s_log(s, "model saved: %s", path);
    if (done == 0) {
        fprintf(stderr, "error: no worker finished its epochs (all were evicted)\n");
        status = 1;
    }
    metrics_run_end(s->db, s->run, status == 0 ? "done" : "failed", accuracy, train_seconds);
    printf("summary: mode=%s workers=%d finished=%d updates=%lld mean_staleness=%.2f "
           "test_accuracy=%.2f train_seconds=%.1f wall_seconds=%.1f\n",
           server_mode_name(s->o->mode), s->o->workers, done, (long long)s->updates,
           s->updates ? s->stale_sum / (double)s->updates : 0.0, accuracy, train_seconds, wall);
    return status;
}

int server_run(const server_opts_t *o)
{
    srv_t s = {.o = o};
    int status = 1;
    char err[512];
    idx_dataset_t train = {0};
    if (idx_load(o->data_dir, "train", &train, err, sizeof err) != 0 ||
        idx_load(o->data_dir, "t10k", &s.test, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n(the server needs MNIST for the shard split and the final "
                        "evaluation: run `make data` or pass --data-dir DIR)\n", err);
        goto out;
    }
    s.train_count = o->train_limit > 0 && o->train_limit < train.count ? o->train_limit
                                                                        : train.count;
    idx_free(&train);
    if (s.train_count < o->workers) {
        fprintf(stderr, "error: %d training images cannot be split among %d workers\n",
                s.train_count, o->workers);
        goto out;
    }
    s.w = malloc(MODEL_NPARAMS * sizeof(float));
    s.v = calloc(MODEL_NPARAMS, sizeof(float));
    s.slots = calloc((size_t)o->workers, sizeof *s.slots);
    if (!s.w || !s.v || !s.slots) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    model_init(s.w, o->seed);
    s.db = metrics_open(o->db, err, sizeof err);
    if (!s.db) {
        fprintf(stderr, "error: %s\n", err);
        goto out;
    }
    if (s_listen(&s) != 0)
        goto out;
    s.t_listen = cli_now();

    while (!server_stop && !(s.started && s.active == 0)) {
        zmq_pollitem_t item = {s.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, SERVER_TICK_MS) < 0 && errno != EINTR) {
            fprintf(stderr, "error: zmq_poll: %s\n", zmq_strerror(errno));
            goto out;
        }
        int events = 0;
        size_t len = sizeof events;
        while (!server_stop && zmq_getsockopt(s.sock, ZMQ_EVENTS, &events, &len) == 0 &&
               (events & ZMQ_POLLIN))
            s_handle(&s);
        if (!s.started && cli_now() - s.t_listen > o->register_timeout) {
            fprintf(stderr, "error: only %d of %d workers registered within %.0f s "
                            "(--register-timeout); are the workers pointed at this server's "
                            "address, and is the port open?\n",
                    s.registered, o->workers, o->register_timeout);
            goto out;
        }
        if (s.started)
            s_check_deadlines(&s);
    }
    if (server_stop) {
        fprintf(stderr, "interrupted: run %lld marked failed\n", (long long)s.run);
        goto out;
    }
    status = s_finish(&s); /* ends the run in the database either way */
    s.run = 0;
out:
    if (s.run > 0)
        metrics_run_end(s.db, s.run, "failed", 0.0, cli_now() - s.t0);
    if (s.sock)
        zmq_close(s.sock);
    if (s.ctx)
        zmq_ctx_term(s.ctx);
    metrics_close(&s.db);
    idx_free(&s.test);
    free(s.w);
    free(s.v);
    for (int i = 0; s.slots && i < o->workers; i++)
        wire_msg_close(&s.slots[i].grad);
    free(s.slots);
    return status;
}
