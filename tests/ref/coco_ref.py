#!/usr/bin/env python3
"""tests/ref/coco_ref.py — pycocotools reference for data/rle.c and data/coco.c.

Writes OUT_DIR/coco.h5 (gzip'd HDF5) and OUT_DIR/coco_instances.json, which
tests/test_coco.c reads. Needs pycocotools from PyPI (2.0.7 works with
Debian 12's numpy 1.24) in a venv made with --system-site-packages:

    /usr/bin/python3 -m venv --system-site-packages venv
    venv/bin/pip install pycocotools==2.0.7
    venv/bin/python tests/ref/coco_ref.py tests/fixtures

Contract (every mask column-major as pycocotools; strings as bytes):
  rles/hw [R,2] int64, rles/str (uint8, concatenated) + rles/str_off [R+1]:
      every reference RLE, its compressed string; rles/area [R] uint32,
      rles/bbox [R,4] float64 (mask.area / mask.toBbox); rles/bits (uint8) +
      rles/bits_off [R+1]: np.packbits of the decoded mask flattened in
      Fortran order (mask.decode), empty for masks over 400k pixels.
  poly/hw [P,2], poly/plen [P] numbers in each polygon, poly/xy (float64,
      concatenated), poly/rle [P]: index into rles of frPyObjects([xy], h, w)
      (one polygon at a time,
      computed after a dummy first polygon so short parts stay polygons).
  ann/hw [A,2], ann/npoly [A], ann/first [A] first polygon (index into poly),
      ann/rle [A]: merge(frPyObjects(polys, h, w)) as COCO.annToRLE does.
  box/hw [B,2], box/bb [B,4], box/rle [B]: frPyObjects(np.array([bb]), h, w).
  uc/hw [U,2], uc/counts (int64, concatenated) + uc/off [U+1], uc/rle [U]:
      frPyObjects({"size": [h, w], "counts": [...]}, h, w) (crowd masks).
  enc/rle [E]: masks made from random shapes; their bits are rles/bits, the
      string is mask.encode of that array.
  merge/idx (concatenated) + merge/off [M+1], merge/union [M], merge/inter [M]:
      mask.merge(set, intersect=0/1) of same-size RLEs.
  iou/dt, iou/gt (concatenated rles indices) + iou/dt_off, iou/gt_off [I+1],
      iou/crowd (concatenated, per gt), iou/o (concatenated, row-major m x n)
      + iou/o_off [I+1]: mask.iou(dt, gt, crowd).
  bbiou/dt [m,4], bbiou/gt [n,4], bbiou/crowd [n], bbiou/o [m,n].
  inst/*: what COCO(coco_instances.json) gives: ann ids in imgToAnns order per
      image (inst/img_ids, inst/img_ann_off, inst/img_ann_ids), per annotation
      (file order, inst/ann_ids) the annToRLE string index inst/ann_rle into
      rles and annToMask area inst/ann_area.
"""
import json
import math
import os
import sys

import h5py
import numpy as np
from pycocotools import mask as M
from pycocotools.coco import COCO

rng = np.random.default_rng(20240606)


class Table:
    def __init__(self):
        self.hw, self.strs, self.area, self.bbox, self.bits = [], [], [], [], []
        self.index = {}

    def add(self, rle):
        h, w = rle["size"]
        s = rle["counts"]
        key = (h, w, s)
        if key in self.index:
            return self.index[key]
        i = len(self.hw)
        self.index[key] = i
        self.hw.append((h, w))
        self.strs.append(s)
        self.area.append(int(M.area(rle)))
        self.bbox.append(M.toBbox(rle).astype(np.float64))
        dec = M.decode(rle)
        assert dec.shape == (h, w)
        # bits of masks up to 400k pixels (the larger ones are checked through
        # their strings and round trips, to keep the fixture small)
        self.bits.append(np.packbits(dec.flatten(order="F")) if h * w <= 400000 else np.zeros(0, np.uint8))
        return i


T = Table()


def r2(v):
    return [round(float(x), 2) for x in v]


