/* group: the server group (see group.h): the head's side (shards joining,
 * membership sent to them, their figures and final weights) and a shard's
 * whole life (server_run_shard). */
#include "group.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <czmq.h>

#include "checkpoint.h"
#include "clock.h"
#include "consistency.h"
#include "idx.h"
#include "membership.h"
#include "models.h"
#include "replica.h"
#include "transport.h"

/* How often a shard reports to the head, and how long it waits for the
 * head before it gives up (also for the head's Welcome and final Ack). */
#define GROUP_PING_SECONDS 0.5
#define GROUP_HEAD_SILENCE 30.0
/* How long the head waits for the shards' final weights. */
#define GROUP_FINAL_SECONDS 30.0

typedef struct {
    int joined;
    wire_peer_t peer;
    char endpoint[128], key[48];
    char given[128]; /* the endpoint workers were told once the run started */
    double last_ping;
    Ps__ShardPing stats; /* its last figures (no strings: a plain copy) */
    int final_got;
    /* issue 12: the term (+1 at every change of who serves the range) and
     * the hot standby (replica.h), if one joined */
    uint64_t term;
    int sb_joined, sb_synced;
    wire_peer_t sb_peer;
    char sb_endpoint[128];
    int rebind; /* the head's standby took over: this shard's next join, from a new
                 * connection, is the same process (same term): it keeps its state */
} member_shard_t;

struct srv_group {
    /* the head */
    member_shard_t *sh;       /* o->shards entries; [0] is the head itself */
    uint64_t seq;             /* the membership's version */
    zcertstore_t *shard_keys; /* --shard-keys: the keys that may join as shards, or NULL */
    int over;
    uint32_t rollbacks; /* returns to an older version so far (the shard's: seen) */
    uint64_t rollback_version;
    float *full; /* the whole final model */
    /* a shard */
    void *head; /* DEALER to the head */
    uint64_t request, seq_known;
    int head_known;      /* a table from this head came: seq_known and rollbacks are its */
    char advertise[300]; /* where workers reach it */
    int rejoining;       /* joining the head again: its ShardWelcome is awaited */
    int file_slots;      /* the slots were read from a checkpoint (--resume, a return) */
    int *known;          /* the head has told it about this worker slot */
    double last_ping, last_heard;
    int64_t run_id;
    uint64_t head_version;
    /* a shard: the head's term and its standby (from the tables), for
     * witnessing the head's fail-over and following it */
    uint64_t head_term;
    char head_sb[128];
    int switched;     /* its link moved to the head's standby */
    int takeover;     /* the head it joins took over: keep the state */
    double rejoin_at; /* resend the join then (the standby was not promoted yet) */
    /* the head's standby: the witness's answer is awaited on this socket */
    void *witness;
};

void group_range(int shards, int shard, size_t nparams, size_t *lo, size_t *n)
{
    if (shards <= 1) {
        *lo = 0;
        *n = nparams;
        return;
    }
    size_t a = (size_t)((uint64_t)nparams * (uint64_t)shard / (uint64_t)shards);
    size_t b = (size_t)((uint64_t)nparams * (uint64_t)(shard + 1) / (uint64_t)shards);
    *lo = a;
    *n = b - a;
}

static int s_shards(const server_t *s)
{
    return s->o->shards > 1 ? s->o->shards : 1;
}

int group_head_new(server_t *s)
{
    group_t *g = calloc(1, sizeof *g);
    if (!g || !(g->sh = calloc((size_t)s_shards(s), sizeof *g->sh))) {
        free(g);
        fprintf(stderr, "error: out of memory\n");
        return -1;
    }
    g->sh[0].joined = 1;
    g->sh[0].term = 1;
    s->term = 1;
    s->group = g;
    if (s->o->shard_keys && !(g->shard_keys = zcertstore_new(s->o->shard_keys))) {
        fprintf(stderr, "error: cannot read --shard-keys %s\n", s->o->shard_keys);
        return -1;
    }
    if (s->o->curve_secret && !s->o->shard_keys && s_shards(s) > 1)
        fprintf(stderr, "warning: any key in --allowed-keys may join as a shard of this group; "
                        "give --shard-keys DIR (the shards' public certificates) to allow only "
                        "them\n");
    return 0;
}

void group_destroy(server_t *s)
{
    group_t *g = s->group;
    if (!g)
        return;
    if (g->head)
        zmq_close(g->head);
    if (g->witness)
        zmq_close(g->witness);
    free(g->sh);
    free(g->full);
    zcertstore_destroy(&g->shard_keys);
    free(g->known);
    free(g);
    s->group = NULL;
    s->link = NULL;
}

int group_ready(const server_t *s, char *buf, size_t n)
{
    int missing = 0;
    if (buf && n)
        buf[0] = '\0';
    if (s->o->replicas &&
        !(s->group->sh[0].sb_joined && s->group->sh[0].sb_endpoint[0] && s->rep)) {
        if (buf && n)
            snprintf(buf, n, "the head's standby");
        missing++;
    }
    for (int i = 1; i < s_shards(s); i++)
        if (!s->group->sh[i].joined || !s->group->sh[i].endpoint[0]) {
            size_t used = buf ? strlen(buf) : 0;
            if (buf && used + 16 < n)
                snprintf(buf + used, n - used, "%sshard %d", missing ? ", " : "", i);
            missing++;
        }
    return missing == 0;
}

/* The head's table of ranges: who serves each (its endpoint, key, term)
 * and its standby; ranges and ptrs have room for o->shards entries. */
void group_ranges(const server_t *s, Ps__ShardRange *ranges, Ps__ShardRange **ptrs)
{
    for (int i = 0; i < s_shards(s); i++) {
        const member_shard_t *sh = &s->group->sh[i];
        size_t lo, n;
        group_range(s->o->shards, i, s->model->nparams, &lo, &n);
        ps__shard_range__init(&ranges[i]);
        ranges[i].endpoint = i == 0 ? "" : (char *)sh->endpoint;
        ranges[i].public_key = i == 0 ? "" : (char *)sh->key;
        ranges[i].standby = sh->sb_joined ? (char *)sh->sb_endpoint : "";
        ranges[i].term = sh->term;
        ranges[i].lo = (uint32_t)lo;
        ranges[i].hi = (uint32_t)(lo + n);
        ptrs[i] = &ranges[i];
    }
}

void group_welcome(const server_t *s, Ps__Welcome *wm, Ps__ShardRange *ranges,
                   Ps__ShardRange **ptrs)
{
    group_ranges(s, ranges, ptrs);
    wm->n_shards = (size_t)s_shards(s);
    wm->shards = ptrs;
    wm->failover_timeout = s->o->failover_timeout;
}

/* Sends the membership table to shard i, or to its standby (as the answer
 * to `request`, or unasked with 0). */
static void s_send_membership_to(server_t *s, int i, int standby, uint64_t request)
{
    group_t *g = s->group;
    int W = s->o->workers, S = s_shards(s);
    Ps__ShardRange ranges[S], *rptrs[S];
    group_ranges(s, ranges, rptrs);
    Ps__Member mb[W], *ptrs[W];
    for (int k = 0; k < W; k++) {
        const slot_t *sl = &s->slots[k];
        ps__member__init(&mb[k]);
        mb[k].id = (uint32_t)k;
        mb[k].incarnation = (uint32_t)sl->incarnation;
        mb[k].active = sl->active;
        mb[k].done = sl->done;
        mb[k].token = sl->token;
        mb[k].compress = sl->compress;
        mb[k].key = (char *)sl->key;
        mb[k].start_step = sl->start_step;
        ptrs[k] = &mb[k];
    }
    Ps__Membership m = PS__MEMBERSHIP__INIT;
    m.seq = g->seq;
    m.over = g->over;
    m.started = s->started;
    m.rollbacks = g->rollbacks;
    m.rollback_version = g->rollback_version;
    m.run_id = s->run;
    m.n_members = (size_t)W;
    m.members = ptrs;
    m.n_shards = (size_t)S;
    m.shards = rptrs;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_MEMBERSHIP;
    env.membership = &m;
    env.request_id = request;
    long n =
        wire_send(s->sock, standby ? &g->sh[i].sb_peer : &g->sh[i].peer, &env, NULL, ZMQ_DONTWAIT);
    if (n < 0)
        srv_log(s, "warning: cannot send the membership to shard %d%s: %s", i,
                standby ? "'s standby" : "", zmq_strerror(errno));
    else
        s->bytes_out += n;
}

static void s_send_membership(server_t *s, int i, uint64_t request)
{
    s_send_membership_to(s, i, 0, request);
}

void group_membership_changed(server_t *s)
{
    group_t *g = s->group;
    if (!g || s_shards(s) == 1)
        return;
    g->seq++;
    replica_head_changed(s); /* the head's standby first: before anyone is answered */
    for (int i = 1; i < s_shards(s); i++) {
        if (g->sh[i].joined && g->sh[i].peer.len)
            s_send_membership(s, i, 0);
        if (g->sh[i].sb_joined)
            s_send_membership_to(s, i, 1, 0);
    }
}

