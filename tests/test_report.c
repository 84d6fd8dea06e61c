/* tests/test_report.c — the raster (data/draw.c) and the run pictures
 * (eval/report.c):
 *   - the font: every printable ASCII glyph 33..126 has ink, space has none,
 *     no two glyphs are the same, only , _ g j p q y reach below the
 *     baseline, other bytes draw as '?', UTF-8 counts code points;
 *   - text: the ink of draw_text is exactly the glyph cells scaled; wrapped
 *     text stays inside its box (width and lines), breaks at spaces, cuts
 *     long words, ends a cut text with "...";
 *   - shapes: the documented blending formula, pixel by pixel, of masks
 *     (also scaled and clipped), rectangles, lines (solid interior, nothing
 *     beyond width / 2 + 0.5), polyline gaps at NaN, lone points, nearest
 *     and bilinear blits (= image_resize_u8), draw_fit;
 *   - the loss plot of synthetic metrics.jsonl files (nulls, a garbage line,
 *     a missing key, one step, only nulls, a missing file, no usable line):
 *     the PNG read back with image_load is 800 x 500, the series colours are
 *     there (and an absent key's is not), the loss curve falls from left to
 *     right, a null step leaves a gap, errors name the file;
 *   - the examples grid: PNG size = the documented formula, the overlay,
 *     outline and box colours in their tiles, argument errors;
 *   - `anyref plot` (report_plot_main): RUN_DIR/loss.png, --out, errors.
 * Depends on data/draw.h, data/image.h, eval/report.h, core/error.h,
 * tests/testlib.h.
 */
#include "core/error.h"
#include "data/draw.h"
#include "data/image.h"
#include "tests/testlib.h"
#include "eval/report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[] = "/tmp/anyref_report_XXXXXX";

static uint8_t mixv(uint8_t v, uint8_t c, double a) { return (uint8_t)floor(v + ((double)c - v) * a + 0.5); }
static uint32_t mix(uint32_t v, uint32_t c, double a) {
    return (uint32_t)mixv((uint8_t)(v >> 16), (uint8_t)(c >> 16), a) << 16 |
           (uint32_t)mixv((uint8_t)(v >> 8), (uint8_t)(c >> 8), a) << 8 | mixv((uint8_t)v, (uint8_t)c, a);
}

/* ---- font ---- */

static void test_font(void) {
    int empty = 0, same = 0, desc_bad = 0;
    char desc[32] = "";
    for (int ch = 32; ch < 127; ch++) {
        int ink = 0, below = 0;
        for (int r = 0; r < DRAW_FONT_H; r++)
            for (int k = 0; k < DRAW_FONT_W; k++)
                if (draw_glyph_bit(ch, r, k)) { ink++; below |= r >= 7; }
        if ((ch == ' ') != (ink == 0)) { empty++; printf("  glyph '%c': %d cells\n", ch, ink); }
        if (below) { size_t n = strlen(desc); desc[n] = (char)ch; desc[n + 1] = 0; }
        for (int o = 33; o < ch; o++) {
            int diff = 0;
            for (int r = 0; r < DRAW_FONT_H && !diff; r++)
                for (int k = 0; k < DRAW_FONT_W; k++) diff |= draw_glyph_bit(ch, r, k) != draw_glyph_bit(o, r, k);
            if (!diff && ch != ' ') { same++; printf("  glyphs '%c' and '%c' are the same\n", o, ch); }
        }
    }
    desc_bad = strcmp(desc, ",_gjpqy") != 0;
    t_check(!empty, "font.coverage", "95 glyphs: space blank, the 94 others have ink (%d wrong)", empty);
    t_check(!same, "font.distinct", "no two printable glyphs identical (%d pairs)", same);
    t_check(!desc_bad, "font.descenders", "below the baseline: \"%s\" (want \",_gjpqy\")", desc);
    int q = 1;
    for (int r = 0; r < DRAW_FONT_H; r++)
        for (int k = 0; k < DRAW_FONT_W; k++)
            q &= draw_glyph_bit(200, r, k) == draw_glyph_bit('?', r, k) && draw_glyph_bit(7, r, k) == draw_glyph_bit('?', r, k);
    q &= !draw_glyph_bit('A', -1, 0) && !draw_glyph_bit('A', DRAW_FONT_H, 0) && !draw_glyph_bit('A', 0, DRAW_FONT_W);
    t_check(q, "font.other", "bytes outside 32..126 use '?', out-of-grid cells are blank");
    int n1 = draw_text_len("caf\xc3\xa9 \xe2\x82\xac!"), w = draw_text_width("abc", 2);
    t_check(n1 == 7 && w == (6 * 3 - 1) * 2 && draw_text_width("", 1) == 0, "font.measure",
            "UTF-8 \"caf\\u00e9 \\u20ac!\" = %d characters (want 7); width(\"abc\", 2) = %d (want 34)", n1, w);
}