def polys_for(h, w):
    """Single polygons (lists of numbers) for an h x w image."""
    P = []
    P.append([0, 0, w, 0, w, h, 0, h])                       # the whole image
    P.append([0.5, 0.5, w - 0.5, 0.5, w - 0.5, h - 0.5, 0.5, h - 0.5])   # pixel centres
    for _ in range(3):                                        # convex triangles
        P.append(list(rng.uniform(-0.5, [w + 0.5, h + 0.5] * 3, 6)))
    for n in (5, 12, 40):                                     # regular n-gons
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.3, max(h, w) / 2)
        a = np.arange(n) * 2 * math.pi / n + rng.uniform(0, 1)
        P.append(r2(np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).ravel()))
    for n in (5, 9):                                          # stars (concave)
        cx, cy, r = w / 2, h / 2, max(h, w) / 2.2
        a = np.arange(2 * n) * math.pi / n
        rr = np.where(np.arange(2 * n) % 2 == 0, r, r * 0.4)
        P.append(list(np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], 1).ravel()))
    for n in (7, 25):                                         # random concave (star-shaped, random radii)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        a = np.sort(rng.uniform(0, 2 * math.pi, n))
        rr = rng.uniform(0.1, max(h, w) * 0.6, n)
        P.append(r2(np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], 1).ravel()))
    P.append([0, 0, w, h, w, 0, 0, h])                        # bowtie (self-intersecting)
    P.append([0, 0, w / 2, h / 2, w, 0, w, h, w / 2, h / 2, 0, h])   # self-touching at the centre
    P.append([0, 0, w / 2, 0, w / 2, h / 2, w, h / 2, w, h, w / 2, h, w / 2, h / 2, 0, h / 2])  # two squares touching at a vertex
    for _ in range(3):                                        # tiny triangles
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        P.append(list(np.array([x, y, x + 0.3, y, x, y + 0.25])))
    P.append([0.4, 0.4, 0.6, 0.4, 0.5, 0.6])                  # tiny at a pixel centre
    P.append([-3.2, -2.7, w * 0.6, -5, w + 4.1, h * 0.7, w * 0.3, h + 3.3])   # partly outside
    P.append([-10, -10, -2, -10, -2, -3])                     # fully outside, negative
    P.append([w + 1, h + 1, w + 5, h + 1, w + 3, h + 6])      # fully outside, beyond
    P.append([-0.5, 1.5, 2.5, -0.5, w + 0.5, 2.5, 1.5, h + 0.5])  # half-integer vertices
    P.append([1, 1, w - 1, 2, w - 2, h - 1, 2, h - 2])        # integer vertices
    P.append([0, 0, w / 2, h / 2, w, h])                      # collinear (a line)
    P.append([1.04, 1.02, 1.06, 1.01, w - 1, 1, w - 1, 1, w - 1, h - 1, 1.04, 1.02])  # repeated + closed
    P.append(r2(list(rng.uniform(0, [w, h] * 6, 12))) + [3.3])   # odd length: the last number is ignored
    P.append([-1.26, 0.74, 0.26, -0.26, 0.24, 1.24])          # negative rounding toward zero
    P.append([w * 0.25, h * 0.1, w * 0.9, h * 0.5, w * 0.2, h * 0.95, w * 0.6, h * 0.5])  # concave arrow
    return [list(map(float, p)) for p in P]


sizes = [(1, 1), (2, 2), (5, 5), (7, 13), (13, 7), (33, 1), (1, 40), (480, 640), (640, 480), (427, 640)]
poly = {"hw": [], "plen": [], "xy": [], "rle": []}
ann = {"hw": [], "npoly": [], "first": [], "rle": []}


def add_poly(h, w, p):
    # a leading 6-number polygon keeps frPyObjects on its polygon path for
    # parts of 4 or fewer numbers (alone, 4 would be read as a box)
    rle = M.frPyObjects([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0], p], h, w)[1]
    poly["hw"].append((h, w))
    poly["plen"].append(len(p))
    poly["xy"].extend(p)
    poly["rle"].append(T.add(rle))
    return len(poly["hw"]) - 1


