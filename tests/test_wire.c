/* Tests for wire, the codec between ZeroMQ frames and checked ps.proto
 * messages. One process, one context: a ROUTER (the server's side) bound to
 * an ephemeral port on 127.0.0.1 and a DEALER (a worker's side) connected to
 * it. Every message kind (the server group's too) makes the round trip both
 * ways with every field set to a distinctive value and with every field at
 * its default; tensors of a counted part of the vector travel as float32,
 * float16 and int8 (a partial last block). Then hand-made frames that a
 * broken or hostile peer could send (another protocol version, garbage, a
 * missing, short, extra or non-finite tensor, a count over the vector, a
 * frame whose size does not match its count and encoding...) must each be
 * refused with the right error code and a message that says why, leave
 * nothing to free, and leave the socket in step so that the next good
 * message still arrives. A frame at an odd address (over inproc, where
 * ZeroMQ hands over the frame as it was sent) must be accepted and equal.
 * Nothing sleeps: every receive waits in zmq_poll with a deadline and fails
 * the test when it expires. */
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

#include "models.h"
#include "wire.h"

#define S_DEADLINE_MS 5000
/* The fixtures' messages are of the default model's length (the tests of
 * other lengths say theirs). */
#define S_N ((size_t)MODEL_NPARAMS)
#define S_TENSOR_BYTES (S_N * sizeof(float))

/* A distinctive routing id: not text, with a zero byte inside. */
static const unsigned char s_dealer_id[] = {'w', 'k', 0x00, 0xff, 0x7f, '7'};

