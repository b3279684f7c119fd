/* link: a distributed worker's connections to the server group, and every
 * wait on them (each with a deadline).
 *
 * The head (--server) takes the worker's registration, figures and Done;
 * its Welcome lists the servers of the group and the range of the flat
 * parameter vector each owns (one server alone owns all of it). A step's
 * gradient goes to every server as the parts of its range (Push.part, in
 * backward order: each range is cut where the model's layers meet, so that
 * a part can leave as soon as backward has finished its layers), and each
 * server answers with the weights of its range: link_step scatters and
 * gathers, resending what gets no answer. */
#ifndef WORKER_LINK_H
#define WORKER_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "models.h"
#include "wire.h"
#include "worker.h"

#define LINK_MAX_SERVERS 64
#define LINK_MAX_PARTS MODELS_MAX_EDGES /* per server: its range cut at the layers' edges */

/* What link_request can end with besides a good reply. */
enum {
    REQ_OK = 0,
    REQ_FAIL = -1,
    REQ_REJOIN = -2,
    REQ_LATE = -3,
    REQ_RETRY = -4,
    REQ_MOVED = -5 /* a server whose term is over: ask the head where its range is now */
};

typedef struct {
    void *sock;                                              /* [0]: the head's */
    char endpoint[256], name[300];                           /* name: for messages */
    size_t lo, hi;                                           /* its range */
    uint64_t version;                                        /* of the weights it last sent */
    size_t part_lo[LINK_MAX_PARTS], part_hi[LINK_MAX_PARTS]; /* backward order */
    int parts;
    /* this step's exchange */
    zmq_msg_t part_msg[LINK_MAX_PARTS]; /* encoded parts, kept for resending */
    int parts_sent, answered;
    uint64_t request;
    double held;
} link_server_t;

typedef struct {
    const worker_opts_t *o;
    void *ctx;
    link_server_t srv[LINK_MAX_SERVERS];
    int servers;
    uint64_t token, request;
    int64_t bytes_sent, bytes_received;
    int64_t bytes_pushed, bytes_early; /* pushes' first sends; of them, before backward ended */
    double send_seconds; /* how long the last step's sends took (encoding, queueing) */
    /* the push being sent (link_push_begin), or none (a pull) */
    int pushing, encoding;
    Ps__Push push;
    const float *grad;
    float *residual;
    /* hot standby (issue 12): after `failover` s without an answer from a
     * shard, ask the head where its range lives now (Locate) */
    double failover, located_at;
    uint64_t locate_request;
    int64_t failovers;        /* servers that moved to their standby */
    char head_standby[256];   /* the head's standby, from the Welcome ("" for none) */
    int head_moved;           /* requests to the head go to its standby now */
    const model_def_t *model; /* the server's model, from the Welcome (NULL before) */
    char mode[16];            /* the server's consistency mode, from the Welcome */
    char dataset[32];         /* the server's data set, from the Welcome */
} link_t;

/* The socket to the head, connected (nothing is sent yet). 0, or -1 after
 * printing why. */
int link_open(link_t *l, const worker_opts_t *o);
void link_close(link_t *l);

/* Sends a request to the head (with the tensor frame, whose ownership
 * passes here, or NULL) and waits for its reply, which must be of kind
 * `want`; resent after 2, 4, 8... seconds without one, until `timeout`
 * seconds have passed. REQ_OK with *reply filled (the caller closes it);
 * REQ_REJOIN when the head does not know this worker's connection (it
 * restarted, or evicted this worker): register again; REQ_FAIL after
 * printing why. */
int link_request(link_t *l, Ps__Envelope *req, zmq_msg_t *tensor, Ps__Envelope__BodyCase want,
                 double timeout, wire_msg_t *reply);

/* Takes the group from a Welcome: checks its model (this worker must have
 * it, and it must be o->model when that is set, and the same on a rejoin)
 * and the ranges, connects to every server but the head (again after a
 * rejoin). 0, or -1 after printing why. */
int link_set_servers(link_t *l, const Ps__Welcome *w);

/* The length of the model's parameter vector (0 before the Welcome). */
size_t link_nparams(const link_t *l);

/* A step's push to every server, in three calls (so that parts can leave
 * during backward): link_push_begin takes the step (`push`: its step,
 * epoch, loss...), the whole gradient's buffer (filled by then or later,
 * range by range) and the encoding (int8: with the residual's error
 * feedback); link_push_ready sends every part that lies within [lo, hi),
 * whose gradient is final (`early`: before backward ended, counted in
 * bytes_early); link_gather sends what is left and gathers each
 * server's weights into weights (the whole vector), resending to a server
 * that does not answer; *held is the longest time a server held the
 * request (a barrier). In sync mode every server must answer with the same
 * version. REQ_OK, REQ_REJOIN or REQ_FAIL (after printing which server and
 * why). Without link_push_begin, link_gather pulls. */
void link_push_begin(link_t *l, const Ps__Push *push, const float *grad, int encoding,
                     float *residual);
int link_push_ready(link_t *l, size_t lo, size_t hi, int early);
int link_gather(link_t *l, float *weights, double *held);

#endif
