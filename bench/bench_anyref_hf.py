"""bench/bench_anyref_hf.py - the full AnyRef grounding training step (SPEC 1, 2.1-2.6, 2.9)
in PyTorch + transformers + PEFT on a GPU: the reference side of issue 10's benchmark
(b). Not part of `make test` or `make bench`; bench/gpu/run_gpu.sh runs it on the lent
GPU (torch, transformers 4.36..5.x, peft). `--device cpu --dtype fp32` at tiny sizes
smoke-tests it (--check), --count-only counts parameters on the meta device.

The step (tests/ref/anyref_step_ref.py's semantics, the big parts from HF modules,
random weights): CLIP ViT-L/14 (CLIPVisionModel, frozen, no_grad) on B 224-px images,
select_layer -2 (only the 23 layers that feed it run; --clip-full runs all 24 as LLaVA
does), CLS dropped -> frozen Linear projector 1024->4096 -> the 256 rows spliced into
inputs_embeds at positions [P0, P0+256) of each sequence (torch.cat); LlamaForCausalLM
(LLaVA-7B shape, vocab 32000+7, SDPA) with PEFT LoRA r 8 alpha 16 dropout 0.05 on
q_proj,v_proj, embed_tokens and lm_head trainable, gradient checkpointing per decoder
layer (non-reentrant, --no-grad-checkpoint turns it off); CE over the answer tokens
(HF's shifted loss, -100 elsewhere); the [SEG] row p = t-1 of each sample, refocused
(SPEC 2.5, lambda 0.1) with the last layer's head-mean attention row p over the span
[s, p), s = (first label > 0) - 1: q_proj/k_proj outputs of the last layer are
captured by forward hooks during the forward (LoRA dropout included), RoPE'd, and only
the B rows p get softmax(q k^T / sqrt(hd)) in fp32 - gradients flow back through them
into that layer's q/k (and its LoRA) and every H[i]; SDPA runs everywhere else;
text_hidden_fcs (Linear D->D, ReLU, Linear D->256, Dropout 0; trainable) gives the
sparse prompt; SAM ViT-H image encoder (SamModel.vision_encoder, frozen) under no_grad,
one 1024-px image at a time (as LISA/AnyRef loop); frozen prompt encoder (image-wide PE,
no_mask_embed dense prompt); SamMaskDecoder with single-mask output for the B prompts in
one call (point_batch 1), trainable parts as AnyRef (--decoder anyref: mask_tokens,
upscale_conv1/2 + upscale_layer_norm = output_upscaling, output_hypernetworks_mlps; the
rest frozen) or the whole decoder (--decoder lisa); masks post-processed as SAM does
(bilinear to sam-image^2, crop to the resized size, bilinear to the original HxW, default
1024x1024) and, in fp32, BCE with logits (mean over pixels) and Dice (smooth 1e-3 as
kernels.h) aggregated per SPEC 2.9; total = CE + 2 BCE + 0.5 Dice; clip_grad_norm 1.0,
AdamW (lr 3e-4, betas 0.9/0.95, weight decay 0; fused on cuda) over every trainable tensor.
--dtype bf16: every module .to(bfloat16) (no autocast: weights, activations, gradients
and AdamW state in bf16, the usual PEFT set-up; the refocus rows' softmax and the mask
losses in fp32); --dtype fp32 (--tf32 lets matmuls use TF32).

Batch (per step, random): B sequences of T tokens: token 0 BOS, the image rows at
[P0, P0+n_img) (P0 = 36 when it fits, the llava_v1 system prompt's length), random text
ids elsewhere, the last --answer tokens are the supervised answer ending with [SEG] (id
vocab-1) at T-3, '.', '</s>'; random N(0,1) "normalised" images for CLIP and SAM, random
0/1 ground-truth masks of the original size. One [SEG] per sample.

Model FLOPs per step (matmul FLOPs only, 2 per multiply-add; gradient-checkpoint
recomputation NOT counted, as in MFU; N = B*T tokens, D dim, F mlp, V vocab, L layers,
Hq/Hkv heads, hd = D/Hq, r rank):
  LLM  = 4*N*L*(D*D*(2 + 2*Hkv/Hq) + 3*D*F)      frozen base linears: fwd + input grad
       + 6*N*L*2*r*2*D                           LoRA A and B on q, v: fwd + input + weight grad
       + 6*N*D*V                                 lm_head (trainable)
       + 3*L*4*B*Hq*hd*T*(T+1)/2                 causal attention (QK^T, PV), fwd + 2x bwd
  head = 6*B*(D*D + D*256)                       text_hidden_fcs (refocus rows: < 1e-6, left out)
  CLIP = 2*B*[n*3*p*p*W + Lc'*(n+1)*(4*W*W + 2*W*Fc) + Lc'*2*(n+1)^2*W]   forward only,
         n = (img/p)^2, Lc' the layers run; projector 2*B*n*W*D (forward only: frozen, no grad in)
  SAM  = 2*B*[G^2*3*16*16*Ws + Ls*G^2*(4*Ws^2 + 2*Ws*4Ws) + attention + rel-pos + neck]
         forward only; window blocks 2*nw*w^4*Ws (nw windows of w^2 tokens after padding),
         global blocks 2*G^4*Ws; decomposed rel-pos G'^2*Ws*(2*w) per block (G' the padded
         grid, w = G for global blocks); neck G^2*Ws*256 + G^2*256*256*9; the linear layers
         on the G^2 real tokens (the padding rows' projections not counted)
  dec  = 6*B*(mask decoder multiply-adds per prompt), everything counted as trainable (an
         upper bound; < 0.1% of the total)
  total = LLM + head + CLIP + projector + SAM + dec; llm_flops (the LLM line) is printed too.

sam_encoder_ms is the forward's share spent in the SAM image encoder (synchronised around
each image). --check (tiny CPU runs) trains on ONE batch so the loss must fall, compares
the [SEG] rows with the eager attention's probabilities, checks that the refocusing
weights alone reach the last layer's q LoRA through the checkpointed layer, and at step 2
asserts a finite non-zero gradient on every trainable tensor except the ones single-mask
output leaves exactly 0 (hypernetwork MLPs 1-3; with --decoder lisa also the IoU head).
--count-only prints the parameter counts per part (meta device, nothing allocated) and
the FLOPs. Prints '#' lines describing the run, one line per step, and one line
  result side=hf dtype=.. tokens_per_s=.. step_ms=.. fwd_ms=.. bwd_ms=.. opt_ms=.. sam_encoder_ms=..
         peak_mem_gib=.. loss=.. ce=.. bce=.. dice=.. model_flops=.. llm_flops=.. model_tflops_s=..
"""
import argparse
import contextlib
import inspect
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_llama_hf import device_setup, lisa_lora   # the same set-up as the LLaMA step benchmark

