#!/usr/bin/python3
"""tests/ref/kernels_ref.py — PyTorch reference for every primitive of kernels/kernels.h.

Usage:  /usr/bin/python3 tests/ref/kernels_ref.py tests/fixtures/kernels.h5
(`make fixtures` runs exactly this.) tests/test_parity.c reads the file.

Each case is one HDF5 group. Inputs are drawn in float32 with a fixed seed and
stored as float64 holding float32-representable values, so the C float32
kernels see exactly the numbers PyTorch saw. The reference itself runs in
float64 with autograd (Debian's torch 1.13 has a float32 exact-GELU backward
bug, SPEC section 6). For each output X a random upstream gradient r_X is drawn
and Σ X·r_X is backpropagated. Datasets in a group:
    <input>       float64 (or int32 for ids/targets/positions/key_len)
    r_<output>    the upstream gradient of that output
    <output>      the forward result (float64; scalar losses have shape (1,))
    grad_<input>  the gradient of Σ X·r_X with respect to that input
Shape parameters and scalars (N, D, eps, scale, causal, ...) are attributes.
"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

torch.manual_seed(20240607)
f64 = torch.float64


def rn(*shape, s=1.0):
    """float32 normal draws, returned as float64 (exactly representable)."""
    return (torch.randn(*shape, dtype=torch.float32) * s).to(f64)


def un(*shape, lo=0.0, hi=1.0):
    return (torch.rand(*shape, dtype=torch.float32) * (hi - lo) + lo).to(f64)


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def backprop(outs):
    """outs: dict name -> tensor. Draws r_<name>, backprops Σ out·r, returns the r's."""
    rs, loss = {}, 0.0
    for name, o in outs.items():
        r = rn(*o.shape)
        rs["r_" + name] = r
        loss = loss + (o * r).sum()
    loss.backward()
    return rs


class Writer:
    def __init__(self, path):
        self.f = h5py.File(path, "w")
        self.f.attrs["generator"] = "tests/ref/kernels_ref.py (torch %s, torchvision %s, float64)" % (
            torch.__version__, torchvision.__version__)

    def case(self, name, attrs, **tensors):
        g = self.f.create_group(name)
        for k, v in attrs.items():
            g.attrs[k] = np.int32(v) if isinstance(v, (bool, int)) else np.float64(v)
        for k, t in tensors.items():
            if t is None:
                continue
            if isinstance(t, (float, int)) and not isinstance(t, bool):
                t = torch.tensor([t], dtype=f64)
            t = t.detach()
            if t.dim() == 0:
                t = t.reshape(1)
            if t.dtype in (torch.int32, torch.int64):
                g.create_dataset(k, data=t.to(torch.int32).numpy())
            else:
                g.create_dataset(k, data=t.to(f64).numpy())

    def close(self):
        self.f.close()


def grads(**leaves):
    """grad_<name> for every leaf that is given and received a gradient."""
    return {"grad_" + k: v.grad for k, v in leaves.items() if v is not None and v.grad is not None}


# ---------------------------------------------------------------- dense algebra
def case_matmul(w):
    M, N, K = 7, 5, 9
    for ta in (0, 1):
        for tb in (0, 1):
            A = leaf(rn(*((K, M) if ta else (M, K))))
            B = leaf(rn(*((N, K) if tb else (K, N))))
            C = (A.t() if ta else A) @ (B.t() if tb else B)
            rs = backprop({"C": C})
            w.case("matmul_t%d%d" % (ta, tb), dict(M=M, N=N, K=K, ta=ta, tb=tb),
                   A=A, B=B, C=C, **rs, **grads(A=A, B=B))
    # The BLAS-style entry point: C = alpha op(A) op(B) + beta C0 (no gradient).
    A, B, C0 = rn(K, M), rn(K, N), rn(M, N)
    alpha, beta = 0.75, -0.5
    C = alpha * (A.t() @ B) + beta * C0
    w.case("matmul_gemm", dict(M=M, N=N, K=K, ta=1, tb=0, alpha=alpha, beta=beta), A=A, B=B, C0=C0, C=C)


