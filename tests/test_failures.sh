#!/usr/bin/env bash
# test_failures: what happens when processes die.
#  1. A worker killed with SIGKILL in a sync run is evicted after
#     --worker-timeout; the other worker, held at the barrier all that time,
#     is not evicted but finishes; the run ends 'done'; the eviction is
#     recorded.
#  2. The server killed with SIGKILL mid-run leaves a database that passes
#     PRAGMA integrity_check and still holds every row that was committed
#     (visible to another connection) before the kill.
# Waits are polls of a condition with a deadline, never fixed sleeps.
source "$(dirname "$0")/lib.sh"


start_run() { # start_run NAME EXTRA_SERVER_FLAGS...: server + 2 workers
    local name=$1; shift
    $B/paramserver --bind 'tcp://127.0.0.1:*' --workers 2 --mode sync --epochs 1 \
        --test-limit 500 --data-dir "$MNIST_DIR" --db "$TMP/$name.db" --out "$TMP/$name" "$@" \
        >"$TMP/$name.server.log" 2>&1 &
    server=$!; pids+=("$server")
    wait_for 30 "the server to listen" has_endpoint "$TMP/$name.server.log"
    local ep; ep=$(endpoint "$TMP/$name.server.log")
    for k in 0 1; do
        $B/worker --server "$ep" --name "w$k" --data-dir "$MNIST_DIR" --timeout 10 \
            >"$TMP/$name.worker$k.log" 2>&1 &
        wpid[$k]=$!; pids+=("$!")
    done
}

# 1. A worker dies.
# 4 epochs: with the current kernels one epoch of 10,000 images per worker
# can end before its first step rows are committed and seen here.
start_run evict --train-limit 20000 --epochs 4 --worker-timeout 2
wait_for 60 "worker 0 to make 20 steps" \
    at_least "$TMP/evict.db" 'select count(*) from steps where worker_id = 0' 20
k=$(sed -n 's/.*worker 0 registered: w\([01]\) .*/\1/p' "$TMP/evict.server.log")
kill -9 "${wpid[$k]}"
ok "worker 0 (process w$k) killed with SIGKILL after 20+ steps"
wait_for 120 "the server to finish" gone "$server"
wait "$server" || { cat "$TMP/evict.server.log"; fail "the server failed"; }
wait "${wpid[$((1 - k))]}" || { cat "$TMP/evict.server.log"; fail "the surviving worker 1 failed"; }
grep -q "evicting worker 0" "$TMP/evict.server.log" || { cat "$TMP/evict.server.log"; fail "no eviction in the server log"; }
ok "the server evicted worker 0 and finished with worker 1 (held at the barrier meanwhile, not evicted)"
[ "$(rows "$TMP/evict.db" "select kind from events where worker_id = 0 and kind = 'evicted'")" = evicted ] || fail "no eviction event"
[ "$(rows "$TMP/evict.db" "select status from runs")" = done ] || fail "run not done"
[ -f "$TMP/evict/model_distributed.safetensors" ] || fail "no model saved"
ok "the database records the eviction; the run is done and the model saved"

# 2. A worker dies and is restarted under the same name: it rejoins as
# incarnation 1 and resumes after its last applied step; the run finishes.
start_run rejoin --train-limit 20000 --worker-timeout 60
ep=$(endpoint "$TMP/rejoin.server.log")
wait_for 60 "worker 1 to make 20 steps" \
    at_least "$TMP/rejoin.db" 'select count(*) from steps where worker_id = 1' 20
k=$(sed -n 's/.*worker 1 registered: w\([01]\) .*/\1/p' "$TMP/rejoin.server.log")
kill -9 "${wpid[$k]}"
$B/worker --server "$ep" --name "w$k" --data-dir "$MNIST_DIR" --timeout 10 >"$TMP/rejoin.again.log" 2>&1 &
again=$!; pids+=("$again")
wait_for 120 "the server to finish" gone "$server"
wait "$server" || { cat "$TMP/rejoin.server.log"; fail "the server failed"; }
wait "$again" || { cat "$TMP/rejoin.again.log"; fail "the restarted worker failed"; }
grep -q "rejoined as incarnation 1, resuming after step" "$TMP/rejoin.again.log" || { cat "$TMP/rejoin.again.log"; tail -5 "$TMP/rejoin.server.log"; fail "no rejoin"; }
[ "$(rows "$TMP/rejoin.db" "select count(*) from workers where worker_id = 1 and incarnation = 1")" = 1 ] || fail "no incarnation row"
[ "$(rows "$TMP/rejoin.db" "select count(*) from events where kind = 'done'")" = 2 ] || fail "not both done"
steps1=$(rows "$TMP/rejoin.db" 'select max(step) from steps where worker_id = 1')
[ "$steps1" = 157 ] || fail "worker 1 ended at step $steps1, not 157"
ok "the restarted worker rejoined as incarnation 1, finished its shard (157 steps), the run is done"

# 3. The server dies.
start_run crash --train-limit 60000
wait_for 60 "300 committed step rows" at_least "$TMP/crash.db" 'select count(*) from steps' 300
before=$(rows "$TMP/crash.db" 'select count(*) from steps')
kill -9 "$server"
ok "server killed with SIGKILL with $before step rows committed"
for k in 0 1; do wait "${wpid[$k]}" 2>/dev/null || true; done  # they give up after --timeout
[ "$(sqlite3 "$TMP/crash.db" 'pragma integrity_check')" = ok ] || fail "integrity_check failed"
ok "the database passes PRAGMA integrity_check"
after=$(rows "$TMP/crash.db" 'select count(*) from steps')
[ "$after" -ge "$before" ] || fail "$after step rows after the kill, $before before"
[ "$(rows "$TMP/crash.db" 'select count(*) from runs')" = 1 ] || fail "the run row is lost"
[ "$(rows "$TMP/crash.db" 'select count(*) from workers')" = 2 ] || fail "worker rows lost"
ok "all $before rows committed before the kill are there ($after now), with the run and workers"
grep -q "no reply to push" "$TMP/crash.worker0.log" || { cat "$TMP/crash.worker0.log"; fail "worker 0 did not report the lost server"; }
ok "the workers exit with 'no reply' once the server is gone"
done_testing
