#!/usr/bin/python3
"""tests/ref/clip_ref.py — PyTorch float64 reference of the CLIP vision tower and
LLaVA's mm_projector (model/clip_vit.c).

Usage: /usr/bin/python3 tests/ref/clip_ref.py tests/fixtures/clip.h5   (`make fixtures`)

Written from Hugging Face transformers' modeling_clip (CLIPVisionEmbeddings,
CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPVisionTransformer) and LLaVA's
CLIPVisionTower / build_vision_projector, in plain functional torch (no
transformers import, so it is an independent statement of the semantics;
tests/ref/check_clip_hf.py checks it once against the real CLIPVisionModel):
  patch_embeds = conv2d(pixels, patch_embedding.weight, stride=patch), no bias,
                 flattened to [N, g*g, W] in row-major grid order
  x = cat(class_embedding, patch_embeds) + position_embedding.weight
  hidden_states[0] = pre_layrnorm(x)
  per layer: x = x + out_proj(attn(layer_norm1(x))); x = x + fc2(act(fc1(layer_norm2(x))))
             attn: q, k, v with bias, heads of W/H, softmax(q k^T / sqrt(hd)) v, no mask
  hidden_states[l + 1] = output of layer l; post_layernorm only touches the
  pooled CLS output, which LLaVA does not use.
  LLaVA: features = hidden_states[select_layer] (-2), [:, 1:] ('patch').
mm_projector: 'linear' = Linear(W, D); 'mlp2x_gelu' = Linear(W, D), GELU
(exact erf), Linear(D, D). Its input is the selected patch features; autograd
gives the gradients of L = Σ out·r into its weights and into its input.

The tiny tower: image 32, patch 8 (4x4 = 16 patches + CLS), width 32, 3 layers,
4 heads, MLP 64, LayerNorm eps 1e-5, N = 2 images; projector width D = 24.
Weights are random with non-trivial LayerNorm scales and biases.

Fixture layout (float64; inputs and weights float32-representable):
  attrs                     image_size, patch, channels, width, layers, heads, mlp_dim, N, proj_dim, eps
  pixels                    [N, 3, 32, 32]
  params/<name>             CLIP tensors, LLaVA prefix model.vision_tower.vision_tower.vision_model.*
  quick_gelu/hidden         [L+1, N, T, W]  every hidden state (hidden_act quick_gelu, openai CLIP)
  gelu/hidden               [L+1, N, T, W]  the same tower with hidden_act gelu
  <form>/params/<name>      model.mm_projector.* for form in linear, mlp2x_gelu
  <form>/r                  [N*P, D] the random cotangent
  <form>/out                [N*P, D] projector(hidden[-2][:, 1:]) of the quick_gelu tower
  <form>/grads/in           [N*P, W]
  <form>/grads/<name>       projector weight gradients
"""
import sys

import h5py
import torch
import torch.nn.functional as F

f64 = torch.float64
IMG, PATCH, CH, W, L, H, MLP, N, D = 32, 8, 3, 32, 3, 4, 64, 2, 24
EPS = 1e-5
G = IMG // PATCH
T = 1 + G * G
PFX = "model.vision_tower.vision_tower.vision_model."
PPFX = "model.mm_projector."


def rnd(gen, shape, std, mean=0.0):
    """float32-representable float64 normals."""
    return (torch.randn(shape, generator=gen) * std + mean).float().to(f64)