/* ---- text ---- */

static void test_text(void) {
    const uint32_t BG = 0xFFFFFF, FG = 0x102030;
    draw_canvas *c = draw_new(60, 40, BG);
    const char *s = "Hg?";
    int x0 = 3, y0 = 5, sc = 2, bad = 0, inkn = 0;
    int xe = draw_text(c, x0, y0, s, sc, FG);
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++) {
            int want = 0, dx = x - x0, dy = y - y0;
            if (dx >= 0 && dy >= 0 && dy < DRAW_FONT_H * sc) {
                int i = dx / (DRAW_ADVANCE * sc), col = dx % (DRAW_ADVANCE * sc) / sc;
                if (i < 3 && col < DRAW_FONT_W) want = draw_glyph_bit(s[i], dy / sc, col);
            }
            uint32_t got = draw_get(c, x, y);
            inkn += got == FG;
            bad += got != (want ? FG : BG);
        }
    t_check(!bad && inkn > 0 && xe == x0 + 3 * DRAW_ADVANCE * sc, "text.exact",
            "\"Hg?\" at scale 2: %d pixels differ from the scaled glyph cells (%d ink), end x %d", bad, inkn, xe);
    draw_free(c);

    /* wrapping stays inside its box */
    c = draw_new(200, 120, BG);
    const char *long_text = "the large red circle left of the blue square, behind the "
                            "extraordinarilylongwordthatcannotfitonanyline and then more words after it";
    int bx = 7, by = 9, bw = 100, lines = 4;
    int nl = draw_text_wrap(c, bx, by, bw, lines, long_text, 1, FG);
    int bh = (lines - 1) * DRAW_LINE_H + DRAW_FONT_H, outside = 0, inside = 0, maxx = 0;
    for (int y = 0; y < c->h; y++)
        for (int x = 0; x < c->w; x++)
            if (draw_get(c, x, y) != BG) {
                if (x < bx || x >= bx + bw || y < by || y >= by + bh) outside++;
                else inside++;
                if (x > maxx) maxx = x;
            }
    int all = draw_text_wrap(NULL, 0, 0, bw, 0, long_text, 1, FG);
    t_check(nl == lines && !outside && inside > 0 && all > lines, "text.wrap_box",
            "%d lines drawn (want %d; untruncated %d), %d ink pixels outside the %dx%d box, %d inside, right-most x %d",
            nl, lines, all, outside, bw, bh, inside, maxx);
    /* the last visible line ends in "...": its last three cells are dots */
    draw_canvas *d = draw_new(200, 20, BG), *e = draw_new(200, 20, BG);
    draw_text_wrap(d, 0, 0, 41, 1, "aaaa bbbb cccc", 1, FG);   /* 7 characters a line */
    draw_text(e, 0, 0, "aaaa...", 1, FG);
    t_check(!memcmp(d->px, e->px, (size_t)200 * 20 * 3), "text.ellipsis", "\"aaaa bbbb cccc\" in 7 columns, 1 line = \"aaaa...\"");
    draw_free(d);
    draw_free(e);
    /* word breaks: 7 columns hold "aaa bbb", 6 do not */
    int w7 = draw_text_wrap(NULL, 0, 0, 6 * 7 - 1, 0, "aaa bbb", 1, FG);
    int w6 = draw_text_wrap(NULL, 0, 0, 6 * 6 - 1, 0, "aaa bbb", 1, FG);
    int cut = draw_text_wrap(NULL, 0, 0, 6 * 4 - 1, 0, "abcdefghij", 1, FG);   /* 4 + 4 + 2 */
    int nlb = draw_text_wrap(NULL, 0, 0, 600, 0, "one\ntwo\n\nfour", 1, FG);
    t_check(w7 == 1 && w6 == 2 && cut == 3 && nlb == 4, "text.breaks",
            "\"aaa bbb\": %d line(s) in 41 px (want 1), %d in 35 (want 2); a 10-letter word in 4 columns: %d lines "
            "(want 3); \"one\\ntwo\\n\\nfour\": %d (want 4)", w7, w6, cut, nlb);
    draw_free(c);
}