static int s_same_peer(const wire_peer_t *a, const wire_peer_t *b)
{
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

/* The head's answer to a shard's join: its range and the recipe (and to a
 * standby's, the primary it copies). */
static void s_shard_welcome(server_t *s, int i, const wire_peer_t *peer, const char *replica_of)
{
    const server_opts_t *o = s->o;
    size_t lo, n;
    group_range(o->shards, i, s->model->nparams, &lo, &n);
    Ps__ShardWelcome w = PS__SHARD_WELCOME__INIT;
    w.shard = (uint32_t)i;
    w.shards = (uint32_t)s_shards(s);
    w.lo = (uint32_t)lo;
    w.hi = (uint32_t)(lo + n);
    w.run_id = s->run;
    w.mode = (char *)server_mode_name(o->mode);
    w.staleness = (uint32_t)o->staleness;
    w.workers = (uint32_t)o->workers;
    w.epochs = (uint32_t)o->epochs;
    w.batch_size = (uint32_t)o->batch_size;
    w.seed = o->seed;
    w.lr = o->lr;
    w.momentum = o->momentum;
    w.train_limit = (uint32_t)s->train_count;
    w.checkpoint_every = (uint32_t)(o->checkpoint_every > 0 ? o->checkpoint_every : 0);
    w.version = s->version;
    w.lr_linear = o->lr_scaling == LR_SCALING_LINEAR;
    w.warmup_epochs = o->warmup_epochs;
    w.dataset = (char *)o->dataset;
    w.model = (char *)s->model->name;
    w.params = (uint32_t)s->model->nparams;
    w.replica_of = (char *)(replica_of ? replica_of : "");
    w.term = s->group->sh[i].term;
    w.failover_timeout = o->failover_timeout;
    w.test_limit = (uint32_t)o->test_limit;
    w.worker_timeout = o->worker_timeout;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_WELCOME;
    env.shard_welcome = &w;
    srv_answer(s, peer, &env);
}

void group_head_table(const server_t *s, Ps__ReplicaHead *h)
{
    const group_t *g = s->group;
    h->seq = g->seq;
    h->rollbacks = g->rollbacks;
    h->rollback_version = g->rollback_version;
    h->over = g->over;
}

void group_take_head_table(server_t *s, const Ps__ReplicaHead *h)
{
    group_t *g = s->group;
    g->seq = h->seq;
    g->rollbacks = h->rollbacks;
    g->rollback_version = h->rollback_version;
    g->over = h->over;
    for (size_t i = 1; i < h->n_shards && i < (size_t)s_shards(s); i++) {
        member_shard_t *sh = &g->sh[i];
        const Ps__ShardRange *r = h->shards[i];
        sh->joined = r->endpoint && r->endpoint[0];
        sh->term = r->term;
        snprintf(sh->endpoint, sizeof sh->endpoint, "%s", r->endpoint ? r->endpoint : "");
        snprintf(sh->given, sizeof sh->given, "%s", sh->endpoint);
        snprintf(sh->key, sizeof sh->key, "%s", r->public_key ? r->public_key : "");
        sh->sb_joined = r->standby && r->standby[0];
        snprintf(sh->sb_endpoint, sizeof sh->sb_endpoint, "%s", r->standby ? r->standby : "");
    }
    if (h->n_shards > 0)
        g->sh[0].term = h->shards[0]->term;
}

uint32_t group_rollbacks(const server_t *s)
{
    return s->group ? s->group->rollbacks : 0;
}

void group_took_over(server_t *s)
{
    group_t *g = s->group;
    for (int i = 1; i < s_shards(s); i++) {
        g->sh[i].rebind = 1;
        g->sh[i].peer.len = 0; /* its connection was the old head's */
        g->sh[i].last_ping = clock_now();
        g->sh[i].sb_peer.len = 0;
    }
    g->sh[0].sb_joined = 0;
    g->sh[0].sb_endpoint[0] = '\0';
    g->sh[0].term = s->term;
}

/* The shard a message claims to come from, if it joined from this
 * connection; else NULL after an Error reply. */
static member_shard_t *s_shard_check(server_t *s, const wire_peer_t *peer, uint32_t i,
                                     const char *what)
{
    if (i >= 1 && i < (uint32_t)s_shards(s) && s->group->sh[i].joined &&
        s_same_peer(&s->group->sh[i].peer, peer))
        return &s->group->sh[i];
    char why[160];
    snprintf(why, sizeof why, "%s from shard %u, which has not joined from this connection", what,
             i);
    srv_log_refused(s, "refused %s", why);
    srv_error(s, peer, PS__ERROR_CODE__ERROR_UNKNOWN_WORKER, why);
    return NULL;
}

/* An Ack with the head's version to the request being handled. */
static void s_ack(server_t *s, const wire_peer_t *peer)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Ack ack = PS__ACK__INIT;
    ack.version = s->version;
    env.body_case = PS__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    srv_answer(s, peer, &env);
}

/* A shard says it is ready at another version than the head's: when it
 * resumed from an older checkpoint, the whole group returns to that version
 * (every server reloads its checkpoint of it, every worker registers
 * again); otherwise it cannot serve. 0 when the group goes on, else what is
 * wrong in why. */
static int s_version_problem(server_t *s, const Ps__ShardJoin *j, char *why, size_t n)
{
    group_t *g = s->group;
    if (!j->resumed || j->version > s->version) {
        snprintf(why, n,
                 "shard %u is at version %llu, the head at %llu: restart it with --resume (from "
                 "its checkpoint)",
                 j->shard, (unsigned long long)j->version, (unsigned long long)s->version);
        return -1;
    }
    char err[900];
    int rc = ckpt_rollback(s, j->version, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "error: shard %u resumed at version %llu, but the head %s\n", j->shard,
                (unsigned long long)j->version, err);
        snprintf(why, n, "the head cannot return to version %llu with it",
                 (unsigned long long)j->version);
        if (rc == -2) /* a checkpoint failed its checks while read: the weights are lost */
            s->fatal = 1;
        return -1;
    }
    g->rollbacks++;
    g->rollback_version = j->version;
    char detail[200];
    snprintf(detail, sizeof detail,
             "shard %u resumed at version %llu: the group returns to it; the workers register "
             "again",
             j->shard, (unsigned long long)j->version);
    srv_log(s, "%s", detail);
    srv_db(s, metrics_event(s->db, s->run, srv_elapsed(s), -1, "rollback", detail));
    group_membership_changed(s);
    return 0;
}

/* The head's own standby joins (paramserver --replica-of HEAD): first for
 * the recipe, then ready; the head then sends it its state and tables.
 * It needs a witness to take over (shard 1: the head cannot vouch for its
 * own silence), and must join before the run starts: its database copies
 * the run from its first row. */
static void s_on_head_standby_join(server_t *s, const wire_peer_t *peer, const Ps__ShardJoin *j)
{
    member_shard_t *sh = &s->group->sh[0];
    int again = sh->sb_joined && s_same_peer(&sh->sb_peer, peer);
    const char *bad = j->endpoint && j->endpoint[0] ? member_name_problem(j->endpoint, 127) : NULL;
    char why[300];
    if (s_shards(s) < 2)
        snprintf(why, sizeof why,
                 "the head's standby needs a witness to take over: run a server group of 2 or "
                 "more (--shards 2); shard 1 decides, with the head silent, that it serves");
    else if (s->o->curve_secret)
        snprintf(why, sizeof why, "a standby with CurveZMQ is not supported in this release");
    else if (bad)
        snprintf(why, sizeof why, "the standby's endpoint is not usable: %s", bad);
    else if (s->started && !again)
        snprintf(why, sizeof why,
                 "the head's standby must join before the run starts (its database copies the "
                 "run from its first row); start it with the head (--replicas 1 makes the head "
                 "wait for it)");
    else if (sh->sb_joined && !again && transport_connected(s, &sh->sb_peer))
        snprintf(why, sizeof why, "the head already has a standby (%s)",
                 sh->sb_endpoint[0] ? sh->sb_endpoint : "not ready yet");
    else {
        sh->sb_joined = 1;
        sh->sb_peer = *peer;
        snprintf(sh->sb_endpoint, sizeof sh->sb_endpoint, "%s", j->endpoint ? j->endpoint : "");
        if (!sh->sb_endpoint[0]) {
            s_shard_welcome(s, 0, peer, s->endpoint);
            return;
        }
        srv_log(s, "the head's standby is ready at %s (term %llu)", sh->sb_endpoint,
                (unsigned long long)sh->term);
        s_ack(s, peer);
        /* The state goes from the loop (replica_tick), after this Ack: the
         * standby waits for it before it reads anything else. */
        snprintf(s->rep_pending, sizeof s->rep_pending, "%s", sh->sb_endpoint);
        return;
    }
    srv_log_refused(s, "refused the head's standby: %s", why);
    srv_error(s, peer, PS__ERROR_CODE__ERROR_STATE, why);
}

/* A standby joins for shard j->shard (asked for, or a process started
 * with --shard I while I's primary is alive: a restarted former primary):
 * first for the recipe and the primary's endpoint, then ready with its
 * own endpoint, which the next membership table gives the primary. */
