/* test_gate: the gate (server/gate.c) alone, in this process: a gate on an
 * ephemeral loopback port, the server's inner PAIR played by the test, and
 * peers that are either real ZeroMQ DEALER sockets (interoperation, large
 * messages both ways, bytes compared) or raw TCP sockets speaking ZMTP by
 * hand (partial reads, and every way a hostile peer can break the bounds:
 * oversized messages, too many frames, too many connections, malformed
 * handshakes, stalls, replies never read). The gate runs in this thread, so
 * every wait pumps it, and every wait has a deadline. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "clock.h"
#include "gate.h"
#include "model.h"
#include "wire.h"

#define DEADLINE 10.0 /* seconds any one wait may take */

static const unsigned char s_greeting[64] = {0xff, 0,    0, 0, 0,   0,   0,   0,
                                             1,    0x7f, 3, 0, 'N', 'U', 'L', 'L'};

/* The test's side: ZeroMQ context, the gate and the server's PAIR. */
typedef struct {
    void *ctx, *pair;
    gate_t *g;
    int port;
} fix_t;

enum { MAX_CONNS = 3 }; /* the gates under test accept 3 connections */
/* ...and messages of a SimpleConvNet server (test_bound_by_model: smaller) */
#define S_MAX_MESSAGE wire_max_message(MODEL_NPARAMS)

static void s_open_max(fix_t *f, int max_conns, int64_t max_bytes)
{
    static int n;
    char inner[64];
    snprintf(inner, sizeof inner, "inproc://test-gate-%d", n++);
    f->ctx = zmq_ctx_new();
    f->pair = zmq_socket(f->ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(f->pair, inner), 0);
    f->g = gate_new(f->ctx, "tcp://127.0.0.1:*", inner, max_conns, max_bytes);
    assert_non_null(f->g);
    const char *ep = gate_endpoint(f->g);
    assert_true(strncmp(ep, "tcp://127.0.0.1:", 16) == 0);
    f->port = atoi(ep + 16);
    assert_true(f->port > 0);
}

static void s_open(fix_t *f, int max_conns)
{
    s_open_max(f, max_conns, S_MAX_MESSAGE);
}

static void s_close_fix(fix_t *f)
{
    gate_destroy(&f->g);
    assert_null(f->g);
    zmq_close(f->pair);
    zmq_ctx_term(f->ctx);
}

/* cmocka's setup and teardown: each test gets a fresh gate in *state. */
static int s_setup(void **state)
{
    static fix_t f;
    s_open(&f, MAX_CONNS);
    *state = &f;
    return 0;
}

static int s_teardown(void **state)
{
    s_close_fix(*state);
    return 0;
}

/* Pumps the gate for up to `ms` milliseconds (less when it has work). */
static void s_turn(fix_t *f, int ms)
{
    zmq_pollitem_t items[2] = {{NULL, gate_fd(f->g), ZMQ_POLLIN, 0},
                               {gate_inner(f->g), 0, ZMQ_POLLIN, 0}};
    zmq_poll(items, 2, ms);
    gate_pump(f->g);
}

/* A raw TCP connection to the gate, non-blocking. */
static int s_raw_connect(const fix_t *f)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Sends (out: 1) or receives exactly n bytes, pumping the gate while the
 * kernel is full or empty. 0, or -1 when the gate closed the connection. */
static int s_move_all(fix_t *f, int fd, void *data, size_t n, int out)
{
    unsigned char *p = data;
    double end = clock_now() + DEADLINE;
    while (n > 0) {
        ssize_t k = out ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if ((k == 0 && !out) || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return -1;
        if (k > 0) {
            p += k;
            n -= (size_t)k;
        } else {
            assert_true(clock_now() < end);
            s_turn(f, 1);
        }
    }
    return 0;
}

static int s_send_all(fix_t *f, int fd, const void *data, size_t n)
{
    return s_move_all(f, fd, (void *)data, n, 1);
}

static int s_recv_all(fix_t *f, int fd, void *data, size_t n)
{
    return s_move_all(f, fd, data, n, 0);
}

/* Pumps until the gate has closed this raw connection (what it sent us is
 * read and dropped). */
static void s_expect_closed(fix_t *f, int fd)
{
    unsigned char sink[65536];
    double end = clock_now() + DEADLINE;
    for (;;) {
        ssize_t k = recv(fd, sink, sizeof sink, 0);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            break;
        if (k < 0) {
            assert_true(clock_now() < end);
            s_turn(f, 1);
        }
    }
    close(fd);
}

/* A READY command with this Socket-Type. */
static size_t s_ready(unsigned char *b, const char *type)
{
    size_t tl = strlen(type), n = 0;
    b[n++] = 4;
    b[n++] = (unsigned char)(1 + 5 + 1 + 11 + 4 + tl);
    b[n++] = 5;
    memcpy(b + n, "READY", 5), n += 5;
    b[n++] = 11;
    memcpy(b + n, "Socket-Type", 11), n += 11;
    b[n++] = 0, b[n++] = 0, b[n++] = 0, b[n++] = (unsigned char)tl;
    memcpy(b + n, type, tl);
    return n + tl;
}

/* A raw connection through the handshake as a DEALER: it has read the
 * gate's greeting and READY. */
static int s_raw_dealer(fix_t *f)
{
    int fd = s_raw_connect(f);
    unsigned char b[128], got[64 + 30];
    size_t n = s_ready(b, "DEALER");
    assert_int_equal(s_send_all(f, fd, s_greeting, sizeof s_greeting), 0);
    assert_int_equal(s_send_all(f, fd, b, n), 0);
    assert_int_equal(s_recv_all(f, fd, got, sizeof got), 0);
    assert_int_equal(got[0], 0xff);
    assert_memory_equal(got + 12, "NULL", 4);
    assert_int_equal(got[64], 4); /* a command: READY */
    assert_memory_equal(got + 64 + 24, "ROUTER", 6);
    return fd;
}

/* A frame head: flags (MORE, LONG set by size) and size; its length. */
static size_t s_head(unsigned char *h, int more, uint64_t size)
{
    h[0] = (unsigned char)((more ? 1 : 0) | (size > 255 ? 2 : 0));
    if (size <= 255) {
        h[1] = (unsigned char)size;
        return 2;
    }
    for (int i = 0; i < 8; i++)
        h[1 + i] = (unsigned char)(size >> (56 - 8 * i));
    return 9;
}

/* Receives one message on the server's pair (pumping): [id][frames...];
 * returns the number of frames after the id, copies the id. */
static int s_server_recv(fix_t *f, zmq_msg_t *frames, int max, unsigned char *id, size_t *idlen)
{
    double end = clock_now() + DEADLINE;
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, f->pair, ZMQ_DONTWAIT) < 0) {
        assert_true(clock_now() < end);
        s_turn(f, 1);
    }
    *idlen = zmq_msg_size(&m);
    assert_true(*idlen <= 16);
    memcpy(id, zmq_msg_data(&m), *idlen);
    int n = 0, more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    while (more) {
        assert_true(n < max);
        zmq_msg_init(&frames[n]);
        assert_true(zmq_msg_recv(&frames[n], f->pair, 0) >= 0);
        more = zmq_msg_more(&frames[n++]);
    }
    return n;
}

