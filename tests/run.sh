#!/bin/sh
# Runs the given test binaries (or every test_* in the directory $1), shows
# their output, and ends with "N passed, M failed".
# A test binary prints one line per check: "ok   <name> <detail>" or "FAIL <name> <detail>".
# A binary that crashes or exits non-zero without a FAIL line counts as one failure.
if [ $# -eq 1 ] && [ -d "$1" ]; then set -- "$1"/test_*; fi
[ $# -eq 0 ] && set -- build/tests/test_*
pass=0; fail=0
for t in "$@"; do
  case "$t" in *.d|*.o) continue ;; esac
  if [ ! -x "$t" ]; then echo "FAIL $(basename "$t") not built"; fail=$((fail + 1)); continue; fi
  name=$(basename "$t")
  echo "== $name"
  out=$(cd "$(dirname "$0")/.." && "$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | grep -c '^ok ')
  f=$(printf '%s\n' "$out" | grep -c '^FAIL ')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $name exited with status $rc"
    f=1
  fi
  pass=$((pass + p)); fail=$((fail + f))
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
