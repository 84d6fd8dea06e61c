#!/bin/sh
# bench/run_eval.sh <anyref binary> <outdir> — speed of the evaluation suite
# on the demo model (issue 8's benchmark). Part of `make bench`. About 2
# minutes on 2 idle cores.
#
#  1. `anyref data shapes` writes the shapes world into <outdir>/eval_data;
#     configs/shapes-tiny.cfg is trained for BENCH_EVAL_STEPS steps (default
#     1000: answers of realistic length; the speed does not depend on the
#     quality beyond that);
#  2. waits (up to BENCH_IDLE_WAIT s, default 60) for the CPUs to go idle;
#  3. `anyref eval --suite refcoco --splits val` (every sentence of REFER val,
#     masks from the generated [SEG]s), greedy with the KV cache, then the same
#     with --no-cache (every new token recomputes the whole prefix: the
#     method of the earlier anyref_generate), then beam search width 4;
#     samples/s of the whole suite (generation, mask forward, scoring,
#     results.jsonl) and tokens/s of generation alone, from summary.json;
#  4. prints a Markdown table and writes <outdir>/bench_eval.md.
# There is no PyTorch side here: the reference implementations of AnyRef
# evaluate through Hugging Face generate() on a 7B model, not this 2-layer
# demo model; the generation kernels themselves are compared in
# bench_generate (cached against recomputed tokens/s).
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 <anyref binary> <outdir>" >&2
  exit 2
fi
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
out=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/common.sh"
mkdir -p "$out/raw"
out=$(cd "$out" && pwd)
data=$out/eval_data
run=$out/eval_run
steps=${BENCH_EVAL_STEPS:-1000}
rm -rf "$data" "$run"
cd "$root"
"$bin" data shapes --out "$data" > "$out/raw/eval_data.txt" 2>&1
ov="data.tokenizer=$data/tokenizer.json source.root=$data/refer_seg source.images=$data/refer_seg source2.file=$data/custom/shapes.jsonl source3.root=$data/avsbench run.dir=$run"
# shellcheck disable=SC2086
ANYREF_PROGRESS=off "$bin" train configs/shapes-tiny.cfg $ov train.steps="$steps" train.eval_every=0 train.save_every=0 \
  > "$out/raw/eval_train.txt" 2>&1
wait_for_idle bench_eval
start_clock
field() {  # field <summary.json> <key>: the first "key": number of the refcoco val set
  sed -n "s/.*\"$2\":\([0-9.eE+-]*\).*/\1/p" "$1" | head -n 1
}
table="| decoding | samples | samples/s | generated tokens | tokens/s (generation) | gIoU | cIoU |
|---|--:|--:|--:|--:|--:|--:|"
for mode in "greedy, KV cache|" "greedy, recompute the prefix|--no-cache" "beam 4, KV cache|--decode beam --beam 4"; do
  label=${mode%%|*}
  flags=${mode#*|}
  # shellcheck disable=SC2086
  ANYREF_PROGRESS=off "$bin" eval configs/shapes-tiny.cfg $ov --suite refcoco --splits val --no-meteor $flags \
    --json "$out/raw/eval_summary.json" --results "$out/raw/eval_results.jsonl" > "$out/raw/eval_$(echo "$label" | tr ' ,' '__').txt" 2>&1
  s=$out/raw/eval_summary.json
  table="$table
| $label | $(field "$s" samples) | $(field "$s" samples_per_s) | $(field "$s" generated_tokens) | $(field "$s" tokens_per_s) | $(field "$s" giou) | $(field "$s" ciou) |"
done
{
  echo "### anyref eval --suite refcoco (REFER val of the shapes world, demo model after $steps steps)"
  echo
  echo "$table"
  echo
  echo "Started $date_utc; load average at the start $load_start; OPENBLAS_CORETYPE=${coretype:-unset};"
  echo "$(nproc) CPUs; anyref's OpenMP / OpenBLAS threads as the environment sets them."
} | tee "$out/bench_eval.md"
rm -rf "$data" "$run"