/* ---- shapes ---- */

static void test_blend(void) {
    const uint32_t BG = 0x102030, C = 0xF0E0D0;
    const double A = 0.25;
    const uint8_t m[3 * 4] = {1, 0, 0, 7, 0, 1, 1, 0, 0, 0, 0, 1};
    draw_canvas *c = draw_new(4, 3, BG);
    draw_blend_mask(c, 0, 0, 4, 3, m, 3, 4, C, A);
    int bad = 0;
    for (int y = 0; y < 3; y++)
        for (int x = 0; x < 4; x++) bad += draw_get(c, x, y) != (m[y * 4 + x] ? mix(BG, C, A) : BG);
    t_check(!bad, "blend.mask_exact", "4x3 mask at alpha 0.25: %d pixels differ from floor(v + (C - v) a + 0.5) "
            "(e.g. %06X over %06X -> %06X)", bad, C, BG, mix(BG, C, A));
    draw_free(c);

    /* a 2x2 mask scaled into 4x4 at (1, 1) on 6x6, then the same partly off the canvas */
    const uint8_t q[4] = {1, 0, 0, 1};
    c = draw_new(6, 6, BG);
    draw_blend_mask(c, 1, 1, 4, 4, q, 2, 2, C, 1.0);
    bad = 0;
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 6; x++) {
            int in = x >= 1 && x < 5 && y >= 1 && y < 5 && q[((y - 1) / 2) * 2 + (x - 1) / 2];
            bad += draw_get(c, x, y) != (in ? C : BG);
        }
    draw_canvas *e = draw_new(6, 6, BG);
    draw_blend_mask(e, -2, 3, 4, 4, q, 2, 2, C, 0.5);   /* columns -2..1, rows 3..6: top-left and bottom-right quadrants */
    int bad2 = 0;
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 6; x++) {
            int in = (x == 0 || x == 1) && (y == 5);   /* bottom-right quadrant: x 0..1, y 5..6 */
            in |= 0;                                   /* top-left quadrant: x -2..-1 is off the canvas */
            bad2 += draw_get(e, x, y) != (in ? mix(BG, C, 0.5) : BG);
        }
    t_check(!bad && !bad2, "blend.mask_scaled", "2x2 mask into 4x4: %d pixels wrong; clipped at the canvas edge: %d wrong",
            bad, bad2);
    draw_free(c);
    draw_free(e);

    c = draw_new(8, 8, BG);
    draw_fill_rect(c, -3, -3, 5, 5, C);
    draw_rect(c, 3, 3, 5, 5, 1, 0x00FF00);
    draw_blend_rect(c, 0, 7, 100, 100, 0xFFFFFF, 0.5);
    bad = 0;
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) {
            uint32_t want = x < 2 && y < 2 ? C : (x >= 3 && y >= 3 && (x == 3 || y == 3 || x == 7 || y == 7)) ? 0x00FF00u : BG;
            if (y == 7) want = mix(want, 0xFFFFFF, 0.5);
            bad += draw_get(c, x, y) != want;
        }
    t_check(!bad, "blend.rects", "clipped fill, 1-px outline, blended strip: %d pixels wrong", bad);
    draw_free(c);
}

