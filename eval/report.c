/* eval/report.c — the loss plot, the examples grid and `anyref plot`
 * (see report.h). Depends on data/draw.h, core/json.h, core/error.h. */
#include "eval/report.h"

#include "core/error.h"
#include "core/json.h"
#include "data/draw.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ================= loss plot ================= */

typedef struct {
    const char *key, *label;
    uint32_t rgb;
    int points;   /* 1: validation points joined by a thin line; 0: a training curve */
    int right;    /* 1: the 0..1 right axis */
} series_def;

static const series_def SERIES[] = {
    {"loss", "loss", REPORT_RGB_LOSS, 0, 0},
    {"ce", "ce", REPORT_RGB_CE, 0, 0},
    {"bce", "bce", REPORT_RGB_BCE, 0, 0},
    {"dice", "dice", REPORT_RGB_DICE, 0, 0},
    {"val_loss", "val_loss", REPORT_RGB_VAL_LOSS, 1, 0},
    {"val_giou", "val_giou", REPORT_RGB_VAL_GIOU, 1, 1},
    {"val_ciou", "val_ciou", REPORT_RGB_VAL_CIOU, 1, 1},
    {"accuracy", "accuracy", REPORT_RGB_ACCURACY, 1, 1},
};
#define NSERIES ((int)(sizeof SERIES / sizeof *SERIES))

typedef struct {
    int n, cap;
    double *step;
    double *val[NSERIES];   /* NaN = absent */
    int present[NSERIES];
    int skipped;            /* lines that were not a usable object */
} metrics;

static void metrics_free(metrics *m) {
    free(m->step);
    for (int s = 0; s < NSERIES; s++) free(m->val[s]);
}

static int metrics_push(metrics *m, double step, const double *v) {
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 256;
        double *p = realloc(m->step, (size_t)cap * sizeof *p);
        if (!p) return ar_errorf("out of memory");
        m->step = p;
        for (int s = 0; s < NSERIES; s++) {
            if (!(p = realloc(m->val[s], (size_t)cap * sizeof *p))) return ar_errorf("out of memory");
            m->val[s] = p;
        }
        m->cap = cap;
    }
    m->step[m->n] = step;
    for (int s = 0; s < NSERIES; s++) {
        m->val[s][m->n] = v[s];
        if (isfinite(v[s])) m->present[s] = 1;
    }
    m->n++;
    return 0;
}

static int metrics_read(metrics *m, const char *path) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f) return ar_errorf("cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\n' || line[k] == '\r')) k++;
        if (k == (size_t)len) continue;
        json_doc *d = json_parse(line, (size_t)len, path);
        const json_value *root = json_root(d), *st = json_get(root, "step");
        if (!d || root->type != JSON_OBJECT || !st || st->type != JSON_NUMBER || !isfinite(st->number)) {
            m->skipped++;
            json_free(d);
            continue;
        }
        double v[NSERIES];
        for (int s = 0; s < NSERIES; s++) {
            const json_value *x = json_get(root, SERIES[s].key);
            v[s] = x && x->type == JSON_NUMBER ? x->number : NAN;
        }
        rc = metrics_push(m, st->number, v);
        json_free(d);
        if (rc) break;
    }
    int rerr = ferror(f);
    free(line);
    fclose(f);
    if (rc) { metrics_free(m); return ar_error_prefix("%s: ", path); }
    if (rerr) { metrics_free(m); return ar_errorf("%s: read error", path); }
    if (m->n == 0) {
        metrics_free(m);
        return ar_errorf("%s: no metrics lines (%d lines, none a JSON object with a numeric \"step\")", path, lineno);
    }
    return 0;
}

/* ---- axes ---- */

static double nice_step(double range, int target) {
    if (!(range > 0)) return 1;
    double raw = range / target, mag = pow(10, floor(log10(raw))), norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
}

static void fmt_tick(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-9) v = 0;
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    if (fabs(v) >= 1e7 || dec > 6) snprintf(buf, n, "%.3g", v);
    else snprintf(buf, n, "%.*f", dec, v);
}

typedef struct {
    double lo, hi;   /* data range shown (log: in log10) */
    int log;
    int px0, px1;    /* pixel of lo, of hi */
} axis;

