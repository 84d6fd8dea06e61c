#!/usr/bin/python3
"""tests/ref/sam_image_encoder_grad_ref.py — float64 PyTorch autograd gradients
of SAM's image encoder (model/sam_image_encoder.c with cfg.trainable) and of the
backward kernels of kernels/*/sam_encoder.*.

Usage: /usr/bin/python3 tests/ref/sam_image_encoder_grad_ref.py tests/fixtures/sam_image_encoder_grad.h5

The forward is tests/ref/sam_image_encoder_ref.py's (segment-anything's
ImageEncoderViT semantics in plain float64 tensor operations, checked once
against the official package); here autograd differentiates it. The loss is
sum(out * R) for a fixed random R, so d(loss)/d(out) = R is what the C test
feeds to sam_encoder_backward.

Fixture layout (float64 unless noted; weights, inputs and R float32-representable):
  attrs                  a.* / b.* configs as in sam_image_encoder.h5
  a_params/<name>        float32 weights of config a (8x8 grid, window 3: padding; block 1 global; batch 2)
  b_params/<name>        config b (rel_pos tables of other lengths, resized at run time; batch 1)
  a/image, a/R [B,OC,G,G] (float32), a/out; a_grads/<name>: d sum(out*R) / d <name>, every tensor
  attn/qkv [Bw,h*w,3C], attn/Rh [h,h,hd], attn/Rw [w,w,hd], attn/dout [Bw,h*w,C] (float32);
  attn/dqkv, attn/dRh, attn/dRw: gradients of sum(attention(qkv, Rh, Rw) * dout) on 3 x 5 grids
  relpos/<i>_in [L,D], relpos/<i>_dout [qs,ks,D] (float32), relpos/<i>_din [L,D], attrs relpos.<i>.qs/ks:
                         gradients of sum(get_rel_pos(in) * dout)
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sam_image_encoder_ref as ref  # noqa: E402

torch.set_default_dtype(torch.float64)
f32 = ref.f32


def attention_tables(qkv, heads, h, w, Rh, Rw):
    """ref.attention with the gathered tables Rh [h,h,hd], Rw [w,w,hd] as inputs."""
    Bw, T, C3 = qkv.shape
    C = C3 // 3
    hd = C // heads
    q, k, v = qkv.reshape(Bw, T, 3, heads, hd).permute(2, 0, 3, 1, 4)
    logits = (q * hd ** -0.5) @ k.transpose(-1, -2)
    qg = q.reshape(Bw, heads, h, w, hd)
    bh = torch.einsum("bnyxc,yic->bnyxi", qg, Rh)
    bw = torch.einsum("bnyxc,xjc->bnyxj", qg, Rw)
    logits = logits + (bh[..., :, None] + bw[..., None, :]).reshape(Bw, heads, T, T)
    o = torch.softmax(logits, dim=-1) @ v
    return o.transpose(1, 2).reshape(Bw, T, C)


# get_rel_pos cases (qs, ks, L): copy, q != k both ways, resized up and down
RELPOS = [(3, 3, 5), (3, 5, 9), (5, 3, 9), (4, 4, 5), (6, 6, 7), (3, 7, 13), (7, 3, 4)]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: sam_image_encoder_grad_ref.py OUT.h5")
    ref.RS = np.random.RandomState(20240917)   # own stream: the forward fixture stays as it is
    RS = ref.RS
    z = dict(compression="gzip", compression_opts=9, shuffle=True, track_times=False)
    groups = ["a_params", "b_params", "a_grads", "b_grads", "a", "b", "relpos", "attn"]
    with ref.open_reproducible(sys.argv[1], groups) as f:
        f.attrs["generator"] = "tests/ref/sam_image_encoder_grad_ref.py (torch %s, float64)" % torch.__version__
        for key, c in ref.CFGS.items():
            P = ref.make_params(c)
            S, G = c["img_size"], c["img_size"] // c["patch"]
            image = f32(RS.standard_normal((c["batch"], 3, S, S)))
            R = f32(RS.standard_normal((c["batch"], c["out_chans"], G, G)))
            for t in P.values():
                t.requires_grad_(True)
            _, out = ref.encoder(P, c, image)
            (out * R).sum().backward()
            for k in ("img_size", "patch", "dim", "depth", "heads", "mlp_dim", "out_chans", "window", "batch",
                      "rel_len_window", "rel_len_global"):
                f.attrs["%s.%s" % (key, k)] = np.int32(c[k])
            f.attrs[key + ".global_mask"] = np.int32(sum(1 << l for l in c["globals_"]))
            for n, t in P.items():
                f.create_dataset("%s_params/%s" % (key, n), data=t.detach().numpy().astype(np.float32), **z)
                f.create_dataset("%s_grads/%s" % (key, n), data=t.grad.numpy(), **z)
            f.create_dataset(key + "/image", data=image.numpy().astype(np.float32), **z)
            f.create_dataset(key + "/R", data=R.numpy().astype(np.float32), **z)
            f.create_dataset(key + "/out", data=out.detach().numpy(), **z)
            print("config %s: %d tensors, |grad| max %.3g" % (key, len(P), max(t.grad.abs().max().item()
                                                                               for t in P.values())))
        for i, (qs, ks, L) in enumerate(RELPOS):
            rel = f32(RS.standard_normal((L, 5))).requires_grad_(True)
            dout = f32(RS.standard_normal((qs, ks, 5)))
            (ref.rel_table(rel, qs, ks) * dout).sum().backward()
            f.attrs["relpos.%d.qs" % i] = np.int32(qs)
            f.attrs["relpos.%d.ks" % i] = np.int32(ks)
            f.create_dataset("relpos/%d_in" % i, data=rel.detach().numpy(), **z)
            f.create_dataset("relpos/%d_dout" % i, data=dout.numpy(), **z)
            f.create_dataset("relpos/%d_din" % i, data=rel.grad.numpy(), **z)
        # the attention kernel on 4 grids of 3 x 5 (h != w catches a swapped axis), 2 heads of 6
        Bw, h, w, heads, hd = 4, 3, 5, 2, 6
        qkv = f32(RS.standard_normal((Bw, h * w, 3 * heads * hd))).requires_grad_(True)
        Rh = ref.rel_table(f32(0.7 * RS.standard_normal((2 * h - 1, hd))), h, h).detach().requires_grad_(True)
        Rw = ref.rel_table(f32(0.7 * RS.standard_normal((2 * w - 1, hd))), w, w).detach().requires_grad_(True)
        dout = f32(RS.standard_normal((Bw, h * w, heads * hd)))
        (attention_tables(qkv, heads, h, w, Rh, Rw) * dout).sum().backward()
        for n, t in (("qkv", qkv), ("Rh", Rh), ("Rw", Rw)):
            f.create_dataset("attn/" + n, data=t.detach().numpy(), **z)
            f.create_dataset("attn/d" + n, data=t.grad.numpy(), **z)
        f.create_dataset("attn/dout", data=dout.numpy(), **z)
    print("wrote %s" % sys.argv[1])


if __name__ == "__main__":
    main()
