/* core/config.c — schema-checked config files and overrides (see config.h).
 *
 * Loading is two passes over the text: the first parses and checks every
 * line (syntax, keys, types, duplicates) without touching the config, the
 * second stores the values. So a file with an error changes nothing.
 * The parser never copies a line into a fixed buffer: it works on
 * (pointer, length) views of the input and checks every length first.
 */
#include "core/config.h"

#include "core/error.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CFG_MAX_KEY 255        /* longest "section.key" */
#define CFG_MAX_FILE (64u << 20)
#define SUGGEST_MAX 128        /* names longer than this get no suggestion */

typedef struct {
    char  *text;    /* the value as text (NUL-terminated, owned) */
    char  *origin;  /* "file:line" / "command line", owned; NULL = default */
    long   i;
    double f;
    int    b;
} cfg_entry;

struct ar_config {
    const cfg_key *schema;
    int            n;
    cfg_entry     *e;
};

static const char *type_name(cfg_type t) {
    switch (t) {
    case CFG_INT: return "int";
    case CFG_FLOAT: return "float";
    case CFG_BOOL: return "bool";
    case CFG_STRING: return "string";
    }
    return "?";
}

/* ------------------------------------------------------------------------ */
/* Small string helpers on (pointer, length) views                          */
/* ------------------------------------------------------------------------ */
static int is_ws(char ch) { return ch == ' ' || ch == '\t'; }

static void trim(const char **s, size_t *n) {
    while (*n && is_ws(**s)) { (*s)++; (*n)--; }
    while (*n && is_ws((*s)[*n - 1])) (*n)--;
}

static int is_name_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
}

/* Letters, digits, '_', '-', and '.' between non-empty parts. */
static int valid_name(const char *s, size_t n) {
    if (n == 0 || n > CFG_MAX_KEY || s[0] == '.' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_name_char(s[i])) return 0;
        if (s[i] == '.' && s[i + 1] == '.') return 0;
    }
    return 1;
}

/* A printable, bounded rendering of untrusted text for messages:
 * non-printable bytes as \xNN, at most ~60 source bytes, "..." if cut. */
static const char *snippet(char *out, size_t outsz, const char *s, size_t n) {
    size_t o = 0, i = 0;
    const size_t limit = 60;
    for (; i < n && i < limit && o + 5 < outsz; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f) out[o++] = (char)ch;
        else o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", ch);
    }
    if (i < n && o + 4 < outsz) { memcpy(out + o, "...", 3); o += 3; }
    out[o] = '\0';
    return out;
}

/* "origin:line: ", "origin: " or "" */
static const char *loc(char *buf, size_t sz, const char *origin, int line) {
    if (origin && *origin && line > 0) snprintf(buf, sz, "%s:%d: ", origin, line);
    else if (origin && *origin) snprintf(buf, sz, "%s: ", origin);
    else buf[0] = '\0';
    return buf;
}

