/* replica: a server's hot standby (see replica.h): the primary forwarding
 * its state, each update (and the head its tables and metrics rows), the
 * standby applying them, and the head's standby taking over. */
#include "replica.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "consistency.h"
#include "group.h"
#include "membership.h"
#include "model.h"

/* Each worker slot's applied steps and incarnation, for the standby's
 * exactly-once table (arrays of o->workers entries). */
static void s_steps(const server_t *s, uint64_t *steps, uint32_t *inc)
{
    for (int k = 0; k < s->o->workers; k++) {
        steps[k] = cons_applied_steps(&s->slots[k]);
        inc[k] = (uint32_t)s->slots[k].incarnation;
    }
}

/* Sends one message to the standby: kind, the counters, a tensor of the
 * range (NULL for a heartbeat). 0, or -1. */
static int s_send(server_t *s, Ps__ReplicaKind kind, const float *t, float lr)
{
    int W = s->o->workers;
    uint64_t steps[W];
    uint32_t inc[W];
    s_steps(s, steps, inc);
    Ps__ReplicaUpdate u = PS__REPLICA_UPDATE__INIT;
    u.kind = kind;
    u.term = s->term;
    u.version = s->version;
    u.lr = lr;
    u.updates = s->updates;
    u.stale_sum = s->stale_sum;
    u.stale_max = s->stale_max;
    u.n_steps = (size_t)W;
    u.steps = steps;
    u.n_incarnations = (size_t)W;
    u.incarnations = inc;
    u.offset = (uint32_t)s->lo;
    u.count = t ? (uint32_t)s->n : 0;
    u.rollbacks = group_rollbacks(s);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_REPLICA_UPDATE;
    env.replica_update = &u;
    env.request_id = ++s->rep_request;
    zmq_msg_t frame;
    if (t && wire_tensor_encode_n(&frame, t, s->n, PS__ENCODING__ENCODING_F32, NULL) != 0)
        return -1;
    long n = wire_send_msg(s->rep, NULL, &env, t ? &frame : NULL, ZMQ_DONTWAIT);
    if (n < 0)
        return -1;
    s->bytes_out += n;
    s->rep_sent = clock_now();
    return 0;
}

/* Waits for the standby's ack of request `request` for `seconds`. 1:
 * acked; 0: no ack (silent, or it refused: state out of order); -1: it
 * says this server's term is over. */
static int s_wait_ack_for(server_t *s, uint64_t request, double seconds)
{
    double end = clock_now() + seconds;
    while (clock_now() < end) {
        zmq_pollitem_t item = {s->rep, 0, ZMQ_POLLIN, 0};
        long ms = (long)((end - clock_now()) * 1000) + 1;
        int rc = zmq_poll(&item, 1, ms);
        if (rc < 0 && errno != EINTR)
            return 0;
        if (rc <= 0)
            continue;
        wire_msg_t m;
        char err[256];
        if (wire_recv(s->rep, NULL, &m, 0, err, sizeof err) != 0)
            continue;
        const Ps__Envelope *env = m.env;
        int result = 2; /* not this request's answer: wait on */
        if (env->body_case == PS__ENVELOPE__BODY_ERROR &&
            env->error->code == PS__ERROR_CODE__ERROR_FENCED) {
            srv_log(s, "fenced by the standby at %s: %s", s->rep_endpoint,
                    env->error->message ? env->error->message : "");
            result = -1;
        } else if (env->request_id != request)
            result = 2;
        else if (env->body_case == PS__ENVELOPE__BODY_REPLICA_ACK &&
                 env->replica_ack->version == s->version)
            result = 1;
        else {
            srv_log(s, "the standby at %s refused the update (%s): sending it the state again",
                    s->rep_endpoint,
                    env->body_case == PS__ENVELOPE__BODY_ERROR && env->error->message
                        ? env->error->message
                        : wire_kind_name(env->body_case));
            result = 0;
        }
        wire_msg_close(&m);
        if (result != 2)
            return result;
    }
    return 0;
}

/* An update's ack: within the failover timeout. */
static int s_wait_ack(server_t *s, uint64_t request)
{
    return s_wait_ack_for(s, request, s->failover);
}

