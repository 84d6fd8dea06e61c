/* core/json.c — strict JSON DOM parser (see json.h).
 *
 * One pass over the input, no recursion. Values being built sit on a growable
 * stack of json_member slots (an array element uses only .value); open
 * containers are frames recording where their children start on that stack.
 * When a container closes, its children are copied once into a block of the
 * document's node pool (a few large blocks, doubling), so every value is
 * copied at most once: O(n) time.
 *
 * Strings are unescaped into one buffer of len+1 bytes allocated up front: a
 * string's unescaped bytes plus its NUL never exceed its raw bytes including
 * both quotes, so the buffer cannot overflow and output never runs ahead of
 * input (out - strbuf <= p - text), which also makes the 16-byte block copies
 * of the string scanner safe. Untouched pages of that buffer cost no memory.
 *
 * Numbers: integers are accumulated exactly; decimals with at most 19
 * significant digits and a small exponent use the exact fast path
 * (m * 10^e or m / 10^e with m <= 2^53, |e| <= 22: both operands exact, so
 * one correctly rounded operation); everything else goes to strtod_l in the
 * "C" locale, which rounds correctly.
 */
#define _GNU_SOURCE   /* strtod_l */
#include "core/json.h"

#include "core/error.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------------ */
/* Document and node pool                                                   */
/* ------------------------------------------------------------------------ */
typedef struct pool_block {
    struct pool_block *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
} pool_block;

struct json_doc {
    json_value root;
    pool_block *blocks;     /* newest first */
    size_t next_cap;        /* capacity of the next block */
    char *strbuf;           /* all strings and keys */
};

#define POOL_FIRST (16u << 10)
#define POOL_MAX   (64u << 20)

static void *pool_alloc(json_doc *d, size_t bytes) {
    bytes = (bytes + 15) & ~(size_t)15;
    pool_block *b = d->blocks;
    if (!b || b->cap - b->used < bytes) {
        size_t cap = d->next_cap;
        if (cap < bytes) cap = bytes;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = d->blocks;
        d->blocks = b;
        if (d->next_cap < POOL_MAX) d->next_cap *= 2;
    }
    void *r = b->data + b->used;
    b->used += bytes;
    return r;
}

void json_free(json_doc *d) {
    if (!d) return;
    pool_block *b = d->blocks;
    while (b) {
        pool_block *n = b->next;
        free(b);
        b = n;
    }
    free(d->strbuf);
    free(d);
}

const json_value *json_root(const json_doc *d) { return d ? &d->root : NULL; }

/* ------------------------------------------------------------------------ */
/* Parser state and error messages                                          */
/* ------------------------------------------------------------------------ */
typedef struct {
    json_type type;      /* JSON_ARRAY or JSON_OBJECT */
    size_t base;         /* first child's slot on the value stack */
} frame;

typedef struct {
    const char *text, *end;
    const char *start;   /* after the byte order mark */
    const char *origin;
    json_doc *doc;
    char *out;           /* string buffer cursor */
    json_member *stack;  /* value slots */
    size_t sp, cap;
    int depth;
    frame frames[JSON_MAX_DEPTH];
    char found[96];      /* scratch for "found ..." descriptions */
} parser;

/* Formats "<origin>: line L, column C: <message>" for position pos. */
__attribute__((format(printf, 3, 4)))
static int fail(parser *ps, const char *pos, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (pos > ps->end) pos = ps->end;
    size_t line = 1;
    const char *ls = ps->start;
    for (const char *q = ps->text; q < pos; q++)
        if (*q == '\n') { line++; ls = q + 1; }
    if (ls < ps->start) ls = ps->start;
    size_t col = 1;
    for (const char *q = ls; q < pos; q++)
        if (((unsigned char)*q & 0xC0) != 0x80) col++;
    return ar_errorf("%s: line %zu, column %zu: %s", ps->origin, line, col, msg);
}

static int is_word_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '+' || c == '-' || c == '.';
}

