/* data/pickle.c — the pickle reader of data/pickle.h: a stack machine over
 * the opcodes of plain data (protocols 0–5), every read bounds-checked, no
 * object construction. Depends on core/error.h and libc.
 */
#include "data/pickle.h"

#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct pk_doc {
    char      name[256];
    pk_value *root;
    pk_value *all;          /* every node, linked by next_alloc */
    size_t    n_nodes;
    int       proto;
};

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    pk_doc *doc;
    pk_value **stack;
    size_t sn, scap;
    size_t *marks;
    size_t mn, mcap;
    pk_value **memo;
    size_t memo_cap, memo_count;
    size_t op_off;
    uint8_t op;
    const pk_options *opt;   /* NULL: plain data only */
} pk_parser;

/* ---- opcode names ---------------------------------------------------------------------- */

const char *pk_opcode_name(uint8_t op) {
    switch (op) {
    case 'I': return "INT";            case 'J': return "BININT";
    case 'K': return "BININT1";        case 'M': return "BININT2";
    case 'L': return "LONG";           case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";         case 'S': return "STRING";
    case 'T': return "BINSTRING";      case 'U': return "SHORT_BINSTRING";
    case 'B': return "BINBYTES";       case 'C': return "SHORT_BINBYTES";
    case 0x8e: return "BINBYTES8";     case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";   case 0x98: return "READONLY_BUFFER";
    case 'N': return "NONE";           case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";      case 'V': return "UNICODE";
    case 0x8c: return "SHORT_BINUNICODE"; case 'X': return "BINUNICODE";
    case 0x8d: return "BINUNICODE8";   case 'F': return "FLOAT";
    case 'G': return "BINFLOAT";       case ']': return "EMPTY_LIST";
    case 'a': return "APPEND";         case 'e': return "APPENDS";
    case 'l': return "LIST";           case ')': return "EMPTY_TUPLE";
    case 't': return "TUPLE";          case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";        case 0x87: return "TUPLE3";
    case '}': return "EMPTY_DICT";     case 'd': return "DICT";
    case 's': return "SETITEM";        case 'u': return "SETITEMS";
    case 0x8f: return "EMPTY_SET";     case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";     case '0': return "POP";
    case '2': return "DUP";            case '(': return "MARK";
    case '1': return "POP_MARK";       case 'g': return "GET";
    case 'h': return "BINGET";         case 'j': return "LONG_BINGET";
    case 'p': return "PUT";            case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";    case 0x94: return "MEMOIZE";
    case 0x82: return "EXT1";          case 0x83: return "EXT2";
    case 0x84: return "EXT4";          case 'c': return "GLOBAL";
    case 0x93: return "STACK_GLOBAL";  case 'R': return "REDUCE";
    case 'b': return "BUILD";          case 'i': return "INST";
    case 'o': return "OBJ";            case 0x81: return "NEWOBJ";
    case 0x92: return "NEWOBJ_EX";     case 0x80: return "PROTO";
    case '.': return "STOP";           case 0x95: return "FRAME";
    case 'P': return "PERSID";         case 'Q': return "BINPERSID";
    default: return NULL;
    }
}

const char *pk_type_name(pk_type t) {
    switch (t) {
    case PK_NONE: return "None";  case PK_BOOL: return "bool";   case PK_INT: return "int";
    case PK_FLOAT: return "float"; case PK_STR: return "str";    case PK_BYTES: return "bytes";
    case PK_LIST: return "list";  case PK_TUPLE: return "tuple"; case PK_DICT: return "dict";
    case PK_GLOBAL: return "global"; case PK_CALL: return "call"; case PK_PERSID: return "persistent id";
    }
    return "?";
}

/* "<name>: <OPCODE> at offset N: <what>" */
__attribute__((format(printf, 2, 3)))
static int perr(pk_parser *P, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *on = pk_opcode_name(P->op);
    return ar_errorf("%s: %s at offset %zu: %s", P->doc->name, on ? on : "?", P->op_off, what);
}

/* ---- nodes, stack, marks, memo ------------------------------------------------------------ */

static pk_value *new_node(pk_parser *P, pk_type t) {
    if (P->doc->n_nodes >= PK_MAX_NODES) {
        perr(P, "more than %u values", (unsigned)PK_MAX_NODES);
        return NULL;
    }
    pk_value *v = calloc(1, sizeof *v);
    if (!v) { perr(P, "out of memory"); return NULL; }
    v->type = t;
    v->offset = P->op_off;
    v->next_alloc = P->doc->all;
    P->doc->all = v;
    P->doc->n_nodes++;
    return v;
}

static int grow(pk_parser *P, void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t nc = *cap ? *cap : 8;
    while (nc < need) {
        if (nc > SIZE_MAX / 2 / elem) return perr(P, "out of memory");
        nc *= 2;
    }
    void *q = realloc(*arr, nc * elem);
    if (!q) return perr(P, "out of memory");
    *arr = q;
    *cap = nc;
    return 0;
}

static int push(pk_parser *P, pk_value *v) {
    if (!v) return -1;
    if (grow(P, (void **)&P->stack, &P->scap, P->sn + 1, sizeof *P->stack) < 0) return -1;
    P->stack[P->sn++] = v;
    return 0;
}

