/* data/token_dataset.c — see token_dataset.h for the format and the
 * guarantees. Every public function runs HDF5 with its own error printing
 * switched off (restored afterwards) and builds the messages here, with the
 * innermost HDF5 error description appended where it helps.
 *
 * Reading: a row is three hyperslab reads ([1, T] of input_ids, labels and
 * the mask) into per-handle buffers, through a dataset chunk cache, then
 * checked and shifted into the caller's buffers. The permutation of the
 * current epoch (N int64) is kept in memory and rebuilt when the cursor's
 * (seed, epoch) changes. */
#include "core/h5util.h"
#include "core/fs.h"
#include "data/token_dataset.h"

#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"

#include <hdf5.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TDS_PATH_MAX 4096
#define TDS_WARN_LIMIT 10          /* broken rows warned one by one per handle */
#define TDS_CHUNK_BYTES 16384      /* writer: target size of one chunk */
#define TDS_CACHE_BYTES (8u << 20) /* reader: chunk cache per dataset */
#define TDS_CACHE_SLOTS 12421      /* a prime, ~100x the chunks that fit */

struct token_dataset {
    char   *path;
    hid_t   file, ids, labels, mask;          /* mask < 0: no attention_mask */
    hid_t   sp_ids, sp_labels, sp_mask, sp_mem; /* file spaces, [T] memory space */
    int64_t n;
    int     t;
    int     vocab;                            /* bound for ids and labels */
    int     pad;
    int    *row_ids, *row_labels, *row_mask;  /* [t] staging of the row just read */
    int64_t *perm;                            /* [n] order of (perm_seed, perm_epoch) */
    uint64_t perm_seed;
    int64_t perm_epoch;                       /* -1: perm not built yet */
    int64_t warned, unreported;               /* broken-row warnings given / withheld */
    char    reason[512];                      /* why the last row was broken */
};

/* ------------------------------------------------------------------------ */
/* HDF5 helpers                                                             */
/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* Opening                                                                  */
/* ------------------------------------------------------------------------ */
enum { KIND_INT32, KIND_MASK };

/* Opens the 2-D dataset `name` and checks its dtype; dims[2] receive its
 * shape. Returns the dataset, 0 if absent and !required, -1 + ar_error. */
static hid_t open_2d(token_dataset *ds, const char *name, int required, int kind, hsize_t dims[2]) {
    htri_t ex = H5Lexists(ds->file, name, H5P_DEFAULT);
    if (ex < 0) return ar_errorf("token dataset %s: cannot look up '%s': %s", ds->path, name, h5_detail());
    if (ex == 0) {
        if (!required) return 0;
        return ar_errorf("token dataset %s: no dataset '%s' (expected int32 [N, T] %s)", ds->path, name,
                         strcmp(name, "labels") == 0 ? "labels, -100 = ignored" : "token ids");
    }
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl >= 0) H5Pset_chunk_cache(dapl, TDS_CACHE_SLOTS, TDS_CACHE_BYTES, H5D_CHUNK_CACHE_W0_DEFAULT);
    hid_t d = H5Dopen2(ds->file, name, dapl >= 0 ? dapl : H5P_DEFAULT);
    if (dapl >= 0) H5Pclose(dapl);
    if (d < 0) return ar_errorf("token dataset %s: '%s' is not a readable dataset: %s", ds->path, name, h5_detail());

    char why[160] = "";
    hid_t t = H5Dget_type(d);
    char tname[64] = "unknown";
    if (t >= 0) h5_dtype_str(tname, sizeof tname, t);
    if (t < 0) {
        snprintf(why, sizeof why, "its dtype cannot be read: %s", h5_detail());
    } else if (kind == KIND_INT32) {
        if (H5Tget_class(t) != H5T_INTEGER || H5Tget_size(t) != 4 || H5Tget_sign(t) != H5T_SGN_2)
            snprintf(why, sizeof why, "has dtype %s; expected int32", tname);
    } else {
        int ok = H5Tget_class(t) == H5T_INTEGER;
        if (H5Tget_class(t) == H5T_ENUM) {   /* h5py's bool: enum {FALSE=0, TRUE=1} over int8 */
            hid_t s = H5Tget_super(t);
            ok = s >= 0 && H5Tget_class(s) == H5T_INTEGER;
            if (s >= 0) H5Tclose(s);
        }
        if (!ok) snprintf(why, sizeof why, "has dtype %s; expected an integer or bool (1 = token, 0 = pad)", tname);
    }
    if (t >= 0) H5Tclose(t);
    if (!why[0]) {
        hid_t sp = H5Dget_space(d);
        int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
        hsize_t dd[H5S_MAX_RANK];
        if (nd < 0) {
            snprintf(why, sizeof why, "its shape cannot be read: %s", h5_detail());
        } else {
            H5Sget_simple_extent_dims(sp, dd, NULL);
            if (nd != 2) {
                char s[96];
                h5_shape_str(s, sizeof s, nd, dd);
                snprintf(why, sizeof why, "has shape %s; expected 2-D [N, T]", s);
            } else {
                dims[0] = dd[0];
                dims[1] = dd[1];
            }
        }
        if (sp >= 0) H5Sclose(sp);
    }
    if (why[0]) {
        H5Dclose(d);
        return ar_errorf("token dataset %s: dataset '%s' %s", ds->path, name, why);
    }
    return d;
}

