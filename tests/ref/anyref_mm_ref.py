#!/usr/bin/python3
"""tests/ref/anyref_mm_ref.py — PyTorch float64 reference of one whole MULTIMODAL
AnyRef training step (model/references.c + model/anyref.c): the text-only step of
tests/ref/anyref_step_ref.py (LLaMA + LoRA with the C dropout masks -> [SEG] head
with refocusing -> SAM prompt + mask decoder -> post-processing -> CE + BCE + Dice,
SPEC 2.9) whose LLM input embeddings are partly FEATURE ROWS built from images,
a box reference, an image-crop reference and an audio reference (SPEC 2.3, 2.4,
2.7, 2.8).

Usage: /usr/bin/python3 tests/ref/anyref_mm_ref.py tests/fixtures/anyref_mm.h5

Built by importing the per-module references, not from the C code:
  anyref_step_ref.py       llama_forward / step (with x0 = the spliced input
                           embeddings), make_grounding (text_hidden_fcs, SAM decoder,
                           prompt-encoder tensors, same initialisation)
  llama_recipe_ref.py      param_shapes / make_params / step_masks (the bit-exact C
                           LoRA dropout masks for dropout_seed) / input_embeds
  clip_ref.py              clip_hidden_states, make_params, make_projector, projector
                           (its module sizes are set to this fixture's tower)
  imagebind_audio_ref.py   Encoder, randomise
  seg_head_ref.py          refocus_rows (via anyref_step_ref.step)
  torchvision.ops.roi_align

CONTRACT (what the C side implements)
Feature rows: one matrix feat [R, D] (D = LLM dim = 16), R = 59, laid out as
  rows  0..47  images: image i (i = 0..2) has G = 16 rows (g x g = 4 x 4 CLIP patch
               tokens, CLS dropped, row-major over the grid) at rows 16 i .. 16 i + 15
  rows 48..51  box reference 0 (4 rows)
  rows 52..55  image-crop reference 0 (4 rows)
  rows 56..58  audio reference 0 (3 rows, one per clip)
  (general order: all images, then 4 rows per box in box order, 4 per crop in crop
  order, 3 per audio in audio order.)
  * image rows: CLIP ViT (clip_ref semantics: conv patch embed, no bias; CLS +
    position embedding; pre_layrnorm; pre-LN blocks with quick-GELU; LN eps 1e-5)
    on clip_pixels [n_img, 3, 32, 32]; hidden_states[-2] (select layer -2 = the
    output of encoder layer L-2 = layer 0 here), CLS dropped -> [n_img*G, W=24] ->
    mm_projector mlp2x_gelu: Linear(W, D) -> exact (erf) GELU -> Linear(D, D).
    CLIP is frozen; mm_projector is TRAINABLE here (its gradients are checked).
  * box rows: torchvision.ops.roi_align(input, boxes, output_size=(2, 2),
    spatial_scale=g/S_clip = 4/32 = 0.125, sampling_ratio=2, aligned=True) with
    input = the projected rows of the images reshaped [n_img, g, g, D] and permuted
    to NCHW [n_img, D, g, g]; boxes = the fixture's boxes [K, 5] (image index,
    x1, y1, x2, y2 in CLIP input pixels). Output [K, D, 2, 2] -> rows in (ph, pw)
    row-major order, 4 rows per box (row 4k + 2 ph + pw). The gradient of the box
    rows flows back through roi_align into the image rows' projector outputs.
  * crop rows: crop_pixels [n_crop, 3, 32, 32] through the same CLIP and the same
    mm_projector -> [G, D] per crop; token i (i = 0..3) = mean of the projected rows
    [i G/4, (i+1) G/4) (4 consecutive rows here).
  * audio rows: the ImageBind audio encoder (imagebind_audio_ref semantics, frozen;
    embedding = 20 * L2-normalised head output; the scale is the float32
    exp(float32(log 20)) of the official buffer, 20 to 1e-7) on fbank
    [n_audio*3, 1, 32, 40] (3 clips per audio) -> [n_audio*3, 48] ->
    audio_projector Linear(48, D), TRAINABLE -> 3 rows per audio.
Input embeddings: tokens int32 [B*T]; token -(r+1) means feature row r (its input
  embedding is feat[r]; it gets no embed_tokens row and gives embed_tokens no
  gradient), tokens >= 0 are embed_tokens rows. Every feature row is used exactly once.
Targets: labels are the token ids on the answer tokens (answer text, [SEG], </s>)
  and -100 on every prompt token, feature position and pad; targets[t] =
  labels[t + 1], targets[T-1] = -100. CE = mean over the non-ignored targets.
  Only causal attention (no padding mask; padding is at the end, so it changes nothing).
[SEG]: found by tokens == SEG (negative ids never match); p = index - 1; span start
  s = the first t with targets[t] > 0 of that sample (seg_head_ref.refocus_rows).
Token ids (vocab 24): PAD 0, BOS 1, EOS 2, words 3..15 and 23, IM_START 16,
  IM_END 17, REF_START 18, REF_END 19, AUDIO_START 20, AUDIO_END 21, SEG 22.
The batch (B = 3, T = 40), [Ik] = the 16 rows of image k, [BOX] rows 48..51,
  [CROP] rows 52..55, [AUD] rows 56..58, | = start of the answer (labels from there):
  sample 0: BOS 3 4 IM_START [I0] IM_END 5 REF_START [BOX] REF_END 6 7 | 8 9 10 SEG 11 EOS PAD*4
            (36 tokens + 4 pads; one [SEG] at t = 33)
  sample 1: BOS 3 IM_START [I1] IM_END 12 REF_START [CROP] REF_END 6 7 | 13 SEG 14 15 SEG 23 EOS PAD*4
            (36 + 4; [SEG]s at t = 30 and 33)
  sample 2: BOS 3 IM_START [I2] IM_END 4 AUDIO_START [AUD] AUDIO_END 6 7 | 8 12 13 9 EOS PAD*7
            (33 + 7; no [SEG]: CE only)
  The box is on image 0: (3.5, 5, 27, 20). Original sizes 13x11, 9x15, 7x5 (SAM
  input side S_sam = 64, decoder grid 4x4, image_emb random as in anyref_step_ref).
Sizes: LLaMA vocab 24, dim 16, 2 layers, 2 heads / 1 kv head, mlp 24, RMSNorm eps
  1e-6, RoPE 10000, LoRA rank 2 alpha 4 dropout 0.1 on all 7 projections (C masks for
  dropout_seed, B*T rows), embed_tokens and lm_head trainable; seg head 16->16->16;
  SAM decoder (anyref preset: mask_tokens, output_upscaling, hypernetwork MLPs
  trainable) dim 16, depth 2, 2 heads, mlp 24. CLIP image 32, patch 8, width 24,
  2 layers, 4 heads, mlp 48. ImageBind audio: fbank 32x40, kernel 8 stride 6 (5x6
  patches), width 32, depth 2, 4 heads, mlp ratio 4, out 48.
Weights as anyref_step_ref (make_grounding, LoRA B at 0.5 std), except that the
  second Linear of text_hidden_fcs is multiplied by 3 (exact in float32), so that the
  mask losses depend clearly on the [SEG] row and through it on the feature rows.
Losses as anyref_step_ref: total = 1 CE + 2 BCE + 0.5 Dice (Dice smooth 1e-3), two
  cases λ = 0 and λ = float32(0.1).

Fixture layout (weights float32; other float datasets float64 unless noted):
  attrs   generator; LLaMA config (vocab, dim, layers, heads, kv_heads, mlp_hidden,
          max_seq, norm_eps, rope_theta, lora_rank, lora_alpha, lora_dropout,
          lora_targets, train_base, train_embed, train_lm_head, B, T); dec_<k> (dim,
          depth, heads, mlp_dim, downsample, num_mask_tokens, iou_hidden, H, W,
          n_sparse); img_size (SAM S = 64); dropout_seed (uint64); lambdas [2];
          ce_weight, bce_weight, dice_weight, dice_smooth; token ids seg_token,
          pad_token, bos_token, eos_token, im_start, im_end, ref_start, ref_end,
          audio_start, audio_end; clip_image_size, clip_patch, clip_channels,
          clip_width, clip_layers, clip_heads, clip_mlp_dim, clip_eps,
          clip_select_layer (-2), clip_grid (g), clip_tokens (G), clip_act
          ("quick_gelu"), projector_type ("mlp2x_gelu"); audio_embed_dim,
          audio_depth, audio_heads, audio_mlp_ratio, audio_kernel, audio_stride,
          audio_n_mels, audio_target_len, audio_out_dim, audio_clips, audio_grid_h,
          audio_grid_w, audio_logit_scale; roi_output (2), roi_sampling_ratio (2),
          roi_aligned (1), roi_spatial_scale (0.125); n_img, n_box, n_crop, n_audio,
          rows_per_box (4), rows_per_crop (4), rows_per_audio (3), feat_rows (R)
  params/<registry name>   every tensor: LLaMA (HF names), model.text_hidden_fcs.0.*,
          prompt_encoder.*, mask_decoder.*, vision_model.* (all CLIP tensors incl.
          post_layernorm), model.mm_projector.{0,2}.{weight,bias}, the ImageBind
          audio tensors (official names, no prefix), model.audio_projector.*
  tokens, targets int32 [B*T]; orig_hw int32 [B, 2]
  image_emb float32 [B, C, 4, 4]; gt_masks float32 [Σ H0*W0] ([SEG]s in torch.where order)
  clip_pixels float32 [3, 3, 32, 32]; crop_pixels float32 [1, 3, 32, 32]
  boxes float32 [1, 5]; fbank float32 [3, 1, 32, 40]
  feat [R, D]   the feature rows (forward check)
  lam0/losses, lam0.1/losses [4]   ce, bce, dice, total
  lam0/grads/<name>, lam0.1/grads/<name>   d total / d every trainable tensor (LoRA,
          embed_tokens, lm_head, text_hidden_fcs, the decoder's trainable set,
          model.mm_projector.*, model.audio_projector.*)
  lam0/dfeat, lam0.1/dfeat [R, D]   d total / d feat AT THE SPLICE only (the
          gradient of the input-embedding rows; the box rows' path back through
          roi_align into the image rows is not included in the image rows here)
"""
import os
import sys

