/* transport: binding, the gate, CurveZMQ and its ZAP handler (see
 * transport.h). */
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Sets a socket option; the failure of one is a bug or a broken libzmq,
 * but it is reported, not ignored. */
static int s_setopt(void *sock, int opt, const void *value, size_t len, const char *name)
{
    if (zmq_setsockopt(sock, opt, value, len) == 0)
        return 0;
    fprintf(stderr, "error: cannot set the socket option %s: %s\n", name, zmq_strerror(errno));
    return -1;
}

#define SETOPT(sock, opt, value) s_setopt(sock, opt, &(value), sizeof(value), #opt)

/* A secret key file others can read is no secret: say so (keygen writes
 * it 0600; a copy or an archive may not have kept that). */
static void s_warn_secret_mode(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr,
                "warning: the secret key %s is readable by other users (mode %03o): "
                "chmod 600 %s\n",
                path, (unsigned)(st.st_mode & 0777), path);
}

/* Answers the ZAP requests (rfc.zeromq.org/spec/27) libzmq makes during
 * CurveZMQ handshakes: a client key found among the allowed certificates
 * is admitted with the key (Z85) as its User-Id, which every message of the
 * connection then carries (wire_peer_t.key); any other is refused. */
static void s_zap_serve(server_t *s)
{
    while (s->zap) {
        zmq_msg_t part[7];
        int n = 0, more = 1;
        while (more && n < 7) {
            zmq_msg_init(&part[n]);
            if (zmq_msg_recv(&part[n], s->zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(&part[n]);
                return;
            }
            more = zmq_msg_more(&part[n++]);
        }
        char key[41] = "", seq[64] = "";
        if (n >= 2 && zmq_msg_size(&part[1]) < sizeof seq)
            memcpy(seq, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]));
        if (n == 7 && zmq_msg_size(&part[6]) == 32)
            zmq_z85_encode(key, zmq_msg_data(&part[6]), 32);
        while (more) { /* more frames than a CURVE request has */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            more = zmq_msg_recv(&extra, s->zap, 0) >= 0 && zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close(&part[i]);
        int ok = key[0] && zcertstore_lookup(s->allowed, key) != NULL;
        const char *reply[6] = {
            "1.0", seq, ok ? "200" : "400", ok ? "OK" : "key not allowed", ok ? key : "", ""};
        for (int i = 0; i < 6; i++)
            if (zmq_send(s->zap, reply[i], strlen(reply[i]), i < 5 ? ZMQ_SNDMORE : 0) < 0) {
                /* libzmq then fails that handshake: the client retries */
                fprintf(stderr, "warning: cannot answer a CurveZMQ handshake: %s\n",
                        zmq_strerror(errno));
                break;
            }
    }
}

/* Turns on CurveZMQ for the socket: the server's certificate, and a ZAP
 * handler that admits only the public keys found in the allowed directory. */
static int s_curve(server_t *s)
{
    const server_opts_t *o = s->o;
    zcert_t *cert = zcert_load(o->curve_secret);
    if (!cert) {
        fprintf(stderr,
                "error: cannot read the certificate %s (make one with paramserver "
                "--keygen PATH; give PATH_secret here)\n",
                o->curve_secret);
        return -1;
    }
    if (strcmp(zcert_secret_txt(cert), "0000000000000000000000000000000000000000") == 0) {
        fprintf(stderr, "error: %s holds no secret key: give the _secret file\n", o->curve_secret);
        zcert_destroy(&cert);
        return -1;
    }
    zdir_t *dir = zdir_new(o->allowed_keys, NULL);
    if (!dir) {
        fprintf(stderr, "error: --allowed-keys %s is not a readable directory\n", o->allowed_keys);
        zcert_destroy(&cert);
        return -1;
    }
    if (zdir_count(dir) == 0)
        fprintf(stderr,
                "warning: --allowed-keys %s holds no public certificates: no worker can "
                "connect (copy each worker's public file there)\n",
                o->allowed_keys);
    zdir_destroy(&dir);
    s_warn_secret_mode(o->curve_secret);
    /* Our own ZAP handler rather than czmq's zauth, which admits the same
     * keys but does not pass the client's key on as its User-Id. */
    s->allowed = zcertstore_new(o->allowed_keys);
    s->zap = zmq_socket(s->ctx, ZMQ_REP);
    if (!s->allowed || !s->zap || zmq_bind(s->zap, "inproc://zeromq.zap.01") != 0) {
        fprintf(stderr, "error: cannot start the CurveZMQ handler: %s\n", zmq_strerror(errno));
        zcert_destroy(&cert);
        return -1;
    }
    int server = 1;
    if (SETOPT(s->sock, ZMQ_CURVE_SERVER, server) != 0) {
        zcert_destroy(&cert);
        return -1;
    }
    zcert_apply(cert, s->sock);
    srv_log(s, "CurveZMQ on: server key %s; admitting the public keys in %s",
            zcert_public_txt(cert), o->allowed_keys);
    zcert_destroy(&cert);
    return 0;
}

/* Explains a failed bind: the address, the cause and the fix. */
static void s_bind_error(const char *bind, int e)
{
    fprintf(stderr, "error: cannot listen on %s: %s\n", bind, zmq_strerror(e));
    if (e == EADDRINUSE)
        fprintf(stderr, "(another program, perhaps another paramserver, uses this port: stop "
                        "it or choose another port with --bind tcp://*:PORT)\n");
    else if (e == EADDRNOTAVAIL || e == ENODEV)
        fprintf(stderr, "(this machine has no such address or interface: use tcp://*:PORT "
                        "for all interfaces, or one of `ip -brief addr`)\n");
    else
        fprintf(stderr, "(--bind takes a ZeroMQ endpoint such as tcp://*:5555 or "
                        "tcp://192.168.1.10:5555)\n");
}

