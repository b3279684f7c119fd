/* transport: the server's socket and what guards it.
 *
 * Plain TCP goes through the gate (gate.h): the server's socket is a PAIR
 * bound in-process, the gate's STREAM socket listens and bounds what a peer
 * can make the server hold. Other endpoints (ipc://, inproc://) and
 * CurveZMQ use a ROUTER: with --curve-secret and --allowed-keys the traffic
 * is encrypted and only workers whose public certificate is in the allowed
 * directory get past the handshake; our ZAP handler gives each connection
 * its client's public key (wire_peer_t.key). Whichever it is, the server
 * reads and writes s->sock with wire_recv / wire_send. */
#ifndef SERVER_TRANSPORT_H
#define SERVER_TRANSPORT_H

#include "state.h"

/* Opens s->sock (and the gate or the ZAP handler) on s->o->bind and logs
 * the endpoint. 0, or -1 after printing the address, the cause and the fix. */
int transport_listen(server_t *s);

/* Waits up to timeout_ms for traffic, then answers ZAP requests and moves
 * what the gate holds, so that s->sock has every message ready. 0, or -1
 * after printing why (EINTR is not an error). */
int transport_wait(server_t *s, int timeout_ms);

/* Moves the server's replies onto their connections (the gate's part). */
void transport_flush(server_t *s);

/* Is the connection that peer names still open? (The gate knows; on a
 * ROUTER a probe the worker drops is tried.) 0 for an empty peer. */
int transport_connected(server_t *s, const wire_peer_t *peer);

/* Delivers what is queued and closes everything transport_listen opened;
 * safe on a server whose listen failed or never ran. */
void transport_close(server_t *s);

#endif
