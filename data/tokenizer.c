/* data/tokenizer.c — vocabulary, added tokens, encoding and decoding (see
 * tokenizer.h). The file formats are read by tokenizer_spm.c (.model) and
 * tokenizer_hf.c (.json); both fill the same struct tokenizer.
 *
 * Encoding works on one normalised run of text at a time with a doubly
 * linked list of symbols (byte ranges of the normalised text) and a binary
 * heap of candidate merges, O(n log n) in the length of the run:
 *   .model  a candidate is an adjacent pair (left, right) whose concatenated
 *           bytes are a NORMAL / USER_DEFINED / UNUSED piece; priority = the
 *           piece's score, then the smaller left index. A popped candidate is
 *           stale if either side was merged since (sizes no longer add up).
 *           UNUSED pieces are split back into the pair that formed them.
 *   .json   a candidate is an adjacent pair of ids listed in the merges;
 *           priority = the lower rank, then the smaller position. A popped
 *           candidate is stale if the pair at its position no longer merges
 *           into the same id.
 */
#include "data/tokenizer_internal.h"

#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPACE_SYMBOL "\xE2\x96\x81"   /* U+2581 '▁' */
#define REPLACEMENT "\xEF\xBF\xBD"    /* U+FFFD */

/* ------------------------------------------------------------------------ */
/* UTF-8                                                                    */
/* ------------------------------------------------------------------------ */

/* Length (1..4) of the valid UTF-8 character at s[0..n), 0 if it is not one
 * (bad lead byte, bad or missing trail byte, overlong, surrogate, > U+10FFFF). */
static int utf8_char_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        unsigned cp = ((c & 0x1F) << 6) | (s[1] & 0x3F);
        return cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xF0) == 0xE0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        unsigned cp = ((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        return cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) ? 3 : 0;
    }
    if ((c & 0xF8) == 0xF0) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        unsigned cp = ((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
    }
    return 0;
}

