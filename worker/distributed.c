/* distributed: a worker of a paramserver run. Registers, receives its worker
 * id, shard and recipe, then for each minibatch of its shard computes the
 * gradient on the weights it holds, pushes it and gets back the weights for
 * the next step; after each epoch it evaluates on the test set and reports
 * its figures, which the server writes into the metrics database. The
 * connections to the server group, and each step's scatter of gradient
 * parts and gather of weights, are link.c's. In mode
 * independent (the original train_distributed.py) it takes its own SGD steps
 * instead, pushes nothing per step, and pushes its trained model once at the
 * end.
 *
 * Time per step is split as: compute (forward + backward), push (encoding and
 * queueing the gradient), wait (how long the server held the request at a
 * barrier, as it reports) and pull (the rest of the round trip: transfer both
 * ways and the server's update). Every wait for the server has a deadline. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "idx.h"
#include "link.h"
#include "model.h"
#include "progress.h"
#include "rng.h"
#include "shard.h"
#include "wire.h"
#include "worker.h"

/* Checks the recipe the server sent (its model: link_set_servers); prints
 * what is wrong. */
static int s_check_welcome(const Ps__Welcome *w)
{
    const char *bad = NULL;
    if (w->workers == 0 || w->worker_id >= w->workers)
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

/* Registers (again) and checks the Welcome. On a rejoin the recipe must be
 * the one this worker started with. REQ_OK, or REQ_FAIL after printing. */
static int s_register(link_t *c, const char *name, const char *host, Ps__Welcome *w, int again)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = (char *)name;
    reg.host = (char *)host;
    reg.threads = (uint32_t)c->o->threads;
    reg.compress = (Ps__Compression)c->o->compress;
    reg.model = (char *)(c->o->model ? c->o->model->name : ""); /* the server refuses another */
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    wire_msg_t reply;
    int rc = link_request(c, &env, NULL, PS__ENVELOPE__BODY_WELCOME,
                          again ? c->o->timeout : c->o->connect_timeout, &reply);
    if (rc != REQ_OK)
        return REQ_FAIL;
    Ps__Welcome got = *reply.env->welcome;
    if (s_check_welcome(&got) != 0 || link_set_servers(c, &got) != 0) {
        wire_msg_close(&reply);
        return REQ_FAIL;
    }
    got.mode = got.dataset = got.model = NULL; /* these point into the reply */
    got.n_shards = 0;
    got.shards = NULL;
    wire_msg_close(&reply);
    if ((int)got.compress != c->o->compress) {
        fprintf(stderr, "error: asked the server for compression %d, got %d\n", c->o->compress,
                (int)got.compress);
        return REQ_FAIL;
    }
    if (again && (got.worker_id != w->worker_id || got.run_id != w->run_id || got.seed != w->seed ||
                  got.epochs != w->epochs || got.batch_size != w->batch_size ||
                  got.train_limit != w->train_limit || got.workers != w->workers)) {
        fprintf(stderr,
                "error: on rejoining, the server at %s sent another run or recipe "
                "(run %lld, worker %u); this worker belongs to run %lld as worker %u\n",
                c->o->server, (long long)got.run_id, got.worker_id, (long long)w->run_id,
                w->worker_id);
        return REQ_FAIL;
    }
    *w = got;
    return REQ_OK;
}

/* A request without a tensor whose reply is an Ack. */
static int s_tell(link_t *c, Ps__Envelope *env)
{
    wire_msg_t reply;
    int rc = link_request(c, env, NULL, PS__ENVELOPE__BODY_ACK, c->o->timeout, &reply);
    if (rc == REQ_OK)
        wire_msg_close(&reply);
    return rc;
}

/* Stopped (SIGINT/SIGTERM): tells the server this worker leaves, so that the
 * others do not wait for it until --worker-timeout; waits for the Ack at
 * most 2 s. */
