/* wire: ZeroMQ frames <-> checked ps.proto messages; see wire.h. */
#include "wire.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "model.h"
#include "wire_half.h"

/* Does this message carry a tensor frame? (A standby's update does unless
 * it is a heartbeat.) */
static int s_needs_tensor(const Ps__Envelope *env)
{
    switch (env->body_case) {
    case PS__ENVELOPE__BODY_PUSH:
    case PS__ENVELOPE__BODY_WEIGHTS:
    case PS__ENVELOPE__BODY_SHARD_FINAL: return 1;
    case PS__ENVELOPE__BODY_REPLICA_UPDATE:
        return env->replica_update->kind == PS__REPLICA_KIND__REPLICA_STATE_W ||
               env->replica_update->kind == PS__REPLICA_KIND__REPLICA_STATE_V ||
               env->replica_update->kind == PS__REPLICA_KIND__REPLICA_UPDATE;
    default: return 0;
    }
}

/* The encoding and value count its header gives a tensor frame (a count
 * of 0 means the whole vector: nparams). */
static void s_tensor_layout(const Ps__Envelope *env, size_t nparams, int *enc, size_t *count)
{
    uint32_t n = 0;
    switch (env->body_case) {
    case PS__ENVELOPE__BODY_PUSH:
        *enc = (int)env->push->encoding;
        n = env->push->count;
        break;
    case PS__ENVELOPE__BODY_WEIGHTS:
        *enc = (int)env->weights->encoding;
        n = env->weights->count;
        break;
    case PS__ENVELOPE__BODY_REPLICA_UPDATE: /* float32 */
        *enc = PS__ENCODING__ENCODING_F32;
        n = env->replica_update->count;
        break;
    default: /* ShardFinal: float32 */
        *enc = PS__ENCODING__ENCODING_F32;
        n = env->shard_final->count;
        break;
    }
    *count = n == 0 ? nparams : n;
}

const char *wire_kind_name(Ps__Envelope__BodyCase kind)
{
    switch (kind) {
    case PS__ENVELOPE__BODY_REGISTER: return "register";
    case PS__ENVELOPE__BODY_WELCOME: return "welcome";
    case PS__ENVELOPE__BODY_PULL: return "pull";
    case PS__ENVELOPE__BODY_PUSH: return "push";
    case PS__ENVELOPE__BODY_WEIGHTS: return "weights";
    case PS__ENVELOPE__BODY_EPOCH: return "epoch";
    case PS__ENVELOPE__BODY_DONE: return "done";
    case PS__ENVELOPE__BODY_ACK: return "ack";
    case PS__ENVELOPE__BODY_ERROR: return "error";
    case PS__ENVELOPE__BODY_SHARD_JOIN: return "shard join";
    case PS__ENVELOPE__BODY_SHARD_WELCOME: return "shard welcome";
    case PS__ENVELOPE__BODY_MEMBERSHIP: return "membership";
    case PS__ENVELOPE__BODY_SHARD_PING: return "shard ping";
    case PS__ENVELOPE__BODY_SHARD_FINAL: return "shard final";
    case PS__ENVELOPE__BODY_REPLICA_UPDATE: return "replica update";
    case PS__ENVELOPE__BODY_REPLICA_ACK: return "replica ack";
    case PS__ENVELOPE__BODY_SHARD_TERM: return "shard term";
    case PS__ENVELOPE__BODY_LOCATE: return "locate";
    case PS__ENVELOPE__BODY_LOCATED: return "located";
    case PS__ENVELOPE__BODY_REPLICA_HEAD: return "replica head";
    case PS__ENVELOPE__BODY_METRIC_ROW: return "metric row";
    default: return "unknown";
    }
}

void wire_init(void)
{
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 128 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
}

static void s_free(void *data, void *hint)
{
    (void)hint;
    free(data);
}

int wire_tensor_init(zmq_msg_t *msg, size_t count)
{
    return zmq_msg_init_size(msg, count * sizeof(float)) == 0 ? 0 : -1;
}

