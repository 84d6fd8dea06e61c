/* tests/test_samples.c — the sample builder (data/samples.c) and `anyref data
 * inspect` (train/inspect_cmd.c) on the committed loader fixtures
 * (tests/fixtures/refer_join, avsbench, custom; tok_bpe.model):
 *   - exact question/answer strings of known records (REFER seg and caption,
 *     AVSBench S4 and MS3, custom literal, caption, box, image crop);
 *   - the seeded choices: each REFER sample's sentence and answer template
 *     are those rng_derive(seed, i) draws; the same seed gives the same
 *     samples, some other seed gives different ones;
 *   - mask areas equal to the pixel count of the decoded masks (RLE decoded
 *     with rle_decode, custom PNGs decoded with image_load, AVSBench masks
 *     as PIL binarises them: tests/fixtures/avsbench/expected.h5);
 *   - token counts equal conv_tokenize's n with the same added tokens;
 *   - inspect_run end to end: JSON lines parsed with core/json.h, their
 *     fields, --limit, the stderr summary and a bad source.kind.
 * Depends on data/samples.h, train/inspect_cmd.h, data/conversation.h,
 * data/rle.h, data/image.h, core/json.h, core/rng.h, tests/testlib.h.
 */
#include "core/error.h"
#include "core/json.h"
#include "core/rng.h"
#include "data/conversation.h"
#include "data/image.h"
#include "data/rle.h"
#include "data/samples.h"
#include "data/tokenizer.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"
#include "train/inspect_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures"

static uint64_t rle_pixels(const rle_mask *r) {
    size_t n = (size_t)r->h * r->w;
    uint8_t *m = malloc(n ? n : 1);
    uint64_t a = 0;
    if (m && rle_decode(r, m) == 0)
        for (size_t i = 0; i < n; i++) a += m[i] != 0;
    free(m);
    return a;
}

static uint64_t png_pixels(const char *path) {
    ar_image im = {0};
    if (image_load(&im, path, IMAGE_GRAY_RAW)) return (uint64_t)-1;
    uint64_t a = 0;
    for (size_t i = 0; i < (size_t)im.h * im.w * im.c; i++) a += im.px[i] != 0;
    image_free(&im);
    return a;
}

/* Pixels set in PIL's binarisation (tests/fixtures/avsbench/expected.h5,
 * written by tests/ref/avs_ref.py: S4 convert("1") with its dithering, MS3
 * convert("P") != 0) of mask k + 1 of a video; -1 when absent. */
#define AVS_FIX_MASKS 21
static uint8_t g_masks[AVS_FIX_MASKS][24][32];
static char g_keys[AVS_FIX_MASKS][32];
static int g_have_masks;

static uint64_t avs_pil_pixels(const char *subset, const char *video, int k) {
    char key[64];
    snprintf(key, sizeof key, "%s/%s/%d", subset, video, k + 1);
    for (int i = 0; g_have_masks && i < AVS_FIX_MASKS; i++)
        if (!strncmp(g_keys[i], key, 32)) {
            uint64_t a = 0;
            for (int p = 0; p < 24 * 32; p++) a += (&g_masks[i][0][0])[p] != 0;
            return a;
        }
    return (uint64_t)-1;
}

static int streq(const char *a, const char *b) { return a && b && !strcmp(a, b); }

