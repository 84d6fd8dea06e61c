#!/usr/bin/python3
"""tests/ref/torch_ckpt_ref.py — small PyTorch checkpoints written by torch.save
(Debian torch 1.13) with the structure of the published ones, and what they
hold, for tests/test_torch_ckpt.c (checkpoints/torch_ckpt.h).

Usage:
    /usr/bin/python3 tests/ref/torch_ckpt_ref.py tests/fixtures/torch_ckpt

Writes into the directory:
  sam_vit_h.pth        flat state_dict of an nn.Module tree named as
                       segment-anything's Sam (image_encoder.*, prompt_encoder.*
                       incl. the buffer pe_layer.positional_encoding_gaussian_matrix,
                       mask_decoder.*), F32, as sam_vit_h_4b8939.pth
  imagebind_huge.pth   flat state_dict named as ImageBind's imagebind_huge
                       (modality_preprocessors/trunks/heads/postprocessors.audio...), F32
  llava/pytorch_model-0000{1,2}-of-00002.bin + pytorch_model.bin.index.json
                       transformers' save_pretrained layout of LLaVA: F16 decoder
                       weights in shard 1, BF16 in shard 2, F32 rotary inv_freq buffers
  clip/pytorch_model.bin  CLIPModel names (text_model.*, vision_model.*, the I64
                       position_ids buffers, the 0-d logit_scale), F32
  wrapped.pth          {"model": state_dict, "epoch": 3, "note": "...",
                        "extras": [tensor, tensor]} -> names "model.<key>", "extras.0"
  views.pth            two tensors on one storage (a tensor and a row slice of it),
                       a transpose, a strided slice with a storage offset, a 0-d
                       scalar, an empty [0, 4] tensor, an nn.Parameter
                       (_rebuild_parameter), F64 / I64 / BOOL / I32 / U8 / I8 / I16
  views_deflated.pth   views.pth re-zipped with deflate (zlib path)
  legacy.pth           torch.save(..., _use_new_zipfile_serialization=False)
  bad_system.pth       a data.pkl that calls os.system (GLOBAL posix.system + REDUCE)
  bad_global.pth       a data.pkl naming collections.Counter (not a rebuild function)
  bad_short_storage.pth  a storage entry shorter than its declared numel
  bad_view.pth         a view (offset 2, size (2, 2), stride (2, 1)) past a 4-element storage
  expected.json        per file (the llava index by its json path): every tensor's
                       dtype (safetensors names), shape, values (as float64 of the
                       stored values, C order; not repeated for the llava index and
                       views_deflated.pth) and sum (float64); for bad_* files
                       nothing (the C test checks the messages).

The bad_* pickles are produced by pickle.Pickler from objects whose __reduce__
names the function: pickling only writes the name; nothing is ever unpickled
here (the C reader must refuse them without executing anything).
"""
import collections
import io
import json
import os
import pickle
import sys
import zipfile

import torch
import torch.nn as nn

g = torch.Generator().manual_seed(20261126)

DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
      torch.bool: "BOOL"}


def rnd(*shape, dtype=torch.float32):
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5).to(dtype)


def module_tree(entries):
    """An nn.Module whose state_dict has exactly these (name, tensor, is_buffer) in order."""
    root = nn.Module()
    for name, t, buf in entries:
        parts = name.split(".")
        m = root
        for p in parts[:-1]:
            if p not in m._modules:
                m.add_module(p, nn.Module())
            m = m._modules[p]
        if buf:
            m.register_buffer(parts[-1], t)
        else:
            m.register_parameter(parts[-1], nn.Parameter(t, requires_grad=t.is_floating_point()))
    return root


def describe(sd, out):
    for k, v in sd.items():
        x = v.detach()
        vals = x.double().reshape(-1).tolist() if x.dtype != torch.bool else x.reshape(-1).double().tolist()
        out[k] = {"dtype": DT[x.dtype], "shape": list(x.shape), "values": vals, "sum": float(x.double().sum())}


