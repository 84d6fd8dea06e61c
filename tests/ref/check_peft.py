#!/usr/bin/python3
"""tests/ref/check_peft.py — proves that `anyref export-peft` writes an adapter that
Hugging Face PEFT loads, and that `anyref merge` writes the same full weights as
PEFT's own merge.

Usage (from the repository root, after `make`):

    # with PyPI's peft + transformers (torch 1.13 works with these pins):
    /usr/bin/python3 -m venv --system-site-packages /tmp/peftvenv
    /tmp/peftvenv/bin/pip install transformers==4.38.2 accelerate==0.27.2 safetensors numpy==1.24.2
    /tmp/peftvenv/bin/pip install --no-deps peft==0.10.0   # its torch>=1.13.0 pin rejects 1.13.0a0
    /tmp/peftvenv/bin/python tests/ref/check_peft.py [--anyref build/anyref] [--work DIR] [--steps 50]

    # without peft/transformers (torch + safetensors only): the fallback checks
    /usr/bin/python3 tests/ref/check_peft.py

The flow:
 1. a random base LLaMA with the demo's sizes (vocab 13, hidden 64, 2 layers,
    4 heads, 2 kv heads, SwiGLU 176, untied lm_head) is written as a Hugging Face
    model directory: LlamaForCausalLM.save_pretrained(safe_serialization=True)
    when transformers is importable, else model.safetensors written by hand;
 2. `anyref train configs/demo.cfg model.init=<base dir> lora.rank=4 lora.alpha=8
    lora.targets=q_proj,v_proj,o_proj train.trainable=lora+embed ...` trains LoRA on
    three projections plus embed_tokens and lm_head (PEFT's modules_to_save);
 3. `anyref export-peft` writes the adapter directory, `anyref merge` the merged
    full weights (model.safetensors);
 4. checks (relative error = max|a-b| / max|b|, limit 1e-4):
    with peft:
      a. PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base), adapter)
         loads every adapter tensor: the adapter state dict PEFT reports back
         (get_peft_model_state_dict) has exactly the file's keys and values
         (PEFT ignores unknown keys silently, so this is checked here);
      b. the logits of the PEFT model (eval mode, float64) equal those of a
         LlamaForCausalLM loaded from our merged file (strict load_state_dict);
      c. PEFT's merge_and_unload() weights equal our merged file, tensor by tensor;
      d. warnings PEFT/transformers emit while loading are printed (and fail the
         run if they mention the adapter);
    always (the fallback when peft cannot be imported):
      e. reading adapter_config.json + adapter_model.safetensors back by hand,
         W + lora_alpha/r * B @ A (and the modules_to_save tensors) equals the
         merged file, and a float64 LLaMA forward written here from the HF
         semantics gives the same logits with the unmerged adapter as with the
         merged weights, which differ from the base model's.
Exit status 0 when everything matches, 1 on a mismatch.
"""
import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

# never ask the hub about the local base directory (PEFT does, e.g. in get_peft_model_state_dict)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SIZES = dict(vocab=13, dim=64, layers=2, heads=4, kv_heads=2, mlp_hidden=176,
             norm_eps=1e-6, rope_theta=10000.0)
RANK, ALPHA = 4, 8.0
TARGETS = ["q_proj", "v_proj", "o_proj"]
TOL = 1e-4

failures = []


def rel_err(a, b):
    a, b = a.double(), b.double()
    den = b.abs().max().item()
    return (a - b).abs().max().item() / (den if den > 0 else 1.0)


def check(what, err, tol=TOL):
    ok = err <= tol
    print(f"  {'ok  ' if ok else 'FAIL'} {what}: rel err {err:.3e} (limit {tol:g})")
    if not ok:
        failures.append(what)


def fail(msg):
    print(f"  FAIL {msg}")
    failures.append(msg)


def have(mod):
    try:
        __import__(mod)
        return True
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
        print(f"note: cannot import {mod}: {e}")
        return False


