/* data/coco.c — COCO instances JSON loader and annToRLE (see data/coco.h).
 *
 * Two passes over the parsed DOM (core/json.h): the first adds up the storage
 * the records can need (characters, polygon numbers, counts), the second
 * validates each record and copies it into that storage, so pointers handed
 * out stay put. Records are then de-duplicated by id, annotations joined to
 * their images and grouped by image with a counting sort. */
#include "data/coco.h"

#include "core/error.h"
#include "core/json.h"
#include "core/log.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COCO_WARN_LIMIT 10

typedef struct { int64_t id; size_t idx; } id_idx;

typedef struct {
    char *chars;   size_t n_chars, cap_chars;
    double *xy;    size_t n_xy, cap_xy;
    uint32_t *u32; size_t n_u32, cap_u32;     /* polygon lengths and RLE counts */
    size_t *starts; size_t n_starts, cap_starts;
    id_idx *img_ix, *ann_ix, *cat_ix;          /* sorted by id */
} coco_store;

typedef struct {
    const char *origin;
    coco_dataset *ds;
    coco_store *st;
    int64_t warned;
    char where[128];   /* "annotations[17] (id 345)" */
    char why[384];     /* "bbox[2]: expected a number, found string" */
} ctx;

/* ---- messages ----------------------------------------------------------------- */

static void record_bad(ctx *c, int64_t *counter) {
    (*counter)++;
    char msg[640];
    snprintf(msg, sizeof msg, "%s: %s: %s", c->origin, c->where, c->why);
    coco_dataset *ds = c->ds;
    if (ds->n_messages < COCO_MAX_MESSAGES) {
        char *m = strdup(msg);
        if (m) ds->messages[ds->n_messages++] = m;
    }
    if (c->warned++ < COCO_WARN_LIMIT) log_warn("%s", msg);
}

