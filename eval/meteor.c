/* eval/meteor.c — approximate METEOR 1.5 (exact + stem + WordNet synonyms, no
 * paraphrases); see meteor.h for what is followed and what differs.
 * Words are interned to ids in one table per handle, with a cache of each
 * word's stem id and sorted synset ids; WordNet's index.<pos> and <pos>.exc
 * files are read once into CSR arrays keyed by interned lemma ids (synset
 * id = byte offset * 4 + part of speech). Depends on core/error.h and
 * libstemmer. */
#include "eval/meteor.h"

#include "core/error.h"

#include <libstemmer.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MOD_EXACT, MOD_STEM, MOD_SYN, NMOD };
static const double MOD_W[NMOD] = {1.0, 0.6, 0.8};
#define ALPHA 0.85
#define BETA 0.20
#define GAMMA 0.60
#define DELTA 0.75
#define BEAM 40

/* ================= string table ================= */

typedef struct {
    char **key;
    int *val;
    size_t cap, n;
} htab;

static uint64_t hash_str(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int ht_find(const htab *t, const char *s, size_t len) {
    if (!t->cap) return -1;
    for (size_t k = hash_str(s, len) & (t->cap - 1);; k = (k + 1) & (t->cap - 1)) {
        if (!t->key[k]) return -1;
        if (strlen(t->key[k]) == len && memcmp(t->key[k], s, len) == 0) return t->val[k];
    }
}

static int ht_grow(htab *t) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    char **key = calloc(cap, sizeof *key);
    int *val = calloc(cap, sizeof *val);
    if (!key || !val) { free(key); free(val); return ar_errorf("meteor: out of memory"); }
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->key[i]) continue;
        size_t k = hash_str(t->key[i], strlen(t->key[i])) & (cap - 1);
        while (key[k]) k = (k + 1) & (cap - 1);
        key[k] = t->key[i];
        val[k] = t->val[i];
    }
    free(t->key); free(t->val);
    t->key = key; t->val = val; t->cap = cap;
    return 0;
}

/* The id of s[0..len), inserting it with id t->n when new; -1 on OOM. */
static int ht_intern(htab *t, const char *s, size_t len) {
    int v = ht_find(t, s, len);
    if (v >= 0) return v;
    if ((t->n + 1) * 2 > t->cap && ht_grow(t) < 0) return -1;
    char *c = malloc(len + 1);
    if (!c) return ar_errorf("meteor: out of memory");
    memcpy(c, s, len);
    c[len] = 0;
    size_t k = hash_str(s, len) & (t->cap - 1);
    while (t->key[k]) k = (k + 1) & (t->cap - 1);
    t->key[k] = c;
    t->val[k] = (int)t->n;
    return (int)t->n++;
}

static void ht_free(htab *t) {
    for (size_t i = 0; i < t->cap; i++) free(t->key[i]);
    free(t->key); free(t->val);
    memset(t, 0, sizeof *t);
}

/* ================= growable arrays ================= */

typedef struct { int a, b; } pair;
typedef struct { pair *p; size_t n, cap; } pairs;

static int pairs_push(pairs *v, int a, int b) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4096;
        pair *p = realloc(v->p, cap * sizeof *p);
        if (!p) return ar_errorf("meteor: out of memory");
        v->p = p; v->cap = cap;
    }
    v->p[v->n].a = a; v->p[v->n].b = b; v->n++;
    return 0;
}

static int cmp_pair(const void *x, const void *y) {
    const pair *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return p->b < q->b ? -1 : p->b > q->b;
}

/* CSR of sorted, distinct (a, b) pairs over keys 0..nkeys: start[a]..start[a+1]. */
typedef struct { int *start; int *val; } csr;

static int csr_build(csr *c, pairs *v, int nkeys) {
    qsort(v->p, v->n, sizeof *v->p, cmp_pair);
    c->start = calloc((size_t)nkeys + 1, sizeof *c->start);
    c->val = malloc((v->n ? v->n : 1) * sizeof *c->val);
    if (!c->start || !c->val) return ar_errorf("meteor: out of memory");
    size_t m = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (i && v->p[i].a == v->p[i - 1].a && v->p[i].b == v->p[i - 1].b) continue;
        c->val[m++] = v->p[i].b;
        c->start[v->p[i].a + 1]++;
    }
    for (int k = 0; k < nkeys; k++) c->start[k + 1] += c->start[k];
    return 0;
}

/* ================= the handle ================= */

typedef struct {
    int stem;       /* interned id of the Snowball stem */
    int *syn;       /* sorted distinct synset ids (own + base forms) */
    int nsyn;
    int func;       /* in the function-word list */
} winfo;

struct meteor {
    struct sb_stemmer *stemmer;
    int has_wn;
    htab wn;        /* WordNet lemmas and exception forms/bases -> id */
    csr wsyn;       /* id -> synset ids */
    csr wexc;       /* id -> base-form ids (exception lists) */
    int wn_n;
    htab fw;        /* function words */
    htab vocab;     /* words and stems seen while scoring */
    winfo *info;    /* per vocab id; stem == -2 until computed */
    size_t info_cap;
    char label[128];
};

