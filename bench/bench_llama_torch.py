#!/usr/bin/python3
"""bench/bench_llama_torch.py — the PyTorch side of bench/run_llama.sh.

The model of bench/bench_llama.c in PyTorch float32 on the CPU, written like
tests/ref/llama_ref.py (Hugging Face modeling_llama semantics: LlamaRMSNorm,
rotate-half RoPE with cached cos/sin, eager attention with an additive causal
mask, SiLU(gate) * up, final norm, untied lm_head) with PEFT-style LoRA
(lora_B(lora_A(dropout(x))) * alpha / r, a fresh dropout mask per call) on
q_proj and v_proj. The base weights and norms are frozen (requires_grad
False); embed_tokens, lm_head and the LoRA matrices train with
torch.optim.AdamW after clip_grad_norm_(1.0), as the C side's optim_step does.

One training step, timed as on the C side (the median over the timed steps,
after warm-up steps):
    opt.zero_grad(set_to_none=True); loss = forward(); loss.backward();
    clip_grad_norm_(trainable, 1.0); opt.step()

Output ('#' lines describe the run):
    step=<i> ms=.. fwd_ms=.. bwd_ms=.. opt_ms=.. loss=..
    result side=torch tokens_per_s=.. step_ms=.. fwd_ms=.. bwd_ms=.. opt_ms=.. peak_rss_mib=..
tokens_per_s and the phase times are medians over the timed steps, *_best the fastest step.

    /usr/bin/python3 bench/bench_llama_torch.py [--threads 2] [--steps 5] [--warmup 2]
        [--batch 1] [--seq 512] [--layers 12] [--dim 768] [--heads 12] [--kv-heads 12]
        [--mlp 2048] [--vocab 32000] [--rank 8] [--dtype fp32|bf16] [--adamw-foreach 0|1]
Run it through bench/run_llama.sh, which picks the environment PyTorch is fastest with.
"""
import argparse
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

f32 = torch.float32


# ---------------------------------------------------------------- the decoder (HF semantics)
# rms_norm, rotate_half and repeat_kv are tests/ref/llama_ref.py's (dtype-agnostic);
# RoPE tables in float32 and PEFT's dropout drawn in the forward are this file's.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
from llama_ref import repeat_kv, rms_norm, rotate_half  # noqa: E402