# ---------------------------------------------------------------- base model

def make_base(base_dir, use_hf):
    torch.manual_seed(0)
    s = SIZES
    if use_hf:
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["dim"], num_hidden_layers=s["layers"],
                          num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                          intermediate_size=s["mlp_hidden"], rms_norm_eps=s["norm_eps"],
                          rope_theta=s["rope_theta"], tie_word_embeddings=False,
                          max_position_embeddings=64, hidden_act="silu")
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():   # non-trivial norm weights, so a transposed/misnamed norm shows
            for n, p in model.named_parameters():
                if n.endswith("norm.weight"):
                    p.uniform_(0.5, 1.5)
        model.save_pretrained(base_dir, safe_serialization=True)
        return
    # by hand: the same names and shapes save_pretrained writes
    D, hd = s["dim"], s["dim"] // s["heads"]
    kv = s["kv_heads"] * hd
    t = {"model.embed_tokens.weight": torch.randn(s["vocab"], D) * 0.02,
         "model.norm.weight": torch.empty(D).uniform_(0.5, 1.5),
         "lm_head.weight": torch.randn(s["vocab"], D) * 0.02}
    for l in range(s["layers"]):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = torch.empty(D).uniform_(0.5, 1.5)
        t[p + "post_attention_layernorm.weight"] = torch.empty(D).uniform_(0.5, 1.5)
        for name, shape in (("self_attn.q_proj", (D, D)), ("self_attn.k_proj", (kv, D)),
                            ("self_attn.v_proj", (kv, D)), ("self_attn.o_proj", (D, D)),
                            ("mlp.gate_proj", (s["mlp_hidden"], D)), ("mlp.up_proj", (s["mlp_hidden"], D)),
                            ("mlp.down_proj", (D, s["mlp_hidden"]))):
            t[p + name + ".weight"] = torch.randn(*shape) * 0.02
    os.makedirs(base_dir, exist_ok=True)
    save_file(t, os.path.join(base_dir, "model.safetensors"), metadata={"format": "pt"})


# ---------------------------------------------------------------- anyref

