/* reply: the server's replies to workers: weights (one encoded snapshot
 * shared by every reply of a release), acks and errors. A reply that cannot
 * be sent is logged; the worker retries or is evicted (see membership.c). */
#include <errno.h>
#include <string.h>

#include "state.h"

void srv_send(server_t *s, slot_t *sl, Ps__Envelope *env)
{
    if (env->request_id == 0)
        env->request_id = s->request;
    long n = wire_send(s->sock, &sl->peer, env, NULL, ZMQ_DONTWAIT);
    if (n < 0)
        srv_log(s, "warning: cannot send %s to worker %d (%s): %s", wire_kind_name(env->body_case),
                (int)(sl - s->slots), sl->name, zmq_strerror(errno));
    else
        s->bytes_out += n;
}

void srv_answer(server_t *s, const wire_peer_t *peer, Ps__Envelope *env)
{
    env->request_id = s->request;
    long n = wire_send(s->sock, peer, env, NULL, ZMQ_DONTWAIT);
    if (n > 0)
        s->bytes_out += n;
}

void srv_reply_weights(server_t *s, slot_t *sl, uint64_t request, double held, snapshot_t *snap)
{
    int id = (int)(sl - s->slots);
    int enc = wire_weights_encoding(sl->compress);
    if (!snap->ready[enc]) {
        if (wire_tensor_encode_n(&snap->msg[enc], s->w, s->n, enc, NULL) != 0) {
            srv_log(s, "warning: out of memory for a reply to worker %d", id);
            return;
        }
        snap->ready[enc] = 1;
    }
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    if (zmq_msg_copy(&copy, &snap->msg[enc]) != 0) {
        srv_log(s, "warning: cannot copy the weights for worker %d: %s", id, zmq_strerror(errno));
        zmq_msg_close(&copy);
        return;
    }
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Weights wm = PS__WEIGHTS__INIT;
    wm.version = s->version;
    wm.held_seconds = held;
    wm.encoding = (Ps__Encoding)enc;
    wm.offset = (uint32_t)s->lo;
    wm.count = (uint32_t)s->n;
    env.body_case = PS__ENVELOPE__BODY_WEIGHTS;
    env.weights = &wm;
    env.request_id = request;
    long n = wire_send_msg(s->sock, &sl->peer, &env, &copy, ZMQ_DONTWAIT);
    if (n < 0)
        srv_log(s, "warning: cannot send weights to worker %d (%s): %s", id, sl->name,
                zmq_strerror(errno));
    else
        s->bytes_out += n;
}

void srv_reply_weights_now(server_t *s, slot_t *sl)
{
    snapshot_t snap = SNAPSHOT_INIT;
    srv_reply_weights(s, sl, s->request, 0.0, &snap);
    snapshot_close(&snap);
}

void snapshot_close(snapshot_t *snap)
{
    for (int e = 0; e < SNAPSHOT_ENCODINGS; e++)
        if (snap->ready[e])
            zmq_msg_close(&snap->msg[e]);
    memset(snap, 0, sizeof *snap);
}

void srv_reply_ack(server_t *s, slot_t *sl)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Ack ack = PS__ACK__INIT;
    ack.version = s->version;
    env.body_case = PS__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    srv_send(s, sl, &env);
}

void srv_error_to(server_t *s, const wire_peer_t *peer, uint64_t request, Ps__ErrorCode code,
                  const char *message)
{
    /* Rate-limited: a peer that sends bad messages and reads no answers
     * must not fill the log either. */
    if (wire_send_error(s->sock, peer, request, code, message) < 0)
        srv_log_refused(s, "warning: cannot send an error reply (%s): %s", message,
                        zmq_strerror(errno));
}

void srv_error(server_t *s, const wire_peer_t *peer, Ps__ErrorCode code, const char *message)
{
    srv_error_to(s, peer, s->request, code, message);
}
