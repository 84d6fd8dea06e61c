/* checkpoints/safetensors.c — see safetensors.h.
 *
 * Reader: the header is parsed by core/json into a DOM, every field is
 * checked and copied into one st_file (names, shapes, metadata in pools of
 * their own), then the DOM is freed. Tensor data stays in the mapping.
 * Loader: resolves a file / index / directory into a name-sorted list of
 * (name, shard, tensor), matches the registry against it, checks everything,
 * and only then converts and uploads.
 * Writer: builds the header in memory exactly as serde_json does in the
 * official library, then streams the tensors through one host buffer. */
#include "checkpoints/safetensors.h"
#include "checkpoints/torch_ckpt.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/json.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little endian; this reader assumes a little-endian host");

#define ST_MAX_HEADER 100000000ull   /* the official MAX_HEADER_SIZE */

/* ---------------------------------------------------------------------- */
/* Dtypes                                                                 */
/* ---------------------------------------------------------------------- */
static const struct { const char *name; int bits; } DTYPES[ST_NDTYPES] = {
    [ST_BOOL] = {"BOOL", 8},         [ST_F4] = {"F4", 4},
    [ST_F6_E2M3] = {"F6_E2M3", 6},   [ST_F6_E3M2] = {"F6_E3M2", 6},
    [ST_U8] = {"U8", 8},             [ST_I8] = {"I8", 8},
    [ST_F8_E5M2] = {"F8_E5M2", 8},   [ST_F8_E4M3] = {"F8_E4M3", 8},
    [ST_F8_E8M0] = {"F8_E8M0", 8},   [ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [ST_I16] = {"I16", 16},          [ST_U16] = {"U16", 16},
    [ST_F16] = {"F16", 16},          [ST_BF16] = {"BF16", 16},
    [ST_I32] = {"I32", 32},          [ST_U32] = {"U32", 32},
    [ST_F32] = {"F32", 32},          [ST_C64] = {"C64", 64},
    [ST_F64] = {"F64", 64},          [ST_I64] = {"I64", 64},
    [ST_U64] = {"U64", 64},
};

const char *st_dtype_name(st_dtype t) { return (unsigned)t < ST_NDTYPES ? DTYPES[t].name : "?"; }
int st_dtype_bits(st_dtype t) { return (unsigned)t < ST_NDTYPES ? DTYPES[t].bits : 0; }

st_dtype st_dtype_from_name(const char *name, size_t len) {
    for (int t = 0; t < ST_NDTYPES; t++)
        if (strlen(DTYPES[t].name) == len && memcmp(DTYPES[t].name, name, len) == 0) return (st_dtype)t;
    return ST_NDTYPES;
}

static int loadable(st_dtype t) { return t == ST_F32 || t == ST_F16 || t == ST_BF16; }

/* ---------------------------------------------------------------------- */
/* The open file                                                          */
/* ---------------------------------------------------------------------- */
typedef struct {
    const char *name;          /* in f->strings */
    st_dtype dtype;
    int ndim;
    const int64_t *shape;      /* in f->dims */
    uint64_t numel, begin, end;
    const uint8_t *ptr;        /* the bytes: f->data + begin, or a torch tensor's */
} st_tensor;

struct st_file {
    char *origin;
    uint8_t *bytes; size_t size; int mapped;   /* the whole file */
    const uint8_t *data; size_t data_size;     /* the buffer after the header */
    st_tensor *t; int n;
    int *by_name;                              /* tensor indices sorted by name */
    int64_t *dims;
    char *strings;
    const char **meta_k, **meta_v; int n_meta;
    int *meta_by_key;
    tc_file *tc;                               /* a torch.save zip served through this interface */
};

/* "[10, 4]"; truncated with "...]" if it does not fit. */
static const char *fmt_shape(char *buf, size_t cap, const int64_t *d, int nd) {
    size_t at = 0;
    buf[at++] = '[';
    for (int i = 0; i < nd; i++) {
        char num[32];
        int k = snprintf(num, sizeof num, "%s%" PRId64, i ? ", " : "", d[i]);
        if (at + (size_t)k + 5 >= cap) { memcpy(buf + at, "...", 3); at += 3; break; }
        memcpy(buf + at, num, (size_t)k); at += (size_t)k;
    }
    buf[at++] = ']';
    buf[at] = 0;
    return buf;
}

/* A JSON value that should be a non-negative integer, for messages. */
static const char *fmt_json_scalar(char *buf, size_t cap, const json_value *v) {
    switch (v->type) {
    case JSON_NUMBER:
        if (v->is_int) snprintf(buf, cap, "%" PRId64, v->integer);
        else if (v->number > -1e17 && v->number < 1e17 && v->number == (double)(int64_t)v->number)
            snprintf(buf, cap, "%.1f", v->number);   /* 2.0, not 2 */
        else snprintf(buf, cap, "%.17g", v->number);
        return buf;
    case JSON_NULL: return "null";
    case JSON_BOOL: return v->boolean ? "true" : "false";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "?";
}

static int get_uint(const json_value *v, uint64_t *out) {
    if (v->type != JSON_NUMBER || !v->is_int || v->integer < 0) return -1;
    *out = (uint64_t)v->integer;
    return 0;
}

/* qsort contexts: the C library's qsort has no user pointer, so the
 * comparators read through a thread-local. */
static _Thread_local const st_file *g_sort_file;
static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(g_sort_file->t[*(const int *)a].name, g_sort_file->t[*(const int *)b].name);
}
static int cmp_meta_key(const void *a, const void *b) {
    return strcmp(g_sort_file->meta_k[*(const int *)a], g_sort_file->meta_k[*(const int *)b]);
}
static int cmp_tensor_offsets(const void *a, const void *b) {
    const st_tensor *x = &g_sort_file->t[*(const int *)a], *y = &g_sort_file->t[*(const int *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return *(const int *)a - *(const int *)b;
}

/* The tensor entry's checks that need only the entry itself. */
static int check_tensor(st_file *f, st_tensor *t, const json_value *v, int64_t *dims) {
    const char *o = f->origin, *nm = t->name;
    char sb[256], vb[64];
    const json_value *dt = json_get(v, "dtype");
    if (!dt) return ar_errorf("%s: tensor '%s': missing 'dtype'", o, nm);
    if (dt->type != JSON_STRING)
        return ar_errorf("%s: tensor '%s': 'dtype' is %s, expected a string", o, nm, fmt_json_scalar(vb, sizeof vb, dt));
    t->dtype = st_dtype_from_name(dt->str, dt->len);
    if (t->dtype == ST_NDTYPES) {
        char list[256]; size_t at = 0;
        for (int k = 0; k < ST_NDTYPES; k++)
            at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", k ? ", " : "", DTYPES[k].name);
        return ar_errorf("%s: tensor '%s': unknown dtype '%.*s' (expected one of %s)", o, nm,
                         dt->len > 64 ? 64 : (int)dt->len, dt->str, list);
    }
    const json_value *sh = json_get(v, "shape");   /* presence and type checked in pass 1 */
    for (size_t k = 0; k < sh->n; k++) {
        uint64_t d;
        if (get_uint(&sh->items[k], &d) != 0)
            return ar_errorf("%s: tensor '%s': shape[%zu] is %s, expected a non-negative integer", o, nm, k,
                             fmt_json_scalar(vb, sizeof vb, &sh->items[k]));
        dims[k] = (int64_t)d;
    }
    const json_value *off = json_get(v, "data_offsets");
    if (!off) return ar_errorf("%s: tensor '%s': missing 'data_offsets'", o, nm);
    if (off->type != JSON_ARRAY || off->n != 2)
        return ar_errorf("%s: tensor '%s': 'data_offsets' is %s%s, expected [begin, end]", o, nm,
                         fmt_json_scalar(vb, sizeof vb, off), off->type == JSON_ARRAY ? " of the wrong length" : "");
    for (int k = 0; k < 2; k++)
        if (get_uint(&off->items[k], k ? &t->end : &t->begin) != 0)
            return ar_errorf("%s: tensor '%s': data_offsets[%d] is %s, expected a non-negative integer", o, nm, k,
                             fmt_json_scalar(vb, sizeof vb, &off->items[k]));
    if (t->end < t->begin)
        return ar_errorf("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin",
                         o, nm, t->begin, t->end);
    uint64_t numel = 1;
    for (int k = 0; k < t->ndim; k++)
        if (__builtin_mul_overflow(numel, (uint64_t)dims[k], &numel))
            return ar_errorf("%s: tensor '%s': shape %s has more than 2^64 elements", o, nm,
                             fmt_shape(sb, sizeof sb, dims, t->ndim));
    t->numel = numel;
    uint64_t bits, bytes;
    if (__builtin_mul_overflow(numel, (uint64_t)DTYPES[t->dtype].bits, &bits))
        return ar_errorf("%s: tensor '%s': shape %s of %s is larger than 2^64 bits", o, nm,
                         fmt_shape(sb, sizeof sb, dims, t->ndim), DTYPES[t->dtype].name);
    if (bits % 8)
        return ar_errorf("%s: tensor '%s': shape %s of %s is not a whole number of bytes (%" PRIu64 " bits)", o, nm,
                         fmt_shape(sb, sizeof sb, dims, t->ndim), DTYPES[t->dtype].name, bits);
    bytes = bits / 8;
    if (t->end - t->begin != bytes)
        return ar_errorf("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] do not match shape %s of %s (%" PRIu64
                         " bytes)", o, nm, t->begin, t->end, fmt_shape(sb, sizeof sb, dims, t->ndim),
                         DTYPES[t->dtype].name, bytes);
    if (t->end > f->data_size)
        return ar_errorf("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the %zu-byte data buffer",
                         o, nm, t->begin, t->end, f->data_size);
    return 0;
}

/* Parses and validates f->bytes[0..size). */
static int st_parse(st_file *f) {
    const char *o = f->origin;
    if (f->size < 8)
        return ar_errorf("%s: file is %zu bytes, too short for the 8-byte header length", o, f->size);
    uint64_t n;
    memcpy(&n, f->bytes, 8);
    if (n > ST_MAX_HEADER)
        return ar_errorf("%s: header length %" PRIu64 " exceeds the limit of %llu bytes", o, n, ST_MAX_HEADER);
    if (n > f->size - 8)
        return ar_errorf("%s: header length %" PRIu64 " runs past the end of the file (%zu bytes follow the length)",
                         o, n, f->size - 8);
    const char *hdr = (const char *)f->bytes + 8;
    f->data = f->bytes + 8 + n;
    f->data_size = f->size - 8 - (size_t)n;
    if (n >= 3 && memcmp(hdr, "\xEF\xBB\xBF", 3) == 0)
        return ar_errorf("%s: header starts with a UTF-8 byte order mark, expected '{'", o);

    char origin[AR_ERROR_MAX / 2];
    snprintf(origin, sizeof origin, "%s: header", o);
    json_doc *doc = json_parse(hdr, (size_t)n, origin);
    if (!doc) return -1;
    int rc = -1;
    const json_value *root = json_root(doc);
    int *order = NULL;
    char vb[64];
    if (root->type != JSON_OBJECT) {
        ar_errorf("%s: header is %s, expected an object", o, fmt_json_scalar(vb, sizeof vb, root));
        goto done;
    }

    /* Pass 1: count tensors, dimensions, metadata and string bytes; check the shapes' types. */
    size_t ntensor = 0, ndims = 0, nmeta = 0, nstr = 0;
    const json_value *meta = NULL;
    for (size_t i = 0; i < root->n; i++) {
        const json_member *m = &root->members[i];
        if (strlen(m->key) != m->key_len) {
            ar_errorf("%s: the name of the header entry at byte %zu contains a NUL character", o, m->value.offset);
            goto done;
        }
        if (strcmp(m->key, "__metadata__") == 0) {
            if (meta) { ar_errorf("%s: \"__metadata__\" appears twice in the header", o); goto done; }
            meta = &m->value;
            if (meta->type == JSON_NULL) continue;
            if (meta->type != JSON_OBJECT) {
                ar_errorf("%s: \"__metadata__\" is %s, expected an object of strings", o, fmt_json_scalar(vb, sizeof vb, meta));
                goto done;
            }
            for (size_t k = 0; k < meta->n; k++) {
                const json_member *e = &meta->members[k];
                if (strlen(e->key) != e->key_len) {
                    ar_errorf("%s: the __metadata__ key of the value at byte %zu contains a NUL character", o, e->value.offset);
                    goto done;
                }
                if (e->value.type != JSON_STRING) {
                    ar_errorf("%s: __metadata__ '%s' is %s, expected a string", o, e->key,
                              fmt_json_scalar(vb, sizeof vb, &e->value));
                    goto done;
                }
                if (strlen(e->value.str) != e->value.len) {
                    ar_errorf("%s: __metadata__ '%s' contains a NUL character", o, e->key);
                    goto done;
                }
                nstr += e->key_len + e->value.len + 2;
            }
            nmeta = meta->n;
            continue;
        }
        const json_value *v = &m->value;
        if (v->type != JSON_OBJECT) {
            ar_errorf("%s: tensor '%s' is %s, expected an object {\"dtype\", \"shape\", \"data_offsets\"}", o, m->key,
                      fmt_json_scalar(vb, sizeof vb, v));
            goto done;
        }
        const json_value *sh = json_get(v, "shape");
        if (!sh) { ar_errorf("%s: tensor '%s': missing 'shape'", o, m->key); goto done; }
        if (sh->type != JSON_ARRAY) {
            ar_errorf("%s: tensor '%s': 'shape' is %s, expected an array of non-negative integers", o, m->key,
                      fmt_json_scalar(vb, sizeof vb, sh));
            goto done;
        }
        if (sh->n > (size_t)INT32_MAX) { ar_errorf("%s: tensor '%s': too many dimensions", o, m->key); goto done; }
        ntensor++;
        ndims += sh->n;
        nstr += m->key_len + 1;
    }
    if (ntensor > (size_t)INT32_MAX || nmeta > (size_t)INT32_MAX) {
        ar_errorf("%s: too many header entries", o);
        goto done;
    }

    f->t = calloc(ntensor ? ntensor : 1, sizeof *f->t);
    f->by_name = malloc((ntensor ? ntensor : 1) * sizeof *f->by_name);
    order = malloc((ntensor ? ntensor : 1) * sizeof *order);
    f->dims = malloc((ndims ? ndims : 1) * sizeof *f->dims);
    f->strings = malloc(nstr ? nstr : 1);
    f->meta_k = malloc((nmeta ? nmeta : 1) * sizeof *f->meta_k);
    f->meta_v = malloc((nmeta ? nmeta : 1) * sizeof *f->meta_v);
    f->meta_by_key = malloc((nmeta ? nmeta : 1) * sizeof *f->meta_by_key);
    if (!f->t || !f->by_name || !order || !f->dims || !f->strings || !f->meta_k || !f->meta_v || !f->meta_by_key) {
        ar_errorf("%s: out of memory for a header of %" PRIu64 " bytes", o, n);
        goto done;
    }

    /* Pass 2: names, metadata, shapes' places. */
    char *s = f->strings;
    int64_t *d = f->dims;
    for (size_t i = 0; i < root->n; i++) {
        const json_member *m = &root->members[i];
        if (&m->value == meta) continue;
        st_tensor *t = &f->t[f->n];
        memcpy(s, m->key, m->key_len + 1); t->name = s; s += m->key_len + 1;
        t->ndim = (int)json_get(&m->value, "shape")->n;
        t->shape = d; d += t->ndim;
        f->by_name[f->n] = f->n;
        f->n++;
    }
    if (meta && meta->type == JSON_OBJECT)
        for (size_t k = 0; k < meta->n; k++) {
            const json_member *e = &meta->members[k];
            memcpy(s, e->key, e->key_len + 1); f->meta_k[k] = s; s += e->key_len + 1;
            memcpy(s, e->value.str, e->value.len + 1); f->meta_v[k] = s; s += e->value.len + 1;
            f->meta_by_key[k] = (int)k;
            f->n_meta++;
        }
    g_sort_file = f;
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_tensor_name);
    qsort(f->meta_by_key, (size_t)f->n_meta, sizeof *f->meta_by_key, cmp_meta_key);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name) == 0) {
            ar_errorf("%s: tensor '%s' appears twice in the header", o, f->t[f->by_name[i]].name);
            goto done;
        }
    for (int i = 1; i < f->n_meta; i++)
        if (strcmp(f->meta_k[f->meta_by_key[i]], f->meta_k[f->meta_by_key[i - 1]]) == 0) {
            ar_errorf("%s: __metadata__ '%s' appears twice", o, f->meta_k[f->meta_by_key[i]]);
            goto done;
        }

    /* Each tensor on its own, in header order. */
    int ti = 0;
    for (size_t i = 0; i < root->n; i++) {
        const json_member *m = &root->members[i];
        if (&m->value == meta) continue;
        st_tensor *t = &f->t[ti];
        if (check_tensor(f, t, &m->value, (int64_t *)t->shape) != 0) goto done;
        order[ti] = ti;
        ti++;
    }

    /* Together: sorted by offsets they must tile the buffer. */
    qsort(order, (size_t)f->n, sizeof *order, cmp_tensor_offsets);
    uint64_t pos = 0;
    for (int i = 0; i < f->n; i++) {
        const st_tensor *t = &f->t[order[i]];
        if (t->begin < pos) {
            const st_tensor *p = &f->t[order[i - 1]];
            ar_errorf("%s: tensors '%s' (data_offsets [%" PRIu64 ", %" PRIu64 "]) and '%s' ([%" PRIu64 ", %" PRIu64
                      "]) overlap", o, p->name, p->begin, p->end, t->name, t->begin, t->end);
            goto done;
        }
        if (t->begin > pos) {
            ar_errorf("%s: bytes [%" PRIu64 ", %" PRIu64 ") of the data buffer belong to no tensor (tensor '%s' starts at %"
                      PRIu64 "); safetensors requires the tensors to cover the buffer without gaps",
                      o, pos, t->begin, t->name, t->begin);
            goto done;
        }
        pos = t->end;
    }
    if (pos != f->data_size) {
        ar_errorf("%s: the tensors end at byte %" PRIu64 " of a %zu-byte data buffer; safetensors allows no bytes after "
                  "the last tensor", o, pos, f->data_size);
        goto done;
    }
    for (int i = 0; i < f->n; i++) f->t[i].ptr = f->data + f->t[i].begin;
    rc = 0;
done:
    free(order);
    json_free(doc);
    return rc;
}