static int why(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int why(ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    return -1;
}

/* What a value is, for "found ...": its type, or the number itself. */
static const char *found(const json_value *v, char *buf, size_t n) {
    if (v->type == JSON_NUMBER) snprintf(buf, n, "%.17g", v->number);
    else snprintf(buf, n, "%s", json_type_name(v->type));
    return buf;
}

/* ---- typed fields --------------------------------------------------------------- */

static int as_int(ctx *c, const json_value *v, const char *path, int64_t *out) {
    char b[40];
    if (v->type == JSON_NUMBER && v->is_int) { *out = v->integer; return 0; }
    if (v->type == JSON_NUMBER && v->number == floor(v->number) && fabs(v->number) <= 9007199254740992.0) {
        *out = (int64_t)v->number;
        return 0;
    }
    return why(c, "%s: expected an integer, found %s", path, found(v, b, sizeof b));
}

static int get_int(ctx *c, const json_value *obj, const char *key, int64_t *out, int required, int64_t dflt) {
    const json_value *v = json_get(obj, key);
    if (!v) {
        if (required) return why(c, "missing field '%s' (expected an integer)", key);
        *out = dflt;
        return 0;
    }
    return as_int(c, v, key, out);
}

static int get_dim(ctx *c, const json_value *v, const char *path, uint32_t *out) {
    int64_t x = 0;
    if (as_int(c, v, path, &x) < 0) return -1;
    if (x < 1 || x > (int64_t)UINT32_MAX) return why(c, "%s: %" PRId64 " is out of range [1, 2^32)", path, x);
    *out = (uint32_t)x;
    return 0;
}

static int as_num(ctx *c, const json_value *v, const char *path, double *out) {
    char b[40];
    if (v->type != JSON_NUMBER) return why(c, "%s: expected a number, found %s", path, found(v, b, sizeof b));
    *out = v->number;
    return 0;
}

/* Copies a string field into the store; NUL inside is refused. */
static int get_str(ctx *c, const json_value *obj, const char *key, const char **out, int required) {
    const json_value *v = json_get(obj, key);
    char b[40];
    if (!v) {
        if (required) return why(c, "missing field '%s' (expected a string)", key);
        *out = "";
        return 0;
    }
    if (v->type != JSON_STRING) return why(c, "%s: expected a string, found %s", key, found(v, b, sizeof b));
    if (memchr(v->str, 0, v->len)) return why(c, "%s: contains a NUL character", key);
    coco_store *st = c->st;
    if (st->n_chars + v->len + 1 > st->cap_chars) return why(c, "%s: internal storage exhausted", key);
    char *d = st->chars + st->n_chars;
    memcpy(d, v->str, v->len + 1);
    st->n_chars += v->len + 1;
    *out = d;
    return 0;
}

/* ---- records ---------------------------------------------------------------------- */

static int parse_image(ctx *c, const json_value *v, coco_image *im) {
    memset(im, 0, sizeof *im);
    if (v->type != JSON_OBJECT) return why(c, "expected an object, found %s", json_type_name(v->type));
    if (get_int(c, v, "id", &im->id, 1, 0) < 0) return -1;
    snprintf(c->where + strlen(c->where), sizeof c->where - strlen(c->where), " (id %" PRId64 ")", im->id);
    if (get_str(c, v, "file_name", &im->file_name, 1) < 0) return -1;
    const json_value *h = json_get(v, "height"), *w = json_get(v, "width");
    if (!h) return why(c, "missing field 'height' (expected an integer)");
    if (!w) return why(c, "missing field 'width' (expected an integer)");
    if (get_dim(c, h, "height", &im->height) < 0 || get_dim(c, w, "width", &im->width) < 0) return -1;
    if ((uint64_t)im->height * im->width > UINT32_MAX)
        return why(c, "height x width = %ux%u is over 2^32-1 pixels", im->height, im->width);
    return 0;
}

static int parse_rle(ctx *c, const json_value *s, coco_annotation *a) {
    char b[40];
    const json_value *size = json_get(s, "size"), *counts = json_get(s, "counts");
    if (!size) return why(c, "segmentation: missing field 'size' (expected [height, width])");
    if (!counts) return why(c, "segmentation: missing field 'counts' (expected a list or a string)");
    if (size->type != JSON_ARRAY || size->n != 2)
        return why(c, "segmentation.size: expected [height, width], found %s%s", found(size, b, sizeof b),
                   size->type == JSON_ARRAY ? " of another length" : "");
    if (get_dim(c, &size->items[0], "segmentation.size[0]", &a->rle_h) < 0 ||
        get_dim(c, &size->items[1], "segmentation.size[1]", &a->rle_w) < 0)
        return -1;
    uint64_t hw = (uint64_t)a->rle_h * a->rle_w;
    if (hw > UINT32_MAX) return why(c, "segmentation.size: %ux%u is over 2^32-1 pixels", a->rle_h, a->rle_w);
    coco_store *st = c->st;
    if (counts->type == JSON_ARRAY) {
        if (st->n_u32 + counts->n > st->cap_u32) return why(c, "segmentation: internal storage exhausted");
        uint32_t *d = st->u32 + st->n_u32;
        uint64_t sum = 0;
        for (size_t i = 0; i < counts->n; i++) {
            char path[64];
            int64_t x = 0;
            snprintf(path, sizeof path, "segmentation.counts[%zu]", i);
            if (as_int(c, &counts->items[i], path, &x) < 0) return -1;
            if (x < 0 || x > (int64_t)UINT32_MAX) return why(c, "%s: %" PRId64 " is out of range [0, 2^32)", path, x);
            d[i] = (uint32_t)x;
            sum += (uint64_t)x;
        }
        if (sum != hw)
            return why(c, "segmentation.counts: the counts sum to %" PRIu64 ", not %ux%u = %" PRIu64, sum, a->rle_h, a->rle_w, hw);
        st->n_u32 += counts->n;
        a->seg = COCO_SEG_COUNTS, a->counts = d, a->n_counts = counts->n;
        return 0;
    }
    if (counts->type == JSON_STRING) {
        rle_mask r;
        if (rle_from_string(&r, counts->str, counts->len, a->rle_h, a->rle_w) < 0)
            return why(c, "segmentation.counts: %s", ar_error());
        a->n_counts = r.m;
        rle_free(&r);
        if (st->n_chars + counts->len + 1 > st->cap_chars) return why(c, "segmentation: internal storage exhausted");
        char *d = st->chars + st->n_chars;
        memcpy(d, counts->str, counts->len + 1);
        st->n_chars += counts->len + 1;
        a->seg = COCO_SEG_STRING, a->counts_str = d, a->counts_len = counts->len;
        return 0;
    }
    return why(c, "segmentation.counts: expected a list of integers or a string, found %s", found(counts, b, sizeof b));
}

static int parse_polygons(ctx *c, const json_value *s, coco_annotation *a) {
    char b[40];
    if (s->n == 0) { a->seg = COCO_SEG_NONE; return 0; }
    if (s->n > UINT32_MAX) return why(c, "segmentation: too many polygons");
    coco_store *st = c->st;
    if (st->n_u32 + s->n > st->cap_u32 || st->n_starts + s->n > st->cap_starts)
        return why(c, "segmentation: internal storage exhausted");
    uint32_t *len = st->u32 + st->n_u32;
    size_t *start = st->starts + st->n_starts;
    size_t xy0 = st->n_xy;
    for (size_t i = 0; i < s->n; i++) {
        const json_value *p = &s->items[i];
        if (p->type != JSON_ARRAY)
            return why(c, "segmentation[%zu]: expected a polygon (a list of numbers), found %s", i, found(p, b, sizeof b));
        if (i == 0 && p->n < 6)
            return why(c, "segmentation[0]: a polygon needs at least 6 numbers (3 points), found %zu", p->n);
        if (p->n < 2) return why(c, "segmentation[%zu]: a polygon needs at least 2 numbers, found %zu", i, p->n);
        if (p->n > UINT32_MAX || st->n_xy + p->n > st->cap_xy) return why(c, "segmentation[%zu]: too many numbers", i);
        start[i] = st->n_xy - xy0;
        len[i] = (uint32_t)p->n;
        for (size_t j = 0; j < p->n; j++) {
            const json_value *x = &p->items[j];
            if (x->type != JSON_NUMBER)
                return why(c, "segmentation[%zu][%zu]: expected a number, found %s", i, j, found(x, b, sizeof b));
            double sv = 5.0 * x->number + .5;
            if (!(sv > -1073741824.0 && sv < 1073741824.0))
                return why(c, "segmentation[%zu][%zu]: coordinate %.17g is out of range", i, j, x->number);
            st->xy[st->n_xy++] = x->number;
        }
    }
    st->n_u32 += s->n, st->n_starts += s->n;
    a->seg = COCO_SEG_POLYGONS, a->n_poly = (uint32_t)s->n;
    a->poly_len = len, a->poly_start = start, a->poly_xy = st->xy + xy0;
    return 0;
}

static int parse_ann(ctx *c, const json_value *v, coco_annotation *a) {
    memset(a, 0, sizeof *a);
    char b[40];
    if (v->type != JSON_OBJECT) return why(c, "expected an object, found %s", json_type_name(v->type));
    if (get_int(c, v, "id", &a->id, 1, 0) < 0) return -1;
    snprintf(c->where + strlen(c->where), sizeof c->where - strlen(c->where), " (id %" PRId64 ")", a->id);
    if (get_int(c, v, "image_id", &a->image_id, 1, 0) < 0) return -1;
    if (get_int(c, v, "category_id", &a->category_id, 1, 0) < 0) return -1;
    const json_value *bb = json_get(v, "bbox");
    if (!bb) return why(c, "missing field 'bbox' (expected [x, y, width, height])");
    if (bb->type != JSON_ARRAY || bb->n != 4)
        return why(c, "bbox: expected [x, y, width, height], found %s%s", found(bb, b, sizeof b),
                   bb->type == JSON_ARRAY ? " of another length" : "");
    for (int i = 0; i < 4; i++) {
        char path[16];
        snprintf(path, sizeof path, "bbox[%d]", i);
        if (as_num(c, &bb->items[i], path, &a->bbox[i]) < 0) return -1;
    }
    const json_value *ar = json_get(v, "area");
    a->area = 0;
    if (ar && as_num(c, ar, "area", &a->area) < 0) return -1;
    int64_t crowd;
    if (get_int(c, v, "iscrowd", &crowd, 0, 0) < 0) return -1;
    if (crowd != 0 && crowd != 1) return why(c, "iscrowd: expected 0 or 1, found %" PRId64, crowd);
    a->iscrowd = (int)crowd;
    const json_value *s = json_get(v, "segmentation");
    if (!s) { a->seg = COCO_SEG_NONE; return 0; }
    if (s->type == JSON_ARRAY) return parse_polygons(c, s, a);
    if (s->type == JSON_OBJECT) return parse_rle(c, s, a);
    return why(c, "segmentation: expected a list of polygons or an RLE object, found %s", found(s, b, sizeof b));
}

static int parse_cat(ctx *c, const json_value *v, coco_category *k) {
    memset(k, 0, sizeof *k);
    if (v->type != JSON_OBJECT) return why(c, "expected an object, found %s", json_type_name(v->type));
    if (get_int(c, v, "id", &k->id, 1, 0) < 0) return -1;
    snprintf(c->where + strlen(c->where), sizeof c->where - strlen(c->where), " (id %" PRId64 ")", k->id);
    if (get_str(c, v, "name", &k->name, 1) < 0) return -1;
    return get_str(c, v, "supercategory", &k->supercategory, 0);
}

static int parse_image_v(ctx *c, const json_value *v, void *out) { return parse_image(c, v, out); }
static int parse_cat_v(ctx *c, const json_value *v, void *out) { return parse_cat(c, v, out); }
static int64_t image_id(const void *p) { return ((const coco_image *)p)->id; }
static int64_t cat_id(const void *p) { return ((const coco_category *)p)->id; }

/* ---- ids --------------------------------------------------------------------------- */

static int cmp_id_idx(const void *x, const void *y) {
    const id_idx *a = x, *b = y;
    if (a->id != b->id) return a->id < b->id ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

/* Sorts ix[0..n) by (id, index) and clears keep[] for every record whose id
 * an earlier record has. Returns the number removed. */
static size_t mark_dups(id_idx *ix, size_t n, unsigned char *keep) {
    qsort(ix, n, sizeof *ix, cmp_id_idx);
    size_t removed = 0;
    for (size_t i = 1; i < n; i++)
        if (ix[i].id == ix[i - 1].id) keep[ix[i].idx] = 0, removed++;
    return removed;
}

static void *xcalloc(size_t n, size_t size) { return calloc(n ? n : 1, size); }

/* One record list (images or categories): parse arr's items into items[]
 * (esz bytes each; a bad record is described, counted in *nbad and skipped),
 * then drop the later records of a repeated id (described and counted too)
 * and build the sorted id index *ix. src/keep: scratch of arr->n entries.
 * Returns the number kept, or -1 + ar_error (out of memory). */
static long load_section(ctx *c, const json_value *arr, const char *name, const char *what, void *items, size_t esz,
                         int (*parse)(ctx *, const json_value *, void *), int64_t (*id_of)(const void *),
                         id_idx **ix, int64_t *nbad, size_t *src, unsigned char *keep) {
    coco_store *st = c->st;
    char *it = items;
    size_t n = 0;
    for (size_t i = 0; arr && i < arr->n; i++) {
        size_t ch0 = st->n_chars;
        snprintf(c->where, sizeof c->where, "%s[%zu]", name, i);
        if (parse(c, &arr->items[i], it + n * esz) < 0) {
            st->n_chars = ch0;
            record_bad(c, nbad);
        } else src[n++] = i;
    }
    *ix = xcalloc(n, sizeof **ix);
    if (!*ix) return ar_errorf("%s: out of memory", c->origin), -1;
    for (size_t i = 0; i < n; i++) (*ix)[i] = (id_idx){id_of(it + i * esz), i}, keep[i] = 1;
    if (mark_dups(*ix, n, keep)) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (!keep[i]) {
                snprintf(c->where, sizeof c->where, "%s[%zu] (id %" PRId64 ")", name, src[i], id_of(it + i * esz));
                why(c, "duplicate id (the first %s with it is kept)", what);
                record_bad(c, nbad);
                continue;
            }
            memmove(it + m * esz, it + i * esz, esz);
            src[m] = src[i];
            m++;
        }
        n = m;
        for (size_t i = 0; i < n; i++) (*ix)[i] = (id_idx){id_of(it + i * esz), i};
        qsort(*ix, n, sizeof **ix, cmp_id_idx);
    }
    return (long)n;
}

