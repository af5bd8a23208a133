/* safetensors: the tensor file format of Hugging Face (and PyTorch, through the safetensors
 * package), read and written as its reference implementation does.
 *
 * A file is: an unsigned 64-bit little-endian header length N; N bytes of UTF-8 JSON, an object
 * mapping each tensor name to {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin,
 * end]} (byte offsets into the data buffer, which starts right after the header), plus an
 * optional "__metadata__" object of string values; then the data buffer, each tensor's
 * elements row-major and little-endian. The header may end in spaces (writers pad it to a
 * multiple of 8 so the data stays aligned).
 *
 * Reading validates as the reference does and refuses, naming the file, the tensor and the
 * bound: a header length over 100,000,000 bytes or past the end of the file, a header that is
 * not UTF-8 or not a JSON object, an unknown dtype, a shape whose element count times the
 * dtype's size differs from end - begin or overflows, offsets that are not non-negative
 * integers, tensors that overlap, leave a hole or do not end exactly at the end of the file,
 * duplicate names, and metadata values that are not strings. */
#ifndef TESSERA_SAFETENSORS_H
#define TESSERA_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include "context.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The reference's dtypes in its order (by increasing alignment; the writer puts the widest
 * first). F4 and F6_* are sub-byte (their tensors hold a whole number of bytes). */
typedef enum tsr_st_dtype {
    TSR_ST_BOOL, TSR_ST_F4, TSR_ST_F6_E2M3, TSR_ST_F6_E3M2, TSR_ST_U8, TSR_ST_I8, TSR_ST_F8_E5M2,
    TSR_ST_F8_E4M3, TSR_ST_F8_E8M0, TSR_ST_I16, TSR_ST_U16, TSR_ST_F16, TSR_ST_BF16, TSR_ST_I32,
    TSR_ST_U32, TSR_ST_F32, TSR_ST_C64, TSR_ST_F64, TSR_ST_I64, TSR_ST_U64,
    TSR_ST_DTYPE_COUNT
} tsr_st_dtype;

/* "F32", "BF16", ... as written in the header; "?" for a value out of range. */
const char *tsr_st_dtype_name(tsr_st_dtype dtype);
/* Bits per element (4, 6, 8, 16, 32 or 64); 0 for a value out of range. */
unsigned tsr_st_dtype_bits(tsr_st_dtype dtype);
/* The dtype named `name` (exact, case-sensitive), or TSR_ERR_PARSE. */
tsr_status tsr_st_dtype_parse(const char *name, tsr_st_dtype *out);

/* The largest header the reader accepts, as the reference implementation. */
#define TSR_ST_MAX_HEADER 100000000u

typedef struct tsr_st_tensor {
    const char *name;        /* UTF-8, NUL-terminated */
    tsr_st_dtype dtype;
    int ndim;                /* 0: a scalar (one element) */
    const uint64_t *shape;   /* ndim sizes (NULL when ndim is 0) */
    uint64_t count;          /* elements: the product of shape (1 for a scalar) */
    size_t bytes;            /* end - begin */
    uint64_t offset;         /* begin, from the start of the data buffer */
    const void *data;        /* little-endian elements inside the file image; may be unaligned */
} tsr_st_tensor;

typedef struct tsr_st_meta {
    const char *key, *value;
} tsr_st_meta;

typedef struct tsr_safetensors {
    size_t count;            /* tensors, in file order (by data offset; ties by name) */
    const tsr_st_tensor *tensors;
    size_t meta_count;       /* "__metadata__" entries, sorted by key */
    const tsr_st_meta *meta;
    size_t header_bytes;     /* N */
    size_t file_bytes;
    struct tsr_st_image *image_; /* private: the mapping or buffer, and the strings */
} tsr_safetensors;

/* Maps (or reads) `path` and validates it. Missing file -> TSR_ERR_NOT_FOUND; unreadable ->
 * TSR_ERR_IO; shorter than its header says -> TSR_ERR_TRUNCATED; anything else wrong ->
 * TSR_ERR_CORRUPT (or TSR_ERR_PARSE for JSON that does not parse). Close with
 * tsr_safetensors_close. A mapped file must not be truncated while open (replacing it by
 * rename, as the writer does, is safe). */
tsr_status tsr_safetensors_open(tsr_context *ctx, const char *path, tsr_safetensors **out);
/* The same from a file image in memory, which the caller keeps unchanged and alive until
 * tsr_safetensors_close; `name` stands for the file name in error details. */
tsr_status tsr_safetensors_open_memory(tsr_context *ctx, const char *name, const void *data,
                                       size_t size, tsr_safetensors **out);
/* Accepts NULL. */
void tsr_safetensors_close(tsr_context *ctx, tsr_safetensors *st);

/* Tensor by name, NULL if absent. */
const tsr_st_tensor *tsr_safetensors_find(const tsr_safetensors *st, const char *name);
/* Metadata value by key, NULL if absent. */
const char *tsr_safetensors_meta(const tsr_safetensors *st, const char *key);
/* Copies tensor `t`'s elements into out[0..count) as float32: F32 exactly, F16 and BF16
 * exactly (they widen), F64 rounded to nearest even (overflow gives infinity). `count` must
 * equal t->count (TSR_ERR_SHAPE otherwise); other dtypes are TSR_ERR_UNSUPPORTED. */
tsr_status tsr_safetensors_to_f32(tsr_context *ctx, const tsr_st_tensor *t, float *out,
                                  size_t count);

/* ---- writing ---- */

typedef struct tsr_st_writer tsr_st_writer;

