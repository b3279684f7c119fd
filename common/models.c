/* models: the catalogue of trainable models (see models.h): for each, its
 * layer table (layers.h), its tensors in PyTorch's state_dict order with
 * their offsets in the flat parameter array, and its layer edges. The
 * tables are written out by hand; layers_check (run by every engine_new and
 * by test_layers) proves each tensor table agrees with its layer table. */
#include "models.h"

#include <stdio.h>
#include <string.h>

#include "layers.h"

/* One line per macro reads better than clang-format's layout of them. */
/* clang-format off */
#define CONV(o, kk, pd) {.kind = LAYER_CONV, .out = (o), .k = (kk), .pad = (pd)}
#define LINEAR(o) {.kind = LAYER_LINEAR, .out = (o)}
#define RELU {.kind = LAYER_RELU}
#define POOL {.kind = LAYER_MAXPOOL}
#define FLATTEN {.kind = LAYER_FLATTEN}
#define DROPOUT(pp) {.kind = LAYER_DROPOUT, .p = (pp)}
/* clang-format on */

/* SimpleConvNet (model.h has its offsets and tensors). */
static const layer_def_t s_simpleconvnet_layers[] = {
    CONV(32, 3, 0), RELU, POOL, CONV(64, 3, 0), RELU, POOL, FLATTEN, LINEAR(128), RELU, LINEAR(10),
};
static const size_t s_simpleconvnet_edges[] = {MODEL_NPARAMS, MODEL_FC2_W, MODEL_FC1_W,
                                               MODEL_CONV2_W, 0};

/* LeNet-5 as commonly written for MNIST in PyTorch: padding 2 keeps 28x28. */
enum {
    L5_C1W = 0,
    L5_C1B = L5_C1W + 6 * 25,
    L5_C2W = L5_C1B + 6,
    L5_C2B = L5_C2W + 16 * 150,
    L5_F1W = L5_C2B + 16,
    L5_F1B = L5_F1W + 120 * 400,
    L5_F2W = L5_F1B + 120,
    L5_F2B = L5_F2W + 84 * 120,
    L5_F3W = L5_F2B + 84,
    L5_F3B = L5_F3W + 10 * 84,
    L5_N = L5_F3B + 10 /* 61,706 */
};
static const layer_def_t s_lenet5_layers[] = {
    CONV(6, 5, 2), RELU,        POOL, CONV(16, 5, 0), RELU, POOL,
    FLATTEN,       LINEAR(120), RELU, LINEAR(84),     RELU, LINEAR(10),
};
static const model_tensor_t s_lenet5_tensors[] = {
    {"conv1.weight", 4, {6, 1, 5, 5}, L5_C1W, 6 * 25, 25},
    {"conv1.bias", 1, {6}, L5_C1B, 6, 25},
    {"conv2.weight", 4, {16, 6, 5, 5}, L5_C2W, 16 * 150, 150},
    {"conv2.bias", 1, {16}, L5_C2B, 16, 150},
    {"fc1.weight", 2, {120, 400}, L5_F1W, 120 * 400, 400},
    {"fc1.bias", 1, {120}, L5_F1B, 120, 400},
    {"fc2.weight", 2, {84, 120}, L5_F2W, 84 * 120, 120},
    {"fc2.bias", 1, {84}, L5_F2B, 84, 120},
    {"fc3.weight", 2, {10, 84}, L5_F3W, 10 * 84, 84},
    {"fc3.bias", 1, {10}, L5_F3B, 10, 84},
};
static const size_t s_lenet5_edges[] = {L5_N, L5_F3W, L5_F2W, L5_F1W, L5_C2W, 0};

/* A multi-layer perceptron, 784-1024-1024-10. */
enum {
    MLP_F1W = 0,
    MLP_F1B = MLP_F1W + 1024 * 784,
    MLP_F2W = MLP_F1B + 1024,
    MLP_F2B = MLP_F2W + 1024 * 1024,
    MLP_F3W = MLP_F2B + 1024,
    MLP_F3B = MLP_F3W + 10 * 1024,
    MLP_N = MLP_F3B + 10 /* 1,863,690 */
};
static const layer_def_t s_mlp_layers[] = {
    FLATTEN, LINEAR(1024), RELU, LINEAR(1024), RELU, LINEAR(10),
};
static const model_tensor_t s_mlp_tensors[] = {
    {"fc1.weight", 2, {1024, 784}, MLP_F1W, 1024 * 784, 784},
    {"fc1.bias", 1, {1024}, MLP_F1B, 1024, 784},
    {"fc2.weight", 2, {1024, 1024}, MLP_F2W, 1024 * 1024, 1024},
    {"fc2.bias", 1, {1024}, MLP_F2B, 1024, 1024},
    {"fc3.weight", 2, {10, 1024}, MLP_F3W, 10 * 1024, 1024},
    {"fc3.bias", 1, {10}, MLP_F3B, 10, 1024},
};
static const size_t s_mlp_edges[] = {MLP_N, MLP_F3W, MLP_F2W, 0};

