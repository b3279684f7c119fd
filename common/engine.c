/* engine: a fixed pool of threads that computes minibatch gradients and test
 * accuracy with a model, SimpleConvNet's own engine (model.h) or the layer
 * engine (layers.h); see engine.h. */
#include "engine.h"

#include <assert.h>
#include <cblas.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "dispatch.h"
#include "layers.h"
#include "model.h"
#include "models.h"

/* The largest slice one thread handles at once during evaluation. */
#define ENGINE_EVAL_CHUNK 128

/* The layer engine's smallest workspace (images): evaluation runs in chunks
 * of the workspace's capacity, and fully connected layers want a few rows. */
#define ENGINE_LAYERS_MIN_CAP 32

/* How long a thread that reaches a barrier first spins before it sleeps: a
 * futex wake-up costs tens of microseconds on this VM, several times a step;
 * the other thread is usually that close behind. */
#define ENGINE_SPIN_SECONDS 50e-6

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
    const int *indices;    /* gradient: the batch's image indices */
    int n;                 /* gradient: batch size; evaluate: images to score */
    float *grad;           /* gradient: where the mean-loss gradient goes */
    engine_ready_fn ready; /* gradient: called when a layer's range is final, or NULL */
    void *ready_arg;
    float *sgd_w, *sgd_v; /* engine_step: weights and momentum to update, else NULL */
    float lr, momentum;
    int nws;             /* gradient: the workspaces of the non-empty slices, in thread order */
    uint64_t seed, step; /* gradient, layer engine: dropout's masks (layers_dropout_t) */
} job_t;

/* What one thread produced for the current job. */
typedef struct {
    double loss;
    int correct;
} result_t;

/* One thread's state; aligned so that no two threads write one cache line. */
typedef struct {
    _Alignas(64) engine_t *e;
    int id;
    model_ws_t *ws;   /* SimpleConvNet's engine, else NULL */
    layers_ws_t *lws; /* the layer engine, else NULL */
    float *grad; /* this thread's summed part of the gradient, e->nsum floats (NULL for thread 0) */
    const uint8_t *images[ENGINE_EVAL_CHUNK]; /* pointers to this slice's images */
    uint8_t labels[ENGINE_EVAL_CHUNK];
    result_t result;
    double prof[MODEL_PROF_N]; /* seconds per stage while profiling */
} s_thread_t;

/* A reusable barrier for the engine's threads: the last to arrive starts a
 * new generation; the others spin on it for ENGINE_SPIN_SECONDS, then sleep
 * on a futex. Between jobs the helper threads wait here with no deadline:
 * they are idle until thread 0 brings the next job. Within a job every
 * thread arrives after a bounded computation. */
typedef struct {
    _Alignas(64) atomic_uint arrived;
    _Alignas(64) atomic_uint gen;
    atomic_uint sleepers;
    unsigned n;
} s_barrier_t;

struct engine {
    const model_def_t *m;
    int threads, max_batch;
    /* The gradient's first nsum floats are per thread and summed across
     * threads (SimpleConvNet: the conv layers; the layer engine: all of it);
     * the first `early` ranges of the model's edges fire inside the job. */
    size_t nsum;
    int early;
    uint64_t seed, step; /* dropout: the next gradient's seed and step */
    int running;         /* helper threads started */
    pthread_t *tids;
    s_barrier_t bar;
    s_thread_t *w;
    const model_ws_t **ws; /* job.nws workspaces for model_fc_grad */
    job_t job;
};

/* Profiling ticks (SimpleConvNet's engine only: the layer engine has no stages). */
static void s_tick(s_thread_t *w, model_prof_stage_t stage)
{
    if (w->ws)
        model_ws_tick(w->ws, stage);
}

