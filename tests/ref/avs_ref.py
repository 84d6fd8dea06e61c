"""tests/ref/avs_ref.py — tiny AVSBench S4 and MS3 trees in the official
release layout, and what PIL makes of their frames and masks, for
tests/test_avsbench.c.

    /usr/bin/python3 tests/ref/avs_ref.py tests/fixtures/avsbench

Needs Debian's python3-pil (9.4), numpy, h5py. Writes under the directory
given:

  s4/s4_meta_data.csv      BOM, CRLF, a quoted name, a quoted field holding
                           a comma, a malformed line (stray quote), a line
                           with too many fields, a blank line, a row named
                           ".." (skipped by the loader)
  s4/s4_data/visual_frames/<split>/<cat>/<v>/<v>_<k>.png   32x24 RGB frames
  s4/s4_data/gt_masks/...  train: _1 only; val: masks of every kind (grey 0/255,
                           palette with colours on both sides of the p2bit
                           threshold, grey with in-between values, RGB and RGBA
                           with in-between values: Pillow's dithering)
  s4/s4_data/audio_wav/<split>/<cat>/<v>.wav   one 5 s 8-bit file, short others
  ms3/ms3_meta_data.csv    LF, header video_id,split
  ms3/ms3_data/visual_frames/<v>/<v>.mp4_<k>.png
  ms3/ms3_data/gt_masks/<split>/<v>/<v>_<k>.png   palette (indices 0..3) and grey
  ms3/ms3_data/audio_wav/<split>/<v>.wav
  expected.h5              frames uint8 [n, 24, 32, 3]  PIL convert("RGB")
                           masks  uint8 [m, 24, 32]  the loaders' binarisation:
                             S4 np.array(convert("1")) (0/1), MS3
                             (np.array(convert("P")) != 0)
                           frames_keys, masks_keys  uint8 [n or m, 32]: the
                             NUL-padded "<subset>/<video>/<k>" of each row
  s4 test video vidC is deliberately broken: mask _3 missing, frame _4 cut
  short, no wav; train video vidD has no wav.
"""
import os
import shutil
import struct
import sys

import h5py
import numpy as np
from PIL import Image

H, W = 24, 32
rng = np.random.RandomState(1234)


