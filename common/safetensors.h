/* safetensors: reads and writes the safetensors file format
 * (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
 * length, a JSON header mapping tensor names to {dtype, shape, data_offsets},
 * then the raw little-endian tensor bytes.
 *
 * Writing is used for model files that PyTorch loads with load_state_dict;
 * reading is used for checkpoints and the PyTorch reference fixture. Only the
 * dtypes this project needs are supported: F32 and U8. */
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 4

typedef enum { ST_F32 = 0, ST_U8 = 1 } st_dtype_t;

/* One tensor to write, or one tensor found in a file. */
typedef struct {
    const char *name; /* tensor name, e.g. "conv1.weight" */
    st_dtype_t dtype; /* element type */
    int ndim;         /* 0..ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* element data, little-endian, product(shape) elements */
} st_tensor_t;

/* Writes the tensors to `path` atomically: into `path.tmp`, fsync, rename.
 * `metadata` may be NULL or a NULL-terminated list of key, value string pairs
 * stored in "__metadata__". Returns 0, or -1 with a message in err. */
int st_write(const char *path, const st_tensor_t *tensors, int n, const char *const *metadata,
             char *err, size_t errlen);

/* A file read into memory. Opaque. */
typedef struct st_file st_file_t;

/* Reads and validates a whole file: header length within the file, JSON well
 * formed, known dtypes, offsets in bounds, contiguous and non-overlapping,
 * sizes == product(shape) * element size. Returns NULL with a message in err. */
st_file_t *st_open(const char *path, char *err, size_t errlen);

/* Looks a tensor up by name; returns NULL if absent. The returned view (and
 * its name and data pointers) stays valid until st_close. Data is aligned to
 * at least 4 bytes. */
const st_tensor_t *st_find(const st_file_t *f, const char *name);

/* Number of tensors and the i-th one (in file order). */
int st_count(const st_file_t *f);
const st_tensor_t *st_get(const st_file_t *f, int i);

/* Value of a "__metadata__" key, or NULL. */
const char *st_metadata(const st_file_t *f, const char *key);

/* Value of a "__metadata__" key read as a decimal integer in [min, max]
 * (the format stores metadata as strings only). 0, or -1 with a message
 * naming the key and saying whether it is missing, not a whole number or out
 * of range. */
int st_metadata_int64(const st_file_t *f, const char *key, int64_t min, int64_t max, int64_t *out,
                      char *err, size_t errlen);
int st_metadata_uint64(const st_file_t *f, const char *key, uint64_t *out, char *err,
                       size_t errlen);

/* Frees the file and sets *pf to NULL; safe on NULL. */
void st_close(st_file_t **pf);

/* Number of elements of a tensor (product of its shape; 1 for ndim 0). */
int64_t st_numel(const st_tensor_t *t);

#endif