static void s_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void s_barrier_wait(s_barrier_t *b)
{
    /* Read the generation before arriving: it cannot move until we have. */
    unsigned gen = atomic_load(&b->gen);
    if (atomic_fetch_add(&b->arrived, 1) + 1 == b->n) {
        atomic_store(&b->arrived, 0);
        atomic_store(&b->gen, gen + 1);
        if (atomic_load(&b->sleepers) > 0)
            syscall(SYS_futex, &b->gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
        return;
    }
    double until = clock_now() + ENGINE_SPIN_SECONDS;
    for (unsigned i = 1; atomic_load(&b->gen) == gen; i++) {
        s_pause();
        if (i % 32 == 0 && clock_now() > until) {
            /* Sleep; the waker sees sleepers > 0 or we see the new gen
             * (sequentially consistent atomics), and FUTEX_WAIT returns at
             * once if gen has already moved. */
            atomic_fetch_add(&b->sleepers, 1);
            while (atomic_load(&b->gen) == gen)
                syscall(SYS_futex, &b->gen, FUTEX_WAIT_PRIVATE, gen, NULL, NULL, 0);
            atomic_fetch_sub(&b->sleepers, 1);
            return;
        }
    }
}

/* The half-open range [lo, hi) of n items that thread id of t handles. */
static void s_slice(int n, int t, int id, int *lo, int *hi)
{
    *lo = (int)((long)n * id / t);
    *hi = (int)((long)n * (id + 1) / t);
}

/* As s_slice for the parameter vector's [base, base + n), with inner
 * boundaries on multiples of 16 floats (64 bytes: no cache line written by
 * two threads). */
static void s_slice_lines(int base, int n, int t, int id, int *lo, int *hi)
{
    s_slice(n, t, id, lo, hi);
    *lo = id == 0 ? base : base + (*lo & ~15);
    *hi = id == t - 1 ? base + n : base + (*hi & ~15);
}

/* Calls the job's ready callback for the model's edge ranges [from, to). */
static void s_fire(const engine_t *e, const job_t *j, int from, int to, double loss)
{
    for (int r = from; r < to; r++)
        j->ready(j->ready_arg, e->m->edges[r + 1], e->m->edges[r], loss);
}

/* After the backward pass: thread id's share of the per-thread gradients'
 * sum over threads (in thread order, onto thread 0's, which is already in
 * the output) and, for engine_step, its share of the SGD update. */
HOT_KERNEL
static void s_reduce_and_step(engine_t *e, s_thread_t *w)
{
    const job_t *j = &e->job;
    int lo, hi;
    int nsum = (int)e->nsum, nparams = (int)e->m->nparams;
    s_slice_lines(0, nsum, e->threads, w->id, &lo, &hi);
    float *out = j->grad;
    for (int t = 1; t < e->threads; t++) {
        const float *g = e->w[t].grad;
        for (int i = lo; i < hi; i++)
            out[i] += g[i];
    }
    s_tick(w, MODEL_PROF_REDUCE);
    if (!j->sgd_w)
        return;
    model_sgd_step(j->sgd_w + lo, j->sgd_v + lo, out + lo, (size_t)(hi - lo), j->lr, j->momentum);
    s_slice_lines(nsum, nparams - nsum, e->threads, w->id, &lo, &hi);
    model_sgd_step(j->sgd_w + lo, j->sgd_v + lo, out + lo, (size_t)(hi - lo), j->lr, j->momentum);
    s_tick(w, MODEL_PROF_SGD);
}

/* The job's mean loss: the slices' summed losses, in thread order. */
static double s_loss(const engine_t *e)
{
    double loss = 0.0;
    for (int t = 0; t < e->threads; t++)
        loss += e->w[t].result.loss;
    return loss / e->job.n;
}

/* Points w->images and w->labels at thread w's slice of the job's batch;
 * returns its size, and its first position in the batch in *lo. */
static int s_gather(const engine_t *e, s_thread_t *w, int *lo)
{
    const job_t *j = &e->job;
    int hi;
    s_slice(j->n, e->threads, w->id, lo, &hi);
    for (int i = 0; i < hi - *lo; i++) {
        int k = j->indices[*lo + i];
        w->images[i] = j->ds->pixels + (size_t)k * MODEL_IMAGE_PIXELS;
        w->labels[i] = j->ds->labels[k];
    }
    return hi - *lo;
}

/* One thread's part of a gradient job: forward and loss on its slice of the
 * batch; after a barrier, its share of fc2's and fc1's gradients over every
 * slice (no sum across threads needed for them: 92% of the parameters); its
 * slice's conv backward; after a barrier, its share of the conv gradients'
 * sum (and of the SGD update). */
static void s_gradient(engine_t *e, s_thread_t *w)
{
    const job_t *j = &e->job;
    int lo, m = s_gather(e, w, &lo);
    /* Thread 0's conv gradients go straight into the output: the sum over
     * threads adds the others' to them, in thread order. */
    float *conv_grad = w->id == 0 ? j->grad : w->grad;
    w->result.loss = 0.0;
    s_tick(w, MODEL_PROF_N);
    if (m > 0)
        w->result.loss =
            model_forward_loss(j->params, w->images, w->labels, m, 1.0f / (float)j->n, w->ws);

    s_barrier_wait(&e->bar); /* every slice's fc output gradients are ready */
    s_tick(w, MODEL_PROF_WAIT);
    model_fc_grad(e->ws, j->nws, w->id, e->threads, j->grad);
    s_tick(w, MODEL_PROF_FC_B);
    if (j->ready) {
        if (e->threads > 1) {
            s_barrier_wait(&e->bar); /* every thread's share of them is done */
            s_tick(w, MODEL_PROF_WAIT);
        }
        if (w->id == 0) {
            double loss = s_loss(e); /* every slice's forward is done: first barrier */
            s_fire(e, j, 0, e->early, loss);
        }
        s_tick(w, MODEL_PROF_N);
    }
    if (m > 0)
        model_conv_backward(j->params, w->ws, conv_grad);
    else
        memset(conv_grad, 0, MODEL_FC1_W * sizeof(float));

    s_barrier_wait(&e->bar); /* every thread's conv gradients are ready */
    s_tick(w, MODEL_PROF_WAIT);
    s_reduce_and_step(e, w);
}

/* One thread's part of a gradient job with the layer engine: forward and
 * backward of its slice into its own gradient (thread 0's straight into the
 * output); after a barrier, its share of their sum and of the SGD update. */
static void s_gradient_layers(engine_t *e, s_thread_t *w)
{
    const job_t *j = &e->job;
    int lo, m = s_gather(e, w, &lo);
    float *grad = w->id == 0 ? j->grad : w->grad;
    layers_dropout_t drop = {.seed = j->seed, .step = j->step, .first = lo};
    w->result.loss = 0.0;
    if (m > 0)
        w->result.loss = layers_forward_backward(j->params, w->images, w->labels, m,
                                                 1.0f / (float)j->n, &drop, grad, w->lws);
    else
        memset(grad, 0, e->nsum * sizeof(float));
    s_barrier_wait(&e->bar); /* every thread's gradient is ready */
    s_reduce_and_step(e, w);
}

static void s_evaluate(engine_t *e, s_thread_t *w)
{
    const job_t *j = &e->job;
    int lo, hi;
    s_slice(j->n, e->threads, w->id, &lo, &hi);
    w->result.loss = 0.0;
    w->result.correct = 0;
    int chunk = w->ws ? ENGINE_EVAL_CHUNK : layers_ws_capacity(w->lws);
    for (int s = lo; s < hi; s += chunk) {
        int m = hi - s < chunk ? hi - s : chunk;
        for (int i = 0; i < m; i++) {
            w->images[i] = j->ds->pixels + (size_t)(s + i) * MODEL_IMAGE_PIXELS;
            w->labels[i] = j->ds->labels[s + i];
        }
        const float *logits;
        if (w->ws) {
            model_forward(j->params, w->images, m, w->ws);
            logits = model_ws_logits(w->ws);
        } else {
            layers_forward(j->params, w->images, m, w->lws);
            logits = layers_ws_logits(w->lws);
        }
        w->result.correct += model_argmax_correct(logits, w->labels, m);
        w->result.loss += model_ce(logits, w->labels, m, 0.0f, NULL);
    }
}

static void s_run(engine_t *e, s_thread_t *w)
{
    if (e->job.kind == JOB_GRADIENT && e->m->optimized)
        s_gradient(e, w);
    else if (e->job.kind == JOB_GRADIENT)
        s_gradient_layers(e, w);
    else
        s_evaluate(e, w);
}

static void *s_thread_main(void *arg)
{
    s_thread_t *w = arg;
    engine_t *e = w->e;
    for (;;) {
        s_barrier_wait(&e->bar); /* the start of a job */
        if (e->job.kind == JOB_QUIT)
            return NULL;
        s_run(e, w);
        s_barrier_wait(&e->bar); /* its end */
    }
}

/* Runs the job in e->job on all threads and waits for them. */
static void s_dispatch(engine_t *e)
{
    s_barrier_wait(&e->bar);
    s_run(e, &e->w[0]);
    s_barrier_wait(&e->bar);
}

engine_t *engine_new(const model_def_t *m, int threads, int max_batch, char *err, size_t errlen)
{
    if (!m) {
        snprintf(err, errlen, "engine: no model given");
        return NULL;
    }
    if (layers_check(m, err, errlen) != 0)
        return NULL;
    if (threads < 1 || threads > 256 || max_batch < 1) {
        snprintf(err, errlen, "engine: bad thread count %d or batch size %d", threads, max_batch);
        return NULL;
    }
    openblas_set_num_threads(1);
    engine_t *e = calloc(1, sizeof *e);
    if (!e)
        goto nomem;
    e->m = m;
    e->threads = threads;
    e->max_batch = max_batch;
    e->nsum = m->optimized ? MODEL_FC1_W : m->nparams;
    e->early = m->optimized ? 2 : 0;
    e->w = aligned_alloc(64, (size_t)threads * sizeof *e->w);
    if (e->w)
        memset(e->w, 0, (size_t)threads * sizeof *e->w);
    e->tids = calloc((size_t)threads, sizeof *e->tids);
    e->ws = calloc((size_t)threads, sizeof *e->ws);
    if (!e->w || !e->tids || !e->ws)
        goto nomem;
    int per_thread = (max_batch + threads - 1) / threads;
    if (per_thread > ENGINE_EVAL_CHUNK)
        goto toobig;
    for (int t = 0; t < threads; t++) {
        e->w[t].e = e;
        e->w[t].id = t;
        if (m->optimized) {
            e->w[t].ws = model_ws_new(ENGINE_EVAL_CHUNK);
            if (!e->w[t].ws)
                goto nomem;
        } else {
            int cap = per_thread > ENGINE_LAYERS_MIN_CAP ? per_thread : ENGINE_LAYERS_MIN_CAP;
            e->w[t].lws = layers_ws_new(m, cap, err, errlen);
            if (!e->w[t].lws) {
                engine_destroy(&e);
                return NULL;
            }
        }
        if (t == 0) /* thread 0's part goes straight into the output */
            continue;
        e->w[t].grad = aligned_alloc(64, ((e->nsum * sizeof(float)) + 63) & ~(size_t)63);
        if (!e->w[t].grad)
            goto nomem;
    }
    e->bar.n = (unsigned)threads;
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
        s_barrier_wait(&e->bar); /* thread 0's arrival releases the others */
        for (int t = 1; t < e->threads; t++)
            pthread_join(e->tids[t], NULL);
    }
    if (e->w)
        for (int t = 0; t < e->threads; t++) {
            model_ws_destroy(&e->w[t].ws);
            layers_ws_destroy(&e->w[t].lws);
            free(e->w[t].grad);
        }
    free(e->w);
    free(e->tids);
    free(e->ws);
    free(e);
    *pe = NULL;
}

