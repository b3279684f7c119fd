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
            s_save(dir, "seed-figures-mode", mode, s_figures_seed(mode)) != 0)
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
