/* tests/test_checkpoint.c — HDF5 training checkpoints (checkpoints/checkpoint.h).
 *
 * Round trips are compared bitwise (weights, AdamW moments, step, epoch, data
 * position, seed, RNG state, config text). Every refusal is checked against
 * its exact message, and the registry and the training state are checked to be
 * unchanged after each failed load. Atomicity: a child process saving a 48 MiB
 * checkpoint over an existing one is SIGKILLed at several points of the write;
 * the previous checkpoint must still load, unchanged. */
#include "tests/testlib.h"

#include "checkpoints/checkpoint.h"
#include "core/error.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "model/params.h"

#include <hdf5.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_dir[256];

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_dir, name); }

/* ------------------------------------------------------------------------ */
/* Registries and snapshots                                                 */
/* ------------------------------------------------------------------------ */
typedef struct { const char *name; int ndim; int shape[4]; int trainable; } tspec;

#define N_EMBED "model.embed_tokens.weight"
#define N_LORA_A "model.layers.0.self_attn.q_proj.lora_A.weight"
#define N_LORA_B "model.layers.0.self_attn.q_proj.lora_B.weight"
#define N_CONV "model.layers.0.mlp.conv.weight"
#define N_NORM "model.norm.weight"

static const tspec k_base[] = {
    {N_EMBED, 2, {16, 8}, 0},
    {N_LORA_A, 2, {4, 8}, 1},
    {N_LORA_B, 2, {8, 4}, 1},
    {N_CONV, 4, {2, 3, 4, 5}, 1},
    {N_NORM, 1, {8}, 1},
};
#define N_BASE ((int)(sizeof k_base / sizeof k_base[0]))

/* Fills m (normal) and v (positive) of the whole trainable block from seed. */
static void fill_moments(ar_params *ps, uint64_t seed) {
    if (!ps->ng) return;
    float *h = t_alloc(ps->ng);
    t_fill_normal(h, ps->ng, 0.1f, seed);
    k_upload(ps->m, h, ps->ng * sizeof(float));
    t_fill_uniform(h, ps->ng, 1e-6f, 1e-2f, seed + 1);
    k_upload(ps->v, h, ps->ng * sizeof(float));
    free(h);
}

/* Declares spec (with optional overrides), allocates, randomizes weights and moments. */
static int build(ar_params *ps, const tspec *spec, int n, uint64_t seed) {
    params_init_empty(ps);
    for (int i = 0; i < n; i++)
        if (params_add(ps, spec[i].name, spec[i].ndim, spec[i].shape, spec[i].trainable, INIT_NORMAL, 0.5f) < 0)
            return -1;
    if (params_alloc(ps) < 0) return -1;
    params_randomize(ps, seed);
    fill_moments(ps, seed + 100);
    return 0;
}

typedef struct { float *w, *m, *v; size_t nw, ng; } snap;

static snap snapshot(const ar_params *ps) {
    snap s = {t_alloc(ps->nw), t_alloc(ps->ng ? ps->ng : 1), t_alloc(ps->ng ? ps->ng : 1), ps->nw, ps->ng};
    k_download(s.w, ps->w, ps->nw * sizeof(float));
    if (ps->ng) {
        k_download(s.m, ps->m, ps->ng * sizeof(float));
        k_download(s.v, ps->v, ps->ng * sizeof(float));
    }
    return s;
}
static void snap_free(snap *s) { free(s->w); free(s->m); free(s->v); }
static int snap_same(const snap *a, const snap *b) {
    return a->nw == b->nw && a->ng == b->ng && memcmp(a->w, b->w, a->nw * sizeof(float)) == 0 &&
           memcmp(a->m, b->m, a->ng * sizeof(float)) == 0 && memcmp(a->v, b->v, a->ng * sizeof(float)) == 0;
}
/* Bitwise equality of one tensor's weights (and moments if trainable) between snapshots. */
static int tensor_same(const ar_param *p, const snap *a, const snap *b, int with_moments) {
    if (memcmp(a->w + p->off, b->w + p->off, p->numel * sizeof(float))) return 0;
    if (!with_moments || !p->trainable) return 1;
    return memcmp(a->m + p->goff, b->m + p->goff, p->numel * sizeof(float)) == 0 &&
           memcmp(a->v + p->goff, b->v + p->goff, p->numel * sizeof(float)) == 0;
}

