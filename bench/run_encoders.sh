#!/bin/sh
# bench/run_encoders.sh <bench_encoders binary> <anyref binary> <outdir> — forward
# throughput of the frozen image encoders at their real sizes (SAM ViT-B on
# 1024 x 1024, CLIP ViT-L/14 on 224 x 224 with LLaVA's select_layer -2) in
# anyref (bench/bench_encoders.c) and in PyTorch float32
# (bench/bench_encoders_torch.py), on the same machine, thread count and
# OPENBLAS_CORETYPE; then what the feature cache saves in training: one epoch
# of `anyref train` with SAM ViT-B computing the image embeddings, without the
# cache, with a cold cache and with a warm one. Part of `make bench`, after
# bench/run_sam.sh. About 3-4 minutes on 2 idle cores (most of it the SAM
# ViT-B forwards).
#
#  1. waits (up to BENCH_IDLE_WAIT s, default 60) for the CPUs to go idle;
#  2. the C bench, one process per encoder and batch (the first one also
#     measures the sgemm ceiling);
#  3. the PyTorch modules' self-test against the committed fixtures (a few s);
#  4. PyTorch's environment: BENCH_ENC_TORCH_ENV="<label> VAR=value ..." if set,
#     else a short probe (CLIP ViT-L, batch 1, 2 forwards) under each candidate
#     of bench/common.sh (BLAS build x OpenMP wait policy, malloc kept), fastest wins;
#  5. the PyTorch bench under that environment, one process per encoder and batch;
#  6. the feature cache: `anyref data planted --sam --dim 256 --grid 64` writes
#     BENCH_ENC_CACHE_IMAGES (default 4) training samples with 1024 x 1024
#     /sam_pixels; configs/grounding-tiny.cfg with the real mask decoder
#     (dim 256, 64 x 64 grid, 8 heads, MLP 2048) and sam_encoder.model=vit_b
#     trains one epoch (images / 2 steps of batch 2, no validation) three times:
#     no data.cache (the encoder runs, as in every epoch without a cache), a
#     new cache (epoch 1: computes and stores), the same cache again (epoch 2:
#     every embedding a hit); then `anyref cache` on the full cache (lookups
#     only). Wall time of each process, and the training-loop time it logs;
#  7. prints a Markdown table and writes <outdir>/bench_encoders.md (raw outputs
#     in <outdir>/raw/enc_*.txt; the cache run's data is deleted afterwards).
# BENCH_ENC_CLIP_BATCHES (default "1 4") and BENCH_ENC_SAM_BATCHES (default
# "1 2") choose the batch sizes; an empty list skips that encoder.
# BENCH_ENC_SAM16_BATCHES (default "1"): SAM ViT-B in bf16 as well — anyref
# with its block matrices stored in bf16 and ANYREF_GEMM=bf16 (every product
# of the blocks, attention included, bf16 x bf16: oneDNN), PyTorch with the
# module and image in bfloat16 (`--dtype bf16`).
set -eu

if [ $# -ne 3 ]; then
  echo "usage: $0 <bench_encoders_binary> <anyref_binary> <outdir>" >&2
  exit 2
fi
bin=$1
anyref=$2
out=$3
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
py=/usr/bin/python3
raw="$out/raw"
mkdir -p "$raw"
[ -x "$bin" ] || { echo "bench_encoders: $bin is not an executable" >&2; exit 1; }
[ -x "$anyref" ] || { echo "bench_encoders: $anyref is not an executable" >&2; exit 1; }
out=$(cd "$out" && pwd)
raw="$out/raw"
anyref=$(cd "$(dirname "$anyref")" && pwd)/$(basename "$anyref")
clip_batches=${BENCH_ENC_CLIP_BATCHES-1 4}
sam_batches=${BENCH_ENC_SAM_BATCHES-1 2}
nimg=${BENCH_ENC_CACHE_IMAGES:-4}
cbatch=2
if [ "$nimg" -lt 2 ] || [ $((nimg % cbatch)) -ne 0 ]; then
  echo "bench_encoders: BENCH_ENC_CACHE_IMAGES must be an even number >= 2" >&2
  exit 2
fi

# warm-up and timed forwards per encoder and batch (2 idle cores: CLIP ViT-L
# ~0.7 s per image, SAM ViT-B ~5 s in anyref and several times that in PyTorch)
steps_for() {
  case $1 in
    clip_l) if [ "$2" -le 1 ]; then echo "1 5"; else echo "1 2"; fi ;;
    *)      if [ "$2" -le 1 ]; then echo "1 2"; else echo "1 1"; fi ;;
  esac
}
runs=""
for b in $clip_batches; do runs="$runs clip_l:$b"; done
for b in $sam_batches; do runs="$runs sam_b:$b"; done
for b in ${BENCH_ENC_SAM16_BATCHES-1}; do runs="$runs sam_b16:$b"; done
[ -n "$runs" ] || { echo "bench_encoders: no encoder to run" >&2; exit 2; }

