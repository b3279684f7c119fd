/* idx: reads MNIST-style IDX files (raw or gzipped) into memory.
 *
 * Pixels stay as bytes (47 MB for MNIST's training set instead of 188 MB as
 * floats); idx_normalize() turns a run of images into the network's input on
 * the fly. Every field of the files is validated: a bad file yields an error
 * message naming the file and the problem, never a crash. */
#ifndef IDX_H
#define IDX_H

#include <stddef.h>
#include <stdint.h>

/* One split of a dataset: `count` images of rows x cols bytes and their labels. */
typedef struct {
    uint8_t *pixels; /* count * rows * cols bytes, image-major, row-major */
    uint8_t *labels; /* count bytes, each 0..9 */
    int count;       /* number of images (== number of labels) */
    int rows, cols;  /* 28 x 28 for MNIST */
} idx_dataset_t;

/* Loads `<dir>/<split>-images-idx3-ubyte` and `<dir>/<split>-labels-idx1-ubyte`
 * where split is "train" or "t10k"; each name is tried as is, then with ".gz".
 * Checks magic numbers (2051, 2049), dimensions, that counts agree, that labels
 * are 0..9 and that each file is exactly as long as its header says.
 * On success fills `out` (caller frees with idx_free) and returns 0; on failure
 * writes a message into err (errlen bytes) and returns -1 with `out` zeroed. */
int idx_load(const char *dir, const char *split, idx_dataset_t *out, char *err, size_t errlen);

/* Reads one IDX file of either kind: a 3-dimensional u8 images file (magic 2051)
 * or a 1-dimensional u8 labels file (magic 2049). `expect_dims` is 3 or 1.
 * On success *data (malloc'd, caller frees), *count, and for images *rows, *cols
 * are set and 0 is returned; on failure -1 and err is filled. */
int idx_read_file(const char *path, int expect_dims, uint8_t **data, int *count, int *rows,
                  int *cols, char *err, size_t errlen);

/* Frees what idx_load allocated and zeroes the struct; safe on a zeroed struct. */
void idx_free(idx_dataset_t *ds);

/* The data sets --dataset names ("mnist", "fashion-mnist"), and the
 * directory each is read from unless --data-dir says otherwise: MNIST from
 * $MNIST_DIR or data, Fashion-MNIST from $FASHION_MNIST_DIR or
 * data/fashion-mnist (`make data` links Debian's dataset-fashion-mnist
 * there). NULL for a name that is not one of them. */
const char *idx_dataset_dir(const char *dataset);

/* The names idx_dataset_dir knows, for messages: "mnist, fashion-mnist". */
#define IDX_DATASETS "mnist, fashion-mnist"

/* CRC-32 of the first n images' pixels and labels (n <= ds->count): the
 * server sends it with the recipe, and a worker whose data differ (another
 * data set, another version) refuses to train on them. */
uint32_t idx_fingerprint(const idx_dataset_t *ds, int n);

/* MNIST's normalisation: (pixel/255 - 0.1307) / 0.3081, for n pixels. */
void idx_normalize(const uint8_t *pixels, float *out, size_t n);

#endif
