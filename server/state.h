/* state: the server's state, shared by the units of server/ and by nothing
 * outside it (programs and tests use server.h).
 *
 * The units, and what each owns (writes); any unit may read any field:
 *   server.c       lifecycle (new, run, finish, reset, destroy) and message
 *                  dispatch: the run, its clock, the data, the traffic counters
 *   log.c          log lines, rate-limited refusals, checked metrics writes
 *   reply.c        replies to workers (weights snapshots, acks, errors)
 *   transport.c    sockets, the gate, CurveZMQ and its ZAP handler
 *   membership.c   the worker slots: registration, names, claims, rejoin,
 *                  leave, eviction, done
 *   consistency.c  the weights, momentum and version, and the sync / async /
 *                  ssp rules that decide when a gradient is applied and when
 *                  a worker gets its reply (slot fields marked "cons")
 *   checkpoint.c   writing and reading the checkpoint
 *   group.c        the server group: shards joining the head, the
 *                  membership the head sends them, their final weights;
 *                  and a shard's own life (server_run_shard); the head's
 *                  side of standbys (who serves a range, in which term)
 *   replica.c      a shard's hot standby: the primary forwarding its state
 *                  and updates, the standby applying them
 * One thread owns the whole state (server.h). */
#ifndef SERVER_STATE_H
#define SERVER_STATE_H

#include <stdint.h>

#include <czmq.h>

#include "gate.h"
#include "idx.h"
#include "metrics.h"
#include "models.h"
#include "server.h"
#include "wire.h"

/* One worker slot. A slot is taken at registration and keeps its id.
 * Owned by membership.c except the fields marked cons (consistency.c). */
typedef struct {
    char name[128], host[128];
    wire_peer_t peer; /* where replies go */
    int threads;
    int incarnation; /* 0, then +1 at every rejoin */
    int active;      /* registered and neither done nor evicted */
    int done, evicted;
    uint64_t steps;           /* gradients accepted from this worker (its clock) */
    double last_seen;         /* clock_now() of its last progress: registration, a new step
                               * accepted, or release from a barrier (pulls do not count) */
    char key[48];             /* CurveZMQ: the public key that registered the name ("" without) */
    int64_t shard;            /* images it owns */
    Ps__Compression compress; /* how its tensors travel */
    float *gbuf;              /* its step's gradient of this server's range, as its
                               * parts arrive (server.c); the policy reads it */
    uint64_t token;           /* this incarnation's secret (Welcome; a shard checks it) */
    uint64_t start_step;      /* steps applied before this incarnation (its Welcome's) */
    /* server.c: the parts of the step being received (Push.part) */
    uint64_t part_step;
    uint32_t parts, parts_got;
    size_t part_lo; /* the next part must end here */
    /* A registration under this name from another connection while this
     * one still looked alive, waiting up to MEMBER_CLAIM_GRACE s for it to
     * go (a restarted worker can be quicker than the old connection's close). */
    int claim;
    wire_peer_t claim_peer;
    uint64_t claim_request;
    double claim_since;
    int claim_threads;
    Ps__Compression claim_compress;
    char claim_host[128];
    /* cons: a reply held back (a barrier), and sync's open round. */
    int pending;           /* a Push reply is being held */
    double held_since;     /* when the held request arrived */
    uint64_t held_request; /* its request id, echoed in the reply (also the
                            * Register a Welcome answers) */
    const float *round_g;  /* sync: its gradient in the open round (gbuf), or NULL */
    /* replica.c: the head's standby took over; the worker's next request,
     * from a new connection, is taken by its id and token */
    int moved;
    uint32_t epochs_reported; /* epoch rows recorded (a resent report is acked, not recorded) */
    uint64_t step_rowed;      /* the last step whose row was recorded (the head) */
} slot_t;

typedef struct cons_policy cons_policy_t;
typedef struct srv_group group_t;

struct server {
    const server_opts_t *o;
    const model_def_t *model; /* o->model's (server_new): its nparams is the vector's length */

    /* transport.c */
    void *ctx, *sock;
    gate_t *gate;          /* plain TCP: the public endpoint (sock is then its inner pair) */
    void *zap;             /* CurveZMQ: the ZAP handler's socket */
    zcertstore_t *allowed; /* CurveZMQ: the public certificates in --allowed-keys */
    void *link;            /* a shard: its socket to the head (group.c), polled too */
    char endpoint[256];    /* the endpoint bound (the port chosen for tcp://...:*) */

    /* server.c: the run */
    metrics_t *db;
    int64_t run;       /* its id in the database; 0 when none is open */
    int started;       /* every worker registered: the run is on */
    int fatal;         /* the run cannot go on (its start could not be recorded) */
    double t0;         /* clock_now() when the run started (all registered) */
    double t_listen;   /* clock_now() when the socket was bound */
    double last_flush; /* clock_now() when step rows were last committed */
    int train_count;   /* images split among workers */

    /* server.c: idx_fingerprint of those images (0 without data), for the Welcome */
    uint32_t data_fingerprint;

