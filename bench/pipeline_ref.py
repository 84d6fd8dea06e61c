#!/usr/bin/python3
"""bench/pipeline_ref.py — the RefCOCO sample pipeline in PIL + numpy (+ torch
for the one step AnyRef does in torch), the Python side of
bench/run_pipeline.sh; bench/bench_pipeline.c runs the same through anyref's
live loader (data/loader.h).

    /usr/bin/python3 bench/pipeline_ref.py ROOT --tokenizer tests/fixtures/tok_bpe.model
        [--procs 1,2] [--samples N] [--T 512] [--clip 224] [--sam 1024] [--seed 0] [--probe]

ROOT is a tree of bench/make_refer_tree.py (refcoco, refs(unc).p, split
train, REFER image layout). OPEN (timed apart, "open_s"): instances.json
(json) and refs(unc).p (pickle) joined as refer.py does (ref -> ann -> image).
ONE SAMPLE (record i, as AnyRef's refer_seg_dataset and LISA do it, with PIL
where they use cv2):
  decode   Image.open(path).convert("RGB")
  SAM      segment_anything ResizeLongestSide(1024): PIL BILINEAR to the
           longest side 1024 (int(x * scale + 0.5)), float32 (x - mean) / std,
           zero padding to 1024 x 1024 in numpy, CHW
  CLIP     AnyRef's clip_resize_wo_crop: CLIPImageProcessor without the crop
           (PIL BICUBIC shortest side 224, x * (1/255) in float64 -> float32,
           (x - mean) / std), then torch.nn.functional.interpolate to 224 x 224
           (bilinear, align_corners=False; a numpy bilinear of the same
           definition when torch is missing)
  mask     pycocotools when importable (frPyObjects + merge + decode, what
           AnyRef does per sample), else PIL ImageDraw.polygon of each
           polygon; float32 H x W
  text     a sentence drawn (random.Random(seed, i)), question "<image>\\nCan
           you segment the {s} in this image?", answer "{s}[SEG]." or "It is
           [SEG]."; the llava_v1 prompt; ids = python sentencepiece on each
           segment between "<image>" (id -1), "[SEG]" (an added token,
           whitespace around it stripped as transformers 4.31 does) and
           "</s>", with BOS; labels as LLaVA's preprocess_v1 (the round and
           its instruction encoded again); tokens / targets (next label)
           padded or cut to T as int32.
Each sample's arrays are built in full; only a short checksum leaves the
worker (no 12 MB SAM array goes through a pipe: the fastest a multiprocess
PIL pipeline can be; a PyTorch DataLoader would also move the tensors).
--procs: 1 = in this process, P > 1 = a multiprocessing Pool of P forked
workers (imap_unordered, chunks of 4). torch.set_num_threads(1) everywhere.
Two samples are built first (warm-up, not timed), before any fork.
--stages: instead, the steps timed one by one in this process on the first
--samples records (default 100) in file order (first sentence, answer
"{s}[SEG]."): "stage name=<decode|sam|clip|mask|text> ms=<mean> samples=N",
as bench/bench_pipeline.c --stages prints them.
Output: '# key=value' lines describing the run, then per process count
  result side=py procs=P samples=N seconds=.. samples_per_s=.. step_ms=.. open_s=..
(step_ms = ms per sample, what bench/common.sh's probe compares).
"""
import argparse
import json
import multiprocessing as mp
import os
import pickle
import random
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

try:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(1)
except ImportError:
    torch = None
try:
    from pycocotools import mask as mask_utils
except ImportError:
    mask_utils = None
import sentencepiece as spm

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
SAM_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
SAM_STD = np.array([58.395, 57.12, 57.375], np.float32)
SYSTEM = ("You are LLaVA, a large language and vision assistant trained by UW Madison WAIV Lab.You are able to "
          "understand the visual content that the user provides, and assist the user with a variety of tasks using "
          "natural language.Follow the instructions carefully and explain your answers in detail.")
Q_SEG = "Can you segment the {ref} in this image?"
A_SEG, A_PLAIN = "{expr}[SEG].", "It is [SEG]."
IGNORE = -100

def dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001 — only a label
        return "?"


G = {}   # per-process state: records, tokenizer, options (set before the fork)