static void s_on_standby_join(server_t *s, const wire_peer_t *peer, const Ps__ShardJoin *j)
{
    member_shard_t *sh = &s->group->sh[j->shard];
    char why[300];
    if (!sh->joined || !sh->endpoint[0])
        snprintf(why, sizeof why,
                 "shard %u has no ready primary to copy yet: start it first (paramserver "
                 "--shard %u --head ...)",
                 j->shard, j->shard);
    else if (s->o->curve_secret)
        snprintf(why, sizeof why,
                 "a standby with CurveZMQ is not supported in this release (shard %u)", j->shard);
    else if (sh->sb_joined && !s_same_peer(&sh->sb_peer, peer) &&
             transport_connected(s, &sh->sb_peer))
        snprintf(why, sizeof why, "shard %u already has a standby (%s)", j->shard,
                 sh->sb_endpoint[0] ? sh->sb_endpoint : "not ready yet");
    else {
        sh->sb_joined = 1;
        sh->sb_synced = 0;
        sh->sb_peer = *peer;
        snprintf(sh->sb_endpoint, sizeof sh->sb_endpoint, "%s", j->endpoint ? j->endpoint : "");
        if (!sh->sb_endpoint[0]) {
            s_shard_welcome(s, (int)j->shard, peer, sh->endpoint);
            return;
        }
        srv_log(s, "shard %u: standby ready at %s (copies %s, term %llu)", j->shard,
                sh->sb_endpoint, sh->endpoint, (unsigned long long)sh->term);
        s_ack(s, peer);
        group_membership_changed(s);
        return;
    }
    srv_log_refused(s, "refused a standby: %s", why);
    srv_error(s, peer, PS__ERROR_CODE__ERROR_STATE, why);
}

/* A shard's request for the next term (ShardTerm, see ps.proto): the
 * standby to be promoted, the primary to go on alone. Granted only at the
 * current term; a promotion only when the primary has been silent for the
 * failover timeout. Each grant raises the term. */
static void s_on_term(server_t *s, const wire_peer_t *peer, const Ps__ShardTerm *t)
{
    char why[300];
    if (t->shard < 1 || t->shard >= (uint32_t)s_shards(s)) {
        srv_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, "shard number out of range");
        return;
    }
    member_shard_t *sh = &s->group->sh[t->shard];
    double silent = clock_now() - sh->last_ping;
    int from_standby = sh->sb_joined && s_same_peer(&sh->sb_peer, peer);
    int from_primary = sh->joined && s_same_peer(&sh->peer, peer);
    if (t->term != sh->term)
        snprintf(why, sizeof why, "shard %u is in term %llu, not %llu: another server served it",
                 t->shard, (unsigned long long)sh->term, (unsigned long long)t->term);
    else if (t->promote && !from_standby)
        snprintf(why, sizeof why, "only shard %u's standby may ask to be promoted", t->shard);
    else if (t->promote && !sh->sb_synced)
        snprintf(why, sizeof why, "shard %u's standby does not hold the state yet", t->shard);
    else if (t->promote && silent < s->o->failover_timeout)
        snprintf(why, sizeof why,
                 "shard %u's primary answered the head %.1f s ago: it is alive; not promoted",
                 t->shard, silent);
    else if (!t->promote && !from_primary)
        snprintf(why, sizeof why, "only shard %u's primary may go on without its standby",
                 t->shard);
    else {
        char detail[400];
        sh->term++;
        if (t->promote) {
            snprintf(detail, sizeof detail,
                     "shard %u: primary %s silent for %.1f s; its standby %s serves it in term "
                     "%llu",
                     t->shard, sh->endpoint, silent, sh->sb_endpoint, (unsigned long long)sh->term);
            sh->peer = sh->sb_peer;
            snprintf(sh->endpoint, sizeof sh->endpoint, "%s", sh->sb_endpoint);
            snprintf(sh->given, sizeof sh->given, "%s", sh->sb_endpoint);
            sh->key[0] = '\0';
            sh->last_ping = clock_now();
            srv_db(s, metrics_event(s->db, s->run, srv_elapsed(s), -1, "failover", detail));
        } else
            snprintf(detail, sizeof detail,
                     "shard %u: its standby %s is silent; the primary goes on alone in term %llu",
                     t->shard, sh->sb_endpoint, (unsigned long long)sh->term);
        srv_log(s, "%s", detail);
        sh->sb_joined = 0;
        sh->sb_endpoint[0] = '\0';
        Ps__ShardTerm answer = PS__SHARD_TERM__INIT;
        answer.shard = t->shard;
        answer.term = sh->term;
        answer.promote = t->promote;
        Ps__Envelope env = PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_SHARD_TERM;
        env.shard_term = &answer;
        srv_answer(s, peer, &env);
        group_membership_changed(s);
        return;
    }
    srv_log_refused(s, "refused a term change: %s", why);
    srv_error(s, peer, PS__ERROR_CODE__ERROR_FENCED, why);
}

void group_on_locate(server_t *s, const wire_peer_t *peer, const Ps__Locate *l)
{
    Ps__Located answer = PS__LOCATED__INIT;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_LOCATED;
    env.located = &answer;
    answer.shard = (uint32_t)s->shard;
    if (s->shard > 0 || l->token == 0) { /* who it is, for a standby (--replica-of) */
        answer.head = (char *)(s->shard > 0 ? s->o->head : "");
        srv_answer(s, peer, &env);
        return;
    }
    if (!member_check(s, peer, l->worker_id, "locate"))
        return;
    int S = s_shards(s);
    Ps__ShardRange ranges[S], *ptrs[S];
    group_ranges(s, ranges, ptrs);
    answer.n_shards = (size_t)S;
    answer.shards = ptrs;
    srv_answer(s, peer, &env);
}

static void s_on_join(server_t *s, const wire_peer_t *peer, const Ps__ShardJoin *j)
{
    group_t *g = s->group;
    char why[300];
    if (j->standby && j->shard == 0) {
        s_on_head_standby_join(s, peer, j);
        return;
    }
    /* A shard joins twice: first without an endpoint, for the recipe it
     * needs to bind; then with the endpoint it bound (ready). */
    const char *bad = j->endpoint && j->endpoint[0] ? member_name_problem(j->endpoint, 127) : NULL;
    if (j->shard < 1 || j->shard >= (uint32_t)s_shards(s)) {
        snprintf(why, sizeof why,
                 "shard %u cannot join: this head has %d shard(s) (--shards %d), "
                 "numbered 1..%d besides the head",
                 j->shard, s_shards(s), s_shards(s), s_shards(s) - 1);
    } else if (bad) {
        snprintf(why, sizeof why, "shard %u's endpoint is not usable: %s", j->shard, bad);
    } else if (g->over) {
        snprintf(why, sizeof why, "shard %u cannot join: the run is over", j->shard);
    } else if (g->shard_keys && !zcertstore_lookup(g->shard_keys, peer->key)) {
        snprintf(why, sizeof why,
                 "shard %u cannot join: its CurveZMQ key is not in the head's --shard-keys %s",
                 j->shard, s->o->shard_keys);
    } else if (s->started && !j->standby && j->endpoint && j->endpoint[0] &&
               g->sh[j->shard].given[0] && strcmp(j->endpoint, g->sh[j->shard].given) != 0) {
        snprintf(why, sizeof why,
                 "shard %u must come back at %s, where the workers reach it (restart it with "
                 "that --bind or --advertise)",
                 j->shard, g->sh[j->shard].given);
    } else {
        member_shard_t *sh = &g->sh[j->shard];
        int primary_alive =
            sh->joined && !s_same_peer(&sh->peer, peer) && transport_connected(s, &sh->peer);
        if (j->standby || (primary_alive && sh->endpoint[0])) {
            s_on_standby_join(s, peer, j);
            return;
        }
        if (primary_alive) {
            snprintf(why, sizeof why,
                     "shard %u has already joined from another live connection (%s); "
                     "is a second process started with --shard %u?",
                     j->shard, sh->endpoint[0] ? sh->endpoint : "not ready yet", j->shard);
        } else if (j->endpoint && j->endpoint[0] && j->version != s->version && !sh->rebind &&
                   s_version_problem(s, j, why, sizeof why)) {
            /* refused below */
        } else {
            int again = sh->joined;
            if (!(sh->rebind && j->term == sh->term) &&
                (!sh->joined || !s_same_peer(&sh->peer, peer)))
                sh->term++; /* another process serves the range now */
            sh->joined = 1;
            sh->peer = *peer;
            sh->last_ping = clock_now();
            snprintf(sh->endpoint, sizeof sh->endpoint, "%s", j->endpoint ? j->endpoint : "");
            /* Its CurveZMQ key is the one its connection proved. */
            snprintf(sh->key, sizeof sh->key, "%s", peer->key);
            size_t lo, n;
            group_range(s->o->shards, (int)j->shard, s->model->nparams, &lo, &n);
            if (sh->endpoint[0]) {
                srv_log(s, "shard %u %s: %s, values [%zu, %zu)", j->shard,
                        again ? "ready" : "joined", sh->endpoint, lo, lo + n);
                snprintf(sh->given, sizeof sh->given, "%s", sh->endpoint);
            }
            if (sh->endpoint[0]) {
                s_ack(s, peer); /* ready */
                sh->rebind = 0;
            } else
                s_shard_welcome(s, (int)j->shard, peer, NULL);
            s_send_membership(s, (int)j->shard, 0);
            member_maybe_start(s);
            return;
        }
    }
    srv_log_refused(s, "refused: %s", why);
    srv_error(s, peer, PS__ERROR_CODE__ERROR_STATE, why);
}

/* Figures a shard reports go into the database as sent: they must be sane.
 * NULL when they are, else what is wrong (after an Error reply). */
