/* server: the parameter server's lifecycle (new, run, finish, reset,
 * destroy) and its message dispatch: each message is checked here and
 * handed to the unit that owns what it changes (membership.c,
 * consistency.c, checkpoint.c; state.h lists them). */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "clock.h"
#include "fs.h"
#include "consistency.h"
#include "engine.h"
#include "group.h"
#include "membership.h"
#include "models.h"
#include "modelfile.h"
#include "replica.h"
#include "state.h"
#include "transport.h"

volatile sig_atomic_t server_stop = 0;

/* How often the loop wakes up to check deadlines when nothing arrives. */
#define SERVER_TICK_MS 200

const char *server_mode_name(server_mode_t m)
{
    return m == MODE_SYNC    ? "sync"
           : m == MODE_ASYNC ? "async"
           : m == MODE_SSP   ? "ssp"
                             : "independent";
}

/* A figure a worker reports is in [0, max] (and finite)? */
static int s_in(double x, double max)
{
    return isfinite(x) && x >= 0 && x <= max;
}

/* Why a push of a new step cannot be accepted (into why), or 0. */
static int s_push_problem(const server_t *s, const slot_t *sl, const Ps__Push *p, char *why,
                          size_t n)
{
    unsigned long long step = (unsigned long long)p->step;
    if (p->incarnation != (uint32_t)sl->incarnation)
        snprintf(why, n, "push from incarnation %u; the worker is now incarnation %d",
                 p->incarnation, sl->incarnation);
    else if (sl->pending)
        snprintf(why, n, "push of step %llu while step %llu is still held", step,
                 (unsigned long long)sl->steps);
    else if (p->step != sl->steps + 1)
        snprintf(why, n, "push of step %llu out of order: expected step %llu", step,
                 (unsigned long long)sl->steps + 1);
    else if (p->version > s->version)
        snprintf(why, n, "push computed on version %llu, newer than the server's %llu",
                 (unsigned long long)p->version, (unsigned long long)s->version);
    else if (!s_in(p->loss, 1e6))
        snprintf(why, n,
                 "push of step %llu has a loss that is negative, not finite or over "
                 "1e6 (%g)",
                 step, (double)p->loss);
    else if (p->epoch < 1 || p->epoch > (uint32_t)s->o->epochs)
        snprintf(why, n, "push of step %llu names epoch %u (1..%d)", step, p->epoch, s->o->epochs);
    else if (p->final_model != (s->o->mode == MODE_INDEPENDENT))
        snprintf(why, n, "%s",
                 p->final_model ? "a final model is pushed only in mode independent"
                                : "mode independent takes no gradients, only the "
                                  "final model (Push.final_model)");
    else if (p->encoding != wire_gradient_encoding(sl->compress))
        snprintf(why, n,
                 "push in tensor encoding %d; this worker was granted compression %d "
                 "at registration (register again to change it)",
                 (int)p->encoding, (int)sl->compress);
    else
        return 0;
    return -1;
}

/* Why this part of a step's gradient does not fit (into why) and the
 * Error code to answer with, or 0. The parts of a step come in backward
 * order and tile this server's range: the first ends at its end, each next
 * one ends where the one before began, the last begins at its start. A part
 * that does not fit drops the parts received so far: the worker resends
 * them all. A later part that comes when none before it was kept (they
 * were refused: on a shard, the worker was not known yet when they came)
 * asks for that resend (ERROR_RETRY) instead of stopping the worker. */
static Ps__ErrorCode s_part_problem(const server_t *s, const slot_t *sl, const Ps__Push *p,
                                    size_t count, char *why, size_t n)
{
    uint32_t parts = p->parts ? p->parts : 1;
    size_t end = p->part == 0 ? s->lo + s->n : sl->part_lo, off = p->offset;
    if (parts > WIRE_MAX_PARTS || p->part >= parts)
        snprintf(why, n, "push part %u of %u (at most %d parts)", p->part, parts, WIRE_MAX_PARTS);
    else if (p->part > 0 && sl->parts_got == 0) {
        snprintf(why, n,
                 "push part %u of %u of step %llu without the parts before it: resend the "
                 "step from its first part",
                 p->part, parts, (unsigned long long)p->step);
        return PS__ERROR_CODE__ERROR_RETRY;
    } else if (p->part > 0 &&
               (sl->part_step != p->step || sl->parts_got != p->part || sl->parts != parts))
        snprintf(why, n,
                 "push part %u of %u of step %llu out of order (%u parts of step %llu "
                 "received)",
                 p->part, parts, (unsigned long long)p->step, sl->parts_got,
                 (unsigned long long)sl->part_step);
    else if (off < s->lo || off + count != end || (p->part + 1 == parts && off != s->lo))
        snprintf(why, n,
                 "push part %u of %u holds values [%zu, %zu); expected a range ending at "
                 "%zu within this server's [%zu, %zu)",
                 p->part, parts, off, off + count, end, s->lo, s->lo + s->n);
    else
        return PS__ERROR_CODE__ERROR_NONE;
    return PS__ERROR_CODE__ERROR_STATE;
}

