/* tests/test_conversation.c — conversation templates and LLaVA's supervised
 * tokenization (data/conversation.h), `anyref prepare` (data/prepare_cmd.h).
 *
 *   - the prompt strings of both templates against hard-coded text;
 *   - input ids, labels, truncation / mismatch flags and LLaVA's two counts
 *     of every sample, for five cases (two tokenizer fixtures, both
 *     templates, whitespace stripping on and off, a placeholder), exactly
 *     against tests/fixtures/conversations_expected.json, written by
 *     tests/ref/make_conversation_fixtures.py (an independent Python
 *     reimplementation of preprocess_v1 over sentencepiece);
 *   - the broken samples: counts per reason and the exact messages;
 *   - the HDF5 output read back with the token dataset reader, refusals;
 *   - the command line: its counts, its file, its usage errors.
 * Run from the repository root. */
#include "tests/testlib.h"

#include "core/error.h"
#include "core/json.h"
#include "data/conversation.h"
#include "data/prepare_cmd.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"

#include <hdf5.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/"
#define INPUT FIX "conversations.json"

static char g_tmpdir[256];

static const char *LLAVA_SYSTEM =
    "You are LLaVA, a large language and vision assistant trained by UW Madison WAIV Lab.You are able to "
    "understand the visual content that the user provides, and assist the user with a variety of tasks using "
    "natural language.Follow the instructions carefully and explain your answers in detail.";
static const char *VICUNA_SYSTEM =
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.";

