/* fuzz_gate: a libFuzzer target for the gate's ZMTP parser and framer
 * (server/gate.c): the bytes of an input arrive on one connection, as a
 * peer on the public port would send them, and every message the gate
 * hands to the server is echoed back as the server's reply.
 *
 * Input: byte 0 picks how the bytes arrive and whether the peer reads:
 *   bits 0-5  chunk size k: the rest is written k + 1 bytes at a time
 *   bit 6     ... or (k + 1) * 64 bytes at a time (large frames whole)
 *   bit 7     the peer reads nothing until the end (replies pile up)
 * then the bytes the peer sends (greeting, commands, frames).
 *
 * Checked after every input (a violation aborts, so libFuzzer keeps the
 * input as a crasher): each message delivered has the connection's id, at
 * most GATE_MAX_FRAMES frames and S_MAX bytes; what the peer
 * receives is the gate's greeting and READY, then exactly the echoed
 * messages framed in order (all of them while the connection stays open,
 * a prefix when the gate closed it); once the peer has gone the gate
 * holds no connection.
 *
 * Persistent: one gate for the whole run. It includes gate.c to hand the
 * gate one end of a socketpair as a connection (s_adopt, what accept does)
 * instead of a TCP connection per input: no ports in TIME_WAIT, thousands
 * of inputs per second. Built by make fuzz-gate (clang, libFuzzer, ASan +
 * UBSan); tests/fuzz/corpus-gate holds its seeds, tests/fuzz/gate.dict the
 * protocol's words. */
#include "gate.c"

#include <fcntl.h>

#include "model.h"
#include "wire.h"

enum { OUT_MAX = 65536 };
/* The gate's bound on a message: a SimpleConvNet server's. */
#define S_MAX wire_max_message(MODEL_NPARAMS)

static void *s_ctx, *s_pair;
static gate_t *s_g;

/* What the peer should receive (expected) and what it did (got). */
static unsigned char s_expect[OUT_MAX], s_got[OUT_MAX];
static size_t s_nexpect, s_ngot;

static void s_fail(const char *what)
{
    fprintf(stderr, "fuzz_gate: %s\n", what);
    abort();
}

static void s_init(void)
{
    s_ctx = zmq_ctx_new();
    s_pair = zmq_socket(s_ctx, ZMQ_PAIR);
    if (!s_ctx || !s_pair || zmq_bind(s_pair, "inproc://fuzz-gate") != 0)
        s_fail("cannot set up the server's pair");
    s_g = gate_new(s_ctx, "tcp://127.0.0.1:*", "inproc://fuzz-gate", 2, S_MAX);
    if (!s_g)
        s_fail("cannot start a gate on 127.0.0.1");
}

/* Appends a frame as the gate must frame it to the expected output. */
static void s_expect_frame(const void *data, size_t n, int more)
{
    if (s_nexpect + 9 + n > OUT_MAX)
        s_fail("expected output past OUT_MAX");
    unsigned char *p = s_expect + s_nexpect;
    p[0] = (unsigned char)((more ? F_MORE : 0) | (n > 255 ? F_LONG : 0));
    size_t h = 2;
    if (n > 255) {
        for (int j = 0; j < 8; j++)
            p[1 + j] = (unsigned char)((uint64_t)n >> (56 - 8 * j));
        h = 9;
    } else {
        p[1] = (unsigned char)n;
    }
    memcpy(p + h, data, n);
    s_nexpect += h + n;
}

/* Takes what the gate delivered to the server, checks it and echoes it
 * back as the reply. */
static void s_serve(const unsigned char *id)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, s_pair, ZMQ_DONTWAIT) >= 0) {
        if (zmq_msg_size(&m) != ID_LEN || memcmp(zmq_msg_data(&m), id, ID_LEN) != 0 ||
            !zmq_msg_more(&m))
            s_fail("a message without the connection's id");
        zmq_send(s_pair, id, ID_LEN, ZMQ_SNDMORE);
        int nf = 0, more = 1;
        size_t bytes = 0;
        while (more) {
            if (zmq_msg_recv(&m, s_pair, 0) < 0)
                s_fail("a message cut short");
            more = zmq_msg_more(&m);
            bytes += zmq_msg_size(&m);
            if (++nf > GATE_MAX_FRAMES || bytes > (size_t)S_MAX)
                s_fail("a message past the gate's bounds");
            s_expect_frame(zmq_msg_data(&m), zmq_msg_size(&m), more);
            zmq_msg_t copy;
            zmq_msg_init(&copy);
            zmq_msg_copy(&copy, &m);
            zmq_msg_send(&copy, s_pair, more ? ZMQ_SNDMORE : 0);
            zmq_msg_close(&copy);
        }
    }
    zmq_msg_close(&m);
}