/* Refuses the request being handled: a log line and an Error reply. */
static void s_refuse(server_t *s, const wire_peer_t *peer, int id, Ps__ErrorCode code,
                     const char *why)
{
    srv_log_refused(s, "refused worker %d: %s", id, why);
    srv_error(s, peer, code, why);
}

/* A push: one part of a step's gradient (or all of it). Exactly once: a
 * step already applied is never applied again. The parts of a new step are
 * decoded into the slot's buffer; with the last, the gradient is checked to
 * keep the model finite and handed to the mode's policy. Only the last part
 * is answered. */
static void s_on_push(server_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    const Ps__Push *p = m->env->push;
    slot_t *sl = group_check(s, peer, p->worker_id, p->token, "push");
    if (!sl)
        return;
    int id = (int)(sl - s->slots);
    int last = p->part + 1 >= (p->parts ? p->parts : 1);
    char why[300];
    if (p->step >= 1 && p->step <= sl->steps) {
        /* A retry after a lost or slow reply: answer its last part unless
         * the original's answer is still to come. */
        if (last) {
            s->duplicates++;
            if (!sl->pending)
                srv_reply_weights_now(s, sl);
        }
        return;
    }
    Ps__ErrorCode code = s_push_problem(s, sl, p, why, sizeof why) != 0
                             ? PS__ERROR_CODE__ERROR_STATE
                             : s_part_problem(s, sl, p, m->count, why, sizeof why);
    if (code != PS__ERROR_CODE__ERROR_NONE) {
        sl->parts_got = 0;
        s_refuse(s, peer, id, code, why);
        return;
    }
    if (!sl->gbuf && !(sl->gbuf = malloc(s->n * sizeof(float)))) {
        s_refuse(s, peer, id, PS__ERROR_CODE__ERROR_STATE, "server out of memory");
        return;
    }
    float *into = sl->gbuf + (p->offset - s->lo);
    const float *t = wire_tensor(m, into);
    if (t != into)
        memcpy(into, t, m->count * sizeof(float));
    sl->part_step = p->step;
    sl->parts = p->parts ? p->parts : 1;
    sl->parts_got = p->part + 1;
    sl->part_lo = p->offset;
    if (!last)
        return;
    sl->parts_got = 0;
    const float *g = sl->gbuf;
    if (!model_sgd_step_finite(s->w, s->v, g, s->n, (float)cons_lr_now(s), (float)s->o->momentum)) {
        snprintf(why, sizeof why,
                 "push of step %llu would make the weights or the momentum "
                 "overflow (not finite); not applied",
                 (unsigned long long)p->step);
        s_refuse(s, peer, id, PS__ERROR_CODE__ERROR_MALFORMED, why);
        return;
    }
    sl->steps = p->step;
    sl->last_seen = clock_now();
    if (s->shard == 0 && !p->final_model && p->step > sl->step_rowed) {
        /* the head keeps the metrics (a model is no step; a step redone, or
         * resent to a head that took over, is recorded once) */
        srv_db(s, metrics_step(s->db, s->run, id, (int64_t)p->step, (int)p->epoch, p->loss,
                               srv_elapsed(s)));
        sl->step_rowed = p->step;
    }
    s->policy->on_push(s, sl, g, p->version);
}