typedef struct {
    void *ctx;
    void *router;     /* the server's side */
    void *dealer;     /* a worker's side */
    wire_peer_t peer; /* the dealer as the router sees it */
    float *tensor;    /* the reference: S_N distinct values */
    float *scratch;   /* what is sent, scribbled over after each send */
    float *exact;     /* values that float16 and int8 carry exactly (s_fill_exact) */
    /* an inproc pair, where a frame arrives at the address it was sent
     * from (test_odd_address); here so that the teardown closes it even
     * after a failure, which would else leave zmq_ctx_term waiting */
    void *odd_router, *odd_dealer;
    uint8_t *odd_buf;   /* the frame's memory; the frame lies at odd_buf + 1 */
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

#define S_ASSERT_I64_EQ(got, want)                                                                 \
    do {                                                                                           \
        long long g_ = (got), w_ = (want);                                                         \
        if (g_ != w_)                                                                              \
            fail_msg("%s: got %lld, want %lld", #got, g_, w_);                                     \
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
    for (size_t i = 0; i < S_N; i++)
        t[i] = (i % 2 ? -1.0f : 1.0f) * ((float)i + 0.25f);
    t[0] = -0.0f;
    t[1] = FLT_MIN / 4; /* subnormal */
    t[2] = FLT_MAX;
    t[3] = -FLT_MAX;
}

/* Values that float16 and int8 carry exactly: in each int8 block of 256,
 * multiples of 2^-(1 + b % 8) up to 127 of them, the block's first value
 * the largest in magnitude (so every block's scale, a partial last one's
 * too, is exactly that step); the step differs between neighbouring blocks
 * so that a shift by a block shows. */
static void s_fill_exact(float *t)
{
    for (size_t i = 0; i < S_N; i++) {
        int q = (int)(i % WIRE_I8_BLOCK % 255) - 127; /* -127 .. 127 */
        t[i] = ldexpf((float)q, -1 - (int)(i / WIRE_I8_BLOCK % 8));
    }
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
    fx->scratch = malloc(S_TENSOR_BYTES + sizeof(float)); /* + 1: a guard */
    fx->exact = malloc(S_TENSOR_BYTES);
    fx->ctx = zmq_ctx_new();
    if (!fx->tensor || !fx->scratch || !fx->exact || !fx->ctx)
        return -1;
    s_fill_tensor(fx->tensor);
    s_fill_exact(fx->exact);
    fx->router = s_socket(fx->ctx, ZMQ_ROUTER);
    fx->dealer = s_socket(fx->ctx, ZMQ_DEALER);
    if (!fx->router || !fx->dealer)
        return -1;
    int64_t maxmsg = wire_max_message(S_N);
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
    fx->odd_router = s_socket(fx->ctx, ZMQ_ROUTER);
    fx->odd_dealer = s_socket(fx->ctx, ZMQ_DEALER);
    if (!fx->odd_router || !fx->odd_dealer ||
        zmq_bind(fx->odd_router, "inproc://test-wire-odd") != 0 ||
        zmq_connect(fx->odd_dealer, "inproc://test-wire-odd") != 0) {
        fprintf(stderr, "setup: inproc: %s\n", zmq_strerror(errno));
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
    int rc = wire_recv(fx->router, &fx->peer, &m, S_N, err, sizeof err);
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
    if (fx->odd_dealer)
        zmq_close(fx->odd_dealer);
    if (fx->odd_router)
        zmq_close(fx->odd_router);
    free(fx->odd_buf);
    if (fx->router)
        zmq_close(fx->router);
    if (fx->ctx)
        zmq_ctx_term(fx->ctx);
    free(fx->tensor);
    free(fx->scratch);
    free(fx->exact);
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
    int rc = wire_recv(sock, dir == S_UP ? &peer : NULL, m, S_N, err, errlen);
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

/* Storage for one message of any kind, with the submessages it points to. */
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
        Ps__ShardJoin join;
        Ps__ShardWelcome swelcome;
        Ps__Membership membership;
        Ps__ShardPing ping;
        Ps__ShardFinal final;
    } u;
    Ps__ShardRange ranges[3]; /* Welcome.shards */
    Ps__ShardRange *range_ptrs[3];
    Ps__Member members[3]; /* Membership.members */
    Ps__Member *member_ptrs[3];
    Ps__ShardPing stats; /* ShardFinal.stats */
} s_msg_t;

static const Ps__Envelope__BodyCase s_kinds[] = {
    PS__ENVELOPE__BODY_REGISTER,   PS__ENVELOPE__BODY_WELCOME,       PS__ENVELOPE__BODY_PULL,
    PS__ENVELOPE__BODY_PUSH,       PS__ENVELOPE__BODY_WEIGHTS,       PS__ENVELOPE__BODY_EPOCH,
    PS__ENVELOPE__BODY_DONE,       PS__ENVELOPE__BODY_ACK,           PS__ENVELOPE__BODY_ERROR,
    PS__ENVELOPE__BODY_SHARD_JOIN, PS__ENVELOPE__BODY_SHARD_WELCOME, PS__ENVELOPE__BODY_MEMBERSHIP,
    PS__ENVELOPE__BODY_SHARD_PING, PS__ENVELOPE__BODY_SHARD_FINAL,
};
#define S_NKINDS (sizeof s_kinds / sizeof s_kinds[0])

static int s_needs_tensor(Ps__Envelope__BodyCase kind)
{
    return kind == PS__ENVELOPE__BODY_PUSH || kind == PS__ENVELOPE__BODY_WEIGHTS ||
           kind == PS__ENVELOPE__BODY_SHARD_FINAL;
}

/* The distinctive values: each field its own, wide enough to catch a
 * truncation to 32 bits, a lost sign or a float sent as a double. The
 * codec checks no field's meaning (the server does), so some are values no
 * server would send. */
#define S_NAME "w\xc3\xb6rker-\xce\xb1:4242" /* UTF-8 */
#define S_HOST "node-17.example"
#define S_MODE "ssp"
#define S_MSG "slot taken: \"w\xc3\xb6rker-\xce\xb1\""
#define S_KEY "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7" /* a Z85 public key */
#define S_SHARD_EP "tcp://shard-\xce\xb1.example:5556"
#define S_REQUEST 0xfedcba9876543211ULL

/* Welcome.shards: a group of 3, the head first ("" endpoint). */
static void s_build_ranges(s_msg_t *msg)
{
    static const struct {
        const char *endpoint, *key;
        uint32_t lo, hi;
    } r[3] = {
        {"", "", 0, 75011}, {S_SHARD_EP, S_KEY, 75011, 150022}, {"tcp://[::1]:7", "", 150022, S_N}};
    for (int i = 0; i < 3; i++) {
        ps__shard_range__init(&msg->ranges[i]);
        msg->ranges[i].endpoint = (char *)r[i].endpoint;
        msg->ranges[i].public_key = (char *)r[i].key;
        msg->ranges[i].lo = r[i].lo;
        msg->ranges[i].hi = r[i].hi;
        msg->range_ptrs[i] = &msg->ranges[i];
    }
    msg->u.welcome.n_shards = 3;
    msg->u.welcome.shards = msg->range_ptrs;
}

/* Membership.members: two distinctive members and one at the defaults. */
static void s_build_members(s_msg_t *msg)
{
    for (int i = 0; i < 3; i++) {
        ps__member__init(&msg->members[i]);
        msg->member_ptrs[i] = &msg->members[i];
    }
    Ps__Member *a = &msg->members[0], *b = &msg->members[2];
    a->id = 4000000000u, a->incarnation = 3, a->active = 1, a->token = 0x8000000000000001ULL;
    a->compress = PS__COMPRESSION__COMPRESSION_INT8, a->key = S_KEY, a->start_step = 1ULL << 40;
    b->id = 1, b->done = 1, b->token = UINT64_MAX, b->compress = PS__COMPRESSION__COMPRESSION_FP16;
    b->key = "", b->start_step = 12345;
    msg->u.membership.n_members = 3;
    msg->u.membership.members = msg->member_ptrs;
}

/* A ShardPing's figures, distinctive (seed makes each message's its own). */
static void s_build_ping(Ps__ShardPing *p, uint64_t seed)
{
    p->shard = (uint32_t)(seed + 1);
    p->seq = (1ULL << 40) + seed;
    p->version = 0x0102030405060708ULL + seed;
    p->updates = 0x1111111111ULL + seed;
    p->bytes_in = 0x7fffffffffffffffULL - seed;
    p->bytes_out = 0x8000000000000000ULL + seed;
    p->apply_seconds = 0.1 + 1e-17 * (double)seed;
    p->duplicates = UINT64_MAX - seed;
}

/* Fills msg with a kind's body: distinctive values, or the defaults. Over 80
 * lines because it is a table, one case per message kind; it reads as one. */
static void s_build(s_msg_t *msg, Ps__Envelope__BodyCase kind, int defaults)
{
    memset(msg, 0, sizeof *msg);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    msg->env = env;
    msg->env.body_case = kind;
    if (!defaults)
        msg->env.request_id = S_REQUEST;
    switch (kind) {
    case PS__ENVELOPE__BODY_REGISTER: {
        Ps__Register r = PS__REGISTER__INIT;
        if (!defaults)
            r.name = S_NAME, r.host = S_HOST, r.threads = 4000000001u,
            r.compress = PS__COMPRESSION__COMPRESSION_INT8;
        msg->u.reg = r;
        msg->env.register_ = &msg->u.reg;
        break;
    }
    case PS__ENVELOPE__BODY_WELCOME: {
        Ps__Welcome w = PS__WELCOME__INIT;
        if (!defaults) {
            w.worker_id = 3, w.workers = 7, w.run_id = -1234567890123LL, w.mode = S_MODE;
            w.staleness = 11, w.epochs = 13, w.batch_size = 64, w.seed = 0xfedcba9876543210ULL;
            w.train_limit = 60000, w.test_limit = 10000, w.params = S_N;
            w.incarnation = 0xfffffffeu, w.start_step = 0x123456789ULL;
            w.compress = PS__COMPRESSION__COMPRESSION_FP16, w.lr = 0.0123456789012345678;
            w.token = 0x8000000000000001ULL, w.dataset = "fashion-mnist";
            w.data_fingerprint = 0xdeadbeefu, w.momentum = 0.875, w.alive_seconds = 7.5e-3;
        }
        msg->u.welcome = w;
        if (!defaults)
            s_build_ranges(msg);
        msg->env.welcome = &msg->u.welcome;
        break;
    }
    case PS__ENVELOPE__BODY_PULL: {
        Ps__Pull p = PS__PULL__INIT;
        if (!defaults)
            p.worker_id = 0xdeadbeefu, p.token = 0xfedcba9876543210ULL;
        msg->u.pull = p;
        msg->env.pull = &msg->u.pull;
        break;
    }
    case PS__ENVELOPE__BODY_PUSH: {
        Ps__Push p = PS__PUSH__INIT;
        if (!defaults) {
            p.worker_id = 5, p.step = 0x100000001ULL, p.version = 0xffffffffffffff00ULL;
            p.epoch = 9, p.loss = 2.30258512f, p.incarnation = 0xfffffff7u;
            p.token = 0xc0ffee0000000001ULL, p.offset = 1000, p.count = 224000;
            p.part = 0x01020304u, p.parts = 0xfffffff0u, p.final_model = 1;
        }
        msg->u.push = p;
        msg->env.push = &msg->u.push;
        break;
    }
    case PS__ENVELOPE__BODY_WEIGHTS: {
        Ps__Weights w = PS__WEIGHTS__INIT;
        if (!defaults)
            w.version = 0x123456789abcULL, w.held_seconds = 0.1234567890123456789,
            w.offset = 112517, w.count = 112517;
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
            d.worker_id = 2, d.train_seconds = 3600.000001, d.test_accuracy = -0.5, d.leaving = 1;
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
            e.code = PS__ERROR_CODE__ERROR_RETRY, e.message = S_MSG;
        msg->u.error = e;
        msg->env.error = &msg->u.error;
        break;
    }
    case PS__ENVELOPE__BODY_SHARD_JOIN: {
        Ps__ShardJoin j = PS__SHARD_JOIN__INIT;
        if (!defaults)
            j.shard = 63, j.endpoint = S_SHARD_EP, j.public_key = S_KEY, j.resumed = 1,
            j.version = UINT64_MAX;
        msg->u.join = j;
        msg->env.shard_join = &msg->u.join;
        break;
    }
    case PS__ENVELOPE__BODY_SHARD_WELCOME: {
        Ps__ShardWelcome w = PS__SHARD_WELCOME__INIT;
        if (!defaults) {
            w.shard = 2, w.shards = 3, w.lo = 150022, w.hi = S_N;
            w.run_id = -9876543210LL, w.mode = "async", w.staleness = 5, w.workers = 4000000003u;
            w.epochs = 17, w.batch_size = 128, w.seed = 0x0123456789abcdefULL, w.lr = 1.0 / 3;
            w.momentum = 0.9, w.train_limit = 59999, w.checkpoint_every = 250;
            w.version = 0x7fffffffffffffffULL, w.lr_linear = 1, w.warmup_epochs = 2.5;
            w.dataset = "mnist";
        }
        msg->u.swelcome = w;
        msg->env.shard_welcome = &msg->u.swelcome;
        break;
    }
    case PS__ENVELOPE__BODY_MEMBERSHIP: {
        Ps__Membership m = PS__MEMBERSHIP__INIT;
        if (!defaults)
            m.seq = 0x100000000ULL, m.over = 1, m.started = 1, m.rollbacks = 0xfffffffeu,
            m.rollback_version = 0x8000000000000000ULL, m.run_id = -5;
        msg->u.membership = m;
        if (!defaults)
            s_build_members(msg);
        msg->env.membership = &msg->u.membership;
        break;
    }
    case PS__ENVELOPE__BODY_SHARD_PING: {
        Ps__ShardPing p = PS__SHARD_PING__INIT;
        if (!defaults)
            s_build_ping(&p, 0);
        msg->u.ping = p;
        msg->env.shard_ping = &msg->u.ping;
        break;
    }
    case PS__ENVELOPE__BODY_SHARD_FINAL: {
        Ps__ShardFinal f = PS__SHARD_FINAL__INIT;
        if (!defaults) {
            f.shard = 2, f.version = 0x0abcdef012345678ULL, f.offset = 150022, f.count = 75012;
            ps__shard_ping__init(&msg->stats);
            s_build_ping(&msg->stats, 7);
            f.stats = &msg->stats;
        }
        msg->u.final = f;
        msg->env.shard_final = &msg->u.final;
        break;
    }
    default: fail_msg("no such kind %d", (int)kind);
    }
}

/* Where the tensor of a message of a kind with one starts in the flat
 * vector and how many values it holds (the header's count; 0 there: all). */
static void s_tensor_span(const s_msg_t *msg, size_t *offset, size_t *count)
{
    uint32_t off = 0, n = 0;
    switch (msg->env.body_case) {
    case PS__ENVELOPE__BODY_PUSH: off = msg->u.push.offset, n = msg->u.push.count; break;
    case PS__ENVELOPE__BODY_WEIGHTS: off = msg->u.weights.offset, n = msg->u.weights.count; break;
    case PS__ENVELOPE__BODY_SHARD_FINAL: off = msg->u.final.offset, n = msg->u.final.count; break;
    default: fail_msg("kind %d has no tensor", (int)msg->env.body_case);
    }
    *offset = off;
    *count = n ? n : S_N;
}

/* Makes a message of a kind with a tensor carry the whole vector (count 0),
 * as the hand-made frames below do. */
static void s_whole(s_msg_t *msg)
{
    switch (msg->env.body_case) {
    case PS__ENVELOPE__BODY_PUSH: msg->u.push.offset = msg->u.push.count = 0; break;
    case PS__ENVELOPE__BODY_WEIGHTS: msg->u.weights.offset = msg->u.weights.count = 0; break;
    case PS__ENVELOPE__BODY_SHARD_FINAL: msg->u.final.offset = msg->u.final.count = 0; break;
    default: break;
    }
}

static void s_check_ping(const Ps__ShardPing *g, const Ps__ShardPing *w)
{
    assert_int_equal(g->shard, w->shard);
    assert_int_equal(g->seq, w->seq);
    assert_int_equal(g->version, w->version);
    assert_int_equal(g->updates, w->updates);
    assert_int_equal(g->bytes_in, w->bytes_in);
    assert_int_equal(g->bytes_out, w->bytes_out);
    S_ASSERT_FP_EQ(g->apply_seconds, w->apply_seconds);
    assert_int_equal(g->duplicates, w->duplicates);
}

static void s_check_welcome(const Ps__Welcome *g, const Ps__Welcome *w)
{
    assert_int_equal(g->worker_id, w->worker_id);
    assert_int_equal(g->workers, w->workers);
    S_ASSERT_I64_EQ(g->run_id, w->run_id);
    assert_string_equal(g->mode, w->mode);
    assert_int_equal(g->staleness, w->staleness);
    assert_int_equal(g->epochs, w->epochs);
    assert_int_equal(g->batch_size, w->batch_size);
    assert_int_equal(g->seed, w->seed);
    assert_int_equal(g->train_limit, w->train_limit);
    assert_int_equal(g->test_limit, w->test_limit);
    assert_int_equal(g->params, w->params);
    assert_int_equal(g->incarnation, w->incarnation);
    assert_int_equal(g->start_step, w->start_step);
    assert_int_equal(g->compress, w->compress);
    S_ASSERT_FP_EQ(g->lr, w->lr);
    assert_int_equal(g->token, w->token);
    assert_string_equal(g->dataset, w->dataset);
    assert_int_equal(g->data_fingerprint, w->data_fingerprint);
    S_ASSERT_FP_EQ(g->momentum, w->momentum);
    S_ASSERT_FP_EQ(g->alive_seconds, w->alive_seconds);
    assert_int_equal(g->n_shards, w->n_shards);
    for (size_t i = 0; i < w->n_shards; i++) {
        assert_string_equal(g->shards[i]->endpoint, w->shards[i]->endpoint);
        assert_int_equal(g->shards[i]->lo, w->shards[i]->lo);
        assert_int_equal(g->shards[i]->hi, w->shards[i]->hi);
        assert_string_equal(g->shards[i]->public_key, w->shards[i]->public_key);
    }
}

static void s_check_push(const Ps__Push *g, const Ps__Push *w)
{
    assert_int_equal(g->worker_id, w->worker_id);
    assert_int_equal(g->step, w->step);
    assert_int_equal(g->version, w->version);
    assert_int_equal(g->epoch, w->epoch);
    float gl = g->loss, wl = w->loss;
    if (memcmp(&gl, &wl, sizeof gl) != 0)
        fail_msg("loss: got %a, want %a", (double)gl, (double)wl);
    assert_int_equal(g->incarnation, w->incarnation);
    assert_int_equal(g->encoding, w->encoding);
    assert_int_equal(g->token, w->token);
    assert_int_equal(g->offset, w->offset);
    assert_int_equal(g->count, w->count);
    assert_int_equal(g->part, w->part);
    assert_int_equal(g->parts, w->parts);
    assert_int_equal(g->final_model, w->final_model);
}

static void s_check_epoch(const Ps__EpochReport *g, const Ps__EpochReport *w)
{
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
}

static void s_check_shard_welcome(const Ps__ShardWelcome *g, const Ps__ShardWelcome *w)
{
    assert_int_equal(g->shard, w->shard);
    assert_int_equal(g->shards, w->shards);
    assert_int_equal(g->lo, w->lo);
    assert_int_equal(g->hi, w->hi);
    S_ASSERT_I64_EQ(g->run_id, w->run_id);
    assert_string_equal(g->mode, w->mode);
    assert_int_equal(g->staleness, w->staleness);
    assert_int_equal(g->workers, w->workers);
    assert_int_equal(g->epochs, w->epochs);
    assert_int_equal(g->batch_size, w->batch_size);
    assert_int_equal(g->seed, w->seed);
    S_ASSERT_FP_EQ(g->lr, w->lr);
    S_ASSERT_FP_EQ(g->momentum, w->momentum);
    assert_int_equal(g->train_limit, w->train_limit);
    assert_int_equal(g->checkpoint_every, w->checkpoint_every);
    assert_int_equal(g->version, w->version);
    assert_int_equal(g->lr_linear, w->lr_linear);
    S_ASSERT_FP_EQ(g->warmup_epochs, w->warmup_epochs);
    assert_string_equal(g->dataset, w->dataset);
}

static void s_check_membership(const Ps__Membership *g, const Ps__Membership *w)
{
    assert_int_equal(g->seq, w->seq);
    assert_int_equal(g->over, w->over);
    assert_int_equal(g->started, w->started);
    assert_int_equal(g->rollbacks, w->rollbacks);
    assert_int_equal(g->rollback_version, w->rollback_version);
    S_ASSERT_I64_EQ(g->run_id, w->run_id);
    assert_int_equal(g->n_members, w->n_members);
    for (size_t i = 0; i < w->n_members; i++) {
        const Ps__Member *gm = g->members[i], *wm = w->members[i];
        assert_int_equal(gm->id, wm->id);
        assert_int_equal(gm->incarnation, wm->incarnation);
        assert_int_equal(gm->active, wm->active);
        assert_int_equal(gm->done, wm->done);
        assert_int_equal(gm->token, wm->token);
        assert_int_equal(gm->compress, wm->compress);
        assert_string_equal(gm->key, wm->key);
        assert_int_equal(gm->start_step, wm->start_step);
    }
}

static void s_check_final(const Ps__ShardFinal *g, const Ps__ShardFinal *w)
{
    assert_int_equal(g->shard, w->shard);
    assert_int_equal(g->version, w->version);
    assert_int_equal(g->offset, w->offset);
    assert_int_equal(g->count, w->count);
    if (!w->stats) {
        assert_null(g->stats);
        return;
    }
    assert_non_null(g->stats);
    s_check_ping(g->stats, w->stats);
}

/* Checks a received body against what s_build put in. */
static void s_check_body(const Ps__Envelope *got, const s_msg_t *want)
{
    assert_int_equal(got->protocol, WIRE_PROTOCOL);
    assert_int_equal(got->request_id, want->env.request_id);
    assert_int_equal(got->body_case, want->env.body_case);
    switch (want->env.body_case) {
    case PS__ENVELOPE__BODY_REGISTER: {
        const Ps__Register *g = got->register_, *w = &want->u.reg;
        assert_string_equal(g->name, w->name);
        assert_string_equal(g->host, w->host);
        assert_int_equal(g->threads, w->threads);
        assert_int_equal(g->compress, w->compress);
        break;
    }
    case PS__ENVELOPE__BODY_WELCOME: s_check_welcome(got->welcome, &want->u.welcome); break;
    case PS__ENVELOPE__BODY_PULL:
        assert_int_equal(got->pull->worker_id, want->u.pull.worker_id);
        assert_int_equal(got->pull->token, want->u.pull.token);
        break;
    case PS__ENVELOPE__BODY_PUSH: s_check_push(got->push, &want->u.push); break;
    case PS__ENVELOPE__BODY_WEIGHTS:
        assert_int_equal(got->weights->version, want->u.weights.version);
        S_ASSERT_FP_EQ(got->weights->held_seconds, want->u.weights.held_seconds);
        assert_int_equal(got->weights->encoding, want->u.weights.encoding);
        assert_int_equal(got->weights->offset, want->u.weights.offset);
        assert_int_equal(got->weights->count, want->u.weights.count);
        break;
    case PS__ENVELOPE__BODY_EPOCH: s_check_epoch(got->epoch, &want->u.epoch); break;
    case PS__ENVELOPE__BODY_DONE:
        assert_int_equal(got->done->worker_id, want->u.done.worker_id);
        S_ASSERT_FP_EQ(got->done->train_seconds, want->u.done.train_seconds);
        S_ASSERT_FP_EQ(got->done->test_accuracy, want->u.done.test_accuracy);
        assert_int_equal(got->done->leaving, want->u.done.leaving);
        break;
    case PS__ENVELOPE__BODY_ACK: assert_int_equal(got->ack->version, want->u.ack.version); break;
    case PS__ENVELOPE__BODY_ERROR:
        assert_int_equal(got->error->code, want->u.error.code);
        assert_string_equal(got->error->message, want->u.error.message);
        break;
    case PS__ENVELOPE__BODY_SHARD_JOIN: {
        const Ps__ShardJoin *g = got->shard_join, *w = &want->u.join;
        assert_int_equal(g->shard, w->shard);
        assert_string_equal(g->endpoint, w->endpoint);
        assert_string_equal(g->public_key, w->public_key);
        assert_int_equal(g->resumed, w->resumed);
        assert_int_equal(g->version, w->version);
        break;
    }
    case PS__ENVELOPE__BODY_SHARD_WELCOME:
        s_check_shard_welcome(got->shard_welcome, &want->u.swelcome);
        break;
    case PS__ENVELOPE__BODY_MEMBERSHIP:
        s_check_membership(got->membership, &want->u.membership);
        break;
    case PS__ENVELOPE__BODY_SHARD_PING: s_check_ping(got->shard_ping, &want->u.ping); break;
    case PS__ENVELOPE__BODY_SHARD_FINAL: s_check_final(got->shard_final, &want->u.final); break;
    default: fail_msg("no such kind %d", (int)want->env.body_case);
    }
}

/* Sends msg from the side of dir with a float32 tensor frame of `count`
 * floats at t (none when t is NULL), through wire_tensor_encode_n and
 * wire_send_msg. Returns the bytes sent. */
static long s_send_msg(s_fixture_t *fx, s_dir_t dir, s_msg_t *msg, const float *t, size_t count)
{
    void *sock = dir == S_UP ? fx->dealer : fx->router;
    const wire_peer_t *peer = dir == S_UP ? NULL : &fx->peer;
    long sent;
    if (!t) {
        sent = wire_send(sock, peer, &msg->env, NULL, 0);
    } else {
        zmq_msg_t frame;
        assert_int_equal(wire_tensor_encode_n(&frame, t, count, PS__ENCODING__ENCODING_F32, NULL),
                         0);
        sent = wire_send_msg(sock, peer, &msg->env, &frame, 0);
    }
    if (sent <= 0)
        fail_msg("wire_send %s %s: %ld, %s", wire_kind_name(msg->env.body_case), s_dir_name(dir),
                 sent, zmq_strerror(errno));
    return sent;
}

/* One message of kind each way; the tensor, when the kind has one, holds
 * the values [offset, offset + count) of the reference that its header
 * names, is scribbled over right after the send (the codec copies it) and
 * must arrive byte for byte, as many values as the header says. */
static void s_round_trip(s_fixture_t *fx, Ps__Envelope__BodyCase kind, int defaults)
{
    for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++) {
        s_msg_t msg;
        s_build(&msg, kind, defaults);
        const float *t = NULL;
        size_t offset = 0, count = 0;
        if (s_needs_tensor(kind)) {
            s_tensor_span(&msg, &offset, &count);
            assert_true(offset + count <= S_N);
            memcpy(fx->scratch, fx->tensor + offset, count * sizeof(float));
            t = fx->scratch;
        }
        long sent = s_send_msg(fx, dir, &msg, t, count);
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
            assert_int_equal(m.count, count);
            assert_int_equal(m.encoding, PS__ENCODING__ENCODING_F32);
            assert_int_equal(sent,
                             (long)(count * sizeof(float) + ps__envelope__get_packed_size(m.env)));
            if (memcmp(m.tensor, fx->tensor + offset, count * sizeof(float)) != 0)
                fail_msg("%s %s: the tensor differs", wire_kind_name(kind), s_dir_name(dir));
            assert_ptr_equal(wire_tensor(&m, NULL), m.tensor); /* float32: no decoding */
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
 * must still arrive as its kind, not as "no body", and a tensor with count
 * 0 is the whole vector. */
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
        s_version_mismatch(*state, dir, PS__ENVELOPE__BODY_PUSH);       /* its tensor is dropped */
        s_version_mismatch(*state, dir, PS__ENVELOPE__BODY_SHARD_JOIN); /* a shard's release */
        s_version_mismatch(*state, dir, PS__ENVELOPE__BODY_SHARD_FINAL);
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
    long tensor_delta;  /* ...of S_N*4 + this many bytes */
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
        s_whole(&msg);
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
    const long last = S_N - 1;
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
        {.what = "ShardFinal without its tensor",
         .kind = PS__ENVELOPE__BODY_SHARD_FINAL,
         .bad_index = -1,
         .code = MAL,
         .says = "shard final message lacks a tensor"},
        {.what = "ShardJoin with a tensor",
         .kind = PS__ENVELOPE__BODY_SHARD_JOIN,
         .tensor = 1,
         .bad_index = -1,
         .code = MAL,
         .says = "shard join message must not have a tensor"},
        {.what = "Membership + an extra frame",
         .kind = PS__ENVELOPE__BODY_MEMBERSHIP,
         .bad_index = -1,
         .extra = 1,
         .code = MAL,
         .says = "must not have a tensor"},
        {.what = "ShardFinal + tensor + an extra frame",
         .kind = PS__ENVELOPE__BODY_SHARD_FINAL,
         .tensor = 1,
         .bad_index = -1,
         .extra = 1,
         .code = MAL,
         .says = "shard final message has extra frames"},
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

/* ---- 3b. Counted tensors ----------------------------------------------------------------- */

/* A frame of `values` values of src in encoding enc (PS__ENCODING__*),
 * then `delta` bytes more (zeros) or fewer; the bytes into a malloc'ed
 * buffer (caller frees) of *len bytes. */
static uint8_t *s_frame_bytes(const float *src, size_t values, int enc, long delta, size_t *len)
{
    zmq_msg_t t;
    assert_int_equal(wire_tensor_encode_n(&t, src, values, enc, NULL), 0);
    size_t have = zmq_msg_size(&t);
    assert_int_equal(have, wire_encoded_size_n(enc, values));
    *len = (size_t)((long)have + delta);
    uint8_t *buf = calloc(1, *len + 1);
    assert_non_null(buf);
    memcpy(buf, zmq_msg_data(&t), have < *len ? have : *len);
    zmq_msg_close(&t);
    return buf;
}

/* A hostile tensor frame for a message that names a count: how it is made
 * and what wire_recv must say. */
typedef struct {
    const char *what;
    Ps__Envelope__BodyCase kind; /* Push, Weights or ShardFinal */
    int enc;                     /* Push/Weights.encoding (ShardFinal: float32) */
    uint32_t count;              /* the header's count (0: all) */
    size_t values;               /* the frame: this many values encoded... */
    long delta;                  /* ...plus this many bytes */
    long bad;                    /* a value (F32, F16) or block (I8) made bad, or -1 */
    const char *says;
} s_counted_bad_t;

/* Makes value or block b->bad of frame buf not finite (I8 with
 * `overflow`: a finite scale that overflows times 127). */
static void s_spoil(uint8_t *buf, const s_counted_bad_t *b, int overflow)
{
    if (b->bad < 0)
        return;
    size_t i = (size_t)b->bad;
    if (b->enc == PS__ENCODING__ENCODING_F32) {
        float nan = NAN;
        memcpy(buf + 4 * i, &nan, 4);
    } else if (b->enc == PS__ENCODING__ENCODING_F16) {
        uint16_t inf = 0x7c00;
        memcpy(buf + 2 * i, &inf, 2);
    } else {
        float scale = overflow ? 3e38f : NAN;
        uint8_t *blk = buf + i * (4 + WIRE_I8_BLOCK);
        memcpy(blk, &scale, 4);
        blk[4] = 127;
    }
}

static void s_send_counted_bad(s_fixture_t *fx, s_dir_t dir, const s_counted_bad_t *b, int overflow)
{
    s_msg_t msg;
    s_build(&msg, b->kind, 0);
    if (b->kind == PS__ENVELOPE__BODY_PUSH)
        msg.u.push.count = b->count, msg.u.push.encoding = (Ps__Encoding)b->enc;
    else if (b->kind == PS__ENVELOPE__BODY_WEIGHTS)
        msg.u.weights.count = b->count, msg.u.weights.encoding = (Ps__Encoding)b->enc;
    else
        msg.u.final.count = b->count;
    uint8_t *h;
    size_t hlen = s_pack(&msg.env, WIRE_PROTOCOL, &h), tlen;
    int enc = b->enc <= PS__ENCODING__ENCODING_I8 ? b->enc : PS__ENCODING__ENCODING_F32;
    uint8_t *t = s_frame_bytes(fx->exact, b->values, enc, b->delta, &tlen);
    s_spoil(t, b, overflow);
    const void *data[2] = {h, t};
    size_t len[2] = {hlen, tlen};
    s_send_raw(fx, dir, 2, data, len);
    free(h);
    free(t);
}

/* Frames that do not hold what their header's count and encoding say, or
 * hold values that are not finite: each refused, the socket in step. */
static void test_counted_refused(void **state)
{
    s_fixture_t *fx = *state;
    const int F32 = PS__ENCODING__ENCODING_F32, F16 = PS__ENCODING__ENCODING_F16,
              I8 = PS__ENCODING__ENCODING_I8;
    const Ps__Envelope__BodyCase PUSH = PS__ENVELOPE__BODY_PUSH,
                                 WEIGHTS = PS__ENVELOPE__BODY_WEIGHTS,
                                 FINAL = PS__ENVELOPE__BODY_SHARD_FINAL;
    const uint32_t N = S_N;
    const s_counted_bad_t bad[] = {
        {"Push count one over the vector", PUSH, F32, N + 1, N, 4, -1,
         "tensor of 225035 values; this side's model has 225034 parameters"},
        {"Weights count 2^32-1", WEIGHTS, F16, UINT32_MAX, 16, 0, -1,
         "tensor of 4294967295 values; this side's model has 225034 parameters"},
        {"ShardFinal count one over the vector", FINAL, F32, N + 1, N, 0, -1,
         "tensor of 225035 values"},
        {"F32 frame one value short", PUSH, F32, 1000, 999, 0, -1,
         "tensor frame has 3996 bytes; expected 4000 (1000 values, encoding 0)"},
        {"F32 frame one byte long", WEIGHTS, F32, 1000, 1000, 1, -1,
         "tensor frame has 4001 bytes; expected 4000"},
        {"F32 frame of the whole vector, count 1000", PUSH, F32, 1000, N, 0, -1,
         "tensor frame has 900136 bytes; expected 4000"},
        {"F32 frame of 1000 values, count 0 (all)", PUSH, F32, 0, 1000, 0, -1,
         "tensor frame has 4000 bytes; expected 900136"},
        {"ShardFinal frame one value short", FINAL, F32, 75012, 75011, 0, -1,
         "tensor frame has 300044 bytes; expected 300048"},
        {"ShardFinal with an F16-sized frame", FINAL, F16, 75012, 75012, 0, -1,
         "tensor frame has 150024 bytes; expected 300048"},
        {"F16 frame one value short", PUSH, F16, 1001, 1000, 0, -1,
         "tensor frame has 2000 bytes; expected 2002 (1001 values, encoding 1)"},
        {"F16 frame one byte long", WEIGHTS, F16, 1001, 1001, 1, -1,
         "tensor frame has 2003 bytes; expected 2002"},
        {"I8, partial last block one byte short", PUSH, I8, 300, 300, -1, -1,
         "tensor frame has 307 bytes; expected 308 (300 values, encoding 2)"},
        {"I8, partial last block one byte long", PUSH, I8, 300, 300, 1, -1,
         "tensor frame has 309 bytes; expected 308"},
        {"I8, partial last block without its scale", PUSH, I8, 300, 300, -4, -1,
         "tensor frame has 304 bytes; expected 308"},
        {"I8, partial last block sent whole", PUSH, I8, 300, 512, 0, -1,
         "tensor frame has 520 bytes; expected 308"},
        {"I8, one value, scale only", PUSH, I8, 1, 1, -1, -1,
         "tensor frame has 4 bytes; expected 5"},
        {"I8, one full block one byte long", PUSH, I8, 256, 256, 1, -1,
         "tensor frame has 261 bytes; expected 260"},
        {"unknown encoding 3 with a count", PUSH, 3, 1000, 1000, 0, -1,
         "unknown tensor encoding 3"},
        {"NaN as the last value of a counted F32 frame", PUSH, F32, 1000, 1000, 0, 999,
         "tensor value 999 is not finite"},
        {"NaN in a ShardFinal", FINAL, F32, 75012, 75012, 0, 75011,
         "tensor value 75011 is not finite"},
        {"half-precision inf as the last value", WEIGHTS, F16, 1001, 1001, 0, 1000,
         "tensor value 1000 is not finite"},
        {"I8: the partial last block's scale", PUSH, I8, 300, 300, 0, 1,
         "tensor block scale 1 is not finite"},
    };
    assert_int_equal(wire_encoded_size_n(I8, 300), 308); /* the sizes named above */
    for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++)
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            int twice = bad[i].enc == I8 && bad[i].bad >= 0; /* NaN scale, then overflow */
            for (int overflow = 0; overflow <= twice; overflow++) {
                s_send_counted_bad(fx, dir, &bad[i], overflow);
                s_expect_refused(fx, dir, bad[i].what, PS__ERROR_CODE__ERROR_MALFORMED,
                                 bad[i].says);
            }
        }
}

/* Compressed counted frames, both ways, of counts around the int8 block
 * (a partial last block) and up to the whole vector, named at the start
 * and at the end of it: the values (exact in either encoding: the frame's
 * int8 blocks start at its first value, so the values are fx->exact's
 * first ones whatever the offset) decode as sent, and int8's error
 * feedback has nothing to carry over. */
static void test_counted_compressed(void **state)
{
    s_fixture_t *fx = *state;
    const size_t counts[] = {1, 255, 256, 257, 300, 112517, S_N};
    float *residual = calloc(S_N, sizeof(float));
    assert_non_null(residual);
    for (int enc = PS__ENCODING__ENCODING_F16; enc <= PS__ENCODING__ENCODING_I8; enc++)
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
            for (int at_end = 0; at_end <= 1; at_end++)
                for (s_dir_t dir = S_UP; dir <= S_DOWN; dir++) {
                    size_t count = counts[c], off = at_end ? S_N - count : 0;
                    s_msg_t msg;
                    s_build(&msg,
                            dir == S_UP ? PS__ENVELOPE__BODY_PUSH : PS__ENVELOPE__BODY_WEIGHTS, 0);
                    if (dir == S_UP)
                        msg.u.push.offset = (uint32_t)off, msg.u.push.count = (uint32_t)count,
                        msg.u.push.encoding = (Ps__Encoding)enc;
                    else
                        msg.u.weights.offset = (uint32_t)off, msg.u.weights.count = (uint32_t)count,
                        msg.u.weights.encoding = (Ps__Encoding)enc;
                    zmq_msg_t t;
                    memset(residual, 0, count * sizeof(float));
                    assert_int_equal(
                        wire_tensor_encode_n(&t, fx->exact, count, enc,
                                             enc == PS__ENCODING__ENCODING_I8 ? residual : NULL),
                        0);
                    long sent = dir == S_UP ? wire_send_msg(fx->dealer, NULL, &msg.env, &t, 0)
                                            : wire_send_msg(fx->router, &fx->peer, &msg.env, &t, 0);
                    assert_true(sent > 0);
                    wire_msg_t m;
                    char err[256];
                    int rc = s_recv(fx, dir, &m, err, sizeof err);
                    if (rc != 0)
                        fail_msg("encoding %d, %zu values at %zu, %s: wire_recv %d: %s", enc, count,
                                 off, s_dir_name(dir), rc, err);
                    s_check_body(m.env, &msg);
                    assert_int_equal(m.count, count);
                    assert_int_equal(m.encoding, enc);
                    assert_null(m.tensor); /* decoded on demand */
                    assert_int_equal(m.bytes, ps__envelope__get_packed_size(m.env) +
                                                  wire_encoded_size_n(enc, count));
                    memset(fx->scratch, 0x5a, S_TENSOR_BYTES + sizeof(float));
                    const float *got = wire_tensor(&m, fx->scratch);
                    assert_ptr_equal(got, fx->scratch);
                    if (memcmp(got, fx->exact, count * sizeof(float)) != 0)
                        fail_msg("encoding %d, %zu values at %zu, %s: decoded values differ", enc,
                                 count, off, s_dir_name(dir));
                    assert_int_equal(((uint32_t *)fx->scratch)[count], 0x5a5a5a5au); /* no more */
                    for (size_t i = 0; i < count; i++)
                        if (residual[i] != 0.0f)
                            fail_msg("int8 residual %zu is %g after an exact encoding", i,
                                     (double)residual[i]);
                    wire_msg_close(&m);
                }
    free(residual);
}

/* ---- 3c. A tensor frame at an odd address -------------------------------------------------- */

/* CurveZMQ can deliver a frame at any address. Over inproc ZeroMQ hands
 * over the frame it was given, so a frame made with zmq_msg_init_data at
 * buf + 1 arrives there: float32 must be accepted (copied to an aligned
 * buffer) and equal, float16 and int8 decoded and equal, a NaN still
 * refused; wire_msg_move keeps the copy; the socket stays in step. */
/* Sends a Push of `count` values from offset 0 (hcount: the header's
 * count) in enc whose frame lies at an odd address; value `nan` (or -1)
 * made NaN. Returns where the frame lies. */
static const uint8_t *s_send_odd(s_fixture_t *fx, int enc, size_t count, uint32_t hcount, long nan)
{
    s_msg_t msg;
    s_build(&msg, PS__ENVELOPE__BODY_PUSH, 0);
    msg.u.push.offset = 0, msg.u.push.count = hcount, msg.u.push.encoding = (Ps__Encoding)enc;
    uint8_t *h;
    size_t hlen = s_pack(&msg.env, WIRE_PROTOCOL, &h), tlen;
    uint8_t *t = s_frame_bytes(fx->exact, count, enc, 0, &tlen);
    if (nan >= 0) {
        float x = NAN;
        memcpy(t + 4 * nan, &x, 4);
    }
    free(fx->odd_buf); /* the frame sent before it was received and closed */
    fx->odd_buf = malloc(tlen + 8);
    assert_non_null(fx->odd_buf);
    uint8_t *at = fx->odd_buf + 1;
    assert_true(((uintptr_t)at & 3) != 0);
    memcpy(at, t, tlen);
    free(t);
    zmq_msg_t frame;
    assert_int_equal(zmq_msg_init_data(&frame, at, tlen, NULL, NULL),
                     0); /* the buffer stays ours */
    assert_int_equal(zmq_send(fx->odd_dealer, h, hlen, ZMQ_SNDMORE), (int)hlen);
    assert_int_equal(zmq_msg_send(&frame, fx->odd_dealer, 0), (int)tlen);
    free(h);
    return at;
}

static void s_odd_in_step(s_fixture_t *fx)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Pull p = PS__PULL__INIT;
    p.worker_id = 0x0dd;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &p;
    assert_true(wire_send(fx->odd_dealer, NULL, &env, NULL, 0) > 0);
    s_wait(fx->odd_router);
    wire_peer_t peer;
    wire_msg_t m;
    char err[256];
    assert_int_equal(wire_recv(fx->odd_router, &peer, &m, S_N, err, sizeof err), 0);
    assert_int_equal(m.env->body_case, PS__ENVELOPE__BODY_PULL);
    assert_int_equal(m.env->pull->worker_id, 0x0dd);
    wire_msg_close(&m);
}

