#!/usr/bin/python3
"""bench/bench_encoders_torch.py — the PyTorch side of bench/run_encoders.sh.

The two frozen image encoders of bench/bench_encoders.c as float32 nn.Modules on
the CPU, forward under torch.no_grad():

  sam_b   segment-anything's ImageEncoderViT at ViT-B (1024 x 1024 input, patch
          16, width 768, 12 blocks of 12 heads, MLP 3072, window 14, global
          attention in blocks 2, 5, 8, 11, decomposed relative positions, neck
          to 256 channels); written here from the semantics of
          segment_anything/modeling/image_encoder.py (window_partition with
          zero padding, Attention with add_decomposed_rel_pos in its matmul
          form, LayerNorm eps 1e-6, exact GELU, LayerNorm2d neck);
  clip_l  Hugging Face's CLIPVisionModel at openai/clip-vit-large-patch14
          (224 x 224, patch 14, width 1024, 16 heads, MLP 4096, quick-GELU,
          eager attention as CLIPAttention computes it), run as the C tower
          runs it for LLaVA's select_layer -2: the embeddings, pre_layrnorm
          and the first 23 of the 24 layers, CLS dropped. (LLaVA's
          CLIPVisionTower calls the HF model with output_hidden_states=True,
          which also runs layer 24, 1/23 more work; neither side does here.)

The repository's references (tests/ref/sam_image_encoder_ref.py,
tests/ref/clip_ref.py) state the same semantics in float64 plain tensor code
at fixed tiny sizes (a Python loop over windows, module-level shape
constants), so they cannot be timed at the real sizes; --selftest instead runs
these modules on the weights and inputs of their committed fixtures
(tests/fixtures/sam_image_encoder.h5 config a: padding and a global block;
tests/fixtures/clip.h5: every hidden state) and checks that the float32 outputs
match the float64 references.

Output ('#' lines describe the run):
    step=<i> ms=..
    result side=torch model=<m> batch=B step_ms=.. fwd_ms_best=.. images_per_s=.. reps=.. warmup=.. peak_rss_mib=..
step_ms is the median forward time of the batch over the timed forwards.

    /usr/bin/python3 bench/bench_encoders_torch.py [--model sam_b|clip_l] [--batch 1] [--threads 2]
                                                   [--reps 3] [--warmup 1] [--dtype fp32|bf16] [--selftest]
Run it through bench/run_encoders.sh, which picks the environment PyTorch is fastest with.
"""
import argparse
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MALLOC_", "GLIBC_TUNABLES", "MKL_", "DNNL_")


# ------------------------------------------------------------------ SAM image encoder (segment-anything)

class LayerNorm2d(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):                                   # [B, C, H, W], normalised over C
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - mu) / torch.sqrt(var + self.eps)) + self.bias[:, None, None]


def rel_pos_rows(q_size, k_size, table):
    """get_rel_pos: the [q_size, k_size, hd] rows of a relative-position table,
    resized linearly to 2*max(q,k)-1 rows when its length differs."""
    n = 2 * max(q_size, k_size) - 1
    if table.shape[0] != n:
        table = F.interpolate(table.t()[None], size=n, mode="linear")[0].t()
    qc = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    kc = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    return table[((qc - kc) + (k_size - 1) * max(q_size / k_size, 1.0)).long()]


class SamAttention(nn.Module):
    def __init__(self, dim, heads, size):
        super().__init__()
        self.heads, hd = heads, dim // heads
        self.scale = hd ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, hd))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, hd))

    def forward(self, x):                                   # [Bw, h, w, C]
        Bw, h, w, C = x.shape
        qkv = self.qkv(x).reshape(Bw, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, Bw * self.heads, h * w, -1).unbind(0)
        logits = (q * self.scale) @ k.transpose(-2, -1)     # [Bw*heads, hw, hw]
        # decomposed relative positions (add_decomposed_rel_pos), with the unscaled q
        Rh = rel_pos_rows(h, h, self.rel_pos_h)             # [h, h, hd]
        Rw = rel_pos_rows(w, w, self.rel_pos_w)             # [w, w, hd]
        qg = q.reshape(Bw * self.heads, h, w, -1)
        by_row = qg @ Rh.transpose(1, 2)                    # [.., y, x, key row]
        by_col = (qg.transpose(1, 2) @ Rw.transpose(1, 2)).transpose(1, 2)   # [.., y, x, key col]
        logits = (logits.view(-1, h, w, h, w) + by_row[..., :, None] + by_col[..., None, :]).view(-1, h * w, h * w)
        o = logits.softmax(dim=-1) @ v
        o = o.view(Bw, self.heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(Bw, h, w, C)
        return self.proj(o)


class MLPBlock(nn.Module):
    def __init__(self, dim, mlp):
        super().__init__()
        self.lin1 = nn.Linear(dim, mlp)
        self.lin2 = nn.Linear(mlp, dim)

    def forward(self, x):
        return self.lin2(F.gelu(self.lin1(x)))


class SamBlock(nn.Module):
    def __init__(self, dim, heads, mlp, window, grid):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SamAttention(dim, heads, window if window > 0 else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, mlp)
        self.window = window

    def forward(self, x):                                   # [B, G, G, C]
        y = self.norm1(x)
        ws = self.window
        if ws > 0:                                          # window_partition: zero-pad bottom/right, cut
            B, H, W, C = y.shape
            ph, pw = (ws - H % ws) % ws, (ws - W % ws) % ws
            y = F.pad(y, (0, 0, 0, pw, 0, ph))
            Hp, Wp = H + ph, W + pw
            y = y.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)
        y = self.attn(y)
        if ws > 0:                                          # window_unpartition and crop
            y = y.view(B, Hp // ws, Wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).contiguous().view(B, Hp, Wp, -1)
            y = y[:, :H, :W, :].contiguous()
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, cin, dim):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).permute(0, 2, 3, 1)


