/* tests/test_custom_jsonl.c — the JSON-lines format for users' own data
 * (data/custom_jsonl.c) against tests/fixtures/custom (written by
 * tests/ref/custom_jsonl_ref.py: tiny PNG/JPEG images, crops, grey and
 * palette PNG masks, a WAV, data.jsonl with 7 good lines, a blank line and 28
 * bad ones, expected.json): every field of every record, every mask pixel
 * (PNG nonzero, polygons and RLEs as pycocotools), every error message
 * (file:line: field: problem), the counts and the summary; loading without
 * file checks (lazy masks probe the image size); absolute paths; lines with
 * CRLF and without a final newline; image_probe_size on PNG and JPEG
 * (APP segments skipped) and its errors; an unreadable file.
 * Depends on data/custom_jsonl.h, data/image.h, core/json.h, tests/testlib.h.
 */
#include "core/error.h"
#include "core/json.h"
#include "data/custom_jsonl.h"
#include "data/image.h"
#include "tests/testlib.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/custom"

static const char *jstr(const json_value *o, const char *k) {
    const json_value *v = json_get(o, k);
    return v && v->type == JSON_STRING ? v->str : NULL;
}

static int same(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

static int path_is(const char *got, const char *rel) {
    char want[512];
    if (!rel) return got == NULL;
    snprintf(want, sizeof want, FIX "/%s", rel);
    return got && strcmp(got, want) == 0;
}

static long check_record(cj_record *r, const json_value *e, int probed, long *pixels) {
    long bad = 0;
    static const char *refs[] = {"text", "box", "ref_image", "audio"};
    static const char *qas[] = {"seg", "caption", "literal"};
    static const char *masks[] = {"none", "png", "polygon", "rle"};
    bad += r->line != json_get(e, "line")->integer;
    bad += !same(r->id, jstr(e, "id")) + !same(r->split, jstr(e, "split"));
    bad += !path_is(r->image, jstr(e, "image"));
    if (probed) bad += r->height != json_get(e, "height")->integer || r->width != json_get(e, "width")->integer;
    bad += strcmp(refs[r->ref], jstr(e, "ref")) != 0;
    bad += !same(r->text, jstr(e, "text"));
    const json_value *box = json_get(e, "box");
    if (box->type == JSON_ARRAY)
        for (int i = 0; i < 4; i++) bad += r->box[i] != box->items[i].number;
    bad += !path_is(r->ref_path, jstr(e, "ref_path"));
    bad += strcmp(qas[r->qa], jstr(e, "qa")) != 0;
    bad += !same(r->expression, jstr(e, "expression")) + !same(r->question, jstr(e, "question")) +
           !same(r->answer, jstr(e, "answer"));
    bad += strcmp(masks[r->mask], jstr(e, "mask_kind")) != 0;
    const json_value *m = json_get(e, "mask");
    rle_mask rm = {0};
    if (m->type == JSON_NULL) return bad + (cj_record_mask(r, &rm) == 0);
    if (cj_record_mask(r, &rm) < 0) { printf("  line %d: %s\n", r->line, ar_error()); return bad + 1; }
    if (rm.h != m->n || rm.w != m->items[0].len) { rle_free(&rm); return bad + 1; }
    uint8_t *px = malloc((size_t)rm.h * rm.w);
    rle_decode_hw(&rm, px);
    for (uint32_t y = 0; y < rm.h; y++)
        for (uint32_t x = 0; x < rm.w; x++, (*pixels)++) bad += px[y * rm.w + x] != (m->items[y].str[x] == '1');
    free(px);
    rle_free(&rm);
    return bad;
}

/* "{F}" -> file, "{D}" -> dir; trailing '*' = prefix match */
static int msg_matches(const char *got, const char *pattern) {
    char want[1024];
    size_t o = 0;
    for (const char *p = pattern; *p && o < sizeof want - 64; p++) {
        if (strncmp(p, "{F}", 3) == 0) o += snprintf(want + o, sizeof want - o, "%s", FIX "/data.jsonl"), p += 2;
        else if (strncmp(p, "{D}", 3) == 0) o += snprintf(want + o, sizeof want - o, "%s", FIX), p += 2;
        else want[o++] = *p;
    }
    want[o] = 0;
    if (o && want[o - 1] == '*') return strncmp(got, want, o - 1) == 0;
    return strcmp(got, want) == 0;
}

static void check_all(const json_value *exp, const cj_options *opt, const char *name) {
    cj_dataset ds;
    int rc = cj_load(FIX "/data.jsonl", opt, &ds);
    if (!t_check(rc == 0, name, "load: %s", rc ? ar_error() : "ok")) return;
    const json_value *recs = json_get(exp, "records"), *errs = json_get(exp, "errors");
    int probed = opt && (opt->check_files || opt->decode), decoded = opt && opt->decode;
    /* the errors this mode finds: without file checks none of the file-dependent
     * ones, without decoding not the broken image's */
    const char *want[64];
    size_t want_bad = 0;
    for (size_t i = 0; i < errs->n && want_bad < 64; i++) {
        const char *e = errs->items[i].str;
        int files = strstr(e, "outside the") || strstr(e, "No such file") || strstr(e, "is not the image's") ||
                    strstr(e, "wrong_size") || strstr(e, "image: *");
        if ((files && !probed) || (strstr(e, "image: *") && !decoded)) continue;
        want[want_bad++] = e;
    }
    t_check(ds.n_lines == (size_t)json_get(exp, "n_lines")->integer && ds.n_blank == 1 && ds.n_bad == want_bad &&
                ds.n == ds.n_lines - 1 - want_bad,
            name, "%zu lines, %zu records, %zu bad (expected %zu), %zu blank", ds.n_lines, ds.n, ds.n_bad, want_bad,
            ds.n_blank);
    long bad = 0, pixels = 0;
    size_t k = 0;
    for (size_t i = 0; i < ds.n && k < recs->n; i++) {
        if (ds.recs[i].line != json_get(&recs->items[k], "line")->integer) continue;   /* an unchecked bad line */
        bad += check_record(&ds.recs[i], &recs->items[k++], probed, &pixels);
    }
    t_check(bad == 0 && k == recs->n, name, "%zu records, every field and %ld mask pixels: %ld differ", k, pixels,
            bad);
    int all = ds.n_messages == (int)want_bad;
    for (size_t i = 0; i < want_bad && (int)i < ds.n_messages; i++) {
        int ok = msg_matches(ds.messages[i], want[i]);
        if (!ok) printf("  got      %s\n  expected %s\n", ds.messages[i], want[i]);
        all &= ok;
    }
    t_check(all, name, "%d error messages, each as expected", ds.n_messages);
    char sum[256], sum_want[256];
    cj_summary(&ds, sum, sizeof sum);
    snprintf(sum_want, sizeof sum_want, FIX "/data.jsonl: %zu records, %zu lines skipped (1 blank)",
             ds.n_lines - 1 - want_bad, want_bad);
    t_check(strcmp(sum, sum_want) == 0, name, "summary: %s", sum);
    cj_free(&ds);
}

int main(void) {
    json_doc *d = json_parse_file(FIX "/expected.json");
    if (!d) { printf("FAIL expected.json: %s\n", ar_error()); return 1; }
    const json_value *exp = json_root(d);
    printf("error messages of the fixture (decode on):\n");
    cj_dataset ds;
    cj_options dec = {1, 1}, chk = {1, 0};
    if (cj_load(FIX "/data.jsonl", &dec, &ds) == 0) {
        for (int i = 0; i < ds.n_messages; i++) printf("  %s\n", ds.messages[i]);
        cj_free(&ds);
    }
    check_all(exp, &dec, "decode");
    check_all(exp, &chk, "check_files");
    check_all(exp, NULL, "no checks");

    /* absolute paths, CRLF, no final newline, and a relative path with no directory */
    char cwd[PATH_MAX], text[2 * PATH_MAX + 256];
    if (getcwd(cwd, sizeof cwd)) {
        snprintf(text, sizeof text,
                 "{\"image\": \"%s/" FIX "/img/a.png\", \"text\": \"x\", \"mask\": \"%s/" FIX "/masks/grey.png\"}\r\n"
                 "\r\n{\"image\": \"img/b.jpg\", \"audio\": \"wav/beep.wav\", \"template\": \"caption\", \"expression\": \"e\"}",
                 cwd, cwd);
        int rc = cj_load_buffer(text, strlen(text), FIX "/mem.jsonl", &dec, &ds);
        t_check(rc == 0 && ds.n == 2 && ds.n_blank == 1 && ds.n_lines == 3 && ds.recs[0].image[0] == '/' &&
                    ds.recs[1].line == 3 && ds.recs[1].height == 9 && ds.recs[1].width == 14,
                "absolute paths, CRLF, no final newline", "%zu records, %zu lines: %s", ds.n, ds.n_lines,
                ds.n_messages ? ds.messages[0] : "");
        cj_free(&ds);
    }
    const char *nodir = "{\"image\": \"a.png\", \"text\": \"x\", \"polygon\": [[0,0,1,0,1,1]]}";
    int nrc = cj_load_buffer(nodir, strlen(nodir), "data.jsonl", NULL, &ds);
    t_check(nrc == 0 && ds.n == 1 && strcmp(ds.recs[0].image, "a.png") == 0, "path without a directory", "%s",
            nrc == 0 && ds.n ? ds.recs[0].image : ar_error());
    cj_free(&ds);
    /* the brief's example message, from a record parsed alone */
    cj_record r;
    const char *l17 = "{\"image\": \"x.png\", \"box\": [1, 2, 3], \"polygon\": [[0,0,1,0,1,1]]}";
    t_check(cj_parse_line(l17, strlen(l17), "data.jsonl", 17, "", NULL, &r) < 0 &&
                strcmp(ar_error(), "data.jsonl:17: box: expected 4 numbers, found 3") == 0,
            "cj_parse_line message", "%s", ar_error());
    t_check(cj_load(FIX "/nowhere.jsonl", NULL, &ds) < 0 && strstr(ar_error(), FIX "/nowhere.jsonl: cannot open"),
            "missing file", "%s", ar_error());

    /* image_probe_size */
    static const struct { const char *path, *name; int w, h; } probes[] = {
        {FIX "/img/a.png", "probe png", 12, 10},
        {FIX "/img/b.jpg", "probe jpeg", 14, 9},
        {"tests/fixtures/images/jpeg_exif_rot_24x16.jpg", "probe jpeg with EXIF", 24, 16},
        {"tests/fixtures/images/jpeg_progressive_45x31.jpg", "probe progressive jpeg", 45, 31},
        {"tests/fixtures/images/jpeg_cmyk_23x17.jpg", "probe cmyk jpeg", 23, 17},
        {"tests/fixtures/images/pal4_27x13.png", "probe palette png", 27, 13},
    };
    int h = 0, w = 0;
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        int rc = image_probe_size(probes[i].path, &h, &w);
        t_check(rc == 0 && h == probes[i].h && w == probes[i].w, probes[i].name, "%dx%d", w, h);
    }
    t_check(image_probe_size(FIX "/wav/beep.wav", &h, &w) < 0 && strstr(ar_error(), "not a JPEG or PNG"),
            "probe refuses other files", "%s", ar_error());
    t_check(image_probe_size(FIX "/img/none.png", &h, &w) < 0 && strstr(ar_error(), "none.png: cannot open"),
            "probe missing file", "%s", ar_error());
    json_free(d);
    return t_exit_code();
}