/* A message received from an odd address: float32 reads from an aligned
 * copy, the others decode bytewise; either way the values are as sent. */
static void s_check_odd(s_fixture_t *fx, const wire_msg_t *m, int enc, size_t count)
{
    const float *got = wire_tensor(m, fx->scratch);
    if (enc == PS__ENCODING__ENCODING_F32) {
        assert_non_null(m->aligned);
        assert_ptr_equal(m->tensor, m->aligned);
        assert_ptr_equal(got, m->aligned);
    } else {
        assert_null(m->tensor);
        assert_null(m->aligned); /* nothing to copy */
    }
    assert_int_equal((uintptr_t)got & 3, 0);
    if (memcmp(got, fx->exact, count * sizeof(float)) != 0)
        fail_msg("encoding %d, %zu values at an odd address: values differ", enc, count);
}

static void test_odd_address(void **state)
{
    s_fixture_t *fx = *state;
    const size_t counts[] = {S_N, 1000, 257, 1};
    for (int enc = PS__ENCODING__ENCODING_F32; enc <= PS__ENCODING__ENCODING_I8; enc++)
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            size_t count = counts[c];
            uint32_t hcount = count == S_N ? 0 : (uint32_t)count;
            const uint8_t *at = s_send_odd(fx, enc, count, hcount, -1);
            s_wait(fx->odd_router);
            wire_peer_t peer;
            wire_msg_t m, moved;
            char err[256];
            int rc = wire_recv(fx->odd_router, &peer, &m, S_N, err, sizeof err);
            if (rc != 0)
                fail_msg("encoding %d, %zu values at an odd address: wire_recv %d: %s", enc, count,
                         rc, err);
            /* The test tests what it says: the frame did arrive at the odd address. */
            assert_ptr_equal(zmq_msg_data(&m.tensor_msg), at);
            assert_int_equal(m.count, count);
            s_check_odd(fx, &m, enc, count);
            wire_msg_move(&moved, &m);
            assert_null(m.env);
            assert_null(m.aligned);
            s_check_odd(fx, &moved, enc, count); /* the copy moved with it */
            wire_msg_close(&moved);
            assert_null(moved.aligned);
            s_odd_in_step(fx);
        }
    /* A NaN in a float32 frame at an odd address: refused, nothing kept. */
    s_send_odd(fx, PS__ENCODING__ENCODING_F32, 1000, 1000, 777);
    s_wait(fx->odd_router);
    wire_peer_t peer;
    wire_msg_t m;
    char err[256];
    assert_int_equal(wire_recv(fx->odd_router, &peer, &m, S_N, err, sizeof err),
                     PS__ERROR_CODE__ERROR_MALFORMED);
    if (!strstr(err, "tensor value 777 is not finite"))
        fail_msg("err \"%s\" does not name value 777", err);
    assert_null(m.env);
    assert_null(m.aligned);
    assert_int_equal(m.has_tensor_msg, 0);
    s_odd_in_step(fx);
}