int engine_threads(const engine_t *e)
{
    return e->threads;
}

const model_def_t *engine_model(const engine_t *e)
{
    return e->m;
}

void engine_dropout_seed(engine_t *e, uint64_t seed, uint64_t step)
{
    e->seed = seed;
    e->step = step;
}

/* Runs a gradient job (and with sgd_w, the SGD step); fires the conv
 * layers' ranges after it (the fc layers' fire inside it). */
static double s_gradient_job(engine_t *e, job_t job)
{
    assert(job.n >= 1 && job.n <= e->max_batch);
    job.kind = JOB_GRADIENT;
    job.nws = 0;
    for (int t = 0; t < e->threads; t++) {
        int lo, hi;
        s_slice(job.n, e->threads, t, &lo, &hi);
        if (hi > lo)
            e->ws[job.nws++] = e->w[t].ws;
    }
    job.seed = e->seed;
    job.step = e->step++;
    e->job = job;
    s_dispatch(e);
    double loss = s_loss(e);
    if (job.ready)
        s_fire(e, &job, e->early, e->m->nedges - 1, loss);
    return loss;
}

int engine_ranges_in_backward(const engine_t *e)
{
    return e->early;
}

/* A gradient job's common fields. */
static job_t s_job(const float *params, const idx_dataset_t *ds, const int *indices, int n,
                   float *grad)
{
    return (job_t){.params = params, .ds = ds, .indices = indices, .n = n, .grad = grad};
}

