/* worker: trains a model (models.h) on MNIST, alone (--basic) or as one of the
 * workers of a paramserver (--server tcp://HOST:PORT). This file parses and
 * checks the command line; basic.c and distributed.c do the training. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "idx.h"
#include "models.h"
#include "wire.h"
#include "worker.h"

volatile sig_atomic_t worker_stop = 0;

static void s_on_signal(int sig)
{
    (void)sig;
    worker_stop = 1;
}

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: worker --basic [options]\n"
            "       worker --server tcp://HOST:PORT [options]\n"
            "\n"
            "Trains a model (SimpleConvNet unless --model) on MNIST: alone in this process\n"
            "(--basic, the original train_basic.py) or as one worker of a paramserver\n"
            "(--server), which then hands out the shard and the recipe.\n"
            "\n"
            "Modes:\n"
            "  --basic               train alone, with no server\n"
            "  --server ADDR         train against the paramserver at ADDR (tcp://HOST:PORT)\n"
            "Options:\n"
            "  --model NAME          the model to train (basic; default " MODELS_DEFAULT "; with\n"
            "                        --server the server's, which it must be; see Models below)\n"
            "  --dataset NAME        mnist or fashion-mnist (basic; default mnist; with --server\n"
            "                        the server's)\n"
            "  --data-dir DIR        the data set's IDX files, raw or .gz (default: mnist\n"
            "                        $MNIST_DIR or data, fashion-mnist $FASHION_MNIST_DIR or\n"
            "                        data/fashion-mnist)\n"
            "  --epochs N            epochs (basic; default 5; with --server the server decides\n"
            "                        epochs, batch size, lr, momentum, seed and the shard)\n"
            "  --batch-size N        minibatch size (basic; default 64)\n"
            "  --lr X                learning rate (basic; default 0.01)\n"
            "  --momentum X          SGD momentum (basic; default 0.9)\n"
            "  --seed N              seed for init and shuffling (basic; default 1)\n"
            "  --threads N           compute threads (default: %d in basic mode, the number of\n"
            "                        cores; 1 with --server, one worker per core)\n"
            "  --train-limit N       use only the first N training images (basic; default all)\n"
            "  --test-limit N        evaluate on the first N test images (default all 10,000)\n"
            "  --out DIR             where model_basic.safetensors goes (basic; default results)\n"
            "  --db PATH             metrics database (basic; default results/metrics.db)\n"
            "  --name NAME           worker name (default HOST:PID); a worker restarted with\n"
            "                        the same name rejoins its run where it stopped\n"
            "  --timeout S           distributed: give up when a reply takes longer, resending\n"
            "                        the request after 2, 4, 8... s (default 120)\n"
            "  --connect-timeout S   distributed: wait this long for the server and the other\n"
            "                        workers at start-up (default 300)\n"
            "  --curve-secret FILE   distributed, CurveZMQ: this worker's secret certificate\n"
            "                        (paramserver --keygen PATH writes PATH_secret)\n"
            "  --server-key FILE     distributed, CurveZMQ: the server's public certificate\n"
            "  --compress SCHEME     distributed: none (float32), fp16 (gradients and weights\n"
            "                        as float16), int8 (gradients as int8 per block of 256 with\n"
            "                        error feedback, weights as float16); default none\n"
            "  --push-every K        distributed, sync servers only, local SGD: take K local\n"
            "                        SGD steps (plain, at the server's lr) between pushes and\n"
            "                        push the sum of their K gradients: 1/K of the traffic\n"
            "                        (default 1)\n"
            "  -h, --help            this help\n"
            "\n"
            "The last line printed is a machine-readable summary, e.g.\n"
            "  summary: epochs=5 test_accuracy=99.16 train_seconds=53.7 images_per_second=5590\n"
            "\n"
            "Models (--model):\n",
            args_cpus());
    for (int i = 0; models_at(i); i++)
        fprintf(f, "  %-14s %s\n", models_at(i)->name, models_at(i)->summary);
}

/* Reads the flags into *o and *basic, checking each value and how they go
 * together. 0 to run; 1 after --help; 2 after printing what was wrong.
 * Longer than 80 lines because it is two tables, the flags and a switch of
 * one line or three per flag: split, a flag's parts would be further apart. */
