/* tests/test_anyref_parity.c — one whole AnyRef training step (model/anyref.c)
 * against PyTorch float64.
 *
 * tests/ref/anyref_step_ref.py (`make fixtures`) writes tests/fixtures/anyref_step.h5
 * from the per-module references (llama_recipe_ref / llama_ref, seg_head_ref,
 * sam_prompt_ref, sam_decoder_ref, sam_post_ref, imported, not copied): a tiny
 * LLaMA (vocab 16, dim 16, 2 layers, 2 heads / 1 kv head) with LoRA rank 2 on
 * all seven projections and LoRA dropout 0.1 (the C masks, reproduced bit for
 * bit by the reference), trainable embed_tokens and lm_head; text_hidden_fcs
 * 16 -> 16 -> 16; SAM prompt encoder + mask decoder (dim 16, 2 heads, 4x4
 * grid, preset "anyref"), S = 64; post-processing to the original size; CE +
 * 2 BCE + 0.5 Dice aggregated as SPEC 2.9 (Dice smoothing DICE_SMOOTH). The
 * batch mixes a sample with one [SEG] (13x11), one with two [SEG]s (9x15) and
 * one without (7x5). Cases: λ = 0 (no refocusing) and λ = 0.1, each also with
 * model.attention = flash; λ = 0.1 with model.frozen_weights = bf16 (against
 * the reference over the same bf16-rounded frozen projections) and with that
 * plus train.gemm = bf16 (against a reference that rounds the same operands:
 * BF16Base in the script for the frozen products, BF16Lin for lm_head's bf16
 * copy, whose weight gradient comes from rounded operands too), with and
 * without flash; the same in fp16
 * (model.frozen_weights = fp16, train.gemm = fp16); model.activations = bf16
 * against a reference rounding the same kept tensors, with and without flash.
 *
 * Weights are loaded by registry name (shapes checked both ways). Checked per
 * case: ce, bce, dice, total (rel err 1e-5) and the gradient of every trainable
 * tensor (max|c - ref| / max|ref| <= 1e-4, printed per tensor); hypernetwork
 * MLPs 1..3 (single-mask output) must have exactly zero gradient on both
 * sides. Run from the repo root. */
#include "kernels/kernels.h"
#include "model/anyref.h"
#include "core/error.h"
#include "tests/h5fixture.h"
#include "tests/testlib.h"
#include "tests/tiny_anyref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURE "tests/fixtures/anyref_step.h5"
#define PFX "anyref_parity "
/* float32 step against float64: the per-module parity tests see ~1e-6; the
 * issue's bounds are 1e-5 on the losses and 1e-4 on the gradients. */
#define LOSS_TOL 1e-5
#define GRAD_TOL 1e-4
enum { V = 16, DM = 16, SEG = 15, C = 16, G = 4, B = 3, T = 8, N = B * T, MAXSEG = 4, MAXPIX = 16 * 16 };

static h5fixture FX;

static anyref_cfg tiny_cfg(float lambda) { return tiny_anyref_cfg(V, T, SEG, lambda, 0.1f); }

static int check_config(const anyref_cfg *c) {
    const fx_int_attr iv[] = {
        {"vocab", c->llm.vocab}, {"dim", c->llm.dim}, {"layers", c->llm.layers}, {"heads", c->llm.heads},
        {"kv_heads", c->llm.kv_heads}, {"mlp_hidden", c->llm.mlp_hidden}, {"lora_rank", c->llm.lora_rank},
        {"lora_targets", (int)c->llm.lora_targets}, {"train_base", c->llm.train_base},
        {"train_embed", c->llm.train_embed}, {"train_lm_head", c->llm.train_lm_head}, {"B", B}, {"T", T},
        {"dec_dim", c->dec.dim}, {"dec_depth", c->dec.depth}, {"dec_heads", c->dec.heads},
        {"dec_mlp_dim", c->dec.mlp_dim}, {"dec_downsample", c->dec.downsample},
        {"dec_num_mask_tokens", c->dec.num_mask_tokens}, {"dec_iou_hidden", c->dec.iou_hidden},
        {"dec_H", c->dec.H}, {"dec_W", c->dec.W}, {"seg_token", SEG}, {"img_size", 16 * G}};
    const fx_float_attr fv[] = {
        {"norm_eps", c->llm.norm_eps}, {"rope_theta", c->llm.rope_theta}, {"lora_alpha", c->llm.lora_alpha},
        {"lora_dropout", c->llm.lora_dropout}};
    return fx_check_config(&FX, iv, sizeof iv / sizeof *iv, fv, sizeof fv / sizeof *fv);
}

