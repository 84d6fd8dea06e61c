/* data/draw.h — a small RGB8 raster for the pictures the commands write
 * (loss plots, grids of validation examples, mask overlays): rectangles,
 * anti-aliased lines and discs, binary masks blended over a region, images
 * scaled into a rectangle, and text in an embedded bitmap font; saved as PNG.
 *
 * CANVAS
 *   draw_canvas holds h rows of w pixels, RGB interleaved:
 *   px[(y * w + x) * 3 + ch]. Colours are 0xRRGGBB. Every call clips to the
 *   canvas: drawing outside it is allowed and changes nothing there.
 *   Integer rectangles are (x, y, w, h): columns x..x+w-1, rows y..y+h-1.
 *   Real coordinates (lines, discs): pixel (x, y) covers [x, x+1) x [y, y+1),
 *   its centre is (x + 0.5, y + 0.5).
 *
 * BLENDING (exact, the tests rely on it)
 *   A pixel blended with colour C at opacity a in [0, 1] becomes, per channel,
 *   v' = (uint8_t)floor(v + (C - v) * a + 0.5). a = 1 gives exactly C,
 *   a = 0 leaves v. Anti-aliased shapes blend with a = their coverage of the
 *   pixel (1 inside, so a solid line's interior has exactly its colour).
 *
 * FONT
 *   A bitmap font drawn for this project (not taken from any font file): each
 *   printable ASCII character 32..126 is a 5 x 9 grid of cells, rows 0..6
 *   above the baseline (capitals, digits, ascenders), rows 7..8 below it
 *   (descenders of g j p q y, the comma, the underscore). At scale s every
 *   cell is an s x s square, characters advance DRAW_ADVANCE * s columns and
 *   lines DRAW_LINE_H * s rows. Text is read as UTF-8: each code point
 *   outside printable ASCII draws as '?', control characters as a space
 *   ('\n' breaks the line in draw_text_wrap). A string of n characters is
 *   draw_text_width = (DRAW_ADVANCE * n - 1) * s wide (0 when n = 0) and a
 *   block of L lines (L - 1) * DRAW_LINE_H * s + DRAW_FONT_H * s tall.
 *
 * Depends on core/error.h and data/image.h (image_write_png; image_resize_u8
 * for DRAW_BILINEAR). Why in data/ and not core/: core/ depends on nothing
 * above it (and `make fuzz` links the core sources alone), while saving needs the PNG
 * writer of data/image.c.
 */
#ifndef ANYREF_DATA_DRAW_H
#define ANYREF_DATA_DRAW_H

#include <stdint.h>

#define DRAW_FONT_W 5    /* glyph columns */
#define DRAW_FONT_H 9    /* glyph rows: 7 above the baseline, 2 below */
#define DRAW_ADVANCE 6   /* columns from one character to the next (scale 1) */
#define DRAW_LINE_H 11   /* rows from one line of text to the next (scale 1) */

typedef struct {
    int w, h;
    uint8_t *px;   /* [h, w, 3], malloc'd */
} draw_canvas;

/* A w x h canvas filled with bg. NULL + ar_error on bad sizes / no memory. */
draw_canvas *draw_new(int w, int h, uint32_t bg);
void draw_free(draw_canvas *c);   /* NULL ok */
/* image_write_png of the canvas. 0, or -1 + ar_error. */
int draw_save_png(const draw_canvas *c, const char *path);
/* The pixel at (x, y) as 0xRRGGBB; 0 outside the canvas. */
uint32_t draw_get(const draw_canvas *c, int x, int y);

/* One pixel blended at opacity a (clipped). */
void draw_blend_px(draw_canvas *c, int x, int y, uint32_t rgb, double a);
/* The rectangle (x, y, w, h) set to rgb / blended at opacity a. */
void draw_fill_rect(draw_canvas *c, int x, int y, int w, int h, uint32_t rgb);
void draw_blend_rect(draw_canvas *c, int x, int y, int w, int h, uint32_t rgb, double a);
/* The outline of (x, y, w, h), t >= 1 pixels thick, inside the rectangle. */
void draw_rect(draw_canvas *c, int x, int y, int w, int h, int t, uint32_t rgb);