/* What is out of range in an epoch report, or NULL. */
static const char *s_epoch_problem(const server_t *s, const Ps__EpochReport *e)
{
    const double day = 86400 * 365.0; /* seconds: a year */
    if (e->epoch < 1 || e->epoch > (uint32_t)s->o->epochs)
        return "epoch out of range (1..--epochs)";
    if (!s_in(e->train_loss, 1e6))
        return "train_loss is negative, not finite or over 1e6";
    if (!s_in(e->test_accuracy, 100))
        return "test_accuracy is not a percentage (0..100)";
    if (!s_in(e->epoch_seconds, day) || !s_in(e->compute_seconds, day) ||
        !s_in(e->push_seconds, day) || !s_in(e->pull_seconds, day) || !s_in(e->wait_seconds, day))
        return "a time is negative, not finite or over a year";
    if (e->images > (uint64_t)s->train_count || e->bytes_sent > ((uint64_t)1 << 50) ||
        e->bytes_received > ((uint64_t)1 << 50))
        return "images or bytes out of range";
    return NULL;
}

/* Refuses a report with out-of-range figures: they would be stored and
 * plotted as sent. */
static int s_refuse_figures(server_t *s, const wire_peer_t *peer, const char *what,
                            const char *problem)
{
    if (!problem)
        return 0;
    char why[200];
    snprintf(why, sizeof why, "%s refused: %s", what, problem);
    srv_log_refused(s, "refused %s", why);
    srv_error(s, peer, PS__ERROR_CODE__ERROR_MALFORMED, why);
    return -1;
}

static void s_on_epoch(server_t *s, const wire_peer_t *peer, const Ps__EpochReport *e)
{
    slot_t *sl = member_check(s, peer, e->worker_id, "epoch report");
    if (!sl || s_refuse_figures(s, peer, "epoch report", s_epoch_problem(s, e)))
        return;
    if (e->epoch <= sl->epochs_reported) { /* resent after a head's fail-over: recorded */
        srv_reply_ack(s, sl);
        return;
    }
    sl->epochs_reported = e->epoch;
    if (s->o->mode == MODE_INDEPENDENT) /* progress, for a worker that pushes nothing */
        sl->last_seen = clock_now();
    metrics_epoch_t me = {.epoch = (int)e->epoch,
                          .train_loss = e->train_loss,
                          .test_accuracy = e->test_accuracy,
                          .epoch_seconds = e->epoch_seconds,
                          .compute_seconds = e->compute_seconds,
                          .push_seconds = e->push_seconds,
                          .pull_seconds = e->pull_seconds,
                          .wait_seconds = e->wait_seconds,
                          .images = (int64_t)e->images,
                          .bytes_sent = (int64_t)e->bytes_sent,
                          .bytes_received = (int64_t)e->bytes_received};
    srv_db(s, metrics_epoch(s->db, s->run, (int)e->worker_id, &me, srv_elapsed(s)));
    srv_write_stats(s);
    srv_log(s,
            "worker %u epoch %u: train loss %.4f, test accuracy %.2f%%, %.1f s (compute "
            "%.1f, wait %.1f, comm %.1f)",
            e->worker_id, e->epoch, e->train_loss, e->test_accuracy, e->epoch_seconds,
            e->compute_seconds, e->wait_seconds, e->push_seconds + e->pull_seconds);
    if (replica_sync_point(s) != 0) /* the row is in the standby's database first */
        return;
    srv_reply_ack(s, sl);
}

static void s_on_done(server_t *s, const wire_peer_t *peer, const Ps__Done *d)
{
    if (d->worker_id < (uint32_t)s->o->workers && s->slots[d->worker_id].done &&
        s->slots[d->worker_id].moved) { /* resent to the head's standby that took over */
        s->slots[d->worker_id].peer = *peer;
        srv_reply_ack(s, &s->slots[d->worker_id]);
        return;
    }
    slot_t *sl = member_check(s, peer, d->worker_id, "done");
    if (!sl ||
        s_refuse_figures(s, peer, "done",
                         !s_in(d->train_seconds, 86400 * 365.0) ? "train_seconds out of range"
                         : !s_in(d->test_accuracy, 100) ? "test_accuracy is not a percentage"
                                                        : NULL))
        return;
    if (d->leaving) {
        member_leaving(s, sl);
        return;
    }
    if (d->train_seconds > s->worker_train_max)
        s->worker_train_max = d->train_seconds;
    member_done(s, sl, d->train_seconds, d->test_accuracy);
}

static void s_on_pull(server_t *s, const wire_peer_t *peer, const Ps__Pull *p)
{
    slot_t *sl = group_check(s, peer, p->worker_id, p->token, "pull");
    if (!sl)
        return;
    /* independent: a worker trains alone and pulls now and then to show it
     * is alive (it holds no barrier up: there is none). */
    if (s->o->mode == MODE_INDEPENDENT)
        sl->last_seen = clock_now();
    srv_reply_weights_now(s, sl);
}

