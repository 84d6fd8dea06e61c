/* eval/caption_metrics.c — coco-caption's PTB tokenisation, BLEU-1..4 and
 * CIDEr-D in C (see caption_metrics.h for the definitions followed and the
 * tokenizer's known differences). Words are interned to ids; each sentence
 * becomes a sorted list of its distinct 1..4-grams with counts; CIDEr-D's
 * document frequencies live in an open-addressing hash table.
 * Depends on core/error.h. */
#include "eval/caption_metrics.h"

#include "core/error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ================= tokenizer ================= */

typedef struct { char *p; size_t len, cap; int oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 2 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->len + n + 2 > cap) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q; b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* coco-caption's PUNCTUATIONS, as they can appear after -lowerCase
 * ("-LRB-" and friends never match a lowercased token, so are left out). */
static int dropped(const char *t, size_t n) {
    static const char *const P[] = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"};
    for (size_t i = 0; i < sizeof P / sizeof *P; i++)
        if (strlen(P[i]) == n && memcmp(P[i], t, n) == 0) return 1;
    return 0;
}

static void emit(sbuf *b, const char *t, size_t n) {
    if (n == 0 || dropped(t, n)) return;
    if (b->len) sb_put(b, " ", 1);
    sb_put(b, t, n);
}
static void emit_s(sbuf *b, const char *t) { emit(b, t, strlen(t)); }

static int is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || (c >= 0x1c && c <= 0x1f);
}
static int is_special(unsigned char c) { return c && strchr("()[]{};?!\"`,.:-/&$#%", c) != NULL; }
static int is_wordc(unsigned char c) { return c && !is_space(c) && !is_special(c); }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int word_is(const char *w, size_t n, const char *s) { return strlen(s) == n && memcmp(w, s, n) == 0; }

static int is_abbrev(const char *w, size_t n) {
    static const char *const A[] = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc",
                                    "inc", "ltd", "co", "corp", "prof", "mt", "ft"};
    for (size_t i = 0; i < sizeof A / sizeof *A; i++)
        if (word_is(w, n, A[i])) return 1;
    return 0;
}

/* One word (apostrophes inside) through PTB's clitic and split rules. */
static void emit_word(sbuf *b, const char *w, size_t n) {
    static const char *const CL1[] = {"s", "m", "d", "ll", "re", "ve"};
    while (n && w[0] == '\'') {
        for (size_t i = 0; i < 6; i++)
            if (word_is(w + 1, n - 1, CL1[i])) { emit(b, w, n); return; }
        w++, n--;                                  /* an opening quote: ` (dropped) */
    }
    while (n && w[n - 1] == '\'') n--;             /* a closing quote: ' (dropped) */
    if (!n) return;
    static const char *const SPLIT[][2] = {{"cannot", "can"}, {"gonna", "gon"}, {"gotta", "got"},
                                           {"wanna", "wan"}, {"lemme", "lem"}, {"gimme", "gim"}};
    for (size_t i = 0; i < 6; i++)
        if (word_is(w, n, SPLIT[i][0])) {
            size_t k = strlen(SPLIT[i][1]);
            emit(b, w, k); emit(b, w + k, n - k);
            return;
        }
    if (n > 3 && memcmp(w + n - 3, "n't", 3) == 0) { emit(b, w, n - 3); emit(b, w + n - 3, 3); return; }
    static const char *const CL[] = {"'s", "'m", "'d", "'ll", "'re", "'ve"};
    for (size_t i = 0; i < 6; i++) {
        size_t k = strlen(CL[i]);
        if (n > k && memcmp(w + n - k, CL[i], k) == 0) { emit(b, w, n - k); emit(b, w + n - k, k); return; }
    }
    emit(b, w, n);
}

