#!/bin/sh
# bench/run_pipeline.sh <bench_pipeline binary> <outdir> — samples/s of the
# RefCOCO sample pipeline (JPEG decode, SAM ResizeLongestSide 1024 + normalise
# + pad, CLIP 224 clip_resize_wo_crop + normalise, mask decode, question /
# answer tokenized into tokens and targets of T 512) through anyref's live
# loader (bench/bench_pipeline.c, data/loader.h) against PIL + numpy doing the
# same work (bench/pipeline_ref.py), with 1 and 2 workers. Part of `make
# bench`, after bench/run_encoders.sh. About 1 minute on 2 idle cores.
#
#  1. bench/make_refer_tree.py writes a RefCOCO-style tree into
#     <outdir>/pipe_tree: BENCH_PIPE_IMAGES (default 200) COCO-sized JPEGs,
#     instances.json with polygons, refs(unc).p pickled with protocol 2
#     (3 refs per 2 images: 300 samples for 200 images);
#  2. waits (up to BENCH_IDLE_WAIT s, default 60) for the CPUs to go idle;
#  3. the C bench, one process each: loader threads 0 (built in the caller),
#     1 and 2, one epoch; then --stages (the steps one by one, in one thread);
#  4. the Python side's environment: BENCH_PIPE_PY_ENV="<label> VAR=value ..."
#     if set, else a short probe (1 process, 60 samples) with glibc malloc as
#     it is and with bench/common.sh's malloc settings (no trim, no mmap: the
#     12 MB SAM array of every sample then reuses memory instead of faulting in
#     fresh pages), faster wins; then 1 process and a pool of 2 processes over
#     the same epoch, and --stages;
#  5. prints a Markdown table and writes <outdir>/bench_pipeline.md (raw
#     outputs in <outdir>/raw/pipe_*.txt); the tree is deleted unless
#     BENCH_PIPE_KEEP=1.
# BENCH_PIPE_PY (default /usr/bin/python3) runs the Python side; one with
# pycocotools (a venv made with --system-site-packages) decodes the masks as
# AnyRef does, else PIL's polygon fill stands in (the report says which).
# Both sides run with OPENBLAS_CORETYPE as the environment sets it (neither
# calls BLAS here); PyTorch (F.interpolate only) with 1 thread per process.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 <bench_pipeline_binary> <outdir>" >&2
  exit 2
fi
bin=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
py=${BENCH_PIPE_PY:-/usr/bin/python3}
[ -x "$bin" ] || { echo "bench_pipeline: $bin is not an executable" >&2; exit 1; }
mkdir -p "$out/raw"
out=$(cd "$out" && pwd)
raw="$out/raw"
tree="$out/pipe_tree"
tok="$root/tests/fixtures/tok_bpe.model"
nimg=${BENCH_PIPE_IMAGES:-200}

# shellcheck source=bench/common.sh
. "$here/common.sh"

echo "bench_pipeline: writing a RefCOCO-style tree of $nimg JPEGs into $tree ..." >&2
rm -rf "$tree"
"$py" "$here/make_refer_tree.py" "$tree" --images "$nimg" > "$raw/pipe_tree.txt"
wait_for_idle bench_pipeline
start_clock

for t in 0 1 2; do
  echo "bench_pipeline: C, loader threads=$t (OPENBLAS_CORETYPE=${coretype:-unset}) ..." >&2
  "$bin" --root="$tree" --tokenizer="$tok" --threads="$t" > "$raw/pipe_c_$t.txt"
done
"$bin" --root="$tree" --tokenizer="$tok" --stages > "$raw/pipe_c_stages.txt"

CANDIDATES="malloc-default
malloc-kept $MALLOC_SET"
[ -z "${BENCH_PIPE_PY_ENV:-}" ] && echo "bench_pipeline: probing the Python side's malloc (1 process, 60 samples) ..." >&2
pick_torch_env bench_pipeline "${BENCH_PIPE_PY_ENV:-}" "$raw/pipe_probe" \
    "$py" "$here/pipeline_ref.py" "$tree" --tokenizer "$tok" --procs 1 --samples 60
