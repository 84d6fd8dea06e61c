/* tests/test_torch_ckpt.c — PyTorch checkpoints read in C
 * (checkpoints/torch_ckpt.h through checkpoints/safetensors.h's st_file) and
 * `anyref inspect` (checkpoints/inspect_cmd.h).
 *
 * Fixtures: tests/fixtures/torch_ckpt/, written by tests/ref/torch_ckpt_ref.py
 * with Debian's torch.save: files shaped as sam_vit_h_4b8939.pth,
 * imagebind_huge.pth, LLaVA's sharded pytorch_model-0000N-of-00002.bin + index,
 * CLIP's pytorch_model.bin, a wrapped {"model": ...} checkpoint, views.pth
 * (shared storages, transposes, strided slices with offsets, a scalar, an
 * empty tensor, a Parameter, every integer dtype) and its deflated copy,
 * expected.json (every tensor's dtype, shape, values and sum), and the bad_*
 * files. Checks:
 *   - every tensor of every file: dtype, shape and each value exactly (st_read_f32
 *     for F32/F16/BF16, the raw bytes for the others), no tensor more or less;
 *   - st_load_params of the LLaVA index, of its directory, and of a .pth into a
 *     small registry: the weights equal the reference values;
 *   - `anyref inspect` on each (and on an HDF5 checkpoint and a safetensors
 *     file): sorted names, dtypes, shapes, sums within 1e-9 relative;
 *   - refusals and their messages: os.system and an unknown global in the
 *     pickle, a legacy file, a truncated zip, a bad local-header offset, a
 *     central directory past the end, a corrupt data.pkl (CRC), a storage
 *     shorter than its numel, a view past its storage; and the zip64 records
 *     torch writes are read when the classic ones are saturated.
 * Depends on checkpoints/, core/json.h, model/params.h, tests/testlib.h.
 */
#include "checkpoints/checkpoint.h"
#include "checkpoints/inspect_cmd.h"
#include "checkpoints/safetensors.h"
#include "checkpoints/torch_ckpt.h"
#include "core/error.h"
#include "core/json.h"
#include "kernels/kernels.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DIR "tests/fixtures/torch_ckpt/"

static json_doc *g_exp;

static void *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(sz > 0 ? (size_t)sz : 1);
    *n = p ? fread(p, 1, (size_t)sz, f) : 0;
    fclose(f);
    return p;
}

/* Value k of tensor i as a double (raw bytes for the non-float dtypes). */
static double raw_value(const st_file *f, int i, size_t k) {
    size_t nb;
    const uint8_t *p = st_data(f, i, &nb);
    switch (st_get_dtype(f, i)) {
    case ST_F64: { double x; memcpy(&x, p + 8 * k, 8); return x; }
    case ST_I64: { int64_t x; memcpy(&x, p + 8 * k, 8); return (double)x; }
    case ST_I32: { int32_t x; memcpy(&x, p + 4 * k, 4); return x; }
    case ST_I16: { int16_t x; memcpy(&x, p + 2 * k, 2); return x; }
    case ST_I8: return (int8_t)p[k];
    case ST_U8: return p[k];
    case ST_BOOL: return p[k] != 0;
    default: return NAN;
    }
}

