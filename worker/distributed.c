/* distributed: a worker of a paramserver run. Registers, receives its worker
 * id, shard and recipe, then for each minibatch of its shard computes the
 * gradient on the weights it holds, pushes it and gets back the weights for
 * the next step; after each epoch it evaluates on the test set and reports
 * its figures, which the server writes into the metrics database. In mode
 * independent (the original train_distributed.py) it takes its own SGD steps
 * instead, pushes nothing per step, and pushes its trained model once at the
 * end.
 *
 * Time per step is split as: compute (forward + backward), push (encoding and
 * queueing the gradient), wait (how long the server held the request at a
 * barrier, as it reports) and pull (the rest of the round trip: transfer both
 * ways and the server's update). Every wait for the server has a deadline. */
#include <czmq.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "idx.h"
#include "model.h"
#include "progress.h"
#include "rng.h"
#include "shard.h"
#include "wire.h"
#include "worker.h"

typedef struct {
    const worker_opts_t *o;
    void *ctx, *sock;
    int64_t bytes_sent, bytes_received;
    double send_seconds; /* how long the last request took to encode and queue */
    uint64_t request;    /* id of the last request */
    char mode[16];       /* the server's consistency mode, from the Welcome */
    char dataset[32];    /* the server's data set, from the Welcome */
} conn_t;

/* Checks that a tcp:// endpoint's host resolves, for a clear message now
 * instead of ZeroMQ retrying an unresolvable name forever. */
static int s_check_endpoint(const char *ep)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return 0; /* ipc://, inproc:// ...: ZeroMQ checks them */
    const char *host = ep + 6, *colon = strrchr(host, ':');
    if (!colon || colon == host || !colon[1]) {
        fprintf(stderr, "error: --server '%s' is not tcp://HOST:PORT\n", ep);
        return -1;
    }
    char name[256];
    size_t len = (size_t)(colon - host);
    if (len >= sizeof name) {
        fprintf(stderr, "error: host name in --server '%s' is too long\n", ep);
        return -1;
    }
    memcpy(name, host, len);
    name[len] = '\0';
    if (name[0] == '[' && len > 2 && name[len - 1] == ']') { /* [IPv6] */
        memmove(name, name + 1, len - 2);
        name[len - 2] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(name, colon + 1, &hints, &res);
    if (rc != 0) {
        fprintf(stderr,
                "error: cannot resolve the server host '%s' in --server %s: %s\n"
                "(check the name, or give the server's IP address)\n",
                name, ep, gai_strerror(rc));
        return -1;
    }
    freeaddrinfo(res);
    return 0;
}

/* CurveZMQ on the worker's socket: its own certificate and the server's
 * public key. A server that does not list this worker's public key lets the
 * handshake fail: no reply ever comes, and the worker says so at its deadline. */
static int s_curve(void *sock, const worker_opts_t *o)
{
    zsys_handler_set(NULL);
    zcert_t *mine = zcert_load(o->curve_secret), *server = zcert_load(o->server_key);
    int rc = -1;
    if (!mine || !server)
        fprintf(stderr,
                "error: cannot read the certificate %s (paramserver --keygen PATH makes "
                "PATH and PATH_secret)\n",
                !mine ? o->curve_secret : o->server_key);
    else if (strcmp(zcert_secret_txt(mine), "0000000000000000000000000000000000000000") == 0)
        fprintf(stderr, "error: %s holds no secret key: give the _secret file\n", o->curve_secret);
    else {
        struct stat st;
        if (stat(o->curve_secret, &st) == 0 && (st.st_mode & 077))
            fprintf(stderr,
                    "warning: the secret key %s is readable by other users (mode %03o): "
                    "chmod 600 %s\n",
                    o->curve_secret, (unsigned)(st.st_mode & 0777), o->curve_secret);
        zcert_apply(mine, sock);
        if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, zcert_public_key(server), 32) != 0)
            fprintf(stderr,
                    "error: cannot set the server key of %s on the socket: %s (is "
                    "libzmq built with CURVE?)\n",
                    o->server_key, zmq_strerror(errno));
        else {
            printf("CurveZMQ on: this worker's key %s\n", zcert_public_txt(mine));
            rc = 0;
        }
    }
    zcert_destroy(&mine);
    zcert_destroy(&server);
    return rc;
}

