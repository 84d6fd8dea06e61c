/* tests/test_anyref.c — the AnyRef step (model/anyref.c): LLaMA + LoRA -> [SEG]
 * head -> SAM prompt encoder + mask decoder -> post-processing -> joint loss.
 *
 * One tiny model (LLaMA vocab 16, dim 16, 2 layers, 2 heads / 1 kv head, LoRA
 * rank 2 on all seven projections with dropout 0.1, trainable embed_tokens and
 * lm_head; text_hidden_fcs 16 -> 16 -> 16; mask decoder dim 16, 2 heads, 4x4
 * grid, preset "anyref"; S = 64, low-res 16x16) and one mixed batch: sample 0
 * has one [SEG] (original 13x11), sample 1 two [SEG]s (9x15), sample 2 none.
 * 1. Finite differences of the total loss into every trainable tensor (up to
 *    8 evenly spaced entries each), with λ = 0.1 and λ = 0, tolerance 3e-2 of
 *    each tensor's gradient scale (central differences at steps h, h/2, h/4,
 *    see fd_check for why); hypernetwork MLPs 1..3 must get exactly zero
 *    gradient (single-mask output). The backward re-runs the decoder for
 *    sample 0, so this also checks that path.
 *    Once more (4 points per tensor) with the AVSBench variant: masks of
 *    another size than the image, the prediction resized to them (mask_hw).
 * 2. The aggregation of SPEC 2.9 against a hand computation in double from the
 *    original-size logits and masks (and at the AVSBench mask sizes); a batch without [SEG] is CE only and its
 *    backward leaves the mask-path gradients at zero.
 * 3. Learning: 16 fixed random image embeddings, the ground truth a function of
 *    the embedding (channel 0, post-processed like a mask, > 0), a fixed prompt
 *    with one [SEG]; AdamW on the AnyRef trainable set must lower BCE and Dice
 *    and raise the mean mask IoU above 0.75. Why 0.75: the planted masks cover
 *    about half of each image, so a mask unrelated to the image scores about
 *    1/3 (and the all-ones mask about 1/2); 0.75 needs a mask that follows the
 *    embedding's channel 0 over most of the image.
 * Run from the repo root. */
#include "kernels/kernels.h"
#include "model/anyref.h"
#include "model/sam_post.h"
#include "optim/optim.h"
#include "core/error.h"
#include "tests/testlib.h"
#include "tests/h5fixture.h"
#include "tests/tiny_anyref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PFX "anyref "
/* Finite-difference setup: weights seed, LLM projections/embeddings scaled from
 * 0.02 std (visible gradients), frozen decoder biases and no_mask_embed drawn
 * with std BIAS_STD (the tiny decoder's LayerNorms are badly conditioned with
 * all-zero biases), text_hidden_fcs weights, hypernetwork MLP 0 and the
 * upscaling convolutions scaled so the mask logits are O(1) and depend on the
 * [SEG] embedding; FD_H the largest difference step. */
#define SEED 11
#define LLM_SCALE 5.0f
#define FD_H 2e-3f
#define BIAS_STD 0.5f
#define FCS_SCALE 2.0f
enum { V = 16, DM = 16, SEG = 15, C = 16, G = 4, B = 3, T = 8, MAXSEG = 4 };

static anyref_cfg tiny_cfg(float lambda) { return tiny_anyref_cfg(V, T, SEG, lambda, 0.1f); }

/* targets[t] = tokens[t+1] from position a-1 on (the answer starts at a) */
static void make_targets(const int *tok, int a, int len, int *tgt) {
    for (int t = 0; t < T; t++) tgt[t] = (t >= a - 1 && t + 1 < len) ? tok[t + 1] : -100;
}

typedef struct {
    anyref *m;
    int tok[B * T], tgt[B * T];
    const float *img[B];
    const float *gt[MAXSEG];
    int hw[2 * B];
    int mhw[2 * B];     /* loss-mask sizes (AVSBench variant) */
    int avs;            /* pass mhw as anyref_batch.mask_hw */
    float *const *dimg; /* anyref_batch.dimage_emb */
} step_ctx;

