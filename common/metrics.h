/* metrics: the SQLite database of runs, workers, per-step loss and per-epoch
 * figures, shared by basic mode (a run with one worker) and the parameter
 * server (which alone writes it in distributed runs).
 *
 * Schema (PRAGMA user_version = METRICS_SCHEMA_VERSION):
 *   runs(id INTEGER PRIMARY KEY, mode TEXT,            -- 'basic', 'sync', 'async', 'ssp',
 *                                                      -- 'independent'
 *        started_at REAL, ended_at REAL,               -- unix seconds; ended_at NULL while running
 *        host TEXT, workers INTEGER, epochs INTEGER, batch_size INTEGER,
 *        lr REAL, momentum REAL, seed INTEGER, threads INTEGER, train_limit INTEGER,
 *        staleness INTEGER, dataset TEXT,              -- 'mnist', 'fashion-mnist'
 *        status TEXT,                                  -- 'running', 'done', 'failed'
 *        final_accuracy REAL, train_seconds REAL,      -- percent; seconds of training
 *        model TEXT)                                   -- common/models.h's name (version 2;
 *                                                      -- NULL: a version 1 run, SimpleConvNet)
 *   workers(run_id, worker_id, name TEXT, host TEXT, shard_size INTEGER, threads INTEGER,
 *           incarnation INTEGER, joined_at REAL, PRIMARY KEY(run_id, worker_id, incarnation))
 *   steps(run_id, worker_id, step INTEGER, epoch INTEGER, loss REAL,
 *         t REAL)                                      -- seconds since the run started
 *   epochs(run_id, worker_id, epoch INTEGER, train_loss REAL, test_accuracy REAL,
 *          epoch_seconds REAL, compute_seconds REAL, push_seconds REAL, pull_seconds REAL,
 *          wait_seconds REAL, images INTEGER, bytes_sent INTEGER, bytes_received INTEGER,
 *          t REAL)                                     -- seconds since run start at epoch end
 *   server_stats(run_id, t REAL, updates_applied INTEGER, version INTEGER,
 *                mean_staleness REAL, max_staleness INTEGER)
 *   events(run_id, t REAL, worker_id INTEGER, kind TEXT, detail TEXT)
 * Worker ids start at 0; basic mode is worker 0. Epochs start at 1.
 *
 * Durability: WAL mode, synchronous=NORMAL. Step rows are buffered in an open
 * transaction and committed every METRICS_BATCH_ROWS rows or
 * METRICS_BATCH_SECONDS seconds, whichever comes first; every other call
 * commits at once. A crash therefore loses at most the last open batch of
 * step rows, never an epoch, run or worker row. Not thread-safe: one thread
 * owns a metrics_t. */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>
#include <stdint.h>

/* 2: runs.model (a version 1 database gets the column when opened for
 * writing). */
#define METRICS_SCHEMA_VERSION 2
#define METRICS_BATCH_ROWS 500
#define METRICS_BATCH_SECONDS 2.0

typedef struct metrics metrics_t;

/* What a run was started with. Strings may be NULL. */
typedef struct {
    const char *mode;    /* "basic", "sync", "async", "ssp" */
    const char *host;    /* where the run (or its server) ran */
    const char *dataset; /* data set: "mnist" or "fashion-mnist" */
    const char *model;   /* common/models.h's name, e.g. "simpleconvnet" */
    int workers, epochs, batch_size, threads, train_limit, staleness;
    double lr, momentum;
    uint64_t seed;
} metrics_run_info_t;

/* One worker's figures for one epoch. */
typedef struct {
    int epoch;
    double train_loss, test_accuracy; /* mean loss of the epoch's steps; percent */
    double epoch_seconds, compute_seconds, push_seconds, pull_seconds, wait_seconds;
    int64_t images, bytes_sent, bytes_received;
} metrics_epoch_t;

/* Opens (creating if needed) the database at path, its directory and its
 * schema. Refuses a database whose schema version is newer than this
 * program's. ":memory:" is a database in memory, gone at close (the
 * fuzzer's). NULL + err on failure. */
metrics_t *metrics_open(const char *path, char *err, size_t errlen);

/* Commits what is buffered, closes, sets *pm to NULL; safe on NULL. It has
 * no caller left to tell: a failed commit or close is a warning on stderr. */
