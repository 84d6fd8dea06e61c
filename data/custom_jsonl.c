/* data/custom_jsonl.c — the JSON-lines format for users' own referring data
 * (data/custom_jsonl.h): a validating loader with "<file>:<line>: <field>:
 * <problem>" errors, file checks and masks from PNG, polygons or RLE.
 * Depends on core/json.h, core/error.h, core/log.h, data/rle.h, data/image.h,
 * data/wav.h.
 */
#include "data/custom_jsonl.h"

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "data/image.h"
#include "data/wav.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- helpers --------------------------------------------------------------------------------- */

typedef struct { const char *file; int line; } where;

static int fail(const where *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const where *w, const char *fmt, ...) {
    char msg[AR_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ar_errorf("%s:%d: %s", w->file, w->line, msg);
}

static const char *tname(const json_value *v) { return json_type_name(v->type); }

static char *dupn(const char *s, size_t n) {
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n), p[n] = 0;
    return p;
}

/* A non-empty string without NUL bytes. */
static int get_text(const where *w, const char *field, const json_value *v, char **out) {
    if (v->type != JSON_STRING) return fail(w, "%s: expected a string, found %s", field, tname(v));
    if (v->len == 0) return fail(w, "%s: empty string", field);
    if (strlen(v->str) != v->len) return fail(w, "%s: contains a NUL character", field);
    if (!(*out = dupn(v->str, v->len))) return fail(w, "out of memory");
    return 0;
}

/* A path: absolute, or relative to dir. */
static int get_path(const where *w, const char *field, const json_value *v, const char *dir, char **out) {
    char *p;
    if (get_text(w, field, v, &p) < 0) return -1;
    if (p[0] == '/' || !dir || !dir[0]) { *out = p; return 0; }
    size_t ld = strlen(dir), lp = strlen(p);
    char *r = malloc(ld + lp + 2);
    if (!r) { free(p); return fail(w, "out of memory"); }
    memcpy(r, dir, ld), r[ld] = '/', memcpy(r + ld + 1, p, lp + 1);
    free(p);
    *out = r;
    return 0;
}

static int exists(const where *w, const char *field, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return fail(w, "%s: %s: %s", field, path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(w, "%s: %s: not a regular file", field, path);
    return 0;
}

static int finite_number(const json_value *v) { return v->type == JSON_NUMBER && isfinite(v->number); }

/* ---- one line -------------------------------------------------------------------------------- */

static const char *const k_fields[] = {"image", "text", "box", "ref_image", "audio", "template", "expression",
                                       "question", "answer", "mask", "polygon", "rle", "split", "id", "meta"};
#define N_FIELDS (sizeof k_fields / sizeof k_fields[0])

static int parse_polygon(const where *w, const json_value *v, cj_record *r) {
    if (v->type != JSON_ARRAY) return fail(w, "polygon: expected a list of polygons, found %s", tname(v));
    if (v->n == 0) return fail(w, "polygon: empty list");
    if (v->n > UINT32_MAX) return fail(w, "polygon: too many polygons");
    size_t total = 0;
    for (size_t i = 0; i < v->n; i++) {
        const json_value *p = &v->items[i];
        if (p->type != JSON_ARRAY) return fail(w, "polygon[%zu]: expected a list of numbers, found %s", i, tname(p));
        if (p->n < 6) return fail(w, "polygon[%zu]: expected at least 6 numbers (3 points), found %zu", i, p->n);
        if (p->n % 2) return fail(w, "polygon[%zu]: expected an even count of numbers (x, y pairs), found %zu", i, p->n);
        if (p->n > UINT32_MAX) return fail(w, "polygon[%zu]: too many numbers", i);
        for (size_t k = 0; k < p->n; k++)
            if (!finite_number(&p->items[k]))
                return fail(w, "polygon[%zu][%zu]: expected a number, found %s", i, k,
                            p->items[k].type == JSON_NUMBER ? "a non-finite number" : tname(&p->items[k]));
        total += p->n;
    }
    r->poly_len = malloc(v->n * sizeof *r->poly_len);
    r->poly_xy = malloc(total * sizeof *r->poly_xy);
    if (!r->poly_len || !r->poly_xy) return fail(w, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < v->n; i++) {
        const json_value *p = &v->items[i];
        r->poly_len[i] = (uint32_t)p->n;
        for (size_t k = 0; k < p->n; k++) r->poly_xy[o++] = p->items[k].number;
    }
    r->n_poly = (uint32_t)v->n;
    return 0;
}

static int parse_rle(const where *w, const json_value *v, cj_record *r) {
    if (v->type != JSON_OBJECT) return fail(w, "rle: expected an object {\"size\": [h, w], \"counts\": ...}, found %s", tname(v));
    const json_value *size = json_get(v, "size"), *counts = json_get(v, "counts");
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->members[i].key, "size") && strcmp(v->members[i].key, "counts"))
            return fail(w, "rle: unknown field \"%s\" (expected size and counts)", v->members[i].key);
    if (!size) return fail(w, "rle.size: missing");
    if (!counts) return fail(w, "rle.counts: missing");
    if (size->type != JSON_ARRAY || size->n != 2)
        return fail(w, "rle.size: expected [height, width], found %s%s", tname(size), size->type == JSON_ARRAY ? " of another length" : "");
    uint32_t hw[2];
    for (int i = 0; i < 2; i++) {
        const json_value *s = &size->items[i];
        if (s->type != JSON_NUMBER || !s->is_int || s->integer < 1 || s->integer > IMAGE_MAX_SIDE)
            return fail(w, "rle.size[%d]: expected an integer in 1..%d", i, IMAGE_MAX_SIDE);
        hw[i] = (uint32_t)s->integer;
    }
    if (counts->type == JSON_STRING) {
        if (rle_from_string(&r->rle, counts->str, counts->len, hw[0], hw[1]) < 0)
            return fail(w, "rle.counts: %s", ar_error());
    } else if (counts->type == JSON_ARRAY) {
        uint32_t *c = malloc((counts->n ? counts->n : 1) * sizeof *c);
        if (!c) return fail(w, "out of memory");
        for (size_t i = 0; i < counts->n; i++) {
            const json_value *x = &counts->items[i];
            if (x->type != JSON_NUMBER || !x->is_int || x->integer < 0 || x->integer > UINT32_MAX) {
                free(c);
                return fail(w, "rle.counts[%zu]: expected an integer in 0..4294967295", i);
            }
            c[i] = (uint32_t)x->integer;
        }
        int rc = rle_from_counts(&r->rle, c, counts->n, hw[0], hw[1]);
        free(c);
        if (rc < 0) return fail(w, "rle.counts: the counts do not sum to height x width (%u x %u)", hw[0], hw[1]);
    } else {
        return fail(w, "rle.counts: expected a string or a list of integers, found %s", tname(counts));
    }
    return 0;
}

