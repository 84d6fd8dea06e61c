/* data/conversation.c — see conversation.h for the templates, the
 * tokenization and the label rules (LLaVA's preprocess_v1).
 *
 * The encoder splits text itself on placeholders and on its "no split"
 * tokens (the special pieces and the tokens added through it), applies the
 * whitespace stripping of transformers' slow tokenizer around added tokens,
 * and hands every remaining segment to tok_encode. The label arithmetic
 * follows the Python line by line, with Python's slice clipping. */
#include "data/conversation.h"

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "data/token_dataset.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONV_WARN_LIMIT 10

/* ------------------------------------------------------------------------ */
/* Templates                                                                */
/* ------------------------------------------------------------------------ */

static const conv_template g_templates[] = {
    {"llava_v1",
     "You are LLaVA, a large language and vision assistant trained by UW Madison WAIV Lab."
     "You are able to understand the visual content that the user provides, and assist the "
     "user with a variety of tasks using natural language.Follow the instructions carefully "
     "and explain your answers in detail.",
     {"USER", "ASSISTANT"}, " ", "</s>"},
    {"vicuna_v1_1",
     "A chat between a curious user and an artificial intelligence assistant. "
     "The assistant gives helpful, detailed, and polite answers to the user's questions.",
     {"USER", "ASSISTANT"}, " ", "</s>"},
};
#define N_TEMPLATES ((int)(sizeof g_templates / sizeof g_templates[0]))

const conv_template *conv_template_find(const char *name) {
    for (int i = 0; name && i < N_TEMPLATES; i++)
        if (strcmp(g_templates[i].name, name) == 0) return &g_templates[i];
    ar_errorf("unknown conversation template '%s' (known: llava_v1, vicuna_v1_1)", name ? name : "(null)");
    return NULL;
}

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static int sb_put(sbuf *b, const char *s, size_t len) {
    if (len > SIZE_MAX - b->n - 1) return ar_errorf("conversation: text too large");
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
        char *np = realloc(b->p, cap);
        if (!np) return ar_errorf("conversation: out of memory");
        b->p = np;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
    return 0;
}
static int sb_str(sbuf *b, const char *s) { return sb_put(b, s, strlen(s)); }

char *conv_prompt(const conv_template *tpl, const char *const *msgs, const size_t *lens, int n, size_t *len) {
    if (!tpl || n < 0 || (n > 0 && !msgs)) {
        ar_errorf("conv_prompt: bad arguments");
        return NULL;
    }
    sbuf b = {0};
    int rc = sb_str(&b, tpl->system) | sb_str(&b, tpl->sep);
    for (int i = 0; rc == 0 && i < n; i++) {
        size_t l = msgs[i] ? (lens ? lens[i] : strlen(msgs[i])) : 0;
        rc |= sb_str(&b, tpl->roles[i % 2]);
        if (l) rc |= sb_put(&b, ": ", 2) | sb_put(&b, msgs[i], l) | sb_str(&b, i % 2 ? tpl->sep2 : tpl->sep);
        else rc |= sb_put(&b, ":", 1);
    }
    if (rc) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.n;
    return b.p;
}

/* ------------------------------------------------------------------------ */
/* Encoder                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    char  *text;
    size_t len;
    int    id;
    int    strip;
} conv_tok;

typedef struct {
    conv_tok *v;
    int n, cap;
    uint8_t first[256];   /* first bytes of the texts: a fast "cannot match here" */
} tok_set;

struct conv_encoder {
    tokenizer *tok;
    const conv_template *tpl;
    int max_len, bos, pad;
    tok_set nosplit;      /* <unk> <s> </s> and the added tokens */
    tok_set ph;           /* placeholders, ids -1, -2, ... */
    char  *asst;          /* sep + roles[1] + ": " */
    size_t asst_len;
};

static int set_add(tok_set *s, const char *text, int id, int strip) {
    size_t len = strlen(text);
    for (int i = 0; i < s->n; i++)
        if (s->v[i].len == len && memcmp(s->v[i].text, text, len) == 0) {
            s->v[i].strip = strip;
            return i;
        }
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        conv_tok *nv = realloc(s->v, (size_t)cap * sizeof *nv);
        if (!nv) return ar_errorf("conversation: out of memory");
        s->v = nv;
        s->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return ar_errorf("conversation: out of memory");
    memcpy(c, text, len + 1);
    s->v[s->n] = (conv_tok){c, len, id, strip};
    s->first[(unsigned char)text[0]] = 1;
    return s->n++;
}