/* The messages only the head takes: registration, the workers' figures,
 * and its shards'. */
static void s_head_handle(server_t *s, const wire_peer_t *peer, wire_msg_t *m)
{
    Ps__Envelope *env = m->env;
    switch (env->body_case) {
    case PS__ENVELOPE__BODY_REGISTER: member_register(s, peer, env->register_); break;
    case PS__ENVELOPE__BODY_EPOCH: s_on_epoch(s, peer, env->epoch); break;
    case PS__ENVELOPE__BODY_DONE: s_on_done(s, peer, env->done); break;
    default: group_handle(s, peer, m); break;
    }
}

/* Receives one message and hands it to its handler. */
static void s_handle(server_t *s)
{
    wire_peer_t peer;
    wire_msg_t m;
    char err[256];
    s->request = 0; /* unknown until the message decodes */
    int rc = wire_recv(s->sock, &peer, &m, s->model->nparams, err, sizeof err);
    if (rc < 0)
        return;
    if (rc > 0) {
        srv_log_refused(s, "refused a message: %s", err);
        srv_error(s, &peer, (Ps__ErrorCode)rc, err);
        return;
    }
    s->bytes_in += (int64_t)m.bytes;
    Ps__Envelope *env = m.env;
    s->request = env->request_id;
    int replica = env->body_case == PS__ENVELOPE__BODY_REPLICA_UPDATE ||
                  env->body_case == PS__ENVELOPE__BODY_REPLICA_HEAD ||
                  env->body_case == PS__ENVELOPE__BODY_METRIC_ROW;
    if (s->standby && s->shard == 0 && !replica) {
        /* the head's standby answers nothing until the witness promotes it */
        srv_error(s, &peer, PS__ERROR_CODE__ERROR_RETRY,
                  "this is the head's standby, which serves once it takes over; retry");
        wire_msg_close(&m);
        return;
    }
    switch (env->body_case) {
    case PS__ENVELOPE__BODY_PULL: s_on_pull(s, &peer, env->pull); break;
    case PS__ENVELOPE__BODY_PUSH: s_on_push(s, &peer, &m); break;
    case PS__ENVELOPE__BODY_REPLICA_UPDATE: replica_on_update(s, &peer, &m); break;
    case PS__ENVELOPE__BODY_REPLICA_HEAD: replica_on_head(s, &peer, &m); break;
    case PS__ENVELOPE__BODY_METRIC_ROW: replica_on_metric(s, &peer, &m); break;
    case PS__ENVELOPE__BODY_LOCATE: group_on_locate(s, &peer, env->locate); break;
    case PS__ENVELOPE__BODY_SHARD_TERM:
        if (s->shard > 0)
            group_witness(s, &peer, env->shard_term);
        else
            s_head_handle(s, &peer, &m);
        break;
    case PS__ENVELOPE__BODY_REGISTER:
    case PS__ENVELOPE__BODY_EPOCH:
    case PS__ENVELOPE__BODY_DONE:
    case PS__ENVELOPE__BODY_SHARD_JOIN:
    case PS__ENVELOPE__BODY_SHARD_PING:
    case PS__ENVELOPE__BODY_SHARD_FINAL:
        if (s->shard == 0) { /* the head's business; a shard serves pushes and pulls */
            s_head_handle(s, &peer, &m);
            break;
        }
        /* fall through */
    default:
        if (s->shard)
            snprintf(err, sizeof err,
                     "shard %d of the server group serves pushes and pulls; a %s message "
                     "goes to the head",
                     s->shard, wire_kind_name(env->body_case));
        else
            snprintf(err, sizeof err, "a worker may not send a %s message",
                     wire_kind_name(env->body_case));
        srv_log_refused(s, "refused: %s", err);
        srv_error(s, &peer, PS__ERROR_CODE__ERROR_STATE, err);
        break;
    }
    wire_msg_close(&m);
}

/* Saves the final model unless nothing was trained or it is not finite.
 * 0, or 1 after printing why. */
