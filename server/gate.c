/* gate: ZMTP 3.0 (NULL mechanism) on plain TCP sockets, with bounds; see
 * gate.h.
 *
 * ZMTP 3.0 (rfc.zeromq.org/spec/23) as used here: each side sends a 64-byte
 * greeting (signature FF 00*7 01 7F, version 3.0, mechanism "NULL", as-server,
 * filler), then a READY command carrying its Socket-Type; then frames, each
 * a flags byte (1 MORE, 2 LONG, 4 COMMAND), a size (1 byte, or 8 bytes big
 * endian when LONG) and the body. Of ZMTP 3.1 (rfc.zeromq.org/spec/37) it
 * answers PING with PONG (libzmq's heartbeats); it says 3.0 in its greeting.
 *
 * The sockets are non-blocking and watched by one epoll descriptor (level
 * triggered), which the server polls. A frame body of 16 KB or more is
 * received straight into its zmq_msg_t; everything else through a 16 KB
 * buffer on the stack. Replies are written with sendmsg from the frames the
 * server sent (no copy); what the kernel does not take waits in the
 * connection's queue (GATE_OUT_FRAMES) and goes out when the socket is
 * writable. */
#include "gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <zmq.h>

#include "clock.h"

enum { F_MORE = 1, F_LONG = 2, F_COMMAND = 4 };
/* A connection's id: 0, then a 64-bit counter (ZeroMQ's ROUTER uses 32 bits,
 * which wrap after 2^32 connections: a new connection could then take the
 * id of an old one that the server still holds for a worker). */
enum { GREETING = 64, MAX_COMMAND = 4096, ID_LEN = 9, READ_BUF = 16384 };
/* What a connection is reading. */
enum { S_GREETING, S_HEAD, S_BODY };
/* Bytes read from one connection in one pump before the others' turn. */
#define READ_BUDGET ((size_t)4 << 20)
#define LISTENER UINT32_MAX /* the listening socket's tag in the epoll set */
/* A closing that a peer can cause at will is logged at most once per this
 * many seconds (with a count of the others), so a flood cannot fill the log. */
#define LOG_WINDOW 10.0
/* Connections accepted (or refused) per pump at most: a storm of them must
 * not keep the server's loop in accept (the rest wait for the next pump). */
#define ACCEPT_BURST 64

/* Bytes queued toward a connection: `pre` (a frame head or a handshake
 * piece), then `body` (a frame the server sent; empty for handshakes). */
typedef struct {
    unsigned char pre[GREETING];
    size_t prelen;
    zmq_msg_t body;
} out_t;

typedef struct {
    int used, fd;
    unsigned char id[ID_LEN];         /* what the server sees: 0, then a counter */
    int state, ready;                 /* ready: its READY came */
    unsigned char buf[MAX_COMMAND];   /* greeting, frame head or command body */
    size_t have, want;                /* bytes in buf, bytes the current part needs */
    int flags;                        /* of the frame being read */
    zmq_msg_t frame[GATE_MAX_FRAMES]; /* frames of the message being read */
    int nframes;
    size_t msg_bytes;           /* bytes of that message so far */
    double last_in;             /* when a byte last came */
    out_t out[GATE_OUT_FRAMES]; /* a ring: out_n entries from out_first */
    int out_first, out_n;
    size_t out_done; /* bytes of the first entry already written */
    int watch_out;   /* EPOLLOUT is in its epoll events */
} conn_t;

struct gate {
    int lfd, ep; /* listening socket, epoll descriptor */
    void *inner;
    conn_t *conn;
    int nconn;          /* connections it accepts at once */
    uint64_t max_bytes; /* of one message (its frames together) */
    uint64_t next_id;
    long refused, delivered;
    double stall, next_check; /* GATE_STALL_SECONDS; when to look for stalls */
    int accept_paused;        /* out of descriptors: not accepting until accept_at */
    double accept_at;         /* when to accept again */
    double logged_at;         /* when the last "does not read" line was logged */
    long unlogged;            /* such closings since then, not logged */
    char endpoint[128];
};

