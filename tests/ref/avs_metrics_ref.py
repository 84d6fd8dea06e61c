"""tests/ref/avs_metrics_ref.py — writes tests/fixtures/avs_metrics.h5 for
tests/test_avs_metrics.c: generated AVSBench predictions and ground truths with
J and F computed the way the public AVSBench evaluation computes them.

An independent re-implementation (written from the definitions, not copied)
of OpenNLPLab/AVSBench avs_scripts/avs_s4/utils/utility.py `mask_iou`,
`Eval_Fmeasure` and `_eval_pr`, and utils/pyutils.py `AverageMeter` as
avs_s4/test.py uses them (also repeated in jwh97nn/AnyRef utils/pyutils.py):
float32 torch tensors, the sigmoid applied to the logits inside both metrics,
J thresholding at sigmoid > 0.5 with empty ground truths scored as the
fraction of correctly empty pixels, F over torch.linspace(0, 1 - 1e-10, 255)
thresholds (p >= t), frames with an empty gt skipped, the F curve averaged over
the kept frames and its max taken, 0 for a batch with no kept frame; J and F
averaged over batches. Semantics in eval/avs_metrics.h.

Usage: /usr/bin/python3 tests/ref/avs_metrics_ref.py tests/fixtures/avs_metrics.h5
"""
import sys

import h5py
import numpy as np
import torch

PR_NUM = 255
BETA2 = 0.3


def ref_mask_iou(logits, gt):
    """J of one batch: logits, gt float32 [N, H, W]."""
    n, h, w = logits.shape
    b = (torch.sigmoid(logits) > 0.5).to(torch.float32)
    ious = []
    for k in range(n):
        g = gt[k]
        if float(g.sum()) == 0.0:
            inter = ((1 - g) * (1 - b[k])).sum()
            uni = torch.tensor(float(h * w), dtype=torch.float32)
        else:
            inter = (b[k] * g).sum()
            uni = torch.maximum(b[k], g).sum()
        ious.append(inter / (uni + 1e-7))
    return torch.stack(ious).sum() / n


def ref_pr(p, g, th):
    prec = torch.zeros(PR_NUM)
    rec = torch.zeros(PR_NUM)
    for i in range(PR_NUM):
        y = (p >= th[i]).to(torch.float32)
        tp = (y * g).sum()
        prec[i] = tp / (y.sum() + 1e-20)
        rec[i] = tp / (g.sum() + 1e-20)
    return prec, rec


def ref_fmeasure(logits, gt, th):
    """F of one batch and the mean curve."""
    p = torch.sigmoid(logits)
    total = torch.zeros(PR_NUM)
    kept = 0
    for k in range(p.shape[0]):
        if float(gt[k].mean()) == 0.0:
            continue
        prec, rec = ref_pr(p[k], gt[k], th)
        f = (1 + BETA2) * prec * rec / (BETA2 * prec + rec)
        f = torch.where(torch.isnan(f), torch.zeros_like(f), f)
        total = total + f
        kept += 1
    curve = total / kept if kept else torch.zeros(PR_NUM)
    return float(curve.max()), curve, kept


def untie(x, th64, rng):
    """Moves logits off the places where an ulp of sigmoid decides: near 0,
    near the float32 saturation at ~16.6, within 1e-6 of a threshold."""
    x = x.astype(np.float32)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
        # p >= 0 always holds and p >= 1.0f is the saturation below: inner thresholds only
        d = np.min(np.abs(p[..., None] - th64[1:-1]), axis=-1)
        bad = (np.abs(x) < 1e-3) | ((np.abs(x) > 15) & (np.abs(x) < 19)) | (d < 1e-6)
        if not bad.any():
            return x
        x[bad] = (x[bad] + rng.uniform(0.01, 0.05, size=int(bad.sum()))).astype(np.float32)
    raise RuntimeError("could not untie")


def blob(h, w, rng):
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(2, h / 2), rng.uniform(2, w / 2)
    return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.float32)