static void test_refer(void) {
    refer_join *j = refer_join_load(FIX "/refer_join/root", "refcoco", NULL, "train", FIX "/refer_join/images",
                                    REFER_IMAGES_REFER);
    if (!t_check(j && j->n == 4, "refer load", "%s", j ? "4 records" : ar_error())) { refer_join_free(j); return; }
    sample_options o;
    sample_options_default(&o);
    o.seed = 5;
    /* record 0 has one sentence: the question is fixed, the answer one of two */
    ar_sample s;
    int rc = sample_from_refer(j, 0, 0, &o, &s);
    t_check(rc == 0 && streq(s.question, "<image>\nCan you segment the shirt big man red bottle in this image?") &&
                (streq(s.answer, "shirt big man red bottle[SEG].") || streq(s.answer, "It is [SEG].")) &&
                s.ref == SAMPLE_REF_TEXT && !s.has_box && streq(s.dataset, "refcoco") && streq(s.split, "train") &&
                s.height == 27 && s.width == 11 && streq(s.image, j->recs[0].image_path) && s.frame == -1,
            "refer seg record 0", "q \"%s\" a \"%s\"", rc ? ar_error() : s.question, rc ? "" : s.answer);
    ar_sample_free(&s);
    rc = sample_from_refer(j, 0, 1, &o, &s);
    t_check(rc == 0 &&
                streq(s.question,
                      "<image>\nCan you provide a description of the region <img_ref_start><img_ref_end> in this image?") &&
                streq(s.answer, "shirt big man red bottle.") && s.ref == SAMPLE_REF_BOX && s.has_box && s.box[0] == 1 &&
                s.box[1] == 17 && s.box[2] == 10 && s.box[3] == 23 && s.n_masks == 0,
            "refer caption record 0", "box from bbox (1, 17, 9, 6) -> [1, 17, 10, 23], a \"%s\"", rc ? ar_error() : s.answer);
    ar_sample_free(&s);

    /* every record: the choices rng_derive(seed, i) draws; the mask area */
    int bad = 0, differ = 0;
    for (uint64_t seed = 0; seed < 16; seed++) {
        o.seed = seed;
        for (size_t i = 0; i < j->n; i++) {
            const refer_record *r = &j->recs[i];
            ar_rng g;
            rng_seed(&g, rng_derive(seed, i));
            const char *sent = r->sentences[rng_below(&g, (uint64_t)r->n_sentences)].sent;
            int plain = rng_below(&g, 2) == 1;
            char q[512], a[512];
            snprintf(q, sizeof q, "<image>\nCan you segment the %s in this image?", sent);
            snprintf(a, sizeof a, "%s[SEG].", sent);
            ar_sample s1, s2;
            if (sample_from_refer(j, i, 0, &o, &s1)) { bad++; continue; }
            if (sample_from_refer(j, i, 0, &o, &s2)) { bad++; ar_sample_free(&s1); continue; }
            bad += !streq(s1.question, q) || !streq(s1.answer, plain ? "It is [SEG]." : a);
            bad += !streq(s1.question, s2.question) || !streq(s1.answer, s2.answer);
            bad += s1.n_masks != 1 || s1.mask_area[0] != rle_pixels(&r->mask) || s1.mask_area[0] == 0;
            if (seed > 0) {
                sample_options o0 = o;
                o0.seed = 0;
                ar_sample s0;
                if (sample_from_refer(j, i, 0, &o0, &s0) == 0) {
                    differ += !streq(s0.question, s1.question) || !streq(s0.answer, s1.answer);
                    ar_sample_free(&s0);
                }
            }
            ar_sample_free(&s1);
            ar_sample_free(&s2);
        }
    }
    t_check(bad == 0 && differ > 0, "refer seeded choices",
            "16 seeds x %zu records: %d wrong (choice, reproducibility, mask area), %d differ from seed 0", j->n, bad,
            differ);
    refer_join_free(j);
}

/* sample_options.plain_p: 0 never gives "It is [SEG].", 1 always does; the
 * sentence drawn is the same whatever p (the coin is drawn either way). */
static void test_plain_p(void) {
    refer_join *j = refer_join_load(FIX "/refer_join/root", "refcoco", NULL, "train", FIX "/refer_join/images",
                                    REFER_IMAGES_REFER);
    if (!j) { t_fail("samples plain_p", "%s", ar_error()); return; }
    int plain0 = 0, plain1 = 0, same_q = 0, n = 0;
    for (size_t i = 0; i < j->n; i++, n++) {
        sample_options o;
        ar_sample a, b, c;
        sample_options_default(&o);
        o.seed = 7;
        o.plain_p = 0.0;
        if (sample_from_refer(j, i, 0, &o, &a)) break;
        o.plain_p = 1.0;
        if (sample_from_refer(j, i, 0, &o, &b)) { ar_sample_free(&a); break; }
        o.plain_p = 0.5;
        if (sample_from_refer(j, i, 0, &o, &c)) { ar_sample_free(&a); ar_sample_free(&b); break; }
        plain0 += !strcmp(a.answer, o.a_seg_plain);
        plain1 += !strcmp(b.answer, o.a_seg_plain);
        same_q += !strcmp(a.question, b.question) && !strcmp(a.question, c.question);
        ar_sample_free(&a); ar_sample_free(&b); ar_sample_free(&c);
    }
    t_check(n == (int)j->n && n > 0 && plain0 == 0 && plain1 == n && same_q == n, "samples plain_p 0 / 1",
            "%d records: plain answers %d at p = 0, %d at p = 1; the same question at every p: %d", n, plain0, plain1, same_q);
    refer_join_free(j);
}