/* Built-in function words: this file's own closed-class English list (see
 * meteor.h for how it differs from the jar's). PTB tokens, lowercase. */
static const char *const FUNCTION_WORDS[] = {
    /* determiners, quantifiers */
    "a", "an", "the", "this", "that", "these", "those", "some", "any", "each", "every", "no", "all", "both",
    "either", "neither", "another", "such", "what", "which", "whose", "whatever", "much", "many", "few",
    "several", "more", "most", "less", "other",
    /* pronouns */
    "i", "me", "my", "mine", "we", "us", "our", "ours", "you", "your", "yours", "he", "him", "his", "she",
    "her", "hers", "it", "its", "they", "them", "their", "theirs", "myself", "yourself", "himself",
    "herself", "itself", "ourselves", "themselves", "who", "whom", "one", "ones", "something", "someone",
    "anything", "nothing",
    /* prepositions */
    "of", "in", "on", "at", "to", "for", "with", "by", "from", "into", "onto", "over", "under", "about",
    "above", "below", "between", "behind", "beside", "besides", "near", "across", "along", "around",
    "through", "during", "before", "after", "against", "among", "toward", "towards", "upon", "within",
    "without", "off", "out", "up", "down", "than", "via", "per", "like", "beneath", "underneath", "inside",
    "outside", "beyond", "past", "since", "until", "till",
    /* conjunctions, complementisers */
    "and", "or", "but", "nor", "so", "yet", "if", "because", "while", "as", "whether", "although",
    "though", "when", "where", "how", "why", "then", "there", "here",
    /* auxiliaries, copulas, modals */
    "be", "is", "am", "are", "was", "were", "been", "being", "have", "has", "had", "having", "do",
    "does", "did", "will", "would", "shall", "should", "can", "could", "may", "might", "must", "ca", "wo",
    /* particles, negation, adverbs of degree */
    "not", "n't", "'t", "t", "'s", "s", "'m", "'d", "'ll", "'re", "'ve", "too", "very", "just", "also",
    "only", "even", "still",
    /* punctuation and symbol tokens */
    ",", ".", ":", ";", "?", "!", "\"", "'", "`", "(", ")", "[", "]", "{", "}", "-lrb-", "-rrb-",
    "-lsb-", "-rsb-", "-lcb-", "-rcb-", "$", "#", "%", "&", "/", "-", "--", "...",
};

/* WordNet's morphy detachment rules (noun, verb, adjective), in the order
 * METEOR tries them: a word ending in sufx[k] may have base word minus
 * sufx[k] plus addr[k]. */
static const char *const MORPH_SUFX[] = {"s", "ses", "xes", "zes", "ches", "shes", "men", "ies",
                                         "s", "ies", "es", "es", "ed", "ed", "ing", "ing",
                                         "er", "est", "er", "est"};
static const char *const MORPH_ADDR[] = {"", "s", "x", "z", "ch", "sh", "man", "y",
                                         "", "y", "e", "", "e", "", "e", "",
                                         "", "", "e", "e"};

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { ar_errorf("meteor: cannot open %s", path); return NULL; }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) { fclose(f); ar_errorf("meteor: out of memory reading %s", path); return NULL; }
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        cap *= 2;
        char *b = realloc(buf, cap);
        if (!b) free(buf);
        buf = b;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); ar_errorf("meteor: error reading %s", path); return NULL; }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Splits line [s, e) into whitespace tokens; returns the count (<= max). */
static int split_tokens(const char *s, const char *e, const char **tok, size_t *tlen, int max) {
    int n = 0;
    while (s < e && n < max) {
        while (s < e && (*s == ' ' || *s == '\t' || *s == '\r')) s++;
        if (s >= e) break;
        const char *t = s;
        while (s < e && *s != ' ' && *s != '\t' && *s != '\r') s++;
        tok[n] = t;
        tlen[n] = (size_t)(s - t);
        n++;
    }
    return n;
}

