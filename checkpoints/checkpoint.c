/* checkpoints/checkpoint.c — see checkpoint.h for the file layout and the
 * guarantees. Every HDF5 call runs with the library's own error printing
 * switched off (and restored afterwards); messages are built here, with the
 * innermost HDF5 error description appended where it helps. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* memfd_create */
#endif
#include "core/h5util.h"
#include "core/fs.h"
#include "checkpoints/checkpoint.h"

#include "core/error.h"
#include "core/log.h"
#include "kernels/kernels.h"

#include <hdf5.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CKPT_PATH_MAX 4096

/* ------------------------------------------------------------------------ */
/* Training state                                                           */
/* ------------------------------------------------------------------------ */
int ckpt_state_set_config(ar_train_state *st, const char *text) {
    char *s = strdup(text ? text : "");
    if (!s) return ar_errorf("checkpoint: out of memory copying the config text");
    free(st->config_text);
    st->config_text = s;
    return 0;
}

void ckpt_state_free(ar_train_state *st) {
    free(st->config_text);
    memset(st, 0, sizeof *st);
}

/* ------------------------------------------------------------------------ */
/* HDF5 helpers                                                             */
/* ------------------------------------------------------------------------ */
/* Switches HDF5's automatic error printing off for one public call. */

/* Why a registry name cannot be a link name, or NULL if it can. */
static const char *bad_name(const char *name) {
    if (!name[0]) return "is empty";
    if (strcmp(name, ".") == 0) return "is '.', HDF5's name for the current group";
    if (strchr(name, '/')) return "contains '/', HDF5's path separator";
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Checksums                                                                */
/* ------------------------------------------------------------------------ */
/* XXH3-64 of the state's numbers as 11 little-endian 64-bit words: step,
 * epoch, data_position, data_skipped, seed, rng_state[0..3], frozen_included
 * and the format version (see checkpoint.h). */
static uint64_t state_checksum(const ar_train_state *st, int32_t frozen_included) {
    uint64_t w[11] = {(uint64_t)st->step, (uint64_t)st->epoch, (uint64_t)st->data_position,
                      (uint64_t)st->data_skipped, st->seed, st->rng.s[0], st->rng.s[1], st->rng.s[2], st->rng.s[3],
                      (uint64_t)(int64_t)frozen_included, (uint64_t)CKPT_VERSION};
    unsigned char b[sizeof w];
    for (int i = 0; i < 11; i++)
        for (int k = 0; k < 8; k++) b[8 * i + k] = (unsigned char)(w[i] >> (8 * k));
    return XXH3_64bits(b, sizeof b);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */
/* A scalar (n == 0) or 1-D attribute of n values. */
static int write_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int n, const void *val) {
    hsize_t dim = (hsize_t)n;
    hid_t sp = n ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mtype, val);
    if (rc < 0) ar_errorf("cannot write attribute '%s': %s", name, h5_detail());
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static hid_t vlen_utf8(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* A variable-length UTF-8 string: a root attribute (dataset = 0) or a scalar dataset. */
static int write_string(hid_t loc, const char *name, const char *s, int dataset) {
    hid_t t = vlen_utf8();
    hid_t sp = H5Screate(H5S_SCALAR);
    herr_t rc = -1;
    if (t >= 0 && sp >= 0) {
        if (dataset) {
            hid_t d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            rc = d < 0 ? -1 : H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s);
            if (d >= 0) H5Dclose(d);
        } else {
            hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
            rc = a < 0 ? -1 : H5Awrite(a, t, &s);
            if (a >= 0) H5Aclose(a);
        }
    }
    if (rc < 0) ar_errorf("cannot write %s '%s': %s", dataset ? "dataset" : "attribute", name, h5_detail());
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return rc < 0 ? -1 : 0;
}

/* Downloads n floats at src into host and writes them as gname/<p->name>. */
/* src: the tensor's backend floats, or NULL for its weights through
 * params_download (a bf16-stored frozen weight is widened, saved as float32). */
static int write_tensor(hid_t g, const char *gname, const ar_params *ps, const ar_param *p, const float *src,
                        float *host) {
    hsize_t dims[4];
    for (int i = 0; i < p->ndim; i++) dims[i] = (hsize_t)p->shape[i];
    if (src) k_download(host, src, p->numel * sizeof(float));
    else if (params_download(ps, p, host)) return -1;
    hid_t sp = H5Screate_simple(p->ndim, dims, NULL);
    hid_t d = sp < 0 ? -1 : H5Dcreate2(g, p->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, host);
    if (rc < 0) ar_errorf("cannot write tensor '%s' to /%s: %s", p->name, gname, h5_detail());
    if (rc >= 0) {
        uint64_t sum = XXH3_64bits(host, p->numel * sizeof(float));
        if (write_attr(d, CKPT_CHECKSUM_ATTR, H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &sum) < 0) {
            ar_error_prefix("tensor '%s' in /%s: ", p->name, gname);
            rc = -1;
        }
    }
    if (d >= 0) H5Dclose(d);
    if (sp >= 0) H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

/* One group of tensors: which = 0 weights, 1 adam_m, 2 adam_v. */
static int write_group(hid_t f, const char *gname, const ar_params *ps, int which, int include_frozen,
                       float *host) {
    hid_t g = H5Gcreate2(f, gname, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return ar_errorf("cannot create group /%s: %s", gname, h5_detail());
    int rc = 0;
    for (int i = 0; i < ps->n && rc == 0; i++) {
        const ar_param *p = &ps->p[i];
        if (!p->trainable && (which != 0 || !include_frozen)) continue;
        const float *src = which == 0 ? NULL : (which == 1 ? ps->m : ps->v) + p->goff;
        rc = write_tensor(g, gname, ps, p, src, host);
    }
    H5Gclose(g);
    return rc;
}

/* After a failed write (ENOSPC, EIO, EFBIG) HDF5 keeps a file open when
 * H5Fclose cannot flush it, and tries again at exit, where it crashes. The
 * half-written .tmp is removed anyway, so its descriptor is pointed at an
 * anonymous in-memory file (memfd; sparse, so only the few metadata blocks
 * HDF5 still writes take memory): the remaining writes and the final
 * ftruncate succeed there and the close completes. */
static int vfd_of(hid_t f) {
    void *h = NULL;
    if (H5Fget_vfd_handle(f, H5P_DEFAULT, &h) < 0 || !h) { H5Eclear2(H5E_DEFAULT); return -1; }
    return *(int *)h;
}
static void discard_writes(int fd) {
    int nul = fd < 0 ? -1 : memfd_create("anyref-discarded-checkpoint", 0);
    if (nul < 0) return;
    dup2(nul, fd);
    close(nul);
}

/* Before HDF5 sees the file: creates tmp, writes and syncs a block and
 * reserves `bytes` (the tensors' size, a lower bound of the file's) with
 * posix_fallocate, so that a full disk or an unwritable target fails here,
 * cleanly: HDF5 cannot always recover from a failed create or close (it keeps
 * the half-open file and trips over it at exit). Filesystems without
 * fallocate skip the reservation. 0, or -1 + ar_error (tmp removed). */
static int reserve(const char *tmp, size_t bytes) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return ar_errorf("cannot create '%s': %s", tmp, strerror(errno));
    char block[4096];
    memset(block, 0, sizeof block);
    int err = 0;
    const char *what = "write";
    if (write(fd, block, sizeof block) != (ssize_t)sizeof block) err = errno ? errno : EIO;
    else if (fsync(fd) != 0) { err = errno; what = "sync"; }
    else {
        int e = posix_fallocate(fd, 0, (off_t)bytes);
        if (e && e != EOPNOTSUPP && e != EINVAL && e != ENODEV && e != ESPIPE) { err = e; what = "reserve"; }
    }
    if (close(fd) != 0 && !err) { err = errno; what = "close"; }
    if (err) {
        unlink(tmp);
        if (!strcmp(what, "reserve"))
            return ar_errorf("cannot reserve %.1f MiB for '%s': %s", bytes / 1048576.0, tmp, strerror(err));
        return ar_errorf("cannot %s '%s': %s", what, tmp, strerror(err));
    }
    return 0;
}

/* Writes the whole file at tmp (flushed and closed). */
static int write_file(const char *tmp, const ar_params *ps, const ar_train_state *st, int include_frozen,
                      float *host) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return ar_errorf("cannot set up HDF5 file access: %s", h5_detail());
    }
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0) ar_errorf("cannot create '%s': %s", tmp, h5_detail());
    H5Pclose(fapl);
    if (f < 0) return -1;

    char created[32];
    time_t now = time(NULL);
    struct tm tmv;
    gmtime_r(&now, &tmv);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    int32_t version = CKPT_VERSION, frozen = include_frozen ? 1 : 0, complete = 1;

    int rc = 0;
    if (!rc) rc = write_string(f, "format", CKPT_FORMAT, 0);
    if (!rc) rc = write_attr(f, "version", H5T_STD_I32LE, H5T_NATIVE_INT32, 0, &version);
    if (!rc) rc = write_attr(f, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &st->step);
    if (!rc) rc = write_attr(f, "epoch", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &st->epoch);
    if (!rc) rc = write_attr(f, "data_position", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &st->data_position);
    if (!rc) rc = write_attr(f, "data_skipped", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &st->data_skipped);
    if (!rc) rc = write_attr(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &st->seed);
    if (!rc) rc = write_attr(f, "rng_state", H5T_STD_U64LE, H5T_NATIVE_UINT64, 4, st->rng.s);
    if (!rc) rc = write_string(f, "created", created, 0);
    if (!rc) rc = write_attr(f, "frozen_included", H5T_STD_I32LE, H5T_NATIVE_INT32, 0, &frozen);
    if (!rc && st->loss_scale > 0) {   /* optional (not in the state checksum): the dynamic loss scale */
        rc = write_attr(f, "loss_scale", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &st->loss_scale);
        if (!rc) rc = write_attr(f, "loss_scale_good", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &st->loss_scale_good);
    }
    if (!rc) rc = write_string(f, "config", st->config_text ? st->config_text : "", 1);
    if (!rc) {
        const char *ct = st->config_text ? st->config_text : "";
        uint64_t csum = XXH3_64bits(ct, strlen(ct)), ssum = state_checksum(st, frozen);
        hid_t d = H5Dopen2(f, "config", H5P_DEFAULT);
        rc = d < 0 ? ar_errorf("cannot reopen dataset 'config': %s", h5_detail())
                   : write_attr(d, CKPT_CHECKSUM_ATTR, H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &csum);
        if (d >= 0) H5Dclose(d);
        if (!rc) rc = write_attr(f, "state_checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &ssum);
        if (!rc) rc = write_string(f, "checksums", CKPT_CHECKSUM_ALGO, 0);
    }
    if (!rc) rc = write_group(f, "weights", ps, 0, include_frozen, host);
    if (!rc) rc = write_group(f, "adam_m", ps, 1, include_frozen, host);
    if (!rc) rc = write_group(f, "adam_v", ps, 2, include_frozen, host);
    if (!rc) rc = write_attr(f, "complete", H5T_STD_I32LE, H5T_NATIVE_INT32, 0, &complete);
    if (!rc && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = ar_errorf("cannot flush '%s': %s", tmp, h5_detail());
    int fd = vfd_of(f);
    if (rc) discard_writes(fd);
    if (H5Fclose(f) < 0) {
        if (!rc) rc = ar_errorf("cannot close '%s': %s", tmp, h5_detail());
        discard_writes(fd);   /* the id is dead, the file object is not: see discard_writes */
    }
    return rc;
}


int ckpt_save(const char *path, const ar_params *ps, const ar_train_state *st, int include_frozen) {
    if (!path || !path[0]) return ar_errorf("checkpoint: empty path");
    if (!ps || !ps->w) return ar_errorf("checkpoint %s: the parameter registry is not allocated", path);
    if (!st) return ar_errorf("checkpoint %s: no training state given", path);
    char tmp[CKPT_PATH_MAX], dir[CKPT_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return ar_errorf("checkpoint %s: path too long", path);
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);

    size_t maxn = 1, bytes = 0;
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        if (!p->trainable && !include_frozen) continue;
        bytes += p->numel * sizeof(float) * (p->trainable ? 3 : 1);
        const char *why = bad_name(p->name);
        if (why) return ar_errorf("checkpoint %s: tensor name '%s' %s; it cannot be saved", path, p->name, why);
        if (p->numel > maxn) maxn = p->numel;
    }
    if (ps->ng && (!ps->m || !ps->v)) return ar_errorf("checkpoint %s: the registry has no AdamW moments", path);
    if (ar_mkdir_parent(path) < 0) return ar_error_prefix("checkpoint %s: ", path);
    float *host = malloc(maxn * sizeof(float));
    if (!host) return ar_errorf("checkpoint %s: out of memory for a %.1f MiB staging buffer", path,
                                maxn * 4.0 / 1048576);
    int rc = reserve(tmp, bytes);
    if (!rc) {
        h5_quiet q;
        h5_quiet_begin(&q);
        rc = write_file(tmp, ps, st, include_frozen, host);
        h5_quiet_end(&q);
    }
    free(host);
    if (!rc) rc = ar_fsync_path(tmp, 0);
    if (!rc && rename(tmp, path) != 0)
        rc = ar_errorf("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (rc) {
        unlink(tmp);
        return ar_error_prefix("checkpoint %s: ", path);
    }
    if (ar_fsync_path(dir, 1) < 0) return ar_error_prefix("checkpoint %s: ", path);
    return 0;
}

