/* data/draw.c — the RGB8 raster of data/draw.h: shapes, masks, images, text.
 * Depends on core/error.h, data/image.h. */
#include "data/draw.h"

#include "core/error.h"
#include "data/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The font: one string per character 32..126, its rows top to bottom as
 * five cells ('#' ink, '.' none) separated by spaces; rows not written are
 * empty. Drawn for this project, cell by cell. */
static const char *const font[95] = {
    "",                                                      /* ' ' */
    "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..",             /* '!' */
    ".#.#. .#.#. .#.#.",                                     /* '"' */
    ".#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.",             /* '#' */
    "..#.. .#### #.#.. .###. ..#.# ####. ..#..",             /* '$' */
    "##... ##..# ...#. ..#.. .#... #..## ...##",             /* '%' */
    ".##.. #..#. #.#.. .#... #.#.# #..#. .##.#",             /* '&' */
    "..#.. ..#.. .#...",                                     /* '\'' */
    "...#. ..#.. .#... .#... .#... ..#.. ...#.",             /* '(' */
    ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",             /* ')' */
    "..... ..#.. #.#.# .###. #.#.# ..#..",                   /* '*' */
    "..... ..#.. ..#.. ##### ..#.. ..#..",                   /* '+' */
    "..... ..... ..... ..... ..... .##.. ..#.. .#...",       /* ',' */
    "..... ..... ..... #####",                               /* '-' */
    "..... ..... ..... ..... ..... .##.. .##..",             /* '.' */
    "....# ....# ...#. ..#.. .#... #.... #....",             /* '/' */
    ".###. #...# #..## #.#.# ##..# #...# .###.",             /* '0' */
    "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",             /* '1' */
    ".###. #...# ....# ...#. ..#.. .#... #####",             /* '2' */
    "##### ...#. ..#.. ...#. ....# #...# .###.",             /* '3' */
    "...#. ..##. .#.#. #..#. ##### ...#. ...#.",             /* '4' */
    "##### #.... ####. ....# ....# #...# .###.",             /* '5' */
    "..##. .#... #.... ####. #...# #...# .###.",             /* '6' */
    "##### ....# ...#. ..#.. .#... .#... .#...",             /* '7' */
    ".###. #...# #...# .###. #...# #...# .###.",             /* '8' */
    ".###. #...# #...# .#### ....# ...#. .##..",             /* '9' */
    "..... .##.. .##.. ..... .##.. .##..",                   /* ':' */
    "..... .##.. .##.. ..... .##.. ..#.. .#...",             /* ';' */
    "...#. ..#.. .#... #.... .#... ..#.. ...#.",             /* '<' */
    "..... ..... ##### ..... #####",                         /* '=' */
    ".#... ..#.. ...#. ....# ...#. ..#.. .#...",             /* '>' */
    ".###. #...# ....# ...#. ..#.. ..... ..#..",             /* '?' */
    ".###. #...# #.### #.#.# #.### #.... .###.",             /* '@' */
    ".###. #...# #...# ##### #...# #...# #...#",             /* 'A' */
    "####. #...# #...# ####. #...# #...# ####.",             /* 'B' */
    ".###. #...# #.... #.... #.... #...# .###.",             /* 'C' */
    "###.. #..#. #...# #...# #...# #..#. ###..",             /* 'D' */
    "##### #.... #.... ####. #.... #.... #####",             /* 'E' */
    "##### #.... #.... ####. #.... #.... #....",             /* 'F' */
    ".###. #...# #.... #.### #...# #...# .####",             /* 'G' */
    "#...# #...# #...# ##### #...# #...# #...#",             /* 'H' */
    ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",             /* 'I' */
    "..### ...#. ...#. ...#. ...#. #..#. .##..",             /* 'J' */
    "#...# #..#. #.#.. ##... #.#.. #..#. #...#",             /* 'K' */
    "#.... #.... #.... #.... #.... #.... #####",             /* 'L' */
    "#...# ##.## #.#.# #.#.# #...# #...# #...#",             /* 'M' */
    "#...# #...# ##..# #.#.# #..## #...# #...#",             /* 'N' */
    ".###. #...# #...# #...# #...# #...# .###.",             /* 'O' */
    "####. #...# #...# ####. #.... #.... #....",             /* 'P' */
    ".###. #...# #...# #...# #.#.# #..#. .##.#",             /* 'Q' */
    "####. #...# #...# ####. #.#.. #..#. #...#",             /* 'R' */
    ".#### #.... #.... .###. ....# ....# ####.",             /* 'S' */
    "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",             /* 'T' */
    "#...# #...# #...# #...# #...# #...# .###.",             /* 'U' */
    "#...# #...# #...# #...# #...# .#.#. ..#..",             /* 'V' */
    "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",             /* 'W' */
    "#...# #...# .#.#. ..#.. .#.#. #...# #...#",             /* 'X' */
    "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",             /* 'Y' */
    "##### ....# ...#. ..#.. .#... #.... #####",             /* 'Z' */
    ".###. .#... .#... .#... .#... .#... .###.",             /* '[' */
    "#.... #.... .#... ..#.. ...#. ....# ....#",             /* '\\' */
    ".###. ...#. ...#. ...#. ...#. ...#. .###.",             /* ']' */
    "..#.. .#.#. #...#",                                     /* '^' */
    "..... ..... ..... ..... ..... ..... ..... #####",       /* '_' */
    ".#... ..#.. ...#.",                                     /* '`' */
    "..... ..... .###. ....# .#### #...# .####",             /* 'a' */
    "#.... #.... #.##. ##..# #...# #...# ####.",             /* 'b' */
    "..... ..... .###. #.... #.... #...# .###.",             /* 'c' */
    "....# ....# .##.# #..## #...# #...# .####",             /* 'd' */
    "..... ..... .###. #...# ##### #.... .###.",             /* 'e' */
    "..##. .#..# .#... ###.. .#... .#... .#...",             /* 'f' */
    "..... ..... .#### #...# #...# #...# .#### ....# .###.", /* 'g' */
    "#.... #.... #.##. ##..# #...# #...# #...#",             /* 'h' */
    "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",             /* 'i' */
    "...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##..", /* 'j' */
    "#.... #.... #..#. #.#.. ##... #.#.. #..#.",             /* 'k' */
    ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",             /* 'l' */
    "..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#",             /* 'm' */
    "..... ..... #.##. ##..# #...# #...# #...#",             /* 'n' */
    "..... ..... .###. #...# #...# #...# .###.",             /* 'o' */
    "..... ..... ####. #...# #...# #...# ####. #.... #....", /* 'p' */
    "..... ..... .#### #...# #...# #...# .#### ....# ....#", /* 'q' */
    "..... ..... #.##. ##..# #.... #.... #....",             /* 'r' */
    "..... ..... .#### #.... .###. ....# ####.",             /* 's' */
    ".#... .#... ###.. .#... .#... .#..# ..##.",             /* 't' */
    "..... ..... #...# #...# #...# #..## .##.#",             /* 'u' */
    "..... ..... #...# #...# #...# .#.#. ..#..",             /* 'v' */
    "..... ..... #...# #...# #.#.# #.#.# .#.#.",             /* 'w' */
    "..... ..... #...# .#.#. ..#.. .#.#. #...#",             /* 'x' */
    "..... ..... #...# #...# #...# #...# .#### ....# .###.", /* 'y' */
    "..... ..... ##### ...#. ..#.. .#... #####",             /* 'z' */
    "...## ..#.. ..#.. .#... ..#.. ..#.. ...##",             /* '{' */
    "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",             /* '|' */
    "##... ..#.. ..#.. ...#. ..#.. ..#.. ##...",             /* '}' */
    "..... ..... .#... #.#.# ...#.",                         /* '~' */
};