static int load_wordnet(meteor *m, const char *dir) {
    static const char *const POS[4] = {"noun", "verb", "adj", "adv"};
    pairs syn = {0}, exc = {0};
    char path[4096];
    int rc = -1;
    enum { MAXT = 4096 };
    const char **tok = malloc(MAXT * sizeof *tok);
    size_t *tlen = malloc(MAXT * sizeof *tlen);
    if (!tok || !tlen) { ar_errorf("meteor: out of memory"); goto done; }
    for (int p = 0; p < 4; p++) {
        for (int kind = 0; kind < 2; kind++) {
            if (kind == 0) snprintf(path, sizeof path, "%s/index.%s", dir, POS[p]);
            else snprintf(path, sizeof path, "%s/%s.exc", dir, POS[p]);
            size_t len;
            char *buf = read_file(path, &len);
            if (!buf) goto done;
            int lineno = 0;
            for (char *s = buf, *end = buf + len; s < end;) {
                char *e = memchr(s, '\n', (size_t)(end - s));
                if (!e) e = end;
                lineno++;
                if (s < e && *s != ' ') {
                    int nt = split_tokens(s, e, tok, tlen, MAXT);
                    if (kind == 0) {
                        /* lemma pos synset_cnt p_cnt ptr*p_cnt sense_cnt tagsense_cnt offset*synset_cnt */
                        long cnt = nt >= 3 ? strtol(tok[2], NULL, 10) : -1;
                        if (nt < 4 || cnt < 1 || cnt > nt - 4) {
                            free(buf);
                            ar_errorf("meteor: %s:%d: not a WordNet index line", path, lineno);
                            goto done;
                        }
                        int id = ht_intern(&m->wn, tok[0], tlen[0]);
                        if (id < 0) { free(buf); goto done; }
                        for (int k = nt - (int)cnt; k < nt; k++) {
                            long off = strtol(tok[k], NULL, 10);
                            if (off <= 0 || off > (INT32_MAX - 3) / 4) {
                                free(buf);
                                ar_errorf("meteor: %s:%d: bad synset offset", path, lineno);
                                goto done;
                            }
                            if (pairs_push(&syn, id, (int)(off * 4 + p)) < 0) { free(buf); goto done; }
                        }
                    } else if (nt >= 2) {
                        int id = ht_intern(&m->wn, tok[0], tlen[0]);
                        if (id < 0) { free(buf); goto done; }
                        for (int k = 1; k < nt; k++) {
                            int b = ht_intern(&m->wn, tok[k], tlen[k]);
                            if (b < 0 || pairs_push(&exc, id, b) < 0) { free(buf); goto done; }
                        }
                    }
                }
                s = e + 1;
            }
            free(buf);
        }
    }
    m->wn_n = (int)m->wn.n;
    if (csr_build(&m->wsyn, &syn, m->wn_n) < 0 || csr_build(&m->wexc, &exc, m->wn_n) < 0) goto done;
    if (syn.n == 0) { ar_errorf("meteor: no WordNet lemmas in %s", dir); goto done; }
    m->has_wn = 1;
    rc = 0;
done:
    free(syn.p); free(exc.p); free(tok); free(tlen);
    return rc;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

void meteor_close(meteor *m) {
    if (!m) return;
    if (m->stemmer) sb_stemmer_delete(m->stemmer);
    ht_free(&m->wn);
    free(m->wsyn.start); free(m->wsyn.val); free(m->wexc.start); free(m->wexc.val);
    ht_free(&m->fw);
    ht_free(&m->vocab);
    for (size_t i = 0; i < m->info_cap; i++) free(m->info[i].syn);
    free(m->info);
    free(m);
}

meteor *meteor_open(const char *wordnet_dir, const char *function_words) {
    meteor *m = calloc(1, sizeof *m);
    if (!m) { ar_errorf("meteor: out of memory"); return NULL; }
    m->stemmer = sb_stemmer_new("english", "UTF_8");
    if (!m->stemmer) { ar_errorf("meteor: libstemmer has no English stemmer"); goto fail; }
    if (function_words) {
        size_t len;
        char *buf = read_file(function_words, &len);
        if (!buf) goto fail;
        for (char *s = buf, *end = buf + len; s < end;) {
            char *e = memchr(s, '\n', (size_t)(end - s));
            if (!e) e = end;
            size_t n = (size_t)(e - s);
            if (n && s[n - 1] == '\r') n--;
            if (n && ht_intern(&m->fw, s, n) < 0) { free(buf); goto fail; }
            s = e + 1;
        }
        free(buf);
    } else {
        for (size_t i = 0; i < sizeof FUNCTION_WORDS / sizeof *FUNCTION_WORDS; i++)
            if (ht_intern(&m->fw, FUNCTION_WORDS[i], strlen(FUNCTION_WORDS[i])) < 0) goto fail;
    }
    const char *dir = wordnet_dir ? wordnet_dir : METEOR_DEFAULT_WORDNET;
    if (wordnet_dir ? wordnet_dir[0] != 0 : is_dir(dir)) {
        if (load_wordnet(m, dir) < 0) {
            ar_error_prefix("WordNet in %s: ", dir);
            goto fail;
        }
    }
    snprintf(m->label, sizeof m->label, "%s",
             m->has_wn ? "METEOR (approx.: exact+stem+WordNet, no paraphrases)"
               : wordnet_dir ? "METEOR (approx.: exact+stem only, WordNet off; no synonyms, no paraphrases)"
                             : "METEOR (approx.: exact+stem only, WordNet not found; no synonyms, no paraphrases)");
    return m;
fail:
    meteor_close(m);
    return NULL;
}

int meteor_has_wordnet(const meteor *m) { return m && m->has_wn; }
const char *meteor_name(const meteor *m) { return m ? m->label : "METEOR (approx.)"; }

/* ================= -norm ================= */

typedef struct { char *p; size_t n, cap; int oom; } sbuf;

static void sb_putc(sbuf *b, char c) {
    if (b->oom) return;
    if (b->n + 2 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q; b->cap = cap;
    }
    b->p[b->n++] = c;
    b->p[b->n] = 0;
}
static void sb_puts(sbuf *b, const char *s) { while (*s) sb_putc(b, *s++); }

static int c_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int c_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80; }
static int c_alnum(unsigned char c) { return c_alpha(c) || c_digit(c); }
static int c_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* One regex-like pass "([A])X([B]) -> $1 R $2" over s, non-overlapping
 * left to right like Java's replaceAll: returns the new string (frees s). */