int ckpt_path(const char *run_dir, int64_t step, char *out, size_t cap) {
    if (step < 0) return ar_errorf("checkpoint path: negative step %" PRId64, step);
    int n = snprintf(out, cap, "%s/checkpoints/step_%06" PRId64 ".h5", run_dir, step);
    if (n < 0 || (size_t)n >= cap) return ar_errorf("checkpoint path: '%s' too long for %zu bytes", run_dir, cap);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */
/* ------------------------------------------------------------------------ */
/* Integer attribute of n values (n == 1: scalar or one-element array). */
static int read_int_attr(hid_t loc, const char *name, int n, hid_t mtype, void *out) {
    if (H5Aexists(loc, name) <= 0) return ar_errorf("attribute '%s' missing", name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    int rc = 0;
    if (t < 0 || sp < 0) {
        rc = ar_errorf("attribute '%s' unreadable: %s", name, h5_detail());
    } else if (H5Tget_class(t) != H5T_INTEGER) {
        char ds[48];
        h5_dtype_str(ds, sizeof ds, t);
        rc = ar_errorf("attribute '%s' is %s, expected an integer", name, ds);
    } else if (H5Sget_simple_extent_npoints(sp) != n) {
        rc = ar_errorf("attribute '%s' has %lld values, expected %d", name,
                       (long long)H5Sget_simple_extent_npoints(sp), n);
    } else if (H5Aread(a, mtype, out) < 0) {
        rc = ar_errorf("attribute '%s' unreadable as %s: %s", name,
                       mtype == H5T_NATIVE_UINT64 ? "uint64" : "int64", h5_detail());
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

/* A scalar string attribute (dataset = 0) or dataset (dataset = 1), variable
 * or fixed length, into a malloc'd NUL-terminated copy. */
static int read_string(hid_t loc, const char *name, int dataset, char **out) {
    const char *what = dataset ? "dataset" : "attribute";
    *out = NULL;
    if ((dataset ? H5Lexists(loc, name, H5P_DEFAULT) : H5Aexists(loc, name)) <= 0)
        return ar_errorf("%s '%s' missing", what, name);
    hid_t o = dataset ? H5Dopen2(loc, name, H5P_DEFAULT) : H5Aopen(loc, name, H5P_DEFAULT);
    hid_t t = o < 0 ? -1 : dataset ? H5Dget_type(o) : H5Aget_type(o);
    hid_t sp = o < 0 ? -1 : dataset ? H5Dget_space(o) : H5Aget_space(o);
    hid_t mt = -1;
    int rc = 0;
    if (t < 0 || sp < 0) {
        rc = ar_errorf("%s '%s' unreadable: %s", what, name, h5_detail());
    } else if (H5Tget_class(t) != H5T_STRING) {
        char ds[48];
        h5_dtype_str(ds, sizeof ds, t);
        rc = ar_errorf("%s '%s' is %s, expected a string", what, name, ds);
    } else if (H5Sget_simple_extent_npoints(sp) != 1) {
        rc = ar_errorf("%s '%s' holds %lld strings, expected one", what, name,
                       (long long)H5Sget_simple_extent_npoints(sp));
    } else if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        mt = vlen_utf8();
        herr_t r = mt < 0 ? -1 : dataset ? H5Dread(o, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &s) : H5Aread(o, mt, &s);
        if (r < 0) rc = ar_errorf("%s '%s' unreadable: %s", what, name, h5_detail());
        else if (!(*out = strdup(s ? s : ""))) rc = ar_errorf("out of memory reading %s '%s'", what, name);
        if (s) H5free_memory(s);
    } else {
        size_t size = H5Tget_size(t);
        char *s = calloc(size + 1, 1);
        mt = H5Tcopy(t);
        herr_t r = !s || mt < 0 ? -1
                   : dataset ? H5Dread(o, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, s) : H5Aread(o, mt, s);
        if (!s) rc = ar_errorf("out of memory reading %s '%s'", what, name);
        else if (r < 0) rc = ar_errorf("%s '%s' unreadable: %s", what, name, h5_detail());
        if (rc) free(s);
        else *out = s;
    }
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (o >= 0) { if (dataset) H5Dclose(o); else H5Aclose(o); }
    return rc;
}

/* Opens path read-only and checks format, version and completeness.
 * Returns the file id, or -1 + ar_error (without the "checkpoint <path>: " prefix). */
static hid_t open_checked(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return ar_errorf("cannot open: %s", strerror(errno));
    if (!S_ISREG(sb.st_mode)) return ar_errorf("not a regular file");
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return ar_errorf("not an HDF5 file (%lld bytes, no HDF5 signature)", (long long)sb.st_size);
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return ar_errorf("cannot set up HDF5 file access: %s", h5_detail());
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0)   /* the detail first: the next HDF5 call clears the error stack */
        ar_errorf("cannot open HDF5 file (truncated or corrupt, %lld bytes): %s", (long long)sb.st_size,
                  h5_detail());
    H5Pclose(fapl);
    if (f < 0) return -1;
    char *format = NULL;
    int32_t version = 0, complete = 0;
    int rc = read_string(f, "format", 0, &format);
    if (rc) ar_error_prefix("not an anyref checkpoint: ");
    else if (strcmp(format, CKPT_FORMAT) != 0)
        rc = ar_errorf("attribute 'format' is '%s', expected '%s'", format, CKPT_FORMAT);
    free(format);
    if (!rc) rc = read_int_attr(f, "version", 1, H5T_NATIVE_INT32, &version);
    if (!rc && version != CKPT_VERSION)
        rc = ar_errorf("unsupported version %d (this build reads version %d)", (int)version, CKPT_VERSION);
    if (!rc && H5Aexists(f, "complete") <= 0)
        rc = ar_errorf("attribute 'complete' missing: the save that wrote this file did not finish");
    if (!rc) rc = read_int_attr(f, "complete", 1, H5T_NATIVE_INT32, &complete);
    if (!rc && complete != 1) rc = ar_errorf("attribute 'complete' is %d, expected 1", (int)complete);
    if (rc) {
        H5Fclose(f);
        return -1;
    }
    return f;
}

/* The file's checksum scheme: 1 when it has one (every tensor, /config and
 * the state must then carry theirs), 0 for a file written before checksums,
 * -1 + ar_error for an unknown scheme. */
static int checksum_scheme(hid_t f) {
    if (H5Aexists(f, "checksums") <= 0) return 0;
    char *algo = NULL;
    if (read_string(f, "checksums", 0, &algo) < 0) return -1;
    int ok = strcmp(algo, CKPT_CHECKSUM_ALGO) == 0;
    if (!ok) ar_errorf("attribute 'checksums' is '%s'; this build knows '%s' only", algo, CKPT_CHECKSUM_ALGO);
    free(algo);
    return ok ? 1 : -1;
}

/* Compares the stored checksum of dataset d (what = "tensor 'x' in /weights")
 * with the checksum of the n bytes read from it. */
static int verify_checksum(hid_t d, const char *what, const void *data, size_t n) {
    uint64_t want = 0;
    if (read_int_attr(d, CKPT_CHECKSUM_ATTR, 1, H5T_NATIVE_UINT64, &want) < 0)
        return ar_error_prefix("%s: ", what);
    uint64_t have = XXH3_64bits(data, n);
    if (have != want)
        return ar_errorf("%s is corrupt: checksum %016llx, the file says %016llx", what, (unsigned long long)have,
                         (unsigned long long)want);
    return 0;
}

/* The config text's and the state's checksums (files with checksums). */
static int verify_config_state(hid_t f, const char *config, const ar_train_state *st, int32_t frozen_included) {
    hid_t d = H5Dopen2(f, "config", H5P_DEFAULT);
    if (d < 0) return ar_errorf("dataset 'config' unreadable: %s", h5_detail());
    int rc = verify_checksum(d, "the config text (/config)", config, strlen(config));
    H5Dclose(d);
    if (rc) return -1;
    uint64_t want = 0;
    if (read_int_attr(f, "state_checksum", 1, H5T_NATIVE_UINT64, &want) < 0) return -1;
    uint64_t have = state_checksum(st, frozen_included);
    if (have != want)
        return ar_errorf("the training state (step, epoch, data position, seed, RNG) is corrupt: checksum %016llx, "
                         "attribute 'state_checksum' says %016llx", (unsigned long long)have, (unsigned long long)want);
    return 0;
}

/* A scalar floating-point attribute, read as double. */
static int read_float_attr(hid_t loc, const char *name, double *out) {
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    int rc = 0;
    if (t < 0 || sp < 0) rc = ar_errorf("attribute '%s' unreadable: %s", name, h5_detail());
    else if (H5Tget_class(t) != H5T_FLOAT) rc = ar_errorf("attribute '%s' is not a floating-point number", name);
    else if (H5Sget_simple_extent_npoints(sp) != 1) rc = ar_errorf("attribute '%s' is not a scalar", name);
    else if (H5Aread(a, H5T_NATIVE_DOUBLE, out) < 0) rc = ar_errorf("attribute '%s' unreadable: %s", name, h5_detail());
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

/* Reads the state attributes (not the config) of an open checkpoint. */
static int read_state(hid_t f, ar_train_state *nst, int32_t *frozen_included) {
    int64_t i64[3];
    uint64_t seed, rs[4];
    const char *names[3] = {"step", "epoch", "data_position"};
    for (int k = 0; k < 3; k++)
        if (read_int_attr(f, names[k], 1, H5T_NATIVE_INT64, &i64[k]) < 0) return -1;
    if (read_int_attr(f, "seed", 1, H5T_NATIVE_UINT64, &seed) < 0) return -1;
    if (read_int_attr(f, "rng_state", 4, H5T_NATIVE_UINT64, rs) < 0) return -1;
    if (read_int_attr(f, "frozen_included", 1, H5T_NATIVE_INT32, frozen_included) < 0) return -1;
    nst->step = i64[0]; nst->epoch = i64[1]; nst->data_position = i64[2];
    nst->data_skipped = 0;   /* optional (checkpoints before it have none) */
    if (H5Aexists(f, "data_skipped") > 0 && read_int_attr(f, "data_skipped", 1, H5T_NATIVE_INT64, &nst->data_skipped) < 0)
        return -1;
    /* counters index the data order (data/loader.c, data/token_dataset.c): never negative */
    const int64_t cnt[4] = {nst->step, nst->epoch, nst->data_position, nst->data_skipped};
    const char *cnt_names[4] = {"step", "epoch", "data_position", "data_skipped"};
    for (int k = 0; k < 4; k++)
        if (cnt[k] < 0) return ar_errorf("attribute '%s' is %" PRId64 ", expected >= 0", cnt_names[k], cnt[k]);
    if (!(rs[0] | rs[1] | rs[2] | rs[3]))
        return ar_errorf("attribute 'rng_state' is all zero (not a xoshiro256** state)");
    nst->seed = seed;
    memcpy(nst->rng.s, rs, sizeof rs);
    nst->loss_scale = 0;   /* optional: written by runs with dynamic loss scaling */
    nst->loss_scale_good = 0;
    if (H5Aexists(f, "loss_scale") > 0) {
        if (read_float_attr(f, "loss_scale", &nst->loss_scale) < 0 ||
            read_int_attr(f, "loss_scale_good", 1, H5T_NATIVE_INT64, &nst->loss_scale_good) < 0)
            return -1;
        if (!(nst->loss_scale > 0) || !isfinite(nst->loss_scale) || nst->loss_scale_good < 0)
            return ar_errorf("attributes 'loss_scale' = %g / 'loss_scale_good' = %" PRId64 ": expected a finite scale > 0 "
                             "and a count >= 0", nst->loss_scale, nst->loss_scale_good);
    }
    return 0;
}

typedef struct {
    const ar_param *p;
    int grp;             /* 0 weights, 1 adam_m, 2 adam_v */
    size_t stage_off;    /* floats into the staging buffer */
} load_item;

static const char *const k_groups[3] = {"weights", "adam_m", "adam_v"};

/* Checks dtype and shape of gname/<p->name>. */
static int check_dataset(hid_t g, const char *gname, const ar_param *p) {
    hid_t d = H5Dopen2(g, p->name, H5P_DEFAULT);
    if (d < 0) return ar_errorf("'/%s/%s' is not a readable dataset: %s", gname, p->name, h5_detail());
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int rc = 0;
    if (t < 0 || sp < 0) {
        rc = ar_errorf("tensor '%s' in /%s unreadable: %s", p->name, gname, h5_detail());
    } else if (H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 4) {
        char ds[48];
        h5_dtype_str(ds, sizeof ds, t);
        rc = ar_errorf("tensor '%s' in /%s has dtype %s, expected float32", p->name, gname, ds);
    } else {
        hsize_t dims[H5S_MAX_RANK], want[4];
        int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
        int same = nd == p->ndim;
        for (int i = 0; i < p->ndim; i++) {
            want[i] = (hsize_t)p->shape[i];
            if (same && dims[i] != want[i]) same = 0;
        }
        if (nd < 0) {
            rc = ar_errorf("tensor '%s' in /%s has an unreadable shape: %s", p->name, gname, h5_detail());
        } else if (!same) {
            char have[160], exp[160];
            h5_shape_str(have, sizeof have, nd, dims);
            h5_shape_str(exp, sizeof exp, p->ndim, want);
            rc = ar_errorf("tensor '%s' in /%s has shape %s, model expects %s", p->name, gname, have, exp);
        }
    }
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    return rc;
}

/* Checks one group against the registry and appends what to read to items. */
static int plan_group(hid_t g, int grp, const ar_params *ps, int frozen_included, load_item *items, int *nitems,
                      size_t *nstage) {
    const char *gname = k_groups[grp];
    H5G_info_t info;
    if (H5Gget_info(g, &info) < 0) return ar_errorf("group /%s unreadable: %s", gname, h5_detail());
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[sizeof ps->p[0].name + 1];
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        if (len < 0) return ar_errorf("group /%s: entry %llu unreadable: %s", gname, (unsigned long long)i,
                                      h5_detail());
        if ((size_t)len >= sizeof name)
            return ar_errorf("tensor '%s...' in /%s is not in the model (a checkpoint of a different model?)", name,
                             gname);
        const ar_param *p = params_find(ps, name);
        if (!p)
            return ar_errorf("tensor '%s' in /%s is not in the model (a checkpoint of a different model?)", name,
                             gname);
        if (grp && !p->trainable)
            return ar_errorf("tensor '%s' in /%s is frozen in the model (only trainable tensors have AdamW moments)",
                             name, gname);
    }
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        if (grp && !p->trainable) continue;
        int required = p->trainable || frozen_included;
        const char *why = bad_name(p->name);
        if (why) {
            if (!required) continue;
            return ar_errorf("model tensor name '%s' %s; it cannot be in a checkpoint", p->name, why);
        }
        if (H5Lexists(g, p->name, H5P_DEFAULT) <= 0) {
            if (!required) continue;
            if (p->trainable) return ar_errorf("trainable tensor '%s' missing from /%s", p->name, gname);
            return ar_errorf("frozen tensor '%s' missing from /%s (the file says frozen_included = 1)", p->name, gname);
        }
        if (check_dataset(g, gname, p) < 0) return -1;
        items[*nitems] = (load_item){p, grp, *nstage};
        (*nitems)++;
        *nstage += p->numel;
    }
    return 0;
}

/* Everything that can fail: checks, state, staging. On success the caller
 * uploads stage per items and takes *nst. */
static int load_into_stage(hid_t f, const ar_params *ps, int require_moments, ar_train_state *nst,
                           load_item *items, int *nitems, float **stage) {
    int32_t frozen_included;
    if (read_state(f, nst, &frozen_included) < 0) return -1;
    if (read_string(f, "config", 1, &nst->config_text) < 0) return -1;
    int sums = checksum_scheme(f);
    if (sums < 0 || (sums && verify_config_state(f, nst->config_text, nst, frozen_included) < 0)) return -1;

    int has[3];
    for (int k = 0; k < 3; k++) has[k] = H5Lexists(f, k_groups[k], H5P_DEFAULT) > 0;
    if (!has[0]) return ar_errorf("group /weights missing");
    if (has[1] != has[2])
        return ar_errorf("group /%s missing while /%s is present", has[1] ? "adam_v" : "adam_m",
                         has[1] ? "adam_m" : "adam_v");
    if (!has[1] && require_moments)
        return ar_errorf("no AdamW moments (groups /adam_m and /adam_v missing), but the load requires them");

    size_t nstage = 0;
    for (int k = 0; k < 3; k++) {
        if (!has[k]) continue;
        hid_t g = H5Gopen2(f, k_groups[k], H5P_DEFAULT);
        if (g < 0) return ar_errorf("'/%s' is not a group: %s", k_groups[k], h5_detail());
        int rc = plan_group(g, k, ps, frozen_included != 0, items, nitems, &nstage);
        H5Gclose(g);
        if (rc < 0) return -1;
    }
    *stage = malloc((nstage ? nstage : 1) * sizeof(float));
    if (!*stage) return ar_errorf("out of memory staging %.1f MiB of tensors", nstage * 4.0 / 1048576);
    for (int i = 0; i < *nitems; i++) {
        const load_item *it = &items[i];
        const char *gname = k_groups[it->grp];
        hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
        hid_t d = g < 0 ? -1 : H5Dopen2(g, it->p->name, H5P_DEFAULT);
        herr_t r = d < 0 ? -1 : H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *stage + it->stage_off);
        if (r < 0) ar_errorf("cannot read tensor '%s' from /%s (truncated or corrupt file?): %s", it->p->name, gname,
                             h5_detail());
        if (r >= 0 && sums) {
            char what[sizeof it->p->name + 32];
            snprintf(what, sizeof what, "tensor '%s' in /%s", it->p->name, gname);
            if (verify_checksum(d, what, *stage + it->stage_off, it->p->numel * sizeof(float)) < 0) r = -1;
        }
        if (d >= 0) H5Dclose(d);
        if (g >= 0) H5Gclose(g);
        if (r < 0) return -1;
    }
    return 0;
}

