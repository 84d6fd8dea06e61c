/* core/h5util.h — HDF5 error handling shared by checkpoints/ and data/ (the
 * only part of core/ that uses HDF5): silence the library's own error-stack
 * printing around a call, and fetch its most specific message for ours. */
#ifndef ANYREF_H5UTIL_H
#define ANYREF_H5UTIL_H
#include <hdf5.h>

typedef struct { H5E_auto2_t fn; void *data; } h5_quiet;
void h5_quiet_begin(h5_quiet *q);       /* saves and switches off automatic printing */
void h5_quiet_end(const h5_quiet *q);   /* restores it */
/* The most specific description on HDF5's error stack (then clears it);
 * thread-local storage, valid until the next call. */
const char *h5_detail(void);
/* "[2,3,4]" for messages. */
void h5_shape_str(char *buf, size_t cap, int ndim, const hsize_t *dims);
/* "float32", "int64", "uint8", "string", ... for messages. */
void h5_dtype_str(char *buf, size_t cap, hid_t t);
#endif
