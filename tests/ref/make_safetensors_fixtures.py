#!/usr/bin/python3
"""tests/ref/make_safetensors_fixtures.py — safetensors files written by the
official `safetensors` package, for tests/test_safetensors.c.

Usage:
    /usr/bin/python3 tests/ref/make_safetensors_fixtures.py tests/fixtures/safetensors
    /usr/bin/python3 tests/ref/make_safetensors_fixtures.py --check FILE.safetensors
(needs `pip install safetensors`; torch 1.13 from Debian is enough.)

Writes into the directory:
  basic.safetensors      F32 [3,4] with -0, ±inf, nan, the smallest subnormal;
                         F16 [4,8] with ±0, subnormals, ±inf, quiet nans, extremes;
                         BF16 [2,2,4] likewise; an F32 0-d scalar; an F32 [0,3]
                         empty tensor; I64 [3]; BOOL [2]; metadata
                         {"format": "pt", "note": "anyref fixture"}
  basic_expected.bin     float32 little endian: w, h, b, scalar in that order,
                         converted by PyTorch (.float(), exact)
  sharded/               model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json
                         (the layout transformers' save_pretrained writes), mixed dtypes
                         and one tensor a small decoder registry does not have
  sharded_expected.bin   float32: embed_tokens, q_proj, input_layernorm, norm, lm_head
  f32_model.safetensors  F32 only, metadata {"format": "pt"}: the C writer must
                         reproduce this file byte for byte

--check FILE reads a file (e.g. one written by st_save) with safetensors.safe_open,
prints every tensor, and re-saves the tensors with safetensors.torch.save_file and
the file's own metadata (one key at most, so that the bytes are deterministic),
reporting whether the result is byte-identical to FILE.
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

g = torch.Generator().manual_seed(20240611)


def bits16(words, dtype):
    return torch.tensor(np.array(words, dtype=np.uint16).view(np.int16)).view(dtype)


def write_expected(path, tensors):
    with open(path, "wb") as f:
        for t in tensors:
            f.write(t.float().contiguous().numpy().astype("<f4").tobytes())


def basic(out):
    w = torch.randn(3, 4, generator=g)
    w.view(-1)[:6] = torch.tensor([-0.0, float("inf"), float("-inf"), float("nan"),
                                   1.401298464324817e-45, 3.4028234663852886e38])
    # F16 bit patterns: +0, -0, min subnormal, max subnormal, -subnormal, min normal,
    # max finite, -max, +inf, -inf, quiet nan, negative quiet nan with payload, 1, -2, 0.5, ...
    hwords = [0x0000, 0x8000, 0x0001, 0x03FF, 0x8155, 0x0400, 0x7BFF, 0xFBFF,
              0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x3C00, 0xC000, 0x3800, 0x0200]
    hwords += [int(x) for x in torch.randint(0, 0x7C00, (16,), generator=g)]
    h = bits16(hwords, torch.float16).reshape(4, 8)
    bwords = [0x0000, 0x8000, 0x0001, 0x807F, 0x0080, 0x7F7F, 0x7F80, 0xFF80,
              0x7FC0, 0xFFC1, 0x3F80, 0xC040]
    bwords += [int(x) for x in torch.randint(0, 0x7F80, (4,), generator=g)]
    b = bits16(bwords, torch.bfloat16).reshape(2, 2, 4)
    scalar = torch.tensor(3.5)
    empty = torch.zeros(0, 3)
    ids = torch.tensor([1, -2, 3], dtype=torch.int64)
    mask = torch.tensor([True, False])
    save_file({"w": w, "h": h, "b": b, "scalar": scalar, "empty": empty, "ids": ids, "mask": mask},
              os.path.join(out, "basic.safetensors"),
              metadata={"format": "pt", "note": "anyref fixture"})
    write_expected(os.path.join(out, "basic_expected.bin"), [w, h, b, scalar])


def sharded(out):
    d = os.path.join(out, "sharded")
    os.makedirs(d, exist_ok=True)
    t = {
        "model.embed_tokens.weight": torch.randn(6, 4, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4, generator=g).bfloat16(),
        "model.layers.0.input_layernorm.weight": (1 + 0.1 * torch.randn(4, generator=g)).half(),
        "model.norm.weight": torch.randn(4, generator=g),
        "lm_head.weight": torch.randn(6, 4, generator=g).half(),
        "model.layers.0.self_attn.rotary_emb.inv_freq": torch.tensor([1.0, 0.01]),
    }
    names = list(t)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    weight_map, total = {}, 0
    for fname, keys in shards.items():
        save_file({k: t[k] for k in keys}, os.path.join(d, fname), metadata={"format": "pt"})
        for k in keys:
            weight_map[k] = fname
            total += t[k].numel() * t[k].element_size()
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                  f, indent=2, sort_keys=True)
        f.write("\n")
    write_expected(os.path.join(out, "sharded_expected.bin"), [t[k] for k in names[:5]])


def f32_model(out):
    t = {
        "b.weight": torch.randn(2, 3, generator=g),
        "a.bias": torch.randn(3, generator=g),
        "a.weight": torch.randn(3, 2, generator=g),
        "Z.upper": torch.randn(1, generator=g),
        "a.weight.conv": torch.randn(2, 1, 2, 2, generator=g),
        "a_weight": torch.randn(5, generator=g),
    }
    save_file(t, os.path.join(out, "f32_model.safetensors"), metadata={"format": "pt"})


def check(path):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    print(f"{path}: {len(tensors)} tensors, metadata {meta}")
    for k, v in tensors.items():
        print(f"  {k}: {v.dtype} {list(v.shape)} sum={v.double().sum().item():.9g}")
    if meta is not None and len(meta) > 1:
        print("more than one metadata key: the official writer's order is not deterministic, no byte comparison")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        ref = os.path.join(tmp, "ref.safetensors")
        save_file(tensors, ref, metadata=meta)
        same = open(ref, "rb").read() == open(path, "rb").read()
    print("byte-identical to safetensors.torch.save_file:", "yes" if same else "NO")
    return 0 if same else 1


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2]))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    basic(out)
    sharded(out)
    f32_model(out)


if __name__ == "__main__":
    main()