/* Reads the optional integer root attribute `name` into *v.
 * 1 = present, 0 = absent, -1 + ar_error. */
static int read_int_attr(token_dataset *ds, const char *name, long long *v) {
    htri_t ex = H5Aexists(ds->file, name);
    if (ex < 0) return ar_errorf("token dataset %s: cannot look up attribute '%s': %s", ds->path, name, h5_detail());
    if (ex == 0) return 0;
    hid_t a = H5Aopen(ds->file, name, H5P_DEFAULT);
    if (a < 0) return ar_errorf("token dataset %s: cannot open attribute '%s': %s", ds->path, name, h5_detail());
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    char why[128] = "";
    if (t < 0 || sp < 0) {
        snprintf(why, sizeof why, "cannot be inspected: %s", h5_detail());
    } else if (H5Tget_class(t) != H5T_INTEGER) {
        char tn[64];
        h5_dtype_str(tn, sizeof tn, t);
        snprintf(why, sizeof why, "has dtype %s; expected an integer", tn);
    } else if (H5Sget_simple_extent_npoints(sp) != 1) {
        snprintf(why, sizeof why, "holds %lld values; expected one integer",
                 (long long)H5Sget_simple_extent_npoints(sp));
    } else {
        long long x = 0;
        if (H5Aread(a, H5T_NATIVE_LLONG, &x) < 0) snprintf(why, sizeof why, "cannot be read: %s", h5_detail());
        else *v = x;
    }
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    if (why[0]) return ar_errorf("token dataset %s: attribute '%s' %s", ds->path, name, why);
    return 1;
}

static void release(token_dataset *ds) {
    if (ds->sp_mem > 0) H5Sclose(ds->sp_mem);
    if (ds->sp_mask > 0) H5Sclose(ds->sp_mask);
    if (ds->sp_labels > 0) H5Sclose(ds->sp_labels);
    if (ds->sp_ids > 0) H5Sclose(ds->sp_ids);
    if (ds->mask > 0) H5Dclose(ds->mask);
    if (ds->labels > 0) H5Dclose(ds->labels);
    if (ds->ids > 0) H5Dclose(ds->ids);
    if (ds->file > 0) H5Fclose(ds->file);
    free(ds->row_ids);
    free(ds->row_labels);
    free(ds->row_mask);
    free(ds->perm);
    free(ds->path);
    free(ds);
}

