/* tests/test_anyref_mm_parity.c — one whole multimodal AnyRef training step
 * (model/references.c + model/anyref.c) against PyTorch float64.
 *
 * tests/ref/anyref_mm_ref.py (`make fixtures`) writes tests/fixtures/anyref_mm.h5
 * from the module references (anyref_step_ref, clip_ref, imagebind_audio_ref,
 * torchvision's roi_align): three images through a tiny CLIP (image 32, patch
 * 8, width 24, 2 layers, select -2, CLS dropped: 16 tokens) and a trainable
 * mlp2x_gelu mm_projector; a box reference (RoIAlign on image 0's projected
 * grid, 4 rows), an image-crop reference (CLIP + projector, strip means, 4
 * rows) and an audio reference (tiny ImageBind, 3 clips, trainable
 * audio_projector, 3 rows); the 59 feature rows spliced into a LLaMA + LoRA
 * (dropout 0.1, the C masks) batch of 3 x 40 tokens; [SEG] head, SAM decoder,
 * CE + BCE + Dice, λ = 0 and 0.1.
 * Checked: the feature rows (forward), the four losses, d total / d feat at
 * the splice (λ = 0.1), and the gradient of every trainable tensor (LoRA,
 * embeddings, fcs, decoder, both projectors), max relative error per tensor.
 * Run from the repo root. */
#include "kernels/kernels.h"
#include "model/anyref.h"
#include "model/references.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"
#include "tests/tiny_anyref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/anyref_mm.h5"
#define PFX "anyref_mm_parity "
#define LOSS_TOL 1e-5
#define GRAD_TOL 1e-4
#define FEAT_TOL 1e-5
enum { V = 24, DM = 16, SEG = 22, C = 16, G = 4, B = 3, T = 40, N = B * T, MAXSEG = 4, R = 59 };
enum { CI = 32, CP = 8, CW = 24, AH = 32, AW = 40 };

static h5fixture FX;

static anyref_cfg step_cfg(float lambda) { return tiny_anyref_cfg(V, T, SEG, lambda, 0.1f); }

static refs_cfg refs_config(void) { return tiny_refs_cfg(3, 1, 1, 1); }

static int check_config(void) {
    const fx_int_attr iv[] = {
        {"vocab", V}, {"dim", DM}, {"layers", 2}, {"heads", 2}, {"kv_heads", 1}, {"mlp_hidden", 24},
        {"lora_rank", 2}, {"lora_targets", 0x7f}, {"B", B}, {"T", T}, {"seg_token", SEG}, {"img_size", 16 * G},
        {"dec_dim", C}, {"dec_heads", 2}, {"dec_H", G}, {"clip_image_size", CI}, {"clip_patch", CP},
        {"clip_width", CW}, {"clip_layers", 2}, {"clip_heads", 4}, {"clip_mlp_dim", 48}, {"clip_select_layer", -2},
        {"clip_tokens", 16}, {"audio_embed_dim", 32}, {"audio_depth", 2}, {"audio_heads", 4}, {"audio_mlp_ratio", 4},
        {"audio_kernel", 8}, {"audio_stride", 6}, {"audio_n_mels", AH}, {"audio_target_len", AW},
        {"audio_out_dim", 48}, {"n_img", 3}, {"n_box", 1}, {"n_crop", 1}, {"n_audio", 1}, {"feat_rows", R},
        {"roi_output", 2}, {"roi_sampling_ratio", 2}, {"roi_aligned", 1}};
    const fx_float_attr fv[] = {{"norm_eps", 1e-6f}, {"lora_alpha", 4.0f}, {"lora_dropout", 0.1f},
                                {"clip_eps", 1e-5f}, {"audio_logit_scale", 20.0f}, {"roi_spatial_scale", 0.125f}};
    return fx_check_config(&FX, iv, sizeof iv / sizeof *iv, fv, sizeof fv / sizeof *fv);
}

static float *upload_ds(const char *ds, int ndim, const int *shape, float **keep, int *nkeep) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    float *h = fx_alloc(&FX, n * sizeof(float));
    float *d = NULL;
    if (fx_read(&FX, ds, H5T_NATIVE_FLOAT, h, ndim, shape)) {
        d = k_malloc(n * sizeof(float));
        k_upload(d, h, n * sizeof(float));
        keep[(*nkeep)++] = d;
    }
    free(h);
    return d;
}

