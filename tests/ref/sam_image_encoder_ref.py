#!/usr/bin/python3
"""tests/ref/sam_image_encoder_ref.py — PyTorch float64 reference of SAM's image
encoder (model/sam_image_encoder.c) and of its kernels (kernels/*/sam_encoder.*).

Usage: /usr/bin/python3 tests/ref/sam_image_encoder_ref.py tests/fixtures/sam_image_encoder.h5

Written here from the semantics of segment-anything's ImageEncoderViT
(modeling/image_encoder.py), NOT from the C code, in plain tensor operations:
  patch embedding (Conv p x p stride p) + pos_embed; per block
  x = x + proj(attention(pad_into_windows(LN1(x))) cropped back) ;
  x = x + lin2(GELU(lin1(LN2(x)))) (LayerNorm eps 1e-6, exact GELU);
  windows: LN1's output is zero-padded at the bottom/right to multiples of the
  window, cut into windows that each attend over themselves (padded tokens
  included), put back and cropped; global blocks attend over the whole grid;
  attention logits = (q*scale) k^T + q.Rh[qy,ky] + q.Rw[qx,kx] with the UNscaled
  q, Rh/Rw from get_rel_pos (tables linearly resized, align_corners=False, to
  2*max(q,k)-1 rows when their length differs; index (i*max(k/q,1) - j*max(q/k,1)
  + (k-1)*max(q/k,1)) computed in float32 and truncated);
  neck: Conv1x1 (no bias) -> LayerNorm2d -> Conv3x3 pad 1 (no bias) -> LayerNorm2d.
tests/ref/check_sam_encoder_official.py runs the official package on this
fixture's weights once, by hand, to check this reference.

Fixture layout (float64 unless noted; weights and inputs float32-representable):
  attrs                    a.* / b.* configs (img_size, patch, dim, depth, heads, mlp_dim,
                           out_chans, window, batch, rel_len_window, rel_len_global,
                           global_mask = bit l set when block l is global)
  a_params/<name>          float32 weights of config a, prefix "image_encoder."
  b_params/<name>          config b, prefix "model.visual_model.image_encoder.", rel_pos
                           tables of lengths other than 2*size-1 (resized at run time)
  a/image [B,3,S,S]        input; a/tokens_<l> [B,G,G,C] after l blocks (0 = patch
                           embedding + pos_embed); a/out [B,out_chans,G,G]; b/ likewise
  relpos/<i>_in [L,D], relpos/<i>_out [qs,ks,D], attrs relpos.<i>.qs/ks: get_rel_pos cases
  attn/qkv [Bw,h*w,3C], attn/Rh [h,h,hd], attn/Rw [w,w,hd], attn/out [Bw,h*w,C]:
                           the attention kernel on a non-square 3 x 5 grid
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

# a: padding (8 is not a multiple of 3), one global block, batch 2.
# b: rel_pos tables of other lengths (window 4 wants 7 rows, has 5; the 6x6
#    global grid wants 11, has 7), padding 6 -> 8, three heads, batch 1.
CFGS = {
    "a": dict(img_size=64, patch=8, dim=32, depth=3, heads=2, mlp_dim=128, out_chans=16, window=3,
              batch=2, globals_=(1,), rel_len_window=0, rel_len_global=0, prefix="image_encoder."),
    "b": dict(img_size=48, patch=8, dim=24, depth=2, heads=3, mlp_dim=48, out_chans=8, window=4,
              batch=1, globals_=(1,), rel_len_window=5, rel_len_global=7,
              prefix="model.visual_model.image_encoder."),
}

RS = np.random.RandomState(20240801)


def f32(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32).astype(np.float64))


# ---------------------------------------------------------------- semantics

def rel_index(qs, ks):
    """Rows of the resized table for every (query i, key j), as get_rel_pos computes them (float32)."""
    qr = np.float32(max(ks / qs, 1.0))
    kr = np.float32(max(qs / ks, 1.0))
    off = np.float32((ks - 1) * max(qs / ks, 1.0))
    qc = np.arange(qs).astype(np.float32)[:, None] * qr
    kc = np.arange(ks).astype(np.float32)[None, :] * kr
    return torch.from_numpy(((qc - kc) + off).astype(np.int64))


def rel_table(rel, qs, ks):
    """[qs, ks, D]: rel [L, D] resized to 2*max(qs,ks)-1 rows if needed, indexed by rel_index."""
    M = 2 * max(qs, ks) - 1
    if rel.shape[0] != M:
        rel = F.interpolate(rel.t()[None], size=M, mode="linear", align_corners=False)[0].t()
    return rel[rel_index(qs, ks)]


def attention(qkv, heads, h, w, rel_h, rel_w):
    """qkv [Bw, h*w, 3C] -> [Bw, h*w, C] with decomposed relative positions (rel_* raw tables or None)."""
    Bw, T, C3 = qkv.shape
    C = C3 // 3
    hd = C // heads
    q, k, v = qkv.reshape(Bw, T, 3, heads, hd).permute(2, 0, 3, 1, 4)      # [Bw, heads, T, hd]
    logits = (q * hd ** -0.5) @ k.transpose(-1, -2)                          # [Bw, heads, T, T]
    if rel_h is not None:
        Rh, Rw = rel_table(rel_h, h, h), rel_table(rel_w, w, w)
        qg = q.reshape(Bw, heads, h, w, hd)
        bh = torch.einsum("bnyxc,yic->bnyxi", qg, Rh)                        # query row y, key row i
        bw = torch.einsum("bnyxc,xjc->bnyxj", qg, Rw)                        # query col x, key col j
        bias = bh[..., :, None] + bw[..., None, :]                           # [Bw,heads,h,w,h,w]
        logits = logits + bias.reshape(Bw, heads, T, T)
    o = torch.softmax(logits, dim=-1) @ v                                    # [Bw, heads, T, hd]
    return o.transpose(1, 2).reshape(Bw, T, C)


def to_windows(x, ws):
    """[B,H,W,C] -> [B*nh*nw, ws*ws, C], zero-padded at the bottom/right."""
    B, H, W, C = x.shape
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    xp = torch.zeros(B, Hp, Wp, C)
    xp[:, :H, :W] = x
    wins = [xp[b, i:i + ws, j:j + ws].reshape(ws * ws, C)
            for b in range(B) for i in range(0, Hp, ws) for j in range(0, Wp, ws)]
    return torch.stack(wins)


def from_windows(wins, B, H, W, ws):
    C = wins.shape[-1]
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    xp = torch.zeros(B, Hp, Wp, C)
    n = 0
    for b in range(B):
        for i in range(0, Hp, ws):
            for j in range(0, Wp, ws):
                xp[b, i:i + ws, j:j + ws] = wins[n].reshape(ws, ws, C)
                n += 1
    return xp[:, :H, :W]


def ln(x, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-6)


def ln2d(x, w, b):
    u = x.mean(1, keepdim=True)
    s = ((x - u) ** 2).mean(1, keepdim=True)
    return w[:, None, None] * (x - u) / torch.sqrt(s + 1e-6) + b[:, None, None]


def encoder(P, c, image):
    """Returns the token grids after each block (index 0 = embeddings) and the neck output."""
    pre, heads, ws = c["prefix"], c["heads"], c["window"]
    x = F.conv2d(image, P[pre + "patch_embed.proj.weight"], P[pre + "patch_embed.proj.bias"], stride=c["patch"])
    x = x.permute(0, 2, 3, 1) + P[pre + "pos_embed"]                         # [B,G,G,C]
    B, G, _, C = x.shape
    tokens = [x]
    for l in range(c["depth"]):
        bp = "%sblocks.%d." % (pre, l)
        g = lambda n: P[bp + n]
        y = ln(x, g("norm1.weight"), g("norm1.bias"))
        if l in c["globals_"]:
            qkv = F.linear(y.reshape(B, G * G, C), g("attn.qkv.weight"), g("attn.qkv.bias"))
            a = attention(qkv, heads, G, G, g("attn.rel_pos_h"), g("attn.rel_pos_w")).reshape(B, G, G, C)
        else:
            qkv = F.linear(to_windows(y, ws), g("attn.qkv.weight"), g("attn.qkv.bias"))
            a = from_windows(attention(qkv, heads, ws, ws, g("attn.rel_pos_h"), g("attn.rel_pos_w")), B, G, G, ws)
        x = x + F.linear(a, g("attn.proj.weight"), g("attn.proj.bias"))
        hmid = F.gelu(F.linear(ln(x, g("norm2.weight"), g("norm2.bias")), g("mlp.lin1.weight"), g("mlp.lin1.bias")))
        x = x + F.linear(hmid, g("mlp.lin2.weight"), g("mlp.lin2.bias"))
        tokens.append(x)
    y = F.conv2d(x.permute(0, 3, 1, 2), P[pre + "neck.0.weight"])
    y = ln2d(y, P[pre + "neck.1.weight"], P[pre + "neck.1.bias"])
    y = F.conv2d(y, P[pre + "neck.2.weight"], padding=1)
    y = ln2d(y, P[pre + "neck.3.weight"], P[pre + "neck.3.bias"])
    return tokens, y


def make_params(c):
    """Random weights under SAM's names and shapes, float32-representable, unit-scale activations."""
    pre, C, M, OC, p = c["prefix"], c["dim"], c["mlp_dim"], c["out_chans"], c["patch"]
    G, hd = c["img_size"] // p, c["dim"] // c["heads"]
    P = {}

    def lin(name, o, i, bias=True):
        P[name + ".weight"] = f32(RS.standard_normal((o, i)) / np.sqrt(i))
        if bias:
            P[name + ".bias"] = f32(0.2 * RS.standard_normal(o))

    def norm(name, d):
        P[name + ".weight"] = f32(1.0 + 0.3 * RS.standard_normal(d))
        P[name + ".bias"] = f32(0.2 * RS.standard_normal(d))

    P[pre + "patch_embed.proj.weight"] = f32(RS.standard_normal((C, 3, p, p)) / np.sqrt(3 * p * p))
    P[pre + "patch_embed.proj.bias"] = f32(0.2 * RS.standard_normal(C))
    P[pre + "pos_embed"] = f32(0.5 * RS.standard_normal((1, G, G, C)))
    for l in range(c["depth"]):
        bp = "%sblocks.%d." % (pre, l)
        glob = l in c["globals_"]
        size = G if glob else c["window"]
        L = (c["rel_len_global"] if glob else c["rel_len_window"]) or 2 * size - 1
        norm(bp + "norm1", C)
        lin(bp + "attn.qkv", 3 * C, C)
        lin(bp + "attn.proj", C, C)
        # large enough that the relative terms move the softmax visibly
        P[bp + "attn.rel_pos_h"] = f32(0.5 * RS.standard_normal((L, hd)))
        P[bp + "attn.rel_pos_w"] = f32(0.5 * RS.standard_normal((L, hd)))
        norm(bp + "norm2", C)
        lin(bp + "mlp.lin1", M, C)
        lin(bp + "mlp.lin2", C, M)
    P[pre + "neck.0.weight"] = f32(RS.standard_normal((OC, C, 1, 1)) / np.sqrt(C))
    norm(pre + "neck.1", OC)
    P[pre + "neck.2.weight"] = f32(RS.standard_normal((OC, OC, 3, 3)) / np.sqrt(9 * OC))
    norm(pre + "neck.3", OC)
    return P


