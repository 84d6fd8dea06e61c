/* tests/fuzz/fuzz_coco.c — libFuzzer target for data/coco.c and data/rle.c.
 *
 * The first byte picks what the rest is:
 *   0: a COCO instances JSON document for coco_load_buffer. When it loads,
 *      checks the index (every annotation grouped under its image once, the
 *      lookups find every id) and rasterises the masks of small images
 *      (coco_ann_to_rle), which must decode, stay within the image and come
 *      back unchanged through rle_to_string / rle_from_string.
 *   1: two size bytes, then a compressed RLE string for rle_from_string.
 *      When it parses: string -> counts -> string -> counts is the identity,
 *      decode -> encode gives the same mask, area, bbox and self-IoU agree.
 *   2: two size bytes, then int8 coordinate pairs (quarter pixels) for
 *      rle_from_poly, checked like 1.
 * Traps on any broken invariant.
 *
 *     make BUILD=build-fuzz fuzz && build-fuzz/fuzz/fuzz_coco -max_total_time=60
 */
#include "core/error.h"
#include "data/coco.h"
#include "data/rle.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* `make fuzz` links only the core sources; core/arena.c needs the backend allocator.
 * Weak, so a build that also links kernels/cpu/mem.c uses the real one. */
__attribute__((weak)) const char *k_backend_name(void) { return "fuzz"; }
__attribute__((weak)) void *k_malloc(size_t bytes) {
    size_t r = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}
__attribute__((weak)) void k_free(void *p) { free(p); }

/* Properties every valid mask has; traps otherwise. */
static void check_mask(const rle_mask *r) {
    size_t hw = (size_t)r->h * r->w;
    uint8_t *m = malloc(hw + 1), *m2 = malloc(hw + 1);
    if (!m || !m2) __builtin_trap();
    if (rle_decode(r, m) != 0) __builtin_trap();
    size_t ones = 0;
    for (size_t i = 0; i < hw; i++) ones += m[i];
    if (ones != rle_area(r)) __builtin_trap();
    /* string round trip */
    size_t len;
    char *s = rle_to_string(r, &len);
    if (!s || strlen(s) != len) __builtin_trap();
    rle_mask b;
    if (rle_from_string(&b, s, len, r->h, r->w) != 0 || b.m != r->m ||
        (r->m && memcmp(b.cnts, r->cnts, r->m * sizeof *r->cnts)))
        __builtin_trap();
    rle_free(&b);
    free(s);
    /* decode -> encode -> decode, row-major too */
    rle_mask e;
    if (rle_encode(&e, m, r->h, r->w) != 0 || rle_area(&e) != ones) __builtin_trap();
    if (rle_decode(&e, m2) != 0 || memcmp(m, m2, hw)) __builtin_trap();
    if (rle_decode_hw(&e, m2) != 0) __builtin_trap();
    rle_mask eh;
    if (rle_encode_hw(&eh, m2, r->h, r->w) != 0 || eh.m != e.m || memcmp(eh.cnts, e.cnts, e.m * sizeof *e.cnts))
        __builtin_trap();
    /* the box holds every foreground pixel */
    double bb[4];
    rle_to_bbox(r, bb);
    if (ones) {
        for (size_t x = 0; x < r->w; x++)
            for (size_t y = 0; y < r->h; y++)
                if (m[x * r->h + y] && (x < bb[0] || x >= bb[0] + bb[2] || y < bb[1] || y >= bb[1] + bb[3])) __builtin_trap();
    }
    /* self-IoU, self-union, intersection with the complement */
    double o;
    rle_iou(r, 1, r, 1, NULL, &o);
    if (o != (ones ? 1.0 : 0.0)) __builtin_trap();
    rle_mask u, pair[2] = {*r, e};
    if (rle_merge(&u, pair, 2, 0) != 0 || rle_area(&u) != ones) __builtin_trap();
    rle_free(&u);
    for (size_t i = 0; i < hw; i++) m2[i] = !m[i];
    rle_mask c;
    if (rle_encode(&c, m2, r->h, r->w) != 0) __builtin_trap();
    pair[1] = c;
    if (rle_merge(&u, pair, 2, 1) != 0 || rle_area(&u) != 0) __builtin_trap();
    rle_free(&u);
    if (rle_merge(&u, pair, 2, 0) != 0 || rle_area(&u) != hw) __builtin_trap();
    rle_free(&u);
    rle_free(&c), rle_free(&e), rle_free(&eh);
    free(m), free(m2);
}