/* The state's ack: a new connection first (a lost SYN costs a 1-s TCP
 * retransmission), and 2 x n floats to take: at least 5 s. */
#define REPLICA_STATE_SECONDS 5.0

static void s_disconnect(server_t *s)
{
    if (s->rep) {
        int linger = 0;
        zmq_setsockopt(s->rep, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(s->rep);
    }
    s->rep = NULL;
}

/* The head: its tables (worker slots, the group's, the run) to its
 * standby, unacknowledged (a SYNC after it is). 0, or -1. */
static int s_send_head(server_t *s)
{
    int W = s->o->workers, S = s->o->shards > 1 ? s->o->shards : 1;
    Ps__HeadSlot hs[W], *hp[W];
    for (int k = 0; k < W; k++) {
        const slot_t *sl = &s->slots[k];
        ps__head_slot__init(&hs[k]);
        hs[k].id = (uint32_t)k;
        hs[k].name = (char *)sl->name;
        hs[k].host = (char *)sl->host;
        hs[k].threads = (uint32_t)sl->threads;
        hs[k].incarnation = (uint32_t)sl->incarnation;
        hs[k].active = sl->active;
        hs[k].done = sl->done;
        hs[k].evicted = sl->evicted;
        hs[k].steps = cons_applied_steps(sl);
        hs[k].key = (char *)sl->key;
        hs[k].images = sl->shard;
        hs[k].compress = sl->compress;
        hs[k].token = sl->token;
        hs[k].start_step = sl->start_step;
        hs[k].epochs_reported = sl->epochs_reported;
        hp[k] = &hs[k];
    }
    Ps__ShardRange ranges[S], *rp[S];
    group_ranges(s, ranges, rp);
    Ps__ReplicaHead h = PS__REPLICA_HEAD__INIT;
    h.n_slots = (size_t)W;
    h.slots = hp;
    h.n_shards = (size_t)S;
    h.shards = rp;
    h.run_id = s->run;
    h.started = s->started;
    h.elapsed = srv_elapsed(s);
    h.registered = (uint32_t)s->registered;
    h.active = (uint32_t)s->active;
    h.term = s->term;
    group_head_table(s, &h);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_REPLICA_HEAD;
    env.replica_head = &h;
    env.request_id = ++s->rep_request;
    long n = wire_send(s->rep, NULL, &env, NULL, ZMQ_DONTWAIT);
    if (n < 0)
        return -1;
    s->bytes_out += n;
    return 0;
}

/* The head's metrics journal (metrics.h): each row to the standby as it is
 * written, unacknowledged (the next SYNC or update is). */
static void s_journal(void *arg, int statement, const metrics_value_t *v, int n)
{
    server_t *s = arg;
    if (!s->rep || n > METRICS_MAX_VALUES + 1)
        return;
    Ps__MetricValue mv[n], *mp[n];
    for (int i = 0; i < n; i++) {
        ps__metric_value__init(&mv[i]);
        switch (v[i].kind) {
        case 'i': mv[i].v_case = PS__METRIC_VALUE__V_I, mv[i].i = v[i].i; break;
        case 'd': mv[i].v_case = PS__METRIC_VALUE__V_D, mv[i].d = v[i].d; break;
        case 's': mv[i].v_case = PS__METRIC_VALUE__V_S, mv[i].s = (char *)v[i].s; break;
        default: mv[i].v_case = PS__METRIC_VALUE__V_NULL, mv[i].null = 1; break;
        }
        mp[i] = &mv[i];
    }
    Ps__MetricRow row = PS__METRIC_ROW__INIT;
    row.statement = (uint32_t)statement;
    row.n_values = (size_t)n;
    row.values = mp;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_METRIC_ROW;
    env.metric_row = &row;
    env.request_id = ++s->rep_request;
    long sent = wire_send(s->rep, NULL, &env, NULL, ZMQ_DONTWAIT);
    if (sent > 0)
        s->bytes_out += sent;
    else
        srv_log(s, "warning: a metrics row did not reach the standby: %s", zmq_strerror(errno));
}

/* Sends the whole state and waits for the ack. 1, 0 or -1 as s_wait_ack. */
static int s_send_state(server_t *s)
{
    if (s->shard == 0 && s_send_head(s) != 0)
        return 0;
    if (s_send(s, PS__REPLICA_KIND__REPLICA_STATE_W, s->w, 0) != 0 ||
        s_send(s, PS__REPLICA_KIND__REPLICA_STATE_V, s->v, 0) != 0)
        return 0;
    return s_wait_ack_for(s, s->rep_request,
                          s->failover > REPLICA_STATE_SECONDS ? s->failover
                                                              : REPLICA_STATE_SECONDS);
}

/* The standby did not acknowledge: the head must let this server go on
 * alone (else it is fenced). 0 or -1 as replica_forward. */
static int s_lose_standby(server_t *s, const char *why)
{
    srv_log(s, "the standby at %s %s: asking %s to go on without it", s->rep_endpoint, why,
            s->shard ? "the head" : "the witness (shard 1)");
    s_disconnect(s);
    if (s->shard == 0 && s->db)
        metrics_set_journal(s->db, NULL, NULL);
    s->rep_endpoint[0] = '\0';
    if (group_ask_term(s, 0, 2 * s->failover + 5) != 0) {
        s->fenced = 1;
        return -1;
    }
    srv_log(s, "going on without a standby (term %llu)", (unsigned long long)s->term);
    return 0;
}

/* Sends the state (once more when the standby refused an update), or
 * gives the standby up. 0 or -1 as replica_forward. */
static int s_sync_standby(server_t *s)
{
    int rc = s_send_state(s);
    if (rc < 0) {
        s->fenced = 1;
        return -1;
    }
    if (rc == 0)
        return s_lose_standby(s, "took no state");
    if (s->shard == 0 && s->db)
        metrics_set_journal(s->db, s_journal, s);
    srv_log(s, "standby at %s holds the state (version %llu, term %llu)", s->rep_endpoint,
            (unsigned long long)s->version, (unsigned long long)s->term);
    return 0;
}

/* A SYNC to the standby, acknowledged once everything sent before it has
 * been applied there. 0 or -1 as replica_forward. */
static int s_sync_point(server_t *s)
{
    if (s->fenced)
        return -1;
    if (!s->rep)
        return 0;
    if (s_send(s, PS__REPLICA_KIND__REPLICA_SYNC, NULL, 0) != 0)
        return s_lose_standby(s, "cannot be sent to");
    int rc = s_wait_ack(s, s->rep_request);
    if (rc < 0) {
        s->fenced = 1;
        return -1;
    }
    return rc > 0 ? 0 : s_sync_standby(s);
}

int replica_sync_point(server_t *s)
{
    return s_sync_point(s);
}

void replica_end(server_t *s)
{
    if (s->shard != 0 || !s->rep || s->fenced)
        return;
    if (s_send(s, PS__REPLICA_KIND__REPLICA_END, NULL, 0) == 0 && s_wait_ack(s, s->rep_request) > 0)
        srv_log(s, "the head's standby at %s has the whole run", s->rep_endpoint);
    else
        srv_log(s, "warning: the head's standby at %s did not acknowledge the run's end",
                s->rep_endpoint);
}

int replica_head_changed(server_t *s)
{
    if (!s->rep || s->shard != 0 || s->standby)
        return s->fenced ? -1 : 0;
    if (s_send_head(s) != 0)
        return s_lose_standby(s, "cannot be sent to");
    return s_sync_point(s);
}

int replica_forward(server_t *s, const float *g, float lr)
{
    if (s->fenced)
        return -1;
    if (!s->rep)
        return 0;
    if (s_send(s, PS__REPLICA_KIND__REPLICA_UPDATE, g, lr) != 0)
        return s_lose_standby(s, "cannot be sent to");
    int rc = s_wait_ack(s, s->rep_request);
    if (rc > 0) {
        return 0;
    }
    if (rc < 0) {
        s->fenced = 1;
        return -1;
    }
    /* Silent, or out of step: the whole state once more, then give up. */
    return s_sync_standby(s);
}

void replica_standby_is(server_t *s, const char *endpoint)
{
    if (s->standby || s->fenced || strcmp(endpoint, s->rep_endpoint) == 0)
        return;
    s_disconnect(s);
    snprintf(s->rep_endpoint, sizeof s->rep_endpoint, "%s", endpoint);
    if (!endpoint[0])
        return;
    s->rep = zmq_socket(s->ctx, ZMQ_DEALER);
    if (!s->rep || zmq_connect(s->rep, endpoint) != 0) {
        s_lose_standby(s, "cannot be connected to");
        return;
    }
    srv_log(s, "standby at %s: sending it the state", endpoint);
    s_sync_standby(s);
}

void replica_resync(server_t *s)
{
    if (s->rep && !s->standby)
        s_sync_standby(s);
}

/* The head's standby was promoted by the witness: it is the head now. The
 * shards join it again keeping their state; each worker's next request,
 * from a new connection, is taken by its id and token (slot_t.moved); an
 * update the old head acknowledged is here, one it did not is applied once
 * when resent. */
static void s_head_took_over(server_t *s, double silent)
{
    s->standby = 0;
    s->promote_asked = 0;
    group_took_over(s);
    cons_forget(s);
    double now = clock_now();
    for (int k = 0; k < s->o->workers; k++) {
        slot_t *sl = &s->slots[k];
        sl->moved = sl->active || sl->done;
        sl->last_seen = now;
        sl->peer.len = 0;
    }
    char detail[300];
    snprintf(detail, sizeof detail,
             "the head's primary silent for %.1f s; its standby serves as the head in term %llu "
             "(version %llu)",
             silent, (unsigned long long)s->term, (unsigned long long)s->version);
    srv_log(s, "%s", detail);
    srv_db(s, metrics_event(s->db, s->run, srv_elapsed(s), -1, "failover", detail));
}

void replica_tick(server_t *s)
{
    if (s->rep_pending[0] && !s->standby) {
        /* the head's standby said it is ready (group.c): now that the Ack
         * has left through the gate, its state */
        char ep[sizeof s->rep_pending];
        snprintf(ep, sizeof ep, "%s", s->rep_pending);
        s->rep_pending[0] = '\0';
        replica_standby_is(s, ep);
        group_membership_changed(s);
        member_maybe_start(s);
    }
    double now = clock_now();
    if (!s->standby) {
        if (s->rep && now - s->rep_sent >= REPLICA_BEAT_SECONDS)
            s_send(s, PS__REPLICA_KIND__REPLICA_BEAT, NULL, 0);
        /* Drain what the standby sent unasked (late acks). */
        while (s->rep) {
            zmq_pollitem_t item = {s->rep, 0, ZMQ_POLLIN, 0};
            wire_msg_t m;
            char err[256];
            if (zmq_poll(&item, 1, 0) <= 0 || wire_recv(s->rep, NULL, &m, 0, err, sizeof err) != 0)
                break;
            int fenced = m.env->body_case == PS__ENVELOPE__BODY_ERROR &&
                         m.env->error->code == PS__ERROR_CODE__ERROR_FENCED;
            wire_msg_close(&m);
            if (fenced) {
                srv_log(s, "fenced by the standby at %s", s->rep_endpoint);
                s->fenced = 1;
            }
        }
        return;
    }
    if (s->synced && now - s->primary_heard > s->failover && now - s->promote_asked > 0.5) {
        if (s->promote_asked == 0)
            srv_log(s, "the primary has been silent for %.1f s: asking %s to promote this standby",
                    now - s->primary_heard, s->shard ? "the head" : "the witness (shard 1)");
        s->promote_asked = now;
        if (s->shard != 0)
            group_ask_term(s, 1, 0); /* the head's answer comes to the shard's loop */
        else if (group_ask_term(s, 1, 1.0) == 0)
            s_head_took_over(s, now - s->primary_heard);
    }
}

/* Why an update cannot be applied here (into why), or 0. */
static int s_update_problem(const server_t *s, const Ps__ReplicaUpdate *u, const wire_msg_t *m,
                            char *why, size_t n)
{
    int with_tensor = u->kind == PS__REPLICA_KIND__REPLICA_STATE_W ||
                      u->kind == PS__REPLICA_KIND__REPLICA_STATE_V ||
                      u->kind == PS__REPLICA_KIND__REPLICA_UPDATE;
    if (u->n_steps != (size_t)s->o->workers || u->n_incarnations != (size_t)s->o->workers)
        snprintf(why, n, "update names %zu workers; the run has %d", u->n_steps, s->o->workers);
    else if (with_tensor && (u->offset != s->lo || m->count != s->n))
        snprintf(why, n, "update holds [%u, %zu); this standby's range is [%zu, %zu)", u->offset,
                 (size_t)u->offset + m->count, s->lo, s->lo + s->n);
    else if (u->kind == PS__REPLICA_KIND__REPLICA_UPDATE &&
             (!s->synced || u->version != s->version + 1))
        snprintf(why, n, "update to version %llu; this standby is at %llu%s",
                 (unsigned long long)u->version, (unsigned long long)s->version,
                 s->synced ? "" : " without the state");
    else if (u->kind == PS__REPLICA_KIND__REPLICA_UPDATE &&
             !model_sgd_step_finite(s->w, s->v, m->tensor, s->n, u->lr, (float)s->o->momentum))
        snprintf(why, n, "update would make the weights not finite");
    else
        return 0;
    return -1;
}

static void s_take_counters(server_t *s, const Ps__ReplicaUpdate *u)
{
    s->version = u->version;
    s->updates = u->updates;
    s->stale_sum = u->stale_sum;
    s->stale_max = u->stale_max;
    for (int k = 0; k < s->o->workers; k++) {
        s->slots[k].steps = u->steps[k];
        s->slots[k].incarnation = (int)u->incarnations[k];
    }
}

void replica_on_update(server_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    const Ps__ReplicaUpdate *u = m->env->replica_update;
    char why[300];
    if (!s->standby || u->term < s->term) {
        if (s->standby)
            snprintf(why, sizeof why,
                     "the update's term %llu is over: shard %d is in term %llu, served by another "
                     "server",
                     (unsigned long long)u->term, s->shard, (unsigned long long)s->term);
        else
            snprintf(why, sizeof why,
                     "this server serves shard %d in term %llu: it takes no replica updates (a "
                     "sender that was its primary is fenced)",
                     s->shard, (unsigned long long)s->term);
        srv_log_refused(s, "refused a replica update: %s", why);
        srv_error(s, peer, PS__ERROR_CODE__ERROR_FENCED, why);
        return;
    }
    if (u->term > s->term)
        s->term = u->term;
    s->primary_heard = clock_now();
    s->promote_asked = 0;
    if (s_update_problem(s, u, m, why, sizeof why) != 0) {
        srv_log_refused(s, "refused a replica update: %s", why);
        srv_error(s, peer, PS__ERROR_CODE__ERROR_STATE, why);
        return;
    }
    switch (u->kind) {
    case PS__REPLICA_KIND__REPLICA_BEAT: return;
    case PS__REPLICA_KIND__REPLICA_SYNC: break; /* acked below: what came before is in */
    case PS__REPLICA_KIND__REPLICA_END: s->ended = 1; break;
    case PS__REPLICA_KIND__REPLICA_STATE_W:
        s->synced = 0;
        memcpy(s->w, m->tensor, s->n * sizeof(float));
        return;
    case PS__REPLICA_KIND__REPLICA_STATE_V:
        memcpy(s->v, m->tensor, s->n * sizeof(float));
        s->rep_rollbacks = u->rollbacks;
        cons_forget(s);
        if (!s->synced)
            srv_log(s, "holds the primary's state: version %llu, term %llu",
                    (unsigned long long)u->version, (unsigned long long)u->term);
        s->synced = 1;
        break;
    case PS__REPLICA_KIND__REPLICA_UPDATE: {
        double t0 = clock_now();
        model_sgd_step(s->w, s->v, m->tensor, s->n, u->lr, (float)s->o->momentum);
        s->apply_seconds += clock_now() - t0;
        break;
    }
    default: srv_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, "unknown replica kind"); return;
    }
    s_take_counters(s, u);
    Ps__ReplicaAck ack = PS__REPLICA_ACK__INIT;
    ack.term = s->term;
    ack.version = s->version;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_REPLICA_ACK;
    env.replica_ack = &ack;
    srv_answer(s, peer, &env);
}

