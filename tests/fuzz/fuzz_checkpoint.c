/* tests/fuzz/fuzz_checkpoint.c — libFuzzer target for the checkpoint
 * metadata checks of checkpoints/checkpoint.c (ckpt_load, ckpt_read_config,
 * ckpt_latest) and the stored config text through core/config.c.
 *
 * Fuzzing raw bytes as an HDF5 file would fuzz the HDF5 library (not ours, and
 * its own fuzzing finds its own bugs). What we own is everything checkpoint.c
 * decides about a file HDF5 opens: the root attributes (format, version,
 * step, epoch, data_position, data_skipped, seed, rng_state, created,
 * frozen_included, complete), the /config dataset, the /weights, /adam_m,
 * /adam_v groups and each tensor's dtype and shape. So the input is a recipe:
 * bytes pick, for each of these, "absent", "as ckpt_save writes it" (with
 * fuzzed values), or a wrong HDF5 class / size / signedness / element count /
 * string kind, fuzzed config text, extra tensors with fuzzed names, wrong
 * dtypes and shapes. When the input runs out, the rest is written as
 * ckpt_save would (so the empty input is a valid checkpoint). The file is
 * written with the HDF5 API to <tmp>/run/checkpoints/step_000001.h5, then:
 * ckpt_read_config, ckpt_load into a 3-tensor registry (both moment modes),
 * ckpt_latest on the run directory, and the loaded config text through
 * cfg_load_string. Invariants: a failure leaves a message naming the file;
 * a load that succeeds returned non-negative counters, the config text that
 * was written, and the tensor values that were written.
 * Traps on any broken invariant.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_checkpoint -max_total_time=60
 * Depends on: checkpoints/checkpoint.c, model/params.c, core/, HDF5.
 */
#include "checkpoints/checkpoint.h"
#include "core/config.h"
#include "core/error.h"
#include "model/params.h"

#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* the backend memory calls checkpoint.c and params.c make: host memory here */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }
__attribute__((weak)) void k_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
__attribute__((weak)) void k_upload(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
__attribute__((weak)) void k_download(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_checkpoint: %s failed (line %d)\n", #c, __LINE__); __builtin_trap(); } } while (0)

static char g_run[256], g_path[320];

/* ---- input reader: past the end, every byte is 0xff (= "as ckpt_save writes it") */
typedef struct { const uint8_t *p; size_t n, i; } rd;
static unsigned take(rd *r) { return r->i < r->n ? r->p[r->i++] : 0xffu; }
static uint64_t take64(rd *r, uint64_t dflt) {
    if (r->i >= r->n) return dflt;
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v = v << 8 | (r->i < r->n ? r->p[r->i++] : 0);
    return v;
}
/* up to max bytes of text: a length byte then the bytes */
static size_t take_text(rd *r, char *out, size_t max, const char *dflt) {
    if (r->i >= r->n) { snprintf(out, max + 1, "%s", dflt); return strlen(out); }
    size_t len = take(r) % (max + 1), k = 0;
    while (k < len && r->i < r->n) out[k++] = (char)r->p[r->i++];
    out[k] = 0;
    return k;
}

/* ---- the model the checkpoint is loaded into -------------------------- */
static const struct { const char *name; int ndim, shape[4], trainable; } k_model[] = {
    {"a.weight", 2, {2, 3}, 1},
    {"b", 1, {4}, 0},
    {"layers.0.c", 4, {1, 1, 1, 2}, 1},
};
#define NT 3

static int make_params(ar_params *ps) {
    params_init_empty(ps);
    for (int i = 0; i < NT; i++)
        if (params_add(ps, k_model[i].name, k_model[i].ndim, k_model[i].shape, k_model[i].trainable, INIT_ZEROS, 0))
            return -1;
    return params_alloc(ps);
}

/* ---- writing the recipe ------------------------------------------------ */
static hid_t int_type(unsigned sel) {   /* one of 8 integer types */
    static const hid_t *const t[8] = {&H5T_NATIVE_INT8_g, &H5T_NATIVE_UINT8_g, &H5T_NATIVE_INT16_g,
                                      &H5T_NATIVE_UINT16_g, &H5T_NATIVE_INT32_g, &H5T_NATIVE_UINT32_g,
                                      &H5T_NATIVE_INT64_g, &H5T_NATIVE_UINT64_g};
    H5open();
    return *t[sel % 8];
}

static hid_t str_type(int vlen, size_t len) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, vlen ? H5T_VARIABLE : (len ? len : 1));
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* A string attribute (dataset = 0) or scalar dataset (1) at loc. */
static void put_string(hid_t loc, const char *name, int dataset, int vlen, const char *s, size_t len, int n) {
    hid_t t = str_type(vlen, len);
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    const char *ptrs[4] = {s, s, s, s};
    char *fixed = NULL;
    const void *buf = ptrs;
    if (!vlen) {
        fixed = calloc((size_t)n, len ? len : 1);
        for (int i = 0; fixed && i < n; i++) memcpy(fixed + (size_t)i * (len ? len : 1), s, len);
        buf = fixed;
    }
    hid_t o = dataset ? H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)
                      : H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (o >= 0 && buf) {
        if (dataset) { H5Dwrite(o, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf); H5Dclose(o); }
        else { H5Awrite(o, t, buf); H5Aclose(o); }
    }
    free(fixed);
    H5Sclose(sp);
    H5Tclose(t);
}

