#!/bin/sh
# bench/run_mpi.sh <MPI anyref binary> <outdir> — data-parallel training of the
# demo model over MPI, then live sources (issue 11's benchmark). Part of `make bench`;
# about 25 s.
#
# The demo model (configs/demo.cfg, every weight trainable: 95,936 floats =
# 375 KiB of gradients), 1 thread per rank, BENCH_MPI_STEPS steps (default
# 300) of the same global batch (64 sequences):
#   - 1 rank x grad_accum 2 (the MPI binary started alone: no MPI at all);
#   - 2 ranks x grad_accum 1, buckets started after backward (dist.overlap=0);
#   - 2 ranks x grad_accum 1, buckets started during backward (dist.overlap=1).
# Buckets of BENCH_MPI_BUCKET_MB (default 0.0625 MiB: 6 buckets, so there is
# something to overlap in a model this small). The all-reduce's exposed time
# is what the ranks wait in MPI_Waitall after backward (the run's final log
# line); the fraction hidden behind backward is 1 - exposed(overlap) /
# exposed(no overlap). Prints a Markdown table and writes <outdir>/bench_mpi.md.
# Then live sources (data.kind = sources, `anyref data shapes --size small`
# read by configs/shapes-tiny.cfg, BENCH_MPI_LIVE_STEPS steps (default 60) of
# 8 samples, decoding in the training thread, data.workers=0, so that it is
# on the step's path): 1 rank x accum 2, and 2 ranks x accum 1 with and
# without dist.share_samples: ms per step and samples built per sample
# trained (the runs' "data: ... built" line); the 1-rank run's data_wait_s
# gives the decoding time per sample.
# On a 2-core machine both ranks share the cores with nothing else: idle it.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 <MPI anyref binary> <outdir>" >&2
  exit 2
fi
bin=$1
out=$2
mkdir -p "$out/raw"
steps=${BENCH_MPI_STEPS:-300}
bucket=${BENCH_MPI_BUCKET_MB:-0.0625}
if ! command -v mpirun > /dev/null 2>&1; then
  echo "bench_mpi: mpirun not found (make deps installs openmpi-bin); skipped" | tee "$out/bench_mpi.md"
  exit 0
fi
: "${OMPI_MCA_btl:=self,vader}" "${OMPI_MCA_btl_vader_single_copy_mechanism:=none}" "${OMPI_MCA_oob_tcp_if_include:=lo}"
: "${OMPI_ALLOW_RUN_AS_ROOT:=1}" "${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:=1}" "${OMP_WAIT_POLICY:=passive}"
export OMPI_MCA_btl OMPI_MCA_btl_vader_single_copy_mechanism OMPI_MCA_oob_tcp_if_include OMPI_ALLOW_RUN_AS_ROOT \
       OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMP_WAIT_POLICY
common="train.steps=$steps train.eval_every=0 train.min_accuracy=0 train.threads=1 train.batch_size=32 \
train.save_every=0 data.eval_samples=32 dist.bucket_mb=$bucket"
run() {  # name, launcher..., then the run's own keys after --
  name=$1; shift
  "$@" > "$out/raw/mpi_$name.txt" 2>&1 || { echo "bench_mpi: run $name failed:"; tail -5 "$out/raw/mpi_$name.txt"; exit 1; }
}
run 1rank "$bin" train configs/demo.cfg $common train.grad_accum=2 run.dir="$out/mpi_1rank"
run 2ranks_after mpirun --oversubscribe --allow-run-as-root -np 2 "$bin" train configs/demo.cfg $common \
    train.grad_accum=1 dist.overlap=0 run.dir="$out/mpi_2after"
run 2ranks_during mpirun --oversubscribe --allow-run-as-root -np 2 "$bin" train configs/demo.cfg $common \
    train.grad_accum=1 dist.overlap=1 run.dir="$out/mpi_2during"