static const unsigned char s_greeting[GREETING] = {0xff, 0,    0, 0, 0,   0,   0,   0,
                                                   1,    0x7f, 3, 0, 'N', 'U', 'L', 'L'};
static const unsigned char s_ready[] = {F_COMMAND, 28,  5,   'R', 'E', 'A', 'D', 'Y', 11,  'S',
                                        'o',       'c', 'k', 'e', 't', '-', 'T', 'y', 'p', 'e',
                                        0,         0,   0,   6,   'R', 'O', 'U', 'T', 'E', 'R'};

static conn_t *s_find(const gate_t *g, const void *id, size_t len)
{
    for (int i = 0; i < g->nconn; i++)
        if (g->conn[i].used && len == ID_LEN && memcmp(g->conn[i].id, id, len) == 0)
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

/* Closes a connection and forgets it (and what was queued toward it). */
static void s_close(gate_t *g, conn_t *c, int refused)
{
    close(c->fd); /* also leaves the epoll set */
    s_reset_message(c);
    for (; c->out_n > 0; c->out_n--, c->out_first = (c->out_first + 1) % GATE_OUT_FRAMES)
        zmq_msg_close(&c->out[c->out_first].body);
    c->used = 0;
    g->refused += refused;
}

/* Watches the connection for room to write, or stops. 0, or -1 when epoll
 * refuses (the connection could not be served: close it). */
static int s_watch_out(gate_t *g, conn_t *c, int on)
{
    if (c->watch_out == on)
        return 0;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)(c - g->conn)};
    if (epoll_ctl(g->ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        return -1;
    c->watch_out = on;
    return 0;
}

/* Writes what is queued toward a connection, as far as the kernel takes it.
 * 0, or -1 when the connection is broken. */
static int s_flush(gate_t *g, conn_t *c)
{
    while (c->out_n > 0) {
        struct iovec iov[2 * GATE_OUT_FRAMES];
        int k = 0;
        size_t skip = c->out_done;
        for (int i = 0; i < c->out_n; i++) {
            out_t *e = &c->out[(c->out_first + i) % GATE_OUT_FRAMES];
            unsigned char *base[2] = {e->pre, zmq_msg_data(&e->body)};
            size_t len[2] = {e->prelen, zmq_msg_size(&e->body)};
            for (int j = 0; j < 2; j++) {
                if (skip >= len[j]) {
                    skip -= len[j];
                    continue;
                }
                iov[k++] = (struct iovec){base[j] + skip, len[j] - skip};
                skip = 0;
            }
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)k};
        ssize_t n = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0)
            return -1;
        size_t left = c->out_done + (size_t)n;
        while (c->out_n > 0) {
            out_t *e = &c->out[c->out_first];
            size_t total = e->prelen + zmq_msg_size(&e->body);
            if (left < total)
                break;
            left -= total;
            zmq_msg_close(&e->body);
            c->out_first = (c->out_first + 1) % GATE_OUT_FRAMES;
            c->out_n--;
        }
        c->out_done = left;
    }
    return s_watch_out(g, c, c->out_n > 0);
}

/* Queues `pre` then `body` (taken over; NULL: none) toward a connection.
 * 0, or -1 when its queue is full (body is then closed). */
static int s_queue(conn_t *c, const void *pre, size_t prelen, zmq_msg_t *body)
{
    if (c->out_n == GATE_OUT_FRAMES) {
        if (body)
            zmq_msg_close(body);
        return -1;
    }
    out_t *e = &c->out[(c->out_first + c->out_n) % GATE_OUT_FRAMES];
    memcpy(e->pre, pre, prelen);
    e->prelen = prelen;
    zmq_msg_init(&e->body);
    if (body) {
        zmq_msg_move(&e->body, body);
        zmq_msg_close(body);
    }
    c->out_n++;
    return 0;
}