/* flash: model.attention = flash (the [SEG] rows' probabilities recomputed
 * from q, k and the log-sum-exp): the same fixture, the same bounds.
 * half: HALF_W = model.frozen_weights = bf16 (the frozen projections rounded
 * at load, fp32 products) against the reference over the same rounded weights
 * (group lam0.1_bf16w), at the same bounds; HALF_GEMM = that plus train.gemm =
 * bf16 (activations / output gradients rounded to bf16 before those products)
 * against the reference that rounds the same operands (lam0.1_bf16g). The CPU
 * emulates the rounding exactly (fp32 products of the rounded operands), but its
 * float32 values differ from float64's by ~1e-7, and an element within that of
 * a rounding midpoint rounds the other way: one 16-bit step on one element
 * (measured: bf16 1.1e-6 emulated, 1.7e-6 with oneDNN's matmuls, no such
 * element; fp16, whose steps are 8x finer so that ~8x more elements sit that
 * close, 8.8e-5 on embed_tokens from one).
 * Hence a CPU gradient bound of 5e-4, which still catches an output gradient
 * left unrounded (bf16: 1.9e-3 on embed_tokens, measured by leaving the
 * reference's backward rounding out). On the GPU the 16-bit groups run twice:
 * with the mode's other GEMMs in plain fp32 (k_set_gemm_rest_fp32), at these
 * CPU bounds, which checks the tensor-core products themselves; then as
 * training runs them, the other GEMMs in TF32 (measured on an H200 for the TF32
 * step: losses within 2e-5, gradients 6.7e-3), whose noise flips many bf16
 * roundings downstream: bounds TF32_REST_* there, labelled "tf32-rest". Against
 * the float64 step WITHOUT the operand rounding the bf16 mode is 1.2e-1 off on
 * the [SEG] head's gradients of this tiny model (text_hidden_fcs, and the mask
 * decoder's mask_tokens beside the [SEG] prompt): the rounding is a real change
 * of the function, which is why the reference emulates it, and those gradients
 * are the ones most sensitive to where the roundings land. Measured on an H200
 * (2026-11-27): with fp32 other GEMMs every group within the CPU bounds (the
 * [SEG] head 9.6e-7); with TF32 ones losses 4.8e-5, gradients 1.7e-2, the
 * [SEG] head's 1.2e-1 (bf16; fp16 6.5e-3), as far off as the rounding itself:
 * TF32_REST_SEG_TOL for those. */
enum { HALF_NONE, HALF_W, HALF_GEMM, HALF_F16, HALF_ACT };
/* HALF_F16: fp16 weights and GEMMs (lam0.1_f16g); HALF_ACT: model.activations =
 * bf16 with fp32 weights and GEMMs, against the reference that rounds the same
 * kept tensors (RoundST, lam0.1_bf16a), at the 16-bit bounds (roundings that
 * land the other way). */
