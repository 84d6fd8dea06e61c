/* train/grounding.c — model.kind = anyref in `anyref train` (see run.h): the
 * step's configuration from the keys and the grounding data, its batches
 * (image embeddings, masks, images and references spliced as tokens), the
 * frozen or trainable image encoders, the feature cache, validation with
 * gIoU / cIoU, and `anyref cache`. */
#include "train/train.h"
#include "train/run.h"
#include "checkpoints/safetensors.h"
#include "core/dist.h"
#include "core/error.h"
#include "core/fs.h"
#include "kernels/kernels.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sample b of the rows read at Tf (shifted targets) spliced into r->tok/tgt
 * at T: labels[t] = targets[t-1], splice, shift back. */
static int splice_sample(run_t *r, int b, int image_row, const refs_ref *rf, int n_refs) {
    const int *tk = r->raw_tok + (size_t)b * r->Tf, *tg = r->raw_tgt + (size_t)b * r->Tf;
    r->lab[0] = -100;
    for (int t = 1; t < r->Tf; t++) r->lab[t] = tg[t - 1];
    int n = refs_splice(tk, r->lab, r->Tf, &r->mk, refs_image_tokens(r->refs), image_row, rf, n_refs, r->T, 0,
                        r->sp_tok, r->sp_lab);
    if (n < 0) return -1;
    int *ot = r->tok + (size_t)b * r->T, *og = r->tgt + (size_t)b * r->T;
    for (int t = 0; t < r->T; t++) {
        ot[t] = r->sp_tok[t];
        og[t] = t + 1 < r->T ? r->sp_lab[t + 1] : -100;
    }
    return 0;
}

/* The frozen encoders the trainer runs (and caches). */
enum { ENC_CLIP, ENC_AUDIO, ENC_SAM };

/* Input and output sizes of encoder `e` per input; shape of one output. */
static void enc_sizes(const run_t *r, int e, size_t *per_in, int *shape, int *ndim) {
    if (e == ENC_SAM) {
        *per_in = r->sam_n;
        shape[0] = r->ac.dec.dim; shape[1] = r->ac.dec.H; shape[2] = r->ac.dec.W; *ndim = 3;
    } else if (e == ENC_AUDIO) {
        *per_in = r->fbank_n;
        shape[0] = REFS_AUDIO_CLIPS; shape[1] = refs_audio_dim(r->refs); *ndim = 2;
    } else {
        *per_in = r->clip_n;
        shape[0] = refs_image_tokens(r->refs); shape[1] = refs_clip_width(r->refs); *ndim = 2;
    }
}

/* Runs encoder e on n inputs in[n, per_in] into out[n, per_out] (backend). */
static int enc_run(run_t *r, int e, const float *in, int n, float *out, size_t per_out) {
    if (e == ENC_AUDIO) return refs_encode_audio(r->refs, in, n * REFS_AUDIO_CLIPS, out);
    if (e == ENC_CLIP) return refs_encode_images(r->refs, in, n, out);
    const float *f = sam_encoder_forward(r->senc, in, n);
    if (!f) return -1;
    k_copy(out, f, (size_t)n * per_out * sizeof(float));
    return 0;
}

/* The frozen encoder's outputs for n inputs, through the feature cache when
 * data.cache is set: host_in[i] (hashed: the key) is also at d_in + i * per_in
 * (backend); d_out [n, per_out] receives each output, from the cache when it
 * holds it, else computed (only the misses, in one batch) and stored.
 * 0, or -1 + ar_error. */
static int cached_encode(run_t *r, int e, const float *const *host_in, int n, const float *d_in, float *d_out) {
    size_t per_in;
    int shape[3], ndim;
    enc_sizes(r, e, &per_in, shape, &ndim);
    size_t per_out = 1;
    for (int i = 0; i < ndim; i++) per_out *= (size_t)shape[i];
    const int trainable = (e == ENC_SAM && r->scfg.trainable) || (e == ENC_CLIP && r->rcfg.clip.trainable);
    if (!r->fc || trainable) return enc_run(r, e, d_in, n, d_out, per_out);
    const fc_hash enc = e == ENC_AUDIO ? r->enc_audio : e == ENC_SAM ? r->enc_sam : r->enc_clip;
    int nm = 0;
    for (int i = 0; i < n; i++) {
        fc_hash key = fc_key_of(host_in[i], per_in * sizeof(float));
        int rc = fc_get(r->fc, enc, key, shape, ndim, r->h_feat);
        if (rc < 0) return -1;
        if (rc == 1) k_upload(d_out + (size_t)i * per_out, r->h_feat, per_out * sizeof(float));
        else r->miss[nm++] = i;
    }
    if (!nm) return 0;
    for (int j = 0; j < nm; j++)
        k_copy(r->d_scr_in + (size_t)j * per_in, d_in + (size_t)r->miss[j] * per_in, per_in * sizeof(float));
    if (enc_run(r, e, r->d_scr_in, nm, r->d_scr_out, per_out)) return -1;
    for (int j = 0; j < nm; j++) {
        const int i = r->miss[j];
        k_copy(d_out + (size_t)i * per_out, r->d_scr_out + (size_t)j * per_out, per_out * sizeof(float));
        k_download(r->h_feat, r->d_scr_out + (size_t)j * per_out, per_out * sizeof(float));
        if (fc_put(r->fc, enc, fc_key_of(host_in[i], per_in * sizeof(float)), r->h_feat, shape, ndim))
            log_warn("feature cache: %s (continuing without storing this entry)", ar_error());
    }
    return 0;
}

/* The batch's images and references into backend memory, the feature rows
 * (model/references.h) and every sample spliced; sets in->feat. */
