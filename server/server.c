/* server: the parameter server's event loop and its consistency modes; see
 * server.h for what each mode means. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <czmq.h>
#include <zlib.h>

#include "cli.h"
#include "engine.h"
#include "gate.h"
#include "idx.h"
#include "metrics.h"
#include "model.h"
#include "modelfile.h"
#include "safetensors.h"
#include "wire.h"

volatile sig_atomic_t server_stop = 0;

/* How often the loop wakes up to check deadlines when nothing arrives. */
#define SERVER_TICK_MS 200

/* Seconds a registration under a live worker's name waits for that
 * worker's old connection to close before it is refused. */
#define S_CLAIM_GRACE 2.0

/* One worker slot. A slot is taken at registration and keeps its id. */
typedef struct {
    char name[128], host[128];
    wire_peer_t peer;   /* where replies go */
    int threads;
    int incarnation;    /* 0, then +1 at every rejoin */
    int active;         /* registered and neither done nor evicted */
    int done, evicted;
    uint64_t steps;     /* gradients accepted from this worker (its clock) */
    int pending;        /* a Push reply is being held (barrier) */
    double held_since;  /* when the held request arrived */
    uint64_t held_request; /* its request id, echoed in the reply */
    double last_seen;   /* cli_now() of its last progress: registration, a new step
                         * accepted, or release from a barrier (pulls do not count) */
    char key[48];       /* CurveZMQ: the public key that registered the name ("" without) */
    /* A registration under this name from another connection while this
     * one still looked alive, waiting up to S_CLAIM_GRACE s for it to go
     * (a restarted worker can be quicker than the old connection's close). */
    int claim;
    wire_peer_t claim_peer;
    uint64_t claim_request;
    double claim_since;
    int claim_threads, claim_compress;
    char claim_host[128];
    int64_t shard;      /* images it owns */
    wire_msg_t grad;    /* sync: its gradient's message of the open round */
    const float *round_g; /* sync: its gradient in the open round, or NULL */
    int compress;       /* PS__COMPRESSION__*: how its tensors travel */
    float *gbuf;        /* its last compressed gradient, decoded */
} slot_t;