static anyref_batch batch_of(const step_ctx *s, const float *const *gt) {
    anyref_batch bt = {.tokens = s->tok, .targets = s->tgt, .image_emb = s->img, .orig_hw = s->hw,
                       .mask_hw = s->avs ? s->mhw : NULL, .gt_masks = gt, .dimage_emb = s->dimg};
    return bt;
}

static double step_loss(void *u) {
    step_ctx *s = u;
    anyref_losses L;
    anyref_batch bt = batch_of(s, s->gt);
    anyref_forward(s->m, &bt, 42, &L);
    return 1.0 * L.ce + 2.0 * L.bce + 0.5 * L.dice;
}

/* Finite differences through tests/testlib's t_gradcheck_kinked: the loss
 * runs through many ReLUs (text_hidden_fcs, the decoder's MLPs, the
 * hypernetwork MLP) whose pre-activations move fast with the LLM weights. */
static double fd_check(const char *name, step_ctx *s, float *x, const float *g, size_t n, float h,
                       double tol, size_t max_points) {
    return t_gradcheck_kinked(name, step_loss, s, x, g, n, h, tol, max_points);
}

/* avs: the masks of sample 0 are 7x9 and those of sample 1 12x8 (not the
 * original 13x11 / 9x15): AVSBench's extra resize to the mask's size. */
static void mixed_batch(step_ctx *s, float **imgs, float **gts, int avs) {
    static const int TOK[B][T] = {{3, 4, 5, 6, 7, SEG, 8, 2},
                                  {3, 9, 10, 11, SEG, 12, SEG, 2},
                                  {3, 4, 9, 5, 6, 10, 2, 1}};
    static const int ANS[B] = {3, 2, 4};
    for (int b = 0; b < B; b++) {
        memcpy(s->tok + b * T, TOK[b], sizeof TOK[b]);
        make_targets(TOK[b], ANS[b], T, s->tgt + b * T);
    }
    const int hw0[2 * B] = {13, 11, 9, 15, 7, 5}, mhw[2 * B] = {7, 9, 12, 8, 0, 0};
    memcpy(s->hw, hw0, sizeof hw0);
    memcpy(s->mhw, mhw, sizeof mhw);
    s->avs = avs;
    const int *hw = avs ? mhw : hw0;
    for (int b = 0; b < B; b++) {
        imgs[b] = k_malloc((size_t)C * G * G * sizeof(float));
        float tmp[C * G * G];
        t_fill_normal(tmp, C * G * G, 1.0f, 100 + b);
        k_upload(imgs[b], tmp, sizeof tmp);
        s->img[b] = imgs[b];
    }
    /* [SEG] 0 -> sample 0 (13x11), [SEG]s 1, 2 -> sample 1 (9x15); masks at hw */
    const int gb[3] = {0, 1, 1};
    for (int k = 0; k < 3; k++) s->gt[k] = gts[k] = t_dev_mask((size_t)hw[2 * gb[k]] * hw[2 * gb[k] + 1], 200 + k, 0.4f);
    s->gt[3] = NULL;
}

/* Visible gradients everywhere: LoRA B away from zero, projections from 0.02 std to 0.4. */
static void perturb_weights(ar_params *ps) {
    for (int i = 0; i < ps->n; i++) {
        const ar_param *p = &ps->p[i];
        float *w = ps->w + p->off;
        if (strstr(p->name, "lora_B")) t_fill_normal(w, p->numel, 0.5f, 300 + i);
        else if (strstr(p->name, "proj.weight") || strstr(p->name, "embed_tokens") || strstr(p->name, "lm_head"))
            for (size_t j = 0; j < p->numel; j++) w[j] *= LLM_SCALE;
        else if (strstr(p->name, "text_hidden_fcs") && strstr(p->name, "weight"))
            for (size_t j = 0; j < p->numel; j++) w[j] *= FCS_SCALE;
        else if (strstr(p->name, "output_hypernetworks_mlps.0") && strstr(p->name, "weight"))
            for (size_t j = 0; j < p->numel; j++) w[j] *= 2.5f;
        else if (strstr(p->name, "output_upscaling.0.weight") || strstr(p->name, "output_upscaling.3.weight"))
            for (size_t j = 0; j < p->numel; j++) w[j] *= 2.5f;
        else if (strstr(p->name, "no_mask_embed") || (strstr(p->name, "mask_decoder") && strstr(p->name, "bias")))
            t_fill_normal(w, p->numel, BIAS_STD, 400 + i);
    }
}