static int prepare_refs(run_t *r, const gds_batch *gb, anyref_batch *in) {
    int nI = 0, nB = 0, nC = 0, nA = 0;
    const float *hin_img[gb->B > 0 ? gb->B : 1], *hin_crop[gb->B > 0 ? gb->B : 1], *hin_aud[gb->B > 0 ? gb->B : 1];
    for (int b = 0; b < gb->B; b++) {
        r->slot_img[b] = -1;
        if (gb->clip[b]) {
            k_upload(r->d_clip + (size_t)nI * r->clip_n, gb->clip[b], r->clip_n * sizeof(float));
            hin_img[nI] = gb->clip[b];
            r->slot_img[b] = nI++;
        }
        const int k = gb->ref_kind[b];
        if (k == GDS_REF_BOX) {
            float *h = r->h_boxes + 5 * (size_t)nB++;
            h[0] = (float)r->slot_img[b];
            memcpy(h + 1, gb->ref_box + 4 * b, 4 * sizeof(float));
        } else if (k == GDS_REF_CROP) {
            hin_crop[nC] = gb->ref_data[b];
            k_upload(r->d_crop + (size_t)nC++ * r->clip_n, gb->ref_data[b], r->clip_n * sizeof(float));
        } else if (k == GDS_REF_AUDIO) {
            if (!r->rcfg.use_audio) return ar_errorf("an audio reference, but audio.embed_dim = 0 (no audio encoder)");
            hin_aud[nA] = gb->ref_data[b];
            k_upload(r->d_fbank + (size_t)nA++ * r->fbank_n, gb->ref_data[b], r->fbank_n * sizeof(float));
        }
    }
    if (nB) k_upload(r->d_boxes, r->h_boxes, (size_t)5 * nB * sizeof(float));
    refs_batch rb = {.n_images = nI, .pixels = r->d_clip, .n_boxes = nB, .boxes = r->d_boxes, .n_crops = nC,
                     .crop_pixels = r->d_crop, .n_audio = nA, .fbank = r->d_fbank};
    if (r->fc && !r->rcfg.clip.trainable) {   /* the frozen CLIP outputs through the feature cache */
        if ((nI && cached_encode(r, ENC_CLIP, hin_img, nI, r->d_clip, r->d_img_feat)) ||
            (nC && cached_encode(r, ENC_CLIP, hin_crop, nC, r->d_crop, r->d_crop_feat)))
            return -1;
        rb.image_clip = r->d_img_feat;
        rb.crop_clip = r->d_crop_feat;
    }
    if (r->fc && nA) {
        if (cached_encode(r, ENC_AUDIO, hin_aud, nA, r->d_fbank, r->d_aud_feat)) return -1;
        rb.audio_emb = r->d_aud_feat;
    }
    const refs_offsets o = refs_rows(r->refs, &rb);
    const int G = refs_image_tokens(r->refs);
    int kb = 0, kc = 0, ka = 0;
    for (int b = 0; b < r->B; b++) {
        refs_ref rf = {REFS_BOX, 0};
        int nref = 0;
        if (b < gb->B) {
            const int k = gb->ref_kind[b];
            if (k == GDS_REF_BOX) { rf.kind = REFS_BOX; rf.row = o.box + REFS_BOX_ROWS * kb++; nref = 1; }
            else if (k == GDS_REF_CROP) { rf.kind = REFS_CROP; rf.row = o.crop + REFS_CROP_ROWS * kc++; nref = 1; }
            else if (k == GDS_REF_AUDIO) { rf.kind = REFS_AUDIO; rf.row = o.audio + REFS_AUDIO_CLIPS * ka++; nref = 1; }
        }
        const int img_row = b < gb->B && r->slot_img[b] >= 0 ? o.image + r->slot_img[b] * G : -1;
        if (splice_sample(r, b, img_row, &rf, nref)) return ar_error_prefix("sample %d: ", b);
    }
    in->feat = NULL; in->n_feat = 0; in->dfeat = NULL;
    if (o.total) {
        if (!(in->feat = refs_forward(r->refs, &rb))) return -1;
        in->n_feat = o.total;
        in->dfeat = refs_dfeat(r->refs);
    }
    return 0;
}

/* The data batch's embeddings and masks into backend memory; fills in. */
int grounding_upload(run_t *r, const gds_batch *gb, anyref_batch *in) {
    memset(in, 0, sizeof *in);
    for (int b = 0; b < r->B; b++) r->img_ptr[b] = NULL;
    if (r->use_senc) {   /* SAM image embeddings by the encoder (through the cache) */
        const float *hin[gb->B > 0 ? gb->B : 1];
        int slot[gb->B > 0 ? gb->B : 1], n = 0;
        for (int b = 0; b < gb->B; b++) {
            if (!gb->sam_pixels[b]) continue;
            k_upload(r->d_sam_in + (size_t)n * r->sam_n, gb->sam_pixels[b], r->sam_n * sizeof(float));
            hin[n] = gb->sam_pixels[b];
            slot[n++] = b;
        }
        if (n && cached_encode(r, ENC_SAM, hin, n, r->d_sam_in, r->d_img)) return -1;
        r->n_senc = n;
        for (int b = 0; b < r->B; b++) if (r->dimg_ptr) r->dimg_ptr[b] = NULL;
        for (int j = 0; j < n; j++) {
            r->img_ptr[slot[j]] = r->d_img + (size_t)j * r->chw;
            if (r->dimg_ptr) r->dimg_ptr[slot[j]] = r->d_dimg + (size_t)j * r->chw;
        }
        if (r->d_dimg && n) {   /* trainable encoder: anyref accumulates d embeddings here */
            k_zero(r->d_dimg, (size_t)n * r->chw * sizeof(float));
            in->dimage_emb = r->dimg_ptr;
        }
    }
    for (int b = 0; b < gb->B; b++) {
        if (!gb->img[b]) continue;
        k_upload(r->d_img + (size_t)b * r->chw, gb->img[b], r->chw * sizeof(float));
        r->img_ptr[b] = r->d_img + (size_t)b * r->chw;
    }
    for (int k = 0; k < gb->n_masks; k++) {
        const int b = gb->mask_sample[k];
        const int h = gb->mask_hw[2 * b] > 0 ? gb->mask_hw[2 * b] : gb->orig_hw[2 * b];
        const int w = gb->mask_hw[2 * b] > 0 ? gb->mask_hw[2 * b + 1] : gb->orig_hw[2 * b + 1];
        k_upload(r->d_mask + (size_t)k * r->mask_cap, gb->masks[k], (size_t)h * w * sizeof(float));
        r->mask_ptr[k] = r->d_mask + (size_t)k * r->mask_cap;
    }
    in->tokens = r->tok; in->targets = r->tgt;
    in->image_emb = r->img_ptr; in->orig_hw = gb->orig_hw; in->mask_hw = gb->mask_hw;
    in->gt_masks = gb->n_masks ? r->mask_ptr : NULL;
    return r->refs ? prepare_refs(r, gb, in) : 0;
}

