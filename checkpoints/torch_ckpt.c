/* checkpoints/torch_ckpt.c — see torch_ckpt.h.
 *
 * Open: zip directory -> entry table (name, data range, method, sizes);
 * data.pkl (inflated if needed, CRC checked) -> data/pickle.h permissive
 * tree; the tree walked into the tensor list, each view validated against
 * its storage entry and, if not C-contiguous, gathered into a buffer of its
 * own. Storages are inflated only if deflated, once each, on first use.
 * Depends on data/pickle.h, core/error.h, checkpoints/safetensors.h (the
 * st_dtype values only), zlib.
 */
#include "checkpoints/torch_ckpt.h"
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "data/pickle.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "torch storages are read as little endian");

#define TC_MAX_NDIM 64
#define TC_MAX_ENTRIES 10000000u
#define TC_MAX_NAME 4096

typedef struct {
    const char *name; size_t name_len;   /* in the file's bytes (not NUL-terminated) */
    uint64_t off;                        /* of the data */
    uint64_t csize, usize;
    uint32_t crc;
    int method;
    uint8_t *inflated;                   /* method 8, once read */
} tc_entry;

typedef struct { tc_entry *e; int dtype; uint64_t numel; const uint8_t *data; } tc_storage;

struct tc_file {
    char *origin;
    const uint8_t *bytes; size_t size;
    tc_entry *ent; size_t n_ent;
    char *prefix; size_t prefix_len;     /* "<archive>/" */
    tc_tensor *t; int n, cap;
    uint8_t **owned; int n_owned, cap_owned;   /* gathered views, names, shapes */
};

/* ---------------------------------------------------------------------- */
static uint64_t le(const uint8_t *p, int n) {
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = (x << 8) | p[i];
    return x;
}

int tc_is_zip(const void *bytes, size_t size) {
    return size >= 4 && (memcmp(bytes, "PK\3\4", 4) == 0 || memcmp(bytes, "PK\5\6", 4) == 0);
}

int tc_is_legacy(const void *bytes, size_t size) {
    /* PROTO 2, LONG1 of 10 bytes: the magic number 0x1950a86a20f9469cfc6c */
    static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    return size >= sizeof magic && memcmp(bytes, magic, sizeof magic) == 0;
}

static void *own(tc_file *f, size_t n) {
    if (f->n_owned == f->cap_owned) {
        int nc = f->cap_owned ? 2 * f->cap_owned : 16;
        uint8_t **q = realloc(f->owned, (size_t)nc * sizeof *q);
        if (!q) return NULL;
        f->owned = q; f->cap_owned = nc;
    }
    uint8_t *p = malloc(n ? n : 1);
    if (p) f->owned[f->n_owned++] = p;
    return p;
}