#define BF16_LOSS_TOL LOSS_TOL
#define BF16_GRAD_TOL 5e-4
#define TF32_REST_LOSS_TOL 2e-4
#define TF32_REST_GRAD_TOL 5e-2
#define TF32_REST_SEG_TOL 2.5e-1
static const char *const SEG_PATH[] = {"model.text_hidden_fcs.", "mask_decoder.mask_tokens.", NULL};
static int g_tf32_rest;   /* run_case: the 16-bit modes' other GEMMs in TF32 (GPU) */
static void run_case(const char *grp, float lambda, int flash, int half) {
    char nm[256], ds[256];
    anyref_cfg c = tiny_cfg(lambda);
    if (half == HALF_ACT) c.llm.act_half = LLAMA_ACT_BF16;
    else if (half) c.llm.frozen_half = half == HALF_F16 ? LLAMA_FROZEN_F16 : LLAMA_FROZEN_BF16;
    const int gemm16 = half == HALF_GEMM || half == HALF_F16, tol16 = gemm16 || half == HALF_ACT;
    char mode0[16];
    snprintf(mode0, sizeof mode0, "%s", k_gemm_mode());
    const char *tag = half == HALF_ACT    ? " bf16 activations"
                      : half == HALF_F16    ? " fp16 weights, fp16 GEMMs"
                      : half == HALF_GEMM ? " bf16 weights, bf16 GEMMs"
                      : half == HALF_W    ? " bf16 weights"
                                          : "";
    ar_params ps;
    anyref *m = NULL;
    float *img_dev[B] = {0}, *gt_dev[MAXSEG] = {0};
    params_init_empty(&ps);
    if (anyref_declare(&c, &ps) || params_alloc(&ps)) { t_fail(PFX "declare", "%s", ar_error()); return; }
    if (!check_config(&c)) goto done;
    snprintf(ds, sizeof ds, "%s/grads", grp);
    const char *const groups[] = {ds, NULL};
    int tokens[N], targets[N], hw[2 * B];
    float img[B * C * G * G];
    uint64_t seed = 0;
    const int nshape[1] = {N}, hshape[2] = {B, 2}, ishape[4] = {B, C, G, G};
    if (!fx_load_params(&FX, &ps, groups) || !fx_read(&FX, "tokens", H5T_NATIVE_INT, tokens, 1, nshape) ||
        !fx_read(&FX, "targets", H5T_NATIVE_INT, targets, 1, nshape) ||
        !fx_read(&FX, "orig_hw", H5T_NATIVE_INT, hw, 2, hshape) ||
        !fx_read(&FX, "image_emb", H5T_NATIVE_FLOAT, img, 4, ishape) ||
        !fx_attr(&FX, "dropout_seed", H5T_NATIVE_UINT64, &seed))
        goto done;
    /* the [SEG]s in torch.where order: their masks lie concatenated in gt_masks */
    int nseg = 0, gb[MAXSEG];
    size_t npix = 0;
    for (int i = 0; i < N; i++)
        if (tokens[i] == SEG) {
            if (nseg == MAXSEG) { fx_bad(&FX, "tokens", "more than 4 [SEG]s"); goto done; }
            gb[nseg++] = i / T;
            npix += (size_t)hw[2 * (i / T)] * hw[2 * (i / T) + 1];
        }
    int gl = fx_len(&FX, "gt_masks");
    if (gl < 0) goto done;
    if ((size_t)gl != npix || nseg != 3) { fx_bad(&FX, "gt_masks", "does not match the [SEG]s and sizes"); goto done; }
    float *gt = fx_alloc(&FX, npix * sizeof(float));
    const int gshape[1] = {gl};
    if (!fx_read(&FX, "gt_masks", H5T_NATIVE_FLOAT, gt, 1, gshape)) { free(gt); goto done; }
    const float *imgs[B], *gts[MAXSEG] = {0};
    for (int b = 0; b < B; b++) {
        img_dev[b] = k_malloc((size_t)C * G * G * sizeof(float));
        k_upload(img_dev[b], img + (size_t)b * C * G * G, (size_t)C * G * G * sizeof(float));
        imgs[b] = img_dev[b];
    }
    size_t off = 0;
    for (int k = 0; k < nseg; k++) {
        size_t n = (size_t)hw[2 * gb[k]] * hw[2 * gb[k] + 1];
        gt_dev[k] = k_malloc(n * sizeof(float));
        k_upload(gt_dev[k], gt + off, n * sizeof(float));
        gts[k] = gt_dev[k];
        off += n;
    }
    free(gt);

    c.llm.flash_attention = flash;
    m = anyref_create(&c, &ps, B, T, MAXSEG);
    if (!m) { t_fail(PFX "create", "%s", ar_error()); goto done; }
    anyref_refresh_prompt(m);
    anyref_set_training(m, 1);
    params_zero_grad(&ps);
    anyref_losses L;
    anyref_batch bt = {.tokens = tokens, .targets = targets, .image_emb = imgs, .orig_hw = hw, .gt_masks = gts};
    k_set_gemm_rest_fp32(!g_tf32_rest);
    if (gemm16 && k_set_gemm_mode(half == HALF_F16 ? "fp16" : "bf16")) { t_fail(PFX "gemm mode", "%s", ar_error()); goto done; }
    anyref_forward(m, &bt, seed, &L);
    anyref_backward(m, 1.0f);
    k_sync();
    k_set_gemm_rest_fp32(0);
    k_set_gemm_mode(mode0);
    const char *kerr = k_error();
    t_check(kerr == NULL, PFX "backend", "%s", kerr ? kerr : "no backend error");
    snprintf(nm, sizeof nm, "%s%s%s%s batch", FX.prefix, grp, flash ? " flash" : "", tag);
    t_check(L.n_seg == 3 && L.n_seg_samples == 2, nm, "%d [SEG]s in %d samples (1, 2 and 0 per sample)",
            L.n_seg, L.n_seg_samples);

    const double got[4] = {L.ce, L.bce, L.dice, L.total};
    int nt, nzero;
    double worst;
    const double ltol = g_tf32_rest ? TF32_REST_LOSS_TOL : tol16 ? BF16_LOSS_TOL : LOSS_TOL,
                 gtol = g_tf32_rest ? TF32_REST_GRAD_TOL : tol16 ? BF16_GRAD_TOL : GRAD_TOL;
    fx_check_step(&FX, grp, &ps, got, ltol, gtol, &nt, &nzero, &worst);
    snprintf(nm, sizeof nm, "%s%s%s%s trainable set", FX.prefix, grp, flash ? " flash" : "", tag);
    t_check(nt == 2 * 7 * 2 + 2 + 4 + 1 + 6 + 24 && nzero == 18, nm,
            "%d trainable tensors (LoRA 28, embed, lm_head, fcs 4, decoder 31), %d exactly zero, "
            "worst gradient rel err %.1e", nt, nzero, worst);
done:
    for (int b = 0; b < B; b++) if (img_dev[b]) k_free(img_dev[b]);
    for (int k = 0; k < MAXSEG; k++) if (gt_dev[k]) k_free(gt_dev[k]);
    anyref_free(m);
    params_free(&ps);
}