/* Row hook (gds_configure): with splicing, every [SEG] must still be within
 * the model's T (train.seq_len) after the image and reference tokens. */
static int splice_hook(void *ctx, int64_t row, const int *tokens, const int *targets, int T, int ref_kind, int n_masks) {
    run_t *r = ctx;
    (void)row; (void)targets;
    const int G = refs_image_tokens(r->refs);
    int len = 0, segs = 0;
    for (int t = 0; t < T; t++) {
        const int tk = tokens[t];
        const int extra = tk == r->mk.image ? G + 1 :
                          (t + 1 < T && ((tk == r->mk.ref_start && tokens[t + 1] == r->mk.ref_end) ||
                                         (tk == r->mk.audio_start && tokens[t + 1] == r->mk.audio_end)))
                              ? (ref_kind == GDS_REF_AUDIO ? REFS_AUDIO_CLIPS : REFS_BOX_ROWS) : 0;
        len += 1 + extra;
        if (tk == r->ac.seg.seg_token && len <= r->T) segs++;
    }
    if (segs != n_masks) {
        ar_errorf("after splicing the image and reference tokens only %d of its %d [SEG]s lie within train.seq_len = %d",
                  segs, n_masks, r->T);
        return 1;
    }
    return 0;
}

/* Validation of the AnyRef step over the validation file in file order (at
 * most eval_batches batches, one pass, broken rows skipped): the mean CE per
 * target, the mean BCE and Dice per mask, the total with the loss weights,
 * and the mask metrics of SPEC 4 (logit > 0 against the ground truth):
 * gIoU = mean per-mask IoU (empty vs empty = 1), cIoU = Σ I / Σ U.
 * Batch i is rows [i B, (i + 1) B) (a broken row leaves it short); several
 * ranks (core/dist.h) each run batches rank, rank + nranks, ... and the sums
 * are added over the ranks (every rank gets the totals; the order of the
 * floating-point sums is then not one process's).
 * out: total, ce, bce, dice, giou, ciou (NaN without validation data). */
void grounding_validate(run_t *r, int batches, double out[6]) {
    for (int i = 0; i < 6; i++) out[i] = NAN;
    grounding_dataset *g = r->data.gval;
    if (!g || batches <= 0) return;
    anyref_set_training(r->ar, 0);
    const int64_t rows = gds_rows(g);
    const int R = r->nranks > 1 ? r->nranks : 1;
    double ce = 0, bce = 0, dice = 0, iou = 0, inter = 0, uni = 0;
    long ce_n = 0, masks = 0;
    int failed = 0;
    for (int bi = r->rank % R; bi < batches && (int64_t)bi * r->B < rows; bi += R) {
        int filled = 0;
        int64_t next = (int64_t)bi * r->B;
        const int64_t stop = next + r->B < rows ? next + r->B : rows;
        while (next < stop) {
            int *rt = r->refs ? r->raw_tok : r->tok, *rg = r->refs ? r->raw_tgt : r->tgt;
            int *tk = rt + (size_t)filled * r->Tf, *tg = rg + (size_t)filled * r->Tf;
            int rc = gds_read_row(g, next++, r->Tf, filled, tk, tg);
            if (rc < 0) { log_warn("validation: %s", ar_error()); failed = 1; goto done; }
            if (rc == 0) filled++;
        }
        if (!filled) continue;
        for (int b = filled; b < r->B; b++) {   /* a short last batch: padding rows without targets */
            int *rt = r->refs ? r->raw_tok : r->tok, *rg = r->refs ? r->raw_tgt : r->tgt;
            for (int t = 0; t < r->Tf; t++) { rt[(size_t)b * r->Tf + t] = 0; rg[(size_t)b * r->Tf + t] = -100; }
        }
        gds_batch gb;
        gds_finish_batch(g, filled, &gb);
        anyref_batch in;
        if (grounding_upload(r, &gb, &in)) { log_warn("validation: %s", ar_error()); failed = 1; goto done; }
        anyref_losses L;
        float l = anyref_forward(r->ar, &in, 0, &L);
        if (!isfinite(l)) { log_warn("validation: %s", isnan(l) ? ar_error() : "loss is not finite"); failed = 1; goto done; }
        ce += (double)L.ce * L.ce_count; ce_n += L.ce_count;
        for (int k = 0; k < L.n_seg; k++, masks++) {
            int h, w;
            const float *x = anyref_mask_logits(r->ar, k, &h, &w);
            bce += anyref_mask_bce(r->ar)[k];
            dice += anyref_mask_dice(r->ar)[k];
            k_download(r->h_logits, x, (size_t)h * w * sizeof(float));
            const float *y = gb.masks[k];
            double in_k = 0, un_k = 0;
            for (size_t p = 0; p < (size_t)h * w; p++) {
                const int pr = r->h_logits[p] > 0.0f, gt = y[p] > 0.5f;
                in_k += pr & gt; un_k += pr | gt;
            }
            iou += un_k > 0 ? in_k / un_k : 1.0;
            inter += in_k; uni += un_k;
        }
    }
done:
    if (R > 1) {   /* every rank joins the sum, also one that failed */
        double v[9] = {ce, (double)ce_n, bce, dice, iou, inter, uni, (double)masks, failed};
        if (dist_sum(v, 9)) { log_warn("validation: %s", ar_error()); failed = 1; }
        else {
            ce = v[0]; ce_n = (long)v[1]; bce = v[2]; dice = v[3]; iou = v[4]; inter = v[5]; uni = v[6];
            masks = (long)v[7]; failed = v[8] > 0;
        }
    }
    if (failed) goto out;
    if (ce_n) out[1] = ce / ce_n;
    if (masks) {
        out[2] = bce / masks; out[3] = dice / masks; out[4] = iou / masks;
        out[5] = uni > 0 ? inter / uni : 1.0;
    }
    out[0] = (ce_n ? r->ac.ce_w * out[1] : 0) + (masks ? r->ac.bce_w * out[2] + r->ac.dice_w * out[3] : 0);
    if (!ce_n && !masks) out[0] = NAN;
out:
    anyref_set_training(r->ar, 1);
}

/* One branch of the model (SAM's prompt encoder + mask decoder, its image
 * encoder, CLIP + mm_projector, ImageBind audio + audio_projector) from a
 * checkpoint through the name table (checkpoints/names.h: the component's own
 * published names, or AnyRef's / PEFT's); every tensor of the branch must be
 * there (the first absent one is named). key names the config key in messages. */