/* What s_request can end with besides a good reply; REQ_LATE is
 * s_judge_reply's word for an answer to an earlier request. */
enum { REQ_OK = 0, REQ_FAIL = -1, REQ_REJOIN = -2, REQ_LATE = -3 };

/* Judges a reply received while waiting for request req: REQ_OK when it is
 * its answer, of kind `want` (the caller keeps it); otherwise it is closed
 * and the result is REQ_LATE (an answer to an earlier, resent request: wait
 * on), REQ_REJOIN (the server does not know this connection) or REQ_FAIL
 * (refused or unexpected, after printing why). */
static int s_judge_reply(conn_t *c, const Ps__Envelope *req, Ps__Envelope__BodyCase want,
                         wire_msg_t *reply)
{
    Ps__Envelope *env = reply->env;
    int is_error = env->body_case == PS__ENVELOPE__BODY_ERROR;
    if (env->request_id != req->request_id && !(is_error && env->request_id == 0)) {
        wire_msg_close(reply);
        return REQ_LATE;
    }
    if (is_error) {
        int rejoin = env->error->code == PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
        if (rejoin)
            fprintf(stderr,
                    "worker: the server does not know this connection (%s); "
                    "registering again\n",
                    env->error->message ? env->error->message : "");
        else
            fprintf(stderr, "error: the server at %s refused %s: %s\n", c->o->server,
                    wire_kind_name(req->body_case),
                    env->error->message ? env->error->message : "(no message)");
        wire_msg_close(reply);
        return rejoin ? REQ_REJOIN : REQ_FAIL;
    }
    if (env->body_case != want) {
        fprintf(stderr, "error: the server answered %s with %s; expected %s\n",
                wire_kind_name(req->body_case), wire_kind_name(env->body_case),
                wire_kind_name(want));
        wire_msg_close(reply);
        return REQ_FAIL;
    }
    return REQ_OK;
}

/* Sends a request (with the tensor frame, whose ownership passes here, or
 * NULL) and waits for its reply, which must be of kind `want`. When no reply
 * comes the request is sent again after 2, 4, 8... seconds (the server
 * applies a resent push once), until `timeout` seconds have passed in all.
 * Replies to earlier requests (answers to a resent one) are dropped by their
 * request id. Returns REQ_OK with *reply filled (caller closes it); REQ_REJOIN
 * when the server does not know this worker's connection (it restarted, or
 * evicted this worker): register again; REQ_FAIL after printing why. */
static int s_request(conn_t *c, Ps__Envelope *req, zmq_msg_t *tensor, Ps__Envelope__BodyCase want,
                     double timeout, wire_msg_t *reply)
{
    req->request_id = ++c->request;
    zmq_msg_t keep; /* a shared copy of the tensor frame, for resending */
    if (tensor) {
        zmq_msg_init(&keep);
        zmq_msg_copy(&keep, tensor);
    }
    int rc = REQ_FAIL;
    double start = clock_now(), deadline = start + timeout, wait = 2.0;
    double t0 = clock_now();
    long n = wire_send_msg(c->sock, NULL, req, tensor, 0);
    c->send_seconds = clock_now() - t0;
    if (n < 0) {
        fprintf(stderr, "error: cannot send to %s: %s\n", c->o->server, zmq_strerror(errno));
        goto out;
    }
    c->bytes_sent += n;
    double resend_at = clock_now() + wait;
    for (;;) {
        double now = clock_now();
        if (now >= deadline || worker_stop) {
            if (!worker_stop)
                fprintf(stderr,
                        "error: no reply to %s from the server at %s within %.0f s (%s), "
                        "though resent: is the paramserver running and reachable at that "
                        "address? (A server with CurveZMQ also stays silent to a worker it "
                        "does not admit: check --curve-secret, --server-key and the server's "
                        "--allowed-keys.)\n",
                        wire_kind_name(req->body_case), c->o->server, timeout,
                        req->body_case == PS__ENVELOPE__BODY_REGISTER ? "--connect-timeout"
                                                                      : "--timeout");
            goto out;
        }
        if (now >= resend_at) {
            zmq_msg_t again;
            if (tensor) {
                zmq_msg_init(&again);
                zmq_msg_copy(&again, &keep);
            }
            if (wire_send_msg(c->sock, NULL, req, tensor ? &again : NULL, ZMQ_DONTWAIT) >= 0)
                fprintf(stderr, "worker: no reply to %s after %.0f s; sent it again\n",
                        wire_kind_name(req->body_case), now - start);
            wait *= 2;
            resend_at = now + wait;
        }
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        double until = resend_at < deadline ? resend_at : deadline;
        long ms = (long)((until - now) * 1000) + 1;
        if (zmq_poll(&item, 1, ms > 1000 ? 1000 : ms) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "error: zmq_poll: %s\n", zmq_strerror(errno));
            goto out;
        }
        if (!(item.revents & ZMQ_POLLIN))
            continue;
        char err[256];
        int r = wire_recv(c->sock, NULL, reply, err, sizeof err);
        if (r < 0)
            continue;
        if (r > 0) {
            fprintf(stderr, "error: bad reply from the server at %s: %s\n", c->o->server, err);
            goto out;
        }
        c->bytes_received += (int64_t)reply->bytes;
        rc = s_judge_reply(c, req, want, reply);
        if (rc != REQ_LATE)
            goto out;
        rc = REQ_FAIL;
    }