for (h, w) in sizes:
    P = polys_for(h, w)
    for p in P:
        add_poly(h, w, p)
    # multi-polygon annotations: overlapping and disjoint parts, short extra parts
    groups = [P[2:5], P[5:7] + [P[9]], [P[0], P[12]], [P[4], [1.0, 2.0, 3.5, 4.5]], [P[8], [2.2, 3.3]], P[14:17]]
    for g in groups:
        if len(g[0]) <= 4:
            continue
        first = len(poly["hw"])
        for p in g:
            add_poly(h, w, p)
        rles = M.frPyObjects(g, h, w)
        ann["hw"].append((h, w))
        ann["npoly"].append(len(g))
        ann["first"].append(first)
        ann["rle"].append(T.add(M.merge(rles)))

box = {"hw": [], "bb": [], "rle": []}
for (h, w) in sizes:
    bbs = [[0, 0, w, h], [0.5, 0.5, w - 1, h - 1], [-2, -3, w / 2, h / 3], [w / 3, h / 4, 0.2, 0.2],
           list(rng.uniform(0, [w, h, w, h])), list(np.round(rng.uniform(0, [w, h, w / 2, h / 2]), 2)),
           [w - 0.7, h - 0.7, 3, 3]]
    for bb in bbs:
        bb = [float(v) for v in bb]
        box["hw"].append((h, w))
        box["bb"].append(bb)
        box["rle"].append(T.add(M.frPyObjects(np.array([bb], dtype=np.float64), h, w)[0]))

uc = {"hw": [], "counts": [], "off": [0], "rle": []}


def add_uc(h, w, counts):
    uc["hw"].append((h, w))
    uc["counts"].extend(counts)
    uc["off"].append(len(uc["counts"]))
    uc["rle"].append(T.add(M.frPyObjects({"size": [h, w], "counts": counts}, h, w)))


for (h, w) in sizes + [(1000, 1500)]:
    n = h * w
    add_uc(h, w, [n])
    add_uc(h, w, [0, n])
    for k in (2, 5, 40, 300):
        cuts = np.sort(rng.integers(0, n + 1, k))
        c = np.diff(np.concatenate([[0], cuts, [n]])).tolist()
        add_uc(h, w, [int(x) for x in c])
    if n > 10:
        add_uc(h, w, [3, 0, 2, n - 5])        # a zero run in the middle

enc = {"rle": []}
for (h, w) in sizes + [(1500, 2000), (3, 100000)]:
    for kind in range(4):
        m = np.zeros((h, w), dtype=np.uint8)
        if kind == 1:
            m = (rng.uniform(size=(h, w)) < 0.3).astype(np.uint8)
        elif kind == 2:
            yy, xx = np.mgrid[0:h, 0:w]
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, max(h, w) / 2 + 1)
            m = (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8)
        elif kind == 3:
            m[rng.integers(0, h, 3), rng.integers(0, w, 3)] = 1
            if h * w > 10:
                m[-1, -1] = 1
        if h * w > 2000 and kind == 1:   # noise does not compress: small images only
            continue
        rle = M.encode(np.asfortranarray(m))
        i = T.add(rle)
        assert h * w > 400000 or np.array_equal(np.unpackbits(T.bits[i])[: h * w], m.flatten(order="F"))
        enc["rle"].append(i)

# merges and IoUs over same-size RLEs of the table
# Zero-length runs past the first (legal in an uncompressed RLE) break
# pycocotools' merge (its walk stops early, its h*w+1 buffer can overflow) and
# its IoU (stops early): merges and IoUs use canonical masks only (a string
# equal to encode(decode(it))); data/rle.c reads such runs as the mask they
# decode to, which tests/test_coco.c checks on its own.
bysize, canon = {}, {}
for i, hw in enumerate(T.hw):
    bysize.setdefault(hw, []).append(i)
    dec = M.decode({"size": list(hw), "counts": T.strs[i]})
    if M.encode(np.asfortranarray(dec))["counts"] == T.strs[i]:
        canon.setdefault(hw, []).append(i)
merge = {"idx": [], "off": [0], "union": [], "inter": []}
iou = {"dt": [], "gt": [], "dt_off": [0], "gt_off": [0], "crowd": [], "o": [], "o_off": [0]}