static int load_branch(run_t *r, const char *path, const char *key, unsigned comps) {
    nm_load_opts o = {.components = comps, .layout = NM_LAYOUT_AUTO, .strict = cfg_bool(r->cfg, "model.strict_load")};
    nm_report rep;
    if (nm_load(path, &r->ps, &o, &rep)) {
        int missing = 0, declared = 0;
        const char *first = NULL;
        for (int c = 0; c < NM_NCOMP; c++) {
            declared += rep.c[c].declared;
            if (rep.c[c].missing && !first) first = rep.c[c].missing_names[0];
            missing += rep.c[c].missing;
        }
        if (missing && !o.strict)
            return ar_errorf("%s: %s lacks %d of the model's %d tensors of this part, e.g. '%s'", key, path, missing,
                             declared, first);
        return ar_error_prefix("%s: ", key);
    }
    train_log_names_report(key, path, &rep);
    return 0;
}

/* clip.*, projector.* and audio.* -> rc (clip, proj, use_audio, audio) for an
 * LLM of width llm_dim; fbank_h > 0: the audio input's size (else
 * ImageBind's). Shared by the set-up below and the memory plan. 0, or -1 +
 * ar_error. */
/* <section>.frozen_weights (fp32 | bf16 | fp16) -> *half (0, or 1 bf16 / 2 fp16:
 * the LLAMA_FROZEN_* values the encoders' SAM_ENC_HALF_*, CLIP_HALF_* and
 * IB_HALF_* share).
 * A trainable encoder stays fp32, and the registry holds one 16-bit format, so
 * every 16-bit frozen_weights key must name the same one. */
static int frozen_half_key(const ar_config *cfg, const char *section, int trainable, int *half) {
    static const char *const keys[] = {"model.frozen_weights", "sam_encoder.frozen_weights", "clip.frozen_weights",
                                       "audio.frozen_weights"};
    char key[64];
    snprintf(key, sizeof key, "%s.frozen_weights", section);
    const char *fw = cfg_str(cfg, key);
    if (strcmp(fw, "fp32") && strcmp(fw, "bf16") && strcmp(fw, "fp16"))
        return ar_errorf("config: %s = '%s' (expected fp32, bf16 or fp16)", key, fw);
    *half = !strcmp(fw, "bf16") ? 1 : !strcmp(fw, "fp16") ? 2 : 0;
    if (*half && trainable)
        return ar_errorf("config: %s = %s stores the frozen weights in 16 bits, but %s.trainable = 1 (use fp32)", key,
                         fw, section);
    for (size_t i = 0; *half && i < sizeof keys / sizeof keys[0]; i++) {
        const char *other = cfg_str(cfg, keys[i]);
        if (strcmp(other, "fp32") && strcmp(other, fw))
            return ar_errorf("config: %s = %s but %s = %s: the 16-bit weights share one format", key, fw, keys[i],
                             other);
    }
    return 0;
}

int grounding_refs_cfg(const ar_config *cfg, int llm_dim, int fbank_h, int fbank_w, refs_cfg *rc) {
    memset(rc, 0, sizeof *rc);
    clip_vit_cfg c = {.image_size = (int)cfg_int(cfg, "clip.image_size"), .patch = (int)cfg_int(cfg, "clip.patch"),
                      .channels = 3, .width = (int)cfg_int(cfg, "clip.width"), .layers = (int)cfg_int(cfg, "clip.layers"),
                      .heads = (int)cfg_int(cfg, "clip.heads"), .mlp_dim = (int)cfg_int(cfg, "clip.mlp_dim"),
                      .eps = 1e-5f, .select_layer = (int)cfg_int(cfg, "clip.select_layer"),
                      .trainable = cfg_bool(cfg, "clip.trainable")};
    c.checkpoint_layers = c.trainable && cfg_bool(cfg, "clip.checkpoint");
    if (frozen_half_key(cfg, "clip", c.trainable, &c.frozen_half)) return -1;
    const char *act = cfg_str(cfg, "clip.act");
    if (!strcmp(act, "quick_gelu")) c.act = CLIP_ACT_QUICK_GELU;
    else if (!strcmp(act, "gelu")) c.act = CLIP_ACT_GELU;
    else return ar_errorf("config: clip.act = '%s' (expected quick_gelu or gelu)", act);
    rc->clip = c;
    if (mm_projector_type_from_name(cfg_str(cfg, "projector.type"), &rc->proj.type)) return ar_error_prefix("config: projector.type: ");
    rc->proj.in_dim = c.width;
    rc->proj.out_dim = llm_dim;
    rc->proj.trainable = cfg_bool(cfg, "projector.trainable");
    const int ad = (int)cfg_int(cfg, "audio.embed_dim");
    if (ad > 0) {
        imagebind_audio_cfg a = imagebind_audio_huge(llm_dim);
        a.embed_dim = ad; a.depth = (int)cfg_int(cfg, "audio.depth"); a.heads = (int)cfg_int(cfg, "audio.heads");
        a.kernel = (int)cfg_int(cfg, "audio.kernel"); a.stride = (int)cfg_int(cfg, "audio.stride");
        a.out_dim = (int)cfg_int(cfg, "audio.out_dim");
        if (frozen_half_key(cfg, "audio", 0, &a.frozen_half)) return -1;   /* the encoder is always frozen */
        if (fbank_h > 0) { a.n_mels = fbank_h; a.target_len = fbank_w; }
        rc->use_audio = 1;
        rc->audio = a;
    }
    return 0;
}

/* Images and references as tokens (clip.image_size > 0): the encoders' config
 * from the keys, checked against what the data holds. */
