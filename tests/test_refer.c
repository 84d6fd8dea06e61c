/* tests/test_refer.c — the pickle reader (data/pickle.c) and the REFER refs
 * loader (data/refer.c) against fixtures written by Python's pickle
 * (tests/fixtures/refer, made by tests/ref/refer_ref.py):
 *   - value trees of every kind at protocols 0–5 and as Python 2 writes
 *     protocols 0 and 2, compared byte for byte in a canonical form;
 *   - hand-made opcode sequences (duplicate keys, DUP/POP/POP_MARK, text memo,
 *     sharing, trailing bytes, large dict lookups);
 *   - malformed files: the expected message for each, every truncation of
 *     every good file, and a sweep of byte changes (an error or a tree, never
 *     a crash);
 *   - REFER trees (refcoco unc as Python 2 protocol 2, refclef unc as
 *     Python 2 protocol 0, refcoco+ protocol 4 with broken refs, refcocog umd
 *     protocol 5 and google protocol 2, refclef berkeley protocol 0): every
 *     field of every ref against the JSON Python wrote, the skipped refs and
 *     their warnings, the splits against refer.py's getRefIds, image names
 *     and paths.
 * Depends on data/pickle.h, data/refer.h, core/json.h, tests/testlib.h.
 */
#include "core/error.h"
#include "core/json.h"
#include "data/pickle.h"
#include "data/refer.h"
#include "tests/testlib.h"

#include <fcntl.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/refer"

/* ---- helpers ------------------------------------------------------------------------------------ */

typedef struct { char *p; size_t n, cap; } buf;

static void b_put(buf *b, const void *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void b_fmt(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void b_fmt(buf *b, const char *fmt, ...) {
    char t[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t, sizeof t, fmt, ap);
    va_end(ap);
    b_put(b, t, (size_t)n);
}

/* The canonical form of tests/ref/refer_ref.py's canon(). */
static void canon(buf *b, const pk_value *v) {
    switch (v->type) {
    case PK_NONE: b_put(b, "N", 1); break;
    case PK_BOOL: b_put(b, v->b ? "T" : "F", 1); break;
    case PK_INT: b_fmt(b, "i%" PRId64, v->i); break;
    case PK_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &v->f, sizeof bits);
        b_fmt(b, "f%016" PRIx64, bits);
        break;
    }
    case PK_STR: case PK_BYTES:
        b_fmt(b, "%c%zu:", v->type == PK_STR ? 's' : 'b', v->len);
        b_put(b, v->s, v->len);
        break;
    case PK_LIST: case PK_TUPLE:
        b_put(b, v->type == PK_LIST ? "[" : "(", 1);
        for (size_t i = 0; i < v->n; i++) {
            if (i) b_put(b, ",", 1);
            canon(b, v->items[i]);
        }
        b_put(b, v->type == PK_LIST ? "]" : ")", 1);
        break;
    case PK_DICT:
        b_put(b, "{", 1);
        for (size_t i = 0; i < v->n; i++) {
            if (i) b_put(b, ",", 1);
            canon(b, v->keys[i]);
            b_put(b, ":", 1);
            canon(b, v->vals[i]);
        }
        b_put(b, "}", 1);
        break;
    case PK_GLOBAL: case PK_CALL: case PK_PERSID:   /* only in pk_parse_ex's permissive mode */
        b_put(b, "?", 1);
        break;
    }
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)sz + 1);
    if (!p || fread(p, 1, (size_t)sz, f) != (size_t)sz) { fclose(f); free(p); return NULL; }
    fclose(f);
    p[sz] = 0;
    *n = (size_t)sz;
    return p;
}

/* Canonical form of a parsed buffer, or NULL (error in ar_error). */
static char *parse_canon(const void *data, size_t n, const char *name, size_t *len) {
    pk_doc *d = pk_parse(data, n, name);
    if (!d) return NULL;
    buf b = {0};
    canon(&b, pk_root(d));
    pk_free(d);
    *len = b.n;
    return b.p;
}

/* stderr captured to a file while f runs */
static char *capture_stderr(void (*f)(void *), void *ctx) {
    char path[] = "/tmp/test_refer_stderr_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return strdup("");
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    f(ctx);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    size_t n = 0;
    char *s = (char *)read_all(path, &n);
    unlink(path);
    return s ? s : strdup("");
}

/* ---- values -------------------------------------------------------------------------------------- */

