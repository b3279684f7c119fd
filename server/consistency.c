/* consistency: sync, async, ssp and independent as four policies over one
 * model (see consistency.h): applying gradients, holding and releasing
 * replies; and the learning-rate schedule every applied step uses. */
#include "consistency.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "clock.h"
#include "model.h"
#include "modelfile.h"
#include "replica.h"
#include "shard.h"

double cons_lr(const server_opts_t *o, uint64_t version, int workers, int64_t updates_per_epoch)
{
    if (o->lr_scaling == LR_SCALING_NONE || o->mode != MODE_SYNC || workers <= 1)
        return o->lr;
    double target = o->lr * workers, ramp = o->warmup_epochs * (double)updates_per_epoch;
    if (ramp <= 0 || (double)version >= ramp)
        return target;
    return o->lr + (target - o->lr) * ((double)version / ramp);
}

int64_t cons_updates_per_epoch(const server_opts_t *o, int train_count)
{
    int64_t n = 0;
    for (int k = 0; k < o->workers; k++) {
        int64_t batches =
            (shard_size(train_count, o->workers, k) + o->batch_size - 1) / o->batch_size;
        if (o->mode != MODE_SYNC)
            n += batches;
        else if (batches > n)
            n = batches;
    }
    return n;
}

double cons_lr_now(const server_t *s)
{
    return cons_lr(s->o, s->version, s->o->workers, cons_updates_per_epoch(s->o, s->train_count));
}

static void s_count_update(server_t *s, uint64_t computed_on)
{
    int64_t stale = (int64_t)(s->version - computed_on);
    s->stale_sum += (double)stale;
    if (stale > s->stale_max)
        s->stale_max = stale;
    s->updates++;
    s->version++;
}

/* One SGD step with gradient g, forwarded to the standby (replica.h).
 * 0, or -1 when this server is fenced: then nobody may be answered. */
static int s_apply(server_t *s, const float *g, uint64_t computed_on)
{
    double t0 = clock_now();
    float lr = (float)cons_lr_now(s);
    model_sgd_step(s->w, s->v, g, s->n, lr, (float)s->o->momentum);
    s->apply_seconds += clock_now() - t0;
    s_count_update(s, computed_on);
    return replica_forward(s, g, lr);
}

/* sync: one SGD step with the average of the k held gradients, in blocks
 * small enough for L1, in one pass over w and v (no accumulator to clear);
 * with a standby, the average is kept (s->rep_g) to forward it. -1 when
 * the average would not be finite (nothing applied). */
__attribute__((noinline)) /* the fuzzer's coverage leaves it out: see tests/fuzz/ */
static int
s_apply_average(server_t *s, const float *const *g, int k)
{
    enum { BLOCK = 2048 };
    float avg[BLOCK];
    if (s->rep && !s->rep_g && !(s->rep_g = malloc(s->n * sizeof(float)))) {
        srv_log(s, "out of memory for the standby's copy of the round: going on without it");
        replica_close(s);
    }
    const float scale = 1.0f / (float)k, lr = (float)cons_lr_now(s), mom = (float)s->o->momentum;
    double t0 = clock_now();
    /* Pass 0 checks that the step keeps every value finite (each gradient
     * was checked alone, but a sum of large finite ones can overflow); pass
     * 1 applies it. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t lo = 0; lo < s->n; lo += BLOCK) {
            size_t n = s->n - lo < BLOCK ? s->n - lo : BLOCK;
            memcpy(avg, g[0] + lo, n * sizeof(float));
            for (int j = 1; j < k; j++)
                for (size_t i = 0; i < n; i++)
                    avg[i] += g[j][lo + i];
            for (size_t i = 0; i < n; i++)
                avg[i] *= scale;
            if (pass == 1) {
                model_sgd_step(s->w + lo, s->v + lo, avg, n, lr, mom);
                if (s->rep)
                    memcpy(s->rep_g + lo, avg, n * sizeof(float));
            } else if (!model_sgd_step_finite(s->w + lo, s->v + lo, avg, n, lr, mom))
                return -1;
        }
    /* Every gradient of a round was computed on the current version. */
    s->apply_seconds += clock_now() - t0;
    s_count_update(s, s->version);
    return 0;
}

/* Holds the reply to the request being handled (a barrier). */
static void s_hold(server_t *s, slot_t *sl)
{
    sl->pending = 1;
    sl->held_since = clock_now();
    sl->held_request = s->request;
}

/* Ends a hold; `reply`: send the weights to the held request. */
static void s_release(server_t *s, slot_t *sl, double now, snapshot_t *snap, int reply)
{
    sl->pending = 0;
    sl->last_seen = now; /* it was silent because we held it */
    if (reply)
        srv_reply_weights(s, sl, sl->held_request, now - sl->held_since, snap);
}

/* sync: when every active worker has a gradient in the round, apply their
 * average once and release them all with the new weights. */