/* Describes what stands at p: end of input, a quoted word or character, or a byte. */
static const char *describe(parser *ps, const char *p) {
    char *b = ps->found;
    size_t cap = sizeof ps->found;
    if (p >= ps->end) return "end of input";
    unsigned char c = (unsigned char)*p;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '+' || c == '.') {
        size_t n = 0;
        while (p + n < ps->end && n < 32 && is_word_char((unsigned char)p[n])) n++;
        int more = p + n < ps->end && is_word_char((unsigned char)p[n]);
        snprintf(b, cap, "'%.*s%s'", (int)n, p, more ? "..." : "");
    } else if (c >= 0x21 && c <= 0x7E) {
        snprintf(b, cap, "'%c'", c);
    } else if (c < 0x20 || c == 0x7F) {
        snprintf(b, cap, "control character 0x%02X", c);
    } else {
        snprintf(b, cap, "byte 0x%02X", c);
    }
    return b;
}

/* ------------------------------------------------------------------------ */
/* Lexical helpers                                                          */
/* ------------------------------------------------------------------------ */
static inline const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

static inline int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Reads 4 hex digits at p (p + 4 <= end checked by the caller); -1 if not hex. */
static inline long hex4(const char *p) {
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

static inline char *put_utf8(char *o, unsigned long cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* Length of the valid UTF-8 sequence starting with byte p[0] >= 0x80, or 0 if
 * invalid; *bad = index of the first offending byte (n = truncated at end). */
static inline int utf8_seq(const unsigned char *p, const unsigned char *end, int *bad) {
    unsigned c = p[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0xC2) { *bad = 0; return 0; }
    else if (c < 0xE0) need = 1;
    else if (c < 0xF0) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
    else if (c < 0xF5) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
    else { *bad = 0; return 0; }
    for (int i = 1; i <= need; i++) {
        if (p + i >= end) { *bad = i; return 0; }
        unsigned b = p[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) { *bad = i; return 0; }
    }
    return need + 1;
}

static int fail_utf8(parser *ps, const char *p, int bad) {
    char buf[64];
    size_t o = 0;
    for (int i = 0; i <= bad && p + i < ps->end; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s0x%02X", i ? " " : "", (unsigned char)p[i]);
    int trunc = p + bad >= ps->end;
    return fail(ps, p, "expected valid UTF-8, found %s %s%s", bad || trunc ? "bytes" : "byte", buf,
                trunc ? " then end of input" : "");
}

/* ------------------------------------------------------------------------ */
/* Strings                                                                  */
/* ------------------------------------------------------------------------ */
/* 1 for bytes the string scanner must look at: '"', '\\', controls, >= 0x80. */
static const unsigned char k_special[256] = {
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
};

/* *pp points at the opening quote. Unescapes into ps->out; on success sets
 * *s, *n and moves *pp past the closing quote. */
static int parse_string(parser *ps, const char **pp, const char **s, size_t *n) {
    const char *p = *pp + 1, *end = ps->end;
    char *o = ps->out, *o0 = o;
    for (;;) {
#ifdef __SSE2__
        while (end - p >= 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)p);
            __m128i sp = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                                      _mm_cmpeq_epi8(x, _mm_set1_epi8('\\')));
            sp = _mm_or_si128(sp, _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)));   /* signed: also >= 0x80 */
            _mm_storeu_si128((__m128i *)o, x);
            unsigned m = (unsigned)_mm_movemask_epi8(sp);
            if (m) {
                unsigned k = (unsigned)__builtin_ctz(m);
                p += k;
                o += k;
                break;
            }
            p += 16;
            o += 16;
        }