static void test_values(void) {
    const char *flavours[] = {"p0", "p1", "p2", "p3", "p4", "p5", "py2_p0", "py2_p2"};
    for (int i = 0; i < 8; i++) {
        char pp[256], cp[256];
        snprintf(pp, sizeof pp, FIX "/values_%s.p", flavours[i]);
        snprintf(cp, sizeof cp, FIX "/values_%s.canon", flavours[i]);
        size_t np = 0, nc = 0, ng = 0;
        unsigned char *p = read_all(pp, &np), *c = read_all(cp, &nc);
        if (!p || !c) { t_fail("values", "%s: fixture missing", pp); free(p); free(c); continue; }
        char *got = parse_canon(p, np, pp, &ng);
        if (!got) {
            t_fail("values", "%s: %s", flavours[i], ar_error());
        } else {
            size_t at = 0;
            while (at < ng && at < nc && got[at] == (char)c[at]) at++;
            int same = ng == nc && at == nc;
            if (same) t_ok("values", "%s (%zu-byte pickle): canonical form identical to Python's (%zu bytes)", flavours[i], np, nc);
            else t_fail("values", "%s: canonical form differs from Python's at byte %zu", flavours[i], at);
        }
        free(got);
        free(p);
        free(c);
    }
    /* protocols and spot checks of what Python 2 strings become */
    size_t n = 0;
    unsigned char *p = read_all(FIX "/values_py2_p2.p", &n);
    pk_doc *d = p ? pk_parse(p, n, "values_py2_p2.p") : NULL;
    if (d) {
        const pk_value *bs = pk_dict_get(pk_root(d), "bytestr");
        int ok = pk_protocol(d) == 2 && bs && bs->type == PK_LIST && bs->n == 6 &&
                 !strcmp(bs->items[2]->s, "caf\xc3\xa9 latin-1") && bs->items[4]->len == 7 &&
                 !memcmp(bs->items[4]->s, "\x00\x01\x7f\xc2\x80\xc3\xbf", 7);
        t_check(ok, "values_py2_latin1", "protocol %d; Python 2 byte strings read as latin-1 (\\xe9 -> U+00E9, \\xff -> U+00FF)",
                pk_protocol(d));
        const pk_value *big = pk_dict_get(pk_root(d), "big");
        int all = big && big->n == 30;
        for (int k = 0; all && k < 30; k++) {
            char key[8];
            snprintf(key, sizeof key, "k%02d", k);
            const pk_value *v = pk_dict_get(big, key);
            all = v && v->type == PK_INT && v->i == k;
        }
        t_check(all && !pk_dict_get(big, "k30") && !pk_dict_get(big, "k"), "dict_lookup", "30-key dict: every key found, absent keys not");
    } else {
        t_fail("values_py2_latin1", "%s", ar_error());
    }
    pk_free(d);
    free(p);
    p = read_all(FIX "/values_p4.p", &n);
    d = p ? pk_parse(p, n, "values_p4.p") : NULL;
    if (d) {
        const pk_value *sh = pk_dict_get(pk_root(d), "shared"), *ik = pk_dict_get(pk_root(d), "intkeys");
        t_check(sh && sh->n == 2 && sh->items[0] == sh->items[1] && pk_protocol(d) == 4, "memo_shared",
                "a list pickled twice is one shared node (memo), protocol 4");
        const pk_value *a = pk_dict_get_int(ik, -2), *bg = pk_dict_get_int(ik, (int64_t)1 << 40);
        t_check(a && !strcmp(a->s, "minus two") && bg && !strcmp(bg->s, "big") && !pk_dict_get_int(ik, 3) &&
                    !pk_dict_get(ik, "1"), "dict_int_keys", "int keys looked up by value; str \"1\" is not int 1");
    } else {
        t_fail("memo_shared", "%s", ar_error());
    }
    pk_free(d);
    free(p);
}

/* ---- hand-made opcode sequences -------------------------------------------------------------------- */

#define PKS(lit) lit, sizeof(lit) - 1

