/* data/feature_cache.c — see feature_cache.h for the format and the
 * guarantees. xxHash is compiled in header-only (XXH_INLINE_ALL), so the
 * build needs its header but no library. Every public function that touches
 * HDF5 runs with the library's own error printing off (core/h5util.h) and
 * builds the messages here, naming the file and the entry. */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "data/feature_cache.h"

#include "core/error.h"
#include "core/h5util.h"
#include "core/log.h"
#include "kernels/kernels.h"

#include <hdf5.h>

#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Checksums and hashes are defined over little-endian bytes; the code hashes
 * memory as it lies, which is only that on a little-endian machine. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "feature_cache hashes memory as little-endian bytes");
_Static_assert(sizeof(XXH3_state_t) <= sizeof(((fc_hasher *)0)->opaque), "fc_hasher too small for XXH3_state_t");
_Static_assert(alignof(XXH3_state_t) <= 64, "fc_hasher alignment too small for XXH3_state_t");

#define FC_VERSION_ATTR "anyref_feature_cache"
#define FC_CHECKSUM_ATTR "checksum"
#define FC_STAGE_FLOATS ((size_t)1 << 20)   /* fc_encoder_id_params: 4 MiB pieces */

/* ------------------------------------------------------------------------ */
/* Hashing                                                                  */
/* ------------------------------------------------------------------------ */
static fc_hash from_xxh(XXH128_hash_t h) { return (fc_hash){.hi = h.high64, .lo = h.low64}; }
static XXH3_state_t *state_of(fc_hasher *h) { return (XXH3_state_t *)(void *)h->opaque; }

fc_hash fc_key_of(const void *bytes, size_t n) {
    static const unsigned char none = 0;
    return from_xxh(XXH3_128bits(n ? bytes : &none, n));
}

void fc_hasher_init(fc_hasher *h) {
    memset(h, 0, sizeof *h);
    XXH3_128bits_reset(state_of(h));
}
void fc_hasher_update(fc_hasher *h, const void *bytes, size_t n) {
    if (n) XXH3_128bits_update(state_of(h), bytes, n);
}
void fc_hasher_u64(fc_hasher *h, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    fc_hasher_update(h, b, 8);
}
fc_hash fc_hasher_digest(const fc_hasher *h) {
    return from_xxh(XXH3_128bits_digest((const XXH3_state_t *)(const void *)h->opaque));
}

int fc_hash_eq(fc_hash a, fc_hash b) { return a.hi == b.hi && a.lo == b.lo; }

char *fc_hash_hex(fc_hash h, char *buf) {
    snprintf(buf, FC_HEX_LEN + 1, "%016llx%016llx", (unsigned long long)h.hi, (unsigned long long)h.lo);
    return buf;
}