/* ---------------------------------------------------------------------- */
/* Zip directory                                                          */
/* ---------------------------------------------------------------------- */
static int read_zip(tc_file *f) {
    const char *o = f->origin;
    const uint8_t *b = f->bytes;
    size_t size = f->size;
    if (size < 22) return ar_errorf("%s: %zu bytes, too short for a zip archive", o, size);
    size_t eocd = (size_t)-1;
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0;
    for (size_t p = size - 22 + 1; p-- > lo;)
        if (le(b + p, 4) == 0x06054b50u && p + 22 + le(b + p + 20, 2) <= size) { eocd = p; break; }
    if (eocd == (size_t)-1)
        return ar_errorf("%s: no zip end-of-central-directory record (truncated or not a torch.save file)", o);
    uint64_t n_ent = le(b + eocd + 10, 2), cd_size = le(b + eocd + 12, 4), cd_off = le(b + eocd + 16, 4);
    if (le(b + eocd + 4, 2) != 0 || le(b + eocd + 6, 2) != 0 || le(b + eocd + 8, 2) != n_ent)
        return ar_errorf("%s: multi-disk zip archives are not supported", o);
    if (n_ent == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
        if (eocd < 20 || le(b + eocd - 20, 4) != 0x07064b50u)
            return ar_errorf("%s: zip64 end-of-central-directory locator missing", o);
        uint64_t z = le(b + eocd - 20 + 8, 8);
        if (z > size || size - z < 56 || le(b + z, 4) != 0x06064b50u)
            return ar_errorf("%s: zip64 end-of-central-directory record at %" PRIu64 " is invalid", o, z);
        n_ent = le(b + z + 32, 8); cd_size = le(b + z + 40, 8); cd_off = le(b + z + 48, 8);
    }
    if (cd_off > size || cd_size > size - cd_off)
        return ar_errorf("%s: central directory [%" PRIu64 ", +%" PRIu64 ") runs past the end of the %zu-byte file "
                         "(truncated?)", o, cd_off, cd_size, size);
    if (n_ent > TC_MAX_ENTRIES || n_ent > cd_size / 46)
        return ar_errorf("%s: %" PRIu64 " zip entries do not fit a %" PRIu64 "-byte central directory", o, n_ent, cd_size);
    f->ent = calloc(n_ent ? n_ent : 1, sizeof *f->ent);
    if (!f->ent) return ar_errorf("%s: out of memory", o);
    uint64_t p = cd_off, end = cd_off + cd_size;
    for (uint64_t i = 0; i < n_ent; i++) {
        if (end - p < 46 || le(b + p, 4) != 0x02014b50u)
            return ar_errorf("%s: zip central directory entry %" PRIu64 " at %" PRIu64 " is invalid", o, i, p);
        const uint8_t *h = b + p;
        uint64_t flags = le(h + 8, 2), method = le(h + 10, 2), crc = le(h + 16, 4);
        uint64_t csize = le(h + 20, 4), usize = le(h + 24, 4);
        uint64_t nl = le(h + 28, 2), xl = le(h + 30, 2), cl = le(h + 32, 2), loff = le(h + 42, 4);
        if (end - p - 46 < nl + xl + cl)
            return ar_errorf("%s: zip central directory entry %" PRIu64 " runs past the directory", o, i);
        const char *name = (const char *)h + 46;
        if (memchr(name, 0, nl)) return ar_errorf("%s: zip entry %" PRIu64 " has a NUL in its name", o, i);
        /* zip64 extra field: the saturated fields, in the order usize, csize, offset */
        const uint8_t *x = h + 46 + nl, *xe = x + xl;
        while (xe - x >= 4) {
            uint64_t id = le(x, 2), sz = le(x + 2, 2);
            if ((uint64_t)(xe - x - 4) < sz) return ar_errorf("%s: zip entry '%.*s': extra field runs past its end", o, (int)nl, name);
            if (id == 1) {
                const uint8_t *q = x + 4, *qe = x + 4 + sz;
                uint64_t *fld[3] = {&usize, &csize, &loff};
                uint64_t sat[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu};
                for (int k = 0; k < 3; k++)
                    if (*fld[k] == sat[k]) {
                        if (qe - q < 8) return ar_errorf("%s: zip entry '%.*s': zip64 extra field too short", o, (int)nl, name);
                        *fld[k] = le(q, 8); q += 8;
                    }
            }
            x += 4 + sz;
        }
        tc_entry *e = &f->ent[f->n_ent];
        e->name = name; e->name_len = nl;
        e->csize = csize; e->usize = usize; e->crc = (uint32_t)crc; e->method = (int)method;
        if (flags & 1) return ar_errorf("%s: zip entry '%.*s' is encrypted", o, (int)nl, name);
        if (method != 0 && method != 8)
            return ar_errorf("%s: zip entry '%.*s' uses compression method %" PRIu64 " (only stored and deflated are read)",
                             o, (int)nl, name, method);
        if (method == 0 && csize != usize)
            return ar_errorf("%s: zip entry '%.*s' is stored but its sizes differ (%" PRIu64 " vs %" PRIu64 ")",
                             o, (int)nl, name, csize, usize);
        if (loff > size || size - loff < 30 || le(b + loff, 4) != 0x04034b50u)
            return ar_errorf("%s: zip entry '%.*s': local header offset %" PRIu64 " is invalid (truncated file?)",
                             o, (int)nl, name, loff);
        uint64_t dat = loff + 30 + le(b + loff + 26, 2) + le(b + loff + 28, 2);
        if (dat > size || csize > size - dat)
            return ar_errorf("%s: zip entry '%.*s': data [%" PRIu64 ", +%" PRIu64 ") runs past the end of the %zu-byte file "
                             "(truncated?)", o, (int)nl, name, dat, csize, size);
        e->off = dat;
        f->n_ent++;
        p += 46 + nl + xl + cl;
    }
    return 0;
}

