/* tests/test_feature_cache.c — the frozen-encoder feature cache
 * (data/feature_cache.h): XXH3-128 against the xxh128sum tool's outputs,
 * the documented byte streams of keys, encoder ids and entry checksums,
 * round trips across reopening, misses under another encoder or input,
 * stale and corrupt entries (values overwritten in place, checksum missing,
 * an entry filed under another key, a soft link) detected, counted, warned
 * with the file and entry named, removed and repaired by the next put; files
 * that are not caches; and every truncation and a sweep of byte flips of a
 * cache file: an error or a safe miss, never wrong values, never a crash.
 * Every file is written here in C. */
#include "tests/testlib.h"

#include "core/error.h"
#include "data/feature_cache.h"
#include "model/params.h"

#include <hdf5.h>

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_tmpdir[256];
static void tmp_path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", g_tmpdir, name); }

static char *slurp(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = '\0';
    fclose(f);
    if (len) *len = n;
    return buf;
}
static int spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int rc = fwrite(b, 1, n, f) == n ? 0 : -1;
    return fclose(f) == 0 ? rc : -1;
}

/* stderr of everything between capture_begin and capture_end. */
static int g_saved_fd = -1;
static char g_cap_path[300];
static void capture_begin(void) {
    tmp_path(g_cap_path, sizeof g_cap_path, "stderr.txt");
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
    return slurp(g_cap_path, NULL);
}

static int hex_is(fc_hash h, const char *want) {
    char b[FC_HEX_LEN + 1];
    return strcmp(fc_hash_hex(h, b), want) == 0;
}
static size_t numel_of(const int *shape, int ndim) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    return n;
}

/* ------------------------------------------------------------------------ */
/* Hashing                                                                  */
/* ------------------------------------------------------------------------ */
static void test_hashing(void) {
    /* Reference digests printed by xxHash's own tool (xxh128sum 0.8.1). */
    static unsigned char zeros[1000];
    char b[FC_HEX_LEN + 1];
    fc_hash e = fc_key_of(NULL, 0), a = fc_key_of("abc", 3), z = fc_key_of(zeros, sizeof zeros);
    t_check(hex_is(e, "99aa06d3014798d86001c324468d497f") && hex_is(a, "06b05ab6733a618578af5f94892f3950") &&
            hex_is(z, "3fb94aea6d09b97224c1ea6074dd588c"),
            "fc.key_matches_xxh128sum", "'' %s", fc_hash_hex(e, b));

    /* Streaming = one-shot of the concatenation, however it is split. */
    float px[300];
    t_fill_normal(px, 300, 1.0f, 11);
    fc_hash one = fc_key_of(px, sizeof px);
    int same = 1;
    size_t cuts[] = {0, 1, 7, 240, 241, 1024, 1199, 1200};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        fc_hasher h;
        fc_hasher_init(&h);
        fc_hasher_update(&h, px, cuts[i]);
        fc_hasher_update(&h, (const char *)px + cuts[i], sizeof px - cuts[i]);
        same &= fc_hash_eq(fc_hasher_digest(&h), one);
    }
    fc_hasher h;
    fc_hasher_init(&h);
    fc_hasher_u64(&h, 0x0102030405060708ull);
    unsigned char le[8] = {8, 7, 6, 5, 4, 3, 2, 1};
    same &= fc_hash_eq(fc_hasher_digest(&h), fc_key_of(le, 8));
    t_check(same && fc_hash_eq(fc_key_of(px, sizeof px), one), "fc.key_streaming_and_deterministic",
            "%s", fc_hash_hex(one, b));

    /* Every one-bit flip of a 64-byte input gives a new key. */
    unsigned char buf[64];
    memcpy(buf, px, sizeof buf);
    fc_hash base = fc_key_of(buf, sizeof buf);
    int changed = 0;
    for (int bit = 0; bit < 64 * 8; bit++) {
        buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        changed += !fc_hash_eq(fc_key_of(buf, sizeof buf), base);
        buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    t_check(changed == 512, "fc.key_one_bit_flips", "%d of 512 flips change the key", changed);

    fc_hash p;
    int ok = fc_hash_parse("06B05AB6733A618578af5f94892f3950", &p) == 0 && fc_hash_eq(p, a);
    ok &= fc_hash_parse("06b05ab6733a618578af5f94892f395", &p) < 0;    /* 31 digits */
    ok &= fc_hash_parse("06b05ab6733a618578af5f94892f39500", &p) < 0;  /* 33 digits */
    ok &= fc_hash_parse("06b05ab6733a618578af5f94892f395g", &p) < 0;
    t_check(ok, "fc.hash_parse", "round trip and refusals");

    /* fc_encoder_id is the documented byte stream. */
    float w0[5] = {1, 2, 3, 4, 5}, w1[2] = {-1, 0.5f};
    const float *ws[2] = {w0, w1};
    size_t cs[2] = {5, 2};
    fc_hash id = fc_encoder_id("clip L/14 select -2", ws, cs, 2);
    fc_hasher_init(&h);
    fc_hasher_update(&h, "anyref-fc-encoder-v1", 20);
    fc_hasher_u64(&h, 19);
    fc_hasher_update(&h, "clip L/14 select -2", 19);
    fc_hasher_u64(&h, 2);
    fc_hasher_u64(&h, 5);
    fc_hasher_update(&h, w0, sizeof w0);
    fc_hasher_u64(&h, 2);
    fc_hasher_update(&h, w1, sizeof w1);
    t_check(fc_hash_eq(id, fc_hasher_digest(&h)), "fc.encoder_id_documented_stream", "%s", fc_hash_hex(id, b));
    w1[1] = nextafterf(w1[1], 1.0f);
    fc_hash id2 = fc_encoder_id("clip L/14 select -2", ws, cs, 2);
    fc_hash id3 = fc_encoder_id("clip L/14 select -1", (const float *const[]){w0, (float[]){-1, 0.5f}}, cs, 2);
    w1[1] = 0.5f;
    t_check(!fc_hash_eq(id, id2) && !fc_hash_eq(id, id3) && fc_hash_eq(id, fc_encoder_id("clip L/14 select -2", ws, cs, 2)),
            "fc.encoder_id_sensitive", "one ulp of one weight, one config character");
}

