/* tests/test_refer_join.c — the REFER join (data/refer_samples.c) against
 * pycocotools (tests/fixtures/refer_join, written by
 * tests/ref/refer_join_ref.py): for refcoco(unc) (pickle protocol 2) and
 * refclef(unc) (protocol 4), every split: the records (ids, split, image path
 * and size, category name, bbox, iscrowd, sentences and their ids) field by
 * field, every mask pixel by pixel against COCO.annToMask (polygons, several
 * polygons, uncompressed crowd RLE, compressed RLE), the refs that must be
 * skipped (missing ann, wrong image, no segmentation, RLE of another size)
 * and that their messages name them; the COCO-2017 layout's paths; errors
 * for a missing instances.json and an unknown split.
 * Depends on data/refer_samples.h, core/json.h, tests/testlib.h.
 */
#include "core/error.h"
#include "core/json.h"
#include "data/refer_samples.h"
#include "tests/testlib.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/refer_join"

static int64_t jint(const json_value *o, const char *k) {
    const json_value *v = json_get(o, k);
    return v && v->type == JSON_NUMBER ? (int64_t)v->number : INT64_MIN;
}

static const char *jstr(const json_value *o, const char *k) {
    const json_value *v = json_get(o, k);
    return v && v->type == JSON_STRING ? v->str : "";
}

/* Compares one record; returns the number of wrong fields and mask pixels. */
static long check_record(const refer_record *r, const json_value *e, long *pixels) {
    long bad = 0;
    bad += r->ref_id != jint(e, "ref_id");
    bad += r->ann_id != jint(e, "ann_id");
    bad += r->image_id != jint(e, "image_id");
    bad += r->category_id != jint(e, "category_id");
    bad += strcmp(r->split, jstr(e, "split")) != 0;
    char want[512];
    snprintf(want, sizeof want, "%s/%s", FIX "/images", jstr(e, "image_path"));
    if (strcmp(r->image_path, want) != 0) {
        bad++;
        printf("  ref %" PRId64 ": image_path %s, expected %s\n", r->ref_id, r->image_path, want);
    }
    bad += (int64_t)r->height != jint(e, "height");
    bad += (int64_t)r->width != jint(e, "width");
    bad += strcmp(r->category, jstr(e, "category")) != 0;
    const json_value *bb = json_get(e, "bbox");
    for (int i = 0; i < 4; i++) bad += !bb || bb->n != 4 || r->bbox[i] != bb->items[i].number;
    bad += r->iscrowd != jint(e, "iscrowd");
    bad += (int64_t)rle_area(&r->mask) != jint(e, "area");
    const json_value *s = json_get(e, "sentences"), *ids = json_get(e, "sent_ids");
    if (!s || (size_t)r->n_sentences != s->n || !ids || ids->n != s->n) bad++;
    else
        for (int i = 0; i < r->n_sentences; i++) {
            bad += strcmp(r->sentences[i].sent, s->items[i].str) != 0;
            bad += r->sentences[i].sent_id != ids->items[i].integer;
        }
    const json_value *m = json_get(e, "mask");
    if (!m || m->n != r->height || r->mask.h != r->height || r->mask.w != r->width) return bad + 1;
    uint8_t *px = malloc((size_t)r->height * r->width);
    if (!px || rle_decode_hw(&r->mask, px) < 0) { free(px); return bad + 1; }
    for (uint32_t y = 0; y < r->height; y++) {
        const json_value *row = &m->items[y];
        if (row->len != r->width) { bad++; continue; }
        for (uint32_t x = 0; x < r->width; x++) {
            (*pixels)++;
            bad += px[(size_t)y * r->width + x] != (uint8_t)(row->str[x] == '1');
        }
    }
    free(px);
    return bad;
}

static void check_split(const json_value *exp, const char *ds, const char *split) {
    char name[96];
    snprintf(name, sizeof name, "%s %s", ds, split);
    const json_value *e = json_get(json_get(exp, ds), split);
    refer_join *j = refer_join_load(FIX "/root", ds, NULL, split, FIX "/images", REFER_IMAGES_REFER);
    if (!t_check(j && e, name, "join: %s", !j ? ar_error() : !e ? "no expectation" : "loaded")) {
        refer_join_free(j);
        return;
    }
    const json_value *recs = json_get(e, "records"), *skipped = json_get(e, "skipped");
    t_check((int64_t)j->n_in_split == jint(e, "n_in_split") && j->n == recs->n && j->n_skipped == skipped->n,
            name, "%zu in split, %zu records, %zu skipped (expected %" PRId64 ", %zu, %zu)", j->n_in_split, j->n,
            j->n_skipped, jint(e, "n_in_split"), recs->n, skipped->n);
    long bad = 0, pixels = 0;
    for (size_t i = 0; i < j->n && i < recs->n; i++) bad += check_record(&j->recs[i], &recs->items[i], &pixels);
    t_check(bad == 0 && pixels > 0, name, "every field and %ld mask pixels of %zu records: %ld differ", pixels, j->n,
            bad);
    int named = 1;
    for (size_t i = 0; i < skipped->n; i++) {
        char want[64];
        snprintf(want, sizeof want, "ref %" PRId64 " skipped: ", skipped->items[i].integer);
        named &= (int)i < j->n_messages && strstr(j->messages[i], want) != NULL;
        if ((int)i < j->n_messages) printf("  %s\n", j->messages[i]);
    }
    t_check(named, name, "each skipped ref named in its message");
    refer_join_free(j);
}