/* Bitwise equality of every trainable tensor (weights, m, v) between snapshots. */
static int trainable_same(const ar_params *ps, const snap *a, const snap *b) {
    int same = 1;
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i].trainable) same &= tensor_same(&ps->p[i], a, b, 1);
    return same;
}

static void state_make(ar_train_state *st) {
    memset(st, 0, sizeof *st);
    st->step = 1234;
    st->epoch = 3;
    st->data_position = 77;
    st->seed = 0xDEADBEEFCAFEF00DULL;
    rng_seed(&st->rng, 42);
    for (int i = 0; i < 5; i++) rng_u64(&st->rng);
    ckpt_state_set_config(st, "[train]\nlr = 0.0003\nname = \"r\xc3\xa9sum\xc3\xa9\"\n");
}
static void state_scramble(ar_train_state *st, const char *config) {
    st->step = 555;
    st->epoch = 9;
    st->data_position = 1;
    st->seed = 7;
    rng_seed(&st->rng, 7);
    ckpt_state_set_config(st, config);
}
static int state_same(const ar_train_state *a, const ar_train_state *b) {
    return a->step == b->step && a->epoch == b->epoch && a->data_position == b->data_position &&
           a->seed == b->seed && memcmp(a->rng.s, b->rng.s, sizeof a->rng.s) == 0 &&
           strcmp(a->config_text ? a->config_text : "", b->config_text ? b->config_text : "") == 0;
}

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */
static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}
static int exists(const char *path) { return access(path, F_OK) == 0; }

/* Copies the first n bytes of src (n < 0: all of it). */
static int copy_file(const char *src, const char *dst, long n) {
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    int ok = in && out;
    char buf[65536];
    long left = n < 0 ? (long)1 << 62 : n;
    while (ok && left > 0) {
        size_t want = left < (long)sizeof buf ? (size_t)left : sizeof buf;
        size_t got = fread(buf, 1, want, in);
        if (!got) break;
        ok = fwrite(buf, 1, got, out) == got;
        left -= (long)got;
    }
    if (in) fclose(in);
    if (out && fclose(out) != 0) ok = 0;
    return ok ? 0 : -1;
}
static int write_garbage(const char *path, size_t n, uint64_t seed) {
    float *h = t_alloc(n / 4 + 1);
    t_fill_uniform(h, n / 4 + 1, -1e30f, 1e30f, seed);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(h, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    free(h);
    return ok ? 0 : -1;
}

static int h5_has(const char *path, const char *obj) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    int r = H5Lexists(f, obj, H5P_DEFAULT) > 0;
    H5Fclose(f);
    return r;
}

/* Copies src to dst and applies fn to the copy, opened read-write. */
typedef int (*mutator)(hid_t f);
static int mutate(const char *src, const char *dst, mutator fn) {
    if (copy_file(src, dst, -1) < 0) return -1;
    hid_t f = H5Fopen(dst, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return -1;
    int rc = fn(f);
    if (H5Fclose(f) < 0) rc = -1;
    return rc;
}

static int put_string_attr(hid_t f, const char *name, const char *s) {
    if (H5Aexists(f, name) > 0 && H5Adelete(f, name) < 0) return -1;
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, t, &s) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc;
}
static int put_int_attr(hid_t f, const char *name, int n, const int64_t *vals) {
    if (H5Aexists(f, name) > 0 && H5Adelete(f, name) < 0) return -1;
    hsize_t dim = (hsize_t)n;
    hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, vals) >= 0 ? 0 : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static int mut_format(hid_t f) { return put_string_attr(f, "format", "other-format"); }
