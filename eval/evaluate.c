/* eval/evaluate.c — see evaluate.h. */
#include "eval/evaluate.h"
#include "train/train.h"
#include "eval/meteor.h"
#include "eval/report.h"
#include "data/draw.h"
#include "data/image.h"
#include "data/rle.h"
#include "core/json.h"

#include "checkpoints/checkpoint.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/samples.h"
#include "data/tokenizer.h"
#include "kernels/kernels.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int ref_index(const ldr_item *it) {
    switch (it ? it->ref : SAMPLE_REF_TEXT) {
    case SAMPLE_REF_BOX: return EVAL_REF_BOX;
    case SAMPLE_REF_IMAGE: return EVAL_REF_IMAGE;
    case SAMPLE_REF_AUDIO: return EVAL_REF_AUDIO;
    default: return EVAL_REF_TEXT;
    }
}

static const char *const k_ref_names[EVAL_REFS] = {"text", "box", "image", "audio"};

static double cell_accum(eval_cell *c, double in, double un, double g, size_t n) {
    const double iou = un > 0 ? in / un : 1.0;
    c->masks++;
    c->iou += iou; c->inter += in; c->uni += un;
    c->e_iou += g > 0 ? 0.0 : 1.0; c->e_uni += g;                   /* empty: I = 0, U = |y| */
    c->w_iou += g / (double)n; c->w_inter += g; c->w_uni += (double)n;   /* whole image: I = |y|, U = n */
    return iou;
}

/* eval_cell_add from the 0/1 bytes it writes (the same sums, the same order). */
static double cell_add_bytes(eval_cell *c, const uint8_t *pred, const uint8_t *gt, size_t n) {
    double in = 0, un = 0, g = 0;
    for (size_t p = 0; p < n; p++) {
        const int pr = pred[p], t = gt[p];
        in += pr & t;
        un += pr | t;
        g += t;
    }
    return cell_accum(c, in, un, g, n);
}

double eval_cell_add(eval_cell *c, const float *x, const float *y, size_t n, uint8_t *pred, uint8_t *gt) {
    double in = 0, un = 0, g = 0;
    for (size_t p = 0; p < n; p++) {
        const int pr = x ? x[p] > 0.0f : 0, t = y[p] > 0.5f;
        in += pr & t;
        un += pr | t;
        g += t;
        if (pred) pred[p] = (uint8_t)pr;
        if (gt) gt[p] = (uint8_t)t;
    }
    return cell_accum(c, in, un, g, n);
}

void eval_cell_means(const eval_cell *c, double out[6]) {
    const double n = c->masks > 0 ? (double)c->masks : NAN;
    out[0] = c->iou / n;
    out[1] = c->uni > 0 ? c->inter / c->uni : 1.0;
    out[2] = c->e_iou / n;
    out[3] = c->e_uni > 0 ? c->e_inter / c->e_uni : 1.0;
    out[4] = c->w_iou / n;
    out[5] = c->w_uni > 0 ? c->w_inter / c->w_uni : 1.0;
}

/* ------------------------------------------------------------------ AVSBench videos */

#define EVAL_AVS_MAX_FRAMES 16

typedef struct {
    int source;
    int64_t group;
    int n, h, w;
    float *x, *y;              /* [EVAL_AVS_MAX_FRAMES * cap] logits, ground truths */
    size_t cap;
} avs_video;

static int avs_flush(avs_video *v, eval_result *out) {
    if (!v->n) return 0;
    if (avs_meter_add(&out->avs, v->x, v->y, v->n, v->h, v->w, NULL, NULL)) return -1;
    out->avs_frames += v->n;
    v->n = 0;
    return 0;
}

/* Frame logits x (NULL: no [SEG], probability 0) and ground truth y of
 * sample it into the video buffer; a new video flushes the previous one. */
static int avs_push(avs_video *v, eval_result *out, const ldr_item *it, const float *x, const float *y, int h, int w) {
    if (v->n && (v->source != it->source || v->group != it->group || v->n == EVAL_AVS_MAX_FRAMES)) {
        if (avs_flush(v, out)) return -1;
    }
    if (v->n && (h != v->h || w != v->w))
        return ar_errorf("%s: frame %d's mask is %dx%d, the video's first %dx%d (AVSBench scores a video's frames together)",
                         it->image, it->part, w, h, v->w, v->h);
    if ((size_t)h * w > v->cap) return ar_errorf("%s: mask larger than the evaluation buffers", it->image);
    v->source = it->source;
    v->group = it->group;
    v->h = h;
    v->w = w;
    /* the frames back to back, [n][h][w], as avs_metrics reads them */
    float *dx = v->x + (size_t)v->n * h * w, *dy = v->y + (size_t)v->n * h * w;
    for (size_t p = 0; p < (size_t)h * w; p++) dx[p] = x ? x[p] : -1e4f;
    memcpy(dy, y, (size_t)h * w * sizeof(float));
    v->n++;
    return 0;
}

/* ------------------------------------------------------------------ captions */

typedef struct {
    char **cand;
    int *source;
    int64_t *group;
    long n, cap;
} caption_list;

static int caption_add(caption_list *c, const char *text, int source, int64_t group) {
    if (c->n == c->cap) {
        long nc = c->cap ? 2 * c->cap : 256;
        char **a = realloc(c->cand, sizeof *a * (size_t)nc);
        if (a) c->cand = a;
        int *s = realloc(c->source, sizeof *s * (size_t)nc);
        if (s) c->source = s;
        int64_t *g = realloc(c->group, sizeof *g * (size_t)nc);
        if (g) c->group = g;
        if (!a || !s || !g) return ar_errorf("out of memory");
        c->cap = nc;
    }
    if (!(c->cand[c->n] = strdup(text))) return ar_errorf("out of memory");
    c->source[c->n] = source;
    c->group[c->n] = group;
    c->n++;
    return 0;
}

static void caption_free(caption_list *c) {
    for (long i = 0; i < c->n; i++) free(c->cand[i]);
    free(c->cand); free(c->source); free(c->group);
}

#define EVAL_MAX_REFS 64

/* BLEU / CIDEr-D / METEOR of the collected captions against their groups'
 * reference texts. */
static int caption_score(const ldr *ld, caption_list *c, const eval_opts *o, eval_result *out) {
    if (!c->n) return 0;
    const char ***refs = calloc((size_t)c->n, sizeof *refs);
    int *nr = calloc((size_t)c->n, sizeof *nr);
    int rc = -1;
    if (!refs || !nr) { ar_errorf("out of memory"); goto done; }
    for (long i = 0; i < c->n; i++) {
        if (!(refs[i] = calloc(EVAL_MAX_REFS, sizeof **refs))) { ar_errorf("out of memory"); goto done; }
        nr[i] = ldr_group_texts(ld, c->source[i], c->group[i], refs[i], EVAL_MAX_REFS);
        if (nr[i] == 0) { refs[i][0] = ""; nr[i] = 1; }   /* no reference text: scores 0 */
    }
    if (capm_score((int)c->n, (const char *const *)c->cand, (const char *const *const *)refs, nr, 1, &out->cap, NULL))
        goto done;
    if (o->meteor) {
        /* METEOR reads coco-caption's tokenised strings */
        char **tc = calloc((size_t)c->n, sizeof *tc), ***tr = calloc((size_t)c->n, sizeof *tr);
        int ok = tc && tr;
        for (long i = 0; ok && i < c->n; i++) {
            ok = (tc[i] = capm_tokenize(c->cand[i])) && (tr[i] = calloc((size_t)nr[i], sizeof **tr));
            for (int k = 0; ok && k < nr[i]; k++) ok = (tr[i][k] = capm_tokenize(refs[i][k])) != NULL;
        }
        double m = NAN;
        if (ok && !meteor_score(o->meteor, (int)c->n, (const char *const *)tc, (const char *const *const *)tr, nr, &m, NULL)) {
            out->meteor = m;
            out->meteor_wordnet = meteor_has_wordnet(o->meteor);
        } else if (!ok) ar_errorf("out of memory");
        for (long i = 0; tc && tr && i < c->n; i++) {
            free(tc[i]);
            for (int k = 0; tr[i] && k < nr[i]; k++) free(tr[i][k]);
            free(tr[i]);
        }
        free(tc);
        free(tr);
        if (isnan(out->meteor)) goto done;
    }
    rc = 0;
done:
    for (long i = 0; refs && i < c->n; i++) free(refs[i]);
    free(refs);
    free(nr);
    return rc;
}

