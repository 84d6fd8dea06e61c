#!/bin/sh
# bench/run.sh <bench_binary> <outdir> — the whole benchmark behind `make bench`.
#
#  1. the C bench (GEMM ceiling + every kernel) with OPENBLAS_CORETYPE as the
#     environment sets it, and the ceiling alone once more with it unset, so
#     the table shows both the forced and the auto-detected OpenBLAS kernels;
#  2. a short probe of PyTorch under each candidate environment below (BLAS
#     build x OpenMP wait policy, glibc malloc told to keep its memory), then
#     the full PyTorch bench under the fastest one: PyTorch at its best;
#  3. joins both into <outdir>/bench.md (printed) and <outdir>/bench.jsonl.
# Raw outputs stay in <outdir>/raw/. Needs /usr/bin/python3 with torch and
# torchvision (scripts/deps.sh python). See bench/README.md for the columns.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 <bench_binary> <outdir>" >&2
  exit 2
fi
bin=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
raw="$out/raw"
mkdir -p "$raw"
[ -x "$bin" ] || { echo "bench: $bin is not an executable" >&2; exit 1; }

# shellcheck source=bench/common.sh
. "$here/common.sh"
wait_for_idle bench
start_clock

echo "bench: C kernels (OPENBLAS_CORETYPE=${coretype:-unset}) ..." >&2
"$bin" > "$raw/c.txt"
if [ -n "$coretype" ]; then
  echo "bench: GEMM ceiling with OPENBLAS_CORETYPE unset ..." >&2
  env -u OPENBLAS_CORETYPE "$bin" --ceiling-only > "$raw/c_auto.txt"
else
  : > "$raw/c_auto.txt"
fi

# Probe: score = mean of log(ms) over the probe rows (fwd+bwd, else fwd), so
# that every row counts as much as every other whatever its size.
echo "bench: probing PyTorch environments ..." >&2
: > "$raw/probe_scores.txt"
printf '%s\n' "$CANDIDATES" | while read -r label settings; do
  # shellcheck disable=SC2086  # settings is a list of VAR=value words
  env $settings "$py" "$here/bench_torch.py" --probe > "$raw/probe_$label.txt"
  score=$(awk '/^kernel=/ { for (i = 1; i <= NF; i++) {
             split($i, kv, "="); v[kv[1]] = kv[2] }
           ms = (v["fwdbwd_ms"] != "-") ? v["fwdbwd_ms"] : v["fwd_ms"]
           s += log(ms); n++ }
           END { if (n) printf "%.4f", s / n; else print "inf" }' "$raw/probe_$label.txt")
  echo "$label $score $settings" >> "$raw/probe_scores.txt"
  echo "bench:   $label score=$score" >&2
done
best_line=$(sort -k2,2g "$raw/probe_scores.txt" | head -n 1)
best=$(echo "$best_line" | cut -d' ' -f1)
best_settings=$(echo "$best_line" | cut -d' ' -f3-)

echo "bench: PyTorch with $best ($best_settings) ..." >&2
# shellcheck disable=SC2086
env $best_settings "$py" "$here/bench_torch.py" > "$raw/torch.txt"
# How much CPU did other processes take meanwhile? (all busy time of the
# machine minus the CPU time of this script's children)
stat_end=$(head -n 1 /proc/stat)
wall_end=$(date +%s.%N)
times > "$raw/times.txt"   # not in a pipeline: a subshell would report its own children
children=$(tail -n 1 "$raw/times.txt")

# ---------------------------------------------------------------- the join
BENCH_RAW=$raw BENCH_OUT=$out BENCH_DATE=$date_utc BENCH_CORETYPE=${coretype:-unset} \
BENCH_BEST=$best BENCH_BEST_SETTINGS=$best_settings \
BENCH_LOAD_START=$load_start BENCH_STAT_START=$stat_start BENCH_STAT_END=$stat_end \
BENCH_WALL=$wall_start:$wall_end BENCH_CHILDREN=$children \
BENCH_HERE=$here "$py" - <<'EOF'
import json
import os
import platform
import sys

sys.path.insert(0, os.environ["BENCH_HERE"])
import benchlib  # noqa: E402

raw, out = os.environ["BENCH_RAW"], os.environ["BENCH_OUT"]


def parse(path):
    """-> (meta dict from '# key=value' lines, list of row dicts from 'kernel=' lines)"""
    meta, rows = {}, []
    if not os.path.exists(path):
        return meta, rows
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("# ") and "=" in line:
            k, v = line[2:].split("=", 1)
            meta[k] = v
        elif line.startswith("kernel="):
            rows.append(dict(f.split("=", 1) for f in line.split()))
    return meta, rows


def num(v):
    return None if v in (None, "-", "") else float(v)


w0, w1, others_frac = benchlib.run_load()


c_meta, c_rows = parse(os.path.join(raw, "c.txt"))
a_meta, a_rows = parse(os.path.join(raw, "c_auto.txt"))
t_meta, t_rows = parse(os.path.join(raw, "torch.txt"))
torch_by_key = {(r["kernel"], r["shape"]): r for r in t_rows}

