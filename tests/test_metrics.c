/* test_metrics: the SQLite metrics writer, and the queries the report
 * reads it with (metrics_open_readonly and the functions after it).
 *
 * Everything written is read back through a second, plain sqlite3 connection,
 * as psreport would: every column of every table, the WAL mode and schema
 * version, the refusal of newer schemas, and the durability contract: step
 * rows become visible to another connection exactly when a batch is committed
 * (after METRICS_BATCH_ROWS rows, METRICS_BATCH_SECONDS seconds, any other
 * write, a flush, or close), and a reader holding a transaction open does not
 * block the writer. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "clock.h"
#include "metrics.h"
#include "tmpdir.h"

static int s_setup(void **state)
{
    return tmpdir_setup(state, "test_metrics", "metrics.db");
}

static metrics_t *s_open(const char *path)
{
    char err[512] = "";
    metrics_t *m = metrics_open(path, err, sizeof err);
    if (!m)
        fail_msg("metrics_open: %s", err);
    return m;
}

/* A second connection, as psreport would open one. */
static sqlite3 *s_reader(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        fail_msg("open reader: %s", sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static sqlite3_stmt *s_query(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("prepare '%s': %s", sql, sqlite3_errmsg(db));
    return st;
}

static void s_row(sqlite3 *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        fail_msg("expected a row: %s", sqlite3_errmsg(db));
}

static void s_done(sqlite3_stmt *st)
{
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

static int64_t s_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = s_query(db, sql);
    s_row(db, st);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void s_text(sqlite3 *db, const char *sql, char *out, size_t n)
{
    sqlite3_stmt *st = s_query(db, sql);
    s_row(db, st);
    const unsigned char *s = sqlite3_column_text(st, 0);
    snprintf(out, n, "%s", s ? (const char *)s : "(null)");
    sqlite3_finalize(st);
}

static void s_expect_text(sqlite3_stmt *st, int col, const char *want)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    if (!want) {
        assert_int_equal(sqlite3_column_type(st, col), SQLITE_NULL);
        return;
    }
    assert_non_null(s);
    assert_string_equal((const char *)s, want);
}

#define N_STEPS 1234

/* Every table written through the writer (a run, its workers, steps across
 * batches, epochs, server figures, events) and every column read back with
 * plain SQL, then the database reopened. Over 80 lines: one scenario whose
 * checks read against the writes above them; split, each part would need
 * the same writes again. */
static void test_round_trip(void **state)
{
    tmpdir_t *tmp = *state;
    double t0 = clock_wall();
    metrics_t *m = s_open(tmp->path);
    metrics_run_info_t info = {
        .mode = "sync",
        .host = NULL, /* gethostname() */
        .dataset = "data/mnist",
        .workers = 2,
        .epochs = 5,
        .batch_size = 64,
        .threads = 2,
        .train_limit = 6000,
        .staleness = 3,
        .lr = 0.01,
        .momentum = 0.9,
        .seed = UINT64_C(0xfedcba9876543210), /* above INT64_MAX */
    };
    int64_t run = metrics_run_begin(m, &info);
    assert_true(run > 0);
    assert_int_equal(metrics_worker(m, run, 0, "w0", "hostA", 30000, 1, 0), 0);
    assert_int_equal(metrics_worker(m, run, 1, "w1", NULL, 30000, 2, 0), 0);
    assert_int_equal(metrics_worker(m, run, 1, "w1", "hostB", 29999, 2, 1), 0);
    for (int i = 0; i < N_STEPS; i++)
        assert_int_equal(metrics_step(m, run, i % 2, i, 1 + i / 500, 2.5 - i * 1e-3, i * 0.01), 0);
    for (int w = 0; w < 2; w++) {
        for (int ep = 1; ep <= 2; ep++) {
            metrics_epoch_t e = {
                .epoch = ep,
                .train_loss = 0.5 / ep + w,
                .test_accuracy = 97.5 + ep,
                .epoch_seconds = 40.25 + w,
                .compute_seconds = 30.5,
                .push_seconds = 2.125,
                .pull_seconds = 3.0625,
                .wait_seconds = 4.5,
                .images = 30000 + w,
                .bytes_sent = INT64_C(5000000000) + ep,
                .bytes_received = INT64_C(6000000000) + ep,
            };
            assert_int_equal(metrics_epoch(m, run, w, &e, 41.0 * ep), 0);
        }
    }
    assert_int_equal(metrics_server_stats(m, run, 12.5, 1000, 1001, 0.75, 4), 0);
    assert_int_equal(metrics_server_stats(m, run, 25.0, INT64_C(3000000000), 2001, 1.5, 9), 0);
    assert_int_equal(metrics_event(m, run, 3.25, 1, "evict", "no heartbeat for 10 s"), 0);
    assert_int_equal(metrics_event(m, run, 4.5, -1, "resume", NULL), 0);
    assert_int_equal(metrics_run_end(m, run, "done", 98.75, 201.5), 0);
    metrics_close(&m);
    assert_null(m);
    metrics_close(&m); /* idempotent */
    double t1 = clock_wall();

    sqlite3 *db = s_reader(tmp->path);
    char host[256] = "";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';

    sqlite3_stmt *st = s_query(db, "SELECT id, mode, started_at, ended_at, host, workers, epochs,"
                                   " batch_size, lr, momentum, seed, threads, train_limit,"
                                   " staleness, dataset, status, final_accuracy, train_seconds"
                                   " FROM runs");
    s_row(db, st);
    assert_int_equal(sqlite3_column_int64(st, 0), run);
    s_expect_text(st, 1, "sync");
    double started = sqlite3_column_double(st, 2), ended = sqlite3_column_double(st, 3);
    assert_true(started >= t0 - 1 && started <= ended && ended <= t1 + 1);
    s_expect_text(st, 4, host);
    assert_int_equal(sqlite3_column_int(st, 5), 2);
    assert_int_equal(sqlite3_column_int(st, 6), 5);
    assert_int_equal(sqlite3_column_int(st, 7), 64);
    assert_true(sqlite3_column_double(st, 8) == 0.01);
    assert_true(sqlite3_column_double(st, 9) == 0.9);
    assert_true((uint64_t)sqlite3_column_int64(st, 10) == info.seed);
    assert_int_equal(sqlite3_column_int(st, 11), 2);
    assert_int_equal(sqlite3_column_int(st, 12), 6000);
    assert_int_equal(sqlite3_column_int(st, 13), 3);
    s_expect_text(st, 14, "data/mnist");
    s_expect_text(st, 15, "done");
    assert_true(sqlite3_column_double(st, 16) == 98.75);
    assert_true(sqlite3_column_double(st, 17) == 201.5);
    s_done(st);

    st = s_query(db, "SELECT run_id, worker_id, name, host, shard_size, threads, incarnation,"
                     " joined_at FROM workers ORDER BY worker_id, incarnation");
    static const struct {
        int id, shard, threads, inc;
        const char *name, *host;
    } wk[] = {{0, 30000, 1, 0, "w0", "hostA"},
              {1, 30000, 2, 0, "w1", NULL},
              {1, 29999, 2, 1, "w1", "hostB"}};
    for (int i = 0; i < 3; i++) {
        s_row(db, st);
        assert_int_equal(sqlite3_column_int64(st, 0), run);
        assert_int_equal(sqlite3_column_int(st, 1), wk[i].id);
        s_expect_text(st, 2, wk[i].name);
        s_expect_text(st, 3, wk[i].host);
        assert_int_equal(sqlite3_column_int(st, 4), wk[i].shard);
        assert_int_equal(sqlite3_column_int(st, 5), wk[i].threads);
        assert_int_equal(sqlite3_column_int(st, 6), wk[i].inc);
        double j = sqlite3_column_double(st, 7);
        assert_true(j >= t0 - 1 && j <= t1 + 1);
    }
    s_done(st);

    st = s_query(db, "SELECT run_id, worker_id, step, epoch, loss, t FROM steps ORDER BY step");
    for (int i = 0; i < N_STEPS; i++) {
        s_row(db, st);
        assert_int_equal(sqlite3_column_int64(st, 0), run);
        assert_int_equal(sqlite3_column_int(st, 1), i % 2);
        assert_int_equal(sqlite3_column_int64(st, 2), i);
        assert_int_equal(sqlite3_column_int(st, 3), 1 + i / 500);
        assert_true(sqlite3_column_double(st, 4) == 2.5 - i * 1e-3);
        assert_true(sqlite3_column_double(st, 5) == i * 0.01);
    }
    s_done(st);

    st = s_query(db, "SELECT run_id, worker_id, epoch, train_loss, test_accuracy, epoch_seconds,"
                     " compute_seconds, push_seconds, pull_seconds, wait_seconds, images,"
                     " bytes_sent, bytes_received, t FROM epochs ORDER BY worker_id, epoch");
    for (int w = 0; w < 2; w++) {
        for (int ep = 1; ep <= 2; ep++) {
            s_row(db, st);
            assert_int_equal(sqlite3_column_int64(st, 0), run);
            assert_int_equal(sqlite3_column_int(st, 1), w);
            assert_int_equal(sqlite3_column_int(st, 2), ep);
            assert_true(sqlite3_column_double(st, 3) == 0.5 / ep + w);
            assert_true(sqlite3_column_double(st, 4) == 97.5 + ep);
            assert_true(sqlite3_column_double(st, 5) == 40.25 + w);
            assert_true(sqlite3_column_double(st, 6) == 30.5);
            assert_true(sqlite3_column_double(st, 7) == 2.125);
            assert_true(sqlite3_column_double(st, 8) == 3.0625);
            assert_true(sqlite3_column_double(st, 9) == 4.5);
            assert_int_equal(sqlite3_column_int64(st, 10), 30000 + w);
            assert_int_equal(sqlite3_column_int64(st, 11), INT64_C(5000000000) + ep);
            assert_int_equal(sqlite3_column_int64(st, 12), INT64_C(6000000000) + ep);
            assert_true(sqlite3_column_double(st, 13) == 41.0 * ep);
        }
    }
    s_done(st);

    st = s_query(db, "SELECT run_id, t, updates_applied, version, mean_staleness, max_staleness"
                     " FROM server_stats ORDER BY t");
    s_row(db, st);
    assert_int_equal(sqlite3_column_int64(st, 0), run);
    assert_true(sqlite3_column_double(st, 1) == 12.5);
    assert_int_equal(sqlite3_column_int64(st, 2), 1000);
    assert_int_equal(sqlite3_column_int64(st, 3), 1001);
    assert_true(sqlite3_column_double(st, 4) == 0.75);
    assert_int_equal(sqlite3_column_int64(st, 5), 4);
    s_row(db, st);
    assert_true(sqlite3_column_double(st, 1) == 25.0);
    assert_int_equal(sqlite3_column_int64(st, 2), INT64_C(3000000000));
    assert_int_equal(sqlite3_column_int64(st, 3), 2001);
    assert_true(sqlite3_column_double(st, 4) == 1.5);
    assert_int_equal(sqlite3_column_int64(st, 5), 9);
    s_done(st);

    st = s_query(db, "SELECT run_id, t, worker_id, kind, detail FROM events ORDER BY t");
    s_row(db, st);
    assert_int_equal(sqlite3_column_int64(st, 0), run);
    assert_true(sqlite3_column_double(st, 1) == 3.25);
    assert_int_equal(sqlite3_column_int(st, 2), 1);
    s_expect_text(st, 3, "evict");
    s_expect_text(st, 4, "no heartbeat for 10 s");
    s_row(db, st);
    assert_true(sqlite3_column_double(st, 1) == 4.5);
    assert_int_equal(sqlite3_column_int(st, 2), -1);
    s_expect_text(st, 3, "resume");
    s_expect_text(st, 4, NULL);
    s_done(st);
    sqlite3_close(db);

    /* Reopening keeps everything; the next run gets the next id. */
    m = s_open(tmp->path);
    info.host = "explicit";
    int64_t run2 = metrics_run_begin(m, &info);
    assert_int_equal(run2, run + 1);
    metrics_close(&m);
    db = s_reader(tmp->path);
    char text[64];
    s_text(db,
           "SELECT host || '/' || status || '/' || ifnull(ended_at, 'null') FROM runs"
           " WHERE id = 2",
           text, sizeof text);
    assert_string_equal(text, "explicit/running/null");
    assert_int_equal(s_int(db, "SELECT count(*) FROM steps"), N_STEPS);
    sqlite3_close(db);
}

static void test_wal_version_indexes(void **state)
{
    tmpdir_t *tmp = *state;
    metrics_t *m = s_open(tmp->path);
    metrics_close(&m);
    sqlite3 *db = s_reader(tmp->path);
    char mode[32];
    s_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "wal");
    assert_int_equal(s_int(db, "PRAGMA user_version"), METRICS_SCHEMA_VERSION);
    assert_int_equal(s_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND"
                               " name IN ('steps_run_worker', 'epochs_run_worker')"),
                     2);
    /* psreport's per-worker queries use the index (detail is the 4th column). */
    sqlite3_stmt *st = s_query(db, "EXPLAIN QUERY PLAN SELECT loss FROM steps"
                                   " WHERE run_id = 1 AND worker_id = 0");
    s_row(db, st);
    assert_non_null(strstr((const char *)sqlite3_column_text(st, 3), "steps_run_worker"));
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void test_newer_schema_refused(void **state)
{
    tmpdir_t *tmp = *state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(tmp->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "CREATE TABLE future(x); PRAGMA user_version = 3;", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    char err[512] = "";
    metrics_t *m = metrics_open(tmp->path, err, sizeof err);
    assert_null(m);
    assert_non_null(strstr(err, "newer"));
    assert_non_null(strstr(err, "version 3"));
    assert_non_null(strstr(err, tmp->path));

    /* The refused file is left as it was: not switched to WAL, no tables added. */
    db = s_reader(tmp->path);
    char mode[32];
    s_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "delete");
    assert_int_equal(s_int(db, "SELECT count(*) FROM sqlite_master"), 1);
    sqlite3_close(db);
}

static metrics_t *s_open_ro(const char *path)
{
    char err[512] = "";
    metrics_t *m = metrics_open_readonly(path, err, sizeof err);
    if (!m)
        fail_msg("metrics_open_readonly: %s", err);
    return m;
}

/* A database of schema version 1 (no runs.model): read as it is, its runs'
 * model ""; opened for writing, it gets the column and version 2, and its
 * old run stays readable. */
static void test_version_1_upgraded(void **state)
{
    tmpdir_t *tmp = *state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(tmp->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "CREATE TABLE runs(id INTEGER PRIMARY KEY, mode TEXT, started_at REAL,"
                     " ended_at REAL, host TEXT, workers INTEGER, epochs INTEGER, batch_size"
                     " INTEGER, lr REAL, momentum REAL, seed INTEGER, threads INTEGER, train_limit"
                     " INTEGER, staleness INTEGER, dataset TEXT, status TEXT, final_accuracy REAL,"
                     " train_seconds REAL);"
                     "CREATE TABLE steps(run_id INTEGER NOT NULL, worker_id INTEGER NOT NULL,"
                     " step INTEGER, epoch INTEGER, loss REAL, t REAL);"
                     "CREATE TABLE epochs(run_id INTEGER NOT NULL, worker_id INTEGER NOT NULL,"
                     " epoch INTEGER, train_loss REAL, test_accuracy REAL, epoch_seconds REAL,"
                     " compute_seconds REAL, push_seconds REAL, pull_seconds REAL,"
                     " wait_seconds REAL, images INTEGER, bytes_sent INTEGER,"
                     " bytes_received INTEGER, t REAL);"
                     "CREATE TABLE events(run_id INTEGER NOT NULL, t REAL, worker_id INTEGER,"
                     " kind TEXT, detail TEXT);"
                     "INSERT INTO runs(mode, status) VALUES('sync', 'done');"
                     "PRAGMA user_version = 1;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    metrics_run_row_t row;
    metrics_t *m = s_open_ro(tmp->path);
    assert_int_equal(metrics_run_get(m, 1, &row), 1);
    assert_string_equal(row.mode, "sync");
    assert_string_equal(row.model, "");
    metrics_close(&m);

    m = s_open(tmp->path);
    metrics_run_info_t info = {.mode = "async", .model = "mlp"};
    int64_t run = metrics_run_begin(m, &info);
    assert_int_equal(run, 2);
    metrics_close(&m);
    db = s_reader(tmp->path);
    assert_int_equal(s_int(db, "PRAGMA user_version"), METRICS_SCHEMA_VERSION);
    sqlite3_close(db);
    m = s_open_ro(tmp->path);
    assert_int_equal(metrics_run_get(m, 2, &row), 1);
    assert_string_equal(row.model, "mlp");
    assert_int_equal(metrics_run_get(m, 1, &row), 1);
    assert_string_equal(row.model, "");
    metrics_close(&m);
}

static void test_open_errors(void **state)
{
    tmpdir_t *tmp = *state;
    char err[512] = "";
    FILE *fp = fopen(tmp->path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 100; i++)
        fputs("this is not a database\n", fp);
    fclose(fp);
    assert_null(metrics_open(tmp->path, err, sizeof err));
    assert_non_null(strstr(err, "not a database"));
    assert_non_null(strstr(err, tmp->path));

    /* A missing directory is created... */
    char path[192];
    snprintf(path, sizeof path, "%s/no/such/dir/m.db", tmp->dir);
    metrics_t *m = metrics_open(path, err, sizeof err);
    assert_non_null(m);
    metrics_close(&m);
    /* ...one that cannot be (its parent is a file) is an error naming it. */
    snprintf(path, sizeof path, "%s/sub/m.db", tmp->path);
    assert_null(metrics_open(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "cannot create the directory"));
    assert_null(metrics_open(path, NULL, 0));
    assert_string_equal(metrics_errmsg(NULL), "metrics: no database");
}

static void test_run_end_unknown(void **state)
{
    tmpdir_t *tmp = *state;
    metrics_t *m = s_open(tmp->path);
    assert_int_equal(metrics_run_end(m, 99, "done", 0, 0), -1);
    assert_non_null(strstr(metrics_errmsg(m), "no run with id 99"));
    metrics_close(&m);
}

/* Step rows reach other connections batch by batch. */
static void test_step_batching(void **state)
{
    tmpdir_t *tmp = *state;
    metrics_t *m = s_open(tmp->path);
    metrics_run_info_t info = {.mode = "basic", .host = "h"};
    int64_t run = metrics_run_begin(m, &info);
    assert_true(run > 0);
    sqlite3 *db = s_reader(tmp->path);
    const char *count = "SELECT count(*) FROM steps";

    double start = clock_now();
    for (int i = 0; i < METRICS_BATCH_ROWS - 1; i++)
        assert_int_equal(metrics_step(m, run, 0, i, 1, 1.0, 0.0), 0);
    assert_int_equal(s_int(db, count), 0);
    assert_int_equal(metrics_step(m, run, 0, METRICS_BATCH_ROWS - 1, 1, 1.0, 0.0), 0);
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS);
    for (int i = 0; i < 10; i++)
        assert_int_equal(metrics_step(m, run, 0, METRICS_BATCH_ROWS + i, 1, 1.0, 0.0), 0);
    /* Only meaningful if the batch was not cut short by the clock. */
    if (clock_now() - start < METRICS_BATCH_SECONDS * 0.9)
        assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS);
    assert_int_equal(metrics_flush(m), 0);
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS + 10);
    assert_int_equal(metrics_flush(m), 0); /* nothing to commit */

    /* Any other write commits the open batch first. */
    assert_int_equal(metrics_step(m, run, 0, 9999, 1, 1.0, 0.0), 0);
    assert_int_equal(metrics_event(m, run, 1.0, 0, "x", "y"), 0);
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS + 11);
    assert_int_equal(s_int(db, "SELECT count(*) FROM events"), 1);

    /* A batch older than METRICS_BATCH_SECONDS is committed by the next step. */
    assert_int_equal(metrics_step(m, run, 0, 10000, 1, 1.0, 0.0), 0);
    double begun = clock_now();
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS + 11);
    while (clock_now() - begun < METRICS_BATCH_SECONDS + 0.05) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(metrics_step(m, run, 0, 10001, 1, 1.0, 0.0), 0);
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS + 13);

    /* metrics_close commits what is buffered. */
    for (int i = 0; i < 7; i++)
        assert_int_equal(metrics_step(m, run, 1, i, 2, 0.5, 1.0), 0);
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS + 13);
    metrics_close(&m);
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS + 20);
    sqlite3_close(db);
}