static tc_entry *find_entry(tc_file *f, const char *suffix) {
    size_t sl = strlen(suffix);
    for (size_t i = 0; i < f->n_ent; i++) {
        tc_entry *e = &f->ent[i];
        if (e->name_len == f->prefix_len + sl && memcmp(e->name, f->prefix, f->prefix_len) == 0 &&
            memcmp(e->name + f->prefix_len, suffix, sl) == 0)
            return e;
    }
    return NULL;
}

/* The bytes of an entry (inflated on first use). */
static const uint8_t *entry_bytes(tc_file *f, tc_entry *e) {
    if (e->method == 0) return f->bytes + e->off;
    if (e->inflated) return e->inflated;
    const char *o = f->origin;
    if (e->usize > e->csize * 1032 + 64) {
        ar_errorf("%s: zip entry '%.*s' claims %" PRIu64 " bytes from %" PRIu64 " deflated ones (more than deflate can "
                  "expand)", o, (int)e->name_len, e->name, e->usize, e->csize);
        return NULL;
    }
    uint8_t *out = malloc(e->usize ? e->usize : 1);
    if (!out) { ar_errorf("%s: out of memory inflating '%.*s'", o, (int)e->name_len, e->name); return NULL; }
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, -15) != Z_OK) { free(out); ar_errorf("%s: zlib init failed", o); return NULL; }
    const uint8_t *in = f->bytes + e->off;
    uint64_t in_left = e->csize, out_done = 0;
    int zr = Z_OK;
    while (zr == Z_OK) {
        uInt ci = in_left > 1u << 30 ? 1u << 30 : (uInt)in_left, co = e->usize - out_done > 1u << 30 ? 1u << 30 : (uInt)(e->usize - out_done);
        zs.next_in = (Bytef *)in; zs.avail_in = ci;
        zs.next_out = out + out_done; zs.avail_out = co;
        zr = inflate(&zs, Z_NO_FLUSH);
        in += ci - zs.avail_in; in_left -= ci - zs.avail_in;
        out_done += co - zs.avail_out;
        if (zr == Z_BUF_ERROR && (in_left == 0 || out_done == e->usize)) break;
        if (zr == Z_OK && ci == zs.avail_in && co == zs.avail_out) break;   /* no progress */
    }
    inflateEnd(&zs);
    if (zr != Z_STREAM_END || out_done != e->usize) {
        free(out);
        ar_errorf("%s: zip entry '%.*s': deflate data is corrupt or its size is not the %" PRIu64 " bytes the directory says",
                  o, (int)e->name_len, e->name, e->usize);
        return NULL;
    }
    e->inflated = out;
    return out;
}

/* ---------------------------------------------------------------------- */
/* Pickle -> tensors                                                      */
/* ---------------------------------------------------------------------- */
static const char *const GLOBALS[] = {
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "collections.OrderedDict",
    "torch.FloatStorage", "torch.HalfStorage", "torch.BFloat16Storage", "torch.DoubleStorage", "torch.LongStorage",
    "torch.IntStorage", "torch.ShortStorage", "torch.CharStorage", "torch.ByteStorage", "torch.BoolStorage", NULL};

static const struct { const char *g; int dtype, size; } STORAGE_TYPES[] = {
    {"torch.FloatStorage", ST_F32, 4}, {"torch.HalfStorage", ST_F16, 2}, {"torch.BFloat16Storage", ST_BF16, 2},
    {"torch.DoubleStorage", ST_F64, 8}, {"torch.LongStorage", ST_I64, 8}, {"torch.IntStorage", ST_I32, 4},
    {"torch.ShortStorage", ST_I16, 2}, {"torch.CharStorage", ST_I8, 1}, {"torch.ByteStorage", ST_U8, 1},
    {"torch.BoolStorage", ST_BOOL, 1}};

