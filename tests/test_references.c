/* tests/test_references.c — images and references as LLM tokens
 * (model/references.c) and their splicing into the AnyRef step.
 * 1. refs_splice: the layout of image and reference tokens (markers, feature
 *    ids -(r+1), labels -100 on features, padding, truncation) and its errors.
 * 2. Feature rows: crop pooling and box RoIAlign rows against host
 *    computations from the projected rows; precomputed CLIP / ImageBind
 *    outputs give the same rows as running the encoders.
 * 3. The whole multimodal step (tiny CLIP + mlp2x projector (trainable) +
 *    ImageBind audio + audio_projector -> spliced LLaMA + LoRA -> [SEG] head ->
 *    SAM decoder -> CE + BCE + Dice) on a batch with a box, an image-crop and
 *    an audio reference: finite differences of the total loss into both
 *    projectors, LoRA and the embeddings, and of d total / d feat (the splice
 *    backward). PyTorch parity of the same step: tests/test_anyref_mm_parity.c.
 * Run from the repo root. */
#include "kernels/kernels.h"
#include "model/anyref.h"
#include "model/references.h"
#include "model/sam_image_encoder.h"
#include "data/conversation.h"
#include "data/tokenizer.h"
#include "core/error.h"
#include "tests/testlib.h"
#include "tests/tiny_anyref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PFX "refs "
enum { V = 24, DM = 16, SEG = 15, C = 16, G2 = 4, B = 3, T = 40, MAXSEG = 4 };
enum { PAD = 0, BOS = 1, EOS = 2, IMG = 16, IM_S = 17, IM_E = 18, REF_S = 19, REF_E = 20, AU_S = 21, AU_E = 23 };
enum { CI = 32, CP = 8, CW = 24, GT = 16 };   /* CLIP image, patch, width; tokens (4 x 4) */

static refs_cfg tiny_refs(void) { return tiny_refs_cfg(3, 2, 2, 1); }

static anyref_cfg tiny_anyref(float lambda) { return tiny_anyref_cfg(V, T, SEG, lambda, 0.0f); }

/* ------------------------------------------------------------ splice */
static void test_splice(void) {
    const refs_markers mk = {.image = IMG, .im_start = IM_S, .im_end = IM_E, .ref_start = REF_S, .ref_end = REF_E,
                             .audio_start = AU_S, .audio_end = AU_E};
    const int ids[] = {BOS, 5, IMG, 6, REF_S, REF_E, 7, AU_S, AU_E, 8, 9, EOS};
    const int lab[] = {-100, -100, -100, -100, -100, -100, -100, -100, -100, 8, 9, EOS};
    const refs_ref rf[2] = {{REFS_BOX, 10}, {REFS_AUDIO, 30}};
    int out[40], ol[40];
    int n = refs_splice(ids, lab, 12, &mk, 4, 2, rf, 2, 40, PAD, out, ol);
    /* BOS 5 IM_S f2..f5 IM_E 6 REF_S f10..f13 REF_E 7 AU_S f30..f32 AU_E 8 9 EOS */
    const int want[] = {BOS, 5, IM_S, -3, -4, -5, -6, IM_E, 6, REF_S, -11, -12, -13, -14, REF_E, 7,
                        AU_S, -31, -32, -33, AU_E, 8, 9, EOS};
    int ok = n == 24 && !memcmp(out, want, sizeof want) && out[24] == PAD && ol[24] == -100 && ol[21] == 8 &&
             ol[23] == EOS;
    for (int t = 0; t < 21; t++) ok &= ol[t] == -100;
    int e1 = refs_splice(ids, lab, 12, &mk, 4, -1, rf, 2, 40, PAD, out, ol);
    char m1[200];
    snprintf(m1, sizeof m1, "%s", ar_error());
    int e2 = refs_splice(ids, lab, 12, &mk, 4, 2, rf, 1, 40, PAD, out, ol);
    char m2[200];
    snprintf(m2, sizeof m2, "%s", ar_error());
    int n3 = refs_splice(ids, lab, 12, &mk, 4, 2, rf, 2, 10, PAD, out, ol);
    const refs_ref swapped[2] = {{REFS_AUDIO, 30}, {REFS_BOX, 10}};
    int e4 = refs_splice(ids, lab, 12, &mk, 4, 2, swapped, 2, 40, PAD, out, ol);
    t_check(ok && e1 == -1 && e2 == -1 && e4 == -1 && strstr(m1, "no image") && strstr(m2, "has 1 references") &&
            strstr(ar_error(), "between image-reference markers") && n3 == 24 && out[9] == REF_S,
            PFX "splice layout and errors",
            "24 positions (image 4 rows, box 4, audio 3); no image: %s; too few references: %s; audio between image "
            "markers: %s; T 10 keeps the first 10 of %d", m1, m2, ar_error(), n3);
}

