/* psreport: turns the metrics database written by training into PNG charts.
 * A basic run gives results/training_results.png (loss per step with a
 * moving average, test accuracy per epoch); a distributed run (sync, async,
 * ssp) gives results/distributed_training_results.png (per-worker loss, time
 * per epoch and test accuracy); --comparison gives results/comparison.png
 * (test accuracy over wall time and throughput of the latest run of each
 * mode). The database is read through common/metrics (read-only, with a
 * busy timeout, so the report can be drawn while a run is still writing);
 * this file knows nothing of its schema. */
#include "fs.h"
#include "metrics.h"
#include "plot.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DB "results/metrics.db"

static const char *s_usage =
    "usage: psreport [--db PATH] [--run ID] [--out PATH]\n"
    "       psreport --comparison [--db PATH] [--out PATH]\n"
    "       psreport --study [--db PATH] [--out DIR]\n"
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
    "  --study        the study in the database (make study; default database\n"
    "                 results/study/study.db): one MODEL.png per model in DIR\n"
    "                 (default: the database's folder): accuracy over wall time\n"
    "                 per configuration, speed-up over workers, communication share\n"
    "  -h, --help     show this help\n";

/* A growable list of (x, y) points. */
typedef struct {
    double *x, *y;
    size_t n, cap;
} s_xy_t;

/* One worker's figures within a run. */
typedef struct {
    int id;
    s_xy_t loss; /* step -> loss */
    s_xy_t acc;  /* epoch -> test accuracy, percent */
    s_xy_t secs; /* epoch -> epoch seconds */
} s_worker_t;

/* A run row and its workers' figures; with a server group, each server's
 * traffic (MB in and out; x = shard). */
