/* test_safetensors: the safetensors reader and writer.
 *
 * Round trips (F32 and U8, 0 to 4 dimensions, empty tensors, metadata, names
 * that need JSON escaping), the PyTorch-made reference fixture, and a table
 * of damaged files, each of which must give an error naming the problem, not
 * a crash. A last test flips bytes of a valid file at random: run it under
 * -fsanitize=address,undefined to check the parser on input nobody wrote. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "safetensors.h"
#include "tmpdir.h"

#ifndef FIXTURE_DIR
#define FIXTURE_DIR "tests/fixtures"
#endif
#define FIXTURE FIXTURE_DIR "/simpleconvnet_pytorch_ref.safetensors"

static int s_setup(void **state)
{
    return tmpdir_setup(state, "test_safetensors", "t.safetensors");
}

static void s_write_file(const char *path, const void *bytes, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(bytes, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* Writes a file whose header is `json` and whose length field is `hlen`
 * (or strlen(json) if hlen is -1), followed by `ndata` bytes 0, 1, 2... */
static void s_write_raw(const char *path, const char *json, long long hlen, size_t ndata)
{
    size_t jl = strlen(json);
    size_t total = 8 + jl + ndata;
    unsigned char *buf = malloc(total);
    assert_non_null(buf);
    uint64_t l = hlen < 0 ? (uint64_t)jl : (uint64_t)hlen;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(l >> (8 * i));
    memcpy(buf + 8, json, jl);
    for (size_t i = 0; i < ndata; i++)
        buf[8 + jl + i] = (unsigned char)i;
    s_write_file(path, buf, total);
    free(buf);
}

static unsigned char *s_read_all(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)sz + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *n = (size_t)sz;
    return buf;
}

static const char *const s_weird_name = "we\"ird\\na/me\n\t\x01 \xc3\xa9\xe2\x82\xac";

static void test_round_trip(void **state)
{
    tmpdir_t *tmp = *state;
    float w[6] = {1.5f, -2.25f, 3e-8f, 1e30f, 0.0f, -0.0f};
    float scalar = 42.0f;
    uint8_t odd[7] = {0, 1, 2, 3, 250, 254, 255};
    float after[3] = {7.0f, 8.0f, 9.0f}; /* lands at an offset that is not a multiple of 4 */
    uint8_t four[2 * 2 * 2 * 2];
    for (int i = 0; i < 16; i++)
        four[i] = (uint8_t)(i * 13);
    st_tensor_t in[] = {
        {"conv1.weight", ST_F32, 2, {2, 3}, w}, {"scalar", ST_F32, 0, {0}, &scalar},
        {"empty", ST_F32, 2, {0, 5}, NULL},     {"odd", ST_U8, 1, {7}, odd},
        {"after", ST_F32, 1, {3}, after},       {s_weird_name, ST_U8, 4, {2, 2, 2, 2}, four},
    };
    int n = (int)(sizeof in / sizeof in[0]);
    const char *meta[] = {"format", "pt", "note", "a \"quoted\"\nvalue \\ /", NULL};
    char err[256] = "";
    assert_int_equal(st_write(tmp->path, in, n, meta, err, sizeof err), 0);

    char tmpname[160];
    snprintf(tmpname, sizeof tmpname, "%s.tmp", tmp->path);
    assert_int_not_equal(access(tmpname, F_OK), 0);

    /* The layout on disk: header a multiple of 8 and padded with spaces, data
     * back to back, nothing after it. */
    size_t fsize;
    unsigned char *raw = s_read_all(tmp->path, &fsize);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)raw[i] << (8 * i);
    assert_int_equal(hlen % 8, 0);
    assert_true(raw[8] == '{');
    size_t last = 8 + hlen - 1;
    while (raw[last] == ' ')
        last--;
    assert_true(raw[last] == '}');
    assert_true(8 + hlen - 1 - last < 8);
    assert_int_equal(fsize,
                     8 + hlen + sizeof w + sizeof scalar + sizeof odd + sizeof after + sizeof four);
    free(raw);

    st_file_t *f = st_open(tmp->path, err, sizeof err);
    if (!f)
        fail_msg("st_open: %s", err);
    assert_int_equal(st_count(f), n);
    for (int i = 0; i < n; i++) {
        const st_tensor_t *t = st_get(f, i);
        assert_non_null(t);
        assert_string_equal(t->name, in[i].name);
        assert_ptr_equal(st_find(f, in[i].name), t);
        assert_int_equal(t->dtype, in[i].dtype);
        assert_int_equal(t->ndim, in[i].ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], in[i].shape[d]);
        assert_int_equal(st_numel(t), st_numel(&in[i]));
        assert_non_null(t->data);
        assert_int_equal((uintptr_t)t->data % 64, 0);
        size_t nb = (size_t)st_numel(t) * (t->dtype == ST_F32 ? 4 : 1);
        if (nb)
            assert_memory_equal(t->data, in[i].data, nb);
    }
    assert_int_equal(st_numel(st_find(f, "scalar")), 1);
    assert_int_equal(st_numel(st_find(f, "empty")), 0);
    assert_true(((const float *)st_find(f, "after")->data)[2] == 9.0f);
    assert_null(st_find(f, "missing"));
    assert_null(st_find(f, "__metadata__"));
    assert_null(st_get(f, n));
    assert_null(st_get(f, -1));
    assert_string_equal(st_metadata(f, "format"), "pt");
    assert_string_equal(st_metadata(f, "note"), meta[3]);
    assert_null(st_metadata(f, "nope"));
    st_close(&f);
    assert_null(f);
    st_close(&f); /* idempotent */
}