int64_t wire_max_message(size_t nparams)
{
    return (int64_t)nparams * (int64_t)sizeof(float) + 65536;
}

long wire_send_msg(void *sock, const wire_peer_t *peer, Ps__Envelope *env, zmq_msg_t *tensor,
                   int flags)
{
    env->protocol = WIRE_PROTOCOL;
    size_t hlen = ps__envelope__get_packed_size(env);
    uint8_t *hbuf = malloc(hlen ? hlen : 1);
    if (!hbuf) {
        if (tensor)
            zmq_msg_close(tensor);
        errno = ENOMEM;
        return -1;
    }
    ps__envelope__pack(env, hbuf);
    zmq_msg_t h;
    zmq_msg_init_data(&h, hbuf, hlen, s_free, NULL); /* the frame owns hbuf now */
    if ((peer && zmq_send(sock, peer->id, peer->len, ZMQ_SNDMORE | flags) < 0) ||
        zmq_msg_send(&h, sock, (tensor ? ZMQ_SNDMORE : 0) | flags) < 0) {
        int e = errno;
        zmq_msg_close(&h);
        if (tensor)
            zmq_msg_close(tensor);
        errno = e;
        return -1;
    }
    long sent = (long)hlen;
    if (tensor) {
        size_t tlen = zmq_msg_size(tensor);
        /* ZeroMQ takes all frames of a message or none: once the first frame
         * is accepted, the rest cannot fail for lack of room. */
        if (zmq_msg_send(tensor, sock, flags) < 0) {
            zmq_msg_close(tensor);
            return -1;
        }
        sent += (long)tlen;
    }
    return sent;
}

long wire_send(void *sock, const wire_peer_t *peer, Ps__Envelope *env, const float *tensor,
               int flags)
{
    zmq_msg_t t;
    int enc;
    size_t count = 0;
    if (tensor && s_needs_tensor(env))
        s_tensor_layout(env, 0, &enc, &count);
    if (tensor && count == 0) {
        errno = EINVAL;
        return -1;
    }
    /* Build the tensor frame before sending anything: failing after the
     * header went out with SNDMORE would glue the next message onto it. */
    if (tensor && wire_tensor_encode_n(&t, tensor, count, PS__ENCODING__ENCODING_F32, NULL) != 0)
        return -1;
    return wire_send_msg(sock, peer, env, tensor ? &t : NULL, flags);
}

long wire_send_error(void *sock, const wire_peer_t *peer, uint64_t request_id, Ps__ErrorCode code,
                     const char *message)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Error e = PS__ERROR__INIT;
    e.code = code;
    e.message = (char *)message;
    env.body_case = PS__ENVELOPE__BODY_ERROR;
    env.error = &e;
    env.request_id = request_id;
    return wire_send(sock, peer, &env, NULL, ZMQ_DONTWAIT);
}

/* Reads and drops the remaining frames of a multipart message. */
static void s_drain(void *sock)
{
    int more = 1;
    size_t sz = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, sock, 0) < 0) {
            zmq_msg_close(&f);
            return;
        }
        zmq_msg_close(&f);
    }
}

/* IEEE float <-> half, round to nearest even: by hand, and with the F16C
 * instructions (x86-64, chosen at run time when the CPU has them: the default
 * build targets the x86-64 baseline, see common/dispatch.h). Both give the
 * same results. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <cpuid.h>
#define S_HAVE_F16C_PATH 1

__attribute__((target("avx,f16c"))) static size_t s_to_half_f16c(const float *in, uint16_t *out,
                                                                 size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}

__attribute__((target("avx,f16c"))) static size_t s_from_half_f16c(const unsigned char *in,
                                                                   float *out, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + 2 * i))));
    return i;
}

int wire_cpu_has_f16c(void)
{
    static int known = -1; /* a race only computes the same answer twice */
    if (known < 0) {
        /* CPUID leaf 1, ECX: bit 27 OSXSAVE, 28 AVX, 29 F16C; then XGETBV
         * says whether the OS saves the YMM registers. By hand, because
         * clang 14's __builtin_cpu_supports does not know "f16c". */
        unsigned a, b, c, d;
        int ok = __get_cpuid(1, &a, &b, &c, &d) && (c >> 27 & 7) == 7;
        if (ok) {
            unsigned lo, hi;
            __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            ok = (lo & 6) == 6;
        }
        known = ok;
    }
    return known;
}
#else
int wire_cpu_has_f16c(void)
{
    return 0;
}
#endif