def as_rles(ix):
    return [{"size": list(T.hw[i]), "counts": T.strs[i]} for i in ix]


for hw, ix in sorted(canon.items()):
    for _ in range(4):
        k = int(rng.integers(1, min(5, len(ix)) + 1))
        sel = [int(v) for v in rng.choice(ix, k, replace=False)]
        rl = as_rles(sel)
        merge["idx"].extend(sel)
        merge["off"].append(len(merge["idx"]))
        merge["union"].append(T.add(M.merge(rl, intersect=False)))
        merge["inter"].append(T.add(M.merge(rl, intersect=True)))
for hw, ix in sorted(canon.items()):
    dt = [int(v) for v in rng.choice(ix, min(8, len(ix)), replace=False)]
    gt = [int(v) for v in rng.choice(ix, min(6, len(ix)), replace=False)]
    if hw == (7, 13):
        gt.append(canon[(13, 7)][0])        # a different size: -1 where boxes overlap
    crowd = [int(v) for v in rng.integers(0, 2, len(gt))]
    o = M.iou(as_rles(dt), as_rles(gt), crowd)
    o = np.asarray(o, dtype=np.float64).reshape(len(dt), len(gt))
    iou["dt"].extend(dt), iou["gt"].extend(gt), iou["crowd"].extend(crowd)
    iou["dt_off"].append(len(iou["dt"])), iou["gt_off"].append(len(iou["gt"]))
    iou["o"].extend(o.ravel().tolist()), iou["o_off"].append(len(iou["o"]))

bdt = np.round(rng.uniform(0, 50, (20, 4)), 2)
bgt = np.round(rng.uniform(0, 50, (15, 4)), 2)
bgt[3] = bdt[2]
bcrowd = rng.integers(0, 2, 15).astype(np.uint8)
bo = np.asarray(M.iou(bdt, bgt, bcrowd), dtype=np.float64).reshape(20, 15)

# ---- a small instances.json --------------------------------------------------
out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
jpath = os.path.join(out_dir, "coco_instances.json")
images = [
    {"license": 1, "file_name": "COCO_train2014_000000000009.jpg", "height": 7, "width": 13, "id": 9},
    {"license": 1, "file_name": "odd 1x1.jpg", "height": 1, "width": 1, "id": 25},
    {"license": 2, "file_name": "dir/\u00e9t\u00e9.jpg", "height": 480, "width": 640, "id": 3,
     "coco_url": "http://x/3.jpg", "date_captured": "2013-11-14 16:28:13"},
    {"file_name": "no_anns.jpg", "height": 40, "width": 30, "id": 4},
]
anns = []


def A(**kw):
    a = {"segmentation": kw.pop("seg"), "area": kw.pop("area", 10.5), "iscrowd": kw.pop("iscrowd", 0)}
    a.update(kw)
    anns.append(a)


A(id=101, image_id=9, category_id=1, bbox=[1.0, 1.0, 4.0, 4.0], seg=[[1, 1, 5, 1, 5, 5, 1, 5]], area=16.0)
A(id=102, image_id=3, category_id=18, bbox=[10.5, 20.25, 100, 80.75],
  seg=[r2(polys_for(480, 640)[9]), [300.5, 200.25, 350, 210, 320.75, 260.5]], area=1234.5678)
A(id=103, image_id=9, category_id=2, bbox=[0, 0, 13, 7], iscrowd=1,
  seg={"counts": [5, 10, 20, 30, 26], "size": [7, 13]}, area=40)
crowd_str = [i for i in enc["rle"] if T.hw[i] == (480, 640) and T.area[i] > 0][0]
A(id=104, image_id=3, category_id=1, bbox=[0, 0, 640, 480], iscrowd=1,
  seg={"counts": T.strs[crowd_str].decode(), "size": [480, 640]})
