/* data/shapes.c — the "shapes" world generator (what it writes and why:
 * data/shapes.h). Scenes are drawn from per-image random streams, masks are
 * pycocotools rasterisations of the written polygons (data/rle.h), the
 * images are painted from those masks, and every file is written in the
 * format a loader of data/ reads: COCO JSON, a protocol-2 pickle (a small
 * pickler below), AVSBench CSV/PNG/WAV, JSON lines, a tokenizer.json.
 *
 * Depends on data/rle.h, data/image.h, core/rng.h, core/json.h, core/fs.h,
 * core/error.h, core/log.h, core/timer.h.
 */
/* Coordinates are rounded to 0.01 px; no fused multiply-adds, so the same
 * seed gives the same bytes on every x86-64 build. */
#pragma GCC optimize("fp-contract=off")

#include "data/shapes.h"

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/rng.h"
#include "core/timer.h"
#include "data/image.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

enum { CIRCLE, SQUARE, TRIANGLE, DIAMOND, STAR };
static const char *const k_class[SHAPES_CLASSES] = {"circle", "square", "triangle", "diamond", "star"};
static const char *const k_avs_cat[SHAPES_CLASSES] = {"circle_humming", "square_buzzing", "triangle_ringing",
                                                      "diamond_chiming", "star_twinkling"};
static const char *const k_colour[SHAPES_COLOURS] = {"red", "green", "blue", "yellow", "purple", "white"};
static const uint8_t k_rgb[SHAPES_COLOURS][3] = {{220, 40, 40},  {50, 170, 60},  {50, 90, 225},
                                                 {235, 215, 50}, {150, 70, 200}, {242, 242, 242}};
static const char *const k_split[4] = {"train", "val", "testA", "testB"};
static const char *const k_vsplit[3] = {"train", "val", "test"};

/* random streams (rng_derive(seed, stream + index)) */
#define STREAM_IMAGE ((uint64_t)1 << 32)
#define STREAM_REFS ((uint64_t)2 << 32)
#define STREAM_VIDEO ((uint64_t)3 << 32)
#define STREAM_JSONL ((uint64_t)4 << 32)

#define VISIBLE_MIN 0.75   /* fraction of each mask left visible by later objects */

const char *shapes_class_name(int c) { return c >= 0 && c < SHAPES_CLASSES ? k_class[c] : "?"; }
const char *shapes_colour_name(int c) { return c >= 0 && c < SHAPES_COLOURS ? k_colour[c] : "?"; }
const uint8_t *shapes_colour_rgb(int c) { return c >= 0 && c < SHAPES_COLOURS ? k_rgb[c] : k_rgb[0]; }
const char *shapes_avs_category(int c) { return c >= 0 && c < SHAPES_CLASSES ? k_avs_cat[c] : "?"; }

int shapes_cfg_preset(shapes_cfg *c, const char *size) {
    memset(c, 0, sizeof *c);
    c->seed = 1;
    c->min_side = 64;
    c->max_side = 128;
    c->crowd_p = 0.15;
    c->jpeg_quality = 92;
    if (!size || !strcmp(size, "small")) {
        c->n_train = 300, c->n_val = 60, c->n_testA = 40, c->n_testB = 40;
        c->v_train = 24, c->v_val = 6, c->v_test = 6;
    } else if (!strcmp(size, "tiny")) {
        c->n_train = 16, c->n_val = 6, c->n_testA = 4, c->n_testB = 4;
        c->v_train = 6, c->v_val = 3, c->v_test = 3;
        c->max_side = 96;
    } else if (!strcmp(size, "medium")) {
        c->n_train = 2000, c->n_val = 200, c->n_testA = 150, c->n_testB = 150;
        c->v_train = 120, c->v_val = 20, c->v_test = 20;
        c->max_side = 160;
    } else {
        return ar_errorf("shapes: unknown size '%s' (expected tiny, small or medium)", size);
    }
    return 0;
}

int shapes_n_images(const shapes_cfg *c) { return c->n_train + c->n_val + c->n_testA + c->n_testB; }

static int image_split_index(const shapes_cfg *c, int i) {
    if (i < c->n_train) return 0;
    if (i < c->n_train + c->n_val) return 1;
    if (i < c->n_train + c->n_val + c->n_testA) return 2;
    return 3;
}
const char *shapes_image_split(const shapes_cfg *c, int i) { return k_split[image_split_index(c, i)]; }

int shapes_n_videos(const shapes_cfg *c) { return c->v_train + c->v_val + c->v_test; }
static int video_split_index(const shapes_cfg *c, int v) {
    return v < c->v_train ? 0 : v < c->v_train + c->v_val ? 1 : 2;
}
const char *shapes_video_split(const shapes_cfg *c, int v) { return k_vsplit[video_split_index(c, v)]; }

/* ------------------------------------------------------------------------ */
/* geometry                                                                 */
/* ------------------------------------------------------------------------ */
/* Rounded to 0.01: k / 100.0 is the double nearest the decimal "%.2f"
 * prints, so the JSON reader gets back exactly the value rasterised here. */
static double r2(double v) { return round(v * 100.0) / 100.0; }

