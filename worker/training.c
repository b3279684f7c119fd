/* training: what the two modes of the worker share: finding and loading
 * the data set (and checking it is the server's) and the `summary:` line
 * that ends a run (scripts and tests read it). */
#include <stdio.h>

#include "worker.h"

const char *worker_data_dir(const worker_opts_t *o, const char *dataset)
{
    return o->data_dir ? o->data_dir : idx_dataset_dir(dataset);
}

int worker_load_data(const worker_opts_t *o, const char *dataset, idx_dataset_t *train,
                     idx_dataset_t *test)
{
    char err[512];
    const char *dir = worker_data_dir(o, dataset);
    if (idx_load(dir, "train", train, err, sizeof err) != 0 ||
        idx_load(dir, "t10k", test, err, sizeof err) != 0) {
        fprintf(stderr,
                "error: %s\n(this worker trains on %s, read from %s: run `make data`, which "
                "fetches MNIST into data/ and links Debian's Fashion-MNIST (apt-get install "
                "dataset-fashion-mnist) into data/fashion-mnist, or pass --data-dir DIR)\n",
                err, dataset, dir);
        idx_free(train);
        return -1;
    }
    return 0;
}

int worker_check_fingerprint(const worker_opts_t *o, const char *dataset,
                             const idx_dataset_t *train, int n, uint32_t want)
{
    uint32_t got = idx_fingerprint(train, n);
    if (want == 0 || got == want)
        return 0;
    fprintf(stderr,
            "error: the first %d training images in %s are not the server's %s (fingerprint "
            "%08x, the server's %08x): this worker would train on other data; give --data-dir "
            "the directory of %s's files\n",
            n, worker_data_dir(o, dataset), dataset, (unsigned)got, (unsigned)want, dataset);
    return -1;
}

void worker_summary(int epochs, double accuracy, double train_seconds, double images)
{
    printf("summary: epochs=%d test_accuracy=%.2f train_seconds=%.1f images_per_second=%.0f\n",
           epochs, accuracy, train_seconds, train_seconds > 0 ? images / train_seconds : 0.0);
}