/* Is a message from the primary of this standby's term? Else refused
 * (FENCED) and 0. */
static int s_from_primary(server_t *s, const wire_peer_t *peer, uint64_t term, const char *what)
{
    if (s->standby && term >= s->term)
        return 1;
    char why[200];
    snprintf(why, sizeof why, "%s of term %llu refused: %s", what, (unsigned long long)term,
             s->standby ? "that term is over" : "this server is not a standby");
    srv_log_refused(s, "%s", why);
    srv_error(s, peer, PS__ERROR_CODE__ERROR_FENCED, why);
    return 0;
}

void replica_on_head(server_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    const Ps__ReplicaHead *h = m->env->replica_head;
    if (s->shard != 0 || !s_from_primary(s, peer, h->term, "the head's tables"))
        return;
    s->primary_heard = clock_now();
    for (size_t i = 0; i < h->n_slots; i++) {
        const Ps__HeadSlot *hs = h->slots[i];
        if (hs->id >= (uint32_t)s->o->workers)
            continue;
        slot_t *sl = &s->slots[hs->id];
        snprintf(sl->name, sizeof sl->name, "%s", hs->name ? hs->name : "");
        snprintf(sl->host, sizeof sl->host, "%s", hs->host ? hs->host : "");
        snprintf(sl->key, sizeof sl->key, "%s", hs->key ? hs->key : "");
        sl->threads = (int)hs->threads;
        sl->incarnation = (int)hs->incarnation;
        sl->active = hs->active;
        sl->done = hs->done;
        sl->evicted = hs->evicted;
        sl->steps = hs->steps;
        sl->shard = hs->images;
        sl->compress = hs->compress;
        sl->token = hs->token;
        sl->start_step = hs->start_step;
        sl->epochs_reported = hs->epochs_reported;
    }
    s->run = h->run_id;
    s->started = h->started;
    s->t0 = clock_now() - h->elapsed;
    s->registered = (int)h->registered;
    s->active = (int)h->active;
    group_take_head_table(s, h);
}

