/* basic: single-process training, the original study's train_basic.py.
 * Trains on the first train_limit training images with SGD + momentum,
 * evaluates on the test set after every epoch, logs the run into the metrics
 * database as a run with one worker (an event "model" names the model) and
 * saves a PyTorch-loadable model. Any model of the catalogue (--model). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "fs.h"
#include "idx.h"
#include "metrics.h"
#include "model.h"
#include "modelfile.h"
#include "progress.h"
#include "rng.h"
#include "shard.h"
#include "worker.h"

/* One basic run: what its steps share. */
typedef struct {
    const worker_opts_t *o;
    idx_dataset_t train, test;
    engine_t *eng;
    metrics_t *db;
    int64_t run;
    float *params, *mom, *grad; /* the model's nparams each */
    int *order;                 /* the training images, in this epoch's order */
    int n, batches;             /* training images used, batches per epoch */
    progress_t prog;
    double run_start; /* clock_now() at the start of training */
} basic_t;

/* Allocates the buffers and the engine, initialises the model and opens the
 * run in the metrics database. 0, or -1 after printing why. */
static int s_setup(basic_t *b)
{
    const worker_opts_t *o = b->o;
    char err[512];
    const model_def_t *m = o->model;
    b->eng = engine_new(m, o->threads, o->batch_size, err, sizeof err);
    if (!b->eng) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    engine_dropout_seed(b->eng, o->seed, 0);
    b->params = malloc(m->nparams * sizeof(float));
    b->mom = calloc(m->nparams, sizeof(float));
    b->grad = malloc(m->nparams * sizeof(float));
    b->order = malloc((size_t)b->n * sizeof(int));
    if (!b->params || !b->mom || !b->grad || !b->order) {
        fprintf(stderr, "error: out of memory\n");
        return -1;
    }
    models_init(m, b->params, o->seed);
    /* Basic mode is the one-worker case of the distributed split. */
    shard_indices(o->seed, b->n, 1, 0, b->order);

    b->db = metrics_open(o->db, err, sizeof err);
    if (!b->db) {
        fprintf(stderr, "error: %s\n", err);
        return -1;
    }
    metrics_run_info_t info = {.mode = "basic",
                               .model = m->name,
                               .dataset = o->dataset,
                               .workers = 1,
                               .epochs = o->epochs,
                               .batch_size = o->batch_size,
                               .threads = o->threads,
                               .train_limit = b->n,
                               .lr = o->lr,
                               .momentum = o->momentum,
                               .seed = o->seed};
    b->run = metrics_run_begin(b->db, &info);
    if (b->run < 0 || metrics_worker(b->db, b->run, 0, "basic", NULL, b->n, o->threads, 0) != 0 ||
        metrics_event(b->db, b->run, 0.0, 0, "model", m->name) != 0) {
        fprintf(stderr, "error: %s\n", metrics_errmsg(b->db));
        return -1;
    }
    printf("metrics: run %lld in %s\n", (long long)b->run, o->db);
    return 0;
}

/* Trains one epoch (stopping early on worker_stop); the sum of the batch
 * losses. *step counts the steps of the run. */
static double s_train_epoch(basic_t *b, int epoch, long *step)
{
    const worker_opts_t *o = b->o;
    double loss_sum = 0.0;
    for (int k = 0; k < b->batches && !worker_stop; k++) {
        int lo = k * o->batch_size;
        int m = b->n - lo < o->batch_size ? b->n - lo : o->batch_size;
        /* gradient and SGD step, the update split among the threads (the
         * same bits as engine_gradient + model_sgd_step) */
        double loss = engine_step(b->eng, b->params, b->mom, &b->train, b->order + lo, m,
                                  (float)o->lr, (float)o->momentum, b->grad);
        loss_sum += loss;
        ++*step;
        if (metrics_step(b->db, b->run, 0, *step, epoch, loss, clock_now() - b->run_start) != 0)
            fprintf(stderr, "warning: %s\n", metrics_errmsg(b->db));
        progress_batch(&b->prog, epoch, k + 1, loss);
    }
    return loss_sum;
}

/* Marks the run failed in the database; a failure to do so is a warning
 * (the run has already failed for another reason, said before). */
static void s_end_failed(const basic_t *b, double accuracy, double train_seconds)
{
    if (metrics_run_end(b->db, b->run, "failed", accuracy, train_seconds) != 0)
        fprintf(stderr, "warning: %s\n", metrics_errmsg(b->db));
}