void metrics_close(metrics_t **pm);

/* Starts a run (status 'running'); returns its id (> 0) or -1. */
int64_t metrics_run_begin(metrics_t *m, const metrics_run_info_t *info);

/* Ends a run: sets ended_at, status ("done"/"failed"), final accuracy and
 * training seconds. Returns 0 or -1. */
int metrics_run_end(metrics_t *m, int64_t run, const char *status, double final_accuracy,
                    double train_seconds);

/* Records a worker joining a run. Returns 0 or -1. */
int metrics_worker(metrics_t *m, int64_t run, int worker_id, const char *name, const char *host,
                   int shard_size, int threads, int incarnation);

/* Buffers one step's loss; t is seconds since the run started. 0 or -1. */
int metrics_step(metrics_t *m, int64_t run, int worker_id, int64_t step, int epoch, double loss,
                 double t);

/* Records one worker's epoch; t is seconds since run start. 0 or -1. */
int metrics_epoch(metrics_t *m, int64_t run, int worker_id, const metrics_epoch_t *e, double t);

/* Records the server's counters at time t. 0 or -1. */
int metrics_server_stats(metrics_t *m, int64_t run, double t, int64_t updates_applied,
                         int64_t version, double mean_staleness, int64_t max_staleness);

/* Records the figures of one server of a group (shard 0 is the head) at
 * time t: its version, updates, bytes in and out, seconds spent applying
 * updates. 0 or -1. */
int metrics_shard_stats(metrics_t *m, int64_t run, double t, int shard, int64_t version,
                        int64_t updates, int64_t bytes_in, int64_t bytes_out, double apply_seconds);

/* Records an event (eviction, rejoin, resume...). worker_id -1 for none. 0 or -1. */
int metrics_event(metrics_t *m, int64_t run, double t, int worker_id, const char *kind,
                  const char *detail);

/* Commits buffered step rows now. 0 or -1. */
int metrics_flush(metrics_t *m);

/* The last error message (never NULL). */
const char *metrics_errmsg(const metrics_t *m);

/* ---- Reading: the queries the report draws from -------------------------
 * A handle from metrics_open_readonly only reads: the functions above that
 * write must not be called with it. Reading works while a run is being
 * written (WAL, busy timeout). Errors: -1 with the message in
 * metrics_errmsg. */

/* Opens an existing database read-only and checks that it is one of ours:
 * schema version no newer than this program's, tables runs, steps and
 * epochs present. NULL + err (a missing file, a file that is not a database,
 * a newer schema, other tables). */
metrics_t *metrics_open_readonly(const char *path, char *err, size_t errlen);

/* A runs row. Text columns that are NULL read as "" ("?" for mode and
 * status), real ones as NAN, integer ones as 0. */
typedef struct {
    int64_t id;
    char mode[32], host[128], status[32];
    char dataset[64]; /* "mnist", "fashion-mnist"; older runs: the data directory */
    char model[32];   /* "simpleconvnet"...: runs.model, else its event "model";
                       * "" when neither (a run from before models) */
    double started_at, lr, momentum, final_accuracy, train_seconds;
    int workers, epochs, batch_size, threads, staleness, train_limit;
    uint64_t seed;
} metrics_run_row_t;

/* Reads run id into out. 1 found, 0 no such run, -1 error. */
int metrics_run_get(metrics_t *m, int64_t id, metrics_run_row_t *out);

/* The id of the latest run; 0 when there is none, -1 on error. */
int64_t metrics_run_latest(metrics_t *m);

/* The latest run of each mode that finished at least one epoch, of the
 * model of the latest such run (a comparison compares one model), in the
 * order basic, sync, async, ssp, then other modes by name: at most max ids.
 * Their number, or -1. */
int metrics_runs_latest_per_mode(metrics_t *m, int64_t *ids, int max);

/* Calls fn for every run, oldest first, with its number of step rows. 0 or
 * -1. */
typedef void (*metrics_run_fn)(void *ctx, int64_t id, const char *mode, const char *status,
                               int64_t steps);
int metrics_runs_each(metrics_t *m, metrics_run_fn fn, void *ctx);

/* One point of a worker's series. */
typedef void (*metrics_point_fn)(void *ctx, int worker_id, double x, double y);

