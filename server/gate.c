/* gate: ZMTP 3.0 (NULL mechanism) on a STREAM socket, with bounds; see gate.h.
 *
 * ZMTP 3.0 (rfc.zeromq.org/spec/23) as used here: each side sends a 64-byte
 * greeting (signature FF 00*7 01 7F, version 3.0, mechanism "NULL", as-server,
 * filler), then a READY command carrying its Socket-Type; then frames, each
 * a flags byte (1 MORE, 2 LONG, 4 COMMAND), a size (1 byte, or 8 bytes big
 * endian when LONG) and the body. */
#include "gate.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "wire.h"

enum { F_MORE = 1, F_LONG = 2, F_COMMAND = 4 };
enum { GREETING = 64, MAX_COMMAND = 4096, MAX_ID = 16 };
/* What a connection is reading. */
enum { S_GREETING, S_HEAD, S_BODY };

typedef struct {
    int used;
    unsigned char id[MAX_ID]; /* the STREAM socket's id for it */
    size_t idlen;
    int state, ready;           /* ready: its READY came */
    unsigned char buf[MAX_COMMAND]; /* greeting, frame head or command body */
    size_t have, want;          /* bytes in buf, bytes the current part needs */
    int flags;                  /* of the frame being read */
    zmq_msg_t frame[GATE_MAX_FRAMES]; /* frames of the message being read */
    int nframes;
    size_t msg_bytes;           /* bytes of that message so far */
} conn_t;

struct gate {
    void *outer, *inner;
    conn_t *conn;
    int nconn;             /* connections it accepts at once */
    uint32_t last_id;      /* the newest connection's number (see s_from_outer) */
    int seen_one;          /* last_id is set */
    long refused;
};

static const unsigned char s_greeting[GREETING] = {
    0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0, 'N', 'U', 'L', 'L'};

static conn_t *s_find(const gate_t *g, const void *id, size_t len)
{
    for (int i = 0; i < g->nconn; i++)
        if (g->conn[i].used && g->conn[i].idlen == len && memcmp(g->conn[i].id, id, len) == 0)
            return (conn_t *)&g->conn[i];
    return NULL;
}

static void s_reset_message(conn_t *c)
{
    for (int i = 0; i < c->nframes; i++)
        zmq_msg_close(&c->frame[i]);
    c->nframes = 0;
    c->msg_bytes = 0;
}

