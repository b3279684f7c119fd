#!/usr/bin/env bash
# bench-shards (make bench-shards): does a server group add bandwidth? The
# same short sync run (4 workers, 1 thread each, each on its own host) with
# S = 1, 2 and 4 server hosts (the head and S-1 shards, each on its own
# host), every link shaped to $RATE (default 100mbit) in both directions
# (tests/netns.sh with BOTH_WAYS=1, so the server hosts' links are the
# bottleneck), as a table: communication ms per step (push + pull seconds
# per step from the run's database, as make bench-net computes it), images/s
# and accuracy; then the same on loopback (no namespaces, no shaping):
# sync 2 workers x 1 thread against basic mode's 2 threads in the same run,
# by tests/bench-ps.sh. Prints each figure against the issue's target.
# Environment: STEPS (steps per worker, 100), RATE (100mbit), BURST (tbf's
# bucket, 64kb: the default 1mb would pass a whole 900 KB message unshaped
# after a pause), SERVERS ("1 2 4"), DEADLINE (seconds per run, 900),
# LOOPBACK (1; 0 skips the loopback part), RUNS (loopback runs, median of
# each figure; 3), TRAIN_LIMIT (loopback epoch, 30000 images).
# Needs root (network namespaces).
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || fail "bench-shards needs root for network namespaces: run sudo make bench-shards"
steps=${STEPS:-100} servers_list=${SERVERS:-1 2 4} deadline=${DEADLINE:-900} loopback=${LOOPBACK:-1}
[[ $steps =~ ^[1-9][0-9]{0,3}$ ]] || fail "STEPS=$steps: must be 1..9999 (steps per worker)"
[[ $deadline =~ ^[1-9][0-9]*$ ]] || fail "DEADLINE=$deadline: must be a positive number of seconds"
case $loopback in 0 | 1) ;; *) fail "LOOPBACK=$loopback: must be 0 or 1" ;; esac
max_servers=1
for s in $servers_list; do
    [[ $s =~ ^[1-8]$ ]] || fail "SERVERS='$servers_list': each must be 1..8 (server hosts)"
    ((s > max_servers)) && max_servers=$s
done
export RATE=${RATE:-100mbit} BURST=${BURST:-64kb} BOTH_WAYS=1
source "$(dirname "$0")/netns.sh"
workers=4 limit=$((4 * 64 * steps))
netns_up "$max_servers" "$workers"