/* ---- 3d. Encoded sizes ------------------------------------------------------------------- */

static void test_encoded_size(void **state)
{
    (void)state;
    const size_t N = S_N;
    const int F32 = PS__ENCODING__ENCODING_F32, F16 = PS__ENCODING__ENCODING_F16,
              I8 = PS__ENCODING__ENCODING_I8;
    assert_int_equal(wire_encoded_size_n(F32, 0), 0);
    assert_int_equal(wire_encoded_size_n(F32, 1), 4);
    assert_int_equal(wire_encoded_size_n(F16, 1001), 2002);
    assert_int_equal(wire_encoded_size_n(I8, 0), 0);
    assert_int_equal(wire_encoded_size_n(I8, 1), 5);
    assert_int_equal(wire_encoded_size_n(I8, 255), 259);
    assert_int_equal(wire_encoded_size_n(I8, 256), 260);
    assert_int_equal(wire_encoded_size_n(I8, 257), 265);
    /* 879 full blocks and one of 10 values */
    assert_int_equal(wire_encoded_size_n(I8, N), N + 880 * 4);
    assert_int_equal(wire_encoded_size_n(I8, N), N + 880 * 4);
    assert_int_equal(wire_encoded_size_n(F32, N), N * 4);
    assert_int_equal(wire_encoded_size_n(F16, N), N * 2);
    assert_int_equal(wire_encoded_size_n(3, 10), 0);
    assert_int_equal(wire_encoded_size_n(-1, 10), 0);
    zmq_msg_t t;
    assert_int_equal(wire_tensor_encode_n(&t, NULL, 10, 3, NULL), -1);
}

