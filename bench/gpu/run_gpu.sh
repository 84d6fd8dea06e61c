#!/bin/bash
# bench/gpu/run_gpu.sh [BUILD_DIR] — the CUDA backend's checks and the step
# benchmarks on an NVIDIA GPU (issues 10, 11). $PARTS picks what runs, in this
# order (default "tests llama anyref encoders mpi"; a lent GPU's 15 minutes fit
# them in two calls: PARTS="tests llama", then PARTS="anyref encoders mpi"). Run from the
# repository root after `make CUDA=1` (BUILD_DIR defaults to build/cuda; the binaries may also
# be built on another machine and copied, as the 2026-11-26 logs beside this
# were: CUDA 13.0, gcc 12, -march=x86-64-v3, run on an H200).
#  1. tests: every device-capable test ($GPU_TESTS, else the Makefile's CUDA_TESTS; `make CUDA=1 test`
#     runs the same list), one line per test with its counts and seconds;
#  2. llama: bench_llama (bench/bench_llama.c) at the LLaMA-7B layer shape — dim 4096,
#     32 heads, MLP 11008, vocab 32000, LoRA r 8 on q/v, trainable embed and
#     lm_head, batch 6 x 400 tokens — with BENCH_GPU_LAYERS layers (default 32,
#     LLaMA-7B itself; the 2026-11-26 logs used 8), with its GEMMs in
#     $BENCH_GPU_MODES (ANYREF_GEMM, kernels.h k_set_gemm_mode; default tf32,
#     "fp32 tf32" adds plain fp32), then with the frozen projections stored as
#     bf16 (--frozen-bf16) in $BENCH_GPU_FROZEN_MODES (default bf16: bf16 x bf16
#     tensor-core products for them; "tf32 bf16" adds the widened-weight tf32
#     run), and in bf16 mode with --flash (memory-efficient attention);
#     and the same model in PyTorch + transformers + PEFT (bench/bench_llama_hf.py)
#     in bf16 and in fp32 with TF32, if python3 there has them;
#  3. anyref: the full 7B AnyRef step (bench/gpu/anyref_step.sh: `anyref train`
#     on configs/anyref-7b-refseg.cfg with random weights, batch 6 x 400, modes
#     tf32, bf16 and bf16-noflash) and the same step in PyTorch + transformers + PEFT bf16
#     (bench/bench_anyref_hf.py), with its FLOP count (--count-only);
#  4. encoders: the SAM ViT-H image encoder alone (bench/bench_encoders.c,
#     batch 6 of 1024-px images, as the 7B step runs it) in TF32 and in bf16
#     mode with bf16 block weights, and CLIP ViT-L/14 likewise, into
#     encoders.log (2026-11-27 on an H200: SAM 286.3 / 262.8 ms, 378.0 / 387.9 before
#     the kernel rewrites);
#  5. mpi: issue 11 on the GPU, if $MPI_BUILD (default build/cudampi: make CUDA=1
#     MPI=1 BUILD=build/cudampi) has them: its test_train (dist.backend = nccl
#     with a one-rank NCCL communicator must equal the run without, bit for
#     bit) and, with mpirun present, tests/test_mpi against its anyref (two
#     ranks on one GPU: NCCL refuses that, so gradients go through host
#     copies and MPI) — into mpi.log.
# Writes $OUT_DIR (default build/cuda/gpu) tests.log, bench_llama.log,
# anyref_step.log (+ anyref_step.tar.gz: each mode's anyref train log, metrics,
# timing and memory samples), encoders.log and mpi.log, and prints the result
# lines.
set -u
cd "$(dirname "$0")/../.."
b=${1:-build/cuda}
out=${OUT_DIR:-$b/gpu}
mkdir -p "$out"
parts=" ${PARTS:-tests llama anyref encoders mpi} "
export ANYREF_PROGRESS=off ANYREF_BIN=$b/anyref
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
if [[ $parts == *" tests "* ]]; then
: > "$out/tests.log"
tests=${GPU_TESTS:-$(sed -n '/^CUDA_TESTS :=/,/^TEST_BIN/p' Makefile | tr -d '\\' | sed 's/CUDA_TESTS :=//; /TEST_BIN/d')}
for t in $tests; do
  s=$(date +%s.%N)
  "$b/tests/test_$t" > /tmp/anyref_gpu_$t.log 2>&1; rc=$?
  e=$(date +%s.%N)
  { echo "=== test_$t rc=$rc"; cat /tmp/anyref_gpu_$t.log; } >> "$out/tests.log"
  printf "%-28s rc=%-3s ok=%-5s FAIL=%-4s %6.1fs\n" "test_$t" $rc "$(grep -c '^ok' /tmp/anyref_gpu_$t.log)" \
         "$(grep -c '^FAIL' /tmp/anyref_gpu_$t.log)" "$(awk "BEGIN{print $e-$s}")"
  rm -f /tmp/anyref_gpu_$t.log