/* Levenshtein distance, both strings at most SUGGEST_MAX bytes. */
static int edit_distance(const char *a, size_t na, const char *b, size_t nb) {
    int row[SUGGEST_MAX + 1];
    for (size_t j = 0; j <= nb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= na; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= nb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}

static int suggest_ok(int dist, size_t len) {
    int limit = (int)(len / 3);
    if (limit < 2) limit = 2;
    return dist <= limit;
}

/* The schema key nearest to name (a full "section.key"), or NULL. A key with
 * the right name in another section counts as distance 1 + name distance. */
static const char *suggest_key(const ar_config *c, const char *name, size_t n) {
    if (n > SUGGEST_MAX) return NULL;
    const char *dot = memchr(name, '.', n);
    const char *qname = dot ? dot + 1 : name;
    size_t qn = dot ? n - (size_t)(dot + 1 - name) : n;
    size_t qsec = dot ? (size_t)(dot - name) : 0;
    const char *best = NULL;
    int bestd = INT_MAX;
    for (int k = 0; k < c->n; k++) {
        const char *key = c->schema[k].key;
        size_t kn = strlen(key);
        if (kn > SUGGEST_MAX) continue;
        int d = edit_distance(name, n, key, kn);
        const char *kdot = strchr(key, '.');
        if (kdot) {
            size_t ksec = (size_t)(kdot - key);
            int same_sec = dot && ksec == qsec && memcmp(key, name, ksec) == 0;
            if (!same_sec) {
                int d2 = 1 + edit_distance(qname, qn, kdot + 1, strlen(kdot + 1));
                if (d2 < d) d = d2;
            }
        }
        if (d < bestd) { bestd = d; best = key; }
    }
    return best && suggest_ok(bestd, qn < n ? qn : n) ? best : NULL;
}

/* 1 if some key starts with "sec." */
static int section_known(const ar_config *c, const char *sec, size_t n) {
    for (int k = 0; k < c->n; k++) {
        const char *key = c->schema[k].key;
        if (strncmp(key, sec, n) == 0 && key[n] == '.') return 1;
    }
    return 0;
}

/* Nearest section (any dot-prefix of a schema key); copies it into out. */
static int suggest_section(const ar_config *c, const char *sec, size_t n, char *out, size_t outsz) {
    if (n > SUGGEST_MAX) return 0;
    int bestd = INT_MAX;
    size_t bestlen = 0;
    const char *best = NULL;
    for (int k = 0; k < c->n; k++) {
        const char *key = c->schema[k].key;
        for (const char *p = strchr(key, '.'); p; p = strchr(p + 1, '.')) {
            size_t len = (size_t)(p - key);
            if (len > SUGGEST_MAX) break;
            int d = edit_distance(sec, n, key, len);
            if (d < bestd) { bestd = d; best = key; bestlen = len; }
        }
    }
    if (!best || !suggest_ok(bestd, n) || bestlen + 1 > outsz) return 0;
    memcpy(out, best, bestlen);
    out[bestlen] = '\0';
    return 1;
}

static int find_key_n(const ar_config *c, const char *name, size_t n) {
    for (int k = 0; k < c->n; k++) {
        const char *key = c->schema[k].key;
        if (strncmp(key, name, n) == 0 && key[n] == '\0') return k;
    }
    return -1;
}

static int unknown_key_error(const ar_config *c, const char *where, const char *name, size_t n) {
    char sn[320];
    const char *s = suggest_key(c, name, n);
    snippet(sn, sizeof sn, name, n);
    if (s) return ar_errorf("%sunknown key '%s' (did you mean '%s'?)", where, sn, s);
    return ar_errorf("%sunknown key '%s' ('anyref keys' lists the valid keys)", where, sn);
}

/* ------------------------------------------------------------------------ */
/* Typed values                                                             */
/* ------------------------------------------------------------------------ */
static int parse_bool_text(const char *s, int *out) {
    static const char *const t[] = {"true", "1", "yes", "on"};
    static const char *const f[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, t[i]) == 0) { *out = 1; return 0; }
        if (strcasecmp(s, f[i]) == 0) { *out = 0; return 0; }
    }
    return -1;
}

/* Parses text as type t into *e (only i/f/b). On failure writes what was
 * expected into why and returns -1. */
static int parse_typed(cfg_type t, const char *s, cfg_entry *e, char *why, size_t whysz) {
    char *end;
    switch (t) {
    case CFG_INT:
        if (!*s || isspace((unsigned char)*s)) break;
        errno = 0;
        e->i = strtol(s, &end, 10);
        if (end == s || *end) break;
        if (errno == ERANGE) {
            snprintf(why, whysz, "expected an integer between %ld and %ld", LONG_MIN, LONG_MAX);
            return -1;
        }
        return 0;
    case CFG_FLOAT:
        if (!*s || isspace((unsigned char)*s)) break;
        errno = 0;
        e->f = strtod(s, &end);
        if (end == s || *end) break;
        if (!isfinite(e->f)) {
            snprintf(why, whysz, "expected a finite floating-point number");
            return -1;
        }
        return 0;
    case CFG_BOOL:
        if (parse_bool_text(s, &e->b) == 0) return 0;
        snprintf(why, whysz, "expected a boolean (true/false, yes/no, on/off, 1/0)");
        return -1;
    case CFG_STRING:
        return 0;
    }
    snprintf(why, whysz, t == CFG_INT ? "expected an integer" : "expected a floating-point number");
    return -1;
}