import numpy as np
import torch
from torchvision.ops import roi_align

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import anyref_step_ref as AR                      # noqa: E402  (float64 default dtype)
import clip_ref as CR                             # noqa: E402
import imagebind_audio_ref as IA                  # noqa: E402
import llama_recipe_ref as LR                     # noqa: E402
import seg_head_ref as SH                         # noqa: E402
from llama_ref import f32                         # noqa: E402

f64 = torch.float64
torch.set_default_dtype(f64)

# token ids
PAD, BOS, EOS = 0, 1, 2
IM_START, IM_END, REF_START, REF_END, AUDIO_START, AUDIO_END, SEG = 16, 17, 18, 19, 20, 21, 22
V, DM, B, T = 24, 16, 3, 40
LLM = dict(vocab=V, dim=DM, layers=2, heads=2, kv_heads=1, mlp_hidden=24, max_seq=T, norm_eps=1e-6,
           rope_theta=10000.0, lora_rank=2, lora_alpha=4.0, lora_dropout=0.1, lora_targets=0x7F,
           train_base=0, train_embed=1, train_lm_head=1, B=B, T=T)
DROPOUT_SEED = 0xD1CE5EED0FA11B0D
HW = [(13, 11), (9, 15), (7, 5)]

# CLIP tower + projector (clip_ref semantics at these sizes)
CLIP = dict(image_size=32, patch=8, channels=3, width=24, layers=2, heads=4, mlp_dim=48, eps=1e-5)
SEL = -2
GRID = CLIP["image_size"] // CLIP["patch"]        # g = 4
NTOK = GRID * GRID                                # G = 16
VPFX = "vision_model."
PPFX = "model.mm_projector."
# ImageBind audio (imagebind_audio_ref semantics)
AUDIO = dict(IA.TINY, llm_dim=DM)
APFX = "model.audio_projector."
CLIPS = 3
# references
N_IMG, N_CROP, N_AUDIO = 3, 1, 1
BOXES = [(0, 3.5, 5.0, 27.0, 20.0)]
ROI_OUT, ROI_SR = 2, 2
R = N_IMG * NTOK + 4 * len(BOXES) + 4 * N_CROP + CLIPS * N_AUDIO
ROW_IMG = [i * NTOK for i in range(N_IMG)]
ROW_BOX = N_IMG * NTOK
ROW_CROP = ROW_BOX + 4 * len(BOXES)
ROW_AUDIO = ROW_CROP + 4 * N_CROP


