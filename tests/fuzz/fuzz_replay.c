/* fuzz_replay: runs fuzz_server's target on every file of the directories it
 * is given (the corpus and the crashers), without libFuzzer, so make check
 * replays them as a regression test; and writes the seed corpus:
 *   fuzz_replay DIR...          each file once; exit 0 if none crashed
 *   fuzz_replay --seeds DIR     write seed inputs (valid message sequences) */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps.pb-c.h"
#include "model.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    uint8_t buf[8192];
    size_t n;
} seed_t;

/* Appends one message: client, then the envelope, then an optional tensor. */
static void s_msg(seed_t *sd, int client, Ps__Envelope *env, int tensor)
{
    env->protocol = WIRE_PROTOCOL;
    uint8_t h[512];
    size_t len = ps__envelope__pack(env, h);
    sd->buf[sd->n++] = (uint8_t)client;
    sd->buf[sd->n++] = tensor ? 1 : 0; /* frames - 1 */
    sd->buf[sd->n++] = (uint8_t)(len & 0xff);
    sd->buf[sd->n++] = (uint8_t)(len >> 8);
    memcpy(sd->buf + sd->n, h, len);
    sd->n += len;
    if (tensor) {
        sd->buf[sd->n++] = tensor == 2 ? 0xFE : 0xFF;
        sd->buf[sd->n++] = 0xFF;
    }
}

/* Appends a push whose tensor frame is in `encoding` (PS__ENCODING__*) with
 * its first 4k bytes given: the harness's 0xFFF0 + encoding marker. */
static void s_push_encoded(seed_t *sd, int client, uint32_t id, uint64_t step, int encoding,
                           const void *prefix, uint8_t k)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = id;
    p.step = step;
    p.epoch = 1;
    p.loss = 0.5f;
    p.encoding = (Ps__Encoding)encoding;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = 10 + step;
    env.protocol = WIRE_PROTOCOL;
    uint8_t h[512];
    size_t len = ps__envelope__pack(&env, h);
    sd->buf[sd->n++] = (uint8_t)client;
    sd->buf[sd->n++] = 1; /* two frames */
    sd->buf[sd->n++] = (uint8_t)(len & 0xff);
    sd->buf[sd->n++] = (uint8_t)(len >> 8);
    memcpy(sd->buf + sd->n, h, len);
    sd->n += len;
    sd->buf[sd->n++] = (uint8_t)(0xF0 + encoding);
    sd->buf[sd->n++] = 0xFF;
    sd->buf[sd->n++] = k;
    memcpy(sd->buf + sd->n, prefix, 4 * (size_t)k);
    sd->n += 4 * (size_t)k;
}

static void s_register_c(seed_t *sd, int client, const char *name, int compress)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register r = PS__REGISTER__INIT;
    r.name = (char *)name;
    r.threads = 1;
    r.compress = (Ps__Compression)compress;
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &r;
    env.request_id = 1;
    s_msg(sd, client, &env, 0);
}

static void s_register(seed_t *sd, int client, const char *name)
{
    s_register_c(sd, client, name, 0);
}

static void s_push(seed_t *sd, int client, uint32_t id, uint64_t step, int nan)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = id;
    p.step = step;
    p.epoch = 1;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = 10 + step;
    s_msg(sd, client, &env, nan ? 2 : 1);
}

static int s_save(const char *dir, const char *prefix, int mode, const seed_t *sd)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s%d", dir, prefix, mode);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(sd->buf, 1, sd->n, f) != sd->n) {
        perror(path);
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    printf("wrote %s (%zu bytes)\n", path, sd->n);
    return 0;
}

/* An int8 worker and an fp16 one: compressed pushes, one int8 block whose
 * scale times its values overflows (issue 9, D1), an encoding that was not
 * granted, then a worker that leaves. */
