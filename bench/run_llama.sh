#!/bin/sh
# bench/run_llama.sh <bench_llama binary> <outdir> — training throughput of the
# ~100M-parameter LLaMA of bench/bench_llama.c against the same model trained by
# PyTorch (bench/bench_llama_torch.py) on the same machine, thread count and
# OPENBLAS_CORETYPE. Part of `make bench`, after bench/run.sh.
#
#  1. waits (up to BENCH_IDLE_WAIT s, default 60) for the CPUs to go idle;
#  2. the C bench: GEMM ceiling, the model's GEMM shapes, then the training steps;
#  3. PyTorch's environment: BENCH_LLAMA_TORCH_ENV="<label> VAR=value ..." if set,
#     else a short probe of the candidates of bench/run.sh (BLAS build x OpenMP
#     wait policy, malloc kept) on a 2-layer version of the same model, fastest wins;
#  4. the PyTorch bench under that environment;
#  5. prints a Markdown table and writes <outdir>/bench_llama.md (raw outputs in
#     <outdir>/raw/llama_*.txt).
# BENCH_LLAMA_ARGS (e.g. "--layers=2 --steps=2") goes to both sides (the C-only
# options --ceiling-target=, --no-ceiling and --no-gemm to the C side only).
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 <bench_llama_binary> <outdir>" >&2
  exit 2
fi
bin=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
raw="$out/raw"
mkdir -p "$raw"
[ -x "$bin" ] || { echo "bench_llama: $bin is not an executable" >&2; exit 1; }
args=${BENCH_LLAMA_ARGS:-}
targs=""
for a in $args; do
  case $a in
    --ceiling-target=*|--no-ceiling|--no-gemm) ;;
    *) targs="$targs $a" ;;
  esac
done

# shellcheck source=bench/common.sh
. "$here/common.sh"
wait_for_idle bench_llama
start_clock

echo "bench_llama: C (OPENBLAS_CORETYPE=${coretype:-unset}) ..." >&2
# shellcheck disable=SC2086  # args is a list of options
"$bin" $args > "$raw/llama_c.txt"
threads=$(sed -n 's/^# c\.threads=//p' "$raw/llama_c.txt")

[ -z "${BENCH_LLAMA_TORCH_ENV:-}" ] && echo "bench_llama: probing PyTorch environments (2-layer model) ..." >&2
# Probe: median step time of a 2-layer model (same widths, vocab, sequence).
# shellcheck disable=SC2086  # targs is a list of options
pick_torch_env bench_llama "${BENCH_LLAMA_TORCH_ENV:-}" "$raw/llama_probe" \
    "$py" "$here/bench_llama_torch.py" --threads "$threads" $targs --layers 2 --steps 2 --warmup 1

echo "bench_llama: PyTorch with $best ($best_settings) ..." >&2
# shellcheck disable=SC2086
env $best_settings "$py" "$here/bench_llama_torch.py" --threads "$threads" $targs > "$raw/llama_torch.txt"
# bf16: the C side with the frozen projections stored as bf16 and train.gemm = bf16
# (oneDNN's bf16 matmuls where the CPU has them), PyTorch with every tensor bf16
echo "bench_llama: bf16 (C --frozen-bf16 with ANYREF_GEMM=bf16; PyTorch --dtype bf16) ..." >&2
# shellcheck disable=SC2086
ANYREF_GEMM=bf16 "$bin" $args --frozen-bf16 --no-ceiling --no-gemm > "$raw/llama_c_bf16.txt"
# shellcheck disable=SC2086
env $best_settings "$py" "$here/bench_llama_torch.py" --threads "$threads" $targs --dtype bf16 \
    > "$raw/llama_torch_bf16.txt"
stat_end=$(head -n 1 /proc/stat)
wall_end=$(date +%s.%N)
times > "$raw/llama_times.txt"
children=$(tail -n 1 "$raw/llama_times.txt")

BENCH_RAW=$raw BENCH_OUT=$out BENCH_DATE=$date_utc BENCH_CORETYPE=${coretype:-unset} \
BENCH_BEST=$best BENCH_BEST_SETTINGS=$best_settings \
BENCH_LOAD_START=$load_start BENCH_STAT_START=$stat_start BENCH_STAT_END=$stat_end \
BENCH_WALL=$wall_start:$wall_end BENCH_CHILDREN=$children \
BENCH_HERE=$here "$py" - <<'EOF'
import os
import sys

sys.path.insert(0, os.environ["BENCH_HERE"])
import benchlib  # noqa: E402

raw, out = os.environ["BENCH_RAW"], os.environ["BENCH_OUT"]