static void test_avs(void) {
    h5fixture fx;
    if (fx_open(&fx, FIX "/avsbench/expected.h5", "samples ")) {
        int ks[2] = {AVS_FIX_MASKS, 32}, ps[3] = {AVS_FIX_MASKS, 24, 32};
        g_have_masks = fx_read(&fx, "masks_keys", H5T_NATIVE_UINT8, g_keys, 2, ks) &&
                       fx_read(&fx, "masks", H5T_NATIVE_UINT8, g_masks, 3, ps);
        fx_close(&fx);
    }
    sample_options o;
    sample_options_default(&o);
    avs_set *s4 = avs_load(FIX "/avsbench/s4", "s4", "val", NULL);
    avs_set *ms3 = avs_load(FIX "/avsbench/ms3", "ms3", "train", NULL);
    if (!t_check(s4 && ms3, "avs load", "%s", s4 && ms3 ? "ok" : ar_error())) { avs_free(s4); avs_free(ms3); return; }
    const char *q = "<image>\nCan you segment object with the following audio <audio_ref_start><audio_ref_end> in this image?";
    int bad = 0;
    size_t n4 = avs_num_samples(s4), n3 = avs_num_samples(ms3);
    for (int set = 0; set < 2; set++) {
        avs_set *a = set ? ms3 : s4;
        for (size_t i = 0; i < (set ? n3 : n4); i++) {
            ar_sample s;
            size_t ri;
            int k;
            avs_sample(a, i, &ri, &k);
            if (sample_from_avs(a, i, &o, &s)) { bad++; printf("  %s\n", ar_error()); continue; }
            const char *want = set ? "it is [SEG]." : NULL;
            char buf[128];
            if (!set) {
                snprintf(buf, sizeof buf, "%s[SEG].", avs_class_name(a->records[ri].category));
                want = buf;
            }
            ar_image im = {0};
            int ok = image_load(&im, a->records[ri].frame[k], IMAGE_RGB) == 0;
            bad += !ok || s.height != im.h || s.width != im.w;
            image_free(&im);
            bad += !streq(s.question, q) || !streq(s.answer, want) || s.ref != SAMPLE_REF_AUDIO || s.has_box ||
                   s.frame != k || s.record != ri || !streq(s.image, a->records[ri].frame[k]);
            uint64_t want_area = avs_pil_pixels(set ? "ms3" : "s4", a->records[ri].video, k);
            if (s.n_masks != 1 || s.mask_area[0] != want_area)
                printf("  %s sample %zu: area %llu, png %llu\n", s.dataset, i, (unsigned long long)s.mask_area[0], (unsigned long long)want_area);
            bad += s.n_masks != 1 || s.mask_area[0] != want_area;
            if (i == 0) printf("  %s: \"%s\" area %llu\n", s.dataset, s.answer, (unsigned long long)s.mask_area[0]);
            ar_sample_free(&s);
        }
    }
    t_check(bad == 0 && n4 == 5 && n3 == 5, "avs samples",
            "S4 val %zu + MS3 train %zu samples: questions, answers (S4 \"<class>[SEG].\", MS3 \"it is [SEG].\"), "
            "frame sizes, mask areas vs PIL's binarised masks: %d wrong", n4, n3, bad);
    avs_free(s4);
    avs_free(ms3);
}

