/* checkpoint: writing and reading the checkpoint file (see checkpoint.h),
 * both driven by the field tables s_head_fields and s_slot_fields. */
#include "checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "clock.h"
#include "consistency.h"
#include "errmsg.h"
#include "membership.h"
#include "models.h"
#include "modelfile.h"
#include "safetensors.h"

#define S_KIND "paramserver-checkpoint"
#define S_BIG ((uint64_t)1 << 62) /* no counter of a real run gets near */

/* The run's counters and recipe, as stored. */
typedef struct {
    char mode[16], dataset[16], lr_scaling[8], model[32];
    uint64_t run_id, version, updates, stale_max, seed, range_lo, range_hi;
    double stale_sum, elapsed, worker_train_max, lr, momentum, warmup_epochs;
    int workers, staleness, epochs, batch_size, train_count, test_limit;
} s_head_t;

/* One worker's progress, as stored (slot_t's fields of the same names). */
typedef struct {
    char name[128], host[128], key[48];
    uint64_t steps;
    int done, evicted, incarnation, threads;
} s_slot_t;

typedef enum {
    F_CONST, /* a fixed text (.text): written as is, refused when different */
    F_TEXT,  /* a string of fewer than .size bytes */
    F_NAME,  /* the same, under the rules for worker names (membership.h) */
    F_U64,   /* uint64_t in [.min, .max] */
    F_INT,   /* int in [.min, .max] */
    F_REAL,  /* a finite double in [.rmin, .rmax] */
} s_type_t;

typedef struct {
    const char *key; /* metadata key (per slot: "slot.I." + key) */
    s_type_t type;
    size_t off, size; /* where the value is in its record (s_head_t or s_slot_t) */
    uint64_t min, max;
    double rmin, rmax;
    const char *flag; /* part of the recipe: a resume must give this flag the same value */
    const char *text; /* F_CONST: the value */
} s_field_t;

#define HEAD(f) offsetof(s_head_t, f), sizeof(((s_head_t *)0)->f)
#define SLOT(f) offsetof(s_slot_t, f), sizeof(((s_slot_t *)0)->f)

/* The metadata, in the order it is written and checksummed (changing the
 * order or a key makes older checkpoints fail their checksum). */