typedef int (*cls_fn)(unsigned char);
static char *pass3(char *s, char x, cls_fn a, cls_fn bcls, const char *rep, int *oom) {
    if (!s) return NULL;
    sbuf b = {0};
    size_t n = strlen(s), i = 0;
    while (i < n) {
        if (i + 2 < n && s[i + 1] == x && a((unsigned char)s[i]) && bcls((unsigned char)s[i + 2])) {
            sb_putc(&b, s[i]);
            sb_puts(&b, rep);
            sb_putc(&b, s[i + 2]);
            i += 3;
        } else {
            sb_putc(&b, s[i++]);
        }
    }
    if (!b.p) sb_puts(&b, "");
    free(s);
    if (b.oom) { free(b.p); *oom = 1; return NULL; }
    return b.p;
}

static int k_notdigit(unsigned char c) { return !c_digit(c); }
static int k_digit(unsigned char c) { return c_digit(c); }
static int k_notalpha(unsigned char c) { return !c_alpha(c); }
static int k_alpha(unsigned char c) { return c_alpha(c); }
static int k_notalnum(unsigned char c) { return !c_alnum(c); }   /* [^alpha digit] */
static int k_alnum(unsigned char c) { return c_alnum(c); }
static int k_alnumdot(unsigned char c) { return c_alnum(c) || c == '.'; }
static int k_s(unsigned char c) { return c == 's'; }

char *meteor_normalize(const char *line) {
    int oom = 0;
    sbuf b = {0};
    /* wrap in spaces; split off every symbol other than . ' ` , - ; ASCII-lowercase
     * (METEOR lowercases after normalising; no rule below depends on case
     * except the next-word-lowercase dot rule, applied to lowercased text
     * in coco-caption's use anyway) */
    sb_putc(&b, ' ');
    for (const unsigned char *p = (const unsigned char *)line; *p; p++) {
        unsigned char c = *p;
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c_alnum(c) || c_space(c) || c == '.' || c == '\'' || c == '`' || c == ',' || c == '-') {
            sb_putc(&b, c_space(c) ? ' ' : (char)c);
        } else {
            sb_putc(&b, ' '); sb_putc(&b, (char)c); sb_putc(&b, ' ');
        }
    }
    sb_putc(&b, ' ');
    if (b.oom) { free(b.p); ar_errorf("meteor: out of memory"); return NULL; }
    char *s = b.p;
    /* commas except within numbers */
    s = pass3(s, ',', k_notdigit, k_notdigit, " , ", &oom);
    s = pass3(s, ',', k_digit, k_notdigit, " , ", &oom);
    s = pass3(s, ',', k_notdigit, k_digit, " , ", &oom);
    if (!s) { ar_errorf("meteor: out of memory"); return NULL; }
    /* quotes: ` -> ' ; '' -> " (split off); -- -> - */
    {
        sbuf q = {0};
        for (size_t i = 0; s[i]; i++) {
            char c = s[i] == '`' ? '\'' : s[i];
            char d = s[i + 1] == '`' ? '\'' : s[i + 1];
            if (c == '\'' && d == '\'') { sb_puts(&q, " \" "); i++; }
            else if (c == '-' && d == '-') { sb_putc(&q, '-'); i++; }
            else sb_putc(&q, c);
        }
        free(s);
        if (q.oom) { free(q.p); ar_errorf("meteor: out of memory"); return NULL; }
        s = q.p;
    }
    /* dashes between letters/digits (or after a dot) removed */
    s = pass3(s, '-', k_alnumdot, k_alnum, " ", &oom);
    /* English apostrophes */
    s = pass3(s, '\'', k_notalpha, k_notalpha, " ' ", &oom);
    s = pass3(s, '\'', k_notalnum, k_alpha, " ' ", &oom);
    s = pass3(s, '\'', k_alpha, k_notalpha, " ' ", &oom);
    s = pass3(s, '\'', k_alpha, k_alpha, " '", &oom);
    s = pass3(s, '\'', k_digit, k_s, " '", &oom);
    if (!s) { ar_errorf("meteor: out of memory"); return NULL; }
    /* words; a final dot split off unless dotted inside or a lowercase word follows */
    sbuf o = {0};
    const char *p = s;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *w = p;
        while (*p && *p != ' ') p++;
        size_t n = (size_t)(p - w);
        const char *nx = p;
        while (*nx == ' ') nx++;
        if (o.n) sb_putc(&o, ' ');
        if (n > 1 && w[n - 1] == '.') {
            int inner_dot = 0, letter = 0;
            for (size_t k = 0; k + 1 < n; k++) {
                if (w[k] == '.') inner_dot = 1;
                if (c_alpha((unsigned char)w[k])) letter = 1;
            }
            if (inner_dot && letter) {
                for (size_t k = 0; k < n; k++) if (w[k] != '.') sb_putc(&o, w[k]);
            } else if (*nx >= 'a' && *nx <= 'z') {
                for (size_t k = 0; k < n; k++) sb_putc(&o, w[k]);
            } else {
                for (size_t k = 0; k + 1 < n; k++) sb_putc(&o, w[k]);
                sb_puts(&o, " .");
            }
        } else {
            for (size_t k = 0; k < n; k++) sb_putc(&o, w[k]);
        }
    }
    free(s);
    if (!o.oom && !o.p) sb_putc(&o, 'x'), o.n = 0, o.p[0] = 0;   /* "" for no words */
    if (o.oom) { free(o.p); ar_errorf("meteor: out of memory"); return NULL; }
    return o.p;
}

