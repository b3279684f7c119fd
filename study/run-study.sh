#!/usr/bin/env bash
# run-study.sh: the study as one command (make study). Reads a sweep file
# (study/default.conf, or study/$STUDY.conf), trains every configuration in
# it on this machine, one after the other, into one database, and writes
# $OUT/study.md: per model a table of final accuracy, training seconds,
# images/s, communication share, mean staleness and bytes per image, and
# $OUT/MODEL.png (psreport --study): accuracy over wall time per
# configuration, speed-up over workers, communication share.
#
# Each run has a deadline (STUDY_RUN_TIMEOUT seconds, default 900); a run
# that fails or passes it is recorded as failed (table study_runs, and in
# study.md) and the sweep goes on. Progress: one line per run with the
# elapsed time and an estimate of what is left.
#
# Usage: study/run-study.sh CONF
# models are names of this build's catalogue (paramserver --help lists
# them); train_limit is one number for every model, or MODEL=N for each
# (a small model can see more images in the same time).
# The sweep file's optional settings: dataset (mnist), lr_scaling (none;
# applied to the sync runs only: the other modes average nothing) and
# warmup_epochs (1). Mode independent runs once per worker count, without
# compression (it pushes no gradients).
#
# Environment: OUT (results/study), BUILD (build), MNIST_DIR (data),
# STUDY_TRAIN_LIMIT (overrides the file's train_limit: make check uses it),
# STUDY_RUN_TIMEOUT (900).
set -euo pipefail
cd "$(dirname "$0")/.."
conf=${1:?usage: study/run-study.sh CONF}
OUT=${OUT:-results/study} B=${BUILD:-build} MNIST_DIR=${MNIST_DIR:-data}
run_timeout=${STUDY_RUN_TIMEOUT:-900}

die() { echo "run-study: $*" >&2; exit 1; }
[ -r "$conf" ] || die "cannot read the sweep file $conf (make study STUDY=NAME reads study/NAME.conf)"
for p in "$B/paramserver" "$B/worker" "$B/psreport"; do [ -x "$p" ] || die "$p is missing: run make first"; done
command -v sqlite3 >/dev/null || die "the sqlite3 shell is missing: run make deps"

# --- the sweep file: "key value..." lines, # comments -----------------------
declare -A cfg=([dataset]=mnist [lr_scaling]=none [warmup_epochs]=1)
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    line=${line%%#*}
    read -r key values <<<"$line" || true
    [ -n "${key:-}" ] || continue
    case $key in
        models | workers | modes | compress | epochs | train_limit | threads | staleness | seed) ;;
        dataset | lr_scaling | warmup_epochs) ;;
        *) die "$conf:$lineno: unknown setting '$key' (known: models workers modes compress epochs train_limit threads staleness seed dataset lr_scaling warmup_epochs)" ;;
    esac
    [ -n "${values:-}" ] || die "$conf:$lineno: '$key' has no value"
    cfg[$key]=$values
done <"$conf"
for key in models workers modes compress epochs train_limit threads staleness seed; do
    [ -n "${cfg[$key]:-}" ] || die "$conf: missing setting '$key'"
done
[ -n "${STUDY_TRAIN_LIMIT:-}" ] && cfg[train_limit]=$STUDY_TRAIN_LIMIT

# check_list KEY PATTERN WHAT: every value of KEY matches the extended regex.
check_list() {
    local v
    for v in ${cfg[$1]}; do
        [[ $v =~ ^($2)$ ]] || die "$conf: $1: '$v' is not $3"
    done
}
# The models this build has, as paramserver --help lists them.
known=$("$B/paramserver" --help | sed -n 's/.*--model NAME *the model to train: \(.*\) (default.*/\1/p' | tr -d ,)
[ -n "$known" ] || die "cannot read the list of models from $B/paramserver --help"
check_list models "$(tr ' ' '|' <<<"$known")" "a model this build has ($known)"
check_list workers '[1-9]|[1-5][0-9]|6[0-4]' "a worker count from 1 to 64"
check_list modes 'sync|async|ssp|independent' "a mode (sync, async, ssp, independent)"
check_list compress 'none|fp16|int8' "a compression (none, fp16, int8)"
check_list dataset 'mnist|fashion-mnist' "a data set (mnist, fashion-mnist)"
check_list lr_scaling 'none|linear' "an lr scaling (none, linear)"
check_list warmup_epochs '[0-9]{1,3}(\.[0-9]+)?' "a number of epochs (0 to 999)"
for key in epochs threads staleness dataset lr_scaling warmup_epochs; do
    [ "$(wc -w <<<"${cfg[$key]}")" = 1 ] || die "$conf: $key takes one value"
