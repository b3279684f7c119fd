/* wire: the codec between ZeroMQ frames and checked messages (ps.proto).
 *
 * A message is an Envelope frame, then for Push and Weights one tensor frame
 * of exactly WIRE_TENSOR_FLOATS little-endian floats. On a ROUTER socket
 * (the server) the peer's routing id comes first. wire_recv checks, before
 * anyone uses the message: the frame count, the header size, that it
 * decodes, the protocol version, that a body is set, that the tensor frame is
 * there exactly when the kind needs one and has the right length, and that
 * every tensor value is finite. Anything else is refused with an error code
 * and message that the server sends back as an Error.
 *
 * The tensor is read in place from the received frame (no copy); a send
 * copies it once into a new frame, so the caller may reuse its buffer at once. */
#ifndef WIRE_H
#define WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "ps.pb-c.h"

#define WIRE_PROTOCOL 1
#define WIRE_TENSOR_FLOATS 225034 /* == MODEL_NPARAMS; checked at start-up */
#define WIRE_MAX_HEADER 4096      /* bytes; a larger Envelope is refused */
#define WIRE_MAX_PEER 256         /* bytes of a ZeroMQ routing id */
/* The largest message a server accepts (ZMQ_MAXMSGSIZE): a tensor + slack. */
#define WIRE_MAX_MESSAGE (WIRE_TENSOR_FLOATS * 4 + 65536)

/* A routing id: who sent a message to a ROUTER socket, and where a reply goes. */
typedef struct {
    size_t len;
    unsigned char id[WIRE_MAX_PEER];
} wire_peer_t;

/* A received, checked message. */
typedef struct {
    Ps__Envelope *env;     /* decoded header, owned; env->body_case says which */
    const float *tensor;   /* WIRE_TENSOR_FLOATS floats in the received frame, or NULL */
    zmq_msg_t tensor_msg;  /* the frame that holds `tensor` */
    int has_tensor_msg;
    size_t bytes;          /* bytes received (all frames) */
} wire_msg_t;

/* Call once at program start, before any thread: tunes the allocator for
 * ~1 MB messages. glibc serves blocks over 128 KB with a fresh mmap, so every
 * message costs page faults and zeroing, which on a virtual machine made 2
 * clients 6x slower than 1 (README, "Server microbenchmark"); with a higher
 * threshold the heap recycles the same pages. */
void wire_init(void);

/* Sends env (its protocol field is set here) and, when tensor is not NULL,
 * the tensor frame, to peer (NULL on a DEALER socket). Returns the bytes sent
 * or -1 with errno set (EAGAIN if the socket would block with ZMQ_DONTWAIT
 * in flags). */
long wire_send(void *sock, const wire_peer_t *peer, Ps__Envelope *env, const float *tensor,
               int flags);

/* Receives one message: blocks until it is there (call it after zmq_poll
 * says the socket is readable; with ZMQ_RCVTIMEO set it gives up with
 * EAGAIN). peer is NULL
 * on a DEALER socket and receives the routing id on a ROUTER socket.
 * Returns 0 with m filled; -1 with errno set for a socket error (EAGAIN:
 * nothing to read); or a positive Ps__ErrorCode when the message was
 * received but refused, with a message in err (peer is still filled, so an
 * Error can be sent back). On anything but 0, m holds nothing to free. */
int wire_recv(void *sock, wire_peer_t *peer, wire_msg_t *m, char *err, size_t errlen);

/* Frees what wire_recv filled; safe to call twice. */
void wire_msg_close(wire_msg_t *m);

/* A tensor frame of WIRE_TENSOR_FLOATS floats, filled from `tensor`, or
 * left for the caller to fill through zmq_msg_data when tensor is NULL (a
 * worker computes its gradient straight into the frame it will send).
 * 0, or -1 when out of memory. */
int wire_tensor_init(zmq_msg_t *msg, const float *tensor);

/* As wire_send, with a ready tensor frame (or NULL) whose ownership passes
 * to this call, sent or not. To send one frame to several peers without
 * copying it, give each call its own zmq_msg_copy of it (ZeroMQ shares the
 * buffer and counts references). */
long wire_send_msg(void *sock, const wire_peer_t *peer, Ps__Envelope *env, zmq_msg_t *tensor,
                   int flags);

/* Sends an Error{code, message} to peer. Returns as wire_send. */
long wire_send_error(void *sock, const wire_peer_t *peer, Ps__ErrorCode code, const char *message);

/* The name of a message kind, for log lines ("push", "weights"...). */
const char *wire_kind_name(Ps__Envelope__BodyCase kind);

#endif