/* Sends a handshake piece. 0 or -1. */
static int s_raw(gate_t *g, conn_t *c, const void *data, size_t n)
{
    return s_queue(c, data, n, NULL) == 0 ? s_flush(g, c) : -1;
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

/* A command after the handshake (c->buf, n bytes). A ZMTP 3.1 PING (name,
 * 2-byte TTL, up to 16 bytes of context) is answered with a PONG carrying
 * its context, as libzmq does: a peer with heartbeats on (ZMQ_HEARTBEAT_IVL
 * and _TIMEOUT) drops a connection whose other end never answers. Others
 * are skipped. 0, or -1 when the PONG cannot be queued (a peer that sends
 * PINGs and reads nothing) or written. */
static int s_command(gate_t *g, conn_t *c, size_t n)
{
    if (n < 7 || n > 7 + 16 || memcmp(c->buf, "\4PING", 5) != 0)
        return 0;
    unsigned char pong[2 + 5 + 16] = {F_COMMAND, (unsigned char)(n - 2), 4, 'P', 'O', 'N', 'G'};
    memcpy(pong + 7, c->buf + 7, n - 7);
    return s_raw(g, c, pong, n);
}

/* Hands a complete message to the server: [id][frames...]. The pair has no
 * high-water mark, so these sends do not fail or wait. */
static void s_deliver(gate_t *g, conn_t *c)
{
    zmq_send(g->inner, c->id, ID_LEN, ZMQ_SNDMORE);
    for (int i = 0; i < c->nframes; i++) {
        zmq_msg_send(&c->frame[i], g->inner, i + 1 < c->nframes ? ZMQ_SNDMORE : 0);
        zmq_msg_close(&c->frame[i]);
    }
    c->nframes = 0;
    c->msg_bytes = 0;
    g->delivered++;
}

/* The frame head in c->buf is complete: checks it and sets up its body.
 * 0, or -1 when the connection breaks a limit. */
static int s_head(const gate_t *g, conn_t *c)
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
    if (!c->ready || c->nframes >= GATE_MAX_FRAMES || size > g->max_bytes - c->msg_bytes)
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
            return s_command(g, c, size);
        if (s_check_ready(c->buf, size) != 0)
            return -1;
        c->ready = 1;
        return 0;
    }
    if (!(c->flags & F_MORE))
        s_deliver(g, c);
    return 0;
}

/* The part being read (c->want bytes) is complete. 0, or -1 to close. */
static int s_part_done(gate_t *g, conn_t *c)
{
    switch (c->state) {
    case S_GREETING:
        if (c->want == 10) { /* the signature: answer with the whole greeting */
            if (c->buf[0] != 0xff || !(c->buf[9] & 1) || s_raw(g, c, s_greeting, GREETING) != 0)
                return -1;
            c->want = GREETING;
            return 0;
        }
        if (c->buf[10] < 3 || memcmp(c->buf + 12, "NULL", 5) != 0)
            return -1; /* ZMTP before 3.0, or another mechanism */
        if (s_raw(g, c, s_ready, sizeof s_ready) != 0)
            return -1;
        c->state = S_HEAD;
        c->have = 0;
        c->want = 1;
        return 0;
    case S_HEAD:
        if (c->want == 1) {
            c->flags = c->buf[0];
            if (c->flags & ~(F_MORE | F_LONG | F_COMMAND) ||
                (c->flags & F_COMMAND && c->flags & F_MORE) ||
                (!c->ready && !(c->flags & F_COMMAND)))
                return -1;
            c->want = c->flags & F_LONG ? 9 : 2;
            return 0;
        }
        if (s_head(g, c) != 0)
            return -1;
        return c->want == 0 ? s_body_done(g, c) : 0;
    default: return s_body_done(g, c);
    }
}

/* Is the connection reading a data frame's body? */
static int s_in_data(const conn_t *c)
{
    return c->state == S_BODY && !(c->flags & F_COMMAND);
}

/* Feeds bytes that arrived on a connection through its parser. 0, or -1 to
 * close it. */
