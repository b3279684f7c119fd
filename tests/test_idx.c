/* Tests for idx: good and bad IDX files, raw and gzipped, written into a
 * fresh temporary directory, plus the real MNIST (in $MNIST_DIR, default
 * "data") and Debian's Fashion-MNIST, both test dependencies (a missing one
 * fails, saying how to get it). Bad files must give an error that names the
 * file and the problem, and never crash. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "idx.h"

static char s_tmp[] = "/tmp/test_idx.XXXXXX";

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static int s_group_setup(void **state)
{
    (void)state;
    return mkdtemp(s_tmp) ? 0 : -1;
}

static int s_group_teardown(void **state)
{
    (void)state;
    return nftw(s_tmp, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Makes <tmp>/<name> and returns its path (static storage, one at a time). */
static const char *s_dir(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", s_tmp, name);
    assert_int_equal(mkdir(path, 0700), 0);
    return path;
}

static void s_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void s_write(const char *path, const uint8_t *bytes, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, bytes, (unsigned)n), (int)n);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(bytes, 1, n, f), n);
        assert_int_equal(fclose(f), 0);
    }
}

/* Writes an images file whose header says (magic, count, rows, cols) followed
 * by `body` bytes of pixels (pixel i = i % 251), whatever the header says. */
static void s_images(const char *dir, const char *split, uint32_t magic, uint32_t count,
                     uint32_t rows, uint32_t cols, size_t body, int gz)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, split, gz ? ".gz" : "");
    uint8_t *b = malloc(16 + body);
    assert_non_null(b);
    s_put32(b, magic), s_put32(b + 4, count), s_put32(b + 8, rows), s_put32(b + 12, cols);
    for (size_t i = 0; i < body; i++)
        b[16 + i] = (uint8_t)(i % 251);
    s_write(path, b, 16 + body, gz);
    free(b);
}

/* Writes a labels file: header (magic, count), then the n given labels. */
static void s_labels(const char *dir, const char *split, uint32_t magic, uint32_t count,
                     const uint8_t *labels, size_t n, int gz)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, split, gz ? ".gz" : "");
    uint8_t b[8 + 64];
    assert_true(n <= 64);
    s_put32(b, magic), s_put32(b + 4, count);
    if (n)
        memcpy(b + 8, labels, n);
    s_write(path, b, 8 + n, gz);
}

static const uint8_t s_lab3[3] = {0, 5, 9};

/* A good 3-image 4x5 split. */
static void s_good(const char *dir, const char *split, int gz)
{
    s_images(dir, split, 2051, 3, 4, 5, 60, gz);
    s_labels(dir, split, 2049, 3, s_lab3, 3, gz);
}

/* idx_load must fail, leave `out` zeroed, and say every `needle` (NULL-ended). */
static void s_expect_fail(const char *dir, const char *split, ...)
{
    idx_dataset_t ds;
    memset(&ds, 0xab, sizeof ds);
    char err[1024] = "";
    assert_int_equal(idx_load(dir, split, &ds, err, sizeof err), -1);
    assert_null(ds.pixels);
    assert_null(ds.labels);
    assert_int_equal(ds.count, 0);
    va_list ap;
    va_start(ap, split);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        if (!strstr(err, needle))
            fail_msg("error message \"%s\" does not contain \"%s\"", err, needle);
    va_end(ap);
    print_message("    (expected) %s\n", err);
}

static void s_check_good(const idx_dataset_t *ds)
{
    assert_int_equal(ds->count, 3);
    assert_int_equal(ds->rows, 4);
    assert_int_equal(ds->cols, 5);
    for (int i = 0; i < 60; i++)
        assert_int_equal(ds->pixels[i], i % 251);
    assert_memory_equal(ds->labels, s_lab3, 3);
}

static void test_good_raw(void **state)
{
    (void)state;
    const char *d = s_dir("good_raw");
    s_good(d, "train", 0);
    idx_dataset_t ds;
    char err[512] = "";
    if (idx_load(d, "train", &ds, err, sizeof err) != 0)
        fail_msg("%s", err);
    s_check_good(&ds);
    idx_free(&ds);
    assert_null(ds.pixels);
    idx_free(&ds); /* idempotent */
}

static void test_good_gzip(void **state)
{
    (void)state;
    const char *d = s_dir("good_gz");
    s_good(d, "t10k", 1);
    idx_dataset_t ds;
    char err[512] = "";
    if (idx_load(d, "t10k", &ds, err, sizeof err) != 0)
        fail_msg("%s", err);
    s_check_good(&ds);
    idx_free(&ds);
}