/* A wide CNN (the shape of Keras's and PyTorch's MNIST examples). */
enum {
    W_C1W = 0,
    W_C1B = W_C1W + 64 * 9,
    W_C2W = W_C1B + 64,
    W_C2B = W_C2W + 128 * 576,
    W_F1W = W_C2B + 128,
    W_F1B = W_F1W + 512 * 18432,
    W_F2W = W_F1B + 512,
    W_F2B = W_F2W + 10 * 512,
    W_N = W_F2B + 10 /* 9,517,322 */
};
static const layer_def_t s_widecnn_layers[] = {
    CONV(64, 3, 0), RELU, CONV(128, 3, 0), RELU,       POOL, DROPOUT(0.25f), FLATTEN,
    LINEAR(512),    RELU, DROPOUT(0.5f),   LINEAR(10),
};
static const model_tensor_t s_widecnn_tensors[] = {
    {"conv1.weight", 4, {64, 1, 3, 3}, W_C1W, 64 * 9, 9},
    {"conv1.bias", 1, {64}, W_C1B, 64, 9},
    {"conv2.weight", 4, {128, 64, 3, 3}, W_C2W, 128 * 576, 576},
    {"conv2.bias", 1, {128}, W_C2B, 128, 576},
    {"fc1.weight", 2, {512, 18432}, W_F1W, 512 * 18432, 18432},
    {"fc1.bias", 1, {512}, W_F1B, 512, 18432},
    {"fc2.weight", 2, {10, 512}, W_F2W, 10 * 512, 512},
    {"fc2.bias", 1, {10}, W_F2B, 10, 512},
};
static const size_t s_widecnn_edges[] = {W_N, W_F2W, W_F1W, W_C2W, 0};

#define S_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define S_TABLES(p)                                                                                \
    .ntensors = S_COUNT(p##_tensors), .tensors = p##_tensors, .nedges = S_COUNT(p##_edges),        \
    .edges = p##_edges, .nlayers = S_COUNT(p##_layers), .layers = p##_layers

/* FLOPs per image: layers_train_flop's count (test_layers checks it). */
static const model_def_t s_models[] = {
    {.name = "simpleconvnet",
     .summary = "conv 3x3 32, pool, conv 3x3 64, pool, fc 128, fc 10 (225,034 parameters)",
     .nparams = MODEL_NPARAMS,
     .ntensors = MODEL_NTENSORS,
     .tensors = model_tensors,
     .nedges = S_COUNT(s_simpleconvnet_edges),
     .edges = s_simpleconvnet_edges,
     .train_flop_per_image = MODEL_TRAIN_FLOP_PER_IMAGE,
     .nlayers = S_COUNT(s_simpleconvnet_layers),
     .layers = s_simpleconvnet_layers,
     .optimized = 1,
     .pytorch_class = "SimpleConvNet"},
    {.name = "lenet5",
     .summary = "conv 5x5 6 (pad 2), pool, conv 5x5 16, pool, fc 120, fc 84, fc 10 (61,706 "
                "parameters)",
     .nparams = L5_N,
     S_TABLES(s_lenet5),
     .train_flop_per_image = 2263920.0,
     .pytorch_class = "LeNet5"},
    {.name = "mlp",
     .summary = "fc 1024, fc 1024, fc 10 on the 784 pixels (1,863,690 parameters)",
     .nparams = MLP_N,
     S_TABLES(s_mlp),
     .train_flop_per_image = 9564160.0,
     .pytorch_class = "MLP"},
    {.name = "widecnn",
     .summary = "conv 3x3 64, conv 3x3 128, pool, dropout 0.25, fc 512, dropout 0.5, fc 10 "
                "(9,517,322 parameters)",
     .nparams = W_N,
     S_TABLES(s_widecnn),
     .train_flop_per_image = 313015296.0,
     .pytorch_class = "WideCNN"},
};

#define S_NMODELS S_COUNT(s_models)

const model_def_t *models_at(int i)
{
    return i >= 0 && i < S_NMODELS ? &s_models[i] : NULL;
}

const model_def_t *models_find(const char *name)
{
    for (int i = 0; name && i < S_NMODELS; i++)
        if (strcmp(s_models[i].name, name) == 0)
            return &s_models[i];
    return NULL;
}

void models_init(const model_def_t *m, float *params, uint64_t seed)
{
    model_init_tensors(m->tensors, m->ntensors, params, seed);
}

const char *models_list(char *buf, size_t len)
{
    size_t at = 0;
    if (len)
        buf[0] = '\0';
    for (int i = 0; i < S_NMODELS && at < len; i++) {
        int k = snprintf(buf + at, len - at, "%s%s", i ? ", " : "", s_models[i].name);
        if (k < 0)
            break;
        at += (size_t)k;
    }
    return buf;
}