static void test_handmade(void) {
    static const struct { const char *name; const char *pk; size_t n; const char *canon; } cases[] = {
        {"dup_keys", PKS("\x80\x02}(K\x01K\x02K\x05K\x06K\x01K\x03u."), "{i1:i3,i5:i6}"},
        {"dup_keys_text", PKS("(S'a'\nI1\nS'b'\nI2\nS'a'\nI3\nd."), "{s1:a:i3,s1:b:i2}"},
        {"dup_pop", PKS("\x80\x02K\x07" "2" "0" "\x85."), "(i7)"},
        {"pop_mark", PKS("\x80\x02K\x01(K\x02K\x03" "1" "\x85."), "(i1)"},
        {"pop_to_mark", PKS("\x80\x02K\x01(0\x85."), "(i1)"},
        {"text_memo", PKS("(lp0\nS'x'\np1\nag1\na."), "[s1:x,s1:x]"},
        {"trailing_bytes", PKS("\x80\x02N.garbage\xff"), "N"},
        {"no_proto", PKS("K\x2a."), "i42"},
        {"int_bool", PKS("(I01\nI00\nI1\nI0\nI-0\nI+1\nI-1\nI+7\nl."), "[T,F,i1,i0,F,T,i-1,i7]"},
        {"long_text", PKS("(L12L\nL-9223372036854775808L\nL5\nl."), "[i12,i-9223372036854775808,i5]"},
        {"long1", PKS("\x80\x02(\x8a\x00\x8a\x01\xff\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\x00l."),
         "[i0,i-1,i9223372036854775807]"},
        {"long4", PKS("\x80\x02\x8b\x02\x00\x00\x00\x00\x80."), "i-32768"},
        {"string_escapes", PKS("S'a\\n\\t\\x41\\101\\q\\\\\\''\n."), "s9:a\n\tAA\\q\\'"},
        {"unicode_escapes", PKS("V\\u00e9\\U0001f436\\\\u0041\\ud83d\\ude00x\n."),
         "s18:\xc3\xa9\xf0\x9f\x90\xb6\\\\u0041\xf0\x9f\x98\x80x"},
        {"frame_ok", PKS("\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00N."), "N"},
        {"memoize", PKS("\x80\x04\x8c\x01x\x94\x8c\x01y\x94(h\x00h\x01h\x00l."), "[s1:x,s1:y,s1:x]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = cases[i].n, len = 0;
        pk_doc *d = pk_parse(cases[i].pk, n, cases[i].name);
        if (!d) { t_fail("handmade", "%s: %s", cases[i].name, ar_error()); continue; }
        buf b = {0};
        canon(&b, pk_root(d));
        len = b.n;
        int ok = len == strlen(cases[i].canon) && !memcmp(b.p, cases[i].canon, len);
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)b.p[k] < 0x20) b.p[k] = '?';   /* printable detail */
        t_check(ok, "handmade", "%s: %s", cases[i].name, b.p);
        free(b.p);
        pk_free(d);
    }
}

/* ---- malformed files ---------------------------------------------------------------------------------- */

static void test_bad_cases(void) {
    size_t n = 0;
    char *list = (char *)read_all(FIX "/bad/cases.txt", &n);
    if (!list) { t_fail("bad_cases", "missing " FIX "/bad/cases.txt"); return; }
    int total = 0, good = 0;
    for (char *line = strtok(list, "\n"); line; line = strtok(NULL, "\n")) {
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        const char *file = line, *want = tab + 1;
        char path[512];
        snprintf(path, sizeof path, FIX "/bad/%s", file);
        total++;
        if (!strncmp(file, "refs_", 5)) {
            refer_set *s = refer_load_file(path, "refcoco", "unc");
            int ok = !s && strstr(ar_error(), want) && strstr(ar_error(), path);
            good += ok;
            if (!ok) t_fail("bad_cases", "%s: %s", file, s ? "loaded" : ar_error());
            refer_free(s);
            continue;
        }
        ar_error_clear();
        pk_doc *d = pk_load_file(path);
        int ok = !strcmp(want, "OK") ? d != NULL : (!d && strstr(ar_error(), want) && strstr(ar_error(), path));
        good += ok;
        if (!ok) t_fail("bad_cases", "%s: want \"%s\", got %s", file, want, d ? "a tree" : ar_error());
        pk_free(d);
    }
    t_check(total > 40 && good == total, "bad_cases", "%d/%d malformed pickles refused with the expected message naming the file",
            good, total);
    /* one full message, for the record */
    pk_doc *d = pk_load_file(FIX "/bad/global_object.p");
    printf("     e.g. %s\n", d ? "(parsed!)" : ar_error());
    pk_free(d);
    free(list);
}