def rope_cos_sin(T, hd, theta):
    """HF LlamaRotaryEmbedding's cached tables (float32, built once outside the timing)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=f32) / hd))
    freqs = torch.outer(torch.arange(T, dtype=f32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)            # [T, hd]
    return emb.cos()[None, None], emb.sin()[None, None]


def lora_linear(x, w, A, Bm, p, scaling):
    return F.linear(x, w) + F.linear(F.linear(F.dropout(x, p, training=True), A), Bm) * scaling


def forward(P, tokens, targets, c, cos, sin, causal):
    B, T, D, H, Hkv = c["B"], c["T"], c["dim"], c["heads"], c["kv_heads"]
    hd = D // H
    eps, p = c["norm_eps"], c["lora_dropout"]
    scaling = c["lora_alpha"] / c["lora_rank"]
    x = F.embedding(tokens.view(B, T), P["model.embed_tokens.weight"])
    for l in range(c["layers"]):
        pre = "model.layers.%d." % l
        h = rms_norm(x, P[pre + "input_layernorm.weight"], eps)
        q = lora_linear(h, P[pre + "self_attn.q_proj.weight"], P[pre + "self_attn.q_proj.lora_A.weight"],
                        P[pre + "self_attn.q_proj.lora_B.weight"], p, scaling)
        k = F.linear(h, P[pre + "self_attn.k_proj.weight"])
        v = lora_linear(h, P[pre + "self_attn.v_proj.weight"], P[pre + "self_attn.v_proj.lora_A.weight"],
                        P[pre + "self_attn.v_proj.lora_B.weight"], p, scaling)
        q = q.view(B, T, H, hd).transpose(1, 2)
        k = k.view(B, T, Hkv, hd).transpose(1, 2)
        v = v.view(B, T, Hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, H // Hkv)
        v = repeat_kv(v, H // Hkv)
        s = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd) + causal
        a = torch.softmax(s, dim=-1)
        o = torch.matmul(a, v).transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(o, P[pre + "self_attn.o_proj.weight"])
        h = rms_norm(x, P[pre + "post_attention_layernorm.weight"], eps)
        m = F.silu(F.linear(h, P[pre + "mlp.gate_proj.weight"])) * F.linear(h, P[pre + "mlp.up_proj.weight"])
        x = x + F.linear(m, P[pre + "mlp.down_proj.weight"])
    x = rms_norm(x, P["model.norm.weight"], eps)
    logits = F.linear(x, P["lm_head.weight"]).reshape(B * T, c["vocab"])
    return F.cross_entropy(logits, targets, ignore_index=-100, reduction="mean")


def make_params(c):
    """Random weights with the C side's initialisers; trainable as in the AnyRef recipe."""
    D, F_, V, R = c["dim"], c["mlp_hidden"], c["vocab"], c["lora_rank"]
    kvd = c["kv_heads"] * (D // c["heads"])
    P = {}

    def normal(name, shape, train):
        P[name] = (torch.randn(*shape, dtype=f32) * 0.02).requires_grad_(train)

    def ones(name, n):
        P[name] = torch.ones(n, dtype=f32)

    normal("model.embed_tokens.weight", (V, D), True)
    for l in range(c["layers"]):
        pre = "model.layers.%d." % l
        ones(pre + "input_layernorm.weight", D)
        for name, shape in (("self_attn.q_proj", (D, D)), ("self_attn.k_proj", (kvd, D)),
                            ("self_attn.v_proj", (kvd, D)), ("self_attn.o_proj", (D, D)),
                            ("mlp.gate_proj", (F_, D)), ("mlp.up_proj", (F_, D)),
                            ("mlp.down_proj", (D, F_))):
            normal(pre + name + ".weight", shape, False)
        ones(pre + "post_attention_layernorm.weight", D)
        for name, out in (("self_attn.q_proj", D), ("self_attn.v_proj", kvd)):
            bound = 1.0 / math.sqrt(D)        # kaiming-uniform, as nn.Linear / PEFT
            P[pre + name + ".lora_A.weight"] = torch.empty(R, D).uniform_(-bound, bound).requires_grad_(True)
            P[pre + name + ".lora_B.weight"] = torch.zeros(out, R).requires_grad_(True)
    ones("model.norm.weight", D)
    normal("lm_head.weight", (V, D), True)
    return P


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=12)
    ap.add_argument("--mlp", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: every weight, activation, gradient and AdamW state in bf16 (PyTorch's fastest "
                         "bf16 set-up: its CPU bf16 matmuls are oneDNN's), the RoPE tables and mask too")
    ap.add_argument("--adamw-foreach", type=int, default=0, choices=(0, 1),
                    help="torch.optim.AdamW foreach (bench_torch.py finds 0 faster on this machine)")
    a = ap.parse_args()
    if a.steps < 1 or a.rank < 1 or a.warmup < 0:
        sys.exit("bench_llama_torch: need --steps >= 1, --rank >= 1, --warmup >= 0")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = dict(vocab=a.vocab, dim=a.dim, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads,
             mlp_hidden=a.mlp, norm_eps=1e-6, rope_theta=10000.0, lora_rank=a.rank, lora_alpha=2.0 * a.rank,
             lora_dropout=0.05, B=a.batch, T=a.seq)

    print("# torch.version=%s" % torch.__version__)
    print("# torch.threads=%d" % torch.get_num_threads())
    print("# torch.blas=%s" % blas_path())
    cap = [l.split(":", 1)[1].strip() for l in torch.__config__.show().splitlines()
           if "CPU capability usage" in l]
    print("# torch.cpu_capability=%s" % (cap[0] if cap else "unknown"))
    print("# torch.adamw_foreach=%s" % bool(a.adamw_foreach))
    keys = {"OPENBLAS_CORETYPE", "OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT",
            "LD_LIBRARY_PATH", "LD_PRELOAD"}
    keys.update(k for k in os.environ if k.startswith(ENV_PREFIXES))
    for key in sorted(keys):
        print("# env.%s=%s" % (key, os.environ.get(key, "(unset)")))

    P = make_params(c)
    if a.dtype == "bf16":
        P = {k: t.detach().to(torch.bfloat16).requires_grad_(t.requires_grad) for k, t in P.items()}
    print("# torch.dtype=%s" % a.dtype)
    trainable = [t for t in P.values() if t.requires_grad]
    print("# llama.params_total=%d" % sum(t.numel() for t in P.values()))
    print("# llama.params_trainable=%d" % sum(t.numel() for t in trainable))
    sys.stdout.flush()
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                            foreach=bool(a.adamw_foreach))
    hd = c["dim"] // c["heads"]
    cos, sin = rope_cos_sin(c["T"], hd, c["rope_theta"])
    causal = torch.full((c["T"], c["T"]), float("-inf"), dtype=f32).triu(1)   # built once, as HF per batch
    if a.dtype == "bf16":
        cos, sin, causal = cos.to(torch.bfloat16), sin.to(torch.bfloat16), causal.to(torch.bfloat16)
    N = c["B"] * c["T"]
    gen = torch.Generator().manual_seed(7)

    step_t, fwd_t, bwd_t, opt_t = [], [], [], []
    loss_v = float("nan")
    for s in range(a.warmup + a.steps):
        tokens = torch.randint(0, c["vocab"], (N,), generator=gen)
        targets = torch.randint(0, c["vocab"], (N,), generator=gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = forward(P, tokens, targets, c, cos, sin, causal)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        t3 = time.perf_counter()
        loss_v = loss.item()
        if not math.isfinite(loss_v):
            sys.exit("bench_llama_torch: loss %g at step %d" % (loss_v, s + 1))
        if s >= a.warmup:
            step_t.append(t3 - t0); fwd_t.append(t1 - t0); bwd_t.append(t2 - t1); opt_t.append(t3 - t2)
        print("step=%d%s ms=%.1f fwd_ms=%.1f bwd_ms=%.1f opt_ms=%.1f loss=%.4f"
              % (s + 1, "(warmup)" if s < a.warmup else "", 1e3 * (t3 - t0), 1e3 * (t1 - t0),
                 1e3 * (t2 - t1), 1e3 * (t3 - t2), loss_v), flush=True)
    step_s = statistics.median(step_t)
    print("result side=torch tokens_per_s=%.1f tokens_per_s_mean=%.1f tokens_per_s_best=%.1f step_ms=%.1f "
          "step_ms_best=%.1f fwd_ms=%.1f bwd_ms=%.1f opt_ms=%.1f steps=%d warmup=%d peak_rss_mib=%.0f loss=%.4f"
          % (N / step_s, N * len(step_t) / sum(step_t), N / min(step_t), 1e3 * step_s, 1e3 * min(step_t),
             1e3 * statistics.median(fwd_t),
             1e3 * statistics.median(bwd_t), 1e3 * statistics.median(opt_t), a.steps, a.warmup,
             peak_rss_mib(), loss_v), flush=True)


if __name__ == "__main__":
    main()