static int check_decodes(const where *w, cj_record *r) {
    ar_image im = {0};
    if (image_load(&im, r->image, IMAGE_RGB) < 0) return fail(w, "image: %s", ar_error());
    image_free(&im);
    if (r->ref == CJ_REF_IMAGE) {
        if (image_load(&im, r->ref_path, IMAGE_RGB) < 0) return fail(w, "ref_image: %s", ar_error());
        image_free(&im);
    }
    if (r->ref == CJ_REF_AUDIO) {
        ar_wav a = {0};
        if (ar_wav_read(r->ref_path, &a) < 0) return fail(w, "audio: %s", ar_error());
        ar_wav_free(&a);
    }
    if (r->mask != CJ_MASK_NONE) {
        rle_mask m = {0};
        if (cj_record_mask(r, &m) < 0) {
            const char *f = r->mask == CJ_MASK_PNG ? "mask" : r->mask == CJ_MASK_POLYGON ? "polygon" : "rle";
            return fail(w, "%s: %s", f, ar_error());
        }
        rle_free(&m);
    }
    return 0;
}

static int parse_object(const where *w, const json_value *o, const char *dir, const cj_options *opt, cj_record *r) {
    if (o->type != JSON_OBJECT) return fail(w, "expected a JSON object, found %s", tname(o));
    const json_value *f[N_FIELDS] = {0};
    for (size_t i = 0; i < o->n; i++) {
        const json_member *m = &o->members[i];
        size_t k = 0;
        while (k < N_FIELDS && (strlen(k_fields[k]) != m->key_len || memcmp(k_fields[k], m->key, m->key_len)))
            k++;
        if (k == N_FIELDS) return fail(w, "unknown field \"%.*s\"", (int)(m->key_len > 64 ? 64 : m->key_len), m->key);
        if (f[k]) return fail(w, "%s: given twice", k_fields[k]);
        f[k] = &m->value;
    }
    enum { IMAGE, TEXT, BOX, REF_IMAGE, AUDIO, TEMPLATE, EXPRESSION, QUESTION, ANSWER, MASK, POLYGON, RLE, SPLIT, ID };
    /* image */
    if (!f[IMAGE]) return fail(w, "image: missing");
    if (get_path(w, "image", f[IMAGE], dir, &r->image) < 0) return -1;
    /* reference */
    int nref = !!f[TEXT] + !!f[BOX] + !!f[REF_IMAGE] + !!f[AUDIO];
    if (nref != 1) {
        char got[80] = "";
        for (int k = TEXT; k <= AUDIO; k++)
            if (f[k]) snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", got[0] ? " and " : "", k_fields[k]);
        return fail(w, "reference: expected exactly one of text, box, ref_image, audio; found %s", nref ? got : "none");
    }
    if (f[TEXT]) {
        r->ref = CJ_REF_TEXT;
        if (get_text(w, "text", f[TEXT], &r->text) < 0) return -1;
    } else if (f[BOX]) {
        const json_value *b = f[BOX];
        r->ref = CJ_REF_BOX;
        if (b->type != JSON_ARRAY) return fail(w, "box: expected [x0, y0, x1, y1], found %s", tname(b));
        if (b->n != 4) return fail(w, "box: expected 4 numbers, found %zu", b->n);
        for (int i = 0; i < 4; i++) {
            if (!finite_number(&b->items[i]))
                return fail(w, "box[%d]: expected a number, found %s", i,
                            b->items[i].type == JSON_NUMBER ? "a non-finite number" : tname(&b->items[i]));
            r->box[i] = b->items[i].number;
        }
        if (!(r->box[0] < r->box[2]) || !(r->box[1] < r->box[3]))
            return fail(w, "box: expected x0 < x1 and y0 < y1, found [%g, %g, %g, %g]", r->box[0], r->box[1], r->box[2],
                        r->box[3]);
    } else {
        int img = f[REF_IMAGE] != NULL;
        r->ref = img ? CJ_REF_IMAGE : CJ_REF_AUDIO;
        if (get_path(w, img ? "ref_image" : "audio", img ? f[REF_IMAGE] : f[AUDIO], dir, &r->ref_path) < 0) return -1;
    }
    /* question / answer */
    if (f[QUESTION] || f[ANSWER]) {
        if (!f[QUESTION]) return fail(w, "question: missing (answer is given)");
        if (!f[ANSWER]) return fail(w, "answer: missing (question is given)");
        if (f[TEMPLATE]) return fail(w, "template: not allowed with question/answer");
        if (f[EXPRESSION]) return fail(w, "expression: not allowed with question/answer");
        r->qa = CJ_LITERAL;
        if (get_text(w, "question", f[QUESTION], &r->question) < 0) return -1;
        if (get_text(w, "answer", f[ANSWER], &r->answer) < 0) return -1;
    } else {
        r->qa = CJ_TEMPLATE_SEG;
        if (f[TEMPLATE]) {
            const json_value *t = f[TEMPLATE];
            if (t->type != JSON_STRING) return fail(w, "template: expected \"seg\" or \"caption\", found %s", tname(t));
            if (strcmp(t->str, "seg") == 0) r->qa = CJ_TEMPLATE_SEG;
            else if (strcmp(t->str, "caption") == 0) r->qa = CJ_TEMPLATE_CAPTION;
            else return fail(w, "template: expected \"seg\" or \"caption\", found \"%.40s\"", t->str);
        }
        if (f[EXPRESSION] && get_text(w, "expression", f[EXPRESSION], &r->expression) < 0) return -1;
        if (r->qa == CJ_TEMPLATE_CAPTION && !r->expression)
            return fail(w, "expression: missing (template \"caption\" needs the caption)");
    }
    /* ground truth */
    int nmask = !!f[MASK] + !!f[POLYGON] + !!f[RLE];
    if (nmask > 1) return fail(w, "ground truth: expected at most one of mask, polygon, rle; found %d", nmask);
    if (f[MASK]) {
        r->mask = CJ_MASK_PNG;
        if (get_path(w, "mask", f[MASK], dir, &r->mask_path) < 0) return -1;
    } else if (f[POLYGON]) {
        r->mask = CJ_MASK_POLYGON;
        if (parse_polygon(w, f[POLYGON], r) < 0) return -1;
    } else if (f[RLE]) {
        r->mask = CJ_MASK_RLE;
        if (parse_rle(w, f[RLE], r) < 0) return -1;
    } else if (r->qa == CJ_TEMPLATE_SEG) {
        return fail(w, "ground truth: missing (template \"seg\" needs one of mask, polygon, rle)");
    }
    /* split, id */
    if (f[SPLIT]) {
        if (get_text(w, "split", f[SPLIT], &r->split) < 0) return -1;
    } else if (!(r->split = strdup("train"))) {
        return fail(w, "out of memory");
    }
    if (f[ID]) {
        const json_value *v = f[ID];
        if (v->type == JSON_STRING) {
            if (get_text(w, "id", v, &r->id) < 0) return -1;
        } else if (v->type == JSON_NUMBER && v->is_int) {
            char b[32];
            snprintf(b, sizeof b, "%lld", (long long)v->integer);
            if (!(r->id = strdup(b))) return fail(w, "out of memory");
        } else {
            return fail(w, "id: expected a string or an integer, found %s", tname(v));
        }
    } else if (!(r->id = strdup(""))) {
        return fail(w, "out of memory");
    }
    /* files */
    if (opt && (opt->check_files || opt->decode)) {
        if (exists(w, "image", r->image) < 0) return -1;
        if (r->ref_path && exists(w, r->ref == CJ_REF_IMAGE ? "ref_image" : "audio", r->ref_path) < 0) return -1;
        if (r->mask_path && exists(w, "mask", r->mask_path) < 0) return -1;
        if (image_probe_size(r->image, &r->height, &r->width) < 0) return fail(w, "image: %s", ar_error());
        if (r->ref == CJ_REF_BOX && (r->box[0] < 0 || r->box[1] < 0 || r->box[2] > r->width || r->box[3] > r->height))
            return fail(w, "box: [%g, %g, %g, %g] outside the %dx%d image", r->box[0], r->box[1], r->box[2], r->box[3],
                        r->width, r->height);
        if (r->mask == CJ_MASK_RLE && (r->rle.h != (uint32_t)r->height || r->rle.w != (uint32_t)r->width))
            return fail(w, "rle.size: [%u, %u] is not the image's [%d, %d]", r->rle.h, r->rle.w, r->height, r->width);
        if (r->mask == CJ_MASK_PNG) {
            int mh, mw;
            if (image_probe_size(r->mask_path, &mh, &mw) < 0) return fail(w, "mask: %s", ar_error());
            if (mh != r->height || mw != r->width)
                return fail(w, "mask: %s is %dx%d, the image %dx%d (width x height)", r->mask_path, mw, mh, r->width,
                            r->height);
        }
    }
    if (opt && opt->decode && check_decodes(w, r) < 0) return -1;
    return 0;
}

