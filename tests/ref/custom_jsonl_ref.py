#!/usr/bin/env python3
"""tests/ref/custom_jsonl_ref.py — fixtures for tests/test_custom_jsonl.c (data/custom_jsonl.c).

    /work/wt/venv-coco/bin/python tests/ref/custom_jsonl_ref.py tests/fixtures/custom

Needs PIL, numpy and pycocotools (PyPI 2.0.7 in a venv with
--system-site-packages, as tests/ref/coco_ref.py). Writes under OUT:
  img/*.png, img/*.jpg, crops/*.png, masks/*.png, wav/*.wav  tiny files
  data.jsonl       good lines, a blank line and bad lines (one error each)
  expected.json    {"n_lines", "n_blank", "records": [{line, id, split, image
                   (relative to OUT), height, width, ref, text, box, ref_path,
                   qa, expression, question, answer, mask_kind, mask: [row
                   strings of '0'/'1'] or null}], "errors": [message with
                   "{F}" for the jsonl path and "{D}" for its directory; a
                   trailing "*" means: starts with]}
  The masks are what the format promises: PNG nonzero (PIL's L / P values),
  polygons as pycocotools merge(frPyObjects(polys, h, w)), RLEs decoded.
Deterministic.
"""
import json
import os
import sys
import wave

import numpy as np
from PIL import Image
from pycocotools import mask as maskUtils


def rows(m):
    return ["".join("1" if v else "0" for v in r) for r in m]