int draw_glyph_bit(int ch, int row, int col) {
    if (ch < 32 || ch > 126) ch = '?';
    if (row < 0 || row >= DRAW_FONT_H || col < 0 || col >= DRAW_FONT_W) return 0;
    const char *g = font[ch - 32];
    size_t off = (size_t)row * (DRAW_FONT_W + 1) + (size_t)col;
    return off < strlen(g) && g[off] == '#';
}

/* ---- canvas ---- */

draw_canvas *draw_new(int w, int h, uint32_t bg) {
    if (w <= 0 || h <= 0 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (size_t)w * h > IMAGE_MAX_PIXELS) {
        ar_errorf("draw_new: bad canvas size %d x %d", w, h);
        return NULL;
    }
    draw_canvas *c = malloc(sizeof *c);
    uint8_t *px = malloc((size_t)w * h * 3);
    if (!c || !px) {
        free(c);
        free(px);
        ar_errorf("draw_new: out of memory for %d x %d", w, h);
        return NULL;
    }
    c->w = w;
    c->h = h;
    c->px = px;
    for (size_t i = 0; i < (size_t)w * h; i++) {
        px[3 * i] = (uint8_t)(bg >> 16);
        px[3 * i + 1] = (uint8_t)(bg >> 8);
        px[3 * i + 2] = (uint8_t)bg;
    }
    return c;
}

