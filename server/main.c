/* paramserver: the parameter-server daemon. This file parses and checks the
 * command line; server.c runs the training run. */
#include <czmq.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "fs.h"
#include "idx.h"
#include "models.h"
#include "server.h"
#include "wire.h"

static void s_on_signal(int sig)
{
    (void)sig;
    server_stop = 1;
}

static void s_usage(FILE *f)
{
    char names[256];
    fprintf(f,
            "usage: paramserver [options]\n"
            "\n"
            "Holds the master weights of a model (--model), waits for --workers workers to\n"
            "register,\n"
            "hands each its shard of MNIST and the recipe, applies their gradients with SGD +\n"
            "momentum, logs every worker's figures into SQLite, and when all have finished\n"
            "evaluates and saves the model, then exits 0.\n"
            "\n"
            "  --bind ENDPOINT         ZeroMQ endpoint to listen on (default tcp://*:5555)\n"
            "  --workers N             workers to wait for (default 2)\n"
            "  --mode MODE             sync (BSP), async (ASP), ssp, or independent (each worker\n"
            "                          trains its own model, nothing averaged: the original\n"
            "                          train_distributed.py, as a baseline) (default sync)\n"
            "  --staleness S           ssp: how many steps a worker may run ahead (default 2)\n"
            "  --epochs N              epochs each worker trains (default 5)\n"
            "  --batch-size N          minibatch per worker and step, 1..128 (default 64)\n"
            "  --lr X                  learning rate (default 0.01)\n"
            "  --momentum X            SGD momentum (default 0.9)\n"
            "  --seed N                init, shard split and shuffling (default 1)\n"
            "  --train-limit N         split only the first N training images (default all)\n"
            "  --test-limit N          test images per evaluation (default all 10,000)\n"
            "  --model NAME            the model to train: %s (default %s;\n"
            "                          a shard takes the head's)\n"
            "  --dataset NAME          mnist or fashion-mnist (default mnist)\n"
            "  --data-dir DIR          the data set's IDX files, for the split and the final\n"
            "                          evaluation (default: mnist $MNIST_DIR or data,\n"
            "                          fashion-mnist $FASHION_MNIST_DIR or data/fashion-mnist)\n"
            "  --lr-scaling RULE       none, or linear: sync uses lr x workers after a warm-up\n"
            "                          (Goyal et al. 2017) (default none)\n"
            "  --warmup-epochs E       linear: ramp the lr from --lr to lr x workers over the\n"
            "                          first E epochs, per update (default 1)\n"
            "  --db PATH               metrics database (default results/metrics.db)\n"
            "  --out DIR               where model_distributed.safetensors goes (default results)\n"
            "  --threads N             threads for the final evaluation (default: cores)\n"
            "  --register-timeout S    give up when not all workers registered (default 300)\n"
            "  --worker-timeout S      evict a worker silent this long (default 60)\n"
            "  --checkpoint PATH       checkpoint file (default OUT/checkpoint.safetensors;\n"
            "                          removed when the run completes)\n"
            "  --checkpoint-every N    checkpoint every N updates, 0 for never (default 100)\n"
            "  --checkpoint-seconds S  ...or every S seconds, whichever comes first (default 30)\n"
            "  --resume                continue the run saved in the checkpoint (same flags);\n"
            "                          its workers rejoin by name\n"
            "  --curve-secret FILE     CurveZMQ: encrypt, with this secret certificate\n"
            "  --allowed-keys DIR      CurveZMQ: admit only workers whose public certificate\n"
            "                          is in DIR (both flags go together)\n"
            "  --keygen PATH           write a new CurveZMQ key pair: PATH (public certificate,\n"
            "                          to share) and PATH_secret (keep private), then exit\n"
            "  --force                 with --keygen: replace an existing key pair\n"
            "\n"
            "A server group splits the parameters over several processes (README, \"Server\n"
            "shards\"): the head is started with --shards S and the flags above; each other\n"
            "shard with --shard I --head and the flags below (it takes the recipe from the head).\n"
            "  --shards S              the head of a group of S servers, 1..64 (default 1)\n"
            "  --shard I               run shard I (1..S-1) of the group whose head is --head\n"
            "  --head ENDPOINT         the head's endpoint, tcp://HOST:PORT\n"
            "  --advertise ENDPOINT    where workers reach this shard (default: --bind, with a\n"
            "                          wildcard host replaced by this machine's name);\n"
            "                          a shard's --bind defaults to tcp://*:5555+I\n"
            "  --server-key FILE       a shard with CurveZMQ: the head's public certificate\n"
            "  --shard-keys DIR        the head with CurveZMQ: only these public certificates\n"
            "                          may join as shards (they must be in --allowed-keys too)\n"
            "\n"
            "Hot standby (README, \"Failure modes\"): a standby copies a shard's state and\n"
            "takes over when it dies; a shard started with --shard I while shard I's primary\n"
            "is alive becomes its standby too. Exit status 3: this server was fenced (its\n"
            "standby took over); start it again to make it the new primary's standby.\n"
            "  --replica-of ENDPOINT   run as the hot standby of the shard at ENDPOINT (with\n"
            "                          --bind, --advertise; it learns the rest from it)\n"
            "  --failover-timeout S    the head: silence after which a standby takes over and\n"
            "                          workers go to it, 0.1..3600 (default 2)\n"
            "  --replicas N            the head: 1 = wait for its own standby (--replica-of\n"
            "                          HEAD, which needs --shards 2 or more) before the run (0)\n"
            "  -h, --help              this help\n",
            models_list(names, sizeof names), MODELS_DEFAULT);
}

