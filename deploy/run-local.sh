#!/usr/bin/env bash
# run-local.sh: the distributed study on one machine. Starts a paramserver
# (with SHARDS > 1: a server group, the head and SHARDS-1 shard processes on
# the next ports) and WORKERS workers on loopback, waits for them, renders
# the plots and prints a summary like the original train_distributed.py. If
# the database holds no finished basic run yet, it first trains one (the
# comparison needs it). Every process it starts is stopped when it exits,
# fails or is interrupted (Ctrl-C); if the head or a shard fails, the run
# stops there.
#
# Environment: MODEL (a model of the catalogue: simpleconvnet, lenet5, mlp,
# widecnn; simpleconvnet), WORKERS (2), MODE (sync|async|ssp|independent, sync),
# STALENESS (2), EPOCHS (5), PORT (5555; shard I listens on PORT+I), SHARDS
# (server processes, 1), REPLICAS (1: a hot standby for the head, on
# PORT+100 with its own database DB-standby, and for every shard, on
# PORT+100+I; SHARDS then defaults to 2: shard 1 is the head's witness), THREADS (threads per worker, 1), TRAIN_LIMIT,
# DATASET (mnist|fashion-mnist, mnist), LR_SCALING (sync: linear, the
# others: none; see README "Learning rate with K workers"), WARMUP_EPOCHS
# (1), MNIST_DIR (data), DB (results/metrics.db), OUT (results), BUILD
# (where the programs are, build).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-2} MODE=${MODE:-sync} STALENESS=${STALENESS:-2} EPOCHS=${EPOCHS:-5}
REPLICAS=${REPLICAS:-0}
[[ $REPLICAS =~ ^[01]$ ]] || { echo "run-local: REPLICAS=$REPLICAS: must be 0 or 1 (a standby per shard)" >&2; exit 2; }
[ "$REPLICAS" = 1 ] && SHARDS=${SHARDS:-2}
PORT=${PORT:-5555} SHARDS=${SHARDS:-1} THREADS=${THREADS:-1} MNIST_DIR=${MNIST_DIR:-data}
DB=${DB:-results/metrics.db} OUT=${OUT:-results} DATASET=${DATASET:-mnist} bin=${BUILD:-build}
MODEL=${MODEL:-simpleconvnet}
# The others reach the programs, which check them; these two are our arithmetic.
[[ $SHARDS =~ ^[1-9][0-9]?$ ]] || { echo "run-local: SHARDS=$SHARDS: must be a number of server processes, 1..99" >&2; exit 2; }
((REPLICAS == 0 || SHARDS > 1)) || { echo "run-local: REPLICAS=1 needs SHARDS=2 or more: shard 1 is the witness that lets the head's standby take over" >&2; exit 2; }
[[ $PORT =~ ^[1-9][0-9]{0,4}$ ]] && ((PORT + 100 + SHARDS - 1 <= 65535)) ||
    { echo "run-local: PORT=$PORT: must be a TCP port, with PORT+SHARDS-1 <= 65535 (shard I listens on PORT+I)" >&2; exit 2; }
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

# Runs from before --dataset name their data directory instead: MNIST's. A
# basic run names its model in an event "model" (none before models: SimpleConvNet).
same=("'$DATASET'"); [ "$DATASET" = mnist ] && same+=("'$MNIST_DIR'")
model_of="coalesce((select detail from events where run_id = runs.id and kind = 'model'), 'simpleconvnet')"
if [ "$(sqlite3 "$DB" "select count(*) from runs where mode='basic' and status='done' and coalesce(dataset, 'mnist') in ($(IFS=,; echo "${same[*]}")) and $model_of = '$MODEL'" 2>/dev/null || echo 0)" = 0 ]; then
    echo "run-local: no basic run of $MODEL on $DATASET in $DB yet; training one first for the comparison"
    "$bin"/worker --basic --model "$MODEL" --dataset "$DATASET" "${data[@]}" --epochs "$EPOCHS" "${limit[@]}" --db "$DB" --out "$OUT" \
        | tee "$OUT/logs/basic.log" | grep -E '^(epoch [0-9]+/[0-9]+:|summary|model)'
fi

group=()
((SHARDS > 1)) && group=(--shards "$SHARDS")
((REPLICAS)) && group+=(--replicas 1 --failover-timeout 2)
sbdb="${DB%.db}-standby.db"
((REPLICAS)) && rm -f "$sbdb" "$sbdb-wal" "$sbdb-shm"   # the standby's copy of this run only
echo "run-local: paramserver on tcp://127.0.0.1:$PORT ($SHARDS server process(es)$( ((REPLICAS)) && echo ", the head and each shard with a hot standby")), $WORKERS workers, $MODEL, mode $MODE, $DATASET, lr scaling $LR_SCALING"
start=$EPOCHREALTIME
"$bin"/paramserver --bind "tcp://127.0.0.1:$PORT" "${group[@]}" --model "$MODEL" --workers "$WORKERS" --mode "$MODE" \
    --staleness "$STALENESS" --epochs "$EPOCHS" "${limit[@]}" --dataset "$DATASET" "${data[@]}" \
    --lr-scaling "$LR_SCALING" --warmup-epochs "$WARMUP_EPOCHS" \
    --db "$DB" --out "$OUT" >"$OUT/logs/server.log" 2>&1 &
server=$!
pids+=("$server")
declare -A name=([$server]="the paramserver (head)") log=([$server]="$OUT/logs/server.log") primary=()
servers=("$server")
for ((i = 1; i < SHARDS; i++)); do
    "$bin"/paramserver --shard "$i" --head "tcp://127.0.0.1:$PORT" --bind "tcp://127.0.0.1:$((PORT + i))" \
        --checkpoint "$OUT/checkpoint-shard$i.safetensors" >"$OUT/logs/shard$i.log" 2>&1 &
    pids+=("$!") && servers+=("$!")
    name[$!]="shard $i" log[$!]=$OUT/logs/shard$i.log
    primary[$!]=1
