/* core/h5util.c — see h5util.h. */
#include "core/h5util.h"
#include <stdio.h>

void h5_quiet_begin(h5_quiet *q) {
    q->fn = NULL; q->data = NULL;
    H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}
void h5_quiet_end(const h5_quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->fn, q->data); }

static __thread char t_detail[256];
static herr_t detail_cb(unsigned n, const H5E_error2_t *e, void *ud) {
    (void)ud;
    if (n == 0 && e->desc && e->desc[0]) snprintf(t_detail, sizeof t_detail, "%s", e->desc);
    return 0;
}
const char *h5_detail(void) {
    t_detail[0] = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, detail_cb, NULL);
    H5Eclear2(H5E_DEFAULT);
    return t_detail[0] ? t_detail : "unknown HDF5 error";
}

void h5_shape_str(char *buf, size_t cap, int ndim, const hsize_t *dims) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%llu", i ? "," : "", (unsigned long long)dims[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

void h5_dtype_str(char *buf, size_t cap, hid_t t) {
    size_t bits = H5Tget_size(t) * 8;
    switch (H5Tget_class(t)) {
    case H5T_FLOAT:    snprintf(buf, cap, "float%zu", bits); break;
    case H5T_INTEGER:  snprintf(buf, cap, "%s%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int", bits); break;
    case H5T_STRING:   snprintf(buf, cap, "string"); break;
    case H5T_COMPOUND: snprintf(buf, cap, "compound"); break;
    case H5T_ENUM:     snprintf(buf, cap, "enum"); break;
    default:           snprintf(buf, cap, "HDF5 type class %d", (int)H5Tget_class(t)); break;
    }
}
