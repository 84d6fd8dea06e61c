#!/usr/bin/python3
"""tests/ref/sam_decoder_ref.py — PyTorch float64 reference of the SAM mask decoder (model/sam_decoder.c).

Usage: /usr/bin/python3 tests/ref/sam_decoder_ref.py tests/fixtures/sam_decoder.h5   (`make fixtures`)

Written here from segment-anything's semantics (modeling/mask_decoder.py,
transformer.py, common.py), NOT from model/sam_decoder.c: the module tree and
parameter names are SAM's (mask_decoder.transformer.layers.N.self_attn.q_proj...),
so state_dict() names are the names the C registry declares.

  tokens = [iou_token, mask_tokens(4), sparse] per prompt; src = image + dense,
  repeated per prompt; pos = image_pe; two-way transformer (first block without
  PE and residual on the self-attention), final token->image attention + LN;
  output_upscaling ConvT-LN2d-GELU-ConvT-GELU; hypernetwork MLPs; masks =
  hyper_in @ upscaled; multimask_output=False -> masks[:, 0:1]; IoU head.

The loss is sum(masks[:, 0] * R) with a fixed random R, so the gradients of the
IoU head and of hypernetwork MLPs 1..3 are exactly zero (checked in the fixture).
All parameters are trainable here (the "lisa" preset).

Fixture layout (float datasets float64 unless noted; weights float32-representable):
  attrs                config (dim, depth, heads, mlp_dim, downsample, num_mask_tokens,
                       iou_hidden, H, W, n_sparse, P)
  params/<SAM name>    float32, every parameter
  grads/<SAM name>     d loss / d parameter
  image_embedding [C,H,W], image_pe [C,H,W], dense [C,H,W], sparse [P,n_sparse,C]
  dmasks [P,4H,4W]     the upstream gradient R
  masks [P,4H,4W]      single-mask output (mask 0), iou_pred [P,4]
  grad_sparse [P,n_sparse,C], grad_image [C,H,W]
"""
import math
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

CFG = dict(dim=24, depth=2, heads=4, mlp_dim=40, downsample=2, num_mask_tokens=4, iou_hidden=16,
           H=6, W=8, n_sparse=1, P=3)


class MLPBlock(nn.Module):
    def __init__(self, d, m):
        super().__init__()
        self.lin1 = nn.Linear(d, m)
        self.lin2 = nn.Linear(m, d)

    def forward(self, x):
        return self.lin2(F.relu(self.lin1(x)))


class LayerNorm2d(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(nn.Module):
    def __init__(self, i, h, o, n):
        super().__init__()
        dims = [i] + [h] * (n - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, [h] * (n - 1) + [o]))

    def forward(self, x):
        for j, l in enumerate(self.layers):
            x = F.relu(l(x)) if j < len(self.layers) - 1 else l(x)
        return x


class Attention(nn.Module):
    def __init__(self, d, heads, down=1):
        super().__init__()
        self.heads = heads
        di = d // down
        self.q_proj = nn.Linear(d, di)
        self.k_proj = nn.Linear(d, di)
        self.v_proj = nn.Linear(d, di)
        self.out_proj = nn.Linear(di, d)

    def sep(self, x):
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q, k, v):
        q, k, v = self.sep(self.q_proj(q)), self.sep(self.k_proj(k)), self.sep(self.v_proj(v))
        a = torch.softmax(q @ k.permute(0, 1, 3, 2) / math.sqrt(q.shape[-1]), dim=-1)
        o = (a @ v).transpose(1, 2)
        return self.out_proj(o.reshape(o.shape[0], o.shape[1], -1))