out:
    if (tensor)
        zmq_msg_close(&keep);
    return rc;
}

/* Checks the recipe the server sent; prints what is wrong. */
static int s_check_welcome(const Ps__Welcome *w)
{
    const char *bad = NULL;
    if (w->params != MODEL_NPARAMS)
        bad = "its model has another number of parameters";
    else if (w->workers == 0 || w->worker_id >= w->workers)
        bad = "worker id out of range";
    else if (w->epochs == 0 || w->epochs > 1000)
        bad = "epochs out of range";
    else if (w->batch_size == 0 || w->batch_size > 128)
        bad = "batch size out of range (1..128)";
    else if (w->train_limit < w->workers)
        bad = "fewer training images than workers";
    if (bad)
        fprintf(stderr, "error: the server's recipe is not usable: %s\n", bad);
    return bad ? -1 : 0;
}

/* Registers (again) and checks the Welcome. On a rejoin the recipe must be
 * the one this worker started with. REQ_OK, or REQ_FAIL after printing. */
static int s_register(conn_t *c, const char *name, const char *host, Ps__Welcome *w, int again)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = (char *)name;
    reg.host = (char *)host;
    reg.threads = (uint32_t)c->o->threads;
    reg.compress = (Ps__Compression)c->o->compress;
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    wire_msg_t reply;
    int rc = s_request(c, &env, NULL, PS__ENVELOPE__BODY_WELCOME,
                       again ? c->o->timeout : c->o->connect_timeout, &reply);
    if (rc != REQ_OK)
        return REQ_FAIL;
    Ps__Welcome got = *reply.env->welcome;
    snprintf(c->mode, sizeof c->mode, "%s", got.mode ? got.mode : "?");
    snprintf(c->dataset, sizeof c->dataset, "%s",
             got.dataset && *got.dataset ? got.dataset : "mnist");
    got.mode = got.dataset = NULL; /* they point into the reply */
    wire_msg_close(&reply);
    if (s_check_welcome(&got) != 0)
        return REQ_FAIL;
    if ((int)got.compress != c->o->compress) {
        fprintf(stderr, "error: asked the server for compression %d, got %d\n", c->o->compress,
                (int)got.compress);
        return REQ_FAIL;
    }
    if (again && (got.worker_id != w->worker_id || got.run_id != w->run_id || got.seed != w->seed ||
                  got.epochs != w->epochs || got.batch_size != w->batch_size ||
                  got.train_limit != w->train_limit || got.workers != w->workers)) {
        fprintf(stderr,
                "error: on rejoining, the server at %s sent another run or recipe "
                "(run %lld, worker %u); this worker belongs to run %lld as worker %u\n",
                c->o->server, (long long)got.run_id, got.worker_id, (long long)w->run_id,
                w->worker_id);
        return REQ_FAIL;
    }
    *w = got;
    return REQ_OK;
}

/* Pushes one gradient (the frame's ownership passes here) and receives the
 * weights for the next step into *weights (replacing the old ones). */
