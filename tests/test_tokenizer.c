/* tests/test_tokenizer.c — data/tokenizer against the reference libraries.
 *
 * tests/fixtures/tok_cases_*.txt hold, for 148 strings, the ids that Debian's
 * libsentencepiece 0.1.97 (the .model files) and Hugging Face `tokenizers`
 * (the .json file) produce, plain / with BOS / with BOS+EOS, and their
 * decodes, plus decodes of random id sequences; tests/ref/
 * make_tokenizer_fixtures.py writes them. Every string must match exactly.
 * Then: hand-checked merge orders on tiny models built here, malformed files
 * refused with exact messages, truncated and corrupted files refused without
 * crashing, invalid UTF-8 input, and the `anyref tokenize` command.
 */
#include "tests/testlib.h"

#include "core/error.h"
#include "core/timer.h"
#include "data/protobuf.h"
#include "data/tokenize_cmd.h"
#include "data/tokenizer.h"
#include "data/tokenizer_internal.h"   /* chunkable: to compare both merge paths */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/"

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[sz] = '\0';
    if (len) *len = (size_t)sz;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Case files                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *text, *dec;   /* dec NULL: decode equals text */
    size_t len, dec_len;
    int *ids, *bos, *bose;
    int n, nb, nbe;     /* nbe < 0: no bose line */
} enc_case;

typedef struct {
    int *ids, n;
    char *out;
    size_t out_len;
} dec_case;

typedef struct {
    char *special[16];
    int n_special;
    enc_case e[400];
    int ne;
    dec_case d[200];
    int nd;
} case_file;

/* "x<hex>" -> malloc'd bytes (NUL-terminated). */
static char *unhex(const char *h, size_t *len) {
    if (h[0] != 'x') return NULL;
    h++;
    size_t n = strlen(h) / 2;
    char *out = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1) {
            free(out);
            return NULL;
        }
        out[i] = (char)v;
    }
    out[n] = '\0';
    *len = n;
    return out;
}

static int *parse_ids(const char *s, int *n) {
    int *v = malloc((strlen(s) / 2 + 2) * sizeof *v);
    int k = 0;
    char *end;
    for (;;) {
        while (*s == ' ') s++;
        if (!*s) break;
        v[k++] = (int)strtol(s, &end, 10);
        s = end;
    }
    *n = k;
    return v;
}

static int load_cases(const char *path, case_file *cf) {
    memset(cf, 0, sizeof *cf);
    char *buf = slurp(path, NULL);
    if (!buf) return -1;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char *sp = strchr(line, ' ');
        const char *arg = sp ? sp + 1 : "";
        if (sp) *sp = '\0';
        size_t len;
        enc_case *e = cf->ne ? &cf->e[cf->ne - 1] : NULL;
        if (!strcmp(line, "special")) {
            cf->special[cf->n_special++] = unhex(arg, &len);
        } else if (!strcmp(line, "text")) {
            e = &cf->e[cf->ne++];
            e->text = unhex(arg, &e->len);
            e->nbe = -1;
        } else if (!strcmp(line, "ids")) {
            e->ids = parse_ids(arg, &e->n);
        } else if (!strcmp(line, "bos")) {
            e->bos = parse_ids(arg, &e->nb);
        } else if (!strcmp(line, "bose")) {
            e->bose = parse_ids(arg, &e->nbe);
        } else if (!strcmp(line, "dec")) {
            if (strcmp(arg, "=")) e->dec = unhex(arg, &e->dec_len);
        } else if (!strcmp(line, "decode")) {
            dec_case *d = &cf->d[cf->nd++];
            d->ids = parse_ids(arg, &d->n);
        } else if (!strcmp(line, "out")) {
            cf->d[cf->nd - 1].out = unhex(arg, &cf->d[cf->nd - 1].out_len);
        }
    }
    free(buf);
    return 0;
}

static void free_cases(case_file *cf) {
    for (int i = 0; i < cf->n_special; i++) free(cf->special[i]);
    for (int i = 0; i < cf->ne; i++) {
        free(cf->e[i].text);
        free(cf->e[i].dec);
        free(cf->e[i].ids);
        free(cf->e[i].bos);
        free(cf->e[i].bose);
    }
    for (int i = 0; i < cf->nd; i++) {
        free(cf->d[i].ids);
        free(cf->d[i].out);
    }
}

static int same_ids(const int *a, int na, const int *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void print_ids(const char *tag, const int *ids, int n) {
    printf("#   %s:", tag);
    for (int i = 0; i < n; i++) printf(" %d", ids[i]);
    printf("\n");
}

static void print_text(const char *tag, const char *s, size_t n) {
    printf("#   %s: \"", tag);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\') printf("\\x%02x", c);
        else putchar(c);
    }
    printf("\"\n");
}

