#!/usr/bin/env python3
"""tests/ref/refer_join_ref.py — fixtures for tests/test_refer_join.c (data/refer_samples.c).

    /work/wt/venv-coco/bin/python tests/ref/refer_join_ref.py tests/fixtures/refer_join

Needs pycocotools (PyPI 2.0.7, in a venv made with --system-site-packages, as
tests/ref/coco_ref.py). Writes, under OUT:
  root/refcoco/refs(unc).p + root/refcoco/instances.json   (pickle protocol 2)
  root/refclef/refs(unc).p + root/refclef/instances.json   (pickle protocol 4)
  expected.json: {dataset: {split: {"n_in_split": N, "skipped": [ref_id ...],
      "records": [{ref_id, ann_id, image_id, category_id, split, image_path
      (relative to the image root, REFER layout), height, width, category,
      bbox, iscrowd, area (mask.area), sentences: [sent ...], sent_ids,
      mask: [row strings of '0'/'1', row-major]}]}}}
  The masks are COCO.annToMask as pycocotools computes them (polygons,
  several polygons of one object, an uncompressed crowd RLE, a compressed RLE
  string); the image paths follow LISA/AnyRef's refer_seg_dataset (REFER
  layout: images/mscoco/images/train2014/<file_name> and
  images/saiapr_tc-12/<file_name>).
  Refs that must be skipped: ann missing from instances.json, image_id not the
  annotation's, an annotation without segmentation, an RLE whose size is not
  the image's; the test checks their warnings name them.
Deterministic (fixed seed).
"""
import json
import os
import pickle
import random
import sys

import numpy as np
from pycocotools import mask as maskUtils


def get_ref_ids(refs, split):
    """refer.py's REFER.getRefIds(split=...)."""
    if split in ["testA", "testB", "testC"]:
        return [r["ref_id"] for r in refs if split[-1] in r["split"]]
    if split == "test":
        return [r["ref_id"] for r in refs if "test" in r["split"]]
    return [r["ref_id"] for r in refs if r["split"] == split]


def ann_to_rle(ann, h, w):
    """pycocotools COCO.annToRLE."""
    segm = ann["segmentation"]
    if isinstance(segm, list):
        return maskUtils.merge(maskUtils.frPyObjects(segm, h, w))
    if isinstance(segm["counts"], list):
        return maskUtils.frPyObjects(segm, h, w)
    return segm


def rand_poly(rng, h, w, k):
    cx, cy = rng.uniform(2, w - 2), rng.uniform(2, h - 2)
    pts = []
    for i in range(k):
        a = 2 * np.pi * i / k + rng.uniform(-0.3, 0.3)
        r = rng.uniform(1.5, min(h, w) / 2)
        pts += [round(cx + r * np.cos(a), 2), round(cy + r * np.sin(a), 2)]
    return pts


