# shellcheck shell=sh disable=SC2034  # variables set here are read by the sourcing scripts
# bench/common.sh — sourced by bench/run.sh, run_llama.sh and run_sam.sh:
# PyTorch's candidate environments, waiting for an idle machine, the start-of-run
# facts every report prints, and the probe that picks PyTorch's fastest setting.

# glibc malloc that neither trims the heap nor hands big blocks to mmap: each
# autograd step then reuses the memory of the previous one instead of
# faulting in fresh zeroed pages. (MALLOC_MMAP_THRESHOLD_ alone cannot do it:
# glibc caps that threshold at 32 MiB, below a 512x32000 logits tensor.)
MALLOC_SET="MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_MMAP_MAX_=0"
OBLAS_OMP=/usr/lib/x86_64-linux-gnu/openblas-openmp
# Candidate PyTorch environments, one per line: "<label> <VAR=value ...>".
# libblas.so.3 resolves to the pthread OpenBLAS by default (Debian
# alternatives); LD_LIBRARY_PATH points it at the OpenMP build the C side uses.
# GOMP_SPINCOUNT caps how long idle OpenMP threads busy-wait (the default
# spins for a while, PASSIVE not at all).
CANDIDATES="pthread-passive OMP_WAIT_POLICY=PASSIVE $MALLOC_SET
pthread-spin10k GOMP_SPINCOUNT=10000 $MALLOC_SET
openmp LD_LIBRARY_PATH=$OBLAS_OMP $MALLOC_SET
openmp-passive LD_LIBRARY_PATH=$OBLAS_OMP OMP_WAIT_POLICY=PASSIVE $MALLOC_SET
openmp-spin10k LD_LIBRARY_PATH=$OBLAS_OMP GOMP_SPINCOUNT=10000 $MALLOC_SET"

busy_percent() {  # % of CPU time busy over the next 2 seconds
  a=$(head -n 1 /proc/stat); sleep 2; b=$(head -n 1 /proc/stat)
  printf '%s\n%s\n' "$a" "$b" | awk '
    NR == 1 { for (i = 2; i <= 9; i++) x[i] = $i }
    NR == 2 { for (i = 2; i <= 9; i++) { d = $i - x[i]; t += d; if (i == 5 || i == 6) idle += d }
              printf "%d", (t > 0 ? 100 * (t - idle) / t : 0) }'
}

# wait_for_idle TAG: waits (up to BENCH_IDLE_WAIT seconds, default 60) for
# other processes to leave the CPUs alone — these benchmark the whole machine.
wait_for_idle() {
  idle_wait=${BENCH_IDLE_WAIT:-60}
  waited=0
  while :; do
    busy=$(busy_percent)
    [ "$busy" -le 10 ] && break
    if [ "$waited" -ge "$idle_wait" ]; then
      echo "$1: the machine is still ${busy}% busy after ${waited} s; measuring anyway" >&2
      break
    fi
    [ "$waited" -eq 0 ] && echo "$1: the machine is ${busy}% busy; waiting up to ${idle_wait} s for it to go idle ..." >&2
    waited=$((waited + 2))
  done
}

# start_clock: the facts a report prints about the start of the run.
start_clock() {
  coretype=${OPENBLAS_CORETYPE:-}
  load_start=$(cut -d' ' -f1-3 /proc/loadavg)
  stat_start=$(head -n 1 /proc/stat)
  wall_start=$(date +%s.%N)
  date_utc=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
}

# pick_torch_env TAG GIVEN PREFIX COMMAND...: sets best and best_settings.
# GIVEN ("<label> VAR=value ...", may be empty) wins; otherwise COMMAND runs
# under each candidate (output in PREFIX_<label>.txt, which must print a
# "result ... step_ms=<ms> ..." line) and the fastest wins; scores go to
# PREFIX_scores.txt.
pick_torch_env() {
  tag=$1 given=$2 prefix=$3
  shift 3
  if [ -n "$given" ]; then
    best=$(echo "$given" | cut -d' ' -f1)
    best_settings=$(echo "$given" | cut -s -d' ' -f2-)
    echo "given" > "${prefix}_scores.txt"
    return
  fi
  : > "${prefix}_scores.txt"
  printf '%s\n' "$CANDIDATES" | while read -r label settings; do
    # shellcheck disable=SC2086  # settings is a list of VAR=value
    env $settings "$@" > "${prefix}_$label.txt"
    score=$(sed -n 's/^result .* step_ms=\([0-9.]*\) .*/\1/p' "${prefix}_$label.txt")
    echo "$label ${score:-inf} $settings" >> "${prefix}_scores.txt"
    echo "$tag:   $label step_ms=$score" >&2
  done
  best_line=$(sort -k2,2g "${prefix}_scores.txt" | head -n 1)
  best=$(echo "$best_line" | cut -d' ' -f1)
  best_settings=$(echo "$best_line" | cut -d' ' -f3-)
}