echo "bench_pipeline: PIL + numpy, 1 and 2 processes, with $best (${best_settings:-no settings}) ..." >&2
# shellcheck disable=SC2086  # best_settings is a list of VAR=value
env $best_settings "$py" "$here/pipeline_ref.py" "$tree" --tokenizer "$tok" --procs 1,2 > "$raw/pipe_py.txt"
# shellcheck disable=SC2086
env $best_settings "$py" "$here/pipeline_ref.py" "$tree" --tokenizer "$tok" --stages > "$raw/pipe_py_stages.txt"

stat_end=$(head -n 1 /proc/stat)
wall_end=$(date +%s.%N)
times > "$raw/pipe_times.txt"
children=$(tail -n 1 "$raw/pipe_times.txt")
[ "${BENCH_PIPE_KEEP:-0}" = 1 ] || rm -rf "$tree"

BENCH_RAW=$raw BENCH_OUT=$out BENCH_DATE=$date_utc BENCH_CORETYPE=${coretype:-unset} \
BENCH_BEST=$best BENCH_BEST_SETTINGS=$best_settings BENCH_PY=$py \
BENCH_LOAD_START=$load_start BENCH_STAT_START=$stat_start BENCH_STAT_END=$stat_end \
BENCH_WALL=$wall_start:$wall_end BENCH_CHILDREN=$children \
BENCH_HERE=$here "$py" - <<'EOF'
import os
import sys

sys.path.insert(0, os.environ["BENCH_HERE"])
import benchlib  # noqa: E402

raw, out = os.environ["BENCH_RAW"], os.environ["BENCH_OUT"]


def results(path):
    return benchlib.parse_bench_output(path)


w0, w1, others_frac = benchlib.run_load()
cpu, ncpu = benchlib.cpu_model(), os.cpu_count() or 1
c = {}
for t in (0, 1, 2):
    cm, cr, _ = results(os.path.join(raw, "pipe_c_%d.txt" % t))
    c[t] = cr[0]
_, _, cst = results(os.path.join(raw, "pipe_c_stages.txt"))
pm, pr, _ = results(os.path.join(raw, "pipe_py.txt"))
_, _, pst = results(os.path.join(raw, "pipe_py_stages.txt"))
p = {int(r["procs"]): r for r in pr}
tree = open(os.path.join(raw, "pipe_tree.txt")).read().strip().replace("make_refer_tree: ", "")
probes = [l.split() for l in open(os.path.join(raw, "pipe_probe_scores.txt")) if l.strip()]
sps = lambda r: float(r["samples_per_s"])  # noqa: E731

warn = []
if others_frac > 0.03:
    warn = ["", "**Warning: the machine was busy: other processes took %.0f%% of the CPU time during the run; "
            "rerun on an idle machine for numbers to quote.**" % (100 * others_frac)]
checks = []
for t in (0, 1, 2):
    if int(c[t]["broken"]) or int(c[t]["skipped"]):
        checks.append("anyref threads=%d: %s broken, %s skipped samples" % (t, c[t]["broken"], c[t]["skipped"]))
mask_same = all(c[t]["mask_px"] == c[0]["mask_px"] for t in (1, 2)) and c[0]["labels"] == c[1]["labels"] == c[2]["labels"]
checks.append("anyref threads 0/1/2 hand out the same epoch (mask pixels %s, supervised targets %s): %s"
              % (c[0]["mask_px"], c[0]["labels"], "yes" if mask_same else "**NO**"))
pmask = p[1]["mask_px"]
checks.append("ground-truth mask pixels of the epoch: anyref %s, Python %s (%s)"
              % (c[0]["mask_px"], pmask, "identical" if pmask == c[0]["mask_px"] else
                 "%+.3f%%: %s" % (100 * (float(pmask) / float(c[0]["mask_px"]) - 1),
                                  "PIL's polygon fill is not pycocotools' rasterisation"
                                  if not pm.get("py.mask", "").startswith("pycocotools") else "differ")))

