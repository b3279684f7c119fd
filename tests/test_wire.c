/* Tests for wire, the codec between ZeroMQ frames and checked ps.proto
 * messages. One process, one context: a ROUTER (the server's side) bound to
 * an ephemeral port on 127.0.0.1 and a DEALER (a worker's side) connected to
 * it. Every message kind makes the round trip both ways with every field set
 * to a distinctive value; then hand-made frames that a broken or hostile peer
 * could send (another protocol version, garbage, a missing, short, extra or
 * non-finite tensor...) must each be refused with the right error code and a
 * message that says why, leave nothing to free, and leave the socket in step
 * so that the next good message still arrives. Nothing sleeps: every receive
 * waits in zmq_poll with a deadline and fails the test when it expires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wire.h"

#define S_DEADLINE_MS 5000
#define S_TENSOR_BYTES ((size_t)WIRE_TENSOR_FLOATS * sizeof(float))

/* A distinctive routing id: not text, with a zero byte inside. */
static const unsigned char s_dealer_id[] = {'w', 'k', 0x00, 0xff, 0x7f, '7'};

typedef struct {
    void *ctx;
    void *router;       /* the server's side */
    void *dealer;       /* a worker's side */
    wire_peer_t peer;   /* the dealer as the router sees it */
    float *tensor;      /* the reference: WIRE_TENSOR_FLOATS distinct values */
    float *scratch;     /* what is sent, scribbled over after each send */
    uint32_t next_pull; /* worker_id of the next "good" Pull, so each is unique */
} s_fixture_t;

/* Which way a message travels. */
typedef enum { S_UP, S_DOWN } s_dir_t; /* dealer -> router, router -> dealer */

static const char *s_dir_name(s_dir_t dir)
{
    return dir == S_UP ? "dealer->router" : "router->dealer";
}

#define S_ASSERT_FP_EQ(got, want)                                                                  \
    do {                                                                                           \
        double g_ = (got), w_ = (want);                                                            \
        if (memcmp(&g_, &w_, sizeof g_) != 0)                                                      \
            fail_msg("%s: got %a (%.17g), want %a (%.17g)", #got, g_, g_, w_, w_);                 \
    } while (0)

static double s_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Waits until sock has a message to read; fails the test after the deadline. */
static void s_wait(void *sock)
{
    double end = s_mono_ms() + S_DEADLINE_MS;
    for (;;) {
        double left = end - s_mono_ms();
        if (left <= 0)
            fail_msg("no message within %d ms", S_DEADLINE_MS);
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, (long)left + 1);
        if (rc < 0 && errno != EINTR)
            fail_msg("zmq_poll: %s", zmq_strerror(errno));
        if (rc > 0 && (item.revents & ZMQ_POLLIN))
            return;
    }
}

/* The tensor: distinct values, among them -0, a subnormal and +-FLT_MAX
 * (finite, so accepted), and none that survive a lost or swapped byte. */
static void s_fill_tensor(float *t)
{
    for (size_t i = 0; i < WIRE_TENSOR_FLOATS; i++)
        t[i] = (i % 2 ? -1.0f : 1.0f) * ((float)i + 0.25f);
    t[0] = -0.0f;
    t[1] = FLT_MIN / 4; /* subnormal */
    t[2] = FLT_MAX;
    t[3] = -FLT_MAX;
}

static void *s_socket(void *ctx, int type)
{
    void *s = zmq_socket(ctx, type);
    if (!s)
        return NULL;
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    return s;
}

/* Sends a Pull up (and returns its worker_id) or down. */
static uint32_t s_send_pull(s_fixture_t *fx, s_dir_t dir)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Pull p = PS__PULL__INIT;
    p.worker_id = 0x5000 + fx->next_pull++;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &p;
    long n = dir == S_UP ? wire_send(fx->dealer, NULL, &env, NULL, 0)
                         : wire_send(fx->router, &fx->peer, &env, NULL, 0);
    if (n <= 0)
        fail_msg("wire_send (%s): %ld, %s", s_dir_name(dir), n, zmq_strerror(errno));
    return p.worker_id;
}

/* The router and the dealer, and one Pull up so that the router knows the
 * dealer's routing id (with ZMQ_ROUTER_MANDATORY, as the server sets it, a
 * send to a peer not yet seen fails). */