static void s_say_leaving(link_t *c, const Ps__Welcome *w)
{
    Ps__Done done = PS__DONE__INIT;
    done.worker_id = w->worker_id;
    done.leaving = 1;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    env.request_id = ++c->request;
    void *sock = c->srv[0].sock;
    if (wire_send_msg(sock, NULL, &env, NULL, ZMQ_DONTWAIT) < 0)
        return;
    for (double end = clock_now() + 2; clock_now() < end;) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 200) <= 0)
            continue;
        wire_msg_t reply;
        char err[256];
        if (wire_recv(sock, NULL, &reply, link_nparams(c), err, sizeof err) != 0)
            continue;
        int answered = reply.env->request_id == env.request_id;
        wire_msg_close(&reply);
        if (answered) {
            fprintf(stderr, "worker: told the server this worker leaves\n");
            return;
        }
    }
}

/* What a distributed worker holds for its whole life, across sessions (a
 * session ends early when the server no longer knows this connection: it
 * restarted with --resume, or evicted this worker; the worker then registers
 * again and goes on from the last step the server applied). */
typedef struct {
    const worker_opts_t *o;
    link_t c;      /* the server group */
    Ps__Welcome w; /* the run and recipe, from the Welcome */
    char host[128], name[160], who[32];
    idx_dataset_t train, test;
    engine_t *eng;
    int *order; /* this worker's shard, in this epoch's order */
    int n, batches, test_limit;
    float *wbuf;         /* the weights the servers sent, gathered */
    const float *params; /* the weights to compute on: wbuf or local */
    float *gbuf;         /* the gradient, sent part by part */
    float *residual;     /* int8: what encoding lost, added to the next gradient */
    float *local;        /* --push-every K > 1: this worker's own weights */
    float *acc;          /* --push-every K > 1: the sum of the group's gradients */
    float *mom;          /* mode independent: the momentum of its own SGD (on local) */
    double last_beat;    /* mode independent: clock_now() of the last pull that says "alive" */
    int ready_calls;     /* ranges of this step's gradient the engine has reported */
    double train_seconds, accuracy;
} dist_t;

/* One epoch's figures, for its report. */
typedef struct {
    double loss_sum, compute, push, pull, wait;
    int done; /* batches computed in this session */
    int64_t sent0, recv0;
} epoch_stats_t;

/* The socket to the head, connected (nothing is sent yet). */
static int s_connect(dist_t *d)
{
    const worker_opts_t *o = d->o;
    gethostname(d->host, sizeof d->host - 1);
    if (o->name)
        snprintf(d->name, sizeof d->name, "%s", o->name);
    else
        snprintf(d->name, sizeof d->name, "%s:%d", d->host, (int)getpid());
    snprintf(d->who, sizeof d->who, "worker");
    if (link_open(&d->c, o) != 0)
        return -1;
    printf("worker %s: registering with %s (waiting up to %.0f s for the server and the other "
           "workers)\n",
           d->name, o->server, o->connect_timeout);
    return 0;
}