/* The body of tds_open, with HDF5 quiet. 0 or -1 + ar_error. */
static int open_file(token_dataset *ds, int vocab_size) {
    const char *path = ds->path;
    struct stat st;
    if (stat(path, &st) != 0) return ar_errorf("token dataset %s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return ar_errorf("token dataset %s: is a directory, expected an HDF5 file", path);
    htri_t is = H5Fis_hdf5(path);
    if (is < 0) return ar_errorf("token dataset %s: cannot read: %s", path, h5_detail());
    if (is == 0) return ar_errorf("token dataset %s: not an HDF5 file", path);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return ar_errorf("token dataset %s: cannot set up HDF5 file access: %s", path, h5_detail());
    }
    ds->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (ds->file < 0) return ar_errorf("token dataset %s: cannot open: %s", path, h5_detail());

    hsize_t di[2], dl[2], dm[2];
    if ((ds->ids = open_2d(ds, "input_ids", 1, KIND_INT32, di)) < 0) return -1;
    if (di[0] < 1) return ar_errorf("token dataset %s: dataset 'input_ids' has shape [0,%llu]: no rows", path,
                                    (unsigned long long)di[1]);
    if (di[1] < 2 || di[1] > INT_MAX)
        return ar_errorf("token dataset %s: dataset 'input_ids' has shape [%llu,%llu]; expected T >= 2 (a token "
                         "and its successor)%s",
                         path, (unsigned long long)di[0], (unsigned long long)di[1], di[1] < 2 ? "" : " and T <= 2^31-1");
    if ((ds->labels = open_2d(ds, "labels", 1, KIND_INT32, dl)) < 0) return -1;
    if (dl[0] != di[0] || dl[1] != di[1])
        return ar_errorf("token dataset %s: dataset 'labels' has shape [%llu,%llu]; expected [%llu,%llu], the shape "
                         "of 'input_ids'",
                         path, (unsigned long long)dl[0], (unsigned long long)dl[1], (unsigned long long)di[0],
                         (unsigned long long)di[1]);
    if ((ds->mask = open_2d(ds, "attention_mask", 0, KIND_MASK, dm)) < 0) return -1;
    if (ds->mask == 0) ds->mask = -1;
    if (ds->mask > 0 && (dm[0] != di[0] || dm[1] != di[1]))
        return ar_errorf("token dataset %s: dataset 'attention_mask' has shape [%llu,%llu]; expected [%llu,%llu], "
                         "the shape of 'input_ids'",
                         path, (unsigned long long)dm[0], (unsigned long long)dm[1], (unsigned long long)di[0],
                         (unsigned long long)di[1]);
    ds->n = (int64_t)di[0];
    ds->t = (int)di[1];

    long long v = 0;
    int has = read_int_attr(ds, "vocab_size", &v);
    if (has < 0) return -1;
    ds->vocab = vocab_size;
    if (has) {
        if (v < 1) return ar_errorf("token dataset %s: attribute vocab_size = %lld; expected >= 1", path, v);
        if (v > vocab_size)
            return ar_errorf("token dataset %s: attribute vocab_size = %lld is larger than the model's vocabulary "
                             "size %d (the data was tokenized for another model)",
                             path, v, vocab_size);
        ds->vocab = (int)v;
    }
    has = read_int_attr(ds, "pad_id", &v);
    if (has < 0) return -1;
    ds->pad = 0;
    if (has) {
        if (v < 0 || v >= ds->vocab)
            return ar_errorf("token dataset %s: attribute pad_id = %lld is outside the vocabulary [0, %d)", path, v,
                             ds->vocab);
        ds->pad = (int)v;
    }

    hsize_t row = (hsize_t)ds->t;
    ds->sp_ids = H5Dget_space(ds->ids);
    ds->sp_labels = H5Dget_space(ds->labels);
    ds->sp_mask = ds->mask > 0 ? H5Dget_space(ds->mask) : 0;
    ds->sp_mem = H5Screate_simple(1, &row, NULL);
    if (ds->sp_ids < 0 || ds->sp_labels < 0 || ds->sp_mask < 0 || ds->sp_mem < 0)
        return ar_errorf("token dataset %s: cannot set up dataspaces: %s", path, h5_detail());

    size_t tb = (size_t)ds->t * sizeof(int);
    ds->row_ids = malloc(tb);
    ds->row_labels = malloc(tb);
    ds->row_mask = malloc(tb);
    ds->perm = malloc((size_t)ds->n * sizeof(int64_t));
    if (!ds->row_ids || !ds->row_labels || !ds->row_mask || !ds->perm)
        return ar_errorf("token dataset %s: out of memory for %lld rows of %d tokens", path, (long long)ds->n, ds->t);
    ds->perm_epoch = -1;
    return 0;
}