char *ckpt_read_config(const char *path, int64_t *step) {
    if (!path || !path[0]) { ar_errorf("checkpoint: empty path"); return NULL; }
    char *text = NULL;
    h5_quiet q;
    h5_quiet_begin(&q);
    hid_t f = open_checked(path);
    int rc = f < 0 ? -1 : 0;
    if (!rc && step) rc = read_int_attr(f, "step", 1, H5T_NATIVE_INT64, step) < 0 ? -1 : 0;
    if (!rc) rc = read_string(f, "config", 1, &text) < 0 ? -1 : 0;
    if (!rc) {
        ar_train_state st;
        int32_t frozen = 0;
        memset(&st, 0, sizeof st);
        int sums = checksum_scheme(f);
        rc = sums < 0 || (sums && (read_state(f, &st, &frozen) < 0 || verify_config_state(f, text, &st, frozen) < 0))
                 ? -1 : 0;
    }
    if (f >= 0) H5Fclose(f);
    h5_quiet_end(&q);
    if (rc) {
        free(text);
        ar_error_prefix("checkpoint %s: ", path);
        return NULL;
    }
    return text;
}

int ckpt_load(const char *path, ar_params *ps, ar_train_state *st, int require_moments) {
    if (!path || !path[0]) return ar_errorf("checkpoint: empty path");
    if (!ps || !ps->w) return ar_errorf("checkpoint %s: the parameter registry is not allocated", path);
    load_item *items = malloc((size_t)(3 * ps->n + 1) * sizeof *items);
    if (!items) return ar_errorf("checkpoint %s: out of memory", path);
    ar_train_state nst;
    memset(&nst, 0, sizeof nst);
    float *stage = NULL;
    int nitems = 0, rc;

    h5_quiet q;
    h5_quiet_begin(&q);
    hid_t f = open_checked(path);
    if (f < 0) {
        rc = -1;
    } else {
        rc = load_into_stage(f, ps, require_moments, &nst, items, &nitems, &stage);
        H5Fclose(f);
    }
    h5_quiet_end(&q);

    if (rc == 0) {
        for (int i = 0; i < nitems; i++) {
            const load_item *it = &items[i];
            if (it->grp == 0) {   /* weights: a bf16-stored frozen tensor is rounded on the way in */
                if (params_upload(ps, it->p, stage + it->stage_off)) { rc = -1; break; }
                continue;
            }
            float *dst = (it->grp == 1 ? ps->m : ps->v) + it->p->goff;
            k_upload(dst, stage + it->stage_off, it->p->numel * sizeof(float));
        }
        if (st) {
            free(st->config_text);
            *st = nst;
            nst.config_text = NULL;
        }
    } else {
        ar_error_prefix("checkpoint %s: ", path);
    }
    free(nst.config_text);
    free(stage);
    free(items);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Finding the newest checkpoint                                            */
/* ------------------------------------------------------------------------ */
typedef struct { int64_t step; char *name; } ckpt_entry;

static int entry_cmp_desc(const void *a, const void *b) {
    int64_t x = ((const ckpt_entry *)a)->step, y = ((const ckpt_entry *)b)->step;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* step_<1..18 digits>.h5 exactly; the step or -1. */
static int64_t parse_name(const char *s) {
    if (strncmp(s, "step_", 5) != 0) return -1;
    s += 5;
    int64_t v = 0;
    int nd = 0;
    for (; *s >= '0' && *s <= '9'; s++, nd++) {
        if (nd == 18) return -1;
        v = v * 10 + (*s - '0');
    }
    return nd > 0 && strcmp(s, ".h5") == 0 ? v : -1;
}

/* The step_<digits>.h5 files of <run_dir>/checkpoints, newest first, in *out
 * (names malloc'd). 0, 1 when the directory does not exist, -1 + ar_error. */
static int list_checkpoints(const char *dir, ckpt_entry **out, size_t *nout) {
    *out = NULL; *nout = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 1;
        return ar_errorf("checkpoints: cannot read directory '%s': %s", dir, strerror(errno));
    }
    ckpt_entry *e = NULL;
    size_t n = 0, ecap = 0;
    int rc = 0;
    for (struct dirent *de; (de = readdir(d));) {
        int64_t step = parse_name(de->d_name);
        if (step < 0) continue;
        if (n == ecap) {
            size_t nc = ecap ? 2 * ecap : 16;
            ckpt_entry *ne = realloc(e, nc * sizeof *ne);
            if (!ne) { rc = ar_errorf("checkpoints: out of memory listing '%s'", dir); break; }
            e = ne; ecap = nc;
        }
        if (!(e[n].name = strdup(de->d_name))) { rc = ar_errorf("checkpoints: out of memory listing '%s'", dir); break; }
        e[n++].step = step;
    }
    closedir(d);
    if (rc) {
        for (size_t i = 0; i < n; i++) free(e[i].name);
        free(e);
        return -1;
    }
    if (n > 1) qsort(e, n, sizeof *e, entry_cmp_desc);
    *out = e; *nout = n;
    return 0;
}

static void free_list(ckpt_entry *e, size_t n) {
    for (size_t i = 0; i < n; i++) free(e[i].name);
    free(e);
}

/* Reads every dataset of group gname and checks its checksum. */
static int verify_group(hid_t f, const char *gname, float **buf, size_t *bufcap) {
    if (H5Lexists(f, gname, H5P_DEFAULT) <= 0) {
        if (!strcmp(gname, "weights")) return ar_errorf("group /weights missing");
        return 0;
    }
    hid_t g = H5Gopen2(f, gname, H5P_DEFAULT);
    if (g < 0) return ar_errorf("'/%s' is not a group: %s", gname, h5_detail());
    H5G_info_t info;
    int rc = H5Gget_info(g, &info) < 0 ? ar_errorf("group /%s unreadable: %s", gname, h5_detail()) : 0;
    for (hsize_t i = 0; !rc && i < info.nlinks; i++) {
        char name[AR_PARAM_NAME_LEN + 1], what[AR_PARAM_NAME_LEN + 48];
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        if (len < 0 || (size_t)len >= sizeof name) {
            rc = ar_errorf("group /%s: entry %llu has an unreadable or too long name", gname, (unsigned long long)i);
            break;
        }
        snprintf(what, sizeof what, "tensor '%s' in /%s", name, gname);
        hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
        hid_t t = d < 0 ? -1 : H5Dget_type(d), sp = d < 0 ? -1 : H5Dget_space(d);
        hssize_t np = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
        if (d < 0 || t < 0 || np < 0) {
            rc = ar_errorf("%s unreadable: %s", what, h5_detail());
        } else if (H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != 4) {
            rc = ar_errorf("%s is not float32", what);
        } else {
            size_t n = (size_t)np;
            if (n > *bufcap) {
                float *nb = realloc(*buf, n * sizeof(float));
                if (!nb) rc = ar_errorf("out of memory reading %s", what);
                else { *buf = nb; *bufcap = n; }
            }
            if (!rc && n && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *buf) < 0)
                rc = ar_errorf("cannot read %s (truncated or corrupt file?): %s", what, h5_detail());
            if (!rc) rc = verify_checksum(d, what, *buf, n * sizeof(float));
        }
        if (sp >= 0) H5Sclose(sp);
        if (t >= 0) H5Tclose(t);
        if (d >= 0) H5Dclose(d);
    }
    H5Gclose(g);
    return rc;
}

