/* tests/test_avsbench.c — data/csv.c and data/avsbench.c against the tiny
 * AVSBench trees of tests/fixtures/avsbench (written by tests/ref/avs_ref.py
 * with Debian's python3-pil): every record field and path, splits, frames
 * and masks pixel by pixel against PIL (S4 convert("1") with its dithering,
 * MS3 convert("P") != 0), the audio equal to ar_audio_clips on the same file,
 * CSV edge cases (BOM, CRLF, quotes, blank and malformed lines with their
 * numbers) and errors (missing column, missing or broken files, bad
 * arguments). Run from the repository root. */
#include "core/error.h"
#include "data/avsbench.h"
#include "data/csv.h"
#include "data/fbank.h"
#include "data/wav.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/avsbench"

static int streq(const char *a, const char *b) { return a && b && !strcmp(a, b); }

/* ------------------------------------------------------------------ CSV */

static ar_csv *parse(const char *s) { return ar_csv_parse(s, strlen(s), "t.csv"); }

static void test_csv(void) {
    ar_csv *c = parse("\xEF\xBB\xBF" "a,b,c\r\n1,\"x,y\",3\r\n\r\n\"q\"\"q\",\"multi\r\nline\",\r\nlast,2,3");
    int ok = c && c->n_cols == 3 && streq(c->header[0], "a") && c->n_rows == 3 && c->n_skipped == 0 &&
             streq(ar_csv_get(c, 0, 1), "x,y") && streq(ar_csv_get(c, 1, 0), "q\"q") &&
             streq(ar_csv_get(c, 1, 1), "multi\r\nline") && streq(ar_csv_get(c, 1, 2), "") &&
             streq(ar_csv_get(c, 2, 0), "last") && c->row_line[0] == 2 && c->row_line[1] == 4 &&
             c->row_line[2] == 6;
    t_check(ok, "csv bom crlf quotes", "rows %zu", c ? c->n_rows : 0);
    t_check(c && ar_csv_find(c, "b") == 1 && ar_csv_find(c, "B") == -1 && ar_csv_find(c, "\xEF\xBB\xBF" "a") == -1,
            "csv find by name", "(BOM not part of the first name)");
    ar_csv_free(c);

    static const char bad[] = "a,b\nx\"y,1\nok,1\nlone\rcr,2\n\"open\"x,3\na,b,c\nnul\0x,4\nfine,\"5\"\n\"never closed,6\nz,7\n";
    c = ar_csv_parse(bad, sizeof bad - 1, "bad.csv");
    ok = c && c->n_rows == 2 && streq(ar_csv_get(c, 0, 0), "ok") && streq(ar_csv_get(c, 1, 0), "fine") &&
         streq(ar_csv_get(c, 1, 1), "5") && c->n_skipped == 6 && c->skipped_lines[0] == 2 &&
         c->skipped_lines[1] == 4 && c->skipped_lines[2] == 5 && c->skipped_lines[3] == 6 &&
         c->skipped_lines[4] == 7 && c->skipped_lines[5] == 9 && c->row_line[1] == 8;
    t_check(ok, "csv malformed lines skipped and counted", "rows %zu skipped %zu (lines 2 4 5 6 7 9)",
            c ? c->n_rows : 0, c ? c->n_skipped : 0);
    ar_csv_free(c);

    c = parse("h\n\n\n");
    t_check(c && c->n_rows == 0 && c->n_cols == 1, "csv header only", "%s", "");
    ar_csv_free(c);
    c = parse("h,\n1,\n");
    t_check(!c && strstr(ar_error(), "t.csv") && strstr(ar_error(), "empty name"), "csv empty column name refused",
            "%s", ar_error());
    c = parse("a,b,a\n");
    t_check(!c && strstr(ar_error(), "\"a\" twice"), "csv duplicate column refused", "%s", ar_error());
    c = parse("\r\n\n");
    t_check(!c && strstr(ar_error(), "t.csv") && strstr(ar_error(), "empty"), "csv empty refused", "%s", ar_error());
    c = parse("a,\"b\nc\n");
    t_check(!c && strstr(ar_error(), "t.csv:1") && strstr(ar_error(), "header"), "csv malformed header refused", "%s",
            ar_error());
    c = parse("name,split\nx,train\n");
    int col = c ? ar_csv_col(c, "category") : 0;
    t_check(c && col == -1 && strstr(ar_error(), "t.csv") && strstr(ar_error(), "\"category\"") &&
                strstr(ar_error(), "name, split"),
            "csv missing column names file and column", "%s", ar_error());
    ar_csv_free(c);
    c = ar_csv_read(FIX "/nonexistent.csv");
    t_check(!c && strstr(ar_error(), "nonexistent.csv"), "csv missing file", "%s", ar_error());

    /* every truncation of a good file parses or fails cleanly */
    static const char good[] = "\xEF\xBB\xBF" "n,\"c\"\r\n\"a\"\"b\",\"x\r\ny\"\r\nq,r\r\n";
    int sound = 1;
    for (size_t n = 0; n <= sizeof good - 1; n++) {
        ar_csv *t = ar_csv_parse(good, n, "cut.csv");
        if (t) {
            for (size_t r = 0; r < t->n_rows; r++)
                for (size_t k = 0; k < t->n_cols; k++) sound &= ar_csv_get(t, r, (int)k) != NULL;
        } else sound &= strstr(ar_error(), "cut.csv") != NULL;
        ar_csv_free(t);
    }
    t_check(sound, "csv every truncation", "%zu lengths", sizeof good);
}