static int is_dead_hyper(const char *name) {
    const char *h = strstr(name, "output_hypernetworks_mlps.");
    return h && h[strlen("output_hypernetworks_mlps.")] != '0';
}

static int setup(float lambda, ar_params *ps, anyref **m) {
    anyref_cfg c = tiny_cfg(lambda);
    params_init_empty(ps);
    if (anyref_declare(&c, ps) || params_alloc(ps)) return -1;
    params_randomize(ps, SEED);
    perturb_weights(ps);
    *m = anyref_create(&c, ps, B, T, MAXSEG);
    return *m ? 0 : -1;
}

static void test_gradients(float lambda, int avs, size_t points) {
    char nm[200];
    ar_params ps;
    anyref *m = NULL;
    if (setup(lambda, &ps, &m)) { t_fail(PFX "fd setup", "%s", ar_error()); return; }
    step_ctx s = {.m = m};
    float *imgs[B], *gts[3];
    mixed_batch(&s, imgs, gts, avs);
    anyref_losses L;
    params_zero_grad(&ps);
    anyref_batch bt = batch_of(&s, s.gt);
    anyref_forward(m, &bt, 42, &L);
    anyref_backward(m, 1.0f);
    const char *var = avs ? " avsbench" : "";
    snprintf(nm, sizeof nm, PFX "lambda %g%s mixed batch", (double)lambda, var);
    t_check(L.n_seg == 3 && L.n_seg_samples == 2 && isfinite(L.total), nm,
            "%d [SEG]s in %d samples; ce %.4f bce %.4f dice %.4f total %.4f", L.n_seg, L.n_seg_samples,
            (double)L.ce, (double)L.bce, (double)L.dice, (double)L.total);
    int checked = 0, dead_ok = 1, nt = 0;
    double worst = 0;
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        if (!p->trainable) continue;
        nt++;
        const float *g = ps.g + p->goff;
        if (is_dead_hyper(p->name)) {
            for (size_t j = 0; j < p->numel; j++) dead_ok &= g[j] == 0.0f;
            continue;
        }
        snprintf(nm, sizeof nm, PFX "lambda %g%s grad %s", (double)lambda, var, p->name);
        double e = fd_check(nm, &s, ps.w + p->off, g, p->numel, FD_H, 3e-2, points);
        if (e > worst) worst = e;
        checked++;
    }
    /* d total / d image embedding of samples 0 and 1 (a trainable SAM image
     * encoder's input gradient); sample 2 has no [SEG]: exactly zero */
    if (!avs) {
        float *dimg[B];
        for (int b = 0; b < B; b++) {
            dimg[b] = k_malloc((size_t)C * G * G * sizeof(float));
            k_zero(dimg[b], (size_t)C * G * G * sizeof(float));
        }
        s.dimg = dimg;
        anyref_batch b2 = batch_of(&s, s.gt);
        params_zero_grad(&ps);
        anyref_forward(m, &b2, 42, &L);
        anyref_backward(m, 1.0f);
        s.dimg = NULL;
        for (int b = 0; b < 2; b++) {
            snprintf(nm, sizeof nm, PFX "lambda %g d image_emb[%d]", (double)lambda, b);
            fd_check(nm, &s, (float *)s.img[b], dimg[b], (size_t)C * G * G, 2e-2f, 3e-2, 12);
        }
        double z = sumsq(dimg[2], (size_t)C * G * G);
        snprintf(nm, sizeof nm, PFX "lambda %g d image_emb[2] (no [SEG])", (double)lambda);
        t_check(z == 0.0, nm, "exactly zero: %g", z);
        for (int b = 0; b < B; b++) k_free(dimg[b]);
    }
    snprintf(nm, sizeof nm, PFX "lambda %g%s hypernetwork MLPs 1..3", (double)lambda, var);
    t_check(dead_ok, nm, "exactly zero gradient (single-mask output)");
    snprintf(nm, sizeof nm, PFX "lambda %g%s trainable set", (double)lambda, var);
    t_check(nt == 2 * 7 * 2 + 2 + 4 + 1 + 6 + 24, nm, "%d trainable tensors (LoRA 28, embed, lm_head, fcs 4, decoder 31), "
            "%d checked by fd, worst rel err %.2e", nt, checked, worst);
    for (int b = 0; b < B; b++) k_free(imgs[b]);
    for (int k = 0; k < 3; k++) k_free(gts[k]);
    anyref_free(m);
    params_free(&ps);
}