int fc_hash_parse(const char *hex, fc_hash *out) {
    if (!hex || !out) return ar_errorf("fc_hash_parse: NULL argument");
    uint64_t w[2] = {0, 0};
    size_t i = 0;
    for (; hex[i] && i < FC_HEX_LEN + 1; i++) {
        char ch = hex[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
              : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
        if (d < 0 || i >= FC_HEX_LEN) break;
        w[i / 16] = w[i / 16] << 4 | (uint64_t)d;
    }
    if (i != FC_HEX_LEN || hex[i]) return ar_errorf("'%.40s' is not a hash: expected %d hex digits", hex, FC_HEX_LEN);
    out->hi = w[0];
    out->lo = w[1];
    return 0;
}

static void hash_config(fc_hasher *h, const char *tag, const char *config_text) {
    const char *cfg = config_text ? config_text : "";
    fc_hasher_update(h, tag, strlen(tag));
    fc_hasher_u64(h, strlen(cfg));
    fc_hasher_update(h, cfg, strlen(cfg));
}

fc_hash fc_encoder_id(const char *config_text, const float *const *weights, const size_t *counts, int n) {
    fc_hasher h;
    fc_hasher_init(&h);
    hash_config(&h, "anyref-fc-encoder-v1", config_text);
    fc_hasher_u64(&h, n > 0 ? (uint64_t)n : 0);
    for (int i = 0; i < n; i++) {
        fc_hasher_u64(&h, counts[i]);
        if (counts[i]) fc_hasher_update(&h, weights[i], counts[i] * sizeof(float));
    }
    return fc_hasher_digest(&h);
}

int fc_encoder_id_params(const ar_params *ps, const char *prefix, const char *config_text, fc_hash *out) {
    if (!ps || !out) return ar_errorf("fc_encoder_id_params: NULL argument");
    if (!prefix) prefix = "";
    size_t plen = strlen(prefix), biggest = 0;
    int matched = 0;
    for (int i = 0; i < ps->n; i++)
        if (strncmp(ps->p[i].name, prefix, plen) == 0) {
            matched++;
            if (ps->p[i].numel > biggest) biggest = ps->p[i].numel;
        }
    if (!matched) return ar_errorf("encoder identity: no parameter name starts with '%s'", prefix);
    if (!ps->w) return ar_errorf("encoder identity: the registry's weights are not allocated (params_alloc)");
    size_t cap = biggest < FC_STAGE_FLOATS ? biggest : FC_STAGE_FLOATS;
    float *stage = malloc((cap ? cap : 1) * sizeof(float));
    if (!stage) return ar_errorf("encoder identity: out of memory for a %zu-float staging buffer", cap);

    fc_hasher h;
    fc_hasher_init(&h);
    hash_config(&h, "anyref-fc-params-v1", config_text);
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        if (strncmp(p->name, prefix, plen) != 0) continue;
        fc_hasher_u64(&h, strlen(p->name));
        fc_hasher_update(&h, p->name, strlen(p->name));
        fc_hasher_u64(&h, (uint64_t)p->ndim);
        for (int d = 0; d < p->ndim; d++) fc_hasher_u64(&h, (uint64_t)p->shape[d]);
        fc_hasher_u64(&h, p->numel);
        if (p->half) {   /* stored in 16 bits: its values as used (widened), after a marker */
            float *wide = malloc(p->numel * sizeof(float));
            if (!wide) { free(stage); return ar_errorf("encoder identity: out of memory widening '%s'", p->name); }
            int rc = params_download(ps, p, wide);
            if (!rc) {
                fc_hasher_update(&h, "half", 4);
                fc_hasher_update(&h, wide, p->numel * sizeof(float));
            }
            free(wide);
            if (rc) { free(stage); return -1; }
            continue;
        }
        for (size_t o = 0; o < p->numel; o += cap) {
            size_t m = p->numel - o < cap ? p->numel - o : cap;
            k_download(stage, ps->w + p->off + o, m * sizeof(float));
            fc_hasher_update(&h, stage, m * sizeof(float));
        }
    }
    free(stage);
    *out = fc_hasher_digest(&h);
    return 0;
}

/* The entry checksum (see the header): binds values, shape, encoder and key. */
static fc_hash entry_checksum(fc_hash enc, fc_hash key, int ndim, const hsize_t *dims, const float *x, size_t n) {
    static const char tag[] = "anyref-fc-entry-v1";
    fc_hasher h;
    fc_hasher_init(&h);
    fc_hasher_update(&h, tag, sizeof tag - 1);
    fc_hasher_u64(&h, enc.hi);
    fc_hasher_u64(&h, enc.lo);
    fc_hasher_u64(&h, key.hi);
    fc_hasher_u64(&h, key.lo);
    fc_hasher_u64(&h, (uint64_t)ndim);
    for (int d = 0; d < ndim; d++) fc_hasher_u64(&h, (uint64_t)dims[d]);
    fc_hasher_update(&h, x, n * sizeof(float));
    return fc_hasher_digest(&h);
}

/* ------------------------------------------------------------------------ */
/* The handle                                                               */
/* ------------------------------------------------------------------------ */
struct fc_cache {
    char    *path;
    hid_t    file;
    int      writable;
    fc_stats st;
    int64_t  warned, withheld;   /* stale/corrupt warnings printed / not printed */
};

const char *fc_path(const fc_cache *c) { return c ? c->path : ""; }
fc_stats fc_get_stats(const fc_cache *c) { return c ? c->st : (fc_stats){0}; }

