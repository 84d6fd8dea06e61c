#!/usr/bin/python3
"""tests/ref/imagebind_audio_ref.py — PyTorch float64 reference of the ImageBind
audio encoder and AnyRef's audio_projector (model/imagebind_audio.c, SPEC 2.7).

Usage: /usr/bin/python3 tests/ref/imagebind_audio_ref.py tests/fixtures/imagebind_audio.h5   (`make fixtures`)

Written from facebookresearch/ImageBind (imagebind_model.py, multimodal_preprocessors.py,
transformer.py, helpers.py) and jwh97nn/AnyRef (model/anyref.py), not from the C code.
The module tree below mirrors the official one so that named_parameters() gives the
official checkpoint names:
  modality_preprocessors.audio  AudioPreprocessor: rgbt_stem = PatchEmbedGeneric whose
      one-element stem is stored as .proj itself (Conv2d 1->D, kernel k, stride s, no
      bias), .norm_layer = nn.LayerNorm(D) (eps 1e-5); forward: proj -> flatten(2) ->
      transpose(1, 2) -> norm; then cat(cls_token, tokens) and + pos_embedding_helper.pos_embed.
  modality_trunks.audio  SimpleTransformer: pre_transformer_layer = (Identity, b l d -> l b d),
      blocks.{i} = BlockWithMasking: x + attn(norm_1(x)), x + mlp(norm_2(x)), norm eps 1e-6,
      attn = nn.MultiheadAttention(D, H, bias=True, add_bias_kv=True) called as (x, x, x,
      need_weights=False), mlp = fc1 -> nn.GELU() -> fc2; drop_path is the identity at eval.
  modality_heads.audio  Sequential(LayerNorm(D, eps 1e-6), SelectElement(0), Linear(D, O, bias=False)).
  post  Normalize(dim=-1) then LearnableLogitScaling(20, learnable=False): clip(exp(log 20), max 100) * x.
  model.audio_projector  nn.Linear(O, P) (AnyRefModel.audio_projector), on each clip's embedding.
The projector's gradients are autograd's for L = sum(tok * r).

Fixture layout (float64; weights and inputs float32-representable):
  attrs              embed_dim, depth, heads, mlp_ratio, kernel, stride, n_mels, target_len,
                     out_dim, llm_dim, clips, grid_h, grid_w, logit_scale
  fbank              [N, 1, n_mels, target_len]
  params/<name>      every encoder tensor (official names) and model.audio_projector.{weight,bias}
  stem [N, T, D], blocks/<i> [N, T, D], head [N, O] (before normalisation), emb [N, O]
  r [N, P], tok [N, P], demb [N, O], grads/<projector name> (the trainable tensors only)
  huge/names         uint8 text, "name d0,d1,..\\n" per parameter of imagebind_huge's audio
                     branch (built on the meta device) plus a projector to 4096
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

f64 = torch.float64
TINY = dict(embed_dim=32, depth=2, heads=4, mlp_ratio=4, kernel=8, stride=6, n_mels=32, target_len=40,
            out_dim=48, llm_dim=24)
HUGE = dict(embed_dim=768, depth=12, heads=12, mlp_ratio=4, kernel=16, stride=10, n_mels=128, target_len=204,
            out_dim=1024, llm_dim=4096)
CLIPS = 3


def grid(c):
    return (c["n_mels"] - c["kernel"]) // c["stride"] + 1, (c["target_len"] - c["kernel"]) // c["stride"] + 1


class PatchEmbedGeneric(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        self.proj = nn.Conv2d(1, c["embed_dim"], kernel_size=c["kernel"], stride=c["stride"], bias=False,
                              device=device)
        self.norm_layer = nn.LayerNorm(c["embed_dim"], device=device)

    def forward(self, x):
        return self.norm_layer(self.proj(x).flatten(2).transpose(1, 2))


class PosEmbed(nn.Module):
    def __init__(self, T, D, device):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, T, D, device=device))


class AudioPreprocessor(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        gh, gw = grid(c)
        D = c["embed_dim"]
        self.rgbt_stem = PatchEmbedGeneric(c, device)
        self.pos_embedding_helper = PosEmbed(gh * gw + 1, D, device)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D, device=device))

    def forward(self, x):
        tok = self.rgbt_stem(x)
        tok = torch.cat((self.cls_token.expand(tok.shape[0], -1, -1), tok), dim=1)
        return tok + self.pos_embedding_helper.pos_embed


class Mlp(nn.Module):
    def __init__(self, D, Fh, device):
        super().__init__()
        self.fc1 = nn.Linear(D, Fh, device=device)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(Fh, D, device=device)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        D = c["embed_dim"]
        self.attn = nn.MultiheadAttention(D, c["heads"], bias=True, add_bias_kv=True, device=device)
        self.norm_1 = nn.LayerNorm(D, eps=1e-6, device=device)
        self.mlp = Mlp(D, c["mlp_ratio"] * D, device)
        self.norm_2 = nn.LayerNorm(D, eps=1e-6, device=device)

    def forward(self, x):  # x [T, N, D] (sequence first, as the official trunk)
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=None)[0]
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    def __init__(self, c, device):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(c, device) for _ in range(c["depth"])])

    def forward(self, tokens, taps):
        x = tokens.transpose(0, 1)  # b l d -> l b d
        for blk in self.blocks:
            x = blk(x)
            taps.append(x.transpose(0, 1))
        return x.transpose(0, 1)


class SelectElement(nn.Module):
    def forward(self, x):
        return x[:, 0, ...]


class Encoder(nn.Module):
    def __init__(self, c, device=None):
        super().__init__()
        D, O = c["embed_dim"], c["out_dim"]
        self.modality_preprocessors = nn.ModuleDict({"audio": AudioPreprocessor(c, device)})
        self.modality_trunks = nn.ModuleDict({"audio": Trunk(c, device)})
        self.modality_heads = nn.ModuleDict({"audio": nn.Sequential(
            nn.LayerNorm(D, eps=1e-6, device=device), SelectElement(), nn.Linear(D, O, bias=False, device=device))})
        self.log_logit_scale = torch.ones([]) * np.log(20.0)  # the frozen buffer (float32, as the official one)

    def forward(self, fbank):
        out = {"blocks": []}
        tok = self.modality_preprocessors["audio"](fbank)
        out["stem"] = tok
        x = self.modality_trunks["audio"](tok, out["blocks"])
        head = self.modality_heads["audio"](x)
        out["head"] = head
        scale = torch.clip(self.log_logit_scale.exp(), max=100).to(head.dtype)
        out["emb"] = scale * F.normalize(head, dim=-1, p=2)
        return out


def randomise(module, gen, small=None):
    """float32-representable weights of a scale that keeps every stage non-trivial.
    small scales the stem and cls/pos: with it the stem LayerNorm sees a variance near
    1e-5 and block 0's norm_1 one near 1e-5 too, so both eps values (1e-5, 1e-6) matter."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=gen)
            if name.endswith("norm_layer.weight") or ".norm_" in name or name.endswith("audio.0.weight"):
                v = 1.0 + 0.2 * r
            elif name.endswith("bias"):
                v = 0.2 * r
            elif p.dim() >= 2 and "pos_embed" not in name and "cls_token" not in name and "bias_" not in name:
                v = r / np.sqrt(p[0].numel())
            else:  # cls_token, pos_embed, bias_k, bias_v
                v = 0.5 * r
            if small and ("rgbt_stem" in name or "cls_token" in name or "pos_embed" in name):
                v = v * small
            p.copy_(v.float().to(p.dtype))