cpu = benchlib.cpu_model()
ceiling = num(c_meta.get("c.ceiling_gflops"))
ceiling_auto = num(a_meta.get("c.ceiling_gflops"))
probes = [l.split(" ", 2) for l in open(os.path.join(raw, "probe_scores.txt")).read().splitlines()]

meta = {
    "date": os.environ["BENCH_DATE"],
    "cpu": cpu,
    "cpus_online": os.cpu_count(),
    "c_threads": c_meta.get("c.threads"),
    "torch_threads": t_meta.get("torch.threads"),
    "openblas_coretype": os.environ["BENCH_CORETYPE"],
    "openblas_config": c_meta.get("c.openblas_config"),
    "openblas_corename": c_meta.get("c.openblas_corename"),
    "openblas_corename_unset": a_meta.get("c.openblas_corename"),
    "gemm_ceiling_gflops": ceiling,
    "gemm_ceiling_gflops_coretype_unset": ceiling_auto,
    "compiler": "gcc " + c_meta.get("c.compiler", "?"),
    "c_env": {k[4:]: v for k, v in c_meta.items() if k.startswith("env.")},
    "torch_version": t_meta.get("torch.version"),
    "torchvision_version": t_meta.get("torchvision.version"),
    "torch_cpu_capability": t_meta.get("torch.cpu_capability"),
    "torch_blas": t_meta.get("torch.blas"),
    "torch_adamw_foreach": t_meta.get("torch.adamw_foreach"),
    "torch_setting": os.environ["BENCH_BEST"],
    "torch_env": {k[4:]: v for k, v in t_meta.items() if k.startswith("env.")},
    "torch_probe_scores": {p[0]: {"score_mean_log_ms": float(p[1]), "settings": p[2]}
                           for p in probes},
    "python": platform.python_version(),
    "kernel": platform.release(),
    "loadavg_start": os.environ["BENCH_LOAD_START"],
    "wall_s": round(w1 - w0, 1),
    "other_processes_cpu_fraction": round(others_frac, 4),
}

records = []
for r in c_rows:
    k, s = r["kernel"], r["shape"]
    t = torch_by_key.get((k, s), {})
    rec = {"kernel": k, "shape": s,
           "c_fwd_ms": num(r.get("fwd_ms")), "c_fwdbwd_ms": num(r.get("fwdbwd_ms")),
           "torch_fwd_ms": num(t.get("fwd_ms")), "torch_fwdbwd_ms": num(t.get("fwdbwd_ms")),
           "coretype": r.get("coretype", meta["openblas_coretype"]) if k == "sgemm"
           else meta["openblas_coretype"]}
    for ph in ("fwd", "fwdbwd"):
        c, tt = rec["c_%s_ms" % ph], rec["torch_%s_ms" % ph]
        rec["ratio_%s" % ph] = tt / c if c and tt else None
    if k == "sgemm":
        rec["c_fwd_gflops"] = num(r.get("gflops"))
        rec["c_fwd_pct"] = 100 * rec["c_fwd_gflops"] / ceiling if ceiling else None
        M, N, K = (int(x) for x in s.split("x"))
        if rec["torch_fwd_ms"]:
            rec["torch_fwd_gflops"] = 2.0 * M * N * K / (rec["torch_fwd_ms"] * 1e6)
            rec["torch_fwd_pct"] = 100 * rec["torch_fwd_gflops"] / ceiling if ceiling else None
    for ph in ("fwd", "fwdbwd"):
        work = num(r.get("gflop_%s" % ph))
        if work is None:
            continue
        rec["gflop_%s" % ph] = work
        rec["c_%s_gflops" % ph] = num(r.get("%s_gflops" % ph))
        rec["c_%s_pct" % ph] = num(r.get("%s_pct" % ph))
        tms = rec["torch_%s_ms" % ph]
        if tms:
            rec["torch_%s_gflops" % ph] = work * 1e3 / tms
            rec["torch_%s_pct" % ph] = (100 * work * 1e3 / tms / ceiling) if ceiling else None
    records.append(rec)
for r in a_rows:  # the ceiling with OPENBLAS_CORETYPE unset: C only
    g = num(r.get("gflops"))
    records.append({"kernel": "sgemm", "shape": r["shape"], "coretype": "unset",
                    "corename": r.get("corename"),
                    "c_fwd_ms": num(r.get("fwd_ms")), "c_fwdbwd_ms": None,
                    "torch_fwd_ms": None, "torch_fwdbwd_ms": None,
                    "ratio_fwd": None, "ratio_fwdbwd": None, "c_fwd_gflops": g,
                    "c_fwd_pct": 100 * g / ceiling_auto if ceiling_auto and g else None})


def f_ms(v):
    return "—" if v is None else ("%.3f" % v if v < 10 else "%.1f" % v)


def f_ratio(rec):
    fb, f = rec.get("ratio_fwdbwd"), rec.get("ratio_fwd")
    if fb is not None and f is not None:
        return "%.2f (fwd %.2f)" % (fb, f)
    if f is not None:
        return "%.2f" % f
    return "—"


