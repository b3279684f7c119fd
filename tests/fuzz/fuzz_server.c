/* fuzz_server: a libFuzzer target that drives the paramserver's message
 * handler with arbitrary messages from two clients over inproc://.
 *
 * Input: a sequence of messages, each
 *   byte  client (bit 0: which of the two clients sends it)
 *   byte  frame count (1..3)
 *   then per frame a 2-byte little-endian length L and L bytes; L = 0xFFFF
 *   stands for a whole tensor frame of finite floats, 0xFFFE for one with a
 *   NaN, so that pushes can reach the consistency modes.
 * The first byte of the input picks the mode (sync, async, ssp). After each
 * message the server handles what arrived and the clients' replies are
 * dropped. A fresh server per input, so every crash reproduces.
 *
 * Built two ways: with clang -fsanitize=fuzzer (make fuzz) and with a plain
 * main() that replays the corpus and crashers (fuzz_replay.c, in make check). */
#include <czmq.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "server.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static float *s_tensor(int nan)
{
    static float t[2][MODEL_NPARAMS];
    static int ready = 0;
    if (!ready) {
        for (int i = 0; i < MODEL_NPARAMS; i++)
            t[0][i] = t[1][i] = 1e-4f * (float)(i % 17);
        t[1][4242] = __builtin_nanf("");
        ready = 1;
    }
    return t[nan];
}

static void s_drain(void *sock)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) >= 0)
        ;
    zmq_msg_close(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int once = 0;
    static char dir[64];
    if (!once) {
        /* The server logs every refusal: useful in a run, noise here. */
        if (!freopen("/dev/null", "w", stdout))
            abort();
        wire_init();
        zsys_handler_set(NULL);
        /* In memory when /dev/shm is there: the database is made for every input. */
        snprintf(dir, sizeof dir, "%s/fuzz_server.%d",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
        once = 1;
    }
    if (size < 1)
        return 0;
    /* A new endpoint each time: a closed socket's inproc name is released
     * asynchronously. */
    static unsigned serial = 0;
    char db[96], ep[64];
    snprintf(db, sizeof db, "%s/m.db", dir);
    snprintf(ep, sizeof ep, "inproc://fuzz-%u", serial++);
    server_opts_t o = {.bind = ep, .data_dir = NULL, .db = db, .out_dir = dir,
                       .checkpoint = "/dev/null", .mode = (server_mode_t)(data[0] % 3),
                       .workers = 2, .staleness = 1, .epochs = 1, .batch_size = 64,
                       .train_limit = 256, .threads = 1, .lr = 0.01, .momentum = 0.9, .seed = 1,
                       .register_timeout = 1e9, .worker_timeout = 1e9, .checkpoint_every = 0};
    server_t *s = server_new(&o);
    if (!s)
        abort(); /* the harness itself is broken */
    void *ctx = zsys_init(), *client[2];
    for (int k = 0; k < 2; k++) {
        client[k] = zmq_socket(ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(client[k], ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(client[k], ep);
    }
    size_t p = 1;
    while (p + 2 <= size) {
        void *c = client[data[p] & 1];
        int frames = 1 + data[p + 1] % 3;
        p += 2;
        for (int f = 0; f < frames; f++) {
            int more = f + 1 < frames ? ZMQ_SNDMORE : 0;
            if (p + 2 > size) {
                zmq_send(c, "", 0, more);
                continue;
            }
            size_t len = data[p] | (size_t)data[p + 1] << 8;
            p += 2;
            if (len >= 0xFFFE)
                zmq_send(c, s_tensor(len == 0xFFFE), MODEL_NPARAMS * sizeof(float), more);
            else {
                if (len > size - p)
                    len = size - p;
                zmq_send(c, data + p, len, more);
                p += len;
            }
        }
        for (int tries = 0; tries < 100 && server_handle_ready(s) == 0; tries++)
            ;
        s_drain(client[0]);
        s_drain(client[1]);
    }
    zmq_close(client[0]);
    zmq_close(client[1]);
    server_destroy(&s);
    return 0;
}
