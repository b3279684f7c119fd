/* worker: the options of the worker program and its two modes: basic (one
 * process, no server, the original train_basic.py) and distributed (against
 * a paramserver). */
#ifndef WORKER_H
#define WORKER_H

#include <signal.h>
#include <stdint.h>

#include "idx.h"
#include "models.h"

typedef struct {
    const char *server;       /* distributed: tcp://HOST:PORT; NULL in basic mode */
    const char *data_dir;     /* the data set's IDX files; NULL: its default (idx_dataset_dir) */
    const char *dataset;      /* basic: "mnist" or "fashion-mnist"; with a server, the server's */
    const model_def_t *model; /* --model: basic's (default simpleconvnet); with a server,
                               * the one it must train (NULL: the server's) */
    const char *out_dir;      /* where the model file goes */
    const char *db;           /* SQLite metrics database (basic mode) */
    const char *name;         /* worker name reported to the server */
    int epochs, batch_size, threads, train_limit, test_limit;
    double lr, momentum;
    uint64_t seed;
    double timeout;           /* distributed: seconds to wait for any reply */
    double connect_timeout;   /* distributed: seconds to wait for the Welcome */
    const char *curve_secret; /* CurveZMQ: this worker's secret certificate, or NULL */
    const char *server_key;   /* CurveZMQ: the server's public certificate */
    int compress;             /* distributed: PS__COMPRESSION__* to ask the server for */
    int push_every;           /* distributed: local SGD steps per push (1: every step) */
} worker_opts_t;

/* Set by SIGINT/SIGTERM: training loops stop at the next batch. */
extern volatile sig_atomic_t worker_stop;

/* Basic mode. Returns the process exit status. */
int basic_run(const worker_opts_t *o);

/* Distributed mode: a worker of the paramserver at o->server. */
int distributed_run(const worker_opts_t *o);

/* Both modes (training.c). The directory data set `dataset` is read from:
 * --data-dir, or the data set's default (idx_dataset_dir). */
const char *worker_data_dir(const worker_opts_t *o, const char *dataset);
/* Loads the data set's train and test splits from worker_data_dir; prints
 * what is wrong and how to get the files, and returns -1, on failure. */
int worker_load_data(const worker_opts_t *o, const char *dataset, idx_dataset_t *train,
                     idx_dataset_t *test);
/* Distributed: 0 when the first n training images match the server's
 * fingerprint (0: not checked), else -1 after saying so. */
int worker_check_fingerprint(const worker_opts_t *o, const char *dataset,
                             const idx_dataset_t *train, int n, uint32_t want);
/* Prints the run's `summary:` line (images: all images trained on). */
void worker_summary(int epochs, double accuracy, double train_seconds, double images);

#endif
