#!/usr/bin/python3
"""tests/ref/image_ref.py — PIL / torchvision / PyTorch reference for data/image.c.

Usage: /usr/bin/python3 tests/ref/image_ref.py tests/fixtures   (`make fixtures`)

Writes small generated images to <dir>/images/ (PNG in every colour type and
bit depth the decoder handles, interlaced PNG, baseline / 4:4:4 / progressive /
grey / CMYK JPEG) and <dir>/image.h5 with what Debian's python3-pil (Pillow
9.4) and PyTorch make of them. Written from the official preprocessing code,
not from the C code:

  decode/<file>   (all but scene_*) uint8 [H, W, 3]  Image.open(f).convert("RGB"); for 16-bit
                  GREY PNG the high byte of PIL's mode-"I" values instead (PIL's
                  own convert("RGB") clamps those to 255; data/image.h says why
                  we keep the high byte, as for 16-bit RGB where PIL does)
  raw/<file>      uint8 [H, W]     mode "P": the palette index; mode "L"/"1"/
                  "LA": the grey value (convert("L")); RGB(A) and colour JPEG:
                  convert("RGB").convert("L"); attribute palette = 1 for "P"
  resize/<k>      src uint8 [h, w, c], out uint8 [oh, ow, c] =
                  Image.resize((ow, oh), filter) (attrs filter = 2 bilinear /
                  3 bicubic), on generated patterns and pure noise
  sam/<file>      S = 48: resized uint8 [rh, rw, 3] = segment_anything
                  ResizeLongestSide(S).apply_image (torchvision resize of a PIL
                  image); for rgb_37x53.png also out float32 [3, S, S] = AnyRef's
                  sam_preprocess of it ((x - mean) / std, F.pad); attrs S, rh, rw
  sam1024/<file>  S = 1024: the resized uint8 image as row sums [rh, 3], column
                  sums [rw, 3] (int64) and every 16th pixel [ceil(rh/16),
                  ceil(rw/16), 3]; attrs rh, rw
  clip/<file>/<S>/crop, wocrop   (rgb_37x53.png and scene_*) float32 [3, S, S]: CLIPImageProcessor
                  (shortest_edge S, bicubic, centre crop S, 1/255, CLIP mean/std)
                  and AnyRef's clip_resize_wo_crop (do_center_crop=False, then
                  F.interpolate(size=(S, S), bilinear, align_corners=False));
                  for S = 224 only [:, ::7, ::7] and float64 row/column sums
                  (crop_sub, crop_rows [3, S], crop_cols [3, S], same for wocrop)

CLIPImageProcessor is re-implemented here from transformers'
image_processing_clip.py / image_transforms.py (get_resize_output_image_size,
resize through PIL with resample=3 on the uint8 image, center_crop with
top = (H - S) // 2, rescale as float64 then float32, normalize in float32), so
`make fixtures` needs no transformers; when transformers is importable (a venv
with --system-site-packages) the real CLIPImageProcessor is run too and must
agree exactly.
"""
import io
import os
import struct
import sys
import zlib

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import resize as tv_resize
from torchvision.transforms.functional import to_pil_image

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
SAM_MEAN = [123.675, 116.28, 103.53]
SAM_STD = [58.395, 57.12, 57.375]