void cj_record_free(cj_record *r) {
    if (!r) return;
    free(r->id), free(r->split), free(r->image), free(r->text), free(r->ref_path);
    free(r->expression), free(r->question), free(r->answer), free(r->mask_path);
    free(r->poly_len), free(r->poly_xy);
    rle_free(&r->rle);
    memset(r, 0, sizeof *r);
}

int cj_parse_line(const char *text, size_t len, const char *file, int line, const char *dir, const cj_options *opt,
                  cj_record *rec) {
    memset(rec, 0, sizeof *rec);
    rec->line = line;
    where w = {file, line};
    if (len > CJ_MAX_LINE) return fail(&w, "line longer than %zu bytes", CJ_MAX_LINE);
    char origin[64];
    snprintf(origin, sizeof origin, "\x01");
    json_doc *d = json_parse(text, len, origin);
    if (!d) {
        /* "\x01: line 1, column C: ..." -> "<file>:<line>: column C: ..." */
        const char *m = ar_error();
        if (strncmp(m, "\x01: line 1, ", 11) == 0) m += 11;
        else if (strncmp(m, "\x01: ", 3) == 0) m += 3;
        char copy[AR_ERROR_MAX];
        snprintf(copy, sizeof copy, "%s", m);
        return fail(&w, "%s", copy);
    }
    int rc = parse_object(&w, json_root(d), dir, opt, rec);
    json_free(d);
    if (rc < 0) {
        char copy[AR_ERROR_MAX];
        snprintf(copy, sizeof copy, "%s", ar_error());
        cj_record_free(rec);
        rec->line = line;
        ar_errorf("%s", copy);
    }
    return rc;
}