/* ------------------------------------------------------------------ sharded evaluation */

/* Several ranks (core/dist.h, `make MPI=1` under mpirun): a set's rows are
 * cut into batches of B consecutive rows (the last one shorter; broken rows
 * leave a batch short), and rank k of n evaluates batches k, k + n, k + 2n,
 * ...: every sample is evaluated once, in the same batch (the same slot, so
 * the same sampling seed) as by one process. After each round of n batches
 * the ranks' per-sample records are gathered to rank 0, which scores them in
 * batch order: the sums behind gIoU / cIoU, the AVSBench videos, the caption
 * list, the counters and the per-sample outputs (results.jsonl, overlays,
 * grid) come out exactly as one process makes them. One process takes the
 * same path (its own record, copied).
 *
 * A round's record, host byte order (every rank runs the same binary):
 *   header: i64 samples, broken, generated tokens, [SEG]s in captions, extra
 *           [SEG]s, missing [SEG]s; f64 seconds in generation;
 *   per sample: i64 has_item, [ldr_item, its pointers meaningless], i64
 *           masks, h, w, [SEG]s generated, exact (-1, 0, 1), text bytes (with
 *           its NUL), the text; per mask: h*w prediction bytes, h*w ground
 *           truth bytes, and for AVSBench sets i64 has_logits, [h*w float
 *           logits], h*w float ground truth. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} rec_buf;

static void rb_put(rec_buf *b, const void *x, size_t n) {
    if (b->oom || !n) return;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 65536;
        while (nc < b->n + n) nc *= 2;
        char *q = realloc(b->p, nc);
        if (!q) { b->oom = 1; return; }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, x, n);
    b->n += n;
}

static void rb_i64(rec_buf *b, int64_t v) { rb_put(b, &v, sizeof v); }

typedef struct {
    const char *p, *end;
} rec_rd;

static const void *rd_take(rec_rd *r, size_t n) {   /* NULL past the end */
    if ((size_t)(r->end - r->p) < n) return NULL;
    const void *q = r->p;
    r->p += n;
    return q;
}

static int rd_i64(rec_rd *r, int64_t *v) {
    const void *q = rd_take(r, sizeof *v);
    if (!q) return -1;
    memcpy(v, q, sizeof *v);
    return 0;
}

enum { REC_SAMPLES, REC_BROKEN, REC_GEN_TOKENS, REC_SEG_UNASKED, REC_SEG_EXTRA, REC_SEG_MISSING, REC_COUNTS };

/* Rank 0: one round's record of one rank scored into out (see above). */
typedef struct {
    const eval_opts *o;
    avs_video *vid;
    caption_list *caps;
    eval_result *out;
    eval_example_fn cb;
    void *ctx;
    int S;
    size_t cap;
    const uint8_t **pp, **gp;   /* [S] */
    double *iou;                /* [S] */
    float *hx, *hy;             /* [cap]: AVSBench frames, aligned */
    double gen_seconds;         /* summed over the ranks */
} replay_ctx;

static int replay(replay_ctx *c, const char *buf, size_t n) {
    if (!n) return 0;   /* a rank without a batch this round */
    rec_rd rd = {buf, buf + n};
    eval_result *out = c->out;
    int64_t h[REC_COUNTS];
    double gs;
    for (int i = 0; i < REC_COUNTS; i++)
        if (rd_i64(&rd, &h[i])) goto bad;
    const void *q = rd_take(&rd, sizeof gs);
    if (!q) goto bad;
    memcpy(&gs, q, sizeof gs);
    out->broken += h[REC_BROKEN];
    out->gen_tokens += h[REC_GEN_TOKENS];
    out->seg_unasked += h[REC_SEG_UNASKED];
    out->seg_extra += h[REC_SEG_EXTRA];
    out->seg_missing += h[REC_SEG_MISSING];
    c->gen_seconds += gs;
    for (int64_t s = 0; s < h[REC_SAMPLES]; s++) {
        int64_t has_item, nm, mh, mw, nseg, exact, tl;
        ldr_item item;
        const ldr_item *it = NULL;
        if (rd_i64(&rd, &has_item)) goto bad;
        if (has_item) {
            if (!(q = rd_take(&rd, sizeof item))) goto bad;
            memcpy(&item, q, sizeof item);
            item.tokens = item.targets = NULL;
            item.clip = item.sam = item.masks = item.ref_data = NULL;
            item.image[sizeof item.image - 1] = item.ref_path[sizeof item.ref_path - 1] = 0;
            item.question[sizeof item.question - 1] = item.answer[sizeof item.answer - 1] = 0;
            it = &item;
        }
        if (rd_i64(&rd, &nm) || rd_i64(&rd, &mh) || rd_i64(&rd, &mw) || rd_i64(&rd, &nseg) || rd_i64(&rd, &exact) ||
            rd_i64(&rd, &tl))
            goto bad;
        if (nm < 0 || nm > c->S || mh < 0 || mw < 0 || (size_t)mh * (size_t)mw > c->cap || tl < 1) goto bad;
        const char *text = rd_take(&rd, (size_t)tl);
        if (!text || text[tl - 1]) goto bad;
        const size_t hw = (size_t)mh * mw;
        for (int j = 0; j < nm; j++) {
            if (!(c->pp[j] = rd_take(&rd, hw)) || !(c->gp[j] = rd_take(&rd, hw))) goto bad;
            c->iou[j] = cell_add_bytes(&out->ref[ref_index(it)], c->pp[j], c->gp[j], hw);
            if (c->o->avs) {
                int64_t hx;
                const void *x = NULL, *y;
                if (rd_i64(&rd, &hx) || (hx && !(x = rd_take(&rd, hw * sizeof(float)))) || !(y = rd_take(&rd, hw * sizeof(float))))
                    goto bad;
                if (x) memcpy(c->hx, x, hw * sizeof(float));
                memcpy(c->hy, y, hw * sizeof(float));
                if (it && avs_push(c->vid, out, it, x ? c->hx : NULL, c->hy, (int)mh, (int)mw)) return -1;
            }
        }
        if (it && nm == 0) {   /* region captioning */
            out->captions++;
            out->caption_exact += exact > 0;
            if (caption_add(c->caps, text, it->source, it->group)) return -1;
        }
        out->samples++;
        if (c->cb) {
            eval_example ex = {.item = it, .n_masks = (int)nm, .h = (int)mh, .w = (int)mw, .pred = c->pp, .gt = c->gp,
                               .iou = nm ? c->iou : NULL, .n_seg = (int)nseg, .generated = text, .exact = (int)exact};
            if (c->cb(c->ctx, &ex)) return -1;
        }
    }
    if (rd.p != rd.end) goto bad;
    return 0;
bad:
    return ar_errorf("eval: a rank's per-sample record is malformed (%zu bytes)", n);
}

/* ------------------------------------------------------------------ one set */