static double axis_map(const axis *a, double v) {
    if (a->log) v = v > 0 ? log10(v) : NAN;
    return a->px0 + (v - a->lo) / (a->hi - a->lo) * (a->px1 - a->px0);
}

/* A linear axis over [lo, hi] rounded out to ticks of a nice step. */
static double linear_range(double *lo, double *hi, int target) {
    if (*hi - *lo <= 0) {
        double d = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 1;
        *lo -= d;
        *hi += d;
    }
    double st = nice_step(*hi - *lo, target);
    *lo = floor(*lo / st + 1e-9) * st;
    *hi = ceil(*hi / st - 1e-9) * st;
    return st;
}

/* ---- drawing helpers ---- */

static void text_right(draw_canvas *c, int xr, int y, const char *s, uint32_t rgb) {
    draw_text(c, xr - draw_text_width(s, 1), y, s, 1, rgb);
}
static void text_center(draw_canvas *c, int xc, int y, const char *s, int scale, uint32_t rgb) {
    draw_text(c, xc - draw_text_width(s, scale) / 2, y, s, scale, rgb);
}
static void marker(draw_canvas *c, double x, double y, int square, uint32_t rgb) {
    if (!isfinite(x) || !isfinite(y)) return;
    if (square) draw_fill_rect(c, (int)floor(x) - 3, (int)floor(y) - 3, 7, 7, rgb);
    else draw_disc(c, x, y, 3.5, rgb);
}