#endif
        while (p < end && !k_special[(unsigned char)*p]) *o++ = *p++;
        if (p >= end) return fail(ps, p, "expected '\"' to close the string, found end of input");
        unsigned char c = (unsigned char)*p;
        if (c == '"') break;
        if (c == '\\') {
            if (p + 1 >= end) return fail(ps, p + 1, "expected an escape character after '\\', found end of input");
            char e = p[1];
            switch (e) {
            case '"': *o++ = '"'; p += 2; continue;
            case '\\': *o++ = '\\'; p += 2; continue;
            case '/': *o++ = '/'; p += 2; continue;
            case 'b': *o++ = '\b'; p += 2; continue;
            case 'f': *o++ = '\f'; p += 2; continue;
            case 'n': *o++ = '\n'; p += 2; continue;
            case 'r': *o++ = '\r'; p += 2; continue;
            case 't': *o++ = '\t'; p += 2; continue;
            case 'u': break;
            default:
                if ((unsigned char)e >= 0x21 && (unsigned char)e <= 0x7E)
                    return fail(ps, p, "expected an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX), found '\\%c'", e);
                return fail(ps, p, "expected an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX), found '\\' then %s",
                            describe(ps, p + 1));
            }
            long u = end - p >= 6 ? hex4(p + 2) : -1;
            if (u < 0) {
                const char *q = p + 2;
                while (q < end && q < p + 6 && hexval((unsigned char)*q) >= 0) q++;
                return fail(ps, p, "expected 4 hex digits after '\\u', found %s", describe(ps, q));
            }
            unsigned long cp = (unsigned long)u;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail(ps, p, "expected a high surrogate (\\uD800-\\uDBFF) before a low surrogate, found a lone '\\u%.4s'", p + 2);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                long lo = (end - p >= 12 && p[6] == '\\' && p[7] == 'u') ? hex4(p + 8) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return fail(ps, p, "expected a low surrogate escape (\\uDC00-\\uDFFF) after '\\u%.4s', found %s",
                                p + 2, lo >= 0 ? "another code unit" : describe(ps, p + 6));
                cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
                p += 12;
            } else {
                p += 6;
            }
            o = put_utf8(o, cp);
            continue;
        }
        if (c < 0x20)
            return fail(ps, p, "expected a string character or '\"', found unescaped control character 0x%02X", c);
        int bad = 0;
        int k = utf8_seq((const unsigned char *)p, (const unsigned char *)end, &bad);
        if (!k) return fail_utf8(ps, p, bad);
        for (int i = 0; i < k; i++) *o++ = p[i];
        p += k;
    }
    *o = '\0';
    *s = o0;
    *n = (size_t)(o - o0);
    ps->out = o + 1;
    *pp = p + 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Numbers                                                                  */
/* ------------------------------------------------------------------------ */
static pthread_once_t g_c_locale_once = PTHREAD_ONCE_INIT;
static locale_t g_c_locale;
static void make_c_locale(void) { g_c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

/* Correctly rounded value of the number token [s, e) via strtod in the C locale. */
static double slow_strtod(const char *s, const char *e) {
    char small[80];
    size_t n = (size_t)(e - s);
    char *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) return NAN;
    memcpy(buf, s, n);
    buf[n] = '\0';
    pthread_once(&g_c_locale_once, make_c_locale);
    double v = g_c_locale ? strtod_l(buf, NULL, g_c_locale) : strtod(buf, NULL);
    if (buf != small) free(buf);
    return v;
}

static const double k_pow10[23] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)