int eval_set(run_t *r, grounding_dataset *g, const eval_opts *o, const char *label, eval_result *out,
             eval_example_fn cb, void *ctx) {
    memset(out, 0, sizeof *out);
    avs_meter_init(&out->avs);
    out->meteor = NAN;
    const ldr *ld = gds_loader(g);
    if (!ld) return ar_errorf("eval: only data.kind = sources sets are evaluated here");
    tokenizer *tok = ldr_tokenizer(ld);
    ldr_markers mk;
    ldr_get_markers(ld, &mk);
    const int eos = tok_eos(tok), pad = ldr_pad_id(ld), B = r->B, T = r->T, Tf = r->Tf, S = r->max_seg;
    const int rank = dist_rank(), R = dist_size();
    const size_t cap = r->mask_cap;
    gen_cfg gc = o->gen;
    if (eval_resolve_stops(&gc, o->stop, tok)) return -1;
    int64_t rows = gds_rows(g);
    if (o->max_samples > 0 && o->max_samples < rows) rows = o->max_samples;
    const int64_t n_batches = (rows + B - 1) / B, rounds = (n_batches + R - 1) / R;
    const double t0 = ar_now();
    int *len = malloc(sizeof(int) * (size_t)B), *start = malloc(sizeof(int) * (size_t)B);
    int *ans = malloc(sizeof(int) * (size_t)T), *alen = malloc(sizeof(int) * (size_t)B);
    int *tgt_ids = malloc(sizeof(int) * (size_t)B * T), *gtgt = malloc(sizeof(int) * (size_t)B * T);
    int *gtok = malloc(sizeof(int) * (size_t)B * T);
    int *first_gt = malloc(sizeof(int) * (size_t)B), *n_gt = malloc(sizeof(int) * (size_t)B);
    int *n_seg = malloc(sizeof(int) * (size_t)B), *has = malloc(sizeof(int) * (size_t)S);
    float *hlog = malloc(sizeof(float) * cap * (size_t)S);
    uint8_t *predb = malloc(cap * (size_t)S), *gtb = malloc(cap * (size_t)S);
    double *iou = malloc(sizeof(double) * (size_t)S);
    const float **gtm = malloc(sizeof(float *) * (size_t)S);
    const uint8_t **pp = malloc(sizeof(uint8_t *) * (size_t)S), **gp = malloc(sizeof(uint8_t *) * (size_t)S);
    size_t *counts = malloc(sizeof(size_t) * (size_t)R);
    char *all = NULL;
    rec_buf rb = {0};
    avs_video vid = {.cap = cap};
    caption_list caps = {0};
    replay_ctx rp = {.o = o, .vid = &vid, .caps = &caps, .out = out, .cb = cb, .ctx = ctx, .S = S, .cap = cap,
                     .pp = pp, .gp = gp, .iou = iou};
    ar_progress pr;
    int rc = -1, progress = label && label[0] && rank == 0;
    if (o->avs) {
        vid.x = malloc(sizeof(float) * cap * EVAL_AVS_MAX_FRAMES);
        vid.y = malloc(sizeof(float) * cap * EVAL_AVS_MAX_FRAMES);
        rp.hx = malloc(sizeof(float) * cap);
        rp.hy = malloc(sizeof(float) * cap);
    }
    if (!len || !start || !ans || !alen || !tgt_ids || !gtgt || !gtok || !first_gt || !n_gt || !n_seg || !has || !hlog ||
        !predb || !gtb || !iou || !gtm || !pp || !gp || !counts ||
        (o->avs && (!vid.x || !vid.y || !rp.hx || !rp.hy))) {
        ar_errorf("out of memory");
        goto done;
    }
    if (progress) progress_start(&pr, (long)rows, label);
    anyref_set_training(r->ar, 0);
    for (int64_t round = 0; round < rounds; round++) {
        const int64_t bi = round * R + rank;   /* this rank's batch of the round (none past the end) */
        rb.n = 0;
        int64_t bc[REC_COUNTS] = {0};
        double bgen = 0;
        if (bi < n_batches) {
            rb_put(&rb, bc, sizeof bc);   /* the header, filled in below */
            rb_put(&rb, &bgen, sizeof bgen);
        }
        int64_t next = bi * B;
        const int64_t stop = next + B < rows ? next + B : rows;
        do {
            if (bi >= n_batches) break;
            int filled = 0;
            int *rt = r->refs ? r->raw_tok : r->tok, *rg = r->refs ? r->raw_tgt : r->tgt;
            while (next < stop) {
                int k = gds_read_row(g, next++, Tf, filled, rt + (size_t)filled * Tf, rg + (size_t)filled * Tf);
                if (k < 0) goto done;
                if (k == 0) filled++;
                else { bc[REC_BROKEN]++; log_warn("eval: %s", ar_error()); }
            }
            if (!filled) break;
            for (int b = filled; b < B; b++)
                for (int t = 0; t < Tf; t++) { rt[(size_t)b * Tf + t] = pad; rg[(size_t)b * Tf + t] = -100; }
            gds_batch gb;
            gds_finish_batch(g, filled, &gb);
            anyref_batch in;
            if (grounding_upload(r, &gb, &in)) goto done;
            for (int b = 0; b < B; b++) { n_gt[b] = 0; first_gt[b] = -1; n_seg[b] = 0; }
            for (int q = 0; q < gb.n_masks; q++) {
                const int b = gb.mask_sample[q];
                if (first_gt[b] < 0) first_gt[b] = q;
                n_gt[b]++;
            }
            for (int q = 0; q < S; q++) has[q] = 0;
            /* logits of [SEG] k (batch order) -> the host copy of ground-truth mask q */
#define FETCH(k, q)                                                                              \
    do {                                                                                         \
            int h_, w_;                                                                              \
            const float *x_ = anyref_mask_logits(r->ar, (k), &h_, &w_);                              \
            if (!x_) { ar_errorf("eval: no logits for [SEG] %d", (k)); goto done; }                  \
            k_download(hlog + (size_t)(q) * cap, x_, (size_t)h_ * w_ * sizeof(float));              \
            has[(q)] = 1;                                                                            \
    } while (0)
            if (o->teacher && gb.n_masks) {   /* the ground-truth answer's [SEG]s */
                anyref_losses L;
                float l = anyref_forward(r->ar, &in, 0, &L);
                if (isnan(l) && ar_error()[0]) goto done;
                for (int k = 0; k < L.n_seg && k < gb.n_masks; k++) FETCH(k, k);
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
            memcpy(start, len, sizeof(int) * (size_t)B);
            const double tg0 = ar_now();
            if (gc.max_new > 0 && anyref_generate_ex(r->ar, &gc, r->tok, len, pad, in.feat, in.n_feat)) goto done;
            bgen += ar_now() - tg0;
            memcpy(gtok, r->tok, sizeof(int) * (size_t)B * T);   /* the answers as generated */
            for (int b = 0; b < filled; b++) {
                bc[REC_GEN_TOKENS] += len[b] - start[b];
                for (int t = start[b]; t < len[b]; t++) n_seg[b] += r->tok[(size_t)b * T + t] == mk.seg;
                if (n_gt[b] == 0) bc[REC_SEG_UNASKED] += n_seg[b];
                else if (n_seg[b] > n_gt[b]) bc[REC_SEG_EXTRA] += n_seg[b] - n_gt[b];
            }
            if (!o->teacher && gb.n_masks) {
                /* the generated answers once more: the j-th [SEG] of sample b (j <
                 * its masks) predicts its j-th mask; later [SEG]s become padding
                 * (causal: the kept ones do not see them) */
                int kept = 0;
                for (int b = 0; b < B; b++) {
                    int *tk = r->tok + (size_t)b * T, *tg = gtgt + (size_t)b * T, j = 0;
                    for (int t = 0; t < T; t++) {
                        tg[t] = b < filled && start[b] > 0 && t >= start[b] - 1 && t + 1 < len[b] ? tk[t + 1] : -100;
                        if (b >= filled || t < start[b] || t >= len[b] || tk[t] != mk.seg) continue;
                        if (j < n_gt[b]) gtm[kept++] = in.gt_masks[first_gt[b] + j++];
                        else tk[t] = pad;
                    }
                    for (int t = 0; t + 1 < T; t++)   /* the target that predicted a padded [SEG] */
                        if (tg[t] != -100 && tk[t + 1] == pad) tg[t] = -100;
                }
                if (kept) {
                    anyref_batch in2 = in;
                    in2.targets = gtgt;
                    in2.gt_masks = gtm;
                    anyref_losses L;
                    float l = anyref_forward(r->ar, &in2, 0, &L);
                    if (isnan(l) && ar_error()[0]) goto done;
                    int k = 0;
                    for (int b = 0; b < B; b++) {
                        const int m = n_seg[b] < n_gt[b] ? n_seg[b] : n_gt[b];
                        for (int j = 0; j < m && k < L.n_seg; j++, k++) FETCH(k, first_gt[b] + j);
                    }
                }
                for (int b = 0; b < filled; b++)
                    if (n_seg[b] < n_gt[b]) bc[REC_SEG_MISSING] += n_gt[b] - n_seg[b];
            }
#undef FETCH
            /* this batch's per-sample records (scored by rank 0: replay) */
            for (int b = 0; b < filled; b++) {
                const ldr_item *it = gds_live_item(g, b);
                const int mh = gb.mask_hw[2 * b] > 0 ? gb.mask_hw[2 * b] : gb.orig_hw[2 * b];
                const int mw = gb.mask_hw[2 * b] > 0 ? gb.mask_hw[2 * b + 1] : gb.orig_hw[2 * b + 1];
                const size_t hw = (size_t)mh * mw;
                const int *gen = gtok + (size_t)b * T + start[b];
                const int n = len[b] - start[b];
                int exact = -1, ne = 0;
                for (int t = 0; t < n; t++)
                    if (gen[t] != eos && (n_gt[b] || gen[t] != mk.seg)) ans[ne++] = gen[t];
                char *text = NULL;
                size_t tl = 0;
                if (tok_decode(tok, ans, ne, &text, &tl)) goto done;
                if (it && n_gt[b] == 0)   /* region captioning */
                    exact = n == alen[b] && !memcmp(gen, tgt_ids + (size_t)b * T, sizeof(int) * (size_t)n);
                rb_i64(&rb, it != NULL);
                if (it) rb_put(&rb, it, sizeof *it);
                const size_t tn = strlen(text);
                const int64_t f[6] = {n_gt[b], mh, mw, n_seg[b], exact, (int64_t)tn + 1};
                rb_put(&rb, f, sizeof f);
                rb_put(&rb, text, tn + 1);
                free(text);
                for (int j = 0; j < n_gt[b]; j++) {
                    const int q = first_gt[b] + j;
                    const float *x = has[q] ? hlog + (size_t)q * cap : NULL;
                    eval_cell scratch = {0};
                    eval_cell_add(&scratch, x, gb.masks[q], hw, predb + (size_t)q * cap, gtb + (size_t)q * cap);
                    rb_put(&rb, predb + (size_t)q * cap, hw);
                    rb_put(&rb, gtb + (size_t)q * cap, hw);
                    if (o->avs) {
                        rb_i64(&rb, x != NULL);
                        if (x) rb_put(&rb, x, hw * sizeof(float));
                        rb_put(&rb, gb.masks[q], hw * sizeof(float));
                    }
                }
                bc[REC_SAMPLES]++;
            }
        } while (0);
        if (rb.oom) { ar_errorf("out of memory"); goto done; }
        if (bi < n_batches) {   /* the header */
            memcpy(rb.p, bc, sizeof bc);
            memcpy(rb.p + sizeof bc, &bgen, sizeof bgen);
        }
        /* every rank's round to rank 0, scored there in batch order */
        if (dist_gather_bytes(rb.p, rb.n, &all, counts)) { ar_error_prefix("eval: "); goto done; }
        if (rank == 0) {
            size_t off = 0;
            for (int k = 0; k < R; k++) {
                if (replay(&rp, all + off, counts[k])) goto done;
                off += counts[k];
            }
        }
        free(all);
        all = NULL;
        if (progress) {
            char extra[96];
            const int64_t seen = (round + 1) * R * B < rows ? (round + 1) * R * B : rows;
            snprintf(extra, sizeof extra, "%.1f tokens/s generated",
                     rp.gen_seconds > 0 ? out->gen_tokens * R / rp.gen_seconds : 0.0);
            progress_update(&pr, (long)seen, extra);
        }
    }
    /* generation time: the ranks' mean (tokens_per_s: all ranks together) */
    out->gen_seconds = rp.gen_seconds / R;
    if (rank == 0) {
        if (o->avs && avs_flush(&vid, out)) goto done;
        if (caption_score(ld, &caps, o, out)) goto done;
    }
    out->seconds = ar_now() - t0;
    rc = 0;
done:
    if (progress) progress_finish(&pr);
    anyref_set_training(r->ar, 1);
    free(len); free(start); free(ans); free(alen); free(tgt_ids); free(gtgt); free(gtok); free(first_gt); free(n_gt);
    free(n_seg); free(has); free(hlog); free(predb); free(gtb); free(iou); free(gtm); free(pp); free(gp);
    free(vid.x); free(vid.y); free(rp.hx); free(rp.hy);
    free(counts); free(all); free(rb.p);
    caption_free(&caps);
    return rc;
}

/* ------------------------------------------------------------------ decoding flags */

const char eval_gen_usage[] =
    "  decoding: --decode greedy|beam|sample (greedy), --beam W (beam width, 4 with --decode beam),\n"
    "            --length-penalty X (beam: score / length^X, 1), --temperature X (sample, 1), --top-p X\n"
    "            (sample: nucleus, 1), --seed N (sample), --max-new N (tokens, 32), --no-cache (recompute\n"
    "            the whole prefix for every token instead of the KV cache: slower, the reference path)\n";

int eval_parse_gen_flag(int argc, char **argv, int *i, gen_cfg *g, const char **stop) {
    const char *a = argv[*i];
    if (!strcmp(a, "--no-cache")) { g->no_cache = 1; return 1; }
    if (!strcmp(a, "--stop")) {
        if (*i + 1 >= argc) return ar_errorf("--stop needs a value");
        *stop = argv[++*i];
        return 1;
    }
    static const char *const with_value[] = {"--decode", "--beam", "--length-penalty", "--temperature", "--top-p",
                                             "--seed", "--max-new"};
    int which = -1;
    for (int k = 0; k < (int)(sizeof with_value / sizeof *with_value); k++)
        if (!strcmp(a, with_value[k])) which = k;
    if (which < 0) return 0;
    if (*i + 1 >= argc) return ar_errorf("%s needs a value", a);
    const char *v = argv[++*i];
    char *end = NULL;
    errno = 0;
    switch (which) {
    case 0:
        if (gen_parse_strategy(v, &g->strategy)) return ar_error_prefix("--decode: ");
        if (g->strategy == GEN_BEAM && g->beam_width < 2) g->beam_width = 4;
        return 1;
    case 1: case 5: case 6: {
        long n = strtol(v, &end, 10);
        if (errno || !*v || *end || n < 0 || n > INT_MAX || (which == 1 && n < 1))
            return ar_errorf("%s %s: expected a whole number%s", a, v, which == 1 ? " >= 1" : " >= 0");
        if (which == 1) { g->beam_width = (int)n; g->strategy = GEN_BEAM; }
        else if (which == 5) g->seed = (uint64_t)n;
        else g->max_new = (int)n;
        return 1;
    }
    default: {
        double x = strtod(v, &end);
        if (errno || !*v || *end || !isfinite(x) || (which == 4 && (x <= 0 || x > 1)) || (which == 3 && x < 0))
            return ar_errorf("%s %s: expected a number%s", a, v,
                             which == 4 ? " in (0, 1]" : which == 3 ? " >= 0" : "");
        if (which == 2) g->length_penalty = (float)x;
        else if (which == 3) g->temperature = (float)x;
        else g->top_p = (float)x;
        return 1;
    }
    }
}

int eval_resolve_stops(gen_cfg *g, const char *list, const tokenizer *tok) {
    if (g->n_stop == 0) { g->stop[0] = tok_eos(tok); g->n_stop = 1; }
    if (!list || !*list) return 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *sv = NULL, *p = strtok_r(buf, ",", &sv); p; p = strtok_r(NULL, ",", &sv)) {
        const int id = tok_piece_to_id(tok, p);
        if (id < 0) return ar_errorf("--stop: '%s' is not a token of the tokenizer (give its piece, e.g. \"</s>\" or \".\")", p);
        if (g->n_stop == GEN_MAX_STOP) return ar_errorf("--stop: at most %d stop tokens", GEN_MAX_STOP);
        g->stop[g->n_stop++] = id;
    }
    return 0;
}