/* A reader in the middle of a read transaction (psreport drawing a plot)
 * blocks neither step batches nor other writes. */
static void test_reader_does_not_block(void **state)
{
    tmpdir_t *tmp = *state;
    metrics_t *m = s_open(tmp->path);
    metrics_run_info_t info = {.mode = "basic"};
    int64_t run = metrics_run_begin(m, &info);
    sqlite3 *db = s_reader(tmp->path);
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(s_int(db, "SELECT count(*) FROM runs"), 1);
    double start = clock_now();
    for (int i = 0; i < 3 * METRICS_BATCH_ROWS; i++)
        assert_int_equal(metrics_step(m, run, 0, i, 1, 1.0, 0.0), 0);
    assert_int_equal(metrics_run_end(m, run, "done", 99.0, 1.0), 0);
    assert_true(clock_now() - start < 1.0); /* no busy wait happened */
    /* The reader's snapshot is unchanged until it ends its transaction. */
    assert_int_equal(s_int(db, "SELECT count(*) FROM steps"), 0);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(s_int(db, "SELECT count(*) FROM steps"), 3 * METRICS_BATCH_ROWS);
    sqlite3_close(db);
    metrics_close(&m);
}

/* ---- reading ---------------------------------------------------------- */

/* What the read callbacks saw, as text: "w0 (1,2.5) w1 ...". */
typedef struct {
    char s[2048];
} s_seen_t;

