/* distributed: a worker of a paramserver run. Registers, receives its worker
 * id, shard and recipe, then for each minibatch of its shard computes the
 * gradient on the weights it holds, pushes it and gets back the weights for
 * the next step; after each epoch it evaluates on the test set and reports
 * its figures, which the server writes into the metrics database.
 *
 * Time per step is split as: compute (forward + backward), push (encoding and
 * queueing the gradient), wait (how long the server held the request at a
 * barrier, as it reports) and pull (the rest of the round trip: transfer both
 * ways and the server's update). Every wait for the server has a deadline. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "engine.h"
#include "idx.h"
#include "model.h"
#include "progress.h"
#include "rng.h"
#include "shard.h"
#include "wire.h"
#include "worker.h"

typedef struct {
    const worker_opts_t *o;
    void *ctx, *sock;
    int64_t bytes_sent, bytes_received;
    double send_seconds; /* how long the last request took to encode and queue */
} conn_t;

/* Checks that a tcp:// endpoint's host resolves, for a clear message now
 * instead of ZeroMQ retrying an unresolvable name forever. */
static int s_check_endpoint(const char *ep)
{
    if (strncmp(ep, "tcp://", 6) != 0)
        return 0; /* ipc://, inproc:// ...: ZeroMQ checks them */
    const char *host = ep + 6, *colon = strrchr(host, ':');
    if (!colon || colon == host || !colon[1]) {
        fprintf(stderr, "error: --server '%s' is not tcp://HOST:PORT\n", ep);
        return -1;
    }
    char name[256];
    size_t len = (size_t)(colon - host);
    if (len >= sizeof name) {
        fprintf(stderr, "error: host name in --server '%s' is too long\n", ep);
        return -1;
    }
    memcpy(name, host, len);
    name[len] = '\0';
    if (name[0] == '[' && len > 2 && name[len - 1] == ']') { /* [IPv6] */
        memmove(name, name + 1, len - 2);
        name[len - 2] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(name, colon + 1, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "error: cannot resolve the server host '%s' in --server %s: %s\n"
                        "(check the name, or give the server's IP address)\n",
                name, ep, gai_strerror(rc));
        return -1;
    }
    freeaddrinfo(res);
    return 0;
}

/* Sends a request (with the tensor frame, whose ownership passes here, or
 * NULL) and waits up to `timeout` seconds for its reply, which must be of
 * kind `want` (an Error reply is printed). 0 with *reply filled (caller
 * closes it), or -1 after printing why. */
static int s_request(conn_t *c, Ps__Envelope *req, zmq_msg_t *tensor,
                     Ps__Envelope__BodyCase want, double timeout, wire_msg_t *reply)
{
    double t0 = cli_now();
    long n = wire_send_msg(c->sock, NULL, req, tensor, 0);
    c->send_seconds = cli_now() - t0;
    if (n < 0) {
        fprintf(stderr, "error: cannot send to %s: %s\n", c->o->server, zmq_strerror(errno));
        return -1;
    }
    c->bytes_sent += n;
    double deadline = cli_now() + timeout;
    for (;;) {
        double left = deadline - cli_now();
        if (left <= 0 || worker_stop) {
            if (!worker_stop)
                fprintf(stderr,
                        "error: no reply to %s from the server at %s within %.0f s (--timeout): "
                        "is the paramserver running and reachable at that address?\n",
                        wire_kind_name(req->body_case), c->o->server, timeout);
            return -1;
        }
        zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
        long ms = left > 1.0 ? 1000 : (long)(left * 1000) + 1;
        if (zmq_poll(&item, 1, ms) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "error: zmq_poll: %s\n", zmq_strerror(errno));
            return -1;
        }
        if (!(item.revents & ZMQ_POLLIN))
            continue;
        char err[256];
        int rc = wire_recv(c->sock, NULL, reply, err, sizeof err);
        if (rc < 0)
            continue;
        if (rc > 0) {
            fprintf(stderr, "error: bad reply from the server at %s: %s\n", c->o->server, err);
            return -1;
        }
        c->bytes_received += (int64_t)reply->bytes;
        Ps__Envelope *env = reply->env;
        if (env->body_case == PS__ENVELOPE__BODY_ERROR) {
            fprintf(stderr, "error: the server at %s refused %s: %s\n", c->o->server,
                    wire_kind_name(req->body_case),
                    env->error->message ? env->error->message : "(no message)");
            wire_msg_close(reply);
            return -1;
        }
        if (env->body_case != want) {
            fprintf(stderr, "error: the server answered %s with %s; expected %s\n",
                    wire_kind_name(req->body_case), wire_kind_name(env->body_case),
                    wire_kind_name(want));
            wire_msg_close(reply);
            return -1;
        }
        return 0;
    }
}

