#!/usr/bin/python3
"""tests/ref/llama_recipe_ref.py — PyTorch float64 reference of the AnyRef training
recipe on the LLaMA decoder (model/llama.c + optim/optim.c).

Usage: /usr/bin/python3 tests/ref/llama_recipe_ref.py tests/fixtures/llama_recipe.h5   (`make fixtures`)

The recipe: base weights frozen, LoRA (rank 4, alpha 8, dropout 0.1) on all
seven projections (q k v o gate up down), embed_tokens and lm_head trainable;
two input rows are spliced feature vectors (token id -1 on the C side) instead
of embedding lookups; right padding in sequence 1. The decoder follows the
Hugging Face modeling_llama semantics and PEFT LoRA
(lora_B(lora_A(dropout(x))) * alpha / r); the helpers (RMSNorm, RoPE, repeat_kv,
LoRA linear, and the bit-exact C rng_derive/dropout_mask) are those of
tests/ref/llama_ref.py, imported from it. Autograd gives the gradients.

Step 0 (dropout seed rng_derive(BASE_SEED, 0)): loss, logits, the gradient of
every trainable tensor and d loss / d(input embeddings). Then 5 training steps
s = 0..4, each: zero grads, forward with dropout seed rng_derive(BASE_SEED, s)
(masks regenerated per step, per layer l, per projection i from
rng_derive(seed_s, 7 l + i) as model/llama.c does), backward, global-norm
clipping at 1.0 (torch.nn.utils.clip_grad_norm_), torch.optim.AdamW step
(lr 1e-2, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on tensors of >= 2
dims, 0 on the rest). Training step 0 is the same computation as step 0 above.

Fixture layout (weights are float32-representable and stored as float32, every
other float dataset is float64):
  attrs                 config (vocab, dim, ..., B, T, train_* flags, lora_targets,
                        lr, beta1, beta2, eps, weight_decay, grad_clip, steps) and
                        base_seed (uint64)
  params/<HF name>      every parameter (float32)
  grads/<HF name>       step-0 d loss / d parameter, trainable tensors only
  tokens, targets       int32 [B*T]; tokens are -1 at the spliced rows
  splice_rows           int32 [S] flattened row indices (b*T + t) of the spliced rows
  features              [S, dim] the input rows written at splice_rows (float32-exact)
  embeds_grad           [B*T, dim] step-0 d loss / d(input embeddings), every row
  loss [1], logits [B*T, vocab]   step 0
  masks/<proj>.<l>      [B*T, in] step-0 LoRA dropout masks (0 or 1/(1-p)), proj in
                        q k v o gate up down
  train/loss [steps]    loss of each training step (before its update)
  train/grad_norm [steps]  global gradient norm before clipping
  final/<HF name>       trainable tensors after the last step
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from llama_ref import dropout_mask, f32, lora_linear, repeat_kv, rms_norm, rng_derive, \
    rope_cos_sin, rotate_half

f64 = torch.float64
PROJ = ["q", "k", "v", "o", "gate", "up", "down"]   # model/llama.c LLAMA_Q..LLAMA_DOWN order
PROJ_NAME = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]

CFG = dict(vocab=41, dim=32, layers=2, heads=4, kv_heads=2, mlp_hidden=48, max_seq=16,
           norm_eps=1e-6, rope_theta=10000.0, lora_rank=4, lora_alpha=8.0, lora_dropout=0.1,
           lora_targets=0x7F, train_base=0, train_embed=1, train_lm_head=1, B=2, T=10)
OPT = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0, steps=5)
BASE_SEED = 0xA11CE5EED0DDBA11      # above 2^63: exercises unsigned handling on both sides
SPLICE = [(0, 3), (1, 1)]           # (sequence, position) of the feature rows
PAD = 2                             # last PAD positions of sequence 1 are padding


def proj_dims(c, i):
    D, F_, kvd = c["dim"], c["mlp_hidden"], c["kv_heads"] * (c["dim"] // c["heads"])
    return [(D, D), (D, kvd), (D, kvd), (D, D), (D, F_), (D, F_), (F_, D)][i]   # (in, out)


def param_shapes(c):
    """Every parameter with its shape and trainability under the recipe."""
    D, V, R = c["dim"], c["vocab"], c["lora_rank"]
    tb = c["train_base"]
    s = [("model.embed_tokens.weight", (V, D), bool(tb or c["train_embed"]))]
    for l in range(c["layers"]):
        pre = "model.layers.%d." % l
        s.append((pre + "input_layernorm.weight", (D,), bool(tb)))
        for i, pn in enumerate(PROJ_NAME):
            if pn == "mlp.gate_proj":
                s.append((pre + "post_attention_layernorm.weight", (D,), bool(tb)))
            fin, fout = proj_dims(c, i)
            s.append((pre + pn + ".weight", (fout, fin), bool(tb)))
            if c["lora_targets"] >> i & 1:
                s.append((pre + pn + ".lora_A.weight", (R, fin), True))
                s.append((pre + pn + ".lora_B.weight", (fout, R), True))
    s.append(("model.norm.weight", (D,), bool(tb)))
    s.append(("lm_head.weight", (V, D), bool(tb or c["train_lm_head"])))
    return s


def make_params(c, rs):
    P = {}
    for name, shape, _ in param_shapes(c):
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            a = 1.0 + 0.3 * rs.standard_normal(shape)           # not all ones
        elif name == "model.embed_tokens.weight":
            a = rs.standard_normal(shape)
        elif "lora_" in name:
            # B != 0 so A gets a gradient. 0.1 keeps the seven LoRA branches ~20% of each
            # projection: at 0.3 they dominate and the 5-step trajectory turns sharp (grad
            # norms up to 27, the loss rising), amplifying float32 rounding to ~1e-4 even
            # between PyTorch float32 and float64.
            a = 0.1 * rs.standard_normal(shape)
        else:
            a = rs.standard_normal(shape) / np.sqrt(shape[1])    # unit-scale activations
        P[name] = f32(a)
    return P


def step_masks(c, seed):
    """The LoRA dropout masks model/llama.c draws for dropout seed `seed`:
    dropout_mask(N*in, p, rng_derive(seed, 7 l + i)) for projection i of layer l."""
    N, p32 = c["B"] * c["T"], np.float32(c["lora_dropout"])
    masks = {}
    for l in range(c["layers"]):
        for i, pn in enumerate(PROJ):
            if c["lora_targets"] >> i & 1:
                fin, _ = proj_dims(c, i)
                masks["%s.%d" % (pn, l)] = dropout_mask(N * fin, p32, rng_derive(seed, 7 * l + i)).reshape(N, fin)
    return masks


def forward(P, x0, targets, masks, c):
    """Decoder from the input embeddings x0 [B, T, D]; masks as float64 tensors [N, in]."""
    B, T, D, H, Hkv = c["B"], c["T"], c["dim"], c["heads"], c["kv_heads"]
    hd = D // H
    eps = c["norm_eps"]
    scaling = c["lora_alpha"] / c["lora_rank"]
    cos, sin = rope_cos_sin(T, hd, c["rope_theta"])
    causal = torch.full((T, T), float("-inf"), dtype=f64).triu(1)

    def proj(l, i, inp):
        pre = "model.layers.%d.%s." % (l, PROJ_NAME[i])
        if not c["lora_targets"] >> i & 1:
            return F.linear(inp, P[pre + "weight"])
        m = masks["%s.%d" % (PROJ[i], l)].view(B, T, -1)
        return lora_linear(inp, P[pre + "weight"], P[pre + "lora_A.weight"], P[pre + "lora_B.weight"], m, scaling)

    x = x0
    for l in range(c["layers"]):
        pre = "model.layers.%d." % l
        h = rms_norm(x, P[pre + "input_layernorm.weight"], eps)
        q = proj(l, 0, h).view(B, T, H, hd).transpose(1, 2)
        k = proj(l, 1, h).view(B, T, Hkv, hd).transpose(1, 2)
        v = proj(l, 2, h).view(B, T, Hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, H // Hkv)
        v = repeat_kv(v, H // Hkv)
        s = torch.matmul(q, k.transpose(2, 3)) / (hd ** 0.5) + causal
        a = torch.softmax(s, dim=-1)
        o = torch.matmul(a, v).transpose(1, 2).reshape(B, T, D)
        x = x + proj(l, 3, o)
        h = rms_norm(x, P[pre + "post_attention_layernorm.weight"], eps)
        x = x + proj(l, 6, F.silu(proj(l, 4, h)) * proj(l, 5, h))
    x = rms_norm(x, P["model.norm.weight"], eps)
    logits = F.linear(x, P["lm_head.weight"]).reshape(B * T, c["vocab"])
    loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")
    return loss, logits


def input_embeds(P, tokens, feats, rows, c):
    """Embedding lookup for rows with token id >= 0, the given feature vectors at `rows`."""
    emb = F.embedding(tokens.clamp(min=0), P["model.embed_tokens.weight"])   # [N, D]
    keep = (tokens >= 0).to(f64)[:, None]
    spliced = torch.zeros_like(emb).index_add(0, rows, feats)
    return emb * keep + spliced


def open_reproducible(path, groups):
    """A new HDF5 file (1.10 format) without object timestamps, so regenerating the
    fixture gives the same bytes; the groups are created here for the same reason."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    for g in groups:
        h5py.h5g.create(f.id, g.encode(), gcpl=gcpl)
    return f


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: llama_recipe_ref.py OUT.h5")
    torch.manual_seed(0)
    # the C side holds the float settings as float32: use exactly those values
    c = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in CFG.items()}
    o = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in OPT.items()}
    rs = np.random.RandomState(20240612)
    shapes = param_shapes(c)
    P = make_params(c, rs)
    P_init = {name: t.numpy().astype(np.float32) for name, t in P.items()}   # AdamW updates P in place
    B, T, D, V = c["B"], c["T"], c["dim"], c["vocab"]
    N = B * T

    tok = rs.randint(0, V, size=N).astype(np.int64)
    tg = rs.randint(0, V, size=N).astype(np.int64)
    rows = np.array([b * T + t for b, t in SPLICE], dtype=np.int64)
    tok[rows] = -1                      # spliced feature rows
    tg[rows] = -100                     # no target on a feature row
    tg[[2, T + 5]] = -100               # a few more ignored targets
    pad = np.arange(2 * T - PAD, 2 * T)
    tok[pad] = 0                        # right padding of sequence 1
    tg[pad] = -100
    tokens, targets, rows_t = torch.from_numpy(tok), torch.from_numpy(tg), torch.from_numpy(rows)
    feats = f32(rs.standard_normal((len(rows), D)))

    trainable = [name for name, _, tr in shapes if tr]
    for name in trainable:
        P[name].requires_grad_(True)
    feats.requires_grad_(True)

    def run(seed):
        masks = step_masks(c, seed)
        for k, m in masks.items():      # a mask that drops nothing (or all) would test little
            frac = float((m == 0).mean())
            assert 0.02 < frac < 0.3, (k, frac)
        tm = {k: torch.from_numpy(m.astype(np.float64)) for k, m in masks.items()}
        x0 = input_embeds(P, tokens, feats, rows_t, c)
        x0.retain_grad()
        loss, logits = forward(P, x0.view(B, T, D), targets, tm, c)
        loss.backward()
        return loss, logits, x0, masks

    # ---- step 0: values and gradients
    loss0, logits0, x0, masks0 = run(rng_derive(BASE_SEED, 0))
    grads0 = {name: P[name].grad.detach().clone() for name in trainable}
    embeds_grad = x0.grad.detach().clone()
    assert torch.equal(embeds_grad[rows_t], feats.grad)   # d features = d(input embeddings) rows

    # ---- training: clip_grad_norm_ + AdamW, as optim_step
    decay = [P[n] for n in trainable if P[n].dim() >= 2]
    no_decay = [P[n] for n in trainable if P[n].dim() < 2]
    groups = [g for g in ({"params": decay, "weight_decay": o["weight_decay"]},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    opt = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    losses, norms = [], []
    for s in range(o["steps"]):
        opt.zero_grad(set_to_none=True)
        feats.grad = None
        loss, _, _, _ = run(rng_derive(BASE_SEED, s))
        norm = torch.nn.utils.clip_grad_norm_([P[n] for n in trainable], o["grad_clip"])
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    assert losses[0] == loss0.item()

    with open_reproducible(sys.argv[1], ("params", "grads", "masks", "train", "final")) as f:
        f.attrs["generator"] = "tests/ref/llama_recipe_ref.py (torch %s, float64)" % torch.__version__
        for k, v in list(c.items()) + list(o.items()):
            f.attrs[k] = np.int32(v) if isinstance(v, int) else np.float64(v)
        f.attrs["base_seed"] = np.uint64(BASE_SEED)
        z = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)  # reproducible bytes
        for name, _, _ in shapes:
            f.create_dataset("params/" + name, data=P_init[name], **z)
        for name in trainable:
            f.create_dataset("grads/" + name, data=grads0[name].numpy(), **z)
            f.create_dataset("final/" + name, data=P[name].detach().numpy(), **z)
        f.create_dataset("tokens", data=tok.astype(np.int32), track_times=False)
        f.create_dataset("targets", data=tg.astype(np.int32), track_times=False)
        f.create_dataset("splice_rows", data=rows.astype(np.int32), track_times=False)
        f.create_dataset("features", data=feats.detach().numpy(), **z)
        f.create_dataset("embeds_grad", data=embeds_grad.numpy(), **z)
        f.create_dataset("loss", data=np.array([loss0.item()], dtype=np.float64), track_times=False)
        f.create_dataset("logits", data=logits0.detach().numpy(), **z)
        for k, m in masks0.items():
            f.create_dataset("masks/" + k, data=m.astype(np.float64), **z)
        f.create_dataset("train/loss", data=np.array(losses, dtype=np.float64), track_times=False)
        f.create_dataset("train/grad_norm", data=np.array(norms, dtype=np.float64), track_times=False)
    print("wrote %s: step-0 loss %.6f over %d targets, %d trainable of %d parameters; "
          "training losses %s, grad norms %s"
          % (sys.argv[1], loss0.item(), int((targets != -100).sum()),
             sum(P[n].numel() for n in trainable), sum(t.numel() for t in P.values()),
             " ".join("%.6f" % v for v in losses), " ".join("%.3f" % v for v in norms)))


if __name__ == "__main__":
    main()