def build(rng, dataset, n_images):
    images, anns, cats = [], [], []
    cats = [{"id": 1, "name": "person", "supercategory": "human"},
            {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 44, "name": "bottle", "supercategory": "kitchen"}]
    for i in range(n_images):
        h, w = rng.randrange(9, 31), rng.randrange(9, 31)
        if dataset == "refclef":
            iid = [25, 1000, 17581, 39999][i % 4]
            fn = "%02d/images/%d.jpg" % (iid // 1000, iid)
        else:
            iid = [9, 98304, 581857, 123456][i % 4]
            fn = "COCO_train2014_%012d.jpg" % iid
        images.append({"id": iid, "file_name": fn, "height": h, "width": w, "license": 1})
    aid = 100
    for im in images:
        h, w = im["height"], im["width"]
        for kind in ["poly", "polys", "crowd", "string"]:
            aid += 1
            if kind == "poly":
                seg = [rand_poly(rng, h, w, rng.randrange(3, 8))]
            elif kind == "polys":
                seg = [rand_poly(rng, h, w, 5), rand_poly(rng, h, w, 4)]
            else:
                m = np.zeros((h, w), np.uint8, order="F")
                y0, x0 = rng.randrange(h // 2), rng.randrange(w // 2)
                m[y0:y0 + rng.randrange(2, h // 2 + 2), x0:x0 + rng.randrange(2, w // 2 + 2)] = 1
                m[rng.randrange(h), rng.randrange(w)] = 1
                enc = maskUtils.encode(np.asfortranarray(m))
                if kind == "string":
                    seg = {"size": [h, w], "counts": enc["counts"].decode("ascii")}
                else:  # uncompressed counts, as COCO's crowd annotations
                    flat = m.flatten(order="F")
                    counts, cur, run = [], 0, 0
                    for v in flat:
                        if v != cur:
                            counts.append(run)
                            cur, run = v, 0
                        run += 1
                    counts.append(run)
                    seg = {"size": [h, w], "counts": [int(c) for c in counts]}
            rle = ann_to_rle({"segmentation": seg}, h, w)
            anns.append({"id": aid, "image_id": im["id"], "category_id": rng.choice([1, 18, 44, 77]),
                         "bbox": [float(x) for x in maskUtils.toBbox(rle)], "area": float(maskUtils.area(rle)),
                         "iscrowd": 1 if kind == "crowd" else 0, "segmentation": seg})
    # broken annotations (for skipped refs): no segmentation, RLE of another size
    im0 = images[0]
    anns.append({"id": 900, "image_id": im0["id"], "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 0,
                 "segmentation": []})
    anns.append({"id": 901, "image_id": im0["id"], "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 1,
                 "segmentation": {"size": [im0["height"] + 1, im0["width"]],
                                  "counts": [(im0["height"] + 1) * im0["width"]]}})
    return {"info": {}, "images": images, "annotations": anns, "categories": cats}


WORDS = ["man", "left", "red", "shirt", "dog", "bottle", "near", "the", "big", "caf\u00e9"]


def make_refs(rng, inst, splits):
    good = [a for a in inst["annotations"] if a["id"] < 900]
    refs, sent_id = [], 0
    for i, a in enumerate(good):
        sents = []
        for j in range(1 + i % 3):
            s = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6)))
            sents.append({"tokens": s.split(" "), "raw": s.upper(), "sent_id": sent_id, "sent": s})
            sent_id += 1
        refs.append({"sent_ids": [s["sent_id"] for s in sents], "file_name": "x_%d.jpg" % i,
                     "ann_id": a["id"], "ref_id": i, "image_id": a["image_id"],
                     "split": splits[i % len(splits)], "sentences": sents, "category_id": a["category_id"]})
    n = len(refs)
    bad = [("missing ann", 555, inst["images"][0]["id"]),
           ("wrong image", good[0]["id"], inst["images"][1]["id"]),
           ("no segmentation", 900, inst["images"][0]["id"]),
           ("RLE size", 901, inst["images"][0]["id"])]
    for k, (why, ann_id, image_id) in enumerate(bad):
        refs.append({"sent_ids": [sent_id], "file_name": "y.jpg", "ann_id": ann_id, "ref_id": n + k,
                     "image_id": image_id, "split": splits[k % len(splits)],
                     "sentences": [{"tokens": ["bad"], "raw": "bad", "sent_id": sent_id, "sent": "bad"}],
                     "category_id": 1})
        sent_id += 1
    return refs, {n + k for k in range(len(bad))}


def expected(dataset, refs, bad, inst, split):
    ids = set(get_ref_ids(refs, split))
    anns = {a["id"]: a for a in inst["annotations"]}
    imgs = {im["id"]: im for im in inst["images"]}
    cats = {c["id"]: c["name"] for c in inst["categories"]}
    recs, skipped = [], []
    for r in refs:
        if r["ref_id"] not in ids:
            continue
        if r["ref_id"] in bad:
            skipped.append(r["ref_id"])
            continue
        a = anns[r["ann_id"]]
        im = imgs[a["image_id"]]
        h, w = im["height"], im["width"]
        rle = ann_to_rle(a, h, w)
        m = maskUtils.decode(rle)
        assert m.shape == (h, w)
        d = "images/saiapr_tc-12" if dataset == "refclef" else "images/mscoco/images/train2014"
        recs.append({"ref_id": r["ref_id"], "ann_id": a["id"], "image_id": im["id"],
                     "category_id": a["category_id"], "split": r["split"],
                     "image_path": d + "/" + im["file_name"], "height": h, "width": w,
                     "category": cats.get(a["category_id"], ""), "bbox": a["bbox"], "iscrowd": a["iscrowd"],
                     "area": int(maskUtils.area(rle)), "sentences": [s["sent"] for s in r["sentences"]],
                     "sent_ids": [s["sent_id"] for s in r["sentences"]],
                     "mask": ["".join("1" if v else "0" for v in row) for row in m]})
    return {"n_in_split": len(ids), "skipped": skipped, "records": recs}


def main():
    out = sys.argv[1]
    rng = random.Random(6)
    exp = {}
    for dataset, splits, proto, split_list in [
            ("refcoco", ["train", "val", "testA", "testB"], 2, ["train", "val", "testA", "testB", "test"]),
            ("refclef", ["train", "val", "test"], 4, ["train", "val", "test"])]:
        inst = build(rng, dataset, 4)
        refs, bad = make_refs(rng, inst, splits)
        d = os.path.join(out, "root", dataset)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "instances.json"), "w") as f:
            json.dump(inst, f)
        with open(os.path.join(d, "refs(unc).p"), "wb") as f:
            pickle.dump(refs, f, protocol=proto)
        exp[dataset] = {sp: expected(dataset, refs, bad, inst, sp) for sp in split_list}
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(exp, f, ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
