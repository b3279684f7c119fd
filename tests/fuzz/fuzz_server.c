/* fuzz_server: a libFuzzer target that drives the paramserver's message
 * handler with arbitrary messages from two clients over inproc://.
 *
 * Input: a sequence of messages, each
 *   byte  client (bit 0: which of the two clients sends it)
 *   byte  frame count (1..3)
 *   then per frame a 2-byte little-endian length L and L bytes, except for
 *   these lengths, which stand for a tensor frame (so that pushes can
 *   reach the consistency modes and the decoders):
 *     0xFFFF  float32, finite small values     0xFFFE  float32 with a NaN
 *     0xFFF0  float32 } the next byte k, then 4k bytes of the input written
 *     0xFFF1  float16 } over the start of a frame of small finite values in
 *     0xFFF2  int8    } that encoding (for int8: block 0's scale and values)
 *     0xFFF3..0xFFF5  the same in float32, float16, int8 for a frame of
 *                     `count` values (a part of a push, a shard's final
 *                     weights): first 3 bytes of count (little-endian; at
 *                     most MODEL_NPARAMS are sent), then k and 4k bytes
 *     0xFFF6..0xFFF8  as 0xFFF3..0xFFF5, with the frame at an odd address
 *                     (as CurveZMQ can deliver one; inproc passes the
 *                     pointer as it is)
 * The first byte of the input picks the mode (bits 0-6 modulo 3: sync,
 * async, ssp) and the server group (bit 7: a head of --shards 2, whose
 * shard 1 an input can play with ShardJoin, ShardPing and ShardFinal;
 * else one server alone). After each
 * message the server handles what arrived and the clients' replies are
 * dropped. After each input the server's invariants are checked
 * (server_invariant_problem: finite weights and momentum, consistent
 * counts); a violation aborts, so libFuzzer keeps the input as a crasher.
 *
 * Persistent: one server, one in-memory database and two connected clients
 * for the whole run; server_reset() gives every input a fresh server state
 * (no workers, no run, the initial weights), so inputs stay independent and
 * every crash reproduces, at thousands of inputs per second instead of ~30
 * with a new server and database file per input. tests/fuzz/server.dict
 * gives libFuzzer the Envelope's field tags; a custom mutator also writes
 * extreme floats (FLT_MAX, 3e38, NaN, int8 127s...) into the tensor prefixes
 * of an input, where a byte-level mutation rarely lands (D1's int8 block
 * scale: one 4-byte word at one offset).
 *
 * Built two ways: with clang -fsanitize=fuzzer (make fuzz) and with a plain
 * main() that replays the corpus and crashers (fuzz_replay.c, in make check). */
#include <czmq.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "server.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);
/* libFuzzer's own mutator; absent (weak, NULL) in fuzz_replay, which never
 * mutates. */
__attribute__((weak)) size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

static float *s_tensor(int nan)
{
    static float t[2][MODEL_NPARAMS];
    static int ready = 0;
    if (!ready) {
        for (int i = 0; i < MODEL_NPARAMS; i++)
            t[0][i] = t[1][i] = 1e-4f * (float)(i % 17);
        t[1][4242] = __builtin_nanf("");
        ready = 1;
    }
    return t[nan];
}

static void s_drain(void *sock)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&m);
}

/* Sends one of the two fixed float32 tensors without copying it. */
static void s_send_fixed(void *c, int nan, int more)
{
    zmq_msg_t t;
    zmq_msg_init_data(&t, s_tensor(nan), MODEL_NPARAMS * sizeof(float), NULL, NULL);
    zmq_msg_send(&t, c, more);
    zmq_msg_close(&t);
}

/* A tensor frame that the input stands for (see the top of this file). */
typedef struct {
    int fixed;    /* 1: the fixed float32 tensor; 2: the one with a NaN; 0: encoded */
    int encoding; /* PS__ENCODING__* */
    size_t count; /* values */
    int odd;      /* at an odd address */
    size_t at, n; /* its prefix: n bytes of the input at `at` */
} s_code_t;

/* Reads the tensor frame that length `len` stands for, from the input at
 * *p (which moves past it). 1, or 0 when len is a plain length. */