static int mut_version(hid_t f) { int64_t v = 2; return put_int_attr(f, "version", 1, &v); }
static int mut_incomplete(hid_t f) { return H5Adelete(f, "complete") < 0 ? -1 : 0; }
static int mut_rng3(hid_t f) { int64_t v[3] = {1, 2, 3}; return put_int_attr(f, "rng_state", 3, v); }
static int mut_no_adam(hid_t f) {
    return H5Ldelete(f, "adam_m", H5P_DEFAULT) < 0 || H5Ldelete(f, "adam_v", H5P_DEFAULT) < 0 ? -1 : 0;
}
static int mut_adam_m_norm(hid_t f) { return H5Ldelete(f, "/adam_m/" N_NORM, H5P_DEFAULT) < 0 ? -1 : 0; }
static int mut_dtype(hid_t f) {
    if (H5Ldelete(f, "/weights/" N_LORA_A, H5P_DEFAULT) < 0) return -1;
    hsize_t dims[2] = {4, 8};
    double vals[32] = {0};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "/weights/" N_LORA_A, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d >= 0 && H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, vals) >= 0 ? 0 : -1;
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Refusals                                                                 */
/* ------------------------------------------------------------------------ */
/* Loads file into ps and expects -1 with message `want` (a prefix if
 * prefix_only), then ps and a sentinel state unchanged. */