/* Compares everything in one case file against tokenizer file `model`. */
static void check_reference(const char *name, const char *model, const char *cases, const char *ref) {
    char check[128];
    case_file *cf = malloc(sizeof *cf);
    if (load_cases(cases, cf) < 0 || cf->ne < 100) {
        snprintf(check, sizeof check, "tokenizer.%s.fixture", name);
        t_fail(check, "cannot read %s (run tests/ref/make_tokenizer_fixtures.py)", cases);
        free(cf);
        return;
    }
    tokenizer *t = tok_load(model);
    snprintf(check, sizeof check, "tokenizer.%s.load", name);
    if (!t_check(t != NULL, check, "%s: %s", model, t ? tok_kind(t) : ar_error())) {
        free_cases(cf);
        free(cf);
        return;
    }
    int base = tok_vocab_size(t), ok_special = 1;
    for (int k = 0; k < cf->n_special; k++) ok_special &= tok_add_special(t, cf->special[k]) == base + k;
    ok_special &= tok_add_special(t, cf->special[0]) == base;   /* again: the same id */
    snprintf(check, sizeof check, "tokenizer.%s.added_tokens", name);
    t_check(ok_special && tok_vocab_size(t) == base + cf->n_special, check,
            "%d added tokens take ids %d..%d", cf->n_special, base, base + cf->n_special - 1);

    int m_ids = 0, m_bos = 0, m_bose = 0, n_bose = 0, m_dec = 0, shown = 0, errors = 0;
    for (int i = 0; i < cf->ne; i++) {
        enc_case *e = &cf->e[i];
        int *ids = NULL, n = 0, *bos = NULL, nb = 0, *bose = NULL, nbe = 0;
        char *dec = NULL;
        size_t dlen = 0;
        if (tok_encode(t, e->text, e->len, 0, 0, &ids, &n) < 0 || tok_encode(t, e->text, e->len, 1, 0, &bos, &nb) < 0 ||
            tok_encode(t, e->text, e->len, 1, 1, &bose, &nbe) < 0 || tok_decode(t, e->ids, e->n, &dec, &dlen) < 0) {
            errors++;
            printf("# %s: case %d: %s\n", name, i, ar_error());
        } else {
            int a = same_ids(ids, n, e->ids, e->n), b = same_ids(bos, nb, e->bos, e->nb);
            int c = e->nbe < 0 || same_ids(bose, nbe, e->bose, e->nbe);
            const char *want = e->dec ? e->dec : e->text;
            size_t want_len = e->dec ? e->dec_len : e->len;
            int d = dlen == want_len && memcmp(dec, want, dlen) == 0;
            m_ids += a;
            m_bos += b;
            m_bose += e->nbe >= 0 && c;
            n_bose += e->nbe >= 0;
            m_dec += d;
            if (!(a && b && c && d) && shown++ < 4) {
                printf("# %s: case %d differs\n", name, i);
                print_text("text", e->text, e->len);
                print_ids("want", e->ids, e->n);
                print_ids("got ", ids, n);
                print_text("want decode", want, want_len);
                print_text("got decode ", dec, dlen);
            }
        }
        free(ids);
        free(bos);
        free(bose);
        free(dec);
    }
    snprintf(check, sizeof check, "tokenizer.%s.encode", name);
    t_check(m_ids == cf->ne && !errors, check, "%d/%d strings give the ids of %s", m_ids, cf->ne, ref);
    snprintf(check, sizeof check, "tokenizer.%s.encode_bos", name);
    t_check(m_bos == cf->ne, check, "%d/%d with BOS", m_bos, cf->ne);
    snprintf(check, sizeof check, "tokenizer.%s.encode_bos_eos", name);
    t_check(m_bose == n_bose && n_bose > 10, check, "%d/%d with BOS and EOS", m_bose, n_bose);
    snprintf(check, sizeof check, "tokenizer.%s.decode", name);
    t_check(m_dec == cf->ne, check, "%d/%d decodes of the reference ids match %s", m_dec, cf->ne, ref);

    int m_rand = 0;
    for (int i = 0; i < cf->nd; i++) {
        char *out = NULL;
        size_t len = 0;
        if (tok_decode(t, cf->d[i].ids, cf->d[i].n, &out, &len) == 0 && len == cf->d[i].out_len &&
            memcmp(out, cf->d[i].out, len) == 0)
            m_rand++;
        else if (shown++ < 8) {
            printf("# %s: random decode %d differs\n", name, i);
            print_ids("ids", cf->d[i].ids, cf->d[i].n);
            print_text("want", cf->d[i].out, cf->d[i].out_len);
            print_text("got ", out ? out : "", len);
        }
        free(out);
    }
    snprintf(check, sizeof check, "tokenizer.%s.decode_random", name);
    t_check(m_rand == cf->nd && cf->nd >= 40, check, "%d/%d random id sequences (control, unk, bytes, added) decode as %s",
            m_rand, cf->nd, ref);
    tok_free(t);
    free_cases(cf);
    free(cf);
}