static size_t fence(const pk_parser *P) { return P->mn ? P->marks[P->mn - 1] : 0; }

static pk_value *pop(pk_parser *P) {
    if (P->sn <= fence(P)) { perr(P, "stack underflow"); return NULL; }
    return P->stack[--P->sn];
}

static pk_value *top(pk_parser *P) {
    if (P->sn <= fence(P)) { perr(P, "stack underflow"); return NULL; }
    return P->stack[P->sn - 1];
}

/* Pops the latest MARK; the items above it are stack[*start, sn). */
static int pop_mark(pk_parser *P, size_t *start) {
    if (!P->mn) return perr(P, "no MARK on the stack");
    *start = P->marks[--P->mn];
    return 0;
}

static int memo_put(pk_parser *P, uint64_t idx, pk_value *v) {
    if (!v) return -1;
    if (idx > P->len) return perr(P, "memo index %llu too large for a %zu-byte input", (unsigned long long)idx, P->len);
    size_t old = P->memo_cap;
    if (grow(P, (void **)&P->memo, &P->memo_cap, (size_t)idx + 1, sizeof *P->memo) < 0) return -1;
    if (P->memo_cap > old) memset(P->memo + old, 0, (P->memo_cap - old) * sizeof *P->memo);
    if (!P->memo[idx]) P->memo_count++;
    P->memo[idx] = v;
    return 0;
}

static pk_value *memo_get(pk_parser *P, uint64_t idx) {
    if (idx >= P->memo_cap || !P->memo[idx]) {
        perr(P, "memo key %llu is not defined", (unsigned long long)idx);
        return NULL;
    }
    return P->memo[idx];
}

/* ---- containers ---------------------------------------------------------------------------- */

static int list_add(pk_parser *P, pk_value *l, pk_value *v) {
    if (grow(P, (void **)&l->items, &l->cap, l->n + 1, sizeof *l->items) < 0) return -1;
    l->items[l->n++] = v;
    return 0;
}

static pk_value *make_seq(pk_parser *P, pk_type t, pk_value *const *items, size_t n) {
    pk_value *v = new_node(P, t);
    if (!v) return NULL;
    if (n) {
        v->items = malloc(n * sizeof *v->items);
        if (!v->items) { perr(P, "out of memory"); return NULL; }
        memcpy(v->items, items, n * sizeof *v->items);
    }
    v->n = v->cap = n;
    return v;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint64_t key_hash(const pk_value *k) {
    if (k->type == PK_INT) return mix64((uint64_t)k->i);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < k->len; i++) h = (h ^ (uint8_t)k->s[i]) * 1099511628211ULL;
    return mix64(h ^ 0x5354);
}

static int key_eq(const pk_value *a, const pk_value *b) {
    if (a->type != b->type) return 0;
    if (a->type == PK_INT) return a->i == b->i;
    return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
}

#define PK_DICT_LINEAR 8   /* dicts up to this size are searched without an index */

static int dict_reindex(pk_value *d) {
    size_t cap = 16;
    while (cap < 2 * (d->n + 1)) cap *= 2;
    uint32_t *ix = calloc(cap, sizeof *ix);
    if (!ix) return -1;
    for (size_t i = 0; i < d->n; i++) {
        size_t h = (size_t)key_hash(d->keys[i]) & (cap - 1);
        while (ix[h]) h = (h + 1) & (cap - 1);
        ix[h] = (uint32_t)(i + 1);
    }
    free(d->index);
    d->index = ix;
    d->index_cap = cap;
    return 0;
}

/* Index of key in d, or -1. */
static long dict_find(const pk_value *d, const pk_value *k) {
    if (!d->index) {
        for (size_t i = 0; i < d->n; i++)
            if (key_eq(d->keys[i], k)) return (long)i;
        return -1;
    }
    size_t h = (size_t)key_hash(k) & (d->index_cap - 1);
    while (d->index[h]) {
        size_t i = d->index[h] - 1;
        if (key_eq(d->keys[i], k)) return (long)i;
        h = (h + 1) & (d->index_cap - 1);
    }
    return -1;
}

static int dict_set(pk_parser *P, pk_value *d, pk_value *k, pk_value *v) {
    if (k->type != PK_STR && k->type != PK_INT)
        return perr(P, "dict key of type %s (only str and int keys are supported)", pk_type_name(k->type));
    long at = dict_find(d, k);
    if (at >= 0) { d->vals[at] = v; return 0; }
    if (d->n + 1 > d->cap) {
        size_t cap = d->cap;
        if (grow(P, (void **)&d->keys, &cap, d->n + 1, sizeof *d->keys) < 0) return -1;
        size_t cap2 = d->cap;
        if (grow(P, (void **)&d->vals, &cap2, d->n + 1, sizeof *d->vals) < 0) return -1;
        d->cap = cap < cap2 ? cap : cap2;
    }
    d->keys[d->n] = k;
    d->vals[d->n] = v;
    d->n++;
    if (d->n > PK_DICT_LINEAR) {
        if (!d->index || 2 * (d->n + 1) > d->index_cap) {
            if (dict_reindex(d) < 0) return perr(P, "out of memory");
        } else {
            size_t h = (size_t)key_hash(k) & (d->index_cap - 1);
            while (d->index[h]) h = (h + 1) & (d->index_cap - 1);
            d->index[h] = (uint32_t)d->n;
        }
    }
    return 0;
}

