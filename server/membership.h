/* membership: the worker slots and who holds them.
 *
 * A worker registers under a name (printable UTF-8, at most 127 bytes) and
 * gets a slot, its shard of the training images and, once every slot is
 * taken, the Welcome that starts the run. A name belongs to the CurveZMQ
 * key that first registered it, and while its connection is alive to no one
 * else: a registration under a live worker's name waits up to
 * MEMBER_CLAIM_GRACE seconds (a claim) for the old connection to close.
 * After the start, a registration under a known name is a rejoin (new
 * incarnation, resume after the applied steps). A worker leaves the active
 * set when it is done, says it leaves, or is evicted after --worker-timeout
 * seconds without progress; the consistency policy then releases the
 * barriers it held up. */
#ifndef SERVER_MEMBERSHIP_H
#define SERVER_MEMBERSHIP_H

#include <stddef.h>

#include "state.h"

/* Seconds a registration under a live worker's name waits for that
 * worker's old connection to close before it is refused. */
#define MEMBER_CLAIM_GRACE 2.0

/* A name or host a peer sent: at most max bytes of valid UTF-8 (no overlong
 * forms, surrogates or code points past U+10FFFF) without control
 * characters, so that it can go into the log, the database and the
 * checkpoint's JSON. NULL when it is fine, else what is wrong. */
const char *member_name_problem(const char *t, size_t max);

/* A Register from peer, in the request being handled: a new slot, a
 * rejoin, a claim, or an Error reply saying why not. */
void member_register(server_t *s, const wire_peer_t *peer, const Ps__Register *r);

/* The slot a request (`what`, for messages) claims to come from, if the
 * claim holds: a known id, from the connection that registered it, still
 * active. Else NULL after an Error reply. */
slot_t *member_check(server_t *s, const wire_peer_t *peer, uint32_t id, const char *what);

/* Starts the run when every worker has registered and every shard of the
 * server group has joined. */
void member_maybe_start(server_t *s);

/* The worker finished its epochs (its figures are checked): recorded,
 * checkpointed before the Ack (a server that crashes after the Ack resumes
 * knowing it), acknowledged, out of the active set. */
void member_done(server_t *s, slot_t *sl, double train_seconds, double test_accuracy);

/* The worker stops before the end and says so (Done{leaving}): it leaves
 * every barrier at once instead of holding the others for
 * --worker-timeout, and may rejoin. */
void member_leaving(server_t *s, slot_t *sl);

/* Evicts active workers without progress for --worker-timeout seconds, and
 * settles claims whose old connection closed or whose grace ran out. Call
 * it regularly once the run started. */
void member_tick(server_t *s);

/* A slot read from a checkpoint (name, progress, done/evicted): no
 * connection yet; it counts as active unless done or evicted. */
void member_restored(server_t *s, slot_t *sl);

#endif
