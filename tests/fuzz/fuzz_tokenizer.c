/* tests/fuzz/fuzz_tokenizer.c — libFuzzer target for data/tokenizer*.c and
 * data/protobuf.c.
 *
 * The first input byte picks what the rest is:
 *   0  a tokenizer file (tok_load_memory: protobuf .model or .json); when it
 *      loads, encode and decode a fixed text, decode every id, add a token;
 *   1  text for the fixed tests/fixtures/tok_bpe.model: decode(encode(text))
 *      must give the text back, with each malformed UTF-8 byte as U+FFFD and
 *      U+2581 as ' ' (the two things the SentencePiece normaliser changes);
 *   2  the same for tests/fixtures/tok_bpe.json (texts holding its added
 *      tokens <unk> <s> </s> <ud> are skipped: those do not round-trip);
 *   3  pairs of bytes as ids for both fixed tokenizers: decoding must succeed
 *      for ids in range, fail for ids out of range, and give valid UTF-8.
 * Any violation traps. The fixed tokenizers are read from $TOK_FUZZ_DIR
 * (default tests/fixtures, i.e. run from the repository root).
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_tokenizer -max_total_time=120
 */
#include "core/error.h"
#include "data/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links only the core sources plus FUZZ_EXTRA; core/arena.c needs the backend allocator. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

static tokenizer *g_model, *g_json;

static tokenizer *load_fixed(const char *name) {
    const char *dir = getenv("TOK_FUZZ_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/fixtures", name);
    tokenizer *t = tok_load(path);
    if (!t) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", ar_error());
        abort();
    }
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    g_model = load_fixed("tok_bpe.model");
    g_json = load_fixed("tok_bpe.json");
    return 0;
}

/* Strict UTF-8 length of the character at s, 0 if invalid. */
static int char_len(const unsigned char *s, size_t n) {
    unsigned c = s[0], cp;
    if (c < 0x80) return 1;
    int l = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!l || n < (size_t)l) return 0;
    cp = c & (0x7F >> l);
    for (int i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    static const unsigned min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[l] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return l;
}

static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int l = char_len((const unsigned char *)s + i, n - i);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* What decode(encode(text)) must give: malformed bytes -> U+FFFD, U+2581 -> ' '. */
static char *expected(const char *s, size_t n, size_t *out_len) {
    char *o = malloc(3 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int l = char_len((const unsigned char *)s + i, n - i);
        if (!l) {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        } else if (l == 3 && !memcmp(s + i, "\xE2\x96\x81", 3)) {
            o[k++] = ' ';
            i += 3;
        } else {
            memcpy(o + k, s + i, (size_t)l);
            k += (size_t)l;
            i += (size_t)l;
        }
    }
    *out_len = k;
    return o;
}

static int contains(const char *s, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(s + i, needle, m)) return 1;
    return 0;
}

static void round_trip(const tokenizer *t, const char *s, size_t n) {
    int *ids = NULL, nid = 0;
    char *out = NULL;
    size_t len = 0, want_len;
    if (tok_encode(t, s, n, 0, 0, &ids, &nid) != 0) __builtin_trap();
    for (int i = 0; i < nid; i++)
        if (ids[i] < 0 || ids[i] >= tok_vocab_size(t)) __builtin_trap();
    if (tok_decode(t, ids, nid, &out, &len) != 0) __builtin_trap();
    char *want = expected(s, n, &want_len);
    if (len != want_len || memcmp(out, want, len) != 0) __builtin_trap();
    free(want);
    free(out);
    free(ids);
    /* with BOS and EOS: the same text (both are control / special) */
    if (tok_encode(t, s, n, 1, 1, &ids, &nid) != 0 || nid < 2 || ids[0] != tok_bos(t) || ids[nid - 1] != tok_eos(t))
        __builtin_trap();
    if (tok_decode(t, ids, nid, &out, &len) != 0 || len != want_len) __builtin_trap();
    free(out);
    free(ids);
}

static void decode_ids(const tokenizer *t, const uint8_t *d, size_t n) {
    int cnt = (int)(n / 2);
    int *ids = malloc(((size_t)cnt + 1) * sizeof *ids);
    int in_range = 1;
    for (int i = 0; i < cnt; i++) {
        ids[i] = (int)(d[2 * i] | d[2 * i + 1] << 8) - 8;   /* a few negative ids too */
        in_range &= ids[i] >= 0 && ids[i] < tok_vocab_size(t);
    }
    char *out = NULL;
    size_t len = 0;
    int rc = tok_decode(t, ids, cnt, &out, &len);
    if (rc != (in_range ? 0 : -1)) __builtin_trap();
    if (rc == 0 && (!valid_utf8(out, len) || out[len] != '\0')) __builtin_trap();
    free(out);
    free(ids);
}

static void parse_model(const uint8_t *d, size_t n) {
    tokenizer *t = tok_load_memory(d, n, "fuzz");
    if (!t) {
        if (!ar_error()[0]) __builtin_trap();   /* a refusal always says why */
        return;
    }
    static const char text[] = "Hello  world\n\xC3\xA9\xE4\xB8\xAD \xF0\x9F\x98\x80 12<s>[SEG]\xFF";
    int *ids = NULL, nid = 0;
    char *out = NULL;
    size_t len;
    if (tok_encode(t, text, sizeof text - 1, 0, 0, &ids, &nid) != 0) __builtin_trap();
    if (tok_decode(t, ids, nid, &out, &len) != 0) __builtin_trap();
    free(out);
    free(ids);
    int all[512];
    int n_all = tok_vocab_size(t) < 512 ? tok_vocab_size(t) : 512;
    for (int i = 0; i < n_all; i++) all[i] = i;
    if (tok_decode(t, all, n_all, &out, &len) != 0) __builtin_trap();
    free(out);
    int id = tok_add_special(t, "[SEG]");
    if (id < 0 || tok_encode(t, text, sizeof text - 1, 0, 0, &ids, &nid) != 0) __builtin_trap();
    free(ids);
    tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    const char *s = (const char *)d;
    switch (data[0] & 3) {
    case 0:
        parse_model(d, n);
        break;
    case 1:
        round_trip(g_model, s, n);
        break;
    case 2:
        if (!contains(s, n, "<unk>") && !contains(s, n, "<s>") && !contains(s, n, "</s>") && !contains(s, n, "<ud>"))
            round_trip(g_json, s, n);
        break;
    default:
        decode_ids(g_model, d, n);
        decode_ids(g_json, d, n);
        break;
    }
    return 0;
}