static const seed_t *s_compressed_seed(int mode)
{
    static seed_t sd;
    sd.n = 0;
    sd.buf[sd.n++] = (uint8_t)mode;
    s_register_c(&sd, 0, "i8", 2);
    s_register_c(&sd, 1, "f16", 1);
    uint8_t block[4 + 256];
    float scale = 1e-3f;
    memcpy(block, &scale, 4);
    memset(block + 4, 100, 256);
    uint16_t half[64];
    for (int i = 0; i < 64; i++)
        half[i] = 0x1400; /* 2^-10 */
    s_push_encoded(&sd, 0, 0, 1, PS__ENCODING__ENCODING_I8, block, 65);
    s_push_encoded(&sd, 1, 1, 1, PS__ENCODING__ENCODING_F16, half, 32);
    scale = 3e38f;
    memcpy(block, &scale, 4);
    memset(block + 4, 127, 256);
    s_push_encoded(&sd, 0, 0, 2, PS__ENCODING__ENCODING_I8, block, 65);
    s_push_encoded(&sd, 1, 1, 2, PS__ENCODING__ENCODING_I8, block, 1);
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Done done = PS__DONE__INIT;
    done.worker_id = 1;
    done.leaving = 1;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    s_msg(&sd, 1, &env, 0);
    return &sd;
}

/* Figures out of range and names that are not printable UTF-8. */
static const seed_t *s_figures_seed(int mode)
{
    static seed_t sd;
    sd.n = 0;
    sd.buf[sd.n++] = (uint8_t)mode;
    s_register(&sd, 0, "bad\xff\xfename");
    s_register(&sd, 0, "line\nbreak");
    s_register(&sd, 0, "a");
    s_register(&sd, 1, "b");
    Ps__EpochReport er = PS__EPOCH_REPORT__INIT;
    er.epoch = 1;
    er.train_loss = 1e308;
    er.test_accuracy = 500;
    er.epoch_seconds = -1;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_EPOCH;
    env.epoch = &er;
    s_msg(&sd, 0, &env, 0);
    er.train_loss = 0.5;
    er.test_accuracy = 50;
    er.epoch_seconds = 1;
    s_msg(&sd, 0, &env, 0);
    Ps__Done done = PS__DONE__INIT;
    done.train_seconds = -5;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    s_msg(&sd, 0, &env, 0);
    done.train_seconds = 5;
    done.test_accuracy = 50;
    s_msg(&sd, 0, &env, 0);
    return &sd;
}

/* Appends the tensor code of a frame of `count` values in `encoding`
 * (PS__ENCODING__*), at an odd address when odd, without a prefix: the
 * harness's 0xFFF3..0xFFF8. */
static void s_counted(seed_t *sd, int encoding, int odd, uint32_t count)
{
    sd->buf[sd->n++] = (uint8_t)(0xF3 + encoding + 3 * odd);
    sd->buf[sd->n++] = 0xFF;
    for (int b = 0; b < 3; b++)
        sd->buf[sd->n++] = (uint8_t)(count >> (8 * b));
    sd->buf[sd->n++] = 0; /* no prefix */
}

/* Appends env with a counted tensor frame (see s_counted). */
static void s_msg_counted(seed_t *sd, int client, Ps__Envelope *env, int encoding, int odd,
                          uint32_t count)
{
    size_t at = sd->n;
    s_msg(sd, client, env, 0);
    sd->buf[at + 1] = 1; /* two frames */
    s_counted(sd, encoding, odd, count);
}

/* One part of a step's gradient: values [offset, offset + count) of the
 * flat vector, part `part` of `parts` (Push.count = 0 says: all of it). */
typedef struct {
    uint32_t id;
    uint64_t step;
    int encoding;
    uint32_t offset, count, part, parts;
} s_part_t;

/* Appends a push of part pp from client, its tensor frame of frame_count
 * values (pp->count, or another to make it refused). */
static void s_push_part(seed_t *sd, int client, const s_part_t *pp, int odd, uint32_t frame_count)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Push p = PS__PUSH__INIT;
    p.worker_id = pp->id;
    p.step = pp->step;
    p.epoch = 1;
    p.loss = 0.5f;
    p.encoding = (Ps__Encoding)pp->encoding;
    p.token = 0x0123456789abcdefULL; /* the head does not check it; a shard would */
    p.offset = pp->offset;
    p.count = pp->count;
    p.part = pp->part;
    p.parts = pp->parts;
    env.body_case = PS__ENVELOPE__BODY_PUSH;
    env.push = &p;
    env.request_id = 100 * pp->step + pp->part;
    s_msg_counted(sd, client, &env, pp->encoding, odd, frame_count);
}

/* One server alone, pushes in parts: an int8 worker in 2 parts (partial
 * last int8 blocks) and an fp16 one in 3, some frames at an odd address;
 * then parts out of order, a frame shorter than its count, a count over
 * the whole vector, a part that does not tile the range, a retry. */