lines = [
    "# anyref RefCOCO sample pipeline vs PIL + numpy",
    "",
    "| | |",
    "|---|---|",
    "| date | %s |" % os.environ["BENCH_DATE"],
    "| CPU | %s, %d CPUs online |" % (cpu, ncpu),
    "| data | %s |" % tree,
    "| sample | JPEG decode → SAM input [3, 1024, 1024] (ResizeLongestSide, bilinear, normalise, pad) + CLIP input "
    "[3, 224, 224] (AnyRef's clip_resize_wo_crop: bicubic shortest side 224, normalise, bilinear to 224²) + "
    "ground-truth mask (float, original size) + llava_v1 prompt tokenized into tokens/targets [512] "
    "(tests/fixtures/tok_bpe.model, [SEG] added) |",
    "| anyref | data/loader.h, one REFER source, `%s` (prefetch 0 = two batches), shuffled; gcc %s; "
    "the polygons are rasterised to RLE once at `ldr_open` (%.3f s), each sample decodes the RLE |"
    % (cm.get("c.config", "?").replace("threads=2,", ""), cm.get("c.compiler", "?"), float(c[0]["open_s"])),
    "| PIL + numpy | Python %s, PIL %s, numpy %s, torch %s, masks: %s, tokenizer: %s; open (json + pickle + join) "
    "%.3f s; 2 = `multiprocessing.Pool(2)` (fork, imap_unordered, chunks of 4); only a checksum leaves a worker |"
    % (pm.get("py.python"), pm.get("py.pil"), pm.get("py.numpy"), pm.get("py.torch"), pm.get("py.mask"),
       pm.get("py.tokenizer"), float(p[1]["open_s"])),
    "| Python probe (ms per sample) | %s |" % "; ".join("%s %s" % (q[0], q[1]) for q in probes),
    "| settings | anyref: env as given; Python (`%s`): **%s** (`%s`); OPENBLAS_CORETYPE=%s both (no BLAS call "
    "on either side); torch 1 thread per process |"
    % (os.environ["BENCH_PY"], os.environ["BENCH_BEST"], os.environ["BENCH_BEST_SETTINGS"] or "no settings",
       os.environ["BENCH_CORETYPE"]),
    "| machine load | %.1f%% of the CPU time went to other processes during the %.0f s run "
    "(load average at the start: %s) |" % (100 * others_frac, w1 - w0, os.environ["BENCH_LOAD_START"]),
] + warn + [
    "",
    "One epoch (%s samples) from the start of the workers to the last sample; samples/s (higher is better)."
    % c[1]["samples"],
    "",
    "| workers | anyref samples/s | PIL + numpy samples/s | ratio anyref / PIL+numpy | anyref CPU s · peak RSS |",
    "|---|--:|--:|--:|--:|",
    "| 0 (anyref: built in the caller) | %.1f | — | — | %.2f · %s MiB |"
    % (sps(c[0]), float(c[0]["cpu_s"]), c[0]["peak_rss_mib"]),
]
for n in (1, 2):
    lines.append("| %d (anyref: %d decode thread%s; Python: %s) | %.1f | %.1f | **%.2f** | %.2f · %s MiB |"
                 % (n, n, "s" if n > 1 else "", "1 process" if n == 1 else "2 processes", sps(c[n]), sps(p[n]),
                    sps(c[n]) / sps(p[n]), float(c[n]["cpu_s"]), c[n]["peak_rss_mib"]))
lines.append("| scaling 2 / 1 | %.2f× | %.2f× | | |" % (sps(c[2]) / sps(c[1]), sps(p[2]) / sps(p[1])))
lines += [
    "",
    "Where the time goes: each step alone, one thread, the first %d records in file order (ms per sample)."
    % cst["decode"][1],
    "",
    "| step | anyref ms | PIL + numpy ms | ratio |",
    "|---|--:|--:|--:|",
]
names = {"decode": "JPEG decode (libjpeg-turbo · PIL)", "sam": "SAM input: resize 1024, normalise, pad",
         "clip": "CLIP input: bicubic 224, normalise, bilinear 224²", "mask": "mask decode to floats",
         "text": "prompt → tokens, labels (preprocess_v1)"}
tc = tp = 0.0
for k, name in names.items():
    a, b = cst[k][0], pst[k][0]
    tc, tp = tc + a, tp + b
    lines.append("| %s | %.2f | %.2f | %.1f× |" % (name, a, b, b / a if a > 0 else float("inf")))
lines.append("| sum | %.2f | %.2f | %.1f× |" % (tc, tp, tp / tc))
lines += ["", "Checks: " + "; ".join(checks) + "."]
md = "\n".join(lines) + "\n"
with open(os.path.join(out, "bench_pipeline.md"), "w") as f:
    f.write(md)
print(md, end="")
print("bench_pipeline: wrote %s" % os.path.join(out, "bench_pipeline.md"))
EOF
