/* models: the catalogue of trainable models (see models.h). */
#include "models.h"

#include <stdio.h>
#include <string.h>

static const size_t s_simpleconvnet_edges[] = {MODEL_NPARAMS, MODEL_FC2_W, MODEL_FC1_W,
                                               MODEL_CONV2_W, 0};

static const model_def_t s_models[] = {
    {.name = "simpleconvnet",
     .summary = "conv 3x3 32, pool, conv 3x3 64, pool, fc 128, fc 10 (225,034 parameters)",
     .nparams = MODEL_NPARAMS,
     .ntensors = MODEL_NTENSORS,
     .tensors = model_tensors,
     .nedges = 5,
     .edges = s_simpleconvnet_edges,
     .train_flop_per_image = MODEL_TRAIN_FLOP_PER_IMAGE},
};

#define S_NMODELS ((int)(sizeof s_models / sizeof s_models[0]))

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
