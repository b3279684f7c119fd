#!/usr/bin/env bash
# make bench-ps: what the parameter server costs. (1) basic mode's 2-thread
# throughput as the yardstick; (2) one epoch of sync and async training with
# 1, 2 and 4 single-threaded workers on loopback, with each worker's time
# split into compute, push, pull and wait (from the run's epochs table);
# (3) the server alone under bench_ps_client's 1-8 clients pushing a
# gradient and pulling the weights back as fast as they can.
# Environment: TRAIN_LIMIT (30000), SECONDS (microbenchmark, 5), RUNS (1;
# more gives the median per cell), DEADLINE (seconds per run, 300); to run
# only part of it (make bench-shards does): MODES ("sync async"),
# WORKER_COUNTS ("1 2 4"), MICRO (1; 0 skips the microbenchmark).
# SECONDS is bash's clock, which starts at the environment's value: read it first.
secs=$SECONDS && [ "$secs" -gt 0 ] || secs=5
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BUILD:-build}   # where the programs are
limit=${TRAIN_LIMIT:-30000} runs=${RUNS:-1} deadline=${DEADLINE:-300}
modes=${MODES:-sync async} counts=${WORKER_COUNTS:-1 2 4} micro=${MICRO:-1}
for x in $modes; do case $x in sync | async | ssp) ;; *) echo "bench-ps: MODES='$modes': each must be sync, async or ssp" >&2; exit 2 ;; esac; done
for x in $counts; do [[ $x =~ ^[1-9][0-9]?$ ]] || { echo "bench-ps: WORKER_COUNTS='$counts': each must be 1..99" >&2; exit 2; }; done
case $micro in 0 | 1) ;; *) echo "bench-ps: MICRO=$micro: must be 0 or 1" >&2; exit 2 ;; esac
tmp=$(mktemp -d)
pids=() failed=0
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'echo "bench-ps: interrupted" >&2; exit 130' INT TERM

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# colmedian: the per-column median of whitespace-separated rows.
colmedian() { awk '{ for (i = 1; i <= NF; i++) v[i, NR] = $i; nf = NF }
    END { for (i = 1; i <= nf; i++) {
            for (r = 1; r <= NR; r++) { x = v[i, r]; for (j = r; j > 1 && a[j - 1] > x; j--) a[j] = a[j - 1]; a[j] = x }
            printf "%s%s", a[int((NR + 1) / 2)], (i < nf ? " " : "\n") } }'; }
later() { awk -v n="$EPOCHREALTIME" -v d="$1" 'BEGIN { printf "%.3f\n", n + d }'; }
past() { awk -v t="$1" -v n="$EPOCHREALTIME" 'BEGIN { exit !(n > t) }'; }
alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

# start_server LOG ARGS...: starts a paramserver on a free loopback port and
# sets $server and $endpoint, read from its "listening on" line.
start_server() {
    local log=$1 until; shift
    "$bin"/paramserver --bind 'tcp://127.0.0.1:*' "$@" >"$log" 2>&1 &
    server=$! && pids+=("$server")
    until=$(later 60)
    endpoint=
    while [ -z "$endpoint" ]; do
        endpoint=$(sed -n 's/.*listening on \(tcp:[^ ]*\).*/\1/p' "$log" | head -1)
        [ -n "$endpoint" ] && break
        if ! alive "$server" || past "$until"; then
            echo "bench-ps: the paramserver did not start listening; its log:" >&2
            tail -5 "$log" >&2; exit 1
        fi
        sleep 0.05
    done
}

# await LOG PIDS...: waits for the processes until $deadline seconds after
# now; past it kills them and fails.
await() {
    local log=$1 until p; shift
    until=$(later "$deadline")
    while alive "$@"; do
        if past "$until"; then
            echo "bench-ps: still running after ${deadline}s, killed; $log ends:" >&2
            tail -5 "$log" >&2
            for p in "$@"; do kill "$p" 2>/dev/null || true; done
            return 1
        fi
        sleep 0.2
    done
    for p in "$@"; do wait "$p" || { echo "bench-ps: a process failed; $log:" >&2; tail -5 "$log" >&2; return 1; }; done
}

echo "== basic mode, 2 threads, 1 epoch of $limit images (median of $runs) =="
# (No process is started inside a pipeline or $(...): a subshell's pids
# would escape the cleanup.)
for r in $(seq "$runs"); do
    "$bin"/worker --basic --epochs 1 --threads 2 --train-limit "$limit" --test-limit 1000 \
        --db "$tmp/basic.db" --out "$tmp" >"$tmp/basic.log" 2>&1 &
    pids+=("$!") && await "$tmp/basic.log" "$!" || exit 1
    grep '^summary:' "$tmp/basic.log" | tail -1 | sed -n 's/^summary:.*images_per_second=\([0-9.]*\).*/\1/p' >>"$tmp/basic"
done
basic=$(median <"$tmp/basic")
[ -n "$basic" ] || { echo "bench-ps: no images_per_second in basic mode's summary" >&2; exit 1; }
printf '%-8s %10s\n' threads images/s
printf '%-8d %10.0f\n\n' 2 "$basic"

echo "== distributed, 1 epoch of $limit images, 1 thread per worker ($(nproc) cores; 4 workers oversubscribe) =="
printf '%-6s %7s %9s %11s %8s %8s %8s %6s %9s\n' mode workers images/s compute_ms push_ms pull_ms wait_ms comm "of basic"
for mode in $modes; do
    for w in $counts; do
        : >"$tmp/cell"
        for r in $(seq "$runs"); do
            db=$tmp/$mode-$w-$r.db log=$tmp/$mode-$w-$r.log
            start_server "$log" --workers "$w" --mode "$mode" --epochs 1 --train-limit "$limit" \
                --test-limit 1000 --db "$db" --out "$tmp"
            wp=()
            for ((k = 0; k < w; k++)); do
                "$bin"/worker --server "$endpoint" --name "w$k" --threads 1 --test-limit 1000 \
                    >"$tmp/$mode-$w-$r-worker$k.log" 2>&1 &
                wp+=("$!") && pids+=("$!")
            done
            await "$log" "$server" "${wp[@]}" || { failed=1 && continue; }
            # images, slowest epoch, compute, push, pull, wait, steps, sum of epoch seconds
            sqlite3 -separator ' ' "$db" "select sum(images), max(es), sum(c), sum(pu), sum(pl), sum(wt),
                sum((images + 63) / 64), sum(es) from (select worker_id, sum(images) images,
                sum(epoch_seconds) es, sum(compute_seconds) c, sum(push_seconds) pu,
                sum(pull_seconds) pl, sum(wait_seconds) wt from epochs
                where run_id = (select max(id) from runs) group by worker_id)" |
                awk -v b="$basic" '{ ips = $1 / $2
                    print ips, 1e3 * $3 / $7, 1e3 * $4 / $7, 1e3 * $5 / $7, 1e3 * $6 / $7, 100 * ($4 + $5) / $8, 100 * ips / b }' >>"$tmp/cell"
        done
        [ -s "$tmp/cell" ] || { printf '%-6s %7d  failed (see above)\n' "$mode" "$w" && continue; }
        colmedian <"$tmp/cell" | awk -v m="$mode" -v w="$w" '{
            printf "%-6s %7d %9.0f %11.2f %8.2f %8.2f %8.2f %5.1f%% %8.0f%%\n", m, w, $1, $2, $3, $4, $5, $6, $7 }'
    done
