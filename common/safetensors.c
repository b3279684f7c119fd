/* safetensors: writes and reads safetensors files.
 *
 * The JSON header is read and written by jansson, which rejects what a
 * hand-written parser tends to let through: invalid UTF-8, lone surrogates,
 * \u0000, duplicate keys, integers past 64 bits, trailing bytes. This file
 * adds what the safetensors format itself requires.
 *
 * Writing builds the header (tensors in the caller's order, data_offsets back
 * to back, padded with spaces to a multiple of 8 bytes) and writes header and
 * data through atomicfile, so a crash leaves the old file or the new one,
 * never half of one.
 *
 * Reading trusts nothing in the file: every tensor's dtype, shape and offsets
 * are checked against each other and against the file's size before any
 * data is read. Each tensor's bytes are then read into its own 64-byte
 * aligned slot of one allocation, so float data is aligned however the file
 * laid it out. */
#include "safetensors.h"
#include "atomicfile.h"
#include "errmsg.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c copies tensor data as is: it needs a little-endian machine"
#endif

#define ST_MAX_HEADER 100000000        /* bytes; the reference implementation's limit */
#define ST_ALIGN 64                    /* alignment of every tensor's data in memory */
#define ST_METADATA_KEY "__metadata__" /* the header entry that is not a tensor */

/* One tensor of an open file: the public view plus where its bytes were. */
typedef struct {
    st_tensor_t t;
    int64_t begin, end; /* data_offsets, relative to the start of the data region */
} s_entry_t;

struct st_file {
    s_entry_t *entries;  /* in file (header) order */
    int n;               /* number of tensors */
    s_entry_t **by_name; /* entries sorted by name, for st_find */
    json_t *root;        /* the decoded header: owns every name */
    json_t *meta;        /* its "__metadata__" object (borrowed from root), or NULL */
    void *data;          /* every tensor's bytes, each in a 64-byte aligned slot */
};

static size_t s_elem_size(st_dtype_t d)
{
    return d == ST_F32 ? 4 : 1;
}

static const char *s_dtype_name(st_dtype_t d)
{
    return d == ST_F32 ? "F32" : "U8";
}

/* numel * element size, or -1 if a dimension is negative or it overflows. */
static int64_t s_nbytes(const st_tensor_t *t)
{
    int64_t n = (int64_t)s_elem_size(t->dtype);
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return -1;
        if (t->shape[i] != 0 && n > INT64_MAX / t->shape[i])
            return -1;
        n *= t->shape[i];
    }
    return n;
}