static int s_push(conn_t *c, const Ps__Welcome *w, uint64_t step, uint64_t version, int epoch,
                  double loss, zmq_msg_t *grad, wire_msg_t *weights)
{
    Ps__Push push = PS__PUSH__INIT;
    push.worker_id = w->worker_id;
    push.step = step;
    push.version = version;
    push.epoch = (uint32_t)epoch;
    push.loss = (float)loss;
    push.incarnation = w->incarnation;
    push.encoding = wire_gradient_encoding((Ps__Compression)c->o->compress);
    push.final_model = strcmp(c->mode, "independent") == 0; /* its one push: the model */
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &push;
    wire_msg_t reply;
    int rc = s_request(c, &env, grad, PS__ENVELOPE__BODY_WEIGHTS, c->o->timeout, &reply);
    if (rc == REQ_OK) {
        wire_msg_close(weights);
        wire_msg_move(weights, &reply); /* the new weights */
    }
    return rc;
}

/* A request without a tensor whose reply is an Ack. */
static int s_tell(conn_t *c, Ps__Envelope *env)
{
    wire_msg_t reply;
    int rc = s_request(c, env, NULL, PS__ENVELOPE__BODY_ACK, c->o->timeout, &reply);
    if (rc == REQ_OK)
        wire_msg_close(&reply);
    return rc;
}

/* Stopped (SIGINT/SIGTERM): tells the server this worker leaves, so that the
 * others do not wait for it until --worker-timeout; waits for the Ack at
 * most 2 s. */
static void s_say_leaving(conn_t *c, const Ps__Welcome *w)
{
    Ps__Done done = PS__DONE__INIT;
    done.worker_id = w->worker_id;
    done.leaving = 1;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    env.request_id = ++c->request;
    if (wire_send_msg(c->sock, NULL, &env, NULL, ZMQ_DONTWAIT) < 0)
        return;
    for (double end = clock_now() + 2; clock_now() < end;) {
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 200) <= 0)
            continue;
        wire_msg_t reply;
        char err[256];
        if (wire_recv(c->sock, NULL, &reply, err, sizeof err) != 0)
            continue;
        int answered = reply.env->request_id == env.request_id;
        wire_msg_close(&reply);
        if (answered) {
            fprintf(stderr, "worker: told the server this worker leaves\n");
            return;
        }
    }
}

/* What a distributed worker holds for its whole life, across sessions (a
 * session ends early when the server no longer knows this connection: it
 * restarted with --resume, or evicted this worker; the worker then registers
 * again and goes on from the last step the server applied). */
typedef struct {
    const worker_opts_t *o;
    conn_t c;
    Ps__Welcome w; /* the run and recipe, from the Welcome */
    char host[128], name[160], who[32];
    idx_dataset_t train, test;
    engine_t *eng;
    int *order; /* this worker's shard, in this epoch's order */
    int n, batches, test_limit;
    wire_msg_t weights;  /* the last Weights reply: its tensor is the model */
    uint64_t version;    /* of those weights */
    const float *params; /* the weights to compute on: in `weights`, wbuf or local */
    float *wbuf;         /* compressed: the decoded weights */
    float *gbuf;         /* compressed or grouped: the gradient before encoding */
    float *residual;     /* int8: what encoding lost, added to the next gradient */
    float *local;        /* --push-every K > 1: this worker's own weights */
    float *acc;          /* --push-every K > 1: the sum of the group's gradients */
    float *mom;          /* mode independent: the momentum of its own SGD (on local) */
    double last_beat;    /* mode independent: clock_now() of the last pull that says "alive" */
    double train_seconds, accuracy;
} dist_t;

/* One epoch's figures, for its report. */
typedef struct {
    double loss_sum, compute, push, pull, wait;
    int done; /* batches computed in this session */
    int64_t sent0, recv0;
} epoch_stats_t;

