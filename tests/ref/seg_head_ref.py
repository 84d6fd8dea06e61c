#!/usr/bin/python3
"""tests/ref/seg_head_ref.py — PyTorch float64 reference of the [SEG] head (model/seg_head.c).

Usage: /usr/bin/python3 tests/ref/seg_head_ref.py tests/fixtures/seg_head.h5   (`make fixtures`)

Written from AnyRef's model_forward_new (jwh97nn/AnyRef model/anyref.py) and
SPEC 2.5, not from the C code: the [SEG] positions come from torch.where on the
input ids, p = index - 1; the span start is AnyRef's
`torch.where(labels[i] > 0)[0][0] - 1` on the UNSHIFTED labels, rebuilt here
from the decoder's shifted targets (labels[t] = targets[t - 1], labels[0] =
-100) so the C side's shifted rule is checked against the original one. The
refocused state is H[p] + λ Σ_{i∈[s,p)} a_i H[i] with a = mean_h att[h, p, s:p]
normalised by its sum; every [SEG] of a sample uses that sample's s (SPEC 2.5,
not the official pairing of the i-th [SEG] with sample i); an empty span
gives H[p]; λ = 0 skips the branch as `rephrase_weight > 0` does. Then
text_hidden_fcs[0] = Sequential(Linear(D,D), ReLU, Linear(D,O), Dropout(0)).
Autograd gives the gradients of L = Σ out·r.

The batch mixes a sample with one [SEG] (and a target 0 before the first
positive one, which must not start the span), one with two [SEG]s, one with
none, and one whose span is empty (first answer after the [SEG]).

Fixture layout (float64; inputs float32-representable):
  attrs            dim, out_dim, heads, B, T, seg_token
  tokens, targets  int32 [B, T]
  segs             int32 [n, 3]: (sample, p, s) per [SEG] in torch.where order (s = p if empty)
  xf [B*T, D], att [B, Hq, T, T], r [n, O]
  params/<name>    model.text_hidden_fcs.0.{0,2}.{weight,bias}
  lam<λ>/out [n, O], lam<λ>/grads/xf, lam<λ>/grads/att, lam<λ>/grads/<param name>   for λ in 0, 0.1
"""
import sys

import h5py
import numpy as np
import torch

f64 = torch.float64
D, O, HQ, B, T, SEG, V = 16, 8, 2, 4, 10, 29, 30
IGN = -100
PFX = "model.text_hidden_fcs.0."
LAMBDAS = [("lam0", 0.0), ("lam0.1", 0.1)]


def batch():
    gen = torch.Generator().manual_seed(7)
    tokens = torch.randint(1, SEG, (B, T), generator=gen)
    targets = torch.full((B, T), IGN, dtype=torch.long)
    # sample 0: [SEG] at 7; targets: a 0 at 1 (not supervised by the > 0 rule), answer from 3
    tokens[0, 7] = SEG
    targets[0, 1] = 0
    targets[0, 3:8] = tokens[0, 4:9]
    # sample 1: [SEG]s at 5 and 8; answer from 2
    tokens[1, 5] = SEG
    tokens[1, 8] = SEG
    targets[1, 2:9] = tokens[1, 3:10]
    # sample 2: no [SEG]; answer from 4
    targets[2, 4:9] = tokens[2, 5:10]
    # sample 3: [SEG] at 3, answer from 4 (s > p: empty span)
    tokens[3, 3] = SEG
    targets[3, 4:9] = tokens[3, 5:10]
    return tokens, targets


def refocus_rows(tokens, targets, xf, att, lam):
    """AnyRef's rephrase, one row per [SEG]; returns rows and the (b, p, s) table."""
    labels = torch.full_like(targets, IGN)
    labels[:, 1:] = targets[:, :-1]
    hid = xf.reshape(B, T, D)
    bi, ti = torch.where(tokens == SEG)
    rows, segs = [], []
    for b, t in zip(bi.tolist(), ti.tolist()):
        p = t - 1
        pos = torch.where(labels[b] > 0)[0]
        s = int(pos[0]) - 1 if len(pos) else p
        if s >= p:
            s = p
        h = hid[b, p]
        if lam > 0 and s < p:
            a = att[b].mean(0)[p, s:p]
            a = a / a.sum()
            h = h + lam * (hid[b, s:p] * a.unsqueeze(-1)).sum(0)
        rows.append(h)
        segs.append((b, p, s))
    return torch.stack(rows), segs


def main(path):
    tokens, targets = batch()
    gen = torch.Generator().manual_seed(11)
    xf0 = torch.randn((B * T, D), generator=gen).float().to(f64)
    logits = torch.randn((B, HQ, T, T), generator=gen) * 2
    causal = torch.ones(T, T).tril().bool()
    att0 = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1).float().to(f64)
    fcs = torch.nn.Sequential(torch.nn.Linear(D, D), torch.nn.ReLU(), torch.nn.Linear(D, O),
                              torch.nn.Dropout(0.0)).to(f64)
    with torch.no_grad():
        for prm in fcs.parameters():
            prm.copy_(torch.randn(prm.shape, generator=gen).float().to(f64) * 0.4)
    names = {PFX + k: v for k, v in fcs.named_parameters()}
    n = int((tokens == SEG).sum())
    r = torch.randn((n, O), generator=gen).float().to(f64)
    with h5py.File(path, "w") as f:
        for k, v in dict(dim=D, out_dim=O, heads=HQ, B=B, T=T, seg_token=SEG).items():
            f.attrs[k] = v
        f["tokens"] = tokens.int().numpy()
        f["targets"] = targets.int().numpy()
        f["xf"] = xf0.numpy()
        f["att"] = att0.numpy()
        f["r"] = r.numpy()
        for k, v in names.items():
            f["params/" + k] = v.detach().numpy()
        for grp, lam in LAMBDAS:
            xf = xf0.clone().requires_grad_(True)
            att = att0.clone().requires_grad_(True)
            fcs.zero_grad()
            rows, segs = refocus_rows(tokens, targets, xf, att, lam)
            out = fcs(rows)
            (out * r).sum().backward()
            if "segs" not in f:
                f["segs"] = np.array(segs, dtype=np.int32)
            f[grp + "/out"] = out.detach().numpy()
            f[grp + "/grads/xf"] = xf.grad.numpy()
            f[grp + "/grads/att"] = (att.grad if att.grad is not None else torch.zeros_like(att)).numpy()
            for k, v in names.items():
                f[grp + "/grads/" + k] = v.grad.numpy()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/seg_head.h5")