/* ---- 4. wire_send_error ------------------------------------------------------------------ */

static void test_send_error(void **state)
{
    s_fixture_t *fx = *state;
    for (int code = PS__ERROR_CODE__ERROR_VERSION; code <= PS__ERROR_CODE__ERROR_RETRY; code++)
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
    static const char *const names[] = {"register",   "welcome",    "pull",          "push",
                                        "weights",    "epoch",      "done",          "ack",
                                        "error",      "shard join", "shard welcome", "membership",
                                        "shard ping", "shard final"};
    assert_int_equal(sizeof names / sizeof names[0], S_NKINDS);
    for (size_t i = 0; i < S_NKINDS; i++)
        assert_string_equal(wire_kind_name(s_kinds[i]), names[i]);
    assert_string_equal(wire_kind_name(PS__ENVELOPE__BODY__NOT_SET), "unknown");
    assert_string_equal(wire_kind_name((Ps__Envelope__BodyCase)1), "unknown");
    assert_string_equal(wire_kind_name((Ps__Envelope__BodyCase)11), "unknown"); /* request_id */
    assert_string_equal(wire_kind_name((Ps__Envelope__BodyCase)17), "unknown");
    assert_string_equal(wire_kind_name((Ps__Envelope__BodyCase)-1), "unknown");
}

