/* training: what the two modes of the worker share: loading MNIST and the
 * `summary:` line that ends a run (scripts and tests read it). */
#include <stdio.h>

#include "worker.h"

int worker_load_data(const char *dir, idx_dataset_t *train, idx_dataset_t *test)
{
    char err[512];
    if (idx_load(dir, "train", train, err, sizeof err) != 0 ||
        idx_load(dir, "t10k", test, err, sizeof err) != 0) {
        fprintf(stderr,
                "error: %s\n(run `make data` to fetch MNIST into data/, or pass "
                "--data-dir DIR)\n",
                err);
        idx_free(train);
        return -1;
    }
    return 0;
}

void worker_summary(int epochs, double accuracy, double train_seconds, double images)
{
    printf("summary: epochs=%d test_accuracy=%.2f train_seconds=%.1f images_per_second=%.0f\n",
           epochs, accuracy, train_seconds, train_seconds > 0 ? images / train_seconds : 0.0);
}