/* From a conversation to the spliced sequence: the markers are the
 * tokenizer's added tokens, "<image>" LLaVA's placeholder (conv_encoder's id
 * -1, as tokenizer_image_token's -200), the labels preprocess_v1's. The
 * spliced sequence keeps every token and label of the conversation in order,
 * with the image's rows between <im_start>/<im_end> and the box's between
 * the reference markers, all labelled -100. */
static void test_splice_conversation(void) {
    tokenizer *tok = tok_load("tests/fixtures/tok_bpe.model");
    conv_encoder *e = tok ? conv_encoder_new(tok, "llava_v1", 256) : NULL;
    const char *added[] = {"[SEG]", "<im_start>", "<im_end>", "<img_ref_start>", "<img_ref_end>"};
    int ok = e && conv_encoder_add_placeholder(e, "<image>") == -1;
    for (size_t i = 0; ok && i < sizeof added / sizeof *added; i++) ok = conv_encoder_add_token(e, added[i], 1) >= 0;
    int mark[5];
    for (size_t i = 0; ok && i < 5; i++) {
        int *ids = NULL, n = 0;
        ok = conv_encode(e, added[i], strlen(added[i]), 0, &ids, &n) == 0 && n == 1;
        if (ok) mark[i] = ids[0];
        free(ids);
    }
    if (!ok) {
        t_fail(PFX "splice a conversation", "setup: %s", ar_error());
        conv_encoder_free(e); tok_free(tok);
        return;
    }
    const char *msgs[2] = {"<image>\nCan you segment the object <img_ref_start><img_ref_end> in this image?",
                           "It is [SEG]."};
    const size_t lens[2] = {strlen(msgs[0]), strlen(msgs[1])};
    conv_sample cs;
    if (conv_tokenize(e, msgs, lens, 2, &cs)) { t_fail(PFX "splice a conversation", "%s", ar_error()); return; }
    const refs_markers mk = {.image = -1, .im_start = mark[1], .im_end = mark[2], .ref_start = mark[3],
                             .ref_end = mark[4], .audio_start = -2, .audio_end = -2};
    enum { G = 4, TT = 300 };
    const refs_ref rf = {REFS_BOX, 10};
    int out[TT], lab[TT];
    int n = refs_splice(cs.ids, cs.labels, cs.n, &mk, G, 0, &rf, 1, TT, 0, out, lab);
    /* walk both: every conversation token in order; features only where expected */
    int i = 0, seg = 0, feat_img = 0, feat_box = 0, order = n == cs.n + (G + 1) + REFS_BOX_ROWS;
    for (int t = 0; t < n && order; t++) {
        if (out[t] < 0) {        /* the box's rows -(10+1) .. -(13+1), unlabelled */
            order = lab[t] == -100 && out[t] == -(rf.row + feat_box) - 1;
            feat_box++;
            continue;
        }
        if (cs.ids[i] == -1) {   /* the placeholder became <im_start>, rows -1 .. -G, <im_end> */
            order = out[t] == mark[1] && lab[t] == -100;
            for (int j = 0; j < G && order; j++, feat_img++) order = out[t + 1 + j] == -j - 1 && lab[t + 1 + j] == -100;
            t += G + 1;
            order = order && out[t] == mark[2];
            i++;
            continue;
        }
        order = out[t] == cs.ids[i] && lab[t] == cs.labels[i];
        seg += out[t] == mark[0] && lab[t] == mark[0];
        i++;
    }
    t_check(order && i == cs.n && seg == 1 && feat_img == G && feat_box == REFS_BOX_ROWS && !cs.mismatch,
            PFX "splice a conversation (LLaVA placeholder, added-token markers)",
            "%d tokens -> %d: image rows between <im_start> %d / <im_end> %d, box rows between %d / %d, [SEG] %d "
            "supervised once, every label carried over", cs.n, n, mark[1], mark[2], mark[3], mark[4], mark[0]);
    conv_sample_free(&cs);
    conv_encoder_free(e);
    tok_free(tok);
}

