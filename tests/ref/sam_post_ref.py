#!/usr/bin/python3
"""tests/ref/sam_post_ref.py — PyTorch float64 reference of SAM mask post-processing (model/sam_post.c).

Usage: /usr/bin/python3 tests/ref/sam_post_ref.py tests/fixtures/sam_post.h5   (`make fixtures`)

Written from segment-anything's Sam.postprocess_masks and ResizeLongestSide
.get_preprocess_shape, plus AnyRef's AVSBench resize of the prediction to the
ground-truth mask's size, not from the C code; autograd gives the gradient.
At the real sizes (256 -> 1024 -> crop -> original) the full tensors would be
megabytes, so the input and the loss weights come from integer formulas that
the C test evaluates too (exact in float32), and the fixture keeps summaries:
every row sum, every column sum and a strided subsample of the output and of
the input gradient (every element enters some row and column sum).

  in[p, i, j] = (((37 i + 11 j + 5 p) mod 23) - 11) / 4        [P, 256, 256]
  r[p, y, x]  = (((7 y + 13 x + 3 p) mod 17) - 8) / 8            [P, Hm, Wm]
  loss = sum(out * r), din = d loss / d in

Fixture layout (float64 unless noted), one group per case "<name>/":
  attrs P, Hl, Wl, S, H0, W0, Hm, Wm, rh, rw (int)
  out_sub [P, ceil(Hm/16), ceil(Wm/16)] = out[:, ::16, ::16], out_rows [P, Hm], out_cols [P, Wm]
  din_sub [P, 32, 32] = din[:, ::8, ::8], din_rows [P, Hl], din_cols [P, Wl], loss [1]
and resize_shapes int32 [K, 5] rows (H0, W0, S, rh, rw).
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

f64 = torch.float64
CASES = [  # name, P, H0, W0, Hm, Wm
    ("portrait", 2, 640, 480, 640, 480),
    ("landscape", 1, 480, 640, 480, 640),
    ("avs", 1, 480, 640, 224, 224),
]
HL, S = 256, 1024
SHAPES = [(480, 640), (640, 480), (427, 640), (333, 500), (37, 23), (23, 37), (1, 1000), (999, 1000),
          (1000, 999), (511, 1024), (3, 5)]


def preprocess_shape(oldh, oldw, long_side):
    scale = long_side * 1.0 / max(oldh, oldw)
    newh, neww = oldh * scale, oldw * scale
    return int(newh + 0.5), int(neww + 0.5)


def postprocess(masks, input_size, original_size, S):
    x = F.interpolate(masks, (S, S), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False)


def main(path):
    with h5py.File(path, "w") as f:
        f["resize_shapes"] = np.array([(h, w, 1024) + preprocess_shape(h, w, 1024) for h, w in SHAPES] +
                                      [(37, 23, 64) + preprocess_shape(37, 23, 64)], dtype=np.int32)
        for name, P, H0, W0, Hm, Wm in CASES:
            p, i, j = torch.meshgrid(torch.arange(P), torch.arange(HL), torch.arange(HL), indexing="ij")
            x = ((((37 * i + 11 * j + 5 * p) % 23) - 11).to(f64) / 4).unsqueeze(1).requires_grad_(True)
            rh, rw = preprocess_shape(H0, W0, S)
            out = postprocess(x, (rh, rw), (H0, W0), S)
            if (Hm, Wm) != (H0, W0):
                out = F.interpolate(out, (Hm, Wm), mode="bilinear", align_corners=False)
            out = out[:, 0]
            p, y, xx = torch.meshgrid(torch.arange(P), torch.arange(Hm), torch.arange(Wm), indexing="ij")
            r = (((7 * y + 13 * xx + 3 * p) % 17) - 8).to(f64) / 8
            loss = (out * r).sum()
            loss.backward()
            din = x.grad[:, 0]
            o = out.detach()
            g = f.create_group(name)
            for k, v in dict(P=P, Hl=HL, Wl=HL, S=S, H0=H0, W0=W0, Hm=Hm, Wm=Wm, rh=rh, rw=rw).items():
                g.attrs[k] = v
            g["out_sub"] = o[:, ::16, ::16].contiguous().numpy()
            g["out_rows"] = o.sum(2).numpy()
            g["out_cols"] = o.sum(1).numpy()
            g["din_sub"] = din[:, ::8, ::8].contiguous().numpy()
            g["din_rows"] = din.sum(2).numpy()
            g["din_cols"] = din.sum(1).numpy()
            g["loss"] = np.array([loss.item()])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sam_post.h5")