/* Every tensor of one opened file against expected.json[key]. */
static void check_file(const char *key, st_file *f) {
    const json_value *e = json_get(json_root(g_exp), key);
    if (!e || !f) { t_check(0, key, "%s", f ? "no expected entry" : ar_error()); return; }
    int bad_meta = 0, bad_val = 0, missing = 0;
    size_t nvals = 0;
    for (size_t m = 0; m < e->n; m++) {
        const char *nm = e->members[m].key;
        const json_value *d = &e->members[m].value;
        int i = st_find(f, nm);
        if (i < 0) { missing++; fprintf(stderr, "  %s: missing '%s'\n", key, nm); continue; }
        const json_value *sh = json_get(d, "shape"), *vals = json_get(d, "values");
        int nd = 0;
        const int64_t *s = st_shape(f, i, &nd);
        int ok = strcmp(st_dtype_name(st_get_dtype(f, i)), json_get(d, "dtype")->str) == 0 && (size_t)nd == sh->n;
        for (int k = 0; ok && k < nd; k++) ok = s[k] == sh->items[k].integer;
        if (!ok) { bad_meta++; fprintf(stderr, "  %s: '%s' dtype/shape differ\n", key, nm); continue; }
        if (!vals) continue;
        size_t n = st_numel(f, i);
        if (n != vals->n) { bad_val++; continue; }
        st_dtype t = st_get_dtype(f, i);
        float *buf = malloc((n ? n : 1) * sizeof *buf);
        if ((t == ST_F32 || t == ST_F16 || t == ST_BF16) && st_read_f32(f, i, buf, n) != 0) { bad_val++; free(buf); continue; }
        for (size_t k = 0; k < n; k++) {
            double got = (t == ST_F32 || t == ST_F16 || t == ST_BF16) ? (double)buf[k] : raw_value(f, i, k);
            if (got != vals->items[k].number) {
                if (!bad_val) fprintf(stderr, "  %s: '%s'[%zu] = %.17g, expected %.17g\n", key, nm, k, got, vals->items[k].number);
                bad_val++;
                break;
            }
        }
        nvals += n;
        free(buf);
    }
    t_check(missing == 0 && bad_meta == 0 && bad_val == 0 && (size_t)st_count(f) == e->n, key,
            "%d tensors (expected %zu): dtype, shape and %zu values exact; %d missing, %d dtype/shape, %d value mismatches",
            st_count(f), e->n, nvals, missing, bad_meta, bad_val);
}

static void test_files(void) {
    static const char *files[] = {"sam_vit_h.pth", "imagebind_huge.pth", "clip/pytorch_model.bin",
                                  "llava/pytorch_model-00001-of-00002.bin", "llava/pytorch_model-00002-of-00002.bin",
                                  "wrapped.pth", "views.pth", "views_deflated.pth"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char p[512];
        snprintf(p, sizeof p, DIR "%s", files[i]);
        st_file *f = st_open(p);
        check_file(files[i], f);
        st_close(f);
    }
    /* views: the shared storage and views point where they should */
    st_file *f = st_open(DIR "views.pth");
    if (!f) return;
    size_t nf, nr;
    const uint8_t *full = st_data(f, st_find(f, "shared.full"), &nf), *rows = st_data(f, st_find(f, "shared.rows"), &nr);
    t_check(full && rows == full + 6 * 4 && nr == 12 * 4, "views_shared_storage",
            "shared.rows points 6 floats into shared.full's storage (no copy)");
    st_close(f);
}