def main(out):
    rng = np.random.default_rng(8)
    H, W, T = 24, 32, 5
    th = torch.linspace(0, 1 - 1e-10, PR_NUM)  # float32, as the script
    th64 = th.double().numpy()
    frames_x, frames_g, batches = [], [], []

    def add_batch(xs, gs):
        batches.append((len(frames_x), len(xs)))
        for x, g in zip(xs, gs):
            frames_x.append(untie(x, th64, rng))
            frames_g.append(g.astype(np.float32))

    def noisy(g, scale, bias=0.0):
        return (g * 2 - 1) * scale + rng.normal(0, 3, g.shape) + bias

    # 0: ordinary video, blobs, noisy logits
    gs = [blob(H, W, rng) for _ in range(T)]
    add_batch([noisy(g, 2.0) for g in gs], gs)
    # 1: MS3-like: empty and all-ones ground truths among ordinary ones
    gs = [blob(H, W, rng), np.zeros((H, W)), np.ones((H, W)), np.zeros((H, W)), blob(H, W, rng)]
    xs = [noisy(gs[0], 1.5), rng.normal(-2, 3, (H, W)), noisy(gs[2], 1.0, -1.0),
          np.full((H, W), -30.0), noisy(gs[4], 3.0)]
    add_batch(xs, gs)
    # 2: every ground truth empty -> F = 0 for the batch, J = empty-pixel fraction
    gs = [np.zeros((H, W)) for _ in range(T)]
    add_batch([rng.normal(-1, 2, (H, W)) for _ in range(T)], gs)
    # 3: saturated logits (sigmoid == 1.0f and underflow), empty predictions
    gs = [blob(H, W, rng) for _ in range(T)]
    xs = [np.where(g > 0, 25.0, -200.0) for g in gs]
    xs[1] = np.full((H, W), -40.0)                       # nothing predicted
    xs[2] = np.where(rng.random((H, W)) < 0.5, 30.0, -5.0)
    xs[3] = np.full((H, W), 22.0)                        # everything at p == 1.0f
    xs[4] = noisy(gs[4], 8.0)
    add_batch(xs, gs)
    # 4: perfect prediction and its complement
    gs = [blob(H, W, rng) for _ in range(T)]
    xs = [np.where(g > 0, 4.0, -4.0) for g in gs]
    xs[2] = -xs[2]
    add_batch(xs, gs)
    # 5: two videos in one batch (test.py with batch size 2): means over 10 frames
    gs = [blob(H, W, rng) if k % 4 else np.zeros((H, W)) for k in range(2 * T)]
    add_batch([noisy(g, 1.0, rng.uniform(-1, 1)) for g in gs], gs)
    # 6..9: random videos, small objects
    for _ in range(4):
        gs = [blob(H, W, rng) * blob(H, W, rng) for _ in range(T)]
        add_batch([noisy(g, rng.uniform(0.5, 4)) for g in gs], gs)

    X = torch.from_numpy(np.stack(frames_x)).to(torch.float32)
    G = torch.from_numpy(np.stack(frames_g)).to(torch.float32)
    J, F, curves, kept = [], [], [], []
    jmeter = torch.zeros((), dtype=torch.float32)  # AverageMeter: tensor J, python-float F
    fmeter = 0.0
    for s, n in batches:
        j = ref_mask_iou(X[s:s + n], G[s:s + n])
        f, curve, k = ref_fmeasure(X[s:s + n], G[s:s + n], th)
        J.append(float(j))
        F.append(f)
        curves.append(curve.double().numpy())
        kept.append(k)
        jmeter = jmeter + j
        fmeter += f
    with h5py.File(out, "w") as h5:
        h5.attrs["h"] = H
        h5.attrs["w"] = W
        h5.attrs["frames"] = X.shape[0]
        h5.attrs["pr_num"] = PR_NUM
        # float32 as the script's tensors; gt is 0/1
        h5.create_dataset("logits", data=X.numpy(), compression="gzip")
        h5.create_dataset("probs", data=torch.sigmoid(X).numpy(), compression="gzip")
        h5.create_dataset("gt", data=G.numpy().astype(np.uint8), compression="gzip")
        h5["thresholds"] = th64
        h5["batch_start"] = np.array([b[0] for b in batches], dtype=np.int32)
        h5["batch_n"] = np.array([b[1] for b in batches], dtype=np.int32)
        h5["batch_j"] = np.array(J)
        h5["batch_f"] = np.array(F)
        h5["batch_curve"] = np.stack(curves)
        h5["batch_kept"] = np.array(kept, dtype=np.int32)
        h5["split_j"] = np.array([float(jmeter) / len(batches)])
        h5["split_f"] = np.array([fmeter / len(batches)])
    print(f"wrote {out}: {len(batches)} batches, {X.shape[0]} frames; J {J}; F {F}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/avs_metrics.h5")
