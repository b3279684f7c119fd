#!/usr/bin/env bash
# make bench-replication: what a hot standby costs, and how long a fail-over
# stalls training. A loopback server group of 2 (the head and shard 1), sync,
# 2 single-threaded workers, one epoch:
#  (1) RUNS runs each without and with standbys (the head's and shard 1's),
#      alternating: the median step time (from the step rows) and the
#      standbys' cost in percent of it (the issue's target: at most 10%);
#  (2) KILLS runs with the standbys where shard 1's primary is killed
#      (SIGKILL) at a random moment, and KILLS where the head is: the longest
#      pause between two steps of a worker, and that pause less the run's
#      median step time (the stall), median over the kills, against
#      --failover-timeout. A run whose head was killed ends in its standby's
#      database, which is read.
# A kill that comes after the run ended (no `failover` event) is not counted
# and is tried again (at most 3 times as many runs as KILLS).
# Environment: TRAIN_LIMIT (30000), RUNS (3), KILLS (5), FAILOVER (1, the
# head's --failover-timeout), DEADLINE (seconds per run, 300), BUILD.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BUILD:-build}
limit=${TRAIN_LIMIT:-30000} runs=${RUNS:-3} kills=${KILLS:-5} failover=${FAILOVER:-1}
deadline=${DEADLINE:-300}
for v in "$limit" "$runs" "$kills" "$deadline"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "bench-replication: TRAIN_LIMIT, RUNS, KILLS and DEADLINE must be whole numbers" >&2; exit 2; }
done
tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "bench-replication: interrupted" >&2; exit 130' INT TERM

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "nan" }'; }

# wait_line LOG REGEX PID: the first match of REGEX's group in LOG (sed -n
# 's/REGEX/\1/p'), waiting up to 60 s while PID lives.
wait_line() {
    local log=$1 re=$2 pid=$3 end=$((SECONDS + 60)) got
    while :; do
        got=$(sed -n "s/$re/\1/p" "$log" 2>/dev/null | head -1)
        [ -n "$got" ] && { echo "$got"; return 0; }
        if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $end ]; then
            echo "bench-replication: no '$re' in $log; its end:" >&2
            tail -5 "$log" >&2
            return 1
        fi
        sleep 0.05
    done
}

# one N STANDBY KILL: one run (KILL: 0, shard or head); prints
# "median_step_seconds longest_pause failovers".
one() {
    local n=$1 standby=$2 killit=$3 d=$tmp/run$1 ep sep head shard w hsb= db
    mkdir -p "$d"
    local replicas=()
    [ "$standby" = 1 ] && replicas=(--replicas 1)
    "$bin"/paramserver --bind 'tcp://127.0.0.1:*' --shards 2 --workers 2 --epochs 1 \
        --train-limit "$limit" --test-limit 500 --threads 1 --checkpoint-every 0 "${replicas[@]}" \
        --failover-timeout "$failover" --db "$d/m.db" --out "$d" >"$d/head.log" 2>&1 &
    head=$! && pids+=("$head")
    ep=$(wait_line "$d/head.log" '.*listening on \(tcp:[^ ]*\).*' "$head")
    if [ "$standby" = 1 ]; then
        "$bin"/paramserver --replica-of "$ep" --bind 'tcp://127.0.0.1:*' --db "$d/standby.db" \
            --out "$d" --threads 1 --test-limit 500 >"$d/head-standby.log" 2>&1 &
        hsb=$! && pids+=("$hsb")
    fi
    "$bin"/paramserver --shard 1 --head "$ep" --bind 'tcp://127.0.0.1:*' --out "$d" >"$d/shard.log" 2>&1 &
    shard=$! && pids+=("$shard")
    sep=$(wait_line "$d/shard.log" '.*workers reach it at \(tcp:[^ ]*\).*' "$shard")
    if [ "$standby" = 1 ]; then
        "$bin"/paramserver --replica-of "$sep" --bind 'tcp://127.0.0.1:*' --out "$d" >"$d/standby.log" 2>&1 &
        pids+=("$!")
        wait_line "$d/standby.log" ".*\(holds the primary's state\).*" "$!" >/dev/null
    fi
    for w in 0 1; do
        "$bin"/worker --server "$ep" --name "w$w" --threads 1 --timeout 60 >"$d/w$w.log" 2>&1 &
        pids+=("$!")
    done
    db=$d/m.db
    if [ "$killit" != 0 ]; then
        wait_line "$d/w0.log" '.*\(batch\).*' "$head" >/dev/null
        sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.3 + 1.5 * r / 32768 }')"
        if [ "$killit" = head ]; then
            kill -9 "$head" 2>/dev/null || true
            wait "$head" 2>/dev/null || true
            head=$hsb db=$d/standby.db   # the run ends there
        else
            kill -9 "$shard" 2>/dev/null || true
        fi
    fi
    local end=$((SECONDS + deadline))
    while kill -0 "$head" 2>/dev/null; do
        [ $SECONDS -lt $end ] || { echo "bench-replication: run $n passed $deadline s" >&2; exit 1; }
        sleep 0.2
    done
    wait "$head" || { echo "bench-replication: run $n failed; see its head's log:" >&2; tail -5 "$d/head.log" >&2; exit 1; }
    # each worker's gaps between consecutive steps
    sqlite3 "$db" "select t2 - t1 from (select t as t1, lead(t) over (partition by worker_id order by step) as t2 from steps) where t2 is not null" >"$d/gaps"
    echo "$(median <"$d/gaps") $(sort -g "$d/gaps" | tail -1) $(sqlite3 "$db" "select count(*) from events where kind = 'failover'")"
}