static const char *strategy_name(int s) { return s == GEN_BEAM ? "beam" : s == GEN_SAMPLE ? "sample" : "greedy"; }

/* ------------------------------------------------------------------ per-sample outputs */

typedef struct {
    report_grid *grid;
    int per_set, taken;
    int overlays, drawn;        /* overlay PNGs per set and split, and how many so far */
    const char *overlay_dir;
    FILE *results;              /* results.jsonl, or NULL */
    const char *set, *split;
} examples;

static int write_mask(FILE *f, const uint8_t *m, int h, int w) {
    rle_mask r = {0};
    if (rle_encode_hw(&r, m, (uint32_t)h, (uint32_t)w)) return -1;
    size_t n = 0;
    char *str = rle_to_string(&r, &n);
    rle_free(&r);
    if (!str) return -1;
    fprintf(f, "{\"size\":[%d,%d],\"counts\":", h, w);
    json_write_string(f, str, n);
    fputc('}', f);
    free(str);
    return 0;
}

static void write_str(FILE *f, const char *key, const char *v) {
    fprintf(f, ",\"%s\":", key);
    json_write_string(f, v ? v : "", strlen(v ? v : ""));
}

/* One JSON line per evaluated sample: where it came from, the reference, the
 * generated answer, the [SEG]s generated, and per ground-truth mask the IoU
 * and the predicted mask as a COCO compressed RLE ({"size": [h, w],
 * "counts": ...}: what pycocotools' mask.encode gives for the h x w mask), so
 * other tools can re-score it; "iou" and "mask" repeat the first. */