static int refs_setup(run_t *r, const ar_config *cfg) {
    gds_mm_info mm;
    gds_mm(r->data.gtrain, &mm);
    const int S = (int)cfg_int(cfg, "clip.image_size");
    if (S <= 0) {
        if (mm.clip_S > 0 || mm.has_refs)
            log_warn("%s holds CLIP inputs or references, but clip.image_size = 0: they are ignored, and the image "
                     "and reference marker tokens reach the LLM as plain tokens", cfg_str(cfg, "data.train"));
        return 0;
    }
    if (mm.clip_S != S)
        return ar_errorf("config: clip.image_size = %d, but %s has %s", S, cfg_str(cfg, "data.train"),
                         mm.clip_S ? "CLIP inputs of another size" : "no /clip_pixels");
    refs_cfg *rc = &r->rcfg;
    if (cfg_int(cfg, "audio.embed_dim") > 0 && mm.n_audio > 0 && (mm.fbank_h <= 0 || mm.fbank_w <= 0))
        return ar_errorf("data: bad fbank size");
    if (grounding_refs_cfg(cfg, r->mc.dim, mm.n_audio > 0 ? mm.fbank_h : 0, mm.fbank_w, rc)) return -1;
    if (rc->use_audio) {
        rc->max_audio = r->B;
        r->fbank_n = (size_t)REFS_AUDIO_CLIPS * rc->audio.n_mels * rc->audio.target_len;
    }
    rc->max_images = rc->max_boxes = rc->max_crops = r->B;
    r->clip_n = (size_t)3 * S * S;
    r->mk = (refs_markers){.image = mm.image_token, .im_start = mm.im_start, .im_end = mm.im_end,
                           .ref_start = mm.ref_start, .ref_end = mm.ref_end, .audio_start = mm.audio_start,
                           .audio_end = mm.audio_end};
    gds_set_hook(r->data.gtrain, splice_hook, r);
    if (r->data.gval) gds_set_hook(r->data.gval, splice_hook, r);
    return 1;   /* refs in use */
}

/* seg.lambda, sam.* (the mask decoder and the post-processing's side) and
 * loss.* -> *ac: shared by the set-up below and the memory plan. */
void grounding_step_keys(const ar_config *cfg, anyref_cfg *ac) {
    ac->seg.lambda = (float)cfg_float(cfg, "seg.lambda");
    ac->dec.dim = (int)cfg_int(cfg, "sam.dim");
    ac->dec.H = ac->dec.W = (int)cfg_int(cfg, "sam.grid");
    ac->dec.depth = (int)cfg_int(cfg, "sam.depth");
    ac->dec.heads = (int)cfg_int(cfg, "sam.heads");
    ac->dec.mlp_dim = (int)cfg_int(cfg, "sam.mlp_dim");
    ac->dec.iou_hidden = (int)cfg_int(cfg, "sam.iou_hidden");
    ac->img_size = (int)cfg_int(cfg, "sam.img_size");
    ac->dec_preset = cfg_str(cfg, "sam.trainable");
    ac->ce_w = (float)cfg_float(cfg, "loss.ce_weight");
    ac->bce_w = (float)cfg_float(cfg, "loss.bce_weight");
    ac->dice_w = (float)cfg_float(cfg, "loss.dice_weight");
}

/* sam_encoder.model and, for custom, its size keys -> *e; *present = 0 for
 * "none". Shared by the set-up below and the memory plan (train/plan.c). */
int grounding_sam_encoder_cfg(const ar_config *cfg, sam_encoder_cfg *e, int *present) {
    const char *m = cfg_str(cfg, "sam_encoder.model");
    *present = 0;
    if (!strcmp(m, "none")) return 0;
    if (!strcmp(m, "vit_b")) *e = sam_encoder_vit_b(NULL);
    else if (!strcmp(m, "vit_l")) *e = sam_encoder_vit_l(NULL);
    else if (!strcmp(m, "vit_h")) *e = sam_encoder_vit_h(NULL);
    else if (!strcmp(m, "custom")) {
        *e = sam_encoder_vit_b(NULL);
        e->img_size = (int)cfg_int(cfg, "sam_encoder.img_size"); e->patch = (int)cfg_int(cfg, "sam_encoder.patch");
        e->dim = (int)cfg_int(cfg, "sam_encoder.dim"); e->depth = (int)cfg_int(cfg, "sam_encoder.depth");
        e->heads = (int)cfg_int(cfg, "sam_encoder.heads"); e->window = (int)cfg_int(cfg, "sam_encoder.window");
        e->mlp_dim = 4 * e->dim;
        if (e->depth < 1 || e->depth > SAM_ENC_MAX_DEPTH)
            return ar_errorf("config: sam_encoder.depth = %d (expected 1..%d)", e->depth, SAM_ENC_MAX_DEPTH);
        memset(e->global_attn, 0, sizeof e->global_attn);
        char list[256];
        snprintf(list, sizeof list, "%s", cfg_str(cfg, "sam_encoder.global"));
        for (char *sv = NULL, *tk = strtok_r(list, ", ", &sv); tk; tk = strtok_r(NULL, ", ", &sv)) {
            char *end;
            long b = strtol(tk, &end, 10);
            if (*end || b < 0 || b >= e->depth)
                return ar_errorf("config: sam_encoder.global: '%s' is not a block index in 0..%d", tk, e->depth - 1);
            e->global_attn[b] = 1;
        }
    } else {
        return ar_errorf("config: sam_encoder.model = '%s' (expected none, vit_b, vit_l, vit_h or custom)", m);
    }
    e->trainable = cfg_bool(cfg, "sam_encoder.trainable");
    e->checkpoint_blocks = e->trainable && cfg_bool(cfg, "sam_encoder.checkpoint");
    if (frozen_half_key(cfg, "sam_encoder", e->trainable, &e->frozen_half)) return -1;
    *present = 1;
    return 0;
}

/* sam_encoder.model != none: the SAM image encoder computes the image
 * embeddings from the data's /sam_pixels. */
static int senc_setup(run_t *r, const ar_config *cfg) {
    sam_encoder_cfg *e = &r->scfg;
    int present = 0;
    if (grounding_sam_encoder_cfg(cfg, e, &present)) return -1;
    if (!present) return 0;
    e->out_chans = r->ac.dec.dim;
    /* the post-processing's S is the encoder's input side */
    if (r->ac.img_size == 0) r->ac.img_size = e->img_size;
    else if (r->ac.img_size != e->img_size)
        return ar_errorf("config: sam.img_size = %d, but the SAM image encoder takes %d x %d inputs (leave sam.img_size = 0)",
                         r->ac.img_size, e->img_size, e->img_size);
    if (e->patch <= 0 || e->img_size % e->patch || e->img_size / e->patch != r->ac.dec.H)
        return ar_errorf("config: sam_encoder img_size %d / patch %d must give the sam.grid %d", e->img_size, e->patch,
                         r->ac.dec.H);
    gds_mm_info mm;
    gds_mm(r->data.gtrain, &mm);
    if (mm.sam_S != e->img_size)
        return ar_errorf("config: sam_encoder.model = %s needs /sam_pixels of side %d in %s (it has %s)", cfg_str(cfg, "sam_encoder.model"), e->img_size,
                         cfg_str(cfg, "data.train"), mm.sam_S ? "another side" : "none");
    if (gds_use_sam_pixels(r->data.gtrain, 1) || (r->data.gval && gds_use_sam_pixels(r->data.gval, 1))) return -1;
    r->use_senc = 1;
    r->sam_n = (size_t)3 * e->img_size * e->img_size;
    return 0;
}

