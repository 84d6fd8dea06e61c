/* tests/test_token_dataset.c — the pre-tokenized data format (data/token_dataset.h):
 * exact tokens/targets (the label shift, padding, truncation, masks of every
 * dtype), the epoch permutation, bitwise resume from a saved cursor, broken
 * rows (skipped, counted, warned with the exact text), and refusals with
 * their exact messages. Every file is written here in C; nothing else needed. */
#include "tests/testlib.h"

#include "core/error.h"
#include "core/rng.h"
#include "data/token_dataset.h"

#include <hdf5.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmpdir[256];

static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_tmpdir, name); }

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = '\0';
    fclose(f);
    return buf;
}

/* stderr of everything between capture_begin and capture_end. */
static int g_saved_fd = -1;
static char g_cap_path[300];
static void capture_begin(const char *name) {
    tmp_path(g_cap_path, sizeof g_cap_path, name);
    fflush(stderr);
    g_saved_fd = dup(2);
    int fd = open(g_cap_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
}
static char *capture_end(void) {
    fflush(stderr);
    dup2(g_saved_fd, 2);
    close(g_saved_fd);
    return slurp(g_cap_path);
}

static int count_str(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

static int ints_eq(const int *a, const int *b, int n) { return memcmp(a, b, (size_t)n * sizeof(int)) == 0; }

static void ints_str(char *buf, size_t cap, const int *x, int n) {
    size_t o = 0;
    for (int i = 0; i < n && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, "%s%d", i ? " " : "", x[i]);
}

/* Checks tds_read_row(i, T) against expected tokens and targets. */
static void check_row(token_dataset *ds, int64_t i, int T, const int *etok, const int *etgt, const char *name) {
    int tok[32], tgt[32];
    char a[256], b[256];
    int rc = tds_read_row(ds, i, T, tok, tgt);
    int ok = rc == 0 && ints_eq(tok, etok, T) && ints_eq(tgt, etgt, T);
    ints_str(a, sizeof a, tok, T);
    ints_str(b, sizeof b, tgt, T);
    t_check(ok, name, "rc %d tokens [%s] targets [%s]%s%s", rc, a, b, rc ? " " : "", rc ? ar_error() : "");
}

/* ------------------------------------------------------------------------ */
/* A raw HDF5 writer for files tds_write would never make                   */
/* ------------------------------------------------------------------------ */
typedef struct {
    const char *name;
    hid_t ftype, mtype;
    int rank;
    hsize_t dims[3];
    const void *data;
} rawds;

/* attrs: NULL-terminated names with values; returns 0 / -1. */
static int write_raw(const char *path, const rawds *d, int n, const char *attr, long long attr_val) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return -1;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        hid_t sp = H5Screate_simple(d[i].rank, d[i].dims, NULL);
        hid_t ds = H5Dcreate2(f, d[i].name, d[i].ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (ds < 0 || H5Dwrite(ds, d[i].mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, d[i].data) < 0) rc = -1;
        if (ds >= 0) H5Dclose(ds);
        H5Sclose(sp);
    }
    if (!rc && attr) {
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(f, attr, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0 || H5Awrite(a, H5T_NATIVE_LLONG, &attr_val) < 0) rc = -1;
        if (a >= 0) H5Aclose(a);
        H5Sclose(sp);
    }
    H5Fclose(f);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Row contents: the shift, padding, truncation                             */
/* ------------------------------------------------------------------------ */
/* 3 rows, T = 6, vocab 50, pad_id 7. Row 1 has 4 real tokens; its padded
 * positions hold garbage that must never show. */
static const int R_IDS[3][6] = {{1, 2, 3, 4, 5, 6}, {10, 11, 12, 13, -5, 900}, {20, 21, 22, 23, 24, 25}};
static const int R_LAB[3][6] = {{-100, -100, 3, 4, 5, 6}, {-100, 11, 12, 13, 777, -3}, {20, 21, 22, 23, 24, 25}};
static const uint8_t R_MASK[3][6] = {{1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 0, 0}, {1, 1, 1, 1, 1, 1}};

static void test_rows(void) {
    char path[300];
    tmp_path(path, sizeof path, "rows.h5");
    int rc = tds_write(path, &R_IDS[0][0], &R_LAB[0][0], &R_MASK[0][0], 3, 6, 50, 7);
    if (!t_check(rc == 0, "tds.write", "%s", rc ? ar_error() : "rows.h5")) return;
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    t_check(access(tmp, F_OK) != 0, "tds.write_leaves_no_tmp", "%s absent", tmp);

    token_dataset *ds = tds_open(path, 64);
    if (!t_check(ds != NULL, "tds.open", "%s", ds ? "ok" : ar_error())) return;
    t_check(tds_rows(ds) == 3 && tds_seq_len(ds) == 6 && tds_pad_id(ds) == 7, "tds.shape_and_pad",
            "N %lld T %d pad %d", (long long)tds_rows(ds), tds_seq_len(ds), tds_pad_id(ds));

    /* File length: targets[t] = labels[t+1], -100 at the last real position. */
    check_row(ds, 0, 6, (int[]){1, 2, 3, 4, 5, 6}, (int[]){-100, 3, 4, 5, 6, -100}, "tds.row_shift_full");
    check_row(ds, 2, 6, (int[]){20, 21, 22, 23, 24, 25}, (int[]){21, 22, 23, 24, 25, -100}, "tds.row_shift_all_labels");
    /* Masked row: 4 real tokens, pad_id after them, no target from position 3 on. */
    check_row(ds, 1, 6, (int[]){10, 11, 12, 13, 7, 7}, (int[]){11, 12, 13, -100, -100, -100}, "tds.row_mask_pads");
    /* Longer batch sequence: right-padded with pad_id / -100. */
    check_row(ds, 0, 9, (int[]){1, 2, 3, 4, 5, 6, 7, 7, 7}, (int[]){-100, 3, 4, 5, 6, -100, -100, -100, -100},
              "tds.row_pad_to_longer_T");
    check_row(ds, 1, 9, (int[]){10, 11, 12, 13, 7, 7, 7, 7, 7},
              (int[]){11, 12, 13, -100, -100, -100, -100, -100, -100}, "tds.row_masked_pad_to_longer_T");
    /* Truncation: the last kept position still predicts the next real token. */
    check_row(ds, 0, 4, (int[]){1, 2, 3, 4}, (int[]){-100, 3, 4, 5}, "tds.row_truncated");
    check_row(ds, 1, 3, (int[]){10, 11, 12}, (int[]){11, 12, 13}, "tds.row_masked_truncated");
    check_row(ds, 0, 2, (int[]){1, 2}, (int[]){-100, 3}, "tds.row_truncated_to_2");

    /* Truncated so far that no supervised target is left: broken at that T. */
    int tok[8], tgt[8];
    rc = tds_read_row(ds, 0, 1, tok, tgt);
    char want[512];
    snprintf(want, sizeof want,
             "token dataset %s: row 0: no supervised target within sequence length 1: the first supervised label is "
             "at position 2 of 6 real tokens", path);
    t_check(rc == 1 && strcmp(ar_error(), want) == 0 && tok[0] == 7 && tgt[0] == -100, "tds.row_truncated_no_target",
            "rc %d '%s'", rc, ar_error());

    rc = tds_read_row(ds, 3, 6, tok, tgt);
    snprintf(want, sizeof want, "token dataset %s: row 3 is outside [0, 3)", path);
    t_check(rc == -1 && strcmp(ar_error(), want) == 0, "tds.row_index_out_of_range", "rc %d '%s'", rc, ar_error());
    rc = tds_read_row(ds, 0, 0, tok, tgt);
    t_check(rc == -1 && strstr(ar_error(), "sequence length 0; expected >= 1"), "tds.row_bad_T", "rc %d '%s'", rc,
            ar_error());
    tds_close(ds);

    /* No mask, no pad_id: every position is real, padding uses token 0. */
    tmp_path(path, sizeof path, "sub/dir/nomask.h5");
    rc = tds_write(path, &R_IDS[0][0], &R_LAB[0][0], NULL, 3, 6, 1000, -1);
    ds = rc == 0 ? tds_open(path, 1000) : NULL;
    if (!t_check(ds != NULL, "tds.write_open_nomask_in_new_dir", "%s", ds ? "ok" : ar_error())) return;
    t_check(tds_pad_id(ds) == 0, "tds.pad_default_0", "pad %d", tds_pad_id(ds));
    /* Row 1 without a mask: -5 is a real token now, so the row is broken. */
    rc = tds_read_row(ds, 1, 6, tok, tgt);
    snprintf(want, sizeof want, "token dataset %s: row 1: input_ids[4] = -5 is outside the vocabulary [0, 1000)", path);
    t_check(rc == 1 && strcmp(ar_error(), want) == 0, "tds.nomask_all_positions_real", "rc %d '%s'", rc, ar_error());
    check_row(ds, 2, 8, (int[]){20, 21, 22, 23, 24, 25, 0, 0}, (int[]){21, 22, 23, 24, 25, -100, -100, -100},
              "tds.nomask_pad_with_0");
    tds_close(ds);

    /* The file's vocab_size (50) is the bound when the model's is larger. */
    int ids2[2][3] = {{1, 49, 2}, {1, 50, 2}}, lab2[2][3] = {{1, 49, 2}, {1, 2, 3}};
    tmp_path(path, sizeof path, "vocab.h5");
    rc = tds_write(path, &ids2[0][0], &lab2[0][0], NULL, 2, 3, 50, -1);
    ds = rc == 0 ? tds_open(path, 64) : NULL;
    if (ds) {
        int r0 = tds_read_row(ds, 0, 3, tok, tgt);
        int r1 = tds_read_row(ds, 1, 3, tok, tgt);
        snprintf(want, sizeof want, "token dataset %s: row 1: input_ids[1] = 50 is outside the vocabulary [0, 50)",
                 path);
        t_check(r0 == 0 && r1 == 1 && strcmp(ar_error(), want) == 0, "tds.file_vocab_is_the_bound",
                "rc %d %d '%s'", r0, r1, ar_error());
        tds_close(ds);
    } else {
        t_fail("tds.file_vocab_is_the_bound", "%s", ar_error());
    }
}

/* The mask may be int8, int32, uint8 (tds_write) or h5py's bool enum; ids
 * may be big-endian int32. All read the same as the reference. */
static void test_mask_dtypes(void) {
    const int T = 6;
    int8_t m8[3][6];
    int32_t m32[3][6];
    for (int i = 0; i < 3; i++)
        for (int t = 0; t < T; t++) m8[i][t] = (int8_t)(m32[i][t] = R_MASK[i][t]);
    hid_t boolt = H5Tenum_create(H5T_NATIVE_INT8);
    int8_t fv = 0, tv = 1;
    H5Tenum_insert(boolt, "FALSE", &fv);
    H5Tenum_insert(boolt, "TRUE", &tv);
    struct { const char *name; hid_t ft, mt; const void *data; hid_t idt; } cases[] = {
        {"mask_int8.h5", H5T_STD_I8LE, H5T_NATIVE_INT8, m8, H5T_STD_I32LE},
        {"mask_int32.h5", H5T_STD_I32LE, H5T_NATIVE_INT32, m32, H5T_STD_I32LE},
        {"mask_bool.h5", boolt, boolt, m8, H5T_STD_I32LE},
        {"ids_be.h5", H5T_STD_U8LE, H5T_NATIVE_UINT8, R_MASK, H5T_STD_I32BE},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char path[300], name[64];
        tmp_path(path, sizeof path, cases[c].name);
        snprintf(name, sizeof name, "tds.dtype_%s", cases[c].name);
        rawds d[3] = {
            {"input_ids", cases[c].idt, H5T_NATIVE_INT, 2, {3, 6}, R_IDS},
            {"labels", cases[c].idt, H5T_NATIVE_INT, 2, {3, 6}, R_LAB},
            {"attention_mask", cases[c].ft, cases[c].mt, 2, {3, 6}, cases[c].data},
        };
        token_dataset *ds = write_raw(path, d, 3, "pad_id", 7) == 0 ? tds_open(path, 64) : NULL;
        if (!ds) { t_fail(name, "%s", ar_error()); continue; }
        int tok[6], tgt[6];
        int rc = tds_read_row(ds, 1, T, tok, tgt);
        int ok = rc == 0 && ints_eq(tok, (int[]){10, 11, 12, 13, 7, 7}, T) &&
                 ints_eq(tgt, (int[]){11, 12, 13, -100, -100, -100}, T);
        rc |= tds_read_row(ds, 0, T, tok, tgt);
        ok = ok && rc == 0 && ints_eq(tgt, (int[]){-100, 3, 4, 5, 6, -100}, T);
        t_check(ok, name, "rows 0 and 1 as with the uint8 mask (rc %d)", rc);
        tds_close(ds);
    }
    H5Tclose(boolt);
}

/* ------------------------------------------------------------------------ */
/* Permutation and batching                                                 */
/* ------------------------------------------------------------------------ */
/* N rows; row i starts with token i (so a batch shows which rows it holds)
 * and is supervised everywhere. bad[i] != 0: row i gets an id out of range. */
static int write_numbered(const char *path, int N, int T, const int *bad) {
    int *ids = malloc(sizeof(int) * (size_t)N * T), *lab = malloc(sizeof(int) * (size_t)N * T);
    for (int i = 0; i < N; i++)
        for (int t = 0; t < T; t++) {
            ids[i * T + t] = t == 0 ? i : (i * 7 + t) % 1000;
            lab[i * T + t] = ids[i * T + t];
        }
    for (int i = 0; bad && i < N; i++)
        if (bad[i]) ids[i * T + 1] = 5000;
    int rc = tds_write(path, ids, lab, NULL, N, T, 1000, -1);
    free(ids);
    free(lab);
    return rc;
}

static void test_permutation_and_batches(void) {
    enum { N = 100 };
    char path[300];
    tmp_path(path, sizeof path, "numbered.h5");
    token_dataset *ds = write_numbered(path, N, 4, NULL) == 0 ? tds_open(path, 1000) : NULL;
    if (!t_check(ds != NULL, "tds.numbered_open", "%s", ds ? "ok" : ar_error())) return;

    int64_t a[N], b[N], c[N], d[N], ref[N];
    tds_epoch_order(ds, 5, 0, a);
    tds_epoch_order(ds, 5, 1, b);
    tds_epoch_order(ds, 5, 0, c);
    tds_epoch_order(ds, 6, 0, d);
    int seen[N] = {0}, is_perm = 1, ident = 1, same_ab = 1, same_ad = 1;
    for (int k = 0; k < N; k++) {
        if (a[k] < 0 || a[k] >= N || seen[a[k]]++) is_perm = 0;
        ident &= a[k] == k;
        same_ab &= a[k] == b[k];
        same_ad &= a[k] == d[k];
    }
    t_check(is_perm && !ident, "tds.perm_is_a_permutation", "each of %d rows once, not the identity", N);
    t_check(memcmp(a, c, sizeof a) == 0, "tds.perm_same_seed_epoch_identical", "seed 5 epoch 0 twice");
    t_check(!same_ab && !same_ad, "tds.perm_differs_by_epoch_and_seed", "epoch 0 vs 1, seed 5 vs 6");
    /* The documented recipe, written out independently. */
    for (int k = 0; k < N; k++) ref[k] = k;
    ar_rng r;
    rng_seed(&r, rng_derive(5, 1));
    for (int k = N - 1; k > 0; k--) {
        int j = (int)rng_below(&r, (uint64_t)k + 1);
        int64_t x = ref[k]; ref[k] = ref[j]; ref[j] = x;
    }
    t_check(memcmp(b, ref, sizeof b) == 0, "tds.perm_matches_documented_recipe", "Fisher-Yates on rng_derive(5, 1)");

    /* 26 batches of 4 = 104 rows: epoch 0 in order a, then 4 rows of b; the
     * 25th batch ends exactly at the epoch end and the cursor wraps lazily. */
    tds_cursor cur = {.seed = 5};
    int tok[4 * 4], tgt[4 * 4], order_ok = 1, tgt_ok = 1;
    for (int bt = 0; bt < 26; bt++) {
        if (tds_next_batch(ds, &cur, 4, 4, tok, tgt) != 0) { order_ok = 0; break; }
        for (int j = 0; j < 4; j++) {
            int k = bt * 4 + j;
            int64_t want = k < N ? a[k] : b[k - N];
            order_ok &= tok[j * 4] == want;
            tgt_ok &= tgt[j * 4] == tok[j * 4 + 1] && tgt[j * 4 + 3] == -100;
        }
        if (bt == 24)
            t_check(cur.epoch == 0 && cur.position == N, "tds.cursor_at_epoch_end", "epoch %lld position %lld",
                    (long long)cur.epoch, (long long)cur.position);
    }
    t_check(order_ok && tgt_ok, "tds.batches_follow_permutation", "104 rows: epoch 0 then the start of epoch 1");
    t_check(cur.epoch == 1 && cur.position == 4 && cur.skipped == 0, "tds.cursor_after_wrap",
            "epoch %lld position %lld skipped %lld", (long long)cur.epoch, (long long)cur.position,
            (long long)cur.skipped);

    /* A batch that spans two epochs: B = 7 from position 97. */
    tds_cursor span = {.seed = 5, .epoch = 0, .position = 97};
    int tok7[7 * 4], tgt7[7 * 4];
    int rc = tds_next_batch(ds, &span, 7, 4, tok7, tgt7);
    int span_ok = rc == 0;
    for (int j = 0; j < 7 && span_ok; j++) span_ok = tok7[j * 4] == (j < 3 ? a[97 + j] : b[j - 3]);
    t_check(span_ok && span.epoch == 1 && span.position == 4, "tds.batch_spans_two_epochs",
            "rc %d, 3 rows of epoch 0 + 4 of epoch 1, cursor epoch %lld position %lld", rc, (long long)span.epoch,
            (long long)span.position);

    tds_cursor bad = {.seed = 5, .position = N + 1};
    tds_cursor keep = bad;
    rc = tds_next_batch(ds, &bad, 1, 4, tok, tgt);
    t_check(rc == -1 && memcmp(&bad, &keep, sizeof bad) == 0 && strstr(ar_error(), "position in [0, 100]"),
            "tds.cursor_invalid_refused", "'%s'", ar_error());
    tds_close(ds);
}

/* 7 batches in one go == 3 batches, cursor saved to disk, file reopened, 4 more. */
static void test_resume(void) {
    enum { N = 37, T = 8, B = 8, NB = 7 };
    char path[300], cpath[300];
    tmp_path(path, sizeof path, "resume.h5");
    tmp_path(cpath, sizeof cpath, "resume.cursor");
    int bad[N] = {0};
    bad[3] = bad[17] = bad[30] = 1;   /* skipped rows must resume identically too */
    int wrc = write_numbered(path, N, T, bad);
    if (!t_check(wrc == 0, "tds.resume_write", "%s", wrc ? ar_error() : "ok")) return;
    static int tokA[NB * B * T], tgtA[NB * B * T], tokB[NB * B * T], tgtB[NB * B * T];
    capture_begin("resume.txt");
    token_dataset *ds = tds_open(path, 1000);
    tds_cursor ca = {.seed = 1234}, cb = {.seed = 1234};
    int rc = ds ? 0 : -1;
    for (int k = 0; k < NB && !rc; k++) rc = tds_next_batch(ds, &ca, B, T, tokA + k * B * T, tgtA + k * B * T);
    tds_close(ds);

    ds = rc ? NULL : tds_open(path, 1000);
    rc = ds ? 0 : -1;
    for (int k = 0; k < 3 && !rc; k++) rc = tds_next_batch(ds, &cb, B, T, tokB + k * B * T, tgtB + k * B * T);
    tds_close(ds);
    FILE *f = fopen(cpath, "wb");
    if (!f || fwrite(&cb, sizeof cb, 1, f) != 1) rc = -1;
    if (f) fclose(f);
    memset(&cb, 0xAB, sizeof cb);
    f = fopen(cpath, "rb");
    if (!f || fread(&cb, sizeof cb, 1, f) != 1) rc = -1;
    if (f) fclose(f);
    ds = rc ? NULL : tds_open(path, 1000);
    rc = ds ? 0 : -1;
    for (int k = 3; k < NB && !rc; k++) rc = tds_next_batch(ds, &cb, B, T, tokB + k * B * T, tgtB + k * B * T);
    tds_close(ds);
    char *err = capture_end();
    if (!t_check(rc == 0, "tds.resume_runs", "%s", rc ? ar_error() : "ok")) { free(err); return; }
    int same = memcmp(tokA, tokB, sizeof tokA) == 0 && memcmp(tgtA, tgtB, sizeof tgtA) == 0;
    t_check(same && memcmp(&ca, &cb, sizeof ca) == 0, "tds.resume_bitwise_identical",
            "%d batches of %dx%d; cursors epoch %lld/%lld position %lld/%lld skipped %lld/%lld", NB, B, T,
            (long long)ca.epoch, (long long)cb.epoch, (long long)ca.position, (long long)cb.position,
            (long long)ca.skipped, (long long)cb.skipped);
    /* 56 good rows of 34 per epoch: the stream crossed into epoch 1, and skipped
     * the 3 bad rows of epoch 0 plus those met in epoch 1. */
    int64_t order1[N];
    ds = tds_open(path, 1000);
    int bad_in_e1 = 0;
    if (ds) {
        tds_epoch_order(ds, 1234, 1, order1);
        for (int k = 0; k < ca.position; k++) bad_in_e1 += bad[order1[k]];
        tds_close(ds);
    }
    t_check(ca.epoch == 1 && ca.skipped == 3 + bad_in_e1 && ca.position - bad_in_e1 == NB * B - (N - 3),
            "tds.resume_cursor_counts", "epoch %lld position %lld skipped %lld (bad rows met in epoch 1: %d)",
            (long long)ca.epoch, (long long)ca.position, (long long)ca.skipped, bad_in_e1);
    int no_bad = 1;
    for (int k = 0; k < NB * B; k++) no_bad &= !bad[tokA[k * T]];
    t_check(no_bad && count_str(err, "skipped: input_ids[1] = 5000") == 2 * (3 + bad_in_e1),
            "tds.resume_no_broken_row_in_batches", "%d warnings in the two runs", count_str(err, "skipped:"));
    free(err);
}

/* ------------------------------------------------------------------------ */
/* Broken rows                                                              */
/* ------------------------------------------------------------------------ */
static void test_broken_rows(void) {
    enum { N = 8, T = 5, V = 20 };
    /* Padded positions carry out-of-range garbage that must be ignored. */
    int ids[N][T] = {
        {1, 2, 3, 4, 99},    /* 0 good (pos 4 is pad) */
        {1, 2, 20, 4, 5},    /* 1 id out of range */
        {1, 2, 3, 4, 5},     /* 2 bad label */
        {1, 2, 3, 4, 5},     /* 3 mask not a prefix */
        {1, 2, 3, 4, 5},     /* 4 all -100 after position 0 */
        {5, 6, 7, -1, -1},   /* 5 good, 3 real tokens */
        {1, 2, 3, 4, 5},     /* 6 mask value 2 */
        {1, 2, 3, 4, 5},     /* 7 mask all zeros */
    };
    int lab[N][T] = {
        {-100, 2, 3, 4, 55}, {-100, 2, 3, 4, 5}, {-100, 2, 3, -1, 5}, {-100, 2, 3, 4, 5},
        {9, -100, -100, -100, -100}, {-100, 6, 7, 300, 300}, {1, 2, 3, 4, 5}, {1, 2, 3, 4, 5},
    };
    uint8_t mask[N][T] = {
        {1, 1, 1, 1, 0}, {1, 1, 1, 1, 1}, {1, 1, 1, 1, 1}, {1, 0, 1, 0, 0},
        {1, 1, 1, 1, 1}, {1, 1, 1, 0, 0}, {1, 1, 2, 0, 0}, {0, 0, 0, 0, 0},
    };
    const char *why[N] = {
        NULL,
        "input_ids[2] = 20 is outside the vocabulary [0, 20)",
        "labels[3] = -1 is neither -100 nor inside the vocabulary [0, 20)",
        "attention_mask is not a prefix of ones (0 at position 1, 1 at position 2)",
        "no supervised target: labels[1..4] are all -100 (labels[0] is never a target)",
        NULL,
        "attention_mask[2] = 2; expected 0 or 1",
        "attention_mask is all zeros (no real token)",
    };
    char path[300], want[700];
    tmp_path(path, sizeof path, "broken.h5");
    token_dataset *ds = tds_write(path, &ids[0][0], &lab[0][0], &mask[0][0], N, T, V, -1) == 0 ? tds_open(path, V) : NULL;
    if (!t_check(ds != NULL, "tds.broken_open", "%s", ds ? "ok" : ar_error())) return;
    int tok[T], tgt[T];
    for (int i = 0; i < N; i++) {
        char name[64];
        snprintf(name, sizeof name, "tds.broken_row_%d", i);
        int rc = tds_read_row(ds, i, T, tok, tgt);
        if (!why[i]) {
            t_check(rc == 0, name, "rc %d (usable) %s", rc, rc ? ar_error() : "");
            continue;
        }
        snprintf(want, sizeof want, "token dataset %s: row %d: %s", path, i, why[i]);
        t_check(rc == 1 && strcmp(ar_error(), want) == 0, name, "rc %d '%s'", rc, ar_error());
    }
    check_row(ds, 5, T, (int[]){5, 6, 7, 0, 0}, (int[]){6, 7, -100, -100, -100}, "tds.broken_file_good_row");

    /* One batch of the 2 good rows: every broken row met before the second is
     * skipped, counted and warned exactly once with its reason. */
    int64_t order[N];
    tds_epoch_order(ds, 77, 0, order);
    int64_t pos2 = -1, good = 0, nbad = 0;
    for (int k = 0; k < N && pos2 < 0; k++) {
        if (why[order[k]]) nbad++;
        else if (++good == 2) pos2 = k + 1;
    }
    tds_cursor cur = {.seed = 77};
    int btok[2 * T], btgt[2 * T];
    capture_begin("broken.txt");
    int rc = tds_next_batch(ds, &cur, 2, T, btok, btgt);
    char *err = capture_end();
    int warned_ok = 1;
    for (int k = 0; k < pos2; k++) {
        if (!why[order[k]]) continue;
        snprintf(want, sizeof want, "warning: token dataset %s: row %lld skipped: %s\n", path, (long long)order[k],
                 why[order[k]]);
        warned_ok &= count_str(err, want) == 1;
    }
    int rows_ok = (btok[0] == 1 && btok[T] == 5) || (btok[0] == 5 && btok[T] == 1);
    t_check(rc == 0 && rows_ok && cur.position == pos2 && cur.skipped == nbad, "tds.batch_skips_broken_rows",
            "rc %d, position %lld (want %lld), skipped %lld (want %lld)", rc, (long long)cur.position,
            (long long)pos2, (long long)cur.skipped, (long long)nbad);
    int nwarn = count_str(err, "warning: ");
    t_check(warned_ok && nwarn == nbad, "tds.batch_warning_text", "%d warnings (want %lld)%s%s", nwarn,
            (long long)nbad, warned_ok ? "" : ", got:\n", warned_ok ? "" : (err ? err : "(none)"));
    free(err);
    tds_close(ds);
}

/* 30 rows, only row 29 usable: 10 individual warnings, then epoch summaries. */
static void test_warning_limit(void) {
    enum { N = 30, T = 4 };
    int bad[N];
    for (int i = 0; i < N; i++) bad[i] = i != 29;
    char path[300];
    tmp_path(path, sizeof path, "mostly_bad.h5");
    int wrc = write_numbered(path, N, T, bad);
    if (!t_check(wrc == 0, "tds.warn_write", "%s", wrc ? ar_error() : "ok")) return;
    capture_begin("warnlimit.txt");
    token_dataset *ds = tds_open(path, 1000);
    tds_cursor cur = {.seed = 3};
    int tok[3 * T], tgt[3 * T];
    int rc = ds ? tds_next_batch(ds, &cur, 3, T, tok, tgt) : -1;
    tds_close(ds);
    char *err = capture_end();
    /* The epoch summaries and the close summary account for the rest. */
    long long summed = 0;
    int summaries = 0;
    for (const char *p = err; p && (p = strstr(p, " more broken rows were skipped")); p++) {
        const char *q = p;
        while (q > err && q[-1] != ' ') q--;
        summed += atoll(q);
        summaries++;
    }
    int individual = count_str(err, " skipped: input_ids[1] = 5000");
    t_check(rc == 0 && tok[0] == 29 && tok[T] == 29 && tok[2 * T] == 29 && cur.epoch == 2,
            "tds.warn_only_good_row_returned", "rc %d, epoch %lld", rc, (long long)cur.epoch);
    /* Epochs 0 and 1 end with a summary; the close adds one if row 29 was not
     * the first row of epoch 2. */
    int64_t order2[N];
    int first29 = 0;
    ds = tds_open(path, 1000);
    if (ds) {
        tds_epoch_order(ds, 3, 2, order2);
        first29 = order2[0] == 29;
        tds_close(ds);
    }
    t_check(individual == 10 && count_str(err, "further ones are only counted") == 1 && summaries == 3 - first29 &&
                individual + summed == cur.skipped,
            "tds.warn_limit_then_summaries", "%d individual + %lld in %d summaries = %lld skipped", individual,
            summed, summaries, (long long)cur.skipped);
    free(err);

    /* Every row broken: -1, the cursor untouched, also when starting mid-epoch. */
    int allbad[4] = {1, 1, 1, 1};
    tmp_path(path, sizeof path, "all_bad.h5");
    write_numbered(path, 4, T, allbad);
    capture_begin("allbad.txt");
    ds = tds_open(path, 1000);
    tds_cursor c0 = {.seed = 9}, c1 = {.seed = 9, .epoch = 3, .position = 2, .skipped = 5};
    tds_cursor k0 = c0, k1 = c1;
    int rc0 = ds ? tds_next_batch(ds, &c0, 1, T, tok, tgt) : 0;
    char msg0[AR_ERROR_MAX];
    snprintf(msg0, sizeof msg0, "%s", ar_error());
    int rc1 = ds ? tds_next_batch(ds, &c1, 2, T, tok, tgt) : 0;
    tds_close(ds);
    free(capture_end());
    char want[700];
    snprintf(want, sizeof want,
             "token dataset %s: every row is broken at sequence length %d (all 4 rows of epoch 0 were skipped; the "
             "last, row ", path, T);
    t_check(rc0 == -1 && strncmp(msg0, want, strlen(want)) == 0 && memcmp(&c0, &k0, sizeof c0) == 0,
            "tds.all_broken_refused", "'%s'", msg0);
    t_check(rc1 == -1 && strstr(ar_error(), "of epoch 4 were skipped") && memcmp(&c1, &k1, sizeof c1) == 0,
            "tds.all_broken_from_mid_epoch", "'%s'", ar_error());
}

/* ------------------------------------------------------------------------ */
/* Refusals                                                                 */
/* ------------------------------------------------------------------------ */
static void expect_refusal(const char *name, const char *path, int vocab, const char *tail) {
    char want[700];
    snprintf(want, sizeof want, "token dataset %s: %s", path, tail);
    token_dataset *ds = tds_open(path, vocab);
    t_check(ds == NULL && strcmp(ar_error(), want) == 0, name, "'%s'", ds ? "(opened)" : ar_error());
    tds_close(ds);
}

static void test_refusals(void) {
    static const int i32[3 * 7] = {0};
    static const long long i64[3 * 6] = {0};
    static const float f32[3 * 6] = {0};
    char path[300];

    tmp_path(path, sizeof path, "missing.h5");
    rawds only_ids[1] = {{"input_ids", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32}};
    write_raw(path, only_ids, 1, NULL, 0);
    expect_refusal("tds.refuse_missing_labels", path, 10, "no dataset 'labels' (expected int32 [N, T] labels, -100 = ignored)");

    tmp_path(path, sizeof path, "int64.h5");
    rawds wide[2] = {{"input_ids", H5T_STD_I64LE, H5T_NATIVE_LLONG, 2, {3, 6}, i64},
                     {"labels", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32}};
    write_raw(path, wide, 2, NULL, 0);
    expect_refusal("tds.refuse_int64_ids", path, 10, "dataset 'input_ids' has dtype int64; expected int32");

    tmp_path(path, sizeof path, "uint32_labels.h5");
    rawds ulab[2] = {{"input_ids", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32},
                     {"labels", H5T_STD_U32LE, H5T_NATIVE_INT, 2, {3, 6}, i32}};
    write_raw(path, ulab, 2, NULL, 0);
    expect_refusal("tds.refuse_uint32_labels", path, 10, "dataset 'labels' has dtype uint32; expected int32");

    tmp_path(path, sizeof path, "shape.h5");
    rawds shape[2] = {{"input_ids", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32},
                      {"labels", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 7}, i32}};
    write_raw(path, shape, 2, NULL, 0);
    expect_refusal("tds.refuse_shape_mismatch", path, 10,
                   "dataset 'labels' has shape [3,7]; expected [3,6], the shape of 'input_ids'");

    tmp_path(path, sizeof path, "t1.h5");
    rawds t1[2] = {{"input_ids", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 1}, i32},
                   {"labels", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 1}, i32}};
    write_raw(path, t1, 2, NULL, 0);
    expect_refusal("tds.refuse_T_below_2", path, 10,
                   "dataset 'input_ids' has shape [3,1]; expected T >= 2 (a token and its successor)");

    tmp_path(path, sizeof path, "rank3.h5");
    rawds r3[2] = {{"input_ids", H5T_STD_I32LE, H5T_NATIVE_INT, 3, {1, 3, 6}, i32},
                   {"labels", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32}};
    write_raw(path, r3, 2, NULL, 0);
    expect_refusal("tds.refuse_3d_ids", path, 10, "dataset 'input_ids' has shape [1,3,6]; expected 2-D [N, T]");

    tmp_path(path, sizeof path, "float_mask.h5");
    rawds fm[3] = {{"input_ids", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32},
                   {"labels", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32},
                   {"attention_mask", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, {3, 6}, f32}};
    write_raw(path, fm, 3, NULL, 0);
    expect_refusal("tds.refuse_float_mask", path, 10,
                   "dataset 'attention_mask' has dtype float32; expected an integer or bool (1 = token, 0 = pad)");

    tmp_path(path, sizeof path, "padid.h5");
    rawds ok2[2] = {{"input_ids", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32},
                    {"labels", H5T_STD_I32LE, H5T_NATIVE_INT, 2, {3, 6}, i32}};
    write_raw(path, ok2, 2, "pad_id", 10);
    expect_refusal("tds.refuse_pad_id_outside_vocab", path, 10, "attribute pad_id = 10 is outside the vocabulary [0, 10)");

    tmp_path(path, sizeof path, "notes.txt");
    FILE *f = fopen(path, "w");
    if (f) { fputs("input_ids,labels\n1,2\n", f); fclose(f); }
    expect_refusal("tds.refuse_not_hdf5", path, 10, "not an HDF5 file");

    tmp_path(path, sizeof path, "absent.h5");
    expect_refusal("tds.refuse_absent_file", path, 10, "cannot open: No such file or directory");

    tmp_path(path, sizeof path, "bigvocab.h5");
    int ids[4] = {1, 2, 3, 4};
    tds_write(path, ids, ids, NULL, 2, 2, 100, -1);
    expect_refusal("tds.refuse_vocab_larger_than_model", path, 50,
                   "attribute vocab_size = 100 is larger than the model's vocabulary size 50 (the data was "
                   "tokenized for another model)");
    expect_refusal("tds.refuse_model_vocab_0", path, 0, "the model's vocabulary size is 0; expected >= 1");

    /* The writer refuses bad shapes and leaves the destination untouched. */
    int rc = tds_write(path, ids, ids, NULL, 4, 1, 100, -1);
    char want[700];
    snprintf(want, sizeof want, "tds_write %s: shape [4,1]; expected N >= 1 rows and T >= 2", path);
    token_dataset *ds = tds_open(path, 100);
    t_check(rc == -1 && strcmp(ar_error(), want) == 0 && ds && tds_seq_len(ds) == 2, "tds.write_refuses_T1",
            "'%s', old file intact", rc ? want : "(written)");
    tds_close(ds);
}