/* One whitespace-free chunk s[0..n) (already lowercased). */
static void tok_chunk(sbuf *b, const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        const char *br = c == '(' ? "-lrb-" : c == ')' ? "-rrb-" : c == '[' ? "-lsb-" : c == ']' ? "-rsb-"
                       : c == '{' ? "-lcb-" : c == '}' ? "-rcb-" : NULL;
        if (br) { emit_s(b, br); i++; continue; }
        if (c == '?' || c == '!') {
            size_t j = i;
            while (j < n && (s[j] == '?' || s[j] == '!')) j++;
            emit(b, s + i, j - i);
            i = j; continue;
        }
        if (c == '.' || c == '-') {
            size_t j = i;
            while (j < n && s[j] == (char)c) j++;
            emit_s(b, c == '.' ? (j - i > 1 ? "..." : ".") : (j - i > 1 ? "--" : "-"));
            i = j; continue;
        }
        if (is_special(c)) {   /* ; " ` , : / & $ # % on their own */
            char t[2] = {(char)c, 0};
            emit_s(b, c == '"' ? "''" : t);
            i++; continue;
        }
        /* a word: word characters, with , : . - / & inside where PTB keeps them */
        size_t j = i;
        int has_dot = 0, has_alpha = 0;
        while (j < n) {
            unsigned char d = (unsigned char)s[j];
            unsigned char nx = j + 1 < n ? (unsigned char)s[j + 1] : 0;
            unsigned char pv = j > i ? (unsigned char)s[j - 1] : 0;
            if (is_wordc(d)) { has_alpha |= is_alpha(d); j++; continue; }
            if ((d == ',' || d == ':') && j > i && is_digit(pv) && is_digit(nx)) { j++; continue; }
            if ((d == '-' || d == '/' || d == '&') && j > i && is_wordc(nx)) { j++; continue; }
            if (d == '.' && j > i) {
                if (is_wordc(nx)) { has_dot = 1; j++; continue; }
                if (nx != '.' && ((has_dot && has_alpha) || is_abbrev(s + i, j - i))) { j++; }
            }
            break;
        }
        emit_word(b, s + i, j - i);
        i = j;
    }
}

char *capm_tokenize(const char *s) {
    sbuf b = {0};
    sb_put(&b, "", 0);
    size_t n = strlen(s);
    char *low = malloc(n + 1);
    if (!low) { free(b.p); ar_errorf("capm_tokenize: out of memory"); return NULL; }
    for (size_t i = 0; i <= n; i++) low[i] = (char)((s[i] >= 'A' && s[i] <= 'Z') ? s[i] - 'A' + 'a' : s[i]);
    size_t i = 0;
    while (i < n) {
        while (i < n && is_space((unsigned char)low[i])) i++;
        size_t j = i;
        while (j < n && !is_space((unsigned char)low[j])) j++;
        if (j > i) tok_chunk(&b, low + i, j - i);
        i = j;
    }
    free(low);
    if (b.oom) { free(b.p); ar_errorf("capm_tokenize: out of memory"); return NULL; }
    return b.p;
}

/* ================= n-grams ================= */

#define CAPM_N 4

typedef struct { uint32_t w[CAPM_N]; } gkey;   /* word ids (>= 1), 0-padded: the order is the nonzero count */
typedef struct { gkey k; int count; } gram;

static uint64_t key_hash(const gkey *k) {
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < CAPM_N; i++) { h ^= k->w[i]; h *= 0xff51afd7ed558ccdull; h ^= h >> 32; }
    return h;
}
static int key_cmp(const gkey *a, const gkey *b) {
    for (int i = 0; i < CAPM_N; i++)
        if (a->w[i] != b->w[i]) return a->w[i] < b->w[i] ? -1 : 1;
    return 0;
}
static int gram_cmp(const void *a, const void *b) { return key_cmp(&((const gram *)a)->k, &((const gram *)b)->k); }
static int key_order(const gkey *k) { int o = 0; while (o < CAPM_N && k->w[o]) o++; return o; }

/* word interning: open addressing over malloc'd copies */
typedef struct { char **s; uint32_t *id; size_t cap, n; } wtab;