static void expect_refusal(const char *name, const char *file, ar_params *ps, int require_moments, const char *want,
                           int prefix_only) {
    snap before = snapshot(ps);
    ar_train_state st, st0;
    memset(&st, 0, sizeof st);
    memset(&st0, 0, sizeof st0);
    state_scramble(&st, "sentinel");
    state_scramble(&st0, "sentinel");
    ar_error_clear();
    int rc = ckpt_load(file, ps, &st, require_moments);
    const char *msg = ar_error();
    int match = prefix_only ? strncmp(msg, want, strlen(want)) == 0 : strcmp(msg, want) == 0;
    snap after = snapshot(ps);
    int unchanged = snap_same(&before, &after) && state_same(&st, &st0);
    t_check(rc == -1 && match && unchanged, name, "rc %d, registry and state %s, message '%s'%s%s", rc,
            unchanged ? "unchanged" : "CHANGED", msg, match ? "" : ", expected ", match ? "" : want);
    snap_free(&before);
    snap_free(&after);
    ckpt_state_free(&st);
    ckpt_state_free(&st0);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                    */
/* ------------------------------------------------------------------------ */
static char g_trainable_only[512], g_all[512];

static void test_roundtrip(void) {
    ar_params ps;
    ar_train_state st, st2;
    if (build(&ps, k_base, N_BASE, 1) < 0) { t_fail("ckpt.build", "%s", ar_error()); return; }
    state_make(&st);
    memset(&st2, 0, sizeof st2);
    tmp_path(g_trainable_only, sizeof g_trainable_only, "trainable.h5");
    tmp_path(g_all, sizeof g_all, "all.h5");
    int r1 = ckpt_save(g_trainable_only, &ps, &st, 0);
    int r2 = ckpt_save(g_all, &ps, &st, 1);
    t_check(r1 == 0 && r2 == 0, "ckpt.save", "rc %d %d '%s'", r1, r2, ar_error());
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", g_all);
    t_check(!exists(tmp), "ckpt.save_leaves_no_tmp", "%s %s", tmp, exists(tmp) ? "exists" : "absent");

    /* what is in the files */
    int fe0 = h5_has(g_trainable_only, "/weights/" N_EMBED), fe1 = h5_has(g_all, "/weights/" N_EMBED);
    int fm = h5_has(g_all, "/adam_m/" N_EMBED), ta = h5_has(g_trainable_only, "/weights/" N_LORA_A);
    int tm = h5_has(g_trainable_only, "/adam_v/" N_CONV);
    t_check(fe0 == 0 && fe1 == 1 && fm == 0 && ta == 1 && tm == 1, "ckpt.layout",
            "frozen in /weights: %d (include_frozen 0), %d (1); frozen in /adam_m %d; lora_A %d; adam_v conv %d",
            fe0, fe1, fm, ta, tm);
    long s0 = file_size(g_trainable_only), s1 = file_size(g_all);
    t_check(s0 > 0 && s1 > s0, "ckpt.include_frozen_size", "%ld vs %ld bytes", s0, s1);

    snap orig = snapshot(&ps);
    /* scramble everything, load the trainable-only file */
    params_randomize(&ps, 999);
    fill_moments(&ps, 4242);
    state_scramble(&st2, "other");
    snap scr = snapshot(&ps);
    int rc = ckpt_load(g_trainable_only, &ps, &st2, 1);
    snap got = snapshot(&ps);
    int tr_ok = 1, fr_kept = 1;
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        if (p->trainable) tr_ok &= tensor_same(p, &got, &orig, 1);
        else fr_kept &= tensor_same(p, &got, &scr, 0);
    }
    t_check(rc == 0 && tr_ok, "ckpt.roundtrip_trainable_bitwise", "rc %d '%s', weights+m+v of %d trainable tensors",
            rc, rc ? ar_error() : "", ps.n - 1);
    t_check(fr_kept, "ckpt.frozen_not_in_file_kept", "frozen tensor keeps its current value");
    t_check(state_same(&st2, &st), "ckpt.roundtrip_state",
            "step %lld epoch %lld pos %lld seed %llx rng %016llx.. config %zu bytes %s", (long long)st2.step,
            (long long)st2.epoch, (long long)st2.data_position, (unsigned long long)st2.seed,
            (unsigned long long)st2.rng.s[0], st2.config_text ? strlen(st2.config_text) : 0,
            st2.config_text && strcmp(st2.config_text, st.config_text) == 0 ? "identical" : "DIFFERENT");
    uint64_t a = rng_u64(&st.rng), b = rng_u64(&st2.rng);
    t_check(a == b, "ckpt.rng_continues", "next draw %016llx vs %016llx", (unsigned long long)a,
            (unsigned long long)b);
    snap_free(&scr);
    snap_free(&got);

    /* include_frozen = 1 restores every weight */
    params_randomize(&ps, 31337);
    fill_moments(&ps, 77);
    rc = ckpt_load(g_all, &ps, NULL, 1);
    got = snapshot(&ps);
    int all_ok = 1;
    for (int i = 0; i < ps.n; i++) all_ok &= tensor_same(&ps.p[i], &got, &orig, 1);
    t_check(rc == 0 && all_ok, "ckpt.roundtrip_all_bitwise", "rc %d '%s', %d tensors incl. the frozen one", rc,
            rc ? ar_error() : "", ps.n);
    snap_free(&got);
    snap_free(&orig);
    ckpt_state_free(&st);
    ckpt_state_free(&st2);
    params_free(&ps);
}

