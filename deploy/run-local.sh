#!/usr/bin/env bash
# run-local.sh: the distributed study on one machine. Starts a paramserver
# and WORKERS workers on loopback, waits for them, renders the plots and
# prints a summary like the original train_distributed.py. If the database
# holds no finished basic run yet, it first trains one (the comparison
# needs it). Every process it starts is stopped when it exits, fails or is
# interrupted (Ctrl-C).
#
# Environment: WORKERS (2), MODE (sync|async|ssp|independent, sync),
# STALENESS (2), EPOCHS (5), PORT (5555), THREADS (threads per worker, 1),
# TRAIN_LIMIT, DATASET (mnist|fashion-mnist, mnist), LR_SCALING (sync: linear,
# the others: none; see README "Learning rate with K workers"), WARMUP_EPOCHS
# (1), MNIST_DIR (data), DB (results/metrics.db), OUT (results).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-2} MODE=${MODE:-sync} STALENESS=${STALENESS:-2} EPOCHS=${EPOCHS:-5}
PORT=${PORT:-5555} THREADS=${THREADS:-1} MNIST_DIR=${MNIST_DIR:-data}
DB=${DB:-results/metrics.db} OUT=${OUT:-results} DATASET=${DATASET:-mnist}
[ "$MODE" = sync ] && LR_SCALING=${LR_SCALING:-linear} || LR_SCALING=${LR_SCALING:-none}
WARMUP_EPOCHS=${WARMUP_EPOCHS:-1}
limit=()
[ -n "${TRAIN_LIMIT:-}" ] && limit=(--train-limit "$TRAIN_LIMIT")
data=()   # MNIST from MNIST_DIR; another data set from its own directory (README, Data)
[ "$DATASET" = mnist ] && data=(--data-dir "$MNIST_DIR")
mkdir -p "$OUT" "$OUT/logs"

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'echo "run-local: interrupted" >&2; exit 130' INT TERM

# Runs from before --dataset name their data directory instead: MNIST's.
same=("'$DATASET'"); [ "$DATASET" = mnist ] && same+=("'$MNIST_DIR'")
if [ "$(sqlite3 "$DB" "select count(*) from runs where mode='basic' and status='done' and coalesce(dataset, 'mnist') in ($(IFS=,; echo "${same[*]}"))" 2>/dev/null || echo 0)" = 0 ]; then
    echo "run-local: no basic run on $DATASET in $DB yet; training one first for the comparison"
    build/worker --basic --dataset "$DATASET" "${data[@]}" --epochs "$EPOCHS" "${limit[@]}" --db "$DB" --out "$OUT" \
        | tee "$OUT/logs/basic.log" | grep -E '^(epoch [0-9]+/[0-9]+:|summary|model)'
fi

echo "run-local: paramserver on tcp://127.0.0.1:$PORT, $WORKERS workers, mode $MODE, $DATASET, lr scaling $LR_SCALING"
start=$EPOCHREALTIME
build/paramserver --bind "tcp://127.0.0.1:$PORT" --workers "$WORKERS" --mode "$MODE" \
    --staleness "$STALENESS" --epochs "$EPOCHS" "${limit[@]}" --dataset "$DATASET" "${data[@]}" \
    --lr-scaling "$LR_SCALING" --warmup-epochs "$WARMUP_EPOCHS" \
    --db "$DB" --out "$OUT" >"$OUT/logs/server.log" 2>&1 &
server=$!
pids+=("$server")
for ((k = 0; k < WORKERS; k++)); do
    build/worker --server "tcp://127.0.0.1:$PORT" --name "worker$k" --threads "$THREADS" \
        "${data[@]}" >"$OUT/logs/worker$k.log" 2>&1 &
    pids+=("$!")
done
echo "run-local: logs in $OUT/logs/; following the server:"
tail -n +1 -f "$OUT/logs/server.log" --pid "$server" | grep --line-buffered -E 'registered|epoch|done|evict|error|summary|saved' &
pids+=("$!")

# A worker that fails is evicted by the server after --worker-timeout and the
# run goes on with the others; if the server fails, everything stops now.
status=0
wait "$server" || status=$?
if [ "$status" -ne 0 ]; then
    echo "run-local: the paramserver failed (exit $status); see $OUT/logs/server.log" >&2
    tail -5 "$OUT/logs/server.log" >&2
    exit 1   # the EXIT trap stops the workers
fi
failed=0
for ((k = 0; k < WORKERS; k++)); do
    wait "${pids[$((k + 1))]}" || { echo "run-local: worker $k failed; see $OUT/logs/worker$k.log" >&2; failed=1; }
done
total=$(awk -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1f", e - s }')

build/psreport --db "$DB" --out "$OUT/distributed_training_results.png"
build/psreport --db "$DB" --comparison --out "$OUT/comparison.png"

run=$(sqlite3 "$DB" "select max(id) from runs where mode='$MODE'")
echo
echo "=== summary (run $run, $MODE, $WORKERS workers) ==="
echo "total time: $total s (start-up, training, evaluation and saving)"
sqlite3 -separator ' ' "$DB" "
  select 'worker ' || e.worker_id || ': training time ' || printf('%.1f', sum(e.epoch_seconds)) ||
         ' s, final loss ' || printf('%.4f', (select train_loss from epochs where run_id = e.run_id and worker_id = e.worker_id order by epoch desc limit 1)) ||
         ', final accuracy ' || printf('%.2f', (select test_accuracy from epochs where run_id = e.run_id and worker_id = e.worker_id order by epoch desc limit 1)) || '%'
  from epochs e where e.run_id = $run group by e.worker_id order by e.worker_id;"
[ "$MODE" = independent ] && what="independent models (mean over the workers): test accuracy " || what="server model: test accuracy "
sqlite3 "$DB" "select '$what' || printf('%.2f', final_accuracy) || '%, training ' || printf('%.1f', train_seconds) || ' s' from runs where id = $run"
grep '^summary' "$OUT/logs/server.log"
[ "$failed" -eq 0 ] || exit 1