/* --------------------------------------------------------------- expected */

typedef struct {
    int n;
    char (*keys)[32];
    uint8_t *px;
    size_t each;
} expected;

static int load_expected(h5fixture *fx, const char *what, int c, expected *e) {
    char kname[32];
    snprintf(kname, sizeof kname, "%s_keys", what);
    e->n = 0;
    hid_t ds = H5Dopen2(fx->file, kname, H5P_DEFAULT);
    if (ds < 0) { fx_bad(fx, kname, "missing"); return 0; }
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2] = {0, 0};
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(ds);
    e->n = (int)dims[0];
    e->keys = fx_alloc(fx, (size_t)e->n * 32);
    e->each = (size_t)24 * 32 * (size_t)c;
    e->px = fx_alloc(fx, (size_t)e->n * e->each);
    int ks[2] = {e->n, 32};
    int ps[4] = {e->n, 24, 32, c};
    return fx_read(fx, kname, H5T_NATIVE_UINT8, e->keys, 2, ks) &&
           fx_read(fx, what, H5T_NATIVE_UINT8, e->px, c == 3 ? 4 : 3, ps);
}

static const uint8_t *find_expected(const expected *e, const char *subset, const char *video, int k) {
    char key[64];
    snprintf(key, sizeof key, "%s/%s/%d", subset, video, k + 1);
    for (int i = 0; i < e->n; i++)
        if (!strncmp(e->keys[i], key, 32)) return e->px + (size_t)i * e->each;
    return NULL;
}

static expected g_frames, g_masks;

/* Compares every frame and present mask of r with PIL; returns mismatches. */
static void check_pixels(const char *subset, const avs_record *r, int *frames_ok, int *masks_ok, int *n_masks) {
    for (int k = 0; k < AVS_FRAMES; k++) {
        const uint8_t *want = find_expected(&g_frames, subset, r->video, k);
        ar_image im;
        if (want) {
            if (avs_load_frame(r, k, &im) < 0 || im.h != 24 || im.w != 32 || im.c != 3 ||
                memcmp(im.px, want, g_frames.each)) {
                *frames_ok = 0;
                printf("  frame %s %d: %s\n", r->video, k + 1, ar_error());
            }
            image_free(&im);
        }
        want = find_expected(&g_masks, subset, r->video, k);
        if (want) {
            ++*n_masks;
            if (avs_load_mask(r, k, &im) < 0 || im.h != 24 || im.w != 32 || im.c != 1 ||
                memcmp(im.px, want, g_masks.each)) {
                *masks_ok = 0;
                int diff = 0;
                if (im.px)
                    for (size_t i = 0; i < g_masks.each; i++) diff += im.px[i] != want[i];
                printf("  mask %s %d: %d pixels differ %s\n", r->video, k + 1, diff, ar_error());
            }
            image_free(&im);
        }
    }
}