/* ---- 6. wire_msg_close ------------------------------------------------------------------- */

static void test_close_twice(void **state)
{
    s_fixture_t *fx = *state;
    s_msg_t msg;
    s_build(&msg, PS__ENVELOPE__BODY_WEIGHTS, 0);
    s_whole(&msg);
    assert_true(s_send_msg(fx, S_DOWN, &msg, fx->tensor, S_N) > 0);
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
        assert_int_equal(wire_recv(socks[i], i == 0 ? &peer : NULL, &m, S_N, err, sizeof err), -1);
        assert_int_equal(errno, EAGAIN);
        assert_null(m.env);
        assert_null(m.tensor);
        assert_int_equal(zmq_setsockopt(socks[i], ZMQ_RCVTIMEO, &forever, sizeof forever), 0);
    }
    s_expect_in_step(fx, S_UP);
    s_expect_in_step(fx, S_DOWN);
}

/* ---- 8. Other models' lengths ------------------------------------------------------------ */

/* Sends a Push (F32 or F16, with `count` in its header: 0 for all) of the
 * `n` values at t over the pair; 0, or -1. */
static long s_push_n(void *sock, const float *t, size_t n, uint32_t count, int enc)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.count = count;
    p.encoding = (Ps__Encoding)enc;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    zmq_msg_t frame;
    if (wire_tensor_encode_n(&frame, t, n, enc, NULL) != 0)
        return -1;
    return wire_send_msg(sock, NULL, &env, &frame, 0);
}