/* Plain TCP: the server's PAIR bound in-process, the gate's STREAM socket
 * listening. */
static int s_listen_gate(server_t *s)
{
    char inner[64];
    snprintf(inner, sizeof inner, "inproc://paramserver-gate-%p", (void *)s);
    int zero = 0;
    s->sock = zmq_socket(s->ctx, ZMQ_PAIR);
    if (!s->sock || SETOPT(s->sock, ZMQ_SNDHWM, zero) != 0 ||
        SETOPT(s->sock, ZMQ_RCVHWM, zero) != 0)
        return -1;
    if (zmq_bind(s->sock, inner) != 0 ||
        !(s->gate = gate_new(s->ctx, s->o->bind, inner, 2 * s->o->workers + 64,
                             wire_max_message(s->model->nparams)))) {
        s_bind_error(s->o->bind, errno);
        return -1;
    }
    return 0;
}

/* A ROUTER on the endpoint, with CurveZMQ when asked. */
static int s_listen_router(server_t *s)
{
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    /* ZMQ_MAXMSGSIZE bounds a frame; a few replies may queue toward a peer
     * that does not read them (SNDHWM), then sends fail. */
    int64_t maxmsg = wire_max_message(s->model->nparams);
    int linger = 2000, mandatory = 1, sndhwm = 8;
    if (!s->sock || SETOPT(s->sock, ZMQ_MAXMSGSIZE, maxmsg) != 0 ||
        SETOPT(s->sock, ZMQ_LINGER, linger) != 0 ||
        SETOPT(s->sock, ZMQ_ROUTER_MANDATORY, mandatory) != 0 ||
        SETOPT(s->sock, ZMQ_SNDHWM, sndhwm) != 0)
        return -1;
    if (s->o->curve_secret && s_curve(s) != 0)
        return -1;
    if (zmq_bind(s->sock, s->o->bind) != 0) {
        s_bind_error(s->o->bind, errno);
        return -1;
    }
    return 0;
}

int transport_listen(server_t *s)
{
    /* czmq's context (signals stay ours). */
    zsys_handler_set(NULL);
    s->ctx = zsys_init();
    if (!s->ctx) {
        fprintf(stderr, "error: cannot start ZeroMQ: %s\n", zmq_strerror(errno));
        return -1;
    }
    int rc = !s->o->curve_secret && strncmp(s->o->bind, "tcp://", 6) == 0 ? s_listen_gate(s)
                                                                          : s_listen_router(s);
    if (rc != 0)
        return -1;
    char last[256];
    size_t len = sizeof last;
    if (s->gate)
        snprintf(last, sizeof last, "%s", gate_endpoint(s->gate));
    else if (zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, last, &len) != 0)
        snprintf(last, sizeof last, "%s", s->o->bind);
    snprintf(s->endpoint, sizeof s->endpoint, "%s", last);
    srv_log(s, "listening on %s for %d workers (mode %s)", last, s->o->workers,
            server_mode_name(s->o->mode));
    return 0;
}

int transport_wait(server_t *s, int timeout_ms)
{
    zmq_pollitem_t items[5] = {{s->sock, 0, ZMQ_POLLIN, 0}};
    int n = 1;
    if (s->link)
        items[n++] = (zmq_pollitem_t){s->link, 0, ZMQ_POLLIN, 0};
    if (s->gate) {
        items[n++] = (zmq_pollitem_t){NULL, gate_fd(s->gate), ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t){gate_inner(s->gate), 0, ZMQ_POLLIN, 0};
    }
    if (s->zap)
        items[n++] = (zmq_pollitem_t){s->zap, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(items, n, timeout_ms) < 0 && errno != EINTR) {
        fprintf(stderr, "error: zmq_poll: %s\n", zmq_strerror(errno));
        return -1;
    }
    s_zap_serve(s);
    transport_flush(s);
    return 0;
}

void transport_flush(server_t *s)
{
    if (s->gate)
        gate_pump(s->gate);
}

int transport_connected(server_t *s, const wire_peer_t *peer)
{
    if (peer->len == 0)
        return 0; /* none since a --resume */
    if (s->gate)
        return gate_connected(s->gate, peer->id, peer->len);
    /* On a ROUTER, a probe that the worker drops (an Ack to no request it
     * made) cannot be queued to a peer that disconnected
     * (ZMQ_ROUTER_MANDATORY: EHOSTUNREACH, or EAGAIN while its pipe is
     * being torn down). */
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Ack ack = PS__ACK__INIT;
    ack.version = s->version;
    env.body_case = PS__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    env.request_id = UINT64_MAX;
    return wire_send(s->sock, peer, &env, NULL, ZMQ_DONTWAIT) >= 0;
}

void transport_close(server_t *s)
{
    transport_flush(s); /* the last replies onto their connections */
    if (s->sock)
        zmq_close(s->sock);
    s->sock = NULL;
    gate_destroy(&s->gate);
    if (s->zap)
        zmq_close(s->zap);
    s->zap = NULL;
    zcertstore_destroy(&s->allowed);
    /* The context is czmq's: it ends it at exit. */
}