/* Saves the trained model into --out. 0, or -1 after printing why. */
static int s_save(const basic_t *b, double accuracy)
{
    const worker_opts_t *o = b->o;
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/model_basic.safetensors", o->out_dir);
    char seed_s[32], acc_s[32];
    snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)o->seed);
    snprintf(acc_s, sizeof acc_s, "%.2f", accuracy);
    const char *meta[] = {"format", "pt",   "mode",          "basic", "model", o->model->name,
                          "seed",   seed_s, "test_accuracy", acc_s,   NULL};
    if (fs_mkdirs(o->out_dir) != 0) {
        fprintf(stderr, "error: cannot create the output directory %s: %s\n", o->out_dir,
                strerror(errno));
        return -1;
    }
    if (modelfile_save(path, o->model, b->params, meta, err, sizeof err) != 0) {
        fprintf(stderr, "error: cannot save the model: %s\n", err);
        return -1;
    }
    printf("model saved: %s\n", path);
    return 0;
}

int basic_run(const worker_opts_t *o)
{
    int status = 1;
    basic_t b = {.o = o};

    if (worker_load_data(o, o->dataset, &b.train, &b.test) != 0)
        return 1;
    b.n = (o->train_limit > 0 && o->train_limit < b.train.count) ? o->train_limit : b.train.count;
    b.batches = (b.n + o->batch_size - 1) / o->batch_size;
    printf("basic mode: %s, %s, %d training images, %d test images, batch %d, %d epochs, lr %g, "
           "momentum %g, seed %llu, %d threads\n",
           o->model->name, o->dataset, b.n,
           o->test_limit > 0 && o->test_limit < b.test.count ? o->test_limit : b.test.count,
           o->batch_size, o->epochs, o->lr, o->momentum, (unsigned long long)o->seed, o->threads);
    if (s_setup(&b) != 0)
        goto out;
    rng_t rng;
    shard_epoch_rng(&rng, o->seed, 0);

    progress_init(&b.prog, o->epochs, b.batches, NULL);
    b.run_start = clock_now();
    double train_seconds = 0.0, accuracy = 0.0;
    long step = 0;
    for (int epoch = 1; epoch <= o->epochs && !worker_stop; epoch++) {
        rng_shuffle(&rng, b.order, b.n);
        progress_epoch_start(&b.prog);
        double t0 = clock_now();
        double loss_sum = s_train_epoch(&b, epoch, &step);
        if (worker_stop)
            break;
        double epoch_seconds = clock_now() - t0;
        train_seconds += epoch_seconds;
        double test_loss;
        accuracy = engine_evaluate(b.eng, b.params, &b.test, o->test_limit, &test_loss);
        progress_clear(&b.prog);
        printf("epoch %d/%d: train loss %.4f, test loss %.4f, test accuracy %.2f%%, %.1f s "
               "(%.0f images/s)\n",
               epoch, o->epochs, loss_sum / b.batches, test_loss, accuracy, epoch_seconds,
               b.n / epoch_seconds);
        fflush(stdout);
        metrics_epoch_t e = {.epoch = epoch,
                             .train_loss = loss_sum / b.batches,
                             .test_accuracy = accuracy,
                             .epoch_seconds = epoch_seconds,
                             .compute_seconds = epoch_seconds,
                             .images = b.n};
        if (metrics_epoch(b.db, b.run, 0, &e, clock_now() - b.run_start) != 0)
            fprintf(stderr, "warning: %s\n", metrics_errmsg(b.db));
    }
    if (worker_stop) {
        progress_clear(&b.prog);
        fprintf(stderr, "interrupted: run %lld marked failed; no model saved\n", (long long)b.run);
        s_end_failed(&b, accuracy, train_seconds);
        goto out;
    }
    if (s_save(&b, accuracy) != 0) {
        s_end_failed(&b, accuracy, train_seconds);
        goto out;
    }
    if (metrics_run_end(b.db, b.run, "done", accuracy, train_seconds) != 0)
        fprintf(stderr, "warning: %s\n", metrics_errmsg(b.db));
    worker_summary(o->epochs, accuracy, train_seconds, (double)b.n * o->epochs);
    status = 0;
out:
    metrics_close(&b.db);
    engine_destroy(&b.eng);
    free(b.params);
    free(b.mom);
    free(b.grad);
    free(b.order);
    idx_free(&b.train);
    idx_free(&b.test);
    return status;
}