int ckpt_verify(const char *path) {
    if (!path || !path[0]) return ar_errorf("checkpoint: empty path");
    h5_quiet q;
    h5_quiet_begin(&q);
    hid_t f = open_checked(path);
    int rc = f < 0 ? -1 : 0;
    char *config = NULL;
    float *buf = NULL;
    size_t cap = 0;
    if (!rc) {
        ar_train_state st;
        int32_t frozen = 0;
        memset(&st, 0, sizeof st);
        int sums = checksum_scheme(f);
        if (sums < 0 || read_state(f, &st, &frozen) < 0 || read_string(f, "config", 1, &config) < 0) rc = -1;
        else if (sums == 0) rc = 0;   /* written before checksums: nothing more to verify */
        else if (verify_config_state(f, config, &st, frozen) < 0) rc = -1;
        else
            for (int k = 0; k < 3 && !rc; k++) rc = verify_group(f, k_groups[k], &buf, &cap);
    }
    if (f >= 0) H5Fclose(f);
    h5_quiet_end(&q);
    free(config);
    free(buf);
    if (rc) return ar_error_prefix("checkpoint %s: ", path);
    return 0;
}

/* The run's checkpoints newest first: the first one accept() takes (0) is
 * copied to out and 0 returned; one it refuses (-1) is warned with `why`
 * and counted in *refused; 1 when none is taken; -1 + ar_error. */