void replica_on_metric(server_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    const Ps__MetricRow *row = m->env->metric_row;
    if (!s_from_primary(s, peer, s->term, "a metrics row") || s->shard != 0)
        return;
    s->primary_heard = clock_now();
    if (row->n_values > METRICS_MAX_VALUES + 1) {
        srv_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, "a metrics row with too many values");
        return;
    }
    metrics_value_t v[METRICS_MAX_VALUES + 1];
    for (size_t i = 0; i < row->n_values; i++) {
        const Ps__MetricValue *mv = row->values[i];
        v[i] = (metrics_value_t){.kind = 'n'};
        if (mv->v_case == PS__METRIC_VALUE__V_I)
            v[i] = (metrics_value_t){.kind = 'i', .i = mv->i};
        else if (mv->v_case == PS__METRIC_VALUE__V_D)
            v[i] = (metrics_value_t){.kind = 'd', .d = mv->d};
        else if (mv->v_case == PS__METRIC_VALUE__V_S)
            v[i] = (metrics_value_t){.kind = 's', .s = mv->s};
    }
    if (metrics_replay(s->db, (int)row->statement, v, (int)row->n_values) != 0) {
        srv_db(s, -1);
        return;
    }
    /* The rows it holds say which reports and steps are recorded: a resent
     * one, after a take-over, is not recorded twice. */
    int w = -1, epoch = 0;
    int64_t step = 0;
    if (metrics_row_progress((int)row->statement, v, (int)row->n_values, &w, &step, &epoch) &&
        w >= 0 && w < s->o->workers) {
        slot_t *sl = &s->slots[w];
        if (epoch > 0 && (uint32_t)epoch > sl->epochs_reported)
            sl->epochs_reported = (uint32_t)epoch;
        if (step > 0 && (uint64_t)step > sl->step_rowed)
            sl->step_rowed = (uint64_t)step;
    }
}

void replica_close(server_t *s)
{
    s_disconnect(s);
    free(s->rep_g);
    s->rep_g = NULL;
}
