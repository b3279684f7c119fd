/* modelfile: saves and loads the model's parameter array as a safetensors
 * file whose tensor names and shapes are PyTorch's state_dict keys, so that
 * `model.load_state_dict(safetensors.torch.load_file(path), strict=True)`
 * accepts it. */
#ifndef MODELFILE_H
#define MODELFILE_H

#include <stddef.h>

#include "models.h"
#include "safetensors.h"

/* Writes model m's m->nparams floats of params atomically to path, one
 * tensor per m->tensors[]. `metadata` is NULL or a NULL-terminated list of
 * key, value pairs. 0, or -1 + err. */
int modelfile_save(const char *path, const model_def_t *m, const float *params,
                   const char *const *metadata, char *err, size_t errlen);

/* Reads a file of model m written by modelfile_save (or by PyTorch with the
 * same names) into params (m->nparams floats), checking every tensor's
 * presence, dtype and shape. `prefix` is prepended to each name ("" for
 * plain state_dict names). 0, or -1 + err. */
int modelfile_load(const char *path, const model_def_t *m, const char *prefix, float *params,
                   char *err, size_t errlen);

/* The same from a file already open (a checkpoint is read once); path
 * names it in messages. */
int modelfile_read(const st_file_t *f, const char *path, const model_def_t *m, const char *prefix,
                   float *params, char *err, size_t errlen);

#endif
