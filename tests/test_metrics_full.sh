#!/usr/bin/env bash
# test_metrics_full: the metrics database cannot be written (issue 9, D12):
# the server reports every failed write and does not claim a status it
# could not record. The full disk is simulated without root by a file-size
# limit (ulimit -f, SIGXFSZ ignored): SQLite's writes past it fail.
# The limit (40 KB) lets the server open the database (its -shm index takes
# 32 KB) and record the run's start; the run reaches it while training: the
# failed writes are reported, and the run's end, which cannot be recorded,
# is reported with exit status 1. (A start that cannot be recorded is not
# reachable this way: the run is then not started, see s_start_run in server/membership.c.)
source "$(dirname "$0")/lib.sh"
S=(--bind 'tcp://127.0.0.1:*' --workers 1 --epochs 1 --train-limit 1280 --test-limit 100 --data-dir "$MNIST_DIR" --db "$TMP/m.db" --out "$TMP/out" --checkpoint-every 0)
# The database and its schema, made without a limit.
expect_exit 1 "a first start makes the database" -- $B/paramserver "${S[@]}" --register-timeout 0.5
limited() { # limited KB LOG: the server under a file-size limit, in the background
    ( ulimit -f "$1"; trap '' XFSZ; exec $B/paramserver "${S[@]}" --register-timeout 30 ) >"$2" 2>&1 &
    srv=$!; pids+=("$srv")
    wait_for 30 "the server to listen" has_endpoint "$2"
}

limited 40 "$TMP/s2.log"
$B/worker --server "$(endpoint "$TMP/s2.log")" --name w --data-dir "$MNIST_DIR" >"$TMP/w2.log" 2>&1 || true
wait "$srv" && fail "the server exited 0"
grep -q "warning: a write to the metrics database failed" "$TMP/s2.log" || { cat "$TMP/s2.log"; fail "no failed write reported"; }
grep -q "writes to the metrics database failed: its figures of this run are incomplete" "$TMP/s2.log" || { cat "$TMP/s2.log"; fail "no count of failed writes"; }
grep -q "the run's end could not be recorded" "$TMP/s2.log" || { cat "$TMP/s2.log"; fail "the unrecorded end is not reported"; }
ok "failed writes and the unrecorded end are reported; exit 1"
done_testing
