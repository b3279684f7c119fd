/* basic: single-process training, the original study's train_basic.py.
 * Trains on the first train_limit training images with SGD + momentum,
 * evaluates on the test set after every epoch, logs the run into the metrics
 * database as a run with one worker and saves a PyTorch-loadable model. */
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

int basic_run(const worker_opts_t *o)
{
    char err[512];
    int status = 1;
    idx_dataset_t train = {0}, test = {0};
    engine_t *eng = NULL;
    metrics_t *db = NULL;
    float *params = NULL, *mom = NULL, *grad = NULL;
    int *order = NULL;

    if (worker_load_data(o->data_dir, &train, &test) != 0)
        return 1;
    int n = (o->train_limit > 0 && o->train_limit < train.count) ? o->train_limit : train.count;
    int batches = (n + o->batch_size - 1) / o->batch_size;
    printf("basic mode: %d training images, %d test images, batch %d, %d epochs, lr %g, "
           "momentum %g, seed %llu, %d threads\n",
           n, o->test_limit > 0 && o->test_limit < test.count ? o->test_limit : test.count,
           o->batch_size, o->epochs, o->lr, o->momentum, (unsigned long long)o->seed,
           o->threads);

    eng = engine_new(o->threads, o->batch_size, err, sizeof err);
    if (!eng) {
        fprintf(stderr, "error: %s\n", err);
        goto out;
    }
    params = malloc(MODEL_NPARAMS * sizeof(float));
    mom = calloc(MODEL_NPARAMS, sizeof(float));
    grad = malloc(MODEL_NPARAMS * sizeof(float));
    order = malloc((size_t)n * sizeof(int));
    if (!params || !mom || !grad || !order) {
        fprintf(stderr, "error: out of memory\n");
        goto out;
    }
    model_init(params, o->seed);
    /* Basic mode is the one-worker case of the distributed split. */
    shard_indices(o->seed, n, 1, 0, order);
    rng_t rng;
    shard_epoch_rng(&rng, o->seed, 0);

    db = metrics_open(o->db, err, sizeof err);
    if (!db) {
        fprintf(stderr, "error: %s\n", err);
        goto out;
    }
    metrics_run_info_t info = {.mode = "basic", .dataset = o->data_dir, .workers = 1,
                               .epochs = o->epochs, .batch_size = o->batch_size,
                               .threads = o->threads, .train_limit = n, .lr = o->lr,
                               .momentum = o->momentum, .seed = o->seed};
    int64_t run = metrics_run_begin(db, &info);
    if (run < 0 || metrics_worker(db, run, 0, "basic", NULL, n, o->threads, 0) != 0) {
        fprintf(stderr, "error: %s\n", metrics_errmsg(db));
        goto out;
    }
    printf("metrics: run %lld in %s\n", (long long)run, o->db);

    progress_t prog;
    progress_init(&prog, o->epochs, batches, NULL);
    double run_start = clock_now(), train_seconds = 0.0, accuracy = 0.0;
    long step = 0;
    for (int epoch = 1; epoch <= o->epochs && !worker_stop; epoch++) {
        rng_shuffle(&rng, order, n);
        progress_epoch_start(&prog);
        double t0 = clock_now(), loss_sum = 0.0;
        for (int b = 0; b < batches && !worker_stop; b++) {
            int lo = b * o->batch_size;
            int m = n - lo < o->batch_size ? n - lo : o->batch_size;
            double loss = engine_gradient(eng, params, &train, order + lo, m, grad);
            model_sgd_step(params, mom, grad, MODEL_NPARAMS, (float)o->lr, (float)o->momentum);
            loss_sum += loss;
            step++;
            if (metrics_step(db, run, 0, step, epoch, loss, clock_now() - run_start) != 0)
                fprintf(stderr, "warning: %s\n", metrics_errmsg(db));
            progress_batch(&prog, epoch, b + 1, loss);
        }
        if (worker_stop)
            break;
        double epoch_seconds = clock_now() - t0;
        train_seconds += epoch_seconds;
        double test_loss;
        accuracy = engine_evaluate(eng, params, &test, o->test_limit, &test_loss);
        progress_clear(&prog);
        printf("epoch %d/%d: train loss %.4f, test loss %.4f, test accuracy %.2f%%, %.1f s "
               "(%.0f images/s)\n",
               epoch, o->epochs, loss_sum / batches, test_loss, accuracy, epoch_seconds,
               n / epoch_seconds);
        fflush(stdout);
        metrics_epoch_t e = {.epoch = epoch, .train_loss = loss_sum / batches,
                             .test_accuracy = accuracy, .epoch_seconds = epoch_seconds,
                             .compute_seconds = epoch_seconds, .images = n};
        if (metrics_epoch(db, run, 0, &e, clock_now() - run_start) != 0)
            fprintf(stderr, "warning: %s\n", metrics_errmsg(db));
    }
    if (worker_stop) {
        progress_clear(&prog);
        fprintf(stderr, "interrupted: run %lld marked failed; no model saved\n", (long long)run);
        metrics_run_end(db, run, "failed", accuracy, train_seconds);
        goto out;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/model_basic.safetensors", o->out_dir);
    char seed_s[32], acc_s[32];
    snprintf(seed_s, sizeof seed_s, "%llu", (unsigned long long)o->seed);
    snprintf(acc_s, sizeof acc_s, "%.2f", accuracy);
    const char *meta[] = {"format", "pt", "mode", "basic", "seed", seed_s,
                          "test_accuracy", acc_s, NULL};
    if (fs_mkdirs(o->out_dir) != 0) {
        fprintf(stderr, "error: cannot create the output directory %s: %s\n", o->out_dir,
                strerror(errno));
        metrics_run_end(db, run, "failed", accuracy, train_seconds);
        goto out;
    }
    if (modelfile_save(path, params, meta, err, sizeof err) != 0) {
        fprintf(stderr, "error: cannot save the model: %s\n", err);
        metrics_run_end(db, run, "failed", accuracy, train_seconds);
        goto out;
    }
    printf("model saved: %s\n", path);
    if (metrics_run_end(db, run, "done", accuracy, train_seconds) != 0)
        fprintf(stderr, "warning: %s\n", metrics_errmsg(db));
    worker_summary(o->epochs, accuracy, train_seconds, (double)n * o->epochs);
    status = 0;
out:
    metrics_close(&db);
    engine_destroy(&eng);
    free(params);
    free(mom);
    free(grad);
    free(order);
    idx_free(&train);
    idx_free(&test);
    return status;
}