/* An anti-aliased line from (x0, y0) to (x1, y1) of the given width (round
 * caps): coverage of a pixel = clamp(width / 2 + 0.5 - d, 0, 1) where d is
 * the distance from the pixel's centre to the segment; blended as above. */
void draw_line(draw_canvas *c, double x0, double y0, double x1, double y1, double width, uint32_t rgb);
/* Segments between consecutive points xy[2i], xy[2i+1], i < n; a point with
 * a NaN coordinate breaks the line there, and a finite point with no finite
 * neighbour is drawn as a disc of radius width + 1 (so lone points show). */
void draw_polyline(draw_canvas *c, const double *xy, int n, double width, uint32_t rgb);
/* An anti-aliased filled disc (coverage clamp(r + 0.5 - d, 0, 1)). */
void draw_disc(draw_canvas *c, double cx, double cy, double r, uint32_t rgb);

/* mask[mh, mw] (nonzero = in) scaled nearest into the rectangle (x, y, w, h)
 * (destination pixel (i, j) of the rectangle reads mask row
 * floor((i + 0.5) * mh / h), column floor((j + 0.5) * mw / w)); each pixel
 * whose mask cell is in is blended with rgb at opacity alpha. */
void draw_blend_mask(draw_canvas *c, int x, int y, int w, int h, const uint8_t *mask, int mh, int mw,
                     uint32_t rgb, double alpha);
/* The boundary of the same scaled mask: the pixels in the mask with a
 * 4-neighbour outside it (or at the rectangle's edge), set to rgb. */
void draw_mask_outline(draw_canvas *c, int x, int y, int w, int h, const uint8_t *mask, int mh, int mw,
                       uint32_t rgb);

typedef enum { DRAW_NEAREST = 0, DRAW_BILINEAR = 1 } draw_filter;
/* src[sh, sw, sc] (sc = 3 RGB or 1 grey) scaled into the rectangle
 * (x, y, w, h). DRAW_NEAREST: the source pixel of the rule of
 * draw_blend_mask. DRAW_BILINEAR: Pillow's antialiased bilinear resize
 * (image_resize_u8), good for shrinking photographs into thumbnails.
 * 0, or -1 + ar_error (bad arguments, no memory). */
int draw_blit(draw_canvas *c, int x, int y, int w, int h, const uint8_t *src, int sh, int sw, int sc,
              draw_filter f);
/* The largest rectangle of aspect sw : sh centred in (x, y, w, h):
 * *ox, *oy, *ow, *oh (each side at least 1). */
void draw_fit(int x, int y, int w, int h, int sw, int sh, int *ox, int *oy, int *ow, int *oh);

/* 1 where the glyph of character ch has ink at (row, col) (row < DRAW_FONT_H,
 * col < DRAW_FONT_W); characters outside 32..126 use '?'. */
int draw_glyph_bit(int ch, int row, int col);
/* The number of characters s draws as (UTF-8 code points). */
int draw_text_len(const char *s);
int draw_text_width(const char *s, int scale);
/* s on one line, its top-left corner at (x, y) (the top of row 0 of the
 * glyphs); '\n' draws as a space. Returns the x after the last character
 * (x + n * DRAW_ADVANCE * scale). */
int draw_text(draw_canvas *c, int x, int y, const char *s, int scale, uint32_t rgb);
/* s word-wrapped into lines at most w pixels wide (breaks at spaces and
 * '\n'; a word longer than a line is cut), from (x, y) down. At most
 * max_lines lines (<= 0: no limit); text that does not fit ends its last
 * line with "...". c NULL measures only. Returns the number of lines. */
int draw_text_wrap(draw_canvas *c, int x, int y, int w, int max_lines, const char *s, int scale, uint32_t rgb);

#endif