/* An attribute of n elements of type t from values (as uint64, converted). */
static void put_num(hid_t loc, const char *name, hid_t t, int n, const uint64_t *vals, int scalar) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = scalar && n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t a = H5Acreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        if (H5Tget_class(t) == H5T_FLOAT) {
            double d[8];
            for (int i = 0; i < n; i++) d[i] = (double)(int64_t)vals[i];
            H5Awrite(a, H5T_NATIVE_DOUBLE, d);
        } else {   /* the low bytes of each value, in the attribute's own type (no clamping) */
            unsigned char b[64];
            size_t sz = H5Tget_size(t);
            for (int i = 0; i < n; i++) memcpy(b + (size_t)i * sz, &vals[i], sz);   /* little-endian host */
            H5Awrite(a, t, b);
        }
        H5Aclose(a);
    }
    H5Sclose(sp);
}

/* One numeric root attribute: canonical type t0 with n0 elements, or a wrong one. */
static void numeric_attr(rd *r, hid_t f, const char *name, hid_t t0, int n0, const uint64_t *dflt,
                         uint64_t *written, int *ok) {
    unsigned k = take(r);
    uint64_t v[8];
    for (int i = 0; i < 8; i++) v[i] = i < n0 ? dflt[i] : 0;
    *ok = 0;
    switch (k % 16) {
    case 0: return;   /* absent */
    case 1: {         /* another integer type, fuzzed count */
        int n = (int)(take(r) % 6);
        if (!n) n = 1;
        for (int i = 0; i < n; i++) v[i] = take64(r, v[i]);
        put_num(f, name, int_type(take(r)), n, v, 1);
        return;
    }
    case 2:           /* a float */
        v[0] = take64(r, v[0]);
        put_num(f, name, H5T_NATIVE_DOUBLE, n0, v, 1);
        return;
    case 3:           /* a string */
        put_string(f, name, 0, take(r) & 1, "12", 2, 1);
        return;
    case 4:           /* canonical type as a 1-element array (accepted) */
    default:          /* canonical, fuzzed values */
        for (int i = 0; i < n0; i++) v[i] = take64(r, v[i]);
        put_num(f, name, t0, n0, v, k % 16 != 4);
        memcpy(written, v, (size_t)n0 * sizeof *v);
        *ok = 1;
        return;
    }
}

typedef struct {
    int ok_step, ok_epoch, ok_pos, ok_skip, ok_seed, ok_rng, ok_frozen;
    uint64_t step, epoch, pos, skip, seed, rng[4], frozen;
    int config_canon;      /* /config written as one string */
    char config[512];
    int tensor_canon[3][NT];   /* [group][tensor]: float32 of the right shape */
    float values[NT][8];
} recipe;