static uint16_t s_f2h(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    if (((x >> 23) & 0xff) == 0xff)
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp), h = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* a carry into the exponent is the right rounding */
    return (uint16_t)h;
}

static float s_h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, x;
    if (exp == 0 && mant == 0)
        x = sign;
    else if (exp == 0) { /* subnormal: normalise */
        int e = 1;
        while (!(mant & 0x400)) {
            mant <<= 1;
            e--;
        }
        x = sign | ((uint32_t)(e + 127 - 15) << 23) | ((mant & 0x3ff) << 13);
    } else if (exp == 31)
        x = sign | 0x7f800000 | (mant << 13);
    else
        x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static void s_to_half(const float *in, uint16_t *out, size_t n)
{
    size_t i = 0;
#ifdef S_HAVE_F16C_PATH
    if (wire_cpu_has_f16c())
        i = s_to_half_f16c(in, out, n);
#endif
    for (; i < n; i++)
        out[i] = s_f2h(in[i]);
}

/* Half i of a frame at any address (CurveZMQ, and plain TCP for a small
 * frame, can deliver one at an odd address, where a uint16_t load is
 * undefined). */
static uint16_t s_half_at(const unsigned char *in, size_t i)
{
    uint16_t h;
    memcpy(&h, in + 2 * i, sizeof h);
    return h;
}

/* in: n halves at any address. */
static void s_from_half(const unsigned char *in, float *out, size_t n)
{
    size_t i = 0;
#ifdef S_HAVE_F16C_PATH
    if (wire_cpu_has_f16c())
        i = s_from_half_f16c(in, out, n);
#endif
    for (; i < n; i++)
        out[i] = s_h2f(s_half_at(in, i));
}

/* Blocks of an int8 frame of `count` values. */
static size_t s_i8_blocks(size_t count)
{
    return (count + WIRE_I8_BLOCK - 1) / WIRE_I8_BLOCK;
}

/* Block b of an int8 frame of `count` values: its scale, its n (<=
 * WIRE_I8_BLOCK) values. */
static const int8_t *s_i8_block(const unsigned char *in, size_t count, size_t b, size_t *n,
                                float *scale)
{
    size_t lo = b * WIRE_I8_BLOCK;
    *n = count - lo < WIRE_I8_BLOCK ? count - lo : WIRE_I8_BLOCK;
    const unsigned char *blk = in + b * (sizeof(float) + WIRE_I8_BLOCK);
    memcpy(scale, blk, sizeof *scale);
    return (const int8_t *)(blk + sizeof *scale);
}

Ps__Encoding wire_gradient_encoding(Ps__Compression c)
{
    switch (c) {
    case PS__COMPRESSION__COMPRESSION_FP16: return PS__ENCODING__ENCODING_F16;
    case PS__COMPRESSION__COMPRESSION_INT8: return PS__ENCODING__ENCODING_I8;
    default: return PS__ENCODING__ENCODING_F32;
    }
}

Ps__Encoding wire_weights_encoding(Ps__Compression c)
{
    return c == PS__COMPRESSION__COMPRESSION_NONE ? PS__ENCODING__ENCODING_F32
                                                  : PS__ENCODING__ENCODING_F16;
}

size_t wire_encoded_size_n(int encoding, size_t count)
{
    switch (encoding) {
    case PS__ENCODING__ENCODING_F32: return count * sizeof(float);
    case PS__ENCODING__ENCODING_F16: return count * sizeof(uint16_t);
    case PS__ENCODING__ENCODING_I8: return count + s_i8_blocks(count) * sizeof(float);
    default: return 0;
    }
}

