/* metrics: writes runs, workers, steps, epochs, server counters and events
 * into the SQLite database described in metrics.h.
 *
 * The database is in WAL mode so that psreport can read it while a run
 * writes: readers never block the writer, and busy_timeout makes either side
 * wait rather than fail when a checkpoint or a second writer holds a lock.
 * Step rows come at hundreds per second, so they are inserted through a
 * prepared statement into an open transaction that is committed every
 * METRICS_BATCH_ROWS rows or METRICS_BATCH_SECONDS seconds (checked when a
 * step arrives, on a monotonic clock). Every other row is rarer and more
 * valuable: it commits the open step batch first and is then committed on its
 * own, so a crash can cost only step rows. Whether a batch is open is asked of
 * SQLite (sqlite3_get_autocommit) rather than tracked here, so a failed COMMIT
 * cannot leave the two out of step. */
#include "metrics.h"

#include "clock.h"
#include "errmsg.h"
#include "fs.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#define METRICS_BUSY_TIMEOUT_MS 5000

/* The schema of version METRICS_SCHEMA_VERSION; each statement is
 * idempotent. */
static const char *const s_schema =
    "CREATE TABLE IF NOT EXISTS runs("
    " id INTEGER PRIMARY KEY, mode TEXT, started_at REAL, ended_at REAL, host TEXT,"
    " workers INTEGER, epochs INTEGER, batch_size INTEGER, lr REAL, momentum REAL,"
    " seed INTEGER, threads INTEGER, train_limit INTEGER, staleness INTEGER, dataset TEXT,"
    " status TEXT, final_accuracy REAL, train_seconds REAL, model TEXT);"
    "CREATE TABLE IF NOT EXISTS workers("
    " run_id INTEGER NOT NULL, worker_id INTEGER NOT NULL, name TEXT, host TEXT,"
    " shard_size INTEGER, threads INTEGER, incarnation INTEGER NOT NULL, joined_at REAL,"
    " PRIMARY KEY(run_id, worker_id, incarnation));"
    "CREATE TABLE IF NOT EXISTS steps("
    " run_id INTEGER NOT NULL, worker_id INTEGER NOT NULL, step INTEGER, epoch INTEGER,"
    " loss REAL, t REAL);"
    "CREATE INDEX IF NOT EXISTS steps_run_worker ON steps(run_id, worker_id);"
    "CREATE TABLE IF NOT EXISTS epochs("
    " run_id INTEGER NOT NULL, worker_id INTEGER NOT NULL, epoch INTEGER, train_loss REAL,"
    " test_accuracy REAL, epoch_seconds REAL, compute_seconds REAL, push_seconds REAL,"
    " pull_seconds REAL, wait_seconds REAL, images INTEGER, bytes_sent INTEGER,"
    " bytes_received INTEGER, t REAL);"
    "CREATE INDEX IF NOT EXISTS epochs_run_worker ON epochs(run_id, worker_id);"
    "CREATE TABLE IF NOT EXISTS server_stats("
    " run_id INTEGER NOT NULL, t REAL, updates_applied INTEGER, version INTEGER,"
    " mean_staleness REAL, max_staleness INTEGER);"
    "CREATE INDEX IF NOT EXISTS server_stats_run ON server_stats(run_id);"
    "CREATE TABLE IF NOT EXISTS shard_stats("
    " run_id INTEGER NOT NULL, t REAL, shard INTEGER, version INTEGER, updates INTEGER,"
    " bytes_in INTEGER, bytes_out INTEGER, apply_seconds REAL);"
    "CREATE INDEX IF NOT EXISTS shard_stats_run ON shard_stats(run_id);"
    "CREATE TABLE IF NOT EXISTS events("
    " run_id INTEGER NOT NULL, t REAL, worker_id INTEGER, kind TEXT, detail TEXT);"
    "CREATE INDEX IF NOT EXISTS events_run ON events(run_id);";

/* The prepared statements, kept for the life of the connection. */
enum { S_RUN_BEGIN, S_RUN_END, S_WORKER, S_STEP, S_EPOCH, S_SERVER, S_SHARD, S_EVENT, S_COUNT };