/* A PyTorch zip checkpoint (checkpoints/torch_ckpt.h): its tensors as entries of f. */
static int st_parse_torch(st_file *f) {
    f->tc = tc_open_memory(f->bytes, f->size, f->origin);
    if (!f->tc) return -1;
    int n = tc_count(f->tc);
    f->t = calloc(n ? (size_t)n : 1, sizeof *f->t);
    f->by_name = malloc((n ? (size_t)n : 1) * sizeof *f->by_name);
    if (!f->t || !f->by_name) return ar_errorf("%s: out of memory", f->origin);
    for (int i = 0; i < n; i++) {
        const tc_tensor *x = tc_get(f->tc, i);
        st_tensor *t = &f->t[i];
        t->name = x->name; t->dtype = (st_dtype)x->dtype; t->ndim = x->ndim; t->shape = x->shape;
        t->numel = x->numel; t->begin = 0; t->end = x->nbytes; t->ptr = x->data;
        f->by_name[i] = i;
    }
    f->n = n;
    g_sort_file = f;
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_tensor_name);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name) == 0)
            return ar_errorf("%s: two tensors are both named '%s'", f->origin, f->t[f->by_name[i]].name);
    return 0;
}

/* safetensors, or (PK... / the legacy magic) a PyTorch checkpoint. */
static int st_parse_any(st_file *f) {
    if (tc_is_zip(f->bytes, f->size) || tc_is_legacy(f->bytes, f->size)) return st_parse_torch(f);
    return st_parse(f);
}

