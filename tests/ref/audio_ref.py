"""tests/ref/audio_ref.py — WAV fixtures and torchaudio references for tests/test_audio.c.

    /usr/bin/python3 tests/ref/audio_ref.py tests/fixtures/audio.h5

Needs Debian's python3-torchaudio (0.13, the version AnyRef pins), numpy, h5py.
Writes short WAV files in several layouts to tests/fixtures/audio/ (bytes
assembled here with struct, so every format detail is under control) and, to
the HDF5 file given:

  wav/<file>/samples        float32 [C, N] (not for the long file)  the samples as written, scaled as
                            torchaudio.load(normalize=True) returns them (the
                            script asserts torchaudio.load agrees: exactly for
                            8-24 bit PCM, within 2^-23 for 32-bit PCM and float files, which sox rounds); attrs rate, channels
  resample/<file>           float32 [C, M]  torchaudio.functional.resample to
                            16 kHz (ImageBind's resampler)
  fbank/<variant>           float64 [frames, bins] kaldi.fbank on a float64
                            waveform (imagebind_f32: the float32 run ImageBind
                            does); attrs hold the options
  clips/n, clips/start, clips/end   int64  ConstantClipsPerVideoSampler bounds
                            (2 s clips, 3 per file, 16 kHz) for many lengths n
  imagebind/<file>          float32 [3, 1, 32, 68]  load_and_transform_audio_data's
                            [3, 1, 128, 204] output at mel bins 0,4,8,.. and frames
                            0,3,6,.. (a subsample keeps the fixture small)
  imagebind_noinplace/<file> the same with the mean subtracted out of place
  imagebind_mono/<file>     the same on the channel mean (mix_channels = 1)
Every dataset is gzip-compressed (HDF5 decompresses it transparently).

The ImageBind pipeline below follows imagebind/data.py (identical in AnyRef's
copy) step by step; the clip sampler follows pytorchvideo at the commit
ImageBind and AnyRef pin (28fe037d: uniform = max_start / max(clips - 1, 1),
exact Fractions).
"""
import math
import os
import struct
import sys
from fractions import Fraction

import h5py
import numpy as np
import torch
import torchaudio

FIX_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "audio")
RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- WAV writing
def chunk(cid, body):
    pad = b"\0" if len(body) % 2 else b""
    return cid + struct.pack("<I", len(body)) + body + pad


def fmt_body(tag, ch, rate, bits, ext_sub=None, valid=None):
    align = ch * bits // 8
    body = struct.pack("<HHIIHH", tag, ch, rate, rate * align, align, bits)
    if tag == 0xFFFE:
        guid = struct.pack("<H", ext_sub) + bytes([0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71])
        body += struct.pack("<HHI", 22, valid or bits, 3 if ch == 2 else 4) + guid
    return body


def riff(chunks):
    payload = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def signal(n, rate, ch, seed_shift=0):
    t = np.arange(n) / rate
    out = []
    for c in range(ch):
        f1, f2 = 440.0 * (c + 1), 2500.0 + 700.0 * c
        x = 0.45 * np.sin(2 * np.pi * f1 * t + seed_shift) + 0.2 * np.sin(2 * np.pi * f2 * t)
        x += 0.05 * RNG.standard_normal(n)
        out.append(x)
    return np.clip(np.array(out), -0.98, 0.98)