/* ------------------------------------------------------------------- S4 */

static void test_s4(ar_fbank *fb) {
    avs_set *s = avs_load(FIX "/s4", "s4", "train", NULL);
    if (!t_check(s != NULL, "s4 train load", "%s", s ? "" : ar_error())) return;
    const avs_record *a = &s->records[0], *d = &s->records[1];
    int ok = s->n_records == 2 && s->n_csv_rows == 5 && s->n_bad_rows == 1 && s->n_skipped_lines == 2 &&
             s->skipped_lines[0] == 5 && s->skipped_lines[1] == 6 && s->subset == AVS_S4 && streq(s->split, "train");
    t_check(ok, "s4 csv counts", "records %zu rows %zu bad rows %zu malformed lines %zu", s->n_records, s->n_csv_rows,
            s->n_bad_rows, s->n_skipped_lines);
    ok = streq(a->video, "vidA") && streq(a->category, "dog_barking") && streq(a->split, "train") && a->csv_line == 2 &&
         a->subset == AVS_S4 &&
         streq(a->frame[0], FIX "/s4/s4_data/visual_frames/train/dog_barking/vidA/vidA_1.png") &&
         streq(a->frame[4], FIX "/s4/s4_data/visual_frames/train/dog_barking/vidA/vidA_5.png") &&
         streq(a->mask[0], FIX "/s4/s4_data/gt_masks/train/dog_barking/vidA/vidA_1.png") && !a->mask[1] &&
         !a->mask[2] && !a->mask[3] && !a->mask[4] &&
         streq(a->wav, FIX "/s4/s4_data/audio_wav/train/dog_barking/vidA.wav") && streq(d->video, "vidD") &&
         streq(d->category, "mynah_bird_singing") && d->csv_line == 9;
    t_check(ok, "s4 train records and paths", "%s %s", a->video, d->video);

    int fo = 1, mo = 1, nm = 0;
    check_pixels("s4", a, &fo, &mo, &nm);
    t_check(fo, "s4 train frames equal PIL", "%s", "");
    t_check(mo && nm == 1, "s4 train mask equals PIL convert(\"1\")", "%d masks", nm);
    ar_image im;
    t_check(avs_load_mask(a, 1, &im) < 0 && strstr(ar_error(), "no mask for frame 2"), "s4 train has mask 1 only",
            "%s", ar_error());
    t_check(avs_validate(a, fb) == 0, "s4 validate complete record", "%s", ar_error());

    /* audio: the whole 5 s file through ar_audio_clips */
    float *got = t_alloc(AVS_AUDIO_FLOATS), *want = t_alloc(AVS_AUDIO_FLOATS);
    ar_wav w;
    ar_audio_opts o;
    ar_audio_opts_imagebind(&o);
    int rc = avs_load_audio(a, fb, got);
    int rw = ar_wav_read(a->wav, &w);
    int rcl = rw == 0 ? ar_audio_clips(&w, &o, fb, a->wav, want) : -1;
    double amax = 0;
    int finite = 1;
    for (size_t i = 0; i < AVS_AUDIO_FLOATS; i++) {
        finite &= isfinite(got[i]);
        amax = fmax(amax, fabs(got[i]));
    }
    t_check(rc == 0 && rcl == 0 && w.frames == 80000 && !memcmp(got, want, AVS_AUDIO_FLOATS * sizeof(float)) &&
                finite && amax > 0.1,
            "s4 audio = ar_audio_clips of the whole wav", "[%d,1,%d,%d] max |x| %.3f", AVS_AUDIO_CLIPS, AVS_AUDIO_BINS,
            AVS_AUDIO_FRAMES, amax);
    ar_wav_free(&w);
    rc = avs_load_audio(d, NULL, got);
    t_check(rc < 0 && strstr(ar_error(), "vidD.wav"), "s4 missing wav named", "%s", ar_error());
    t_check(avs_validate(d, fb) < 0 && strstr(ar_error(), "vidD.wav"), "s4 validate names the missing wav", "%s",
            ar_error());

    size_t rec;
    int fr;
    t_check(avs_num_samples(s) == 2 && avs_sample(s, 1, &rec, &fr) == 0 && rec == 1 && fr == 0 &&
                avs_sample(s, 2, &rec, &fr) < 0,
            "s4 train samples (AnyRef: frame 1 per video)", "%zu", avs_num_samples(s));
    avs_free(s);

    s = avs_load(FIX "/s4", "s4", "val", NULL);
    if (!t_check(s && s->n_records == 1, "s4 val load", "%s", s ? "" : ar_error())) { avs_free(s); return; }
    const avs_record *b = &s->records[0];
    ok = streq(b->video, "vidB") && streq(b->category, "race_car") && b->csv_line == 3;
    for (int k = 0; k < AVS_FRAMES; k++) {
        char p[256];
        snprintf(p, sizeof p, FIX "/s4/s4_data/gt_masks/val/race_car/vidB/vidB_%d.png", k + 1);
        ok &= streq(b->mask[k], p);
    }
    t_check(ok, "s4 val record (quoted name) and 5 mask paths", "%s", "");
    fo = mo = 1;
    nm = 0;
    check_pixels("s4", b, &fo, &mo, &nm);
    t_check(fo, "s4 val frames equal PIL", "%s", "");
    t_check(mo && nm == 5, "s4 val masks equal PIL convert(\"1\")",
            "%d masks: grey 0/255, palette (p2bit), grey/RGB/RGBA dithered", nm);
    rc = avs_load_audio(b, fb, got);
    rw = ar_wav_read(b->wav, &w);
    rcl = rw == 0 ? ar_audio_clips(&w, &o, fb, b->wav, want) : -1;
    t_check(rc == 0 && rcl == 0 && !memcmp(got, want, AVS_AUDIO_FLOATS * sizeof(float)),
            "s4 short wav audio = ar_audio_clips", "%lld samples", (long long)w.frames);
    ar_wav_free(&w);
    t_check(avs_num_samples(s) == 5 && avs_sample(s, 3, &rec, &fr) == 0 && rec == 0 && fr == 3,
            "s4 val samples (AnyRef: 5 per video)", "%s", "");
    avs_free(s);

    s = avs_load(FIX "/s4", "s4", "test", NULL);
    if (!t_check(s && s->n_records == 1, "s4 test load", "%s", s ? "" : ar_error())) { avs_free(s); return; }
    const avs_record *cc = &s->records[0];
    t_check(streq(cc->video, "vidC") && cc->csv_line == 7, "s4 test record (quoted comma in another column)", "%s", "");
    t_check(avs_load_mask(cc, 2, &im) < 0 && strstr(ar_error(), "vidC_3.png"), "s4 missing mask named", "%s",
            ar_error());
    t_check(avs_load_frame(cc, 3, &im) < 0 && strstr(ar_error(), "vidC_4.png"), "s4 truncated frame named", "%s",
            ar_error());
    t_check(avs_load_frame(cc, 0, &im) == 0 && im.w == 32, "s4 other frames of a broken record load", "%s", "");
    image_free(&im);
    t_check(avs_validate(cc, fb) < 0 && strstr(ar_error(), "vidC_3.png"), "s4 validate fails on the broken record",
            "%s", ar_error());
    t_check(avs_load_frame(cc, 5, &im) < 0 && avs_load_mask(cc, -1, &im) < 0, "s4 frame index range", "%s", "");
    avs_free(s);
    free(got);
    free(want);

    avs_layout L = {.frames_subdir = "visual_frames_original_resolution"};
    s = avs_load(FIX "/s4", "s4", "train", &L);
    t_check(s && streq(s->records[0].frame[0],
                       FIX "/s4/s4_data/visual_frames_original_resolution/train/dog_barking/vidA/vidA_1.png") &&
                streq(s->records[0].mask[0], FIX "/s4/s4_data/gt_masks/train/dog_barking/vidA/vidA_1.png"),
            "s4 AnyRef frames layout", "%s", "");
    avs_free(s);
}

