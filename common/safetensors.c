/* safetensors: writes and reads safetensors files.
 *
 * Writing builds the JSON header in memory (tensors in the caller's order,
 * data_offsets back to back, padded with spaces to a multiple of 8 bytes) and
 * writes header and data to `path.tmp`, which is fsync'd and renamed over
 * `path`; the directory is fsync'd too, so a crash leaves the old file or the
 * new one, never half of one.
 *
 * Reading trusts nothing in the file. The header is parsed by a small strict
 * JSON parser that knows only what a safetensors header may hold (objects,
 * strings, non-negative integer arrays); every tensor's dtype, shape and
 * offsets are checked against each other and against the file's size before
 * any data is read. Each tensor's bytes are then read into its own 64-byte
 * aligned slot of one allocation, so float data is aligned however the file
 * laid it out. */
#include "safetensors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c copies tensor data as is: it needs a little-endian machine"
#endif

#define ST_MAX_HEADER 100000000 /* bytes; the reference implementation's limit */
#define ST_ALIGN 64             /* alignment of every tensor's data in memory */
#define ST_METADATA_KEY "__metadata__" /* the header entry that is not a tensor */

/* One tensor of an open file: the public view plus where its bytes were. */
typedef struct {
    st_tensor_t t;
    int64_t begin, end; /* data_offsets, relative to the start of the data region */
} s_entry_t;

struct st_file {
    s_entry_t *entries;   /* in file (header) order */
    int n;                /* number of tensors */
    s_entry_t **by_name;  /* entries sorted by name, for st_find */
    char **meta;          /* key, value, key, value... */
    int nmeta;            /* number of pairs */
    char *strings;        /* all names, keys and values (decoded) */
    void *data;           /* every tensor's bytes, each in a 64-byte aligned slot */
};

/* printf into the caller's error buffer, tolerating a NULL or empty one. */
static void s_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static size_t s_elem_size(st_dtype_t d) {
    return d == ST_F32 ? 4 : 1;
}

static const char *s_dtype_name(st_dtype_t d) {
    return d == ST_F32 ? "F32" : "U8";
}

