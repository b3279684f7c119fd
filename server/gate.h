/* gate: the server's public TCP endpoint without CurveZMQ, speaking ZMTP 3.0
 * (NULL mechanism) itself on a ZMQ_STREAM socket, so that what a peer can
 * make the server hold is bounded.
 *
 * Why: a ROUTER socket keeps every frame of a multipart message until its
 * last frame comes, and ZMQ_MAXMSGSIZE limits each frame, not the message;
 * the receive high-water mark counts whole messages only. One client that
 * sends frames with the MORE flag and never a last one grows the server
 * without bound (measured: 1.5 GB in 3.5 s). The gate parses the framing as
 * bytes arrive and closes a connection whose message passes GATE_MAX_FRAMES
 * frames or WIRE_MAX_MESSAGE bytes, or whose handshake is malformed, and
 * accepts a bounded number of connections. So a connection holds at most one
 * message in progress (about 1 MB) plus GATE_RCVHWM chunks queued by ZeroMQ
 * (1 MB), and the server at most max_conns times that.
 *
 * Complete messages go to the server over an inproc PAIR socket as
 * [connection id][frames...], exactly what a ROUTER would have delivered;
 * replies come back the same way and are framed onto the connection.
 * The server keeps using wire_recv/wire_send on its end of the pair.
 *
 * With CurveZMQ the server keeps its ROUTER (the gate cannot decrypt): only
 * peers whose key is allowed get past the handshake there. */
#ifndef GATE_H
#define GATE_H

#include <stddef.h>

#define GATE_MAX_FRAMES 4  /* frames per message (the protocol uses 1 or 2) */
/* Chunks (of at most 8 KB, ZeroMQ's read size) ZeroMQ may queue per
 * connection before the gate reads them: 1 MB. */
#define GATE_RCVHWM 128

typedef struct gate gate_t;

/* Binds a STREAM socket in ctx to `endpoint` (tcp://) and connects a PAIR to
 * `inner` (an inproc endpoint the server has bound its PAIR to); accepts at
 * most max_conns connections at once (more are closed at once). NULL with
 * errno set (from zmq_bind) on failure. */
gate_t *gate_new(void *ctx, const char *endpoint, const char *inner, int max_conns);

/* The two sockets to poll for input. */
void *gate_outer(gate_t *g);
void *gate_inner(gate_t *g);

/* Moves everything ready, without waiting: bytes from the connections
 * (complete messages to the server) and the server's replies (onto their
 * connections). Returns how many socket messages it moved. */
int gate_pump(gate_t *g);

/* Is the connection with this id (as the server saw it) still open? */
int gate_connected(const gate_t *g, const void *id, size_t len);

/* Connections closed for breaking the limits or the protocol, so far. */
long gate_refused(const gate_t *g);

/* Closes the sockets (the STREAM socket lingers to deliver what is queued)
 * and sets *pg to NULL; safe on NULL. */
void gate_destroy(gate_t **pg);

#endif
