/* fuzz_safetensors: a libFuzzer target for the safetensors reader. Model
 * files and checkpoints are read from disk and could come from anywhere, so
 * st_open must turn any bytes into either a valid file or an error message.
 *
 * Input: the bytes of a file. They are written to a memfd and opened through
 * /proc/self/fd, so the reader runs exactly as on a real file (fstat, fread).
 * What an accepted file must satisfy (a violation aborts, which libFuzzer
 * reports):
 *   - every tensor is found by its name, its data is 64-byte aligned and
 *     every byte of it can be read (ASan checks the bounds);
 *   - written back with st_write and read again, it has the same tensors,
 *     shapes and bytes.
 * A refused file must come with a message naming the path.
 *
 * Built two ways: with clang -fsanitize=fuzzer (make fuzz-safetensors) and
 * with the plain main() of fuzz_replay.c, which replays the corpus in make
 * check. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void s_check(int ok, const char *what, const char *detail)
{
    if (!ok) {
        fprintf(stderr, "fuzz_safetensors: %s (%s)\n", what, detail);
        abort();
    }
}

/* Reads every byte of every tensor and checks the lookups. */
static void s_walk(const st_file_t *f)
{
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor_t *t = st_get(f, i);
        s_check(st_find(f, t->name) == t, "st_find misses a tensor", t->name);
        s_check((uintptr_t)t->data % 64 == 0, "tensor data not aligned", t->name);
        size_t nb = (size_t)st_numel(t) * (t->dtype == ST_F32 ? 4 : 1);
        volatile unsigned sum = 0;
        for (size_t k = 0; k < nb; k++)
            sum += ((const unsigned char *)t->data)[k];
    }
    (void)st_metadata(f, "format");
}

/* Writes the tensors of f to path and checks that they read back equal. */
static void s_round_trip(const st_file_t *f, const char *path)
{
    int n = st_count(f);
    st_tensor_t *ts = malloc(sizeof *ts * (size_t)(n ? n : 1));
    s_check(ts != NULL, "out of memory", path);
    for (int i = 0; i < n; i++)
        ts[i] = *st_get(f, i);
    char err[512] = "";
    s_check(st_write(path, ts, n, NULL, err, sizeof err) == 0, "cannot write back", err);
    st_file_t *g = st_open(path, err, sizeof err);
    s_check(g != NULL, "cannot read back what was written", err);
    s_check(st_count(g) == n, "tensor count changed", path);
    for (int i = 0; i < n; i++) {
        const st_tensor_t *a = &ts[i], *b = st_get(g, i);
        s_check(!strcmp(a->name, b->name), "name changed", a->name);
        s_check(a->dtype == b->dtype && a->ndim == b->ndim, "dtype or rank changed", a->name);
        s_check(!memcmp(a->shape, b->shape, sizeof a->shape[0] * (size_t)a->ndim), "shape changed",
                a->name);
        size_t nb = (size_t)st_numel(a) * (a->dtype == ST_F32 ? 4 : 1);
        s_check(nb == 0 || !memcmp(a->data, b->data, nb), "data changed", a->name);
    }
    st_close(&g);
    free(ts);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64], back[64];
    if (fd < 0) {
        fd = memfd_create("fuzz_safetensors", 0);
        s_check(fd >= 0, "memfd_create failed", "");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        /* /dev/shm is memory too, so the round trip's fsyncs cost nothing;
         * /tmp where there is none. */
        snprintf(back, sizeof back, "%s/fuzz_safetensors.%ld",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (long)getpid());
    }
    s_check(ftruncate(fd, 0) == 0 && (size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size),
            "cannot write the input to the memfd", path);
    char err[512] = "";
    st_file_t *f = st_open(path, err, sizeof err);
    if (!f) {
        s_check(strstr(err, path) != NULL, "error message does not name the file", err);
        return 0;
    }
    s_walk(f);
    s_round_trip(f, back);
    unlink(back);
    st_close(&f);
    return 0;
}
