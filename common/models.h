/* models: the catalogue of models the programs can train, by name.
 *
 * A model is one flat float array of `nparams` parameters in PyTorch's
 * state_dict order (tensors[] names each tensor's shape and place); the wire,
 * the servers, checkpoints and model files see only that array and this
 * description. `edges` are the layer boundaries in the order backward
 * completes them (descending, edges[0] == nparams, edges[nedges-1] == 0):
 * the ranges [edges[i+1], edges[i]) a worker can push as soon as they are
 * final. `layers` describes the model for the layer engine (layers.h);
 * SimpleConvNet also has a hand-optimised engine (model.h), which engine.h
 * runs for it (`optimized`). "simpleconvnet" is the default. */
#ifndef MODELS_H
#define MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define MODELS_DEFAULT "simpleconvnet"
#define MODELS_MAX_TENSORS 16
#define MODELS_MAX_EDGES 16

struct layer_def; /* layers.h */

typedef struct {
    const char *name;
    const char *summary; /* one line for --help and the README */
    size_t nparams;
    int ntensors;
    const model_tensor_t *tensors;
    int nedges;
    const size_t *edges;
    double train_flop_per_image; /* forward + backward */
    int nlayers;
    const struct layer_def *layers; /* the layer table, input to output (layers.h) */
    int optimized; /* 1: engine.h runs model.h's SimpleConvNet engine, not the layer engine */
    const char
        *pytorch_class; /* the torch.nn.Module that loads its files (tests/pytorch_model.py) */
} model_def_t;

/* The model called `name`, or NULL (see models_list for the names). */
const model_def_t *models_find(const char *name);

/* The i-th model of the catalogue (0 is the default), NULL past the end. */
const model_def_t *models_at(int i);

/* PyTorch's default init of m's parameters (m->nparams floats), as
 * model_init: one generator seeded with seed, tensors in state_dict order. */
void models_init(const model_def_t *m, float *params, uint64_t seed);

/* "simpleconvnet, ..." into buf, for messages and --help. Returns buf. */
const char *models_list(char *buf, size_t len);

#endif