/* After the first Welcome: the data, the shard and every buffer. */
static int s_prepare(dist_t *d)
{
    const worker_opts_t *o = d->o;
    const Ps__Welcome *w = &d->w;
    char err[512];
    int id = (int)w->worker_id;
    snprintf(d->who, sizeof d->who, "worker %d", id);
    if (!idx_dataset_dir(d->c.dataset)) {
        fprintf(stderr,
                "error: the server trains on data set '%s', which this worker does not "
                "know (%s): update the worker\n",
                d->c.dataset, IDX_DATASETS);
        return -1;
    }
    if (worker_load_data(o, d->c.dataset, &d->train, &d->test) != 0)
        return -1;
    if ((int)w->train_limit > d->train.count) {
        fprintf(stderr, "error: the server splits %u training images but %s has only %d\n",
                w->train_limit, worker_data_dir(o, d->c.dataset), d->train.count);
        return -1;
    }
    if (worker_check_fingerprint(o, d->c.dataset, &d->train, (int)w->train_limit,
                                 w->data_fingerprint) != 0)
        return -1;
    d->n = shard_size((int)w->train_limit, (int)w->workers, id);
    d->test_limit = o->test_limit > 0 ? o->test_limit : (int)w->test_limit;
    d->batches = (d->n + (int)w->batch_size - 1) / (int)w->batch_size;
    d->eng = engine_new(d->c.model, o->threads, (int)w->batch_size, err, sizeof err);
    if (!d->eng) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    /* Dropout masks (widecnn): each worker its own, from the run's seed and
     * its id, counted from the first step it computes. */
    engine_dropout_seed(d->eng, w->seed + 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1),
                        w->start_step);
    int grouped = o->push_every > 1;
    size_t np = link_nparams(&d->c);
    d->order = malloc((size_t)d->n * sizeof(int));
    d->wbuf = malloc(np * sizeof(float));
    d->gbuf = malloc(np * sizeof(float));
    if (o->compress)
        d->residual = calloc(np, sizeof(float));
    if (grouped) {
        d->local = malloc(np * sizeof(float));
        d->acc = malloc(np * sizeof(float));
    }
    if (strcmp(d->c.mode, "independent") == 0) { /* its own model and momentum */
        d->local = malloc(np * sizeof(float));
        d->mom = malloc(np * sizeof(float));
    }
    if (!d->order || !d->wbuf || !d->gbuf || (o->compress && !d->residual) ||
        (grouped && (!d->local || !d->acc)) ||
        (strcmp(d->c.mode, "independent") == 0 && (!d->local || !d->mom))) {
        fprintf(stderr, "error: out of memory\n");
        return -1;
    }
    printf("%s of %u: run %lld, shard of %d images, %d batches of %u per epoch, %u epochs, "
           "%d thread(s)\n",
           d->who, w->workers, (long long)w->run_id, d->n, d->batches, w->batch_size, w->epochs,
           o->threads);
    return 0;
}

/* Registers (again, after the first time) and prepares on the first
 * Welcome. REQ_OK or REQ_FAIL. */
static int s_join(dist_t *d, int first)
{
    if (s_register(&d->c, d->name, d->host, &d->w, !first) != REQ_OK)
        return REQ_FAIL;
    if (strcmp(d->c.mode, "independent") == 0 && (d->o->compress || d->o->push_every > 1)) {
        fprintf(stderr, "error: --compress and --push-every change how gradients are pushed; in "
                        "mode independent none is pushed (each worker trains its own model): "
                        "drop them\n");
        return REQ_FAIL;
    }
    if (d->o->push_every > 1 && strcmp(d->c.mode, "sync") != 0) {
        /* Measured: async with 4 local steps per push diverged (50% after an
         * epoch): stale pushes 4 steps long, amplified by momentum. */
        fprintf(stderr,
                "error: --push-every needs a sync server (this one is %s): stale "
                "multi-step pushes with momentum diverge\n",
                d->c.mode);
        return REQ_FAIL;
    }
    if (first && s_prepare(d) != 0)
        return REQ_FAIL;
    if (d->w.incarnation > 0) /* this process, or an earlier one under this name, was here */
        printf("%s: rejoined as incarnation %u, resuming after step %llu\n", d->who,
               d->w.incarnation, (unsigned long long)d->w.start_step);
    return REQ_OK;
}

/* The weights the servers sent become the ones to compute on. */
static void s_take_weights(dist_t *d)
{
    d->params = d->wbuf;
    if (d->local) {
        memcpy(d->local, d->params, link_nparams(&d->c) * sizeof(float));
        d->params = d->local;
    }
}

/* Pulls the weights to start a session from. */
static int s_pull(dist_t *d)
{
    double held;
    int rc = link_gather(&d->c, d->wbuf, &held);
    if (rc == REQ_OK)
        s_take_weights(d);
    return rc;
}

/* Starts push number `push` of gbuf's gradient: its parts go out as
 * link_push_ready or s_finish_push sends them. */