/* model.kind = anyref: the step's config from the keys and the data. */
int grounding_setup(run_t *r, const ar_config *cfg) {
    anyref_cfg *ac = &r->ac;
    *ac = anyref_default_cfg();
    ac->llm = r->mc;
    grounding_dataset *gt = r->data.gtrain, *gv = r->data.gval;
    int seg = (int)cfg_int(cfg, "seg.token");
    if (seg < 0) seg = gds_seg_token(gt);
    if (seg < 0) return ar_errorf("config: seg.token is -1 and %s has no seg_token_id attribute: set seg.token", cfg_str(cfg, "data.train"));
    if (seg >= r->mc.vocab) return ar_errorf("config: seg.token = %d is outside the vocabulary (%d)", seg, r->mc.vocab);
    ac->seg.seg_token = seg;
    grounding_step_keys(cfg, ac);
    int h, w, k, vh = 0, vw = 0, vk = 0;
    gds_limits(gt, &h, &w, &k);
    if (gv) gds_limits(gv, &vh, &vw, &vk);
    ac->max_orig_h = h > vh ? h : vh;
    ac->max_orig_w = w > vw ? w : vw;
    if (ac->max_orig_h < 1) ac->max_orig_h = 1;
    if (ac->max_orig_w < 1) ac->max_orig_w = 1;
    if (vk > k) k = vk;
    r->max_seg = r->B * (k > 0 ? k : 1);
    if (senc_setup(r, cfg)) return -1;
    if (r->nranks > 1 && cfg_bool(cfg, "dist.share_samples") &&
        (r->dp_live = gds_dp_setup(gt, r->rank, r->nranks, r->accum * r->B)) < 0)
        return -1;
    if (gds_configure(gt, seg, r->B, ac->max_orig_h, ac->max_orig_w) ||
        (gv && gds_configure(gv, seg, r->B, ac->max_orig_h, ac->max_orig_w)))
        return -1;
    r->chw = (size_t)ac->dec.dim * ac->dec.H * ac->dec.W;
    r->mask_cap = (size_t)ac->max_orig_h * ac->max_orig_w;
    int u = refs_setup(r, cfg);
    if (u < 0) return -1;
    r->use_refs = u;
    return 0;
}

/* data.cache: opens (creating) the feature cache and declares the two frozen
 * encoders by the hash of their config and weights, so a cache written with
 * other weights or settings is never read. */
/* Declares encoder `name` in the cache by the hash of its tensors (registry
 * names starting with prefix) and its settings text. */
static int declare_encoder(run_t *r, const char *name, const char *prefix, const char *text, fc_hash *id) {
    if (fc_encoder_id_params(&r->ps, prefix, text, id) || fc_add_encoder(r->fc, *id, name, text))
        return ar_error_prefix("data.cache: ");
    return 0;
}

int grounding_open_cache(run_t *r) {
    const char *path = cfg_str(r->cfg, "data.cache");
    if (!path[0] || (!r->refs && !r->use_senc)) return 0;
    const refs_cfg *rc = &r->rcfg;
    char t[512];
    if (ar_mkdir_parent(path) || !(r->fc = fc_open(path, FC_WRITE | FC_RECREATE))) return ar_error_prefix("data.cache: ");
    size_t in_max = r->sam_n, out_max = r->use_senc ? r->chw : 1;
    if (r->use_senc) {
        const sam_encoder_cfg *e = &r->scfg;
        int n = snprintf(t, sizeof t, "sam_image_encoder img_size=%d patch=%d dim=%d depth=%d heads=%d mlp_dim=%d "
                         "out_chans=%d window=%d ", e->img_size, e->patch, e->dim, e->depth, e->heads,
                         e->mlp_dim, e->out_chans, e->window);
        if (e->frozen_half)   /* its products then follow the GEMM mode: cached embeddings depend on it (with bf16
                               * weights and GEMMs the attention's products are bf16 too: marked, so that entries
                               * cached before they were stay apart) */
            n += snprintf(t + n, sizeof t - n, "frozen_half=%d gemm=%s%s ", e->frozen_half, k_gemm_mode(),
                          e->frozen_half == SAM_ENC_HALF_BF16 && !strcmp(k_gemm_mode(), "bf16") ? " attn=bf16" : "");
        n += snprintf(t + n, sizeof t - n, "global=");
        for (int i = 0; i < e->depth && n < (int)sizeof t - 8; i++)
            if (e->global_attn[i]) n += snprintf(t + n, sizeof t - n, "%d,", i);
        if (declare_encoder(r, "sam_image_encoder", e->prefix, t, &r->enc_sam)) return -1;
    }
    if (r->refs) {
        int n = snprintf(t, sizeof t, "clip_vit image_size=%d patch=%d width=%d layers=%d heads=%d mlp_dim=%d eps=%g "
                         "act=%d select_layer=%d keep_cls=%d", rc->clip.image_size, rc->clip.patch, rc->clip.width,
                         rc->clip.layers, rc->clip.heads, rc->clip.mlp_dim, (double)rc->clip.eps, (int)rc->clip.act,
                         rc->clip.select_layer, rc->clip.keep_cls);
        if (rc->clip.frozen_half)   /* its products then follow the GEMM mode */
            snprintf(t + n, sizeof t - n, " frozen_half=%d gemm=%s", rc->clip.frozen_half, k_gemm_mode());
        if (declare_encoder(r, "clip_vit", "vision_model.", t, &r->enc_clip)) return -1;
        if (rc->use_audio) {
            const imagebind_audio_cfg *a = &rc->audio;
            int n = snprintf(t, sizeof t, "imagebind_audio embed_dim=%d depth=%d heads=%d mlp_ratio=%d kernel=%d "
                             "stride=%d n_mels=%d target_len=%d out_dim=%d logit_scale=%g", a->embed_dim, a->depth,
                             a->heads, a->mlp_ratio, a->kernel, a->stride, a->n_mels, a->target_len, a->out_dim,
                             (double)a->logit_scale);
            if (a->frozen_half)   /* its products then follow the GEMM mode */
                snprintf(t + n, sizeof t - n, " frozen_half=%d gemm=%s", a->frozen_half, k_gemm_mode());
            if (declare_encoder(r, "imagebind_audio", "modality_", t, &r->enc_audio)) return -1;
        }
        const int G = refs_image_tokens(r->refs), W = refs_clip_width(r->refs), A = refs_audio_dim(r->refs);
        const size_t gw = (size_t)G * W, au = (size_t)REFS_AUDIO_CLIPS * (A ? A : 1);
        r->d_img_feat = k_malloc((size_t)r->B * gw * sizeof(float));
        r->d_crop_feat = k_malloc((size_t)r->B * gw * sizeof(float));
        r->d_aud_feat = k_malloc((size_t)r->B * au * sizeof(float));
        if (!r->d_img_feat || !r->d_crop_feat || !r->d_aud_feat) return ar_errorf("out of memory for the feature-cache buffers");
        if (r->clip_n > in_max) in_max = r->clip_n;
        if (r->fbank_n > in_max) in_max = r->fbank_n;
        if (gw > out_max) out_max = gw;
        if (au > out_max) out_max = au;
    }
    r->d_scr_in = k_malloc((size_t)r->B * in_max * sizeof(float));
    r->d_scr_out = k_malloc((size_t)r->B * out_max * sizeof(float));
    r->h_feat = malloc(out_max * sizeof(float));
    r->miss = malloc((size_t)r->B * sizeof(int));
    if (!r->d_scr_in || !r->d_scr_out || !r->h_feat || !r->miss)
        return ar_errorf("out of memory for the feature-cache buffers");
    log_info("data.cache %s: encoders declared:%s%s%s", path, r->use_senc ? " SAM image encoder" : "",
             r->refs ? " CLIP" : "", rc->use_audio ? " ImageBind-audio" : "");
    return 0;
}