def make_files():
    """Returns {name: (bytes, float32 [C, N] truth, rate)}."""
    files = {}

    # 16-bit stereo 44.1 kHz, with an odd-sized LIST chunk after data.
    rate, ch, n = 44100, 2, 4410
    q = np.round(signal(n, rate, ch) * 32767).astype(np.int16)
    q[0, :4] = [-32768, 32767, -1, 0]
    data = q.T.astype("<i2").tobytes()
    files["s16_stereo_44k.wav"] = (riff([chunk(b"fmt ", fmt_body(1, ch, rate, 16)), chunk(b"data", data),
                                         chunk(b"LIST", b"INFOISFT\x05\0\0\0abcd\0")]),
                                   (q / 32768.0).astype(np.float32), rate)

    # 24-bit mono 48 kHz, data chunk BEFORE the fmt chunk.
    rate, ch, n = 48000, 1, 4800
    q = np.round(signal(n, rate, ch) * 8388607).astype(np.int32)
    q[0, :3] = [-8388608, 8388607, -1]
    b = q.T.astype("<i4").tobytes()
    data = b"".join(b[i:i + 3] for i in range(0, len(b), 4))
    files["s24_mono_48k.wav"] = (riff([chunk(b"data", data), chunk(b"fmt ", fmt_body(1, ch, rate, 24))]),
                                 (q / 8388608.0).astype(np.float32), rate)

    # float32 mono 16 kHz, 0.5 s (the fbank input), with a fact chunk.
    rate, ch, n = 16000, 1, 8000
    x = signal(n, rate, ch).astype(np.float32)
    files["f32_mono_16k.wav"] = (riff([chunk(b"fmt ", fmt_body(3, ch, rate, 32)),
                                       chunk(b"fact", struct.pack("<I", n)), chunk(b"data", x.T.astype("<f4").tobytes())]),
                                 x, rate)

    # 8-bit unsigned mono 8 kHz, an odd-sized junk chunk first.
    rate, ch, n = 8000, 1, 2000
    q = np.clip(np.round(signal(n, rate, ch) * 127) + 128, 0, 255).astype(np.uint8)
    q[0, :3] = [0, 255, 128]
    files["u8_mono_8k.wav"] = (riff([chunk(b"junk", b"odd"), chunk(b"fmt ", fmt_body(1, ch, rate, 8)),
                                     chunk(b"data", q.T.tobytes())]),
                               ((q.astype(np.float64) - 128) / 128.0).astype(np.float32), rate)

    # WAVE_FORMAT_EXTENSIBLE, 32-bit PCM stereo 22.05 kHz.
    rate, ch, n = 22050, 2, 2205
    q = np.round(signal(n, rate, ch) * 2147483647).astype(np.int64)
    q[0, :3] = [-2147483648, 2147483647, -1]
    q = q.astype(np.int32)
    files["ext_s32_stereo_22k.wav"] = (riff([chunk(b"fmt ", fmt_body(0xFFFE, ch, rate, 32, ext_sub=1)),
                                             chunk(b"data", q.T.astype("<i4").tobytes())]),
                                       (q.astype(np.float32) / np.float32(2147483648.0)).astype(np.float32), rate)

    # WAVE_FORMAT_EXTENSIBLE, float64 mono 11.025 kHz.
    rate, ch, n = 11025, 1, 1102
    x = signal(n, rate, ch)
    files["ext_f64_mono_11k.wav"] = (riff([chunk(b"fmt ", fmt_body(0xFFFE, ch, rate, 64, ext_sub=3)),
                                           chunk(b"data", x.T.astype("<f8").tobytes())]),
                                     x.astype(np.float32), rate)

    # 8-bit stereo 16 kHz, 2.2 s: the three-clip logic. The left channel
    # carries a DC offset so that ImageBind's in-place mean subtraction shows.
    rate, ch, n = 16000, 2, 35200
    x = signal(n, rate, ch)
    x[0] = 0.5 * x[0] + 0.3
    x[1] = 0.5 * x[1] - 0.1
    q = np.clip(np.round(x * 127) + 128, 0, 255).astype(np.uint8)
    files["long_u8_stereo_16k.wav"] = (riff([chunk(b"fmt ", fmt_body(1, ch, rate, 8)), chunk(b"data", q.T.tobytes())]),
                                       ((q.astype(np.float64) - 128) / 128.0).astype(np.float32), rate)
    return files


# ------------------------------------------------------- ImageBind reference
class ConstantClipsPerVideoSampler:
    """pytorchvideo 28fe037d semantics (exact Fractions, uniform = max_start / max(clips-1, 1))."""

    def __init__(self, clip_duration, clips_per_video):
        self.clip_duration = Fraction(clip_duration)
        self.clips = clips_per_video
        self.index = 0

    def __call__(self, last_clip_time, video_duration):
        max_start = Fraction(max(video_duration - self.clip_duration, 0))
        uniform = Fraction(max_start, max(self.clips - 1, 1))
        start = uniform * self.index
        self.index += 1
        last = False
        if self.index >= self.clips or uniform * self.index > max_start:
            self.index = 0
            last = True
        return start, start + self.clip_duration, last


def clip_timepoints(sampler, duration):
    points, last, end = [], False, 0.0
    while not last:
        start, end, last = sampler(end, duration)
        points.append((start, end))
    return points


def melspec(waveform, sample_rate, num_mel_bins, target_length, inplace=True):
    if inplace:
        waveform -= waveform.mean()
    else:
        waveform = waveform - waveform.mean()
    fbank = torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=sample_rate, use_energy=False,
                                              window_type="hanning", num_mel_bins=num_mel_bins, dither=0.0,
                                              frame_length=25, frame_shift=10)
    fbank = fbank.transpose(0, 1)
    p = target_length - fbank.size(1)
    if p > 0:
        fbank = torch.nn.functional.pad(fbank, (0, p), mode="constant", value=0)
    elif p < 0:
        fbank = fbank[:, 0:target_length]
    return fbank.unsqueeze(0)


def imagebind_audio(path, inplace=True, mono=False, sample_rate=16000):
    waveform, sr = torchaudio.load(path)
    if mono:
        waveform = waveform.mean(0, keepdim=True)
    if sample_rate != sr:
        waveform = torchaudio.functional.resample(waveform, orig_freq=sr, new_freq=sample_rate)
    sampler = ConstantClipsPerVideoSampler(2, 3)
    clips = []
    for s, e in clip_timepoints(sampler, waveform.size(1) / sample_rate):
        clip = waveform[:, int(s * sample_rate):int(e * sample_rate)]
        clips.append(melspec(clip, sample_rate, 128, 204, inplace=inplace))
    mean, std = torch.tensor(-4.268), torch.tensor(9.138)   # transforms.Normalize: sub_ then div_ in float32
    clips = [(c - mean) / std for c in clips]
    return torch.stack(clips, 0)


