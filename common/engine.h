/* engine: runs a model (models.h) over a minibatch on several threads.
 *
 * The batch is split into one contiguous slice per thread; each thread runs
 * forward and backward on its slice in its own workspace (scaled by 1/B so
 * the slices add up to the mean-loss gradient). SimpleConvNet runs on its
 * own optimised engine (model.h), every other model on the layer engine
 * (layers.h). With SimpleConvNet, the fully connected layers'
 * weight gradients (92% of the parameters) are not summed across threads:
 * after a barrier each thread computes a share of their output rows over
 * every slice (model_fc_grad); the conv layers' gradients are per thread and
 * then summed, each thread one piece of them, in thread order. With the
 * layer engine every thread computes a whole gradient of its slice, and the
 * threads sum them, each one piece, in thread order. engine_step
 * also splits the SGD update among the threads. Every sum runs in a fixed
 * order, so the result depends only on the data and the thread count: the
 * same seed and thread count give the same result, bit for bit (and the same
 * bits as summing whole per-thread gradients in thread order).
 *
 * The calling thread works as thread 0; threads-1 helper threads wait on a
 * barrier (spin briefly, then sleep) between jobs and at the 2 or 3 points
 * inside one. Nothing is allocated after engine_new. BLAS is set to one
 * thread: parallelism is the program's. One thread owns an engine_t. */
#ifndef ENGINE_H
#define ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "idx.h"
#include "models.h"

typedef struct engine engine_t;

/* An engine for model m (models.h; m->nparams floats of parameters and
 * gradients throughout); threads >= 1; max_batch is the largest batch
 * engine_gradient will see. NULL with a message in err on failure. */
engine_t *engine_new(const model_def_t *m, int threads, int max_batch, char *err, size_t errlen);
void engine_destroy(engine_t **pe);
int engine_threads(const engine_t *e);
const model_def_t *engine_model(const engine_t *e);

/* Dropout (models with dropout layers): the masks of the next gradient come
 * from (seed, step, each image's position in its batch), and step grows by
 * one with every gradient (layers.h); a new engine starts at seed 0, step 0.
 * The masks do not depend on the thread count. */
void engine_dropout_seed(engine_t *e, uint64_t seed, uint64_t step);

/* Gradient of the mean cross-entropy over the n (<= max_batch) images
 * ds[indices[0..n)] into grad (the model's nparams floats); returns the mean
 * loss. Dropout layers are on (training). */
double engine_gradient(engine_t *e, const float *params, const idx_dataset_t *ds,
                       const int *indices, int n, float *grad);

/* Called on the engine's calling thread when grad[lo, hi) is final (after the
 * cross-thread sum), for each range [edges[i+1], edges[i]) of the model's
 * edges (models.h) in the order backward completes them, with the batch's
 * mean loss (known from the first call on: the value engine_gradient_hooked
 * returns, bit for bit; a distributed worker sends it with the first part of
 * its push). The ranges cover [0, nparams) exactly once.
 * SimpleConvNet: fc2's and fc1's come before the convolutions' backward
 * starts (with 2+ threads, once every thread has done its share of them: one
 * more barrier); conv2's and conv1's when the whole gradient is done. The
 * layer engine: all of them when the whole gradient is done. The callback
 * must not call the engine. */
typedef void (*engine_ready_fn)(void *arg, size_t lo, size_t hi, double loss);

/* engine_gradient, calling ready(arg, lo, hi) as each layer's range becomes
 * final (ready NULL: engine_gradient). The same bits as engine_gradient. */
double engine_gradient_hooked(engine_t *e, const float *params, const idx_dataset_t *ds,
                              const int *indices, int n, float *grad, engine_ready_fn ready,
                              void *arg);

/* How many of the ranges engine_gradient_hooked reports (the first ones)
 * come while backward still runs (SimpleConvNet: fc2's and fc1's, 2); the
 * others come once the whole gradient is done (the layer engine: all). */
int engine_ranges_in_backward(const engine_t *e);

/* One training step: engine_gradient into grad, then model_sgd_step(params,
 * velocity, grad, nparams, lr, momentum), the update split among the
 * threads (the same bits as the two calls; saves the serial update). */
double engine_step(engine_t *e, float *params, float *velocity, const idx_dataset_t *ds,
                   const int *indices, int n, float lr, float momentum, float *grad);

/* Test accuracy in percent over the first `limit` images of ds (all if
 * limit <= 0 or larger than the set), dropout off; the mean loss is stored
 * in *mean_loss when not NULL. */
double engine_evaluate(engine_t *e, const float *params, const idx_dataset_t *ds, int limit,
                       double *mean_loss);

/* Profiling (make bench; SimpleConvNet's engine only): on != 0 zeroes each thread's stage times and
 * starts adding to them (model.h's model_prof_stage_t, MODEL_PROF_WAIT and MODEL_PROF_REDUCE
 * included, MODEL_PROF_SGD in engine_step); on == 0 stops. engine_profile_read stores the mean over
 * threads of each stage's seconds into seconds[MODEL_PROF_N]. */
void engine_profile(engine_t *e, int on);
void engine_profile_read(const engine_t *e, double *seconds);

#endif