token_dataset *tds_open(const char *path, int vocab_size) {
    if (!path || !path[0]) { ar_errorf("token dataset: empty path"); return NULL; }
    if (vocab_size < 1) {
        ar_errorf("token dataset %s: the model's vocabulary size is %d; expected >= 1", path, vocab_size);
        return NULL;
    }
    token_dataset *ds = calloc(1, sizeof *ds);
    if (!ds || !(ds->path = strdup(path))) {
        free(ds);
        ar_errorf("token dataset %s: out of memory", path);
        return NULL;
    }
    ds->file = ds->ids = ds->labels = ds->mask = -1;
    ds->sp_ids = ds->sp_labels = ds->sp_mask = ds->sp_mem = -1;
    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = open_file(ds, vocab_size);
    if (rc < 0) release(ds);
    h5_quiet_end(&q);
    return rc < 0 ? NULL : ds;
}

void tds_close(token_dataset *ds) {
    if (!ds) return;
    if (ds->unreported > 0)
        log_warn("token dataset %s: %lld more broken rows were skipped without a warning of their own", ds->path,
                 (long long)ds->unreported);
    h5_quiet q;
    h5_quiet_begin(&q);
    release(ds);
    h5_quiet_end(&q);
}

int64_t tds_rows(const token_dataset *ds) { return ds ? ds->n : 0; }
int     tds_seq_len(const token_dataset *ds) { return ds ? ds->t : 0; }
int     tds_pad_id(const token_dataset *ds) { return ds ? ds->pad : 0; }

/* ------------------------------------------------------------------------ */
/* Rows                                                                     */
/* ------------------------------------------------------------------------ */
static int read_one(token_dataset *ds, hid_t d, hid_t sp, const char *name, int64_t i, int *buf) {
    hsize_t start[2] = {(hsize_t)i, 0}, count[2] = {1, (hsize_t)ds->t};
    if (H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(d, H5T_NATIVE_INT, ds->sp_mem, sp, H5P_DEFAULT, buf) < 0)
        return ar_errorf("token dataset %s: cannot read row %lld of '%s': %s", ds->path, (long long)i, name,
                         h5_detail());
    return 0;
}

/* Row i into the staging buffers. 0 or -1 + ar_error. */
static int load_row(token_dataset *ds, int64_t i) {
    if (read_one(ds, ds->ids, ds->sp_ids, "input_ids", i, ds->row_ids) < 0) return -1;
    if (read_one(ds, ds->labels, ds->sp_labels, "labels", i, ds->row_labels) < 0) return -1;
    if (ds->mask > 0 && read_one(ds, ds->mask, ds->sp_mask, "attention_mask", i, ds->row_mask) < 0) return -1;
    return 0;
}

/* Checks the staged row and writes tokens[T], targets[T]. 0 = usable,
 * 1 = broken (ds->reason says why; the buffers hold padding only). */