static void close_cache(run_t *r) {
    if (r->fc) {
        fc_stats st = fc_get_stats(r->fc);
        log_info("data.cache %s: %lld hits, %lld misses (%lld stale, %lld corrupt), %lld entries written",
                 fc_path(r->fc), (long long)st.hits, (long long)st.misses, (long long)st.stale, (long long)st.corrupt,
                 (long long)st.puts);
        if (fc_close(r->fc)) log_warn("%s", ar_error());
        r->fc = NULL;
    }
    float *dv[] = {r->d_img_feat, r->d_crop_feat, r->d_aud_feat, r->d_scr_in, r->d_scr_out};
    for (int i = 0; i < 5; i++) if (dv[i]) k_free(dv[i]);
    free(r->h_feat); free(r->miss);
}

/* One input kind of one data file through the cache, B inputs at a time. */
static int cache_fill(run_t *r, grounding_dataset *g, int which, int64_t rows, const char *what) {
    const int e = which == GDS_IN_FBANK ? ENC_AUDIO : which == GDS_IN_SAM ? ENC_SAM : ENC_CLIP;
    const size_t per = e == ENC_AUDIO ? r->fbank_n : e == ENC_SAM ? r->sam_n : r->clip_n;
    float *host = malloc((size_t)r->B * per * sizeof(float));
    const float **hp = malloc((size_t)r->B * sizeof(float *));
    float *din = e == ENC_AUDIO ? r->d_fbank : e == ENC_SAM ? r->d_sam_in : which == GDS_IN_CROP ? r->d_crop : r->d_clip;
    float *dout = e == ENC_AUDIO ? r->d_aud_feat : e == ENC_SAM ? r->d_img : r->d_img_feat;
    int rc = host && hp ? 0 : ar_errorf("out of memory");
    ar_progress prog;
    progress_start(&prog, rows, what);
    for (int64_t i0 = 0; !rc && i0 < rows; i0 += r->B) {
        const int n = rows - i0 < r->B ? (int)(rows - i0) : r->B;
        for (int j = 0; j < n && !rc; j++) {
            hp[j] = host + (size_t)j * per;
            rc = gds_read_input(g, which, i0 + j, host + (size_t)j * per);
        }
        if (!rc) {
            k_upload(din, host, (size_t)n * per * sizeof(float));
            rc = cached_encode(r, e, hp, n, din, dout);
        }
        progress_update(&prog, (long)(i0 + n), "");
    }
    progress_finish(&prog);
    free(host); free(hp);
    return rc;
}

int train_cache(const ar_config *cfg) {
    run_t r;
    memset(&r, 0, sizeof r);
    int rc = -1;
    if (run_setup(&r, cfg)) goto out;
    if (!r.refs && !r.use_senc) {
        ar_errorf("anyref cache: nothing to cache: the config runs no frozen encoder (sam_encoder.model, clip.image_size; "
                  "model.kind = anyref, data.kind = grounding)");
        goto out;
    }
    if (!cfg_str(cfg, "data.cache")[0]) { ar_errorf("anyref cache: set data.cache (the cache file)"); goto out; }
    /* a trainable encoder's outputs change every step: never cached */
    const int sam_c = r.use_senc && !r.scfg.trainable, clip_c = r.refs && !r.rcfg.clip.trainable;
    const int audio_c = r.refs && r.rcfg.use_audio;
    if (!sam_c && !clip_c && !audio_c) {
        ar_errorf("anyref cache: nothing to cache: the image encoders are trainable (sam_encoder.trainable, clip.trainable)");
        goto out;
    }
    if (grounding_open_cache(&r)) goto out;
    grounding_dataset *files[2] = {r.data.gtrain, r.data.gval};
    const char *names[2] = {"data.train", "data.val"};
    for (int f = 0; f < 2; f++) {
        if (!files[f]) continue;
        gds_mm_info mm;
        gds_mm(files[f], &mm);
        char what[64];
        snprintf(what, sizeof what, "%s SAM images", names[f]);
        if (sam_c && cache_fill(&r, files[f], GDS_IN_SAM, gds_images(files[f]), what)) goto out;
        snprintf(what, sizeof what, "%s CLIP images", names[f]);
        if (clip_c && cache_fill(&r, files[f], GDS_IN_CLIP, gds_images(files[f]), what)) goto out;
        snprintf(what, sizeof what, "%s crops", names[f]);
        if (clip_c && mm.n_crops && cache_fill(&r, files[f], GDS_IN_CROP, mm.n_crops, what)) goto out;
        snprintf(what, sizeof what, "%s audio", names[f]);
        if (audio_c && mm.n_audio && cache_fill(&r, files[f], GDS_IN_FBANK, mm.n_audio, what)) goto out;
    }
    rc = 0;
out:
    run_teardown(&r);
    return rc;
}

