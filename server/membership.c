/* membership: registration, names, claims, rejoin, leave, eviction and done
 * (see membership.h). */
#include "membership.h"
#include "replica.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "checkpoint.h"
#include "clock.h"
#include "consistency.h"
#include "group.h"
#include "models.h"
#include "shard.h"
#include "transport.h"

static const char S_LIVE_NAME[] = "a live worker is registered under this name (its connection "
                                  "is still open); give each worker its own --name";

const char *member_name_problem(const char *t, size_t max)
{
    size_t n = strlen(t);
    if (n > max)
        return "is too long";
    const unsigned char *p = (const unsigned char *)t, *end = p + n;
    while (p < end) {
        uint32_t c = *p;
        int len = c < 0x80             ? 1
                  : (c & 0xe0) == 0xc0 ? 2
                  : (c & 0xf0) == 0xe0 ? 3
                  : (c & 0xf8) == 0xf0 ? 4
                                       : 0;
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

static int s_same_peer(const wire_peer_t *a, const wire_peer_t *b)
{
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

static int s_id(const server_t *s, const slot_t *sl)
{
    return (int)(sl - s->slots);
}

/* A fresh secret for a new incarnation (the shards know a worker by it). */
static uint64_t s_token(void)
{
    uint64_t t = 0;
    while (t == 0)
        if (getrandom(&t, sizeof t, 0) != (ssize_t)sizeof t)
            t = (uint64_t)(clock_now() * 1e9) ^ ((uint64_t)getpid() << 32);
    return t;
}

/* Tells one worker who it is, the recipe, where each range of the
 * parameters lives, and where to resume; the shards learn its new token
 * first. */
static void s_welcome(server_t *s, slot_t *sl)
{
    sl->token = s_token();
    sl->start_step = sl->steps;
    group_membership_changed(s);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Welcome wm = PS__WELCOME__INIT;
    int S = s->o->shards > 1 ? s->o->shards : 1;
    Ps__ShardRange ranges[S], *ptrs[S];
    group_welcome(s, &wm, ranges, ptrs);
    wm.token = sl->token;
    wm.worker_id = (uint32_t)s_id(s, sl);
    wm.workers = (uint32_t)s->o->workers;
    wm.run_id = s->run;
    wm.mode = (char *)server_mode_name(s->o->mode);
    wm.staleness = (uint32_t)s->o->staleness;
    wm.epochs = (uint32_t)s->o->epochs;
    wm.batch_size = (uint32_t)s->o->batch_size;
    wm.seed = s->o->seed;
    wm.train_limit = (uint32_t)s->train_count;
    wm.test_limit = (uint32_t)s->o->test_limit;
    wm.params = (uint32_t)s->model->nparams;
    wm.model = (char *)s->model->name;
    wm.incarnation = (uint32_t)sl->incarnation;
    wm.start_step = sl->steps;
    wm.compress = sl->compress;
    wm.lr = s->o->lr;
    wm.dataset = (char *)s->o->dataset;
    wm.data_fingerprint = s->data_fingerprint;
    wm.momentum = s->o->momentum;
    wm.alive_seconds = s->o->worker_timeout / 4;
    env.body_case = PS__ENVELOPE__BODY_WELCOME;
    env.welcome = &wm;
    env.request_id = sl->held_request; /* the Register it answers */
    sl->last_seen = clock_now();
    srv_send(s, sl, &env);
}

/* Every slot is taken: the run is recorded and starts. A run that cannot be
 * recorded is not started (its figures and its status would be lost): the
 * workers are told why and the server stops (s->fatal). */
static void s_start_run(server_t *s)
{
    metrics_run_info_t info = {.mode = server_mode_name(s->o->mode),
                               .model = s->model->name,
                               .dataset = s->o->dataset,
                               .workers = s->o->workers,
                               .epochs = s->o->epochs,
                               .batch_size = s->o->batch_size,
                               .threads = s->slots[0].threads,
                               .train_limit = s->train_count,
                               .staleness = s->o->staleness,
                               .lr = s->o->lr,
                               .momentum = s->o->momentum,
                               .seed = s->o->seed};
    int64_t run = metrics_run_begin(s->db, &info);
    if (run <= 0) {
        char why[600];
        snprintf(why, sizeof why,
                 "the server cannot record the run in its database (%s); "
                 "the run is not started",
                 metrics_errmsg(s->db));
        fprintf(stderr, "error: %s\n", why);
        for (int i = 0; i < s->o->workers; i++)
            srv_error_to(s, &s->slots[i].peer, s->slots[i].held_request,
                         PS__ERROR_CODE__ERROR_STATE, why);
        s->run = 0;
        s->fatal = 1;
        return;
    }
    s->run = run;
    s->started = 1;
    s->t0 = clock_now();
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        srv_db(s, metrics_worker(s->db, s->run, i, sl->name, sl->host, (int)sl->shard, sl->threads,
                                 0));
        s_welcome(s, sl);
    }
    srv_log(s, "all %d workers registered: run %lld, mode %s, data set %s, training starts",
            s->o->workers, (long long)s->run, server_mode_name(s->o->mode), s->o->dataset);
    int64_t per_epoch = cons_updates_per_epoch(s->o, s->train_count);
    double lr_end = cons_lr(s->o, UINT64_MAX, s->o->workers, per_epoch);
    if (lr_end != s->o->lr) { /* in the log and, as the runs table has no column, an event */
        char detail[160];
        snprintf(detail, sizeof detail,
                 "linear: lr %g at the first update, ramped to %g over %g epochs (%.0f updates)",
                 cons_lr(s->o, 0, s->o->workers, per_epoch), lr_end, s->o->warmup_epochs,
                 s->o->warmup_epochs * (double)per_epoch);
        srv_log(s, "lr scaling %s", detail);
        srv_db(s, metrics_event(s->db, s->run, 0.0, -1, "lr_scaling", detail));
    }
}

/* A worker comes back under its name after the run started: its process
 * restarted, or this server did (--resume). It gets a new incarnation and
 * resumes after the steps already applied (the policy drops what it left
 * half done). */
static void s_rejoin(server_t *s, slot_t *sl, const wire_peer_t *peer, const Ps__Register *r)
{
    int id = s_id(s, sl);
    s->policy->on_rejoin(s, sl);
    sl->peer = *peer;
    if (!sl->key[0])
        snprintf(sl->key, sizeof sl->key, "%s", peer->key);
    sl->held_request = s->request;
    sl->incarnation++;
    sl->threads = (int)r->threads;
    sl->compress = r->compress;
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
    srv_log(s, "worker %d (%s) rejoined: %s", id, sl->name, detail);
    srv_db(s, metrics_worker(s->db, s->run, id, sl->name, sl->host, (int)sl->shard, sl->threads,
                             sl->incarnation));
    srv_db(s, metrics_event(s->db, s->run, srv_elapsed(s), id, "rejoined", detail));
    s_welcome(s, sl);
}

/* Why a registration under a taken name after the start may not take the
 * slot over, or NULL when it may (a rejoin): a name belongs to the CurveZMQ
 * key that first registered it, and while its connection is alive to no one
 * else. */
static const char *s_rejoin_problem(server_t *s, const slot_t *sl, const wire_peer_t *peer)
{
    if (sl->done)
        return "a worker with this name has already finished its epochs";
    if (sl->key[0] && strcmp(sl->key, peer->key) != 0)
        return "this name belongs to another worker's CurveZMQ key";
    if (sl->active && !s_same_peer(&sl->peer, peer) && transport_connected(s, &sl->peer))
        return S_LIVE_NAME;
    return NULL;
}

/* Holds a registration that claims a live worker's name (see slot_t.claim). */
static void s_claim(server_t *s, slot_t *sl, const wire_peer_t *peer, const Ps__Register *r)
{
    int same = sl->claim && s_same_peer(&sl->claim_peer, peer);
    if (sl->claim && !same) /* an earlier claimant loses its place */
        srv_error_to(s, &sl->claim_peer, sl->claim_request, PS__ERROR_CODE__ERROR_STATE,
                     S_LIVE_NAME);
    if (!same)
        sl->claim_since = clock_now();
    sl->claim = 1;
    sl->claim_peer = *peer;
    sl->claim_request = s->request;
    sl->claim_threads = (int)r->threads;
    sl->claim_compress = r->compress;
    snprintf(sl->claim_host, sizeof sl->claim_host, "%s", r->host ? r->host : "");
}

/* Settles held claims: a rejoin once the old connection is gone, a refusal
 * after MEMBER_CLAIM_GRACE seconds. */
static void s_settle_claims(server_t *s)
{
    for (int i = 0; i < s->registered; i++) {
        slot_t *sl = &s->slots[i];
        if (!sl->claim)
            continue;
        const char *bad = s_rejoin_problem(s, sl, &sl->claim_peer);
        if (bad && bad == S_LIVE_NAME && clock_now() - sl->claim_since < MEMBER_CLAIM_GRACE)
            continue;
        sl->claim = 0;
        uint64_t request = s->request;
        s->request = sl->claim_request;
        if (bad) {
            srv_log_refused(s, "refused registration of %s: %s", sl->name, bad);
            srv_error(s, &sl->claim_peer, PS__ERROR_CODE__ERROR_STATE, bad);
        } else {
            Ps__Register r = PS__REGISTER__INIT;
            r.name = sl->name;
            r.host = sl->claim_host;
            r.threads = (uint32_t)sl->claim_threads;
            r.compress = sl->claim_compress;
            s_rejoin(s, sl, &sl->claim_peer, &r);
        }
        s->request = request;
    }
}

/* What is wrong with a Register's fields, into why (NULL when nothing). */
static const char *s_register_problem(const server_t *s, const Ps__Register *r, const char *name,
                                      char *why, size_t n)
{
    const char *bad;
    if ((int)r->compress < 0 || r->compress > PS__COMPRESSION__COMPRESSION_INT8)
        return "unknown compression";
    if ((bad = member_name_problem(name, sizeof s->slots[0].name - 1)) ||
        (r->host && (bad = member_name_problem(r->host, sizeof s->slots[0].host - 1)))) {
        snprintf(why, n, "worker %s %s: use at most 127 bytes of printable UTF-8 (--name)",
                 r->host && !member_name_problem(name, 127) ? "host" : "name", bad);
        return why;
    }
    if (r->threads > 1024)
        return "threads out of range (0..1024)";
    if (r->model && *r->model && strcmp(r->model, s->model->name) != 0) {
        snprintf(why, n,
                 "this worker was given --model %.40s but the server trains %s: give the "
                 "server's --model, or none (a worker takes the server's)",
                 r->model, s->model->name);
        return why;
    }
    return NULL;
}

/* A Register under the name of slot sl. */
static void s_register_taken(server_t *s, slot_t *sl, const wire_peer_t *peer,
                             const Ps__Register *r)
{
    const char *bad;
    if (!s->started && s_same_peer(&sl->peer, peer))
        return; /* a resent Register: its Welcome comes when all have registered */
    if (!s->started) {
        srv_error(s, peer, PS__ERROR_CODE__ERROR_STATE,
                  "a worker with this name is already registered; give each worker its own "
                  "--name");
        srv_log_refused(s, "refused registration: duplicate name %s", sl->name);
    } else if ((bad = s_rejoin_problem(s, sl, peer)) == S_LIVE_NAME) {
        s_claim(s, sl, peer, r);
    } else if (bad) {
        srv_error(s, peer, PS__ERROR_CODE__ERROR_STATE, bad);
        srv_log_refused(s, "refused registration of %s: %s", sl->name, bad);
    } else
        s_rejoin(s, sl, peer, r);
}

/* A Register under a new name before the start: the next free slot. */
static void s_register_new(server_t *s, const wire_peer_t *peer, const Ps__Register *r,
                           const char *name)
{
    int id = s->registered++;
    slot_t *sl = &s->slots[id];
    snprintf(sl->name, sizeof sl->name, "%s", name);
    snprintf(sl->host, sizeof sl->host, "%s", r->host ? r->host : "");
    snprintf(sl->key, sizeof sl->key, "%s", peer->key);
    sl->peer = *peer;
    sl->held_request = s->request;
    sl->threads = (int)r->threads;
    sl->compress = r->compress;
    sl->active = 1;
    sl->last_seen = clock_now();
    sl->shard = shard_size(s->train_count, s->o->workers, id);
    s->active++;
    srv_log(s, "worker %d registered: %s on %s, %d thread(s), shard of %lld images (%d/%d)", id,
            sl->name, sl->host, sl->threads, (long long)sl->shard, s->registered, s->o->workers);
    member_maybe_start(s);
}

void member_maybe_start(server_t *s)
{
    if (!s->started && s->registered == s->o->workers && group_ready(s, NULL, 0))
        s_start_run(s);
}

void member_register(server_t *s, const wire_peer_t *peer, const Ps__Register *r)
{
    const char *name = r->name && *r->name ? r->name : "unnamed", *bad;
    char why[200];
    if ((bad = s_register_problem(s, r, name, why, sizeof why))) {
        if (bad == why) /* a bad name or host: the log says which */
            srv_log_refused(s, "refused a registration: %s", why);
        srv_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, bad);
        return;
    }
    char missing[128];
    if (s->started && !group_ready(s, missing, sizeof missing)) {
        /* Resumed, and a shard is not back yet: the worker resends. */
        srv_log_refused(s, "registration of %s waits: %s of the server group not joined yet", name,
                        missing);
        return;
    }
    for (int i = 0; i < s->registered; i++)
        if (strcmp(s->slots[i].name, name) == 0) {
            s_register_taken(s, &s->slots[i], peer, r);
            return;
        }
    if (s->started) {
        srv_error(s, peer, PS__ERROR_CODE__ERROR_FULL,
                  "the run has started and all worker slots are taken (a worker that restarts "
                  "must keep its --name to rejoin)");
        srv_log_refused(s, "refused registration of %s: the run has started", name);
        return;
    }
    if (s->registered >= s->o->workers) { /* full, and the run waits for the group's shards */
        srv_error(s, peer, PS__ERROR_CODE__ERROR_FULL,
                  "all worker slots are taken (--workers); the run starts once every shard of "
                  "the server group has joined");
        srv_log_refused(s, "refused registration of %s: all worker slots are taken", name);
        return;
    }
    s_register_new(s, peer, r, name);
}

slot_t *member_check(server_t *s, const wire_peer_t *peer, uint32_t id, const char *what)
{
    char why[160];
    Ps__ErrorCode code = PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
    if (!s->started) {
        snprintf(why, sizeof why, "%s before the run started", what);
        code = PS__ERROR_CODE__ERROR_STATE;
    } else if (id >= (uint32_t)s->o->workers) {
        snprintf(why, sizeof why, "%s from unknown worker id %u", what, id);
    } else if (!s_same_peer(&s->slots[id].peer, peer) && !s->slots[id].moved) {
        snprintf(why, sizeof why, "%s claims worker id %u from another connection", what, id);
    } else if (!s->slots[id].active) {
        /* An evicted worker gets UNKNOWN_WORKER: it registers again and
         * rejoins; a finished one has nothing more to do. */
        snprintf(why, sizeof why, "%s from worker %u, which has %s", what, id,
                 s->slots[id].done ? "finished" : "been evicted (register again to rejoin)");
        if (s->slots[id].done)
            code = PS__ERROR_CODE__ERROR_STATE;
    } else {
        slot_t *sl = &s->slots[id];
        if (sl->moved) { /* its first request to this head, which took over (replica.h) */
            sl->moved = 0;
            sl->peer = *peer;
            srv_log(s, "worker %u (%s) reached this head after its take-over", id, sl->name);
        }
        return sl;
    }
    srv_log_refused(s, "refused %s", why);
    srv_error(s, peer, code, why);
    return NULL;
}

/* A worker leaves every barrier: it finished, left or was evicted. */
static void s_leave(server_t *s, slot_t *sl)
{
    if (!sl->active)
        return;
    sl->active = 0;
    s->active--;
    s->policy->on_leave(s);
    group_membership_changed(s);
}

void member_leaving(server_t *s, slot_t *sl)
{
    int id = s_id(s, sl);
    char detail[96];
    snprintf(detail, sizeof detail, "stopped after %llu steps", (unsigned long long)sl->steps);
    srv_log(s, "worker %d (%s) left: %s", id, sl->name, detail);
    srv_db(s, metrics_event(s->db, s->run, srv_elapsed(s), id, "left", detail));
    sl->evicted = 1; /* as an evicted worker: it may register again */
    srv_reply_ack(s, sl);
    s_leave(s, sl);
}

void member_done(server_t *s, slot_t *sl, double train_seconds, double test_accuracy)
{
    int id = s_id(s, sl);
    sl->done = 1;
    char detail[128];
    snprintf(detail, sizeof detail, "steps=%llu train_seconds=%.1f test_accuracy=%.2f",
             (unsigned long long)sl->steps, train_seconds, test_accuracy);
    srv_db(s, metrics_event(s->db, s->run, srv_elapsed(s), id, "done", detail));
    srv_log(s, "worker %d done: %s", id, detail);
    /* Durable before acknowledged: a server that crashes after this Ack
     * resumes knowing the worker finished, instead of waiting for it; the
     * head's standby knows it too. */
    if (s->o->checkpoint_every > 0)
        ckpt_write(s);
    if (replica_head_changed(s) != 0)
        return; /* fenced: the head that took over answers */
    srv_reply_ack(s, sl);
    s_leave(s, sl);
}

/* Evicts active workers that have made no progress (pushed no new step)
 * for longer than the timeout: pulls or repeated pushes do not keep a worker
 * in a barrier that it holds up. A held worker is silent because of us. */
static void s_check_deadlines(server_t *s)
{
    double now = clock_now();
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        if (!sl->active || sl->pending || now - sl->last_seen <= s->o->worker_timeout)
            continue;
        char detail[128];
        snprintf(detail, sizeof detail,
                 "no new step for %.1f s (--worker-timeout %.1f) after "
                 "%llu steps",
                 now - sl->last_seen, s->o->worker_timeout, (unsigned long long)sl->steps);
        srv_log(s, "evicting worker %d (%s): %s", i, sl->name, detail);
        srv_db(s, metrics_event(s->db, s->run, srv_elapsed(s), i, "evicted", detail));
        sl->evicted = 1;
        s_leave(s, sl);
    }
}

void member_tick(server_t *s)
{
    s_check_deadlines(s);
    s_settle_claims(s);
}

void member_restored(server_t *s, slot_t *sl)
{
    int id = s_id(s, sl);
    sl->active = !sl->done && !sl->evicted;
    sl->peer.len = 0; /* no connection yet: it must register again */
    sl->last_seen = clock_now();
    sl->shard = shard_size(s->train_count, s->o->workers, id);
    s->active += sl->active;
}