void st_close(st_file *f) {
    if (!f) return;
    tc_close(f->tc);
    if (f->mapped) munmap(f->bytes, f->size);
    else free(f->bytes);
    free(f->origin); free(f->t); free(f->by_name); free(f->dims); free(f->strings);
    free(f->meta_k); free(f->meta_v); free(f->meta_by_key);
    free(f);
}

static st_file *st_new(const char *origin) {
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->origin = strdup(origin ? origin : "safetensors"))) {
        free(f);
        ar_errorf("%s: out of memory", origin ? origin : "safetensors");
        return NULL;
    }
    return f;
}

st_file *st_open_memory(const void *data, size_t size, const char *origin) {
    st_file *f = st_new(origin);
    if (!f) return NULL;
    f->bytes = malloc(size ? size : 1);
    if (!f->bytes) { ar_errorf("%s: out of memory copying %zu bytes", f->origin, size); st_close(f); return NULL; }
    if (size) memcpy(f->bytes, data, size);
    f->size = size;
    if (st_parse_any(f) != 0) { st_close(f); return NULL; }
    return f;
}

st_file *st_open(const char *path) {
    st_file *f = st_new(path);
    if (!f) return NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { ar_errorf("%s: cannot open: %s", path, strerror(errno)); st_close(f); return NULL; }
    struct stat sb;
    if (fstat(fd, &sb) != 0) { ar_errorf("%s: cannot stat: %s", path, strerror(errno)); goto fail; }
    if (S_ISDIR(sb.st_mode)) { ar_errorf("%s: is a directory, expected a .safetensors file", path); goto fail; }
    if (S_ISREG(sb.st_mode) && sb.st_size > 0) {
        void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) { f->bytes = p; f->size = (size_t)sb.st_size; f->mapped = 1; }
    }
    if (!f->mapped) {   /* empty, not mappable, or not a regular file: read it */
        size_t cap = 1 << 16;
        f->bytes = malloc(cap);
        if (!f->bytes) { ar_errorf("%s: out of memory", path); goto fail; }
        for (;;) {
            if (f->size == cap) {
                uint8_t *nb = cap > SIZE_MAX / 2 ? NULL : realloc(f->bytes, cap * 2);
                if (!nb) { ar_errorf("%s: out of memory reading the file", path); goto fail; }
                f->bytes = nb; cap *= 2;
            }
            ssize_t r = read(fd, f->bytes + f->size, cap - f->size);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) { ar_errorf("%s: read error: %s", path, strerror(errno)); goto fail; }
            if (r == 0) break;
            f->size += (size_t)r;
        }
    }
    close(fd);
    if (st_parse_any(f) != 0) { st_close(f); return NULL; }
    return f;