/* ------------------------------------------------------------ step */
typedef struct {
    ar_params ps;
    refs *r;
    anyref *m;
    sam_image_encoder *enc;     /* trainable encoders: SAM embeddings from sam_px */
    const float *sam_px;
    float *dimg;                /* [B, C, G2, G2] */
    refs_batch rb;
    int tok[B * T], tgt[B * T], hw[2 * B];
    const float *img[B], *gt[MAXSEG];
    float *bufs[16];
    int nbuf;
} step;

static float *dev(step *s, const float *host, size_t n) {
    float *d = k_malloc(n * sizeof(float));
    k_upload(d, host, n * sizeof(float));
    s->bufs[s->nbuf++] = d;
    return d;
}

static double run_step(step *s, int backward) {
    float *feat = refs_forward(s->r, &s->rb);
    if (!feat) return NAN;
    refs_offsets o = refs_rows(s->r, &s->rb);
    const float *img[B];
    float *dimg[B];
    const size_t chw = (size_t)C * G2 * G2;
    if (s->enc) {   /* a trainable SAM image encoder makes the embeddings */
        const float *e = sam_encoder_forward(s->enc, s->sam_px, B);
        if (!e) return NAN;
        for (int b = 0; b < B; b++) { img[b] = e + b * chw; dimg[b] = s->dimg + b * chw; }
        k_zero(s->dimg, B * chw * sizeof(float));
    }
    anyref_batch in = {.tokens = s->tok, .targets = s->tgt, .feat = feat, .n_feat = o.total,
                       .dfeat = backward ? refs_dfeat(s->r) : NULL, .image_emb = s->enc ? img : s->img,
                       .orig_hw = s->hw, .gt_masks = s->gt, .dimage_emb = s->enc && backward ? dimg : NULL};
    anyref_losses L;
    float tot = anyref_forward(s->m, &in, 7, &L);
    if (backward) {
        anyref_backward(s->m, 1.0f);
        if (refs_backward(s->r) || (s->enc && sam_encoder_backward(s->enc, s->dimg))) return NAN;
    }
    return tot;
}
static double loss_cb(void *u) { return run_step(u, 0); }

/* samples: 0 image 0 + box on image 0, one [SEG]; 1 image 1 + crop, two [SEG]s;
 * 2 image 2 + audio, text answer only */
/* The tiny SAM image encoder whose output is the step's image embedding:
 * 64 px, patch 16 (4 x 4 = the decoder grid), width 16, 2 blocks (block 1
 * global), window 3 (padding), 16 output channels. */
static sam_encoder_cfg tiny_sam_encoder(void) {
    sam_encoder_cfg e = sam_encoder_vit_b(NULL);
    e.img_size = 64; e.patch = 16; e.dim = 16; e.depth = 2; e.heads = 2; e.mlp_dim = 64; e.out_chans = C;
    e.window = 3;
    memset(e.global_attn, 0, sizeof e.global_attn);
    e.global_attn[1] = 1;
    e.trainable = 1;
    return e;
}