static int s_setup(void **state)
{
    s_fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    *state = fx;
    wire_init();
    fx->tensor = malloc(S_TENSOR_BYTES);
    fx->scratch = malloc(S_TENSOR_BYTES);
    fx->ctx = zmq_ctx_new();
    if (!fx->tensor || !fx->scratch || !fx->ctx)
        return -1;
    s_fill_tensor(fx->tensor);
    fx->router = s_socket(fx->ctx, ZMQ_ROUTER);
    fx->dealer = s_socket(fx->ctx, ZMQ_DEALER);
    if (!fx->router || !fx->dealer)
        return -1;
    int64_t maxmsg = WIRE_MAX_MESSAGE;
    int mandatory = 1;
    zmq_setsockopt(fx->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(fx->router, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    zmq_setsockopt(fx->dealer, ZMQ_ROUTING_ID, s_dealer_id, sizeof s_dealer_id);
    char endpoint[256];
    size_t len = sizeof endpoint;
    if (zmq_bind(fx->router, "tcp://127.0.0.1:*") != 0 ||
        zmq_getsockopt(fx->router, ZMQ_LAST_ENDPOINT, endpoint, &len) != 0 ||
        zmq_connect(fx->dealer, endpoint) != 0) {
        fprintf(stderr, "setup: %s\n", zmq_strerror(errno));
        return -1;
    }
    uint32_t id = s_send_pull(fx, S_UP);
    zmq_pollitem_t item = {fx->router, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, S_DEADLINE_MS) != 1) {
        fprintf(stderr, "setup: the router got nothing within %d ms\n", S_DEADLINE_MS);
        return -1;
    }
    wire_msg_t m;
    char err[256];
    int rc = wire_recv(fx->router, &fx->peer, &m, err, sizeof err);
    int ok = rc == 0 && m.env->body_case == PS__ENVELOPE__BODY_PULL &&
             m.env->pull->worker_id == id && fx->peer.len == sizeof s_dealer_id &&
             memcmp(fx->peer.id, s_dealer_id, sizeof s_dealer_id) == 0;
    if (rc == 0)
        wire_msg_close(&m);
    if (!ok)
        fprintf(stderr, "setup: the first Pull did not arrive intact (rc %d: %s)\n", rc,
                rc > 0 ? err : "");
    return ok ? 0 : -1;
}

static int s_teardown(void **state)
{
    s_fixture_t *fx = *state;
    if (!fx)
        return 0;
    if (fx->dealer)
        zmq_close(fx->dealer);
    if (fx->router)
        zmq_close(fx->router);
    if (fx->ctx)
        zmq_ctx_term(fx->ctx);
    free(fx->tensor);
    free(fx->scratch);
    free(fx);
    return 0;
}

/* Waits for and receives one message on the receiving end of dir. Up, the
 * routing id must be the dealer's, whatever the outcome. */
static int s_recv(s_fixture_t *fx, s_dir_t dir, wire_msg_t *m, char *err, size_t errlen)
{
    err[0] = '\0';
    void *sock = dir == S_UP ? fx->router : fx->dealer;
    s_wait(sock);
    wire_peer_t peer;
    memset(&peer, 0xaa, sizeof peer);
    int rc = wire_recv(sock, dir == S_UP ? &peer : NULL, m, err, errlen);
    if (dir == S_UP && rc >= 0) {
        assert_int_equal(peer.len, fx->peer.len);
        assert_memory_equal(peer.id, fx->peer.id, peer.len);
    }
    return rc;
}

/* A good Pull, sent now, must be the next message to arrive: nothing of an
 * earlier message may be left in the socket. */
static void s_expect_in_step(s_fixture_t *fx, s_dir_t dir)
{
    uint32_t id = s_send_pull(fx, dir);
    wire_msg_t m;
    char err[256];
    int rc = s_recv(fx, dir, &m, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: the good Pull after it was refused (rc %d): %s", s_dir_name(dir), rc, err);
    assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_PULL);
    assert_int_equal(m.env->pull->worker_id, id);
    assert_null(m.tensor);
    wire_msg_close(&m);
}

/* Receives one message that must be refused with code and an err that
 * contains want (when not NULL), with nothing left to free; then checks that
 * the socket is still in step. */
static void s_expect_refused(s_fixture_t *fx, s_dir_t dir, const char *what, int code,
                             const char *want)
{
    wire_msg_t m;
    char err[256];
    int rc = s_recv(fx, dir, &m, err, sizeof err);
    if (rc != code)
        fail_msg("%s, %s: wire_recv returned %d (err \"%s\"); want %d", what, s_dir_name(dir), rc,
                 err, code);
    if (want && !strstr(err, want))
        fail_msg("%s, %s: err \"%s\" does not say \"%s\"", what, s_dir_name(dir), err, want);
    assert_null(m.env);
    assert_null(m.tensor);
    assert_int_equal(m.has_tensor_msg, 0);
    wire_msg_close(&m); /* harmless on a refused message */
    s_expect_in_step(fx, dir);
}

/* Sends frames as they are (no codec), after the routing id when down. */
static void s_send_raw(s_fixture_t *fx, s_dir_t dir, int n, const void *const *data,
                       const size_t *len)
{
    void *sock = dir == S_UP ? fx->dealer : fx->router;
    if (dir == S_DOWN)
        assert_int_equal(zmq_send(sock, fx->peer.id, fx->peer.len, ZMQ_SNDMORE), (int)fx->peer.len);
    for (int i = 0; i < n; i++) {
        int rc = zmq_send(sock, data[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0);
        if (rc != (int)len[i])
            fail_msg("zmq_send frame %d: %s", i, zmq_strerror(errno));
    }
}

/* Packs env with this protocol number (wire_send would overwrite it) into
 * buf (caller frees). */
static size_t s_pack(Ps__Envelope *env, uint32_t protocol, uint8_t **buf)
{
    env->protocol = protocol;
    size_t n = ps__envelope__get_packed_size(env);
    *buf = malloc(n + 16); /* + room for a hand-appended field */
    assert_non_null(*buf);
    assert_int_equal(ps__envelope__pack(env, *buf), n);
    return n;
}

/* Does text contain the number v, not as part of a longer number? */
static int s_mentions(const char *text, unsigned long v)
{
    char want[32];
    int n = snprintf(want, sizeof want, "%lu", v);
    for (const char *p = strstr(text, want); p; p = strstr(p + 1, want)) {
        int before = p > text && p[-1] >= '0' && p[-1] <= '9';
        int after = p[n] >= '0' && p[n] <= '9';
        if (!before && !after)
            return 1;
    }
    return 0;
}

/* ---- 1. Round trip of every kind ------------------------------------------------------- */

/* Storage for one message of any kind. */
typedef struct {
    Ps__Envelope env;
    union {
        Ps__Register reg;
        Ps__Welcome welcome;
        Ps__Pull pull;
        Ps__Push push;
        Ps__Weights weights;
        Ps__EpochReport epoch;
        Ps__Done done;
        Ps__Ack ack;
        Ps__Error error;
    } u;
} s_msg_t;

static const Ps__Envelope__BodyCase s_kinds[] = {
    PS__ENVELOPE__BODY_REGISTER, PS__ENVELOPE__BODY_WELCOME, PS__ENVELOPE__BODY_PULL,
    PS__ENVELOPE__BODY_PUSH,     PS__ENVELOPE__BODY_WEIGHTS, PS__ENVELOPE__BODY_EPOCH,
    PS__ENVELOPE__BODY_DONE,     PS__ENVELOPE__BODY_ACK,     PS__ENVELOPE__BODY_ERROR,
};
#define S_NKINDS (sizeof s_kinds / sizeof s_kinds[0])

static int s_needs_tensor(Ps__Envelope__BodyCase kind)
{
    return kind == PS__ENVELOPE__BODY_PUSH || kind == PS__ENVELOPE__BODY_WEIGHTS;
}

/* The distinctive values: each field its own, wide enough to catch a
 * truncation to 32 bits, a lost sign or a float sent as a double. */
#define S_NAME "w\xc3\xb6rker-\xce\xb1:4242" /* UTF-8 */
#define S_HOST "node-17.example"
#define S_MODE "ssp"
#define S_MSG "slot taken: \"w\xc3\xb6rker-\xce\xb1\""

/* Fills msg with a kind's body: distinctive values, or the defaults. Over 80
 * lines because it is a table, one case per message kind; it reads as one. */
static void s_build(s_msg_t *msg, Ps__Envelope__BodyCase kind, int defaults)
{
    memset(msg, 0, sizeof *msg);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    msg->env = env;
    msg->env.body_case = kind;
    switch (kind) {
    case PS__ENVELOPE__BODY_REGISTER: {
        Ps__Register r = PS__REGISTER__INIT;
        if (!defaults)
            r.name = S_NAME, r.host = S_HOST, r.threads = 4000000001u;
        msg->u.reg = r;
        msg->env.register_ = &msg->u.reg;
        break;
    }
    case PS__ENVELOPE__BODY_WELCOME: {
        Ps__Welcome w = PS__WELCOME__INIT;
        if (!defaults) {
            w.worker_id = 3, w.workers = 7, w.run_id = -1234567890123LL, w.mode = S_MODE;
            w.staleness = 11, w.epochs = 13, w.batch_size = 64, w.seed = 0xfedcba9876543210ULL;
            w.train_limit = 60000, w.test_limit = 10000, w.params = WIRE_TENSOR_FLOATS;
        }
        msg->u.welcome = w;
        msg->env.welcome = &msg->u.welcome;
        break;
    }
    case PS__ENVELOPE__BODY_PULL: {
        Ps__Pull p = PS__PULL__INIT;
        if (!defaults)
            p.worker_id = 0xdeadbeefu;
        msg->u.pull = p;
        msg->env.pull = &msg->u.pull;
        break;
    }
    case PS__ENVELOPE__BODY_PUSH: {
        Ps__Push p = PS__PUSH__INIT;
        if (!defaults)
            p.worker_id = 5, p.step = 0x100000001ULL, p.version = 0xffffffffffffff00ULL,
            p.epoch = 9, p.loss = 2.30258512f;
        msg->u.push = p;
        msg->env.push = &msg->u.push;
        break;
    }
    case PS__ENVELOPE__BODY_WEIGHTS: {
        Ps__Weights w = PS__WEIGHTS__INIT;
        if (!defaults)
            w.version = 0x123456789abcULL, w.held_seconds = 0.1234567890123456789;
        msg->u.weights = w;
        msg->env.weights = &msg->u.weights;
        break;
    }
    case PS__ENVELOPE__BODY_EPOCH: {
        Ps__EpochReport e = PS__EPOCH_REPORT__INIT;
        if (!defaults) {
            e.worker_id = 6, e.epoch = 42, e.train_loss = 0.0123456789012345;
            e.test_accuracy = 99.17, e.epoch_seconds = 12.5e3, e.compute_seconds = 1.0 / 3;
            e.push_seconds = 2.0 / 7, e.pull_seconds = 1e-9, e.wait_seconds = 1e300;
            e.images = 0x7000000000000001ULL, e.bytes_sent = 0x8000000000000002ULL;
            e.bytes_received = 18446744073709551615ULL;
        }
        msg->u.epoch = e;
        msg->env.epoch = &msg->u.epoch;
        break;
    }
    case PS__ENVELOPE__BODY_DONE: {
        Ps__Done d = PS__DONE__INIT;
        if (!defaults)
            d.worker_id = 2, d.train_seconds = 3600.000001, d.test_accuracy = -0.5;
        msg->u.done = d;
        msg->env.done = &msg->u.done;
        break;
    }
    case PS__ENVELOPE__BODY_ACK: {
        Ps__Ack a = PS__ACK__INIT;
        if (!defaults)
            a.version = 0xa5a5a5a5a5a5a5a5ULL;
        msg->u.ack = a;
        msg->env.ack = &msg->u.ack;
        break;
    }
    case PS__ENVELOPE__BODY_ERROR: {
        Ps__Error e = PS__ERROR__INIT;
        if (!defaults)
            e.code = PS__ERROR_CODE__ERROR_FULL, e.message = S_MSG;
        msg->u.error = e;
        msg->env.error = &msg->u.error;
        break;
    }
    default: fail_msg("no such kind %d", (int)kind);
    }
}

/* Checks a received body against what s_build put in. */
static void s_check_body(const Ps__Envelope *got, const s_msg_t *want)
{
    assert_int_equal(got->protocol, WIRE_PROTOCOL);
    assert_int_equal(got->body_case, want->env.body_case);
    switch (want->env.body_case) {
    case PS__ENVELOPE__BODY_REGISTER: {
        const Ps__Register *g = got->register_, *w = &want->u.reg;
        assert_string_equal(g->name, w->name);
        assert_string_equal(g->host, w->host);
        assert_int_equal(g->threads, w->threads);
        break;
    }
    case PS__ENVELOPE__BODY_WELCOME: {
        const Ps__Welcome *g = got->welcome, *w = &want->u.welcome;
        assert_int_equal(g->worker_id, w->worker_id);
        assert_int_equal(g->workers, w->workers);
        if (g->run_id != w->run_id)
            fail_msg("run_id: got %lld, want %lld", (long long)g->run_id, (long long)w->run_id);
        assert_string_equal(g->mode, w->mode);
        assert_int_equal(g->staleness, w->staleness);
        assert_int_equal(g->epochs, w->epochs);
        assert_int_equal(g->batch_size, w->batch_size);
        assert_int_equal(g->seed, w->seed);
        assert_int_equal(g->train_limit, w->train_limit);
        assert_int_equal(g->test_limit, w->test_limit);
        assert_int_equal(g->params, w->params);
        break;
    }
    case PS__ENVELOPE__BODY_PULL:
        assert_int_equal(got->pull->worker_id, want->u.pull.worker_id);
        break;
    case PS__ENVELOPE__BODY_PUSH: {
        const Ps__Push *g = got->push, *w = &want->u.push;
        assert_int_equal(g->worker_id, w->worker_id);
        assert_int_equal(g->step, w->step);
        assert_int_equal(g->version, w->version);
        assert_int_equal(g->epoch, w->epoch);
        float gl = g->loss, wl = w->loss;
        if (memcmp(&gl, &wl, sizeof gl) != 0)
            fail_msg("loss: got %a, want %a", (double)gl, (double)wl);
        break;
    }
    case PS__ENVELOPE__BODY_WEIGHTS:
        assert_int_equal(got->weights->version, want->u.weights.version);
        S_ASSERT_FP_EQ(got->weights->held_seconds, want->u.weights.held_seconds);
        break;
    case PS__ENVELOPE__BODY_EPOCH: {
        const Ps__EpochReport *g = got->epoch, *w = &want->u.epoch;
        assert_int_equal(g->worker_id, w->worker_id);
        assert_int_equal(g->epoch, w->epoch);
        S_ASSERT_FP_EQ(g->train_loss, w->train_loss);
        S_ASSERT_FP_EQ(g->test_accuracy, w->test_accuracy);
        S_ASSERT_FP_EQ(g->epoch_seconds, w->epoch_seconds);
        S_ASSERT_FP_EQ(g->compute_seconds, w->compute_seconds);
        S_ASSERT_FP_EQ(g->push_seconds, w->push_seconds);
        S_ASSERT_FP_EQ(g->pull_seconds, w->pull_seconds);
        S_ASSERT_FP_EQ(g->wait_seconds, w->wait_seconds);
        assert_int_equal(g->images, w->images);
        assert_int_equal(g->bytes_sent, w->bytes_sent);
        assert_int_equal(g->bytes_received, w->bytes_received);
        break;
    }
    case PS__ENVELOPE__BODY_DONE:
        assert_int_equal(got->done->worker_id, want->u.done.worker_id);
        S_ASSERT_FP_EQ(got->done->train_seconds, want->u.done.train_seconds);
        S_ASSERT_FP_EQ(got->done->test_accuracy, want->u.done.test_accuracy);
        break;
    case PS__ENVELOPE__BODY_ACK: assert_int_equal(got->ack->version, want->u.ack.version); break;
    case PS__ENVELOPE__BODY_ERROR:
        assert_int_equal(got->error->code, want->u.error.code);
        assert_string_equal(got->error->message, want->u.error.message);
        break;
    default: fail_msg("no such kind %d", (int)want->env.body_case);
    }
}

/* One message of kind each way; the tensor, when the kind has one, is
 * scribbled over right after the send (wire_send copies it) and must arrive
 * byte for byte. */
static void s_round_trip(s_fixture_t *fx, Ps__Envelope__BodyCase kind, int defaults)
{
    for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++) {
        s_msg_t msg;
        s_build(&msg, kind, defaults);
        const float *t = NULL;
        if (s_needs_tensor(kind)) {
            memcpy(fx->scratch, fx->tensor, S_TENSOR_BYTES);
            t = fx->scratch;
        }
        long sent = dir == S_UP ? wire_send(fx->dealer, NULL, &msg.env, t, 0)
                                : wire_send(fx->router, &fx->peer, &msg.env, t, 0);
        if (sent <= 0)
            fail_msg("wire_send %s %s: %ld, %s", wire_kind_name(kind), s_dir_name(dir), sent,
                     zmq_strerror(errno));
        assert_int_equal(msg.env.protocol, WIRE_PROTOCOL);
        if (t)
            memset(fx->scratch, 0x5a, S_TENSOR_BYTES);

        wire_msg_t m;
        char err[256];
        int rc = s_recv(fx, dir, &m, err, sizeof err);
        if (rc != 0)
            fail_msg("%s %s: wire_recv %d: %s", wire_kind_name(kind), s_dir_name(dir), rc, err);
        s_check_body(m.env, &msg);
        assert_int_equal(m.bytes, (size_t)sent);
        if (t) {
            assert_non_null(m.tensor);
            assert_int_equal(sent, (long)(S_TENSOR_BYTES + ps__envelope__get_packed_size(m.env)));
            if (memcmp(m.tensor, fx->tensor, S_TENSOR_BYTES) != 0)
                fail_msg("%s %s: the tensor differs", wire_kind_name(kind), s_dir_name(dir));
        } else {
            assert_null(m.tensor);
        }
        wire_msg_close(&m);
    }
}

static void test_round_trip_every_kind(void **state)
{
    for (size_t i = 0; i < S_NKINDS; i++)
        s_round_trip(*state, s_kinds[i], 0);
}

/* A body with every field at its default packs to an empty submessage; it
 * must still arrive as its kind, not as "no body". */
static void test_round_trip_defaults(void **state)
{
    for (size_t i = 0; i < S_NKINDS; i++)
        s_round_trip(*state, s_kinds[i], 1);
}

/* ---- 2. Protocol version ----------------------------------------------------------------- */

static void s_version_mismatch(s_fixture_t *fx, s_dir_t dir, Ps__Envelope__BodyCase kind)
{
    s_msg_t msg;
    s_build(&msg, kind, 0);
    uint8_t *h;
    size_t hlen = s_pack(&msg.env, WIRE_PROTOCOL + 1, &h);
    const void *data[2] = {h, fx->tensor};
    size_t len[2] = {hlen, S_TENSOR_BYTES};
    s_send_raw(fx, dir, s_needs_tensor(kind) ? 2 : 1, data, len);
    free(h);

    wire_msg_t m;
    char err[256];
    int rc = s_recv(fx, dir, &m, err, sizeof err);
    assert_int_equal(rc, PS__ERROR_CODE__ERROR_VERSION);
    if (!s_mentions(err, WIRE_PROTOCOL) || !s_mentions(err, WIRE_PROTOCOL + 1))
        fail_msg("err \"%s\" does not name both versions (%d and %d)", err, WIRE_PROTOCOL,
                 WIRE_PROTOCOL + 1);
    assert_null(m.env);
    assert_null(m.tensor);
    if (dir == S_UP) {
        /* As the server does: the refusal goes back to the peer it came from. */
        assert_true(wire_send_error(fx->router, &fx->peer, 0, (Ps__ErrorCode)rc, err) > 0);
        char err2[256];
        assert_int_equal(s_recv(fx, S_DOWN, &m, err2, sizeof err2), 0);
        assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_ERROR);
        assert_int_equal(m.env->error->code, PS__ERROR_CODE__ERROR_VERSION);
        assert_string_equal(m.env->error->message, err);
        wire_msg_close(&m);
    }
    s_expect_in_step(fx, dir);
}