def make_params(gen):
    p = {}
    p["embeddings.patch_embedding.weight"] = rnd(gen, (W, CH, PATCH, PATCH), 0.1)
    p["embeddings.class_embedding"] = rnd(gen, (W,), 0.5)
    p["embeddings.position_embedding.weight"] = rnd(gen, (T, W), 0.3)
    p["pre_layrnorm.weight"] = rnd(gen, (W,), 0.2, 1.0)
    p["pre_layrnorm.bias"] = rnd(gen, (W,), 0.1)
    for i in range(L):
        b = "encoder.layers.%d." % i
        for nm in ("q_proj", "k_proj", "v_proj", "out_proj"):
            p[b + "self_attn." + nm + ".weight"] = rnd(gen, (W, W), 0.25)
            p[b + "self_attn." + nm + ".bias"] = rnd(gen, (W,), 0.1)
        for nm in ("layer_norm1", "layer_norm2"):
            p[b + nm + ".weight"] = rnd(gen, (W,), 0.2, 1.0)
            p[b + nm + ".bias"] = rnd(gen, (W,), 0.1)
        p[b + "mlp.fc1.weight"] = rnd(gen, (MLP, W), 0.2)
        p[b + "mlp.fc1.bias"] = rnd(gen, (MLP,), 0.1)
        p[b + "mlp.fc2.weight"] = rnd(gen, (W, MLP), 0.15)
        p[b + "mlp.fc2.bias"] = rnd(gen, (W,), 0.1)
    p["post_layernorm.weight"] = rnd(gen, (W,), 0.2, 1.0)
    p["post_layernorm.bias"] = rnd(gen, (W,), 0.1)
    return p


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def clip_hidden_states(p, pixels, act):
    """Every hidden state of CLIPVisionTransformer: [L+1] tensors [N, T, W]."""
    n = pixels.shape[0]
    pe = F.conv2d(pixels, p["embeddings.patch_embedding.weight"], stride=PATCH)   # [N, W, G, G]
    pe = pe.flatten(2).transpose(1, 2)                                           # [N, G*G, W]
    cls = p["embeddings.class_embedding"].expand(n, 1, W)
    x = torch.cat([cls, pe], dim=1) + p["embeddings.position_embedding.weight"].unsqueeze(0)
    x = F.layer_norm(x, (W,), p["pre_layrnorm.weight"], p["pre_layrnorm.bias"], EPS)
    hs = [x]
    hd = W // H
    for i in range(L):
        b = "encoder.layers.%d." % i

        def lin(t, nm):
            return F.linear(t, p[b + nm + ".weight"], p[b + nm + ".bias"])

        h = F.layer_norm(x, (W,), p[b + "layer_norm1.weight"], p[b + "layer_norm1.bias"], EPS)
        q = lin(h, "self_attn.q_proj").view(n, T, H, hd).transpose(1, 2)
        k = lin(h, "self_attn.k_proj").view(n, T, H, hd).transpose(1, 2)
        v = lin(h, "self_attn.v_proj").view(n, T, H, hd).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) * hd ** -0.5, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(n, T, W)
        x = x + lin(o, "self_attn.out_proj")
        h = F.layer_norm(x, (W,), p[b + "layer_norm2.weight"], p[b + "layer_norm2.bias"], EPS)
        x = x + lin(act(lin(h, "mlp.fc1")), "mlp.fc2")
        hs.append(x)
    return hs


def make_projector(gen, form):
    if form == "linear":
        return {"weight": rnd(gen, (D, W), 0.2), "bias": rnd(gen, (D,), 0.1)}
    return {"0.weight": rnd(gen, (D, W), 0.2), "0.bias": rnd(gen, (D,), 0.1),
            "2.weight": rnd(gen, (D, D), 0.2), "2.bias": rnd(gen, (D,), 0.1)}


def projector(pp, x, form):
    if form == "linear":
        return F.linear(x, pp["weight"], pp["bias"])
    return F.linear(F.gelu(F.linear(x, pp["0.weight"], pp["0.bias"])), pp["2.weight"], pp["2.bias"])


def main(path):
    gen = torch.Generator().manual_seed(20240)
    params = make_params(gen)
    pixels = rnd(gen, (N, CH, IMG, IMG), 1.0)
    with h5py.File(path, "w") as f:
        for k, v in dict(image_size=IMG, patch=PATCH, channels=CH, width=W, layers=L, heads=H,
                         mlp_dim=MLP, N=N, proj_dim=D).items():
            f.attrs[k] = v
        f.attrs["eps"] = EPS
        f["pixels"] = pixels.numpy()
        for k, v in params.items():
            f["params/" + PFX + k] = v.numpy()
        with torch.no_grad():
            hq = clip_hidden_states(params, pixels, quick_gelu)
            hg = clip_hidden_states(params, pixels, lambda t: F.gelu(t))
        f["quick_gelu/hidden"] = torch.stack(hq).numpy()
        f["gelu/hidden"] = torch.stack(hg).numpy()
        feats = hq[-2][:, 1:].reshape(N * G * G, W)      # LLaVA: hidden_states[-2], drop CLS
        for form in ("linear", "mlp2x_gelu"):
            pp = {k: v.clone().requires_grad_(True) for k, v in make_projector(gen, form).items()}
            x = feats.clone().requires_grad_(True)
            r = rnd(gen, (N * G * G, D), 1.0)
            out = projector(pp, x, form)
            (out * r).sum().backward()
            for k, v in pp.items():
                f[form + "/params/" + PPFX + k] = v.detach().numpy()
                f[form + "/grads/" + PPFX + k] = v.grad.numpy()
            f[form + "/r"] = r.numpy()
            f[form + "/out"] = out.detach().numpy()
            f[form + "/grads/in"] = x.grad.numpy()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/clip.h5")