static uint64_t str_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}
static int wtab_grow(wtab *t) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    char **s = calloc(cap, sizeof *s);
    uint32_t *id = calloc(cap, sizeof *id);
    if (!s || !id) { free(s); free(id); return -1; }
    for (size_t i = 0; i < t->cap; i++)
        if (t->s[i]) {
            size_t h = str_hash(t->s[i], strlen(t->s[i])) & (cap - 1);
            while (s[h]) h = (h + 1) & (cap - 1);
            s[h] = t->s[i]; id[h] = t->id[i];
        }
    free(t->s); free(t->id);
    t->s = s; t->id = id; t->cap = cap;
    return 0;
}
static uint32_t wtab_id(wtab *t, const char *w, size_t n) {   /* 0 on OOM */
    if ((t->n + 1) * 2 > t->cap && wtab_grow(t) < 0) return 0;
    size_t h = str_hash(w, n) & (t->cap - 1);
    while (t->s[h]) {
        if (strlen(t->s[h]) == n && memcmp(t->s[h], w, n) == 0) return t->id[h];
        h = (h + 1) & (t->cap - 1);
    }
    char *c = malloc(n + 1);
    if (!c) return 0;
    memcpy(c, w, n); c[n] = 0;
    t->s[h] = c; t->id[h] = (uint32_t)++t->n;
    return t->id[h];
}
static void wtab_free(wtab *t) {
    for (size_t i = 0; i < t->cap; i++) free(t->s[i]);
    free(t->s); free(t->id);
}

/* n-gram -> document frequency */
typedef struct { gkey *k; int *v; size_t cap, n; } gtab;

static int gtab_grow(gtab *t) {
    size_t cap = t->cap ? t->cap * 2 : 4096;
    gkey *k = calloc(cap, sizeof *k);
    int *v = calloc(cap, sizeof *v);
    if (!k || !v) { free(k); free(v); return -1; }
    for (size_t i = 0; i < t->cap; i++)
        if (t->v[i]) {
            size_t h = key_hash(&t->k[i]) & (cap - 1);
            while (v[h]) h = (h + 1) & (cap - 1);
            k[h] = t->k[i]; v[h] = t->v[i];
        }
    free(t->k); free(t->v);
    t->k = k; t->v = v; t->cap = cap;
    return 0;
}
static int gtab_add(gtab *t, const gkey *k) {
    if ((t->n + 1) * 2 > t->cap && gtab_grow(t) < 0) return -1;
    size_t h = key_hash(k) & (t->cap - 1);
    while (t->v[h]) {
        if (!key_cmp(&t->k[h], k)) { t->v[h]++; return 0; }
        h = (h + 1) & (t->cap - 1);
    }
    t->k[h] = *k; t->v[h] = 1; t->n++;
    return 0;
}
static int gtab_get(const gtab *t, const gkey *k) {
    if (!t->cap) return 0;
    size_t h = key_hash(k) & (t->cap - 1);
    while (t->v[h]) {
        if (!key_cmp(&t->k[h], k)) return t->v[h];
        h = (h + 1) & (t->cap - 1);
    }
    return 0;
}

/* A sentence: its word count and distinct n-grams (sorted) with counts. */
typedef struct { int words; gram *g; int ng; } sent;

static int sent_build(sent *st, const char *s, wtab *wt) {
    st->words = 0; st->g = NULL; st->ng = 0;
    size_t n = strlen(s), cap = 16, nw = 0;
    uint32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return -1;
    for (size_t i = 0; i < n;) {
        while (i < n && is_space((unsigned char)s[i])) i++;
        size_t j = i;
        while (j < n && !is_space((unsigned char)s[j])) j++;
        if (j > i) {
            if (nw == cap) {
                uint32_t *q = realloc(ids, (cap *= 2) * sizeof *ids);
                if (!q) { free(ids); return -1; }
                ids = q;
            }
            if (!(ids[nw++] = wtab_id(wt, s + i, j - i))) { free(ids); return -1; }
        }
        i = j;
    }
    st->words = (int)nw;
    size_t tot = 0;
    for (size_t k = 1; k <= CAPM_N; k++) tot += nw >= k ? nw - k + 1 : 0;
    st->g = malloc((tot ? tot : 1) * sizeof *st->g);
    if (!st->g) { free(ids); return -1; }
    size_t m = 0;
    for (size_t k = 1; k <= CAPM_N; k++)
        for (size_t i = 0; i + k <= nw; i++) {
            gram *g = &st->g[m++];
            memset(g, 0, sizeof *g);
            memcpy(g->k.w, ids + i, k * sizeof *ids);
            g->count = 1;
        }
    free(ids);
    qsort(st->g, m, sizeof *st->g, gram_cmp);
    size_t u = 0;
    for (size_t i = 0; i < m; i++) {
        if (u && !key_cmp(&st->g[u - 1].k, &st->g[i].k)) st->g[u - 1].count++;
        else st->g[u++] = st->g[i];
    }
    st->ng = (int)u;
    return 0;
}