static void test_version_mismatch(void **state)
{
    for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++) {
        s_version_mismatch(*state, dir, PS__ENVELOPE__BODY_PULL);
        s_version_mismatch(*state, dir, PS__ENVELOPE__BODY_PUSH); /* its tensor is dropped */
    }
}

/* ---- 3. Malformed input ------------------------------------------------------------------ */

/* A malformed message as frames: a header (hand-packed or raw bytes), then
 * optional further frames. */
typedef struct {
    const char *what;
    Ps__Envelope__BodyCase kind; /* body of a packed header; NOT_SET: no body */
    const uint8_t *raw;          /* raw header bytes instead of a packed one */
    size_t raw_len;
    size_t pad_name_to; /* grow a Register's name until the header has this size */
    int append_unknown; /* append an unknown field (a future kind) */
    int tensor;         /* a tensor frame follows... */
    long tensor_delta;  /* ...of WIRE_TENSOR_FLOATS*4 + this many bytes */
    long bad_index;     /* ...with +inf/-inf/NaN here (-1: none) */
    float bad_value;
    int extra;        /* this many empty frames after it all */
    int code;         /* what wire_recv must return */
    const char *says; /* and a part of what err must say */
} s_bad_t;

/* An 11-byte varint as the first tag: longer than any protobuf parser accepts. */
static const uint8_t s_garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 'n',  'o',  't',  ' ',  'p'};