/* ---------------------------------------------------------------------- */
static void test_load(void) {
    ar_params ps;
    params_init_empty(&ps);
    static const struct { const char *name; int nd, s0, s1; } R[] = {
        {"model.embed_tokens.weight", 2, 12, 8}, {"model.layers.0.self_attn.q_proj.weight", 2, 8, 8},
        {"model.layers.1.self_attn.v_proj.weight", 2, 8, 8}, {"model.norm.weight", 1, 8, 0},
        {"lm_head.weight", 2, 12, 8}, {"model.mm_projector.weight", 2, 8, 6}};
    for (size_t i = 0; i < 6; i++) {
        int sh[2] = {R[i].s0, R[i].s1};
        params_add(&ps, R[i].name, R[i].nd, sh, 1, INIT_ZEROS, 0);
    }
    if (!t_check(params_alloc(&ps) == 0, "load_alloc", "registry")) return;
    const char *paths[] = {DIR "llava/pytorch_model.bin.index.json", DIR "llava"};
    for (int pi = 0; pi < 2; pi++) {
        k_zero(ps.w, ps.nw * sizeof(float));
        st_report rep;
        int rc = st_load_params(paths[pi], &ps, 0, &rep);
        int bad = 0;
        float *host = malloc(ps.nw * sizeof *host);
        k_download(host, ps.w, ps.nw * sizeof *host);
        for (size_t i = 0; i < 6 && rc == 0; i++) {
            const char *shard = strstr(R[i].name, "layers.0") || strstr(R[i].name, "embed") ?
                "llava/pytorch_model-00001-of-00002.bin" : "llava/pytorch_model-00002-of-00002.bin";
            const json_value *v = json_get(json_get(json_get(json_root(g_exp), shard), R[i].name), "values");
            const ar_param *p = params_find(&ps, R[i].name);
            for (size_t k = 0; v && k < v->n; k++) bad += host[p->off + k] != (float)v->items[k].number;
            if (!v) bad++;
        }
        free(host);
        t_check(rc == 0 && bad == 0 && rep.n_loaded == 6 && rep.n_unexpected > 0, pi ? "load_llava_dir" : "load_llava_index",
                "%s: %d loaded (F16 + BF16 shards), %d unexpected, %d value mismatches", rc ? ar_error() : "ok", rep.n_loaded,
                rep.n_unexpected, bad);
    }
    params_free(&ps);

    /* a .pth (F32, 4-d conv weight, buffer) by the official names */
    params_init_empty(&ps);
    int s4[4] = {8, 3, 2, 2}, s2[2] = {2, 2};
    params_add(&ps, "image_encoder.patch_embed.proj.weight", 4, s4, 0, INIT_ZEROS, 0);
    params_add(&ps, "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", 2, s2, 0, INIT_ZEROS, 0);
    params_alloc(&ps);
    st_report rep;
    int rc = st_load_params(DIR "sam_vit_h.pth", &ps, ST_ERROR_UNEXPECTED, &rep);
    t_check(rc != 0 && strstr(ar_error(), "38 tensors the model lacks"), "load_pth_strict", "%s", ar_error());
    rc = st_load_params(DIR "sam_vit_h.pth", &ps, 0, &rep);
    const json_value *v = json_get(json_get(json_get(json_root(g_exp), "sam_vit_h.pth"), "image_encoder.patch_embed.proj.weight"), "values");
    float *host = malloc(ps.nw * sizeof *host);
    k_download(host, ps.w, ps.nw * sizeof *host);
    int bad = 0;
    for (size_t k = 0; k < v->n; k++) bad += host[k] != (float)v->items[k].number;
    free(host);
    t_check(rc == 0 && rep.n_loaded == 2 && bad == 0, "load_sam_pth", "%s: %d loaded, %d mismatches",
            rc ? ar_error() : "ok", rep.n_loaded, bad);
    params_free(&ps);
}

/* ---------------------------------------------------------------------- */
/* `anyref inspect` output against expected.json: sorted, sums to 1e-9.   */
static int inspect_to(const char *path, char **text) {
    size_t n = 0;
    FILE *m = open_memstream(text, &n);
    int rc = ckpt_inspect(path, m);
    fclose(m);
    return rc;
}