static int s_feed(gate_t *g, conn_t *c, const unsigned char *p, size_t n)
{
    while (n > 0) {
        unsigned char *to = s_in_data(c) ? zmq_msg_data(&c->frame[c->nframes - 1]) : c->buf;
        size_t k = c->want - c->have < n ? c->want - c->have : n;
        memcpy(to + c->have, p, k);
        c->have += k;
        p += k;
        n -= k;
        if (c->have == c->want && s_part_done(g, c) != 0)
            return -1;
    }
    return 0;
}

/* Reads what a connection sent until its socket has nothing more, one
 * message went to the server, or READ_BUDGET bytes came (the other
 * connections' turn). A large body is received straight into its frame.
 * Closes the connection when the peer went away or broke the rules. (Small
 * messages that come together in one read all go to the server: at most
 * READ_BUF bytes' worth per call.) */
static void s_read(gate_t *g, conn_t *c)
{
    long delivered = g->delivered;
    size_t got = 0;
    unsigned char tmp[READ_BUF];
    while (c->used && g->delivered == delivered && got < READ_BUDGET) {
        int direct = s_in_data(c) && c->want - c->have >= READ_BUF;
        unsigned char *to =
            direct ? (unsigned char *)zmq_msg_data(&c->frame[c->nframes - 1]) + c->have : tmp;
        ssize_t n = recv(c->fd, to, direct ? c->want - c->have : READ_BUF, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) { /* gone (end of stream, reset) */
            s_close(g, c, 0);
            return;
        }
        got += (size_t)n;
        c->last_in = clock_now();
        int bad;
        if (direct) {
            c->have += (size_t)n;
            bad = c->have == c->want && s_body_done(g, c) != 0;
        } else {
            bad = s_feed(g, c, tmp, (size_t)n) != 0;
        }
        if (bad) {
            s_close(g, c, 1);
            return;
        }
    }
}

/* A free connection slot, or NULL. */
static conn_t *s_free_slot(gate_t *g)
{
    for (int i = 0; i < g->nconn; i++)
        if (!g->conn[i].used)
            return &g->conn[i];
    return NULL;
}

/* Takes a connected socket on as a new connection in the free slot c. 0, or
 * -1 when epoll refuses it (the caller then closes fd). */
static int s_adopt(gate_t *g, conn_t *c, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)(c - g->conn)};
    if (epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -1;
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->fd = fd;
    uint64_t id = g->next_id++;
    for (int i = 0; i < 8; i++)
        c->id[1 + i] = (unsigned char)(id >> (56 - 8 * i)); /* c->id[0] is 0 */
    c->state = S_GREETING;
    c->want = 10;
    c->last_in = clock_now();
    return 0;
}

/* Sets a new connection's socket up: no Nagle delay (replies are written
 * whole), and a peer whose host vanished (powered off, cable cut: no FIN,
 * no reset) is given up on in about a minute, whether the connection is
 * idle (keepalive probes: 30 s, then 3 more 10 s apart) or has replies in
 * flight (TCP_USER_TIMEOUT) rather than hold its slot for ever. 0 or -1. */
static int s_tune(int fd)
{
    static const struct {
        int level, name, value;
    } opt[] = {{IPPROTO_TCP, TCP_NODELAY, 1},   {SOL_SOCKET, SO_KEEPALIVE, 1},
               {IPPROTO_TCP, TCP_KEEPIDLE, 30}, {IPPROTO_TCP, TCP_KEEPINTVL, 10},
               {IPPROTO_TCP, TCP_KEEPCNT, 3},   {IPPROTO_TCP, TCP_USER_TIMEOUT, 60000}};
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++)
        if (setsockopt(fd, opt[i].level, opt[i].name, &opt[i].value, sizeof opt[i].value) != 0)
            return -1;
    return 0;
}

/* Accepts the waiting connections (ACCEPT_BURST at most); past max_conns
 * each is closed at once. Out of descriptors, it stops accepting for a
 * second rather than spin on a listening socket that stays readable. */