static hid_t make_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    /* 1.8+ object format: superblock v2 and object headers with checksums. */
    if (H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

/* Creates an empty cache at path: written under a temporary name, then
 * linked into place (link fails if someone else created path meanwhile; their
 * file is then used). 0 or -1 + ar_error. */
static int create_file(const char *path) {
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return ar_errorf("feature cache %s: out of memory", path);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    int rc = 0;
    hid_t fapl = make_fapl();
    hid_t f = fapl < 0 ? -1 : H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    if (f < 0) {
        rc = ar_errorf("feature cache %s: cannot create '%s': %s", path, tmp, h5_detail());
    } else {
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = sp < 0 ? -1 : H5Acreate2(f, FC_VERSION_ATTR, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        int v = FC_FORMAT_VERSION;
        if (a < 0 || H5Awrite(a, H5T_NATIVE_INT, &v) < 0)
            rc = ar_errorf("feature cache %s: cannot write the format attribute: %s", path, h5_detail());
        if (a >= 0) H5Aclose(a);
        if (sp >= 0) H5Sclose(sp);
        if (H5Fclose(f) < 0 && !rc) rc = ar_errorf("feature cache %s: cannot close '%s': %s", path, tmp, h5_detail());
    }
    /* Where hard links are not supported, rename (last creator wins). */
    if (!rc && link(tmp, path) != 0 && errno != EEXIST && rename(tmp, path) != 0)
        rc = ar_errorf("feature cache %s: cannot create: %s", path, strerror(errno));
    unlink(tmp);
    free(tmp);
    return rc;
}

/* 1 if another open file description holds a lock on path (HDF5 locks the
 * files it opens), 0 otherwise. Checked before moving a file aside. */
static int locked_by_someone(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    int busy = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    if (!busy) flock(fd, LOCK_UN);
    close(fd);
    return busy;
}

/* Renames path to path.corrupt after a warning. 0 or -1 + ar_error. */
static int move_aside(const char *path, const char *why) {
    if (locked_by_someone(path))
        return ar_errorf("feature cache %s: %s, and another process has it open; not moving it aside", path, why);
    size_t n = strlen(path) + 16;
    char *bad = malloc(n);
    if (!bad) return ar_errorf("feature cache %s: out of memory", path);
    snprintf(bad, n, "%s.corrupt", path);
    int rc = 0;
    if (rename(path, bad) != 0) rc = ar_errorf("feature cache %s: %s; cannot move it to %s: %s", path, why, bad, strerror(errno));
    else log_warn("feature cache %s: %s; moved to %s, starting an empty cache", path, why, bad);
    free(bad);
    return rc;
}

/* Checks the root format attribute. 0 or -1 + ar_error. */
static int check_version(fc_cache *c) {
    htri_t ex = H5Aexists(c->file, FC_VERSION_ATTR);
    if (ex < 0) return ar_errorf("feature cache %s: cannot look up attribute '%s': %s", c->path, FC_VERSION_ATTR, h5_detail());
    if (ex == 0)
        return ar_errorf("feature cache %s: an HDF5 file but not a feature cache (no root attribute '%s'); "
                         "refusing to touch it", c->path, FC_VERSION_ATTR);
    hid_t a = H5Aopen(c->file, FC_VERSION_ATTR, H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a), sp = a < 0 ? -1 : H5Aget_space(a);
    char why[128] = "";
    long long v = 0;
    if (a < 0 || t < 0 || sp < 0) snprintf(why, sizeof why, "cannot be read: %s", h5_detail());
    else if (H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(sp) != 1) {
        char tn[64];
        h5_dtype_str(tn, sizeof tn, t);
        snprintf(why, sizeof why, "is %s with %lld values; expected one integer", tn,
                 (long long)H5Sget_simple_extent_npoints(sp));
    } else if (H5Aread(a, H5T_NATIVE_LLONG, &v) < 0) snprintf(why, sizeof why, "cannot be read: %s", h5_detail());
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    if (why[0]) return ar_errorf("feature cache %s: root attribute '%s' %s", c->path, FC_VERSION_ATTR, why);
    if (v != FC_FORMAT_VERSION)
        return ar_errorf("feature cache %s: format version %lld; this build reads version %d", c->path, v, FC_FORMAT_VERSION);
    return 0;
}

/* The body of fc_open with HDF5 quiet. 0 or -1 + ar_error. */
static int open_file(fc_cache *c, int flags) {
    const char *path = c->path;
    int recreate = (flags & FC_WRITE) && (flags & FC_RECREATE);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno != ENOENT || !(flags & FC_WRITE))
            return ar_errorf("feature cache %s: cannot open: %s", path, strerror(errno));
        if (create_file(path) < 0) return -1;
    } else if (S_ISDIR(st.st_mode)) {
        return ar_errorf("feature cache %s: is a directory, expected an HDF5 file", path);
    } else {
        htri_t is = H5Fis_hdf5(path);
        if (is <= 0 && locked_by_someone(path))
            return ar_errorf("feature cache %s: in use by another process (HDF5 file lock)", path);
        if (is <= 0) {
            if (is < 0 && access(path, (flags & FC_WRITE) ? R_OK | W_OK : R_OK) != 0)
                return ar_errorf("feature cache %s: cannot open: %s", path, strerror(errno));
            if (!recreate)
                return ar_errorf("feature cache %s: not an HDF5 file (truncated or overwritten?); delete it, or open "
                                 "with FC_RECREATE to move it aside", path);
            if (move_aside(path, "not an HDF5 file") < 0 || create_file(path) < 0) return -1;
        }
    }
    hid_t fapl = make_fapl();
    if (fapl < 0) return ar_errorf("feature cache %s: cannot set up HDF5 file access: %s", path, h5_detail());
    unsigned mode = (flags & FC_WRITE) ? H5F_ACC_RDWR : H5F_ACC_RDONLY;
    c->file = H5Fopen(path, mode, fapl);
    if (c->file < 0) {
        char why[300];
        snprintf(why, sizeof why, "HDF5 cannot open it (%s)", h5_detail());
        if (locked_by_someone(path)) snprintf(why, sizeof why, "in use by another process (HDF5 file lock)");
        if (!recreate || access(path, R_OK | W_OK) != 0 || locked_by_someone(path)) {
            H5Pclose(fapl);
            return ar_errorf("feature cache %s: %s", path, why);
        }
        if (move_aside(path, why) < 0 || create_file(path) < 0) {
            H5Pclose(fapl);
            return -1;
        }
        c->file = H5Fopen(path, mode, fapl);
    }
    H5Pclose(fapl);
    if (c->file < 0) return ar_errorf("feature cache %s: cannot open: %s", path, h5_detail());
    return check_version(c);
}