static const char *s_figures_problem(server_t *s, const wire_peer_t *peer, const Ps__ShardPing *p)
{
    const uint64_t big = (uint64_t)1 << 50;
    const char *bad = NULL;
    if (!isfinite(p->apply_seconds) || p->apply_seconds < 0 || p->apply_seconds > 1e9)
        bad = "apply_seconds is negative, not finite or over 1e9";
    else if (p->version > big || p->updates > big || p->bytes_in > big || p->bytes_out > big ||
             p->duplicates > big)
        bad = "a counter is out of range";
    if (bad) {
        srv_log_refused(s, "refused figures of shard %u: %s", p->shard, bad);
        srv_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, bad);
    }
    return bad;
}

/* Keeps a shard's figures: the numbers only (the message, and what it
 * points to, is freed after the handler). */
static void s_keep_figures(member_shard_t *sh, const Ps__ShardPing *p)
{
    sh->stats = (Ps__ShardPing){.shard = p->shard,
                                .seq = p->seq,
                                .version = p->version,
                                .updates = p->updates,
                                .bytes_in = p->bytes_in,
                                .bytes_out = p->bytes_out,
                                .apply_seconds = p->apply_seconds,
                                .duplicates = p->duplicates};
}

/* A ping from a standby: it is alive (and holds the state or not). */
static void s_on_standby_ping(server_t *s, const wire_peer_t *peer, const Ps__ShardPing *p)
{
    member_shard_t *sh =
        p->shard >= 1 && p->shard < (uint32_t)s_shards(s) ? &s->group->sh[p->shard] : NULL;
    if (sh && sh->joined && s_same_peer(&sh->peer, peer)) {
        s_ack(s, peer); /* sent before its promotion, which crossed it */
        return;
    }
    if (!sh || !sh->sb_joined || !s_same_peer(&sh->sb_peer, peer)) {
        srv_log_refused(s, "refused a ping from a standby of shard %u it does not know", p->shard);
        /* a standby its primary gave up (it did not take the state in
         * time): it joins again, as a shard does after a head restart */
        srv_error(s, peer, PS__ERROR_CODE__ERROR_UNKNOWN_WORKER,
                  "this is not the standby the head knows for that shard: join again");
        return;
    }
    sh->sb_synced = p->synced;
    if (p->seq != s->group->seq)
        s_send_membership_to(s, (int)p->shard, 1, s->request);
    else
        s_ack(s, peer);
}

static void s_on_ping(server_t *s, const wire_peer_t *peer, const Ps__ShardPing *p)
{
    if (p->standby) {
        s_on_standby_ping(s, peer, p);
        return;
    }
    if (p->shard >= 1 && p->shard < (uint32_t)s_shards(s) && p->term &&
        p->term < s->group->sh[p->shard].term) {
        char why[300];
        snprintf(why, sizeof why, "shard %u's term %llu is over: %s serves it in term %llu",
                 p->shard, (unsigned long long)p->term, s->group->sh[p->shard].endpoint,
                 (unsigned long long)s->group->sh[p->shard].term);
        srv_log_refused(s, "refused a ping: %s", why);
        srv_error(s, peer, PS__ERROR_CODE__ERROR_FENCED, why);
        return;
    }
    member_shard_t *sh = s_shard_check(s, peer, p->shard, "ping");
    if (!sh || s_figures_problem(s, peer, p))
        return;
    sh->last_ping = clock_now();
    s_keep_figures(sh, p);
    if (p->seq != s->group->seq)
        s_send_membership(s, (int)p->shard, s->request);
    else
        s_ack(s, peer);
}

static void s_on_final(server_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    const Ps__ShardFinal *f = m->env->shard_final;
    member_shard_t *sh = s_shard_check(s, peer, f->shard, "final weights");
    if (!sh || (f->stats && s_figures_problem(s, peer, f->stats)))
        return;
    group_t *g = s->group;
    size_t lo, n;
    group_range(s->o->shards, (int)f->shard, s->model->nparams, &lo, &n);
    if (!g->over || f->offset != lo || m->count != n || !g->full) {
        char why[200];
        snprintf(why, sizeof why,
                 "final weights of shard %u refused: %s (values [%u, %zu); its range is "
                 "[%zu, %zu))",
                 f->shard, g->over ? "wrong range" : "the run is not over", f->offset,
                 (size_t)f->offset + m->count, lo, lo + n);
        srv_log_refused(s, "%s", why);
        srv_error(s, peer, PS__ERROR_CODE__ERROR_STATE, why);
        return;
    }
    memcpy(g->full + lo, m->tensor, n * sizeof(float));
    if (!sh->final_got)
        srv_log(s, "shard %u: final weights received (version %llu)", f->shard,
                (unsigned long long)f->version);
    sh->final_got = 1;
    if (f->stats)
        s_keep_figures(sh, f->stats);
    s_ack(s, peer);
}

void group_handle(server_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    switch (m->env->body_case) {
    case PS__ENVELOPE__BODY_SHARD_JOIN: s_on_join(s, peer, m->env->shard_join); break;
    case PS__ENVELOPE__BODY_SHARD_PING: s_on_ping(s, peer, m->env->shard_ping); break;
    case PS__ENVELOPE__BODY_SHARD_FINAL: s_on_final(s, peer, m); break;
    case PS__ENVELOPE__BODY_SHARD_TERM: s_on_term(s, peer, m->env->shard_term); break;
    default: break; /* server.c sends only these here */
    }
}

slot_t *group_check(server_t *s, const wire_peer_t *peer, uint32_t id, uint64_t token,
                    const char *what)
{
    if (s->shard == 0)
        return member_check(s, peer, id, what);
    group_t *g = s->group;
    char why[200];
    Ps__ErrorCode code = PS__ERROR_CODE__ERROR_RETRY;
    slot_t *sl = id < (uint32_t)s->o->workers ? &s->slots[id] : NULL;
    if (s->standby) {
        snprintf(why, sizeof why,
                 "this is shard %d's standby, which serves once the head promotes it; retry "
                 "(ask the head where shard %d is served: Locate)",
                 s->shard, s->shard);
    } else if (!sl) {
        snprintf(why, sizeof why, "%s from unknown worker id %u", what, id);
        code = PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
    } else if (g->known[id] && sl->token == 0 && s->started) {
        snprintf(why, sizeof why,
                 "%s from worker %u: the group returned to an older version; register again "
                 "with the head",
                 what, id);
        code = PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
    } else if (!s->started || !g->known[id] || sl->token != token) {
        /* The head's table may still be on its way: the worker retries. */
        snprintf(why, sizeof why,
                 "shard %d does not know worker %u with this token (yet): the head tells it "
                 "its workers; retry",
                 s->shard, id);
    } else if (sl->key[0] && strcmp(sl->key, peer->key) != 0) {
        snprintf(why, sizeof why, "%s claims worker %u from a connection with another key", what,
                 id);
        code = PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
    } else if (!sl->active) {
        snprintf(why, sizeof why, "%s from worker %u, which has %s", what, id,
                 sl->done ? "finished" : "been evicted (register again with the head)");
        code = sl->done ? PS__ERROR_CODE__ERROR_STATE : PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
    } else {
        sl->peer = *peer; /* replies go where its requests come from */
        return sl;
    }
    srv_log_refused(s, "refused %s", why);
    srv_error(s, peer, code, why);
    return NULL;
}

const float *group_final_weights(server_t *s)
{
    group_t *g = s->group;
    if (s_shards(s) == 1)
        return s->w;
    if (!g->full && !(g->full = malloc(s->model->nparams * sizeof(float)))) {
        fprintf(stderr, "error: out of memory for the final model\n");
        return NULL;
    }
    memcpy(g->full, s->w, s->n * sizeof(float));
    g->over = 1;
    group_membership_changed(s); /* says "over": the shards send their weights */
    srv_log(s, "run over: waiting for the shards' final weights");
    for (double end = clock_now() + GROUP_FINAL_SECONDS; clock_now() < end && !server_stop;) {
        int missing = 0;
        for (int i = 1; i < s_shards(s); i++)
            missing += !g->sh[i].final_got;
        if (!missing)
            return g->full;
        if (transport_wait(s, 200) != 0)
            break;
        server_handle_ready(s);
        transport_flush(s);
    }
    for (int i = 1; i < s_shards(s); i++)
        if (!g->sh[i].final_got)
            fprintf(stderr,
                    "error: shard %d (%s) did not send its final weights within %.0f s: the "
                    "model is not saved (is that paramserver --shard %d still running?)\n",
                    i, g->sh[i].endpoint[0] ? g->sh[i].endpoint : "not ready", GROUP_FINAL_SECONDS,
                    i);
    return NULL;
}

void group_write_stats(server_t *s)
{
    group_t *g = s->group;
    if (!g || !g->sh || s_shards(s) == 1 || !s->db)
        return;
    double t = srv_elapsed(s);
    g->sh[0].stats = (Ps__ShardPing){.version = s->version,
                                     .updates = (uint64_t)s->updates,
                                     .bytes_in = (uint64_t)s->bytes_in,
                                     .bytes_out = (uint64_t)s->bytes_out,
                                     .apply_seconds = s->apply_seconds};
    for (int i = 0; i < s_shards(s); i++) {
        const Ps__ShardPing *p = &g->sh[i].stats;
        srv_db(s,
               metrics_shard_stats(s->db, s->run, t, i, (int64_t)p->version, (int64_t)p->updates,
                                   (int64_t)p->bytes_in, (int64_t)p->bytes_out, p->apply_seconds));
    }
}

/* ---- a shard's life ---- */