int wire_tensor_encode_n(zmq_msg_t *msg, const float *t, size_t count, int encoding,
                         float *residual)
{
    size_t size = wire_encoded_size_n(encoding, count);
    if (size == 0 || zmq_msg_init_size(msg, size) != 0)
        return -1;
    unsigned char *out = zmq_msg_data(msg);
    if (encoding == PS__ENCODING__ENCODING_F32)
        memcpy(out, t, size); /* x86 and ARM are little-endian: as they are */
    else if (encoding == PS__ENCODING__ENCODING_F16)
        s_to_half(t, (uint16_t *)out, count);
    else {
        for (size_t b = 0; b < s_i8_blocks(count); b++) {
            size_t lo = b * WIRE_I8_BLOCK, n = count - lo;
            n = n < WIRE_I8_BLOCK ? n : WIRE_I8_BLOCK;
            float x[WIRE_I8_BLOCK], mx = 0.0f;
            for (size_t i = 0; i < n; i++) {
                x[i] = t[lo + i] + (residual ? residual[lo + i] : 0.0f);
                mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
            }
            float scale = mx / 127.0f, inv = mx > 0 ? 127.0f / mx : 0.0f;
            unsigned char *blk = out + b * (sizeof(float) + WIRE_I8_BLOCK);
            memcpy(blk, &scale, sizeof scale);
            int8_t *q = (int8_t *)(blk + sizeof scale);
            for (size_t i = 0; i < n; i++) {
                long v = lrintf(x[i] * inv);
                q[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
                if (residual)
                    residual[lo + i] = x[i] - (float)q[i] * scale;
            }
        }
    }
    return 0;
}

const float *wire_tensor(const wire_msg_t *m, float *scratch)
{
    if (m->tensor)
        return m->tensor;
    const unsigned char *in = zmq_msg_data((zmq_msg_t *)&m->tensor_msg);
    size_t count = m->count;
    if (m->encoding == PS__ENCODING__ENCODING_F16)
        s_from_half(in, scratch, count);
    else
        for (size_t b = 0; b < s_i8_blocks(count); b++) {
            size_t n;
            float scale;
            const int8_t *q = s_i8_block(in, count, b, &n, &scale);
            for (size_t i = 0; i < n; i++)
                scratch[b * WIRE_I8_BLOCK + i] = (float)q[i] * scale;
        }
    return scratch;
}

/* Checks a compressed tensor frame: no half-precision infinity or NaN; for
 * int8, no block scale that is negative or not finite, and no decoded value
 * (scale x int8) that overflows a float: a scale of 3e38 is finite, 127 times
 * it is not. Returns the index of the first bad value or block, or -1 when
 * all is well. */
static long s_check_compressed(const unsigned char *in, size_t count, int encoding)
{
    if (encoding == PS__ENCODING__ENCODING_F16) {
        for (size_t i = 0; i < count; i++)
            if ((s_half_at(in, i) & 0x7c00) == 0x7c00)
                return (long)i;
        return -1;
    }
    for (size_t b = 0; b < s_i8_blocks(count); b++) {
        size_t n;
        float scale;
        const int8_t *q = s_i8_block(in, count, b, &n, &scale);
        int big = 0;
        for (size_t i = 0; i < n; i++)
            big = abs(q[i]) > big ? abs(q[i]) : big;
        if (!isfinite(scale) || scale < 0 || !isfinite((float)big * scale))
            return (long)b;
    }
    return -1;
}

static int s_more(void *sock)
{
    int more = 0;
    size_t sz = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &sz);
    return more;
}

/* Checks what the header says about itself: a protocol version (ours) and a
 * body. 0, or the Error code with err set. */