void draw_free(draw_canvas *c) {
    if (!c) return;
    free(c->px);
    free(c);
}

int draw_save_png(const draw_canvas *c, const char *path) {
    if (!c) return ar_errorf("draw_save_png: no canvas");
    return image_write_png(path, c->px, c->h, c->w, 3);
}

uint32_t draw_get(const draw_canvas *c, int x, int y) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return 0;
    const uint8_t *p = c->px + ((size_t)y * c->w + x) * 3;
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

static inline uint8_t mix(uint8_t v, uint8_t col, double a) {
    return (uint8_t)floor(v + ((double)col - v) * a + 0.5);
}

void draw_blend_px(draw_canvas *c, int x, int y, uint32_t rgb, double a) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h || !(a > 0)) return;
    if (a > 1) a = 1;
    uint8_t *p = c->px + ((size_t)y * c->w + x) * 3;
    p[0] = mix(p[0], (uint8_t)(rgb >> 16), a);
    p[1] = mix(p[1], (uint8_t)(rgb >> 8), a);
    p[2] = mix(p[2], (uint8_t)rgb, a);
}

static inline void set_px(draw_canvas *c, int x, int y, uint32_t rgb) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    uint8_t *p = c->px + ((size_t)y * c->w + x) * 3;
    p[0] = (uint8_t)(rgb >> 16);
    p[1] = (uint8_t)(rgb >> 8);
    p[2] = (uint8_t)rgb;
}

/* Clips (x, y, w, h) to the canvas; 0 when nothing is left. */
static int clip(const draw_canvas *c, int *x0, int *y0, int *x1, int *y1, int x, int y, int w, int h) {
    long a = x, b = y, e = (long)x + w, f = (long)y + h;
    if (a < 0) a = 0;
    if (b < 0) b = 0;
    if (e > c->w) e = c->w;
    if (f > c->h) f = c->h;
    if (a >= e || b >= f) return 0;
    *x0 = (int)a; *y0 = (int)b; *x1 = (int)e; *y1 = (int)f;
    return 1;
}

void draw_fill_rect(draw_canvas *c, int x, int y, int w, int h, uint32_t rgb) {
    int x0, y0, x1, y1;
    if (!clip(c, &x0, &y0, &x1, &y1, x, y, w, h)) return;
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++) set_px(c, i, j, rgb);
}

void draw_blend_rect(draw_canvas *c, int x, int y, int w, int h, uint32_t rgb, double a) {
    int x0, y0, x1, y1;
    if (!clip(c, &x0, &y0, &x1, &y1, x, y, w, h)) return;
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++) draw_blend_px(c, i, j, rgb, a);
}

