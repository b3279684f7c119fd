/* link: a distributed worker's connections to the server group (see
 * link.h): requests to the head, and each step's scatter of gradient parts
 * and gather of weights across the servers. Every wait has a deadline. */
#include "link.h"

#include <czmq.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "models.h"

/* Checks that a tcp:// endpoint's host resolves, for a clear message now
 * instead of ZeroMQ retrying an unresolvable name forever. */
static int s_check_endpoint(const char *ep, const char *flag)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return 0; /* ipc://, inproc:// ...: ZeroMQ checks them */
    const char *host = ep + 6, *colon = strrchr(host, ':');
    if (!colon || colon == host || !colon[1]) {
        fprintf(stderr, "error: %s '%s' is not tcp://HOST:PORT\n", flag, ep);
        return -1;
    }
    char name[256];
    size_t len = (size_t)(colon - host);
    if (len >= sizeof name) {
        fprintf(stderr, "error: host name in %s '%s' is too long\n", flag, ep);
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
                "error: cannot resolve the server host '%s' in %s %s: %s\n"
                "(check the name, or give the server's IP address)\n",
                name, flag, ep, gai_strerror(rc));
        return -1;
    }
    freeaddrinfo(res);
    return 0;
}

/* CurveZMQ on a socket to a server: the worker's own certificate and the
 * server's public key (the head's from --server-key; a shard's, as Z85
 * text, from the Welcome). A server that does not list this worker's public
 * key lets the handshake fail: no reply ever comes, and the worker says so
 * at its deadline. */
static int s_curve(void *sock, const worker_opts_t *o, const char *server_z85, int quiet)
{
    zsys_handler_set(NULL);
    zcert_t *mine = zcert_load(o->curve_secret);
    zcert_t *server = server_z85 ? NULL : zcert_load(o->server_key);
    int rc = -1;
    if (!mine || (!server && !server_z85))
        fprintf(stderr,
                "error: cannot read the certificate %s (paramserver --keygen PATH makes "
                "PATH and PATH_secret)\n",
                !mine ? o->curve_secret : o->server_key);
    else if (strcmp(zcert_secret_txt(mine), "0000000000000000000000000000000000000000") == 0)
        fprintf(stderr, "error: %s holds no secret key: give the _secret file\n", o->curve_secret);
    else {
        struct stat st;
        if (!quiet && stat(o->curve_secret, &st) == 0 && (st.st_mode & 077))
            fprintf(stderr,
                    "warning: the secret key %s is readable by other users (mode %03o): "
                    "chmod 600 %s\n",
                    o->curve_secret, (unsigned)(st.st_mode & 0777), o->curve_secret);
        zcert_apply(mine, sock);
        int set = server ? zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, zcert_public_key(server), 32)
                         : zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_z85, 40);
        if (set != 0)
            fprintf(stderr,
                    "error: cannot set the server key %s on the socket: %s (is "
                    "libzmq built with CURVE?)\n",
                    server ? o->server_key : server_z85, zmq_strerror(errno));
        else {
            if (!quiet)
                printf("CurveZMQ on: this worker's key %s\n", zcert_public_txt(mine));
            rc = 0;
        }
    }
    zcert_destroy(&mine);
    zcert_destroy(&server);
    return rc;
}

/* Judges a reply received while waiting for request req: REQ_OK when it is
 * its answer, of kind `want` (the caller keeps it); otherwise it is closed
 * and the result is REQ_LATE (an answer to an earlier, resent request: wait
 * on), REQ_REJOIN (the server does not know this connection) or REQ_FAIL
 * (refused or unexpected, after printing why). */