static int write_result(examples *e, const eval_example *ex) {
    const ldr_item *it = ex->item;
    FILE *f = e->results;
    fprintf(f, "{\"set\":");
    json_write_string(f, e->set, strlen(e->set));
    write_str(f, "split", e->split);
    fprintf(f, ",\"record\":%zu,\"group\":%lld,\"part\":%d", it ? it->record : (size_t)0, it ? (long long)it->group : -1LL,
            it ? it->part : 0);
    if (it && it->image_id >= 0) fprintf(f, ",\"image_id\":%lld", (long long)it->image_id);
    write_str(f, "image", it ? it->image : "");
    fprintf(f, ",\"reference\":\"%s\"", k_ref_names[ref_index(it)]);
    write_str(f, "question", it ? it->question : "");
    write_str(f, "answer", it ? it->answer : "");
    write_str(f, "generated", ex->generated);
    fprintf(f, ",\"seg_generated\":%d", ex->n_seg);
    if (ex->exact >= 0) fprintf(f, ",\"exact\":%s", ex->exact ? "true" : "false");
    if (ex->n_masks > 0) {
        fprintf(f, ",\"iou\":%.6f,\"mask\":", ex->iou[0]);
        if (write_mask(f, ex->pred[0], ex->h, ex->w)) return -1;
        if (ex->n_masks > 1) {
            fprintf(f, ",\"ious\":[");
            for (int j = 0; j < ex->n_masks; j++) fprintf(f, "%s%.6f", j ? "," : "", ex->iou[j]);
            fprintf(f, "],\"masks\":[");
            for (int j = 0; j < ex->n_masks; j++) {
                if (j) fputc(',', f);
                if (write_mask(f, ex->pred[j], ex->h, ex->w)) return -1;
            }
            fputc(']', f);
        }
    }
    fputs("}\n", f);
    return ferror(f) ? ar_errorf("write error in the results file") : 0;
}

/* The image at its own size: the predicted masks filled red, the ground
 * truths outlined green, a box reference outlined yellow, and under it the
 * question's reference, the generated answer and the IoU. */
static int write_overlay(examples *e, const eval_example *ex) {
    const ldr_item *it = ex->item;
    ar_image im = {0};
    if (image_load(&im, it->image, IMAGE_RGB)) return -1;
    /* small images (the shapes world) scaled up by a whole factor, nearest */
    const int big = im.h > im.w ? im.h : im.w, sc = big < 256 ? (256 + big - 1) / big : 1;
    const int ih = im.h * sc, iw = im.w * sc;
    const int text_h = 4 * DRAW_LINE_H + 8, W = iw < 320 ? 320 : iw;
    draw_canvas *c = draw_new(W, ih + text_h, 0xffffff);
    int rc = -1;
    if (!c) goto out;
    if (draw_blit(c, 0, 0, iw, ih, im.px, im.h, im.w, 3, DRAW_NEAREST)) goto out;
    /* masks scaled into the image's rectangle (AVSBench masks may have their own size) */
    for (int j = 0; j < ex->n_masks; j++) {
        draw_blend_mask(c, 0, 0, iw, ih, ex->pred[j], ex->h, ex->w, 0xe03020, 0.5);
        draw_mask_outline(c, 0, 0, iw, ih, ex->gt[j], ex->h, ex->w, 0x20d040);
    }
    if (it->ref == SAMPLE_REF_BOX)
        draw_rect(c, (int)(it->box[0] * sc), (int)(it->box[1] * sc), (int)((it->box[2] - it->box[0]) * sc),
                  (int)((it->box[3] - it->box[1]) * sc), 2, 0xf0d000);
    const char *q = strchr(it->question, '\n');
    char line[1400];
    snprintf(line, sizeof line, "Q: %s\nA: %s", q ? q + 1 : it->question, ex->generated);
    if (ex->n_masks > 0) {
        size_t n = strlen(line);
        snprintf(line + n, sizeof line - n, "   (IoU %.3f)", ex->iou[0]);
    }
    draw_text_wrap(c, 4, ih + 4, W - 8, 4, line, 1, 0x202020);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s-%s-%03d.png", e->overlay_dir, e->set, e->split, e->drawn);
    for (char *p = path + strlen(e->overlay_dir) + 1; *p; p++)
        if (*p == '/' || *p == ' ' || *p == '(' || *p == ')') *p = '_';
    rc = draw_save_png(c, path);
out:
    draw_free(c);
    image_free(&im);
    return rc;
}

