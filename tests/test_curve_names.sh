#!/usr/bin/env bash
# test_curve_names: under CurveZMQ a worker's name belongs to the key that
# registered it (issue 9, D4). Worker w (key "good") trains and is killed;
# another allowed key ("other") registering as w is refused, with a message
# saying the name belongs to another key; w started again with its own key
# rejoins and finishes the run.
source "$(dirname "$0")/lib.sh"
K=$TMP/keys
mkdir -p "$K/allowed"
for k in server good other; do
    $B/paramserver --keygen "$K/$k" >/dev/null || fail "keygen $k"
done
cp "$K/good" "$K/allowed/good.pub"
cp "$K/other" "$K/allowed/other.pub"
$B/paramserver --bind 'tcp://127.0.0.1:*' --workers 1 --epochs 1 --train-limit 12800 --test-limit 500 \
    --curve-secret "$K/server_secret" --allowed-keys "$K/allowed" --data-dir "$MNIST_DIR" \
    --db "$TMP/m.db" --out "$TMP/out" --register-timeout 60 --worker-timeout 60 >"$TMP/server.log" 2>&1 &
server=$!; pids+=("$server")
wait_for 30 "the server to listen" has_endpoint "$TMP/server.log"
ep=$(endpoint "$TMP/server.log")
worker() { # worker KEY LOG: worker "w" with that key, in the background
    $B/worker --server "$ep" --name w --curve-secret "$K/${1}_secret" --server-key "$K/server" \
        --data-dir "$MNIST_DIR" --timeout 30 >"$2" 2>&1 &
    wpid=$!; pids+=("$wpid")
}
worker good "$TMP/w1.log"
wait_for 60 "20 steps" at_least "$TMP/m.db" 'select count(*) from steps' 20
kill -9 "$wpid"
ok "worker w (key good) killed after 20+ steps"
expect_exit 1 "another allowed key cannot take the name w" -- \
    $B/worker --server "$ep" --name w --curve-secret "$K/other_secret" --server-key "$K/server" \
    --data-dir "$MNIST_DIR" --connect-timeout 20
expect_output "this name belongs to another worker's CurveZMQ key" "it is told why"
worker good "$TMP/w2.log"
wait "$wpid" || { cat "$TMP/w2.log"; fail "w did not finish with its own key"; }
grep -q "rejoined as incarnation 1" "$TMP/w2.log" || { cat "$TMP/w2.log"; fail "w did not rejoin"; }
wait "$server" || { cat "$TMP/server.log"; fail "the server failed"; }
ok "w with its own key rejoined and the run finished"
done_testing
