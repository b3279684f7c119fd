#!/usr/bin/env bash
# test_load: 32 clients push gradients and pull weights concurrently for a
# bounded time against one async paramserver. Every push the clients saw
# acknowledged (answered with weights) must have been applied exactly once:
# the server's update count, its last server_stats row and the number of
# step rows in the database all equal the clients' count of round trips.
source "$(dirname "$0")/lib.sh"
CLIENTS=32
$B/paramserver --bind 'tcp://127.0.0.1:*' --workers $CLIENTS --mode async --test-limit 10 \
    --data-dir "$MNIST_DIR" --db "$TMP/load.db" --out "$TMP" --register-timeout 60 >"$TMP/server.log" 2>&1 &
server=$!
pids+=("$server")
wait_for 30 "the server to listen" has_endpoint "$TMP/server.log"
ep=$(endpoint "$TMP/server.log")
expect_exit 0 "$CLIENTS clients push and pull for 3 s" -- timeout 120 $B/bench_ps_client "$ep" $CLIENTS 3
cat "$TMP/cmd.log"
acked=$(sed -n 's/.*round_trips=\([0-9]*\) .*/\1/p' "$TMP/cmd.log")
wait_for 60 "the server to exit after the clients finished" gone $server
wait $server || fail "the server exited with an error"
applied=$(sed -n 's/^summary: .*updates=\([0-9]*\) .*/\1/p' "$TMP/server.log")
[ "$acked" -gt 0 ] || fail "no round trips"
[ "$applied" = "$acked" ] || fail "server applied $applied updates, clients saw $acked acknowledged"
ok "the server applied $applied updates = $acked acknowledged pushes"
q() { sqlite3 "$TMP/load.db" "$1"; }
[ "$(q 'select max(updates_applied) from server_stats')" = "$acked" ] || fail "server_stats: $(q 'select max(updates_applied) from server_stats')"
[ "$(q 'select count(*) from steps')" = "$acked" ] || fail "step rows: $(q 'select count(*) from steps')"
[ "$(q 'select count(distinct worker_id) from steps')" = $CLIENTS ] || fail "not every client has step rows"
ok "the database has $acked step rows from $CLIENTS workers and the same update count"
done_testing
