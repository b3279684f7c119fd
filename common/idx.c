/* idx: reads MNIST-style IDX files, raw or gzipped, into memory.
 *
 * zlib's gzread reads both gzipped and plain files, so one code path serves
 * MNIST's raw files (from npm) and Fashion-MNIST's .gz files (from Debian).
 * The header is read and checked first; the body is then read in growing
 * chunks, so a file whose header claims gigabytes but which is short fails
 * with "truncated" instead of first allocating all that memory. Everything in
 * the file is untrusted: each check ends in a message that names the file. */
#include "idx.h"
#include "errmsg.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

#define IDX_MAGIC_LABELS 0x00000801u /* u8 data, 1 dimension */
#define IDX_MAGIC_IMAGES 0x00000803u /* u8 data, 3 dimensions */
#define IDX_MAX_SIDE 1024
#define IDX_MAX_COUNT 100000000         /* far above any real dataset; rejects garbage headers */
#define IDX_MAX_BYTES ((size_t)1 << 33) /* 8 GiB of pixel data */
#define IDX_FIRST_CHUNK ((size_t)1 << 20)
#define IDX_REDOWNLOAD "download it again (for MNIST: deploy/fetch-mnist.sh DIR, or `make data`)"

static uint32_t s_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads up to `len` bytes; returns how many (short only at end of file), or -1
 * with a message on a read or decompression error. gzread takes an unsigned
 * int length, so large reads go in pieces. */