static void set_free(tok_set *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i].text);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* The longest entry of s that starts at text[0..n), or -1. */
static int set_match(const tok_set *s, const char *text, size_t n) {
    if (!s->first[(unsigned char)text[0]]) return -1;
    int best = -1;
    for (int i = 0; i < s->n; i++)
        if (s->v[i].len <= n && memcmp(s->v[i].text, text, s->v[i].len) == 0 &&
            (best < 0 || s->v[i].len > s->v[best].len))
            best = i;
    return best;
}

conv_encoder *conv_encoder_new(tokenizer *tok, const char *template_name, int max_len) {
    if (!tok) {
        ar_errorf("conv_encoder_new: no tokenizer");
        return NULL;
    }
    const conv_template *tpl = conv_template_find(template_name);
    if (!tpl) return NULL;
    if (max_len < 2) {
        ar_errorf("conv_encoder_new: max_len must be at least 2, got %d", max_len);
        return NULL;
    }
    if (tok_bos(tok) < 0) {
        ar_errorf("conv_encoder_new: the tokenizer has no BOS piece (LLaVA's label arithmetic counts one per encoding)");
        return NULL;
    }
    conv_encoder *e = calloc(1, sizeof *e);
    if (!e) {
        ar_errorf("conversation: out of memory");
        return NULL;
    }
    e->tok = tok;
    e->tpl = tpl;
    e->max_len = max_len;
    e->bos = tok_bos(tok);
    e->pad = tok_unk(tok) >= 0 ? tok_unk(tok) : tok_pad(tok);
    const int specials[3] = {tok_unk(tok), tok_bos(tok), tok_eos(tok)};
    for (int k = 0; k < 3; k++) {
        const char *piece = specials[k] >= 0 ? tok_piece(tok, specials[k]) : NULL;
        if (piece && piece[0] && set_add(&e->nosplit, piece, specials[k], 0) < 0) goto fail;
    }
    sbuf b = {0};
    if (sb_str(&b, tpl->sep) | sb_str(&b, tpl->roles[1]) | sb_put(&b, ": ", 2)) {
        free(b.p);
        goto fail;
    }
    e->asst = b.p;
    e->asst_len = b.n;
    return e;
fail:
    conv_encoder_free(e);
    return NULL;
}

void conv_encoder_free(conv_encoder *e) {
    if (!e) return;
    set_free(&e->nosplit);
    set_free(&e->ph);
    free(e->asst);
    free(e);
}

const conv_template *conv_encoder_template(const conv_encoder *e) { return e->tpl; }
int conv_encoder_max_len(const conv_encoder *e) { return e->max_len; }
int conv_encoder_pad_id(const conv_encoder *e) { return e->pad >= 0 ? e->pad : 0; }

int conv_encoder_add_token(conv_encoder *e, const char *text, int strip) {
    if (!e || !text || !text[0]) return ar_errorf("conv_encoder_add_token: the token text is empty");
    for (int i = 0; i < e->ph.n; i++)
        if (strcmp(e->ph.v[i].text, text) == 0)
            return ar_errorf("conv_encoder_add_token: '%s' is already a placeholder", text);
    int id = tok_add_special(e->tok, text);
    if (id < 0) return -1;
    if (set_add(&e->nosplit, text, id, strip ? 1 : 0) < 0) return -1;
    return id;
}

int conv_encoder_add_placeholder(conv_encoder *e, const char *text) {
    if (!e || !text || !text[0]) {
        ar_errorf("conv_encoder_add_placeholder: the placeholder text is empty");
        return 0;
    }
    for (int i = 0; i < e->nosplit.n; i++)
        if (strcmp(e->nosplit.v[i].text, text) == 0) {
            ar_errorf("conv_encoder_add_placeholder: '%s' is already a token", text);
            return 0;
        }
    int k = set_add(&e->ph, text, -(e->ph.n + 1), 0);
    return k < 0 ? 0 : e->ph.v[k].id;
}