static void test_overwrite_and_empty(void **state)
{
    tmpdir_t *tmp = *state;
    char err[256] = "";
    uint8_t a[3] = {1, 2, 3};
    st_tensor_t t = {"a", ST_U8, 1, {3}, a};
    assert_int_equal(st_write(tmp->path, &t, 1, NULL, err, sizeof err), 0);
    assert_int_equal(st_write(tmp->path, NULL, 0, NULL, err, sizeof err), 0);
    st_file_t *f = st_open(tmp->path, err, sizeof err);
    if (!f)
        fail_msg("st_open: %s", err);
    assert_int_equal(st_count(f), 0);
    assert_null(st_find(f, "a"));
    assert_null(st_metadata(f, "a"));
    st_close(&f);
}

static void test_write_errors(void **state)
{
    tmpdir_t *tmp = *state;
    char err[256];
    float x[2] = {1, 2};
    st_tensor_t dup[2] = {{"x", ST_F32, 1, {2}, x}, {"x", ST_F32, 1, {2}, x}};
    st_tensor_t bad_dtype = {"x", (st_dtype_t)7, 1, {2}, x};
    st_tensor_t bad_ndim = {"x", ST_F32, 5, {1, 1, 1, 1}, x};
    st_tensor_t neg = {"x", ST_F32, 1, {-2}, x};
    st_tensor_t reserved = {"__metadata__", ST_F32, 1, {2}, x};
    st_tensor_t bad_utf8 = {"x\xff", ST_F32, 1, {2}, x};
    st_tensor_t no_data = {"x", ST_F32, 1, {2}, NULL};
    const char *odd_meta[] = {"k", NULL};
    const char *dup_meta[] = {"k", "1", "k", "2", NULL};
    struct {
        const st_tensor_t *t;
        int n;
        const char *const *meta;
        const char *want;
    } cases[] = {
        {dup, 2, NULL, "twice"},
        {&bad_dtype, 1, NULL, "dtype"},
        {&bad_ndim, 1, NULL, "dimensions"},
        {&neg, 1, NULL, "negative"},
        {&reserved, 1, NULL, "reserved"},
        {&bad_utf8, 1, NULL, "UTF-8"},
        {&no_data, 1, NULL, "no data"},
        {dup, 1, odd_meta, "no value"},
        {dup, 1, dup_meta, "twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = '\0';
        if (st_write(tmp->path, cases[i].t, cases[i].n, cases[i].meta, err, sizeof err) != -1)
            fail_msg("write case %zu succeeded", i);
        if (!strstr(err, cases[i].want))
            fail_msg("write case %zu: '%s' does not mention '%s'", i, err, cases[i].want);
    }
    assert_int_not_equal(access(tmp->path, F_OK), 0);

    char path[160];
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", tmp->dir);
    assert_int_equal(st_write(path, dup, 1, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));
    /* A NULL error buffer is allowed. */
    assert_int_equal(st_write(path, dup, 1, NULL, NULL, 0), -1);
}

static void test_pytorch_fixture(void **state)
{
    (void)state;
    char err[256] = "";
    st_file_t *f = st_open(FIXTURE, err, sizeof err);
    if (!f)
        fail_msg("st_open: %s", err);
    assert_int_equal(st_count(f), 28);
    assert_string_equal(st_get(f, 0)->name, "images");
    assert_string_equal(st_get(f, 27)->name, "after2.fc2.bias");

    const st_tensor_t *t = st_find(f, "conv1.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_F32);
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 1);
    assert_int_equal(t->shape[2], 3);
    assert_int_equal(t->shape[3], 3);

    t = st_find(f, "fc1.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 128);
    assert_int_equal(t->shape[1], 1600);
    /* PyTorch's init: U(-1/sqrt(1600), 1/sqrt(1600)) = U(-0.025, 0.025). */
    const float *w = t->data;
    for (int64_t i = 0; i < st_numel(t); i++)
        assert_true(w[i] > -0.025f && w[i] < 0.025f);

    t = st_find(f, "images");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_U8);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], 8);
    assert_int_equal(t->shape[1], 28);
    assert_int_equal(t->shape[2], 28);

    /* MNIST's first training labels. */
    t = st_find(f, "labels");
    assert_non_null(t);
    static const uint8_t first_labels[8] = {5, 0, 4, 1, 9, 2, 1, 3};
    assert_int_equal(st_numel(t), 8);
    assert_memory_equal(t->data, first_labels, 8);

    t = st_find(f, "loss");
    assert_non_null(t);
    float loss = *(const float *)t->data;
    assert_true(loss > 1.5f && loss < 3.5f); /* about ln(10) for an untrained net */

    static const char *const params[] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                         "fc1.weight",   "fc1.bias",   "fc2.weight",   "fc2.bias"};
    int64_t total = 0;
    for (int i = 0; i < 8; i++) {
        char name[64];
        const st_tensor_t *p = st_find(f, params[i]);
        assert_non_null(p);
        total += st_numel(p);
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "%s%s", k ? "grad." : "after2.", params[i]);
            const st_tensor_t *q = st_find(f, name);
            if (!q)
                fail_msg("%s missing", name);
            assert_int_equal(q->ndim, p->ndim);
            assert_int_equal(st_numel(q), st_numel(p));
        }
    }
    assert_int_equal(total, 225034);
    for (int i = 0; i < st_count(f); i++)
        assert_int_equal((uintptr_t)st_get(f, i)->data % 64, 0);
    assert_null(st_metadata(f, "format"));
    st_close(&f);
}

