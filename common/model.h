/* model: SimpleConvNet, exactly as PyTorch defines and trains it.
 *
 *   conv1 (1->32, 3x3) -> ReLU -> maxpool 2   28x28 -> 26x26 -> 13x13
 *   conv2 (32->64, 3x3) -> ReLU -> maxpool 2  13x13 -> 11x11 -> 5x5 (floor)
 *   flatten (index c*25 + y*5 + x) -> fc1 (1600->128) -> ReLU -> fc2 (128->10)
 *
 * All parameters live in one contiguous float array in PyTorch's state_dict
 * order (model_tensors[] gives each tensor's name, shape and offset); gradients
 * use the same layout. That array is what a worker pushes and pulls.
 *
 * Forward and backward work on a sub-batch in a caller-owned workspace:
 * conv1 is a direct kernel fused with its bias, ReLU and max-pooling (and so
 * is its backward); conv2 runs in the Winograd domain (winograd.h) as batched
 * single-threaded GEMMs over all tiles of the sub-batch (kgemm.h for the
 * forward and input gradient, OpenBLAS for the weight gradient); the fully
 * connected layers are GEMMs. Activations are kept with image and channel
 * innermost, the layout the next layer reads. Nothing is allocated after
 * model_ws_new. Parallelism across threads is engine.h's job. */
#ifndef MODEL_H
#define MODEL_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_IMAGE_PIXELS 784
#define MODEL_CLASSES 10
#define MODEL_NTENSORS 8

/* Offsets of each tensor in the parameter array (PyTorch's state_dict order). */
enum {
    MODEL_CONV1_W = 0,                        /* [32,1,3,3] */
    MODEL_CONV1_B = MODEL_CONV1_W + 32 * 9,   /* [32] */
    MODEL_CONV2_W = MODEL_CONV1_B + 32,       /* [64,32,3,3] */
    MODEL_CONV2_B = MODEL_CONV2_W + 64 * 288, /* [64] */
    MODEL_FC1_W = MODEL_CONV2_B + 64,         /* [128,1600] */
    MODEL_FC1_B = MODEL_FC1_W + 128 * 1600,   /* [128] */
    MODEL_FC2_W = MODEL_FC1_B + 128,          /* [10,128] */
    MODEL_FC2_B = MODEL_FC2_W + 10 * 128,     /* [10] */
    MODEL_NPARAMS = MODEL_FC2_B + 10          /* 225,034 */
};

/* One tensor of the model: its state_dict name, shape and place in the array. */
typedef struct {
    const char *name;
    int ndim;
    int shape[4];
    size_t offset, numel;
    int fan_in; /* for PyTorch's default init bound 1/sqrt(fan_in) */
} model_tensor_t;

extern const model_tensor_t model_tensors[MODEL_NTENSORS];

/* Training FLOPs per image (forward + backward, no input gradient for conv1). */
#define MODEL_TRAIN_FLOP_PER_IMAGE 15.4e6

/* PyTorch's default init: every weight and bias ~ U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)), drawn from a generator seeded with `seed`. */
void model_init(float *params, uint64_t seed);

/* The same for any model's tensor table (models.h): one generator, the
 * tensors in table (state_dict) order. */
void model_init_tensors(const model_tensor_t *tensors, int ntensors, float *params, uint64_t seed);

/* Per-thread scratch memory for sub-batches of up to max_n images. Opaque. */
typedef struct model_ws model_ws_t;

/* NULL if memory cannot be allocated. */
model_ws_t *model_ws_new(int max_n);
void model_ws_destroy(model_ws_t **pws);
int model_ws_capacity(const model_ws_t *ws);

/* Forward pass of n (<= capacity) images given as raw bytes (normalised here),
 * writing n x 10 logits into the workspace (see model_ws_logits). */
void model_forward(const float *params, const uint8_t *const *images, int n, model_ws_t *ws);

/* The logits of the last forward pass, n x 10, row-major. */
const float *model_ws_logits(const model_ws_t *ws);

/* Forward and backward pass. Writes into grad (MODEL_NPARAMS floats,
 * overwritten) `scale` times the gradient of the summed cross-entropy loss of
 * the n images, and returns that summed loss. With scale = 1/B, the grads of
 * the sub-batches of a batch of B add up to the gradient of the mean loss. */
double model_forward_backward(const float *params, const uint8_t *const *images,
                              const uint8_t *labels, int n, float scale, float *grad,
                              model_ws_t *ws);