FBANK_VARIANTS = {
    # name: (file, kwargs)
    "imagebind": ("f32_mono_16k.wav", dict(htk_compat=True, sample_frequency=16000, use_energy=False,
                                            window_type="hanning", num_mel_bins=128, dither=0.0,
                                            frame_length=25, frame_shift=10)),
    "povey_8k": ("u8_mono_8k.wav", dict(sample_frequency=8000, window_type="povey", num_mel_bins=23, dither=0.0,
                                         frame_length=25, frame_shift=10, low_freq=64, high_freq=-200,
                                         preemphasis_coefficient=0.5, round_to_power_of_two=False)),
    "hamming_nodc": ("f32_mono_16k.wav", dict(sample_frequency=16000, window_type="hamming", num_mel_bins=40,
                                               dither=0.0, frame_length=20, frame_shift=7, remove_dc_offset=False,
                                               preemphasis_coefficient=0.0, high_freq=6000)),
}


SUB = (slice(None), slice(None), slice(0, None, 4), slice(0, None, 3))


def put(h5, name, data):
    return h5.create_dataset(name, data=data, compression="gzip", compression_opts=9, shuffle=True)


def main(out_path):
    os.makedirs(FIX_DIR, exist_ok=True)
    files = make_files()
    with h5py.File(out_path, "w") as h5:
        for name, (blob, truth, rate) in files.items():
            path = os.path.join(FIX_DIR, name)
            with open(path, "wb") as f:
                f.write(blob)
            wav, sr = torchaudio.load(path)
            assert sr == rate and tuple(wav.shape) == truth.shape, (name, sr, wav.shape)
            d = np.abs(wav.numpy().astype(np.float64) - truth).max()
            tol = 2.0 ** -23 if ("f32" in name or "f64" in name or "s32" in name) else 0.0   # sox rounds these
            assert d <= tol, (name, d)
            print(f"{name}: {truth.shape[0]} ch x {truth.shape[1]} @ {rate} Hz, {len(blob)} bytes, "
                  f"torchaudio.load max diff {d:.3g}")
            g = h5.create_group(f"wav/{name}")
            if not name.startswith("long"):   # the long file is checked through the pipeline
                put(g, "samples", truth.astype(np.float32))
            g.attrs["rate"], g.attrs["channels"], g.attrs["frames"] = rate, truth.shape[0], truth.shape[1]
            if rate != 16000:
                r = torchaudio.functional.resample(torch.from_numpy(truth), orig_freq=rate, new_freq=16000)
                put(h5, f"resample/{name}", r.numpy().astype(np.float32))

        for vname, (fname, kw) in FBANK_VARIANTS.items():
            x = torch.from_numpy(files[fname][1][:1].copy())
            f64 = torchaudio.compliance.kaldi.fbank(x.double(), **kw).numpy()
            f32 = torchaudio.compliance.kaldi.fbank(x, **kw).numpy()
            ds = put(h5, f"fbank/{vname}", f64)
            if vname == "imagebind":
                put(h5, f"fbank/{vname}_f32", f32.astype(np.float32))
            ds.attrs["file"] = fname
            for k, v in kw.items():
                ds.attrs[k] = v
            print(f"fbank {vname}: {f64.shape}, float32 vs float64 max abs {np.abs(f32 - f64).max():.3g}")

        ns = sorted(set([0, 1, 399, 400, 31999, 32000, 32001, 32002, 35200, 48000, 80000, 80001, 96000, 96001,
                         160000, 160003, 479999, 1234567]
                        + [int(v) for v in RNG.integers(32000, 2_000_000, 600)]))
        starts, ends = [], []
        for n in ns:
            pts = clip_timepoints(ConstantClipsPerVideoSampler(2, 3), n / 16000)
            assert len(pts) == 3
            starts.append([int(s * 16000) for s, _ in pts])
            ends.append([min(int(e * 16000), n) for _, e in pts])
        put(h5, "clips/n", np.array(ns, dtype=np.int64))
        put(h5, "clips/start", np.array(starts, dtype=np.int64))
        put(h5, "clips/end", np.array(ends, dtype=np.int64))

        for name in ["long_u8_stereo_16k.wav", "f32_mono_16k.wav", "s16_stereo_44k.wav"]:
            path = os.path.join(FIX_DIR, name)
            a = imagebind_audio(path).numpy()
            b = imagebind_audio(path, inplace=False).numpy()
            c = imagebind_audio(path, mono=True).numpy()
            assert a.shape == (3, 1, 128, 204)
            put(h5, f"imagebind/{name}", a[SUB].astype(np.float32))
            put(h5, f"imagebind_noinplace/{name}", b[SUB].astype(np.float32))
            if name != "f32_mono_16k.wav":
                put(h5, f"imagebind_mono/{name}", c[SUB].astype(np.float32))
            print(f"imagebind {name}: in-place vs out-of-place max abs {np.abs(a - b).max():.3g}, "
                  f"channel 0 vs mono mix {np.abs(a - c).max():.3g}")
    print("wrote", out_path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/audio.h5")