static void s_send_bad(s_fixture_t *fx, s_dir_t dir, const s_bad_t *b)
{
    uint8_t *h = NULL;
    size_t hlen = 0;
    char *name = NULL;
    if (b->raw) {
        hlen = b->raw_len;
    } else {
        s_msg_t msg;
        s_build(&msg, b->kind == PS__ENVELOPE__BODY__NOT_SET ? PS__ENVELOPE__BODY_PULL : b->kind,
                0);
        if (b->kind == PS__ENVELOPE__BODY__NOT_SET)
            msg.env.body_case = PS__ENVELOPE__BODY__NOT_SET;
        if (b->pad_name_to) {
            size_t n = 0;
            name = calloc(b->pad_name_to + 1, 1);
            assert_non_null(name);
            msg.u.reg.name = name;
            msg.env.protocol = WIRE_PROTOCOL; /* counted in the size */
            while (ps__envelope__get_packed_size(&msg.env) < b->pad_name_to)
                name[n++] = 'n';
        }
        hlen = s_pack(&msg.env, WIRE_PROTOCOL, &h);
        if (b->pad_name_to)
            assert_int_equal(hlen, b->pad_name_to);
        if (b->append_unknown) {
            h[hlen++] = 0xa0; /* field 100 (no kind has it), varint: tag (100 << 3) | 0 */
            h[hlen++] = 0x06;
            h[hlen++] = 0x01;
        }
    }
    size_t tlen = (size_t)((long)S_TENSOR_BYTES + b->tensor_delta);
    float *t = NULL;
    if (b->tensor) {
        t = calloc(1, tlen + 1);
        assert_non_null(t);
        memcpy(t, fx->tensor, tlen < S_TENSOR_BYTES ? tlen : S_TENSOR_BYTES);
        if (b->bad_index >= 0)
            t[b->bad_index] = b->bad_value;
    }
    const void *data[8] = {b->raw ? (const void *)b->raw : h};
    size_t len[8] = {hlen};
    int n = 1;
    if (b->tensor)
        data[n] = t, len[n++] = tlen;
    for (int i = 0; i < b->extra; i++)
        data[n] = "", len[n++] = 0;
    s_send_raw(fx, dir, n, data, len);
    free(t);
    free(h);
    free(name);
}

