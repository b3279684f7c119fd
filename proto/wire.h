/* wire: the codec between ZeroMQ frames and checked messages (ps.proto).
 *
 * A message is an Envelope frame, then for Push, Weights and ShardFinal one
 * tensor frame of the `count` little-endian floats its header names (at
 * most, and by default, the model's length: the `nparams` the receiver gives
 * wire_recv, from common/models.h). On a ROUTER socket
 * (the server) the peer's routing id comes first. wire_recv checks, before
 * anyone uses the message: the frame count, the header size, that it
 * decodes, the protocol version, that a body is set, that the tensor frame is
 * there exactly when the kind needs one and has the right length, and that
 * every tensor value is finite. Anything else is refused with an error code
 * and message that the server sends back as an Error.
 *
 * Tensors travel as float32 (read in place from the received frame, no
 * copy), or compressed as float16 or as int8 with a float32 scale per block
 * of WIRE_I8_BLOCK values (Push.encoding / Weights.encoding say which; the
 * frame's length must match, and every decoded value must be finite).
 * wire_tensor() gives the floats whatever the encoding. */
#ifndef WIRE_H
#define WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "ps.pb-c.h"

#define WIRE_PROTOCOL 1
#define WIRE_MAX_HEADER 4096 /* bytes; a larger Envelope is refused */
#define WIRE_MAX_PEER 256    /* bytes of a ZeroMQ routing id */

#define WIRE_I8_BLOCK 256

/* The most messages a step's gradient may be split into for one server
 * (Push.parts). */
#define WIRE_MAX_PARTS 64

/* The largest message a server of a model of `nparams` parameters accepts
 * (ZMQ_MAXMSGSIZE, the gate): a float32 tensor of the whole vector + slack
 * for the header and the routing id. */
int64_t wire_max_message(size_t nparams);

/* Bytes of a tensor frame of `count` values in an encoding
 * (PS__ENCODING__*); 0 if unknown. */
size_t wire_encoded_size_n(int encoding, size_t count);

/* What a compression granted at registration means on the wire: how a
 * worker's gradients travel (NONE, FP16, INT8 -> F32, F16, I8) and how the
 * server's weights do (F32, or F16 under any compression). */
Ps__Encoding wire_gradient_encoding(Ps__Compression c);
Ps__Encoding wire_weights_encoding(Ps__Compression c);

/* A routing id: who sent a message to a ROUTER socket, and where a reply goes. */
typedef struct {
    size_t len;
    unsigned char id[WIRE_MAX_PEER];
    char key[48]; /* CurveZMQ: the peer's public key (Z85, ZAP's User-Id), else "" */
} wire_peer_t;

/* A received, checked message. */
typedef struct {
    Ps__Envelope *env;    /* decoded header, owned; env->body_case says which */
    const float *tensor;  /* F32: `count` floats in the received frame; else NULL */
    int encoding;         /* of the tensor frame, when there is one */
    size_t count;         /* values in the tensor frame (the header's count; 0 there:
                           * the nparams given to wire_recv) */
    float *aligned;       /* F32 in a frame not aligned for floats (CurveZMQ, and plain
                           * TCP for a small frame, can deliver one so): a copy, which
                           * `tensor` points to */
    zmq_msg_t tensor_msg; /* the tensor frame */
    int has_tensor_msg;
    size_t bytes; /* bytes received (all frames) */
} wire_msg_t;

/* Call once at program start, before any thread: tunes the allocator for
 * ~1 MB messages. glibc serves blocks over 128 KB with a fresh mmap, so every
 * message costs page faults and zeroing, which on a virtual machine made 2
 * clients 6x slower than 1 (README, "Server microbenchmark"); with a higher
 * threshold the heap recycles the same pages. */
void wire_init(void);

/* Sends env (its protocol field is set here) and, when tensor is not NULL,
 * the tensor frame of the float32 values the header's count names (which
 * must not be 0 here: EINVAL), to peer (NULL on a DEALER socket). Returns
 * the bytes sent or -1 with errno set (EAGAIN if the socket would block with
 * ZMQ_DONTWAIT in flags). */
long wire_send(void *sock, const wire_peer_t *peer, Ps__Envelope *env, const float *tensor,
               int flags);

/* Receives one message: blocks until it is there (call it after zmq_poll
 * says the socket is readable; with ZMQ_RCVTIMEO set it gives up with
 * EAGAIN). peer is NULL
 * on a DEALER socket and receives the routing id on a ROUTER socket.
 * nparams is the length of the receiver's model (models.h): a tensor count
 * of 0 means that many values, and a larger count is refused (0 before the
 * receiver knows its model: then any tensor frame is refused).
 * Returns 0 with m filled; -1 with errno set for a socket error (EAGAIN:
 * nothing to read); or a positive Ps__ErrorCode when the message was
 * received but refused, with a message in err (peer is still filled, so an
 * Error can be sent back). On anything but 0, m holds nothing to free. */
int wire_recv(void *sock, wire_peer_t *peer, wire_msg_t *m, size_t nparams, char *err,
              size_t errlen);

/* The message's tensor as m->count floats: in place for F32, else decoded
 * into scratch (room for m->count floats), which is returned. */
const float *wire_tensor(const wire_msg_t *m, float *scratch);

/* A tensor frame holding the `count` values at t in `encoding`. For I8 with
 * a residual (`count` floats, error feedback), t + residual is encoded and
 * residual becomes what the encoding lost, to be sent with the next tensor.
 * 0, or -1 when out of memory or for an unknown encoding. */
int wire_tensor_encode_n(zmq_msg_t *msg, const float *t, size_t count, int encoding,
                         float *residual);

/* Moves a received message: dst takes over src's header and frames (and
 * src is left empty). Use it instead of copying the struct. */
void wire_msg_move(wire_msg_t *dst, wire_msg_t *src);

/* Frees what wire_recv filled; safe to call twice. */
void wire_msg_close(wire_msg_t *m);

/* An F32 tensor frame of `count` floats for the caller to fill through
 * zmq_msg_data (a worker computes its gradient straight into the frame it
 * will send; wire_tensor_encode_n copies a tensor in instead).
 * 0, or -1 when out of memory. */
int wire_tensor_init(zmq_msg_t *msg, size_t count);

/* As wire_send, with a ready tensor frame (or NULL) whose ownership passes
 * to this call, sent or not. To send one frame to several peers without
 * copying it, give each call its own zmq_msg_copy of it (ZeroMQ shares the
 * buffer and counts references). */
long wire_send_msg(void *sock, const wire_peer_t *peer, Ps__Envelope *env, zmq_msg_t *tensor,
                   int flags);

/* Sends an Error{code, message} answering request_id (0 when the request
 * could not be read) to peer, without blocking. Returns as wire_send. */
long wire_send_error(void *sock, const wire_peer_t *peer, uint64_t request_id, Ps__ErrorCode code,
                     const char *message);

/* The name of a message kind, for log lines ("push", "weights"...). */
const char *wire_kind_name(Ps__Envelope__BodyCase kind);

#endif