typedef struct server {
    const server_opts_t *o;
    void *ctx, *sock;
    gate_t *gate;   /* plain TCP: the public endpoint (sock is then its inner pair) */
    void *zap;             /* CurveZMQ: the ZAP handler's socket (see s_zap_serve) */
    zcertstore_t *allowed; /* CurveZMQ: the public certificates in --allowed-keys */
    metrics_t *db;
    int64_t run;
    double t0;          /* cli_now() when the run started (all registered) */
    double t_listen;    /* cli_now() when the socket was bound */
    float *w, *v;       /* master weights and momentum */
    float *w0;          /* server_reset: the initial weights, or NULL */
    long resets;        /* server_reset calls */
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
    int64_t duplicates;      /* pushes received again and not applied */
    uint64_t request;        /* request id of the message being handled */
    uint64_t ckpt_version;   /* version of the last checkpoint */
    double ckpt_time;        /* cli_now() of the last checkpoint */
    double last_flush;       /* cli_now() when step rows were last committed */
    double refusal_window;   /* cli_now() when the current window of refusal lines began */
    long refusals_logged, refusals_hidden; /* in that window */
    long db_failures;        /* metrics writes that failed */
    int fatal;               /* the run cannot go on (its start could not be recorded) */
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

static const char *s_text_problem(const char *t, size_t max);

/* Refusals are logged at most S_REFUSALS_PER_WINDOW times per
 * S_REFUSAL_WINDOW seconds (a flood of bad messages must not fill the log);
 * how many were left out is logged when the next window opens. */
#define S_REFUSALS_PER_WINDOW 20
#define S_REFUSAL_WINDOW 10.0

static void s_log_refused(srv_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static double s_t(const srv_t *s)
{
    return s->started ? cli_now() - s->t0 : 0.0;
}

static void s_log_refused(srv_t *s, const char *fmt, ...)
{
    double now = cli_now();
    if (now - s->refusal_window >= S_REFUSAL_WINDOW) {
        if (s->refusals_hidden > 0)
            s_log(s, "(%ld more refused messages in the last %.0f s were not logged)",
                  s->refusals_hidden, now - s->refusal_window);
        s->refusal_window = now;
        s->refusals_logged = s->refusals_hidden = 0;
    }
    if (s->refusals_logged >= S_REFUSALS_PER_WINDOW) {
        s->refusals_hidden++;
        return;
    }
    s->refusals_logged++;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s_log(s, "%s", line);
}

/* Checks a metrics write: every failure is counted and reported (the first
 * few, then every 500th, so that a full disk does not also fill the log). */
static int s_db(srv_t *s, int rc)
{
    if (rc == 0)
        return 0;
    s->db_failures++;
    if (s->db_failures <= 5 || s->db_failures % 500 == 0)
        s_log(s, "warning: a write to the metrics database failed (%ld so far): %s",
              s->db_failures, metrics_errmsg(s->db));
    return -1;
}

/* A figure a worker reports is in [0, max] (and finite)? */
static int s_in(double x, double max)
{
    return isfinite(x) && x >= 0 && x <= max;
}

/* Sends a reply; it answers the request being handled unless env already
 * names another. */
static void s_send(srv_t *s, slot_t *slot, Ps__Envelope *env, const float *tensor)
{
    if (env->request_id == 0)
        env->request_id = s->request;
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
    zmq_msg_t msg[3]; /* per encoding, PS__ENCODING__* */
    int ready[3];
} snapshot_t;

/* Replies with the weights to request `request` of this slot's worker; `held`
 * is how long the server held it (a barrier). */
static void s_reply_weights(srv_t *s, slot_t *slot, uint64_t request, double held,
                            snapshot_t *snap)
{
    int enc = wire_weights_encoding((Ps__Compression)slot->compress);
    if (!snap->ready[enc]) {
        if (wire_tensor_encode(&snap->msg[enc], s->w, enc, NULL) != 0) {
            s_log(s, "warning: out of memory for a reply to worker %d", (int)(slot - s->slots));
            return;
        }
        snap->ready[enc] = 1;
    }
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, &snap->msg[enc]);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Weights wm = PS__WEIGHTS__INIT;
    wm.version = s->version;
    wm.held_seconds = held;
    wm.encoding = (Ps__Encoding)enc;
    env.body_case = PS__ENVELOPE__BODY_WEIGHTS;
    env.weights = &wm;
    env.request_id = request;
    long n = wire_send_msg(s->sock, &slot->peer, &env, &copy, ZMQ_DONTWAIT);
    if (n < 0)
        s_log(s, "warning: cannot send weights to worker %d (%s): %s", (int)(slot - s->slots),
              slot->name, zmq_strerror(errno));
    else
        s->bytes_out += n;
}

static void s_snapshot_close(snapshot_t *snap)
{
    for (int e = 0; e < 3; e++)
        if (snap->ready[e])
            zmq_msg_close(&snap->msg[e]);
    memset(snap, 0, sizeof *snap);
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

/* An Error reply to the request being handled. */
static void s_error(srv_t *s, const wire_peer_t *peer, Ps__ErrorCode code, const char *message)
{
    wire_send_error(s->sock, peer, s->request, code, message);
}

static void s_apply(srv_t *s, const float *g, uint64_t computed_on)
{
    model_sgd_step(s->w, s->v, g, MODEL_NPARAMS, (float)s->o->lr, (float)s->o->momentum);
    s_count_update(s, computed_on);
}

/* sync: one SGD step with the average of the k held gradients, in blocks
 * small enough for L1, in one pass over w and v (no accumulator to clear). */
__attribute__((noinline)) /* the fuzzer's coverage leaves it out: see tests/fuzz/ */
static int s_apply_average(srv_t *s, const float *const *g, int k)
{
    enum { BLOCK = 2048 };
    float avg[BLOCK];
    const float scale = 1.0f / (float)k, lr = (float)s->o->lr, mom = (float)s->o->momentum;
    /* Pass 0 checks that the step keeps every value finite (each gradient
     * was checked alone, but a sum of large finite ones can overflow); pass
     * 1 applies it. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t lo = 0; lo < MODEL_NPARAMS; lo += BLOCK) {
            size_t n = MODEL_NPARAMS - lo < BLOCK ? MODEL_NPARAMS - lo : BLOCK;
            memcpy(avg, g[0] + lo, n * sizeof(float));
            for (int j = 1; j < k; j++)
                for (size_t i = 0; i < n; i++)
                    avg[i] += g[j][lo + i];
            for (size_t i = 0; i < n; i++)
                avg[i] *= scale;
            if (pass == 1)
                model_sgd_step(s->w + lo, s->v + lo, avg, n, lr, mom);
            else if (!model_sgd_step_finite(s->w + lo, s->v + lo, avg, n, lr, mom))
                return -1;
        }
    /* Every gradient of a round was computed on the current version. */
    s_count_update(s, s->version);
    return 0;
}

static void s_stats(srv_t *s)
{
    s_db(s, metrics_server_stats(s->db, s->run, s_t(s), s->updates, (int64_t)s->version,
                                 s->updates ? s->stale_sum / (double)s->updates : 0.0,
                                 s->stale_max));
}

/* The checkpoint's metadata, in the order it is written and checksummed. */
static const char *const s_ckpt_fixed[] = {
    "format", "kind", "run_id", "version", "updates", "stale_sum", "stale_max", "elapsed",
    "worker_train_max", "mode", "workers", "staleness", "epochs", "batch_size", "seed",
    "train_count", "lr", "momentum", "test_limit"};
static const char *const s_ckpt_slot[] = {"name", "host", "steps", "done", "evicted",
                                          "incarnation", "threads", "key"};
#define S_NFIXED (int)(sizeof s_ckpt_fixed / sizeof s_ckpt_fixed[0])
#define S_NSLOT (int)(sizeof s_ckpt_slot / sizeof s_ckpt_slot[0])

/* A metadata value by key ("" when missing), from the writer's pairs or a
 * file. */
typedef const char *(*s_value_fn)(const void *src, int n, const char *key);

static const char *s_pairs_value(const void *src, int n, const char *key)
{
    const char *const *pairs = src;
    for (int i = 0; i < n; i++)
        if (strcmp(pairs[2 * i], key) == 0)
            return pairs[2 * i + 1];
    return "";
}

static const char *s_file_value(const void *src, int n, const char *key)
{
    (void)n;
    const char *v = st_metadata(src, key);
    return v ? v : "";
}

/* CRC-32 of every metadata "key=value\n" (fixed keys, then each slot's),
 * then the weights and momentum bytes: flipped bytes anywhere in what a
 * resume uses are found. */
static unsigned long s_ckpt_crc(const float *w, const float *v, s_value_fn value, const void *src,
                                int n, int workers)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    char line[256];
    for (int i = 0; i < S_NFIXED + workers * S_NSLOT; i++) {
        char key[48];
        if (i < S_NFIXED)
            snprintf(key, sizeof key, "%s", s_ckpt_fixed[i]);
        else
            snprintf(key, sizeof key, "slot.%d.%s", (i - S_NFIXED) / S_NSLOT,
                     s_ckpt_slot[(i - S_NFIXED) % S_NSLOT]);
        int len = snprintf(line, sizeof line, "%s=%s\n", key, value(src, n, key));
        crc = crc32(crc, (const Bytef *)line, (uInt)(len < (int)sizeof line ? len : (int)sizeof line - 1));
    }
    crc = crc32(crc, (const Bytef *)w, MODEL_NPARAMS * sizeof(float));
    crc = crc32(crc, (const Bytef *)v, MODEL_NPARAMS * sizeof(float));
    return (unsigned long)crc;
}

/* Writes the checkpoint (see server.h). Returns 0 or -1 after logging. */
static int s_checkpoint(srv_t *s)
{
    enum { PER_SLOT = 8, FIXED = 20 };
    int nmeta = FIXED + PER_SLOT * s->o->workers;
    char(*val)[160] = calloc((size_t)nmeta, sizeof *val);
    char(*key)[40] = calloc((size_t)nmeta, sizeof *key);
    const char **meta = calloc((size_t)(2 * nmeta + 1), sizeof *meta);
    if (!val || !key || !meta) {
        free(val);
        free(key);
        free(meta);
        s_log(s, "warning: out of memory for a checkpoint");
        return -1;
    }
    int k = 0;
#define PUT(name, ...)                                                                         \
    do {                                                                                       \
        snprintf(key[k], sizeof key[k], "%s", name);                                           \
        snprintf(val[k], sizeof val[k], __VA_ARGS__);                                          \
        k++;                                                                                   \
    } while (0)
    PUT("format", "pt");
    PUT("kind", "paramserver-checkpoint");
    PUT("run_id", "%lld", (long long)s->run);
    PUT("version", "%llu", (unsigned long long)s->version);
    PUT("updates", "%lld", (long long)s->updates);
    PUT("stale_sum", "%.17g", s->stale_sum);
    PUT("stale_max", "%lld", (long long)s->stale_max);
    PUT("elapsed", "%.6f", s_t(s));
    PUT("worker_train_max", "%.6f", s->worker_train_max);
    PUT("mode", "%s", server_mode_name(s->o->mode));
    PUT("workers", "%d", s->o->workers);
    PUT("staleness", "%d", s->o->staleness);
    PUT("epochs", "%d", s->o->epochs);
    PUT("batch_size", "%d", s->o->batch_size);
    PUT("seed", "%llu", (unsigned long long)s->o->seed);
    PUT("train_count", "%d", s->train_count);
    PUT("lr", "%.17g", s->o->lr);
    PUT("momentum", "%.17g", s->o->momentum);
    PUT("test_limit", "%d", s->o->test_limit);
    for (int i = 0; i < s->o->workers; i++) {
        const slot_t *sl = &s->slots[i];
        char kk[40];
#define PUTS(field, ...)                                                                       \
    do {                                                                                       \
        snprintf(kk, sizeof kk, "slot.%d.%s", i, field);                                       \
        PUT(kk, __VA_ARGS__);                                                                  \
    } while (0)
        PUTS("name", "%s", sl->name);
        PUTS("host", "%s", sl->host);
        /* A gradient held in an open sync round is not applied yet. */
        PUTS("steps", "%llu", (unsigned long long)(sl->steps - (sl->round_g != NULL)));
        PUTS("done", "%d", sl->done);
        PUTS("evicted", "%d", sl->evicted);
        PUTS("incarnation", "%d", sl->incarnation);
        PUTS("threads", "%d", sl->threads);
        PUTS("key", "%s", sl->key);
#undef PUTS
    }
    /* Last, and not covered by itself: see s_ckpt_crc. */
    const char *lookup[2 * nmeta];
    for (int i = 0; i < k; i++) {
        lookup[2 * i] = key[i];
        lookup[2 * i + 1] = val[i];
    }
    PUT("checksum", "%08lx", s_ckpt_crc(s->w, s->v, s_pairs_value, lookup, k, s->o->workers));
#undef PUT
    for (int i = 0; i < k; i++) {
        meta[2 * i] = key[i];
        meta[2 * i + 1] = val[i];
    }
    meta[2 * k] = NULL;

    st_tensor_t t[2 * MODEL_NTENSORS];
    char names[MODEL_NTENSORS][64];
    for (int i = 0; i < MODEL_NTENSORS; i++) {
        const model_tensor_t *mt = &model_tensors[i];
        snprintf(names[i], sizeof names[i], "momentum.%s", mt->name);
        t[i] = (st_tensor_t){.name = mt->name, .dtype = ST_F32, .ndim = mt->ndim,
                             .data = s->w + mt->offset};
        t[MODEL_NTENSORS + i] = (st_tensor_t){.name = names[i], .dtype = ST_F32,
                                              .ndim = mt->ndim, .data = s->v + mt->offset};
        for (int d = 0; d < mt->ndim; d++)
            t[i].shape[d] = t[MODEL_NTENSORS + i].shape[d] = mt->shape[d];
    }
    char err[512];
    int rc = st_write(s->o->checkpoint, t, 2 * MODEL_NTENSORS, meta, err, sizeof err);
    if (rc != 0)
        s_log(s, "warning: checkpoint failed: %s", err);
    s->ckpt_version = s->version;
    s->ckpt_time = cli_now();
    free(val);
    free(key);
    free(meta);
    return rc;
}

static void s_maybe_checkpoint(srv_t *s)
{
    if (s->o->checkpoint_every <= 0)
        return;
    if (s->version - s->ckpt_version >= (uint64_t)s->o->checkpoint_every ||
        cli_now() - s->ckpt_time >= s->o->checkpoint_seconds)
        s_checkpoint(s);
}

/* Reads an unsigned integer in [min, max] from the checkpoint's metadata,
 * exactly (a seed above 2^53 survives; "-1" does not wrap). */
static int s_meta_u64(const st_file_t *f, const char *key, uint64_t min, uint64_t max,
                      uint64_t *out, char *err, size_t errlen)
{
    const char *v = st_metadata(f, key);
    char *end;
    errno = 0;
    if (!v || *v < '0' || *v > '9' || (*out = strtoull(v, &end, 10), *end != '\0') ||
        errno == ERANGE || *out < min || *out > max) {
        snprintf(err, errlen, "metadata '%s' is %s%s%s; expected an integer in [%llu, %llu]",
                 key, v ? "'" : "missing", v ? v : "", v ? "'" : "", (unsigned long long)min,
                 (unsigned long long)max);
        return -1;
    }
    return 0;
}

/* The same into an int. */
static int s_meta_int(const st_file_t *f, const char *key, int min, int max, int *out, char *err,
                      size_t errlen)
{
    uint64_t u;
    if (s_meta_u64(f, key, (uint64_t)min, (uint64_t)max, &u, err, errlen) != 0)
        return -1;
    *out = (int)u;
    return 0;
}

/* Reads a finite real in [min, max] from the checkpoint's metadata. */
static int s_meta_real(const st_file_t *f, const char *key, double min, double max, double *out,
                       char *err, size_t errlen)
{
    const char *v = st_metadata(f, key);
    char *end;
    if (!v || !*v || (*out = strtod(v, &end), *end != '\0') || !isfinite(*out) || *out < min ||
        *out > max) {
        snprintf(err, errlen, "metadata '%s' is %s%s%s; expected a number in [%g, %g]", key,
                 v ? "'" : "missing", v ? v : "", v ? "'" : "", min, max);
        return -1;
    }
    return 0;
}

/* The run's counters and recipe from the checkpoint, each range-checked. */
typedef struct {
    uint64_t run, version, updates, stale_max, seed;
    double stale_sum, elapsed, wtm, lr, momentum;
    int workers, staleness, epochs, batch, count, test_limit;
} ckpt_head_t;

static int s_read_head(const st_file_t *f, ckpt_head_t *h, char *e, size_t n)
{
    const uint64_t big = (uint64_t)1 << 62;
    if (s_meta_u64(f, "run_id", 1, INT64_MAX, &h->run, e, n) ||
        s_meta_u64(f, "version", 0, big, &h->version, e, n) ||
        s_meta_u64(f, "updates", 0, h->version, &h->updates, e, n) ||
        s_meta_u64(f, "stale_max", 0, h->version, &h->stale_max, e, n) ||
        s_meta_u64(f, "seed", 0, UINT64_MAX, &h->seed, e, n) ||
        s_meta_real(f, "stale_sum", 0, 1e300, &h->stale_sum, e, n) ||
        s_meta_real(f, "elapsed", 0, 1e9, &h->elapsed, e, n) ||
        s_meta_real(f, "worker_train_max", 0, 1e9, &h->wtm, e, n) ||
        s_meta_real(f, "lr", 0, 100, &h->lr, e, n) ||
        s_meta_real(f, "momentum", 0, 1, &h->momentum, e, n) ||
        s_meta_int(f, "workers", 1, 1024, &h->workers, e, n) ||
        s_meta_int(f, "staleness", 0, 1000000, &h->staleness, e, n) ||
        s_meta_int(f, "epochs", 1, 1000, &h->epochs, e, n) ||
        s_meta_int(f, "batch_size", 1, 128, &h->batch, e, n) ||
        s_meta_int(f, "train_count", 1, 1 << 30, &h->count, e, n) ||
        s_meta_int(f, "test_limit", 0, 1 << 30, &h->test_limit, e, n))
        return -1;
    return 0;
}

/* One slot's progress from the checkpoint, range-checked. */
static int s_read_slot(srv_t *s, const st_file_t *f, int i, char *e, size_t n)
{
    slot_t *sl = &s->slots[i];
    char key[48];
    const char *text[3];
    for (int k = 0; k < 3; k++) { /* name, host, key */
        snprintf(key, sizeof key, "slot.%d.%s", i, k == 0 ? "name" : k == 1 ? "host" : "key");
        text[k] = st_metadata(f, key);
        if (!text[k] || (k < 2 && s_text_problem(text[k], 127)) || strlen(text[k]) >= 48) {
            snprintf(e, n, "metadata '%s' is missing or not a valid name", key);
            return -1;
        }
    }
    uint64_t steps;
    int done, evicted, inc, threads;
#define SLOT(field) (snprintf(key, sizeof key, "slot.%d." field, i), key)
    if (s_meta_u64(f, SLOT("steps"), 0, (uint64_t)1 << 62, &steps, e, n) ||
        s_meta_int(f, SLOT("done"), 0, 1, &done, e, n) ||
        s_meta_int(f, SLOT("evicted"), 0, 1, &evicted, e, n) ||
        s_meta_int(f, SLOT("incarnation"), 0, 1000000, &inc, e, n) ||
        s_meta_int(f, SLOT("threads"), 0, 1024, &threads, e, n))
        return -1;
#undef SLOT
    snprintf(sl->name, sizeof sl->name, "%s", text[0]);
    snprintf(sl->host, sizeof sl->host, "%s", text[1]);
    snprintf(sl->key, sizeof sl->key, "%s", text[2]);
    sl->steps = steps;
    sl->done = done;
    sl->evicted = evicted;
    sl->incarnation = inc;
    sl->threads = threads;
    sl->active = !sl->done && !sl->evicted;
    sl->peer.len = 0; /* no connection yet: it must register again */
    sl->last_seen = cli_now();
    sl->shard = (s->train_count * (int64_t)(i + 1)) / s->o->workers -
                (s->train_count * (int64_t)i) / s->o->workers;
    s->active += sl->active;
    return 0;
}

/* Restores a run from the checkpoint; every worker must re-register. Every
 * field is range-checked, the values must be finite, and the checksum over
 * all of it must match: a damaged checkpoint is refused, never loaded. */
static int s_resume(srv_t *s, char *err, size_t errlen)
{
    const server_opts_t *o = s->o;
    char local[400];
    st_file_t *f = st_open(o->checkpoint, local, sizeof local);
    if (!f) {
        snprintf(err, errlen, "cannot resume: %s", local);
        return -1;
    }
    int rc = -1;
    const char *kind = st_metadata(f, "kind"), *mode = st_metadata(f, "mode");
    const char *sum = st_metadata(f, "checksum");
    ckpt_head_t h;
    if (!kind || strcmp(kind, "paramserver-checkpoint") != 0) {
        snprintf(local, sizeof local, "not a paramserver checkpoint");
        goto out;
    }
    if (s_read_head(f, &h, local, sizeof local) != 0)
        goto out;
    if (!mode || strcmp(mode, server_mode_name(o->mode)) != 0 || h.workers != o->workers ||
        h.epochs != o->epochs || h.batch != o->batch_size || h.seed != o->seed ||
        h.count != s->train_count || h.staleness != o->staleness || h.lr != o->lr ||
        h.momentum != o->momentum || h.test_limit != o->test_limit) {
        snprintf(local, sizeof local,
                 "it is of a run with --mode %s --workers %d --epochs %d --batch-size %d "
                 "--seed %llu --staleness %d --lr %g --momentum %g --test-limit %d over %d "
                 "images; give the same flags with --resume",
                 mode ? mode : "?", h.workers, h.epochs, h.batch, (unsigned long long)h.seed,
                 h.staleness, h.lr, h.momentum, h.test_limit, h.count);
        goto out;
    }
    if (modelfile_load(o->checkpoint, "", s->w, local, sizeof local) != 0 ||
        modelfile_load(o->checkpoint, "momentum.", s->v, local, sizeof local) != 0)
        goto out;
    char want[16];
    snprintf(want, sizeof want, "%08lx",
             s_ckpt_crc(s->w, s->v, s_file_value, f, 0, o->workers));
    if (!sum || strcmp(sum, want) != 0) {
        snprintf(local, sizeof local, "its checksum is %s, but its contents sum to %s: the file "
                 "is damaged (or written by another program); remove it to start afresh",
                 sum ? sum : "missing", want);
        goto out;
    }
    if (!model_all_finite(s->w, MODEL_NPARAMS) || !model_all_finite(s->v, MODEL_NPARAMS)) {
        snprintf(local, sizeof local, "its weights or momentum are not finite");
        goto out;
    }
    s->version = s->ckpt_version = h.version;
    for (int i = 0; i < o->workers; i++)
        if (s_read_slot(s, f, i, local, sizeof local) != 0)
            goto out;
    s->run = (int64_t)h.run;
    s->updates = (int64_t)h.updates;
    s->stale_sum = h.stale_sum;
    s->stale_max = (int64_t)h.stale_max;
    s->worker_train_max = h.wtm;
    s->registered = o->workers;
    s->started = 1;
    s->t0 = cli_now() - h.elapsed;
    s->ckpt_time = cli_now();
    char detail[160];
    snprintf(detail, sizeof detail, "from %s at version %llu; %d workers to rejoin",
             o->checkpoint, (unsigned long long)s->version, s->active);
    if (metrics_event(s->db, s->run, s_t(s), -1, "resumed", detail) != 0) {
        snprintf(local, sizeof local, "%s", metrics_errmsg(s->db));
        goto out;
    }
    s_log(s, "resumed run %lld %s", (long long)s->run, detail);
    if (s->active == 0)
        s_log(s, "every worker had finished or left before the restart: finishing the run");
    rc = 0;
out:
    if (rc != 0)
        snprintf(err, errlen, "cannot resume from %s: %s", o->checkpoint, local);
    st_close(&f);
    return rc;
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
        if (s->slots[i].round_g)
            g[k++] = s->slots[i].round_g;
    if (s_apply_average(s, g, k) != 0) {
        s_log(s, "round of %d gradients not applied: their average would make the weights "
                 "overflow", k);
        s_db(s, metrics_event(s->db, s->run, s_t(s), -1, "round_refused", "average not finite"));
    }
    s->round_arrived = 0;
    double now = cli_now();
    snapshot_t snap = {.ready = {0}};
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        wire_msg_close(&sl->grad);
        sl->round_g = NULL;
        if (sl->pending) {
            sl->pending = 0;
            sl->last_seen = now; /* it was silent because we held it */
            if (sl->active)
                s_reply_weights(s, sl, sl->held_request, now - sl->held_since, &snap);
        }
    }
    s_snapshot_close(&snap);
    s_maybe_checkpoint(s);
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
    snapshot_t snap = {.ready = {0}};
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->pending && (min == UINT64_MAX || sl->steps <= min + (uint64_t)s->o->staleness)) {
            sl->pending = 0;
            sl->last_seen = now; /* it was silent because we held it */
            s_reply_weights(s, sl, sl->held_request, now - sl->held_since, &snap);
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

/* Tells one worker who it is, the recipe, and where to resume. */
static void s_welcome(srv_t *s, slot_t *sl)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Welcome wm = PS__WELCOME__INIT;
    wm.worker_id = (uint32_t)(sl - s->slots);
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
    wm.incarnation = (uint32_t)sl->incarnation;
    wm.start_step = sl->steps;
    wm.compress = (Ps__Compression)sl->compress;
    wm.lr = s->o->lr;
    env.body_case = PS__ENVELOPE__BODY_WELCOME;
    env.welcome = &wm;
    env.request_id = sl->held_request; /* the Register it answers */
    sl->last_seen = cli_now();
    s_send(s, sl, &env, NULL);
}