static int parse_number(parser *ps, const char **pp, json_value *v) {
    const char *s = *pp, *p = s, *end = ps->end;
    int neg = 0;
    if (*p == '-') { neg = 1; p++; }
    if (p >= end || !IS_DIGIT(*p))
        return fail(ps, p, "expected a digit after '-', found %s", describe(ps, p));
    uint64_t m = 0;
    int many = 0;            /* more significant digits than m holds */
    long dexp = 0;           /* decimal exponent adjustment from digits */
    if (*p == '0') {
        p++;
        if (p < end && IS_DIGIT(*p)) {
            const char *q = p;
            while (q < end && IS_DIGIT(*q)) q++;
            return fail(ps, s, "expected a number without leading zeros, found '%.*s%s'",
                        q - s > 32 ? 32 : (int)(q - s), s, q - s > 32 ? "..." : "");
        }
    } else {
        while (p < end && IS_DIGIT(*p)) {
            unsigned d = (unsigned)(*p - '0');
            if (m < 1844674407370955161ull) m = m * 10 + d;
            else { many = 1; dexp++; }
            p++;
        }
    }
    int integral = 1;
    if (p < end && *p == '.') {
        integral = 0;
        p++;
        if (p >= end || !IS_DIGIT(*p))
            return fail(ps, p, "expected a digit after '.', found %s", describe(ps, p));
        while (p < end && IS_DIGIT(*p)) {
            unsigned d = (unsigned)(*p - '0');
            if (m < 1844674407370955161ull) { m = m * 10 + d; dexp--; }
            else many = 1;
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        integral = 0;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) { eneg = *p == '-'; p++; }
        if (p >= end || !IS_DIGIT(*p))
            return fail(ps, p, "expected a digit in the exponent, found %s", describe(ps, p));
        long ex = 0;
        while (p < end && IS_DIGIT(*p)) {
            if (ex < 100000000) ex = ex * 10 + (*p - '0');
            p++;
        }
        dexp += eneg ? -ex : ex;
    }
    *pp = p;
    v->type = JSON_NUMBER;
    if (integral && !many) {
        if (!neg && m <= (uint64_t)INT64_MAX) {
            v->is_int = 1;
            v->integer = (int64_t)m;
            v->number = (double)v->integer;
            return 0;
        }
        if (neg && m <= (uint64_t)INT64_MAX + 1) {
            v->is_int = 1;
            v->integer = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
            v->number = m ? (double)v->integer : -0.0;
            return 0;
        }
    }
    double d;
    if (m == 0 && !many) {
        d = 0.0;
    } else if (!many && m <= (1ull << 53) && dexp >= -22 && dexp <= 22) {
        d = (double)m;
        d = dexp < 0 ? d / k_pow10[-dexp] : d * k_pow10[dexp];
    } else {
        d = slow_strtod(neg ? s + 1 : s, p);
        if (isinf(d))
            return fail(ps, s, "number out of range: expected a magnitude below 1.8e308, found '%.*s%s'",
                        p - s > 40 ? 40 : (int)(p - s), s, p - s > 40 ? "..." : "");
    }
    v->number = neg ? -d : d;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The parser                                                               */
/* ------------------------------------------------------------------------ */
/* Pushes a zeroed slot; returns its index or (size_t)-1 on out of memory. */
static inline size_t push_slot(parser *ps) {
    if (ps->sp == ps->cap) {
        size_t nc = ps->cap ? ps->cap * 2 : 256;
        json_member *ns = realloc(ps->stack, nc * sizeof *ns);
        if (!ns) return (size_t)-1;
        ps->stack = ns;
        ps->cap = nc;
    }
    memset(&ps->stack[ps->sp], 0, sizeof ps->stack[0]);
    return ps->sp++;
}

/* Closes the innermost container: moves its children into the pool. */
static int close_container(parser *ps) {
    frame *f = &ps->frames[--ps->depth];
    size_t n = ps->sp - f->base;
    json_value *c = &ps->stack[f->base - 1].value;
    c->n = n;
    if (n) {
        if (f->type == JSON_ARRAY) {
            json_value *items = pool_alloc(ps->doc, n * sizeof *items);
            if (!items) return ar_errorf("%s: out of memory for %zu array items", ps->origin, n);
            for (size_t i = 0; i < n; i++) items[i] = ps->stack[f->base + i].value;
            c->items = items;
        } else {
            json_member *mem = pool_alloc(ps->doc, n * sizeof *mem);
            if (!mem) return ar_errorf("%s: out of memory for %zu object members", ps->origin, n);
            memcpy(mem, &ps->stack[f->base], n * sizeof *mem);
            c->members = mem;
        }
    }
    ps->sp = f->base;
    return 0;
}

/* Parses a value that starts with a letter: true, false or null. */
static int parse_literal(parser *ps, const char **pp, json_value *v) {
    const char *p = *pp;
    size_t avail = (size_t)(ps->end - p), n = 0;
    if (avail >= 4 && memcmp(p, "true", 4) == 0) { v->type = JSON_BOOL; v->boolean = 1; n = 4; }
    else if (avail >= 5 && memcmp(p, "false", 5) == 0) { v->type = JSON_BOOL; n = 5; }
    else if (avail >= 4 && memcmp(p, "null", 4) == 0) { v->type = JSON_NULL; n = 4; }
    if (!n || (p + n < ps->end && is_word_char((unsigned char)p[n])))
        return fail(ps, p, "expected a value, found %s", describe(ps, p));
    *pp = p + n;
    return 0;
}

static int run(parser *ps) {
    const char *p = skip_ws(ps->start, ps->end), *end = ps->end;
    size_t slot = push_slot(ps);   /* the root */
    if (slot == (size_t)-1) goto oom;

value:   /* parse one value into stack[slot].value */
    {
        json_value *v = &ps->stack[slot].value;
        if (p >= end) return fail(ps, p, "expected a value, found end of input");
        v->offset = (size_t)(p - ps->text);
        switch (*p) {
        case '"':
            v->type = JSON_STRING;
            if (parse_string(ps, &p, &v->str, &v->len) < 0) return -1;
            break;
        case '-': case '0': case '1': case '2': case '3': case '4':
        case '5': case '6': case '7': case '8': case '9':
            if (parse_number(ps, &p, v) < 0) return -1;
            break;
        case 't': case 'f': case 'n':
            if (parse_literal(ps, &p, v) < 0) return -1;
            break;
        case '[': case '{': {
            int is_obj = *p == '{';
            if (ps->depth == JSON_MAX_DEPTH)
                return fail(ps, p, "expected at most %d nested arrays/objects, found deeper nesting", JSON_MAX_DEPTH);
            v->type = is_obj ? JSON_OBJECT : JSON_ARRAY;
            ps->frames[ps->depth].type = v->type;
            ps->frames[ps->depth].base = ps->sp;
            ps->depth++;
            p = skip_ws(p + 1, end);
            if (p < end && *p == (is_obj ? '}' : ']')) {
                p++;
                if (close_container(ps) < 0) return -1;
                break;
            }
            if ((slot = push_slot(ps)) == (size_t)-1) goto oom;
            if (is_obj) {
                if (p >= end || *p != '"')
                    return fail(ps, p, "expected a string key or '}', found %s", describe(ps, p));
                goto key;
            }
            goto value;
        }
        default:
            return fail(ps, p, "expected a value, found %s", describe(ps, p));
        }
    }

after:   /* a value is complete; what follows depends on the innermost container */
    if (ps->depth == 0) {
        p = skip_ws(p, end);
        if (p < end) return fail(ps, p, "expected end of input after the root value, found %s", describe(ps, p));
        return 0;
    }
    p = skip_ws(p, end);
    if (ps->frames[ps->depth - 1].type == JSON_ARRAY) {
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            if (p < end && *p == ']') return fail(ps, p, "expected a value after ',' (no trailing commas), found ']'");
            if ((slot = push_slot(ps)) == (size_t)-1) goto oom;
            goto value;
        }
        if (p < end && *p == ']') {
            p++;
            if (close_container(ps) < 0) return -1;
            goto after;
        }
        return fail(ps, p, "expected ',' or ']' after an array element, found %s", describe(ps, p));
    }
    if (p < end && *p == ',') {
        p = skip_ws(p + 1, end);
        if (p >= end || *p != '"') {
            if (p < end && *p == '}')
                return fail(ps, p, "expected a string key after ',' (no trailing commas), found '}'");
            return fail(ps, p, "expected a string key after ',', found %s", describe(ps, p));
        }
        if ((slot = push_slot(ps)) == (size_t)-1) goto oom;
        goto key;
    }
    if (p < end && *p == '}') {
        p++;
        if (close_container(ps) < 0) return -1;
        goto after;
    }
    return fail(ps, p, "expected ',' or '}' after an object member, found %s", describe(ps, p));

key:     /* p at the '"' of a key for stack[slot] */
    {
        json_member *mb = &ps->stack[slot];
        if (parse_string(ps, &p, &mb->key, &mb->key_len) < 0) return -1;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return fail(ps, p, "expected ':' after the object key, found %s", describe(ps, p));
        p = skip_ws(p + 1, end);
        goto value;
    }

oom:
    return ar_errorf("%s: out of memory for the parser stack (%zu values)", ps->origin, ps->sp);
}