static int need_type(pk_parser *P, const pk_value *v, pk_type t) {
    if (v->type != t) return perr(P, "expected a %s on the stack, found a %s", pk_type_name(t), pk_type_name(v->type));
    return 0;
}

/* ---- reading arguments ----------------------------------------------------------------------- */

static int need(pk_parser *P, uint64_t n) {
    if (n > P->len - P->pos)
        return perr(P, "truncated: needs %llu bytes, %zu left", (unsigned long long)n, P->len - P->pos);
    return 0;
}

static uint64_t rd_le(const uint8_t *p, int n) {
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) x = (x << 8) | p[i];
    return x;
}

/* Reads n little-endian bytes as an unsigned count. */
static int rd_count(pk_parser *P, int n, uint64_t *out) {
    if (need(P, (uint64_t)n) < 0) return -1;
    *out = rd_le(P->p + P->pos, n);
    P->pos += (size_t)n;
    return 0;
}

/* One text line (without its '\n'). */
static int rd_line(pk_parser *P, const char **s, size_t *n) {
    const uint8_t *nl = memchr(P->p + P->pos, '\n', P->len - P->pos);
    if (!nl) return perr(P, "truncated: no end of line");
    *s = (const char *)P->p + P->pos;
    *n = (size_t)(nl - (P->p + P->pos));
    P->pos += *n + 1;
    return 0;
}

/* Decimal integer text ([+-]?digits, an 'L' suffix when allow_l). */
static int parse_dec(pk_parser *P, const char *s, size_t n, int allow_l, int64_t *out) {
    if (allow_l && n && s[n - 1] == 'L') n--;
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    if (i == n) return perr(P, "expected a decimal integer, found \"%.*s\"", (int)(n > 40 ? 40 : n), s);
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, x = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return perr(P, "expected a decimal integer, found \"%.*s\"", (int)(n > 40 ? 40 : n), s);
        unsigned d = (unsigned)(s[i] - '0');
        if (x > (lim - d) / 10) return perr(P, "integer does not fit in 64 bits");
        x = x * 10 + d;
    }
    *out = neg ? (int64_t)(0 - x) : (int64_t)x;
    return 0;
}

/* Little-endian two's-complement integer of n bytes (LONG1 / LONG4). */
static int parse_long_bytes(pk_parser *P, const uint8_t *b, uint64_t n, int64_t *out) {
    if (n == 0) { *out = 0; return 0; }
    int neg = b[n - 1] & 0x80;
    /* bytes above the 8th must be pure sign extension */
    for (uint64_t k = 8; k < n; k++)
        if (b[k] != (neg ? 0xff : 0x00)) return perr(P, "integer does not fit in 64 bits");
    uint64_t m = n < 8 ? n : 8;
    uint64_t x = rd_le(b, (int)m);
    if (m < 8 && neg) x |= ~(uint64_t)0 << (8 * m);
    if (n > 8 && ((x >> 63) != 0) != (neg != 0)) return perr(P, "integer does not fit in 64 bits");
    memcpy(out, &x, sizeof x);
    return 0;
}

/* Appends code point c as UTF-8. */
static size_t put_utf8(char *o, uint32_t c) {
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xc0 | (c >> 6)); o[1] = (char)(0x80 | (c & 0x3f)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xe0 | (c >> 12)); o[1] = (char)(0x80 | ((c >> 6) & 0x3f)); o[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (c >> 18)); o[1] = (char)(0x80 | ((c >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3f)); o[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF); the byte position of the first error or -1. */
static long utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t k;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) { k = 1; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { k = 2; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { k = 3; cp = c & 0x07; min = 0x10000; }
        else return (long)i;
        if (n - i <= k) return (long)i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return (long)i;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return (long)i;
        i += k + 1;
    }
    return -1;
}

static pk_value *make_str(pk_parser *P, pk_type t, const char *s, size_t n) {
    pk_value *v = new_node(P, t);
    if (!v) return NULL;
    v->s = malloc(n + 1);
    if (!v->s) { perr(P, "out of memory"); return NULL; }
    if (n) memcpy(v->s, s, n);
    v->s[n] = '\0';
    v->len = n;
    return v;
}

/* A UTF-8 string argument of n bytes at the read position. */
static pk_value *rd_utf8(pk_parser *P, uint64_t n) {
    if (need(P, n) < 0) return NULL;
    const uint8_t *s = P->p + P->pos;
    long bad = utf8_invalid_at(s, (size_t)n);
    if (bad >= 0) { perr(P, "invalid UTF-8 at byte %ld of the string", bad); return NULL; }
    P->pos += (size_t)n;
    return make_str(P, PK_STR, (const char *)s, (size_t)n);
}

/* Python 2 byte strings read as latin-1 (each byte one code point). */
static pk_value *make_latin1(pk_parser *P, const uint8_t *s, size_t n) {
    if (n > (SIZE_MAX - 1) / 2) { perr(P, "out of memory"); return NULL; }
    char *o = malloc(2 * n + 1);
    if (!o) { perr(P, "out of memory"); return NULL; }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += put_utf8(o + m, s[i]);
    pk_value *v = make_str(P, PK_STR, o, m);
    free(o);
    return v;
}

