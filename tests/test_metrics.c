/* test_metrics: the SQLite metrics writer.
 *
 * Everything written is read back through a second, plain sqlite3 connection,
 * as psreport would: every column of every table, the WAL mode and schema
 * version, the refusal of newer schemas, and the durability contract: step
 * rows become visible to another connection exactly when a batch is committed
 * (after METRICS_BATCH_ROWS rows, METRICS_BATCH_SECONDS seconds, any other
 * write, a flush, or close), and a reader holding a transaction open does not
 * block the writer. */
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

#include "cli.h"
#include "metrics.h"

typedef struct {
    char dir[64];
    char path[128];
} s_tmp_t;

static int s_setup(void **state) {
    s_tmp_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/test_metrics.XXXXXX");
    if (!mkdtemp(t->dir)) {
        free(t);
        return -1;
    }
    snprintf(t->path, sizeof t->path, "%s/metrics.db", t->dir);
    *state = t;
    return 0;
}

static int s_teardown(void **state) {
    s_tmp_t *t = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    int rc = system(cmd);
    free(t);
    return rc == 0 ? 0 : -1;
}

static metrics_t *s_open(const char *path) {
    char err[512] = "";
    metrics_t *m = metrics_open(path, err, sizeof err);
    if (!m)
        fail_msg("metrics_open: %s", err);
    return m;
}

/* A second connection, as psreport would open one. */
static sqlite3 *s_reader(const char *path) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        fail_msg("open reader: %s", sqlite3_errmsg(db));
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static sqlite3_stmt *s_query(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("prepare '%s': %s", sql, sqlite3_errmsg(db));
    return st;
}

static void s_row(sqlite3 *db, sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        fail_msg("expected a row: %s", sqlite3_errmsg(db));
}

static void s_done(sqlite3_stmt *st) {
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

static int64_t s_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = s_query(db, sql);
    s_row(db, st);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void s_text(sqlite3 *db, const char *sql, char *out, size_t n) {
    sqlite3_stmt *st = s_query(db, sql);
    s_row(db, st);
    const unsigned char *s = sqlite3_column_text(st, 0);
    snprintf(out, n, "%s", s ? (const char *)s : "(null)");
    sqlite3_finalize(st);
}

static void s_expect_text(sqlite3_stmt *st, int col, const char *want) {
    const unsigned char *s = sqlite3_column_text(st, col);
    if (!want) {
        assert_int_equal(sqlite3_column_type(st, col), SQLITE_NULL);
        return;
    }
    assert_non_null(s);
    assert_string_equal((const char *)s, want);
}

#define N_STEPS 1234

static void test_round_trip(void **state) {
    s_tmp_t *tmp = *state;
    double t0 = cli_wall();
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
    double t1 = cli_wall();

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
    } wk[] = {{0, 30000, 1, 0, "w0", "hostA"}, {1, 30000, 2, 0, "w1", NULL},
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
    s_text(db, "SELECT host || '/' || status || '/' || ifnull(ended_at, 'null') FROM runs"
               " WHERE id = 2", text, sizeof text);
    assert_string_equal(text, "explicit/running/null");
    assert_int_equal(s_int(db, "SELECT count(*) FROM steps"), N_STEPS);
    sqlite3_close(db);
}

static void test_wal_version_indexes(void **state) {
    s_tmp_t *tmp = *state;
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

static void test_newer_schema_refused(void **state) {
    s_tmp_t *tmp = *state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(tmp->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE future(x); PRAGMA user_version = 2;", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    char err[512] = "";
    metrics_t *m = metrics_open(tmp->path, err, sizeof err);
    assert_null(m);
    assert_non_null(strstr(err, "newer"));
    assert_non_null(strstr(err, "version 2"));
    assert_non_null(strstr(err, tmp->path));

    /* The refused file is left as it was: not switched to WAL, no tables added. */
    db = s_reader(tmp->path);
    char mode[32];
    s_text(db, "PRAGMA journal_mode", mode, sizeof mode);
    assert_string_equal(mode, "delete");
    assert_int_equal(s_int(db, "SELECT count(*) FROM sqlite_master"), 1);
    sqlite3_close(db);
}

static void test_open_errors(void **state) {
    s_tmp_t *tmp = *state;
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

static void test_run_end_unknown(void **state) {
    s_tmp_t *tmp = *state;
    metrics_t *m = s_open(tmp->path);
    assert_int_equal(metrics_run_end(m, 99, "done", 0, 0), -1);
    assert_non_null(strstr(metrics_errmsg(m), "no run with id 99"));
    metrics_close(&m);
}

/* Step rows reach other connections batch by batch. */
static void test_step_batching(void **state) {
    s_tmp_t *tmp = *state;
    metrics_t *m = s_open(tmp->path);
    metrics_run_info_t info = {.mode = "basic", .host = "h"};
    int64_t run = metrics_run_begin(m, &info);
    assert_true(run > 0);
    sqlite3 *db = s_reader(tmp->path);
    const char *count = "SELECT count(*) FROM steps";

    double start = cli_now();
    for (int i = 0; i < METRICS_BATCH_ROWS - 1; i++)
        assert_int_equal(metrics_step(m, run, 0, i, 1, 1.0, 0.0), 0);
    assert_int_equal(s_int(db, count), 0);
    assert_int_equal(metrics_step(m, run, 0, METRICS_BATCH_ROWS - 1, 1, 1.0, 0.0), 0);
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS);
    for (int i = 0; i < 10; i++)
        assert_int_equal(metrics_step(m, run, 0, METRICS_BATCH_ROWS + i, 1, 1.0, 0.0), 0);
    /* Only meaningful if the batch was not cut short by the clock. */
    if (cli_now() - start < METRICS_BATCH_SECONDS * 0.9)
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
    double begun = cli_now();
    assert_int_equal(s_int(db, count), METRICS_BATCH_ROWS + 11);
    while (cli_now() - begun < METRICS_BATCH_SECONDS + 0.05) {
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
static void test_reader_does_not_block(void **state) {
    s_tmp_t *tmp = *state;
    metrics_t *m = s_open(tmp->path);
    metrics_run_info_t info = {.mode = "basic"};
    int64_t run = metrics_run_begin(m, &info);
    sqlite3 *db = s_reader(tmp->path);
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(s_int(db, "SELECT count(*) FROM runs"), 1);
    double start = cli_now();
    for (int i = 0; i < 3 * METRICS_BATCH_ROWS; i++)
        assert_int_equal(metrics_step(m, run, 0, i, 1, 1.0, 0.0), 0);
    assert_int_equal(metrics_run_end(m, run, "done", 99.0, 1.0), 0);
    assert_true(cli_now() - start < 1.0); /* no busy wait happened */
    /* The reader's snapshot is unchanged until it ends its transaction. */
    assert_int_equal(s_int(db, "SELECT count(*) FROM steps"), 0);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(s_int(db, "SELECT count(*) FROM steps"), 3 * METRICS_BATCH_ROWS);
    sqlite3_close(db);
    metrics_close(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_wal_version_indexes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_run_end_unknown, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_step_batching, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_reader_does_not_block, s_setup, s_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
