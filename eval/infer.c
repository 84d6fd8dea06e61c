/* eval/infer.c — `anyref infer`: one image and one reference through a
 * trained AnyRef checkpoint; prints the generated answer and writes the mask
 * of its first [SEG] as a PNG and as an overlay on the image.
 *
 * The request becomes a one-record JSON-lines set (data/custom_jsonl.h) in a
 * temporary directory, read by the same live loader and trainer set-up as
 * training (train/run.h with data.kind = sources over that record), so the
 * prompt, the tokenizer's added tokens, the CLIP/SAM preprocessing and the
 * reference inputs are exactly training's. The record's answer and (empty)
 * mask only give the loader a complete sample: the answer is cut off at the
 * prompt, which ends with "ASSISTANT:", and generated (model/generate.h,
 * greedy unless the decoding flags of `anyref eval` say otherwise); the mask is the post-processed logits > 0 of the
 * generated answer's first [SEG] (tokens after it do not change it: the
 * decoder is causal). */
#include "eval/infer.h"
#include "eval/evaluate.h"
#include "train/run.h"
#include "train/train.h"

#include "checkpoints/checkpoint.h"
#include "core/error.h"
#include "core/json.h"
#include "core/log.h"
#include "data/image.h"
#include "data/loader.h"
#include "data/tokenizer.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: anyref infer --checkpoint CKPT|RUN_DIR --image FILE\n"
            "                    (--text \"...\" | --box x0,y0,x1,y1 | --ref-image FILE | --audio FILE)\n"
            "                    [--question \"...\"] [--caption] [--out PREFIX] [decoding] [section.key=value ...]\n"
            "  prints the generated answer; writes PREFIX_mask.png (0/255, the image's size) and\n"
            "  PREFIX_overlay.png (default PREFIX: the image's name without extension, in the current directory).\n"
            "  --caption asks for a description of the box / image region instead of a mask; --question replaces\n"
            "  the template question (put the reference in it yourself). Overrides change the checkpoint's config\n"
            "  (e.g. model.init=... when the base weights moved). At most 64 new tokens unless --max-new says.\n");
    fputs(eval_gen_usage, f);
}

typedef struct {
    const char *ckpt, *image, *text, *box, *ref_image, *audio, *question, *out;
    int caption;
    gen_cfg gen;
    const char *stop;
    const char *over[64];
    int n_over;
} infer_args;

static int parse(int argc, char **argv, infer_args *a, FILE *err) {
    memset(a, 0, sizeof *a);
    a->gen = gen_default_cfg();
    a->gen.max_new = 64;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        int g;
        const char **dst = !strcmp(k, "--checkpoint") ? &a->ckpt : !strcmp(k, "--image") ? &a->image
                           : !strcmp(k, "--text") ? &a->text : !strcmp(k, "--box") ? &a->box
                           : !strcmp(k, "--ref-image") ? &a->ref_image : !strcmp(k, "--audio") ? &a->audio
                           : !strcmp(k, "--question") ? &a->question : !strcmp(k, "--out") ? &a->out : NULL;
        if (dst) {
            if (i + 1 >= argc) { fprintf(err, "anyref infer: %s needs a value\n", k); return 2; }
            *dst = argv[++i];
        } else if (!strcmp(k, "--caption")) {
            a->caption = 1;
        } else if ((g = eval_parse_gen_flag(argc, argv, &i, &a->gen, &a->stop)) != 0) {
            if (g < 0) { fprintf(err, "anyref infer: %s\n", ar_error()); return 2; }
        } else if (!strcmp(k, "-h") || !strcmp(k, "--help")) {
            usage(stdout);
            return 1;
        } else if (k[0] != '-' && strchr(k, '=') && a->n_over < 64) {
            a->over[a->n_over++] = k;
        } else {
            fprintf(err, "anyref infer: unknown argument '%s'\n", k);
            usage(err);
            return 2;
        }
    }
    int refs = !!a->text + !!a->box + !!a->ref_image + !!a->audio;
    if (!a->ckpt || !a->image || refs != 1) {
        fprintf(err, "anyref infer: needs --checkpoint, --image and exactly one of --text, --box, --ref-image, --audio\n");
        usage(err);
        return 2;
    }
    if (a->caption && (a->text || a->audio)) {
        fprintf(err, "anyref infer: --caption describes a --box or --ref-image region\n");
        return 2;
    }
    return 0;
}

static int write_str(FILE *f, const char *key, const char *v) {
    fprintf(f, "%s\"%s\": ", !strcmp(key, "image") ? "" : ", ", key);   /* "image" comes first */
    return json_write_string(f, v, strlen(v));
}

