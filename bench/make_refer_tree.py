#!/usr/bin/python3
"""bench/make_refer_tree.py — a RefCOCO-style tree for bench/run_pipeline.sh.

    /usr/bin/python3 bench/make_refer_tree.py OUT [--images N] [--seed S]

Writes, in the REFER layout data/refer_samples.h and data/refer.h read
(refer_image_layout REFER_IMAGES_REFER, root = image root = OUT):
  OUT/refcoco/refs(unc).p        a list of ref dicts pickled by Python with
                                 protocol 2 (as the public RefCOCO files)
  OUT/refcoco/instances.json     images, polygon annotations, categories
  OUT/images/mscoco/images/train2014/COCO_train2014_<id:012>.jpg
N images (default 200, env BENCH_PIPE_IMAGES) of COCO's common sizes
(640x480, 480x640, 640x427, 427x640, 500x375, 612x612), baseline JPEG quality
90 with 4:2:0 chroma (PIL's default), content = smooth random colour fields
at four scales plus grain, so the files come near COCO's in size (~120 KB
each; COCO's average ~160 KB) and the decoder does a realistic amount of work.
Image i carries 1 + i % 2 objects (polygons of 24-64 vertices, the second
object of every 4th image in two parts), each the subject of one ref in
split "train" with 1-3 sentences — so N images give 3N/2 refs (300 for 200).
Deterministic for a seed. Prints one line: the counts and the total JPEG size.
Depends on numpy and PIL (python3-pil).
"""
import argparse
import json
import os
import pickle
import random

import numpy as np
from PIL import Image

SIZES = [(480, 640), (640, 480), (427, 640), (640, 427), (375, 500), (612, 612)]   # (h, w)
CATS = [{"id": 1, "name": "person", "supercategory": "person"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
        {"id": 18, "name": "dog", "supercategory": "animal"},
        {"id": 44, "name": "bottle", "supercategory": "kitchen"},
        {"id": 62, "name": "chair", "supercategory": "furniture"}]
WORDS = {"person": ["man", "woman", "guy", "lady", "kid", "person"],
         "car": ["car", "white car", "red truck", "vehicle"],
         "dog": ["dog", "brown dog", "puppy"],
         "bottle": ["bottle", "green bottle", "wine bottle"],
         "chair": ["chair", "empty chair", "wooden chair"]}
PLACES = ["on the left", "on the right", "in the middle", "in front", "at the back", "closest to us",
          "near the table", "far left", "far right", "top right corner"]
ATTRS = ["in red", "with the hat", "wearing blue", "holding a cup", "sitting down", "partially hidden", ""]


def picture(rng, h, w):
    """Smooth colour fields at three scales plus grain: uint8 [h, w, 3]."""
    acc = np.zeros((h, w, 3), np.float32)
    for div, amp in ((96, 70.0), (24, 40.0), (6, 22.0), (2, 14.0)):
        sh, sw = max(2, h // div), max(2, w // div)
        small = rng.randint(0, 256, (sh, sw, 3)).astype(np.uint8)
        big = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), np.float32)
        acc += (big - 127.5) * (amp / 127.5)
    acc += 128.0 + rng.normal(0.0, 10.0, (h, w, 3)).astype(np.float32)
    return np.clip(acc, 0, 255).astype(np.uint8)


def polygon(rng, h, w, k, scale):
    """A star-shaped blob of k vertices: [x0, y0, x1, y1, ...] (COCO polygon, 2 decimals)."""
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    rad = scale * min(h, w)
    pts = []
    for i in range(k):
        a = 2 * np.pi * i / k
        r = rad * rng.uniform(0.55, 1.0)
        x = min(max(cx + r * np.cos(a), 0.0), w - 1.0)
        y = min(max(cy + r * np.sin(a), 0.0), h - 1.0)
        pts += [round(float(x), 2), round(float(y), 2)]
    return pts


def area_bbox(polys):
    """Shoelace area and the bbox (x, y, w, h) of the polygons."""
    area, xs, ys = 0.0, [], []
    for p in polys:
        x, y = np.array(p[0::2]), np.array(p[1::2])
        area += 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
        xs += list(x)
        ys += list(y)
    x0, y0 = min(xs), min(ys)
    return round(area, 2), [round(x0, 2), round(y0, 2), round(max(xs) - x0, 2), round(max(ys) - y0, 2)]


def sentence(rng, cat):
    s = "%s %s %s" % (rng.choice(WORDS[cat]), rng.choice(ATTRS), rng.choice(PLACES))
    return " ".join(s.split())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=int(os.environ.get("BENCH_PIPE_IMAGES", "200")))
    ap.add_argument("--seed", type=int, default=6)
    a = ap.parse_args()
    prng, nrng = random.Random(a.seed), np.random.RandomState(a.seed)
    imdir = os.path.join(a.out, "images", "mscoco", "images", "train2014")
    ddir = os.path.join(a.out, "refcoco")
    os.makedirs(imdir, exist_ok=True)
    os.makedirs(ddir, exist_ok=True)
    images, anns, refs = [], [], []
    aid, sid, jpeg_bytes = 1000, 0, 0
    for i in range(a.images):
        iid = 9 + 37 * i
        h, w = SIZES[i % len(SIZES)]
        fn = "COCO_train2014_%012d.jpg" % iid
        path = os.path.join(imdir, fn)
        Image.fromarray(picture(nrng, h, w)).save(path, quality=90)
        jpeg_bytes += os.path.getsize(path)
        images.append({"license": 1, "file_name": fn, "height": h, "width": w, "id": iid})
        for j in range(1 + i % 2):
            cat = prng.choice(CATS)
            polys = [polygon(prng, h, w, prng.randrange(24, 65), prng.uniform(0.12, 0.35))]
            if j == 1 and i % 4 == 1:
                polys.append(polygon(prng, h, w, prng.randrange(12, 25), 0.08))
            area, bbox = area_bbox(polys)
            aid += 1
            anns.append({"segmentation": polys, "area": area, "iscrowd": 0, "image_id": iid, "bbox": bbox,
                         "category_id": cat["id"], "id": aid})
            sents = []
            for _ in range(prng.randrange(1, 4)):
                s = sentence(prng, cat["name"])
                sents.append({"tokens": s.split(" "), "raw": s, "sent_id": sid, "sent": s})
                sid += 1
            refs.append({"sent_ids": [x["sent_id"] for x in sents], "file_name": "%s_%d.jpg" % (fn[:-4], aid),
                         "ann_id": aid, "ref_id": len(refs), "image_id": iid, "split": "train",
                         "sentences": sents, "category_id": cat["id"]})
    with open(os.path.join(ddir, "instances.json"), "w") as f:
        json.dump({"info": {}, "images": images, "annotations": anns, "categories": CATS}, f)
    with open(os.path.join(ddir, "refs(unc).p"), "wb") as f:
        pickle.dump(refs, f, protocol=2)
    print("make_refer_tree: %d images (%.1f MB of JPEG, %.0f KB each), %d annotations, %d refs, %d sentences in %s"
          % (len(images), jpeg_bytes / 1e6, jpeg_bytes / 1e3 / max(1, len(images)), len(anns), len(refs), sid,
             a.out))


if __name__ == "__main__":
    main()
