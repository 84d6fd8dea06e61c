/* checkpoints/safetensors.h — the safetensors format: reader, sharded loading
 * into the parameter registry, writer.
 *
 * File layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON (the
 * header), then the data buffer. The header is an object: an optional
 * "__metadata__" {str: str} (or null) and, per tensor,
 *     "<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [b, e]}
 * with b, e byte offsets into the data buffer (e exclusive), C order, little endian.
 *
 * The reader accepts what the official library (huggingface/safetensors 0.8,
 * read_metadata + Metadata::validate) accepts, checking:
 *   the file holds >= 8 bytes; N <= 100000000; 8 + N <= file size; the header is
 *   valid UTF-8 JSON (no byte order mark) and an object; "__metadata__" is null
 *   or an object of strings; every tensor entry is an object with a known dtype
 *   name, a shape of non-negative integers and data_offsets [b, e] of two
 *   non-negative integers with b <= e; the element count (overflow-checked)
 *   times the dtype size is a whole number of bytes equal to e - b; e lies
 *   inside the buffer; and, sorted by offsets, the tensors tile the buffer
 *   exactly: the first starts at 0, each starts where the previous ends (no
 *   overlap, no gap), the last ends at the end of the file.
 * Stricter than the official library on three points, on purpose: a tensor
 * name (or metadata key) given twice is an error (the official parser keeps
 * one silently), names and metadata strings may not contain NUL (they are C
 * strings here), and a dimension above 2^63-1 is refused (a file could only
 * carry it next to a zero dimension).
 *
 * Every dtype name of safetensors 0.8 is recognised, so st_count/st_name/
 * st_get_dtype list any file; st_read_f32 converts F32, F16 (subnormals, inf,
 * nan) and BF16 to float32 exactly and refuses the others with a message
 * naming the tensor.
 *
 * Errors: -1 / NULL + ar_error(), every message starting with the file name
 * and naming the tensor or field, e.g.
 *   "model.safetensors: tensor 'lm_head.weight': data_offsets [0, 100] do not
 *    match shape [10, 4] of F32 (160 bytes)"
 *
 * Files are mapped read-only (mmap); a file truncated by another process while
 * open is outside what this code can defend against (SIGBUS).
 * Depends on core/ (error, json, fs), kernels/kernels.h (k_upload/k_download)
 * and model/params.h.
 */
#ifndef ANYREF_CHECKPOINTS_SAFETENSORS_H
#define ANYREF_CHECKPOINTS_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "model/params.h"

/* The official Dtype enum, in its order (ascending alignment; the writer sorts
 * by it, descending, then by name). */
typedef enum {
    ST_BOOL, ST_F4, ST_F6_E2M3, ST_F6_E3M2, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3,
    ST_F8_E8M0, ST_F8_E4M3FNUZ, ST_F8_E5M2FNUZ, ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32, ST_C64, ST_F64, ST_I64, ST_U64,
    ST_NDTYPES
} st_dtype;

const char *st_dtype_name(st_dtype t);   /* "F32", ...; "?" out of range */
int st_dtype_bits(st_dtype t);           /* 4 for F4, 6 for F6_*, 8 ... 64; 0 out of range */
/* ST_NDTYPES if `name` (len bytes) is no dtype name. */
st_dtype st_dtype_from_name(const char *name, size_t len);

/* ---------------------------------------------------------------------- */
/* Reader                                                                 */
/* ---------------------------------------------------------------------- */
typedef struct st_file st_file;

/* Maps and validates a file. NULL + ar_error on any problem. */
st_file *st_open(const char *path);
/* The same on bytes in memory (copied; `origin` names them in messages). */
st_file *st_open_memory(const void *data, size_t size, const char *origin);
void st_close(st_file *f);              /* NULL ok */

const char *st_origin(const st_file *f);   /* the path or origin given */
int st_count(const st_file *f);             /* tensors, in header order */
const char *st_name(const st_file *f, int i);   /* NULL if i is out of range */
int st_find(const st_file *f, const char *name);   /* index, or -1 (no error set) */
st_dtype st_get_dtype(const st_file *f, int i);    /* ST_NDTYPES if i is out of range */
/* Dimensions (ndim may be 0 for a scalar; the pointer is then non-NULL but
 * not to be read). NULL if i is out of range. */
const int64_t *st_shape(const st_file *f, int i, int *ndim);
size_t st_numel(const st_file *f, int i);   /* product of the shape; 1 for a scalar */
/* The tensor's raw little-endian bytes inside the file and their count. */
const void *st_data(const st_file *f, int i, size_t *nbytes);

/* Converts tensor i to float32 into dst (host memory, numel floats). numel
 * must equal st_numel. F32/F16/BF16 only; -1 + ar_error otherwise. */
int st_read_f32(const st_file *f, int i, float *dst, size_t numel);