done
for key in epochs threads staleness; do
    check_list $key '[1-9][0-9]{0,3}' "a whole number from 1 to 9999"
    [ "$(wc -w <<<"${cfg[$key]}")" = 1 ] || die "$conf: $key takes one value"
done
# limit_of MODEL: its train limit (one number for all, or MODEL=N).
limit_of() {
    local v
    for v in ${cfg[train_limit]}; do
        [[ $v =~ ^[1-9][0-9]{0,5}$ ]] && { echo "$v"; return; }
        [ "${v%%=*}" = "$1" ] && { echo "${v#*=}"; return; }
    done
}
if [[ ${cfg[train_limit]} == *=* ]]; then
    check_list train_limit "($(tr ' ' '|' <<<"${cfg[models]}"))=[1-9][0-9]{0,5}" "MODEL=N for a model of the sweep (N: 1 to 999999 images)"
    for m in ${cfg[models]}; do [ -n "$(limit_of "$m")" ] || die "$conf: train_limit has no $m=N"; done
else
    check_list train_limit '[1-9][0-9]{0,5}' "a number of training images from 1 to 999999 (or MODEL=N for each model)"
    [ "$(wc -w <<<"${cfg[train_limit]}")" = 1 ] || die "$conf: train_limit takes one value, or MODEL=N for each model"
fi
check_list seed '[0-9]{1,18}' "a seed (a whole number)"

# --- the list of runs -------------------------------------------------------
runs=()   # "model mode workers compress"
for model in ${cfg[models]}; do
    for k in ${cfg[workers]}; do
        if [ "$k" = 1 ]; then runs+=("$model basic 1 none"); continue; fi
        for mode in ${cfg[modes]}; do
            if [ "$mode" = independent ]; then runs+=("$model $mode $k none"); continue; fi
            for c in ${cfg[compress]}; do runs+=("$model $mode $k $c"); done
        done
    done
done

mkdir -p "$OUT/logs"
DB=$OUT/study.db
rm -f "$DB" "$DB-wal" "$DB-shm" "$OUT/logs/"*.log
sqlite3 "$DB" "create table study_runs(id integer primary key, model text, mode text,
    workers integer, compress text, run_id integer, status text, seconds real, log text,
    train_limit integer, epochs integer)"

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap cleanup EXIT
trap 'echo "run-study: interrupted" >&2; exit 130' INT TERM

common=(--epochs "${cfg[epochs]}" --seed "${cfg[seed]}")
data=()   # MNIST from MNIST_DIR; another data set from its own directory (README, Data)
[ "${cfg[dataset]}" = mnist ] && data=(--data-dir "$MNIST_DIR")