static int s_check_envelope(const Ps__Envelope *env, char *err, size_t errlen)
{
    if (env->protocol == 0) { /* proto3 cannot tell 0 from absent: not an Envelope */
        errmsg_set(err, errlen, "header has no protocol version (not an Envelope)");
        return PS__ERROR_CODE__ERROR_MALFORMED;
    }
    if (env->protocol != WIRE_PROTOCOL) {
        errmsg_set(err, errlen,
                   "protocol version mismatch: this side speaks %d, the peer %u; run the same "
                   "release of paramserver and worker",
                   WIRE_PROTOCOL, env->protocol);
        return PS__ERROR_CODE__ERROR_VERSION;
    }
    if (env->body_case == PS__ENVELOPE__BODY__NOT_SET) {
        errmsg_set(err, errlen, "message has no body (unknown message kind?)");
        return PS__ERROR_CODE__ERROR_MALFORMED;
    }
    return 0;
}

/* Checks the tensor frame m->tensor_msg against its encoding and count in
 * env (at most nparams; the size, finite values or block scales, float
 * alignment) and sets m->encoding, m->count, and m->tensor for float32. 0,
 * or the Error code with err set. */
static int s_check_tensor(const Ps__Envelope *env, size_t nparams, wire_msg_t *m, char *err,
                          size_t errlen)
{
    int rc = 0;
    size_t tlen = zmq_msg_size(&m->tensor_msg), count;
    const float *t = zmq_msg_data(&m->tensor_msg);
    int enc;
    s_tensor_layout(env, nparams, &enc, &count);
    size_t want = wire_encoded_size_n(enc, count);
    long bad;
    m->encoding = enc;
    m->count = count;
    if (nparams == 0) {
        errmsg_set(err, errlen, "a tensor frame before the model is known (no Welcome yet)");
        rc = PS__ERROR_CODE__ERROR_MALFORMED;
    } else if (count > nparams) {
        errmsg_set(err, errlen,
                   "tensor of %zu values; this side's model has %zu parameters (are the peers "
                   "running the same --model?)",
                   count, nparams);
        rc = PS__ERROR_CODE__ERROR_MALFORMED;
    } else if (want == 0) {
        errmsg_set(err, errlen, "unknown tensor encoding %d", enc);
        rc = PS__ERROR_CODE__ERROR_MALFORMED;
    } else if (tlen != want) {
        errmsg_set(err, errlen,
                   "tensor frame has %zu bytes; expected %zu (%zu values, "
                   "encoding %d)",
                   tlen, want, count, enc);
        rc = PS__ERROR_CODE__ERROR_MALFORMED;
    } else if (enc != PS__ENCODING__ENCODING_F32) {
        if ((bad = s_check_compressed((const unsigned char *)t, count, enc)) >= 0) {
            errmsg_set(err, errlen, "tensor %s %ld is not finite%s",
                       enc == PS__ENCODING__ENCODING_F16 ? "value" : "block scale", bad,
                       enc == PS__ENCODING__ENCODING_F16
                           ? ""
                           : " (or overflows when multiplied by the block's int8 values)");
            rc = PS__ERROR_CODE__ERROR_MALFORMED;
        }
    } else {
        if (((uintptr_t)t & 3) != 0) { /* CurveZMQ, TCP for a small frame: any address */
            if (!(m->aligned = malloc(tlen ? tlen : 1))) {
                errmsg_set(err, errlen, "out of memory for a tensor frame");
                return PS__ERROR_CODE__ERROR_STATE;
            }
            memcpy(m->aligned, t, tlen);
            t = m->aligned;
        }
        if (!model_all_finite(t, count)) {
            size_t i = 0;
            while (isfinite(t[i]))
                i++;
            errmsg_set(err, errlen, "tensor value %zu is not finite (%g)", i, (double)t[i]);
            rc = PS__ERROR_CODE__ERROR_MALFORMED;
        } else
            m->tensor = t;
    }
    return rc;
}