tsr_status tsr_st_writer_create(tsr_context *ctx, tsr_st_writer **out);
/* Accepts NULL. */
void tsr_st_writer_free(tsr_context *ctx, tsr_st_writer *w);
/* Adds tensor `name` (UTF-8, not "__metadata__", unique) of `dtype` and shape[0..ndim) (ndim
 * 0..1024, 0 for a scalar; each size at most 2^53) whose little-endian bytes are
 * data[0..bytes); `bytes` must be the shape's element count times the dtype's size. The data
 * is not copied: it must stay unchanged until the save.
 * Errors: TSR_ERR_INVALID_ARG (name, dtype), TSR_ERR_SHAPE (size mismatch or overflow). */
tsr_status tsr_st_writer_add(tsr_context *ctx, tsr_st_writer *w, const char *name,
                             tsr_st_dtype dtype, int ndim, const uint64_t *shape,
                             const void *data, size_t bytes);
/* Adds float32 values x[0..count of shape) stored as `dtype`: F32 (bit-exact), F64, F16 or
 * BF16 (rounded to nearest even; overflow gives infinity; a NaN stays a NaN of the same sign).
 * Not copied either: converted while saving. */
tsr_status tsr_st_writer_add_f32(tsr_context *ctx, tsr_st_writer *w, const char *name,
                                 tsr_st_dtype dtype, int ndim, const uint64_t *shape,
                                 const float *x);
/* Sets "__metadata__"[key] = value (both UTF-8, copied; setting a key again replaces it). */
tsr_status tsr_st_writer_set_meta(tsr_context *ctx, tsr_st_writer *w, const char *key,
                                  const char *value);
/* Writes `path` atomically (a temp file beside it, fsync, rename, fsync of the folder; on
 * failure the previous file is untouched and no temp file remains), laid out as the reference
 * writer does: tensors sorted by dtype, widest first, then by name; compact JSON with the
 * metadata first (keys sorted); the header padded with spaces to a multiple of 8. The writer
 * can be saved again or freed afterwards. */
tsr_status tsr_st_writer_save(tsr_context *ctx, const tsr_st_writer *w, const char *path);

/* ---- a model's parameters as PyTorch's (lib/io/export.c) ----
 *
 * The image models map onto a torch.nn.Sequential, one module per layer, in order, with the
 * model's logits as its output (tessera's softmax cross-entropy is nn.CrossEntropyLoss):
 *   dense:N      nn.Linear(in, N), preceded by an nn.Flatten() when its input is not flat
 *                (tessera's dense flattens, nn.Linear does not); "weight" [N, in] as tessera's
 *   convKHxKW:F  nn.Conv2d(C, F, (KH, KW), stride=S, padding=(P, P)); "weight" [F, C, KH, KW]
 *   poolK/sS     nn.MaxPool2d(K, stride=S)
 *   relu, dropout:P, flatten, embed:D   nn.ReLU(), nn.Dropout(P), nn.Flatten(),
 *                nn.Embedding(vocab, D) ("weight" [vocab, D])
 * A conv or pool whose input is flat gets an nn.Unflatten(1, (C, H, W)) first. A tensor is
 * named "<module index>.<weight|bias>" as nn.Sequential's state_dict names it: tessera's mlp
 * "dense:256,relu,dense:128,relu,dense:100,relu,dense:10" on a 1x28x28 input is
 * nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), ...), its tensors "1.weight"
 * [256, 784], "1.bias", "3.weight", ... A residual add has no nn.Sequential equivalent: every
 * call below refuses a model with one (TSR_ERR_UNSUPPORTED naming the layer). */

/* The Python text of the model's nn.Sequential ("nn.Sequential(nn.Flatten(), ...)", torch.nn
 * imported as nn) into buf[0..size), terminated; *needed (may be NULL) receives its length.
 * Too small a buffer: TSR_ERR_INVALID_ARG (call with size 0 to learn the length). */
tsr_status tsr_model_torch_module(tsr_context *ctx, const tsr_model *model, char *buf,
                                  size_t size, size_t *needed);
/* The state_dict name of parameter tensor `tensor` (tsr_model_param_tensor's index). */
tsr_status tsr_model_torch_name(tsr_context *ctx, const tsr_model *model, size_t tensor,
                                char name[64]);
/* Writes the flat parameters params[0..count) (count = tsr_model_param_count) to `path` as F32
 * tensors under their state_dict names, with "__metadata__": "format" "pt", "tessera_model"
 * (the spec), "input_shape" ("[1, 28, 28]"), "input_dtype" ("float32" or "int32"), "classes",
 * "pytorch_module" (tsr_model_torch_module's text), then meta[0..meta_count) (which may
 * replace those). Atomic, as tsr_st_writer_save. */
tsr_status tsr_model_save_safetensors(tsr_context *ctx, const tsr_model *model,
                                      const float *params, size_t count, const tsr_st_meta *meta,
                                      size_t meta_count, const char *path);
/* Reads such a file into the flat parameters params[0..count). The file must hold exactly the
 * model's tensors, by name, of the model's shapes, as F32 (or F16, BF16, F64: converted as
 * tsr_safetensors_to_f32); otherwise TSR_ERR_MISMATCH naming the file, the first mismatch (a
 * missing tensor, one the model does not have, a wrong shape or dtype) and how many there are,
 * and params is untouched. Metadata is not consulted. */
tsr_status tsr_model_load_safetensors(tsr_context *ctx, const tsr_model *model, const char *path,
                                      float *params, size_t count);

#ifdef __cplusplus
}
#endif
#endif