static void s_welcome_all(srv_t *s)
{
    metrics_run_info_t info = {.mode = server_mode_name(s->o->mode), .dataset = s->o->data_dir,
                               .workers = s->o->workers, .epochs = s->o->epochs,
                               .batch_size = s->o->batch_size, .threads = s->slots[0].threads,
                               .train_limit = s->train_count, .staleness = s->o->staleness,
                               .lr = s->o->lr, .momentum = s->o->momentum, .seed = s->o->seed};
    s->run = metrics_run_begin(s->db, &info);
    if (s->run < 0) {
        /* A run that cannot be recorded is not started: its figures and its
         * status would be lost. */
        char why[600];
        snprintf(why, sizeof why, "the server cannot record the run in its database (%s); "
                 "the run is not started", metrics_errmsg(s->db));
        fprintf(stderr, "error: %s\n", why);
        for (int i = 0; i < s->o->workers; i++) {
            s->request = s->slots[i].held_request;
            s_error(s, &s->slots[i].peer, PS__ERROR_CODE__ERROR_STATE, why);
        }
        s->run = 0;
        s->fatal = 1;
        return;
    }
    s->started = 1;
    s->t0 = cli_now();
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        s_db(s, metrics_worker(s->db, s->run, i, sl->name, sl->host, (int)sl->shard,
                               sl->threads, 0));
        s_welcome(s, sl);
    }
    s_log(s, "all %d workers registered: run %lld, mode %s, training starts", s->o->workers,
          (long long)s->run, server_mode_name(s->o->mode));
}