static double urange(ar_rng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

/* The polygon of a shape of scale s (it fits a 2s box before turning) at
 * (cx, cy), turned by rot radians. Returns the vertex count. */
static int shape_polygon(int cls, double cx, double cy, double s, double rot, double *xy) {
    double px[SHAPES_MAX_V], py[SHAPES_MAX_V];
    int n = 0;
    switch (cls) {
    case CIRCLE:
        n = 16 + (int)(s * 1.5);
        if (n > SHAPES_MAX_V) n = SHAPES_MAX_V;
        for (int k = 0; k < n; k++) px[k] = s * cos(2 * PI * k / n), py[k] = s * sin(2 * PI * k / n);
        break;
    case SQUARE: {
        double a = 0.85 * s;
        double qx[4] = {-a, a, a, -a}, qy[4] = {-a, -a, a, a};
        for (n = 0; n < 4; n++) px[n] = qx[n], py[n] = qy[n];
        break;
    }
    case TRIANGLE: {
        double tx[3] = {0, s, -s}, ty[3] = {-s, 0.75 * s, 0.75 * s};
        for (n = 0; n < 3; n++) px[n] = tx[n], py[n] = ty[n];
        break;
    }
    case DIAMOND: {
        double dx[4] = {0, 0.8 * s, 0, -0.8 * s}, dy[4] = {-s, 0, s, 0};
        for (n = 0; n < 4; n++) px[n] = dx[n], py[n] = dy[n];
        break;
    }
    default: /* STAR */
        n = 10;
        for (int k = 0; k < n; k++) {
            double r = k % 2 ? 0.45 * s : s, a = -PI / 2 + PI * k / 5;
            px[k] = r * cos(a), py[k] = r * sin(a);
        }
        break;
    }
    double c = cos(rot), sn = sin(rot);
    for (int k = 0; k < n; k++) {
        xy[2 * k] = r2(cx + c * px[k] - sn * py[k]);
        xy[2 * k + 1] = r2(cy + sn * px[k] + c * py[k]);
    }
    return n;
}

static int inside(const double *xy, int n, int h, int w) {
    for (int k = 0; k < n; k++)
        if (xy[2 * k] < 1 || xy[2 * k] > w - 1 || xy[2 * k + 1] < 1 || xy[2 * k + 1] > h - 1) return 0;
    return 1;
}

static void poly_extent(const double *xy, int n, double bb[4]) {
    double x0 = xy[0], x1 = xy[0], y0 = xy[1], y1 = xy[1];
    for (int k = 1; k < n; k++) {
        x0 = fmin(x0, xy[2 * k]), x1 = fmax(x1, xy[2 * k]);
        y0 = fmin(y0, xy[2 * k + 1]), y1 = fmax(y1, xy[2 * k + 1]);
    }
    bb[0] = x0, bb[1] = y0, bb[2] = r2(x1 - x0), bb[3] = r2(y1 - y0);
}

static void set_centre(shapes_object *o) {
    o->cx = o->bbox[0] + o->bbox[2] / 2;
    o->cy = o->bbox[1] + o->bbox[3] / 2;
}

/* ------------------------------------------------------------------------ */
/* placing objects: every earlier object keeps VISIBLE_MIN of its mask       */
/* ------------------------------------------------------------------------ */
typedef struct {
    int h, w, n;
    uint8_t *own;              /* [h w] 1 + index of the top object, 0 = background */
    uint8_t *tmp;              /* [h w] a candidate's mask, row-major */
    uint32_t vis[SHAPES_MAX_OBJ], area[SHAPES_MAX_OBJ];
} placer;

static int placer_init(placer *p, int h, int w) {
    memset(p, 0, sizeof *p);
    p->h = h, p->w = w;
    p->own = calloc((size_t)h * w, 1);
    p->tmp = malloc((size_t)h * w);
    if (!p->own || !p->tmp) {
        free(p->own), free(p->tmp);
        return ar_errorf("shapes: out of memory");
    }
    return 0;
}
static void placer_free(placer *p) { free(p->own), free(p->tmp); }

/* 1 if mask m can go on top (decoded into p->tmp), 0 if not, -1 error. */
static int placer_check(placer *p, const rle_mask *m) {
    if (rle_decode_hw(m, p->tmp) < 0) return -1;
    uint32_t lost[SHAPES_MAX_OBJ] = {0};
    size_t N = (size_t)p->h * p->w;
    for (size_t i = 0; i < N; i++)
        if (p->tmp[i] && p->own[i]) lost[p->own[i] - 1]++;
    for (int j = 0; j < p->n; j++)
        if ((double)(p->vis[j] - lost[j]) < VISIBLE_MIN * p->area[j]) return 0;
    return 1;
}

/* Puts the mask last checked (p->tmp) on top. */
static void placer_commit(placer *p, uint32_t area) {
    size_t N = (size_t)p->h * p->w;
    for (size_t i = 0; i < N; i++)
        if (p->tmp[i]) {
            if (p->own[i]) p->vis[p->own[i] - 1]--;
            p->own[i] = (uint8_t)(p->n + 1);
        }
    p->vis[p->n] = p->area[p->n] = area;
    p->n++;
}

/* A shape object from its polygon: mask, area, box, centre. 0 or -1. */
static int object_from_polygon(shapes_object *o, int h, int w) {
    if (rle_from_poly(&o->mask, o->xy, (size_t)o->nv, (uint32_t)h, (uint32_t)w) < 0) return -1;
    o->area = rle_area(&o->mask);
    poly_extent(o->xy, o->nv, o->bbox);
    set_centre(o);
    return 0;
}

static void draw_side(ar_rng *r, const shapes_cfg *c, int *side) {
    int lo = (c->min_side + 7) / 8, hi = c->max_side / 8;
    if (hi < lo) hi = lo;
    *side = 8 * (lo + (int)rng_below(r, (uint64_t)(hi - lo + 1)));
}

static void draw_shape(ar_rng *r, int m, int cls, shapes_object *o, double *s, double *rot) {
    memset(o, 0, sizeof *o);
    o->cls = cls;
    o->col = (int)rng_below(r, SHAPES_COLOURS);
    o->big = (int)rng_below(r, 2);
    *s = m * (o->big ? urange(r, 0.19, 0.26) : urange(r, 0.09, 0.13));
    *rot = (cls == TRIANGLE || cls == STAR) ? urange(r, -0.3, 0.3) : 0.0;
}

/* A cluster of dots (a crowd) into o: 0 placed, 1 no room, -1 error. */
static int make_crowd(ar_rng *r, int h, int w, shapes_object *o) {
    int m = h < w ? h : w;
    memset(o, 0, sizeof *o);
    o->cls = CIRCLE;
    o->col = (int)rng_below(r, SHAPES_COLOURS);
    o->crowd = 1;
    double R = 0.11 * m, ccx = urange(r, R + 4, w - R - 4), ccy = urange(r, R + 4, h - R - 4);
    int want = 4 + (int)rng_below(r, 4);
    double cxs[SHAPES_MAX_DOTS], cys[SHAPES_MAX_DOTS], rs[SHAPES_MAX_DOTS];
    for (int tries = 0; tries < 200 && o->n_dots < want; tries++) {
        double a = urange(r, 0, 2 * PI), d = R * sqrt(rng_uniform(r)), rad = urange(r, 1.6, 2.4);
        double x = ccx + d * cos(a), y = ccy + d * sin(a);
        int ok = 1;
        for (int k = 0; k < o->n_dots && ok; k++)
            if (hypot(x - cxs[k], y - cys[k]) < rad + rs[k] + 1.5) ok = 0;
        if (!ok) continue;
        cxs[o->n_dots] = x, cys[o->n_dots] = y, rs[o->n_dots] = rad;
        for (int v = 0; v < SHAPES_DOT_V; v++) {
            o->dots[o->n_dots][2 * v] = r2(x + rad * cos(2 * PI * v / SHAPES_DOT_V));
            o->dots[o->n_dots][2 * v + 1] = r2(y + rad * sin(2 * PI * v / SHAPES_DOT_V));
        }
        o->n_dots++;
    }
    if (o->n_dots < 3) return 1;
    rle_mask parts[SHAPES_MAX_DOTS];
    memset(parts, 0, sizeof parts);
    int rc = 0;
    for (int k = 0; k < o->n_dots && !rc; k++)
        rc = rle_from_poly(&parts[k], o->dots[k], SHAPES_DOT_V, (uint32_t)h, (uint32_t)w);
    if (!rc) rc = rle_merge(&o->mask, parts, (size_t)o->n_dots, 0);
    for (int k = 0; k < o->n_dots; k++) rle_free(&parts[k]);
    if (rc) return -1;
    o->area = rle_area(&o->mask);
    rle_to_bbox(&o->mask, o->bbox);
    set_centre(o);
    return o->area > 0 ? 0 : 1;
}

/* ------------------------------------------------------------------------ */
/* rendering                                                                */
/* ------------------------------------------------------------------------ */
static uint8_t clamp8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : (int)lround(v)); }

/* A grey of random level and tint, a linear gradient and noise. */
static void render_background(ar_rng *r, uint8_t *px, int h, int w) {
    double g = urange(r, 60, 135), tint[3], ang = urange(r, 0, 2 * PI), amp = urange(r, 6, 18);
    for (int ch = 0; ch < 3; ch++) tint[ch] = urange(r, -12, 12);
    double ca = cos(ang) / (h > w ? h : w), sa = sin(ang) / (h > w ? h : w);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double v = g + amp * (x * ca + y * sa) + (double)rng_below(r, 11) - 5;
            for (int ch = 0; ch < 3; ch++) px[((size_t)y * w + x) * 3 + ch] = clamp8(v + tint[ch]);
        }
}

static int paint(ar_rng *r, uint8_t *px, uint8_t *tmp, const shapes_object *o) {
    if (rle_decode_hw(&o->mask, tmp) < 0) return ar_errorf("shapes: bad mask");
    const uint8_t *c = k_rgb[o->col];
    size_t N = (size_t)o->mask.h * o->mask.w;
    for (size_t i = 0; i < N; i++)
        if (tmp[i]) {
            int nz = (int)rng_below(r, 9) - 4;
            for (int ch = 0; ch < 3; ch++) px[i * 3 + ch] = clamp8((double)c[ch] + nz);
        }
    return 0;
}

void shapes_scene_free(shapes_scene *s) {
    if (!s) return;
    for (int k = 0; k < SHAPES_MAX_OBJ; k++) rle_free(&s->obj[k].mask);
    free(s->px);
    memset(s, 0, sizeof *s);
}