/* The peer reads what has come. */
static void s_peer_read(int fd)
{
    for (;;) {
        if (s_ngot == OUT_MAX)
            s_fail("output past OUT_MAX");
        ssize_t k = recv(fd, s_got + s_ngot, OUT_MAX - s_ngot, MSG_DONTWAIT);
        if (k <= 0)
            return;
        s_ngot += (size_t)k;
    }
}

/* What the peer received: the gate's greeting and READY, then frames: the
 * data frames exactly the echoes in order, and commands only PONGs (with a
 * PING's context: at most 16 bytes), which may come between messages. All
 * of it while the connection is open and ready; a prefix once it was
 * closed (what was queued is dropped) or the handshake did not pass. */
static void s_check_output(int all)
{
    static unsigned char hs[GREETING + sizeof s_ready], data[OUT_MAX];
    memcpy(hs, s_greeting, GREETING);
    memcpy(hs + GREETING, s_ready, sizeof s_ready);
    size_t n = s_ngot < sizeof hs ? s_ngot : sizeof hs, nd = 0, at = sizeof hs;
    if (memcmp(s_got, hs, n) != 0)
        s_fail("the gate's greeting or READY is not what it should be");
    int cut = n < sizeof hs; /* a frame or the handshake cut short */
    while (!cut && at < s_ngot) {
        const unsigned char *f = s_got + at;
        size_t left = s_ngot - at, head = f[0] & F_LONG ? 9 : 2, len = 0;
        if (left < head) {
            cut = 1;
            break;
        }
        for (size_t i = 1; i < head; i++)
            len = len << 8 | f[i];
        if (f[0] & F_COMMAND) {
            if (f[0] != F_COMMAND || len < 5 || len > 5 + 16 ||
                (left >= 7 && memcmp(f + 2, "\4PONG", 5) != 0))
                s_fail("a command other than a PONG from the gate");
        } else {
            size_t k = head + len < left ? head + len : left;
            memcpy(data + nd, f, k);
            nd += k;
        }
        cut = head + len > left;
        at += head + len;
    }
    if (nd > s_nexpect || memcmp(data, s_expect, nd) != 0)
        s_fail("the peer received other frames than the echoes of its messages");
    if (all && (cut || nd != s_nexpect))
        s_fail("replies left unwritten on an open connection");
}

/* Pumps the gate and serves until nothing moves (a bounded number of
 * turns: each moves at least one message or a read's worth). */
static void s_settle(const unsigned char *id, int peer, int reads)
{
    for (int turn = 0; turn < 10000; turn++) {
        size_t before = s_ngot;
        int moved = gate_pump(s_g);
        s_serve(id);
        if (reads)
            s_peer_read(peer);
        if (moved == 0 && s_ngot == before)
            return;
    }
    s_fail("the gate never settles");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s_g)
        s_init();
    if (size < 1)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        s_fail("socketpair");
    conn_t *c = s_free_slot(s_g);
    if (!c || s_adopt(s_g, c, sv[0]) != 0)
        s_fail("the gate refused a connection with all its slots free");
    unsigned char id[ID_LEN];
    memcpy(id, c->id, ID_LEN);
    size_t chunk = ((size_t)(data[0] & 63) + 1) * (data[0] & 64 ? 64 : 1);
    int reads = !(data[0] & 128);
    int small = 1; /* the kernel's least: replies to a peer that does not
                    * read pile up in the gate soon */
    if (!reads)
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    s_nexpect = s_ngot = 0;
    for (size_t at = 1; at < size && gate_connected(s_g, id, ID_LEN);) {
        size_t n = size - at < chunk ? size - at : chunk;
        ssize_t k = send(sv[1], data + at, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0)
            at += (size_t)k;
        else if (k < 0 && errno != EAGAIN)
            break; /* the gate closed it */
        s_settle(id, sv[1], reads);
    }
    s_settle(id, sv[1], 1);
    s_check_output(gate_connected(s_g, id, ID_LEN) && c->ready);
    close(sv[1]);
    s_settle(id, -1, 0);
    for (int i = 0; i < s_g->nconn; i++)
        if (s_g->conn[i].used)
            s_fail("the gate still holds a connection whose peer has gone");
    return 0;
}