class TwoWayAttentionBlock(nn.Module):
    def __init__(self, d, heads, mlp_dim, down, skip_first_layer_pe):
        super().__init__()
        self.self_attn = Attention(d, heads)
        self.norm1 = nn.LayerNorm(d)
        self.cross_attn_token_to_image = Attention(d, heads, down)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = MLPBlock(d, mlp_dim)
        self.norm3 = nn.LayerNorm(d)
        self.norm4 = nn.LayerNorm(d)
        self.cross_attn_image_to_token = Attention(d, heads, down)
        self.skip = skip_first_layer_pe

    def forward(self, queries, keys, qpe, kpe):
        if self.skip:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + qpe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + qpe, keys + kpe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + qpe, keys + kpe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth, d, heads, mlp_dim, down):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayAttentionBlock(d, heads, mlp_dim, down, i == 0) for i in range(depth))
        self.final_attn_token_to_image = Attention(d, heads, down)
        self.norm_final_attn = nn.LayerNorm(d)

    def forward(self, image, pe, tokens):
        keys = image.flatten(2).permute(0, 2, 1)
        kpe = pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for l in self.layers:
            queries, keys = l(queries, keys, tokens, kpe)
        q, k = queries + tokens, keys + kpe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class MaskDecoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, nm = c["dim"], c["num_mask_tokens"]
        self.transformer = TwoWayTransformer(c["depth"], d, c["heads"], c["mlp_dim"], c["downsample"])
        self.iou_token = nn.Embedding(1, d)
        self.mask_tokens = nn.Embedding(nm, d)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, 2, 2), LayerNorm2d(d // 4), nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, 2, 2), nn.GELU())
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(d, d, d // 8, 3) for _ in range(nm))
        self.iou_prediction_head = MLP(d, c["iou_hidden"], nm, 3)
        self.nm = nm

    def forward(self, image, pe, sparse, dense):
        P = sparse.shape[0]
        out = torch.cat([self.iou_token.weight, self.mask_tokens.weight], 0)
        tokens = torch.cat([out.unsqueeze(0).expand(P, -1, -1), sparse], 1)
        src = torch.repeat_interleave(image, P, 0) + dense
        pos = torch.repeat_interleave(pe, P, 0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        src = src.transpose(1, 2).reshape(b, c, h, w)
        up = self.output_upscaling(src)
        hyper = torch.stack([self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(self.nm)], 1)
        b, c, h, w = up.shape
        masks = (hyper @ up.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou = self.iou_prediction_head(hs[:, 0])
        return masks[:, 0:1], iou


def f32(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32).astype(np.float64))


def open_reproducible(path):
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    for g in ("params", "grads"):
        h5py.h5g.create(f.id, g.encode(), gcpl=gcpl)
    return f


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: sam_decoder_ref.py OUT.h5")
    c = CFG
    rs = np.random.RandomState(20240715)
    m = MaskDecoder(c)
    prefix = "mask_decoder."
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                a = 0.2 * rs.standard_normal(p.shape)
            elif p.dim() == 1:                          # LayerNorm weights: not all ones
                a = 1.0 + 0.3 * rs.standard_normal(p.shape)
            elif name in ("iou_token.weight", "mask_tokens.weight"):
                a = rs.standard_normal(p.shape)
            else:                                       # unit-scale activations
                fan_in = p.shape[1] if p.dim() == 2 else p.shape[0]
                a = rs.standard_normal(p.shape) / np.sqrt(fan_in)
            p.copy_(f32(a))
    C, H, W, P, ns = c["dim"], c["H"], c["W"], c["P"], c["n_sparse"]
    image = f32(rs.standard_normal((1, C, H, W))).requires_grad_(True)
    pe = f32(rs.standard_normal((1, C, H, W)))
    dense = f32(0.5 * rs.standard_normal((C, 1, 1)) * np.ones((1, H, W)))[None]   # broadcast no_mask_embed
    sparse = f32(rs.standard_normal((P, ns, C))).requires_grad_(True)
    R = f32(rs.standard_normal((P, 4 * H, 4 * W)))

    masks, iou = m(image, pe, sparse, dense)
    loss = (masks[:, 0] * R).sum()
    loss.backward()
    for p in m.parameters():            # the IoU head is outside the loss graph: grad None = 0
        if p.grad is None:
            p.grad = torch.zeros_like(p)

    zero_expected = [n for n, _ in m.named_parameters()
                     if n.startswith("iou_prediction_head.") or
                     (n.startswith("output_hypernetworks_mlps.") and not n.startswith("output_hypernetworks_mlps.0."))]
    for n, p in m.named_parameters():
        nz = bool((p.grad != 0).any())
        assert nz == (n not in zero_expected), (n, nz)

    with open_reproducible(sys.argv[1]) as f:
        f.attrs["generator"] = "tests/ref/sam_decoder_ref.py (torch %s, float64)" % torch.__version__
        for k, v in c.items():
            f.attrs[k] = np.int32(v)
        z = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)
        for n, p in m.named_parameters():
            f.create_dataset("params/" + prefix + n, data=p.detach().numpy().astype(np.float32), **z)
            f.create_dataset("grads/" + prefix + n, data=p.grad.numpy(), **z)
        f.create_dataset("image_embedding", data=image.detach()[0].numpy(), **z)
        f.create_dataset("image_pe", data=pe[0].numpy(), **z)
        f.create_dataset("dense", data=dense[0].numpy(), **z)
        f.create_dataset("sparse", data=sparse.detach().numpy(), **z)
        f.create_dataset("dmasks", data=R.numpy(), **z)
        f.create_dataset("masks", data=masks.detach()[:, 0].numpy(), **z)
        f.create_dataset("iou_pred", data=iou.detach().numpy(), **z)
        f.create_dataset("grad_sparse", data=sparse.grad.numpy(), **z)
        f.create_dataset("grad_image", data=image.grad[0].numpy(), **z)
    print("wrote %s: %d parameters, loss %.6f, %d zero-gradient tensors"
          % (sys.argv[1], sum(p.numel() for p in m.parameters()), loss.item(), len(zero_expected)))


if __name__ == "__main__":
    main()