/* model.attention = flash: the same step with the decoder keeping no
 * probabilities; refocusing reads the [SEG] rows recomputed from the last
 * layer's q, k and log-sum-exp, and sends their gradient back through them
 * (llama_last_attention_rows / llama_backward_rows). Losses and every
 * trainable gradient against the step that keeps the probabilities. The two
 * float32 steps round the probabilities differently (exp(s - lse) against
 * exp(s - max) / sum, ~1e-7) and this test's enlarged weights amplify that
 * to ~1e-4 in places, hence 1e-3; leaving the rows' gradient out costs the
 * last layer's q/k LoRA 8e-3 (lambda 0.1) and 0.9 (lambda 1). The float64
 * parity of the flash step is test_anyref_parity's. */
static void test_flash_rows(float lambda) {
    char nm[200];
    ar_params ps;
    anyref *m = NULL;
    if (setup(lambda, &ps, &m)) { t_fail(PFX "flash setup", "%s", ar_error()); return; }
    anyref_cfg fc = tiny_cfg(lambda);
    fc.llm.flash_attention = 1;
    anyref *mf = anyref_create(&fc, &ps, B, T, MAXSEG);
    if (!mf) { t_fail(PFX "flash setup", "%s", ar_error()); anyref_free(m); params_free(&ps); return; }
    step_ctx s = {.m = m};
    float *imgs[B], *gts[3];
    mixed_batch(&s, imgs, gts, 0);
    anyref_losses L0, L1;
    float *g0 = t_alloc(ps.ng), *g1 = t_alloc(ps.ng);
    anyref_batch bt = batch_of(&s, s.gt);
    params_zero_grad(&ps);
    anyref_forward(m, &bt, 42, &L0);
    anyref_backward(m, 1.0f);
    k_download(g0, ps.g, ps.ng * sizeof(float));
    params_zero_grad(&ps);
    anyref_forward(mf, &bt, 42, &L1);
    anyref_backward(mf, 1.0f);
    k_download(g1, ps.g, ps.ng * sizeof(float));
    double worst = 0, worst_qk = 0;
    const char *wn = "";
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        if (!p->trainable) continue;
        const double e = t_max_rel_err(g1 + p->goff, g0 + p->goff, p->numel);
        if (e > worst) { worst = e; wn = p->name; }
        if (strstr(p->name, "layers.1.self_attn.q_proj.lora") || strstr(p->name, "layers.1.self_attn.k_proj.lora"))
            if (e > worst_qk) worst_qk = e;
    }
    const double el = fabs((double)L1.total - L0.total) / fabs((double)L0.total);
    anyref_mem a0, a1;
    anyref_memory(m, &a0);
    anyref_memory(mf, &a1);
    snprintf(nm, sizeof nm, PFX "lambda %g flash attention with [SEG] rows", (double)lambda);
    t_check(L1.n_seg == 3 && el <= 1e-6 && worst <= 1e-3 && worst_qk <= 1e-3 && a1.llm + a1.step < a0.llm + a0.step, nm,
            "loss %.7g vs %.7g (rel %.1e); trainable gradients max rel err %.1e (%s), last layer q/k LoRA %.1e; "
            "decoder + step buffers %zu -> %zu bytes", (double)L1.total, (double)L0.total, el, worst, wn, worst_qk,
            a0.llm + a0.step, a1.llm + a1.step);
    for (int b = 0; b < B; b++) k_free(imgs[b]);
    for (int k = 0; k < 3; k++) k_free(gts[k]);
    free(g0); free(g1);
    anyref_free(mf);
    anyref_free(m);
    params_free(&ps);
}

