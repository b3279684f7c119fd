/* shard: the seeded split of the training set among workers; see shard.h. */
#include "shard.h"

#include <stdlib.h>

int shard_size(int total, int workers, int k)
{
    return (int)((long)total * (k + 1) / workers - (long)total * k / workers);
}

void shard_indices(uint64_t seed, int total, int workers, int k, int *out)
{
    int *perm = malloc((size_t)total * sizeof *perm);
    if (!perm)
        abort(); /* a few hundred KB at most; like Redis, out of memory is fatal */
    for (int i = 0; i < total; i++)
        perm[i] = i;
    rng_t r;
    rng_seed(&r, seed ^ 0x5348415244ULL); /* "SHARD": a stream apart from init's */
    rng_shuffle(&r, perm, total);
    int lo = (int)((long)total * k / workers), n = shard_size(total, workers, k);
    for (int i = 0; i < n; i++)
        out[i] = perm[lo + i];
    free(perm);
}

void shard_epoch_rng(rng_t *r, uint64_t seed, int k)
{
    rng_seed(r, seed ^ 0x5348554646ULL ^ ((uint64_t)(k + 1) << 40));
}