int64_t st_numel(const st_tensor_t *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* ---------------------------------------------------------------- writing */

/* Checks what the caller asks to write; the caller's mistakes are reported
 * as errors too, since a bad name would otherwise make a file nobody can
 * read. Names and metadata are checked for UTF-8 and duplicates while the
 * header is built. */
static int s_check_write_args(const char *path, const st_tensor_t *tensors, int n,
                              const char *const *metadata, char *err, size_t errlen)
{
    if (n < 0 || (n > 0 && !tensors)) {
        errmsg_set(err, errlen, "%s: no tensors given (n = %d)", path, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const st_tensor_t *t = &tensors[i];
        if (!t->name) {
            errmsg_set(err, errlen, "%s: tensor %d has no name", path, i);
            return -1;
        }
        if (!strcmp(t->name, ST_METADATA_KEY)) {
            errmsg_set(err, errlen, "%s: tensor %d: the name '%s' is reserved", path, i, t->name);
            return -1;
        }
        if (t->dtype != ST_F32 && t->dtype != ST_U8) {
            errmsg_set(err, errlen, "%s: tensor '%s': unknown dtype %d", path, t->name,
                       (int)t->dtype);
            return -1;
        }
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            errmsg_set(err, errlen, "%s: tensor '%s': %d dimensions (0..%d allowed)", path, t->name,
                       t->ndim, ST_MAX_DIMS);
            return -1;
        }
        int64_t nbytes = s_nbytes(t);
        if (nbytes < 0) {
            errmsg_set(err, errlen, "%s: tensor '%s': negative dimension or size overflow", path,
                       t->name);
            return -1;
        }
        if (nbytes > 0 && !t->data) {
            errmsg_set(err, errlen, "%s: tensor '%s': no data", path, t->name);
            return -1;
        }
    }
    for (int i = 0; metadata && metadata[2 * i]; i++) {
        if (!metadata[2 * i + 1]) {
            errmsg_set(err, errlen, "%s: metadata key '%s' has no value", path, metadata[2 * i]);
            return -1;
        }
    }
    return 0;
}

/* Adds key: value to obj, taking value; refuses a key already there. jansson
 * refuses a key or string that is not valid UTF-8 (json_string gives NULL). */
static int s_set_new(json_t *obj, const char *key, json_t *value, const char *path,
                     const char *what, char *err, size_t errlen)
{
    if (json_object_get(obj, key)) {
        json_decref(value);
        errmsg_set(err, errlen, "%s: %s '%s' appears twice", path, what, key);
        return -1;
    }
    if (!value || json_object_set_new(obj, key, value) != 0) {
        errmsg_set(err, errlen, "%s: %s '%s' or its value is not valid UTF-8", path, what, key);
        return -1;
    }
    return 0;
}

/* The header as a JSON object: metadata first, then the tensors in order. */
static json_t *s_header_json(const st_tensor_t *tensors, int n, const char *const *metadata,
                             const char *path, char *err, size_t errlen)
{
    json_t *root = json_object();
    if (!root) {
        errmsg_set(err, errlen, "%s: out of memory building the header", path);
        return NULL;
    }
    if (metadata && metadata[0]) {
        json_t *meta = json_object();
        if (s_set_new(root, ST_METADATA_KEY, meta, path, "entry", err, errlen) < 0)
            goto fail;
        for (int i = 0; metadata[2 * i]; i++)
            if (s_set_new(meta, metadata[2 * i], json_string(metadata[2 * i + 1]), path,
                          "metadata key", err, errlen) < 0)
                goto fail;
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const st_tensor_t *t = &tensors[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        int64_t end = off + s_nbytes(t);
        /* json_pack takes shape ("o"), also when it fails. */
        json_t *entry = json_pack("{s:s, s:o, s:[I, I]}", "dtype", s_dtype_name(t->dtype), "shape",
                                  shape, "data_offsets", (json_int_t)off, (json_int_t)end);
        if (entry && json_array_size(shape) != (size_t)t->ndim) {
            json_decref(entry);
            entry = NULL;
        }
        if (!entry) {
            errmsg_set(err, errlen, "%s: out of memory building the header", path);
            goto fail;
        }
        if (s_set_new(root, t->name, entry, path, "tensor name", err, errlen) < 0)
            goto fail;
        off = end;
    }
    return root;
fail:
    json_decref(root);
    return NULL;
}

/* The header text, padded with spaces to a multiple of 8 bytes. */
static char *s_build_header(const st_tensor_t *tensors, int n, const char *const *metadata,
                            const char *path, size_t *len, char *err, size_t errlen)
{
    json_t *root = s_header_json(tensors, n, metadata, path, err, errlen);
    if (!root)
        return NULL;
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    size_t tl = text ? strlen(text) : 0, padded = (tl + 7) / 8 * 8;
    char *header = text ? realloc(text, padded + 1) : NULL;
    if (!header) {
        free(text);
        errmsg_set(err, errlen, "%s: out of memory building the header", path);
        return NULL;
    }
    memset(header + tl, ' ', padded - tl);
    header[padded] = '\0';
    *len = padded;
    return header;
}

int st_write(const char *path, const st_tensor_t *tensors, int n, const char *const *metadata,
             char *err, size_t errlen)
{
    assert(path);
    if (s_check_write_args(path, tensors, n, metadata, err, errlen) < 0)
        return -1;
    size_t hlen = 0;
    char *header = s_build_header(tensors, n, metadata, path, &hlen, err, errlen);
    if (!header)
        return -1;
    atomicfile_t af;
    FILE *fp = atomicfile_open(&af, path, err, errlen);
    if (!fp) {
        free(header);
        return -1;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    fwrite(len8, 1, 8, fp);
    fwrite(header, 1, hlen, fp);
    free(header);
    for (int i = 0; i < n; i++) {
        size_t nb = (size_t)s_nbytes(&tensors[i]);
        if (nb > 0)
            fwrite(tensors[i].data, 1, nb, fp);
    }
    return atomicfile_commit(&af, err, errlen); /* reports any write error above */
}

/* ---------------------------------------------------------------- reading */

/* Reads [n, n, ...] of non-negative integers, at most `max` of them. */
static int s_uint_array(const json_t *arr, const char *name, const char *what, int64_t *vals,
                        int max, int *count, const char *path, char *err, size_t errlen)
{
    if (!json_is_array(arr)) {
        errmsg_set(err, errlen, "%s: tensor '%s': %s is not an array", path, name, what);
        return -1;
    }
    if (json_array_size(arr) > (size_t)max) {
        errmsg_set(err, errlen, "%s: tensor '%s': %s has more than %d elements", path, name, what,
                   max);
        return -1;
    }
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_integer(v)) {
            errmsg_set(err, errlen, "%s: tensor '%s': %s must hold integers", path, name, what);
            return -1;
        }
        if (json_integer_value(v) < 0) {
            errmsg_set(err, errlen, "%s: tensor '%s': negative number in %s", path, name, what);
            return -1;
        }
        vals[i] = json_integer_value(v);
    }
    *count = (int)json_array_size(arr);
    return 0;
}

/* Reads one tensor's {"dtype":..., "shape":[...], "data_offsets":[b, e]}. */
static int s_parse_tensor(const json_t *obj, s_entry_t *e, const char *path, char *err,
                          size_t errlen)
{
    const char *name = e->t.name, *key;
    if (!json_is_object(obj)) {
        errmsg_set(err, errlen, "%s: tensor '%s' is not an object", path, name);
        return -1;
    }
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets")) {
            errmsg_set(err, errlen, "%s: tensor '%s': unknown field '%s'", path, name, key);
            return -1;
        }
    }
    const json_t *dtype = json_object_get(obj, "dtype"), *shape = json_object_get(obj, "shape");
    const json_t *offsets = json_object_get(obj, "data_offsets");
    if (!dtype || !shape || !offsets) {
        errmsg_set(err, errlen, "%s: tensor '%s' lacks %s", path, name,
                   !dtype   ? "a dtype"
                   : !shape ? "a shape"
                            : "data_offsets");
        return -1;
    }
    const char *dt = json_string_value(dtype);
    if (!dt) {
        errmsg_set(err, errlen, "%s: tensor '%s': dtype is not a string", path, name);
        return -1;
    }
    if (!strcmp(dt, "F32")) {
        e->t.dtype = ST_F32;
    } else if (!strcmp(dt, "U8")) {
        e->t.dtype = ST_U8;
    } else {
        errmsg_set(err, errlen, "%s: tensor '%s' has dtype '%s'; only F32 and U8 are supported",
                   path, name, dt);
        return -1;
    }
    if (s_uint_array(shape, name, "shape", e->t.shape, ST_MAX_DIMS, &e->t.ndim, path, err, errlen) <
        0)
        return -1;
    int64_t off[2];
    int cnt = 0;
    if (s_uint_array(offsets, name, "data_offsets", off, 2, &cnt, path, err, errlen) < 0)
        return -1;
    if (cnt != 2) {
        errmsg_set(err, errlen, "%s: tensor '%s': data_offsets needs 2 numbers, not %d", path, name,
                   cnt);
        return -1;
    }
    e->begin = off[0];
    e->end = off[1];
    return 0;
}