static int s_tensor_code(const uint8_t *data, size_t size, size_t *p, size_t len, s_code_t *c)
{
    memset(c, 0, sizeof *c);
    c->count = MODEL_NPARAMS;
    if (len >= 0xFFFE) {
        c->fixed = len == 0xFFFE ? 2 : 1;
        return 1;
    }
    if (len < 0xFFF0 || len > 0xFFF8)
        return 0;
    unsigned k = (unsigned)(len - 0xFFF0);
    c->encoding = (int)(k % 3);
    c->odd = k >= 6;
    if (k >= 3) {
        size_t count = 0;
        for (int b = 0; b < 3 && *p < size; b++)
            count |= (size_t)data[(*p)++] << (8 * b);
        c->count = count < MODEL_NPARAMS ? count : MODEL_NPARAMS;
    }
    size_t n = *p < size ? 4 * (size_t)data[(*p)++] : 0;
    c->n = n < size - *p ? n : size - *p;
    c->at = *p;
    *p += c->n;
    return 1;
}

static void s_free_hint(void *data, void *hint)
{
    (void)data;
    free(hint);
}

/* Sends the tensor frame c: small finite values in its encoding (the
 * start of one frame of MODEL_NPARAMS values, encoded once: for int8 the
 * start of a frame is a frame of fewer values), its prefix written over
 * them. */
static void s_send_tensor(void *sock, const s_code_t *c, const uint8_t *data, int more)
{
    if (c->fixed) {
        s_send_fixed(sock, c->fixed == 2, more);
        return;
    }
    static zmq_msg_t base[3];
    static int ready[3];
    if (!ready[c->encoding]) {
        if (wire_tensor_encode_n(&base[c->encoding], s_tensor(0), MODEL_NPARAMS, c->encoding,
                                 NULL) != 0)
            abort();
        ready[c->encoding] = 1;
    }
    size_t size = wire_encoded_size_n(c->encoding, c->count);
    uint8_t *buf = malloc(size + 1), *at = buf + c->odd;
    if (!buf)
        abort();
    memcpy(at, zmq_msg_data(&base[c->encoding]), size);
    memcpy(at, data + c->at, c->n < size ? c->n : size);
    zmq_msg_t t;
    zmq_msg_init_data(&t, at, size, s_free_hint, buf); /* the frame owns buf now */
    zmq_msg_send(&t, sock, more);
    zmq_msg_close(&t);
}

/* One server per mode and group size, made on first use and reset for
 * every input. */
typedef struct {
    server_opts_t o;
    server_t *s;
    void *client[2];
    char ep[64];
} rig_t;

static rig_t s_rigs[6]; /* [mode + 3 * (shards == 2)] */

/* At exit, before czmq's own handler ends the context (which waits for
 * every socket to be closed). */
static void s_cleanup(void)
{
    for (int m = 0; m < 6; m++) {
        for (int k = 0; k < 2; k++)
            if (s_rigs[m].client[k])
                zmq_close(s_rigs[m].client[k]);
        server_destroy(&s_rigs[m].s);
    }
}

