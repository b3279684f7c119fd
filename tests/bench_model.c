/* bench_model: training speed of the model through the engine (engine_step:
 * gradient + SGD step on shuffled minibatches), at a given thread count and
 * batch size, and where a step's time goes.
 *
 *   bench_model DATA_DIR THREADS BATCH [IMAGES] [profile] [MODEL]
 *
 * MODEL is a name of the catalogue (models.h; default simpleconvnet;
 * profile: SimpleConvNet only). Prints "model threads=T batch=B
 * images_per_second=X ... name=MODEL mflop=F" (the median of 3
 * passes over IMAGES training images, default 10000), images per CPU-second,
 * the minimum, 10th percentile and median of the steps' wall times (ms)
 * and, with `profile`, a
 * table of each stage's CPU time per step (mean over threads) and its share
 * of their sum; "barrier wait" is the CPU time a thread spent spinning at the
 * engine's barriers (time asleep there is in the wall time only). */
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "clock.h"
#include "engine.h"
#include "idx.h"
#include "model.h"
#include "rng.h"

static double s_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Trains on `images` images in batches; returns the wall seconds. With
 * step_s, stores each step's wall seconds there (in step order). */
static double s_pass(engine_t *e, float *w, float *v, float *g, const idx_dataset_t *ds,
                     const int *order, int images, int batch, double *step_s)
{
    double t0 = clock_now(), t = t0;
    for (int lo = 0; lo + batch <= images; lo += batch) {
        engine_step(e, w, v, ds, order + lo, batch, 0.01f, 0.9f, g);
        if (step_s) {
            double now = clock_now();
            step_s[lo / batch] = now - t;
            t = now;
        }
    }
    return clock_now() - t0;
}

int main(int argc, char **argv)
{
    int threads, batch, images = 10000;
    char err[512];
    if (argc < 4 || args_int("THREADS", argv[2], 1, 256, &threads) != 0 ||
        args_int("BATCH", argv[3], 1, 4096, &batch) != 0 ||
        (argc > 4 && args_int("IMAGES", argv[4], 1, 60000, &images) != 0)) {
        fprintf(stderr, "usage: bench_model DATA_DIR THREADS BATCH [IMAGES] [profile] [MODEL]\n");
        return 2;
    }
    int profile = 0;
    const model_def_t *m = models_find(MODELS_DEFAULT);
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "profile") == 0)
            profile = 1;
        else if (!(m = models_find(argv[i]))) {
            char names[256];
            fprintf(stderr, "error: '%s' is neither profile nor a model (%s)\n", argv[i],
                    models_list(names, sizeof names));
            return 2;
        }
    }
    idx_dataset_t ds;
    if (idx_load(argv[1], "train", &ds, err, sizeof err) != 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (images > ds.count)
        images = ds.count;
    engine_t *e = engine_new(m, threads, batch, err, sizeof err);
    float *w = malloc(m->nparams * sizeof *w), *v = calloc(m->nparams, sizeof *v),
          *g = malloc(m->nparams * sizeof *g);
    int *order = malloc((size_t)ds.count * sizeof *order);
    if (!e || !w || !v || !g || !order) {
        fprintf(stderr, "error: %s\n", e ? "out of memory" : err);
        return 1;
    }
    models_init(m, w, 1);
    rng_t r;
    rng_seed(&r, 1);
    for (int i = 0; i < ds.count; i++)
        order[i] = i;
    for (int i = ds.count - 1; i > 0; i--) {
        int j = (int)rng_below(&r, (uint32_t)i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }

    s_pass(e, w, v, g, &ds, order, images < 2000 ? images : 2000, batch, NULL); /* warm-up */
    double ips[3], ipc[3];
    int done = images / batch * batch, nsteps = images / batch;
    double *step_s = malloc(3 * (size_t)(nsteps > 0 ? nsteps : 1) * sizeof *step_s);
    if (!step_s) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    for (int k = 0; k < 3; k++) {
        double c0 = s_cpu();
        ips[k] = done / s_pass(e, w, v, g, &ds, order, images, batch, step_s + (size_t)k * nsteps);
        ipc[k] = done / (s_cpu() - c0);
    }
    qsort(ips, 3, sizeof *ips, s_cmp);
    qsort(ipc, 3, sizeof *ipc, s_cmp);
    /* On a shared machine the fastest nsteps are the ones no other process
     * interrupted: the step time's low percentiles estimate a quiet machine's. */
    qsort(step_s, 3 * (size_t)nsteps, sizeof *step_s, s_cmp);
    printf("model threads=%d batch=%d images_per_second=%.0f images_per_cpu_second=%.0f "
           "step_ms_min=%.3f step_ms_p10=%.3f step_ms_median=%.3f name=%s mflop=%.2f\n",
           threads, batch, ips[1], ipc[1], 1e3 * step_s[0], 1e3 * step_s[3 * nsteps / 10],
           1e3 * step_s[3 * nsteps / 2], m->name, m->train_flop_per_image / 1e6);
    free(step_s);

    if (profile && m->optimized) {
        double prof[MODEL_PROF_N] = {0}, wall;
        engine_profile(e, 1);
        wall = s_pass(e, w, v, g, &ds, order, images, batch, NULL);
        engine_profile_read(e, prof);
        engine_profile(e, 0);
        double steps = done / batch, sum = 0.0;
        for (int s = 0; s < MODEL_PROF_N; s++)
            sum += prof[s];
        printf("profile threads=%d batch=%d: %.3f ms CPU per step and thread, %.3f ms wall "
               "per step\n",
               threads, batch, 1e3 * sum / steps, 1e3 * wall / steps);
        printf("  %-16s %10s %8s\n", "stage", "us/step", "share");
        for (int s = 0; s < MODEL_PROF_N; s++)
            printf("  %-16s %10.1f %7.1f%%\n", model_prof_names[s], 1e6 * prof[s] / steps,
                   100.0 * prof[s] / sum);
    }
    engine_destroy(&e);
    free(w);
    free(v);
    free(g);
    free(order);
    idx_free(&ds);
    return 0;
}