fail:
    close(fd);
    st_close(f);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Accessors                                                              */
/* ---------------------------------------------------------------------- */
const char *st_origin(const st_file *f) { return f->origin; }
int st_count(const st_file *f) { return f->n; }
static int valid(const st_file *f, int i) { return f && i >= 0 && i < f->n; }
const char *st_name(const st_file *f, int i) { return valid(f, i) ? f->t[i].name : NULL; }
st_dtype st_get_dtype(const st_file *f, int i) { return valid(f, i) ? f->t[i].dtype : ST_NDTYPES; }
size_t st_numel(const st_file *f, int i) { return valid(f, i) ? (size_t)f->t[i].numel : 0; }

const int64_t *st_shape(const st_file *f, int i, int *ndim) {
    if (!valid(f, i)) return NULL;
    if (ndim) *ndim = f->t[i].ndim;
    return f->t[i].shape;
}

const void *st_data(const st_file *f, int i, size_t *nbytes) {
    if (!valid(f, i)) return NULL;
    if (nbytes) *nbytes = (size_t)(f->t[i].end - f->t[i].begin);
    return f->t[i].ptr;
}

int st_find(const st_file *f, const char *name) {
    int lo = 0, hi = f->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return -1;
}

int st_metadata_count(const st_file *f) { return f->n_meta; }
const char *st_metadata_key(const st_file *f, int i) { return i >= 0 && i < f->n_meta ? f->meta_k[i] : NULL; }
const char *st_metadata_value(const st_file *f, int i) { return i >= 0 && i < f->n_meta ? f->meta_v[i] : NULL; }
const char *st_metadata(const st_file *f, const char *key) {
    int lo = 0, hi = f->n_meta;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(f->meta_k[f->meta_by_key[mid]], key);
        if (c == 0) return f->meta_v[f->meta_by_key[mid]];
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Conversion                                                             */
/* ---------------------------------------------------------------------- */
/* IEEE half -> single, exact for every input (subnormals normalised, inf and
 * nan payloads kept). */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, bits;
    if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);
    else if (e != 0) bits = sign | ((e + 112u) << 23) | (m << 13);
    else if (m == 0) bits = sign;
    else {                              /* subnormal: m * 2^-24 */
        uint32_t ex = 113;              /* the exponent of 2^-14, biased, +1 for the first shift */
        do { m <<= 1; ex--; } while (!(m & 0x400u));
        bits = sign | (ex << 23) | ((m & 0x3ffu) << 13);
    }
    float x;
    memcpy(&x, &bits, 4);
    return x;
}

