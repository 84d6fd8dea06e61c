/* tests/test_safetensors.c — checkpoints/safetensors.c against files written
 * by the official `safetensors` package (tests/fixtures/safetensors/, made by
 * tests/ref/make_safetensors_fixtures.py), malformed headers built here, the
 * registry loader (sharded, missing/unexpected keys, shape and dtype errors,
 * all-or-nothing) and the writer (round trip, byte identity with
 * safetensors.torch.save_file). Run from the repository root. */
#include "checkpoints/safetensors.h"
#include "core/error.h"
#include "kernels/kernels.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIX "tests/fixtures/safetensors"

static char g_tmp[64];

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

static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int same_bits(const float *a, const float *b, size_t n) { return n == 0 || memcmp(a, b, n * 4) == 0; }

/* Exact-message check. */
static void expect_err(int failed, const char *name, const char *want) {
    if (!failed) t_fail(name, "was accepted, expected: %s", want);
    else if (strcmp(ar_error(), want) == 0) t_ok(name, "%s", want);
    else t_fail(name, "\n       got:  %s\n       want: %s", ar_error(), want);
}

/* Prefix check, for messages whose tail belongs to core/json. */
static void expect_prefix(int failed, const char *name, const char *prefix) {
    if (!failed) t_fail(name, "was accepted, expected: %s...", prefix);
    else t_check(strncmp(ar_error(), prefix, strlen(prefix)) == 0, name, "%s", ar_error());
}

/* A file: 8-byte length, header text, `buf` bytes of zeros. */
static st_file *open_hdr_n(const char *hdr, size_t hn, size_t buf) {
    size_t n = 8 + hn + buf;
    unsigned char *b = calloc(1, n);
    uint64_t h = hn;
    memcpy(b, &h, 8);
    memcpy(b + 8, hdr, hn);
    st_file *f = st_open_memory(b, n, "bad.safetensors");
    free(b);
    return f;
}
static st_file *open_hdr(const char *hdr, size_t buf) { return open_hdr_n(hdr, strlen(hdr), buf); }

static void check_hdr(const char *name, const char *hdr, size_t buf, const char *want) {
    st_file *f = open_hdr(hdr, buf);
    expect_err(f == NULL, name, want);
    st_close(f);
}

/* ---------------------------------------------------------------------- */
static void test_basic(void) {
    st_file *f = st_open(FIX "/basic.safetensors");
    if (!t_check(f != NULL, "basic_open", "%s", f ? "" : ar_error())) return;
    t_check(st_count(f) == 7, "basic_count", "%d tensors", st_count(f));
    t_check(st_metadata(f, "format") && strcmp(st_metadata(f, "format"), "pt") == 0 &&
            st_metadata(f, "note") && strcmp(st_metadata(f, "note"), "anyref fixture") == 0 &&
            st_metadata(f, "missing") == NULL && st_metadata_count(f) == 2,
            "basic_metadata", "format=%s note=%s", st_metadata(f, "format"), st_metadata(f, "note"));

    static const struct { const char *name; st_dtype dt; int ndim; int64_t shape[3]; } want[] = {
        {"w", ST_F32, 2, {3, 4}}, {"h", ST_F16, 2, {4, 8}}, {"b", ST_BF16, 3, {2, 2, 4}},
        {"scalar", ST_F32, 0, {0}}, {"empty", ST_F32, 2, {0, 3}}, {"ids", ST_I64, 1, {3}},
        {"mask", ST_BOOL, 1, {2}},
    };
    int ok = 1;
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        int i = st_find(f, want[k].name), nd = -1;
        const int64_t *sh = st_shape(f, i, &nd);
        ok &= i >= 0 && strcmp(st_name(f, i), want[k].name) == 0 && st_get_dtype(f, i) == want[k].dt &&
              sh && nd == want[k].ndim && (nd == 0 || memcmp(sh, want[k].shape, (size_t)nd * 8) == 0);
    }
    t_check(ok && st_find(f, "nope") == -1 && st_name(f, 99) == NULL, "basic_listing", "names, dtypes, shapes");
    t_check(st_numel(f, st_find(f, "scalar")) == 1 && st_numel(f, st_find(f, "empty")) == 0,
            "basic_numel", "scalar 1, empty 0");

    size_t en = 0;
    float *exp = read_file(FIX "/basic_expected.bin", &en);
    if (!t_check(exp && en == (12 + 32 + 16 + 1) * 4, "basic_expected", "%zu bytes", en)) { free(exp); st_close(f); return; }
    float got[32];
    const char *names[] = {"w", "h", "b", "scalar"};
    size_t counts[] = {12, 32, 16, 1}, at = 0;
    for (int k = 0; k < 4; k++) {
        memset(got, 0x55, sizeof got);
        int rc = st_read_f32(f, st_find(f, names[k]), got, counts[k]);
        char nm[64];
        snprintf(nm, sizeof nm, "basic_values_%s", names[k]);
        t_check(rc == 0 && same_bits(got, exp + at, counts[k]), nm, "%zu values bit-identical to PyTorch's conversion%s%s",
                counts[k], rc ? ": " : "", rc ? ar_error() : "");
        at += counts[k];
    }
    /* spot checks that do not rely on the fixture's expectations */
    st_read_f32(f, st_find(f, "h"), got, 32);
    t_check(got[2] == ldexpf(1, -24) && got[3] == ldexpf(1023, -24) && got[6] == 65504.0f &&
            isinf(got[8]) && got[8] > 0 && isinf(got[9]) && got[9] < 0 && isnan(got[10]) &&
            signbit(got[1]) && got[1] == 0,
            "basic_f16_specials", "subnormals, max, inf, nan, -0");
    t_check(st_read_f32(f, st_find(f, "empty"), got, 0) == 0, "basic_empty_read", "0 elements");

    expect_err(st_read_f32(f, st_find(f, "ids"), got, 3) != 0, "basic_refuse_i64",
               FIX "/basic.safetensors: tensor 'ids' is I64; only F32, F16 and BF16 can be read as float32");
    expect_err(st_read_f32(f, st_find(f, "w"), got, 11) != 0, "basic_numel_mismatch",
               FIX "/basic.safetensors: tensor 'w' has 12 elements, the caller expected 11");
    size_t nb = 0;
    const unsigned char *raw = st_data(f, st_find(f, "mask"), &nb);
    t_check(raw && nb == 2 && raw[0] == 1 && raw[1] == 0, "basic_raw_bool", "st_data");
    free(exp);
    st_close(f);
}