static const seed_t *s_parts_seed(int mode)
{
    static seed_t sd;
    const int I8 = PS__ENCODING__ENCODING_I8, F16 = PS__ENCODING__ENCODING_F16;
    const uint32_t N = MODEL_NPARAMS;
    sd.n = 0;
    sd.buf[sd.n++] = (uint8_t)mode;
    s_register_c(&sd, 0, "i8", 2);
    s_register_c(&sd, 1, "f16", 1);
    s_push_part(&sd, 0, &(s_part_t){0, 1, I8, 100000, N - 100000, 0, 2}, 0, N - 100000);
    s_push_part(&sd, 0, &(s_part_t){0, 1, I8, 0, 100000, 1, 2}, 1, 100000);
    s_push_part(&sd, 1, &(s_part_t){1, 1, F16, 200000, N - 200000, 0, 3}, 0, N - 200000);
    s_push_part(&sd, 1, &(s_part_t){1, 1, F16, 1000, 199000, 1, 3}, 1, 199000);
    s_push_part(&sd, 1, &(s_part_t){1, 1, F16, 0, 1000, 2, 3}, 0, 1000);
    s_push_part(&sd, 0, &(s_part_t){0, 2, I8, 0, 1000, 1, 2}, 0, 1000); /* out of order */
    s_push_part(&sd, 0, &(s_part_t){0, 2, I8, 5000, N - 5000, 0, 2}, 0, N - 5001); /* short */
    s_push_part(&sd, 0, &(s_part_t){0, 2, I8, 0, N + 1, 0, 1}, 0, N);       /* over the vector */
    s_push_part(&sd, 1, &(s_part_t){1, 2, F16, 7, N - 8, 0, 2}, 1, N - 8);  /* not its end */
    s_push_part(&sd, 1, &(s_part_t){1, 2, F16, 0, 0, 0, 65}, 0, N);         /* too many parts */
    s_push_part(&sd, 0, &(s_part_t){0, 1, I8, 0, 100000, 1, 2}, 0, 100000); /* a retry */
    s_push_part(&sd, 0, &(s_part_t){0, 2, I8, 0, 0, 0, 0}, 0, N);           /* whole */
    return &sd;
}

/* Appends a ShardJoin of shard from client. */
static void s_shard_join(seed_t *sd, int client, uint32_t shard, const char *endpoint, int resumed,
                         uint64_t version)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__ShardJoin j = PS__SHARD_JOIN__INIT;
    j.shard = shard;
    j.endpoint = (char *)endpoint;
    j.public_key = "";
    j.resumed = resumed;
    j.version = version;
    env.body_case = PS__ENVELOPE__BODY_SHARD_JOIN;
    env.shard_join = &j;
    env.request_id = 7;
    s_msg(sd, client, &env, 0);
}

/* A head of 2 (first byte's bit 7) and a client that plays shard 1: it
 * joins for the recipe, then ready; strangers join as shard 2, as a second
 * shard 1, with a bad endpoint; the workers push their range [0, N/2) in
 * parts; the shard pings (in step, out of step, with figures not finite,
 * from a stranger) and sends final weights before the run is over, without
 * its tensor, of the wrong range; then it says it resumed at an older
 * version. */