static const char *const s_sql[S_COUNT] = {
    [S_RUN_BEGIN] = "INSERT INTO runs(mode, started_at, host, workers, epochs, batch_size, lr,"
                    " momentum, seed, threads, train_limit, staleness, dataset, model, status)"
                    " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,'running')",
    [S_RUN_END] = "UPDATE runs SET ended_at = ?, status = ?, final_accuracy = ?,"
                  " train_seconds = ? WHERE id = ?",
    /* A worker recorded again with the same incarnation (a resumed server
     * re-registering it) replaces its row instead of failing. */
    [S_WORKER] = "INSERT OR REPLACE INTO workers(run_id, worker_id, name, host, shard_size,"
                 " threads, incarnation, joined_at) VALUES(?,?,?,?,?,?,?,?)",
    [S_STEP] = "INSERT INTO steps(run_id, worker_id, step, epoch, loss, t) VALUES(?,?,?,?,?,?)",
    [S_EPOCH] = "INSERT INTO epochs(run_id, worker_id, epoch, train_loss, test_accuracy,"
                " epoch_seconds, compute_seconds, push_seconds, pull_seconds, wait_seconds,"
                " images, bytes_sent, bytes_received, t) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [S_SERVER] = "INSERT INTO server_stats(run_id, t, updates_applied, version, mean_staleness,"
                 " max_staleness) VALUES(?,?,?,?,?,?)",
    [S_SHARD] = "INSERT INTO shard_stats(run_id, t, shard, version, updates, bytes_in, bytes_out,"
                " apply_seconds) VALUES(?,?,?,?,?,?,?,?)",
    [S_EVENT] = "INSERT INTO events(run_id, t, worker_id, kind, detail) VALUES(?,?,?,?,?)",
};

struct metrics {
    sqlite3 *db;
    char *path; /* for messages */
    sqlite3_stmt *stmt[S_COUNT];
    /* metrics_set_journal: every row written is also handed to journal */
    metrics_journal_fn journal;
    void *journal_arg;
    metrics_value_t jv[METRICS_MAX_VALUES + 1];
    int jn;
    int batch_rows;     /* step rows in the open batch */
    double batch_start; /* monotonic seconds when the open batch began */
    char err[512];      /* the last error message */
    int version;        /* the database's schema version (PRAGMA user_version) */
};

static void s_seterr(metrics_t *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_seterr(metrics_t *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errmsg_vset(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
}

/* Records "metrics: <path>: <what>: <sqlite's message>" and returns -1. */
static int s_dberr(metrics_t *m, const char *what)
{
    s_seterr(m, "metrics: %s: %s: %s", m->path, what, sqlite3_errmsg(m->db));
    return -1;
}

/* Refuses a database written by a newer program: it may hold tables or
 * columns this one would misread or break. */
static int s_check_version(metrics_t *m, int v)
{
    if (v <= METRICS_SCHEMA_VERSION)
        return 0;
    s_seterr(m,
             "metrics: %s has schema version %d, newer than this program's %d; use a newer "
             "build, or another database file",
             m->path, v, METRICS_SCHEMA_VERSION);
    return -1;
}

static int s_exec(metrics_t *m, const char *sql, const char *what)
{
    return sqlite3_exec(m->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : s_dberr(m, what);
}

/* Steps one bound statement to completion and resets it (keeping it for
 * reuse). */
static int s_run(metrics_t *m, int which, const char *what)
{
    sqlite3_stmt *st = m->stmt[which];
    int rc = sqlite3_step(st);
    int ok = rc == SQLITE_DONE;
    if (!ok)
        s_dberr(m, what);
    else if (m->journal) {
        int n = m->jn;
        if (which == S_RUN_BEGIN) /* the id the run got, for the mirror's copy */
            m->jv[n++] = (metrics_value_t){.kind = 'i', .i = sqlite3_last_insert_rowid(m->db)};
        m->journal(m->journal_arg, which, m->jv, n);
    }
    m->jn = 0;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return ok ? 0 : -1;
}

/* Notes parameter i (from 1) of a write for the journal. */
static void s_note(metrics_t *m, int i, metrics_value_t v)
{
    if (i >= 1 && i <= METRICS_MAX_VALUES) {
        m->jv[i - 1] = v;
        if (i > m->jn)
            m->jn = i;
    }
}

static void s_bind_int(metrics_t *m, sqlite3_stmt *st, int i, int64_t v)
{
    sqlite3_bind_int64(st, i, (sqlite3_int64)v);
    s_note(m, i, (metrics_value_t){.kind = 'i', .i = v});
}

static void s_bind_real(metrics_t *m, sqlite3_stmt *st, int i, double v)
{
    sqlite3_bind_double(st, i, v);
    s_note(m, i, (metrics_value_t){.kind = 'd', .d = v});
}

static void s_bind_text(metrics_t *m, sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
    s_note(m, i, (metrics_value_t){.kind = s ? 's' : 'n', .s = s});
}

/* Reads PRAGMA user_version into *v. */
static int s_user_version(metrics_t *m, int *v)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(m->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return s_dberr(m, "read the schema version");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : s_dberr(m, "read the schema version");
}

/* Turns WAL on (a property of the file, kept across connections) and checks
 * that it took: some file systems cannot do WAL. */
static int s_set_wal(metrics_t *m)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(m->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        return s_dberr(m, "set WAL mode");
    int rc = sqlite3_step(st);
    int wal = rc == SQLITE_ROW && sqlite3_column_text(st, 0) &&
              !strcmp((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return s_dberr(m, "set WAL mode");
    if (!wal) {
        s_seterr(m, "metrics: %s: cannot use WAL mode here (is it on a network file system?)",
                 m->path);
        return -1;
    }
    return 0;
}

/* Checks the version and creates the schema, in one write transaction so that
 * two programs opening a new database at once do not both create it. */
static int s_init_schema(metrics_t *m)
{
    int v = 0;
    if (s_exec(m, "BEGIN IMMEDIATE", "lock the database to check its schema") < 0)
        return -1;
    if (s_user_version(m, &v) < 0 || s_check_version(m, v) < 0)
        goto fail;
    if (v < METRICS_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", METRICS_SCHEMA_VERSION);
        if ((v == 1 && s_exec(m, "ALTER TABLE runs ADD COLUMN model TEXT",
                              "add runs.model (version 2)") < 0) ||
            s_exec(m, s_schema, "create the schema") < 0 ||
            s_exec(m, sql, "set the schema version") < 0)
            goto fail;
    }
    return s_exec(m, "COMMIT", "commit the schema");
fail:
    sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

metrics_t *metrics_open(const char *path, char *err, size_t errlen)
{
    assert(path);
    metrics_t *m = calloc(1, sizeof *m);
    if (m && !(m->path = strdup(path))) {
        free(m);
        m = NULL;
    }
    if (!m) {
        if (err && errlen)
            errmsg_set(err, errlen, "metrics: %s: out of memory", path);
        return NULL;
    }
    /* Create the directory the database goes in, as a user would expect of
     * --db results/run1/metrics.db. */
    if (fs_mkdir_parent(path) != 0) {
        s_seterr(m, "metrics: cannot create the directory for %s: %s", path, strerror(errno));
        goto fail;
    }
    int rc = sqlite3_open_v2(path, &m->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        s_seterr(m, "metrics: cannot open %s: %s%s", path,
                 m->db ? sqlite3_errmsg(m->db) : sqlite3_errstr(rc),
                 rc == SQLITE_CANTOPEN ? " (does its directory exist?)" : "");
        goto fail;
    }
    sqlite3_busy_timeout(m->db, METRICS_BUSY_TIMEOUT_MS);
    /* The first statement reads the file: one that is not a database fails
     * here. The version is checked before WAL mode changes the file. */
    int v = 0;
    int in_memory = strcmp(path, ":memory:") == 0; /* no file: no WAL */
    if (s_user_version(m, &v) < 0 || s_check_version(m, v) < 0 ||
        (!in_memory && s_set_wal(m) < 0) ||
        s_exec(m, "PRAGMA synchronous=NORMAL", "set synchronous") < 0 || s_init_schema(m) < 0)
        goto fail;
    m->version = METRICS_SCHEMA_VERSION; /* s_init_schema brought it there */
    for (int i = 0; i < S_COUNT; i++) {
        if (sqlite3_prepare_v3(m->db, s_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &m->stmt[i], NULL) !=
            SQLITE_OK) {
            s_dberr(m, "prepare a statement");
            goto fail;
        }
    }
    return m;
fail:
    if (err && errlen)
        errmsg_set(err, errlen, "%s", m->err);
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(m->stmt[i]);
    sqlite3_close(m->db);
    free(m->path);
    free(m);
    return NULL;
}

int metrics_flush(metrics_t *m)
{
    assert(m);
    if (sqlite3_get_autocommit(m->db))
        return 0;
    if (s_exec(m, "COMMIT", "commit step rows") < 0)
        return -1;
    m->batch_rows = 0;
    return 0;
}

void metrics_close(metrics_t **pm)
{
    if (!pm || !*pm)
        return;
    metrics_t *m = *pm;
    if (metrics_flush(m) < 0) {
        fprintf(stderr, "warning: %s; the last step rows are lost\n", m->err);
        sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
    }
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(m->stmt[i]);
    if (sqlite3_close(m->db) != SQLITE_OK)
        fprintf(stderr, "warning: metrics: %s: close: %s\n", m->path, sqlite3_errmsg(m->db));
    free(m->path);
    free(m);
    *pm = NULL;
}

int64_t metrics_run_begin(metrics_t *m, const metrics_run_info_t *info)
{
    assert(m && info);
    if (metrics_flush(m) < 0)
        return -1;
    char host[256];
    const char *h = info->host;
    if (!h) {
        if (gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "unknown");
        host[sizeof host - 1] = '\0';
        h = host;
    }
    sqlite3_stmt *st = m->stmt[S_RUN_BEGIN];
    s_bind_text(m, st, 1, info->mode);
    s_bind_real(m, st, 2, clock_wall());
    s_bind_text(m, st, 3, h);
    s_bind_int(m, st, 4, info->workers);
    s_bind_int(m, st, 5, info->epochs);
    s_bind_int(m, st, 6, info->batch_size);
    s_bind_real(m, st, 7, info->lr);
    s_bind_real(m, st, 8, info->momentum);
    /* SQLite integers are signed: a seed above INT64_MAX reads back negative,
     * and casting it to uint64_t restores it. */
    s_bind_int(m, st, 9, (sqlite3_int64)info->seed);
    s_bind_int(m, st, 10, info->threads);
    s_bind_int(m, st, 11, info->train_limit);
    s_bind_int(m, st, 12, info->staleness);
    s_bind_text(m, st, 13, info->dataset);
    s_bind_text(m, st, 14, info->model);
    if (s_run(m, S_RUN_BEGIN, "insert run") < 0)
        return -1;
    return (int64_t)sqlite3_last_insert_rowid(m->db);
}

int metrics_run_end(metrics_t *m, int64_t run, const char *status, double final_accuracy,
                    double train_seconds)
{
    assert(m);
    if (metrics_flush(m) < 0)
        return -1;
    sqlite3_stmt *st = m->stmt[S_RUN_END];
    s_bind_real(m, st, 1, clock_wall());
    s_bind_text(m, st, 2, status);
    s_bind_real(m, st, 3, final_accuracy);
    s_bind_real(m, st, 4, train_seconds);
    s_bind_int(m, st, 5, run);
    if (s_run(m, S_RUN_END, "end run") < 0)
        return -1;
    if (sqlite3_changes(m->db) != 1) {
        s_seterr(m, "metrics: %s: end run: no run with id %lld", m->path, (long long)run);
        return -1;
    }
    return 0;
}

int metrics_worker(metrics_t *m, int64_t run, int worker_id, const char *name, const char *host,
                   int shard_size, int threads, int incarnation)
{
    assert(m);
    if (metrics_flush(m) < 0)
        return -1;
    sqlite3_stmt *st = m->stmt[S_WORKER];
    s_bind_int(m, st, 1, run);
    s_bind_int(m, st, 2, worker_id);
    s_bind_text(m, st, 3, name);
    s_bind_text(m, st, 4, host);
    s_bind_int(m, st, 5, shard_size);
    s_bind_int(m, st, 6, threads);
    s_bind_int(m, st, 7, incarnation);
    s_bind_real(m, st, 8, clock_wall());
    return s_run(m, S_WORKER, "insert worker");
}

int metrics_step(metrics_t *m, int64_t run, int worker_id, int64_t step, int epoch, double loss,
                 double t)
{
    assert(m);
    if (sqlite3_get_autocommit(m->db)) {
        if (s_exec(m, "BEGIN", "begin a batch of step rows") < 0)
            return -1;
        m->batch_rows = 0;
        m->batch_start = clock_now();
    }
    sqlite3_stmt *st = m->stmt[S_STEP];
    s_bind_int(m, st, 1, run);
    s_bind_int(m, st, 2, worker_id);
    s_bind_int(m, st, 3, step);
    s_bind_int(m, st, 4, epoch);
    s_bind_real(m, st, 5, loss);
    s_bind_real(m, st, 6, t);
    if (s_run(m, S_STEP, "insert step") < 0)
        return -1;
    m->batch_rows++;
    if (m->batch_rows >= METRICS_BATCH_ROWS ||
        clock_now() - m->batch_start >= METRICS_BATCH_SECONDS)
        return metrics_flush(m);
    return 0;
}

int metrics_epoch(metrics_t *m, int64_t run, int worker_id, const metrics_epoch_t *e, double t)
{
    assert(m && e);
    if (metrics_flush(m) < 0)
        return -1;
    sqlite3_stmt *st = m->stmt[S_EPOCH];
    s_bind_int(m, st, 1, run);
    s_bind_int(m, st, 2, worker_id);
    s_bind_int(m, st, 3, e->epoch);
    s_bind_real(m, st, 4, e->train_loss);
    s_bind_real(m, st, 5, e->test_accuracy);
    s_bind_real(m, st, 6, e->epoch_seconds);
    s_bind_real(m, st, 7, e->compute_seconds);
    s_bind_real(m, st, 8, e->push_seconds);
    s_bind_real(m, st, 9, e->pull_seconds);
    s_bind_real(m, st, 10, e->wait_seconds);
    s_bind_int(m, st, 11, e->images);
    s_bind_int(m, st, 12, e->bytes_sent);
    s_bind_int(m, st, 13, e->bytes_received);
    s_bind_real(m, st, 14, t);
    return s_run(m, S_EPOCH, "insert epoch");
}

int metrics_server_stats(metrics_t *m, int64_t run, double t, int64_t updates_applied,
                         int64_t version, double mean_staleness, int64_t max_staleness)
{
    assert(m);
    if (metrics_flush(m) < 0)
        return -1;
    sqlite3_stmt *st = m->stmt[S_SERVER];
    s_bind_int(m, st, 1, run);
    s_bind_real(m, st, 2, t);
    s_bind_int(m, st, 3, updates_applied);
    s_bind_int(m, st, 4, version);
    s_bind_real(m, st, 5, mean_staleness);
    s_bind_int(m, st, 6, max_staleness);
    return s_run(m, S_SERVER, "insert server stats");
}

int metrics_shard_stats(metrics_t *m, int64_t run, double t, int shard, int64_t version,
                        int64_t updates, int64_t bytes_in, int64_t bytes_out, double apply_seconds)
{
    assert(m);
    if (metrics_flush(m) < 0)
        return -1;
    sqlite3_stmt *st = m->stmt[S_SHARD];
    s_bind_int(m, st, 1, run);
    s_bind_real(m, st, 2, t);
    s_bind_int(m, st, 3, shard);
    s_bind_int(m, st, 4, version);
    s_bind_int(m, st, 5, updates);
    s_bind_int(m, st, 6, bytes_in);
    s_bind_int(m, st, 7, bytes_out);
    s_bind_real(m, st, 8, apply_seconds);
    return s_run(m, S_SHARD, "insert shard stats");
}

int metrics_event(metrics_t *m, int64_t run, double t, int worker_id, const char *kind,
                  const char *detail)
{
    assert(m);
    if (metrics_flush(m) < 0)
        return -1;
    sqlite3_stmt *st = m->stmt[S_EVENT];
    s_bind_int(m, st, 1, run);
    s_bind_real(m, st, 2, t);
    s_bind_int(m, st, 3, worker_id); /* -1, as given, when there is none */
    s_bind_text(m, st, 4, kind);
    s_bind_text(m, st, 5, detail);
    return s_run(m, S_EVENT, "insert event");
}

void metrics_set_journal(metrics_t *m, metrics_journal_fn fn, void *arg)
{
    m->journal = fn;
    m->journal_arg = arg;
}

/* Binds a journaled value to parameter i of st. */
static void s_bind_value(sqlite3_stmt *st, int i, const metrics_value_t *v)
{
    switch (v->kind) {
    case 'i': sqlite3_bind_int64(st, i, (sqlite3_int64)v->i); break;
    case 'd': sqlite3_bind_double(st, i, v->d); break;
    case 's': sqlite3_bind_text(st, i, v->s ? v->s : "", -1, SQLITE_TRANSIENT); break;
    default: sqlite3_bind_null(st, i); break;
    }
}

/* A run row with the id it had: the statement with an id column first. */
static int s_replay_run(metrics_t *m, const metrics_value_t *v, int n)
{
    const char *sql = s_sql[S_RUN_BEGIN], *cols = strchr(sql, '('), *vals = strstr(sql, "VALUES(");
    char own[1024];
    snprintf(own, sizeof own, "INSERT INTO runs(id, %.*sVALUES(?, %s", (int)(vals - cols - 1),
             cols + 1, vals + 7);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(m->db, own, -1, &st, NULL) != SQLITE_OK)
        return s_dberr(m, "prepare a mirrored run");
    int ok = n >= 1 && sqlite3_bind_parameter_count(st) == n;
    for (int i = 0; ok && i < n; i++)
        s_bind_value(st, i + 1, i == 0 ? &v[n - 1] : &v[i - 1]);
    if (!ok)
        s_seterr(m, "metrics: %s: a mirrored run row has %d values, not %d", m->path, n,
                 sqlite3_bind_parameter_count(st));
    else if (sqlite3_step(st) != SQLITE_DONE)
        ok = s_dberr(m, "insert a mirrored run (a standby needs a database of its own, without "
                        "that run id)") == 0;
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}

int metrics_row_progress(int statement, const metrics_value_t *v, int n, int *worker_id,
                         int64_t *step, int *epoch)
{
    /* S_STEP: run, worker, step, epoch, ...; S_EPOCH: run, worker, epoch, ... */
    if ((statement != S_STEP && statement != S_EPOCH) || n < 3 || v[1].kind != 'i' ||
        v[2].kind != 'i')
        return 0;
    *worker_id = (int)v[1].i;
    *step = statement == S_STEP ? v[2].i : 0;
    *epoch = statement == S_EPOCH ? (int)v[2].i : 0;
    return 1;
}

int metrics_replay(metrics_t *m, int which, const metrics_value_t *v, int n)
{
    assert(m && v);
    if (which < 0 || which >= S_COUNT) {
        s_seterr(m, "metrics: %s: no statement %d to mirror", m->path, which);
        return -1;
    }
    if (which == S_STEP && sqlite3_get_autocommit(m->db)) {
        if (s_exec(m, "BEGIN", "begin a batch of step rows") < 0)
            return -1;
        m->batch_rows = 0;
        m->batch_start = clock_now();
    } else if (which != S_STEP && metrics_flush(m) < 0)
        return -1;
    if (which == S_RUN_BEGIN)
        return s_replay_run(m, v, n);
    sqlite3_stmt *st = m->stmt[which];
    if (n != sqlite3_bind_parameter_count(st)) {
        s_seterr(m, "metrics: %s: a mirrored row of statement %d has %d values, not %d", m->path,
                 which, n, sqlite3_bind_parameter_count(st));
        return -1;
    }
    for (int i = 0; i < n; i++)
        s_bind_value(st, i + 1, &v[i]);
    if (s_run(m, which, "insert a mirrored row") < 0)
        return -1;
    if (which == S_STEP && (++m->batch_rows >= METRICS_BATCH_ROWS ||
                            clock_now() - m->batch_start >= METRICS_BATCH_SECONDS))
        return metrics_flush(m);
    return 0;
}

const char *metrics_errmsg(const metrics_t *m)
{
    return m ? m->err : "metrics: no database";
}

/* ---- Reading --------------------------------------------------------------- */

metrics_t *metrics_open_readonly(const char *path, char *err, size_t errlen)
{
    assert(path);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        errmsg_set(err, errlen,
                   "metrics: no database at %s (%s); training writes one (make basic, make run)",
                   path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        errmsg_set(err, errlen, "metrics: %s is not a regular file", path);
        return NULL;
    }
    metrics_t *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        errmsg_set(err, errlen, "metrics: %s: out of memory", path);
        return NULL;
    }
    int v = -1, tables = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(path, &m->db, SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        s_seterr(m, "metrics: cannot open %s: %s", path,
                 m->db ? sqlite3_errmsg(m->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(m->db, METRICS_BUSY_TIMEOUT_MS);
    if (s_user_version(m, &v) < 0) {
        s_seterr(m, "metrics: %s is not a readable SQLite database: %s", path,
                 sqlite3_errmsg(m->db));
        goto fail;
    }
    if (s_check_version(m, v) < 0)
        goto fail;
    m->version = v;
    if (sqlite3_prepare_v2(m->db,
                           "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                           "('runs', 'steps', 'epochs')",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        s_dberr(m, "read the list of tables");
        goto fail;
    }
    tables = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (tables != 3) {
        s_seterr(m, "metrics: %s is not a metrics database (no runs, steps or epochs table)", path);
        goto fail;
    }
    return m;
fail:
    errmsg_set(err, errlen, "%s", m->err);
    sqlite3_finalize(st);
    sqlite3_close(m->db);
    free(m->path);
    free(m);
    return NULL;
}

/* Prepares sql and binds run to ?1 when run > 0. NULL after recording why. */
static sqlite3_stmt *s_query(metrics_t *m, const char *sql, int64_t run)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(m->db, sql, -1, &st, NULL) != SQLITE_OK) {
        s_dberr(m, "prepare a query");
        return NULL;
    }
    if (run > 0)
        sqlite3_bind_int64(st, 1, run);
    return st;
}

/* Finishes a query stepped until rc: 0 if it ran to the end, else -1. */
static int s_query_end(metrics_t *m, sqlite3_stmt *st, int rc, const char *what)
{
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : s_dberr(m, what);
}

static double s_col_real(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

static void s_col_text(sqlite3_stmt *st, int i, char *buf, size_t len, const char *dflt)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(buf, len, "%s", t ? (const char *)t : dflt);
}

int metrics_run_get(metrics_t *m, int64_t id, metrics_run_row_t *out)
{
    assert(m && out);
    /* A version 1 database (read-only: not upgraded) has no model column;
     * a run without one may name its model in an event "model" (basic). */
    sqlite3_stmt *st = s_query(
        m,
        m->version >= 2
            ? "SELECT mode, host, status, started_at, lr, momentum, final_accuracy, train_seconds, "
              "workers, epochs, batch_size, threads, staleness, seed, train_limit, dataset, "
              "coalesce(model, (SELECT detail FROM events WHERE run_id = ?1 AND kind = 'model')) "
              "FROM runs WHERE id = ?1"
            : "SELECT mode, host, status, started_at, lr, momentum, final_accuracy, train_seconds, "
              "workers, epochs, batch_size, threads, staleness, seed, train_limit, dataset, "
              "(SELECT detail FROM events WHERE run_id = ?1 AND kind = 'model') "
              "FROM runs WHERE id = ?1",
        id);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return s_query_end(m, st, rc, "read a run") < 0 ? -1 : 0;
    memset(out, 0, sizeof *out);
    out->id = id;
    s_col_text(st, 0, out->mode, sizeof out->mode, "?");
    s_col_text(st, 1, out->host, sizeof out->host, "");
    s_col_text(st, 2, out->status, sizeof out->status, "?");
    out->started_at = s_col_real(st, 3);
    out->lr = s_col_real(st, 4);
    out->momentum = s_col_real(st, 5);
    out->final_accuracy = s_col_real(st, 6);
    out->train_seconds = s_col_real(st, 7);
    out->workers = sqlite3_column_int(st, 8);
    out->epochs = sqlite3_column_int(st, 9);
    out->batch_size = sqlite3_column_int(st, 10);
    out->threads = sqlite3_column_int(st, 11);
    out->staleness = sqlite3_column_int(st, 12);
    out->seed = (uint64_t)sqlite3_column_int64(st, 13); /* stored signed: see run_begin */
    out->train_limit = sqlite3_column_int(st, 14);
    s_col_text(st, 15, out->dataset, sizeof out->dataset, "");
    s_col_text(st, 16, out->model, sizeof out->model, "");
    sqlite3_finalize(st);
    return 1;
}

int64_t metrics_run_latest(metrics_t *m)
{
    assert(m);
    sqlite3_stmt *st = s_query(m, "SELECT coalesce(max(id), 0) FROM runs", 0);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    int64_t id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return id >= 0 ? id : s_dberr(m, "find the latest run");
}

int metrics_runs_latest_per_mode(metrics_t *m, int64_t *ids, int max)
{
    assert(m && ids);
    /* A run's model: its column (version 2), else its event "model", else
     * SimpleConvNet (every run from before models). */
    char sql[1024];
    snprintf(sql, sizeof sql,
             "WITH t AS (SELECT r.id, r.mode, coalesce(%s(SELECT detail FROM events v WHERE "
             "v.run_id = r.id AND v.kind = 'model'), 'simpleconvnet') AS model FROM runs r "
             "WHERE EXISTS (SELECT 1 FROM epochs e WHERE e.run_id = r.id)) "
             "SELECT max(id) FROM t WHERE model = (SELECT model FROM t ORDER BY id DESC LIMIT 1) "
             "GROUP BY mode ORDER BY CASE mode WHEN 'basic' THEN 0 WHEN 'sync' THEN 1 "
             "WHEN 'async' THEN 2 WHEN 'ssp' THEN 3 ELSE 4 END, mode",
             m->version >= 2 ? "r.model, " : "");
    sqlite3_stmt *st = s_query(m, sql, 0);
    if (!st)
        return -1;
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max)
        ids[n++] = sqlite3_column_int64(st, 0);
    if (rc == SQLITE_ROW)
        rc = SQLITE_DONE; /* more modes than room: the first max */
    return s_query_end(m, st, rc, "find the latest run of each mode") < 0 ? -1 : n;
}

int metrics_runs_each(metrics_t *m, metrics_run_fn fn, void *ctx)
{
    assert(m && fn);
    sqlite3_stmt *st = s_query(m,
                               "SELECT id, mode, status, (SELECT count(*) FROM steps s WHERE "
                               "s.run_id = r.id) FROM runs r ORDER BY id",
                               0);
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char mode[32], status[32];
        s_col_text(st, 1, mode, sizeof mode, "?");
        s_col_text(st, 2, status, sizeof status, "?");
        fn(ctx, sqlite3_column_int64(st, 0), mode, status, sqlite3_column_int64(st, 3));
    }
    return s_query_end(m, st, rc, "list the runs");
}

int64_t metrics_steps_each(metrics_t *m, int64_t run, metrics_point_fn fn, void *ctx)
{
    assert(m && fn);
    sqlite3_stmt *st = s_query(m,
                               "SELECT worker_id, step, loss FROM steps WHERE run_id = ?1 AND "
                               "loss IS NOT NULL ORDER BY worker_id, step",
                               run);
    if (!st)
        return -1;
    int64_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fn(ctx, sqlite3_column_int(st, 0), sqlite3_column_double(st, 1),
           sqlite3_column_double(st, 2));
        n++;
    }
    return s_query_end(m, st, rc, "read the steps") < 0 ? -1 : n;
}

int metrics_epochs_each(metrics_t *m, int64_t run, metrics_point_fn acc, metrics_point_fn secs,
                        void *ctx)
{
    assert(m);
    sqlite3_stmt *st = s_query(m,
                               "SELECT worker_id, epoch, test_accuracy, epoch_seconds FROM epochs "
                               "WHERE run_id = ?1 ORDER BY worker_id, epoch",
                               run);
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int w = sqlite3_column_int(st, 0);
        double epoch = sqlite3_column_double(st, 1), a = s_col_real(st, 2), s = s_col_real(st, 3);
        if (acc && isfinite(a))
            acc(ctx, w, epoch, a);
        if (secs && isfinite(s))
            secs(ctx, w, epoch, s);
    }
    return s_query_end(m, st, rc, "read the epochs");
}

int metrics_epoch_means_each(metrics_t *m, int64_t run, metrics_mean_fn fn, void *ctx)
{
    assert(m && fn);
    sqlite3_stmt *st = s_query(m,
                               "SELECT avg(t), avg(test_accuracy), count(*) FROM epochs WHERE "
                               "run_id = ?1 AND test_accuracy IS NOT NULL GROUP BY epoch "
                               "ORDER BY epoch",
                               run);
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(ctx, s_col_real(st, 0), s_col_real(st, 1), sqlite3_column_int(st, 2));
    return s_query_end(m, st, rc, "average the epochs");
}

/* Runs a query of one real value for run into *out. */
static int s_query_real(metrics_t *m, const char *sql, int64_t run, double *out, const char *what)
{
    sqlite3_stmt *st = s_query(m, sql, run);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? s_col_real(st, 0) : NAN;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : s_dberr(m, what);
}

int metrics_run_images(metrics_t *m, int64_t run, double *out)
{
    assert(m && out);
    return s_query_real(m, "SELECT sum(images) FROM epochs WHERE run_id = ?1", run, out,
                        "count the images");
}

int metrics_run_comm_share(metrics_t *m, int64_t run, double *out)
{
    assert(m && out);
    return s_query_real(m,
                        "SELECT sum(push_seconds + pull_seconds) / sum(epoch_seconds) FROM epochs "
                        "WHERE run_id = ?1 AND epoch_seconds > 0",
                        run, out, "read the communication time");
}

int metrics_shards_each(metrics_t *m, int64_t run, metrics_shard_fn fn, void *ctx)
{
    assert(m && fn);
    double tables = 0;
    if (s_query_real(m,
                     "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = "
                     "'shard_stats' AND ?1 = ?1",
                     run, &tables, "look for the servers' figures") != 0)
        return -1;
    if (tables == 0)
        return 0; /* a database older than server groups, opened read-only */
    sqlite3_stmt *st = s_query(m,
                               "SELECT shard, bytes_in, bytes_out, updates, apply_seconds FROM "
                               "shard_stats s WHERE run_id = ?1 AND t = (SELECT max(t) FROM "
                               "shard_stats WHERE run_id = ?1 AND shard = s.shard) GROUP BY shard "
                               "ORDER BY shard",
                               run);
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(ctx, sqlite3_column_int(st, 0), s_col_real(st, 1), s_col_real(st, 2), s_col_real(st, 3),
           s_col_real(st, 4));
    return s_query_end(m, st, rc, "read the servers' figures");
}

int metrics_failovers_each(metrics_t *m, int64_t run, metrics_failover_fn fn, void *ctx)
{
    assert(m && fn);
    sqlite3_stmt *st = s_query(m,
                               "SELECT e.t, (SELECT min(step) FROM steps s WHERE s.run_id = ?1 AND "
                               "s.worker_id = (SELECT min(worker_id) FROM steps WHERE run_id = ?1) "
                               "AND s.t >= e.t) FROM events e WHERE e.run_id = ?1 AND e.kind = "
                               "'failover' ORDER BY e.t",
                               run);
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(ctx, s_col_real(st, 0), s_col_real(st, 1));
    return s_query_end(m, st, rc, "read the fail-overs");
}

int metrics_study_each(metrics_t *m, metrics_study_fn fn, void *ctx)
{
    assert(m && fn);
    sqlite3_stmt *st = s_query(m,
                               "SELECT id, coalesce(run_id, 0), model, mode, compress, status, "
                               "workers FROM study_runs ORDER BY id",
                               0);
    if (!st)
        return -1;
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        metrics_study_row_t r = {.id = sqlite3_column_int64(st, 0),
                                 .run_id = sqlite3_column_int64(st, 1),
                                 .workers = sqlite3_column_int(st, 6)};
        s_col_text(st, 2, r.model, sizeof r.model, "?");
        s_col_text(st, 3, r.mode, sizeof r.mode, "?");
        s_col_text(st, 4, r.compress, sizeof r.compress, "?");
        s_col_text(st, 5, r.status, sizeof r.status, "?");
        fn(ctx, &r);
        n++;
    }
    return s_query_end(m, st, rc, "read the study's runs (table study_runs)") < 0 ? -1 : n;
}

int metrics_run_last_t(metrics_t *m, int64_t run, double *out)
{
    assert(m && out);
    return s_query_real(m,
                        "SELECT max(t) FROM (SELECT max(t) AS t FROM steps WHERE run_id = ?1 "
                        "UNION ALL SELECT max(t) FROM epochs WHERE run_id = ?1)",
                        run, out, "read the latest time");
}