# shellcheck source=bench/common.sh
. "$here/common.sh"
wait_for_idle bench_encoders
start_clock

ceil="--ceiling"
for r in $runs; do
  m=${r%:*} b=${r#*:}
  # shellcheck disable=SC2046  # two numbers: warm-up, timed forwards
  set -- $(steps_for "$m" "$b")
  echo "bench_encoders: C, $m batch $b (OPENBLAS_CORETYPE=${coretype:-unset}) ..." >&2
  if [ "$m" = sam_b16 ]; then   # the bf16 run: bf16 weights and GEMMs
    ANYREF_GEMM=bf16 "$bin" --model=sam_b --frozen-bf16 --batch="$b" --warmup="$1" --reps="$2" > "$raw/enc_c_${m}_$b.txt"
    continue
  fi
  # shellcheck disable=SC2086  # ceil is empty or one option
  "$bin" --model="$m" --batch="$b" --warmup="$1" --reps="$2" $ceil > "$raw/enc_c_${m}_$b.txt"
  [ -n "$ceil" ] && first=$raw/enc_c_${m}_$b.txt
  ceil=""
done
threads=$(sed -n 's/^# c\.threads=//p' "$first")

echo "bench_encoders: PyTorch modules against the committed fixtures ..." >&2
"$py" "$here/bench_encoders_torch.py" --threads "$threads" --selftest > "$raw/enc_torch_selftest.txt" || {
  cat "$raw/enc_torch_selftest.txt" >&2
  echo "bench_encoders: the PyTorch modules do not match the references; not timing them" >&2
  exit 1
}

[ -z "${BENCH_ENC_TORCH_ENV:-}" ] && echo "bench_encoders: probing PyTorch environments (CLIP ViT-L, batch 1, 2 forwards) ..." >&2
pick_torch_env bench_encoders "${BENCH_ENC_TORCH_ENV:-}" "$raw/enc_probe" \
    "$py" "$here/bench_encoders_torch.py" --threads "$threads" --model clip_l --batch 1 --warmup 1 --reps 2

for r in $runs; do
  m=${r%:*} b=${r#*:}
  # shellcheck disable=SC2046
  set -- $(steps_for "$m" "$b")
  echo "bench_encoders: PyTorch, $m batch $b, with $best ($best_settings) ..." >&2
  # shellcheck disable=SC2086
  dt=fp32 tm=$m
  [ "$m" = sam_b16 ] && dt=bf16 tm=sam_b
  env $best_settings "$py" "$here/bench_encoders_torch.py" --threads "$threads" --model "$tm" --batch "$b" \
      --dtype "$dt" --warmup "$1" --reps "$2" > "$raw/enc_torch_${m}_$b.txt"
done

# ---- the feature cache: one training epoch, without / cold / warm
cdir="$out/enc_cache"
rm -rf "$cdir"
mkdir -p "$cdir"
echo "bench_encoders: feature cache, $nimg SAM ViT-B images (1024 x 1024) ..." >&2
"$anyref" data planted --out "$cdir/data" --dim 256 --grid 64 --train "$nimg" --val 0 --sam > "$raw/enc_cache_data.txt" 2>&1
steps=$((nimg / cbatch))
# (the runs work in $cdir so that nothing lands in the caller's directory)
timed() {  # timed LABEL anyref-args...: raw/enc_cache_LABEL.txt gets the log and "wall_s=<s>"
  label=$1
  shift
  t0=$(date +%s.%N)
  (cd "$cdir" && ANYREF_PROGRESS=off "$anyref" "$@") > "$raw/enc_cache_$label.txt" 2>&1 || {
    cat "$raw/enc_cache_$label.txt" >&2
    echo "bench_encoders: anyref $1 failed (cache run '$label')" >&2
    exit 1
  }
  t1=$(date +%s.%N)
  echo "wall_s=$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')" >> "$raw/enc_cache_$label.txt"
  if [ -f "$cdir/run_$label/metrics.jsonl" ]; then cp "$cdir/run_$label/metrics.jsonl" "$raw/enc_cache_${label}_metrics.jsonl"; fi
}
set -- "$root/configs/grounding-tiny.cfg" "data.train=$cdir/data/train.h5" "data.val=" \
    sam.dim=256 sam.grid=64 sam.heads=8 sam.mlp_dim=2048 sam.iou_hidden=256 sam_encoder.model=vit_b \
    "train.steps=$steps" "train.batch_size=$cbatch" train.eval_every=0 train.save_every=0 train.min_val_giou=0
timed nocache train "$@" "run.dir=$cdir/run_nocache"
timed cold train "$@" "run.dir=$cdir/run_cold" "data.cache=$cdir/features.h5"
timed warm train "$@" "run.dir=$cdir/run_warm" "data.cache=$cdir/features.h5"
timed fill cache "$@" "run.dir=$cdir/run_fill" "data.cache=$cdir/features.h5"
cache_bytes=$(wc -c < "$cdir/features.h5")
rm -rf "$cdir"

stat_end=$(head -n 1 /proc/stat)
wall_end=$(date +%s.%N)
times > "$raw/enc_times.txt"
children=$(tail -n 1 "$raw/enc_times.txt")

BENCH_RAW=$raw BENCH_OUT=$out BENCH_DATE=$date_utc BENCH_CORETYPE=${coretype:-unset} \
BENCH_BEST=$best BENCH_BEST_SETTINGS=$best_settings BENCH_RUNS=$runs BENCH_FIRST=$first \
BENCH_NIMG=$nimg BENCH_CBATCH=$cbatch BENCH_CACHE_BYTES=$cache_bytes \
BENCH_LOAD_START=$load_start BENCH_STAT_START=$stat_start BENCH_STAT_END=$stat_end \
BENCH_WALL=$wall_start:$wall_end BENCH_CHILDREN=$children \
BENCH_HERE=$here "$py" - <<'EOF'
import json
import os
import re
import sys

sys.path.insert(0, os.environ["BENCH_HERE"])
import benchlib  # noqa: E402

raw, out = os.environ["BENCH_RAW"], os.environ["BENCH_OUT"]


parse = benchlib.parse_meta_result


def cache_run(label):
    text = open(os.path.join(raw, "enc_cache_%s.txt" % label)).read()
    r = {"wall": float(re.search(r"^wall_s=([0-9.]+)", text, re.M).group(1)), "loop": None}
    mpath = os.path.join(raw, "enc_cache_%s_metrics.jsonl" % label)
    if os.path.exists(mpath):   # elapsed_s of the last step: the steps, without the final checkpoint's save
        r["loop"] = [json.loads(l) for l in open(mpath) if l.strip()][-1]["elapsed_s"]
    m = re.search(r"(\d+) hits, (\d+) misses", text)
    r["hits"], r["misses"] = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    return r


w0, w1, others_frac = benchlib.run_load()
ncpu = os.cpu_count() or 1
cpu = benchlib.cpu_model()
ceiling = float(parse(os.environ["BENCH_FIRST"])[0]["c.ceiling_gflops"])
runs = []
for r in os.environ["BENCH_RUNS"].split():
    m, b = r.split(":")
    cm, cr = parse(os.path.join(raw, "enc_c_%s_%s.txt" % (m, b)))
    tm, tr = parse(os.path.join(raw, "enc_torch_%s_%s.txt" % (m, b)))
    runs.append((m, b, cm, cr, tm, tr))
cm0, tm0 = runs[0][2], runs[0][4]
selftest = [l[2:].strip() for l in open(os.path.join(raw, "enc_torch_selftest.txt")) if l.startswith("# selftest")]
probes = open(os.path.join(raw, "enc_probe_scores.txt")).read().split("\n")
settings = ("C: %s threads (OpenMP), env as given; PyTorch: %s threads, torch.no_grad(), **%s** (`%s`); "
            "OPENBLAS_CORETYPE=%s both" % (cm0.get("c.threads"), tm0.get("torch.threads"), os.environ["BENCH_BEST"],
                                           os.environ["BENCH_BEST_SETTINGS"], os.environ["BENCH_CORETYPE"]))
configs = {}
for m, b, cm, cr, tm, tr in runs:
    if m == "sam_b16":   # the same model as sam_b
        continue
    configs.setdefault(m, (cm.get("enc.config", "").rsplit(",batch=", 1)[0].replace(",", ", "),
                           cm.get("enc.params"), tm.get("enc.params")))
warn = []
if others_frac > 0.03:
    warn = ["", "**Warning: the machine was busy: other processes took %.0f%% of the CPU time "
            "during the run, so the numbers below are noisy.** Rerun on an idle machine for "
            "numbers to quote." % (100 * others_frac)]
lines = [
    "# anyref frozen image encoders (SAM ViT-B, CLIP ViT-L/14) vs PyTorch, and the feature cache",
    "",
    "| | |",
    "|---|---|",
    "| date | %s |" % os.environ["BENCH_DATE"],
    "| CPU | %s, %d CPUs online |" % (cpu, ncpu),
] + ["| %s | %s (%s parameters; PyTorch %s) |" % (m, c, pc, pt) for m, (c, pc, pt) in configs.items()] + [
    "| C side | gcc %s, backend %s |" % (cm0.get("c.compiler"), cm0.get("c.backend")),
    "| PyTorch | %s, CPU kernels %s, BLAS %s |" % (tm0.get("torch.version"), tm0.get("torch.cpu_capability"),
                                                 tm0.get("torch.blas")),
    "| PyTorch modules | %s |" % "; ".join(selftest),
    "| PyTorch probe (CLIP ViT-L, batch 1, forward ms) | %s |" % "; ".join(
        "%s %s" % tuple(p.split(" ")[:2]) for p in probes if p.strip() and " " in p),
    "| settings | %s |" % settings,
    "| sgemm ceiling | %.1f GFLOP/s (best `cblas_sgemm`, same process as the first C run) |" % ceiling,
    "| machine load | %.1f%% of the CPU time went to other processes during the %.0f s run "
    "(load average at the start: %s) |" % (100 * others_frac, w1 - w0, os.environ["BENCH_LOAD_START"]),
] + warn + [
    "",
    "Forward only, random weights and images, median of the timed forwards after warm-up; "
    "ratio = PyTorch time ÷ C time (> 1: C is faster). GFLOP/s counts the work the C side "
    "executes (multiply-adds × 2: Linear layers, attention products, SAM's relative-position "
    "terms, patch embedding, SAM's neck) for both sides; % = C GFLOP/s ÷ the sgemm ceiling "
    "(the bf16 row's block products run on oneDNN's bf16 kernels, which can exceed it).",
    "",
    "| encoder | batch | forwards (warm-up + timed) | C ms | C images/s | C GFLOP/s (% of ceiling) "
    "| torch ms | torch images/s | torch GFLOP/s | ratio torch/C | peak RSS C · torch |",
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
]
for m, b, cm, cr, tm, tr in runs:
    c_ms, t_ms, gf = float(cr["step_ms"]), float(tr["step_ms"]), float(cr["gflop"])
    name = {"sam_b": "SAM ViT-B 1024²", "sam_b16": "SAM ViT-B 1024², bf16 (anyref: bf16 block weights, "
            "ANYREF_GEMM=bf16; torch: module in bfloat16)"}.get(m, "CLIP ViT-L/14 224² (23 layers)")
    lines.append("| %s | %s | %s + %s | %.0f | %.3g | %.0f (%.0f%%) | %.0f | %.3g | %.0f | **%.2f** | %s · %s MiB |"
                 % (name, b, cr["warmup"], cr["reps"], c_ms, float(cr["images_per_s"]), float(cr["gflops"]),
                    100 * float(cr["gflops"]) / ceiling, t_ms, float(tr["images_per_s"]), gf / (t_ms / 1e3),
                    t_ms / c_ms, cr["peak_rss_mib"], tr["peak_rss_mib"]))

n, cb = int(os.environ["BENCH_NIMG"]), int(os.environ["BENCH_CBATCH"])
cr = {k: cache_run(k) for k in ("nocache", "cold", "warm", "fill")}
lines += [
    "",
    "## The feature cache: one training epoch with SAM ViT-B computing the image embeddings",
    "",
    "`anyref data planted --sam --dim 256 --grid 64 --train %d --val 0` (1024×1024 `/sam_pixels`), "
    "`configs/grounding-tiny.cfg` with the real mask decoder (`sam.dim=256 sam.grid=64 sam.heads=8 "
    "sam.mlp_dim=2048 sam.iou_hidden=256`), `sam_encoder.model=vit_b`, one epoch = %d steps of batch %d, "
    "no validation; the same epoch without `data.cache`, with a new cache (epoch 1: every embedding "
    "computed and stored) and with that cache again (epoch 2: every embedding read, checksum-verified). "
    "Wall = the whole `anyref` process (start-up, random init of the 90 M encoder weights, hashing them "
    "for the cache's encoder id, writing the final 50 MB checkpoint); loop = the training steps alone "
    "(`elapsed_s` of the last step in `metrics.jsonl`). Cache file: %.1f MiB "
    "(%d entries of 256×64×64 floats)."
    % (n, n // cb, cb, int(os.environ["BENCH_CACHE_BYTES"]) / 1048576.0, n),
    "",
    "| run | cache hits · misses | wall s | loop s | images/s (loop) | speed-up over epoch 1 (wall · loop) |",
    "|---|--:|--:|--:|--:|--:|",
]
cold = cr["cold"]
for label, name in (("nocache", "`anyref train`, no cache"), ("cold", "`anyref train`, epoch 1 (cold cache)"),
                    ("warm", "`anyref train`, epoch 2 (warm cache)"),
                    ("fill", "`anyref cache` on the full cache (lookups only)")):
    r = cr[label]
    hm = "—" if r["hits"] is None else "%d · %d" % (r["hits"], r["misses"])
    loop = "—" if r["loop"] is None else "%.2f" % r["loop"]
    ips = "%.3g" % (n / r["loop"]) if r["loop"] else "(%.3g wall)" % (n / r["wall"])
    su = "—" if label in ("cold", "fill") else "%.1f× · %s" % (
        cold["wall"] / r["wall"], "%.1f×" % (cold["loop"] / r["loop"]) if r["loop"] and cold["loop"] else "—")
    if label == "cold":
        su = "1"
    lines.append("| %s | %s | %.2f | %s | %s | %s |" % (name, hm, r["wall"], loop, ips, su))
md = "\n".join(lines) + "\n"
with open(os.path.join(out, "bench_encoders.md"), "w") as f:
    f.write(md)
print(md, end="")
print("bench_encoders: wrote %s" % os.path.join(out, "bench_encoders.md"))
EOF