static const char *good_files[] = {
    FIX "/values_p0.p", FIX "/values_p2.p", FIX "/values_p3.p", FIX "/values_p5.p",
    FIX "/values_py2_p0.p", FIX "/values_py2_p2.p",
    FIX "/root/refcoco/refs(unc).p", FIX "/root/refclef/refs(unc).p", FIX "/root/refcoco+/refs(unc).p",
    FIX "/root/refcocog/refs(umd).p",
};
#define N_GOOD (sizeof good_files / sizeof good_files[0])

static void test_truncations(void) {
    size_t tried = 0, refused = 0, named = 0;
    for (size_t f = 0; f < N_GOOD; f++) {
        size_t n = 0;
        unsigned char *p = read_all(good_files[f], &n);
        if (!p) { t_fail("truncations", "%s missing", good_files[f]); continue; }
        for (size_t cut = 0; cut < n; cut++) {
            /* an exactly sized copy, so a read past the end shows under ASan/valgrind */
            unsigned char *q = malloc(cut ? cut : 1);
            memcpy(q, p, cut);
            pk_doc *d = pk_parse(q, cut, "cut.p");
            tried++;
            if (!d) {
                refused++;
                named += strstr(ar_error(), "cut.p: ") == ar_error() && strstr(ar_error(), "truncated") != NULL;
            }
            pk_free(d);
            free(q);
        }
        free(p);
    }
    t_check(tried > 20000 && refused == tried && named == tried, "truncations",
            "%zu prefixes of %zu files: %zu refused, %zu with \"<file>: ... truncated\"", tried, (size_t)N_GOOD, refused, named);
}

static size_t walk(const pk_value *v, int depth, size_t *budget) {
    if (!*budget) return 0;
    (*budget)--;
    if (depth > PK_MAX_DEPTH) return 1;
    size_t bad = 0;
    if ((v->type == PK_STR || v->type == PK_BYTES) && (!v->s || v->s[v->len] != 0)) bad++;
    if (v->type == PK_LIST || v->type == PK_TUPLE)
        for (size_t i = 0; i < v->n; i++) bad += walk(v->items[i], depth + 1, budget);
    if (v->type == PK_DICT)
        for (size_t i = 0; i < v->n; i++) {
            if (v->keys[i]->type != PK_STR && v->keys[i]->type != PK_INT) bad++;
            bad += walk(v->vals[i], depth + 1, budget);
        }
    return bad;
}

static void byte_flips(void *unused);
static void test_byte_flips(void) {
    /* refs that a change breaks are warned about: keep those off the terminal */
    free(capture_stderr(byte_flips, NULL));
}

static void byte_flips(void *unused) {
    static const unsigned char xors[] = {0x01, 0x80, 0xff, 0x20};
    size_t tried = 0, parsed = 0, broken = 0, refs_ok = 0;
    for (size_t f = 0; f < N_GOOD; f++) {
        size_t n = 0;
        unsigned char *p = read_all(good_files[f], &n);
        if (!p) continue;
        unsigned char *q = malloc(n);
        for (size_t at = 0; at < n; at++)
            for (size_t k = 0; k < sizeof xors; k++) {
                memcpy(q, p, n);
                q[at] ^= xors[k];
                tried++;
                pk_doc *d = pk_parse(q, n, "flip.p");
                if (d) {
                    parsed++;
                    size_t budget = 1u << 20;
                    size_t w = walk(pk_root(d), 1, &budget);
                    if (w && !broken) printf("     first bad tree at byte %zu of %s\n", at, good_files[f]);
                    broken += w;
                    pk_free(d);
                    refer_set *s = refer_from_pickle(q, n, "flip.p", "refcoco");
                    if (s) {
                        refs_ok++;
                        for (size_t r = 0; r < s->n_refs; r++)
                            for (int j = 0; j < s->refs[r].n_sentences; j++)
                                broken += !s->refs[r].sentences[j].sent;
                    }
                    refer_free(s);
                } else if (strstr(ar_error(), "flip.p: ") != ar_error()) {
                    if (!broken) printf("     first bad message: %s at byte %zu of %s\n", ar_error(), at, good_files[f]);
                    broken++;
                }
            }
        free(q);
        free(p);
    }
    t_check(broken == 0 && tried > 50000, "byte_flips",
            "%zu one-byte changes: %zu still parse (%zu as refs), every other one an error naming the file, no bad tree",
            tried, parsed, refs_ok);
}

/* ---- REFER -------------------------------------------------------------------------------------------- */