/* A request to the head from a shard (no tensor but ShardFinal's). */
static int s_link_send(group_t *g, Ps__Envelope *env, zmq_msg_t *tensor)
{
    env->request_id = ++g->request;
    return wire_send_msg(g->head, NULL, env, tensor, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

/* CurveZMQ on the link to the head: this shard's certificate, the head's
 * public key. */
static int s_link_curve(void *sock, const server_opts_t *o)
{
    zcert_t *mine = zcert_load(o->curve_secret);
    zcert_t *head = o->server_key ? zcert_load(o->server_key) : NULL;
    int rc = -1;
    if (!o->server_key)
        fprintf(stderr, "error: with --curve-secret a shard needs --server-key, the head's "
                        "public certificate\n");
    else if (!mine || !head)
        fprintf(stderr, "error: cannot read the certificate %s\n",
                !mine ? o->curve_secret : o->server_key);
    else {
        zcert_apply(mine, sock);
        rc = zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, zcert_public_key(head), 32);
        if (rc != 0)
            fprintf(stderr, "error: cannot set the head's key: %s\n", zmq_strerror(errno));
    }
    zcert_destroy(&mine);
    zcert_destroy(&head);
    return rc;
}

/* Checks the head's ShardWelcome and copies its recipe into ro (its
 * strings into static storage: ro outlives the message). */
static int s_take_welcome(const Ps__ShardWelcome *w, const server_opts_t *o, server_opts_t *ro)
{
    static char dataset[32], replica_of[128];
    size_t lo = 0, n = 0;
    server_mode_t mode = MODE_SYNC;
    const char *bad = NULL;
    const model_def_t *model = models_find(w->model && *w->model ? w->model : MODELS_DEFAULT);
    int numbers_ok =
        w->shard == (uint32_t)o->shard && w->shards >= 2 && w->shards <= 64 && w->shard < w->shards;
    if (model && numbers_ok)
        group_range((int)w->shards, (int)w->shard, model->nparams, &lo, &n);
    if (!model || w->params != model->nparams) {
        char names[256];
        fprintf(stderr,
                "error: the head trains model '%s' (%u parameters), which this paramserver "
                "does not have (it has %s): run the same release of paramserver everywhere\n",
                w->model ? w->model : "", w->params, models_list(names, sizeof names));
        return -1;
    }
    if (o->model && strcmp(o->model, model->name) != 0) {
        fprintf(stderr,
                "error: this shard was given --model %s but the head trains %s: give the same "
                "--model, or none (a shard takes the head's)\n",
                o->model, model->name);
        return -1;
    }
    if (!numbers_ok)
        bad = "the shard numbers do not fit";
    else if (w->lo != lo || w->hi != lo + n)
        bad = "its range is not this release's (another release of paramserver?)";
    else if (w->workers < 1 || w->workers > 1024 || w->epochs < 1 || w->epochs > 1000 ||
             w->batch_size < 1 || w->batch_size > 128 || w->train_limit < w->workers)
        bad = "workers, epochs, batch size or train limit out of range";
    else if (w->staleness > 1000000 || w->checkpoint_every > (1u << 30))
        bad = "staleness or checkpoint interval out of range (--staleness 0..1000000, "
              "--checkpoint-every 0..2^30)";
    else if (!w->mode ||
             (strcmp(w->mode, "sync") && strcmp(w->mode, "async") && strcmp(w->mode, "ssp")))
        bad = "unknown mode";
    else if (!(w->lr > 0 && w->lr <= 100) || !(w->momentum >= 0 && w->momentum < 1) ||
             !(w->warmup_epochs >= 0 && w->warmup_epochs <= 1000))
        bad = "lr, momentum or warm-up out of range";
    else if (!w->dataset || !idx_dataset_dir(w->dataset))
        bad = "unknown data set";
    else if (w->failover_timeout != 0 &&
             !(w->failover_timeout >= 0.1 && w->failover_timeout <= 3600))
        bad = "failover timeout out of range (0.1..3600 s)";
    else if (w->replica_of && w->replica_of[0] && member_name_problem(w->replica_of, 127))
        bad = "the primary's endpoint is not usable";
    if (bad) {
        fprintf(stderr, "error: the head's recipe for shard %d is not usable: %s\n", o->shard, bad);
        return -1;
    }
    if (strcmp(w->mode, "async") == 0)
        mode = MODE_ASYNC;
    else if (strcmp(w->mode, "ssp") == 0)
        mode = MODE_SSP;
    *ro = *o;
    ro->mode = mode;
    ro->shards = (int)w->shards;
    ro->workers = (int)w->workers;
    ro->staleness = (int)w->staleness;
    ro->epochs = (int)w->epochs;
    ro->batch_size = (int)w->batch_size;
    ro->seed = w->seed;
    ro->lr = w->lr;
    ro->momentum = w->momentum;
    ro->train_limit = (int)w->train_limit;
    ro->checkpoint_every = o->checkpoint_every > 0 ? (int)w->checkpoint_every : 0;
    ro->lr_scaling = w->lr_linear ? LR_SCALING_LINEAR : LR_SCALING_NONE;
    ro->warmup_epochs = w->warmup_epochs;
    snprintf(dataset, sizeof dataset, "%s", w->dataset);
    ro->dataset = dataset;
    ro->model = model->name; /* the catalogue's: static */
    snprintf(replica_of, sizeof replica_of, "%s", w->replica_of ? w->replica_of : "");
    ro->replica_of = replica_of[0] ? replica_of : NULL;
    ro->failover_timeout = w->failover_timeout != 0 ? w->failover_timeout : 2.0; /* 0: not set */
    ro->test_limit = o->shard == 0 ? (int)w->test_limit : 0; /* the head's standby evaluates */
    if (o->shard == 0 && w->worker_timeout > 0)
        ro->worker_timeout = w->worker_timeout;
    ro->data_dir = NULL; /* a shard needs no data */
    ro->out_dir = NULL;  /* nor writes a model */
    ro->db = ":memory:"; /* the head keeps the metrics */
    return 0;
}

/* Joins the head: ShardJoin, resent every second, until its ShardWelcome
 * (copied into ro), an Error or --register-timeout. */
static int s_join_head(group_t *g, const server_opts_t *o, server_opts_t *ro,
                       uint64_t *head_version, int64_t *run_id, uint64_t *term)
{
    Ps__ShardJoin j = PS__SHARD_JOIN__INIT;
    j.shard = (uint32_t)o->shard;
    j.endpoint = "";
    j.standby = o->replica_of != NULL;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_JOIN;
    env.shard_join = &j;
    double start = clock_now(), next = start;
    printf("shard %d: joining the head at %s (waiting up to %.0f s)\n", o->shard, o->head,
           o->register_timeout);
    fflush(stdout);
    while (!server_stop) {
        double now = clock_now();
        if (now - start > o->register_timeout) {
            fprintf(stderr,
                    "error: shard %d: no answer from the head at %s within %.0f s "
                    "(--register-timeout): is paramserver --shards running there?\n",
                    o->shard, o->head, o->register_timeout);
            return -1;
        }
        if (now >= next) {
            s_link_send(g, &env, NULL);
            next = now + 1.0;
        }
        zmq_pollitem_t item = {g->head, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 200) <= 0)
            continue;
        wire_msg_t m;
        char err[256];
        int rc = wire_recv(g->head, NULL, &m, 0, err, sizeof err); /* the head sends no tensor */
        if (rc != 0) {
            if (rc > 0)
                fprintf(stderr, "error: shard %d: bad message from the head: %s\n", o->shard, err);
            if (rc > 0)
                return -1;
            continue;
        }
        int kind = m.env->body_case, result = 1;
        if (kind == PS__ENVELOPE__BODY_ERROR) {
            fprintf(stderr, "error: shard %d: the head refused it: %s\n", o->shard,
                    m.env->error->message ? m.env->error->message : "(no message)");
            result = -1;
        } else if (kind == PS__ENVELOPE__BODY_SHARD_WELCOME) {
            result = s_take_welcome(m.env->shard_welcome, o, ro);
            *head_version = m.env->shard_welcome->version;
            *run_id = m.env->shard_welcome->run_id;
            *term = m.env->shard_welcome->term;
        }
        wire_msg_close(&m);
        if (result <= 0)
            return result;
    }
    return -1;
}

/* Where workers reach this shard: --advertise, else the endpoint bound with
 * a wildcard host (* or 0.0.0.0) replaced by this machine's name. */
static void s_advertise(const server_opts_t *o, const char *bound, char *out, size_t n)
{
    if (o->advertise) {
        snprintf(out, n, "%s", o->advertise);
        return;
    }
    const char *colon = strrchr(bound, ':');
    if (strncmp(bound, "tcp://", 6) != 0 || !colon ||
        (strncmp(bound + 6, "*:", 2) != 0 && strncmp(bound + 6, "0.0.0.0:", 8) != 0)) {
        snprintf(out, n, "%s", bound);
        return;
    }
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(out, n, "tcp://%s%s", host, colon);
}

/* A join from a running shard: without an endpoint (for the head's
 * version), or with it (ready, at this version). */
static int s_send_join(server_t *s, const char *endpoint)
{
    Ps__ShardJoin j = PS__SHARD_JOIN__INIT;
    j.shard = (uint32_t)s->shard;
    j.endpoint = (char *)endpoint;
    j.resumed = s->o->resume || s->version > 0;
    j.version = s->version;
    j.standby = s->standby;
    j.term = s->term;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_JOIN;
    env.shard_join = &j;
    if (s_link_send(s->group, &env, NULL) != 0) {
        fprintf(stderr, "error: shard %d: cannot reach the head: %s\n", s->shard,
                zmq_strerror(errno));
        return -1;
    }
    return 0;
}