static const char *dtype_name(int dtype) {
    static const char *const names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"};
    for (size_t i = 0; i < sizeof STORAGE_TYPES / sizeof *STORAGE_TYPES; i++)
        if (STORAGE_TYPES[i].dtype == dtype) return names[i];
    return "?";
}

static int elem_size(int dtype) {
    for (size_t i = 0; i < sizeof STORAGE_TYPES / sizeof *STORAGE_TYPES; i++)
        if (STORAGE_TYPES[i].dtype == dtype) return STORAGE_TYPES[i].size;
    return 0;
}

typedef struct {
    tc_file *f;
    const char *pkl;         /* "<archive>/data.pkl" for messages */
    tc_storage *st; int n_st, cap_st;
    size_t visits, max_visits;   /* the tree is a DAG: bounds the walk of shared containers */
    char path[TC_MAX_NAME];
} walker;

static int is_call(const pk_value *v, const char *fn) {
    return v && v->type == PK_CALL && v->n == 2 && v->items[0]->type == PK_GLOBAL && strcmp(v->items[0]->s, fn) == 0;
}

static int get_int_tuple(const pk_value *v, int64_t *out, int *n) {
    if (!v || v->type != PK_TUPLE || v->n > TC_MAX_NDIM) return -1;
    for (size_t i = 0; i < v->n; i++) {
        if (v->items[i]->type != PK_INT || v->items[i]->i < 0) return -1;
        out[i] = v->items[i]->i;
    }
    *n = (int)v->n;
    return 0;
}

/* The storage a persistent id names (opened once per key). */
static tc_storage *get_storage(walker *W, const pk_value *pid) {
    tc_file *f = W->f;
    const char *o = f->origin, *nm = W->path;
    const pk_value *t = pid->n == 1 ? pid->items[0] : NULL;
    if (!t || t->type != PK_TUPLE || t->n != 5 || t->items[0]->type != PK_STR || strcmp(t->items[0]->s, "storage") != 0 ||
        t->items[1]->type != PK_GLOBAL || t->items[2]->type != PK_STR || t->items[3]->type != PK_STR ||
        t->items[4]->type != PK_INT || t->items[4]->i < 0) {
        ar_errorf("%s: %s: tensor '%s': persistent id is not ('storage', type, key, location, numel)", o, W->pkl, nm);
        return NULL;
    }
    int dtype = -1, es = 0;
    for (size_t i = 0; i < sizeof STORAGE_TYPES / sizeof *STORAGE_TYPES; i++)
        if (strcmp(t->items[1]->s, STORAGE_TYPES[i].g) == 0) { dtype = STORAGE_TYPES[i].dtype; es = STORAGE_TYPES[i].size; }
    if (dtype < 0) { ar_errorf("%s: %s: tensor '%s': '%s' is not a storage type", o, W->pkl, nm, t->items[1]->s); return NULL; }
    const char *key = t->items[2]->s;
    uint64_t numel = (uint64_t)t->items[4]->i;
    if (strlen(key) != t->items[2]->len || strlen(key) > TC_MAX_NAME - 16) {
        ar_errorf("%s: %s: tensor '%s': storage key too long or invalid", o, W->pkl, nm);
        return NULL;
    }
    for (int i = 0; i < W->n_st; i++) {
        tc_storage *s = &W->st[i];
        if (s->e->name_len == f->prefix_len + 5 + strlen(key) && memcmp(s->e->name + f->prefix_len + 5, key, strlen(key)) == 0) {
            if (s->dtype != dtype || s->numel != numel) {
                ar_errorf("%s: %s: tensor '%s': storage '%s' is used as %s of %" PRIu64 " elements and as %s of %" PRIu64,
                          o, W->pkl, nm, key, dtype_name(s->dtype), s->numel, dtype_name(dtype), numel);
                return NULL;
            }
            return s;
        }
    }
    char ename[TC_MAX_NAME];
    snprintf(ename, sizeof ename, "data/%s", key);
    tc_entry *e = find_entry(f, ename);
    if (!e) { ar_errorf("%s: tensor '%s': storage entry '%s%s' is missing", o, nm, f->prefix, ename); return NULL; }
    uint64_t need;
    if (__builtin_mul_overflow(numel, (uint64_t)es, &need) || e->usize < need) {
        ar_errorf("%s: tensor '%s': storage '%s%s' holds %" PRIu64 " bytes, less than %" PRIu64 " elements of %s",
                  o, nm, f->prefix, ename, e->usize, numel, dtype_name(dtype));
        return NULL;
    }
    const uint8_t *data = entry_bytes(f, e);
    if (!data) return NULL;
    if (W->n_st == W->cap_st) {
        int nc = W->cap_st ? 2 * W->cap_st : 16;
        tc_storage *q = realloc(W->st, (size_t)nc * sizeof *q);
        if (!q) { ar_errorf("%s: out of memory", o); return NULL; }
        W->st = q; W->cap_st = nc;
    }
    tc_storage *s = &W->st[W->n_st++];
    s->e = e; s->dtype = dtype; s->numel = numel; s->data = data;
    return s;
}