/* The socket, connected to the server (nothing is sent yet). */
static int s_connect(dist_t *d)
{
    const worker_opts_t *o = d->o;
    if (s_check_endpoint(o->server) != 0)
        return -1;
    gethostname(d->host, sizeof d->host - 1);
    if (o->name)
        snprintf(d->name, sizeof d->name, "%s", o->name);
    else
        snprintf(d->name, sizeof d->name, "%s:%d", d->host, (int)getpid());
    snprintf(d->who, sizeof d->who, "worker");

    d->c.ctx = zmq_ctx_new();
    d->c.sock = zmq_socket(d->c.ctx, ZMQ_DEALER);
    int linger = 1000;
    zmq_setsockopt(d->c.sock, ZMQ_LINGER, &linger, sizeof linger);
    if (o->curve_secret && s_curve(d->c.sock, o) != 0)
        return -1;
    if (zmq_connect(d->c.sock, o->server) != 0) {
        fprintf(stderr, "error: cannot connect to %s: %s (--server takes tcp://HOST:PORT)\n",
                o->server, zmq_strerror(errno));
        return -1;
    }
    printf("worker %s: registering with %s (waiting up to %.0f s for the server and the other "
           "workers)\n",
           d->name, o->server, o->connect_timeout);
    return 0;
}

/* After the first Welcome: the data, the shard and every buffer. */
static int s_prepare(dist_t *d)
{
    const worker_opts_t *o = d->o;
    const Ps__Welcome *w = &d->w;
    char err[512];
    int id = (int)w->worker_id;
    snprintf(d->who, sizeof d->who, "worker %d", id);
    if (!idx_dataset_dir(d->c.dataset)) {
        fprintf(stderr,
                "error: the server trains on data set '%s', which this worker does not "
                "know (%s): update the worker\n",
                d->c.dataset, IDX_DATASETS);
        return -1;
    }
    if (worker_load_data(o, d->c.dataset, &d->train, &d->test) != 0)
        return -1;
    if ((int)w->train_limit > d->train.count) {
        fprintf(stderr, "error: the server splits %u training images but %s has only %d\n",
                w->train_limit, worker_data_dir(o, d->c.dataset), d->train.count);
        return -1;
    }
    if (worker_check_fingerprint(o, d->c.dataset, &d->train, (int)w->train_limit,
                                 w->data_fingerprint) != 0)
        return -1;
    d->n = shard_size((int)w->train_limit, (int)w->workers, id);
    d->test_limit = o->test_limit > 0 ? o->test_limit : (int)w->test_limit;
    d->batches = (d->n + (int)w->batch_size - 1) / (int)w->batch_size;
    d->eng = engine_new(o->threads, (int)w->batch_size, err, sizeof err);
    if (!d->eng) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    int grouped = o->push_every > 1;
    d->order = malloc((size_t)d->n * sizeof(int));
    if (o->compress || grouped) {
        d->wbuf = malloc(MODEL_NPARAMS * sizeof(float));
        d->gbuf = malloc(MODEL_NPARAMS * sizeof(float));
        d->residual = calloc(MODEL_NPARAMS, sizeof(float));
    }
    if (grouped) {
        d->local = malloc(MODEL_NPARAMS * sizeof(float));
        d->acc = malloc(MODEL_NPARAMS * sizeof(float));
    }
    if (!d->order || ((o->compress || grouped) && (!d->wbuf || !d->gbuf || !d->residual)) ||
        (grouped && (!d->local || !d->acc))) {
        fprintf(stderr, "error: out of memory\n");
        return -1;
    }
    if (strcmp(d->c.mode, "independent") == 0) { /* its own model, momentum, gradient */
        d->local = malloc(MODEL_NPARAMS * sizeof(float));
        d->mom = malloc(MODEL_NPARAMS * sizeof(float));
        d->gbuf = malloc(MODEL_NPARAMS * sizeof(float));
        if (!d->local || !d->mom || !d->gbuf) {
            fprintf(stderr, "error: out of memory\n");
            return -1;
        }
    }
    printf("%s of %u: run %lld, shard of %d images, %d batches of %u per epoch, %u epochs, "
           "%d thread(s)\n",
           d->who, w->workers, (long long)w->run_id, d->n, d->batches, w->batch_size, w->epochs,
           o->threads);
    return 0;
}

/* Registers (again, after the first time) and prepares on the first
 * Welcome. REQ_OK or REQ_FAIL. */