static void test_lines(void) {
    const uint32_t BG = 0xFFFFFF, C = 0xD62728;
    draw_canvas *c = draw_new(64, 32, BG);
    draw_line(c, 10, 10.5, 50, 10.5, 3.0, C);   /* centre row 10; coverage 2 - d */
    int solid = 1, far = 0;
    for (int x = 10; x < 50; x++) solid &= draw_get(c, x, 9) == C && draw_get(c, x, 10) == C && draw_get(c, x, 11) == C;
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 64; x++) {
            double dx = x + 0.5 < 10 ? 10 - (x + 0.5) : x + 0.5 > 50 ? x + 0.5 - 50 : 0, dy = fabs(y + 0.5 - 10.5);
            if (hypot(dx, dy) >= 2.0 && draw_get(c, x, y) != BG) far++;
        }
    /* partial coverage: row 12 (d = 2... no: centre 12.5, d = 2) is untouched; row 8 likewise */
    t_check(solid && !far, "lines.width", "width 3: rows 9..11 exactly the colour along the segment; %d pixels touched "
            "at distance >= width/2 + 0.5", far);
    draw_free(c);

    c = draw_new(100, 20, BG);
    double xy[] = {5.5, 10.5, 25.5, 10.5, NAN, NAN, 60.5, 10.5, 80.5, 10.5, NAN, 3, 92.5, 10.5};
    draw_polyline(c, xy, 7, 1.0, C);
    int gap = 0, seg = draw_get(c, 15, 10) == C && draw_get(c, 70, 10) == C, lone = draw_get(c, 92, 10) == C;
    for (int x = 28; x < 58; x++)
        for (int y = 0; y < 20; y++) gap += draw_get(c, x, y) != BG;
    t_check(seg && lone && !gap, "lines.polyline", "segments drawn %d, NaN gap clean (%d pixels), lone point as a dot %d",
            seg, gap, lone);
    draw_free(c);

    c = draw_new(20, 20, BG);
    draw_disc(c, 10, 10, 4, C);
    int disc = draw_get(c, 10, 10) == C && draw_get(c, 7, 10) == C && draw_get(c, 10, 15) == BG && draw_get(c, 0, 0) == BG;
    t_check(disc, "lines.disc", "radius 4 at (10, 10): centre and (7, 10) solid, (10, 15) and corners untouched");
    draw_free(c);
}

static void test_blit(void) {
    const uint8_t src[2 * 2 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9};
    draw_canvas *c = draw_new(6, 6, 0);
    int rc = draw_blit(c, 1, 1, 4, 4, src, 2, 2, 3, DRAW_NEAREST);
    int bad = 0;
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 6; x++) {
            uint32_t want = 0;
            if (x >= 1 && x < 5 && y >= 1 && y < 5) {
                const uint8_t *p = src + (((y - 1) / 2) * 2 + (x - 1) / 2) * 3;
                want = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
            }
            bad += draw_get(c, x, y) != want;
        }
    t_check(rc == 0 && !bad, "blit.nearest", "2x2 into 4x4 at (1, 1): %d pixels wrong", bad);
    draw_free(c);

    enum { SH = 13, SW = 17, DH = 5, DW = 7 };
    uint8_t img[SH * SW * 3], ref[DH * DW * 3];
    for (int i = 0; i < SH * SW * 3; i++) img[i] = (uint8_t)(i * 37 + (i / 3) * 11);
    image_resize_u8(ref, DH, DW, img, SH, SW, 3, IMAGE_BILINEAR);
    c = draw_new(DW, DH, 0);
    rc = draw_blit(c, 0, 0, DW, DH, img, SH, SW, 3, DRAW_BILINEAR);
    t_check(rc == 0 && !memcmp(c->px, ref, sizeof ref), "blit.bilinear", "17x13 -> 7x5 equals image_resize_u8 (Pillow BILINEAR)");
    int e1 = draw_blit(c, 0, 0, 3, 3, img, SH, SW, 2, DRAW_NEAREST), e2 = draw_blit(c, 0, 0, 0, 3, img, SH, SW, 3, DRAW_NEAREST);
    t_check(e1 == -1 && e2 == -1 && strstr(ar_error(), "draw_blit"), "blit.errors", "2 channels, empty target refused: %s", ar_error());
    draw_free(c);

    int ox, oy, ow, oh, ok;
    draw_fit(10, 20, 50, 50, 200, 100, &ox, &oy, &ow, &oh);
    ok = ox == 10 && ow == 50 && oh == 25 && oy == 20 + 12;
    draw_fit(0, 0, 50, 40, 30, 60, &ox, &oy, &ow, &oh);
    ok &= oh == 40 && ow == 20 && ox == 15 && oy == 0;
    t_check(ok, "blit.fit", "200x100 in 50x50 -> 50x25 centred; 30x60 in 50x40 -> 20x40 centred");
}