def main():
    out = sys.argv[1]
    for d in ["img", "crops", "masks", "wav"]:
        os.makedirs(os.path.join(out, d), exist_ok=True)
    rng = np.random.RandomState(5)
    H, W = 10, 12
    Image.fromarray(rng.randint(0, 256, (H, W, 3), dtype=np.uint8)).save(os.path.join(out, "img/a.png"))
    Image.fromarray(rng.randint(0, 256, (9, 14, 3), dtype=np.uint8)).save(os.path.join(out, "img/b.jpg"), quality=90)
    Image.fromarray(rng.randint(0, 256, (5, 4, 3), dtype=np.uint8)).save(os.path.join(out, "crops/c.png"))
    g = np.zeros((H, W), np.uint8)
    g[2:7, 3:9] = 255
    g[8, 1] = 7
    Image.fromarray(g).save(os.path.join(out, "masks/grey.png"))
    p = Image.fromarray((np.arange(H * W).reshape(H, W) % 3 == 0).astype(np.uint8) * 2, mode="P")
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 0] + [0] * 759)  # index 2 is black: the index counts, not the colour
    p.save(os.path.join(out, "masks/pal.png"))
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(os.path.join(out, "masks/wrong_size.png"))
    with open(os.path.join(out, "img/a.png"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "img/broken.png"), "wb") as f:
        f.write(data[: len(data) // 2])   # header intact (size probes), pixels cut
    with wave.open(os.path.join(out, "wav/beep.wav"), "wb") as wf:
        wf.setnchannels(1), wf.setsampwidth(2), wf.setframerate(16000)
        wf.writeframes((np.sin(np.arange(400) * 0.3) * 8000).astype("<i2").tobytes())

    polys = [[1.5, 1.0, 10.2, 2.0, 8.0, 8.7, 2.0, 7.5], [6.0, 0.5, 11.0, 0.5, 11.0, 4.0]]
    poly_mask = maskUtils.decode(maskUtils.merge(maskUtils.frPyObjects(polys, H, W)))
    m3 = np.zeros((H, W), np.uint8, order="F")
    m3[4:9, 0:5] = 1
    enc = maskUtils.encode(np.asfortranarray(m3))
    counts_str = enc["counts"].decode("ascii")
    flat = m3.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    pal = np.array(Image.open(os.path.join(out, "masks/pal.png")))
    bpoly = [[0, 0, 13, 0, 13, 8, 0, 8]]
    bmask = maskUtils.decode(maskUtils.merge(maskUtils.frPyObjects(bpoly, 9, 14)))

    # (json text, expected record or error)
    lines = []
    recs, errs = [], []

    def good(obj, rec, text=None):
        lines.append(text if text is not None else json.dumps(obj, ensure_ascii=False))
        rec["line"] = len(lines)
        recs.append(rec)

    def bad(obj, msg, text=None):
        lines.append(text if text is not None else json.dumps(obj, ensure_ascii=False))
        errs.append("{F}:%d: %s" % (len(lines), msg))

    base = dict(id="", split="train", height=H, width=W, text=None, box=None, ref_path=None, expression=None,
                question=None, answer=None)
    good({"image": "img/a.png", "text": "the red mug", "mask": "masks/grey.png", "id": "a1"},
         dict(base, id="a1", image="img/a.png", ref="text", text="the red mug", qa="seg", mask_kind="png",
              mask=rows(g != 0)))
    good({"image": "img/a.png", "box": [1, 2, 11.5, 9], "polygon": polys, "split": "val", "id": 42},
         dict(base, id="42", split="val", image="img/a.png", ref="box", box=[1, 2, 11.5, 9], qa="seg",
              mask_kind="polygon", mask=rows(poly_mask)))
    good({"image": "img/a.png", "ref_image": "crops/c.png", "rle": {"size": [H, W], "counts": counts_str}},
         dict(base, image="img/a.png", ref="ref_image", ref_path="crops/c.png", qa="seg", mask_kind="rle",
              mask=rows(m3)))
    good({"image": "img/a.png", "audio": "wav/beep.wav", "template": "caption", "expression": "a beep, caf\u00e9",
          "split": "test"},
         dict(base, split="test", image="img/a.png", ref="audio", ref_path="wav/beep.wav", qa="caption",
              expression="a beep, caf\u00e9", mask_kind="none", mask=None))
    good({"image": "img/a.png", "text": "mug", "question": "Where is the mug?", "answer": "It is [SEG].",
          "rle": {"size": [H, W], "counts": [int(c) for c in counts]}, "meta": {"anything": [1, 2]}},
         dict(base, image="img/a.png", ref="text", text="mug", qa="literal", question="Where is the mug?",
              answer="It is [SEG].", mask_kind="rle", mask=rows(m3)))
    lines.append("   ")
    good({"image": "img/a.png", "text": "stripes", "template": "seg", "expression": "the stripes",
          "mask": "masks/pal.png"},
         dict(base, image="img/a.png", ref="text", text="stripes", qa="seg", expression="the stripes",
              mask_kind="png", mask=rows(pal != 0)))
    good({"image": "img/b.jpg", "box": [0, 0, 14, 9], "polygon": bpoly},
         dict(base, image="img/b.jpg", height=9, width=14, ref="box", box=[0, 0, 14, 9], qa="seg", mask_kind="polygon",
              mask=rows(bmask)))

    a = {"image": "img/a.png"}
    bad(dict(a, box=[1, 2, 3], polygon=polys), "box: expected 4 numbers, found 3")
    bad(dict(a, box=[1, 2, "3", 4], polygon=polys), "box[2]: expected a number, found string")
    bad(dict(a, box=[5, 2, 3, 4], polygon=polys), "box: expected x0 < x1 and y0 < y1, found [5, 2, 3, 4]")
    bad(dict(a, box=[0, 0, 13, 4], polygon=polys), "box: [0, 0, 13, 4] outside the 12x10 image")
    bad(dict(a, text="x", box=[1, 2, 3, 4], polygon=polys),
        "reference: expected exactly one of text, box, ref_image, audio; found text and box")
    bad(dict(a, polygon=polys), "reference: expected exactly one of text, box, ref_image, audio; found none")
    bad({"text": "x", "polygon": polys}, "image: missing")
    bad({"image": "img/nope.png", "text": "x", "polygon": polys}, "image: {D}/img/nope.png: No such file or directory")
    bad(dict(a, text="x", polygon=[polys[0], [1, 2, "a", 4, 5, 6]]), "polygon[1][2]: expected a number, found string")
    bad(dict(a, text="x", polygon=[[1, 2, 3, 4]]), "polygon[0]: expected at least 6 numbers (3 points), found 4")
    bad(dict(a, text="x", polygon=[[1, 2, 3, 4, 5, 6, 7]]),
        "polygon[0]: expected an even count of numbers (x, y pairs), found 7")
    bad(dict(a, text="x", rle={"size": [5, 5], "counts": [25]}), "rle.size: [5, 5] is not the image's [10, 12]")
    bad(dict(a, text="x", rle={"size": [H, W], "counts": [3, 4]}),
        "rle.counts: the counts do not sum to height x width (10 x 12)")
    bad(dict(a, text="x", rle={"size": [H, W], "counts": "zz"}), "rle.counts: *")
    bad(dict(a, text="x", template="detect", polygon=polys), "template: expected \"seg\" or \"caption\", found \"detect\"")
    bad(dict(a, box=[1, 1, 2, 2], template="caption"), "expression: missing (template \"caption\" needs the caption)")
    bad(dict(a, text="x"), "ground truth: missing (template \"seg\" needs one of mask, polygon, rle)")
    bad(dict(a, text="x", question="q?", polygon=polys), "answer: missing (question is given)")
    bad(dict(a, text="x", polygons=polys), "unknown field \"polygons\"")
    bad(None, "column 31: expected ':' after the object key, found '\"'", text='{"image": "img/a.png", "text" "x"}')
    bad(None, "expected a JSON object, found array", text="[1, 2]")
    bad(dict(a, text="x", mask="masks/wrong_size.png"),
        "mask: {D}/masks/wrong_size.png is 12x11, the image 12x10 (width x height)")
    bad(dict(a, text="x", mask="masks/grey.png", polygon=polys),
        "ground truth: expected at most one of mask, polygon, rle; found 2")
    bad(dict(a, text="x", polygon=polys, id=1.5), "id: expected a string or an integer, found number")
    bad(dict(a, text="", polygon=polys), "text: empty string")
    bad(dict(a, text="x", polygon=polys, split=3), "split: expected a string, found number")
    bad({"image": "img/broken.png", "text": "x", "polygon": polys}, "image: *")
    bad(None, "image: given twice", text='{"image": "img/a.png", "image": "img/a.png", "text": "x", "polygon": %s}'
        % json.dumps(polys))

    with open(os.path.join(out, "data.jsonl"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"n_lines": len(lines), "n_blank": 1, "records": recs, "errors": errs}, f, ensure_ascii=False,
                  indent=0)


if __name__ == "__main__":
    main()
