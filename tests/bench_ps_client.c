/* bench_ps_client: the server microbenchmark's load. Starts CLIENTS threads,
 * each with its own ZeroMQ context and DEALER socket, registered with the
 * paramserver at ENDPOINT as a worker; each pulls once, then pushes a
 * 900 KB gradient (applied by the server with momentum) and receives the
 * weights back as fast as it can for SECONDS, then says Done. Prints the
 * total round trips per second and the median round-trip latency:
 *   bench_ps_client tcp://127.0.0.1:5555 4 5
 *   -> "clients=4 round_trips=9123 seconds=5.00 round_trips_per_second=1824.6 median_ms=2.1" */
#include <pthread.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "clock.h"
#include "model.h"
#include "wire.h"

typedef struct {
    const char *endpoint;
    int k;
    double seconds;
    long round_trips;
    double *lat;
    long lat_cap;
    int failed;
} client_t;

static int s_call(void *sock, Ps__Envelope *env, const float *t, Ps__Envelope__BodyCase want,
                  wire_msg_t *reply)
{
    char err[256];
    zmq_msg_t frame; /* the whole vector (a header count of 0) */
    if (t && wire_tensor_encode_n(&frame, t, MODEL_NPARAMS, PS__ENCODING__ENCODING_F32, NULL) != 0)
        return -1;
    if (wire_send_msg(sock, NULL, env, t ? &frame : NULL, 0) < 0)
        return -1;
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 60000) <= 0)
        return -1;
    if (wire_recv(sock, NULL, reply, MODEL_NPARAMS, err, sizeof err) != 0)
        return -1;
    if (reply->env->body_case != want) {
        fprintf(stderr, "client: got %s\n", wire_kind_name(reply->env->body_case));
        wire_msg_close(reply);
        return -1;
    }
    return 0;
}

static void *s_client(void *arg)
{
    client_t *c = arg;
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(sock, c->endpoint);
    float *grad = calloc(MODEL_NPARAMS, sizeof(float));
    for (size_t i = 0; i < MODEL_NPARAMS; i++)
        grad[i] = 1e-6f * (float)(i % 13);
    char name[32];
    snprintf(name, sizeof name, "bench-%d-%d", (int)getpid(), c->k);
    wire_msg_t r;
    Ps__Envelope env = PS__ENVELOPE__INIT;
    Ps__Register reg = PS__REGISTER__INIT;
    reg.name = name;
    reg.host = "bench";
    reg.threads = 1;
    env.body_case = PS__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    if (s_call(sock, &env, NULL, PS__ENVELOPE__BODY_WELCOME, &r) != 0)
        goto fail;
    uint32_t id = r.env->welcome->worker_id;
    wire_msg_close(&r);
    uint64_t version = 0, step = 0;
    double end = clock_now() + c->seconds;
    while (clock_now() < end) {
        Ps__Push push = PS__PUSH__INIT;
        push.worker_id = id;
        push.step = ++step;
        push.version = version;
        push.epoch = 1;
        push.loss = 1.0f;
        env = (Ps__Envelope)PS__ENVELOPE__INIT;
        env.body_case = PS__ENVELOPE__BODY_PUSH;
        env.push = &push;
        double t0 = clock_now();
        if (s_call(sock, &env, grad, PS__ENVELOPE__BODY_WEIGHTS, &r) != 0)
            goto fail;
        version = r.env->weights->version;
        wire_msg_close(&r);
        if (c->round_trips < c->lat_cap)
            c->lat[c->round_trips] = clock_now() - t0;
        c->round_trips++;
    }
    Ps__Done done = PS__DONE__INIT;
    done.worker_id = id;
    env = (Ps__Envelope)PS__ENVELOPE__INIT;
    env.body_case = PS__ENVELOPE__BODY_DONE;
    env.done = &done;
    if (s_call(sock, &env, NULL, PS__ENVELOPE__BODY_ACK, &r) != 0)
        goto fail;
    wire_msg_close(&r);
    goto out;
fail:
    c->failed = 1;
out:
    free(grad);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return NULL;
}

static int s_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int clients;
    double seconds;
    if (argc != 4 || args_int("CLIENTS", argv[2], 1, 64, &clients) != 0 ||
        args_double("SECONDS", argv[3], 0.1, 3600, &seconds) != 0) {
        fprintf(stderr, "usage: bench_ps_client ENDPOINT CLIENTS SECONDS\n");
        return 2;
    }
    wire_init();
    client_t *c = calloc((size_t)clients, sizeof *c);
    pthread_t *t = calloc((size_t)clients, sizeof *t);
    for (int k = 0; k < clients; k++) {
        c[k] = (client_t){.endpoint = argv[1], .k = k, .seconds = seconds, .lat_cap = 1000000};
        c[k].lat = malloc((size_t)c[k].lat_cap * sizeof(double));
        pthread_create(&t[k], NULL, s_client, &c[k]);
    }
    long total = 0, nlat = 0;
    int failed = 0;
    for (int k = 0; k < clients; k++) {
        pthread_join(t[k], NULL);
        total += c[k].round_trips;
        failed |= c[k].failed;
    }
    double *all = malloc((size_t)(total ? total : 1) * sizeof(double));
    for (int k = 0; k < clients; k++)
        for (long i = 0; i < c[k].round_trips && i < c[k].lat_cap; i++)
            all[nlat++] = c[k].lat[i];
    qsort(all, (size_t)nlat, sizeof *all, s_cmp);
    printf("clients=%d round_trips=%ld seconds=%.2f round_trips_per_second=%.1f median_ms=%.2f\n",
           clients, total, seconds, total / seconds, nlat ? 1e3 * all[nlat / 2] : 0.0);
    for (int k = 0; k < clients; k++)
        free(c[k].lat);
    free(all);
    free(c);
    free(t);
    return failed;
}