CE_W, BCE_W, DICE_W, DICE_SMOOTH = 1.0, 2.0, 0.5, 1e-3
DEC_ANYREF = ("mask_tokens.", "upscale_conv1.", "upscale_conv2.", "upscale_layer_norm.",
              "output_hypernetworks_mlps.")


def args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = ap.add_argument
    a("--steps", type=int, default=5)
    a("--warmup", type=int, default=2)
    a("--batch", type=int, default=6)
    a("--seq", type=int, default=400, help="total tokens per sequence, image rows included")
    a("--answer", type=int, default=16, help="supervised answer tokens at the end (ends with [SEG] . </s>)")
    a("--layers", type=int, default=32)
    a("--dim", type=int, default=4096)
    a("--heads", type=int, default=32)
    a("--kv-heads", type=int, default=0, help="0: = heads")
    a("--mlp", type=int, default=11008)
    a("--vocab", type=int, default=32007, help="32000 + AnyRef's 7 added tokens; [SEG] = vocab-1")
    a("--rank", type=int, default=8)
    a("--lam", type=float, default=0.1, help="refocusing weight (rephrase_weight)")
    a("--clip-width", type=int, default=1024)
    a("--clip-layers", type=int, default=24)
    a("--clip-heads", type=int, default=16)
    a("--clip-mlp", type=int, default=4096)
    a("--clip-image", type=int, default=224)
    a("--clip-patch", type=int, default=14)
    a("--clip-full", action="store_true", help="run all CLIP layers (LLaVA) instead of the ones select_layer -2 needs")
    a("--sam-width", type=int, default=1280)
    a("--sam-layers", type=int, default=32)
    a("--sam-heads", type=int, default=16)
    a("--sam-image", type=int, default=1024)
    a("--sam-window", type=int, default=14)
    a("--sam-global", default="7,15,23,31")
    a("--orig", default="1024x1024", help="original image HxW the masks are compared at")
    a("--decoder", choices=["anyref", "lisa"], default="anyref", help="trainable mask-decoder parts")
    a("--grad-checkpoint", dest="gc", action="store_true", default=True)
    a("--no-grad-checkpoint", dest="gc", action="store_false")
    a("--dtype", choices=["bf16", "fp32"], default="bf16")
    a("--tf32", action="store_true")
    a("--device", default="cuda", help="cpu: a smoke test of the script only")
    a("--peak-tflops", type=float, default=0.0, help="if > 0, also print mfu = model_tflops_s / this")
    a("--check", action="store_true", help="assert every trainable tensor gets a non-zero gradient at step 2 "
      "(tiny runs; LoRA A's gradient is 0 at step 1, B = 0)")
    a("--count-only", action="store_true", help="build on the meta device, print parameter counts, exit")
    return ap.parse_args()