int main(void) {
    if (!fx_open(&FX, FIXTURE, PFX)) return t_exit_code();
    printf("# AnyRef step (tiny LLaMA + LoRA + [SEG] head + SAM decoder + post-processing + losses)\n"
           "# against PyTorch float64, backend %s\n", k_backend_name());
    run_case("lam0", 0.0f, 0, HALF_NONE);
    run_case("lam0.1", 0.1f, 0, HALF_NONE);
    printf("# the same with model.attention = flash ([SEG] rows recomputed from q, k, log-sum-exp)\n");
    run_case("lam0", 0.0f, 1, HALF_NONE);
    run_case("lam0.1", 0.1f, 1, HALF_NONE);
    printf("# model.frozen_weights = bf16 against float64 over the same rounded weights; then with\n"
           "# train.gemm = bf16, and fp16 weights with fp16 GEMMs, against float64 rounding the same\n"
           "# operands (bounds %.0e on the losses, %.0e on the gradients)\n", BF16_LOSS_TOL, BF16_GRAD_TOL);
    run_case("lam0.1_bf16w", 0.1f, 0, HALF_W);
    run_case("lam0.1_bf16w", 0.1f, 1, HALF_W);
    run_case("lam0.1_bf16g", 0.1f, 0, HALF_GEMM);
    run_case("lam0.1_bf16g", 0.1f, 1, HALF_GEMM);
    run_case("lam0.1_f16g", 0.1f, 0, HALF_F16);
    run_case("lam0.1_f16g", 0.1f, 1, HALF_F16);
    if (strcmp(k_backend_name(), "cpu")) {
        printf("# the same two modes as training runs them on the GPU, their other GEMMs in TF32\n"
               "# (bounds %.0e on the losses, %.0e on the gradients, %.1e on the [SEG] head's)\n",
               TF32_REST_LOSS_TOL, TF32_REST_GRAD_TOL, TF32_REST_SEG_TOL);
        g_tf32_rest = 1;
        FX.prefix = PFX "tf32-rest ";
        FX.loose = SEG_PATH;
        FX.loose_tol = TF32_REST_SEG_TOL;
        run_case("lam0.1_bf16g", 0.1f, 0, HALF_GEMM);
        run_case("lam0.1_bf16g", 0.1f, 1, HALF_GEMM);
        run_case("lam0.1_f16g", 0.1f, 0, HALF_F16);
        run_case("lam0.1_f16g", 0.1f, 1, HALF_F16);
        g_tf32_rest = 0;
        FX.prefix = PFX;
        FX.loose = NULL;
    }
    printf("# model.activations = bf16 against float64 rounding the same kept tensors\n");
    run_case("lam0.1_bf16a", 0.1f, 0, HALF_ACT);
    run_case("lam0.1_bf16a", 0.1f, 1, HALF_ACT);
    fx_close(&FX);
    return t_exit_code();
}