static int same_str(const char *a, const json_value *b) {
    if (!b) return a == NULL;
    return a && b->type == JSON_STRING && strlen(a) == b->len && !memcmp(a, b->str, b->len);
}

/* Compares every field of the loaded set with the JSON Python wrote. Returns the number of mismatches. */
static int compare_refs(const refer_set *s, const json_value *want, char *why, size_t nwhy) {
    const json_value *refs = json_get(want, "refs"), *skipped = json_get(want, "skipped");
    int64_t n_total = json_get(want, "n_total")->integer;
    int bad = 0;
    if ((int64_t)s->n_total != n_total || s->n_refs != refs->n || s->n_skipped != skipped->n) {
        snprintf(why, nwhy, "counts: %zu/%zu/%zu", s->n_total, s->n_refs, s->n_skipped);
        return 1;
    }
    for (size_t i = 0; i < refs->n; i++) {
        const refer_ref *r = &s->refs[i];
        const json_value *w = &refs->items[i];
        /* the position in the file: skip the skipped indices */
        size_t idx = i;
        for (size_t k = 0; k < skipped->n; k++)
            if ((size_t)skipped->items[k].integer <= idx) idx++;
        int ok = r->index == idx && r->ref_id == json_get(w, "ref_id")->integer &&
                 r->ann_id == json_get(w, "ann_id")->integer && r->image_id == json_get(w, "image_id")->integer &&
                 r->category_id == json_get(w, "category_id")->integer && same_str(r->split, json_get(w, "split")) &&
                 same_str(r->file_name, json_get(w, "file_name"));
        const json_value *ss = json_get(w, "sentences");
        ok = ok && (size_t)r->n_sentences == ss->n;
        for (size_t j = 0; ok && j < ss->n; j++) {
            const refer_sentence *q = &r->sentences[j];
            const json_value *t = &ss->items[j], *tk = json_get(t, "tokens");
            ok = same_str(q->sent, json_get(t, "sent")) && same_str(q->raw, json_get(t, "raw")) &&
                 q->sent_id == json_get(t, "sent_id")->integer && (size_t)q->n_tokens == tk->n;
            for (size_t k = 0; ok && k < tk->n; k++) ok = same_str(q->tokens[k], &tk->items[k]);
        }
        if (!ok) {
            if (!bad) snprintf(why, nwhy, "ref %zu (ref_id %" PRId64 ") differs", i, r->ref_id);
            bad++;
        }
    }
    return bad;
}

typedef struct { const char *root, *dataset, *split_by; refer_set *out; } load_ctx;
static void do_load(void *c) {
    load_ctx *l = c;
    l->out = refer_load(l->root, l->dataset, l->split_by);
}

