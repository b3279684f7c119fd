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

static void s_register(seed_t *sd, int client, const char *name)
{
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register r = PS__REGISTER__INIT;
    r.name = (char *)name;
    r.threads = 1;
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &r;
    env.request_id = 1;
    s_msg(sd, client, &env, 0);
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
        char path[512];
        snprintf(path, sizeof path, "%s/seed-mode%d", dir, mode);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(sd.buf, 1, sd.n, f) != sd.n) {
            perror(path);
            return 1;
        }
        fclose(f);
        printf("wrote %s (%zu bytes)\n", path, sd.n);
    }
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