static const s_field_t s_head_fields[] = {
    {"format", F_CONST, .text = "pt"},
    {"kind", F_CONST, .text = S_KIND},
    {"run_id", F_U64, HEAD(run_id), .min = 1, .max = INT64_MAX},
    {"version", F_U64, HEAD(version), .max = S_BIG},
    {"updates", F_U64, HEAD(updates), .max = S_BIG}, /* and <= version */
    {"stale_sum", F_REAL, HEAD(stale_sum), .rmax = 1e300},
    {"stale_max", F_U64, HEAD(stale_max), .max = S_BIG}, /* and <= version */
    {"elapsed", F_REAL, HEAD(elapsed), .rmax = 1e9},
    {"worker_train_max", F_REAL, HEAD(worker_train_max), .rmax = 1e9},
    {"mode", F_TEXT, HEAD(mode), .flag = "--mode"},
    {"workers", F_INT, HEAD(workers), .min = 1, .max = 1024, .flag = "--workers"},
    {"staleness", F_INT, HEAD(staleness), .max = 1000000, .flag = "--staleness"},
    {"epochs", F_INT, HEAD(epochs), .min = 1, .max = 1000, .flag = "--epochs"},
    {"batch_size", F_INT, HEAD(batch_size), .min = 1, .max = 128, .flag = "--batch-size"},
    {"seed", F_U64, HEAD(seed), .max = UINT64_MAX, .flag = "--seed"},
    {"train_count", F_INT, HEAD(train_count), .min = 1, .max = 1 << 30, .flag = "--train-limit"},
    {"lr", F_REAL, HEAD(lr), .rmax = 100, .flag = "--lr"},
    {"momentum", F_REAL, HEAD(momentum), .rmax = 1, .flag = "--momentum"},
    {"test_limit", F_INT, HEAD(test_limit), .max = 1 << 30, .flag = "--test-limit"},
    {"dataset", F_TEXT, HEAD(dataset), .flag = "--dataset"},
    {"model", F_TEXT, HEAD(model), .flag = "--model"},
    {"lr_scaling", F_TEXT, HEAD(lr_scaling), .flag = "--lr-scaling"},
    {"warmup_epochs", F_REAL, HEAD(warmup_epochs), .rmax = 1000, .flag = "--warmup-epochs"},
    /* The values of the parameter vector this server owns (all, alone). */
    {"range_lo", F_U64, HEAD(range_lo), .max = UINT32_MAX, .flag = "(--shards, --shard) from"},
    {"range_hi", F_U64, HEAD(range_hi), .max = UINT32_MAX, .flag = "to"},
};
static const s_field_t s_slot_fields[] = {
    {"name", F_NAME, SLOT(name), .min = 0},
    {"host", F_NAME, SLOT(host), .min = 0},
    {"steps", F_U64, SLOT(steps), .max = S_BIG},
    {"done", F_INT, SLOT(done), .max = 1},
    {"evicted", F_INT, SLOT(evicted), .max = 1},
    {"incarnation", F_INT, SLOT(incarnation), .max = 1000000},
    {"threads", F_INT, SLOT(threads), .max = 1024},
    {"key", F_TEXT, SLOT(key), .min = 0},
};
#define S_NHEAD (int)(sizeof s_head_fields / sizeof s_head_fields[0])
#define S_NSLOT (int)(sizeof s_slot_fields / sizeof s_slot_fields[0])

/* The i-th metadata field of a checkpoint (the head's, then each slot's):
 * its table entry, and its key. */
static const s_field_t *s_field(int i, char *key, size_t keylen)
{
    if (i < S_NHEAD) {
        snprintf(key, keylen, "%s", s_head_fields[i].key);
        return &s_head_fields[i];
    }
    const s_field_t *fd = &s_slot_fields[(i - S_NHEAD) % S_NSLOT];
    snprintf(key, keylen, "slot.%d.%s", (i - S_NHEAD) / S_NSLOT, fd->key);
    return fd;
}

/* The record that holds the i-th field's value. */
static void *s_record(int i, s_head_t *head, s_slot_t *slots)
{
    return i < S_NHEAD ? (void *)head : (void *)&slots[(i - S_NHEAD) / S_NSLOT];
}

