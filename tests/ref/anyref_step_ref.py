#!/usr/bin/python3
"""tests/ref/anyref_step_ref.py — PyTorch float64 reference of one whole AnyRef
training step (model/anyref.c): LLaMA + LoRA -> [SEG] head (refocusing) ->
SAM prompt encoder (dense PE, no_mask embedding) + mask decoder -> mask
post-processing to the original size -> CE + BCE + Dice (SPEC 2.9).

Usage: /usr/bin/python3 tests/ref/anyref_step_ref.py tests/fixtures/anyref_step.h5   (`make fixtures`)

Built by importing the per-module references, not from the C code:
  tests/ref/llama_recipe_ref.py  parameter list / init / trainable set (LoRA on all
                                 seven projections, embed + lm_head trainable) and the
                                 bit-exact C LoRA dropout masks (step_masks); the layer
                                 loop below uses its helpers (rms_norm, RoPE, repeat_kv,
                                 lora_linear) and additionally keeps the final hidden
                                 states and the last layer's attention probabilities
  tests/ref/seg_head_ref.py      refocus_rows (the [SEG] rows, refocusing with λ)
  tests/ref/sam_prompt_ref.py    dense_pe
  tests/ref/sam_decoder_ref.py   MaskDecoder (SAM names, single-mask output)
  tests/ref/sam_post_ref.py      postprocess + preprocess_shape
Losses: CE = mean token cross-entropy (ignore -100); per mask BCE = mean of
softplus(x) - x y, Dice = 1 - (2 Σσ(x)y + s) / (Σσ(x) + Σy + s), s = 1e-3
(kernels/kernels.h DICE_SMOOTH); aggregated per SPEC 2.9 with n_b, N:
  BCE = Σ_b [Σ_m l / (n_b + 1e-8) * n_b] / (N + 1e-8), Dice = Σ_b [Σ_m l / n_b * n_b] / (N + 1e-8)
  total = 1 CE + 2 BCE + 0.5 Dice.
The batch (the one of tests/test_anyref.c): sample 0 one [SEG] (original 13x11),
sample 1 two [SEG]s (9x15), sample 2 none (7x5). LoRA dropout 0.1 with the C
masks for dropout_seed. The decoder preset is "anyref": mask_tokens,
output_upscaling and the hypernetwork MLPs trainable (MLPs 1..3 get exactly 0).

Fixture layout (weights float32; other float datasets float64 unless noted):
  attrs                     config, dropout_seed (uint64), lambdas
  params/<registry name>    every tensor (LLaMA HF names, model.text_hidden_fcs.0.*,
                            prompt_encoder.*, mask_decoder.*)
  tokens, targets int32 [B*T]; orig_hw int32 [B, 2]
  image_emb float32 [B, C, G, G]; gt_masks float32 [Σ H0*W0] ([SEG]s in torch.where order)
  lam0/losses, lam0.1/losses [4]   ce, bce, dice, total
  lam0/grads/<name>, lam0.1/grads/<name>   d total / d every trainable tensor
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_recipe_ref as LR                     # noqa: E402
import sam_decoder_ref as SD                      # noqa: E402  (sets the default dtype to float64)
import sam_post_ref as SP                         # noqa: E402
import sam_prompt_ref as SPR                      # noqa: E402
import seg_head_ref as SH                         # noqa: E402
from llama_ref import f32, lora_linear, repeat_kv, rms_norm, rope_cos_sin, rotate_half   # noqa: E402

f64 = torch.float64
torch.set_default_dtype(f64)

V, DM, SEG, C, G, B, T = 16, 16, 15, 16, 4, 3, 8
S_IMG = 16 * G
LLM = dict(vocab=V, dim=DM, layers=2, heads=2, kv_heads=1, mlp_hidden=24, max_seq=T, norm_eps=1e-6,
           rope_theta=10000.0, lora_rank=2, lora_alpha=4.0, lora_dropout=0.1, lora_targets=0x7F,
           train_base=0, train_embed=1, train_lm_head=1, B=B, T=T)
DEC = dict(dim=C, depth=2, heads=2, mlp_dim=24, downsample=2, num_mask_tokens=4, iou_hidden=16, H=G, W=G,
           n_sparse=1)
DROPOUT_SEED = 0x5EED5EED0BADF00D
LAMBDAS = [("lam0", 0.0), ("lam0.1", 0.1)]
BF16W = "lam0.1_bf16w"   # λ 0.1 over the bf16-rounded frozen projections
BF16G = "lam0.1_bf16g"   # the same with train.gemm = bf16 emulated (BF16Base)
F16G = "lam0.1_f16g"     # model.frozen_weights = fp16 and train.gemm = fp16
BF16A = "lam0.1_bf16a"   # model.activations = bf16 (RoundST where the C rounds), fp32 weights and GEMMs
GEMM_BF16 = [None]       # the 16-bit type the frozen products round to (None: none)
ACT_BF16 = [False]       # model.activations = bf16


def bf16(t, dt=torch.bfloat16):
    """t rounded to bf16 (or dt) as the C side rounds its float32 values (nearest, ties to even)."""
    return t.float().to(dt).double()


class RoundST(torch.autograd.Function):
    """model.activations = bf16 (model/llama.c keep16): a kept tensor rounded to
    bf16 where it is made, the forward going on from the rounded value; backward
    takes the rounding's derivative as 1."""

    @staticmethod
    def forward(ctx, x):
        return bf16(x)

    @staticmethod
    def backward(ctx, g):
        return g