static void test_malformed(void **state)
{
    s_fixture_t *fx = *state;
    const int MAL = PS__ERROR_CODE__ERROR_MALFORMED;
    const float inf = INFINITY, nan = NAN;
    const long last = WIRE_TENSOR_FLOATS - 1;
    const s_bad_t bad[] = {
        {.what = "garbage header",
         .raw = s_garbage,
         .raw_len = sizeof s_garbage,
         .bad_index = -1,
         .code = MAL,
         .says = "not a valid Envelope"},
        {.what = "garbage header + 2 more frames",
         .raw = s_garbage,
         .raw_len = sizeof s_garbage,
         .tensor = 1,
         .bad_index = -1,
         .extra = 1,
         .code = MAL,
         .says = "not a valid Envelope"},
        {.what = "header one byte over the limit",
         .kind = PS__ENVELOPE__BODY_REGISTER,
         .pad_name_to = WIRE_MAX_HEADER + 1,
         .bad_index = -1,
         .code = MAL,
         .says = "over the limit"},
        {.what = "header over the limit + a tensor + a frame",
         .kind = PS__ENVELOPE__BODY_REGISTER,
         .pad_name_to = 3 * WIRE_MAX_HEADER,
         .tensor = 1,
         .bad_index = -1,
         .extra = 1,
         .code = MAL,
         .says = "over the limit"},
        {.what = "Envelope with no body",
         .kind = PS__ENVELOPE__BODY__NOT_SET,
         .bad_index = -1,
         .code = MAL,
         .says = "no body"},
        {.what = "unknown body (a later release's kind)",
         .kind = PS__ENVELOPE__BODY__NOT_SET,
         .append_unknown = 1,
         .bad_index = -1,
         .code = MAL,
         .says = "no body"},
        {.what = "Push without its tensor",
         .kind = PS__ENVELOPE__BODY_PUSH,
         .bad_index = -1,
         .code = MAL,
         .says = "lacks a tensor"},
        {.what = "Weights without its tensor",
         .kind = PS__ENVELOPE__BODY_WEIGHTS,
         .bad_index = -1,
         .code = MAL,
         .says = "lacks a tensor"},
        {.what = "Register with a tensor",
         .kind = PS__ENVELOPE__BODY_REGISTER,
         .tensor = 1,
         .bad_index = -1,
         .code = MAL,
         .says = "must not have a tensor"},
        {.what = "Ack with an empty tensor frame",
         .kind = PS__ENVELOPE__BODY_ACK,
         .tensor = 1,
         .tensor_delta = -(long)S_TENSOR_BYTES,
         .bad_index = -1,
         .code = MAL,
         .says = "must not have a tensor"},
        {.what = "tensor 4 bytes short",
         .kind = PS__ENVELOPE__BODY_PUSH,
         .tensor = 1,
         .tensor_delta = -4,
         .bad_index = -1,
         .code = MAL,
         .says = "tensor frame has 900132 bytes"},
        {.what = "tensor 4 bytes long",
         .kind = PS__ENVELOPE__BODY_WEIGHTS,
         .tensor = 1,
         .tensor_delta = 4,
         .bad_index = -1,
         .code = MAL,
         .says = "tensor frame has 900140 bytes"},
        {.what = "tensor 1 byte short",
         .kind = PS__ENVELOPE__BODY_PUSH,
         .tensor = 1,
         .tensor_delta = -1,
         .bad_index = -1,
         .code = MAL,
         .says = "expected 900136"},
        {.what = "empty tensor frame",
         .kind = PS__ENVELOPE__BODY_PUSH,
         .tensor = 1,
         .tensor_delta = -(long)S_TENSOR_BYTES,
         .bad_index = -1,
         .code = MAL,
         .says = "tensor frame has 0 bytes"},
        {.what = "NaN in the tensor",
         .kind = PS__ENVELOPE__BODY_PUSH,
         .tensor = 1,
         .bad_index = 777,
         .bad_value = nan,
         .code = MAL,
         .says = "tensor value 777 is not finite"},
        {.what = "+Inf at the tensor's end",
         .kind = PS__ENVELOPE__BODY_WEIGHTS,
         .tensor = 1,
         .bad_index = last,
         .bad_value = inf,
         .code = MAL,
         .says = "tensor value 225033 is not finite"},
        {.what = "-Inf at the tensor's start",
         .kind = PS__ENVELOPE__BODY_PUSH,
         .tensor = 1,
         .bad_index = 0,
         .bad_value = -inf,
         .code = MAL,
         .says = "tensor value 0 is not finite"},
        /* A kind without a tensor cannot tell an extra frame from a tensor. */
        {.what = "Pull + an extra frame",
         .kind = PS__ENVELOPE__BODY_PULL,
         .bad_index = -1,
         .extra = 1,
         .code = MAL,
         .says = "must not have a tensor"},
        {.what = "Done + 2 extra frames",
         .kind = PS__ENVELOPE__BODY_DONE,
         .bad_index = -1,
         .extra = 2,
         .code = MAL,
         .says = "must not have a tensor"},
        {.what = "Push + tensor + 3 extra frames",
         .kind = PS__ENVELOPE__BODY_PUSH,
         .tensor = 1,
         .bad_index = -1,
         .extra = 3,
         .code = MAL,
         .says = "extra frames"},
        {.what = "NaN in the tensor + an extra frame",
         .kind = PS__ENVELOPE__BODY_PUSH,
         .tensor = 1,
         .bad_index = 5,
         .bad_value = nan,
         .extra = 1,
         .code = MAL,
         .says = "tensor value 5 is not finite"},
    };
    assert_null(ps__envelope__unpack(NULL, sizeof s_garbage, s_garbage)); /* really garbage */
    assert_int_equal((long)S_TENSOR_BYTES, 900136L); /* the sizes named in .says */
    for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++)
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            s_send_bad(fx, dir, &bad[i]);
            s_expect_refused(fx, dir, bad[i].what, bad[i].code, bad[i].says);
        }
}

