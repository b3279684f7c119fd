#!/usr/bin/env bash
# test_run_local: `make run`'s script, deploy/run-local.sh, with a server
# group (SHARDS=2): a short run finishes with the head, the shard and both
# workers; a SIGTERM mid-run stops every process it started; a shard that
# cannot start (its port taken) stops the run at once with a message naming
# it; a wrong SHARDS is refused; MODEL=lenet5 trains that model.
source "$(dirname "$0")/lib.sh"

# A base port with PORT..PORT+1 free on loopback (run-local uses fixed ports).
free() { ! ss -Hltn "sport = :$1" | grep -q .; }
for _ in $(seq 50); do
    port=$((20000 + RANDOM % 40000))
    free "$port" && free $((port + 1)) && break
done
# mine: the processes run-local started (their command lines hold the port).
mine() { pgrep -f "127.0.0.1:($port|$((port + 1)))" >/dev/null; }
# run-local with the test's settings; its results in $TMP/out.
rl() { env PORT="$port" EPOCHS=1 TRAIN_LIMIT=3000 DB="$TMP/m.db" OUT="$TMP/out" BUILD="$B" "$@" deploy/run-local.sh; }

expect_exit 2 "SHARDS=0 is refused" -- rl SHARDS=0
expect_output "SHARDS=0: must be a number of server processes" "saying what SHARDS must be"

expect_exit 0 "SHARDS=2 run-local: a run with the head, a shard and 2 workers" -- rl SHARDS=2
expect_output "2 server process\(es\)" "it says it runs 2 server processes"
expect_output "^summary: mode=sync workers=2 finished=2" "the head's summary"
[ "$(rows "$TMP/m.db" "select count(*) from runs where mode = 'sync' and status = 'done'")" = 1 ] ||
    fail "no finished sync run in the database: $(rows "$TMP/m.db" 'select id, mode, status from runs')"
grep -q . "$TMP/out/logs/shard1.log" || fail "the shard's log is empty"
[ "$(rows "$TMP/m.db" 'select count(distinct shard) from shard_stats where updates > 0')" = 2 ] ||
    fail "not both shards applied updates: $(rows "$TMP/m.db" 'select shard, max(updates) from shard_stats group by shard')"
ok "one finished sync run; both shards applied updates; the shard logged into logs/shard1.log"

# MODEL=lenet5 (make run MODEL=lenet5): a basic run of it first (the comparison), then the server's.
expect_exit 0 "MODEL=lenet5 run-local: a basic and a sync run of lenet5" -- rl MODEL=lenet5
expect_output "no basic run of lenet5 on mnist" "it trains lenet5's basic run first"
[ "$(rows "$TMP/m.db" "select count(*) from runs where mode = 'sync' and model = 'lenet5' and status = 'done'")" = 1 ] ||
    fail "no finished lenet5 sync run: $(rows "$TMP/m.db" 'select id, mode, model, status from runs')"
ok "the sync run is of lenet5 (runs.model)"
wait_for 10 "no process of the run left" eval '! mine'
ok "no process of the run left"

# SIGTERM while the run trains (the script handles INT, Ctrl-C, the same way).
# (Not through rl: $! must be the script itself, not a subshell running rl.)
env PORT="$port" SHARDS=2 EPOCHS=20 TRAIN_LIMIT=3000 DB="$TMP/m.db" OUT="$TMP/term" BUILD="$B" \
    deploy/run-local.sh >"$TMP/term.log" 2>&1 &
rlpid=$!
pids+=("$rlpid")
wait_for 60 "the workers to register" grep -q "registered: worker1" "$TMP/term/logs/server.log"
kill -TERM "$rlpid"
set +e; wait "$rlpid"; st=$?; set -e
[ "$st" = 130 ] || { cat "$TMP/term.log"; fail "after SIGTERM: exit $st, expected 130"; }
wait_for 10 "every process of the run to stop after SIGTERM" eval '! mine'
ok "SIGTERM mid-run: exit 130, every process it started stopped"

# Shard 1's port taken: the shard fails, and with it the run, at once.
"$B"/paramserver --bind "tcp://127.0.0.1:$((port + 1))" --workers 1 --register-timeout 60 \
    --db "$TMP/other.db" --out "$TMP/other" >"$TMP/other.log" 2>&1 &
other=$!
pids+=("$other")
wait_for 30 "the port's other listener" has_endpoint "$TMP/other.log"
start=$SECONDS
expect_exit 1 "a shard that cannot listen stops the run" -- rl SHARDS=2
expect_output "shard 1 failed" "naming the shard"
[ $((SECONDS - start)) -lt 60 ] || fail "it took $((SECONDS - start)) s"
kill "$other" && wait "$other" || true
wait_for 10 "no process of the failed run left" eval '! mine'
ok "at once, and no process of the run is left"
done_testing
