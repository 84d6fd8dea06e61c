/* data/refer_samples.h — the REFER join: refs(<splitBy>).p (data/refer.h)
 * joined with the set's instances.json (data/coco.h) into one referring
 * record per ref of a split: image path and size, the annotation's category
 * name, box and ground-truth mask, and all of the ref's sentences (the sample
 * builder picks among them later).
 *
 * ON DISK (lichengunc/refer refer.py: DATA_DIR = <root>/<dataset>)
 *   <root>/<dataset>/refs(<splitBy>).p
 *   <root>/<dataset>/instances.json     one per data set, shared by its splitBys
 *                                       (refcoco, refcoco+, refcocog, refclef alike)
 *
 * JOIN (refer.py's Refs/Anns/Imgs maps, LISA / AnyRef's refer_seg_dataset)
 *   ann      = instances annotation with id == ref.ann_id
 *   image    = instances image with id == ann.image_id (it must equal
 *              ref.image_id: a mismatch skips the ref)
 *   category = instances category with id == ann.category_id; its name
 *              ("" when the category list lacks it — not a reason to skip)
 *   bbox     = ann.bbox (x, y, w, h), iscrowd = ann.iscrowd
 *   mask     = coco_ann_to_rle(ann) (COCO.annToRLE: polygons rasterised on the
 *              image's height x width, RLE as given); an RLE whose "size" is
 *              not the image's skips the ref (pycocotools would return a mask
 *              of another size than the image)
 *   image_path:
 *     refclef, when the instances image has a non-empty file_name: that name
 *       under the saiapr directory of the layout (what LISA and AnyRef do:
 *       "<root>/images/saiapr_tc-12/" + file_name for REFER_IMAGES_REFER,
 *       "<root>/saiapr_tc-12/" + file_name for REFER_IMAGES_COCO2017);
 *     otherwise refer_image_path (data/refer.h IMAGES).
 *   A ref whose ann, image or mask is missing or unusable is SKIPPED,
 *   COUNTED (n_skipped) and warned with log_warn naming the ref, the first
 *   REFER_MAX_WARNINGS of them, then a summary:
 *     "refcoco(unc) train: ref 17 skipped: ann_id 345 not in <path>"
 *   The messages of the first REFER_JOIN_MAX_MESSAGES are kept in messages[].
 *
 * Records point into the refs set (split, sentences) and own image_path and
 * mask; everything lives until refer_join_free.
 *
 * Depends on data/refer.h, data/coco.h, data/rle.h, core/error.h, core/log.h.
 */
#ifndef ANYREF_DATA_REFER_SAMPLES_H
#define ANYREF_DATA_REFER_SAMPLES_H

#include "data/coco.h"
#include "data/refer.h"
#include "data/rle.h"

#include <stddef.h>
#include <stdint.h>

#define REFER_JOIN_MAX_MESSAGES 32

typedef struct {
    int64_t ref_id, ann_id, image_id, category_id;   /* category_id: the annotation's */
    const char *split;                 /* the ref's split string */
    char *image_path;                  /* malloc'd */
    uint32_t height, width;            /* instances image size */
    const char *category;              /* name, "" when unknown */
    double bbox[4];                    /* x, y, w, h */
    int iscrowd;
    rle_mask mask;                     /* height x width */
    const refer_sentence *sentences;   /* the ref's sentences (all of them) */
    int n_sentences;
} refer_record;

typedef struct {
    refer_set *refs;
    coco_dataset coco;
    char split[16];
    refer_record *recs;                /* in refs-file order */
    size_t n;
    size_t n_in_split;                 /* refs of the split before the join */
    size_t n_skipped;                  /* n_in_split - n */
    int n_messages;
    char *messages[REFER_JOIN_MAX_MESSAGES];
} refer_join;

/* <refer_root>/<dataset>/refs(<split_by>).p (split_by NULL: the data set's
 * default) + <refer_root>/<dataset>/instances.json; image paths under
 * image_root in layout. NULL + ar_error when a file fails to load or the
 * split name is unknown; refs that fail to join are skipped (above). */
refer_join *refer_join_load(const char *refer_root, const char *dataset, const char *split_by,
                            const char *split, const char *image_root, refer_image_layout layout);
/* The same from explicit files. */
refer_join *refer_join_files(const char *refs_path, const char *instances_path, const char *dataset,
                             const char *split_by, const char *split, const char *image_root,
                             refer_image_layout layout);
void refer_join_free(refer_join *j);   /* NULL ok */

#endif