/* ---- masks ----------------------------------------------------------------------------------- */

int cj_record_mask(cj_record *r, rle_mask *out) {
    memset(out, 0, sizeof *out);
    if (r->mask == CJ_MASK_NONE) return ar_errorf("%s: the record has no ground-truth mask", r->image);
    if (r->mask == CJ_MASK_RLE) {
        if (r->height && (r->rle.h != (uint32_t)r->height || r->rle.w != (uint32_t)r->width))
            return ar_errorf("rle size %ux%u is not the image's %dx%d", r->rle.h, r->rle.w, r->height, r->width);
        return rle_copy(out, &r->rle);
    }
    if (!r->height && image_probe_size(r->image, &r->height, &r->width) < 0) return -1;
    uint32_t h = (uint32_t)r->height, w = (uint32_t)r->width;
    if (r->mask == CJ_MASK_POLYGON) {
        rle_mask *parts = calloc(r->n_poly, sizeof *parts);
        if (!parts) return ar_errorf("out of memory");
        size_t o = 0;
        int rc = 0;
        for (uint32_t i = 0; i < r->n_poly && rc == 0; i++) {
            rc = rle_from_poly(&parts[i], r->poly_xy + o, r->poly_len[i] / 2, h, w);
            o += r->poly_len[i];
        }
        if (rc == 0) rc = rle_merge(out, parts, r->n_poly, 0);
        for (uint32_t i = 0; i < r->n_poly; i++) rle_free(&parts[i]);
        free(parts);
        return rc;
    }
    ar_image m = {0};
    if (image_load(&m, r->mask_path, IMAGE_GRAY_RAW) < 0) return -1;
    int rc;
    if (m.h != r->height || m.w != r->width)
        rc = ar_errorf("%s is %dx%d, the image %dx%d (width x height)", r->mask_path, m.w, m.h, r->width, r->height);
    else
        rc = rle_encode_hw(out, m.px, h, w);
    image_free(&m);
    return rc;
}