/* Damaged files: each must fail with a message holding `want`. */
typedef struct {
    const char *what;
    const char *json;
    long long hlen; /* -1: the JSON's length */
    size_t ndata;
    const char *want;
} s_bad_t;

#define T1(body) "{\"a\":{" body "}}"
static const s_bad_t s_bad[] = {
    {"header length beyond the file", "{}", 1000, 0, "beyond the end"},
    {"header length 2^62", "{}", (long long)1 << 62, 0, "beyond the end"},
    {"empty header", "", -1, 0, "must begin with '{'"},
    {"not an object", "[1]", -1, 0, "must begin with '{'"},
    {"leading space", " {}", -1, 0, "must begin with '{'"},
    {"missing closing brace", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", -1,
     4, "'}' expected"},
    {"missing colon", "{\"a\" {}}", -1, 0, "':' expected"},
    {"trailing garbage", "{}x", -1, 0, "end of file expected near 'x'"},
    {"trailing comma", "{\"__metadata__\":{},}", -1, 0, "string or '}' expected"},
    {"unterminated string", "{\"abc", -1, 0, "premature end of input"},
    {"bad escape", "{\"a\\q\":{}}", -1, 0, "invalid escape"},
    {"control char", "{\"a\nb\":{}}", -1, 0, "unexpected newline"},
    {"invalid UTF-8", "{\"a\xc0\x80\":{}}", -1, 0, "UTF-8"},
    {"lone surrogate", "{\"a\\udc00\":{}}", -1, 0, "invalid Unicode '\\uDC00'"},
    {"NUL escape", "{\"a\\u0000\":{}}", -1, 0, "\\u0000"},
    {"unknown dtype", T1("\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]"), -1, 4,
     "tensor 'a' has dtype 'F16'"},
    {"dtype not a string", T1("\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]"), -1, 4,
     "dtype is not a string"},
    {"missing dtype", T1("\"shape\":[1],\"data_offsets\":[0,4]"), -1, 4, "lacks a dtype"},
    {"missing shape", T1("\"dtype\":\"F32\",\"data_offsets\":[0,4]"), -1, 4, "lacks a shape"},
    {"missing offsets", T1("\"dtype\":\"F32\",\"shape\":[1]"), -1, 4, "lacks data_offsets"},
    {"unknown field", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1"), -1, 4,
     "unknown field 'x'"},
    {"duplicate field",
     T1("\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]"), -1, 4,
     "duplicate object key near '\"dtype\"'"},
    {"negative dim", T1("\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]"), -1, 4,
     "negative"},
    {"float dim", T1("\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]"), -1, 4,
     "integers"},
    {"leading zero", T1("\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]"), -1, 4,
     "invalid token"},
    {"huge number", T1("\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]"),
     -1, 4, "too big integer"},
    {"5 dims", T1("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]"), -1, 4,
     "more than 4"},
    {"shape overflow",
     T1("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]"),
     -1, 4, "too large"},
    {"3 offsets", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]"), -1, 8,
     "more than 2"},
    {"1 offset", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]"), -1, 4, "needs 2"},
    {"offsets out of bounds", T1("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), -1, 4,
     "out of bounds"},
    {"offsets reversed", T1("\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]"), -1, 4,
     "out of bounds"},
    {"size mismatch", T1("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]"), -1, 4,
     "needs 8"},
    {"overlap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     -1, 12, "overlap"},
    {"gap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     -1, 12, "unused bytes"},
    {"bytes after the data", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]"), -1, 8,
     "after the last"},
    {"duplicate tensor",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     -1, 8, "duplicate object key near '\"a\"'"},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", -1, 0, "not a string"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", -1, 0,
     "duplicate object key near '\"__metadata__\"'"},
    {"duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", -1, 0,
     "duplicate object key near '\"k\"'"},
    {"metadata not an object", "{\"__metadata__\":[]}", -1, 0, "\"__metadata__\" is not an object"},
    {"tensor not an object", "{\"a\":[1]}", -1, 0, "tensor 'a' is not an object"},
    {"shape not an array", T1("\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]"), -1, 4,
     "shape is not an array"},
    {"offset not an integer", T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]"), -1,
     4, "data_offsets must hold integers"},
};