void draw_rect(draw_canvas *c, int x, int y, int w, int h, int t, uint32_t rgb) {
    if (w <= 0 || h <= 0) return;
    if (t < 1) t = 1;
    if (2 * t >= w || 2 * t >= h) { draw_fill_rect(c, x, y, w, h, rgb); return; }
    draw_fill_rect(c, x, y, w, t, rgb);
    draw_fill_rect(c, x, y + h - t, w, t, rgb);
    draw_fill_rect(c, x, y + t, t, h - 2 * t, rgb);
    draw_fill_rect(c, x + w - t, y + t, t, h - 2 * t, rgb);
}

/* ---- anti-aliased shapes ---- */

static double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

void draw_line(draw_canvas *c, double x0, double y0, double x1, double y1, double width, uint32_t rgb) {
    if (!isfinite(x0) || !isfinite(y0) || !isfinite(x1) || !isfinite(y1) || !(width > 0)) return;
    double r = width / 2 + 0.5;
    double bx0 = fmin(x0, x1) - r, bx1 = fmax(x0, x1) + r, by0 = fmin(y0, y1) - r, by1 = fmax(y0, y1) + r;
    if (bx1 < 0 || by1 < 0 || bx0 > c->w || by0 > c->h) return;
    int i0 = (int)floor(fmax(bx0, 0)), i1 = (int)ceil(fmin(bx1, c->w));
    int j0 = (int)floor(fmax(by0, 0)), j1 = (int)ceil(fmin(by1, c->h));
    double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int j = j0; j < j1; j++) {
        for (int i = i0; i < i1; i++) {
            double px = i + 0.5 - x0, py = j + 0.5 - y0;
            double t = len2 > 0 ? (px * dx + py * dy) / len2 : 0;
            t = clamp01(t);
            double ex = px - t * dx, ey = py - t * dy;
            double cov = clamp01(r - sqrt(ex * ex + ey * ey));
            if (cov > 0) draw_blend_px(c, i, j, rgb, cov);
        }
    }
}

void draw_disc(draw_canvas *c, double cx, double cy, double r, uint32_t rgb) {
    if (!isfinite(cx) || !isfinite(cy) || !(r > 0)) return;
    double R = r + 0.5;
    if (cx + R < 0 || cy + R < 0 || cx - R > c->w || cy - R > c->h) return;
    int i0 = (int)floor(fmax(cx - R, 0)), i1 = (int)ceil(fmin(cx + R, c->w));
    int j0 = (int)floor(fmax(cy - R, 0)), j1 = (int)ceil(fmin(cy + R, c->h));
    for (int j = j0; j < j1; j++)
        for (int i = i0; i < i1; i++) {
            double d = hypot(i + 0.5 - cx, j + 0.5 - cy);
            double cov = clamp01(R - d);
            if (cov > 0) draw_blend_px(c, i, j, rgb, cov);
        }
}

static int finite_pt(const double *xy, int k) { return isfinite(xy[2 * k]) && isfinite(xy[2 * k + 1]); }

void draw_polyline(draw_canvas *c, const double *xy, int n, double width, uint32_t rgb) {
    for (int k = 0; k < n; k++) {
        if (!finite_pt(xy, k)) continue;
        int prev = k > 0 && finite_pt(xy, k - 1), next = k + 1 < n && finite_pt(xy, k + 1);
        if (next) draw_line(c, xy[2 * k], xy[2 * k + 1], xy[2 * k + 2], xy[2 * k + 3], width, rgb);
        else if (!prev) draw_disc(c, xy[2 * k], xy[2 * k + 1], width + 1, rgb);
    }
}

/* ---- masks and images ---- */

static inline int src_index(int i, int n_src, int n_dst) {
    int s = (int)(((double)i + 0.5) * n_src / n_dst);
    return s < 0 ? 0 : s >= n_src ? n_src - 1 : s;
}

void draw_blend_mask(draw_canvas *c, int x, int y, int w, int h, const uint8_t *mask, int mh, int mw,
                     uint32_t rgb, double alpha) {
    int x0, y0, x1, y1;
    if (!mask || mh <= 0 || mw <= 0 || !clip(c, &x0, &y0, &x1, &y1, x, y, w, h)) return;
    for (int j = y0; j < y1; j++) {
        const uint8_t *row = mask + (size_t)src_index(j - y, mh, h) * mw;
        for (int i = x0; i < x1; i++)
            if (row[src_index(i - x, mw, w)]) draw_blend_px(c, i, j, rgb, alpha);
    }
}