fc_cache *fc_open(const char *path, int flags) {
    if (!path || !path[0]) {
        ar_errorf("feature cache: empty path");
        return NULL;
    }
    fc_cache *c = calloc(1, sizeof *c);
    if (c) c->path = strdup(path);
    if (!c || !c->path) {
        free(c);
        ar_errorf("feature cache %s: out of memory", path);
        return NULL;
    }
    c->file = -1;
    c->writable = (flags & FC_WRITE) != 0;
    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = open_file(c, flags);
    if (rc < 0 && c->file >= 0) H5Fclose(c->file);
    h5_quiet_end(&q);
    if (rc < 0) {
        free(c->path);
        free(c);
        return NULL;
    }
    return c;
}

int fc_close(fc_cache *c) {
    if (!c) return 0;
    if (c->withheld)
        log_warn("feature cache %s: %lld more stale or corrupt entries were not shown (%lld stale, %lld corrupt in all)",
                 c->path, (long long)c->withheld, (long long)c->st.stale, (long long)c->st.corrupt);
    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = 0;
    if (c->file >= 0 && H5Fclose(c->file) < 0) rc = ar_errorf("feature cache %s: error closing: %s", c->path, h5_detail());
    h5_quiet_end(&q);
    free(c->path);
    free(c);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Entries                                                                  */
/* ------------------------------------------------------------------------ */
/* Whether `name` in loc is a link, and a hard one: 1 hard, 2 other kind,
 * 0 absent, -1 HDF5 error (detail left on the stack). */
static int link_kind(hid_t loc, const char *name) {
    htri_t ex = H5Lexists(loc, name, H5P_DEFAULT);
    if (ex <= 0) return ex < 0 ? -1 : 0;
    H5L_info_t li;
    if (H5Lget_info(loc, name, &li, H5P_DEFAULT) < 0) return -1;
    return li.type == H5L_TYPE_HARD ? 1 : 2;
}

/* Validates shape[0..ndim) into dims and the element count. 0 or -1 + ar_error. */
static int check_shape(const char *fn, const int *shape, int ndim, hsize_t *dims, size_t *numel) {
    if (!shape || ndim < 1 || ndim > FC_MAX_NDIM) return ar_errorf("%s: rank %d; expected 1..%d", fn, ndim, FC_MAX_NDIM);
    size_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1) return ar_errorf("%s: dimension %d is %d; expected >= 1", fn, d, shape[d]);
        if (n > SIZE_MAX / sizeof(float) / (size_t)shape[d]) return ar_errorf("%s: shape too large", fn);
        n *= (size_t)shape[d];
        dims[d] = (hsize_t)shape[d];
    }
    *numel = n;
    return 0;
}