def sam_entries():
    e = [("image_encoder.pos_embed", rnd(1, 2, 2, 8), False),
         ("image_encoder.patch_embed.proj.weight", rnd(8, 3, 2, 2), False),
         ("image_encoder.patch_embed.proj.bias", rnd(8), False)]
    for b in range(2):
        p = f"image_encoder.blocks.{b}."
        e += [(p + "norm1.weight", rnd(8), False), (p + "norm1.bias", rnd(8), False),
              (p + "attn.rel_pos_h", rnd(3, 4), False), (p + "attn.rel_pos_w", rnd(3, 4), False),
              (p + "attn.qkv.weight", rnd(24, 8), False), (p + "attn.qkv.bias", rnd(24), False),
              (p + "attn.proj.weight", rnd(8, 8), False), (p + "attn.proj.bias", rnd(8), False),
              (p + "mlp.lin1.weight", rnd(16, 8), False), (p + "mlp.lin2.weight", rnd(8, 16), False)]
    e += [("image_encoder.neck.0.weight", rnd(4, 8, 1, 1), False), ("image_encoder.neck.1.weight", rnd(4), False),
          ("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", rnd(2, 2), True)]
    e += [(f"prompt_encoder.point_embeddings.{i}.weight", rnd(1, 4), False) for i in range(4)]
    e += [("prompt_encoder.not_a_point_embed.weight", rnd(1, 4), False),
          ("prompt_encoder.mask_downscaling.0.weight", rnd(1, 1, 2, 2), False),
          ("prompt_encoder.no_mask_embed.weight", rnd(1, 4), False),
          ("mask_decoder.transformer.layers.0.self_attn.q_proj.weight", rnd(4, 4), False),
          ("mask_decoder.transformer.layers.0.cross_attn_token_to_image.k_proj.weight", rnd(2, 4), False),
          ("mask_decoder.iou_token.weight", rnd(1, 4), False), ("mask_decoder.mask_tokens.weight", rnd(4, 4), False),
          ("mask_decoder.output_upscaling.0.weight", rnd(4, 2, 2, 2), False),
          ("mask_decoder.output_hypernetworks_mlps.0.layers.0.weight", rnd(4, 4), False),
          ("mask_decoder.iou_prediction_head.layers.2.bias", rnd(4), False)]
    return e


def imagebind_entries():
    a = "audio"
    return [(f"modality_preprocessors.{a}.cls_token", rnd(1, 1, 8), False),
            (f"modality_preprocessors.{a}.rgbt_stem.proj.weight", rnd(8, 1, 2, 2), False),
            (f"modality_preprocessors.{a}.rgbt_stem.norm_layer.weight", rnd(8), False),
            (f"modality_preprocessors.{a}.pos_embedding_helper.pos_embed", rnd(1, 3, 8), False),
            (f"modality_trunks.{a}.blocks.0.attn.in_proj_weight", rnd(24, 8), False),
            (f"modality_trunks.{a}.blocks.0.attn.in_proj_bias", rnd(24), False),
            (f"modality_trunks.{a}.blocks.0.attn.bias_k", rnd(1, 1, 8), False),
            (f"modality_trunks.{a}.blocks.0.attn.out_proj.weight", rnd(8, 8), False),
            (f"modality_trunks.{a}.blocks.0.norm_1.weight", rnd(8), False),
            (f"modality_trunks.{a}.blocks.0.mlp.fc1.weight", rnd(16, 8), False),
            (f"modality_heads.{a}.0.weight", rnd(8), False),
            (f"modality_heads.{a}.2.weight", rnd(4, 8), False),
            (f"modality_postprocessors.{a}.1.log_logit_scale", rnd(1).reshape(()), False)]