static void test_save_rejects(void) {
    ar_params ps;
    tspec bad[] = {{"a/b", 1, {4}, 1}};
    if (build(&ps, bad, 1, 3) < 0) { t_fail("ckpt.build_bad", "%s", ar_error()); return; }
    ar_train_state st;
    state_make(&st);
    char path[512], tmp[600], want[1024];
    tmp_path(path, sizeof path, "badname/x.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = ckpt_save(path, &ps, &st, 0);
    snprintf(want, sizeof want, "checkpoint %s: tensor name 'a/b' contains '/', HDF5's path separator; it cannot be saved",
             path);
    t_check(rc == -1 && strcmp(ar_error(), want) == 0 && !exists(path) && !exists(tmp), "ckpt.save_rejects_slash",
            "rc %d '%s'", rc, ar_error());
    ckpt_state_free(&st);
    params_free(&ps);
}

static void test_refusals(void) {
    ar_params ps;
    if (build(&ps, k_base, N_BASE, 5) < 0) { t_fail("ckpt.build", "%s", ar_error()); return; }
    char f[512], want[1024];

    tmp_path(f, sizeof f, "does_not_exist.h5");
    snprintf(want, sizeof want, "checkpoint %s: cannot open: No such file or directory", f);
    expect_refusal("ckpt.refuse_missing_file", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "garbage.h5");
    write_garbage(f, 4096, 11);
    snprintf(want, sizeof want, "checkpoint %s: not an HDF5 file (4096 bytes, no HDF5 signature)", f);
    expect_refusal("ckpt.refuse_garbage", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "empty.h5");
    write_garbage(f, 0, 1);
    snprintf(want, sizeof want, "checkpoint %s: not an HDF5 file (0 bytes, no HDF5 signature)", f);
    expect_refusal("ckpt.refuse_empty", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "truncated.h5");
    long half = file_size(g_all) / 2;
    copy_file(g_all, f, half);
    snprintf(want, sizeof want, "checkpoint %s: cannot open HDF5 file (truncated or corrupt, %ld bytes): truncated file: eof = %ld,",
             f, half, half);
    expect_refusal("ckpt.refuse_truncated", f, &ps, 1, want, 1);

    tmp_path(f, sizeof f, "plain.h5");
    hid_t h = H5Fcreate(f, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(h);
    snprintf(want, sizeof want, "checkpoint %s: not an anyref checkpoint: attribute 'format' missing", f);
    expect_refusal("ckpt.refuse_plain_hdf5", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "format.h5");
    mutate(g_all, f, mut_format);
    snprintf(want, sizeof want, "checkpoint %s: attribute 'format' is 'other-format', expected 'anyref-checkpoint'", f);
    expect_refusal("ckpt.refuse_format", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "version.h5");
    mutate(g_all, f, mut_version);
    snprintf(want, sizeof want, "checkpoint %s: unsupported version 2 (this build reads version 1)", f);
    expect_refusal("ckpt.refuse_version", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "incomplete.h5");
    mutate(g_all, f, mut_incomplete);
    snprintf(want, sizeof want,
             "checkpoint %s: attribute 'complete' missing: the save that wrote this file did not finish", f);
    expect_refusal("ckpt.refuse_incomplete", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "rng3.h5");
    mutate(g_all, f, mut_rng3);
    snprintf(want, sizeof want, "checkpoint %s: attribute 'rng_state' has 3 values, expected 4", f);
    expect_refusal("ckpt.refuse_rng_state_length", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "dtype.h5");
    mutate(g_all, f, mut_dtype);
    snprintf(want, sizeof want, "checkpoint %s: tensor '" N_LORA_A "' in /weights has dtype float64, expected float32",
             f);
    expect_refusal("ckpt.refuse_dtype", f, &ps, 1, want, 0);

    tmp_path(f, sizeof f, "adam_m_partial.h5");
    mutate(g_all, f, mut_adam_m_norm);
    snprintf(want, sizeof want, "checkpoint %s: trainable tensor '" N_NORM "' missing from /adam_m", f);
    expect_refusal("ckpt.refuse_moment_missing", f, &ps, 0, want, 0);

    tmp_path(f, sizeof f, "no_adam.h5");
    mutate(g_all, f, mut_no_adam);
    snprintf(want, sizeof want,
             "checkpoint %s: no AdamW moments (groups /adam_m and /adam_v missing), but the load requires them", f);
    expect_refusal("ckpt.refuse_moments_required", f, &ps, 1, want, 0);
    {   /* the same file without require_moments: weights load, moments stay */
        snap before = snapshot(&ps);
        int rc = ckpt_load(f, &ps, NULL, 0);
        snap after = snapshot(&ps);
        int mv_same = memcmp(before.m, after.m, ps.ng * 4) == 0 && memcmp(before.v, after.v, ps.ng * 4) == 0;
        int w_changed = memcmp(before.w, after.w, ps.nw * 4) != 0;
        t_check(rc == 0 && mv_same && w_changed, "ckpt.weights_only_without_moments",
                "rc %d '%s', moments %s, weights %s", rc, rc ? ar_error() : "", mv_same ? "kept" : "CHANGED",
                w_changed ? "loaded" : "NOT loaded");
        snap_free(&before);
        snap_free(&after);
    }
    params_free(&ps);

    /* registries that do not match the file (saved from k_base) */
    tspec spec[N_BASE + 1];
    memcpy(spec, k_base, sizeof k_base);
    spec[1].shape[1] = 16;   /* lora_A [4,8] -> [4,16] */
    if (build(&ps, spec, N_BASE, 6) == 0) {
        snprintf(want, sizeof want,
                 "checkpoint %s: tensor '" N_LORA_A "' in /weights has shape [4,8], model expects [4,16]", g_all);
        expect_refusal("ckpt.refuse_shape", g_all, &ps, 1, want, 0);
        params_free(&ps);
    }
    memcpy(spec, k_base, sizeof k_base);
    spec[3].ndim = 3;        /* conv [2,3,4,5] -> [2,3,4] */
    if (build(&ps, spec, N_BASE, 6) == 0) {
        snprintf(want, sizeof want,
                 "checkpoint %s: tensor '" N_CONV "' in /weights has shape [2,3,4,5], model expects [2,3,4]", g_all);
        expect_refusal("ckpt.refuse_rank", g_all, &ps, 1, want, 0);
        params_free(&ps);
    }
    memcpy(spec, k_base, sizeof k_base);
    spec[N_BASE] = (tspec){"model.extra.weight", 1, {3}, 1};
    if (build(&ps, spec, N_BASE + 1, 6) == 0) {
        snprintf(want, sizeof want, "checkpoint %s: trainable tensor 'model.extra.weight' missing from /weights",
                 g_trainable_only);
        expect_refusal("ckpt.refuse_missing_tensor", g_trainable_only, &ps, 1, want, 0);
        params_free(&ps);
    }
    if (build(&ps, k_base, N_BASE - 1, 6) == 0) {   /* no model.norm.weight */
        snprintf(want, sizeof want,
                 "checkpoint %s: tensor '" N_NORM "' in /weights is not in the model (a checkpoint of a different model?)",
                 g_trainable_only);
        expect_refusal("ckpt.refuse_unexpected_tensor", g_trainable_only, &ps, 1, want, 0);
        params_free(&ps);
    }
    memcpy(spec, k_base, sizeof k_base);
    spec[2].trainable = 0;   /* lora_B frozen in the model, has moments in the file */
    if (build(&ps, spec, N_BASE, 6) == 0) {
        snprintf(want, sizeof want,
                 "checkpoint %s: tensor '" N_LORA_B "' in /adam_m is frozen in the model (only trainable tensors "
                 "have AdamW moments)", g_trainable_only);
        expect_refusal("ckpt.refuse_moments_of_frozen", g_trainable_only, &ps, 1, want, 0);
        params_free(&ps);
    }
    /* a file saved with frozen_included = 1 must hold every frozen tensor */
    ar_params sub;
    ar_train_state st;
    state_make(&st);
    tmp_path(f, sizeof f, "no_frozen_all.h5");
    if (build(&sub, k_base + 1, N_BASE - 1, 8) == 0 && ckpt_save(f, &sub, &st, 1) == 0 &&
        build(&ps, k_base, N_BASE, 6) == 0) {
        snprintf(want, sizeof want,
                 "checkpoint %s: frozen tensor '" N_EMBED "' missing from /weights (the file says frozen_included = 1)",
                 f);
        expect_refusal("ckpt.refuse_frozen_missing", f, &ps, 1, want, 0);
        params_free(&ps);
    } else {
        t_fail("ckpt.refuse_frozen_missing", "setup: %s", ar_error());
    }
    params_free(&sub);
    ckpt_state_free(&st);
}

static void test_latest(void) {
    ar_params ps;
    ar_train_state st;
    if (build(&ps, k_base, N_BASE, 9) < 0) { t_fail("ckpt.build", "%s", ar_error()); return; }
    state_make(&st);
    char run[512], out[1024], p[1024], want[1024];
    tmp_path(run, sizeof run, "run");
    int rc = ckpt_latest(run, out, sizeof out);
    t_check(rc == 1, "ckpt.latest_no_dir", "rc %d", rc);

    int64_t steps[] = {50, 200, 100};
    for (int i = 0; i < 3; i++) {
        st.step = steps[i];
        if (ckpt_path(run, steps[i], p, sizeof p) < 0 || ckpt_save(p, &ps, &st, 0) < 0)
            t_fail("ckpt.latest_setup", "%s", ar_error());
    }
    ckpt_path(run, 200, want, sizeof want);
    char junk[1200];
    snprintf(junk, sizeof junk, "%s/checkpoints/step_000300.h5.tmp", run);
    write_garbage(junk, 5000, 3);
    snprintf(junk, sizeof junk, "%s/checkpoints/step_abc.h5", run);
    write_garbage(junk, 100, 4);
    snprintf(junk, sizeof junk, "%s/checkpoints/step_99.h5", run);   /* lexically after step_000200.h5 */
    copy_file(want, junk, -1);
    rc = ckpt_latest(run, out, sizeof out);
    t_check(rc == 0 && strcmp(out, want) == 0, "ckpt.latest_highest_step",
            "rc %d '%s' (expected %s; a leftover .tmp, step_abc.h5 and step_99.h5 present)", rc,
            rc == 0 ? out : ar_error(), want);

    snprintf(junk, sizeof junk, "%s/checkpoints/step_000900.h5", run);   /* newest but broken */
    write_garbage(junk, 3000, 5);
    rc = ckpt_latest(run, out, sizeof out);
    t_check(rc == 0 && strcmp(out, want) == 0, "ckpt.latest_skips_broken", "rc %d '%s'", rc,
            rc == 0 ? out : ar_error());

    ar_train_state got;
    memset(&got, 0, sizeof got);
    rc = ckpt_load(out, &ps, &got, 1);
    t_check(rc == 0 && got.step == 200, "ckpt.latest_loads", "rc %d step %lld", rc, (long long)got.step);
    ckpt_state_free(&got);

    char tiny[8];
    rc = ckpt_latest(run, tiny, sizeof tiny);
    t_check(rc == -1 && strstr(ar_error(), "longer than the 8-byte buffer") != NULL, "ckpt.latest_small_buffer",
            "rc %d '%s'", rc, ar_error());

    char run2[512];
    tmp_path(run2, sizeof run2, "run_empty");
    mkdir(run2, 0777);
    snprintf(junk, sizeof junk, "%s/checkpoints", run2);
    mkdir(junk, 0777);
    snprintf(junk, sizeof junk, "%s/checkpoints/step_000001.h5.tmp", run2);
    write_garbage(junk, 100, 6);
    rc = ckpt_latest(run2, out, sizeof out);
    t_check(rc == 1, "ckpt.latest_only_tmp_is_none", "rc %d", rc);

    char bad[] = "x";
    rc = ckpt_path(run, -1, bad, sizeof bad);
    t_check(rc == -1, "ckpt.path_negative_step", "rc %d '%s'", rc, ar_error());
    ckpt_state_free(&st);
    params_free(&ps);
}

/* A child saves over an existing checkpoint and is SIGKILLed once the .tmp
 * holds at least `threshold` bytes. 1 if the child was killed mid-save. */
static int killed_save(const char *path, const ar_params *ps, const ar_train_state *st, long threshold) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) _exit(ckpt_save(path, ps, st, 0) == 0 ? 0 : 3);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int status = 0, done = 0;
    for (;;) {
        long sz = file_size(tmp);
        if (sz >= threshold) { kill(pid, SIGKILL); break; }
        if (waitpid(pid, &status, WNOHANG) == pid) { done = 1; break; }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 20) { kill(pid, SIGKILL); break; }
    }
    if (!done) waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && exists(tmp);
}