def open_reproducible(path, groups):
    """A new HDF5 file (1.10 format) without object timestamps, so that
    regenerating the fixture gives the same bytes."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    for g in groups:
        h5py.h5g.create(f.id, g.encode(), gcpl=gcpl)
    return f


# get_rel_pos cases (qs, ks, L): plain copy, q != k both ways (index scaling), resizing up and down.
RELPOS = [(3, 3, 5), (3, 5, 9), (5, 3, 9), (4, 6, 7), (3, 7, 13), (7, 3, 4), (6, 6, 20)]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: sam_image_encoder_ref.py OUT.h5")
    z = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)
    with open_reproducible(sys.argv[1], ["a_params", "b_params", "a", "b", "relpos", "attn"]) as f:
        f.attrs["generator"] = "tests/ref/sam_image_encoder_ref.py (torch %s, float64)" % torch.__version__
        for key, c in CFGS.items():
            P = make_params(c)
            S = c["img_size"]
            image = f32(RS.standard_normal((c["batch"], 3, S, S)))
            with torch.no_grad():
                tokens, out = encoder(P, c, image)
            for k in ("img_size", "patch", "dim", "depth", "heads", "mlp_dim", "out_chans", "window", "batch",
                      "rel_len_window", "rel_len_global"):
                f.attrs["%s.%s" % (key, k)] = np.int32(c[k])
            f.attrs[key + ".global_mask"] = np.int32(sum(1 << l for l in c["globals_"]))
            for n, t in P.items():
                f.create_dataset("%s_params/%s" % (key, n), data=t.numpy().astype(np.float32), **z)
            f.create_dataset(key + "/image", data=image.numpy().astype(np.float32), **z)   # exact
            for l, t in enumerate(tokens):
                f.create_dataset("%s/tokens_%d" % (key, l), data=t.numpy(), **z)
            f.create_dataset(key + "/out", data=out.numpy(), **z)
            print("config %s: out %s, |out| max %.3f" % (key, tuple(out.shape), out.abs().max().item()))
        for i, (qs, ks, L) in enumerate(RELPOS):
            rel = f32(RS.standard_normal((L, 5)))
            f.attrs["relpos.%d.qs" % i] = np.int32(qs)
            f.attrs["relpos.%d.ks" % i] = np.int32(ks)
            f.create_dataset("relpos/%d_in" % i, data=rel.numpy(), **z)
            f.create_dataset("relpos/%d_out" % i, data=rel_table(rel, qs, ks).numpy(), **z)
        # the attention kernel on 4 grids of 3 x 5 (h != w catches a swapped axis), 2 heads of 6
        Bw, h, w, heads, hd = 4, 3, 5, 2, 6
        qkv = f32(RS.standard_normal((Bw, h * w, 3 * heads * hd)))
        rh = f32(0.7 * RS.standard_normal((2 * h - 1, hd)))
        rw = f32(0.7 * RS.standard_normal((2 * w - 1, hd)))
        f.create_dataset("attn/qkv", data=qkv.numpy(), **z)
        f.create_dataset("attn/Rh", data=rel_table(rh, h, h).numpy(), **z)
        f.create_dataset("attn/Rw", data=rel_table(rw, w, w).numpy(), **z)
        f.create_dataset("attn/out", data=attention(qkv, heads, h, w, rh, rw).numpy(), **z)
        f.create_dataset("attn/out_norel", data=attention(qkv, heads, h, w, None, None).numpy(), **z)
    print("wrote %s" % sys.argv[1])


if __name__ == "__main__":
    main()
