/* psreport: turns the metrics database written by training into PNG charts.
 * A basic run gives results/training_results.png (loss per step with a
 * moving average, test accuracy per epoch); a distributed run (sync, async,
 * ssp) gives results/distributed_training_results.png (per-worker loss, time
 * per epoch and test accuracy); --comparison gives results/comparison.png
 * (test accuracy over wall time and throughput of the latest run of each
 * mode). The database is opened read-only with a busy timeout, so the report
 * can be drawn while a run is still writing. */
#include "cli.h"
#include "metrics.h"
#include "plot.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DB "results/metrics.db"
#define BUSY_TIMEOUT_MS 5000

static const char *s_usage =
    "usage: psreport [--db PATH] [--run ID] [--out PATH]\n"
    "       psreport --comparison [--db PATH] [--out PATH]\n"
    "\n"
    "Draws PNG charts from the metrics database that training writes.\n"
    "\n"
    "  --db PATH      metrics database (default " DEFAULT_DB ")\n"
    "  --run ID       run to draw (default: the latest run)\n"
    "  --out PATH     where to write the PNG (default: under results/:\n"
    "                 training_results.png for a basic run,\n"
    "                 distributed_training_results.png for sync/async/ssp,\n"
    "                 comparison.png with --comparison)\n"
    "  --comparison   compare the latest run of each mode (basic, sync, async, ssp):\n"
    "                 test accuracy over wall time, and throughput\n"
    "  -h, --help     show this help\n";

/* A growable list of (x, y) points. */
typedef struct {
    double *x, *y;
    size_t n, cap;
} s_xy_t;

/* One worker's figures within a run. */
typedef struct {
    int id;
    s_xy_t loss;  /* step -> loss */
    s_xy_t acc;   /* epoch -> test accuracy, percent */
    s_xy_t secs;  /* epoch -> epoch seconds */
} s_worker_t;

/* A run row and its workers' figures. */
typedef struct {
    int64_t id;
    char mode[32], host[128], status[32];
    double started_at, lr, momentum, final_accuracy, train_seconds; /* NAN when NULL */
    int workers, epochs, batch_size, threads, staleness, train_limit;
    uint64_t seed;
    s_worker_t *w;
    int nw;
} s_run_t;

static void s_die_oom(void)
{
    fprintf(stderr, "psreport: out of memory\n");
    exit(1);
}

static void s_xy_push(s_xy_t *v, double x, double y)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 256;
        double *nx = realloc(v->x, cap * sizeof *nx);
        if (!nx)
            s_die_oom();
        v->x = nx;
        double *ny = realloc(v->y, cap * sizeof *ny);
        if (!ny)
            s_die_oom();
        v->y = ny;
        v->cap = cap;
    }
    v->x[v->n] = x;
    v->y[v->n] = y;
    v->n++;
}

static void s_xy_free(s_xy_t *v)
{
    free(v->x);
    free(v->y);
    memset(v, 0, sizeof *v);
}

static void s_run_free(s_run_t *r)
{
    for (int i = 0; i < r->nw; i++) {
        s_xy_free(&r->w[i].loss);
        s_xy_free(&r->w[i].acc);
        s_xy_free(&r->w[i].secs);
    }
    free(r->w);
    r->w = NULL;
    r->nw = 0;
}

/* The worker with this id, added if new. */
static s_worker_t *s_worker(s_run_t *r, int id)
{
    for (int i = 0; i < r->nw; i++)
        if (r->w[i].id == id)
            return &r->w[i];
    s_worker_t *nw = realloc(r->w, (size_t)(r->nw + 1) * sizeof *nw);
    if (!nw)
        s_die_oom();
    r->w = nw;
    memset(&r->w[r->nw], 0, sizeof r->w[r->nw]);
    r->w[r->nw].id = id;
    return &r->w[r->nw++];
}