/* ------------------------------------------------------------------ prompts */
static void test_prompts(void) {
    const conv_template *l = conv_template_find("llava_v1"), *v = conv_template_find("vicuna_v1_1");
    t_check(l && v, "template.find", "llava_v1 and vicuna_v1_1");
    if (!l || !v) return;
    t_check(!conv_template_find("llava_v2") && strstr(ar_error(), "unknown conversation template 'llava_v2'") &&
                strstr(ar_error(), "llava_v1, vicuna_v1_1"),
            "template.unknown", "%s", ar_error());
    t_check(!strcmp(l->system, LLAVA_SYSTEM) && !strcmp(v->system, VICUNA_SYSTEM) && !strcmp(l->roles[0], "USER") &&
                !strcmp(l->roles[1], "ASSISTANT") && !strcmp(l->sep, " ") && !strcmp(l->sep2, "</s>") &&
                !strcmp(v->sep, " ") && !strcmp(v->sep2, "</s>"),
            "template.fields", "system, roles, separators");

    struct {
        const conv_template *t;
        int n;
        const char *msgs[6];
        const char *tail;   /* expected prompt minus the system prompt */
    } cases[] = {
        {l, 2, {"What is it?", "A dog."}, " USER: What is it? ASSISTANT: A dog.</s>"},
        {v, 2, {"What is it?", "A dog."}, " USER: What is it? ASSISTANT: A dog.</s>"},
        {l, 4, {"Hi", "Hello", "Segment it.", NULL}, " USER: Hi ASSISTANT: Hello</s>USER: Segment it. ASSISTANT:"},
        {v, 3, {"Hi", "", "Again"}, " USER: Hi ASSISTANT:USER: Again "},
        {l, 0, {NULL}, " "},
        {l, 1, {""}, " USER:"},
        {v, 6, {"a", "b", "c", "d", "e", "f"}, " USER: a ASSISTANT: b</s>USER: c ASSISTANT: d</s>USER: e ASSISTANT: f</s>"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t len = 0;
        char *p = conv_prompt(cases[k].t, cases[k].msgs, NULL, cases[k].n, &len);
        char want[1024];
        snprintf(want, sizeof want, "%s%s", cases[k].t->system, cases[k].tail);
        t_check(p && !strcmp(p, want) && len == strlen(want), "prompt.string", "%s case %zu: '%s'",
                cases[k].t->name, k, p ? p + strlen(cases[k].t->system) : "(null)");
        free(p);
    }
    /* explicit lengths: messages may hold NUL bytes */
    const char *m[2] = {"a\0b", "c"};
    size_t lens[2] = {3, 1}, len = 0;
    char *p = conv_prompt(v, m, lens, 2, &len);
    size_t sl = strlen(VICUNA_SYSTEM);
    t_check(p && len == sl + 27 && !memcmp(p + sl, " USER: a\0b ASSISTANT: c</s>", 27), "prompt.lengths",
            "len %zu", len);
    free(p);
}

/* ------------------------------------------------------------------ encoder */
static void test_encoder(void) {
    tokenizer *tok = tok_load(FIX "tok_bpe.model");
    if (!t_check(tok != NULL, "encoder.load", "%s", tok ? "" : ar_error())) return;
    t_check(!conv_encoder_new(tok, "llava_v1", 1) && strstr(ar_error(), "max_len must be at least 2"),
            "encoder.max_len", "%s", ar_error());
    t_check(!conv_encoder_new(tok, "nope", 10) && strstr(ar_error(), "unknown conversation template 'nope'"),
            "encoder.template", "%s", ar_error());
    conv_encoder *e = conv_encoder_new(tok, "llava_v1", 64);
    int seg = conv_encoder_add_token(e, "[SEG]", 1);
    int im = conv_encoder_add_token(e, "<im_start>", 0);
    t_check(seg == 512 && im == 513 && tok_vocab_size(tok) == 514 && conv_encoder_add_token(e, "[SEG]", 1) == 512,
            "encoder.add_token", "ids %d %d, vocab %d", seg, im, tok_vocab_size(tok));
    t_check(conv_encoder_add_placeholder(e, "<image>") == -1 && conv_encoder_add_placeholder(e, "<audio>") == -2 &&
                conv_encoder_add_placeholder(e, "<image>") == -1 && conv_encoder_add_placeholder(e, "") == 0 &&
                conv_encoder_add_placeholder(e, "[SEG]") == 0 && conv_encoder_add_token(e, "<image>", 1) < 0,
            "encoder.placeholder", "ids -1, -2; refusals");

    /* strip = 1: Python's whitespace (here U+3000, U+00A0, tab, newline) goes on both sides */
    int *a = NULL, *b = NULL, na = 0, nb = 0;
    conv_encode(e, "x\xe3\x80\x80\t[SEG]\xc2\xa0\ny", strlen("x\xe3\x80\x80\t[SEG]\xc2\xa0\ny"), 0, &a, &na);
    conv_encode(e, "x[SEG]y", 7, 0, &b, &nb);
    t_check(na == nb && na > 0 && !memcmp(a, b, (size_t)na * sizeof *a), "encoder.strip_unicode", "%d vs %d ids",
            na, nb);
    free(a);
    free(b);
    /* strip = 0: the spaces stay ("x " ends in a lone '▁' piece) */
    conv_encode(e, "x <im_start> y", 14, 0, &a, &na);
    conv_encode(e, "x<im_start>y", 12, 0, &b, &nb);
    t_check(na > nb, "encoder.no_strip", "%d vs %d ids", na, nb);
    free(a);
    free(b);
    /* "</s>" and "<s>" in text are the special ids; placeholders are split first and never strip */
    conv_encode(e, "</s><s><unk>", 12, 1, &a, &na);
    t_check(na == 4 && a[0] == 1 && a[1] == 2 && a[2] == 1 && a[3] == 0, "encoder.specials", "%d ids", na);
    free(a);
    conv_encode(e, "<image>[SEG]<audio>", 19, 1, &a, &na);
    t_check(na == 4 && a[0] == 1 && a[1] == -1 && a[2] == 512 && a[3] == -2, "encoder.placeholder_ids", "%d ids",
            na);
    free(a);
    /* many tokens in one chunk (the segment list grows): whitespace between them all goes */
    char many[400] = "";
    for (int k = 0; k < 50; k++) strcat(many, k % 2 ? "[SEG]\t" : "[SEG] ");
    strcat(many, "x");
    conv_encode(e, many, strlen(many), 0, &a, &na);
    conv_encode(e, "x", 1, 0, &b, &nb);
    int all_seg = na == 50 + nb;
    for (int k = 0; all_seg && k < 50; k++) all_seg = a[k] == 512;
    t_check(all_seg && !memcmp(a + 50, b, (size_t)nb * sizeof *b), "encoder.many_tokens", "%d ids", na);
    free(a);
    free(b);
    conv_encode(e, "", 0, 0, &a, &na);
    t_check(a != NULL && na == 0, "encoder.empty", "%d ids", na);
    free(a);

    /* conv_tokenize: the last piece after the final "</s>" is empty; a placeholder in
     * the answer is never learned */
    const char *m[2] = {"Look <image>", "It is <image> [SEG]."};
    conv_sample s;
    int rc = conv_tokenize(e, m, NULL, 2, &s);
    int ph_learned = 0, ph = 0;
    for (int k = 0; rc == 0 && k < s.n; k++) {
        ph += s.ids[k] < 0;
        ph_learned += s.ids[k] < 0 && s.labels[k] != CONV_IGNORE;
    }
    t_check(rc == 0 && s.n == 64 && s.truncated && ph == 0, "tokenize.truncated_system", "n %d full %d", s.n,
            s.full_len);
    conv_sample_free(&s);
    conv_encoder_free(e);

    e = conv_encoder_new(tok, "llava_v1", 4096);
    conv_encoder_add_placeholder(e, "<image>");
    conv_encoder_add_token(e, "[SEG]", 1);
    rc = conv_tokenize(e, m, NULL, 2, &s);
    ph = ph_learned = 0;
    for (int k = 0; rc == 0 && k < s.n; k++) {
        ph += s.ids[k] < 0;
        ph_learned += s.ids[k] < 0 && s.labels[k] != CONV_IGNORE;
    }
    t_check(rc == 0 && !s.truncated && !s.mismatch && ph == 2 && ph_learned == 0 && s.supervised > 0 &&
                s.labels[s.n - 1] == 2 && s.cur_len == s.n && s.total_len == s.n,
            "tokenize.placeholder_labels", "n %d placeholders %d learned %d supervised %d", s.n, ph, ph_learned,
            s.supervised);
    conv_sample_free(&s);
    conv_encoder_free(e);
    tok_free(tok);
}

/* ------------------------------------------------------------------ fixture cases */
static int ints_equal(const json_value *arr, const int *v, int n, int *first_diff) {
    *first_diff = -1;
    if (!arr || arr->type != JSON_ARRAY || (int)arr->n != n) return 0;
    for (int i = 0; i < n; i++)
        if (arr->items[i].integer != v[i]) {
            *first_diff = i;
            return 0;
        }
    return 1;
}

/* The (user-first) messages of input sample i, as LLaVA builds them. */
static int messages_of(const json_value *input, size_t i, const char **msgs, size_t *lens) {
    const json_value *cv = json_get(json_at(input, i), "conversations");
    size_t k0 = cv->n && !strcmp(json_get(&cv->items[0], "from")->str, "gpt") ? 1 : 0;
    int n = 0;
    for (size_t k = k0; k < cv->n; k++, n++) {
        msgs[n] = json_get(&cv->items[k], "value")->str;
        lens[n] = json_get(&cv->items[k], "value")->len;
    }
    return n;
}

static conv_dataset g_bpe_llava;   /* kept for the HDF5 tests */
static int g_bpe_llava_vocab;

static void run_case(const json_value *c, const json_value *input) {
    const char *name = json_get(c, "name")->str;
    char path[512];
    snprintf(path, sizeof path, FIX "%s", json_get(c, "tokenizer")->str);
    tokenizer *tok = tok_load(path);
    if (!t_check(tok != NULL, "case.load", "%s: %s", name, tok ? "" : ar_error())) return;
    int max_len = (int)json_get(c, "max_len")->integer;
    conv_encoder *e = conv_encoder_new(tok, json_get(c, "template")->str, max_len);
    const json_value *added = json_get(c, "added"), *ph = json_get(c, "placeholders");
    int strip = json_get(c, "strip_added")->boolean;
    for (size_t k = 0; k < ph->n; k++) conv_encoder_add_placeholder(e, ph->items[k].str);
    for (size_t k = 0; k < added->n; k++) conv_encoder_add_token(e, added->items[k].str, strip);
    conv_dataset ds;
    int rc = conv_load_json_with(INPUT, e, &ds);
    if (!t_check(rc == 0, "case.load_json", "%s: %s", name, rc ? ar_error() : "")) {
        conv_encoder_free(e);
        tok_free(tok);
        return;
    }
    const json_value *samples = json_get(c, "samples"), *skipped = json_get(c, "skipped");
    t_check(ds.n == (int64_t)samples->n && ds.n_skipped == (int64_t)skipped->n && ds.n_input == 26 &&
                ds.vocab_size == (int)json_get(c, "vocab_size")->integer &&
                ds.pad_id == (int)json_get(c, "pad_id")->integer,
            "case.counts", "%s: kept %lld (want %zu), skipped %lld (want %zu), vocab %d", name, (long long)ds.n,
            samples->n, (long long)ds.n_skipped, skipped->n, ds.vocab_size);
    int bad_ids = 0, bad_labels = 0, bad_flags = 0, bad_prompt = 0, with_prompt = 0;
    int64_t trunc = 0, mism = 0, sup = 0;
    char detail[256] = "";
    for (size_t k = 0; k < samples->n && (int64_t)k < ds.n; k++) {
        const json_value *s = &samples->items[k];
        int idx = (int)json_get(s, "index")->integer;
        const int *ids = ds.ids + ds.start[k], *lab = ds.labels + ds.start[k];
        int n = (int)(ds.start[k + 1] - ds.start[k]), d1 = -1, d2 = -1;
        int ok_i = ds.index[k] == idx && ints_equal(json_get(s, "ids"), ids, n, &d1);
        int ok_l = ints_equal(json_get(s, "labels"), lab, n, &d2);
        int tr = json_get(s, "truncated")->boolean, mm = json_get(s, "mismatch")->boolean;
        int ok_f = ds.flags[k] == ((tr ? CONV_F_TRUNCATED : 0) | (mm ? CONV_F_MISMATCH : 0));
        trunc += tr;
        mism += mm;
        for (int t = 0; t < n; t++) sup += lab[t] != CONV_IGNORE;
        if ((!ok_i || !ok_l || !ok_f) && !detail[0])
            snprintf(detail, sizeof detail, " (first bad: sample %d, ids diff at %d, labels diff at %d, n %d)", idx,
                     d1, d2, n);
        bad_ids += !ok_i;
        bad_labels += !ok_l;
        bad_flags += !ok_f;
        /* the same sample through conv_tokenize directly, and its prompt */
        const char *msgs[16];
        size_t lens[16];
        int nm = messages_of(input, (size_t)idx, msgs, lens);
        conv_sample cs;
        if (conv_tokenize(e, msgs, lens, nm, &cs) == 0) {
            bad_flags += cs.full_len != (int)json_get(s, "full_len")->integer ||
                         cs.cur_len != (int)json_get(s, "cur_len")->integer ||
                         cs.total_len != (int)json_get(s, "total_len")->integer || cs.n != n ||
                         memcmp(cs.labels, lab, (size_t)n * sizeof *lab) != 0;
            conv_sample_free(&cs);
        } else {
            bad_flags++;
        }
        const json_value *jp = json_get(s, "prompt");
        if (jp) {
            size_t plen;
            char *p = conv_prompt(conv_encoder_template(e), msgs, lens, nm, &plen);
            with_prompt++;
            bad_prompt += !p || plen != jp->len || memcmp(p, jp->str, plen) != 0;
            free(p);
        }
    }
    for (size_t k = 0; k < skipped->n; k++) {
        int idx = (int)skipped->items[k].integer;
        for (int64_t j = 0; j < ds.n; j++) bad_flags += ds.index[j] == idx;
    }
    t_check(!bad_ids && !bad_labels && !bad_flags, "case.tokens",
            "%s: %zu samples, bad ids %d, bad labels %d, bad flags/counts %d%s", name, samples->n, bad_ids,
            bad_labels, bad_flags, detail);
    if (with_prompt) t_check(!bad_prompt, "case.prompts", "%s: %d prompts, %d differ", name, with_prompt, bad_prompt);
    t_check(ds.n_truncated == trunc && ds.n_mismatch == mism && ds.n_supervised == sup, "case.totals",
            "%s: truncated %lld, mismatched %lld, supervised %lld", name, (long long)ds.n_truncated,
            (long long)ds.n_mismatch, (long long)ds.n_supervised);
    if (!strcmp(name, "bpe_llava")) {
        g_bpe_llava = ds;
        g_bpe_llava_vocab = tok_vocab_size(tok);
    } else {
        conv_dataset_free(&ds);
    }
    conv_encoder_free(e);
    tok_free(tok);
}

/* ------------------------------------------------------------------ broken samples */
static void test_broken(void) {
    conv_dataset *ds = &g_bpe_llava;
    t_check(ds->skip[CONV_SKIP_NOT_OBJECT] == 1 && ds->skip[CONV_SKIP_NO_CONVERSATIONS] == 1 &&
                ds->skip[CONV_SKIP_EMPTY] == 1 && ds->skip[CONV_SKIP_BAD_TURN] == 1 &&
                ds->skip[CONV_SKIP_BAD_ROLE] == 2 && ds->skip[CONV_SKIP_BAD_ORDER] == 1 && ds->n_skipped == 7 &&
                ds->n_truncated == 1 && ds->n_mismatch == 6 && ds->n_unsupervised == 6,
            "broken.counts", "skipped %lld truncated %lld mismatched %lld unsupervised %lld",
            (long long)ds->n_skipped, (long long)ds->n_truncated, (long long)ds->n_mismatch,
            (long long)ds->n_unsupervised);
    const char *want[] = {
        INPUT ": sample 7 (id \"empty_answer_end\"): tokenization mismatch: 1 vs. 215 (every label set to -100)",
        INPUT ": sample 9 (id \"ends_on_human\"): tokenization mismatch: 217 vs. 229 (every label set to -100)",
        INPUT ": sample 11 (id \"bad_system\"): conversations[0].from: expected \"human\" or \"gpt\", found \"system\"",
        INPUT ": sample 12 (id \"bad_order\"): conversations[1].from: expected \"gpt\" (turns alternate human, gpt), "
              "found \"human\"",
        INPUT ": sample 13 (id \"bad_value\"): conversations[1]: expected 'value' to be a string, found number",
        INPUT ": sample 14 (id \"bad_no_conversations\"): missing required field 'conversations' (expected an array)",
        INPUT ": sample 15 (id \"bad_empty\"): 'conversations' is empty",
        INPUT ": sample 16: expected an object, found string",
        INPUT ": sample 17 (id \"sep_in_question\"): tokenization mismatch: 1 vs. 232 (every label set to -100)",
        INPUT ": sample 18 (id \"eos_in_answer\"): tokenization mismatch: 232 vs. 243 (every label set to -100)",
        INPUT ": sample 19 (id \"unk_in_question\"): tokenization mismatch: 236 vs. 235 (every label set to -100)",
        INPUT ": sample 21 (id \"empty_question\"): tokenization mismatch: 1 vs. 213 (every label set to -100)",
        INPUT ": sample 24 (id \"bad_role_case\"): conversations[0].from: expected \"human\" or \"gpt\", found \"Human\"",
    };
    int nw = (int)(sizeof want / sizeof want[0]), bad = -1;
    for (int i = 0; i < nw && i < ds->n_messages; i++)
        if (strcmp(ds->messages[i], want[i]) != 0 && bad < 0) bad = i;
    t_check(ds->n_messages == nw && bad < 0, "broken.messages", "%d messages%s%s", ds->n_messages,
            bad >= 0 ? ", first differing: " : "", bad >= 0 ? ds->messages[bad] : "");
}

/* A JSON file written by the test. */
static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_load_errors(void) {
    tokenizer *tok = tok_load(FIX "tok_bpe.model");
    char p[300];
    conv_dataset ds;
    snprintf(p, sizeof p, "%s/obj.json", g_tmpdir);
    write_file(p, "{\"conversations\": []}");
    int rc = conv_load_json(p, tok, "llava_v1", 64, &ds);
    t_check(rc < 0 && strstr(ar_error(), "obj.json: expected the root to be an array of samples, found object") &&
                ds.n == 0 && !ds.ids,
            "load.root", "%s", ar_error());
    snprintf(p, sizeof p, "%s/bad.json", g_tmpdir);
    write_file(p, "[{\"conversations\": [}]");
    rc = conv_load_json(p, tok, "llava_v1", 64, &ds);
    t_check(rc < 0 && strstr(ar_error(), "bad.json: line 1"), "load.syntax", "%s", ar_error());
    rc = conv_load_json(FIX "no_such_file.json", tok, "llava_v1", 64, &ds);
    t_check(rc < 0 && strstr(ar_error(), "no_such_file.json"), "load.missing", "%s", ar_error());
    /* more turn shapes; a sample of only a gpt turn is LLaVA's system-only prompt (a mismatch) */
    snprintf(p, sizeof p, "%s/turns.json", g_tmpdir);
    write_file(p, "[{\"id\": 1, \"conversations\": [\"x\"]},"
                  " {\"id\": \"b\", \"conversations\": [{\"value\": \"v\"}]},"
                  " {\"conversations\": [{\"from\": \"human\", \"value\": null}]},"
                  " {\"conversations\": {\"from\": \"human\"}},"
                  " {\"conversations\": [{\"from\": \"human\\u0000\", \"value\": \"v\"}]},"
                  " {\"conversations\": [{\"from\": \"gpt\", \"value\": \"only\"}]},"
                  " {\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}]}]");
    rc = conv_load_json(p, tok, "vicuna_v1_1", 512, &ds);
    int ok = rc == 0 && ds.n_input == 7 && ds.n_skipped == 5 && ds.skip[CONV_SKIP_BAD_TURN] == 3 &&
             ds.skip[CONV_SKIP_NO_CONVERSATIONS] == 1 && ds.skip[CONV_SKIP_BAD_ROLE] == 1 && ds.n == 2 &&
             ds.n_mismatch == 1 && ds.n_messages == 6 &&
             strstr(ds.messages[0], "sample 0 (id 1): conversations[0]: expected an object, found string") &&
             strstr(ds.messages[1], "sample 1 (id \"b\"): conversations[0]: missing required field 'from' (expected a string)") &&
             strstr(ds.messages[2], "sample 2: conversations[0]: expected 'value' to be a string, found null") &&
             strstr(ds.messages[3], "sample 3: expected 'conversations' to be an array, found object") &&
             strstr(ds.messages[4], "sample 4: conversations[0].from: expected \"human\" or \"gpt\", found \"human?\"") &&
             strstr(ds.messages[5], "sample 5: tokenization mismatch: 1 vs. ");
    t_check(ok, "load.turns", "rc %d skipped %lld messages %d: %s", rc, (long long)ds.n_skipped, ds.n_messages,
            ds.n_messages ? ds.messages[ds.n_messages - 1] : "");
    conv_dataset_free(&ds);
    tok_free(tok);
}

/* ------------------------------------------------------------------ HDF5 */
static int read_labels(const char *path, int *buf, size_t n) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    hid_t d = H5Dopen2(f, "/labels", H5P_DEFAULT);
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t dims[2] = {0, 0};
    if (sp >= 0) H5Sget_simple_extent_dims(sp, dims, NULL);
    int rc = sp >= 0 && dims[0] * dims[1] == n && H5Dread(d, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0 ? 0 : -1;
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    return rc;
}

static void check_h5(const char *path, const conv_dataset *ds, int T, int vocab, const char *name) {
    /* the labels as stored (unshifted), read before the reader holds the file */
    int64_t want_rows = ds->n - ds->n_unsupervised;
    int *raw = malloc((size_t)want_rows * (size_t)T * sizeof *raw);
    int raw_ok = read_labels(path, raw, (size_t)want_rows * (size_t)T) == 0;
    token_dataset *td = tds_open(path, vocab);
    if (!td) {
        t_fail(name, "tds_open: %s", ar_error());
        free(raw);
        return;
    }
    int bad = 0, r = 0;
    int *tokens = malloc((size_t)T * sizeof *tokens), *targets = malloc((size_t)T * sizeof *targets);
    for (int64_t i = 0; i < ds->n; i++) {
        const int *ids = ds->ids + ds->start[i], *lab = ds->labels + ds->start[i];
        int n = (int)(ds->start[i + 1] - ds->start[i]), sup = 0;
        for (int t = 0; t < n; t++) sup += lab[t] != CONV_IGNORE;
        if (!sup) continue;
        if (tds_read_row(td, r, T, tokens, targets) != 0) {
            bad++;
        } else {
            for (int t = 0; t < T; t++) {
                bad += tokens[t] != (t < n ? ids[t] : ds->pad_id);
                bad += targets[t] != (t + 1 < n ? lab[t + 1] : TDS_IGNORE);
                if (raw_ok) bad += raw[(size_t)r * (size_t)T + (size_t)t] != (t < n ? lab[t] : TDS_IGNORE);
            }
        }
        r++;
    }
    t_check(raw_ok && tds_rows(td) == want_rows && tds_seq_len(td) == T && tds_pad_id(td) == ds->pad_id && bad == 0,
            name, "rows %lld (want %lld), T %d, %d differences%s", (long long)tds_rows(td), (long long)want_rows,
            tds_seq_len(td), bad, raw_ok ? "" : ", raw /labels unreadable");
    free(tokens);
    free(targets);
    free(raw);
    tds_close(td);
}

static void test_h5(void) {
    const conv_dataset *ds = &g_bpe_llava;
    char p[300];
    snprintf(p, sizeof p, "%s/out.h5", g_tmpdir);
    int64_t rows = conv_write_tokens(ds, p, 400, g_bpe_llava_vocab);
    t_check(rows == 13, "h5.write", "rows %lld %s", (long long)rows, rows < 0 ? ar_error() : "");
    if (rows > 0) check_h5(p, ds, 400, g_bpe_llava_vocab, "h5.read_back");
    rows = conv_write_tokens(ds, p, 300, g_bpe_llava_vocab);
    t_check(rows < 0 && strstr(ar_error(), "more than the sequence length 300"), "h5.too_long", "%s", ar_error());
    rows = conv_write_tokens(ds, p, 400, 512);
    t_check(rows < 0 && strstr(ar_error(), "is outside the vocabulary [0, 512)"), "h5.vocab", "%s", ar_error());
    rows = conv_write_tokens(ds, p, 1, 515);
    t_check(rows < 0 && strstr(ar_error(), "at least 2"), "h5.T", "%s", ar_error());

    /* placeholders cannot go to the token format; all-unsupervised data writes nothing */
    tokenizer *tok = tok_load(FIX "tok_bpe.model");
    conv_encoder *e = conv_encoder_new(tok, "llava_v1", 2048);
    conv_encoder_add_placeholder(e, "<image>");
    conv_dataset d2;
    conv_load_json_with(INPUT, e, &d2);
    rows = conv_write_tokens(&d2, p, 2048, tok_vocab_size(tok));
    t_check(rows < 0 && strstr(ar_error(), "holds a placeholder (id -1)"), "h5.placeholder", "%s", ar_error());
    conv_dataset_free(&d2);
    conv_encoder_free(e);
    tok_free(tok);
    tok = tok_load(FIX "tok_rws.model");
    conv_load_json(INPUT, tok, "llava_v1", 2048, &d2);
    rows = conv_write_tokens(&d2, p, 2048, tok_vocab_size(tok));
    t_check(rows < 0 && strstr(ar_error(), "no sample has a supervised token"), "h5.nothing", "%s", ar_error());
    conv_dataset_free(&d2);
    tok_free(tok);
}

/* ------------------------------------------------------------------ command line */
static int run_cmd(char **argv, int argc, char *outbuf, size_t cap, char *errbuf, size_t ecap) {
    outbuf[0] = errbuf[0] = '\0';
    FILE *o = fmemopen(outbuf, cap, "w"), *e = fmemopen(errbuf, ecap, "w");
    int rc = prepare_run(argc, argv, o, e);
    fclose(o);
    fclose(e);
    return rc;
}

static void test_cmd(void) {
    static char out[8192], err[8192];
    char h5[300];
    snprintf(h5, sizeof h5, "%s/cmd.h5", g_tmpdir);
    char *argv[] = {"prepare", "--tokenizer", FIX "tok_bpe.model", "--template", "llava_v1", "--seq-len=400",
                    "--add-special", "[SEG]", "--add-special", "<im_start>", "--add-special=<im_end>", INPUT, h5};
    int rc = run_cmd(argv, 13, out, sizeof out, err, sizeof err);
    char want[1024];
    int64_t tokens = 0;
    for (int64_t i = 0; i < g_bpe_llava.n; i++)
        for (int64_t p = g_bpe_llava.start[i]; p < g_bpe_llava.start[i + 1]; p++)
            if (g_bpe_llava.labels[p] != CONV_IGNORE) {
                tokens += g_bpe_llava.start[i + 1] - g_bpe_llava.start[i];
                break;
            }
    snprintf(want, sizeof want,
             "template llava_v1\nseq_len 400\nvocab_size 515\nsamples 26\nskipped 7\n  not an object 1\n"
             "  no conversations 1\n  empty conversations 1\n  bad turn 1\n  bad role 2\n  bad order 1\n"
             "truncated 1\nmismatched 6\nunsupervised 6\nwritten 13\ntokens %lld\nsupervised tokens %lld\n",
             (long long)tokens, (long long)g_bpe_llava.n_supervised);
    int ok = rc == 0 && strstr(out, want) != NULL;
    t_check(ok, "cmd.counts", "rc %d%s%s%s", rc, ok ? "" : ", stdout:\n", ok ? "" : out, ok ? "" : err);
    check_h5(h5, &g_bpe_llava, 400, 515, "cmd.file");

    char *bad1[] = {"prepare", INPUT, h5};
    rc = run_cmd(bad1, 3, out, sizeof out, err, sizeof err);
    t_check(rc == 2 && strstr(err, "--tokenizer FILE is required"), "cmd.usage", "rc %d", rc);
    char *bad2[] = {"prepare", "--tokenizer", FIX "tok_bpe.model", "--seq-len", "1", INPUT, h5};
    rc = run_cmd(bad2, 7, out, sizeof out, err, sizeof err);
    t_check(rc == 2 && strstr(err, "--seq-len expects an integer >= 2, got '1'"), "cmd.seq_len", "rc %d", rc);
    char *bad3[] = {"prepare", "--tokenizer", FIX "tok_bpe.model", "--template", "chatml", INPUT, h5};
    rc = run_cmd(bad3, 7, out, sizeof out, err, sizeof err);
    t_check(rc == 1 && strstr(err, "unknown conversation template 'chatml'"), "cmd.template", "rc %d", rc);
    char *bad4[] = {"prepare", "--tokenizer", FIX "tok_bpe.model", "--frobnicate", INPUT, h5};
    rc = run_cmd(bad4, 6, out, sizeof out, err, sizeof err);
    t_check(rc == 2 && strstr(err, "unknown option '--frobnicate'"), "cmd.option", "rc %d", rc);
    /* default seq-len 512 is longer than the 'long' sample's prefix; the written file holds T = 512 */
    char *ok2[] = {"prepare", "--tokenizer", FIX "tok_bpe.model", "--no-strip", "--add-special", "[SEG]", INPUT, h5};
    rc = run_cmd(ok2, 8, out, sizeof out, err, sizeof err);
    token_dataset *td = rc == 0 ? tds_open(h5, 513) : NULL;
    t_check(rc == 0 && strstr(out, "seq_len 512\nvocab_size 513\n") && td && tds_seq_len(td) == 512, "cmd.defaults",
            "rc %d %s", rc, err);
    tds_close(td);
}

int main(void) {
    snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/anyref_conv_XXXXXX");
    if (!mkdtemp(g_tmpdir)) {
        t_fail("setup", "mkdtemp failed");
        return t_exit_code();
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* the warnings of the loads go to a file, checked at the end */
    char errpath[300];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_tmpdir);
    fflush(stderr);
    if (!freopen(errpath, "w", stderr)) {
        t_fail("setup", "cannot redirect stderr");
        return t_exit_code();
    }
    test_prompts();
    test_encoder();
    json_doc *exp = json_parse_file(FIX "conversations_expected.json");
    json_doc *in = json_parse_file(INPUT);
    if (t_check(exp && in, "fixture.load", "%s", exp && in ? "" : ar_error())) {
        const json_value *cases = json_get(json_root(exp), "cases");
        t_check(cases && cases->n == 5, "fixture.cases", "%zu cases", cases ? cases->n : 0);
        for (size_t k = 0; cases && k < cases->n; k++) run_case(&cases->items[k], json_root(in));
        if (g_bpe_llava.n) {
            test_broken();
            test_h5();
            test_cmd();
        }
    }
    test_load_errors();
    json_free(exp);
    json_free(in);
    conv_dataset_free(&g_bpe_llava);
    fflush(stderr);
    FILE *f = fopen(errpath, "rb");
    static char log[1 << 16];
    size_t nl = f ? fread(log, 1, sizeof log - 1, f) : 0;
    log[nl] = '\0';
    if (f) fclose(f);
    t_check(strstr(log, "warning: " INPUT ": sample 7 (id \"empty_answer_end\"): tokenization mismatch: 1 vs. 215 "
                        "(every label set to -100)\n") &&
                strstr(log, "warning: " INPUT ": sample 18 (id \"eos_in_answer\")") &&
                !strstr(log, "warning: " INPUT ": sample 19 (id \"unk_in_question\")") &&
                strstr(log, "warning: " INPUT ": 3 more problem samples not shown\n"),
            "log.warnings", "the first 10 problems of a load, then a count");
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmpdir);
    if (!getenv("KEEP") && system(cmd) != 0) t_fail("cleanup", "%s", cmd);
    return t_exit_code();
}