static void s_accept(gate_t *g)
{
    for (int n = 0; n < ACCEPT_BURST; n++) {
        int fd = accept4(g->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
            continue;
        if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (fd < 0) {
            fprintf(stderr,
                    "gate: cannot accept a connection: %s (raise the limit on open "
                    "files, ulimit -n); trying again in 1 s\n",
                    strerror(errno));
            struct epoll_event ev = {.events = 0, .data.u32 = LISTENER};
            epoll_ctl(g->ep, EPOLL_CTL_MOD, g->lfd, &ev);
            g->accept_paused = 1;
            g->accept_at = clock_now() + 1.0;
            return;
        }
        conn_t *c = s_free_slot(g);
        g->refused += !c; /* too many connections: closed at once */
        if (!c || s_tune(fd) != 0 || s_adopt(g, c, fd) != 0)
            close(fd);
    }
}

/* Logs that a peer's connection is closed because it does not read its
 * replies: at most once per LOG_WINDOW, saying how many more there were. */
static void s_log_unread(gate_t *g)
{
    double now = clock_now();
    if (g->logged_at > 0 && now - g->logged_at < LOG_WINDOW) {
        g->unlogged++;
        return;
    }
    if (g->unlogged > 0)
        fprintf(stderr,
                "gate: a peer does not read its replies; closing its connection "
                "(and %ld more such in the last %.0f s)\n",
                g->unlogged, now - g->logged_at);
    else
        fprintf(stderr, "gate: a peer does not read its replies; closing its connection\n");
    g->logged_at = now;
    g->unlogged = 0;
}

/* One reply from the server: [id][envelope][tensor?], framed onto its
 * connection. A reply to a connection that is gone is dropped; one that
 * does not fit in the connection's queue (the peer does not read) closes
 * that connection, as the frames of a message must not be split. */
static void s_from_inner(gate_t *g, zmq_msg_t *id)
{
    conn_t *c = s_find(g, zmq_msg_data(id), zmq_msg_size(id));
    zmq_msg_t f[GATE_MAX_FRAMES];
    int nf = 0, more = 1, fits = 1;
    while (more) { /* inproc: the frames of a message are all there */
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, g->inner, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        more = zmq_msg_more(&m);
        if (nf < GATE_MAX_FRAMES) {
            zmq_msg_init(&f[nf]);
            zmq_msg_move(&f[nf++], &m);
        } else {
            fits = 0; /* the server sends 1 or 2 frames */
        }
        zmq_msg_close(&m);
    }
    if (c && c->ready && (!fits || c->out_n + nf > GATE_OUT_FRAMES)) {
        s_log_unread(g);
        s_close(g, c, 1);
    }
    for (int i = 0; i < nf; i++) {
        if (!c || !c->used || !c->ready) {
            zmq_msg_close(&f[i]);
            continue;
        }
        size_t n = zmq_msg_size(&f[i]);
        unsigned char head[9];
        head[0] = (unsigned char)((i + 1 < nf ? F_MORE : 0) | (n > 255 ? F_LONG : 0));
        if (n > 255)
            for (int j = 0; j < 8; j++)
                head[1 + j] = (unsigned char)((uint64_t)n >> (56 - 8 * j));
        else
            head[1] = (unsigned char)n;
        s_queue(c, head, n > 255 ? 9 : 2, &f[i]); /* room checked above */
    }
    if (c && c->used && c->ready && s_flush(g, c) != 0)
        s_close(g, c, 0);
}

/* Once a second: closes connections stalled in the middle of their
 * handshake (greeting or READY) or of a message, and accepts again a second
 * after running out of descriptors. */
static void s_check(gate_t *g, double now)
{
    g->next_check = now + 1.0;
    for (int i = 0; i < g->nconn; i++) {
        conn_t *c = &g->conn[i];
        int unfinished = !c->ready || c->state != S_HEAD || c->have > 0 || c->nframes > 0;
        if (c->used && unfinished && now - c->last_in > g->stall)
            s_close(g, c, 1);
    }
    if (g->accept_paused && now >= g->accept_at) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = LISTENER};
        if (epoll_ctl(g->ep, EPOLL_CTL_MOD, g->lfd, &ev) == 0)
            g->accept_paused = 0;
    }
}