static void s_begin_push(dist_t *d, uint64_t push, int epoch)
{
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = d->w.worker_id;
    p.step = push;
    p.epoch = (uint32_t)epoch;
    p.incarnation = d->w.incarnation;
    d->ready_calls = 0;
    link_push_begin(&d->c, &p, d->gbuf, wire_gradient_encoding((Ps__Compression)d->o->compress),
                    d->o->compress == PS__COMPRESSION__COMPRESSION_INT8 ? d->residual : NULL);
}

/* Sends what is left of the push (with the step's loss, which the server
 * records from its last part) and takes the weights the servers send back.
 * The time beyond sending and the servers' hold is transfer and update
 * (pull). */
static int s_finish_push(dist_t *d, double loss, epoch_stats_t *st)
{
    d->c.push.loss = (float)loss;
    double held, tp = clock_now(), early = d->c.send_seconds;
    int rc = link_gather(&d->c, d->wbuf, &held);
    if (rc != REQ_OK)
        return rc;
    double te = clock_now(), sent = d->c.send_seconds - early;
    s_take_weights(d);
    double rest = te - tp - sent;
    held = held < 0 ? 0 : held > rest ? rest : held;
    st->push += d->c.send_seconds;
    st->wait += held;
    st->pull += rest - held;
    return REQ_OK;
}

/* Evaluates, prints the epoch's line and reports it to the server. */
static int s_report_epoch(dist_t *d, int epoch, double seconds, const epoch_stats_t *st,
                          progress_t *prog)
{
    d->train_seconds += seconds;
    d->accuracy = engine_evaluate(d->eng, d->params, &d->test, d->test_limit, NULL);
    progress_clear(prog);
    double loss = st->loss_sum / st->done;
    printf("%s: epoch %d/%u: train loss %.4f, test accuracy %.2f%%, %.1f s (compute %.1f, "
           "wait %.1f, communication %.1f)\n",
           d->who, epoch, d->w.epochs, loss, d->accuracy, seconds, st->compute, st->wait,
           st->push + st->pull);

    Ps__EpochReport er = PS__EPOCH_REPORT__INIT;
    er.worker_id = d->w.worker_id;
    er.epoch = (uint32_t)epoch;
    er.train_loss = loss;
    er.test_accuracy = d->accuracy;
    er.epoch_seconds = seconds;
    er.compute_seconds = st->compute;
    er.push_seconds = st->push;
    er.pull_seconds = st->pull;
    er.wait_seconds = st->wait;
    er.images = (uint64_t)(st->done == d->batches ? d->n : st->done * (int)d->w.batch_size);
    er.bytes_sent = (uint64_t)(d->c.bytes_sent - st->sent0);
    er.bytes_received = (uint64_t)(d->c.bytes_received - st->recv0);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_EPOCH;
    env.epoch = &er;
    return s_tell(&d->c, &env);
}

/* independent: a pull every Welcome.alive_seconds (a quarter of the
 * server's --worker-timeout) while training alone tells the server this
 * worker is alive (it pushes nothing until its final model); the reply's
 * weights are not used. */
static int s_alive(dist_t *d)
{
    if (clock_now() - d->last_beat < d->w.alive_seconds)
        return REQ_OK;
    d->last_beat = clock_now();
    Ps__Pull pull = PS__PULL__INIT;
    pull.worker_id = d->w.worker_id;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_PULL;
    env.pull = &pull;
    wire_msg_t reply;
    int rc = link_request(&d->c, &env, NULL, PS__ENVELOPE__BODY_WEIGHTS, d->o->timeout, &reply);
    if (rc == REQ_OK)
        wire_msg_close(&reply);
    return rc;
}

/* independent: pushes this worker's trained model, its one push (step 1). */
static int s_push_model(dist_t *d)
{
    printf("%s: sending its model to the server\n", d->who);
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = d->w.worker_id;
    p.step = 1;
    p.epoch = d->w.epochs;
    p.incarnation = d->w.incarnation;
    p.final_model = 1;
    link_push_begin(&d->c, &p, d->local, PS__ENCODING__ENCODING_F32, NULL);
    double held;
    return link_gather(&d->c, d->wbuf, &held);
}