/* One evaluated sample into results.jsonl, the overlays and the grid. */
static int add_example(void *ctx, const eval_example *ex) {
    examples *e = ctx;
    if (e->results && write_result(e, ex)) return -1;
    if (!ex->item) return 0;
    if (e->drawn < e->overlays) {
        if (write_overlay(e, ex)) return -1;
        e->drawn++;
    }
    if (!e->grid || e->taken >= e->per_set) return 0;
    const ldr_item *it = ex->item;
    ar_image im = {0}, crop = {0};
    if (image_load(&im, it->image, IMAGE_RGB)) return 0;   /* decoded once already: should not fail */
    if (it->ref == SAMPLE_REF_IMAGE && it->ref_path[0] && image_load(&crop, it->ref_path, IMAGE_RGB)) memset(&crop, 0, sizeof crop);
    const int masks = ex->n_masks > 0 && ex->h == im.h && ex->w == im.w;
    float box[4];
    for (int i = 0; i < 4; i++) box[i] = (float)it->box[i];
    const char *q = strchr(it->question, '\n');
    char ref[600];
    snprintf(ref, sizeof ref, "%s", q ? q + 1 : it->question);
    int rc = report_grid_add(e->grid, im.px, im.h, im.w, ref, it->ref == SAMPLE_REF_BOX ? box : NULL,
                             crop.px, crop.h, crop.w, masks ? ex->pred[0] : NULL, masks ? ex->gt[0] : NULL, ex->generated,
                             masks ? ex->iou[0] : NAN);
    image_free(&im);
    image_free(&crop);
    e->taken++;
    return rc;
}

/* ------------------------------------------------------------------ suites */

typedef struct {
    const char *name, *kind, *dataset, *task, *splits, *what;
} suite_def;

/* The published tables (SPEC 4) and the sets they read. */
static const suite_def k_suites[] = {
    {"refcoco", "refer", "refcoco", "seg", "val,testA,testB", "RefCOCO referring segmentation: cIoU, gIoU"},
    {"refcoco+", "refer", "refcoco+", "seg", "val,testA,testB", "RefCOCO+ referring segmentation: cIoU, gIoU"},
    {"refcocog", "refer", "refcocog", "seg", "val,test", "RefCOCOg (umd) referring segmentation: cIoU, gIoU"},
    {"avs-s4", "avsbench", "s4", NULL, "test", "AVSBench S4: J (mIoU) and F (beta^2 0.3) per video"},
    {"avs-ms3", "avsbench", "ms3", NULL, "test", "AVSBench MS3: J (mIoU) and F (beta^2 0.3) per video"},
    {"refcocog-caption", "refer", "refcocog", "caption", "val",
     "RefCOCOg region captioning: METEOR (approx.), CIDEr-D, BLEU-1..4"},
    {"all", NULL, NULL, NULL, NULL, "every configured set at its eval_splits (else val_split): every metric that applies"},
};
#define N_SUITES ((int)(sizeof k_suites / sizeof *k_suites))

static const suite_def *find_suite(const char *name) {
    for (int i = 0; i < N_SUITES; i++) if (!strcmp(k_suites[i].name, name)) return &k_suites[i];
    return NULL;
}

static const char *const k_pre[] = {"source", "source2", "source3", "source4"};

static const char *skey(const ar_config *cfg, int k, const char *key) {
    char b[64];
    snprintf(b, sizeof b, "%s.%s", k_pre[k], key);
    return cfg_str(cfg, b);
}

static int suite_takes(const suite_def *s, const ar_config *cfg, int k) {
    if (!skey(cfg, k, "kind")[0]) return 0;
    if (!s->kind) return 1;
    if (strcmp(skey(cfg, k, "kind"), s->kind) || strcmp(skey(cfg, k, "dataset"), s->dataset)) return 0;
    return !s->task || !strcmp(skey(cfg, k, "task"), s->task);
}

/* ------------------------------------------------------------------ tables */

static void usage(FILE *f) {
    fprintf(f, "usage: anyref eval CONFIG [section.key=value ...] [--suite NAME] [--checkpoint CKPT] [--splits a,b,...]\n"
               "                  [--samples N] [--teacher] [--sentences all|one] [--json FILE] [--results FILE]\n"
               "                  [--overlays N] [--examples N] [--grid FILE] [--no-meteor] [--wordnet DIR] [decoding]\n"
               "  evaluates the run's newest checkpoint (or CKPT): answers generated from each prompt, masks from the\n"
               "  generated [SEG]s (--teacher: from the ground-truth answer's, as LISA's validation), referring\n"
               "  segmentation gIoU / cIoU per reference type beside the empty-mask and whole-image baselines,\n"
               "  AVSBench J / F per video, region-captioning BLEU-1..4 / CIDEr-D (as coco-caption) / METEOR\n"
               "  (approximation: exact + stem + WordNet synonyms, no paraphrases) and exact match.\n"
               "  Suites (--suite, default all):\n");
    for (int i = 0; i < N_SUITES; i++)
        fprintf(f, "    %-17s %s%s%s%s\n", k_suites[i].name, k_suites[i].what, k_suites[i].splits ? " (splits " : "",
                k_suites[i].splits ? k_suites[i].splits : "", k_suites[i].splits ? ")" : "");
    fprintf(f, "  A suite reads the configured set of its kind and dataset (source*.kind / dataset / task).\n"
               "  --sentences one: one sample per ref (a seeded sentence) instead of every sentence.\n"
               "  Outputs: Markdown tables on stdout; --json FILE (default run.dir/summary.json);\n"
               "  --results FILE (default run.dir/results.jsonl: one line per sample with the generated text, the\n"
               "  IoUs and the masks as COCO compressed RLE); --overlays N: the first N samples of each set and split\n"
               "  as PNGs in run.dir/overlays/; --examples N: a PNG grid (default run.dir/examples.png).\n"
               "  METEOR reads WordNet from --wordnet DIR (default /usr/share/wordnet; Debian's wordnet-base).\n");
    fputs(eval_gen_usage, f);
}

static void fmt(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "—");
    else snprintf(buf, n, "%.3f", v);
}

typedef struct {
    char set[96], split[64];
    eval_result e;
} set_row;

static void print_tables(FILE *f, const set_row *rows, int n, int teacher, const char *meteor_label) {
    int seg = 0, avs = 0, cap = 0;
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < EVAL_REFS; k++) seg += rows[i].e.ref[k].masks > 0;
        avs += rows[i].e.avs.batches > 0;
        cap += rows[i].e.captions > 0;
    }
    if (seg) {
        fprintf(f, "\nReferring segmentation (masks from the %s answers' [SEG]s)\n\n", teacher ? "ground-truth" : "generated");
        fprintf(f, "| set | split | reference | masks | gIoU | cIoU | empty gIoU | empty cIoU | whole gIoU | whole cIoU | no [SEG] |\n");
        fprintf(f, "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
        for (int i = 0; i < n; i++)
            for (int k = 0; k < EVAL_REFS; k++) {
                const eval_cell *c = &rows[i].e.ref[k];
                if (!c->masks) continue;
                char a[6][16];
                double v[6];
                eval_cell_means(c, v);
                for (int j = 0; j < 6; j++) fmt(a[j], 16, v[j]);
                fprintf(f, "| %s | %s | %s | %ld | **%s** | **%s** | %s | %s | %s | %s | %ld |\n", rows[i].set, rows[i].split,
                        k_ref_names[k], c->masks, a[0], a[1], a[2], a[3], a[4], a[5], rows[i].e.seg_missing);
            }
    }
    if (avs) {
        fprintf(f, "\nAVSBench (per video, as the AVSBench test script)\n\n| set | split | videos | frames | J (mIoU) | F (beta^2 0.3) |\n|---|---|--:|--:|--:|--:|\n");
        for (int i = 0; i < n; i++) {
            const eval_result *e = &rows[i].e;
            if (!e->avs.batches) continue;
            fprintf(f, "| %s | %s | %ld | %ld | **%.4f** | **%.4f** |\n", rows[i].set, rows[i].split, e->avs.batches,
                    e->avs_frames, avs_meter_j(&e->avs), avs_meter_f(&e->avs));
        }
    }
    if (cap) {
        fprintf(f, "\nRegion captioning (coco-caption tokenisation; METEOR~ = %s)\n\n"
                   "| set | split | captions | METEOR~ | CIDEr-D | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | exact |\n"
                   "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n", meteor_label);
        for (int i = 0; i < n; i++) {
            const eval_result *e = &rows[i].e;
            if (!e->captions) continue;
            char m[16];
            fmt(m, sizeof m, e->meteor);
            fprintf(f, "| %s | %s | %ld | %s | **%.3f** | %.3f | %.3f | %.3f | %.3f | %.3f |\n", rows[i].set, rows[i].split,
                    e->captions, m, e->cap.cider, e->cap.bleu[0], e->cap.bleu[1], e->cap.bleu[2], e->cap.bleu[3],
                    (double)e->caption_exact / e->captions);
        }
    }
}