static void s_sync_check_round(server_t *s)
{
    if (s->round_arrived == 0)
        return;
    for (int i = 0; i < s->o->workers; i++)
        if (s->slots[i].active && !s->slots[i].pending)
            return;
    const float *g[s->o->workers];
    int k = 0;
    for (int i = 0; i < s->o->workers; i++)
        if (s->slots[i].round_g)
            g[k++] = s->slots[i].round_g;
    float lr = (float)cons_lr_now(s);
    int applied = s_apply_average(s, g, k) == 0;
    if (!applied) {
        srv_log(s,
                "round of %d gradients not applied: their average would make the weights "
                "overflow",
                k);
        srv_db(s, metrics_event(s->db, s->run, srv_elapsed(s), -1, "round_refused",
                                "average not finite"));
    }
    s->round_arrived = 0;
    for (int i = 0; i < s->o->workers; i++)
        s->slots[i].round_g = NULL;
    if (applied && replica_forward(s, s->rep_g, lr) != 0)
        return; /* fenced: the round is answered by the new primary */
    double now = clock_now();
    snapshot_t snap = SNAPSHOT_INIT;
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->pending)
            s_release(s, sl, now, &snap, sl->active);
    }
    snapshot_close(&snap);
    ckpt_maybe(s);
}

static void s_sync_push(server_t *s, slot_t *sl, const float *g, uint64_t computed_on)
{
    (void)computed_on; /* a round's gradients are all computed on the current version */
    sl->round_g = g;
    s->round_arrived++;
    s_hold(s, sl);
    s_sync_check_round(s);
}

static void s_sync_rejoin(server_t *s, slot_t *sl)
{
    if (sl->pending && sl->round_g) {
        sl->round_g = NULL;
        s->round_arrived--;
        sl->steps--;
    }
    sl->pending = 0;
}

static void s_async_push(server_t *s, slot_t *sl, const float *g, uint64_t computed_on)
{
    if (s_apply(s, g, computed_on) != 0)
        return;
    srv_reply_weights_now(s, sl);
    ckpt_maybe(s);
}

/* async holds nothing. */
static void s_no_barrier(server_t *s)
{
    (void)s;
}

/* async and ssp: a held reply (ssp) is forgotten; its step was applied,
 * and the rejoined worker resumes after it (Welcome's start_step). */
static void s_forget_hold(server_t *s, slot_t *sl)
{
    (void)s;
    sl->pending = 0;
}

/* ssp: release each held worker whose clock is within `staleness` steps of
 * the slowest active worker's. */
static void s_ssp_release(server_t *s)
{
    uint64_t min = UINT64_MAX;
    for (int i = 0; i < s->o->workers; i++)
        if (s->slots[i].active && s->slots[i].steps < min)
            min = s->slots[i].steps;
    double now = clock_now();
    snapshot_t snap = SNAPSHOT_INIT;
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->pending && (min == UINT64_MAX || sl->steps <= min + (uint64_t)s->o->staleness))
            s_release(s, sl, now, &snap, 1);
    }
    snapshot_close(&snap);
}

static void s_ssp_push(server_t *s, slot_t *sl, const float *g, uint64_t computed_on)
{
    if (s_apply(s, g, computed_on) != 0)
        return;
    s_hold(s, sl);
    s_ssp_release(s);
    ckpt_maybe(s);
}

void cons_independent_path(const server_t *s, int id, char *path, size_t n)
{
    snprintf(path, n, "%s/model_independent_w%d.safetensors", s->o->out_dir, id);
}

/* independent: the push is the worker's trained model (server.c checked
 * that it is its one push, final_model set); it is saved as it came. */
static void s_independent_push(server_t *s, slot_t *sl, const float *g, uint64_t computed_on)
{
    (void)computed_on;
    int id = (int)(sl - s->slots);
    char path[4200], err[512], id_s[16];
    cons_independent_path(s, id, path, sizeof path);
    snprintf(id_s, sizeof id_s, "%d", id);
    const char *meta[] = {"format", "pt", "mode", "independent", "worker", id_s, NULL};
    if (modelfile_save(path, s->model, g, meta, err, sizeof err) != 0) {
        srv_log(s, "worker %d's model not saved: %s", id, err);
        srv_error(s, &sl->peer, PS__ERROR_CODE__ERROR_STATE, "the server cannot save the model");
        return;
    }
    srv_log(s, "worker %d's model saved: %s", id, path);
    srv_reply_weights_now(s, sl); /* as to any push (a resent one gets the same) */
}

static const cons_policy_t s_policies[] = {
    [MODE_SYNC] = {MODE_SYNC, s_sync_push, s_sync_check_round, s_sync_rejoin},
    [MODE_ASYNC] = {MODE_ASYNC, s_async_push, s_no_barrier, s_forget_hold},
    [MODE_SSP] = {MODE_SSP, s_ssp_push, s_ssp_release, s_forget_hold},
    [MODE_INDEPENDENT] = {MODE_INDEPENDENT, s_independent_push, s_no_barrier, s_forget_hold},
};

const cons_policy_t *cons_policy(server_mode_t mode)
{
    assert(mode >= 0 && mode < (int)(sizeof s_policies / sizeof s_policies[0]));
    return &s_policies[mode];
}

void cons_forget(server_t *s)
{
    s->round_arrived = 0;
    for (int i = 0; i < s->o->workers; i++) {
        s->slots[i].pending = 0;
        s->slots[i].round_g = NULL;
        s->slots[i].parts_got = 0;
    }
}

uint64_t cons_applied_steps(const slot_t *sl)
{
    return sl->steps - (sl->round_g != NULL);
}

const char *cons_invariant_problem(const server_t *s)
{
    int held = 0;
    for (int i = 0; i < s->o->workers; i++)
        held += s->slots[i].round_g != NULL;
    if (held != s->round_arrived)
        return "the sync round's count disagrees with the held gradients";
    return NULL;
}