/* A worker comes back under its name after the run started: its process
 * restarted, or this server did (--resume). It gets a new incarnation and
 * resumes after the steps already applied; a gradient of it still waiting in
 * a sync round is dropped (it will compute that step again). */
static void s_rejoin(srv_t *s, slot_t *sl, const wire_peer_t *peer, const Ps__Register *r)
{
    int id = (int)(sl - s->slots);
    if (sl->pending && s->o->mode == MODE_SYNC && sl->round_g) {
        wire_msg_close(&sl->grad);
        sl->round_g = NULL;
        s->round_arrived--;
        sl->steps--;
    }
    sl->pending = 0;
    sl->peer = *peer;
    if (!sl->key[0])
        snprintf(sl->key, sizeof sl->key, "%s", peer->key);
    sl->held_request = s->request;
    sl->incarnation++;
    sl->threads = (int)r->threads;
    sl->compress = (int)r->compress;
    if (r->host)
        snprintf(sl->host, sizeof sl->host, "%s", r->host);
    if (!sl->active) {
        sl->active = 1;
        sl->evicted = 0;
        s->active++;
    }
    char detail[160];
    snprintf(detail, sizeof detail, "incarnation %d resumes after step %llu", sl->incarnation,
             (unsigned long long)sl->steps);
    s_log(s, "worker %d (%s) rejoined: %s", id, sl->name, detail);
    s_db(s, metrics_worker(s->db, s->run, id, sl->name, sl->host, (int)sl->shard, sl->threads,
                           sl->incarnation));
    s_db(s, metrics_event(s->db, s->run, s_t(s), id, "rejoined", detail));
    s_welcome(s, sl);
}

/* A name or host a peer sent: at most max bytes of valid UTF-8 (no overlong
 * forms, surrogates or code points past U+10FFFF) without control characters,
 * so that it can go into the log, the database and the checkpoint's JSON.
 * NULL when it is fine, else what is wrong. */