static inline float bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float x;
    memcpy(&x, &bits, 4);
    return x;
}

int st_read_f32(const st_file *f, int i, float *dst, size_t numel) {
    if (!valid(f, i)) return ar_errorf("%s: no tensor number %d (the file has %d)", f ? f->origin : "?", i, f ? f->n : 0);
    const st_tensor *t = &f->t[i];
    if (!loadable(t->dtype))
        return ar_errorf("%s: tensor '%s' is %s; only F32, F16 and BF16 can be read as float32",
                         f->origin, t->name, DTYPES[t->dtype].name);
    if (numel != t->numel)
        return ar_errorf("%s: tensor '%s' has %" PRIu64 " elements, the caller expected %zu",
                         f->origin, t->name, t->numel, numel);
    const uint8_t *src = t->ptr;
    if (t->dtype == ST_F32) {
        if (numel) memcpy(dst, src, numel * 4);
    } else if (t->dtype == ST_F16) {
        for (size_t j = 0; j < numel; j++) dst[j] = f16_to_f32((uint16_t)(src[2 * j] | src[2 * j + 1] << 8));
    } else {
        for (size_t j = 0; j < numel; j++) dst[j] = bf16_to_f32((uint16_t)(src[2 * j] | src[2 * j + 1] << 8));
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Loading into the registry                                              */
/* ---------------------------------------------------------------------- */
typedef struct { const char *name; int shard, tensor, used; } ld_entry;

typedef struct {
    char *origin;          /* what messages call the checkpoint */
    st_file **shards; int n_shards;
    ld_entry *e; int n;    /* sorted by name */
    json_doc *index;       /* owns the names in index mode */
} ld_source;

static void ld_free(ld_source *s) {
    for (int i = 0; i < s->n_shards; i++) st_close(s->shards[i]);
    free(s->shards); free(s->e); free(s->origin);
    json_free(s->index);
    memset(s, 0, sizeof *s);
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const ld_entry *)a)->name, ((const ld_entry *)b)->name);
}

static int ld_find(const ld_source *s, const char *name) {
    int lo = 0, hi = s->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(s->e[mid].name, name);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1; else hi = mid;
    }
    return -1;
}

static int is_file(const char *p) { struct stat sb; return stat(p, &sb) == 0 && S_ISREG(sb.st_mode); }

static char *path_join(const char *dir, size_t dlen, const char *name) {
    size_t nl = strlen(name);
    char *p = malloc(dlen + nl + 2);
    if (!p) { ar_errorf("out of memory"); return NULL; }
    memcpy(p, dir, dlen);
    p[dlen] = '/';
    memcpy(p + dlen + 1, name, nl + 1);
    return p;
}

static int shard_path_ok(const char *s) {
    if (!*s || *s == '/') return 0;
    for (const char *c = s; *c; ) {       /* no ".." component */
        const char *e = strchr(c, '/');
        size_t l = e ? (size_t)(e - c) : strlen(c);
        if (l == 2 && c[0] == '.' && c[1] == '.') return 0;
        if (!e) break;
        c = e + 1;
    }
    return 1;
}

typedef struct { const char *file; int entry; } shard_ref;
static int cmp_shard_ref(const void *a, const void *b) {
    const shard_ref *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : x->entry - y->entry;
}