static void run_case(const char *grp, float lambda, int check_feat) {
    char nm[256], ds[256];
    anyref_cfg c = step_cfg(lambda);
    refs_cfg rc = refs_config();
    ar_params ps;
    anyref *m = NULL;
    refs *rf = NULL;
    float *keep[16];
    int nkeep = 0;
    params_init_empty(&ps);
    if (anyref_declare(&c, &ps) || refs_declare(&rc, &ps) || params_alloc(&ps)) {
        t_fail(PFX "declare", "%s", ar_error());
        return;
    }
    snprintf(ds, sizeof ds, "%s/grads", grp);
    const char *const groups[] = {ds, NULL};
    int tokens[N], targets[N], hw[2 * B];
    uint64_t seed = 0;
    const int nshape[1] = {N}, hshape[2] = {B, 2}, ishape[4] = {B, C, G, G}, pshape[4] = {3, 3, CI, CI},
              cshape[4] = {1, 3, CI, CI}, bshape[2] = {1, 5}, fshape[4] = {3, 1, AH, AW};
    if (!check_config() || !fx_load_params(&FX, &ps, groups) ||
        !fx_read(&FX, "tokens", H5T_NATIVE_INT, tokens, 1, nshape) ||
        !fx_read(&FX, "targets", H5T_NATIVE_INT, targets, 1, nshape) ||
        !fx_read(&FX, "orig_hw", H5T_NATIVE_INT, hw, 2, hshape) ||
        !fx_attr(&FX, "dropout_seed", H5T_NATIVE_UINT64, &seed))
        goto done;
    float *img = upload_ds("image_emb", 4, ishape, keep, &nkeep);
    refs_batch rb = {.n_images = 3, .pixels = upload_ds("clip_pixels", 4, pshape, keep, &nkeep),
                     .n_boxes = 1, .boxes = upload_ds("boxes", 2, bshape, keep, &nkeep),
                     .n_crops = 1, .crop_pixels = upload_ds("crop_pixels", 4, cshape, keep, &nkeep),
                     .n_audio = 1, .fbank = upload_ds("fbank", 4, fshape, keep, &nkeep)};
    if (!img || !rb.pixels || !rb.boxes || !rb.crop_pixels || !rb.fbank) goto done;
    int nseg = 0, gb[MAXSEG];
    size_t npix = 0;
    for (int i = 0; i < N; i++)
        if (tokens[i] == SEG) {
            if (nseg == MAXSEG) { fx_bad(&FX, "tokens", "more than 4 [SEG]s"); goto done; }
            gb[nseg++] = i / T;
            npix += (size_t)hw[2 * (i / T)] * hw[2 * (i / T) + 1];
        }
    const int gshape[1] = {(int)npix};
    float *gt = upload_ds("gt_masks", 1, gshape, keep, &nkeep);
    if (!gt || nseg != 3) { if (gt) fx_bad(&FX, "tokens", "expected 3 [SEG]s"); goto done; }
    const float *imgs[B], *gts[MAXSEG] = {0};
    for (int b = 0; b < B; b++) imgs[b] = img + (size_t)b * C * G * G;
    size_t off = 0;
    for (int k = 0; k < nseg; k++) {
        gts[k] = gt + off;
        off += (size_t)hw[2 * gb[k]] * hw[2 * gb[k] + 1];
    }
    if (!(rf = refs_create(&rc, &ps)) || !(m = anyref_create(&c, &ps, B, T, MAXSEG))) {
        t_fail(PFX "create", "%s", ar_error());
        goto done;
    }
    anyref_set_training(m, 1);
    params_zero_grad(&ps);
    float *feat = refs_forward(rf, &rb);
    refs_offsets o = refs_rows(rf, &rb);
    if (!feat || o.total != R) { t_fail(PFX "refs forward", "%s (rows %d)", feat ? "" : ar_error(), o.total); goto done; }
    const int fs[2] = {R, DM};
    if (check_feat) fx_check(&FX, "feature rows (images, box, crop, audio)", "feat", feat, 2, fs, FEAT_TOL);
    anyref_batch bt = {.tokens = tokens, .targets = targets, .feat = feat, .n_feat = R, .dfeat = refs_dfeat(rf),
                       .image_emb = imgs, .orig_hw = hw, .gt_masks = gts};
    anyref_losses L;
    anyref_forward(m, &bt, seed, &L);
    anyref_backward(m, 1.0f);
    snprintf(ds, sizeof ds, "%s/dfeat", grp);
    snprintf(nm, sizeof nm, "%s d total / d feat (splice backward)", grp);
    fx_check(&FX, nm, ds, refs_dfeat(rf), 2, fs, GRAD_TOL);
    refs_backward(rf);
    k_sync();
    t_check(k_error() == NULL, PFX "backend", "%s", k_error() ? k_error() : "no backend error");

    const double got[4] = {L.ce, L.bce, L.dice, L.total};
    int nt, nzero;
    double worst;
    fx_check_step(&FX, grp, &ps, got, LOSS_TOL, GRAD_TOL, &nt, &nzero, &worst);
    int nproj = 0;
    for (int i = 0; i < ps.n; i++) nproj += ps.p[i].trainable && strstr(ps.p[i].name, "_projector.") != NULL;
    snprintf(nm, sizeof nm, PFX "%s trainable set", grp);
    t_check(nt == 71 && nproj == 6 && nzero == 18, nm,
            "%d trainable tensors (%d in the two projectors, %d exactly zero), worst gradient rel err %.1e", nt, nproj,
            nzero, worst);
done:
    for (int i = 0; i < nkeep; i++) k_free(keep[i]);
    refs_free(rf);
    anyref_free(m);
    params_free(&ps);
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, PFX)) return t_exit_code();
    run_case("lam0", 0.0f, 1);
    run_case("lam0.1", 0.1f, 0);
    fx_close(&FX);
    return t_exit_code();
}