static int s_parse_flags(int argc, char **argv, worker_opts_t *o, int *basic)
{
    enum {
        O_DATA = 256,
        O_EPOCHS,
        O_BATCH,
        O_LR,
        O_MOM,
        O_SEED,
        O_THREADS,
        O_TRAIN_LIMIT,
        O_TEST_LIMIT,
        O_OUT,
        O_DB,
        O_NAME,
        O_SERVER,
        O_BASIC,
        O_TIMEOUT,
        O_CONNECT_TIMEOUT,
        O_CURVE,
        O_SERVER_KEY,
        O_COMPRESS,
        O_PUSH_EVERY,
        O_DATASET, /* issue 14 */
        O_MODEL
    };
    static const struct option longopts[] = {
        {"basic", no_argument, 0, O_BASIC},
        {"server", required_argument, 0, O_SERVER},
        {"data-dir", required_argument, 0, O_DATA},
        {"epochs", required_argument, 0, O_EPOCHS},
        {"batch-size", required_argument, 0, O_BATCH},
        {"lr", required_argument, 0, O_LR},
        {"momentum", required_argument, 0, O_MOM},
        {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THREADS},
        {"train-limit", required_argument, 0, O_TRAIN_LIMIT},
        {"test-limit", required_argument, 0, O_TEST_LIMIT},
        {"out", required_argument, 0, O_OUT},
        {"db", required_argument, 0, O_DB},
        {"name", required_argument, 0, O_NAME},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"connect-timeout", required_argument, 0, O_CONNECT_TIMEOUT},
        {"curve-secret", required_argument, 0, O_CURVE},
        {"server-key", required_argument, 0, O_SERVER_KEY},
        {"compress", required_argument, 0, O_COMPRESS},
        {"push-every", required_argument, 0, O_PUSH_EVERY},
        {"dataset", required_argument, 0, O_DATASET},
        {"model", required_argument, 0, O_MODEL},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c, bad = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_BASIC: *basic = 1; break;
        case O_SERVER: o->server = optarg; break;
        case O_DATA: o->data_dir = optarg; break;
        case O_EPOCHS: bad |= args_int("--epochs", optarg, 1, 1000, &o->epochs); break;
        case O_BATCH: bad |= args_int("--batch-size", optarg, 1, 4096, &o->batch_size); break;
        case O_LR: bad |= args_double("--lr", optarg, 0.0, 100.0, &o->lr); break;
        case O_MOM: bad |= args_double("--momentum", optarg, 0.0, 0.999999, &o->momentum); break;
        case O_SEED: bad |= args_u64("--seed", optarg, &o->seed); break;
        case O_THREADS: bad |= args_int("--threads", optarg, 1, 256, &o->threads); break;
        case O_TRAIN_LIMIT:
            bad |= args_int("--train-limit", optarg, 1, 1 << 30, &o->train_limit);
            break;
        case O_TEST_LIMIT:
            bad |= args_int("--test-limit", optarg, 1, 1 << 30, &o->test_limit);
            break;
        case O_OUT: o->out_dir = optarg; break;
        case O_DB: o->db = optarg; break;
        case O_NAME: o->name = optarg; break;
        case O_TIMEOUT: bad |= args_double("--timeout", optarg, 0.1, 1e6, &o->timeout); break;
        case O_CURVE: o->curve_secret = optarg; break;
        case O_SERVER_KEY: o->server_key = optarg; break;
        case O_PUSH_EVERY: bad |= args_int("--push-every", optarg, 1, 1000, &o->push_every); break;
        case O_COMPRESS:
            if (strcmp(optarg, "none") == 0)
                o->compress = PS__COMPRESSION__COMPRESSION_NONE;
            else if (strcmp(optarg, "fp16") == 0)
                o->compress = PS__COMPRESSION__COMPRESSION_FP16;
            else if (strcmp(optarg, "int8") == 0)
                o->compress = PS__COMPRESSION__COMPRESSION_INT8;
            else {
                fprintf(stderr, "error: --compress '%s' is not one of none, fp16, int8\n", optarg);
                bad = 1;
            }
            break;
        case O_CONNECT_TIMEOUT:
            bad |= args_double("--connect-timeout", optarg, 0.1, 1e6, &o->connect_timeout);
            break;
        case O_DATASET:
            o->dataset = optarg;
            if (!idx_dataset_dir(optarg)) {
                fprintf(stderr, "error: --dataset '%s' is not one of %s\n", optarg, IDX_DATASETS);
                bad = 1;
            }
            break;
        case O_MODEL:
            o->model = models_find(optarg);
            if (!o->model) {
                char names[256];
                fprintf(stderr, "error: --model '%s' is not one of %s\n", optarg,
                        models_list(names, sizeof names));
                bad = 1;
            }
            break;
        case 'h': s_usage(stdout); return 1;
        default: bad = 1; break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
        bad = 1;
    }
    if (!bad && *basic == (o->server != NULL)) {
        fprintf(stderr, "error: give exactly one of --basic or --server ADDR\n");
        bad = 1;
    }
    if (!bad && o->server && o->dataset) {
        fprintf(stderr, "error: --dataset is for --basic; with --server the server's "
                        "--dataset decides\n");
        bad = 1;
    }
    if (!bad && (o->curve_secret != NULL) != (o->server_key != NULL)) {
        fprintf(stderr, "error: --curve-secret and --server-key go together\n");
        bad = 1;
    }
    if (bad)
        fprintf(stderr, "run 'worker --help' for usage\n");
    return bad ? 2 : 0;
}

int main(int argc, char **argv)
{
    worker_opts_t o = {.out_dir = "results",
                       .db = "results/metrics.db",
                       .epochs = 5,
                       .batch_size = 64,
                       .threads = 0,
                       .lr = 0.01,
                       .momentum = 0.9,
                       .seed = 1,
                       .timeout = 120,
                       .connect_timeout = 300,
                       .push_every = 1};
    int basic = 0;
    int rc = s_parse_flags(argc, argv, &o, &basic);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (basic && !o.dataset)
        o.dataset = "mnist";
    if (basic && !o.model)
        o.model = models_find(MODELS_DEFAULT);
    if (o.threads == 0)
        o.threads = basic ? args_cpus() : 1;
    if ((o.batch_size + o.threads - 1) / o.threads > 128) {
        fprintf(stderr,
                "error: --batch-size %d over --threads %d gives more than 128 images "
                "per thread; use more threads or a smaller batch\n",
                o.batch_size, o.threads);
        return 2;
    }

    wire_init();
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (basic)
        return basic_run(&o);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return distributed_run(&o);
}