/* The head welcomed this shard (again), at head_version: a shard ahead of
 * it returns to that version from its checkpoint; then it says it is ready
 * (at its version: one behind the head's, from --resume, makes the head
 * return the group to it). 0, or -1 after printing why. */
static int s_rejoined(server_t *s, uint64_t head_version)
{
    char err[900];
    if (s->standby) {
        /* A standby takes its state from its primary, not from a file. */
        s->synced = 0;
        return s_send_join(s, s->group->advertise);
    }
    if (s->group->takeover) {
        /* The head's standby took over: the workers' resent pushes even the
         * versions out; nothing to return to. */
        s->group->takeover = 0;
        srv_log(s, "joined the head's standby, which took over (version %llu, its %llu)",
                (unsigned long long)s->version, (unsigned long long)head_version);
        return s_send_join(s, s->group->advertise);
    }
    if (s->version > head_version) {
        if (ckpt_rollback(s, head_version, err, sizeof err) != 0) {
            fprintf(stderr, "error: shard %d is at version %llu, the head at %llu, and %s\n",
                    s->shard, (unsigned long long)s->version, (unsigned long long)head_version,
                    err);
            return -1;
        }
        cons_forget(s);
        memset(s->group->known, 0, (size_t)s->o->workers * sizeof *s->group->known);
        s->group->file_slots = 1;
        srv_log(s, "returned to the head's version %llu", (unsigned long long)s->version);
        replica_resync(s);
    }
    return s_send_join(s, s->group->advertise);
}

/* The head's membership table, applied to the slots: new incarnations
 * (their open sync gradient dropped, their steps from the head), tokens,
 * who is active. Workers that left release the barriers they held up. */
static int s_apply_membership(server_t *s, const Ps__Membership *m)
{
    group_t *g = s->group;
    if (!g->head_known) {
        /* The first table from this head (at the start, or from a head that
         * restarted and numbers its tables afresh): its counters are taken
         * as they are. A return it counts happened before this shard joined
         * it, and the join agreed on the version (s_rejoined). */
        g->head_known = 1;
        g->seq_known = m->seq;
        g->rollbacks = m->rollbacks;
    }
    if (m->seq < g->seq_known)
        return 0; /* an older table that arrived late */
    g->seq_known = m->seq;
    if (m->rollbacks != g->rollbacks) {
        /* The group returns to an older version: this shard's checkpoint of
         * it, and every worker starts afresh from the head's table. */
        g->rollbacks = m->rollbacks;
        char err[900];
        if (s->standby) {
            /* its primary returns and sends it the state again, unless that
             * state (of this return) came before this table */
            if (s->rep_rollbacks < m->rollbacks)
                s->synced = 0;
        } else if (s->version != m->rollback_version &&
                   ckpt_rollback(s, m->rollback_version, err, sizeof err) != 0) {
            fprintf(stderr, "error: shard %d: %s\n", s->shard, err);
            return -1;
        }
        cons_forget(s);
        memset(g->known, 0, (size_t)s->o->workers * sizeof *g->known);
        g->file_slots = s->version == m->rollback_version;
        if (s->standby)
            srv_log(s, "the group returns to version %llu: waiting for the primary's state",
                    (unsigned long long)m->rollback_version);
        else
            srv_log(s, "the group returned to version %llu", (unsigned long long)s->version);
        replica_resync(s);
    }
    int left = 0, active = 0;
    for (size_t k = 0; k < m->n_members; k++) {
        const Ps__Member *mb = m->members[k];
        if (mb->id >= (uint32_t)s->o->workers)
            continue;
        slot_t *sl = &s->slots[mb->id];
        if (!g->known[mb->id] || mb->incarnation != (uint32_t)sl->incarnation) {
            /* A slot read from this shard's checkpoint, of the incarnation
             * the head names, keeps the steps the file says were applied
             * here; otherwise the steps are those before this incarnation. */
            int from_file =
                !g->known[mb->id] && g->file_slots && mb->incarnation == (uint32_t)sl->incarnation;
            /* A standby's steps of this incarnation came with its primary's
             * state, which may arrive before this table. */
            int from_state = !g->known[mb->id] && s->standby && s->synced &&
                             mb->incarnation == (uint32_t)sl->incarnation;
            if (g->known[mb->id])
                s->policy->on_rejoin(s, sl);
            sl->incarnation = (int)mb->incarnation;
            if (!from_file && !from_state)
                sl->steps = mb->start_step;
            sl->parts_got = 0;
            sl->pending = 0;
            g->known[mb->id] = 1;
        }
        sl->token = mb->token;
        sl->compress = mb->compress;
        snprintf(sl->key, sizeof sl->key, "%s", mb->key ? mb->key : "");
        left |= sl->active && !mb->active;
        sl->active = mb->active;
        sl->done = mb->done;
        sl->evicted = !mb->active && !mb->done;
        active += sl->active;
    }
    s->active = active;
    s->registered = s->o->workers;
    s->started = m->started;
    if (m->n_shards > 0) { /* the head's term and standby: to witness and follow a take-over */
        if (m->shards[0]->term > g->head_term)
            g->head_term = m->shards[0]->term;
        snprintf(g->head_sb, sizeof g->head_sb, "%s",
                 m->shards[0]->standby ? m->shards[0]->standby : "");
    }
    if ((size_t)s->shard < m->n_shards) {
        /* Who serves this range now, and its standby (replica.h). */
        const Ps__ShardRange *me = m->shards[s->shard];
        if (s->standby && me->term > s->term)
            s->term = me->term;
        else if (!s->standby && me->term > s->term) {
            fprintf(stderr,
                    "fenced: shard %d is served by %s in term %llu; this server's term %llu is "
                    "over. Stopping (start it again with the same command to make it the "
                    "standby of the new primary)\n",
                    s->shard, me->endpoint ? me->endpoint : "?", (unsigned long long)me->term,
                    (unsigned long long)s->term);
            s->fenced = 1;
            return -1;
        } else if (!s->standby)
            replica_standby_is(s, me->standby ? me->standby : "");
    }
    if (m->run_id > 0)
        s->run = m->run_id; /* for its checkpoints */
    if (left)
        s->policy->on_leave(s);
    if (m->over && !g->over) {
        g->over = 1;
        srv_log(s, "the head says the run is over (version %llu)", (unsigned long long)s->version);
    }
    return 0;
}

static int s_link_read(server_t *s);

/* The head granted this server's ShardTerm: a standby is the primary now;
 * a primary goes on alone. */
static void s_granted(server_t *s, const Ps__ShardTerm *t)
{
    if (t->shard != (uint32_t)s->shard || t->term <= s->term)
        return;
    s->term = t->term;
    if (s->standby && t->promote) {
        s->standby = 0;
        s->promote_asked = 0;
        s->group->last_ping = 0; /* tell the head at once */
        srv_log(s, "promoted: serving shard %d in term %llu (version %llu)", s->shard,
                (unsigned long long)s->term, (unsigned long long)s->version);
    }
}

/* The head or its standby asks the witness (shard 1) for the head's next
 * term: see group_witness. 0 when granted (s->term is the new term), -1. */
static int s_ask_witness(server_t *s, int promote, double wait)
{
    group_t *g = s->group;
    const char *ep = s_shards(s) > 1 ? g->sh[1].endpoint : "";
    if (!ep[0])
        return -1;
    if (!g->witness) {
        int linger = 0;
        g->witness = zmq_socket(s->ctx, ZMQ_DEALER);
        zmq_setsockopt(g->witness, ZMQ_LINGER, &linger, sizeof linger);
        if (!g->witness || zmq_connect(g->witness, ep) != 0) {
            srv_log(s, "cannot reach the witness (shard 1) at %s: %s", ep, zmq_strerror(errno));
            if (g->witness)
                zmq_close(g->witness);
            g->witness = NULL;
            return -1;
        }
    }
    Ps__ShardTerm t = PS__SHARD_TERM__INIT;
    t.shard = 0;
    t.term = s->term;
    t.promote = promote;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_TERM;
    env.shard_term = &t;
    env.request_id = ++g->request;
    if (wire_send(g->witness, NULL, &env, NULL, ZMQ_DONTWAIT) < 0)
        return -1;
    for (double end = clock_now() + wait; clock_now() < end && !server_stop;) {
        zmq_pollitem_t item = {g->witness, 0, ZMQ_POLLIN, 0};
        wire_msg_t m;
        char err[256];
        if (zmq_poll(&item, 1, 100) <= 0 ||
            wire_recv(g->witness, NULL, &m, 0, err, sizeof err) != 0)
            continue;
        int rc = -2; /* an answer to an earlier request: wait on */
        if (m.env->request_id == env.request_id) {
            rc = -1;
            if (m.env->body_case == PS__ENVELOPE__BODY_SHARD_TERM &&
                m.env->shard_term->term > s->term) {
                s->term = m.env->shard_term->term;
                rc = 0;
            } else if (m.env->body_case == PS__ENVELOPE__BODY_ERROR)
                srv_log(s, "the witness (shard 1) refused: %s",
                        m.env->error->message ? m.env->error->message : "");
        }
        wire_msg_close(&m);
        if (rc != -2)
            return rc;
    }
    return -1;
}