/* Decodes the header text and fills f->root, f->meta and f->entries. */
static int s_parse_header(st_file_t *f, const char *header, size_t hlen, const char *path,
                          char *err, size_t errlen)
{
    /* The format requires the header to begin with '{' (no white space). */
    if (hlen == 0 || header[0] != '{') {
        errmsg_set(err, errlen, "%s: bad header: the header must begin with '{'", path);
        return -1;
    }
    json_error_t je;
    f->root = json_loadb(header, hlen, JSON_REJECT_DUPLICATES, &je);
    if (!f->root) {
        errmsg_set(err, errlen, "%s: bad header at byte %d of the JSON: %s%s", path, je.position,
                   je.text,
                   json_error_code(&je) == json_error_invalid_utf8 ? " (not valid UTF-8)" : "");
        return -1;
    }
    size_t n = json_object_size(f->root);
    f->entries = calloc(n ? n : 1, sizeof *f->entries);
    if (!f->entries) {
        errmsg_set(err, errlen, "%s: out of memory for %zu tensors", path, n);
        return -1;
    }
    const char *name;
    json_t *v;
    json_object_foreach(f->root, name, v)
    {
        if (!strcmp(name, ST_METADATA_KEY)) {
            const char *key;
            json_t *mv;
            if (!json_is_object(v)) {
                errmsg_set(err, errlen, "%s: \"__metadata__\" is not an object", path);
                return -1;
            }
            json_object_foreach(v, key, mv)
            {
                if (!json_is_string(mv)) {
                    errmsg_set(err, errlen, "%s: metadata value of '%s' is not a string", path,
                               key);
                    return -1;
                }
            }
            f->meta = v;
            continue;
        }
        s_entry_t *e = &f->entries[f->n];
        e->t.name = name;
        if (s_parse_tensor(v, e, path, err, errlen) < 0)
            return -1;
        f->n++;
    }
    return 0;
}