def feat_tok(first, n):
    """The token ids of feature rows first .. first + n - 1."""
    return [-(r + 1) for r in range(first, first + n)]


# (prompt, answer) per sample
SAMPLES = [
    ([BOS, 3, 4, IM_START] + feat_tok(ROW_IMG[0], NTOK) + [IM_END, 5, REF_START] + feat_tok(ROW_BOX, 4)
     + [REF_END, 6, 7], [8, 9, 10, SEG, 11, EOS]),
    ([BOS, 3, IM_START] + feat_tok(ROW_IMG[1], NTOK) + [IM_END, 12, REF_START] + feat_tok(ROW_CROP, 4)
     + [REF_END, 6, 7], [13, SEG, 14, 15, SEG, 23, EOS]),
    ([BOS, 3, IM_START] + feat_tok(ROW_IMG[2], NTOK) + [IM_END, 4, AUDIO_START] + feat_tok(ROW_AUDIO, CLIPS)
     + [AUDIO_END, 6, 7], [8, 12, 13, 9, EOS]),
]


def batch():
    tok = np.full((B, T), PAD, dtype=np.int64)
    lab = np.full((B, T), -100, dtype=np.int64)
    for b, (prompt, answer) in enumerate(SAMPLES):
        seq = prompt + answer
        assert len(seq) <= T
        tok[b, :len(seq)] = seq
        lab[b, len(prompt):len(seq)] = answer
    tg = np.full((B, T), -100, dtype=np.int64)
    tg[:, :-1] = lab[:, 1:]
    used = sorted(-t - 1 for t in tok.reshape(-1) if t < 0)
    assert used == list(range(R)), "every feature row exactly once"
    return torch.from_numpy(tok.reshape(-1)), torch.from_numpy(tg.reshape(-1))