static int add_tensor(walker *W, const pk_value *call) {
    tc_file *f = W->f;
    const char *o = f->origin, *nm = W->path;
    if (is_call(call, "torch._utils._rebuild_parameter")) {
        const pk_value *a = call->items[1];
        if (a->n < 1 || !is_call(a->items[0], "torch._utils._rebuild_tensor_v2"))
            return ar_errorf("%s: %s: '%s': _rebuild_parameter of something that is not a tensor", o, W->pkl, nm);
        call = a->items[0];
    }
    const pk_value *a = call->items[1];
    if (a->n < 4 || a->items[0]->type != PK_PERSID || a->items[1]->type != PK_INT || a->items[1]->i < 0)
        return ar_errorf("%s: %s: tensor '%s': _rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)",
                         o, W->pkl, nm);
    int64_t size[TC_MAX_NDIM], stride[TC_MAX_NDIM];
    int nd = 0, nds = 0;
    if (get_int_tuple(a->items[2], size, &nd) || get_int_tuple(a->items[3], stride, &nds) || nd != nds)
        return ar_errorf("%s: %s: tensor '%s': size and stride must be tuples of as many non-negative ints (at most %d)",
                         o, W->pkl, nm, TC_MAX_NDIM);
    tc_storage *s = get_storage(W, a->items[0]);
    if (!s) return -1;
    uint64_t off = (uint64_t)a->items[1]->i, numel = 1, last = off;
    int es = elem_size(s->dtype), contiguous = 1;
    for (int d = 0; d < nd; d++)
        if (__builtin_mul_overflow(numel, (uint64_t)size[d], &numel))
            return ar_errorf("%s: tensor '%s': more than 2^64 elements", o, nm);
    if (numel) {
        for (int d = 0; d < nd; d++) {
            uint64_t span;
            if (__builtin_mul_overflow((uint64_t)(size[d] - 1), (uint64_t)stride[d], &span) ||
                __builtin_add_overflow(last, span, &last))
                return ar_errorf("%s: tensor '%s': view overflows", o, nm);
        }
        if (last >= s->numel)
            return ar_errorf("%s: tensor '%s': the view (offset %" PRIu64 ", last element %" PRIu64 ") runs past its storage "
                             "'%.*s' of %" PRIu64 " elements", o, nm, off, last, (int)(s->e->name_len - f->prefix_len - 5),
                             s->e->name + f->prefix_len + 5, s->numel);
        if (numel > 16 * s->numel + 4096)
            return ar_errorf("%s: tensor '%s': a view of %" PRIu64 " elements repeats its storage of %" PRIu64
                             " elements too often (a broadcast view; refused)", o, nm, numel, s->numel);
        uint64_t expect = 1;
        for (int d = nd - 1; d >= 0; d--) {
            if (size[d] != 1 && (uint64_t)stride[d] != expect) contiguous = 0;
            expect *= (uint64_t)size[d];
        }
    }
    if (f->n == f->cap) {
        int nc = f->cap ? 2 * f->cap : 64;
        tc_tensor *q = realloc(f->t, (size_t)nc * sizeof *q);
        if (!q) return ar_errorf("%s: out of memory", o);
        f->t = q; f->cap = nc;
    }
    tc_tensor *t = &f->t[f->n];
    size_t nl = strlen(W->path);
    char *name = own(f, nl + 1);
    int64_t *shape = own(f, (size_t)(nd ? nd : 1) * sizeof *shape);
    if (!name || !shape) return ar_errorf("%s: out of memory", o);
    memcpy(name, W->path, nl + 1);
    memcpy(shape, size, (size_t)nd * sizeof *shape);
    t->name = name; t->dtype = s->dtype; t->ndim = nd; t->shape = shape; t->numel = numel;
    t->nbytes = (size_t)(numel * (uint64_t)es);
    if (numel == 0) t->data = s->data;
    else if (contiguous) t->data = s->data + off * (uint64_t)es;
    else {
        uint8_t *buf = own(f, t->nbytes);
        if (!buf) return ar_errorf("%s: out of memory gathering tensor '%s' (%zu bytes)", o, nm, t->nbytes);
        int64_t idx[TC_MAX_NDIM] = {0};
        for (uint64_t k = 0; k < numel; k++) {
            uint64_t src = off;
            for (int d = 0; d < nd; d++) src += (uint64_t)idx[d] * (uint64_t)stride[d];
            memcpy(buf + k * (uint64_t)es, s->data + src * (uint64_t)es, (size_t)es);
            for (int d = nd - 1; d >= 0; d--) {
                if (++idx[d] < size[d]) break;
                idx[d] = 0;
            }
        }
        t->data = buf;
    }
    f->n++;
    return 0;
}