typedef int (*ckpt_accept_fn)(void *ctx, const char *path);
static int walk_latest(const char *run_dir, ckpt_accept_fn accept, void *ctx, const char *why, char *out, size_t cap,
                       int *refused) {
    char dir[CKPT_PATH_MAX], path[CKPT_PATH_MAX];
    if (refused) *refused = 0;
    if (snprintf(dir, sizeof dir, "%s/checkpoints", run_dir) >= (int)sizeof dir)
        return ar_errorf("checkpoints of run '%s': path too long", run_dir);
    ckpt_entry *e;
    size_t n;
    int rc = list_checkpoints(dir, &e, &n);
    if (rc) return rc;
    rc = 1;
    for (size_t i = 0; rc == 1 && i < n; i++) {
        if (snprintf(path, sizeof path, "%s/%s", dir, e[i].name) >= (int)sizeof path) {
            rc = ar_errorf("checkpoints: path '%s/%s' too long", dir, e[i].name);
            break;
        }
        if (strlen(path) >= cap) {
            rc = ar_errorf("checkpoint %s: path longer than the %zu-byte buffer", path, cap);
            break;
        }
        if (accept(ctx, path) < 0) {
            log_warn("%s; %s", ar_error(), why);
            if (refused) (*refused)++;
            continue;
        }
        strcpy(out, path);
        rc = 0;
    }
    free_list(e, n);
    return rc;
}