/* ------------------------------------------------------------------------ */
/* Tiny models built here                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    unsigned char b[8192];
    size_t n;
} pbw;

static void w_varint(pbw *w, uint64_t v) {
    do {
        w->b[w->n++] = (unsigned char)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void w_key(pbw *w, unsigned field, unsigned wire) { w_varint(w, (uint64_t)field << 3 | wire); }
static void w_bytes(pbw *w, unsigned field, const void *p, size_t n) {
    w_key(w, field, 2);
    w_varint(w, n);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void w_str(pbw *w, unsigned field, const char *s) { w_bytes(w, field, s, strlen(s)); }
static void w_uint(pbw *w, unsigned field, uint64_t v) {
    w_key(w, field, 0);
    w_varint(w, v);
}
static void w_float(pbw *w, unsigned field, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    w_key(w, field, 5);
    for (int i = 0; i < 4; i++) w->b[w->n++] = (unsigned char)(u >> (8 * i));
}
static void w_piece(pbw *w, const char *s, float score, int type) {
    pbw p = {.n = 0};
    w_str(&p, 1, s);
    w_float(&p, 2, score);
    if (type != 1) w_uint(&p, 3, (uint64_t)type);
    w_bytes(w, 1, p.b, p.n);
}

typedef struct {
    int model_type, byte_fallback, n_bytes, extra_dup, unk_count, add_dummy_prefix;
    const char *normalizer_name, *charsmap, *bad_byte;
    float s_wa, s_ab;   /* scores of "▁a" and "ab" */
} spm_opts;

/* <unk> <s> </s> ▁ a b ▁a ab [+ byte pieces] */
static void build_spm(pbw *w, const spm_opts *o) {
    w->n = 0;
    for (int i = 0; i < o->unk_count; i++) w_piece(w, i ? "<unk2>" : "<unk>", 0, 2);
    w_piece(w, "<s>", 0, 3);
    w_piece(w, "</s>", 0, 3);
    w_piece(w, "\xE2\x96\x81", -3, 1);
    w_piece(w, "a", -4, 1);
    w_piece(w, "b", -5, 1);
    w_piece(w, "\xE2\x96\x81" "a", o->s_wa, 1);
    w_piece(w, "ab", o->s_ab, 1);
    if (o->extra_dup) w_piece(w, "a", -9, 1);
    if (o->bad_byte) w_piece(w, o->bad_byte, 0, 6);
    for (int i = 0; i < o->n_bytes; i++) {
        char s[16];
        snprintf(s, sizeof s, "<0x%02X>", i & 0xFF);
        w_piece(w, s, 0, 6);
    }
    pbw ts = {.n = 0};
    w_uint(&ts, 3, (uint64_t)o->model_type);
    w_uint(&ts, 4, 8);
    if (o->byte_fallback) w_uint(&ts, 35, 1);
    w_bytes(w, 2, ts.b, ts.n);
    pbw ns = {.n = 0};
    w_str(&ns, 1, o->normalizer_name);
    if (o->charsmap) w_str(&ns, 2, o->charsmap);
    w_uint(&ns, 3, (uint64_t)o->add_dummy_prefix);
    w_uint(&ns, 4, 0);
    w_bytes(w, 3, ns.b, ns.n);
}

static const spm_opts SPM_OK = {2, 0, 0, 0, 1, 1, "identity", NULL, NULL, -1.0f, -2.0f};

static void expect_error(const char *check, tokenizer *t, const char *want) {
    if (t) {
        t_fail(check, "loaded; expected the error \"%s\"", want);
        tok_free(t);
        return;
    }
    if (!t_check(strcmp(ar_error(), want) == 0, check, "\"%s\"", ar_error())) printf("#   expected \"%s\"\n", want);
}

static void encode_is(const char *check, const tokenizer *t, const char *text, const int *want, int nwant) {
    int *ids = NULL, n = 0;
    int rc = tok_encode(t, text, strlen(text), 0, 0, &ids, &n);
    int ok = rc == 0 && same_ids(ids, n, want, nwant);
    t_check(ok, check, "\"%s\" -> %d ids%s", text, n, ok ? "" : " (differ)");
    if (!ok) {
        print_ids("want", want, nwant);
        print_ids("got ", ids, n);
    }
    free(ids);
}

static void test_tiny_spm(void) {
    pbw w;
    spm_opts o = SPM_OK;
    build_spm(&w, &o);
    tokenizer *t = tok_load_memory(w.b, w.n, "tiny.model");
    if (!t_check(t != NULL, "tokenizer.tiny_model.load", "%s", t ? "" : ar_error())) return;
    t_check(tok_vocab_size(t) == 8 && tok_unk(t) == 0 && tok_bos(t) == 1 && tok_eos(t) == 2 && tok_pad(t) == -1 &&
                !strcmp(tok_piece(t, 6), "\xE2\x96\x81" "a") && tok_piece_to_id(t, "ab") == 7 &&
                tok_piece_to_id(t, "zz") == -1 && tok_piece(t, 8) == NULL && tok_piece(t, -1) == NULL,
            "tokenizer.tiny_model.accessors", "8 pieces, unk 0, bos 1, eos 2, no pad");
    /* "▁a b ▁ a": ▁a (score -1) beats ab (-2); the leftmost ▁a goes first, then the right one. */
    encode_is("tokenizer.tiny_model.score_order", t, "ab a", (const int[]){6, 5, 6}, 3);
    /* characters outside the vocabulary: one <unk> per run (no byte fallback) */
    encode_is("tokenizer.tiny_model.unk_fused", t, "axyzb", (const int[]){6, 0, 5}, 3);
    tok_free(t);
    o.s_ab = -0.5f;   /* now ab outranks ▁a */
    build_spm(&w, &o);
    t = tok_load_memory(w.b, w.n, "tiny.model");
    encode_is("tokenizer.tiny_model.score_order2", t, "ab a", (const int[]){3, 7, 6}, 3);
    tok_free(t);
    o = SPM_OK;
    o.add_dummy_prefix = 0;
    build_spm(&w, &o);
    t = tok_load_memory(w.b, w.n, "tiny.model");
    encode_is("tokenizer.tiny_model.no_dummy_prefix", t, "ab a", (const int[]){7, 6}, 2);
    tok_free(t);
}