    idx_dataset_t test;
    uint64_t request; /* request id of the message being handled */
    int64_t bytes_in, bytes_out;
    int64_t duplicates;      /* pushes received again and not applied */
    double worker_train_max; /* the longest training time a worker reported */
    long resets;             /* server_reset calls */

    /* membership.c */
    slot_t *slots; /* o->workers of them */
    int registered, active;

    /* group.c: this server's place in the group. It owns the values
     * [lo, lo + n) of the flat parameter vector: w, v and every slot's gbuf
     * hold those n values. One server alone: lo = 0, n = model->nparams. */
    int shard; /* 0: the head */
    size_t lo, n;
    group_t *group; /* the head's table of shards, or a shard's link to its head */

    /* consistency.c: the model and the mode's rules */
    const cons_policy_t *policy;
    float *w, *v;         /* master weights and momentum (n values) */
    double apply_seconds; /* time spent applying updates */
    float *w0;            /* server_reset: the initial weights, or NULL (server.c) */
    uint64_t version;     /* number of updates applied to w */
    int64_t updates;
    double stale_sum;
    int64_t stale_max;
    int round_arrived; /* sync: gradients held for the open round */

    /* checkpoint.c */
    uint64_t ckpt_version; /* version of the last checkpoint */
    double ckpt_time;      /* clock_now() of the last checkpoint */

    /* replica.c: the hot standby (issue 12; see replica.h) */
    uint64_t term;          /* the term this server serves in (a standby: the one it copies) */
    int standby;            /* a standby: serves no worker until the head promotes it */
    int synced;             /* a standby holding its primary's state */
    uint32_t rep_rollbacks; /* a standby: the group's returns its state has seen */
    int fenced;             /* its term is over (its standby took over): it must stop */
    int ended;              /* the head's standby: the head ended the run (REPLICA_END) */
    double primary_heard;   /* a standby: clock_now() of its primary's last message */
    double promote_asked;   /* a standby: when it last asked the head to promote it */
    void *rep;              /* a primary: DEALER to its standby, or NULL */
    char rep_endpoint[300]; /* ...which is there */
    char rep_pending[300];  /* the head: its standby, ready, to be sent the state */
    double rep_sent;        /* clock_now() of the last message to it */
    uint64_t rep_request;
    float *rep_g;    /* sync: the average a round applied (n values), to forward */
    double failover; /* seconds of silence before a standby takes over */

    /* log.c */
    double refusal_window; /* clock_now() when the current window of refusal lines began */
    long refusals_logged, refusals_hidden; /* in that window */
    long db_failures;                      /* metrics writes that failed */
};

/* log.c: a line on stdout, stamped with the run's time. */
void srv_log(const server_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* log.c: a line about a refused message; at most SRV_REFUSALS_PER_WINDOW of
 * them per SRV_REFUSAL_WINDOW seconds (a flood of bad messages must not fill
 * the log), then a count of those left out. */
#define SRV_REFUSALS_PER_WINDOW 20
#define SRV_REFUSAL_WINDOW 10.0
void srv_log_refused(server_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* log.c: checks a metrics write's result rc: a failure is counted and
 * reported (the first few, then every 500th, so that a full disk does not
 * also fill the log). Returns rc. */
int srv_db(server_t *s, int rc);

/* log.c: seconds since the run started (0 before). */
double srv_elapsed(const server_t *s);

/* log.c: writes the server_stats row (updates, version, staleness). */
void srv_write_stats(server_t *s);

/* reply.c: the current weights as one tensor frame per encoding, built on
 * first use and shared by every reply of one release (ZeroMQ counts the
 * references). Start with SNAPSHOT_INIT, end with snapshot_close. */
#define SNAPSHOT_ENCODINGS (PS__ENCODING__ENCODING_I8 + 1)
typedef struct {
    zmq_msg_t msg[SNAPSHOT_ENCODINGS]; /* indexed by Ps__Encoding */
    int ready[SNAPSHOT_ENCODINGS];
} snapshot_t;
#define SNAPSHOT_INIT                                                                              \
    {                                                                                              \
        .ready = { 0 }                                                                             \
    }
void snapshot_close(snapshot_t *snap);

/* reply.c: replies with the weights to request `request` of this slot's
 * worker; `held` is how long the server held it (a barrier). */
void srv_reply_weights(server_t *s, slot_t *sl, uint64_t request, double held, snapshot_t *snap);

/* reply.c: the weights to the request being handled, now. */
void srv_reply_weights_now(server_t *s, slot_t *sl);

/* reply.c: sends env to the slot's worker; it answers the request being
 * handled unless env already names another. */
void srv_send(server_t *s, slot_t *sl, Ps__Envelope *env);

/* reply.c: env to any peer (a shard, a standby), answering the request
 * being handled. */
void srv_answer(server_t *s, const wire_peer_t *peer, Ps__Envelope *env);

/* reply.c: an Ack with the current version. */
void srv_reply_ack(server_t *s, slot_t *sl);

/* reply.c: an Error reply to the request being handled, or to `request`. */
void srv_error(server_t *s, const wire_peer_t *peer, Ps__ErrorCode code, const char *message);
void srv_error_to(server_t *s, const wire_peer_t *peer, uint64_t request, Ps__ErrorCode code,
                  const char *message);

#endif