/* ------------------------------------------------------------------ MS3 */

static void test_ms3(ar_fbank *fb) {
    static const char *splits[3] = {"train", "val", "test"}, *vids[3] = {"m1", "m2", "m3"};
    for (int si = 0; si < 3; si++) {
        avs_set *s = avs_load(FIX "/ms3", "ms3", splits[si], NULL);
        char name[64];
        snprintf(name, sizeof name, "ms3 %s load", splits[si]);
        if (!t_check(s && s->n_records == 1 && s->n_csv_rows == 3 && s->n_skipped_lines == 0, name, "%s",
                     s ? "" : ar_error())) {
            avs_free(s);
            continue;
        }
        const avs_record *r = &s->records[0];
        const char *v = vids[si];
        int ok = streq(r->video, v) && !r->category && r->subset == AVS_MS3 && r->csv_line == (size_t)si + 2;
        for (int k = 0; k < AVS_FRAMES; k++) {
            char p[256];
            snprintf(p, sizeof p, FIX "/ms3/ms3_data/visual_frames/%s/%s.mp4_%d.png", v, v, k + 1);
            ok &= streq(r->frame[k], p);
            snprintf(p, sizeof p, FIX "/ms3/ms3_data/gt_masks/%s/%s/%s_%d.png", splits[si], v, v, k + 1);
            ok &= streq(r->mask[k], p);
        }
        char p[256];
        snprintf(p, sizeof p, FIX "/ms3/ms3_data/audio_wav/%s/%s.wav", splits[si], v);
        ok &= streq(r->wav, p);
        snprintf(name, sizeof name, "ms3 %s record and paths", splits[si]);
        t_check(ok, name, "%s", v);
        snprintf(name, sizeof name, "ms3 %s samples (5 per video)", splits[si]);
        t_check(avs_num_samples(s) == 5, name, "%s", "");
        if (si < 2) {
            int fo = 1, mo = 1, nm = 0;
            check_pixels("ms3", r, &fo, &mo, &nm);
            snprintf(name, sizeof name, "ms3 %s frames equal PIL", splits[si]);
            t_check(fo, name, "%s", "");
            snprintf(name, sizeof name, "ms3 %s masks equal PIL convert(\"P\") != 0", splits[si]);
            t_check(mo && nm == 5, name, "%d masks (palette and grey)", nm);
            snprintf(name, sizeof name, "ms3 %s validate", splits[si]);
            t_check(avs_validate(r, fb) == 0, name, "%s", ar_error());
        } else {
            t_check(avs_validate(r, fb) < 0 && strstr(ar_error(), "m3.mp4_1.png"), "ms3 test validate names the file",
                    "%s", ar_error());
        }
        avs_free(s);
    }
}