/* Python's str.isspace() for one code point. */
static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* Decodes the UTF-8 sequence at s[0..n): its code point and length; an
 * invalid or truncated sequence gives 0xFFFFFFFF (never whitespace). */
static uint32_t utf8_at(const unsigned char *s, size_t n, size_t *clen) {
    unsigned c = s[0];
    size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    *clen = 1;
    if (k == 0 || k > n) return 0xFFFFFFFFu;
    uint32_t v = k == 1 ? c : c & (0x7Fu >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0xFFFFFFFFu;
        v = v << 6 | (s[i] & 0x3F);
    }
    *clen = k;
    return v;
}

static void lstrip(const char *s, size_t *b, size_t e) {
    while (*b < e) {
        size_t cl;
        uint32_t c = utf8_at((const unsigned char *)s + *b, e - *b, &cl);
        if (!py_space(c)) return;
        *b += cl;
    }
}

static void rstrip(const char *s, size_t b, size_t *e) {
    while (*e > b) {
        size_t st = *e - 1;
        while (st > b && *e - st < 4 && ((unsigned char)s[st] & 0xC0) == 0x80) st--;
        size_t cl;
        uint32_t c = utf8_at((const unsigned char *)s + st, *e - st, &cl);
        if (st + cl != *e || !py_space(c)) return;
        *e = st;
    }
}

typedef struct {
    int *v;
    size_t n, cap;
} ibuf;

static int ib_push(ibuf *b, const int *ids, size_t n) {
    if (n > (size_t)INT_MAX - b->n) return ar_errorf("conversation: more than %d tokens", INT_MAX);
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        int *nv = realloc(b->v, cap * sizeof *nv);
        if (!nv) return ar_errorf("conversation: out of memory");
        b->v = nv;
        b->cap = cap;
    }
    memcpy(b->v + b->n, ids, n * sizeof *ids);
    b->n += n;
    return 0;
}

typedef struct {
    size_t b, e;   /* text segment s[b..e), or a token (tok >= 0) */
    int tok;
} seg;

typedef struct {
    seg *v, local[32];   /* v == local until it outgrows it */
    size_t n, cap;
} seg_list;