/* A header of exactly WIRE_MAX_HEADER bytes is still accepted. */
static void test_header_at_the_limit(void **state)
{
    s_fixture_t *fx = *state;
    for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++) {
        s_bad_t b = {
            .kind = PS__ENVELOPE__BODY_REGISTER, .pad_name_to = WIRE_MAX_HEADER, .bad_index = -1};
        s_send_bad(fx, dir, &b);
        wire_msg_t m;
        char err[256];
        int rc = s_recv(fx, dir, &m, err, sizeof err);
        if (rc != 0)
            fail_msg("%s: a %d-byte header was refused (%d): %s", s_dir_name(dir), WIRE_MAX_HEADER,
                     rc, err);
        assert_int_equal(m.bytes, WIRE_MAX_HEADER);
        assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_REGISTER);
        assert_true(strlen(m.env->register_->name) > WIRE_MAX_HEADER - 64);
        assert_string_equal(m.env->register_->host, S_HOST);
        wire_msg_close(&m);
        s_expect_in_step(fx, dir);
    }
}

/* An empty header frame decodes as an Envelope with every field at its
 * default: protocol 0 (which no release speaks: versions start at 1, and
 * proto3 cannot tell 0 from "not sent") and no body. It is not a message from
 * another release but no message at all, so MALFORMED, not VERSION (which
 * would tell the peer to "run the same release"). */