def keep(t):
    return RoundST.apply(t) if ACT_BF16[0] else t


class BF16Base(torch.autograd.Function):
    """x @ w^T for a frozen w in train.gemm = bf16 / fp16 mode (kernels/cpu/bf16.c):
    the activation rounded to that type in forward, the output gradient rounded in
    backward, products and sums exact (float64 here, fp32 accumulation there)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(w)
        return F.linear(bf16(x, GEMM_BF16[0]), w)

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return bf16(g, GEMM_BF16[0]) @ w, None


class BF16Lin(torch.autograd.Function):
    """x @ w^T for a trainable w in train.gemm = bf16 mode (model/llama.c's
    lm_head: a bf16 copy of the fp32 weight, linear_bf16_* and
    linear_bf16_backward_weight): both operands rounded to bf16 in forward; in
    backward the output gradient rounded, din from the rounded weight and dw
    from the rounded activation; products and sums exact."""

    @staticmethod
    def forward(ctx, x, w):
        xr, wr = bf16(x), bf16(w)
        ctx.save_for_backward(xr, wr)
        return F.linear(xr, wr)

    @staticmethod
    def backward(ctx, g):
        xr, wr = ctx.saved_tensors
        gr = bf16(g)
        return gr @ wr, gr.transpose(-1, -2) @ xr


CE_W, BCE_W, DICE_W, DICE_SMOOTH = 1.0, 2.0, 0.5, 1e-3
TOK = [[3, 4, 5, 6, 7, SEG, 8, 2], [3, 9, 10, 11, SEG, 12, SEG, 2], [3, 4, 9, 5, 6, 10, 2, 1]]
ANS = [3, 2, 4]
HW = [(13, 11), (9, 15), (7, 5)]
FCS = "model.text_hidden_fcs.0."
GAUSS, NOMASK = SPR.GAUSS, SPR.NOMASK
DEC_TRAIN = ("mask_tokens.", "output_upscaling.", "output_hypernetworks_mlps.")


def llama_forward(P, tokens, targets, masks, c, x0=None):
    """The decoder of llama_recipe_ref.forward, also returning the final hidden
    states [B*T, D] (after model.norm) and the last layer's attention [B, H, T, T].
    x0 [B*T, D], if given, replaces the embedding lookup of tokens (spliced
    feature rows, tests/ref/anyref_mm_ref.py)."""
    Bn, Tn, D, H, Hkv = c["B"], c["T"], c["dim"], c["heads"], c["kv_heads"]
    hd = D // H
    scaling = c["lora_alpha"] / c["lora_rank"]
    cos, sin = rope_cos_sin(Tn, hd, c["rope_theta"])
    causal = torch.full((Tn, Tn), float("-inf"), dtype=f64).triu(1)

    def proj(l, i, inp):
        pre = "model.layers.%d.%s." % (l, LR.PROJ_NAME[i])
        m = masks["%s.%d" % (LR.PROJ[i], l)].view(Bn, Tn, -1)
        if GEMM_BF16[0] is not None:   # train.gemm = bf16 / fp16: the frozen base product on bf16-rounded operands, LoRA as before
            A, Bm = P[pre + "lora_A.weight"], P[pre + "lora_B.weight"]
            return BF16Base.apply(inp, P[pre + "weight"]) + F.linear(F.linear(inp * m, A), Bm) * scaling
        if ACT_BF16[0]:   # LoRA's kept xd (dropout output) and u rounded too
            A, Bm = P[pre + "lora_A.weight"], P[pre + "lora_B.weight"]
            return F.linear(inp, P[pre + "weight"]) + F.linear(keep(F.linear(keep(inp * m), A)), Bm) * scaling
        return lora_linear(inp, P[pre + "weight"], P[pre + "lora_A.weight"], P[pre + "lora_B.weight"], m, scaling)

    if x0 is None:
        x = F.embedding(tokens.view(Bn, Tn), P["model.embed_tokens.weight"])
    else:
        x = x0.view(Bn, Tn, D)
    att = None
    for l in range(c["layers"]):   # keep(): where model.activations = bf16 rounds (identity otherwise)
        pre = "model.layers.%d." % l
        x = keep(x)
        h = keep(rms_norm(x, P[pre + "input_layernorm.weight"], c["norm_eps"]))
        q = keep(proj(l, 0, h)).view(Bn, Tn, H, hd).transpose(1, 2)
        k = keep(proj(l, 1, h)).view(Bn, Tn, Hkv, hd).transpose(1, 2)
        v = keep(proj(l, 2, h)).view(Bn, Tn, Hkv, hd).transpose(1, 2)
        q = keep(q * cos + rotate_half(q) * sin)
        k = keep(k * cos + rotate_half(k) * sin)
        k, v = repeat_kv(k, H // Hkv), repeat_kv(v, H // Hkv)
        att = torch.softmax(torch.matmul(q, k.transpose(2, 3)) / (hd ** 0.5) + causal, dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(Bn, Tn, D)   # ao stays fp32 (model/llama.h)
        x = keep(x + proj(l, 3, o))
        h = keep(rms_norm(x, P[pre + "post_attention_layernorm.weight"], c["norm_eps"]))
        x = x + proj(l, 6, keep(F.silu(keep(proj(l, 4, h))) * keep(proj(l, 5, h))))
    xf = rms_norm(x, P["model.norm.weight"], c["norm_eps"])
    if GEMM_BF16[0] is torch.bfloat16:   # train.gemm = bf16: lm_head from its bf16 copy (BF16Lin)
        logits = BF16Lin.apply(xf, P["lm_head.weight"]).reshape(Bn * Tn, c["vocab"])
    else:
        logits = F.linear(xf, P["lm_head.weight"]).reshape(Bn * Tn, c["vocab"])
    ce = F.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")
    return ce, xf.reshape(Bn * Tn, D), att


def step(P, fcs, dec, tokens, targets, masks, img, gts, c, lam, x0=None, hw=HW):
    """One step on the batch of c["B"] x c["T"] (seg_head_ref's module sizes must
    match); x0 as in llama_forward, hw the original (H0, W0) per sample."""
    B = c["B"]
    ce, xf, att = llama_forward(P, tokens, targets, masks, c, x0)
    rows, segs = SH.refocus_rows(tokens.view(B, c["T"]), targets.view(B, c["T"]), xf, att, lam)
    emb = fcs(rows)                                                  # [n, C]
    pe = SPR.dense_pe(P[GAUSS], G, G)[None]
    dense = P[NOMASK].reshape(1, C, 1, 1).expand(1, C, G, G)
    n = len(segs)
    bsum, dsum = 0.0, 0.0
    for b in range(B):
        ks = [k for k in range(n) if segs[k][0] == b]
        if not ks:
            continue
        nb = len(ks)
        low, _ = dec(img[b:b + 1], pe, emb[ks].unsqueeze(1), dense)   # [nb, 1, 4G, 4G]
        H0, W0 = hw[b]
        x = SP.postprocess(low, SP.preprocess_shape(H0, W0, S_IMG), (H0, W0), S_IMG)[:, 0].reshape(nb, -1)
        y = torch.stack([gts[k] for k in ks])
        bce = F.binary_cross_entropy_with_logits(x, y, reduction="none").mean(1)
        sg = torch.sigmoid(x)
        dice = 1 - (2 * (sg * y).sum(1) + DICE_SMOOTH) / (sg.sum(1) + y.sum(1) + DICE_SMOOTH)
        bsum = bsum + bce.sum() / (nb + 1e-8) * nb
        dsum = dsum + dice.sum() / nb * nb
    bce = bsum / (n + 1e-8)
    dice = dsum / (n + 1e-8)
    total = CE_W * ce + BCE_W * bce + DICE_W * dice
    return ce, bce, dice, total


def make_grounding(P, rs):
    """text_hidden_fcs and the SAM mask decoder with this fixture's random weights,
    drawn from rs; adds the two prompt-encoder tensors to P. Returns fcs, dec and
    their {registry name: parameter} maps."""
    # text_hidden_fcs (Linear D->D, ReLU, Linear D->C, Dropout 0)
    fcs = torch.nn.Sequential(torch.nn.Linear(DM, DM), torch.nn.ReLU(), torch.nn.Linear(DM, C),
                              torch.nn.Dropout(0.0))
    dec = SD.MaskDecoder(DEC)
    with torch.no_grad():
        for name, p in fcs.named_parameters():
            fan = p.shape[1] if p.dim() == 2 else 1
            p.copy_(f32((1.5 if p.dim() == 2 else 0.3) * rs.standard_normal(tuple(p.shape)) / np.sqrt(fan)))
        for name, p in dec.named_parameters():           # as tests/ref/sam_decoder_ref.py
            if name.endswith("bias"):
                a = 0.3 * rs.standard_normal(tuple(p.shape))
            elif p.dim() == 1:
                a = 1.0 + 0.3 * rs.standard_normal(tuple(p.shape))
            elif name in ("iou_token.weight", "mask_tokens.weight"):
                a = rs.standard_normal(tuple(p.shape))
            else:
                fan_in = p.shape[1] if p.dim() == 2 else p.shape[0]
                a = rs.standard_normal(tuple(p.shape)) / np.sqrt(fan_in)
            p.copy_(f32(a))
    P[GAUSS] = f32(rs.standard_normal((2, C // 2)))
    P[NOMASK] = f32(0.5 * rs.standard_normal((1, C)))
    fcs_names = {FCS + k: v for k, v in fcs.named_parameters()}
    dec_names = {"mask_decoder." + k: v for k, v in dec.named_parameters()}
    return fcs, dec, fcs_names, dec_names


def main(path):
    c = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in LLM.items()}
    rs = np.random.RandomState(20261126)
    shapes = LR.param_shapes(c)
    P = LR.make_params(c, rs)
    trainable = {name for name, _, tr in shapes if tr}
    # LoRA B from 0.1 to 0.5 std: visible LoRA gradients and a LoRA share in the hidden states
    for name in P:
        if "lora_B" in name:
            P[name] = f32(0.5 * rs.standard_normal(tuple(P[name].shape)))
    fcs, dec, fcs_names, dec_names = make_grounding(P, rs)
    trainable |= set(fcs_names)
    trainable |= {k for k in dec_names if k[len("mask_decoder."):].startswith(DEC_TRAIN)}

    tokens = torch.tensor(TOK, dtype=torch.long).reshape(-1)
    tg = torch.full((B, T), -100, dtype=torch.long)
    for b in range(B):
        for t in range(T):
            if t >= ANS[b] - 1 and t + 1 < T:
                tg[b, t] = TOK[b][t + 1]
    targets = tg.reshape(-1)
    img = f32(rs.standard_normal((B, C, G, G)))
    gts = []
    for b in range(B):
        for t in range(T):
            if TOK[b][t] == SEG:
                H0, W0 = HW[b]
                gts.append(f32((rs.uniform(size=H0 * W0) < 0.4).astype(np.float64)))
    masks = {k: torch.from_numpy(v.astype(np.float64)) for k, v in LR.step_masks(c, DROPOUT_SEED).items()}

    # the seg_head reference works on its module-level sizes: this batch's
    SH.B, SH.T, SH.D, SH.SEG = B, T, DM, SEG

    allp = dict(P)
    allp.update(fcs_names)
    allp.update(dec_names)
    results = {}
    # model.frozen_weights = bf16: the frozen LLaMA projections rounded to bf16
    # (nearest, ties to even: torch's .to(bfloat16)) as the loader stores them,
    # the rest of the step in float64 as before
    Pb, Ph = dict(P), dict(P)
    for name in P:
        if name.startswith("model.layers.") and name.endswith("_proj.weight"):
            Pb[name] = bf16(P[name])
            Ph[name] = bf16(P[name], torch.float16)
    for grp, lam in LAMBDAS + [(BF16W, 0.1), (BF16G, 0.1), (F16G, 0.1), (BF16A, 0.1)]:
        lam = float(np.float32(lam))
        for t in allp.values():
            t.grad = None
            t.requires_grad_(True)
        GEMM_BF16[0] = {BF16G: torch.bfloat16, F16G: torch.float16}.get(grp)
        ACT_BF16[0] = grp == BF16A
        Pg = Ph if grp == F16G else Pb if grp in (BF16W, BF16G) else P
        ce, bce, dice, total = step(Pg, fcs, dec, tokens, targets, masks, img, gts, c, lam)
        total.backward()
        GEMM_BF16[0], ACT_BF16[0] = None, False   # after backward: BF16Base.backward reads it too
        grads = {}
        for k in sorted(trainable):
            g = allp[k].grad
            grads[k] = torch.zeros_like(allp[k]) if g is None else g.detach().clone()
        results[grp] = ([ce.item(), bce.item(), dice.item(), total.item()], grads)
        zero = [k for k in trainable if not bool((grads[k] != 0).any())]
        want_zero = [k for k in trainable if k.startswith("mask_decoder.output_hypernetworks_mlps.")
                     and not k.startswith("mask_decoder.output_hypernetworks_mlps.0.")]
        assert sorted(zero) == sorted(want_zero), (grp, sorted(zero))
        print("%s: ce %.6f bce %.6f dice %.6f total %.6f, %d trainable tensors"
              % (grp, ce.item(), bce.item(), dice.item(), total.item(), len(trainable)))

    with LR.open_reproducible(path, ["params", "lam0", "lam0/grads", "lam0.1", "lam0.1/grads", BF16W,
                                     BF16W + "/grads", BF16G, BF16G + "/grads", F16G, F16G + "/grads", BF16A,
                                     BF16A + "/grads"]) as f:
        f.attrs["generator"] = "tests/ref/anyref_step_ref.py (torch %s, float64)" % torch.__version__
        for k, v in c.items():
            f.attrs[k] = np.int32(v) if isinstance(v, int) else np.float64(v)
        for k, v in DEC.items():
            f.attrs["dec_" + k] = np.int32(v)
        f.attrs["seg_token"] = np.int32(SEG)
        f.attrs["img_size"] = np.int32(S_IMG)
        f.attrs["dropout_seed"] = np.uint64(DROPOUT_SEED)
        z = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)
        for name in sorted(allp):
            f.create_dataset("params/" + name, data=allp[name].detach().numpy().astype(np.float32), **z)
        f.create_dataset("tokens", data=tokens.numpy().astype(np.int32), track_times=False)
        f.create_dataset("targets", data=targets.numpy().astype(np.int32), track_times=False)
        f.create_dataset("orig_hw", data=np.array(HW, dtype=np.int32), track_times=False)
        f.create_dataset("image_emb", data=img.numpy().astype(np.float32), **z)
        f.create_dataset("gt_masks", data=torch.cat(gts).numpy().astype(np.float32), **z)
        for grp, (losses, grads) in results.items():
            f.create_dataset(grp + "/losses", data=np.array(losses, dtype=np.float64), track_times=False)
            for k, g in grads.items():
                f.create_dataset(grp + "/grads/" + k, data=g.numpy(), **z)
    print("wrote %s" % path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: anyref_step_ref.py OUT.h5")
    main(sys.argv[1])