def wav_bytes(samples, rate, bits, channels):
    """A plain PCM WAV of interleaved integer samples."""
    if bits == 8:
        data = np.asarray(samples, dtype=np.uint8).tobytes()
    else:
        data = np.asarray(samples, dtype="<i2").tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_wav(path, seconds, bits, channels, seed):
    r = np.random.RandomState(seed)
    n = int(16000 * seconds)
    t = np.arange(n) / 16000.0
    x = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * r.randn(n)
    x = np.clip(x, -1, 1)
    if bits == 8:
        s = np.round(x * 127 + 128).astype(np.uint8)
    else:
        s = np.round(x * 32000).astype(np.int16)
    if channels == 2:
        s = np.stack([s, s[::-1]], 1).reshape(-1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(wav_bytes(s, 16000, bits, channels))


def frame(seed):
    r = np.random.RandomState(seed)
    base = np.zeros((H, W, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, W)[None, :]
    base[..., 1] = np.linspace(0, 255, H)[:, None]
    yy, xx = np.mgrid[0:H, 0:W]
    base[..., 2] = (xx * yy * r.randint(1, 9) + r.randint(0, 256)) % 256
    return Image.fromarray(base, "RGB")


def blob(seed):
    r = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    cy, cx = r.randint(4, H - 4), r.randint(4, W - 4)
    return ((yy - cy) ** 2 + (xx - cx) ** 2) < r.randint(9, 60)


def mask_image(kind, seed):
    r = np.random.RandomState(seed)
    b = blob(seed)
    if kind == "grey01":       # the release's S4 masks: 0 / 255 grey
        return Image.fromarray((b * 255).astype(np.uint8), "L")
    if kind == "greymid":      # in-between values: dithered by convert("1")
        return Image.fromarray(r.randint(0, 256, (H, W)).astype(np.uint8), "L")
    if kind == "palette":      # colours on both sides of p2bit's threshold
        idx = (b.astype(np.uint8) * (1 + r.randint(0, 3, (H, W)))).astype(np.uint8)
        im = Image.fromarray(idx, "P")
        pal = [0, 0, 0, 200, 10, 10, 120, 130, 120, 128, 128, 128] + [7, 7, 7] * 252
        im.putpalette(pal)
        return im
    if kind == "rgbmid":
        return Image.fromarray(r.randint(0, 256, (H, W, 3)).astype(np.uint8), "RGB")
    if kind == "rgbamid":
        return Image.fromarray(r.randint(0, 256, (H, W, 4)).astype(np.uint8), "RGBA")
    if kind == "ms3pal":       # MS3: palette indices 0..3, index 0 black
        idx = (b.astype(np.uint8) * (1 + r.randint(0, 3, (H, W)))).astype(np.uint8)
        idx[0, :3] = [1, 2, 3]
        im = Image.fromarray(idx, "P")
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 252)
        return im
    if kind == "ms3grey":
        g = (b * r.randint(1, 256, (H, W))).astype(np.uint8)
        return Image.fromarray(g, "L")
    raise ValueError(kind)


def main(out):
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    exp = {}

    # ---------------- S4 ----------------
    s4 = os.path.join(out, "s4")
    d4 = os.path.join(s4, "s4_data")
    csv = (
        "\ufeffname,start_time,category,split\r\n"
        "vidA,0,dog_barking,train\r\n"
        "\"vidB\",\"1\",race_car,val\r\n"
        "\r\n"
        "bad\"quote,0,dog_barking,train\r\n"
        "vidX,0,dog_barking,train,extra\r\n"
        "vidC,\"2,5\",cat_meowing,test\r\n"
        "..,0,dog_barking,train\r\n"
        "vidD,3,mynah_bird_singing,train"          # no final line end
    )
    os.makedirs(s4)
    with open(os.path.join(s4, "s4_meta_data.csv"), "wb") as f:
        f.write(csv.encode("utf-8"))
    videos = [("vidA", "dog_barking", "train"), ("vidB", "race_car", "val"),
              ("vidC", "cat_meowing", "test"), ("vidD", "mynah_bird_singing", "train")]
    val_kinds = ["grey01", "palette", "greymid", "rgbmid", "rgbamid"]
    for vi, (v, cat, split) in enumerate(videos):
        for k in range(1, 6):
            fp = os.path.join(d4, "visual_frames", split, cat, v, f"{v}_{k}.png")
            os.makedirs(os.path.dirname(fp), exist_ok=True)
            frame(100 * vi + k).save(fp)
            exp[f"frames/s4/{v}/{k}"] = np.array(Image.open(fp).convert("RGB"))
            if split == "train" and k > 1:
                continue
            if v == "vidC" and k == 3:
                continue
            kind = val_kinds[k - 1] if split != "train" else "grey01"
            mp = os.path.join(d4, "gt_masks", split, cat, v, f"{v}_{k}.png")
            os.makedirs(os.path.dirname(mp), exist_ok=True)
            mask_image(kind, 1000 * vi + k).save(mp)
            exp[f"masks/s4/{v}/{k}"] = np.array(Image.open(mp).convert("1"), dtype=np.uint8)
    # vidC frame 4 cut short
    fp = os.path.join(d4, "visual_frames", "test", "cat_meowing", "vidC", "vidC_4.png")
    with open(fp, "rb") as f:
        b = f.read()
    with open(fp, "wb") as f:
        f.write(b[: len(b) // 2])
    del exp["frames/s4/vidC/4"]
    write_wav(os.path.join(d4, "audio_wav", "train", "dog_barking", "vidA.wav"), 5.0, 8, 1, 1)
    write_wav(os.path.join(d4, "audio_wav", "val", "race_car", "vidB.wav"), 0.5, 16, 1, 2)

    # ---------------- MS3 ----------------
    ms3 = os.path.join(out, "ms3")
    d3 = os.path.join(ms3, "ms3_data")
    os.makedirs(ms3)
    with open(os.path.join(ms3, "ms3_meta_data.csv"), "wb") as f:
        f.write(b"video_id,split\nm1,train\nm2,val\nm3,test\n")
    for vi, (v, split) in enumerate([("m1", "train"), ("m2", "val")]):
        for k in range(1, 6):
            fp = os.path.join(d3, "visual_frames", v, f"{v}.mp4_{k}.png")
            os.makedirs(os.path.dirname(fp), exist_ok=True)
            frame(500 + 10 * vi + k).save(fp)
            exp[f"frames/ms3/{v}/{k}"] = np.array(Image.open(fp).convert("RGB"))
            mp = os.path.join(d3, "gt_masks", split, v, f"{v}_{k}.png")
            os.makedirs(os.path.dirname(mp), exist_ok=True)
            mask_image("ms3pal" if k % 2 else "ms3grey", 2000 + 10 * vi + k).save(mp)
            exp[f"masks/ms3/{v}/{k}"] = (np.array(Image.open(mp).convert("P")) != 0).astype(np.uint8)
    write_wav(os.path.join(d3, "audio_wav", "train", "m1.wav"), 1.0, 8, 2, 3)
    write_wav(os.path.join(d3, "audio_wav", "val", "m2.wav"), 0.3, 16, 1, 4)

    with h5py.File(os.path.join(out, "expected.h5"), "w") as h:
        for what in ("frames", "masks"):
            keys = sorted(k for k in exp if k.startswith(what + "/"))
            names = np.zeros((len(keys), 32), np.uint8)
            for i, k in enumerate(keys):
                kb = k[len(what) + 1:].encode()
                names[i, :len(kb)] = np.frombuffer(kb, np.uint8)
            h.create_dataset(what + "_keys", data=names)
            h.create_dataset(what, data=np.stack([exp[k] for k in keys]), compression="gzip")
    # sanity: the dithered masks differ from a plain threshold somewhere
    g = np.array(mask_image("greymid", 1000 * 1 + 3))
    assert (exp["masks/s4/vidB/3"] != (g > 128)).any()
    print("wrote", out, len(exp), "arrays")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/avsbench")