static pk_value *rd_latin1(pk_parser *P, uint64_t n) {
    if (need(P, n) < 0) return NULL;
    const uint8_t *s = P->p + P->pos;
    P->pos += (size_t)n;
    return make_latin1(P, s, (size_t)n);
}

static pk_value *rd_bytes(pk_parser *P, uint64_t n) {
    if (need(P, n) < 0) return NULL;
    const char *s = (const char *)P->p + P->pos;
    P->pos += (size_t)n;
    return make_str(P, PK_BYTES, s, (size_t)n);
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* STRING: a quoted Python 2 repr, unescaped as codecs.escape_decode does, then latin-1. */
static pk_value *parse_string_line(pk_parser *P, const char *s, size_t n) {
    if (n < 2 || s[0] != s[n - 1] || (s[0] != '\'' && s[0] != '"')) {
        perr(P, "the STRING argument must be quoted");
        return NULL;
    }
    s++; n -= 2;
    uint8_t *o = malloc(n + 1);
    if (!o) { perr(P, "out of memory"); return NULL; }
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') { o[m++] = (uint8_t)s[i++]; continue; }
        if (++i == n) { free(o); perr(P, "trailing \\ in the STRING argument"); return NULL; }
        char c = s[i++];
        switch (c) {
        case '\n': break;
        case '\\': o[m++] = '\\'; break;
        case '\'': o[m++] = '\''; break;
        case '"': o[m++] = '"'; break;
        case 'b': o[m++] = '\b'; break;
        case 'f': o[m++] = '\f'; break;
        case 't': o[m++] = '\t'; break;
        case 'n': o[m++] = '\n'; break;
        case 'r': o[m++] = '\r'; break;
        case 'v': o[m++] = '\v'; break;
        case 'a': o[m++] = '\a'; break;
        case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
            unsigned x = (unsigned)(c - '0');
            for (int k = 0; k < 2 && i < n && s[i] >= '0' && s[i] <= '7'; k++) x = x * 8 + (unsigned)(s[i++] - '0');
            if (x > 0377) { free(o); perr(P, "octal escape above \\377 in the STRING argument"); return NULL; }
            o[m++] = (uint8_t)x;
            break;
        }
        case 'x': {
            int h1 = i < n ? hexval(s[i]) : -1, h2 = i + 1 < n ? hexval(s[i + 1]) : -1;
            if (h1 < 0 || h2 < 0) { free(o); perr(P, "invalid \\x escape in the STRING argument"); return NULL; }
            o[m++] = (uint8_t)(h1 * 16 + h2);
            i += 2;
            break;
        }
        default: o[m++] = '\\'; o[m++] = (uint8_t)c; break;   /* kept as is, like Python */
        }
    }
    pk_value *v = make_latin1(P, o, m);
    free(o);
    return v;
}

/* UNICODE: raw-unicode-escape (\uXXXX and \UXXXXXXXX after an odd run of
 * backslashes; every other byte is a latin-1 code point). A surrogate pair of
 * \u escapes is joined; a lone surrogate has no UTF-8 form and is an error. */
static pk_value *parse_unicode_line(pk_parser *P, const char *s, size_t n) {
    if (n > (SIZE_MAX - 1) / 4) { perr(P, "out of memory"); return NULL; }
    char *o = malloc(2 * n + 1);   /* each input byte yields at most 2 output bytes */
    if (!o) { perr(P, "out of memory"); return NULL; }
    size_t m = 0, i = 0;
    uint32_t hi = 0;   /* a pending high surrogate */
    while (i < n) {
        if (s[i] != '\\') {
            if (hi) goto lone;
            m += put_utf8(o + m, (uint8_t)s[i++]);
            continue;
        }
        size_t run = 0;
        while (i + run < n && s[i + run] == '\\') run++;
        if ((run & 1) == 0 || i + run >= n || (s[i + run] != 'u' && s[i + run] != 'U')) {
            if (hi) goto lone;
            for (size_t k = 0; k < run; k++) o[m++] = '\\';
            i += run;
            continue;
        }
        if (hi && run > 1) goto lone;
        for (size_t k = 0; k + 1 < run; k++) o[m++] = '\\';
        i += run;
        int digits = s[i] == 'u' ? 4 : 8;
        i++;
        uint32_t c = 0;
        for (int k = 0; k < digits; k++) {
            int h = i < n ? hexval(s[i]) : -1;
            if (h < 0) { free(o); perr(P, "truncated \\%c escape in the UNICODE argument", digits == 4 ? 'u' : 'U'); return NULL; }
            c = c * 16 + (uint32_t)h;
            i++;
        }
        if (c > 0x10ffff) { free(o); perr(P, "\\U escape above U+10FFFF in the UNICODE argument"); return NULL; }
        if (hi) {
            if (c < 0xdc00 || c > 0xdfff) goto lone;
            m += put_utf8(o + m, 0x10000 + ((hi - 0xd800) << 10) + (c - 0xdc00));
            hi = 0;
        } else if (c >= 0xd800 && c <= 0xdbff) {
            hi = c;
        } else if (c >= 0xdc00 && c <= 0xdfff) {
            goto lone;
        } else {
            m += put_utf8(o + m, c);
        }
    }
    if (hi) goto lone;
    pk_value *v = make_str(P, PK_STR, o, m);
    free(o);
    return v;
lone:
    free(o);
    perr(P, "lone surrogate in the UNICODE argument (no UTF-8 form)");
    return NULL;
}