# "done: steps 1..N in X s" and "gradient all-reduce: ... of M MiB ...: E of S started ...; W s waited"
secs() { sed -n 's/.*done: steps [0-9.]* in \([0-9.]*\) s.*/\1/p' "$out/raw/mpi_$1.txt" | head -n 1; }
waited() { sed -n 's/.*gradient all-reduce:.*; \([0-9.]*\) s waited.*/\1/p' "$out/raw/mpi_$1.txt" | head -n 1; }
mib() { sed -n 's/.*gradient all-reduce: [0-9]* steps of \([0-9.]*\) MiB.*/\1/p' "$out/raw/mpi_$1.txt" | head -n 1; }
early() { sed -n 's/.*MiB: \([0-9]* of [0-9]*\) started.*/\1/p' "$out/raw/mpi_$1.txt" | head -n 1; }
s1=$(secs 1rank); sa=$(secs 2ranks_after); sd=$(secs 2ranks_during)
wa=$(waited 2ranks_after); wd=$(waited 2ranks_during)
{
  echo "### Data-parallel demo model over MPI ($(nproc) cores, 1 thread per rank, $steps steps of 64 sequences)"
  echo
  echo "| run | ms per step | all-reduce per step | waited after backward, ms per step | buckets started during backward |"
  echo "|---|---|---|---|---|"
  awk -v s="$s1" -v n="$steps" 'BEGIN { printf "| 1 rank x accum 2 | %.2f | — | — | — |\n", 1e3 * s / n }'
  awk -v s="$sa" -v w="$wa" -v n="$steps" -v m="$(mib 2ranks_after)" -v e="$(early 2ranks_after)" \
      'BEGIN { printf "| 2 ranks x accum 1, after backward | %.2f | %.0f KiB | %.3f | %s |\n", 1e3 * s / n, m * 1024, 1e3 * w / n, e }'
  awk -v s="$sd" -v w="$wd" -v n="$steps" -v m="$(mib 2ranks_during)" -v e="$(early 2ranks_during)" \
      'BEGIN { printf "| 2 ranks x accum 1, during backward | %.2f | %.0f KiB | %.3f | %s |\n", 1e3 * s / n, m * 1024, 1e3 * w / n, e }'
  echo
  awk -v a="$wa" -v d="$wd" 'BEGIN { if (a > 0) printf "Communication hidden behind backward: %.0f%% (1 - waited during / waited after).\n", 100 * (1 - d / a); else print "Communication hidden behind backward: n/a (nothing waited)." }'
} | tee "$out/bench_mpi.md"

# live sources: each rank decoding its own share (dist.share_samples) or every sample
lsteps=${BENCH_MPI_LIVE_STEPS:-60}
"$bin" data shapes --out "$out/shapes_small" --size small > "$out/raw/mpi_shapes.txt" 2>&1 ||
  { echo "bench_mpi: anyref data shapes failed:"; tail -5 "$out/raw/mpi_shapes.txt"; exit 1; }
d="$out/shapes_small"
live="data.tokenizer=$d/tokenizer.json source.root=$d/refer_seg source.images=$d/refer_seg \
source2.file=$d/custom/shapes.jsonl source3.root=$d/avsbench data.workers=0 train.threads=1 train.eval_every=0 \
train.save_every=0 train.steps=$lsteps train.batch_size=4"
run live_1rank "$bin" train configs/shapes-tiny.cfg $live train.grad_accum=2 run.dir="$out/mpi_live1"
run live_2shared mpirun --oversubscribe --allow-run-as-root -np 2 "$bin" train configs/shapes-tiny.cfg $live \
    train.grad_accum=1 dist.share_samples=1 run.dir="$out/mpi_live2s"
run live_2all mpirun --oversubscribe --allow-run-as-root -np 2 "$bin" train configs/shapes-tiny.cfg $live \
    train.grad_accum=1 dist.share_samples=0 run.dir="$out/mpi_live2a"
lsecs() { tail -n 1 "$1/metrics.jsonl" | sed -n 's/.*"elapsed_s":\([0-9.eE+-]*\).*/\1/p'; }
each() { sed -n 's/.*data: .* built [0-9]* samples for the [0-9]* trained on (\([0-9.]*\) each.*/\1/p' "$out/raw/mpi_$1.txt" | head -n 1; }
wait1=$(tail -n 1 "$out/mpi_live1/metrics.jsonl" | sed -n 's/.*"data_wait_s":\([0-9.eE+-]*\).*/\1/p')
{
  echo
  echo "### Live sources on several ranks ($lsteps steps of 8 samples, shapes-tiny model, decoding in the training thread)"
  echo
  echo "| run | ms per step | samples built per sample trained |"
  echo "|---|---|---|"
  for r in "live_1rank:live1:1 rank x accum 2" "live_2shared:live2s:2 ranks x accum 1, dist.share_samples = 1" \
           "live_2all:live2a:2 ranks x accum 1, dist.share_samples = 0"; do
    tag=${r%%:*}; rest=${r#*:}
    awk -v s="$(lsecs "$out/mpi_${rest%%:*}")" -v n="$lsteps" -v e="$(each "$tag")" -v name="${rest#*:}" \
        'BEGIN { printf "| %s | %.2f | %s |\n", name, 1e3 * s / n, e }'
  done
  echo
  awk -v w="$wait1" -v n="$lsteps" 'BEGIN { printf "Decoding one sample took %.2f ms (1 rank: data_wait_s / samples).\n", 1e3 * w / (8 * n) }'
} | tee -a "$out/bench_mpi.md"
