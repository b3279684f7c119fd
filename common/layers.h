/* layers: a small layer engine that runs any model of the catalogue
 * (models.h) described as a table of layers, exactly as PyTorch computes it.
 *
 * Layers (input: one 1x28x28 image, normalised as model.h does):
 *   conv2d   any square kernel, stride 1, zero padding `pad`; im2col + sgemm
 *   maxpool  2x2, stride 2, floor; ties go to the first element in scan order
 *   relu     in place
 *   linear   sgemm over the sub-batch
 *   flatten  channel-major (c, y, x), as torch.flatten / view(-1, C*H*W)
 *   dropout  training only; inverted scaling x / (1 - p) as PyTorch; the mask
 *            is a hash of (seed, step, the image's position in the batch, the
 *            layer's index, the element's index): the same whatever the
 *            thread count or how the batch is sliced (layers_dropout_keep)
 * Activations are NCHW per image, images one after the other, as in PyTorch.
 *
 * Parameters are the model's one flat array in state_dict order: each conv
 * or linear layer takes the next two tensors of the model's tensor table
 * (weight, bias), whose shapes layers_ws_new checks against the layer table.
 * Gradients use the same layout. Forward and backward of a sub-batch run in
 * a workspace allocated once (layers_ws_new); nothing is allocated after.
 * One thread per workspace; BLAS is expected to be single-threaded (engine.h
 * sets it). engine.c runs these on several threads. */
#ifndef LAYERS_H
#define LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "models.h"

typedef enum {
    LAYER_CONV,
    LAYER_MAXPOOL,
    LAYER_RELU,
    LAYER_LINEAR,
    LAYER_FLATTEN,
    LAYER_DROPOUT
} layer_kind_t;

/* One layer of a model's table (models.c). */
typedef struct layer_def {
    layer_kind_t kind;
    int out; /* conv: output channels; linear: output features */
    int k;   /* conv: kernel size (k x k) */
    int pad; /* conv: zero padding on each side */
    float p; /* dropout: probability of zeroing an element, in [0, 1) */
} layer_def_t;

/* Where dropout's masks come from for one gradient: the run's seed, the
 * step (one per batch) and the position in the batch of the sub-batch's
 * first image. */
typedef struct {
    uint64_t seed, step;
    int first;
} layers_dropout_t;

/* 1 when dropout layer `layer` (its index in the model's layer table) keeps
 * element `elem` of the image at position `pos` of the batch at this seed
 * and step, for probability p. The fixture script computes the same. */
int layers_dropout_keep(uint64_t seed, uint64_t step, int pos, int layer, size_t elem, float p);

/* Checks that m's layer table is valid for a 1x28x28 input and that its
 * tensor table, nparams and edges agree with it. 0, or -1 + err. */
int layers_check(const model_def_t *m, char *err, size_t errlen);

/* Training FLOPs per image (forward + backward; no input gradient for the
 * first layer with parameters), from the layer table: 2 per multiply-add. */
double layers_train_flop(const model_def_t *m);

/* Per-thread scratch memory for sub-batches of up to max_n images. */
typedef struct layers_ws layers_ws_t;

/* NULL + err when m's tables are not valid (layers_check) or memory is short. */
layers_ws_t *layers_ws_new(const model_def_t *m, int max_n, char *err, size_t errlen);
void layers_ws_destroy(layers_ws_t **pws);
int layers_ws_capacity(const layers_ws_t *ws);

/* Inference: n (<= capacity) images as raw bytes; dropout passes everything.
 * The n x 10 logits are then in layers_ws_logits. */
void layers_forward(const float *params, const uint8_t *const *images, int n, layers_ws_t *ws);
const float *layers_ws_logits(const layers_ws_t *ws);

/* Training forward and backward of n images: writes into grad (m->nparams
 * floats, overwritten) `scale` times the gradient of their summed
 * cross-entropy and returns that summed loss. `drop` gives the dropout
 * masks; NULL runs dropout layers as identity (PyTorch's eval mode: for
 * tests). */
double layers_forward_backward(const float *params, const uint8_t *const *images,
                               const uint8_t *labels, int n, float scale,
                               const layers_dropout_t *drop, float *grad, layers_ws_t *ws);

#endif
