#!/usr/bin/python3
"""tests/ref/sam_prompt_ref.py — PyTorch float64 reference of SAM's dense prompt parts (model/sam_prompt.c).

Usage: /usr/bin/python3 tests/ref/sam_prompt_ref.py tests/fixtures/sam_prompt.h5   (`make fixtures`)

Written from segment-anything's PositionEmbeddingRandom.forward((H, W)) and
PromptEncoder's no-mask dense embedding, not from the C code: grid cell centres
(cumsum of ones - 0.5) / size, stacked as (x, y), mapped to 2c - 1, multiplied
by the gaussian matrix, times 2*pi, [sin, cos] on the channel axis, permuted
to C x H x W. A non-square grid checks that row 0 of the matrix multiplies x.

Fixture layout (float64; weights float32-representable):
  attrs                 embed_dim, grid_h, grid_w
  params/<SAM name>     the two frozen tensors
  dense_pe [C, H, W], dense_embed [C, H, W]
"""
import sys

import h5py
import math
import torch

f64 = torch.float64
C, H, W = 32, 6, 9
GAUSS = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
NOMASK = "prompt_encoder.no_mask_embed.weight"


def dense_pe(g, h, w):
    grid = torch.ones((h, w), dtype=f64)
    y = (grid.cumsum(dim=0) - 0.5) / h
    x = (grid.cumsum(dim=1) - 0.5) / w
    coords = torch.stack([x, y], dim=-1)
    coords = 2 * coords - 1
    coords = coords @ g
    coords = 2 * math.pi * coords
    pe = torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)
    return pe.permute(2, 0, 1)


def main(path):
    gen = torch.Generator().manual_seed(20261126)
    g = torch.randn((2, C // 2), generator=gen).float().to(f64)
    e = torch.randn((1, C), generator=gen).float().to(f64)
    pe = dense_pe(g, H, W)
    de = e.reshape(-1, 1, 1).expand(-1, H, W)
    with h5py.File(path, "w") as f:
        f.attrs["embed_dim"] = C
        f.attrs["grid_h"] = H
        f.attrs["grid_w"] = W
        f["params/" + GAUSS] = g.float().numpy()
        f["params/" + NOMASK] = e.float().numpy()
        f["dense_pe"] = pe.contiguous().numpy()
        f["dense_embed"] = de.contiguous().numpy()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sam_prompt.h5")