static void json_num(FILE *f, const char *k, double v, int comma) {
    if (isnan(v) || isinf(v)) fprintf(f, "%s\"%s\":null", comma ? "," : "", k);
    else fprintf(f, "%s\"%s\":%.6f", comma ? "," : "", k, v);
}

static void json_cell(FILE *f, const eval_cell *c) {
    static const char *const names[6] = {"giou", "ciou", "empty_giou", "empty_ciou", "whole_giou", "whole_ciou"};
    double v[6];
    eval_cell_means(c, v);
    fprintf(f, "{\"masks\":%ld", c->masks);
    for (int i = 0; i < 6; i++) json_num(f, names[i], v[i], 1);
    fputc('}', f);
}

static void json_row(FILE *f, const set_row *s) {
    const eval_result *e = &s->e;
    fprintf(f, "{\"set\":");
    json_write_string(f, s->set, strlen(s->set));
    fprintf(f, ",\"split\":");
    json_write_string(f, s->split, strlen(s->split));
    fprintf(f, ",\"samples\":%ld,\"broken\":%ld", e->samples, e->broken);
    json_num(f, "seconds", e->seconds, 1);
    json_num(f, "samples_per_s", e->seconds > 0 ? e->samples / e->seconds : NAN, 1);
    fprintf(f, ",\"generated_tokens\":%ld", e->gen_tokens);
    json_num(f, "tokens_per_s", e->gen_seconds > 0 ? e->gen_tokens / e->gen_seconds : NAN, 1);
    for (int t = 0; t < EVAL_REFS; t++)
        if (e->ref[t].masks) { fprintf(f, ",\"%s\":", k_ref_names[t]); json_cell(f, &e->ref[t]); }
    fprintf(f, ",\"seg\":{\"missing\":%ld,\"extra\":%ld,\"in_captions\":%ld}", e->seg_missing, e->seg_extra, e->seg_unasked);
    if (e->avs.batches) {
        fprintf(f, ",\"avs\":{\"videos\":%ld,\"frames\":%ld", e->avs.batches, e->avs_frames);
        json_num(f, "J", avs_meter_j(&e->avs), 1);
        json_num(f, "F", avs_meter_f(&e->avs), 1);
        fputc('}', f);
    }
    if (e->captions) {
        fprintf(f, ",\"caption\":{\"samples\":%ld", e->captions);
        json_num(f, "exact", (double)e->caption_exact / e->captions, 1);
        for (int k = 0; k < 4; k++) {
            char key[16];
            snprintf(key, sizeof key, "bleu%d", k + 1);
            json_num(f, key, e->cap.bleu[k], 1);
        }
        json_num(f, "cider_d", e->cap.cider, 1);
        json_num(f, "meteor_approx", e->meteor, 1);
        if (!isnan(e->meteor)) fprintf(f, ",\"meteor_wordnet\":%s", e->meteor_wordnet ? "true" : "false");
        fputc('}', f);
    }
    fputc('}', f);
}

/* ------------------------------------------------------------------ command */