/* ---- loss plot ---- */

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* Pixels of exactly rgb in the image (inside x0..x1, all rows); *ymean their mean row. */
static long count_rgb(const ar_image *im, uint32_t rgb, int x0, int x1, double *ymean) {
    long n = 0;
    double sy = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = x0 < 0 ? 0 : x0; x < im->w && x < x1; x++) {
            const uint8_t *p = im->px + ((size_t)y * im->w + x) * 3;
            if (((uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2]) == rgb) { n++; sy += y; }
        }
    if (ymean) *ymean = n ? sy / n : NAN;
    return n;
}

static void test_plot(void) {
    char mpath[512], png[512], text[16384];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", g_tmp);
    snprintf(png, sizeof png, "%s/loss.png", g_tmp);
    /* 40 steps: loss falls 4 -> ~0.5, step 20 null, val every 10; no "dice" key; a garbage line and a blank line */
    size_t n = 0;
    for (int s = 1; s <= 40; s++) {
        double loss = 0.5 + 3.5 * exp(-s / 8.0);
        char lv[32], val[128];
        if (s == 20) snprintf(lv, sizeof lv, "null");
        else snprintf(lv, sizeof lv, "%.6f", loss);
        if (s % 10 == 0) snprintf(val, sizeof val, "%.4f,\"val_giou\":%.4f", loss * 1.1, 0.2 + s / 60.0);
        else snprintf(val, sizeof val, "null,\"val_giou\":null");
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "{\"step\":%d,\"loss\":%s,\"ce\":%.6f,\"bce\":0.3,\"lr\":0.001,\"val_loss\":%s,\"time\":1.0}\n",
                              s, lv, loss * 0.6, val);
        if (s == 7) n += (size_t)snprintf(text + n, sizeof text - n, "{\"step\":8,\"loss\":1.0, cut\n\n");
    }
    write_file(mpath, text);
    ar_image im = {0};
    int rc = report_loss_plot(mpath, png);
    int ld = rc == 0 ? image_load(&im, png, IMAGE_RGB) : -1;
    t_check(rc == 0 && ld == 0 && im.w == REPORT_PLOT_W && im.h == REPORT_PLOT_H && im.c == 3, "plot.png",
            "report_loss_plot -> %d, PNG read back %d: %d x %d x %d (want %d x %d x 3) %s", rc, ld, im.w, im.h, im.c,
            REPORT_PLOT_W, REPORT_PLOT_H, rc ? ar_error() : "");
    if (ld == 0) {
        double y_left, y_right;
        long nl = count_rgb(&im, REPORT_RGB_LOSS, 0, im.w, NULL), nce = count_rgb(&im, REPORT_RGB_CE, 0, im.w, NULL);
        long nv = count_rgb(&im, REPORT_RGB_VAL_LOSS, 0, im.w, NULL), ng = count_rgb(&im, REPORT_RGB_VAL_GIOU, 0, im.w, NULL);
        long nd = count_rgb(&im, REPORT_RGB_DICE, 0, im.w, NULL), nb = count_rgb(&im, REPORT_RGB_BCE, 0, im.w, NULL);
        t_check(nl > 300 && nce > 300 && nb > 300 && nv > 20 && ng > 100 && nd == 0, "plot.series",
                "pixels of each colour: loss %ld, ce %ld, bce %ld, val_loss %ld, val_giou %ld; dice (no key) %ld",
                nl, nce, nb, nv, ng, nd);
        /* the plot area spans x 76..736 for steps 0..40: 16.5 px a step */
        long l = count_rgb(&im, REPORT_RGB_LOSS, 80, 230, &y_left), r = count_rgb(&im, REPORT_RGB_LOSS, 420, 560, &y_right);
        t_check(l > 0 && r > 0 && y_left + 40 < y_right, "plot.falls", "loss pixels: mean row %.1f at steps 0..9, %.1f at "
                "steps 21..29 (lower on the canvas as the loss falls)", y_left, y_right);
        long gapn = count_rgb(&im, REPORT_RGB_LOSS, 76 + (int)(20 * 16.5) - 8, 76 + (int)(20 * 16.5) + 9, NULL);
        t_check(gapn == 0, "plot.null_gap", "loss pixels within 8 px of step 20 (null): %ld", gapn);
    }
    image_free(&im);

    /* one step; only nulls; missing file; nothing usable */
    write_file(mpath, "{\"step\":1,\"loss\":2.5,\"ce\":null,\"val_loss\":null}\n");
    rc = report_loss_plot(mpath, png);
    ld = rc == 0 ? image_load(&im, png, IMAGE_RGB) : -1;
    /* steps 0..2 on x 76..736: the dot at x 406 */
    long one = ld == 0 ? count_rgb(&im, REPORT_RGB_LOSS, 396, 417, NULL) : 0;
    t_check(rc == 0 && ld == 0 && im.w == REPORT_PLOT_W && im.h == REPORT_PLOT_H && one >= 9, "plot.one_step",
            "one step: %d x %d, %ld loss pixels in the dot at the middle of the x axis", im.w, im.h, one);
    image_free(&im);
    write_file(mpath, "{\"step\":1,\"loss\":null}\n{\"step\":2}\n");
    rc = report_loss_plot(mpath, png);
    ld = rc == 0 ? image_load(&im, png, IMAGE_RGB) : -1;
    long none = ld == 0 ? count_rgb(&im, REPORT_RGB_LOSS, 0, im.w, NULL) : -1;
    t_check(rc == 0 && ld == 0 && none == 0, "plot.no_values", "only nulls: a plot (%d) with no curve (%ld loss pixels)", rc, none);
    image_free(&im);
    char missing[600];
    snprintf(missing, sizeof missing, "%s/nope/metrics.jsonl", g_tmp);
    rc = report_loss_plot(missing, png);
    t_check(rc == -1 && strstr(ar_error(), missing) && strstr(ar_error(), "cannot open"), "plot.missing_file", "%s", ar_error());
    write_file(mpath, "not json\n[1,2]\n{\"loss\":1}\n{\"step\":\"3\"}\n");
    rc = report_loss_plot(mpath, png);
    t_check(rc == -1 && strstr(ar_error(), mpath) && strstr(ar_error(), "no metrics lines"), "plot.no_lines", "%s", ar_error());
    snprintf(missing, sizeof missing, "%s/metrics.jsonl/x.png", g_tmp);   /* below a regular file */
    write_file(mpath, "{\"step\":1,\"loss\":1}\n");
    ar_error_clear();
    rc = report_loss_plot(mpath, missing);
    t_check(rc == -1 && strstr(ar_error(), "loss plot: ") && strstr(ar_error(), "x.png"), "plot.unwritable", "%s", ar_error());
}