/* --keygen PATH: a new key pair in czmq's certificate format. Existing
 * files are replaced only with --force: a key pair in use would be lost. */
static int s_keygen(const char *path, int force)
{
    char secret[4200];
    snprintf(secret, sizeof secret, "%s_secret", path);
    if (!force && (access(path, F_OK) == 0 || access(secret, F_OK) == 0)) {
        fprintf(stderr,
                "error: %s exists: --keygen does not overwrite a key pair (it may be in "
                "use); give --force to replace it\n",
                access(path, F_OK) == 0 ? path : secret);
        return 1;
    }
    zsys_handler_set(NULL);
    zcert_t *cert = zcert_new();
    if (!cert) {
        fprintf(stderr, "error: cannot make a key pair (is libzmq built with CURVE?)\n");
        return 1;
    }
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    zcert_set_meta(cert, "name", "%s", path);
    zcert_set_meta(cert, "host", "%s", host);
    if (fs_mkdir_parent(path) != 0) {
        fprintf(stderr, "error: cannot create the directory of %s: %s\n", path, strerror(errno));
        zcert_destroy(&cert);
        return 1;
    }
    int rc = zcert_save(cert, path);
    if (rc != 0)
        fprintf(stderr, "error: cannot write %s and %s_secret: %s\n", path, path, strerror(errno));
    else
        printf("wrote %s (public: give it to the other side) and %s_secret (secret: keep it "
               "here, mode 0600)\npublic key: %s\n",
               path, path, zcert_public_txt(cert));
    zcert_destroy(&cert);
    return rc == 0 ? 0 : 1;
}

/* A tcp:// endpoint's port must be * or 1..65535: ZeroMQ takes a larger
 * number modulo 65536 or as "any port" without a word. */
static int s_check_bind(const char *flag, const char *bind)
{
    if (strncmp(bind, "tcp://", 6) != 0)
        return 0;
    const char *colon = strrchr(bind + 6, ':');
    if (!colon) {
        fprintf(stderr, "error: %s %s has no port: give tcp://HOST:PORT\n", flag, bind);
        return -1;
    }
    if (strcmp(colon + 1, "*") == 0)
        return 0;
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end || errno || port < 1 || port > 65535) {
        fprintf(stderr,
                "error: %s %s: port '%s' is not in 1..65535 (or * for any free "
                "port)\n",
                flag, bind, colon + 1);
        return -1;
    }
    return 0;
}

/* Parses the command line into *o (defaults filled in), *keygen and *force.
 * 0 to run, 1 when --help was printed, 2 after printing what was wrong. Its
 * length is the flag table and its switch, one line per flag: splitting them
 * would only scatter the flags. */