int group_ask_term(server_t *s, int promote, double wait)
{
    group_t *g = s->group;
    if (s->shard == 0)
        return s_ask_witness(s, promote, wait > 0 ? wait : 1.0);
    Ps__ShardTerm t = PS__SHARD_TERM__INIT;
    t.shard = (uint32_t)s->shard;
    t.term = s->term;
    t.promote = promote;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_TERM;
    env.shard_term = &t;
    uint64_t asked = s->term;
    if (s_link_send(g, &env, NULL) != 0)
        return -1;
    for (double end = clock_now() + wait; clock_now() < end && !server_stop;) {
        zmq_pollitem_t item = {g->head, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 100) <= 0)
            continue;
        if (s_link_read(s) != 0 || s->fenced)
            return -1;
        if (s->term > asked)
            return 0;
    }
    return wait > 0 ? -1 : 0;
}

/* Reads what the head sent. -1 when it refused this shard. */
static int s_link_read(server_t *s)
{
    group_t *g = s->group;
    for (;;) {
        int events = 0;
        size_t len = sizeof events;
        if (zmq_getsockopt(g->head, ZMQ_EVENTS, &events, &len) != 0 || !(events & ZMQ_POLLIN))
            return 0;
        wire_msg_t m;
        char err[256];
        int rc = wire_recv(g->head, NULL, &m, 0, err, sizeof err); /* the head sends no tensor */
        if (rc < 0)
            return 0;
        if (rc > 0) {
            srv_log(s, "warning: bad message from the head: %s", err);
            continue;
        }
        g->last_heard = clock_now();
        int kind = m.env->body_case, fail = 0;
        if (kind == PS__ENVELOPE__BODY_MEMBERSHIP)
            fail = s_apply_membership(s, m.env->membership) != 0;
        else if (kind == PS__ENVELOPE__BODY_SHARD_TERM)
            s_granted(s, m.env->shard_term);
        else if (kind == PS__ENVELOPE__BODY_ERROR &&
                 m.env->error->code == PS__ERROR_CODE__ERROR_FENCED) {
            const char *msg = m.env->error->message ? m.env->error->message : "";
            if (s->standby)
                srv_log(s, "the head refused: %s", msg);
            else {
                fprintf(stderr,
                        "fenced: shard %d: the head says %s. Stopping (start it again with the "
                        "same command to make it the standby of the new primary)\n",
                        s->shard, msg);
                s->fenced = 1;
                fail = 1;
            }
        } else if (kind == PS__ENVELOPE__BODY_SHARD_WELCOME && g->rejoining) {
            g->rejoining = 0;
            g->rejoin_at = 0;
            g->head_known = 0; /* the table that follows is this head's first */
            s->term = m.env->shard_welcome->term;
            fail = s_rejoined(s, m.env->shard_welcome->version) != 0;
        } else if (kind == PS__ENVELOPE__BODY_ERROR &&
                   m.env->error->code == PS__ERROR_CODE__ERROR_RETRY && g->rejoining) {
            /* the head's standby, not promoted yet: the join is sent again */
        } else if (kind == PS__ENVELOPE__BODY_ERROR &&
                   m.env->error->code == PS__ERROR_CODE__ERROR_UNKNOWN_WORKER) {
            /* The head restarted (--resume) and does not know this link:
             * join it again. */
            srv_log(s, "%s: joining it again",
                    s->standby ? "the head no longer names this standby (its primary gave it up)"
                               : "the head does not know this shard (it restarted?)");
            g->rejoining = 1;
            fail = s_send_join(s, "") != 0;
        } else if (kind == PS__ENVELOPE__BODY_ERROR) {
            fprintf(stderr, "error: shard %d: the head refused it: %s\n", s->shard,
                    m.env->error->message ? m.env->error->message : "(no message)");
            fail = 1;
        }
        wire_msg_close(&m);
        if (fail)
            return -1;
    }
}

/* This shard's figures, for the head. */
static void s_figures(const server_t *s, Ps__ShardPing *p)
{
    ps__shard_ping__init(p);
    p->shard = (uint32_t)s->shard;
    p->seq = s->group->seq_known;
    p->version = s->version;
    p->updates = (uint64_t)s->updates;
    p->bytes_in = (uint64_t)s->bytes_in;
    p->bytes_out = (uint64_t)s->bytes_out;
    p->apply_seconds = s->apply_seconds;
    p->duplicates = (uint64_t)s->duplicates;
    p->term = s->term;
    p->standby = s->standby;
    p->synced = s->synced;
}

static void s_ping(server_t *s)
{
    group_t *g = s->group;
    Ps__ShardPing p;
    s_figures(s, &p);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_PING;
    env.shard_ping = &p;
    s_link_send(g, &env, NULL);
    g->last_ping = clock_now();
}

/* The run is over: the final weights to the head, resent every second
 * until its Ack (to any of them). 0, or -1 after printing why. */
static int s_send_final(server_t *s)
{
    group_t *g = s->group;
    Ps__ShardFinal f = PS__SHARD_FINAL__INIT;
    f.shard = (uint32_t)s->shard;
    f.version = s->version;
    f.offset = (uint32_t)s->lo;
    f.count = (uint32_t)s->n;
    Ps__ShardPing stats;
    s_figures(s, &stats);
    f.stats = &stats;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_FINAL;
    env.shard_final = &f;
    /* An Ack to any sending counts: a slow head's answer to one may come
     * after the next was sent. */
    uint64_t first = g->request + 1;
    double end = clock_now() + GROUP_HEAD_SILENCE, next = 0;
    while (clock_now() < end && !server_stop) {
        if (clock_now() >= next) {
            zmq_msg_t t;
            if (wire_tensor_encode_n(&t, s->w, s->n, PS__ENCODING__ENCODING_F32, NULL) != 0 ||
                s_link_send(g, &env, &t) != 0)
                break;
            next = clock_now() + 1.0;
        }
        zmq_pollitem_t item = {g->head, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 200) <= 0)
            continue;
        wire_msg_t m;
        char err[256];
        if (wire_recv(g->head, NULL, &m, 0, err, sizeof err) != 0)
            continue;
        int acked = m.env->body_case == PS__ENVELOPE__BODY_ACK && m.env->request_id >= first;
        wire_msg_close(&m);
        if (acked) {
            srv_log(s, "final weights (version %llu) sent to the head",
                    (unsigned long long)s->version);
            return 0;
        }
    }
    fprintf(stderr,
            "error: shard %d: the head did not acknowledge the final weights within "
            "%.0f s\n",
            s->shard, GROUP_HEAD_SILENCE);
    return -1;
}

/* Moves the link to the head to ep (the head's standby that took over, or
 * back) and joins it again. */
