/* eval/evaluate.c — see evaluate.h. */
#include "eval/evaluate.h"
#include "train/train.h"
#include "eval/report.h"
#include "data/image.h"
#include "data/rle.h"
#include "core/json.h"

#include "checkpoints/checkpoint.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "data/samples.h"
#include "data/tokenizer.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ref_index(const ldr_item *it) {
    switch (it ? it->ref : SAMPLE_REF_TEXT) {
    case SAMPLE_REF_BOX: return EVAL_REF_BOX;
    case SAMPLE_REF_IMAGE: return EVAL_REF_IMAGE;
    case SAMPLE_REF_AUDIO: return EVAL_REF_AUDIO;
    default: return EVAL_REF_TEXT;
    }
}

static const char *const k_ref_names[EVAL_REFS] = {"text", "box", "image", "audio"};

/* Mask metrics of one prediction (logits > 0) against y (0/1 floats). */
static void score(eval_cell *c, const float *x, const float *y, size_t n, uint8_t *pred, uint8_t *gt, double *iou) {
    double in = 0, un = 0, g = 0;
    for (size_t p = 0; p < n; p++) {
        const int pr = x[p] > 0.0f, t = y[p] > 0.5f;
        in += pr & t;
        un += pr | t;
        g += t;
        if (pred) pred[p] = (uint8_t)pr;
        if (gt) gt[p] = (uint8_t)t;
    }
    *iou = un > 0 ? in / un : 1.0;
    c->masks++;
    c->iou += *iou; c->inter += in; c->uni += un;
    c->e_iou += g > 0 ? 0.0 : 1.0; c->e_uni += g;                   /* empty: I = 0, U = |y| */
    c->w_iou += g / (double)n; c->w_inter += g; c->w_uni += (double)n;   /* whole image: I = |y|, U = n */
}