/* Every case is tried and every wrong one printed before the test fails. */
static void test_bad_files(void **state)
{
    tmpdir_t *tmp = *state;
    int wrong = 0;
    for (size_t i = 0; i < sizeof s_bad / sizeof s_bad[0]; i++) {
        char err[256] = "";
        s_write_raw(tmp->path, s_bad[i].json, s_bad[i].hlen, s_bad[i].ndata);
        st_file_t *f = st_open(tmp->path, err, sizeof err);
        if (f) {
            st_close(&f);
            print_error("%s: opened\n", s_bad[i].what);
            wrong++;
        } else if (!strstr(err, s_bad[i].want) || !strstr(err, tmp->path)) {
            print_error("%s: message '%s' lacks '%s' or the path\n", s_bad[i].what, err,
                        s_bad[i].want);
            wrong++;
        }
    }
    assert_int_equal(wrong, 0);
}

/* Integers stored as metadata strings, read back checked. */
static void test_metadata_numbers(void **state)
{
    tmpdir_t *tmp = *state;
    const char *meta[] = {"n",    "42",  "neg",   "-7", "u",    "18446744073709551615",
                          "junk", "12x", "empty", "",   "huge", "99999999999999999999",
                          "plus", "+3",  "space", " 5", NULL};
    char err[256] = "";
    assert_int_equal(st_write(tmp->path, NULL, 0, meta, err, sizeof err), 0);
    st_file_t *f = st_open(tmp->path, err, sizeof err);
    if (!f)
        fail_msg("st_open: %s", err);
    int64_t v = 0;
    uint64_t u = 0;
    assert_int_equal(st_metadata_int64(f, "n", 0, 100, &v, err, sizeof err), 0);
    assert_int_equal(v, 42);
    assert_int_equal(st_metadata_int64(f, "neg", -10, 0, &v, err, sizeof err), 0);
    assert_int_equal(v, -7);
    assert_int_equal(st_metadata_uint64(f, "u", &u, err, sizeof err), 0);
    assert_true(u == UINT64_MAX);
    assert_int_equal(st_metadata_uint64(f, "n", &u, err, sizeof err), 0);
    assert_true(u == 42);
    struct {
        const char *key;
        int is_unsigned;
        const char *want;
    } bad[] = {
        {"missing", 0, "missing"},   {"n", 0, "outside 0..10"},     {"junk", 0, "not a whole"},
        {"empty", 0, "not a whole"}, {"huge", 0, "beyond 64 bits"}, {"huge", 1, "beyond 64 bits"},
        {"neg", 1, "not a whole"},   {"plus", 1, "not a whole"},    {"space", 0, "not a whole"},
        {"space", 1, "not a whole"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = bad[i].is_unsigned ? st_metadata_uint64(f, bad[i].key, &u, err, sizeof err)
                                    : st_metadata_int64(f, bad[i].key, 0, 10, &v, err, sizeof err);
        if (rc != -1 || !strstr(err, bad[i].want) || !strstr(err, bad[i].key))
            fail_msg("'%s': rc %d, message '%s' lacks '%s'", bad[i].key, rc, err, bad[i].want);
    }
    st_close(&f);
}

/* Nesting far deeper than any header needs is refused without exhausting
 * the stack. */
static void test_deep_nesting(void **state)
{
    tmpdir_t *tmp = *state;
    enum { DEPTH = 100000 };
    char *json = malloc(2 * DEPTH + 64);
    assert_non_null(json);
    int n = sprintf(json, "{\"__metadata__\":{\"k\":");
    memset(json + n, '[', DEPTH);
    memset(json + n + DEPTH, ']', DEPTH);
    strcpy(json + n + 2 * DEPTH, "}}");
    s_write_raw(tmp->path, json, -1, 0);
    free(json);
    char err[256] = "";
    assert_null(st_open(tmp->path, err, sizeof err));
    if (!strstr(err, "depth"))
        fail_msg("message '%s' lacks 'depth'", err);
}

static void test_good_oddities(void **state)
{
    /* Valid JSON a writer may produce: white space, escapes, surrogate pairs,
     * empty metadata, zero-size tensors sharing an offset. */
    tmpdir_t *tmp = *state;
    const char *json = "{ \"__metadata__\" : { } ,\n\t\"\\u00e9\\ud83d\\ude00\\/\" : "
                       "{ \"shape\" : [ ] , \"data_offsets\" : [ 0 , 4 ] , \"dtype\" : \"F32\" } ,"
                       "\"z1\":{\"dtype\":\"U8\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                       "\"z2\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}   ";
    char err[256] = "";
    s_write_raw(tmp->path, json, -1, 4);
    st_file_t *f = st_open(tmp->path, err, sizeof err);
    if (!f)
        fail_msg("st_open: %s", err);
    assert_int_equal(st_count(f), 3);
    const st_tensor_t *t = st_find(f, "\xc3\xa9\xf0\x9f\x98\x80/");
    assert_non_null(t);
    assert_int_equal(t->ndim, 0);
    assert_memory_equal(t->data, "\x00\x01\x02\x03", 4);
    assert_int_equal(st_numel(st_find(f, "z1")), 0);
    assert_non_null(st_find(f, "z2"));
    st_close(&f);
}

static void test_short_and_special_files(void **state)
{
    tmpdir_t *tmp = *state;
    char err[256] = "";
    s_write_file(tmp->path, "\x02\x00\x00", 3);
    assert_null(st_open(tmp->path, err, sizeof err));
    assert_non_null(strstr(err, "too short"));

    assert_null(st_open(tmp->dir, err, sizeof err));
    assert_non_null(strstr(err, "not a regular file"));

    char path[160];
    snprintf(path, sizeof path, "%s/missing", tmp->dir);
    assert_null(st_open(path, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
    assert_null(st_open(path, NULL, 0));
}

static void test_truncated_fixture(void **state)
{
    tmpdir_t *tmp = *state;
    size_t n;
    unsigned char *raw = s_read_all(FIXTURE, &n);
    size_t cuts[] = {0, 7, 8, 100, 2207, 2208, 2209, 100000, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char err[256] = "";
        s_write_file(tmp->path, raw, cuts[i]);
        st_file_t *f = st_open(tmp->path, err, sizeof err);
        if (f) {
            st_close(&f);
            fail_msg("truncated to %zu bytes: opened", cuts[i]);
        }
        assert_true(err[0] != '\0');
    }
    free(raw);
}

/* Flips random bytes of a small valid file; every result must be an error or
 * a valid file, never a crash (the sanitizers tell). */
static void test_mutations(void **state)
{
    tmpdir_t *tmp = *state;
    float w[4] = {1, 2, 3, 4};
    uint8_t b[3] = {1, 2, 3};
    st_tensor_t in[] = {{"w", ST_F32, 2, {2, 2}, w}, {"b\"", ST_U8, 1, {3}, b}};
    const char *meta[] = {"k", "v\\u", NULL};
    char err[256];
    assert_int_equal(st_write(tmp->path, in, 2, meta, err, sizeof err), 0);
    size_t n;
    unsigned char *orig = s_read_all(tmp->path, &n);
    unsigned char *buf = malloc(n);
    assert_non_null(buf);
    static const unsigned char interesting[] = {'{', '}', '[', ']', '"',  '\\', ',', ':',
                                                '-', '0', '9', 0,   0xff, 0x80, 'u', ' '};
    unsigned seed = 12345;
    int opened = 0;
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, orig, n);
        int flips = 1 + iter % 3;
        for (int k = 0; k < flips; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % (n - 12); /* mostly the header */
            seed = seed * 1103515245u + 12345u;
            buf[pos] = (seed >> 9) & 1 ? interesting[(seed >> 12) % sizeof interesting]
                                       : (unsigned char)(seed >> 16);
        }
        s_write_file(tmp->path, buf, n);
        st_file_t *f = st_open(tmp->path, err, sizeof err);
        if (f) {
            opened++;
            for (int i = 0; i < st_count(f); i++)
                assert_ptr_equal(st_find(f, st_get(f, i)->name), st_get(f, i));
            st_close(&f);
        }
    }
    assert_true(opened < 3000);
    free(buf);
    free(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_overwrite_and_empty, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_write_errors, s_setup, tmpdir_teardown),
        cmocka_unit_test(test_pytorch_fixture),
        cmocka_unit_test_setup_teardown(test_bad_files, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_metadata_numbers, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_deep_nesting, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_good_oddities, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_short_and_special_files, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_truncated_fixture, s_setup, tmpdir_teardown),
        cmocka_unit_test_setup_teardown(test_mutations, s_setup, tmpdir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