static void s_switch_head(server_t *s, const char *ep)
{
    group_t *g = s->group;
    int linger = 0;
    zmq_setsockopt(g->head, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(g->head);
    g->head = zmq_socket(s->ctx, ZMQ_DEALER);
    linger = 1000;
    zmq_setsockopt(g->head, ZMQ_LINGER, &linger, sizeof linger);
    if (!g->head || zmq_connect(g->head, ep) != 0) {
        srv_log(s, "error: cannot connect to the head at %s: %s", ep, zmq_strerror(errno));
        return;
    }
    s->link = g->head;
    g->switched = !g->switched;
    g->takeover = 1;
    g->rejoining = 1;
    g->last_heard = clock_now();
    g->rejoin_at = clock_now() + 0.5;
    srv_log(s, "the head is silent: joining %s", ep);
    s_send_join(s, "");
}

void group_witness(server_t *s, const wire_peer_t *peer, const Ps__ShardTerm *t)
{
    group_t *g = s->group;
    char why[300];
    double silent = clock_now() - g->last_heard;
    if (s->shard != 1 || s->standby)
        snprintf(why, sizeof why, "only shard 1's primary witnesses the head's term");
    else if (t->shard != 0)
        snprintf(why, sizeof why, "a shard witnesses only the head's term (shard 0)");
    else if (t->term != g->head_term)
        snprintf(why, sizeof why, "the head is in term %llu, not %llu",
                 (unsigned long long)g->head_term, (unsigned long long)t->term);
    else if (t->promote && !g->head_sb[0])
        snprintf(why, sizeof why, "the head has no standby in this shard's table");
    else if (t->promote && silent < s->failover)
        snprintf(why, sizeof why, "the head answered this shard %.1f s ago: it is alive", silent);
    else {
        g->head_term++;
        srv_log(s, "witness: %s (the head's term %llu)",
                t->promote ? "the head's standby takes over"
                           : "the head goes on without its standby",
                (unsigned long long)g->head_term);
        Ps__ShardTerm answer = PS__SHARD_TERM__INIT;
        answer.shard = 0;
        answer.term = g->head_term;
        answer.promote = t->promote;
        Ps__Envelope env = PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_SHARD_TERM;
        env.shard_term = &answer;
        srv_answer(s, peer, &env);
        if (t->promote)
            s_switch_head(s, g->head_sb);
        return;
    }
    srv_log_refused(s, "refused to witness: %s", why);
    srv_error(s, peer, PS__ERROR_CODE__ERROR_FENCED, why);
}

/* The shard's loop: workers' pushes and pulls, the head's tables, a ping
 * every GROUP_PING_SECONDS; until the head says the run is over. */
static int s_shard_loop(server_t *s)
{
    group_t *g = s->group;
    while (!server_stop && !g->over) {
        if (transport_wait(s, s->standby || s->rep ? 50 : 100) != 0)
            return -1;
        if (s_link_read(s) != 0)
            return -1;
        server_handle_ready(s);
        transport_flush(s);
        replica_tick(s);
        if (s->fenced)
            return -1;
        double now = clock_now();
        if (g->rejoining && g->rejoin_at && now >= g->rejoin_at) {
            s_send_join(s, ""); /* the head's standby was not promoted yet */
            g->rejoin_at = now + 0.5;
        }
        /* shard 1 follows the head's standby when it grants it the head (group_witness) */
        if ((s->standby || s->shard != 1) && g->head_sb[0] && !g->rejoining &&
            now - g->last_heard > s->failover + 1)
            s_switch_head(s, g->switched ? s->o->head : g->head_sb);
        else if (g->rejoining && g->head_sb[0] && now - g->last_heard > 5 * s->failover + 2)
            s_switch_head(s, g->switched ? s->o->head : g->head_sb); /* nobody took over */
        if (now - g->last_ping >= GROUP_PING_SECONDS)
            s_ping(s);
        if (now - g->last_heard > GROUP_HEAD_SILENCE) {
            fprintf(stderr,
                    "error: shard %d: the head at %s has not answered for %.0f s; "
                    "stopping (restart this shard with --resume once the head is back)\n",
                    s->shard, s->o->head, GROUP_HEAD_SILENCE);
            if (s->o->checkpoint_every > 0)
                ckpt_write(s);
            return -1;
        }
    }
    if (s->standby && !server_stop) {
        srv_log(s, "the run is over; this standby was not needed");
        return 0;
    }
    return server_stop ? -1 : s_send_final(s);
}

/* --replica-of EP: asks the shard at EP (Locate) which shard it is and
 * where its head is, into mine. 0, or -1 after printing why. */
static int s_locate_primary(void *ctx, server_opts_t *mine)
{
    static char head[128];
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, rc = -1;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, mine->replica_of) != 0) {
        fprintf(stderr, "error: cannot connect to --replica-of %s: %s (it takes tcp://HOST:PORT)\n",
                mine->replica_of, zmq_strerror(errno));
        zmq_close(sock);
        return -1;
    }
    Ps__Locate l = PS__LOCATE__INIT;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_LOCATE;
    env.locate = &l;
    env.request_id = 1;
    double end = clock_now() + mine->register_timeout, next = 0;
    while (rc != 0 && clock_now() < end && !server_stop) {
        if (clock_now() >= next) {
            wire_send(sock, NULL, &env, NULL, ZMQ_DONTWAIT);
            next = clock_now() + 1.0;
        }
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        wire_msg_t m;
        char err[256];
        if (zmq_poll(&item, 1, 200) <= 0 || wire_recv(sock, NULL, &m, 0, err, sizeof err) != 0)
            continue;
        const Ps__Located *at =
            m.env->body_case == PS__ENVELOPE__BODY_LOCATED ? m.env->located : NULL;
        if (!at ||
            (at->shard > 0 && (!at->head || !at->head[0] || member_name_problem(at->head, 127)))) {
            fprintf(stderr,
                    "error: --replica-of %s is not a paramserver of a server group (it answered "
                    "with something else)\n",
                    mine->replica_of);
            wire_msg_close(&m);
            break;
        }
        /* a shard names its head; the head is its own */
        snprintf(head, sizeof head, "%s", at->shard > 0 ? at->head : mine->replica_of);
        mine->head = head;
        mine->shard = (int)at->shard;
        rc = 0;
        wire_msg_close(&m);
    }
    if (rc != 0 && clock_now() >= end)
        fprintf(stderr,
                "error: no answer from --replica-of %s within %.0f s (--register-timeout)\n",
                mine->replica_of, mine->register_timeout);
    zmq_close(sock);
    return rc;
}

/* The head's standby, joined (ro: the head's recipe with this process's
 * own --data-dir, --db, --out, --checkpoint, --threads): binds, says it is
 * ready on the link, then copies the head (server_run_head_standby). */
static int s_run_head_standby(group_t *g, const server_opts_t *o, server_opts_t *ro, uint64_t term)
{
    ro->data_dir = o->data_dir;
    ro->out_dir = o->out_dir;
    ro->db = o->db;
    ro->shard = 0;
    ro->head = NULL;
    ro->replica_of = NULL;
    ro->replicas = 0;
    server_t *s = server_new(ro);
    if (!s)
        return 1;
    s->standby = 1;
    s->term = term;
    s->failover = ro->failover_timeout;
    s->primary_heard = clock_now();
    char advertise[300];
    s_advertise(o, s->endpoint, advertise, sizeof advertise);
    Ps__ShardJoin j = PS__SHARD_JOIN__INIT;
    j.shard = 0;
    j.standby = 1;
    j.endpoint = advertise;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_JOIN;
    env.shard_join = &j;
    int acked = 0;
    for (double end = clock_now() + 30; !acked && clock_now() < end && !server_stop;) {
        s_link_send(g, &env, NULL);
        zmq_pollitem_t item = {g->head, 0, ZMQ_POLLIN, 0};
        wire_msg_t m;
        char err[256];
        if (zmq_poll(&item, 1, 1000) <= 0 || wire_recv(g->head, NULL, &m, 0, err, sizeof err) != 0)
            continue;
        acked = m.env->body_case == PS__ENVELOPE__BODY_ACK;
        if (m.env->body_case == PS__ENVELOPE__BODY_ERROR) {
            fprintf(stderr, "error: the head refused its standby: %s\n",
                    m.env->error->message ? m.env->error->message : "");
            wire_msg_close(&m);
            break;
        }
        wire_msg_close(&m);
    }
    if (!acked) {
        server_destroy(&s);
        return 1;
    }
    srv_log(s,
            "the head's standby: copies %s; takes over after %.1f s of its silence, when shard 1 "
            "agrees; workers reach it at %s",
            o->replica_of, s->failover, advertise);
    return server_run_head_standby(s);
}

int server_run_shard(const server_opts_t *opts)
{
    server_opts_t mine = *opts; /* --replica-of: completed from the primary */
    const server_opts_t *o = &mine;
    group_t *g = calloc(1, sizeof *g);
    server_t *s = NULL;
    int status = 1;
    zsys_handler_set(NULL);
    void *ctx = zsys_init();
    if (!g || !ctx) {
        fprintf(stderr, "error: cannot start: out of memory or ZeroMQ failed\n");
        free(g);
        return 1;
    }
    g->head = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 1000;
    zmq_setsockopt(g->head, ZMQ_LINGER, &linger, sizeof linger);
    static server_opts_t ro; /* the recipe: must outlive the server */
    uint64_t head_version = 0, term = 0;
    int64_t run_id = 0;
    if (o->curve_secret && s_link_curve(g->head, o) != 0)
        goto out;
    if (o->replica_of && !o->head && s_locate_primary(ctx, &mine) != 0)
        goto out;
    if (zmq_connect(g->head, o->head) != 0) {
        fprintf(stderr,
                "error: cannot connect to the head at %s: %s (--head takes "
                "tcp://HOST:PORT)\n",
                o->head, zmq_strerror(errno));
        goto out;
    }
    if (s_join_head(g, o, &ro, &head_version, &run_id, &term) != 0)
        goto out;
    if (o->shard == 0) { /* the head's standby */
        status = s_run_head_standby(g, o, &ro, term);
        goto out;
    }
    if (!(s = server_new(&ro)))
        goto out;
    s->term = term;
    s->failover = ro.failover_timeout;
    s->standby = ro.replica_of != NULL;
    s->primary_heard = clock_now();
    if (o->resume && s->run != run_id && !s->standby) {
        fprintf(stderr,
                "error: shard %d: the checkpoint %s is of run %lld, not the head's run %lld: "
                "another run left it; start this shard without --resume, or resume the head "
                "of run %lld\n",
                o->shard, o->checkpoint, (long long)s->run, (long long)run_id, (long long)s->run);
        goto out;
    }
    /* server_new made no group for a shard: this link is it. */
    g->known = calloc((size_t)ro.workers, sizeof *g->known);
    if (!g->known) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    s->group = g;
    s->link = g->head;
    g = NULL;
    s->run = run_id;
    s->group->file_slots = o->resume;
    s->t0 = clock_now(); /* its log's clock */
    s->group->last_heard = clock_now();
    char advertise[300];
    s_advertise(o, s->endpoint, advertise, sizeof advertise);
    snprintf(s->group->advertise, sizeof s->group->advertise, "%s", advertise);
    if (s_rejoined(s, head_version) != 0)
        goto out;
    srv_log(s, "shard %d of %d%s: values [%zu, %zu), mode %s, %d workers; workers reach it at %s",
            o->shard, ro.shards, s->standby ? " (standby)" : "", s->lo, s->lo + s->n,
            server_mode_name(ro.mode), ro.workers, advertise);
    if (s->standby)
        srv_log(s, "standby of %s (term %llu): takes over after %.1f s of its silence",
                ro.replica_of, (unsigned long long)s->term, s->failover);
    status = s_shard_loop(s) == 0 ? 0 : s->fenced ? 3 : 1;
    if (status == 0 && o->checkpoint && ro.checkpoint_every > 0)
        ckpt_remove(s); /* a standby too: a former primary's file must not be resumed later */
out:
    if (s)
        s->run = 0; /* the head records the run */
    server_destroy(&s);
    if (g) {
        zmq_close(g->head);
        free(g);
    }
    return status;
}
