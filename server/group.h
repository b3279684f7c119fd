/* group: the server group. With --shards S the flat parameter vector is
 * split into S contiguous ranges, balanced by size (a range may cut a
 * tensor): the head (shard 0, the paramserver the workers register with)
 * owns the first; shards 1..S-1 are paramserver processes started with
 * --shard I --head EP. Each server holds the weights and momentum of its
 * range and applies SGD to it under the mode's rules (consistency.h); SGD
 * is elementwise, so the split changes no result.
 *
 * The head alone decides membership (registration, rejoin, eviction, done)
 * and keeps the run, the metrics and the final model. It waits for every
 * shard to join before it welcomes a worker, tells the workers where each
 * range lives (Welcome.shards) and a secret token per incarnation, and sends
 * every shard the membership table whenever it changes, so that no shard
 * waits for a worker the head evicted. A shard serves pushes and pulls from
 * workers whose token the head told it; a worker it does not know yet is
 * told to retry (ERROR_RETRY). When the run is over the shards send their
 * final weights to the head, which evaluates and saves the whole model.
 *
 * Messages between head and shards: ps.proto (ShardJoin ... ShardFinal). */
#ifndef SERVER_GROUP_H
#define SERVER_GROUP_H

#include <stddef.h>

#include "state.h"

/* The range [lo, lo + n) of shard `shard` of `shards` (1 or less: all) of a
 * vector of nparams values (the model's). */
void group_range(int shards, int shard, size_t nparams, size_t *lo, size_t *n);

/* The head: its table of shards (o->shards entries). 0, or -1 after printing. */
int group_head_new(server_t *s);
void group_destroy(server_t *s);

/* The head: have all shards joined? (Always, alone.) When not, the
 * missing shards are described in buf ("shard 2, shard 3"). */
int group_ready(const server_t *s, char *buf, size_t n);

/* The head: fills the Welcome's list of shards; `ranges` has room for
 * o->shards entries and `ptrs` for as many pointers; both must live until
 * the Welcome is sent. */
void group_welcome(const server_t *s, Ps__Welcome *wm, Ps__ShardRange *ranges,
                   Ps__ShardRange **ptrs);

/* The head: the membership changed (a Welcome, a worker left): every
 * joined shard gets the new table. */
void group_membership_changed(server_t *s);

/* The head: a message from a shard (ShardJoin, ShardPing, ShardFinal). */
void group_handle(server_t *s, const wire_peer_t *peer, wire_msg_t *m);

/* The slot a worker's push or pull comes from, if its claim holds: on the
 * head membership.c decides (member_check); on a shard the id must be known
 * from the head's table, with the token of its current incarnation, and
 * active. Else NULL after an Error reply. */
slot_t *group_check(server_t *s, const wire_peer_t *peer, uint32_t id, uint64_t token,
                    const char *what);

/* The head, after the run: the whole model (alone: s->w; with shards:
 * each shard's final weights next to the head's, waited for with a
 * deadline). NULL after printing which shard did not send its own. */
const float *group_final_weights(server_t *s);

/* A Locate: on the head, from a worker (every range, who serves it, its
 * standby, its term); on a shard, from a standby to be (--replica-of):
 * its shard number and its head. */
void group_on_locate(server_t *s, const wire_peer_t *peer, const Ps__Locate *l);

/* A shard or its standby asks the head for the shard's next term
 * (ShardTerm, replica.h): promote (a standby whose primary is silent) or go
 * on alone (a primary whose standby is silent). wait > 0: blocks up to
 * `wait` seconds, handling what the head sends, and returns 0 once granted
 * (s->term is the new term), -1 when refused or fenced or without an
 * answer; wait == 0: returns after sending (the answer comes to the loop). */
int group_ask_term(server_t *s, int promote, double wait);

/* The head: its table of ranges (who serves each, its standby, its term);
 * ranges and ptrs have room for o->shards entries. */
void group_ranges(const server_t *s, Ps__ShardRange *ranges, Ps__ShardRange **ptrs);

/* The head and its standby (replica.h): the group's counters into a
 * ReplicaHead, and a ReplicaHead's table and counters taken. */
void group_head_table(const server_t *s, Ps__ReplicaHead *h);
void group_take_head_table(server_t *s, const Ps__ReplicaHead *h);

/* The group's returns to an older version so far (as this server knows). */
uint32_t group_rollbacks(const server_t *s);

/* The head's standby took over: every shard joins it again from a new
 * connection, keeping its state (the shard knows it switched heads). */
void group_took_over(server_t *s);

/* Shard 1: a ShardTerm for the head's term (shard 0): as the head's
 * witness it promotes the head's standby when the head has been silent to
 * it for the failover timeout, or lets the head go on without its standby;
 * each grant raises the head's term, at most one per term. */
void group_witness(server_t *s, const wire_peer_t *peer, const Ps__ShardTerm *t);

/* The head: writes each shard's figures (shard_stats rows). */
void group_write_stats(server_t *s);

#endif