static const char *HF_NORM = "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\xE2\x96\x81\"},"
                             "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\xE2\x96\x81\"}]}";
static const char *HF_DEC = "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},"
                            "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \","
                            "\"start\":1,\"stop\":0}]}";
static const char *HF_VOCAB = "{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\xE2\x96\x81\":3,\"a\":4,\"b\":5,\"\xE2\x96\x81" "a\":6,\"ab\":7}";

/* A tokenizer.json with the given pieces swapped in (NULL = the working default). */
static tokenizer *hf_json_opts(const char *type, const char *vocab, const char *merges, const char *pre, const char *norm,
                               const char *added, const char *opts) {
    char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"version\":\"1.0\",\"added_tokens\":%s,%s,\"pre_tokenizer\":%s,%s,\"model\":{\"type\":\"%s\",\"dropout\":null,"
             "%s,\"byte_fallback\":false,\"vocab\":%s,\"merges\":%s}}",
             added ? added : "[{\"id\":0,\"content\":\"<unk>\",\"special\":true,\"normalized\":false,\"lstrip\":false}]",
             norm ? norm : HF_NORM, pre ? pre : "null", HF_DEC, type ? type : "BPE",
             opts ? opts : "\"unk_token\":\"<unk>\",\"fuse_unk\":true", vocab ? vocab : HF_VOCAB,
             merges ? merges : "[\"\xE2\x96\x81 a\",[\"a\",\"b\"]]");
    return tok_load_memory(buf, strlen(buf), "bad.json");
}

static tokenizer *hf_json(const char *type, const char *vocab, const char *merges, const char *pre, const char *norm,
                          const char *added) {
    return hf_json_opts(type, vocab, merges, pre, norm, added, NULL);
}

static void test_tiny_hf(void) {
    tokenizer *t = hf_json(NULL, NULL, NULL, NULL, NULL, NULL);
    if (!t_check(t != NULL, "tokenizer.tiny_json.load", "%s", t ? tok_kind(t) : ar_error())) return;
    /* rank 0 "▁ a" before rank 1 "a b"; leftmost first */
    encode_is("tokenizer.tiny_json.rank_order", t, "ab a", (const int[]){6, 5, 6}, 3);
    encode_is("tokenizer.tiny_json.unk_fused", t, "axyzb", (const int[]){6, 0, 5}, 3);
    encode_is("tokenizer.tiny_json.added_token", t, "a<unk>", (const int[]){6, 0}, 2);
    tok_free(t);
    t = hf_json(NULL, NULL, "[\"a b\",\"\xE2\x96\x81 a\"]", NULL, NULL, NULL);
    encode_is("tokenizer.tiny_json.rank_order2", t, "ab a", (const int[]){3, 7, 6}, 3);
    tok_free(t);
    /* (ids checked with tokenizers 0.23: BPE(fuse_unk=False) / BPE(unk_token=None)) */
    t = hf_json_opts(NULL, NULL, NULL, NULL, NULL, NULL, "\"unk_token\":\"<unk>\",\"fuse_unk\":false");
    encode_is("tokenizer.tiny_json.unk_not_fused", t, "axyzb", (const int[]){6, 0, 0, 0, 5}, 5);
    encode_is("tokenizer.tiny_json.unk_not_fused2", t, "xaby", (const int[]){3, 0, 7, 0}, 4);
    tok_free(t);
    t = hf_json_opts(NULL, NULL, NULL, NULL, NULL, NULL, "\"unk_token\":null,\"fuse_unk\":true");
    encode_is("tokenizer.tiny_json.no_unk_token", t, "xaby", (const int[]){6, 5}, 2);
    tok_free(t);
}