static const id_idx *find_id(const id_idx *ix, size_t n, int64_t id) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ix[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && ix[lo].id == id ? &ix[lo] : NULL;
}

/* ---- load --------------------------------------------------------------------------- */

static const json_value *array_field(const json_value *root, const char *key, int required, const char *origin,
                                     int *err) {
    const json_value *v = json_get(root, key);
    if (!v) {
        if (required) *err = ar_errorf("%s: missing field '%s' (expected an array)", origin, key);
        return NULL;
    }
    if (v->type != JSON_ARRAY) *err = ar_errorf("%s: %s: expected an array, found %s", origin, key, json_type_name(v->type));
    return v;
}

/* Upper bounds of the storage the records may take. */
static void size_up(const json_value *imgs, const json_value *anns, const json_value *cats, coco_store *st) {
    size_t ch = 0, xy = 0, u32 = 0, starts = 0;
    const json_value *s;
    for (size_t i = 0; i < imgs->n; i++)
        if ((s = json_get(&imgs->items[i], "file_name")) && s->type == JSON_STRING) ch += s->len + 1;
    for (size_t i = 0; cats && i < cats->n; i++) {
        if ((s = json_get(&cats->items[i], "name")) && s->type == JSON_STRING) ch += s->len + 1;
        if ((s = json_get(&cats->items[i], "supercategory")) && s->type == JSON_STRING) ch += s->len + 1;
    }
    for (size_t i = 0; i < anns->n; i++) {
        s = json_get(&anns->items[i], "segmentation");
        if (!s) continue;
        if (s->type == JSON_ARRAY) {
            u32 += s->n, starts += s->n;
            for (size_t j = 0; j < s->n; j++)
                if (s->items[j].type == JSON_ARRAY) xy += s->items[j].n;
        } else if (s->type == JSON_OBJECT && (s = json_get(s, "counts"))) {
            if (s->type == JSON_ARRAY) u32 += s->n;
            else if (s->type == JSON_STRING) ch += s->len + 1;
        }
    }
    st->cap_chars = ch, st->cap_xy = xy, st->cap_u32 = u32, st->cap_starts = starts;
}