/* A field's value as it is written. */
static void s_format(const s_field_t *fd, const void *rec, char *out, size_t n)
{
    const char *p = (const char *)rec + fd->off;
    switch (fd->type) {
    case F_CONST: snprintf(out, n, "%s", fd->text); break;
    case F_TEXT:
    case F_NAME: snprintf(out, n, "%s", p); break;
    case F_U64: snprintf(out, n, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case F_INT: snprintf(out, n, "%d", *(const int *)p); break;
    case F_REAL: snprintf(out, n, "%.17g", *(const double *)p); break;
    }
}

/* Reads field fd (stored under key) from the file into its record, checked
 * against its type and range. 0, or -1 with a message in err. */
static int s_parse(const s_field_t *fd, const st_file_t *f, const char *key, void *rec, char *err,
                   size_t n)
{
    char *p = (char *)rec + fd->off;
    const char *v = st_metadata(f, key), *bad = NULL;
    uint64_t u;
    double x;
    char *end;
    switch (fd->type) {
    case F_CONST:
        if (v && strcmp(v, fd->text) == 0)
            return 0;
        errmsg_set(err, n, "metadata '%s' is %s%s%s, not '%s': not a paramserver checkpoint", key,
                   v ? "'" : "missing", v ? v : "", v ? "'" : "", fd->text);
        return -1;
    case F_TEXT:
    case F_NAME:
        bad = !v                      ? "is missing"
              : strlen(v) >= fd->size ? "is too long"
              : fd->type == F_NAME    ? member_name_problem(v, fd->size - 1)
                                      : NULL;
        if (bad) {
            errmsg_set(err, n, "metadata '%s' %s", key, bad);
            return -1;
        }
        memcpy(p, v, strlen(v) + 1);
        return 0;
    case F_U64:
    case F_INT:
        if (st_metadata_uint64(f, key, &u, err, n) != 0)
            return -1;
        if (u < fd->min || u > fd->max) {
            errmsg_set(err, n, "metadata '%s' is %llu; expected an integer in [%llu, %llu]", key,
                       (unsigned long long)u, (unsigned long long)fd->min,
                       (unsigned long long)fd->max);
            return -1;
        }
        if (fd->type == F_U64)
            *(uint64_t *)p = u;
        else
            *(int *)p = (int)u;
        return 0;
    case F_REAL:
        if (!v || !*v || (x = strtod(v, &end), *end != '\0') || !isfinite(x) || x < fd->rmin ||
            x > fd->rmax) {
            errmsg_set(err, n, "metadata '%s' is %s%s%s; expected a number in [%g, %g]", key,
                       v ? "'" : "missing", v ? v : "", v ? "'" : "", fd->rmin, fd->rmax);
            return -1;
        }
        *(double *)p = x;
        return 0;
    }
    return -1;
}

/* A checkpoint's metadata as NULL-terminated key, value pairs (for
 * st_write), with room for the checksum after its n fields. */
typedef struct {
    int n;
    char (*key)[48];
    char (*val)[160];
    const char **pairs;
} s_meta_t;

static int s_meta_new(s_meta_t *m, int workers)
{
    m->n = S_NHEAD + S_NSLOT * workers;
    m->key = calloc((size_t)m->n + 1, sizeof *m->key);
    m->val = calloc((size_t)m->n + 1, sizeof *m->val);
    m->pairs = calloc(2 * (size_t)m->n + 3, sizeof *m->pairs);
    return m->key && m->val && m->pairs ? 0 : -1;
}

static void s_meta_free(s_meta_t *m)
{
    free(m->key);
    free(m->val);
    free(m->pairs);
}

/* CRC-32 of every field's "key=value\n" (the checksum itself excepted),
 * then the weights' and the momentum's bytes. */
static unsigned long s_crc(const s_meta_t *m, const float *w, const float *v, size_t n)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    char line[256];
    for (int i = 0; i < m->n; i++) {
        int len = snprintf(line, sizeof line, "%s=%s\n", m->pairs[2 * i], m->pairs[2 * i + 1]);
        crc = crc32(crc, (const Bytef *)line,
                    (uInt)(len < (int)sizeof line ? len : (int)sizeof line - 1));
    }
    crc = crc32(crc, (const Bytef *)w, (uInt)(n * sizeof(float)));
    crc = crc32(crc, (const Bytef *)v, (uInt)(n * sizeof(float)));
    return (unsigned long)crc;
}

/* The server's run as stored. */
static void s_capture(const server_t *s, s_head_t *h)
{
    const server_opts_t *o = s->o;
    *h = (s_head_t){.run_id = (uint64_t)s->run,
                    .version = s->version,
                    .updates = (uint64_t)s->updates,
                    .stale_max = (uint64_t)s->stale_max,
                    .seed = o->seed,
                    .stale_sum = s->stale_sum,
                    .elapsed = srv_elapsed(s),
                    .worker_train_max = s->worker_train_max,
                    .lr = o->lr,
                    .momentum = o->momentum,
                    .workers = o->workers,
                    .staleness = o->staleness,
                    .epochs = o->epochs,
                    .batch_size = o->batch_size,
                    .train_count = s->train_count,
                    .test_limit = o->test_limit,
                    .warmup_epochs = o->warmup_epochs,
                    .range_lo = s->lo,
                    .range_hi = s->lo + s->n};
    snprintf(h->mode, sizeof h->mode, "%s", server_mode_name(o->mode));
    snprintf(h->dataset, sizeof h->dataset, "%s", o->dataset);
    snprintf(h->model, sizeof h->model, "%s", s->model->name);
    snprintf(h->lr_scaling, sizeof h->lr_scaling, "%s",
             o->lr_scaling == LR_SCALING_LINEAR ? "linear" : "none");
}

