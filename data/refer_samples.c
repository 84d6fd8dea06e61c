/* data/refer_samples.c — REFER refs joined with instances.json into referring
 * records (data/refer_samples.h). Depends on data/refer.h, data/coco.h,
 * data/rle.h, core/error.h, core/log.h.
 */
#include "data/refer_samples.h"

#include "core/error.h"
#include "core/log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_LEN 4096

static void skip(refer_join *j, const char *what, const refer_ref *r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void skip(refer_join *j, const char *what, const refer_ref *r, const char *fmt, ...) {
    char why[600], msg[800];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(msg, sizeof msg, "%s: ref %" PRId64 " skipped: %s", what, r->ref_id, why);
    if (j->n_skipped < REFER_MAX_WARNINGS) log_warn("%s", msg);
    if (j->n_messages < REFER_JOIN_MAX_MESSAGES) {
        char *m = strdup(msg);
        if (m) j->messages[j->n_messages++] = m;
    }
    j->n_skipped++;
}

static char *join_path(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* 1 joined, 0 skipped, -1 out of memory */
static int join_one(refer_join *j, const refer_ref *r, const char *what, const char *inst_path,
                    const char *image_root, refer_image_layout layout, refer_record *out) {
    const coco_dataset *c = &j->coco;
    const coco_annotation *a = coco_find_ann(c, r->ann_id);
    if (!a) { skip(j, what, r, "ann_id %" PRId64 " not in %s", r->ann_id, inst_path); return 0; }
    const coco_image *im = &c->images[a->image];
    if (im->id != r->image_id) {
        skip(j, what, r, "image_id %" PRId64 " differs from its annotation's image %" PRId64 " (ann %" PRId64 ")",
             r->image_id, im->id, a->id);
        return 0;
    }
    rle_mask m = {0};
    if (a->seg == COCO_SEG_NONE) { skip(j, what, r, "ann %" PRId64 " has no segmentation", a->id); return 0; }
    if (coco_ann_to_rle(c, a, &m) < 0) { skip(j, what, r, "ann %" PRId64 ": %s", a->id, ar_error()); return 0; }
    if (m.h != im->height || m.w != im->width) {
        skip(j, what, r, "ann %" PRId64 ": mask size %ux%u differs from image %" PRId64 " (%ux%u)", a->id,
             m.h, m.w, im->id, im->height, im->width);
        rle_free(&m);
        return 0;
    }
    char *path = NULL;
    if (j->refs->dataset == REFER_REFCLEF && im->file_name && im->file_name[0]) {
        char dir[PATH_MAX_LEN];
        snprintf(dir, sizeof dir, "%s/%s", image_root,
                 layout == REFER_IMAGES_REFER ? "images/saiapr_tc-12" : "saiapr_tc-12");
        path = join_path(dir, im->file_name);
    } else {
        char buf[PATH_MAX_LEN];
        if (refer_image_path(j->refs, r, image_root, layout, buf, sizeof buf) < 0) {
            skip(j, what, r, "%s", ar_error());
            rle_free(&m);
            return 0;
        }
        path = strdup(buf);
    }
    if (!path) { rle_free(&m); return -1; }
    const coco_category *cat = coco_find_category(c, a->category_id);
    *out = (refer_record){
        .ref_id = r->ref_id, .ann_id = a->id, .image_id = im->id, .category_id = a->category_id,
        .split = r->split, .image_path = path, .height = im->height, .width = im->width,
        .category = cat && cat->name ? cat->name : "", .iscrowd = a->iscrowd, .mask = m,
        .sentences = r->sentences, .n_sentences = r->n_sentences,
    };
    memcpy(out->bbox, a->bbox, sizeof out->bbox);
    return 1;
}

refer_join *refer_join_files(const char *refs_path, const char *instances_path, const char *dataset,
                             const char *split_by, const char *split, const char *image_root,
                             refer_image_layout layout) {
    if (refer_in_split("train", split) < 0) return NULL;
    if (strlen(split) >= sizeof ((refer_join *)0)->split) { ar_errorf("unknown split \"%s\"", split); return NULL; }
    refer_join *j = calloc(1, sizeof *j);
    if (!j) { ar_errorf("out of memory"); return NULL; }
    snprintf(j->split, sizeof j->split, "%s", split);
    j->refs = refer_load_file(refs_path, dataset, split_by);
    if (!j->refs) { refer_join_free(j); return NULL; }
    if (coco_load(instances_path, &j->coco) < 0) { refer_join_free(j); return NULL; }
    size_t *idx = NULL;
    long n = refer_split(j->refs, split, &idx);
    if (n < 0) { refer_join_free(j); return NULL; }
    j->n_in_split = (size_t)n;
    if (n > 0 && !(j->recs = calloc((size_t)n, sizeof *j->recs))) {
        free(idx);
        refer_join_free(j);
        ar_errorf("out of memory");
        return NULL;
    }
    char what[96];
    snprintf(what, sizeof what, "%s(%s) %s", j->refs->name, j->refs->split_by[0] ? j->refs->split_by : "?", split);
    for (long i = 0; i < n; i++) {
        int rc = join_one(j, &j->refs->refs[idx[i]], what, instances_path, image_root, layout, &j->recs[j->n]);
        if (rc < 0) {
            free(idx);
            refer_join_free(j);
            ar_errorf("out of memory");
            return NULL;
        }
        j->n += (size_t)rc;
    }
    free(idx);
    if (j->n_skipped > REFER_MAX_WARNINGS)
        log_warn("%s: %zu refs skipped in all (%zu more not shown)", what, j->n_skipped,
                 j->n_skipped - REFER_MAX_WARNINGS);
    return j;
}

refer_join *refer_join_load(const char *refer_root, const char *dataset, const char *split_by,
                            const char *split, const char *image_root, refer_image_layout layout) {
    refer_dataset d;
    if (refer_dataset_from_name(dataset, &d) < 0) return NULL;
    if (!split_by) split_by = refer_default_split_by(d);
    char refs[PATH_MAX_LEN], inst[PATH_MAX_LEN];
    int a = snprintf(refs, sizeof refs, "%s/%s/refs(%s).p", refer_root, dataset, split_by);
    int b = snprintf(inst, sizeof inst, "%s/%s/instances.json", refer_root, dataset);
    if (a < 0 || b < 0 || (size_t)a >= sizeof refs || (size_t)b >= sizeof inst) {
        ar_errorf("REFER root path too long: %s", refer_root);
        return NULL;
    }
    return refer_join_files(refs, inst, dataset, split_by, split, image_root, layout);
}

void refer_join_free(refer_join *j) {
    if (!j) return;
    for (size_t i = 0; i < j->n; i++) {
        free(j->recs[i].image_path);
        rle_free(&j->recs[i].mask);
    }
    free(j->recs);
    for (int i = 0; i < j->n_messages; i++) free(j->messages[i]);
    coco_free(&j->coco);
    refer_free(j->refs);
    free(j);
}
