/* tests/test_caption_metrics.c — eval/caption_metrics against coco-caption
 * itself (tests/fixtures/caption_metrics.json, written by
 * tests/ref/caption_metrics_ref.py with PyPI pycocoevalcap and its Stanford
 * PTBTokenizer): the tokenizer string for string on caption-like inputs;
 * BLEU-1..4, CIDEr-D and per-sample CIDEr-D on generated sets (repeated
 * words, missing n-grams, empty candidates, 1-5 references of different
 * lengths, one sample, all empty) pre-tokenised and raw (tokenised here) to
 * 1e-6 relative; tokenize=1 on raw text equal to tokenize=0 on its tokens;
 * argument errors. Depends on core/json.h. */
#include "tests/testlib.h"

#include "core/error.h"
#include "core/json.h"
#include "eval/caption_metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/caption_metrics.json"
#define TOL 1e-6

static double g_max_err = 0.0;

static double rel_err(double a, double b) { return fabs(a - b) / (fabs(b) > 1.0 ? fabs(b) : 1.0); }

static void test_tokenize(const json_value *cases) {
    int bad = 0;
    for (size_t i = 0; i < cases->n; i++) {
        const json_value *c = json_at(cases, i);
        const char *raw = NULL, *want = NULL;
        if (json_get_string(c, "raw", &raw, NULL, "tokenize case") < 0 ||
            json_get_string(c, "tok", &want, NULL, "tokenize case") < 0) {
            t_fail("capm.tokenize fixture", "%s", ar_error());
            return;
        }
        char *got = capm_tokenize(raw);
        if (!got || strcmp(got, want)) {
            bad++;
            t_fail("capm.tokenize", "\"%s\": got \"%s\", PTBTokenizer \"%s\"", raw, got ? got : "(null)", want);
        }
        free(got);
    }
    t_check(bad == 0 && cases->n > 0, "capm.tokenize", "%zu strings equal to coco-caption's PTBTokenizer", cases->n);
}

/* Reads one set's strings into arrays (pointers into the JSON document). */
typedef struct { int n; const char **cands; const char ***refs; int *nrefs; } capset;

static int read_set(const json_value *s, capset *cs) {
    const json_value *c = json_get(s, "cands"), *r = json_get(s, "refs");
    if (!c || !r || c->type != JSON_ARRAY || r->type != JSON_ARRAY || c->n != r->n) return -1;
    cs->n = (int)c->n;
    cs->cands = calloc(c->n + 1, sizeof *cs->cands);
    cs->refs = calloc(c->n + 1, sizeof *cs->refs);
    cs->nrefs = calloc(c->n + 1, sizeof *cs->nrefs);
    for (size_t i = 0; i < c->n; i++) {
        const json_value *ri = json_at(r, i);
        if (json_at(c, i)->type != JSON_STRING || ri->type != JSON_ARRAY) return -1;
        cs->cands[i] = json_at(c, i)->str;
        cs->nrefs[i] = (int)ri->n;
        cs->refs[i] = calloc(ri->n + 1, sizeof **cs->refs);
        for (size_t k = 0; k < ri->n; k++) {
            if (json_at(ri, k)->type != JSON_STRING) return -1;
            cs->refs[i][k] = json_at(ri, k)->str;
        }
    }
    return 0;
}
static void free_set(capset *cs) {
    for (int i = 0; i < cs->n; i++) free(cs->refs[i]);
    free(cs->cands); free(cs->refs); free(cs->nrefs);
}

