#!/usr/bin/env bash
# bench-net: the same short sync run (2 workers, 1 epoch of $TRAIN_LIMIT
# images) across separate hosts on a shaped link ($RATE, default 1gbit; see
# tests/netns.sh) for each way of saving bandwidth, as a table: bytes per
# step (both directions, one worker), communication ms per step (push +
# pull, not the barrier wait), aggregate images/s and test accuracy. Needs
# root (network namespaces): make bench-net.
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || { echo "bench-net needs root for network namespaces"; exit 1; }
source "$(dirname "$0")/netns.sh"
netns_up
limit=${TRAIN_LIMIT:-20000}

run() { # run NAME WORKER_FLAGS...: prints one row of the table
    local name=$1; shift
    rm -f "$TMP/$name.db"*
    ip netns exec "$NS_SRV" $B/paramserver --bind tcp://10.77.0.1:5555 --workers 2 --mode sync \
        --epochs 1 --train-limit "$limit" --data-dir "$MNIST_DIR" --db "$TMP/$name.db" \
        --out "$TMP/$name" --register-timeout 60 >"$TMP/$name.log" 2>&1 &
    local server=$! k w=()
    pids+=("$server")
    listening "$TMP/$name.log" "$server" "$name: the paramserver"
    for k in 0 1; do
        ip netns exec "${NS_W[$k]}" $B/worker --server tcp://10.77.0.1:5555 --name "w$k" \
            --data-dir "$MNIST_DIR" --timeout 120 "$@" >"$TMP/$name.w$k.log" 2>&1 &
        w+=("$!"); pids+=("$!")
    done
    wait "$server" || { tail -5 "$TMP/$name.log"; fail "$name: the server failed"; }
    for k in 0 1; do wait "${w[$k]}" || fail "$name: worker $k failed"; done
    sqlite3 -separator ' ' "$TMP/$name.db" "
      select '$name', s.steps,
             printf('%.0f', sum(e.bytes_sent + e.bytes_received) * 1.0 / s.steps),
             printf('%.2f', 1000.0 * sum(e.push_seconds + e.pull_seconds) / s.steps),
             printf('%.0f', sum(e.images) / max(e.epoch_seconds)),
             printf('%.2f', (select final_accuracy from runs))
      from epochs e, (select count(*) steps from steps) s"
}

echo "sync, 2 workers on separate hosts, links $RATE, 1 epoch of $limit images"
{
    echo "setting pushes bytes/step comm_ms/step images/s accuracy"
    run fp32
    run fp16 --compress fp16
    run int8 --compress int8
    run local4 --push-every 4
    run local4+fp16 --push-every 4 --compress fp16
} | column -t
echo "(bytes/step and comm_ms/step per push of one worker, both directions; comm = push + pull"
echo " time, without the barrier wait; local4 = --push-every 4: a push every 4 local steps)"