/* The lengths of the models of the catalogue and of 1 value (and those of
 * the models, in case this build lacks them): a tensor of the
 * receiver's length travels with a count of 0 (all) and with its count, as
 * float32 and float16; one value more than the receiver's model is refused
 * naming both lengths, and so is any tensor before the model is known
 * (nparams 0). wire_send needs the header's count. */
static void test_model_lengths(void **state)
{
    (void)state;
    size_t lens[MODELS_MAX_TENSORS + 8];
    int nl = 0;
    lens[nl++] = 1;
    lens[nl++] = 62006;   /* about lenet5's */
    lens[nl++] = 1863690; /* mlp 784-1024-1024-10 */
    lens[nl++] = 9500000; /* about widecnn's */
    for (int i = 0; models_at(i) && nl < (int)(sizeof lens / sizeof lens[0]); i++)
        lens[nl++] = models_at(i)->nparams;
    void *ctx = zmq_ctx_new(), *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(a, "inproc://lengths"), 0);
    assert_int_equal(zmq_connect(b, "inproc://lengths"), 0);
    size_t most = 0;
    for (int i = 0; i < nl; i++)
        most = lens[i] > most ? lens[i] : most;
    float *t = malloc((most + 1) * sizeof(float)), *out = malloc((most + 1) * sizeof(float));
    assert_non_null(t);
    assert_non_null(out);
    for (size_t i = 0; i <= most; i++)
        t[i] = (float)(i % 2000) - 1000.0f; /* exact in float16 too */
    for (int i = 0; i < nl; i++) {
        size_t n = lens[i];
        char err[256];
        wire_msg_t m;
        assert_int_equal(wire_max_message(n), (int64_t)n * 4 + 65536);
        for (int enc = PS__ENCODING__ENCODING_F32; enc <= PS__ENCODING__ENCODING_F16; enc++)
            for (int counted = 0; counted <= 1; counted++) {
                assert_true(s_push_n(b, t, n, counted ? (uint32_t)n : 0, enc) > 0);
                int rc = wire_recv(a, NULL, &m, n, err, sizeof err);
                if (rc != 0)
                    fail_msg("%zu values, encoding %d, count %s: wire_recv %d: %s", n, enc,
                             counted ? "given" : "0", rc, err);
                assert_int_equal(m.count, n);
                const float *got = wire_tensor(&m, out);
                assert_memory_equal(got, t, n * sizeof(float));
                wire_msg_close(&m);
            }
        assert_true(s_push_n(b, t, n + 1, (uint32_t)n + 1, PS__ENCODING__ENCODING_F32) > 0);
        assert_int_equal(wire_recv(a, NULL, &m, n, err, sizeof err),
                         PS__ERROR_CODE__ERROR_MALFORMED);
        char want[128];
        snprintf(want, sizeof want, "tensor of %zu values; this side's model has %zu parameters",
                 n + 1, n);
        if (!strstr(err, want))
            fail_msg("err \"%s\" does not say \"%s\"", err, want);
        assert_true(s_push_n(b, t, n, 0, PS__ENCODING__ENCODING_F32) > 0);
        assert_int_equal(wire_recv(a, NULL, &m, 0, err, sizeof err),
                         PS__ERROR_CODE__ERROR_MALFORMED);
        assert_non_null(strstr(err, "before the model is known"));
        printf("  %zu values: round trips; %zu refused\n", n, n + 1);
    }
    /* wire_send's tensor takes its length from the header. */
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Weights w = PS__WEIGHTS__INIT;
    env.body_case = PS__ENVELOPE__BODY_WEIGHTS;
    env.weights = &w;
    errno = 0;
    assert_int_equal(wire_send(b, NULL, &env, t, 0), -1);
    assert_int_equal(errno, EINVAL);
    w.count = 1000;
    assert_true(wire_send(b, NULL, &env, t, 0) > 4000);
    wire_msg_t m;
    char err[256];
    assert_int_equal(wire_recv(a, NULL, &m, 62006, err, sizeof err), 0);
    assert_int_equal(m.count, 1000);
    assert_memory_equal(m.tensor, t, 4000);
    wire_msg_close(&m);
    free(t);
    free(out);
    zmq_close(a);
    zmq_close(b);
    zmq_ctx_term(ctx);
}

/* Sends env (with count floats of the reference from offset, or none)
 * down the fixture one way and receives it; the tensor must arrive byte for
 * byte. The caller checks the fields and closes *m. */
static void s_trip(s_fixture_t *fx, s_dir_t dir, Ps__Envelope *env, size_t offset, size_t count,
                   wire_msg_t *m)
{
    void *sock = dir == S_UP ? fx->dealer : fx->router;
    const wire_peer_t *peer = dir == S_UP ? NULL : &fx->peer;
    zmq_msg_t frame;
    if (count)
        assert_int_equal(wire_tensor_encode_n(&frame, fx->tensor + offset, count,
                                              PS__ENCODING__ENCODING_F32, NULL),
                         0);
    assert_true(wire_send_msg(sock, peer, env, count ? &frame : NULL, 0) > 0);
    char err[256];
    int rc = s_recv(fx, dir, m, err, sizeof err);
    if (rc != 0)
        fail_msg("%s: wire_recv %d: %s", wire_kind_name(env->body_case), rc, err);
    assert_int_equal(m->env->body_case, env->body_case);
    assert_int_equal(m->env->request_id, env->request_id);
    if (count) {
        assert_int_equal(m->count, count);
        assert_memory_equal(m->tensor, fx->tensor + offset, count * sizeof(float));
    } else
        assert_null(m->tensor);
}

/* The hot standby's messages (issue 12) round-trip with distinctive values:
 * a replica update of each kind (those with a tensor carry a range of it),
 * its ack, a term change, Locate and Located, the head's tables and a
 * metrics row of every value type; a heartbeat with a tensor and an update
 * without one are refused. */
