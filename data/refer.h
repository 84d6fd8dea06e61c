/* data/refer.h — the REFER annotations of RefCOCO, RefCOCO+, RefCOCOg and
 * RefCLEF (lichengunc/refer): refs(<splitBy>).p read with data/pickle.h,
 * split filters as refer.py's getRefIds, and the image path of each data set.
 * Joining a ref with its COCO annotation (ann_id -> instances.json) is done
 * by the COCO loader on top of this.
 *
 * ON DISK (refer.py, LISA and AnyRef)
 *   <root>/<dataset>/refs(<splitBy>).p   dataset: refcoco, refcoco+, refcocog, refclef
 *     refcoco  unc (train/val/testA/testB), google     refcoco+ unc
 *     refcocog umd (train/val/test), google (train/val)  refclef unc, berkeley
 *   a pickled list (Python 2, protocol 2 or 0; any protocol 0–5 reads) of dicts:
 *     ref_id, ann_id, image_id, category_id   int
 *     split                                   str ("train", "val", "testA", "testB", "test", ...)
 *     sentences  [ {sent: str, sent_id: int, raw: str, tokens: [str]} ... ]
 *     file_name  str, the image's name with a suffix refer.py ignores:
 *                "COCO_train2014_000000581857_16.jpg"
 *     sent_ids   [int] (not kept: the sentences carry their ids)
 *   LISA and AnyRef use splitBy umd for refcocog and unc for the others
 *   (refer_default_split_by).
 *
 * RECORDS: a ref is kept when ref_id, ann_id, image_id, category_id are ints
 * (not bools), split is a non-empty str, and sentences is a non-empty list of
 * dicts each with a str sent and an int sent_id; raw (str), tokens (list of
 * str) and file_name (str) are checked when present and NULL when absent.
 * Strings holding a NUL byte are invalid. Any other ref is skipped, counted
 * in n_skipped, and warned (log_warn, the first REFER_MAX_WARNINGS of a file,
 * then a summary): "<file>: ref 12 skipped: sentences[1].sent_id: expected
 * int, found str". A file that is not a pickle of a list is an error.
 * Strings are UTF-8 (Python 2 byte strings decoded as latin-1).
 *
 * SPLITS (refer_in_split = getRefIds(split=...)): "train" and "val" match
 * exactly; "testA", "testB", "testC" match a ref whose split contains the
 * letter ("testAB" is in testA and testB); "testAB", "testBC", "testAC" match
 * exactly; "test" matches every split containing "test". Other names are an
 * error.
 *
 * IMAGES (refer_image_name / refer_image_path)
 *   refcoco, refcoco+, refcocog: COCO train2014, "COCO_train2014_%012d.jpg"
 *     of image_id (instances.json's file_name; the ref's own file_name minus
 *     its "_<n>" suffix, refer_strip_suffix, gives the same name)
 *   refclef: saiapr_tc-12, "%02d/images/%d.jpg" of (image_id / 1000, image_id)
 *   REFER_IMAGES_REFER   root is refer.py's data_root (LISA's refer_seg/):
 *     <root>/images/mscoco/images/train2014/COCO_train2014_<id:012>.jpg
 *     <root>/images/saiapr_tc-12/<id/1000:02>/images/<id>.jpg
 *   REFER_IMAGES_COCO2017 (AnyRef, use2017):
 *     <root>/coco/train2017/<id:012>.jpg
 *     <root>/saiapr_tc-12/<id/1000:02>/images/<id>.jpg
 *
 * Depends on data/pickle.h, core/error.h, core/log.h.
 */
#ifndef ANYREF_DATA_REFER_H
#define ANYREF_DATA_REFER_H

#include <stddef.h>
#include <stdint.h>

#define REFER_MAX_WARNINGS 10

typedef enum { REFER_REFCOCO, REFER_REFCOCO_PLUS, REFER_REFCOCOG, REFER_REFCLEF } refer_dataset;
typedef enum { REFER_IMAGES_REFER, REFER_IMAGES_COCO2017 } refer_image_layout;

typedef struct {
    const char *sent;               /* UTF-8 */
    const char *raw;                /* NULL when absent */
    const char *const *tokens;      /* n_tokens strings; NULL when absent */
    int     n_tokens;
    int64_t sent_id;
} refer_sentence;

typedef struct {
    int64_t ref_id, ann_id, image_id, category_id;
    const char *split;
    const char *file_name;          /* as stored; NULL when absent */
    const refer_sentence *sentences;
    int     n_sentences;
    size_t  index;                  /* position in the pickled list */
} refer_ref;

typedef struct refer_set {
    refer_dataset dataset;
    char      name[16];             /* "refcoco", "refcoco+", "refcocog", "refclef" */
    char      split_by[32];
    refer_ref *refs;                /* the kept refs, in file order */
    size_t    n_refs;
    size_t    n_total;              /* entries in the pickled list */
    size_t    n_skipped;            /* n_total - n_refs */
    /* private */
    struct pk_doc *doc;
    refer_sentence *sent_store;
    const char **tok_store;
} refer_set;

/* "refcoco" ... -> id; -1 + ar_error for an unknown name. */
int refer_dataset_from_name(const char *name, refer_dataset *out);
const char *refer_dataset_name(refer_dataset d);
/* "umd" for refcocog, "unc" for the others. */
const char *refer_default_split_by(refer_dataset d);

/* <root>/<dataset>/refs(<split_by>).p; split_by NULL: the default above. */
refer_set *refer_load(const char *root, const char *dataset, const char *split_by);
/* A refs pickle at any path; split_by is only recorded (may be NULL). */
refer_set *refer_load_file(const char *path, const char *dataset, const char *split_by);
/* From bytes in memory (name in messages). */
refer_set *refer_from_pickle(const void *data, size_t len, const char *name, const char *dataset);
void refer_free(refer_set *s);      /* NULL is fine */

/* 1 if a ref with split ref_split belongs to split, 0 if not, -1 + ar_error for an unknown split name. */
int  refer_in_split(const char *ref_split, const char *split);
/* Indices into s->refs of the refs in split (a malloc'd array in *idx, NULL
 * when empty; the caller frees). The count, or -1 + ar_error. */
long refer_split(const refer_set *s, const char *split, size_t **idx);

/* The image's file name (see IMAGES). Length written, or -1 + ar_error if buf is too small. */
int refer_image_name(const refer_set *s, const refer_ref *r, char *buf, size_t n);
/* refer's rule: "_".join(name.split("_")[:-1]) + ".jpg"; -1 + ar_error when
 * name has no '_' or buf is too small. */
int refer_strip_suffix(const char *file_name, char *buf, size_t n);
/* The image's full path under root in a layout (see IMAGES). */
int refer_image_path(const refer_set *s, const refer_ref *r, const char *root, refer_image_layout layout,
                     char *buf, size_t n);

#endif