static void test_malformed(void) {
    pbw w;
    spm_opts o;
    expect_error("tokenizer.bad.empty", tok_load_memory("", 0, "bad.model"),
                 "bad.model: empty file; expected a SentencePiece tokenizer.model or a tokenizer.json");
    expect_error("tokenizer.bad.length", tok_load_memory("\x0a\x0c" "ab", 4, "bad.model"),
                 "bad.model: not a SentencePiece model: protobuf: field 1 at byte 0: length 12 runs past the end of its "
                 "message (2 bytes left)");
    expect_error("tokenizer.bad.varint", tok_load_memory("\x08\x80", 2, "bad.model"),
                 "bad.model: not a SentencePiece model: protobuf: truncated value varint at byte 1");
    expect_error("tokenizer.bad.group", tok_load_memory("\x0b", 1, "bad.model"),
                 "bad.model: not a SentencePiece model: protobuf: field 1 at byte 0 has wire type 3 (group, not "
                 "supported); expected 0, 1, 2 or 5");
    expect_error("tokenizer.bad.wire", tok_load_memory("\x0a\x05\x0a\x01" "a\x10\x05", 7, "bad.model"),
                 "bad.model: pieces[0].score (field 2 at byte 5) has wire type varint; expected 32-bit");
    o = SPM_OK;
    o.model_type = 1;
    build_spm(&w, &o);
    expect_error("tokenizer.bad.unigram", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: trainer_spec.model_type is UNIGRAM (1); only BPE (2) is supported");
    o = SPM_OK;
    o.normalizer_name = "nmt_nfkc";
    o.charsmap = "0123456789";
    build_spm(&w, &o);
    expect_error("tokenizer.bad.charsmap", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: normalizer_spec 'nmt_nfkc' has a precompiled_charsmap (10 bytes); only the identity "
                 "normaliser (no character map) is supported");
    o = SPM_OK;
    o.unk_count = 0;
    build_spm(&w, &o);
    expect_error("tokenizer.bad.no_unk", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: no piece has type UNKNOWN (expected one, e.g. <unk>)");
    o = SPM_OK;
    o.unk_count = 2;
    build_spm(&w, &o);
    expect_error("tokenizer.bad.two_unk", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: pieces[0] '<unk>' and pieces[1] '<unk2>' are both UNKNOWN; expected exactly one");
    o = SPM_OK;
    o.n_bytes = 1;
    build_spm(&w, &o);
    expect_error("tokenizer.bad.byte_piece", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: pieces[8] '<0x00>' is a BYTE piece but trainer_spec.byte_fallback is false");
    o = SPM_OK;
    o.byte_fallback = 1;
    o.n_bytes = 255;
    build_spm(&w, &o);
    expect_error("tokenizer.bad.missing_bytes", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: trainer_spec.byte_fallback is true but only 255 of the 256 byte pieces <0x00>..<0xFF> exist");
    o = SPM_OK;
    o.byte_fallback = 1;
    o.bad_byte = "<0x4g>";
    build_spm(&w, &o);
    expect_error("tokenizer.bad.byte_form", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: pieces[8] '<0x4g>' is a BYTE piece; expected the form <0xXX>");
    o = SPM_OK;
    o.extra_dup = 1;
    build_spm(&w, &o);
    expect_error("tokenizer.bad.duplicate", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: piece 'a' appears twice (ids 4 and 8); pieces must be unique");
    w.n = 0;
    w_piece(&w, "<unk>", 0, 9);
    expect_error("tokenizer.bad.type", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: pieces[0] '<unk>': type 9 is not a SentencePiece type (1..6)");
    w.n = 0;
    w_piece(&w, "", 0, 2);
    expect_error("tokenizer.bad.empty_piece", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: pieces[0]: the piece string is empty or missing");
    w.n = 0;
    w_piece(&w, "<unk>", 0, 2);
    expect_error("tokenizer.bad.no_trainer", tok_load_memory(w.b, w.n, "bad.model"),
                 "bad.model: trainer_spec is missing (needed for the model type)");

    /* tokenizer.json */
    expect_error("tokenizer.bad.json_type", hf_json("WordPiece", NULL, NULL, NULL, NULL, NULL),
                 "bad.json: model.type is \"WordPiece\"; only \"BPE\" is supported");
    expect_error("tokenizer.bad.json_pre", hf_json(NULL, NULL, NULL, "{\"type\":\"Metaspace\"}", NULL, NULL),
                 "bad.json: pre_tokenizer is object (type \"Metaspace\"); only null is supported (the LLaMA layout)");
    expect_error("tokenizer.bad.json_norm", hf_json(NULL, NULL, NULL, NULL, "\"normalizer\":{\"type\":\"NFKC\"}", NULL),
                 "bad.json: normalizer (type \"NFKC\") is not the LLaMA layout; expected Sequence[Prepend(\"\xE2\x96\x81\"), "
                 "Replace(\" \", \"\xE2\x96\x81\")] (Metaspace and other layouts are not supported)");
    expect_error("tokenizer.bad.json_merge", hf_json(NULL, NULL, "[\"a b\",\"a c\"]", NULL, NULL, NULL),
                 "bad.json: model.merges[1]: \"c\" is not in model.vocab");
    expect_error("tokenizer.bad.json_merge_form", hf_json(NULL, NULL, "[\"a b\",\"ab\"]", NULL, NULL, NULL),
                 "bad.json: model.merges[1] \"ab\": expected two pieces separated by one space");
    expect_error("tokenizer.bad.json_merged", hf_json(NULL, NULL, "[\"b a\"]", NULL, NULL, NULL),
                 "bad.json: model.merges[0]: the merged piece \"ba\" is not in model.vocab");
    expect_error("tokenizer.bad.json_vocab", hf_json(NULL, "{\"<unk>\":0,\"a\":2}", "[]", NULL, NULL, NULL),
                 "bad.json: model.vocab[\"a\"] is not an id in [0, 2) (the vocabulary must use ids 0..n-1)");
    expect_error("tokenizer.bad.json_lstrip",
                 hf_json(NULL, NULL, NULL, NULL, NULL, "[{\"id\":0,\"content\":\"<unk>\",\"lstrip\":true}]"),
                 "bad.json: added_tokens[0] (\"<unk>\"): lstrip is true; only false is supported");
    expect_error("tokenizer.bad.json_added_id",
                 hf_json(NULL, NULL, NULL, NULL, NULL, "[{\"id\":9,\"content\":\"[SEG]\",\"special\":false}]"),
                 "bad.json: added_tokens[0] (\"[SEG]\"): id 9; expected 8 (added tokens outside model.vocab must "
                 "take the next ids in order)");
    expect_error("tokenizer.bad.json_added_text",
                 hf_json(NULL, NULL, NULL, NULL, NULL, "[{\"id\":4,\"content\":\"b\",\"special\":false}]"),
                 "bad.json: added_tokens[0]: id 4 is \"b\" but model.vocab has \"a\" at that id");
    tokenizer *t = tok_load_memory("{\"model\": ", 10, "bad.json");
    t_check(!t && !strncmp(ar_error(), "bad.json: line 1, column 11: ", 29), "tokenizer.bad.json_syntax", "\"%s\"", ar_error());
    tok_free(t);
    t = tok_load("tests/fixtures/does-not-exist.model");
    t_check(!t && !strcmp(ar_error(), "tests/fixtures/does-not-exist.model: cannot open: No such file or directory"),
            "tokenizer.bad.missing_file", "\"%s\"", ar_error());
}

/* A prefix of a real file must be refused unless it ends exactly where a
 * top-level field of the .model ends (protobuf cannot tell a shorter valid
 * message from a cut one; then it must still load and work). Every
 * single-byte corruption must load and work, or be refused with a message
 * (ASan in `make fuzz` does the rest). */
static int usable(const tokenizer *t) {
    int *ids = NULL, n = 0, ok;
    char *out = NULL;
    ok = tok_encode(t, "Hello world \xF0\x9F\x98\x80 [x]", 20, 0, 0, &ids, &n) == 0 && tok_decode(t, ids, n, &out, NULL) == 0;
    free(ids);
    free(out);
    return ok;
}

static void test_truncated(const char *name, const char *path, size_t step) {
    size_t len;
    char *buf = slurp(path, &len);
    char check[96];
    snprintf(check, sizeof check, "tokenizer.%s.prefixes", name);
    if (!buf) {
        t_fail(check, "cannot read %s", path);
        return;
    }
    char *boundary = calloc(len + 1, 1);   /* ends of top-level protobuf fields */
    if (buf[0] != '{') {
        pb_reader r = pb_reader_init(buf, len, buf);
        pb_field f;
        while (pb_next(&r, &f) > 0) boundary[r.p - (const uint8_t *)buf] = 1;
    }
    int refused = 0, tried = 0, good = 0;
    for (size_t n = 0; n < len; n += step, tried++) {
        tokenizer *t = tok_load_memory(buf, n, name);
        if (!t) {
            refused++;
            good += strncmp(ar_error(), name, strlen(name)) == 0;
        } else {
            good += boundary[n] && usable(t);
        }
        tok_free(t);
    }
    t_check(good == tried, check, "%d strict prefixes: %d refused with a message naming the file, %d end at a field "
            "boundary and load", tried, refused, tried - refused);
    int loaded = 0, clean = 0;
    tried = 0;
    for (size_t i = 0; i < len; i += step, tried++) {
        buf[i] ^= 0x5A;
        tokenizer *t = tok_load_memory(buf, len, name);
        if (t) {
            loaded++;
            clean += usable(t);
        } else {
            clean += ar_error()[0] != '\0';
        }
        tok_free(t);
        buf[i] ^= 0x5A;
    }
    snprintf(check, sizeof check, "tokenizer.%s.corrupted", name);
    t_check(clean == tried, check, "%d byte corruptions: %d still load and encode, %d refused with a message", tried,
            loaded, tried - loaded);
    free(boundary);
    free(buf);
}

static void test_invalid_utf8(void) {
    tokenizer *t = tok_load(FIX "tok_bpe.model");
    if (!t) {
        t_fail("tokenizer.invalid_utf8", "%s", ar_error());
        return;
    }
    /* libsentencepiece turns each malformed byte into U+FFFD */
    const char *bad = "\xff" "ab \xe4\xb8 c\xc0\xaf";
    const char *fixed = "\xEF\xBF\xBD" "ab \xEF\xBF\xBD\xEF\xBF\xBD c\xEF\xBF\xBD\xEF\xBF\xBD";
    int *a = NULL, *b = NULL, na = 0, nb = 0;
    tok_encode(t, bad, strlen(bad), 0, 0, &a, &na);
    tok_encode(t, fixed, strlen(fixed), 0, 0, &b, &nb);
    t_check(na > 0 && same_ids(a, na, b, nb), "tokenizer.invalid_utf8", "malformed bytes encode as U+FFFD (%d ids)", na);
    free(a);
    free(b);
    /* NUL bytes are text like any other */
    tok_encode(t, "a\0b", 3, 0, 0, &a, &na);
    char *out = NULL;
    size_t len = 0;
    tok_decode(t, a, na, &out, &len);
    t_check(len == 3 && !memcmp(out, "a\0b", 3), "tokenizer.nul_bytes", "\"a\\0b\" round-trips (%d ids)", na);
    free(a);
    free(out);
    int bad_id = tok_vocab_size(t);
    t_check(tok_decode(t, &bad_id, 1, &out, &len) < 0 && !strcmp(ar_error(), "tok_decode: id 512 at position 0 is out of range [0, 512)"),
            "tokenizer.decode_range", "\"%s\"", ar_error());
    t_check(tok_add_special(t, "") < 0 && tok_add_special(t, "\xff") < 0, "tokenizer.add_special_invalid",
            "empty and non-UTF-8 added tokens refused");
    tok_free(t);
}

/* s with control characters as \xNN, for one-line messages (static buffer). */
static const char *esc(const char *s) {
    static char buf[512];
    size_t k = 0;
    for (; s && *s && k + 5 < sizeof buf; s++) {
        unsigned char c = (unsigned char)*s;
        k += (size_t)(c < 0x20 ? snprintf(buf + k, sizeof buf - k, "\\x%02x", c) : snprintf(buf + k, sizeof buf - k, "%c", c));
    }
    buf[k] = '\0';
    return buf;
}

/* Runs `anyref tokenize` with the given arguments; returns its status, stdout in *out. */
static int run_cmd(int argc, char **argv, char **out, char **err) {
    size_t lo, le;
    FILE *fo = open_memstream(out, &lo), *fe = open_memstream(err, &le);
    int rc = tokenize_run(argc, argv, fo, fe);
    fclose(fo);
    fclose(fe);
    return rc;
}

static void test_command(void) {
    char *out = NULL, *err = NULL;
    char *a1[] = {"tokenize", "--tokenizer", FIX "tok_bpe.model", "--add-bos", "Hello world", "", NULL};
    int rc = run_cmd(6, a1, &out, &err);
    t_check(rc == 0 && !strcmp(out, "1 371 438 363 374 327 309\n1\n"), "tokenizer.cmd.encode", "rc %d: %s", rc, esc(out));
    free(out);
    free(err);
    char *a2[] = {"tokenize", "--tokenizer=" FIX "tok_bpe.json", "--special", "[SEG]", "It is [SEG].", NULL};
    rc = run_cmd(5, a2, &out, &err);
    t_check(rc == 0 && !strcmp(out, "371 77 375 371 337 371 512 349\n"), "tokenizer.cmd.special", "rc %d: %s", rc, esc(out));
    free(out);
    free(err);
    char *a3[] = {"tokenize", "--tokenizer", FIX "tok_bpe.model", "--decode", "--special", "[SEG]",
                  "1 371 77 375 371 337 371 512 349 2", "266,277, 363", NULL};
    rc = run_cmd(8, a3, &out, &err);
    t_check(rc == 0 && !strcmp(out, "It is [SEG] .\na hell\n"), "tokenizer.cmd.decode", "rc %d: %s", rc, esc(out));
    free(out);
    free(err);
    char *a4[] = {"tokenize", "--tokenizer", FIX "tok_bpe.model", "--decode", "1 x2", NULL};
    rc = run_cmd(5, a4, &out, &err);
    t_check(rc == 1 && !strcmp(err, "anyref tokenize: argument 4: 'x2' is not a token id\n"), "tokenizer.cmd.bad_id",
            "rc %d: %s", rc, esc(err));
    free(out);
    free(err);
    char *a5[] = {"tokenize", "Hello", NULL};
    rc = run_cmd(2, a5, &out, &err);
    t_check(rc == 2 && !strncmp(err, "anyref tokenize: --tokenizer FILE is required\nusage:", 52), "tokenizer.cmd.usage",
            "rc %d", rc);
    free(out);
    free(err);
    char *a6[] = {"tokenize", "--tokenizer", FIX "nope.model", "x", NULL};
    rc = run_cmd(4, a6, &out, &err);
    t_check(rc == 1 && !strcmp(err, "anyref tokenize: " FIX "nope.model: cannot open: No such file or directory\n"),
            "tokenizer.cmd.missing", "rc %d: %s", rc, esc(err));
    free(out);
    free(err);
}

/* Long texts are merged in chunks cut before '▁' (tokenizer.c, set_chunkable);
 * the whole-text path must give the same ids on a long text with everything
 * the case files hold, for both file kinds. */
static void test_chunks(const char *name, const char *model, const char *cases) {
    char check[96];
    snprintf(check, sizeof check, "tokenizer.%s.chunks", name);
    case_file *cf = malloc(sizeof *cf);
    tokenizer *t = tok_load(model);
    if (load_cases(cases, cf) < 0 || !t) {
        t_fail(check, "cannot load %s / %s", model, cases);
        free(cf);
        tok_free(t);
        return;
    }
    size_t n = 0;
    for (int i = 0; i < cf->ne; i++) n += cf->e[i].len;
    char *text = malloc(4 * n + 1);
    size_t k = 0;
    for (int rep = 0; rep < 4; rep++)
        for (int i = 0; i < cf->ne; i++) {
            int j = (cf->ne - 1 - i + rep * 11) % cf->ne;   /* a different order each time */
            memcpy(text + k, cf->e[j].text, cf->e[j].len);
            k += cf->e[j].len;
        }
    int *a = NULL, *b = NULL, na = 0, nb = 0, was = t->chunkable;
    tok_encode(t, text, k, 0, 0, &a, &na);
    t->chunkable = 0;
    tok_encode(t, text, k, 0, 0, &b, &nb);
    t_check(was && na > 1000 && same_ids(a, na, b, nb), check, "%zu bytes, %d ids: chunked %s whole-text merging",
            k, na, same_ids(a, na, b, nb) ? "==" : "!=");
    free(a);
    free(b);
    free(text);
    tok_free(t);
    free_cases(cf);
    free(cf);
}

/* Not a check (speed belongs to benchmarks): how long 1 MB takes here. */
static void report_speed(void) {
    const char *files[] = {FIX "tok_bpe.model", FIX "tok_bpe.json"};
    const char *unit = "Can you segment the zebra in this image? It is [SEG]. caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 42\n";
    size_t ul = strlen(unit), n = 0, cap = 1 << 20;
    char *text = malloc(cap + ul);
    while (n < cap) {
        memcpy(text + n, unit, ul);
        n += ul;
    }
    for (int f = 0; f < 2; f++) {
        tokenizer *t = tok_load(files[f]);
        if (!t) continue;
        tok_add_special(t, "[SEG]");
        int *ids = NULL, nid = 0;
        double t0 = ar_now();
        tok_encode(t, text, n, 1, 0, &ids, &nid);
        double t1 = ar_now();
        printf("# %s: encoded %.2f MB as one string into %d ids in %.3f s (%.1f MB/s)\n", files[f], n / 1e6, nid,
               t1 - t0, n / 1e6 / (t1 - t0));
        free(ids);
        tok_free(t);
    }
    free(text);
}

int main(void) {
    check_reference("bpe_model", FIX "tok_bpe.model", FIX "tok_cases_bpe_model.txt", "libsentencepiece");
    check_reference("bpe_json", FIX "tok_bpe.json", FIX "tok_cases_bpe_json.txt", "tokenizers");
    check_reference("rws_model", FIX "tok_rws.model", FIX "tok_cases_rws_model.txt", "libsentencepiece");
    /* a tokenizer that is not committed (LLaMA's): references written by
     * make_tokenizer_fixtures.py --external MODEL DIR */
    const char *ext = getenv("ANYREF_TOKENIZER_REF_DIR");
    if (ext) {
        char m[512], c[512];
        snprintf(m, sizeof m, "%s/tokenizer.model", ext);
        snprintf(c, sizeof c, "%s/tok_cases_model.txt", ext);
        check_reference("external_model", m, c, "libsentencepiece");
        snprintf(m, sizeof m, "%s/tokenizer.json", ext);
        snprintf(c, sizeof c, "%s/tok_cases_json.txt", ext);
        check_reference("external_json", m, c, "tokenizers");
        snprintf(c, sizeof c, "%s/tok_cases_model.txt", ext);
        test_chunks("external_json", m, c);
        snprintf(m, sizeof m, "%s/tokenizer.model", ext);
        test_chunks("external_model", m, c);
    } else {
        printf("# ANYREF_TOKENIZER_REF_DIR is not set: no external (e.g. LLaMA) tokenizer checked\n");
    }
    test_tiny_spm();
    test_tiny_hf();
    test_malformed();
    test_truncated("tok_bpe.model", FIX "tok_bpe.model", 1);
    test_truncated("tok_rws.model", FIX "tok_rws.model", 1);
    test_truncated("tok_bpe.json", FIX "tok_bpe.json", 13);
    test_chunks("bpe_model", FIX "tok_bpe.model", FIX "tok_cases_bpe_model.txt");
    test_chunks("bpe_json", FIX "tok_bpe.json", FIX "tok_cases_bpe_model.txt");
    test_invalid_utf8();
    test_command();
    report_speed();
    return t_exit_code();
}