static void test_empty_header(void **state)
{
    s_fixture_t *fx = *state;
    for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++) {
        const void *data[1] = {""};
        size_t len[1] = {0};
        s_send_raw(fx, dir, 1, data, len);
        s_expect_refused(fx, dir, "empty header frame", PS__ERROR_CODE__ERROR_MALFORMED, NULL);
    }
}

/* ---- 4. wire_send_error ------------------------------------------------------------------ */

static void test_send_error(void **state)
{
    s_fixture_t *fx = *state;
    for (int code = PS__ERROR_CODE__ERROR_VERSION; code <= PS__ERROR_CODE__ERROR_STATE; code++)
        for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++) {
            char text[128];
            snprintf(text, sizeof text, "error %d going %s: \xe2\x9c\x97 refused", code,
                     s_dir_name(dir));
            long sent = dir == S_UP ? wire_send_error(fx->dealer, NULL, 0, code, text)
                                    : wire_send_error(fx->router, &fx->peer, 0, code, text);
            assert_true(sent > 0);
            wire_msg_t m;
            char err[256];
            int rc = s_recv(fx, dir, &m, err, sizeof err);
            if (rc != 0)
                fail_msg("wire_recv %d: %s", rc, err);
            assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_ERROR);
            assert_int_equal(m.env->error->code, code);
            assert_string_equal(m.env->error->message, text);
            assert_null(m.tensor);
            assert_int_equal(m.bytes, (size_t)sent);
            wire_msg_close(&m);
        }
}