int eval_set(run_t *r, grounding_dataset *g, long max_samples, int max_new, eval_result *out, eval_example_fn cb,
             void *ctx) {
    memset(out, 0, sizeof *out);
    const ldr *ld = gds_loader(g);
    if (!ld) return ar_errorf("eval: only data.kind = sources sets are evaluated here");
    tokenizer *tok = ldr_tokenizer(ld);
    const int eos = tok_eos(tok), pad = ldr_pad_id(ld), B = r->B, T = r->T, Tf = r->Tf;
    int64_t rows = gds_rows(g), next = 0;
    if (max_samples > 0 && max_samples < rows) rows = max_samples;
    int *len = malloc(sizeof(int) * (size_t)B), *ans = malloc(sizeof(int) * (size_t)T), *alen = malloc(sizeof(int) * (size_t)B);
    int *tgt_ids = malloc(sizeof(int) * (size_t)B * T);
    float *host = malloc(sizeof(float) * r->mask_cap);
    uint8_t *pred = malloc((size_t)B * r->mask_cap), *gt = malloc((size_t)B * r->mask_cap);
    double *iou = malloc(sizeof(double) * (size_t)B);
    int *mh = malloc(sizeof(int) * (size_t)B), *mw = malloc(sizeof(int) * (size_t)B), *has = malloc(sizeof(int) * (size_t)B);
    int rc = -1;
    if (!len || !ans || !alen || !tgt_ids || !host || !pred || !gt || !iou || !mh || !mw || !has) {
        ar_errorf("out of memory");
        goto done;
    }
    anyref_set_training(r->ar, 0);
    while (next < rows) {
        int filled = 0;
        int *rt = r->refs ? r->raw_tok : r->tok, *rg = r->refs ? r->raw_tgt : r->tgt;
        while (filled < B && next < rows) {
            int k = gds_read_row(g, next++, Tf, filled, rt + (size_t)filled * Tf, rg + (size_t)filled * Tf);
            if (k < 0) goto done;
            if (k == 0) filled++;
            else { out->broken++; log_warn("eval: %s", ar_error()); }
        }
        if (!filled) break;
        for (int b = filled; b < B; b++)
            for (int t = 0; t < Tf; t++) { rt[(size_t)b * Tf + t] = pad; rg[(size_t)b * Tf + t] = -100; }
        gds_batch gb;
        gds_finish_batch(g, filled, &gb);
        anyref_batch in;
        if (grounding_upload(r, &gb, &in)) goto done;
        anyref_losses L;
        float l = anyref_forward(r->ar, &in, 0, &L);
        if (isnan(l) && ar_error()[0]) goto done;
        for (int b = 0; b < B; b++) { has[b] = 0; iou[b] = NAN; }
        for (int k = 0; k < L.n_seg; k++) {
            int h, w;
            const float *x = anyref_mask_logits(r->ar, k, &h, &w);
            const int b = gb.mask_sample[k];
            k_download(host, x, (size_t)h * w * sizeof(float));
            const ldr_item *it = gds_live_item(g, b);
            double v;
            const int first = !has[b];   /* reports keep each sample's first mask */
            score(&out->ref[ref_index(it)], host, gb.masks[k], (size_t)h * w, first ? pred + (size_t)b * r->mask_cap : NULL,
                  first ? gt + (size_t)b * r->mask_cap : NULL, &v);
            if (first) { has[b] = 1; iou[b] = v; mh[b] = h; mw[b] = w; }
        }
        /* generation from each prompt; the ground-truth answer's ids first */
        for (int b = 0; b < B; b++) {
            len[b] = 0;
            alen[b] = 0;
            if (b >= filled) continue;
            const int *tk = r->tok + (size_t)b * T, *tg = r->tgt + (size_t)b * T;
            for (int t = 0; t < T && !len[b]; t++)
                if (tg[t] != -100) len[b] = t + 1;
            for (int t = len[b]; len[b] && t < T && tg[t - 1] != -100; t++) tgt_ids[(size_t)b * T + alen[b]++] = tk[t];
        }
        int start[B > 0 ? B : 1];
        memcpy(start, len, sizeof(int) * (size_t)B);
        if (max_new > 0 && anyref_generate(r->ar, r->tok, len, max_new, eos, pad, in.feat, in.n_feat)) goto done;
        for (int b = 0; b < filled; b++) {
            const ldr_item *it = gds_live_item(g, b);
            const int *gen = r->tok + (size_t)b * T + start[b];
            const int n = len[b] - start[b];
            int exact = -1;
            if (it && it->n_masks == 0) {   /* region captioning */
                exact = n == alen[b] && !memcmp(gen, tgt_ids + (size_t)b * T, sizeof(int) * (size_t)n);
                out->captions++;
                out->caption_exact += exact;
            }
            out->samples++;
            if (!cb) continue;
            int ne = 0;
            for (int t = 0; t < n; t++) if (gen[t] != eos) ans[ne++] = gen[t];
            char *text = NULL;
            size_t tl = 0;
            if (tok_decode(tok, ans, ne, &text, &tl)) goto done;
            eval_example ex = {.item = it, .pred = has[b] ? pred + (size_t)b * r->mask_cap : NULL,
                               .gt = has[b] ? gt + (size_t)b * r->mask_cap : NULL, .h = has[b] ? mh[b] : 0,
                               .w = has[b] ? mw[b] : 0, .iou = iou[b], .generated = text, .exact = exact};
            int cr = cb(ctx, &ex);
            free(text);
            if (cr) goto done;
        }
    }
    rc = 0;
done:
    anyref_set_training(r->ar, 1);
    free(len); free(ans); free(alen); free(tgt_ids); free(host); free(pred); free(gt); free(iou);
    free(mh); free(mw); free(has);
    return rc;
}

/* ------------------------------------------------------------------ examples */

typedef struct {
    report_grid *grid;
    int per_set, taken;
    FILE *results;              /* results.jsonl, or NULL */
    const char *set, *split;
} examples;

/* One JSON line per evaluated sample: where it came from, the reference, the
 * generated answer, the IoU and the predicted mask as a COCO compressed RLE
 * ({"size": [h, w], "counts": ...}: what pycocotools' mask.encode gives for
 * the h x w mask), so other tools can re-score it. */
