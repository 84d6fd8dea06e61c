#!/usr/bin/python3
"""bench/bench_sam_torch.py — the PyTorch side of bench/run_sam.sh.

The SAM mask decoder of bench/bench_sam.c in PyTorch float32 on the CPU: the
MaskDecoder module of tests/ref/sam_decoder_ref.py (segment-anything's module
tree and semantics, imported from there and built in float32) at the real
sizes (dim 256, 64x64 grid, depth 2, 8 heads, MLP 2048, downsample 2, 4 mask
tokens, IoU head 256), followed by segment-anything's postprocess_masks
(bilinear 256 -> 1024, crop to the resized image, bilinear to the original
size), as tests/ref/sam_post_ref.py writes it.

Trainable as the C side's "anyref" preset: mask_tokens, output_upscaling.*,
output_hypernetworks_mlps.* have requires_grad, every other parameter is
frozen; the sparse prompt embeddings have requires_grad too, the image
embedding does not. One step, timed as on the C side:
    zero the grads (set to None); masks, iou = decoder(...); out = postprocess(masks[:, 0:1]);
    out.backward(g)      (g: a fixed random upstream gradient at the original size)
As in SAM, the forward also runs hypernetwork MLPs 1..3 and the IoU head
(the C side computes the IoU head and skips MLPs 1..3, whose gradient is zero).

Output ('#' lines describe the run):
    step=<i> ms=.. fwd_ms=.. bwd_ms=..
    result side=torch prompts=P step_ms=.. step_ms_best=.. fwd_ms=.. bwd_ms=.. reps=.. warmup=.. peak_rss_mib=..

    /usr/bin/python3 bench/bench_sam_torch.py [--threads 2] [--prompts 1] [--reps 5] [--warmup 1] [--orig 480x640]
Run it through bench/run_sam.sh, which picks the environment PyTorch is fastest with.
"""
import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import sam_decoder_ref  # noqa: E402  (sets the default dtype to float64 on import)

torch.set_default_dtype(torch.float32)
f32 = torch.float32
ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES", "MKL_", "DNNL_")
TRAINABLE = ("mask_tokens.", "output_upscaling.", "output_hypernetworks_mlps.")   # the "anyref" preset


def preprocess_shape(oldh, oldw, long_side):
    """ResizeLongestSide.get_preprocess_shape."""
    scale = long_side * 1.0 / max(oldh, oldw)
    return int(oldh * scale + 0.5), int(oldw * scale + 0.5)


def postprocess(masks, input_size, original_size, S):
    """Sam.postprocess_masks."""
    x = F.interpolate(masks, (S, S), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def blas_path():
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libblas.so" in line or "libopenblas" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--orig", default="480x640", help="original image size HxW")
    a = ap.parse_args()
    H0, W0 = (int(v) for v in a.orig.split("x"))
    if a.prompts < 1 or a.reps < 1 or a.warmup < 0 or H0 < 1 or W0 < 1:
        sys.exit("bench_sam_torch: need --prompts >= 1, --reps >= 1, --warmup >= 0, a positive --orig")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = dict(dim=256, depth=2, heads=8, mlp_dim=2048, downsample=2, num_mask_tokens=4, iou_hidden=256,
             H=64, W=64, n_sparse=1)
    P, C, H, W, S = a.prompts, c["dim"], c["H"], c["W"], 1024
    rh, rw = preprocess_shape(H0, W0, S)

    print("# torch.version=%s" % torch.__version__)
    print("# torch.threads=%d" % torch.get_num_threads())
    print("# torch.blas=%s" % blas_path())
    cap = [l.split(":", 1)[1].strip() for l in torch.__config__.show().splitlines()
           if "CPU capability usage" in l]
    print("# torch.cpu_capability=%s" % (cap[0] if cap else "unknown"))
    keys = {"OPENBLAS_CORETYPE", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT",
            "LD_LIBRARY_PATH", "LD_PRELOAD"}
    keys.update(k for k in os.environ if k.startswith(ENV_PREFIXES))
    for key in sorted(keys):
        print("# env.%s=%s" % (key, os.environ.get(key, "(unset)")))

    m = sam_decoder_ref.MaskDecoder(c).to(f32)
    for name, p in m.named_parameters():
        p.requires_grad_(name.startswith(TRAINABLE))
    trainable = [p for p in m.parameters() if p.requires_grad]
    print("# sam.params_total=%d" % sum(p.numel() for p in m.parameters()))
    print("# sam.params_trainable=%d" % sum(p.numel() for p in trainable))
    print("# sam.orig=%dx%d resized=%dx%d" % (H0, W0, rh, rw))
    sys.stdout.flush()

    gen = torch.Generator().manual_seed(42)
    image = torch.randn(1, C, H, W, generator=gen, dtype=f32)
    pe = torch.rand(1, C, H, W, generator=gen, dtype=f32) * 2 - 1
    dense = (0.5 * torch.randn(1, C, 1, 1, generator=gen, dtype=f32)).expand(1, C, H, W).contiguous()
    sparse = torch.randn(P, c["n_sparse"], C, generator=gen, dtype=f32).requires_grad_(True)
    g = torch.randn(P, 1, H0, W0, generator=gen, dtype=f32)

    step_t, fwd_t, bwd_t = [], [], []
    for s in range(a.warmup + a.reps):
        t0 = time.perf_counter()
        for p in trainable:
            p.grad = None
        sparse.grad = None
        masks, iou = m(image, pe, sparse, dense)
        out = postprocess(masks, (rh, rw), (H0, W0), S)
        t1 = time.perf_counter()
        out.backward(g)
        t2 = time.perf_counter()
        if not bool(torch.isfinite(sparse.grad).all()):
            sys.exit("bench_sam_torch: non-finite gradient at step %d" % (s + 1))
        if s >= a.warmup:
            step_t.append(t2 - t0); fwd_t.append(t1 - t0); bwd_t.append(t2 - t1)
        print("step=%d%s ms=%.1f fwd_ms=%.1f bwd_ms=%.1f" % (s + 1, "(warmup)" if s < a.warmup else "",
              1e3 * (t2 - t0), 1e3 * (t1 - t0), 1e3 * (t2 - t1)), flush=True)
    print("result side=torch prompts=%d step_ms=%.1f step_ms_best=%.1f fwd_ms=%.1f bwd_ms=%.1f reps=%d warmup=%d "
          "peak_rss_mib=%.0f" % (P, 1e3 * statistics.median(step_t), 1e3 * min(step_t),
                                 1e3 * statistics.median(fwd_t), 1e3 * statistics.median(bwd_t),
                                 a.reps, a.warmup, peak_rss_mib()), flush=True)


if __name__ == "__main__":
    main()