static void s_seen_point(void *ctx, int worker_id, double x, double y)
{
    s_seen_t *seen = ctx;
    size_t n = strlen(seen->s);
    snprintf(seen->s + n, sizeof seen->s - n, "%sw%d(%g,%g)", n ? " " : "", worker_id, x, y);
}

static void s_seen_secs(void *ctx, int worker_id, double x, double y)
{
    s_seen_point((char *)ctx + sizeof(s_seen_t), worker_id, x, y);
}

static void s_seen_mean(void *ctx, double t, double accuracy, int workers)
{
    s_seen_t *seen = ctx;
    size_t n = strlen(seen->s);
    snprintf(seen->s + n, sizeof seen->s - n, "%s(%g,%g,%d)", n ? " " : "", t, accuracy, workers);
}

static void s_seen_run(void *ctx, int64_t id, const char *mode, const char *status, int64_t steps)
{
    s_seen_t *seen = ctx;
    size_t n = strlen(seen->s);
    snprintf(seen->s + n, sizeof seen->s - n, "%s%lld:%s:%s:%lld", n ? " " : "", (long long)id,
             mode, status, (long long)steps);
}

/* Two runs written through the writer, read back through the queries. Over
 * 80 lines for the same reason as test_round_trip: one scenario. */
static void test_read_queries(void **state)
{
    tmpdir_t *tmp = *state;
    metrics_t *w = s_open(tmp->path);
    metrics_run_info_t basic = {.mode = "basic",
                                .host = "h",
                                .workers = 1,
                                .epochs = 2,
                                .batch_size = 64,
                                .threads = 2,
                                .train_limit = 100,
                                .lr = 0.01,
                                .momentum = 0.9,
                                .seed = UINT64_MAX};
    metrics_run_info_t sync = {
        .mode = "sync", .host = "h", .workers = 2, .epochs = 1, .model = "lenet5"};
    int64_t r1 = metrics_run_begin(w, &basic), r2 = metrics_run_begin(w, &sync);
    int64_t r3 = metrics_run_begin(w, &basic); /* a later basic run without epochs */
    assert_true(r1 > 0 && r2 > r1 && r3 > r2);
    assert_int_equal(metrics_event(w, r1, 0.0, 0, "model", "lenet5"), 0);
    assert_int_equal(metrics_step(w, r1, 0, 1, 1, 2.5, 0.1), 0);
    assert_int_equal(metrics_step(w, r1, 0, 2, 1, NAN, 0.2), 0); /* stored as NULL */
    assert_int_equal(metrics_step(w, r2, 1, 1, 1, 1.5, 0.3), 0);
    assert_int_equal(metrics_step(w, r2, 0, 1, 1, 2.0, 0.4), 0);
    metrics_epoch_t e = {.epoch = 1, .test_accuracy = 90, .epoch_seconds = 3, .images = 50};
    assert_int_equal(metrics_epoch(w, r1, 0, &e, 5.0), 0);
    e = (metrics_epoch_t){.epoch = 1, .test_accuracy = 80, .epoch_seconds = NAN, .images = 30};
    assert_int_equal(metrics_epoch(w, r2, 0, &e, 6.0), 0);
    e = (metrics_epoch_t){.epoch = 1, .test_accuracy = 84, .epoch_seconds = 4, .images = 30};
    assert_int_equal(metrics_epoch(w, r2, 1, &e, 8.0), 0);
    assert_int_equal(metrics_run_end(w, r1, "done", 91.5, 12.0), 0);
    metrics_close(&w);

    metrics_t *m = s_open_ro(tmp->path);
    assert_int_equal(metrics_run_latest(m), r3);
    metrics_run_row_t row;
    assert_int_equal(metrics_run_get(m, r1, &row), 1);
    assert_int_equal(row.id, r1);
    assert_string_equal(row.mode, "basic");
    assert_string_equal(row.host, "h");
    assert_string_equal(row.status, "done");
    assert_true(row.final_accuracy == 91.5 && row.train_seconds == 12.0);
    assert_true(row.lr == 0.01 && row.momentum == 0.9 && row.seed == UINT64_MAX);
    assert_true(row.workers == 1 && row.epochs == 2 && row.batch_size == 64 && row.threads == 2 &&
                row.train_limit == 100);
    assert_true(isfinite(row.started_at));
    assert_string_equal(row.model, "lenet5"); /* not given: its event's */
    assert_int_equal(metrics_run_get(m, r2, &row), 1);
    assert_string_equal(row.status, "running");
    assert_string_equal(row.model, "lenet5");
    assert_true(isnan(row.final_accuracy) && isnan(row.train_seconds));
    assert_int_equal(metrics_run_get(m, 999, &row), 0);

    int64_t ids[4];
    assert_int_equal(metrics_runs_latest_per_mode(m, ids, 4), 2);
    assert_true(ids[0] == r1 && ids[1] == r2); /* basic first; r3 has no epoch */
    assert_int_equal(metrics_runs_latest_per_mode(m, ids, 1), 1);

    s_seen_t seen[2];
    memset(seen, 0, sizeof seen);
    assert_int_equal(metrics_runs_each(m, s_seen_run, seen), 0);
    assert_string_equal(seen[0].s, "1:basic:done:2 2:sync:running:2 3:basic:running:0");

    memset(seen, 0, sizeof seen);
    assert_int_equal(metrics_steps_each(m, r2, s_seen_point, seen), 2);
    assert_string_equal(seen[0].s, "w0(1,2) w1(1,1.5)"); /* by worker, then step */
    memset(seen, 0, sizeof seen);
    assert_int_equal(metrics_steps_each(m, r1, s_seen_point, seen), 1); /* NULL loss left out */

    memset(seen, 0, sizeof seen);
    assert_int_equal(metrics_epochs_each(m, r2, s_seen_point, s_seen_secs, seen), 0);
    assert_string_equal(seen[0].s, "w0(1,80) w1(1,84)");
    assert_string_equal(seen[1].s, "w1(1,4)"); /* worker 0's NULL seconds left out */

    memset(seen, 0, sizeof seen);
    assert_int_equal(metrics_epoch_means_each(m, r2, s_seen_mean, seen), 0);
    assert_string_equal(seen[0].s, "(7,82,2)");

    double v = 0;
    assert_int_equal(metrics_run_images(m, r2, &v), 0);
    assert_true(v == 60);
    assert_int_equal(metrics_run_images(m, r3, &v), 0);
    assert_true(isnan(v));
    assert_int_equal(metrics_run_last_t(m, r2, &v), 0);
    assert_true(v == 8.0); /* the epoch row's t is later than the steps' */
    assert_int_equal(metrics_run_last_t(m, r1, &v), 0);
    assert_true(v == 5.0);
    assert_int_equal(metrics_run_last_t(m, r3, &v), 0);
    assert_true(isnan(v));
    metrics_close(&m);

    /* An empty database has no latest run. */
    char empty[160];
    snprintf(empty, sizeof empty, "%s/empty.db", tmp->dir);
    w = s_open(empty);
    metrics_close(&w);
    m = s_open_ro(empty);
    assert_int_equal(metrics_run_latest(m), 0);
    assert_int_equal(metrics_runs_latest_per_mode(m, ids, 4), 0);
    metrics_close(&m);
}