static int ld_open_index(ld_source *s, const char *path) {
    s->index = json_parse_file(path);
    if (!s->index) return -1;
    const json_value *root = json_root(s->index);
    const json_value *wm = json_get(root, "weight_map");
    if (!wm || wm->type != JSON_OBJECT)
        return ar_errorf("%s: expected an object with a \"weight_map\" object {tensor name: shard file}", path);
    if (wm->n > (size_t)INT32_MAX) return ar_errorf("%s: weight_map too large", path);
    s->e = calloc(wm->n ? wm->n : 1, sizeof *s->e);
    shard_ref *refs = malloc((wm->n ? wm->n : 1) * sizeof *refs);
    if (!s->e || !refs) { free(refs); return ar_errorf("%s: out of memory", path); }
    for (size_t i = 0; i < wm->n; i++) {
        const json_member *m = &wm->members[i];
        if (strlen(m->key) != m->key_len) { free(refs); return ar_errorf("%s: a weight_map key contains a NUL character", path); }
        if (m->value.type != JSON_STRING || strlen(m->value.str) != m->value.len) {
            char vb[64];
            free(refs);
            return ar_errorf("%s: weight_map '%s' is %s, expected a shard file name", path, m->key,
                             m->value.type == JSON_STRING ? "a string with a NUL character"
                                                          : fmt_json_scalar(vb, sizeof vb, &m->value));
        }
        if (!shard_path_ok(m->value.str)) {
            free(refs);
            return ar_errorf("%s: weight_map '%s': shard '%s' must be a path relative to the index's directory "
                             "(no leading '/', no '..')", path, m->key, m->value.str);
        }
        s->e[i].name = m->key;
        refs[i].file = m->value.str; refs[i].entry = (int)i;
    }
    s->n = (int)wm->n;
    qsort(refs, wm->n, sizeof *refs, cmp_shard_ref);
    int nshard = 0;
    for (size_t i = 0; i < wm->n; i++) if (i == 0 || strcmp(refs[i].file, refs[i - 1].file) != 0) nshard++;
    s->shards = calloc(nshard ? (size_t)nshard : 1, sizeof *s->shards);
    if (!s->shards) { free(refs); return ar_errorf("%s: out of memory", path); }
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) : 1;
    const char *dir = slash ? path : ".";
    if (slash == path) dlen = 0;   /* index in "/" */
    for (size_t i = 0; i < wm->n; i++) {
        if (i == 0 || strcmp(refs[i].file, refs[i - 1].file) != 0) {
            char *sp = path_join(dir, dlen, refs[i].file);
            if (!sp) { free(refs); return ar_error_prefix("%s: ", path); }
            s->shards[s->n_shards] = st_open(sp);
            free(sp);
            if (!s->shards[s->n_shards]) { free(refs); return ar_error_prefix("%s: ", path); }
            s->n_shards++;
        }
        ld_entry *e = &s->e[refs[i].entry];
        st_file *sf = s->shards[s->n_shards - 1];
        e->shard = s->n_shards - 1;
        e->tensor = st_find(sf, e->name);
        if (e->tensor < 0) {
            ar_errorf("%s: weight_map puts '%s' in %s, which has no such tensor", path, e->name, sf->origin);
            free(refs);
            return -1;
        }
    }
    free(refs);
    qsort(s->e, (size_t)s->n, sizeof *s->e, cmp_entry_name);
    for (int i = 1; i < s->n; i++)
        if (strcmp(s->e[i].name, s->e[i - 1].name) == 0)
            return ar_errorf("%s: weight_map lists '%s' twice", path, s->e[i].name);
    return 0;
}

static int ld_open_file(ld_source *s, const char *path) {
    s->shards = calloc(1, sizeof *s->shards);
    if (!s->shards) return ar_errorf("%s: out of memory", path);
    st_file *f = s->shards[0] = st_open(path);
    if (!f) return -1;
    s->n_shards = 1;
    s->e = calloc(f->n ? (size_t)f->n : 1, sizeof *s->e);
    if (!s->e) return ar_errorf("%s: out of memory", path);
    for (int i = 0; i < f->n; i++) {   /* by_name is already sorted */
        s->e[i].name = f->t[f->by_name[i]].name;
        s->e[i].tensor = f->by_name[i];
    }
    s->n = f->n;
    return 0;
}

static int ld_open(ld_source *s, const char *path) {
    memset(s, 0, sizeof *s);
    struct stat sb;
    if (stat(path, &sb) != 0) return ar_errorf("%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        size_t dl = strlen(path);
        while (dl > 1 && path[dl - 1] == '/') dl--;
        char *idx = path_join(path, dl, "model.safetensors.index.json");
        char *one = path_join(path, dl, "model.safetensors");
        char *tidx = path_join(path, dl, "pytorch_model.bin.index.json");
        char *tone = path_join(path, dl, "pytorch_model.bin");
        int rc;
        if (!idx || !one || !tidx || !tone) rc = -1;
        else if (is_file(idx)) { s->origin = idx; idx = NULL; rc = ld_open_index(s, s->origin); }
        else if (is_file(one)) { s->origin = one; one = NULL; rc = ld_open_file(s, s->origin); }
        else if (is_file(tidx)) { s->origin = tidx; tidx = NULL; rc = ld_open_index(s, s->origin); }
        else if (is_file(tone)) { s->origin = tone; tone = NULL; rc = ld_open_file(s, s->origin); }
        else rc = ar_errorf("%s: directory holds none of model.safetensors.index.json, model.safetensors, "
                            "pytorch_model.bin.index.json, pytorch_model.bin", path);
        free(idx); free(one); free(tidx); free(tone);
        return rc;
    }
    s->origin = strdup(path);
    if (!s->origin) return ar_errorf("%s: out of memory", path);
    size_t l = strlen(path);
    if (l >= 5 && strcmp(path + l - 5, ".json") == 0) return ld_open_index(s, path);
    return ld_open_file(s, path);
}

static void copy_name(char *dst, const char *src) {
    size_t l = strlen(src);
    if (l >= ST_REPORT_NAME_MAX) l = ST_REPORT_NAME_MAX - 1;
    memcpy(dst, src, l);
    dst[l] = 0;
}

/* Appends "'name'" to a message list, ", " separated, while room remains. */
static void list_add(char *buf, size_t cap, int *count, const char *name) {
    size_t at = strlen(buf);
    if (*count < ST_REPORT_NAMES && at + strlen(name) + 8 < cap)
        snprintf(buf + at, cap - at, "%s'%s'", *count ? ", " : "", name);
    else if (*count == ST_REPORT_NAMES && at + 8 < cap)
        snprintf(buf + at, cap - at, ", ...");
    (*count)++;
}