/* trainable: the CLIP tower and a SAM image encoder trained too (issue 5 part 6) */
static int setup_ex(step *s, float lambda, int trainable) {
    memset(s, 0, sizeof *s);
    refs_cfg rc = tiny_refs();
    rc.clip.trainable = trainable;
    anyref_cfg ac = tiny_anyref(lambda);
    sam_encoder_cfg ec = tiny_sam_encoder();
    params_init_empty(&s->ps);
    if (anyref_declare(&ac, &s->ps) || refs_declare(&rc, &s->ps) || (trainable && sam_encoder_declare(&ec, &s->ps)) ||
        params_alloc(&s->ps))
        return -1;
    params_randomize(&s->ps, 21);
    for (int i = 0; i < s->ps.n; i++) {   /* visible gradients: LoRA B off zero, decoder biases random */
        const ar_param *p = &s->ps.p[i];
        float *w = s->ps.w + p->off;
        if (strstr(p->name, "lora_B")) t_fill_normal(w, p->numel, 0.5f, 300 + i);
        else if (strstr(p->name, "proj.weight") || strstr(p->name, "embed_tokens") || strstr(p->name, "lm_head"))
            for (size_t j = 0; j < p->numel; j++) w[j] *= 5.0f;
        else if (strstr(p->name, "no_mask_embed") || (strstr(p->name, "mask_decoder") && strstr(p->name, "bias")))
            t_fill_normal(w, p->numel, 0.5f, 400 + i);
        else if (strstr(p->name, "output_hypernetworks_mlps.0") && strstr(p->name, "weight"))
            for (size_t j = 0; j < p->numel; j++) w[j] *= 2.5f;
    }
    if (!(s->r = refs_create(&rc, &s->ps)) || !(s->m = anyref_create(&ac, &s->ps, B, T, MAXSEG))) return -1;
    if (trainable) {
        if (!(s->enc = sam_encoder_create(&ec, &s->ps, B))) return -1;
        const size_t n = (size_t)B * 3 * 64 * 64;
        float *px = t_alloc(n);
        t_fill_normal(px, n, 1.0f, 41);
        s->sam_px = dev(s, px, n);
        free(px);
        s->dimg = k_malloc((size_t)B * C * G2 * G2 * sizeof(float));
    }
    anyref_set_training(s->m, 0);
    const size_t npix = (size_t)3 * CI * CI;
    float *h = t_alloc(3 * npix);
    t_fill_normal(h, 3 * npix, 1.0f, 31);
    s->rb.n_images = 3; s->rb.pixels = dev(s, h, 3 * npix);
    t_fill_normal(h, npix, 1.0f, 32);
    s->rb.n_crops = 1; s->rb.crop_pixels = dev(s, h, npix);
    const float box[5] = {0, 3.5f, 5.0f, 27.0f, 20.0f};
    s->rb.n_boxes = 1; s->rb.boxes = dev(s, box, 5);
    t_fill_normal(h, 3 * 32 * 40, 1.0f, 33);
    s->rb.n_audio = 1; s->rb.fbank = dev(s, h, 3 * 32 * 40);
    refs_offsets o = refs_rows(s->r, &s->rb);
    const refs_markers mk = {.image = IMG, .im_start = IM_S, .im_end = IM_E, .ref_start = REF_S, .ref_end = REF_E,
                             .audio_start = AU_S, .audio_end = AU_E};
    const int q0[] = {BOS, 3, IMG, 4, REF_S, REF_E, 5, 6, SEG, EOS};
    const int q1[] = {BOS, 3, IMG, 7, REF_S, REF_E, 8, SEG, 9, SEG, EOS};
    const int q2[] = {BOS, 3, IMG, 10, AU_S, AU_E, 11, 12, 13, EOS};
    const int *qs[B] = {q0, q1, q2};
    const int ql[B] = {10, 11, 10}, ans[B] = {7, 6, 7};
    const refs_ref rf[B] = {{REFS_BOX, o.box}, {REFS_CROP, o.crop}, {REFS_AUDIO, o.audio}};
    for (int b = 0; b < B; b++) {
        int lab[16], sp[T], sl[T];
        for (int i = 0; i < ql[b]; i++) lab[i] = i >= ans[b] ? qs[b][i] : -100;
        if (refs_splice(qs[b], lab, ql[b], &mk, GT, o.image + b * GT, &rf[b], 1, T, PAD, sp, sl) > T) return -1;
        for (int t = 0; t < T; t++) {
            s->tok[b * T + t] = sp[t];
            s->tgt[b * T + t] = t + 1 < T ? sl[t + 1] : -100;
        }
    }
    const int hw[2 * B] = {13, 11, 9, 15, 7, 5};
    memcpy(s->hw, hw, sizeof hw);
    for (int b = 0; b < B; b++) {
        t_fill_normal(h, C * G2 * G2, 1.0f, 100 + b);
        s->img[b] = dev(s, h, C * G2 * G2);
    }
    const int gb[3] = {0, 1, 1};
    for (int k = 0; k < 3; k++) {
        size_t n = (size_t)hw[2 * gb[k]] * hw[2 * gb[k] + 1];
        t_fill_uniform(h, n, 0, 1, 200 + k);
        for (size_t i = 0; i < n; i++) h[i] = h[i] < 0.4f;
        s->gt[k] = dev(s, h, n);
    }
    free(h);
    return 0;
}

