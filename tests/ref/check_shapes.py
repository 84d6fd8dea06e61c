"""tests/ref/check_shapes.py — reads a shapes world (anyref data shapes) with
Python's own readers, by hand (not part of `make test`):

    build/anyref data shapes --out /tmp/shapes --size tiny
    /usr/bin/python3 tests/ref/check_shapes.py /tmp/shapes
    # with pycocotools (areas, masks, boxes as COCO computes them):
    /work/wt/venv-coco/bin/python tests/ref/check_shapes.py /tmp/shapes

Checks: refs(unc).p loads with pickle.load and uses only protocol-2 opcodes
(pickletools), every ref has the fields refer.py reads and its sent_ids match
its sentences; instances.json loads with json; with pycocotools, every
annotation's area equals maskUtils.area(annToRLE) and every ref's ann exists;
every image (PIL) has the size instances.json says; the S4 tree (csv, PNG
frames and masks with PIL, WAVs with the wave module: 16 kHz mono 16-bit 5 s);
every JSON line parses and its files exist; tokenizer.json loads with
`tokenizers` when installed and encodes an expression into whole words.
Prints one line per check and exits non-zero on a failure.
"""
import csv
import json
import os
import pickle
import pickletools
import sys
import wave

from PIL import Image

PROTO2 = {"PROTO", "EMPTY_LIST", "EMPTY_DICT", "MARK", "APPENDS", "APPEND", "SETITEMS", "SETITEM", "BININT",
          "BININT1", "BININT2", "BINUNICODE", "STOP"}
failed = 0


def check(ok, name, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + name + (" " + detail if detail else ""))
    failed += not ok


def main(root):
    refer = os.path.join(root, "refer_seg", "refcoco")
    raw = open(os.path.join(refer, "refs(unc).p"), "rb").read()
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    refs = pickle.loads(raw)
    check(raw[:2] == b"\x80\x02" and ops <= PROTO2, "pickle protocol 2", "opcodes %s" % sorted(ops))
    keys = {"ref_id", "ann_id", "image_id", "split", "sentences", "sent_ids", "file_name", "category_id"}
    bad = [r for r in refs if set(r) != keys or r["sent_ids"] != [s["sent_id"] for s in r["sentences"]]
           or any(set(s) != {"tokens", "raw", "sent", "sent_id"} or s["tokens"] != s["sent"].split()
                  for s in r["sentences"])]
    splits = sorted({r["split"] for r in refs})
    check(refs and not bad and splits == ["testA", "testB", "train", "val"], "refs",
          "%d refs, splits %s, malformed %d" % (len(refs), splits, len(bad)))

    inst = json.load(open(os.path.join(refer, "instances.json")))
    images = {im["id"]: im for im in inst["images"]}
    anns = {a["id"]: a for a in inst["annotations"]}
    check(all(r["ann_id"] in anns and anns[r["ann_id"]]["image_id"] == r["image_id"] for r in refs),
          "refs join instances", "%d images, %d annotations" % (len(images), len(anns)))
    try:
        from pycocotools.coco import COCO
        from pycocotools import mask as maskUtils
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(os.path.join(refer, "instances.json"))
        bad = [a["id"] for a in inst["annotations"] if int(maskUtils.area(coco.annToRLE(a))) != a["area"]]
        crowd = sum(a["iscrowd"] for a in inst["annotations"])
        check(not bad, "pycocotools areas", "%d annotations (%d crowd), area == maskUtils.area(annToRLE)"
              % (len(anns), crowd))
    except ImportError:
        print("skip pycocotools (not installed)")
    imgdir = os.path.join(root, "refer_seg", "images", "mscoco", "images", "train2014")
    bad = 0
    for im in inst["images"]:
        with Image.open(os.path.join(imgdir, im["file_name"])) as p:
            bad += p.size != (im["width"], im["height"]) or p.format != "JPEG"
    check(not bad, "images", "%d JPEGs of the annotated sizes" % len(images))

    avs = os.path.join(root, "avsbench")
    rows = list(csv.DictReader(open(os.path.join(avs, "s4_meta_data.csv"))))
    bad = 0
    for r in rows:
        d = os.path.join(avs, "s4_data")
        v, c, s = r["name"], r["category"], r["split"]
        for k in range(1, 6):
            with Image.open(os.path.join(d, "visual_frames", s, c, v, "%s_%d.png" % (v, k))) as f:
                size = f.size
                bad += f.mode != "RGB"
            mp = os.path.join(d, "gt_masks", s, c, v, "%s_%d.png" % (v, k))
            if s == "train" and k > 1:
                bad += os.path.exists(mp)
                continue
            with Image.open(mp) as m:
                vals = set(m.getdata())
                bad += m.size != size or m.mode != "L" or not vals <= {0, 255} or 255 not in vals
        with wave.open(os.path.join(d, "audio_wav", s, c, v + ".wav")) as w:
            bad += (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) != (16000, 1, 2, 80000)
    check(rows and not bad, "avsbench s4", "%d videos: frames, masks (train: frame 1), WAVs" % len(rows))

    custom = os.path.join(root, "custom")
    lines = [json.loads(l) for l in open(os.path.join(custom, "shapes.jsonl"))]
    bad = sum(not os.path.exists(os.path.join(custom, l["image"]))
              or ("ref_image" in l and not os.path.exists(os.path.join(custom, l["ref_image"]))) for l in lines)
    check(lines and not bad, "jsonl", "%d records, files exist" % len(lines))

    try:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(root, "tokenizer.json"))
        enc = tok.encode("the large red circle", add_special_tokens=False)
        check(enc.tokens == ["\u2581the", "\u2581large", "\u2581red", "\u2581circle"], "tokenizers",
              "%s, vocab %d" % (enc.tokens, tok.get_vocab_size()))
        texts = ["the triangle left of the blue square", "Can you segment the smallest shape in this image?",
                 "You are LLaVA, a large language and vision assistant trained by UW Madison WAIV Lab.You are able",
                 "a\nb ~ {x} \u00e9 zebra", "USER: <image>\nIt is [SEG]. ASSISTANT:"]
        exe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "anyref")
        if os.path.exists(exe):
            import subprocess
            out = subprocess.run([exe, "tokenize", "--tokenizer", os.path.join(root, "tokenizer.json")] + texts,
                                 capture_output=True, text=True).stdout.split("\n")
            ours = [[int(x) for x in l.split()] for l in out[:len(texts)]]
            theirs = [tok.encode(t, add_special_tokens=False).ids for t in texts]
            check(ours == theirs, "tokenizers ids = anyref tokenize", "%d texts" % len(texts))
    except ImportError:
        print("skip tokenizers (not installed)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/shapes")
    sys.exit(1 if failed else 0)