void coco_free(coco_dataset *ds) {
    if (!ds) return;
    coco_store *st = ds->priv;
    if (st) {
        free(st->chars), free(st->xy), free(st->u32), free(st->starts);
        free(st->img_ix), free(st->ann_ix), free(st->cat_ix);
        free(st);
    }
    free(ds->path), free(ds->images), free(ds->anns), free(ds->cats), free(ds->img_anns);
    for (int i = 0; i < ds->n_messages; i++) free(ds->messages[i]);
    memset(ds, 0, sizeof *ds);
}


static int load_doc(const json_doc *doc, const char *origin, coco_dataset *ds) {
    const json_value *root = json_root(doc);
    if (root->type != JSON_OBJECT) return ar_errorf("%s: expected an object at the top, found %s", origin, json_type_name(root->type));
    int err = 0;
    const json_value *imgs = array_field(root, "images", 1, origin, &err);
    const json_value *anns = err ? NULL : array_field(root, "annotations", 1, origin, &err);
    const json_value *cats = err ? NULL : array_field(root, "categories", 0, origin, &err);
    if (err) return -1;

    coco_store *st = calloc(1, sizeof *st);
    ds->priv = st;
    ds->path = strdup(origin);
    if (!st || !ds->path) return ar_errorf("%s: out of memory", origin);
    size_up(imgs, anns, cats, st);
    st->chars = xcalloc(st->cap_chars, 1);
    st->xy = xcalloc(st->cap_xy, sizeof *st->xy);
    st->u32 = xcalloc(st->cap_u32, sizeof *st->u32);
    st->starts = xcalloc(st->cap_starts, sizeof *st->starts);
    ds->images = xcalloc(imgs->n, sizeof *ds->images);
    ds->anns = xcalloc(anns->n, sizeof *ds->anns);
    ds->cats = xcalloc(cats ? cats->n : 0, sizeof *ds->cats);
    size_t nmax = imgs->n > anns->n ? imgs->n : anns->n;
    if (cats && cats->n > nmax) nmax = cats->n;
    size_t *src = xcalloc(nmax, sizeof *src);            /* JSON index of each kept record */
    unsigned char *keep = xcalloc(nmax, 1);
    if (!st->chars || !st->xy || !st->u32 || !st->starts || !ds->images || !ds->anns || !ds->cats || !src || !keep) {
        free(src), free(keep);
        return ar_errorf("%s: out of memory (%zu images, %zu annotations)", origin, imgs->n, anns->n);
    }
    ctx c = {.origin = origin, .ds = ds, .st = st};
    int rc = -1;

    /* images, then categories: parse each record, drop duplicate ids */
    long ni = load_section(&c, imgs, "images", "image", ds->images, sizeof *ds->images, parse_image_v, image_id,
                           &st->img_ix, &ds->n_bad_images, src, keep);
    if (ni < 0) goto done;
    ds->n_images = (size_t)ni;
    long nc = load_section(&c, cats, "categories", "category", ds->cats, sizeof *ds->cats, parse_cat_v, cat_id,
                           &st->cat_ix, &ds->n_bad_cats, src, keep);
    if (nc < 0) goto done;
    ds->n_cats = (size_t)nc;

    size_t n;
    /* annotations: parse, join to images */
    n = 0;
    for (size_t i = 0; i < anns->n; i++) {
        size_t ch0 = st->n_chars, xy0 = st->n_xy, u0 = st->n_u32, s0 = st->n_starts;
        coco_annotation *a = &ds->anns[n];
        snprintf(c.where, sizeof c.where, "annotations[%zu]", i);
        int ok = parse_ann(&c, &anns->items[i], a) == 0;
        if (ok) {
            const id_idx *im = find_id(st->img_ix, ds->n_images, a->image_id);
            if (!im) ok = why(&c, "image_id %" PRId64 " names no image", a->image_id) == 0;
            else a->image = im->idx;
        }
        if (!ok) {
            st->n_chars = ch0, st->n_xy = xy0, st->n_u32 = u0, st->n_starts = s0;
            record_bad(&c, &ds->n_bad_anns);
        } else src[n++] = i;
    }
    st->ann_ix = xcalloc(n, sizeof *st->ann_ix);
    if (!st->ann_ix) { ar_errorf("%s: out of memory", origin); goto done; }
    for (size_t i = 0; i < n; i++) st->ann_ix[i] = (id_idx){ds->anns[i].id, i}, keep[i] = 1;
    if (mark_dups(st->ann_ix, n, keep)) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (!keep[i]) {
                snprintf(c.where, sizeof c.where, "annotations[%zu] (id %" PRId64 ")", src[i], ds->anns[i].id);
                why(&c, "duplicate id (the first annotation with it is kept)");
                record_bad(&c, &ds->n_bad_anns);
                continue;
            }
            ds->anns[m] = ds->anns[i], src[m] = src[i], m++;
        }
        n = m;
        for (size_t i = 0; i < n; i++) st->ann_ix[i] = (id_idx){ds->anns[i].id, i};
        qsort(st->ann_ix, n, sizeof *st->ann_ix, cmp_id_idx);
    }
    ds->n_anns = n;

    /* group by image: counting sort, file order within an image */
    ds->img_anns = xcalloc(n, sizeof *ds->img_anns);
    if (!ds->img_anns) { ar_errorf("%s: out of memory", origin); goto done; }
    for (size_t i = 0; i < n; i++) ds->images[ds->anns[i].image].n_anns++;
    size_t off = 0;
    for (size_t i = 0; i < ds->n_images; i++) {
        ds->images[i].first_ann = off;
        off += ds->images[i].n_anns;
        ds->images[i].n_anns = 0;
    }
    for (size_t i = 0; i < n; i++) {
        coco_image *im = &ds->images[ds->anns[i].image];
        ds->img_anns[im->first_ann + im->n_anns++] = i;
    }
    if (c.warned > COCO_WARN_LIMIT)
        log_warn("%s: %" PRId64 " more malformed records not shown", origin, c.warned - COCO_WARN_LIMIT);
    rc = 0;