static void fuzz_json(const uint8_t *data, size_t size) {
    coco_dataset ds;
    if (coco_load_buffer((const char *)data, size, "fuzz.json", &ds) != 0) return;
    size_t *seen = calloc(ds.n_anns + 1, sizeof *seen);
    for (size_t i = 0; i < ds.n_images; i++) {
        const coco_image *im = &ds.images[i];
        if (im->first_ann + im->n_anns > ds.n_anns || !im->file_name) __builtin_trap();
        if (coco_find_image(&ds, im->id) != im) __builtin_trap();
        for (size_t j = 0; j < im->n_anns; j++) {
            size_t a = ds.img_anns[im->first_ann + j];
            if (a >= ds.n_anns || ds.anns[a].image != i || seen[a]++) __builtin_trap();
        }
    }
    for (size_t i = 0; i < ds.n_anns; i++) {
        const coco_annotation *a = &ds.anns[i];
        if (!seen[i] || coco_find_ann(&ds, a->id) != a) __builtin_trap();
        const coco_image *im = &ds.images[a->image];
        if (im->id != a->image_id) __builtin_trap();
        if ((uint64_t)im->height * im->width > 4096 || a->seg == COCO_SEG_NONE) continue;
        if (a->seg == COCO_SEG_POLYGONS) {   /* keep the rasterisation short */
            int small = 1;
            for (uint32_t p = 0; p < a->n_poly; p++)
                for (uint32_t k = 0; k < a->poly_len[p]; k++) {
                    double v = a->poly_xy[a->poly_start[p] + k];
                    small &= v > -200 && v < 200;
                }
            if (!small || a->n_poly > 16) continue;
        } else if ((uint64_t)a->rle_h * a->rle_w > 4096) continue;
        rle_mask r;
        if (coco_ann_to_rle(&ds, a, &r) != 0) __builtin_trap();   /* anything loaded has a mask */
        check_mask(&r);
        rle_free(&r);
    }
    for (size_t i = 0; i < ds.n_cats; i++)
        if (coco_find_category(&ds, ds.cats[i].id) != &ds.cats[i] || !ds.cats[i].name) __builtin_trap();
    free(seen);
    coco_free(&ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] % 3;
    data++, size--;
    if (mode == 0) { fuzz_json(data, size); return 0; }
    if (size < 2) return 0;
    uint32_t h = data[0] % 48, w = data[1] % 48;
    data += 2, size -= 2;
    rle_mask r;
    if (mode == 1) {
        if (rle_from_string(&r, (const char *)data, size, h, w) != 0) return 0;
        /* a string that parses has counts summing to h*w */
        uint64_t s = 0;
        for (size_t i = 0; i < r.m; i++) s += r.cnts[i];
        if (s != (uint64_t)h * w) __builtin_trap();
    } else {
        size_t k = size / 2;
        if (k == 0 || k > 64) return 0;
        double xy[128];
        for (size_t i = 0; i < 2 * k; i++) xy[i] = (int8_t)data[i] / 4.0;
        if (rle_from_poly(&r, xy, k, h, w) != 0) {
            if (h && w) __builtin_trap();   /* small coordinates on a real image never fail */
            return 0;
        }
    }
    check_mask(&r);
    rle_free(&r);
    return 0;
}