static const char *s_text_problem(const char *t, size_t max)
{
    size_t n = strlen(t);
    if (n > max)
        return "is too long";
    const unsigned char *p = (const unsigned char *)t, *end = p + n;
    while (p < end) {
        uint32_t c = *p;
        int len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                             : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (len == 0 || end - p < len)
            return "is not valid UTF-8";
        if (len > 1)
            c &= 0x3fu >> (len - 1);
        for (int k = 1; k < len; k++) {
            if ((p[k] & 0xc0) != 0x80)
                return "is not valid UTF-8";
            c = c << 6 | (p[k] & 0x3fu);
        }
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (c < least[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return "is not valid UTF-8";
        if (c < 0x20 || (c >= 0x7f && c < 0xa0))
            return "has a control character";
        p += len;
    }
    return NULL;
}

static const char S_LIVE_NAME[] = "a live worker is registered under this name (its connection "
                                  "is still open); give each worker its own --name";

/* Is the connection that registered this slot still there? The gate knows.
 * On a ROUTER, a probe that the worker drops (an Ack to no request it made)
 * cannot be queued to a peer that disconnected (ZMQ_ROUTER_MANDATORY:
 * EHOSTUNREACH, or EAGAIN while its pipe is being torn down). */
static int s_peer_alive(srv_t *s, const slot_t *sl)
{
    if (sl->peer.len == 0)
        return 0; /* none since a --resume */
    if (s->gate)
        return gate_connected(s->gate, sl->peer.id, sl->peer.len);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Ack ack = PS__ACK__INIT;
    ack.version = s->version;
    env.body_case = PS__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    env.request_id = UINT64_MAX;
    return wire_send(s->sock, &sl->peer, &env, NULL, ZMQ_DONTWAIT) >= 0;
}

/* Why a registration under a taken name after the start may not take the
 * slot over, or NULL when it may (a rejoin): a name belongs to the CurveZMQ
 * key that first registered it, and while its connection is alive to no one
 * else. */
static const char *s_rejoin_problem(srv_t *s, const slot_t *sl, const wire_peer_t *peer)
{
    int same_conn = sl->peer.len == peer->len && memcmp(sl->peer.id, peer->id, peer->len) == 0;
    if (sl->done)
        return "a worker with this name has already finished its epochs";
    if (sl->key[0] && strcmp(sl->key, peer->key) != 0)
        return "this name belongs to another worker's CurveZMQ key";
    if (sl->active && !same_conn && s_peer_alive(s, sl))
        return S_LIVE_NAME;
    return NULL;
}

/* Holds a registration that claims a live worker's name (see slot_t.claim). */
static void s_claim(srv_t *s, slot_t *sl, const wire_peer_t *peer, const Ps__Register *r)
{
    int same = sl->claim && sl->claim_peer.len == peer->len &&
               memcmp(sl->claim_peer.id, peer->id, peer->len) == 0;
    if (sl->claim && !same) /* an earlier claimant loses its place */
        wire_send_error(s->sock, &sl->claim_peer, sl->claim_request,
                        PS__ERROR_CODE__ERROR_STATE, S_LIVE_NAME);
    if (!same)
        sl->claim_since = cli_now();
    sl->claim = 1;
    sl->claim_peer = *peer;
    sl->claim_request = s->request;
    sl->claim_threads = (int)r->threads;
    sl->claim_compress = (int)r->compress;
    snprintf(sl->claim_host, sizeof sl->claim_host, "%s", r->host ? r->host : "");
}

/* Settles held claims: a rejoin once the old connection is gone, a refusal
 * after S_CLAIM_GRACE seconds. */
static void s_settle_claims(srv_t *s)
{
    for (int i = 0; i < s->registered; i++) {
        slot_t *sl = &s->slots[i];
        if (!sl->claim)
            continue;
        const char *bad = s_rejoin_problem(s, sl, &sl->claim_peer);
        if (bad && bad == S_LIVE_NAME && cli_now() - sl->claim_since < S_CLAIM_GRACE)
            continue;
        sl->claim = 0;
        uint64_t request = s->request;
        s->request = sl->claim_request;
        if (bad) {
            s_log_refused(s, "refused registration of %s: %s", sl->name, bad);
            s_error(s, &sl->claim_peer, PS__ERROR_CODE__ERROR_STATE, bad);
        } else {
            Ps__Register r = PS__REGISTER__INIT;
            r.name = sl->name;
            r.host = sl->claim_host;
            r.threads = (uint32_t)sl->claim_threads;
            r.compress = (Ps__Compression)sl->claim_compress;
            s_rejoin(s, sl, &sl->claim_peer, &r);
        }
        s->request = request;
    }
}

static void s_on_register(srv_t *s, const wire_peer_t *peer, const Ps__Register *r)
{
    const char *name = r->name && *r->name ? r->name : "unnamed", *bad;
    char why[200];
    if ((int)r->compress < 0 || r->compress > PS__COMPRESSION__COMPRESSION_INT8) {
        s_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, "unknown compression");
        return;
    }
    if ((bad = s_text_problem(name, sizeof s->slots[0].name - 1)) ||
        (r->host && (bad = s_text_problem(r->host, sizeof s->slots[0].host - 1)))) {
        snprintf(why, sizeof why, "worker %s %s: use at most 127 bytes of printable UTF-8 "
                 "(--name)", r->host && !s_text_problem(name, 127) ? "host" : "name", bad);
        s_log_refused(s, "refused a registration: %s", why);
        s_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, why);
        return;
    }
    if (r->threads > 1024) {
        s_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, "threads out of range (0..1024)");
        return;
    }
    for (int i = 0; i < s->registered; i++) {
        slot_t *sl = &s->slots[i];
        if (strcmp(sl->name, name) != 0)
            continue;
        int same_conn = sl->peer.len == peer->len && memcmp(sl->peer.id, peer->id, peer->len) == 0;
        if (!s->started && same_conn)
            return; /* a resent Register: its Welcome comes when all have registered */
        if (!s->started) {
            s_error(s, peer, PS__ERROR_CODE__ERROR_STATE,
                            "a worker with this name is already registered; give each "
                            "worker its own --name");
            s_log_refused(s, "refused registration: duplicate name %s", name);
        } else if ((bad = s_rejoin_problem(s, sl, peer)) == S_LIVE_NAME) {
            s_claim(s, sl, peer, r);
        } else if (bad) {
            s_error(s, peer, PS__ERROR_CODE__ERROR_STATE, bad);
            s_log_refused(s, "refused registration of %s: %s", name, bad);
        } else
            s_rejoin(s, sl, peer, r);
        return;
    }
    if (s->started) {
        s_error(s, peer, PS__ERROR_CODE__ERROR_FULL,
                        "the run has started and all worker slots are taken (a worker that "
                        "restarts must keep its --name to rejoin)");
        s_log_refused(s, "refused registration of %s: the run has started", name);
        return;
    }
    int id = s->registered++;
    slot_t *sl = &s->slots[id];
    snprintf(sl->name, sizeof sl->name, "%s", name);
    snprintf(sl->host, sizeof sl->host, "%s", r->host ? r->host : "");
    snprintf(sl->key, sizeof sl->key, "%s", peer->key);
    sl->peer = *peer;
    sl->held_request = s->request;
    sl->threads = (int)r->threads;
    sl->compress = (int)r->compress;
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
        /* An evicted worker gets UNKNOWN_WORKER: it registers again and
         * rejoins; a finished one has nothing more to do. */
        snprintf(why, sizeof why, "%s from worker %u, which has %s", what, id,
                 s->slots[id].done ? "finished" : "been evicted (register again to rejoin)");
        if (s->slots[id].done)
            code = PS__ERROR_CODE__ERROR_STATE;
    } else {
        return &s->slots[id];
    }
    s_log_refused(s, "refused %s", why);
    s_error(s, peer, code, why);
    return NULL;
}

/* A push. In sync mode the gradient's message moves into the slot (and *m is
 * left empty) until the round is applied. */
static void s_on_push(srv_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    const Ps__Push *p = m->env->push;
    slot_t *sl = s_check_worker(s, peer, p->worker_id, "push");
    if (!sl)
        return;
    char why[160] = "";
    if (p->step >= 1 && p->step <= sl->steps) {
        /* Already applied: a retry after a lost or slow reply. Exactly once:
         * never apply it again; answer it unless the original's answer is
         * still to come. */
        s->duplicates++;
        if (!sl->pending) {
            snapshot_t snap = {.ready = {0}};
            s_reply_weights(s, sl, s->request, 0.0, &snap);
            s_snapshot_close(&snap);
        }
        return;
    }
    if (p->incarnation != (uint32_t)sl->incarnation)
        snprintf(why, sizeof why, "push from incarnation %u; the worker is now incarnation %d",
                 p->incarnation, sl->incarnation);
    else if (sl->pending)
        snprintf(why, sizeof why, "push of step %llu while step %llu is still held",
                 (unsigned long long)p->step, (unsigned long long)sl->steps);
    else if (p->step != sl->steps + 1)
        snprintf(why, sizeof why, "push of step %llu out of order: expected step %llu",
                 (unsigned long long)p->step, (unsigned long long)sl->steps + 1);
    else if (p->version > s->version)
        snprintf(why, sizeof why, "push computed on version %llu, newer than the server's %llu",
                 (unsigned long long)p->version, (unsigned long long)s->version);
    else if (!s_in(p->loss, 1e6))
        snprintf(why, sizeof why, "push of step %llu has a loss that is negative, not finite or "
                 "over 1e6 (%g)", (unsigned long long)p->step, (double)p->loss);
    else if (p->epoch < 1 || p->epoch > (uint32_t)s->o->epochs)
        snprintf(why, sizeof why, "push of step %llu names epoch %u (1..%d)",
                 (unsigned long long)p->step, p->epoch, s->o->epochs);
    else if (p->encoding != wire_gradient_encoding((Ps__Compression)sl->compress))
        snprintf(why, sizeof why, "push in tensor encoding %d; this worker was granted "
                 "compression %d at registration (register again to change it)",
                 (int)p->encoding, sl->compress);
    if (*why) {
        s_log_refused(s, "refused worker %d: %s", (int)(sl - s->slots), why);
        s_error(s, peer, PS__ERROR_CODE__ERROR_STATE, why);
        return;
    }
    const float *g = m->tensor;
    if (!g) { /* compressed: decode into the slot's buffer */
        if (!sl->gbuf && !(sl->gbuf = malloc(MODEL_NPARAMS * sizeof(float)))) {
            s_error(s, peer, PS__ERROR_CODE__ERROR_STATE, "server out of memory");
            return;
        }
        g = wire_tensor(m, sl->gbuf);
    }
    if (!model_sgd_step_finite(s->w, s->v, g, MODEL_NPARAMS, (float)s->o->lr,
                               (float)s->o->momentum)) {
        snprintf(why, sizeof why, "push of step %llu would make the weights or the momentum "
                 "overflow (not finite); not applied", (unsigned long long)p->step);
        s_log_refused(s, "refused worker %d: %s", (int)(sl - s->slots), why);
        s_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, why);
        return;
    }
    sl->steps = p->step;
    sl->last_seen = cli_now();
    s_db(s, metrics_step(s->db, s->run, (int)(sl - s->slots), (int64_t)p->step, (int)p->epoch,
                         p->loss, s_t(s)));
    switch (s->o->mode) {
    case MODE_SYNC:
        if (m->tensor) { /* float32: the slot keeps the message itself */
            wire_msg_move(&sl->grad, m);
            g = sl->grad.tensor;
        }
        sl->round_g = g;
        s->round_arrived++;
        sl->pending = 1;
        sl->held_since = cli_now();
        sl->held_request = s->request;
        s_check_round(s);
        break;
    case MODE_ASYNC: {
        s_apply(s, g, p->version);
        snapshot_t snap = {.ready = {0}};
        s_reply_weights(s, sl, s->request, 0.0, &snap);
        s_snapshot_close(&snap);
        s_maybe_checkpoint(s);
        break;
    }
    case MODE_SSP:
        s_apply(s, g, p->version);
        sl->pending = 1;
        sl->held_since = cli_now();
        sl->held_request = s->request;
        s_check_ssp(s);
        s_maybe_checkpoint(s);
        break;
    }
}