int wire_recv(void *sock, wire_peer_t *peer, wire_msg_t *m, size_t nparams, char *err,
              size_t errlen)
{
    memset(m, 0, sizeof *m);
    zmq_msg_t f;
    int flags = 0;
    if (peer) {
        peer->key[0] = '\0';
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, sock, flags) < 0) {
            zmq_msg_close(&f);
            return -1;
        }
        peer->len = zmq_msg_size(&f) <= WIRE_MAX_PEER ? zmq_msg_size(&f) : WIRE_MAX_PEER;
        memcpy(peer->id, zmq_msg_data(&f), peer->len);
        zmq_msg_close(&f);
        if (!s_more(sock)) {
            errmsg_set(err, errlen, "empty message");
            return PS__ERROR_CODE__ERROR_MALFORMED;
        }
    }
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, sock, flags) < 0) {
        zmq_msg_close(&f);
        return -1;
    }
    size_t hlen = zmq_msg_size(&f);
    m->bytes = hlen;
    if (peer) { /* the connection's metadata rides on the frames it sent */
        const char *user = zmq_msg_gets(&f, "User-Id");
        snprintf(peer->key, sizeof peer->key, "%s", user ? user : "");
    }
    if (hlen > WIRE_MAX_HEADER) {
        zmq_msg_close(&f);
        s_drain(sock);
        errmsg_set(err, errlen, "header of %zu bytes is over the limit of %d", hlen,
                   WIRE_MAX_HEADER);
        return PS__ERROR_CODE__ERROR_MALFORMED;
    }
    Ps__Envelope *env = ps__envelope__unpack(NULL, hlen, zmq_msg_data(&f));
    zmq_msg_close(&f);
    if (!env) {
        s_drain(sock);
        errmsg_set(err, errlen, "header of %zu bytes is not a valid Envelope", hlen);
        return PS__ERROR_CODE__ERROR_MALFORMED;
    }
    int rc = s_check_envelope(env, err, errlen);
    int more = s_more(sock);
    if (rc == 0 && more != s_needs_tensor(env)) {
        errmsg_set(err, errlen, "%s message %s a tensor frame", wire_kind_name(env->body_case),
                   more ? "must not have" : "lacks");
        rc = PS__ERROR_CODE__ERROR_MALFORMED;
    }
    if (rc == 0 && more) {
        zmq_msg_init(&m->tensor_msg);
        m->has_tensor_msg = 1;
        if (zmq_msg_recv(&m->tensor_msg, sock, flags) < 0) {
            int e = errno;
            wire_msg_close(m);
            ps__envelope__free_unpacked(env, NULL);
            errno = e;
            return -1;
        }
        m->bytes += zmq_msg_size(&m->tensor_msg);
        rc = s_check_tensor(env, nparams, m, err, errlen);
    }
    if (s_more(sock)) {
        s_drain(sock);
        if (rc == 0) {
            errmsg_set(err, errlen, "%s message has extra frames", wire_kind_name(env->body_case));
            rc = PS__ERROR_CODE__ERROR_MALFORMED;
        }
    }
    if (rc != 0) {
        wire_msg_close(m);
        ps__envelope__free_unpacked(env, NULL);
        return rc;
    }
    m->env = env;
    return 0;
}

void wire_msg_move(wire_msg_t *dst, wire_msg_t *src)
{
    *dst = (wire_msg_t){.env = src->env,
                        .encoding = src->encoding,
                        .count = src->count,
                        .aligned = src->aligned,
                        .bytes = src->bytes,
                        .has_tensor_msg = src->has_tensor_msg};
    if (src->has_tensor_msg) {
        zmq_msg_init(&dst->tensor_msg);
        zmq_msg_move(&dst->tensor_msg, &src->tensor_msg);
        zmq_msg_close(&src->tensor_msg);
        if (src->tensor)
            dst->tensor = src->aligned ? src->aligned : zmq_msg_data(&dst->tensor_msg);
    }
    memset(src, 0, sizeof *src);
}

void wire_msg_close(wire_msg_t *m)
{
    if (m->env)
        ps__envelope__free_unpacked(m->env, NULL);
    m->env = NULL;
    if (m->has_tensor_msg)
        zmq_msg_close(&m->tensor_msg);
    m->has_tensor_msg = 0;
    m->tensor = NULL;
    free(m->aligned);
    m->aligned = NULL;
}

uint16_t wire_f2h_soft(float f)
{
    return s_f2h(f);
}

float wire_h2f_soft(uint16_t h)
{
    return s_h2f(h);
}
