/* engine: a fixed pool of threads that computes minibatch gradients and test
 * accuracy with the model; see engine.h. */
#include "engine.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dispatch.h"
#include "model.h"

/* The largest slice one thread handles at once during evaluation. */
#define ENGINE_EVAL_CHUNK 128

/* openblas_set_num_threads is OpenBLAS's own extension, declared in its
 * cblas.h on Debian but not in every BLAS's; declare it here. */
void openblas_set_num_threads(int num_threads);

typedef enum { JOB_GRADIENT, JOB_EVALUATE, JOB_QUIT } job_kind_t;

/* What every thread reads for the current job (written by thread 0 before
 * the start barrier, read-only until the end barrier). */
typedef struct {
    job_kind_t kind;
    const float *params;
    const idx_dataset_t *ds;
    const int *indices; /* gradient: the batch's image indices */
    int n;              /* gradient: batch size; evaluate: images to score */
    float *grad;        /* gradient: where the mean-loss gradient goes */
} job_t;

/* What one thread produced for the current job. */
typedef struct {
    double loss;
    int correct;
} result_t;

typedef struct {
    engine_t *e;
    int id;
    model_ws_t *ws;
    float *grad;                              /* this thread's gradient buffer */
    const uint8_t *images[ENGINE_EVAL_CHUNK]; /* pointers to this slice's images */
    uint8_t labels[ENGINE_EVAL_CHUNK];
    result_t result;
    int profiling;
    double prof[MODEL_PROF_N]; /* seconds per stage while profiling */
} s_thread_t;

struct engine {
    int threads, max_batch;
    int running; /* helper threads started and barriers initialised */
    pthread_t *tids;
    pthread_barrier_t start, mid, end;
    s_thread_t *w;
    job_t job;
};

/* This thread's CPU time in seconds (profiling). */
static double s_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The half-open range [lo, hi) of n items that thread id of t handles. */
static void s_slice(int n, int t, int id, int *lo, int *hi)
{
    *lo = (int)((long)n * id / t);
    *hi = (int)((long)n * (id + 1) / t);
}

HOT_KERNEL
static void s_gradient(engine_t *e, s_thread_t *w)
{
    const job_t *j = &e->job;
    int lo, hi;
    s_slice(j->n, e->threads, w->id, &lo, &hi);
    int m = hi - lo;
    for (int i = 0; i < m; i++) {
        int k = j->indices[lo + i];
        w->images[i] = j->ds->pixels + (size_t)k * MODEL_IMAGE_PIXELS;
        w->labels[i] = j->ds->labels[k];
    }
    if (m > 0)
        w->result.loss = model_forward_backward(j->params, w->images, w->labels, m,
                                                1.0f / (float)j->n, w->grad, w->ws);
    else {
        w->result.loss = 0.0;
        memset(w->grad, 0, MODEL_NPARAMS * sizeof(float));
    }

    pthread_barrier_wait(&e->mid);
    double t0 = w->profiling ? s_cpu_now() : 0.0;

    /* Sum one slice of the parameter vector over all threads, in thread order. */
    s_slice(MODEL_NPARAMS, e->threads, w->id, &lo, &hi);
    float *out = j->grad;
    memcpy(out + lo, e->w[0].grad + lo, (size_t)(hi - lo) * sizeof(float));
    for (int t = 1; t < e->threads; t++) {
        const float *g = e->w[t].grad;
        for (int i = lo; i < hi; i++)
            out[i] += g[i];
    }
    if (w->profiling)
        w->prof[MODEL_PROF_REDUCE] += s_cpu_now() - t0;
}

static void s_evaluate(engine_t *e, s_thread_t *w)
{
    const job_t *j = &e->job;
    int lo, hi;
    s_slice(j->n, e->threads, w->id, &lo, &hi);
    w->result.loss = 0.0;
    w->result.correct = 0;
    for (int s = lo; s < hi; s += ENGINE_EVAL_CHUNK) {
        int m = hi - s < ENGINE_EVAL_CHUNK ? hi - s : ENGINE_EVAL_CHUNK;
        for (int i = 0; i < m; i++) {
            w->images[i] = j->ds->pixels + (size_t)(s + i) * MODEL_IMAGE_PIXELS;
            w->labels[i] = j->ds->labels[s + i];
        }
        model_forward(j->params, w->images, m, w->ws);
        w->result.correct += model_count_correct(w->ws, w->labels, m);
        w->result.loss += model_loss_sum(w->ws, w->labels, m);
    }
}

static void s_run(engine_t *e, s_thread_t *w)
{
    if (e->job.kind == JOB_GRADIENT)
        s_gradient(e, w);
    else
        s_evaluate(e, w);
}

static void *s_thread_main(void *arg)
{
    s_thread_t *w = arg;
    engine_t *e = w->e;
    for (;;) {
        pthread_barrier_wait(&e->start);
        if (e->job.kind == JOB_QUIT)
            return NULL;
        s_run(e, w);
        pthread_barrier_wait(&e->end);
    }
}