def parse(path):
    """-> (meta from '# key=value', result dict, step rows, gemm rows, sgemm rows)"""
    meta, result, steps, gemms, sgemm = {}, {}, [], [], []
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("# ") and "=" in line:
            k, v = line[2:].split("=", 1)
            meta[k] = v
        elif line.startswith("result "):
            result = dict(f.split("=", 1) for f in line.split()[1:])
        elif line.startswith("step="):
            steps.append(dict(f.split("=", 1) for f in line.split()))
        elif line.startswith("gemm="):
            gemms.append(dict(f.split("=", 1) for f in line.split()))
        elif line.startswith("kernel=sgemm"):
            sgemm.append(dict(f.split("=", 1) for f in line.split()))
    return meta, result, steps, gemms, sgemm


w0, w1, others_frac = benchlib.run_load()
ncpu = os.cpu_count() or 1

cm, cr, csteps, gemms, sgemm = parse(os.path.join(raw, "llama_c.txt"))
tm, tr, tsteps, _, _ = parse(os.path.join(raw, "llama_torch.txt"))
probes = open(os.path.join(raw, "llama_probe_scores.txt")).read().split("\n")
cpu = benchlib.cpu_model()

ceiling = float(cr.get("ceiling_gflops", 0)) or None
fl_exec = float(cm["llama.gflop_step_exec"])
fl_6n = float(cm["llama.gflop_step_6n"])
c_ms, t_ms = float(cr["step_ms"]), float(tr["step_ms"])
c_tps, t_tps = float(cr["tokens_per_s"]), float(tr["tokens_per_s"])
c_best, t_best = float(cr["tokens_per_s_best"]), float(tr["tokens_per_s_best"])


def mfu(gflop, ms):
    return 100.0 * gflop / (ms * 1e-3) / ceiling if ceiling else None


def pct(v):
    return "—" if v is None else "%.1f%%" % v


mfu_c, mfu_t = mfu(fl_exec, c_ms), mfu(fl_exec, t_ms)
mfu6_c, mfu6_t = mfu(fl_6n, c_ms), mfu(fl_6n, t_ms)
ratio = c_tps / t_tps
settings = ("C: %s threads (OpenMP), env as given; PyTorch: %s threads, **%s** (`%s`); "
            "OPENBLAS_CORETYPE=%s both" % (cm.get("c.threads"), tm.get("torch.threads"),
                                           os.environ["BENCH_BEST"], os.environ["BENCH_BEST_SETTINGS"],
                                           os.environ["BENCH_CORETYPE"]))
conf = cm.get("llama.config", "").replace(",", ", ")
warn = []
if others_frac > 0.03:
    warn = ["", "**Warning: the machine was busy: other processes took %.0f%% of the CPU time "
            "during the run, so the numbers below are noisy.** Rerun on an idle machine for "
            "numbers to quote." % (100 * others_frac)]
