#!/bin/bash
# bench/gpu/anyref_step.sh [BUILD_DIR] — the full 7B AnyRef training step
# (issue 10's benchmark (b)) as `anyref train` runs it:
# configs/anyref-7b-refseg.cfg (LLaVA-7B shape + LoRA r 8 on q/v, trainable
# embed_tokens / lm_head, CLIP ViT-L/14-224, SAM ViT-H image encoder forward,
# mask decoder, refocusing λ 0.1, gradient checkpointing per decoder layer) at
# the issue's batch of 6 (the recipe's own is 2), with random weights (every
# *.init emptied) on the shapes world (`anyref data shapes`, in the real REFER
# format: its refcoco text references stand in for refcoco / + / g), 400
# tokens per sample (256 image tokens; sequences padded to train.seq_len, so
# every step does the 400-token work), grad_accum 1 (the recipe's accumulation
# repeats the same micro-batch step). Every sample has a mask, so the SAM
# encoder runs on all 6 images, as in bench/bench_anyref_hf.py, whose FLOP
# count (--count-only) then describes this step too (run_gpu.sh divides it by
# each side's step time).
# Only the *.init keys, the data paths and the step counts are overridden.
#
# For each mode in $ANYREF_STEP_MODES (default "tf32 bf16 bf16-noflash"):
#   tf32  fp32 weights, train.gemm = tf32
#   bf16  model.frozen_weights = bf16, sam_encoder.frozen_weights = bf16,
#         clip.frozen_weights = bf16, train.gemm = bf16, model.attention = flash
#   bf16-noflash  the same with the attention that keeps the probabilities:
#         with layer checkpointing only the recomputed layer's are kept (at 400
#         tokens, batch 6: ~0.3 GiB more), and the H200's 32-layer LLaMA step
#         ran 18 % slower with flash (2026-11-27)
#   fp32  fp32 weights and GEMMs
# it runs $WARMUP (2) + $STEPS (5) + 1 steps and prints
#   result side=anyref mode=M step_ms=.. tokens_per_s=.. data_wait_ms=.. peak_mem_gib=.. loss_first=.. loss_last=..
# (data_wait_ms: the median per measured step of the time the step waited for its batch)
#   ... phases_ms=data:..,encoders:..,forward:..,backward:..,optimizer:..
# (train.timing: each phase's mean over the steps but the first, the backend
# synchronised at each boundary: the frozen encoders and the upload, the LLM +
# mask decoder forward, their backward, gradient sync + AdamW)
# step_ms is the median of the measured steps' elapsed_s differences in the
# run's metrics.jsonl (the warm-up steps and the last one, which also runs the
# validation, are left out); peak_mem_gib is nvidia-smi's largest memory.used
# while the run lasted (sampled every 200 ms; absent without nvidia-smi).
# The FLOPs of the same step: python3 bench/bench_anyref_hf.py --count-only.
# ANYREF_STEP_SMOKE=1 shrinks it for a CPU check of this script (1 decoder
# layer, SAM ViT-B, batch 1, 1 + 1 + 1 steps): the numbers then mean nothing.
# ANYREF_STEP_BATCH (default 6) and ANYREF_STEP_EXTRA (more key=value
# overrides, e.g. smaller modules: bench/anyref_step_cpu.sh) change the step.
# Logs and metrics go to $OUT_DIR (default BUILD_DIR/gpu)/anyref_step/.
set -u
cd "$(dirname "$0")/../.."
b=${1:-build/cuda}
out=${OUT_DIR:-$b/gpu}/anyref_step
mkdir -p "$out"
work=${ANYREF_STEP_WORK:-$(mktemp -d)}
W=${WARMUP:-2}; S=${STEPS:-5}; B=${ANYREF_STEP_BATCH:-6}; extra=${ANYREF_STEP_EXTRA:-}
if [ "${ANYREF_STEP_SMOKE:-0}" = 1 ]; then
  W=1; S=1; B=1; extra="model.layers=1 sam_encoder.model=vit_b"
fi
"$b/anyref" data shapes --out "$work/shapes" > "$out/shapes.log" 2>&1 || { echo "anyref data shapes failed"; cat "$out/shapes.log"; exit 1; }
D=$work/shapes
data="data.tokenizer=$D/tokenizer.json data.workers=8
  source.root=$D/refer_seg source.images=$D/refer_seg
  source2.root=$D/refer_seg source2.images=$D/refer_seg source2.dataset=refcoco source2.eval_splits=val
  source3.root=$D/refer_seg source3.images=$D/refer_seg source3.dataset=refcoco source3.eval_splits=val"