/* The run's losses as (step, loss) points, by worker then step; rows with a
 * NULL loss are left out. The number of points, or -1. */
int64_t metrics_steps_each(metrics_t *m, int64_t run, metrics_point_fn fn, void *ctx);

/* The run's epochs by worker then epoch: acc gets (epoch, test accuracy)
 * and secs (epoch, epoch seconds), each only where the row has the value.
 * 0 or -1. */
int metrics_epochs_each(metrics_t *m, int64_t run, metrics_point_fn acc, metrics_point_fn secs,
                        void *ctx);

/* Per epoch, in order: the mean over the workers that reported a test
 * accuracy of (t, test accuracy), and how many they were. 0 or -1. */
typedef void (*metrics_mean_fn)(void *ctx, double t, double accuracy, int workers);
int metrics_epoch_means_each(metrics_t *m, int64_t run, metrics_mean_fn fn, void *ctx);

/* Training images of all the run's epochs, summed over workers (NAN when
 * none recorded). 0 or -1. */
int metrics_run_images(metrics_t *m, int64_t run, double *out);

/* The share of the workers' epoch time spent in push and pull, summed over
 * the run's epoch rows (NAN when none). 0 or -1. */
int metrics_run_comm_share(metrics_t *m, int64_t run, double *out);

/* A server group's run: each server's last figures (shard 0 is the head),
 * in shard order: bytes in and out, updates, seconds spent applying them.
 * 0, or -1 (metrics_errmsg). */
typedef void (*metrics_shard_fn)(void *ctx, int shard, double bytes_in, double bytes_out,
                                 double updates, double apply_seconds);
int metrics_shards_each(metrics_t *m, int64_t run, metrics_shard_fn fn, void *ctx);

/* A mirror of the database (the head's hot standby keeps one): every row
 * written (its prepared statement's number and parameters) is handed to a
 * journal function as it is written; metrics_replay writes it into another
 * database. Values: kind 'i' (integer), 'd' (real), 's' (text, valid during
 * the call only) or 'n' (null). A run row's journal adds the id it got as a
 * last value, and the mirror's copy gets that id. */
#define METRICS_MAX_VALUES 16
typedef struct {
    char kind;
    int64_t i;
    double d;
    const char *s;
} metrics_value_t;
typedef void (*metrics_journal_fn)(void *arg, int statement, const metrics_value_t *v, int n);
void metrics_set_journal(metrics_t *m, metrics_journal_fn fn, void *arg);

/* A journaled row's worker and progress: for a step row its step, for an
 * epoch row its epoch (the other 0). 1 for those rows, else 0. */
int metrics_row_progress(int statement, const metrics_value_t *v, int n, int *worker_id,
                         int64_t *step, int *epoch);

/* Writes a journaled row: 0, or -1 (metrics_errmsg) when the statement
 * number or the number of values is wrong, or the write fails (a run id the
 * database already holds: the mirror needs a database of its own). */
int metrics_replay(metrics_t *m, int statement, const metrics_value_t *v, int n);

/* A run's fail-overs (events of kind 'failover': a standby took over a
 * shard), in time order: when (seconds since the start) and the step the
 * lowest-numbered worker with steps was at then (its first step at or after
 * that time; NAN when it made none after). 0, or -1 (metrics_errmsg). */
typedef void (*metrics_failover_fn)(void *ctx, double t, double step);
int metrics_failovers_each(metrics_t *m, int64_t run, metrics_failover_fn fn, void *ctx);

/* One configuration of a study (table study_runs, which study/run-study.sh
 * creates and fills: one row per configuration it ran; run_id 0 when the
 * run left no runs row). */
typedef struct {
    int64_t id, run_id;
    char model[32], mode[32], compress[16], status[16];
    int workers;
} metrics_study_row_t;

/* Calls fn for every row of study_runs in the order they ran. The number of
 * rows, or -1 (also when the database holds no study). */
typedef void (*metrics_study_fn)(void *ctx, const metrics_study_row_t *r);
int metrics_study_each(metrics_t *m, metrics_study_fn fn, void *ctx);

/* The latest t (seconds since the run started) in its steps or epochs: how
 * long a run without train_seconds has trained so far (NAN when nothing is
 * recorded). 0 or -1. */
int metrics_run_last_t(metrics_t *m, int64_t run, double *out);

#endif