int shapes_scene_make(const shapes_cfg *c, int i, shapes_scene *s) {
    memset(s, 0, sizeof *s);
    if (i < 0 || i >= shapes_n_images(c)) return ar_errorf("shapes: image %d out of range", i);
    ar_rng r;
    rng_seed(&r, rng_derive(c->seed, STREAM_IMAGE + (uint64_t)i));
    draw_side(&r, c, &s->h);
    draw_side(&r, c, &s->w);
    int h = s->h, w = s->w, m = h < w ? h : w;
    placer p;
    if (placer_init(&p, h, w)) return -1;
    int want = 2 + (int)rng_below(&r, 3);
    for (int attempt = 0; s->n < want && attempt < 60 * want; attempt++) {
        shapes_object o;
        double sc, rot;
        draw_shape(&r, m, (int)rng_below(&r, SHAPES_CLASSES), &o, &sc, &rot);
        double cx = urange(&r, sc, w - sc), cy = urange(&r, sc, h - sc);
        o.nv = shape_polygon(o.cls, cx, cy, sc, rot, o.xy);
        if (!inside(o.xy, o.nv, h, w)) continue;
        if (object_from_polygon(&o, h, w)) goto fail;
        int ok = o.area > 0 ? placer_check(&p, &o.mask) : 0;
        if (ok < 0) { rle_free(&o.mask); goto fail; }
        if (!ok) { rle_free(&o.mask); continue; }
        placer_commit(&p, o.area);
        s->obj[s->n++] = o;
    }
    if (s->n < 2) {
        ar_errorf("shapes: image %d: could not place two shapes", i);
        goto fail;
    }
    if (rng_uniform(&r) < c->crowd_p) {
        for (int attempt = 0; attempt < 20; attempt++) {
            shapes_object o;
            int rc = make_crowd(&r, h, w, &o);
            if (rc < 0) goto fail;
            if (rc > 0) { rle_free(&o.mask); continue; }
            int ok = placer_check(&p, &o.mask);
            if (ok < 0) { rle_free(&o.mask); goto fail; }
            if (!ok) { rle_free(&o.mask); continue; }
            placer_commit(&p, o.area);
            s->obj[s->n++] = o;
            break;
        }
    }
    s->px = malloc((size_t)h * w * 3);
    if (!s->px) { ar_errorf("shapes: out of memory"); goto fail; }
    render_background(&r, s->px, h, w);
    for (int k = 0; k < s->n; k++)
        if (paint(&r, s->px, p.tmp, &s->obj[k])) goto fail;
    placer_free(&p);
    return 0;
fail:
    placer_free(&p);
    shapes_scene_free(s);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* expressions                                                              */
/* ------------------------------------------------------------------------ */
enum { FAM_ATTR, FAM_SUPER, FAM_CLASS_SUPER, FAM_REL, N_FAM };

/* Objects matching (cls, col, big); -1 = any. */
static int count_attr(const shapes_scene *s, int cls, int col, int big) {
    int n = 0;
    for (int j = 0; j < s->n; j++) {
        const shapes_object *o = &s->obj[j];
        if ((cls < 0 || o->cls == cls) && (col < 0 || o->col == col) && (big < 0 || o->big == big)) n++;
    }
    return n;
}

/* Superlative d = 0 smallest, 1 largest, 2 leftmost, 3 rightmost, 4 highest,
 * 5 lowest, among the objects of class cls (-1 all): 1 when object k wins by
 * the margin and there is someone to beat. */
static const char *const k_super[6] = {"smallest", "largest", "leftmost", "rightmost", "highest", "lowest"};
static int superlative(const shapes_scene *s, int k, int d, int cls) {
    int m = s->h < s->w ? s->h : s->w, rivals = 0;
    const shapes_object *t = &s->obj[k];
    for (int j = 0; j < s->n; j++) {
        const shapes_object *o = &s->obj[j];
        if (j == k || (cls >= 0 && o->cls != cls)) continue;
        rivals++;
        int ok;
        switch (d) {
        case 0: ok = 1.6 * t->area <= o->area; break;
        case 1: ok = t->area >= 1.6 * o->area; break;
        case 2: ok = t->cx <= o->cx - 0.12 * m; break;
        case 3: ok = t->cx >= o->cx + 0.12 * m; break;
        case 4: ok = t->cy <= o->cy - 0.12 * m; break;
        default: ok = t->cy >= o->cy + 0.12 * m; break;
        }
        if (!ok) return 0;
    }
    return rivals > 0;
}

/* Relation rel (0 left of, 1 right of, 2 above, 3 below) of t to anchor a:
 * strict (the target's) or loose (what a rival must not satisfy). */
static const char *const k_rel[4] = {"left of", "right of", "above", "below"};
static int relation(const shapes_object *t, const shapes_object *a, int rel, int strict, int m) {
    double dx = t->cx - a->cx, dy = t->cy - a->cy;
    double along = rel == 0 ? -dx : rel == 1 ? dx : rel == 2 ? -dy : dy;
    double across = rel < 2 ? fabs(dy) : fabs(dx);
    if (!strict) return along > 0;
    return along >= 0.1 * m && along >= across;
}

static int shapes_expressions_fam(const shapes_scene *s, int k, char out[][SHAPES_EXPR_LEN], int *fam, int max) {
    const shapes_object *t = &s->obj[k];
    int n = 0, m = s->h < s->w ? s->h : s->w;
    if (t->crowd) return 0;
    const char *sz = t->big ? "large" : "small", *cl = k_class[t->cls], *co = k_colour[t->col];
#define EMIT(f, ...)                                                  \
    do {                                                              \
        if (n < max) {                                                \
            snprintf(out[n], SHAPES_EXPR_LEN, __VA_ARGS__);           \
            if (fam) fam[n] = (f);                                    \
            n++;                                                      \
        }                                                             \
    } while (0)
    if (count_attr(s, t->cls, t->col, t->big) == 1) EMIT(FAM_ATTR, "%s %s %s", sz, co, cl);
    if (count_attr(s, t->cls, t->col, -1) == 1) EMIT(FAM_ATTR, "%s %s", co, cl);
    if (count_attr(s, t->cls, -1, t->big) == 1) EMIT(FAM_ATTR, "%s %s", sz, cl);
    if (count_attr(s, t->cls, -1, -1) == 1) EMIT(FAM_ATTR, "%s", cl);
    if (count_attr(s, -1, t->col, -1) == 1) EMIT(FAM_ATTR, "%s shape", co);
    if (count_attr(s, -1, t->col, t->big) == 1) EMIT(FAM_ATTR, "%s %s shape", sz, co);
    for (int d = 0; d < 6; d++)
        if (superlative(s, k, d, -1)) EMIT(FAM_SUPER, "%s shape", k_super[d]);
    for (int d = 0; d < 6; d++)
        if (superlative(s, k, d, t->cls)) EMIT(FAM_CLASS_SUPER, "%s %s", k_super[d], cl);
    for (int a = 0; a < s->n; a++) {
        const shapes_object *A = &s->obj[a];
        if (a == k || A->crowd || count_attr(s, A->cls, A->col, -1) != 1) continue;
        for (int rel = 0; rel < 4; rel++) {
            if (!relation(t, A, rel, 1, m)) continue;
            int rival = 0;
            for (int j = 0; j < s->n && !rival; j++)
                if (j != k && j != a && s->obj[j].cls == t->cls && relation(&s->obj[j], A, rel, 0, m)) rival = 1;
            if (!rival) EMIT(FAM_REL, "%s %s the %s %s", cl, k_rel[rel], k_colour[A->col], k_class[A->cls]);
        }
    }
#undef EMIT
    return n;
}

int shapes_expressions(const shapes_scene *s, int k, char out[][SHAPES_EXPR_LEN], int max) {
    if (k < 0 || k >= s->n) return 0;
    return shapes_expressions_fam(s, k, out, NULL, max);
}

/* Up to 3 of the n expressions: kinds in a random order first, then the rest;
 * 2 or 3 kept (1 if only one). pick[] gets indices; returns the count. */
static int choose_sentences(ar_rng *r, const int *fam, int n, int *pick) {
    if (n <= 0) return 0;
    int order[SHAPES_MAX_EXPR], used[SHAPES_MAX_EXPR] = {0}, famord[N_FAM] = {0, 1, 2, 3};
    for (int i = 0; i < n; i++) order[i] = i;
    rng_shuffle_int(r, order, (size_t)n);
    rng_shuffle_int(r, famord, N_FAM);
    int want = 2 + (int)rng_below(r, 2), got = 0;
    if (want > n) want = n;
    for (int f = 0; f < N_FAM && got < want; f++)
        for (int i = 0; i < n; i++)
            if (fam[order[i]] == famord[f]) {
                pick[got++] = order[i];
                used[order[i]] = 1;
                break;
            }
    for (int i = 0; i < n && got < want; i++)
        if (!used[order[i]]) pick[got++] = order[i], used[order[i]] = 1;
    return got;
}

/* ------------------------------------------------------------------------ */
/* videos and their sounds                                                  */
/* ------------------------------------------------------------------------ */
void shapes_video_free(shapes_video *v) {
    if (!v) return;
    for (int f = 0; f < SHAPES_FRAMES; f++) shapes_scene_free(&v->frame[f]);
}

static void synth_tone(ar_rng *r, int cls, int16_t *pcm) {
    static const double f0[SHAPES_CLASSES] = {262, 196, 330, 440, 880};
    double f = f0[cls] * (1 + urange(r, -0.03, 0.03)), ph0 = urange(r, 0, 2 * PI);
    const int N = SHAPES_AUDIO_SAMPLES, fade = SHAPES_AUDIO_RATE / 50;
    for (int i = 0; i < N; i++) {
        double t = (double)i / SHAPES_AUDIO_RATE, w = 2 * PI * f * t + ph0, v = 0;
        switch (cls) {
        case CIRCLE: v = sin(w); break;
        case SQUARE:
            for (int k = 1; k <= 9; k += 2) v += sin(k * w) / k;
            v *= 0.9;
            break;
        case TRIANGLE:
            for (int k = 1; k <= 9; k += 2) v += ((k / 2) % 2 ? -1.0 : 1.0) * sin(k * w) / (k * k);
            v *= 1.2;
            break;
        case DIAMOND: v = 0.5 * (sin(w) + sin(w * 1.26)); break;
        default: v = fmod(t * 6.0, 1.0) < 0.5 ? sin(w) : 0.0; break;
        }
        double env = i < fade ? (double)i / fade : i >= N - fade ? (double)(N - 1 - i) / fade : 1.0;
        double x = 0.35 * env * v + urange(r, -0.01, 0.01);
        pcm[i] = (int16_t)lround(fmax(-1.0, fmin(1.0, x)) * 32767.0);
    }
}

int shapes_video_make(const shapes_cfg *c, int v, shapes_video *out) {
    memset(out, 0, sizeof *out);
    if (v < 0 || v >= shapes_n_videos(c)) return ar_errorf("shapes: video %d out of range", v);
    ar_rng r;
    rng_seed(&r, rng_derive(c->seed, STREAM_VIDEO + (uint64_t)v));
    int h, w;
    draw_side(&r, c, &h);
    draw_side(&r, c, &w);
    int m = h < w ? h : w;
    placer p[SHAPES_FRAMES];
    int np = 0;
    for (; np < SHAPES_FRAMES; np++)
        if (placer_init(&p[np], h, w)) goto fail;
    int classes[SHAPES_CLASSES] = {0, 1, 2, 3, 4};
    rng_shuffle_int(&r, classes, SHAPES_CLASSES);
    int want = 2 + (int)rng_below(&r, 2), n = 0;
    for (int f = 0; f < SHAPES_FRAMES; f++) out->frame[f].h = h, out->frame[f].w = w;
    for (int attempt = 0; n < want && attempt < 80 * want; attempt++) {
        shapes_object o[SHAPES_FRAMES];
        double sc, rot;
        draw_shape(&r, m, classes[n], &o[0], &sc, &rot);
        double cx = urange(&r, sc, w - sc), cy = urange(&r, sc, h - sc);
        double vx = urange(&r, -2.5, 2.5), vy = urange(&r, -2.5, 2.5);
        int ok = 1, made = 0;
        for (int f = 0; f < SHAPES_FRAMES && ok; f++) {
            if (f) o[f] = o[0], memset(&o[f].mask, 0, sizeof o[f].mask);
            o[f].nv = shape_polygon(o[f].cls, cx + f * vx, cy + f * vy, sc, rot, o[f].xy);
            if (!inside(o[f].xy, o[f].nv, h, w)) { ok = 0; break; }
            if (object_from_polygon(&o[f], h, w)) {
                for (int g = 0; g < made; g++) rle_free(&o[g].mask);
                goto fail;
            }
            made++;
            int chk = o[f].area > 0 ? placer_check(&p[f], &o[f].mask) : 0;
            if (chk < 0) {
                for (int g = 0; g < made; g++) rle_free(&o[g].mask);
                goto fail;
            }
            ok = chk;
        }
        if (!ok) {
            for (int g = 0; g < made; g++) rle_free(&o[g].mask);
            continue;
        }
        for (int f = 0; f < SHAPES_FRAMES; f++) {
            placer_check(&p[f], &o[f].mask);   /* p->tmp = this mask again */
            placer_commit(&p[f], o[f].area);
            out->frame[f].obj[n] = o[f];
            out->frame[f].n = n + 1;
        }
        n++;
    }
    if (n < 2) {
        ar_errorf("shapes: video %d: could not place two shapes", v);
        goto fail;
    }
    out->sounding = (int)rng_below(&r, (uint64_t)n);
    out->cls = out->frame[0].obj[out->sounding].cls;
    uint8_t *bg = malloc((size_t)h * w * 3);
    if (!bg) { ar_errorf("shapes: out of memory"); goto fail; }
    render_background(&r, bg, h, w);
    for (int f = 0; f < SHAPES_FRAMES; f++) {
        shapes_scene *s = &out->frame[f];
        s->px = malloc((size_t)h * w * 3);
        if (!s->px) { free(bg); ar_errorf("shapes: out of memory"); goto fail; }
        memcpy(s->px, bg, (size_t)h * w * 3);
        for (int k = 0; k < s->n; k++)
            if (paint(&r, s->px, p[0].tmp, &s->obj[k])) { free(bg); goto fail; }
    }
    free(bg);
    synth_tone(&r, out->cls, out->pcm);
    for (int f = 0; f < np; f++) placer_free(&p[f]);
    return 0;
fail:
    for (int f = 0; f < np; f++) placer_free(&p[f]);
    shapes_video_free(out);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* byte buffers, files                                                      */
/* ------------------------------------------------------------------------ */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) { b->oom = 1; return; }
        b->p = np, b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_byte(sbuf *b, int c) {
    char ch = (char)c;
    sb_put(b, &ch, 1);
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) { b->oom = 1; return; }
    if ((size_t)n < sizeof tmp) { sb_put(b, tmp, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->oom = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}
/* A JSON string: '"' and '\\' escaped, control characters as \n, \t or
 * \u00XX; other bytes (UTF-8) as they are. */
static void sb_json(sbuf *b, const char *s) {
    sb_byte(b, '"');
    for (const unsigned char *q = (const unsigned char *)s; *q; q++) {
        if (*q == '"' || *q == '\\') sb_byte(b, '\\'), sb_byte(b, *q);
        else if (*q == '\n') sb_str(b, "\\n");
        else if (*q == '\t') sb_str(b, "\\t");
        else if (*q < 0x20) sb_printf(b, "\\u%04x", *q);
        else sb_byte(b, *q);
    }
    sb_byte(b, '"');
}
static void sb_free(sbuf *b) { free(b->p), memset(b, 0, sizeof *b); }

typedef struct {
    const char *dir;
    shapes_stats *st;
} writer;

/* Writes dir/rel (directories made); no fsync (see data/shapes.h). */
static int write_bytes(writer *wr, const char *rel, const void *d, size_t n) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", wr->dir, rel) >= (int)sizeof path)
        return ar_errorf("shapes: path too long: %s/%s", wr->dir, rel);
    if (ar_mkdir_parent(path) < 0) return -1;
    FILE *f = fopen(path, "wb");
    if (!f) return ar_errorf("%s: cannot create: %s", path, strerror(errno));
    int bad = fwrite(d, 1, n, f) != n || fflush(f) != 0;
    if (fclose(f) != 0 || bad) return ar_errorf("%s: write error: %s", path, strerror(errno));
    wr->st->files++;
    wr->st->bytes += (double)n;
    return 0;
}
static int write_sb(writer *wr, const char *rel, const sbuf *b) {
    if (b->oom) return ar_errorf("shapes: %s: out of memory", rel);
    return write_bytes(wr, rel, b->p ? b->p : "", b->n);
}
static int write_png(writer *wr, const char *rel, const uint8_t *px, int h, int w, int c) {
    uint8_t *buf;
    size_t n;
    if (image_encode_png(px, h, w, c, &buf, &n) < 0) return ar_error_prefix("%s: ", rel);
    int rc = write_bytes(wr, rel, buf, n);
    free(buf);
    return rc;
}
static int write_jpeg(writer *wr, const char *rel, const uint8_t *px, int h, int w, int q) {
    uint8_t *buf;
    size_t n;
    if (image_encode_jpeg(px, h, w, 3, q, &buf, &n) < 0) return ar_error_prefix("%s: ", rel);
    int rc = write_bytes(wr, rel, buf, n);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* a protocol-2 pickler for lists, dicts, ints and str                      */
/* ------------------------------------------------------------------------ */
#define PK_BATCH 1000   /* Python's pickler writes APPENDS / SETITEMS in batches of 1000 */
static void pk_int(sbuf *b, int64_t v) {
    if (v >= 0 && v <= 0xff) {
        sb_byte(b, 'K'), sb_byte(b, (int)v);               /* BININT1 */
    } else if (v >= 0 && v <= 0xffff) {
        sb_byte(b, 'M'), sb_byte(b, (int)(v & 0xff)), sb_byte(b, (int)(v >> 8));   /* BININT2 */
    } else {
        uint32_t u = (uint32_t)(int32_t)v;                /* BININT: ids here fit 32 bits */
        sb_byte(b, 'J');
        for (int k = 0; k < 4; k++) sb_byte(b, (int)((u >> (8 * k)) & 0xff));
    }
}
static void pk_str(sbuf *b, const char *s) {   /* BINUNICODE: u32 length + UTF-8 */
    uint32_t n = (uint32_t)strlen(s);
    sb_byte(b, 'X');
    for (int k = 0; k < 4; k++) sb_byte(b, (int)((n >> (8 * k)) & 0xff));
    sb_put(b, s, n);
}
/* Items already pickled (item i = bytes[off[i] .. off[i+1])) into a list. */
static void pk_list(sbuf *b, const sbuf *items, const size_t *off, size_t n) {
    sb_byte(b, ']');                                     /* EMPTY_LIST */
    for (size_t i = 0; i < n; i += PK_BATCH) {
        size_t m = n - i < PK_BATCH ? n - i : PK_BATCH;
        if (m > 1) sb_byte(b, '(');                      /* MARK */
        sb_put(b, items->p + off[i], off[i + m] - off[i]);
        sb_byte(b, m > 1 ? 'e' : 'a');                   /* APPENDS / APPEND */
    }
}
static void pk_str_list(sbuf *b, const char *const *s, int n) {
    sb_byte(b, ']');
    if (n > 1) sb_byte(b, '(');
    for (int i = 0; i < n; i++) pk_str(b, s[i]);
    if (n) sb_byte(b, n > 1 ? 'e' : 'a');
}

/* ------------------------------------------------------------------------ */
/* the tokenizer                                                            */
/* ------------------------------------------------------------------------ */
static const char *const k_words[] = {
    /* the world */
    "the", "a", "circle", "square", "triangle", "diamond", "star", "red", "green", "blue", "yellow", "purple",
    "white", "small", "large", "shape", "left", "right", "of", "above", "below", "smallest", "largest",
    "leftmost", "rightmost", "highest", "lowest",
    /* SPEC 2.4 templates (data/samples.h) and the conversation roles */
    "Can", "you", "segment", "in", "this", "image", "It", "is", "it", "provide", "description", "region",
    "object", "with", "following", "audio", "USER", "ASSISTANT",
    /* llava_v1's system prompt (data/conversation.c) */
    "You", "are", "LLaVA", "large", "language", "and", "vision", "assistant", "trained", "by", "UW", "Madison",
    "WAIV", "Lab", "able", "to", "understand", "visual", "content", "that", "user", "provides", "assist",
    "variety", "tasks", "using", "natural", "Follow", "instructions", "carefully", "explain", "your", "answers",
    "detail"};

#define WS "\xE2\x96\x81"   /* U+2581 */

static int write_tokenizer(writer *wr) {
    enum { MAXP = 1024 };
    static char piece[MAXP][48];
    static int mleft[MAXP], mright[MAXP];
    int np = 0, nm = 0;
    strcpy(piece[np++], "<unk>");
    strcpy(piece[np++], "<s>");
    strcpy(piece[np++], "</s>");
    strcpy(piece[np++], WS);
    strcpy(piece[np++], "\n");
    for (int ch = 0x21; ch < 0x7f; ch++) piece[np][0] = (char)ch, piece[np][1] = 0, np++;
    for (size_t wi = 0; wi < sizeof k_words / sizeof k_words[0]; wi++) {
        const char *wd = k_words[wi];
        size_t L = strlen(wd);
        for (size_t k = 1; k <= L; k++) {
            char p[48], left[48], right[2] = {wd[k - 1], 0};
            snprintf(p, sizeof p, WS "%.*s", (int)k, wd);
            snprintf(left, sizeof left, WS "%.*s", (int)(k - 1), wd);
            int have = 0;
            for (int j = 0; j < np && !have; j++) have = !strcmp(piece[j], p);
            if (have) continue;
            if (np >= MAXP) return ar_errorf("shapes: tokenizer: too many pieces");
            int li = -1, ri = -1;
            for (int j = 0; j < np; j++) {
                if (!strcmp(piece[j], left)) li = j;
                if (!strcmp(piece[j], right)) ri = j;
            }
            if (li < 0 || ri < 0) return ar_errorf("shapes: tokenizer: no piece for '%s'", p);
            strcpy(piece[np], p);
            mleft[nm] = li, mright[nm] = ri, nm++;
            np++;
        }
    }
    sbuf b = {0};
    sb_str(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [\n");
    for (int i = 0; i < 3; i++)
        sb_printf(&b,
                  "    {\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                  "\"normalized\": false, \"special\": true}%s\n",
                  i, piece[i], i < 2 ? "," : "");
    sb_str(&b, "  ],\n"
               "  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"" WS
               "\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"" WS "\"}]},\n"
               "  \"pre_tokenizer\": null,\n"
               "  \"post_processor\": null,\n"
               "  \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": "
               "\"" WS "\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": "
               "\"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},\n"
               "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": \"<unk>\",\n"
               "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": true,\n"
               "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n    \"vocab\": {\n");
    for (int i = 0; i < np; i++) {
        sb_str(&b, "      ");
        sb_json(&b, piece[i]);
        sb_printf(&b, ": %d%s\n", i, i + 1 < np ? "," : "");
    }
    sb_str(&b, "    },\n    \"merges\": [\n");
    for (int i = 0; i < nm; i++) {
        sb_str(&b, "      [");
        sb_json(&b, piece[mleft[i]]);
        sb_str(&b, ", ");
        sb_json(&b, piece[mright[i]]);
        sb_printf(&b, "]%s\n", i + 1 < nm ? "," : "");
    }
    sb_str(&b, "    ]\n  }\n}\n");
    int rc = write_sb(wr, "tokenizer.json", &b);
    sb_free(&b);
    wr->st->vocab = np;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* WAV                                                                      */
/* ------------------------------------------------------------------------ */
static void le(uint8_t *p, uint32_t v, int n) {
    for (int k = 0; k < n; k++) p[k] = (uint8_t)(v >> (8 * k));
}
static int write_wav(writer *wr, const char *rel, const int16_t *pcm, int n) {
    size_t bytes = 44 + 2 * (size_t)n;
    uint8_t *b = malloc(bytes);
    if (!b) return ar_errorf("shapes: out of memory");
    memcpy(b, "RIFF", 4), le(b + 4, (uint32_t)(bytes - 8), 4), memcpy(b + 8, "WAVEfmt ", 8);
    le(b + 16, 16, 4), le(b + 20, 1, 2), le(b + 22, 1, 2), le(b + 24, SHAPES_AUDIO_RATE, 4);
    le(b + 28, 2 * SHAPES_AUDIO_RATE, 4), le(b + 32, 2, 2), le(b + 34, 16, 2);
    memcpy(b + 36, "data", 4), le(b + 40, (uint32_t)(2 * n), 4);
    for (int i = 0; i < n; i++) le(b + 44 + 2 * i, (uint16_t)pcm[i], 2);
    int rc = write_bytes(wr, rel, b, bytes);
    free(b);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the REFER / COCO part                                                    */
/* ------------------------------------------------------------------------ */
#define IMG_DIR "refer_seg/images/mscoco/images/train2014"

static void json_polygon(sbuf *b, const double *xy, int nv) {
    sb_byte(b, '[');
    for (int k = 0; k < 2 * nv; k++) sb_printf(b, "%s%.2f", k ? "," : "", xy[k]);
    sb_byte(b, ']');
}

typedef struct {
    sbuf images, anns, refitems, jsonl;
    size_t *ref_off;           /* offsets of the pickled refs in refitems */
    size_t n_refs, cap_refs;
    int64_t next_ann, next_ref, next_sent;
    int64_t *first_ann;        /* per image: the id of its first annotation */
} world;

static int add_ref_offset(world *W) {
    if (W->n_refs + 2 > W->cap_refs) {
        size_t cap = W->cap_refs ? 2 * W->cap_refs : 1024;
        size_t *n = realloc(W->ref_off, cap * sizeof *n);
        if (!n) return ar_errorf("shapes: out of memory");
        W->ref_off = n, W->cap_refs = cap;
    }
    return 0;
}

/* Image i: the JPEG, its COCO records and its refs. */
static int emit_image(writer *wr, const shapes_cfg *c, world *W, int i) {
    shapes_scene s;
    if (shapes_scene_make(c, i, &s)) return -1;
    int64_t image_id = i + 1;
    int split = image_split_index(c, i);
    char rel[256];
    snprintf(rel, sizeof rel, IMG_DIR "/COCO_train2014_%012lld.jpg", (long long)image_id);
    if (write_jpeg(wr, rel, s.px, s.h, s.w, c->jpeg_quality)) goto fail;
    wr->st->images[split]++;
    sb_printf(&W->images, "%s\n    {\"id\": %lld, \"file_name\": \"COCO_train2014_%012lld.jpg\", \"height\": %d, \"width\": %d}",
              i ? "," : "", (long long)image_id, (long long)image_id, s.h, s.w);
    W->first_ann[i] = W->next_ann;
    ar_rng r;
    rng_seed(&r, rng_derive(c->seed, STREAM_REFS + (uint64_t)i));
    for (int k = 0; k < s.n; k++) {
        const shapes_object *o = &s.obj[k];
        int64_t ann_id = W->next_ann++;
        sb_printf(&W->anns, "%s\n    {\"id\": %lld, \"image_id\": %lld, \"category_id\": %d, \"iscrowd\": %d, "
                            "\"area\": %u, \"bbox\": [%.2f, %.2f, %.2f, %.2f], \"segmentation\": ",
                  ann_id > 1 ? "," : "", (long long)ann_id, (long long)image_id, o->cls + 1, o->crowd, o->area,
                  o->bbox[0], o->bbox[1], o->bbox[2], o->bbox[3]);
        if (o->crowd) {
            sb_printf(&W->anns, "{\"size\": [%d, %d], \"counts\": [", s.h, s.w);
            for (size_t q = 0; q < o->mask.m; q++) sb_printf(&W->anns, "%s%u", q ? ", " : "", o->mask.cnts[q]);
            sb_str(&W->anns, "]}}");
            wr->st->crowds++;
        } else {
            sb_byte(&W->anns, '[');
            json_polygon(&W->anns, o->xy, o->nv);
            sb_str(&W->anns, "]}");
        }
        wr->st->anns++;
        if (o->crowd) continue;
        char ex[SHAPES_MAX_EXPR][SHAPES_EXPR_LEN];
        int fam[SHAPES_MAX_EXPR], pick[3];
        int ne = shapes_expressions_fam(&s, k, ex, fam, SHAPES_MAX_EXPR);
        int ns = choose_sentences(&r, fam, ne, pick);
        if (!ns) {
            wr->st->objects_without_ref++;
            continue;
        }
        /* one ref dict */
        if (add_ref_offset(W)) goto fail;
        sbuf *b = &W->refitems;
        W->ref_off[W->n_refs] = b->n;
        int64_t ref_id = W->next_ref++;
        char fname[96];
        snprintf(fname, sizeof fname, "COCO_train2014_%012lld_%lld.jpg", (long long)image_id, (long long)ref_id);
        sb_byte(b, '}');
        sb_byte(b, '(');
        pk_str(b, "image_id"), pk_int(b, image_id);
        pk_str(b, "split"), pk_str(b, k_split[split]);
        pk_str(b, "sentences");
        sb_byte(b, ']');
        if (ns > 1) sb_byte(b, '(');
        int64_t sid0 = W->next_sent;
        for (int q = 0; q < ns; q++) {
            const char *sent = ex[pick[q]];
            char raw[SHAPES_EXPR_LEN], words[SHAPES_EXPR_LEN];
            const char *tok[16];
            int nt = 0;
            snprintf(raw, sizeof raw, "%s", sent);
            raw[0] = (char)(raw[0] - 'a' + 'A');   /* "Large red circle" */
            snprintf(words, sizeof words, "%s", sent);
            for (char *t = strtok(words, " "); t && nt < 16; t = strtok(NULL, " ")) tok[nt++] = t;
            sb_byte(b, '}');
            sb_byte(b, '(');
            pk_str(b, "tokens"), pk_str_list(b, tok, nt);
            pk_str(b, "raw"), pk_str(b, raw);
            pk_str(b, "sent_id"), pk_int(b, W->next_sent++);
            pk_str(b, "sent"), pk_str(b, sent);
            sb_byte(b, 'u');
        }
        if (ns) sb_byte(b, ns > 1 ? 'e' : 'a');
        pk_str(b, "file_name"), pk_str(b, fname);
        pk_str(b, "category_id"), pk_int(b, o->cls + 1);
        pk_str(b, "ann_id"), pk_int(b, ann_id);
        pk_str(b, "sent_ids");
        sb_byte(b, ']');
        if (ns > 1) sb_byte(b, '(');
        for (int q = 0; q < ns; q++) pk_int(b, sid0 + q);
        sb_byte(b, ns > 1 ? 'e' : 'a');
        pk_str(b, "ref_id"), pk_int(b, ref_id);
        sb_byte(b, 'u');
        W->n_refs++;
        W->ref_off[W->n_refs] = b->n;
        wr->st->refs[split]++;
        wr->st->sents[split] += ns;
    }
    shapes_scene_free(&s);
    return 0;
fail:
    shapes_scene_free(&s);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* custom JSON lines                                                        */
/* ------------------------------------------------------------------------ */
static void jsonl_head(sbuf *b, const char *id, int64_t image_id, const char *split) {
    sb_printf(b, "{\"id\": \"%s\", \"split\": \"%s\", \"image\": \"../" IMG_DIR "/COCO_train2014_%012lld.jpg\"", id,
              split, (long long)image_id);
}
static void jsonl_box(sbuf *b, const shapes_object *o) {
    sb_printf(b, ", \"box\": [%.2f, %.2f, %.2f, %.2f]", o->bbox[0], o->bbox[1], r2(o->bbox[0] + o->bbox[2]),
              r2(o->bbox[1] + o->bbox[3]));
}
static void jsonl_poly(sbuf *b, const shapes_object *o) {
    sb_str(b, ", \"polygon\": [");
    json_polygon(b, o->xy, o->nv);
    sb_byte(b, ']');
}

/* Image i's records (train / val images only). */
static int emit_jsonl(writer *wr, const shapes_cfg *c, world *W, int i) {
    int split = image_split_index(c, i);
    const char *sp = k_split[split];
    shapes_scene s, d;
    memset(&d, 0, sizeof d);
    if (shapes_scene_make(c, i, &s)) return -1;
    ar_rng r;
    rng_seed(&r, rng_derive(c->seed, STREAM_JSONL + (uint64_t)i));
    int64_t image_id = i + 1;
    sbuf *b = &W->jsonl;
    char id[64];
    for (int k = 0; k < s.n; k++) {
        const shapes_object *o = &s.obj[k];
        if (o->crowd) continue;
        int64_t ann = W->first_ann[i] + k;
        snprintf(id, sizeof id, "box-%lld", (long long)ann);
        jsonl_head(b, id, image_id, sp);
        jsonl_box(b, o);
        jsonl_poly(b, o);
        sb_printf(b, ", \"expression\": \"%s %s\"}\n", k_colour[o->col], k_class[o->cls]);
        snprintf(id, sizeof id, "caption-%lld", (long long)ann);
        jsonl_head(b, id, image_id, sp);
        jsonl_box(b, o);
        sb_printf(b, ", \"template\": \"caption\", \"expression\": \"a %s %s %s\"}\n", o->big ? "large" : "small",
                  k_colour[o->col], k_class[o->cls]);
        wr->st->jsonl_box++;
        wr->st->jsonl_caption++;
    }
    /* one image-crop reference: an object whose class is unique here, and a
     * donor of that class from another image of the split */
    int cand[SHAPES_MAX_OBJ], nc = 0;
    for (int k = 0; k < s.n; k++)
        if (!s.obj[k].crowd && count_attr(&s, s.obj[k].cls, -1, -1) == 1) cand[nc++] = k;
    if (nc) {
        int k = cand[rng_below(&r, (uint64_t)nc)];
        const shapes_object *o = &s.obj[k];
        int lo = split == 0 ? 0 : c->n_train, n = split == 0 ? c->n_train : c->n_val;
        int start = (int)rng_below(&r, (uint64_t)n);
        for (int t = 0; t < n; t++) {
            int j = lo + (start + t) % n;
            if (j == i) continue;
            if (shapes_scene_make(c, j, &d)) goto fail;
            int dk = -1;
            for (int q = 0; q < d.n && dk < 0; q++)
                if (!d.obj[q].crowd && d.obj[q].cls == o->cls) dk = q;
            if (dk < 0) {
                shapes_scene_free(&d);
                continue;
            }
            const double *bb = d.obj[dk].bbox;
            int x0 = (int)floor(bb[0]) - 2, y0 = (int)floor(bb[1]) - 2;
            int x1 = (int)ceil(bb[0] + bb[2]) + 2, y1 = (int)ceil(bb[1] + bb[3]) + 2;
            x0 = x0 < 0 ? 0 : x0, y0 = y0 < 0 ? 0 : y0, x1 = x1 > d.w ? d.w : x1, y1 = y1 > d.h ? d.h : y1;
            int ch = y1 - y0, cw = x1 - x0;
            uint8_t *crop = malloc((size_t)ch * cw * 3);
            if (!crop) { ar_errorf("shapes: out of memory"); goto fail; }
            for (int y = 0; y < ch; y++) memcpy(crop + (size_t)y * cw * 3, d.px + ((size_t)(y0 + y) * d.w + x0) * 3, (size_t)cw * 3);
            int64_t ann = W->first_ann[i] + k;
            char rel[128];
            snprintf(rel, sizeof rel, "custom/crops/crop_%06lld.png", (long long)ann);
            int rc = write_png(wr, rel, crop, ch, cw, 3);
            free(crop);
            if (rc) goto fail;
            snprintf(id, sizeof id, "crop-%lld", (long long)ann);
            jsonl_head(b, id, image_id, sp);
            sb_printf(b, ", \"ref_image\": \"crops/crop_%06lld.png\"", (long long)ann);
            jsonl_poly(b, o);
            sb_printf(b, ", \"expression\": \"%s\"}\n", k_class[o->cls]);
            wr->st->jsonl_crop++;
            shapes_scene_free(&d);
            break;
        }
    }
    shapes_scene_free(&s);
    return 0;
fail:
    shapes_scene_free(&s);
    shapes_scene_free(&d);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* AVSBench S4                                                              */
/* ------------------------------------------------------------------------ */
static int emit_video(writer *wr, const shapes_cfg *c, sbuf *csv, int v) {
    shapes_video *V = malloc(sizeof *V);
    if (!V) return ar_errorf("shapes: out of memory");
    if (shapes_video_make(c, v, V)) { free(V); return -1; }
    int split = video_split_index(c, v);
    const char *sp = k_vsplit[split], *cat = k_avs_cat[V->cls];
    char name[32], rel[256];
    snprintf(name, sizeof name, "sv%04d", v);
    sb_printf(csv, "%s,%s,%s\n", name, cat, sp);
    int h = V->frame[0].h, w = V->frame[0].w, rc = 0;
    uint8_t *m = malloc((size_t)h * w);
    if (!m) { rc = ar_errorf("shapes: out of memory"); goto done; }
    for (int f = 0; f < SHAPES_FRAMES && !rc; f++) {
        snprintf(rel, sizeof rel, "avsbench/s4_data/visual_frames/%s/%s/%s/%s_%d.png", sp, cat, name, name, f + 1);
        rc = write_png(wr, rel, V->frame[f].px, h, w, 3);
        if (rc || (split == 0 && f > 0)) continue;   /* train: frame 1's mask only */
        if (rle_decode_hw(&V->frame[f].obj[V->sounding].mask, m) < 0) { rc = -1; break; }
        for (size_t q = 0; q < (size_t)h * w; q++) m[q] = m[q] ? 255 : 0;
        snprintf(rel, sizeof rel, "avsbench/s4_data/gt_masks/%s/%s/%s/%s_%d.png", sp, cat, name, name, f + 1);
        rc = write_png(wr, rel, m, h, w, 1);
    }
    if (!rc) {
        snprintf(rel, sizeof rel, "avsbench/s4_data/audio_wav/%s/%s/%s.wav", sp, cat, name);
        rc = write_wav(wr, rel, V->pcm, SHAPES_AUDIO_SAMPLES);
    }
    if (!rc) wr->st->videos[split]++;
done:
    free(m);
    shapes_video_free(V);
    free(V);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the whole world                                                          */
/* ------------------------------------------------------------------------ */
static void describe(sbuf *b, const shapes_cfg *c, const shapes_stats *st, int json) {
    if (json) {
        sb_printf(b,
                  "{\"generator\": \"anyref data shapes\", \"seed\": %llu, \"min_side\": %d, \"max_side\": %d, "
                  "\"crowd_p\": %.3f, \"jpeg_quality\": %d,\n"
                  " \"images\": {\"train\": %d, \"val\": %d, \"testA\": %d, \"testB\": %d},\n"
                  " \"refs\": {\"train\": %d, \"val\": %d, \"testA\": %d, \"testB\": %d},\n"
                  " \"sentences\": {\"train\": %d, \"val\": %d, \"testA\": %d, \"testB\": %d},\n"
                  " \"annotations\": %d, \"crowd_annotations\": %d, \"objects_without_ref\": %d,\n"
                  " \"videos\": {\"train\": %d, \"val\": %d, \"test\": %d},\n"
                  " \"jsonl\": {\"box\": %d, \"caption\": %d, \"crop\": %d}, \"vocab\": %d,\n"
                  " \"refer_root\": \"refer_seg\", \"refer_dataset\": \"refcoco\", \"image_root\": \"refer_seg\",\n"
                  " \"avsbench_root\": \"avsbench\", \"jsonl\": \"custom/shapes.jsonl\", \"tokenizer\": \"tokenizer.json\"}\n",
                  (unsigned long long)c->seed, c->min_side, c->max_side, c->crowd_p, c->jpeg_quality, st->images[0],
                  st->images[1], st->images[2], st->images[3], st->refs[0], st->refs[1], st->refs[2], st->refs[3],
                  st->sents[0], st->sents[1], st->sents[2], st->sents[3], st->anns, st->crowds,
                  st->objects_without_ref, st->videos[0], st->videos[1], st->videos[2], st->jsonl_box,
                  st->jsonl_caption, st->jsonl_crop, st->vocab);
        return;
    }
    sb_printf(b,
              "# The shapes world (anyref data shapes, seed %llu)\n\n"
              "A synthetic referring data set in the real file formats; see data/shapes.h for\n"
              "how it is drawn. Everything here is a pure function of the seed and the counts.\n\n"
              "| path | what | read by |\n|---|---|---|\n"
              "| `refer_seg/refcoco/instances.json` | COCO: %d images, %d annotations (%d crowd RLEs), 5 categories | data/coco.h |\n"
              "| `refer_seg/refcoco/refs(unc).p` | REFER refs, pickle protocol 2: train %d / val %d / testA %d / testB %d refs, %d sentences | data/refer.h, data/refer_samples.h |\n"
              "| `refer_seg/images/mscoco/images/train2014/` | the JPEG images (sides %d..%d) | refer_join_load(\"refer_seg\", \"refcoco\", NULL, split, \"refer_seg\", REFER_IMAGES_REFER) |\n"
              "| `avsbench/` | AVSBench S4: s4_meta_data.csv, 5 PNG frames per video, PNG masks, 16 kHz WAV; train %d / val %d / test %d videos | data/avsbench.h (avs_load(\"avsbench\", \"s4\", split, NULL)) |\n"
              "| `custom/shapes.jsonl` | %d box references, %d region captions, %d image-crop references (crops in custom/crops/) | data/custom_jsonl.h |\n"
              "| `tokenizer.json` | a %d-id BPE tokenizer (Hugging Face LLaMA layout) | data/tokenizer.h |\n"
              "| `shapes.json` | these parameters and counts, written last | |\n\n"
              "As config sources (data.kind = sources):\n\n"
              "    source.kind = refer     source.root = DIR/refer_seg  source.dataset = refcoco  source.images = DIR/refer_seg\n"
              "    source.kind = avsbench  source.root = DIR/avsbench   source.dataset = s4\n"
              "    source.kind = jsonl     source.file = DIR/custom/shapes.jsonl\n"
              "    data.tokenizer = DIR/tokenizer.json\n",
              (unsigned long long)c->seed, shapes_n_images(c), st->anns, st->crowds, st->refs[0], st->refs[1],
              st->refs[2], st->refs[3], st->sents[0] + st->sents[1] + st->sents[2] + st->sents[3], c->min_side,
              c->max_side, st->videos[0], st->videos[1], st->videos[2], st->jsonl_box, st->jsonl_caption,
              st->jsonl_crop, st->vocab);
}

static int check_cfg(const shapes_cfg *c) {
    if (c->n_train < 2 || c->n_val < 2 || c->n_testA < 1 || c->n_testB < 1)
        return ar_errorf("shapes: need at least 2 train, 2 val, 1 testA and 1 testB images");
    if (c->v_train < 1 || c->v_val < 1 || c->v_test < 1) return ar_errorf("shapes: need a video per split");
    if (c->min_side < 32 || c->max_side < c->min_side || c->max_side > 4096)
        return ar_errorf("shapes: image sides %d..%d (expected 32 <= min <= max <= 4096)", c->min_side, c->max_side);
    if (shapes_n_images(c) > 10000000) return ar_errorf("shapes: too many images");
    if (c->jpeg_quality < 1 || c->jpeg_quality > 100) return ar_errorf("shapes: jpeg quality %d", c->jpeg_quality);
    return 0;
}

int shapes_generate(const char *dir, const shapes_cfg *c, shapes_stats *st_out) {
    if (check_cfg(c)) return -1;
    double t0 = ar_now();
    shapes_stats st;
    memset(&st, 0, sizeof st);
    writer wr = {dir, &st};
    world W;
    memset(&W, 0, sizeof W);
    sbuf csv = {0}, out = {0};
    int N = shapes_n_images(c), rc = -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/shapes.json", dir);
    if (remove(path) != 0 && errno != ENOENT) {
        ar_errorf("%s: cannot remove: %s", path, strerror(errno));
        return -1;
    }
    W.first_ann = calloc((size_t)N, sizeof *W.first_ann);
    if (!W.first_ann) { ar_errorf("shapes: out of memory"); goto done; }
    W.next_ann = 1;
    for (int i = 0; i < N; i++)
        if (emit_image(&wr, c, &W, i)) goto done;
    /* instances.json */
    sb_printf(&out, "{\"info\": {\"description\": \"anyref shapes world (data/shapes.h)\", \"seed\": %llu},\n"
                    " \"images\": [", (unsigned long long)c->seed);
    sb_put(&out, W.images.p, W.images.n);
    sb_str(&out, "\n ],\n \"annotations\": [");
    sb_put(&out, W.anns.p, W.anns.n);
    sb_str(&out, "\n ],\n \"categories\": [");
    for (int k = 0; k < SHAPES_CLASSES; k++)
        sb_printf(&out, "%s\n    {\"id\": %d, \"name\": \"%s\", \"supercategory\": \"shape\"}", k ? "," : "", k + 1,
                  k_class[k]);
    sb_str(&out, "\n ]}\n");
    if (W.images.oom || W.anns.oom) { ar_errorf("shapes: out of memory"); goto done; }
    if (write_sb(&wr, "refer_seg/refcoco/instances.json", &out)) goto done;
    /* refs(unc).p */
    out.n = 0;
    if (add_ref_offset(&W)) goto done;
    W.ref_off[W.n_refs] = W.refitems.n;
    sb_byte(&out, 0x80), sb_byte(&out, 2);   /* PROTO 2 */
    pk_list(&out, &W.refitems, W.ref_off, W.n_refs);
    sb_byte(&out, '.');                      /* STOP */
    if (W.refitems.oom) { ar_errorf("shapes: out of memory"); goto done; }
    if (write_sb(&wr, "refer_seg/refcoco/refs(unc).p", &out)) goto done;
    /* custom JSON lines over train and val images */
    for (int i = 0; i < c->n_train + c->n_val; i++)
        if (emit_jsonl(&wr, c, &W, i)) goto done;
    if (write_sb(&wr, "custom/shapes.jsonl", &W.jsonl)) goto done;
    /* AVSBench S4 */
    sb_str(&csv, "name,category,split\n");
    for (int v = 0; v < shapes_n_videos(c); v++)
        if (emit_video(&wr, c, &csv, v)) goto done;
    if (write_sb(&wr, "avsbench/s4_meta_data.csv", &csv)) goto done;
    if (write_tokenizer(&wr)) goto done;
    out.n = 0;
    describe(&out, c, &st, 0);
    if (write_sb(&wr, "README.md", &out)) goto done;
    out.n = 0;
    describe(&out, c, &st, 1);
    if (write_sb(&wr, "shapes.json", &out)) goto done;
    st.seconds = ar_now() - t0;
    rc = 0;
done:
    sb_free(&W.images), sb_free(&W.anns), sb_free(&W.refitems), sb_free(&W.jsonl), sb_free(&csv), sb_free(&out);
    free(W.ref_off);
    free(W.first_ann);
    if (st_out) *st_out = st;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the command                                                              */
/* ------------------------------------------------------------------------ */
static int parse_ll(const char *s, long long lo, long long hi, long long *v) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (!s[0] || *end || errno || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

int shapes_main(int argc, char **argv) {
    static const char *usage =
        "usage: anyref data shapes --out DIR [--seed N] [--size tiny|small|medium] [--images N] [--videos N]\n";
    const char *out = NULL, *size = "small";
    long long seed = 1, images = -1, videos = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "anyref data shapes: %s '%s'\n%s", strncmp(a, "--", 2) ? "unknown argument" : "missing value after", a, usage);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--size")) size = v;
        else if (!strcmp(a, "--seed") && !parse_ll(v, 0, LLONG_MAX, &seed)) {}
        else if (!strcmp(a, "--images") && !parse_ll(v, 2, 1000000, &images)) {}
        else if (!strcmp(a, "--videos") && !parse_ll(v, 1, 100000, &videos)) {}
        else {
            fprintf(stderr, "anyref data shapes: bad argument '%s %s'\n%s", a, v, usage);
            return 2;
        }
    }
    if (!out) { fprintf(stderr, "anyref data shapes: --out DIR is required\n%s", usage); return 2; }
    shapes_cfg c;
    if (shapes_cfg_preset(&c, size)) { fprintf(stderr, "anyref data shapes: %s\n%s", ar_error(), usage); return 2; }
    c.seed = (uint64_t)seed;
    if (images > 0) {
        int n = (int)images;
        c.n_train = n;
        c.n_val = n / 5 > 2 ? n / 5 : 2;
        c.n_testA = c.n_testB = 2 * n / 15 > 2 ? 2 * n / 15 : 2;
    }
    if (videos > 0) {
        int n = (int)videos;
        c.v_train = n;
        c.v_val = c.v_test = n / 4 > 2 ? n / 4 : 2;
    }
    shapes_stats st;
    if (shapes_generate(out, &c, &st)) { log_error("%s", ar_error()); return 1; }
    log_info("shapes: %s: images %d/%d/%d/%d (train/val/testA/testB), %d anns (%d crowd), refs %d/%d/%d/%d, "
             "%d sentences, videos %d/%d/%d, jsonl %d box + %d caption + %d crop, vocab %d; %d files, %.1f MB, %.2f s",
             out, st.images[0], st.images[1], st.images[2], st.images[3], st.anns, st.crowds, st.refs[0], st.refs[1],
             st.refs[2], st.refs[3], st.sents[0] + st.sents[1] + st.sents[2] + st.sents[3], st.videos[0], st.videos[1],
             st.videos[2], st.jsonl_box, st.jsonl_caption, st.jsonl_crop, st.vocab, st.files, st.bytes / 1e6,
             st.seconds);
    return 0;
}