done:
    free(src), free(keep);
    return rc;
}

int coco_load_buffer(const char *text, size_t len, const char *origin, coco_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    if (!origin) origin = "instances.json";
    json_doc *doc = json_parse(text, len, origin);
    if (!doc) return -1;
    int rc = load_doc(doc, origin, ds);
    json_free(doc);
    if (rc < 0) {
        char msg[AR_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", ar_error());
        coco_free(ds);
        ar_errorf("%s", msg);
    }
    return rc;
}

int coco_load(const char *path, coco_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    json_doc *doc = json_parse_file(path);
    if (!doc) return -1;
    int rc = load_doc(doc, path, ds);
    json_free(doc);
    if (rc < 0) {
        char msg[AR_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", ar_error());
        coco_free(ds);
        ar_errorf("%s", msg);
    }
    return rc;
}

/* ---- lookups and masks ---------------------------------------------------------------- */

const coco_image *coco_find_image(const coco_dataset *ds, int64_t id) {
    const coco_store *st = ds->priv;
    const id_idx *p = st ? find_id(st->img_ix, ds->n_images, id) : NULL;
    return p ? &ds->images[p->idx] : NULL;
}

const coco_annotation *coco_find_ann(const coco_dataset *ds, int64_t id) {
    const coco_store *st = ds->priv;
    const id_idx *p = st ? find_id(st->ann_ix, ds->n_anns, id) : NULL;
    return p ? &ds->anns[p->idx] : NULL;
}

const coco_category *coco_find_category(const coco_dataset *ds, int64_t id) {
    const coco_store *st = ds->priv;
    const id_idx *p = st ? find_id(st->cat_ix, ds->n_cats, id) : NULL;
    return p ? &ds->cats[p->idx] : NULL;
}

int coco_ann_to_rle(const coco_dataset *ds, const coco_annotation *a, rle_mask *out) {
    memset(out, 0, sizeof *out);
    switch (a->seg) {
    case COCO_SEG_NONE:
        return ar_errorf("%s: annotation %" PRId64 " has no segmentation", ds->path, a->id);
    case COCO_SEG_COUNTS:
        return rle_from_counts(out, a->counts, a->n_counts, a->rle_h, a->rle_w) < 0
                   ? ar_error_prefix("%s: annotation %" PRId64 ": ", ds->path, a->id) : 0;
    case COCO_SEG_STRING:
        return rle_from_string(out, a->counts_str, a->counts_len, a->rle_h, a->rle_w) < 0
                   ? ar_error_prefix("%s: annotation %" PRId64 ": ", ds->path, a->id) : 0;
    case COCO_SEG_POLYGONS: break;
    }
    const coco_image *im = &ds->images[a->image];
    rle_mask *parts = calloc(a->n_poly, sizeof *parts);
    if (!parts) return ar_errorf("%s: annotation %" PRId64 ": out of memory", ds->path, a->id);
    int rc = 0;
    uint32_t i;
    for (i = 0; i < a->n_poly && rc == 0; i++)
        if (rle_from_poly(&parts[i], a->poly_xy + a->poly_start[i], a->poly_len[i] / 2, im->height, im->width) < 0)
            rc = ar_error_prefix("%s: annotation %" PRId64 ": segmentation[%u]: ", ds->path, a->id, i);
    if (rc == 0 && rle_merge(out, parts, a->n_poly, 0) < 0)
        rc = ar_error_prefix("%s: annotation %" PRId64 ": ", ds->path, a->id);
    for (uint32_t j = 0; j < a->n_poly; j++) rle_free(&parts[j]);
    free(parts);
    return rc;
}