done
if ((REPLICAS)); then
    # The head's standby: the head waits for it (--replicas 1) before the run.
    "$bin"/paramserver --replica-of "tcp://127.0.0.1:$PORT" --bind "tcp://127.0.0.1:$((PORT + 100))" \
        "${data[@]}" --db "$sbdb" --out "$OUT" --checkpoint "$OUT/checkpoint-standby0.safetensors" \
        >"$OUT/logs/standby0.log" 2>&1 &
    pids+=("$!") && servers+=("$!") && headsb=$!
    name[$!]="the head's standby" log[$!]=$OUT/logs/standby0.log
    primary[$server]=1
fi
for ((i = 1; i < SHARDS && REPLICAS; i++)); do
    # Its primary must be listening first: the standby asks it who it is.
    "$bin"/paramserver --replica-of "tcp://127.0.0.1:$((PORT + i))" --bind "tcp://127.0.0.1:$((PORT + 100 + i))" \
        --out "$OUT" --checkpoint "$OUT/checkpoint-standby$i.safetensors" >"$OUT/logs/standby$i.log" 2>&1 &
    pids+=("$!") && servers+=("$!")
    name[$!]="the standby of shard $i" log[$!]=$OUT/logs/standby$i.log
done
workers=()
for ((k = 0; k < WORKERS; k++)); do
    "$bin"/worker --server "tcp://127.0.0.1:$PORT" --name "worker$k" --threads "$THREADS" \
        "${data[@]}" >"$OUT/logs/worker$k.log" 2>&1 &
    pids+=("$!") && workers+=("$!")
done
echo "run-local: logs in $OUT/logs/; following the server:"
tail -n +1 -f "$OUT/logs/server.log" --pid "$server" | grep --line-buffered -E 'registered|shard|epoch|done|evict|error|summary|saved' &
pids+=("$!")

# A worker that fails is evicted by the server after --worker-timeout and the
# run goes on with the others; if the head or a shard fails, everything stops
# now. Shards exit 0 once the head's run is over: after the head, each gets
# 60 s to do so.
while ((${#servers[@]})); do
    status=0
    wait -n -p ended "${servers[@]}" || status=$?
    if [ "$status" -ne 0 ] && ((REPLICAS)) && [ -n "${primary[$ended]:-}" ]; then
        echo "run-local: ${name[$ended]} failed (exit $status); its standby takes over; see ${log[$ended]}" >&2
    elif [ "$status" -ne 0 ]; then
        echo "run-local: ${name[$ended]} failed (exit $status); see ${log[$ended]}:" >&2
        tail -5 "${log[$ended]}" >&2
        exit 1   # the EXIT trap stops the others
    fi
    left=()
    for p in "${servers[@]}"; do [ "$p" = "$ended" ] || left+=("$p"); done
    servers=("${left[@]}")
    [ "$ended" = "$server" ] && [ "$status" -ne 0 ] && DB=$sbdb   # the run goes on in the standby's database
    if [ "$ended" = "$server" ] && [ "$status" -eq 0 ]; then
        for p in "${servers[@]}"; do
            end=$((SECONDS + 60))
            while kill -0 "$p" 2>/dev/null; do
                [ $SECONDS -lt $end ] || { echo "run-local: ${name[$p]} still runs 60 s after the head finished; see ${log[$p]}" >&2; exit 1; }
                sleep 0.2
            done
        done
    fi
done
failed=0
for ((k = 0; k < WORKERS; k++)); do
    wait "${workers[k]}" || { echo "run-local: worker $k failed; see $OUT/logs/worker$k.log" >&2; failed=1; }
done
total=$(awk -v s="$start" -v e="$EPOCHREALTIME" 'BEGIN { printf "%.1f", e - s }')

"$bin"/psreport --db "$DB" --out "$OUT/distributed_training_results.png"
"$bin"/psreport --db "$DB" --comparison --out "$OUT/comparison.png"

run=$(sqlite3 "$DB" "select max(id) from runs where mode='$MODE'")
echo
echo "=== summary (run $run, $MODE, $WORKERS workers, $SHARDS server process(es)) ==="
echo "total time: $total s (start-up, training, evaluation and saving)"
sqlite3 -separator ' ' "$DB" "
  select 'worker ' || e.worker_id || ': training time ' || printf('%.1f', sum(e.epoch_seconds)) ||
         ' s, final loss ' || printf('%.4f', (select train_loss from epochs where run_id = e.run_id and worker_id = e.worker_id order by epoch desc limit 1)) ||
         ', final accuracy ' || printf('%.2f', (select test_accuracy from epochs where run_id = e.run_id and worker_id = e.worker_id order by epoch desc limit 1)) || '%'
  from epochs e where e.run_id = $run group by e.worker_id order by e.worker_id;"
[ "$MODE" = independent ] && what="independent models (mean over the workers): test accuracy " || what="server model: test accuracy "
sqlite3 "$DB" "select '$what' || printf('%.2f', final_accuracy) || '%, training ' || printf('%.1f', train_seconds) || ' s' from runs where id = $run"
# The head's summary, or its standby's when that one ended the run (with
# REPLICAS=0 there is no standby0.log: grep's status 2 for it would end the
# script, under pipefail, with status 2).
summaries=("$OUT/logs/server.log")
[ -f "$OUT/logs/standby0.log" ] && summaries+=("$OUT/logs/standby0.log")
grep -h '^summary' "${summaries[@]}" | tail -1
[ "$failed" -eq 0 ] || exit 1