static void test_inspect(void) {
    static const char *keys[] = {"sam_vit_h.pth", "imagebind_huge.pth", "clip/pytorch_model.bin",
                                 "llava/pytorch_model.bin.index.json", "wrapped.pth", "views.pth", "views_deflated.pth"};
    for (size_t ki = 0; ki < sizeof keys / sizeof *keys; ki++) {
        char p[512], *text = NULL, name[64];
        snprintf(p, sizeof p, DIR "%s", keys[ki]);
        snprintf(name, sizeof name, "inspect %s", keys[ki]);
        int rc = inspect_to(p, &text);
        const json_value *e = json_get(json_root(g_exp), keys[ki]);
        size_t lines = 0;
        int bad = 0, sorted = 1;
        double worst = 0;
        char prev[512] = "";
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
            char nm[512], dt[16], shape[256];
            double sum;
            char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL, *t3 = t2 ? strchr(t2 + 1, '\t') : NULL;
            if (!t3) { bad++; continue; }
            snprintf(nm, sizeof nm, "%.*s", (int)(t1 - line), line);
            snprintf(dt, sizeof dt, "%.*s", (int)(t2 - t1 - 1), t1 + 1);
            snprintf(shape, sizeof shape, "%.*s", (int)(t3 - t2 - 1), t2 + 1);
            sum = strtod(t3 + 1, NULL);
            if (strcmp(prev, nm) >= 0) sorted = 0;
            snprintf(prev, sizeof prev, "%s", nm);
            const json_value *d = json_get(e, nm);
            if (!d) { bad++; continue; }
            char want[256];
            size_t at = (size_t)snprintf(want, sizeof want, "[");
            const json_value *sh = json_get(d, "shape");
            for (size_t k = 0; k < sh->n; k++) at += (size_t)snprintf(want + at, sizeof want - at, "%s%lld", k ? ", " : "", (long long)sh->items[k].integer);
            snprintf(want + at, sizeof want - at, "]");
            if (strcmp(dt, json_get(d, "dtype")->str) || strcmp(shape, want)) { bad++; continue; }
            double ref = json_get(d, "sum")->number, scale = fabs(ref) > 1e-3 ? fabs(ref) : 1e-3;
            double err = fabs(sum - ref) / scale;
            if (err > worst) worst = err;
            if (err > 1e-9) bad++;
        }
        t_check(rc == 0 && e && lines == e->n && bad == 0 && sorted, name,
                "%s: %zu lines (expected %zu), sorted, %d mismatches, max rel sum error %.2e",
                rc ? ar_error() : "ok", lines, e ? e->n : 0, bad, worst);
        free(text);
    }

    /* the directory form gives the same listing as the index */
    char *a = NULL, *b = NULL;
    inspect_to(DIR "llava", &a);
    inspect_to(DIR "llava/pytorch_model.bin.index.json", &b);
    t_check(a && b && strcmp(a, b) == 0 && strlen(a) > 0, "inspect_dir", "directory == index listing");
    free(a); free(b);

    /* safetensors: one line per tensor, sorted */
    char *s = NULL;
    int rc = inspect_to("tests/fixtures/safetensors/basic.safetensors", &s);
    st_file *f = st_open("tests/fixtures/safetensors/basic.safetensors");
    int nl = 0;
    for (char *q = s; q && *q; q++) nl += *q == '\n';
    t_check(rc == 0 && f && nl == st_count(f) && strstr(s, "\tF16\t[4, 8]\t") && strstr(s, "scalar\tF32\t[]\t"),
            "inspect_safetensors", "%d lines for %d tensors", nl, f ? st_count(f) : -1);
    st_close(f);
    free(s);

    /* our HDF5 checkpoint */
    ar_params ps;
    params_init_empty(&ps);
    int sh[2] = {3, 2};
    params_add(&ps, "model.a.weight", 2, sh, 1, INIT_ZEROS, 0);
    params_add(&ps, "model.b.bias", 1, sh, 1, INIT_ZEROS, 0);
    params_alloc(&ps);
    float w[6] = {1, 2, 3, 4, 5, 6.5f}, bb[3] = {-1, 0.25f, 0};
    k_upload(ps.w + params_find(&ps, "model.a.weight")->off, w, sizeof w);
    k_upload(ps.w + params_find(&ps, "model.b.bias")->off, bb, sizeof bb);
    char tmp[] = "/tmp/anyref_inspect_XXXXXX";
    int fd = mkstemp(tmp);
    if (fd >= 0) close(fd);
    ar_train_state st = {0};
    st.step = 5;
    s = NULL;
    rc = ckpt_save(tmp, &ps, &st, 1) || inspect_to(tmp, &s);
    t_check(rc == 0 && s && strstr(s, "weights/model.a.weight\tF32\t[3, 2]\t21.5\n") &&
            strstr(s, "weights/model.b.bias\tF32\t[3]\t-0.75\n") && strstr(s, "adam_m/model.a.weight\tF32\t[3, 2]\t0\n") &&
            strstr(s, "adam_m/model.a.weight") < strstr(s, "weights/model.a.weight"),
            "inspect_hdf5", "%s", rc ? ar_error() : "weights/ and adam_*/ datasets with their sums, sorted");
    free(s);
    unlink(tmp);
    params_free(&ps);
    ckpt_state_free(&st);

    rc = inspect_to("tests/fixtures/torch_ckpt/nonexistent.pth", &s);
    t_check(rc != 0 && strstr(ar_error(), "nonexistent.pth: cannot open"), "inspect_missing", "%s", ar_error());
    free(s);
}