static void test_custom(void) {
    cj_dataset ds;
    cj_options co = {.check_files = 1};
    int lrc = cj_load(FIX "/custom/data.jsonl", &co, &ds);
    if (!t_check(lrc == 0, "custom load", "%s", lrc ? ar_error() : "loaded")) return;
    sample_options o;
    sample_options_default(&o);
    int bad = 0, seen = 0;
    for (size_t i = 0; i < ds.n; i++) {
        cj_record *r = &ds.recs[i];
        ar_sample s;
        if (sample_from_custom(&ds, i, "mine", &o, &s)) { bad++; printf("  %s\n", ar_error()); continue; }
        rle_mask m = {0};
        if (r->mask != CJ_MASK_NONE) {
            bad += cj_record_mask(r, &m) != 0 || s.n_masks != 1 || s.mask_area[0] != rle_pixels(&m);
            if (r->mask == CJ_MASK_PNG) bad += s.mask_area[0] != png_pixels(r->mask_path);
            rle_free(&m);
        } else bad += s.n_masks != 0;
        bad += !streq(s.dataset, "mine") || !streq(s.split, r->split) || s.height != r->height || s.width != r->width;
        if (r->qa == CJ_LITERAL) {
            seen++;
            bad += !streq(s.question, "<image>\nWhere is the mug?") || !streq(s.answer, "It is [SEG].") ||
                   s.ref != SAMPLE_REF_TEXT;
        } else if (r->qa == CJ_TEMPLATE_CAPTION) {
            seen++;
            bad += !streq(s.question, "<image>\nCan you provide a description of the region "
                                      "<audio_ref_start><audio_ref_end> in this image?") ||
                   !streq(s.answer, "a beep, caf\xc3\xa9.") || s.ref != SAMPLE_REF_AUDIO;
        } else if (r->ref == CJ_REF_BOX && r->box[2] == 11.5) {
            seen++;
            bad += !streq(s.question, "<image>\nCan you segment the <img_ref_start><img_ref_end> in this image?") ||
                   !streq(s.answer, "It is [SEG].") || s.ref != SAMPLE_REF_BOX || !s.has_box || s.box[0] != 1 ||
                   s.box[1] != 2 || s.box[2] != 11.5 || s.box[3] != 9;
        } else if (r->ref == CJ_REF_IMAGE) {
            seen++;
            bad += s.ref != SAMPLE_REF_IMAGE || s.has_box || !streq(s.answer, "It is [SEG].");
        } else if (r->ref == CJ_REF_TEXT && streq(r->expression, "the stripes")) {
            seen++;
            bad += !streq(s.question, "<image>\nCan you segment the stripes in this image?") ||
                   (!streq(s.answer, "the stripes[SEG].") && !streq(s.answer, "It is [SEG]."));
        }
        ar_sample_free(&s);
    }
    t_check(bad == 0 && seen == 5, "custom samples",
            "%zu records: literal, caption (audio), box, image crop and seg-with-expression strings, mask areas "
            "(RLE and PNG pixel counts): %d of %d checked wrong", ds.n, bad, seen);
    cj_free(&ds);
}

/* ------------------------------------------------------------- inspect */
static int run_inspect(char **argv, int argc, char **out, char **err) {
    size_t no, ne;
    FILE *fo = open_memstream(out, &no), *fe = open_memstream(err, &ne);
    int rc = inspect_run(argc, argv, fo, fe);
    fclose(fo);
    fclose(fe);
    return rc;
}