/* ---- files ----------------------------------------------------------------------------------- */

static void note(cj_dataset *ds, const char *msg) {
    if (ds->n_bad < CJ_MAX_WARNINGS) log_warn("%s", msg);
    if (ds->n_messages < CJ_MAX_MESSAGES) {
        char *m = strdup(msg);
        if (m) ds->messages[ds->n_messages++] = m;
    }
    ds->n_bad++;
}

int cj_load_buffer(const char *text, size_t len, const char *path, const cj_options *opt, cj_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    if (!(ds->path = strdup(path))) return ar_errorf("out of memory");
    char *dir = strdup(path);
    if (!dir) { cj_free(ds); return ar_errorf("out of memory"); }
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else dir[0] = 0;
    size_t cap = 0;
    int line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl != NULL);
        line++;
        ds->n_lines++;
        size_t t = n;
        if (t && s[t - 1] == '\r') t--;
        size_t b = 0;
        while (b < t && (s[b] == ' ' || s[b] == '\t')) b++;
        if (b == t) { ds->n_blank++; continue; }
        if (ds->n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            cj_record *nr = realloc(ds->recs, nc * sizeof *nr);
            if (!nr) { free(dir); cj_free(ds); return ar_errorf("out of memory"); }
            ds->recs = nr, cap = nc;
        }
        if (cj_parse_line(s, t, path, line, dir, opt, &ds->recs[ds->n]) < 0) {
            if (strstr(ar_error(), "out of memory")) { free(dir); cj_free(ds); return -1; }
            note(ds, ar_error());
            continue;
        }
        ds->n++;
    }
    free(dir);
    if (ds->n_bad > CJ_MAX_WARNINGS) {
        char sum[256];
        cj_summary(ds, sum, sizeof sum);
        log_warn("%s (%zu more messages not shown)", sum, ds->n_bad - CJ_MAX_WARNINGS);
    }
    return 0;
}

int cj_load(const char *path, const cj_options *opt, cj_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    FILE *f = fopen(path, "rb");
    if (!f) return ar_errorf("%s: cannot open: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 1 << 16;
            char *nb = realloc(buf, nc);
            if (!nb) { free(buf); fclose(f); return ar_errorf("%s: out of memory", path); }
            buf = nb, cap = nc;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) { free(buf); return ar_errorf("%s: read error", path); }
    int rc = cj_load_buffer(buf, n, path, opt, ds);
    free(buf);
    return rc;
}

void cj_free(cj_dataset *ds) {
    if (!ds) return;
    for (size_t i = 0; i < ds->n; i++) cj_record_free(&ds->recs[i]);
    free(ds->recs);
    free(ds->path);
    for (int i = 0; i < ds->n_messages; i++) free(ds->messages[i]);
    memset(ds, 0, sizeof *ds);
}

void cj_summary(const cj_dataset *ds, char *buf, size_t n) {
    snprintf(buf, n, "%s: %zu records, %zu lines skipped (%zu blank)", ds->path ? ds->path : "?", ds->n, ds->n_bad,
             ds->n_blank);
}