/* numel * element size, or -1 if a dimension is negative or it overflows. */
static int64_t s_nbytes(const st_tensor_t *t) {
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

int64_t st_numel(const st_tensor_t *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* Length of the valid UTF-8 sequence at s (at most `avail` bytes), or 0 if
 * it is not one: overlong forms, surrogates and code points past U+10FFFF are
 * invalid, as JSON (RFC 8259) requires. */
static int s_utf8_seq(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    int len;
    unsigned cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if ((size_t)len > avail)
        return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int s_utf8_valid(const char *s) {
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        int k = s_utf8_seq((const unsigned char *)s + i, len - i);
        if (k == 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

static int s_cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ---------------------------------------------------------------- writing */

/* A growing string; `failed` is set once an allocation fails. */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} s_buf_t;

static void s_buf_add(s_buf_t *b, const char *s, size_t n) {
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void s_buf_str(s_buf_t *b, const char *s) {
    s_buf_add(b, s, strlen(s));
}

static void s_buf_i64(s_buf_t *b, int64_t v) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    s_buf_add(b, tmp, (size_t)n);
}

/* Appends s as a JSON string literal: quotes, backslashes and control
 * characters escaped; other bytes (valid UTF-8, checked by the caller) as is. */
static void s_buf_json_str(s_buf_t *b, const char *s) {
    s_buf_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': s_buf_add(b, "\\\"", 2); break;
        case '\\': s_buf_add(b, "\\\\", 2); break;
        case '\b': s_buf_add(b, "\\b", 2); break;
        case '\f': s_buf_add(b, "\\f", 2); break;
        case '\n': s_buf_add(b, "\\n", 2); break;
        case '\r': s_buf_add(b, "\\r", 2); break;
        case '\t': s_buf_add(b, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                s_buf_add(b, esc, 6);
            } else {
                s_buf_add(b, (const char *)p, 1);
            }
        }
    }
    s_buf_add(b, "\"", 1);
}

/* Checks what the caller asks to write; the caller's mistakes are reported
 * as errors too, since a bad name would otherwise make a file nobody can read. */
static int s_check_write_args(const char *path, const st_tensor_t *tensors, int n,
                              const char *const *metadata, char *err, size_t errlen) {
    if (n < 0 || (n > 0 && !tensors)) {
        s_err(err, errlen, "%s: no tensors given (n = %d)", path, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const st_tensor_t *t = &tensors[i];
        if (!t->name) {
            s_err(err, errlen, "%s: tensor %d has no name", path, i);
            return -1;
        }
        if (!strcmp(t->name, ST_METADATA_KEY) || !s_utf8_valid(t->name)) {
            s_err(err, errlen, "%s: tensor %d: name '%s' is reserved or not valid UTF-8", path,
                  i, t->name);
            return -1;
        }
        if (t->dtype != ST_F32 && t->dtype != ST_U8) {
            s_err(err, errlen, "%s: tensor '%s': unknown dtype %d", path, t->name,
                  (int)t->dtype);
            return -1;
        }
        if (t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
            s_err(err, errlen, "%s: tensor '%s': %d dimensions (0..%d allowed)", path, t->name,
                  t->ndim, ST_MAX_DIMS);
            return -1;
        }
        int64_t nbytes = s_nbytes(t);
        if (nbytes < 0) {
            s_err(err, errlen, "%s: tensor '%s': negative dimension or size overflow", path,
                  t->name);
            return -1;
        }
        if (nbytes > 0 && !t->data) {
            s_err(err, errlen, "%s: tensor '%s': no data", path, t->name);
            return -1;
        }
    }
    int nmeta = 0;
    for (; metadata && metadata[2 * nmeta]; nmeta++) {
        const char *k = metadata[2 * nmeta], *v = metadata[2 * nmeta + 1];
        if (!v) {
            s_err(err, errlen, "%s: metadata key '%s' has no value", path, k);
            return -1;
        }
        if (!s_utf8_valid(k) || !s_utf8_valid(v)) {
            s_err(err, errlen, "%s: metadata '%s' is not valid UTF-8", path, k);
            return -1;
        }
    }
    /* Duplicates, found by sorting the names. */
    int most = n > nmeta ? n : nmeta;
    const char **names = malloc(sizeof *names * (size_t)(most ? most : 1));
    if (!names) {
        s_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int rc = 0;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        int cnt = pass == 0 ? n : nmeta;
        for (int i = 0; i < cnt; i++)
            names[i] = pass == 0 ? tensors[i].name : metadata[2 * i];
        qsort(names, (size_t)cnt, sizeof *names, s_cmp_str_ptr);
        for (int i = 1; i < cnt; i++) {
            if (!strcmp(names[i - 1], names[i])) {
                s_err(err, errlen, "%s: %s '%s' appears twice", path,
                      pass == 0 ? "tensor name" : "metadata key", names[i]);
                rc = -1;
                break;
            }
        }
    }
    free(names);
    return rc;
}

/* The header JSON, padded with spaces to a multiple of 8 bytes; NULL if out
 * of memory. */
static char *s_build_header(const st_tensor_t *tensors, int n, const char *const *metadata,
                            size_t *len) {
    s_buf_t b = {0};
    s_buf_str(&b, "{");
    int first = 1;
    if (metadata && metadata[0]) {
        s_buf_json_str(&b, ST_METADATA_KEY);
        s_buf_str(&b, ":{");
        for (int i = 0; metadata[2 * i]; i++) {
            if (i > 0)
                s_buf_str(&b, ",");
            s_buf_json_str(&b, metadata[2 * i]);
            s_buf_str(&b, ":");
            s_buf_json_str(&b, metadata[2 * i + 1]);
        }
        s_buf_str(&b, "}");
        first = 0;
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const st_tensor_t *t = &tensors[i];
        if (!first)
            s_buf_str(&b, ",");
        first = 0;
        s_buf_json_str(&b, t->name);
        s_buf_str(&b, ":{\"dtype\":\"");
        s_buf_str(&b, s_dtype_name(t->dtype));
        s_buf_str(&b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d > 0)
                s_buf_str(&b, ",");
            s_buf_i64(&b, t->shape[d]);
        }
        s_buf_str(&b, "],\"data_offsets\":[");
        s_buf_i64(&b, off);
        s_buf_str(&b, ",");
        off += s_nbytes(t);
        s_buf_i64(&b, off);
        s_buf_str(&b, "]}");
    }
    s_buf_str(&b, "}");
    while (!b.failed && b.len % 8 != 0)
        s_buf_str(&b, " ");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* fsyncs the directory holding path, so that a rename into it is durable. */
static int s_fsync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int st_write(const char *path, const st_tensor_t *tensors, int n, const char *const *metadata,
             char *err, size_t errlen) {
    assert(path);
    if (s_check_write_args(path, tensors, n, metadata, err, errlen) < 0)
        return -1;
    size_t hlen = 0;
    char *header = s_build_header(tensors, n, metadata, &hlen);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!header || !tmp) {
        s_err(err, errlen, "%s: out of memory building the header", path);
        free(header);
        free(tmp);
        return -1;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    /* `what` names the first step that failed and `e` its errno. */
    const char *what = NULL;
    int e = 0;
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        what = "cannot create";
        e = errno;
    } else {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++)
            len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
        if (fwrite(len8, 1, 8, fp) != 8 || fwrite(header, 1, hlen, fp) != hlen) {
            what = "cannot write";
            e = errno;
        }
        for (int i = 0; i < n && !what; i++) {
            size_t nb = (size_t)s_nbytes(&tensors[i]);
            if (nb > 0 && fwrite(tensors[i].data, 1, nb, fp) != nb) {
                what = "cannot write";
                e = errno;
            }
        }
        if (!what && fflush(fp) != 0) {
            what = "cannot write";
            e = errno;
        }
        if (!what && fsync(fileno(fp)) != 0) {
            what = "cannot fsync";
            e = errno;
        }
        if (fclose(fp) != 0 && !what) {
            what = "cannot close";
            e = errno;
        }
        if (!what && rename(tmp, path) != 0) {
            what = "cannot rename into place";
            e = errno;
        }
    }
    free(header);
    if (what) {
        s_err(err, errlen, "%s: %s %s: %s", path, what, tmp, strerror(e));
        if (fp)
            unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    if (s_fsync_dir(path) != 0) {
        s_err(err, errlen, "%s: written, but cannot fsync its directory: %s", path,
              strerror(errno));
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- reading */

/* The JSON parser's state. Decoded strings go to `arena`: a string decodes to
 * no more bytes than its quoted form takes, so header-length bytes suffice. */
typedef struct {
    const char *start, *p, *end; /* the header text */
    char *arena;
    size_t used;
    const char *path;
    char *err;
    size_t errlen;
} s_parser_t;

static int s_fail(s_parser_t *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int s_fail(s_parser_t *ps, const char *fmt, ...) {
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s_err(ps->err, ps->errlen, "%s: bad header at byte %zu of the JSON: %s", ps->path,
          (size_t)(ps->p - ps->start), msg);
    return -1;
}

static void s_skip_ws(s_parser_t *ps) {
    while (ps->p < ps->end &&
           (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Skips white space, then consumes c or fails. */
static int s_expect(s_parser_t *ps, char c) {
    s_skip_ws(ps);
    if (ps->p >= ps->end)
        return s_fail(ps, "expected '%c', found the end of the header", c);
    if (*ps->p != c)
        return s_fail(ps, "expected '%c', found '%c'", c, *ps->p);
    ps->p++;
    return 0;
}

/* Consumes c if it comes next (after white space). */
static int s_accept(s_parser_t *ps, char c) {
    s_skip_ws(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return 1;
    }
    return 0;
}

static int s_hex4(s_parser_t *ps, unsigned *out) {
    if (ps->end - ps->p < 4)
        return s_fail(ps, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = ps->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return s_fail(ps, "bad hex digit in \\u escape");
    }
    ps->p += 4;
    *out = v;
    return 0;
}

/* Parses a JSON string into the arena; *out points at it (NUL-terminated). */
static int s_parse_string(s_parser_t *ps, char **out) {
    if (s_expect(ps, '"') < 0)
        return -1;
    char *dst = ps->arena + ps->used, *w = dst;
    for (;;) {
        if (ps->p >= ps->end)
            return s_fail(ps, "unterminated string");
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20)
            return s_fail(ps, "control character 0x%02x in a string", c);
        if (c != '\\') {
            int k = s_utf8_seq((const unsigned char *)ps->p, (size_t)(ps->end - ps->p));
            if (k == 0)
                return s_fail(ps, "invalid UTF-8 in a string");
            memcpy(w, ps->p, (size_t)k);
            w += k;
            ps->p += k;
            continue;
        }
        ps->p++;
        if (ps->p >= ps->end)
            return s_fail(ps, "unterminated string");
        char e = *ps->p++;
        unsigned cp;
        switch (e) {
        case '"': *w++ = '"'; continue;
        case '\\': *w++ = '\\'; continue;
        case '/': *w++ = '/'; continue;
        case 'b': *w++ = '\b'; continue;
        case 'f': *w++ = '\f'; continue;
        case 'n': *w++ = '\n'; continue;
        case 'r': *w++ = '\r'; continue;
        case 't': *w++ = '\t'; continue;
        case 'u': break;
        default: return s_fail(ps, "unknown escape '\\%c'", e);
        }
        if (s_hex4(ps, &cp) < 0)
            return -1;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return s_fail(ps, "lone low surrogate in \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
            unsigned lo;
            if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
                return s_fail(ps, "high surrogate not followed by a low one");
            ps->p += 2;
            if (s_hex4(ps, &lo) < 0)
                return -1;
            if (lo < 0xdc00 || lo > 0xdfff)
                return s_fail(ps, "high surrogate not followed by a low one");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (cp == 0)
            return s_fail(ps, "\\u0000 in a string");
        if (cp < 0x80) {
            *w++ = (char)cp;
        } else if (cp < 0x800) {
            *w++ = (char)(0xc0 | cp >> 6);
            *w++ = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            *w++ = (char)(0xe0 | cp >> 12);
            *w++ = (char)(0x80 | (cp >> 6 & 0x3f));
            *w++ = (char)(0x80 | (cp & 0x3f));
        } else {
            *w++ = (char)(0xf0 | cp >> 18);
            *w++ = (char)(0x80 | (cp >> 12 & 0x3f));
            *w++ = (char)(0x80 | (cp >> 6 & 0x3f));
            *w++ = (char)(0x80 | (cp & 0x3f));
        }
    }
    *w++ = '\0';
    ps->used += (size_t)(w - dst);
    *out = dst;
    return 0;
}

/* Parses a non-negative JSON integer no larger than INT64_MAX. */
static int s_parse_uint(s_parser_t *ps, const char *what, int64_t *out) {
    s_skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '-')
        return s_fail(ps, "negative number in %s", what);
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
        return s_fail(ps, "expected a number in %s", what);
    if (*ps->p == '0' && ps->end - ps->p > 1 && ps->p[1] >= '0' && ps->p[1] <= '9')
        return s_fail(ps, "number with a leading zero in %s", what);
    int64_t v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        int d = *ps->p - '0';
        if (v > (INT64_MAX - d) / 10)
            return s_fail(ps, "number too large in %s", what);
        v = v * 10 + d;
        ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E'))
        return s_fail(ps, "%s must hold integers", what);
    *out = v;
    return 0;
}

/* Parses [n, n, ...] with at most `max` elements. */
static int s_parse_uint_array(s_parser_t *ps, const char *what, int64_t *vals, int max,
                              int *count) {
    if (s_expect(ps, '[') < 0)
        return -1;
    int n = 0;
    if (!s_accept(ps, ']')) {
        do {
            if (n == max)
                return s_fail(ps, "%s has more than %d elements", what, max);
            if (s_parse_uint(ps, what, &vals[n++]) < 0)
                return -1;
        } while (s_accept(ps, ','));
        if (s_expect(ps, ']') < 0)
            return -1;
    }
    *count = n;
    return 0;
}

static int s_parse_metadata(s_parser_t *ps, st_file_t *f) {
    if (f->meta)
        return s_fail(ps, "two \"__metadata__\" entries");
    int cap = 8;
    f->meta = malloc(sizeof *f->meta * 2 * (size_t)cap);
    if (!f->meta)
        return s_fail(ps, "out of memory");
    if (s_expect(ps, '{') < 0)
        return -1;
    if (s_accept(ps, '}'))
        return 0;
    do {
        char *k, *v;
        if (s_parse_string(ps, &k) < 0 || s_expect(ps, ':') < 0)
            return -1;
        s_skip_ws(ps);
        if (ps->p < ps->end && *ps->p != '"')
            return s_fail(ps, "metadata value of '%s' is not a string", k);
        if (s_parse_string(ps, &v) < 0)
            return -1;
        for (int i = 0; i < f->nmeta; i++)
            if (!strcmp(f->meta[2 * i], k))
                return s_fail(ps, "metadata key '%s' appears twice", k);
        if (f->nmeta == cap) {
            cap *= 2;
            char **m = realloc(f->meta, sizeof *m * 2 * (size_t)cap);
            if (!m)
                return s_fail(ps, "out of memory");
            f->meta = m;
        }
        f->meta[2 * f->nmeta] = k;
        f->meta[2 * f->nmeta + 1] = v;
        f->nmeta++;
    } while (s_accept(ps, ','));
    return s_expect(ps, '}');
}

/* Parses one tensor's {"dtype":..., "shape":[...], "data_offsets":[b, e]}. */
static int s_parse_tensor(s_parser_t *ps, s_entry_t *e) {
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    const char *name = e->t.name;
    if (s_expect(ps, '{') < 0)
        return -1;
    if (!s_accept(ps, '}')) {
        do {
            size_t mark = ps->used;
            char *key;
            if (s_parse_string(ps, &key) < 0 || s_expect(ps, ':') < 0)
                return -1;
            if (!strcmp(key, "dtype")) {
                char *dt;
                if (have_dtype++)
                    return s_fail(ps, "tensor '%s': two dtypes", name);
                s_skip_ws(ps);
                if (ps->p < ps->end && *ps->p != '"')
                    return s_fail(ps, "tensor '%s': dtype is not a string", name);
                if (s_parse_string(ps, &dt) < 0)
                    return -1;
                if (!strcmp(dt, "F32"))
                    e->t.dtype = ST_F32;
                else if (!strcmp(dt, "U8"))
                    e->t.dtype = ST_U8;
                else {
                    s_err(ps->err, ps->errlen,
                          "%s: tensor '%s' has dtype '%s'; only F32 and U8 are supported",
                          ps->path, name, dt);
                    return -1;
                }
            } else if (!strcmp(key, "shape")) {
                if (have_shape++)
                    return s_fail(ps, "tensor '%s': two shapes", name);
                if (s_parse_uint_array(ps, "shape", e->t.shape, ST_MAX_DIMS, &e->t.ndim) < 0)
                    return -1;
            } else if (!strcmp(key, "data_offsets")) {
                int64_t off[2];
                int cnt = 0;
                if (have_offsets++)
                    return s_fail(ps, "tensor '%s': two data_offsets", name);
                if (s_parse_uint_array(ps, "data_offsets", off, 2, &cnt) < 0)
                    return -1;
                if (cnt != 2)
                    return s_fail(ps, "tensor '%s': data_offsets needs 2 numbers, not %d", name,
                                  cnt);
                e->begin = off[0];
                e->end = off[1];
            } else {
                return s_fail(ps, "tensor '%s': unknown field '%s'", name, key);
            }
            ps->used = mark; /* the key and dtype strings are not kept */
        } while (s_accept(ps, ','));
        if (s_expect(ps, '}') < 0)
            return -1;
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return s_fail(ps, "tensor '%s' lacks %s", name,
                      !have_dtype ? "a dtype" : !have_shape ? "a shape" : "data_offsets");
    return 0;
}

/* Parses the whole header into f->entries, f->meta. */
static int s_parse_header(s_parser_t *ps, st_file_t *f) {
    int cap = 0;
    if (ps->p >= ps->end || *ps->p != '{')
        return s_fail(ps, "the header must begin with '{'");
    ps->p++;
    if (!s_accept(ps, '}')) {
        do {
            char *name;
            if (s_parse_string(ps, &name) < 0 || s_expect(ps, ':') < 0)
                return -1;
            if (!strcmp(name, ST_METADATA_KEY)) {
                if (s_parse_metadata(ps, f) < 0)
                    return -1;
                continue;
            }
            if (f->n == cap) {
                cap = cap ? 2 * cap : 32;
                s_entry_t *e = realloc(f->entries, sizeof *e * (size_t)cap);
                if (!e)
                    return s_fail(ps, "out of memory");
                f->entries = e;
            }
            s_entry_t *e = &f->entries[f->n];
            memset(e, 0, sizeof *e);
            e->t.name = name;
            if (s_parse_tensor(ps, e) < 0)
                return -1;
            f->n++;
        } while (s_accept(ps, ','));
        if (s_expect(ps, '}') < 0)
            return -1;
    }
    s_skip_ws(ps);
    if (ps->p != ps->end)
        return s_fail(ps, "unexpected bytes after the header's closing '}'");
    return 0;
}

static int s_cmp_name(const void *a, const void *b) {
    return strcmp((*(s_entry_t *const *)a)->t.name, (*(s_entry_t *const *)b)->t.name);
}

static int s_cmp_offsets(const void *a, const void *b) {
    const s_entry_t *x = *(s_entry_t *const *)a, *y = *(s_entry_t *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Checks every tensor's size and offsets against the data region; on success
 * `order` holds the entries sorted by offset. */
static int s_check_layout(st_file_t *f, const char *path, int64_t data_size, s_entry_t **order,
                          char *err, size_t errlen) {
    for (int i = 0; i < f->n; i++) {
        s_entry_t *e = &f->entries[i];
        int64_t nbytes = s_nbytes(&e->t);
        if (nbytes < 0) {
            s_err(err, errlen, "%s: tensor '%s': shape too large", path, e->t.name);
            return -1;
        }
        if (e->begin > e->end || e->end > data_size) {
            s_err(err, errlen,
                  "%s: tensor '%s': data_offsets [%lld, %lld] out of bounds of the %lld-byte "
                  "data region",
                  path, e->t.name, (long long)e->begin, (long long)e->end, (long long)data_size);
            return -1;
        }
        if (e->end - e->begin != nbytes) {
            char shape[ST_MAX_DIMS * 21 + 3] = "[";
            for (int d = 0; d < e->t.ndim; d++)
                snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld",
                         d ? "," : "", (long long)e->t.shape[d]);
            strcat(shape, "]");
            s_err(err, errlen,
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
            s_err(err, errlen, "%s: tensors '%s' and '%s' overlap", path, order[i - 1]->t.name,
                  order[i]->t.name);
            return -1;
        }
        if (order[i]->begin > expect) {
            s_err(err, errlen, "%s: %lld unused bytes before tensor '%s'", path,
                  (long long)(order[i]->begin - expect), order[i]->t.name);
            return -1;
        }
        expect = order[i]->end;
    }
    if (expect != data_size) {
        s_err(err, errlen, "%s: %lld bytes after the last tensor's data", path,
              (long long)(data_size - expect));
        return -1;
    }
    return 0;
}

/* Reads the tensors' bytes, in file order, each into its aligned slot. */
static int s_read_data(st_file_t *f, FILE *fp, const char *path, s_entry_t **order, char *err,
                       size_t errlen) {
    size_t total = 0;
    for (int i = 0; i < f->n; i++) {
        size_t nb = (size_t)(order[i]->end - order[i]->begin);
        total += (nb + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    }
    f->data = aligned_alloc(ST_ALIGN, total ? total : ST_ALIGN);
    if (!f->data) {
        s_err(err, errlen, "%s: out of memory for %zu bytes of tensor data", path, total);
        return -1;
    }
    size_t off = 0;
    for (int i = 0; i < f->n; i++) {
        size_t nb = (size_t)(order[i]->end - order[i]->begin);
        char *dst = (char *)f->data + off;
        if (nb > 0 && fread(dst, 1, nb, fp) != nb) {
            s_err(err, errlen, "%s: read error or file truncated while reading tensor '%s'",
                  path, order[i]->t.name);
            return -1;
        }
        order[i]->t.data = dst;
        off += (nb + ST_ALIGN - 1) / ST_ALIGN * ST_ALIGN;
    }
    return 0;
}

st_file_t *st_open(const char *path, char *err, size_t errlen) {
    assert(path);
    st_file_t *f = calloc(1, sizeof *f);
    char *header = NULL;
    s_entry_t **order = NULL;
    FILE *fp = NULL;
    if (!f) {
        s_err(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    /* O_NONBLOCK so that a FIFO given by mistake is refused, not waited on;
     * it changes nothing for a regular file. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        s_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        s_err(err, errlen, "%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    if (!(fp = fdopen(fd, "rb"))) {
        s_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    int64_t size = (int64_t)sb.st_size;
    unsigned char len8[8];
    if (size < 8 || fread(len8, 1, 8, fp) != 8) {
        s_err(err, errlen, "%s: too short to be a safetensors file (%lld bytes)", path,
              (long long)size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    if (hlen > (uint64_t)(size - 8)) {
        s_err(err, errlen, "%s: header length %llu is beyond the end of the %lld-byte file",
              path, (unsigned long long)hlen, (long long)size);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER) {
        s_err(err, errlen, "%s: header length %llu exceeds the %d-byte limit", path,
              (unsigned long long)hlen, ST_MAX_HEADER);
        goto fail;
    }
    header = malloc(hlen + 1);
    f->strings = malloc(hlen + 1);
    if (!header || !f->strings) {
        s_err(err, errlen, "%s: out of memory for the header", path);
        goto fail;
    }
    if (fread(header, 1, hlen, fp) != hlen) {
        s_err(err, errlen, "%s: read error or file truncated in the header", path);
        goto fail;
    }
    s_parser_t ps = {header, header, header + hlen, f->strings, 0, path, err, errlen};
    if (s_parse_header(&ps, f) < 0)
        goto fail;

    order = malloc(sizeof *order * (size_t)(f->n ? f->n : 1));
    f->by_name = malloc(sizeof *f->by_name * (size_t)(f->n ? f->n : 1));
    if (!order || !f->by_name) {
        s_err(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    for (int i = 0; i < f->n; i++)
        f->by_name[i] = &f->entries[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, s_cmp_name);
    for (int i = 1; i < f->n; i++) {
        if (!strcmp(f->by_name[i - 1]->t.name, f->by_name[i]->t.name)) {
            s_err(err, errlen, "%s: tensor '%s' appears twice", path, f->by_name[i]->t.name);
            goto fail;
        }
    }
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

const st_tensor_t *st_find(const st_file_t *f, const char *name) {
    s_entry_t key = {.t.name = name}, *pkey = &key;
    s_entry_t **hit = bsearch(&pkey, f->by_name, (size_t)f->n, sizeof *f->by_name, s_cmp_name);
    return hit ? &(*hit)->t : NULL;
}

int st_count(const st_file_t *f) {
    return f->n;
}

const st_tensor_t *st_get(const st_file_t *f, int i) {
    return i >= 0 && i < f->n ? &f->entries[i].t : NULL;
}

const char *st_metadata(const st_file_t *f, const char *key) {
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta[2 * i], key))
            return f->meta[2 * i + 1];
    return NULL;
}

void st_close(st_file_t **pf) {
    if (!pf || !*pf)
        return;
    st_file_t *f = *pf;
    free(f->entries);
    free(f->by_name);
    free(f->meta);
    free(f->strings);
    free(f->data);
    free(f);
    *pf = NULL;
}
