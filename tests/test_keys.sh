#!/usr/bin/env bash
# test_keys: CurveZMQ key handling (issue 9, D14). --keygen refuses to
# overwrite an existing key pair unless given --force; a server warns when
# its secret key file is readable by others or its --allowed-keys directory
# is empty (no worker could connect); a worker warns about its secret key.
source "$(dirname "$0")/lib.sh"
K=$TMP/keys
expect_exit 0 "--keygen writes a key pair" -- $B/paramserver --keygen "$K/server"
pub=$(cat "$K/server")
expect_exit 1 "--keygen again on the same path is refused" -- $B/paramserver --keygen "$K/server"
expect_output "exists: --keygen does not overwrite a key pair .* give --force" "it says why and what to do"
[ "$(cat "$K/server")" = "$pub" ] || fail "the public key changed"
ok "the key pair is unchanged"
expect_exit 0 "--keygen --force replaces it" -- $B/paramserver --keygen "$K/server" --force
[ "$(cat "$K/server")" != "$pub" ] || fail "the public key is the same"
ok "a new key pair"

mkdir -p "$K/empty"
chmod 644 "$K/server_secret"
expect_exit 1 "a server with an open secret key and no allowed keys starts (and gives up waiting)" -- \
    $B/paramserver --bind 'tcp://127.0.0.1:*' --workers 1 --register-timeout 1 --data-dir "$MNIST_DIR" \
    --db "$TMP/m.db" --out "$TMP/out" --curve-secret "$K/server_secret" --allowed-keys "$K/empty"
expect_output "warning: the secret key $K/server_secret is readable by other users \(mode 644\): chmod 600" "it warns about the secret key's mode"
expect_output "warning: --allowed-keys $K/empty holds no public certificates" "it warns that no worker can connect"
expect_exit 0 "a worker key pair" -- $B/paramserver --keygen "$K/w"
chmod 640 "$K/w_secret"
expect_exit 1 "a worker with an open secret key (and no server)" -- \
    $B/worker --server tcp://127.0.0.1:9 --curve-secret "$K/w_secret" --server-key "$K/server" --connect-timeout 1
expect_output "warning: the secret key $K/w_secret is readable by other users \(mode 640\)" "the worker warns too"
done_testing
