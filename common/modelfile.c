/* modelfile: a model's parameter array <-> a PyTorch-loadable safetensors file. */
#include "modelfile.h"

#include <stdio.h>
#include <string.h>

#include "errmsg.h"
#include "safetensors.h"

int modelfile_save(const char *path, const model_def_t *m, const float *params,
                   const char *const *metadata, char *err, size_t errlen)
{
    st_tensor_t t[MODELS_MAX_TENSORS];
    for (int i = 0; i < m->ntensors; i++) {
        const model_tensor_t *mt = &m->tensors[i];
        t[i] = (st_tensor_t){
            .name = mt->name, .dtype = ST_F32, .ndim = mt->ndim, .data = params + mt->offset};
        for (int d = 0; d < mt->ndim; d++)
            t[i].shape[d] = mt->shape[d];
    }
    return st_write(path, t, m->ntensors, metadata, err, errlen);
}

int modelfile_load(const char *path, const model_def_t *m, const char *prefix, float *params,
                   char *err, size_t errlen)
{
    st_file_t *f = st_open(path, err, errlen);
    if (!f)
        return -1;
    int rc = modelfile_read(f, path, m, prefix, params, err, errlen);
    st_close(&f);
    return rc;
}

int modelfile_read(const st_file_t *f, const char *path, const model_def_t *m, const char *prefix,
                   float *params, char *err, size_t errlen)
{
    for (int i = 0; i < m->ntensors; i++) {
        const model_tensor_t *mt = &m->tensors[i];
        char name[128];
        snprintf(name, sizeof name, "%s%s", prefix, mt->name);
        const st_tensor_t *t = st_find(f, name);
        int ok = t && t->dtype == ST_F32 && t->ndim == mt->ndim;
        for (int d = 0; ok && d < mt->ndim; d++)
            ok = t->shape[d] == mt->shape[d];
        if (!ok) {
            char shape[64] = "";
            for (int d = 0; d < mt->ndim; d++)
                snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%d", d ? "," : "",
                         mt->shape[d]);
            errmsg_set(err, errlen,
                       "%s: tensor '%s' is %s; expected F32 of shape [%s] (model %s: is the file "
                       "of another model? see --model)",
                       path, name, t ? "of another dtype or shape" : "missing", shape, m->name);
            return -1;
        }
        memcpy(params + mt->offset, t->data, mt->numel * sizeof(float));
    }
    return 0;
}
