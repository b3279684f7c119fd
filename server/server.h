/* server: the parameter server. Holds the master weights and momentum,
 * registers workers, hands each its shard and the recipe, applies their
 * gradients with SGD + momentum under the chosen consistency mode, writes
 * every worker's figures into the metrics database, checkpoints the run, and
 * at the end evaluates and saves the model.
 *
 * The units behind this API (server/state.h lists what each owns):
 *   consistency.h  the modes: sync (BSP), async (ASP), ssp (bounded staleness)
 *   membership.h   registration, names, rejoin, eviction, leave, done
 *   checkpoint.h   the checkpoint file and --resume
 *   transport.h    binding, the gate (gate.h), CurveZMQ and its ZAP handler
 *   server.c       lifecycle and message dispatch
 * A worker that has finished (Done) or was evicted leaves every barrier, so
 * unequal shards and dead workers never hang a run.
 *
 * One thread owns the server and its socket: a zmq_poll loop. */
#ifndef SERVER_H
#define SERVER_H

#include <signal.h>
#include <stdint.h>

/* MODE_INDEPENDENT: the original study's train_distributed.py as a baseline:
 * each worker trains its own model on its shard, nothing is averaged. */
typedef enum { MODE_SYNC, MODE_ASYNC, MODE_SSP, MODE_INDEPENDENT } server_mode_t;

/* --lr-scaling: NONE uses --lr for every update; LINEAR (Goyal et al. 2017)
 * multiplies it by the number of gradients a sync update averages, reached
 * by a linear ramp over --warmup-epochs (consistency.h, cons_lr). */
typedef enum { LR_SCALING_NONE, LR_SCALING_LINEAR } lr_scaling_t;

typedef struct {
    const char *bind;     /* ZeroMQ endpoint, e.g. tcp://0.0.0.0:5555 */
    const char *data_dir; /* for the final test evaluation */
    const char *db;       /* metrics database */
    const char *out_dir;  /* model_distributed.safetensors goes here */
    server_mode_t mode;
    int workers, staleness, epochs, batch_size, train_limit, test_limit, threads;
    double lr, momentum;
    uint64_t seed;
    double register_timeout;   /* seconds to wait for all workers to register */
    double worker_timeout;     /* seconds of silence before a worker is evicted */
    const char *checkpoint;    /* checkpoint file */
    int checkpoint_every;      /* checkpoint after this many updates (0: never) */
    double checkpoint_seconds; /* ...or when this many seconds have passed */
    int resume;                /* continue the run saved in the checkpoint */
    const char *curve_secret;  /* CurveZMQ: the server's secret certificate, or NULL */
    const char *allowed_keys;  /* CurveZMQ: directory of the workers' public certificates */
    /* The server group: the head has shard 0 of `shards`; a shard process
     * has shard >= 1 and the head's endpoint, and takes the recipe from it. */
    int shards, shard;
    const char *head;       /* a shard: the head's endpoint */
    const char *advertise;  /* a shard: where workers reach it (default: from --bind) */
    const char *server_key; /* a shard with CurveZMQ: the head's public certificate */
    const char *shard_keys; /* the head with CurveZMQ: the keys that may join as shards */
    /* the model, the data set and the learning-rate schedule */
    const char *model;   /* a name in common/models.h (NULL: MODELS_DEFAULT) */
    const char *dataset; /* "mnist" or "fashion-mnist" (idx.h, idx_dataset_dir) */
    lr_scaling_t lr_scaling;
    double warmup_epochs; /* LINEAR: epochs of the ramp from --lr to --lr x workers */
    /* Hot standby (issue 12, replica.h): a standby of the shard at this
     * endpoint; the silence after which a standby takes over. */
    const char *replica_of;
    double failover_timeout;
    int replicas; /* the head: 1 = wait for its own standby before the run (--replicas) */
} server_opts_t;

/* Set by SIGINT/SIGTERM: the loop ends the run as failed and exits. */
extern volatile sig_atomic_t server_stop;

/* Runs a whole training run. Returns the process exit status. */
int server_run(const server_opts_t *o);

/* Runs shard o->shard of a head's group (group.c): joins o->head, takes its
 * range and the recipe, serves the workers until the head says the run is
 * over, sends it the final weights. Returns the process exit status. */
int server_run_shard(const server_opts_t *o);

/* The same in pieces, for the fuzzer (tests/fuzz_server.c), which drives the
 * message handler directly. Opaque. */
typedef struct server server_t;

/* The head's standby (paramserver --replica-of HEAD), joined and bound
 * (group.c): copies the head until the witness promotes it, then serves as
 * the head (server_run's loop and end); or exits when the head ends the
 * run. Destroys s; returns the exit status. */
int server_run_head_standby(server_t *s);

/* Loads the data (none when o->data_dir is NULL: then o->train_limit images
 * are split), opens the database, binds. NULL after printing why. o must
 * outlive the server. */
server_t *server_new(const server_opts_t *o);

/* Handles every message ready on the socket, without waiting; returns how
 * many. */
int server_handle_ready(server_t *s);

/* For the fuzzer: forgets every worker and the run, restores the initial
 * weights and zero momentum, so that the next input meets a fresh server
 * without the cost of a new one (database rows are kept). */
void server_reset(server_t *s);

/* For the fuzzer: NULL when the server's state is sound (weights and
 * momentum finite, worker counts consistent), else what is wrong. */
const char *server_invariant_problem(const server_t *s);

/* Closes everything; a run started and not finished is marked failed. */
void server_destroy(server_t **ps);

const char *server_mode_name(server_mode_t m);

#endif