static pk_value *parse_float_line(pk_parser *P, const char *s, size_t n) {
    char buf[64];
    if (n == 0 || n >= sizeof buf || memchr(s, 'x', n) || memchr(s, 'X', n) || memchr(s, '\0', n)) {
        perr(P, "expected a float, found \"%.*s\"", (int)(n > 40 ? 40 : n), s);
        return NULL;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    double x = strtod(buf, &end);
    if (end != buf + n || buf[0] == ' ' || buf[0] == '\t') {
        perr(P, "expected a float, found \"%s\"", buf);
        return NULL;
    }
    if (errno == ERANGE && isinf(x)) { perr(P, "float \"%s\" out of range", buf); return NULL; }
    pk_value *v = new_node(P, PK_FLOAT);
    if (v) v->f = x;
    return v;
}

static pk_value *make_int(pk_parser *P, int64_t x) {
    pk_value *v = new_node(P, PK_INT);
    if (v) v->i = x;
    return v;
}

/* ---- after STOP: cycles and depth ------------------------------------------------------------ */

static int is_container(const pk_value *v) {
    return v->type == PK_LIST || v->type == PK_TUPLE || v->type == PK_DICT || v->type == PK_CALL || v->type == PK_PERSID;
}
static size_t n_children(const pk_value *v) { return is_container(v) ? v->n : 0; }
static pk_value *child(const pk_value *v, size_t i) { return v->type == PK_DICT ? v->vals[i] : v->items[i]; }

/* Depth-first from the root: refuses a container inside itself and nesting deeper than PK_MAX_DEPTH. */
static int check_tree(pk_parser *P, pk_value *root) {
    struct { pk_value *v; size_t next; } st[PK_MAX_DEPTH + 2];
    int sp = 0;
    if (!is_container(root)) return 0;
    root->mark = 1;
    st[sp].v = root; st[sp].next = 0; sp++;
    while (sp) {
        pk_value *v = st[sp - 1].v;
        if (st[sp - 1].next < n_children(v)) {
            pk_value *c = child(v, st[sp - 1].next++);
            if (!is_container(c)) continue;
            if (c->mark == 1) return perr(P, "a %s made at offset %zu contains itself", pk_type_name(c->type), c->offset);
            if (c->mark == 2) {
                if (c->depth + sp > PK_MAX_DEPTH)
                    return perr(P, "values nested deeper than %d", PK_MAX_DEPTH);
                continue;
            }
            if (sp >= PK_MAX_DEPTH) return perr(P, "values nested deeper than %d", PK_MAX_DEPTH);
            c->mark = 1;
            st[sp].v = c; st[sp].next = 0; sp++;
        } else {
            int d = 1;
            for (size_t i = 0; i < v->n; i++) {
                pk_value *c = child(v, i);
                if (c->mark == 2 && c->depth + 1 > d) d = c->depth + 1;
            }
            v->depth = d;
            v->mark = 2;
            sp--;
        }
    }
    return 0;
}

/* ---- permissive mode: globals, calls and persistent ids as nodes ---------------------------- */

static int global_allowed(const pk_parser *P, const char *mod, size_t ml, const char *nm, size_t nl) {
    for (const char *const *g = P->opt->globals; g && *g; g++)
        if (strlen(*g) == ml + 1 + nl && memcmp(*g, mod, ml) == 0 && (*g)[ml] == '.' && memcmp(*g + ml + 1, nm, nl) == 0)
            return 1;
    return 0;
}

static pk_value *make_global(pk_parser *P, const char *mod, size_t ml, const char *nm, size_t nl) {
    if (memchr(mod, 0, ml) || memchr(nm, 0, nl) || !global_allowed(P, mod, ml, nm, nl)) {
        perr(P, "global '%.*s.%.*s' is not allowed (only known tensor rebuild functions and storage types are; "
             "nothing in a pickle is ever executed)", (int)(ml > 100 ? 100 : ml), mod, (int)(nl > 100 ? 100 : nl), nm);
        return NULL;
    }
    pk_value *v = make_str(P, PK_STR, mod, ml + 1 + nl);
    if (!v) return NULL;
    memcpy(v->s, mod, ml);
    v->s[ml] = '.';
    memcpy(v->s + ml + 1, nm, nl);
    v->type = PK_GLOBAL;
    return v;
}

static int permissive_op(pk_parser *P) {
    pk_value *v = NULL, *a, *c;
    const char *s = NULL, *s2 = NULL;
    size_t sl = 0, sl2 = 0;
    switch (P->op) {
    case 'c': /* GLOBAL: "module\nname\n" */
        if (rd_line(P, &s, &sl) < 0 || rd_line(P, &s2, &sl2) < 0) return -1;
        return push(P, make_global(P, s, sl, s2, sl2));
    case 0x93: /* STACK_GLOBAL */
        if (!(a = pop(P)) || !(c = pop(P))) return -1;
        if (a->type != PK_STR || c->type != PK_STR) return perr(P, "module and name must be str");
        return push(P, make_global(P, c->s, c->len, a->s, a->len));
    case 'R': /* REDUCE */
        if (!(a = pop(P)) || !(c = pop(P))) return -1;
        if (c->type != PK_GLOBAL) return perr(P, "calls a %s, expected a global", pk_type_name(c->type));
        if (a->type != PK_TUPLE) return perr(P, "arguments are a %s, expected a tuple", pk_type_name(a->type));
        if (a->n == 0 && strcmp(c->s, "collections.OrderedDict") == 0) return push(P, new_node(P, PK_DICT));
        {
            pk_value *it[2] = {c, a};
            return push(P, make_seq(P, PK_CALL, it, 2));
        }
    case 'b': /* BUILD: the state is dropped */
        if (!(a = pop(P)) || !(c = top(P))) return -1;
        if (c->type != PK_DICT && c->type != PK_CALL) return perr(P, "sets the state of a %s", pk_type_name(c->type));
        return 0;
    case 'Q': /* BINPERSID */
        if (!(a = pop(P))) return -1;
        return push(P, make_seq(P, PK_PERSID, &a, 1));
    case 'P': /* PERSID: a text line */
        if (rd_line(P, &s, &sl) < 0) return -1;
        if (utf8_invalid_at((const uint8_t *)s, sl) >= 0) return perr(P, "invalid UTF-8");
        if (!(a = make_str(P, PK_STR, s, sl))) return -1;
        return push(P, make_seq(P, PK_PERSID, &a, 1));
    }
    (void)v;
    return perr(P, "internal: not a permissive opcode");
}

/* ---- the machine ------------------------------------------------------------------------------ */

static int run(pk_parser *P) {
    for (;;) {
        if (P->pos >= P->len) {
            P->op = '.';
            P->op_off = P->pos;
            return ar_errorf("%s: truncated at offset %zu: the pickle ends before STOP", P->doc->name, P->pos);
        }
        P->op_off = P->pos;
        P->op = P->p[P->pos++];
        uint64_t n = 0;
        int64_t x = 0;
        const char *s = NULL;
        size_t sl = 0;
        pk_value *v, *k, *c;
        size_t start = 0;
        switch (P->op) {
        case 0x80: /* PROTO */
            if (rd_count(P, 1, &n) < 0) return -1;
            if (n > 5) return perr(P, "unsupported pickle protocol %llu", (unsigned long long)n);
            P->doc->proto = (int)n;
            break;
        case 0x95: /* FRAME */
            if (rd_count(P, 8, &n) < 0) return -1;
            if (n > P->len - P->pos) return perr(P, "truncated: frame of %llu bytes but %zu left", (unsigned long long)n, P->len - P->pos);
            break;
        case '.': /* STOP */
            if (!(v = pop(P))) return -1;
            if (check_tree(P, v) < 0) return -1;
            P->doc->root = v;
            return 0;
        case '(': /* MARK */
            if (grow(P, (void **)&P->marks, &P->mcap, P->mn + 1, sizeof *P->marks) < 0) return -1;
            P->marks[P->mn++] = P->sn;
            break;
        case '0': /* POP */
            if (P->sn > fence(P)) P->sn--;
            else if (P->mn) P->mn--;
            else return perr(P, "stack underflow");
            break;
        case '1': /* POP_MARK */
            if (pop_mark(P, &start) < 0) return -1;
            P->sn = start;
            break;
        case '2': /* DUP */
            if (!(v = top(P)) || push(P, v) < 0) return -1;
            break;
        case 'N': if (push(P, new_node(P, PK_NONE)) < 0) return -1; break;
        case 0x88: case 0x89: /* NEWTRUE / NEWFALSE */
            if (!(v = new_node(P, PK_BOOL))) return -1;
            v->b = P->op == 0x88;
            if (push(P, v) < 0) return -1;
            break;
        case 'I': /* INT: decimal line; "00" / "01" are False / True */
            if (rd_line(P, &s, &sl) < 0) return -1;
            {
                /* Python reads a two-character 0 or 1 ("00", "01", also "-0", "+1") as a bool */
                int two = sl == 2 && (s[1] == '0' || s[1] == '1') && (s[0] == '0' || s[0] == '-' || s[0] == '+');
                size_t d0 = (sl && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
                if (!two && sl > d0 + 1 && s[d0] == '0')
                    return perr(P, "unsupported integer literal \"%.*s\"", (int)(sl > 40 ? 40 : sl), s);
                if (two) {
                    if (!(v = new_node(P, PK_BOOL))) return -1;
                    v->b = s[1] == '1' && s[0] != '-';
                    if (s[0] == '-' && s[1] == '1') { v->type = PK_INT; v->i = -1; }
                } else {
                    if (parse_dec(P, s, sl, 0, &x) < 0) return -1;
                    v = make_int(P, x);
                }
            }
            if (push(P, v) < 0) return -1;
            break;
        case 'L': /* LONG: decimal line, optional 'L' suffix (Python 2) */
            if (rd_line(P, &s, &sl) < 0 || parse_dec(P, s, sl, 1, &x) < 0 || push(P, make_int(P, x)) < 0) return -1;
            break;
        case 'J': /* BININT */
            if (rd_count(P, 4, &n) < 0) return -1;
            if (push(P, make_int(P, (int64_t)(int32_t)(uint32_t)n)) < 0) return -1;
            break;
        case 'K': case 'M': /* BININT1 / BININT2 */
            if (rd_count(P, P->op == 'K' ? 1 : 2, &n) < 0 || push(P, make_int(P, (int64_t)n)) < 0) return -1;
            break;
        case 0x8a: case 0x8b: /* LONG1 / LONG4 */
            if (rd_count(P, P->op == 0x8a ? 1 : 4, &n) < 0) return -1;
            if (P->op == 0x8b && (n & 0x80000000u)) return perr(P, "negative byte count");
            if (need(P, n) < 0) return -1;
            if (parse_long_bytes(P, P->p + P->pos, n, &x) < 0) return -1;
            P->pos += (size_t)n;
            if (push(P, make_int(P, x)) < 0) return -1;
            break;
        case 'F':
            if (rd_line(P, &s, &sl) < 0 || push(P, parse_float_line(P, s, sl)) < 0) return -1;
            break;
        case 'G': { /* BINFLOAT: big-endian IEEE double */
            if (need(P, 8) < 0) return -1;
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = (bits << 8) | P->p[P->pos + i];
            P->pos += 8;
            if (!(v = new_node(P, PK_FLOAT))) return -1;
            memcpy(&v->f, &bits, sizeof bits);
            if (push(P, v) < 0) return -1;
            break;
        }
        case 'S':
            if (rd_line(P, &s, &sl) < 0 || push(P, parse_string_line(P, s, sl)) < 0) return -1;
            break;
        case 'T': /* BINSTRING: signed 4-byte length */
            if (rd_count(P, 4, &n) < 0) return -1;
            if (n & 0x80000000u) return perr(P, "negative byte count");
            if (push(P, rd_latin1(P, n)) < 0) return -1;
            break;
        case 'U':
            if (rd_count(P, 1, &n) < 0 || push(P, rd_latin1(P, n)) < 0) return -1;
            break;
        case 'V':
            if (rd_line(P, &s, &sl) < 0 || push(P, parse_unicode_line(P, s, sl)) < 0) return -1;
            break;
        case 0x8c: case 'X': case 0x8d: /* SHORT_BINUNICODE / BINUNICODE / BINUNICODE8 */
            if (rd_count(P, P->op == 0x8c ? 1 : P->op == 'X' ? 4 : 8, &n) < 0 || push(P, rd_utf8(P, n)) < 0) return -1;
            break;
        case 'C': case 'B': case 0x8e: case 0x96: /* SHORT_BINBYTES / BINBYTES / BINBYTES8 / BYTEARRAY8 */
            if (rd_count(P, P->op == 'C' ? 1 : P->op == 'B' ? 4 : 8, &n) < 0 || push(P, rd_bytes(P, n)) < 0) return -1;
            break;
        case ']': if (push(P, make_seq(P, PK_LIST, NULL, 0)) < 0) return -1; break;
        case ')': if (push(P, make_seq(P, PK_TUPLE, NULL, 0)) < 0) return -1; break;
        case '}': if (push(P, new_node(P, PK_DICT)) < 0) return -1; break;
        case 'l': case 't': /* LIST / TUPLE from the items above the mark */
            if (pop_mark(P, &start) < 0) return -1;
            /* NULL, not P->stack + 0, when nothing is above the mark: "(l" on a stack never grown has no array */
            v = make_seq(P, P->op == 'l' ? PK_LIST : PK_TUPLE, P->sn > start ? P->stack + start : NULL, P->sn - start);
            P->sn = start;
            if (push(P, v) < 0) return -1;
            break;
        case 0x85: case 0x86: case 0x87: { /* TUPLE1/2/3 */
            size_t m = (size_t)(P->op - 0x84);
            if (P->sn < fence(P) + m) return perr(P, "stack underflow");
            v = make_seq(P, PK_TUPLE, P->stack + P->sn - m, m);
            P->sn -= m;
            if (push(P, v) < 0) return -1;
            break;
        }
        case 'd': /* DICT from key, value pairs above the mark */
            if (pop_mark(P, &start) < 0) return -1;
            if ((P->sn - start) % 2) return perr(P, "odd number of items for DICT");
            if (!(v = new_node(P, PK_DICT))) return -1;
            for (size_t i = start; i < P->sn; i += 2)
                if (dict_set(P, v, P->stack[i], P->stack[i + 1]) < 0) return -1;
            P->sn = start;
            if (push(P, v) < 0) return -1;
            break;
        case 'a': /* APPEND */
            if (!(v = pop(P)) || !(c = top(P)) || need_type(P, c, PK_LIST) < 0 || list_add(P, c, v) < 0) return -1;
            break;
        case 'e': /* APPENDS */
            if (pop_mark(P, &start) < 0) return -1;
            if (start <= fence(P)) return perr(P, "stack underflow");
            c = P->stack[start - 1];
            if (need_type(P, c, PK_LIST) < 0) return -1;
            for (size_t i = start; i < P->sn; i++)
                if (list_add(P, c, P->stack[i]) < 0) return -1;
            P->sn = start;
            break;
        case 's': /* SETITEM */
            if (!(v = pop(P)) || !(k = pop(P)) || !(c = top(P)) || need_type(P, c, PK_DICT) < 0 || dict_set(P, c, k, v) < 0)
                return -1;
            break;
        case 'u': /* SETITEMS */
            if (pop_mark(P, &start) < 0) return -1;
            if (start <= fence(P)) return perr(P, "stack underflow");
            c = P->stack[start - 1];
            if (need_type(P, c, PK_DICT) < 0) return -1;
            if ((P->sn - start) % 2) return perr(P, "odd number of items for SETITEMS");
            for (size_t i = start; i < P->sn; i += 2)
                if (dict_set(P, c, P->stack[i], P->stack[i + 1]) < 0) return -1;
            P->sn = start;
            break;
        case 'p': case 'g': /* PUT / GET: decimal line */
            if (rd_line(P, &s, &sl) < 0 || parse_dec(P, s, sl, 0, &x) < 0) return -1;
            if (x < 0) return perr(P, "negative memo index");
            if (P->op == 'p') { if (memo_put(P, (uint64_t)x, top(P)) < 0) return -1; }
            else if (push(P, memo_get(P, (uint64_t)x)) < 0) return -1;
            break;
        case 'q': case 'r': /* BINPUT / LONG_BINPUT */
            if (rd_count(P, P->op == 'q' ? 1 : 4, &n) < 0 || memo_put(P, n, top(P)) < 0) return -1;
            break;
        case 'h': case 'j': /* BINGET / LONG_BINGET */
            if (rd_count(P, P->op == 'h' ? 1 : 4, &n) < 0 || push(P, memo_get(P, n)) < 0) return -1;
            break;
        case 0x94: /* MEMOIZE */
            if (memo_put(P, P->memo_count, top(P)) < 0) return -1;
            break;
        case 'c': case 0x93: case 'R': case 'b': case 'Q': case 'P':
            if (!P->opt || ((P->op == 'Q' || P->op == 'P') && !P->opt->persistent_ids)) goto refused;
            if (permissive_op(P) < 0) return -1;
            break;
        default:
        refused: {
            const char *on = pk_opcode_name(P->op);
            if (on)
                return ar_errorf("%s: unsupported opcode %s (0x%02x) at offset %zu (only plain data is read; "
                                 "objects, sets and buffers are refused)", P->doc->name, on, P->op, P->op_off);
            return ar_errorf("%s: invalid opcode 0x%02x at offset %zu", P->doc->name, P->op, P->op_off);
        }
        }
    }
}

pk_doc *pk_parse(const void *data, size_t len, const char *name) { return pk_parse_ex(data, len, name, NULL); }

pk_doc *pk_parse_ex(const void *data, size_t len, const char *name, const pk_options *opt) {
    pk_doc *d = calloc(1, sizeof *d);
    if (!d) { ar_errorf("%s: out of memory", name ? name : "pickle"); return NULL; }
    snprintf(d->name, sizeof d->name, "%s", name ? name : "pickle");
    pk_parser P = {0};
    P.p = data;
    P.len = data ? len : 0;
    P.doc = d;
    P.opt = opt;
    int rc = run(&P);
    free(P.stack);
    free(P.marks);
    free(P.memo);
    if (rc < 0) { pk_free(d); return NULL; }
    return d;
}

pk_doc *pk_load_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { ar_errorf("%s: cannot open: %s", path, strerror(errno)); return NULL; }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        ar_errorf("%s: not a regular file", path);
        return NULL;
    }
    if ((uint64_t)st.st_size > PK_MAX_FILE) {
        fclose(f);
        ar_errorf("%s: %lld bytes, more than the %zu-byte limit", path, (long long)st.st_size, PK_MAX_FILE);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) { fclose(f); ar_errorf("%s: out of memory", path); return NULL; }
    size_t got = fread(buf, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != n) { free(buf); ar_errorf("%s: read error", path); return NULL; }
    pk_doc *d = pk_parse(buf, n, path);
    free(buf);
    return d;
}