def case_linear(w):
    N, IN, OUT = 6, 8, 5
    for bias in (1, 0):
        x, W = leaf(rn(N, IN)), leaf(rn(OUT, IN, s=0.5))
        b = leaf(rn(OUT)) if bias else None
        out = F.linear(x, W, b)
        rs = backprop({"out": out})
        w.case("linear_bias" if bias else "linear_nobias", dict(N=N, IN=IN, OUT=OUT),
               x=x, w=W, b=b, out=out, **rs, **grads(x=x, w=W, b=b))


def case_lora(w):
    N, IN, OUT, R, scale, p = 6, 8, 5, 3, 2.0, 0.25
    for masked in (1, 0):
        x, W, b = leaf(rn(N, IN)), leaf(rn(OUT, IN, s=0.5)), leaf(rn(OUT))
        A, B = leaf(rn(R, IN, s=0.5)), leaf(rn(OUT, R, s=0.5))
        mask = None
        if masked:
            keep = torch.rand(N, IN) >= p
            mask = torch.where(keep, torch.tensor(1.0 / (1.0 - p), dtype=torch.float32),
                               torch.tensor(0.0)).to(torch.float32).to(f64)
            assert (mask == 0).any() and (mask != 0).any()
        xd = x * mask if masked else x
        u = xd @ A.t()
        out = F.linear(x, W, b) + scale * (u @ B.t())
        rs = backprop({"out": out})
        w.case("lora_mask" if masked else "lora_nomask", dict(N=N, IN=IN, OUT=OUT, R=R, scale=scale),
               x=x, mask=mask, w=W, b=b, A=A, B=B, out=out, u=u, xd=xd if masked else None,
               **rs, **grads(x=x, w=W, b=b, A=A, B=B))


def case_embedding(w):
    V, D = 11, 6
    ids = torch.tensor([3, 1, 3, 0, 10, 3, 7, 1, 5], dtype=torch.int32)
    table = leaf(rn(V, D))
    out = F.embedding(ids.long(), table)
    rs = backprop({"out": out})
    w.case("embedding", dict(N=ids.numel(), D=D, V=V), ids=ids, table=table, out=out, **rs,
           **grads(table=table))


# ---------------------------------------------------------------- normalisation
def case_norms(w):
    # Row 0 is small enough that eps matters (mean square ~ eps), so where eps
    # sits in the formula is visible in the comparison.
    N, D, eps = 5, 16, 1e-6
    x = rn(N, D, s=2.0)
    x[0] *= 5e-4
    x, W = leaf(x), leaf(1.0 + rn(D, s=0.2))
    rstd = torch.rsqrt(x.pow(2).mean(-1) + eps)
    out = x * rstd[:, None] * W
    rs = backprop({"out": out})
    w.case("rmsnorm", dict(N=N, D=D, eps=eps), x=x, w=W, out=out, rstd=rstd, **rs, **grads(x=x, w=W))

    eps = 1e-5
    for affine in (1, 0):
        x = rn(N, D, s=1.5) + 0.7
        x[0] = rn(D, s=3e-3)  # variance ~ eps
        x = leaf(x)
        W = leaf(1.0 + rn(D, s=0.2)) if affine else None
        b = leaf(rn(D, s=0.2)) if affine else None
        out = F.layer_norm(x, (D,), W, b, eps)
        mean = x.mean(-1)
        rstd = torch.rsqrt(x.var(-1, unbiased=False) + eps)
        rs = backprop({"out": out})
        w.case("layernorm" if affine else "layernorm_noaffine", dict(N=N, D=D, eps=eps),
               x=x, w=W, b=b, out=out, mean=mean, rstd=rstd, **rs,
               **grads(x=x, w=W, b=b))

    # SAM LayerNorm2d: normalise over channels at each pixel, eps 1e-6.
    B, C, H, Wd, eps = 2, 8, 3, 4, 1e-6
    x = rn(B, C, H, Wd, s=1.5) - 0.3
    x[0, :, 0, 0] = rn(C, s=1e-3)  # a pixel whose variance ~ eps
    x, W, b = leaf(x), leaf(1.0 + rn(C, s=0.2)), leaf(rn(C, s=0.2))
    u = x.mean(1, keepdim=True)
    s2 = (x - u).pow(2).mean(1, keepdim=True)
    out = W[:, None, None] * ((x - u) / torch.sqrt(s2 + eps)) + b[:, None, None]
    rs = backprop({"out": out})
    w.case("layernorm2d", dict(B=B, C=C, HW=H * Wd, eps=eps), x=x, w=W, b=b, out=out,
           mean=u.reshape(B, H * Wd), rstd=torch.rsqrt(s2 + eps).reshape(B, H * Wd), **rs,
           **grads(x=x, w=W, b=b))