static int write_result(examples *e, const eval_example *ex) {
    const ldr_item *it = ex->item;
    FILE *f = e->results;
    fprintf(f, "{\"set\":");
    json_write_string(f, e->set, strlen(e->set));
    fprintf(f, ",\"split\":");
    json_write_string(f, e->split, strlen(e->split));
    fprintf(f, ",\"record\":%zu,\"image\":", it ? it->record : (size_t)0);
    const char *img = it ? it->image : "";
    json_write_string(f, img, strlen(img));
    fprintf(f, ",\"reference\":\"%s\",\"question\":", k_ref_names[ref_index(it)]);
    const char *q = it ? it->question : "";
    json_write_string(f, q, strlen(q));
    fprintf(f, ",\"answer\":");
    const char *a = it ? it->answer : "";
    json_write_string(f, a, strlen(a));
    fprintf(f, ",\"generated\":");
    json_write_string(f, ex->generated, strlen(ex->generated));
    if (ex->exact >= 0) fprintf(f, ",\"exact\":%s", ex->exact ? "true" : "false");
    if (ex->pred) {
        rle_mask r = {0};
        if (rle_encode_hw(&r, ex->pred, (uint32_t)ex->h, (uint32_t)ex->w)) return -1;
        size_t n = 0;
        char *str = rle_to_string(&r, &n);
        rle_free(&r);
        if (!str) return -1;
        fprintf(f, ",\"iou\":%.6f,\"mask\":{\"size\":[%d,%d],\"counts\":", ex->iou, ex->h, ex->w);
        json_write_string(f, str, n);
        fputc('}', f);
        free(str);
    }
    fputs("}\n", f);
    return ferror(f) ? ar_errorf("write error in the results file") : 0;
}

/* One evaluated sample into the grid: the image with its reference (box
 * outline, crop thumbnail, the question's text), the predicted and the
 * ground-truth mask, the generated answer. */
static int add_example(void *ctx, const eval_example *ex) {
    examples *e = ctx;
    if (e->results && write_result(e, ex)) return -1;
    if (!e->grid || e->taken >= e->per_set || !ex->item) return 0;
    const ldr_item *it = ex->item;
    ar_image im = {0}, crop = {0};
    if (image_load(&im, it->image, IMAGE_RGB)) return 0;   /* decoded once already: should not fail */
    if (it->ref == SAMPLE_REF_IMAGE && it->ref_path[0] && image_load(&crop, it->ref_path, IMAGE_RGB)) memset(&crop, 0, sizeof crop);
    const int masks = ex->pred && ex->h == im.h && ex->w == im.w;
    float box[4];
    for (int i = 0; i < 4; i++) box[i] = (float)it->box[i];
    const char *q = strchr(it->question, '\n');
    char ref[600];
    snprintf(ref, sizeof ref, "%s", q ? q + 1 : it->question);
    int rc = report_grid_add(e->grid, im.px, im.h, im.w, ref, it->ref == SAMPLE_REF_BOX ? box : NULL,
                             crop.px, crop.h, crop.w, masks ? ex->pred : NULL, masks ? ex->gt : NULL, ex->generated,
                             masks ? ex->iou : NAN);
    image_free(&im);
    image_free(&crop);
    e->taken++;
    return rc;
}

/* ------------------------------------------------------------------ command */

static void usage(FILE *f) {
    fprintf(f, "usage: anyref eval CONFIG [section.key=value ...] [--checkpoint CKPT] [--splits a,b,...]\n"
               "                  [--samples N] [--max-new N] [--json FILE] [--examples N] [--grid FILE] [--results FILE]\n"
               "  evaluates the run's newest checkpoint (or CKPT) on every configured set (source.* ... source4.*)\n"
               "  at each split of --splits (default: each set's source.eval_splits, else its val_split):\n"
               "  gIoU / cIoU per reference type beside the empty-mask and whole-image baselines, and the exact\n"
               "  match of generated region captions; a Markdown table on stdout, JSON in FILE\n"
               "  (default run.dir/eval.json). --examples N: the first N samples of each set and split drawn into\n"
               "  a PNG grid (default run.dir/examples.png): image and reference, prediction, ground truth, answer.\n"
               "  Every sample also goes to --results FILE (default run.dir/results.jsonl): set, split, record,\n"
               "  image, reference, question, answer, generated text, IoU, the mask as COCO compressed RLE.\n");
}

static double ratio(double a, double b) { return b > 0 ? a / b : NAN; }

static void fmt(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "—");
    else snprintf(buf, n, "%.3f", v);
}

static void print_rows(FILE *f, const char *set, const char *split, const eval_result *e) {
    for (int k = 0; k < EVAL_REFS; k++) {
        const eval_cell *c = &e->ref[k];
        if (!c->masks) continue;
        char a[6][16];
        fmt(a[0], 16, c->iou / c->masks); fmt(a[1], 16, ratio(c->inter, c->uni));
        fmt(a[2], 16, c->e_iou / c->masks); fmt(a[3], 16, ratio(c->e_inter, c->e_uni));
        fmt(a[4], 16, c->w_iou / c->masks); fmt(a[5], 16, ratio(c->w_inter, c->w_uni));
        fprintf(f, "| %s | %s | %s | %ld | **%s** | **%s** | %s | %s | %s | %s | |\n", set, split, k_ref_names[k], c->masks,
                a[0], a[1], a[2], a[3], a[4], a[5]);
    }
    if (e->captions)
        fprintf(f, "| %s | %s | caption | %ld | | | | | | | **%.3f** |\n", set, split, e->captions,
                (double)e->caption_exact / e->captions);
}