def try_cfg(cls, **kw):
    """A config with attn_implementation='sdpa' where that version takes it."""
    try:
        return cls(attn_implementation="sdpa", **kw)
    except Exception:   # noqa: BLE001 - older transformers
        return cls(**kw)


def make_module(build, cfg):
    """build(cfg), falling back to the default attention when this version's module
    refuses the sdpa request."""
    try:
        return build(cfg)
    except (ValueError, ImportError):
        for attr in ("_attn_implementation", "_attn_implementation_internal"):
            with contextlib.suppress(Exception):
                setattr(cfg, attr, None if attr.endswith("internal") else "eager")
        return build(cfg)


def attn_name(cfg):
    return getattr(cfg, "_attn_implementation", None) or "default"


def build(a, dev, dt):
    """Every module; returns a dict of parts and the PEFT LLM."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, SamConfig, SamModel
    kvh = a.kv_heads or a.heads
    lcfg = try_cfg(LlamaConfig, vocab_size=a.vocab, hidden_size=a.dim, intermediate_size=a.mlp,
                   num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=kvh,
                   max_position_embeddings=max(2048, a.seq), rms_norm_eps=1e-6, use_cache=False,
                   tie_word_embeddings=False)
    llm = make_module(LlamaForCausalLM, lcfg)
    if a.gc and dev.type != "meta":
        try:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        except TypeError:
            raise SystemExit("transformers < 4.35: no non-reentrant gradient checkpointing (refocusing needs it)")
    llm = llm.to(dev, dt) if dev.type != "meta" else llm
    llm = lisa_lora(llm, a.rank)

    ccfg = try_cfg(CLIPVisionConfig, hidden_size=a.clip_width, intermediate_size=a.clip_mlp,
                   num_hidden_layers=a.clip_layers, num_attention_heads=a.clip_heads, image_size=a.clip_image,
                   patch_size=a.clip_patch, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    clip = make_module(CLIPVisionModel, ccfg)
    proj = nn.Linear(a.clip_width, a.dim)

    glob = [int(x) for x in a.sam_global.split(",") if x.strip() != ""]
    G = a.sam_image // 16
    vcfg = dict(hidden_size=a.sam_width, num_hidden_layers=a.sam_layers, num_attention_heads=a.sam_heads,
                image_size=a.sam_image, patch_size=16, window_size=a.sam_window, global_attn_indexes=glob,
                output_channels=256, mlp_dim=4 * a.sam_width)
    scfg = SamConfig(vision_config=vcfg,
                     prompt_encoder_config=dict(hidden_size=256, image_size=a.sam_image, patch_size=16,
                                                image_embedding_size=G),
                     mask_decoder_config=dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=8,
                                              mlp_dim=2048, num_multimask_outputs=3, iou_head_depth=3,
                                              iou_head_hidden_dim=256, attention_downsample_rate=2))
    with contextlib.suppress(Exception):
        scfg._attn_implementation = "sdpa"
    sam = make_module(SamModel, scfg)
    fcs = nn.Sequential(nn.Linear(a.dim, a.dim), nn.ReLU(), nn.Linear(a.dim, 256), nn.Dropout(0.0))

    for m in (clip, proj, sam):
        m.requires_grad_(False)
    for n, p in sam.mask_decoder.named_parameters():
        p.requires_grad_(a.decoder == "lisa" or n.startswith(DEC_ANYREF))
    parts = dict(llm=llm, clip=clip, proj=proj, sam_enc=sam.vision_encoder, sam_prompt=sam.prompt_encoder,
                 sam_dec=sam.mask_decoder, fcs=fcs, sam=sam)
    return parts


PART_NAMES = [("llm", "LLM (LLaMA + LoRA)"), ("clip", "CLIP vision tower"), ("proj", "mm_projector"),
              ("sam_enc", "SAM image encoder"), ("sam_prompt", "SAM prompt encoder"), ("sam_dec", "SAM mask decoder"),
              ("fcs", "[SEG] head (text_hidden_fcs)")]


def counts(parts):
    rows, tf, tt = [], 0, 0
    for key, label in PART_NAMES:
        ps = list(parts[key].parameters())
        t = sum(p.numel() for p in ps if p.requires_grad)
        f = sum(p.numel() for p in ps if not p.requires_grad)
        nt = sum(1 for p in ps if p.requires_grad)
        rows.append((label, f, t, nt))
        tf += f
        tt += t
    return rows, tf, tt


def sam_dec_macs(G, C=256, Nt=6, I=128, mlp=2048, depth=2):
    """Multiply-adds of SamMaskDecoder for one prompt (single-mask output; all 4 masks are computed)."""
    Ni = G * G
    t2i = Nt * C * I + 2 * Ni * C * I + Nt * I * C + 2 * Nt * Ni * I
    i2t = Ni * C * I + 2 * Nt * C * I + Ni * I * C + 2 * Ni * Nt * I
    blk = (4 * Nt * C * C + 2 * Nt * Nt * C) + t2i + 2 * Nt * C * mlp + i2t
    up = Ni * C * (C // 4) * 4 // 1 + (2 * G) ** 2 * (C // 4) * (C // 8) * 4
    hyper = 4 * (C * C + C * C + C * (C // 8))
    masks = (4 * G) ** 2 * (C // 8) * 4
    iou = C * C + C * C + C * 4
    return depth * blk + t2i + up + hyper + masks + iou


def flops(a):
    """The model FLOPs per step of the docstring, by part."""
    B, T, D, F_, V, L = a.batch, a.seq, a.dim, a.mlp, a.vocab, a.layers
    Hq, Hkv = a.heads, a.kv_heads or a.heads
    hd = D // Hq
    N = B * T
    llm = (4 * N * L * (D * D * (2 + 2 * Hkv / Hq) + 3 * D * F_) + 6 * N * L * 2 * a.rank * 2 * D + 6 * N * D * V
           + 3 * L * 4 * B * Hq * hd * T * (T + 1) / 2)
    head = 6 * B * (D * D + D * 256)
    W, p = a.clip_width, a.clip_patch
    n = (a.clip_image // p) ** 2
    lc = a.clip_layers if a.clip_full else a.clip_layers - 1
    clip = 2 * B * (n * 3 * p * p * W + lc * (n + 1) * (4 * W * W + 2 * W * a.clip_mlp) + lc * 2 * (n + 1) ** 2 * W)
    proj = 2 * B * n * W * D
    G, Ws, w = a.sam_image // 16, a.sam_width, a.sam_window
    glob = {int(x) for x in a.sam_global.split(",") if x.strip() != ""}
    gp = -(-G // w) * w                           # padded grid of the window blocks
    nw = (gp // w) ** 2
    sam = G * G * 3 * 16 * 16 * Ws + a.sam_layers * G * G * (4 * Ws * Ws + 2 * Ws * 4 * Ws)
    for i in range(a.sam_layers):
        if i in glob:
            sam += 2 * G ** 4 * Ws + G * G * Ws * 2 * G
        else:
            sam += 2 * nw * w ** 4 * Ws + gp * gp * Ws * 2 * w
    sam += G * G * Ws * 256 + G * G * 256 * 256 * 9
    sam *= 2 * B
    dec = 6 * B * sam_dec_macs(G)
    parts = dict(llm=llm, head=head, clip=clip, proj=proj, sam=sam, dec=dec)
    return sum(parts.values()), parts


def rope_rows(x, pos, hd, theta):
    """HF rotate_half RoPE of x [..., hd] at integer positions pos (broadcast over x's leading dims)."""
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=x.device) / hd))
    fr = pos.to(torch.float32)[..., None] * inv
    emb = torch.cat([fr, fr], -1)
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def main():
    a = args()
    import transformers
    import peft
    kvh = a.kv_heads or a.heads
    B, T = a.batch, a.seq
    n_img = (a.clip_image // a.clip_patch) ** 2
    H0, W0 = (int(x) for x in a.orig.lower().split("x"))
    if T < n_img + a.answer + 2 or a.answer < 4:
        raise SystemExit(f"--seq {T} too short for {n_img} image rows and --answer {a.answer} (>= 4)")
    P0 = min(36, T - n_img - a.answer)
    seg_id = a.vocab - 1

    if a.count_only:
        with torch.device("meta"):
            parts = build(a, torch.device("meta"), torch.float32)
        rows, tf, tt = counts(parts)
        print(f"# hf.torch={torch.__version__} transformers={transformers.__version__} peft={peft.__version__}")
        print("part                              frozen        trainable  trainable tensors")
        for label, f, t, nt in rows:
            print(f"{label:30s} {f:13d} {t:13d} {nt:8d}")
        print(f"{'total':30s} {tf:13d} {tt:13d}")
        total, fl = flops(a)
        print("# model flops per step: " + " ".join(f"{k}={v:.4e}" for k, v in fl.items()) + f" total={total:.4e}")
        return

    dt, dev, cuda, sync = device_setup(a)
    torch.manual_seed(0)
    if cuda:
        torch.set_default_device(dev)   # random init on the GPU: seconds, not minutes
    parts = build(a, dev, dt)
    if cuda:
        torch.set_default_device("cpu")
    for k in ("llm", "clip", "proj", "sam", "fcs"):
        parts[k].to(dev, dt)
    llm, clip, proj, sam, fcs = parts["llm"], parts["clip"], parts["proj"], parts["sam"], parts["fcs"]
    base = llm.get_base_model()
    if not a.clip_full:   # select_layer -2: the last layer's output is never used
        cvm = getattr(clip, "vision_model", clip)   # transformers 5 keeps the encoder on CLIPVisionModel itself
        cvm.encoder.layers = nn.ModuleList(list(cvm.encoder.layers)[:-1])
    llm.train(); fcs.train(); sam.mask_decoder.train()
    clip.eval(); sam.vision_encoder.eval()
    rows, n_frozen, n_train = counts(parts)
    train = [p for k in ("llm", "fcs", "sam_dec") for p in parts[k].parameters() if p.requires_grad]
    tnames = [f"{k}.{n}" for k in ("llm", "fcs", "sam_dec") for n, p in parts[k].named_parameters() if p.requires_grad]
    assert len(train) == sum(r[3] for r in rows)
    opt_kw = dict(fused=True) if cuda else {}   # torch 1.13 (Debian's) has no fused= keyword at all
    opt = torch.optim.AdamW(train, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0, **opt_kw)

    # the last decoder layer's q_proj / k_proj outputs, captured during the forward only
    last = base.model.layers[-1].self_attn
    cap = {"on": False}

    def hook(name):
        def f(mod, inp, out):
            if cap["on"]:
                cap[name] = out
        return f
    last.q_proj.register_forward_hook(hook("q"))
    last.k_proj.register_forward_hook(hook("k"))
    base.model.norm.register_forward_hook(hook("h"))
    theta = getattr(base.config, "rope_theta", None) or \
        (getattr(base.config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    hd = a.dim // a.heads

    G = a.sam_image // 16
    with torch.no_grad():
        if hasattr(sam, "get_image_wide_positional_embeddings"):
            pe = sam.get_image_wide_positional_embeddings()
        else:   # the same grid: cell centres normalised to [0, 1], random Fourier features
            c = (torch.arange(G, device=dev, dtype=dt) + 0.5) / G
            grid = torch.stack([c[None, :].expand(G, G), c[:, None].expand(G, G)], -1)
            pe = sam.shared_image_embedding(grid).permute(2, 0, 1).unsqueeze(0)
    dec_params = set(inspect.signature(sam.mask_decoder.forward).parameters)

    # fixed layout: BOS, prompt text, image rows [P0, P0+n_img), text, answer [T-answer, T) ending [SEG] . </s>
    t_seg = T - 3
    p_row = t_seg - 1
    s_row = T - a.answer - 1          # (first label > 0) - 1
    hr, wr = (a.sam_image, round(W0 * a.sam_image / H0)) if H0 >= W0 else (round(H0 * a.sam_image / W0), a.sam_image)
    hr, wr = min(hr, a.sam_image), min(wr, a.sam_image)

    print(f"# hf.torch={torch.__version__} transformers={transformers.__version__} peft={peft.__version__}")
    print(f"# hf.device={torch.cuda.get_device_name(0) if cuda else 'cpu'} dtype={a.dtype} tf32={int(a.tf32)} "
          f"attn.llm={attn_name(base.config)} attn.clip={attn_name(clip.config)} attn.sam={attn_name(sam.config)} "
          f"grad_checkpoint={int(a.gc)} decoder={a.decoder} clip_layers_run={len(getattr(clip, "vision_model", clip).encoder.layers)}")
    print(f"# hf.config=vocab={a.vocab},dim={a.dim},layers={a.layers},heads={a.heads},kv_heads={kvh},"
          f"mlp_hidden={a.mlp},lora_rank={a.rank},batch={B},seq={T},image_rows={n_img}@{P0},answer={a.answer},"
          f"seg_at={t_seg},lambda={a.lam},clip={a.clip_width}/{a.clip_layers}/{a.clip_heads}/{a.clip_mlp}"
          f"@{a.clip_image}p{a.clip_patch},sam={a.sam_width}/{a.sam_layers}/{a.sam_heads}@{a.sam_image}"
          f"w{a.sam_window}g{a.sam_global},orig={H0}x{W0}")
    for label, f, t, nt in rows:
        print(f"# hf.params {label}: frozen={f} trainable={t} tensors={nt}")
    print(f"# hf.params_total={n_frozen + n_train} params_trainable={n_train} trainable_tensors={len(train)}")
    ftot, fl = flops(a)
    print("# hf.model_flops " + " ".join(f"{k}={v:.4e}" for k, v in fl.items()) + f" total={ftot:.4e}", flush=True)

    g = torch.Generator(device=dev)
    g.manual_seed(7)

    def batch():
        ids = torch.randint(3, seg_id, (B, T), device=dev, generator=g)
        ids[:, 0] = 1
        ids[:, t_seg] = seg_id
        ids[:, T - 2] = 29889
        ids[:, T - 1] = 2
        ids[ids >= a.vocab] = 3
        lab = torch.full((B, T), -100, dtype=torch.long, device=dev)
        lab[:, T - a.answer:] = ids[:, T - a.answer:]
        cimg = torch.randn((B, 3, a.clip_image, a.clip_image), device=dev, generator=g).to(dt)
        simg = torch.randn((B, 3, a.sam_image, a.sam_image), device=dev, generator=g).to(dt)
        gt = (torch.rand((B, H0, W0), device=dev, generator=g) < 0.4).float()
        return ids, lab, cimg, simg, gt

    def seg_rows():
        """Head-mean last-layer attention probabilities of the rows p over [0, p], from the
        captured q, k (fp32): [B, p+1]."""
        q = cap["q"][:, p_row].view(B, a.heads, hd).float()
        k = cap["k"][:, : p_row + 1].view(B, p_row + 1, kvh, hd).float()
        q = rope_rows(q, torch.tensor(p_row, device=dev), hd, theta)
        k = rope_rows(k, torch.arange(p_row + 1, device=dev)[:, None], hd, theta)
        k = k.repeat_interleave(a.heads // kvh, dim=2)
        return torch.softmax(torch.einsum("bhd,bjhd->bhj", q, k) / math.sqrt(hd), -1).mean(1)

    def embed(ids, cimg):
        with torch.no_grad():
            hs = clip(pixel_values=cimg, output_hidden_states=True).hidden_states
            feat = proj(hs[-1 if not a.clip_full else -2][:, 1:])            # [B, n_img, D]
        tok = base.get_input_embeddings()(ids)
        return torch.cat([tok[:, :P0], feat.to(tok.dtype), tok[:, P0 + n_img:]], 1)

    def forward(ids, lab, cimg, simg, gt, tsam):
        x = embed(ids, cimg)
        with torch.no_grad():
            emb = []
            for b in range(B):                                               # as LISA: one image at a time
                sync(); t0 = time.perf_counter()
                o = sam.vision_encoder(simg[b:b + 1])
                emb.append(o.last_hidden_state if hasattr(o, "last_hidden_state") else o[0])
                sync(); tsam.append(time.perf_counter() - t0)
            img_emb = torch.cat(emb)                                         # [B, 256, G, G]
        cap["on"] = True
        out = llm(inputs_embeds=x, labels=lab, use_cache=False)
        cap["on"] = False
        ce = out.loss
        hid = cap["h"]                                                       # [B, T, D] after model.norm
        att = seg_rows()                                                     # [B, p+1]
        hp = hid[:, p_row]
        if a.lam > 0 and s_row < p_row:                                      # refocusing (SPEC 2.5)
            w = att[:, s_row:p_row]
            w = w / w.sum(1, keepdim=True)
            hp = hp + a.lam * (hid[:, s_row:p_row].float() * w[..., None]).sum(1).to(hp.dtype)
        sparse = fcs(hp)                                                     # [B, 256]
        dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(B, -1, G, G)
        kw = dict(image_embeddings=img_emb, image_positional_embeddings=pe.expand(B, -1, -1, -1),
                  sparse_prompt_embeddings=sparse.view(B, 1, 1, 256), dense_prompt_embeddings=dense,
                  multimask_output=False)
        low = sam.mask_decoder(**{k_: v for k_, v in kw.items() if k_ in dec_params})[0][:, 0]   # [B, 1, 4G, 4G]
        m = F.interpolate(low, (a.sam_image, a.sam_image), mode="bilinear", align_corners=False)[..., :hr, :wr]
        m = F.interpolate(m, (H0, W0), mode="bilinear", align_corners=False)[:, 0].float().flatten(1)
        y = gt.flatten(1)
        bce_b = F.binary_cross_entropy_with_logits(m, y, reduction="none").mean(1)
        sg = torch.sigmoid(m)
        dice_b = 1 - (2 * (sg * y).sum(1) + DICE_SMOOTH) / (sg.sum(1) + y.sum(1) + DICE_SMOOTH)
        nb = 1.0                                                             # [SEG]s per sample
        bce = (bce_b / (nb + 1e-8) * nb).sum() / (B + 1e-8)
        dice = (dice_b / nb * nb).sum() / (B + 1e-8)
        total = CE_W * ce.float() + BCE_W * bce + DICE_W * dice
        return total, ce, bce, dice, att

    def check_rows(bt):
        """--check: the rows from the captured q, k against the eager attention's
        probabilities (eval mode: no LoRA dropout), where this version returns them."""
        if not a.check:
            return
        llm.eval()
        try:
            with torch.no_grad():
                cap["on"] = True
                try:
                    out = llm(inputs_embeds=embed(bt[0], bt[2]), output_attentions=True, use_cache=False)
                    ref = out.attentions[-1] if out.attentions else None
                except Exception as e:   # noqa: BLE001 - versions that refuse output_attentions here
                    print(f"# check: output_attentions refused ({type(e).__name__}: {e})")
                    ref = None
                cap["on"] = False
                if ref is None:
                    print("# check: no attention probabilities from this transformers: rows unchecked")
                else:
                    ref = ref[:, :, p_row, : p_row + 1].float().mean(1)
                    err = (seg_rows() - ref).abs().max().item()
                    print(f"# check: [SEG] attention rows (captured q/k) vs eager probabilities: max abs err {err:.3e}")
                    assert err < (1e-5 if dt == torch.float32 else 2e-2), err
        finally:
            cap["on"] = False
            llm.train()

    def ref_path(att):
        """--check: the refocusing weights alone reach the last layer's q LoRA through the
        checkpointed layer (non-reentrant checkpointing keeps the captured q/k in the graph)."""
        lb = base.model.layers[-1].self_attn.q_proj.lora_B
        lb = list(lb.values())[0].weight if isinstance(lb, nn.ModuleDict) else lb.weight
        r = torch.randn(att.shape, device=dev, dtype=att.dtype)
        gq, = torch.autograd.grad((att[:, s_row:p_row] * r[:, s_row:p_row]).sum(), lb, retain_graph=True)
        print(f"# check: d(refocus weights)/d(last layer q lora_B) |.|max = {gq.abs().max().item():.3e}")
        assert gq.abs().max().item() > 0

    ts, tf, tb, to, tsm = [], [], [], [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses = []
    check_rows(batch())
    bt = batch()
    for s in range(a.warmup + a.steps):
        if not a.check:     # --check trains on one batch: the loss must go down
            bt = batch()
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        tsam = []
        total, ce, bce, dice, att = forward(*bt, tsam)
        sync()
        t1 = time.perf_counter()
        chk = a.check and s == min(1, a.warmup + a.steps - 1)   # step 2: LoRA B is 0 at step 1, so dA is 0
        if chk:
            ref_path(att)
            t1 = time.perf_counter()
        total.backward()
        sync()
        t2 = time.perf_counter()
        if chk:
            zero_ok = ("sam_dec.output_hypernetworks_mlps.1.", "sam_dec.output_hypernetworks_mlps.2.",
                       "sam_dec.output_hypernetworks_mlps.3.", "sam_dec.iou_prediction_head.", "sam_dec.iou_token.")
            bad, zeros = [], []
            for n, p in zip(tnames, train):
                nz = p.grad is not None and bool((p.grad != 0).any()) and bool(torch.isfinite(p.grad).all())
                if not nz:
                    (zeros if n.startswith(zero_ok) else bad).append(n)
            print(f"# check: {len(train)} trainable tensors, {n_train} parameters; exactly zero by design "
                  f"(single-mask output): {len(zeros)} {sorted({'.'.join(z.split('.')[:3]) for z in zeros})}")
            assert not bad, f"no / zero / non-finite gradient: {bad}"
            print("# check: every other trainable tensor has a finite non-zero gradient")
        torch.nn.utils.clip_grad_norm_(train, 1.0)
        opt.step()
        sync()
        t3 = time.perf_counter()
        losses.append(total.item())
        tag = "(warmup)" if s < a.warmup else ""
        print(f"step={s + 1}{tag} ms={1e3 * (t3 - t0):.1f} fwd_ms={1e3 * (t1 - t0):.1f} bwd_ms={1e3 * (t2 - t1):.1f} "
              f"opt_ms={1e3 * (t3 - t2):.1f} sam_encoder_ms={1e3 * sum(tsam):.1f} loss={total.item():.4f} "
              f"ce={ce.item():.4f} bce={bce.item():.4f} dice={dice.item():.4f}", flush=True)
        if s >= a.warmup:
            ts.append(t3 - t0); tf.append(t1 - t0); tb.append(t2 - t1); to.append(t3 - t2); tsm.append(sum(tsam))
    if a.check:
        assert all(math.isfinite(x) for x in losses), losses
        print(f"# check: losses {' '.join(f'{x:.4f}' for x in losses)} "
              f"({'decreasing' if losses[-1] < losses[0] else 'NOT decreasing'} first to last)")
    st = statistics.median(ts)
    extra = f" mfu={ftot / st / 1e12 / a.peak_tflops:.4f}" if a.peak_tflops > 0 else ""
    print(f"result side=hf dtype={a.dtype} tf32={int(a.tf32)} tokens_per_s={B * T / st:.1f} step_ms={1e3 * st:.1f} "
          f"fwd_ms={1e3 * statistics.median(tf):.1f} bwd_ms={1e3 * statistics.median(tb):.1f} "
          f"opt_ms={1e3 * statistics.median(to):.1f} sam_encoder_ms={1e3 * statistics.median(tsm):.1f} "
          f"peak_mem_gib={(torch.cuda.max_memory_allocated() if cuda else 0) / 2**30:.2f} "
          f"loss={total.item():.4f} ce={ce.item():.4f} bce={bce.item():.4f} dice={dice.item():.4f} "
          f"model_flops={ftot:.4e} llm_flops={fl['llm']:.4e} model_tflops_s={ftot / st / 1e12:.2f}{extra}", flush=True)


if __name__ == "__main__":
    main()
