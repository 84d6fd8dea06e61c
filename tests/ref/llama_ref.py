#!/usr/bin/python3
"""tests/ref/llama_ref.py — PyTorch float64 reference of the whole LLaMA decoder (model/llama.c).

Usage: /usr/bin/python3 tests/ref/llama_ref.py tests/fixtures/llama.h5   (`make fixtures`)

The decoder is written here from the Hugging Face modeling_llama semantics
(LlamaRMSNorm, rotate_half RoPE, repeat_kv grouped-query attention with a
causal mask, SiLU(gate) * up MLP, final norm, untied lm_head) plus PEFT-style
LoRA on q_proj and v_proj (lora_B(lora_A(dropout(x))) * alpha / r), NOT from
model/llama.c. Autograd gives the gradient of every parameter.

The only thing taken from the C side is the dropout mask, which has to be the
same random draw: rng_derive (core/rng.c) and dropout_mask (kernels/cpu/blas.c)
are reproduced bit for bit in 64-bit integer arithmetic below, and the C test
checks its own masks against the ones stored here.

Fixture layout (all float datasets float64; weights are float32-representable):
  attrs               config (vocab, dim, ..., B, T) and dropout_seed (uint64)
  params/<HF name>    every parameter
  grads/<HF name>     d loss / d parameter (train_base = 1: all trainable)
  tokens, targets     int32 [B*T] (targets hold some -100)
  loss [1], logits [B*T, vocab]
  masks/q.<l>, masks/v.<l>   [B*T, dim] LoRA dropout masks (0 or 1/(1-p))
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

f64 = torch.float64
M64 = (1 << 64) - 1

CFG = dict(vocab=37, dim=32, layers=2, heads=4, kv_heads=2, mlp_hidden=48, max_seq=16,
           norm_eps=1e-6, rope_theta=10000.0, lora_rank=4, lora_alpha=8.0, lora_dropout=0.1,
           train_base=1, B=2, T=9)
DROPOUT_SEED = 0xC0FFEE1234ABCDEF   # above 2^63: exercises unsigned handling on both sides


# ---------------------------------------------------------------- C RNG, bit-exact

def splitmix_finalize(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mix64(z):
    """core/rng.c mix64: one splitmix64 step from state z (add the golden gamma, finalize)."""
    return splitmix_finalize((z + 0x9E3779B97F4A7C15) & M64)


def rng_derive(seed, stream):
    return mix64(mix64(seed) ^ mix64(stream ^ 0xD1B54A32D192ED03))


def dropout_mask(n, p32, seed):
    """kernels/cpu/blas.c dropout_mask: entry i keeps iff (z >> 40) / 2^24 >= p, with
    z = finalize(seed + (i+1) * golden); kept entries are 1/(1-p) computed in float32."""
    p32 = np.float32(p32)
    keep = np.float32(1.0) / (np.float32(1.0) - p32)
    pd = float(p32)
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        z = splitmix_finalize((seed + (i + 1) * 0x9E3779B97F4A7C15) & M64)
        uni = float(z >> 40) * (1.0 / 16777216.0)
        out[i] = keep if uni >= pd else np.float32(0.0)
    return out


# ---------------------------------------------------------------- the decoder (HF semantics)

def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(T, hd, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=f64) / hd))
    freqs = torch.outer(torch.arange(T, dtype=f64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)            # [T, hd]
    return emb.cos()[None, None], emb.sin()[None, None]


def repeat_kv(x, n_rep):
    b, hkv, t, hd = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None].expand(b, hkv, n_rep, t, hd).reshape(b, hkv * n_rep, t, hd)


def lora_linear(x, w, A, Bm, mask, scaling):
    return F.linear(x, w) + F.linear(F.linear(x * mask, A), Bm) * scaling


def forward(P, tokens, targets, masks, c):
    B, T, D, H, Hkv = c["B"], c["T"], c["dim"], c["heads"], c["kv_heads"]
    hd = D // H
    eps = c["norm_eps"]
    scaling = c["lora_alpha"] / c["lora_rank"]
    cos, sin = rope_cos_sin(T, hd, c["rope_theta"])
    causal = torch.full((T, T), float("-inf"), dtype=f64).triu(1)
    x = F.embedding(tokens.view(B, T), P["model.embed_tokens.weight"])
    for l in range(c["layers"]):
        pre = "model.layers.%d." % l
        h = rms_norm(x, P[pre + "input_layernorm.weight"], eps)
        q = lora_linear(h, P[pre + "self_attn.q_proj.weight"], P[pre + "self_attn.q_proj.lora_A.weight"],
                        P[pre + "self_attn.q_proj.lora_B.weight"], masks["q.%d" % l].view(B, T, D), scaling)
        v = lora_linear(h, P[pre + "self_attn.v_proj.weight"], P[pre + "self_attn.v_proj.lora_A.weight"],
                        P[pre + "self_attn.v_proj.lora_B.weight"], masks["v.%d" % l].view(B, T, D), scaling)
        k = F.linear(h, P[pre + "self_attn.k_proj.weight"])
        q = q.view(B, T, H, hd).transpose(1, 2)
        k = k.view(B, T, Hkv, hd).transpose(1, 2)
        v = v.view(B, T, Hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, H // Hkv)
        v = repeat_kv(v, H // Hkv)
        s = torch.matmul(q, k.transpose(2, 3)) / (hd ** 0.5) + causal
        a = torch.softmax(s, dim=-1)
        o = torch.matmul(a, v).transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(o, P[pre + "self_attn.o_proj.weight"])
        h = rms_norm(x, P[pre + "post_attention_layernorm.weight"], eps)
        m = F.silu(F.linear(h, P[pre + "mlp.gate_proj.weight"])) * F.linear(h, P[pre + "mlp.up_proj.weight"])
        x = x + F.linear(m, P[pre + "mlp.down_proj.weight"])
    x = rms_norm(x, P["model.norm.weight"], eps)
    logits = F.linear(x, P["lm_head.weight"]).reshape(B * T, c["vocab"])
    loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")
    return loss, logits


# ---------------------------------------------------------------- data

def param_shapes(c):
    D, F_, V, R = c["dim"], c["mlp_hidden"], c["vocab"], c["lora_rank"]
    kvd = c["kv_heads"] * (D // c["heads"])
    s = [("model.embed_tokens.weight", (V, D))]
    for l in range(c["layers"]):
        pre = "model.layers.%d." % l
        s += [(pre + "input_layernorm.weight", (D,)),
              (pre + "self_attn.q_proj.weight", (D, D)),
              (pre + "self_attn.k_proj.weight", (kvd, D)),
              (pre + "self_attn.v_proj.weight", (kvd, D)),
              (pre + "self_attn.o_proj.weight", (D, D)),
              (pre + "post_attention_layernorm.weight", (D,)),
              (pre + "mlp.gate_proj.weight", (F_, D)),
              (pre + "mlp.up_proj.weight", (F_, D)),
              (pre + "mlp.down_proj.weight", (D, F_)),
              (pre + "self_attn.q_proj.lora_A.weight", (R, D)),
              (pre + "self_attn.q_proj.lora_B.weight", (D, R)),
              (pre + "self_attn.v_proj.lora_A.weight", (R, D)),
              (pre + "self_attn.v_proj.lora_B.weight", (kvd, R))]
    s += [("model.norm.weight", (D,)), ("lm_head.weight", (V, D))]
    return s


def f32(a):
    """float32-representable float64 tensor."""
    return torch.from_numpy(np.asarray(a, dtype=np.float32).astype(np.float64))


def make_params(c, rs):
    P = {}
    for name, shape in param_shapes(c):
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            a = 1.0 + 0.3 * rs.standard_normal(shape)           # not all ones
        elif name == "model.embed_tokens.weight":
            a = rs.standard_normal(shape)
        elif "lora_" in name:
            a = 0.3 * rs.standard_normal(shape)                  # B != 0 so A gets a gradient
        else:
            a = rs.standard_normal(shape) / np.sqrt(shape[1])    # unit-scale activations
        P[name] = f32(a)
    return P


def open_reproducible(path):
    """A new HDF5 file (1.10 format, compact) without object timestamps, so that
    regenerating the fixture gives the same bytes; groups params/, grads/, masks/
    are created here for the same reason."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    for g in ("params", "grads", "masks"):
        h5py.h5g.create(f.id, g.encode(), gcpl=gcpl)
    return f


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: llama_ref.py OUT.h5")
    torch.manual_seed(0)
    # the C side holds the float settings as float32: use exactly those values
    c = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in CFG.items()}
    rs = np.random.RandomState(20240611)
    P = make_params(c, rs)
    N = c["B"] * c["T"]
    tokens = torch.from_numpy(rs.randint(0, c["vocab"], size=N).astype(np.int64))
    tg = rs.randint(0, c["vocab"], size=N).astype(np.int64)
    tg[[0, 5, 9, 17]] = -100          # ignored targets in both sequences
    targets = torch.from_numpy(tg)

    p32 = np.float32(c["lora_dropout"])
    masks = {}
    for l in range(c["layers"]):
        masks["q.%d" % l] = dropout_mask(N * c["dim"], p32, rng_derive(DROPOUT_SEED, 7 * l + 0))
        masks["v.%d" % l] = dropout_mask(N * c["dim"], p32, rng_derive(DROPOUT_SEED, 7 * l + 2))
    for k, m in masks.items():         # a mask that drops nothing (or all) would test little
        frac = float((m == 0).mean())
        assert 0.02 < frac < 0.3, (k, frac)
    tmasks = {k: torch.from_numpy(m.astype(np.float64)) for k, m in masks.items()}

    for t in P.values():
        t.requires_grad_(True)
    loss, logits = forward(P, tokens, targets, tmasks, c)
    loss.backward()

    with open_reproducible(sys.argv[1]) as f:
        f.attrs["generator"] = "tests/ref/llama_ref.py (torch %s, float64)" % torch.__version__
        for k, v in c.items():
            f.attrs[k] = np.int32(v) if isinstance(v, int) else np.float64(v)
        f.attrs["dropout_seed"] = np.uint64(DROPOUT_SEED)
        z = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)  # reproducible bytes
        for name, t in P.items():
            f.create_dataset("params/" + name, data=t.detach().numpy(), **z)
            f.create_dataset("grads/" + name, data=t.grad.numpy(), **z)
        f.create_dataset("tokens", data=tokens.numpy().astype(np.int32), track_times=False)
        f.create_dataset("targets", data=targets.numpy().astype(np.int32), track_times=False)
        f.create_dataset("loss", data=np.array([loss.item()], dtype=np.float64), track_times=False)
        f.create_dataset("logits", data=logits.detach().numpy(), **z)
        for k, m in masks.items():
            f.create_dataset("masks/" + k, data=m.astype(np.float64).reshape(N, c["dim"]), **z)
    print("wrote %s: loss %.6f over %d targets, %d parameters"
          % (sys.argv[1], loss.item(), int((targets != -100).sum()), sum(t.numel() for t in P.values())))


if __name__ == "__main__":
    main()