def clip_entries():
    e = [("text_model.embeddings.token_embedding.weight", rnd(10, 8), False),
         ("text_model.embeddings.position_embedding.weight", rnd(5, 8), False),
         ("text_model.embeddings.position_ids", torch.arange(5).reshape(1, 5), True),
         ("text_model.final_layer_norm.weight", rnd(8), False),
         ("vision_model.embeddings.class_embedding", rnd(8), False),
         ("vision_model.embeddings.patch_embedding.weight", rnd(8, 3, 2, 2), False),
         ("vision_model.embeddings.position_embedding.weight", rnd(5, 8), False),
         ("vision_model.embeddings.position_ids", torch.arange(5).reshape(1, 5), True),
         ("vision_model.pre_layrnorm.weight", rnd(8), False)]
    for nm in ("k_proj", "v_proj", "q_proj", "out_proj"):
        e.append((f"vision_model.encoder.layers.0.self_attn.{nm}.weight", rnd(8, 8), False))
    e += [("vision_model.encoder.layers.0.mlp.fc1.weight", rnd(16, 8), False),
          ("vision_model.post_layernorm.bias", rnd(8), False),
          ("visual_projection.weight", rnd(6, 8), False), ("text_projection.weight", rnd(6, 8), False),
          ("logit_scale", torch.tensor(2.6592), False)]
    return e


def llava_shards():
    s1 = collections.OrderedDict()
    s2 = collections.OrderedDict()
    s1["model.embed_tokens.weight"] = rnd(12, 8, dtype=torch.float16)
    for l in range(2):
        sd = s1 if l == 0 else s2
        dt = torch.float16 if l == 0 else torch.bfloat16
        p = f"model.layers.{l}."
        for nm in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{nm}.weight"] = rnd(8, 8, dtype=dt)
        sd[p + "self_attn.rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, 4, 2).float() / 4))
        sd[p + "mlp.gate_proj.weight"] = rnd(16, 8, dtype=dt)
        sd[p + "input_layernorm.weight"] = rnd(8, dtype=dt)
    s2["model.norm.weight"] = rnd(8, dtype=torch.bfloat16)
    s2["model.mm_projector.weight"] = rnd(8, 6, dtype=torch.bfloat16)
    s2["model.mm_projector.bias"] = rnd(8, dtype=torch.bfloat16)
    s2["lm_head.weight"] = rnd(12, 8, dtype=torch.bfloat16)
    return s1, s2


def views_dict():
    base = rnd(4, 6)
    big = rnd(10)
    d = collections.OrderedDict()
    d["shared.full"] = base                     # storage 0
    d["shared.rows"] = base[1:3]                # same storage, offset 6, contiguous
    d["shared.col"] = base[:, 2]                # same storage, offset 2, stride 6
    d["transpose"] = rnd(3, 5).t()              # stride (1, 5)
    d["strided"] = big[1::3]                    # offset 1, stride 3
    d["permuted"] = rnd(2, 3, 4).permute(2, 0, 1)
    d["scalar"] = torch.tensor(-1.25)
    d["empty"] = torch.zeros(0, 4)
    d["param"] = nn.Parameter(rnd(3, 2))
    d["half_t"] = rnd(4, 3, dtype=torch.float16).t()
    d["bf16"] = rnd(5, dtype=torch.bfloat16)
    d["f64"] = torch.tensor([1.5, -2.25, 1e300], dtype=torch.float64)
    d["i64"] = torch.tensor([[1, -2], [3, 1 << 40]], dtype=torch.int64)
    d["i32"] = torch.tensor([7, -8, 9], dtype=torch.int32)
    d["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    d["i8"] = torch.tensor([-5, 5], dtype=torch.int8)
    d["u8"] = torch.tensor([250, 3], dtype=torch.uint8)
    d["bool"] = torch.tensor([True, False, True])
    d["nested"] = {"inner": {"w": rnd(2, 2)}, "3": rnd(1)}
    return d


def flat(d, prefix=""):
    out = collections.OrderedDict()
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, prefix + str(k) + "."))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                if torch.is_tensor(x):
                    out[prefix + str(k) + "." + str(i)] = x
        elif torch.is_tensor(v):
            out[prefix + str(k)] = v
    return out