# ------------------------------------------------------------------ open
def load(root, split):
    d = os.path.join(root, "refcoco")
    with open(os.path.join(d, "instances.json")) as f:
        inst = json.load(f)
    with open(os.path.join(d, "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)
    anns = {a["id"]: a for a in inst["annotations"]}
    imgs = {im["id"]: im for im in inst["images"]}
    recs = []
    for r in refs:
        if r["split"] != split:
            continue
        a = anns[r["ann_id"]]
        im = imgs[a["image_id"]]
        recs.append({"path": os.path.join(root, "images", "mscoco", "images", "train2014", im["file_name"]),
                     "h": im["height"], "w": im["width"], "seg": a["segmentation"],
                     "sents": [s["sent"] for s in r["sentences"]]})
    return recs


# ------------------------------------------------------------------ images
def sam_input(img, S):
    w, h = img.size
    scale = S * 1.0 / max(h, w)
    oh, ow = int(h * scale + 0.5), int(w * scale + 0.5)
    x = np.asarray(img.resize((ow, oh), Image.BILINEAR), np.float32)
    x = (x - SAM_MEAN) / SAM_STD
    out = np.zeros((3, S, S), np.float32)
    out[:, :oh, :ow] = x.transpose(2, 0, 1)
    return out


def bilinear_np(x, S):
    """F.interpolate(x[None], (S, S), mode="bilinear", align_corners=False)[0] for x [C, H, W] float32."""
    def axis(n):
        src = np.maximum((np.arange(S, dtype=np.float32) + 0.5) * (n / S) - 0.5, 0)
        i0 = np.minimum(src.astype(np.int64), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        l1 = (src - i0).astype(np.float32)
        return i0, i1, l1
    y0, y1, ly = axis(x.shape[1])
    x0, x1, lx = axis(x.shape[2])
    r = x[:, y0] * (1 - ly)[None, :, None] + x[:, y1] * ly[None, :, None]
    return r[:, :, x0] * (1 - lx) + r[:, :, x1] * lx


def clip_input(img, S):
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    if short != S:
        nl = int(S * long / short)
        oh, ow = (nl, S) if w <= h else (S, nl)
        img = img.resize((ow, oh), Image.BICUBIC)
    x = (np.asarray(img, np.float64) * (1 / 255)).astype(np.float32)
    x = ((x - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
    if torch is not None:
        t = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(0)
        return F.interpolate(t, size=(S, S), mode="bilinear", align_corners=False)[0].numpy()
    return bilinear_np(x, S)


def mask_of(rec):
    h, w, seg = rec["h"], rec["w"], rec["seg"]
    if mask_utils is not None:
        m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w)))
        return m.astype(np.float32)
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for p in seg:
        draw.polygon(p, fill=1)
    return np.asarray(im, np.float32)


# ------------------------------------------------------------------ text
def encode(sp, text, bos):
    """conv_encode: <image> -> -1, [SEG] an added token (strip), </s> the EOS piece, the rest sentencepiece."""
    ids = [sp.bos_id()] if bos else []
    for k, chunk in enumerate(text.split("<image>")):
        if k:
            ids.append(-1)
        parts = chunk.split("[SEG]")
        for j, part in enumerate(parts):
            if j:
                ids.append(G["seg_id"])
            if len(parts) > 1:
                part = part.rstrip() if j == 0 else part.strip() if j < len(parts) - 1 else part.lstrip()
            for e, piece in enumerate(part.split("</s>")):
                if e:
                    ids.append(sp.eos_id())
                if piece:
                    ids += sp.encode(piece)
    return ids


def tokenize(sp, question, answer, T):
    prompt = SYSTEM + " USER: " + question + " ASSISTANT: " + answer + "</s>"
    ids = encode(sp, prompt, True)[:T]
    labels = list(ids)
    total = sum(1 for t in ids if t != sp.unk_id())
    cur = 1
    labels[0] = IGNORE
    for rou in prompt.split("</s>"):
        if not rou:
            break
        parts = rou.split(" ASSISTANT: ")
        if len(parts) != 2:
            break
        rlen = len(encode(sp, rou, True))
        ilen = len(encode(sp, parts[0] + " ASSISTANT: ", True)) - 2
        labels[cur:cur + ilen] = [IGNORE] * len(labels[cur:cur + ilen])
        cur += rlen
    labels[cur:] = [IGNORE] * len(labels[cur:])
    if cur < T and cur != total:
        labels = [IGNORE] * len(labels)
    labels = [IGNORE if t < 0 else l for t, l in zip(ids, labels)]
    tokens = np.full(T, G["pad_id"], np.int32)
    targets = np.full(T, IGNORE, np.int32)
    tokens[:len(ids)] = ids
    targets[:len(ids) - 1] = labels[1:]
    return tokens, targets


# ------------------------------------------------------------------ one sample
def build(i):
    rec = G["recs"][i % len(G["recs"])]
    rng = random.Random(G["seed"] * 1000003 + i)
    img = Image.open(rec["path"]).convert("RGB")
    sam = sam_input(img, G["sam"]) if G["sam"] else None
    clip = clip_input(img, G["clip"]) if G["clip"] else None
    m = mask_of(rec)
    s = rng.choice(rec["sents"])
    ans = A_SEG.replace("{expr}", s) if rng.random() < 0.5 else A_PLAIN
    tokens, targets = tokenize(G["sp"], "<image>\n" + Q_SEG.replace("{ref}", s), ans, G["T"])
    return (float(m.sum()), int((targets != IGNORE).sum()), float(clip[0, 0, 0]) if clip is not None else 0.0,
            float(sam[0, 0, 0]) if sam is not None else 0.0)


def stages(n):
    t = dict.fromkeys(("decode", "sam", "clip", "mask", "text"), 0.0)
    for rec in G["recs"][:n]:
        a = time.perf_counter()
        img = Image.open(rec["path"]).convert("RGB")
        b = time.perf_counter()
        sam_input(img, G["sam"])
        c = time.perf_counter()
        clip_input(img, G["clip"])
        d = time.perf_counter()
        mask_of(rec)
        e = time.perf_counter()
        s = rec["sents"][0]
        tokenize(G["sp"], "<image>\n" + Q_SEG.replace("{ref}", s), A_SEG.replace("{expr}", s), G["T"])
        f = time.perf_counter()
        for k, v in zip(t, (b - a, c - b, d - c, e - d, f - e)):
            t[k] += v
    for k, v in t.items():
        print("stage name=%s ms=%.3f samples=%d" % (k, 1e3 * v / n, n))


def run(procs, n):
    t0 = time.perf_counter()
    if procs == 1:
        out = [build(i) for i in range(n)]
    else:
        with mp.get_context("fork").Pool(procs) as pool:
            out = list(pool.imap_unordered(build, range(n), chunksize=4))
    return time.perf_counter() - t0, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--samples", type=int, default=0, help="0: every record of the split once")
    ap.add_argument("--split", default="train")
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--clip", type=int, default=224)
    ap.add_argument("--sam", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()
    recs = load(a.root, a.split)
    sp = spm.SentencePieceProcessor(model_file=a.tokenizer)
    open_s = time.perf_counter() - t0
    if not recs:
        sys.exit("pipeline_ref: no record in split %s of %s" % (a.split, a.root))
    G.update(recs=recs, sp=sp, seed=a.seed, T=a.T, clip=a.clip, sam=a.sam,
             seg_id=sp.get_piece_size(), pad_id=sp.unk_id())
    n = min(a.samples or (100 if a.stages else len(recs)), len(recs) if a.stages else 1 << 30)
    print("# py.python=%s" % sys.version.split()[0])
    print("# py.pil=%s" % Image.__version__)
    print("# py.numpy=%s" % np.__version__)
    print("# py.torch=%s" % (torch.__version__ + " (F.interpolate, 1 thread)" if torch else "absent (numpy bilinear)"))
    print("# py.mask=%s" % ("pycocotools %s (frPyObjects + merge + decode)" % dist_version("pycocotools")
                            if mask_utils else "PIL ImageDraw.polygon (no pycocotools)"))
    print("# py.tokenizer=sentencepiece %s, %s" % (spm.__version__, os.path.basename(a.tokenizer)))
    print("# py.records=%d" % len(recs))
    print("# py.config=T=%d,clip=%d,sam=%d,seed=%d" % (a.T, a.clip, a.sam, a.seed))
    sys.stdout.flush()
    if a.stages:
        build(0)
        stages(n)
        return
    for i in range(2):   # warm-up (first calls into PIL / torch), before any fork
        build(i)
    for p in (int(x) for x in a.procs.split(",")):
        sec, out = run(p, n)
        chk = sum(o[0] for o in out)
        print("result side=py procs=%d samples=%d seconds=%.4f samples_per_s=%.3f step_ms=%.4f open_s=%.4f "
              "mask_px=%.0f labels=%d" % (p, n, sec, n / sec, 1e3 * sec / n, open_s, chk, sum(o[1] for o in out)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