void draw_mask_outline(draw_canvas *c, int x, int y, int w, int h, const uint8_t *mask, int mh, int mw,
                       uint32_t rgb) {
    int x0, y0, x1, y1;
    if (!mask || mh <= 0 || mw <= 0 || !clip(c, &x0, &y0, &x1, &y1, x, y, w, h)) return;
#define IN(i, j) ((i) >= 0 && (j) >= 0 && (i) < w && (j) < h && \
                  mask[(size_t)src_index((j), mh, h) * mw + src_index((i), mw, w)])
    for (int j = y0 - y; j < y1 - y; j++)
        for (int i = x0 - x; i < x1 - x; i++)
            if (IN(i, j) && (!IN(i - 1, j) || !IN(i + 1, j) || !IN(i, j - 1) || !IN(i, j + 1)))
                set_px(c, x + i, y + j, rgb);
#undef IN
}

void draw_fit(int x, int y, int w, int h, int sw, int sh, int *ox, int *oy, int *ow, int *oh) {
    if (sw <= 0 || sh <= 0 || w <= 0 || h <= 0) { *ox = x; *oy = y; *ow = w > 0 ? w : 1; *oh = h > 0 ? h : 1; return; }
    int fw = w, fh = (int)((double)sh * w / sw + 0.5);
    if (fh > h) { fh = h; fw = (int)((double)sw * h / sh + 0.5); }
    if (fw < 1) fw = 1;
    if (fh < 1) fh = 1;
    if (fw > w) fw = w;
    if (fh > h) fh = h;
    *ox = x + (w - fw) / 2;
    *oy = y + (h - fh) / 2;
    *ow = fw;
    *oh = fh;
}

int draw_blit(draw_canvas *c, int x, int y, int w, int h, const uint8_t *src, int sh, int sw, int sc,
              draw_filter f) {
    if (!c || !src || sh <= 0 || sw <= 0 || (sc != 1 && sc != 3) || w <= 0 || h <= 0 ||
        w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE)
        return ar_errorf("draw_blit: bad arguments (source %d x %d x %d into %d x %d)", sw, sh, sc, w, h);
    int x0, y0, x1, y1;
    if (!clip(c, &x0, &y0, &x1, &y1, x, y, w, h)) return 0;
    uint8_t *tmp = NULL;
    if (f == DRAW_BILINEAR && (w != sw || h != sh)) {
        tmp = malloc((size_t)w * h * sc);
        if (!tmp) return ar_errorf("draw_blit: out of memory (%d x %d)", w, h);
        if (image_resize_u8(tmp, h, w, src, sh, sw, sc, IMAGE_BILINEAR)) { free(tmp); return -1; }
    }
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++) {
            const uint8_t *p = tmp ? tmp + ((size_t)(j - y) * w + (i - x)) * sc
                                   : src + ((size_t)src_index(j - y, sh, h) * sw + src_index(i - x, sw, w)) * sc;
            uint32_t v = sc == 3 ? (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]
                                 : (uint32_t)p[0] * 0x010101u;
            set_px(c, i, j, v);
        }
    free(tmp);
    return 0;
}

/* ---- text ---- */

/* The next character of UTF-8 text at *s as drawn (a printable ASCII byte,
 * ' ' for controls, '\n' kept, '?' for any other code point); advances *s
 * past it. 0 at the end. */
static int next_char(const char **s) {
    const unsigned char *p = (const unsigned char *)*s;
    if (!*p) return 0;
    unsigned b = *p++;
    if (b >= 0x80) {
        while ((*p & 0xC0) == 0x80) p++;   /* continuation bytes of this code point */
        *s = (const char *)p;
        return '?';
    }
    *s = (const char *)p;
    if (b == '\n') return '\n';
    return b < 32 || b == 127 ? ' ' : (int)b;
}

