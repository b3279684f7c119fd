#!/usr/bin/env bash
# multihost: the paramserver and its workers on separate "hosts": one network
# namespace each (ps-srv, ps-w0, ps-w1), joined by veth pairs to a bridge that
# lives in a namespace of its own (the machine's own network is not touched),
# each link shaped with tc tbf (rate 1gbit burst 1mb latency 50ms; RATE to
# change). A short sync run must finish with a learnt model and both workers'
# rows in the database. Namespaces and processes are removed on every exit.
# Needs root and `ip netns`; run by `make check-multihost` and by .ci/run.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "skip - needs root for network namespaces"; exit 0; }
source "$(dirname "$0")/netns.sh"
netns_up
ok "3 hosts on a bridge, links shaped to $RATE"

ip netns exec "$NS_SRV" $B/paramserver --bind tcp://10.77.0.1:5555 --workers 2 --mode sync \
    --epochs 1 --train-limit 20000 --data-dir "$MNIST_DIR" \
    --db "$TMP/m.db" --out "$TMP/out" --register-timeout 60 >"$TMP/server.log" 2>&1 &
server=$!
wait_for 30 "the server to listen" has_endpoint "$TMP/server.log"
for k in 0 1; do
    ip netns exec "${NS_W[$k]}" $B/worker --server tcp://10.77.0.1:5555 --name "host$k" \
        --data-dir "$MNIST_DIR" --timeout 60 >"$TMP/worker$k.log" 2>&1 &
    wpid[$k]=$!
done
wait "$server" || { cat "$TMP/server.log"; fail "the server failed"; }
for k in 0 1; do wait "${wpid[$k]}" || { cat "$TMP/worker$k.log"; fail "worker $k failed"; }; done
grep '^summary' "$TMP/server.log"
grep -q "registered: host0 on" "$TMP/server.log" && grep -q "registered: host1 on" "$TMP/server.log" ||
    fail "the workers did not register from their hosts"
acc=$(rows "$TMP/m.db" 'select final_accuracy from runs')
awk -v a="$acc" 'BEGIN { exit !(a >= 90) }' || fail "accuracy $acc% < 90%"
ok "a sync run across 3 hosts finished: $acc%"
[ "$(rows "$TMP/m.db" 'select count(distinct worker_id) from epochs')" = 2 ] || fail "epoch rows"
[ "$(rows "$TMP/m.db" 'select count(*) from steps')" -ge 300 ] || fail "step rows"
ok "the database holds both workers' steps and epochs"
sqlite3 -separator ' ' "$TMP/m.db" "select 'worker', worker_id, 'comm ms/step', printf('%.2f', 1000.0 * (push_seconds + pull_seconds) / (images / 64.0)), 'bytes/step', (bytes_sent + bytes_received) / (images / 64) from epochs"
done_testing