typedef struct {
    metrics_run_row_t row;
    s_worker_t *w;
    int nw;
    s_xy_t mb_in, mb_out;
    s_xy_t failover; /* x: the step of the first worker when a standby took over, y: t */
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
    s_xy_free(&r->mb_in);
    s_xy_free(&r->mb_out);
    s_xy_free(&r->failover);
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

/* ---- database: through common/metrics ------------------------------------- */

static void s_print_run(void *ctx, int64_t id, const char *mode, const char *status, int64_t steps)
{
    int *n = ctx;
    fprintf(stderr, "  run %lld: %s, %s, %lld steps\n", (long long)id, mode, status,
            (long long)steps);
    (*n)++;
}

/* Prints the runs in the database to stderr, oldest first. */
static void s_list_runs(metrics_t *m)
{
    int n = 0;
    if (metrics_runs_each(m, s_print_run, &n) != 0)
        fprintf(stderr, "psreport: %s\n", metrics_errmsg(m));
    else if (!n)
        fprintf(stderr, "  (none: the database holds no runs yet)\n");
}

static void s_add_loss(void *ctx, int worker_id, double step, double loss)
{
    s_xy_push(&s_worker(ctx, worker_id)->loss, step, loss);
}

static void s_add_acc(void *ctx, int worker_id, double epoch, double acc)
{
    s_xy_push(&s_worker(ctx, worker_id)->acc, epoch, acc);
}

static void s_add_secs(void *ctx, int worker_id, double epoch, double secs)
{
    s_xy_push(&s_worker(ctx, worker_id)->secs, epoch, secs);
}

/* Reads the run's steps and epochs per worker. Number of step rows, or -1
 * after saying why. */
static void s_add_shard(void *ctx, int shard, double bytes_in, double bytes_out, double updates,
                        double apply_seconds)
{
    (void)updates;
    (void)apply_seconds;
    s_run_t *r = ctx;
    s_xy_push(&r->mb_in, shard, bytes_in / 1e6);
    s_xy_push(&r->mb_out, shard, bytes_out / 1e6);
}

static void s_add_failover(void *ctx, double t, double step)
{
    s_run_t *r = ctx;
    if (isfinite(step))
        s_xy_push(&r->failover, step, t);
}

static int64_t s_load_run_data(metrics_t *m, s_run_t *r)
{
    int64_t nsteps = metrics_steps_each(m, r->row.id, s_add_loss, r);
    if (nsteps < 0 || metrics_epochs_each(m, r->row.id, s_add_acc, s_add_secs, r) != 0 ||
        metrics_shards_each(m, r->row.id, s_add_shard, r) != 0 ||
        metrics_failovers_each(m, r->row.id, s_add_failover, r) != 0) {
        fprintf(stderr, "psreport: reading run %lld: %s\n", (long long)r->row.id,
                metrics_errmsg(m));
        return -1;
    }
    qsort(r->w, (size_t)r->nw, sizeof *r->w, s_cmp_worker);
    return nsteps;
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
        size_t want_lo = i > half ? i - half : 0,
               want_hi = i + half + 1 < v->n ? i + half + 1 : v->n;
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
static double s_run_seconds(metrics_t *m, const metrics_run_row_t *r, int *so_far)
{
    *so_far = 0;
    if (isfinite(r->train_seconds) && r->train_seconds > 0)
        return r->train_seconds;
    double t = NAN;
    if (metrics_run_last_t(m, r->id, &t) != 0)
        fprintf(stderr, "psreport: %s\n", metrics_errmsg(m));
    *so_far = 1;
    return t;
}

/* The two title lines shared by the single-run figures. */
static void s_run_title(metrics_t *m, const s_run_t *r, const char *what, char *buf, size_t len)
{
    int so_far;
    double secs = s_run_seconds(m, &r->row, &so_far);
    char ssecs[32], acc[48], when[64] = "", extra[64] = "";
    s_fmt_secs(ssecs, sizeof ssecs, secs);
    double fa = r->row.final_accuracy;
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
    if (isfinite(r->row.started_at)) {
        time_t t = (time_t)r->row.started_at;
        struct tm tm;
        if (localtime_r(&t, &tm))
            strftime(when, sizeof when, "started %Y-%m-%d %H:%M", &tm);
    }
    if (strcmp(r->row.mode, "basic") != 0)
        snprintf(extra, sizeof extra, " \xc2\xb7 %d workers",
                 r->row.workers > 0 ? r->row.workers : r->nw);
    if (strcmp(r->row.mode, "ssp") == 0)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " \xc2\xb7 staleness %d",
                 r->row.staleness);
    int n = snprintf(buf, len,
                     "%s \xe2\x80\x94 run %lld (%s)%s%s%s%s%s \xc2\xb7 %d %s \xc2\xb7 batch %d "
                     "\xc2\xb7 lr %g \xc2\xb7 %s \xc2\xb7 %s training%s\n",
                     what, (long long)r->row.id, r->row.mode, r->row.model[0] ? " \xc2\xb7 " : "",
                     r->row.model, r->row.dataset[0] ? " \xc2\xb7 " : "", r->row.dataset, extra,
                     r->row.epochs, r->row.epochs == 1 ? "epoch" : "epochs", r->row.batch_size,
                     r->row.lr, acc, ssecs, so_far ? " so far" : "");
    /* Second line: whichever details are known, joined by dots. */
    char parts[5][160];
    int np = 0;
    if (r->row.host[0])
        snprintf(parts[np++], sizeof parts[0], "host %s", r->row.host);
    if (isfinite(r->row.momentum))
        snprintf(parts[np++], sizeof parts[0], "momentum %g", r->row.momentum);
    if (r->row.threads > 0)
        snprintf(parts[np++], sizeof parts[0], "%d thread%s", r->row.threads,
                 r->row.threads == 1 ? "" : "s");
    snprintf(parts[np++], sizeof parts[0], "status %s", r->row.status);
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
static void s_run_settings(const metrics_run_row_t *r, char *buf, size_t len)
{
    snprintf(buf, len,
             "epochs=%d batch_size=%d lr=%g momentum=%g seed=%llu threads=%d train_limit=%d%s",
             r->epochs, r->batch_size, r->lr, r->momentum, (unsigned long long)r->seed, r->threads,
             r->train_limit, strcmp(r->mode, "ssp") ? "" : " staleness=");
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
static void s_text_run(plot_fig_t *f, const metrics_run_row_t *r)
{
    char settings[512];
    s_run_settings(r, settings, sizeof settings);
    s_text(f, "run id", "%lld", (long long)r->id);
    s_text(f, "mode", "%s", r->mode);
    if (r->model[0])
        s_text(f, "model", "%s", r->model);
    if (r->dataset[0])
        s_text(f, "dataset", "%s", r->dataset);
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
    if (fs_mkdir_parent(out) == 0)
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
        plot_series_t *raw =
            plot_panel_line(p, v->x, v->y, v->n, c, single ? "loss per step" : NULL);
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
    /* Each fail-over (a standby took over a shard) as a vertical line at
     * the step the first worker was at. */
    for (size_t j = 0; k && j < r->failover.n; j++) {
        double x[2] = {r->failover.x[j], r->failover.x[j]}, y[2] = {0, cut ? hi * 1.08 : top};
        plot_series_t *s = plot_panel_line(p, x, y, 2, plot_palette(3),
                                           j ? NULL : "fail-over (a standby took over)");
        plot_series_dashed(s, 1);
        plot_series_width(s, 1.5);
    }
    snprintf(label, sizeof label, "iteration (step)%s",
             cut ? "; y axis cut at the 99th percentile of the loss" : "");
    plot_panel_labels(p, label, "cross-entropy loss");
    if (single)
        snprintf(label, sizeof label, "Training loss");
    else
        snprintf(label, sizeof label, "Training loss per worker (thick: moving average)");
    plot_panel_title(p, label);
    /* independent: the workers train alone and send no per-step loss */
    plot_panel_empty_text(p, strcmp(r->row.mode, "independent")
                                 ? "no steps recorded"
                                 : "mode independent: no step losses");
}

static int s_report_basic(metrics_t *m, const char *dbpath, const s_run_t *r, const char *out)
{
    char title[512];
    s_run_title(m, r, "Basic training", title, sizeof title);
    plot_fig_t *f = plot_fig_new(1500, 520, 2, title);
    if (!f)
        s_die_oom();
    s_text_common(f, "Basic training", dbpath);
    s_text_run(f, &r->row);
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

/* A server group's traffic: MB in and out of each server, side by side. */
static void s_traffic_panel(plot_panel_t *p, const s_run_t *r)
{
    enum { MAX = 64 };
    static char names[MAX][16];
    const char *cat[MAX];
    double x[MAX];
    int n = r->mb_in.n < MAX ? (int)r->mb_in.n : MAX;
    for (int i = 0; i < n; i++) {
        int shard = (int)r->mb_in.x[i];
        snprintf(names[i], sizeof names[i], shard == 0 ? "head" : "shard %d", shard);
        cat[i] = names[i];
        x[i] = i + 1;
    }
    plot_panel_title(p, "Traffic per server");
    plot_panel_labels(p, "server", "MB");
    plot_panel_xcategories(p, cat, n);
    plot_series_values(plot_panel_bars(p, x, r->mb_in.y, (size_t)n, plot_palette(0), "in"), "%.0f");
    plot_series_values(plot_panel_bars(p, x, r->mb_out.y, (size_t)n, plot_palette(1), "out"),
                       "%.0f");
}

static int s_report_distributed(metrics_t *m, const char *dbpath, const s_run_t *r, const char *out)
{
    char title[512], label[64];
    s_run_title(m, r, "Distributed training", title, sizeof title);
    int group = r->mb_in.n > 1; /* a server group: its traffic too */
    plot_fig_t *f = plot_fig_new(group ? 2200 : 1650, 520, group ? 4 : 3, title);
    if (!f)
        s_die_oom();
    s_text_common(f, "Distributed training", dbpath);
    s_text_run(f, &r->row);
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
    if (group)
        s_traffic_panel(plot_fig_panel(f, 3), r);
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

/* One epoch of the comparison's accuracy curve: the mean over workers. */
typedef struct {
    s_xy_t v;
    int maxw; /* most workers averaged in one epoch */
} s_means_t;

static void s_add_mean(void *ctx, double t, double accuracy, int workers)
{
    s_means_t *mm = ctx;
    s_xy_push(&mm->v, t, accuracy);
    if (workers > mm->maxw)
        mm->maxw = workers;
}

/* What the comparison collects, run by run, for its figure. */
typedef struct {
    plot_fig_t *f;
    plot_panel_t *pa; /* accuracy over time */
    double tput[16];  /* images per second, per run */
    plot_color_t colors[16];
    char cats[16][48]; /* "MODE (run ID)" */
    const char *catp[16];
    char title[1024]; /* the figure's title, one "mode: accuracy" per run */
    char runs[256];   /* the run ids */
} s_comparison_t;

/* Adds run `id`, the i-th of the comparison, to c: its accuracy curve, its
 * throughput bar, its text chunk and its part of the title. 0, or -1 after
 * printing why. */
static int s_compare_run(metrics_t *m, s_comparison_t *c, int i, int64_t id)
{
    metrics_run_row_t r;
    if (metrics_run_get(m, id, &r) != 1) {
        fprintf(stderr, "psreport: run %lld: %s\n", (long long)id, metrics_errmsg(m));
        return -1;
    }
    c->colors[i] = s_mode_color(r.mode);
    snprintf(c->cats[i], sizeof c->cats[i], "%s (run %lld)", r.mode, (long long)r.id);
    c->catp[i] = c->cats[i];

    /* Mean over workers per epoch: one curve per run, comparable across
     * modes; the legend says how many workers it averages. */
    s_means_t mm = {0};
    double images = NAN;
    if (metrics_epoch_means_each(m, r.id, s_add_mean, &mm) != 0 ||
        metrics_run_images(m, r.id, &images) != 0) {
        fprintf(stderr, "psreport: run %lld: %s\n", (long long)r.id, metrics_errmsg(m));
        s_xy_free(&mm.v);
        return -1;
    }
    const s_xy_t v = mm.v;
    int maxw = mm.maxw;
    char label[96];
    if (maxw > 1)
        snprintf(label, sizeof label, "%s, run %lld (mean of %d workers)", r.mode, (long long)r.id,
                 maxw);
    else
        snprintf(label, sizeof label, "%s, run %lld", r.mode, (long long)r.id);
    if (v.n)
        plot_panel_line_markers(c->pa, v.x, v.y, v.n, c->colors[i], label);
    double acc = isfinite(r.final_accuracy) ? r.final_accuracy : v.n ? v.y[v.n - 1] : NAN;
    s_xy_free(&mm.v);

    int so_far;
    double secs = s_run_seconds(m, &r, &so_far);
    c->tput[i] = isfinite(images) && secs > 0 ? images / secs : NAN;

    char key[32], settings[512];
    s_run_settings(&r, settings, sizeof settings);
    snprintf(key, sizeof key, "run %lld", (long long)r.id);
    s_text(c->f, key, "mode=%s workers=%d %s final_accuracy=%.2f%% status=%s", r.mode, r.workers,
           settings, acc, r.status);
    snprintf(c->runs + strlen(c->runs), sizeof c->runs - strlen(c->runs), "%s%lld", i ? " " : "",
             (long long)r.id);

    size_t len = strlen(c->title);
    char ssecs[32];
    s_fmt_secs(ssecs, sizeof ssecs, secs);
    snprintf(c->title + len, sizeof c->title - len, "%s%s%s%s%s%s: %.2f%% after %d %s in %s%s",
             i ? "  \xc2\xb7  " : "", r.mode, r.model[0] ? " " : "", r.model,
             r.dataset[0] ? " on " : "", r.dataset, acc, r.epochs,
             r.epochs == 1 ? "epoch" : "epochs", ssecs,
             strcmp(r.status, "done") ? " (not finished)" : "");
    return 0;
}

static int s_report_comparison(metrics_t *m, const char *dbpath, const char *out)
{
    /* The latest run of each mode that finished at least one epoch. */
    int64_t ids[16];
    int n = metrics_runs_latest_per_mode(m, ids, 16), rc;
    if (n < 0) {
        fprintf(stderr, "psreport: %s\n", metrics_errmsg(m));
        return -1;
    }
    if (n == 0) {
        fprintf(stderr,
                "psreport: no run in %s has finished an epoch yet; nothing to compare.\n"
                "Runs in the database:\n",
                dbpath);
        s_list_runs(m);
        return -1;
    }

    s_comparison_t c = {0};
    snprintf(c.title, sizeof c.title,
             "Training modes compared \xe2\x80\x94 latest run of each mode in %s\n", dbpath);
    c.f = plot_fig_new(1500, 540, 2, NULL);
    if (!c.f)
        s_die_oom();
    s_text_common(c.f, "Training modes compared", dbpath);
    c.pa = plot_fig_panel(c.f, 0);
    plot_panel_t *pt = plot_fig_panel(c.f, 1);
    plot_panel_title(c.pa, "Test accuracy over wall time");
    plot_panel_labels(c.pa, "seconds since the run started (epoch end)", "test accuracy (%)");
    plot_panel_ybounds(c.pa, 0, 100);
    plot_panel_title(pt, "Throughput");
    plot_panel_labels(pt, NULL, "images per second (all workers)");

    for (int i = 0; i < n; i++)
        if (s_compare_run(m, &c, i, ids[i]) != 0) {
            plot_fig_destroy(&c.f);
            return -1;
        }

    double xs[16];
    for (int i = 0; i < n; i++)
        xs[i] = i + 1;
    plot_panel_xcategories(pt, c.catp, n);
    plot_series_t *bars = plot_panel_bars(pt, xs, c.tput, (size_t)n, plot_palette(0), NULL);
    plot_series_colors(bars, c.colors);
    plot_series_values(bars, "%.0f img/s");

    plot_fig_title(c.f, c.title);
    s_text(c.f, "runs", "%s", c.runs);
    rc = s_write(c.f, out);
    plot_fig_destroy(&c.f);
    return rc;
}

/* ---- the study (make study) ---------------------------------------------- */

#define STUDY_MAX 128 /* configurations per study */

/* One configuration of the study with what its figure needs. */
typedef struct {
    metrics_study_row_t s;
    double ips, comm; /* images/s, communication share */
    char dataset[64]; /* its run's data set */
    s_means_t acc;    /* accuracy over wall time */
} s_config_t;

typedef struct {
    s_config_t c[STUDY_MAX];
    int n, dropped;
} s_study_t;

static void s_add_config(void *ctx, const metrics_study_row_t *r)
{
    s_study_t *st = ctx;
    if (st->n == STUDY_MAX) {
        st->dropped++;
        return;
    }
    st->c[st->n++].s = *r;
}

/* Fills the figures of configuration c from its run. 0 or -1. */
static int s_config_figures(metrics_t *m, s_config_t *c)
{
    c->ips = c->comm = NAN;
    metrics_run_row_t r;
    if (!c->s.run_id || strcmp(c->s.status, "done") != 0)
        return 0; /* failed: it shows in study.md, not in the curves */
    double images = NAN;
    if (metrics_run_get(m, c->s.run_id, &r) != 1 || metrics_run_images(m, r.id, &images) != 0 ||
        metrics_run_comm_share(m, r.id, &c->comm) != 0 ||
        metrics_epoch_means_each(m, r.id, s_add_mean, &c->acc) != 0) {
        fprintf(stderr, "psreport: run %lld: %s\n", (long long)c->s.run_id, metrics_errmsg(m));
        return -1;
    }
    int so_far;
    double secs = s_run_seconds(m, &r, &so_far);
    c->ips = secs > 0 ? images / secs : NAN;
    snprintf(c->dataset, sizeof c->dataset, "%s", r.dataset);
    return 0;
}

static void s_config_label(const s_config_t *c, char *buf, size_t len)
{
    if (strcmp(c->s.mode, "basic") == 0)
        snprintf(buf, len, "basic");
    else
        snprintf(buf, len, "%s \xc3\x97%d%s%s", c->s.mode, c->s.workers,
                 strcmp(c->s.compress, "none") ? " " : "",
                 strcmp(c->s.compress, "none") ? c->s.compress : "");
}

/* Speed-up over workers: per (mode, compression) a line through the basic
 * run (1 worker, 1.0) and each worker count, images/s over basic's. */
static void s_speedup_panel(plot_panel_t *p, const s_config_t *c, int n, const char *model)
{
    double base = NAN;
    for (int i = 0; i < n; i++)
        if (!strcmp(c[i].s.model, model) && !strcmp(c[i].s.mode, "basic"))
            base = c[i].ips;
    plot_panel_title(p, "Speed-up over workers");
    plot_panel_labels(p, "workers (1 = basic mode)", "images/s over basic mode's");
    plot_panel_xinteger(p);
    if (!isfinite(base)) {
        plot_panel_empty_text(p, "no finished basic run to compare with");
        return;
    }
    int line = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(c[i].s.model, model) || !strcmp(c[i].s.mode, "basic"))
            continue;
        int first = 1; /* is i the first row of its (mode, compress)? */
        for (int j = 0; j < i && first; j++)
            first = strcmp(c[j].s.model, model) || strcmp(c[j].s.mode, c[i].s.mode) ||
                    strcmp(c[j].s.compress, c[i].s.compress);
        if (!first)
            continue;
        double x[STUDY_MAX + 1] = {1}, y[STUDY_MAX + 1] = {1};
        size_t k = 1;
        for (int j = i; j < n; j++)
            if (!strcmp(c[j].s.model, model) && !strcmp(c[j].s.mode, c[i].s.mode) &&
                !strcmp(c[j].s.compress, c[i].s.compress) && isfinite(c[j].ips)) {
                x[k] = c[j].s.workers;
                y[k++] = c[j].ips / base;
            }
        char label[64];
        snprintf(label, sizeof label, "%s%s%s", c[i].s.mode,
                 strcmp(c[i].s.compress, "none") ? " " : "",
                 strcmp(c[i].s.compress, "none") ? c[i].s.compress : "");
        plot_series_t *sr = plot_panel_line_markers(p, x, y, k, s_mode_color(c[i].s.mode), label);
        if (strcmp(c[i].s.compress, "none"))
            plot_series_width(sr, 1);
        line++;
    }
    if (!line)
        plot_panel_empty_text(p, "no finished distributed run");
}

/* The figure of one model of the study: accuracy over wall time per
 * configuration, speed-up over workers, communication share. 0 or -1. */
static int s_study_figure(const char *dbpath, s_config_t *c, int n, const char *model,
                          const char *out)
{
    plot_fig_t *f = plot_fig_new(1800, 600, 3, NULL);
    if (!f)
        s_die_oom();
    const char *dataset = ""; /* a sweep has one data set: its first finished run's */
    for (int i = n - 1; i >= 0; i--)
        if (!strcmp(c[i].s.model, model) && c[i].dataset[0])
            dataset = c[i].dataset;
    char title[256];
    snprintf(title, sizeof title, "Study \xe2\x80\x94 %s%s%s \xe2\x80\x94 %s", model,
             dataset[0] ? " on " : "", dataset, dbpath);
    plot_fig_title(f, title);
    s_text_common(f, title, dbpath);
    plot_panel_t *pa = plot_fig_panel(f, 0), *pc = plot_fig_panel(f, 2);
    plot_panel_title(pa, "Test accuracy over wall time");
    plot_panel_labels(pa, "seconds since the run started (epoch end)", "test accuracy (%)");
    plot_panel_ybounds(pa, 0, 100);
    plot_panel_title(pc, "Communication share (push + pull of epoch time)");
    plot_panel_labels(pc, NULL, "% of the workers' time");
    plot_panel_yformat(pc, "%.0f%%");

    static char cats[STUDY_MAX][64];
    const char *catp[STUDY_MAX];
    double bx[STUDY_MAX], by[STUDY_MAX];
    plot_color_t bc[STUDY_MAX];
    int nb = 0, nl = 0;
    char runs[1024] = "";
    for (int i = 0; i < n; i++) {
        if (strcmp(c[i].s.model, model) || !isfinite(c[i].ips))
            continue;
        char label[64];
        s_config_label(&c[i], label, sizeof label);
        /* Colour by mode (as in the other panels), dashed from 4 workers
         * up, thin when compressed. */
        plot_series_t *sr = plot_panel_line_markers(pa, c[i].acc.v.x, c[i].acc.v.y, c[i].acc.v.n,
                                                    s_mode_color(c[i].s.mode), label);
        nl++;
        plot_series_dashed(sr, c[i].s.workers >= 4);
        if (strcmp(c[i].s.compress, "none"))
            plot_series_width(sr, 1);
        snprintf(runs + strlen(runs), sizeof runs - strlen(runs), "%s%lld", runs[0] ? " " : "",
                 (long long)c[i].s.run_id);
        if (strcmp(c[i].s.mode, "basic") && isfinite(c[i].comm)) {
            snprintf(cats[nb], sizeof cats[nb], "%s", label);
            catp[nb] = cats[nb];
            bx[nb] = nb + 1;
            by[nb] = 100 * c[i].comm;
            bc[nb++] = s_mode_color(c[i].s.mode);
        }
    }
    if (!nl)
        plot_panel_empty_text(pa, "no finished run");
    s_speedup_panel(plot_fig_panel(f, 1), c, n, model);
    if (nb) {
        plot_panel_xcategories(pc, catp, nb);
        plot_series_t *bars = plot_panel_bars(pc, bx, by, (size_t)nb, plot_palette(0), NULL);
        plot_series_colors(bars, bc);
        plot_series_values(bars, "%.1f%%");
    } else {
        plot_panel_empty_text(pc, "no finished distributed run");
    }
    s_text(f, "model", "%s", model);
    s_text(f, "runs", "%s", runs);
    int rc = s_write(f, out);
    plot_fig_destroy(&f);
    return rc;
}

/* --study: one figure per model of the study in dbpath, into outdir (NULL:
 * the database's folder) as MODEL.png. 0, or 1 after printing why. */
static int s_report_study(metrics_t *m, const char *dbpath, const char *outdir)
{
    char dir[4096];
    if (!outdir) {
        snprintf(dir, sizeof dir, "%s", dbpath);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            snprintf(dir, sizeof dir, ".");
        outdir = dir;
    }
    static s_study_t st;
    if (metrics_study_each(m, s_add_config, &st) <= 0) {
        fprintf(stderr, "psreport: %s holds no study (%s); make study writes one\n", dbpath,
                metrics_errmsg(m));
        return 1;
    }
    if (st.dropped)
        fprintf(stderr,
                "psreport: warning: the study has more than %d configurations; the "
                "first %d are drawn\n",
                STUDY_MAX, STUDY_MAX);
    int rc = 0;
    for (int i = 0; i < st.n && rc == 0; i++)
        rc = s_config_figures(m, &st.c[i]);
    for (int i = 0; i < st.n && rc == 0; i++) {
        int first = 1;
        for (int j = 0; j < i && first; j++)
            first = strcmp(st.c[j].s.model, st.c[i].s.model) != 0;
        if (!first)
            continue;
        char out[4096 + sizeof st.c[i].s.model + 8];
        snprintf(out, sizeof out, "%s/%s.png", outdir, st.c[i].s.model);
        rc = s_mkdir_parent(out) || s_study_figure(dbpath, st.c, st.n, st.c[i].s.model, out);
    }
    for (int i = 0; i < st.n; i++)
        s_xy_free(&st.c[i].acc.v);
    return rc ? 1 : 0;
}

/* The figure of one run (the latest when run_id is 0) into out (by default
 * the file of its mode in results/). 0, or 1 after printing why. */
static int s_report_run(metrics_t *m, const char *dbpath, int64_t run_id, const char *out)
{
    int rc = 1;
    if (!run_id)
        run_id = metrics_run_latest(m);
    if (run_id <= 0) {
        if (run_id == 0)
            fprintf(stderr, "psreport: %s holds no runs yet; run training first.\n", dbpath);
        else
            fprintf(stderr, "psreport: %s\n", metrics_errmsg(m));
        return 1;
    }
    s_run_t r = {0};
    int found = metrics_run_get(m, run_id, &r.row);
    if (found == 0) {
        fprintf(stderr, "psreport: no run %lld in %s. Runs there:\n", (long long)run_id, dbpath);
        s_list_runs(m);
    } else if (found < 0) {
        fprintf(stderr, "psreport: run %lld: %s\n", (long long)run_id, metrics_errmsg(m));
    }
    if (found != 1)
        return 1;
    int64_t nsteps = s_load_run_data(m, &r);
    /* independent: the workers send epochs, no steps */
    if (nsteps == 0 && !strcmp(r.row.mode, "independent") && r.nw > 0)
        nsteps = 1;
    if (nsteps == 0)
        fprintf(stderr,
                "psreport: run %lld (%s, status %s) has no steps recorded; nothing to draw. "
                "It may have failed before its first step.\n",
                (long long)run_id, r.row.mode, r.row.status);
    if (nsteps > 0) {
        int basic = strcmp(r.row.mode, "basic") == 0;
        if (!out)
            out =
                basic ? "results/training_results.png" : "results/distributed_training_results.png";
        if (s_mkdir_parent(out) == 0)
            rc = basic ? s_report_basic(m, dbpath, &r, out)
                       : s_report_distributed(m, dbpath, &r, out);
        rc = rc ? 1 : 0;
    }
    s_run_free(&r);
    return rc;
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *dbpath = DEFAULT_DB, *out = NULL;
    int64_t run_id = 0;
    int comparison = 0, study = 0, db_given = 0;
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"run", required_argument, NULL, 'r'},
        {"out", required_argument, NULL, 'o'},
        {"comparison", no_argument, NULL, 'c'},
        {"study", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dbpath = optarg;
            db_given = 1;
            break;
        case 'o': out = optarg; break;
        case 'c': comparison = 1; break;
        case 's': study = 1; break;
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
        case 'h': fputs(s_usage, stdout); return 0;
        default: fputs(s_usage, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "psreport: unexpected argument '%s'\n%s", argv[optind], s_usage);
        return 2;
    }
    if (study && (comparison || run_id)) {
        fprintf(stderr, "psreport: --study draws every run of the study; it takes no --run or "
                        "--comparison\n");
        return 2;
    }
    if (study && !db_given)
        dbpath = "results/study/study.db";
    if (comparison && run_id) {
        fprintf(stderr, "psreport: --comparison draws the latest run of each mode; it takes no "
                        "--run\n");
        return 2;
    }

    char err[512];
    metrics_t *m = metrics_open_readonly(dbpath, err, sizeof err);
    if (!m) {
        fprintf(stderr, "psreport: %s\n", err);
        return 1;
    }
    int rc = 1;
    if (comparison) {
        if (!out)
            out = "results/comparison.png";
        if (s_mkdir_parent(out) == 0 && s_report_comparison(m, dbpath, out) == 0)
            rc = 0;
        metrics_close(&m);
        return rc;
    }

    if (study) {
        rc = s_report_study(m, dbpath, out);
        metrics_close(&m);
        return rc;
    }
    rc = s_report_run(m, dbpath, run_id, out);
    metrics_close(&m);
    return rc;
}