static int setup(step *s, float lambda) { return setup_ex(s, lambda, 0); }

static void teardown(step *s) {
    for (int i = 0; i < s->nbuf; i++) k_free(s->bufs[i]);
    sam_encoder_free(s->enc);
    if (s->dimg) k_free(s->dimg);
    refs_free(s->r);
    anyref_free(s->m);
    params_free(&s->ps);
}

static void test_rows(void) {
    step s;
    if (setup(&s, 0.1f)) { t_fail(PFX "rows setup", "%s", ar_error()); teardown(&s); return; }
    float *feat = refs_forward(s.r, &s.rb);
    refs_offsets o = refs_rows(s.r, &s.rb);
    const size_t R = (size_t)o.total;
    float *f = t_alloc(R * DM);
    k_download(f, feat, R * DM * sizeof(float));
    /* crop: token i = mean of projected crop rows [4i, 4i+4): recompute the
     * projection of the crop alone through a second batch (crop as image 0) */
    refs_batch cb = {.n_images = 1, .pixels = s.rb.crop_pixels};
    float *p = refs_forward(s.r, &cb);
    float *pc = t_alloc((size_t)GT * DM);
    k_download(pc, p, (size_t)GT * DM * sizeof(float));
    double ecrop = 0;
    for (int i = 0; i < 4; i++)
        for (int d = 0; d < DM; d++) {
            double m = 0;
            for (int j = 4 * i; j < 4 * i + 4; j++) m += pc[j * DM + d];
            ecrop = fmax(ecrop, fabs(m / 4 - f[(size_t)(o.crop + i) * DM + d]));
        }
    /* box (3.5,5)-(27,20) at scale 4/32, aligned: bin (py,px) samples 2x2 points;
     * recompute with a host bilinear on image 0's projected grid */
    const float *g = f;   /* image 0 rows [16, DM], grid 4x4 */
    const double sc = 4.0 / 32, x1 = 3.5 * sc - 0.5, y1 = 5.0 * sc - 0.5, x2 = 27.0 * sc - 0.5, y2 = 20.0 * sc - 0.5;
    const double bw = (x2 - x1) / 2, bh = (y2 - y1) / 2;
    double ebox = 0;
    for (int py = 0; py < 2; py++)
        for (int px = 0; px < 2; px++)
            for (int d = 0; d < DM; d++) {
                double acc = 0;
                for (int iy = 0; iy < 2; iy++)
                    for (int ix = 0; ix < 2; ix++) {
                        double y = y1 + py * bh + (iy + 0.5) * bh / 2, x = x1 + px * bw + (ix + 0.5) * bw / 2;
                        if (y < -1 || y > 4 || x < -1 || x > 4) continue;
                        y = y < 0 ? 0 : y; x = x < 0 ? 0 : x;
                        int y0 = (int)y, x0 = (int)x, yb, xb;
                        if (y0 >= 3) { y0 = yb = 3; y = 3; } else yb = y0 + 1;
                        if (x0 >= 3) { x0 = xb = 3; x = 3; } else xb = x0 + 1;
                        double ly = y - y0, lx = x - x0;
                        acc += (1 - ly) * (1 - lx) * g[(y0 * 4 + x0) * DM + d] + (1 - ly) * lx * g[(y0 * 4 + xb) * DM + d] +
                               ly * (1 - lx) * g[(yb * 4 + x0) * DM + d] + ly * lx * g[(yb * 4 + xb) * DM + d];
                    }
                ebox = fmax(ebox, fabs(acc / 4 - f[(size_t)(o.box + py * 2 + px) * DM + d]));
            }
    /* precomputed encoder outputs give the same rows */
    float *clipd = k_malloc((size_t)4 * GT * CW * sizeof(float)), *embd = k_malloc((size_t)3 * 48 * sizeof(float));
    /* CLIP of the three images and the crop, ImageBind of the three clips, via the modules */
    refs_cfg rc = tiny_refs();
    (void)rc;
    refs_batch only_img = {.n_images = 3, .pixels = s.rb.pixels};
    refs_forward(s.r, &only_img);   /* the CLIP features live in the projector input; recompute directly: */
    clip_vit *cv = clip_vit_create(&rc.clip, &s.ps, 3);
    float *cf = clip_vit_forward(cv, s.rb.pixels, 3);
    k_copy(clipd, cf, (size_t)3 * GT * CW * sizeof(float));
    cf = clip_vit_forward(cv, s.rb.crop_pixels, 1);
    k_copy(clipd + (size_t)3 * GT * CW, cf, (size_t)GT * CW * sizeof(float));
    imagebind_audio *ab = imagebind_audio_create(&rc.audio, &s.ps, 3);
    imagebind_audio_encode(ab, s.rb.fbank, 3, embd, NULL);
    refs_batch pre = s.rb;
    pre.pixels = NULL; pre.crop_pixels = NULL; pre.fbank = NULL;
    pre.image_clip = clipd; pre.crop_clip = clipd + (size_t)3 * GT * CW; pre.audio_emb = embd;
    float *f2d = refs_forward(s.r, &pre);
    float *f2 = t_alloc(R * DM);
    if (f2d) k_download(f2, f2d, R * DM * sizeof(float));
    double epre = f2d ? t_max_rel_err(f2, f, R * DM) : 1;
    t_check(ecrop < 1e-5 && ebox < 1e-5 && epre == 0.0, PFX "feature rows",
            "%d rows (images 48, box 4, crop 4, audio 3): crop pooling max err %.1e, box RoIAlign vs host bilinear "
            "%.1e, precomputed CLIP/ImageBind outputs rel err %.1e (bitwise expected)", o.total, ecrop, ebox, epre);
    clip_vit_free(cv);
    imagebind_audio_free(ab);
    k_free(clipd); k_free(embd);
    free(f); free(pc); free(f2);
    teardown(&s);
}