json_doc *json_parse(const char *text, size_t len, const char *origin) {
    if (!origin) origin = "JSON";
    if (!text && len) {
        ar_errorf("%s: json_parse: NULL text with length %zu", origin, len);
        return NULL;
    }
    if (!text) text = "";
    json_doc *d = calloc(1, sizeof *d);
    parser *ps = malloc(sizeof *ps);
    if (!d || !ps || len == SIZE_MAX || !(d->strbuf = malloc(len + 1))) {
        ar_errorf("%s: out of memory for a %zu-byte document", origin, len);
        free(ps);
        json_free(d);
        return NULL;
    }
    d->next_cap = POOL_FIRST;
    ps->text = text;
    ps->end = text + len;
    ps->start = text;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) ps->start = text + 3;
    ps->origin = origin;
    ps->doc = d;
    ps->out = d->strbuf;
    ps->stack = NULL;
    ps->sp = ps->cap = 0;
    ps->depth = 0;
    int rc = run(ps);
    if (rc == 0) d->root = ps->stack[0].value;
    free(ps->stack);
    free(ps);
    if (rc < 0) {
        json_free(d);
        return NULL;
    }
    return d;
}

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */
json_doc *json_parse_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ar_errorf("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        ar_errorf("%s: cannot stat: %s", path, strerror(errno));
        fclose(f);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        ar_errorf("%s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size >= (uint64_t)SIZE_MAX / 2) {
        ar_errorf("%s: file size %lld is too large", path, (long long)st.st_size);
        fclose(f);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        ar_errorf("%s: out of memory for %zu bytes", path, size);
        fclose(f);
        return NULL;
    }
    size_t got = fread(buf, 1, size, f);
    int err = ferror(f);
    int more = got == size && fgetc(f) != EOF;
    fclose(f);
    if (got != size || err || more) {
        ar_errorf("%s: %s (read %zu of %zu bytes)", path,
                  err ? "read error" : more ? "file grew while reading" : "file shrank while reading", got, size);
        free(buf);
        return NULL;
    }
    json_doc *d = json_parse(buf, size, path);
    free(buf);
    return d;
}