# run S: one sync run with S server hosts; prints its row of the table:
# S, steps, comm ms/step, images/s, accuracy.
run() {
    local s=$1 i k head=tcp://10.77.0.1:5555 group=() all=() name=s$1
    local db=$TMP/$name.db
    ((s > 1)) && group=(--shards "$s")
    ip netns exec "${NS_S[0]}" "$B"/paramserver --bind "$head" "${group[@]}" --workers "$workers" \
        --mode sync --epochs 1 --train-limit "$limit" --test-limit 1000 --data-dir "$MNIST_DIR" \
        --db "$db" --out "$TMP/$name" --register-timeout 120 >"$TMP/$name.head.log" 2>&1 &
    local server=$!
    pids+=("$server") && all+=("$server")
    listening "$TMP/$name.head.log" "$server" "S=$s: the head"
    for ((i = 1; i < s; i++)); do
        ip netns exec "${NS_S[i]}" "$B"/paramserver --shard "$i" --head "$head" \
            --bind "tcp://10.77.0.$((1 + i)):5555" --checkpoint "$TMP/$name.shard$i.ckpt" \
            >"$TMP/$name.shard$i.log" 2>&1 &
        pids+=("$!") && all+=("$!")
    done
    for ((k = 0; k < workers; k++)); do
        ip netns exec "${NS_W[k]}" "$B"/worker --server "$head" --name "w$k" --threads 1 \
            --test-limit 1000 --data-dir "$MNIST_DIR" --timeout 120 >"$TMP/$name.w$k.log" 2>&1 &
        pids+=("$!") && all+=("$!")
    done
    local end=$((SECONDS + deadline)) p
    for p in "${all[@]}"; do
        while ! gone "$p"; do
            [ $SECONDS -lt $end ] || { tail -5 "$TMP/$name".*.log >&2; fail "S=$s: still running after ${deadline}s (DEADLINE)"; }
            sleep 0.2
        done
        wait "$p" || { tail -5 "$TMP/$name".*.log >&2; fail "S=$s: a process failed (logs above)"; }
    done
    sqlite3 -separator ' ' "$db" "
      select $s, s.steps,
             printf('%.2f', 1000.0 * sum(e.push_seconds + e.pull_seconds) / s.steps),
             printf('%.0f', sum(e.images) / max(e.epoch_seconds)),
             printf('%.2f', (select final_accuracy from runs))
      from epochs e, (select count(*) steps from steps) s" ||
        fail "S=$s: cannot read the run's figures from $db"
    # Each server host's traffic: from shard_stats (cumulative counters) for
    # a group; a lone server has no rows there, but its summary line says.
    local t
    t=$(sqlite3 "$db" "select group_concat(shard || ' ' || printf('%.0f/%.0f', i / 1e6, o / 1e6), ', ')
      from (select shard, max(bytes_in) i, max(bytes_out) o from shard_stats group by shard order by shard)") ||
        fail "S=$s: cannot read shard_stats from $db"
    [ -n "$t" ] || t=$(sed -n 's/^summary:.* mb_in=\([0-9.]*\) mb_out=\([0-9.]*\).*/0 \1\/\2/p' "$TMP/$name.head.log")
    echo "S=$s: ${t:-(not logged)}" >>"$TMP/traffic"
}

echo "== sync, $workers workers (1 thread each) on their own hosts, S server hosts, every link $RATE both ways, $steps steps per worker =="
# (Each run in this shell, not in a pipeline: a subshell's processes and
# failures would escape the cleanup.)
echo "S steps comm_ms/step images/s accuracy" >"$TMP/table"
for s in $servers_list; do
    run "$s" >>"$TMP/table"
    echo "S=$s done" >&2
done
column -t "$TMP/table"
echo "(comm_ms/step: push + pull seconds of all workers over their steps, without the barrier wait;"
echo " images/s: all workers' images over the slowest worker's epoch; accuracy on 1,000 test images)"
echo "MB in/out per server host (shard 0 is the head):"
sed 's/^/  /' "$TMP/traffic"
awk '$1 == 1 { one = $3 } $1 == 4 { four = $3 }
     END { if (one > 0 && four != "")
               printf "target: communication per step at S=4 at most 35%% of S=1: %.0f%% (%s)\n",
                      100 * four / one, (100 * four / one <= 35 ? "met" : "missed") }' "$TMP/table"

[ "$loopback" = 1 ] || exit 0
echo
echo "== loopback (no namespaces, no shaping), by tests/bench-ps.sh =="
RUNS=${RUNS:-3} MODES=sync WORKER_COUNTS=2 MICRO=0 BUILD=$B tests/bench-ps.sh >"$TMP/loopback" ||
    { cat "$TMP/loopback"; fail "tests/bench-ps.sh failed (its messages above)"; }
cat "$TMP/loopback"
# Its row: mode workers images/s compute_ms push_ms pull_ms wait_ms comm% of-basic%
awk '$1 == "sync" && $2 == 2 { comm = $8; ofb = $9; sub(/%/, "", comm); sub(/%/, "", ofb); comm += 0; ofb += 0; found = 1 }
     END { if (!found) { print "bench-shards: no sync 2-worker row in bench-ps output" > "/dev/stderr"; exit 1 }
           printf "target: sync 2 workers x 1 thread at least 95%% of basic 2 threads: %s%% (%s)\n", ofb, (ofb >= 95 ? "met" : "missed")
           printf "target: communication under 5%% of a step: %s%% (%s)\n", comm, (comm < 5 ? "met" : "missed") }' \
    "$TMP/loopback" || fail "cannot read the loopback figures"