# run_basic MODEL LOG: one process; run_distributed MODEL MODE K COMPRESS
# LOG: a paramserver on a free loopback port and K workers. Both return
# non-zero when anything failed or passed the deadline.
run_basic() {
    timeout "$run_timeout" "$B/worker" --basic --model "$1" --dataset "${cfg[dataset]}" "${data[@]}" \
        "${common[@]}" --train-limit "$(limit_of "$1")" --threads "${cfg[threads]}" --db "$DB" \
        --out "$OUT/models/$1-basic" >"$2" 2>&1
}
run_distributed() {
    local model=$1 mode=$2 k=$3 c=$4 log=$5 i ep status=0 scaling=none
    [ "$mode" = sync ] && scaling=${cfg[lr_scaling]}
    : >"$log" # before the server starts: the loop below reads it
    timeout "$run_timeout" "$B/paramserver" --bind 'tcp://127.0.0.1:*' --model "$model" --workers "$k" \
        --mode "$mode" --staleness "${cfg[staleness]}" "${common[@]}" --train-limit "$(limit_of "$model")" \
        --dataset "${cfg[dataset]}" "${data[@]}" --lr-scaling "$scaling" --warmup-epochs "${cfg[warmup_epochs]}" \
        --db "$DB" --out "$OUT/models/$model-$mode-$k-$c" --threads 2 --register-timeout 60 \
        --worker-timeout 60 >"$log" 2>&1 &
    local server=$!
    pids=("$server")
    for ((i = 0; i < 300; i++)); do   # 30 s for the server to listen
        ep=$(sed -n 's/.*listening on \(tcp:[^ ]*\).*/\1/p' "$log" | head -1)
        [ -n "$ep" ] || ! kill -0 "$server" 2>/dev/null && break
        sleep 0.1
    done
    if [ -z "$ep" ]; then cleanup; return 1; fi
    for ((i = 0; i < k; i++)); do
        timeout "$run_timeout" "$B/worker" --server "$ep" --name "w$i" --threads "${cfg[threads]}" \
            --compress "$c" "${data[@]}" --timeout 60 --connect-timeout 60 \
            >"$log.w$i" 2>&1 &
        pids+=("$!")
    done
    wait "$server" || status=1
    for ((i = 1; i <= k; i++)); do wait "${pids[$i]}" || status=1; done
    pids=()
    for ((i = 0; i < k; i++)); do { echo "--- worker w$i"; cat "$log.w$i"; } >>"$log"; rm -f "$log.w$i"; done
    return $status
}

n=${#runs[@]}
echo "run-study: $n runs from $conf (${cfg[models]}; ${cfg[dataset]}, epochs ${cfg[epochs]}, train limit ${cfg[train_limit]}, sync lr scaling ${cfg[lr_scaling]}); database $DB"
study_start=$SECONDS
i=0
for r in "${runs[@]}"; do
    read -r model mode k c <<<"$r"
    i=$((i + 1))
    name="$model-$mode-$k-$c"
    log="$OUT/logs/$name.log"
    elapsed=$((SECONDS - study_start))
    eta=""
    if [ $i -gt 1 ]; then
        left=$((elapsed * (n - i + 1) / (i - 1)))
        eta=$(printf ', about %dm%02ds left' $((left / 60)) $((left % 60)))
    fi
    printf 'run-study: [%d/%d] %s, %s, %d worker(s), compress %s (%dm%02ds elapsed%s)\n' \
        "$i" "$n" "$model" "$mode" "$k" "$c" $((elapsed / 60)) $((elapsed % 60)) "$eta"
    before=$(sqlite3 "$DB" "select coalesce(max(id), 0) from runs" 2>/dev/null || echo 0)
    t0=$SECONDS
    if [ "$mode" = basic ]; then run_basic "$model" "$log" && status=done || status=failed
    else run_distributed "$model" "$mode" "$k" "$c" "$log" && status=done || status=failed; fi
    run_id=$(sqlite3 "$DB" "select coalesce(max(id), 0) from runs" 2>/dev/null || echo 0)
    [ "$run_id" -gt "$before" ] || run_id=null
    [ "$status" = done ] || echo "run-study: run $i failed; the sweep goes on (log: $log)" >&2
    sqlite3 "$DB" "insert into study_runs(model, mode, workers, compress, run_id, status, seconds, log,
        train_limit, epochs) values('$model', '$mode', $k, '$c', $run_id, '$status', $((SECONDS - t0)),
        '$log', $(limit_of "$model"), ${cfg[epochs]})"
done

study/report.sh "$DB" "$conf" >"$OUT/study.md"
"$B/psreport" --study --db "$DB" --out "$OUT" >/dev/null ||
    echo "run-study: the plots could not be drawn (see above); study.md is complete" >&2
failed=$(sqlite3 "$DB" "select count(*) from study_runs where status <> 'done'")
echo "run-study: $n runs in $(((SECONDS - study_start) / 60)) min, $failed failed; report: $OUT/study.md and the plots $OUT/*.png"