/* What is out of range in an epoch report, or NULL. */
static const char *s_epoch_problem(const srv_t *s, const Ps__EpochReport *e)
{
    const double day = 86400 * 365.0; /* seconds: a year */
    if (e->epoch < 1 || e->epoch > (uint32_t)s->o->epochs)
        return "epoch out of range (1..--epochs)";
    if (!s_in(e->train_loss, 1e6))
        return "train_loss is negative, not finite or over 1e6";
    if (!s_in(e->test_accuracy, 100))
        return "test_accuracy is not a percentage (0..100)";
    if (!s_in(e->epoch_seconds, day) || !s_in(e->compute_seconds, day) ||
        !s_in(e->push_seconds, day) || !s_in(e->pull_seconds, day) ||
        !s_in(e->wait_seconds, day))
        return "a time is negative, not finite or over a year";
    if (e->images > (uint64_t)s->train_count || e->bytes_sent > ((uint64_t)1 << 50) ||
        e->bytes_received > ((uint64_t)1 << 50))
        return "images or bytes out of range";
    return NULL;
}

/* Refuses a report with out-of-range figures: they would be stored and
 * plotted as sent. */
static int s_refuse_figures(srv_t *s, const wire_peer_t *peer, const char *what,
                            const char *problem)
{
    if (!problem)
        return 0;
    char why[200];
    snprintf(why, sizeof why, "%s refused: %s", what, problem);
    s_log_refused(s, "refused %s", why);
    s_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, why);
    return -1;
}

static void s_on_epoch(srv_t *s, const wire_peer_t *peer, const Ps__EpochReport *e)
{
    slot_t *sl = s_check_worker(s, peer, e->worker_id, "epoch report");
    if (!sl || s_refuse_figures(s, peer, "epoch report", s_epoch_problem(s, e)))
        return;
    metrics_epoch_t me = {.epoch = (int)e->epoch, .train_loss = e->train_loss,
                          .test_accuracy = e->test_accuracy, .epoch_seconds = e->epoch_seconds,
                          .compute_seconds = e->compute_seconds, .push_seconds = e->push_seconds,
                          .pull_seconds = e->pull_seconds, .wait_seconds = e->wait_seconds,
                          .images = (int64_t)e->images, .bytes_sent = (int64_t)e->bytes_sent,
                          .bytes_received = (int64_t)e->bytes_received};
    s_db(s, metrics_epoch(s->db, s->run, (int)e->worker_id, &me, s_t(s)));
    s_stats(s);
    s_log(s, "worker %u epoch %u: train loss %.4f, test accuracy %.2f%%, %.1f s (compute %.1f, "
             "wait %.1f, comm %.1f)",
          e->worker_id, e->epoch, e->train_loss, e->test_accuracy, e->epoch_seconds,
          e->compute_seconds, e->wait_seconds, e->push_seconds + e->pull_seconds);
    s_reply_ack(s, sl);
}

/* A worker that stops before the end says so: it leaves every barrier at
 * once instead of holding the others for --worker-timeout, and may rejoin. */
static void s_on_leaving(srv_t *s, slot_t *sl)
{
    int id = (int)(sl - s->slots);
    char detail[96];
    snprintf(detail, sizeof detail, "stopped after %llu steps", (unsigned long long)sl->steps);
    s_log(s, "worker %d (%s) left: %s", id, sl->name, detail);
    s_db(s, metrics_event(s->db, s->run, s_t(s), id, "left", detail));
    sl->evicted = 1; /* as an evicted worker: it may register again */
    s_reply_ack(s, sl);
    s_leave(s, sl);
}

static void s_on_done(srv_t *s, const wire_peer_t *peer, const Ps__Done *d)
{
    slot_t *sl = s_check_worker(s, peer, d->worker_id, "done");
    if (!sl || s_refuse_figures(s, peer, "done",
                                !s_in(d->train_seconds, 86400 * 365.0) ? "train_seconds out of range"
                                : !s_in(d->test_accuracy, 100) ? "test_accuracy is not a percentage"
                                                               : NULL))
        return;
    if (d->leaving) {
        s_on_leaving(s, sl);
        return;
    }
    sl->done = 1;
    if (d->train_seconds > s->worker_train_max)
        s->worker_train_max = d->train_seconds;
    char detail[128];
    snprintf(detail, sizeof detail, "steps=%llu train_seconds=%.1f test_accuracy=%.2f",
             (unsigned long long)sl->steps, d->train_seconds, d->test_accuracy);
    s_db(s, metrics_event(s->db, s->run, s_t(s), (int)d->worker_id, "done", detail));
    s_log(s, "worker %u done: %s", d->worker_id, detail);
    /* Durable before acknowledged: a server that crashes after this Ack
     * resumes knowing the worker finished, instead of waiting for it. */
    if (s->o->checkpoint_every > 0)
        s_checkpoint(s);
    s_reply_ack(s, sl);
    s_leave(s, sl);
}

static void s_handle(srv_t *s)
{
    wire_peer_t peer;
    wire_msg_t m;
    char err[256];
    s->request = 0; /* unknown until the message decodes */
    int rc = wire_recv(s->sock, &peer, &m, err, sizeof err);
    if (rc < 0)
        return;
    if (rc > 0) {
        s_log_refused(s, "refused a message: %s", err);
        s_error(s, &peer, (Ps__ErrorCode)rc, err);
        return;
    }
    s->bytes_in += (int64_t)m.bytes;
    Ps__Envelope *env = m.env;
    s->request = env->request_id;
    switch (env->body_case) {
    case PS__ENVELOPE__BODY_REGISTER: s_on_register(s, &peer, env->register_); break;
    case PS__ENVELOPE__BODY_PULL: {
        slot_t *sl = s_check_worker(s, &peer, env->pull->worker_id, "pull");
        snapshot_t snap = {.ready = {0}};
        if (sl)
            s_reply_weights(s, sl, s->request, 0.0, &snap);
        s_snapshot_close(&snap);
        break;
    }
    case PS__ENVELOPE__BODY_PUSH: s_on_push(s, &peer, &m); break;
    case PS__ENVELOPE__BODY_EPOCH: s_on_epoch(s, &peer, env->epoch); break;
    case PS__ENVELOPE__BODY_DONE: s_on_done(s, &peer, env->done); break;
    default:
        snprintf(err, sizeof err, "a worker may not send a %s message",
                 wire_kind_name(env->body_case));
        s_log_refused(s, "refused: %s", err);
        s_error(s, &peer, PS__ERROR_CODE__ERROR_STATE, err);
        break;
    }
    wire_msg_close(&m);
}

/* Evicts active workers that have made no progress (pushed no new step)
 * for longer than the timeout: pulls or repeated pushes do not keep a worker
 * in a barrier that it holds up. */
static void s_check_deadlines(srv_t *s)
{
    double now = cli_now();
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        if (!sl->active || sl->pending || now - sl->last_seen <= s->o->worker_timeout)
            continue;
        char detail[128];
        snprintf(detail, sizeof detail, "no new step for %.1f s (--worker-timeout %.1f) after %llu steps",
                 now - sl->last_seen, s->o->worker_timeout, (unsigned long long)sl->steps);
        s_log(s, "evicting worker %d (%s): %s", i, sl->name, detail);
        s_db(s, metrics_event(s->db, s->run, s_t(s), i, "evicted", detail));
        sl->evicted = 1;
        s_leave(s, sl);
    }
}

/* A secret key file others can read is no secret: say so (keygen writes
 * it 0600; a copy or an archive may not have kept that). */
static void s_warn_secret_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, "warning: the secret key %s is readable by other users (mode %03o): "
                        "chmod 600 %s\n", path, (unsigned)(st.st_mode & 0777), path);
}

/* Answers the ZAP requests (rfc.zeromq.org/spec/27) libzmq makes during
 * CurveZMQ handshakes: a client key found among the allowed certificates
 * is admitted with the key (Z85) as its User-Id, which every message of the
 * connection then carries (wire_peer_t.key); any other is refused. */