/* Runs the job in e->job on all threads and waits for them. */
static void s_dispatch(engine_t *e)
{
    pthread_barrier_wait(&e->start);
    s_run(e, &e->w[0]);
    pthread_barrier_wait(&e->end);
}

engine_t *engine_new(int threads, int max_batch, char *err, size_t errlen)
{
    if (threads < 1 || threads > 256 || max_batch < 1) {
        snprintf(err, errlen, "engine: bad thread count %d or batch size %d", threads, max_batch);
        return NULL;
    }
    openblas_set_num_threads(1);
    engine_t *e = calloc(1, sizeof *e);
    if (!e)
        goto nomem;
    e->threads = threads;
    e->max_batch = max_batch;
    e->w = calloc((size_t)threads, sizeof *e->w);
    e->tids = calloc((size_t)threads, sizeof *e->tids);
    if (!e->w || !e->tids)
        goto nomem;
    int per_thread = (max_batch + threads - 1) / threads;
    if (per_thread > ENGINE_EVAL_CHUNK)
        goto toobig;
    for (int t = 0; t < threads; t++) {
        e->w[t].e = e;
        e->w[t].id = t;
        e->w[t].ws = model_ws_new(ENGINE_EVAL_CHUNK);
        e->w[t].grad = aligned_alloc(64, ((MODEL_NPARAMS * sizeof(float)) + 63) & ~(size_t)63);
        if (!e->w[t].ws || !e->w[t].grad)
            goto nomem;
    }
    pthread_barrier_init(&e->start, NULL, (unsigned)threads);
    pthread_barrier_init(&e->mid, NULL, (unsigned)threads);
    pthread_barrier_init(&e->end, NULL, (unsigned)threads);
    for (int t = 1; t < threads; t++) {
        int rc = pthread_create(&e->tids[t], NULL, s_thread_main, &e->w[t]);
        if (rc != 0) {
            /* The threads already started wait on a barrier that counts all
             * threads and cannot be released: like running out of memory
             * mid-way, this is fatal. */
            fprintf(stderr, "fatal: cannot start engine thread %d of %d: %s\n", t, threads,
                    strerror(rc));
            abort();
        }
    }
    e->running = 1;
    return e;
toobig:
    snprintf(err, errlen,
             "engine: batch %d over %d threads is %d images per thread; at most %d are "
             "supported (use more threads or a smaller batch)",
             max_batch, threads, per_thread, ENGINE_EVAL_CHUNK);
    engine_destroy(&e);
    return NULL;
nomem:
    snprintf(err, errlen, "engine: out of memory for %d threads", threads);
    engine_destroy(&e);
    return NULL;
}

void engine_destroy(engine_t **pe)
{
    if (!pe || !*pe)
        return;
    engine_t *e = *pe;
    if (e->running) {
        e->job.kind = JOB_QUIT;
        pthread_barrier_wait(&e->start); /* thread 0's arrival releases the others */
        for (int t = 1; t < e->threads; t++)
            pthread_join(e->tids[t], NULL);
        pthread_barrier_destroy(&e->start);
        pthread_barrier_destroy(&e->mid);
        pthread_barrier_destroy(&e->end);
    }
    if (e->w)
        for (int t = 0; t < e->threads; t++) {
            model_ws_destroy(&e->w[t].ws);
            free(e->w[t].grad);
        }
    free(e->w);
    free(e->tids);
    free(e);
    *pe = NULL;
}

int engine_threads(const engine_t *e)
{
    return e->threads;
}

double engine_gradient(engine_t *e, const float *params, const idx_dataset_t *ds,
                       const int *indices, int n, float *grad)
{
    e->job = (job_t){JOB_GRADIENT, params, ds, indices, n, grad};
    s_dispatch(e);
    double loss = 0.0;
    for (int t = 0; t < e->threads; t++)
        loss += e->w[t].result.loss;
    return loss / n;
}

double engine_evaluate(engine_t *e, const float *params, const idx_dataset_t *ds, int limit,
                       double *mean_loss)
{
    int n = (limit <= 0 || limit > ds->count) ? ds->count : limit;
    e->job = (job_t){JOB_EVALUATE, params, ds, NULL, n, NULL};
    s_dispatch(e);
    double loss = 0.0;
    long correct = 0;
    for (int t = 0; t < e->threads; t++) {
        loss += e->w[t].result.loss;
        correct += e->w[t].result.correct;
    }
    if (mean_loss)
        *mean_loss = n ? loss / n : 0.0;
    return n ? 100.0 * (double)correct / n : 0.0;
}

void engine_profile(engine_t *e, int on)
{
    for (int t = 0; t < e->threads; t++) {
        s_thread_t *w = &e->w[t];
        if (on)
            memset(w->prof, 0, sizeof w->prof);
        w->profiling = on;
        model_ws_profile(w->ws, on ? w->prof : NULL);
    }
}

void engine_profile_read(const engine_t *e, double *seconds)
{
    for (int s = 0; s < MODEL_PROF_N; s++) {
        seconds[s] = 0.0;
        for (int t = 0; t < e->threads; t++)
            seconds[s] += e->w[t].prof[s] / e->threads;
    }
}