int main(void) {
    json_doc *d = json_parse_file(FIX "/expected.json");
    if (!d) { printf("FAIL expected.json: %s\n", ar_error()); return 1; }
    const json_value *exp = json_root(d);
    const char *coco_splits[] = {"train", "val", "testA", "testB", "test"};
    const char *clef_splits[] = {"train", "val", "test"};
    for (int i = 0; i < 5; i++) check_split(exp, "refcoco", coco_splits[i]);
    for (int i = 0; i < 3; i++) check_split(exp, "refclef", clef_splits[i]);

    /* the skip reasons */
    refer_join *j = refer_join_load(FIX "/root", "refcoco", "unc", "test", FIX "/images", REFER_IMAGES_REFER);
    int reasons = j && j->n_messages == 2 && strstr(j->messages[0], "ann 900 has no segmentation") &&
                  strstr(j->messages[1], "mask size") && strstr(j->messages[0], "refcoco(unc) test: ");
    t_check(reasons, "skip reasons", "%s | %s", j && j->n_messages > 0 ? j->messages[0] : "-",
            j && j->n_messages > 1 ? j->messages[1] : "-");
    refer_join_free(j);
    j = refer_join_load(FIX "/root", "refcoco", "unc", "train", FIX "/images", REFER_IMAGES_REFER);
    t_check(j && j->n_messages == 1 && strstr(j->messages[0], "ann_id 555 not in " FIX "/root/refcoco/instances.json"),
            "skip: missing ann", "%s", j && j->n_messages ? j->messages[0] : ar_error());
    refer_join_free(j);
    j = refer_join_load(FIX "/root", "refcoco", "unc", "val", FIX "/images", REFER_IMAGES_REFER);
    t_check(j && j->n_messages == 1 && strstr(j->messages[0], "differs from its annotation's image"),
            "skip: wrong image", "%s", j && j->n_messages ? j->messages[0] : ar_error());
    refer_join_free(j);

    /* the COCO-2017 layout */
    j = refer_join_load(FIX "/root", "refcoco", "unc", "train", "/data", REFER_IMAGES_COCO2017);
    char want[128];
    if (j && j->n) snprintf(want, sizeof want, "/data/coco/train2017/%012" PRId64 ".jpg", j->recs[0].image_id);
    t_check(j && j->n && strcmp(j->recs[0].image_path, want) == 0, "coco2017 path", "%s",
            j && j->n ? j->recs[0].image_path : ar_error());
    refer_join_free(j);
    j = refer_join_load(FIX "/root", "refclef", "unc", "train", "/data", REFER_IMAGES_COCO2017);
    int clef_ok = j && j->n > 0;
    for (size_t i = 0; clef_ok && i < j->n; i++) {
        snprintf(want, sizeof want, "/data/saiapr_tc-12/%02" PRId64 "/images/%" PRId64 ".jpg", j->recs[i].image_id / 1000,
                 j->recs[i].image_id);
        clef_ok &= strcmp(j->recs[i].image_path, want) == 0;
    }
    t_check(clef_ok, "refclef coco2017 paths", "%s", j && j->n ? j->recs[0].image_path : ar_error());
    refer_join_free(j);

    /* errors */
    j = refer_join_load(FIX "/root", "refcoco+", "unc", "train", FIX "/images", REFER_IMAGES_REFER);
    t_check(!j && strstr(ar_error(), "refcoco+/refs(unc).p"), "missing files", "%s", ar_error());
    refer_join_free(j);
    j = refer_join_load(FIX "/root", "refcoco", "unc", "testD", FIX "/images", REFER_IMAGES_REFER);
    t_check(!j && strstr(ar_error(), "testD"), "unknown split", "%s", ar_error());
    refer_join_free(j);
    j = refer_join_files(FIX "/root/refcoco/refs(unc).p", FIX "/nowhere.json", "refcoco", "unc", "train", "/x",
                         REFER_IMAGES_REFER);
    t_check(!j && strstr(ar_error(), "nowhere.json"), "missing instances.json", "%s", ar_error());
    refer_join_free(j);

    json_free(d);
    return t_exit_code();
}