/* Every half-precision value against ldexp of its fields. */
static void test_f16_exhaustive(void) {
    size_t hdr_cap = 128, n = 65536;
    char hdr[128];
    int hl = snprintf(hdr, hdr_cap, "{\"h\":{\"dtype\":\"F16\",\"shape\":[65536],\"data_offsets\":[0,131072]}}");
    while (hl % 8) hdr[hl++] = ' ';
    size_t total = 8 + (size_t)hl + 2 * n;
    unsigned char *b = malloc(total);
    uint64_t h = (uint64_t)hl;
    memcpy(b, &h, 8);
    memcpy(b + 8, hdr, (size_t)hl);
    for (size_t i = 0; i < n; i++) { b[8 + hl + 2 * i] = (unsigned char)i; b[8 + hl + 2 * i + 1] = (unsigned char)(i >> 8); }
    st_file *f = st_open_memory(b, total, "all_f16");
    float *v = malloc(n * sizeof *v);
    int bad = -1;
    if (f && st_read_f32(f, 0, v, n) == 0) {
        bad = 0;
        for (size_t i = 0; i < n && !bad; i++) {
            int e = (int)(i >> 10) & 31, m = (int)i & 1023, neg = (int)(i >> 15);
            uint32_t got;
            memcpy(&got, &v[i], 4);
            if (e == 31) {
                uint32_t want = (neg ? 0x80000000u : 0) | 0x7f800000u | ((uint32_t)m << 13);
                bad = got != want;
            } else {
                double x = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
                float want = (float)(neg ? -x : x);
                bad = memcmp(&want, &v[i], 4) != 0;
            }
            if (bad) t_fail("f16_exhaustive", "0x%04zx -> 0x%08x", i, got);
        }
    }
    if (!bad) t_ok("f16_exhaustive", "all 65536 F16 values exact (inf/nan payloads kept)");
    else if (bad < 0) t_fail("f16_exhaustive", "%s", ar_error());
    /* BF16: every pattern is the top half of the float */
    st_close(f);
    hl = snprintf(hdr, hdr_cap, "{\"h\":{\"dtype\":\"BF16\",\"shape\":[65536],\"data_offsets\":[0,131072]}}");
    while (hl % 8) hdr[hl++] = ' ';
    total = 8 + (size_t)hl + 2 * n;
    b = realloc(b, total);
    h = (uint64_t)hl;
    memcpy(b, &h, 8);
    memcpy(b + 8, hdr, (size_t)hl);
    for (size_t i = 0; i < n; i++) { b[8 + hl + 2 * i] = (unsigned char)i; b[8 + hl + 2 * i + 1] = (unsigned char)(i >> 8); }
    f = st_open_memory(b, total, "all_bf16");
    bad = !f || st_read_f32(f, 0, v, n) != 0;
    for (size_t i = 0; i < n && !bad; i++) {
        uint32_t got;
        memcpy(&got, &v[i], 4);
        bad = got != (uint32_t)i << 16;
    }
    t_check(!bad, "bf16_exhaustive", "all 65536 BF16 values are the float's top 16 bits");
    st_close(f);
    free(v);
    free(b);
}

