#!/usr/bin/env bash
# Runs each test program given as an argument, each in its own process, and
# ends with one pass/fail summary line. Exit status 0 only if all passed.
set -u
pass=0; fail=0; failed=()
for t in "$@"; do
    name=$(basename "$t")
    start=$EPOCHREALTIME
    if "$t"; then
        pass=$((pass + 1)); status=PASS
    else
        fail=$((fail + 1)); failed+=("$name"); status=FAIL
    fi
    awk -v s="$start" -v e="$EPOCHREALTIME" -v st="$status" -v n="$name" 'BEGIN { printf "== %s %s (%.1f s)\n", st, n, e - s }'
done
if [ "$fail" -eq 0 ]; then
    echo "summary: $pass test programs passed, 0 failed"
else
    echo "summary: $pass test programs passed, $fail failed: ${failed[*]}"
    exit 1
fi
