#!/usr/bin/env bash
# test_independent: --mode independent, the original train_distributed.py as
# a baseline. One worker trains exactly as basic mode with one thread: its
# model, which the server saves as model_independent_w0.safetensors, equals
# basic mode's bit for bit. Two workers train two models on their shards,
# nothing averaged; they stay alive while pushing nothing (pulls every
# quarter of --worker-timeout), and the run's accuracy is the mean of their
# models'. Combinations that make no sense are refused with a message.
source "$(dirname "$0")/lib.sh"
W=$B/worker
COMMON=(--epochs 2 --train-limit 3000 --test-limit 2000 --seed 7)

server() { # server NAME WORKERS EXTRA...: a paramserver in the background
    local name=$1 k=$2; shift 2
    $B/paramserver --bind 'tcp://127.0.0.1:*' --workers "$k" --mode independent "${COMMON[@]}" \
        --data-dir "$MNIST_DIR" --db "$TMP/$name.db" --out "$TMP/$name" "$@" >"$TMP/$name.log" 2>&1 &
    srv=$!; pids+=("$srv")
    wait_for 30 "the server to listen" has_endpoint "$TMP/$name.log"
    ep=$(endpoint "$TMP/$name.log")
}
tensors() { tail -c 900136 "$1"; } # a model file's data: SimpleConvNet's 225,034 floats

expect_exit 2 "--lr-scaling linear is refused in mode independent" -- \
    $B/paramserver --mode independent --lr-scaling linear
expect_output "only --mode sync averages" "the message says why"
expect_exit 2 "and in mode async" -- $B/paramserver --mode async --lr-scaling linear

# One worker = basic mode with one thread, bit for bit.
expect_exit 0 "basic mode, one thread" -- $W --basic --threads 1 "${COMMON[@]}" --data-dir "$MNIST_DIR" \
    --db "$TMP/basic.db" --out "$TMP/basic"
basic_acc=$(sed -n 's/^summary: .*test_accuracy=\([0-9.]*\).*/\1/p' "$TMP/cmd.log")
server one 1
expect_exit 0 "one independent worker" -- $W --server "$ep" --name w0 --data-dir "$MNIST_DIR"
wait "$srv" || { cat "$TMP/one.log"; fail "the server failed"; }
cmp -s <(tensors "$TMP/one/model_independent_w0.safetensors") <(tensors "$TMP/basic/model_basic.safetensors") ||
    fail "the independent worker's model differs from basic mode's"
ok "its saved model equals basic mode's bit for bit"
[ "$(rows "$TMP/one.db" "select mode || ' ' || status || ' ' || printf('%.2f', final_accuracy) from runs")" = "independent done $basic_acc" ] ||
    fail "the run: $(rows "$TMP/one.db" 'select mode, status, final_accuracy from runs'), basic's accuracy $basic_acc"
ok "the run is recorded as independent, with basic mode's accuracy ($basic_acc%)"
[ ! -e "$TMP/one/model_distributed.safetensors" ] || fail "an independent run saved a model_distributed"
ok "no averaged model is saved (there is none)"

# Refused combinations: the worker is told the mode in the Welcome.
server refuse 1 --register-timeout 20
expect_exit 1 "--compress is refused in mode independent" -- $W --server "$ep" --name w0 --data-dir "$MNIST_DIR" --compress fp16
expect_output "in mode independent none is pushed" "the message says why"
expect_exit 1 "so is --push-every" -- $W --server "$ep" --name w0 --data-dir "$MNIST_DIR" --push-every 4
expect_output "drop them" "and what to do"
kill "$srv"; wait "$srv" || true

# Two workers, a --worker-timeout shorter than their training: they pull to
# stay alive, and the server saves and evaluates both models.
COMMON[3]=60000   # 2 epochs of 30,000 images each: far over the 3 s, however fast
server two 2 --worker-timeout 3
for k in 0 1; do
    $W --server "$ep" --name "w$k" --data-dir "$MNIST_DIR" >"$TMP/two.w$k.log" 2>&1 &
    wpid[$k]=$!; pids+=("$!")
done
wait "$srv" || { cat "$TMP/two.log"; fail "the server failed"; }
for k in 0 1; do wait "${wpid[$k]}" || { cat "$TMP/two.w$k.log"; fail "worker $k failed"; }; done
! grep -q evict "$TMP/two.log" || { cat "$TMP/two.log"; fail "a worker was evicted"; }
t=$(rows "$TMP/two.db" "select printf('%.1f', max(t)) from epochs")
awk -v t="$t" 'BEGIN { exit !(t > 3) }' || fail "the run took $t s, not longer than --worker-timeout 3: it tests nothing"
ok "neither worker was evicted in $t s of training alone with --worker-timeout 3"
for k in 0 1; do [ -s "$TMP/two/model_independent_w$k.safetensors" ] || fail "no model of worker $k"; done
! cmp -s <(tensors "$TMP/two/model_independent_w0.safetensors") <(tensors "$TMP/two/model_independent_w1.safetensors") ||
    fail "the two workers' models are the same"
ok "each worker's own model is saved, and they differ (their shards do)"
[ "$(rows "$TMP/two.db" 'select count(*) from steps')" = 0 ] || fail "step rows in a run that pushes no gradient"
mean=$(rows "$TMP/two.db" "select printf('%.2f', avg(test_accuracy)) from epochs where epoch = 2")
[ "$(rows "$TMP/two.db" "select printf('%.2f', final_accuracy) from runs")" = "$mean" ] ||
    fail "final accuracy $(rows "$TMP/two.db" 'select final_accuracy from runs') is not the mean of the workers' $mean"
ok "the run's accuracy is the mean of the two models' ($mean%)"
done_testing
