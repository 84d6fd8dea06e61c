/* checkpoints/inspect_cmd.c — see inspect_cmd.h. Collects (name, dtype,
 * shape, sum) rows from the file's reader, sorts them by name, prints them.
 * Depends on checkpoints/safetensors.h (which also reads PyTorch zips),
 * core/json.h, core/error.h, HDF5. */
#include "checkpoints/inspect_cmd.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "core/json.h"

#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct { char *name; char dtype[16]; char shape[256]; double sum; int has_sum; } row;
typedef struct { row *r; size_t n, cap; } rows;

static void fmt_shape(char *buf, size_t cap, const int64_t *d, int nd) {
    size_t at = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < nd && at + 32 < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%" PRId64, i ? ", " : "", d[i]);
    snprintf(buf + at, cap - at, "]");
}

static row *add_row(rows *R, const char *name) {
    if (R->n == R->cap) {
        size_t nc = R->cap ? 2 * R->cap : 64;
        row *q = realloc(R->r, nc * sizeof *q);
        if (!q) return NULL;
        R->r = q; R->cap = nc;
    }
    row *r = &R->r[R->n];
    memset(r, 0, sizeof *r);
    if (!(r->name = strdup(name))) return NULL;
    R->n++;
    return r;
}

static void rows_free(rows *R) {
    for (size_t i = 0; i < R->n; i++) free(R->r[i].name);
    free(R->r);
}

/* The sum of tensor i of f in double precision. */
static int tensor_sum(const st_file *f, int i, double *sum, int *has) {
    st_dtype t = st_get_dtype(f, i);
    size_t n = st_numel(f, i), nb = 0;
    const uint8_t *p = st_data(f, i, &nb);
    double s = 0;
    *has = 1;
    if (t == ST_F32 || t == ST_F16 || t == ST_BF16) {
        float *buf = malloc(n ? n * sizeof *buf : 1);
        if (!buf) return ar_errorf("%s: out of memory for tensor '%s'", st_origin(f), st_name(f, i));
        if (st_read_f32(f, i, buf, n)) { free(buf); return -1; }
        for (size_t k = 0; k < n; k++) s += buf[k];
        free(buf);
    } else {
#define SUM(T) do { for (size_t k = 0; k < n; k++) { T x; memcpy(&x, p + k * sizeof x, sizeof x); s += (double)x; } } while (0)
        switch (t) {
        case ST_F64: SUM(double); break;
        case ST_I64: SUM(int64_t); break;
        case ST_U64: SUM(uint64_t); break;
        case ST_I32: SUM(int32_t); break;
        case ST_U32: SUM(uint32_t); break;
        case ST_I16: SUM(int16_t); break;
        case ST_U16: SUM(uint16_t); break;
        case ST_I8: SUM(int8_t); break;
        case ST_U8: SUM(uint8_t); break;
        case ST_BOOL: for (size_t k = 0; k < n; k++) s += p[k] != 0; break;
        default: *has = 0; break;
        }
#undef SUM
    }
    (void)nb;
    *sum = s;
    return 0;
}

static int add_tensor(rows *R, const st_file *f, int i) {
    row *r = add_row(R, st_name(f, i));
    if (!r) return ar_errorf("out of memory");
    int nd = 0;
    const int64_t *sh = st_shape(f, i, &nd);
    snprintf(r->dtype, sizeof r->dtype, "%s", st_dtype_name(st_get_dtype(f, i)));
    fmt_shape(r->shape, sizeof r->shape, sh, nd);
    return tensor_sum(f, i, &r->sum, &r->has_sum);
}

static int list_file(rows *R, const char *path) {
    st_file *f = st_open(path);
    if (!f) return -1;
    for (int i = 0; i < st_count(f); i++)
        if (add_tensor(R, f, i)) { st_close(f); return -1; }
    st_close(f);
    return 0;
}

static int list_index(rows *R, const char *path) {
    json_doc *d = json_parse_file(path);
    if (!d) return -1;
    const json_value *wm = json_get(json_root(d), "weight_map");
    if (!wm || wm->type != JSON_OBJECT) { json_free(d); return ar_errorf("%s: no \"weight_map\" object (not a sharded index)", path); }
    const char *slash = strrchr(path, '/');
    int rc = 0;
    /* one shard open at a time: members grouped by shard in a first pass over distinct shard names */
    for (size_t i = 0; i < wm->n && !rc; i++) {
        const json_value *v = &wm->members[i].value;
        if (v->type != JSON_STRING || v->str[0] == '/' || strstr(v->str, "..")) {
            rc = ar_errorf("%s: weight_map '%s' is not a relative shard file name", path, wm->members[i].key);
            break;
        }
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++) seen = !strcmp(wm->members[j].value.str, v->str);
        if (seen) continue;
        char sp[4096];
        snprintf(sp, sizeof sp, "%.*s%s", slash ? (int)(slash - path + 1) : 0, path, v->str);
        st_file *f = st_open(sp);
        if (!f) { rc = ar_error_prefix("%s: ", path); break; }
        for (size_t j = i; j < wm->n && !rc; j++) {
            if (strcmp(wm->members[j].value.str, v->str)) continue;
            int k = st_find(f, wm->members[j].key);
            if (k < 0) rc = ar_errorf("%s: weight_map puts '%s' in %s, which has no such tensor", path, wm->members[j].key, sp);
            else rc = add_tensor(R, f, k);
        }
        st_close(f);
    }
    json_free(d);
    return rc;
}

/* ---- HDF5 ---- */
typedef struct { rows *R; const char *path; int rc; } h5ctx;

