#!/usr/bin/env bash
# test_startup_checks: paths and addresses that cannot work are refused at
# start-up, not after a whole run (issue 9, D13): an --out that is a regular
# file, a --checkpoint whose directory cannot be made, a --bind port over
# 65535 (ZeroMQ used to bind a random port without a word). Each fails at
# once with a message naming the flag, the value and the fix.
source "$(dirname "$0")/lib.sh"
S=(--data-dir "$MNIST_DIR" --db "$TMP/m.db" --workers 1 --register-timeout 3)
touch "$TMP/afile"

expect_exit 1 "an --out that is a regular file is refused" -- \
    $B/paramserver --bind 'tcp://127.0.0.1:*' "${S[@]}" --out "$TMP/afile"
expect_output "cannot write in the output directory $TMP/afile \(--out\)" "it names the flag and the path"
grep -q "listening" "$TMP/cmd.log" && fail "it listened before checking --out"
ok "before listening"

expect_exit 1 "a --checkpoint whose directory cannot be made is refused" -- \
    $B/paramserver --bind 'tcp://127.0.0.1:*' "${S[@]}" --out "$TMP/out" --checkpoint "$TMP/afile/sub/ckpt.safetensors"
expect_output "cannot write in the checkpoint's directory $TMP/afile/sub \(--checkpoint\)" "it names the flag and the path"
grep -q "listening" "$TMP/cmd.log" && fail "it listened before checking --checkpoint"
ok "before listening"

expect_exit 2 "--bind with port 99999 is refused" -- \
    $B/paramserver --bind tcp://127.0.0.1:99999 "${S[@]}" --out "$TMP/out"
expect_output "port '99999' is not in 1..65535" "it names the port and the range"
expect_exit 2 "--bind with a port that is not a number is refused" -- \
    $B/paramserver --bind tcp://127.0.0.1:5x "${S[@]}" --out "$TMP/out"
done_testing