def rezip(src, dst, transform=None, method=zipfile.ZIP_STORED):
    """Copies a torch.save zip entry by entry (transform(name, bytes) -> bytes)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", method) as zo:
        for info in zi.infolist():
            b = zi.read(info.filename)
            if transform:
                b = transform(info.filename, b)
            zo.writestr(info.filename, b)


class _Global:
    """Pickles as a call of `fn(*args)` (the pickler writes GLOBAL + REDUCE)."""
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class _Storage:
    pass


def raw_pickle(obj, storages):
    """data.pkl bytes for obj, _Storage instances as torch's persistent ids."""
    buf = io.BytesIO()

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, _Storage):
                return ("storage", torch.FloatStorage, o.key, "cpu", o.numel)
            return None
    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


def write_zip(path, pkl, storages):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        for key, b in storages.items():
            z.writestr("archive/data/" + key, b)
        z.writestr("archive/version", "3\n")


def main():
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "llava"), exist_ok=True)
    os.makedirs(os.path.join(out, "clip"), exist_ok=True)
    exp = {}

    for fname, entries in (("sam_vit_h.pth", sam_entries()), ("imagebind_huge.pth", imagebind_entries()),
                           ("clip/pytorch_model.bin", clip_entries())):
        sd = module_tree(entries).state_dict()
        assert sorted(sd.keys()) == sorted(e[0] for e in entries)
        torch.save(sd, os.path.join(out, fname))
        exp[fname] = {}
        describe(sd, exp[fname])

    s1, s2 = llava_shards()
    names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    wm, total = {}, 0
    for nm, sd in zip(names, (s1, s2)):
        torch.save(sd, os.path.join(out, "llava", nm))
        for k, v in sd.items():
            wm[k] = nm
            total += v.numel() * v.element_size()
        exp["llava/" + nm] = {}
        describe(sd, exp["llava/" + nm])
    with open(os.path.join(out, "llava", "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(wm.items()))}, f, indent=2)
    exp["llava/pytorch_model.bin.index.json"] = {}
    describe(collections.OrderedDict(list(s1.items()) + list(s2.items())), exp["llava/pytorch_model.bin.index.json"])
    for d in exp["llava/pytorch_model.bin.index.json"].values():
        del d["values"]   # the shards' entries have them

    sam = module_tree(sam_entries()[:6]).state_dict()
    wrapped = {"model": sam, "epoch": 3, "note": "trained", "extras": [rnd(2), rnd(3)]}
    torch.save(wrapped, os.path.join(out, "wrapped.pth"))
    exp["wrapped.pth"] = {}
    describe(flat(wrapped), exp["wrapped.pth"])

    v = views_dict()
    torch.save(v, os.path.join(out, "views.pth"))
    exp["views.pth"] = {}
    describe(flat(v), exp["views.pth"])
    rezip(os.path.join(out, "views.pth"), os.path.join(out, "views_deflated.pth"), method=zipfile.ZIP_DEFLATED)
    exp["views_deflated.pth"] = {k: {kk: vv for kk, vv in d.items() if kk != "values"} for k, d in exp["views.pth"].items()}

    torch.save({"w": rnd(2)}, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)

    st = _Storage(); st.key = "0"; st.numel = 4
    four = torch.arange(4, dtype=torch.float32).numpy().tobytes()
    hooks = collections.OrderedDict()
    write_zip(os.path.join(out, "bad_system.pth"),
              raw_pickle({"w": _Global(os.system, ("echo pwned",))}, None), {"0": four})
    write_zip(os.path.join(out, "bad_global.pth"),
              raw_pickle({"w": _Global(collections.Counter, ())}, None), {"0": four})
    ok = {"w": _Global(torch._utils._rebuild_tensor_v2, (st, 0, (2, 2), (2, 1), False, hooks))}
    write_zip(os.path.join(out, "bad_short_storage.pth"), raw_pickle(ok, None), {"0": four[:12]})
    bad = {"w": _Global(torch._utils._rebuild_tensor_v2, (st, 2, (2, 2), (2, 1), False, hooks))}
    write_zip(os.path.join(out, "bad_view.pth"), raw_pickle(bad, None), {"0": four})

    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f, separators=(",", ":"))
    tot = sum(os.path.getsize(os.path.join(dp, x)) for dp, _, fs in os.walk(out) for x in fs)
    print(f"wrote {out}: {tot} bytes")


if __name__ == "__main__":
    main()