static void test_round_trip_replica_messages(void **state)
{
    s_fixture_t *fx = *state;
    wire_msg_t m;
    uint64_t steps[3] = {0, 1ULL << 40, UINT64_MAX};
    uint32_t inc[3] = {0, 7, 0xfffffffeu};
    const Ps__ReplicaKind kinds[] = {
        PS__REPLICA_KIND__REPLICA_BEAT,    PS__REPLICA_KIND__REPLICA_STATE_W,
        PS__REPLICA_KIND__REPLICA_STATE_V, PS__REPLICA_KIND__REPLICA_UPDATE,
        PS__REPLICA_KIND__REPLICA_SYNC,    PS__REPLICA_KIND__REPLICA_END};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int tensor = kinds[k] == PS__REPLICA_KIND__REPLICA_STATE_W ||
                     kinds[k] == PS__REPLICA_KIND__REPLICA_STATE_V ||
                     kinds[k] == PS__REPLICA_KIND__REPLICA_UPDATE;
        Ps__ReplicaUpdate u = PS__REPLICA_UPDATE__INIT;
        u.kind = kinds[k], u.term = 0x8000000000000003ULL, u.version = UINT64_MAX - 1;
        u.lr = 1.0f / 3, u.updates = -5, u.stale_sum = 1e300, u.stale_max = INT64_MAX;
        u.n_steps = 3, u.steps = steps, u.n_incarnations = 3, u.incarnations = inc;
        u.offset = tensor ? 1000 : 0, u.count = tensor ? 5003 : 0, u.rollbacks = 9;
        Ps__Envelope env = PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_REPLICA_UPDATE;
        env.replica_update = &u;
        env.request_id = S_REQUEST + k;
        s_trip(fx, S_DOWN, &env, u.offset, u.count, &m);
        const Ps__ReplicaUpdate *g = m.env->replica_update;
        assert_int_equal(g->kind, u.kind);
        assert_true(g->term == u.term && g->version == u.version && g->lr == u.lr);
        assert_true(g->updates == u.updates && g->stale_sum == u.stale_sum &&
                    g->stale_max == u.stale_max && g->rollbacks == 9);
        assert_int_equal(g->n_steps, 3);
        assert_memory_equal(g->steps, steps, sizeof steps);
        assert_memory_equal(g->incarnations, inc, sizeof inc);
        wire_msg_close(&m);
    }
    Ps__ReplicaAck ack = PS__REPLICA_ACK__INIT;
    ack.term = 77, ack.version = 1ULL << 63;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_REPLICA_ACK;
    env.replica_ack = &ack;
    s_trip(fx, S_UP, &env, 0, 0, &m);
    assert_true(m.env->replica_ack->term == 77 && m.env->replica_ack->version == 1ULL << 63);
    wire_msg_close(&m);
    Ps__ShardTerm t = PS__SHARD_TERM__INIT;
    t.shard = 63, t.term = UINT64_MAX, t.promote = 1;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_TERM;
    env.shard_term = &t;
    s_trip(fx, S_UP, &env, 0, 0, &m);
    assert_true(m.env->shard_term->shard == 63 && m.env->shard_term->term == UINT64_MAX &&
                m.env->shard_term->promote);
    wire_msg_close(&m);
    Ps__Locate loc = PS__LOCATE__INIT;
    loc.worker_id = 4000000000u, loc.token = 0x8000000000000001ULL;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_LOCATE;
    env.locate = &loc;
    s_trip(fx, S_UP, &env, 0, 0, &m);
    assert_true(m.env->locate->worker_id == loc.worker_id && m.env->locate->token == loc.token);
    wire_msg_close(&m);
    s_msg_t ranges; /* Welcome.shards' distinctive group of 3, with standbys and terms */
    s_build(&ranges, PS__ENVELOPE__BODY_WELCOME, 0);
    ranges.ranges[1].standby = S_SHARD_EP, ranges.ranges[1].term = UINT64_MAX;
    Ps__Located at = PS__LOCATED__INIT;
    at.n_shards = 3, at.shards = ranges.range_ptrs, at.shard = 2, at.head = S_SHARD_EP;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_LOCATED;
    env.located = &at;
    s_trip(fx, S_DOWN, &env, 0, 0, &m);
    assert_int_equal(m.env->located->n_shards, 3);
    assert_string_equal(m.env->located->shards[1]->standby, S_SHARD_EP);
    assert_true(m.env->located->shards[1]->term == UINT64_MAX);
    assert_string_equal(m.env->located->shards[1]->endpoint, S_SHARD_EP);
    assert_true(m.env->located->shard == 2);
    assert_string_equal(m.env->located->head, S_SHARD_EP);
    wire_msg_close(&m);
    Ps__HeadSlot hs = PS__HEAD_SLOT__INIT, *hp[1] = {&hs};
    hs.id = 3, hs.name = S_NAME, hs.host = S_HOST, hs.threads = 64, hs.incarnation = 5;
    hs.active = 1, hs.done = 0, hs.evicted = 1, hs.steps = 1ULL << 50, hs.key = S_KEY;
    hs.images = 59999, hs.compress = PS__COMPRESSION__COMPRESSION_INT8;
    hs.token = UINT64_MAX, hs.start_step = 12345, hs.epochs_reported = 4;
    Ps__ReplicaHead h = PS__REPLICA_HEAD__INIT;
    h.n_slots = 1, h.slots = hp, h.n_shards = 3, h.shards = ranges.range_ptrs;
    h.run_id = -9876543210LL, h.started = 1, h.elapsed = 1.0 / 7, h.seq = 1ULL << 33;
    h.rollbacks = 3, h.rollback_version = 99, h.registered = 4, h.term = 8, h.over = 1;
    h.active = 2;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_REPLICA_HEAD;
    env.replica_head = &h;
    s_trip(fx, S_DOWN, &env, 0, 0, &m);
    const Ps__ReplicaHead *gh = m.env->replica_head;
    assert_int_equal(gh->n_slots, 1);
    const Ps__HeadSlot *gs = gh->slots[0];
    assert_string_equal(gs->name, S_NAME);
    assert_string_equal(gs->key, S_KEY);
    assert_true(gs->id == 3 && gs->threads == 64 && gs->incarnation == 5 && gs->active &&
                !gs->done && gs->evicted && gs->steps == 1ULL << 50 && gs->images == 59999 &&
                gs->compress == PS__COMPRESSION__COMPRESSION_INT8 && gs->token == UINT64_MAX &&
                gs->start_step == 12345 && gs->epochs_reported == 4);
    assert_true(gh->run_id == h.run_id && gh->started && gh->elapsed == h.elapsed &&
                gh->seq == h.seq && gh->rollbacks == 3 && gh->rollback_version == 99 &&
                gh->registered == 4 && gh->term == 8 && gh->over && gh->active == 2);
    assert_int_equal(gh->n_shards, 3);
    wire_msg_close(&m);
    Ps__MetricValue mv[4], *mp[4];
    for (int i = 0; i < 4; i++) {
        ps__metric_value__init(&mv[i]);
        mp[i] = &mv[i];
    }
    mv[0].v_case = PS__METRIC_VALUE__V_I, mv[0].i = INT64_MIN;
    mv[1].v_case = PS__METRIC_VALUE__V_D, mv[1].d = -1.0 / 3;
    mv[2].v_case = PS__METRIC_VALUE__V_S, mv[2].s = S_NAME;
    mv[3].v_case = PS__METRIC_VALUE__V_NULL, mv[3].null = 1;
    Ps__MetricRow row = PS__METRIC_ROW__INIT;
    row.statement = 7, row.n_values = 4, row.values = mp;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_METRIC_ROW;
    env.metric_row = &row;
    s_trip(fx, S_DOWN, &env, 0, 0, &m);
    const Ps__MetricRow *gr = m.env->metric_row;
    assert_true(gr->statement == 7 && gr->n_values == 4);
    assert_true(gr->values[0]->v_case == PS__METRIC_VALUE__V_I && gr->values[0]->i == INT64_MIN);
    assert_true(gr->values[1]->v_case == PS__METRIC_VALUE__V_D && gr->values[1]->d == -1.0 / 3);
    assert_true(gr->values[2]->v_case == PS__METRIC_VALUE__V_S);
    assert_string_equal(gr->values[2]->s, S_NAME);
    assert_true(gr->values[3]->v_case == PS__METRIC_VALUE__V_NULL);
    wire_msg_close(&m);
    /* a heartbeat must not carry a tensor; an update must */
    Ps__ReplicaUpdate bad = PS__REPLICA_UPDATE__INIT;
    bad.kind = PS__REPLICA_KIND__REPLICA_BEAT, bad.count = 10;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_REPLICA_UPDATE;
    env.replica_update = &bad;
    zmq_msg_t frame;
    assert_int_equal(wire_tensor_encode_n(&frame, fx->tensor, 10, PS__ENCODING__ENCODING_F32, NULL),
                     0);
    assert_true(wire_send_msg(fx->router, &fx->peer, &env, &frame, 0) > 0);
    char err[256];
    assert_int_equal(s_recv(fx, S_DOWN, &m, err, sizeof err), PS__ERROR_CODE__ERROR_MALFORMED);
    assert_non_null(strstr(err, "must not have a tensor"));
    bad.kind = PS__REPLICA_KIND__REPLICA_UPDATE, bad.count = 0;
    assert_true(wire_send_msg(fx->router, &fx->peer, &env, NULL, 0) > 0);
    assert_int_equal(s_recv(fx, S_DOWN, &m, err, sizeof err), PS__ERROR_CODE__ERROR_MALFORMED);
    assert_non_null(strstr(err, "lacks a tensor"));
    printf("  every replica message kind round-trips; misplaced tensors refused\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_kind),
        cmocka_unit_test(test_round_trip_defaults),
        cmocka_unit_test(test_version_mismatch),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_counted_refused),
        cmocka_unit_test(test_counted_compressed),
        cmocka_unit_test(test_odd_address),
        cmocka_unit_test(test_encoded_size),
        cmocka_unit_test(test_header_at_the_limit),
        cmocka_unit_test(test_empty_header),
        cmocka_unit_test(test_send_error),
        cmocka_unit_test(test_kind_name),
        cmocka_unit_test(test_close_twice),
        cmocka_unit_test(test_nothing_to_read),
        cmocka_unit_test(test_round_trip_replica_messages),
        cmocka_unit_test(test_model_lengths),
    };
    return cmocka_run_group_tests(tests, s_setup, s_teardown);
}