/* ------------------------------------------------------------------------ */
/* Access                                                                   */
/* ------------------------------------------------------------------------ */
const json_value *json_get(const json_value *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT || !key) return NULL;
    size_t kl = strlen(key);
    for (size_t i = obj->n; i-- > 0;) {
        const json_member *m = &obj->members[i];
        if (m->key_len == kl && memcmp(m->key, key, kl) == 0) return &m->value;
    }
    return NULL;
}

const json_value *json_at(const json_value *arr, size_t i) {
    if (!arr || arr->type != JSON_ARRAY || i >= arr->n) return NULL;
    return &arr->items[i];
}

const char *json_type_name(json_type t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "boolean";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "?";
}

/* Finds obj[key] for a typed getter; -1 + message if obj is not an object or key is missing. */
static int get_field(const json_value *obj, const char *key, const char *expected, const char *what,
                     const json_value **out) {
    const char *sep = what && *what ? ": " : "";
    if (!what) what = "";
    if (!obj || obj->type != JSON_OBJECT)
        return ar_errorf("%s%sexpected an object holding '%s', found %s", what, sep, key,
                         obj ? json_type_name(obj->type) : "nothing");
    const json_value *v = json_get(obj, key);
    if (!v) return ar_errorf("%s%smissing required field '%s' (expected %s)", what, sep, key, expected);
    *out = v;
    return 0;
}

