/* replica: a hot standby for a shard of the server group (issue 12).
 *
 * A standby (paramserver --replica-of SHARD_EP, or a shard process started
 * for a shard whose primary is alive) joins the head as the standby of that
 * shard; the head names it in its membership table; the primary then
 * connects to it and sends its whole state (weights, momentum, version, each
 * worker's applied steps), and from then on every update it applies (the
 * step's gradient, the lr it used, the resulting version and exactly-once
 * table) BEFORE it answers the workers the update concerns; the standby
 * applies the same SGD step to the same values, so its weights and momentum
 * are the primary's bit for bit. An idle primary sends a heartbeat every
 * REPLICA_BEAT_SECONDS.
 *
 * Who may serve a range is the head's decision, one term at a time:
 *  - a standby whose primary has been silent for --failover-timeout asks
 *    the head to promote it; the head grants it only when it has not heard
 *    from the primary for that long either;
 *  - a primary whose standby does not acknowledge an update within
 *    --failover-timeout asks the head to let it go on alone;
 * each grant raises the shard's term, and a request is granted only at the
 * current term, so at most one of the two is granted. A server answers no
 * worker about an update unless its standby acknowledged it in its term or
 * the head let it go on alone: two servers can never both acknowledge
 * updates of one range. A server that learns its term is over (fenced: the
 * head or its former standby says so) stops at once, exit status 3;
 * started again with the same command it becomes the standby of the new
 * primary. The head itself has no standby yet.
 *
 * The primary's side runs inside the update path (consistency.c calls
 * replica_forward); the standby's inside the shard loop (group.c). */
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