static int s_judge_reply(const link_server_t *srv, const Ps__Envelope *req,
                         Ps__Envelope__BodyCase want, wire_msg_t *reply)
{
    Ps__Envelope *env = reply->env;
    int is_error = env->body_case == PS__ENVELOPE__BODY_ERROR;
    if (env->request_id != req->request_id && !(is_error && env->request_id == 0)) {
        wire_msg_close(reply);
        return REQ_LATE;
    }
    if (is_error) {
        int code = env->error->code, rejoin = code == PS__ERROR_CODE__ERROR_UNKNOWN_WORKER;
        if (code == PS__ERROR_CODE__ERROR_RETRY) {
            wire_msg_close(reply);
            return REQ_RETRY; /* a shard the head has not told about us yet */
        }
        if (code == PS__ERROR_CODE__ERROR_FENCED) {
            wire_msg_close(reply);
            return REQ_MOVED; /* its standby serves the range now */
        }
        if (rejoin)
            fprintf(stderr,
                    "worker: %s does not know this connection (%s); "
                    "registering again\n",
                    srv->name, env->error->message ? env->error->message : "");
        else
            fprintf(stderr, "error: %s refused %s: %s\n", srv->name, wire_kind_name(req->body_case),
                    env->error->message ? env->error->message : "(no message)");
        wire_msg_close(reply);
        return rejoin ? REQ_REJOIN : REQ_FAIL;
    }
    if (env->body_case != want) {
        fprintf(stderr, "error: %s answered %s with %s; expected %s\n", srv->name,
                wire_kind_name(req->body_case), wire_kind_name(env->body_case),
                wire_kind_name(want));
        wire_msg_close(reply);
        return REQ_FAIL;
    }
    return REQ_OK;
}

static void *s_socket(link_t *l, const char *ep, const char *server_z85, int quiet);

/* The head has been silent for the failover timeout and has a standby:
 * requests to the head go there from now on (it answers "retry" until it
 * has taken over). 0, or -1 when there is nowhere to go. */
static int s_move_head(link_t *l)
{
    link_server_t *head = &l->srv[0];
    if (l->head_moved || !l->head_standby[0])
        return -1;
    void *sock = s_socket(l, l->head_standby, NULL, 1);
    if (!sock)
        return -1;
    fprintf(stderr, "worker: the head at %s is silent; going to its standby at %s\n",
            head->endpoint, l->head_standby);
    zmq_close(head->sock);
    head->sock = sock;
    snprintf(head->endpoint, sizeof head->endpoint, "%s", l->head_standby);
    snprintf(head->name, sizeof head->name, "the head's standby at %s", l->head_standby);
    l->head_moved = 1;
    l->failovers++;
    return 0;
}

/* Sends a request (with the tensor frame, whose ownership passes here, or
 * NULL) and waits for its reply, which must be of kind `want`. When no reply
 * comes the request is sent again after 2, 4, 8... seconds (the server
 * applies a resent push once), until `timeout` seconds have passed in all.
 * Replies to earlier requests (answers to a resent one) are dropped by their
 * request id. Returns REQ_OK with *reply filled (caller closes it); REQ_REJOIN
 * when the server does not know this worker's connection (it restarted, or
 * evicted this worker): register again; REQ_FAIL after printing why. */
