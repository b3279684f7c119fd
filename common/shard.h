/* shard: which training images each worker owns and in which order it
 * visits them, derived from the run's seed alone, so that the server, every
 * worker and the tests agree without sending index lists around.
 *
 * The first `total` training images are permuted with the seed and cut into
 * `workers` contiguous pieces whose sizes differ by at most one (the original
 * study's shuffled split). Each epoch a worker shuffles its piece with its own
 * generator (seed, worker id). */
#ifndef SHARD_H
#define SHARD_H

#include <stdint.h>

#include "rng.h"

/* Number of images worker k of `workers` owns out of `total`. */
int shard_size(int total, int workers, int k);

/* Fills out[0..shard_size) with worker k's image indices. */
void shard_indices(uint64_t seed, int total, int workers, int k, int *out);

/* The generator worker k uses to shuffle its shard before each epoch. */
void shard_epoch_rng(rng_t *r, uint64_t seed, int k);

#endif