/* The request as one JSON line in dir/req.jsonl. */
static int write_request(const infer_args *a, const char *dir, char *jsonl, size_t cap) {
    char img[PATH_MAX], ref[PATH_MAX] = "";
    if (!realpath(a->image, img)) return ar_errorf("--image %s: %s", a->image, strerror(errno));
    const char *rp = a->ref_image ? a->ref_image : a->audio;
    if (rp && !realpath(rp, ref)) return ar_errorf("%s %s: %s", a->ref_image ? "--ref-image" : "--audio", rp, strerror(errno));
    int h, w;
    if (image_probe_size(img, &h, &w)) return -1;
    snprintf(jsonl, cap, "%s/req.jsonl", dir);
    FILE *f = fopen(jsonl, "w");
    if (!f) return ar_errorf("cannot write %s: %s", jsonl, strerror(errno));
    fputc('{', f);
    write_str(f, "image", img);
    if (a->text) write_str(f, "text", a->text);
    if (a->ref_image) write_str(f, "ref_image", ref);
    if (a->audio) write_str(f, "audio", ref);
    if (a->box) {
        double b[4];
        char tail;
        if (sscanf(a->box, "%lf,%lf,%lf,%lf%c", &b[0], &b[1], &b[2], &b[3], &tail) != 4) {
            fclose(f);
            return ar_errorf("--box '%s': expected x0,y0,x1,y1 (pixels)", a->box);
        }
        fprintf(f, ", \"box\": [%.17g, %.17g, %.17g, %.17g]", b[0], b[1], b[2], b[3]);
    }
    if (a->question) {
        write_str(f, "question", a->question);
        write_str(f, "answer", a->caption ? "a region." : "[SEG].");
    } else if (a->caption) {
        fprintf(f, ", \"template\": \"caption\", \"expression\": \"a region\"");
    }
    if (!a->caption) fprintf(f, ", \"rle\": {\"size\": [%d, %d], \"counts\": [%lld]}", h, w, (long long)h * w);
    fputs("}\n", f);
    if (fclose(f)) return ar_errorf("cannot write %s", jsonl);
    return 0;
}

static int save_outputs(const char *prefix, const char *image, const float *logits, int h, int w) {
    ar_image im = {0};
    if (image_load(&im, image, IMAGE_RGB)) return -1;
    if (im.h != h || im.w != w) { image_free(&im); return ar_errorf("%s: the mask is %dx%d, the image %dx%d", image, w, h, im.w, im.h); }
    uint8_t *m = malloc((size_t)h * w);
    if (!m) { image_free(&im); return ar_errorf("out of memory"); }
    size_t on = 0;
    for (size_t p = 0; p < (size_t)h * w; p++) {
        const int in = logits[p] > 0.0f;
        m[p] = in ? 255 : 0;
        on += in;
        if (in) {   /* 50% red over the object */
            im.px[3 * p] = (uint8_t)((im.px[3 * p] + 255) / 2);
            im.px[3 * p + 1] = (uint8_t)(im.px[3 * p + 1] / 2);
            im.px[3 * p + 2] = (uint8_t)(im.px[3 * p + 2] / 2);
        }
    }
    char mp[PATH_MAX + 32], op[PATH_MAX + 32];
    snprintf(mp, sizeof mp, "%s_mask.png", prefix);
    snprintf(op, sizeof op, "%s_overlay.png", prefix);
    int rc = image_write_png(mp, m, h, w, 1) || image_write_png(op, im.px, h, w, 3) ? -1 : 0;
    if (!rc) printf("mask: %s (%zu of %d x %d pixels, %.1f%%)\noverlay: %s\n", mp, on, w, h, 100.0 * on / ((double)h * w), op);
    free(m);
    image_free(&im);
    return rc;
}