static rig_t *s_rig(int mode, int shards)
{
    rig_t *rig = s_rigs;
    static char dir[64];
    static int once = 0;
    if (!once) {
        /* The server logs every refusal: useful in a run, noise here. */
        if (!freopen("/dev/null", "w", stdout))
            abort();
        wire_init();
        zsys_handler_set(NULL);
        snprintf(dir, sizeof dir, "%s/fuzz_server.%d",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
        once = 1;
    }
    rig_t *r = &rig[mode + 3 * (shards == 2)];
    if (r->s) {
        server_reset(r->s);
        return r;
    }
    snprintf(r->ep, sizeof r->ep, "inproc://fuzz-%d-%d", mode, shards);
    r->o = (server_opts_t){.bind = r->ep,
                           .data_dir = NULL,
                           .dataset = "mnist",
                           .db = ":memory:",
                           .out_dir = dir,
                           .checkpoint = "/dev/null",
                           .mode = (server_mode_t)mode,
                           .workers = 2,
                           .staleness = 1,
                           .epochs = 1,
                           .batch_size = 64,
                           .train_limit = 256,
                           .threads = 1,
                           .lr = 0.01,
                           .momentum = 0.9,
                           .seed = 1,
                           .register_timeout = 1e9,
                           .worker_timeout = 1e9,
                           .checkpoint_every = 0,
                           .shards = shards};
    r->s = server_new(&r->o);
    if (!r->s)
        abort(); /* the harness itself is broken */
    void *ctx = zsys_init();
    static int registered = 0;
    if (!registered++)
        atexit(s_cleanup); /* after czmq's, so it runs first */
    for (int k = 0; k < 2; k++) {
        r->client[k] = zmq_socket(ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(r->client[k], ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(r->client[k], r->ep);
    }
    return r;
}

/* Sends one frame of the input at *p (an empty one past its end). */
static void s_frame(void *c, const uint8_t *data, size_t size, size_t *p, int more)
{
    if (*p + 2 > size) {
        zmq_send(c, "", 0, more);
        return;
    }
    size_t len = data[*p] | (size_t)data[*p + 1] << 8;
    *p += 2;
    s_code_t code;
    if (s_tensor_code(data, size, p, len, &code)) {
        s_send_tensor(c, &code, data, more);
    } else {
        if (len > size - *p)
            len = size - *p;
        zmq_send(c, data + *p, len, more);
        *p += len;
    }
}

/* Offsets of the 4-byte words of the input's tensor prefixes (0xFFF0..8
 * frames), walking the input as LLVMFuzzerTestOneInput does; how many. */
static int s_prefix_words(const uint8_t *data, size_t size, size_t *at, int max)
{
    int n = 0;
    size_t p = 1;
    while (p + 2 <= size) {
        int frames = 1 + data[p + 1] % 3;
        p += 2;
        for (int f = 0; f < frames && p + 2 <= size; f++) {
            size_t len = data[p] | (size_t)data[p + 1] << 8;
            p += 2;
            s_code_t code;
            if (!s_tensor_code(data, size, &p, len, &code)) {
                p += len < size - p ? len : size - p;
                continue;
            }
            for (size_t w = 0; w + 4 <= code.n && n < max; w += 4)
                at[n++] = code.at + w;
        }
    }
    return n;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed)
{
    static const uint32_t extreme[] = {
        0x7f7fffff /* FLT_MAX */,  0x7f61b1e6 /* 3e38 */,      0x7e967699 /* 1e38 */,
        0xff7fffff /* -FLT_MAX */, 0x7fc00000 /* NaN */,       0x7f800000 /* inf */,
        0x00000001 /* denormal */, 0x7f7f7f7f /* int8 127s */, 0x80808080 /* int8 -128s */};
    size_t at[256];
    int n = (seed & 3) == 0 ? s_prefix_words(data, size, at, 256) : 0;
    if (n > 0) {
        uint32_t x = extreme[(seed >> 2) % (sizeof extreme / sizeof extreme[0])];
        memcpy(data + at[(seed >> 6) % (unsigned)n], &x, sizeof x);
        return size;
    }
    return LLVMFuzzerMutate ? LLVMFuzzerMutate(data, size, max_size) : size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    rig_t *r = s_rig((data[0] & 0x7f) % 3, data[0] & 0x80 ? 2 : 1);
    size_t p = 1;
    while (p + 2 <= size) {
        void *c = r->client[data[p] & 1];
        int frames = 1 + data[p + 1] % 3;
        p += 2;
        for (int f = 0; f < frames; f++)
            s_frame(c, data, size, &p, f + 1 < frames ? ZMQ_SNDMORE : 0);
        for (int tries = 0; tries < 100 && server_handle_ready(r->s) == 0; tries++)
            ;
        s_drain(r->client[0]);
        s_drain(r->client[1]);
    }
    /* Nothing of this input may reach the next one. */
    while (server_handle_ready(r->s) > 0)
        ;
    /* The oracle: whatever peers send, the server's state stays sound (this
     * is what finds a gradient that makes the weights overflow). */
    const char *bad = server_invariant_problem(r->s);
    if (bad) {
        fprintf(stderr, "fuzz_server: %s\n", bad);
        abort();
    }
    s_drain(r->client[0]);
    s_drain(r->client[1]);
    return 0;
}