static int s_parse_flags(int argc, char **argv, server_opts_t *o_out, const char **keygen,
                         int *force)
{
    server_opts_t o = {.bind = "tcp://*:5555",
                       .dataset = "mnist",
                       .warmup_epochs = 1,
                       .db = "results/metrics.db",
                       .out_dir = "results",
                       .mode = MODE_SYNC,
                       .workers = 2,
                       .staleness = 2,
                       .epochs = 5,
                       .batch_size = 64,
                       .threads = args_cpus(),
                       .lr = 0.01,
                       .momentum = 0.9,
                       .seed = 1,
                       .register_timeout = 300,
                       .worker_timeout = 60,
                       .checkpoint_every = 100,
                       .checkpoint_seconds = 30,
                       .failover_timeout = 2};
    enum {
        O_BIND = 256,
        O_WORKERS,
        O_MODE,
        O_STALE,
        O_EPOCHS,
        O_BATCH,
        O_LR,
        O_MOM,
        O_SEED,
        O_TRAIN_LIMIT,
        O_TEST_LIMIT,
        O_DATA,
        O_DB,
        O_OUT,
        O_THREADS,
        O_REG_TO,
        O_WORK_TO,
        O_CKPT,
        O_CKPT_EVERY,
        O_CKPT_SECONDS,
        O_RESUME,
        O_CURVE,
        O_ALLOWED,
        O_KEYGEN,
        O_FORCE,
        O_SHARDS,
        O_SHARD,
        O_HEAD,
        O_ADVERTISE,
        O_SERVER_KEY,
        O_SHARD_KEYS,
        O_DATASET, /* issue 14 */
        O_MODEL,
        O_LR_SCALING,
        O_WARMUP,
        O_REPLICA_OF, /* issue 12 */
        O_FAILOVER,
        O_REPLICAS
    };
    static const struct option longopts[] = {
        {"bind", required_argument, 0, O_BIND},
        {"workers", required_argument, 0, O_WORKERS},
        {"mode", required_argument, 0, O_MODE},
        {"staleness", required_argument, 0, O_STALE},
        {"epochs", required_argument, 0, O_EPOCHS},
        {"batch-size", required_argument, 0, O_BATCH},
        {"lr", required_argument, 0, O_LR},
        {"momentum", required_argument, 0, O_MOM},
        {"seed", required_argument, 0, O_SEED},
        {"train-limit", required_argument, 0, O_TRAIN_LIMIT},
        {"test-limit", required_argument, 0, O_TEST_LIMIT},
        {"data-dir", required_argument, 0, O_DATA},
        {"db", required_argument, 0, O_DB},
        {"out", required_argument, 0, O_OUT},
        {"threads", required_argument, 0, O_THREADS},
        {"register-timeout", required_argument, 0, O_REG_TO},
        {"worker-timeout", required_argument, 0, O_WORK_TO},
        {"checkpoint", required_argument, 0, O_CKPT},
        {"checkpoint-every", required_argument, 0, O_CKPT_EVERY},
        {"checkpoint-seconds", required_argument, 0, O_CKPT_SECONDS},
        {"resume", no_argument, 0, O_RESUME},
        {"curve-secret", required_argument, 0, O_CURVE},
        {"allowed-keys", required_argument, 0, O_ALLOWED},
        {"keygen", required_argument, 0, O_KEYGEN},
        {"force", no_argument, 0, O_FORCE},
        {"shards", required_argument, 0, O_SHARDS},
        {"shard", required_argument, 0, O_SHARD},
        {"head", required_argument, 0, O_HEAD},
        {"advertise", required_argument, 0, O_ADVERTISE},
        {"server-key", required_argument, 0, O_SERVER_KEY},
        {"shard-keys", required_argument, 0, O_SHARD_KEYS},
        {"dataset", required_argument, 0, O_DATASET},
        {"model", required_argument, 0, O_MODEL},
        {"lr-scaling", required_argument, 0, O_LR_SCALING},
        {"warmup-epochs", required_argument, 0, O_WARMUP},
        {"replica-of", required_argument, 0, O_REPLICA_OF},
        {"failover-timeout", required_argument, 0, O_FAILOVER},
        {"replicas", required_argument, 0, O_REPLICAS},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c, bad = 0, bind_given = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_BIND:
            o.bind = optarg;
            bind_given = 1;
            break;
        case O_WORKERS: bad |= args_int("--workers", optarg, 1, 1024, &o.workers); break;
        case O_MODE:
            if (strcmp(optarg, "sync") == 0)
                o.mode = MODE_SYNC;
            else if (strcmp(optarg, "async") == 0)
                o.mode = MODE_ASYNC;
            else if (strcmp(optarg, "ssp") == 0)
                o.mode = MODE_SSP;
            else if (strcmp(optarg, "independent") == 0)
                o.mode = MODE_INDEPENDENT;
            else {
                fprintf(stderr, "error: --mode '%s' is not one of sync, async, ssp, independent\n",
                        optarg);
                bad = 1;
            }
            break;
        case O_STALE: bad |= args_int("--staleness", optarg, 0, 1000000, &o.staleness); break;
        case O_EPOCHS: bad |= args_int("--epochs", optarg, 1, 1000, &o.epochs); break;
        case O_BATCH: bad |= args_int("--batch-size", optarg, 1, 128, &o.batch_size); break;
        case O_LR: bad |= args_double("--lr", optarg, 0.0, 100.0, &o.lr); break;
        case O_MOM: bad |= args_double("--momentum", optarg, 0.0, 0.999999, &o.momentum); break;
        case O_SEED: bad |= args_u64("--seed", optarg, &o.seed); break;
        case O_TRAIN_LIMIT:
            bad |= args_int("--train-limit", optarg, 1, 1 << 30, &o.train_limit);
            break;
        case O_TEST_LIMIT:
            bad |= args_int("--test-limit", optarg, 1, 1 << 30, &o.test_limit);
            break;
        case O_DATA: o.data_dir = optarg; break;
        case O_DB: o.db = optarg; break;
        case O_OUT: o.out_dir = optarg; break;
        case O_THREADS: bad |= args_int("--threads", optarg, 1, 256, &o.threads); break;
        case O_REG_TO:
            bad |= args_double("--register-timeout", optarg, 0.1, 1e6, &o.register_timeout);
            break;
        case O_WORK_TO:
            bad |= args_double("--worker-timeout", optarg, 0.1, 1e6, &o.worker_timeout);
            break;
        case O_CKPT: o.checkpoint = optarg; break;
        case O_CKPT_EVERY:
            bad |= args_int("--checkpoint-every", optarg, 0, 1 << 30, &o.checkpoint_every);
            break;
        case O_CKPT_SECONDS:
            bad |= args_double("--checkpoint-seconds", optarg, 0.1, 1e6, &o.checkpoint_seconds);
            break;
        case O_RESUME: o.resume = 1; break;
        case O_CURVE: o.curve_secret = optarg; break;
        case O_ALLOWED: o.allowed_keys = optarg; break;
        case O_KEYGEN: *keygen = optarg; break;
        case O_FORCE: *force = 1; break;
        case O_SHARDS: bad |= args_int("--shards", optarg, 1, 64, &o.shards); break;
        case O_SHARD: bad |= args_int("--shard", optarg, 1, 63, &o.shard); break;
        case O_HEAD: o.head = optarg; break;
        case O_ADVERTISE: o.advertise = optarg; break;
        case O_SERVER_KEY: o.server_key = optarg; break;
        case O_SHARD_KEYS: o.shard_keys = optarg; break;
        case O_DATASET:
            o.dataset = optarg;
            if (!idx_dataset_dir(optarg)) {
                fprintf(stderr, "error: --dataset '%s' is not one of %s\n", optarg, IDX_DATASETS);
                bad = 1;
            }
            break;
        case O_MODEL:
            o.model = optarg;
            if (!models_find(optarg)) {
                char names[256];
                fprintf(stderr, "error: --model '%s' is not one of %s\n", optarg,
                        models_list(names, sizeof names));
                bad = 1;
            }
            break;
        case O_LR_SCALING:
            if (strcmp(optarg, "none") == 0 || strcmp(optarg, "linear") == 0)
                o.lr_scaling = optarg[0] == 'l' ? LR_SCALING_LINEAR : LR_SCALING_NONE;
            else {
                fprintf(stderr, "error: --lr-scaling '%s' is not one of none, linear\n", optarg);
                bad = 1;
            }
            break;
        case O_WARMUP:
            bad |= args_double("--warmup-epochs", optarg, 0, 1000, &o.warmup_epochs);
            break;
        case O_REPLICA_OF: o.replica_of = optarg; break;
        case O_REPLICAS: bad |= args_int("--replicas", optarg, 0, 1, &o.replicas); break;
        case O_FAILOVER:
            bad |= args_double("--failover-timeout", optarg, 0.1, 3600, &o.failover_timeout);
            break;
        case 'h': s_usage(stdout); return 1;
        default: bad = 1; break;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "error: unexpected argument '%s'\n", argv[optind]);
        bad = 1;
    }
    if (!bad && (o.curve_secret != NULL) != (o.allowed_keys != NULL)) {
        fprintf(stderr, "error: --curve-secret and --allowed-keys go together: an encrypted "
                        "server must know whom to admit\n");
        bad = 1;
    }
    if (!bad && o.replica_of && (o.shard > 0 || o.head || o.shards > 1)) {
        fprintf(stderr, "error: --replica-of takes the shard number and the head from the "
                        "primary: give it without --shard, --head and --shards\n");
        bad = 1;
    }
    if (!bad && o.replicas && o.shards < 2) {
        fprintf(stderr, "error: --replicas 1 gives the head a standby, which needs a witness to "
                        "take over: a server group of 2 or more (--shards 2)\n");
        bad = 1;
    }
    if (!bad && o.replica_of && o.curve_secret) {
        fprintf(stderr, "error: a standby (--replica-of) with CurveZMQ is not supported in this "
                        "release\n");
        bad = 1;
    }
    if (!bad && o.replica_of && s_check_bind("--replica-of", o.replica_of) != 0)
        bad = 1;
    if (!bad && (o.shard > 0) != (o.head != NULL)) {
        fprintf(stderr, "error: --shard I and --head ENDPOINT go together: a shard joins its "
                        "head\n");
        bad = 1;
    }
    if (!bad && o.shards > 1 && o.mode == MODE_INDEPENDENT) {
        fprintf(stderr, "error: --mode independent keeps one model per worker on the head; it "
                        "cannot be split over --shards\n");
        bad = 1;
    }
    if (!bad && o.shard > 0 && o.shards > 1) {
        fprintf(stderr, "error: --shards is the head's flag; a shard (--shard) learns the "
                        "group's size from its head\n");
        bad = 1;
    }
    if (!bad && o.shard_keys && (!o.curve_secret || o.shard > 0)) {
        fprintf(stderr, "error: --shard-keys is the head's, with CurveZMQ (--curve-secret, "
                        "--allowed-keys): it names the keys that may join as shards\n");
        bad = 1;
    }
    if (!bad && (o.advertise || o.server_key) && o.shard == 0 && !o.replica_of) {
        fprintf(stderr, "error: --advertise and --server-key are a shard's flags (with --shard "
                        "and --head)\n");
        bad = 1;
    }
    if (!bad && o.replica_of && !bind_given) {
        fprintf(stderr, "error: a standby (--replica-of) needs --bind, where the workers and its "
                        "primary reach it (e.g. tcp://*:5600)\n");
        bad = 1;
    }
    if (!bad && o.shard > 0 && !bind_given) {
        static char sbind[64]; /* o.bind points here for the whole run */
        snprintf(sbind, sizeof sbind, "tcp://*:%d", 5555 + o.shard);
        o.bind = sbind;
    }
    if (!bad && !*keygen && s_check_bind("--bind", o.bind) != 0)
        bad = 1;
    if (!bad && o.lr_scaling == LR_SCALING_LINEAR && o.mode != MODE_SYNC) {
        fprintf(stderr,
                "error: --lr-scaling linear scales the lr by the gradients one update averages, "
                "and only --mode sync averages (%s applies one worker's gradient, or none, per "
                "update): use --lr-scaling none\n",
                server_mode_name(o.mode));
        bad = 1;
    }
    if (!o.data_dir)
        o.data_dir = idx_dataset_dir(o.dataset);
    if (bad) {
        fprintf(stderr, "run 'paramserver --help' for usage\n");
        return 2;
    }
    *o_out = o;
    return 0;
}

int main(int argc, char **argv)
{
    server_opts_t o;
    const char *keygen = NULL;
    int force = 0, rc = s_parse_flags(argc, argv, &o, &keygen, &force);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (keygen)
        return s_keygen(keygen, force);
    static char ckpt[4096]; /* o.checkpoint points here for the whole run */
    if (!o.checkpoint) {
        if (o.replica_of)
            snprintf(ckpt, sizeof ckpt, "%s/checkpoint-standby-%d.safetensors", o.out_dir,
                     (int)getpid());
        else if (o.shard > 0)
            snprintf(ckpt, sizeof ckpt, "%s/checkpoint-shard%d.safetensors", o.out_dir, o.shard);
        else
            snprintf(ckpt, sizeof ckpt, "%s/checkpoint.safetensors", o.out_dir);
        o.checkpoint = ckpt;
    }
    wire_init();
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    return o.shard > 0 || o.replica_of ? server_run_shard(&o) : server_run(&o);
}