double engine_gradient_hooked(engine_t *e, const float *params, const idx_dataset_t *ds,
                              const int *indices, int n, float *grad, engine_ready_fn ready,
                              void *arg)
{
    job_t job = s_job(params, ds, indices, n, grad);
    job.ready = ready;
    job.ready_arg = arg;
    return s_gradient_job(e, job);
}

double engine_gradient(engine_t *e, const float *params, const idx_dataset_t *ds,
                       const int *indices, int n, float *grad)
{
    return engine_gradient_hooked(e, params, ds, indices, n, grad, NULL, NULL);
}

double engine_step(engine_t *e, float *params, float *velocity, const idx_dataset_t *ds,
                   const int *indices, int n, float lr, float momentum, float *grad)
{
    job_t job = s_job(params, ds, indices, n, grad);
    job.sgd_w = params;
    job.sgd_v = velocity;
    job.lr = lr;
    job.momentum = momentum;
    return s_gradient_job(e, job);
}

double engine_evaluate(engine_t *e, const float *params, const idx_dataset_t *ds, int limit,
                       double *mean_loss)
{
    int n = (limit <= 0 || limit > ds->count) ? ds->count : limit;
    e->job = (job_t){.kind = JOB_EVALUATE, .params = params, .ds = ds, .n = n};
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
        if (w->ws)
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