int tok_utf8_valid(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        int l = utf8_char_len(u + i, len - i);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

int tok_byte_piece_value(const char *s, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *h1 = memchr(hex, s[3], 16), *h2 = memchr(hex, s[4], 16);
    if (!h1 || !h2 || !s[3] || !s[4]) return -1;
    return (int)((h1 - hex) * 16 + (h2 - hex));
}

/* ------------------------------------------------------------------------ */
/* Vocabulary                                                               */
/* ------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

tokenizer *tok_new(int kind) {
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        ar_errorf("tokenizer: out of memory");
        return NULL;
    }
    t->kind = kind;
    t->unk = t->bos = t->eos = t->pad = t->ws_id = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    t->add_dummy_prefix = 1;
    return t;
}

void tok_free(tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        free(t->p[i].s);
        free(t->p[i].text);
    }
    free(t->p);
    free(t->tab);
    free(t->unk_surface);
    free(t->merges);
    for (int i = 0; i < t->n_split; i++) free(t->split[i].pat);
    free(t->split);
    free(t->order[0]);
    free(t->order[1]);
    free(t);
}

int tok_push_piece(tokenizer *t, const char *s, size_t len, float score, int type) {
    if (len > UINT32_MAX - 1 || t->n == INT32_MAX - 1) return ar_errorf("tokenizer: piece too long or too many pieces");
    if (t->n == t->cap) {
        int cap = t->cap ? (t->cap > INT32_MAX / 2 ? INT32_MAX - 1 : t->cap * 2) : 1024;
        tok_piece_t *np = realloc(t->p, (size_t)cap * sizeof *np);
        if (!np) return ar_errorf("tokenizer: out of memory");
        t->p = np;
        t->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return ar_errorf("tokenizer: out of memory");
    memcpy(c, s, len);
    c[len] = '\0';
    tok_piece_t *p = &t->p[t->n];
    p->s = c;
    p->len = (uint32_t)len;
    p->score = score;
    p->type = (uint8_t)type;
    p->special = 0;
    p->text = NULL;
    p->text_len = 0;
    return t->n++;
}

int tok_lookup(const tokenizer *t, const char *s, size_t len) {
    if (!t->tab) return -1;
    for (uint32_t h = (uint32_t)hash_bytes(s, len) & t->tab_mask;; h = (h + 1) & t->tab_mask) {
        int id = t->tab[h];
        if (id < 0) return -1;
        if (t->p[id].len == len && memcmp(t->p[id].s, s, len) == 0) return id;
    }
}

/* Inserts id (the table has room); returns the id already holding that string, or -1. */
static int tab_insert(tokenizer *t, int id) {
    for (uint32_t h = (uint32_t)hash_bytes(t->p[id].s, t->p[id].len) & t->tab_mask;; h = (h + 1) & t->tab_mask) {
        int o = t->tab[h];
        if (o < 0) {
            t->tab[h] = id;
            return -1;
        }
        if (t->p[o].len == t->p[id].len && memcmp(t->p[o].s, t->p[id].s, t->p[id].len) == 0) return o;
    }
}

/* (Re)allocates the table for at least `need` entries at load <= 1/2 and inserts ids [0, n). */
static int tab_rebuild(tokenizer *t, size_t need, const char *origin) {
    size_t size = 64;
    while (size < 2 * need) size *= 2;
    if (size > ((size_t)1 << 31)) return ar_errorf("%s: too many pieces", origin);
    int32_t *tab = malloc(size * sizeof *tab);
    if (!tab) return ar_errorf("tokenizer: out of memory");
    memset(tab, 0xFF, size * sizeof *tab);
    free(t->tab);
    t->tab = tab;
    t->tab_mask = (uint32_t)(size - 1);
    for (int i = 0; i < t->n; i++) {
        int dup = tab_insert(t, i);
        if (dup >= 0)
            return ar_errorf("%s: piece '%s' appears twice (ids %d and %d); pieces must be unique", origin,
                             t->p[i].s, dup, i);
    }
    return 0;
}

int tok_build_index(tokenizer *t, const char *origin) { return tab_rebuild(t, (size_t)t->n, origin); }

/* ------------------------------------------------------------------------ */
/* Added tokens and user-defined symbols                                    */
/* ------------------------------------------------------------------------ */

static int rebuild_split_order(tokenizer *t) {
    for (int st = 0; st < 2; st++) {
        int *ord = malloc((size_t)(t->n_split ? t->n_split : 1) * sizeof *ord);
        if (!ord) return ar_errorf("tokenizer: out of memory");
        int cnt[257] = {0};
        for (int i = 0; i < t->n_split; i++)
            if (t->split[i].normalized == st) cnt[(unsigned char)t->split[i].pat[0] + 1]++;
        for (int b = 0; b < 256; b++) cnt[b + 1] += cnt[b];
        memcpy(t->start[st], cnt, sizeof cnt);
        int fill[256];
        for (int b = 0; b < 256; b++) fill[b] = cnt[b];
        for (int i = 0; i < t->n_split; i++)
            if (t->split[i].normalized == st) ord[fill[(unsigned char)t->split[i].pat[0]]++] = i;
        /* longest first within a bucket (insertion sort: buckets are small) */
        for (int b = 0; b < 256; b++)
            for (int i = cnt[b] + 1; i < cnt[b + 1]; i++) {
                int x = ord[i], j = i - 1;
                while (j >= cnt[b] && t->split[ord[j]].len < t->split[x].len) {
                    ord[j + 1] = ord[j];
                    j--;
                }
                ord[j + 1] = x;
            }
        free(t->order[st]);
        t->order[st] = ord;
    }
    return 0;
}

int tok_push_split(tokenizer *t, const char *pat, size_t len, int id, int normalized) {
    if (len == 0) return ar_errorf("tokenizer: an added token must not be empty");
    for (int i = 0; i < t->n_split; i++)   /* already there: nothing to do */
        if (t->split[i].normalized == normalized && t->split[i].len == len && memcmp(t->split[i].pat, pat, len) == 0) {
            t->split[i].id = id;
            return 0;
        }
    if (t->n_split == t->cap_split) {
        int cap = t->cap_split ? t->cap_split * 2 : 16;
        tok_split_t *ns = realloc(t->split, (size_t)cap * sizeof *ns);
        if (!ns) return ar_errorf("tokenizer: out of memory");
        t->split = ns;
        t->cap_split = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return ar_errorf("tokenizer: out of memory");
    memcpy(c, pat, len);
    c[len] = '\0';
    t->split[t->n_split++] = (tok_split_t){c, (uint32_t)len, id, (uint8_t)normalized};
    return rebuild_split_order(t);
}

/* The longest split string of `stage` that starts at s[0..n): its index, or -1. */
static int match_split(const tokenizer *t, int stage, const char *s, size_t n) {
    unsigned b = (unsigned char)s[0];
    const int *ord = t->order[stage];
    for (int k = t->start[stage][b]; k < t->start[stage][b + 1]; k++) {
        const tok_split_t *sp = &t->split[ord[k]];
        if (sp->len <= n && memcmp(sp->pat, s, sp->len) == 0) return ord[k];
    }
    return -1;
}

int tok_add_special(tokenizer *t, const char *text) {
    size_t len = strlen(text);
    if (len == 0) return ar_errorf("tok_add_special: the token text is empty");
    if (!tok_utf8_valid(text, len)) return ar_errorf("tok_add_special: '%s' is not valid UTF-8", text);
    int id = tok_lookup(t, text, len);
    if (id < 0) {
        if ((size_t)t->n + 1 > (size_t)(t->tab_mask + 1) / 2 && tab_rebuild(t, (size_t)t->n + 1, "tok_add_special") < 0)
            return -1;
        id = tok_push_piece(t, text, len, 0.0f, TP_ADDED);
        if (id < 0) return -1;
        tab_insert(t, id);
    }
    if (tok_push_split(t, text, len, id, 0) < 0) return -1;
    return id;
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                */
/* ------------------------------------------------------------------------ */

const char *tok_kind(const tokenizer *t) { return t->kind == TOK_SPM ? "sentencepiece" : "tokenizers"; }
int tok_vocab_size(const tokenizer *t) { return t->n; }
int tok_bos(const tokenizer *t) { return t->bos; }
int tok_eos(const tokenizer *t) { return t->eos; }
int tok_unk(const tokenizer *t) { return t->unk; }
int tok_pad(const tokenizer *t) { return t->pad; }
const char *tok_piece(const tokenizer *t, int id) { return id >= 0 && id < t->n ? t->p[id].s : NULL; }
int tok_piece_to_id(const tokenizer *t, const char *piece) { return tok_lookup(t, piece, strlen(piece)); }

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    double key;     /* .model: score; .json: -rank. Larger first. */
    int32_t a;      /* .model: left symbol; .json: position */
    int32_t b;      /* .model: right symbol; .json: new id */
    int32_t size;   /* .model: byte length of the merged piece */
} cand_t;

typedef struct {
    int32_t id;                       /* UNUSED piece id, -1 = empty slot */
    int32_t l_off, l_len, r_off, r_len;
} rev_t;

typedef struct {
    char *norm;
    size_t norm_cap;
    int32_t *off, *len, *prev, *next, *sid;
    size_t sym_cap;
    cand_t *heap;
    size_t heap_n, heap_cap;
    rev_t *rev;                      /* .model: how each UNUSED piece was last formed */
    uint32_t rev_mask, rev_used;
    int *out;
    size_t out_n, out_cap;
} enc_ws;

static void ws_free(enc_ws *w) {
    free(w->norm);
    free(w->off);
    free(w->len);
    free(w->prev);
    free(w->next);
    free(w->sid);
    free(w->heap);
    free(w->rev);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return ar_errorf("tokenizer: input too large");
        c *= 2;
    }
    void *np = realloc(*p, c * elem);
    if (!np) return ar_errorf("tokenizer: out of memory");
    *p = np;
    *cap = c;
    return 0;
}

static int push_id(enc_ws *w, int id) {
    if (w->out_n == w->out_cap && grow((void **)&w->out, &w->out_cap, w->out_n + 1, sizeof *w->out) < 0) return -1;
    w->out[w->out_n++] = id;
    return 0;
}

static int ensure_symbols(enc_ws *w, size_t n) {
    if (n <= w->sym_cap) return 0;
    size_t cap = w->sym_cap;
    int32_t **arr[5] = {&w->off, &w->len, &w->prev, &w->next, &w->sid};
    for (int i = 0; i < 5; i++) {
        cap = w->sym_cap;
        if (grow((void **)arr[i], &cap, n, sizeof(int32_t)) < 0) return -1;
    }
    w->sym_cap = cap;
    return 0;
}

static int better(const cand_t *x, const cand_t *y) { return x->key > y->key || (x->key == y->key && x->a < y->a); }

static int heap_push(enc_ws *w, cand_t c) {
    if (w->heap_n == w->heap_cap && grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap) < 0)
        return -1;
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!better(&c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
    return 0;
}

static cand_t heap_pop(enc_ws *w) {
    cand_t top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && better(&w->heap[c + 1], &w->heap[c])) c++;
        if (!better(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

/* An id of the model's own vocabulary for s[0..len), or -1. */
static int lookup_base(const tokenizer *t, const char *s, size_t len) {
    int id = tok_lookup(t, s, len);
    return id < t->n_base ? id : -1;
}

/* --- .model: score-ordered BPE on one run ------------------------------- */

static int rev_put(enc_ws *w, int id, int32_t lo, int32_t ll, int32_t ro, int32_t rl) {
    if (!w->rev || 2 * (w->rev_used + 1) > w->rev_mask + 1) {   /* grow and rehash */
        uint32_t size = w->rev ? 2 * (w->rev_mask + 1) : 64;
        rev_t *nr = malloc(size * sizeof *nr);
        if (!nr) return ar_errorf("tokenizer: out of memory");
        for (uint32_t i = 0; i < size; i++) nr[i].id = -1;
        if (w->rev)
            for (uint32_t i = 0; i <= w->rev_mask; i++)
                if (w->rev[i].id >= 0) {
                    uint32_t h = ((uint32_t)w->rev[i].id * 2654435761u) & (size - 1);
                    while (nr[h].id >= 0) h = (h + 1) & (size - 1);
                    nr[h] = w->rev[i];
                }
        free(w->rev);
        w->rev = nr;
        w->rev_mask = size - 1;
    }
    uint32_t h = ((uint32_t)id * 2654435761u) & w->rev_mask;
    while (w->rev[h].id >= 0 && w->rev[h].id != id) h = (h + 1) & w->rev_mask;
    if (w->rev[h].id < 0) w->rev_used++;
    w->rev[h] = (rev_t){id, lo, ll, ro, rl};
    return 0;
}

static const rev_t *rev_get(const enc_ws *w, int id) {
    if (!w->rev) return NULL;
    uint32_t h = ((uint32_t)id * 2654435761u) & w->rev_mask;
    while (w->rev[h].id >= 0) {
        if (w->rev[h].id == id) return &w->rev[h];
        h = (h + 1) & w->rev_mask;
    }
    return NULL;
}

static int spm_try_pair(const tokenizer *t, enc_ws *w, int l, int r) {
    if (l < 0 || r < 0 || w->sid[l] || w->sid[r]) return 0;   /* sid = frozen (user-defined symbol) */
    int32_t size = w->len[l] + w->len[r];
    int id = lookup_base(t, w->norm + w->off[l], (size_t)size);
    if (id < 0) return 0;
    int type = t->p[id].type;
    if (type != TP_NORMAL && type != TP_USER && type != TP_UNUSED) return 0;
    if (heap_push(w, (cand_t){t->p[id].score, l, r, size}) < 0) return -1;
    if (type == TP_UNUSED) return rev_put(w, id, w->off[l], w->len[l], w->off[r], w->len[r]);
    return 0;
}

/* Emits the ids of the final piece norm[off..off+len): UNUSED pieces split
 * back into the pair that last formed them; unknown pieces as byte pieces,
 * or one <unk> for a run of them. */
static int spm_emit(const tokenizer *t, enc_ws *w, int32_t off, int32_t len, int *prev_unk) {
    int id = lookup_base(t, w->norm + off, (size_t)len);
    if (id >= 0 && t->p[id].type == TP_UNUSED) {
        const rev_t *r = rev_get(w, id);
        if (r) {   /* each part is strictly shorter: the recursion ends */
            int32_t ro = r->r_off, rl = r->r_len;
            if (spm_emit(t, w, r->l_off, r->l_len, prev_unk) < 0) return -1;
            return spm_emit(t, w, ro, rl, prev_unk);
        }
    }
    if (id < 0 || t->p[id].type == TP_UNKNOWN) {
        if (t->byte_fallback) {
            for (int32_t i = 0; i < len; i++) {
                int b = t->byte_id[(unsigned char)w->norm[off + i]];
                if (push_id(w, b >= 0 ? b : t->unk) < 0) return -1;
            }
        } else if (!*prev_unk && push_id(w, t->unk) < 0) {
            return -1;
        }
        *prev_unk = 1;
        return 0;
    }
    *prev_unk = 0;
    return push_id(w, id);
}

/* Links symbols [a, b) into their own list (prev of a and next of b-1 = -1). */
static void link_chunk(enc_ws *w, int a, int b) {
    for (int i = a; i < b; i++) {
        w->prev[i] = i == a ? -1 : i - 1;
        w->next[i] = i + 1 == b ? -1 : i + 1;
    }
}

/* .model: symbol i is a lone, mergeable '▁' after a symbol that is not one. */
static int spm_cut(const enc_ws *w, int i) {
    int ws = !w->sid[i] && w->len[i] == 3 && !memcmp(w->norm + w->off[i], SPACE_SYMBOL, 3);
    int prev_ws = !w->sid[i - 1] && w->len[i - 1] == 3 && !memcmp(w->norm + w->off[i - 1], SPACE_SYMBOL, 3);
    return ws && !prev_ws;
}

/* BPE over the whole normalised text norm[0..nlen) as libsentencepiece does
 * it: one symbol per character, or per user-defined symbol (frozen). */
static int spm_encode_norm(const tokenizer *t, enc_ws *w, size_t nlen) {
    int n = 0, any = t->start[1][256] > 0;
    for (size_t i = 0; i < nlen; n++) {
        int k = any ? match_split(t, 1, w->norm + i, nlen - i) : -1;
        int l = k >= 0 ? (int)t->split[k].len : utf8_char_len((const unsigned char *)w->norm + i, nlen - i);
        if (!l) l = 1;   /* cannot happen: normalised text is valid UTF-8 */
        w->off[n] = (int32_t)i;
        w->len[n] = l;
        w->sid[n] = k >= 0;
        i += (size_t)l;
    }
    if (w->rev) {
        for (uint32_t i = 0; i <= w->rev_mask; i++) w->rev[i].id = -1;
        w->rev_used = 0;
    }
    int prev_unk = 0;
    for (int a = 0, b; a < n; a = b) {
        b = a + 1;
        if (t->chunkable)
            while (b < n && !spm_cut(w, b)) b++;
        else
            b = n;
        link_chunk(w, a, b);
        w->heap_n = 0;
        for (int i = a + 1; i < b; i++)
            if (spm_try_pair(t, w, i - 1, i) < 0) return -1;
        while (w->heap_n) {
            cand_t c = heap_pop(w);
            int l = c.a, r = c.b;
            if (w->len[l] == 0 || w->len[r] == 0 || w->len[l] + w->len[r] != c.size) continue;
            w->len[l] += w->len[r];
            w->next[l] = w->next[r];
            if (w->next[r] >= 0) w->prev[w->next[r]] = l;
            w->len[r] = 0;
            if (spm_try_pair(t, w, w->prev[l], l) < 0 || spm_try_pair(t, w, l, w->next[l]) < 0) return -1;
        }
        for (int i = a; i != -1; i = w->next[i])
            if (spm_emit(t, w, w->off[i], w->len[i], &prev_unk) < 0) return -1;
    }
    return 0;
}

/* --- .json: rank-ordered BPE on one run --------------------------------- */

static const tok_merge_t *merge_get(const tokenizer *t, int a, int b) {
    if (!t->merges) return NULL;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & t->merge_mask;; h = (h + 1) & t->merge_mask) {
        if (t->merges[h].key == key) return &t->merges[h];
        if (t->merges[h].key == UINT64_MAX) return NULL;
    }
}

static int hf_try_pair(const tokenizer *t, enc_ws *w, int pos) {
    if (pos < 0 || w->next[pos] < 0) return 0;
    const tok_merge_t *m = merge_get(t, w->sid[pos], w->sid[w->next[pos]]);
    if (!m) return 0;
    return heap_push(w, (cand_t){-(double)m->rank, pos, m->new_id, 0});
}

static int hf_run(const tokenizer *t, enc_ws *w, size_t from, size_t to) {
    int n = 0, unk_len = 0;   /* unk_len > 0: a pending <unk> covering that many bytes */
#define HF_ADD(ID, LEN) do { w->sid[n] = (ID); w->len[n] = (LEN); n++; } while (0)
    for (size_t i = from; i < to;) {
        int l = utf8_char_len((const unsigned char *)w->norm + i, to - i);
        if (!l) l = 1;
        int id = lookup_base(t, w->norm + i, (size_t)l);
        if (id >= 0) {
            if (unk_len) HF_ADD(t->unk, unk_len);
            unk_len = 0;
            HF_ADD(id, l);
        } else {
            int all = t->byte_fallback;
            for (int k = 0; all && k < l; k++) all = t->byte_id[(unsigned char)w->norm[i + (size_t)k]] >= 0;
            if (all) {   /* as `tokenizers`: bytes go in without flushing a pending <unk> */
                for (int k = 0; k < l; k++) HF_ADD(t->byte_id[(unsigned char)w->norm[i + (size_t)k]], 1);
            } else if (t->unk >= 0) {
                if (unk_len && !t->fuse_unk) {
                    HF_ADD(t->unk, unk_len);
                    unk_len = 0;
                }
                unk_len += l;
            }   /* no unk token: the character is dropped, as `tokenizers` does */
        }
        i += (size_t)l;
    }
    if (unk_len) HF_ADD(t->unk, unk_len);
#undef HF_ADD
    for (int a = 0, b; a < n; a = b) {
        b = a + 1;
        if (t->chunkable)
            while (b < n && !(w->sid[b] == t->ws_id && w->len[b] == 3 && w->sid[b - 1] != t->ws_id)) b++;
        else
            b = n;
        link_chunk(w, a, b);
        w->heap_n = 0;
        for (int i = a; i + 1 < b; i++)
            if (hf_try_pair(t, w, i) < 0) return -1;
        while (w->heap_n) {
            cand_t c = heap_pop(w);
            int pos = c.a;
            if (w->len[pos] == 0 || w->next[pos] < 0) continue;
            int r = w->next[pos];
            const tok_merge_t *m = merge_get(t, w->sid[pos], w->sid[r]);
            if (!m || m->new_id != c.b) continue;
            w->sid[pos] = c.b;
            w->len[pos] += w->len[r];
            w->len[r] = 0;
            w->next[pos] = w->next[r];
            if (w->next[r] >= 0) w->prev[w->next[r]] = pos;
            if (hf_try_pair(t, w, w->prev[pos]) < 0 || hf_try_pair(t, w, pos) < 0) return -1;
        }
        for (int i = a; i != -1; i = w->next[i])
            if (push_id(w, w->sid[i]) < 0) return -1;
    }
    return 0;
}

/* --- normalisation and the two split stages ----------------------------- */

/* SentencePiece's normaliser without a character map: writes the normalised
 * form of s[0..len) to w->norm, returns its length (0 for an empty result). */
static int normalize(const tokenizer *t, enc_ws *w, const char *s, size_t len, size_t *out_len) {
    *out_len = 0;
    if (len == 0) return 0;
    if (len > (SIZE_MAX - 8) / 3) return ar_errorf("tokenizer: input too large");
    if (grow((void **)&w->norm, &w->norm_cap, 3 * len + 4, 1) < 0) return -1;
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    int rew = t->kind == TOK_SPM && t->remove_extra_ws;
    if (rew)
        while (i < len && u[i] == ' ') i++;
    if (i == len) return 0;
    if (t->add_dummy_prefix) {
        memcpy(w->norm, SPACE_SYMBOL, 3);
        o = 3;
    }
    int prev_space = rew;
    while (i < len) {
        int l = utf8_char_len(u + i, len - i);
        if (!l) {   /* a malformed byte: U+FFFD, one byte consumed */
            memcpy(w->norm + o, REPLACEMENT, 3);
            o += 3;
            i += 1;
            prev_space = 0;
        } else if (u[i] == ' ') {
            if (!prev_space) {
                memcpy(w->norm + o, SPACE_SYMBOL, 3);
                o += 3;
            }
            prev_space = rew;
            i += 1;
        } else {
            memcpy(w->norm + o, u + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
            prev_space = 0;
        }
    }
    if (rew)
        while (o >= 3 && memcmp(w->norm + o - 3, SPACE_SYMBOL, 3) == 0) o -= 3;
    *out_len = o;
    return 0;
}

/* Normalises one piece of raw text (no added token in it) and encodes it. */
static int encode_piece(const tokenizer *t, enc_ws *w, const char *s, size_t len) {
    size_t nlen;
    if (normalize(t, w, s, len, &nlen) < 0) return -1;
    if (nlen == 0) return 0;
    if (nlen > INT32_MAX / 2) return ar_errorf("tokenizer: input too large");
    if (ensure_symbols(w, nlen) < 0) return -1;
    if (t->kind == TOK_SPM) return spm_encode_norm(t, w, nlen);
    /* tokenizers: split on the normalized added tokens, BPE each run between */
    size_t seg = 0;
    int any = t->start[1][256] > 0;
    for (size_t i = 0; i < nlen;) {
        int k = any ? match_split(t, 1, w->norm + i, nlen - i) : -1;
        if (k >= 0) {
            if (i > seg && hf_run(t, w, seg, i) < 0) return -1;
            if (push_id(w, t->split[k].id) < 0) return -1;
            i += t->split[k].len;
            seg = i;
        } else {
            int l = utf8_char_len((const unsigned char *)w->norm + i, nlen - i);
            i += (size_t)(l ? l : 1);
        }
    }
    if (nlen > seg && hf_run(t, w, seg, nlen) < 0) return -1;
    return 0;
}

int tok_encode(const tokenizer *t, const char *text, size_t len, int add_bos, int add_eos, int **ids, int *n) {
    *ids = NULL;
    *n = 0;
    enc_ws w;
    memset(&w, 0, sizeof w);
    int rc = -1;
    if (add_bos && t->bos < 0) {
        ar_errorf("tok_encode: BOS requested but the tokenizer has no BOS token");
        goto done;
    }
    if (add_eos && t->eos < 0) {
        ar_errorf("tok_encode: EOS requested but the tokenizer has no EOS token");
        goto done;
    }
    if (add_bos && push_id(&w, t->bos) < 0) goto done;
    size_t seg = 0;
    int any = t->start[0][256] > 0;
    for (size_t i = 0; any && i < len;) {
        int k = match_split(t, 0, text + i, len - i);
        if (k < 0) {
            i++;
            continue;
        }
        if (i > seg && encode_piece(t, &w, text + seg, i - seg) < 0) goto done;
        if (push_id(&w, t->split[k].id) < 0) goto done;
        i += t->split[k].len;
        seg = i;
    }
    if (len > seg && encode_piece(t, &w, text + seg, len - seg) < 0) goto done;
    if (add_eos && push_id(&w, t->eos) < 0) goto done;
    if (w.out_n > INT32_MAX) {
        ar_errorf("tok_encode: more than 2^31 tokens");
        goto done;
    }
    if (!w.out && grow((void **)&w.out, &w.out_cap, 1, sizeof *w.out) < 0) goto done;
    *ids = w.out;
    *n = (int)w.out_n;
    w.out = NULL;
    rc = 0;
done:
    free(w.out);
    ws_free(&w);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *s;
    size_t n, cap;
} strbuf;

static int sb_add(strbuf *b, const char *s, size_t n) {
    if (grow((void **)&b->s, &b->cap, b->n + n + 1, 1) < 0) return -1;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    return 0;
}

/* Appends s[0..n) with every '▁' replaced by ' '. */
static int sb_add_unescaped(strbuf *b, const char *s, size_t n) {
    size_t from = 0;
    for (size_t i = 0; i + 3 <= n; i++)
        if (memcmp(s + i, SPACE_SYMBOL, 3) == 0) {
            if (sb_add(b, s + from, i - from) < 0 || sb_add(b, " ", 1) < 0) return -1;
            i += 2;
            from = i + 1;
        }
    return sb_add(b, s + from, n - from);
}

/* SentencePiece: a run of byte pieces becomes UTF-8, U+FFFD per invalid byte. */
static int spm_flush_bytes(strbuf *b, const unsigned char *bytes, size_t n) {
    for (size_t i = 0; i < n;) {
        int l = utf8_char_len(bytes + i, n - i);
        if (!l) {
            if (sb_add(b, REPLACEMENT, 3) < 0) return -1;
            i++;
        } else {
            if (sb_add(b, (const char *)bytes + i, (size_t)l) < 0) return -1;
            i += (size_t)l;
        }
    }
    return 0;
}

/* tokenizers' ByteFallback: the run as is when it is valid UTF-8, else one U+FFFD per byte. */
static int hf_flush_bytes(strbuf *b, const unsigned char *bytes, size_t n) {
    if (tok_utf8_valid((const char *)bytes, n)) return sb_add(b, (const char *)bytes, n);
    for (size_t i = 0; i < n; i++)
        if (sb_add(b, REPLACEMENT, 3) < 0) return -1;
    return 0;
}

/* tokenizers' ByteFallback reads "<0xHH>" with u8::from_str_radix, which
 * takes either case and a leading '+' ("<0x+A>"). -1 if not a byte token. */
static int hf_byte_token(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0, digits = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) {
            if (i == 3 && c == '+') continue;
            return -1;
        }
        v = v * 16 + d;
        digits++;
    }
    return digits ? v : -1;
}

int tok_decode(const tokenizer *t, const int *ids, int n, char **text, size_t *len) {
    *text = NULL;
    if (len) *len = 0;
    strbuf b = {0};
    unsigned char *bytes = NULL;
    size_t nb = 0;
    int rc = -1;
    if (n < 0) {
        ar_errorf("tok_decode: negative id count %d", n);
        goto done;
    }
    bytes = malloc((size_t)n + 1);
    if (!bytes || grow((void **)&b.s, &b.cap, 1, 1) < 0) {
        ar_errorf("tokenizer: out of memory");
        goto done;
    }
    int is_bos_ws = 1, bos_ws_seen = 0;   /* .model: strip the dummy-prefix space once */
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n) {
            ar_errorf("tok_decode: id %d at position %d is out of range [0, %d)", id, i, t->n);
            goto done;
        }
        const tok_piece_t *p = &t->p[id];
        if (t->kind == TOK_SPM) {
            if (p->type == TP_BYTE) {
                bytes[nb++] = (unsigned char)tok_byte_piece_value(p->s, p->len);
                continue;
            }
            if (spm_flush_bytes(&b, bytes, nb) < 0) goto done;
            nb = 0;
            if (bos_ws_seen || b.n > 0) is_bos_ws = 0;
            bos_ws_seen = 0;
            if (p->type == TP_CONTROL) continue;
            if (p->type == TP_UNKNOWN) {
                if (sb_add(&b, t->unk_surface, t->unk_surface_len) < 0) goto done;
                continue;
            }
            if (p->type == TP_ADDED) {
                if (sb_add(&b, p->s, p->len) < 0) goto done;
                continue;
            }
            const char *s = p->s;
            size_t l = p->len;
            if (is_bos_ws && (t->add_dummy_prefix || t->remove_extra_ws) && l >= 3 && memcmp(s, SPACE_SYMBOL, 3) == 0) {
                s += 3;
                l -= 3;
                bos_ws_seen = !t->remove_extra_ws;
            }
            if (sb_add_unescaped(&b, s, l) < 0) goto done;
        } else {
            if (p->special) continue;
            const char *s = p->text ? p->text : p->s;
            size_t l = p->text ? p->text_len : p->len;
            int v = hf_byte_token(s, l);
            if (v >= 0) {
                bytes[nb++] = (unsigned char)v;
                continue;
            }
            if (hf_flush_bytes(&b, bytes, nb) < 0) goto done;
            nb = 0;
            if (sb_add_unescaped(&b, s, l) < 0) goto done;
        }
    }
    if ((t->kind == TOK_SPM ? spm_flush_bytes : hf_flush_bytes)(&b, bytes, nb) < 0) goto done;
    if (t->kind == TOK_HF && b.n > 0 && b.s[0] == ' ') {   /* Strip(" ", 1, 0) */
        memmove(b.s, b.s + 1, b.n - 1);
        b.n--;
    }
    b.s[b.n] = '\0';
    *text = b.s;
    if (len) *len = b.n;
    b.s = NULL;
    rc = 0;