def huge_names():
    enc = Encoder(HUGE, device="meta")
    proj = nn.Linear(HUGE["out_dim"], HUGE["llm_dim"], device="meta")
    lines = [f"{n} {','.join(str(s) for s in p.shape)}" for n, p in enc.named_parameters()]
    lines += [f"model.audio_projector.{n} {','.join(str(s) for s in p.shape)}" for n, p in proj.named_parameters()]
    return "\n".join(lines) + "\n"


def main(path):
    c = TINY
    gen = torch.Generator().manual_seed(2024)
    enc = Encoder(c).to(f64).eval()
    proj = nn.Linear(c["out_dim"], c["llm_dim"]).to(f64)
    randomise(enc, gen, small=3e-3)
    randomise(proj, gen)
    fbank = torch.randn((CLIPS, 1, c["n_mels"], c["target_len"]), generator=gen).float().to(f64)
    with torch.no_grad():
        out = enc(fbank)
    emb = out["emb"].detach().clone().requires_grad_(True)
    tok = proj(emb)
    r = torch.randn(tok.shape, generator=gen).float().to(f64)
    (tok * r).sum().backward()
    gh, gw = grid(c)
    with h5py.File(path, "w") as f:
        for k, v in c.items():
            f.attrs[k] = v
        f.attrs["clips"] = CLIPS
        f.attrs["grid_h"] = gh
        f.attrs["grid_w"] = gw
        f.attrs["logit_scale"] = 20.0
        f["fbank"] = fbank.numpy()
        for n, p in enc.named_parameters():
            f["params/" + n] = p.detach().numpy()
        for n, p in proj.named_parameters():
            f["params/model.audio_projector." + n] = p.detach().numpy()
        f["stem"] = out["stem"].numpy()
        for i, b in enumerate(out["blocks"]):
            f[f"blocks/{i}"] = b.contiguous().numpy()
        f["head"] = out["head"].numpy()
        f["emb"] = out["emb"].numpy()
        f["r"] = r.numpy()
        f["tok"] = tok.detach().numpy()
        f["demb"] = emb.grad.numpy()
        for n, p in proj.named_parameters():
            f["grads/model.audio_projector." + n] = p.grad.numpy()
        f["huge/names"] = np.frombuffer(huge_names().encode(), dtype=np.uint8)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/imagebind_audio.h5")
