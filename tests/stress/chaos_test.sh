#!/usr/bin/env bash
# chaos_test.sh EXPECTATION CHAOS [ARGS...]: runs the chaos program.
#   pass              the run must exit 0 (no overlap, hang, error or leak);
#   detects-overlaps  the run must exit 1 and report overlaps (the detector's
#                     own check, with --variant=no-lock or
#                     --variant=semaphore-no-lock).
set -uo pipefail
expectation="$1"
chaos="$2"
shift 2
output=$("$chaos" "$@" 2>&1)
code=$?
printf '%s\n' "$output"
case "$expectation" in
  pass)
    exit "$code"
    ;;
  detects-overlaps)
    overlaps=$(printf '%s\n' "$output" | awk '$1 ~ /no-lock$/ {print $6}')
    if [[ "$code" -eq 1 && -n "$overlaps" && "$overlaps" -gt 0 ]]; then
      echo "chaos_test: the detector reported ${overlaps} overlaps and exit 1, as it must"
      exit 0
    fi
    echo "chaos_test: expected exit 1 with overlaps > 0 from an unlocked run, got exit ${code}, overlaps '${overlaps}'"
    exit 1
    ;;
  *)
    echo "chaos_test: unknown expectation ${expectation}"
    exit 2
    ;;
esac