# ---------------------------------------------------------------- rope, attention, softmax
def case_rope(w):
    N, H, hd, theta = 6, 3, 8, 10000.0
    pos = torch.tensor([0, 3, 4, 10, 57, 130], dtype=torch.int32)
    x = leaf(rn(N, H, hd))
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=f64) / hd))
    fr = pos.to(f64)[:, None] * inv[None, :]
    emb = torch.cat([fr, fr], -1)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    out = x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()
    rs = backprop({"out": out})
    w.case("rope", dict(N=N, H=H, hd=hd, theta=theta), pos=pos, x=x, out=out, **rs, **grads(x=x))


def attention_ref(q, k, v, key_len, causal, scale):
    """q[B,T,Hq,hd], k,v[B,S,Hkv,hd] -> out[B,T,Hq,hd], att[B,Hq,T,S]."""
    B, T, Hq, hd = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(Hq // Hkv, dim=1)
    allowed = torch.ones(B, T, S, dtype=torch.bool)
    t = torch.arange(T)[:, None]
    j = torch.arange(S)[None, :]
    if causal:
        allowed &= (j <= t + (S - T))[None]
    if key_len is not None:
        allowed &= (j[None] < key_len.long()[:, None, None])
    assert allowed.any(-1).all(), "a fully masked row is not part of these fixtures"
    sc = (qh @ kh.transpose(-1, -2)) * scale
    sc = sc.masked_fill(~allowed[:, None], float("-inf"))
    att = torch.softmax(sc, -1)
    out = (att @ vh).permute(0, 2, 1, 3)
    return out, att


def case_attention(w):
    cfgs = [  # name, B, T, S, Hq, Hkv, hd, causal, key_len, extra gradient on att
        ("attn_causal", 2, 5, 5, 2, 2, 4, 1, None, 0),
        ("attn_pad", 2, 6, 6, 2, 2, 4, 0, [6, 4], 0),
        ("attn_gqa", 1, 5, 5, 4, 2, 4, 1, None, 0),
        ("attn_offset", 2, 3, 7, 4, 2, 4, 1, [7, 6], 0),
        ("attn_dattx", 2, 4, 6, 4, 2, 4, 1, [6, 5], 1),
    ]
    for name, B, T, S, Hq, Hkv, hd, causal, kl, dattx in cfgs:
        q, k, v = leaf(rn(B, T, Hq, hd)), leaf(rn(B, S, Hkv, hd)), leaf(rn(B, S, Hkv, hd))
        key_len = torch.tensor(kl, dtype=torch.int32) if kl is not None else None
        scale = 1.0 / float(np.sqrt(hd))
        out, att = attention_ref(q, k, v, key_len, causal, scale)
        rs = backprop({"out": out, "att": att} if dattx else {"out": out})
        w.case(name, dict(B=B, T=T, S=S, Hq=Hq, Hkv=Hkv, hd=hd, causal=causal, scale=scale,
                          has_key_len=int(kl is not None), dattx=dattx),
               q=q, k=k, v=v, key_len=key_len, out=out, att=att, **rs, **grads(q=q, k=k, v=v))


def case_softmax(w):
    N, C = 4, 10
    x = leaf(rn(N, C, s=2.0))
    out = torch.softmax(x, -1)
    rs = backprop({"out": out})
    w.case("softmax", dict(N=N, C=C), x=x, out=out, **rs, **grads(x=x))


# ---------------------------------------------------------------- element-wise
def case_elementwise(w):
    n = 64
    fns = {
        "silu": F.silu,
        "gelu": lambda t: F.gelu(t, approximate="none"),
        "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t),
        "relu": F.relu,
    }
    for name, fn in fns.items():
        x = leaf(rn(n, s=2.0))
        out = fn(x)
        rs = backprop({"out": out})
        w.case(name, dict(n=n), x=x, out=out, **rs, **grads(x=x))
    g, u = leaf(rn(n, s=2.0)), leaf(rn(n))
    out = F.silu(g) * u
    rs = backprop({"out": out})
    w.case("swiglu", dict(n=n), gate=g, up=u, out=out, **rs, **grads(gate=g, up=u))
    a, b = leaf(rn(n)), leaf(rn(n))
    out = a + b
    rs = backprop({"out": out})
    w.case("add", dict(n=n), a=a, b=b, out=out, **rs, **grads(a=a, b=b))
    y0, x, alpha = rn(n), rn(n), -0.375
    w.case("axpy", dict(n=n, alpha=alpha), y0=y0, x=x, y=y0 + alpha * x)


# ---------------------------------------------------------------- losses
def case_losses(w):
    N, V, dloss = 6, 1000, 0.7
    logits = leaf(rn(N, V, s=3.0))
    tg = torch.randint(0, V, (N,), dtype=torch.int32)
    tg[1] = -100
    tg[4] = -100
    loss = F.cross_entropy(logits, tg.long(), ignore_index=-100)
    (loss * dloss).backward()
    w.case("softmax_xent", dict(N=N, V=V, ignore_index=-100, dloss=dloss, count=int((tg != -100).sum())),
           logits=logits, targets=tg, loss=loss, lse=torch.logsumexp(logits, -1), grad_logits=logits.grad)
    # No counted target: the loss is defined as 0 (not PyTorch's nan), gradient 0.
    logits = rn(3, 50)
    tg = torch.full((3,), -100, dtype=torch.int32)
    w.case("softmax_xent_allignored", dict(N=3, V=50, ignore_index=-100, dloss=dloss, count=0),
           logits=logits, targets=tg, loss=0.0, lse=torch.logsumexp(logits, -1),
           grad_logits=torch.zeros(3, 50, dtype=f64))

    n, dloss = 96, 0.5
    x = leaf(rn(n, s=2.5))
    y = (torch.rand(n) < 0.4).to(f64)
    loss = F.binary_cross_entropy_with_logits(x, y)
    (loss * dloss).backward()
    w.case("bce_logits", dict(n=n, dloss=dloss), x=x, y=y, loss=loss, grad_x=x.grad)
    x = leaf(rn(n, s=2.5))
    sig = torch.sigmoid(x)
    # LISA/AnyRef dice_loss: scale 1000, eps 1e-6 (SPEC 2.9's "+1" is not what they compute)
    scale, eps = 1000.0, 1e-6
    loss = 1.0 - (2.0 * (sig / scale * y).sum() + eps) / ((sig / scale).sum() + (y / scale).sum() + eps)
    (loss * dloss).backward()
    w.case("dice", dict(n=n, dloss=dloss), x=x, y=y, loss=loss, grad_x=x.grad)


# ---------------------------------------------------------------- vision
def case_vision(w):
    for name, C, hi, wi, ho, wo in (("resize_up", 3, 7, 5, 16, 11), ("resize_down", 2, 32, 20, 9, 13)):
        x = leaf(rn(C, hi, wi))
        out = F.interpolate(x[None], size=(ho, wo), mode="bilinear", align_corners=False)[0]
        rs = backprop({"out": out})
        w.case(name, dict(C=C, Hin=hi, Win=wi, Hout=ho, Wout=wo), x=x, out=out, **rs, **grads(x=x))

    B, Cin, Cout, H, Wd = 2, 4, 3, 3, 5
    for bias in (1, 0):
        x, W = leaf(rn(B, Cin, H, Wd)), leaf(rn(Cin, Cout, 2, 2, s=0.5))
        b = leaf(rn(Cout)) if bias else None
        out = F.conv_transpose2d(x, W, b, stride=2)
        rs = backprop({"out": out})
        w.case("convt2x2_bias" if bias else "convt2x2_nobias", dict(B=B, Cin=Cin, Cout=Cout, H=H, W=Wd),
               x=x, w=W, b=b, out=out, **rs, **grads(x=x, w=W, b=b))

    cfgs = [  # name, B, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw, bias
        ("conv2d_3x3", 2, 3, 6, 7, 4, 3, 3, 1, 1, 1, 1, 1),
        ("conv2d_4x4s2", 2, 3, 8, 6, 4, 4, 4, 2, 2, 1, 1, 1),
        ("conv2d_patch16", 1, 3, 32, 48, 8, 16, 16, 16, 16, 0, 0, 0),
        ("conv2d_k16s10", 1, 1, 36, 46, 6, 16, 16, 10, 10, 0, 0, 0),
    ]
    for name, B, Cin, H, Wd, Cout, KH, KW, sh, sw, ph, pw, bias in cfgs:
        x, W = leaf(rn(B, Cin, H, Wd)), leaf(rn(Cout, Cin, KH, KW, s=0.2))
        b = leaf(rn(Cout)) if bias else None
        out = F.conv2d(x, W, b, stride=(sh, sw), padding=(ph, pw))
        rs = backprop({"out": out})
        w.case(name, dict(B=B, Cin=Cin, H=H, W=Wd, Cout=Cout, KH=KH, KW=KW, sh=sh, sw=sw, ph=ph, pw=pw,
                          OH=out.shape[2], OW=out.shape[3], bias=bias),
               x=x, w=W, b=b, out=out, **rs, **grads(x=x, w=W, b=b))

    # RoIAlign, channels-last in C; boxes partly outside the grid, one below 1 px.
    B, H, Wd, C = 2, 16, 16, 5
    cfgs = [  # name, PH, PW, spatial_scale, sampling_ratio, aligned, boxes (batch, x1, y1, x2, y2)
        ("roi_aligned", 2, 2, 1.0, 2, 1,
         [[0, 2.3, 3.1, 9.7, 12.4], [1, -3.2, 5.5, 6.1, 18.7], [0, 10.4, -2.6, 19.3, 4.2], [1, 7.25, 7.6, 7.9, 8.1]]),
        ("roi_adaptive", 3, 3, 0.5, 0, 0,
         [[1, 4.6, 2.2, 27.4, 30.9], [0, -6.3, 11.1, 9.9, 35.2], [0, 20.7, 1.3, 40.5, 13.6], [1, 15.1, 15.3, 15.8, 16.2]]),
    ]
    for name, PH, PW, ss, sr, al, bx in cfgs:
        x = leaf(rn(B, H, Wd, C))
        boxes = torch.tensor(bx, dtype=torch.float32).to(f64)
        o = torchvision.ops.roi_align(x.permute(0, 3, 1, 2), boxes, output_size=(PH, PW),
                                      spatial_scale=ss, sampling_ratio=sr, aligned=bool(al))
        out = o.permute(0, 2, 3, 1)
        rs = backprop({"out": out})
        w.case(name, dict(K=len(bx), B=B, H=H, W=Wd, C=C, PH=PH, PW=PW, spatial_scale=ss,
                          sampling_ratio=sr, aligned=al),
               x=x, boxes=boxes, out=out, **rs, **grads(x=x))


# ---------------------------------------------------------------- refocusing (SPEC 2.5)
def refocus_ref(hid, att, p, s, lam):
    if s >= p:
        return hid[p]
    P = att[:, p, s:p].mean(0)
    a = P / P.sum()
    return hid[p] + lam * (a[:, None] * hid[s:p]).sum(0)


def case_refocus(w):
    lam = 0.1
    for name, T, S, Hq, D, p, s in (("refocus", 7, 9, 3, 6, 5, 1), ("refocus_empty", 5, 5, 2, 4, 3, 3)):
        hid = leaf(rn(T, D))
        att = leaf(torch.softmax(rn(Hq, T, S, s=2.0), -1))
        out = refocus_ref(hid, att, p, s, lam)
        rs = backprop({"out": out})
        gatt = att.grad if att.grad is not None else torch.zeros_like(att)
        w.case(name, dict(T=T, S=S, Hq=Hq, D=D, p=p, s=s, lam=lam), hid=hid, att=att, out=out, **rs,
               grad_hid=hid.grad, grad_att=gatt)

    # attention -> refocus chained: hid is the attention output itself, so the
    # refocus gradient reaches q, k, v both through hid and through the probabilities.
    B, T, Hq, Hkv, hd, p, s = 1, 8, 4, 2, 4, 6, 2
    q, k, v = leaf(rn(B, T, Hq, hd)), leaf(rn(B, T, Hkv, hd)), leaf(rn(B, T, Hkv, hd))
    scale = 1.0 / float(np.sqrt(hd))
    out, att = attention_ref(q, k, v, None, 1, scale)
    h = refocus_ref(out.reshape(T, Hq * hd), att[0], p, s, lam)
    rs = backprop({"out": out, "h": h})
    w.case("attn_refocus", dict(B=B, T=T, S=T, Hq=Hq, Hkv=Hkv, hd=hd, D=Hq * hd, causal=1, scale=scale,
                                p=p, s=s, lam=lam),
           q=q, k=k, v=v, out=out, att=att, h=h, **rs, **grads(q=q, k=k, v=v))


# ---------------------------------------------------------------- optimiser
def case_adamw(w):
    # eps is large and some gradients small, so that where eps enters the
    # update (after the bias-corrected sqrt, as in PyTorch) is visible.
    n, lr, b1, b2, eps, wd = 50, 1e-2, 0.9, 0.95, 1e-3, 0.1
    p0 = rn(n, s=0.5)
    g1, g2 = rn(n), rn(n, s=0.3)
    g1[10:20] *= 1e-3
    g2[:5] = 0.0  # a zero gradient in the second step still moves via momentum and decay
    prm = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([prm], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    res = {}
    for t, g in ((1, g1), (2, g2)):
        prm.grad = g.clone()
        opt.step()
        st = opt.state[prm]
        res["param%d" % t] = prm.detach().clone()
        res["m%d" % t] = st["exp_avg"].clone()
        res["v%d" % t] = st["exp_avg_sq"].clone()
    w.case("adamw", dict(n=n, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd),
           param0=p0, grad1=g1, grad2=g2, **res)
    x = rn(200, s=3.0)
    w.case("sumsq_scale", dict(n=200, s=0.625), x=x, sumsq=(x * x).sum(), scaled=x * 0.625)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: /usr/bin/python3 tests/ref/kernels_ref.py OUT.h5")
    torch.set_num_threads(1)
    w = Writer(sys.argv[1])
    for fn in (case_matmul, case_linear, case_lora, case_embedding, case_norms, case_rope, case_attention,
               case_softmax, case_elementwise, case_losses, case_vision, case_refocus, case_adamw):
        fn(w)
    n = len(w.f.keys())
    w.close()
    print("wrote %s: %d cases" % (sys.argv[1], n))


if __name__ == "__main__":
    main()