/* The registry identity: one ulp of one tensor under the prefix changes it,
 * tensors outside it do not; a tensor larger than the 4 MiB staging piece. */
static void test_params_identity(void) {
    ar_params ps;
    params_init_empty(&ps);
    int big = (1 << 20) + 5;
    params_add(&ps, "enc.w", 2, (int[]){3, 4}, 0, INIT_NORMAL, 0.02f);
    params_add(&ps, "other.w", 1, (int[]){5}, 1, INIT_NORMAL, 0.02f);
    params_add(&ps, "enc.big", 1, (int[]){big}, 0, INIT_NORMAL, 0.02f);
    int arc = params_alloc(&ps);
    if (!t_check(arc == 0, "fc.params_alloc", "%s", arc ? ar_error() : "3 tensors")) return;
    params_randomize(&ps, 5);
    fc_hash id, id_o, id_w, id_b, id_c, back;
    int rc = fc_encoder_id_params(&ps, "enc.", "cfg", &id);

    /* The documented stream, by hand. */
    fc_hasher h;
    fc_hasher_init(&h);
    fc_hasher_update(&h, "anyref-fc-params-v1", 19);
    fc_hasher_u64(&h, 3);
    fc_hasher_update(&h, "cfg", 3);
    const char *names[2] = {"enc.w", "enc.big"};
    for (int i = 0; i < 2; i++) {
        const ar_param *p = params_find(&ps, names[i]);
        fc_hasher_u64(&h, strlen(p->name));
        fc_hasher_update(&h, p->name, strlen(p->name));
        fc_hasher_u64(&h, (uint64_t)p->ndim);
        for (int d = 0; d < p->ndim; d++) fc_hasher_u64(&h, (uint64_t)p->shape[d]);
        fc_hasher_u64(&h, p->numel);
        fc_hasher_update(&h, params_w(&ps, names[i]), p->numel * sizeof(float));
    }
    t_check(rc == 0 && fc_hash_eq(id, fc_hasher_digest(&h)), "fc.params_id_documented_stream", "rc %d", rc);

    float *ow = params_w(&ps, "other.w"), *ew = params_w(&ps, "enc.w"), *eb = params_w(&ps, "enc.big");
    ow[2] += 1.0f;
    fc_encoder_id_params(&ps, "enc.", "cfg", &id_o);
    float keep = ew[7];
    ew[7] = nextafterf(ew[7], 1.0f);
    fc_encoder_id_params(&ps, "enc.", "cfg", &id_w);
    ew[7] = keep;
    keep = eb[big - 1];
    eb[big - 1] = nextafterf(eb[big - 1], 1.0f);   /* in the second staging piece */
    fc_encoder_id_params(&ps, "enc.", "cfg", &id_b);
    eb[big - 1] = keep;
    fc_encoder_id_params(&ps, "enc.", "cfg2", &id_c);
    fc_encoder_id_params(&ps, "enc.", "cfg", &back);
    char b[FC_HEX_LEN + 1];
    t_check(fc_hash_eq(id, id_o) && !fc_hash_eq(id, id_w) && !fc_hash_eq(id, id_b) && !fc_hash_eq(id, id_c) &&
            !fc_hash_eq(id_w, id_b) && fc_hash_eq(id, back),
            "fc.params_id_sensitive", "%s; one ulp in enc.w / last float of enc.big / config change it, other.w not",
            fc_hash_hex(id, b));
    rc = fc_encoder_id_params(&ps, "sam.", "cfg", &back);
    t_check(rc < 0 && strstr(ar_error(), "'sam.'"), "fc.params_id_no_match", "%s", ar_error());
    params_free(&ps);
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */
/* ------------------------------------------------------------------------ */
#define NE 4
static const int E_NDIM[NE] = {1, 3, 4, 2};
static const int E_SHAPE[NE][4] = {{7}, {2, 3, 5}, {1, 2, 2, 3}, {4, 6}};
static float *g_val[NE];
static fc_hash g_key[NE], g_enc, g_enc2;

static void make_entries(void) {
    g_enc = fc_encoder_id("sam vit_b", NULL, NULL, 0);
    g_enc2 = fc_encoder_id("sam vit_l", NULL, NULL, 0);
    for (int i = 0; i < NE; i++) {
        size_t n = numel_of(E_SHAPE[i], E_NDIM[i]);
        g_val[i] = t_alloc(n);
        t_fill_normal(g_val[i], n, 3.0f, 100 + (uint64_t)i);
        float px[16];   /* the "preprocessed input" this entry belongs to */
        t_fill_uniform(px, 16, -1, 1, 200 + (uint64_t)i);
        g_key[i] = fc_key_of(px, sizeof px);
    }
}

/* Writes the standard cache (encoder g_enc, NE entries) at path. */
static int write_standard(const char *path) {
    unlink(path);
    fc_cache *c = fc_open(path, FC_WRITE);
    if (!c) return -1;
    int rc = fc_add_encoder(c, g_enc, "sam_vit_b", "image_size 1024");
    for (int i = 0; i < NE && !rc; i++) rc = fc_put(c, g_enc, g_key[i], g_val[i], E_SHAPE[i], E_NDIM[i]);
    if (fc_close(c) < 0) rc = -1;
    return rc;
}

/* Every entry of the standard cache: 1 = all hits with exact values. */
static int all_hit(fc_cache *c) {
    float out[64];
    for (int i = 0; i < NE; i++) {
        size_t n = numel_of(E_SHAPE[i], E_NDIM[i]);
        if (fc_get(c, g_enc, g_key[i], E_SHAPE[i], E_NDIM[i], out) != 1) return 0;
        if (memcmp(out, g_val[i], n * sizeof(float)) != 0) return 0;
    }
    return 1;
}

/* Entry 0 of the standard cache hits with its values. */
static int all_hit_one(fc_cache *c) {
    float out[64];
    return fc_get(c, g_enc, g_key[0], E_SHAPE[0], E_NDIM[0], out) == 1 && memcmp(out, g_val[0], 7 * sizeof(float)) == 0;
}

static void test_round_trip(void) {
    char path[300];
    tmp_path(path, sizeof path, "rt.h5");
    fc_cache *c = fc_open(path, FC_WRITE);
    if (!t_check(c != NULL, "fc.create", "%s", c ? path : ar_error())) return;
    char tmpname[340];
    snprintf(tmpname, sizeof tmpname, "%s.tmp.%ld", path, (long)getpid());
    t_check(access(tmpname, F_OK) != 0, "fc.create_leaves_no_tmp", "%s absent", tmpname);

    float out[64];
    int rc = fc_put(c, g_enc, g_key[0], g_val[0], E_SHAPE[0], E_NDIM[0]);
    t_check(rc < 0 && strstr(ar_error(), "never added") && strstr(ar_error(), path), "fc.put_needs_encoder", "%s",
            ar_error());
    rc = fc_add_encoder(c, g_enc, "sam_vit_b", "image_size 1024");
    for (int i = 0; i < NE && !rc; i++) rc = fc_put(c, g_enc, g_key[i], g_val[i], E_SHAPE[i], E_NDIM[i]);
    t_check(rc == 0, "fc.put", "%s", rc ? ar_error() : "4 entries, ranks 1..4");
    t_check(all_hit(c), "fc.get_same_handle", "bitwise");
    /* Same input under another encoder; another input under the same one. */
    int m1 = fc_get(c, g_enc2, g_key[0], E_SHAPE[0], E_NDIM[0], out);
    fc_hash other = g_key[0];
    other.lo ^= 1;
    int m2 = fc_get(c, g_enc, other, E_SHAPE[0], E_NDIM[0], out);
    fc_stats st = fc_get_stats(c);
    t_check(m1 == 0 && m2 == 0 && st.hits == NE && st.misses == 2 && st.stale == 0 && st.corrupt == 0 && st.puts == NE,
            "fc.miss_other_encoder_or_input", "rc %d %d; hits %lld misses %lld puts %lld", m1, m2, (long long)st.hits,
            (long long)st.misses, (long long)st.puts);
    /* Replacing an entry. */
    float nv[7] = {1, 2, 3, 4, 5, 6, 7};
    rc = fc_put(c, g_enc, g_key[0], nv, E_SHAPE[0], E_NDIM[0]);
    rc |= fc_get(c, g_enc, g_key[0], E_SHAPE[0], E_NDIM[0], out) != 1;
    t_check(rc == 0 && memcmp(out, nv, sizeof nv) == 0, "fc.put_replaces", "%s", rc ? ar_error() : "new values read");
    rc = fc_put(c, g_enc, g_key[0], g_val[0], E_SHAPE[0], E_NDIM[0]);
    rc |= fc_close(c);
    t_check(rc == 0, "fc.close", "%s", rc ? ar_error() : "ok");

    /* Reopen read-only: every entry hits; put is refused. */
    c = fc_open(path, FC_READ);
    if (!t_check(c != NULL, "fc.reopen", "%s", c ? "read-only" : ar_error())) return;
    t_check(all_hit(c), "fc.reopen_hits", "bitwise, %d entries", NE);
    rc = fc_put(c, g_enc, g_key[1], g_val[1], E_SHAPE[1], E_NDIM[1]);
    t_check(rc < 0 && strstr(ar_error(), "read-only"), "fc.readonly_put_refused", "%s", ar_error());
    rc = fc_get(c, g_enc, g_key[0], (int[]){0}, 1, out);
    int rc2 = fc_get(c, g_enc, g_key[0], E_SHAPE[0], 9, out);
    t_check(rc < 0 && rc2 < 0, "fc.get_bad_shape_args", "%s", ar_error());
    fc_close(c);

    /* The stored layout is the documented one. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    char ench[40], keyh[40], name[100];
    snprintf(name, sizeof name, "%s/%s", fc_hash_hex(g_enc, ench), fc_hash_hex(g_key[1], keyh));
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t a = H5Aopen(d, "checksum", H5P_DEFAULT);
    uint64_t sum[2] = {0, 0};
    H5Aread(a, H5T_NATIVE_UINT64, sum);
    fc_hasher h;
    fc_hasher_init(&h);
    fc_hasher_update(&h, "anyref-fc-entry-v1", 18);
    fc_hasher_u64(&h, g_enc.hi);
    fc_hasher_u64(&h, g_enc.lo);
    fc_hasher_u64(&h, g_key[1].hi);
    fc_hasher_u64(&h, g_key[1].lo);
    fc_hasher_u64(&h, 3);
    for (int i = 0; i < 3; i++) fc_hasher_u64(&h, (uint64_t)E_SHAPE[1][i]);
    fc_hasher_update(&h, g_val[1], 30 * sizeof(float));
    fc_hash want = fc_hasher_digest(&h);
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    hsize_t dims[4];
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    long long ver = 0;
    hid_t va = H5Aopen(f, "anyref_feature_cache", H5P_DEFAULT);
    H5Aread(va, H5T_NATIVE_LLONG, &ver);
    hid_t g = H5Gopen2(f, ench, H5P_DEFAULT);
    hid_t na = H5Aopen(g, "name", H5P_DEFAULT);
    hid_t nt = H5Aget_type(na);
    char sname[64] = "";
    if (nt >= 0 && H5Tget_size(nt) < sizeof sname) H5Aread(na, nt, sname);
    t_check(sum[0] == want.hi && sum[1] == want.lo && nd == 3 && dims[0] == 2 && dims[1] == 3 && dims[2] == 5 &&
            H5Tequal(t, H5T_IEEE_F32LE) > 0 && ver == 1 && strcmp(sname, "sam_vit_b") == 0,
            "fc.layout_documented", "/%s: float32 [2,3,5], checksum stream, version %lld, name '%s'", name, ver, sname);
    H5Tclose(nt); H5Aclose(na); H5Gclose(g); H5Aclose(va);
    H5Tclose(t); H5Sclose(sp); H5Aclose(a); H5Dclose(d); H5Fclose(f);
}

/* ------------------------------------------------------------------------ */
/* Stale and corrupt entries                                                */
/* ------------------------------------------------------------------------ */
/* Opens the entry (enc, key) of a closed cache file with plain HDF5. */
static hid_t raw_open(const char *path, fc_hash enc, fc_hash key, hid_t *file) {
    char ench[40], keyh[40], name[100];
    snprintf(name, sizeof name, "%s/%s", fc_hash_hex(enc, ench), fc_hash_hex(key, keyh));
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    *file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    return *file < 0 ? -1 : H5Dopen2(*file, name, H5P_DEFAULT);
}

static void test_bad_entries(void) {
    char path[300];
    tmp_path(path, sizeof path, "bad.h5");
    if (!t_check(write_standard(path) == 0, "fc.bad_setup", "%s", "standard cache written")) return;
    char ench[40], keyh[40];
    fc_hash_hex(g_enc, ench);

    /* 1. Overwrite two values of entry 1 in place (the checksum stays). */
    hid_t f, d = raw_open(path, g_enc, g_key[1], &f);
    hid_t sp = H5Dget_space(d);
    hsize_t coord[2][3] = {{0, 1, 2}, {1, 2, 4}};
    H5Sselect_elements(sp, H5S_SELECT_SET, 2, &coord[0][0]);
    hsize_t two = 2;
    hid_t msp = H5Screate_simple(1, &two, NULL);
    float junk[2] = {42.0f, -0.0f};
    herr_t w = H5Dwrite(d, H5T_NATIVE_FLOAT, msp, sp, H5P_DEFAULT, junk);
    H5Sclose(msp); H5Sclose(sp); H5Dclose(d); H5Fclose(f);
    /* 2. Delete the checksum of entry 2 (a put interrupted before its end). */
    d = raw_open(path, g_enc, g_key[2], &f);
    herr_t w2 = H5Adelete(d, "checksum");
    H5Dclose(d);
    /* 3. Entry 0 hard-linked under another key (a misfiled entry). */
    fc_hash misfiled = fc_key_of("misfiled", 8);
    char src[100], dst[100];
    snprintf(src, sizeof src, "%s/%s", ench, fc_hash_hex(g_key[0], keyh));
    snprintf(dst, sizeof dst, "%s/%s", ench, fc_hash_hex(misfiled, keyh));
    herr_t w3 = H5Lcreate_hard(f, src, f, dst, H5P_DEFAULT, H5P_DEFAULT);
    /* 4. A soft link as an entry. */
    fc_hash soft = fc_key_of("soft", 4);
    snprintf(dst, sizeof dst, "%s/%s", ench, fc_hash_hex(soft, keyh));
    herr_t w4 = H5Lcreate_soft(src, f, dst, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    if (!t_check(w >= 0 && w2 >= 0 && w3 >= 0 && w4 >= 0, "fc.bad_prepared", "HDF5 edits")) return;

    fc_cache *c = fc_open(path, FC_WRITE);
    if (!t_check(c != NULL, "fc.bad_open", "%s", c ? "ok" : ar_error())) return;
    float out[64];
    capture_begin();
    int r1 = fc_get(c, g_enc, g_key[1], E_SHAPE[1], E_NDIM[1], out);
    int r2 = fc_get(c, g_enc, g_key[2], E_SHAPE[2], E_NDIM[2], out);
    int r3 = fc_get(c, g_enc, misfiled, E_SHAPE[0], E_NDIM[0], out);
    int r4 = fc_get(c, g_enc, soft, E_SHAPE[0], E_NDIM[0], out);
    /* Stale: same count, other shape; and another count. Left in place. */
    int r5 = fc_get(c, g_enc, g_key[3], (int[]){6, 4}, 2, out);
    int r6 = fc_get(c, g_enc, g_key[3], (int[]){25}, 1, out);
    char *err = capture_end();
    fc_stats st = fc_get_stats(c);
    t_check(r1 == 0 && r2 == 0 && r3 == 0 && r4 == 0 && r5 == 0 && r6 == 0, "fc.bad_entries_miss",
            "rc %d %d %d %d %d %d", r1, r2, r3, r4, r5, r6);
    t_check(st.corrupt == 4 && st.stale == 2 && st.misses == 6 && st.hits == 0 && st.removed == 4, "fc.bad_counted",
            "corrupt %lld stale %lld misses %lld removed %lld", (long long)st.corrupt, (long long)st.stale,
            (long long)st.misses, (long long)st.removed);
    char want[600];
    snprintf(want, sizeof want, "warning: feature cache %s: entry %s/%s corrupt: checksum mismatch (stored ", path,
             ench, fc_hash_hex(g_key[1], keyh));
    int ok = err && strstr(err, want) != NULL;
    snprintf(want, sizeof want, "entry %s/%s corrupt: no checksum attribute (an interrupted write?); removed", ench,
             fc_hash_hex(g_key[2], keyh));
    ok &= err && strstr(err, want) != NULL;
    snprintf(want, sizeof want, "entry %s/%s corrupt: checksum mismatch", ench, fc_hash_hex(misfiled, keyh));
    ok &= err && strstr(err, want) != NULL;
    snprintf(want, sizeof want, "entry %s/%s corrupt: not a hard link; removed", ench, fc_hash_hex(soft, keyh));
    ok &= err && strstr(err, want) != NULL;
    snprintf(want, sizeof want, "entry %s/%s stale: has shape [4,6]; expected [6,4]\n", ench, fc_hash_hex(g_key[3], keyh));
    ok &= err && strstr(err, want) != NULL;
    t_check(ok, "fc.bad_warnings", "%s", ok ? "file, entry, kind and reason named" : err ? err : "(no stderr)");
    free(err);

    /* Corrupt entries are gone (a second get is a plain miss); the stale one
     * still answers its own shape; the misfiled source entry 0 is intact. */
    int a1 = fc_get(c, g_enc, g_key[1], E_SHAPE[1], E_NDIM[1], out);
    int a3 = fc_get(c, g_enc, g_key[3], E_SHAPE[3], E_NDIM[3], out);
    int a0 = fc_get(c, g_enc, g_key[0], E_SHAPE[0], E_NDIM[0], out);
    st = fc_get_stats(c);
    t_check(a1 == 0 && a3 == 1 && a0 == 1 && st.corrupt == 4 && st.stale == 2, "fc.bad_removed_stale_kept",
            "rc %d %d %d corrupt %lld", a1, a3, a0, (long long)st.corrupt);
    /* A put repairs. */
    int rc = fc_put(c, g_enc, g_key[1], g_val[1], E_SHAPE[1], E_NDIM[1]);
    rc |= fc_put(c, g_enc, g_key[2], g_val[2], E_SHAPE[2], E_NDIM[2]);
    t_check(rc == 0 && all_hit(c), "fc.put_repairs", "%s", rc ? ar_error() : "every entry hits again");
    fc_close(c);

    /* Read-only handles count corrupt entries but leave them. */
    d = raw_open(path, g_enc, g_key[1], &f);
    w = H5Adelete(d, "checksum");
    H5Dclose(d); H5Fclose(f);
    c = fc_open(path, FC_READ);
    capture_begin();
    r1 = c ? fc_get(c, g_enc, g_key[1], E_SHAPE[1], E_NDIM[1], out) : -2;
    r2 = c ? fc_get(c, g_enc, g_key[1], E_SHAPE[1], E_NDIM[1], out) : -2;
    err = capture_end();
    st = fc_get_stats(c);
    t_check(w >= 0 && r1 == 0 && r2 == 0 && st.corrupt == 2 && st.removed == 0 && err && !strstr(err, "removed"),
            "fc.readonly_corrupt_left", "rc %d %d corrupt %lld", r1, r2, (long long)st.corrupt);
    free(err);
    fc_close(c);

    /* Warnings beyond FC_WARN_LIMIT are counted, then summarised at close. */
    c = fc_open(path, FC_READ);
    capture_begin();
    for (int i = 0; i < FC_WARN_LIMIT + 5; i++) fc_get(c, g_enc, g_key[3], (int[]){24}, 1, out);
    fc_close(c);
    err = capture_end();
    int lines = 0;
    for (const char *p = err; p && (p = strstr(p, " stale: ")); p++) lines++;
    t_check(lines == FC_WARN_LIMIT && err && strstr(err, "5 more stale or corrupt entries were not shown"),
            "fc.warning_limit", "%d lines", lines);
    free(err);
}

/* ------------------------------------------------------------------------ */
/* Files that are not caches                                                */
/* ------------------------------------------------------------------------ */
static void test_bad_files(void) {
    char path[300], aside[320];
    tmp_path(path, sizeof path, "garbage.h5");
    snprintf(aside, sizeof aside, "%s.corrupt", path);
    const char garbage[] = "this is not an HDF5 file, just some bytes\n";
    spit(path, garbage, sizeof garbage - 1);
    fc_cache *c = fc_open(path, FC_WRITE);
    t_check(!c && strstr(ar_error(), path) && strstr(ar_error(), "not an HDF5 file"), "fc.garbage_refused", "%s",
            ar_error());
    fc_close(c);
    c = fc_open(path, FC_READ);
    t_check(!c && strstr(ar_error(), path) && strstr(ar_error(), "not an HDF5 file"), "fc.garbage_refused_read", "%s",
            ar_error());
    fc_close(c);
    capture_begin();
    c = fc_open(path, FC_WRITE | FC_RECREATE);
    char *err = capture_end();
    long n = 0;
    char *moved = slurp(aside, &n);
    int ok = c && moved && n == (long)sizeof garbage - 1 && memcmp(moved, garbage, (size_t)n) == 0;
    ok &= err && strstr(err, "moved to") && strstr(err, aside);
    float out[8];
    ok &= c && fc_add_encoder(c, g_enc, "x", "") == 0 && fc_put(c, g_enc, g_key[0], g_val[0], E_SHAPE[0], 1) == 0 &&
          fc_get(c, g_enc, g_key[0], E_SHAPE[0], 1, out) == 1;
    t_check(ok, "fc.garbage_recreated", "%s", ok ? "moved aside, warned, new cache works" : c ? (err ? err : "") : ar_error());
    free(moved);
    free(err);
    fc_close(c);

    /* While one process writes the cache, another process's open is refused
     * (HDF5's file lock) and the file is not moved aside. */
    int pfd[2];
    if (pipe(pfd) != 0) return;
    fflush(stdout);
    pid_t pid = fork();   /* before the parent opens: the child must not inherit the open file */
    if (pid == 0) {
        char go;
        close(pfd[1]);
        if (read(pfd[0], &go, 1) != 1) _exit(1);
        fc_cache *c2 = fc_open(path, FC_WRITE | FC_RECREATE);
        fc_cache *c3 = fc_open(path, FC_READ);
        FILE *f = fopen(g_cap_path, "w");
        if (f) fprintf(f, "%d %d\n%s", c2 != NULL, c3 != NULL, ar_error());
        if (f) fclose(f);
        _exit(0);
    }
    close(pfd[0]);
    c = fc_open(path, FC_WRITE);
    if (write(pfd[1], "x", 1) != 1) printf("     (pipe write failed)\n");
    close(pfd[1]);
    int status = -1;
    waitpid(pid, &status, 0);
    err = slurp(g_cap_path, NULL);
    for (char *q = err; q && *q; q++)
        if (*q == '\n') *q = ' ';
    snprintf(aside, sizeof aside, "%s.corrupt", path);
    long an = -1;
    free(slurp(aside, &an));   /* still the garbage moved aside above, not our cache */
    t_check(c && err && strncmp(err, "0 0 ", 4) == 0 && strstr(err, path) && strstr(err, "another process") &&
            an == (long)sizeof garbage - 1 && all_hit_one(c),
            "fc.other_process_refused", "child's opens (writable+recreate, read-only) %s", err ? err : "(nothing)");
    free(err);
    fc_close(c);

    /* An HDF5 file that is not a cache is never touched, even with FC_RECREATE. */
    tmp_path(path, sizeof path, "other.h5");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    c = fc_open(path, FC_WRITE | FC_RECREATE);
    snprintf(aside, sizeof aside, "%s.corrupt", path);
    t_check(!c && strstr(ar_error(), path) && strstr(ar_error(), "not a feature cache") && access(aside, F_OK) != 0,
            "fc.foreign_hdf5_refused", "%s", ar_error());
    fc_close(c);

    /* A newer format version. */
    tmp_path(path, sizeof path, "newer.h5");
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "anyref_feature_cache", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int v = 2;
    H5Awrite(a, H5T_NATIVE_INT, &v);
    H5Aclose(a); H5Sclose(sp); H5Fclose(f);
    c = fc_open(path, FC_WRITE | FC_RECREATE);
    t_check(!c && strstr(ar_error(), "format version 2; this build reads version 1"), "fc.newer_version_refused", "%s",
            ar_error());
    fc_close(c);

    tmp_path(path, sizeof path, "missing.h5");
    c = fc_open(path, FC_READ);
    t_check(!c && strstr(ar_error(), path) && access(path, F_OK) != 0, "fc.missing_read_only", "%s", ar_error());
    fc_close(c);
    c = fc_open(g_tmpdir, FC_WRITE);
    t_check(!c && strstr(ar_error(), "is a directory"), "fc.directory_refused", "%s", ar_error());
    fc_close(c);
}

/* ------------------------------------------------------------------------ */
/* Truncations and byte flips                                               */
/* ------------------------------------------------------------------------ */
/* Opens a damaged copy; each entry must be a hit with the exact values or a
 * miss. Returns 1 if it behaved; counts outcomes. */
typedef struct { int refused, opened, hits, misses, errors, repaired, unrepairable, close_failed; } outcome;

/* Opens a damaged copy. Each entry must be a hit with the exact values, a
 * miss, or an error naming the file; a writable handle then puts every entry
 * again, which either makes all of them hit or fails saying the file is
 * damaged. The handle must close cleanly. Returns 1 if all that held. */
static int probe(const char *path, int flags, outcome *o) {
    capture_begin();
    fc_cache *c = fc_open(path, flags);
    int ok = 1;
    if (!c) {
        o->refused++;
        ok = strstr(ar_error(), path) != NULL;
    } else {
        o->opened++;
        float out[64];
        for (int i = 0; i < NE; i++) {
            size_t n = numel_of(E_SHAPE[i], E_NDIM[i]);
            int r = fc_get(c, g_enc, g_key[i], E_SHAPE[i], E_NDIM[i], out);
            if (r == 1) {
                o->hits++;
                ok &= memcmp(out, g_val[i], n * sizeof(float)) == 0;
            } else if (r == 0) {
                o->misses++;
            } else {
                o->errors++;
                ok &= strstr(ar_error(), path) != NULL;
            }
        }
        if (flags & FC_WRITE) {
            int rc = fc_add_encoder(c, g_enc, "sam_vit_b", "");
            for (int i = 0; i < NE && !rc; i++) rc = fc_put(c, g_enc, g_key[i], g_val[i], E_SHAPE[i], E_NDIM[i]);
            if (rc == 0) {
                o->repaired++;
                ok &= all_hit(c);
            } else {
                o->unrepairable++;
                ok &= strstr(ar_error(), path) && strstr(ar_error(), "damaged");
            }
        }
        if (fc_close(c) < 0) {
            o->close_failed++;
            ok = 0;
        }
    }
    free(capture_end());
    return ok;
}

static void test_damaged_files(void) {
    char path[300], dam[300];
    tmp_path(path, sizeof path, "whole.h5");
    tmp_path(dam, sizeof dam, "damaged.h5");
    if (!t_check(write_standard(path) == 0, "fc.damage_setup", "%s", "standard cache written")) return;
    long n = 0;
    unsigned char *bytes = (unsigned char *)slurp(path, &n);
    if (!bytes) return;

    /* Every truncation length on a coarse grid plus the first and last bytes. */
    outcome ro = {0}, rw = {0};
    int bad = 0, cases = 0;
    char aside[320];
    snprintf(aside, sizeof aside, "%s.corrupt", dam);
    for (long len = 0; len < n; len += (len < 64 || len > n - 64) ? 1 : 97) {
        spit(dam, bytes, (size_t)len);
        bad += !probe(dam, FC_READ, &ro);
        spit(dam, bytes, (size_t)len);
        bad += !probe(dam, FC_WRITE | FC_RECREATE, &rw);
        cases++;
    }
    t_check(bad == 0 && rw.refused == 0 && ro.hits == 0, "fc.truncations",
            "%d lengths of %ld bytes: read-only %d refused / %d opened (%d hits, %d misses); recreate %d opened, %d failed",
            cases, n, ro.refused, ro.opened, ro.hits, ro.misses, rw.opened, bad);

    /* One byte flipped at offsets across the file: any hit has exact values. */
    outcome fo = {0};
    bad = 0;
    cases = 0;
    for (long off = 0; off < n; off += 13) {
        bytes[off] ^= 0x5a;
        spit(dam, bytes, (size_t)n);
        bytes[off] ^= 0x5a;
        bad += !probe(dam, FC_WRITE | FC_RECREATE, &fo);
        cases++;
    }
    t_check(bad == 0 && fo.hits > 0 && fo.misses > 0, "fc.byte_flips",
            "%d offsets: %d refused, %d opened (%d hits exact, %d misses, %d errors; %d repaired by puts, %d refused as "
            "damaged), %d misbehaved", cases, fo.refused, fo.opened, fo.hits, fo.misses, fo.errors, fo.repaired,
            fo.unrepairable, bad);
    free(bytes);
}

int main(void) {
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/anyref_test_fc_XXXXXX");
    if (!mkdtemp(g_tmpdir)) {
        t_fail("fc.tmpdir", "mkdtemp failed");
        return 1;
    }
    make_entries();
    test_hashing();
    test_params_identity();
    test_round_trip();
    test_bad_entries();
    test_bad_files();
    test_damaged_files();
    for (int i = 0; i < NE; i++) free(g_val[i]);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (system(cmd) != 0) printf("     (could not remove %s)\n", g_tmpdir);
    return t_exit_code();
}