static int seg_push(seg_list *l, seg x) {
    if (l->n == l->cap) {
        size_t cap = l->cap * 2;
        seg *nv = l->v == l->local ? malloc(cap * sizeof *nv) : realloc(l->v, cap * sizeof *nv);
        if (!nv) return ar_errorf("conversation: out of memory");
        if (l->v == l->local) memcpy(nv, l->local, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return 0;
}

static int encode_text(const conv_encoder *e, const char *s, size_t b, size_t end, ibuf *out) {
    if (b >= end) return 0;
    int *ids = NULL, n = 0;
    if (tok_encode(e->tok, s + b, end - b, 0, 0, &ids, &n) < 0) return -1;
    int rc = ib_push(out, ids, (size_t)n);
    free(ids);
    return rc;
}

/* One chunk between placeholders: no-split tokens, stripping, tok_encode. */
static int encode_chunk(const conv_encoder *e, const char *s, size_t b, size_t end, ibuf *out) {
    if (e->nosplit.n == 0) return encode_text(e, s, b, end, out);
    seg_list l;
    l.v = l.local;
    l.n = 0;
    l.cap = sizeof l.local / sizeof l.local[0];
    int rc = 0;
    size_t start = b;
    for (size_t i = b; i < end && rc == 0;) {
        int k = set_match(&e->nosplit, s + i, end - i);
        if (k < 0) {
            i++;
            continue;
        }
        if (i > start) rc = seg_push(&l, (seg){start, i, -1});
        if (rc == 0) rc = seg_push(&l, (seg){i, i + e->nosplit.v[k].len, k});
        i += e->nosplit.v[k].len;
        start = i;
    }
    if (rc == 0 && start < end) rc = seg_push(&l, (seg){start, end, -1});
    /* transformers' slow tokenize(): around a no-split token that is not an
     * AddedToken, the right neighbour is lstrip()ed and the left rstrip()ed */
    for (size_t k = 0; rc == 0 && k < l.n; k++) {
        if (l.v[k].tok < 0 || !e->nosplit.v[l.v[k].tok].strip) continue;
        if (k + 1 < l.n && l.v[k + 1].tok < 0) lstrip(s, &l.v[k + 1].b, l.v[k + 1].e);
        if (k > 0 && l.v[k - 1].tok < 0) rstrip(s, l.v[k - 1].b, &l.v[k - 1].e);
    }
    for (size_t k = 0; rc == 0 && k < l.n; k++) {
        if (l.v[k].tok >= 0) rc = ib_push(out, &e->nosplit.v[l.v[k].tok].id, 1);
        else rc = encode_text(e, s, l.v[k].b, l.v[k].e, out);
    }
    if (l.v != l.local) free(l.v);
    return rc;
}

static int encode_into(const conv_encoder *e, const char *s, size_t len, int add_bos, ibuf *out) {
    out->n = 0;
    if (add_bos && ib_push(out, &e->bos, 1) < 0) return -1;
    size_t start = 0;
    for (size_t i = 0; i < len && e->ph.n;) {
        int k = set_match(&e->ph, s + i, len - i);
        if (k < 0) {
            i++;
            continue;
        }
        if (encode_chunk(e, s, start, i, out) < 0 || ib_push(out, &e->ph.v[k].id, 1) < 0) return -1;
        i += e->ph.v[k].len;
        start = i;
    }
    return encode_chunk(e, s, start, len, out);
}

int conv_encode(const conv_encoder *e, const char *text, size_t len, int add_bos, int **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (!e || (!text && len)) return ar_errorf("conv_encode: bad arguments");
    ibuf b = {0};
    if (encode_into(e, text ? text : "", len, add_bos, &b) < 0) {
        free(b.v);
        return -1;
    }
    if (!b.v) {   /* an empty result still returns a pointer to free */
        b.v = malloc(sizeof *b.v);
        if (!b.v) return ar_errorf("conversation: out of memory");
    }
    *ids = b.v;
    *n = (int)b.n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* preprocess_v1                                                            */
/* ------------------------------------------------------------------------ */

/* Position of the first occurrence of pat in s[0..n) at or after `from`, or n. */
static size_t find(const char *s, size_t n, size_t from, const char *pat, size_t plen) {
    if (plen == 0 || plen > n) return n;
    for (size_t i = from; i + plen <= n; i++)
        if (s[i] == pat[0] && memcmp(s + i, pat, plen) == 0) return i;
    return n;
}

static void mask(int *labels, int n, int64_t a, int64_t b) {
    if (a < 0) a = 0;
    if (b > n) b = n;
    for (int64_t k = a; k < b; k++) labels[k] = CONV_IGNORE;
}

int conv_tokenize(const conv_encoder *e, const char *const *msgs, const size_t *lens, int n_msgs,
                  conv_sample *out) {
    memset(out, 0, sizeof *out);
    size_t plen = 0;
    char *prompt = conv_prompt(e->tpl, msgs, lens, n_msgs, &plen);
    if (!prompt) return -1;
    ibuf full = {0}, tmp = {0};
    int rc = encode_into(e, prompt, plen, 1, &full);
    int n = 0, *labels = NULL;
    if (rc == 0) {
        n = full.n > (size_t)e->max_len ? e->max_len : (int)full.n;
        labels = malloc((size_t)(n ? n : 1) * sizeof *labels);
        if (!labels) rc = ar_errorf("conversation: out of memory");
    }
    int64_t cur_len = 1;
    int total_len = 0;
    if (rc == 0) {
        memcpy(labels, full.v, (size_t)n * sizeof *labels);
        for (int k = 0; k < n; k++) total_len += e->pad < 0 || full.v[k] != e->pad;
        mask(labels, n, 0, cur_len);
        const char *sep2 = e->tpl->sep2;
        size_t sep2_len = strlen(sep2);
        /* for rou in prompt.split(sep2) */
        for (size_t rb = 0; rc == 0;) {
            size_t re = find(prompt, plen, rb, sep2, sep2_len);
            if (re == rb) break;   /* rou == "" */
            size_t p1 = find(prompt + rb, re - rb, 0, e->asst, e->asst_len);
            if (p1 == re - rb) break;   /* no separator: one part */
            if (find(prompt + rb, re - rb, p1 + e->asst_len, e->asst, e->asst_len) != re - rb) break;   /* > 2 parts */
            rc = encode_into(e, prompt + rb, re - rb, 1, &tmp);
            if (rc) break;
            int64_t round_len = (int64_t)tmp.n;
            rc = encode_into(e, prompt + rb, p1 + e->asst_len, 1, &tmp);
            if (rc) break;
            int64_t instruction_len = (int64_t)tmp.n - 2;
            mask(labels, n, cur_len, cur_len + instruction_len);
            cur_len += round_len;
            if (re == plen) break;   /* that was the last piece */
            rb = re + sep2_len;
        }
    }
    if (rc == 0) {
        mask(labels, n, cur_len, n);
        out->mismatch = cur_len < e->max_len && cur_len != total_len;
        if (out->mismatch) mask(labels, n, 0, n);
        for (int k = 0; k < n; k++) {
            if (full.v[k] < 0) labels[k] = CONV_IGNORE;
            out->supervised += labels[k] != CONV_IGNORE;
        }
        int *ids = realloc(full.v, (size_t)(n ? n : 1) * sizeof *ids);
        if (!ids) rc = ar_errorf("conversation: out of memory");
        else full.v = ids;
    }
    free(prompt);
    free(tmp.v);
    if (rc) {
        free(full.v);
        free(labels);
        memset(out, 0, sizeof *out);
        return -1;
    }
    out->ids = full.v;
    out->labels = labels;
    out->n = n;
    out->full_len = (int)full.n;
    out->truncated = full.n > (size_t)e->max_len;
    out->cur_len = cur_len > INT_MAX ? INT_MAX : (int)cur_len;
    out->total_len = total_len;
    return 0;
}

void conv_sample_free(conv_sample *s) {
    if (!s) return;
    free(s->ids);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------------ */
/* LLaVA-format JSON                                                        */
/* ------------------------------------------------------------------------ */

const char *conv_skip_reason_name(conv_skip_reason r) {
    switch (r) {
    case CONV_SKIP_NOT_OBJECT: return "not an object";
    case CONV_SKIP_NO_CONVERSATIONS: return "no conversations";
    case CONV_SKIP_EMPTY: return "empty conversations";
    case CONV_SKIP_BAD_TURN: return "bad turn";
    case CONV_SKIP_BAD_ROLE: return "bad role";
    case CONV_SKIP_BAD_ORDER: return "bad order";
    default: return "?";
    }
}

/* Up to 40 bytes of s for a message: whole code points, control characters as '?'. */
static void excerpt(char *dst, size_t cap, const char *s, size_t len) {
    size_t o = 0, i = 0;
    while (i < len && o + 8 < cap && i < 40) {
        size_t cl;
        uint32_t c = utf8_at((const unsigned char *)s + i, len - i, &cl);
        if (c < 0x20 || c == 0x7F || c == 0xFFFFFFFFu) {
            dst[o++] = '?';
        } else {
            memcpy(dst + o, s + i, cl);
            o += cl;
        }
        i += cl;
    }
    if (i < len && o + 4 < cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

typedef struct {
    conv_dataset *ds;
    const char *path;
    int64_t warned;
} load_ctx;

/* Records a problem message for sample i (object v, for its id). */
static int report(load_ctx *c, int64_t i, const json_value *v, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int report(load_ctx *c, int64_t i, const json_value *v, const char *fmt, ...) {
    char msg[768], idbuf[96] = "";
    const json_value *id = v && v->type == JSON_OBJECT ? json_get(v, "id") : NULL;
    if (id && id->type == JSON_STRING) {
        char ex[64];
        excerpt(ex, sizeof ex, id->str, id->len);
        snprintf(idbuf, sizeof idbuf, " (id \"%s\")", ex);
    } else if (id && id->type == JSON_NUMBER && id->is_int) {
        snprintf(idbuf, sizeof idbuf, " (id %" PRId64 ")", id->integer);
    }
    int o = snprintf(msg, sizeof msg, "%s: sample %" PRId64 "%s: ", c->path, i, idbuf);
    if (o < 0 || o >= (int)sizeof msg) o = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + o, sizeof msg - (size_t)o, fmt, ap);
    va_end(ap);
    if (c->warned < CONV_WARN_LIMIT) log_warn("%s", msg);
    c->warned++;
    conv_dataset *ds = c->ds;
    if (ds->n_messages < CONV_MAX_MESSAGES) {
        char *m = strdup(msg);
        if (!m) return ar_errorf("conversation: out of memory");
        ds->messages[ds->n_messages++] = m;
    }
    return 0;
}

/* A JSON string equal to s (embedded NULs count). */
static int str_is(const json_value *v, const char *s) { return v->len == strlen(s) && memcmp(v->str, s, v->len) == 0; }

/* Checks sample v; fills msgs/lens (user first) and returns the number of
 * messages, or -1 - reason for a broken sample (message recorded), or
 * INT_MIN on an out-of-memory error while recording. */
static int check_sample(load_ctx *c, int64_t i, const json_value *v, const char **msgs, size_t *lens) {
    int r;
    if (v->type != JSON_OBJECT) {
        r = report(c, i, v, "expected an object, found %s", json_type_name(v->type));
        return r < 0 ? INT_MIN : -1 - CONV_SKIP_NOT_OBJECT;
    }
    const json_value *cv = json_get(v, "conversations");
    if (!cv || cv->type != JSON_ARRAY) {
        r = cv ? report(c, i, v, "expected 'conversations' to be an array, found %s", json_type_name(cv->type))
               : report(c, i, v, "missing required field 'conversations' (expected an array)");
        return r < 0 ? INT_MIN : -1 - CONV_SKIP_NO_CONVERSATIONS;
    }
    if (cv->n == 0) {
        r = report(c, i, v, "'conversations' is empty");
        return r < 0 ? INT_MIN : -1 - CONV_SKIP_EMPTY;
    }
    if (cv->n > INT_MAX / 2) {
        r = report(c, i, v, "'conversations' has %zu turns, more than %d", cv->n, INT_MAX / 2);
        return r < 0 ? INT_MIN : -1 - CONV_SKIP_BAD_TURN;
    }
    for (size_t k = 0; k < cv->n; k++) {
        const json_value *t = &cv->items[k];
        if (t->type != JSON_OBJECT) {
            r = report(c, i, v, "conversations[%zu]: expected an object, found %s", k, json_type_name(t->type));
            return r < 0 ? INT_MIN : -1 - CONV_SKIP_BAD_TURN;
        }
        const char *fields[2] = {"from", "value"};
        for (int f = 0; f < 2; f++) {
            const json_value *x = json_get(t, fields[f]);
            if (!x || x->type != JSON_STRING) {
                r = x ? report(c, i, v, "conversations[%zu]: expected '%s' to be a string, found %s", k, fields[f],
                               json_type_name(x->type))
                      : report(c, i, v, "conversations[%zu]: missing required field '%s' (expected a string)", k,
                               fields[f]);
                return r < 0 ? INT_MIN : -1 - CONV_SKIP_BAD_TURN;
            }
        }
        const json_value *from = json_get(t, "from");
        if (!str_is(from, "human") && !str_is(from, "gpt")) {
            char ex[64];
            excerpt(ex, sizeof ex, from->str, from->len);
            r = report(c, i, v, "conversations[%zu].from: expected \"human\" or \"gpt\", found \"%s\"", k, ex);
            return r < 0 ? INT_MIN : -1 - CONV_SKIP_BAD_ROLE;
        }
    }
    /* LLaVA: "Skip the first one if it is not from human" */
    size_t k0 = str_is(json_get(&cv->items[0], "from"), "gpt") ? 1 : 0;
    int n = 0;
    for (size_t k = k0; k < cv->n; k++, n++) {
        const json_value *t = &cv->items[k];
        const char *want = n % 2 ? "gpt" : "human";
        if (!str_is(json_get(t, "from"), want)) {
            r = report(c, i, v, "conversations[%zu].from: expected \"%s\" (turns alternate human, gpt), found \"%s\"",
                       k, want, json_get(t, "from")->str);
            return r < 0 ? INT_MIN : -1 - CONV_SKIP_BAD_ORDER;
        }
        const json_value *val = json_get(t, "value");
        msgs[n] = val->str;
        lens[n] = val->len;
    }
    return n;
}

void conv_dataset_free(conv_dataset *ds) {
    if (!ds) return;
    free(ds->start);
    free(ds->ids);
    free(ds->labels);
    free(ds->index);
    free(ds->flags);
    for (int i = 0; i < ds->n_messages; i++) free(ds->messages[i]);
    memset(ds, 0, sizeof *ds);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return ar_errorf("conversation: data set too large");
        c *= 2;
    }
    void *np = realloc(*p, c * elem);
    if (!np) return ar_errorf("conversation: out of memory");
    *p = np;
    *cap = c;
    return 0;
}

int conv_load_json_with(const char *path, const conv_encoder *e, conv_dataset *out) {
    memset(out, 0, sizeof *out);
    if (!path || !e) return ar_errorf("conv_load_json: bad arguments");
    json_doc *doc = json_parse_file(path);
    if (!doc) return -1;
    const json_value *root = json_root(doc);
    if (root->type != JSON_ARRAY) {
        ar_errorf("%s: expected the root to be an array of samples, found %s", path, json_type_name(root->type));
        json_free(doc);
        return -1;
    }
    conv_dataset *ds = out;
    load_ctx c = {ds, path, 0};
    ds->pad_id = conv_encoder_pad_id(e);
    ds->vocab_size = tok_vocab_size(e->tok);
    ds->n_input = (int64_t)root->n;
    size_t cap_s = 0, cap_t = 0, cap_tl = 0, cap_i = 0, cap_f = 0, ntok = 0;
    size_t max_turns = 0;
    for (size_t i = 0; i < root->n; i++)
        if (root->items[i].type == JSON_OBJECT) {
            const json_value *cv = json_get(&root->items[i], "conversations");
            if (cv && cv->type == JSON_ARRAY && cv->n > max_turns) max_turns = cv->n;
        }
    const char **msgs = malloc((max_turns ? max_turns : 1) * sizeof *msgs);
    size_t *lens = malloc((max_turns ? max_turns : 1) * sizeof *lens);
    int rc = msgs && lens ? 0 : ar_errorf("conversation: out of memory");
    if (rc == 0) rc = grow((void **)&ds->start, &cap_s, 1, sizeof *ds->start);
    if (rc == 0) ds->start[0] = 0;
    for (size_t i = 0; rc == 0 && i < root->n; i++) {
        const json_value *v = &root->items[i];
        int nm = check_sample(&c, (int64_t)i, v, msgs, lens);
        if (nm == INT_MIN) {
            rc = -1;
            break;
        }
        if (nm < 0) {
            ds->skip[-1 - nm]++;
            ds->n_skipped++;
            continue;
        }
        conv_sample s;
        if (conv_tokenize(e, msgs, lens, nm, &s) < 0) {
            rc = ar_error_prefix("%s: sample %zu: ", path, i);
            break;
        }
        size_t k = (size_t)ds->n;
        rc = grow((void **)&ds->start, &cap_s, k + 2, sizeof *ds->start);
        if (rc == 0) rc = grow((void **)&ds->ids, &cap_t, ntok + (size_t)s.n, sizeof *ds->ids);
        if (rc == 0) rc = grow((void **)&ds->labels, &cap_tl, ntok + (size_t)s.n, sizeof *ds->labels);
        if (rc == 0) rc = grow((void **)&ds->index, &cap_i, k + 1, sizeof *ds->index);
        if (rc == 0) rc = grow((void **)&ds->flags, &cap_f, k + 1, sizeof *ds->flags);
        if (rc == 0 && s.mismatch)
            rc = report(&c, (int64_t)i, v, "tokenization mismatch: %d vs. %d (every label set to -100)", s.cur_len,
                        s.total_len);
        if (rc == 0) {
            memcpy(ds->ids + ntok, s.ids, (size_t)s.n * sizeof *ds->ids);
            memcpy(ds->labels + ntok, s.labels, (size_t)s.n * sizeof *ds->labels);
            ntok += (size_t)s.n;
            ds->start[k + 1] = (int64_t)ntok;
            ds->index[k] = (int64_t)i;
            ds->flags[k] = (uint8_t)((s.truncated ? CONV_F_TRUNCATED : 0) | (s.mismatch ? CONV_F_MISMATCH : 0));
            ds->n++;
            ds->n_truncated += s.truncated;
            ds->n_mismatch += s.mismatch;
            ds->n_unsupervised += s.supervised == 0;
            ds->n_tokens += s.n;
            ds->n_supervised += s.supervised;
        }
        conv_sample_free(&s);
    }
    free(msgs);
    free(lens);
    json_free(doc);
    if (rc == 0 && c.warned > CONV_WARN_LIMIT)
        log_warn("%s: %" PRId64 " more problem samples not shown", path, c.warned - CONV_WARN_LIMIT);
    if (rc) {
        conv_dataset_free(ds);
        return -1;
    }
    return 0;
}

int conv_load_json(const char *path, tokenizer *tok, const char *template_name, int max_len, conv_dataset *out) {
    memset(out, 0, sizeof *out);
    conv_encoder *e = conv_encoder_new(tok, template_name, max_len);
    if (!e) return -1;
    int rc = conv_load_json_with(path, e, out);
    conv_encoder_free(e);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* HDF5 output                                                              */
/* ------------------------------------------------------------------------ */

int64_t conv_write_tokens(const conv_dataset *ds, const char *h5path, int T, int vocab) {
    if (!ds || !h5path) return ar_errorf("conv_write_tokens: bad arguments");
    if (T < 2) return ar_errorf("conv_write_tokens: %s: the sequence length must be at least 2, got %d", h5path, T);
    if (vocab < 1) return ar_errorf("conv_write_tokens: %s: vocab_size must be at least 1, got %d", h5path, vocab);
    int pad = ds->pad_id >= 0 && ds->pad_id < vocab ? ds->pad_id : 0;
    int64_t rows = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        int64_t b = ds->start[i], len = ds->start[i + 1] - b, sup = 0;
        for (int64_t t = 0; t < len; t++) sup += ds->labels[b + t] != CONV_IGNORE;
        if (!sup) continue;
        if (len > T)
            return ar_errorf("conv_write_tokens: %s: sample %" PRId64 " has %" PRId64
                             " tokens, more than the sequence length %d (load it with max_len <= %d)",
                             h5path, ds->index[i], len, T, T);
        for (int64_t t = 0; t < len; t++) {
            int id = ds->ids[b + t];
            if (id < 0)
                return ar_errorf("conv_write_tokens: %s: sample %" PRId64 " holds a placeholder (id %d) at position %" PRId64
                                 "; the token dataset format carries text tokens only", h5path, ds->index[i], id, t);
            if (id >= vocab)
                return ar_errorf("conv_write_tokens: %s: sample %" PRId64 ": token id %d at position %" PRId64
                                 " is outside the vocabulary [0, %d)", h5path, ds->index[i], id, t, vocab);
        }
        rows++;
    }
    if (rows == 0) return ar_errorf("conv_write_tokens: %s: no sample has a supervised token; nothing to write", h5path);
    if ((uint64_t)rows > SIZE_MAX / sizeof(int) / (uint64_t)T)
        return ar_errorf("conv_write_tokens: %s: %" PRId64 " x %d tokens do not fit in memory", h5path, rows, T);
    size_t cells = (size_t)rows * (size_t)T;
    int *ids = malloc(cells * sizeof *ids), *labels = malloc(cells * sizeof *labels);
    uint8_t *m = calloc(cells, 1);
    if (!ids || !labels || !m) {
        free(ids);
        free(labels);
        free(m);
        return ar_errorf("conv_write_tokens: %s: out of memory for %" PRId64 " x %d tokens", h5path, rows, T);
    }
    int64_t r = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        int64_t b = ds->start[i], len = ds->start[i + 1] - b, sup = 0;
        for (int64_t t = 0; t < len; t++) sup += ds->labels[b + t] != CONV_IGNORE;
        if (!sup) continue;
        int *ri = ids + (size_t)r * (size_t)T, *rl = labels + (size_t)r * (size_t)T;
        uint8_t *rm = m + (size_t)r * (size_t)T;
        for (int64_t t = 0; t < T; t++) {
            ri[t] = t < len ? ds->ids[b + t] : pad;
            rl[t] = t < len ? ds->labels[b + t] : CONV_IGNORE;
            rm[t] = t < len;
        }
        r++;
    }
    int rc = tds_write(h5path, ids, labels, m, rows, T, vocab, pad);
    free(ids);
    free(labels);
    free(m);
    return rc < 0 ? -1 : rows;
}