/* "__metadata__": value of `key` (NULL if absent), and iteration. */
const char *st_metadata(const st_file *f, const char *key);
int st_metadata_count(const st_file *f);
const char *st_metadata_key(const st_file *f, int i);
const char *st_metadata_value(const st_file *f, int i);

/* ---------------------------------------------------------------------- */
/* Loading into the parameter registry                                    */
/* ---------------------------------------------------------------------- */
enum {
    ST_ALLOW_MISSING_TRAINABLE = 1,   /* e.g. LoRA A/B absent from a base checkpoint */
    ST_ALLOW_MISSING_FROZEN    = 2,
    ST_ALLOW_MISSING           = 3,
    ST_ERROR_UNEXPECTED        = 4,   /* checkpoint tensors the registry lacks are an error */
};

#define ST_REPORT_NAMES 8
#define ST_REPORT_NAME_MAX 160
typedef struct {
    int n_loaded;              /* registry tensors filled from the checkpoint */
    int n_missing;             /* registry tensors the checkpoint lacks ... */
    int n_missing_trainable;   /* ... of which trainable */
    int n_unexpected;          /* checkpoint tensors no registry tensor maps to */
    int n_shards;              /* files read */
    /* the first ST_REPORT_NAMES of each, registry / checkpoint names (truncated) */
    char missing[ST_REPORT_NAMES][ST_REPORT_NAME_MAX];
    char unexpected[ST_REPORT_NAMES][ST_REPORT_NAME_MAX];
} st_report;

/* Maps a registry name to the name in a file (e.g. "base_model.model." + name).
 * Writes a NUL-terminated name into out[cap]; 0, or -1 + ar_error. */
typedef int (*st_rename_fn)(void *ctx, const char *name, char *out, size_t cap);

/* Fills the registry's weights (ps->w, after params_alloc) from a checkpoint.
 * `path` is a .safetensors file, a sharded index (*.json with a "weight_map"
 * {tensor name: shard file relative to the index's directory}), or a directory
 * holding model.safetensors.index.json or model.safetensors (tried in that order).
 * Every registry tensor present in the checkpoint is loaded: its shape must
 * equal the registry's exactly and its dtype must be F32, F16 or BF16
 * (converted exactly). With an index, its weight_map is the checkpoint's list
 * of tensors (a shard's tensors it does not name are ignored) and every name
 * in it must exist in its shard. Registry tensors absent from the checkpoint are an
 * error unless `flags` allows them (ST_ALLOW_MISSING_*); checkpoint tensors
 * the registry lacks are only reported unless ST_ERROR_UNEXPECTED.
 *
 * All or nothing: every file is opened and validated, every presence, shape
 * and dtype check passes and the staging buffer is allocated BEFORE the first
 * weight is written, so on error (-1 + ar_error) ps->w is unchanged.
 * `rep` (may be NULL) is filled on success and on a missing/unexpected error. */
int st_load_params(const char *path, ar_params *ps, int flags, st_report *rep);
/* The same with a registry-name -> checkpoint-name mapping (NULL = identity). */
int st_load_params_ex(const char *path, ar_params *ps, int flags, st_rename_fn rename_fn,
                      void *ctx, st_report *rep);
/* Calls fn(ctx, name) for every tensor name of the checkpoint at `path`,
 * resolved as st_load_params_ex resolves it (file, index, directory); the
 * names are valid during the call only. 0, or -1 + ar_error. */
int st_list_names(const char *path, void (*fn)(void *ctx, const char *name), void *ctx);
/* One line, e.g. "loaded 290, missing 64 (64 trainable): 'a', ...; unexpected 0". */
void st_report_format(const st_report *rep, char *buf, size_t cap);

/* ---------------------------------------------------------------------- */
/* Writer                                                                 */
/* ---------------------------------------------------------------------- */
/* Nonzero keeps tensor p. */
typedef int (*st_select_fn)(void *ctx, const ar_param *p);

/* Writes the selected registry tensors (select NULL = all) as F32 under
 * their names mapped by `rename_fn` (NULL = identity; both callbacks get ctx).
 * Metadata: meta_kv holds n_meta key/value pairs (meta_kv[2k], meta_kv[2k+1]),
 * written in that order; meta_kv == NULL means {"format": "pt"}; a non-NULL
 * meta_kv with n_meta == 0 writes no "__metadata__".
 * The header is what the official writer produces: tensors sorted by name
 * (all are F32), compact JSON, padded with spaces to a multiple of 8 bytes, so
 * the file is byte-identical to safetensors.torch.save_file(tensors, path,
 * metadata) whenever the metadata has at most one key (the official writer
 * emits several metadata keys in hash order).
 * Atomic: written to "<path>.tmp<pid>", fsync'ed, renamed over path; the
 * parent directories are created. 0, or -1 + ar_error (path left untouched). */
int st_save(const char *path, const ar_params *ps, st_select_fn select, st_rename_fn rename_fn,
            void *ctx, const char *const *meta_kv, int n_meta);

#endif
