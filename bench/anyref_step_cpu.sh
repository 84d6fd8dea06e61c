#!/bin/bash
# bench/anyref_step_cpu.sh [BUILD_DIR] — issue 10's benchmark (b), the whole
# AnyRef training step against PyTorch + transformers + PEFT, at a size a
# 2-core CPU runs in seconds. Not part of `make bench` (it needs transformers
# and peft, which Debian does not ship; without them only the anyref side
# runs). BENCH_HF_PY: the Python of the fp32 PyTorch run — for the same BLAS
# kernels as anyref, Debian's torch 1.13 (OpenBLAS) in a venv that adds the
# two: `/usr/bin/python3 -m venv --system-site-packages V; V/bin/pip install
# --no-deps transformers==4.36.2 peft==0.7.1 accelerate==0.25.0 tokenizers
# safetensors huggingface_hub` (plus their small pure-Python dependencies).
# BENCH_HF_PY_BF16 (default BENCH_HF_PY): the bf16 run's (Debian's torch 1.13
# fails in the mask decoder's bf16 transposed convolution; a PyPI torch 2.x
# works). The PyTorch runs get OMP_WAIT_POLICY=PASSIVE and glibc malloc kept
# from trimming (bench/common.sh's MALLOC_SET: 2x faster here).
#
# The step is bench/gpu/anyref_step.sh's (configs/anyref-7b-refseg.cfg, random
# weights, the shapes world, 400 tokens of which 256 image rows, refocusing
# λ 0.1, checkpointing per decoder layer, every sample with a mask) and
# bench/bench_anyref_hf.py's, with every module shrunk the same way on both
# sides: LLaMA 4 layers of dim 512 (8 heads, MLP 1376, vocab 32007, LoRA r 8
# on q/v, embed + lm_head trainable), CLIP 4 layers of width 256 (224 px,
# patch 14, select_layer -2), SAM image encoder 4 blocks of width 256 at
# 1024 px (windows of 14, blocks 1 and 3 global), the real mask decoder;
# batch BENCH_STEP_BATCH (2). Modes: anyref fp32 and bf16 (all three frozen
# weight sets in bf16, train.gemm = bf16, flash attention), PyTorch fp32 and
# bf16 (every tensor bf16). Prints each side's result line, the model FLOPs
# per step (bench_anyref_hf.py --count-only of the same shape) and a
# Markdown table with GFLOP/s and the ratios; writes <BUILD_DIR>/bench/anyref_step_cpu.md.
set -u
cd "$(dirname "$0")/.."
b=${1:-build}
out=$b/bench
mkdir -p "$out"
B=${BENCH_STEP_BATCH:-2}
py=${BENCH_HF_PY:-python3}
py16=${BENCH_HF_PY_BF16:-$py}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# shellcheck source=bench/common.sh
. bench/common.sh
tenv="OMP_WAIT_POLICY=PASSIVE $MALLOC_SET"
wait_for_idle anyref_step_cpu
sizes="model.dim=512 model.layers=4 model.heads=8 model.kv_heads=8 model.mlp_hidden=1376
  clip.width=256 clip.layers=4 clip.heads=4 clip.mlp_dim=1024
  sam_encoder.model=custom sam_encoder.img_size=1024 sam_encoder.patch=16 sam_encoder.dim=256 sam_encoder.depth=4
  sam_encoder.heads=4 sam_encoder.window=14 sam_encoder.global=1,3 data.workers=1"
hf="--batch $B --seq 400 --layers 4 --dim 512 --heads 8 --mlp 1376 --clip-width 256 --clip-layers 4 --clip-heads 4
  --clip-mlp 1024 --sam-width 256 --sam-layers 4 --sam-heads 4 --sam-global 1,3 --device cpu"
log=$out/anyref_step_cpu.log
: > "$log"
# shellcheck disable=SC2086
ANYREF_STEP_BATCH=$B ANYREF_STEP_EXTRA="$(echo $sizes)" ANYREF_STEP_MODES="fp32 bf16" WARMUP=${WARMUP:-1} \
  STEPS=${STEPS:-3} OUT_DIR=$out/anyref_step_cpu bash bench/gpu/anyref_step.sh "$b" >> "$log" 2>&1
# the FLOP count builds on the meta device (torch >= 2.0): whichever Python has it
for p in "$py16" "$py"; do
  # shellcheck disable=SC2086
  "$p" bench/bench_anyref_hf.py $hf --count-only > "$log.count" 2>&1 && { cat "$log.count" >> "$log"; break; }
done
rm -f "$log.count"
for pair in "fp32 $py" "bf16 $py16"; do
  dt=${pair%% *}; p=${pair#* }
  if "$p" -c 'import torch, transformers, peft' 2>/dev/null; then
    # shellcheck disable=SC2086
    { echo "# $dt: $p, torch $("$p" -c 'import torch; print(torch.__version__)' 2>/dev/null), env $tenv"
      env $tenv "$p" bench/bench_anyref_hf.py $hf --dtype "$dt" --steps "${STEPS:-3}" --warmup "${WARMUP:-1}"; } >> "$log" 2>&1
  else
    echo "# $p lacks torch / transformers / peft: set BENCH_HF_PY / BENCH_HF_PY_BF16 (PyTorch $dt skipped)" >> "$log"
  fi
done
grep -E '^result|^# model flops|lacks|^# (fp32|bf16):' "$log"
python3 - "$log" "$B" <<'PY' | tee "$out/anyref_step_cpu.md"
import re, sys
text, B = open(sys.argv[1]).read(), int(sys.argv[2])
m = re.search(r"^# model flops per step: .*? total=([0-9.e+]+)", text, re.M)
total = float(m.group(1)) if m else None
rows = {}
for line in text.splitlines():
    if line.startswith("result ") and "step_ms=" in line:
        f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        rows[(f["side"], f.get("mode", f.get("dtype")))] = float(f["step_ms"])
print("| precision | anyref ms/step | PyTorch+HF+PEFT ms/step | ratio (PyTorch / anyref time) | anyref GFLOP/s | PyTorch GFLOP/s |")
print("|---|--:|--:|--:|--:|--:|")
for mode in ("fp32", "bf16"):
    a, h = rows.get(("anyref", mode)), rows.get(("hf", mode))
    g = lambda ms: "%.1f" % (total / ms / 1e6) if total and ms else "—"
    print("| %s | %s | %s | %s | %s | %s |" % (mode, "%.0f" % a if a else "—", "%.0f" % h if h else "—",
          "%.2f" % (h / a) if a and h else "—", g(a), g(h)))
print()
print("Batch %d x 400 tokens; model FLOPs per step %s (bench_anyref_hf.py --count-only)." % (B, "%.3g" % total if total else "not counted"))
PY