static void test_read_file_direct(void **state)
{
    (void)state;
    const char *d = s_dir("direct");
    s_good(d, "train", 0);
    char path[600], err[512] = "";
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte", d);
    uint8_t *data = NULL;
    int count = -1, rows = -1, cols = -1;
    assert_int_equal(idx_read_file(path, 1, &data, &count, &rows, &cols, err, sizeof err), 0);
    assert_int_equal(count, 3);
    assert_int_equal(rows, 0);
    assert_memory_equal(data, s_lab3, 3);
    free(data);
    /* Asking for images from a labels file names the mix-up. */
    assert_int_equal(idx_read_file(path, 3, &data, &count, &rows, &cols, err, sizeof err), -1);
    assert_null(data);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "labels"));
}

static void test_wrong_magic(void **state)
{
    (void)state;
    const char *d = s_dir("magic_swapped");
    s_images(d, "train", 2049, 3, 4, 5, 60, 0); /* a labels magic on the images file */
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "labels", NULL);

    d = s_dir("magic_garbage");
    s_images(d, "train", 0x3c68746du, 3, 4, 5, 60, 0); /* "<htm": a saved error page */
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "not an IDX", "0x3c68746d", NULL);

    d = s_dir("magic_le");
    s_good(d, "train", 0);
    s_labels(d, "train", 0x01080000u, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-labels-idx1-ubyte", "byte-swapped", NULL);

    d = s_dir("magic_float");
    s_images(d, "train", 0x00000d03u, 3, 4, 5, 60, 0);
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "element type", NULL);
}

static void test_truncated(void **state)
{
    (void)state;
    const char *d = s_dir("trunc_body");
    s_images(d, "train", 2051, 3, 4, 5, 59, 0);
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "truncated", NULL);

    d = s_dir("trunc_body_gz");
    s_images(d, "train", 2051, 3, 4, 5, 60, 1);
    s_labels(d, "train", 2049, 3, s_lab3, 2, 1);
    s_expect_fail(d, "train", "train-labels-idx1-ubyte.gz", "truncated", NULL);

    /* A header claiming 8 GB of images must fail as truncated, not by trying
     * to allocate the gigabytes it claims. */
    d = s_dir("trunc_huge");
    s_images(d, "train", 2051, 8000, 1024, 1024, 1000, 0);
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "truncated", NULL);

    d = s_dir("trunc_header");
    s_good(d, "train", 0);
    char path[600];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte", d);
    assert_int_equal(truncate(path, 10), 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "truncated", NULL);
    assert_int_equal(truncate(path, 0), 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "empty", NULL);
}

static void test_trailing_bytes(void **state)
{
    (void)state;
    const char *d = s_dir("trailing");
    s_images(d, "train", 2051, 3, 4, 5, 63, 0);
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "3 unexpected bytes", NULL);

    d = s_dir("trailing_gz");
    s_images(d, "train", 2051, 3, 4, 5, 60, 1);
    const uint8_t lab[4] = {1, 2, 3, 4};
    s_labels(d, "train", 2049, 3, lab, 4, 1);
    s_expect_fail(d, "train", "train-labels-idx1-ubyte.gz", "1 unexpected byte after", NULL);
}

static void test_count_mismatch(void **state)
{
    (void)state;
    const char *d = s_dir("mismatch");
    s_images(d, "train", 2051, 3, 4, 5, 60, 0);
    const uint8_t lab[2] = {1, 2};
    s_labels(d, "train", 2049, 2, lab, 2, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "3 images",
                  "2 labels", NULL);
}

static void test_label_out_of_range(void **state)
{
    (void)state;
    const char *d = s_dir("label10");
    s_images(d, "train", 2051, 3, 4, 5, 60, 0);
    const uint8_t lab[3] = {1, 10, 2};
    s_labels(d, "train", 2049, 3, lab, 3, 0);
    s_expect_fail(d, "train", "train-labels-idx1-ubyte", "label 1 is 10", NULL);
}

static void test_zero_count(void **state)
{
    (void)state;
    const char *d = s_dir("zero");
    s_images(d, "train", 2051, 0, 4, 5, 0, 0);
    s_labels(d, "train", 2049, 0, NULL, 0, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "0 items", NULL);
}

static void test_bad_dims(void **state)
{
    (void)state;
    const char *d = s_dir("rows0");
    s_images(d, "train", 2051, 3, 0, 5, 0, 0);
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "0x5", "out of range", NULL);

    d = s_dir("cols2000");
    s_images(d, "train", 2051, 3, 4, 2000, 0, 0);
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "4x2000", NULL);

    d = s_dir("count_huge");
    s_images(d, "train", 2051, 0xffffffffu, 28, 28, 0, 0);
    s_labels(d, "train", 2049, 3, s_lab3, 3, 0);
    s_expect_fail(d, "train", "train-images-idx3-ubyte", "4294967295", NULL);
}

static void test_corrupt_gzip(void **state)
{
    (void)state;
    const char *d = s_dir("badgz");
    s_images(d, "train", 2051, 200, 28, 28, 200 * 784, 1);
    uint8_t lab[64] = {0};
    s_labels(d, "train", 2049, 200, lab, 0, 0);
    char path[600];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", d);
    /* Overwrite the middle of the compressed stream. */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 40, SEEK_SET), 0);
    for (int i = 0; i < 64; i++)
        fputc(0xff, f);
    fclose(f);
    s_expect_fail(d, "train", "train-images-idx3-ubyte.gz", NULL);
}