static int accept_verified(void *ctx, const char *path) {
    (void)ctx;
    return ckpt_verify(path);
}

int ckpt_latest(const char *run_dir, char *out, size_t cap) {
    return walk_latest(run_dir, accept_verified, NULL, "skipping it", out, cap, NULL);
}

typedef struct {
    ar_params *ps;
    ar_train_state *st;
    int require_moments;
} load_ctx;

static int accept_loaded(void *ctx, const char *path) {
    load_ctx *c = ctx;
    return ckpt_load(path, c->ps, c->st, c->require_moments);
}

int ckpt_load_latest(const char *run_dir, ar_params *ps, ar_train_state *st, int require_moments, char *out,
                     size_t cap, int *refused) {
    load_ctx c = {ps, st, require_moments};
    return walk_latest(run_dir, accept_loaded, &c, "refused, falling back to the previous checkpoint", out, cap, refused);
}

int ckpt_prune(const char *run_dir, int64_t newest, int keep) {
    char dir[CKPT_PATH_MAX], path[CKPT_PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/checkpoints", run_dir) >= (int)sizeof dir)
        return ar_errorf("checkpoints of run '%s': path too long", run_dir);
    /* leftovers of killed saves: step_<digits>.h5.tmp */
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : ar_errorf("checkpoints: cannot read directory '%s': %s", dir, strerror(errno));
    int removed = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".tmp") != 0) continue;
        char base[NAME_MAX + 1];
        snprintf(base, sizeof base, "%.*s", (int)(len - 4), de->d_name);
        if (parse_name(base) < 0) continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) < (int)sizeof path && unlink(path) == 0) removed++;
    }
    closedir(d);
    if (keep <= 0) return removed;
    ckpt_entry *e;
    size_t n;
    int rc = list_checkpoints(dir, &e, &n);
    if (rc) return rc < 0 ? -1 : removed;
    int kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].step > newest) continue;   /* a newer run's files (e.g. refused ones): not ours to judge */
        if (kept < keep) { kept++; continue; }
        if (snprintf(path, sizeof path, "%s/%s", dir, e[i].name) >= (int)sizeof path) continue;
        if (unlink(path) == 0) removed++;
        else if (errno != ENOENT) rc = ar_errorf("checkpoints: cannot remove '%s': %s", path, strerror(errno));
    }
    free_list(e, n);
    return rc < 0 ? -1 : removed;
}