static int type_error(const char *where, const char *key, cfg_type t, const char *val) {
    char why[160], sn[320];
    cfg_entry tmp;
    parse_typed(t, val, &tmp, why, sizeof why);
    return ar_errorf("%sinvalid value '%s' for '%s': %s", where,
                     snippet(sn, sizeof sn, val, strlen(val)), key, why);
}

/* Stores an already validated value. -1 only on OOM. */
static int store(ar_config *c, int k, const char *val, const char *origin, int line) {
    cfg_entry e = {0};
    char why[160];
    if (parse_typed(c->schema[k].type, val, &e, why, sizeof why) < 0)
        return ar_errorf("internal: unvalidated value for '%s'", c->schema[k].key);
    e.text = strdup(val);
    if (origin) {
        size_t olen = strlen(origin) + 16;
        e.origin = malloc(olen);
        if (e.origin) {
            if (line > 0) snprintf(e.origin, olen, "%s:%d", origin, line);
            else snprintf(e.origin, olen, "%s", origin);
        }
    }
    if (!e.text || (origin && !e.origin)) {
        free(e.text);
        free(e.origin);
        return ar_errorf("out of memory storing config key '%s'", c->schema[k].key);
    }
    free(c->e[k].text);
    free(c->e[k].origin);
    c->e[k] = e;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Values as written: quoted or bare                                        */
/* ------------------------------------------------------------------------ */
/* Parses the text after '=' (v[n]) into a malloc'd string *out.
 * comments: '#'/';' starting the value or after whitespace ends a bare value,
 * and may follow a closing quote. Returns 0, or -1 with the problem in why. */
static int parse_value(const char *v, size_t n, int comments, char **out, char *why, size_t whysz) {
    *out = NULL;
    trim(&v, &n);
    if (n && v[0] == '"') {
        char *buf = malloc(n);        /* the unescaped content is shorter than n */
        if (!buf) { snprintf(why, whysz, "out of memory"); return -1; }
        size_t o = 0, i = 1;
        int closed = 0;
        while (i < n) {
            char ch = v[i++];
            if (ch == '"') { closed = 1; break; }
            if (ch == '\\') {
                if (i >= n) break;
                char esc = v[i++];
                switch (esc) {
                case '"': ch = '"'; break;
                case '\\': ch = '\\'; break;
                case 'n': ch = '\n'; break;
                case 't': ch = '\t'; break;
                case 'r': ch = '\r'; break;
                default: {
                    char sn[16];
                    snprintf(why, whysz, "unknown escape '\\%s' in quoted string (use \\\" \\\\ \\n \\t \\r)",
                             snippet(sn, sizeof sn, &esc, 1));
                    free(buf);
                    return -1;
                }
                }
            }
            buf[o++] = ch;
        }
        if (!closed) {
            snprintf(why, whysz, "unterminated quoted string (missing closing '\"')");
            free(buf);
            return -1;
        }
        const char *rest = v + i;
        size_t rn = n - i;
        trim(&rest, &rn);
        if (rn && !(comments && (rest[0] == '#' || rest[0] == ';'))) {
            char sn[320];
            snprintf(why, whysz, "unexpected text after the closing quote: '%s'",
                     snippet(sn, sizeof sn, rest, rn));
            free(buf);
            return -1;
        }
        buf[o] = '\0';
        *out = buf;
        return 0;
    }
    if (comments) {
        for (size_t i = 0; i < n; i++)
            if ((v[i] == '#' || v[i] == ';') && (i == 0 || is_ws(v[i - 1]))) { n = i; break; }
        trim(&v, &n);
    }
    char *buf = malloc(n + 1);
    if (!buf) { snprintf(why, whysz, "out of memory"); return -1; }
    memcpy(buf, v, n);
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */
typedef struct {
    ar_config  *c;
    const char *origin;
    int         apply;     /* pass 2: store values */
    int        *seen;      /* [n] line where each key was set in this text, 0 = not */
    const char *sec;       /* current section view into the text, NULL before any */
    size_t      secn;
} parse_ctx;

static int parse_line(parse_ctx *p, const char *s, size_t n, int line) {
    char where[300], sn[320];
    loc(where, sizeof where, p->origin, line);
    const char *t = s;
    size_t tn = n;
    trim(&t, &tn);
    if (tn == 0 || t[0] == '#' || t[0] == ';') return 0;

    if (t[0] == '[') {
        const char *close = memchr(t, ']', tn);
        if (!close) return ar_errorf("%smissing ']' in section header '%s'", where, snippet(sn, sizeof sn, t, tn));
        const char *name = t + 1;
        size_t nn = (size_t)(close - name);
        trim(&name, &nn);
        const char *rest = close + 1;
        size_t rn = tn - (size_t)(rest - t);
        trim(&rest, &rn);
        if (rn && rest[0] != '#' && rest[0] != ';')
            return ar_errorf("%sunexpected text after section header: '%s'", where, snippet(sn, sizeof sn, rest, rn));
        if (!valid_name(name, nn))
            return ar_errorf("%sinvalid section name '[%s]' (use letters, digits, '_', '-', '.')", where,
                             snippet(sn, sizeof sn, name, nn));
        if (!section_known(p->c, name, nn)) {
            char sug[SUGGEST_MAX + 1];
            snippet(sn, sizeof sn, name, nn);
            if (suggest_section(p->c, name, nn, sug, sizeof sug))
                return ar_errorf("%sunknown section '[%s]' (did you mean '[%s]'?)", where, sn, sug);
            return ar_errorf("%sunknown section '[%s]'", where, sn);
        }
        p->sec = name;
        p->secn = nn;
        return 0;
    }

    const char *eq = memchr(t, '=', tn);
    if (!eq)
        return ar_errorf("%sexpected '[section]', 'key = value' or a comment, got '%s'", where,
                         snippet(sn, sizeof sn, t, tn));
    const char *key = t;
    size_t kn = (size_t)(eq - t);
    trim(&key, &kn);
    if (kn == 0) return ar_errorf("%smissing key before '='", where);
    if (!valid_name(key, kn))
        return ar_errorf("%sinvalid key '%s' (use letters, digits, '_', '-', '.')", where,
                         snippet(sn, sizeof sn, key, kn));
    char full[2 * CFG_MAX_KEY + 2];
    size_t fn = 0;
    if (p->sec) {
        memcpy(full, p->sec, p->secn);
        full[p->secn] = '.';
        fn = p->secn + 1;
    }
    memcpy(full + fn, key, kn);
    fn += kn;
    full[fn] = '\0';
    int k = find_key_n(p->c, full, fn);
    if (k < 0) return unknown_key_error(p->c, where, full, fn);

    char why[400];
    char *val;
    if (parse_value(eq + 1, tn - (size_t)(eq + 1 - t), 1, &val, why, sizeof why) < 0)
        return ar_errorf("%s'%s': %s", where, full, why);
    int rc = 0;
    if (!p->apply) {
        if (p->seen[k])
            rc = ar_errorf("%sduplicate key '%s' (already set on line %d)", where, full, p->seen[k]);
        else {
            cfg_entry tmp;
            p->seen[k] = line;
            if (parse_typed(p->c->schema[k].type, val, &tmp, why, sizeof why) < 0)
                rc = type_error(where, full, p->c->schema[k].type, val);
        }
    } else {
        rc = store(p->c, k, val, p->origin, line);
    }
    free(val);
    return rc;
}

static int parse_text(parse_ctx *p, const char *text, size_t len) {
    size_t pos = 0;
    int line = 0;
    p->sec = NULL;
    p->secn = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) pos = 3;   /* UTF-8 BOM */
    while (pos < len) {
        char where[300];
        if (line == INT_MAX) return ar_errorf("%stoo many lines", loc(where, sizeof where, p->origin, 0));
        line++;
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n > CFG_MAX_LINE)
            return ar_errorf("%sline is too long (%zu bytes, the limit is %d)",
                             loc(where, sizeof where, p->origin, line), n, CFG_MAX_LINE);
        if (n && s[n - 1] == '\r') n--;
        if (memchr(s, '\0', n))
            return ar_errorf("%sline contains a NUL byte (binary file?)", loc(where, sizeof where, p->origin, line));
        if (parse_line(p, s, n, line) < 0) return -1;
    }
    return 0;
}

