/* data/custom_jsonl.h — users' own referring data as JSON lines, validated
 * with errors naming the file, the line and the field, so that fine-tuning on
 * a new domain needs no conversion to COCO/REFER.
 *
 * FORMAT: UTF-8, one JSON object per line ('\n'; a trailing '\r' and blank
 * lines are ignored). Fields (any other key is an error, except "meta", which
 * may hold anything and is ignored; a key given twice is an error):
 *   "image"      string, required: the image (JPEG or PNG), a path relative to
 *                the .jsonl file's directory, or absolute.
 *   the reference, EXACTLY ONE of:
 *     "text"       string: a referring expression ("the dog on the left");
 *     "box"        [x0, y0, x1, y1]: 4 finite numbers, pixels, x0 < x1,
 *                  y0 < y1, inside the image (0 <= x0, x1 <= width, same for
 *                  y) when its size is known;
 *     "ref_image"  string: path of an image crop showing the object;
 *     "audio"      string: path of a WAV file of the object's sound.
 *   the question and answer, one of:
 *     "template"   "seg" (default when neither is given) or "caption": the
 *                  sample builder fills its configured templates (SPEC 2.4);
 *                  "expression" (string) is the text a template needs beyond
 *                  the reference: required for "caption" (the caption the
 *                  model must answer), optional for "seg";
 *     "question" and "answer"   literal strings, both (the answer may hold
 *                  [SEG]); "template"/"expression" not allowed with them.
 *   the ground-truth mask, at most one of (required for "template": "seg"):
 *     "mask"       string: path of a PNG the size of the image; nonzero = object
 *                  (grey value, or palette index for palette PNGs);
 *     "polygon"    COCO polygons [[x0, y0, x1, y1, ...], ...]: at least one,
 *                  each an even count >= 6 of finite numbers, pixels,
 *                  rasterised as pycocotools does (data/rle.h) on the image size;
 *     "rle"        COCO RLE {"size": [h, w], "counts": "<compressed string>"
 *                  or [c0, c1, ...]}; the size must be the image's.
 *   "split"      optional string, default "train" (any non-empty name).
 *   "id"         optional string or integer (kept as text; "" when absent).
 * Examples, one per reference kind:
 *   {"image": "img/0001.jpg", "text": "the red mug", "mask": "masks/0001.png"}
 *   {"image": "img/0002.jpg", "box": [10, 20, 110, 90], "polygon": [[10,20, 110,20, 110,90]]}
 *   {"image": "img/0003.jpg", "ref_image": "crops/cat.png", "rle": {"size": [240, 320], "counts": "<pycocotools string>"}}
 *   {"image": "img/0004.jpg", "audio": "wav/bark.wav", "template": "caption", "expression": "a dog barking", "split": "val"}
 *   {"image": "img/0005.jpg", "text": "mug", "question": "Where is the mug?", "answer": "It is [SEG].", "mask": "m/5.png"}
 *
 * ERRORS: "<file>:<line>: <field>: <problem>", e.g.
 *   "data.jsonl:17: box: expected 4 numbers, found 3"
 *   "data.jsonl:4: polygon[1][6]: expected a number, found string"
 *   "data.jsonl:9: column 12: expected ',' or '}', found 'x'" (JSON syntax)
 * An invalid line is SKIPPED and COUNTED (n_bad); the first CJ_MAX_MESSAGES
 * messages are kept, the first CJ_MAX_WARNINGS logged (log_warn), then a
 * summary. Only an unreadable file (or out of memory) fails a load.
 *
 * CHECKS (cj_options): check_files — every referenced file must exist, and
 * the image's size is read from its header (image_probe_size, data/image.h)
 * to check boxes, PNG masks sizes, polygons' and RLE sizes; decode — every
 * image, crop and mask PNG is decoded (data/image.h) and every audio file
 * (data/wav.h), and each record's mask is built, so broken files are found
 * before training (slow on big sets).
 *
 * MASKS: cj_record_mask gives the ground truth as an RLE of the image's size:
 * polygons through rle_from_poly + union (COCO annToRLE), RLE as given, PNG
 * decoded with IMAGE_GRAY_RAW and nonzero taken as the object.
 *
 * Depends on core/json.h, core/error.h, core/log.h, data/rle.h, data/image.h,
 * data/wav.h.
 */