static int s_join(dist_t *d, int first)
{
    if (s_register(&d->c, d->name, d->host, &d->w, !first) != REQ_OK)
        return REQ_FAIL;
    if (strcmp(d->c.mode, "independent") == 0 && (d->o->compress || d->o->push_every > 1)) {
        fprintf(stderr, "error: --compress and --push-every change how gradients are pushed; in "
                        "mode independent none is pushed (each worker trains its own model): "
                        "drop them\n");
        return REQ_FAIL;
    }
    if (d->o->push_every > 1 && strcmp(d->c.mode, "sync") != 0) {
        /* Measured: async with 4 local steps per push diverged (50% after an
         * epoch): stale pushes 4 steps long, amplified by momentum. */
        fprintf(stderr,
                "error: --push-every needs a sync server (this one is %s): stale "
                "multi-step pushes with momentum diverge\n",
                d->c.mode);
        return REQ_FAIL;
    }
    if (first && s_prepare(d) != 0)
        return REQ_FAIL;
    if (d->w.incarnation > 0) /* this process, or an earlier one under this name, was here */
        printf("%s: rejoined as incarnation %u, resuming after step %llu\n", d->who,
               d->w.incarnation, (unsigned long long)d->w.start_step);
    return REQ_OK;
}

/* The weights of the last Weights reply become the ones to compute on. */
static void s_take_weights(dist_t *d)
{
    d->version = d->weights.env->weights->version;
    d->params = wire_tensor(&d->weights, d->wbuf);
    if (d->local) {
        memcpy(d->local, d->params, MODEL_NPARAMS * sizeof(float));
        d->params = d->local;
    }
}

/* Pulls the weights to start a session from. */
static int s_pull(dist_t *d)
{
    Ps__Pull pull = PS__PULL__INIT;
    pull.worker_id = d->w.worker_id;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &pull;
    wire_msg_close(&d->weights);
    int rc = s_request(&d->c, &env, NULL, PS__ENVELOPE__BODY_WEIGHTS, d->o->timeout, &d->weights);
    if (rc == REQ_OK)
        s_take_weights(d);
    return rc;
}

/* Sends the gradient in gbuf (or already in *grad) as push number `push`,
 * and takes the weights of the reply. */
static int s_send_gradient(dist_t *d, zmq_msg_t *grad, uint64_t push, int epoch, double loss,
                           epoch_stats_t *st)
{
    const worker_opts_t *o = d->o;
    if (d->gbuf &&
        wire_tensor_encode(grad, d->gbuf, wire_gradient_encoding((Ps__Compression)o->compress),
                           o->compress == PS__COMPRESSION__COMPRESSION_INT8 ? d->residual : NULL) !=
            0) {
        fprintf(stderr, "error: out of memory\n");
        return REQ_FAIL;
    }
    double tp = clock_now();
    int rc = s_push(&d->c, &d->w, push, d->version, epoch, loss, grad, &d->weights);
    if (rc != REQ_OK)
        return rc;
    double te = clock_now();
    double held = d->weights.env->weights->held_seconds;
    s_take_weights(d);
    /* wire_send encodes and queues (push); the rest of the round trip beyond
     * the server's hold is transfer and update (pull). */
    double rest = te - tp - d->c.send_seconds;
    held = held < 0 ? 0 : held > rest ? rest : held;
    st->push += d->c.send_seconds;
    st->wait += held;
    st->pull += rest - held;
    return REQ_OK;
}

/* Evaluates, prints the epoch's line and reports it to the server. */
static int s_report_epoch(dist_t *d, int epoch, double seconds, const epoch_stats_t *st,
                          progress_t *prog)
{
    d->train_seconds += seconds;
    d->accuracy = engine_evaluate(d->eng, d->params, &d->test, d->test_limit, NULL);
    progress_clear(prog);
    double loss = st->loss_sum / st->done;
    printf("%s: epoch %d/%u: train loss %.4f, test accuracy %.2f%%, %.1f s (compute %.1f, "
           "wait %.1f, communication %.1f)\n",
           d->who, epoch, d->w.epochs, loss, d->accuracy, seconds, st->compute, st->wait,
           st->push + st->pull);

    Ps__EpochReport er = PS__EPOCH_REPORT__INIT;
    er.worker_id = d->w.worker_id;
    er.epoch = (uint32_t)epoch;
    er.train_loss = loss;
    er.test_accuracy = d->accuracy;
    er.epoch_seconds = seconds;
    er.compute_seconds = st->compute;
    er.push_seconds = st->push;
    er.pull_seconds = st->pull;
    er.wait_seconds = st->wait;
    er.images = (uint64_t)(st->done == d->batches ? d->n : st->done * (int)d->w.batch_size);
    er.bytes_sent = (uint64_t)(d->c.bytes_sent - st->sent0);
    er.bytes_received = (uint64_t)(d->c.bytes_received - st->recv0);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_EPOCH;
    env.epoch = &er;
    return s_tell(&d->c, &env);
}