static int run_infer(const infer_args *a) {
    char ck[PATH_MAX];
    snprintf(ck, sizeof ck, "%s", a->ckpt);
    size_t n = strlen(ck);
    if (n > 3 && strcmp(ck + n - 3, ".h5") != 0) {   /* a run directory: its newest checkpoint */
        int rc = ckpt_latest(a->ckpt, ck, sizeof ck);
        if (rc < 0) return -1;
        if (rc == 1) return ar_errorf("%s: no checkpoint in %s/checkpoints", a->ckpt, a->ckpt);
    }
    int64_t step = 0;
    char *text = ckpt_read_config(ck, &step);
    if (!text) return -1;
    char dir[] = "/tmp/anyref_infer_XXXXXX";
    if (!mkdtemp(dir)) { free(text); return ar_errorf("cannot create a temporary directory: %s", strerror(errno)); }
    char jsonl[PATH_MAX];
    int rc = -1;
    ar_config *cfg = cfg_new(train_schema, train_schema_len);
    run_t r;
    memset(&r, 0, sizeof r);
    float *host = NULL;
    if (!cfg || cfg_load_string(cfg, text, strlen(text), ck) || write_request(a, dir, jsonl, sizeof jsonl)) goto out;
    char fileov[PATH_MAX + 16], dirov[64];
    snprintf(fileov, sizeof fileov, "source.file=%s", jsonl);
    snprintf(dirov, sizeof dirov, "run.dir=%s", dir);
    const char *fixed[] = {"data.kind=sources", "source.kind=jsonl", fileov, "source.split=", "source.val_split=",
                           "source.weight=1", "source2.kind=", "source3.kind=", "source4.kind=", "data.workers=0",
                           "data.epoch_samples=0", "data.cache=", "train.batch_size=1", "train.grad_accum=1", dirov};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if (cfg_override(cfg, fixed[i])) goto out;
    for (int i = 0; i < a->n_over; i++)
        if (cfg_override(cfg, a->over[i])) { ar_error_prefix("%s: ", a->over[i]); goto out; }
    if (run_setup(&r, cfg)) goto out;
    ar_train_state st;
    memset(&st, 0, sizeof st);
    if (ckpt_load(ck, &r.ps, &st, 0)) { ckpt_state_free(&st); goto out; }
    ckpt_state_free(&st);
    anyref_refresh_prompt(r.ar);
    anyref_set_training(r.ar, 0);
    /* the one sample, spliced and uploaded as in training */
    gds_batch gb;
    anyref_batch in;
    tds_cursor cur = {0};
    if (gds_next_batch(r.data.gtrain, &cur, r.Tf, r.refs ? r.raw_tok : r.tok, r.refs ? r.raw_tgt : r.tgt, &gb) ||
        grounding_upload(&r, &gb, &in))
        goto out;
    const int T = r.T;
    int len = -1;
    for (int t = 0; t < T && len < 0; t++)
        if (r.tgt[t] != -100) len = t + 1;   /* the first answer token: the prompt ends before it */
    if (len < 0) { ar_errorf("the request's prompt does not fit train.seq_len = %d", T); goto out; }
    const ldr *ld = gds_loader(r.data.gtrain);
    tokenizer *tok = ldr_tokenizer(ld);
    ldr_markers mk;
    ldr_get_markers(ld, &mk);
    const int start = len;
    gen_cfg gc = a->gen;
    if (eval_resolve_stops(&gc, a->stop, tok)) goto out;
    if (anyref_generate_ex(r.ar, &gc, r.tok, &len, ldr_pad_id(ld), in.feat, in.n_feat)) goto out;
    /* the answer's text */
    int first_seg = -1, ne = 0;
    int *ans = malloc(sizeof(int) * (size_t)(len - start + 1));
    if (!ans) { ar_errorf("out of memory"); goto out; }
    for (int t = start; t < len; t++) {
        if (r.tok[t] == mk.seg && first_seg < 0) first_seg = t;
        if (r.tok[t] != tok_eos(tok)) ans[ne++] = r.tok[t];
    }
    char *answer = NULL;
    size_t alen = 0;
    int dec = tok_decode(tok, ans, ne, &answer, &alen);
    free(ans);
    if (dec) goto out;
    printf("checkpoint: %s (step %lld)\nanswer: %s\n", ck, (long long)step, answer);
    free(answer);
    if (first_seg < 0) {
        printf("no [SEG] in the answer: no mask\n");
        rc = 0;
        goto out;
    }
    /* the mask: the generated answer up to its first [SEG] as the labels */
    for (int t = 0; t < T; t++) {
        if (t > first_seg) r.tok[t] = ldr_pad_id(ld);
        r.tgt[t] = t >= start - 1 && t < first_seg ? r.tok[t + 1] : -100;
    }
    anyref_losses L;
    float l = anyref_forward(r.ar, &in, 0, &L);
    if (isnan(l) || L.n_seg < 1) { if (!isnan(l)) ar_errorf("no mask computed"); goto out; }
    int h, w;
    const float *x = anyref_mask_logits(r.ar, 0, &h, &w);
    if (!x || !(host = malloc((size_t)h * w * sizeof(float)))) { ar_errorf("no mask logits"); goto out; }
    k_download(host, x, (size_t)h * w * sizeof(float));
    char prefix[PATH_MAX];
    if (a->out) snprintf(prefix, sizeof prefix, "%s", a->out);
    else {
        const char *b = strrchr(a->image, '/');
        snprintf(prefix, sizeof prefix, "%s", b ? b + 1 : a->image);
        char *dot = strrchr(prefix, '.');
        if (dot && dot != prefix) *dot = 0;
    }
    rc = save_outputs(prefix, a->image, host, h, w);
out:
    free(host);
    run_teardown(&r);
    cfg_free(cfg);
    free(text);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) log_warn("could not remove %s", dir);
    return rc;
}

int infer_main(int argc, char **argv) {
    infer_args a;
    int p = parse(argc, argv, &a, stderr);
    if (p) return p == 1 ? 0 : p;
    if (run_infer(&a)) {
        fprintf(stderr, "anyref infer: %s\n", ar_error());
        return 1;
    }
    return 0;
}