int cfg_load_string(ar_config *c, const char *text, size_t len, const char *origin) {
    if (!c || (!text && len)) return ar_errorf("cfg_load_string: NULL argument");
    if (!origin) origin = "<string>";
    parse_ctx p = {c, origin, 0, NULL, NULL, 0};
    p.seen = calloc((size_t)(c->n > 0 ? c->n : 1), sizeof(int));
    if (!p.seen) return ar_errorf("%s: out of memory", origin);
    int rc = parse_text(&p, text, len);
    free(p.seen);
    p.seen = NULL;
    if (rc < 0) return -1;
    p.apply = 1;
    return parse_text(&p, text, len);
}

int cfg_load_file(ar_config *c, const char *path) {
    if (!c || !path) return ar_errorf("cfg_load_file: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return ar_errorf("cannot open config file '%s': %s", path, strerror(errno));
    size_t cap = 0, len = 0;
    char *buf = NULL;
    for (;;) {
        if (len == cap) {
            if (cap >= CFG_MAX_FILE) {
                free(buf);
                fclose(f);
                return ar_errorf("config file '%s' is too large (over %u MiB)", path, CFG_MAX_FILE >> 20);
            }
            size_t ncap = cap ? cap * 2 : 4096;
            char *nb = realloc(buf, ncap);
            if (!nb) { free(buf); fclose(f); return ar_errorf("reading '%s': out of memory", path); }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); return ar_errorf("cannot read config file '%s'", path); }
    int rc = cfg_load_string(c, buf, len, path);
    free(buf);
    return rc;
}

int cfg_set(ar_config *c, const char *key, const char *value, const char *origin, int line) {
    char where[300];
    loc(where, sizeof where, origin, line);
    if (!c || !key || !value) return ar_errorf("%scfg_set: NULL argument", where);
    size_t kn = strlen(key);
    int k = find_key_n(c, key, kn);
    if (k < 0) return unknown_key_error(c, where, key, kn);
    cfg_entry tmp;
    char why[160];
    if (parse_typed(c->schema[k].type, value, &tmp, why, sizeof why) < 0)
        return type_error(where, key, c->schema[k].type, value);
    return store(c, k, value, origin, line);
}

int cfg_override(ar_config *c, const char *assignment) {
    char sn[320];
    if (!c || !assignment) return ar_errorf("cfg_override: NULL argument");
    size_t an = strlen(assignment);
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return ar_errorf("command line: expected section.key=value, got '%s'", snippet(sn, sizeof sn, assignment, an));
    const char *key = assignment;
    size_t kn = (size_t)(eq - assignment);
    trim(&key, &kn);
    if (!valid_name(key, kn))
        return ar_errorf("command line: invalid key '%s' (expected section.key=value)",
                         snippet(sn, sizeof sn, key, kn));
    char full[CFG_MAX_KEY + 1];
    memcpy(full, key, kn);
    full[kn] = '\0';
    char why[400], *val;
    if (parse_value(eq + 1, an - (size_t)(eq + 1 - assignment), 0, &val, why, sizeof why) < 0)
        return ar_errorf("command line: '%s': %s", full, why);
    int rc = cfg_set(c, full, val, "command line", 0);
    free(val);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Construction and getters                                                 */
/* ------------------------------------------------------------------------ */
ar_config *cfg_new(const cfg_key *schema, int nkeys) {
    if (nkeys < 0 || (nkeys > 0 && !schema)) {
        ar_errorf("config schema: bad key table (%d keys)", nkeys);
        return NULL;
    }
    for (int k = 0; k < nkeys; k++) {
        const char *key = schema[k].key;
        if (!key || !valid_name(key, strlen(key)) || !strchr(key, '.')) {
            ar_errorf("config schema: entry %d: key '%s' is not of the form section.key", k, key ? key : "(null)");
            return NULL;
        }
        if ((unsigned)schema[k].type > CFG_STRING) {
            ar_errorf("config schema: key '%s': bad type %d", key, (int)schema[k].type);
            return NULL;
        }
        for (int j = 0; j < k; j++)
            if (strcmp(schema[j].key, key) == 0) {
                ar_errorf("config schema: key '%s' is declared twice", key);
                return NULL;
            }
    }
    ar_config *c = calloc(1, sizeof *c);
    if (!c || !(c->e = calloc((size_t)(nkeys > 0 ? nkeys : 1), sizeof *c->e))) {
        free(c);
        ar_errorf("config: out of memory");
        return NULL;
    }
    c->schema = schema;
    c->n = nkeys;
    for (int k = 0; k < nkeys; k++) {
        const char *dv = schema[k].default_value;
        if (!dv && schema[k].type == CFG_STRING) dv = "";
        cfg_entry tmp;
        char why[160];
        if (!dv || parse_typed(schema[k].type, dv, &tmp, why, sizeof why) < 0) {
            if (!dv) ar_errorf("config schema: key '%s' (%s) has no default", schema[k].key, type_name(schema[k].type));
            else type_error("config schema default: ", schema[k].key, schema[k].type, dv);
            cfg_free(c);
            return NULL;
        }
        if (store(c, k, dv, NULL, 0) < 0) { cfg_free(c); return NULL; }
    }
    return c;
}

void cfg_free(ar_config *c) {
    if (!c) return;
    for (int k = 0; k < c->n; k++) {
        free(c->e[k].text);
        free(c->e[k].origin);
    }
    free(c->e);
    free(c);
}

/* Index of key, or -1 after a programming-error message on stderr. */
static int getter(const ar_config *c, const char *key, int want, const char *fn) {
    if (!c || !key) {
        fprintf(stderr, "anyref: programming error: %s(%s) on a NULL config or key\n", fn, key ? key : "NULL");
        return -1;
    }
    int k = find_key_n(c, key, strlen(key));
    if (k < 0) {
        const char *s = suggest_key(c, key, strlen(key));
        fprintf(stderr, "anyref: programming error: %s: '%s' is not a config key%s%s%s\n", fn, key,
                s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
        return -1;
    }
    cfg_type t = c->schema[k].type;
    if (want >= 0 && (cfg_type)want != t && !(want == CFG_FLOAT && t == CFG_INT)) {
        fprintf(stderr, "anyref: programming error: %s: '%s' has type %s\n", fn, key, type_name(t));
        return -1;
    }
    return k;
}

long cfg_int(const ar_config *c, const char *key) {
    int k = getter(c, key, CFG_INT, "cfg_int");
    return k < 0 ? 0 : c->e[k].i;
}

double cfg_float(const ar_config *c, const char *key) {
    int k = getter(c, key, CFG_FLOAT, "cfg_float");
    if (k < 0) return 0.0;
    return c->schema[k].type == CFG_INT ? (double)c->e[k].i : c->e[k].f;
}

int cfg_bool(const ar_config *c, const char *key) {
    int k = getter(c, key, CFG_BOOL, "cfg_bool");
    return k < 0 ? 0 : c->e[k].b;
}

const char *cfg_str(const ar_config *c, const char *key) {
    int k = getter(c, key, -1, "cfg_str");
    return k < 0 ? NULL : c->e[k].text;
}

const char *cfg_origin(const ar_config *c, const char *key) {
    int k = getter(c, key, -1, "cfg_origin");
    if (k < 0) return NULL;
    return c->e[k].origin ? c->e[k].origin : "default";
}

int cfg_has(const ar_config *c, const char *key) {
    return c && key && find_key_n(c, key, strlen(key)) >= 0;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */
static void write_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        switch (*s) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\t': fputs("\\t", f); break;
        case '\r': fputs("\\r", f); break;
        default: fputc(*s, f);
        }
    }
    fputc('"', f);
}

static void write_comment(FILE *f, const char *text) {
    while (*text) {
        const char *nl = strchr(text, '\n');
        size_t n = nl ? (size_t)(nl - text) : strlen(text);
        fprintf(f, "# %.*s\n", (int)n, text);
        text += n + (nl ? 1 : 0);
    }
}

static size_t section_len(const char *key) {
    const char *dot = strchr(key, '.');
    return dot ? (size_t)(dot - key) : 0;
}

/* 1 if the section of key k already appeared before index k */
static int section_seen_before(const cfg_key *schema, int k) {
    size_t sl = section_len(schema[k].key);
    for (int j = 0; j < k; j++)
        if (section_len(schema[j].key) == sl && strncmp(schema[j].key, schema[k].key, sl) == 0) return 1;
    return 0;
}

int cfg_write(const ar_config *c, FILE *f) {
    if (!c || !f) return ar_errorf("cfg_write: NULL argument");
    fputs("# anyref configuration (complete; every key with its value)\n", f);
    for (int k = 0; k < c->n; k++) {
        if (section_seen_before(c->schema, k)) continue;
        size_t sl = section_len(c->schema[k].key);
        fprintf(f, "\n[%.*s]\n", (int)sl, c->schema[k].key);
        for (int j = k; j < c->n; j++) {
            const char *key = c->schema[j].key;
            if (section_len(key) != sl || strncmp(key, c->schema[k].key, sl) != 0) continue;
            if (c->schema[j].help && *c->schema[j].help) write_comment(f, c->schema[j].help);
            fprintf(f, "%s = ", key + sl + 1);
            if (c->schema[j].type == CFG_STRING) write_quoted(f, c->e[j].text);
            else fputs(c->e[j].text, f);
            fputc('\n', f);
        }
    }
    if (fflush(f) != 0 || ferror(f)) return ar_errorf("writing config: %s", strerror(errno));
    return 0;
}

static void print_key_help(const cfg_key *e, int w, FILE *f) {
    const char *dv = e->default_value ? e->default_value : "";
    fprintf(f, "  %-*s  %-6s  default ", w, e->key, type_name(e->type));
    if (e->type == CFG_STRING) write_quoted(f, dv);
    else fputs(dv, f);
    fputc('\n', f);
    for (const char *h = e->help; h && *h;) {
        const char *nl = strchr(h, '\n');
        size_t n = nl ? (size_t)(nl - h) : strlen(h);
        fprintf(f, "      %.*s\n", (int)n, h);
        h += n + (nl ? 1 : 0);
    }
}

void cfg_print_help(const cfg_key *schema, int nkeys, FILE *f) {
    int w = 0;
    for (int k = 0; k < nkeys; k++) {
        int n = (int)strlen(schema[k].key);
        if (n > w) w = n;
    }
    for (int k = 0; k < nkeys; k++) {
        if (section_seen_before(schema, k)) continue;
        size_t sl = section_len(schema[k].key);
        fprintf(f, "%s[%.*s]\n", k ? "\n" : "", (int)sl, schema[k].key);
        for (int j = k; j < nkeys; j++)
            if (section_len(schema[j].key) == sl && strncmp(schema[j].key, schema[k].key, sl) == 0)
                print_key_help(&schema[j], w, f);
    }
}