static void test_refer_files(void) {
    static const struct { const char *dataset, *split_by, *flavour; } files[] = {
        {"refcoco", "unc", "Python 2 protocol 2"},  {"refclef", "unc", "Python 2 protocol 0"},
        {"refcoco+", "unc", "protocol 4, 5 broken"}, {"refcocog", "umd", "protocol 5"},
        {"refcocog", "google", "protocol 2"},       {"refclef", "berkeley", "protocol 0"},
    };
    static const char *splits[] = {"train", "val", "test", "testA", "testB", "testC", "testAB", "testBC", "testAC"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char jpath[512];
        snprintf(jpath, sizeof jpath, FIX "/root/%s/refs(%s).json", files[f].dataset, files[f].split_by);
        json_doc *jd = json_parse_file(jpath);
        load_ctx lc = {FIX "/root", files[f].dataset, files[f].split_by, NULL};
        char *err = capture_stderr(do_load, &lc);
        refer_set *s = lc.out;
        if (!jd || !s) {
            t_fail("refer_load", "%s(%s): %s", files[f].dataset, files[f].split_by, ar_error());
            json_free(jd); refer_free(s); free(err);
            continue;
        }
        char why[256] = "";
        int bad = compare_refs(s, json_root(jd), why, sizeof why);
        size_t n_sent = 0, n_tok = 0, n_nonascii = 0;
        for (size_t i = 0; i < s->n_refs; i++)
            for (int j = 0; j < s->refs[i].n_sentences; j++) {
                n_sent++;
                n_tok += (size_t)s->refs[i].sentences[j].n_tokens;
                for (const char *c = s->refs[i].sentences[j].sent; *c; c++)
                    if ((unsigned char)*c >= 0x80) { n_nonascii++; break; }
            }
        t_check(!bad && n_nonascii > 0, "refer_load", "%s refs(%s).p (%s): %zu refs, %zu skipped, %zu sentences "
                "(%zu non-ASCII), %zu tokens: every field as Python reads it%s%s",
                files[f].dataset, files[f].split_by, files[f].flavour, s->n_refs, s->n_skipped, n_sent, n_nonascii,
                n_tok, bad ? "; " : "", why);
        /* splits against refer.py's getRefIds */
        int split_bad = 0;
        const json_value *ws = json_get(json_root(jd), "splits");
        for (size_t k = 0; k < sizeof splits / sizeof splits[0]; k++) {
            size_t *idx = NULL;
            long m = refer_split(s, splits[k], &idx);
            const json_value *want = json_get(ws, splits[k]);
            if (m < 0 || !want || (size_t)m != want->n) split_bad++;
            for (long i = 0; !split_bad && i < m; i++) split_bad += s->refs[idx[i]].ref_id != want->items[i].integer;
            free(idx);
        }
        t_check(!split_bad, "refer_split", "%s(%s): train/val/test/testA/testB/testC/testAB/testBC/testAC as getRefIds",
                files[f].dataset, files[f].split_by);
        if (!strcmp(files[f].dataset, "refcoco+")) {
            static const char *want[] = {
                "ref 3 skipped: ann_id: missing", "ref 7 skipped: sentences: empty",
                "ref 9 skipped: sentences[0].tokens[1]: expected str, found int",
                "ref 12 skipped: expected a dict, found str", "ref 13 skipped: image_id: expected int, found bool"};
            int all = 1;
            for (int k = 0; k < 5; k++) all &= strstr(err, want[k]) != NULL;
            all &= strstr(err, "refs(unc).p: ref") != NULL;
            t_check(all && s->n_skipped == 5, "refer_warnings", "5 broken refs skipped, each warned with its index and field");
            printf("     e.g. %.*s", (int)(strchr(err, '\n') ? strchr(err, '\n') - err + 1 : 0), err);
        } else {
            t_check(!*err, "refer_no_warnings", "%s(%s): nothing warned", files[f].dataset, files[f].split_by);
        }
        free(err);
        refer_free(s);
        json_free(jd);
    }
}

