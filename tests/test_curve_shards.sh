#!/usr/bin/env bash
# test_curve_shards: CurveZMQ across a server group of 2. The head and the
# shard each have their own key pair; one allowed directory (shared) lists
# the workers and the shard. The shard joins the encrypted head with its
# key and --server-key (the head's public certificate); the head tells the
# worker the shard's public key in its Welcome, and the listed worker
# trains against both, while an unlisted worker gets no answer. With
# --shard-keys only the shard's key may join as a shard: a worker's key,
# though admitted, is refused.
source "$(dirname "$0")/lib.sh"
K=$TMP/keys
mkdir -p "$K/allowed"
for k in head shard1 good intruder; do
    $B/paramserver --keygen "$K/$k" >/dev/null || fail "--keygen $k"
done
cp "$K/good" "$K/allowed/good.pub"
cp "$K/shard1" "$K/allowed/shard1.pub"
mkdir -p "$K/shards" && cp "$K/shard1" "$K/shards/shard1.pub"

$B/paramserver --bind 'tcp://127.0.0.1:*' --shards 2 --workers 1 --epochs 1 --train-limit 2000 \
    --test-limit 500 --curve-secret "$K/head_secret" --allowed-keys "$K/allowed" --shard-keys "$K/shards" \
    --data-dir "$MNIST_DIR" --db "$TMP/m.db" --out "$TMP/out" --register-timeout 60 >"$TMP/head.log" 2>&1 &
head=$!; pids+=("$head")
wait_for 30 "the head to listen" has_endpoint "$TMP/head.log"
ep=$(endpoint "$TMP/head.log")
expect_exit 2 "a shard's --server-key without --shard is refused" -- \
    $B/paramserver --server-key "$K/head"
expect_exit 1 "a worker's (admitted) key cannot join as a shard" -- \
    $B/paramserver --shard 1 --head "$ep" --bind 'tcp://127.0.0.1:*' --curve-secret "$K/good_secret" \
    --allowed-keys "$K/allowed" --server-key "$K/head" --out "$TMP/intruder" --register-timeout 10
expect_output "not in the head's --shard-keys" "the refusal says why"
$B/paramserver --shard 1 --head "$ep" --bind 'tcp://127.0.0.1:*' --curve-secret "$K/shard1_secret" \
    --allowed-keys "$K/allowed" --server-key "$K/head" --out "$TMP/out" >"$TMP/shard1.log" 2>&1 &
shard=$!; pids+=("$shard")
wait_for 30 "the shard to join" grep -q "shard 1 ready" "$TMP/head.log"
ok "the shard joined the encrypted head with its own key"
expect_exit 1 "a worker with an unlisted key gets no answer" -- \
    $B/worker --server "$ep" --name intruder --curve-secret "$K/intruder_secret" --server-key "$K/head" --connect-timeout 3
expect_exit 0 "the listed worker trains against the head and the shard" -- \
    $B/worker --server "$ep" --name good --curve-secret "$K/good_secret" --server-key "$K/head" --data-dir "$MNIST_DIR"
expect_output "split over 2 servers" "it used both servers"
wait_for 60 "the group to finish" gone "$head"
wait "$head" || { cat "$TMP/head.log"; fail "the head failed"; }
wait "$shard" || { cat "$TMP/shard1.log"; fail "the shard failed"; }
grep -q "final weights (version" "$TMP/shard1.log" || fail "the shard sent no final weights"
[ "$(rows "$TMP/m.db" 'select group_concat(name) from workers')" = good ] || fail "workers: $(rows "$TMP/m.db" 'select group_concat(name) from workers')"
ok "the run finished with the listed worker only"
done_testing