done:
    free(bytes);
    free(b.s);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                  */
/* ------------------------------------------------------------------------ */

/* A long text can be merged in independent chunks cut before every '▁' that
 * follows another character, when no merge can ever cross such a cut: '▁' is
 * a piece (so it is never byte fallback or <unk>), no mergeable piece has a
 * '▁' after any other character (LLaMA's pieces are "▁*x*"), and no piece is
 * UNUSED (libsentencepiece splits those using state from the whole text).
 * Merges that cannot cross a cut are never candidates, and the heap orders
 * the candidates of one chunk among themselves as it would in the whole
 * text, so the ids are the same; the heap just stays small. */
static void set_chunkable(tokenizer *t) {
    t->ws_id = lookup_base(t, SPACE_SYMBOL, 3);
    t->chunkable = t->ws_id >= 0;
    for (int i = 0; i < t->n_base && t->chunkable; i++) {
        const tok_piece_t *p = &t->p[i];
        if (t->kind == TOK_SPM && p->type == TP_UNUSED) t->chunkable = 0;
        if (t->kind == TOK_SPM && p->type != TP_NORMAL && p->type != TP_USER) continue;
        size_t k = 0;
        while (k + 3 <= p->len && !memcmp(p->s + k, SPACE_SYMBOL, 3)) k += 3;   /* leading '▁'s */
        for (; k + 3 <= p->len && t->chunkable; k++)
            if (!memcmp(p->s + k, SPACE_SYMBOL, 3)) t->chunkable = 0;
    }
}