/* Sends raw bytes on a connection; 0 or -1. */
static int s_raw(gate_t *g, const unsigned char *id, size_t idlen, const void *data, size_t n)
{
    if (zmq_send(g->outer, id, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    return zmq_send(g->outer, data, n, ZMQ_DONTWAIT) < 0 ? -1 : 0;
}

/* Closes a connection (an empty message to a STREAM socket does) and forgets
 * it. */
static void s_close(gate_t *g, conn_t *c, int refused)
{
    s_raw(g, c->id, c->idlen, NULL, 0);
    s_reset_message(c);
    c->used = 0;
    g->refused += refused;
}

/* A peer's READY: "READY", then properties (name length, name, 4-byte value
 * length, value); its Socket-Type must be one that talks to a ROUTER. */
static int s_check_ready(const unsigned char *b, size_t n)
{
    if (n < 6 || b[0] != 5 || memcmp(b + 1, "READY", 5) != 0)
        return -1;
    size_t p = 6;
    int ok = 0;
    while (p < n) {
        size_t nl = b[p++];
        if (n - p < nl + 4)
            return -1;
        const unsigned char *name = b + p;
        p += nl;
        size_t vl = (size_t)b[p] << 24 | (size_t)b[p + 1] << 16 | (size_t)b[p + 2] << 8 | b[p + 3];
        p += 4;
        if (n - p < vl)
            return -1;
        if (nl == 11 && memcmp(name, "Socket-Type", 11) == 0)
            ok = (vl == 6 && memcmp(b + p, "DEALER", 6) == 0) ||
                 (vl == 3 && memcmp(b + p, "REQ", 3) == 0);
        p += vl;
    }
    return ok ? 0 : -1;
}

/* Hands a complete message to the server: [id][frames...]. */
static void s_deliver(gate_t *g, conn_t *c)
{
    zmq_send(g->inner, c->id, c->idlen, ZMQ_SNDMORE);
    for (int i = 0; i < c->nframes; i++) {
        zmq_msg_send(&c->frame[i], g->inner, i + 1 < c->nframes ? ZMQ_SNDMORE : 0);
        zmq_msg_close(&c->frame[i]);
    }
    c->nframes = 0;
    c->msg_bytes = 0;
}

/* The frame head in c->buf is complete: checks it and sets up its body.
 * 0, or -1 when the connection breaks a limit. */
static int s_head(conn_t *c)
{
    uint64_t size = 0;
    if (c->flags & F_LONG)
        for (int i = 1; i < 9; i++)
            size = size << 8 | c->buf[i];
    else
        size = c->buf[1];
    c->have = 0;
    c->state = S_BODY;
    if (c->flags & F_COMMAND) {
        if (size > MAX_COMMAND)
            return -1;
        c->want = (size_t)size;
        return 0;
    }
    if (!c->ready || c->nframes >= GATE_MAX_FRAMES ||
        size > (uint64_t)WIRE_MAX_MESSAGE - c->msg_bytes)
        return -1;
    if (zmq_msg_init_size(&c->frame[c->nframes], (size_t)size) != 0)
        return -1;
    c->nframes++;
    c->msg_bytes += (size_t)size;
    c->want = (size_t)size;
    return 0;
}

/* A frame's body is complete. 0, or -1 to close the connection. */
static int s_body_done(gate_t *g, conn_t *c)
{
    size_t size = c->want;
    c->state = S_HEAD;
    c->have = 0;
    c->want = 1;
    if (c->flags & F_COMMAND) {
        if (c->ready)
            return 0; /* PING and the like after the handshake: not used here */
        if (s_check_ready(c->buf, size) != 0)
            return -1;
        c->ready = 1;
        return 0;
    }
    if (!(c->flags & F_MORE))
        s_deliver(g, c);
    return 0;
}

/* Feeds bytes that arrived on a connection through its parser. 0, or -1 to
 * close it. */
static int s_feed(gate_t *g, conn_t *c, const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (c->state == S_BODY && !(c->flags & F_COMMAND)) {
            zmq_msg_t *f = &c->frame[c->nframes - 1];
            size_t k = c->want - c->have < n ? c->want - c->have : n;
            memcpy((unsigned char *)zmq_msg_data(f) + c->have, p, k);
            c->have += k;
            p += k;
            n -= k;
        } else {
            size_t k = c->want - c->have < n ? c->want - c->have : n;
            memcpy(c->buf + c->have, p, k);
            c->have += k;
            p += k;
            n -= k;
        }
        if (c->have < c->want)
            continue;
        switch (c->state) {
        case S_GREETING:
            if (c->want == 10) { /* the signature: answer with the whole greeting */
                if (c->buf[0] != 0xff || !(c->buf[9] & 1) ||
                    s_raw(g, c->id, c->idlen, s_greeting, GREETING) != 0)
                    return -1;
                c->want = GREETING;
                break;
            }
            if (c->buf[10] < 3 || memcmp(c->buf + 12, "NULL", 5) != 0)
                return -1; /* ZMTP before 3.0, or another mechanism */
            static const unsigned char ready[] = {
                F_COMMAND, 28, 5, 'R', 'E', 'A', 'D', 'Y', 11, 'S', 'o', 'c', 'k', 'e', 't', '-',
                'T', 'y', 'p', 'e', 0, 0, 0, 6, 'R', 'O', 'U', 'T', 'E', 'R'};
            if (s_raw(g, c->id, c->idlen, ready, sizeof ready) != 0)
                return -1;
            c->state = S_HEAD;
            c->have = 0;
            c->want = 1;
            break;
        case S_HEAD:
            if (c->want == 1) {
                c->flags = c->buf[0];
                if (c->flags & ~(F_MORE | F_LONG | F_COMMAND) ||
                    (c->flags & F_COMMAND && c->flags & F_MORE) ||
                    (!c->ready && !(c->flags & F_COMMAND)))
                    return -1;
                c->want = c->flags & F_LONG ? 9 : 2;
                break;
            }
            if (s_head(c) != 0)
                return -1;
            if (c->want == 0 && s_body_done(g, c) != 0)
                return -1;
            break;
        case S_BODY:
            if (s_body_done(g, c) != 0)
                return -1;
            break;
        }
    }
    return 0;
}

/* The number in a STREAM socket's connection id (a zero byte, then a
 * 32-bit counter that grows with every connection, from a random start). */
static uint32_t s_id_number(const unsigned char *id, size_t len)
{
    if (len != 5 || id[0] != 0)
        return 0;
    return (uint32_t)id[1] << 24 | (uint32_t)id[2] << 16 | (uint32_t)id[3] << 8 | id[4];
}

/* One message from the STREAM socket: [id][bytes]; empty bytes announce a
 * new connection, or the end of one (then the id is not a new one: an end
 * may also come for a connection this side closed). */
static void s_from_outer(gate_t *g, zmq_msg_t *id, zmq_msg_t *data)
{
    size_t len = zmq_msg_size(id);
    const unsigned char *idb = zmq_msg_data(id);
    conn_t *c = s_find(g, idb, len);
    if (zmq_msg_size(data) > 0) {
        if (c && s_feed(g, c, zmq_msg_data(data), zmq_msg_size(data)) != 0)
            s_close(g, c, 1);
        return;
    }
    if (c) { /* it went away */
        s_reset_message(c);
        c->used = 0;
        return;
    }
    /* Serial-number order: the counter starts at a random value and may
     * wrap. */
    uint32_t number = s_id_number(idb, len);
    if ((g->seen_one && (int32_t)(number - g->last_id) <= 0) || len > MAX_ID)
        return;
    g->last_id = number;
    g->seen_one = 1;
    for (int i = 0; i < g->nconn; i++)
        if (!g->conn[i].used) {
            c = &g->conn[i];
            memset(c, 0, sizeof *c);
            c->used = 1;
            memcpy(c->id, idb, len);
            c->idlen = len;
            c->state = S_GREETING;
            c->want = 10;
            return;
        }
    g->refused++; /* too many connections: this one is closed */
    s_raw(g, idb, len, NULL, 0);
}

/* One reply from the server: [id][envelope][tensor?], framed onto its
 * connection. A reply to a connection that is gone is dropped; one that
 * cannot be queued (the peer does not read: the STREAM socket's send
 * high-water mark) closes that connection, as the frames of a message must
 * not be split. */
static void s_from_inner(gate_t *g, zmq_msg_t *id)
{
    conn_t *c = s_find(g, zmq_msg_data(id), zmq_msg_size(id));
    int more = 1, ok = c && c->ready;
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, g->inner, 0) < 0) {
            zmq_msg_close(&f);
            return;
        }
        more = zmq_msg_more(&f);
        size_t n = zmq_msg_size(&f);
        unsigned char head[9];
        head[0] = (unsigned char)((more ? F_MORE : 0) | (n > 255 ? F_LONG : 0));
        if (n > 255)
            for (int i = 0; i < 8; i++)
                head[1 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        else
            head[1] = (unsigned char)n;
        if (ok && (s_raw(g, c->id, c->idlen, head, n > 255 ? 9 : 2) != 0 ||
                   zmq_send(g->outer, c->id, c->idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
                   zmq_msg_send(&f, g->outer, ZMQ_DONTWAIT) < 0)) {
            fprintf(stderr, "gate: a peer does not read its replies; closing its connection\n");
            s_close(g, c, 1);
            ok = 0;
        }
        zmq_msg_close(&f);
    }
}

