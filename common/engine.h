/* engine: runs the model over a minibatch on several threads.
 *
 * The batch is split into one contiguous slice per thread; each thread runs
 * forward and backward on its slice in its own workspace and gradient buffer
 * (scaled by 1/B so the slices add up to the mean-loss gradient). Then every
 * thread sums one slice of the parameter vector across the buffers, in thread
 * order, so the result depends only on the data and the thread count: the same
 * seed and thread count give the same result, bit for bit.
 *
 * The calling thread works as thread 0; threads-1 helper threads wait on a
 * barrier between jobs. Nothing is allocated after engine_new. BLAS is set to
 * one thread: parallelism is the program's. One thread owns an engine_t. */
#ifndef ENGINE_H
#define ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "idx.h"

typedef struct engine engine_t;

/* threads >= 1; max_batch is the largest batch engine_gradient will see.
 * NULL with a message in err on failure. */
engine_t *engine_new(int threads, int max_batch, char *err, size_t errlen);
void engine_destroy(engine_t **pe);
int engine_threads(const engine_t *e);

/* Gradient of the mean cross-entropy over the n (<= max_batch) images
 * ds[indices[0..n)] into grad (MODEL_NPARAMS floats); returns the mean loss. */
double engine_gradient(engine_t *e, const float *params, const idx_dataset_t *ds,
                       const int *indices, int n, float *grad);

/* Test accuracy in percent over the first `limit` images of ds (all if
 * limit <= 0 or larger than the set), evaluated in chunks of up to 1000; the
 * mean loss is stored in *mean_loss when not NULL. */
double engine_evaluate(engine_t *e, const float *params, const idx_dataset_t *ds, int limit,
                       double *mean_loss);

/* Profiling (make bench): on != 0 zeroes each thread's stage times and starts
 * adding to them (model.h's model_prof_stage_t, MODEL_PROF_REDUCE included);
 * on == 0 stops. engine_profile_read stores the mean over threads of each
 * stage's seconds into seconds[MODEL_PROF_N] (MODEL_PROF_SGD is left 0). */
void engine_profile(engine_t *e, int on);
void engine_profile_read(const engine_t *e, double *seconds);

#endif