def f_pct(rec):
    if rec["kernel"] == "sgemm":  # % of the best sgemm under the same CORETYPE
        g, p = rec.get("c_fwd_gflops"), rec.get("c_fwd_pct")
        return "—" if g is None else "%.0f GFLOP/s = %.0f%%" % (g, p)
    parts = []
    if rec.get("c_fwd_pct") is not None:
        parts.append("fwd %.0f%%" % rec["c_fwd_pct"])
    if rec.get("c_fwdbwd_pct") is not None:
        parts.append("fwd+bwd %.0f%%" % rec["c_fwdbwd_pct"])
    return " · ".join(parts) if parts else ""


def label(rec):
    if rec["kernel"] == "sgemm":
        return "sgemm (CORETYPE=%s)" % rec["coretype"]
    return rec["kernel"]


ce = meta["c_env"]
busy_warning = []
if others_frac > 0.03:
    busy_warning = ["**Warning: the machine was busy: other processes took %.0f%% of the CPU "
                    "time during the run, so the times below are noisy.** Rerun on an idle "
                    "machine for numbers to quote." % (100 * others_frac), ""]
lines = [
    "# anyref kernels vs PyTorch",
    "",
    "| | |",
    "|---|---|",
    "| date | %s |" % meta["date"],
    "| CPU | %s, %s CPUs online |" % (cpu, meta["cpus_online"]),
    "| threads | C: %s (OpenMP), PyTorch: %s (`torch.set_num_threads`) |"
    % (meta["c_threads"], meta["torch_threads"]),
    "| OPENBLAS_CORETYPE | %s (OpenBLAS picks `%s`; unset it picks `%s`) |"
    % (meta["openblas_coretype"], meta["openblas_corename"],
       meta["openblas_corename_unset"] or meta["openblas_corename"]),
    "| GEMM ceiling | %s GFLOP/s (best sgemm, CORETYPE=%s)%s |"
    % (ceiling, meta["openblas_coretype"],
       "; %s GFLOP/s with CORETYPE unset" % ceiling_auto if ceiling_auto else ""),
    "| C side | %s, %s; env: %s |"
    % (meta["compiler"], meta["openblas_config"],
       ", ".join("%s=%s" % kv for kv in sorted(ce.items()))),
    "| PyTorch | %s (torchvision %s), CPU kernels %s, BLAS %s, autograd AdamW foreach=%s |"
    % (meta["torch_version"], meta["torchvision_version"], meta["torch_cpu_capability"],
       meta["torch_blas"], meta["torch_adamw_foreach"]),
    "| PyTorch settings | **%s**: `%s` |" % (meta["torch_setting"],
                                            os.environ["BENCH_BEST_SETTINGS"]),
    "| PyTorch env | %s |" % ", ".join("%s=%s" % kv for kv in sorted(meta["torch_env"].items())),
    "| PyTorch probe (mean log ms, lower is better) | %s |"
    % "; ".join("%s %.3f" % (k, v["score_mean_log_ms"])
                for k, v in meta["torch_probe_scores"].items()),
    "| machine load | %.1f%% of the CPU time went to other processes during the %.0f s run "
    "(load average at the start: %s) |"
    % (100 * others_frac, w1 - w0, meta["loadavg_start"]),
    "",
    ] + busy_warning + [
    "Times are medians (sgemm: best) in milliseconds. ratio = PyTorch time / C time "
    "(> 1: C is faster), fwd+bwd first, forward in brackets. "
    "% of GEMM ceiling: the C kernel's GFLOP/s over the best sgemm GFLOP/s above.",
    "",
    "| kernel | shape | C fwd ms | C fwd+bwd ms | torch fwd ms | torch fwd+bwd ms "
    "| ratio torch/C (>1 = C faster) | % of GEMM ceiling |",
    "|---|---|--:|--:|--:|--:|--:|--:|",
]
for rec in records:
    lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
        label(rec), rec["shape"], f_ms(rec["c_fwd_ms"]), f_ms(rec["c_fwdbwd_ms"]),
        f_ms(rec["torch_fwd_ms"]), f_ms(rec["torch_fwdbwd_ms"]), f_ratio(rec), f_pct(rec)))
missing = sorted(set(torch_by_key) - {(r["kernel"], r["shape"]) for r in c_rows})
if missing:
    lines += ["", "PyTorch rows without a C row: " + ", ".join("%s %s" % m for m in missing)]
md = "\n".join(lines) + "\n"
with open(os.path.join(out, "bench.md"), "w") as f:
    f.write(md)
with open(os.path.join(out, "bench.jsonl"), "w") as f:
    f.write(json.dumps({"type": "meta", **meta}) + "\n")
    for rec in records:
        rec = {k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()}
        f.write(json.dumps({"type": "row", **rec}) + "\n")
print(md, end="")
print("bench: wrote %s and %s" % (os.path.join(out, "bench.md"), os.path.join(out, "bench.jsonl")))
EOF