static void test_refer_paths(void) {
    refer_set *coco = refer_load(FIX "/root", "refcoco", NULL), *clef = refer_load(FIX "/root", "refclef", "unc");
    refer_set *cocog = refer_load(FIX "/root", "refcocog", NULL);
    if (!coco || !clef || !cocog) {
        t_fail("refer_paths", "%s", ar_error());
        refer_free(coco); refer_free(clef); refer_free(cocog);
        return;
    }
    t_check(!strcmp(coco->split_by, "unc") && !strcmp(cocog->split_by, "umd") && cocog->dataset == REFER_REFCOCOG,
            "refer_default_split_by", "refcoco -> unc, refcocog -> umd (LISA / AnyRef)");
    char a[512], b[512];
    int agree = 0;
    for (size_t i = 0; i < coco->n_refs; i++) {
        const refer_ref *r = &coco->refs[i];
        if (refer_image_name(coco, r, a, sizeof a) > 0 && refer_strip_suffix(r->file_name, b, sizeof b) > 0 && !strcmp(a, b))
            agree++;
    }
    t_check(agree == (int)coco->n_refs, "refer_image_name", "refcoco: COCO_train2014_<id:012>.jpg equals file_name minus "
            "its _<n> suffix for all %d refs", agree);

    refer_ref r = coco->refs[0];
    r.image_id = 581857;
    int ok = refer_image_path(coco, &r, "/d", REFER_IMAGES_REFER, a, sizeof a) > 0 &&
             !strcmp(a, "/d/images/mscoco/images/train2014/COCO_train2014_000000581857.jpg") &&
             refer_image_path(coco, &r, "/d", REFER_IMAGES_COCO2017, b, sizeof b) > 0 &&
             !strcmp(b, "/d/coco/train2017/000000581857.jpg");
    t_check(ok, "refer_image_path_coco", "%s | %s", a, b);
    static const struct { int64_t id; const char *refer, *anyref; } clefs[] = {
        {7, "/d/images/saiapr_tc-12/00/images/7.jpg", "/d/saiapr_tc-12/00/images/7.jpg"},
        {999, "/d/images/saiapr_tc-12/00/images/999.jpg", "/d/saiapr_tc-12/00/images/999.jpg"},
        {1000, "/d/images/saiapr_tc-12/01/images/1000.jpg", "/d/saiapr_tc-12/01/images/1000.jpg"},
        {25092, "/d/images/saiapr_tc-12/25/images/25092.jpg", "/d/saiapr_tc-12/25/images/25092.jpg"},
    };
    int nclef = 0;
    for (int k = 0; k < 4; k++) {
        refer_ref c = clef->refs[0];
        c.image_id = clefs[k].id;
        nclef += refer_image_path(clef, &c, "/d", REFER_IMAGES_REFER, a, sizeof a) > 0 && !strcmp(a, clefs[k].refer) &&
                 refer_image_path(clef, &c, "/d", REFER_IMAGES_COCO2017, b, sizeof b) > 0 && !strcmp(b, clefs[k].anyref) &&
                 refer_image_name(clef, &c, b, sizeof b) > 0 && atoll(b) == clefs[k].id && strstr(b, ".jpg");
    }
    t_check(nclef == 4, "refer_image_path_clef", "saiapr_tc-12/<id/1000:02>/images/<id>.jpg for ids 7, 999, 1000, 25092");
    r.image_id = -5;
    int e1 = refer_image_path(coco, &r, "/d", REFER_IMAGES_REFER, a, sizeof a) < 0 && strstr(ar_error(), "negative image_id");
    r.image_id = 9;
    int e2 = refer_image_path(coco, &r, "/d", REFER_IMAGES_REFER, a, 20) < 0 && strstr(ar_error(), "buffer");
    int e3 = refer_strip_suffix("nounderscore.jpg", a, sizeof a) < 0;
    int e4 = refer_strip_suffix("COCO_train2014_000000000009_3.jpg", a, sizeof a) > 0 &&
             !strcmp(a, "COCO_train2014_000000000009.jpg");
    t_check(e1 && e2 && e3 && e4, "refer_path_errors", "negative id, small buffer, name without suffix refused; suffix stripped");
    refer_free(coco);
    refer_free(clef);
    refer_free(cocog);
}

static void quiet_many(void *c) {
    /* 30 refs that are not dicts */
    static unsigned char pk[40];
    size_t n = 0;
    pk[n++] = 0x80; pk[n++] = 2; pk[n++] = ']'; pk[n++] = '(';
    for (int i = 0; i < 30; i++) pk[n++] = 'N';
    pk[n++] = 'e'; pk[n++] = '.';
    *(refer_set **)c = refer_from_pickle(pk, n, "many.p", "refcocog");
}

static void test_refer_errors(void) {
    refer_set *s = refer_load(FIX "/root", "refcoco", "nosuch");
    t_check(!s && strstr(ar_error(), "refs(nosuch).p") && strstr(ar_error(), "cannot open"), "refer_missing_file", "%s", ar_error());
    refer_free(s);
    s = refer_load(FIX "/root", "refcocox", "unc");
    t_check(!s && strstr(ar_error(), "unknown REFER data set \"refcocox\""), "refer_unknown_dataset", "%s", ar_error());
    s = refer_load(FIX "/root", "refcoco", "../x");
    t_check(!s && strstr(ar_error(), "invalid REFER splitBy"), "refer_bad_split_by", "%s", ar_error());
    refer_set *many = NULL;
    char *err = capture_stderr(quiet_many, &many);
    int lines = 0;
    for (char *c = err; *c; c++) lines += *c == '\n';
    t_check(many && many->n_refs == 0 && many->n_skipped == 30 && lines == REFER_MAX_WARNINGS + 1 &&
                strstr(err, "30 refs skipped in all"), "refer_warning_cap", "30 bad refs: %d warning lines, a summary",
            lines);
    refer_free(many);
    free(err);
    size_t *idx = NULL;
    s = refer_load(FIX "/root", "refcoco", "unc");
    long m = s ? refer_split(s, "trainval", &idx) : 0;
    t_check(s && m < 0 && !idx && strstr(ar_error(), "unknown REFER split \"trainval\""), "refer_unknown_split", "%s", ar_error());
    refer_free(s);
}

int main(void) {
    test_values();
    test_handmade();
    test_bad_cases();
    test_truncations();
    test_byte_flips();
    test_refer_files();
    test_refer_paths();
    test_refer_errors();
    return t_exit_code();
}