static void s_zap_serve(srv_t *s)
{
    while (s->zap) {
        zmq_msg_t part[7];
        int n = 0, more = 1;
        while (more && n < 7) {
            zmq_msg_init(&part[n]);
            if (zmq_msg_recv(&part[n], s->zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(&part[n]);
                return;
            }
            more = zmq_msg_more(&part[n++]);
        }
        char key[41] = "", seq[64] = "";
        if (n >= 2 && zmq_msg_size(&part[1]) < sizeof seq)
            memcpy(seq, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]));
        if (n == 7 && zmq_msg_size(&part[6]) == 32)
            zmq_z85_encode(key, zmq_msg_data(&part[6]), 32);
        while (more) { /* more frames than a CURVE request has */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, s->zap, 0);
            more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close(&part[i]);
        int ok = key[0] && zcertstore_lookup(s->allowed, key) != NULL;
        const char *reply[6] = {"1.0", seq, ok ? "200" : "400", ok ? "OK" : "key not allowed",
                                ok ? key : "", ""};
        for (int i = 0; i < 6; i++)
            zmq_send(s->zap, reply[i], strlen(reply[i]), i < 5 ? ZMQ_SNDMORE : 0);
    }
}

/* Turns on CurveZMQ for the socket: the server's certificate, and a ZAP
 * handler that admits only the public keys found in the allowed directory. */
static int s_curve(srv_t *s)
{
    const server_opts_t *o = s->o;
    zcert_t *cert = zcert_load(o->curve_secret);
    if (!cert) {
        fprintf(stderr, "error: cannot read the certificate %s (make one with paramserver "
                        "--keygen PATH; give PATH_secret here)\n", o->curve_secret);
        return -1;
    }
    if (strcmp(zcert_secret_txt(cert), "0000000000000000000000000000000000000000") == 0) {
        fprintf(stderr, "error: %s holds no secret key: give the _secret file\n",
                o->curve_secret);
        zcert_destroy(&cert);
        return -1;
    }
    zdir_t *dir = zdir_new(o->allowed_keys, NULL);
    if (!dir) {
        fprintf(stderr, "error: --allowed-keys %s is not a readable directory\n",
                o->allowed_keys);
        zcert_destroy(&cert);
        return -1;
    }
    if (zdir_count(dir) == 0)
        fprintf(stderr, "warning: --allowed-keys %s holds no public certificates: no worker can "
                        "connect (copy each worker's public file there)\n", o->allowed_keys);
    zdir_destroy(&dir);
    s_warn_secret_mode(o->curve_secret);
    /* Our own ZAP handler rather than czmq's zauth, which admits the same
     * keys but does not pass the client's key on as its User-Id. */
    s->allowed = zcertstore_new(o->allowed_keys);
    s->zap = zmq_socket(s->ctx, ZMQ_REP);
    if (!s->allowed || zmq_bind(s->zap, "inproc://zeromq.zap.01") != 0) {
        fprintf(stderr, "error: cannot start the CurveZMQ handler: %s\n", zmq_strerror(errno));
        zcert_destroy(&cert);
        return -1;
    }
    int server = 1;
    zmq_setsockopt(s->sock, ZMQ_CURVE_SERVER, &server, sizeof server);
    zcert_apply(cert, s->sock);
    s_log(s, "CurveZMQ on: server key %s; admitting the public keys in %s",
          zcert_public_txt(cert), o->allowed_keys);
    zcert_destroy(&cert);
    return 0;
}

/* Explains a failed bind: the address, the cause and the fix. */
static void s_bind_error(const char *bind, int e)
{
    fprintf(stderr, "error: cannot listen on %s: %s\n", bind, zmq_strerror(e));
    if (e == EADDRINUSE)
        fprintf(stderr, "(another program, perhaps another paramserver, uses this port: stop "
                        "it or choose another port with --bind tcp://*:PORT)\n");
    else if (e == EADDRNOTAVAIL || e == ENODEV)
        fprintf(stderr, "(this machine has no such address or interface: use tcp://*:PORT "
                        "for all interfaces, or one of `ip -brief addr`)\n");
    else
        fprintf(stderr, "(--bind takes a ZeroMQ endpoint such as tcp://*:5555 or "
                        "tcp://192.168.1.10:5555)\n");
}

/* Plain TCP goes through the gate (gate.h): the server's socket is a PAIR
 * bound in-process, the gate's STREAM socket listens. */
static int s_listen_gate(srv_t *s)
{
    char inner[64];
    snprintf(inner, sizeof inner, "inproc://paramserver-gate-%p", (void *)s);
    int zero = 0;
    s->sock = zmq_socket(s->ctx, ZMQ_PAIR);
    zmq_setsockopt(s->sock, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s->sock, ZMQ_RCVHWM, &zero, sizeof zero);
    if (zmq_bind(s->sock, inner) != 0 ||
        !(s->gate = gate_new(s->ctx, s->o->bind, inner, 2 * s->o->workers + 64))) {
        s_bind_error(s->o->bind, errno);
        return -1;
    }
    return 0;
}

/* Opens the socket with a message naming the address and the fix. */
static int s_listen(srv_t *s)
{
    /* czmq's context (signals stay ours). */
    zsys_handler_set(NULL);
    s->ctx = zsys_init();
    if (!s->o->curve_secret && strncmp(s->o->bind, "tcp://", 6) == 0) {
        if (s_listen_gate(s) != 0)
            return -1;
    } else {
        s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
        /* ZMQ_MAXMSGSIZE bounds a frame; a few replies may queue toward a
         * peer that does not read them (SNDHWM), then sends fail. */
        int64_t maxmsg = WIRE_MAX_MESSAGE;
        int linger = 2000, mandatory = 1, sndhwm = 8;
        zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
        zmq_setsockopt(s->sock, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
        if (s->o->curve_secret && s_curve(s) != 0)
            return -1;
        if (zmq_bind(s->sock, s->o->bind) != 0) {
            s_bind_error(s->o->bind, errno);
            return -1;
        }
    }
    char last[256];
    size_t len = sizeof last;
    if (s->gate ? snprintf(last, sizeof last, "%s", gate_endpoint(s->gate)) > 0
                : zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, last, &len) == 0)
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
    if (done == 0 || s->updates == 0) {
        /* Nothing trained: an existing model (of a better run) stays, and so
         * does the checkpoint, for a --resume with workers. */
        fprintf(stderr, "error: %s; the model is not saved (%s is left as it was) and the "
                        "checkpoint is kept\n",
                done == 0 ? "no worker finished its epochs (all were evicted)"
                          : "no update was applied",
                path);
        status = 1;
    } else if (!model_all_finite(s->w, MODEL_NPARAMS)) {
        fprintf(stderr, "error: the final weights are not finite; the model is not saved\n");
        status = 1;
    } else if (cli_mkdirs(s->o->out_dir) != 0) {
        fprintf(stderr, "error: cannot create %s: %s\n", s->o->out_dir, strerror(errno));
        status = 1;
    } else if (modelfile_save(path, s->w, meta, err, sizeof err) != 0) {
        fprintf(stderr, "error: cannot save the model: %s\n", err);
        status = 1;
    } else {
        s_log(s, "model saved: %s", path);
        /* The run is over: nothing to resume. (A service that restarts the
         * server resumes exactly when a checkpoint is there.) */
        if (unlink(s->o->checkpoint) == 0)
            s_log(s, "checkpoint %s removed: the run is complete", s->o->checkpoint);
    }
    if (metrics_run_end(s->db, s->run, status == 0 ? "done" : "failed", accuracy,
                        train_seconds) != 0) {
        fprintf(stderr, "error: the run's end could not be recorded (%s): the database still "
                        "says 'running'\n", metrics_errmsg(s->db));
        status = 1;
    }
    if (s->db_failures > 0)
        fprintf(stderr, "error: %ld writes to the metrics database failed: its figures of this "
                        "run are incomplete\n", s->db_failures);
    printf("summary: mode=%s workers=%d finished=%d updates=%lld duplicates=%lld "
           "mean_staleness=%.2f test_accuracy=%.2f train_seconds=%.1f wall_seconds=%.1f "
           "mb_in=%.1f mb_out=%.1f\n",
           server_mode_name(s->o->mode), s->o->workers, done, (long long)s->updates,
           (long long)s->duplicates, s->updates ? s->stale_sum / (double)s->updates : 0.0,
           accuracy, train_seconds, wall, (double)s->bytes_in / 1e6, (double)s->bytes_out / 1e6);
    return status;
}

/* Creates dir if needed and checks that files can be written in it, at
 * start-up rather than when the model or a checkpoint is due. */
