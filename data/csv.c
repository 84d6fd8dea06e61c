/* data/csv.c — the strict CSV reader of data/csv.h: one forward pass over the
 * bytes, fields unescaped into one store (each input byte is written at most
 * once, plus one NUL per field, so 2 * len + 2 bytes always suffice), cells
 * kept as [rows][cols] pointers into it. Depends on core/error.h, core/log.h. */
#include "data/csv.h"

#include "core/error.h"
#include "core/log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p, *end;
    size_t line;       /* physical line of p, 1-based */
    char *w;           /* write position in the store */
} cur;

typedef struct {
    const char **v;
    size_t n, cap;
} ptrvec;

static int pv_push(ptrvec *v, const char *s) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        const char **nv = realloc((void *)v->v, nc * sizeof *nv);
        if (!nv) return -1;
        v->v = nv;
        v->cap = nc;
    }
    v->v[v->n++] = s;
    return 0;
}

enum { REC_OK = 1, REC_BLANK = 0, REC_BAD = -1, REC_NOMEM = -2 };

/* Parses one record at c->p into fields (appended to f). On REC_BAD, *why is
 * set and c->p is left at the offending byte. */
static int parse_record(cur *c, ptrvec *f, const char **why) {
    const char *p = c->p, *end = c->end;
    if (*p == '\n') { c->p = p + 1; c->line++; return REC_BLANK; }
    if (*p == '\r' && p + 1 < end && p[1] == '\n') { c->p = p + 2; c->line++; return REC_BLANK; }
    for (;;) {
        char *field = c->w;
        int last = 0;
        if (p < end && *p == '"') {
            p++;
            for (;;) {
                if (p == end) { c->p = p; *why = "quote not closed before the end of the file"; return REC_BAD; }
                char ch = *p;
                if (ch == '"') {
                    if (p + 1 < end && p[1] == '"') { *c->w++ = '"'; p += 2; continue; }
                    p++;
                    break;
                }
                if (ch == '\0') { c->p = p; *why = "NUL byte"; return REC_BAD; }
                if (ch == '\n') c->line++;
                *c->w++ = ch;
                p++;
            }
            if (p == end) last = 1;
            else if (*p == ',') p++;
            else if (*p == '\n') { p++; c->line++; last = 1; }
            else if (*p == '\r' && p + 1 < end && p[1] == '\n') { p += 2; c->line++; last = 1; }
            else { c->p = p; *why = "text after a closing quote"; return REC_BAD; }
        } else {
            for (;;) {
                if (p == end) { last = 1; break; }
                char ch = *p;
                if (ch == ',') { p++; break; }
                if (ch == '\n') { p++; c->line++; last = 1; break; }
                if (ch == '\r') {
                    if (p + 1 < end && p[1] == '\n') { p += 2; c->line++; last = 1; break; }
                    c->p = p; *why = "CR not followed by LF"; return REC_BAD;
                }
                if (ch == '"') { c->p = p; *why = "'\"' inside an unquoted field"; return REC_BAD; }
                if (ch == '\0') { c->p = p; *why = "NUL byte"; return REC_BAD; }
                *c->w++ = ch;
                p++;
            }
        }
        *c->w++ = '\0';
        if (pv_push(f, field) < 0) return REC_NOMEM;
        if (last) break;
        /* a ',' just consumed: another field follows, even at the end */
    }
    c->p = p;
    return REC_OK;
}

void ar_csv_free(ar_csv *c) {
    if (!c) return;
    free((void *)c->header);
    free((void *)c->cells);
    free(c->row_line);
    free(c->skipped_lines);
    free(c->store);
    free(c);
}