static void test_fd(float lambda) {
    step s;
    char nm[200];
    if (setup(&s, lambda)) { t_fail(PFX "fd setup", "%s", ar_error()); teardown(&s); return; }
    params_zero_grad(&s.ps);
    double tot = run_step(&s, 1);
    /* d total / d feat, checked by perturbing feat rows through a wrapper */
    refs_offsets o = refs_rows(s.r, &s.rb);
    float *df = t_alloc((size_t)o.total * DM);
    k_download(df, refs_dfeat(s.r), (size_t)o.total * DM * sizeof(float));
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < s.ps.n; i++) {
        const ar_param *p = &s.ps.p[i];
        if (!p->trainable) continue;
        const int want = strstr(p->name, "mm_projector") || strstr(p->name, "audio_projector") ||
                         strstr(p->name, "embed_tokens") || strstr(p->name, "layers.0.self_attn.q_proj.lora") ||
                         strstr(p->name, "text_hidden_fcs.0.0.weight");
        if (!want) continue;
        snprintf(nm, sizeof nm, PFX "lambda %g grad %s", (double)lambda, p->name);
        double e = t_gradcheck_kinked(nm, loss_cb, &s, s.ps.w + p->off, s.ps.g + p->goff, p->numel, 2e-3f, 3e-2, 8);
        worst = fmax(worst, e);
        checked++;
    }
    double nz[4] = {0, 0, 0, 0};
    const int starts[5] = {o.image, o.box, o.crop, o.audio, o.total};
    for (int k = 0; k < 4; k++)
        for (size_t j = (size_t)starts[k] * DM; j < (size_t)starts[k + 1] * DM; j++) nz[k] += fabs(df[j]);
    snprintf(nm, sizeof nm, PFX "lambda %g step", (double)lambda);
    t_check(isfinite(tot) && checked == 10 && nz[0] > 0 && nz[1] > 0 && nz[2] > 0 && nz[3] > 0, nm,
            "total %.4f; %d tensors by finite differences (worst %.1e); |d feat| images %.3g boxes %.3g crops %.3g "
            "audio %.3g", tot, checked, worst, nz[0], nz[1], nz[2], nz[3]);
    free(df);
    teardown(&s);
}