static void test_set(const json_value *s) {
    const char *name = "?";
    json_get_string(s, "name", &name, NULL, NULL);
    char label[128];
    snprintf(label, sizeof label, "capm.set %s", name);
    capset cs = {0};
    const json_value *tk = json_get(s, "tokenized"), *bl = json_get(s, "bleu"), *per = json_get(s, "cider_per");
    double cider = 0;
    if (read_set(s, &cs) < 0 || !tk || tk->type != JSON_BOOL || !bl || bl->n != 4 || !per ||
        per->n != (size_t)cs.n || json_get_number(s, "cider", &cider, NULL) < 0) {
        t_fail(label, "malformed fixture set (regenerate with tests/ref/caption_metrics_ref.py)");
        free_set(&cs);
        return;
    }
    capm_scores sc;
    double *cp = calloc((size_t)cs.n, sizeof *cp);
    if (capm_score(cs.n, cs.cands, (const char *const *const *)cs.refs, cs.nrefs, !tk->boolean, &sc, cp) < 0) {
        t_fail(label, "capm_score: %s", ar_error());
    } else {
        double eb = 0, ec = rel_err(sc.cider, cider), ep = 0;
        for (int k = 0; k < 4; k++) { double e = rel_err(sc.bleu[k], json_at(bl, (size_t)k)->number); if (e > eb) eb = e; }
        for (int i = 0; i < cs.n; i++) { double e = rel_err(cp[i], json_at(per, (size_t)i)->number); if (e > ep) ep = e; }
        double m = fmax(eb, fmax(ec, ep));
        if (m > g_max_err) g_max_err = m;
        t_check(m <= TOL, label, "%d samples (%s): BLEU-1..4 %.6f %.6f %.6f %.6f CIDEr-D %.6f; max err BLEU %.2e "
                "CIDEr %.2e per-sample %.2e (tol %.0e)", cs.n, tk->boolean ? "pre-tokenised" : "raw, tokenised here",
                sc.bleu[0], sc.bleu[1], sc.bleu[2], sc.bleu[3], sc.cider, eb, ec, ep, TOL);
    }
    /* raw sets: tokenising inside capm_score == scoring the tokenised strings */
    if (!tk->boolean) {
        const char **tc = calloc((size_t)cs.n, sizeof *tc);
        const char ***tr = calloc((size_t)cs.n, sizeof *tr);
        for (int i = 0; i < cs.n; i++) {
            tc[i] = capm_tokenize(cs.cands[i]);
            tr[i] = calloc((size_t)cs.nrefs[i], sizeof **tr);
            for (int k = 0; k < cs.nrefs[i]; k++) tr[i][k] = capm_tokenize(cs.refs[i][k]);
        }
        capm_scores s2;
        int ok = capm_score(cs.n, tc, (const char *const *const *)tr, cs.nrefs, 0, &s2, NULL) == 0 &&
                 !memcmp(&s2, &sc, sizeof sc);
        t_check(ok, "capm.tokenize_inside", "%s: tokenize=1 on raw text == tokenize=0 on capm_tokenize's output", name);
        for (int i = 0; i < cs.n; i++) {
            free((void *)tc[i]);
            for (int k = 0; k < cs.nrefs[i]; k++) free((void *)tr[i][k]);
            free(tr[i]);
        }
        free(tc); free(tr);
    }
    free(cp);
    free_set(&cs);
}

static void test_errors(void) {
    const char *c[1] = {"a dog"}, *r0[1] = {"a dog"};
    const char *const *r[1] = {r0};
    int nr0[1] = {0}, nr1[1] = {1};
    capm_scores s;
    ar_error_clear();
    t_check(capm_score(0, c, r, nr1, 0, &s, NULL) < 0 && strstr(ar_error(), "n >= 1"), "capm.errors n=0", "%s", ar_error());
    ar_error_clear();
    t_check(capm_score(1, c, r, nr0, 0, &s, NULL) < 0 && strstr(ar_error(), "at least one reference"),
            "capm.errors no reference", "%s", ar_error());
    /* exact matches of >= 4 words sharing no n-gram: BLEU 1 (to the constants), CIDEr-D 10 */
    const char *c2[2] = {"A red dog near grass.", "the blue car at left"}, *ra[1] = {"a red dog near grass"},
               *rb[1] = {"The blue car, at left"};
    const char *const *r2[2] = {ra, rb};
    int nr2[2] = {1, 1};
    int ok = capm_score(2, c2, r2, nr2, 1, &s, NULL) == 0;
    t_check(ok && fabs(s.bleu[3] - 1.0) < 1e-8 && fabs(s.cider - 10.0) < 1e-12, "capm.exact_match",
            "BLEU-4 %.12f CIDEr-D %.12f", s.bleu[3], s.cider);
    /* a 3-word exact match has no 4-grams: that order scores 0 (coco-caption's guard), so 7.5 */
    const char *c3[2] = {"a red dog", "the blue car at left"}, *rc[1] = {"a red dog"};
    const char *const *r3[2] = {rc, rb};
    ok = capm_score(2, c3, r3, nr2, 1, &s, NULL) == 0;
    t_check(ok && fabs(s.cider - (7.5 + 10.0) / 2) < 1e-12, "capm.no_4grams", "CIDEr-D %.12f (want 8.75)", s.cider);
}

int main(void) {
    json_doc *d = json_parse_file(FIXTURE);
    if (!d) {
        t_fail("capm.fixture", "%s (regenerate with tests/ref/caption_metrics_ref.py)", ar_error());
        return t_exit_code();
    }
    const json_value *root = json_root(d), *tok = json_get(root, "tokenize"), *sets = json_get(root, "sets");
    if (!tok || tok->type != JSON_ARRAY || !sets || sets->type != JSON_ARRAY) {
        t_fail("capm.fixture", "%s: expected arrays 'tokenize' and 'sets'", FIXTURE);
    } else {
        test_tokenize(tok);
        for (size_t i = 0; i < sets->n; i++) test_set(json_at(sets, i));
        t_check(g_max_err <= TOL, "capm.max_err", "largest relative error over every set %.2e", g_max_err);
    }
    test_errors();
    json_free(d);
    return t_exit_code();
}