int grounding_declare(run_t *r) {
    if (anyref_declare(&r->ac, &r->ps)) return -1;
    if (r->use_refs && refs_declare(&r->rcfg, &r->ps)) return -1;
    if (r->use_senc && sam_encoder_declare(&r->scfg, &r->ps)) return -1;
    return 0;
}

int grounding_load(run_t *r, const ar_config *cfg) {
    const char *si = cfg_str(cfg, "sam.init");
    if (si[0] && load_branch(r, si, "sam.init", NM_BIT(NM_SAM_PROMPT) | NM_BIT(NM_SAM_DECODER))) return -1;
    const char *sei = r->use_senc ? cfg_str(cfg, "sam_encoder.init") : "";
    if (sei[0] && load_branch(r, sei, "sam_encoder.init", NM_BIT(NM_SAM_ENCODER))) return -1;
    if (r->use_refs) {
        const char *ci = cfg_str(cfg, "clip.init"), *ai = cfg_str(cfg, "audio.init");
        if (ci[0] && load_branch(r, ci, "clip.init", NM_BIT(NM_CLIP) | NM_BIT(NM_MM_PROJECTOR))) return -1;
        if (ai[0] && r->rcfg.use_audio && load_branch(r, ai, "audio.init", NM_BIT(NM_AUDIO) | NM_BIT(NM_AUDIO_PROJECTOR))) return -1;
    }
    return 0;
}

int grounding_create(run_t *r) {
    if (!(r->ar = anyref_create(&r->ac, &r->ps, r->B, r->T, r->max_seg))) return -1;
    r->m = anyref_llama(r->ar);
    plan_shape shape;
    size_t nb[PB_N];   /* the batch buffers' sizes: the table `anyref plan` counts */
    plan_shape_from_run(r, &shape);
    plan_batch_floats(&shape, nb);
    if (r->use_senc && (!(r->senc = sam_encoder_create(&r->scfg, &r->ps, r->B)) ||
                        !(r->d_sam_in = k_malloc(nb[PB_SAM_IN] * sizeof(float)))))
        return r->senc ? ar_errorf("out of memory for the SAM encoder inputs") : -1;
    if (r->use_senc && r->scfg.trainable &&
        (!(r->d_dimg = k_malloc(nb[PB_DIMG] * sizeof(float))) ||
         !(r->dimg_ptr = calloc((size_t)r->B, sizeof(float *)))))
        return ar_errorf("out of memory for the SAM encoder gradients");
    if (r->use_refs) {
        if (!(r->refs = refs_create(&r->rcfg, &r->ps))) return -1;
        const size_t B = (size_t)r->B;
        r->raw_tok = malloc(B * r->Tf * sizeof(int)); r->raw_tgt = malloc(B * r->Tf * sizeof(int));
        r->sp_tok = malloc((size_t)r->T * sizeof(int)); r->sp_lab = malloc((size_t)r->T * sizeof(int));
        r->lab = malloc((size_t)r->Tf * sizeof(int));
        r->slot_img = malloc(B * sizeof(int));
        r->h_boxes = malloc(B * 5 * sizeof(float));
        r->d_clip = k_malloc(nb[PB_CLIP] * sizeof(float));
        r->d_crop = k_malloc(nb[PB_CROP] * sizeof(float));
        r->d_boxes = k_malloc(nb[PB_BOXES] * sizeof(float));
        r->d_fbank = k_malloc(nb[PB_FBANK] * sizeof(float));
        if (!r->raw_tok || !r->raw_tgt || !r->sp_tok || !r->sp_lab || !r->lab || !r->slot_img || !r->h_boxes ||
            !r->d_clip || !r->d_crop || !r->d_boxes || !r->d_fbank)
            return ar_errorf("out of memory for the image and reference buffers");
    }
    r->d_img = k_malloc(nb[PB_IMG] * sizeof(float));
    r->d_mask = k_malloc(nb[PB_MASK] * sizeof(float));
    r->h_logits = malloc(r->mask_cap * sizeof(float));
    r->img_ptr = calloc((size_t)r->B, sizeof(float *));
    r->mask_ptr = calloc((size_t)r->max_seg, sizeof(float *));
    if (!r->d_img || !r->d_mask || !r->h_logits || !r->img_ptr || !r->mask_ptr)
        return ar_errorf("out of memory for the AnyRef batch buffers (%d samples, %d masks of up to %d x %d)", r->B,
                         r->max_seg, r->ac.max_orig_h, r->ac.max_orig_w);
    return 0;
}

void grounding_free(run_t *r) {
    close_cache(r);
    anyref_free(r->ar);
    if (r->d_img) k_free(r->d_img);
    if (r->d_mask) k_free(r->d_mask);
    free(r->h_logits); free(r->img_ptr); free(r->mask_ptr);
    refs_free(r->refs);
    sam_encoder_free(r->senc);
    if (r->d_sam_in) k_free(r->d_sam_in);
    if (r->d_dimg) k_free(r->d_dimg);
    free(r->dimg_ptr);
    free(r->raw_tok); free(r->raw_tgt); free(r->sp_tok); free(r->sp_lab); free(r->lab); free(r->slot_img);
    free(r->h_boxes);
    float *dv[] = {r->d_clip, r->d_crop, r->d_boxes, r->d_fbank};
    for (int i = 0; i < 4; i++) if (dv[i]) k_free(dv[i]);
}

int grounding_attach(run_t *r, grounding_dataset *g) {
    if (r->use_senc && gds_use_sam_pixels(g, 1)) return -1;
    if (gds_configure(g, r->ac.seg.seg_token, r->B, r->ac.max_orig_h, r->ac.max_orig_w)) return -1;
    if (r->use_refs) gds_set_hook(g, splice_hook, r);
    return 0;
}