static void s_capture_slot(const slot_t *sl, s_slot_t *c)
{
    snprintf(c->name, sizeof c->name, "%s", sl->name);
    snprintf(c->host, sizeof c->host, "%s", sl->host);
    snprintf(c->key, sizeof c->key, "%s", sl->key);
    c->steps = cons_applied_steps(sl);
    c->done = sl->done;
    c->evicted = sl->evicted;
    c->incarnation = sl->incarnation;
    c->threads = sl->threads;
}

/* The weights and the momentum as safetensors tensors; names[] holds the
 * momentum's names. Returns how many. A shard of a server group stores its
 * range as two flat tensors, "weights" and "momentum". */
static int s_tensors(const server_t *s, st_tensor_t t[2 * MODELS_MAX_TENSORS],
                     char names[MODELS_MAX_TENSORS][64])
{
    const model_def_t *md = s->model;
    if (s->n != md->nparams) {
        t[0] = (st_tensor_t){
            .name = "weights", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)s->n}, .data = s->w};
        t[1] = (st_tensor_t){
            .name = "momentum", .dtype = ST_F32, .ndim = 1, .shape = {(int64_t)s->n}, .data = s->v};
        return 2;
    }
    for (int i = 0; i < md->ntensors; i++) {
        const model_tensor_t *mt = &md->tensors[i];
        snprintf(names[i], sizeof names[i], "momentum.%s", mt->name);
        t[i] = (st_tensor_t){
            .name = mt->name, .dtype = ST_F32, .ndim = mt->ndim, .data = s->w + mt->offset};
        t[md->ntensors + i] = (st_tensor_t){
            .name = names[i], .dtype = ST_F32, .ndim = mt->ndim, .data = s->v + mt->offset};
        for (int d = 0; d < mt->ndim; d++)
            t[i].shape[d] = t[md->ntensors + i].shape[d] = mt->shape[d];
    }
    return 2 * md->ntensors;
}

/* Reads a shard's flat tensor `name` of n floats into out. */
static int s_read_flat(const st_file_t *f, const char *name, float *out, size_t n, char *err,
                       size_t errlen)
{
    const st_tensor_t *t = st_find(f, name);
    if (!t || t->dtype != ST_F32 || t->ndim != 1 || t->shape[0] != (int64_t)n) {
        errmsg_set(err, errlen, "it has no float32 tensor '%s' of %zu values", name, n);
        return -1;
    }
    memcpy(out, t->data, n * sizeof(float));
    return 0;
}

/* Reads the weights and momentum of this server's range. */
static int s_read_tensors(server_t *s, const st_file_t *f, char *err, size_t n)
{
    const char *path = s->o->checkpoint;
    if (s->n != s->model->nparams)
        return s_read_flat(f, "weights", s->w, s->n, err, n) != 0 ||
                       s_read_flat(f, "momentum", s->v, s->n, err, n) != 0
                   ? -1
                   : 0;
    return modelfile_read(f, path, s->model, "", s->w, err, n) != 0 ||
                   modelfile_read(f, path, s->model, "momentum.", s->v, err, n) != 0
               ? -1
               : 0;
}