/* ---- grid ---- */

static void test_grid(void) {
    enum { H = 40, W = 60 };
    uint8_t img[H * W * 3], pred[H * W], gt[H * W], crop[10 * 8 * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = img + (y * W + x) * 3;
            p[0] = (uint8_t)(x * 4);
            p[1] = (uint8_t)(y * 6);
            p[2] = 128;
            pred[y * W + x] = x >= 10 && x < 30 && y >= 5 && y < 25;
            gt[y * W + x] = x >= 15 && x < 40 && y >= 10 && y < 30;
        }
    for (int i = 0; i < (int)sizeof crop; i++) crop[i] = (uint8_t)(i * 7);
    const int cols = 2, tile = 96;
    report_grid *g = report_grid_new(cols, tile);
    const float box[4] = {12, 8, 44, 30};
    int rc = report_grid_add(g, img, H, W, "the red thing on the left of the blue square, a long sentence to wrap",
                             NULL, NULL, 0, 0, pred, gt, "Sure, [SEG].", 0.6521);
    rc |= report_grid_add(g, img, H, W, NULL, box, NULL, 0, 0, pred, gt, "a caption", NAN);
    rc |= report_grid_add(g, img, H, W, "image reference", NULL, crop, 10, 8, NULL, NULL, NULL, 0.0);
    int bad_add = report_grid_add(g, NULL, H, W, NULL, NULL, NULL, 0, 0, NULL, NULL, NULL, 0);
    int bad_crop = report_grid_add(g, img, H, W, NULL, NULL, crop, 0, 8, NULL, NULL, NULL, 0);
    t_check(rc == 0 && bad_add == -1 && bad_crop == -1 && report_grid_count(g) == 3, "grid.add",
            "3 examples added, NULL image and 0-row crop refused (%s), count %d", ar_error(), report_grid_count(g));
    char png[512];
    snprintf(png, sizeof png, "%s/grid.png", g_tmp);
    rc = report_grid_save(g, png);
    ar_image im = {0};
    int ld = rc == 0 ? image_load(&im, png, IMAGE_RGB) : -1;
    int ew, eh;
    report_grid_size(cols, tile, 3, &ew, &eh);
    int fw = REPORT_GRID_PAD + 2 * (3 * tile + 2 * REPORT_GRID_GAP + REPORT_GRID_PAD);   /* 2 columns */
    int fh = REPORT_GRID_PAD + 2 * (tile + REPORT_GRID_TEXT_H + REPORT_GRID_PAD);        /* 2 rows */
    t_check(rc == 0 && ld == 0 && im.w == fw && im.h == fh && ew == fw && eh == fh, "grid.size",
            "3 examples, 2 columns, tile 96: PNG %d x %d, report_grid_size %d x %d, formula %d x %d %s", im.w, im.h, ew, eh,
            fw, fh, rc ? ar_error() : "");
    if (ld == 0) {
        const int cw = 3 * tile + 2 * REPORT_GRID_GAP, P = REPORT_GRID_PAD, T2 = tile + REPORT_GRID_GAP;
        /* example 0: prediction tile, ground-truth tile; example 1: box in the reference tile */
        long pred_px = count_rgb(&im, REPORT_RGB_PRED, P + T2, P + 2 * T2, NULL);
        long gt_px = count_rgb(&im, REPORT_RGB_GT, P + 2 * T2, P + cw, NULL);
        long box_px = count_rgb(&im, REPORT_RGB_BOX, P + cw + P, P + cw + P + tile, NULL);
        long box0 = count_rgb(&im, REPORT_RGB_BOX, P, P + tile, NULL);
        t_check(pred_px > 50 && gt_px > 50 && box_px > 50 && box0 == 0, "grid.overlays",
                "outline pixels: prediction %ld, ground truth %ld (in their tiles), box %ld in example 1's reference, "
                "%ld in example 0's (no box)", pred_px, gt_px, box_px, box0);
        /* cells at the documented places: the bottom-right cell (no 4th example) is all background,
         * the first row of example 3's cell (top-left corner of its reference tile) is the tile label strip */
        const int ch = tile + REPORT_GRID_TEXT_H;
        long bg = 0, cell = (long)cw * ch;
        for (int y = P + ch + P; y < P + 2 * ch + P; y++)
            for (int x = P + cw + P; x < P + 2 * cw + P; x++) {
                const uint8_t *p = im.px + ((size_t)y * im.w + x) * 3;
                bg += p[0] == 0xF4 && p[1] == 0xF4 && p[2] == 0xF4;
            }
        const uint8_t *gap = im.px + ((size_t)(P + ch + P / 2) * im.w + P + 5) * 3;   /* between rows of cells */
        const uint8_t *tl = im.px + ((size_t)(P + ch + P) * im.w + P) * 3;            /* example 2's first pixel */
        t_check(bg == cell && gap[0] == 0xF4 && tl[0] != 0xF4, "grid.layout",
                "empty 4th cell: %ld of %ld pixels background; gap between rows background; example 2 at (%d, %d)",
                bg, cell, P, P + ch + P);
    }
    image_free(&im);
    report_grid_free(g);

    g = report_grid_new(4, 64);
    report_grid_add(g, img, H, W, "x", NULL, NULL, 0, 0, pred, NULL, "y", 0.5);
    report_grid_size(4, 64, 1, &ew, &eh);
    rc = report_grid_save(g, png);
    ld = rc == 0 ? image_load(&im, png, IMAGE_RGB) : -1;
    t_check(ld == 0 && im.w == ew && im.h == eh && ew == 8 + 3 * 64 + 8 + 8 && eh == 8 + 64 + 72 + 8, "grid.one",
            "one example, cols 4: %d x %d (want %d x %d)", im.w, im.h, 8 + 3 * 64 + 16, 8 + 64 + 80);
    image_free(&im);
    report_grid_free(g);

    /* boxes off the image or not finite are clipped or ignored, not UB */
    g = report_grid_new(1, 48);
    const float wild[4] = {-1e30f, 5, 1e30f, 35}, nanbox[4] = {NAN, 0, 10, 10};
    int r1 = report_grid_add(g, img, H, W, NULL, wild, NULL, 0, 0, NULL, NULL, NULL, 0.5);
    int r2 = report_grid_add(g, img, H, W, NULL, nanbox, NULL, 0, 0, NULL, NULL, NULL, 0.5);
    rc = report_grid_save(g, png);
    ld = rc == 0 ? image_load(&im, png, IMAGE_RGB) : -1;
    long wild_box = ld == 0 ? count_rgb(&im, REPORT_RGB_BOX, 0, im.w, NULL) : 0;
    t_check(r1 == 0 && r2 == 0 && rc == 0 && wild_box > 0, "grid.wild_box",
            "box (-1e30, 5, 1e30, 35) drawn clipped to the image (%ld pixels), a NaN box ignored", wild_box);
    image_free(&im);
    report_grid_free(g);

    report_grid *b1 = report_grid_new(0, 64), *b2 = report_grid_new(2, 10);
    g = report_grid_new(2, 64);
    int e = report_grid_save(g, png);
    t_check(!b1 && !b2 && e == -1 && strstr(ar_error(), "no examples"), "grid.errors",
            "cols 0, tile 10 refused; saving an empty grid: %s", ar_error());
    report_grid_free(g);
}