/* engine_gradient_hooked's callback: grad[lo, hi) is final; the parts
 * within it leave now, with the batch's loss (the server records it with
 * the step). */
static void s_part_ready(void *arg, size_t lo, size_t hi, double loss)
{
    dist_t *d = arg;
    d->c.push.loss = (float)loss;
    /* The engine's first ranges come while backward still runs: overlapped. */
    int early = d->ready_calls++ < engine_ranges_in_backward(d->eng);
    if (d->c.pushing)
        link_push_ready(&d->c, lo, hi, early); /* failure: s_finish_push sees it */
}

/* One epoch, from the first push the server has not applied. Pushes are
 * numbered from `step` + 1: one per batch, or one per group of K batches
 * (--push-every; a group never spans two epochs). */
static int s_epoch(dist_t *d, int epoch, uint64_t step, progress_t *prog)
{
    const int K = d->o->push_every, batch = (int)d->w.batch_size;
    epoch_stats_t st = {.sent0 = d->c.bytes_sent, .recv0 = d->c.bytes_received};
    double t0 = clock_now(), group_loss = 0.0;
    int in_group = 0;
    progress_epoch_start(prog);
    for (int b = 0; b < d->batches; b++) {
        uint64_t push = step + (uint64_t)(b / K) + 1;
        if (push <= d->w.start_step)
            continue;
        if (worker_stop)
            return REQ_FAIL;
        int lo = b * batch, m = d->n - lo < batch ? d->n - lo : batch;
        double tc = clock_now();
        double loss;
        if (d->mom) { /* independent: the basic recipe's step on its own model, no push */
            loss = engine_gradient(d->eng, d->params, &d->train, d->order + lo, m, d->gbuf);
            model_sgd_step(d->local, d->mom, d->gbuf, link_nparams(&d->c), (float)d->w.lr,
                           (float)d->w.momentum);
            st.loss_sum += loss;
            st.done++;
            st.compute += clock_now() - tc;
            progress_batch(prog, epoch, b + 1, loss);
            int rc = s_alive(d);
            if (rc != REQ_OK)
                return rc;
            continue;
        }
        if (K == 1) {
            /* The gradient's parts leave as backward finishes their layers. */
            s_begin_push(d, push, epoch);
            loss = engine_gradient_hooked(d->eng, d->params, &d->train, d->order + lo, m, d->gbuf,
                                          s_part_ready, d);
        } else
            loss = engine_gradient(d->eng, d->params, &d->train, d->order + lo, m, d->gbuf);
        st.loss_sum += loss;
        st.done++;
        group_loss += loss;
        if (K > 1) { /* local SGD: take the step here, push the group's sum */
            float lr = (float)d->w.lr;
            for (size_t i = 0, np = link_nparams(&d->c); i < np; i++) {
                d->acc[i] = in_group ? d->acc[i] + d->gbuf[i] : d->gbuf[i];
                d->local[i] -= lr * d->gbuf[i];
            }
            if (++in_group < K && b + 1 < d->batches) {
                st.compute += clock_now() - tc;
                progress_batch(prog, epoch, b + 1, loss);
                continue;
            }
            /* The sum of the group's gradients is this worker's local
             * displacement divided by lr: the server moves the master weights
             * by the workers' mean displacement (model averaging), with its
             * momentum on top. */
            memcpy(d->gbuf, d->acc, link_nparams(&d->c) * sizeof(float));
            loss = group_loss / in_group;
        }
        if (K > 1)
            s_begin_push(d, push, epoch);
        st.compute += clock_now() - tc - d->c.send_seconds; /* parts sent during backward */
        in_group = 0;
        group_loss = 0.0;
        int rc = s_finish_push(d, loss, &st);
        if (rc != REQ_OK)
            return rc;
        progress_batch(prog, epoch, b + 1, loss);
    }
    if (d->mom) { /* independent: alive just before the evaluation, whose report says so again */
        d->last_beat = 0;
        int rc = s_alive(d);
        if (rc != REQ_OK)
            return rc;
    }
    return s_report_epoch(d, epoch, clock_now() - t0, &st, prog);
}