static herr_t h5_visit(hid_t obj, const char *name, const H5O_info_t *info, void *op) {
    h5ctx *c = op;
    if (info->type != H5O_TYPE_DATASET) return 0;
    hid_t ds = H5Dopen2(obj, name, H5P_DEFAULT);
    if (ds < 0) { c->rc = ar_errorf("%s: cannot open dataset '%s'", c->path, name); return -1; }
    hid_t ty = H5Dget_type(ds), sp = H5Dget_space(ds);
    H5T_class_t cl = H5Tget_class(ty);
    size_t es = H5Tget_size(ty);
    if (cl != H5T_FLOAT && cl != H5T_INTEGER) { H5Tclose(ty); H5Sclose(sp); H5Dclose(ds); return 0; }
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[32];
    int64_t d64[32];
    if (nd < 0 || nd > 32 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        c->rc = ar_errorf("%s: dataset '%s' has an unreadable shape", c->path, name);
        H5Tclose(ty); H5Sclose(sp); H5Dclose(ds);
        return -1;
    }
    size_t n = 1;
    for (int i = 0; i < nd; i++) { d64[i] = (int64_t)dims[i]; n *= (size_t)dims[i]; }
    row *r = add_row(c->R, name);
    double *buf = r ? malloc(n ? n * sizeof *buf : 1) : NULL;
    if (!buf) { c->rc = ar_errorf("%s: out of memory", c->path); H5Tclose(ty); H5Sclose(sp); H5Dclose(ds); return -1; }
    if (cl == H5T_FLOAT) snprintf(r->dtype, sizeof r->dtype, "F%zu", es * 8);
    else snprintf(r->dtype, sizeof r->dtype, "%s%zu", H5Tget_sign(ty) == H5T_SGN_NONE ? "U" : "I", es * 8);
    fmt_shape(r->shape, sizeof r->shape, d64, nd);
    herr_t e = n ? H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) : 0;
    H5Tclose(ty); H5Sclose(sp); H5Dclose(ds);
    if (e < 0) { free(buf); c->rc = ar_errorf("%s: cannot read dataset '%s' (corrupt file?)", c->path, name); return -1; }
    double s = 0;
    for (size_t k = 0; k < n; k++) s += buf[k];
    free(buf);
    r->sum = s; r->has_sum = 1;
    return 0;
}

static int list_hdf5(rows *R, const char *path) {
    hid_t f = -1;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); } H5E_END_TRY;
    if (f < 0) return ar_errorf("%s: cannot open as HDF5 (truncated or corrupt?)", path);
    h5ctx c = {R, path, 0};
    herr_t e;
    H5E_BEGIN_TRY { e = H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, h5_visit, &c); } H5E_END_TRY;
    H5Fclose(f);
    if (c.rc) return -1;
    if (e < 0) return ar_errorf("%s: cannot walk the HDF5 file (corrupt?)", path);
    return 0;
}

static int cmp_row(const void *a, const void *b) { return strcmp(((const row *)a)->name, ((const row *)b)->name); }

static int is_file(const char *p) { struct stat sb; return stat(p, &sb) == 0 && S_ISREG(sb.st_mode); }

int ckpt_inspect(const char *path, FILE *out) {
    struct stat sb;
    if (stat(path, &sb) != 0) return ar_errorf("%s: cannot open: no such file or directory", path);
    char buf[4096];
    if (S_ISDIR(sb.st_mode)) {
        static const char *const cand[] = {"model.safetensors.index.json", "model.safetensors",
                                           "pytorch_model.bin.index.json", "pytorch_model.bin"};
        size_t i;
        for (i = 0; i < 4; i++) {
            snprintf(buf, sizeof buf, "%s/%s", path, cand[i]);
            if (is_file(buf)) break;
        }
        if (i == 4) return ar_errorf("%s: directory holds no model.safetensors(.index.json) nor pytorch_model.bin(.index.json)", path);
        path = buf;
    }
    rows R = {0};
    int rc;
    size_t l = strlen(path);
    uint8_t magic[8] = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp) return ar_errorf("%s: cannot open", path);
    size_t got = fread(magic, 1, 8, fp);
    fclose(fp);
    if (got == 8 && memcmp(magic, "\x89HDF\r\n\x1a\n", 8) == 0) rc = list_hdf5(&R, path);
    else if (l >= 5 && !strcmp(path + l - 5, ".json")) rc = list_index(&R, path);
    else rc = list_file(&R, path);
    if (rc == 0) {
        qsort(R.r, R.n, sizeof *R.r, cmp_row);
        for (size_t i = 0; i < R.n; i++) {
            const row *r = &R.r[i];
            if (r->has_sum) fprintf(out, "%s\t%s\t%s\t%.17g\n", r->name, r->dtype, r->shape, r->sum);
            else fprintf(out, "%s\t%s\t%s\t-\n", r->name, r->dtype, r->shape);
        }
    }
    rows_free(&R);
    return rc;
}

int ckpt_inspect_main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout,
                "usage: anyref inspect FILE...\n"
                "  every tensor of a .safetensors file, a PyTorch checkpoint (.pth/.bin), a sharded index\n"
                "  (*.index.json), a model directory or an anyref HDF5 checkpoint, sorted by name:\n"
                "  name<TAB>dtype<TAB>[shape]<TAB>sum (float64)\n");
        return argc < 2 ? 2 : 0;
    }
    int status = 0;
    for (int i = 1; i < argc; i++) {
        if (argc > 2) printf("# %s\n", argv[i]);
        if (ckpt_inspect(argv[i], stdout)) {
            fprintf(stderr, "anyref inspect: %s\n", ar_error());
            status = 1;
        }
    }
    return status;
}