A(id=105, image_id=25, category_id=2, bbox=[0, 0, 1, 1], seg=[[0, 0, 1, 0, 1, 1, 0, 1]], area=1)
A(id=106, image_id=9, category_id=3, bbox=[2, 2, 3, 3], seg=[[2.2, 2.2, 5.1, 2.4, 4.9, 5.3], [8, 1, 12, 1, 10, 6]])
cats = [{"supercategory": "person", "id": 1, "name": "person"},
        {"supercategory": "vehicle", "id": 2, "name": "bicycle"},
        {"supercategory": "animal", "id": 3, "name": "\"quoted\" cat"},
        {"supercategory": "animal", "id": 18, "name": "dog"}]
doc = {"info": {"description": "anyref test"}, "images": images, "licenses": [], "annotations": anns,
       "categories": cats}
with open(jpath, "w") as f:
    json.dump(doc, f, ensure_ascii=False, indent=1)

coco = COCO(jpath)
inst = {"img_ids": [], "img_ann_off": [0], "img_ann_ids": [], "ann_ids": [], "ann_rle": [], "ann_area": []}
for im in images:
    inst["img_ids"].append(im["id"])
    inst["img_ann_ids"].extend(a["id"] for a in coco.imgToAnns[im["id"]])
    inst["img_ann_off"].append(len(inst["img_ann_ids"]))
for a in anns:
    rle = coco.annToRLE(coco.anns[a["id"]])
    if isinstance(rle["counts"], str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode()}
    inst["ann_ids"].append(a["id"])
    inst["ann_rle"].append(T.add(rle))
    inst["ann_area"].append(int(coco.annToMask(coco.anns[a["id"]]).sum()))


# ---- write ------------------------------------------------------------------------
def cat_bytes(chunks):
    off = np.zeros(len(chunks) + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(c) for c in chunks])
    data = np.frombuffer(b"".join(bytes(c) for c in chunks), dtype=np.uint8)
    return data, off


with h5py.File(os.path.join(out_dir, "coco.h5"), "w", libver="latest") as f:
    def put(name, arr, dtype):
        a = np.asarray(arr, dtype=dtype)
        if a.size == 0:
            a = np.zeros((0,), dtype=dtype)
        if a.size > 64:
            f.create_dataset(name, data=a, compression="gzip", compression_opts=9)
        else:
            f.create_dataset(name, data=a)

    f.attrs["pycocotools"] = "2.0.7"
    s, so = cat_bytes(T.strs)
    b, bo_ = cat_bytes([x.tobytes() for x in T.bits])
    put("rles/hw", T.hw, np.int64), put("rles/str", s, np.uint8), put("rles/str_off", so, np.int64)
    put("rles/area", T.area, np.uint32), put("rles/bbox", np.array(T.bbox).reshape(-1, 4), np.float64)
    put("rles/bits", b, np.uint8), put("rles/bits_off", bo_, np.int64)
    put("poly/hw", poly["hw"], np.int64), put("poly/plen", poly["plen"], np.int64)
    put("poly/xy", poly["xy"], np.float64), put("poly/rle", poly["rle"], np.int64)
    for k in ann:
        put("ann/" + k, ann[k], np.int64)
    put("box/hw", box["hw"], np.int64), put("box/bb", box["bb"], np.float64), put("box/rle", box["rle"], np.int64)
    for k in uc:
        put("uc/" + k, uc[k], np.int64)
    put("enc/rle", enc["rle"], np.int64)
    for k in merge:
        put("merge/" + k, merge[k], np.int64)
    for k in iou:
        put("iou/" + k, iou[k], np.float64 if k == "o" else np.int64)
    put("bbiou/dt", bdt, np.float64), put("bbiou/gt", bgt, np.float64)
    put("bbiou/crowd", bcrowd, np.int64), put("bbiou/o", bo, np.float64)
    for k in inst:
        put("inst/" + k, inst[k], np.int64)
print("coco.h5: %d RLEs, %d polygons, %d annotations, %d boxes, %d crowd RLEs, %d encodes, %d merges, %d iou sets"
      % (len(T.hw), len(poly["hw"]), len(ann["hw"]), len(box["hw"]), len(uc["hw"]), len(enc["rle"]),
         len(merge["union"]), len(iou["o_off"]) - 1))