static int s_save_model(server_t *s, const float *w, int done, double accuracy)
{
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/model_distributed.safetensors", s->o->out_dir);
    char acc_s[32], ver_s[32];
    snprintf(acc_s, sizeof acc_s, "%.2f", accuracy);
    snprintf(ver_s, sizeof ver_s, "%llu", (unsigned long long)s->version);
    const char *meta[] = {"format",  "pt",  "mode",          server_mode_name(s->o->mode),
                          "version", ver_s, "test_accuracy", acc_s,
                          NULL};
    if (done == 0 || s->updates == 0) {
        /* Nothing trained: an existing model (of a better run) stays, and so
         * does the checkpoint, for a --resume with workers. */
        fprintf(stderr,
                "error: %s; the model is not saved (%s is left as it was) and the "
                "checkpoint is kept\n",
                done == 0 ? "no worker finished its epochs (all were evicted)"
                          : "no update was applied",
                path);
        return 1;
    }
    if (!model_all_finite(w, s->model->nparams)) {
        fprintf(stderr, "error: the final weights are not finite; the model is not saved\n");
        return 1;
    }
    if (fs_mkdirs(s->o->out_dir) != 0) {
        fprintf(stderr, "error: cannot create %s: %s\n", s->o->out_dir, strerror(errno));
        return 1;
    }
    if (modelfile_save(path, s->model, w, meta, err, sizeof err) != 0) {
        fprintf(stderr, "error: cannot save the model: %s\n", err);
        return 1;
    }
    srv_log(s, "model saved: %s", path);
    ckpt_remove(s);
    return 0;
}

/* independent: evaluates each worker's saved model (consistency.c saved
 * them as they came); *mean is their mean accuracy. 0, or 1 after printing
 * which model is missing or unreadable. */
static int s_independent_models(server_t *s, engine_t *e, double *mean)
{
    float *w = malloc(s->model->nparams * sizeof(float));
    int status = w ? 0 : 1;
    double sum = 0.0;
    for (int i = 0; w && i < s->o->workers; i++) {
        char path[4200], err[600];
        cons_independent_path(s, i, path, sizeof path);
        if (modelfile_load(path, s->model, "", w, err, sizeof err) != 0) {
            fprintf(stderr, "error: worker %d's model is missing (did it finish?): %s\n", i, err);
            status = 1;
            continue;
        }
        double acc = e ? engine_evaluate(e, w, &s->test, s->o->test_limit, NULL) : 0.0;
        srv_log(s, "worker %d's own model: test accuracy %.2f%%", i, acc);
        sum += acc;
    }
    free(w);
    *mean = sum / s->o->workers;
    if (status == 0)
        ckpt_remove(s);
    return status;
}

/* After the last worker: evaluate, save, close the run. Returns the exit
 * status: 1 when the model is not evaluated or not saved, the run's end is
 * not recorded, or metrics writes failed (the database's figures of the run are then
 * incomplete, which a status of 0 would hide). */
static int s_finish(server_t *s)
{
    /* Like basic mode's: training time without the workers' evaluations,
     * i.e. the slowest worker's; the wall time is in the log. */
    double wall = clock_now() - s->t0;
    double train_seconds = s->worker_train_max > 0 ? s->worker_train_max : wall;
    int done = 0;
    for (int i = 0; i < s->o->workers; i++)
        done += s->slots[i].done;
    char err[512];
    /* The whole model: with shards, their final weights next to the head's. */
    const float *w = group_final_weights(s);
    if (!w) {
        metrics_run_end(s->db, s->run, "failed", 0.0, train_seconds);
        return 1;
    }
    engine_t *e = engine_new(s->model, s->o->threads, 1, err, sizeof err);
    int evaluated = e != NULL;
    if (!evaluated) /* the model is still saved: training went well */
        fprintf(stderr,
                "error: cannot evaluate the final model (its accuracy is given as "
                "0): %s\n",
                err);
    double accuracy = 0.0;
    int status = 0; /* independent: the accuracy is the mean of the workers' own models */
    if (s->o->mode == MODE_INDEPENDENT)
        status = s_independent_models(s, e, &accuracy) != 0;
    else
        accuracy = e ? engine_evaluate(e, w, &s->test, s->o->test_limit, NULL) : 0.0;
    engine_destroy(&e);
    srv_write_stats(s);
    if (s->o->mode != MODE_INDEPENDENT)
        status = s_save_model(s, w, done, accuracy) != 0;
    status = status || !evaluated;
    if (metrics_run_end(s->db, s->run, status == 0 ? "done" : "failed", accuracy, train_seconds) !=
        0) {
        fprintf(stderr,
                "error: the run's end could not be recorded (%s): the database still "
                "says 'running'\n",
                metrics_errmsg(s->db));
        status = 1;
    }
    if (s->db_failures > 0) {
        fprintf(stderr,
                "error: %ld writes to the metrics database failed: its figures of this "
                "run are incomplete\n",
                s->db_failures);
        status = 1;
    }
    printf("summary: mode=%s workers=%d finished=%d updates=%lld duplicates=%lld "
           "mean_staleness=%.2f test_accuracy=%.2f train_seconds=%.1f wall_seconds=%.1f "
           "mb_in=%.1f mb_out=%.1f\n",
           server_mode_name(s->o->mode), s->o->workers, done, (long long)s->updates,
           (long long)s->duplicates, s->updates ? s->stale_sum / (double)s->updates : 0.0, accuracy,
           train_seconds, wall, (double)s->bytes_in / 1e6, (double)s->bytes_out / 1e6);
    return status;
}