static long long s_gzread_full(gzFile f, const char *path, uint8_t *buf, size_t len, char *err,
                               size_t errlen)
{
    size_t got = 0;
    while (got < len) {
        size_t want = len - got;
        if (want > (1u << 30))
            want = 1u << 30;
        int n = gzread(f, buf + got, (unsigned)want);
        if (n < 0) {
            int zerr = 0;
            const char *msg = gzerror(f, &zerr);
            size_t plen = strlen(path);
            if (zerr == Z_ERRNO)
                msg = strerror(errno);
            else if (strncmp(msg, path, plen) == 0 && strncmp(msg + plen, ": ", 2) == 0)
                msg += plen + 2; /* gzerror prefixes the path; ours already does */
            errmsg_set(err, errlen, "%s: read error: %s; the file is damaged, %s", path, msg,
                       IDX_REDOWNLOAD);
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (long long)got;
}

/* Explains a wrong magic number as helpfully as we can. */
static void s_bad_magic(const char *path, uint32_t magic, uint32_t want, char *err, size_t errlen)
{
    const char *kind = want == IDX_MAGIC_IMAGES ? "images" : "labels";
    uint32_t other = want == IDX_MAGIC_IMAGES ? IDX_MAGIC_LABELS : IDX_MAGIC_IMAGES;
    uint32_t swapped =
        (magic >> 24) | ((magic >> 8) & 0xff00u) | ((magic << 8) & 0xff0000u) | (magic << 24);
    if (magic == other)
        errmsg_set(err, errlen,
                   "%s: this is an IDX %s file (magic %u), but an %s file (magic %u) was expected; "
                   "are the file names swapped?",
                   path, other == IDX_MAGIC_IMAGES ? "images" : "labels", magic, kind, want);
    else if (swapped == want || swapped == other)
        errmsg_set(err, errlen,
                   "%s: magic number 0x%08x is byte-swapped (IDX headers are big-endian); the file "
                   "was written wrongly, %s",
                   path, magic, IDX_REDOWNLOAD);
    else if ((magic >> 16) == 0 && (magic & 0xff00u) != 0x0800u)
        errmsg_set(err, errlen,
                   "%s: IDX element type 0x%02x is not supported (only unsigned bytes, 0x08)", path,
                   (magic >> 8) & 0xffu);
    else
        errmsg_set(err, errlen,
                   "%s: not an IDX %s file: magic number 0x%08x, expected 0x%08x (%u); %s", path,
                   kind, magic, want, want, IDX_REDOWNLOAD);
}

/* Reads and checks the header; sets *count, *rows, *cols and *body (bytes that
 * must follow the header). */
static int s_read_header(gzFile f, const char *path, int expect_dims, int *count, int *rows,
                         int *cols, size_t *body, char *err, size_t errlen)
{
    size_t hlen = expect_dims == 3 ? 16 : 8;
    uint8_t h[16];
    long long n = s_gzread_full(f, path, h, hlen, err, errlen);
    if (n < 0)
        return -1;
    if (n == 0) {
        errmsg_set(err, errlen, "%s: file is empty; %s", path, IDX_REDOWNLOAD);
        return -1;
    }
    uint32_t want = expect_dims == 3 ? IDX_MAGIC_IMAGES : IDX_MAGIC_LABELS;
    uint32_t magic = n >= 4 ? s_be32(h) : 0;
    if (n >= 4 && magic != want) {
        s_bad_magic(path, magic, want, err, errlen);
        return -1;
    }
    if ((size_t)n < hlen) {
        errmsg_set(err, errlen,
                   "%s: file is truncated: %lld bytes, shorter than the %zu-byte IDX "
                   "header; %s",
                   path, n, hlen, IDX_REDOWNLOAD);
        return -1;
    }
    uint32_t c = s_be32(h + 4);
    if (c == 0) {
        errmsg_set(err, errlen,
                   "%s: header says the file holds 0 items; a dataset needs at least "
                   "one",
                   path);
        return -1;
    }
    if (c > IDX_MAX_COUNT) {
        errmsg_set(err, errlen,
                   "%s: header claims %u items (more than %d): the header is corrupt; %s", path, c,
                   IDX_MAX_COUNT, IDX_REDOWNLOAD);
        return -1;
    }
    uint32_t r = 1, k = 1;
    if (expect_dims == 3) {
        r = s_be32(h + 8);
        k = s_be32(h + 12);
        if (r < 1 || r > IDX_MAX_SIDE || k < 1 || k > IDX_MAX_SIDE) {
            errmsg_set(err, errlen,
                       "%s: image size %ux%u is out of range (each side must be 1..%d); "
                       "the header is corrupt",
                       path, r, k, IDX_MAX_SIDE);
            return -1;
        }
    }
    size_t bytes = (size_t)c * r * k; /* <= 1e8 * 2^20, fits in 64 bits */
    if (bytes > IDX_MAX_BYTES) {
        errmsg_set(err, errlen,
                   "%s: header describes %u images of %ux%u = %zu bytes, more than the "
                   "%zu-byte limit",
                   path, c, r, k, bytes, IDX_MAX_BYTES);
        return -1;
    }
    *count = (int)c;
    *rows = (int)r;
    *cols = (int)k;
    *body = bytes;
    return 0;
}

/* Reads exactly `body` bytes after the header, growing the buffer as data
 * actually arrives, then checks that nothing follows. */
static uint8_t *s_read_body(gzFile f, const char *path, size_t hlen, size_t body, char *err,
                            size_t errlen)
{
    size_t cap = body < IDX_FIRST_CHUNK ? body : IDX_FIRST_CHUNK;
    uint8_t *buf = malloc(cap);
    size_t got = 0;
    if (!buf)
        goto nomem;
    for (;;) {
        long long n = s_gzread_full(f, path, buf + got, cap - got, err, errlen);
        if (n < 0)
            goto fail;
        got += (size_t)n;
        if (got < cap) {
            errmsg_set(err, errlen,
                       "%s: file is truncated: the header promises %zu bytes of data "
                       "but only %zu follow it (file length %zu, expected %zu); %s",
                       path, body, got, hlen + got, hlen + body, IDX_REDOWNLOAD);
            goto fail;
        }
        if (got == body)
            break;
        size_t ncap = cap * 2 < body ? cap * 2 : body;
        uint8_t *nbuf = realloc(buf, ncap);
        if (!nbuf)
            goto nomem;
        buf = nbuf;
        cap = ncap;
    }
    uint8_t extra[4096];
    long long more = s_gzread_full(f, path, extra, sizeof extra, err, errlen);
    if (more < 0)
        goto fail;
    if (more > 0) {
        long long total = more;
        while (more == (long long)sizeof extra) {
            more = s_gzread_full(f, path, extra, sizeof extra, err, errlen);
            if (more < 0)
                goto fail;
            total += more;
        }
        errmsg_set(err, errlen,
                   "%s: file has %lld unexpected byte%s after the %zu its header "
                   "describes; it is corrupt or not the file it claims to be; %s",
                   path, total, total == 1 ? "" : "s", hlen + body, IDX_REDOWNLOAD);
        goto fail;
    }
    return buf;
nomem:
    errmsg_set(err, errlen, "%s: out of memory reading %zu bytes", path, body);
fail:
    free(buf);
    return NULL;
}

int idx_read_file(const char *path, int expect_dims, uint8_t **data, int *count, int *rows,
                  int *cols, char *err, size_t errlen)
{
    assert(path && data && count);
    assert(expect_dims == 1 || expect_dims == 3);
    *data = NULL;
    *count = 0;
    if (rows)
        *rows = 0;
    if (cols)
        *cols = 0;

    struct stat st;
    if (stat(path, &st) != 0) {
        errmsg_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        errmsg_set(err, errlen, "%s: not a regular file", path);
        return -1;
    }
    errno = 0;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        errmsg_set(err, errlen, "%s: cannot open: %s", path,
                   errno ? strerror(errno) : "out of memory");
        return -1;
    }
    gzbuffer(f, 1u << 17);
    int c, r, k;
    size_t body;
    uint8_t *buf = NULL;
    if (s_read_header(f, path, expect_dims, &c, &r, &k, &body, err, errlen) == 0)
        buf = s_read_body(f, path, expect_dims == 3 ? 16 : 8, body, err, errlen);
    gzclose(f);
    if (!buf)
        return -1;
    *data = buf;
    *count = c;
    if (rows)
        *rows = expect_dims == 3 ? r : 0;
    if (cols)
        *cols = expect_dims == 3 ? k : 0;
    return 0;
}

/* Finds `<dir>/<split>-<stem>` or the same with ".gz"; 0 with the path in
 * `path`, or -1 with a message naming both paths tried. */
static int s_find(const char *dir, const char *split, const char *stem, char *path, size_t len,
                  char *err, size_t errlen)
{
    int n = snprintf(path, len, "%s/%s-%s", dir, split, stem);
    if (n < 0 || (size_t)n + 3 >= len) {
        errmsg_set(err, errlen, "%s/%s-%s: path is too long", dir, split, stem);
        return -1;
    }
    struct stat st;
    if (stat(path, &st) == 0 || errno != ENOENT)
        return 0; /* exists, or fails in a way idx_read_file will report */
    strcat(path, ".gz");
    if (stat(path, &st) == 0 || errno != ENOENT)
        return 0;
    path[n] = '\0';
    errmsg_set(err, errlen,
               "%s: no such file (nor %s.gz); download MNIST with "
               "`deploy/fetch-mnist.sh %s` (or `make data`) or point the data directory elsewhere",
               path, path, dir);
    return -1;
}

int idx_load(const char *dir, const char *split, idx_dataset_t *out, char *err, size_t errlen)
{
    assert(dir && split && out);
    memset(out, 0, sizeof *out);
    if (!*dir)
        dir = ".";
    if (strcmp(split, "train") != 0 && strcmp(split, "t10k") != 0) {
        errmsg_set(err, errlen, "%s: unknown split \"%s\" (use \"train\" or \"t10k\")", dir, split);
        return -1;
    }
    char ipath[PATH_MAX], lpath[PATH_MAX];
    if (s_find(dir, split, "images-idx3-ubyte", ipath, sizeof ipath, err, errlen) != 0 ||
        s_find(dir, split, "labels-idx1-ubyte", lpath, sizeof lpath, err, errlen) != 0)
        return -1;

    idx_dataset_t ds = {0};
    int nlabels = 0;
    if (idx_read_file(ipath, 3, &ds.pixels, &ds.count, &ds.rows, &ds.cols, err, errlen) != 0 ||
        idx_read_file(lpath, 1, &ds.labels, &nlabels, NULL, NULL, err, errlen) != 0)
        goto fail;
    if (nlabels != ds.count) {
        errmsg_set(err, errlen,
                   "%s holds %d images but %s holds %d labels; the two files must come "
                   "from the same split of the same dataset",
                   ipath, ds.count, lpath, nlabels);
        goto fail;
    }
    for (int i = 0; i < nlabels; i++) {
        if (ds.labels[i] > 9) {
            errmsg_set(err, errlen,
                       "%s: label %d is %u, outside 0..9; the file is corrupt or not a "
                       "10-class dataset; %s",
                       lpath, i, ds.labels[i], IDX_REDOWNLOAD);
            goto fail;
        }
    }
    *out = ds;
    return 0;
fail:
    idx_free(&ds);
    return -1;
}

const char *idx_dataset_dir(const char *dataset)
{
    static const struct {
        const char *name, *env, *dir;
    } sets[] = {{"mnist", "MNIST_DIR", "data"},
                {"fashion-mnist", "FASHION_MNIST_DIR", "data/fashion-mnist"}};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (strcmp(dataset, sets[i].name) == 0) {
            const char *env = getenv(sets[i].env);
            return env && *env ? env : sets[i].dir;
        }
    return NULL;
}

uint32_t idx_fingerprint(const idx_dataset_t *ds, int n)
{
    assert(n >= 0 && n <= ds->count);
    uLong crc = crc32(0L, Z_NULL, 0);
    size_t image = (size_t)ds->rows * (size_t)ds->cols;
    /* crc32 takes an unsigned int length: pixels go in pieces of 10,000 images */
    for (int lo = 0; lo < n; lo += 10000) {
        int m = n - lo < 10000 ? n - lo : 10000;
        crc = crc32(crc, ds->pixels + (size_t)lo * image, (uInt)((size_t)m * image));
    }
    return (uint32_t)crc32(crc, ds->labels, (uInt)n);
}

void idx_free(idx_dataset_t *ds)
{
    if (!ds)
        return;
    free(ds->pixels);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* One float per byte value, so normalising is a table lookup. Computed in
 * float in the formula's order, as torchvision's ToTensor + Normalize do. */
static float s_norm_lut[256];
static pthread_once_t s_norm_once = PTHREAD_ONCE_INIT;

static void s_norm_init(void)
{
    for (int p = 0; p < 256; p++)
        s_norm_lut[p] = ((float)p / 255.0f - 0.1307f) / 0.3081f;
}

void idx_normalize(const uint8_t *pixels, float *out, size_t n)
{
    pthread_once(&s_norm_once, s_norm_init);
    for (size_t i = 0; i < n; i++)
        out[i] = s_norm_lut[pixels[i]];
}
