/* consistency: the rules of the three consistency modes, in one place.
 *
 *   sync   BSP: every round takes one gradient from each active worker,
 *          averages them, applies the average once; replies wait for the round.
 *   async  ASP: each gradient is applied when it arrives; the reply carries
 *          the latest weights at once.
 *   ssp    bounded staleness S: gradients are applied as in async, but a
 *          worker that has finished c steps gets its reply only when the
 *          slowest active worker has finished at least c - S.
 *   independent  nothing is applied: each worker trains its own model and
 *          pushes it once at the end (Push.final_model), saved as it is.
 *
 * A mode is a policy: what happens when a new gradient arrives (apply now,
 * wait for the round, hold the reply), when the set of active workers shrinks
 * (release the barrier it held up) and when a worker rejoins (undo its half
 * of an open round). Deadlines need no rule per mode: a worker whose reply is
 * held (slot_t.pending) is silent because of us, so membership.c never
 * evicts it, in every mode.
 *
 * The state a policy works on is the model (weights, momentum, version,
 * staleness figures), the open round (round_arrived) and the slots' "cons"
 * fields (state.h): one set per server, which is what a shard of the
 * parameters would carry for itself. */
#ifndef SERVER_CONSISTENCY_H
#define SERVER_CONSISTENCY_H

#include <stddef.h>
#include <stdint.h>

#include "state.h"

struct cons_policy {
    server_mode_t mode;
    /* A new step's gradient g from sl (validated, and checked to keep the
     * model finite on its own), computed on version `computed_on`, in the
     * request being handled. g is sl->gbuf (this server's n values): it
     * stays as it is until the worker's reply is sent, so sync keeps it for
     * the open round. */
    void (*on_push)(server_t *s, slot_t *sl, const float *g, uint64_t computed_on);
    /* A worker left the active set (done, left or evicted): release what
     * was waiting for it. */
    void (*on_leave)(server_t *s);
    /* sl registers again during the run: forget its held reply, and in sync
     * drop its gradient from the open round (it computes that step again). */
    void (*on_rejoin)(server_t *s, slot_t *sl);
};

/* The learning rate of the update that makes version `version` + 1, from
 * the recipe alone (so every process that applies SGD to a range of the
 * parameters, and a resumed server, gets the same value at the same update):
 * --lr, or with --lr-scaling linear in sync mode, --lr x workers reached by a
 * linear ramp from --lr over the first --warmup-epochs x updates_per_epoch
 * updates (Goyal et al. 2017, "Accurate, Large Minibatch SGD"). Async, ssp
 * and independent apply one worker's gradient per update: nothing to scale. */
double cons_lr(const server_opts_t *o, uint64_t version, int workers, int64_t updates_per_epoch);

/* Updates one epoch takes: sync, one per round (the batches of the largest
 * shard); the other modes, one per batch of every shard. */
int64_t cons_updates_per_epoch(const server_opts_t *o, int train_count);

/* cons_lr for server s's next update. */
double cons_lr_now(const server_t *s);

/* independent: where worker id's final model is saved
 * (OUT/model_independent_wID.safetensors). */
void cons_independent_path(const server_t *s, int id, char *path, size_t n);

/* The policy of a mode; never NULL. */
const cons_policy_t *cons_policy(server_mode_t mode);

/* Forgets every held reply and the open round (a server group returning to
 * an older version: every worker starts its step again). */
void cons_forget(server_t *s);

/* Steps of sl whose gradients are applied to the weights (a gradient held
 * in an open sync round is not yet): what a checkpoint may count. */
uint64_t cons_applied_steps(const slot_t *sl);

/* NULL when the open round agrees with the held gradients, else what is
 * wrong (for server_invariant_problem). */
const char *cons_invariant_problem(const server_t *s);

#endif
