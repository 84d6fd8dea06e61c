/* data/coco.h — COCO `instances_*.json` (and REFER's `instances.json`): images,
 * annotations, categories, annotations indexed by image, and each
 * annotation's mask exactly as pycocotools' COCO.annToRLE / annToMask.
 *
 * Reading: core/json.h parses the whole file (strict RFC 8259), the records
 * are copied into compact arrays, the DOM is freed. core/json.h was chosen
 * over Debian 12's JSON libraries by measurement (parse + walk of every
 * polygon of a generated 100 MB instances file, 2 shared cores, wall / CPU
 * seconds): core/json 0.62 / 0.73, cJSON 1.50 / 1.9, jansson 2.17 / 2.8,
 * json-c 2.90 / 3.5 (yyjson is not in bookworm; simdjson is C++). The whole
 * coco_load of that file takes 0.84 CPU-s (bench/bench_coco_load.c;
 * pycocotools' COCO(): 1.97). Peak memory is about ten times the file size
 * while parsing (1.0 GiB for 100 MB); what stays is about the file's size.
 *
 * FIELDS READ (others are ignored; a key given twice counts once, the last):
 *   images[i]:      id (integer), file_name (string), height, width
 *                   (integers >= 1, height*width < 2^32)
 *   annotations[i]: id, image_id, category_id (integers); bbox [x, y, w, h]
 *                   (4 numbers); optional: area (number, default 0), iscrowd
 *                   (0 or 1, default 0), segmentation:
 *                   - polygons [[x0, y0, x1, y1, ...], ...] (numbers); the
 *                     first has >= 6 numbers (pycocotools reads 4 as a box and
 *                     refuses fewer), the others >= 2; an odd last number is
 *                     ignored, as pycocotools does; [] means no segmentation;
 *                   - uncompressed RLE {"size": [h, w], "counts": [c0, c1, ...]}
 *                     (integers in [0, 2^32), summing to h*w) — crowd masks;
 *                   - compressed RLE {"size": [h, w], "counts": "string"}
 *                     (checked with rle_from_string).
 *   categories[i]:  id (integer), name (string), optional supercategory (string)
 * "images" and "annotations" must be arrays; "categories" may be missing.
 *
 * POLICY for malformed records: a record with a missing or mistyped field,
 * an out-of-range value, a duplicate id (the first record with the id is
 * kept), or an annotation whose image_id names no (kept) image is SKIPPED,
 * COUNTED (n_bad_images / n_bad_anns / n_bad_cats) and described as
 *   "<path>: annotations[17] (id 345): bbox[2]: expected a number, found string"
 * (the JSON path of the bad field); the first COCO_MAX_MESSAGES descriptions
 * are kept in messages[] and the first 10 are logged with log_warn. Only
 * unreadable or invalid JSON, a root that is not an object, "images" /
 * "annotations" missing or not arrays, or running out of memory fail a load
 * (-1 + ar_error naming the file). pycocotools would fail later, in annToRLE,
 * on most of the skipped records.
 *
 * Depends on core/ (error, json, log) and data/rle.h.
 */
#ifndef ANYREF_DATA_COCO_H
#define ANYREF_DATA_COCO_H

#include "data/rle.h"

#include <stddef.h>
#include <stdint.h>

#define COCO_MAX_MESSAGES 32

typedef struct {
    int64_t id;
    const char *file_name;
    uint32_t height, width;
    size_t first_ann, n_anns;   /* its annotations: anns[ds->img_anns[first_ann .. first_ann + n_anns)], file order */
} coco_image;

typedef enum {
    COCO_SEG_NONE,       /* no "segmentation" (or []): no mask */
    COCO_SEG_POLYGONS,   /* n_poly polygons */
    COCO_SEG_COUNTS,     /* uncompressed RLE */
    COCO_SEG_STRING      /* compressed RLE */
} coco_seg_type;

typedef struct {
    int64_t id, image_id, category_id;
    size_t image;               /* index into ds->images */
    double bbox[4];             /* x, y, width, height */
    double area;
    int iscrowd;
    coco_seg_type seg;
    /* COCO_SEG_POLYGONS: polygon i has poly_len[i] numbers (x, y, x, y, ...)
     * at poly_xy[poly_start[i] ...] */
    uint32_t n_poly;
    const uint32_t *poly_len;
    const size_t *poly_start;
    const double *poly_xy;
    /* COCO_SEG_COUNTS / COCO_SEG_STRING: "size" and the counts */
    uint32_t rle_h, rle_w;
    size_t n_counts;
    const uint32_t *counts;     /* COUNTS */
    const char *counts_str;     /* STRING, NUL-terminated */
    size_t counts_len;
} coco_annotation;

typedef struct {
    int64_t id;
    const char *name;
    const char *supercategory;   /* "" when missing */
} coco_category;

typedef struct {
    char *path;
    size_t n_images, n_anns, n_cats;
    coco_image *images;          /* file order */
    coco_annotation *anns;       /* file order */
    coco_category *cats;         /* file order */
    size_t *img_anns;            /* [n_anns] annotation indices grouped by image (image order, then file order) */
    int64_t n_bad_images, n_bad_anns, n_bad_cats;
    int n_messages;
    char *messages[COCO_MAX_MESSAGES];
    void *priv;                  /* storage and lookup tables */
} coco_dataset;

/* Loads a file into *ds (zeroed first). 0, or -1 + ar_error (then *ds holds
 * nothing to free). */
int coco_load(const char *path, coco_dataset *ds);
/* The same from text[0..len); origin names it in messages. */
int coco_load_buffer(const char *text, size_t len, const char *origin, coco_dataset *ds);
void coco_free(coco_dataset *ds);   /* frees and zeroes; NULL ok */

/* Lookups by id (binary search); NULL if absent. */
const coco_image *coco_find_image(const coco_dataset *ds, int64_t id);
const coco_annotation *coco_find_ann(const coco_dataset *ds, int64_t id);
const coco_category *coco_find_category(const coco_dataset *ds, int64_t id);

/* The annotation's mask as COCO.annToRLE: polygons rasterised on the image's
 * height x width and merged (union); an RLE as given, at its own "size".
 * -1 + ar_error for COCO_SEG_NONE or a polygon rle_from_poly refuses. */
int coco_ann_to_rle(const coco_dataset *ds, const coco_annotation *a, rle_mask *out);

#endif