/* The latest run of each mode is of one model, the latest run's: a run
 * without a model (before models) is SimpleConvNet's, a basic run names its
 * model in an event. */
static void test_latest_per_mode_one_model(void **state)
{
    tmpdir_t *tmp = *state;
    metrics_t *w = s_open(tmp->path);
    metrics_run_info_t basic = {.mode = "basic"}, sync = {.mode = "sync", .model = "lenet5"},
                       async = {.mode = "async", .model = "simpleconvnet"};
    int64_t r1 = metrics_run_begin(w, &basic), r2 = metrics_run_begin(w, &sync),
            r3 = metrics_run_begin(w, &async), r4 = metrics_run_begin(w, &basic);
    assert_int_equal(metrics_event(w, r4, 0.0, 0, "model", "lenet5"), 0);
    metrics_epoch_t e = {.epoch = 1, .test_accuracy = 90, .epoch_seconds = 1, .images = 10};
    for (int64_t r = r1; r <= r3; r++)
        assert_int_equal(metrics_epoch(w, r, 0, &e, 1.0), 0);
    int64_t ids[4];
    metrics_t *m = s_open_ro(tmp->path);
    assert_int_equal(metrics_runs_latest_per_mode(m, ids, 4), 2); /* simpleconvnet's */
    assert_true(ids[0] == r1 && ids[1] == r3);
    metrics_close(&m);
    assert_int_equal(metrics_epoch(w, r4, 0, &e, 1.0), 0);
    m = s_open_ro(tmp->path);
    assert_int_equal(metrics_runs_latest_per_mode(m, ids, 4), 2); /* lenet5's */
    assert_true(ids[0] == r4 && ids[1] == r2);
    metrics_close(&m);
    metrics_close(&w);
}