def run(cmd):
    print("$ " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = r.stdout.strip().splitlines()[-4:]
    for line in tail:
        print("    " + line)
    if r.returncode != 0:
        print(r.stdout)
        sys.exit(f"command failed with exit status {r.returncode}")
    return r.stdout


# ---------------------------------------------------------------- float64 reference forward (HF semantics)

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def ref_logits(W, tokens, lora=None, scaling=0.0):
    """W: HF name -> tensor; lora: projection weight name -> (A, B) applied unmerged."""
    s = SIZES
    W = {k: v.double() for k, v in W.items()}
    Bn, T = tokens.shape
    D, H, Hkv = s["dim"], s["heads"], s["kv_heads"]
    hd = D // H

    def lin(x, name):
        y = F.linear(x, W[name])
        if lora and name in lora:
            A, Bm = lora[name]
            y = y + F.linear(F.linear(x, A.double()), Bm.double()) * scaling
        return y

    inv = 1.0 / (s["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    emb = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    emb = torch.cat((emb, emb), -1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    causal = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    x = F.embedding(tokens, W["model.embed_tokens.weight"])
    for l in range(s["layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], s["norm_eps"])
        q = lin(h, p + "self_attn.q_proj.weight").view(Bn, T, H, hd).transpose(1, 2)
        k = lin(h, p + "self_attn.k_proj.weight").view(Bn, T, Hkv, hd).transpose(1, 2)
        v = lin(h, p + "self_attn.v_proj.weight").view(Bn, T, Hkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        a = torch.softmax(q @ k.transpose(2, 3) / hd ** 0.5 + causal, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(Bn, T, D)
        x = x + lin(o, p + "self_attn.o_proj.weight")
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], s["norm_eps"])
        m = F.silu(lin(h, p + "mlp.gate_proj.weight")) * lin(h, p + "mlp.up_proj.weight")
        x = x + lin(m, p + "mlp.down_proj.weight")
    return F.linear(rms_norm(x, W["model.norm.weight"], s["norm_eps"]), W["lm_head.weight"])


# ---------------------------------------------------------------- checks

PREFIX = "base_model.model."


def check_by_hand(base_dir, adapter_dir, merged_path, tokens):
    print("checks by hand (adapter read back and applied, no peft):")
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    print("  adapter_config.json: " + json.dumps(cfg, sort_keys=True))
    for key, want in (("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("r", RANK), ("lora_alpha", ALPHA),
                      ("bias", "none"), ("fan_in_fan_out", False)):
        if cfg.get(key) != want:
            fail(f"adapter_config.json: {key} = {cfg.get(key)!r}, expected {want!r}")
    if sorted(cfg.get("target_modules") or []) != sorted(TARGETS):
        fail(f"adapter_config.json: target_modules = {cfg.get('target_modules')!r}, expected {TARGETS}")
    if sorted(cfg.get("modules_to_save") or []) != ["embed_tokens", "lm_head"]:
        fail(f"adapter_config.json: modules_to_save = {cfg.get('modules_to_save')!r}")
    scaling = cfg["lora_alpha"] / cfg["r"]

    base = load_file(os.path.join(base_dir, "model.safetensors"))
    base = {k: v for k, v in base.items() if "rotary_emb" not in k}
    adapter = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    merged = load_file(merged_path)
    bad = [k for k in adapter if not k.startswith(PREFIX)]
    if bad:
        fail(f"adapter keys without the '{PREFIX}' prefix: {bad[:4]}")
    ad = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in adapter.items()}
    if set(merged) != set(base):
        fail(f"merged file keys differ from the base's: missing {sorted(set(base) - set(merged))[:4]}, "
             f"extra {sorted(set(merged) - set(base))[:4]}")
    lora, expect = {}, dict(base)
    n_lora = 0
    for k, A in ad.items():
        if ".lora_A." not in k:
            continue
        wname = k.replace(".lora_A.weight", ".weight")
        Bm = ad.get(k.replace(".lora_A.", ".lora_B."))
        if Bm is None or wname not in base:
            fail(f"adapter {k}: no lora_B or no base weight {wname}")
            continue
        if A.shape != (RANK, base[wname].shape[1]) or Bm.shape != (base[wname].shape[0], RANK):
            fail(f"adapter {k}: shapes A {tuple(A.shape)} B {tuple(Bm.shape)} for W {tuple(base[wname].shape)}")
            continue
        if Bm.abs().max() == 0:
            fail(f"adapter {k}: lora_B is all zero (did the run train?)")
        lora[wname] = (A, Bm)
        expect[wname] = base[wname].double() + scaling * (Bm.double() @ A.double())
        n_lora += 1
    want_lora = SIZES["layers"] * len(TARGETS)
    if n_lora != want_lora:
        fail(f"adapter holds {n_lora} LoRA pairs, expected {want_lora}")
    saved = [k for k in ad if ".lora_" not in k]
    if sorted(saved) != ["lm_head.weight", "model.embed_tokens.weight"]:
        fail(f"adapter's non-LoRA tensors are {saved}")
    for k in saved:
        expect[k] = ad[k]
    worst, worst_k = 0.0, ""
    for k in base:
        if k in merged:
            e = rel_err(merged[k], expect[k])
            if e > worst:
                worst, worst_k = e, k
    check(f"merged file == base + alpha/r B A (+ modules_to_save), worst tensor {worst_k}", worst)
    for k in lora:
        if (merged[k].double() - base[k].double()).abs().max() == 0:
            fail(f"merged {k} equals the base weight: LoRA was not merged")
    # logits: unmerged adapter vs merged weights, float64 reference forward
    unmerged = dict(base)
    for k in saved:
        unmerged[k] = ad[k]
    l_unmerged = ref_logits(unmerged, tokens, lora, scaling)
    l_merged = ref_logits(merged, tokens)
    l_base = ref_logits(base, tokens)
    check("reference forward: logits(base + unmerged adapter) == logits(merged file)", rel_err(l_merged, l_unmerged))
    d = rel_err(l_base, l_unmerged)
    print(f"  info the adapter moves the logits by rel {d:.3e} from the base model's")
    if d < 1e-2:
        fail("the adapter barely changes the logits: the check would not see a wrong merge")
    return l_unmerged


def check_with_peft(base_dir, adapter_dir, merged_path, tokens, l_ref):
    import peft
    import transformers
    from peft import PeftConfig, PeftModel, get_peft_model_state_dict
    from transformers import LlamaForCausalLM
    print(f"checks with peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}:")

    # collect every warning PEFT/transformers emit while loading the adapter
    log_records = []

    class Keep(logging.Handler):
        def emit(self, record):
            log_records.append(record.getMessage())
    handler = Keep(level=logging.WARNING)
    for name in ("peft", "transformers"):
        logging.getLogger(name).addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pcfg = PeftConfig.from_pretrained(adapter_dir)
        base = LlamaForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
        model = PeftModel.from_pretrained(base, adapter_dir)
    for name in ("peft", "transformers"):
        logging.getLogger(name).removeHandler(handler)
    msgs = [f"{w.category.__name__}: {w.message}" for w in caught] + log_records
    for m in msgs:
        print(f"  warning while loading: {m}")
        if "adapter" in m.lower() or "lora" in m.lower() or "peft" in m.lower():
            failures.append("peft warned: " + m)
    if not msgs:
        print("  ok   no warning while loading the config, the base model and the adapter")
    print(f"  info PeftConfig: {type(pcfg).__name__} r={pcfg.r} alpha={pcfg.lora_alpha} "
          f"targets={sorted(pcfg.target_modules)} modules_to_save={pcfg.modules_to_save}")

    # a. what PEFT holds == what the file holds
    file_sd = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    held = get_peft_model_state_dict(model, save_embedding_layers=False)
    if set(held) != set(file_sd):
        fail(f"PEFT's adapter state dict keys != the file's: only in PEFT {sorted(set(held) - set(file_sd))[:4]}, "
             f"only in the file {sorted(set(file_sd) - set(held))[:4]}")
    else:
        print(f"  ok   PEFT's adapter state dict has exactly the file's {len(file_sd)} keys")
    worst = max(((held[k].float() - file_sd[k].float()).abs().max().item(), k) for k in set(held) & set(file_sd))
    check(f"PEFT's loaded tensors == the file's (worst {worst[1]}, abs {worst[0]:.3e})", worst[0])
    n_lora_modules = sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))
    print(f"  info PEFT wrapped {n_lora_modules} LoRA modules")

    # the config PEFT would write for this model (save_pretrained writes to_dict() as JSON
    # and get_peft_model_state_dict as the tensors, checked above; it also wants Jinja2 for a model card)
    their_cfg = json.loads(json.dumps(model.peft_config["default"].to_dict(),
                                      default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        our_cfg = json.load(f)
    differ = {k: (our_cfg.get(k), their_cfg[k]) for k in their_cfg if k in our_cfg and
              (sorted(our_cfg[k]) if isinstance(our_cfg[k], list) else our_cfg[k]) !=
              (sorted(their_cfg[k]) if isinstance(their_cfg[k], list) else their_cfg[k])}
    print(f"  info adapter_config.json fields PEFT writes that ours leaves to their defaults: "
          f"{sorted(set(their_cfg) - set(our_cfg))}")
    if differ:
        print(f"  info fields whose value differs after PEFT's round trip (ours, PEFT's): {differ}")

    # b. logits: PEFT (unmerged, eval, float64) vs HF model from our merged file
    model = model.double().eval()
    with torch.no_grad():
        l_peft = model(input_ids=tokens).logits
    hf_merged = LlamaForCausalLM(base.config)
    sd = load_file(merged_path)
    res = hf_merged.load_state_dict(sd, strict=False)
    if res.missing_keys or res.unexpected_keys:
        fail(f"merged file vs LlamaForCausalLM: missing {res.missing_keys[:4]}, unexpected {res.unexpected_keys[:4]}")
    else:
        print(f"  ok   merged file loads into LlamaForCausalLM with no missing/unexpected key ({len(sd)} tensors)")
    hf_merged = hf_merged.double().eval()
    with torch.no_grad():
        l_merged = hf_merged(input_ids=tokens).logits
    check("logits(PeftModel base+adapter) == logits(LlamaForCausalLM from merged file)", rel_err(l_merged, l_peft))
    check("logits(PeftModel) == float64 reference forward of the unmerged adapter", rel_err(l_ref, l_peft))

    # c. PEFT's own merge vs ours
    merged_by_peft = model.merge_and_unload().state_dict()
    merged_by_peft = {k: v for k, v in merged_by_peft.items() if "rotary_emb" not in k}
    if set(merged_by_peft) != set(sd):
        fail(f"merge_and_unload keys != merged file keys: {sorted(set(merged_by_peft) ^ set(sd))[:6]}")
    worst, worst_k, worst_abs = 0.0, "", 0.0
    for k in set(merged_by_peft) & set(sd):
        e = rel_err(sd[k], merged_by_peft[k])
        if e >= worst:
            worst, worst_k = e, k
            worst_abs = (sd[k].double() - merged_by_peft[k].double()).abs().max().item()
    check(f"merged file == PEFT merge_and_unload(), tensor by tensor (worst {worst_k}, abs {worst_abs:.3e})", worst)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anyref", default=os.path.join(ROOT, "build", "anyref"))
    ap.add_argument("--work", default="", help="working directory (default: a temporary one, removed)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--no-peft", action="store_true", help="run only the checks by hand")
    a = ap.parse_args()
    anyref = os.path.abspath(a.anyref)
    if not os.access(anyref, os.X_OK):
        sys.exit(f"{anyref}: not built (make, or pass --anyref)")
    use_peft = not a.no_peft and have("transformers") and have("peft")
    work = os.path.abspath(a.work) if a.work else tempfile.mkdtemp(prefix="check_peft.")
    os.makedirs(work, exist_ok=True)
    base_dir, run_dir = os.path.join(work, "base"), os.path.join(work, "run")
    adapter_dir, merged = os.path.join(work, "adapter"), os.path.join(work, "merged.safetensors")
    try:
        make_base(base_dir, use_peft)
        print(f"base model: {base_dir} ({'LlamaForCausalLM.save_pretrained' if use_peft else 'written by hand'})")
        over = [f"model.init={base_dir}", f"lora.rank={RANK}", f"lora.alpha={ALPHA:g}",
                "lora.targets=" + ",".join(TARGETS), "train.trainable=lora+embed", f"train.steps={a.steps}",
                "train.eval_every=0", "train.save_every=0", "train.min_accuracy=0", "train.resume=never",
                f"run.dir={run_dir}"]
        cfg = os.path.join(ROOT, "configs", "demo.cfg")
        run([anyref, "train", cfg] + over)
        os.makedirs(adapter_dir, exist_ok=True)
        run([anyref, "export-peft", cfg, adapter_dir] + over)
        run([anyref, "merge", cfg, merged] + over)

        g = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, SIZES["vocab"], (3, 15), generator=g)
        l_ref = check_by_hand(base_dir, adapter_dir, merged, tokens)
        if use_peft:
            check_with_peft(base_dir, adapter_dir, merged, tokens, l_ref)
        else:
            print("peft checks SKIPPED (peft/transformers not importable, or --no-peft)")
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) FAILED")
        return 1
    print("all checks passed" + ("" if use_peft else " (by hand only)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