static const seed_t *s_shards_seed(int mode)
{
    static seed_t sd;
    const int F32 = PS__ENCODING__ENCODING_F32;
    const uint32_t N = MODEL_NPARAMS, H = N / 2; /* the head's range: [0, H) */
    sd.n = 0;
    sd.buf[sd.n++] = (uint8_t)(0x80 | mode);
    s_shard_join(&sd, 1, 1, "", 0, 0);
    s_register(&sd, 0, "a");
    s_shard_join(&sd, 1, 1, "tcp://shard-1:5556", 0, 0);
    s_shard_join(&sd, 0, 2, "tcp://shard-2:5556", 0, 0);
    s_shard_join(&sd, 0, 1, "tcp://again:5556", 0, 0);
    s_shard_join(&sd, 1, 1, "tcp://bad\nendpoint", 0, 0);
    s_register(&sd, 1, "b");
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__ShardPing ping = PS__SHARD_PING__INIT;
    ping.shard = 1;
    ping.seq = 0;
    ping.version = 0;
    ping.updates = 3;
    ping.bytes_in = 1000;
    ping.bytes_out = 2000;
    ping.apply_seconds = 0.25;
    ping.duplicates = 1;
    env.body_case = PS__ENVELOPE__BODY_SHARD_PING;
    env.shard_ping = &ping;
    s_msg(&sd, 1, &env, 0);
    s_msg(&sd, 0, &env, 0); /* a stranger */
    s_push_part(&sd, 0, &(s_part_t){0, 1, F32, 60000, H - 60000, 0, 2}, 0, H - 60000);
    s_push_part(&sd, 0, &(s_part_t){0, 1, F32, 0, 60000, 1, 2}, 1, 60000);
    s_push_part(&sd, 1, &(s_part_t){1, 1, F32, 0, H, 0, 1}, 1, H);
    s_push_part(&sd, 1, &(s_part_t){1, 2, F32, 0, 0, 0, 0}, 0, N); /* the whole vector */
    ping.apply_seconds = __builtin_nan("");
    s_msg(&sd, 1, &env, 0);
    ping.apply_seconds = 0.5;
    ping.seq = 3;
    s_msg(&sd, 1, &env, 0);
    Ps__ShardFinal fin = PS__SHARD_FINAL__INIT;
    fin.shard = 1;
    fin.version = 1;
    fin.offset = H;
    fin.count = N - H;
    fin.stats = &ping;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_SHARD_FINAL;
    env.shard_final = &fin;
    s_msg_counted(&sd, 1, &env, F32, 0, N - H);
    s_msg(&sd, 1, &env, 0); /* without its tensor */
    fin.offset = 0;
    s_msg_counted(&sd, 1, &env, F32, 1, N - H);
    s_shard_join(&sd, 1, 1, "tcp://shard-1:5556", 1, 0);
    Ps__Done done = PS__DONE__INIT;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    done.worker_id = 0;
    s_msg(&sd, 0, &env, 0);
    done.worker_id = 1;
    s_msg(&sd, 1, &env, 0);
    return &sd;
}

static int s_write_seeds(const char *dir)
{
    for (int mode = 0; mode < 3; mode++) {
        seed_t sd = {.n = 0};
        sd.buf[sd.n++] = (uint8_t)mode;
        s_register(&sd, 0, "a");
        s_register(&sd, 1, "b");
        Ps__Envelope env = PS__ENVELOPE__INIT;
        Ps__Pull pull = PS__PULL__INIT;
        env.body_case = PS__ENVELOPE__BODY_PULL;
        env.pull = &pull;
        s_msg(&sd, 0, &env, 0);
        for (uint64_t step = 1; step <= 3; step++) {
            s_push(&sd, 0, 0, step, 0);
            s_push(&sd, 1, 1, step, step == 3);
        }
        s_push(&sd, 0, 0, 2, 0); /* a duplicate */
        Ps__EpochReport er = PS__EPOCH_REPORT__INIT;
        er.epoch = 1;
        env = (Ps__Envelope)PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_EPOCH;
        env.epoch = &er;
        s_msg(&sd, 0, &env, 0);
        s_register(&sd, 1, "b"); /* a rejoin */
        Ps__Done done = PS__DONE__INIT;
        env = (Ps__Envelope)PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_DONE;
        env.done = &done;
        s_msg(&sd, 0, &env, 0);
        if (s_save(dir, "seed-mode", mode, &sd) != 0)
            return 1;
    }
    for (int mode = 0; mode < 3; mode++)
        if (s_save(dir, "seed-compressed-mode", mode, s_compressed_seed(mode)) != 0 ||
            s_save(dir, "seed-figures-mode", mode, s_figures_seed(mode)) != 0 ||
            s_save(dir, "seed-parts-mode", mode, s_parts_seed(mode)) != 0 ||
            s_save(dir, "seed-shards-mode", mode, s_shards_seed(mode)) != 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--seeds") == 0)
        return s_write_seeds(argv[2]);
    int files = 0;
    for (int a = 1; a < argc; a++) {
        DIR *d = opendir(argv[a]);
        if (!d) {
            perror(argv[a]);
            return 1;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
            FILE *f = fopen(path, "rb");
            if (!f)
                continue;
            static uint8_t buf[1 << 20];
            size_t n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, n);
            files++;
        }
        closedir(d);
    }
    fprintf(stderr, "replayed %d inputs without a crash\n", files);
    return 0;
}