/* ---------------------------------------------------------------------- */
static void expect_refused(const char *name, const void *bytes, size_t n, const char *want) {
    st_file *f = st_open_memory(bytes, n, name);
    t_check(!f && strstr(ar_error(), want), name, "%s", f ? "accepted" : ar_error());
    st_close(f);
}

static void test_refusals(void) {
    static const struct { const char *file, *want; } B[] = {
        {"bad_system.pth", "global 'posix.system' is not allowed"},
        {"bad_global.pth", "global 'collections.Counter' is not allowed"},
        {"bad_short_storage.pth", "storage 'archive/data/0' holds 12 bytes, less than 4 elements of F32"},
        {"bad_view.pth", "the view (offset 2, last element 5) runs past its storage '0' of 4 elements"},
        {"legacy.pth", "legacy torch.save format"}};
    for (size_t i = 0; i < sizeof B / sizeof *B; i++) {
        char p[512];
        snprintf(p, sizeof p, DIR "%s", B[i].file);
        st_file *f = st_open(p);
        t_check(!f && strstr(ar_error(), B[i].want) && strncmp(ar_error(), p, strlen(p)) == 0, B[i].file, "%s",
                f ? "accepted" : ar_error());
        st_close(f);
    }

    size_t n;
    uint8_t *b = read_file(DIR "sam_vit_h.pth", &n);
    if (!b) { t_check(0, "refuse_read", "fixture"); return; }
    uint8_t *c = malloc(n);
    for (size_t cut = 100; cut < n; cut += n / 5) expect_refused("truncated", b, cut, "end-of-central-directory");
    expect_refused("short", b, 10, "too short for a zip");

    /* the classic end record: the last "PK\5\6" */
    size_t eocd = n - 22;
    while (eocd > 0 && memcmp(b + eocd, "PK\5\6", 4)) eocd--;
    uint32_t cd_off;
    memcpy(&cd_off, b + eocd + 16, 4);

    memcpy(c, b, n);
    uint32_t big = (uint32_t)n + 1000;
    memcpy(c + eocd + 16, &big, 4);
    expect_refused("cd_past_end", c, n, "central directory");

    memcpy(c, b, n);
    memcpy(c + cd_off + 46 + 0, c + cd_off + 46, 0);
    uint32_t entry1;   /* the second central entry's local header offset -> past the end */
    uint16_t nl, xl, cl;
    memcpy(&nl, c + cd_off + 28, 2); memcpy(&xl, c + cd_off + 30, 2); memcpy(&cl, c + cd_off + 32, 2);
    size_t e1 = cd_off + 46 + nl + xl + cl;
    memcpy(&entry1, c + e1 + 42, 4);
    memcpy(c + e1 + 42, &big, 4);
    expect_refused("bad_local_offset", c, n, "local header offset");
    uint32_t mid = entry1 + 7;   /* inside another entry's data: no local header signature */
    memcpy(c + e1 + 42, &mid, 4);
    expect_refused("bad_local_offset_2", c, n, "local header offset");

    /* data.pkl is the first entry: flip one byte of its data */
    memcpy(c, b, n);
    uint16_t ln, lx;
    memcpy(&ln, c + 26, 2); memcpy(&lx, c + 28, 2);
    c[30 + ln + lx + 5] ^= 0x20;
    expect_refused("pkl_crc", c, n, "is corrupt (CRC-32");

    /* zip64: torch writes the zip64 end records too; saturate the classic ones */
    memcpy(c, b, n);
    uint32_t sat = 0xffffffffu;
    memcpy(c + eocd + 16, &sat, 4);
    st_file *f = st_open_memory(c, n, "zip64");
    t_check(f && st_count(f) == 40, "zip64_records", "%s", f ? "read through the zip64 end-of-central-directory" : ar_error());
    st_close(f);
    free(c);
    free(b);
}

int main(void) {
    g_exp = json_parse_file(DIR "expected.json");
    if (!t_check(g_exp != NULL, "expected_json", "%s", g_exp ? "" : ar_error())) return 1;
    test_files();
    test_load();
    test_inspect();
    test_refusals();
    json_free(g_exp);
    return t_exit_code();
}