/* A session: the weights to start from, the epochs not finished yet (the
 * shard's order replayed from the seed), then Done. REQ_OK when the server
 * acknowledged Done, REQ_REJOIN, or REQ_FAIL. */
static int s_session(dist_t *d)
{
    int rc = s_pull(d);
    if (rc != REQ_OK)
        return rc;
    const Ps__Welcome *w = &d->w;
    const int id = (int)w->worker_id, epochs = (int)w->epochs;
    const uint64_t pushes = (uint64_t)((d->batches + d->o->push_every - 1) / d->o->push_every);
    shard_indices(w->seed, (int)w->train_limit, (int)w->workers, id, d->order);
    rng_t rng;
    shard_epoch_rng(&rng, w->seed, id);
    progress_t prog;
    progress_init(&prog, epochs, d->batches, d->who);
    uint64_t step = 0; /* pushes before this epoch */
    /* independent: the model lives here, so a new session starts it over,
     * unless the server has it already (its one push) */
    int model_sent = d->mom && w->start_step > 0;
    if (d->mom) {
        memset(d->mom, 0, link_nparams(&d->c) * sizeof(float));
        d->last_beat = clock_now();
    }
    for (int epoch = 1; epoch <= epochs && !model_sent; epoch++, step += pushes) {
        rng_shuffle(&rng, d->order, d->n);
        if (step + pushes <= w->start_step)
            continue; /* applied before this session */
        if ((rc = s_epoch(d, epoch, step, &prog)) != REQ_OK)
            return rc;
    }
    if (d->mom && !model_sent && (rc = s_push_model(d)) != REQ_OK)
        return rc;

    Ps__Done done = PS__DONE__INIT;
    done.worker_id = (uint32_t)id;
    done.train_seconds = d->train_seconds;
    done.test_accuracy = d->accuracy;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    return s_tell(&d->c, &env);
}

int distributed_run(const worker_opts_t *o)
{
    enum { MAX_SESSIONS = 100 };
    dist_t d = {.o = o, .c = {.o = o}};
    int rc = REQ_FAIL;
    if (s_connect(&d) == 0) {
        for (int session = 1;; session++) {
            if (session > MAX_SESSIONS) {
                fprintf(stderr, "error: gave up after rejoining the server %d times\n",
                        MAX_SESSIONS - 1);
                rc = REQ_FAIL;
                break;
            }
            rc = s_join(&d, session == 1);
            if (rc == REQ_OK)
                rc = s_session(&d);
            if (rc != REQ_REJOIN)
                break;
        }
    }
    if (rc == REQ_OK)
        worker_summary((int)d.w.epochs, d.accuracy, d.train_seconds, (double)d.n * d.w.epochs);
    if (rc == REQ_OK && d.c.bytes_pushed > 0)
        printf("overlap: %.0f%% of the pushed bytes left before backward ended (%.1f of %.1f "
               "MB)\n",
               100.0 * (double)d.c.bytes_early / (double)d.c.bytes_pushed,
               (double)d.c.bytes_early / 1e6, (double)d.c.bytes_pushed / 1e6);
    if (worker_stop && d.w.run_id != 0)
        s_say_leaving(&d.c, &d.w);
    if (worker_stop)
        fprintf(stderr, "interrupted\n");
    link_close(&d.c);
    engine_destroy(&d.eng);
    free(d.order);
    free(d.wbuf);
    free(d.gbuf);
    free(d.residual);
    free(d.local);
    free(d.acc);
    free(d.mom);
    idx_free(&d.train);
    idx_free(&d.test);
    return rc == REQ_OK ? 0 : 1;
}
