"""tests/ref/refseg_metrics_ref.py — reference gIoU / cIoU for eval/evaluate.h
(eval_cell_add / eval_cell_means), written from the published definitions
(SPEC 4; LISA's validate(): intersection and union per mask, acc_iou =
intersection / union with an empty union counted as 1.0, gIoU = mean of
acc_iou over the masks, cIoU = sum of intersections / sum of unions), in
numpy, independently of the C code.

Predictions are random float32 logits (a mask is logits > 0) or absent (the
empty prediction of a ground truth without a generated [SEG]); ground truths
random 0/1 masks of random sizes, with empty ground truths, empty
predictions and both empty among them; every sample carries a reference type
0..3 (text, box, image, audio). Besides the model's numbers the script
writes those of the two baselines (the empty mask; the whole image).

Writes an HDF5 fixture: per sample h, w, ref, has_pred, offsets into the
concatenated logits / gt arrays, and per reference type the six expected
numbers (NaN for a type without samples). Usage:
    /usr/bin/python3 tests/ref/refseg_metrics_ref.py tests/fixtures/refseg_metrics.h5
"""
import sys

import h5py
import numpy as np


def metrics(preds, gts):
    """gIoU and cIoU of boolean masks, LISA's way."""
    inter = np.array([np.logical_and(p, g).sum() for p, g in zip(preds, gts)], dtype=np.float64)
    union = np.array([np.logical_or(p, g).sum() for p, g in zip(preds, gts)], dtype=np.float64)
    acc = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    giou = acc.mean()
    ciou = inter.sum() / union.sum() if union.sum() > 0 else 1.0
    return giou, ciou


def main(out):
    rng = np.random.default_rng(20261126)
    n = 160
    hs, ws, refs, has, logits, gts = [], [], [], [], [], []
    for i in range(n):
        h, w = int(rng.integers(1, 21)), int(rng.integers(1, 21))
        kind = i % 8
        if kind == 0:
            g = np.zeros((h, w), bool)                     # empty ground truth
        elif kind == 1:
            g = np.ones((h, w), bool)                      # whole image
        else:
            g = rng.random((h, w)) < rng.uniform(0.05, 0.7)
        x = rng.normal(0.0, 2.0, size=(h, w)).astype(np.float32)
        x[x == 0] = 1e-3
        if kind == 2:
            x = -np.abs(x) - 0.1                           # empty prediction
        if kind == 3:
            x = np.where(g, np.abs(x) + 0.1, -np.abs(x) - 0.1).astype(np.float32)   # perfect
        hp = 0 if kind == 4 else 1                         # no [SEG]: scored as empty
        hs.append(h); ws.append(w); refs.append(int(rng.integers(0, 4)) if i % 5 else 0)
        has.append(hp); logits.append(x); gts.append(g.astype(np.float32))
    expect = np.full((4, 6), np.nan)
    for r in range(4):
        idx = [i for i in range(n) if refs[i] == r]
        if not idx:
            continue
        preds = [(logits[i] > 0) if has[i] else np.zeros_like(gts[i], bool) for i in idx]
        g = [gts[i] > 0.5 for i in idx]
        expect[r, 0], expect[r, 1] = metrics(preds, g)
        expect[r, 2], expect[r, 3] = metrics([np.zeros_like(m) for m in g], g)
        expect[r, 4], expect[r, 5] = metrics([np.ones_like(m) for m in g], g)
    off = np.cumsum([0] + [h * w for h, w in zip(hs, ws)])
    with h5py.File(out, "w") as f:
        f["h"] = np.array(hs, np.int32)
        f["w"] = np.array(ws, np.int32)
        f["ref"] = np.array(refs, np.int32)
        f["has_pred"] = np.array(has, np.int32)
        f["offset"] = off.astype(np.int64)
        f["logits"] = np.concatenate([x.ravel() for x in logits]).astype(np.float32)
        f["gt"] = np.concatenate([g.ravel() for g in gts]).astype(np.uint8)
        f["expect"] = expect
        f.attrs["n"] = n


if __name__ == "__main__":
    main(sys.argv[1])