/* Receives a one-frame message of one byte, `byte`, on the server's pair;
 * copies the id. */
static void s_server_recv_byte(fix_t *f, unsigned char byte, unsigned char *id, size_t *idlen)
{
    zmq_msg_t fr[GATE_MAX_FRAMES];
    assert_int_equal(s_server_recv(f, fr, GATE_MAX_FRAMES, id, idlen), 1);
    assert_int_equal(zmq_msg_size(&fr[0]), 1);
    assert_int_equal(*(unsigned char *)zmq_msg_data(&fr[0]), byte);
    zmq_msg_close(&fr[0]);
}

/* Nothing waits on the server's pair. */
static void s_server_nothing(fix_t *f)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    assert_true(zmq_msg_recv(&m, f->pair, ZMQ_DONTWAIT) < 0);
    zmq_msg_close(&m);
}

static unsigned char *s_pattern(size_t n, unsigned seed)
{
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 2654435761u + seed) >> 13);
    return p;
}

/* A real ZeroMQ DEALER sends a 2-frame message with a 900 KB tensor; the
 * server receives exactly those bytes; its 900 KB reply reaches the DEALER
 * exactly; the gate knows the connection until the DEALER goes. */
static void test_dealer_round_trip(void **state)
{
    fix_t *f = *state;
    void *d = zmq_socket(f->ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", f->port);
    assert_int_equal(zmq_connect(d, ep), 0);
    size_t big = MODEL_NPARAMS * sizeof(float);
    unsigned char *head = s_pattern(100, 1), *tensor = s_pattern(big, 2);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(zmq_send(d, head, 100, ZMQ_SNDMORE), 100);
        assert_int_equal(zmq_send(d, tensor, big, 0), (int)big);
        zmq_msg_t fr[4];
        unsigned char id[16];
        size_t idlen;
        assert_int_equal(s_server_recv(f, fr, 4, id, &idlen), 2);
        assert_int_equal(zmq_msg_size(&fr[0]), 100);
        assert_memory_equal(zmq_msg_data(&fr[0]), head, 100);
        assert_int_equal(zmq_msg_size(&fr[1]), big);
        assert_memory_equal(zmq_msg_data(&fr[1]), tensor, big);
        assert_true(gate_connected(f->g, id, idlen));
        /* The reply: the same frames back. */
        zmq_send(f->pair, id, idlen, ZMQ_SNDMORE);
        zmq_msg_send(&fr[0], f->pair, ZMQ_SNDMORE);
        zmq_msg_send(&fr[1], f->pair, 0);
        zmq_msg_t r;
        zmq_msg_init(&r);
        double end = clock_now() + DEADLINE;
        while (zmq_msg_recv(&r, d, ZMQ_DONTWAIT) < 0) {
            assert_true(clock_now() < end);
            s_turn(f, 1);
        }
        assert_int_equal(zmq_msg_size(&r), 100);
        assert_memory_equal(zmq_msg_data(&r), head, 100);
        assert_true(zmq_msg_more(&r));
        assert_true(zmq_msg_recv(&r, d, 0) >= 0);
        assert_int_equal(zmq_msg_size(&r), big);
        assert_memory_equal(zmq_msg_data(&r), tensor, big);
        zmq_msg_close(&r);
        if (round == 2) {
            zmq_close(d);
            for (end = clock_now() + DEADLINE; gate_connected(f->g, id, idlen); s_turn(f, 5))
                assert_true(clock_now() < end);
        }
    }
    assert_int_equal(gate_refused(f->g), 0);
    free(head);
    free(tensor);
}

/* A DEALER with ZMTP 3.1 heartbeats on (PING every 100 ms; a peer that does
 * not answer within 1 s is dropped and connected again): the gate answers
 * each PING with a PONG, so the DEALER keeps its one connection through
 * quiet seconds and its messages still pass. */