int ckpt_write(server_t *s)
{
    s_head_t h;
    s_meta_t m;
    s_slot_t *slots = calloc((size_t)s->o->workers, sizeof *slots);
    if (s_meta_new(&m, s->o->workers) != 0 || !slots) {
        srv_log(s, "warning: out of memory for a checkpoint");
        s_meta_free(&m);
        free(slots);
        return -1;
    }
    s_capture(s, &h);
    for (int i = 0; i < s->o->workers; i++)
        s_capture_slot(&s->slots[i], &slots[i]);
    for (int i = 0; i < m.n; i++) {
        const s_field_t *fd = s_field(i, m.key[i], sizeof m.key[i]);
        s_format(fd, s_record(i, &h, slots), m.val[i], sizeof m.val[i]);
        m.pairs[2 * i] = m.key[i];
        m.pairs[2 * i + 1] = m.val[i];
    }
    snprintf(m.key[m.n], sizeof m.key[m.n], "checksum");
    snprintf(m.val[m.n], sizeof m.val[m.n], "%08lx", s_crc(&m, s->w, s->v, s->n));
    m.pairs[2 * m.n] = m.key[m.n];
    m.pairs[2 * m.n + 1] = m.val[m.n];
    st_tensor_t t[2 * MODELS_MAX_TENSORS];
    char names[MODELS_MAX_TENSORS][64], err[512];
    int nt = s_tensors(s, t, names);
    if (s->o->shards > 1) {
        /* A group keeps the one before too (ckpt_rollback), as a second
         * name of the file: the checkpoint itself stays in place until
         * st_write replaces it whole, so a crash or a failed write leaves
         * one for --resume. */
        char prev[4200];
        snprintf(prev, sizeof prev, "%s.prev", s->o->checkpoint);
        if ((unlink(prev) != 0 && errno != ENOENT) ||
            (link(s->o->checkpoint, prev) != 0 && errno != ENOENT))
            srv_log(s, "warning: cannot keep the previous checkpoint as %s: %s", prev,
                    strerror(errno));
    }
    int rc = st_write(s->o->checkpoint, t, nt, m.pairs, err, sizeof err);
    if (rc != 0)
        srv_log(s, "warning: checkpoint failed: %s", err);
    /* Also after a failure: the next try waits for the next interval
     * instead of retrying at every update. */
    s->ckpt_version = s->version;
    s->ckpt_time = clock_now();
    s_meta_free(&m);
    free(slots);
    return rc;
}

void ckpt_maybe(server_t *s)
{
    if (s->o->checkpoint_every <= 0)
        return;
    if (s->o->shards > 1) {
        /* A group checkpoints at the same versions on every server (in sync
         * they apply the same rounds), so that a resumed group agrees. */
        if (s->version % (uint64_t)s->o->checkpoint_every == 0 && s->version != s->ckpt_version)
            ckpt_write(s);
        return;
    }
    if (s->version - s->ckpt_version >= (uint64_t)s->o->checkpoint_every ||
        clock_now() - s->ckpt_time >= s->o->checkpoint_seconds)
        ckpt_write(s);
}

/* Reads fields [from, to) of the table into h and slots. */
static int s_read_fields(const st_file_t *f, int from, int to, s_head_t *h, s_slot_t *slots,
                         char *err, size_t n)
{
    for (int i = from; i < to; i++) {
        char key[48];
        const s_field_t *fd = s_field(i, key, sizeof key);
        if (s_parse(fd, f, key, s_record(i, h, slots), err, n) != 0)
            return -1;
    }
    return 0;
}