static int walk(walker *W, const pk_value *v, size_t plen, int depth) {
    tc_file *f = W->f;
    if (depth > PK_MAX_DEPTH) return ar_errorf("%s: %s: nested too deeply", f->origin, W->pkl);
    if (++W->visits > W->max_visits)
        return ar_errorf("%s: %s: the same containers are reached along too many paths (more than %zu visits)",
                         f->origin, W->pkl, W->max_visits);
    if (v->type == PK_CALL) {
        if (is_call(v, "torch._utils._rebuild_tensor_v2") || is_call(v, "torch._utils._rebuild_parameter")) {
            if (plen == 0) snprintf(W->path, sizeof W->path, "tensor");
            return add_tensor(W, v);
        }
        return ar_errorf("%s: %s: '%s': a call of %s is not a tensor (only tensors, dicts, lists and plain values are read)",
                         f->origin, W->pkl, plen ? W->path : "<root>", v->items[0]->s);
    }
    if (v->type == PK_PERSID || v->type == PK_GLOBAL)
        return ar_errorf("%s: %s: '%s': a bare %s is not supported", f->origin, W->pkl, plen ? W->path : "<root>",
                         pk_type_name(v->type));
    if (v->type != PK_DICT && v->type != PK_LIST && v->type != PK_TUPLE) return 0;
    for (size_t i = 0; i < v->n; i++) {
        const pk_value *k = v->type == PK_DICT ? v->keys[i] : NULL;
        const pk_value *c = v->type == PK_DICT ? v->vals[i] : v->items[i];
        char key[64];
        const char *ks;
        size_t kl;
        if (!k || k->type == PK_INT) {
            snprintf(key, sizeof key, "%" PRId64, k ? k->i : (int64_t)i);
            ks = key; kl = strlen(key);
        } else {
            ks = k->s; kl = k->len;
            if (memchr(ks, 0, kl)) return ar_errorf("%s: %s: a dict key contains NUL", f->origin, W->pkl);
        }
        size_t need = plen + (plen ? 1 : 0) + kl;
        if (need >= sizeof W->path) return ar_errorf("%s: %s: a tensor name is longer than %d bytes", f->origin, W->pkl, TC_MAX_NAME - 1);
        size_t at = plen;
        if (plen) W->path[at++] = '.';
        memcpy(W->path + at, ks, kl);
        W->path[need] = 0;
        if (walk(W, c, need, depth + 1) < 0) return -1;
        W->path[plen] = 0;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
tc_file *tc_open_memory(const void *bytes, size_t size, const char *origin) {
    if (!origin) origin = "torch checkpoint";
    if (tc_is_legacy(bytes, size)) {
        ar_errorf("%s: the legacy torch.save format (before PyTorch 1.6) is not supported; re-save it with "
                  "torch.save(torch.load(f), f2) under PyTorch >= 1.6", origin);
        return NULL;
    }
    tc_file *f = calloc(1, sizeof *f);
    if (!f || !(f->origin = strdup(origin))) { free(f); ar_errorf("%s: out of memory", origin); return NULL; }
    f->bytes = bytes; f->size = size;
    walker W = {.f = f};
    pk_doc *doc = NULL;
    char pkl[TC_MAX_NAME];
    if (!tc_is_zip(bytes, size)) { ar_errorf("%s: not a zip archive (torch.save's format) nor safetensors", origin); goto fail; }
    if (read_zip(f) < 0) goto fail;
    /* the archive directory: the entry ending in "/data.pkl" with exactly one '/' */
    tc_entry *pe = NULL;
    for (size_t i = 0; i < f->n_ent; i++) {
        tc_entry *e = &f->ent[i];
        const char *sl = memchr(e->name, '/', e->name_len);
        if (sl && (size_t)(sl - e->name) + 9 == e->name_len && memcmp(sl, "/data.pkl", 9) == 0) {
            if (pe) { ar_errorf("%s: more than one data.pkl in the archive", origin); goto fail; }
            pe = e;
        }
    }
    if (!pe) { ar_errorf("%s: the zip archive has no <archive>/data.pkl (not a torch.save file)", origin); goto fail; }
    f->prefix_len = pe->name_len - 8;
    if (!(f->prefix = malloc(f->prefix_len + 1))) { ar_errorf("%s: out of memory", origin); goto fail; }
    memcpy(f->prefix, pe->name, f->prefix_len);
    f->prefix[f->prefix_len] = 0;
    snprintf(pkl, sizeof pkl, "%sdata.pkl", f->prefix);
    W.pkl = pkl;
    tc_entry *bo = find_entry(f, "byteorder");
    if (bo) {
        const uint8_t *p = entry_bytes(f, bo);
        if (!p) goto fail;
        if (!(bo->usize == 6 && memcmp(p, "little", 6) == 0)) {
            ar_errorf("%s: byteorder is not 'little' (big-endian checkpoints are not supported)", origin);
            goto fail;
        }
    }
    const uint8_t *pb = entry_bytes(f, pe);
    if (!pb) goto fail;
    uint64_t crc = crc32(0L, Z_NULL, 0);
    for (uint64_t k = 0; k < pe->usize;) {
        uInt c = pe->usize - k > 1u << 30 ? 1u << 30 : (uInt)(pe->usize - k);
        crc = crc32(crc, pb + k, c);
        k += c;
    }
    if ((uint32_t)crc != pe->crc) {
        ar_errorf("%s: %s is corrupt (CRC-32 %08x, the directory says %08x)", origin, pkl, (unsigned)crc, (unsigned)pe->crc);
        goto fail;
    }
    char pname[TC_MAX_NAME + 300];
    snprintf(pname, sizeof pname, "%s: %s", origin, pkl);
    pk_options opt = {.globals = GLOBALS, .persistent_ids = 1};
    doc = pk_parse_ex(pb, (size_t)pe->usize, pname, &opt);
    if (!doc) goto fail;
    W.max_visits = 4 * pk_count(doc) + 1024;
    if (walk(&W, pk_root(doc), 0, 0) < 0) goto fail;
    pk_free(doc);
    free(W.st);
    return f;
fail:
    pk_free(doc);
    free(W.st);
    tc_close(f);
    return NULL;
}

void tc_close(tc_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n_ent; i++) free(f->ent[i].inflated);
    for (int i = 0; i < f->n_owned; i++) free(f->owned[i]);
    free(f->owned); free(f->ent); free(f->t); free(f->prefix); free(f->origin);
    free(f);
}

int tc_count(const tc_file *f) { return f ? f->n : 0; }
const tc_tensor *tc_get(const tc_file *f, int i) { return f && i >= 0 && i < f->n ? &f->t[i] : NULL; }