static int wrong_type(const json_value *v, const char *key, const char *expected, const char *what) {
    const char *sep = what && *what ? ": " : "";
    if (!what) what = "";
    if (v->type == JSON_NUMBER)
        return ar_errorf("%s%sexpected '%s' to be %s, found number %.17g", what, sep, key, expected, v->number);
    return ar_errorf("%s%sexpected '%s' to be %s, found %s", what, sep, key, expected, json_type_name(v->type));
}

int json_get_string(const json_value *obj, const char *key, const char **out, size_t *len, const char *what) {
    const json_value *v;
    if (get_field(obj, key, "a string", what, &v) < 0) return -1;
    if (v->type != JSON_STRING) return wrong_type(v, key, "a string", what);
    *out = v->str;
    if (len) *len = v->len;
    return 0;
}

int json_get_int64(const json_value *obj, const char *key, int64_t *out, const char *what) {
    const json_value *v;
    if (get_field(obj, key, "an integer", what, &v) < 0) return -1;
    if (v->type == JSON_NUMBER && v->is_int) {
        *out = v->integer;
        return 0;
    }
    if (v->type == JSON_NUMBER && v->number == floor(v->number) && fabs(v->number) <= 9007199254740992.0) {
        *out = (int64_t)v->number;
        return 0;
    }
    return wrong_type(v, key, "an integer", what);
}

int json_get_number(const json_value *obj, const char *key, double *out, const char *what) {
    const json_value *v;
    if (get_field(obj, key, "a number", what, &v) < 0) return -1;
    if (v->type != JSON_NUMBER) return wrong_type(v, key, "a number", what);
    *out = v->number;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */
int json_write_string(FILE *f, const char *s, size_t len) {
    if (!s && len) return ar_errorf("json_write_string: NULL string with length %zu", len);
    const unsigned char *u = (const unsigned char *)s, *end = u + len;
    for (const unsigned char *q = u; q < end;) {
        if (*q < 0x80) { q++; continue; }
        int bad = 0;
        int k = utf8_seq(q, end, &bad);
        if (!k) return ar_errorf("json_write_string: invalid UTF-8 at byte %zu of %zu", (size_t)(q - u), len);
        q += k;
    }
    int ok = fputc('"', f) != EOF;
    const unsigned char *run = u;
    for (const unsigned char *q = u; q < end && ok; q++) {
        unsigned char c = *q;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (q > run && fwrite(run, 1, (size_t)(q - run), f) != (size_t)(q - run)) ok = 0;
        char esc[8];
        switch (c) {
        case '"': memcpy(esc, "\\\"", 3); break;
        case '\\': memcpy(esc, "\\\\", 3); break;
        case '\b': memcpy(esc, "\\b", 3); break;
        case '\f': memcpy(esc, "\\f", 3); break;
        case '\n': memcpy(esc, "\\n", 3); break;
        case '\r': memcpy(esc, "\\r", 3); break;
        case '\t': memcpy(esc, "\\t", 3); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", c); break;
        }
        if (ok && fputs(esc, f) == EOF) ok = 0;
        run = q + 1;
    }
    if (ok && end > run && fwrite(run, 1, (size_t)(end - run), f) != (size_t)(end - run)) ok = 0;
    if (ok && fputc('"', f) == EOF) ok = 0;
    if (!ok) return ar_errorf("json_write_string: write error: %s", strerror(errno));
    return 0;
}