/* ================= word information ================= */

static int wn_has(const meteor *m, const char *s, size_t len) {
    int id = ht_find(&m->wn, s, len);
    return id >= 0 && m->wsyn.start[id + 1] > m->wsyn.start[id];
}

static int add_syn(const meteor *m, int id, int **v, int *n, int *cap) {
    if (id < 0) return 0;
    for (int k = m->wsyn.start[id]; k < m->wsyn.start[id + 1]; k++) {
        if (*n == *cap) {
            int c = *cap ? *cap * 2 : 16;
            int *q = realloc(*v, (size_t)c * sizeof *q);
            if (!q) return ar_errorf("meteor: out of memory");
            *v = q; *cap = c;
        }
        (*v)[(*n)++] = m->wsyn.val[k];
    }
    return 0;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

/* The synsets METEOR's synonym module compares for word w: its own plus
 * those of its base forms (exception list, else the first morphy rule whose
 * result is a WordNet lemma; "...ss" words and words of <= 2 letters are
 * their own base). */
static int word_synsets(const meteor *m, const char *w, int **out, int *nout) {
    int *v = NULL, n = 0, cap = 0;
    size_t len = strlen(w);
    int id = ht_find(&m->wn, w, len);
    if (add_syn(m, id, &v, &n, &cap) < 0) goto oom;
    if (id >= 0 && m->wexc.start[id + 1] > m->wexc.start[id]) {
        for (int k = m->wexc.start[id]; k < m->wexc.start[id + 1]; k++)
            if (add_syn(m, m->wexc.val[k], &v, &n, &cap) < 0) goto oom;
    } else if ((len >= 2 && w[len - 2] == 's' && w[len - 1] == 's') || len <= 2) {
        if (add_syn(m, id, &v, &n, &cap) < 0) goto oom;
    } else {
        char base[256];
        for (size_t r = 0; r < sizeof MORPH_SUFX / sizeof *MORPH_SUFX; r++) {
            size_t sl = strlen(MORPH_SUFX[r]), al = strlen(MORPH_ADDR[r]);
            if (sl > len || memcmp(w + len - sl, MORPH_SUFX[r], sl) != 0) continue;
            if (len - sl + al >= sizeof base) continue;
            memcpy(base, w, len - sl);
            memcpy(base + len - sl, MORPH_ADDR[r], al);
            size_t bl = len - sl + al;
            if (wn_has(m, base, bl)) {
                if (add_syn(m, ht_find(&m->wn, base, bl), &v, &n, &cap) < 0) goto oom;
                break;
            }
        }
    }
    if (n > 1) {
        qsort(v, (size_t)n, sizeof *v, cmp_int);
        int u = 1;
        for (int k = 1; k < n; k++) if (v[k] != v[u - 1]) v[u++] = v[k];
        n = u;
    }
    *out = v; *nout = n;
    return 0;
oom:
    free(v);
    return -1;
}

/* Interns word w (a NUL-terminated token) and fills its cached information. */
static int word_id(meteor *m, const char *w, size_t len) {
    int id = ht_intern(&m->vocab, w, len);
    if (id < 0) return -1;
    if ((size_t)id >= m->info_cap) {
        size_t cap = m->info_cap ? m->info_cap * 2 : 1024;
        while (cap <= (size_t)id) cap *= 2;
        winfo *q = realloc(m->info, cap * sizeof *q);
        if (!q) return ar_errorf("meteor: out of memory");
        for (size_t i = m->info_cap; i < cap; i++) { q[i].stem = -2; q[i].syn = NULL; q[i].nsyn = 0; q[i].func = 0; }
        m->info = q; m->info_cap = cap;
    }
    if (m->info[id].stem != -2) return id;
    const sb_symbol *st = sb_stemmer_stem(m->stemmer, (const sb_symbol *)w, (int)len);
    if (!st) return ar_errorf("meteor: out of memory (stemmer)");
    int sl = sb_stemmer_length(m->stemmer);
    char sbuf_[512];
    size_t sn = (size_t)sl < sizeof sbuf_ - 1 ? (size_t)sl : sizeof sbuf_ - 1;
    memcpy(sbuf_, st, sn);
    int sid = ht_intern(&m->vocab, sbuf_, sn);   /* may grow vocab but not info */
    if (sid < 0) return -1;
    winfo wi = {sid, NULL, 0, ht_find(&m->fw, w, len) >= 0};
    if (m->has_wn) {
        char *tmp = malloc(len + 1);
        if (!tmp) return ar_errorf("meteor: out of memory");
        memcpy(tmp, w, len);
        tmp[len] = 0;
        int rc = word_synsets(m, tmp, &wi.syn, &wi.nsyn);
        free(tmp);
        if (rc < 0) return -1;
    }
    m->info[id] = wi;
    return id;
}

static int syn_meet(const winfo *a, const winfo *b) {
    int i = 0, j = 0;
    while (i < a->nsyn && j < b->nsyn) {
        if (a->syn[i] == b->syn[j]) return 1;
        if (a->syn[i] < b->syn[j]) i++; else j++;
    }
    return 0;
}

/* ================= alignment ================= */

typedef struct {
    double tlen, rlen, tfun, rfun;
    double tc[NMOD], rc[NMOD], tf[NMOD], rf[NMOD];
    double chunks, twm, rwm;   /* chunks; matched words in hypothesis / reference */
    double score;
} mstats;

typedef struct { int i, j, mod; } mmatch;

typedef struct path {
    int m1, m2, chunks, idx, last, dist;
    int *sel;                 /* [n2] match index chosen at each ref position, -1 none */
    unsigned char *u1, *u2;   /* used hypothesis / reference words */
    int order;                /* insertion order, for a stable sort */
} path;

static path *path_new(int n1, int n2) {
    path *p = malloc(sizeof *p + (size_t)n2 * sizeof(int) + (size_t)n1 + (size_t)n2 + 8);
    if (!p) return NULL;
    p->sel = (int *)(p + 1);
    p->u1 = (unsigned char *)(p->sel + n2);
    p->u2 = p->u1 + n1;
    return p;
}

static path *path_copy(const path *q, int n1, int n2) {
    path *p = path_new(n1, n2);
    if (!p) return NULL;
    p->m1 = q->m1; p->m2 = q->m2; p->chunks = q->chunks; p->idx = q->idx; p->last = q->last; p->dist = q->dist;
    memcpy(p->sel, q->sel, (size_t)n2 * sizeof(int));
    memcpy(p->u1, q->u1, (size_t)n1);
    memcpy(p->u2, q->u2, (size_t)n2);
    return p;
}

static int cmp_path(const void *a, const void *b) {
    const path *x = *(path *const *)a, *y = *(path *const *)b;
    int d = (y->m1 + y->m2) - (x->m1 + x->m2);
    if (d) return d > 0 ? 1 : -1;
    if (x->chunks != y->chunks) return x->chunks < y->chunks ? -1 : 1;
    if (x->dist != y->dist) return x->dist < y->dist ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* METEOR's weighted count update: Java int += double truncates. */
static int wadd(int v, int mod) { return (int)((double)v + MOD_W[mod]); }

typedef struct { path **p; int n, cap; } plist;

static int pl_push(plist *l, path *p) {
    if (!p) return ar_errorf("meteor: out of memory");
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        path **q = realloc(l->p, (size_t)cap * sizeof *q);
        if (!q) { free(p); return ar_errorf("meteor: out of memory"); }
        l->p = q; l->cap = cap;
    }
    p->order = l->n;
    l->p[l->n++] = p;
    return 0;
}

static void pl_clear(plist *l) {
    for (int i = 0; i < l->n; i++) free(l->p[i]);
    l->n = 0;
}

static void compute_score(mstats *s) {
    double tw = DELTA * (s->tlen - s->tfun) + (1.0 - DELTA) * s->tfun;
    double rw = DELTA * (s->rlen - s->rfun) + (1.0 - DELTA) * s->rfun;
    double tm = 0, rm = 0, ttot = 0, rtot = 0;
    for (int k = 0; k < NMOD; k++) {
        tm += s->tc[k] * MOD_W[k] * DELTA;
        rm += s->rc[k] * MOD_W[k] * DELTA;
        ttot += s->tc[k] + s->tf[k];
        rtot += s->rc[k] + s->rf[k];
    }
    for (int k = 0; k < NMOD; k++) {
        tm += s->tf[k] * MOD_W[k] * (1.0 - DELTA);
        rm += s->rf[k] * MOD_W[k] * (1.0 - DELTA);
    }
    double P = tm / tw, R = rm / rw;
    double fmean = 1.0 / ((1.0 - ALPHA) / P + ALPHA / R);
    double frag;
    if (ttot == s->tlen && rtot == s->rlen && s->chunks == 1) frag = 0;
    else frag = s->chunks / ((s->twm + s->rwm) / 2);
    double score = fmean * (1.0 - GAMMA * pow(frag, BETA));
    s->score = isnan(score) ? 0.0 : (score > 0 ? score : 0.0);
}

/* Aligns hypothesis words w1[n1] with reference words w2[n2] (vocab ids)
 * and fills the statistics. */
static int align_pair(meteor *m, const int *w1, int n1, const int *w2, int n2, mstats *st) {
    int rc = -1;
    mmatch *mt = NULL;
    int nm = 0, capm = 0;
    int *cov1 = calloc((size_t)n1 + 1, sizeof *cov1), *cov2 = calloc((size_t)n2 + 1, sizeof *cov2);
    int *mstart = calloc((size_t)n2 + 2, sizeof *mstart), *morder = NULL;
    plist cur = {0}, next = {0};
    if (!cov1 || !cov2 || !mstart) { ar_errorf("meteor: out of memory"); goto done; }

    int same = n1 == n2;
    for (int k = 0; same && k < n1; k++) same = w1[k] == w2[k];
    int mods = same ? 1 : (m->has_wn ? 3 : 2);
    for (int mod = 0; mod < mods; mod++) {
        for (int j = 0; j < n2; j++) {
            for (int i = 0; i < n1; i++) {
                const winfo *a = &m->info[w1[i]], *b = &m->info[w2[j]];
                int hit = mod == MOD_EXACT ? w1[i] == w2[j]
                        : mod == MOD_STEM  ? (w1[i] != w2[j] && a->stem == b->stem)
                                           : (w1[i] != w2[j] && syn_meet(a, b));
                if (!hit) continue;
                if (nm == capm) {
                    int c = capm ? capm * 2 : 64;
                    mmatch *q = realloc(mt, (size_t)c * sizeof *q);
                    if (!q) { ar_errorf("meteor: out of memory"); goto done; }
                    mt = q; capm = c;
                }
                mt[nm].i = i; mt[nm].j = j; mt[nm].mod = mod; nm++;
                cov1[i]++; cov2[j]++;
            }
        }
    }
    /* matches grouped by reference position, in proposal order */
    morder = malloc(((size_t)nm + 1) * sizeof *morder);
    if (!morder) { ar_errorf("meteor: out of memory"); goto done; }
    for (int k = 0; k < nm; k++) mstart[mt[k].j + 1]++;
    for (int j = 0; j < n2; j++) mstart[j + 1] += mstart[j];
    {
        int *fill = calloc((size_t)n2 + 1, sizeof *fill);
        if (!fill) { ar_errorf("meteor: out of memory"); goto done; }
        for (int k = 0; k < nm; k++) morder[mstart[mt[k].j] + fill[mt[k].j]++] = k;
        free(fill);
    }

    /* the start: one-to-one matches are definite */
    path *p0 = path_new(n1, n2);
    if (!p0) { ar_errorf("meteor: out of memory"); goto done; }
    p0->m1 = p0->m2 = p0->chunks = p0->idx = p0->dist = 0;
    p0->last = -1;
    memset(p0->u1, 0, (size_t)n1);
    memset(p0->u2, 0, (size_t)n2);
    for (int j = 0; j < n2; j++) {
        p0->sel[j] = -1;
        if (mstart[j + 1] - mstart[j] == 1) {
            int k = morder[mstart[j]];
            if (cov2[j] == 1 && cov1[mt[k].i] == 1) {
                p0->sel[j] = k;
                p0->u2[j] = 1;
                p0->u1[mt[k].i] = 1;
            }
        }
    }
    if (pl_push(&next, p0) < 0) goto done;

    /* beam search over reference positions */
    for (int c = 0; c <= n2; c++) {
        plist t = cur; cur = next; next = t;
        pl_clear(&next);
        qsort(cur.p, (size_t)cur.n, sizeof *cur.p, cmp_path);
        for (int r = 0; r < cur.n && r < BEAM; r++) {
            path *p = cur.p[r];
            if (c == n2) {
                if (p->last != -1) p->chunks++;
                cur.p[r] = NULL;
                if (pl_push(&next, p) < 0) goto done;
                continue;
            }
            if (p->u2[c]) {
                if (c < p->idx) {
                    cur.p[r] = NULL;
                    if (pl_push(&next, p) < 0) goto done;
                } else if (p->sel[p->idx] >= 0) {
                    const mmatch *q = &mt[p->sel[p->idx]];
                    p->m1 = wadd(p->m1, q->mod);
                    p->m2 = wadd(p->m2, q->mod);
                    if (p->last != -1 && q->i != p->last) p->chunks++;
                    p->idx = q->j + 1;
                    p->last = q->i + 1;
                    p->dist += abs(q->j - q->i);
                    cur.p[r] = NULL;
                    if (pl_push(&next, p) < 0) goto done;
                }
                continue;
            }
            for (int e = mstart[c]; e < mstart[c + 1]; e++) {
                int k = morder[e];
                const mmatch *q = &mt[k];
                if (p->u2[q->j] || p->u1[q->i]) continue;
                path *np = path_copy(p, n1, n2);
                if (!np) { ar_errorf("meteor: out of memory"); goto done; }
                np->u2[q->j] = 1;
                np->u1[q->i] = 1;
                np->sel[c] = k;
                np->m1 = wadd(np->m1, q->mod);
                np->m2 = wadd(np->m2, q->mod);
                if (np->last != -1 && q->i != np->last) np->chunks++;
                np->idx = q->j + 1;
                np->last = q->i + 1;
                p->dist += abs(q->j - q->i);   /* as in METEOR: added to the skipping path */
                if (pl_push(&next, np) < 0) goto done;
            }
            if (p->last != -1) { p->chunks++; p->last = -1; }
            p->idx++;
            cur.p[r] = NULL;
            if (pl_push(&next, p) < 0) goto done;
        }
        if (next.n == 0 && cur.n > 0) {
            path *p = cur.p[0] ? cur.p[0] : NULL;
            if (!p) { ar_errorf("meteor: internal error: empty beam"); goto done; }
            cur.p[0] = NULL;
            if (pl_push(&next, p) < 0) goto done;
        }
        pl_clear(&cur);
    }
    qsort(next.p, (size_t)next.n, sizeof *next.p, cmp_path);
    const path *best = next.p[0];

    memset(st, 0, sizeof *st);
    st->tlen = n1;
    st->rlen = n2;
    for (int i = 0; i < n1; i++) st->tfun += m->info[w1[i]].func;
    for (int j = 0; j < n2; j++) st->rfun += m->info[w2[j]].func;
    int last = -1, chunks = 0;
    for (int j = 0; j < n2; j++) {
        int k = best->sel[j];
        if (k < 0) {
            if (last != -1) { chunks++; last = -1; }
            continue;
        }
        const mmatch *q = &mt[k];
        if (m->info[w1[q->i]].func) st->tf[q->mod]++; else st->tc[q->mod]++;
        if (m->info[w2[q->j]].func) st->rf[q->mod]++; else st->rc[q->mod]++;
        st->twm++; st->rwm++;
        if (last != -1 && q->i != last) chunks++;
        last = q->i + 1;
    }
    if (last != -1) chunks++;
    st->chunks = chunks;
    compute_score(st);
    rc = 0;
done:
    pl_clear(&cur); pl_clear(&next);
    free(cur.p); free(next.p);
    free(mt); free(cov1); free(cov2); free(mstart); free(morder);
    return rc;
}

/* Normalises and interns a sentence; *ids malloc'd. */
static int sentence_ids(meteor *m, const char *s, int **ids, int *n) {
    char *t = meteor_normalize(s);
    if (!t) return -1;
    int cap = 16, k = 0;
    int *v = malloc((size_t)cap * sizeof *v);
    if (!v) { free(t); return ar_errorf("meteor: out of memory"); }
    for (char *p = t; *p;) {
        while (*p == ' ') p++;
        if (!*p) break;
        char *w = p;
        while (*p && *p != ' ') p++;
        if (k == cap) {
            cap *= 2;
            int *q = realloc(v, (size_t)cap * sizeof *q);
            if (!q) { free(v); free(t); return ar_errorf("meteor: out of memory"); }
            v = q;
        }
        int id = word_id(m, w, (size_t)(p - w));
        if (id < 0) { free(v); free(t); return -1; }
        v[k++] = id;
    }
    free(t);
    *ids = v; *n = k;
    return 0;
}

static void stats_add(mstats *acc, const mstats *s) {
    acc->tlen += s->tlen; acc->rlen += s->rlen; acc->tfun += s->tfun; acc->rfun += s->rfun;
    double ttot = 0, rtot = 0;
    for (int k = 0; k < NMOD; k++) {
        acc->tc[k] += s->tc[k]; acc->rc[k] += s->rc[k]; acc->tf[k] += s->tf[k]; acc->rf[k] += s->rf[k];
        ttot += s->tc[k] + s->tf[k];
        rtot += s->rc[k] + s->rf[k];
    }
    if (!(ttot == s->tlen && rtot == s->rlen && s->chunks == 1)) acc->chunks += s->chunks;
    acc->twm += s->twm; acc->rwm += s->rwm;
}

int meteor_score(meteor *m, int n, const char *const *cands, const char *const *const *refs, const int *n_refs,
                 double *corpus, double *per_sample) {
    if (!m || n < 1 || !cands || !refs || !n_refs || !corpus)
        return ar_errorf("meteor_score: bad arguments (n = %d)", n);
    for (int i = 0; i < n; i++) {
        if (!cands[i] || !refs[i] || n_refs[i] < 1) return ar_errorf("meteor_score: sample %d: no candidate or references", i);
        for (int r = 0; r < n_refs[i]; r++)
            if (!refs[i][r]) return ar_errorf("meteor_score: sample %d: reference %d is NULL", i, r);
    }
    mstats acc;
    memset(&acc, 0, sizeof acc);
    for (int i = 0; i < n; i++) {
        int *h = NULL, nh = 0;
        if (sentence_ids(m, cands[i], &h, &nh) < 0) return ar_error_prefix("meteor_score: sample %d: ", i);
        mstats best;
        memset(&best, 0, sizeof best);
        best.score = -1;
        for (int r = 0; r < n_refs[i]; r++) {
            int *w = NULL, nw = 0;
            mstats st;
            if (sentence_ids(m, refs[i][r], &w, &nw) < 0 || align_pair(m, h, nh, w, nw, &st) < 0) {
                free(h); free(w);
                return ar_error_prefix("meteor_score: sample %d: ", i);
            }
            free(w);
            if (st.score > best.score) best = st;
        }
        free(h);
        if (per_sample) per_sample[i] = best.score;
        stats_add(&acc, &best);
    }
    compute_score(&acc);
    *corpus = acc.score;
    return 0;
}