static int sent_count(const sent *st, const gkey *k) {
    int lo = 0, hi = st->ng - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = key_cmp(&st->g[mid].k, k);
        if (!c) return st->g[mid].count;
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return 0;
}

/* CIDEr-D's tf-idf vector of a sentence: w[i] per distinct n-gram, the
 * norms per order and the bigram count. */
typedef struct { double *w; double norm[CAPM_N]; int length; } cvec;

static void cvec_make(cvec *v, const sent *st, const gtab *df, double ref_len) {
    double sq[CAPM_N] = {0};
    v->length = 0;
    for (int i = 0; i < st->ng; i++) {
        int o = key_order(&st->g[i].k) - 1, d = gtab_get(df, &st->g[i].k);
        v->w[i] = (double)st->g[i].count * (ref_len - log(d > 1 ? (double)d : 1.0));
        sq[o] += v->w[i] * v->w[i];
        if (o == 1) v->length += st->g[i].count;
    }
    for (int o = 0; o < CAPM_N; o++) v->norm[o] = sqrt(sq[o]);
}

static double weight_of(const sent *st, const cvec *v, const gkey *k) {
    int lo = 0, hi = st->ng - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = key_cmp(&st->g[mid].k, k);
        if (!c) return v->w[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return 0.0;
}

/* ================= scores ================= */

int capm_score(int n, const char *const *cands, const char *const *const *refs, const int *n_refs,
               int tokenize, capm_scores *out, double *cider_per) {
    if (n < 1 || !cands || !refs || !n_refs || !out) return ar_errorf("capm_score: need n >= 1 samples and every array");
    for (int i = 0; i < n; i++) {
        if (!cands[i]) return ar_errorf("capm_score: sample %d: no candidate string", i);
        if (n_refs[i] < 1 || !refs[i]) return ar_errorf("capm_score: sample %d: needs at least one reference", i);
        for (int r = 0; r < n_refs[i]; r++)
            if (!refs[i][r]) return ar_errorf("capm_score: sample %d: reference %d is NULL", i, r);
    }
    int rc = -1;
    wtab wt = {0};
    gtab df = {0};
    size_t nsent = 0;
    for (int i = 0; i < n; i++) nsent += 1 + (size_t)n_refs[i];
    sent *ss = calloc(nsent, sizeof *ss);   /* per sample: candidate, then its references */
    double *wbuf = NULL;
    gram *tmp = NULL;
    if (!ss) goto oom;
    size_t si = 0, maxg = 1;
    for (int i = 0; i < n; i++)
        for (int r = -1; r < n_refs[i]; r++) {
            const char *s = r < 0 ? cands[i] : refs[i][r];
            char *t = tokenize ? capm_tokenize(s) : NULL;
            if (tokenize && !t) goto fail;
            int e = sent_build(&ss[si], t ? t : s, &wt);
            free(t);
            if (e < 0) goto oom;
            if ((size_t)ss[si].ng > maxg) maxg = (size_t)ss[si].ng;
            si++;
        }

    /* document frequencies: each sample's distinct reference n-grams */
    si = 0;
    for (int i = 0; i < n; i++) {
        size_t tot = 0;
        for (int r = 0; r < n_refs[i]; r++) tot += (size_t)ss[si + 1 + r].ng;
        gram *q = realloc(tmp, (tot ? tot : 1) * sizeof *tmp);
        if (!q) goto oom;
        tmp = q;
        size_t m = 0;
        for (int r = 0; r < n_refs[i]; r++) {
            memcpy(tmp + m, ss[si + 1 + r].g, (size_t)ss[si + 1 + r].ng * sizeof *tmp);
            m += (size_t)ss[si + 1 + r].ng;
        }
        qsort(tmp, m, sizeof *tmp, gram_cmp);
        for (size_t k = 0; k < m; k++)
            if ((k == 0 || key_cmp(&tmp[k - 1].k, &tmp[k].k)) && gtab_add(&df, &tmp[k].k) < 0) goto oom;
        si += 1 + (size_t)n_refs[i];
    }

    wbuf = malloc(2 * maxg * sizeof *wbuf);
    if (!wbuf) goto oom;
    const double ref_len = log((double)n), sigma = 6.0;
    long long testlen = 0, reflen = 0, guess[CAPM_N] = {0}, correct[CAPM_N] = {0};
    double cider_sum = 0.0;
    si = 0;
    for (int i = 0; i < n; i++) {
        const sent *c = &ss[si], *rs = &ss[si + 1];
        int nr = n_refs[i];
        /* BLEU: closest reference length (ties: the shorter), clipped counts */
        int best = rs[0].words;
        for (int r = 1; r < nr; r++) {
            int dl = abs(rs[r].words - c->words), db = abs(best - c->words);
            if (dl < db || (dl == db && rs[r].words < best)) best = rs[r].words;
        }
        testlen += c->words;
        reflen += best;
        for (int k = 0; k < CAPM_N; k++) guess[k] += c->words - k > 0 ? c->words - k : 0;
        for (int g = 0; g < c->ng; g++) {
            int mx = 0;
            for (int r = 0; r < nr; r++) { int m = sent_count(&rs[r], &c->g[g].k); if (m > mx) mx = m; }
            correct[key_order(&c->g[g].k) - 1] += c->g[g].count < mx ? c->g[g].count : mx;
        }
        /* CIDEr-D */
        cvec vc = {.w = wbuf}, vr = {.w = wbuf + maxg};
        cvec_make(&vc, c, &df, ref_len);
        double score[CAPM_N] = {0};
        for (int r = 0; r < nr; r++) {
            cvec_make(&vr, &rs[r], &df, ref_len);
            double delta = (double)(vc.length - vr.length), val[CAPM_N] = {0};
            for (int g = 0; g < c->ng; g++) {
                int o = key_order(&c->g[g].k) - 1;
                double wr = weight_of(&rs[r], &vr, &c->g[g].k), wh = vc.w[g];
                val[o] += (wh < wr ? wh : wr) * wr;
            }
            for (int o = 0; o < CAPM_N; o++) {
                if (vc.norm[o] != 0.0 && vr.norm[o] != 0.0) val[o] /= vc.norm[o] * vr.norm[o];
                val[o] *= exp(-(delta * delta) / (2.0 * sigma * sigma));
                score[o] += val[o];
            }
        }
        double avg = 0.0;
        for (int o = 0; o < CAPM_N; o++) avg += score[o];
        avg = avg / CAPM_N / nr * 10.0;
        if (cider_per) cider_per[i] = avg;
        cider_sum += avg;
        si += 1 + (size_t)nr;
    }
    const double tiny = 1e-15, small = 1e-9;
    double ratio = ((double)testlen + tiny) / ((double)reflen + small);
    for (int k = 1; k <= CAPM_N; k++) {
        double b = 1.0;
        for (int j = 0; j < k; j++) b *= ((double)correct[j] + tiny) / ((double)guess[j] + small);
        b = pow(b, 1.0 / k);
        if (ratio < 1.0) b *= exp(1.0 - 1.0 / ratio);
        out->bleu[k - 1] = b;
    }
    out->cider = cider_sum / n;
    rc = 0;
    goto done;
oom:
    ar_errorf("capm_score: out of memory");
fail:
done:
    if (ss)
        for (size_t k = 0; k < nsent; k++) free(ss[k].g);
    free(ss); free(tmp); free(wbuf);
    free(df.k); free(df.v);
    wtab_free(&wt);
    return rc;
}
