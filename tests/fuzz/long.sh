#!/bin/sh
# tests/fuzz/long.sh — the long libFuzzer run behind `make fuzz-long`.
#   sh tests/fuzz/long.sh BUILD [TARGET...]
# For each target (default: every tests/fuzz/fuzz_*.c): the starting corpus is
# tests/fuzz/corpus/<target>/ plus the seeds the smoke driver uses (fixtures,
# regression inputs; BUILD/tests/test_fuzz_<target> writes them with
# FUZZ_DUMP_SEEDS). BUILD/fuzz/fuzz_<target> (clang libFuzzer + ASan + UBSan)
# runs for FUZZ_LONG_SECONDS (default 240) in BUILD/fuzz-long/<target>/work,
# FUZZ_LONG_JOBS (default 2) targets at a time. Then the corpus is minimised
# with -merge=1 into tests/fuzz/corpus/<target>/: the inputs that add
# coverage to the seeds (which are not copied: they are fixtures already),
# of at most FUZZ_LONG_KEEP_LEN bytes (default 1024), so the committed corpus
# stays small; inputs are at most FUZZ_LONG_MAX_LEN bytes (default 4096)
# while fuzzing. FUZZ_LONG_SECONDS=0 only re-minimises the last run's work
# directories. A crash is left as BUILD/fuzz-long/<target>/crash-* and
# reported; copy it to tests/fuzz/seeds/<target>/ once fixed, so every
# `make test` replays it. Summary per target: executions, seconds, corpus
# size, crashes. Runs from the repository root; needs clang.
set -u
B=${1:?usage: long.sh BUILD [TARGET...]}; shift
S=${FUZZ_LONG_SECONDS:-240}
J=${FUZZ_LONG_JOBS:-2}
MAXLEN=${FUZZ_LONG_MAX_LEN:-4096}
KEEP=${FUZZ_LONG_KEEP_LEN:-1024}
cd "$(dirname "$0")/../.."
if [ $# -eq 0 ]; then
  set -- $(ls tests/fuzz/fuzz_*.c | sed 's|.*/fuzz_||; s|\.c$||')
fi
mkdir -p "$B/fuzz-long"

one() {
  t=$1; d=$B/fuzz-long/$t
  if [ "$S" -gt 0 ]; then
    rm -rf "$d"; mkdir -p "$d/work" "$d/seeds" "tests/fuzz/corpus/$t"
    FUZZ_DUMP_SEEDS="$d/seeds" "$B/tests/test_fuzz_$t" > /dev/null || { echo "FAIL fuzz-long $t: cannot dump seeds"; return; }
    "$B/fuzz/fuzz_$t" -max_total_time="$S" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -max_len="$MAXLEN" -print_final_stats=1 -artifact_prefix="$d/" \
        "$d/work" "tests/fuzz/corpus/$t" "$d/seeds" > "$d/log" 2>&1
  fi
  rc=$?
  # minimise: the seeds go in first (merged into seedcov/, never kept: the
  # driver reads them from the fixtures anyway), then what adds coverage to
  # them, inputs up to KEEP bytes only
  rm -rf "$d/min" "$d/seedcov" "$d/big"; mkdir -p "$d/min" "$d/seedcov" "$d/big"
  "$B/fuzz/fuzz_$t" -merge=1 -timeout=20 "$d/seedcov" "$d/seeds" > "$d/merge0.log" 2>&1
  ls "$d/seedcov" > "$d/seedsums"
  for f in "$d/work"/* "tests/fuzz/corpus/$t"/*; do
    [ -f "$f" ] && [ "$(wc -c < "$f")" -le "$KEEP" ] && cp "$f" "$d/big/" 2> /dev/null
  done
  "$B/fuzz/fuzz_$t" -merge=1 -timeout=20 "$d/seedcov" "$d/big" > "$d/merge.log" 2>&1
  for f in "$d/seedcov"/*; do
    [ -f "$f" ] && ! grep -q "^$(basename "$f")\$" "$d/seedsums" 2> /dev/null && cp "$f" "$d/min/"
  done
  rm -f "tests/fuzz/corpus/$t"/*; mkdir -p "tests/fuzz/corpus/$t"; cp "$d/min"/* "tests/fuzz/corpus/$t/" 2> /dev/null
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$d/log" | grep -o '[0-9]*$')
  crashes=$(ls "$d" | grep -c '^\(crash\|leak\|timeout\|oom\)-')
  where=""; [ "$crashes" -gt 0 ] && where=" in $d"
  echo "fuzz-long $t: ${execs:-?} executions in $S s, exit $rc, corpus $(ls "tests/fuzz/corpus/$t" | wc -l) files ($(cat "tests/fuzz/corpus/$t"/* 2> /dev/null | wc -c) bytes), $crashes crash files$where"
}

for t in "$@"; do echo "$t"; done | {
  n=0
  while read -r t; do
    one "$t" &
    n=$((n + 1))
    if [ "$n" -ge "$J" ]; then wait; n=0; fi
  done
  wait
}