static int n_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void test_inspect(void) {
    char cfg[] = "/tmp/anyref_inspect_XXXXXX";
    int fd = mkstemp(cfg);
    if (!t_check(fd >= 0, "inspect config", "mkstemp")) return;
    FILE *f = fdopen(fd, "w");
    fprintf(f, "[source]\nkind = refer\nroot = %s/refer_join/root\nimages = %s/refer_join/images\n"
               "dataset = refcoco\ntask = caption\nseed = 3\n[data]\ntokenizer = %s/tok_bpe.model\n",
            FIX, FIX, FIX);
    fclose(f);

    char *out = NULL, *err = NULL;
    char *argv1[] = {"inspect", cfg};
    int rc = run_inspect(argv1, 2, &out, &err);
    int ok = rc == 0 && n_lines(out) == 4 && strstr(err, "inspect: 4 samples printed, 1 records skipped by the loader");
    t_check(ok, "inspect refer caption", "rc %d, %d lines, stderr: %s", rc, out ? n_lines(out) : -1, err ? err : "");

    /* the same encoder as the command: tokens match conv_tokenize's n */
    tokenizer *tok = tok_load(FIX "/tok_bpe.model");
    conv_encoder *e = tok ? conv_encoder_new(tok, "llava_v1", 1 << 24) : NULL;
    int enc_ok = e && conv_encoder_add_placeholder(e, "<image>") == -1;
    const char *added[] = {"[SEG]", "<img_ref_start>", "<img_ref_end>", "<audio_ref_start>", "<audio_ref_end>"};
    for (int i = 0; enc_ok && i < 5; i++) enc_ok = conv_encoder_add_token(e, added[i], 1) >= 0;
    t_check(enc_ok, "inspect tokenizer", "%s", enc_ok ? "encoder" : ar_error());

    refer_join *j = refer_join_load(FIX "/refer_join/root", "refcoco", NULL, "train", FIX "/refer_join/images",
                                    REFER_IMAGES_REFER);
    int bad = 0, lines = 0;
    const char *p = out;
    for (size_t i = 0; ok && enc_ok && j && p && *p; i++) {
        const char *nl = strchr(p, '\n');
        json_doc *d = json_parse(p, (size_t)(nl - p), "inspect line");
        const json_value *v = json_root(d);
        sample_options o;
        sample_options_default(&o);
        o.seed = 3;
        ar_sample s;
        if (!d || sample_from_refer(j, i, 1, &o, &s)) { bad++; json_free(d); break; }
        const char *msgs[2] = {s.question, s.answer};
        conv_sample cs;
        int tk = conv_tokenize(e, msgs, NULL, 2, &cs) == 0 ? cs.n : -1;
        conv_sample_free(&cs);
        const json_value *box = json_get(v, "box"), *ma = json_get(v, "mask_area"), *t = json_get(v, "tokens");
        bad += !streq(json_get(v, "dataset")->str, "refcoco") || !streq(json_get(v, "split")->str, "train") ||
               !streq(json_get(v, "image")->str, s.image) || json_get(v, "height")->integer != s.height ||
               json_get(v, "width")->integer != s.width || !streq(json_get(v, "question")->str, s.question) ||
               !streq(json_get(v, "answer")->str, s.answer) || !streq(json_get(v, "reference")->str, "box");
        bad += !box || box->type != JSON_ARRAY || box->n != 4 || box->items[2].number != s.box[2];
        bad += !ma || ma->type != JSON_ARRAY || ma->n != 0;
        bad += !t || !t->is_int || t->integer != tk || tk <= 0;
        if (i == 0) printf("  %.*s\n", (int)(nl - p), p);
        lines++;
        ar_sample_free(&s);
        json_free(d);
        p = nl + 1;
    }
    t_check(ok && bad == 0 && lines == 4, "inspect lines",
            "%d JSON lines: every field as the builder gives it, tokens = conv_tokenize's n: %d wrong", lines, bad);
    refer_join_free(j);
    conv_encoder_free(e);
    tok_free(tok);
    free(out);
    free(err);

    /* --limit, overrides (seg task, jsonl source, no tokenizer), a bad kind */
    char *argv2[] = {"inspect", cfg, "source.task=seg", "--limit", "2", "data.tokenizer="};
    rc = run_inspect(argv2, 6, &out, &err);
    int ok2 = rc == 0 && n_lines(out) == 2 && strstr(out, "\"tokens\":null") && strstr(out, "\"reference\":\"text\"") &&
              strstr(out, "\"box\":null");
    t_check(ok2, "inspect --limit", "rc %d, %d lines (want 2, text references, tokens null)", rc, n_lines(out));
    free(out);
    free(err);
    /* --source 2: the source2.* keys (source.* left as the refer set) */
    char *argv2b[] = {"inspect", cfg, "source2.kind=jsonl", "source2.file=" FIX "/custom/data.jsonl", "source2.split=val",
                      "--source", "2"};
    rc = run_inspect(argv2b, 7, &out, &err);
    t_check(rc == 0 && n_lines(out) == 1 && strstr(out, "\"dataset\":\"data\"") && !strstr(out, "refcoco"),
            "inspect --source 2 reads source2.*", "rc %d, %d lines: %.200s", rc, n_lines(out), out ? out : "");
    free(out);
    free(err);
    char *argv2c[] = {"inspect", cfg, "--source", "7"};
    rc = run_inspect(argv2c, 4, &out, &err);
    t_check(rc == 2 && strstr(err, "--source expects"), "inspect --source 7 refused", "rc %d: %s", rc, err ? err : "");
    free(out);
    free(err);
    char *argv3[] = {"inspect", cfg, "source.kind=jsonl", "source.file=" FIX "/custom/data.jsonl", "source.split=val"};
    rc = run_inspect(argv3, 5, &out, &err);
    json_doc *d = json_parse(out, strcspn(out, "\n"), "jsonl line");
    const json_value *v = json_root(d);
    t_check(rc == 0 && n_lines(out) == 1 && d && streq(json_get(v, "dataset")->str, "data") &&
                streq(json_get(v, "split")->str, "val") && json_get(v, "mask_area")->n == 1 &&
                strstr(err, "records skipped by the loader"),
            "inspect jsonl", "rc %d, %d lines (the one val record): %s", rc, n_lines(out), out);
    json_free(d);
    free(out);
    free(err);
    char *argv4[] = {"inspect", cfg, "source.kind=coco"};
    rc = run_inspect(argv4, 3, &out, &err);
    t_check(rc == 2 && strstr(err, "source.kind = 'coco'"), "inspect bad kind", "rc %d: %s", rc, err);
    free(out);
    free(err);
    unlink(cfg);
}

int main(void) {
    test_refer();
    test_plain_p();
    test_avs();
    test_custom();
    test_inspect();
    return t_exit_code();
}