static int build_row(token_dataset *ds, int T, int *tokens, int *targets) {
    const int Tf = ds->t, V = ds->vocab;
    const int *ids = ds->row_ids, *lab = ds->row_labels, *m = ds->row_mask;
    char *why = ds->reason;
    size_t cap = sizeof ds->reason;
    why[0] = '\0';
    int L = Tf;
    if (ds->mask > 0) {
        L = 0;
        while (L < Tf && m[L] == 1) L++;
        for (int t = L; t < Tf && !why[0]; t++) {
            if (m[t] != 0 && m[t] != 1)
                snprintf(why, cap, "attention_mask[%d] = %d; expected 0 or 1", t, m[t]);
            else if (m[t] == 1)
                snprintf(why, cap, "attention_mask is not a prefix of ones (0 at position %d, 1 at position %d)", L, t);
        }
        if (!why[0] && L == 0) snprintf(why, cap, "attention_mask is all zeros (no real token)");
    }
    for (int t = 0; t < L && !why[0]; t++)
        if (ids[t] < 0 || ids[t] >= V)
            snprintf(why, cap, "input_ids[%d] = %d is outside the vocabulary [0, %d)", t, ids[t], V);
    for (int t = 0; t < L && !why[0]; t++)
        if (lab[t] != TDS_IGNORE && (lab[t] < 0 || lab[t] >= V))
            snprintf(why, cap, "labels[%d] = %d is neither -100 nor inside the vocabulary [0, %d)", t, lab[t], V);

    int n = L < T ? L : T;
    int supervised = 0;
    for (int t = 0; t < T; t++) {
        tokens[t] = t < n ? ids[t] : ds->pad;
        targets[t] = t < n && t + 1 < L ? lab[t + 1] : TDS_IGNORE;
        supervised += targets[t] != TDS_IGNORE;
    }
    if (!why[0] && supervised == 0) {
        int first = 0;
        for (int t = 1; t < L && !first; t++)
            if (lab[t] != TDS_IGNORE) first = t;
        if (L == 1)
            snprintf(why, cap, "only 1 real token: there is no next token to predict");
        else if (!first)
            snprintf(why, cap, "no supervised target: labels[1..%d] are all -100 (labels[0] is never a target)", L - 1);
        else
            snprintf(why, cap, "no supervised target within sequence length %d: the first supervised label is at "
                     "position %d of %d real tokens", T, first, L);
    }
    if (why[0]) {
        for (int t = 0; t < T; t++) { tokens[t] = ds->pad; targets[t] = TDS_IGNORE; }
        return 1;
    }
    return 0;
}