/* ---- anyref plot ---- */

static int exists(const char *path) { return access(path, R_OK) == 0; }

static void test_command(void) {
    char run[512], m[600], out[600], other[600];
    snprintf(run, sizeof run, "%s/run", g_tmp);
    snprintf(m, sizeof m, "%s/metrics.jsonl", run);
    snprintf(out, sizeof out, "%s/loss.png", run);
    snprintf(other, sizeof other, "%s/other.png", g_tmp);
    if (mkdir(run, 0755)) { t_fail("plot_cmd.setup", "mkdir %s", run); return; }
    write_file(m, "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n");
    fflush(stdout);
    char *a1[] = {"plot", run, NULL};
    int r1 = report_plot_main(2, a1), e1 = exists(out);
    char *a2[] = {"plot", m, "--out", other, NULL};
    int r2 = report_plot_main(4, a2), e2 = exists(other);
    char nope[600];
    snprintf(nope, sizeof nope, "%s/nope", g_tmp);
    char *a3[] = {"plot", nope, NULL}, *a4[] = {"plot", NULL}, *a5[] = {"plot", run, "--bogus", NULL};
    int r3 = report_plot_main(2, a3), r4 = report_plot_main(1, a4), r5 = report_plot_main(3, a5);
    ar_image im = {0};
    int ld = image_load(&im, out, IMAGE_RGB);
    t_check(r1 == 0 && e1 && ld == 0 && im.w == REPORT_PLOT_W && r2 == 0 && e2 && r3 == 1 && r4 == 2 && r5 == 2,
            "plot_cmd", "RUN_DIR -> RUN_DIR/loss.png (%d, %s), a metrics file with --out (%d, %s), missing run %d "
            "(want 1), no argument %d and unknown option %d (want 2)", r1, e1 ? "written" : "absent", r2,
            e2 ? "written" : "absent", r3, r4, r5);
    image_free(&im);
}

int main(void) {
    if (!mkdtemp(g_tmp)) { t_fail("report.tmpdir", "mkdtemp failed"); return 1; }
    test_font();
    test_text();
    test_blend();
    test_lines();
    test_blit();
    test_plot();
    test_grid();
    test_command();
    if (getenv("KEEP")) { printf("kept %s\n", g_tmp); return t_exit_code(); }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) t_fail("report.cleanup", "%s", cmd);
    return t_exit_code();
}