static int s_cmp_worker(const void *a, const void *b)
{
    const s_worker_t *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* ---- database ------------------------------------------------------------ */

static double s_col_double(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

static void s_col_text(sqlite3_stmt *st, int i, char *buf, size_t len, const char *dflt)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(buf, len, "%s", t ? (const char *)t : dflt);
}

static sqlite3_stmt *s_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "psreport: query failed: %s\n  %s\n", sqlite3_errmsg(db), sql);
        return NULL;
    }
    return st;
}

/* Opens the database read-only and checks that it holds the metrics schema.
 * NULL after printing why. */
static sqlite3 *s_open_db(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr,
                "psreport: no metrics database at %s (%s).\n"
                "Run training first (`make basic` or `make run`), or name the database "
                "with --db PATH.\n",
                path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        fprintf(stderr, "psreport: %s is not a regular file\n", path);
        return NULL;
    }
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "psreport: cannot open %s: %s\n", path,
                db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);

    sqlite3_stmt *st = s_prepare(db, "PRAGMA user_version");
    int version = -1;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < 0) {
        fprintf(stderr, "psreport: %s is not a readable SQLite database: %s\n", path,
                sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    if (version > METRICS_SCHEMA_VERSION) {
        fprintf(stderr,
                "psreport: %s has metrics schema version %d; this psreport reads version %d. "
                "Rebuild psreport.\n",
                path, version, METRICS_SCHEMA_VERSION);
        sqlite3_close(db);
        return NULL;
    }
    st = s_prepare(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                       "('runs', 'steps', 'epochs')");
    int tables = 0;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        tables = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (tables != 3) {
        fprintf(stderr, "psreport: %s is not a metrics database (no runs, steps or epochs table)\n",
                path);
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* Prints the runs in the database to stderr, newest last. */
static void s_list_runs(sqlite3 *db)
{
    sqlite3_stmt *st = s_prepare(
        db, "SELECT id, mode, status, (SELECT count(*) FROM steps s WHERE s.run_id = r.id) "
            "FROM runs r ORDER BY id");
    if (!st)
        return;
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char mode[32], status[32];
        s_col_text(st, 1, mode, sizeof mode, "?");
        s_col_text(st, 2, status, sizeof status, "?");
        fprintf(stderr, "  run %lld: %s, %s, %lld steps\n", (long long)sqlite3_column_int64(st, 0),
                mode, status, (long long)sqlite3_column_int64(st, 3));
        n++;
    }
    if (!n)
        fprintf(stderr, "  (none: the database holds no runs yet)\n");
    sqlite3_finalize(st);
}

/* The id of the latest run, or 0 when there is none. */
static int64_t s_latest_run(sqlite3 *db)
{
    sqlite3_stmt *st = s_prepare(db, "SELECT max(id) FROM runs");
    int64_t id = 0;
    if (st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

/* Reads run id's row into r. 1 found, 0 not found, -1 error. */
static int s_load_run_row(sqlite3 *db, int64_t id, s_run_t *r)
{
    sqlite3_stmt *st = s_prepare(
        db, "SELECT mode, host, status, started_at, lr, momentum, final_accuracy, train_seconds, "
            "workers, epochs, batch_size, threads, staleness, seed, train_limit FROM runs WHERE id = ?");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        if (rc != SQLITE_DONE)
            fprintf(stderr, "psreport: reading run %lld: %s\n", (long long)id, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return rc == SQLITE_DONE ? 0 : -1;
    }
    memset(r, 0, sizeof *r);
    r->id = id;
    s_col_text(st, 0, r->mode, sizeof r->mode, "?");
    s_col_text(st, 1, r->host, sizeof r->host, "");
    s_col_text(st, 2, r->status, sizeof r->status, "?");
    r->started_at = s_col_double(st, 3);
    r->lr = s_col_double(st, 4);
    r->momentum = s_col_double(st, 5);
    r->final_accuracy = s_col_double(st, 6);
    r->train_seconds = s_col_double(st, 7);
    r->workers = sqlite3_column_int(st, 8);
    r->epochs = sqlite3_column_int(st, 9);
    r->batch_size = sqlite3_column_int(st, 10);
    r->threads = sqlite3_column_int(st, 11);
    r->staleness = sqlite3_column_int(st, 12);
    r->seed = (uint64_t)sqlite3_column_int64(st, 13);
    r->train_limit = sqlite3_column_int(st, 14);
    sqlite3_finalize(st);
    return 1;
}

/* Reads the run's steps and epochs per worker. Number of step rows, or -1. */
static int64_t s_load_run_data(sqlite3 *db, s_run_t *r)
{
    int64_t nsteps = 0;
    sqlite3_stmt *st = s_prepare(db, "SELECT worker_id, step, loss FROM steps WHERE run_id = ? "
                                     "AND loss IS NOT NULL ORDER BY worker_id, step");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, r->id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        s_worker_t *w = s_worker(r, sqlite3_column_int(st, 0));
        s_xy_push(&w->loss, sqlite3_column_double(st, 1), sqlite3_column_double(st, 2));
        nsteps++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        goto err;

    st = s_prepare(db, "SELECT worker_id, epoch, test_accuracy, epoch_seconds FROM epochs "
                       "WHERE run_id = ? ORDER BY worker_id, epoch");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, r->id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        s_worker_t *w = s_worker(r, sqlite3_column_int(st, 0));
        double epoch = sqlite3_column_double(st, 1);
        double acc = s_col_double(st, 2), secs = s_col_double(st, 3);
        if (isfinite(acc))
            s_xy_push(&w->acc, epoch, acc);
        if (isfinite(secs))
            s_xy_push(&w->secs, epoch, secs);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        goto err;
    qsort(r->w, (size_t)r->nw, sizeof *r->w, s_cmp_worker);
    return nsteps;
err:
    fprintf(stderr, "psreport: reading run %lld: %s\n", (long long)r->id, sqlite3_errmsg(db));
    return -1;
}

/* ---- figures ------------------------------------------------------------- */

/* A centred moving average over an odd window, shrinking at the ends so the
 * curve covers the whole range. out has v->n entries. */
static void s_moving_average(const s_xy_t *v, size_t window, double *out)
{
    size_t half = window / 2;
    double sum = 0;
    size_t lo = 0, hi = 0; /* the window is [lo, hi) */
    for (size_t i = 0; i < v->n; i++) {
        size_t want_lo = i > half ? i - half : 0, want_hi = i + half + 1 < v->n ? i + half + 1 : v->n;
        while (hi < want_hi)
            sum += v->y[hi++];
        while (lo < want_lo)
            sum -= v->y[lo++];
        out[i] = sum / (double)(hi - lo);
    }
}

static size_t s_smooth_window(size_t n)
{
    size_t w = n / 40;
    if (w < 5)
        w = 5;
    if (w > 301)
        w = 301;
    return w | 1;
}

static void s_fmt_secs(char *buf, size_t len, double s)
{
    if (!isfinite(s))
        snprintf(buf, len, "n/a");
    else if (s < 120)
        snprintf(buf, len, "%.1f s", s);
    else if (s < 7200)
        snprintf(buf, len, "%.1f min", s / 60);
    else
        snprintf(buf, len, "%.2f h", s / 3600);
}

/* Seconds of training: the recorded figure, else the latest step time. */
static double s_run_seconds(sqlite3 *db, const s_run_t *r, int *so_far)
{
    *so_far = 0;
    if (isfinite(r->train_seconds) && r->train_seconds > 0)
        return r->train_seconds;
    sqlite3_stmt *st = s_prepare(db, "SELECT max(t) FROM (SELECT max(t) AS t FROM steps WHERE "
                                     "run_id = ?1 UNION ALL SELECT max(t) FROM epochs WHERE run_id = ?1)");
    double t = NAN;
    if (st) {
        sqlite3_bind_int64(st, 1, r->id);
        if (sqlite3_step(st) == SQLITE_ROW)
            t = s_col_double(st, 0);
    }
    sqlite3_finalize(st);
    *so_far = 1;
    return t;
}

/* The two title lines shared by the single-run figures. */
static void s_run_title(sqlite3 *db, const s_run_t *r, const char *what, char *buf, size_t len)
{
    int so_far;
    double secs = s_run_seconds(db, r, &so_far);
    char ssecs[32], acc[48], when[64] = "", extra[64] = "";
    s_fmt_secs(ssecs, sizeof ssecs, secs);
    double fa = r->final_accuracy;
    if (!isfinite(fa)) {
        /* A run still going (or one that failed) has no final figure: show
         * the best worker's latest epoch. */
        for (int i = 0; i < r->nw; i++)
            if (r->w[i].acc.n && !(r->w[i].acc.y[r->w[i].acc.n - 1] <= fa))
                fa = r->w[i].acc.y[r->w[i].acc.n - 1];
        if (isfinite(fa))
            snprintf(acc, sizeof acc, "latest accuracy %.2f%%", fa);
        else
            snprintf(acc, sizeof acc, "no accuracy yet");
    } else {
        snprintf(acc, sizeof acc, "final accuracy %.2f%%", fa);
    }
    if (isfinite(r->started_at)) {
        time_t t = (time_t)r->started_at;
        struct tm tm;
        if (localtime_r(&t, &tm))
            strftime(when, sizeof when, "started %Y-%m-%d %H:%M", &tm);
    }
    if (strcmp(r->mode, "basic") != 0)
        snprintf(extra, sizeof extra, " \xc2\xb7 %d workers", r->workers > 0 ? r->workers : r->nw);
    if (strcmp(r->mode, "ssp") == 0)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " \xc2\xb7 staleness %d",
                 r->staleness);
    int n = snprintf(buf, len,
                     "%s \xe2\x80\x94 run %lld (%s)%s \xc2\xb7 %d %s \xc2\xb7 batch %d "
                     "\xc2\xb7 lr %g \xc2\xb7 %s \xc2\xb7 %s training%s\n",
                     what, (long long)r->id, r->mode, extra, r->epochs,
                     r->epochs == 1 ? "epoch" : "epochs", r->batch_size, r->lr, acc,
                     ssecs, so_far ? " so far" : "");
    /* Second line: whichever details are known, joined by dots. */
    char parts[5][160];
    int np = 0;
    if (r->host[0])
        snprintf(parts[np++], sizeof parts[0], "host %s", r->host);
    if (isfinite(r->momentum))
        snprintf(parts[np++], sizeof parts[0], "momentum %g", r->momentum);
    if (r->threads > 0)
        snprintf(parts[np++], sizeof parts[0], "%d thread%s", r->threads, r->threads == 1 ? "" : "s");
    snprintf(parts[np++], sizeof parts[0], "status %s", r->status);
    if (when[0])
        snprintf(parts[np++], sizeof parts[0], "%s", when);
    for (int i = 0; i < np && n > 0 && (size_t)n < len; i++)
        n += snprintf(buf + n, len - (size_t)n, "%s%s", i ? " \xc2\xb7 " : "", parts[i]);
}

/* ---- PNG text --------------------------------------------------------- */

#ifndef PS_VERSION
#define PS_VERSION "unknown"
#endif

/* Sets a PNG text entry of the figure from a printf format. The keywords
 * are this file's constants, so a refusal is a bug here: it aborts. */
static void s_text(plot_fig_t *f, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_text(plot_fig_t *f, const char *key, const char *fmt, ...)
{
    char value[1024], err[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(value, sizeof value, fmt, ap);
    va_end(ap);
    if (plot_fig_text(f, key, value, err, sizeof err) != 0) {
        fprintf(stderr, "psreport: %s\n", err);
        abort();
    }
}

/* The settings of a run on one line, key=value. */
static void s_run_settings(const s_run_t *r, char *buf, size_t len)
{
    snprintf(buf, len,
             "epochs=%d batch_size=%d lr=%g momentum=%g seed=%llu threads=%d train_limit=%d%s",
             r->epochs, r->batch_size, r->lr, r->momentum, (unsigned long long)r->seed,
             r->threads, r->train_limit, strcmp(r->mode, "ssp") ? "" : " staleness=");
    if (!strcmp(r->mode, "ssp"))
        snprintf(buf + strlen(buf), len - strlen(buf), "%d", r->staleness);
}

/* Entries every figure carries: what wrote it and from which database. */
static void s_text_common(plot_fig_t *f, const char *title, const char *dbpath)
{
    s_text(f, "Title", "%s", title);
    s_text(f, "Software", "psreport %s (paramserver)", PS_VERSION);
    s_text(f, "Source", "%s", dbpath);
}

/* Entries of a single-run figure: the run, its settings and its result. */
static void s_text_run(plot_fig_t *f, const s_run_t *r)
{
    char settings[512];
    s_run_settings(r, settings, sizeof settings);
    s_text(f, "run id", "%lld", (long long)r->id);
    s_text(f, "mode", "%s", r->mode);
    s_text(f, "workers", "%d", r->workers);
    s_text(f, "hyperparameters", "%s", settings);
    if (isfinite(r->final_accuracy))
        s_text(f, "final accuracy", "%.2f%%", r->final_accuracy);
    else
        s_text(f, "final accuracy", "none (status %s)", r->status);
    s_text(f, "status", "%s", r->status);
}

/* Creates the directory the figure goes in. 0, or -1 after saying why. */
static int s_mkdir_parent(const char *out)
{
    if (cli_mkdir_parent(out) == 0)
        return 0;
    fprintf(stderr, "psreport: cannot create the directory for %s: %s\n", out, strerror(errno));
    return -1;
}

static int s_write(plot_fig_t *f, const char *out)
{
    char err[512];
    if (plot_fig_write_png(f, out, err, sizeof err) != 0) {
        fprintf(stderr, "psreport: %s\n", err);
        return -1;
    }
    printf("%s\n", out);
    return 0;
}

/* Loss panel: per worker a thin raw line and a thick moving average. */
static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Loss panel: per worker a thin raw line and a thick moving average. The
 * first steps' spikes would squash the rest of the curve, so the y axis
 * stops at the 99th percentile of the raw loss (or the top of the moving
 * averages, if higher) and the x label says so when anything is cut. */
static void s_loss_panel(plot_panel_t *p, const s_run_t *r, int single)
{
    size_t maxn = 0, total = 0;
    for (int i = 0; i < r->nw; i++) {
        total += r->w[i].loss.n;
        if (r->w[i].loss.n > maxn)
            maxn = r->w[i].loss.n;
    }
    size_t win = s_smooth_window(maxn);
    char label[160];
    double *all = malloc((total ? total : 1) * sizeof *all);
    if (!all)
        s_die_oom();
    size_t k = 0;
    double lo = INFINITY, hi = 0, top = -INFINITY;
    for (int i = 0; i < r->nw; i++) {
        const s_xy_t *v = &r->w[i].loss;
        if (!v->n)
            continue;
        memcpy(all + k, v->y, v->n * sizeof *all);
        k += v->n;
        plot_color_t c = plot_palette(single ? 0 : i);
        plot_series_t *raw = plot_panel_line(p, v->x, v->y, v->n, c, single ? "loss per step" : NULL);
        plot_series_width(raw, 1.0);
        plot_series_alpha(raw, single ? 0.35 : 0.22);
        double *sm = malloc(v->n * sizeof *sm);
        if (!sm)
            s_die_oom();
        s_moving_average(v, win, sm);
        for (size_t j = 0; j < v->n; j++)
            if (sm[j] > hi)
                hi = sm[j];
        if (single)
            snprintf(label, sizeof label, "moving average (%zu steps)", win);
        else
            snprintf(label, sizeof label, "worker %d", r->w[i].id);
        plot_series_t *s = plot_panel_line(p, v->x, sm, v->n, single ? plot_palette(3) : c, label);
        plot_series_width(s, 2.2);
        plot_series_dashed(s, i >= 10); /* the palette has ten colours */
        free(sm);
    }
    if (k) {
        qsort(all, k, sizeof *all, s_cmp_double);
        lo = all[0];
        top = all[k - 1];
        double p99 = all[(size_t)(0.99 * (double)(k - 1))];
        if (p99 > hi)
            hi = p99;
    }
    free(all);
    int cut = k && lo >= 0 && top > hi * 1.08;
    if (cut)
        plot_panel_yrange(p, 0, hi * 1.08);
    snprintf(label, sizeof label, "iteration (step)%s",
             cut ? "; y axis cut at the 99th percentile of the loss" : "");
    plot_panel_labels(p, label, "cross-entropy loss");
    if (single)
        snprintf(label, sizeof label, "Training loss");
    else
        snprintf(label, sizeof label, "Training loss per worker (thick: moving average)");
    plot_panel_title(p, label);
    plot_panel_empty_text(p, "no steps recorded");
}

static int s_report_basic(sqlite3 *db, const char *dbpath, const s_run_t *r, const char *out)
{
    char title[512];
    s_run_title(db, r, "Basic training", title, sizeof title);
    plot_fig_t *f = plot_fig_new(1500, 520, 2, title);
    if (!f)
        s_die_oom();
    s_text_common(f, "Basic training", dbpath);
    s_text_run(f, r);
    s_loss_panel(plot_fig_panel(f, 0), r, 1);

    plot_panel_t *p = plot_fig_panel(f, 1);
    plot_panel_title(p, "Test accuracy");
    plot_panel_labels(p, "epoch", "test accuracy (%)");
    plot_panel_ybounds(p, 0, 100);
    plot_panel_xinteger(p);
    plot_panel_empty_text(p, "no epoch finished yet");
    const s_xy_t *acc = &r->w[0].acc;
    for (int i = 0; i < r->nw; i++)
        if (r->w[i].acc.n > acc->n)
            acc = &r->w[i].acc;
    if (acc->n) {
        plot_series_t *s = plot_panel_line_markers(p, acc->x, acc->y, acc->n, plot_palette(2),
                                                   "test accuracy after epoch");
        plot_series_values(s, "%.2f%%");
    }
    int rc = s_write(f, out);
    plot_fig_destroy(&f);
    return rc;
}

static int s_report_distributed(sqlite3 *db, const char *dbpath, const s_run_t *r,
                                const char *out)
{
    char title[512], label[64];
    s_run_title(db, r, "Distributed training", title, sizeof title);
    plot_fig_t *f = plot_fig_new(1650, 520, 3, title);
    if (!f)
        s_die_oom();
    s_text_common(f, "Distributed training", dbpath);
    s_text_run(f, r);
    s_loss_panel(plot_fig_panel(f, 0), r, 0);

    plot_panel_t *p = plot_fig_panel(f, 1);
    plot_panel_title(p, "Time per epoch");
    plot_panel_labels(p, "epoch", "seconds");
    plot_panel_xinteger(p);
    plot_panel_empty_text(p, "no epoch finished yet");
    for (int i = 0; i < r->nw; i++) {
        const s_xy_t *v = &r->w[i].secs;
        snprintf(label, sizeof label, "worker %d", r->w[i].id);
        if (v->n)
            plot_panel_bars(p, v->x, v->y, v->n, plot_palette(i), label);
    }

    p = plot_fig_panel(f, 2);
    plot_panel_title(p, "Test accuracy per worker");
    plot_panel_labels(p, "epoch", "test accuracy (%)");
    plot_panel_ybounds(p, 0, 100);
    plot_panel_xinteger(p);
    plot_panel_empty_text(p, "no epoch finished yet");
    for (int i = 0; i < r->nw; i++) {
        const s_xy_t *v = &r->w[i].acc;
        snprintf(label, sizeof label, "worker %d", r->w[i].id);
        if (v->n)
            plot_series_dashed(plot_panel_line_markers(p, v->x, v->y, v->n, plot_palette(i), label),
                               i >= 10);
    }
    int rc = s_write(f, out);
    plot_fig_destroy(&f);
    return rc;
}

/* ---- comparison ---------------------------------------------------------- */

static plot_color_t s_mode_color(const char *mode)
{
    static const char *modes[] = {"basic", "sync", "async", "ssp"};
    for (int i = 0; i < 4; i++)
        if (strcmp(mode, modes[i]) == 0)
            return plot_palette(i);
    return plot_palette(4);
}

static int s_report_comparison(sqlite3 *db, const char *dbpath, const char *out)
{
    /* The latest run of each mode that finished at least one epoch. */
    sqlite3_stmt *st = s_prepare(
        db, "SELECT max(r.id) FROM runs r WHERE EXISTS (SELECT 1 FROM epochs e WHERE e.run_id = r.id) "
            "GROUP BY r.mode ORDER BY CASE r.mode WHEN 'basic' THEN 0 WHEN 'sync' THEN 1 "
            "WHEN 'async' THEN 2 WHEN 'ssp' THEN 3 ELSE 4 END, r.mode");
    if (!st)
        return -1;
    int64_t ids[16];
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < 16)
        ids[n++] = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (n == 0) {
        fprintf(stderr, "psreport: no run in %s has finished an epoch yet; nothing to compare.\n"
                        "Runs in the database:\n", dbpath);
        s_list_runs(db);
        return -1;
    }

    char title[1024];
    snprintf(title, sizeof title, "Training modes compared \xe2\x80\x94 latest run of each mode in %s\n",
             dbpath);
    plot_fig_t *f = plot_fig_new(1500, 540, 2, NULL);
    if (!f)
        s_die_oom();
    s_text_common(f, "Training modes compared", dbpath);
    char runs[256] = "";
    plot_panel_t *pa = plot_fig_panel(f, 0), *pt = plot_fig_panel(f, 1);
    plot_panel_title(pa, "Test accuracy over wall time");
    plot_panel_labels(pa, "seconds since the run started (epoch end)", "test accuracy (%)");
    plot_panel_ybounds(pa, 0, 100);
    plot_panel_title(pt, "Throughput");
    plot_panel_labels(pt, NULL, "images per second (all workers)");

    double tput[16];
    plot_color_t colors[16];
    char cats[16][48];
    const char *catp[16];
    for (int i = 0; i < n; i++) {
        s_run_t r;
        if (s_load_run_row(db, ids[i], &r) != 1) {
            plot_fig_destroy(&f);
            return -1;
        }
        colors[i] = s_mode_color(r.mode);
        snprintf(cats[i], sizeof cats[i], "%s (run %lld)", r.mode, (long long)r.id);
        catp[i] = cats[i];

        /* Mean over workers per epoch: one curve per run, comparable across
         * modes; the legend says how many workers it averages. */
        st = s_prepare(db, "SELECT avg(t), avg(test_accuracy), count(*) FROM epochs WHERE run_id = ? "
                           "AND test_accuracy IS NOT NULL GROUP BY epoch ORDER BY epoch");
        if (!st) {
            plot_fig_destroy(&f);
            return -1;
        }
        sqlite3_bind_int64(st, 1, r.id);
        s_xy_t v = {0};
        int maxw = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
            s_xy_push(&v, s_col_double(st, 0), s_col_double(st, 1));
            if (sqlite3_column_int(st, 2) > maxw)
                maxw = sqlite3_column_int(st, 2);
        }
        sqlite3_finalize(st);
        char label[96];
        if (maxw > 1)
            snprintf(label, sizeof label, "%s, run %lld (mean of %d workers)", r.mode,
                     (long long)r.id, maxw);
        else
            snprintf(label, sizeof label, "%s, run %lld", r.mode, (long long)r.id);
        if (v.n)
            plot_panel_line_markers(pa, v.x, v.y, v.n, colors[i], label);
        double acc = isfinite(r.final_accuracy) ? r.final_accuracy : v.n ? v.y[v.n - 1] : NAN;
        s_xy_free(&v);

        st = s_prepare(db, "SELECT sum(images) FROM epochs WHERE run_id = ?");
        double images = NAN;
        if (st) {
            sqlite3_bind_int64(st, 1, r.id);
            if (sqlite3_step(st) == SQLITE_ROW)
                images = s_col_double(st, 0);
        }
        sqlite3_finalize(st);
        int so_far;
        double secs = s_run_seconds(db, &r, &so_far);
        tput[i] = isfinite(images) && secs > 0 ? images / secs : NAN;

        char key[32], settings[512];
        s_run_settings(&r, settings, sizeof settings);
        snprintf(key, sizeof key, "run %lld", (long long)r.id);
        s_text(f, key, "mode=%s workers=%d %s final_accuracy=%.2f%% status=%s", r.mode, r.workers,
               settings, acc, r.status);
        snprintf(runs + strlen(runs), sizeof runs - strlen(runs), "%s%lld", i ? " " : "",
                 (long long)r.id);

        size_t len = strlen(title);
        char ssecs[32];
        s_fmt_secs(ssecs, sizeof ssecs, secs);
        snprintf(title + len, sizeof title - len, "%s%s: %.2f%% after %d %s in %s%s",
                 i ? "  \xc2\xb7  " : "", r.mode, acc, r.epochs, r.epochs == 1 ? "epoch" : "epochs", ssecs,
                 strcmp(r.status, "done") ? " (not finished)" : "");
        s_run_free(&r);
    }

    double xs[16];
    for (int i = 0; i < n; i++)
        xs[i] = i + 1;
    plot_panel_xcategories(pt, catp, n);
    plot_series_t *bars = plot_panel_bars(pt, xs, tput, (size_t)n, plot_palette(0), NULL);
    plot_series_colors(bars, colors);
    plot_series_values(bars, "%.0f img/s");

    plot_fig_title(f, title);
    s_text(f, "runs", "%s", runs);
    rc = s_write(f, out);
    plot_fig_destroy(&f);
    return rc;
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *dbpath = DEFAULT_DB, *out = NULL;
    int64_t run_id = 0;
    int comparison = 0;
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},   {"run", required_argument, NULL, 'r'},
        {"out", required_argument, NULL, 'o'},  {"comparison", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dbpath = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'c':
            comparison = 1;
            break;
        case 'r': {
            char *end;
            errno = 0;
            long long v = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end || v <= 0) {
                fprintf(stderr, "psreport: --run wants a positive run id, not '%s'\n", optarg);
                return 2;
            }
            run_id = v;
            break;
        }
        case 'h':
            fputs(s_usage, stdout);
            return 0;
        default:
            fputs(s_usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "psreport: unexpected argument '%s'\n%s", argv[optind], s_usage);
        return 2;
    }
    if (comparison && run_id) {
        fprintf(stderr, "psreport: --comparison draws the latest run of each mode; it takes no "
                        "--run\n");
        return 2;
    }

    sqlite3 *db = s_open_db(dbpath);
    if (!db)
        return 1;
    int rc = 1;
    if (comparison) {
        if (!out)
            out = "results/comparison.png";
        if (s_mkdir_parent(out) == 0 && s_report_comparison(db, dbpath, out) == 0)
            rc = 0;
        sqlite3_close(db);
        return rc;
    }

    if (!run_id && !(run_id = s_latest_run(db))) {
        fprintf(stderr, "psreport: %s holds no runs yet; run training first.\n", dbpath);
        sqlite3_close(db);
        return 1;
    }
    s_run_t r;
    int found = s_load_run_row(db, run_id, &r);
    if (found == 0) {
        fprintf(stderr, "psreport: no run %lld in %s. Runs there:\n", (long long)run_id, dbpath);
        s_list_runs(db);
    }
    if (found != 1) {
        sqlite3_close(db);
        return 1;
    }
    int64_t nsteps = s_load_run_data(db, &r);
    if (nsteps == 0)
        fprintf(stderr,
                "psreport: run %lld (%s, status %s) has no steps recorded; nothing to draw. "
                "It may have failed before its first step.\n",
                (long long)run_id, r.mode, r.status);
    if (nsteps > 0) {
        int basic = strcmp(r.mode, "basic") == 0;
        if (!out)
            out = basic ? "results/training_results.png" : "results/distributed_training_results.png";
        if (s_mkdir_parent(out) == 0)
            rc = basic ? s_report_basic(db, dbpath, &r, out)
                       : s_report_distributed(db, dbpath, &r, out);
        rc = rc ? 1 : 0;
    }
    s_run_free(&r);
    sqlite3_close(db);
    return rc;
}