/* ---- 5. wire_kind_name ------------------------------------------------------------------- */

static void test_kind_name(void **state)
{
    (void)state;
    static const char *const names[] = {"register", "welcome", "pull", "push", "weights",
                                        "epoch",    "done",    "ack",  "error"};
    for (size_t i = 0; i < S_NKINDS; i++)
        assert_string_equal(wire_kind_name(s_kinds[i]), names[i]);
    assert_string_equal(wire_kind_name(PS__ENVELOPE__BODY__NOT_SET), "unknown");
    assert_string_equal(wire_kind_name((Ps__Envelope__BodyCase)1), "unknown");
    assert_string_equal(wire_kind_name((Ps__Envelope__BodyCase)11), "unknown");
    assert_string_equal(wire_kind_name((Ps__Envelope__BodyCase)-1), "unknown");
}

/* ---- 6. wire_msg_close ------------------------------------------------------------------- */

static void test_close_twice(void **state)
{
    s_fixture_t *fx = *state;
    s_msg_t msg;
    s_build(&msg, PS__ENVELOPE__BODY_WEIGHTS, 0);
    assert_true(wire_send(fx->router, &fx->peer, &msg.env, fx->tensor, 0) > 0);
    wire_msg_t m;
    char err[256];
    assert_int_equal(s_recv(fx, S_DOWN, &m, err, sizeof err), 0);
    assert_non_null(m.tensor);
    wire_msg_close(&m);
    assert_null(m.env);
    assert_null(m.tensor);
    wire_msg_close(&m);

    wire_msg_t zero;
    memset(&zero, 0, sizeof zero);
    wire_msg_close(&zero);
    wire_msg_close(&zero);
}

/* ---- 7. Nothing to read ------------------------------------------------------------------ */

/* With a receive timeout (wire_recv has no flags), an empty socket gives -1
 * and EAGAIN, not a hang, and nothing to free. */
static void test_nothing_to_read(void **state)
{
    s_fixture_t *fx = *state;
    int zero = 0, forever = -1;
    void *socks[2] = {fx->router, fx->dealer};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(zmq_setsockopt(socks[i], ZMQ_RCVTIMEO, &zero, sizeof zero), 0);
        wire_peer_t peer;
        wire_msg_t m;
        char err[64];
        errno = 0;
        assert_int_equal(wire_recv(socks[i], i == 0 ? &peer : NULL, &m, err, sizeof err), -1);
        assert_int_equal(errno, EAGAIN);
        assert_null(m.env);
        assert_null(m.tensor);
        assert_int_equal(zmq_setsockopt(socks[i], ZMQ_RCVTIMEO, &forever, sizeof forever), 0);
    }
    s_expect_in_step(fx, S_UP);
    s_expect_in_step(fx, S_DOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_kind),
        cmocka_unit_test(test_round_trip_defaults),
        cmocka_unit_test(test_version_mismatch),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_header_at_the_limit),
        cmocka_unit_test(test_empty_header),
        cmocka_unit_test(test_send_error),
        cmocka_unit_test(test_kind_name),
        cmocka_unit_test(test_close_twice),
        cmocka_unit_test(test_nothing_to_read),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