/* Creates dir if needed and checks that files can be written in it, at
 * start-up rather than when the model or a checkpoint is due. */
static int s_check_writable(const char *dir, const char *flag, const char *what)
{
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.paramserver-probe-%d", dir, (int)getpid());
    int fd = -1;
    if (fs_mkdirs(dir) == 0)
        fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        fprintf(stderr,
                "error: cannot write in %s %s (%s): %s\n(give %s a directory this "
                "user can write in)\n",
                what, dir, flag, strerror(errno), flag);
        return -1;
    }
    close(fd);
    unlink(probe);
    return 0;
}

/* The output directory and, when checkpoints are written or read, the
 * checkpoint's directory can be written in. */
static int s_check_dirs(const server_opts_t *o)
{
    if (o->out_dir && s_check_writable(o->out_dir, "--out", "the output directory") != 0)
        return -1;
    if (o->checkpoint_every <= 0 && !o->resume)
        return 0;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", o->checkpoint);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir] = '\0';
    return s_check_writable(slash ? dir : ".", "--checkpoint", "the checkpoint's directory");
}

/* The number of training images to split and the test set (none without
 * o->data_dir: the fuzzer's server splits o->train_limit images). */
static int s_load_data(server_t *s)
{
    const server_opts_t *o = s->o;
    char err[512];
    if (!o->data_dir) {
        s->train_count = o->train_limit;
    } else {
        idx_dataset_t train = {0};
        if (idx_load(o->data_dir, "train", &train, err, sizeof err) != 0 ||
            idx_load(o->data_dir, "t10k", &s->test, err, sizeof err) != 0) {
            fprintf(stderr,
                    "error: %s\n(the server needs %s for the shard split and the final "
                    "evaluation: run `make data`, which fetches MNIST and links Fashion-MNIST, "
                    "or pass --data-dir DIR)\n",
                    err, o->dataset);
            idx_free(&train);
            return -1;
        }
        s->train_count =
            o->train_limit > 0 && o->train_limit < train.count ? o->train_limit : train.count;
        s->data_fingerprint = idx_fingerprint(&train, s->train_count);
        idx_free(&train);
    }
    if (s->train_count < o->workers) {
        fprintf(stderr, "error: %d training images cannot be split among %d workers\n",
                s->train_count, o->workers);
        return -1;
    }
    return 0;
}

/* PyTorch's initial weights (from the seed) of this server's range. */
static int s_init_weights(const server_t *s, float *w)
{
    if (s->n == s->model->nparams) {
        models_init(s->model, w, s->o->seed);
        return 0;
    }
    float *all = malloc(s->model->nparams * sizeof(float));
    if (!all)
        return -1;
    models_init(s->model, all, s->o->seed);
    memcpy(w, all + s->lo, s->n * sizeof(float));
    free(all);
    return 0;
}

