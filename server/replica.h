/* replica: a hot standby for any server of the group (issue 12): a shard's
 * or the head's.
 *
 * A standby (paramserver --replica-of EP, or a shard process started for a
 * shard whose primary is alive) joins the head as the standby of that
 * server; the primary then connects to it and sends its whole state
 * (weights, momentum, version, each worker's applied steps; the head also
 * its worker table, the group's table and the run), and from then on every
 * update it applies (the step's gradient, the lr it used, the resulting
 * version and exactly-once table) BEFORE it answers the workers the update
 * concerns; the standby applies the same SGD step to the same values, so
 * its weights and momentum are the primary's bit for bit. The head also
 * forwards its tables before it answers a registration, a Done or an epoch
 * report, and its metrics rows as it writes them (metrics_set_journal); its
 * standby writes them into its own database. An idle primary sends a
 * heartbeat every REPLICA_BEAT_SECONDS.
 *
 * Who may serve, one term at a time, is decided by the head for a shard
 * and by shard 1 (the witness, group_witness) for the head:
 *  - a standby whose primary has been silent for --failover-timeout asks to
 *    be promoted; it is granted only when the decider has not heard from
 *    the primary for that long either;
 *  - a primary whose standby does not acknowledge within --failover-timeout
 *    asks to go on alone;
 * each grant raises the term, and a request is granted only at the current
 * term, so at most one of the two is granted. A server answers no worker
 * about an update unless its standby acknowledged it in its term or it was
 * let go on alone: two servers can never both acknowledge updates of one
 * range. A server that learns its term is over (fenced: the decider or its
 * former standby says so) stops at once, exit status 3; a shard started
 * again with the same command becomes the standby of the new primary.
 *
 * The primary's side runs inside the update path (consistency.c calls
 * replica_forward) and the head's loop; the standby's inside the shard loop
 * (group.c) or, for the head's, server_run_head_standby (server.c). */
#ifndef SERVER_REPLICA_H
#define SERVER_REPLICA_H

#include "state.h"

#define REPLICA_BEAT_SECONDS 0.2

/* The primary, after applying an update (g: the step's gradient of its
 * range; lr: the learning rate used), before any reply about it: forwards
 * it and waits for the standby's ack. 0: the replies may go (the standby
 * has it, or there is none, or the head let this server go on alone); -1:
 * this server is fenced (s->fenced) and must answer nothing. */
int replica_forward(server_t *s, const float *g, float lr);

/* The primary: the membership names `endpoint` ("" for none) as this
 * shard's standby: connect to it and send it the state. */
void replica_standby_is(server_t *s, const char *endpoint);

/* The primary: its state changed outside an update (the group returned to
 * a checkpoint): sends the whole state to its standby again. */
void replica_resync(server_t *s);

/* Both, every loop turn: the primary's heartbeat; a standby asks for
 * promotion once its primary has been silent too long. */
void replica_tick(server_t *s);

/* A standby: a ReplicaUpdate from its primary (server.c routes it here);
 * a primary or a promoted standby refuses it (Error FENCED to an older
 * term). */
void replica_on_update(server_t *s, const wire_peer_t *peer, wire_msg_t *m);

/* The head, before it answers a registration, a Done or an epoch report:
 * its tables (replica_head_changed) or what it wrote before (replica_sync_point)
 * have reached its standby, which acknowledged. 0, or -1 when fenced. */
int replica_head_changed(server_t *s);
int replica_sync_point(server_t *s);

/* The head, after the run ended (its last rows written): its standby
 * acknowledges and exits. */
void replica_end(server_t *s);

/* The head's standby: the head's tables (ReplicaHead) and a metrics row
 * (MetricRow, written into its own database). */
void replica_on_head(server_t *s, const wire_peer_t *peer, wire_msg_t *m);
void replica_on_metric(server_t *s, const wire_peer_t *peer, wire_msg_t *m);

void replica_close(server_t *s);

#endif