/* What is not a metrics database is refused, with a message naming it. */
static void test_open_readonly_errors(void **state)
{
    tmpdir_t *tmp = *state;
    char path[160], err[512];
    struct {
        const char *name, *sql, *want;
    } cases[] = {
        {"missing.db", NULL, "no database at"},
        {"text.db", "", "not a readable SQLite database"},
        {"other.db", "CREATE TABLE x(a);", "not a metrics database"},
        {"newer.db", "PRAGMA user_version = 99;", "newer than this program"},
        {".", NULL, "not a regular file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp->dir, cases[i].name);
        if (cases[i].sql && !cases[i].sql[0]) {
            FILE *fp = fopen(path, "w");
            assert_non_null(fp);
            fputs("this is not a database, but it is long enough to look like a header...\n", fp);
            fclose(fp);
        } else if (cases[i].sql) {
            sqlite3 *db = NULL;
            assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
            assert_int_equal(sqlite3_exec(db, cases[i].sql, NULL, NULL, NULL), SQLITE_OK);
            sqlite3_close(db);
        }
        err[0] = '\0';
        metrics_t *m = metrics_open_readonly(path, err, sizeof err);
        if (m || !strstr(err, cases[i].want) || !strstr(err, path))
            fail_msg("%s: %s, message '%s' lacks '%s' or the path", cases[i].name,
                     m ? "opened" : "refused", err, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_wal_version_indexes, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_version_1_upgraded, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_run_end_unknown, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_step_batching, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_reader_does_not_block, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_read_queries, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_latest_per_mode_one_model, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_open_readonly_errors, s_setup, tmpdir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