/* Checks the recipe the server sent; prints what is wrong. */
static int s_check_welcome(const Ps__Welcome *w)
{
    const char *bad = NULL;
    if (w->params != MODEL_NPARAMS)
        bad = "its model has another number of parameters";
    else if (w->workers == 0 || w->worker_id >= w->workers)
        bad = "worker id out of range";
    else if (w->epochs == 0 || w->epochs > 1000)
        bad = "epochs out of range";
    else if (w->batch_size == 0 || w->batch_size > 128)
        bad = "batch size out of range (1..128)";
    else if (w->train_limit < w->workers)
        bad = "fewer training images than workers";
    if (bad)
        fprintf(stderr, "error: the server's recipe is not usable: %s\n", bad);
    return bad ? -1 : 0;
}

int distributed_run(const worker_opts_t *o)
{
    conn_t c = {.o = o};
    int status = 1;
    char err[512], host[128] = "", name[160];
    idx_dataset_t train = {0}, test = {0};
    engine_t *eng = NULL;
    int *order = NULL;
    wire_msg_t reply = {0};
    wire_msg_t weights = {0}; /* the last Weights reply: its tensor is the model */

    if (s_check_endpoint(o->server) != 0)
        return 1;
    gethostname(host, sizeof host - 1);
    if (o->name)
        snprintf(name, sizeof name, "%s", o->name);
    else
        snprintf(name, sizeof name, "%s:%d", host, (int)getpid());

    c.ctx = zmq_ctx_new();
    c.sock = zmq_socket(c.ctx, ZMQ_DEALER);
    int linger = 1000;
    zmq_setsockopt(c.sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(c.sock, o->server) != 0) {
        fprintf(stderr, "error: cannot connect to %s: %s (--server takes tcp://HOST:PORT)\n",
                o->server, zmq_strerror(errno));
        goto out;
    }

    /* Register, then wait (up to --connect-timeout) for the server and the
     * other workers: the Welcome comes when all have registered. */
    printf("worker %s: registering with %s (waiting up to %.0f s for the server and the other "
           "workers)\n", name, o->server, o->connect_timeout);
    fflush(stdout);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = name;
    reg.host = host;
    reg.threads = (uint32_t)o->threads;
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    if (s_request(&c, &env, NULL, PS__ENVELOPE__BODY_WELCOME, o->connect_timeout, &reply) != 0)
        goto out;
    Ps__Welcome w = *reply.env->welcome;
    char mode[16];
    snprintf(mode, sizeof mode, "%s", w.mode ? w.mode : "?");
    wire_msg_close(&reply);
    if (s_check_welcome(&w) != 0)
        goto out;
    const int id = (int)w.worker_id, batch = (int)w.batch_size, epochs = (int)w.epochs;
    char who[32];
    snprintf(who, sizeof who, "worker %d", id);

    if (idx_load(o->data_dir, "train", &train, err, sizeof err) != 0 ||
        idx_load(o->data_dir, "t10k", &test, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n(run `make data` to fetch MNIST, or pass --data-dir DIR)\n",
                err);
        goto out;
    }
    if ((int)w.train_limit > train.count) {
        fprintf(stderr, "error: the server splits %u training images but %s has only %d\n",
                w.train_limit, o->data_dir, train.count);
        goto out;
    }
    int n = shard_size((int)w.train_limit, (int)w.workers, id);
    int test_limit = o->test_limit > 0 ? o->test_limit : (int)w.test_limit;
    int batches = (n + batch - 1) / batch;
    eng = engine_new(o->threads, batch, err, sizeof err);
    order = malloc((size_t)n * sizeof(int));
    if (!eng || !order) {
        fprintf(stderr, "error: %s\n", eng ? "out of memory" : err);
        goto out;
    }
    shard_indices(w.seed, (int)w.train_limit, (int)w.workers, id, order);
    rng_t rng;
    shard_epoch_rng(&rng, w.seed, id);
    printf("%s of %u: run %lld, mode %s, shard of %d images, %d batches of %d per epoch, %d "
           "epochs, %d thread(s)\n",
           who, w.workers, (long long)w.run_id, mode, n, batches, batch, epochs, o->threads);

    /* The initial weights. */
    Ps__Pull pull = PS__PULL__INIT;
    pull.worker_id = (uint32_t)id;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &pull;
    if (s_request(&c, &env, NULL, PS__ENVELOPE__BODY_WEIGHTS, o->timeout, &weights) != 0)
        goto out;
    uint64_t version = weights.env->weights->version;

    progress_t prog;
    progress_init(&prog, epochs, batches, who);
    double train_seconds = 0.0, accuracy = 0.0;
    uint64_t step = 0;
    for (int epoch = 1; epoch <= epochs; epoch++) {
        rng_shuffle(&rng, order, n);
        progress_epoch_start(&prog);
        double t0 = cli_now(), loss_sum = 0.0, t_compute = 0, t_push = 0, t_pull = 0, t_wait = 0;
        int64_t sent0 = c.bytes_sent, recv0 = c.bytes_received;
        for (int b = 0; b < batches; b++) {
            if (worker_stop)
                goto out;
            int lo = b * batch, m = n - lo < batch ? n - lo : batch;
            double tc = cli_now();
            /* The gradient goes straight into the frame that carries it. */
            zmq_msg_t grad;
            if (wire_tensor_init(&grad, NULL) != 0) {
                fprintf(stderr, "error: out of memory\n");
                goto out;
            }
            double loss = engine_gradient(eng, weights.tensor, &train, order + lo, m,
                                          zmq_msg_data(&grad));
            double tp = cli_now();
            t_compute += tp - tc;
            loss_sum += loss;

            Ps__Push push = PS__PUSH__INIT;
            push.worker_id = (uint32_t)id;
            push.step = ++step;
            push.version = version;
            push.epoch = (uint32_t)epoch;
            push.loss = (float)loss;
            env = (Ps__Envelope)PS__ENVELOPE__INIT;
            env.body_case = PS__ENVELOPE__BODY_PUSH;
            env.push = &push;
            if (s_request(&c, &env, &grad, PS__ENVELOPE__BODY_WEIGHTS, o->timeout, &reply) != 0)
                goto out;
            double te = cli_now();
            double held = reply.env->weights->held_seconds;
            version = reply.env->weights->version;
            wire_msg_close(&weights);
            weights = reply; /* the new weights, used in place */
            memset(&reply, 0, sizeof reply);
            /* wire_send encodes and queues (push); the rest of the round
             * trip beyond the server's hold is transfer and update (pull). */
            double rest = te - tp - c.send_seconds;
            held = held < 0 ? 0 : held > rest ? rest : held;
            t_push += c.send_seconds;
            t_wait += held;
            t_pull += rest - held;
            progress_batch(&prog, epoch, b + 1, loss);
        }
        double epoch_seconds = cli_now() - t0;
        train_seconds += epoch_seconds;
        accuracy = engine_evaluate(eng, weights.tensor, &test, test_limit, NULL);
        progress_clear(&prog);
        printf("%s: epoch %d/%d: train loss %.4f, test accuracy %.2f%%, %.1f s (compute %.1f, "
               "wait %.1f, communication %.1f)\n",
               who, epoch, epochs, loss_sum / batches, accuracy, epoch_seconds, t_compute, t_wait,
               t_push + t_pull);
        fflush(stdout);

        Ps__EpochReport er = PS__EPOCH_REPORT__INIT;
        er.worker_id = (uint32_t)id;
        er.epoch = (uint32_t)epoch;
        er.train_loss = loss_sum / batches;
        er.test_accuracy = accuracy;
        er.epoch_seconds = epoch_seconds;
        er.compute_seconds = t_compute;
        er.push_seconds = t_push;
        er.pull_seconds = t_pull;
        er.wait_seconds = t_wait;
        er.images = (uint64_t)n;
        er.bytes_sent = (uint64_t)(c.bytes_sent - sent0);
        er.bytes_received = (uint64_t)(c.bytes_received - recv0);
        env = (Ps__Envelope)PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_EPOCH;
        env.epoch = &er;
        if (s_request(&c, &env, NULL, PS__ENVELOPE__BODY_ACK, o->timeout, &reply) != 0)
            goto out;
        wire_msg_close(&reply);
    }

    Ps__Done done = PS__DONE__INIT;
    done.worker_id = (uint32_t)id;
    done.train_seconds = train_seconds;
    done.test_accuracy = accuracy;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    if (s_request(&c, &env, NULL, PS__ENVELOPE__BODY_ACK, o->timeout, &reply) != 0)
        goto out;
    wire_msg_close(&reply);
    printf("summary: epochs=%d test_accuracy=%.2f train_seconds=%.1f images_per_second=%.0f\n",
           epochs, accuracy, train_seconds,
           train_seconds > 0 ? (double)n * epochs / train_seconds : 0.0);
    status = 0;
out:
    if (worker_stop)
        fprintf(stderr, "interrupted\n");
    wire_msg_close(&reply);
    wire_msg_close(&weights);
    if (c.sock)
        zmq_close(c.sock);
    if (c.ctx)
        zmq_ctx_term(c.ctx);
    engine_destroy(&eng);
    free(order);
    idx_free(&train);
    idx_free(&test);
    return status;
}