static void test_atomic(void) {
    tspec spec[] = {{"big.weight", 2, {2048, 2048}, 1}, {"small.bias", 1, {8}, 1}, {"frozen.w", 1, {16}, 0}};
    ar_params ps;
    if (build(&ps, spec, 3, 21) < 0) { t_fail("ckpt.build_big", "%s", ar_error()); return; }
    ar_train_state st, got;
    state_make(&st);
    memset(&got, 0, sizeof got);
    char run[512], path[1024], tmp[1100], out[1100];
    tmp_path(run, sizeof run, "atomic_run");
    ckpt_path(run, 1, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    st.step = 1;
    if (ckpt_save(path, &ps, &st, 0) < 0) { t_fail("ckpt.atomic_setup", "%s", ar_error()); params_free(&ps); return; }
    snap first = snapshot(&ps);
    long full = file_size(path);
    char backup[1100];
    tmp_path(backup, sizeof backup, "atomic_first.h5");
    copy_file(path, backup, -1);

    long thresholds[] = {0, 4L << 20, 24L << 20};
    for (int k = 0; k < 3; k++) {
        params_randomize(&ps, 22 + (uint64_t)k);   /* the "next step" that is being saved */
        st.step = 2;
        /* A child that finished before the kill (a descheduled parent on a busy
         * machine) proves nothing: put the first checkpoint back and try again. */
        int killed = 0;
        for (int attempt = 0; attempt < 3 && killed != 1; attempt++) {
            if (attempt) copy_file(backup, path, -1);
            killed = killed_save(path, &ps, &st, thresholds[k]);
        }
        long left = file_size(tmp);
        int rc = ckpt_load(path, &ps, &got, 1);
        snap now = snapshot(&ps);
        int same = trainable_same(&ps, &now, &first);
        int lr = ckpt_latest(run, out, sizeof out);
        int tmp_rc = ckpt_load(tmp, &ps, NULL, 1);
        snap after_tmp = snapshot(&ps);
        t_check(killed == 1 && rc == 0 && got.step == 1 && same && lr == 0 && strcmp(out, path) == 0 &&
                    tmp_rc == -1 && snap_same(&after_tmp, &now),
                "ckpt.atomic_kill", "killed at .tmp >= %ld bytes (%s; .tmp left with %ld of %ld bytes): previous "
                "checkpoint loads %s (step %lld), latest %s, the .tmp is refused: '%s'",
                thresholds[k], killed == 1 ? "killed mid-save" : "NOT killed mid-save", left, full,
                rc == 0 && same ? "unchanged" : "CHANGED", (long long)got.step, lr == 0 ? out : "(none)", ar_error());
        snap_free(&now);
        snap_free(&after_tmp);
    }
    /* the next save overwrites the leftover .tmp and replaces the checkpoint */
    params_randomize(&ps, 99);
    fill_moments(&ps, 98);
    st.step = 2;
    snap second = snapshot(&ps);
    int rc = ckpt_save(path, &ps, &st, 0);
    params_randomize(&ps, 5);
    int rl = rc == 0 ? ckpt_load(path, &ps, &got, 1) : -1;
    snap now = snapshot(&ps);
    t_check(rc == 0 && rl == 0 && got.step == 2 && trainable_same(&ps, &now, &second) && !exists(tmp),
            "ckpt.save_after_interrupted", "rc %d/%d step %lld, .tmp %s %s", rc, rl, (long long)got.step,
            exists(tmp) ? "left" : "gone", rc || rl ? ar_error() : "");
    snap_free(&now);
    snap_free(&second);
    snap_free(&first);
    ckpt_state_free(&got);
    ckpt_state_free(&st);
    params_free(&ps);
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);   /* the test's own HDF5 calls print nothing */
    snprintf(g_dir, sizeof g_dir, "/tmp/anyref_test_ckpt_XXXXXX");
    if (!mkdtemp(g_dir)) {
        t_fail("ckpt.tmpdir", "mkdtemp failed");
        return t_exit_code();
    }
    test_roundtrip();
    test_save_rejects();
    test_refusals();
    test_latest();
    test_atomic();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return t_exit_code();
}