/* ------------------------------------------------------------- binarise */

static void test_binarise(void) {
    /* S4 grey 128 alone: dithered "> 128" gives 0, 129 gives 1; palette p2bit uses ">= 128000" */
    uint8_t px[6] = {128, 128, 128, 129, 129, 129};
    ar_image rgb = {.h = 1, .w = 2, .c = 3, .px = px}, out;
    int ok = avs_binarise(AVS_S4, &rgb, NULL, 0, &out) == 0 && out.px[0] == 0 && out.px[1] == 1;
    image_free(&out);
    ok &= avs_binarise(AVS_S4, &rgb, NULL, 3, &out) == 0 && out.px[0] == 1 && out.px[1] == 1;
    image_free(&out);
    uint8_t c[3] = {0, 0, 1};
    ar_image one = {.h = 1, .w = 1, .c = 3, .px = c};
    ok &= avs_binarise(AVS_MS3, &one, NULL, 2, &out) == 0 && out.px[0] == 1;
    image_free(&out);
    ok &= avs_binarise(AVS_MS3, &one, NULL, 3, &out) < 0;
    t_check(ok, "binarise thresholds", "grey 128 -> 0 (dither >128), palette grey 128 -> 1 (>=128000)");
}

/* --------------------------------------------------------------- errors */

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_errors(void) {
    char dir[] = "/tmp/anyref_avs_XXXXXX";
    if (!mkdtemp(dir)) { t_fail("avs errors tmpdir", "mkdtemp"); return; }
    char p[512];
    snprintf(p, sizeof p, "%s/s4_meta_data.csv", dir);
    write_file(p, "name,start_time,split\nv,0,train\n");
    avs_set *s = avs_load(dir, "s4", "train", NULL);
    t_check(!s && strstr(ar_error(), "s4_meta_data.csv") && strstr(ar_error(), "\"category\""),
            "missing category column named", "%s", ar_error());
    write_file(p, "video,category,split\nv,c,train\n");
    s = avs_load(dir, "s4", "train", NULL);
    t_check(!s && strstr(ar_error(), "\"name\""), "missing name column named", "%s", ar_error());
    write_file(p, "video_id,category,split\nv,c,train\n,c,train\nw,a/b,train\n");
    s = avs_load(dir, "s4", "train", NULL);
    t_check(s && s->n_records == 1 && streq(s->records[0].video, "v") && s->n_bad_rows == 2,
            "video_id accepted; empty name and '/' skipped", "%s", s ? "" : ar_error());
    avs_free(s);
    unlink(p);
    snprintf(p, sizeof p, "%s/ms3_meta_data.csv", dir);
    write_file(p, "video_id,category\nv,c\n");
    s = avs_load(dir, "ms3", "val", NULL);
    t_check(!s && strstr(ar_error(), "ms3_meta_data.csv") && strstr(ar_error(), "\"split\""),
            "missing split column named", "%s", ar_error());
    unlink(p);
    s = avs_load(dir, "ms3", "val", NULL);
    t_check(!s && strstr(ar_error(), "ms3_meta_data.csv"), "missing csv named", "%s", ar_error());
    rmdir(dir);
    s = avs_load(FIX "/s4", "s5", "train", NULL);
    t_check(!s && strstr(ar_error(), "s5"), "unknown subset", "%s", ar_error());
    s = avs_load(FIX "/s4", "s4", "testA", NULL);
    t_check(!s && strstr(ar_error(), "testA"), "unknown split", "%s", ar_error());
    t_check(streq(avs_class_name("mynah_bird_singing"), "bird") && streq(avs_class_name("lawn_mowing"), "lawn mower") &&
                streq(avs_class_name("horse_clip-clop"), "horse") && !avs_class_name("unknown"),
            "AnyRef class names", "%s", "");
}

int main(void) {
    test_csv();
    test_binarise();
    h5fixture fx;
    if (fx_open(&fx, FIX "/expected.h5", "avsbench ")) {
        if (load_expected(&fx, "frames", 3, &g_frames) && load_expected(&fx, "masks", 1, &g_masks)) {
            ar_fbank_opts fo;
            ar_fbank_opts_imagebind(&fo);
            ar_fbank *fb = ar_fbank_create(&fo);
            test_s4(fb);
            test_ms3(fb);
            ar_fbank_free(fb);
        }
        free(g_frames.keys);
        free(g_frames.px);
        free(g_masks.keys);
        free(g_masks.px);
        fx_close(&fx);
    }
    test_errors();
    return t_exit_code();
}