int report_loss_plot(const char *metrics_jsonl, const char *png_path) {
    metrics m;
    if (metrics_read(&m, metrics_jsonl)) return -1;
    const int W = REPORT_PLOT_W, H = REPORT_PLOT_H;
    const int L = 76, R = W - 64, T = 48, B = H - 52;   /* plot area [L, R] x [T, B] */
    const uint32_t INK = 0x333333, GRID = 0xE4E4E4, FRAME = 0x555555;
    int rc = -1;
    double *xy = malloc((size_t)m.n * 2 * sizeof *xy);
    draw_canvas *c = draw_new(W, H, 0xFFFFFF);
    if (!xy || !c) { if (!xy) ar_errorf("out of memory"); goto done; }

    /* ranges */
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    int any_left = 0, any_right = 0, any = 0;
    for (int i = 0; i < m.n; i++)
        for (int s = 0; s < NSERIES; s++) {
            double v = m.val[s][i];
            if (!isfinite(v)) continue;
            any = 1;
            if (m.step[i] < xlo) xlo = m.step[i];
            if (m.step[i] > xhi) xhi = m.step[i];
            if (SERIES[s].right) { any_right = 1; continue; }
            any_left = 1;
            if (v < ylo) ylo = v;
            if (v > yhi) yhi = v;
        }
    for (int i = 0; i < m.n && !any; i++) {   /* no values: the steps of the lines */
        if (m.step[i] < xlo) xlo = m.step[i];
        if (m.step[i] > xhi) xhi = m.step[i];
    }
    if (xhi - xlo < 1) { xlo -= 1; xhi += 1; }
    double xst = linear_range(&xlo, &xhi, 8);
    if (xst < 1) { xst = 1; xlo = floor(xlo); xhi = ceil(xhi); }
    axis ax = {xlo, xhi, 0, L, R};

    axis ay = {0, 1, 0, B, T};
    double yst = 0.2;
    if (any_left) {
        if (ylo > 0 && yhi >= REPORT_LOG_RATIO * ylo) {
            ay.log = 1;
            ay.lo = floor(log10(ylo) + 1e-9);
            ay.hi = ceil(log10(yhi) - 1e-9);
        } else {
            double lo = ylo, hi = yhi;
            if (lo >= 0 && lo < 0.25 * hi) lo = 0;
            yst = linear_range(&lo, &hi, 6);
            ay.lo = lo;
            ay.hi = hi;
        }
    }
    axis ayr = {0, 1, 0, B, T};

    /* grid lines and ticks */
    char buf[64];
    for (double t = xlo; t <= xhi + xst * 1e-6; t += xst) {
        int px = (int)lround(axis_map(&ax, t));
        draw_fill_rect(c, px, T, 1, B - T, GRID);
        draw_fill_rect(c, px, B, 1, 5, FRAME);
        fmt_tick(buf, sizeof buf, t, xst);
        text_center(c, px, B + 8, buf, 1, INK);
    }
    if (ay.log) {
        int decades = (int)lround(ay.hi - ay.lo);
        for (int e = (int)lround(ay.lo); e <= (int)lround(ay.hi); e++) {
            static const int mult[] = {1, 2, 5};
            for (int k = 0; k < 3; k++) {
                if (k > 0 && (decades > 2 || e == (int)lround(ay.hi))) break;
                double v = mult[k] * pow(10, e);
                int py = (int)lround(axis_map(&ay, v));
                draw_fill_rect(c, L, py, R - L, 1, GRID);
                draw_fill_rect(c, L - 5, py, 5, 1, FRAME);
                snprintf(buf, sizeof buf, "%g", v);
                text_right(c, L - 8, py - 4, buf, INK);
            }
        }
    } else if (any_left) {
        for (double t = ay.lo; t <= ay.hi + yst * 1e-6; t += yst) {
            int py = (int)lround(axis_map(&ay, t));
            draw_fill_rect(c, L, py, R - L, 1, GRID);
            draw_fill_rect(c, L - 5, py, 5, 1, FRAME);
            fmt_tick(buf, sizeof buf, t, yst);
            text_right(c, L - 8, py - 4, buf, INK);
        }
    }
    if (any_right) {
        for (int k = 0; k <= 5; k++) {
            double t = k * 0.2;
            int py = (int)lround(axis_map(&ayr, t));
            if (!any_left) draw_fill_rect(c, L, py, R - L, 1, GRID);
            draw_fill_rect(c, R + 1, py, 5, 1, FRAME);
            snprintf(buf, sizeof buf, "%.1f", t);
            draw_text(c, R + 9, py - 4, buf, 1, INK);
        }
    }
    draw_rect(c, L, T, R - L + 1, B - T + 1, 1, FRAME);

    /* titles */
    snprintf(buf, sizeof buf, "training curves");
    text_center(c, W / 2, 10, buf, 2, 0x111111);
    {
        char sub[512];
        snprintf(sub, sizeof sub, "%s  (%d step%s%s)", metrics_jsonl, m.n, m.n == 1 ? "" : "s",
                 m.skipped ? ", some lines unreadable" : "");
        int sw = draw_text_width(sub, 1);
        if (sw > W - 20) draw_text_wrap(c, 10, 30, W - 20, 1, sub, 1, 0x777777);
        else text_center(c, W / 2, 30, sub, 1, 0x777777);
    }
    text_center(c, (L + R) / 2, B + 26, "step", 1, INK);
    if (any_left) draw_text(c, L - 40, T - 14, ay.log ? "loss (log)" : "loss", 1, INK);
    if (any_right) text_right(c, W - 6, T - 14, "IoU / acc", INK);
    if (!any_left && !any_right)
        text_center(c, (L + R) / 2, (T + B) / 2 - 8, "no values to plot yet", 2, 0x999999);

    /* curves: training lines first, then validation points on top */
    for (int pass = 0; pass < 2; pass++)
        for (int s = 0; s < NSERIES; s++) {
            if (!m.present[s] || SERIES[s].points != pass) continue;
            const axis *a = SERIES[s].right ? &ayr : &ay;
            int k = 0;
            for (int i = 0; i < m.n; i++) {
                double v = m.val[s][i];
                if (SERIES[s].right && isfinite(v)) v = v < 0 ? 0 : v > 1 ? 1 : v;
                double px = axis_map(&ax, m.step[i]), py = isfinite(v) ? axis_map(a, v) : NAN;
                if (pass && !isfinite(py)) continue;   /* points: joined across the steps without one */
                xy[2 * k] = px;
                xy[2 * k + 1] = py;
                k++;
            }
            draw_polyline(c, xy, k, pass ? 1.2 : 2.0, SERIES[s].rgb);   /* 2.0: a solid pixel in every column */
            if (pass)
                for (int i = 0; i < k; i++) marker(c, xy[2 * i], xy[2 * i + 1], SERIES[s].right, SERIES[s].rgb);
        }

    /* legend, top right inside the plot */
    {
        int n = 0, tw = 0;
        for (int s = 0; s < NSERIES; s++)
            if (m.present[s]) {
                n++;
                char lab[64];
                snprintf(lab, sizeof lab, "%s%s", SERIES[s].label, SERIES[s].right ? " (R)" : "");
                int w = draw_text_width(lab, 1);
                if (w > tw) tw = w;
            }
        if (n) {
            char lab[64];
            int lw = 8 + 20 + 6 + tw + 8, lh = 6 + 13 * n + 2, lx = R - 8 - lw, ly = T + 8;
            draw_blend_rect(c, lx, ly, lw, lh, 0xFFFFFF, 0.88);
            draw_rect(c, lx, ly, lw, lh, 1, 0xBBBBBB);
            int y = ly + 6;
            for (int s = 0; s < NSERIES; s++) {
                if (!m.present[s]) continue;
                int sx = lx + 8, cy = y + 3;
                if (SERIES[s].points) {
                    draw_line(c, sx, cy + 0.5, sx + 20, cy + 0.5, 1.0, SERIES[s].rgb);
                    marker(c, sx + 10, cy + 0.5, SERIES[s].right, SERIES[s].rgb);
                } else {
                    draw_line(c, sx, cy + 0.5, sx + 20, cy + 0.5, 2.0, SERIES[s].rgb);
                }
                snprintf(lab, sizeof lab, "%s%s", SERIES[s].label, SERIES[s].right ? " (R)" : "");
                draw_text(c, sx + 26, y, lab, 1, INK);
                y += 13;
            }
        }
    }
    rc = draw_save_png(c, png_path);
    if (rc) ar_error_prefix("loss plot: ");
done:
    draw_free(c);
    free(xy);
    metrics_free(&m);
    return rc;
}