done
echo "(images/s: all workers' images / the slowest worker's epoch; *_ms: mean per step of 64 images;"
echo " comm: push + pull share of the workers' epoch time; of basic: images/s over basic's 2-thread figure)"
echo

[ "$micro" = 1 ] || exit "$failed"
echo "== server microbenchmark: clients push 900 KB and pull the weights, ${secs}s (median of $runs) =="
printf '%-8s %9s %10s %12s %10s\n' clients rt/s median_ms "ps-lite rt/s" "of ps-lite"
ref=([1]=420 [2]=600 [4]=840 [8]=840)
for c in 1 2 4 8; do
    : >"$tmp/cell"
    for r in $(seq "$runs"); do
        log=$tmp/micro-$c-$r.log
        start_server "$log" --workers "$c" --mode async --test-limit 10 --db "$tmp/micro.db" \
            --out "$tmp" --register-timeout 60
        "$bin"/bench_ps_client "$endpoint" "$c" "$secs" >"$tmp/client.out" 2>&1 &
        cp=$! && pids+=("$cp")
        await "$log" "$server" "$cp" || { cat "$tmp/client.out" >&2 && failed=1 && continue; }
        sed -n 's/.*round_trips_per_second=\([0-9.]*\) median_ms=\([0-9.]*\).*/\1 \2/p' "$tmp/client.out" >>"$tmp/cell"
    done
    [ -s "$tmp/cell" ] || { printf '%-8d  failed (see above)\n' "$c" && continue; }
    colmedian <"$tmp/cell" | awk -v c="$c" -v ref="${ref[$c]}" '{
        printf "%-8d %9.0f %10.2f %12d %9.0f%%\n", c, $1, $2, ref, 100 * $1 / ref }'
done
echo "(rt/s: push + weights-back round trips per second, all clients; median_ms: one round trip;"
echo " ps-lite rt/s: ps-lite's figures measured earlier on this machine, noisy between 200 and 1150)"
exit "$failed"