# --------------------------------------------------------------------------
# generated pictures
# --------------------------------------------------------------------------
def pattern(h, w, seed, ch=3):
    """Smooth gradients, a ring, sharp rectangles and some noise: uint8 [h, w, ch]."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for c in range(ch):
        fx, fy = rng.uniform(0.05, 0.4, 2)
        v = 128 + 90 * np.sin(fx * x + c) * np.cos(fy * y - c)
        v += 60 * ((x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 3) ** 2)
        x0, y0 = rng.randint(0, max(w - 3, 1)), rng.randint(0, max(h - 3, 1))
        v[y0:y0 + h // 3, x0:x0 + w // 4] = rng.randint(0, 256)
        v += rng.normal(0, 3, (h, w))
        out.append(v)
    return np.clip(np.rint(np.stack(out, -1)), 0, 255).astype(np.uint8)


def png_bytes(samples, ctype, depth, palette=None, trns=None, interlace=False):
    """A PNG of integer samples [h, w(, ch)] in any colour type / depth (PIL
    cannot write most of these), optionally Adam7-interlaced."""
    nch = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    h, w = samples.shape[:2]
    a = samples.reshape(h, w, nch).astype(np.int64)

    def rows(sub):
        out = b""
        for r in sub:
            v = r.reshape(-1)
            if depth == 16:
                data = v.astype(">u2").tobytes()
            elif depth == 8:
                data = v.astype(np.uint8).tobytes()
            else:
                ppb = 8 // depth
                v = np.concatenate([v, np.zeros((-len(v)) % ppb, np.int64)]).reshape(-1, ppb)
                b = sum(v[:, i] << (8 - depth * (i + 1)) for i in range(ppb))
                data = b.astype(np.uint8).tobytes()
            out += b"\0" + data
        return out

    if interlace:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        raw = b"".join(rows(a[y0::dy, x0::dx]) for x0, y0, dx, dy in passes if a[y0::dy, x0::dx].size)
    else:
        raw = rows(a)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, int(interlace)))
    if palette is not None:
        out += chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    return out + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def pil_save(im, **kw):
    b = io.BytesIO()
    im.save(b, **kw)
    return b.getvalue()


def make_files():
    """name -> bytes of every image file."""
    rng = np.random.RandomState(7)
    files = {}
    rgb = pattern(53, 37, 1)
    files["rgb_37x53.png"] = pil_save(Image.fromarray(rgb), format="PNG")
    files["rgb_adam7_29x23.png"] = png_bytes(pattern(23, 29, 2), 2, 8, interlace=True)
    files["grey_41x29.png"] = pil_save(Image.fromarray(pattern(29, 41, 3, 1)[..., 0]), format="PNG")
    files["grey1_19x13.png"] = png_bytes(rng.randint(0, 2, (13, 19)), 0, 1)
    files["grey2_17x11.png"] = png_bytes(rng.randint(0, 4, (11, 17)), 0, 2)
    files["grey4_adam7_21x15.png"] = png_bytes(rng.randint(0, 16, (15, 21)), 0, 4, interlace=True)
    files["grey16_23x17.png"] = png_bytes(rng.randint(0, 65536, (17, 23)), 0, 16)
    files["grey_trns_13x9.png"] = png_bytes(rng.randint(0, 256, (9, 13)), 0, 8, trns=struct.pack(">H", 77))
    files["la_21x15.png"] = pil_save(Image.fromarray(np.concatenate(
        [pattern(15, 21, 4, 1), rng.randint(0, 256, (15, 21, 1)).astype(np.uint8)], -1), "LA"), format="PNG")
    files["la16_11x7.png"] = png_bytes(rng.randint(0, 65536, (7, 11, 2)), 4, 16)
    files["rgba_31x17.png"] = pil_save(Image.fromarray(np.concatenate(
        [pattern(17, 31, 5), rng.randint(0, 256, (17, 31, 1)).astype(np.uint8)], -1), "RGBA"), format="PNG")
    files["rgba16_17x11.png"] = png_bytes(rng.randint(0, 65536, (11, 17, 4)), 6, 16)
    files["rgb16_25x19.png"] = png_bytes(rng.randint(0, 65536, (19, 25, 3)), 2, 16)
    files["rgb16_adam7_9x14.png"] = png_bytes(rng.randint(0, 65536, (14, 9, 3)), 2, 16, interlace=True)
    pal = rng.randint(0, 256, (200, 3))
    p = Image.fromarray(rng.randint(0, 200, (21, 33)).astype(np.uint8), "P")
    p.putpalette(pal.astype(np.uint8).reshape(-1).tolist())
    files["pal8_trns_33x21.png"] = pil_save(p, format="PNG", transparency=bytes(rng.randint(0, 256, 200).astype(np.uint8)))
    files["pal4_27x13.png"] = png_bytes(rng.randint(0, 16, (13, 27)), 3, 4, palette=rng.randint(0, 256, (16, 3)))
    files["pal1_adam7_10x6.png"] = png_bytes(rng.randint(0, 2, (6, 10)), 3, 1, palette=[[10, 200, 30], [250, 5, 99]],
                                             interlace=True)
    files["pal_mask_40x24.png"] = png_bytes(  # an MS3-style palette mask: a few objects, index 0 background
        (np.add.outer(np.arange(24) // 8, np.arange(40) // 10) % 4), 3, 8,
        palette=[[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])
    files["jpeg420_q90_37x53.jpg"] = pil_save(Image.fromarray(rgb), format="JPEG", quality=90)
    files["jpeg444_q95_40x30.jpg"] = pil_save(Image.fromarray(pattern(30, 40, 6)), format="JPEG", quality=95,
                                              subsampling=0)
    files["jpeg422_q75_35x27.jpg"] = pil_save(Image.fromarray(pattern(27, 35, 8)), format="JPEG", quality=75,
                                              subsampling=1)
    files["jpeg_progressive_45x31.jpg"] = pil_save(Image.fromarray(pattern(31, 45, 9)), format="JPEG", quality=85,
                                                   progressive=True)
    files["jpeg_grey_29x19.jpg"] = pil_save(Image.fromarray(pattern(19, 29, 10, 1)[..., 0]), format="JPEG",
                                            quality=90)
    files["jpeg_cmyk_23x17.jpg"] = pil_save(Image.fromarray(pattern(17, 23, 11).astype(np.uint8)).convert("CMYK"),
                                            format="JPEG", quality=90)
    files["jpeg_exif_rot_24x16.jpg"] = exif_jpeg(pattern(16, 24, 12))
    files["scene_160x120.jpg"] = pil_save(Image.fromarray(pattern(120, 160, 13)), format="JPEG", quality=92)
    files["scene_90x150.png"] = pil_save(Image.fromarray(pattern(150, 90, 14)), format="PNG")
    return files


def exif_jpeg(rgb):
    """A JPEG whose EXIF says 'rotate 90' (orientation 6): decoders ignore it, as PIL's open does."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return pil_save(Image.fromarray(rgb), format="JPEG", quality=90, exif=exif.tobytes())