/* ================= examples grid ================= */

#define GRID_LINE_REF 2
#define GRID_LINE_OUT 3

struct report_grid {
    int cols, tile, cw, ch;   /* cell size */
    int n, cap;
    uint8_t **cells;          /* n cells [ch, cw, 3] */
};

report_grid *report_grid_new(int cols, int tile) {
    if (cols < 1 || cols > REPORT_GRID_MAX_COLS) {
        ar_errorf("report_grid_new: cols %d not in 1..%d", cols, REPORT_GRID_MAX_COLS);
        return NULL;
    }
    if (tile < REPORT_GRID_MIN_TILE || tile > REPORT_GRID_MAX_TILE) {
        ar_errorf("report_grid_new: tile %d not in %d..%d", tile, REPORT_GRID_MIN_TILE, REPORT_GRID_MAX_TILE);
        return NULL;
    }
    report_grid *g = calloc(1, sizeof *g);
    if (!g) { ar_errorf("report_grid_new: out of memory"); return NULL; }
    g->cols = cols;
    g->tile = tile;
    g->cw = 3 * tile + 2 * REPORT_GRID_GAP;
    g->ch = tile + REPORT_GRID_TEXT_H;
    return g;
}

void report_grid_free(report_grid *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) free(g->cells[i]);
    free(g->cells);
    free(g);
}

int report_grid_count(const report_grid *g) { return g ? g->n : 0; }

void report_grid_size(int cols, int tile, int n, int *width, int *height) {
    if (n <= 0 || cols <= 0) { *width = *height = 0; return; }
    int cw = n < cols ? n : cols, rows = (n + cw - 1) / cw;
    *width = REPORT_GRID_PAD + cw * (3 * tile + 2 * REPORT_GRID_GAP + REPORT_GRID_PAD);
    *height = REPORT_GRID_PAD + rows * (tile + REPORT_GRID_TEXT_H + REPORT_GRID_PAD);
}

/* The image letterboxed into the tile at (x, 0); *ix.. the image's rectangle. */
static int tile_image(draw_canvas *c, int x, int tile, const uint8_t *rgb, int h, int w,
                      int *ix, int *iy, int *iw, int *ih) {
    draw_fill_rect(c, x, 0, tile, tile, 0x2A2A2A);
    draw_fit(x, 0, tile, tile, w, h, ix, iy, iw, ih);
    return draw_blit(c, *ix, *iy, *iw, *ih, rgb, h, w, 3, DRAW_BILINEAR);
}

static void tile_label(draw_canvas *c, int x, const char *s) {
    int tw = draw_text_width(s, 1);
    draw_blend_rect(c, x, 0, tw + 6, 13, 0x000000, 0.6);
    draw_text(c, x + 3, 2, s, 1, 0xFFFFFF);
}