int link_request(link_t *l, Ps__Envelope *req, zmq_msg_t *tensor, Ps__Envelope__BodyCase want,
                 double timeout, wire_msg_t *reply)
{
    link_server_t *srv = &l->srv[0];
    req->request_id = ++l->request;
    zmq_msg_t keep; /* a shared copy of the tensor frame, for resending */
    if (tensor) {
        zmq_msg_init(&keep);
        zmq_msg_copy(&keep, tensor);
    }
    int rc = REQ_FAIL;
    double start = clock_now(), deadline = start + timeout, wait = 2.0;
    double t0 = clock_now();
    long n = wire_send_msg(srv->sock, NULL, req, tensor, 0);
    l->send_seconds = clock_now() - t0;
    if (n < 0) {
        fprintf(stderr, "error: cannot send to %s: %s\n", srv->name, zmq_strerror(errno));
        goto out;
    }
    l->bytes_sent += n;
    double resend_at = clock_now() + wait;
    for (;;) {
        double now = clock_now();
        if (now >= deadline || worker_stop) {
            if (!worker_stop)
                fprintf(stderr,
                        "error: no reply to %s from %s within %.0f s (%s), "
                        "though resent: is the paramserver running and reachable at that "
                        "address? (A server with CurveZMQ also stays silent to a worker it "
                        "does not admit: check --curve-secret, --server-key and the server's "
                        "--allowed-keys.)\n",
                        wire_kind_name(req->body_case), srv->name, timeout,
                        req->body_case == PS__ENVELOPE__BODY_REGISTER ? "--connect-timeout"
                                                                      : "--timeout");
            goto out;
        }
        if (l->failover > 0 && now - start >= l->failover && s_move_head(l) == 0)
            resend_at = now; /* to the head's standby, at once */
        if (now >= resend_at) {
            zmq_msg_t again;
            if (tensor) {
                zmq_msg_init(&again);
                zmq_msg_copy(&again, &keep);
            }
            if (wire_send_msg(srv->sock, NULL, req, tensor ? &again : NULL, ZMQ_DONTWAIT) >= 0)
                fprintf(stderr, "worker: no reply to %s after %.0f s; sent it again\n",
                        wire_kind_name(req->body_case), now - start);
            wait *= 2;
            resend_at = now + wait;
        }
        zmq_pollitem_t item = {srv->sock, 0, ZMQ_POLLIN, 0};
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
        int r = wire_recv(srv->sock, NULL, reply, link_nparams(l), err, sizeof err);
        if (r < 0)
            continue;
        if (r > 0) {
            fprintf(stderr, "error: bad reply from %s: %s\n", srv->name, err);
            goto out;
        }
        l->bytes_received += (int64_t)reply->bytes;
        rc = s_judge_reply(srv, req, want, reply);
        if (rc == REQ_RETRY) { /* the head's standby, not serving yet: again shortly */
            resend_at = clock_now() + 0.1;
            wait = 2.0;
            rc = REQ_LATE;
        } else if (rc == REQ_MOVED)
            rc = REQ_LATE;
        if (rc != REQ_LATE)
            goto out;
        rc = REQ_FAIL;
    }
out:
    if (tensor)
        zmq_msg_close(&keep);
    return rc;
}

