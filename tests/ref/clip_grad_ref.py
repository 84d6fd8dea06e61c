#!/usr/bin/python3
"""tests/ref/clip_grad_ref.py — PyTorch float64 autograd gradients of the CLIP
vision tower (model/clip_vit.c with clip_vit_cfg.trainable = 1).

Usage: /usr/bin/python3 tests/ref/clip_grad_ref.py tests/fixtures/clip_grad.h5   (`make fixtures`)

The tower is tests/ref/clip_ref.py's functional statement of Hugging Face
modeling_clip (imported from there, so the forward the gradients run through is
the one tests/fixtures/clip.h5 checks, and that tests/ref/check_clip_hf.py
checks against the real CLIPVisionModel). Same tiny sizes: image 32, patch 8
(16 patches + CLS), width 32, 3 layers, 4 heads, MLP 64, eps 1e-5, N = 2
images; its own weights, pixels and cotangents (seed 20250).

For each variant the features are LLaVA's selection of hidden_states and the
loss is L = sum(features * r) for a fixed random r of the features' shape;
autograd gives dL/d(every tower tensor the features depend on). Tensors the
features do not depend on (the layers after the selected one, post_layernorm)
have no gradient and none is written: the C registry declares them frozen.

Variants (group name: activation, select_layer, CLS):
  quick_gelu       quick-GELU (OpenAI CLIP), -2, dropped  (LLaVA's choice)
  gelu             exact GELU,               -2, dropped
  quick_gelu_last  quick-GELU,               -1, kept     (every layer, the CLS path)

Fixture layout (float64; inputs and weights float32-representable):
  attrs                       image_size, patch, channels, width, layers, heads, mlp_dim, N, eps
  pixels                      [N, 3, 32, 32]
  params/<name>               every tower tensor, prefix model.vision_tower.vision_tower.vision_model.
  <variant> attrs             select_layer, keep_cls
  <variant>/r                 [N, P, W]  the cotangent (P = 16, or 17 with CLS)
  <variant>/features          [N, P, W]
  <variant>/grads/<name>      dL/d<name> for every tensor the features depend on
"""
import os
import sys

import h5py
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_ref as cr  # noqa: E402  (the shared tower)

VARIANTS = [("quick_gelu", cr.quick_gelu, -2, 0),
            ("gelu", lambda t: F.gelu(t), -2, 0),
            ("quick_gelu_last", cr.quick_gelu, -1, 1)]


def main(path):
    gen = torch.Generator().manual_seed(20250)
    params = cr.make_params(gen)
    pixels = cr.rnd(gen, (cr.N, cr.CH, cr.IMG, cr.IMG), 1.0)
    with h5py.File(path, "w") as f:
        for k, v in dict(image_size=cr.IMG, patch=cr.PATCH, channels=cr.CH, width=cr.W, layers=cr.L,
                         heads=cr.H, mlp_dim=cr.MLP, N=cr.N).items():
            f.attrs[k] = v
        f.attrs["eps"] = cr.EPS
        f["pixels"] = pixels.numpy()
        for k, v in params.items():
            f["params/" + cr.PFX + k] = v.numpy()
        for name, act, select, keep_cls in VARIANTS:
            p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
            hs = cr.clip_hidden_states(p, pixels, act)
            feats = hs[select] if keep_cls else hs[select][:, 1:]
            r = cr.rnd(gen, tuple(feats.shape), 1.0)
            (feats * r).sum().backward()
            g = f.create_group(name)
            g.attrs["select_layer"] = select
            g.attrs["keep_cls"] = keep_cls
            g["r"] = r.numpy()
            g["features"] = feats.detach().numpy()
            n = 0
            for k, v in p.items():
                if v.grad is not None:
                    g["grads/" + cr.PFX + k] = v.grad.numpy()
                    n += 1
            print("%s: %d gradients" % (name, n))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/clip_grad.h5")