static double softplus_d(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

static void test_aggregation(int avs) {
    ar_params ps;
    anyref *m = NULL;
    if (setup(0.1f, &ps, &m)) { t_fail(PFX "aggregation setup", "%s", ar_error()); return; }
    step_ctx s = {.m = m};
    float *imgs[B], *gts[3];
    mixed_batch(&s, imgs, gts, avs);
    const int *want_hw = avs ? s.mhw : s.hw;
    anyref_losses L;
    anyref_batch bt = batch_of(&s, s.gt);
    float tot = anyref_forward(m, &bt, 42, &L);
    /* by hand: per-mask losses in double from the loss-size logits */
    const int nb[B] = {1, 2, 0};
    double bsum = 0, dsum = 0, mask_err = 0;
    int k = 0;
    for (int b = 0; b < B; b++) {
        double sb = 0, sd = 0;
        for (int j = 0; j < nb[b]; j++, k++) {
            int H0, W0;
            const float *xl = anyref_mask_logits(m, k, &H0, &W0);
            size_t n = (size_t)H0 * W0;
            float *x = t_alloc(n), *y = t_alloc(n);
            k_download(x, xl, n * sizeof(float));
            k_download(y, s.gt[k], n * sizeof(float));
            double bce = 0, inter = 0, ssig = 0, sy = 0;
            for (size_t i = 0; i < n; i++) {
                double sg = 1.0 / (1.0 + exp(-(double)x[i]));
                bce += softplus_d(x[i]) - (double)x[i] * y[i];
                inter += sg * y[i]; ssig += sg; sy += y[i];
            }
            bce /= (double)n;
            double dice = 1.0 - (2.0 * inter + DICE_SMOOTH) / (ssig + sy + DICE_SMOOTH);
            mask_err = fmax(mask_err, fabs(bce - anyref_mask_bce(m)[k]) / bce);
            mask_err = fmax(mask_err, fabs(dice - anyref_mask_dice(m)[k]) / dice);
            mask_err = fmax(mask_err, (H0 == want_hw[2 * b] && W0 == want_hw[2 * b + 1] && anyref_seg_sample(m)[k] == b) ? 0 : 1);
            sb += bce; sd += dice;
            free(x); free(y);
        }
        if (nb[b]) { bsum += sb / (nb[b] + 1e-8) * nb[b]; dsum += sd / nb[b] * nb[b]; }
    }
    const double N = 3;
    double bce = bsum / (N + 1e-8), dice = dsum / (N + 1e-8);
    double total = 1.0 * L.ce + 2.0 * bce + 0.5 * dice;
    double e = fmax(fabs(bce - L.bce) / bce, fmax(fabs(dice - L.dice) / dice, fabs(total - tot) / total));
    t_check(e < 1e-5 && mask_err < 1e-5 && L.total == tot,
            avs ? PFX "aggregation (SPEC 2.9) at AVSBench mask sizes vs hand computation"
                : PFX "aggregation (SPEC 2.9) vs hand computation",
            "n_b = 1,2,0: bce %.6f (hand %.6f) dice %.6f (hand %.6f) total %.6f = 1*ce + 2*bce + 0.5*dice "
            "(hand %.6f); per-mask rel err %.1e, aggregate rel err %.1e",
            (double)L.bce, bce, (double)L.dice, dice, (double)tot, total, mask_err, e);

    /* no [SEG] anywhere: CE only, and the mask path gets no gradient */
    step_ctx z = s;
    for (int i = 0; i < B * T; i++) if (z.tok[i] == SEG) z.tok[i] = 13;
    for (int b = 0; b < B; b++) make_targets(z.tok + b * T, (int[]){3, 2, 4}[b], T, z.tgt + b * T);
    params_zero_grad(&ps);
    anyref_losses Z;
    anyref_batch zb = batch_of(&z, NULL);
    float zt = anyref_forward(m, &zb, 42, &Z);
    anyref_backward(m, 1.0f);
    double gmask = 0, gllm = 0;
    for (int i = 0; i < ps.n; i++) {
        const ar_param *p = &ps.p[i];
        if (!p->trainable) continue;
        double ss = sumsq(ps.g + p->goff, p->numel);
        if (strstr(p->name, "mask_decoder") || strstr(p->name, "text_hidden_fcs")) gmask += ss; else gllm += ss;
    }
    t_check(Z.n_seg == 0 && Z.bce == 0.0f && Z.dice == 0.0f && zt == Z.ce && gmask == 0.0 && gllm > 0.0,
            PFX "batch without [SEG]", "total %.5f == ce %.5f, bce %g dice %g; |grad| fcs+decoder %g, LLM %.3g",
            (double)zt, (double)Z.ce, (double)Z.bce, (double)Z.dice, sqrt(gmask), sqrt(gllm));

    /* errors: a [SEG] with no mask, an original size over the maximum */
    anyref_batch b1 = batch_of(&s, (const float *const[]){gts[0], gts[1], NULL, NULL});
    float r1 = anyref_forward(m, &b1, 42, NULL);
    char e1[200], e2[200];
    snprintf(e1, sizeof e1, "%s", ar_error());
    step_ctx big = s;
    big.hw[0] = 17;
    anyref_batch b2 = batch_of(&big, big.gt);
    float r2 = anyref_forward(m, &b2, 42, NULL);
    snprintf(e2, sizeof e2, "%s", ar_error());
    step_ctx bigm = s;
    bigm.avs = 1;
    bigm.mhw[3] = 20;
    anyref_batch b3 = batch_of(&bigm, bigm.gt);
    float r3 = anyref_forward(m, &b3, 42, NULL);
    t_check(isnan(r1) && isnan(r2) && isnan(r3) && strstr(e1, "mask") && strstr(e2, "max_orig") &&
            strstr(ar_error(), "mask size"), avs ? PFX "errors (avsbench batch)" : PFX "errors",
            "missing mask: %s; original too large: %s; mask too large: %s", e1, e2, ar_error());
    for (int b = 0; b < B; b++) k_free(imgs[b]);
    for (int k2 = 0; k2 < 3; k2++) k_free(gts[k2]);
    anyref_free(m);
    params_free(&ps);
}

/* ------------------------------------------------------------ learning */
enum { LB = 4, LT = 6, NTRAIN = 16, NTEST = 8 };

typedef struct { float *img; float *gt; int h, w; } sample;

static void make_sample(sample *s, int idx, int h, int w) {
    float tmp[C * G * G];
    t_fill_normal(tmp, C * G * G, 1.0f, 1000 + idx);
    s->img = k_malloc(sizeof tmp);
    k_upload(s->img, tmp, sizeof tmp);
    /* ground truth: channel 0 through the mask post-processing, > 0 */
    sam_post_shape sh;
    sam_post_init(&sh, 1, G, G, 64, h, w, 0, 0);
    float *scr = t_alloc(sam_post_scratch_floats(&sh)), *o = t_alloc((size_t)h * w);
    sam_post_forward(&sh, o, scr, tmp);
    for (int i = 0; i < h * w; i++) o[i] = o[i] > 0 ? 1.0f : 0.0f;
    s->gt = k_malloc((size_t)h * w * sizeof(float));
    k_upload(s->gt, o, (size_t)h * w * sizeof(float));
    s->h = h; s->w = w;
    free(scr); free(o);
}

/* mean IoU (logit > 0 vs gt) and mean bce/dice over a set, batches of LB */
static void evaluate(anyref *m, const int *tok, const int *tgt, sample *set, int n, double *iou, double *bce,
                     double *dice) {
    *iou = *bce = *dice = 0;
    for (int i0 = 0; i0 < n; i0 += LB) {
        const float *img[LB], *gt[LB];
        int hw[2 * LB];
        for (int b = 0; b < LB; b++) {
            sample *s = &set[i0 + b];
            img[b] = s->img; gt[b] = s->gt; hw[2 * b] = s->h; hw[2 * b + 1] = s->w;
        }
        anyref_losses L;
        anyref_batch bt = {.tokens = tok, .targets = tgt, .image_emb = img, .orig_hw = hw, .gt_masks = gt};
        anyref_forward(m, &bt, 0, &L);
        for (int b = 0; b < LB; b++) {
            int H0, W0;
            const float *xl = anyref_mask_logits(m, b, &H0, &W0);
            size_t np = (size_t)H0 * W0;
            float *x = t_alloc(np), *y = t_alloc(np);
            k_download(x, xl, np * sizeof(float));
            k_download(y, gt[b], np * sizeof(float));
            double in = 0, un = 0;
            for (size_t i = 0; i < np; i++) {
                int p = x[i] > 0, g = y[i] > 0.5f;
                in += p && g; un += p || g;
            }
            *iou += un > 0 ? in / un : 1.0;
            *bce += anyref_mask_bce(m)[b];
            *dice += anyref_mask_dice(m)[b];
            free(x); free(y);
        }
    }
    *iou /= n; *bce /= n; *dice /= n;
}

static void test_learning(void) {
    anyref_cfg c = tiny_cfg(0.1f);
    c.llm.max_seq = LT;
    c.llm.lora_targets = LLAMA_LORA_QV;
    ar_params ps;
    params_init_empty(&ps);
    if (anyref_declare(&c, &ps) || params_alloc(&ps)) { t_fail(PFX "learn setup", "%s", ar_error()); return; }
    params_randomize(&ps, 5);
    anyref *m = anyref_create(&c, &ps, LB, LT, LB);
    if (!m) { t_fail(PFX "learn create", "%s", ar_error()); params_free(&ps); return; }
    static const int prompt[LT] = {3, 4, 5, 6, SEG, 2};
    int tok[LB * LT], tgt[LB * LT];
    for (int b = 0; b < LB; b++) {
        memcpy(tok + b * LT, prompt, sizeof prompt);
        for (int t = 0; t < LT; t++) tgt[b * LT + t] = (t >= 2 && t + 1 < LT) ? prompt[t + 1] : -100;
    }
    static const int sizes[4][2] = {{13, 11}, {9, 15}, {16, 16}, {12, 10}};
    sample train[NTRAIN], test[NTEST];
    double cover = 0;
    for (int i = 0; i < NTRAIN; i++) make_sample(&train[i], i, sizes[i % 4][0], sizes[i % 4][1]);
    for (int i = 0; i < NTEST; i++) make_sample(&test[i], 500 + i, sizes[i % 4][0], sizes[i % 4][1]);
    for (int i = 0; i < NTRAIN; i++) {
        float *y = t_alloc((size_t)train[i].h * train[i].w);
        k_download(y, train[i].gt, (size_t)train[i].h * train[i].w * sizeof(float));
        for (int j = 0; j < train[i].h * train[i].w; j++) cover += y[j];
        free(y);
    }
    double npx = 0;
    for (int i = 0; i < NTRAIN; i++) npx += train[i].h * train[i].w;
    cover /= npx;

    double iou0, bce0, dice0, tiou0, tb0, td0;
    anyref_set_training(m, 0);
    evaluate(m, tok, tgt, train, NTRAIN, &iou0, &bce0, &dice0);
    evaluate(m, tok, tgt, test, NTEST, &tiou0, &tb0, &td0);
    anyref_set_training(m, 1);
    ar_optim_cfg oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .grad_clip = 1.0f,
                       .schedule = OPTIM_CONSTANT, .total_steps = 160};
    const int steps = 160;
    float ce0 = 0, ce1 = 0;
    for (int st = 0; st < steps; st++) {
        const float *img[LB], *gt[LB];
        int hw[2 * LB];
        for (int b = 0; b < LB; b++) {
            sample *s = &train[(st * LB + b) % NTRAIN];
            img[b] = s->img; gt[b] = s->gt; hw[2 * b] = s->h; hw[2 * b + 1] = s->w;
        }
        anyref_losses L;
        params_zero_grad(&ps);
        anyref_batch bt = {.tokens = tok, .targets = tgt, .image_emb = img, .orig_hw = hw, .gt_masks = gt};
        anyref_forward(m, &bt, 1000 + st, &L);
        anyref_backward(m, 1.0f);
        optim_step(&ps, &oc, st + 1, oc.lr);
        if (st == 0) ce0 = L.ce;
        ce1 = L.ce;
    }
    double iou1, bce1, dice1, tiou1, tb1, td1;
    anyref_set_training(m, 0);
    evaluate(m, tok, tgt, train, NTRAIN, &iou1, &bce1, &dice1);
    evaluate(m, tok, tgt, test, NTEST, &tiou1, &tb1, &td1);
    t_check(bce1 < 0.6 * bce0 && dice1 < 0.8 * dice0 && iou1 > 0.75 && ce1 < ce0, PFX "learns the planted mask",
            "%d AdamW steps (gt covers %.0f%% of the pixels): train bce %.3f -> %.3f, dice %.3f -> %.3f, "
            "IoU %.3f -> %.3f; ce %.3f -> %.3f; held-out IoU %.3f -> %.3f",
            steps, 100 * cover, bce0, bce1, dice0, dice1, iou0, iou1, (double)ce0, (double)ce1, tiou0, tiou1);
    /* greedy generation (anyref_generate) from the learned prompt 3 4 5: the
     * answer 6 [SEG] 2 (stop id 2), every row alike; a row with no prompt is
     * left alone (padding) and changes nothing in the others */
    {
        int gt_tok[LB * LT], glen[LB];
        for (int b = 0; b < LB; b++) { memcpy(gt_tok + b * LT, prompt, sizeof prompt); glen[b] = b == 1 ? 0 : 3; }
        int rc = anyref_generate(m, gt_tok, glen, 8, 2, 0, NULL, 0);
        int ok = rc == 0, first = 1;
        for (int b = 0; b < LB && ok; b++) {
            if (b == 1) { for (int t = 0; t < LT; t++) ok &= gt_tok[b * LT + t] == 0; ok &= glen[b] == 0; continue; }
            ok &= glen[b] == LT && !memcmp(gt_tok + b * LT, prompt, sizeof prompt);
            first = 0;
        }
        t_check(ok && !first, PFX "greedy generation reproduces the learned answer",
                "rc %d; row 0: %d %d %d | %d %d %d (want 3 4 5 | 6 %d 2), length %d", rc, gt_tok[0], gt_tok[1], gt_tok[2],
                gt_tok[3], gt_tok[4], gt_tok[5], SEG, glen[0]);
    }
    for (int i = 0; i < NTRAIN; i++) { k_free(train[i].img); k_free(train[i].gt); }
    for (int i = 0; i < NTEST; i++) { k_free(test[i].img); k_free(test[i].gt); }
    anyref_free(m);
    params_free(&ps);
}

int main(void) {
    test_gradients(0.1f, 0, 8);
    test_gradients(0.0f, 0, 8);
    test_gradients(0.1f, 1, 8);
    test_aggregation(0);
    test_aggregation(1);
    test_learning();
    test_flash_rows(0.1f);
    test_flash_rows(1.0f);
    return t_exit_code();
}