static int s_cmp_name(const void *a, const void *b)
{
    return strcmp((*(s_entry_t *const *)a)->t.name, (*(s_entry_t *const *)b)->t.name);
}

static int s_cmp_offsets(const void *a, const void *b)
{
    const s_entry_t *x = *(s_entry_t *const *)a, *y = *(s_entry_t *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Checks every tensor's size and offsets against the data region; on success
 * `order` holds the entries sorted by offset. */
static int s_check_layout(st_file_t *f, const char *path, int64_t data_size, s_entry_t **order,
                          char *err, size_t errlen)
{
    for (int i = 0; i < f->n; i++) {
        s_entry_t *e = &f->entries[i];
        int64_t nbytes = s_nbytes(&e->t);
        if (nbytes < 0) {
            errmsg_set(err, errlen, "%s: tensor '%s': shape too large", path, e->t.name);
            return -1;
        }
        if (e->begin > e->end || e->end > data_size) {
            errmsg_set(err, errlen,
                       "%s: tensor '%s': data_offsets [%lld, %lld] out of bounds of the %lld-byte "
                       "data region",
                       path, e->t.name, (long long)e->begin, (long long)e->end,
                       (long long)data_size);
            return -1;
        }
        if (e->end - e->begin != nbytes) {
            char shape[ST_MAX_DIMS * 21 + 3] = "[";
            for (int d = 0; d < e->t.ndim; d++)
                snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld",
                         d ? "," : "", (long long)e->t.shape[d]);
            strcat(shape, "]");
            errmsg_set(err, errlen,
                       "%s: tensor '%s': data_offsets span %lld bytes, but %s %s needs %lld", path,
                       e->t.name, (long long)(e->end - e->begin), s_dtype_name(e->t.dtype), shape,
                       (long long)nbytes);
            return -1;
        }
        order[i] = e;
    }
    qsort(order, (size_t)f->n, sizeof *order, s_cmp_offsets);
    int64_t expect = 0;
    for (int i = 0; i < f->n; i++) {
        if (order[i]->begin < expect) {
            errmsg_set(err, errlen, "%s: tensors '%s' and '%s' overlap", path, order[i - 1]->t.name,
                       order[i]->t.name);
            return -1;
        }
        if (order[i]->begin > expect) {
            errmsg_set(err, errlen, "%s: %lld unused bytes before tensor '%s'", path,
                       (long long)(order[i]->begin - expect), order[i]->t.name);
            return -1;
        }
        expect = order[i]->end;
    }
    if (expect != data_size) {
        errmsg_set(err, errlen, "%s: %lld bytes after the last tensor's data", path,
                   (long long)(data_size - expect));
        return -1;
    }
    return 0;
}

/* Reads the tensors' bytes, in file order, each into its aligned slot. */
static int s_read_data(st_file_t *f, FILE *fp, const char *path, s_entry_t **order, char *err,
                       size_t errlen)
{
    size_t total = 0;
    for (int i = 0; i < f->n; i++) {
        size_t nb = (size_t)(order[i]->end - order[i]->begin);
        total += (nb + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    }
    f->data = aligned_alloc(ST_ALIGN, total ? total : ST_ALIGN);
    if (!f->data) {
        errmsg_set(err, errlen, "%s: out of memory for %zu bytes of tensor data", path, total);
        return -1;
    }
    size_t off = 0;
    for (int i = 0; i < f->n; i++) {
        size_t nb = (size_t)(order[i]->end - order[i]->begin);
        char *dst = (char *)f->data + off;
        if (nb > 0 && fread(dst, 1, nb, fp) != nb) {
            errmsg_set(err, errlen, "%s: read error or file truncated while reading tensor '%s'",
                       path, order[i]->t.name);
            return -1;
        }
        order[i]->t.data = dst;
        off += (nb + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    }
    return 0;
}

/* Opens path for reading if it is a regular file; its size into *size. The
 * stream, or NULL with err set. */
static FILE *s_open_regular(const char *path, int64_t *size, char *err, size_t errlen)
{
    /* O_NONBLOCK so that a FIFO given by mistake is refused, not waited on;
     * it changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        errmsg_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        errmsg_set(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        errmsg_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    *size = (int64_t)sb.st_size;
    return fp;
}

/* Reads the header's length (8 bytes, little-endian) and the header after it,
 * checked against the file's size and ST_MAX_HEADER. The header (malloc'd,
 * one byte longer than *hlen) or NULL with err set. */
static char *s_read_header(FILE *fp, int64_t size, const char *path, uint64_t *hlen, char *err,
                           size_t errlen)
{
    unsigned char len8[8];
    if (size < 8 || fread(len8, 1, 8, fp) != 8) {
        errmsg_set(err, errlen, "%s: too short to be a safetensors file (%lld bytes)", path,
                   (long long)size);
        return NULL;
    }
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)len8[i] << (8 * i);
    if (n > (uint64_t)(size - 8)) {
        errmsg_set(err, errlen, "%s: header length %llu is beyond the end of the %lld-byte file",
                   path, (unsigned long long)n, (long long)size);
        return NULL;
    }
    if (n > ST_MAX_HEADER) {
        errmsg_set(err, errlen, "%s: header length %llu exceeds the %d-byte limit", path,
                   (unsigned long long)n, ST_MAX_HEADER);
        return NULL;
    }
    char *header = malloc(n + 1);
    if (!header) {
        errmsg_set(err, errlen, "%s: out of memory for the header", path);
        return NULL;
    }
    if (fread(header, 1, n, fp) != n) {
        errmsg_set(err, errlen, "%s: read error or file truncated in the header", path);
        free(header);
        return NULL;
    }
    *hlen = n;
    return header;
}

st_file_t *st_open(const char *path, char *err, size_t errlen)
{
    assert(path);
    st_file_t *f = calloc(1, sizeof *f);
    char *header = NULL;
    s_entry_t **order = NULL;
    FILE *fp = NULL;
    int64_t size = 0;
    uint64_t hlen = 0;
    if (!f) {
        errmsg_set(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    if (!(fp = s_open_regular(path, &size, err, errlen)))
        goto fail;
    if (!(header = s_read_header(fp, size, path, &hlen, err, errlen)))
        goto fail;
    if (s_parse_header(f, header, hlen, path, err, errlen) < 0)
        goto fail;

    order = malloc(sizeof *order * (size_t)(f->n ? f->n : 1));
    f->by_name = malloc(sizeof *f->by_name * (size_t)(f->n ? f->n : 1));
    if (!order || !f->by_name) {
        errmsg_set(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    for (int i = 0; i < f->n; i++)
        f->by_name[i] = &f->entries[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, s_cmp_name); /* names are unique */
    if (s_check_layout(f, path, size - 8 - (int64_t)hlen, order, err, errlen) < 0)
        goto fail;
    if (s_read_data(f, fp, path, order, err, errlen) < 0)
        goto fail;
    free(order);
    free(header);
    fclose(fp);
    return f;
fail:
    free(order);
    free(header);
    if (fp)
        fclose(fp);
    st_close(&f);
    return NULL;
}

const st_tensor_t *st_find(const st_file_t *f, const char *name)
{
    s_entry_t key = {.t.name = name}, *pkey = &key;
    s_entry_t **hit = bsearch(&pkey, f->by_name, (size_t)f->n, sizeof *f->by_name, s_cmp_name);
    return hit ? &(*hit)->t : NULL;
}

int st_count(const st_file_t *f)
{
    return f->n;
}

const st_tensor_t *st_get(const st_file_t *f, int i)
{
    return i >= 0 && i < f->n ? &f->entries[i].t : NULL;
}

const char *st_metadata(const st_file_t *f, const char *key)
{
    return f->meta ? json_string_value(json_object_get(f->meta, key)) : NULL;
}

/* The metadata string of key as a whole decimal number; 0, or -1 with a
 * message. Leading white space and signs are refused for unsigned values. */
static int s_meta_number(const st_file_t *f, const char *key, int is_signed, long long *sv,
                         unsigned long long *uv, char *err, size_t errlen)
{
    const char *v = st_metadata(f, key);
    if (!v) {
        errmsg_set(err, errlen, "metadata '%s' is missing", key);
        return -1;
    }
    char *end = NULL;
    errno = 0;
    if (is_signed)
        *sv = strtoll(v, &end, 10);
    else if (v[0] != '-' && v[0] != '+')
        *uv = strtoull(v, &end, 10);
    if (!end || end == v || *end != '\0' || (v[0] < '0' && v[0] != '-') || v[0] > '9') {
        errmsg_set(err, errlen, "metadata '%s' is '%s', not a whole number", key, v);
        return -1;
    }
    if (errno == ERANGE) {
        errmsg_set(err, errlen, "metadata '%s' is %s, beyond 64 bits", key, v);
        return -1;
    }
    return 0;
}

int st_metadata_int64(const st_file_t *f, const char *key, int64_t min, int64_t max, int64_t *out,
                      char *err, size_t errlen)
{
    long long v;
    if (s_meta_number(f, key, 1, &v, NULL, err, errlen) < 0)
        return -1;
    if (v < min || v > max) {
        errmsg_set(err, errlen, "metadata '%s' is %lld, outside %lld..%lld", key, v, (long long)min,
                   (long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

int st_metadata_uint64(const st_file_t *f, const char *key, uint64_t *out, char *err, size_t errlen)
{
    unsigned long long v;
    if (s_meta_number(f, key, 0, NULL, &v, err, errlen) < 0)
        return -1;
    *out = v;
    return 0;
}

void st_close(st_file_t **pf)
{
    if (!pf || !*pf)
        return;
    st_file_t *f = *pf;
    free(f->entries);
    free(f->by_name);
    json_decref(f->root);
    free(f->data);
    free(f);
    *pf = NULL;
}
