/* gate: the server's public TCP endpoint without CurveZMQ. It owns the
 * listening socket and its connections (plain TCP sockets, read and written
 * in the server's thread) and speaks ZMTP 3.0 (NULL mechanism) on them
 * itself, so that what a peer can make the server hold is bounded.
 *
 * Why: a ROUTER socket keeps every frame of a multipart message until its
 * last frame comes, and ZMQ_MAXMSGSIZE limits each frame, not the message;
 * the receive high-water mark counts whole messages only. One client that
 * sends frames with the MORE flag and never a last one grows the server
 * without bound (measured: 1.5 GB in 3.5 s). The gate parses the framing as
 * bytes arrive and closes a connection whose message passes GATE_MAX_FRAMES
 * frames or the bytes gate_new allows (wire_max_message of the model's
 * length: a server of a small model refuses a big model's push), whose handshake is malformed, or
 * which stalls (GATE_STALL_SECONDS without a byte while its handshake, greeting then READY, or a
 * message is unfinished), and accepts a bounded number of connections. So a connection holds at
 * most one message in progress (about 1 MB for simpleconvnet) plus GATE_OUT_FRAMES frames of
 * replies queued toward it (four weights replies), and the server at most max_conns times that (the
 * kernel's socket buffers are bounded by the kernel).
 *
 * Why not a ZMQ_STREAM socket (the first gate): it hands TCP data over in
 * 8 KB chunks (ZMQ_IN_BATCH_SIZE is a draft option that Debian's libzmq
 * 4.3.4 refuses), so a 900 KB push was ~113 wake-ups, hand-offs between
 * ZeroMQ's I/O thread and the server's and copies: it cost half the
 * server's round trips. Here a push is received straight into its frame
 * with a few recv calls.
 *
 * Complete messages go to the server over an inproc PAIR socket as
 * [connection id][frames...], as a ROUTER would have delivered them (the
 * id is 9 bytes, 0 then a 64-bit counter, never reused; a ROUTER's is 5)
 * (without copying: ZeroMQ passes the frames by reference); replies come
 * back the same way and are framed onto the connection. The server keeps
 * using wire_recv/wire_send on its end of the pair.
 *
 * With CurveZMQ the server keeps its ROUTER (the gate cannot decrypt): only
 * peers whose key is allowed get past the handshake there. */
#ifndef GATE_H
#define GATE_H

#include <stddef.h>
#include <stdint.h>

#define GATE_MAX_FRAMES 4 /* frames per message (the protocol uses 1 or 2) */
/* Frames of replies (and handshake pieces) queued toward a connection that
 * does not read them; one more closes it. */
#define GATE_OUT_FRAMES 8
/* A connection with its handshake (greeting, READY) or a message
 * unfinished and no byte for this long is closed (it holds a slot and up to
 * a message's memory). */
#define GATE_STALL_SECONDS 30.0

typedef struct gate gate_t;

/* Listens on `endpoint` (tcp://HOST:PORT; HOST is *, an IPv4 address, an
 * [IPv6] address, an interface or a host name; PORT a number, or * for a
 * free one) and connects a PAIR in ctx to `inner` (an inproc endpoint the
 * server has bound its PAIR to); accepts at most max_conns connections at
 * once (more are closed at once; at least 1) and messages of at most
 * max_bytes (their frames together; a larger one closes its connection).
 * NULL with errno set on failure: EINVAL (not that form, max_conns < 1 or
 * max_bytes < 1), ENODEV (no such host or interface), or bind's
 * (EADDRINUSE, EADDRNOTAVAIL, EACCES). */
gate_t *gate_new(void *ctx, const char *endpoint, const char *inner, int max_conns,
                 int64_t max_bytes);

/* What to poll for input: the descriptor (ZMQ_POLLIN with a NULL socket in
 * a zmq_pollitem_t; it is an epoll descriptor, readable while a connection
 * or the listening socket needs the gate) and the inner PAIR socket. */
int gate_fd(const gate_t *g);
void *gate_inner(gate_t *g);

/* The endpoint it listens on, with the port it got (tcp://0.0.0.0:5555). */
const char *gate_endpoint(const gate_t *g);

/* Moves what is ready, without waiting: new connections, bytes from the
 * connections (at most one complete message per connection per call goes
 * to the server, so a fast peer cannot pile messages up ahead of it), the
 * server's replies (onto their connections) and replies waiting for a
 * connection to take them. Returns how many events it handled. */
int gate_pump(gate_t *g);

/* Is the connection with this id (as the server saw it) still open? */
int gate_connected(const gate_t *g, const void *id, size_t len);

/* Sets the stall limit (GATE_STALL_SECONDS by default; tests shorten it). */
void gate_set_stall(gate_t *g, double seconds);

/* Connections closed for breaking the limits or the protocol, so far. */
long gate_refused(const gate_t *g);

/* Writes what is still queued toward the connections (for at most 2 s),
 * closes everything and sets *pg to NULL; safe on NULL. */
void gate_destroy(gate_t **pg);

#endif