ar_csv *ar_csv_parse(const void *buf, size_t len, const char *name) {
    if (!name) name = "<memory>";
    if (len > CSV_MAX_FILE) {
        ar_errorf("csv %s: %zu bytes, more than the limit of %zu", name, len, CSV_MAX_FILE);
        return NULL;
    }
    ar_csv *c = calloc(1, sizeof *c);
    if (!c) { ar_errorf("csv %s: out of memory", name); return NULL; }
    snprintf(c->name, sizeof c->name, "%s", name);
    c->store = malloc(2 * len + 2);
    ptrvec f = {0}, cells = {0};
    size_t *lines = NULL, n_lines = 0, cap_lines = 0;
    size_t *skipped = NULL, cap_skipped = 0;
    if (!c->store) goto nomem;

    const char *s = buf;
    cur cu = {s, s + len, 1, c->store};
    if (len >= 3 && (uint8_t)s[0] == 0xEF && (uint8_t)s[1] == 0xBB && (uint8_t)s[2] == 0xBF) cu.p += 3;

    /* header: the first non-blank record */
    int have_header = 0;
    while (cu.p < cu.end) {
        const char *why = NULL;
        size_t line = cu.line;
        int r = parse_record(&cu, &f, &why);
        if (r == REC_NOMEM) goto nomem;
        if (r == REC_BLANK) continue;
        if (r == REC_BAD) {
            ar_errorf("csv %s:%zu: malformed header: %s", name, line, why);
            goto fail;
        }
        have_header = 1;
        break;
    }
    if (!have_header) { ar_errorf("csv %s: empty (no header line)", name); goto fail; }
    c->n_cols = f.n;
    c->header = f.v;
    f = (ptrvec){0};
    for (size_t i = 0; i < c->n_cols; i++) {
        if (!c->header[i][0]) { ar_errorf("csv %s: header column %zu has an empty name", name, i + 1); goto fail; }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(c->header[i], c->header[j])) {
                ar_errorf("csv %s: header names column \"%s\" twice (columns %zu and %zu)", name, c->header[i],
                          j + 1, i + 1);
                goto fail;
            }
    }

    size_t warned = 0;
    while (cu.p < cu.end) {
        const char *why = NULL;
        size_t line = cu.line;
        f.n = 0;
        int r = parse_record(&cu, &f, &why);
        if (r == REC_NOMEM) goto nomem;
        if (r == REC_BLANK) continue;
        char whybuf[96];
        if (r == REC_OK && f.n != c->n_cols) {
            snprintf(whybuf, sizeof whybuf, "%zu fields, the header has %zu", f.n, c->n_cols);
            why = whybuf;
            r = REC_BAD;
        }
        if (r == REC_BAD) {
            if (c->n_skipped == cap_skipped) {
                size_t nc = cap_skipped ? cap_skipped * 2 : 16;
                size_t *ns = realloc(skipped, nc * sizeof *ns);
                if (!ns) goto nomem;
                skipped = ns;
                cap_skipped = nc;
            }
            skipped[c->n_skipped++] = line;
            if (warned++ < CSV_MAX_WARNINGS) log_warn("%s:%zu: record skipped: %s", name, line, why);
            /* resume after the next line end (the record's own, when the fault was its field count) */
            if (why == whybuf) continue;
            while (cu.p < cu.end && *cu.p != '\n') cu.p++;
            if (cu.p < cu.end) { cu.p++; cu.line++; }
            continue;
        }
        for (size_t i = 0; i < f.n; i++)
            if (pv_push(&cells, f.v[i]) < 0) goto nomem;
        if (n_lines == cap_lines) {
            size_t nc = cap_lines ? cap_lines * 2 : 64;
            size_t *nl = realloc(lines, nc * sizeof *nl);
            if (!nl) goto nomem;
            lines = nl;
            cap_lines = nc;
        }
        lines[n_lines++] = line;
    }
    if (warned > CSV_MAX_WARNINGS)
        log_warn("%s: %zu records skipped in all (%zu warnings not shown)", name, c->n_skipped,
                 warned - CSV_MAX_WARNINGS);
    free((void *)f.v);
    c->n_rows = n_lines;
    c->cells = cells.v;
    c->row_line = lines;
    c->skipped_lines = skipped;
    return c;

nomem:
    ar_errorf("csv %s: out of memory", name);
fail:
    free((void *)f.v);
    free((void *)cells.v);
    free(lines);
    free(skipped);
    ar_csv_free(c);
    return NULL;
}

ar_csv *ar_csv_read(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) { ar_errorf("csv %s: cannot open", path); return NULL; }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) { fclose(fp); ar_errorf("csv %s: out of memory", path); return NULL; }
    for (;;) {
        if (n == cap) {
            if (cap > CSV_MAX_FILE) {
                free(buf);
                fclose(fp);
                ar_errorf("csv %s: larger than the limit of %zu bytes", path, CSV_MAX_FILE);
                return NULL;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); fclose(fp); ar_errorf("csv %s: out of memory", path); return NULL; }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) { free(buf); ar_errorf("csv %s: read error", path); return NULL; }
    ar_csv *c = ar_csv_parse(buf, n, path);
    free(buf);
    return c;
}

int ar_csv_find(const ar_csv *c, const char *name) {
    for (size_t i = 0; i < c->n_cols; i++)
        if (!strcmp(c->header[i], name)) return (int)i;
    return -1;
}

int ar_csv_col(const ar_csv *c, const char *name) {
    int i = ar_csv_find(c, name);
    if (i >= 0) return i;
    char cols[512];
    size_t o = 0;
    cols[0] = '\0';
    for (size_t j = 0; j < c->n_cols && o + 1 < sizeof cols; j++) {
        int k = snprintf(cols + o, sizeof cols - o, "%s%s", j ? ", " : "", c->header[j]);
        if (k < 0) break;
        o += (size_t)k;
    }
    return ar_errorf("csv %s: no column \"%s\" (columns: %s)", c->name, name, cols);
}

const char *ar_csv_get(const ar_csv *c, size_t row, int col) {
    return c->cells[row * c->n_cols + (size_t)col];
}