static void test_malformed(void) {
    /* the length field */
    st_file *f = st_open_memory("\x10\0\0\0\0", 5, "bad.safetensors");
    expect_err(f == NULL, "bad_short_file", "bad.safetensors: file is 5 bytes, too short for the 8-byte header length");
    unsigned char big[16] = {0, 0, 0, 0, 0, 1, 0, 0};   /* 2^40 */
    f = st_open_memory(big, 16, "bad.safetensors");
    expect_err(f == NULL, "bad_header_too_large",
               "bad.safetensors: header length 1099511627776 exceeds the limit of 100000000 bytes");
    unsigned char past[16] = {100};
    memcpy(past + 8, "{}      ", 8);
    f = st_open_memory(past, 16, "bad.safetensors");
    expect_err(f == NULL, "bad_header_past_end",
               "bad.safetensors: header length 100 runs past the end of the file (8 bytes follow the length)");
    unsigned char allones[8] = {255, 255, 255, 255, 255, 255, 255, 255};
    f = st_open_memory(allones, 8, "bad.safetensors");
    expect_err(f == NULL, "bad_header_u64_max",
               "bad.safetensors: header length 18446744073709551615 exceeds the limit of 100000000 bytes");

    /* the JSON */
    f = open_hdr("not json", 0);
    expect_prefix(f == NULL, "bad_not_json", "bad.safetensors: header: line 1, column 1: ");
    st_close(f);
    f = open_hdr("{\"a\":1} x", 0);
    expect_prefix(f == NULL, "bad_trailing_garbage", "bad.safetensors: header: line 1, column 9: ");
    st_close(f);
    f = open_hdr_n("{}\0", 3, 0);
    expect_prefix(f == NULL, "bad_trailing_nul", "bad.safetensors: header: line 1, column 3: ");
    st_close(f);
    f = open_hdr("{\"a\":\"\xff\"}", 0);
    expect_prefix(f == NULL, "bad_utf8", "bad.safetensors: header: line 1, column 7: ");
    st_close(f);
    check_hdr("bad_bom", "\xEF\xBB\xBF{}", 0, "bad.safetensors: header starts with a UTF-8 byte order mark, expected '{'");
    check_hdr("bad_not_object", "[]", 0, "bad.safetensors: header is an array, expected an object");
    check_hdr("bad_tensor_not_object", "{\"a\":[1]}", 0,
              "bad.safetensors: tensor 'a' is an array, expected an object {\"dtype\", \"shape\", \"data_offsets\"}");
    check_hdr("bad_metadata_type", "{\"__metadata__\":[]}", 0,
              "bad.safetensors: \"__metadata__\" is an array, expected an object of strings");
    check_hdr("bad_metadata_value", "{\"__metadata__\":{\"format\":1}}", 0,
              "bad.safetensors: __metadata__ 'format' is 1, expected a string");
    check_hdr("bad_metadata_twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
              "bad.safetensors: \"__metadata__\" appears twice in the header");
    check_hdr("bad_metadata_dup_key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
              "bad.safetensors: __metadata__ 'k' appears twice");
    check_hdr("bad_name_nul", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
              "bad.safetensors: the name of the header entry at byte 12 contains a NUL character");

    /* the tensor entries */
    check_hdr("bad_missing_dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
              "bad.safetensors: tensor 'a': missing 'dtype'");
    check_hdr("bad_dtype_type", "{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
              "bad.safetensors: tensor 'a': 'dtype' is 32, expected a string");
    check_hdr("bad_unknown_dtype", "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16,
              "bad.safetensors: tensor 'a': unknown dtype 'F128' (expected one of BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, "
              "F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64)");
    check_hdr("bad_missing_shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
              "bad.safetensors: tensor 'a': missing 'shape'");
    check_hdr("bad_shape_type", "{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,16]}}", 16,
              "bad.safetensors: tensor 'a': 'shape' is 4, expected an array of non-negative integers");
    check_hdr("bad_negative_dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4,
              "bad.safetensors: tensor 'a': shape[1] is -1, expected a non-negative integer");
    check_hdr("bad_float_dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
              "bad.safetensors: tensor 'a': shape[0] is 2.0, expected a non-negative integer");
    check_hdr("bad_dim_string", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
              "bad.safetensors: tensor 'a': shape[0] is a string, expected a non-negative integer");
    check_hdr("bad_missing_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
              "bad.safetensors: tensor 'a': missing 'data_offsets'");
    check_hdr("bad_offsets_length", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
              "bad.safetensors: tensor 'a': 'data_offsets' is an array of the wrong length, expected [begin, end]");
    check_hdr("bad_offset_negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
              "bad.safetensors: tensor 'a': data_offsets[0] is -4, expected a non-negative integer");
    check_hdr("bad_offsets_reversed", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
              "bad.safetensors: tensor 'a': data_offsets [4, 0] end before they begin");
    check_hdr("bad_byte_count", "{\"lm_head.weight\":{\"dtype\":\"F32\",\"shape\":[10,4],\"data_offsets\":[0,100]}}", 100,
              "bad.safetensors: tensor 'lm_head.weight': data_offsets [0, 100] do not match shape [10, 4] of F32 (160 bytes)");
    check_hdr("bad_overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,0]}}", 0,
              "bad.safetensors: tensor 'a': shape [4294967296, 4294967296, 2] has more than 2^64 elements");
    check_hdr("bad_overflow_bytes", "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,2147483648],\"data_offsets\":[0,0]}}", 0,
              "bad.safetensors: tensor 'a': shape [4294967296, 2147483648] of F64 is larger than 2^64 bits");
    check_hdr("bad_subbyte", "{\"a\":{\"dtype\":\"F6_E2M3\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
              "bad.safetensors: tensor 'a': shape [3] of F6_E2M3 is not a whole number of bytes (18 bits)");
    check_hdr("bad_out_of_range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
              "bad.safetensors: tensor 'a': data_offsets [0, 8] run past the end of the 4-byte data buffer");
    check_hdr("bad_duplicate_tensor",
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              8, "bad.safetensors: tensor 'a' appears twice in the header");

    /* the tensors together */
    check_hdr("bad_overlap",
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              12, "bad.safetensors: tensors 'a' (data_offsets [0, 8]) and 'b' ([4, 12]) overlap");
    check_hdr("bad_same_offsets",
              "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              4, "bad.safetensors: tensors 'b' (data_offsets [0, 4]) and 'a' ([0, 4]) overlap");
    check_hdr("bad_gap",
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
              12, "bad.safetensors: bytes [4, 8) of the data buffer belong to no tensor (tensor 'b' starts at 8); "
                  "safetensors requires the tensors to cover the buffer without gaps");
    check_hdr("bad_leading_gap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
              "bad.safetensors: bytes [0, 4) of the data buffer belong to no tensor (tensor 'a' starts at 4); "
              "safetensors requires the tensors to cover the buffer without gaps");
    check_hdr("bad_trailing_bytes", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
              "bad.safetensors: the tensors end at byte 4 of a 8-byte data buffer; safetensors allows no bytes after the last tensor");

    /* accepted edge cases */
    f = open_hdr("{}", 0);
    t_check(f && st_count(f) == 0 && st_metadata_count(f) == 0, "ok_empty_file", "{} with no data");
    st_close(f);
    f = open_hdr(" {\"__metadata__\":null,\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"extra\":1},"
                 "\"y\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},\"z\":{\"dtype\":\"F4\",\"shape\":[3,2],\"data_offsets\":[4,7]}} ", 7);
    t_check(f && st_count(f) == 3 && st_numel(f, 1) == 1 && st_get_dtype(f, 2) == ST_F4, "ok_edge_cases",
            "spaces, null metadata, unknown fields, zero-size and 0-d tensors, packed F4: %s", f ? "" : ar_error());
    st_close(f);
}

/* The one bad case whose text belongs to the JSON parser: only its prefix is ours. */
static void test_empty_header(void) {
    st_file *f = open_hdr("", 0);
    expect_prefix(f == NULL, "bad_empty_header", "bad.safetensors: header: line 1, column 1: ");
    st_close(f);
}

static void test_files(void) {
    st_file *f = st_open("tests/fixtures/safetensors/nope.safetensors");
    expect_err(f == NULL, "open_missing", "tests/fixtures/safetensors/nope.safetensors: cannot open: No such file or directory");
    f = st_open(FIX);
    expect_err(f == NULL, "open_directory", FIX ": is a directory, expected a .safetensors file");
    char p[128];
    snprintf(p, sizeof p, "%s/trunc.safetensors", g_tmp);
    size_t n = 0;
    unsigned char *b = read_file(FIX "/basic.safetensors", &n);
    write_file(p, b, n - 1);
    f = st_open(p);
    char want[256];
    snprintf(want, sizeof want, "%s: tensor 'mask': data_offsets [172, 174] run past the end of the 173-byte data buffer", p);
    expect_err(f == NULL, "open_truncated_file", want);
    write_file(p, b, 0);
    f = st_open(p);
    snprintf(want, sizeof want, "%s: file is 0 bytes, too short for the 8-byte header length", p);
    expect_err(f == NULL, "open_empty_file", want);
    free(b);
}

/* ---------------------------------------------------------------------- */
/* Loading into a registry                                                */
/* ---------------------------------------------------------------------- */
static const char *DEC[] = {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                            "model.layers.0.input_layernorm.weight", "model.norm.weight", "lm_head.weight"};
static const int DEC_SHAPE[][2] = {{6, 4}, {4, 4}, {4, 0}, {4, 0}, {6, 4}};

static int make_decoder(ar_params *ps, int lm_rows, int with_lora) {
    params_init_empty(ps);
    for (int i = 0; i < 5; i++) {
        int shape[2] = {DEC_SHAPE[i][0], DEC_SHAPE[i][1]};
        if (i == 4) shape[0] = lm_rows;
        if (params_add(ps, DEC[i], shape[1] ? 2 : 1, shape, i == 0 || i == 4, INIT_NORMAL, 0.02f) != 0) return -1;
    }
    int la[2] = {2, 4}, lb[2] = {4, 2};
    if (with_lora && (params_add(ps, "model.layers.0.self_attn.q_proj.lora_A.weight", 2, la, 1, INIT_KAIMING_UNIFORM, 0) != 0 ||
                      params_add(ps, "model.layers.0.self_attn.q_proj.lora_B.weight", 2, lb, 1, INIT_ZEROS, 0) != 0))
        return -1;
    if (params_alloc(ps) != 0) return -1;
    params_randomize(ps, 7);
    return 0;
}

static float *snapshot(const ar_params *ps) {
    float *s = malloc(ps->nw * sizeof *s);
    k_download(s, ps->w, ps->nw * sizeof *s);
    return s;
}

static int unchanged(const ar_params *ps, const float *snap) {
    float *now = snapshot(ps);
    int same = memcmp(now, snap, ps->nw * sizeof *now) == 0;
    free(now);
    return same;
}

static void test_load(void) {
    ar_params ps;
    if (make_decoder(&ps, 6, 1) != 0) { t_fail("load_registry", "%s", ar_error()); return; }
    size_t en = 0;
    float *exp = read_file(FIX "/sharded_expected.bin", &en);
    t_check(exp && en == (24 + 16 + 4 + 4 + 24) * 4, "load_expected", "%zu bytes", en);
    float *before = snapshot(&ps);
    st_report rep;

    /* without permission the missing LoRA tensors are an error, and nothing is written */
    int rc = st_load_params(FIX "/sharded", &ps, 0, &rep);
    expect_err(rc != 0, "load_missing_error",
               FIX "/sharded/model.safetensors.index.json: the checkpoint lacks 2 tensors of the model: "
                   "'model.layers.0.self_attn.q_proj.lora_A.weight', 'model.layers.0.self_attn.q_proj.lora_B.weight'");
    t_check(rep.n_missing == 2 && rep.n_missing_trainable == 2 && rep.n_unexpected == 1 &&
            strcmp(rep.unexpected[0], "model.layers.0.self_attn.rotary_emb.inv_freq") == 0,
            "load_missing_report", "missing %d (%d trainable), unexpected %d", rep.n_missing, rep.n_missing_trainable,
            rep.n_unexpected);
    t_check(unchanged(&ps, before), "load_missing_untouched", "registry unchanged after the error");

    rc = st_load_params(FIX "/sharded/model.safetensors.index.json", &ps, ST_ALLOW_MISSING_TRAINABLE | ST_ERROR_UNEXPECTED, &rep);
    expect_err(rc != 0, "load_unexpected_error",
               FIX "/sharded/model.safetensors.index.json: the checkpoint has 1 tensor the model lacks: "
                   "'model.layers.0.self_attn.rotary_emb.inv_freq'");
    t_check(unchanged(&ps, before), "load_unexpected_untouched", "registry unchanged after the error");

    rc = st_load_params(FIX "/sharded", &ps, ST_ALLOW_MISSING_TRAINABLE, &rep);
    t_check(rc == 0 && rep.n_loaded == 5 && rep.n_missing == 2 && rep.n_unexpected == 1 && rep.n_shards == 2,
            "load_sharded", "loaded %d from %d files, missing %d, unexpected %d%s%s", rep.n_loaded, rep.n_shards,
            rep.n_missing, rep.n_unexpected, rc ? ": " : "", rc ? ar_error() : "");
    if (exp) {
        int ok = 1;
        size_t at = 0;
        for (int i = 0; i < 5; i++) {
            const ar_param *p = params_find(&ps, DEC[i]);
            float *host = malloc(p->numel * sizeof *host);
            k_download(host, ps.w + p->off, p->numel * sizeof *host);
            ok &= same_bits(host, exp + at, p->numel);
            at += p->numel;
            free(host);
        }
        t_check(ok, "load_sharded_values", "F32, F16 and BF16 shards bit-identical to PyTorch's float()");
    }
    /* the untouched LoRA tensors kept their values */
    const ar_param *la = params_find(&ps, "model.layers.0.self_attn.q_proj.lora_A.weight");
    float *now = snapshot(&ps);
    t_check(memcmp(now + la->off, before + la->off, la->numel * 4) == 0, "load_lora_kept", "LoRA A untouched");
    free(now);
    char line[1024];
    st_report_format(&rep, line, sizeof line);
    t_check(strcmp(line, "loaded 5 from 2 files, missing 2 (2 trainable): 'model.layers.0.self_attn.q_proj.lora_A.weight', "
                         "'model.layers.0.self_attn.q_proj.lora_B.weight'; unexpected 1: "
                         "'model.layers.0.self_attn.rotary_emb.inv_freq'") == 0,
            "load_report_format", "%s", line);
    free(before);
    free(exp);
    params_free(&ps);

    /* a shape mismatch names both shapes and writes nothing */
    make_decoder(&ps, 7, 0);
    before = snapshot(&ps);
    rc = st_load_params(FIX "/sharded", &ps, ST_ALLOW_MISSING, &rep);
    expect_err(rc != 0, "load_shape_mismatch",
               FIX "/sharded/model-00002-of-00002.safetensors: tensor 'lm_head.weight': checkpoint shape [6, 4] does not "
                   "match the model's [7, 4]");
    t_check(unchanged(&ps, before), "load_shape_untouched", "registry unchanged after the error");
    free(before);
    params_free(&ps);

    /* a frozen tensor missing, with only trainable ones allowed */
    params_init_empty(&ps);
    int s4[1] = {4};
    params_add(&ps, "model.norm.weight", 1, s4, 0, INIT_ONES, 0);
    params_add(&ps, "model.final_norm.weight", 1, s4, 0, INIT_ONES, 0);
    params_alloc(&ps);
    rc = st_load_params(FIX "/sharded", &ps, ST_ALLOW_MISSING_TRAINABLE, &rep);
    expect_err(rc != 0, "load_missing_frozen",
               FIX "/sharded/model.safetensors.index.json: the checkpoint lacks 1 tensor of the model: 'model.final_norm.weight'");
    rc = st_load_params(FIX "/sharded", &ps, ST_ALLOW_MISSING_FROZEN, &rep);
    t_check(rc == 0 && rep.n_loaded == 1 && rep.n_missing == 1 && rep.n_missing_trainable == 0 && rep.n_unexpected == 5,
            "load_allow_frozen", "loaded %d, unexpected %d", rep.n_loaded, rep.n_unexpected);
    params_free(&ps);

    /* a dtype that does not load */
    params_init_empty(&ps);
    int s3[1] = {3};
    params_add(&ps, "ids", 1, s3, 0, INIT_ZEROS, 0);
    params_alloc(&ps);
    rc = st_load_params(FIX "/basic.safetensors", &ps, 0, &rep);
    expect_err(rc != 0, "load_dtype_refused",
               FIX "/basic.safetensors: tensor 'ids' is I64; only F32, F16 and BF16 load into float32 weights");
    params_free(&ps);
}

static int write_text(const char *dir, const char *name, const char *text) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return write_file(p, text, strlen(text));
}