done
fi
if [[ $parts == *" llama "* ]]; then
: > "$out/bench_llama.log"
L=${BENCH_GPU_LAYERS:-32}
shape="--layers=$L --dim=4096 --heads=32 --kv-heads=32 --mlp=11008 --vocab=32000 --batch=6 --seq=400 --rank=8"
for mode in ${BENCH_GPU_MODES:-tf32}; do
  { echo "### c $mode"; ANYREF_GEMM=$mode "$b/bench/bench_llama" --no-ceiling --no-gemm $shape --steps=5 --warmup=2; } >> "$out/bench_llama.log" 2>&1
done
# the frozen projections stored as bf16: widened to fp32 in tf32 mode; bf16 x bf16 on the tensor cores in bf16 mode
for mode in ${BENCH_GPU_FROZEN_MODES:-bf16}; do
  { echo "### c $mode frozen-bf16"; ANYREF_GEMM=$mode "$b/bench/bench_llama" --no-ceiling --no-gemm --frozen-bf16 $shape --steps=5 --warmup=2; } >> "$out/bench_llama.log" 2>&1
done
# and with the memory-efficient attention (model.attention = flash)
{ echo "### c bf16 frozen-bf16 flash"; ANYREF_GEMM=bf16 "$b/bench/bench_llama" --no-ceiling --no-gemm --frozen-bf16 --flash $shape --steps=5 --warmup=2; } >> "$out/bench_llama.log" 2>&1
if python3 -c 'import torch, transformers, peft' 2>/dev/null; then
  hs=$(echo "$shape --steps=5 --warmup=2" | sed 's/=/ /g')
  for mode in "bf16" "fp32 --tf32"; do
    { echo "### hf $mode"; python3 bench/bench_llama_hf.py $hs --dtype $mode; } >> "$out/bench_llama.log" 2>&1
  done
else
  echo "python3 lacks torch/transformers/peft: PyTorch side skipped" | tee -a "$out/bench_llama.log"
fi
grep -E '^###|^result|gflop_step_exec|device_mem_used' "$out/bench_llama.log"
fi
if [[ $parts == *" anyref "* ]]; then
  OUT_DIR=$out bash bench/gpu/anyref_step.sh "$b" > "$out/anyref_step.log" 2>&1
  if python3 -c 'import torch, transformers, peft' 2>/dev/null; then
    { echo "### hf count"; python3 bench/bench_anyref_hf.py --count-only
      echo "### hf bf16"; python3 bench/bench_anyref_hf.py --steps 5 --warmup 2; } >> "$out/anyref_step.log" 2>&1
  fi
  grep -E '^###|^result|^# model flops|^# (backend|anyref train)' "$out/anyref_step.log"
  # model TFLOP/s of each side: the HF script's count of the same step over its step_ms
  python3 - "$out/anyref_step.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^# model flops per step: .*?llm=([0-9.e+]+).*? total=([0-9.e+]+)", text, re.M)
if m:
    llm, total = float(m.group(1)), float(m.group(2))
    for line in text.splitlines():
        if line.startswith("result ") and "step_ms=" in line:
            f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
            ms = float(f["step_ms"])
            print("model_tflops side=%s mode=%s step_ms=%.1f tflops=%.1f llm_share_tflops=%.1f (of %.3g model FLOPs per step)"
                  % (f.get("side"), f.get("mode", f.get("dtype")), ms, total / ms / 1e9, llm / ms / 1e9, total))
PY
  # the device tool brings back at most 8 files a call: the per-mode logs, metrics and memory samples as one archive
  [ -d "$out/anyref_step" ] && tar czf "$out/anyref_step.tar.gz" -C "$out" anyref_step && rm -rf "$out/anyref_step"
fi
if [[ $parts == *" encoders "* ]] && [ -x "$b/bench/bench_encoders" ]; then
  : > "$out/encoders.log"
  for model in sam_h clip_l; do
    for mode in tf32 bf16; do
      f=""; [ "$mode" = bf16 ] && f="--frozen-bf16"
      [ "$model" = clip_l ] && [ "$mode" = bf16 ] && continue   # bench_encoders stores only SAM's weights in bf16
      { echo "### $model $mode"; ANYREF_GEMM=$mode "$b/bench/bench_encoders" --model=$model --batch=6 --reps=3 --warmup=1 $f; } \
        >> "$out/encoders.log" 2>&1
    done
  done
  grep -E '^###|^result' "$out/encoders.log"
fi
m=${MPI_BUILD:-build/cudampi}
if [[ $parts == *" mpi "* ]] && [ -x "$m/tests/test_train" ]; then
  : > "$out/mpi.log"
  { echo "=== $m/tests/test_train"; ANYREF_BIN=$m/anyref "$m/tests/test_train"; echo "rc=$?"; } >> "$out/mpi.log" 2>&1
  if command -v mpirun > /dev/null && [ -x "${MPI_TEST:-build/tests/test_mpi}" ]; then
    { echo "=== test_mpi with $m/anyref"; ANYREF_MPI_BIN=$m/anyref "${MPI_TEST:-build/tests/test_mpi}"; echo "rc=$?"; } >> "$out/mpi.log" 2>&1
  fi
  grep -E '^(ok|FAIL)|^rc=|^===' "$out/mpi.log"
fi