int gate_pump(gate_t *g)
{
    struct epoll_event ev[64];
    int n = epoll_wait(g->ep, ev, 64, 0), moved = n > 0 ? n : 0;
    for (int i = 0; i < n; i++) {
        if (ev[i].data.u32 == LISTENER) {
            s_accept(g);
            continue;
        }
        conn_t *c = &g->conn[ev[i].data.u32];
        if (c->used && ev[i].events & EPOLLOUT && s_flush(g, c) != 0)
            s_close(g, c, 0);
        if (c->used && ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            s_read(g, c);
    }
    for (;;) {
        zmq_msg_t id;
        zmq_msg_init(&id);
        if (zmq_msg_recv(&id, g->inner, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            break;
        }
        if (zmq_msg_more(&id))
            s_from_inner(g, &id);
        zmq_msg_close(&id);
        moved++;
    }
    double now = clock_now();
    if (now >= g->next_check)
        s_check(g, now);
    return moved;
}

/* The address to listen on for HOST (see gate_new), port not set. 0, or -1
 * with errno ENODEV. */
static int s_resolve(const char *host, struct sockaddr_storage *sa, socklen_t *len)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
    memset(sa, 0, sizeof *sa);
    size_t hl = strlen(host);
    char inside[INET6_ADDRSTRLEN];
    *len = sizeof *v4;
    v4->sin_family = AF_INET;
    if (strcmp(host, "*") == 0) {
        v4->sin_addr.s_addr = htonl(INADDR_ANY);
        return 0;
    }
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1)
        return 0;
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof inside) {
        memcpy(inside, host + 1, hl - 2);
        inside[hl - 2] = '\0';
        *len = sizeof *v6;
        v6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, inside, &v6->sin6_addr) == 1)
            return 0;
        errno = ENODEV;
        return -1;
    }
    struct ifaddrs *ifs = NULL; /* an interface: its IPv4 address */
    int found = 0;
    if (getifaddrs(&ifs) == 0)
        for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next)
            if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET &&
                strcmp(i->ifa_name, host) == 0) {
                v4->sin_addr = ((struct sockaddr_in *)i->ifa_addr)->sin_addr;
                found = 1;
            }
    freeifaddrs(ifs);
    if (found)
        return 0;
    /* IPv4, as ZeroMQ resolves it without ZMQ_IPV6 (the workers' side):
     * "localhost" must not become ::1. */
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, NULL, &hints, &ai) == 0 && ai && ai->ai_addrlen <= sizeof *sa) {
        memcpy(sa, ai->ai_addr, ai->ai_addrlen);
        *len = ai->ai_addrlen;
        freeaddrinfo(ai);
        return 0;
    }
    if (ai)
        freeaddrinfo(ai);
    errno = ENODEV;
    return -1;
}

/* Opens the listening socket for "tcp://HOST:PORT" and writes the endpoint
 * it got into `out`. The descriptor, or -1 with errno set. */