static void test_missing(void **state)
{
    (void)state;
    const char *d = s_dir("missing");
    char want[600];
    snprintf(want, sizeof want, "%s/t10k-images-idx3-ubyte", d);
    s_expect_fail(d, "t10k", want, "fetch-mnist", NULL);

    /* Images present, labels missing: the labels path is named. */
    s_images(d, "t10k", 2051, 3, 4, 5, 60, 0);
    snprintf(want, sizeof want, "%s/t10k-labels-idx1-ubyte", d);
    s_expect_fail(d, "t10k", want, NULL);

    s_expect_fail("/nonexistent/dir", "train", "/nonexistent/dir/train-images-idx3-ubyte", NULL);
    s_expect_fail(d, "valid", "unknown split", NULL);

    char err[512] = "";
    uint8_t *data = (uint8_t *)1;
    int count = 7;
    assert_int_equal(idx_read_file(s_tmp, 1, &data, &count, NULL, NULL, err, sizeof err), -1);
    assert_null(data);
    assert_non_null(strstr(err, "not a regular file"));
    /* A NULL error buffer is allowed. */
    assert_int_equal(idx_read_file("/nonexistent", 1, &data, &count, NULL, NULL, NULL, 0), -1);
}

static void test_normalize(void **state)
{
    (void)state;
    uint8_t px[256];
    float out[256];
    for (int i = 0; i < 256; i++)
        px[i] = (uint8_t)(255 - i);
    idx_normalize(px, out, 256);
    for (int i = 0; i < 256; i++) {
        double want = ((255 - i) / 255.0 - 0.1307) / 0.3081;
        if (fabs(out[i] - want) > 1e-6 * (1 + fabs(want)))
            fail_msg("pixel %d: got %.9g, want %.9g", 255 - i, out[i], want);
    }
    assert_true(fabsf(out[255] - (-0.4242129f)) < 1e-6f); /* pixel 0 */
    assert_true(fabsf(out[0] - 2.8214867f) < 1e-6f);      /* pixel 255 */
    idx_normalize(px, out, 0);                            /* n = 0 is a no-op */
}

/* Loads both splits of a real dataset and checks the known shapes and the
 * first labels of each split. Both datasets are test dependencies (make data,
 * deploy/install-deps.sh): a missing one fails, saying how to get it. */
static void s_real(const char *dir, const char *probe, const char *how, const uint8_t first[2][5])
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, probe);
    if (stat(path, &st) != 0)
        fail_msg("%s not present: %s", path, how);
    const char *splits[2] = {"train", "t10k"};
    const int counts[2] = {60000, 10000};
    for (int s = 0; s < 2; s++) {
        idx_dataset_t ds;
        char err[512] = "";
        if (idx_load(dir, splits[s], &ds, err, sizeof err) != 0)
            fail_msg("%s", err);
        assert_int_equal(ds.count, counts[s]);
        assert_int_equal(ds.rows, 28);
        assert_int_equal(ds.cols, 28);
        assert_memory_equal(ds.labels, first[s], 5);
        int hist[10] = {0};
        for (int i = 0; i < ds.count; i++)
            hist[ds.labels[i]]++;
        for (int c = 0; c < 10; c++)
            assert_true(hist[c] > ds.count / 20); /* every class is well represented */
        idx_free(&ds);
    }
}

static void test_real_mnist(void **state)
{
    (void)state;
    const char *dir = getenv("MNIST_DIR");
    static const uint8_t first[2][5] = {{5, 0, 4, 1, 9}, {7, 2, 1, 0, 4}};
    s_real(dir && *dir ? dir : "data", "train-images-idx3-ubyte",
           "run `make data` (or set MNIST_DIR)", first);
}

static void test_real_fashion_mnist(void **state)
{
    (void)state;
    static const uint8_t first[2][5] = {{9, 0, 0, 3, 0}, {9, 2, 1, 1, 6}};
    s_real("/usr/share/datasets/fashion-mnist", "train-images-idx3-ubyte.gz",
           "apt-get install dataset-fashion-mnist (deploy/install-deps.sh does)", first);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_raw),           cmocka_unit_test(test_good_gzip),
        cmocka_unit_test(test_read_file_direct),   cmocka_unit_test(test_wrong_magic),
        cmocka_unit_test(test_truncated),          cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_count_mismatch),     cmocka_unit_test(test_label_out_of_range),
        cmocka_unit_test(test_zero_count),         cmocka_unit_test(test_bad_dims),
        cmocka_unit_test(test_corrupt_gzip),       cmocka_unit_test(test_missing),
        cmocka_unit_test(test_normalize),          cmocka_unit_test(test_real_mnist),
        cmocka_unit_test(test_real_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}