int tds_read_row(token_dataset *ds, int64_t i, int T, int *tokens, int *targets) {
    if (!ds || !tokens || !targets) return ar_errorf("tds_read_row: NULL argument");
    if (i < 0 || i >= ds->n)
        return ar_errorf("token dataset %s: row %lld is outside [0, %lld)", ds->path, (long long)i, (long long)ds->n);
    if (T < 1) return ar_errorf("token dataset %s: sequence length %d; expected >= 1", ds->path, T);
    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = load_row(ds, i);
    h5_quiet_end(&q);
    if (rc < 0) return -1;
    if (build_row(ds, T, tokens, targets) == 0) return 0;
    ar_errorf("token dataset %s: row %lld: %s", ds->path, (long long)i, ds->reason);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Epoch order and batches                                                  */
/* ------------------------------------------------------------------------ */
static void ensure_perm(token_dataset *ds, uint64_t seed, int64_t epoch) {
    if (ds->perm_epoch == epoch && ds->perm_seed == seed) return;
    int64_t *p = ds->perm, n = ds->n;
    for (int64_t k = 0; k < n; k++) p[k] = k;
    ar_rng r;
    rng_seed(&r, rng_derive(seed, (uint64_t)epoch));
    for (int64_t k = n - 1; k > 0; k--) {
        int64_t j = (int64_t)rng_below(&r, (uint64_t)k + 1);
        int64_t x = p[k]; p[k] = p[j]; p[j] = x;
    }
    ds->perm_seed = seed;
    ds->perm_epoch = epoch;
}

int tds_epoch_order(token_dataset *ds, uint64_t seed, int64_t epoch, int64_t *order) {
    if (!ds || !order) return ar_errorf("tds_epoch_order: NULL argument");
    if (epoch < 0) return ar_errorf("token dataset %s: epoch %lld; expected >= 0", ds->path, (long long)epoch);
    ensure_perm(ds, seed, epoch);
    memcpy(order, ds->perm, (size_t)ds->n * sizeof *order);
    return 0;
}

static void warn_broken(token_dataset *ds, int64_t row) {
    if (ds->warned >= TDS_WARN_LIMIT) { ds->unreported++; return; }
    ds->warned++;
    log_warn("token dataset %s: row %lld skipped: %s%s", ds->path, (long long)row, ds->reason,
             ds->warned == TDS_WARN_LIMIT ? " (10 broken rows reported; further ones are only counted, with a "
                                            "summary at each epoch end)"
                                          : "");
}

int tds_next_batch(token_dataset *ds, tds_cursor *cursor, int B, int T, int *tokens, int *targets) {
    return tds_next_batch_ex(ds, cursor, B, T, tokens, targets, NULL, NULL, NULL);
}

int tds_next_batch_ex(token_dataset *ds, tds_cursor *cursor, int B, int T, int *tokens, int *targets,
                      int64_t *rows, tds_row_check check, void *ctx) {
    if (!ds || !cursor || !tokens || !targets) return ar_errorf("tds_next_batch: NULL argument");
    if (B < 1 || T < 1)
        return ar_errorf("token dataset %s: batch of %d rows of %d tokens; expected both >= 1", ds->path, B, T);
    tds_cursor c = *cursor;
    if (c.epoch < 0 || c.position < 0 || c.position > ds->n || c.skipped < 0)
        return ar_errorf("token dataset %s: cursor (epoch %lld, position %lld, skipped %lld) is invalid; expected "
                         "epoch >= 0, position in [0, %lld], skipped >= 0",
                         ds->path, (long long)c.epoch, (long long)c.position, (long long)c.skipped,
                         (long long)ds->n);
    /* Broken reads since the start of the current epoch, or -1 once a usable
     * row was seen in it (or the call began mid-epoch): reaching N proves
     * that every row is broken, and if any row is usable that never happens. */
    int64_t epoch_broken = c.position == 0 ? 0 : -1;
    int filled = 0, rc = 0;
    h5_quiet q;
    h5_quiet_begin(&q);
    while (filled < B) {
        if (c.position >= ds->n) {
            if (ds->unreported > 0) {
                log_warn("token dataset %s: epoch %lld ended; %lld more broken rows were skipped without a warning "
                         "of their own (%lld skipped in all by this stream)",
                         ds->path, (long long)c.epoch, (long long)ds->unreported, (long long)c.skipped);
                ds->unreported = 0;
            }
            c.epoch++;
            c.position = 0;
            epoch_broken = 0;
        }
        ensure_perm(ds, c.seed, c.epoch);
        int64_t row = ds->perm[c.position++];
        if ((rc = load_row(ds, row)) < 0) break;
        int *tk = tokens + (size_t)filled * T, *tg = targets + (size_t)filled * T;
        int ok = build_row(ds, T, tk, tg) == 0;
        if (ok && check) {
            int cr = check(ctx, row, filled, tk, tg);
            if (cr < 0) { rc = -1; break; }
            if (cr > 0) {
                ok = 0;
                snprintf(ds->reason, sizeof ds->reason, "%s", ar_error());
                for (int t = 0; t < T; t++) { tk[t] = ds->pad; tg[t] = TDS_IGNORE; }
            }
        }
        if (ok) {
            if (rows) rows[filled] = row;
            filled++;
            epoch_broken = -1;
            continue;
        }
        c.skipped++;
        warn_broken(ds, row);
        if (epoch_broken >= 0 && ++epoch_broken == ds->n) {
            rc = ar_errorf("token dataset %s: every row is broken at sequence length %d (all %lld rows of epoch %lld "
                           "were skipped; the last, row %lld: %s)",
                           ds->path, T, (long long)ds->n, (long long)c.epoch, (long long)row, ds->reason);
            break;
        }
    }
    h5_quiet_end(&q);
    if (rc < 0) return -1;
    *cursor = c;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */
static int write_2d(hid_t f, const char *name, hid_t ftype, hid_t mtype, const void *buf, int64_t N, int T) {
    hsize_t dims[2] = {(hsize_t)N, (hsize_t)T};
    size_t esz = H5Tget_size(ftype);
    hsize_t cols = (hsize_t)T < (1u << 20) ? (hsize_t)T : (1u << 20);
    hsize_t rows = TDS_CHUNK_BYTES / (esz * cols);
    if (rows < 1) rows = 1;
    if (rows > (hsize_t)N) rows = (hsize_t)N;
    hsize_t chunk[2] = {rows, cols};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t d = -1;
    herr_t rc = -1;
    if (sp >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, 2, chunk) >= 0 && H5Pset_shuffle(dcpl) >= 0 &&
        H5Pset_deflate(dcpl, 4) >= 0) {
        d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        rc = d < 0 ? -1 : H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    }
    if (rc < 0) ar_errorf("cannot write dataset '%s': %s", name, h5_detail());
    if (d >= 0) H5Dclose(d);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int write_attr(hid_t f, const char *name, int v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(f, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT, &v);
    if (rc < 0) ar_errorf("cannot write attribute '%s': %s", name, h5_detail());
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int write_file(const char *tmp, const int *ids, const int *labels, const uint8_t *mask, int64_t N, int T,
                      int vocab_size, int pad_id) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return ar_errorf("cannot set up HDF5 file access: %s", h5_detail());
    }
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) return ar_errorf("cannot create '%s': %s", tmp, h5_detail());
    int rc = write_2d(f, "input_ids", H5T_STD_I32LE, H5T_NATIVE_INT, ids, N, T);
    if (!rc) rc = write_2d(f, "labels", H5T_STD_I32LE, H5T_NATIVE_INT, labels, N, T);
    if (!rc && mask) rc = write_2d(f, "attention_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, mask, N, T);
    if (!rc) rc = write_attr(f, "vocab_size", vocab_size);
    if (!rc && pad_id >= 0) rc = write_attr(f, "pad_id", pad_id);
    if (!rc && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = ar_errorf("cannot flush '%s': %s", tmp, h5_detail());
    if (H5Fclose(f) < 0 && !rc) rc = ar_errorf("cannot close '%s': %s", tmp, h5_detail());
    return rc;
}


int tds_write(const char *path, const int *ids, const int *labels, const uint8_t *mask, int64_t N, int T,
              int vocab_size, int pad_id) {
    if (!path || !path[0]) return ar_errorf("tds_write: empty path");
    if (!ids || !labels) return ar_errorf("tds_write %s: input_ids and labels are required", path);
    if (N < 1 || T < 2)
        return ar_errorf("tds_write %s: shape [%lld,%d]; expected N >= 1 rows and T >= 2", path, (long long)N, T);
    if (vocab_size < 1) return ar_errorf("tds_write %s: vocab_size %d; expected >= 1", path, vocab_size);
    if (pad_id >= vocab_size)
        return ar_errorf("tds_write %s: pad_id %d is outside the vocabulary [0, %d)", path, pad_id, vocab_size);
    char tmp[TDS_PATH_MAX], dir[TDS_PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return ar_errorf("tds_write %s: path too long", path);
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    if (ar_mkdir_parent(path) < 0) return ar_error_prefix("tds_write %s: ", path);

    h5_quiet q;
    h5_quiet_begin(&q);
    int rc = write_file(tmp, ids, labels, mask, N, T, vocab_size, pad_id);
    h5_quiet_end(&q);
    if (!rc) rc = ar_fsync_path(tmp, 0);
    if (!rc && rename(tmp, path) != 0) rc = ar_errorf("cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (!rc) rc = ar_fsync_path(dir, 1);
    if (rc) {
        unlink(tmp);
        return ar_error_prefix("tds_write %s: ", path);
    }
    return 0;
}
