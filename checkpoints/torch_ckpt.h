/* checkpoints/torch_ckpt.h — PyTorch checkpoints (the zip format of
 * torch.save since PyTorch 1.6: `.pth`, `pytorch_model*.bin`) read in C,
 * without Python and without executing anything.
 *
 * FILE LAYOUT (what torch.save writes through its miniz writer):
 *   a zip archive whose entries all start with one directory "<archive>/":
 *     <archive>/data.pkl        the pickled object (protocol 2)
 *     <archive>/data/<key>      one entry per storage: its raw little-endian bytes
 *     <archive>/version         "3\n" etc. (not read)
 *     <archive>/byteorder       "little" (newer writers; "big" is refused)
 *   In data.pkl each tensor is
 *     torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
 *                                     requires_grad, backward_hooks[, metadata])
 *   (or torch._utils._rebuild_parameter(<that>, requires_grad, hooks)) where
 *   storage is a persistent id ('storage', torch.<T>Storage, key, location,
 *   numel); dicts are dict or collections.OrderedDict (its _metadata dropped).
 *
 * ZIP: the end-of-central-directory record (and the zip64 records when a
 * field is saturated), every central-directory entry and the local header of
 * each entry read are checked against the file size before use; entries are
 * stored (method 0) or deflated (method 8, inflated with zlib; the inflated
 * size may not exceed 1032x the compressed size); encrypted entries, other
 * methods and names with NUL are refused. data.pkl's CRC-32 is checked; the
 * storages' are not (they can be gigabytes and are read lazily by the OS).
 *
 * PICKLE: data/pickle.h in its permissive mode with a whitelist of globals
 * (the two rebuild functions, collections.OrderedDict, torch.{Float, Half,
 * BFloat16, Double, Long, Int, Short, Char, Byte, Bool}Storage); a pickle
 * naming any other global is refused with a message naming it:
 *   "x.pth: archive/data.pkl: GLOBAL at offset 2: global 'posix.system' is not allowed (...)"
 *
 * TENSORS: the object is walked depth-first and every tensor found is listed
 * under its dotted path: a flat state_dict gives its keys as they are; nested
 * dicts ({"model": {...}}) give "model.<key>"; list / tuple items their index;
 * other values (ints, strings, None) are skipped; a bare tensor is "tensor".
 * Dtypes map to the safetensors names (FloatStorage F32, HalfStorage F16,
 * BFloat16Storage BF16, DoubleStorage F64, LongStorage I64, IntStorage I32,
 * ShortStorage I16, CharStorage I8, ByteStorage U8, BoolStorage BOOL).
 * Each tensor's view (storage_offset, size, stride, all non-negative) must
 * lie inside its storage (numel elements; the entry must hold at least
 * numel * element size bytes); two tensors may share a storage. A C-contiguous
 * view points into the file's bytes (no copy); any other view (a transpose, a
 * strided slice) is gathered into a contiguous copy of its own at open; a
 * view with more than 16 x its storage's elements + 4096 (stride-0 broadcast)
 * is refused, as is an object graph whose shared containers would be walked
 * more than 4 x (values in the pickle) + 1024 times.
 *
 * Errors: NULL + ar_error(), messages starting with the origin (file name).
 * The legacy (pre-1.6) torch.save format is detected and refused with a
 * message saying how to convert it.
 *
 * checkpoints/safetensors.h's st_open serves these tensors through st_file,
 * so every loader (st_load_params*, model.init, sam.init, clip.init, ...)
 * accepts .pth / .bin files and pytorch_model.bin.index.json.
 * Depends on data/pickle.h, core/error.h, zlib and libc.
 */
#ifndef ANYREF_CHECKPOINTS_TORCH_CKPT_H
#define ANYREF_CHECKPOINTS_TORCH_CKPT_H

#include <stddef.h>
#include <stdint.h>

/* The dtype codes are checkpoints/safetensors.h's st_dtype values. */
typedef struct {
    const char *name;        /* dotted path, NUL-terminated */
    int dtype;               /* an st_dtype */
    int ndim;
    const int64_t *shape;    /* ndim entries (non-NULL also for a scalar) */
    uint64_t numel;
    const uint8_t *data;     /* numel * element size contiguous little-endian bytes */
    size_t nbytes;
} tc_tensor;

typedef struct tc_file tc_file;

/* Nonzero if bytes look like a zip archive ("PK\3\4" or an empty "PK\5\6"). */
int tc_is_zip(const void *bytes, size_t size);
/* Nonzero if bytes look like the legacy (pre-1.6) torch.save format. */
int tc_is_legacy(const void *bytes, size_t size);

/* Parses a torch.save zip held in bytes[0, size). The bytes are NOT copied:
 * they must stay valid and unchanged until tc_close. `origin` names them in
 * messages. Tensors come in the order the pickle lists them (each once). */
tc_file *tc_open_memory(const void *bytes, size_t size, const char *origin);
void tc_close(tc_file *f);          /* NULL ok */
int tc_count(const tc_file *f);
const tc_tensor *tc_get(const tc_file *f, int i);   /* NULL if out of range */

#endif