static void test_bad_index(void) {
    char d[128], p[256], q[256], want[512];
    snprintf(d, sizeof d, "%s/idx", g_tmp);
    mkdir(d, 0777);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
    /* a shard copied next to the index */
    size_t n = 0;
    void *b = read_file(FIX "/sharded/model-00002-of-00002.safetensors", &n);
    snprintf(q, sizeof q, "%s/s2.safetensors", d);
    write_file(q, b, n);
    free(b);
    ar_params ps;
    params_init_empty(&ps);
    int s4[1] = {4};
    params_add(&ps, "model.norm.weight", 1, s4, 0, INIT_ONES, 0);
    params_alloc(&ps);
    st_report rep;

    write_text(d, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"s2.safetensors\", \"x\": \"s2.safetensors\"}}");
    snprintf(want, sizeof want, "%s: weight_map puts 'x' in %s/s2.safetensors, which has no such tensor", p, d);
    expect_err(st_load_params(d, &ps, ST_ALLOW_MISSING, &rep) != 0, "index_wrong_shard", want);

    write_text(d, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"../s2.safetensors\"}}");
    snprintf(want, sizeof want, "%s: weight_map 'model.norm.weight': shard '../s2.safetensors' must be a path relative to "
                                "the index's directory (no leading '/', no '..')", p);
    expect_err(st_load_params(d, &ps, ST_ALLOW_MISSING, &rep) != 0, "index_dotdot", want);

    write_text(d, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"gone.safetensors\"}}");
    snprintf(want, sizeof want, "%s: %s/gone.safetensors: cannot open: No such file or directory", p, d);
    expect_err(st_load_params(d, &ps, ST_ALLOW_MISSING, &rep) != 0, "index_missing_shard", want);

    write_text(d, "model.safetensors.index.json", "{\"metadata\": {}}");
    snprintf(want, sizeof want, "%s: expected an object with a \"weight_map\" object {tensor name: shard file}", p);
    expect_err(st_load_params(d, &ps, ST_ALLOW_MISSING, &rep) != 0, "index_no_weight_map", want);

    write_text(d, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": 3}}");
    snprintf(want, sizeof want, "%s: weight_map 'model.norm.weight' is 3, expected a shard file name", p);
    expect_err(st_load_params(d, &ps, ST_ALLOW_MISSING, &rep) != 0, "index_value_type", want);

    write_text(d, "model.safetensors.index.json",
               "{\"weight_map\": {\"model.norm.weight\": \"s2.safetensors\", \"model.norm.weight\": \"s2.safetensors\"}}");
    snprintf(want, sizeof want, "%s: weight_map lists 'model.norm.weight' twice", p);
    expect_err(st_load_params(d, &ps, ST_ALLOW_MISSING, &rep) != 0, "index_duplicate", want);

    write_text(d, "model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"s2.safetensors\"}}");
    int rc = st_load_params(p, &ps, 0, &rep);
    t_check(rc == 0 && rep.n_loaded == 1 && rep.n_unexpected == 0 && rep.n_shards == 1, "index_subset",
            "tensors of a shard absent from weight_map are not keys: loaded %d unexpected %d %s", rep.n_loaded,
            rep.n_unexpected, rc ? ar_error() : "");

    snprintf(q, sizeof q, "%s/empty", g_tmp);
    mkdir(q, 0777);
    snprintf(want, sizeof want, "%s: directory holds none of model.safetensors.index.json, model.safetensors, "
             "pytorch_model.bin.index.json, pytorch_model.bin", q);
    expect_err(st_load_params(q, &ps, 0, &rep) != 0, "load_empty_dir", want);
    params_free(&ps);
}