int st_load_params_ex(const char *path, ar_params *ps, int flags, st_rename_fn rename_fn, void *ctx,
                      st_report *rep) {
    st_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    if (!ps->w) return ar_errorf("%s: the parameter registry is not allocated (call params_alloc first)", path);
    ld_source src;
    if (ld_open(&src, path) != 0) { ld_free(&src); return -1; }
    rep->n_shards = src.n_shards;
    const char *o = src.origin;
    int rc = -1;
    int *match = malloc((ps->n ? (size_t)ps->n : 1) * sizeof *match);
    float *stage = NULL;
    char bad[600] = "";
    int nbad = 0;
    if (!match) { ar_errorf("%s: out of memory", o); goto done; }

    size_t max_numel = 0;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        char mapped[1024];
        const char *name = p->name;
        if (rename_fn) {
            if (rename_fn(ctx, p->name, mapped, sizeof mapped) != 0) { ar_error_prefix("%s: renaming '%s': ", o, p->name); goto done; }
            name = mapped;
        }
        int k = ld_find(&src, name);
        match[i] = k;
        if (k < 0) {
            if (rep->n_missing < ST_REPORT_NAMES) copy_name(rep->missing[rep->n_missing], p->name);
            rep->n_missing++;
            if (p->trainable) rep->n_missing_trainable++;
            int allowed = (flags & (p->trainable ? ST_ALLOW_MISSING_TRAINABLE : ST_ALLOW_MISSING_FROZEN)) != 0;
            if (!allowed) list_add(bad, sizeof bad, &nbad, p->name);
            continue;
        }
        src.e[k].used = 1;
        st_file *sf = src.shards[src.e[k].shard];
        const st_tensor *t = &sf->t[src.e[k].tensor];
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            int64_t want[4];
            char a[256], b[256];
            for (int d = 0; d < p->ndim; d++) want[d] = p->shape[d];
            ar_errorf("%s: tensor '%s': checkpoint shape %s does not match the model's %s", sf->origin, t->name,
                      fmt_shape(a, sizeof a, t->shape, t->ndim), fmt_shape(b, sizeof b, want, p->ndim));
            goto done;
        }
        if (!loadable(t->dtype)) {
            ar_errorf("%s: tensor '%s' is %s; only F32, F16 and BF16 load into float32 weights", sf->origin, t->name,
                      DTYPES[t->dtype].name);
            goto done;
        }
        if (p->numel > max_numel) max_numel = p->numel;
    }
    char extra[600] = "";
    int nextra = 0;
    for (int k = 0; k < src.n; k++) {
        if (src.e[k].used) continue;
        if (rep->n_unexpected < ST_REPORT_NAMES) copy_name(rep->unexpected[rep->n_unexpected], src.e[k].name);
        rep->n_unexpected++;
        list_add(extra, sizeof extra, &nextra, src.e[k].name);
    }
    if (nbad) {
        ar_errorf("%s: the checkpoint lacks %d tensor%s of the model: %s", o, nbad, nbad == 1 ? "" : "s", bad);
        goto done;
    }
    if (nextra && (flags & ST_ERROR_UNEXPECTED)) {
        ar_errorf("%s: the checkpoint has %d tensor%s the model lacks: %s", o, nextra, nextra == 1 ? "" : "s", extra);
        goto done;
    }
    stage = malloc(max_numel ? max_numel * sizeof(float) : 1);
    if (!stage) { ar_errorf("%s: out of memory for a %zu-float staging buffer", o, max_numel); goto done; }

    /* Everything checked: from here on nothing fails. */
    for (int i = 0; i < ps->n; i++) {
        if (match[i] < 0) continue;
        const ar_param *p = &ps->p[i];
        st_file *sf = src.shards[src.e[match[i]].shard];
        if (st_read_f32(sf, src.e[match[i]].tensor, stage, p->numel) != 0) goto done;   /* cannot happen */
        if (params_upload(ps, p, stage)) goto done;   /* a bf16-stored tensor: rounded (host memory) */
        rep->n_loaded++;
    }
    rc = 0;
done:
    free(stage);
    free(match);
    ld_free(&src);
    return rc;
}

int st_load_params(const char *path, ar_params *ps, int flags, st_report *rep) {
    return st_load_params_ex(path, ps, flags, NULL, NULL, rep);
}

int st_list_names(const char *path, void (*fn)(void *ctx, const char *name), void *ctx) {
    ld_source src;
    if (ld_open(&src, path) != 0) { ld_free(&src); return -1; }
    for (int k = 0; k < src.n; k++) fn(ctx, src.e[k].name);
    ld_free(&src);
    return 0;
}

void st_report_format(const st_report *rep, char *buf, size_t cap) {
    if (!cap) return;
    size_t at = 0;
#define PUT(...) do { if (at < cap) { int k_ = snprintf(buf + at, cap - at, __VA_ARGS__); if (k_ > 0) at += (size_t)k_; } } while (0)
    PUT("loaded %d from %d file%s, missing %d (%d trainable)", rep->n_loaded, rep->n_shards,
        rep->n_shards == 1 ? "" : "s", rep->n_missing, rep->n_missing_trainable);
    for (int i = 0; i < rep->n_missing && i < ST_REPORT_NAMES; i++) PUT("%s'%s'", i ? ", " : ": ", rep->missing[i]);
    if (rep->n_missing > ST_REPORT_NAMES) PUT(", ...");
    PUT("; unexpected %d", rep->n_unexpected);
    for (int i = 0; i < rep->n_unexpected && i < ST_REPORT_NAMES; i++) PUT("%s'%s'", i ? ", " : ": ", rep->unexpected[i]);
    if (rep->n_unexpected > ST_REPORT_NAMES) PUT(", ...");
#undef PUT
}