static void test_dealer_heartbeats(void **state)
{
    fix_t *f = *state;
    void *d = zmq_socket(f->ctx, ZMQ_DEALER);
    int zero = 0, ivl = 100, timeout = 1000;
    zmq_setsockopt(d, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(d, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(d, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", f->port);
    assert_int_equal(zmq_connect(d, ep), 0);
    unsigned char id[16], first[16];
    size_t idlen, firstlen = 0;
    int kept = 1;
    for (int round = 0; round < 2 && kept; round++) {
        unsigned char byte = (unsigned char)('h' + round);
        zmq_send(d, &byte, 1, 0);
        s_server_recv_byte(f, byte, id, &idlen);
        if (round == 0) {
            memcpy(first, id, idlen);
            firstlen = idlen;
        }
        double end = clock_now() + 1.5; /* quiet: only heartbeats, past the timeout */
        while (clock_now() < end)
            s_turn(f, 10);
        kept = gate_connected(f->g, first, firstlen) && memcmp(id, first, idlen) == 0;
    }
    zmq_close(d); /* before any assert: an open DEALER would hang the teardown */
    assert_true(kept);
    assert_int_equal(gate_refused(f->g), 0);
}

/* A peer that sends its handshake and a message one byte per TCP segment,
 * then 300 one-byte messages in one write: all arrive whole and in order. */
static void test_partial_and_many_small(void **state)
{
    fix_t *f = *state;
    int fd = s_raw_connect(f);
    unsigned char msg[256 + 64];
    size_t n = 0;
    memcpy(msg, s_greeting, 64), n = 64;
    n += s_ready(msg + n, "DEALER");
    unsigned char body[300];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (unsigned char)i;
    n += s_head(msg + n, 1, 3);
    memcpy(msg + n, "abc", 3), n += 3;
    n += s_head(msg + n, 0, 200);
    memcpy(msg + n, body, 200), n += 200;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(s_send_all(f, fd, msg + i, 1), 0);
        s_turn(f, 0);
    }
    zmq_msg_t fr[4];
    unsigned char id[16];
    size_t idlen;
    assert_int_equal(s_server_recv(f, fr, 4, id, &idlen), 2);
    assert_int_equal(zmq_msg_size(&fr[0]), 3);
    assert_memory_equal(zmq_msg_data(&fr[0]), "abc", 3);
    assert_int_equal(zmq_msg_size(&fr[1]), 200);
    assert_memory_equal(zmq_msg_data(&fr[1]), body, 200);
    zmq_msg_close(&fr[0]);
    zmq_msg_close(&fr[1]);
    unsigned char many[300 * 3];
    for (int i = 0; i < 300; i++) {
        many[3 * i] = 0;
        many[3 * i + 1] = 1;
        many[3 * i + 2] = body[i];
    }
    assert_int_equal(s_send_all(f, fd, many, sizeof many), 0);
    for (int i = 0; i < 300; i++)
        s_server_recv_byte(f, body[i], id, &idlen);
    assert_int_equal(gate_refused(f->g), 0);
    close(fd);
}

/* A message over the gate's bound, announced in one frame or reached by two
 * frames, or with more than GATE_MAX_FRAMES frames, closes the connection;
 * nothing reaches the server. */
static void test_oversized_and_too_many_frames(void **state)
{
    fix_t *f = *state;
    unsigned char h[9];
    /* One frame announced over the cap: closed at its head. */
    int fd = s_raw_dealer(f);
    size_t hl = s_head(h, 0, (uint64_t)S_MAX_MESSAGE + 1);
    assert_int_equal(s_send_all(f, fd, h, hl), 0);
    s_expect_closed(f, fd);
    assert_int_equal(gate_refused(f->g), 1);
    /* Two frames, each under the cap, together over it. */
    size_t half = (size_t)S_MAX_MESSAGE / 2 + 1;
    unsigned char *body = calloc(1, half);
    fd = s_raw_dealer(f);
    hl = s_head(h, 1, half);
    assert_int_equal(s_send_all(f, fd, h, hl), 0);
    assert_int_equal(s_send_all(f, fd, body, half), 0);
    hl = s_head(h, 0, half);
    s_send_all(f, fd, h, hl); /* the gate may close it here already */
    s_expect_closed(f, fd);
    assert_int_equal(gate_refused(f->g), 2);
    free(body);
    /* GATE_MAX_FRAMES + 1 small frames. */
    fd = s_raw_dealer(f);
    for (int i = 0; i <= GATE_MAX_FRAMES; i++) {
        unsigned char fr[3] = {1, 1, 'x'};
        if (s_send_all(f, fd, fr, sizeof fr) != 0)
            break;
    }
    s_expect_closed(f, fd);
    assert_int_equal(gate_refused(f->g), 3);
    s_server_nothing(f);
}

/* The bound is the one gate_new was given (a server's model's,
 * wire_max_message): a gate of a lenet5-sized model (62,006 parameters)
 * passes a push of that model and closes the connection of one of
 * SimpleConvNet's length, which a SimpleConvNet server accepts. */
static void test_bound_by_model(void **state)
{
    (void)state;
    fix_t f;
    s_open_max(&f, MAX_CONNS, wire_max_message(62006));
    unsigned char h[9], id[16];
    size_t small = 62006 * sizeof(float), idlen;
    unsigned char *body = s_pattern(small, 3);
    int fd = s_raw_dealer(&f);
    size_t hl = s_head(h, 0, small);
    assert_int_equal(s_send_all(&f, fd, h, hl), 0);
    assert_int_equal(s_send_all(&f, fd, body, small), 0);
    zmq_msg_t fr[GATE_MAX_FRAMES];
    assert_int_equal(s_server_recv(&f, fr, GATE_MAX_FRAMES, id, &idlen), 1);
    assert_int_equal(zmq_msg_size(&fr[0]), small);
    assert_memory_equal(zmq_msg_data(&fr[0]), body, small);
    zmq_msg_close(&fr[0]);
    hl = s_head(h, 0, (uint64_t)MODEL_NPARAMS * sizeof(float)); /* SimpleConvNet's */
    assert_true(MODEL_NPARAMS * sizeof(float) <= (size_t)S_MAX_MESSAGE);
    assert_int_equal(s_send_all(&f, fd, h, hl), 0);
    s_expect_closed(&f, fd);
    assert_int_equal(gate_refused(f.g), 1);
    s_server_nothing(&f);
    free(body);
    s_close_fix(&f);
}

/* Past MAX_CONNS a connection is closed at once; once one goes, a new one
 * is accepted. */
static void test_too_many_connections(void **state)
{
    fix_t *f = *state;
    int a = s_raw_dealer(f), b = s_raw_dealer(f), c = s_raw_dealer(f), d = s_raw_connect(f);
    s_expect_closed(f, d);
    assert_int_equal(gate_refused(f->g), 1);
    close(a);
    double end = clock_now() + DEADLINE;
    for (;;) { /* until the gate has seen a's end */
        d = s_raw_connect(f);
        unsigned char x;
        s_send_all(f, d, s_greeting, sizeof s_greeting);
        s_turn(f, 5);
        s_turn(f, 5);
        ssize_t k = recv(d, &x, 1, 0);
        if (k == 1)
            break;
        close(d);
        assert_true(clock_now() < end);
    }
    close(d);
    close(b);
    close(c);
}

/* A storm of connections (here 100 waiting at once, the gate full): one
 * pump accepts (and closes) a bounded number of them and returns, so the
 * server's loop goes on even while connections come faster than they can
 * be accepted; the next pumps take the rest. */
static void test_accept_storm_bounded(void **state)
{
    fix_t *f = *state;
    int keep[MAX_CONNS], storm[100];
    for (int i = 0; i < MAX_CONNS; i++)
        keep[i] = s_raw_dealer(f);
    for (int i = 0; i < 100; i++)
        storm[i] = s_raw_connect(f);
    gate_pump(f->g);
    long first = gate_refused(f->g);
    fprintf(stderr, "  one pump refused %ld of 100 waiting connections\n", first);
    assert_true(first > 0 && first <= 64);
    double end = clock_now() + DEADLINE;
    while (gate_refused(f->g) < 100) {
        assert_true(clock_now() < end);
        s_turn(f, 1);
    }
    for (int i = 0; i < 100; i++)
        s_expect_closed(f, storm[i]);
    for (int i = 0; i < MAX_CONNS; i++)
        close(keep[i]);
}

/* Each malformed handshake or first frame closes the connection. */
static void test_malformed_handshakes(void **state)
{
    fix_t *f = *state;
    unsigned char g[64], r[128];
    struct {
        const char *what;
        int at, value;    /* greeting byte changed (-1: none) */
        const char *type; /* READY's Socket-Type (NULL: none sent) */
        unsigned char after[16];
        size_t afterlen; /* bytes sent after that */
    } cases[] = {
        {"bad signature", 0, 0x7f, "DEALER", {0}, 0},
        {"ZMTP 2.0", 10, 2, "DEALER", {0}, 0},
        {"PLAIN mechanism", 12, 'P', "DEALER", {0}, 0},
        {"a PUB socket", -1, 0, "PUB", {0}, 0},
        {"a data frame before READY", -1, 0, NULL, {0, 1, 'x'}, 3},
        {"a command over 4096 bytes", -1, 0, NULL, {6, 0, 0, 0, 0, 0, 0, 0x10, 1}, 9},
        {"unknown flag bits", -1, 0, "DEALER", {0x40, 1, 'x'}, 3},
        {"a command with MORE", -1, 0, "DEALER", {5, 1, 'x'}, 3},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        fprintf(stderr, "  %s\n", cases[i].what);
        int fd = s_raw_connect(f);
        memcpy(g, s_greeting, sizeof g);
        if (cases[i].at >= 0)
            g[cases[i].at] = (unsigned char)cases[i].value;
        if (cases[i].at == 12)
            memcpy(g + 12, "PLAIN", 5);
        s_send_all(f, fd, g, sizeof g);
        if (cases[i].type)
            s_send_all(f, fd, r, s_ready(r, cases[i].type));
        s_send_all(f, fd, cases[i].after, cases[i].afterlen);
        s_expect_closed(f, fd);
        assert_int_equal(gate_refused(f->g), i + 1);
    }
    s_server_nothing(f);
}

/* A peer that stops in the middle of its greeting or of a message is closed
 * after the stall limit; an idle peer between messages is not. */
static void test_stalled_peers_closed(void **state)
{
    fix_t *f = *state;
    gate_set_stall(f->g, 0.5);
    int idle = s_raw_dealer(f);
    int mute = s_raw_connect(f); /* not a byte */
    int half = s_raw_dealer(f);  /* a frame size, 10 bytes of 1000, then nothing */
    unsigned char h[9 + 10] = {0};
    size_t hl = s_head(h, 0, 1000);
    assert_int_equal(s_send_all(f, half, h, hl + 10), 0);
    double t0 = clock_now();
    s_expect_closed(f, mute);
    s_expect_closed(f, half);
    double took = clock_now() - t0;
    fprintf(stderr, "  stalled peers closed after %.1f s (limit 0.5 s, checked each second)\n",
            took);
    assert_true(took >= 0.4);
    assert_int_equal(gate_refused(f->g), 2);
    /* The idle one is still served. */
    unsigned char m[3] = {0, 1, 'y'};
    unsigned char id[16];
    size_t idlen;
    assert_int_equal(s_send_all(f, idle, m, sizeof m), 0);
    s_server_recv_byte(f, 'y', id, &idlen);
    close(idle);
}

/* A raw DEALER with the smallest receive buffer (replies pile up in the
 * gate soon) that has sent a one-byte message; copies its id. */
static int s_slow_reader(fix_t *f, unsigned char byte, unsigned char *id, size_t *idlen)
{
    int fd = s_raw_dealer(f);
    int small = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    unsigned char m[3] = {0, 1, byte};
    assert_int_equal(s_send_all(f, fd, m, sizeof m), 0);
    s_server_recv_byte(f, byte, id, idlen);
    return fd;
}

/* The server sends a weights-like reply to `id`: "w" and 900 KB. */
static void s_server_send_big(fix_t *f, const unsigned char *id, size_t idlen)
{
    zmq_msg_t t;
    zmq_msg_init_size(&t, MODEL_NPARAMS * sizeof(float));
    zmq_send(f->pair, id, idlen, ZMQ_SNDMORE);
    zmq_send(f->pair, "w", 1, ZMQ_SNDMORE);
    zmq_msg_send(&t, f->pair, 0);
}

/* A peer that never reads: replies queue up to GATE_OUT_FRAMES frames
 * beyond what the kernel holds, then the gate closes the connection
 * rather than hold more. */
static void test_unread_replies_close(void **state)
{
    fix_t *f = *state;
    unsigned char id[16];
    size_t idlen;
    int fd = s_slow_reader(f, 'z', id, &idlen);
    int sent = 0;
    for (; sent < 200 && gate_connected(f->g, id, idlen); sent++) {
        s_server_send_big(f, id, idlen);
        s_turn(f, 1);
    }
    fprintf(stderr, "  the connection was closed after %d unread 900 KB replies\n", sent);
    assert_false(gate_connected(f->g, id, idlen));
    assert_true(sent < 200);
    assert_int_equal(gate_refused(f->g), 1);
    close(fd);
}

/* A peer that sends its greeting and then never its READY (it holds a
 * connection slot without even saying what it is) is closed after the stall
 * limit, as one that stops inside the greeting is. */
static void test_no_ready_stalls(void **state)
{
    fix_t *f = *state;
    gate_set_stall(f->g, 0.5);
    int fd = s_raw_connect(f);
    unsigned char got[64 + 30];
    assert_int_equal(s_send_all(f, fd, s_greeting, sizeof s_greeting), 0);
    assert_int_equal(s_recv_all(f, fd, got, sizeof got), 0); /* the gate's greeting, READY */
    s_expect_closed(f, fd);
    assert_int_equal(gate_refused(f->g), 1);
}

/* READY's properties are parsed within the command: a name or value length
 * that points past its end, a missing or second, wrong Socket-Type close the
 * connection; other properties (Identity) are skipped; nothing reaches the
 * server from the refused ones. */
static void test_ready_properties(void **state)
{
    fix_t *f = *state;
    static const struct {
        const char *what;
        unsigned char body[64];
        size_t len;
        int ok;
    } cases[] = {
        {"name length past the end", {5, 'R', 'E', 'A', 'D', 'Y', 200, 'S'}, 8, 0},
        {"value length 2^32-1",
         {5, 'R', 'E', 'A', 'D', 'Y', 1, 'x', 0xff, 0xff, 0xff, 0xff},
         12,
         0},
        {"value length past the end", {5, 'R', 'E', 'A', 'D', 'Y', 1, 'x', 0, 0, 0, 9, 'a'}, 13, 0},
        {"no Socket-Type", {5, 'R', 'E', 'A', 'D', 'Y', 1, 'x', 0, 0, 0, 0}, 12, 0},
        {"no properties", {5, 'R', 'E', 'A', 'D', 'Y'}, 6, 0},
        {"not READY", {5, 'E', 'R', 'R', 'O', 'R', 0}, 7, 0},
        {"name length 0 at the end", {5, 'R', 'E', 'A', 'D', 'Y', 0}, 7, 0},
        {"DEALER then PUB",
         {5,   'R', 'E', 'A', 'D', 'Y', 11,  'S', 'o', 'c', 'k', 'e', 't', '-', 'T', 'y',
          'p', 'e', 0,   0,   0,   6,   'D', 'E', 'A', 'L', 'E', 'R', 11,  'S', 'o', 'c',
          'k', 'e', 't', '-', 'T', 'y', 'p', 'e', 0,   0,   0,   3,   'P', 'U', 'B'},
         47,
         0},
        {"Identity, then REQ",
         {5,   'R', 'E', 'A', 'D', 'Y', 8,   'I', 'd', 'e', 'n', 't', 'i', 't',
          'y', 0,   0,   0,   2,   'm', 'e', 11,  'S', 'o', 'c', 'k', 'e', 't',
          '-', 'T', 'y', 'p', 'e', 0,   0,   0,   3,   'R', 'E', 'Q'},
         40,
         1},
    };
    long refused = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fprintf(stderr, "  %s\n", cases[i].what);
        int fd = s_raw_connect(f);
        unsigned char cmd[2 + 64] = {4, (unsigned char)cases[i].len};
        memcpy(cmd + 2, cases[i].body, cases[i].len);
        unsigned char msg[3] = {0, 1, (unsigned char)('a' + i)}, got[64 + 30];
        assert_int_equal(s_send_all(f, fd, s_greeting, sizeof s_greeting), 0);
        s_send_all(f, fd, cmd, 2 + cases[i].len);
        s_send_all(f, fd, msg, sizeof msg);
        if (cases[i].ok) {
            unsigned char id[16];
            size_t idlen;
            s_server_recv_byte(f, msg[2], id, &idlen);
            assert_int_equal(s_recv_all(f, fd, got, sizeof got), 0);
            close(fd);
        } else {
            s_expect_closed(f, fd);
            refused++;
        }
        assert_int_equal(gate_refused(f->g), refused);
    }
    s_server_nothing(f);
}

/* Commands after READY (a ZMTP 3.1 PING, even between the frames of a
 * message; a PONG) are taken apart from the messages, which arrive whole;
 * each PING is answered with a PONG; a greeting that says 3.1 is served as
 * 3.0. */
static void test_commands_after_ready(void **state)
{
    fix_t *f = *state;
    int fd = s_raw_connect(f);
    unsigned char g[64], r[64], got[64 + 30];
    memcpy(g, s_greeting, sizeof g);
    g[11] = 1; /* ZMTP 3.1 */
    assert_int_equal(s_send_all(f, fd, g, sizeof g), 0);
    assert_int_equal(s_send_all(f, fd, r, s_ready(r, "DEALER")), 0);
    assert_int_equal(s_recv_all(f, fd, got, sizeof got), 0);
    assert_int_equal(got[10], 3);
    assert_int_equal(got[11], 0);
    static const unsigned char bytes[] = {
        4, 7, 4,   'P', 'I', 'N', 'G', 0, 10,                          /* PING, TTL 1 s */
        1, 1, 'p',                                                     /* first frame */
        4, 9, 4,   'P', 'I', 'N', 'G', 0, 10, 'c', 'x',                /* PING with a context */
        6, 0, 0,   0,   0,   0,   0,   0, 5,  4,   'P', 'O', 'N', 'G', /* a LONG command */
        0, 1, 'q'};                                                    /* last frame */
    assert_int_equal(s_send_all(f, fd, bytes, sizeof bytes), 0);
    zmq_msg_t fr[4];
    unsigned char id[16];
    size_t idlen;
    assert_int_equal(s_server_recv(f, fr, 4, id, &idlen), 2);
    assert_memory_equal(zmq_msg_data(&fr[0]), "p", 1);
    assert_memory_equal(zmq_msg_data(&fr[1]), "q", 1);
    zmq_msg_close(&fr[0]);
    zmq_msg_close(&fr[1]);
    /* Each PING was answered with a PONG that carries its context. */
    unsigned char pongs[7 + 9];
    assert_int_equal(s_recv_all(f, fd, pongs, sizeof pongs), 0);
    assert_memory_equal(pongs, "\4\5\4PONG\4\7\4PONGcx", sizeof pongs);
    assert_int_equal(gate_refused(f->g), 0);
    close(fd);
}

/* A peer that sends PINGs and never reads the PONGs: they queue up to
 * GATE_OUT_FRAMES beyond what the kernel holds, then the connection is
 * closed (the PONGs take no more memory than replies do). */
static void test_ping_flood_unread(void **state)
{
    fix_t *f = *state;
    int fd = s_raw_dealer(f);
    int small = 0;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    unsigned char pings[1024 * 9];
    for (size_t i = 0; i < sizeof pings; i += 9)
        memcpy(pings + i, "\4\7\4PING\0\1", 9);
    size_t sent = 0;
    while (sent < ((size_t)64 << 20) && s_send_all(f, fd, pings, sizeof pings) == 0)
        sent += sizeof pings;
    fprintf(stderr, "  closed after %zu KB of PINGs\n", sent >> 10);
    s_expect_closed(f, fd);
    assert_true(sent < ((size_t)64 << 20));
    assert_int_equal(gate_refused(f->g), 1);
}

/* A reply the server sends to a connection that has gone is dropped, and
 * never reaches a later connection (connection ids are not reused). */
static void test_reply_after_close(void **state)
{
    fix_t *f = *state;
    unsigned char ida[16], idb[16], m[3] = {0, 1, 'a'}, got[3];
    size_t la, lb;
    int a = s_raw_dealer(f);
    assert_int_equal(s_send_all(f, a, m, sizeof m), 0);
    s_server_recv_byte(f, 'a', ida, &la);
    close(a);
    double end = clock_now() + DEADLINE;
    while (gate_connected(f->g, ida, la)) {
        assert_true(clock_now() < end);
        s_turn(f, 1);
    }
    int b = s_raw_dealer(f);
    m[2] = 'b';
    assert_int_equal(s_send_all(f, b, m, sizeof m), 0);
    s_server_recv_byte(f, 'b', idb, &lb);
    assert_false(la == lb && memcmp(ida, idb, la) == 0);
    zmq_send(f->pair, ida, la, ZMQ_SNDMORE);
    zmq_send(f->pair, "to-a", 4, 0);
    zmq_send(f->pair, idb, lb, ZMQ_SNDMORE);
    zmq_send(f->pair, "b", 1, 0);
    assert_int_equal(s_recv_all(f, b, got, sizeof got), 0); /* b's own reply comes first */
    assert_memory_equal(got, "\0\1b", 3);
    for (int i = 0; i < 20; i++)
        s_turn(f, 1);
    assert_true(recv(b, got, 1, 0) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    assert_int_equal(gate_refused(f->g), 0);
    close(b);
}

/* A peer that resets its connection while replies to it are being written:
 * the gate's writes fail (without SIGPIPE killing the process: this test
 * would die of it) and it forgets the connection. */
static void test_peer_gone_mid_write(void **state)
{
    fix_t *f = *state;
    unsigned char id[16];
    size_t idlen;
    int fd = s_slow_reader(f, 'w', id, &idlen);
    for (int i = 0; i < 3; i++)
        s_server_send_big(f, id, idlen);
    s_turn(f, 1);
    unsigned char part[4096];
    assert_int_equal(s_recv_all(f, fd, part, sizeof part), 0); /* the writes have begun */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* a reset */
    double end = clock_now() + DEADLINE;
    while (gate_connected(f->g, id, idlen)) {
        assert_true(clock_now() < end);
        s_turn(f, 1);
    }
    /* And a reply after that is dropped. */
    zmq_send(f->pair, id, idlen, ZMQ_SNDMORE);
    zmq_send(f->pair, "late", 4, 0);
    s_turn(f, 1);
    assert_int_equal(gate_refused(f->g), 0);
}

/* Out of descriptors: the gate stops accepting for a moment (the listening
 * socket stays readable, so it would otherwise spin), then accepts again
 * once descriptors are free. */
static void test_out_of_descriptors(void **state)
{
    fix_t *f = *state;
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    int a = s_raw_connect(f), b = s_raw_connect(f); /* waiting to be accepted */
    int probe = dup(0); /* the lowest free descriptor: none from there on */
    assert_true(probe >= 0);
    close(probe);
    low = old;
    low.rlim_cur = (rlim_t)probe;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    s_turn(f, 1); /* accept: EMFILE */
    zmq_pollitem_t it = {NULL, gate_fd(f->g), ZMQ_POLLIN, 0};
    int readable = zmq_poll(&it, 1, 200);
    close(a);
    close(b);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0); /* before any assert can fail */
    assert_int_equal(readable, 0);                       /* not readable: no spinning */
    close(s_raw_dealer(f));                              /* served again (after at most a second) */
    assert_int_equal(gate_refused(f->g), 0);
}

/* Many peers closed for not reading their replies, one after the other
 * (what one attacker can do as fast as it likes): the gate's log says so
 * once, not once each (the log must not fill); all are counted. */
static void test_unread_log_limited(void **state)
{
    fix_t *f = *state;
    char path[] = "/tmp/test_gate_log_XXXXXX";
    int log = mkstemp(path), saved = dup(2);
    assert_true(log >= 0 && saved >= 0);
    unlink(path);
    fflush(stderr);
    dup2(log, 2);
    int closed = 0;
    for (int round = 0; round < 4; round++) {
        unsigned char id[16];
        size_t idlen;
        int fd = s_slow_reader(f, (unsigned char)('0' + round), id, &idlen);
        for (int sent = 0; sent < 200 && gate_connected(f->g, id, idlen); sent++) {
            s_server_send_big(f, id, idlen);
            s_turn(f, 1);
        }
        closed += !gate_connected(f->g, id, idlen);
        close(fd);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[4096] = "";
    ssize_t n = pread(log, text, sizeof text - 1, 0);
    close(log);
    int lines = 0;
    for (char *p = text; n > 0 && (p = strstr(p, "does not read")); p++)
        lines++;
    fprintf(stderr, "  %d connections closed, %d log lines:\n%s", closed, lines, text);
    assert_int_equal(closed, 4);
    assert_int_equal(gate_refused(f->g), 4);
    assert_int_equal(lines, 1);
}

/* The gate's end of the test's connection `fd` (both ends live in this
 * process): the socket whose peer is fd's local address. -1 if none. */
static int s_gate_end(int fd)
{
    struct sockaddr_in mine, peer;
    socklen_t ml = sizeof mine;
    getsockname(fd, (struct sockaddr *)&mine, &ml);
    for (int other = 3; other < 4096; other++) {
        socklen_t pl = sizeof peer;
        if (other != fd && getpeername(other, (struct sockaddr *)&peer, &pl) == 0 &&
            peer.sin_family == AF_INET && peer.sin_port == mine.sin_port &&
            peer.sin_addr.s_addr == mine.sin_addr.s_addr)
            return other;
    }
    return -1;
}

/* A peer whose host vanished (powered off, cable cut: no FIN, no reset)
 * must not hold its connection slot for ever: the gate's sockets probe an
 * idle peer (TCP keepalive) and give up on unacknowledged data
 * (TCP_USER_TIMEOUT), each within about a minute. */
static void test_vanished_peer_detected(void **state)
{
    fix_t *f = *state;
    int fd = s_raw_dealer(f), g = s_gate_end(fd);
    assert_true(g >= 0);
    int on = 0, idle = 0, intvl = 0, cnt = 0;
    unsigned user = 0;
    socklen_t l = sizeof on;
    assert_int_equal(getsockopt(g, SOL_SOCKET, SO_KEEPALIVE, &on, &l), 0);
    assert_int_equal(getsockopt(g, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &l), 0);
    assert_int_equal(getsockopt(g, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, &l), 0);
    assert_int_equal(getsockopt(g, IPPROTO_TCP, TCP_KEEPCNT, &cnt, &l), 0);
    l = sizeof user;
    assert_int_equal(getsockopt(g, IPPROTO_TCP, TCP_USER_TIMEOUT, &user, &l), 0);
    fprintf(stderr, "  keepalive %d: idle %d s, then %d probes %d s apart; user timeout %u ms\n",
            on, idle, cnt, intvl, user);
    assert_true(on);
    assert_true(idle + intvl * cnt <= 120);
    assert_true(user > 0 && user <= 120000);
    close(fd);
}

/* Does this machine resolve `host` to an IPv4 address? */
static int s_resolves(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int ok = getaddrinfo(host, NULL, &hints, &ai) == 0;
    if (ai)
        freeaddrinfo(ai);
    return ok;
}

/* The forms of HOST it listens on: *, an address, an interface, a host
 * name (IPv4, as the workers' ZeroMQ resolves it). */
static void test_endpoints(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new(), *pair = zmq_socket(ctx, ZMQ_PAIR);
    zmq_bind(pair, "inproc://endpoints");
    struct {
        const char *ep, *prefix;
    } cases[] = {{"tcp://*:*", "tcp://0.0.0.0:"},
                 {"tcp://127.0.0.1:*", "tcp://127.0.0.1:"},
                 {"tcp://lo:*", "tcp://127.0.0.1:"},
                 {"tcp://localhost:0", "tcp://127.0.0.1:"},
                 {"tcp://[::1]:*", "tcp://[::1]:"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (i == 3 && !s_resolves("localhost")) {
            /* a root without /etc/hosts (debootstrap's minbase) has no name
             * for 127.0.0.1: the gate is not at fault there */
            fprintf(stderr, "  localhost does not resolve here: not tried\n");
            continue;
        }
        gate_t *g = gate_new(ctx, cases[i].ep, "inproc://endpoints", 2, S_MAX_MESSAGE);
        if (!g && i == 4 && errno == EADDRNOTAVAIL) {
            fprintf(stderr, "  no IPv6 loopback here: [::1] not tried\n");
            continue;
        }
        assert_non_null(g);
        const char *got = gate_endpoint(g);
        fprintf(stderr, "  %s -> %s\n", cases[i].ep, got);
        assert_true(strncmp(got, cases[i].prefix, strlen(cases[i].prefix)) == 0);
        assert_true(atoi(got + strlen(cases[i].prefix)) > 0);
        gate_destroy(&g);
    }
    zmq_close(pair);
    zmq_ctx_term(ctx);
}

/* Endpoints it cannot listen on fail with the errno the server's message
 * explains. */
static void test_bad_endpoints(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    struct {
        const char *ep;
        int err;
    } cases[] = {
        {"tcp://127.0.0.1", EINVAL},
        {"tcp://127.0.0.1:5x", EINVAL},
        {"tcp://:5555", EINVAL},
        {"udp://127.0.0.1:5555", EINVAL},
        {"tcp://192.0.2.1:0", EADDRNOTAVAIL},
        {"tcp://no-such-if.invalid:0", ENODEV},
        {"tcp", EINVAL},
        {"", EINVAL},
        {"tcp://127.0.0.1: 5555", EINVAL},
        {"tcp://127.0.0.1:+5555", EINVAL},
        {"tcp://127.0.0.1:-0", EINVAL},
        {"tcp://127.0.0.1:65536", EINVAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        gate_t *g = gate_new(ctx, cases[i].ep, "inproc://unused", 2, S_MAX_MESSAGE);
        if (g || errno != cases[i].err)
            fprintf(stderr, "  %s: errno %d (%s), expected %d\n", cases[i].ep, errno,
                    strerror(errno), cases[i].err);
        assert_null(g);
        assert_int_equal(errno, cases[i].err);
    }
    /* A short endpoint in a buffer of its own size: nothing read past it
     * (AddressSanitizer's build catches a read beyond). */
    char *shortep = strdup("tcp:");
    errno = 0;
    assert_null(gate_new(ctx, shortep, "inproc://unused", 2, S_MAX_MESSAGE));
    assert_int_equal(errno, EINVAL);
    free(shortep);
    /* No connection allowed at all is a mistake. */
    errno = 0;
    assert_null(gate_new(ctx, "tcp://127.0.0.1:*", "inproc://unused", 0, S_MAX_MESSAGE));
    assert_int_equal(errno, EINVAL);
    /* ...and so is no message allowed. */
    errno = 0;
    assert_null(gate_new(ctx, "tcp://127.0.0.1:*", "inproc://unused", 2, 0));
    assert_int_equal(errno, EINVAL);
    /* Taken: the second one fails with EADDRINUSE. */
    void *pair = zmq_socket(ctx, ZMQ_PAIR);
    zmq_bind(pair, "inproc://bad-endpoints");
    gate_t *a = gate_new(ctx, "tcp://127.0.0.1:*", "inproc://bad-endpoints", 2, S_MAX_MESSAGE);
    assert_non_null(a);
    gate_t *b = gate_new(ctx, gate_endpoint(a), "inproc://bad-endpoints", 2, S_MAX_MESSAGE);
    assert_null(b);
    assert_int_equal(errno, EADDRINUSE);
    gate_destroy(&a);
    zmq_close(pair);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dealer_round_trip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_dealer_heartbeats, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_partial_and_many_small, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_oversized_and_too_many_frames, s_setup, s_teardown),
        cmocka_unit_test(test_bound_by_model),
        cmocka_unit_test_setup_teardown(test_too_many_connections, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_accept_storm_bounded, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_handshakes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_stalled_peers_closed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_unread_replies_close, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_no_ready_stalls, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_ready_properties, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_commands_after_ready, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_ping_flood_unread, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reply_after_close, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_peer_gone_mid_write, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_out_of_descriptors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_vanished_peer_detected, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_unread_log_limited, s_setup, s_teardown),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_bad_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