/* What differs between the file's recipe and this server's flags, or 0. */
static int s_recipe_problem(const s_head_t *file, const s_head_t *mine, char *err, size_t n)
{
    if (strcmp(file->model, mine->model) != 0) { /* first: its tensors cannot even be read */
        errmsg_set(err, n,
                   "it holds model %s, and this server was started with --model %s: give "
                   "--model %s with --resume (or remove the checkpoint to start afresh)",
                   file->model, mine->model, file->model);
        return -1;
    }
    char flags[512] = "";
    int differ = 0;
    for (int i = 0; i < S_NHEAD; i++) {
        const s_field_t *fd = &s_head_fields[i];
        char a[160], b[160];
        if (!fd->flag)
            continue;
        s_format(fd, file, a, sizeof a);
        s_format(fd, mine, b, sizeof b);
        differ |= strcmp(a, b) != 0;
        if (fd->type == F_REAL) /* as a person writes it: 0.9, not 0.90000000000000002 */
            snprintf(a, sizeof a, "%.15g", *(const double *)((const char *)file + fd->off));
        size_t used = strlen(flags);
        snprintf(flags + used, sizeof flags - used, " %s %s", fd->flag, a);
    }
    if (differ)
        errmsg_set(err, n, "it is of a run with%s; give the same flags with --resume", flags);
    return differ ? -1 : 0;
}

/* The checksum the file states against what its contents sum to. */
static int s_checksum_problem(const st_file_t *f, const server_t *s, char *err, size_t n)
{
    s_meta_t m;
    if (s_meta_new(&m, s->o->workers) != 0) {
        s_meta_free(&m);
        errmsg_set(err, n, "out of memory");
        return -1;
    }
    for (int i = 0; i < m.n; i++) {
        s_field(i, m.key[i], sizeof m.key[i]);
        const char *v = st_metadata(f, m.key[i]);
        m.pairs[2 * i] = m.key[i];
        m.pairs[2 * i + 1] = v ? v : "";
    }
    char want[16];
    snprintf(want, sizeof want, "%08lx", s_crc(&m, s->w, s->v, s->n));
    s_meta_free(&m);
    const char *sum = st_metadata(f, "checksum");
    if (sum && strcmp(sum, want) == 0)
        return 0;
    errmsg_set(err, n,
               "its checksum is %s, but its contents sum to %s: the file is damaged (or "
               "written by another program); remove it to start afresh",
               sum ? sum : "missing", want);
    return -1;
}

/* Puts the checked run into the server. */
static void s_restore(server_t *s, const s_head_t *h, const s_slot_t *slots)
{
    s->run = (int64_t)h->run_id;
    s->version = s->ckpt_version = h->version;
    s->updates = (int64_t)h->updates;
    s->stale_sum = h->stale_sum;
    s->stale_max = (int64_t)h->stale_max;
    s->worker_train_max = h->worker_train_max;
    s->started = 1;
    s->registered = s->o->workers;
    s->t0 = clock_now() - h->elapsed;
    s->ckpt_time = clock_now();
    for (int i = 0; i < s->o->workers; i++) {
        const s_slot_t *c = &slots[i];
        slot_t *sl = &s->slots[i];
        snprintf(sl->name, sizeof sl->name, "%s", c->name);
        snprintf(sl->host, sizeof sl->host, "%s", c->host);
        snprintf(sl->key, sizeof sl->key, "%s", c->key);
        sl->steps = c->steps;
        sl->done = c->done;
        sl->evicted = c->evicted;
        sl->incarnation = c->incarnation;
        sl->threads = c->threads;
        member_restored(s, sl);
    }
}

/* Reads and checks the whole file into h, slots, s->w and s->v. */
static int s_read(server_t *s, const st_file_t *f, s_head_t *h, s_slot_t *slots, char *err,
                  size_t n)
{
    s_head_t mine;
    s_capture(s, &mine);
    if (s_read_fields(f, 0, S_NHEAD, h, slots, err, n) != 0)
        return -1;
    if (h->updates > h->version || h->stale_max > h->version) {
        errmsg_set(err, n,
                   "metadata 'updates' (%llu) or 'stale_max' (%llu) is over 'version' "
                   "(%llu)",
                   (unsigned long long)h->updates, (unsigned long long)h->stale_max,
                   (unsigned long long)h->version);
        return -1;
    }
    if (s_recipe_problem(h, &mine, err, n) != 0 || s_read_tensors(s, f, err, n) != 0 ||
        s_checksum_problem(f, s, err, n) != 0)
        return -1;
    if (!model_all_finite(s->w, s->n) || !model_all_finite(s->v, s->n)) {
        errmsg_set(err, n, "its weights or momentum are not finite");
        return -1;
    }
    return s_read_fields(f, S_NHEAD, S_NHEAD + S_NSLOT * s->o->workers, h, slots, err, n);
}

