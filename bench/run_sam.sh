#!/bin/sh
# bench/run_sam.sh <bench_sam binary> <outdir> — forward+backward time of the SAM
# mask decoder with mask post-processing (bench/bench_sam.c) against the same
# step in PyTorch (bench/bench_sam_torch.py) for 1, 4 and 16 prompts per image,
# on the same machine, thread count and OPENBLAS_CORETYPE. Part of `make bench`,
# after bench/run_llama.sh. About a minute on 2 cores.
#
#  1. waits (up to BENCH_IDLE_WAIT s, default 60) for the CPUs to go idle;
#  2. the C bench, one process per prompt count (so each peak RSS is its own);
#  3. PyTorch's environment: BENCH_SAM_TORCH_ENV="<label> VAR=value ..." if set,
#     else a short probe (4 prompts, 2 steps) under each candidate of
#     bench/run.sh (BLAS build x OpenMP wait policy, malloc kept), fastest wins;
#  4. the PyTorch bench under that environment, one process per prompt count;
#  5. prints a Markdown table and writes <outdir>/bench_sam.md (raw outputs in
#     <outdir>/raw/sam_*.txt).
# BENCH_SAM_PROMPTS (default "1 4 16") chooses the prompt counts; BENCH_SAM_ORIG
# (default 480x640, H x W) the original image size.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 <bench_sam_binary> <outdir>" >&2
  exit 2
fi
bin=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
raw="$out/raw"
mkdir -p "$raw"
[ -x "$bin" ] || { echo "bench_sam: $bin is not an executable" >&2; exit 1; }
prompts=${BENCH_SAM_PROMPTS:-1 4 16}
orig=${BENCH_SAM_ORIG:-480x640}

# warm-up and timed steps per prompt count (the 16-prompt step takes ~1-2 s on 2 cores)
steps_for() {
  if [ "$1" -le 1 ]; then echo "2 7"; elif [ "$1" -le 4 ]; then echo "2 5"; else echo "2 3"; fi
}

# shellcheck source=bench/common.sh
. "$here/common.sh"
wait_for_idle bench_sam
start_clock

for p in $prompts; do
  # shellcheck disable=SC2046  # two numbers: warm-up, timed steps
  set -- $(steps_for "$p")
  echo "bench_sam: C, $p prompts (OPENBLAS_CORETYPE=${coretype:-unset}) ..." >&2
  "$bin" --prompts="$p" --warmup="$1" --reps="$2" --orig="$orig" > "$raw/sam_c_$p.txt"
done
first=$(echo "$prompts" | awk '{print $1}')
threads=$(sed -n 's/^# c\.threads=//p' "$raw/sam_c_$first.txt")

[ -z "${BENCH_SAM_TORCH_ENV:-}" ] && echo "bench_sam: probing PyTorch environments (4 prompts, 2 steps) ..." >&2
pick_torch_env bench_sam "${BENCH_SAM_TORCH_ENV:-}" "$raw/sam_probe" \
    "$py" "$here/bench_sam_torch.py" --threads "$threads" --prompts 4 --warmup 1 --reps 2 --orig "$orig"

for p in $prompts; do
  # shellcheck disable=SC2046  # two numbers: warm-up, timed steps
  set -- $(steps_for "$p")
  echo "bench_sam: PyTorch, $p prompts, with $best ($best_settings) ..." >&2
  # shellcheck disable=SC2086
  env $best_settings "$py" "$here/bench_sam_torch.py" --threads "$threads" --prompts "$p" \
      --warmup "$1" --reps "$2" --orig "$orig" > "$raw/sam_torch_$p.txt"
done
stat_end=$(head -n 1 /proc/stat)
wall_end=$(date +%s.%N)
times > "$raw/sam_times.txt"
children=$(tail -n 1 "$raw/sam_times.txt")

BENCH_RAW=$raw BENCH_OUT=$out BENCH_DATE=$date_utc BENCH_CORETYPE=${coretype:-unset} \
BENCH_BEST=$best BENCH_BEST_SETTINGS=$best_settings BENCH_PROMPTS=$prompts \
BENCH_LOAD_START=$load_start BENCH_STAT_START=$stat_start BENCH_STAT_END=$stat_end \
BENCH_WALL=$wall_start:$wall_end BENCH_CHILDREN=$children \
BENCH_HERE=$here "$py" - <<'EOF'
import os
import sys

