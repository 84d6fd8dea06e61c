#!/usr/bin/env python3
"""tests/ref/check_sam_encoder_official.py — checks tests/ref/sam_image_encoder_ref.py
against the official segment-anything package, once, by hand (not part of
`make test` or `make fixtures`: it needs the package, which the build does not).

Usage (the PyPI package `segment-anything` 1.0 is the official code):
    /usr/bin/python3 -m venv --system-site-packages venv-sam
    venv-sam/bin/pip install --no-deps segment-anything
    venv-sam/bin/python tests/ref/check_sam_encoder_official.py tests/fixtures/sam_image_encoder.h5

For both fixture configs it builds segment_anything.modeling.ImageEncoderViT
(use_rel_pos=True, LayerNorm eps 1e-6, the config's window and global blocks),
in float64, loads the fixture's weights (config b's rel_pos tables have other
lengths than the module creates: they replace the parameters, so the official
get_rel_pos resizes them), and compares every block's tokens and the neck
output with the fixture. Prints the max relative errors; exits 1 above 1e-10.
"""
import sys
from functools import partial

import h5py
import numpy as np
import torch
import torch.nn as nn
from segment_anything.modeling.image_encoder import ImageEncoderViT


def rel_err(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-300)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_sam_encoder_official.py FIXTURE.h5")
    torch.set_default_dtype(torch.float64)
    worst = 0.0
    with h5py.File(sys.argv[1], "r") as f:
        for key, prefix in (("a", "image_encoder."), ("b", "model.visual_model.image_encoder.")):
            at = lambda n: int(f.attrs["%s.%s" % (key, n)])
            gmask = at("global_mask")
            m = ImageEncoderViT(img_size=at("img_size"), patch_size=at("patch"), embed_dim=at("dim"),
                                depth=at("depth"), num_heads=at("heads"), mlp_ratio=at("mlp_dim") / at("dim"),
                                out_chans=at("out_chans"), qkv_bias=True,
                                norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                window_size=at("window"),
                                global_attn_indexes=[l for l in range(at("depth")) if gmask >> l & 1]).double()
            grp = f["%s_params" % key]
            sd = {n[len(prefix):]: torch.from_numpy(grp[n][()].astype(np.float64)) for n in grp}
            with torch.no_grad():
                for blk_i, blk in enumerate(m.blocks):       # tables of another length replace the parameters
                    for t in ("rel_pos_h", "rel_pos_w"):
                        setattr(blk.attn, t, nn.Parameter(sd["blocks.%d.attn.%s" % (blk_i, t)].clone()))
            m.load_state_dict(sd, strict=True)
            image = torch.from_numpy(f[key + "/image"][()].astype(np.float64))
            with torch.no_grad():
                x = m.patch_embed(image) + m.pos_embed
                errs = [rel_err(x, torch.from_numpy(f["%s/tokens_0" % key][()]))]
                for l, blk in enumerate(m.blocks):
                    x = blk(x)
                    errs.append(rel_err(x, torch.from_numpy(f["%s/tokens_%d" % (key, l + 1)][()])))
                out = m.neck(x.permute(0, 3, 1, 2))
                eo = rel_err(out, torch.from_numpy(f[key + "/out"][()]))
                full = rel_err(m(image), torch.from_numpy(f[key + "/out"][()]))
            print("config %s (%s): tokens max rel err per block %s; neck out %.2e; forward() %.2e"
                  % (key, prefix, " ".join("%.1e" % e for e in errs), eo, full))
            worst = max([worst, eo, full] + errs)
    print("worst %.2e: %s" % (worst, "reference matches segment-anything" if worst < 1e-10 else "MISMATCH"))
    sys.exit(0 if worst < 1e-10 else 1)


if __name__ == "__main__":
    main()