int ckpt_resume(server_t *s, char *err, size_t errlen)
{
    const char *path = s->o->checkpoint;
    char why[600];
    st_file_t *f = st_open(path, why, sizeof why);
    if (!f) {
        errmsg_set(err, errlen, "cannot resume: %s", why);
        return -1;
    }
    s_head_t h;
    s_slot_t *slots = calloc((size_t)s->o->workers, sizeof *slots);
    int rc = -1;
    if (!slots)
        snprintf(why, sizeof why, "out of memory");
    else if (s_read(s, f, &h, slots, why, sizeof why) == 0) {
        s_restore(s, &h, slots);
        char detail[160];
        snprintf(detail, sizeof detail, "from %s at version %llu; %d workers to rejoin", path,
                 (unsigned long long)s->version, s->active);
        if (metrics_event(s->db, s->run, srv_elapsed(s), -1, "resumed", detail) != 0) {
            snprintf(why, sizeof why, "%s", metrics_errmsg(s->db));
        } else {
            srv_log(s, "resumed run %lld %s", (long long)s->run, detail);
            if (s->active == 0)
                srv_log(s, "every worker had finished or left before the restart: finishing "
                           "the run");
            rc = 0;
        }
    }
    if (rc != 0)
        errmsg_set(err, errlen, "cannot resume from %s: %s", path, why);
    free(slots);
    st_close(&f);
    return rc;
}

/* Forgets what the consistency rules and the shards' tables held: a
 * rollback starts every worker's step afresh. */
static void s_clear_rounds(server_t *s)
{
    s->active = 0;
    cons_forget(s);
    for (int i = 0; i < s->o->workers; i++)
        s->slots[i].token = 0; /* revoked: the shards refuse the old one; it registers again */
}

int ckpt_rollback(server_t *s, uint64_t version, char *err, size_t errlen)
{
    char paths[2][4200], why[600] = "no checkpoint file";
    snprintf(paths[0], sizeof paths[0], "%s", s->o->checkpoint);
    snprintf(paths[1], sizeof paths[1], "%s.prev", s->o->checkpoint);
    s_slot_t *slots = calloc((size_t)s->o->workers, sizeof *slots);
    int rc = -1;
    for (int i = 0; i < 2 && rc != 0 && slots; i++) {
        st_file_t *f = st_open(paths[i], why, sizeof why);
        uint64_t v = 0;
        if (f && st_metadata_uint64(f, "version", &v, why, sizeof why) == 0 && v == version) {
            s_head_t h;
            if (s_read(s, f, &h, slots, why, sizeof why) == 0) {
                s_clear_rounds(s);
                s_restore(s, &h, slots);
                rc = 0;
            } else
                rc = -2; /* s->w may be half read: the caller must stop */
        }
        st_close(&f);
        if (rc == -2)
            break;
    }
    free(slots);
    if (rc != 0)
        errmsg_set(err, errlen,
                   "cannot return to version %llu: neither %s nor its .prev holds it intact "
                   "(%s); restart the whole group with --resume",
                   (unsigned long long)version, s->o->checkpoint, why);
    return rc;
}

void ckpt_remove(server_t *s)
{
    char prev[4200];
    snprintf(prev, sizeof prev, "%s.prev", s->o->checkpoint);
    unlink(prev); /* a group's; none alone */
    if (unlink(s->o->checkpoint) == 0)
        srv_log(s, "checkpoint %s removed: the run is complete", s->o->checkpoint);
}
