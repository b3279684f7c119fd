#!/usr/bin/env bash
# multihost: the paramserver and its workers on separate "hosts": one network
# namespace each, joined by veth pairs to a bridge that lives in a namespace
# of its own (the machine's own network is not touched), each link shaped
# with tc tbf (rate 1gbit burst 1mb latency 50ms; RATE to change; see
# tests/netns.sh). Two short sync runs, each with 2 worker hosts: one with
# the server on one host, one with a server group of 2 shards, the head
# (shard 0) and shard 1 on two hosts. Each must finish with a learnt model
# and both workers' rows in the database; in the second both shards must
# have served pushes. Namespaces and processes are removed on every exit.
# Needs root and `ip netns`; run by `make check-multihost` and by .ci/run.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "skip - needs root for network namespaces"; exit 0; }
source "$(dirname "$0")/netns.sh"
netns_up 2 2
ok "4 hosts on a bridge (2 for servers, 2 for workers), links shaped to $RATE"

# run_group NAME SHARDS: a sync run of 1 epoch with the head on 10.77.0.1,
# shards 1..SHARDS-1 on 10.77.0.2.., the workers on their two hosts; checks
# that every process exits 0, and the model and the database rows.
run_group() {
    local name=$1 shards=$2 i k server group=() spid=() wpid=()
    local db=$TMP/$name.db head=tcp://10.77.0.1:5555
    ((shards > 1)) && group=(--shards "$shards")
    ip netns exec "${NS_S[0]}" "$B"/paramserver --bind "$head" "${group[@]}" --workers 2 --mode sync \
        --epochs 1 --train-limit 20000 --data-dir "$MNIST_DIR" \
        --db "$db" --out "$TMP/$name" --register-timeout 60 >"$TMP/$name.server.log" 2>&1 &
    server=$! && pids+=("$server")
    listening "$TMP/$name.server.log" "$server" "$name: the server (head)"
    for ((i = 1; i < shards; i++)); do
        ip netns exec "${NS_S[i]}" "$B"/paramserver --shard "$i" --head "$head" \
            --bind "tcp://10.77.0.$((1 + i)):5555" --checkpoint "$TMP/$name.shard$i.ckpt" \
            >"$TMP/$name.shard$i.log" 2>&1 &
        spid[i]=$! && pids+=("$!")
    done
    for k in 0 1; do
        ip netns exec "${NS_W[$k]}" "$B"/worker --server "$head" --name "host$k" \
            --data-dir "$MNIST_DIR" --timeout 60 >"$TMP/$name.worker$k.log" 2>&1 &
        wpid[k]=$! && pids+=("$!")
    done
    wait "$server" || { cat "$TMP/$name.server.log"; fail "$name: the server (head) failed"; }
    for ((i = 1; i < shards; i++)); do
        wait_for 30 "$name: shard $i to exit after the head" gone "${spid[i]}"
        wait "${spid[i]}" || { cat "$TMP/$name.shard$i.log"; fail "$name: shard $i failed"; }
    done
    for k in 0 1; do
        wait "${wpid[k]}" || { cat "$TMP/$name.worker$k.log"; fail "$name: worker $k failed"; }
    done
    grep '^summary' "$TMP/$name.server.log"
    grep -q "registered: host0 on" "$TMP/$name.server.log" && grep -q "registered: host1 on" "$TMP/$name.server.log" ||
        fail "$name: the workers did not register from their hosts"
    acc=$(rows "$db" 'select final_accuracy from runs')
    awk -v a="$acc" 'BEGIN { exit !(a >= 90) }' || fail "$name: accuracy $acc% < 90%"
    ok "$name: a sync run with $shards server host(s) and 2 worker hosts finished: $acc%"
    [ "$(rows "$db" 'select count(distinct worker_id) from epochs')" = 2 ] || fail "$name: epoch rows"
    [ "$(rows "$db" 'select count(*) from steps')" -ge 300 ] || fail "$name: step rows"
    ok "$name: the database holds both workers' steps and epochs"
    sqlite3 -separator ' ' "$db" "select 'worker', worker_id, 'comm ms/step', printf('%.2f', 1000.0 * (push_seconds + pull_seconds) / (images / 64.0)), 'bytes/step', (bytes_sent + bytes_received) / (images / 64) from epochs"
}

run_group one-server 1
run_group two-shards 2
db=$TMP/two-shards.db
# Every shard served: its shard_stats rows count the updates it applied.
served=$(rows "$db" 'select count(*) from (select shard, max(updates) u from shard_stats group by shard) where u > 0')
[ "$served" = 2 ] ||
    fail "two-shards: $served shard(s) applied updates, expected 2: $(rows "$db" 'select shard, max(updates) from shard_stats group by shard')"
ok "two-shards: both shards applied updates ($(rows "$db" "select group_concat(shard || ':' || u, ' ') from (select shard, max(updates) u from shard_stats group by shard)"))"
done_testing