# --------------------------------------------------------------------------
# PIL's view of each file
# --------------------------------------------------------------------------
def expected_rgb(data):
    im = Image.open(io.BytesIO(data))
    if im.mode == "I":  # 16-bit grey: the high byte (PIL's convert("RGB") would clamp)
        v = (np.array(im).astype(np.int64) >> 8).astype(np.uint8)
        assert v.max() > 0
        return np.repeat(v[..., None], 3, -1)
    return np.array(im.convert("RGB"))


def expected_raw(data):
    im = Image.open(io.BytesIO(data))
    if im.mode == "P":
        return np.array(im), 1
    if im.mode == "I":
        return (np.array(im).astype(np.int64) >> 8).astype(np.uint8), 0
    if im.mode in ("L", "1", "LA"):
        return np.array(im.convert("L")), 0
    return np.array(im.convert("RGB").convert("L")), 0


# --------------------------------------------------------------------------
# official preprocessing
# --------------------------------------------------------------------------
def sam_shape(oldh, oldw, long_side):  # segment_anything ResizeLongestSide.get_preprocess_shape
    scale = long_side * 1.0 / max(oldh, oldw)
    newh, neww = oldh * scale, oldw * scale
    return int(newh + 0.5), int(neww + 0.5)


def sam_apply_image(image, S):  # ResizeLongestSide.apply_image
    return np.array(tv_resize(to_pil_image(image), sam_shape(image.shape[0], image.shape[1], S)))


def sam_preprocess(resized, S):  # AnyRef utils/*.py sam_preprocess on torch.from_numpy(x).permute(2, 0, 1)
    x = torch.from_numpy(resized).permute(2, 0, 1).contiguous()
    x = (x - torch.Tensor(SAM_MEAN).view(-1, 1, 1)) / torch.Tensor(SAM_STD).view(-1, 1, 1)
    h, w = x.shape[-2:]
    return F.pad(x, (0, S - w, 0, S - h)).numpy()


def clip_resize_shape(h, w, S):  # transformers get_resize_output_image_size(default_to_square=False)
    short, long = (w, h) if w <= h else (h, w)
    if short == S:
        return h, w
    new_short, new_long = S, int(S * long / short)
    return (new_long, new_short) if w <= h else (new_short, new_long)