/* ---------------------------------------------------------------------- */
/* Writer                                                                 */
/* ---------------------------------------------------------------------- */
static int only_trainable(void *ctx, const ar_param *p) { (void)ctx; return p->trainable; }
static int peft_name(void *ctx, const char *name, char *out, size_t cap) {
    int n = snprintf(out, cap, "%s%s", (const char *)ctx, name);
    return n >= 0 && (size_t)n < cap ? 0 : ar_errorf("name too long");
}

static void test_save(void) {
    ar_params ps;
    make_decoder(&ps, 6, 1);
    char p[128];
    snprintf(p, sizeof p, "%s/out/sub/model.safetensors", g_tmp);
    int rc = st_save(p, &ps, NULL, NULL, NULL, NULL, 0);
    t_check(rc == 0, "save_all", "%s", rc ? ar_error() : "");
    st_file *f = st_open(p);
    int ok = f && st_count(f) == ps.n && st_metadata(f, "format") && strcmp(st_metadata(f, "format"), "pt") == 0 &&
             st_metadata_count(f) == 1;
    float *all = snapshot(&ps);
    for (int i = 0; ok && i < ps.n; i++) {
        const ar_param *q = &ps.p[i];
        int k = st_find(f, q->name), nd;
        const int64_t *sh = st_shape(f, k, &nd);
        float *v = malloc(q->numel * 4);
        ok = k >= 0 && st_get_dtype(f, k) == ST_F32 && nd == q->ndim && st_read_f32(f, k, v, q->numel) == 0 &&
             same_bits(v, all + q->off, q->numel);
        for (int d = 0; ok && d < nd; d++) ok = sh[d] == q->shape[d];
        free(v);
    }
    t_check(ok, "save_roundtrip", "%d tensors read back bit-identical, format=pt%s%s", ps.n, f ? "" : ": ",
            f ? "" : ar_error());
    st_close(f);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", p, (long)getpid());
    t_check(access(tmp, F_OK) != 0, "save_no_tmp_left", "%s removed", tmp);
    size_t n = 0;
    unsigned char *b = read_file(p, &n);
    uint64_t hl = 0;
    if (b && n >= 8) memcpy(&hl, b, 8);
    t_check(b && hl % 8 == 0 && 8 + hl <= n && (b[8 + hl - 1] == ' ' || b[8 + hl - 1] == '}'), "save_header_aligned",
            "header %llu bytes", (unsigned long long)hl);
    free(b);

    /* PEFT-style export: trainable only, renamed, custom metadata */
    const char *meta[] = {"format", "pt", "base_model", "tiny \"test\"\n"};
    rc = st_save(p, &ps, only_trainable, peft_name, "base_model.model.", meta, 2);
    f = rc == 0 ? st_open(p) : NULL;
    ok = f && st_count(f) == 4 && st_find(f, "base_model.model.lm_head.weight") >= 0 &&
         st_find(f, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight") >= 0 &&
         st_find(f, "model.norm.weight") < 0 && strcmp(st_metadata(f, "base_model"), "tiny \"test\"\n") == 0;
    if (ok) {
        const ar_param *q = params_find(&ps, "lm_head.weight");
        float *v = malloc(q->numel * 4);
        ok = st_read_f32(f, st_find(f, "base_model.model.lm_head.weight"), v, q->numel) == 0 &&
             same_bits(v, all + q->off, q->numel);
        free(v);
    }
    t_check(ok, "save_select_rename", "trainable only, PEFT names, escaped metadata%s%s", f ? "" : ": ", f ? "" : ar_error());
    st_close(f);

    /* no metadata at all */
    const char *none[1] = {NULL};
    rc = st_save(p, &ps, only_trainable, NULL, NULL, none, 0);
    f = rc == 0 ? st_open(p) : NULL;
    t_check(f && st_metadata_count(f) == 0 && st_count(f) == 4, "save_no_metadata", "%s", f ? "" : ar_error());
    st_close(f);
    b = read_file(p, &n);
    t_check(b && n > 9 && b[8] == '{' && b[9] == '"' && memcmp(b + 10, "lm_head", 7) == 0, "save_no_metadata_header",
            "header starts with the first tensor");
    free(b);

    /* errors */
    const char *dup[] = {"k", "1", "k", "2"};
    snprintf(tmp, sizeof tmp, "%s: metadata key 'k' given twice", p);
    expect_err(st_save(p, &ps, NULL, NULL, NULL, dup, 2) != 0, "save_dup_meta", tmp);
    snprintf(tmp, sizeof tmp, "%s/nodir/x.safetensors", FIX "/basic.safetensors");
    rc = st_save(tmp, &ps, NULL, NULL, NULL, NULL, 0);
    t_check(rc != 0 && strstr(ar_error(), "cannot create directory") != NULL, "save_bad_dir", "%s", ar_error());
    free(all);
    params_free(&ps);
}

/* Load the official writer's F32 file into a registry, write it back: same bytes. */
static void test_byte_identity(void) {
    ar_params ps;
    params_init_empty(&ps);
    static const struct { const char *name; int ndim, shape[4]; } T[] = {
        {"b.weight", 2, {2, 3}}, {"a.bias", 1, {3}}, {"a.weight", 2, {3, 2}}, {"Z.upper", 1, {1}},
        {"a.weight.conv", 4, {2, 1, 2, 2}}, {"a_weight", 1, {5}},
    };
    for (int i = 0; i < 6; i++) params_add(&ps, T[i].name, T[i].ndim, T[i].shape, i % 2, INIT_ZEROS, 0);
    params_alloc(&ps);
    st_report rep;
    int rc = st_load_params(FIX "/f32_model.safetensors", &ps, ST_ERROR_UNEXPECTED, &rep);
    t_check(rc == 0 && rep.n_loaded == 6, "identity_load", "%s", rc ? ar_error() : "");
    char p[128];
    snprintf(p, sizeof p, "%s/f32_model.safetensors", g_tmp);
    rc = st_save(p, &ps, NULL, NULL, NULL, NULL, 0);
    size_t na = 0, nb = 0;
    unsigned char *a = read_file(FIX "/f32_model.safetensors", &na), *b = rc == 0 ? read_file(p, &nb) : NULL;
    t_check(a && b && na == nb && memcmp(a, b, na) == 0, "identity_bytes",
            "st_save output byte-identical to safetensors.torch.save_file (%zu vs %zu bytes)", na, nb);
    free(a);
    free(b);
    params_free(&ps);
}

static void rm_rf(const char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
    strcpy(g_tmp, "/tmp/anyref_st_XXXXXX");
    if (!mkdtemp(g_tmp)) { t_fail("tmpdir", "mkdtemp failed"); return 1; }
    test_basic();
    test_f16_exhaustive();
    test_malformed();
    test_empty_header();
    test_files();
    test_load();
    test_bad_index();
    test_save();
    test_byte_identity();
    rm_rf(g_tmp);
    return t_exit_code();
}