static int s_listen(const char *endpoint, char *out, size_t outlen)
{
    if (strncmp(endpoint, "tcp://", 6) != 0) {
        errno = EINVAL;
        return -1;
    }
    const char *hp = endpoint + 6, *colon = strrchr(hp, ':');
    char host[256];
    if (!colon || colon == hp || (size_t)(colon - hp) >= sizeof host) {
        errno = EINVAL;
        return -1;
    }
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    /* PORT: * or 1 to 5 digits (no sign, no space: what strtol would let
     * through), at most 65535. */
    long port = 0;
    if (strcmp(colon + 1, "*") != 0) {
        size_t digits = strspn(colon + 1, "0123456789");
        if (digits == 0 || digits > 5 || colon[1 + digits] != '\0' ||
            (port = strtol(colon + 1, NULL, 10)) > 65535) {
            errno = EINVAL;
            return -1;
        }
    }
    struct sockaddr_storage sa;
    socklen_t len;
    if (s_resolve(host, &sa, &len) != 0)
        return -1;
    if (sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)port);
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return -1;
    /* As ZeroMQ does: a restarted server may bind while old connections
     * linger in TIME_WAIT. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 128) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, ip, sizeof ip);
        snprintf(out, outlen, "tcp://[%s]:%d", ip, ntohs(((struct sockaddr_in6 *)&sa)->sin6_port));
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, ip, sizeof ip);
        snprintf(out, outlen, "tcp://%s:%d", ip, ntohs(((struct sockaddr_in *)&sa)->sin_port));
    }
    return fd;
}

gate_t *gate_new(void *ctx, const char *endpoint, const char *inner, int max_conns,
                 int64_t max_bytes)
{
    if (max_conns < 1 || max_bytes < 1) {
        errno = EINVAL;
        return NULL;
    }
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
    g->max_bytes = (uint64_t)max_bytes;
    g->stall = GATE_STALL_SECONDS;
    g->next_id = 1;
    g->ep = g->lfd = -1;
    g->inner = zmq_socket(ctx, ZMQ_PAIR);
    /* The pair is in-process and drained every turn of the loop: no limit
     * that could drop a message (gate_pump bounds what it delivers). */
    int zero = 0;
    zmq_setsockopt(g->inner, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(g->inner, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(g->inner, ZMQ_LINGER, &zero, sizeof zero);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = LISTENER};
    if ((g->lfd = s_listen(endpoint, g->endpoint, sizeof g->endpoint)) < 0 ||
        (g->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        epoll_ctl(g->ep, EPOLL_CTL_ADD, g->lfd, &ev) != 0 || zmq_connect(g->inner, inner) != 0) {
        int e = errno;
        gate_destroy(&g);
        errno = e;
        return NULL;
    }
    return g;
}

int gate_fd(const gate_t *g)
{
    return g->ep;
}

void *gate_inner(gate_t *g)
{
    return g->inner;
}

const char *gate_endpoint(const gate_t *g)
{
    return g->endpoint;
}

int gate_connected(const gate_t *g, const void *id, size_t len)
{
    return s_find(g, id, len) != NULL;
}

long gate_refused(const gate_t *g)
{
    return g->refused;
}

void gate_set_stall(gate_t *g, double seconds)
{
    g->stall = seconds;
}

/* Writes what is queued toward the connections while they take it, for at
 * most 2 s (what ZeroMQ's linger gave): the last replies (a Done's Ack). */
static void s_linger(gate_t *g)
{
    struct pollfd *p = calloc((size_t)g->nconn, sizeof *p);
    int *which = calloc((size_t)g->nconn, sizeof *which);
    double end = clock_now() + 2.0;
    for (int n = 1; p && which && n > 0 && clock_now() < end;) {
        n = 0;
        for (int i = 0; i < g->nconn; i++)
            if (g->conn[i].used && g->conn[i].out_n > 0) {
                p[n] = (struct pollfd){.fd = g->conn[i].fd, .events = POLLOUT};
                which[n++] = i;
            }
        double left = end - clock_now(); /* may be past already: never wait forever */
        if (n > 0 && poll(p, (nfds_t)n, left > 0 ? (int)(1e3 * left) + 1 : 0) > 0)
            for (int k = 0; k < n; k++)
                if (p[k].revents && s_flush(g, &g->conn[which[k]]) != 0)
                    s_close(g, &g->conn[which[k]], 0);
    }
    free(p);
    free(which);
}

void gate_destroy(gate_t **pg)
{
    if (!pg || !*pg)
        return;
    gate_t *g = *pg;
    if (g->conn) {
        s_linger(g);
        for (int i = 0; i < g->nconn; i++)
            if (g->conn[i].used)
                s_close(g, &g->conn[i], 0);
    }
    free(g->conn);
    if (g->lfd >= 0)
        close(g->lfd);
    if (g->ep >= 0)
        close(g->ep);
    zmq_close(g->inner);
    free(g);
    *pg = NULL;
}