static void tile_note(draw_canvas *c, int x, int tile, const char *s) {
    int tw = draw_text_width(s, 1);
    draw_blend_rect(c, x + (tile - tw) / 2 - 4, tile / 2 - 8, tw + 8, 16, 0x000000, 0.6);
    draw_text(c, x + (tile - tw) / 2, tile / 2 - 4, s, 1, 0xFFFFFF);
}

int report_grid_add(report_grid *g, const uint8_t *rgb, int h, int w, const char *reference_text,
                    const float *box, const uint8_t *ref_image_rgb, int rh, int rw,
                    const uint8_t *pred_mask, const uint8_t *gt_mask, const char *generated_text, double iou) {
    if (!g) return ar_errorf("report_grid_add: no grid");
    if (!rgb || h <= 0 || w <= 0) return ar_errorf("report_grid_add: example %d: no image (%d x %d)", g->n, w, h);
    if (ref_image_rgb && (rh <= 0 || rw <= 0))
        return ar_errorf("report_grid_add: example %d: bad reference image size %d x %d", g->n, rw, rh);
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 16;
        uint8_t **p = realloc(g->cells, (size_t)cap * sizeof *p);
        if (!p) return ar_errorf("report_grid_add: out of memory");
        g->cells = p;
        g->cap = cap;
    }
    const int t = g->tile, gap = REPORT_GRID_GAP;
    draw_canvas *c = draw_new(g->cw, g->ch, 0xFFFFFF);
    if (!c) return ar_error_prefix("report_grid_add: ");
    int ix, iy, iw, ih, x;

    /* 1. the reference */
    if (tile_image(c, 0, t, rgb, h, w, &ix, &iy, &iw, &ih)) goto fail;
    if (box && isfinite(box[0]) && isfinite(box[1]) && isfinite(box[2]) && isfinite(box[3])) {
        double sx = (double)iw / w, sy = (double)ih / h;   /* the box clipped to the image, in tile pixels */
        int bx0 = ix + (int)floor(fmin(fmax(box[0], 0), w) * sx), by0 = iy + (int)floor(fmin(fmax(box[1], 0), h) * sy);
        int bx1 = ix + (int)ceil(fmin(fmax(box[2], 0), w) * sx), by1 = iy + (int)ceil(fmin(fmax(box[3], 0), h) * sy);
        if (bx1 > bx0 && by1 > by0) {
            draw_rect(c, bx0 - 1, by0 - 1, bx1 - bx0 + 2, by1 - by0 + 2, 1, 0x000000);
            draw_rect(c, bx0, by0, bx1 - bx0, by1 - by0, 2, REPORT_RGB_BOX);
        }
    }
    if (ref_image_rgb) {
        int s = t / 3, fx, fy, fw, fh;
        draw_fit(t - s - 4, t - s - 4, s, s, rw, rh, &fx, &fy, &fw, &fh);
        draw_fill_rect(c, fx - 2, fy - 2, fw + 4, fh + 4, 0xFFFFFF);
        if (draw_blit(c, fx, fy, fw, fh, ref_image_rgb, rh, rw, 3, DRAW_BILINEAR)) goto fail;
    }
    tile_label(c, 0, "reference");

    /* 2. the prediction, 3. the ground truth */
    for (int k = 0; k < 2; k++) {
        const uint8_t *mask = k ? gt_mask : pred_mask;
        uint32_t col = k ? REPORT_RGB_GT : REPORT_RGB_PRED;
        x = (k + 1) * (t + gap);
        if (tile_image(c, x, t, rgb, h, w, &ix, &iy, &iw, &ih)) goto fail;
        if (mask) {
            draw_blend_mask(c, ix, iy, iw, ih, mask, h, w, col, 0.5);
            draw_mask_outline(c, ix, iy, iw, ih, mask, h, w, col);
        } else {
            tile_note(c, x, t, k ? "no ground truth" : "no mask");
        }
        tile_label(c, x, k ? "ground truth" : "prediction");
    }

    /* texts */
    char buf[4096];
    int y = t + 4, lh = DRAW_LINE_H;
    if (reference_text && reference_text[0]) snprintf(buf, sizeof buf, "ref: %s", reference_text);
    else if (box) snprintf(buf, sizeof buf, "ref: box %.0f,%.0f,%.0f,%.0f", box[0], box[1], box[2], box[3]);
    else if (ref_image_rgb) snprintf(buf, sizeof buf, "ref: image crop");
    else snprintf(buf, sizeof buf, "ref: -");
    y += lh * draw_text_wrap(c, 2, y, g->cw - 4, GRID_LINE_REF, buf, 1, 0x1A1A1A);
    snprintf(buf, sizeof buf, "out: %s", generated_text ? generated_text : "-");
    y += lh * draw_text_wrap(c, 2, y, g->cw - 4, GRID_LINE_OUT, buf, 1, 0x1A4E8A);
    if (isfinite(iou)) snprintf(buf, sizeof buf, "#%d  IoU %.3f", g->n, iou);
    else snprintf(buf, sizeof buf, "#%d  IoU -", g->n);
    draw_text_wrap(c, 2, y, g->cw - 4, 1, buf, 1, 0x555555);

    g->cells[g->n++] = c->px;
    c->px = NULL;
    draw_free(c);
    return 0;
