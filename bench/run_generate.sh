#!/bin/sh
# bench/run_generate.sh <bench_generate binary> <outdir> — tokens/s of greedy
# generation with the KV cache against recomputing the whole prefix
# (bench/bench_generate.c: the demo model's LLM and a dim-1024, 8-layer,
# T-512 LLaMA). Waits (up to BENCH_IDLE_WAIT s, default 60) for the CPUs to
# go idle, runs the bench, prints a Markdown table and writes
# <outdir>/bench_generate.md (raw output in <outdir>/raw/generate.txt).
# BENCH_GEN_ARGS (e.g. "--only=demo --uncached-steps=2") goes to the binary.
# About 2 minutes on 2 cores (measured with other work running).
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 <bench_generate_binary> <outdir>" >&2
  exit 2
fi
bin=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/raw"
[ -x "$bin" ] || { echo "bench_generate: $bin is not an executable" >&2; exit 1; }
# shellcheck shell=sh source=bench/common.sh
. "$here/common.sh"
wait_for_idle bench_generate
start_clock
# shellcheck disable=SC2086  # a list of options
"$bin" ${BENCH_GEN_ARGS:-} > "$out/raw/generate.txt"
{
  echo "# anyref generation: KV cache vs recomputing the prefix"
  echo
  echo "$date_utc, load average at the start $load_start. Greedy, prompts of T/4 random tokens, generation to T;"
  echo "the cached run includes the prefill; the uncached run is one full B x T forward per token."
  echo
  echo "| setting | model | B | T | new tokens/row | cached tok/s | recomputed tok/s | ratio | same tokens | threads | OPENBLAS_CORETYPE |"
  echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"
  awk '/^setting=/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f["setting"], f["model"], f["B"], f["T"],
           f["new"], f["cached_tok_s"], f["uncached_tok_s"], f["ratio"], f["same_tokens"], f["threads"], f["coretype"]
  }' "$out/raw/generate.txt"
} > "$out/bench_generate.md"
cat "$out/bench_generate.md"
echo "bench_generate: wrote $out/bench_generate.md"