server_t *server_new(const server_opts_t *o)
{
    server_t *s = calloc(1, sizeof *s);
    char err[512];
    if (!s) {
        fprintf(stderr, "error: out of memory\n");
        return NULL;
    }
    s->o = o;
    s->model = models_find(o->model ? o->model : MODELS_DEFAULT);
    if (!s->model) { /* main.c and group.c check the name: only a caller's mistake */
        fprintf(stderr, "error: no model '%s' in this build\n", o->model);
        goto fail;
    }
    s->failover = o->failover_timeout > 0 ? o->failover_timeout : 2.0; /* replica.h */
    s->policy = cons_policy(o->mode);
    s->shard = o->shard;
    group_range(o->shards, o->shard, s->model->nparams, &s->lo, &s->n);
    if (s_load_data(s) != 0)
        goto fail;
    s->w = malloc(s->n * sizeof(float));
    s->v = calloc(s->n, sizeof(float));
    s->slots = calloc((size_t)o->workers, sizeof *s->slots);
    if (!s->w || !s->v || !s->slots || s_init_weights(s, s->w) != 0) {
        fprintf(stderr, "error: out of memory\n");
        goto fail;
    }
    if (s->shard == 0 && group_head_new(s) != 0)
        goto fail;
    if (s_check_dirs(o) != 0)
        goto fail;
    s->db = metrics_open(o->db, err, sizeof err);
    if (!s->db) {
        fprintf(stderr, "error: %s\n", err);
        goto fail;
    }
    if (o->resume && ckpt_resume(s, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        s->run = 0; /* not ours to mark failed */
        goto fail;
    }
    if (transport_listen(s) != 0)
        goto fail;
    s->t_listen = clock_now();
    return s;
fail:
    server_destroy(&s);
    return NULL;
}

int server_handle_ready(server_t *s)
{
    int events = 0, n = 0;
    size_t len = sizeof events;
    while (!server_stop && zmq_getsockopt(s->sock, ZMQ_EVENTS, &events, &len) == 0 &&
           (events & ZMQ_POLLIN)) {
        s_handle(s);
        n++;
    }
    return n;
}

void server_reset(server_t *s)
{
    for (int i = 0; i < s->o->workers; i++) {
        slot_t *sl = &s->slots[i];
        float *gbuf = sl->gbuf;
        memset(sl, 0, sizeof *sl);
        sl->gbuf = gbuf;
    }
    if (!s->w0 && (s->w0 = malloc(s->n * sizeof(float))) && s_init_weights(s, s->w0) != 0) {
        free(s->w0); /* once: it costs more than an input */
        s->w0 = NULL;
    }
    /* w and v change only by an applied update, which counts the version
     * (consistency.c): at version 0 they still hold the initial weights and
     * zero momentum, and most inputs apply nothing (copying and scanning 1.8
     * MB per input took half the fuzzer's time). */
    if (s->version != 0) {
        if (s->w0)
            memcpy(s->w, s->w0, s->n * sizeof(float));
        else
            s_init_weights(s, s->w);
        memset(s->v, 0, s->n * sizeof(float));
    }
    s->run = 0;
    s->version = s->ckpt_version = 0;
    s->registered = s->active = s->started = s->round_arrived = s->fatal = 0;
    s->updates = s->stale_max = s->duplicates = s->bytes_in = s->bytes_out = 0;
    s->stale_sum = s->worker_train_max = 0.0;
    s->refusals_logged = s->refusals_hidden = s->db_failures = 0;
    /* The head forgets its shards too (who joined, the membership's seq). */
    if (s->shard == 0) {
        group_destroy(s);
        if (group_head_new(s) != 0)
            abort(); /* the fuzzer's rig is broken */
    }
    /* The rows of every input would pile up in an in-memory database: start
     * a new one now and then. */
    if (++s->resets % 4096 == 0) {
        char err[512];
        metrics_close(&s->db);
        if (!(s->db = metrics_open(s->o->db, err, sizeof err))) {
            fprintf(stderr, "server_reset: %s\n", err);
            abort(); /* the fuzzer's rig is broken */
        }
    }
}

const char *server_invariant_problem(const server_t *s)
{
    int active = 0;
    for (int i = 0; i < s->o->workers; i++) {
        const slot_t *sl = &s->slots[i];
        active += sl->active;
        if (sl->active && (sl->done || sl->evicted))
            return "a slot is active and finished";
    }
    if (active != s->active || s->registered > s->o->workers || s->active > s->registered)
        return "the worker counts disagree";
    const char *problem = cons_invariant_problem(s);
    if (problem)
        return problem;
    if (s->version != 0 && /* else still the initial values: see server_reset */
        (!model_all_finite(s->w, s->n) || !model_all_finite(s->v, s->n)))
        return "the weights or the momentum are not finite";
    return NULL;
}

void server_destroy(server_t **ps)
{
    if (!ps || !*ps)
        return;
    server_t *s = *ps;
    if (s->run > 0 && /* started and not finished */
        metrics_run_end(s->db, s->run, "failed", 0.0, clock_now() - s->t0) != 0)
        fprintf(stderr,
                "error: the run's end could not be recorded (%s): the database still "
                "says 'running'\n",
                metrics_errmsg(s->db));
    transport_close(s);
    metrics_close(&s->db);
    idx_free(&s->test);
    free(s->w);
    free(s->w0);
    free(s->v);
    for (int i = 0; s->slots && i < s->o->workers; i++)
        free(s->slots[i].gbuf);
    replica_close(s);
    group_destroy(s);
    free(s->slots);
    free(s);
    *ps = NULL;
}

/* The event loop, until every worker has left, a stop, or an error. 0 when
 * the run ended (every worker done or evicted, or a stop), -1 when the
 * server must exit at once. */
static int s_loop(server_t *s)
{
    const server_opts_t *o = s->o;
    while (!server_stop && !s->fatal && !(s->started && s->active == 0)) {
        if (transport_wait(s, SERVER_TICK_MS) != 0)
            return -1;
        server_handle_ready(s);
        transport_flush(s);
        if (s->db && clock_now() - s->last_flush >= METRICS_BATCH_SECONDS) {
            /* Step rows wait in a batch; commit it even while no step comes
             * (barriers, evaluation), so a crash loses at most 2 s of them. */
            srv_db(s, metrics_flush(s->db));
            s->last_flush = clock_now();
        }
        if (!s->started && clock_now() - s->t_listen > o->register_timeout) {
            char missing[256];
            if (!group_ready(s, missing, sizeof missing))
                fprintf(stderr,
                        "error: %s of the server group did not join within %.0f s "
                        "(--register-timeout): start each with paramserver --shard I --head "
                        "%s, and check that it can reach this address\n",
                        missing, o->register_timeout, s->endpoint);
            if (s->registered < o->workers)
                fprintf(stderr,
                        "error: only %d of %d workers registered within %.0f s "
                        "(--register-timeout); are the workers pointed at this server's "
                        "address, and is the port open?\n",
                        s->registered, o->workers, o->register_timeout);
            return -1;
        }
        if (s->started)
            member_tick(s);
        replica_tick(s); /* the head's standby: heartbeats */
        if (s->fenced)
            return -1;
    }
    return s->fatal ? -1 : 0;
}

/* The head's life from now on: the loop, then the run's end. Destroys s.
 * The process exit status. */
static int s_serve(server_t *s)
{
    const server_opts_t *o = s->o;
    int status = 1;
    if (s_loop(s) != 0) {
        if (s->fenced)
            fprintf(stderr,
                    "fenced: the head's standby took over (this head's term %llu is "
                    "over); start this process again as its standby (--replica-of)\n",
                    (unsigned long long)s->term);
        status = s->fenced ? 3 : 1;
        goto out;
    }
    if (server_stop) {
        /* A stop (SIGTERM from systemd, Ctrl-C) keeps what was trained. */
        if (s->started && s->o->checkpoint_every > 0 && ckpt_write(s) == 0)
            fprintf(stderr,
                    "interrupted: checkpoint written to %s (continue with --resume); "
                    "run %lld marked failed\n",
                    o->checkpoint, (long long)s->run);
        else
            fprintf(stderr, "interrupted: run %lld marked failed\n", (long long)s->run);
        goto out;
    }
    status = s_finish(s); /* ends the run in the database either way */
    s->run = 0;
    replica_end(s); /* the head's standby has every row: it may go */
out:
    server_destroy(&s);
    return status;
}

int server_run(const server_opts_t *o)
{
    server_t *s = server_new(o);
    return s ? s_serve(s) : 1;
}

int server_run_head_standby(server_t *s)
{
    while (!server_stop && s->standby && !s->fenced && !s->ended) {
        if (transport_wait(s, 50) != 0)
            break;
        server_handle_ready(s);
        transport_flush(s);
        replica_tick(s);
    }
    if (!s->standby && !s->fenced && !server_stop)
        return s_serve(s); /* promoted: the head */
    int ended = s->ended;
    s->run = 0; /* the head keeps the run (or ended it) */
    server_destroy(&s);
    if (ended)
        printf("the head ended the run; this standby was not needed\n");
    return ended ? 0 : 1;
}
