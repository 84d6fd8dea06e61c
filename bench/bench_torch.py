#!/usr/bin/python3
"""bench/bench_torch.py — the PyTorch side of `make bench`.

Times the same kernels on the same shapes as bench/bench_kernels.c, in float32
on the CPU: the forward, and forward+backward through autograd with a random
upstream gradient (requires_grad on exactly the tensors whose gradients the C
bench asks its backward for). Same timing method as the C side: warm-up, then
the median of several repetitions (best-of for the sgemm rows). Gradients are
reset to None outside the timed region, as zero_grad(set_to_none=True) does.

Output, one line per case, the same format as the C bench:
    kernel=<name> shape=<shape> fwd_ms=<ms> fwdbwd_ms=<ms|-> reps=<n>
and '# key=value' lines describing the run (versions, threads, settings).

    /usr/bin/python3 bench/bench_torch.py [--threads 2] [--probe] [--only NAME[,NAME]]
Run it through bench/run.sh, which picks the environment (BLAS build, OpenMP
wait policy, malloc tuning) PyTorch is fastest with.
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

TARGET_S = 0.6      # aim for this much measured time per case
MIN_REPS, MAX_REPS = 5, 50
WARMUP = 2


def sync_time():
    return time.perf_counter()


def median_ms(fn, setup=None):
    """Warm up, then the median wall time of fn() in ms; setup() runs untimed before each call."""
    for _ in range(WARMUP):
        if setup:
            setup()
        fn()
    if setup:
        setup()
    t0 = sync_time(); fn(); first = sync_time() - t0
    reps = int(min(MAX_REPS, max(MIN_REPS, TARGET_S / max(first, 1e-6))))
    times = []
    for _ in range(reps):
        if setup:
            setup()
        t0 = sync_time()
        fn()
        times.append(sync_time() - t0)
    return statistics.median(times) * 1e3, reps


def best_ms(fn, target_s=1.0):
    """Warm up, then the best wall time of fn() in ms (for the sgemm ceiling rows)."""
    fn()
    t0 = sync_time(); fn(); first = sync_time() - t0
    reps = int(min(20, max(3, target_s / max(first, 1e-6))))
    best = first
    for _ in range(reps):
        t0 = sync_time(); fn(); best = min(best, sync_time() - t0)
    return best * 1e3, reps


def rnd(*shape, scale=1.0, grad=False):
    t = torch.randn(*shape, dtype=torch.float32) * scale
    return t.requires_grad_(grad)


ONLY = set()        # kernel names to run (empty: all)


def wanted(kernel):
    return not ONLY or kernel in ONLY


def emit(kernel, shape, fwd_ms, fwdbwd_ms, reps):
    fb = "-" if fwdbwd_ms is None else "%.4f" % fwdbwd_ms
    print("kernel=%s shape=%s fwd_ms=%.4f fwdbwd_ms=%s reps=%d" % (kernel, shape, fwd_ms, fb, reps),
          flush=True)


def case(kernel, shape, fwd, leaves, out_shape=None):
    """Times fwd() and fwd()+backward(upstream). leaves: the tensors with requires_grad."""
    if not wanted(kernel):
        return
    fwd_ms, reps = median_ms(fwd)
    probe = fwd()
    if probe.dim() == 0:
        upstream = torch.tensor(0.7, dtype=torch.float32)
    else:
        upstream = torch.randn_like(probe)
    del probe

    def reset():
        for t in leaves:
            t.grad = None

    def fwdbwd():
        fwd().backward(upstream)

    fb_ms, reps2 = median_ms(fwdbwd, setup=reset)
    reset()
    emit(kernel, shape, fwd_ms, fb_ms, min(reps, reps2))


# --------------------------------------------------------------------------
# The cases: shapes must stay identical to bench/bench_kernels.c
# --------------------------------------------------------------------------
SGEMM_SHAPES = [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048),
                (512, 4096, 4096), (512, 11008, 4096), (512, 32000, 1024)]


def bench_sgemm():
    if not wanted("sgemm"):
        return
    for M, N, K in SGEMM_SHAPES:
        A, B = rnd(M, K), rnd(K, N)
        C = torch.empty(M, N)
        ms, reps = best_ms(lambda: torch.mm(A, B, out=C))
        emit("sgemm", "%dx%dx%d" % (M, N, K), ms, None, reps)


def bench_matmul():
    M, N, K = 512, 1024, 1024
    A, B = rnd(M, K, grad=True), rnd(K, N, grad=True)
    case("matmul", "%dx%dx%d" % (M, N, K), lambda: A @ B, [A, B])


def bench_linear():
    for N, IN, OUT, bias in [(512, 1024, 1024, True), (512, 1024, 4096, True),
                             (512, 1024, 32000, False)]:
        x = rnd(N, IN, grad=True)
        w = rnd(OUT, IN, scale=IN ** -0.5, grad=True)
        b = rnd(OUT, grad=True) if bias else None
        leaves = [x, w] + ([b] if bias else [])
        case("linear", "%dx%d->%d%s" % (N, IN, OUT, "" if bias else "_nobias"),
             lambda: F.linear(x, w, b), leaves)


def bench_lora():
    N, IN, OUT, R, p, scale = 512, 1024, 1024, 8, 0.05, 2.0
    x = rnd(N, IN, grad=True)
    w = rnd(OUT, IN, scale=IN ** -0.5)              # frozen base weight
    A = rnd(R, IN, scale=IN ** -0.5, grad=True)
    B = rnd(OUT, R, scale=0.01, grad=True)
    mask = (torch.rand(N, IN) >= p).float() / (1 - p)  # the dropout mask, drawn outside as in C
    case("lora", "%dx%d->%d_r%d" % (N, IN, OUT, R),
         lambda: F.linear(x, w) + scale * F.linear(F.linear(x * mask, A), B), [x, A, B])


def bench_embedding():
    N, D, V = 512, 1024, 32000
    ids = torch.randint(0, V, (N,))
    table = rnd(V, D, scale=0.02, grad=True)
    case("embedding", "%dx%d_V%d" % (N, D, V), lambda: F.embedding(ids, table), [table])


def bench_norms():
    N, D = 512, 1024
    x = rnd(N, D, grad=True)
    w = (1 + 0.1 * torch.randn(D)).requires_grad_(True)
    b = rnd(D, scale=0.1, grad=True)

    def rms():  # LLaMA's LlamaRMSNorm
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + 1e-6))
    case("rmsnorm", "%dx%d" % (N, D), rms, [x, w])
    case("layernorm", "%dx%d" % (N, D), lambda: F.layer_norm(x, (D,), w, b, 1e-5), [x, w, b])

    B_, C, H, W = 1, 256, 64, 64
    x2 = rnd(B_, C, H, W, grad=True)
    w2 = (1 + 0.1 * torch.randn(C)).requires_grad_(True)
    b2 = rnd(C, scale=0.1, grad=True)

    def ln2d():  # segment_anything.modeling.common.LayerNorm2d
        u = x2.mean(1, keepdim=True)
        s = (x2 - u).pow(2).mean(1, keepdim=True)
        y = (x2 - u) / torch.sqrt(s + 1e-6)
        return w2[:, None, None] * y + b2[:, None, None]
    case("layernorm2d", "%dx%dx%dx%d" % (B_, C, H, W), ln2d, [x2, w2, b2])


def bench_rope():
    N, H, hd, theta = 512, 8, 128, 10000.0
    x = rnd(N, H, hd, grad=True)
    # cos/sin tables are cached by HF's LlamaRotaryEmbedding, so they are built outside the timing
    inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
    f = torch.outer(torch.arange(N).float(), inv)
    emb = torch.cat((f, f), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]

    def rope():  # HF apply_rotary_pos_emb
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin
    case("rope", "%dx%dx%d" % (N, H, hd), rope, [x])


def bench_attention():
    B, T, S, H, hd = 1, 512, 512, 8, 128
    q, k, v = (rnd(B, T, H, hd, grad=True) for _ in range(3))
    scale = 1.0 / math.sqrt(hd)
    # additive causal mask, built once outside the timing as HF does per batch
    mask = torch.full((T, S), float("-inf")).triu(1 + S - T)

    def attn():  # HF LlamaAttention (eager)
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        w = torch.matmul(qh, kh.transpose(2, 3)) * scale + mask
        w = torch.softmax(w, dim=-1)
        return torch.matmul(w, vh).transpose(1, 2).contiguous()
    case("attention", "B%d_T%d_S%d_H%d_hd%d_causal" % (B, T, S, H, hd), attn, [q, k, v])

    N, C = 4096, 512
    x = rnd(N, C, grad=True)
    case("softmax", "%dx%d" % (N, C), lambda: torch.softmax(x, dim=-1), [x])


def bench_elementwise():
    N, D = 512, 4096
    shape = "%dx%d" % (N, D)
    x = rnd(N, D, grad=True)
    case("silu", shape, lambda: F.silu(x), [x])
    case("gelu", shape, lambda: F.gelu(x), [x])
    case("quick_gelu", shape, lambda: x * torch.sigmoid(1.702 * x), [x])  # HF QuickGELUActivation
    case("relu", shape, lambda: F.relu(x), [x])
    g, u = rnd(N, D, grad=True), rnd(N, D, grad=True)
    case("swiglu", shape, lambda: F.silu(g) * u, [g, u])
    case("add", shape, lambda: g + u, [g, u])


def bench_losses():
    N, V = 512, 32000
    logits = rnd(N, V, grad=True)
    targets = torch.randint(0, V, (N,))
    targets[:64] = -100  # prompt tokens are ignored
    case("softmax_xent", "%dx%d" % (N, V),
         lambda: F.cross_entropy(logits, targets, ignore_index=-100), [logits])

    H = W = 1024
    x = rnd(H * W, scale=3.0, grad=True)
    y = (torch.rand(H * W) > 0.7).float()
    case("bce", "%dx%d" % (H, W), lambda: F.binary_cross_entropy_with_logits(x, y), [x])

    def dice():  # LISA/AnyRef dice_loss (scale 1000, eps 1e-6)
        s = x.sigmoid()
        return 1 - (2 * (s / 1000 * y).sum() + 1e-6) / ((s / 1000).sum() + (y / 1000).sum() + 1e-6)
    case("dice", "%dx%d" % (H, W), dice, [x])


def roi_boxes(K, img):
    """Deterministic boxes, the same formula as the C bench."""
    rows = []
    for k in range(K):
        x1, y1 = float(k * 37 % (img // 2)), float(k * 53 % (img // 2))
        w, h = float(32 + k * 29 % 80), float(32 + k * 41 % 80)
        rows.append([0.0, x1, y1, x1 + w, y1 + h])
    return torch.tensor(rows, dtype=torch.float32)


def bench_vision():
    from torchvision.ops import roi_align
    C, Hin, Win, Hout, Wout = 1, 256, 256, 1024, 1024
    x = rnd(1, C, Hin, Win, grad=True)
    case("resize_bilinear", "%dx%dx%d->%dx%d" % (C, Hin, Win, Hout, Wout),
         lambda: F.interpolate(x, size=(Hout, Wout), mode="bilinear", align_corners=False), [x])

    B, Cin, Cout, H, W = 1, 256, 64, 64, 64
    x = rnd(B, Cin, H, W, grad=True)
    w = rnd(Cin, Cout, 2, 2, scale=(Cin * 4) ** -0.5, grad=True)
    b = rnd(Cout, grad=True)
    case("conv_transpose2x2", "%dx%dx%d->%dx%dx%d" % (Cin, H, W, Cout, 2 * H, 2 * W),
         lambda: F.conv_transpose2d(x, w, b, stride=2), [x, w, b])

    # patch embedding: the image is data, so only the weight and bias get gradients
    x = rnd(1, 3, 224, 224)
    w = rnd(768, 3, 16, 16, scale=(3 * 256) ** -0.5, grad=True)
    b = rnd(768, grad=True)
    case("conv2d", "3x224x224->768_k16s16", lambda: F.conv2d(x, w, b, stride=16), [w, b])

    x = rnd(1, 64, 64, 64, grad=True)
    w = rnd(64, 64, 3, 3, scale=(64 * 9) ** -0.5, grad=True)
    b = rnd(64, grad=True)
    case("conv2d", "64x64x64->64_k3p1", lambda: F.conv2d(x, w, b, padding=1), [x, w, b])

    Hg, Wg, Cg, K, P, img = 16, 16, 1024, 64, 2, 224
    grid = rnd(1, Hg, Wg, Cg, grad=True)           # channels-last token grid, as in C
    boxes = roi_boxes(K, img)

    def roi():
        o = roi_align(grid.permute(0, 3, 1, 2), boxes, output_size=(P, P),
                      spatial_scale=Hg / img, sampling_ratio=0, aligned=True)
        return o.permute(0, 2, 3, 1)               # [K, PH, PW, C]
    case("roi_align", "%dx%dx%d_K%d_%dx%d" % (Hg, Wg, Cg, K, P, P), roi, [grid])


def bench_refocus():
    T, S, Hq, D, p, s, lam = 512, 512, 8, 1024, 500, 400, 1.0
    hid = rnd(T, D, grad=True)
    att = torch.softmax(torch.randn(Hq, T, S), dim=-1).requires_grad_(True)

    def refocus():  # SPEC 2.5
        P = att[:, p, s:p].mean(0)
        a = P / P.sum()
        return hid[p] + lam * (a[:, None] * hid[s:p]).sum(0)
    case("refocus", "T%d_S%d_H%d_D%d_span%d" % (T, S, Hq, D, p - s), refocus, [hid, att])


def bench_adamw():
    if not wanted("adamw"):
        return
    n = 1 << 24
    best = None
    for foreach in (False, True):
        param = torch.nn.Parameter(torch.randn(n) * 0.02)
        param.grad = torch.randn(n) * 1e-3
        opt = torch.optim.AdamW([param], lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=0.01, foreach=foreach)
        ms, reps = median_ms(opt.step)
        if best is None or ms < best[0]:
            best = (ms, reps, foreach)
    print("# torch.adamw_foreach=%s" % best[2])
    emit("adamw", "n%d" % n, best[0], None, best[1])


GROUPS = [bench_sgemm, bench_matmul, bench_linear, bench_lora, bench_embedding, bench_norms,
          bench_rope, bench_attention, bench_elementwise, bench_losses, bench_vision,
          bench_refocus, bench_adamw]
# run.sh compares candidate environments on these (GEMM-bound and small memory-bound ops)
PROBE = ("matmul", "attention", "rmsnorm", "layernorm2d", "softmax", "silu", "add",
         "conv_transpose2x2", "conv2d")


# every variable with one of these prefixes is printed in the header
ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES", "MKL_", "DNNL_")


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
    global TARGET_S
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe", action="store_true",
                    help="only a few representative groups (run.sh uses it to pick settings)")
    ap.add_argument("--only", default="", help="comma-separated kernel names")
    ap.add_argument("--target", type=float, default=TARGET_S,
                    help="seconds of measured time to aim for per case")
    args = ap.parse_args()
    TARGET_S = args.target
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ONLY.update(filter(None, args.only.split(",")))
    if args.probe:
        ONLY.clear()
        ONLY.update(PROBE)
        TARGET_S = min(TARGET_S, 0.2)

    print("# torch.version=%s" % torch.__version__)
    try:
        import torchvision
        print("# torchvision.version=%s" % torchvision.__version__)
    except ImportError:
        print("# torchvision.version=(missing)")
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
    sys.stdout.flush()
    t0 = time.perf_counter()
    for fn in GROUPS:
        fn()
    print("# torch.total_s=%.1f" % (time.perf_counter() - t0))


if __name__ == "__main__":
    main()