int draw_text_len(const char *s) {
    int n = 0;
    if (!s) return 0;
    while (next_char(&s)) n++;
    return n;
}

int draw_text_width(const char *s, int scale) {
    if (scale < 1) scale = 1;
    int n = draw_text_len(s);
    return n ? (DRAW_ADVANCE * n - 1) * scale : 0;
}

static void draw_glyph(draw_canvas *c, int x, int y, int ch, int scale, uint32_t rgb) {
    if (x >= c->w || y >= c->h || x + DRAW_FONT_W * scale <= 0 || y + DRAW_FONT_H * scale <= 0) return;
    for (int r = 0; r < DRAW_FONT_H; r++)
        for (int k = 0; k < DRAW_FONT_W; k++)
            if (draw_glyph_bit(ch, r, k)) draw_fill_rect(c, x + k * scale, y + r * scale, scale, scale, rgb);
}

static int draw_chars(draw_canvas *c, int x, int y, const char *t, int n, int scale, uint32_t rgb) {
    for (int i = 0; i < n; i++, x += DRAW_ADVANCE * scale)
        if (c && t[i] != ' ' && t[i] != '\n') draw_glyph(c, x, y, (unsigned char)t[i], scale, rgb);
    return x;
}

int draw_text(draw_canvas *c, int x, int y, const char *s, int scale, uint32_t rgb) {
    if (scale < 1) scale = 1;
    if (!s) return x;
    for (int ch; (ch = next_char(&s)); x += DRAW_ADVANCE * scale)
        if (c && ch != ' ' && ch != '\n') draw_glyph(c, x, y, ch, scale, rgb);
    return x;
}

int draw_text_wrap(draw_canvas *c, int x, int y, int w, int max_lines, const char *s, int scale, uint32_t rgb) {
    if (scale < 1) scale = 1;
    if (!s) return 0;
    int n = draw_text_len(s);
    char *t = malloc((size_t)n + 4);
    if (!t) return 0;
    for (int i = 0, ch; (ch = next_char(&s)); i++) t[i] = (char)ch;
    t[n] = 0;
    int maxc = (w + scale) / (DRAW_ADVANCE * scale);   /* (ADVANCE * k - 1) * scale <= w */
    if (maxc < 1) maxc = 1;
    int lines = 0, pos = 0;
    char line[4096];
    if (maxc > (int)sizeof line - 4) maxc = (int)sizeof line - 4;
    while (pos < n) {
        if (lines > 0 || pos > 0)
            while (pos < n && t[pos] == ' ') pos++;       /* a wrapped line starts at its word */
        if (pos >= n) break;
        int end = pos, brk = -1;                          /* line = t[pos, brk) */
        while (end < n && end - pos < maxc && t[end] != '\n') {
            end++;
            if (end == n || t[end] == ' ' || t[end] == '\n') brk = end;
        }
        int next;
        if (end == n || t[end] == '\n') { brk = end; next = end < n ? end + 1 : end; }
        else if (brk > pos) next = brk;                   /* break at the last space */
        else { brk = end; next = end; }                   /* one word longer than the line: cut */
        int len = brk - pos;
        while (len > 0 && t[pos + len - 1] == ' ') len--;
        memcpy(line, t + pos, (size_t)len);
        int last = max_lines > 0 && lines + 1 == max_lines;
        if (last) {
            int rest = next;
            while (rest < n && (t[rest] == ' ' || t[rest] == '\n')) rest++;
            if (rest < n) {                               /* more text that will not be drawn */
                if (len + 3 > maxc) len = maxc - 3 > 0 ? maxc - 3 : 0;
                memcpy(line + len, "...", 3);
                len += 3;
                if (len > maxc) len = maxc;
            }
        }
        draw_chars(c, x, y + lines * DRAW_LINE_H * scale, line, len, scale, rgb);
        lines++;
        pos = next;
        if (last) break;
    }
    free(t);
    return lines;
}