/* Trainable encoders (small models from scratch): the whole step's gradient
 * reaches the CLIP tower (through the projector, for image, box and crop rows)
 * and the SAM image encoder (through the decoder's image-embedding gradient).
 * Steps h, h/2, h/4 (the best kept), h = 2e-3, except CLIP fc1: its gradient
 * is small (scale 4e-3) against the float32 loss's rounding, so at 2e-3 the
 * difference quotient's noise was 1-5% and the check passed or failed with
 * the build's summation order (the sanitizer build failed it); h = 8e-3
 * there (the patch embedding, behind the crops' bilinear kinks, needs the
 * small steps). */
static void test_fd_trainable_encoders(void) {
    step s;
    char nm[200];
    if (setup_ex(&s, 0.1f, 1)) { t_fail(PFX "trainable setup", "%s", ar_error()); teardown(&s); return; }
    params_zero_grad(&s.ps);
    double tot = run_step(&s, 1);
    const char *names[] = {"vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight",
                           "vision_model.encoder.layers.0.mlp.fc1.weight", "vision_model.pre_layrnorm.weight",
                           "image_encoder.patch_embed.proj.weight", "image_encoder.blocks.0.attn.rel_pos_h",
                           "image_encoder.blocks.1.mlp.lin2.weight", "image_encoder.neck.3.bias"};
    int n = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        const ar_param *p = params_find(&s.ps, names[k]);
        if (!p || !p->trainable) { t_fail(PFX "trainable encoders", "%s missing or frozen", names[k]); continue; }
        snprintf(nm, sizeof nm, PFX "trainable grad %s", p->name);
        const float h = strstr(p->name, "mlp.fc1") ? 8e-3f : 2e-3f;
        t_gradcheck_kinked(nm, loss_cb, &s, s.ps.w + p->off, s.ps.g + p->goff, p->numel, h, 3e-2, 8);
        n++;
    }
    t_check(isfinite(tot) && n == 8, PFX "trainable encoders step", "total %.4f; %d CLIP and SAM encoder tensors checked", tot, n);
    teardown(&s);
}

int main(void) {
    test_splice();
    test_splice_conversation();
    test_rows();
    test_fd(0.1f);
    test_fd(0.0f);
    test_fd_trainable_encoders();
    return t_exit_code();
}