/* independent: a pull every Welcome.alive_seconds (a quarter of the
 * server's --worker-timeout) while training alone tells the server this
 * worker is alive (it pushes nothing until its final model); the reply's
 * weights are not used. */
static int s_alive(dist_t *d)
{
    if (clock_now() - d->last_beat < d->w.alive_seconds)
        return REQ_OK;
    d->last_beat = clock_now();
    Ps__Pull pull = PS__PULL__INIT;
    pull.worker_id = d->w.worker_id;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &pull;
    wire_msg_t reply;
    int rc = s_request(&d->c, &env, NULL, PS__ENVELOPE__BODY_WEIGHTS, d->o->timeout, &reply);
    if (rc == REQ_OK)
        wire_msg_close(&reply);
    return rc;
}

/* independent: pushes this worker's trained model, its one push (step 1). */
static int s_push_model(dist_t *d)
{
    zmq_msg_t model;
    if (wire_tensor_encode(&model, d->local, PS__ENCODING__ENCODING_F32, NULL) != 0) {
        fprintf(stderr, "error: out of memory\n");
        return REQ_FAIL;
    }
    printf("%s: sending its model to the server\n", d->who);
    return s_push(&d->c, &d->w, 1, d->version, (int)d->w.epochs, 0.0, &model, &d->weights);
}

/* One epoch, from the first push the server has not applied. Pushes are
 * numbered from `step` + 1: one per batch, or one per group of K batches
 * (--push-every; a group never spans two epochs). */
static int s_epoch(dist_t *d, int epoch, uint64_t step, progress_t *prog)
{
    const int K = d->o->push_every, batch = (int)d->w.batch_size;
    epoch_stats_t st = {.sent0 = d->c.bytes_sent, .recv0 = d->c.bytes_received};
    double t0 = clock_now(), group_loss = 0.0;
    int in_group = 0, rc;
    progress_epoch_start(prog);
    for (int b = 0; b < d->batches; b++) {
        uint64_t push = step + (uint64_t)(b / K) + 1;
        if (push <= d->w.start_step)
            continue;
        if (worker_stop)
            return REQ_FAIL;
        int lo = b * batch, m = d->n - lo < batch ? d->n - lo : batch;
        double tc = clock_now();
        /* Plain, the gradient goes straight into the frame that carries it;
         * compressed or grouped, it goes through gbuf. */
        zmq_msg_t grad;
        double loss;
        if (!d->gbuf) {
            if (wire_tensor_init(&grad) != 0) {
                fprintf(stderr, "error: out of memory\n");
                return REQ_FAIL;
            }
            loss = engine_gradient(d->eng, d->params, &d->train, d->order + lo, m,
                                   zmq_msg_data(&grad));
        } else
            loss = engine_gradient(d->eng, d->params, &d->train, d->order + lo, m, d->gbuf);
        st.loss_sum += loss;
        st.done++;
        group_loss += loss;
        if (d->mom) { /* independent: the basic recipe's step on its own model, no push */
            model_sgd_step(d->local, d->mom, d->gbuf, MODEL_NPARAMS, (float)d->w.lr,
                           (float)d->w.momentum);
            st.compute += clock_now() - tc;
            progress_batch(prog, epoch, b + 1, loss);
            if ((rc = s_alive(d)) != REQ_OK)
                return rc;
            continue;
        }
        if (K > 1) { /* local SGD: take the step here, push the group's sum */
            float lr = (float)d->w.lr;
            for (size_t i = 0; i < MODEL_NPARAMS; i++) {
                d->acc[i] = in_group ? d->acc[i] + d->gbuf[i] : d->gbuf[i];
                d->local[i] -= lr * d->gbuf[i];
            }
            if (++in_group < K && b + 1 < d->batches) {
                st.compute += clock_now() - tc;
                progress_batch(prog, epoch, b + 1, loss);
                continue;
            }
            /* The sum of the group's gradients is this worker's local
             * displacement divided by lr: the server moves the master weights
             * by the workers' mean displacement (model averaging), with its
             * momentum on top. */
            memcpy(d->gbuf, d->acc, MODEL_NPARAMS * sizeof(float));
            loss = group_loss / in_group;
        }
        st.compute += clock_now() - tc;
        in_group = 0;
        group_loss = 0.0;
        rc = s_send_gradient(d, &grad, push, epoch, loss, &st);
        if (rc != REQ_OK)
            return rc;
        progress_batch(prog, epoch, b + 1, loss);
    }
    return s_report_epoch(d, epoch, clock_now() - t0, &st, prog);
}

