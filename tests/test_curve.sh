#!/usr/bin/env bash
# test_curve: CurveZMQ. A server started with --curve-secret and
# --allowed-keys admits a worker whose public key is in the allowed
# directory (it trains), while a worker with an unlisted key and a plain-text
# worker never get an answer: they can neither register, pull nor push, and
# the server records nothing of them. Also: --keygen writes the key pair with
# the secret file private, and mismatched flags are refused.
source "$(dirname "$0")/lib.sh"
K=$TMP/keys
mkdir -p "$K/allowed"
expect_exit 0 "--keygen writes a server key pair" -- $B/paramserver --keygen "$K/server"
expect_exit 0 "--keygen writes a worker key pair" -- $B/paramserver --keygen "$K/good"
expect_exit 0 "--keygen writes an intruder's key pair" -- $B/paramserver --keygen "$K/intruder"
[ "$(stat -c %a "$K/server_secret")" = 600 ] || fail "secret file mode $(stat -c %a "$K/server_secret")"
ok "secret files are mode 600"
cp "$K/good" "$K/allowed/good.pub"
expect_exit 2 "--curve-secret without --allowed-keys is refused" -- $B/paramserver --curve-secret "$K/server_secret"
expect_exit 2 "a worker's --curve-secret without --server-key is refused" -- $B/worker --server tcp://127.0.0.1:1 --curve-secret "$K/good_secret"
mkdir -p "$K/public-only" && cp "$K/server" "$K/public-only/server"
expect_exit 1 "a public certificate given as --curve-secret is refused" -- \
    $B/paramserver --curve-secret "$K/public-only/server" --allowed-keys "$K/allowed" --register-timeout 1 \
    --data-dir "$MNIST_DIR" --db "$TMP/x.db" --out "$TMP/x"
expect_output "no secret key" "the message says what is wrong"

$B/paramserver --bind 'tcp://127.0.0.1:*' --workers 1 --epochs 1 --train-limit 2000 --test-limit 500 \
    --curve-secret "$K/server_secret" --allowed-keys "$K/allowed" --data-dir "$MNIST_DIR" \
    --db "$TMP/m.db" --out "$TMP/out" --register-timeout 60 >"$TMP/server.log" 2>&1 &
server=$!; pids+=("$server")
wait_for 30 "the server to listen" has_endpoint "$TMP/server.log"
ep=$(endpoint "$TMP/server.log")
expect_exit 1 "a worker with an unlisted key gets no answer" -- \
    $B/worker --server "$ep" --name intruder --curve-secret "$K/intruder_secret" --server-key "$K/server" --connect-timeout 3
expect_output "no reply to register" "it says no reply came"
expect_exit 1 "a plain-text worker gets no answer" -- $B/worker --server "$ep" --name plain --connect-timeout 3
expect_output "no reply to register" "it says no reply came"
expect_exit 0 "the listed worker registers and trains" -- \
    $B/worker --server "$ep" --name good --curve-secret "$K/good_secret" --server-key "$K/server" --data-dir "$MNIST_DIR"
wait_for 60 "the server to finish" gone "$server"
wait "$server" || { cat "$TMP/server.log"; fail "the server failed"; }
[ "$(rows "$TMP/m.db" 'select group_concat(name) from workers')" = good ] || fail "workers: $(rows "$TMP/m.db" 'select group_concat(name) from workers')"
grep -qE "intruder|plain" "$TMP/server.log" && fail "the server saw the intruders"
ok "only the listed worker is in the database and the log"
done_testing