void pk_free(pk_doc *d) {
    if (!d) return;
    for (pk_value *v = d->all; v;) {
        pk_value *nx = v->next_alloc;
        free(v->s);
        free(v->items);
        free(v->keys);
        free(v->vals);
        free(v->index);
        free(v);
        v = nx;
    }
    free(d);
}

const pk_value *pk_root(const pk_doc *d) { return d ? d->root : NULL; }
int pk_protocol(const pk_doc *d) { return d ? d->proto : 0; }
const char *pk_name(const pk_doc *d) { return d ? d->name : ""; }
size_t pk_count(const pk_doc *d) { return d ? d->n_nodes : 0; }

const pk_value *pk_dict_get(const pk_value *d, const char *key) {
    if (!d || d->type != PK_DICT || !key) return NULL;
    pk_value k = {0};
    k.type = PK_STR;
    k.s = (char *)key;
    k.len = strlen(key);
    long at = dict_find(d, &k);
    return at < 0 ? NULL : d->vals[at];
}

const pk_value *pk_dict_get_int(const pk_value *d, int64_t key) {
    if (!d || d->type != PK_DICT) return NULL;
    pk_value k = {0};
    k.type = PK_INT;
    k.i = key;
    long at = dict_find(d, &k);
    return at < 0 ? NULL : d->vals[at];
}