#ifndef ANYREF_DATA_CUSTOM_JSONL_H
#define ANYREF_DATA_CUSTOM_JSONL_H

#include "data/rle.h"

#include <stddef.h>
#include <stdint.h>

#define CJ_MAX_MESSAGES 64
#define CJ_MAX_WARNINGS 10
#define CJ_MAX_LINE ((size_t)64 << 20)   /* longer lines are errors */

typedef enum { CJ_REF_TEXT, CJ_REF_BOX, CJ_REF_IMAGE, CJ_REF_AUDIO } cj_ref_kind;
typedef enum { CJ_TEMPLATE_SEG, CJ_TEMPLATE_CAPTION, CJ_LITERAL } cj_qa_kind;
typedef enum { CJ_MASK_NONE, CJ_MASK_PNG, CJ_MASK_POLYGON, CJ_MASK_RLE } cj_mask_kind;

typedef struct {
    int line;                   /* 1-based line in the file */
    char *id;                   /* "" when absent */
    char *split;                /* "train" when absent */
    char *image;                /* resolved path */
    int height, width;          /* image size, 0 when not probed */
    cj_ref_kind ref;
    char *text;                 /* CJ_REF_TEXT */
    double box[4];              /* CJ_REF_BOX: x0, y0, x1, y1 */
    char *ref_path;             /* CJ_REF_IMAGE / CJ_REF_AUDIO: resolved path */
    cj_qa_kind qa;
    char *expression;           /* templates: NULL when absent */
    char *question, *answer;    /* CJ_LITERAL */
    cj_mask_kind mask;
    char *mask_path;            /* CJ_MASK_PNG: resolved path */
    uint32_t n_poly;            /* CJ_MASK_POLYGON: polygon i has poly_len[i] numbers */
    uint32_t *poly_len;
    double *poly_xy;            /* all polygons, concatenated */
    rle_mask rle;               /* CJ_MASK_RLE */
} cj_record;

typedef struct {
    int check_files;            /* existence + image size probe */
    int decode;                 /* decode every file and build every mask */
} cj_options;

typedef struct {
    char *path;
    cj_record *recs;
    size_t n;                   /* valid records, file order */
    size_t n_lines;             /* lines read, blank ones included */
    size_t n_blank;
    size_t n_bad;               /* skipped */
    int n_messages;
    char *messages[CJ_MAX_MESSAGES];
} cj_dataset;

/* Loads path into *ds (zeroed first); opt NULL = no file checks. 0, or -1 +
 * ar_error for an unreadable file or out of memory (*ds then holds nothing). */
int cj_load(const char *path, const cj_options *opt, cj_dataset *ds);
/* The same from text[0..len); path names it and its directory resolves paths. */
int cj_load_buffer(const char *text, size_t len, const char *path, const cj_options *opt, cj_dataset *ds);
void cj_free(cj_dataset *ds);   /* NULL ok */
/* One line: 0 and *rec filled (free with cj_record_free), or -1 + ar_error
 * "<file>:<line>: <field>: <problem>". dir resolves relative paths. */
int cj_parse_line(const char *text, size_t len, const char *file, int line, const char *dir,
                  const cj_options *opt, cj_record *rec);
void cj_record_free(cj_record *rec);
/* The record's ground-truth mask (size probed when not yet known). -1 +
 * ar_error "<image>: ..." for CJ_MASK_NONE, unreadable files or a size that
 * is not the image's. */
int cj_record_mask(cj_record *rec, rle_mask *out);
/* One line summary: "<file>: N records, M lines skipped (B blank)". */
void cj_summary(const cj_dataset *ds, char *buf, size_t n);

#endif