/* A DEALER with CurveZMQ when asked, connected to ep. NULL after printing. */
static void *s_socket(link_t *l, const char *ep, const char *server_z85, int quiet)
{
    void *sock = zmq_socket(l->ctx, ZMQ_DEALER);
    int linger = 1000;
    if (!sock)
        return NULL;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (l->o->curve_secret && s_curve(sock, l->o, server_z85, quiet) != 0) {
        zmq_close(sock);
        return NULL;
    }
    if (zmq_connect(sock, ep) != 0) {
        fprintf(stderr, "error: cannot connect to %s: %s (it takes tcp://HOST:PORT)\n", ep,
                zmq_strerror(errno));
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

int link_open(link_t *l, const worker_opts_t *o)
{
    memset(l, 0, sizeof *l);
    l->o = o;
    if (s_check_endpoint(o->server, "--server") != 0)
        return -1;
    l->ctx = zmq_ctx_new();
    link_server_t *head = &l->srv[0];
    snprintf(head->endpoint, sizeof head->endpoint, "%s", o->server);
    snprintf(head->name, sizeof head->name, "the server at %s", o->server);
    l->servers = 1;
    return l->ctx && (head->sock = s_socket(l, o->server, NULL, 0)) ? 0 : -1;
}

static void s_close_shards(link_t *l)
{
    for (int i = 1; i < l->servers; i++)
        if (l->srv[i].sock) {
            zmq_close(l->srv[i].sock);
            l->srv[i].sock = NULL;
        }
}

/* Drops the encoded parts of the last push. */
static void s_push_end(link_t *l)
{
    for (int i = 0; i < l->servers; i++) {
        link_server_t *srv = &l->srv[i];
        for (int k = 0; k < srv->parts_sent; k++)
            zmq_msg_close(&srv->part_msg[k]);
        srv->parts_sent = 0;
    }
    l->pushing = 0;
}

void link_close(link_t *l)
{
    s_push_end(l);
    s_close_shards(l);
    if (l->srv[0].sock)
        zmq_close(l->srv[0].sock);
    l->srv[0].sock = NULL;
    if (l->ctx)
        zmq_ctx_term(l->ctx);
    l->ctx = NULL;
}

/* Cuts [lo, hi) at the edges of the model's layers (models.h: in backward
 * order), from the top down. */
static void s_cut_parts(link_server_t *srv, const model_def_t *m)
{
    size_t end = srv->hi;
    srv->parts = 0;
    for (int e = 1; e < m->nedges; e++) {
        size_t edge = m->edges[e] > srv->lo ? m->edges[e] : srv->lo;
        if (edge < end) {
            srv->part_lo[srv->parts] = edge;
            srv->part_hi[srv->parts] = end;
            srv->parts++;
            end = edge;
        }
        if (end == srv->lo)
            break;
    }
}

/* What is wrong with the Welcome's list of servers for a model of nparams
 * values, or NULL. */
static const char *s_servers_problem(const Ps__Welcome *w, size_t nparams)
{
    if (w->n_shards < 1 || w->n_shards > LINK_MAX_SERVERS)
        return "the number of servers is out of range (1..64)";
    size_t at = 0;
    for (size_t i = 0; i < w->n_shards; i++) {
        const Ps__ShardRange *r = w->shards[i];
        if (r->lo != at || r->hi <= r->lo || r->hi > nparams)
            return "the servers' ranges do not tile the parameter vector";
        if ((i == 0) != (!r->endpoint || !r->endpoint[0]) ||
            (r->endpoint && strlen(r->endpoint) >= sizeof((link_server_t *)0)->endpoint))
            return "a server's endpoint is missing or too long";
        at = r->hi;
    }
    return at == nparams ? NULL : "the servers' ranges do not cover the parameter vector";
}

size_t link_nparams(const link_t *l)
{
    return l->model ? l->model->nparams : 0;
}

/* The model the Welcome names (none: an older server's, MODELS_DEFAULT),
 * which this worker must have, with the length the Welcome gives, and which
 * must be the one asked for (--model) and the one of an earlier Welcome.
 * NULL after printing why. */
static const model_def_t *s_welcome_model(const link_t *l, const Ps__Welcome *w)
{
    const char *name = w->model && *w->model ? w->model : MODELS_DEFAULT;
    const model_def_t *m = models_find(name);
    char names[256];
    if (!m)
        fprintf(stderr,
                "error: the server trains model '%s', which this worker does not have (it has "
                "%s): run the same release of worker and paramserver\n",
                name, models_list(names, sizeof names));
    else if (w->params != m->nparams)
        fprintf(stderr,
                "error: the server's model %s has %u parameters, this worker's %zu: run the "
                "same release of worker and paramserver\n",
                name, w->params, m->nparams);
    else if (l->o->model && l->o->model != m)
        fprintf(stderr, "error: this worker was given --model %s but the server trains %s\n",
                l->o->model->name, name);
    else if (l->model && l->model != m)
        fprintf(stderr, "error: on rejoining, the server trains %s; this worker trained %s\n", name,
                l->model->name);
    else
        return m;
    return NULL;
}

int link_set_servers(link_t *l, const Ps__Welcome *w)
{
    const model_def_t *model = s_welcome_model(l, w);
    if (!model)
        return -1;
    const char *bad = s_servers_problem(w, model->nparams);
    if (bad) {
        fprintf(stderr, "error: the server's Welcome is not usable: %s\n", bad);
        return -1;
    }
    s_push_end(l);
    s_close_shards(l);
    l->model = model;
    l->servers = (int)w->n_shards;
    l->token = w->token;
    l->failover = w->failover_timeout > 0 ? w->failover_timeout : 0;
    const char *hsb = w->n_shards > 0 && w->shards[0]->standby ? w->shards[0]->standby : "";
    if (!l->head_moved && hsb[0] && s_check_endpoint(hsb, "the Welcome's head standby") == 0)
        snprintf(l->head_standby, sizeof l->head_standby, "%s", hsb);
    l->push.worker_id = w->worker_id;
    snprintf(l->mode, sizeof l->mode, "%s", w->mode ? w->mode : "?");
    snprintf(l->dataset, sizeof l->dataset, "%s", w->dataset && *w->dataset ? w->dataset : "mnist");
    for (int i = 0; i < l->servers; i++) {
        const Ps__ShardRange *r = w->shards[i];
        link_server_t *srv = &l->srv[i];
        srv->lo = r->lo;
        srv->hi = r->hi;
        srv->version = 0;
        s_cut_parts(srv, model);
        if (i == 0)
            continue;
        snprintf(srv->endpoint, sizeof srv->endpoint, "%s", r->endpoint);
        snprintf(srv->name, sizeof srv->name, "shard %d at %s", i, r->endpoint);
        if (s_check_endpoint(srv->endpoint, "the Welcome's shard endpoint") != 0)
            return -1;
        const char *key =
            l->o->curve_secret && r->public_key && r->public_key[0] ? r->public_key : NULL;
        if (l->o->curve_secret && !key) {
            fprintf(stderr, "error: the head gave no CurveZMQ key for %s\n", srv->name);
            return -1;
        }
        if (!(srv->sock = s_socket(l, srv->endpoint, key, 1)))
            return -1;
    }
    if (l->servers > 1)
        printf("worker: the parameters are split over %d servers\n", l->servers);
    return 0;
}

void link_push_begin(link_t *l, const Ps__Push *push, const float *grad, int encoding,
                     float *residual)
{
    s_push_end(l);
    l->pushing = 1;
    l->push = *push;
    l->grad = grad;
    l->encoding = encoding;
    l->residual = residual;
    l->send_seconds = 0;
    for (int i = 0; i < l->servers; i++)
        l->srv[i].request = ++l->request;
}

/* A frame that points into the gradient without copying it (the gradient
 * stays as it is until link_gather returns). */
static void s_no_free(void *data, void *hint)
{
    (void)data;
    (void)hint;
}

/* Sends part k of server i's range: encoded (kept for resending) the first
 * time, then the kept frame again. 0, or -1 with errno set. */
static int s_send_part(link_t *l, int i, int k, int flags)
{
    link_server_t *srv = &l->srv[i];
    size_t lo = srv->part_lo[k], n = srv->part_hi[k] - lo;
    if (k == srv->parts_sent) {
        int rc = l->encoding == PS__ENCODING__ENCODING_F32
                     ? zmq_msg_init_data(&srv->part_msg[k], (void *)(l->grad + lo),
                                         n * sizeof(float), s_no_free, NULL)
                     : wire_tensor_encode_n(&srv->part_msg[k], l->grad + lo, n, l->encoding,
                                            l->residual ? l->residual + lo : NULL);
        if (rc != 0) {
            errno = ENOMEM;
            return -1;
        }
        srv->parts_sent++;
    }
    Ps__Push p = l->push;
    p.token = l->token;
    p.version = srv->version;
    p.encoding = (Ps__Encoding)l->encoding;
    p.offset = (uint32_t)lo;
    p.count = (uint32_t)n;
    p.part = (uint32_t)k;
    p.parts = (uint32_t)srv->parts;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = srv->request;
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, &srv->part_msg[k]);
    long sent = wire_send_msg(srv->sock, NULL, &env, &copy, flags);
    if (sent < 0)
        return -1;
    l->bytes_sent += sent;
    return 0;
}

/* Sends the parts within [lo, hi) not sent yet; `early`: from backward (the
 * bytes count as overlapped with it). */
static int s_push_parts(link_t *l, size_t lo, size_t hi, int early)
{
    double t0 = clock_now();
    int64_t before = l->bytes_sent;
    for (int i = 0; i < l->servers; i++) {
        link_server_t *srv = &l->srv[i];
        while (srv->parts_sent < srv->parts && srv->part_lo[srv->parts_sent] >= lo &&
               srv->part_hi[srv->parts_sent] <= hi)
            if (s_send_part(l, i, srv->parts_sent, 0) != 0) {
                fprintf(stderr, "error: cannot send to %s: %s\n", srv->name, zmq_strerror(errno));
                return REQ_FAIL;
            }
    }
    l->send_seconds += clock_now() - t0;
    if (early)
        l->bytes_early += l->bytes_sent - before;
    l->bytes_pushed += l->bytes_sent - before;
    return REQ_OK;
}

int link_push_ready(link_t *l, size_t lo, size_t hi, int early)
{
    return s_push_parts(l, lo, hi, early);
}

/* (Re)sends server i's request: all parts of the push, or a Pull. */
static int s_send_request(link_t *l, int i, int flags)
{
    link_server_t *srv = &l->srv[i];
    if (l->pushing) {
        for (int k = 0; k < srv->parts; k++)
            if (s_send_part(l, i, k, flags) != 0)
                return -1;
        return 0;
    }
    Ps__Pull pull = PS__PULL__INIT;
    pull.worker_id = l->push.worker_id;
    pull.token = l->token;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &pull;
    env.request_id = srv->request;
    long sent = wire_send(srv->sock, NULL, &env, NULL, flags);
    if (sent < 0)
        return -1;
    l->bytes_sent += sent;
    return 0;
}

/* A reply from server i: its weights into place. REQ_OK when it answered
 * this step, REQ_LATE for an answer to an earlier request, else as
 * s_judge_reply. */
static int s_take_reply(link_t *l, int i, wire_msg_t *m, float *weights)
{
    link_server_t *srv = &l->srv[i];
    Ps__Envelope req = PS__ENVELOPE__INIT;
    req.request_id = srv->request;
    req.body_case = l->pushing ? PS__ENVELOPE__BODY_PUSH : PS__ENVELOPE__BODY_PULL;
    int rc = s_judge_reply(srv, &req, PS__ENVELOPE__BODY_WEIGHTS, m);
    if (rc != REQ_OK)
        return rc;
    const Ps__Weights *wm = m->env->weights;
    size_t n = srv->hi - srv->lo;
    if (wm->offset != srv->lo || m->count != n) {
        fprintf(stderr, "error: %s sent the values [%u, %zu); its range is [%zu, %zu)\n", srv->name,
                wm->offset, (size_t)wm->offset + m->count, srv->lo, srv->hi);
        wire_msg_close(m);
        return REQ_FAIL;
    }
    const float *t = wire_tensor(m, weights + srv->lo);
    if (t != weights + srv->lo)
        memcpy(weights + srv->lo, t, n * sizeof(float));
    srv->version = wm->version;
    srv->held = wm->held_seconds;
    srv->answered = 1;
    wire_msg_close(m);
    return REQ_OK;
}

/* In sync mode the servers must agree on the version (one round each). */
static int s_versions_agree(const link_t *l)
{
    if (strcmp(l->mode, "sync") != 0)
        return 1;
    for (int i = 1; i < l->servers; i++)
        if (l->srv[i].version != l->srv[0].version) {
            fprintf(stderr,
                    "error: the servers disagree in sync mode: the head sent version %llu, %s "
                    "version %llu\n",
                    (unsigned long long)l->srv[0].version, l->srv[i].name,
                    (unsigned long long)l->srv[i].version);
            return 0;
        }
    return 1;
}

/* Asks the head where each range lives now (Locate), at most every 0.25 s. */
static void s_locate(link_t *l)
{
    double now = clock_now();
    if (now - l->located_at < 0.25)
        return;
    l->located_at = now;
    Ps__Locate loc = PS__LOCATE__INIT;
    loc.worker_id = l->push.worker_id;
    loc.token = l->token;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_LOCATE;
    env.locate = &loc;
    env.request_id = l->locate_request = ++l->request;
    long n = wire_send(l->srv[0].sock, NULL, &env, NULL, ZMQ_DONTWAIT);
    if (n > 0)
        l->bytes_sent += n;
}

/* The head's answer to s_locate: a shard served from another endpoint now
 * (its standby took over) gets a new connection and the request again.
 * The ranges must be those of the Welcome. Returns a mask of the servers
 * that moved (bit i), or -1 when the answer does not fit. */
static long long s_relocate(link_t *l, const Ps__Located *at)
{
    if (at->n_shards != (size_t)l->servers)
        return -1;
    long long moved = 0;
    for (int i = 1; i < l->servers; i++) {
        const Ps__ShardRange *r = at->shards[i];
        link_server_t *srv = &l->srv[i];
        if (r->lo != srv->lo || r->hi != srv->hi || !r->endpoint)
            return -1;
        if (!r->endpoint[0] || strcmp(r->endpoint, srv->endpoint) == 0)
            continue;
        if (s_check_endpoint(r->endpoint, "the head's new endpoint for a shard") != 0)
            return -1;
        void *sock = s_socket(l, r->endpoint, NULL, 1);
        if (!sock)
            return -1;
        fprintf(stderr, "worker: %s is now served at %s (its standby took over)\n", srv->name,
                r->endpoint);
        zmq_close(srv->sock);
        srv->sock = sock;
        snprintf(srv->endpoint, sizeof srv->endpoint, "%s", r->endpoint);
        snprintf(srv->name, sizeof srv->name, "shard %d at %s", i, r->endpoint);
        l->failovers++;
        moved |= 1LL << i;
    }
    return moved;
}

/* Waits for every server's answer until the deadline, resending to the
 * silent ones after 2, 4, 8... s (at once, 50 ms later, to a shard that
 * asked to retry). A shard silent for the failover timeout, or fenced, makes
 * the worker ask the head where its range lives now; a range that moved
 * gets the request again at once. */
static int s_wait_all(link_t *l, float *weights)
{
    double start = clock_now(), deadline = start + l->o->timeout;
    double wait[LINK_MAX_SERVERS], resend_at[LINK_MAX_SERVERS], since[LINK_MAX_SERVERS];
    for (int i = 0; i < l->servers; i++) {
        wait[i] = 2.0;
        resend_at[i] = start + wait[i];
        since[i] = start;
    }
    for (;;) {
        int left = 0;
        zmq_pollitem_t items[LINK_MAX_SERVERS];
        double now = clock_now(), until = deadline;
        for (int i = 0; i < l->servers; i++) {
            link_server_t *srv = &l->srv[i];
            items[i] = (zmq_pollitem_t){srv->sock, 0, ZMQ_POLLIN, 0};
            if (srv->answered)
                continue;
            left++;
            if (i == 0 && l->failover > 0 && now - since[0] >= l->failover && s_move_head(l) == 0) {
                s_send_request(l, 0, ZMQ_DONTWAIT);
                since[0] = now;
                wait[0] = 2.0;
                resend_at[0] = now + wait[0];
                items[0].socket = l->srv[0].sock;
            }
            if (i > 0 && l->failover > 0) {
                /* silent past the failover timeout: ask the head every 0.25 s */
                double at = since[i] + l->failover;
                if (now >= at) {
                    s_locate(l);
                    at = l->located_at + 0.25;
                }
                until = at < until ? at : until;
            }
            if (now >= resend_at[i]) {
                if (s_send_request(l, i, ZMQ_DONTWAIT) == 0 && wait[i] >= 2.0)
                    fprintf(stderr, "worker: no reply from %s after %.0f s; sent it again\n",
                            srv->name, now - start);
                wait[i] = wait[i] >= 2.0 ? wait[i] * 2 : 2.0;
                resend_at[i] = now + wait[i];
            }
            until = resend_at[i] < until ? resend_at[i] : until;
        }
        if (left == 0)
            return REQ_OK;
        if (now >= deadline || worker_stop) {
            for (int i = 0; i < l->servers && !worker_stop; i++)
                if (!l->srv[i].answered)
                    fprintf(
                        stderr,
                        "error: no reply to %s from %s within %.0f s (--timeout), though resent: "
                        "is that paramserver running and reachable at that address? (With "
                        "CurveZMQ a server also stays silent to a worker it does not "
                        "admit.)\n",
                        l->pushing ? "push" : "pull", l->srv[i].name, l->o->timeout);
            return REQ_FAIL;
        }
        long ms = (long)((until - now) * 1000) + 1;
        if (zmq_poll(items, l->servers, ms > 1000 ? 1000 : ms) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "error: zmq_poll: %s\n", zmq_strerror(errno));
            return REQ_FAIL;
        }
        for (int i = 0; i < l->servers; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            wire_msg_t m;
            char err[256];
            int r = wire_recv(l->srv[i].sock, NULL, &m, link_nparams(l), err, sizeof err);
            if (r < 0)
                continue;
            if (r > 0) {
                fprintf(stderr, "error: bad reply from %s: %s\n", l->srv[i].name, err);
                return REQ_FAIL;
            }
            l->bytes_received += (int64_t)m.bytes;
            if (i == 0 && m.env->body_case == PS__ENVELOPE__BODY_LOCATED) {
                long long moved =
                    m.env->request_id == l->locate_request ? s_relocate(l, m.env->located) : 0;
                wire_msg_close(&m);
                if (moved < 0) {
                    fprintf(stderr, "error: the head's answer to Locate does not fit the "
                                    "Welcome's servers\n");
                    return REQ_FAIL;
                }
                for (int j = 1; j < l->servers; j++)
                    if (moved & (1LL << j)) {
                        s_send_request(l, j, ZMQ_DONTWAIT);
                        since[j] = clock_now();
                        wait[j] = 2.0;
                        resend_at[j] = since[j] + wait[j];
                    }
                if (moved)
                    break; /* the poll's other items may name closed sockets */
                continue;
            }
            int rc = s_take_reply(l, i, &m, weights);
            if (rc == REQ_RETRY) {
                wait[i] = 0.05;
                resend_at[i] = clock_now() + wait[i];
            } else if (rc == REQ_MOVED)
                since[i] = 0; /* fenced: ask the head now */
            else if (rc != REQ_OK && rc != REQ_LATE)
                return rc;
        }
    }
}

int link_gather(link_t *l, float *weights, double *held)
{
    double t0 = clock_now();
    if (!l->pushing)
        for (int i = 0; i < l->servers; i++)
            l->srv[i].request = ++l->request;
    for (int i = 0; i < l->servers; i++)
        l->srv[i].answered = 0;
    if (l->pushing && s_push_parts(l, 0, l->model->nparams, 0) != REQ_OK)
        return REQ_FAIL;
    for (int i = 0; i < l->servers && !l->pushing; i++)
        if (s_send_request(l, i, 0) != 0) {
            fprintf(stderr, "error: cannot send to %s: %s\n", l->srv[i].name, zmq_strerror(errno));
            return REQ_FAIL;
        }
    if (!l->pushing)
        l->send_seconds = clock_now() - t0;
    int rc = s_wait_all(l, weights);
    s_push_end(l);
    if (rc != REQ_OK)
        return rc;
    *held = 0;
    for (int i = 0; i < l->servers; i++)
        *held = l->srv[i].held > *held ? l->srv[i].held : *held;
    return s_versions_agree(l) ? REQ_OK : REQ_FAIL;
}