/* model_forward_backward in three parts, so that an engine can share the
 * fully connected layers' weight gradients among its threads (engine.c) and
 * hand them out before the convolutions' backward has run:
 *
 * model_forward_loss: forward, loss (returned, summed) and the backward as far
 * as fc2's and fc1's output gradients, kept in ws; writes nothing into grad.
 *
 * model_fc_grad: fc2's and fc1's weight and bias gradients into grad, part
 * `part` of `nparts` of them (about 1/nparts of each weight matrix's
 * columns, of each bias's rows; the parts together write all of it once),
 * summed over the nws sub-batches (each of n >= 1 images) whose
 * model_forward_loss ran in ws[0..nws), in that order: each sub-batch's own
 * sum, added in order, the bits of nws separate gradients added in order.
 * Reads ws only (threads may call it on one another's).
 *
 * model_conv_backward: the rest, into grad's conv1 and conv2 ranges
 * (overwritten). It does not touch what model_fc_grad reads, so another
 * thread may still be reading this ws through model_fc_grad meanwhile. */
double model_forward_loss(const float *params, const uint8_t *const *images, const uint8_t *labels,
                          int n, float scale, model_ws_t *ws);
void model_fc_grad(const model_ws_t *const *ws, int nws, int part, int nparts, float *grad);
void model_conv_backward(const float *params, model_ws_t *ws, float *grad);

/* Summed cross-entropy of n rows of 10 logits against labels (double, via
 * log-sum-exp); with dlogits not NULL also dlogits = scale * (softmax -
 * onehot), the gradient the backward pass starts from. Any model's. */
double model_ce(const float *logits, const uint8_t *labels, int n, float scale, float *dlogits);

/* Number of the n rows of 10 logits whose argmax (the first on ties) == label. */
int model_argmax_correct(const float *logits, const uint8_t *labels, int n);

/* Summed cross-entropy of the last forward pass's n images against labels. */
double model_loss_sum(const model_ws_t *ws, const uint8_t *labels, int n);

/* Number of the last forward pass's n images whose argmax logit == label. */
int model_count_correct(const model_ws_t *ws, const uint8_t *labels, int n);

/* The stages of a training step that a profile times, in the order they run.
 * MODEL_PROF_WAIT, MODEL_PROF_REDUCE and MODEL_PROF_SGD are timed by their
 * callers (engine.c, model_ws_tick). */
typedef enum {
    MODEL_PROF_INPUT,     /* bytes -> normalised floats */
    MODEL_PROF_CONV1,     /* conv1 + bias + ReLU + max-pool (one fused kernel) */
    MODEL_PROF_CONV2_IN,  /* conv2: weight and input transforms */
    MODEL_PROF_CONV2_MUL, /* conv2: the multiplication (GEMM, batched GEMMs) */
    MODEL_PROF_CONV2_OUT, /* conv2: output transform */
    MODEL_PROF_POOL2,     /* bias + ReLU + max-pool of conv2, flatten */
    MODEL_PROF_FC,        /* fc1 + ReLU + fc2 forward */
    MODEL_PROF_LOSS,      /* softmax cross-entropy and its gradient */
    MODEL_PROF_FC_B,      /* fc2 and fc1 backward */
    MODEL_PROF_POOL2_B,   /* unflatten, pool2 + ReLU backward, conv2 bias grad */
    MODEL_PROF_CONV2_DW,  /* conv2: output-gradient transform, weight gradient */
    MODEL_PROF_CONV2_DX,  /* conv2 input gradient: multiplication */
    MODEL_PROF_CONV2_DXT, /* conv2 input gradient: inverse input transform */
    MODEL_PROF_CONV1_B,   /* pool1 + ReLU backward, conv1 weight and bias grad */
    MODEL_PROF_WAIT,      /* engine: waiting for the other threads (spinning counts) */
    MODEL_PROF_REDUCE,    /* engine: sum of the threads' conv gradients */
    MODEL_PROF_SGD,       /* the SGD update */
    MODEL_PROF_N
} model_prof_stage_t;

extern const char *const model_prof_names[MODEL_PROF_N];

/* Profiling: while `seconds` (MODEL_PROF_N doubles, owned by the caller) is
 * set, forward and backward add the CPU time of each stage (the calling
 * thread's, CLOCK_THREAD_CPUTIME_ID) to it. NULL stops. About 20 clock reads
 * a step, well under 1% of it. */
void model_ws_profile(model_ws_t *ws, double *seconds);

/* Profiling: the time since the last stage ended goes to `stage` (for
 * stages timed outside model.c, MODEL_PROF_WAIT); MODEL_PROF_N drops it
 * (restarts the clock). No-op when not profiling. */
void model_ws_tick(model_ws_t *ws, model_prof_stage_t stage);

/* SGD with momentum, PyTorch's semantics (no dampening, no weight decay):
 *   v = momentum * v + g;  w -= lr * v
 * over n elements. With momentum 0, v is still updated (v = g). */
void model_sgd_step(float *w, float *v, const float *g, size_t n, float lr, float momentum);

/* 1 when model_sgd_step with these arguments would leave every weight and
 * momentum value finite, else 0; changes nothing. A server checks a gradient
 * with it before applying one from outside. */
int model_sgd_step_finite(const float *w, const float *v, const float *g, size_t n, float lr,
                          float momentum);

/* 1 when all n values are finite. */
int model_all_finite(const float *x, size_t n);

#endif