sys.path.insert(0, os.environ["BENCH_HERE"])
import benchlib  # noqa: E402

raw, out = os.environ["BENCH_RAW"], os.environ["BENCH_OUT"]


parse = benchlib.parse_meta_result


w0, w1, others_frac = benchlib.run_load()
ncpu = os.cpu_count() or 1
cpu = benchlib.cpu_model()

prompts = os.environ["BENCH_PROMPTS"].split()
runs = [(p,) + parse(os.path.join(raw, "sam_c_%s.txt" % p)) + parse(os.path.join(raw, "sam_torch_%s.txt" % p))
        for p in prompts]
cm, tm = runs[0][1], runs[0][3]
probes = open(os.path.join(raw, "sam_probe_scores.txt")).read().split("\n")
settings = ("C: %s threads (OpenMP), env as given; PyTorch: %s threads, **%s** (`%s`); OPENBLAS_CORETYPE=%s both"
            % (cm.get("c.threads"), tm.get("torch.threads"), os.environ["BENCH_BEST"],
               os.environ["BENCH_BEST_SETTINGS"], os.environ["BENCH_CORETYPE"]))
warn = []
if others_frac > 0.03:
    warn = ["", "**Warning: the machine was busy: other processes took %.0f%% of the CPU time "
            "during the run, so the numbers below are noisy.** Rerun on an idle machine for "
            "numbers to quote." % (100 * others_frac)]
lines = [
    "# anyref SAM mask decoder forward+backward vs PyTorch",
    "",
    "| | |",
    "|---|---|",
    "| date | %s |" % os.environ["BENCH_DATE"],
    "| CPU | %s, %d CPUs online |" % (cpu, ncpu),
    "| model | %s |" % cm.get("sam.config", "").replace(",", ", "),
    "| parameters | %s total, %s trainable (C); PyTorch %s total, %s trainable |"
    % (cm.get("sam.params_total"), cm.get("sam.params_trainable"), tm.get("sam.params_total"),
       tm.get("sam.params_trainable")),
    "| C side | gcc %s, backend %s |" % (cm.get("c.compiler"), cm.get("c.backend")),
    "| PyTorch | %s, CPU kernels %s, BLAS %s |" % (tm.get("torch.version"), tm.get("torch.cpu_capability"),
                                                 tm.get("torch.blas")),
    "| PyTorch probe (4 prompts, step ms) | %s |" % "; ".join(
        "%s %s" % tuple(p.split(" ")[:2]) for p in probes if p.strip() and " " in p),
    "| settings | %s |" % settings,
    "| machine load | %.1f%% of the CPU time went to other processes during the %.0f s run "
    "(load average at the start: %s) |" % (100 * others_frac, w1 - w0, os.environ["BENCH_LOAD_START"]),
] + warn + [
    "",
    "One step: decoder forward (low-res 256×256 masks) → postprocess_masks (→ 1024² → crop → "
    "original size) → backward of a fixed random gradient at the original size through the "
    "post-processing and the decoder (trainable: mask_tokens, output_upscaling, "
    "output_hypernetworks_mlps, plus the sparse prompt; image embedding frozen). Times are "
    "medians of the timed steps after warm-up; ratio = PyTorch ÷ C (> 1: C is faster).",
    "",
    "| prompts | steps (warm-up + timed) | C ms (fwd · bwd) | torch ms (fwd · bwd) | ratio torch/C "
    "| fastest step C · torch | peak RSS C | peak RSS torch |",
    "|--:|--:|--:|--:|--:|--:|--:|--:|",
]
for p, _, cr, _, tr in runs:
    c_ms, t_ms = float(cr["step_ms"]), float(tr["step_ms"])
    lines.append("| %s | %s + %s | %.1f (%s · %s) | %.1f (%s · %s) | **%.2f** | %s · %s ms | %s MiB | %s MiB |"
                 % (p, cr["warmup"], cr["reps"], c_ms, cr["fwd_ms"], cr["bwd_ms"], t_ms, tr["fwd_ms"],
                    tr["bwd_ms"], t_ms / c_ms, cr["step_ms_best"], tr["step_ms_best"],
                    cr["peak_rss_mib"], tr["peak_rss_mib"]))
md = "\n".join(lines) + "\n"
with open(os.path.join(out, "bench_sam.md"), "w") as f:
    f.write(md)
print(md, end="")
print("bench_sam: wrote %s" % os.path.join(out, "bench_sam.md"))
EOF