/* ---------------------------------------------------------------------- */
/* Writer                                                                 */
/* ---------------------------------------------------------------------- */
typedef struct { char *p; size_t n, cap; int oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) { b->oom = 1; return; }
        b->p = np; b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Strict UTF-8 (what Rust's str accepts). */
static int utf8_ok(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len; unsigned cp, min;
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (i + len > n) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

/* A JSON string the way serde_json writes it: '"' and '\\' escaped, control
 * characters as \b \t \n \f \r or \u00xx (lower-case hex), the rest as is. */
static void sb_json_string(sbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char e[8];
        switch (*c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        default:
            if (*c < 0x20) {
                memcpy(e, "\\u00", 4); e[4] = hex[*c >> 4]; e[5] = hex[*c & 15];
                sb_put(b, e, 6);
            } else sb_put(b, (const char *)c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

typedef struct { const ar_param *p; char *name; } sv_entry;
static int cmp_sv(const void *a, const void *b) {
    return strcmp(((const sv_entry *)a)->name, ((const sv_entry *)b)->name);
}

static int write_all(FILE *fp, const void *p, size_t n) { return fwrite(p, 1, n, fp) == n ? 0 : -1; }

int st_save(const char *path, const ar_params *ps, st_select_fn select, st_rename_fn rename_fn, void *ctx,
            const char *const *meta_kv, int n_meta) {
    static const char *const DEFAULT_META[2] = {"format", "pt"};
    if (!meta_kv) { meta_kv = DEFAULT_META; n_meta = 1; }
    if (n_meta < 0) return ar_errorf("%s: negative metadata count %d", path, n_meta);
    if (!ps->w) return ar_errorf("%s: the parameter registry is not allocated", path);
    for (int k = 0; k < n_meta; k++) {
        const char *key = meta_kv[2 * k], *val = meta_kv[2 * k + 1];
        if (!key || !val) return ar_errorf("%s: metadata pair %d has a NULL key or value", path, k);
        if (!utf8_ok((const unsigned char *)key, strlen(key)) || !utf8_ok((const unsigned char *)val, strlen(val)))
            return ar_errorf("%s: metadata '%s' is not valid UTF-8", path, key);
        for (int j = 0; j < k; j++)
            if (strcmp(meta_kv[2 * j], key) == 0) return ar_errorf("%s: metadata key '%s' given twice", path, key);
    }

    int rc = -1, n = 0;
    sv_entry *e = calloc(ps->n ? (size_t)ps->n : 1, sizeof *e);
    sbuf hb = {0};
    float *stage = NULL;
    FILE *fp = NULL;
    char *tmp = NULL;
    if (!e) { ar_errorf("%s: out of memory", path); goto done; }
    size_t max_numel = 0;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        if (select && !select(ctx, p)) continue;
        char mapped[1024];
        const char *name = p->name;
        if (rename_fn) {
            if (rename_fn(ctx, p->name, mapped, sizeof mapped) != 0) { ar_error_prefix("%s: renaming '%s': ", path, p->name); goto done; }
            mapped[sizeof mapped - 1] = 0;
            name = mapped;
        }
        if (!utf8_ok((const unsigned char *)name, strlen(name))) {
            ar_errorf("%s: tensor name '%s' is not valid UTF-8", path, name);
            goto done;
        }
        if (strcmp(name, "__metadata__") == 0) { ar_errorf("%s: a tensor may not be named \"__metadata__\"", path); goto done; }
        if (!(e[n].name = strdup(name))) { ar_errorf("%s: out of memory", path); goto done; }
        e[n++].p = p;
        if (p->numel > max_numel) max_numel = p->numel;
    }
    qsort(e, (size_t)n, sizeof *e, cmp_sv);
    for (int i = 1; i < n; i++)
        if (strcmp(e[i].name, e[i - 1].name) == 0) {
            ar_errorf("%s: two tensors would be written as '%s'", path, e[i].name);
            goto done;
        }

    /* The header, byte for byte as serde_json writes the official Metadata. */
    sb_puts(&hb, "{");
    if (n_meta) {
        sb_puts(&hb, "\"__metadata__\":{");
        for (int k = 0; k < n_meta; k++) {
            if (k) sb_puts(&hb, ",");
            sb_json_string(&hb, meta_kv[2 * k]);
            sb_puts(&hb, ":");
            sb_json_string(&hb, meta_kv[2 * k + 1]);
        }
        sb_puts(&hb, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const ar_param *p = e[i].p;
        char num[64];
        if (n_meta || i) sb_puts(&hb, ",");
        sb_json_string(&hb, e[i].name);
        sb_puts(&hb, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < p->ndim; d++) {
            snprintf(num, sizeof num, "%s%d", d ? "," : "", p->shape[d]);
            sb_puts(&hb, num);
        }
        uint64_t end = off + (uint64_t)p->numel * 4;
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, end);
        sb_puts(&hb, num);
        off = end;
    }
    sb_puts(&hb, "}");
    while (hb.n % 8) sb_puts(&hb, " ");
    if (hb.oom) { ar_errorf("%s: out of memory building the header", path); goto done; }

    stage = malloc(max_numel ? max_numel * sizeof(float) : 1);
    tmp = malloc(strlen(path) + 32);
    if (!stage || !tmp) { ar_errorf("%s: out of memory", path); goto done; }
    sprintf(tmp, "%s.tmp%ld", path, (long)getpid());
    if (ar_mkdir_parent(path) != 0) { ar_error_prefix("%s: ", path); goto done; }
    fp = fopen(tmp, "wb");
    if (!fp) { ar_errorf("%s: cannot create: %s", tmp, strerror(errno)); goto done; }
    uint64_t hlen = hb.n;
    int werr = write_all(fp, &hlen, 8) || write_all(fp, hb.p, hb.n);
    for (int i = 0; i < n && !werr; i++) {
        const ar_param *p = e[i].p;
        if (params_download(ps, p, stage)) goto done;
        werr = write_all(fp, stage, p->numel * sizeof(float));
    }
    if (!werr) werr = fflush(fp) != 0 || fsync(fileno(fp)) != 0;
    if (werr) { ar_errorf("%s: write error: %s", tmp, strerror(errno)); goto done; }
    int cerr = fclose(fp);
    fp = NULL;
    if (cerr != 0) { ar_errorf("%s: write error: %s", tmp, strerror(errno)); goto done; }
    if (rename(tmp, path) != 0) { ar_errorf("%s: cannot rename %s over it: %s", path, tmp, strerror(errno)); goto done; }
    free(tmp);
    tmp = NULL;
    {   /* make the rename durable: fsync the directory (best effort) */
        const char *slash = strrchr(path, '/');
        char dir[4096];
        if (!slash) strcpy(dir, ".");
        else if ((size_t)(slash - path) < sizeof dir) { memcpy(dir, path, (size_t)(slash - path)); dir[slash - path] = 0; if (!dir[0]) strcpy(dir, "/"); }
        else dir[0] = 0;
        int dfd = dir[0] ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (dfd >= 0) { fsync(dfd); close(dfd); }
    }
    rc = 0;
done:
    if (fp) fclose(fp);
    if (tmp) unlink(tmp);
    free(tmp);
    free(stage);
    free(hb.p);
    if (e) for (int i = 0; i < n; i++) free(e[i].name);
    free(e);
    return rc;
}