class SamImageEncoder(nn.Module):
    """ImageEncoderViT; parameter names as in SAM checkpoints without the 'image_encoder.' prefix."""

    def __init__(self, img_size=1024, patch=16, dim=768, depth=12, heads=12, mlp=3072, out_chans=256, window=14,
                 global_blocks=(2, 5, 8, 11)):
        super().__init__()
        G = img_size // patch
        self.patch_embed = PatchEmbed(patch, 3, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, G, G, dim))
        self.blocks = nn.ModuleList(SamBlock(dim, heads, mlp, 0 if i in global_blocks else window, G)
                                    for i in range(depth))
        self.neck = nn.Sequential(nn.Conv2d(dim, out_chans, 1, bias=False), LayerNorm2d(out_chans),
                                  nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans))

    def forward(self, x):
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


# ------------------------------------------------------------------ CLIP vision tower (HF CLIPVisionModel)

class ClipAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads, self.hd = heads, width // heads
        self.scale = self.hd ** -0.5
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):                                   # [N, T, W]
        N, T, W = x.shape

        def heads(t):
            return t.view(N, T, self.heads, self.hd).transpose(1, 2).reshape(N * self.heads, T, self.hd)
        q = heads(self.q_proj(x) * self.scale)
        k, v = heads(self.k_proj(x)), heads(self.v_proj(x))
        p = torch.bmm(q, k.transpose(1, 2)).softmax(dim=-1)
        o = torch.bmm(p, v).view(N, self.heads, T, self.hd).transpose(1, 2).reshape(N, T, W)
        return self.out_proj(o)