static void json_cell(FILE *f, const eval_cell *c) {
    fprintf(f, "{\"masks\":%ld,\"giou\":%.6f,\"ciou\":%.6f,\"empty_giou\":%.6f,\"empty_ciou\":%.6f,"
               "\"whole_giou\":%.6f,\"whole_ciou\":%.6f}",
            c->masks, c->iou / c->masks, c->uni > 0 ? c->inter / c->uni : 1.0, c->e_iou / c->masks,
            c->e_uni > 0 ? c->e_inter / c->e_uni : 1.0, c->w_iou / c->masks, c->w_uni > 0 ? c->w_inter / c->w_uni : 1.0);
}

int eval_main(int argc, char **argv) {
    const char *config = NULL, *ckopt = NULL, *splits = NULL, *json = NULL, *gridpath = NULL, *respath = NULL;
    int n_examples = 0;
    long samples = 0;
    int max_new = 32, n_over = 0;
    const char **over = calloc((size_t)argc + 8, sizeof *over);
    if (!over) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "--checkpoint") || !strcmp(a, "--splits") || !strcmp(a, "--samples") || !strcmp(a, "--max-new") ||
             !strcmp(a, "--json") || !strcmp(a, "--examples") || !strcmp(a, "--grid") || !strcmp(a, "--results")) &&
            i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(a, "--checkpoint")) ckopt = v;
            else if (!strcmp(a, "--splits")) splits = v;
            else if (!strcmp(a, "--json")) json = v;
            else if (!strcmp(a, "--grid")) gridpath = v;
            else if (!strcmp(a, "--results")) respath = v;
            else {
                char *end;
                long n = strtol(v, &end, 10);
                if (*end || n < 0) { fprintf(stderr, "anyref eval: %s expects a count >= 0\n", a); free(over); return 2; }
                if (!strcmp(a, "--samples")) samples = n;
                else if (!strcmp(a, "--examples")) n_examples = (int)n;
                else max_new = (int)n;
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(over);
            return 0;
        } else if (a[0] == '-') {
            fprintf(stderr, "anyref eval: unknown option %s\n", a);
            usage(stderr);
            free(over);
            return 2;
        } else if (!config) config = a;
        else over[n_over++] = a;
    }
    if (!config) { usage(stderr); free(over); return 2; }
    over[n_over++] = "data.workers=0";   /* the training stream is not read */
    int rc = 1;
    ar_config *cfg = cfg_new(train_schema, train_schema_len);
    run_t r;
    memset(&r, 0, sizeof r);
    FILE *jf = NULL;
    examples ex = {.grid = n_examples > 0 ? report_grid_new(4, 160) : NULL, .per_set = n_examples};
    if (n_examples > 0 && !ex.grid) goto out;
    if (!cfg || cfg_load_file(cfg, config)) goto out;
    for (int i = 0; i < n_over; i++)
        if (cfg_override(cfg, over[i])) { ar_error_prefix("%s: ", over[i]); goto out; }
    if (strcmp(cfg_str(cfg, "data.kind"), "sources")) { ar_errorf("anyref eval: data.kind must be sources"); goto out; }
    if (run_setup(&r, cfg)) goto out;
    char ck[PATH_MAX];
    if (ckopt) snprintf(ck, sizeof ck, "%s", ckopt);
    else {
        int k = ckpt_latest(r.run_dir, ck, sizeof ck);
        if (k < 0) goto out;
        if (k == 1) { ar_errorf("no checkpoint in %s/checkpoints (train first, or give --checkpoint)", r.run_dir); goto out; }
    }
    ar_train_state st;
    memset(&st, 0, sizeof st);
    if (ckpt_load(ck, &r.ps, &st, 0)) { ckpt_state_free(&st); goto out; }
    const long step = (long)st.step;
    ckpt_state_free(&st);
    anyref_refresh_prompt(r.ar);
    char jpath[PATH_MAX];
    if (json) snprintf(jpath, sizeof jpath, "%s", json);
    else snprintf(jpath, sizeof jpath, "%s/eval.json", r.run_dir);
    if (!(jf = fopen(jpath, "w"))) { ar_errorf("cannot write %s: %s", jpath, strerror(errno)); goto out; }
    char rpath[PATH_MAX];
    if (respath) snprintf(rpath, sizeof rpath, "%s", respath);
    else snprintf(rpath, sizeof rpath, "%s/results.jsonl", r.run_dir);
    if (!(ex.results = fopen(rpath, "w"))) { ar_errorf("cannot write %s: %s", rpath, strerror(errno)); goto out; }
    fprintf(jf, "{\"checkpoint\":\"%s\",\"step\":%ld,\"sets\":[", ck, step);
    printf("anyref eval: %s (step %ld)\n\n", ck, step);
    printf("| set | split | reference | masks / samples | gIoU | cIoU | empty gIoU | empty cIoU | whole gIoU | whole cIoU | caption exact |\n");
    printf("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    static const char *const pre[] = {"source", "source2", "source3", "source4"};
    int n_sets = 0;
    for (int k = 0; k < LDR_MAX_SOURCES; k++) {
        char key[64], list[512];
        snprintf(key, sizeof key, "%s.kind", pre[k]);
        if (!cfg_str(cfg, key)[0]) continue;
        snprintf(key, sizeof key, "%s.eval_splits", pre[k]);
        snprintf(list, sizeof list, "%s", splits ? splits : cfg_str(cfg, key));
        if (!list[0]) { snprintf(key, sizeof key, "%s.val_split", pre[k]); snprintf(list, sizeof list, "%s", cfg_str(cfg, key)); }
        for (char *sv = NULL, *sp = strtok_r(list, ", ", &sv); sp; sp = strtok_r(NULL, ", ", &sv)) {
            int present;
            grounding_dataset *g = run_open_eval_set(&r, k, sp, &present);
            if (!g) { if (present) goto out; continue; }
            eval_result e;
            const char *name = ldr_source_name(gds_loader(g), 0);
            char set[96];
            snprintf(set, sizeof set, "%s", name);
            char *slash = strchr(set, '/');
            if (slash) *slash = 0;
            ex.taken = 0;
            ex.set = set;
            ex.split = sp;
            int er = eval_set(&r, g, samples, max_new, &e, add_example, &ex);
            gds_close(g);
            if (er) goto out;
            print_rows(stdout, set, sp, &e);
            fprintf(jf, "%s{\"set\":\"%s\",\"split\":\"%s\",\"samples\":%ld,\"broken\":%ld", n_sets++ ? "," : "", set, sp,
                    e.samples, e.broken);
            for (int t = 0; t < EVAL_REFS; t++)
                if (e.ref[t].masks) { fprintf(jf, ",\"%s\":", k_ref_names[t]); json_cell(jf, &e.ref[t]); }
            if (e.captions)
                fprintf(jf, ",\"caption\":{\"samples\":%ld,\"exact\":%.6f}", e.captions, (double)e.caption_exact / e.captions);
            fputc('}', jf);
        }
    }
    fprintf(jf, "]}\n");
    if (fclose(jf)) { jf = NULL; ar_errorf("cannot write %s", jpath); goto out; }
    jf = NULL;
    if (!n_sets) { ar_errorf("no set to evaluate: give --splits or set source.eval_splits / source.val_split"); goto out; }
    if (fclose(ex.results)) { ex.results = NULL; ar_errorf("cannot write %s", rpath); goto out; }
    ex.results = NULL;
    printf("\n(gIoU: mean IoU per mask; cIoU: total intersection / total union; baselines: the empty mask and the whole image)\n%s\n%s (one line per sample: generated answer, IoU, mask as COCO RLE)\n", jpath, rpath);
    if (ex.grid) {
        char gp[PATH_MAX];
        if (gridpath) snprintf(gp, sizeof gp, "%s", gridpath);
        else snprintf(gp, sizeof gp, "%s/examples.png", r.run_dir);
        if (report_grid_save(ex.grid, gp)) goto out;
        printf("%s (%d examples)\n", gp, report_grid_count(ex.grid));
    }
    rc = 0;
out:
    if (jf) fclose(jf);
    if (ex.results) fclose(ex.results);
    if (rc) fprintf(stderr, "anyref eval: %s\n", ar_error());
    run_teardown(&r);
    cfg_free(cfg);
    report_grid_free(ex.grid);
    free(over);
    return rc;
}
