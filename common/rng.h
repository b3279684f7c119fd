/* rng: a small, fast, seedable random number generator (xoshiro256**, seeded
 * through splitmix64) and the few draws this project needs. Same seed, same
 * sequence, on every machine. One generator per thread. */
#ifndef RNG_H
#define RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} rng_t;

void rng_seed(rng_t *r, uint64_t seed);
uint64_t rng_next(rng_t *r);
/* Uniform integer in [0, bound), unbiased; bound > 0. */
uint32_t rng_below(rng_t *r, uint32_t bound);
/* Uniform float in [lo, hi). */
float rng_uniform(rng_t *r, float lo, float hi);
/* Fisher-Yates shuffle of n ints. */
void rng_shuffle(rng_t *r, int *a, int n);

#endif