tokenizer *tok_load_memory(const void *data, size_t len, const char *origin) {
    if (!origin) origin = "tokenizer";
    const unsigned char *u = data;
    size_t i = 0;
    if (len >= 3 && u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF) i = 3;   /* UTF-8 byte order mark */
    while (i < len && (u[i] == ' ' || u[i] == '\t' || u[i] == '\n' || u[i] == '\r')) i++;
    if (len == 0) {
        ar_errorf("%s: empty file; expected a SentencePiece tokenizer.model or a tokenizer.json", origin);
        return NULL;
    }
    int json = i < len && u[i] == '{';
    tokenizer *t = tok_new(json ? TOK_HF : TOK_SPM);
    if (!t) return NULL;
    int rc = json ? tok_load_hf(t, data, len, origin) : tok_load_spm(t, data, len, origin);
    if (rc == 0) rc = rebuild_split_order(t);
    if (rc == 0) set_chunkable(t);
    if (rc < 0) {
        tok_free(t);
        return NULL;
    }
    return t;
}

tokenizer *tok_load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ar_errorf("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap && grow((void **)&buf, &cap, n + 65536, 1) < 0) {
            ar_error_prefix("%s: ", path);
            free(buf);
            fclose(f);
            return NULL;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        ar_errorf("%s: read error", path);
        free(buf);
        return NULL;
    }
    tokenizer *t = tok_load_memory(buf, n, path);
    free(buf);
    return t;
}