init="model.init= sam.init= sam_encoder.init= clip.init= model.vocab=32007"
steps="train.steps=$((W + S + 1)) train.batch_size=$B train.grad_accum=1 train.eval_batches=1 train.keep_checkpoints=1 train.resume=never train.timing=true"
for mode in ${ANYREF_STEP_MODES:-tf32 bf16 bf16-noflash}; do
  case $mode in
    tf32) m="train.gemm=tf32" ;;
    bf16) m="model.frozen_weights=bf16 sam_encoder.frozen_weights=bf16 clip.frozen_weights=bf16 train.gemm=bf16 model.attention=flash" ;;
    bf16-noflash) m="model.frozen_weights=bf16 sam_encoder.frozen_weights=bf16 clip.frozen_weights=bf16 train.gemm=bf16" ;;
    fp32) m="train.gemm=fp32" ;;
    *) echo "unknown mode $mode (tf32, bf16, bf16-noflash, fp32)"; continue ;;
  esac
  run=$work/run_$mode
  smi=""
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/$mode.mem" 2>/dev/null &
    smi=$!
  fi
  s0=$(date +%s.%N)
  # shellcheck disable=SC2086
  ANYREF_PROGRESS=off "$b/anyref" train configs/anyref-7b-refseg.cfg $init $data $steps $m $extra run.dir="$run" \
    > "$out/$mode.log" 2>&1
  rc=$?
  s1=$(date +%s.%N)
  [ -n "$smi" ] && kill "$smi" 2>/dev/null && wait "$smi" 2>/dev/null
  cp "$run/metrics.jsonl" "$out/$mode.metrics.jsonl" 2>/dev/null
  cp "$run/timing.json" "$out/$mode.timing.json" 2>/dev/null
  rm -rf "$run/checkpoints"
  if [ $rc -ne 0 ]; then
    echo "result side=anyref mode=$mode rc=$rc (see $out/$mode.log)"; tail -5 "$out/$mode.log"; continue
  fi
  peak=""
  [ -s "$out/$mode.mem" ] && peak=$(sort -n "$out/$mode.mem" | tail -1 | awk '{printf " peak_mem_gib=%.2f", $1 / 1024}')
  python3 - "$out/$mode.metrics.jsonl" "$W" "$S" "$B" "$mode" "$peak" "$(awk "BEGIN{print $s1-$s0}")" <<'EOF'
import json, statistics, sys
path, W, S, B, mode, peak, wall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], float(sys.argv[7])
rows = [json.loads(l) for l in open(path) if l.strip()]
el = {r["step"]: r["elapsed_s"] for r in rows}
dt = [el[s] - el[s - 1] for s in range(W + 1, W + S + 1) if s in el and s - 1 in el]
dw = {r["step"]: r.get("data_wait_s") or 0 for r in rows}   # the loader's wait so far: per step, its differences
wait = [dw[s] - dw[s - 1] for s in range(W + 1, W + S + 1) if s in dw and s - 1 in dw]
ms = statistics.median(dt) * 1e3
try:   # train.timing's mean phase times over the run's steps but its first
    t = json.load(open(path.replace(".metrics.jsonl", ".timing.json")))["ms_per_step"]
    phases = " phases_ms=" + ",".join(f"{k}:{t[k]:.1f}" for k in ("data", "encoders", "forward", "backward", "optimizer"))
except (OSError, ValueError, KeyError):
    phases = ""
print(f"result side=anyref mode={mode} step_ms={ms:.1f} tokens_per_s={B * 400 / (ms / 1e3):.0f} "
      f"data_wait_ms={1e3 * statistics.median(wait) if wait else 0:.1f}{peak} loss_first={rows[0]['loss']:.4f} "
      f"loss_last={rows[-1]['loss']:.4f} steps={len(rows)} wall_s={wall:.0f}{phases}")
EOF
  grep -E '^(backend|anyref train:)|^  total' "$out/$mode.log" | sed 's/^/# /'
done
[ -z "${ANYREF_STEP_WORK:-}" ] && rm -rf "$work"