static int s_check_writable(const char *dir, const char *flag, const char *what)
{
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.paramserver-probe-%d", dir, (int)getpid());
    int fd = -1;
    if (cli_mkdirs(dir) == 0)
        fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        fprintf(stderr, "error: cannot write in %s %s (%s): %s\n(give %s a directory this "
                        "user can write in)\n",
                what, dir, flag, strerror(errno), flag);
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

server_t *server_new(const server_opts_t *o)
{
    srv_t *s = calloc(1, sizeof *s);
    char err[512];
    if (!s) {
        fprintf(stderr, "error: out of memory\n");
        return NULL;
    }
    s->o = o;
    if (o->data_dir) {
        idx_dataset_t train = {0};
        if (idx_load(o->data_dir, "train", &train, err, sizeof err) != 0 ||
            idx_load(o->data_dir, "t10k", &s->test, err, sizeof err) != 0) {
            fprintf(stderr, "error: %s\n(the server needs MNIST for the shard split and the "
                            "final evaluation: run `make data` or pass --data-dir DIR)\n", err);
            goto fail;
        }
        s->train_count = o->train_limit > 0 && o->train_limit < train.count ? o->train_limit
                                                                            : train.count;
        idx_free(&train);
    } else
        s->train_count = o->train_limit; /* no data: the fuzzer's server */
    if (s->train_count < o->workers) {
        fprintf(stderr, "error: %d training images cannot be split among %d workers\n",
                s->train_count, o->workers);
        goto fail;
    }
    s->w = malloc(MODEL_NPARAMS * sizeof(float));
    s->v = calloc(MODEL_NPARAMS, sizeof(float));
    s->slots = calloc((size_t)o->workers, sizeof *s->slots);
    if (!s->w || !s->v || !s->slots) {
        fprintf(stderr, "error: out of memory\n");
        goto fail;
    }
    model_init(s->w, o->seed);
    if (s_check_writable(o->out_dir, "--out", "the output directory") != 0)
        goto fail;
    if (o->checkpoint_every > 0 || o->resume) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", o->checkpoint);
        char *slash = strrchr(dir, '/');
        if (slash)
            slash[slash == dir] = '\0';
        if (s_check_writable(slash ? dir : ".", "--checkpoint", "the checkpoint's directory") != 0)
            goto fail;
    }
    s->db = metrics_open(o->db, err, sizeof err);
    if (!s->db) {
        fprintf(stderr, "error: %s\n", err);
        goto fail;
    }
    if (o->resume && s_resume(s, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        s->run = 0; /* not ours to mark failed */
        goto fail;
    }
    if (s_listen(s) != 0)
        goto fail;
    s->t_listen = cli_now();
    return s;
fail:
    server_destroy(&s);
    return NULL;
}

int server_handle_ready(server_t *s)
{
    int events = 0, n = 0;
    size_t len = sizeof events;
    while (!server_stop && zmq_getsockopt(s->sock, ZMQ_EVENTS, &events, &len) == 0 &&
           (events & ZMQ_POLLIN)) {
        s_handle(s);
        n++;
    }
    return n;
}

void server_reset(server_t *s)
{
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        float *gbuf = sl->gbuf;
        wire_msg_close(&sl->grad);
        memset(sl, 0, sizeof *sl);
        sl->gbuf = gbuf;
    }
    if (!s->w0 && (s->w0 = malloc(MODEL_NPARAMS * sizeof(float))))
        model_init(s->w0, s->o->seed); /* once: it costs more than an input */
    if (s->w0)
        memcpy(s->w, s->w0, MODEL_NPARAMS * sizeof(float));
    else
        model_init(s->w, s->o->seed);
    memset(s->v, 0, MODEL_NPARAMS * sizeof(float));
    s->run = 0;
    s->version = s->ckpt_version = 0;
    s->registered = s->active = s->started = s->round_arrived = s->fatal = 0;
    s->updates = s->stale_max = s->duplicates = s->bytes_in = s->bytes_out = 0;
    s->stale_sum = s->worker_train_max = 0.0;
    s->refusals_logged = s->refusals_hidden = s->db_failures = 0;
    /* The rows of every input would pile up in an in-memory database: start
     * a new one now and then. */
    if (++s->resets % 4096 == 0) {
        char err[512];
        metrics_close(&s->db);
        if (!(s->db = metrics_open(s->o->db, err, sizeof err))) {
            fprintf(stderr, "server_reset: %s\n", err);
            abort(); /* the fuzzer's rig is broken */
        }
    }
}

const char *server_invariant_problem(const server_t *s)
{
    int active = 0, held = 0;
    for (int i = 0; i < s->o->workers; i++) {
        const slot_t *sl = &s->slots[i];
        active += sl->active;
        held += sl->round_g != NULL;
        if (sl->active && (sl->done || sl->evicted))
            return "a slot is active and finished";
    }
    if (active != s->active || s->registered > s->o->workers || s->active > s->registered)
        return "the worker counts disagree";
    if (held != s->round_arrived)
        return "the sync round's count disagrees with the held gradients";
    if (!model_all_finite(s->w, MODEL_NPARAMS) || !model_all_finite(s->v, MODEL_NPARAMS))
        return "the weights or the momentum are not finite";
    return NULL;
}

void server_destroy(server_t **ps)
{
    if (!ps || !*ps)
        return;
    srv_t *s = *ps;
    if (s->run > 0 && /* started and not finished */
        metrics_run_end(s->db, s->run, "failed", 0.0, cli_now() - s->t0) != 0)
        fprintf(stderr, "error: the run's end could not be recorded (%s): the database still "
                        "says 'running'\n", metrics_errmsg(s->db));
    if (s->gate)
        gate_pump(s->gate); /* the last replies onto their connections */
    if (s->sock)
        zmq_close(s->sock);
    gate_destroy(&s->gate);
    if (s->zap)
        zmq_close(s->zap);
    zcertstore_destroy(&s->allowed);
    /* The context is czmq's: it ends it at exit. */
    metrics_close(&s->db);
    idx_free(&s->test);
    free(s->w);
    free(s->w0);
    free(s->v);
    for (int i = 0; s->slots && i < s->o->workers; i++) {
        wire_msg_close(&s->slots[i].grad);
        free(s->slots[i].gbuf);
    }
    free(s->slots);
    free(s);
    *ps = NULL;
}

int server_run(const server_opts_t *o)
{
    server_t *s = server_new(o);
    int status = 1;
    if (!s)
        return 1;
    while (!server_stop && !s->fatal && !(s->started && s->active == 0)) {
        zmq_pollitem_t items[3] = {{s->sock, 0, ZMQ_POLLIN, 0}};
        int n = 1;
        if (s->gate) {
            items[n++] = (zmq_pollitem_t){NULL, gate_fd(s->gate), ZMQ_POLLIN, 0};
            items[n++] = (zmq_pollitem_t){gate_inner(s->gate), 0, ZMQ_POLLIN, 0};
        }
        if (s->zap)
            items[n++] = (zmq_pollitem_t){s->zap, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(items, n, SERVER_TICK_MS) < 0 && errno != EINTR) {
            fprintf(stderr, "error: zmq_poll: %s\n", zmq_strerror(errno));
            goto out;
        }
        s_zap_serve(s);
        if (s->gate)
            gate_pump(s->gate);
        server_handle_ready(s);
        if (s->gate)
            gate_pump(s->gate);
        if (s->db && cli_now() - s->last_flush >= METRICS_BATCH_SECONDS) {
            /* Step rows wait in a batch; commit it even while no step comes
             * (barriers, evaluation), so a crash loses at most 2 s of them. */
            s_db(s, metrics_flush(s->db));
            s->last_flush = cli_now();
        }
        if (!s->started && cli_now() - s->t_listen > o->register_timeout) {
            fprintf(stderr, "error: only %d of %d workers registered within %.0f s "
                            "(--register-timeout); are the workers pointed at this server's "
                            "address, and is the port open?\n",
                    s->registered, o->workers, o->register_timeout);
            goto out;
        }
        if (s->started) {
            s_check_deadlines(s);
            s_settle_claims(s);
        }
    }
    if (s->fatal)
        goto out;
    if (server_stop) {
        /* A stop (SIGTERM from systemd, Ctrl-C) keeps what was trained. */
        if (s->started && s->o->checkpoint_every > 0 && s_checkpoint(s) == 0)
            fprintf(stderr, "interrupted: checkpoint written to %s (continue with --resume); "
                            "run %lld marked failed\n", o->checkpoint, (long long)s->run);
        else
            fprintf(stderr, "interrupted: run %lld marked failed\n", (long long)s->run);
        goto out;
    }
    status = s_finish(s); /* ends the run in the database either way */
    s->run = 0;
out:
    server_destroy(&s);
    return status;
}
