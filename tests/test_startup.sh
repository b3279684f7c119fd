#!/usr/bin/env bash
# test_startup: start-up failures give a message naming the address, the
# cause and the fix, and a non-zero exit: address in use, an address this
# machine does not have, a server host that does not resolve, a malformed
# endpoint, a server that never answers, and flags that do not go together.
source "$(dirname "$0")/lib.sh"
S=(--data-dir "$MNIST_DIR" --db "$TMP/m.db" --out "$TMP/o" --register-timeout 30)

$B/paramserver --bind 'tcp://127.0.0.1:*' "${S[@]}" >"$TMP/first.log" 2>&1 &
pids+=("$!")
wait_for 30 "the first server to listen" has_endpoint "$TMP/first.log"
ep=$(endpoint "$TMP/first.log")
expect_exit 1 "a second server on the same port fails" -- $B/paramserver --bind "$ep" "${S[@]}"
expect_output "cannot listen on $ep: Address already in use" "it names the address and the cause"
expect_output "choose another port" "and says what to do"
expect_exit 1 "an address this machine does not have fails" -- $B/paramserver --bind tcp://192.0.2.1:5555 "${S[@]}"
expect_output "cannot listen on tcp://192.0.2.1:5555" "it names the address"
expect_exit 1 "a server host that does not resolve fails" -- $B/worker --server tcp://no-such-host.invalid:5555
expect_output "cannot resolve the server host 'no-such-host.invalid'" "it names the host and the cause"
expect_exit 1 "a malformed --server fails" -- $B/worker --server tcp://localhost
expect_output "is not tcp://HOST:PORT" "it says what form to use"
expect_exit 1 "a server that never answers: the worker gives up at its deadline" -- \
    $B/worker --server tcp://127.0.0.1:9 --connect-timeout 2
expect_output "no reply to register from the server at tcp://127.0.0.1:9 within 2 s" "it names the address and the deadline"
expect_exit 2 "--mode must be sync, async or ssp" -- $B/paramserver --mode bulk
expect_output "--mode 'bulk' is not one of sync, async, ssp" "the message lists the choices"
expect_exit 2 "--compress must be known" -- $B/worker --server tcp://127.0.0.1:9 --compress zip
expect_exit 2 "--batch-size over 128 is refused by the server" -- $B/paramserver --batch-size 500
done_testing