def clip_processor(image, S, crop):
    """CLIPImageProcessor.preprocess(image)['pixel_values'][0] for a uint8 HWC numpy image."""
    oh, ow = clip_resize_shape(image.shape[0], image.shape[1], S)
    img = np.array(Image.fromarray(image).resize((ow, oh), resample=3))
    if crop:
        top, left = (oh - S) // 2, (ow - S) // 2
        img = img[top:top + S, left:left + S]
    x = (img.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return x.transpose(2, 0, 1).copy()


def clip_hf(image, S, crop):
    try:
        from transformers import CLIPImageProcessor
    except ImportError:
        return None
    p = CLIPImageProcessor(size={"shortest_edge": S}, crop_size={"height": S, "width": S}, do_center_crop=crop,
                           image_mean=CLIP_MEAN, image_std=CLIP_STD)
    return p.preprocess(image, return_tensors="np")["pixel_values"][0]


def clip_input(image, S, crop):
    x = clip_processor(image, S, crop)
    hf = clip_hf(image, S, crop)
    if hf is not None:
        assert hf.dtype == x.dtype and hf.shape == x.shape and np.array_equal(hf, x), "CLIPImageProcessor disagrees"
    if not crop:  # AnyRef's clip_resize_wo_crop
        x = F.interpolate(torch.from_numpy(x).unsqueeze(0), size=(S, S), mode="bilinear", align_corners=False)[0]
        x = x.numpy()
    return x


RESIZES = [  # (h, w, c, oh, ow, filter, kind)
    (53, 37, 3, 14, 20, 2, "pattern"), (53, 37, 3, 14, 20, 3, "pattern"), (60, 45, 3, 5, 7, 2, "pattern"),
    (60, 45, 3, 5, 7, 3, "pattern"), (60, 80, 3, 5, 7, 3, "noise"), (9, 13, 3, 50, 64, 2, "noise"), (9, 13, 3, 50, 64, 3, "noise"),
    (53, 37, 1, 20, 37, 3, "noise"), (53, 37, 1, 53, 11, 2, "noise"), (31, 47, 3, 64, 23, 3, "pattern"),
    (64, 48, 3, 1, 1, 2, "noise"), (1, 1, 3, 5, 9, 3, "noise"), (2, 97, 1, 3, 41, 3, "noise"),
    (50, 38, 3, 49, 37, 2, "pattern"), (50, 38, 3, 49, 37, 3, "noise"),
]


def put(group, key, value):
    group.create_dataset(key, data=value, compression="gzip", compression_opts=9, shuffle=True)


def main(out_dir):
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    files = make_files()
    with h5py.File(os.path.join(out_dir, "image.h5"), "w", libver="latest") as f:
        for name, data in sorted(files.items()):
            with open(os.path.join(img_dir, name), "wb") as g:
                g.write(data)
            if name.startswith("scene"):  # only through the pipelines below (keeps the fixture small)
                continue
            put(f, "decode/" + name, expected_rgb(data))
            raw, pal = expected_raw(data)
            put(f, "raw/" + name, raw)
            f["raw/" + name].attrs["palette"] = pal
        rng = np.random.RandomState(3)
        for k, (h, w, c, oh, ow, filt, kind) in enumerate(RESIZES):
            src = pattern(h, w, 100 + k, c) if kind == "pattern" else rng.randint(0, 256, (h, w, c)).astype(np.uint8)
            im = Image.fromarray(src if c == 3 else src[..., 0])
            out = np.array(im.resize((ow, oh), resample=filt)).reshape(oh, ow, c)
            g = f.create_group("resize/%d" % k)
            put(g, "src", src)
            put(g, "out", out)
            g.attrs["filter"] = filt
        for name in ["rgb_37x53.png", "scene_160x120.jpg", "scene_90x150.png", "jpeg_grey_29x19.jpg",
                     "pal1_adam7_10x6.png"]:
            image = expected_rgb(files[name])
            S = 48
            r = sam_apply_image(image, S)
            g = f.create_group("sam/" + name)
            put(g, "resized", r)
            if name == "rgb_37x53.png":
                put(g, "out", sam_preprocess(r, S).astype(np.float32))
            g.attrs["S"], g.attrs["rh"], g.attrs["rw"] = S, r.shape[0], r.shape[1]
            r = sam_apply_image(image, 1024).astype(np.int64)
            g = f.create_group("sam1024/" + name)
            put(g, "rows", r.sum(1))
            put(g, "cols", r.sum(0))
            put(g, "sub", r[::16, ::16].astype(np.uint8))
            g.attrs["rh"], g.attrs["rw"] = r.shape[0], r.shape[1]
            for S in (32, 224) if name.startswith("scene") else (32,) if name == "rgb_37x53.png" else ():
                for crop in (1, 0):
                    x = clip_input(image, S, crop)
                    key = "clip/%s/%d/%s" % (name, S, "crop" if crop else "wocrop")
                    if S == 224:
                        put(f, key + "_sub", x[:, ::7, ::7])
                        put(f, key + "_rows", x.astype(np.float64).sum(2))
                        put(f, key + "_cols", x.astype(np.float64).sum(1))
                    else:
                        put(f, key, x)
    print("wrote %d images to %s and %s" % (len(files), img_dir, os.path.join(out_dir, "image.h5")))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