class ClipMLP(nn.Module):
    def __init__(self, width, mlp, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(width, mlp), nn.Linear(mlp, width), act

    def forward(self, x):
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.act == "quick_gelu" else F.gelu(h)
        return self.fc2(h)


class ClipLayer(nn.Module):
    def __init__(self, width, heads, mlp, eps, act):
        super().__init__()
        self.self_attn = ClipAttention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.mlp = ClipMLP(width, mlp, act)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, image, patch, width):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.position_embedding = nn.Embedding((image // patch) ** 2 + 1, width)

    def forward(self, px):
        pe = self.patch_embedding(px).flatten(2).transpose(1, 2)          # [N, g*g, W]
        cls = self.class_embedding.expand(px.shape[0], 1, -1)
        return torch.cat([cls, pe], dim=1) + self.position_embedding.weight[None]


class ClipVisionTower(nn.Module):
    """CLIPVisionTransformer's module tree (names as under 'vision_model.'); forward returns
    hidden_states[select_layer] without CLS, running only the layers that needs."""

    def __init__(self, image=224, patch=14, width=1024, layers=24, heads=16, mlp=4096, eps=1e-5,
                 act="quick_gelu", select_layer=-2):
        super().__init__()
        self.embeddings = ClipEmbeddings(image, patch, width)
        self.pre_layrnorm = nn.LayerNorm(width, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(ClipLayer(width, heads, mlp, eps, act) for _ in range(layers))
        self.post_layernorm = nn.LayerNorm(width, eps=eps)   # in every checkpoint; LLaVA does not use it
        self.n_run = select_layer if select_layer >= 0 else layers + 1 + select_layer

    def forward(self, px, keep_cls=False):
        x = self.pre_layrnorm(self.embeddings(px))
        for layer in self.encoder.layers[: self.n_run]:
            x = layer(x)
        return x if keep_cls else x[:, 1:]


# ------------------------------------------------------------------ self-test against the committed fixtures

def selftest():
    import h5py
    fx = os.path.join(HERE, "..", "tests", "fixtures")
    worst = 0.0
    with h5py.File(os.path.join(fx, "sam_image_encoder.h5"), "r") as f:
        a = {k: int(f.attrs["a." + k]) for k in ("img_size", "patch", "dim", "depth", "heads", "mlp_dim",
                                                  "out_chans", "window", "global_mask")}
        m = SamImageEncoder(a["img_size"], a["patch"], a["dim"], a["depth"], a["heads"], a["mlp_dim"], a["out_chans"],
                            a["window"], tuple(l for l in range(a["depth"]) if a["global_mask"] >> l & 1))
        sd = {k: torch.from_numpy(f["a_params/image_encoder." + k][()]) for k in m.state_dict()}
        m.load_state_dict(sd)
        with torch.no_grad():
            out = m(torch.from_numpy(f["a/image"][()]))
        ref = torch.from_numpy(f["a/out"][()])
        err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
        print("# selftest sam_image_encoder (fixture config a, %s): max abs err / max |ref| = %.2e"
              % (tuple(out.shape), err))
        worst = max(worst, err)
    with h5py.File(os.path.join(fx, "clip.h5"), "r") as f:
        A = {k: f.attrs[k] for k in ("image_size", "patch", "width", "layers", "heads", "mlp_dim", "eps")}
        hidden = torch.from_numpy(f["quick_gelu/hidden"][()])                # [L+1, N, T, W]
        pfx = "params/model.vision_tower.vision_tower.vision_model."
        for sel in (-1, -2):
            m = ClipVisionTower(int(A["image_size"]), int(A["patch"]), int(A["width"]), int(A["layers"]),
                                int(A["heads"]), int(A["mlp_dim"]), float(A["eps"]), "quick_gelu", sel)
            m.load_state_dict({k: torch.from_numpy(f[pfx + k][()]).float() for k in m.state_dict()})
            with torch.no_grad():
                out = m(torch.from_numpy(f["pixels"][()]).float())
            ref = hidden[sel][:, 1:]
            err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
            print("# selftest clip_vit select_layer %d (%s): max abs err / max |ref| = %.2e" % (sel, tuple(out.shape), err))
            worst = max(worst, err)
    ok = worst < 1e-4
    print("selftest %s (worst %.2e, bound 1e-4)" % ("passed" if ok else "FAILED", worst))
    return 0 if ok else 1


# ------------------------------------------------------------------ timing

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
    ap.add_argument("--model", default="sam_b", choices=("sam_b", "clip_l"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                    help="bf16: the module and the image in bfloat16 (every product bf16, as anyref's "
                         "--frozen-bf16 with ANYREF_GEMM=bf16 is compared against)")
    ap.add_argument("--selftest", action="store_true", help="check the modules against the committed fixtures")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.selftest:
        sys.exit(selftest())
    if a.batch < 1 or a.reps < 1 or a.warmup < 0:
        sys.exit("bench_encoders_torch: need --batch >= 1, --reps >= 1, --warmup >= 0")
    torch.manual_seed(0)

    print("# torch.version=%s" % torch.__version__)
    print("# torch.threads=%d" % torch.get_num_threads())
    print("# torch.blas=%s" % blas_path())
    cap = [l.split(":", 1)[1].strip() for l in torch.__config__.show().splitlines() if "CPU capability usage" in l]
    print("# torch.cpu_capability=%s" % (cap[0] if cap else "unknown"))
    keys = {"OPENBLAS_CORETYPE", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "LD_LIBRARY_PATH", "LD_PRELOAD"}
    keys.update(k for k in os.environ if k.startswith(ENV_PREFIXES))
    for key in sorted(keys):
        print("# env.%s=%s" % (key, os.environ.get(key, "(unset)")))

    if a.model == "sam_b":
        m, S = SamImageEncoder(), 1024
        with torch.no_grad():               # non-zero relative-position tables, as trained ones are
            for blk in m.blocks:
                blk.attn.rel_pos_h.normal_(0, 0.02)
                blk.attn.rel_pos_w.normal_(0, 0.02)
            m.pos_embed.normal_(0, 0.02)
    else:
        m, S = ClipVisionTower(), 224
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    m = m.to(dt).eval()
    print("# enc.dtype=%s" % a.dtype)
    for p in m.parameters():
        p.requires_grad_(False)
    print("# enc.params=%d" % sum(p.numel() for p in m.parameters()))
    sys.stdout.flush()
    x = torch.randn(a.batch, 3, S, S, generator=torch.Generator().manual_seed(42)).to(dt)

    times = []
    with torch.no_grad():
        for s in range(a.warmup + a.reps):
            t0 = time.perf_counter()
            out = m(x)
            t = time.perf_counter() - t0
            if s >= a.warmup:
                times.append(t)
            print("step=%d%s ms=%.1f" % (s + 1, "(warmup)" if s < a.warmup else "", 1e3 * t), flush=True)
    rms = out.double().pow(2).mean().sqrt().item()
    if not math.isfinite(rms):
        sys.exit("bench_encoders_torch: non-finite output")
    print("# enc.out_shape=%s\n# enc.out_rms=%.4g" % ("x".join(map(str, out.shape)), rms))
    med = statistics.median(times)
    print("result side=torch model=%s batch=%d step_ms=%.1f fwd_ms_best=%.1f images_per_s=%.4g reps=%d warmup=%d "
          "peak_rss_mib=%.0f" % (a.model, a.batch, 1e3 * med, 1e3 * min(times), a.batch / med, a.reps, a.warmup,
                                 peak_rss_mib()), flush=True)


if __name__ == "__main__":
    main()
