"""bench/bench_llama_hf.py - the LLaMA LoRA training step of bench/bench_llama.c
in PyTorch + transformers + PEFT on a GPU: the reference side of the CUDA
benchmark (issue 10). Not part of `make test` or `make bench` on a CPU machine;
bench/cuda/run_gpu.sh runs it on the lent GPU, whose image has torch,
transformers and peft.

The model: transformers.LlamaForCausalLM built from a LlamaConfig (random
weights), PEFT LoRA (r, alpha = 2r, dropout 0.05) on q_proj and v_proj,
embed_tokens and lm_head trainable (as LISA / AnyRef do), every other weight
frozen; AdamW (weight decay 0.01, fused) on the trainable tensors, gradient
clipping at 1.0; random tokens and labels. --dtype bf16 keeps every weight,
activation and the optimiser's tensors in bf16 (the usual PEFT set-up);
--dtype fp32 is plain fp32 (--tf32 lets matmuls use TF32). Attention is SDPA
(flash / memory-efficient kernels). Step time is the median over --steps after
--warmup, measured with torch.cuda.synchronize around each step.

Prints '#' lines describing the run and one line
  result side=hf dtype=.. tokens_per_s=.. step_ms=.. fwd_ms=.. bwd_ms=.. opt_ms=.. peak_mem_gib=.. loss=..
"""
import argparse
import statistics
import time

import torch


def lisa_lora(model, rank):
    """PEFT LoRA (r, alpha = 2r, dropout 0.05) on q_proj and v_proj, embed_tokens and
    lm_head trainable, as LISA / AnyRef train it (bench_anyref_hf.py uses it too)."""
    import peft
    cfg = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                          task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, cfg)
    for n, p in model.named_parameters():
        if "embed_tokens" in n or "lm_head" in n:
            p.requires_grad_(True)
    return model


def device_setup(a):
    """TF32 switches, dtype, device, and a synchronize for timing, from --dtype/--device/--tf32."""
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    return dt, dev, cuda, (torch.cuda.synchronize if cuda else (lambda: None))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--seq", type=int, default=400)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=32)
    ap.add_argument("--mlp", type=int, default=11008)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--device", default="cuda", help="cpu: a smoke test of the script only")
    a = ap.parse_args()

    import transformers
    import peft
    from transformers import LlamaConfig, LlamaForCausalLM

    dt, dev, cuda, sync = device_setup(a)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.dim, intermediate_size=a.mlp, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, max_position_embeddings=max(2048, a.seq),
                      rms_norm_eps=1e-6, use_cache=False)
    torch.manual_seed(0)
    if cuda:
        torch.set_default_device(dev)   # random init on the GPU: seconds, not minutes
    model = LlamaForCausalLM(cfg).to(dev, dt)
    model = lisa_lora(model, a.rank)
    train = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(train, lr=1e-4, weight_decay=0.01, fused=cuda)
    model.train()
    n_total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in train)
    print(f"# hf.torch={torch.__version__} transformers={transformers.__version__} peft={peft.__version__}")
    print(f"# hf.device={torch.cuda.get_device_name(0) if cuda else 'cpu'} dtype={a.dtype} tf32={int(a.tf32)} "
          f"attn={getattr(model.config, '_attn_implementation', '?')}")
    print(f"# hf.config=vocab={a.vocab},dim={a.dim},layers={a.layers},heads={a.heads},kv_heads={a.kv_heads},"
          f"mlp_hidden={a.mlp},batch={a.batch},seq={a.seq},lora_rank={a.rank}")
    print(f"# hf.params_total={n_total} params_trainable={n_train}", flush=True)
    B, T = a.batch, a.seq
    g = torch.Generator(device=dev)
    g.manual_seed(7)
    ts, tf, tb, to = [], [], [], []
    loss = None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for s in range(a.warmup + a.steps):
        tok = torch.randint(0, a.vocab, (B, T), device=dev, generator=g)
        lab = torch.randint(0, a.vocab, (B, T), device=dev, generator=g)
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=tok, labels=lab).loss
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(train, 1.0)
        opt.step()
        sync()
        t3 = time.perf_counter()
        tag = "(warmup)" if s < a.warmup else ""
        print(f"step={s + 1}{tag} ms={1e3 * (t3 - t0):.1f} fwd_ms={1e3 * (t1 - t0):.1f} bwd_ms={1e3 * (t2 - t1):.1f} "
              f"opt_ms={1e3 * (t3 - t2):.1f} loss={loss.item():.4f}", flush=True)
        if s >= a.warmup:
            ts.append(t3 - t0); tf.append(t1 - t0); tb.append(t2 - t1); to.append(t3 - t2)
    st = statistics.median(ts)
    print(f"result side=hf dtype={a.dtype} tf32={int(a.tf32)} tokens_per_s={B * T / st:.1f} step_ms={1e3 * st:.1f} "
          f"fwd_ms={1e3 * statistics.median(tf):.1f} bwd_ms={1e3 * statistics.median(tb):.1f} "
          f"opt_ms={1e3 * statistics.median(to):.1f} peak_mem_gib={(torch.cuda.max_memory_allocated() if cuda else 0) / 2**30:.2f} "
          f"loss={loss.item():.4f}", flush=True)


if __name__ == "__main__":
    main()
