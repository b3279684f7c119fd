#!/usr/bin/env bash
# Runs each test program given as an argument, each in its own process and
# under a time limit (TEST_TIMEOUT seconds, default 600 x TEST_TIME_SCALE: a hung test fails
# with a message instead of hanging the suite), and ends with one summary
# line counting programs and test cases: cmocka's "N test(s)" lines and the
# shell tests' "N checks passed". Exit status 0 only if all passed.
set -u
TEST_TIMEOUT=${TEST_TIMEOUT:-$((600 * ${TEST_TIME_SCALE:-1}))}
pass=0; fail=0; cases=0; failed=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "$@"; do
    name=$(basename "$t")
    start=$EPOCHREALTIME
    # timeout signals the test's whole process group, so servers and workers
    # a test started in the background stop with it.
    timeout --kill-after=10 "$TEST_TIMEOUT" "$t" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then
        pass=$((pass + 1)); status=PASS
    else
        fail=$((fail + 1)); failed+=("$name"); status=FAIL
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            echo "== $name: still running after ${TEST_TIMEOUT} s, stopped (a hang? on a slow machine raise TEST_TIMEOUT=SECONDS)"
        fi
    fi
    # cmocka: "[  PASSED  ] N test(s)."; the shell tests: "N checks passed".
    n=$(sed -n -e 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\.$/\1/p' \
        -e 's/^\([0-9][0-9]*\) checks passed$/\1/p' "$log" | tail -1)
    cases=$((cases + ${n:-0}))
    awk -v s="$start" -v e="$EPOCHREALTIME" -v st="$status" -v n="$name" -v c="${n:-0}" \
        'BEGIN { printf "== %s %s: %d test cases passed (%.1f s)\n", st, n, c, e - s }'
done
if [ "$fail" -eq 0 ]; then
    echo "summary: $pass test programs passed ($cases test cases), 0 failed"
else
    echo "summary: $pass test programs passed ($cases test cases), $fail failed: ${failed[*]}"
    exit 1
fi