/* The writer's storage: chunked, shuffle + gzip. */
static void test_writer_storage(void) {
    enum { N = 64, T = 128 };
    char path[300];
    tmp_path(path, sizeof path, "storage.h5");
    int *ids = calloc((size_t)N * T, sizeof(int));
    for (int i = 0; i < N * T; i++) ids[i] = i % 17;
    int rc = tds_write(path, ids, ids, NULL, N, T, 100, -1);
    free(ids);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = rc == 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    hid_t d = f >= 0 ? H5Dopen2(f, "input_ids", H5P_DEFAULT) : -1;
    hid_t p = d >= 0 ? H5Dget_create_plist(d) : -1;
    hsize_t chunk[2] = {0, 0};
    int layout = p >= 0 ? (int)H5Pget_layout(p) : -1, nf = p >= 0 ? H5Pget_nfilters(p) : -1;
    if (layout == H5D_CHUNKED) H5Pget_chunk(p, 2, chunk);
    int has_gzip = p >= 0 && H5Pget_filter_by_id2(p, H5Z_FILTER_DEFLATE, NULL, NULL, NULL, 0, NULL, NULL) >= 0;
    hsize_t stored = d >= 0 ? H5Dget_storage_size(d) : 0;
    if (p >= 0) H5Pclose(p);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    t_check(layout == H5D_CHUNKED && chunk[0] == 32 && chunk[1] == T && nf == 2 && has_gzip &&
                stored < (hsize_t)N * T * 4 / 4,
            "tds.write_chunked_gzip", "chunk [%llu,%llu], %d filters, %llu of %d bytes stored",
            (unsigned long long)chunk[0], (unsigned long long)chunk[1], nf, (unsigned long long)stored, N * T * 4);
}

int main(void) {
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/anyref_test_tds_XXXXXX");
    if (!mkdtemp(g_tmpdir)) {
        t_fail("tds.tmpdir", "mkdtemp failed");
        return 1;
    }
    test_rows();
    test_mask_dtypes();
    test_permutation_and_batches();
    test_resume();
    test_broken_rows();
    test_warning_limit();
    test_refusals();
    test_writer_storage();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0) printf("     (could not remove %s)\n", g_tmpdir);
    return t_exit_code();
}