/* A session: the weights to start from, the epochs not finished yet (the
 * shard's order replayed from the seed), then Done. REQ_OK when the server
 * acknowledged Done, REQ_REJOIN, or REQ_FAIL. */
static int s_session(dist_t *d)
{
    int rc = s_pull(d);
    if (rc != REQ_OK)
        return rc;
    const Ps__Welcome *w = &d->w;
    const int id = (int)w->worker_id, epochs = (int)w->epochs;
    const uint64_t pushes = (uint64_t)((d->batches + d->o->push_every - 1) / d->o->push_every);
    shard_indices(w->seed, (int)w->train_limit, (int)w->workers, id, d->order);
    rng_t rng;
    shard_epoch_rng(&rng, w->seed, id);
    progress_t prog;
    progress_init(&prog, epochs, d->batches, d->who);
    uint64_t step = 0; /* pushes before this epoch */
    /* independent: the model lives here, so a new session starts it over,
     * unless the server has it already (its one push) */
    int model_sent = d->mom && w->start_step > 0;
    if (d->mom) {
        memset(d->mom, 0, MODEL_NPARAMS * sizeof(float));
        d->last_beat = clock_now();
    }
    for (int epoch = 1; epoch <= epochs && !model_sent; epoch++, step += pushes) {
        rng_shuffle(&rng, d->order, d->n);
        if (step + pushes <= w->start_step)
            continue; /* applied before this session */
        if ((rc = s_epoch(d, epoch, step, &prog)) != REQ_OK)
            return rc;
    }
    if (d->mom && !model_sent && (rc = s_push_model(d)) != REQ_OK)
        return rc;

    Ps__Done done = PS__DONE__INIT;
    done.worker_id = (uint32_t)id;
    done.train_seconds = d->train_seconds;
    done.test_accuracy = d->accuracy;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    return s_tell(&d->c, &env);
}

int distributed_run(const worker_opts_t *o)
{
    enum { MAX_SESSIONS = 100 };
    dist_t d = {.o = o, .c = {.o = o}};
    int rc = REQ_FAIL;
    if (s_connect(&d) == 0) {
        for (int session = 1;; session++) {
            if (session > MAX_SESSIONS) {
                fprintf(stderr, "error: gave up after rejoining the server %d times\n",
                        MAX_SESSIONS - 1);
                rc = REQ_FAIL;
                break;
            }
            rc = s_join(&d, session == 1);
            if (rc == REQ_OK)
                rc = s_session(&d);
            if (rc != REQ_REJOIN)
                break;
        }
    }
    if (rc == REQ_OK)
        worker_summary((int)d.w.epochs, d.accuracy, d.train_seconds, (double)d.n * d.w.epochs);
    if (worker_stop && d.w.run_id != 0)
        s_say_leaving(&d.c, &d.w);
    if (worker_stop)
        fprintf(stderr, "interrupted\n");
    wire_msg_close(&d.weights);
    if (d.c.sock)
        zmq_close(d.c.sock);
    if (d.c.ctx)
        zmq_ctx_term(d.c.ctx);
    engine_destroy(&d.eng);
    free(d.order);
    free(d.wbuf);
    free(d.gbuf);
    free(d.residual);
    free(d.local);
    free(d.acc);
    free(d.mom);
    idx_free(&d.train);
    idx_free(&d.test);
    return rc == REQ_OK ? 0 : 1;
}