lines = [
    "# anyref LLaMA training throughput vs PyTorch",
    "",
    "| | |",
    "|---|---|",
    "| date | %s |" % os.environ["BENCH_DATE"],
    "| CPU | %s, %d CPUs online |" % (cpu, ncpu),
    "| model | %s |" % conf,
    "| parameters | %s total, %s trainable, %s in matmuls (N of 6N) |"
    % (cm.get("llama.params_total"), cm.get("llama.params_trainable"), cm.get("llama.params_matmul")),
    "| FLOPs per step | executed %.1f GFLOP (fwd %s + bwd %s), 6N estimate %.1f GFLOP |"
    % (fl_exec, cm.get("llama.gflop_step_fwd"), cm.get("llama.gflop_step_bwd"), fl_6n),
    "| GEMM ceiling | %s GFLOP/s (best cblas_sgemm in the C process, CORETYPE=%s, OpenBLAS `%s`) |"
    % (cr.get("ceiling_gflops"), os.environ["BENCH_CORETYPE"], cm.get("c.openblas_corename")),
    "| C side | gcc %s, %s |" % (cm.get("c.compiler"), cm.get("c.openblas_config")),
    "| PyTorch | %s, CPU kernels %s, BLAS %s, AdamW foreach=%s |"
    % (tm.get("torch.version"), tm.get("torch.cpu_capability"), tm.get("torch.blas"),
       tm.get("torch.adamw_foreach")),
    "| PyTorch probe (2-layer step ms) | %s |" % "; ".join(
        "%s %s" % tuple(p.split(" ")[:2]) for p in probes if p.strip() and " " in p),
    "| steps | %s timed after %s warm-up (median step) |" % (cr.get("steps"), cr.get("warmup")),
    "| machine load | %.1f%% of the CPU time went to other processes during the %.0f s run "
    "(load average at the start: %s) |" % (100 * others_frac, w1 - w0, os.environ["BENCH_LOAD_START"]),
] + warn + [
    "",
    "ratio = C tokens/s ÷ PyTorch tokens/s (> 1: C is faster). MFU = model FLOPs per second ÷ "
    "GEMM ceiling: *executed* counts the work this freezing needs (forward, input gradients, the "
    "lm_head weight gradient, LoRA, causal attention pairs); *6N* is the conventional "
    "6·N_matmul + 12·L·T·D per token, which assumes every weight gets a gradient.",
    "",
    "| tokens/s C | tokens/s torch | ratio C/torch | MFU C (executed · 6N) | MFU torch (executed · 6N) "
    "| peak RSS C | peak RSS torch | settings |",
    "|--:|--:|--:|--:|--:|--:|--:|---|",
    "| %.1f | %.1f | %.2f | %s · %s | %s · %s | %s MiB | %s MiB | %s |"
    % (c_tps, t_tps, ratio, pct(mfu_c), pct(mfu6_c), pct(mfu_t), pct(mfu6_t),
       cr.get("peak_rss_mib"), tr.get("peak_rss_mib"), settings),
    "",
    "tokens/s, MFU and the times below are medians over the timed steps. Fastest step: C %.1f "
    "tokens/s (MFU executed %s), PyTorch %.1f tokens/s (%s), ratio %.2f."
    % (c_best, pct(mfu(fl_exec, float(cr["step_ms_best"]))), t_best,
       pct(mfu(fl_exec, float(tr["step_ms_best"]))), c_best / t_best),
    "",
    "Step breakdown (median ms): forward includes zero_grad and the loss; optimiser includes "
    "the gradient-norm clip.",
    "",
    "| side | step | fastest step | forward | backward | optimiser | loss (last) |",
    "|---|--:|--:|--:|--:|--:|--:|",
    "| C | %s | %s | %s | %s | %s | %s |"
    % (cr["step_ms"], cr["step_ms_best"], cr["fwd_ms"], cr["bwd_ms"], cr["opt_ms"], cr["loss"]),
    "| torch | %s | %s | %s | %s | %s | %s |"
    % (tr["step_ms"], tr["step_ms_best"], tr["fwd_ms"], tr["bwd_ms"], tr["opt_ms"], tr["loss"]),
]
cb, tb = parse(os.path.join(raw, "llama_c_bf16.txt"))[1], parse(os.path.join(raw, "llama_torch_bf16.txt"))[1]
if cb and tb:
    cbm = parse(os.path.join(raw, "llama_c_bf16.txt"))[0]
    lines += ["", "bf16: C with the frozen projections stored as bf16 and `train.gemm = bf16` (%s; lm_head's "
              "products from a bf16 copy of its fp32 weight; activations, trainable weights and AdamW state fp32), PyTorch with every weight, activation, "
              "gradient and AdamW state in bf16 (`--dtype bf16`), same environment as above." % cbm.get("c.gemm_detail", "?"), "",
              "| precision | tokens/s C | tokens/s torch | ratio C/torch | step ms C | step ms torch | loss C | loss torch |",
              "|---|--:|--:|--:|--:|--:|--:|--:|",
              "| fp32 | %.1f | %.1f | %.2f | %s | %s | %s | %s |" % (c_tps, t_tps, ratio, cr["step_ms"], tr["step_ms"],
                                                           cr["loss"], tr["loss"]),
              "| bf16 | %s | %s | %.2f | %s | %s | %s | %s |" % (cb["tokens_per_s"], tb["tokens_per_s"],
                                                           float(cb["tokens_per_s"]) / float(tb["tokens_per_s"]),
                                                           cb["step_ms"], tb["step_ms"], cb["loss"], tb["loss"])]
if gemms:
    lines += ["", "The model's GEMMs alone in C (`linear_forward` / `linear_backward`, best of 5): "
              "the rate OpenBLAS gives at these shapes.", "",
              "| GEMM | shape (tokens x in -> out) | ms | GFLOP/s | % of ceiling |", "|---|---|--:|--:|--:|"]
    for g in gemms:
        lines.append("| %s | %s | %s | %s | %s%% |" % (g["gemm"], g["shape"], g["ms"], g["gflops"], g["pct"]))
md = "\n".join(lines) + "\n"
with open(os.path.join(out, "bench_llama.md"), "w") as f:
    f.write(md)
print(md, end="")
print("bench_llama: wrote %s" % os.path.join(out, "bench_llama.md"))
EOF