int gate_pump(gate_t *g)
{
    int moved = 0;
    for (;;) {
        zmq_msg_t id, data;
        zmq_msg_init(&id);
        zmq_msg_init(&data);
        int got = 0;
        if (zmq_msg_recv(&id, g->outer, ZMQ_DONTWAIT) >= 0) {
            if (zmq_msg_more(&id) && zmq_msg_recv(&data, g->outer, 0) >= 0)
                s_from_outer(g, &id, &data);
            got = 1;
        } else if (zmq_msg_recv(&id, g->inner, ZMQ_DONTWAIT) >= 0) {
            if (zmq_msg_more(&id))
                s_from_inner(g, &id);
            got = 1;
        }
        zmq_msg_close(&id);
        zmq_msg_close(&data);
        if (!got)
            return moved;
        moved++;
    }
}

gate_t *gate_new(void *ctx, const char *endpoint, const char *inner, int max_conns)
{
    gate_t *g = calloc(1, sizeof *g);
    if (g && !(g->conn = calloc((size_t)max_conns, sizeof *g->conn))) {
        free(g);
        g = NULL;
    }
    if (!g) {
        errno = ENOMEM;
        return NULL;
    }
    g->nconn = max_conns;
    g->outer = zmq_socket(ctx, ZMQ_STREAM);
    g->inner = zmq_socket(ctx, ZMQ_PAIR);
    /* The pair is in-process and drained every turn of the loop: no limit
     * that could drop a message. A few replies per connection may queue
     * toward a peer (SNDHWM counts the 2 to 4 pieces of each). */
    int zero = 0, linger = 2000, sndhwm = 16, rcvhwm = GATE_RCVHWM;
    zmq_setsockopt(g->inner, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(g->inner, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(g->outer, ZMQ_SNDHWM, &sndhwm, sizeof sndhwm);
    zmq_setsockopt(g->outer, ZMQ_RCVHWM, &rcvhwm, sizeof rcvhwm);
    zmq_setsockopt(g->outer, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(g->inner, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(g->outer, endpoint) != 0 || zmq_connect(g->inner, inner) != 0) {
        int e = errno;
        gate_destroy(&g);
        errno = e;
        return NULL;
    }
    return g;
}

void *gate_outer(gate_t *g)
{
    return g->outer;
}

void *gate_inner(gate_t *g)
{
    return g->inner;
}

int gate_connected(const gate_t *g, const void *id, size_t len)
{
    return s_find(g, id, len) != NULL;
}

long gate_refused(const gate_t *g)
{
    return g->refused;
}

void gate_destroy(gate_t **pg)
{
    if (!pg || !*pg)
        return;
    gate_t *g = *pg;
    for (int i = 0; g->conn && i < g->nconn; i++)
        s_reset_message(&g->conn[i]);
    free(g->conn);
    zmq_close(g->inner);
    zmq_close(g->outer);
    free(g);
    *pg = NULL;
}