enum { MISS_ABSENT, MISS_STALE, MISS_CORRUPT };

/* Counts a stale/corrupt miss and warns (first FC_WARN_LIMIT per handle). */
static void report(fc_cache *c, int kind, const char *ench, const char *keyh, const char *why, const char *after) {
    if (kind == MISS_STALE) c->st.stale++;
    else c->st.corrupt++;
    if (c->warned >= FC_WARN_LIMIT) {
        c->withheld++;
        return;
    }
    c->warned++;
    log_warn("feature cache %s: entry %s/%s %s: %s%s", c->path, ench, keyh, kind == MISS_STALE ? "stale" : "corrupt",
             why, after);
}

/* Reads and checks the checksum attribute of d into *sum. 0, or 1 with why. */
static int read_checksum(hid_t d, fc_hash *sum, char *why, size_t cap) {
    htri_t ex = H5Aexists(d, FC_CHECKSUM_ATTR);
    if (ex < 0) {
        snprintf(why, cap, "cannot look up its checksum: %s", h5_detail());
        return 1;
    }
    if (ex == 0) {
        snprintf(why, cap, "no checksum attribute (an interrupted write?)");
        return 1;
    }
    hid_t a = H5Aopen(d, FC_CHECKSUM_ATTR, H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a), sp = a < 0 ? -1 : H5Aget_space(a);
    uint64_t v[2];
    why[0] = 0;
    if (a < 0 || t < 0 || sp < 0) {
        snprintf(why, cap, "its checksum cannot be opened: %s", h5_detail());
    } else if (H5Tget_class(t) != H5T_INTEGER || H5Tget_size(t) != 8 || H5Sget_simple_extent_type(sp) != H5S_SIMPLE ||
               H5Sget_simple_extent_ndims(sp) != 1 || H5Sget_simple_extent_npoints(sp) != 2) {
        char tn[64];
        h5_dtype_str(tn, sizeof tn, t);
        snprintf(why, cap, "its checksum is %s with %lld values; expected uint64 [2]", tn,
                 (long long)H5Sget_simple_extent_npoints(sp));
    } else if (H5Aread(a, H5T_NATIVE_UINT64, v) < 0) {
        snprintf(why, cap, "its checksum cannot be read: %s", h5_detail());
    } else {
        sum->hi = v[0];
        sum->lo = v[1];
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return why[0] ? 1 : 0;
}

/* Inspects and reads the entry `keyh` in group g. Returns MISS_ABSENT for a
 * hit (out filled), MISS_STALE / MISS_CORRUPT with why, or -1 on HDF5 error
 * of the group itself (ar_error). *absent set when there is no entry;
 * *removable cleared when HDF5 cannot read the object (see open_group). */
static int read_entry(fc_cache *c, hid_t g, fc_hash enc, fc_hash key, const char *keyh, const hsize_t *want, int ndim,
                      size_t numel, float *out, int *absent, int *removable, char *why, size_t cap) {
    *absent = 0;
    *removable = 1;
    int lk = link_kind(g, keyh);
    if (lk < 0) return ar_errorf("feature cache %s: cannot look up entry %s: %s", c->path, keyh, h5_detail());
    if (lk == 0) {
        *absent = 1;
        return MISS_ABSENT;
    }
    if (lk == 2) {
        snprintf(why, cap, "not a hard link");
        return MISS_CORRUPT;
    }
    hid_t o = H5Oopen(g, keyh, H5P_DEFAULT);
    if (o < 0) {   /* its object header is damaged: leave it alone */
        snprintf(why, cap, "HDF5 cannot read it: %s", h5_detail());
        *removable = 0;
        return MISS_CORRUPT;
    }
    if (H5Iget_type(o) != H5I_DATASET) {
        H5Oclose(o);
        snprintf(why, cap, "not a dataset");
        return MISS_CORRUPT;
    }
    hid_t d = o;
    int kind = MISS_ABSENT;
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    hsize_t dims[H5S_MAX_RANK];
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    if (t < 0 || sp < 0 || nd < 0 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        snprintf(why, cap, "its type or shape cannot be read: %s", h5_detail());
        kind = MISS_CORRUPT;
    } else if (H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 4) {
        char tn[64];
        h5_dtype_str(tn, sizeof tn, t);
        snprintf(why, cap, "has dtype %s; expected float32", tn);
        kind = MISS_CORRUPT;
    } else if (H5Sget_simple_extent_type(sp) != H5S_SIMPLE || nd < 1 || nd > FC_MAX_NDIM) {
        snprintf(why, cap, "has rank %d; expected 1..%d", nd, FC_MAX_NDIM);
        kind = MISS_CORRUPT;
    } else {
        int same = nd == ndim;
        for (int i = 0; i < nd; i++) {
            if (dims[i] < 1) {
                snprintf(why, cap, "has an empty dimension");
                kind = MISS_CORRUPT;
            }
            if (same && dims[i] != want[i]) same = 0;
        }
        if (kind == MISS_ABSENT && !same) {
            char a[160], b[160];
            h5_shape_str(a, sizeof a, nd, dims);
            h5_shape_str(b, sizeof b, ndim, want);
            snprintf(why, cap, "has shape %s; expected %s", a, b);
            kind = MISS_STALE;
        }
    }
    fc_hash stored = {0, 0};
    if (kind == MISS_ABSENT && read_checksum(d, &stored, why, cap)) kind = MISS_CORRUPT;
    if (kind == MISS_ABSENT && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
        snprintf(why, cap, "its values cannot be read: %s", h5_detail());
        kind = MISS_CORRUPT;
    }
    if (kind == MISS_ABSENT) {
        fc_hash got = entry_checksum(enc, key, ndim, want, out, numel);
        if (!fc_hash_eq(got, stored)) {
            char hs[FC_HEX_LEN + 1], hg[FC_HEX_LEN + 1];
            snprintf(why, cap, "checksum mismatch (stored %s, values give %s)", fc_hash_hex(stored, hs),
                     fc_hash_hex(got, hg));
            kind = MISS_CORRUPT;
        }
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    return kind;
}

/* Opens the group of encoder enc: > 0 the group; 0 absent, or with *bad set
 * a link that is not a usable group: 1 = safe to remove (a soft or external
 * link, or a readable object that is not a group), 2 = HDF5 cannot read the
 * object (damaged; never removed, since a failed removal of a damaged object
 * can leave HDF5's state broken); -1 + ar_error. */
static hid_t open_group(fc_cache *c, const char *ench, int *bad) {
    *bad = 0;
    int lk = link_kind(c->file, ench);
    if (lk < 0) return ar_errorf("feature cache %s: cannot look up encoder %s: %s", c->path, ench, h5_detail());
    if (lk == 0) return 0;
    if (lk == 2) {
        *bad = 1;
        return 0;
    }
    hid_t o = H5Oopen(c->file, ench, H5P_DEFAULT);
    if (o < 0) {
        H5Eclear2(H5E_DEFAULT);
        *bad = 2;
        return 0;
    }
    H5I_type_t ty = H5Iget_type(o);
    if (ty == H5I_GROUP) return o;
    H5Oclose(o);
    *bad = 1;
    return 0;
}

int fc_get(fc_cache *c, fc_hash enc, fc_hash key, const int *shape, int ndim, float *out) {
    if (!c || !out) return ar_errorf("fc_get: NULL argument");
    hsize_t want[FC_MAX_NDIM];
    size_t numel;
    if (check_shape("fc_get", shape, ndim, want, &numel) < 0) return -1;
    char ench[FC_HEX_LEN + 1], keyh[FC_HEX_LEN + 1];
    fc_hash_hex(enc, ench);
    fc_hash_hex(key, keyh);

    h5_quiet q;
    h5_quiet_begin(&q);
    int bad, rc = 0;
    hid_t g = open_group(c, ench, &bad);
    if (g < 0) {
        rc = -1;
    } else if (g == 0) {
        c->st.misses++;
        if (bad)
            report(c, MISS_CORRUPT, ench, keyh,
                   bad == 2 ? "HDF5 cannot read its encoder group (the file is damaged; delete it to rebuild the cache)"
                            : "its encoder group is not a hard-linked group (fc_add_encoder replaces it)", "");
    } else {
        char why[512] = "";
        int absent, removable;
        int kind = read_entry(c, g, enc, key, keyh, want, ndim, numel, out, &absent, &removable, why, sizeof why);
        if (kind < 0) {
            rc = -1;
        } else if (kind == MISS_ABSENT && !absent) {
            c->st.hits++;
            rc = 1;
        } else {
            c->st.misses++;
            if (kind == MISS_STALE) {
                report(c, kind, ench, keyh, why, "");
            } else if (kind == MISS_CORRUPT) {
                const char *after = "";
                char fail[300];
                if (c->writable && !removable) {
                    after = "; not removed (the file is damaged; delete it to rebuild the cache)";
                } else if (c->writable) {
                    if (H5Ldelete(g, keyh, H5P_DEFAULT) >= 0 && H5Fflush(c->file, H5F_SCOPE_LOCAL) >= 0) {
                        c->st.removed++;
                        after = "; removed";
                    } else {
                        snprintf(fail, sizeof fail, "; could not be removed: %s", h5_detail());
                        after = fail;
                    }
                }
                report(c, kind, ench, keyh, why, after);
            }
        }
        H5Gclose(g);
    }
    h5_quiet_end(&q);
    return rc;
}

/* Writes the string attribute name on loc (replacing it). 0 or -1. */
static int write_str_attr(hid_t loc, const char *name, const char *s) {
    if (H5Aexists(loc, name) > 0 && H5Adelete(loc, name) < 0) return -1;
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    int rc = -1;
    hid_t sp = -1, a = -1;
    if (H5Tset_size(t, strlen(s) + 1) >= 0 && H5Tset_strpad(t, H5T_STR_NULLTERM) >= 0 &&
        (sp = H5Screate(H5S_SCALAR)) >= 0 && (a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT)) >= 0 &&
        H5Awrite(a, t, s) >= 0)
        rc = 0;
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    H5Tclose(t);
    return rc;
}

int fc_add_encoder(fc_cache *c, fc_hash enc, const char *name, const char *config_text) {
    if (!c) return ar_errorf("fc_add_encoder: NULL cache");
    char ench[FC_HEX_LEN + 1];
    fc_hash_hex(enc, ench);
    if (!c->writable) return ar_errorf("feature cache %s: opened read-only; cannot add encoder %s", c->path, ench);
    h5_quiet q;
    h5_quiet_begin(&q);
    int bad, rc = 0;
    hid_t g = open_group(c, ench, &bad);
    if (g == 0 && bad == 2)
        g = ar_errorf("feature cache %s: HDF5 cannot read encoder group %s (the file is damaged; delete it to rebuild "
                      "the cache)", c->path, ench);
    else if (g == 0 && bad == 1 && H5Ldelete(c->file, ench, H5P_DEFAULT) < 0)
        g = ar_errorf("feature cache %s: '%s' is not an encoder group and cannot be removed: %s", c->path, ench, h5_detail());
    if (g == 0) {
        g = H5Gcreate2(c->file, ench, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) ar_errorf("feature cache %s: cannot create encoder group %s: %s", c->path, ench, h5_detail());
    }
    if (g < 0) {
        rc = -1;
    } else {
        if (write_str_attr(g, "name", name ? name : "") < 0 || write_str_attr(g, "config", config_text ? config_text : "") < 0)
            rc = ar_errorf("feature cache %s: cannot write the attributes of encoder %s: %s", c->path, ench, h5_detail());
        H5Gclose(g);
        if (!rc && H5Fflush(c->file, H5F_SCOPE_LOCAL) < 0)
            rc = ar_errorf("feature cache %s: cannot flush: %s", c->path, h5_detail());
    }
    h5_quiet_end(&q);
    return rc;
}

/* The body of fc_put, HDF5 quiet, group open. 0 or -1 + ar_error. */
static int put_entry(fc_cache *c, hid_t g, fc_hash enc, fc_hash key, const char *keyh, const float *data,
                     const hsize_t *dims, int ndim, size_t numel) {
    const char *where = c->path;
    char ench[FC_HEX_LEN + 1];
    fc_hash_hex(enc, ench);
    int lk = link_kind(g, keyh);
    if (lk < 0) return ar_errorf("feature cache %s: cannot look up entry %s/%s: %s", where, ench, keyh, h5_detail());
    if (lk == 1) {   /* never remove an object HDF5 cannot read (see open_group) */
        hid_t o = H5Oopen(g, keyh, H5P_DEFAULT);
        if (o < 0)
            return ar_errorf("feature cache %s: entry %s/%s is damaged (%s) and cannot be replaced; delete the file "
                             "to rebuild the cache", where, ench, keyh, h5_detail());
        H5Oclose(o);
    }
    if (lk > 0 && H5Ldelete(g, keyh, H5P_DEFAULT) < 0)
        return ar_errorf("feature cache %s: cannot replace entry %s/%s: %s", where, ench, keyh, h5_detail());

    int rc = 0;
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d = -1;
    if (sp < 0 || dcpl < 0 || H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 ||
        (d = H5Dcreate2(g, keyh, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0)
        rc = ar_errorf("feature cache %s: cannot create entry %s/%s: %s", where, ench, keyh, h5_detail());
    else if (H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        rc = ar_errorf("feature cache %s: cannot write entry %s/%s: %s", where, ench, keyh, h5_detail());
    if (!rc) {   /* the checksum last: an entry without it is an unfinished write */
        fc_hash sum = entry_checksum(enc, key, ndim, dims, data, numel);
        uint64_t v[2] = {sum.hi, sum.lo};
        hsize_t two = 2;
        hid_t asp = H5Screate_simple(1, &two, NULL);
        hid_t a = asp < 0 ? -1 : H5Acreate2(d, FC_CHECKSUM_ATTR, H5T_STD_U64LE, asp, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0 || H5Awrite(a, H5T_NATIVE_UINT64, v) < 0)
            rc = ar_errorf("feature cache %s: cannot write the checksum of entry %s/%s: %s", where, ench, keyh, h5_detail());
        if (a >= 0) H5Aclose(a);
        if (asp >= 0) H5Sclose(asp);
    }
    if (d >= 0) H5Dclose(d);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    if (rc && d >= 0) {   /* best effort: leave no half-written entry behind */
        H5Ldelete(g, keyh, H5P_DEFAULT);
        H5Eclear2(H5E_DEFAULT);
    }
    if (!rc && H5Fflush(c->file, H5F_SCOPE_LOCAL) < 0)
        rc = ar_errorf("feature cache %s: cannot flush after entry %s/%s: %s", where, ench, keyh, h5_detail());
    return rc;
}

int fc_put(fc_cache *c, fc_hash enc, fc_hash key, const float *data, const int *shape, int ndim) {
    if (!c || !data) return ar_errorf("fc_put: NULL argument");
    hsize_t dims[FC_MAX_NDIM];
    size_t numel;
    if (check_shape("fc_put", shape, ndim, dims, &numel) < 0) return -1;
    char ench[FC_HEX_LEN + 1], keyh[FC_HEX_LEN + 1];
    fc_hash_hex(enc, ench);
    fc_hash_hex(key, keyh);
    if (!c->writable) return ar_errorf("feature cache %s: opened read-only; cannot store entry %s/%s", c->path, ench, keyh);
    h5_quiet q;
    h5_quiet_begin(&q);
    int bad, rc;
    hid_t g = open_group(c, ench, &bad);
    if (g == 0)
        g = ar_errorf("feature cache %s: encoder %s %s", c->path, ench,
                      bad == 2 ? "cannot be read (the file is damaged; delete it to rebuild the cache)"
                      : bad    ? "is not a valid encoder group (fc_add_encoder replaces it)"
                               : "was never added (fc_add_encoder first)");
    if (g < 0) {
        rc = -1;
    } else {
        rc = put_entry(c, g, enc, key, keyh, data, dims, ndim, numel);
        H5Gclose(g);
    }
    h5_quiet_end(&q);
    if (!rc) c->st.puts++;
    return rc;
}