fail:
    draw_free(c);
    return ar_error_prefix("report_grid_add: example %d: ", g->n);
}

int report_grid_save(const report_grid *g, const char *png) {
    if (!g || g->n == 0) return ar_errorf("report_grid_save: %s: no examples to draw", png);
    int W, H;
    report_grid_size(g->cols, g->tile, g->n, &W, &H);
    draw_canvas *c = draw_new(W, H, 0xF4F4F4);
    if (!c) return ar_error_prefix("report_grid_save: %s: ", png);
    int cw = g->n < g->cols ? g->n : g->cols;
    for (int i = 0; i < g->n; i++) {
        int x = REPORT_GRID_PAD + (i % cw) * (g->cw + REPORT_GRID_PAD);
        int y = REPORT_GRID_PAD + (i / cw) * (g->ch + REPORT_GRID_PAD);
        for (int r = 0; r < g->ch; r++)
            memcpy(c->px + ((size_t)(y + r) * W + x) * 3, g->cells[i] + (size_t)r * g->cw * 3, (size_t)g->cw * 3);
    }
    int rc = draw_save_png(c, png);
    draw_free(c);
    return rc ? ar_error_prefix("examples grid: ") : 0;
}

/* ================= anyref plot ================= */

static void plot_usage(FILE *f) {
    fprintf(f, "usage: anyref plot RUN_DIR [--out FILE]\n"
               "  the loss curves of RUN_DIR/metrics.jsonl (or of a metrics file given instead)\n"
               "  as a PNG: FILE, default loss.png beside the metrics file\n");
}

int report_plot_main(int argc, char **argv) {
    const char *run = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--out")) {
            if (++i >= argc) { fprintf(stderr, "anyref plot: --out needs a file name\n"); plot_usage(stderr); return 2; }
            out = argv[i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            plot_usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "anyref plot: unknown option '%s'\n", argv[i]);
            plot_usage(stderr);
            return 2;
        } else if (!run) {
            run = argv[i];
        } else {
            fprintf(stderr, "anyref plot: more than one run directory ('%s', '%s')\n", run, argv[i]);
            plot_usage(stderr);
            return 2;
        }
    }
    if (!run) { fprintf(stderr, "anyref plot: missing RUN_DIR\n"); plot_usage(stderr); return 2; }
    char metrics_path[4096], out_path[4096];
    struct stat st;
    size_t n = strlen(run);
    while (n > 1 && run[n - 1] == '/') n--;
    if (stat(run, &st) == 0 && !S_ISDIR(st.st_mode)) {
        snprintf(metrics_path, sizeof metrics_path, "%s", run);
        const char *slash = strrchr(run, '/');
        if (slash) snprintf(out_path, sizeof out_path, "%.*s/loss.png", (int)(slash - run), run);
        else snprintf(out_path, sizeof out_path, "loss.png");
    } else {
        snprintf(metrics_path, sizeof metrics_path, "%.*s/metrics.jsonl", (int)n, run);
        snprintf(out_path, sizeof out_path, "%.*s/loss.png", (int)n, run);
    }
    if (out) snprintf(out_path, sizeof out_path, "%s", out);
    if (report_loss_plot(metrics_path, out_path)) {
        fprintf(stderr, "error: anyref plot: %s\n", ar_error());
        return 1;
    }
    printf("%s\n", out_path);
    return 0;
}