def set_clip_sizes():
    """clip_ref works on its module-level sizes: this fixture's tower."""
    CR.IMG, CR.PATCH, CR.CH = CLIP["image_size"], CLIP["patch"], CLIP["channels"]
    CR.W, CR.L, CR.H, CR.MLP, CR.EPS = CLIP["width"], CLIP["layers"], CLIP["heads"], CLIP["mlp_dim"], CLIP["eps"]
    CR.G, CR.T, CR.D = GRID, 1 + NTOK, DM


def make_audio(gen):
    """The frozen encoder (built under float32 defaults so its logit-scale buffer is
    the official float32 one, as in imagebind_audio_ref) and the projector."""
    dt = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    enc = IA.Encoder(AUDIO)
    proj = torch.nn.Linear(AUDIO["out_dim"], AUDIO["llm_dim"])
    torch.set_default_dtype(dt)
    enc = enc.to(f64).eval()
    proj = proj.to(f64)
    IA.randomise(enc, gen)
    IA.randomise(proj, gen)
    return enc, proj


def features(cp, pp, aproj, vis, aemb, boxes):
    """feat [R, D] from the frozen CLIP features vis [n_img + n_crop, G, W] and audio
    embeddings aemb [n_audio*3, O], through the trainable projectors."""
    proj = CR.projector(pp, vis, "mlp2x_gelu")                          # [n_img + n_crop, G, D]
    img = proj[:N_IMG]
    img_rows = img.reshape(N_IMG * NTOK, DM)
    grid = img.reshape(N_IMG, GRID, GRID, DM).permute(0, 3, 1, 2)        # NCHW
    box = roi_align(grid, boxes, output_size=(ROI_OUT, ROI_OUT), spatial_scale=GRID / CLIP["image_size"],
                    sampling_ratio=ROI_SR, aligned=True)                 # [K, D, 2, 2]
    box_rows = box.permute(0, 2, 3, 1).reshape(-1, DM)
    crop_rows = proj[N_IMG:].reshape(N_CROP, 4, NTOK // 4, DM).mean(2).reshape(N_CROP * 4, DM)
    audio_rows = aproj(aemb)
    return torch.cat([img_rows, box_rows, crop_rows, audio_rows])


def main(path):
    c = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in LLM.items()}
    rs = np.random.RandomState(20261207)
    shapes = LR.param_shapes(c)
    P = LR.make_params(c, rs)
    trainable = {name for name, _, tr in shapes if tr}
    for name in P:   # LoRA B at 0.5 std as anyref_step_ref: visible LoRA gradients
        if "lora_B" in name:
            P[name] = f32(0.5 * rs.standard_normal(tuple(P[name].shape)))
    fcs, dec, fcs_names, dec_names = AR.make_grounding(P, rs)
    with torch.no_grad():   # a 3x larger [SEG] prompt: the masks (and the box/crop rows'
        fcs[2].weight.mul_(3.0)   # mask-loss gradients) depend clearly on the [SEG] row
        fcs[2].bias.mul_(3.0)
    trainable |= set(fcs_names)
    trainable |= {k for k in dec_names if k[len("mask_decoder."):].startswith(AR.DEC_TRAIN)}

    tokens, targets = batch()
    img_emb = f32(rs.standard_normal((B, AR.C, AR.G, AR.G)))
    gts = []
    for b in range(B):
        for t in range(T):
            if tokens[b * T + t] == SEG:
                H0, W0 = HW[b]
                gts.append(f32((rs.uniform(size=H0 * W0) < 0.4).astype(np.float64)))
    masks = {k: torch.from_numpy(v.astype(np.float64)) for k, v in LR.step_masks(c, DROPOUT_SEED).items()}

    # CLIP (frozen) + mm_projector (trainable)
    set_clip_sizes()
    gen = torch.Generator().manual_seed(20261208)
    cp = CR.make_params(gen)
    pp = CR.make_projector(gen, "mlp2x_gelu")
    S = CLIP["image_size"]
    clip_pixels = CR.rnd(gen, (N_IMG, 3, S, S), 1.0)
    crop_pixels = CR.rnd(gen, (N_CROP, 3, S, S), 1.0)
    boxes = torch.tensor(BOXES, dtype=f64)
    assert torch.equal(boxes, f32(boxes.numpy()))
    # ImageBind audio (frozen) + audio_projector (trainable)
    enc, aproj = make_audio(gen)
    fbank = CR.rnd(gen, (N_AUDIO * CLIPS, 1, AUDIO["n_mels"], AUDIO["target_len"]), 1.0)
    with torch.no_grad():
        hs = CR.clip_hidden_states(cp, torch.cat([clip_pixels, crop_pixels]), CR.quick_gelu)
        vis = hs[SEL][:, 1:]                                              # [n_img + n_crop, G, W]
        aemb = enc(fbank)["emb"]                                          # [3, O]

    SH.B, SH.T, SH.D, SH.SEG = B, T, DM, SEG
    allp = dict(P)
    allp.update(fcs_names)
    allp.update(dec_names)
    pp_names = {PPFX + k: v for k, v in pp.items()}
    ap_names = {APFX + k: v for k, v in aproj.named_parameters()}
    allp.update(pp_names)
    allp.update(ap_names)
    trainable |= set(pp_names) | set(ap_names)
    frozen = {VPFX + k: v for k, v in cp.items()}
    frozen.update({k: v for k, v in enc.named_parameters()})

    rows = torch.nonzero(tokens < 0)[:, 0]
    which = -tokens[rows] - 1
    results = {}
    feat_out = None
    for grp, lam in AR.LAMBDAS:
        lam = float(np.float32(lam))
        for t in allp.values():
            t.grad = None
            t.requires_grad_(True)
        feat = features(cp, pp, aproj, vis, aemb, boxes)
        feat.retain_grad()
        x0 = LR.input_embeds(P, tokens, feat[which], rows, c)
        ce, bce, dice, total = AR.step(P, fcs, dec, tokens, targets, masks, img_emb, gts, c, lam, x0=x0, hw=HW)
        total.backward()
        grads = {}
        for k in sorted(trainable):
            g = allp[k].grad
            grads[k] = torch.zeros_like(allp[k]) if g is None else g.detach().clone()
        dfeat = feat.grad.detach().clone()
        losses = [ce.item(), bce.item(), dice.item(), total.item()]
        assert all(np.isfinite(losses)), losses
        results[grp] = (losses, grads, dfeat)
        if feat_out is None:
            feat_out = feat.detach().clone()
        else:
            assert torch.equal(feat_out, feat.detach())
        zero = [k for k in trainable if not bool((grads[k] != 0).any())]
        want_zero = [k for k in trainable if k.startswith("mask_decoder.output_hypernetworks_mlps.")
                     and not k.startswith("mask_decoder.output_hypernetworks_mlps.0.")]
        assert sorted(zero) == sorted(want_zero), (grp, sorted(zero))
        for k in list(pp_names) + list(ap_names):
            assert float(grads[k].abs().max()) > 1e-4, (grp, k)
        for name, lo, n in (("image", 0, ROW_BOX), ("box", ROW_BOX, 4), ("crop", ROW_CROP, 4),
                            ("audio", ROW_AUDIO, CLIPS)):
            blk = dfeat[lo:lo + n]
            assert bool((blk.abs().sum(1) > 0).all()), (grp, name)
        print("%s: ce %.6f bce %.6f dice %.6f total %.6f, %d trainable tensors; |dfeat| per kind: "
              "image %.3g box %.3g crop %.3g audio %.3g" % (
                  grp, *losses, len(trainable), dfeat[:ROW_BOX].abs().max(), dfeat[ROW_BOX:ROW_CROP].abs().max(),
                  dfeat[ROW_CROP:ROW_AUDIO].abs().max(), dfeat[ROW_AUDIO:].abs().max()))
        print("   max |grad|: " + ", ".join("%s %.3g" % (k, float(grads[k].abs().max()))
                                          for k in sorted(list(pp_names) + list(ap_names))))
    # λ matters: the refocusing changes the mask losses
    assert results["lam0"][0][1] != results["lam0.1"][0][1]

    groups = ["params", "lam0", "lam0/grads", "lam0.1", "lam0.1/grads"]
    with LR.open_reproducible(path, groups) as f:
        f.attrs["generator"] = "tests/ref/anyref_mm_ref.py (torch %s, float64)" % torch.__version__
        for k, v in c.items():
            f.attrs[k] = np.int32(v) if isinstance(v, int) else np.float64(v)
        for k, v in AR.DEC.items():
            f.attrs["dec_" + k] = np.int32(v)
        f.attrs["img_size"] = np.int32(AR.S_IMG)
        f.attrs["dropout_seed"] = np.uint64(DROPOUT_SEED)
        f.attrs["lambdas"] = np.array([float(np.float32(lam)) for _, lam in AR.LAMBDAS], dtype=np.float64)
        for k, v in dict(ce_weight=AR.CE_W, bce_weight=AR.BCE_W, dice_weight=AR.DICE_W,
                         dice_smooth=AR.DICE_SMOOTH).items():
            f.attrs[k] = np.float64(v)
        for k, v in dict(seg_token=SEG, pad_token=PAD, bos_token=BOS, eos_token=EOS, im_start=IM_START,
                         im_end=IM_END, ref_start=REF_START, ref_end=REF_END, audio_start=AUDIO_START,
                         audio_end=AUDIO_END).items():
            f.attrs[k] = np.int32(v)
        for k, v in CLIP.items():
            f.attrs["clip_" + k] = np.float64(v) if isinstance(v, float) else np.int32(v)
        f.attrs["clip_select_layer"] = np.int32(SEL)
        f.attrs["clip_grid"] = np.int32(GRID)
        f.attrs["clip_tokens"] = np.int32(NTOK)
        f.attrs["clip_act"] = "quick_gelu"
        f.attrs["projector_type"] = "mlp2x_gelu"
        gh, gw = IA.grid(AUDIO)
        for k in ("embed_dim", "depth", "heads", "mlp_ratio", "kernel", "stride", "n_mels", "target_len",
                  "out_dim"):
            f.attrs["audio_" + k] = np.int32(AUDIO[k])
        f.attrs["audio_clips"] = np.int32(CLIPS)
        f.attrs["audio_grid_h"] = np.int32(gh)
        f.attrs["audio_grid_w"] = np.int32(gw)
        f.attrs["audio_logit_scale"] = np.float64(20.0)
        f.attrs["roi_output"] = np.int32(ROI_OUT)
        f.attrs["roi_sampling_ratio"] = np.int32(ROI_SR)
        f.attrs["roi_aligned"] = np.int32(1)
        f.attrs["roi_spatial_scale"] = np.float64(GRID / CLIP["image_size"])
        for k, v in dict(n_img=N_IMG, n_box=len(BOXES), n_crop=N_CROP, n_audio=N_AUDIO, rows_per_box=4,
                         rows_per_crop=4, rows_per_audio=CLIPS, feat_rows=R).items():
            f.attrs[k] = np.int32(v)
        z = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)
        params = dict(allp)
        params.update(frozen)
        for name in sorted(params):
            f.create_dataset("params/" + name, data=params[name].detach().numpy().astype(np.float32), **z)
        f.create_dataset("tokens", data=tokens.numpy().astype(np.int32), track_times=False)
        f.create_dataset("targets", data=targets.numpy().astype(np.int32), track_times=False)
        f.create_dataset("orig_hw", data=np.array(HW, dtype=np.int32), track_times=False)
        f.create_dataset("image_emb", data=img_emb.numpy().astype(np.float32), **z)
        f.create_dataset("gt_masks", data=torch.cat(gts).numpy().astype(np.float32), **z)
        f.create_dataset("clip_pixels", data=clip_pixels.numpy().astype(np.float32), **z)
        f.create_dataset("crop_pixels", data=crop_pixels.numpy().astype(np.float32), **z)
        f.create_dataset("boxes", data=boxes.numpy().astype(np.float32), track_times=False)
        f.create_dataset("fbank", data=fbank.numpy().astype(np.float32), **z)
        f.create_dataset("feat", data=feat_out.numpy(), **z)
        for grp, (losses, grads, dfeat) in results.items():
            f.create_dataset(grp + "/losses", data=np.array(losses, dtype=np.float64), track_times=False)
            f.create_dataset(grp + "/dfeat", data=dfeat.numpy(), **z)
            for k, g in grads.items():
                f.create_dataset(grp + "/grads/" + k, data=g.numpy(), **z)
    print("wrote %s: B %d T %d, %d feature rows, %d trainable tensors" % (path, B, T, R, len(trainable)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: anyref_mm_ref.py OUT.h5")
    main(sys.argv[1])