int eval_main(int argc, char **argv) {
    const char *config = NULL, *ckopt = NULL, *splits = NULL, *json = NULL, *gridpath = NULL, *respath = NULL;
    const char *suite_name = "all", *wordnet = NULL, *stop = NULL;
    int n_examples = 0, n_overlays = 0, teacher = 0, every_sentence = 1, use_meteor = 1, n_over = 0;
    long samples = 0;
    gen_cfg gen = gen_default_cfg();
    const char **over = calloc((size_t)argc + 8, sizeof *over);
    if (!over) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int g = eval_parse_gen_flag(argc, argv, &i, &gen, &stop);
        if (g < 0) { fprintf(stderr, "anyref eval: %s\n", ar_error()); free(over); return 2; }
        if (g) continue;
        if ((!strcmp(a, "--checkpoint") || !strcmp(a, "--splits") || !strcmp(a, "--samples") || !strcmp(a, "--suite") ||
             !strcmp(a, "--json") || !strcmp(a, "--examples") || !strcmp(a, "--grid") || !strcmp(a, "--results") ||
             !strcmp(a, "--overlays") || !strcmp(a, "--sentences") || !strcmp(a, "--wordnet")) &&
            i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(a, "--checkpoint")) ckopt = v;
            else if (!strcmp(a, "--splits")) splits = v;
            else if (!strcmp(a, "--json")) json = v;
            else if (!strcmp(a, "--grid")) gridpath = v;
            else if (!strcmp(a, "--results")) respath = v;
            else if (!strcmp(a, "--suite")) suite_name = v;
            else if (!strcmp(a, "--wordnet")) wordnet = v;
            else if (!strcmp(a, "--sentences")) {
                if (strcmp(v, "all") && strcmp(v, "one")) {
                    fprintf(stderr, "anyref eval: --sentences %s: expected all or one\n", v);
                    free(over);
                    return 2;
                }
                every_sentence = !strcmp(v, "all");
            } else {
                char *end;
                errno = 0;
                long n = strtol(v, &end, 10);
                if (errno || !*v || *end || n < 0 || n > INT_MAX) {
                    fprintf(stderr, "anyref eval: %s expects a count >= 0\n", a);
                    free(over);
                    return 2;
                }
                if (!strcmp(a, "--samples")) samples = n;
                else if (!strcmp(a, "--examples")) n_examples = (int)n;
                else n_overlays = (int)n;
            }
        } else if (!strcmp(a, "--teacher")) teacher = 1;
        else if (!strcmp(a, "--no-meteor")) use_meteor = 0;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            free(over);
            return 0;
        } else if (a[0] == '-') {
            fprintf(stderr, "anyref eval: unknown option %s (or it lacks its value)\n", a);
            usage(stderr);
            free(over);
            return 2;
        } else if (!config) config = a;
        else over[n_over++] = a;
    }
    if (!config) { usage(stderr); free(over); return 2; }
    const suite_def *suite = find_suite(suite_name);
    if (!suite) {
        fprintf(stderr, "anyref eval: unknown suite '%s' (anyref eval --help lists them)\n", suite_name);
        free(over);
        return 2;
    }
    over[n_over++] = "data.workers=0";   /* the training stream is not read */
    int rc = 1, n_rows = 0;
    ar_config *cfg = cfg_new(train_schema, train_schema_len);
    run_t r;
    memset(&r, 0, sizeof r);
    FILE *jf = NULL;
    set_row *rows = NULL;
    meteor *met = NULL;
    examples ex = {.grid = n_examples > 0 ? report_grid_new(4, 160) : NULL, .per_set = n_examples, .overlays = n_overlays};
    char odir[PATH_MAX];
    if (n_examples > 0 && !ex.grid) goto out;
    if (!cfg || cfg_load_file(cfg, config)) goto out;
    for (int i = 0; i < n_over; i++)
        if (cfg_override(cfg, over[i])) { ar_error_prefix("%s: ", over[i]); goto out; }
    if (strcmp(cfg_str(cfg, "data.kind"), "sources")) { ar_errorf("anyref eval: data.kind must be sources"); goto out; }
    int n_match = 0;
    for (int k = 0; k < LDR_MAX_SOURCES; k++) n_match += suite_takes(suite, cfg, k);
    if (!n_match) {
        if (suite->kind)
            ar_errorf("suite %s needs a set with kind = %s, dataset = %s%s%s in %s (source.* ... source4.*)", suite->name,
                      suite->kind, suite->dataset, suite->task ? ", task = " : "", suite->task ? suite->task : "", config);
        else ar_errorf("no set configured in %s (source.* ... source4.*)", config);
        goto out;
    }
    if (run_setup(&r, cfg)) goto out;
    /* several ranks (make MPI=1 under mpirun): each evaluates its share of
     * every set (eval_set), rank 0 alone scores and writes */
    const int rank0 = dist_rank() == 0;
    dist_set_timeout(cfg_float(cfg, "dist.timeout_s"));
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
    if (use_meteor && rank0) {
        for (int k = 0; k < LDR_MAX_SOURCES && !met; k++)
            if (suite_takes(suite, cfg, k) && strcmp(skey(cfg, k, "kind"), "avsbench")) {
                if (!(met = meteor_open(wordnet, NULL))) goto out;
                if (!meteor_has_wordnet(met))
                    log_warn("%s: install Debian's wordnet-base or give --wordnet DIR for synonym matches", meteor_name(met));
            }
    }
    char jpath[PATH_MAX], rpath[PATH_MAX];
    if (json) snprintf(jpath, sizeof jpath, "%s", json);
    else snprintf(jpath, sizeof jpath, "%s/summary.json", r.run_dir);
    if (respath) snprintf(rpath, sizeof rpath, "%s", respath);
    else snprintf(rpath, sizeof rpath, "%s/results.jsonl", r.run_dir);
    snprintf(odir, sizeof odir, "%s/overlays", r.run_dir);
    if (rank0 && n_overlays > 0 && (ar_mkdir_parent(odir) || (mkdir(odir, 0777) && errno != EEXIST))) { ar_errorf("cannot create %s: %s", odir, strerror(errno)); goto out; }
    ex.overlay_dir = odir;
    char rtmp[PATH_MAX + 8];   /* results.jsonl: written whole, then renamed over the last run's */
    snprintf(rtmp, sizeof rtmp, "%s.tmp", rpath);
    if (rank0 && (ar_mkdir_parent(rpath) || !(ex.results = fopen(rtmp, "w")))) {
        ar_errorf("cannot write %s: %s", rtmp, strerror(errno));
        goto out;
    }
    if (rank0) printf("anyref eval: %s (step %ld), suite %s, decoding %s", ck, step, suite->name, strategy_name(gen.strategy));
    if (rank0 && gen.strategy == GEN_BEAM) printf(" (width %d, length penalty %g)", gen.beam_width, gen.length_penalty);
    if (rank0 && gen.strategy == GEN_SAMPLE) printf(" (temperature %g, top-p %g, seed %llu)", gen.temperature, gen.top_p, (unsigned long long)gen.seed);
    if (rank0) printf(", at most %d new tokens%s, masks from the %s answers\n", gen.max_new, gen.no_cache ? " (no KV cache)" : "",
           teacher ? "ground-truth" : "generated");
    eval_opts eo = {.max_samples = samples, .gen = gen, .stop = stop, .teacher = teacher, .meteor = met};
    for (int k = 0; k < LDR_MAX_SOURCES; k++) {
        if (!suite_takes(suite, cfg, k)) continue;
        char list[512];
        snprintf(list, sizeof list, "%s",
                 splits ? splits : suite->splits ? suite->splits : skey(cfg, k, "eval_splits")[0] ? skey(cfg, k, "eval_splits")
                                                                                           : skey(cfg, k, "val_split"));
        const int is_avs = !strcmp(skey(cfg, k, "kind"), "avsbench");
        for (char *sv = NULL, *sp = strtok_r(list, ", ", &sv); sp; sp = strtok_r(NULL, ", ", &sv)) {
            int present;
            grounding_dataset *g = run_open_eval_set(&r, k, sp, every_sentence, &present);
            if (!g) { if (present) goto out; continue; }
            set_row *nr = realloc(rows, sizeof *rows * (size_t)(n_rows + 1));
            if (!nr) { gds_close(g); ar_errorf("out of memory"); goto out; }
            rows = nr;
            set_row *row = &rows[n_rows];
            memset(row, 0, sizeof *row);
            snprintf(row->set, sizeof row->set, "%s", ldr_source_name(gds_loader(g), 0));
            char *slash = strchr(row->set, '/');
            if (slash) *slash = 0;
            snprintf(row->split, sizeof row->split, "%s", sp);
            ex.taken = 0;
            ex.drawn = 0;
            ex.set = row->set;
            ex.split = row->split;
            eo.avs = is_avs;
            char label[192];
            snprintf(label, sizeof label, "%s %s", row->set, sp);
            int er = eval_set(&r, g, &eo, label, &row->e, add_example, &ex);
            gds_close(g);
            if (er) goto out;
            n_rows++;
        }
    }
    if (!n_rows) { ar_errorf("no set to evaluate: give --splits or set source.eval_splits / source.val_split"); goto out; }
    if (!rank0) { rc = 0; goto out; }   /* rank 0 writes */
    if (fclose(ex.results)) { ex.results = NULL; ar_errorf("cannot write %s", rtmp); goto out; }
    ex.results = NULL;
    if (rename(rtmp, rpath)) { ar_errorf("cannot rename %s to %s: %s", rtmp, rpath, strerror(errno)); goto out; }
    print_tables(stdout, rows, n_rows, teacher, met ? meteor_name(met) : "not computed (--no-meteor)");
    /* summary.json, written whole then renamed (a reader never sees half of it) */
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", jpath);
    if (ar_mkdir_parent(jpath) || !(jf = fopen(tmp, "w"))) { ar_errorf("cannot write %s: %s", tmp, strerror(errno)); goto out; }
    fprintf(jf, "{\"checkpoint\":");
    json_write_string(jf, ck, strlen(ck));
    fprintf(jf, ",\"step\":%ld,\"suite\":\"%s\",\"masks\":\"%s\",\"sentences\":\"%s\",", step, suite->name,
            teacher ? "ground-truth answer" : "generated answer", every_sentence ? "all" : "one");
    fprintf(jf, "\"decoding\":{\"strategy\":\"%s\",\"beam\":%d,\"length_penalty\":%g,\"temperature\":%g,\"top_p\":%g,"
                "\"seed\":%llu,\"max_new\":%d,\"kv_cache\":%s},",
            strategy_name(gen.strategy), gen.beam_width, gen.length_penalty, gen.temperature, gen.top_p,
            (unsigned long long)gen.seed, gen.max_new, gen.no_cache ? "false" : "true");
    fprintf(jf, "\"meteor\":");
    const char *mname = met ? meteor_name(met) : "not computed";
    json_write_string(jf, mname, strlen(mname));
    fprintf(jf, ",\"sets\":[");
    for (int i = 0; i < n_rows; i++) {
        if (i) fputc(',', jf);
        json_row(jf, &rows[i]);
    }
    fprintf(jf, "]}\n");
    int bad = ferror(jf) != 0;
    if (fclose(jf) || bad) { jf = NULL; ar_errorf("cannot write %s", tmp); goto out; }
    jf = NULL;
    if (rename(tmp, jpath)) { ar_errorf("cannot rename %s to %s: %s", tmp, jpath, strerror(errno)); goto out; }
    printf("\n(gIoU: mean IoU per mask; cIoU: total intersection / total union; baselines: the empty mask and the whole image;\n"
           " no [SEG]: ground-truth masks the generated answer gave no [SEG] for, scored as empty)\n%s\n%s (one line per sample: generated answer, IoUs, masks as COCO RLE)\n",
           jpath, rpath);
    if (n_overlays > 0) printf("%s/ (overlays: the first %d samples of each set and split)\n", odir, n_overlays);
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
    meteor_close(met);
    free(rows);
    free(over);
    return rc;
}
