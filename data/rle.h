/* data/rle.h — COCO run-length masks, bit for bit as pycocotools computes them
 * (cocodataset/cocoapi common/maskApi.c and PythonAPI/pycocotools/_mask.pyx
 * as PyPI's pycocotools builds them from the ppwwyyxx/cocoapi fork; checked
 * against pycocotools 2.0.7 by tests/test_coco.c).
 *
 * A mask of h x w pixels is read in COLUMN-MAJOR order (pixel (y, x) is
 * element x*h + y, as pycocotools' Fortran-ordered arrays), and stored as run
 * lengths cnts[0..m) that alternate background, foreground, background, ...
 * starting with background (cnts[0] may be 0). The counts of every mask made
 * here sum to h*w; masks h*w > UINT32_MAX are refused (counts are uint32 as in
 * maskApi.c).
 *
 * Compressed strings ("counts" in COCO json files, rleToString/rleFrString):
 * each count, from the fourth on minus the count two places before it, is
 * written as signed 5-bit groups, least significant first, one character
 * 48 + group (+32 when another group follows). rle_from_string is strict:
 * only characters '0'..'o', no unfinished last group, every count in
 * [0, UINT32_MAX], counts summing to exactly h*w; a count whose delta needs
 * more than six characters (|delta| >= 2^29, images above ~536 Mpixel) is
 * read with 64-bit arithmetic where maskApi.c overflows a 32-bit int.
 *
 * Polygons (rleFrPoly): vertices scaled by 5 and rounded as (int)(5*v + 0.5)
 * (truncation toward zero, so negative coordinates round as maskApi.c does),
 * every edge walked in 5x steps, the column crossings collected, sorted and
 * turned into runs; duplicate crossings cancel. The arithmetic is done without
 * fused multiply-add so the doubles round exactly as in the reference build.
 * Coordinates must satisfy |5*v + 0.5| < 2^30 and the scaled perimeter must
 * stay under RLE_POLY_MAX_STEPS steps, else -1 + ar_error (maskApi.c would
 * overflow or run for minutes).
 *
 * Errors: -1 + ar_error (core/error.h) on bad arguments or memory; nothing
 * exits. Depends on core/error.h and libc only.
 */
#ifndef ANYREF_DATA_RLE_H
#define ANYREF_DATA_RLE_H

#include <stddef.h>
#include <stdint.h>

#define RLE_POLY_MAX_STEPS ((uint64_t)1 << 27)   /* boundary points of one polygon at 5x */

typedef struct {
    uint32_t h, w;     /* mask size: height, width */
    size_t m;          /* number of counts */
    uint32_t *cnts;    /* [m] malloc'd run lengths, background first */
} rle_mask;

void rle_free(rle_mask *r);                 /* frees cnts and zeroes *r; NULL ok */
int  rle_copy(rle_mask *dst, const rle_mask *src);

/* Run lengths of the h x w mask M (column-major; any nonzero byte is
 * foreground). rle_encode_hw: the same mask given row-major, M[y*w + x]. */
int  rle_encode(rle_mask *r, const uint8_t *M, uint32_t h, uint32_t w);
int  rle_encode_hw(rle_mask *r, const uint8_t *M, uint32_t h, uint32_t w);
/* Writes 0/1 bytes: rle_decode column-major M[x*h + y], rle_decode_hw row-major
 * M[y*w + x] (what images use). -1 if the counts do not sum to h*w. */
int  rle_decode(const rle_mask *r, uint8_t *M);
int  rle_decode_hw(const rle_mask *r, uint8_t *M);

/* Uncompressed RLE ({"size": [h, w], "counts": [...]}): copies cnts[0..m);
 * -1 unless they sum to h*w. */
int  rle_from_counts(rle_mask *r, const uint32_t *cnts, size_t m, uint32_t h, uint32_t w);
/* rleFrPoly: polygon xy[0..2k) = x0,y0,x1,y1,... (k >= 1 points) on an h x w image. */
int  rle_from_poly(rle_mask *r, const double *xy, size_t k, uint32_t h, uint32_t w);
/* rleFrBbox: box (x, y, width, height) as the polygon of its four corners. */
int  rle_from_bbox(rle_mask *r, const double bb[4], uint32_t h, uint32_t w);

/* rleToString: the compressed string, malloc'd and NUL-terminated, its length
 * in *len (may be NULL); NULL + ar_error on failure. */
char *rle_to_string(const rle_mask *r, size_t *len);
/* rleFrString, strictly (see above): s[0..len) need not be NUL-terminated. */
int  rle_from_string(rle_mask *r, const char *s, size_t len, uint32_t h, uint32_t w);

/* rleArea: number of foreground pixels. */
uint32_t rle_area(const rle_mask *r);
/* rleToBbox as PyPI's pycocotools (>= 2.0.2): (x, y, width, height) of the
 * foreground runs of nonzero length, a run that crosses a column making the
 * box full height; zeros when m < 2. */
void rle_to_bbox(const rle_mask *r, double bb[4]);
/* rleMerge: union (intersect = 0) or intersection of R[0..n), n >= 1, all of
 * one size (else -1: maskApi.c returns an empty 0x0 mask there).
 * Merge and IoU read a zero-length run after the first as the mask it decodes
 * to (maskApi.c stops early on those and can overflow its buffer; COCO's
 * files and every mask made here have none). */
int  rle_merge(rle_mask *out, const rle_mask *R, size_t n, int intersect);

/* rleIou / bbIou as pycocotools.mask.iou(dt, gt, iscrowd): o[d*n + g] for
 * dt[0..m), gt[0..n). With iscrowd[g] (iscrowd may be NULL) the union is the
 * detection's area alone. Pairs whose boxes do not overlap are 0; RLE pairs
 * of different sizes whose boxes overlap are -1 (NaN if memory runs out).
 * Boxes are (x, y, w, h). */
void rle_iou(const rle_mask *dt, size_t m, const rle_mask *gt, size_t n, const uint8_t *iscrowd, double *o);
void bb_iou(const double *dt, size_t m, const double *gt, size_t n, const uint8_t *iscrowd, double *o);

#endif