static void tensor(rd *r, hid_t g, int grp, int i, recipe *w) {
    int as_saved = r->i >= r->n;
    unsigned k = take(r);
    w->tensor_canon[grp][i] = 0;
    if (k % 8 == 0 || (as_saved && grp && !k_model[i].trainable)) return;   /* absent (ckpt_save writes no moments of frozen tensors) */
    int nd = k_model[i].ndim;
    hsize_t dims[8];
    for (int d = 0; d < nd; d++) dims[d] = (hsize_t)k_model[i].shape[d];
    hid_t t = H5T_NATIVE_FLOAT;
    if (k % 8 == 1) {          /* fuzzed rank and dims */
        nd = (int)(take(r) % 6);
        for (int d = 0; d < nd; d++) dims[d] = take(r) % 5;
    } else if (k % 8 == 2) {   /* another dtype */
        static const hid_t *const ft[4] = {&H5T_NATIVE_DOUBLE_g, &H5T_NATIVE_INT32_g, &H5T_NATIVE_UINT8_g,
                                           &H5T_NATIVE_INT64_g};
        t = *ft[take(r) % 4];
    } else if (k % 8 == 3) {   /* a string where a tensor should be */
        put_string(g, k_model[i].name, 1, 1, "x", 1, 1);
        return;
    } else if (k % 8 == 4) {   /* a group where a tensor should be */
        hid_t sub = H5Gcreate2(g, k_model[i].name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (sub >= 0) H5Gclose(sub);
        return;
    }
    hid_t sp = nd ? H5Screate_simple(nd, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(g, k_model[i].name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d >= 0) {
        hssize_t np = H5Sget_simple_extent_npoints(sp);
        double *buf = calloc(np > 0 ? (size_t)np : 1, sizeof *buf);
        if (buf) {
            for (hssize_t e = 0; e < np; e++) buf[e] = (double)(int8_t)take(r) / 8.0;
            H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
            if (t == H5T_NATIVE_FLOAT && k % 8 != 1 && grp == 0)
                for (hssize_t e = 0; e < np && e < 8; e++) w->values[i][e] = (float)buf[e];
            free(buf);
        }
        H5Dclose(d);
        w->tensor_canon[grp][i] = t == H5T_NATIVE_FLOAT && k % 8 != 1;
    }
    H5Sclose(sp);
}

static int write_recipe(rd *r, recipe *w) {
    memset(w, 0, sizeof *w);
    hid_t f = H5Fcreate(g_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return -1;
    char fmt[64];
    int ok_version = 0, ok_complete = 0;
    unsigned k = take(r);   /* format */
    if (k % 8) {
        size_t n = k % 8 == 1 ? take_text(r, fmt, 40, CKPT_FORMAT) : strlen(strcpy(fmt, CKPT_FORMAT));
        put_string(f, "format", 0, k % 8 != 2, fmt, n, k % 8 == 3 ? 2 : 1);
    }
    uint64_t one[1] = {1}, zero[1] = {0}, dv[1], rng0[4] = {1, 2, 3, 4}, wv[4];
    numeric_attr(r, f, "version", H5T_NATIVE_INT32, 1, one, wv, &ok_version);
    numeric_attr(r, f, "step", H5T_NATIVE_INT64, 1, (dv[0] = 7, dv), &w->step, &w->ok_step);
    numeric_attr(r, f, "epoch", H5T_NATIVE_INT64, 1, zero, &w->epoch, &w->ok_epoch);
    numeric_attr(r, f, "data_position", H5T_NATIVE_INT64, 1, (dv[0] = 3, dv), &w->pos, &w->ok_pos);
    numeric_attr(r, f, "data_skipped", H5T_NATIVE_INT64, 1, zero, &w->skip, &w->ok_skip);
    numeric_attr(r, f, "seed", H5T_NATIVE_UINT64, 1, (dv[0] = 42, dv), &w->seed, &w->ok_seed);
    numeric_attr(r, f, "rng_state", H5T_NATIVE_UINT64, 4, rng0, w->rng, &w->ok_rng);
    numeric_attr(r, f, "frozen_included", H5T_NATIVE_INT32, 1, zero, &w->frozen, &w->ok_frozen);
    put_string(f, "created", 0, 1, "2026-11-26T00:00:00Z", 20, 1);

    k = take(r);   /* /config */
    if (k % 8) {
        size_t n = take_text(r, w->config, 500, "train.steps = 3\n# a comment\n");
        if (k % 8 == 1) {
            hid_t sp = H5Screate(H5S_SCALAR);
            hid_t d = H5Dcreate2(f, "config", H5T_NATIVE_INT32, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            int32_t z = 0;
            if (d >= 0) { H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, &z); H5Dclose(d); }
            H5Sclose(sp);
        } else {
            put_string(f, "config", 1, k % 8 != 2, w->config, n, k % 8 == 3 ? 3 : 1);
            /* a fixed-length string stops at its first NUL; a variable one too (C strings) */
            w->config_canon = k % 8 != 3 && memchr(w->config, 0, n) == NULL;
        }
    }
    for (int grp = 0; grp < 3; grp++) {
        static const char *const gn[3] = {"weights", "adam_m", "adam_v"};
        k = take(r);
        if (k % 8 == 0) continue;
        if (k % 8 == 1) {   /* a dataset where the group should be */
            put_string(f, gn[grp], 1, 1, "x", 1, 1);
            continue;
        }
        hid_t g = H5Gcreate2(f, gn[grp], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) continue;
        for (int i = 0; i < NT; i++) tensor(r, g, grp, i, w);
        if (k % 8 == 2) {   /* an extra entry with a fuzzed name */
            char name[200];
            take_text(r, name, 150, "extra");
            if (name[0] && !strchr(name, '/') && strcmp(name, ".")) {
                hid_t sp = H5Screate(H5S_SCALAR);
                hid_t d = H5Dcreate2(g, name, H5T_NATIVE_FLOAT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
                if (d >= 0) H5Dclose(d);
                H5Sclose(sp);
            }
        }
        H5Gclose(g);
    }
    k = take(r);   /* complete, written last as ckpt_save does */
    numeric_attr(r, f, "complete", H5T_NATIVE_INT32, 1, one, wv, &ok_complete);
    (void)ok_version;
    H5Fclose(f);
    return 0;
}

/* ---- the target -------------------------------------------------------- */
static const cfg_key k_schema[] = {
    {"train.steps", CFG_INT, "1", "steps"},
    {"train.lr", CFG_FLOAT, "0.001", "learning rate"},
    {"model.kind", CFG_STRING, "llama", "model"},
    {"train.resume", CFG_BOOL, "false", "resume"},
};

static void cleanup(void) {
    char dir[300];
    unlink(g_path);
    snprintf(dir, sizeof dir, "%s/checkpoints", g_run);
    rmdir(dir);
    rmdir(g_run);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(g_run, sizeof g_run, "%s/fuzz_checkpoint.XXXXXX", base);
    if (!mkdtemp(g_run)) { perror("fuzz_checkpoint: mkdtemp"); abort(); }
    char dir[300];
    snprintf(dir, sizeof dir, "%s/checkpoints", g_run);
    mkdir(dir, 0777);
    snprintf(g_path, sizeof g_path, "%s/step_000001.h5", dir);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* the recipe writer's own failures are expected */
    atexit(cleanup);
    return 0;
}

/* the message names the file */
static void check_message(void) {
    const char *e = ar_error();
    CHECK(e && strstr(e, g_path));
    if (getenv("FUZZ_CHECKPOINT_VERBOSE")) fprintf(stderr, "refused: %s\n", e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_path[0]) LLVMFuzzerInitialize(NULL, NULL);
    rd r = {data, size, 0};
    recipe w;
    if (write_recipe(&r, &w) < 0) return 0;

    int64_t step = -1;
    char *cfg = ckpt_read_config(g_path, &step);
    if (!cfg) check_message();
    free(cfg);

    char latest[400];
    int lr = ckpt_latest(g_run, latest, sizeof latest);
    CHECK(lr >= -1 && lr <= 1);
    if (lr == 0) CHECK(strcmp(latest, g_path) == 0);

    for (int req = 0; req < 2; req++) {
        ar_params ps;
        if (make_params(&ps)) { params_free(&ps); return 0; }
        ar_train_state st;
        memset(&st, 0, sizeof st);
        if (ckpt_load(g_path, &ps, &st, req) < 0) {
            check_message();
        } else {
            CHECK(st.config_text != NULL);
            CHECK(st.step >= 0 && st.epoch >= 0 && st.data_position >= 0 && st.data_skipped >= 0);
            if (w.ok_step) CHECK((uint64_t)st.step == w.step);
            if (w.ok_epoch) CHECK((uint64_t)st.epoch == w.epoch);
            if (w.ok_pos) CHECK((uint64_t)st.data_position == w.pos);
            if (w.ok_seed) CHECK(st.seed == w.seed);
            if (w.ok_rng) CHECK(memcmp(st.rng.s, w.rng, sizeof w.rng) == 0);
            if (w.config_canon) CHECK(strcmp(st.config_text, w.config) == 0);
            for (int i = 0; i < NT; i++)
                if (w.tensor_canon[0][i]) {
                    const ar_param *p = params_find(&ps, k_model[i].name);
                    CHECK(p);
                    for (size_t e = 0; e < p->numel && e < 8; e++) CHECK(ps.w[p->off + e] == w.values[i][e]);
                }
            ar_config *c = cfg_new(k_schema, (int)(sizeof k_schema / sizeof k_schema[0]));
            if (c) {
                if (cfg_load_string(c, st.config_text, strlen(st.config_text), g_path) < 0) CHECK(ar_error()[0]);
                cfg_free(c);
            }
        }
        ckpt_state_free(&st);
        params_free(&ps);
    }
    return 0;
}