echo "bench-replication: sync, 2 workers x 1 thread, head + shard 1 on loopback, $limit images, 1 epoch (load $(cut -d' ' -f1 /proc/loadavg))"
plain=() with=()
for ((i = 0; i < runs; i++)); do
    read -r step _ _ < <(one "p$i" 0 0) && plain+=("$step")
    read -r step _ _ < <(one "s$i" 1 0) && with+=("$step")
    printf '  run %d: step %.2f ms without a standby, %.2f ms with one\n' "$((i + 1))" \
        "$(awk -v x="${plain[i]}" 'BEGIN { print x * 1000 }')" "$(awk -v x="${with[i]}" 'BEGIN { print x * 1000 }')"
done
p=$(printf '%s\n' "${plain[@]}" | median) s=$(printf '%s\n' "${with[@]}" | median)
awk -v p="$p" -v s="$s" -v n="$runs" 'BEGIN { printf "standby cost: median step %.2f ms without, %.2f ms with standbys of the head and shard 1: %+.1f%% (target: at most +10%%; medians of %d runs)\n", p * 1000, s * 1000, 100 * (s - p) / p, n }'
for target in shard head; do
    stalls=()
    for ((i = 0; ${#stalls[@]} < kills && i < 3 * kills; i++)); do
        read -r step pause failovers < <(one "k$target$i" 1 "$target")
        if [ "$failovers" != 1 ]; then
            echo "  try $((i + 1)): the kill came after the run ended; not counted"
            continue
        fi
        stall=$(awk -v a="$pause" -v b="$step" 'BEGIN { print a - b }')
        stalls+=("$stall")
        printf '  kill %d of the %s: longest pause %.2f s, stall %.2f s\n' "${#stalls[@]}" "$target" "$pause" "$stall"
    done
    ((${#stalls[@]})) && printf 'fail-over stall, %s killed: median %.2f s, worst %.2f s, over %d kills (--failover-timeout %s; target at most %s + 1 s)\n' \
        "$([ $target = head ] && echo "the head" || echo "shard 1's primary")" \
        "$(printf '%s\n' "${stalls[@]}" | median)" "$(printf '%s\n' "${stalls[@]}" | sort -g | tail -1)" "${#stalls[@]}" "$failover" "$failover"
done
exit 0
